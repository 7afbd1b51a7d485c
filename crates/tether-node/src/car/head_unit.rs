//! The head unit: enrolls in the owner's account, advertises a rotating
//! token over mDNS and serves the vehicle over account-bound sessions.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tether_control::{Config as ControlConfig, Executions, SimulatedVehicle, VehicleService};
use tether_identity::{Credentials, DeviceKey, EnrollmentGrant, EnrollmentRequest, GroupKey, Role};
use tether_relay::RelaySocket;
use tether_session::quic::{
    CertificateRotator, CloseCode, Connector, Listener, ListenerCloser, ListenerStats, StatsHandle,
};
use tether_store::Store;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::NodeError;
use crate::adverts::{Adverts, follow_epochs};
use crate::automation::catalogue::car_catalogue;
use crate::automation::serve::permissions_of;
use crate::automation::{AutomationHost, Clock};
use crate::car::receipt_log::StoreReceiptLog;
use crate::car::serve::{ServiceInput, run_service, serve_session};
use crate::car::tasks::{AppNotice, CarActuator};
use crate::config::{NodeConfig, unix_now};
use crate::devices::DeviceService;
use crate::share::ShareRegistry;
use crate::wire::lock;

/// The store setting that keeps the owner's logout across restarts
/// (SPEC §17.5): `"yes"` while logged out.
/// Commands the head unit holds for its next batch (SPEC §8.3); more are
/// refused `BUSY`. A bound on memory (a few hundred bytes each), not on
/// the rate: every pending command runs in the next turn.
const HEAD_UNIT_PENDING_COMMANDS: usize = 256;

const LOGGED_OUT_SETTING: &str = "head_unit.owner_logged_out";

/// How long a device scan browses the LAN at most (R17).
pub(crate) const DEVICE_SCAN_WINDOW: std::time::Duration = std::time::Duration::from_secs(5);

struct Running {
    address: SocketAddr,
    adverts: Arc<tokio::sync::Mutex<Adverts>>,
    stats: StatsHandle,
    closer: ListenerCloser,
    service: mpsc::UnboundedSender<ServiceInput>,
    accept_task: tokio::task::JoinHandle<()>,
    service_task: tokio::task::JoinHandle<()>,
    shares: Arc<ShareRegistry>,
    devices: Arc<DeviceService>,
    automation: Arc<AutomationHost>,
    automation_timers: tokio::task::JoinHandle<()>,
    /// Replaces the listener's TLS key.
    certificates: CertificateRotator,
    /// Replaces it at each token rotation (R2; SPEC §4.5), and moves the
    /// adverts to a new group key epoch (SPEC §3.6).
    certificate_task: tokio::task::JoinHandle<()>,
    /// The remote path, when a broker is configured (SPEC §19.11): the
    /// socket the listener also accepts on, and the task that keeps the
    /// rendezvous topics in step with the group key and the grants.
    relay: Option<(Arc<RelaySocket>, tokio::task::JoinHandle<()>)>,
    /// The car's mailbox on the broker (SPEC §19.12).
    mailbox: Option<crate::car::mailbox::CarMailbox>,
}

/// A car's head unit. Create with [`HeadUnit::open`], enroll once, then
/// [`HeadUnit::start`].
pub struct HeadUnit {
    config: NodeConfig,
    store: Arc<Mutex<Store>>,
    key_pkcs8: Vec<u8>,
    credentials: Mutex<Option<Arc<Credentials>>>,
    running: tokio::sync::Mutex<Option<Running>>,
    /// `Some(unix_ms)`: super tasks run on a manual clock starting there
    /// (a replayed drive); `None`: on the system clock.
    automation_clock: Mutex<Option<u64>>,
    notices: Arc<Mutex<Vec<AppNotice>>>,
    /// The owner logged out on the car's screen and has not logged in
    /// again: every member session is refused (SPEC §17.5). Mirrors the
    /// store's [`LOGGED_OUT_SETTING`].
    owner_logged_out: Arc<AtomicBool>,
}

