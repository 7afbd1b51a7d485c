//! The relay transport (SPEC §19) against bare MQTT through the same broker
//! in the same run (issue 13, item 6).
//!
//! Tether side: a head unit listening at its group's rendezvous topics
//! (`RelaySocket::listen` + `Listener::bind_socket`, answering with the
//! same [`VehicleService`](tether_control::VehicleService) as the LAN
//! measurements) and a phone that dials it (`RelaySocket::dial` +
//! `Connector::with_socket`); the small command is the LAN one.
//!
//! Baseline: two plain rumqttc MQTT 5 clients with the relay's own client
//! settings (keep-alive, clean start, maximum packet size, request queue),
//! topics of the relay's form and length, QoS 0, not retained. One
//! publishes a request of the Tether request's framed size on a request
//! topic; the other answers it from its event-loop task (as the relay
//! socket hands datagrams on) with a reply of the Tether response's framed
//! size on a reply topic. An 8-byte id in each payload pairs answers with
//! requests, so the baseline pipelines as the session does.
//!
//! The broker is [`tether_broker::EmbeddedBroker`] unless
//! [`BenchConfig::broker`] names a real one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ring::rand::{SecureRandom, SystemRandom};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use tether_identity::DeviceKey;
use tether_relay::envelope::MAX_ENVELOPE_BYTES;
use tether_relay::{RelayConfig, RelaySocket, TopicId, TopicPrefix};
use tether_session::quic::{CloseCode, Connector, Listener, SessionConfig};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::config::{share, tether_first};
use crate::error::BenchError;
use crate::measure::{latencies, pipelined};
use crate::{BenchConfig, tether};

/// How long one baseline answer may take before the run fails (QoS 0: a
/// lost publish would otherwise wait forever).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Samples and throughput of the relay measurements.
pub(crate) struct Relay {
    /// Which broker carried them.
    pub(crate) broker: String,
    pub(crate) relay_rtt: Vec<Duration>,
    pub(crate) mqtt_rtt: Vec<Duration>,
    pub(crate) relay_pipelined: (usize, Duration),
    pub(crate) mqtt_pipelined: (usize, Duration),
    /// `RelaySocket::dial` + `Connector::connect`, each on a fresh
    /// connector (no ticket).
    pub(crate) cold_connects: Vec<Duration>,
    /// `RelaySocket::connect` (MQTT CONNECT until CONNACK) before each.
    pub(crate) broker_connects: Vec<Duration>,
    /// Baseline request and reply payloads, bytes.
    pub(crate) mqtt_bytes: (usize, usize),
    /// The same round trips with the broker [`Relay::wan_delay`] away each
    /// way (a delaying TCP proxy in front of it): relay, then bare MQTT.
    pub(crate) wan_rtt: (Vec<Duration>, Vec<Duration>),
    /// The one-way delay of those.
    pub(crate) wan_delay: Duration,
    /// Over the same delayed broker, `connect` until the answer to one read
    /// has arrived: cold (no ticket), then resumed (both tickets held, so
    /// the read travels as early data, SPEC §5.8).
    pub(crate) wan_reads: (Vec<Duration>, Vec<Duration>),
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(crate) async fn measure_relay(
    config: &BenchConfig,
    account: &tether::Account,
    session_config: &SessionConfig,
    mqtt_bytes: (usize, usize),
) -> Result<Relay, BenchError> {
    let embedded = match &config.broker {
        Some(_) => None,
        None => Some(
            tether_broker::EmbeddedBroker::start(crate::tether::LOOPBACK)
                .await
                .map_err(|e| BenchError::setup("embedded broker", e))?,
        ),
    };
    let (host, port, broker) = match (&config.broker, &embedded) {
        (Some((host, port)), _) => (host.clone(), *port, format!("mqtt://{host}:{port}")),
        (None, Some(b)) => (
            b.addr().ip().to_string(),
            b.addr().port(),
            "embedded (tether-broker, in process)".to_owned(),
        ),
        (None, None) => return Err(BenchError::Unexpected("no broker")),
    };
    let relay_config = RelayConfig::new(host.clone(), port);
    let result = measure_on(config, account, session_config, &relay_config, mqtt_bytes).await;
    // Then with the broker a network away: a proxy that holds every chunk
    // `relay_wan_delay_ms` in each direction (a nearby cloud broker is a
    // few milliseconds away; on loopback it is microseconds).
    let wan = async {
        let delay = Duration::from_millis(config.relay_wan_delay_ms);
        let proxy = DelayProxy::start((host.clone(), port), delay).await?;
        let wan_config = RelayConfig::new("127.0.0.1", proxy.port);
        let sampled = wan_rtt(config, account, session_config, &wan_config, mqtt_bytes).await;
        drop(proxy);
        sampled.map(|(rtt, reads)| (rtt, reads, delay))
    }
    .await;
    if let Some(b) = embedded {
        b.shutdown().await;
    }
    let mut relay = result?;
    let (wan_rtt, wan_reads, wan_delay) = wan?;
    relay.broker = broker;
    relay.wan_rtt = wan_rtt;
    relay.wan_reads = wan_reads;
    relay.wan_delay = wan_delay;
    Ok(relay)
}

/// A TCP proxy on 127.0.0.1 that forwards to `target`, holding every chunk
/// `delay` before passing it on, in each direction, without serialising
/// the delays (chunks in flight overlap, as on a link with latency).
struct DelayProxy {
    port: u16,
    _task: AbortOnDrop,
}

impl DelayProxy {
    async fn start(target: (String, u16), delay: Duration) -> Result<Self, BenchError> {
        let listener = tokio::net::TcpListener::bind(crate::tether::LOOPBACK)
            .await
            .map_err(|e| BenchError::setup("delay proxy", e))?;
        let port = listener
            .local_addr()
            .map_err(|e| BenchError::setup("delay proxy", e))?
            .port();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(server) =
                        tokio::net::TcpStream::connect((target.0.as_str(), target.1)).await
                    else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let up = tokio::spawn(delayed_copy(cr, sw, delay));
                    let down = tokio::spawn(delayed_copy(sr, cw, delay));
                    let _ = tokio::join!(up, down);
                });
            }
        });
        Ok(Self {
            port,
            _task: AbortOnDrop(task.abort_handle()),
        })
    }
}

