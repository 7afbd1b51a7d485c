//! The responder: accepts QUIC connections, runs the handshake core with a
//! deadline and a cap on unauthenticated connections, then serves request
//! streams.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prost::Message;
use prost::bytes::Bytes;
use tether_identity::Credentials;
use tether_proto::v1::{Envelope, ErrorCode};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::debug;

use super::stream::{
    AbortOnDrop, FrameReader, decode_envelope, error_envelope, flush_handshake, write_frame,
};
use super::{Bind, CloseCode, SessionConfig, SessionError, exporter, random_nonce, tls, unix_now};
use crate::frame::{FrameError, FrameSplitter, Piece};
use crate::handshake::{
    ANSWER_ENTROPY_LEN, Grantees, HINTS, Hint, MAX_HANDSHAKE_MESSAGE_BYTES, PeerIdentity, Proven,
    ServerHandshake, TicketKey, may_travel_early, sign_server_binding,
};

/// How long a responder waits for the end of a request stream after the
/// request frame before it stops reading.
const END_OF_REQUEST_GRACE: std::time::Duration = std::time::Duration::from_millis(20);

/// Counters of a listener, for tests, the demo and the benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListenerStats {
    /// Sessions that completed the handshake.
    pub authenticated: u64,
    /// Handshakes refused (not a member, bad certificate, bad proof...).
    pub refused: u64,
    /// Connections dropped because they did not finish in time.
    pub timed_out: u64,
    /// Unauthenticated connections dropped to admit newer ones.
    pub evicted: u64,
    /// Connections not even admitted (every slot held by proven members).
    pub rejected_busy: u64,
    /// Connections the peer closed, or that the transport lost, before the
    /// handshake finished (a client that gave up is not a refusal).
    pub abandoned: u64,
    /// Connections currently in the handshake.
    pub unauthenticated_now: u64,
}

#[derive(Default)]
struct Counters {
    authenticated: AtomicU64,
    refused: AtomicU64,
    timed_out: AtomicU64,
    evicted: AtomicU64,
    rejected_busy: AtomicU64,
    abandoned: AtomicU64,
}

struct PendingEntry {
    id: u64,
    /// What its `ClientHello` proved. A member is never evicted by a flood;
    /// a co-user admitted by a grant is evicted only when no stranger is
    /// left to evict, so half-open grant handshakes cannot hold the slots
    /// against the owner (R16, R31; SPEC §5.7).
    proven: Proven,
    abort: tokio::task::AbortHandle,
    /// Set once QUIC's own handshake is done, so an eviction can say why.
    conn: Option<quinn::Connection>,
}

/// Unauthenticated connections, oldest first (CVE-2020-26164 defence).
struct Pending {
    entries: Mutex<VecDeque<PendingEntry>>,
    cap: usize,
}

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<PendingEntry>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn remove(&self, id: u64) {
        self.lock().retain(|e| e.id != id);
    }

    fn set_connection(&self, id: u64, conn: &quinn::Connection) {
        if let Some(e) = self.lock().iter_mut().find(|e| e.id == id) {
            e.conn = Some(conn.clone());
        }
    }

    fn set_proven(&self, id: u64, proven: Proven) {
        if let Some(e) = self.lock().iter_mut().find(|e| e.id == id) {
            e.proven = proven;
        }
    }

    /// Which entry a newcomer evicts when every slot is taken: the oldest
    /// that proved nothing, else the oldest admitted by a grant, never a
    /// member.
    fn victim(entries: &VecDeque<PendingEntry>) -> Option<usize> {
        entries
            .iter()
            .position(|e| e.proven == Proven::Nothing)
            .or_else(|| entries.iter().position(|e| e.proven == Proven::Grantee))
    }
}

struct Context {
    credentials: Arc<Credentials>,
    tickets: Arc<TicketKey>,
    grantees: Arc<Grantees>,
    /// Set when this listener is a bound smart device (SPEC §12.6).
    device_key: Option<[u8; 32]>,
    config: SessionConfig,
    /// The transport of a connection until it authenticates (R31).
    transport: Arc<quinn::TransportConfig>,
    pending: Pending,
    counters: Counters,
    recent_hints: RecentHints,
}

/// The hints recognised lately (SPEC §5.7): a replay of one is answered
/// like a stranger's, so a replayed member hint proves nothing and holds
/// no slot a member's would. Bounded; the oldest is forgotten first.
struct RecentHints(Mutex<(HashSet<Hint>, VecDeque<Hint>)>);

/// How many recognised hints a listener remembers.
const RECENT_HINTS: usize = 4096;

impl RecentHints {
    fn new() -> Self {
        Self(Mutex::new((HashSet::new(), VecDeque::new())))
    }

    /// `hints` with every one seen before replaced by zeros (no key makes
    /// those).
    fn filter(&self, mut hints: [Hint; HINTS]) -> [Hint; HINTS] {
        let seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for hint in &mut hints {
            if seen.0.contains(hint) {
                *hint = [0; crate::handshake::HINT_LEN];
            }
        }
        hints
    }

    fn insert(&self, hint: Hint) {
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if seen.0.insert(hint) {
            seen.1.push_back(hint);
            if seen.1.len() > RECENT_HINTS
                && let Some(old) = seen.1.pop_front()
            {
                seen.0.remove(&old);
            }
        }
    }
}

