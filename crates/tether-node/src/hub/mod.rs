//! The home hub: a member of the owner's account that runs the home's super
//! tasks on its own devices. It asks the head unit for the place and
//! vehicle events its tasks need, and gets `{place, enter|leave}` and
//! vehicle events only, never a coordinate, and only while "car data to
//! home" is on (R10, R11, R21; SPEC §18).
//!
//! The home's devices here are simulated ([`SimHome`]): lights, a porch
//! light and a garage door, each with one boolean property. A real hub
//! brings its own [`Actuator`](crate::Actuator).

mod home;

pub use home::{HOME_SWITCH, SimHome};

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tether_automation::{Catalogue, Config, DeviceId, Place, Site, Value, wire};
use tether_identity::{Credentials, EnrollmentGrant, EnrollmentRequest, GroupKey, Role};
use tether_proto::v1::{self as pb, request, response};
use tether_session::quic::{ClientSession, CloseCode, Connector};
use tether_store::Store;
use tokio::sync::OnceCell;
use tracing::{debug, warn};

use crate::NodeError;
use crate::adverts::{Adverts, follow_epochs};
use crate::automation::serve::permissions_of;
use crate::automation::{AutomationHost, Clock, Interest};
use crate::config::{NodeConfig, unix_now};
use crate::wire::lock;

/// A home hub. Create with [`Hub::open`], enroll once, then
/// [`Hub::start`] and [`Hub::connect`] to the car.
pub struct Hub {
    config: NodeConfig,
    store: Arc<Mutex<Store>>,
    key_pkcs8: Vec<u8>,
    credentials: Mutex<Option<Arc<Credentials>>>,
    connector: OnceCell<Connector>,
    membership: Mutex<Option<Arc<crate::membership::Membership>>>,
    home: Arc<SimHome>,
    automation: Mutex<Option<Arc<AutomationHost>>>,
    link: Mutex<Option<tokio::task::JoinHandle<()>>>,
    watching: Arc<Mutex<Interest>>,
    signal_updates: Arc<std::sync::atomic::AtomicU64>,
    serving: Mutex<Option<Serving>>,
}

/// The hub's own endpoint, while it serves the owner (SPEC §18.8).
struct Serving {
    address: SocketAddr,
    accept: tokio::task::JoinHandle<()>,
    closer: tether_session::quic::ListenerCloser,
    /// Its adverts under the hub discovery key (each withdraws its token
    /// when dropped), moved to a new group key epoch by `epochs`.
    adverts: Arc<tokio::sync::Mutex<Adverts>>,
    epochs: tokio::task::JoinHandle<()>,
    /// Adds the relay's socket to the listener ([`Hub::serve_relay`]).
    attacher: tether_session::quic::SocketAttacher,
    membership: Arc<crate::membership::Membership>,
    /// The relay socket and the task keeping its rendezvous topics in step.
    relay: Option<(Arc<tether_relay::RelaySocket>, tokio::task::JoinHandle<()>)>,
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.epochs.abort();
        if let Some((_, task)) = &self.relay {
            task.abort();
        }
        self.accept.abort();
        self.closer.close();
        // The aborted task may still hold its clone of the adverts for a
        // moment: withdraw the tokens now rather than when it lets go.
        if let Ok(mut adverts) = self.adverts.try_lock() {
            adverts.current.take();
            adverts.grace.take();
        }
    }
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").finish_non_exhaustive()
    }
}

impl Hub {
    /// Opens (or creates) the hub's state with the default simulated home
    /// ([`SimHome::new`]); its device key is generated on first use and
    /// never leaves it.
    pub fn open(config: NodeConfig) -> Result<Self, NodeError> {
        Self::open_with_home(config, SimHome::new())
    }

    /// As [`Hub::open`], with these home devices.
    pub fn open_with_home(config: NodeConfig, home: SimHome) -> Result<Self, NodeError> {
        let (store, key) = config.open_store_and_key()?;
        let credentials = store.load_identity()?.map(Arc::new);
        Ok(Self {
            config,
            store: Arc::new(Mutex::new(store)),
            key_pkcs8: key.pkcs8().to_vec(),
            credentials: Mutex::new(credentials),
            connector: OnceCell::new(),
            membership: Mutex::new(None),
            home: Arc::new(home),
            automation: Mutex::new(None),
            link: Mutex::new(None),
            watching: Arc::new(Mutex::new(Interest::default())),
            signal_updates: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            serving: Mutex::new(None),
        })
    }

