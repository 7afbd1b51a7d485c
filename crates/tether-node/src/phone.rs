//! The phone: hosts the local account authority, discovers the car over
//! mDNS by resolving rotating tokens, and opens account-bound sessions.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tether_discovery::{Browser, DiscoveryEvent};
use tether_identity::{
    AccountAuthority, Credentials, DeviceKey, EnrollmentGrant, EnrollmentRequest, LocalAuthority,
    Role,
};
use tether_session::quic::Connector;
use tether_store::Store;
use tokio::sync::OnceCell;

use crate::NodeError;
use crate::config::{NodeConfig, random_bytes, unix_now};
use crate::vehicle_link::VehicleLink;

/// A vehicle found on the LAN whose token this phone's account key resolves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredVehicle {
    /// Where its session endpoint listens.
    pub address: SocketAddr,
    /// The token it advertised (random-looking, rotating).
    pub token: String,
}

/// What a discovery pass saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiscoveryReport {
    /// Members of this phone's account.
    pub resolved: Vec<DiscoveredVehicle>,
    /// Tether tokens seen that no key of ours resolves (other accounts).
    pub unresolvable: u64,
}

/// The owner's phone. In local mode it hosts the account authority.
pub struct Phone {
    config: NodeConfig,
    store: Mutex<Store>,
    authority: Mutex<Option<LocalAuthority>>,
    credentials: Mutex<Option<Arc<Credentials>>>,
    connector: OnceCell<Connector>,
}

impl std::fmt::Debug for Phone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Phone").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Phone {
    /// Opens (or creates) the phone's state.
    pub fn open(config: NodeConfig) -> Result<Self, NodeError> {
        let store = config.open_store()?;
        let authority = store
            .load_authority()?
            .map(|s| LocalAuthority::restore(&s))
            .transpose()?;
        let credentials = store.load_identity()?.map(Arc::new);
        Ok(Self {
            config,
            store: Mutex::new(store),
            authority: Mutex::new(authority),
            credentials: Mutex::new(credentials),
            connector: OnceCell::new(),
        })
    }

    /// The identifiers kept in this node's local store (R2).
    pub fn local_identifiers(&self) -> Result<crate::LocalIdentifiers, NodeError> {
        crate::config::LocalIdentifiers::load(&lock(&self.store))
    }

    /// Whether the phone holds a certificate.
    pub fn is_enrolled(&self) -> bool {
        lock(&self.credentials).is_some()
    }

    /// Creates a new account hosted on this phone and enrolls the phone in
    /// it. Refuses if the phone already has an account.
    pub fn create_account(&self) -> Result<(), NodeError> {
        if lock(&self.authority).is_some() || self.is_enrolled() {
            return Err(NodeError::State("this phone already has an account"));
        }
        let mut authority = LocalAuthority::generate()?;
        let key = DeviceKey::generate()?;
        let grant = authority.enroll(
            &key.enrollment_request(Role::Phone, random_bytes()?),
            unix_now(),
        )?;
        let credentials = Credentials::from_grant(key, &grant, unix_now())?;
        {
            let mut store = lock(&self.store);
            store.save_authority(&authority.state())?;
            store.save_identity(&credentials)?;
        }
        *lock(&self.authority) = Some(authority);
        *lock(&self.credentials) = Some(Arc::new(credentials));
        Ok(())
    }

    /// Acts as the account authority for a device that reached this phone
    /// over a trusted channel (R2, R3; SPEC §3.4).
    pub fn enroll_device(&self, request: &EnrollmentRequest) -> Result<EnrollmentGrant, NodeError> {
        let mut guard = lock(&self.authority);
        let authority = guard.as_mut().ok_or(NodeError::NoAuthority)?;
        let grant = authority.enroll(request, unix_now())?;
        lock(&self.store).save_authority(&authority.state())?;
        Ok(grant)
    }

    /// The public key of the account authority this phone hosts: devices
    /// bound through a commissioner accept only certificates it signed
    /// (SPEC §12.5).
    pub fn authority_public_key(&self) -> Result<[u8; 32], NodeError> {
        lock(&self.authority)
            .as_ref()
            .map(AccountAuthority::public_key)
            .ok_or(NodeError::NoAuthority)
    }

    fn credentials(&self) -> Result<Arc<Credentials>, NodeError> {
        lock(&self.credentials)
            .clone()
            .ok_or(NodeError::NotEnrolled)
    }

    /// Browses mDNS for `window` and reports what this phone can resolve.
    pub async fn discover(&self, window: Duration) -> Result<DiscoveryReport, NodeError> {
        let credentials = self.credentials()?;
        let group = credentials.group_key().ok_or(NodeError::NotEnrolled)?;
        let mut browser = Browser::start(vec![group.discovery_key()], self.config.interfaces)?;
        let mut report = DiscoveryReport::default();
        let deadline = tokio::time::Instant::now() + window;
        while let Ok(Some(event)) = tokio::time::timeout_at(deadline, browser.next()).await {
            if let DiscoveryEvent::Resolved(r) = event
                && let Some(ip) = r.addresses.first()
            {
                let found = DiscoveredVehicle {
                    address: SocketAddr::new(*ip, r.port),
                    token: r.token,
                };
                if !report.resolved.contains(&found) {
                    report.resolved.push(found);
                }
            }
        }
        report.unresolvable = browser.unresolvable_seen();
        browser.shutdown().await?;
        Ok(report)
    }

    /// Waits until a member of this account is found (at most `timeout`).
    pub async fn discover_vehicle(
        &self,
        timeout: Duration,
    ) -> Result<DiscoveredVehicle, NodeError> {
        let credentials = self.credentials()?;
        let group = credentials.group_key().ok_or(NodeError::NotEnrolled)?;
        let mut browser = Browser::start(vec![group.discovery_key()], self.config.interfaces)?;
        let result = browser.find_first(timeout).await;
        let _ = browser.shutdown().await;
        let resolved = result?;
        let ip = *resolved
            .addresses
            .first()
            .ok_or(NodeError::UnexpectedResponse("advert without an address"))?;
        Ok(DiscoveredVehicle {
            address: SocketAddr::new(ip, resolved.port),
            token: resolved.token,
        })
    }

    async fn connector(&self) -> Result<&Connector, NodeError> {
        let credentials = self.credentials()?;
        let bind = SocketAddr::new(self.config.bind_ip, 0);
        self.connector
            .get_or_try_init(|| async {
                Connector::new(bind, credentials, self.config.session.clone())
            })
            .await
            .map_err(NodeError::from)
    }

    /// Opens an account-bound session to the vehicle at `address`, resuming
    /// when a ticket is held.
    pub async fn connect(&self, address: SocketAddr) -> Result<VehicleLink, NodeError> {
        let session = self.connector().await?.connect(address).await?;
        VehicleLink::new(session)
    }

    /// Drops every resumption ticket (the next connection is cold).
    pub async fn forget_tickets(&self) -> Result<(), NodeError> {
        self.connector().await?.forget_tickets();
        Ok(())
    }

    /// Whether a resumption ticket is held for `address`.
    pub async fn has_ticket(&self, address: SocketAddr) -> bool {
        match self.connector().await {
            Ok(c) => c.has_ticket(address),
            Err(_) => false,
        }
    }
}