/// A bound responder endpoint. Authenticated sessions come out of
/// [`Listener::accept`]; everything before that happens in background tasks.
pub struct Listener {
    endpoint: quinn::Endpoint,
    /// Every endpoint the listener accepts on: the one it was bound with,
    /// then each [`Listener::attach_socket`] (SPEC §19.11).
    endpoints: Endpoints,
    sessions: mpsc::Receiver<ServerSession>,
    /// Hands new sessions to `sessions`; weak, so `accept` still ends once
    /// every endpoint is closed.
    sender: mpsc::WeakSender<ServerSession>,
    context: Arc<Context>,
    /// The accept loops of every endpoint; they end with the listener.
    accept_loops: Arc<std::sync::Mutex<Vec<AbortOnDrop>>>,
}

/// One endpoint's TLS certificate and configuration, replaced at each
/// rotation.
type SharedTls = Arc<std::sync::RwLock<tls::ServerTls>>;

/// The endpoints of one listener, shared with its closer and rotator.
type Endpoints = Arc<std::sync::Mutex<Vec<(quinn::Endpoint, SharedTls)>>>;

fn endpoints_of(endpoints: &Endpoints) -> Vec<(quinn::Endpoint, SharedTls)> {
    endpoints
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

/// A new endpoint over `bind` with a fresh certificate.
fn tls_endpoint(
    bind: Bind,
    config: &SessionConfig,
) -> Result<(quinn::Endpoint, SharedTls), SessionError> {
    let server_tls = tls::ServerTls::generate()?;
    let server_config = server_tls.quinn_config(&Arc::new(config.server_transport()))?;
    let endpoint = super::endpoint_on(bind, Some(server_config), config)?;
    Ok((endpoint, Arc::new(std::sync::RwLock::new(server_tls))))
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener").finish_non_exhaustive()
    }
}

impl Listener {
    /// Binds a UDP socket at `addr` and starts accepting. Must be called
    /// inside a tokio runtime.
    pub fn bind(
        addr: SocketAddr,
        credentials: Arc<Credentials>,
        config: SessionConfig,
    ) -> Result<Self, SessionError> {
        Self::bind_as(Bind::Udp(addr), credentials, config, None)
    }

    /// Starts accepting over a socket the caller made instead of UDP: the
    /// relay transport's (SPEC §19), or any `quinn::AsyncUdpSocket`. The
    /// same handshake, defences and sessions as [`Listener::bind`]. Must be
    /// called inside a tokio runtime.
    pub fn bind_socket(
        socket: Arc<dyn quinn::AsyncUdpSocket>,
        credentials: Arc<Credentials>,
        config: SessionConfig,
    ) -> Result<Self, SessionError> {
        Self::bind_as(Bind::Socket(socket), credentials, config, None)
    }

    /// Binds the listener of a bound smart device (SPEC §12.6): members
    /// prove `device_key` (from the device secret) instead of the membership
    /// key, since the device holds no group key.
    pub fn bind_device(
        addr: SocketAddr,
        credentials: Arc<Credentials>,
        device_key: [u8; 32],
        config: SessionConfig,
    ) -> Result<Self, SessionError> {
        Self::bind_as(Bind::Udp(addr), credentials, config, Some(device_key))
    }

    fn bind_as(
        bind: Bind,
        credentials: Arc<Credentials>,
        config: SessionConfig,
        device_key: Option<[u8; 32]>,
    ) -> Result<Self, SessionError> {
        let (endpoint, server_tls) = tls_endpoint(bind, &config)?;
        let ticket_key = random_nonce()?;
        let context = Arc::new(Context {
            credentials,
            tickets: Arc::new(TicketKey::new(ticket_key)),
            grantees: Arc::default(),
            device_key,
            pending: Pending {
                entries: Mutex::new(VecDeque::new()),
                cap: config.max_unauthenticated.max(1),
            },
            transport: Arc::new(config.server_transport()),
            config,
            counters: Counters::default(),
            recent_hints: RecentHints::new(),
        });
        let (tx, sessions) = mpsc::channel(16);
        let sender = tx.downgrade();
        let task = tokio::spawn(accept_loop(
            endpoint.clone(),
            server_tls.clone(),
            context.clone(),
            tx,
        ));
        Ok(Self {
            endpoints: Arc::new(std::sync::Mutex::new(vec![(endpoint.clone(), server_tls)])),
            endpoint,
            sessions,
            sender,
            context,
            accept_loops: Arc::new(std::sync::Mutex::new(vec![AbortOnDrop(
                task.abort_handle(),
            )])),
        })
    }

    /// Also accepts over `socket` (the relay transport's, SPEC §19.11):
    /// one more QUIC endpoint with the same credentials, share grants,
    /// ticket key and half-open cap as the first, whose sessions come out
    /// of the same [`Listener::accept`]. It gets its own ephemeral TLS
    /// certificate, so a peer that completes QUIC on both paths cannot link
    /// them by it (R2); [`ListenerCloser`] and [`CertificateRotator`] cover
    /// it too. Fails once the listener is closed.
    pub fn attach_socket(
        &mut self,
        socket: Arc<dyn quinn::AsyncUdpSocket>,
    ) -> Result<(), SessionError> {
        self.attacher().attach(socket)
    }