impl std::fmt::Debug for HeadUnit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeadUnit").finish_non_exhaustive()
    }
}

impl HeadUnit {
    /// Opens (or creates) the head unit's state. A device key is generated
    /// on first use and never leaves this node.
    pub fn open(config: NodeConfig) -> Result<Self, NodeError> {
        let (store, key) = config.open_store_and_key()?;
        let credentials = store.load_identity()?.map(Arc::new);
        let logged_out = store.get_setting(LOGGED_OUT_SETTING)?.as_deref() == Some("yes");
        Ok(Self {
            config,
            store: Arc::new(Mutex::new(store)),
            key_pkcs8: key.pkcs8().to_vec(),
            credentials: Mutex::new(credentials),
            running: tokio::sync::Mutex::new(None),
            automation_clock: Mutex::new(None),
            notices: Arc::new(Mutex::new(Vec::new())),
            owner_logged_out: Arc::new(AtomicBool::new(logged_out)),
        })
    }

    /// The identifiers kept in this node's local store (R2).
    pub fn local_identifiers(&self) -> Result<crate::LocalIdentifiers, NodeError> {
        crate::config::LocalIdentifiers::load(&lock(&self.store))
    }

    /// Whether the head unit holds a certificate.
    pub fn is_enrolled(&self) -> bool {
        lock(&self.credentials).is_some()
    }

    /// The request to hand to the account authority over a trusted channel
    /// (in local mode, the owner's phone).
    pub fn enrollment_request(&self) -> Result<EnrollmentRequest, NodeError> {
        crate::config::enrollment_request(&self.key_pkcs8, Role::Vehicle)
    }

    /// Accepts the authority's grant, checks it and stores it.
    pub fn complete_enrollment(&self, grant: &EnrollmentGrant) -> Result<(), NodeError> {
        crate::config::accept_grant(
            &self.key_pkcs8,
            grant,
            Role::Vehicle,
            &self.store,
            &self.credentials,
            "grant is not for a vehicle",
        )
    }

    /// The vehicle's public key (receipts verify against it).
    pub fn public_key(&self) -> Result<[u8; 32], NodeError> {
        Ok(DeviceKey::from_pkcs8(&self.key_pkcs8)?.public_key())
    }

