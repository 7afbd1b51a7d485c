//! The relay transport through a real mosquitto (MQTT 5) on loopback:
//! real Tether sessions (tether-session's Listener and Connector, real
//! credentials from tether-identity) whose QUIC datagrams cross the broker
//! (SPEC §19).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use support::Mosquitto;
use tether_identity::{AccountAuthority, Credentials, DeviceKey, LocalAuthority, Role};
use tether_proto::v1::{Envelope, Ping, Pong, Request, Response, envelope, request, response};
use tether_relay::addr::Peer;
use tether_relay::{ROTATION_S, RelayConfig, RelaySocket, TopicId, TopicPrefix};
use tether_session::quic::{ClientSession, Connector, Listener, SessionConfig, StatsHandle};

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn member(authority: &mut LocalAuthority, role: Role) -> Arc<Credentials> {
    let key = DeviceKey::generate().unwrap();
    let grant = authority
        .enroll(&key.enrollment_request(role, [3; 16]), now())
        .unwrap();
    Arc::new(Credentials::from_grant(key, &grant, now()).unwrap())
}

struct Account {
    car: Arc<Credentials>,
    phone: Arc<Credentials>,
    relay_key: [u8; 32],
}

fn account() -> Account {
    let mut authority = LocalAuthority::generate().unwrap();
    let car = member(&mut authority, Role::Vehicle);
    let phone = member(&mut authority, Role::Phone);
    let relay_key = car.group_key().unwrap().relay_key();
    Account {
        car,
        phone,
        relay_key,
    }
}

fn ping(payload: &[u8]) -> Envelope {
    Envelope {
        body: Some(envelope::Body::Request(Request {
            kind: Some(request::Kind::Ping(Ping {
                payload: payload.to_vec(),
            })),
        })),
        ..Default::default()
    }
}

fn pong(payload: Vec<u8>) -> Envelope {
    Envelope {
        body: Some(envelope::Body::Response(Response {
            kind: Some(response::Kind::Pong(Pong { payload })),
        })),
        ..Default::default()
    }
}

fn pong_payload(env: &Envelope) -> Vec<u8> {
    match &env.body {
        Some(envelope::Body::Response(Response {
            kind: Some(response::Kind::Pong(p)),
        })) => p.payload.clone(),
        other => panic!("not a pong: {other:?}"),
    }
}

/// The car's side: answers a Ping with a Pong, and a Ping `sub:N` like a
/// subscription: a first response, then N-1 updates 20 ms apart, until the
/// phone cancels. Counts the requests served.
struct Car {
    served: Arc<AtomicUsize>,
    stats: StatsHandle,
}

fn serve(mut listener: Listener) -> Car {
    let served = Arc::new(AtomicUsize::new(0));
    let stats = listener.stats_handle();
    let counter = served.clone();
    tokio::spawn(async move {
        while let Some(mut session) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                while let Some(req) = session.next_request().await {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let mut responder = req.responder;
                    let payload = match req.envelope.body {
                        Some(envelope::Body::Request(Request {
                            kind: Some(request::Kind::Ping(p)),
                        })) => p.payload,
                        _ => continue,
                    };
                    tokio::spawn(async move {
                        let updates = std::str::from_utf8(&payload)
                            .ok()
                            .and_then(|s| s.strip_prefix("sub:"))
                            .and_then(|n| n.parse::<u8>().ok());
                        match updates {
                            Some(n) => {
                                for i in 0..n {
                                    if responder.send(&pong(vec![i])).await.is_err() {
                                        return;
                                    }
                                    tokio::time::sleep(Duration::from_millis(20)).await;
                                }
                            }
                            None => {
                                let _ = responder.send(&pong(payload)).await;
                            }
                        }
                        responder.finish();
                    });
                }
            });
        }
    });
    Car { served, stats }
}

fn relay_config(broker: &Mosquitto) -> RelayConfig {
    RelayConfig::new("127.0.0.1", broker.port())
}

/// A car answering at its account's rendezvous topics through `broker`.
async fn car_on(broker: &Mosquitto, account: &Account) -> (Arc<RelaySocket>, Car) {
    let socket = RelaySocket::connect(relay_config(broker)).await.unwrap();
    socket.listen(&[account.relay_key]).await.unwrap();
    let listener = Listener::bind_socket(
        socket.clone(),
        account.car.clone(),
        SessionConfig::default(),
    )
    .unwrap();
    (socket, serve(listener))
}