    /// A handle that attaches sockets ([`Listener::attach_socket`]) while
    /// the listener is elsewhere (moved into its accept task). The
    /// endpoints it adds end with the listener.
    pub fn attacher(&self) -> SocketAttacher {
        SocketAttacher {
            sender: self.sender.clone(),
            context: Arc::downgrade(&self.context),
            endpoints: self.endpoints.clone(),
            accept_loops: Arc::downgrade(&self.accept_loops),
        }
    }

    /// The share grants this listener admits besides its own account
    /// (SPEC §17.3). Add and remove entries at any time; a removed grant
    /// admits no new handshake and resumes no ticket. Closing the sessions
    /// already admitted under it is the host's job ([`ServerSession::close`]
    /// with [`CloseCode::Revoked`]).
    pub fn grantees(&self) -> Arc<Grantees> {
        self.context.grantees.clone()
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr, SessionError> {
        Ok(self.endpoint.local_addr()?)
    }

    /// The next authenticated session; `None` once the listener is closed.
    pub async fn accept(&mut self) -> Option<ServerSession> {
        self.sessions.recv().await
    }

    /// Current counters.
    pub fn stats(&self) -> ListenerStats {
        self.stats_handle().get()
    }

    /// A handle that reads the counters while the listener is elsewhere.
    pub fn stats_handle(&self) -> StatsHandle {
        StatsHandle(self.context.clone())
    }

    /// A handle that closes the listener from elsewhere.
    pub fn closer(&self) -> ListenerCloser {
        ListenerCloser(self.endpoints.clone())
    }

    /// A handle that replaces the TLS certificate from elsewhere (on each
    /// token rotation, R2; SPEC §4.5).
    pub fn certificate_rotator(&self) -> CertificateRotator {
        CertificateRotator {
            endpoints: self.endpoints.clone(),
            config: self.context.config.clone(),
        }
    }

    /// Replaces the TLS certificate and its key with fresh ephemeral ones
    /// ([`CertificateRotator::rotate`]).
    pub fn rotate_certificate(&self) -> Result<(), SessionError> {
        self.certificate_rotator().rotate()
    }

    /// Closes every connection with [`CloseCode::Shutdown`], on every
    /// endpoint.
    pub fn close(&self) {
        self.closer().close();
    }
}

/// Attaches another socket to a listener from elsewhere
/// ([`Listener::attacher`]).
#[derive(Clone)]
pub struct SocketAttacher {
    sender: mpsc::WeakSender<ServerSession>,
    context: std::sync::Weak<Context>,
    endpoints: Endpoints,
    accept_loops: std::sync::Weak<std::sync::Mutex<Vec<AbortOnDrop>>>,
}

impl std::fmt::Debug for SocketAttacher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketAttacher").finish_non_exhaustive()
    }
}

impl SocketAttacher {
    /// As [`Listener::attach_socket`]; fails once the listener is gone.
    pub fn attach(&self, socket: Arc<dyn quinn::AsyncUdpSocket>) -> Result<(), SessionError> {
        let gone = || SessionError::Closed {
            code: Some(CloseCode::Shutdown),
            reason: "listener closed".into(),
        };
        let tx = self.sender.upgrade().ok_or_else(gone)?;
        let context = self.context.upgrade().ok_or_else(gone)?;
        let loops = self.accept_loops.upgrade().ok_or_else(gone)?;
        let (endpoint, server_tls) = tls_endpoint(super::Bind::Socket(socket), &context.config)?;
        let task = tokio::spawn(accept_loop(
            endpoint.clone(),
            server_tls.clone(),
            context,
            tx,
        ));
        loops
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(AbortOnDrop(task.abort_handle()));
        self.endpoints
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((endpoint, server_tls));
        Ok(())
    }
}

/// Closes a listener's endpoint: every connection gets
/// [`CloseCode::Shutdown`].
#[derive(Clone)]
pub struct ListenerCloser(Endpoints);

impl std::fmt::Debug for ListenerCloser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerCloser").finish_non_exhaustive()
    }
}

impl ListenerCloser {
    /// Closes every connection and stops accepting, on every endpoint.
    pub fn close(&self) {
        for (endpoint, _) in endpoints_of(&self.0) {
            endpoint.close((CloseCode::Shutdown as u32).into(), b"shutting down");
        }
    }
}

/// Replaces a listener's TLS certificate (R2; SPEC §4.5, §5.1).
#[derive(Clone)]
pub struct CertificateRotator {
    endpoints: Endpoints,
    config: SessionConfig,
}

impl std::fmt::Debug for CertificateRotator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateRotator").finish_non_exhaustive()
    }
}

impl CertificateRotator {
    /// Makes a new ephemeral key and certificate and serves every new
    /// connection with it, so a peer that completes QUIC before and after
    /// cannot link the two by the certificate. Connections already open keep
    /// theirs; resumption tickets pinned to the old certificate fall back to
    /// a full handshake (SPEC §5.5).
    pub fn rotate(&self) -> Result<(), SessionError> {
        // One certificate per endpoint: the LAN and the relay path stay
        // unlinkable by it (R2).
        for (endpoint, server_tls) in endpoints_of(&self.endpoints) {
            let fresh = tls::ServerTls::generate()?;
            endpoint.set_server_config(Some(
                fresh.quinn_config(&Arc::new(self.config.server_transport()))?,
            ));
            *server_tls
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
        }
        Ok(())
    }
}

