//! The phone: hosts the local account authority, discovers the car over
//! mDNS by resolving rotating tokens, and opens account-bound sessions.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use tether_discovery::{Browser, DiscoveryEvent};
use tether_identity::{
    AcceptedInvite, AccountAuthority, Credentials, DeviceKey, EnrollmentGrant, EnrollmentRequest,
    GrantKey, GrantRequest, LocalAuthority, Permissions, Role, ShareInvite, accept_invite,
};
use tether_session::GrantAccess;
use tether_session::quic::Connector;
use tether_store::Store;
use tokio::sync::OnceCell;

use crate::NodeError;
use crate::config::{NodeConfig, random_bytes, unix_now};
use crate::share::{HeldShare, IssuedShare, ShareOptions, share_status};
use crate::vehicle_link::VehicleLink;
use crate::wire::lock;

fn held(invite: &AcceptedInvite) -> HeldShare {
    HeldShare {
        grant_id: invite.grant.grant_id,
        sharer_nickname: invite.sharer_nickname.clone(),
        permissions: invite.grant.permissions.to_vec(),
        not_after: invite.grant.not_after,
    }
}

/// A vehicle found on the LAN whose token this phone's account key resolves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredVehicle {
    /// Where its session endpoint listens.
    pub address: SocketAddr,
    /// The token it advertised (random-looking, rotating).
    pub token: String,
}

/// How [`Phone::reach_vehicle`] found the car.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VehicleRoute {
    /// At the address where it answered last (no mDNS at all).
    Remembered,
    /// By resolving its token on the LAN (mDNS); the address is remembered.
    Discovered,
}