/// A phone's socket and connector through `broker`.
async fn phone_on(
    broker: &Mosquitto,
    credentials: &Arc<Credentials>,
    config: SessionConfig,
) -> (Arc<RelaySocket>, Connector) {
    let socket = RelaySocket::connect(relay_config(broker)).await.unwrap();
    let connector = Connector::with_socket(socket.clone(), credentials.clone(), config).unwrap();
    (socket, connector)
}

async fn connect(
    socket: &RelaySocket,
    connector: &Connector,
    relay_key: &[u8; 32],
) -> ClientSession {
    let car = socket.dial(relay_key).await.unwrap();
    connector.connect(car).await.unwrap()
}

/// A raw MQTT client that subscribes to `filter` and records every publish
/// it receives: what anyone allowed to subscribe on the broker sees.
/// Publishes seen: topic and payload.
type Seen = Vec<(String, Vec<u8>)>;

struct Observer {
    seen: Arc<Mutex<Seen>>,
    client: AsyncClient,
    _task: tokio::task::JoinHandle<()>,
}

impl Observer {
    async fn start(broker: &Mosquitto, filters: &[String]) -> Self {
        let id = format!("observer{}", rand_u64() % 1_000_000);
        let mut options = MqttOptions::new(id, "127.0.0.1", broker.port());
        options.set_max_packet_size(Some(64 * 1024));
        let (client, mut eventloop) = AsyncClient::new(options, 4096);
        for f in filters {
            client.subscribe(f.clone(), QoS::AtMostOnce).await.unwrap();
        }
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut acks = 0;
        while acks < filters.len() {
            if let Event::Incoming(Packet::SubAck(_)) = eventloop.poll().await.unwrap() {
                acks += 1;
            }
        }
        let s = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => s.lock().unwrap().push((
                        String::from_utf8(p.topic.to_vec()).unwrap(),
                        p.payload.to_vec(),
                    )),
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        Self {
            seen,
            client,
            _task: task,
        }
    }

    fn seen(&self) -> Vec<(String, Vec<u8>)> {
        self.seen.lock().unwrap().clone()
    }
}

fn rand_u64() -> u64 {
    use ring::rand::SecureRandom;
    let mut b = [0; 8];
    ring::rand::SystemRandom::new().fill(&mut b).unwrap();
    u64::from_be_bytes(b)
}

fn random_id() -> TopicId {
    let mut id = [0; 16];
    id[..8].copy_from_slice(&rand_u64().to_be_bytes());
    id[8..].copy_from_slice(&rand_u64().to_be_bytes());
    TopicId(id)
}