/// Reads a listener's counters; cheap to clone.
#[derive(Clone)]
pub struct StatsHandle(Arc<Context>);

impl std::fmt::Debug for StatsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("StatsHandle").field(&self.get()).finish()
    }
}

impl StatsHandle {
    /// Current counters.
    pub fn get(&self) -> ListenerStats {
        let context = &self.0;
        let c = &context.counters;
        ListenerStats {
            authenticated: c.authenticated.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            timed_out: c.timed_out.load(Ordering::Relaxed),
            evicted: c.evicted.load(Ordering::Relaxed),
            rejected_busy: c.rejected_busy.load(Ordering::Relaxed),
            abandoned: c.abandoned.load(Ordering::Relaxed),
            unauthenticated_now: context.pending.lock().len() as u64,
        }
    }
}

async fn accept_loop(
    endpoint: quinn::Endpoint,
    server_tls: SharedTls,
    context: Arc<Context>,
    tx: mpsc::Sender<ServerSession>,
) {
    let mut next_id = 0u64;
    while let Some(incoming) = endpoint.accept().await {
        next_id += 1;
        let id = next_id;
        let mut entries = context.pending.lock();
        if entries.len() >= context.pending.cap {
            // Evict the oldest connection that has not proven membership. A
            // non-member never proves it, so a flood only evicts itself; a
            // co-user's half-open handshakes go before any member's.
            match Pending::victim(&entries) {
                Some(pos) => {
                    if let Some(old) = entries.remove(pos) {
                        if let Some(conn) = &old.conn {
                            conn.close((CloseCode::Evicted as u32).into(), b"busy");
                        }
                        old.abort.abort();
                        context.counters.evicted.fetch_add(1, Ordering::Relaxed);
                    }
                }
                None => {
                    drop(entries);
                    context
                        .counters
                        .rejected_busy
                        .fetch_add(1, Ordering::Relaxed);
                    incoming.refuse();
                    continue;
                }
            }
        }
        let task = tokio::spawn(handshake_task(
            id,
            incoming,
            server_tls.clone(),
            context.clone(),
            tx.clone(),
        ));
        entries.push_back(PendingEntry {
            id,
            proven: Proven::Nothing,
            abort: task.abort_handle(),
            conn: None,
        });
    }
}

