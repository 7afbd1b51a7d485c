//! The head unit's serving side: one task owns the sans-IO vehicle service
//! and the clock; per-session tasks feed it requests and per-stream tasks
//! write its responses.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tether_control::{Output, PeerInfo, SimulatedVehicle, StreamId, VehicleService};
use tether_proto::v1::{CommandState, Envelope, ErrorCode, Response, envelope, request, response};
use tether_session::quic::{CloseCode, Responder, ServerSession};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::automation::AutomationHost;
use crate::config::unix_now;
use crate::devices::{DeviceRequest, DeviceService};
use crate::share::{Gate, ShareRegistry};

pub(crate) type Service =
    VehicleService<SimulatedVehicle, crate::car::receipt_log::StoreReceiptLog>;

pub(crate) enum ServiceInput {
    Request {
        stream: StreamId,
        peer: PeerInfo,
        /// Boxed: the channel's slots are sized by the largest input.
        envelope: Box<Envelope>,
        writer: mpsc::UnboundedSender<Envelope>,
    },
    Closed(StreamId),
    /// Runs on the service's task with the service (reads of the car's
    /// state for the node: executions, the battery level for R15).
    With(Box<dyn FnOnce(&mut Service) + Send>),
    /// The car's own tasks, which hear its signals. Held weakly: they hold
    /// this service's sender (their vehicle commands come through it).
    Automation(std::sync::Weak<AutomationHost>),
}

/// How often the signals the car's tasks declared are read while nothing
/// else wakes the service (the car's own dynamics change them too).
const SIGNAL_POLL_MS: u64 = 1_000;

/// Feeds the car's tasks the signals they declared (R21: no other): after
/// every step of the service (and before each request), each is read and
/// handed to the engine when it changed. The first reading of a signal is
/// handed on too: it is where a change starts, as for a hub's first
/// subscription answer. While vehicle events are wanted and the app does
/// not report them itself, it derives them from the lock and gear signals
/// (SPEC §18.6).
#[derive(Default)]
struct SignalFeed {
    last: HashMap<String, tether_automation::Value>,
    /// Locked and parked as last read, while vehicle events are wanted
    /// and derived; `None` until the first reading, which sets the state
    /// without an event.
    locked: Option<bool>,
    parked: Option<bool>,
}

impl SignalFeed {
    /// Returns whether any signal is wanted (then the service should wake
    /// within [`SIGNAL_POLL_MS`]).
    fn feed(&mut self, service: &mut Service, host: &Arc<AutomationHost>, now_ms: u64) -> bool {
        use tether_control::VehicleBackend;
        let wanted = host.interest().signals;
        self.last.retain(|path, _| wanted.contains(path));
        let states = if host.derives_vehicle_events() {
            host.wanted_vehicle_states()
        } else {
            Default::default()
        };
        if wanted.is_empty() && states.is_empty() {
            (self.locked, self.parked) = (None, None);
            return false;
        }
        service.backend_mut().tick(now_ms);
        self.derive_events(service, host, &states);
        for path in wanted {
            let Some(value) = tether_control::signals::lookup(&path)
                .and_then(|signal| service.backend().read(signal))
                .and_then(crate::automation::task_value)
            else {
                continue;
            };
            if self.last.get(&path) != Some(&value) {
                self.last.insert(path.clone(), value.clone());
                let _ = host.handle_signal(&path, value);
            }
        }
        true
    }

    /// Vehicle events from the car's own signals (SPEC §18.6), for the
    /// `states` wanted and from no other signal (R21): `Locked` when every
    /// door becomes locked and `Unlocked` when one stops being so; `Parked`
    /// and `Driving` when the selected gear enters or leaves park. Charging
    /// has no signal here: its events come from the app. A state no longer
    /// wanted is forgotten, so that it starts again silently.
    fn derive_events(
        &mut self,
        service: &Service,
        host: &Arc<AutomationHost>,
        states: &std::collections::BTreeSet<tether_automation::VehicleState>,
    ) {
        use tether_automation::{Value, VehicleEvent, VehicleState};
        use tether_control::{VehicleBackend, signals};
        let read = |path: &str| {
            signals::lookup(path)
                .and_then(|signal| service.backend().read(signal))
                .and_then(crate::automation::task_value)
        };
        let locked = states
            .contains(&VehicleState::Locking)
            .then(|| {
                signals::DOOR_IS_LOCKED
                    .iter()
                    .map(|path| match read(path) {
                        Some(Value::Bool(b)) => Some(b),
                        _ => None,
                    })
                    .collect::<Option<Vec<bool>>>()
                    .map(|doors| doors.iter().all(|l| *l))
            })
            .flatten();
        let parked = states
            .contains(&VehicleState::Parking)
            .then(|| match read(signals::SELECTED_GEAR) {
                Some(Value::Int(gear)) => Some(gear == signals::GEAR_PARK),
                _ => None,
            })
            .flatten();
        for (now, last, on, off) in [
            (
                locked,
                &mut self.locked,
                VehicleEvent::Locked,
                VehicleEvent::Unlocked,
            ),
            (
                parked,
                &mut self.parked,
                VehicleEvent::Parked,
                VehicleEvent::Driving,
            ),
        ] {
            let Some(now) = now else {
                *last = None;
                continue;
            };
            if last.is_some_and(|was| was != now) {
                let _ = host.handle_vehicle_event(if now { on } else { off });
            }
            *last = Some(now);
        }
    }
}