    /// Binds the session endpoint, starts advertising and serving. Must be
    /// called inside a tokio runtime.
    pub async fn start(&self) -> Result<SocketAddr, NodeError> {
        let mut running = self.running.lock().await;
        if running.is_some() {
            return Err(NodeError::State("already started"));
        }
        let credentials = lock(&self.credentials)
            .clone()
            .ok_or(NodeError::NotEnrolled)?;
        let mut listener = Listener::bind(
            SocketAddr::new(self.config.bind_ip, self.config.port),
            credentials.clone(),
            self.config.session.clone(),
        )?;
        let address = listener.local_addr()?;
        // The remote path (SPEC §19.11): the same listener, handshake,
        // grants and services also over the broker.
        let relay = match &self.config.relay {
            Some(config) => {
                let socket = RelaySocket::connect(config.clone()).await?;
                listener.attach_socket(socket.clone())?;
                Some(socket)
            }
            None => None,
        };
        let stats = listener.stats_handle();
        let closer = listener.closer();
        let membership =
            crate::membership::Membership::new(credentials.clone(), self.store.clone());
        // The car's own adverts, and during a rotation's grace period one
        // under the previous group key (SPEC §3.6).
        let adverts = Arc::new(tokio::sync::Mutex::new(Adverts::start(
            &self.config,
            &credentials,
            GroupKey::discovery_key,
            address,
        )?));
        // R2: each new token comes with a new TLS key, so a peer that
        // completes QUIC cannot link the car across rotations by its
        // certificate (SPEC §4.5, §11 item 1). A new group key epoch moves
        // the adverts to the new key (SPEC §3.6).
        let certificates = listener.certificate_rotator();
        let certificate_task = tokio::spawn(follow_epochs(
            adverts.clone(),
            Some(certificates.clone()),
            membership.clone(),
            self.config.clone(),
            GroupKey::discovery_key,
            address,
        ));
        let service = VehicleService::new(
            ControlConfig {
                // Commands waiting for the service's next turn run as one
                // batch with two commits (SPEC §8.3); a household's burst
                // fits, and each waits a few milliseconds, not a refusal.
                max_pending_commands: HEAD_UNIT_PENDING_COMMANDS,
                ..ControlConfig::default()
            },
            DeviceKey::from_pkcs8(&self.key_pkcs8)?,
            SimulatedVehicle::new(),
            StoreReceiptLog::open(self.store.clone())?,
        )
        .map_err(|_| NodeError::State("receipt log unavailable"))?;
        let (service_tx, service_rx) = mpsc::unbounded_channel();
        let service_task = tokio::spawn(run_service(service, service_rx));
        let devices = DeviceService::new(
            self.store.clone(),
            Connector::new(
                SocketAddr::new(self.config.bind_ip, 0),
                credentials.clone(),
                self.config.session.clone(),
            )?,
            *credentials.authority_public_key(),
            self.config.interfaces,
        )?;
        // The car's tasks may name its signals and its bound devices (SPEC
        // §18.6): the catalogue holds the devices before stored tasks are
        // installed again, so those naming a bound device still validate.
        let automation = AutomationHost::open(
            tether_automation::Config {
                site: tether_automation::Site::HeadUnit,
                ..tether_automation::Config::default()
            },
            car_catalogue(devices.task_devices()?),
            permissions_of(Role::Phone),
            self.store.clone(),
            Arc::new(CarActuator::new(
                service_tx.clone(),
                self.notices.clone(),
                devices.clone(),
            )),
            match *lock(&self.automation_clock) {
                Some(start) => Clock::manual(start),
                None => Clock::System,
            },
        )?;
        devices.follow_automation(&automation);
        // The car's tasks hear its signals from the service (SPEC §18.6).
        let _ = service_tx.send(ServiceInput::Automation(Arc::downgrade(&automation)));
        let automation_timers = automation.spawn_timers();
        let shares = ShareRegistry::load(
            self.store.clone(),
            *credentials.authority_public_key(),
            listener.grantees(),
            // Each grant's advert: the same endpoint, its own key.
            self.config.advertiser([0; 32], address),
            unix_now(),
        )?;
        let relay = match relay {
            Some(socket) => {
                // The first set of topics before `start` returns, so a
                // phone may dial at once.
                socket
                    .listen(&relay_keys(membership.credentials(), &shares))
                    .await?;
                let task = tokio::spawn(follow_relay_keys(
                    socket.clone(),
                    membership.clone(),
                    shares.clone(),
                ));
                Some((socket, task))
            }
            None => None,
        };
        let stream_ids = Arc::new(AtomicU64::new(1));
        // The phones and watches a queued command's receipt reaches
        // (SPEC §19.12, push).
        let members = crate::members::KnownMembers::load(self.store.clone())?;
        // Commands left while the car slept (SPEC §19.12): its persistent
        // mailbox session delivers them now.
        let mailbox = match &self.config.relay {
            Some(config) => Some(
                crate::car::mailbox::serve_car_mailbox(
                    config,
                    membership.clone(),
                    service_tx.clone(),
                    stream_ids.clone(),
                    members.clone(),
                    shares.clone(),
                )
                .await?,
            ),
            None => None,
        };
        // R17: scan for bound devices at power-on.
        {
            let devices = devices.clone();
            tokio::spawn(async move { devices.rescan(false, DEVICE_SCAN_WINDOW).await });
        }
        let tx = service_tx.clone();
        let serving_shares = shares.clone();
        let serving_devices = devices.clone();
        let serving_automation = automation.clone();
        let serving_membership = membership.clone();
        let logged_out = self.owner_logged_out.clone();
        let accept_task = tokio::spawn(async move {
            while let Some(session) = listener.accept().await {
                info!(role = %session.peer().certificate.role, resumed = session.peer().resumed, co_user = session.peer().grant.is_some(), "session authenticated");
                // SPEC §17.5: while the owner is logged out, no member
                // session is served, whether it proved the group key or
                // resumed a ticket (issued before the logout or not). A
                // co-user admitted by a grant is not a member and keeps
                // working (R16).
                // Registered before the check: a logout after it finds the
                // session in the registry's sweep, one before it is seen
                // here, so none slips between the two.
                let registration = serving_shares.register(session.peer().grant, session.closer());
                if session.peer().grant.is_none() && logged_out.load(Ordering::SeqCst) {
                    info!("member session closed: the owner is logged out");
                    session.close(CloseCode::Normal, "logged out");
                    continue;
                }
                if session.peer().grant.is_none() {
                    members.heard(&session.peer().certificate, unix_now());
                }
                tokio::spawn(serve_session(
                    session,
                    registration,
                    tx.clone(),
                    stream_ids.clone(),
                    crate::car::serve::Services {
                        shares: serving_shares.clone(),
                        devices: serving_devices.clone(),
                        automation: serving_automation.clone(),
                        membership: serving_membership.clone(),
                    },
                ));
            }
        });
        *running = Some(Running {
            address,
            adverts,
            stats,
            closer,
            service: service_tx,
            accept_task,
            service_task,
            shares,
            devices,
            automation,
            automation_timers,
            certificates,
            certificate_task,
            relay,
            mailbox,
        });
        Ok(address)
    }