async fn handshake_task(
    id: u64,
    incoming: quinn::Incoming,
    server_tls: SharedTls,
    context: Arc<Context>,
    tx: mpsc::Sender<ServerSession>,
) {
    let deadline = Instant::now() + context.config.handshake_timeout;
    let result = async {
        let (slot, server_config, pin, binding) = {
            let server_tls = server_tls
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let (slot, config) = server_tls.for_connection(&context.transport)?;
            (slot, config, server_tls.pin, server_tls.binding.clone())
        };
        let mut connecting = incoming
            .accept_with(server_config)
            .map_err(SessionError::from_connection)?;
        // quinn reads the first Initial inside `accept_with`, so the hints
        // are usually in the slot already: answering at once lets the
        // sealed ServerAuth leave right behind the TLS flight. A
        // ClientHello split over several Initials is waited for.
        let hints = match slot.take() {
            Some(hints) => Some(hints),
            None => {
                tokio::time::timeout_at(deadline, connecting.handshake_data())
                    .await
                    .map_err(|_| SessionError::HandshakeTimeout)?
                    .map_err(SessionError::from_connection)?;
                slot.take()
            }
        };
        let hints = context
            .recent_hints
            .filter(hints.unwrap_or([[0; crate::handshake::HINT_LEN]; HINTS]));
        let mut core = ServerHandshake::new(
            context.credentials.clone(),
            context.tickets.clone(),
            random_nonce()?,
            &context.config.handshake,
        )
        .with_grantees(context.grantees.clone())
        .with_binding(
            binding
                .get_or_init(|| {
                    sign_server_binding(
                        &context.credentials,
                        &pin,
                        context.config.handshake.max_version,
                    )
                })
                .clone(),
        );
        if let Some(device_key) = context.device_key {
            core = core.as_device(device_key);
        }
        let mut entropy = [0; ANSWER_ENTROPY_LEN];
        super::fill_random(&mut entropy)?;
        let sealed = core.answer_hints(&hints, &pin, &entropy, unix_now())?;
        if let Some(hint) = core.matched_hint() {
            context.recent_hints.insert(*hint);
            slot.admit();
        }
        context.pending.set_proven(id, core.proven());
        // SPEC §5.2: the sealed ServerAuth goes out as 0.5-RTT data, with
        // this side's TLS flight; it is readable only by whoever holds the
        // key the hint was made with (R3).
        let Ok((conn, connected)) = connecting.into_0rtt() else {
            return Err(SessionError::InvalidMessage("no 0.5-RTT on a server"));
        };
        context.pending.set_connection(id, &conn);
        let mut uni = conn
            .open_uni()
            .await
            .map_err(SessionError::from_connection)?;
        write_frame(&mut uni, &sealed, MAX_HANDSHAKE_MESSAGE_BYTES).await?;
        let _ = uni.finish();
        let (auth_tx, auth_rx) = watch::channel(AuthState::Pending);
        let (answering, mut answered) = mpsc::channel::<()>(1);
        let authenticated = tokio::time::timeout_at(
            deadline,
            authenticate(
                id,
                &conn,
                connected,
                &context,
                core,
                auth_tx.clone(),
                auth_rx,
                answering,
            ),
        )
        .await;
        let (code, reason, error) = match authenticated {
            Ok(Ok(session)) => return Ok(session),
            // Every failure closes with the same bare code (a no-op if
            // already closed): a non-member learns nothing more.
            Ok(Err(e)) => (CloseCode::Refused, &b"refused"[..], e),
            Err(_) => (
                CloseCode::HandshakeTimeout,
                &b"handshake timeout"[..],
                SessionError::HandshakeTimeout,
            ),
        };
        // SPEC §5.7: each held request gets its UNAUTHENTICATED before the
        // close, after a refusal as after the deadline. Every task holding
        // a request keeps a clone of `answering` until the peer has
        // acknowledged its answer; the acceptor's went with `authenticate`.
        // Meanwhile the peer gets no new credit: no stream, and no byte
        // for what answered streams free (R31).
        conn.set_max_concurrent_bi_streams(0u32.into());
        conn.set_receive_window(0u32.into());
        let _ = auth_tx.send(AuthState::Failed);
        let _ = tokio::time::timeout(FAILURE_ANSWER_GRACE, answered.recv()).await;
        conn.close((code as u32).into(), reason);
        Err(error)
    }
    .await;
    context.pending.remove(id);
    match result {
        Ok(session) => {
            context
                .counters
                .authenticated
                .fetch_add(1, Ordering::Relaxed);
            let _ = tx.send(session).await;
        }
        Err(SessionError::HandshakeTimeout) => {
            context.counters.timed_out.fetch_add(1, Ordering::Relaxed);
        }
        Err(e @ (SessionError::Closed { .. } | SessionError::Connection(_))) => {
            debug!(error = %e, "handshake abandoned by the peer");
            context.counters.abandoned.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            debug!(error = %e, "handshake failed");
            context.counters.refused.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Whether request streams may be served yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AuthState {
    Pending,
    Authenticated,
    Failed,
}

/// How long a failed handshake's connection stays open for its held
/// requests' `UNAUTHENTICATED` answers (and its `Refuse`) to be acknowledged.
const FAILURE_ANSWER_GRACE: std::time::Duration = std::time::Duration::from_millis(250);

/// Runs the handshake on stream 0 while `accept_streams` holds the request
/// streams. `auth_tx` tells those whether to serve; `answering` is cloned
/// into each request task (see `handshake_task`).
#[allow(clippy::too_many_arguments)]
async fn authenticate(
    id: u64,
    conn: &quinn::Connection,
    connected: quinn::ZeroRttAccepted,
    context: &Context,
    mut core: ServerHandshake,
    auth_tx: watch::Sender<AuthState>,
    auth_rx: watch::Receiver<AuthState>,
    answering: mpsc::Sender<()>,
) -> Result<ServerSession, SessionError> {
    let (mut send, recv) = conn
        .accept_bi()
        .await
        .map_err(SessionError::from_connection)?;
    let (req_tx, requests) = mpsc::channel(context.config.request_queue.max(1));
    let acceptor = tokio::spawn(accept_streams(
        conn.clone(),
        auth_rx,
        req_tx,
        context.config.max_frame_bytes,
        answering,
    ));
    let acceptor = AbortOnDrop(acceptor.abort_handle());
    let mut reader = FrameReader::new(recv, MAX_HANDSHAKE_MESSAGE_BYTES);
    let mut connected = Some(connected);
    loop {
        let frame = match reader.next().await {
            Ok(Some(frame)) => frame,
            Ok(None) => return Err(SessionError::InvalidMessage("handshake stream ended")),
            Err(SessionError::Frame(e @ FrameError::TooLarge { .. })) => {
                conn.close(
                    (CloseCode::ProtocolViolation as u32).into(),
                    b"handshake message too large",
                );
                return Err(e.into());
            }
            Err(e) => return Err(e),
        };
        // SPEC §5.8: a first frame in 0-RTT early data can only be an
        // early ResumeHello; the session is authenticated before the TLS
        // handshake completes, and the Accept waits for the exporter. An
        // early ResumeHello whose 0-RTT packets were lost comes again in
        // 1-RTT packets (its stream then does not count as early): the same.
        let early = connected.is_some() && (reader.is_0rtt() || is_early_hello(&frame));
        let result = match (early, connected.take()) {
            (true, Some(connected)) => {
                let result = core.handle_early_message(&frame, unix_now());
                if result.is_ok() {
                    let peer = flush_handshake(|| core.poll_output(), &mut send).await?;
                    if let Some(peer) = peer {
                        let handshake = conn.clone();
                        tokio::spawn(async move {
                            connected.await;
                            if handshake.close_reason().is_some() {
                                return;
                            }
                            if let Ok(exporter) = exporter(&handshake) {
                                core.set_exporter(exporter);
                                let _ = flush_handshake(|| core.poll_output(), &mut send).await;
                            }
                            let _ = send.finish();
                        });
                        return Ok(admitted(conn, context, peer, requests, acceptor, auth_tx));
                    }
                }
                result
            }
            (_, pending) => {
                if let Some(connected) = pending {
                    // 1-RTT data arrives only once the handshake is
                    // complete; this returns at once.
                    connected.await;
                    if let Some(reason) = conn.close_reason() {
                        return Err(SessionError::from_connection(reason));
                    }
                    core.set_exporter(exporter(conn)?);
                }
                core.handle_message(&frame, unix_now())
            }
        };
        let peer = flush_handshake(|| core.poll_output(), &mut send).await?;
        if let Err(e) = result {
            let _ = auth_tx.send(AuthState::Failed);
            let _ = send.finish();
            // Let the Refuse reach the peer before `handshake_task` closes.
            let _ = tokio::time::timeout(FAILURE_ANSWER_GRACE, send.stopped()).await;
            return Err(e.into());
        }
        context.pending.set_proven(id, core.proven());
        if let Some(peer) = peer {
            let _ = send.finish();
            return Ok(admitted(conn, context, peer, requests, acceptor, auth_tx));
        }
    }
}

/// The session of an authenticated peer: its limits lifted (R31) and its
/// held requests released.
fn admitted(
    conn: &quinn::Connection,
    context: &Context,
    peer: PeerIdentity,
    requests: mpsc::Receiver<IncomingRequest>,
    acceptor: AbortOnDrop,
    auth_tx: watch::Sender<AuthState>,
) -> ServerSession {
    widen_after_authentication(conn, &context.config);
    let _ = auth_tx.send(AuthState::Authenticated);
    ServerSession {
        conn: conn.clone(),
        peer,
        requests,
        max_frame_bytes: context.config.max_frame_bytes,
        _acceptor: acceptor,
        _auth: auth_tx,
    }
}

/// Whether `frame` is an early `ResumeHello` (SPEC §5.8).
fn is_early_hello(frame: &[u8]) -> bool {
    matches!(
        crate::handshake::decode_message(frame),
        Ok(tether_proto::v1::handshake_message::Message::ResumeHello(hello)) if hello.early
    )
}

/// Lifts the limits an unauthenticated connection runs under
/// (`SessionConfig::server_transport`, R31): the session's stream count and
/// quinn's default connection receive window (unlimited; each stream keeps
/// its own window).
pub(super) fn widen_after_authentication(conn: &quinn::Connection, config: &SessionConfig) {
    conn.set_max_concurrent_bi_streams(config.max_concurrent_streams.into());
    conn.set_receive_window(quinn::VarInt::MAX);
}

/// Accepts request streams for the connection's lifetime. Requests read
/// before authentication wait; they are served only once it succeeds.
///
/// On an authenticated session, a request whose frame is already whole when
/// its stream is accepted (the usual case: a small request sent with its
/// end of stream) goes to the application straight from this task. Every
/// other request gets a task of its own that waits for its bytes. A task per
/// request would cost one more wake-up on every round trip (BENCHMARKS.md).
async fn accept_streams(
    conn: quinn::Connection,
    auth: watch::Receiver<AuthState>,
    requests: mpsc::Sender<IncomingRequest>,
    limit: usize,
    answering: mpsc::Sender<()>,
) {
    while let Ok((send, recv)) = conn.accept_bi().await {
        let mut reader = FrameReader::new(recv, limit);
        // An early stream (SPEC §5.8) takes the slow path, which checks
        // that it carries a read.
        let early = reader.is_0rtt();
        let first = if *auth.borrow() == AuthState::Authenticated && !early {
            poll_once(reader.next())
        } else {
            None
        };
        let first = match first {
            Some(Ok(Some(frame))) => match decode_envelope(&frame) {
                Ok(envelope) => {
                    let (request, tail) = incoming_request(envelope, send, reader, limit);
                    match requests.try_send(request) {
                        Ok(()) => {
                            if let Some(tail) = tail {
                                end_of_request_now(tail);
                            }
                        }
                        Err(mpsc::error::TrySendError::Full(request)) => {
                            // The application is behind: this request waits
                            // in its own task, as a slow one would.
                            let requests = requests.clone();
                            tokio::spawn(async move {
                                if requests.send(request).await.is_ok()
                                    && let Some(tail) = tail
                                {
                                    end_of_request(tail).await;
                                }
                            });
                        }
                        // The application has let the session go: the
                        // request is dropped and its stream finished
                        // empty, as a request task would.
                        Err(mpsc::error::TrySendError::Closed(_)) => {}
                    }
                    continue;
                }
                // The slow path answers it.
                Err(_) => Some(Ok(Some(frame))),
            },
            other => other,
        };
        // Only a request held before authentication needs the token.
        let answering = (*auth.borrow() == AuthState::Pending).then(|| answering.clone());
        tokio::spawn(read_request(
            send,
            reader,
            first,
            auth.clone(),
            requests.clone(),
            limit,
            answering,
        ));
    }
}

/// Polls a future once, without a waker to call back: its result if it is
/// ready at once. `FrameReader::next` keeps what it has read when dropped.
fn poll_once<F: std::future::Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(output) => Some(output),
        std::task::Poll::Pending => None,
    }
}

/// The request for the application, and the reader of the rest of the
/// stream unless the request has a body (SPEC §6.2: then the rest of the
/// stream is the body, read by the application in frames under the same
/// limit).
fn incoming_request(
    envelope: Envelope,
    send: quinn::SendStream,
    reader: FrameReader,
    limit: usize,
) -> (IncomingRequest, Option<FrameReader>) {
    let request_id = envelope.request_id;
    let (body, tail) = if envelope.body_follows {
        (Some(RequestBody::new(reader.into_recv(), limit)), None)
    } else {
        (None, Some(reader))
    };
    let request = IncomingRequest {
        envelope,
        responder: Responder {
            send,
            request_id,
            limit,
            body,
        },
    };
    (request, tail)
}

/// A well-behaved requester finishes its send side right after the
/// request; reading that end (after dispatch, off the latency path) avoids
/// a needless STOP_SENDING. Anything else is not read.
async fn end_of_request(mut reader: FrameReader) {
    match tokio::time::timeout(END_OF_REQUEST_GRACE, reader.next()).await {
        Ok(Ok(None)) => {}
        _ => reader.stop(),
    }
}

/// [`end_of_request`] without a task when the end has already arrived.
fn end_of_request_now(mut reader: FrameReader) {
    match poll_once(reader.next()) {
        Some(Ok(None)) => {}
        Some(_) => reader.stop(),
        None => {
            tokio::spawn(end_of_request(reader));
        }
    }
}

/// Serves one request stream in its own task: waits for the request frame
/// (unless `first` already holds it) and for authentication, answers what
/// cannot be served with a typed error, and hands the rest to the
/// application.
async fn read_request(
    mut send: quinn::SendStream,
    mut reader: FrameReader,
    first: Option<Result<Option<Vec<u8>>, SessionError>>,
    mut auth: watch::Receiver<AuthState>,
    requests: mpsc::Sender<IncomingRequest>,
    limit: usize,
    answering: Option<mpsc::Sender<()>>,
) {
    let first = match first {
        Some(first) => first,
        None => reader.next().await,
    };
    // Nothing is answered, not even an error, before authentication.
    let state = match auth.wait_for(|s| *s != AuthState::Pending).await {
        Ok(state) => *state,
        Err(_) => AuthState::Failed,
    };
    let reply = |code: ErrorCode, message: &str| error_envelope(0, code, message).encode_to_vec();
    if state != AuthState::Authenticated {
        let _ = write_frame(
            &mut send,
            &reply(ErrorCode::Unauthenticated, "not authenticated"),
            limit,
        )
        .await;
        let _ = send.finish();
        // Until the peer has acknowledged the answer: the connection is
        // closed once every held request is answered (or after a grace).
        let _ = send.stopped().await;
        drop(answering);
        return;
    }
    drop(answering);
    let envelope = match first {
        Ok(Some(frame)) => match decode_envelope(&frame) {
            Ok(envelope) => envelope,
            Err(_) => {
                let _ = write_frame(
                    &mut send,
                    &reply(ErrorCode::BadRequest, "undecodable envelope"),
                    limit,
                )
                .await;
                let _ = send.finish();
                return;
            }
        },
        Err(SessionError::Frame(FrameError::TooLarge {
            announced,
            limit: max,
        })) => {
            // The session survives; only this stream is refused.
            reader.stop();
            let message = format!("request of {announced} bytes exceeds the {max}-byte limit");
            let _ = write_frame(
                &mut send,
                &reply(ErrorCode::MessageTooLarge, &message),
                limit,
            )
            .await;
            let _ = send.finish();
            return;
        }
        Ok(None) | Err(_) => {
            let _ = send.finish();
            return;
        }
    };
    // SPEC §5.8: from early data, only an idempotent read is served; the
    // rest is refused unexecuted (a replay of early data must change
    // nothing).
    if reader.is_0rtt() && !may_travel_early(&envelope) {
        reader.stop();
        let _ = write_frame(
            &mut send,
            &error_envelope(
                envelope.request_id,
                ErrorCode::TooEarly,
                "not executed: sent as early data; send it again",
            )
            .encode_to_vec(),
            limit,
        )
        .await;
        let _ = send.finish();
        return;
    }
    let (request, tail) = incoming_request(envelope, send, reader, limit);
    if requests.send(request).await.is_ok()
        && let Some(tail) = tail
    {
        end_of_request(tail).await;
    }
}

/// Closes one session from outside the task serving it.
#[derive(Clone)]
pub struct SessionCloser(quinn::Connection);

impl std::fmt::Debug for SessionCloser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCloser").finish_non_exhaustive()
    }
}

