//! The driver (SPEC §19.5): a quinn [`AsyncUdpSocket`] whose datagrams
//! travel as MQTT publishes through a broker, over a rumqttc MQTT 5 client.
//!
//! It reads the clock (rotation windows), draws randomness (client ids,
//! reply ids) and spawns the task that polls rumqttc's event loop without
//! pause: rumqttc reconnects only while it is polled. On every CONNACK it
//! subscribes again to everything it needs, since a clean-session
//! reconnect drops the broker's subscriptions silently. Keep-alive is short
//! (5 s) so a dead link is noticed; the largest incoming packet is raised
//! above an envelope; every publish is QoS 0, not retained (QUIC already
//! retransmits and controls congestion).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use ring::rand::{SecureRandom, SystemRandom};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet, SubscribeReasonCode};
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use thiserror::Error;
use tokio::sync::oneshot;
use tokio::task::AbortHandle;

use crate::addr::{Peer, local_addr};
use crate::envelope::{self, MAX_ENVELOPE_BYTES};
use crate::topic::{Rendezvous, TopicId, TopicPrefix, seconds_to_next_window};

/// The largest MQTT packet this client accepts, told to the broker in
/// CONNECT (MQTT 5 Maximum Packet Size): above a publish of the largest
/// envelope under a topic, below rumqttc's 10 KiB default, so a broker drops
/// larger publishes before they reach us.
pub const MAX_INCOMING_PACKET: u32 = 8 * 1024;

const _: () = assert!(MAX_ENVELOPE_BYTES + 256 < MAX_INCOMING_PACKET as usize);

/// Settings of a relay socket.
#[derive(Clone)]
pub struct RelayConfig {
    /// Broker host name or address.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Further brokers, in order: the other nodes of the same cluster
    /// (SPEC §19.5). When an attempt to connect fails, the driver moves on
    /// to the next one, round the list.
    pub fallbacks: Vec<(String, u16)>,
    /// MQTT keep-alive: a dead link is noticed within about 1.5 times this.
    pub keep_alive: Duration,
    /// How long the first connection to the broker may take.
    pub connect_timeout: Duration,
    /// How long a subscription may take to be acknowledged before
    /// [`RelaySocket::dial`] / [`RelaySocket::listen`] go on without it.
    pub subscribe_timeout: Duration,
    /// The relay topics' prefix; both sides must use the same one.
    pub prefix: TopicPrefix,
    /// Credentials for a broker that wants them (SPEC §19.7: a deployment
    /// gives every client the same, or a per-device token that names no
    /// one). ejabberd refuses empty ones.
    pub login: Option<(String, String)>,
    /// Received datagrams waiting for quinn; more are dropped, as a full UDP
    /// receive buffer would.
    pub inbound_queue: usize,
    /// Requests waiting for the MQTT connection (rumqttc's channel); when it
    /// is full, datagrams are dropped, as a full send buffer would.
    pub outbound_queue: usize,
    /// Longest pause between two reconnection attempts.
    pub max_backoff: Duration,
}