    /// The session endpoint's address, once started.
    pub async fn address(&self) -> Option<SocketAddr> {
        self.running.lock().await.as_ref().map(|r| r.address)
    }

    /// The discovery token now advertised (a random-looking label).
    pub async fn current_token(&self) -> Option<String> {
        match self.running.lock().await.as_ref() {
            Some(r) => r.adverts.lock().await.current_token(),
            None => None,
        }
    }

    /// Rotates the discovery token now (call on a network change).
    pub async fn rotate_token(&self) -> Result<String, NodeError> {
        let running = self.running.lock().await;
        let r = running.as_ref().ok_or(NodeError::State("not started"))?;
        let token = {
            let adverts = r.adverts.lock().await;
            let current = adverts
                .current
                .as_ref()
                .ok_or(NodeError::State("not started"))?;
            current.rotate_now().await?
        };
        // Also done by the rotation task; here too, so that the new key is
        // in force when this returns.
        r.certificates.rotate()?;
        Ok(token.label().to_owned())
    }

    /// The serial of the revocation list the car holds (0: none; SPEC §3.6).
    pub fn revocation_serial(&self) -> u64 {
        lock(&self.credentials)
            .as_ref()
            .map_or(0, |c| c.revocation_serial())
    }

    /// The group key epoch the car is in (0 before any removal).
    pub fn group_key_epoch(&self) -> u32 {
        lock(&self.credentials)
            .as_ref()
            .map_or(0, |c| c.group_key_epoch())
    }

    /// Whether the car holds a grace advert of the previous group key
    /// epoch (SPEC §3.6).
    pub async fn has_grace_advert(&self) -> bool {
        match self.running.lock().await.as_ref() {
            Some(r) => r.adverts.lock().await.grace.is_some(),
            None => false,
        }
    }

    /// Listener counters (authenticated, refused, evicted...).
    pub async fn listener_stats(&self) -> Option<ListenerStats> {
        self.running.lock().await.as_ref().map(|r| r.stats.get())
    }