async fn delayed_copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((at, bytes)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buf = vec![0; 16 * 1024];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0
            || tx
                .send((tokio::time::Instant::now() + delay, buf[..n].to_vec()))
                .is_err()
        {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// A car at its rendezvous through the broker, one phone session to it, and
/// the bare MQTT request/response baseline through the same broker.
struct Rig {
    relay_key: [u8; 32],
    /// The phone's connector and the car's address on the relay.
    connector: Connector,
    car_addr: std::net::SocketAddr,
    session: Arc<tether_session::quic::ClientSession>,
    requester: Arc<MqttRequester>,
    baseline: MqttResponder,
    _vehicle: AbortOnDrop,
}

impl Rig {
    async fn start(
        account: &tether::Account,
        session_config: &SessionConfig,
        relay_config: &RelayConfig,
        mqtt_bytes: (usize, usize),
    ) -> Result<Self, BenchError> {
        let relay_key = account
            .car
            .group_key()
            .ok_or(BenchError::Unexpected("a car holds the group key"))?
            .relay_key();
        // The head unit: one long-lived MQTT connection, at its rendezvous.
        let car_socket = RelaySocket::connect(relay_config.clone())
            .await
            .map_err(|e| BenchError::setup("car relay socket", e))?;
        car_socket
            .listen(&[relay_key])
            .await
            .map_err(|e| BenchError::setup("car rendezvous", e))?;
        let listener = Listener::bind_socket(
            car_socket.clone(),
            account.car.clone(),
            session_config.clone(),
        )?;
        let car_key = DeviceKey::from_pkcs8(account.car.key().pkcs8())
            .map_err(|e| BenchError::setup("vehicle key", e))?;
        let vehicle =
            AbortOnDrop(tokio::spawn(tether::serve_vehicle(listener, car_key)).abort_handle());
        // The phone: one session through the broker.
        let phone_socket = RelaySocket::connect(relay_config.clone())
            .await
            .map_err(|e| BenchError::setup("phone relay socket", e))?;
        let connector = Connector::with_socket(
            phone_socket.clone(),
            account.phone.clone(),
            session_config.clone(),
        )?;
        let car_addr = phone_socket
            .dial(&relay_key)
            .await
            .map_err(|e| BenchError::setup("dial the car", e))?;
        let session = Arc::new(connector.connect(car_addr).await?);
        // The baseline: bare request/response through the same broker.
        let baseline = MqttResponder::start(relay_config, mqtt_bytes.1).await?;
        let requester = Arc::new(
            MqttRequester::start(relay_config, &baseline, mqtt_bytes.0, mqtt_bytes.1).await?,
        );
        Ok(Self {
            relay_key,
            connector,
            car_addr,
            session,
            requester,
            baseline,
            _vehicle: vehicle,
        })
    }
}

/// Sequential round trips only, relay and bare MQTT, rounds alternating.
/// Relay and bare MQTT round trips; cold and resumed connect-to-answer.
type WanSamples = (
    (Vec<Duration>, Vec<Duration>),
    (Vec<Duration>, Vec<Duration>),
);

async fn wan_rtt(
    config: &BenchConfig,
    account: &tether::Account,
    session_config: &SessionConfig,
    relay_config: &RelayConfig,
    mqtt_bytes: (usize, usize),
) -> Result<WanSamples, BenchError> {
    let rig = Rig::start(account, session_config, relay_config, mqtt_bytes).await?;
    let (session, requester) = (rig.session.clone(), rig.requester.clone());

    let relay_call = {
        let session = session.clone();
        move || {
            let session = session.clone();
            async move { tether::call(&session).await }
        }
    };
    let mqtt_call = {
        let requester = requester.clone();
        move || {
            let requester = requester.clone();
            async move { requester.call().await }
        }
    };
    latencies(3, 0, &relay_call).await?;
    latencies(3, 0, &mqtt_call).await?;
    let (mut relay, mut mqtt) = (Vec::new(), Vec::new());
    for round in 0..config.rounds {
        let n = share(config.relay_wan_samples, round, config.rounds);
        for relay_turn in [tether_first(round), !tether_first(round)] {
            if relay_turn {
                relay.extend(latencies(0, n, &relay_call).await?);
            } else {
                mqtt.extend(latencies(0, n, &mqtt_call).await?);
            }
        }
    }
    // Round trips from `connect` to the first answer, counted in time:
    // cold (QUIC's round trip, then the read's), then resumed with both
    // tickets (the read leaves with the ClientHello).
    let (mut cold, mut resumed) = (Vec::new(), Vec::new());
    for _ in 0..config.relay_wan_reads {
        rig.connector.forget_tickets();
        cold.push(connect_and_read(&rig, false).await?);
        resumed.push(connect_and_read(&rig, true).await?);
    }
    session.close(CloseCode::Normal, "bench done");
    Ok(((relay, mqtt), (cold, resumed)))
}

/// One `connect` and one read on it, timed until the answer; waits for
/// the next ticket (untimed) before closing.
async fn connect_and_read(rig: &Rig, expect_early: bool) -> Result<Duration, BenchError> {
    let start = tokio::time::Instant::now();
    let session = rig.connector.connect(rig.car_addr).await?;
    tether::call(&session).await?;
    let time = start.elapsed();
    if expect_early != (session.round_trips() == 0) {
        return Err(BenchError::Unexpected(if expect_early {
            "a resumed read did not travel as early data"
        } else {
            "a cold connect resumed"
        }));
    }
    tether::ticket_arrived(&rig.connector, rig.car_addr).await?;
    session.close(CloseCode::Normal, "bench");
    Ok(time)
}

async fn measure_on(
    config: &BenchConfig,
    account: &tether::Account,
    session_config: &SessionConfig,
    relay_config: &RelayConfig,
    mqtt_bytes: (usize, usize),
) -> Result<Relay, BenchError> {
    let rig = Rig::start(account, session_config, relay_config, mqtt_bytes).await?;
    let (relay_key, session, requester) =
        (rig.relay_key, rig.session.clone(), rig.requester.clone());

    let relay_call = {
        let session = session.clone();
        move || {
            let session = session.clone();
            async move { tether::call(&session).await }
        }
    };
    let mqtt_call = {
        let requester = requester.clone();
        move || {
            let requester = requester.clone();
            async move { requester.call().await }
        }
    };

    let mut out = Relay {
        broker: String::new(),
        relay_rtt: Vec::with_capacity(config.relay_rtt_samples),
        mqtt_rtt: Vec::with_capacity(config.relay_rtt_samples),
        relay_pipelined: (0, Duration::ZERO),
        mqtt_pipelined: (0, Duration::ZERO),
        cold_connects: Vec::with_capacity(config.relay_connects),
        broker_connects: Vec::with_capacity(config.relay_connects),
        mqtt_bytes,
        wan_rtt: (Vec::new(), Vec::new()),
        wan_reads: (Vec::new(), Vec::new()),
        wan_delay: Duration::ZERO,
    };

    // Sequential round trips, rounds alternating which side goes first.
    latencies(config.rtt_warmup, 0, &relay_call).await?;
    latencies(config.rtt_warmup, 0, &mqtt_call).await?;
    for round in 0..config.rounds {
        let n = share(config.relay_rtt_samples, round, config.rounds);
        for relay_turn in [tether_first(round), !tether_first(round)] {
            if relay_turn {
                out.relay_rtt.extend(latencies(0, n, &relay_call).await?);
            } else {
                out.mqtt_rtt.extend(latencies(0, n, &mqtt_call).await?);
            }
        }
    }

    // Many in flight on one session / one pair of clients.
    let concurrency = config.pipelined_concurrency;
    let warmup = concurrency * 2;
    pipelined(concurrency, warmup, relay_call.clone()).await?;
    pipelined(concurrency, warmup, mqtt_call.clone()).await?;
    for round in 0..config.rounds {
        let n = share(config.relay_pipelined_requests, round, config.rounds);
        for relay_turn in [tether_first(round), !tether_first(round)] {
            let (done, time) = if relay_turn {
                pipelined(concurrency, n, relay_call.clone()).await?
            } else {
                pipelined(concurrency, n, mqtt_call.clone()).await?
            };
            let total = if relay_turn {
                &mut out.relay_pipelined
            } else {
                &mut out.mqtt_pipelined
            };
            total.0 += done;
            total.1 += time;
        }
    }
    session.close(CloseCode::Normal, "bench done");
    // The car stays for the cold connects; the baseline goes.
    drop(requester);
    drop(rig.baseline);

    // Cold connects: a phone that has just reached the broker dials the car
    // and completes a full handshake (no ticket; certificates verified
    // before, as in the LAN's cold handshake).
    for _ in 0..config.relay_connects {
        let start = Instant::now();
        let socket = RelaySocket::connect(relay_config.clone())
            .await
            .map_err(|e| BenchError::setup("phone relay socket", e))?;
        out.broker_connects.push(start.elapsed());
        let connector = Connector::with_socket(
            socket.clone(),
            account.phone.clone(),
            session_config.clone(),
        )?;
        let start = Instant::now();
        let addr = socket
            .dial(&relay_key)
            .await
            .map_err(|e| BenchError::setup("dial the car", e))?;
        let session = connector.connect(addr).await?;
        out.cold_connects.push(start.elapsed());
        if session.peer().resumed {
            return Err(BenchError::Unexpected("a cold relay connect resumed"));
        }
        session.close(CloseCode::Normal, "bench");
    }
    Ok(out)
}

/// Median of `samples` in milliseconds; sorts them.
pub(crate) fn median_ms(samples: &mut [Duration]) -> f64 {
    crate::measure::percentile_us(samples, 50.0) / 1000.0
}

fn random_topic() -> Result<String, BenchError> {
    let mut id = [0u8; 16];
    SystemRandom::new()
        .fill(&mut id)
        .map_err(|_| BenchError::Unexpected("the system random source failed"))?;
    Ok(TopicId(id).topic(&TopicPrefix::default()))
}

/// A rumqttc client with the relay socket's own settings
/// (`RelaySocket::connect`, SPEC §19.5). Keep them in step: Nagle off
/// (`NetworkOptions::set_tcp_nodelay`), as the relay socket has it.
fn mqtt_client(config: &RelayConfig) -> Result<(AsyncClient, EventLoop), BenchError> {
    let mut id = [0u8; 10];
    SystemRandom::new()
        .fill(&mut id)
        .map_err(|_| BenchError::Unexpected("the system random source failed"))?;
    let client_id: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let mut options = MqttOptions::new(client_id, config.host.clone(), config.port);
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
    let mut network = options.network_options();
    network.set_tcp_nodelay(true);
    options.set_network_options(network);
    Ok(AsyncClient::new(options, config.outbound_queue.max(16)))
}

/// Subscribes `client` to `topic` and waits for the SUBACK, polling
/// `eventloop` (which connects first).
async fn subscribe(
    client: &AsyncClient,
    eventloop: &mut EventLoop,
    topic: &str,
) -> Result<(), BenchError> {
    client
        .subscribe(topic, QoS::AtMostOnce)
        .await
        .map_err(|e| BenchError::mqtt("subscribe", e))?;
    let wait = async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(BenchError::mqtt("connect", e)),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .map_err(|_| BenchError::Timeout("the baseline's SUBACK"))?
}

/// Answers every request on its topic from its event-loop task.
struct MqttResponder {
    request_topic: String,
    reply_topic: String,
    _task: AbortOnDrop,
}

impl MqttResponder {
    async fn start(config: &RelayConfig, response_bytes: usize) -> Result<Self, BenchError> {
        let (request_topic, reply_topic) = (random_topic()?, random_topic()?);
        let (client, mut eventloop) = mqtt_client(config)?;
        subscribe(&client, &mut eventloop, &request_topic).await?;
        let reply = reply_topic.clone();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let Some(id) = p.payload.get(..8) else {
                            continue;
                        };
                        let mut answer = vec![0xa5; response_bytes.max(8)];
                        answer[..8].copy_from_slice(id);
                        // As the relay socket sends: never waits, drops
                        // when the queue is full.
                        let _ = client.try_publish(reply.clone(), QoS::AtMostOnce, false, answer);
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        Ok(Self {
            request_topic,
            reply_topic,
            _task: AbortOnDrop(task.abort_handle()),
        })
    }
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<usize>>>>;

/// Publishes requests and pairs the answers with them by id.
struct MqttRequester {
    client: AsyncClient,
    request_topic: String,
    request_bytes: usize,
    response_bytes: usize,
    next_id: AtomicU64,
    pending: Pending,
    _task: AbortOnDrop,
}

impl MqttRequester {
    async fn start(
        config: &RelayConfig,
        responder: &MqttResponder,
        request_bytes: usize,
        response_bytes: usize,
    ) -> Result<Self, BenchError> {
        let (client, mut eventloop) = mqtt_client(config)?;
        subscribe(&client, &mut eventloop, &responder.reply_topic).await?;
        let pending: Pending = Arc::default();
        let waiting = pending.clone();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let Some(id) = p.payload.get(..8).and_then(|b| b.try_into().ok()) else {
                            continue;
                        };
                        let id = u64::from_be_bytes(id);
                        let waiter = waiting
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&id);
                        if let Some(w) = waiter {
                            let _ = w.send(p.payload.len());
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        Ok(Self {
            client,
            request_topic: responder.request_topic.clone(),
            request_bytes: request_bytes.max(8),
            response_bytes: response_bytes.max(8),
            next_id: AtomicU64::new(0),
            pending,
            _task: AbortOnDrop(task.abort_handle()),
        })
    }

    /// One request and its answer.
    async fn call(&self) -> Result<(), BenchError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        let mut request = vec![0x5a; self.request_bytes];
        request[..8].copy_from_slice(&id.to_be_bytes());
        self.client
            .publish(self.request_topic.clone(), QoS::AtMostOnce, false, request)
            .await
            .map_err(|e| BenchError::mqtt("publish", e))?;
        match tokio::time::timeout(ANSWER_TIMEOUT, rx).await {
            Ok(Ok(len)) if len == self.response_bytes => Ok(()),
            Ok(Ok(_)) => Err(BenchError::Unexpected(
                "baseline MQTT answer of the wrong size",
            )),
            Ok(Err(_)) => Err(BenchError::Unexpected("baseline MQTT requester stopped")),
            Err(_) => Err(BenchError::Timeout("a baseline MQTT answer")),
        }
    }
}