impl std::fmt::Debug for RelayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password never goes into a log line.
        f.debug_struct("RelayConfig")
            .field("brokers", &self.brokers())
            .field("user", &self.login.as_ref().map(|(u, _)| u))
            .field("keep_alive", &self.keep_alive)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RelayConfig {
    /// Defaults for a broker at `host:port`.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            fallbacks: Vec::new(),
            keep_alive: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            subscribe_timeout: Duration::from_secs(3),
            prefix: TopicPrefix::default(),
            login: None,
            inbound_queue: 1024,
            outbound_queue: 1024,
            max_backoff: Duration::from_secs(2),
        }
    }

    /// Parses `mqtt://HOST:PORT` (the CLI's `--broker`), or a
    /// comma-separated list of the nodes of one cluster,
    /// `mqtt://H1:P1,H2:P2,…` (each after the first may repeat `mqtt://`):
    /// the first is [`RelayConfig::host`] and [`RelayConfig::port`], the
    /// others [`RelayConfig::fallbacks`]. TLS (`mqtts://`) is not offered
    /// yet.
    pub fn from_url(url: &str) -> Result<Self, RelayError> {
        let rest = url
            .strip_prefix("mqtt://")
            .ok_or(RelayError::BadUrl("the broker URL must start with mqtt://"))?;
        // `mqtt://USER:PASSWORD@HOST:PORT,...`: the deployment's shared
        // login (SPEC §19.7; ejabberd refuses empty credentials), the same
        // for every broker of the list.
        let (login, rest) = match rest.rsplit_once('@') {
            Some((userinfo, _)) if userinfo.contains([',', '/']) => {
                return Err(RelayError::BadUrl(
                    "a broker login goes once, before the first host",
                ));
            }
            Some((userinfo, hosts)) => {
                let (user, password) = userinfo.split_once(':').ok_or(RelayError::BadUrl(
                    "the broker login must be USER:PASSWORD@",
                ))?;
                if user.is_empty() || password.is_empty() {
                    return Err(RelayError::BadUrl(
                        "the broker login needs a user and a password",
                    ));
                }
                (Some((user.to_owned(), password.to_owned())), hosts)
            }
            None => (None, rest),
        };
        let mut brokers = rest
            .split(',')
            .map(|part| host_port(part.strip_prefix("mqtt://").unwrap_or(part)));
        let (host, port) = brokers
            .next()
            .ok_or(RelayError::BadUrl("the broker URL needs a plain host"))??;
        let mut config = Self::new(host, port);
        config.fallbacks = brokers.collect::<Result<_, _>>()?;
        config.login = login;
        Ok(config)
    }

    /// Every broker, the first one first.
    pub fn brokers(&self) -> Vec<(String, u16)> {
        std::iter::once((self.host.clone(), self.port))
            .chain(self.fallbacks.iter().cloned())
            .collect()
    }
}

/// One `HOST:PORT` of a broker URL (`[v6]:PORT` too).
fn host_port(part: &str) -> Result<(String, u16), RelayError> {
    let part = part.strip_suffix('/').unwrap_or(part);
    let (host, port) = part
        .rsplit_once(':')
        .ok_or(RelayError::BadUrl("the broker URL needs a port"))?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || host.contains(['/', '@', '?', '#', ',']) {
        return Err(RelayError::BadUrl("the broker URL needs a plain host"));
    }
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or(RelayError::BadUrl("the broker port must be 1-65535"))?;
    Ok((host.to_owned(), port))
}

/// Which broker of [`RelayConfig::brokers`] a driver connects to (SPEC
/// §19.5): a connection that was up and is lost is tried again at the same
/// broker (a surviving cluster node may drop a client once when another
/// dies); an attempt that fails moves on to the next broker, round the
/// list.
pub(crate) struct Failover {
    brokers: Vec<(String, u16)>,
    current: usize,
    up: bool,
    /// Failed attempts since the last CONNACK.
    failed: usize,
    /// The pause before the next attempt: 50 ms, doubling to
    /// `RelayConfig::max_backoff`, back to 50 ms at each CONNACK.
    backoff: Duration,
    max_backoff: Duration,
}

/// The first pause between reconnection attempts.
const MIN_BACKOFF: Duration = Duration::from_millis(50);

impl Failover {
    pub(crate) fn new(config: &RelayConfig) -> Self {
        Self {
            brokers: config.brokers(),
            current: 0,
            up: false,
            failed: 0,
            backoff: MIN_BACKOFF,
            max_backoff: config.max_backoff.max(MIN_BACKOFF),
        }
    }

    /// How long to wait before the next attempt; each call doubles the
    /// next wait, up to the configured maximum.
    pub(crate) fn next_wait(&mut self) -> Duration {
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(self.max_backoff);
        wait
    }

    pub(crate) fn current(&self) -> (&str, u16) {
        let (host, port) = &self.brokers[self.current];
        (host, *port)
    }

    pub(crate) fn connected(&mut self) {
        self.up = true;
        self.failed = 0;
        self.backoff = MIN_BACKOFF;
    }