/// Inputs taken from the queue in one turn of the service task, at most.
const MAX_INPUTS_PER_TURN: usize = 64;

/// Owns the service; the only place that reads the clock for it.
pub(crate) async fn run_service(
    mut service: Service,
    mut inputs: mpsc::UnboundedReceiver<ServiceInput>,
) {
    let start = Instant::now();
    let now_ms = |start: Instant| start.elapsed().as_millis() as u64;
    let mut writers: HashMap<StreamId, mpsc::UnboundedSender<Envelope>> = HashMap::new();
    let mut wake_at_ms = 0u64;
    let mut automation = std::sync::Weak::new();
    let mut signals = SignalFeed::default();
    loop {
        let sleep = tokio::time::sleep_until(start + std::time::Duration::from_millis(wake_at_ms));
        tokio::select! {
            input = inputs.recv() => {
                let Some(input) = input else { return };
                let mut next = Some(input);
                // Take what else is already queued before running the
                // commands: they then share one pair of commits (group
                // commit, SPEC §8.3). Bounded, so the clock keeps moving.
                let mut taken = 0;
                while let Some(input) = next.take() {
                    match input {
                        ServiceInput::Request { stream, peer, envelope, writer } => {
                            writers.insert(stream, writer);
                            // Where the car stands before the request (a
                            // command may change it): a state first read
                            // after the change would be taken as the start,
                            // with no event.
                            if let Some(host) = automation.upgrade() {
                                signals.feed(&mut service, &host, now_ms(start));
                            }
                            service.handle_request(stream, peer, &envelope, now_ms(start));
                        }
                        ServiceInput::Closed(stream) => {
                            writers.remove(&stream);
                            service.handle_stream_closed(stream);
                        }
                        ServiceInput::With(f) => f(&mut service),
                        ServiceInput::Automation(host) => automation = host,
                    }
                    taken += 1;
                    if taken < MAX_INPUTS_PER_TURN {
                        next = inputs.try_recv().ok();
                    }
                }
            }
            _ = sleep => service.handle_timeout(now_ms(start)),
        }
        loop {
            match service.poll_output() {
                Output::Transmit(t) => {
                    if let Some(w) = writers.get(&t.stream)
                        && w.send(t.envelope).is_err()
                    {
                        writers.remove(&t.stream);
                    }
                }
                Output::Timeout(at) => {
                    wake_at_ms = at;
                    break;
                }
            }
        }
        if let Some(host) = automation.upgrade() {
            let now = now_ms(start);
            if signals.feed(&mut service, &host, now) {
                wake_at_ms = wake_at_ms.min(now.saturating_add(SIGNAL_POLL_MS));
            }
        }
    }
}

/// What a served session reaches besides the vehicle service.
pub(crate) struct Services {
    pub(crate) shares: Arc<ShareRegistry>,
    pub(crate) devices: Arc<DeviceService>,
    pub(crate) automation: Arc<AutomationHost>,
    /// The revocation list and group key (SPEC §3.6).
    pub(crate) membership: Arc<crate::membership::Membership>,
}