impl SessionCloser {
    /// Closes the session with a code and a reason (no identifiers). The
    /// peer sees the close at once; its open streams fail.
    pub fn close(&self, code: CloseCode, reason: &str) {
        self.0.close((code as u32).into(), reason.as_bytes());
    }
}

/// An authenticated session on the responder's side.
pub struct ServerSession {
    conn: quinn::Connection,
    peer: PeerIdentity,
    requests: mpsc::Receiver<IncomingRequest>,
    max_frame_bytes: usize,
    _acceptor: AbortOnDrop,
    _auth: watch::Sender<AuthState>,
}

impl std::fmt::Debug for ServerSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerSession")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl ServerSession {
    /// Who is on the other end.
    pub fn peer(&self) -> &PeerIdentity {
        &self.peer
    }

    /// The frame limit in force.
    pub fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }

    /// The next request; `None` when the connection is gone.
    pub async fn next_request(&mut self) -> Option<IncomingRequest> {
        tokio::select! {
            r = self.requests.recv() => r,
            _ = self.conn.closed() => None,
        }
    }

    /// Closes the session with a code and a reason (no identifiers).
    pub fn close(&self, code: CloseCode, reason: &str) {
        self.conn.close((code as u32).into(), reason.as_bytes());
    }

    /// A handle that closes this session from elsewhere (a revocation).
    pub fn closer(&self) -> SessionCloser {
        SessionCloser(self.conn.clone())
    }

    /// Resolves when the connection closes, with why.
    pub async fn closed(&self) -> SessionError {
        SessionError::from_connection(self.conn.closed().await)
    }
}