    /// After an error; returns the broker to try next when it changed.
    pub(crate) fn failed(&mut self) -> Option<(String, u16)> {
        if std::mem::take(&mut self.up) {
            return None;
        }
        self.failed += 1;
        if self.brokers.len() < 2 {
            return None;
        }
        self.current = (self.current + 1) % self.brokers.len();
        Some(self.brokers[self.current].clone())
    }

    /// Every broker has failed once in a row without a CONNACK.
    pub(crate) fn exhausted(&self) -> bool {
        self.failed >= self.brokers.len()
    }
}

/// A relay socket could not be set up or used.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RelayError {
    /// A broker URL that is not `mqtt://HOST:PORT`.
    #[error("bad broker URL: {0}")]
    BadUrl(&'static str),
    /// The first connection to the broker failed.
    #[error("cannot reach the MQTT broker: {0}")]
    Connect(String),
    /// The broker refused a subscription (its access rules).
    #[error("the MQTT broker refused a subscription")]
    SubscribeRefused,
    /// The system random source failed.
    #[error("the system random source failed")]
    Random,
    /// The socket's connection task has ended.
    #[error("the relay socket is closed")]
    Closed,
    /// The broker did not acknowledge a queued letter in time (SPEC
    /// §19.12): it may or may not hold it; posting it again is safe.
    #[error("the MQTT broker did not acknowledge the letter in time")]
    NotAcknowledged,
}

/// Counters of a relay socket, for tests and diagnostics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Datagrams handed to quinn.
    pub received: u64,
    /// Datagrams published.
    pub sent: u64,
    /// Publishes whose payload was not an envelope (§19.3), or whose reply
    /// id was missing on a rendezvous topic or present on a reply topic.
    pub malformed: u64,
    /// Publishes on a topic this socket does not (or no longer) listen to.
    pub unexpected: u64,
    /// Received datagrams dropped because quinn's queue was full.
    pub dropped_inbound: u64,
    /// Datagrams not sent: the request queue was full, the destination was
    /// not one of ours, or the datagram was too large.
    pub dropped_outbound: u64,
    /// CONNACKs received (1 + reconnections).
    pub connacks: u64,
    /// Connection losses and failed attempts.
    pub disconnects: u64,
}

#[derive(Default)]
struct Counters {
    received: AtomicU64,
    sent: AtomicU64,
    malformed: AtomicU64,
    unexpected: AtomicU64,
    dropped_inbound: AtomicU64,
    dropped_outbound: AtomicU64,
    connacks: AtomicU64,
    disconnects: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Where a dialed responder is reached.
#[derive(Clone)]
enum Target {
    /// Its rendezvous topics, the current window's at each send.
    Rendezvous(Arc<Rendezvous>),
    /// One fixed topic (tests of what a stranger can do).
    Fixed(TopicId),
}

type SubscribeWaiter = oneshot::Sender<Result<(), RelayError>>;

#[derive(Default)]
struct State {
    /// Datagrams for quinn, with the virtual address they come from.
    inbound: VecDeque<(SocketAddr, Vec<u8>)>,
    waker: Option<Waker>,
    /// Responders this socket dialed, by the id of their reply topic.
    dials: HashMap<TopicId, Target>,
    /// Keys this socket answers at.
    listen: Vec<Arc<Rendezvous>>,
    /// The rendezvous ids currently listened to.
    rendezvous: HashSet<TopicId>,
    /// Every topic that must be subscribed (reply and rendezvous topics).
    topics: BTreeSet<String>,
    /// One entry per SUBSCRIBE sent, in order (brokers acknowledge in order).
    subacks: VecDeque<Option<SubscribeWaiter>>,
}

struct Shared {
    client: AsyncClient,
    prefix: TopicPrefix,
    inbound_cap: usize,
    subscribe_timeout: Duration,
    state: Mutex<State>,
    counters: Counters,
    /// Seconds added to the system clock (tests of rotation).
    clock_offset: AtomicI64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now(&self) -> u64 {
        let system = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        system.saturating_add_signed(self.clock_offset.load(Ordering::Relaxed))
    }