/// Serves one authenticated session until it closes. A co-user's session
/// (admitted by a share grant) passes each request through the grant's
/// scope first (R16, R19; SPEC §17.4).
pub(crate) async fn serve_session(
    mut session: ServerSession,
    registration: crate::share::Registration,
    service: mpsc::UnboundedSender<ServiceInput>,
    stream_ids: Arc<AtomicU64>,
    services: Services,
) {
    let Services {
        shares,
        devices,
        automation,
        membership,
    } = services;
    let role = session.peer().certificate.role;
    let grant = session.peer().grant;
    let peer_key = session.peer().certificate.public_key;
    // A member's session closes when a list removing it arrives (SPEC §3.6).
    let _live = grant
        .is_none()
        .then(|| membership.register(peer_key, session.closer()));
    // A co-user is its own requester class, whatever role its certificate
    // names (R16, R21, R32; SPEC §17.4); commands are keyed by the peer's
    // principal (SPEC §8.3).
    let peer = match &grant {
        None => PeerInfo::member(role, registration.session()),
        Some(g) => PeerInfo::co_user(
            role,
            registration.session(),
            shares.grant_allows(g, tether_identity::SharePermission::VehicleLocation),
        ),
    }
    .with_principal(crate::car::receipt_log::principal_of(session.peer()));
    while let Some(request) = session.next_request().await {
        match shares.gate(role, grant.as_ref(), &request.envelope, unix_now()) {
            Gate::Forward => {}
            Gate::Deny(message) => {
                refuse(request.responder, ErrorCode::PermissionDenied, message);
                continue;
            }
            Gate::Share(kind) => {
                let responder = request.responder;
                let shares = shares.clone();
                tokio::spawn(async move {
                    let answer = shares.handle(*kind, unix_now()).await;
                    reply(responder, answer.map(response::Kind::ShareGrant)).await;
                });
                continue;
            }
            Gate::Expired => {
                session.close(CloseCode::Revoked, "share expired");
                return;
            }
        }
        if let Some(envelope::Body::Request(tether_proto::v1::Request {
            kind: Some(request::Kind::MembershipSync(sync)),
        })) = &request.envelope.body
        {
            // SPEC §3.6: members only (the gate refuses co-users).
            let answer = membership
                .answer(&peer_key, sync)
                .map(response::Kind::MembershipSync)
                .map_err(|e| (ErrorCode::BadRequest, e.to_string()));
            tokio::spawn(reply(request.responder, answer));
            continue;
        }
        let stream = StreamId(stream_ids.fetch_add(1, Ordering::Relaxed));
        let (writer, responses) = mpsc::unbounded_channel();
        let kind = request_kind(&request.envelope);
        if let Some(envelope::Body::Request(tether_proto::v1::Request { kind: Some(k) })) =
            &request.envelope.body
            && crate::automation::serve::is_automation(k)
        {
            // Super tasks (SPEC §18.1).
            let request_id = request.envelope.request_id;
            let k = k.clone();
            let automation = automation.clone();
            let watch = matches!(
                k,
                request::Kind::WatchHomeEvents(_) | request::Kind::WatchConfirmations(_)
            );
            let outcome = match &k {
                request::Kind::WatchHomeEvents(w) => {
                    crate::automation::serve::watch(&automation, role, request_id, w, writer)
                }
                request::Kind::WatchConfirmations(_) => {
                    crate::automation::serve::watch_confirmations(
                        &automation,
                        role,
                        request_id,
                        writer,
                    )
                }
                _ => match crate::automation::serve::handle(&automation, role, k) {
                    Ok(kind) => writer
                        .send(Envelope {
                            request_id,
                            body: Some(envelope::Body::Response(Response { kind: Some(kind) })),
                            ..Envelope::default()
                        })
                        .map_err(|_| crate::automation::AutomationError::BadRequest("closed")),
                    Err(e) => Err(e),
                },
            };
            if let Err(e) = outcome {
                refuse(request.responder, e.code(), e.to_string());
                continue;
            }
            tokio::spawn(write_responses(
                stream,
                if watch {
                    Kind::Subscription
                } else {
                    Kind::Single
                },
                request.responder,
                responses,
                service.clone(),
            ));
            continue;
        }
        if let Some(envelope::Body::Request(tether_proto::v1::Request { kind: Some(k) })) =
            &request.envelope.body
            && tether_devices::DeviceManager::is_management(k)
        {
            // Device management goes to the device service (SPEC §16),
            // after its role table (R10, R11, R23; SPEC §16.5).
            let operation = tether_devices::access::operation(k)
                .expect("a management request has an operation");
            let mut consent = automation.consent_watch();
            let car_data_to_home = *consent.borrow();
            if !tether_devices::access::may(role, operation, car_data_to_home) {
                let message = if role == tether_identity::Role::Hub && !car_data_to_home {
                    "car data to home is off"
                } else {
                    "this device may not do that to devices"
                };
                refuse(request.responder, ErrorCode::PermissionDenied, message);
                continue;
            }
            let watch = matches!(k, request::Kind::WatchDevices(_));
            let grantee_devices = grant.map(|g| shares.grant_devices(&g));
            let reply = if role == tether_identity::Role::Hub {
                // R11, R28: a hub's device watch ends when the switch goes
                // off (the device service drops a watcher whose stream is
                // closed).
                let (to_hub, mut from_service) = mpsc::unbounded_channel::<Envelope>();
                tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            next = from_service.recv() => {
                                let Some(envelope) = next else { return };
                                if writer.send(envelope).is_err() {
                                    return;
                                }
                            }
                            changed = consent.changed() => {
                                if changed.is_err() || !*consent.borrow() {
                                    return;
                                }
                            }
                        }
                    }
                });
                to_hub
            } else {
                writer
            };
            let devices = devices.clone();
            let envelope = request.envelope;
            tokio::spawn(async move {
                devices
                    .handle(DeviceRequest {
                        envelope,
                        grantee_devices,
                        reply,
                        watch,
                    })
                    .await
            });
            tokio::spawn(write_responses(
                stream,
                if watch {
                    Kind::Subscription
                } else {
                    Kind::Single
                },
                request.responder,
                responses,
                service.clone(),
            ));
            continue;
        }
        let hub_reads = role == tether_identity::Role::Hub
            && matches!(
                &request.envelope.body,
                Some(envelope::Body::Request(tether_proto::v1::Request {
                    kind: Some(request::Kind::GetSignals(_) | request::Kind::Subscribe(_))
                }))
            );
        if hub_reads {
            // R11, R28: the hub reads the car's state only while "car data
            // to home" is on, and a subscription ends when it goes off.
            let mut consent = automation.consent_watch();
            if !*consent.borrow() {
                refuse(
                    request.responder,
                    ErrorCode::PermissionDenied,
                    "car data to home is off",
                );
                continue;
            }
            let subscription = matches!(
                &request.envelope.body,
                Some(envelope::Body::Request(tether_proto::v1::Request {
                    kind: Some(request::Kind::Subscribe(_))
                }))
            );
            let service = service.clone();
            tokio::spawn(async move {
                while subscription && consent.changed().await.is_ok() {
                    if !*consent.borrow() {
                        let _ = service.send(ServiceInput::Closed(stream));
                        return;
                    }
                }
            });
        }
        if service
            .send(ServiceInput::Request {
                stream,
                peer,
                envelope: Box::new(request.envelope),
                writer,
            })
            .is_err()
        {
            return;
        }
        tokio::spawn(write_responses(
            stream,
            kind,
            request.responder,
            responses,
            service.clone(),
        ));
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Single,
    Subscription,
    Command,
}