    /// Runs `f` on the vehicle service's task and returns what it gives.
    async fn with_service<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut crate::car::serve::Service) -> T + Send + 'static,
    ) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        {
            let running = self.running.lock().await;
            let r = running.as_ref().ok_or(NodeError::State("not started"))?;
            r.service
                .send(ServiceInput::With(Box::new(move |service| {
                    let _ = tx.send(f(service));
                })))
                .map_err(|_| NodeError::ServiceStopped)?;
        }
        rx.await.map_err(|_| NodeError::ServiceStopped)
    }

    /// How many times the (simulated) car executed each command.
    pub async fn executions(&self) -> Result<Executions, NodeError> {
        self.with_service(|service| service.backend().executions())
            .await
    }

    /// The vehicle battery's state of charge as the car reads it, in whole
    /// percent (rounded down): what gates a device's firmware upgrade
    /// (R15), never a number a caller passes in.
    pub async fn vehicle_battery_percent(&self) -> Result<u8, NodeError> {
        use tether_control::VehicleBackend;
        let read = self
            .with_service(|service| {
                tether_control::signals::lookup(tether_control::signals::BATTERY_STATE_OF_CHARGE)
                    .and_then(|signal| service.backend().read(signal))
            })
            .await?;
        match read {
            Some(tether_proto::v1::signal_value::Value::DoubleValue(percent))
                if percent.is_finite() =>
            {
                Ok(percent.clamp(0.0, 100.0) as u8)
            }
            _ => Err(NodeError::State("the car reports no battery level")),
        }
    }

    /// Sets the simulated car's state of charge (the demo and tests: a low
    /// battery refuses an upgrade, R15).
    #[doc(hidden)]
    pub async fn set_simulated_battery(&self, percent: f64) -> Result<(), NodeError> {
        self.with_service(move |service| service.backend_mut().set_state_of_charge(percent))
            .await
    }

    /// The owner logged out of the car (SPEC §17.5): the owner's live
    /// sessions close, and from now on every member session (the owner's
    /// phone, watch, hub; a full handshake or a resumed ticket) is closed
    /// as soon as it arrives, until [`HeadUnit::owner_logged_in`], across
    /// restarts. Co-users keep working under their grants (R16). The state
    /// is stored first: if it cannot be, nothing changes and the error is
    /// returned. Returns how many live sessions were closed (0 when the car
    /// is not started).
    pub async fn owner_logged_out(&self) -> Result<u32, NodeError> {
        lock(&self.store).set_setting(LOGGED_OUT_SETTING, "yes")?;
        // Refuse new sessions before closing the live ones, so none slips
        // in between.
        self.owner_logged_out.store(true, Ordering::SeqCst);
        let running = self.running.lock().await;
        Ok(running
            .as_ref()
            .map_or(0, |r| r.shares.owner_logged_out() as u32))
    }

    /// The owner logged in again on the car's screen: member sessions are
    /// served again (SPEC §17.5). The head-unit app calls this only once the
    /// person at the screen has shown they are the owner (the car's own
    /// profile login); no request over the network ends a logout, since no
    /// member session is served meanwhile. Stored before it takes effect.
    pub fn owner_logged_in(&self) -> Result<(), NodeError> {
        lock(&self.store).set_setting(LOGGED_OUT_SETTING, "no")?;
        self.owner_logged_out.store(false, Ordering::SeqCst);
        Ok(())
    }

    /// Whether the owner is logged out (SPEC §17.5).
    pub fn is_owner_logged_out(&self) -> bool {
        self.owner_logged_out.load(Ordering::SeqCst)
    }

    /// Revokes a share grant from the car itself (the owner's phone may also
    /// do it over its session). Live co-user sessions under it close at once
    /// (R16, R19). Returns how many were closed.
    pub async fn revoke_share(&self, grant_id: [u8; 16]) -> Result<u32, NodeError> {
        let running = self.running.lock().await;
        let r = running.as_ref().ok_or(NodeError::State("not started"))?;
        r.shares
            .revoke(&grant_id, unix_now())
            .await?
            .ok_or(NodeError::State("no such share grant"))
    }

    /// Co-user sessions live now, across all grants.
    pub async fn co_user_sessions(&self) -> u32 {
        match self.running.lock().await.as_ref() {
            Some(r) => r.shares.live_sessions() as u32,
            None => 0,
        }
    }

    /// Share grants in force (ids and scope).
    pub async fn active_shares(&self) -> Vec<crate::HeldShare> {
        match self.running.lock().await.as_ref() {
            Some(r) => r
                .shares
                .active()
                .into_iter()
                .map(|g| crate::HeldShare {
                    grant_id: g.grant_id,
                    sharer_nickname: String::new(),
                    permissions: g.permissions.to_vec(),
                    not_after: g.not_after,
                })
                .collect(),
            None => Vec::new(),
        }
    }

    /// Runs super tasks on a manual clock starting at `unix_ms` instead of
    /// the system clock (a replayed drive, tests). Call before
    /// [`HeadUnit::start`].
    pub fn use_manual_clock(&self, unix_ms: u64) {
        *lock(&self.automation_clock) = Some(unix_ms);
    }

    /// Super tasks on this car (SPEC §18): tasks, places, the car's fixes
    /// and events, the "car data to home" switch. Once started.
    pub async fn automation(&self) -> Result<Arc<AutomationHost>, NodeError> {
        self.running
            .lock()
            .await
            .as_ref()
            .map(|r| r.automation.clone())
            .ok_or(NodeError::State("not started"))
    }

    /// Notifications and hand-offs the car's tasks produced since the last
    /// call.
    pub fn take_app_notices(&self) -> Vec<AppNotice> {
        std::mem::take(&mut lock(&self.notices))
    }

    pub(crate) async fn devices(&self) -> Result<Arc<DeviceService>, NodeError> {
        self.running
            .lock()
            .await
            .as_ref()
            .map(|r| r.devices.clone())
            .ok_or(NodeError::State("not started"))
    }

    /// Stops advertising (withdrawing the token) and closes every session.
    pub async fn shutdown(&self) -> Result<(), NodeError> {
        let Some(r) = self.running.lock().await.take() else {
            return Ok(());
        };
        r.shares.shutdown().await;
        r.devices.close().await;
        r.automation_timers.abort();
        r.certificate_task.abort();
        if let Some((_, task)) = &r.relay {
            task.abort();
        }
        if let Some(mailbox) = r.mailbox {
            mailbox.stop().await;
        }
        let result = Adverts::shutdown(&r.adverts).await;
        r.closer.close();
        r.accept_task.abort();
        r.service_task.abort();
        result?;
        Ok(())
    }
}