    /// Sends one SUBSCRIBE for `topics` (QoS 0), with a waiter for its
    /// SUBACK. Called with the state locked, so that the order of the
    /// requests and of `subacks` agree.
    fn subscribe_locked(
        &self,
        state: &mut State,
        topics: Vec<String>,
        waiter: Option<SubscribeWaiter>,
    ) {
        if topics.is_empty() {
            if let Some(w) = waiter {
                let _ = w.send(Ok(()));
            }
            return;
        }
        let filters = topics.into_iter().map(|t| Filter::new(t, QoS::AtMostOnce));
        match self.client.try_subscribe_many(filters) {
            Ok(()) => state.subacks.push_back(waiter),
            Err(e) => {
                // The queue is full or the task ended: the next CONNACK
                // subscribes again to everything.
                tracing::debug!(error = %e, "relay subscribe not queued");
                if let Some(w) = waiter {
                    let _ = w.send(Ok(()));
                }
            }
        }
    }

    /// Recomputes the rendezvous ids of the listened keys at `now`:
    /// subscribes to new ones, unsubscribes the ones out of range.
    fn refresh_rendezvous(&self, waiter: Option<SubscribeWaiter>) {
        let now = self.now();
        let mut state = self.lock();
        let wanted: HashSet<TopicId> = state
            .listen
            .iter()
            .flat_map(|r| r.listen_ids(now))
            .collect();
        let added: Vec<TopicId> = wanted.difference(&state.rendezvous).copied().collect();
        let removed: Vec<TopicId> = state.rendezvous.difference(&wanted).copied().collect();
        for id in &removed {
            let topic = id.topic(&self.prefix);
            state.topics.remove(&topic);
            if let Err(e) = self.client.try_unsubscribe(topic) {
                tracing::debug!(error = %e, "relay unsubscribe not queued");
            }
        }
        let new_topics: Vec<String> = added.iter().map(|id| id.topic(&self.prefix)).collect();
        state.topics.extend(new_topics.iter().cloned());
        state.rendezvous = wanted;
        self.subscribe_locked(&mut state, new_topics, waiter);
    }

    fn on_connack(&self) {
        bump(&self.counters.connacks);
        let mut state = self.lock();
        // Acknowledgements of the last connection will never come.
        state.subacks.clear();
        let topics: Vec<String> = state.topics.iter().cloned().collect();
        self.subscribe_locked(&mut state, topics, None);
    }

    fn on_suback(&self, ok: bool) {
        let waiter = self.lock().subacks.pop_front().flatten();
        if let Some(w) = waiter {
            let _ = w.send(if ok {
                Ok(())
            } else {
                Err(RelayError::SubscribeRefused)
            });
        }
    }