/// One request and the stream to answer it on.
#[derive(Debug)]
pub struct IncomingRequest {
    /// The decoded request.
    pub envelope: Envelope,
    /// Where responses go. It also holds the request's body until
    /// [`IncomingRequest::take_body`] takes it.
    pub responder: Responder,
}

impl IncomingRequest {
    /// The request's body, when its envelope set `body_follows` (SPEC
    /// §6.2): the rest of the stream, as frames. `None` for a request
    /// without a body, and once taken. A body never taken is stopped
    /// (`STOP_SENDING` 0) when the responder is dropped.
    pub fn take_body(&mut self) -> Option<RequestBody> {
        self.responder.body.take()
    }
}

/// The body of a request (SPEC §6.2): the frames that follow the request
/// on its stream, each at most `max_frame_bytes`, until the requester
/// finishes its send side. Handed out only on an authenticated session.
/// Dropping it before the end stops the stream (`STOP_SENDING` 0): the
/// requester's writes then fail.
///
/// Errors of both readers: [`SessionError::Frame`] with `TooLarge` for a
/// frame over the limit (none of its payload is read, and the stream is
/// stopped), with `Truncated` for a body that ends inside a frame;
/// [`SessionError::Read`] when the requester reset the stream (it
/// abandoned the body); [`SessionError::Closed`] or
/// [`SessionError::Connection`] when the session is gone.
pub struct RequestBody {
    recv: quinn::RecvStream,
    splitter: FrameSplitter,
    /// Received bytes not yet cut into pieces.
    pending: Bytes,
}

