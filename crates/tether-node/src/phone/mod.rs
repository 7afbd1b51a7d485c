//! The phone: hosts the local account authority, discovers the car over
//! mDNS by resolving rotating tokens, and opens account-bound sessions.

pub(crate) mod automation_link;
pub(crate) mod hub_link;
pub(crate) mod mailbox;
pub(crate) mod vehicle_link;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use tether_discovery::{Browser, DiscoveryEvent};
use tether_identity::{
    AcceptedInvite, AccountAuthority, Credentials, DeviceKey, EnrollmentGrant, EnrollmentRequest,
    GrantKey, GrantRequest, GroupKey, LocalAuthority, Permissions, Role, ShareInvite,
    accept_invite,
};
use tether_relay::RelaySocket;
use tether_session::GrantAccess;
use tether_session::quic::Connector;
use tether_store::Store;
use tokio::sync::OnceCell;

use crate::NodeError;
use crate::adverts::browse_keys;
use crate::config::{NodeConfig, random_bytes, unix_now};
use crate::phone::vehicle_link::{RelayCall, VehicleLink};
use crate::share::{HeldShare, IssuedShare, ShareOptions, share_status};
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
    /// Through the MQTT broker (SPEC §19.11): the car was not on the LAN.
    Relay,
}

/// Which path [`Phone::reach_vehicle_via`] may take (SPEC §19.11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Via {
    /// The LAN when the car is on it, the relay otherwise (the relay only
    /// when a broker is configured).
    #[default]
    Auto,
    /// The LAN only (remembered address, then mDNS).
    Lan,
    /// The relay only.
    Relay,
}

/// Once the relay has a session, how long the phone still waits for the
/// car to turn up on the LAN before it takes the relay (SPEC §19.11): a
/// LAN session is faster and costs the broker nothing, and mDNS takes
/// about a second to resolve a token.
const LAN_PREFERENCE: Duration = Duration::from_millis(1500);

/// The phone's remote path: one MQTT connection, made on first use, and a
/// connector whose QUIC endpoint runs over it (SPEC §19.11).
struct RemotePath {
    socket: Arc<RelaySocket>,
    connector: Connector,
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

/// A device of the account, as the authority on this phone enrolled it
/// (SPEC §3.6): what `tether phone devices` lists to pick one to remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountDevice {
    /// Its raw Ed25519 public key (what [`Phone::remove_device`] takes).
    pub public_key: [u8; 32],
    /// Its role.
    pub role: Role,
    /// Its certificate's serial.
    pub serial: u64,
    /// When it was enrolled (Unix seconds).
    pub enrolled_at: u64,
    /// Whether it was removed.
    pub removed: bool,
    /// Whether it is this phone.
    pub this_device: bool,
}

/// What a removal produced (SPEC §3.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Removal {
    /// The serial of the new revocation list.
    pub serial: u64,
    /// The new group key epoch.
    pub group_key_epoch: u32,
    /// Last second the previous epoch is still accepted (Unix seconds).
    pub grace_until: u64,
}