    fn on_publish(&self, topic: &[u8], payload: &[u8]) {
        let Ok(id) = self.prefix.parse(topic) else {
            bump(&self.counters.unexpected);
            return;
        };
        let Ok(env) = envelope::decode(payload) else {
            bump(&self.counters.malformed);
            return;
        };
        let mut state = self.lock();
        let from = if state.dials.contains_key(&id) {
            // A responder's answer on our reply topic: it names no reply.
            match env.reply {
                None => Peer::Dialed(id),
                Some(_) => {
                    drop(state);
                    bump(&self.counters.malformed);
                    return;
                }
            }
        } else if state.rendezvous.contains(&id) {
            // An initiator at our rendezvous: it must say where to answer.
            match env.reply {
                Some(reply) => Peer::Answered(reply),
                None => {
                    drop(state);
                    bump(&self.counters.malformed);
                    return;
                }
            }
        } else {
            drop(state);
            bump(&self.counters.unexpected);
            return;
        };
        if state.inbound.len() >= self.inbound_cap {
            drop(state);
            bump(&self.counters.dropped_inbound);
            return;
        }
        state
            .inbound
            .push_back((from.addr(), env.datagram.to_vec()));
        let waker = state.waker.take();
        drop(state);
        bump(&self.counters.received);
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn send_one(&self, to: Peer, datagram: &[u8]) {
        let (topic, reply) = match to {
            Peer::Dialed(reply) => {
                let topic = match self.lock().dials.get(&reply) {
                    Some(Target::Rendezvous(r)) => r.send_id(self.now()),
                    Some(Target::Fixed(id)) => *id,
                    None => {
                        bump(&self.counters.dropped_outbound);
                        return;
                    }
                };
                (topic, Some(reply))
            }
            Peer::Answered(reply) => (reply, None),
        };
        let Ok(payload) = envelope::encode(reply.as_ref(), datagram) else {
            bump(&self.counters.dropped_outbound);
            return;
        };
        match self
            .client
            .try_publish(topic.topic(&self.prefix), QoS::AtMostOnce, false, payload)
        {
            Ok(()) => bump(&self.counters.sent),
            Err(_) => bump(&self.counters.dropped_outbound),
        }
    }
}

/// Turns Nagle's algorithm off on the TCP connection to the broker (SPEC
/// §19.5): QUIC writes small packets back to back, and with Nagle on the
/// second waits for the broker's delayed ACK (about 40 ms on Linux).
pub(crate) fn no_delay(options: &mut MqttOptions) {
    let mut network = options.network_options();
    network.set_tcp_nodelay(true);
    options.set_network_options(network);
}

/// The MQTT options of a relay socket's connection to `host:port`, under a
/// fresh client id (SPEC §19.6): 20 lower-case hex characters, within MQTT
/// 3.1.1's 23.
fn socket_options(config: &RelayConfig, host: &str, port: u16) -> Result<MqttOptions, RelayError> {
    let client_id = crate::topic::hex(&random::<10>()?);
    let mut options = MqttOptions::new(client_id, host, port);
    options
        .set_keep_alive(config.keep_alive)
        .set_clean_start(true)
        .set_max_packet_size(Some(
            u32::try_from(4 * MAX_ENVELOPE_BYTES + 1024).unwrap_or(u32::MAX),
        ))
        .set_connection_timeout(config.connect_timeout.as_secs().max(1))
        .set_request_channel_capacity(config.outbound_queue.max(16));
    if let Some((user, password)) = &config.login {
        options.set_credentials(user.clone(), password.clone());
    }
    no_delay(&mut options);
    Ok(options)
}

/// Aborts a task when dropped.
pub(crate) struct AbortOnDrop(pub(crate) AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A quinn socket over an MQTT broker (SPEC §19). One MQTT connection with
/// a random client id; give it to `tether_session`'s `Listener::bind_socket`
/// or `Connector::with_socket` as an `Arc<dyn quinn::AsyncUdpSocket>`.
pub struct RelaySocket {
    shared: Arc<Shared>,
    _tasks: Vec<AbortOnDrop>,
}

impl std::fmt::Debug for RelaySocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelaySocket")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

fn random<const N: usize>() -> Result<[u8; N], RelayError> {
    let mut out = [0; N];
    SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| RelayError::Random)?;
    Ok(out)
}

impl RelaySocket {
    /// Connects to the broker and waits for its first CONNACK. Must be
    /// called inside a tokio runtime.
    pub async fn connect(config: RelayConfig) -> Result<Arc<Self>, RelayError> {
        let failover = Failover::new(&config);
        let (host, port) = failover.current();
        let options = socket_options(&config, host, port)?;
        let (client, eventloop) = AsyncClient::new(options, config.outbound_queue.max(16));
        let shared = Arc::new(Shared {
            client,
            prefix: config.prefix.clone(),
            inbound_cap: config.inbound_queue.max(1),
            subscribe_timeout: config.subscribe_timeout,
            state: Mutex::default(),
            counters: Counters::default(),
            clock_offset: AtomicI64::new(0),
        });
        let (first_tx, first_rx) = oneshot::channel();
        let brokers = failover.brokers.len();
        let driver = tokio::spawn(drive(
            shared.clone(),
            eventloop,
            first_tx,
            config.clone(),
            failover,
        ));
        let rotation = tokio::spawn(rotate(Arc::downgrade(&shared)));
        let tasks = vec![
            AbortOnDrop(driver.abort_handle()),
            AbortOnDrop(rotation.abort_handle()),
        ];
        // Each broker of the list may take the whole connect timeout.
        let wait = config
            .connect_timeout
            .saturating_mul(u32::try_from(brokers).unwrap_or(u32::MAX));
        match tokio::time::timeout(wait, first_rx).await {
            Ok(Ok(Ok(()))) => Ok(Arc::new(Self {
                shared,
                _tasks: tasks,
            })),
            Ok(Ok(Err(e))) => Err(RelayError::Connect(e)),
            Ok(Err(_)) => Err(RelayError::Closed),
            Err(_) => Err(RelayError::Connect("no CONNACK in time".into())),
        }
    }

