//! Handshake version 2 over real loopback QUIC, seen from raw peers (R2,
//! R3; SPEC §5.1-5.3, §5.7): what a stranger, a replayer and a version 1
//! peer get from a responder that admits by the hints in the ALPN list.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

mod common;
use common::{member, now};

use std::net::SocketAddr;
use std::sync::Arc;

use tether_identity::{Credentials, LocalAuthority, Role};
use tether_session::handshake::{
    ClientHandshake, EXPORTER_LABEL, EXPORTER_LEN, GrantAccess, HandshakeConfig, HandshakeError,
    Hint, HintEntropy, SEALED_SERVER_AUTH_LEN,
};
use tether_session::quic::{Connector, Listener, SERVER_NAME, SessionConfig, StatsHandle};

const LOOPBACK: &str = "127.0.0.1:0";

/// The bytes of the responder's uni stream as they arrive: the 4-byte
/// frame length, then the sealed `ServerAuth`.
const ANSWER_ON_THE_WIRE: usize = 4 + SEALED_SERVER_AUTH_LEN;

struct World {
    car: Arc<Credentials>,
    phone: Arc<Credentials>,
    stranger: Arc<Credentials>,
}

fn world() -> World {
    let mut mine = LocalAuthority::generate().unwrap();
    let mut other = LocalAuthority::generate().unwrap();
    World {
        car: member(&mut mine, Role::Vehicle),
        phone: member(&mut mine, Role::Phone),
        stranger: member(&mut other, Role::Phone),
    }
}

/// The car's listener; sessions that authenticate are kept open.
fn car(car: &Arc<Credentials>) -> (SocketAddr, StatsHandle) {
    let mut listener = Listener::bind(
        LOOPBACK.parse().unwrap(),
        car.clone(),
        SessionConfig::default(),
    )
    .unwrap();
    let addr = listener.local_addr().unwrap();
    let stats = listener.stats_handle();
    tokio::spawn(async move {
        let mut sessions = Vec::new();
        while let Some(session) = listener.accept().await {
            sessions.push(session);
        }
    });
    (addr, stats)
}

fn connector(who: &Arc<Credentials>) -> Connector {
    Connector::new(
        LOOPBACK.parse().unwrap(),
        who.clone(),
        SessionConfig::default(),
    )
    .unwrap()
}

fn random<const N: usize>() -> [u8; N] {
    let mut out = [0; N];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut out).unwrap();
    out
}

/// A member's initiator core (fresh hints).
fn member_core(who: &Arc<Credentials>, entropy: HintEntropy) -> ClientHandshake {
    ClientHandshake::new(who.clone(), entropy, &HandshakeConfig::default()).unwrap()
}

/// What a raw connection offering exactly `hints` learns: everything the
/// responder sent on its uni stream, the TLS certificate pin and the
/// exporter, and the connection (kept open).
struct Answer {
    wire: Vec<u8>,
    pin: [u8; 32],
    exporter: [u8; EXPORTER_LEN],
    _conn: quinn::Connection,
}

impl Answer {
    /// The sealed `ServerAuth`, from its frame.
    fn sealed(&self) -> &[u8] {
        assert!(self.wire.len() >= 4, "no frame header: {:?}", self.wire);
        let len = u32::from_be_bytes(self.wire[..4].try_into().unwrap()) as usize;
        assert_eq!(len, self.wire.len() - 4, "one frame, nothing after it");
        &self.wire[4..]
    }
}