impl std::fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestBody").finish_non_exhaustive()
    }
}

impl RequestBody {
    fn new(recv: quinn::RecvStream, limit: usize) -> Self {
        Self {
            recv,
            splitter: FrameSplitter::new(limit),
            pending: Bytes::new(),
        }
    }

    /// The next frame's payload in one buffer; `Ok(None)` at the end of
    /// the body (the requester finished its send side).
    pub async fn next(&mut self) -> Result<Option<Vec<u8>>, SessionError> {
        let mut parts = Vec::new();
        if !self.next_parts(&mut parts).await? {
            return Ok(None);
        }
        Ok(Some(parts.concat()))
    }

    /// The next frame's payload as the pieces it arrived in, appended to
    /// `parts` without a copy; `Ok(false)` at the end of the body. An
    /// empty frame adds nothing and returns `Ok(true)`. After an error,
    /// `parts` may hold the beginning of a frame that never completed.
    pub async fn next_parts(&mut self, parts: &mut Vec<Bytes>) -> Result<bool, SessionError> {
        loop {
            if self.pending.is_empty() {
                match self.recv.read_chunk(usize::MAX, true).await {
                    Ok(Some(chunk)) => self.pending = chunk.bytes,
                    Ok(None) => {
                        self.splitter.finish()?;
                        return Ok(false);
                    }
                    Err(quinn::ReadError::ConnectionLost(e)) => {
                        return Err(SessionError::from_connection(e));
                    }
                    Err(e) => return Err(e.into()),
                }
                continue;
            }
            let (n, piece) = match self.splitter.split(&self.pending) {
                Ok(cut) => cut,
                Err(e) => {
                    let _ = self.recv.stop(0u32.into());
                    return Err(e.into());
                }
            };
            let bytes = self.pending.split_to(n);
            match piece {
                Piece::Header { ends_frame } => {
                    if ends_frame {
                        return Ok(true);
                    }
                }
                Piece::Payload { ends_frame } => {
                    parts.push(bytes);
                    if ends_frame {
                        return Ok(true);
                    }
                }
            }
        }
    }
}

/// The sending half of a request stream. Send one response, or a series
/// (a subscription), then [`Responder::finish`].
#[derive(Debug)]
pub struct Responder {
    send: quinn::SendStream,
    request_id: u64,
    limit: usize,
    /// The request's body until the application takes it.
    body: Option<RequestBody>,
}

impl Responder {
    /// Sends one response envelope; its `request_id` is set to the request's.
    pub async fn send(&mut self, envelope: &Envelope) -> Result<(), SessionError> {
        let mut envelope = envelope.clone();
        envelope.request_id = self.request_id;
        write_frame(&mut self.send, &envelope.encode_to_vec(), self.limit).await
    }

    /// Sends a typed error.
    pub async fn send_error(&mut self, code: ErrorCode, message: &str) -> Result<(), SessionError> {
        write_frame(
            &mut self.send,
            &error_envelope(self.request_id, code, message).encode_to_vec(),
            self.limit,
        )
        .await
    }

    /// Ends the response stream.
    pub fn finish(mut self) {
        let _ = self.send.finish();
    }

    /// Resolves when the requester stops reading (a cancelled subscription).
    pub async fn cancelled(&mut self) {
        let _ = self.send.stopped().await;
    }
}