    /// Registers a responder reached at the rendezvous topics of
    /// `relay_key` and returns the virtual address to connect to. Each call
    /// draws a fresh random reply topic (nothing stable across
    /// connections), subscribes to it and waits for the broker's
    /// acknowledgement, so the responder's first answer is not lost.
    pub async fn dial(&self, relay_key: &[u8; 32]) -> Result<SocketAddr, RelayError> {
        self.dial_target(Target::Rendezvous(Arc::new(Rendezvous::new(relay_key))))
            .await
    }

    /// Like [`RelaySocket::dial`], but always publishes to the one topic
    /// `id` names: what a stranger who saw a live rendezvous topic on the
    /// broker can do. For tests of the responder's defences only.
    #[doc(hidden)]
    pub async fn dial_topic(&self, id: TopicId) -> Result<SocketAddr, RelayError> {
        self.dial_target(Target::Fixed(id)).await
    }

    async fn dial_target(&self, target: Target) -> Result<SocketAddr, RelayError> {
        let reply = TopicId(random()?);
        let (tx, rx) = oneshot::channel();
        {
            let mut state = self.shared.lock();
            state.dials.insert(reply, target);
            let topic = reply.topic(&self.shared.prefix);
            state.topics.insert(topic.clone());
            self.shared
                .subscribe_locked(&mut state, vec![topic], Some(tx));
        }
        self.wait_suback(rx).await?;
        Ok(Peer::Dialed(reply).addr())
    }

    /// Forgets a dialed responder: its reply topic is unsubscribed and
    /// datagrams to its address are dropped.
    pub fn hang_up(&self, addr: SocketAddr) {
        let Some(Peer::Dialed(reply)) = Peer::from_addr(addr) else {
            return;
        };
        let mut state = self.shared.lock();
        if state.dials.remove(&reply).is_some() {
            let topic = reply.topic(&self.shared.prefix);
            state.topics.remove(&topic);
            let _ = self.shared.client.try_unsubscribe(topic);
        }
    }

    /// Answers initiators at the rendezvous topics of these relay keys
    /// (the group key's, and each grant's in force), replacing the previous
    /// set. Subscribes to the current window and its neighbours, follows
    /// the rotation by itself, and waits for the broker's acknowledgement.
    pub async fn listen(&self, relay_keys: &[[u8; 32]]) -> Result<(), RelayError> {
        self.shared.lock().listen = relay_keys
            .iter()
            .map(|k| Arc::new(Rendezvous::new(k)))
            .collect();
        let (tx, rx) = oneshot::channel();
        self.shared.refresh_rendezvous(Some(tx));
        self.wait_suback(rx).await
    }

    async fn wait_suback(
        &self,
        rx: oneshot::Receiver<Result<(), RelayError>>,
    ) -> Result<(), RelayError> {
        match tokio::time::timeout(self.shared.subscribe_timeout, rx).await {
            Ok(Ok(result)) => result,
            // The connection dropped meanwhile (the next CONNACK subscribes
            // again), or the broker is slow: go on; QUIC retransmits.
            Ok(Err(_)) | Err(_) => Ok(()),
        }
    }

    /// The topics this socket is subscribed to (for tests and diagnostics).
    pub fn topics(&self) -> Vec<String> {
        self.shared.lock().topics.iter().cloned().collect()
    }