/// The store setting that remembers where the car answered last. Local
/// only, like every identifier (R2): it is never sent anywhere.
const LAST_VEHICLE_SETTING: &str = "phone.last_vehicle_address";
/// How long the remembered address gets before the phone browses instead.
/// A handshake on a LAN takes a few milliseconds; a car that moved (a new
/// port after a restart, another DHCP lease) does not answer at all.
const REMEMBERED_ATTEMPT: Duration = Duration::from_millis(500);

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
        self.find_first(group.discovery_key(), timeout).await
    }

    /// Browses until a token minted with `key` resolves (at most `timeout`).
    async fn find_first(
        &self,
        key: [u8; 32],
        timeout: Duration,
    ) -> Result<DiscoveredVehicle, NodeError> {
        find_member(key, self.config.interfaces, timeout).await
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

    /// Opens a session to the car: first at the address where it answered
    /// last, for at most [`REMEMBERED_ATTEMPT`], then by discovering it on
    /// the LAN (at most `timeout`) and remembering where it answered. A
    /// command run again within a second then skips the mDNS wait, and
    /// sends no multicast at all.
    pub async fn reach_vehicle(
        &self,
        timeout: Duration,
    ) -> Result<(VehicleLink, VehicleRoute), NodeError> {
        let remembered = lock(&self.store)
            .get_setting(LAST_VEHICLE_SETTING)?
            .and_then(|text| text.parse::<SocketAddr>().ok());
        if let Some(address) = remembered {
            match tokio::time::timeout(REMEMBERED_ATTEMPT, self.connect(address)).await {
                Ok(Ok(link)) => return Ok((link, VehicleRoute::Remembered)),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "the remembered address did not answer as the car")
                }
                Err(_) => tracing::debug!("the remembered address did not answer in time"),
            }
        }
        let found = self.discover_vehicle(timeout).await?;
        let link = self.connect(found.address).await?;
        lock(&self.store).set_setting(LAST_VEHICLE_SETTING, &found.address.to_string())?;
        Ok((link, VehicleRoute::Discovered))
    }

    /// Waits until the account's home hub is found on the LAN (at most
    /// `timeout`); it advertises under its own key (SPEC §18.8).
    pub async fn discover_hub(&self, timeout: Duration) -> Result<SocketAddr, NodeError> {
        let credentials = self.credentials()?;
        let group = credentials.group_key().ok_or(NodeError::NotEnrolled)?;
        Ok(self
            .find_first(group.hub_discovery_key(), timeout)
            .await?
            .address)
    }

    /// Opens an account-bound session to the home hub at `address`, to
    /// manage its super tasks (SPEC §18.8).
    pub async fn connect_hub(&self, address: SocketAddr) -> Result<crate::HubLink, NodeError> {
        let session = self.connector().await?.connect(address).await?;
        crate::HubLink::new(session)
    }

    /// Shares the car (and chosen devices) with a co-user's account (R16,
    /// R19; SPEC §17): signs a grant with this phone's authority, installs it
    /// on the car over `link`, and returns the invite to hand to the
    /// co-user. `grantee_authority_public_key` is the co-user's
    /// [`Phone::authority_public_key`].
    pub async fn share(
        &self,
        link: &VehicleLink,
        grantee_authority_public_key: [u8; 32],
        options: &ShareOptions,
    ) -> Result<IssuedShare, NodeError> {
        if options.nickname.len() > 64 {
            return Err(NodeError::State("nickname longer than 64 bytes"));
        }
        let grant_id: [u8; 16] = random_bytes()?;
        let now = unix_now();
        let request = GrantRequest {
            grantee_authority_public_key,
            permissions: Permissions::of(&options.permissions),
            devices: options.devices.clone(),
            not_before: now.saturating_sub(60),
            not_after: now.saturating_add(options.valid_for_s),
        };
        let (signed, owner) = {
            let guard = lock(&self.authority);
            let authority = guard.as_ref().ok_or(NodeError::NoAuthority)?;
            (
                authority.sign_share_grant(grant_id, &request)?,
                authority.public_key(),
            )
        };
        let key = GrantKey::generate()?;
        let status = share_status(
            link.session()
                .call(crate::share::install_request(&signed, &key))
                .await?,
        )?;
        if !status.active || status.grant_id != grant_id {
            return Err(NodeError::UnexpectedResponse(
                "the car did not install the grant",
            ));
        }
        let invite = ShareInvite {
            grant: Some(signed),
            grant_key: key.as_bytes().to_vec(),
            owner_authority_public_key: owner.to_vec(),
            sharer_nickname: options.nickname.clone(),
        };
        Ok(IssuedShare {
            grant_id,
            invite: invite.encode_to_vec(),
        })
    }

    /// Revokes a grant this phone issued. The car closes the co-user's live
    /// sessions under it at once and admits none again (R16, R19). Returns
    /// how many sessions it closed.
    pub async fn revoke_share(
        &self,
        link: &VehicleLink,
        grant_id: [u8; 16],
    ) -> Result<u32, NodeError> {
        let status = share_status(
            link.session()
                .call(crate::share::revoke_request(&grant_id))
                .await?,
        )?;
        if status.active {
            return Err(NodeError::UnexpectedResponse("the car kept the grant"));
        }
        Ok(status.sessions_closed)
    }

    /// (Co-user) checks and keeps an invite: it must be signed by the
    /// sharer's authority, in force, and for this phone's account.
    pub fn accept_invite(&self, invite: &[u8]) -> Result<HeldShare, NodeError> {
        let own = *self.credentials()?.authority_public_key();
        let accepted = accept_invite(invite, &own, unix_now())?;
        lock(&self.store).put_share_invite(&accepted.grant.grant_id, invite)?;
        Ok(held(&accepted))
    }

    /// (Co-user) the invites held and still in force.
    pub fn held_shares(&self) -> Result<Vec<HeldShare>, NodeError> {
        Ok(self.invites()?.iter().map(held).collect())
    }

    fn invites(&self) -> Result<Vec<AcceptedInvite>, NodeError> {
        let own = *self.credentials()?.authority_public_key();
        let now = unix_now();
        let stored = lock(&self.store).list_share_invites()?;
        Ok(stored
            .into_iter()
            .filter_map(|(_, bytes)| accept_invite(&bytes, &own, now).ok())
            .collect())
    }

    fn invite(&self, grant_id: &[u8; 16]) -> Result<AcceptedInvite, NodeError> {
        self.invites()?
            .into_iter()
            .find(|i| &i.grant.grant_id == grant_id)
            .ok_or(NodeError::State("no share held with this id"))
    }

    /// (Co-user) finds the shared car over mDNS: it advertises a separate
    /// rotating token for each grant, which only the grant's holder resolves.
    pub async fn discover_shared_vehicle(
        &self,
        grant_id: [u8; 16],
        timeout: Duration,
    ) -> Result<DiscoveredVehicle, NodeError> {
        let key = self.invite(&grant_id)?.grant_key.discovery_key();
        self.find_first(key, timeout).await
    }

    /// (Co-user) opens a session to the shared car under the grant.
    pub async fn connect_shared(
        &self,
        grant_id: [u8; 16],
        address: SocketAddr,
    ) -> Result<VehicleLink, NodeError> {
        let invite = self.invite(&grant_id)?;
        let access = GrantAccess {
            admission_key: invite.grant_key.admission_key(),
            owner_authority_public_key: invite.owner_authority_public_key,
            expect_device: false,
        };
        let session = self
            .connector()
            .await?
            .connect_with_grant(address, &access)
            .await?;
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

/// Browses the LAN until a token minted with `key` resolves (at most
/// `timeout`): the first member found, with its address.
pub(crate) async fn find_member(
    key: [u8; 32],
    interfaces: tether_discovery::Interfaces,
    timeout: Duration,
) -> Result<DiscoveredVehicle, NodeError> {
    let mut browser = Browser::start(vec![key], interfaces)?;
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