/// Answers one request with `answer` (a response, or an error code and its
/// message) and ends its stream. A peer that has gone is no one's fault
/// here: the send's result is dropped.
async fn reply(mut responder: Responder, answer: Result<response::Kind, (ErrorCode, String)>) {
    let _ = match answer {
        Ok(kind) => {
            responder
                .send(&Envelope {
                    body: Some(envelope::Body::Response(Response { kind: Some(kind) })),
                    ..Envelope::default()
                })
                .await
        }
        Err((code, message)) => responder.send_error(code, &message).await,
    };
    responder.finish();
}

/// Refuses one request with `code` in a task of its own, so the session's
/// loop goes on to the next request at once.
fn refuse(responder: Responder, code: ErrorCode, message: impl Into<String>) {
    tokio::spawn(reply(responder, Err((code, message.into()))));
}

fn request_kind(envelope: &Envelope) -> Kind {
    match &envelope.body {
        Some(envelope::Body::Request(r)) => match r.kind {
            Some(request::Kind::Subscribe(_)) => Kind::Subscription,
            Some(request::Kind::Command(_)) => Kind::Command,
            _ => Kind::Single,
        },
        _ => Kind::Single,
    }
}

/// Whether `envelope` is the last response of a request of this kind.
fn is_final(kind: Kind, envelope: &Envelope) -> bool {
    match &envelope.body {
        Some(envelope::Body::Error(_)) => true,
        Some(envelope::Body::Response(r)) => match (kind, &r.kind) {
            (Kind::Subscription, _) => false,
            (Kind::Command, Some(response::Kind::CommandStatus(s))) => !matches!(
                CommandState::try_from(s.state),
                Ok(CommandState::Accepted | CommandState::InProgress)
            ),
            _ => true,
        },
        _ => true,
    }
}

async fn write_responses(
    stream: StreamId,
    kind: Kind,
    mut responder: Responder,
    mut responses: mpsc::UnboundedReceiver<Envelope>,
    service: mpsc::UnboundedSender<ServiceInput>,
) {
    loop {
        tokio::select! {
            next = responses.recv() => {
                let Some(envelope) = next else { break };
                if responder.send(&envelope).await.is_err() {
                    break;
                }
                if is_final(kind, &envelope) {
                    responder.finish();
                    let _ = service.send(ServiceInput::Closed(stream));
                    return;
                }
            }
            // The requester cancelled (a subscription it no longer wants).
            _ = responder.cancelled() => break,
        }
    }
    let _ = service.send(ServiceInput::Closed(stream));
}