/// The relay keys the car answers at (SPEC §19.2, §19.11): the group key's,
/// the previous epoch's during its grace (so a member that was offline at
/// a removal still reaches the car to catch up, SPEC §3.6; a removed device
/// that knows that key is refused by the handshake), and each grant's.
fn relay_keys(credentials: &Credentials, shares: &ShareRegistry) -> Vec<[u8; 32]> {
    let mut keys: Vec<[u8; 32]> = credentials
        .group_key()
        .map(|k| k.relay_key())
        .into_iter()
        .collect();
    if let Some(previous) = credentials.previous_group_key(unix_now()) {
        keys.push(previous.relay_key());
    }
    keys.extend(shares.relay_keys());
    keys
}

/// Keeps the car's rendezvous topics in step: anew at each group key epoch,
/// at each grant installed, revoked or expired, and when the previous
/// epoch's grace ends (the socket itself follows the 15-minute windows).
async fn follow_relay_keys(
    socket: Arc<RelaySocket>,
    membership: Arc<crate::membership::Membership>,
    shares: Arc<ShareRegistry>,
) {
    let mut epochs = membership.watch_epoch();
    let mut grants = shares.watch_grant_keys();
    loop {
        let grace_left = membership
            .credentials()
            .previous_group_key_until()
            .map(|(_, until)| until.saturating_add(1).saturating_sub(unix_now()))
            .filter(|s| *s > 0);
        let grace_over = async {
            match grace_left {
                Some(s) => tokio::time::sleep(std::time::Duration::from_secs(s)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = epochs.changed() => if changed.is_err() { return },
            changed = grants.changed() => if changed.is_err() { return },
            () = grace_over => {}
        }
        let keys = relay_keys(membership.credentials(), &shares);
        if let Err(e) = socket.listen(&keys).await {
            warn!(error = %e, "the relay's rendezvous topics could not be renewed");
        }
    }
}
