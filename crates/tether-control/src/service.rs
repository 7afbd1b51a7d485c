//! The head unit's vehicle service: request envelopes in, response envelopes out.

use std::collections::{BTreeMap, VecDeque};

use tether_identity::{DeviceKey, PUBLIC_KEY_LEN, Role};
use tether_proto::v1::{
    Envelope, Error, ErrorCode, Pong, Request, Response, SignalValue, SignalValues, envelope,
    request, response, signal_value::Value,
};

use crate::access::{may_read_any, peer_may_read};
use crate::backend::VehicleBackend;
use crate::principal::Principal;
use crate::receipt::{ReceiptLog, ReceiptLogError};
use crate::signals::{CATALOGUE, Sensitivity, Signal, lookup};

mod commands;

use commands::PendingCommand;

/// Service limits and defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Deadline for a command whose envelope says `deadline_ms = 0`, ms.
    pub default_deadline_ms: u32,
    /// Longest deadline honoured; longer ones are shortened to this, ms.
    pub max_deadline_ms: u32,
    /// How often subscriptions are checked for changes, ms.
    pub tick_interval_ms: u64,
    /// Commands accepted but not yet finished; more are refused `BUSY`.
    pub max_pending_commands: usize,
    /// Open subscriptions across all peers; more are refused `BUSY`.
    pub max_subscriptions: usize,
    /// Open subscriptions of one session; more are refused `BUSY`, so one
    /// peer cannot take the whole of [`Config::max_subscriptions`] and
    /// lock the owner out (SPEC §8.1).
    pub max_subscriptions_per_session: usize,
    /// Paths in one Get or Subscribe; more is `BAD_REQUEST`.
    pub max_paths_per_request: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            default_deadline_ms: 10_000,
            max_deadline_ms: 60_000,
            tick_interval_ms: 1_000,
            max_pending_commands: 16,
            max_subscriptions: 64,
            max_subscriptions_per_session: 16,
            max_paths_per_request: 64,
        }
    }
}

/// The caller's handle for one request stream. Every response to a request,
/// including later command statuses and subscription updates, goes back on
/// the stream the request came in on. Must be unique among open streams of
/// all sessions; a subscription is identified by its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId(pub u64);

/// Which session a request came on: the per-session subscription cap
/// counts by it. Unique among the host's live sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct SessionId(pub u64);

/// Whose account a peer belongs to (SPEC §8.2, §17.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Requester {
    /// A device of the owner's account: its role decides.
    Member,
    /// A co-user admitted by a share grant (R16): its own requester class,
    /// whatever role its certificate names. It reads the car's state only;
    /// the position (`Personal` signals) needs the grant's
    /// `VEHICLE_LOCATION`, and only at the moment, never by subscription
    /// (R21, R32).
    CoUser {
        /// The grant allows `VEHICLE_LOCATION`.
        location: bool,
    },
}

/// What the session layer proved about the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerInfo {
    /// The role in the peer's verified device certificate.
    pub role: Role,
    /// A member, or a co-user under a grant.
    pub requester: Requester,
    /// The session the request came on.
    pub session: SessionId,
    /// Whom its commands' idempotency keys belong to (SPEC §8.3).
    pub principal: Principal,
}

impl PeerInfo {
    /// A member with a verified `role`, on session 0, in the shared
    /// [`Principal::Unnamed`] (tests, one-session hosts; name the principal
    /// with [`PeerInfo::with_principal`]).
    pub fn new(role: Role) -> Self {
        Self::member(role, SessionId::default())
    }

    /// A member of the owner's account with a verified `role`.
    pub fn member(role: Role, session: SessionId) -> Self {
        Self {
            role,
            requester: Requester::Member,
            session,
            principal: Principal::Unnamed,
        }
    }

    /// A co-user under a share grant (R16); `location` if the grant allows
    /// `VEHICLE_LOCATION`.
    pub fn co_user(role: Role, session: SessionId, location: bool) -> Self {
        Self {
            role,
            requester: Requester::CoUser { location },
            session,
            principal: Principal::Unnamed,
        }
    }

    /// The same peer, its commands keyed under `principal`.
    pub fn with_principal(self, principal: Principal) -> Self {
        Self { principal, ..self }
    }
}

/// One envelope to write on a stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Transmit {
    /// The stream the request came in on.
    pub stream: StreamId,
    /// The response, echoing the request's `request_id`.
    pub envelope: Envelope,
}