/// The owner's phone. In local mode it hosts the account authority.
pub struct Phone {
    config: NodeConfig,
    store: Arc<Mutex<Store>>,
    authority: Mutex<Option<LocalAuthority>>,
    credentials: Mutex<Option<Arc<Credentials>>>,
    connector: OnceCell<Connector>,
    remote: OnceCell<RemotePath>,
    /// The phone's mailbox session, opened anew under a new group key
    /// epoch (SPEC §19.12).
    mailbox: tokio::sync::Mutex<Option<Arc<crate::phone::mailbox::PhoneMailbox>>>,
    /// (Co-user) one mailbox session per share grant held, by grant id.
    shared_mailboxes: tokio::sync::Mutex<
        std::collections::HashMap<[u8; 16], Arc<crate::phone::mailbox::PhoneMailbox>>,
    >,
    membership: Mutex<Option<Arc<crate::membership::Membership>>>,
    /// Whether the LAN is there (the app's connectivity callback says so:
    /// [`Phone::set_lan_available`]); while not, `Via::Auto` takes the
    /// relay at once.
    lan_available: std::sync::atomic::AtomicBool,
    /// The LAN sessions handed out, closed when the LAN goes away.
    lan_sessions: Mutex<Vec<std::sync::Weak<tether_session::quic::ClientSession>>>,
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
            store: Arc::new(Mutex::new(store)),
            authority: Mutex::new(authority),
            credentials: Mutex::new(credentials),
            connector: OnceCell::new(),
            remote: OnceCell::new(),
            mailbox: tokio::sync::Mutex::default(),
            shared_mailboxes: tokio::sync::Mutex::default(),
            lan_available: std::sync::atomic::AtomicBool::new(true),
            lan_sessions: Mutex::default(),
            membership: Mutex::new(None),
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
            let own = credentials.certificate();
            store.record_account_device(
                &own.public_key,
                own.role.to_proto() as i32,
                own.serial,
                unix_now(),
            )?;
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
        let now = unix_now();
        let grant = authority.enroll(request, now)?;
        let mut store = lock(&self.store);
        store.save_authority(&authority.state())?;
        if let Some(cert) = &grant.certificate
            && let Ok(verified) =
                tether_identity::verify_certificate_signature(cert, &authority.public_key())
        {
            store.record_account_device(
                &verified.public_key,
                verified.role.to_proto() as i32,
                verified.serial,
                now,
            )?;
        }
        Ok(grant)
    }

    /// (A phone or watch joining an existing account) the request to hand
    /// to the account authority over a trusted channel (SPEC §3.4). The
    /// device key is made and stored on first use.
    pub fn enrollment_request(&self, role: Role) -> Result<EnrollmentRequest, NodeError> {
        if !matches!(role, Role::Phone | Role::Watch) {
            return Err(NodeError::State("a phone enrolls as a phone or a watch"));
        }
        let key = {
            let mut store = lock(&self.store);
            match store.load_device_key()? {
                Some(key) => key,
                None => {
                    let key = DeviceKey::generate()?;
                    store.save_device_key(&key)?;
                    key
                }
            }
        };
        crate::config::enrollment_request(key.pkcs8(), role)
    }

    /// Accepts the authority's grant for [`Phone::enrollment_request`].
    pub fn complete_enrollment(&self, grant: &EnrollmentGrant) -> Result<(), NodeError> {
        if self.is_enrolled() {
            return Err(NodeError::State("this phone already has an account"));
        }
        let key = lock(&self.store)
            .load_device_key()?
            .ok_or(NodeError::State("no enrollment request was made"))?;
        let role = grant
            .certificate
            .as_ref()
            .and_then(|c| {
                tether_identity::verify_certificate_signature(c, &grant.authority_public_key).ok()
            })
            .map(|v| v.role)
            .ok_or(NodeError::UnexpectedPeer(
                "grant without a valid certificate",
            ))?;
        if !matches!(role, Role::Phone | Role::Watch) {
            return Err(NodeError::UnexpectedPeer(
                "grant is not for a phone or watch",
            ));
        }
        crate::config::accept_grant(
            key.pkcs8(),
            grant,
            role,
            &self.store,
            &self.credentials,
            "grant is not for a phone or watch",
        )
    }

    /// (The authority's phone) the devices it enrolled, with this phone and
    /// the removed ones marked (SPEC §3.6).
    pub fn account_devices(&self) -> Result<Vec<AccountDevice>, NodeError> {
        if lock(&self.authority).is_none() {
            return Err(NodeError::NoAuthority);
        }
        let own = self.credentials()?.certificate().public_key;
        Ok(lock(&self.store)
            .list_account_devices()?
            .into_iter()
            .filter_map(|r| {
                Some(AccountDevice {
                    public_key: r.public_key,
                    role: Role::from_proto(r.role)?,
                    serial: r.serial,
                    enrolled_at: r.enrolled_unix_s,
                    removed: r.removed_unix_s.is_some(),
                    this_device: r.public_key == own,
                })
            })
            .collect())
    }

    /// Removes a device from the account (SPEC §3.6): the authority on this
    /// phone signs a new revocation list naming `public_key` and makes a
    /// new group key epoch; this phone adopts both at once and hands them
    /// to every member it connects to from now on ([`Phone::connect`],
    /// [`Phone::sync_membership`] on a link already open). The removed
    /// device is refused by every member that holds the list, its tickets
    /// resume nothing, and after the grace period its old key proves
    /// nothing. This phone cannot remove itself.
    pub fn remove_device(&self, public_key: [u8; 32]) -> Result<Removal, NodeError> {
        let credentials = self.credentials()?;
        if credentials.certificate().public_key == public_key {
            return Err(NodeError::State("this phone cannot remove itself"));
        }
        let now = unix_now();
        {
            let mut guard = lock(&self.authority);
            let authority = guard.as_mut().ok_or(NodeError::NoAuthority)?;
            let before = authority.state();
            let (list, key) = authority.remove_devices(
                credentials.revocation_list().as_ref(),
                &[public_key],
                now,
            )?;
            let state = authority.state();
            // One transaction for the authority's new key, this phone's new
            // list and the device marked removed (crash safety, issue 15).
            let mut stored = false;
            let adopted = self.membership()?.adopt_storing(
                &list,
                Some(key.as_bytes()),
                |store, credentials| {
                    let saved = store.save_removal(&state, credentials, &public_key, now);
                    stored = saved.is_ok();
                    saved
                },
            );
            let adopted = match adopted {
                Ok(_) if stored => Ok(()),
                // The list was not newer than what this phone holds (it
                // cannot be: the authority made it from that one); store the
                // authority and the device all the same.
                Ok(_) => lock(&self.store)
                    .save_removal(&state, &credentials, &public_key, now)
                    .map_err(NodeError::from),
                Err(e) => Err(e),
            };
            if let Err(e) = adopted {
                // Not stored: the authority keeps its old key. The list may
                // stay in force in this phone's memory (fail closed).
                if let Ok(old) = LocalAuthority::restore(&before) {
                    *authority = old;
                }
                return Err(e);
            }
        }
        let verified = credentials
            .revocation_list()
            .ok_or(NodeError::State("the new list was not adopted"))?;
        Ok(Removal {
            serial: verified.serial,
            group_key_epoch: verified.group_key_epoch,
            grace_until: verified.previous_epoch_until,
        })
    }

    /// Compares revocation lists with the member at the other end of
    /// `link` and hands over the newer one (SPEC §3.6). [`Phone::connect`]
    /// does this by itself.
    pub async fn sync_membership(&self, link: &VehicleLink) -> Result<(), NodeError> {
        self.membership()?.sync(link.session()).await
    }

    /// The serial of the revocation list this phone holds (0: none).
    pub fn revocation_serial(&self) -> Result<u64, NodeError> {
        Ok(self.credentials()?.revocation_serial())
    }

    /// The group key epoch this phone is in (0 before any removal).
    pub fn group_key_epoch(&self) -> Result<u32, NodeError> {
        Ok(self.credentials()?.group_key_epoch())
    }

    /// This phone's public key.
    pub fn public_key(&self) -> Result<[u8; 32], NodeError> {
        Ok(self.credentials()?.certificate().public_key)
    }

    fn membership(&self) -> Result<Arc<crate::membership::Membership>, NodeError> {
        Ok(crate::membership::membership_of(
            &self.membership,
            &self.credentials()?,
            &self.store,
        ))
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

    /// This phone's account authority as a car reaches it while it
    /// commissions a device beside the phone (SPEC §12): enrollments go
    /// through [`Phone::enroll_device`], so they are stored and listed like
    /// any other. [`NodeError::NoAuthority`] on a phone that does not host
    /// the account's authority.
    pub fn authority(&self) -> Result<PhoneAuthority<'_>, NodeError> {
        Ok(PhoneAuthority {
            public_key: self.authority_public_key()?,
            phone: self,
        })
    }

    fn credentials(&self) -> Result<Arc<Credentials>, NodeError> {
        lock(&self.credentials)
            .clone()
            .ok_or(NodeError::NotEnrolled)
    }

    /// Browses mDNS for `window` and reports what this phone can resolve.
    pub async fn discover(&self, window: Duration) -> Result<DiscoveryReport, NodeError> {
        // SPEC §3.6: a member that has caught up still finds one that has not.
        let keys = browse_keys(&*self.credentials()?, GroupKey::discovery_key)?;
        let mut browser = Browser::start(keys, self.config.interfaces)?;
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

    /// Waits until a member of this account is found (at most `timeout`),
    /// under the current group key or, during a rotation's grace period,
    /// the previous one (a car that has not caught up yet, SPEC §3.6).
    pub async fn discover_vehicle(
        &self,
        timeout: Duration,
    ) -> Result<DiscoveredVehicle, NodeError> {
        let keys = browse_keys(&*self.credentials()?, GroupKey::discovery_key)?;
        self.find_first(keys, timeout).await
    }

    /// Browses until a token minted with one of `keys` resolves (at most
    /// `timeout`).
    async fn find_first(
        &self,
        keys: Vec<[u8; 32]>,
        timeout: Duration,
    ) -> Result<DiscoveredVehicle, NodeError> {
        find_member(keys, self.config.interfaces, timeout).await
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
        // SPEC §3.6: the newer revocation list (and group key) changes
        // hands at every contact; a refused handshake fails here.
        self.membership()?.sync_on_connect(&session).await?;
        let link = VehicleLink::new(session)?;
        let mut live = lock(&self.lan_sessions);
        live.retain(|s| s.strong_count() > 0);
        live.push(link.weak_session());
        Ok(link)
    }

    /// Tells the phone whether it is on a LAN (the app calls it from the
    /// platform's connectivity callback; SPEC §19.11). Going off the LAN
    /// closes every LAN session at once, instead of waiting for QUIC's idle
    /// timeout, so a [`crate::RoamingSubscription`] moves to the relay
    /// right away; while off, [`Via::Auto`] goes straight to the relay.
    pub fn set_lan_available(&self, available: bool) {
        self.lan_available
            .store(available, std::sync::atomic::Ordering::SeqCst);
        if !available {
            for session in lock(&self.lan_sessions).drain(..) {
                if let Some(session) = session.upgrade() {
                    session.close(tether_session::quic::CloseCode::Normal, "left the LAN");
                }
            }
        }
    }

    /// A subscription to `paths` that follows the car across the LAN and
    /// the relay (SPEC §19.11): see [`crate::RoamingSubscription::next`].
    /// Each attempt to reach the car takes at most `timeout`.
    pub fn subscribe_anywhere(
        &self,
        paths: Vec<String>,
        timeout: Duration,
    ) -> crate::RoamingSubscription {
        crate::RoamingSubscription::new(paths, timeout)
    }

    /// The remote path, connected to the broker on first use.
    async fn remote(&self) -> Result<&RemotePath, NodeError> {
        let config = self.config.relay.clone().ok_or(NodeError::NoRelay)?;
        let credentials = self.credentials()?;
        self.remote
            .get_or_try_init(|| async {
                let socket = RelaySocket::connect(config).await?;
                let connector = Connector::with_socket(
                    socket.clone(),
                    credentials,
                    self.config.session.clone(),
                )?;
                Ok::<_, NodeError>(RemotePath { socket, connector })
            })
            .await
    }

    /// Opens an account-bound session to the car through the broker, from
    /// anywhere (SPEC §19.11): the same handshake, requests, receipts and
    /// subscriptions as on the LAN. Fails with [`NodeError::NoRelay`]
    /// without a broker in [`NodeConfig::relay`].
    pub async fn connect_via_relay(&self) -> Result<VehicleLink, NodeError> {
        let credentials = self.credentials()?;
        let key = credentials
            .group_key()
            .ok_or(NodeError::NotEnrolled)?
            .relay_key();
        // During a new epoch's grace the car may not hold the new key yet
        // (SPEC §3.6): it still answers at the previous key's rendezvous,
        // where this contact hands it the new list and key. Both are
        // dialed at once; the first session wins.
        let previous = credentials
            .previous_group_key(unix_now())
            .map(|k| k.relay_key());
        let first = self.connect_at_rendezvous(key);
        match previous {
            None => first.await,
            Some(previous) => {
                let second = self.connect_at_rendezvous(previous);
                tokio::pin!(first, second);
                tokio::select! {
                    a = &mut first => match a {
                        Ok(link) => Ok(link),
                        Err(_) => second.await,
                    },
                    b = &mut second => match b {
                        Ok(link) => Ok(link),
                        Err(_) => first.await,
                    },
                }
            }
        }
    }

    async fn connect_at_rendezvous(&self, relay_key: [u8; 32]) -> Result<VehicleLink, NodeError> {
        let remote = self.remote().await?;
        let call = RelayCall::dial(&remote.socket, &relay_key).await?;
        let session = remote.connector.connect(call.addr).await?;
        self.membership()?.sync_on_connect(&session).await?;
        Ok(VehicleLink::new(session)?.over_relay(call))
    }

    /// A co-user's session through the broker, at the grant's own
    /// rendezvous (SPEC §17.3, §19.2): the car answers there while the grant
    /// is in force.
    pub async fn connect_shared_via_relay(
        &self,
        grant_id: [u8; 16],
    ) -> Result<VehicleLink, NodeError> {
        let invite = self.invite(&grant_id)?;
        let access = GrantAccess {
            admission_key: invite.grant_key.admission_key(),
            owner_authority_public_key: invite.owner_authority_public_key,
            expect_device: false,
        };
        let remote = self.remote().await?;
        let call = RelayCall::dial(&remote.socket, &invite.grant_key.relay_key()).await?;
        let session = remote
            .connector
            .connect_with_grant(call.addr, &access)
            .await?;
        Ok(VehicleLink::new(session)?.over_relay(call))
    }

    /// This phone's mailbox on the broker, connected on first use: its
    /// persistent session keeps the car's answers while the app is away
    /// (SPEC §19.12).
    async fn mailbox(&self) -> Result<Arc<crate::phone::mailbox::PhoneMailbox>, NodeError> {
        let relay = self.config.relay.clone().ok_or(NodeError::NoRelay)?;
        let credentials = self.credentials()?;
        let mut slot = self.mailbox.lock().await;
        if let Some(open) = slot.as_ref()
            && open.epoch == credentials.group_key_epoch()
        {
            return Ok(open.clone());
        }
        let fresh =
            Arc::new(crate::phone::mailbox::PhoneMailbox::open(&relay, &credentials).await?);
        *slot = Some(fresh.clone());
        Ok(fresh)
    }

    /// Leaves `command` for the car in its mailbox on the broker, whether
    /// the car is awake or not (SPEC §19.12): sealed and signed end to end,
    /// run at most once when the car reads it within `valid_for` (at most
    /// [`crate::MAX_LETTER_VALIDITY`]), never after. The answer comes to
    /// this phone's own mailbox: [`Phone::next_mailbox_reply`]. Posting
    /// again with the same `idempotency_key` runs nothing twice.
    pub async fn post_command(
        &self,
        command: tether_proto::v1::VehicleCommand,
        idempotency_key: [u8; 16],
        valid_for: Duration,
    ) -> Result<crate::PostedCommand, NodeError> {
        let credentials = self.credentials()?;
        self.mailbox()
            .await?
            .post(&credentials, command, idempotency_key, valid_for)
            .await
    }

    /// Leaves a subscription to `paths` in the car's mailbox (SPEC §19.12):
    /// for `valid_for` (at most 7 days) the car pushes their values to this
    /// phone's mailbox, the first values and then each change, whether the
    /// app is connected or not, and again after the car slept and woke.
    /// They arrive as [`crate::MailboxAnswer::Signals`] from
    /// [`Phone::next_mailbox_reply`].
    pub async fn push_subscribe(
        &self,
        paths: Vec<String>,
        valid_for: Duration,
    ) -> Result<crate::PostedCommand, NodeError> {
        let credentials = self.credentials()?;
        self.mailbox()
            .await?
            .post_subscription(&credentials, &paths, valid_for)
            .await
    }

    /// The next answer the car left in this phone's mailbox (a verified
    /// receipt, or why it did not run the command), waiting at most
    /// `timeout`; `None` when none came.
    pub async fn next_mailbox_reply(
        &self,
        timeout: Duration,
    ) -> Result<Option<crate::MailboxReply>, NodeError> {
        let credentials = self.credentials()?;
        self.mailbox().await?.next(&credentials, timeout).await
    }

    /// (Co-user) this phone's mailbox under a share grant, connected on
    /// first use (SPEC §19.12).
    async fn shared_mailbox(
        &self,
        grant_id: &[u8; 16],
    ) -> Result<Arc<crate::phone::mailbox::PhoneMailbox>, NodeError> {
        let relay = self.config.relay.clone().ok_or(NodeError::NoRelay)?;
        let invite = self.invite(grant_id)?;
        let credentials = self.credentials()?;
        let mut slots = self.shared_mailboxes.lock().await;
        if let Some(open) = slots.get(grant_id) {
            return Ok(open.clone());
        }
        let fresh = Arc::new(
            crate::phone::mailbox::PhoneMailbox::open_shared(
                &relay,
                &credentials,
                &invite.grant_key,
                invite.owner_authority_public_key,
            )
            .await?,
        );
        slots.insert(*grant_id, fresh.clone());
        Ok(fresh)
    }

    /// (Co-user) [`Phone::post_command`] under the share grant `grant_id`
    /// (SPEC §19.12): the letter goes to the grant's mailbox of the car,
    /// which runs it only within the grant's scope and validity (R16) and
    /// answers in this phone's mailbox under the grant:
    /// [`Phone::next_shared_mailbox_reply`].
    pub async fn post_shared_command(
        &self,
        grant_id: [u8; 16],
        command: tether_proto::v1::VehicleCommand,
        idempotency_key: [u8; 16],
        valid_for: Duration,
    ) -> Result<crate::PostedCommand, NodeError> {
        let credentials = self.credentials()?;
        self.shared_mailbox(&grant_id)
            .await?
            .post(&credentials, command, idempotency_key, valid_for)
            .await
    }

    /// (Co-user) [`Phone::push_subscribe`] under the share grant
    /// `grant_id`: the car pushes the values its grant covers.
    pub async fn push_subscribe_shared(
        &self,
        grant_id: [u8; 16],
        paths: Vec<String>,
        valid_for: Duration,
    ) -> Result<crate::PostedCommand, NodeError> {
        let credentials = self.credentials()?;
        self.shared_mailbox(&grant_id)
            .await?
            .post_subscription(&credentials, &paths, valid_for)
            .await
    }

    /// (Co-user) the next answer the car left in this phone's mailbox
    /// under the share grant `grant_id`, at most `timeout`.
    pub async fn next_shared_mailbox_reply(
        &self,
        grant_id: [u8; 16],
        timeout: Duration,
    ) -> Result<Option<crate::MailboxReply>, NodeError> {
        let credentials = self.credentials()?;
        self.shared_mailbox(&grant_id)
            .await?
            .next(&credentials, timeout)
            .await
    }

    /// [`Phone::reach_vehicle_via`] with [`Via::Auto`].
    pub async fn reach_vehicle(
        &self,
        timeout: Duration,
    ) -> Result<(VehicleLink, VehicleRoute), NodeError> {
        self.reach_vehicle_via(Via::Auto, timeout).await
    }

    /// Opens a session to the car by the path `via` allows (SPEC §19.11).
    /// [`Via::Auto`]: the LAN as [`Phone::reach_vehicle_lan`] does; with a
    /// broker configured, the relay is dialed at the same time and taken
    /// when the car has not turned up on the LAN [`LAN_PREFERENCE`] after
    /// the relay session was ready (or the LAN failed).
    pub async fn reach_vehicle_via(
        &self,
        via: Via,
        timeout: Duration,
    ) -> Result<(VehicleLink, VehicleRoute), NodeError> {
        match via {
            Via::Lan => self.reach_vehicle_lan(timeout).await,
            Via::Relay => Ok((self.connect_via_relay().await?, VehicleRoute::Relay)),
            Via::Auto if self.config.relay.is_none() => self.reach_vehicle_lan(timeout).await,
            Via::Auto if !self.lan_available.load(std::sync::atomic::Ordering::SeqCst) => {
                Ok((self.connect_via_relay().await?, VehicleRoute::Relay))
            }
            Via::Auto => {
                let lan = self.reach_vehicle_lan(timeout);
                let relay = self.connect_via_relay();
                tokio::pin!(lan, relay);
                tokio::select! {
                    biased;
                    found = &mut lan => match found {
                        Ok(found) => Ok(found),
                        Err(e) => {
                            tracing::debug!(error = %e, "the car is not on the LAN; trying the relay");
                            Ok((relay.await?, VehicleRoute::Relay))
                        }
                    },
                    link = &mut relay => match link {
                        Ok(link) => match tokio::time::timeout(LAN_PREFERENCE, &mut lan).await {
                            Ok(Ok(found)) => Ok(found),
                            _ => Ok((link, VehicleRoute::Relay)),
                        },
                        Err(e) => {
                            tracing::debug!(error = %e, "the relay did not reach the car");
                            lan.await
                        }
                    },
                }
            }
        }
    }

    /// Opens a session to the car on the LAN: first at the address where it answered
    /// last, for at most [`REMEMBERED_ATTEMPT`], then by discovering it on
    /// the LAN (at most `timeout`) and remembering where it answered. A
    /// command run again within a second then skips the mDNS wait, and
    /// sends no multicast at all.
    pub async fn reach_vehicle_lan(
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
    /// `timeout`); it advertises under its own key (SPEC §18.8), of the
    /// current group key or, during a rotation's grace period, the previous
    /// one (a hub that has not caught up yet, SPEC §3.6).
    pub async fn discover_hub(&self, timeout: Duration) -> Result<SocketAddr, NodeError> {
        let keys = browse_keys(&*self.credentials()?, GroupKey::hub_discovery_key)?;
        Ok(self.find_first(keys, timeout).await?.address)
    }

    /// Opens a session to the home hub through the broker, from anywhere
    /// (SPEC §19.11), at the rendezvous of the account's hub relay key.
    pub async fn connect_hub_via_relay(&self) -> Result<crate::HubLink, NodeError> {
        let key = self
            .credentials()?
            .group_key()
            .ok_or(NodeError::NotEnrolled)?
            .hub_relay_key();
        let remote = self.remote().await?;
        let call = RelayCall::dial(&remote.socket, &key).await?;
        let session = remote.connector.connect(call.addr).await?;
        self.membership()?.sync_on_connect(&session).await?;
        Ok(crate::HubLink::new(session)?.over_relay(call))
    }

    /// Opens an account-bound session to the home hub at `address`, to
    /// manage its super tasks (SPEC §18.8).
    pub async fn connect_hub(&self, address: SocketAddr) -> Result<crate::HubLink, NodeError> {
        let session = self.connector().await?.connect(address).await?;
        self.membership()?.sync_on_connect(&session).await?;
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
        self.find_first(vec![key], timeout).await
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
    keys: Vec<[u8; 32]>,
    interfaces: tether_discovery::Interfaces,
    timeout: Duration,
) -> Result<DiscoveredVehicle, NodeError> {
    let mut browser = Browser::start(keys, interfaces)?;
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

/// The account authority a phone hosts, lent to a car that commissions a
/// device (from [`Phone::authority`]).
pub struct PhoneAuthority<'a> {
    phone: &'a Phone,
    public_key: [u8; 32],
}

impl std::fmt::Debug for PhoneAuthority<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhoneAuthority").finish_non_exhaustive()
    }
}

impl AccountAuthority for PhoneAuthority<'_> {
    fn public_key(&self) -> [u8; 32] {
        self.public_key
    }

    fn enroll(
        &mut self,
        request: &EnrollmentRequest,
        _now: u64,
    ) -> Result<EnrollmentGrant, tether_identity::EnrollmentError> {
        self.phone.enroll_device(request).map_err(|e| match e {
            NodeError::Enrollment(e) => e,
            _ => {
                tether_identity::EnrollmentError::Malformed("the phone's authority is unavailable")
            }
        })
    }
}