    /// Whether the hub holds credentials of an account.
    pub fn is_enrolled(&self) -> bool {
        lock(&self.credentials).is_some()
    }

    /// The request to hand to the account authority (the owner's phone).
    pub fn enrollment_request(&self) -> Result<EnrollmentRequest, NodeError> {
        crate::config::enrollment_request(&self.key_pkcs8, Role::Hub)
    }

    /// Accepts the authority's grant, checks it and stores it.
    pub fn complete_enrollment(&self, grant: &EnrollmentGrant) -> Result<(), NodeError> {
        crate::config::accept_grant(
            &self.key_pkcs8,
            grant,
            Role::Hub,
            &self.store,
            &self.credentials,
            "grant is not for a hub",
        )
    }

    /// The home's devices.
    pub fn home(&self) -> Arc<SimHome> {
        self.home.clone()
    }

    /// Starts the hub's super tasks (stored tasks come back) on `clock`.
    /// Must be called inside a tokio runtime.
    pub fn start(&self, clock: Clock) -> Result<Arc<AutomationHost>, NodeError> {
        let mut slot = lock(&self.automation);
        if let Some(host) = slot.as_ref() {
            return Ok(host.clone());
        }
        let host = AutomationHost::open(
            Config {
                site: Site::Hub,
                ..Config::default()
            },
            self.catalogue(),
            permissions_of(Role::Phone),
            self.store.clone(),
            self.home.clone(),
            clock,
        )?;
        let _timers = host.spawn_timers();
        *slot = Some(host.clone());
        Ok(host)
    }

    /// The hub's super tasks, once started. Tasks are created here by the
    /// owner (the hub's app), or accepted from a shared template.
    pub fn automation(&self) -> Result<Arc<AutomationHost>, NodeError> {
        lock(&self.automation)
            .clone()
            .ok_or(NodeError::State("not started"))
    }

    /// What the hub's tasks may name: the car's signals a hub may read (not
    /// its position, R10) and the home's devices.
    fn catalogue(&self) -> Catalogue {
        self.home
            .catalogue_onto(crate::automation::catalogue::vehicle_catalogue())
    }

    /// Someone at home switched `device`: the home's tasks hear of it
    /// (property triggers and conditions). Returns whether it exists.
    pub fn set_device(&self, device: &str, on: bool) -> Result<bool, NodeError> {
        if !self.home.set(device, on) {
            return Ok(false);
        }
        let _ = self.automation()?.handle_property(
            &DeviceId::new(device),
            HOME_SWITCH,
            Value::Bool(on),
        );
        Ok(true)
    }

    /// Unbinds a home device: it leaves the catalogue, and every task that
    /// names it is marked broken, kept, and says why. Returns those tasks.
    pub fn unbind_device(&self, device: &str) -> Result<Vec<u64>, NodeError> {
        if !self.home.remove(device) {
            return Err(NodeError::State("no such device in this home"));
        }
        let host = self.automation()?;
        host.set_catalogue(self.catalogue());
        Ok(host.device_gone(&DeviceId::new(device))?)
    }

    /// Names a place the car's geofences know, so tasks may use it (the
    /// hub gets only its enter and leave events). `place` may carry the
    /// home's own location for sun times, or no shape.
    pub fn define_place(&self, place: Place) -> Result<(), NodeError> {
        Ok(self.automation()?.define_place(place)?)
    }

    /// Finds the car of this account on the LAN (at most `timeout`).
    pub async fn discover_car(&self, timeout: Duration) -> Result<SocketAddr, NodeError> {
        let credentials = lock(&self.credentials)
            .clone()
            .ok_or(NodeError::NotEnrolled)?;
        // SPEC §3.6: under the current key or, during the grace, the previous.
        let keys = crate::adverts::browse_keys(&credentials, GroupKey::discovery_key)?;
        let found = crate::phone::find_member(keys, self.config.interfaces, timeout).await?;
        Ok(found.address)
    }