/// What [`VehicleService::poll_output`] yields.
// An output is moved straight to its writer, never stored in bulk, so the
// size gap to `Timeout` costs nothing worth a box per envelope.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Write this envelope.
    Transmit(Transmit),
    /// Nothing more to send: call [`VehicleService::handle_timeout`] at this
    /// time (caller's monotonic ms), or earlier if a request arrives.
    Timeout(u64),
}

/// A refusal sent as an `Error` envelope. The message is `'static`, so it
/// cannot carry a path, key or any other identifier from the request (R2).
#[derive(Debug, Clone, Copy)]
struct Refusal {
    code: ErrorCode,
    message: &'static str,
}

const fn refuse(code: ErrorCode, message: &'static str) -> Refusal {
    Refusal { code, message }
}

const NOT_A_REQUEST: Refusal = refuse(ErrorCode::BadRequest, "the frame carries no request");
const NOT_VEHICLE: Refusal = refuse(
    ErrorCode::Unsupported,
    "the vehicle service does not handle this request",
);
const TOO_MANY_PATHS: Refusal = refuse(ErrorCode::BadRequest, "too many signals in one request");
const UNKNOWN_SIGNAL: Refusal = refuse(ErrorCode::NotFound, "a requested signal is unknown");
const MAY_NOT_READ: Refusal = refuse(
    ErrorCode::PermissionDenied,
    "this device may not read vehicle signals",
);
const MAY_NOT_READ_SIGNAL: Refusal = refuse(
    ErrorCode::PermissionDenied,
    "this device may not read a requested signal",
);
const TOO_MANY_SUBSCRIPTIONS: Refusal = refuse(ErrorCode::Busy, "too many subscriptions");
const TOO_MANY_SESSION_SUBSCRIPTIONS: Refusal =
    refuse(ErrorCode::Busy, "too many subscriptions on this session");
const NO_TRACK: Refusal = refuse(
    ErrorCode::PermissionDenied,
    "a co-user reads the position only at the moment, never by subscription",
);

#[derive(Debug)]
struct Subscription {
    request_id: u64,
    session: SessionId,
    signals: Vec<&'static Signal>,
    last_sent: Vec<Option<Value>>,
}

/// The vehicle's side of status and control (R23): answers Get and Subscribe,
/// runs commands at most once and signs a receipt for each.
///
/// Sans-IO: no sockets, no clock, no tasks. Order of calls:
/// 1. For each request read from a stream, [`handle_request`](Self::handle_request).
/// 2. When the timer armed from the last `Timeout` fires, [`handle_timeout`](Self::handle_timeout).
/// 3. When a stream closes, [`handle_stream_closed`](Self::handle_stream_closed).
/// 4. After each `handle_*`, drain [`poll_output`](Self::poll_output) until it
///    returns [`Output::Timeout`]: write every [`Transmit`] on its stream, then
///    arm the timer.
///
/// A command answers `ACCEPTED` at once; the next `handle_timeout` runs it
/// (`IN_PROGRESS`, then the signed final status) or, if its deadline has
/// passed first, finishes it `TIMED_OUT` without touching the car.
#[derive(Debug)]
pub struct VehicleService<B, L> {
    config: Config,
    key: DeviceKey,
    backend: B,
    log: L,
    now_ms: u64,
    next_tick_ms: u64,
    last_sequence: u64,
    pending: VecDeque<PendingCommand>,
    subscriptions: BTreeMap<StreamId, Subscription>,
    transmits: VecDeque<Transmit>,
}

impl<B: VehicleBackend, L: ReceiptLog> VehicleService<B, L> {
    /// A service signing receipts with the vehicle's `key`. Reads the log's
    /// last sequence number so numbering continues across restarts.
    pub fn new(
        config: Config,
        key: DeviceKey,
        backend: B,
        log: L,
    ) -> Result<Self, ReceiptLogError> {
        let last_sequence = log.last_sequence()?;
        Ok(Self {
            config,
            key,
            backend,
            log,
            now_ms: 0,
            next_tick_ms: 0,
            last_sequence,
            pending: VecDeque::new(),
            subscriptions: BTreeMap::new(),
            transmits: VecDeque::new(),
        })
    }

    /// The key receipts verify under.
    pub fn public_key(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.key.public_key()
    }