async fn answer_to(from: &Connector, addr: SocketAddr, hints: &[Hint]) -> Answer {
    let conn = from.connect_offering(addr, hints).await.unwrap();
    let pin = tether_session::quic::peer_certificate_pin(&conn).unwrap();
    let mut exporter = [0; EXPORTER_LEN];
    conn.export_keying_material(&mut exporter, EXPORTER_LABEL, b"")
        .unwrap();
    let mut uni = conn.accept_uni().await.unwrap();
    // The responder finishes the stream after its answer.
    let wire = uni.read_to_end(64 * 1024).await.unwrap();
    Answer {
        wire,
        pin,
        exporter,
        _conn: conn,
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Nothing that names the car: its certificate (body, signature) or its
/// device public key.
fn assert_names_nothing_of(bytes: &[u8], car: &Credentials) {
    let cert = car.certificate_message();
    assert!(!contains(bytes, &cert.body), "R3: certificate body leaked");
    assert!(
        !contains(bytes, &cert.signature),
        "R3: certificate signature leaked"
    );
    assert!(
        !contains(bytes, &car.key().public_key()),
        "R3: device public key leaked"
    );
}

#[tokio::test]
async fn r3_a_stranger_with_random_hints_gets_only_a_look_alike_without_the_certificate() {
    let w = world();
    let (addr, stats) = car(&w.car);
    let stranger = connector(&w.stranger);

    // Random hints: 48 bytes each, under no key at all.
    let answer = answer_to(&stranger, addr, &[random(), random()]).await;
    assert_eq!(answer.wire.len(), ANSWER_ON_THE_WIRE);
    assert_eq!(answer.sealed().len(), SEALED_SERVER_AUTH_LEN);
    assert_names_nothing_of(&answer.wire, &w.car);
    // It opens under no key a member holds either (the member's own hints
    // were not offered, so nothing was sealed for them).
    let mut phone = member_core(&w.phone, random());
    assert_eq!(
        phone.handle_server_auth(answer.sealed(), &answer.pin, &answer.exporter, now()),
        Err(HandshakeError::NotAMember)
    );

    // Hints under a key the stranger holds (its own account's membership
    // key, and a grant key the car does not admit): they name nothing the
    // car knows, and the answer does not open under them.
    for mut core in [
        member_core(&w.stranger, random()),
        ClientHandshake::with_grant(
            w.stranger.clone(),
            &GrantAccess {
                admission_key: random(),
                owner_authority_public_key: *w.car.authority_public_key(),
                expect_device: false,
            },
            random(),
            &HandshakeConfig::default(),
        ),
    ] {
        let answer = answer_to(&stranger, addr, core.hints()).await;
        assert_eq!(answer.wire.len(), ANSWER_ON_THE_WIRE);
        assert_names_nothing_of(&answer.wire, &w.car);
        assert_eq!(
            core.handle_server_auth(answer.sealed(), &answer.pin, &answer.exporter, now()),
            Err(HandshakeError::NotAMember)
        );
    }

    // No hints at all (a plain QUIC client): the same look-alike.
    let answer = answer_to(&stranger, addr, &[]).await;
    assert_eq!(answer.wire.len(), ANSWER_ON_THE_WIRE);
    assert_names_nothing_of(&answer.wire, &w.car);
    assert_eq!(stats.get().authenticated, 0);
}

#[tokio::test]
async fn r3_a_replayed_member_hint_gets_only_a_look_alike() {
    let w = world();
    let (addr, _stats) = car(&w.car);
    // Anyone on the path may copy a member's ClientHello: here the hints
    // are offered by a raw client of another account.
    let replayer = connector(&w.stranger);
    let entropy: HintEntropy = random();
    let mut first_core = member_core(&w.phone, entropy);
    let hints = *first_core.hints();

    let first = answer_to(&replayer, addr, &hints).await;
    first_core
        .handle_server_auth(first.sealed(), &first.pin, &first.exporter, now())
        .expect("the first use of a member's hints is answered for the member");

    // The same hints again, on a new connection: the listener has seen
    // them, so it answers as to a stranger. The member's key (in a core
    // with the very same hints) does not open that answer.
    let second = answer_to(&replayer, addr, &hints).await;
    assert_eq!(second.wire.len(), first.wire.len());
    assert_eq!(second.wire.len(), ANSWER_ON_THE_WIRE);
    assert_names_nothing_of(&second.wire, &w.car);
    let mut same_hints = member_core(&w.phone, entropy);
    assert_eq!(same_hints.hints(), &hints);
    assert_eq!(
        same_hints.handle_server_auth(second.sealed(), &second.pin, &second.exporter, now()),
        Err(HandshakeError::NotAMember)
    );
    // Either hint alone replayed: the same.
    for (i, hint) in hints.iter().enumerate() {
        let alone = answer_to(&replayer, addr, &[*hint, random()]).await;
        assert_eq!(alone.wire.len(), ANSWER_ON_THE_WIRE);
        assert_names_nothing_of(&alone.wire, &w.car);
        let mut core = member_core(&w.phone, entropy);
        assert!(
            core.handle_server_auth(alone.sealed(), &alone.pin, &alone.exporter, now())
                .is_err(),
            "hint {i} replayed alone opened"
        );
    }

    // The member itself, with fresh hints, still gets in.
    let session = connector(&w.phone).connect(addr).await.unwrap();
    assert_eq!(session.peer().certificate.role, Role::Vehicle);
}

/// SPEC §5.8: the responder's TLS ticket (for early data) goes only to a
/// connection whose hint it recognised: a stranger, or a replayer of a
/// member's hint, gets none, so a flood of them neither fills the
/// responder's ticket store nor evicts the members' tickets (R31).
#[tokio::test]
async fn r31_only_a_recognised_hint_earns_a_tls_ticket() {
    let w = world();
    let (addr, _) = car(&w.car);
    let phone = connector(&w.phone);
    let wait = std::time::Duration::from_millis(500);
    let hints = *member_core(&w.phone, random()).hints();
    assert!(
        phone.tls_ticket_offered(addr, &hints, wait).await.unwrap(),
        "a member's connection gets its ticket"
    );
    // The same hints again: a replay, answered like a stranger's.
    assert!(!phone.tls_ticket_offered(addr, &hints, wait).await.unwrap());
    let stranger = connector(&w.stranger);
    let strangers = *member_core(&w.stranger, random()).hints();
    assert!(
        !stranger
            .tls_ticket_offered(addr, &strangers, wait)
            .await
            .unwrap()
    );
    let noise: Vec<Hint> = (0..2).map(|_| random()).collect();
    assert!(
        !stranger
            .tls_ticket_offered(addr, &noise, wait)
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn r3_the_answers_to_a_member_and_to_a_stranger_have_the_same_length() {
    let w = world();
    let (addr, _stats) = car(&w.car);
    let mut phone_core = member_core(&w.phone, random());
    let mut stranger_core = member_core(&w.stranger, random());
    let to_member = answer_to(&connector(&w.phone), addr, phone_core.hints()).await;
    let to_stranger = answer_to(&connector(&w.stranger), addr, stranger_core.hints()).await;
    assert_eq!(to_member.wire.len(), to_stranger.wire.len());
    assert_eq!(to_member.wire.len(), ANSWER_ON_THE_WIRE);
    // Same length, different fates: only the member's opens, and only for
    // the member.
    phone_core
        .handle_server_auth(
            to_member.sealed(),
            &to_member.pin,
            &to_member.exporter,
            now(),
        )
        .unwrap();
    assert_eq!(
        stranger_core.handle_server_auth(
            to_stranger.sealed(),
            &to_stranger.pin,
            &to_stranger.exporter,
            now()
        ),
        Err(HandshakeError::NotAMember)
    );
    // Even the member's answer names nothing of the car in the clear.
    assert_names_nothing_of(&to_member.wire, &w.car);
}

// ------------------------------------------------ a version 1 peer

/// A raw QUIC client offering exactly `alpn`, with the driver's own TLS
/// settings otherwise.
fn raw_client(alpn: Vec<Vec<u8>>) -> quinn::ClientConfig {
    tether_session::quic::raw_config::client_offering(&SessionConfig::default(), alpn).unwrap()
}

#[tokio::test]
async fn r2_a_version_1_peer_is_refused_at_the_tls_level() {
    let w = world();
    let (addr, stats) = car(&w.car);
    let endpoint = quinn::Endpoint::client(LOOPBACK.parse().unwrap()).unwrap();
    let member_hints = *member_core(&w.phone, random()).hints();
    for alpn in [
        // A version 1 peer.
        vec![b"tether/1".to_vec()],
        // ... even with a member's valid hints after its protocol id.
        std::iter::once(b"tether/1".to_vec())
            .chain(member_hints.iter().map(|h| h.to_vec()))
            .collect(),
        // Hints without any protocol id.
        member_hints.iter().map(|h| h.to_vec()).collect(),
    ] {
        let result = endpoint
            .connect_with(raw_client(alpn.clone()), addr, SERVER_NAME)
            .unwrap()
            .await;
        // TLS fails (no_application_protocol): no connection, so no stream
        // was ever opened and nothing of the car was sent.
        let Err(error) = result else {
            panic!("a connection offering {alpn:?} was accepted");
        };
        // TLS alert 120, no_application_protocol (RFC 7301 §3.2).
        let no_application_protocol = quinn::TransportErrorCode::crypto(120);
        assert!(
            matches!(error, quinn::ConnectionError::ConnectionClosed(ref c)
                if c.error_code == no_application_protocol),
            "not a TLS refusal: {error:?}"
        );
    }
    assert_eq!(stats.get().authenticated, 0);
    // A version 2 peer offering `tether/2` (and the hints) gets in.
    let session = connector(&w.phone).connect(addr).await.unwrap();
    assert_eq!(session.peer().certificate.role, Role::Vehicle);
}