    /// Opens a session to the car and follows the place and vehicle events
    /// the hub's tasks need, re-asking whenever that need changes. The
    /// car's "car data to home" switch is mirrored: while it is off, tasks
    /// that read car data are disabled by consent (R11).
    pub async fn connect(&self, car: SocketAddr) -> Result<(), NodeError> {
        let host = self.automation()?;
        let credentials = lock(&self.credentials)
            .clone()
            .ok_or(NodeError::NotEnrolled)?;
        let membership =
            crate::membership::membership_of(&self.membership, &credentials, &self.store);
        let connector = self
            .connector
            .get_or_try_init(|| async {
                Connector::new(
                    SocketAddr::new(self.config.bind_ip, 0),
                    credentials,
                    self.config.session.clone(),
                )
            })
            .await?;
        let session = connector.connect(car).await?;
        // SPEC §3.6: the newer revocation list changes hands at every contact.
        membership.sync_on_connect(&session).await?;
        if session.peer().certificate.role != Role::Vehicle {
            session.close(CloseCode::Normal, "not a vehicle");
            return Err(NodeError::UnexpectedPeer("the peer is not a vehicle"));
        }
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(follow(
            session,
            host,
            self.watching.clone(),
            self.signal_updates.clone(),
            ready_tx,
        ));
        if let Some(old) = lock(&self.link).replace(task) {
            old.abort();
        }
        ready_rx
            .await
            .map_err(|_| NodeError::UnexpectedResponse("the car ended the home events"))?
    }

    /// What the car has acknowledged the hub is watching (its first answer
    /// to the latest `WatchHomeEvents`).
    pub fn watching(&self) -> Interest {
        lock(&self.watching).clone()
    }