/// Waits for `cond`, up to 15 s.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The topics an initiator published to (envelopes that carry a reply id).
fn rendezvous_topics(seen: &[(String, Vec<u8>)]) -> Vec<String> {
    let mut topics: Vec<String> = seen
        .iter()
        .filter(|(_, p)| tether_relay::decode(p).is_ok_and(|e| e.reply.is_some()))
        .map(|(t, _)| t.clone())
        .collect();
    topics.dedup();
    topics
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_and_car_run_a_tether_session_through_the_broker() {
    let broker = Mosquitto::start();
    let a = account();
    let (car_socket, car) = car_on(&broker, &a).await;
    let (phone_socket, connector) = phone_on(&broker, &a.phone, SessionConfig::default()).await;
    let session = connect(&phone_socket, &connector, &a.relay_key).await;

    // The same account-bound handshake as on the LAN (SPEC §5).
    assert_eq!(session.peer().certificate.role, Role::Vehicle);
    assert_eq!(
        session.peer().certificate.public_key,
        a.car.key().public_key()
    );
    assert_eq!(
        session.round_trips(),
        1,
        "cold: QUIC's own round trip (SPEC §5.6)"
    );

    // Request / response.
    assert_eq!(
        pong_payload(&session.call(ping(b"hello")).await.unwrap()),
        b"hello"
    );
    // A subscription: a first response, then updates on the same stream.
    let mut updates = session.request(ping(b"sub:4")).await.unwrap();
    for i in 0..4u8 {
        let env = updates.next().await.unwrap().expect("an update");
        assert_eq!(pong_payload(&env), vec![i]);
    }
    assert!(updates.next().await.unwrap().is_none(), "the stream ends");
    assert_eq!(car.served.load(Ordering::SeqCst), 2);
    assert_eq!(car.stats.get().authenticated, 1);
    assert!(car_socket.stats().received > 0 && phone_socket.stats().received > 0);
    assert_eq!(car_socket.stats().malformed, 0);

    // Informal figures (printed, not asserted): a ping's round trip over
    // the broker against the same over direct loopback UDP.
    let mut relay = Vec::new();
    for i in 0..50u8 {
        let t = Instant::now();
        session.call(ping(&[i])).await.unwrap();
        relay.push(t.elapsed());
    }
    let direct_listener = Listener::bind(
        "127.0.0.1:0".parse().unwrap(),
        a.car.clone(),
        SessionConfig::default(),
    )
    .unwrap();
    let direct_addr = direct_listener.local_addr().unwrap();
    let _direct_car = serve(direct_listener);
    let udp = Connector::new(
        "127.0.0.1:0".parse().unwrap(),
        a.phone.clone(),
        SessionConfig::default(),
    )
    .unwrap();
    let t = Instant::now();
    let direct_session = udp.connect(direct_addr).await.unwrap();
    let direct_connect = t.elapsed();
    let mut direct = Vec::new();
    for i in 0..50u8 {
        let t = Instant::now();
        direct_session.call(ping(&[i])).await.unwrap();
        direct.push(t.elapsed());
    }
    let t = Instant::now();
    let again = connect(&phone_socket, &connector, &a.relay_key).await;
    let relay_connect = t.elapsed();
    again.call(ping(b"x")).await.unwrap();
    eprintln!(
        "figures (debug build, loopback): ping p50 relay {:?} vs direct {:?}; \
         cold connect relay {:?} vs direct {:?}",
        median(relay),
        median(direct),
        relay_connect,
        direct_connect
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_garbage_floods_and_replays_get_nothing_and_members_are_still_served_r31() {
    let broker = Mosquitto::start();
    let a = account();
    let observer = Observer::start(&broker, &["#".to_owned()]).await;
    let (car_socket, car) = car_on(&broker, &a).await;
    let (phone_socket, connector) = phone_on(&broker, &a.phone, SessionConfig::default()).await;
    let session = connect(&phone_socket, &connector, &a.relay_key).await;
    session.call(ping(b"captured")).await.unwrap();
    until("the observer to see the exchange", || {
        !rendezvous_topics(&observer.seen()).is_empty()
    })
    .await;
    // What a stranger allowed to subscribe to `#` learns: the car's live
    // rendezvous topic, and the member's publishes to it.
    let topics = rendezvous_topics(&observer.seen());
    assert_eq!(topics.len(), 1, "one live rendezvous topic: {topics:?}");
    let live = topics[0].clone();
    let captured: Vec<Vec<u8>> = observer
        .seen()
        .into_iter()
        .filter(|(t, _)| *t == live)
        .map(|(_, p)| p)
        .collect();
    assert!(!captured.is_empty());
    let served_by_members = car.served.load(Ordering::SeqCst);

    // The stranger: a raw MQTT client listening on reply topics of its own.
    let prefix = TopicPrefix::default();
    let own: Vec<TopicId> = (0..4).map(|_| random_id()).collect();
    let stranger = Observer::start(
        &broker,
        &own.iter().map(|id| id.topic(&prefix)).collect::<Vec<_>>(),
    )
    .await;

    // 1. Garbage: payloads that are not envelopes.
    let mut oversized = vec![1u8, 0];
    oversized.resize(4000, 0xc3);
    let garbage: Vec<Vec<u8>> = vec![
        vec![],
        vec![1],
        vec![2, 0, 0xc3],
        vec![1, 0x80, 0xc3],
        vec![1, 1, 0, 0],
        vec![1, 0],
        oversized,
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
    ];
    let rounds = 25;
    for _ in 0..rounds {
        for g in &garbage {
            stranger
                .client
                .publish(live.clone(), QoS::AtMostOnce, false, g.clone())
                .await
                .unwrap();
        }
    }
    // 2. A flood: well-formed envelopes with the stranger's reply ids and
    // 1200-byte datagrams shaped like QUIC v1 Initials.
    let flood = 500;
    for i in 0..flood {
        let mut datagram = vec![0u8; 1200];
        for chunk in datagram.chunks_mut(8) {
            let r = rand_u64().to_be_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
        datagram[0] = 0xc3;
        datagram[1..5].copy_from_slice(&1u32.to_be_bytes());
        datagram[5] = 8;
        let payload = tether_relay::encode(Some(&own[i % own.len()]), &datagram).unwrap();
        stranger
            .client
            .publish(live.clone(), QoS::AtMostOnce, false, payload)
            .await
            .unwrap();
    }
    // 3. Replays of everything the member sent to the car, three times.
    for _ in 0..3 {
        for p in &captured {
            stranger
                .client
                .publish(live.clone(), QoS::AtMostOnce, false, p.clone())
                .await
                .unwrap();
        }
    }
    // 4. A member of another account that learned the live topic runs a
    // real handshake through it: refused, learns no certificate (R3).
    let other = account();
    let (other_socket, other_connector) =
        phone_on(&broker, &other.phone, SessionConfig::default()).await;
    let at_live = other_socket
        .dial_topic(prefix.parse(live.as_bytes()).unwrap())
        .await
        .unwrap();
    assert!(other_connector.connect(at_live).await.is_err());

    // Members are still served: the running session, and a new one.
    for i in 0..20u8 {
        assert_eq!(
            pong_payload(&session.call(ping(&[i])).await.unwrap()),
            vec![i]
        );
    }
    let fresh = connect(&phone_socket, &connector, &a.relay_key).await;
    assert_eq!(pong_payload(&fresh.call(ping(b"ok")).await.unwrap()), b"ok");

    until("the car to drop every garbage publish", || {
        car_socket.stats().malformed >= (rounds * garbage.len()) as u64
    })
    .await;
    // Let anything the car might still answer reach the stranger.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        car_socket.stats().malformed,
        (rounds * garbage.len()) as u64,
        "exactly the garbage was malformed"
    );
    // The flood and the replays did reach the car's socket and went to
    // quinn, which answered none of them to the stranger.
    assert!(car_socket.stats().received >= (flood + 3 * captured.len()) as u64);
    assert!(
        stranger.seen().is_empty(),
        "the stranger got answers: {} publishes",
        stranger.seen().len()
    );
    let stats = car.stats.get();
    assert_eq!(stats.authenticated, 2, "only the member's two sessions");
    // SPEC §5.4: the other account's phone could not open the car's sealed
    // answer and gave up (counted abandoned), having seen no certificate.
    // Replayed Initials of the member start connections of their own,
    // which the member's real endpoint resets (abandoned too) or which time
    // out: none of them authenticated (above).
    assert!(
        stats.refused + stats.abandoned >= 1,
        "the other account's handshake: {stats:?}"
    );
    // No replayed request was served a second time.
    assert_eq!(
        car.served.load(Ordering::SeqCst),
        served_by_members + 20 + 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_identifier_crosses_the_broker_r2() {
    let broker = Mosquitto::start();
    let a = account();
    let observer = Observer::start(&broker, &["#".to_owned()]).await;
    let (_car_socket, car) = car_on(&broker, &a).await;
    let (phone_socket, connector) = phone_on(&broker, &a.phone, SessionConfig::default()).await;
    let session = connect(&phone_socket, &connector, &a.relay_key).await;
    session.call(ping(b"status")).await.unwrap();
    let mut sub = session.request(ping(b"sub:3")).await.unwrap();
    while sub.next().await.unwrap().is_some() {}
    assert_eq!(car.served.load(Ordering::SeqCst), 2);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = observer.seen();
    assert!(
        seen.len() > 10,
        "the observer saw the session: {}",
        seen.len()
    );

    let group = a.car.group_key().unwrap();
    let mut planted: Vec<(&str, Vec<u8>)> = vec![
        ("car device key", a.car.key().public_key().to_vec()),
        ("phone device key", a.phone.key().public_key().to_vec()),
        ("account key id", a.car.account_key_id().0.to_vec()),
        ("authority key", a.car.authority_public_key().to_vec()),
        (
            "car certificate",
            a.car.certificate_message().encode_to_vec(),
        ),
        (
            "phone certificate",
            a.phone.certificate_message().encode_to_vec(),
        ),
        (
            "car certificate body",
            a.car.certificate_message().body.clone(),
        ),
        ("group key", group.as_bytes().to_vec()),
        ("relay key", group.relay_key().to_vec()),
        ("membership key", group.membership_key().to_vec()),
        ("discovery key", group.discovery_key().to_vec()),
    ];
    let hex: Vec<(String, Vec<u8>)> = planted
        .iter()
        .map(|(n, b)| {
            let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
            (format!("{n} (hex)"), h.into_bytes())
        })
        .collect();
    let hex_refs: Vec<(&str, Vec<u8>)> = hex.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    planted.extend(hex_refs);
    let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    let prefix = TopicPrefix::default();
    for (topic, payload) in &seen {
        assert!(
            prefix.parse(topic.as_bytes()).is_ok(),
            "every topic is a relay pseudonym: {topic}"
        );
        assert!(tether_relay::decode(payload).is_ok(), "an envelope");
        for (name, needle) in &planted {
            assert!(!contains(topic.as_bytes(), needle), "{name} in a topic");
            assert!(!contains(payload, needle), "{name} in a payload");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendezvous_topics_rotate_and_a_clock_one_window_off_still_reaches_the_car() {
    let broker = Mosquitto::start();
    let a = account();
    let observer = Observer::start(&broker, &["#".to_owned()]).await;
    let (car_socket, car) = car_on(&broker, &a).await;
    // Keep clear of a window boundary during the test.
    if tether_relay::topic::seconds_to_next_window(now()) < 30 {
        tokio::time::sleep(Duration::from_secs(31)).await;
        car_socket.shift_clock(0).await.unwrap();
    }
    // The topics the initiator with this dial (its reply id) published to.
    // The observer is a client of its own: what it was sent may reach it a
    // little after the call has returned (seen on a loaded machine), so
    // wait for the first.
    let topic_of = async |dialed: SocketAddr| {
        let Some(Peer::Dialed(reply)) = Peer::from_addr(dialed) else {
            panic!("not a dialed address");
        };
        let topics = || {
            let mut topics: Vec<String> = observer
                .seen()
                .iter()
                .filter(|(_, p)| tether_relay::decode(p).is_ok_and(|e| e.reply == Some(reply)))
                .map(|(t, _)| t.clone())
                .collect();
            topics.dedup();
            topics
        };
        let give_up = tokio::time::Instant::now() + Duration::from_secs(10);
        while topics().is_empty() && tokio::time::Instant::now() < give_up {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let topics = topics();
        assert_eq!(topics.len(), 1, "{topics:?}");
        topics[0].clone()
    };

    // This window.
    let (p0, c0) = phone_on(&broker, &a.phone, SessionConfig::default()).await;
    let d0 = p0.dial(&a.relay_key).await.unwrap();
    c0.connect(d0)
        .await
        .unwrap()
        .call(ping(b"0"))
        .await
        .unwrap();
    let t0 = topic_of(d0).await;

    // A phone whose clock is one window ahead still reaches the car, at
    // another topic.
    let (p1, c1) = phone_on(&broker, &a.phone, SessionConfig::default()).await;
    p1.shift_clock(ROTATION_S as i64).await.unwrap();
    let d1 = p1.dial(&a.relay_key).await.unwrap();
    c1.connect(d1)
        .await
        .unwrap()
        .call(ping(b"1"))
        .await
        .unwrap();
    let t1 = topic_of(d1).await;
    assert_ne!(t0, t1);

    // Two windows ahead: the car does not listen there.
    let short = SessionConfig {
        handshake_timeout: Duration::from_secs(1),
        ..SessionConfig::default()
    };
    let (p2, c2) = phone_on(&broker, &a.phone, short).await;
    p2.shift_clock(2 * ROTATION_S as i64).await.unwrap();
    let addr = p2.dial(&a.relay_key).await.unwrap();
    assert!(c2.connect(addr).await.is_err());
    assert_eq!(car.stats.get().authenticated, 2);

    // Once the car's clock moves on two windows, it follows: the oldest
    // topic is dropped, the new one answered.
    car_socket.shift_clock(2 * ROTATION_S as i64).await.unwrap();
    let car_topics = car_socket.topics();
    assert!(!car_topics.contains(&t0), "the old window is unsubscribed");
    assert!(car_topics.contains(&t1));
    let d2 = p2.dial(&a.relay_key).await.unwrap();
    c2.connect(d2)
        .await
        .unwrap()
        .call(ping(b"2"))
        .await
        .unwrap();
    let t2 = topic_of(d2).await;
    assert!(car_topics.contains(&t2));
    assert!(t0 != t2 && t1 != t2);
    assert_eq!(car.stats.get().authenticated, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_is_survived_the_session_goes_on_and_the_car_resubscribes() {
    let mut broker = Mosquitto::start();
    let a = account();
    let (car_socket, car) = car_on(&broker, &a).await;
    let (phone_socket, connector) = phone_on(&broker, &a.phone, SessionConfig::default()).await;
    let session = connect(&phone_socket, &connector, &a.relay_key).await;
    session.call(ping(b"before")).await.unwrap();

    // The broker dies and comes back empty: no session, no subscription.
    broker.restart();
    until("both sockets to reconnect", || {
        car_socket.stats().connacks >= 2 && phone_socket.stats().connacks >= 2
    })
    .await;
    assert!(car_socket.stats().disconnects >= 1);
    // The QUIC session outlived the outage (QUIC retransmits what was lost).
    assert_eq!(
        pong_payload(&session.call(ping(b"after")).await.unwrap()),
        b"after"
    );
    // The car subscribed again: a new connection reaches it.
    let fresh = connect(&phone_socket, &connector, &a.relay_key).await;
    assert_eq!(
        pong_payload(&fresh.call(ping(b"new")).await.unwrap()),
        b"new"
    );
    assert_eq!(car.stats.get().authenticated, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_co_user_reaches_the_car_at_its_grants_own_rendezvous_r16() {
    use tether_identity::GrantKey;
    use tether_session::{GrantAccess, Grantee};

    let broker = Mosquitto::start();
    let mut owner = LocalAuthority::generate().unwrap();
    let car_credentials = member(&mut owner, Role::Vehicle);
    let owner_relay = car_credentials.group_key().unwrap().relay_key();
    let mut co_user = LocalAuthority::generate().unwrap();
    let co_phone = member(&mut co_user, Role::Phone);
    let grant_key = GrantKey::generate().unwrap();
    let grant_relay = grant_key.relay_key();

    // The car answers at its own rendezvous and at the grant's.
    let car_socket = RelaySocket::connect(relay_config(&broker)).await.unwrap();
    car_socket
        .listen(&[owner_relay, grant_relay])
        .await
        .unwrap();
    let listener = Listener::bind_socket(
        car_socket.clone(),
        car_credentials.clone(),
        SessionConfig::default(),
    )
    .unwrap();
    listener.grantees().insert(Grantee {
        grant_id: [0x5a; 16],
        admission_key: grant_key.admission_key(),
        authority_public_key: co_user.public_key(),
        not_before: 0,
        not_after: u64::MAX,
    });
    let car = serve(listener);
    assert_eq!(car_socket.topics().len(), 6, "3 windows for each key");

    // The grant's topics are not the owner's.
    let prefix = TopicPrefix::default();
    let owners: Vec<String> = tether_relay::Rendezvous::new(&owner_relay)
        .listen_ids(now())
        .iter()
        .map(|id| id.topic(&prefix))
        .collect();
    let grants = tether_relay::Rendezvous::new(&grant_relay)
        .send_id(now())
        .topic(&prefix);
    assert!(!owners.contains(&grants));
    assert!(car_socket.topics().contains(&grants));

    // The co-user, who holds the grant key but not the owner's group key,
    // runs the grant handshake (SPEC §17.3) through the grant's rendezvous.
    let access = GrantAccess {
        admission_key: grant_key.admission_key(),
        owner_authority_public_key: owner.public_key(),
        expect_device: false,
    };
    let short = SessionConfig {
        handshake_timeout: Duration::from_secs(1),
        ..SessionConfig::default()
    };
    let (co_socket, co_connector) = phone_on(&broker, &co_phone, short).await;
    let at_grant = co_socket.dial(&grant_relay).await.unwrap();
    let session = co_connector
        .connect_with_grant(at_grant, &access)
        .await
        .unwrap();
    assert_eq!(session.peer().certificate.role, Role::Vehicle);
    assert_eq!(
        pong_payload(&session.call(ping(b"co")).await.unwrap()),
        b"co"
    );

    // Once the car stops answering at the grant's rendezvous (revoked),
    // the co-user reaches nothing there.
    car_socket.listen(&[owner_relay]).await.unwrap();
    assert!(!car_socket.topics().contains(&grants));
    let again = co_socket.dial(&grant_relay).await.unwrap();
    assert!(
        co_connector
            .connect_with_grant(again, &access)
            .await
            .is_err()
    );
    assert_eq!(car.stats.get().authenticated, 1);
}