    /// The car.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The car, mutably (for simulations and tests).
    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    /// The receipt log.
    pub fn log(&self) -> &L {
        &self.log
    }

    /// Stops the service, returning the car and the receipt log. Commands not
    /// yet run are dropped unexecuted, with no receipt.
    pub fn into_parts(self) -> (B, L) {
        (self.backend, self.log)
    }

    /// Handles one request envelope from a peer whose role the session layer
    /// has verified. Responses are queued for [`poll_output`](Self::poll_output).
    pub fn handle_request(
        &mut self,
        stream: StreamId,
        peer: PeerInfo,
        request: &Envelope,
        now_ms: u64,
    ) {
        self.advance(now_ms);
        if let Err(refusal) = self.dispatch(stream, peer, request) {
            self.send_error(stream, request.request_id, refusal);
        }
    }

    /// Runs accepted commands and sends subscription updates that are due.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        self.advance(now_ms);
        let ran_commands = !self.pending.is_empty();
        let batch: Vec<_> = self.pending.drain(..).collect();
        if !batch.is_empty() {
            self.run_batch(batch);
        }
        let tick_due = self.now_ms >= self.next_tick_ms;
        if tick_due {
            self.next_tick_ms = self.now_ms.saturating_add(self.config.tick_interval_ms);
        }
        // After a command, send at once: the phone shows "locked" now, not
        // at the next tick.
        if tick_due || ran_commands {
            self.send_updates();
        }
    }

    /// The stream closed: ends its subscription and stops sending it command
    /// statuses. Commands it sent still run; a retry with the same
    /// idempotency key on a new stream gets their receipt.
    pub fn handle_stream_closed(&mut self, stream: StreamId) {
        self.unsubscribe(stream);
        self.detach_waiters(stream);
        self.transmits.retain(|t| t.stream != stream);
    }

    /// Ends the subscription opened on `stream`; `false` if there was none.
    pub fn unsubscribe(&mut self, stream: StreamId) -> bool {
        self.subscriptions.remove(&stream).is_some()
    }

    /// Number of open subscriptions.
    pub fn subscription_count(&self) -> usize {
        self.subscriptions.len()
    }

    /// The next envelope to send, or when to call `handle_timeout` next.
    #[must_use]
    pub fn poll_output(&mut self) -> Output {
        if let Some(transmit) = self.transmits.pop_front() {
            return Output::Transmit(transmit);
        }
        Output::Timeout(if self.pending.is_empty() {
            self.next_tick_ms
        } else {
            self.now_ms
        })
    }

    fn advance(&mut self, now_ms: u64) {
        // Monotonic even if a caller's clock is not.
        self.now_ms = self.now_ms.max(now_ms);
        self.backend.tick(self.now_ms);
    }

    fn dispatch(
        &mut self,
        stream: StreamId,
        peer: PeerInfo,
        request: &Envelope,
    ) -> Result<(), Refusal> {
        let Some(envelope::Body::Request(Request { kind: Some(kind) })) = &request.body else {
            return Err(NOT_A_REQUEST);
        };
        let request_id = request.request_id;
        match kind {
            request::Kind::Ping(ping) => {
                let pong = Pong {
                    payload: ping.payload.clone(),
                };
                self.respond(stream, request_id, response::Kind::Pong(pong));
            }
            request::Kind::GetSignals(get) => {
                let signals = self.resolve(peer, &get.paths)?;
                let values = signals
                    .iter()
                    .filter_map(|s| self.sample(s, self.backend.read(s)))
                    .collect();
                self.respond(
                    stream,
                    request_id,
                    response::Kind::Signals(SignalValues { values }),
                );
            }
            request::Kind::Subscribe(subscribe) => {
                self.subscribe(stream, peer, request_id, &subscribe.paths)?;
            }
            request::Kind::Command(command) => {
                self.accept_command(stream, peer, request, command)?;
            }
            // Other services' requests (share grants, devices, OTA) are the
            // host's to route; one that reaches here is not supported.
            _ => return Err(NOT_VEHICLE),
        }
        Ok(())
    }

    /// The catalogue entries a request names, after the R23 read check.
    /// Empty means every signal the role may read and the car has.
    fn resolve(&self, peer: PeerInfo, paths: &[String]) -> Result<Vec<&'static Signal>, Refusal> {
        if !may_read_any(peer.role) {
            return Err(MAY_NOT_READ);
        }
        if paths.len() > self.config.max_paths_per_request {
            return Err(TOO_MANY_PATHS);
        }
        if paths.is_empty() {
            return Ok(CATALOGUE
                .iter()
                .filter(|s| peer_may_read(&peer, s) && self.backend.read(s).is_some())
                .collect());
        }
        let mut signals: Vec<&'static Signal> = Vec::with_capacity(paths.len());
        for path in paths {
            let signal = lookup(path).ok_or(UNKNOWN_SIGNAL)?;
            if !peer_may_read(&peer, signal) {
                return Err(MAY_NOT_READ_SIGNAL);
            }
            if self.backend.read(signal).is_none() {
                return Err(UNKNOWN_SIGNAL);
            }
            if !signals.contains(&signal) {
                signals.push(signal);
            }
        }
        Ok(signals)
    }

    fn sample(&self, signal: &Signal, value: Option<Value>) -> Option<SignalValue> {
        Some(SignalValue {
            path: signal.path.to_owned(),
            value: Some(value?),
            sampled_at_ms: self.now_ms,
        })
    }

    fn subscribe(
        &mut self,
        stream: StreamId,
        peer: PeerInfo,
        request_id: u64,
        paths: &[String],
    ) -> Result<(), Refusal> {
        let mut signals = self.resolve(peer, paths)?;
        if let Requester::CoUser { .. } = peer.requester {
            // R32: a co-user's positions are never joined into a track.
            if !paths.is_empty()
                && signals
                    .iter()
                    .any(|s| s.sensitivity == Sensitivity::Personal)
            {
                return Err(NO_TRACK);
            }
            signals.retain(|s| s.sensitivity != Sensitivity::Personal);
        }
        if !self.subscriptions.contains_key(&stream) {
            if self.subscriptions.len() >= self.config.max_subscriptions {
                return Err(TOO_MANY_SUBSCRIPTIONS);
            }
            let mine = self
                .subscriptions
                .values()
                .filter(|s| s.session == peer.session)
                .count();
            if mine >= self.config.max_subscriptions_per_session {
                return Err(TOO_MANY_SESSION_SUBSCRIPTIONS);
            }
        }
        let last_sent: Vec<Option<Value>> = signals.iter().map(|s| self.backend.read(s)).collect();
        let values = signals
            .iter()
            .zip(&last_sent)
            .filter_map(|(s, v)| self.sample(s, v.clone()))
            .collect();
        // The first answer is the current state; updates carry changes only.
        self.respond(
            stream,
            request_id,
            response::Kind::Signals(SignalValues { values }),
        );
        self.subscriptions.insert(
            stream,
            Subscription {
                request_id,
                session: peer.session,
                signals,
                last_sent,
            },
        );
        Ok(())
    }

    fn send_updates(&mut self) {
        let now_ms = self.now_ms;
        for (stream, subscription) in &mut self.subscriptions {
            let mut values = Vec::new();
            for (signal, last) in subscription
                .signals
                .iter()
                .zip(subscription.last_sent.iter_mut())
            {
                let current = self.backend.read(signal);
                if current != *last {
                    if let Some(value) = current.clone() {
                        values.push(SignalValue {
                            path: signal.path.to_owned(),
                            value: Some(value),
                            sampled_at_ms: now_ms,
                        });
                    }
                    *last = current;
                }
            }
            if !values.is_empty() {
                self.transmits.push_back(Transmit {
                    stream: *stream,
                    envelope: response_envelope(
                        subscription.request_id,
                        response::Kind::Update(SignalValues { values }),
                    ),
                });
            }
        }
    }

    fn respond(&mut self, stream: StreamId, request_id: u64, kind: response::Kind) {
        self.transmits.push_back(Transmit {
            stream,
            envelope: response_envelope(request_id, kind),
        });
    }

    fn send_error(&mut self, stream: StreamId, request_id: u64, refusal: Refusal) {
        let envelope = Envelope {
            request_id,
            body: Some(envelope::Body::Error(Error {
                code: refusal.code as i32,
                message: refusal.message.to_owned(),
            })),
            ..Default::default()
        };
        self.transmits.push_back(Transmit { stream, envelope });
    }
}

fn response_envelope(request_id: u64, kind: response::Kind) -> Envelope {
    Envelope {
        request_id,
        body: Some(envelope::Body::Response(Response { kind: Some(kind) })),
        ..Default::default()
    }
}