    /// How many batches of signal values the car has sent the hub (the
    /// first is the current values of a new subscription).
    pub fn signal_updates(&self) -> u64 {
        self.signal_updates
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Stops following the car.
    pub fn disconnect(&self) {
        if let Some(task) = lock(&self.link).take() {
            task.abort();
        }
    }

    /// Serves the owner's management of the hub's super tasks (SPEC §18.8):
    /// binds a session endpoint on the configured IP (the system picks the
    /// port), advertises it under the account's hub discovery key (R2: a
    /// rotating token, as the car's), and answers the owner's phone and
    /// watch with the task requests of §18.1. Returns the address. Needs
    /// [`Hub::start`] first; a second call moves to a new endpoint. When
    /// the hub adopts a new group key epoch (from the owner's phone or the
    /// car, SPEC §3.6), the advert moves to the new key and a grace advert
    /// stays under the previous one until its grace ends, as the car's.
    pub fn serve(&self) -> Result<SocketAddr, NodeError> {
        let host = self.automation()?;
        let credentials = lock(&self.credentials)
            .clone()
            .ok_or(NodeError::NotEnrolled)?;
        let membership =
            crate::membership::membership_of(&self.membership, &credentials, &self.store);
        let mut listener = tether_session::quic::Listener::bind(
            SocketAddr::new(self.config.bind_ip, 0),
            credentials.clone(),
            self.config.session.clone(),
        )?;
        let address = listener.local_addr()?;
        let adverts = Arc::new(tokio::sync::Mutex::new(Adverts::start(
            &self.config,
            &credentials,
            GroupKey::hub_discovery_key,
            address,
        )?));
        let epochs = tokio::spawn(follow_epochs(
            adverts.clone(),
            None,
            membership.clone(),
            self.config.clone(),
            GroupKey::hub_discovery_key,
            address,
        ));
        let closer = listener.closer();
        let attacher = listener.attacher();
        let serving_membership = membership.clone();
        let accept = tokio::spawn(async move {
            while let Some(session) = listener.accept().await {
                tokio::spawn(serve_owner(session, host.clone(), membership.clone()));
            }
        });
        *lock(&self.serving) = Some(Serving {
            address,
            accept,
            closer,
            adverts,
            epochs,
            attacher,
            membership: serving_membership,
            relay: None,
        });
        Ok(address)
    }

    /// Also answers the owner through the MQTT broker (`NodeConfig::relay`;
    /// SPEC §19.11): the same listener, at the rendezvous topics of the
    /// account's hub relay key (and the previous epoch's during its grace),
    /// so the owner manages the home's tasks from anywhere
    /// (`Phone::connect_hub_via_relay`). Needs [`Hub::serve`] first.
    pub async fn serve_relay(&self) -> Result<(), NodeError> {
        let config = self.config.relay.clone().ok_or(NodeError::NoRelay)?;
        let (attacher, membership) = {
            let serving = lock(&self.serving);
            let s = serving.as_ref().ok_or(NodeError::State("not serving"))?;
            if s.relay.is_some() {
                return Ok(());
            }
            (s.attacher.clone(), s.membership.clone())
        };
        let socket = tether_relay::RelaySocket::connect(config).await?;
        attacher.attach(socket.clone())?;
        let keys = |m: &crate::membership::Membership| {
            let credentials = m.credentials();
            let mut keys: Vec<[u8; 32]> = credentials
                .group_key()
                .map(|k| k.hub_relay_key())
                .into_iter()
                .collect();
            if let Some(previous) = credentials.previous_group_key(unix_now()) {
                keys.push(previous.hub_relay_key());
            }
            keys
        };
        socket.listen(&keys(&membership)).await?;
        let follower = socket.clone();
        let task = tokio::spawn(async move {
            let mut epochs = membership.watch_epoch();
            while epochs.changed().await.is_ok() {
                if let Err(e) = follower.listen(&keys(&membership)).await {
                    tracing::warn!(error = %e, "the hub's rendezvous topics could not be renewed");
                }
            }
        });
        match lock(&self.serving).as_mut() {
            Some(s) => s.relay = Some((socket, task)),
            None => task.abort(),
        }
        Ok(())
    }

    /// The endpoint [`Hub::serve`] opened, while it serves.
    pub fn serving_address(&self) -> Option<SocketAddr> {
        lock(&self.serving).as_ref().map(|s| s.address)
    }

    /// The token the hub now advertises under the current group key (a
    /// random-looking label), while it serves.
    pub async fn current_token(&self) -> Option<String> {
        let adverts = lock(&self.serving).as_ref()?.adverts.clone();
        adverts.lock().await.current_token()
    }

    /// Whether the hub holds a grace advert of the previous group key
    /// epoch (SPEC §3.6), while it serves.
    pub async fn has_grace_advert(&self) -> bool {
        let Some(adverts) = lock(&self.serving).as_ref().map(|s| s.adverts.clone()) else {
            return false;
        };
        adverts.lock().await.grace.is_some()
    }

    /// The serial of the revocation list the hub holds (0: none; SPEC §3.6).
    pub fn revocation_serial(&self) -> u64 {
        lock(&self.credentials)
            .as_ref()
            .map_or(0, |c| c.revocation_serial())
    }

    /// Stops serving the owner: the token is withdrawn and the endpoint
    /// with its sessions closed.
    pub fn stop_serving(&self) {
        drop(lock(&self.serving).take());
    }
}

/// Answers one session of a member until it closes: task requests through
/// the same role checks as on the car (§18.1: the phone manages, the watch
/// lists, reads traces and runs), anything else `BAD_REQUEST`.
async fn serve_owner(
    mut session: tether_session::quic::ServerSession,
    host: Arc<AutomationHost>,
    membership: Arc<crate::membership::Membership>,
) {
    let role = session.peer().certificate.role;
    let peer_key = session.peer().certificate.public_key;
    let _live = membership.register(peer_key, session.closer());
    while let Some(request) = session.next_request().await {
        let tether_session::quic::IncomingRequest {
            envelope,
            mut responder,
        } = request;
        let answer = match envelope.body {
            // SPEC §3.6: the revocation list and group key change hands.
            Some(pb::envelope::Body::Request(pb::Request {
                kind: Some(pb::request::Kind::MembershipSync(sync)),
            })) => membership
                .answer(&peer_key, &sync)
                .map(pb::response::Kind::MembershipSync)
                .map_err(|_| {
                    crate::automation::AutomationError::BadRequest("revocation list refused")
                }),
            Some(pb::envelope::Body::Request(pb::Request { kind: Some(kind) }))
                if crate::automation::serve::is_task_management(&kind) =>
            {
                crate::automation::serve::handle(&host, role, kind)
            }
            _ => Err(crate::automation::AutomationError::BadRequest(
                "the hub answers task management only",
            )),
        };
        let sent = match answer {
            Ok(kind) => {
                responder
                    .send(&pb::Envelope {
                        body: Some(pb::envelope::Body::Response(pb::Response {
                            kind: Some(kind),
                        })),
                        ..pb::Envelope::default()
                    })
                    .await
            }
            Err(e) => responder.send_error(e.code(), &e.to_string()).await,
        };
        if sent.is_ok() {
            responder.finish();
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.disconnect();
        self.stop_serving();
    }
}

fn watch_request(interest: &Interest) -> pb::Envelope {
    crate::wire::request(request::Kind::WatchHomeEvents(pb::WatchHomeEvents {
        places: interest.places.iter().map(|p| p.0.clone()).collect(),
        vehicle_events: interest.vehicle,
    }))
}

/// Follows the car's home events until the session ends. `ready` gets the
/// outcome of the first watch.
async fn follow(
    session: ClientSession,
    host: Arc<AutomationHost>,
    watching: Arc<Mutex<Interest>>,
    signal_updates: Arc<std::sync::atomic::AtomicU64>,
    ready: tokio::sync::oneshot::Sender<Result<(), NodeError>>,
) {
    let mut ready = Some(ready);
    loop {
        let interest = host.interest();
        let changed = host.interest_changed();
        tokio::pin!(changed);
        let mut stream = match session.request(watch_request(&interest)).await {
            Ok(stream) => stream,
            Err(e) => {
                if let Some(ready) = ready.take() {
                    let _ = ready.send(Err(e.into()));
                }
                return;
            }
        };
        // Signals the hub's tasks read: a subscription of their paths only,
        // which the car allows while "car data to home" is on (R11, R21).
        let mut signals = None;
        if !interest.signals.is_empty() && host.car_data_to_home() {
            match session
                .request(crate::wire::request(request::Kind::Subscribe(
                    pb::Subscribe {
                        paths: interest.signals.iter().cloned().collect(),
                    },
                )))
                .await
            {
                Ok(stream) => signals = Some(stream),
                Err(e) => warn!(error = %e, "the car refused the hub's signals"),
            }
        }
        loop {
            let next_signal = async {
                match signals.as_mut() {
                    Some(stream) => stream.next().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut changed => {
                    stream.cancel();
                    if let Some(signals) = signals.take() {
                        signals.cancel();
                    }
                    break;
                }
                update = next_signal => match update {
                    Ok(Some(reply)) => {
                        apply_signals(&host, reply);
                        signal_updates.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    // Ended (the switch went off) or failed: the events go on.
                    _ => signals = None,
                },
                next = stream.next() => {
                    let reply = match next {
                        Ok(Some(reply)) => reply,
                        Ok(None) => {
                            debug!("the car ended the home events");
                            return;
                        }
                        Err(e) => {
                            if let Some(ready) = ready.take() {
                                let _ = ready.send(Err(e.into()));
                            } else {
                                warn!(error = %e, "home events from the car stopped");
                            }
                            return;
                        }
                    };
                    match crate::wire::answer(reply) {
                        Ok(response::Kind::ConsentState(state)) => {
                            *lock(&watching) = interest.clone();
                            if let Err(e) = host.set_car_data_to_home(state.car_data_to_home) {
                                warn!(error = %e, "the car's consent state could not be stored");
                            }
                            if let Some(ready) = ready.take() {
                                let _ = ready.send(Ok(()));
                            }
                        }
                        Ok(response::Kind::HomeEvent(event)) => apply(&host, event),
                        Ok(_) => warn!("an unexpected answer to WatchHomeEvents"),
                        Err(e) => {
                            if let Some(ready) = ready.take() {
                                let _ = ready.send(Err(e));
                            } else {
                                warn!(error = %e, "the car refused home events");
                            }
                            return;
                        }
                    }
                }
            }
        }
    }
}

/// Signal values from the car, to the hub's tasks.
fn apply_signals(host: &Arc<AutomationHost>, reply: pb::Envelope) {
    let values = match crate::wire::answer(reply) {
        Ok(response::Kind::Signals(v) | response::Kind::Update(v)) => v.values,
        _ => return,
    };
    for signal in values {
        // A position is never a hub's (R10): the car does not send one.
        if let Some(value) = signal.value.and_then(crate::automation::task_value) {
            let _ = host.handle_signal(&signal.path, value);
        }
    }
}

fn apply(host: &Arc<AutomationHost>, event: pb::HomeEvent) {
    match wire::home_event_from_proto(event) {
        Ok(wire::HomeEvent::Place { place, transition }) => {
            let _ = host.handle_place_event(&place, transition);
        }
        Ok(wire::HomeEvent::Vehicle(event)) => {
            let _ = host.handle_vehicle_event(event);
        }
        Ok(wire::HomeEvent::Consent { car_data_to_home }) => {
            if let Err(e) = host.set_car_data_to_home(car_data_to_home) {
                warn!(error = %e, "the car's consent switch could not be stored");
            }
        }
        Err(e) => warn!(error = %e, "a home event the hub cannot read"),
    }
}