    /// Current counters.
    pub fn stats(&self) -> RelayStats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RelayStats {
            received: get(&c.received),
            sent: get(&c.sent),
            malformed: get(&c.malformed),
            unexpected: get(&c.unexpected),
            dropped_inbound: get(&c.dropped_inbound),
            dropped_outbound: get(&c.dropped_outbound),
            connacks: get(&c.connacks),
            disconnects: get(&c.disconnects),
        }
    }

    /// Moves this socket's clock by `seconds` and follows the rotation at
    /// once: for tests of rotation windows only.
    #[doc(hidden)]
    pub async fn shift_clock(&self, seconds: i64) -> Result<(), RelayError> {
        self.shared.clock_offset.store(seconds, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.shared.refresh_rendezvous(Some(tx));
        self.wait_suback(rx).await
    }
}

/// Polls rumqttc's event loop for as long as the socket lives, moving on
/// to the next broker of the list when an attempt fails (SPEC §19.5).
async fn drive(
    shared: Arc<Shared>,
    mut eventloop: EventLoop,
    first: oneshot::Sender<Result<(), String>>,
    config: RelayConfig,
    mut failover: Failover,
) {
    let mut first = Some(first);
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                failover.connected();
                shared.on_connack();
                if let Some(f) = first.take() {
                    let _ = f.send(Ok(()));
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => shared.on_publish(&p.topic, &p.payload),
            Ok(Event::Incoming(Packet::SubAck(ack))) => shared.on_suback(
                ack.return_codes
                    .iter()
                    .all(|c| matches!(c, SubscribeReasonCode::Success(_))),
            ),
            Ok(_) => {}
            Err(e) => {
                bump(&shared.counters.disconnects);
                let next = failover.failed();
                if failover.exhausted()
                    && let Some(f) = first.take()
                {
                    let _ = f.send(Err(e.to_string()));
                    return;
                }
                tracing::debug!(error = %e, "relay broker connection lost; reconnecting");
                if let Some((host, port)) = next {
                    // A fresh client id for the new connection (§19.6).
                    match socket_options(&config, &host, port) {
                        Ok(options) => {
                            tracing::debug!(host, port, "relay fails over to the next broker");
                            eventloop.options = options;
                        }
                        Err(e) => tracing::debug!(error = %e, "relay failover skipped"),
                    }
                }
                tokio::time::sleep(failover.next_wait()).await;
            }
        }
    }
}

/// Follows the rotation windows: at each boundary (plus a second), the
/// rendezvous subscriptions move on.
async fn rotate(shared: std::sync::Weak<Shared>) {
    loop {
        let wait = match shared.upgrade() {
            Some(s) => seconds_to_next_window(s.now()) + 1,
            None => return,
        };
        tokio::time::sleep(Duration::from_secs(wait)).await;
        match shared.upgrade() {
            Some(s) => s.refresh_rendezvous(None),
            None => return,
        }
    }
}

/// Always writable: a full request queue drops datagrams instead (as a
/// congested link would; QUIC recovers).
#[derive(Debug)]
struct AlwaysWritable;

impl UdpPoller for AlwaysWritable {
    fn poll_writable(self: Pin<&mut Self>, _cx: &mut Context) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncUdpSocket for RelaySocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(AlwaysWritable)
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        let Some(to) = Peer::from_addr(transmit.destination) else {
            bump(&self.shared.counters.dropped_outbound);
            return Ok(());
        };
        match transmit.segment_size {
            Some(size) if size > 0 => {
                for datagram in transmit.contents.chunks(size) {
                    self.shared.send_one(to, datagram);
                }
            }
            _ => self.shared.send_one(to, transmit.contents),
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut state = self.shared.lock();
        let mut filled = 0;
        while filled < bufs.len().min(meta.len()) {
            let Some((addr, datagram)) = state.inbound.pop_front() else {
                break;
            };
            let buf = &mut bufs[filled];
            if datagram.len() > buf.len() {
                bump(&self.shared.counters.dropped_inbound);
                continue;
            }
            buf[..datagram.len()].copy_from_slice(&datagram);
            let m = &mut meta[filled];
            m.addr = addr;
            m.len = datagram.len();
            m.stride = datagram.len();
            m.ecn = None;
            m.dst_ip = None;
            filled += 1;
        }
        if filled == 0 {
            state.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        Poll::Ready(Ok(filled))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(local_addr())
    }

    fn may_fragment(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_broker_url_parses_as_before() {
        let c = RelayConfig::from_url("mqtt://broker.example:1883/").unwrap();
        assert_eq!((c.host.as_str(), c.port), ("broker.example", 1883));
        assert!(c.fallbacks.is_empty());
        let c = RelayConfig::from_url("mqtt://[::1]:1884").unwrap();
        assert_eq!((c.host.as_str(), c.port), ("::1", 1884));
    }

    #[test]
    fn a_comma_separated_url_lists_the_cluster_nodes_in_order() {
        let c = RelayConfig::from_url("mqtt://127.0.0.1:18830,127.0.0.1:18831,mqtt://[::1]:18832")
            .unwrap();
        assert_eq!((c.host.as_str(), c.port), ("127.0.0.1", 18830));
        assert_eq!(
            c.fallbacks,
            vec![("127.0.0.1".to_owned(), 18831), ("::1".to_owned(), 18832)]
        );
        assert_eq!(c.brokers().len(), 3);
    }

    #[test]
    fn a_shared_login_comes_before_the_broker_list() {
        let c =
            RelayConfig::from_url("mqtt://fleet:s3cret@127.0.0.1:18830,127.0.0.1:18831").unwrap();
        assert_eq!(c.login, Some(("fleet".to_owned(), "s3cret".to_owned())));
        assert_eq!((c.host.as_str(), c.port), ("127.0.0.1", 18830));
        assert_eq!(c.fallbacks.len(), 1);
        assert!(RelayConfig::from_url("mqtt://h:1").unwrap().login.is_none());
        for bad in ["mqtt://fleet@h:1", "mqtt://:pw@h:1", "mqtt://u:@h:1"] {
            assert!(
                matches!(RelayConfig::from_url(bad), Err(RelayError::BadUrl(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn bad_broker_lists_are_typed_errors() {
        for url in [
            "tcp://h:1",
            "mqtt://",
            "mqtt://h:1,",
            "mqtt://h:1,,h:2",
            "mqtt://h:1,h",
            "mqtt://h:1,h:0",
            "mqtt://h:1,h:70000",
            "mqtt://h:1,u@h:2",
            "mqtt://h:1,mqtts://h:2",
        ] {
            assert!(
                matches!(RelayConfig::from_url(url), Err(RelayError::BadUrl(_))),
                "{url}"
            );
        }
    }

    #[test]
    fn failover_retries_a_lost_broker_once_then_moves_round_the_list() {
        let c = RelayConfig::from_url("mqtt://a:1,b:2,c:3").unwrap();
        let mut f = Failover::new(&c);
        assert_eq!(f.current(), ("a", 1));
        f.connected();
        // A lost connection: the same broker again first.
        assert_eq!(f.failed(), None);
        assert_eq!(f.current(), ("a", 1));
        // Its attempt fails: the next ones, round the list.
        assert_eq!(f.failed(), Some(("b".to_owned(), 2)));
        assert!(!f.exhausted());
        assert_eq!(f.failed(), Some(("c".to_owned(), 3)));
        assert!(!f.exhausted());
        assert_eq!(f.failed(), Some(("a".to_owned(), 1)));
        assert!(f.exhausted());
        f.connected();
        assert!(!f.exhausted());
        // One broker: nothing to move to; one failed attempt exhausts it.
        let mut one = Failover::new(&RelayConfig::new("a", 1));
        assert_eq!(one.failed(), None);
        assert!(one.exhausted());
        // The pauses double up to the maximum, and start over at a CONNACK.
        let waits: Vec<u64> = (0..7).map(|_| f.next_wait().as_millis() as u64).collect();
        assert_eq!(waits, [50, 100, 200, 400, 800, 1600, 2000]);
        f.connected();
        assert_eq!(f.next_wait(), Duration::from_millis(50));
    }
}
