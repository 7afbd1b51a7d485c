//! Two handshake cores driven against each other in memory (no sockets,
//! fake time, fixed randomness).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

use std::sync::Arc;
use tether_identity::{
    AccountAuthority, CertificateError, Credentials, DeviceKey, LocalAuthority, Role,
};
use tether_session::handshake::*;

const NOW: u64 = 1_800_000_000;

fn enroll(authority: &mut LocalAuthority, role: Role) -> Arc<Credentials> {
    let key = DeviceKey::generate().unwrap();
    let grant = authority
        .enroll(&key.enrollment_request(role, [3; 16]), NOW)
        .unwrap();
    Arc::new(Credentials::from_grant(key, &grant, NOW).unwrap())
}

struct Account {
    authority: LocalAuthority,
}

impl Account {
    fn new() -> Self {
        Self {
            authority: LocalAuthority::generate().unwrap(),
        }
    }
    fn member(&mut self, role: Role) -> Arc<Credentials> {
        enroll(&mut self.authority, role)
    }

    /// A member whose certificate expired 10 s before `NOW`.
    fn expired_member(&mut self, role: Role) -> Arc<Credentials> {
        let key = DeviceKey::generate().unwrap();
        let grant = self
            .authority
            .issue(&key.enrollment_request(role, [5; 16]), NOW - 100, NOW - 10)
            .unwrap();
        Arc::new(
            Credentials::restore(
                key,
                grant.certificate.clone().unwrap(),
                &grant.authority_public_key,
                Some(&grant.group_key),
            )
            .unwrap(),
        )
    }
}

/// Everything each side saw and emitted.
#[derive(Default, Debug)]
struct Log {
    /// What reached the initiator: the sealed `ServerAuth` first (on a full
    /// handshake), then the frames of stream 0.
    client_received: Vec<Vec<u8>>,
    server_received: Vec<Vec<u8>>,
    client_peer: Option<PeerIdentity>,
    server_peer: Option<PeerIdentity>,
    ticket: Option<ResumptionTicket>,
    client_error: Option<HandshakeError>,
    server_error: Option<HandshakeError>,
}

/// One leg of the exchange, for tampering in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leg {
    /// The initiator's hints (both, concatenated), in its TLS ClientHello.
    Hints,
    /// The n-th frame from the initiator on stream 0.
    ToServer(usize),
    /// The n-th message to the initiator: 0 is the sealed `ServerAuth`.
    ToClient(usize),
}

/// What each side learns from TLS: the hash of the responder's TLS
/// certificate and the exporter. Different values on the two sides stand
/// for a relay joining two connections.
#[derive(Debug, Clone, Copy)]
struct Link {
    client_pin: TlsPin,
    server_pin: TlsPin,
    client_exporter: Exporter,
    server_exporter: Exporter,
}

const PIN: TlsPin = [0x70; 32];
const EXPORTER: Exporter = [1; 32];
const ANSWER_ENTROPY: [u8; ANSWER_ENTROPY_LEN] = [0x44; ANSWER_ENTROPY_LEN];

impl Link {
    /// One connection, no relay.
    fn direct() -> Self {
        Self {
            client_pin: PIN,
            server_pin: PIN,
            client_exporter: EXPORTER,
            server_exporter: EXPORTER,
        }
    }
}

/// A full handshake over one connection: [`drive_on`] with [`Link::direct`].
fn drive(
    client: &mut ClientHandshake,
    server: &mut ServerHandshake,
    now: u64,
    tamper: impl FnMut(Leg, &mut Vec<u8>),
) -> Log {
    drive_on(client, server, now, Link::direct(), tamper)
}

/// Drives a full handshake: the initiator's hints to
/// [`ServerHandshake::answer_hints`], both exporters set, the sealed
/// `ServerAuth` to [`ClientHandshake::handle_server_auth`], then frames
/// until neither core has output. `tamper` may rewrite anything in flight.
fn drive_on(
    client: &mut ClientHandshake,
    server: &mut ServerHandshake,
    now: u64,
    link: Link,
    mut tamper: impl FnMut(Leg, &mut Vec<u8>),
) -> Log {
    let mut log = Log::default();
    let mut offered = client.hints().concat();
    tamper(Leg::Hints, &mut offered);
    let hints = split_hints(&offered);
    match server.answer_hints(&hints, &link.server_pin, &ANSWER_ENTROPY, now) {
        Ok(mut sealed) => {
            assert_eq!(sealed.len(), SEALED_SERVER_AUTH_LEN, "every answer");
            server.set_exporter(link.server_exporter);
            tamper(Leg::ToClient(0), &mut sealed);
            log.client_received.push(sealed.clone());
            if let Err(e) =
                client.handle_server_auth(&sealed, &link.client_pin, &link.client_exporter, now)
            {
                log.client_error.get_or_insert(e);
            }
        }
        Err(e) => {
            log.server_error.get_or_insert(e);
        }
    }
    exchange(client, server, now, &mut log, 1, tamper);
    log
}

/// Drives a resumption: the responder answers the (meaningless) hints of
/// the resuming initiator as the driver does, learns its exporter, then
/// takes the `ResumeHello`. The initiator never reads the sealed answer.
fn drive_resumed(
    client: &mut ClientHandshake,
    server: &mut ServerHandshake,
    now: u64,
    server_exporter: Exporter,
) -> Log {
    let mut log = Log::default();
    let hints = *client.hints();
    server
        .answer_hints(&hints, &PIN, &ANSWER_ENTROPY, now)
        .unwrap();
    server.set_exporter(server_exporter);
    exchange(client, server, now, &mut log, 0, no_tamper);
    log
}

fn split_hints(bytes: &[u8]) -> [Hint; HINTS] {
    let mut hints = [[0; HINT_LEN]; HINTS];
    for (hint, chunk) in hints.iter_mut().zip(bytes.chunks(HINT_LEN)) {
        hint[..chunk.len()].copy_from_slice(chunk);
    }
    hints
}

/// Moves frames between the cores until neither has output.
fn exchange(
    client: &mut ClientHandshake,
    server: &mut ServerHandshake,
    now: u64,
    log: &mut Log,
    mut s2c: usize,
    mut tamper: impl FnMut(Leg, &mut Vec<u8>),
) {
    let mut c2s = 0;
    loop {
        let mut progressed = false;
        loop {
            match client.poll_output() {
                Output::Transmit(mut bytes) => {
                    tamper(Leg::ToServer(c2s), &mut bytes);
                    c2s += 1;
                    progressed = true;
                    log.server_received.push(bytes.clone());
                    if let Err(e) = server.handle_message(&bytes, now) {
                        log.server_error.get_or_insert(e);
                    }
                }
                Output::Event(Event::Authenticated(p)) => log.client_peer = Some(p),
                Output::Event(Event::Ticket(t)) => log.ticket = Some(t),
                Output::Pending => break,
            }
        }
        loop {
            match server.poll_output() {
                Output::Transmit(mut bytes) => {
                    tamper(Leg::ToClient(s2c), &mut bytes);
                    s2c += 1;
                    progressed = true;
                    log.client_received.push(bytes.clone());
                    if let Err(e) = client.handle_message(&bytes, now) {
                        log.client_error.get_or_insert(e);
                    }
                }
                Output::Event(Event::Authenticated(p)) => log.server_peer = Some(p),
                Output::Event(Event::Ticket(_)) => unreachable!("servers get no tickets"),
                Output::Pending => break,
            }
        }
        if !progressed {
            return;
        }
    }
}

fn no_tamper(_: Leg, _: &mut Vec<u8>) {}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// A member initiator (fixed hint randomness).
fn member_client(who: &Arc<Credentials>, cfg: &HandshakeConfig) -> ClientHandshake {
    ClientHandshake::new(who.clone(), [2; 32], cfg).unwrap()
}

/// A responder (fixed nonce).
fn responder(
    who: &Arc<Credentials>,
    tickets: &Arc<TicketKey>,
    cfg: &HandshakeConfig,
) -> ServerHandshake {
    ServerHandshake::new(who.clone(), tickets.clone(), [4; 32], cfg)
}

#[test]
fn members_of_one_account_authenticate_each_other() {
    let mut acct = Account::new();
    let car = acct.member(Role::Vehicle);
    let phone = acct.member(Role::Phone);
    let tickets = Arc::new(TicketKey::new([9; 32]));
    let cfg = HandshakeConfig::default();
    let mut client = member_client(&phone, &cfg);
    let mut server = responder(&car, &tickets, &cfg);
    let log = drive(&mut client, &mut server, NOW, no_tamper);
    assert_eq!(log.client_error, None);
    assert_eq!(log.server_error, None);
    assert_eq!(log.client_peer.unwrap().certificate.role, Role::Vehicle);
    let server_peer = log.server_peer.unwrap();
    assert_eq!(server_peer.certificate.public_key, phone.key().public_key());
    assert!(!server_peer.resumed);
    assert!(log.ticket.is_some());
    // The first hint is the one under the membership key.
    assert_eq!(server.proven(), Proven::Member);
    assert_eq!(server.matched_hint(), Some(&client.hints()[0]));
    // Cold: no handshake flight waited for beyond QUIC's (SPEC §5.6); the
    // ClientAuth went with the first requests.
    assert_eq!(client.flights_waited(), 0);
    assert_eq!(log.server_received.len(), 1, "only the ClientAuth");
    assert!(client.is_finished());
}

#[test]
fn r3_other_account_is_refused_and_learns_no_certificate() {
    let mut mine = Account::new();
    let mut other = Account::new();
    let car = mine.member(Role::Vehicle);
    let phone = mine.member(Role::Phone);
    let stranger = other.member(Role::Phone);
    let tickets = Arc::new(TicketKey::new([9; 32]));
    let cfg = HandshakeConfig::default();
    let mut client = member_client(&stranger, &cfg);
    let mut server = responder(&car, &tickets, &cfg);
    let log = drive(&mut client, &mut server, NOW, no_tamper);
    // The stranger cannot open the sealed ServerAuth, so it sends nothing.
    assert_eq!(log.client_error, Some(HandshakeError::NotAMember));
    assert_eq!(server.proven(), Proven::Nothing);
    assert_eq!(server.matched_hint(), None);
    assert!(log.server_received.is_empty());
    assert!(log.client_peer.is_none() && log.server_peer.is_none());
    let cert = car.certificate_message();
    let public_key = car.key().public_key();
    assert_eq!(log.client_received.len(), 1, "the sealed answer only");
    for frame in &log.client_received {
        assert!(
            !contains(frame, &cert.body),
            "certificate body leaked to a non-member"
        );
        assert!(
            !contains(frame, &cert.signature),
            "certificate signature leaked"
        );
        assert!(!contains(frame, &public_key), "device public key leaked");
        assert_eq!(frame.len(), SEALED_SERVER_AUTH_LEN);
    }
    // A member gets an answer of the very same length (R3: nothing tells
    // the two apart on the wire).
    let mut member = member_client(&phone, &cfg);
    let mut server = responder(&car, &tickets, &cfg);
    let ok = drive(&mut member, &mut server, NOW, no_tamper);
    assert!(ok.server_peer.is_some());
    assert_eq!(ok.client_received[0].len(), log.client_received[0].len());

    // A ClientAuth (here a member's, from elsewhere) after hints the
    // responder did not recognise is refused as a non-member's.
    let client_auth = ok.server_received[0].clone();
    let mut server = responder(&car, &tickets, &cfg);
    let sealed = server
        .answer_hints(client.hints(), &PIN, &ANSWER_ENTROPY, NOW)
        .unwrap();
    assert_eq!(sealed.len(), SEALED_SERVER_AUTH_LEN);
    server.set_exporter(EXPORTER);
    assert_eq!(
        server.handle_message(&client_auth, NOW),
        Err(HandshakeError::NotAMember)
    );
    let Output::Transmit(refusal) = server.poll_output() else {
        panic!("expected a refusal")
    };
    assert!(!contains(&refusal, &cert.body));
    assert!(refusal.len() < 16, "a refusal is a few bytes");
}

#[test]
fn tampered_messages_are_rejected_in_each_direction() {
    let mut acct = Account::new();
    let car = acct.member(Role::Vehicle);
    let phone = acct.member(Role::Phone);
    let tickets = Arc::new(TicketKey::new([9; 32]));
    let cfg = HandshakeConfig::default();
    // Flip the last byte of each message in turn: the second hint (the
    // first still admits, but both ends' transcripts cover the hints, so
    // the ClientAuth signature fails at the responder), the sealed
    // ServerAuth's tag, the ClientAuth's signature.
    for (leg, expect_client, expect_server) in [
        (
            Leg::Hints,
            Some(HandshakeError::Refused(
                tether_proto::v1::RefuseReason::NotAccepted,
            )),
            Some(HandshakeError::BadSignature),
        ),
        (Leg::ToClient(0), Some(HandshakeError::NotAMember), None),
        (
            Leg::ToServer(0),
            Some(HandshakeError::Refused(
                tether_proto::v1::RefuseReason::NotAccepted,
            )),
            Some(HandshakeError::BadSignature),
        ),
    ] {
        let mut client = member_client(&phone, &cfg);
        let mut server = responder(&car, &tickets, &cfg);
        let log = drive(&mut client, &mut server, NOW, |l, bytes| {
            if l == leg {
                let last = bytes.len() - 1;
                bytes[last] ^= 0x01;
            }
        });
        assert_eq!(
            log.client_error, expect_client,
            "tampering {leg:?}: {log:?}"
        );
        assert_eq!(
            log.server_error, expect_server,
            "tampering {leg:?}: {log:?}"
        );
        assert!(
            log.server_peer.is_none(),
            "server accepted a tampered handshake"
        );
    }
    // The first hint's random part changed: it matches no key, and the
    // second (a look-alike for a member with no previous key) neither.
    let mut client = member_client(&phone, &cfg);
    let mut server = responder(&car, &tickets, &cfg);
    let log = drive(&mut client, &mut server, NOW, |l, bytes| {
        if l == Leg::Hints {
            bytes[0] ^= 0x80;
        }
    });
    assert_eq!(log.client_error, Some(HandshakeError::NotAMember));
    assert_eq!(server.proven(), Proven::Nothing);
}

#[test]
fn server_auth_or_client_auth_relayed_into_another_connection_fails() {
    let mut acct = Account::new();
    let car = acct.member(Role::Vehicle);
    let phone = acct.member(Role::Phone);
    let tickets = Arc::new(TicketKey::new([9; 32]));
    let cfg = HandshakeConfig::default();
    // The phone talks to a relay on connection A (TLS certificate pin 0x71)
    // while the relay forwards the hints into its own connection B with the
    // car (pin 0x70): the car's ServerAuth signs pin B, the phone checks
    // pin A.
    let relayed_pin = Link {
        client_pin: [0x71; 32],
        ..Link::direct()
    };
    let mut client = member_client(&phone, &cfg);
    let mut server = responder(&car, &tickets, &cfg);
    let log = drive_on(&mut client, &mut server, NOW, relayed_pin, no_tamper);
    assert_eq!(log.client_error, Some(HandshakeError::BadSignature));
    assert!(log.server_received.is_empty(), "no ClientAuth follows");
    assert!(log.client_peer.is_none() && log.server_peer.is_none());

    // The same pin, but the ClientAuth is bound to exporter A (1) and
    // arrives on connection B (exporter 7).
    let relayed_exporter = Link {
        server_exporter: [7; 32],
        ..Link::direct()
    };
    let mut client = member_client(&phone, &cfg);
    let mut server = responder(&car, &tickets, &cfg);
    let log = drive_on(&mut client, &mut server, NOW, relayed_exporter, no_tamper);
    assert_eq!(log.server_error, Some(HandshakeError::BadSignature));
    assert!(log.server_peer.is_none());
    assert!(
        !log.client_received[1..]
            .iter()
            .any(|f| contains(f, &car.certificate_message().body))
    );
}

/// A peer met before skips only its certificate's signature check (SPEC
/// §5.4): expiry and the transcript signatures are checked every time.
#[test]
fn r3_a_known_peer_is_still_checked_for_expiry_and_its_signature() {
    let mut acct = Account::new();
    let car = acct.member(Role::Vehicle);
    let phone = acct.member(Role::Phone);
    let tickets = Arc::new(TicketKey::new([9; 32]));
    let cfg = HandshakeConfig::default();
    let handshake = |now: u64, link: Link| {
        let mut client = member_client(&phone, &cfg);
        let mut server = responder(&car, &tickets, &cfg);
        drive_on(&mut client, &mut server, now, link, no_tamper)
    };
    let log = handshake(NOW, Link::direct());
    assert!(log.client_peer.is_some() && log.server_peer.is_some());
    // The phone remembers the car's certificate and its TLS binding
    // signature (SPEC §5.3); the car, the phone's certificate.
    assert_eq!(phone.peer_certificates().len(), 2);
    assert_eq!(car.peer_certificates().len(), 1);

    // Again, from the caches: the same peers.
    let again = handshake(NOW + 60, Link::direct());
    assert_eq!(again.client_peer.unwrap(), log.client_peer.unwrap());
    assert_eq!(again.server_peer.unwrap(), log.server_peer.unwrap());

    // Known, but expired by now.
    let late = NOW + tether_identity::CERTIFICATE_VALIDITY_S + 1;
    let expired = handshake(late, Link::direct());
    assert_eq!(
        expired.client_error,
        Some(HandshakeError::Certificate(CertificateError::Expired))
    );
    assert!(expired.server_peer.is_none());

    // Known, but the ServerAuth signature does not cover this connection
    // (signed for another TLS certificate).
    let forged = handshake(
        NOW,
        Link {
            client_pin: [0x72; 32],
            ..Link::direct()
        },
    );
    assert_eq!(forged.client_error, Some(HandshakeError::BadSignature));
    assert!(forged.client_peer.is_none() && forged.server_peer.is_none());

    // Known, but the ClientAuth signature does not cover this connection.
    let forged = handshake(
        NOW,
        Link {
            server_exporter: [0x73; 32],
            ..Link::direct()
        },
    );
    assert_eq!(forged.server_error, Some(HandshakeError::BadSignature));
    assert!(forged.server_peer.is_none());
}

/// SPEC §5.3: once the seal has opened (the responder holds the key), the
/// initiator's `ClientAuth` may leave before the responder's signatures
/// are checked, but no peer is reported, and nothing else goes, until they
/// verify; and a failed check in the one-call form queues nothing.
#[test]
fn r2_the_client_auth_leaves_before_the_responders_signatures_but_nothing_after_them() {
    let mut acct = Account::new();
    let car = acct.member(Role::Vehicle);
    let phone = acct.member(Role::Phone);
    let tickets = Arc::new(TicketKey::new([9; 32]));
    let cfg = HandshakeConfig::default();
    let answer = |client: &ClientHandshake| {
        let mut server = responder(&car, &tickets, &cfg);
        let sealed = server
            .answer_hints(client.hints(), &PIN, &ANSWER_ENTROPY, NOW)
            .unwrap();
        server.set_exporter(EXPORTER);
        (server, sealed)
    };

    // Split: the ClientAuth is queued, no peer yet.
    let mut client = member_client(&phone, &cfg);
    let (mut server, sealed) = answer(&client);
    client
        .open_server_auth(&sealed, &PIN, &EXPORTER, NOW)
        .unwrap();
    assert!(client.awaits_verification());
    let Output::Transmit(client_auth) = client.poll_output() else {
        panic!("the ClientAuth is queued first");
    };
    assert!(matches!(client.poll_output(), Output::Pending));
    // An Accept cannot be taken before the responder is verified.
    server.handle_message(&client_auth, NOW).unwrap();
    let Output::Transmit(accept) = server.poll_output() else {
        panic!("the responder accepts the ClientAuth");
    };
    let mut early = member_client(&phone, &cfg);
    let (_, early_sealed) = answer(&early);
    early
        .open_server_auth(&early_sealed, &PIN, &EXPORTER, NOW)
        .unwrap();
    assert!(matches!(
        early.handle_message(&accept, NOW),
        Err(HandshakeError::UnexpectedMessage { .. })
    ));
    // Verified: the peer, then the Accept as usual.
    client.verify_responder(NOW).unwrap();
    assert!(!client.awaits_verification());
    let Output::Event(Event::Authenticated(peer)) = client.poll_output() else {
        panic!("the peer is reported once verified");
    };
    assert_eq!(peer.certificate.role, Role::Vehicle);
    client.handle_message(&accept, NOW).unwrap();

    // A binding for another TLS certificate: the seal opens (the key is
    // held), the ClientAuth is queued, the check fails, no peer.
    let mut client = member_client(&phone, &cfg);
    let (_, sealed) = answer(&client);
    client
        .open_server_auth(&sealed, &[0x72; 32], &EXPORTER, NOW)
        .unwrap();
    assert!(matches!(client.poll_output(), Output::Transmit(_)));
    assert_eq!(
        client.verify_responder(NOW),
        Err(HandshakeError::BadSignature)
    );
    assert!(matches!(client.poll_output(), Output::Pending));
    assert!(client.is_finished());

    // The one-call form with the same failure queues nothing at all.
    let mut client = member_client(&phone, &cfg);
    let (_, sealed) = answer(&client);
    assert_eq!(
        client.handle_server_auth(&sealed, &[0x72; 32], &EXPORTER, NOW),
        Err(HandshakeError::BadSignature)
    );
    assert!(matches!(client.poll_output(), Output::Pending));

    // A sealed answer under no key we hold opens nothing and queues nothing.
    let mut client = member_client(&phone, &cfg);
    assert_eq!(
        client.open_server_auth(&[0; SEALED_SERVER_AUTH_LEN], &PIN, &EXPORTER, NOW),
        Err(HandshakeError::NotAMember)
    );
    assert!(matches!(client.poll_output(), Output::Pending));
    assert_eq!(client.verify_responder(NOW), Err(HandshakeError::Finished));
}

#[test]
fn expired_client_certificate_is_refused() {
    let mut acct = Account::new();
    let car = acct.member(Role::Vehicle);
    let expired = acct.expired_member(Role::Phone);
    let tickets = Arc::new(TicketKey::new([9; 32]));
    let cfg = HandshakeConfig::default();
    let mut client = member_client(&expired, &cfg);
    let mut server = responder(&car, &tickets, &cfg);
    let log = drive(&mut client, &mut server, NOW, no_tamper);
    assert_eq!(
        log.server_error,
        Some(HandshakeError::Certificate(CertificateError::Expired))
    );
    assert!(log.server_peer.is_none());
}

#[test]
fn expired_server_certificate_is_rejected_by_the_client() {
    let mut acct = Account::new();
    let phone = acct.member(Role::Phone);
    let car = acct.expired_member(Role::Vehicle);
    let tickets = Arc::new(TicketKey::new([9; 32]));
    let cfg = HandshakeConfig::default();
    let mut client = member_client(&phone, &cfg);
    let mut server = responder(&car, &tickets, &cfg);
    let log = drive(&mut client, &mut server, NOW, no_tamper);
    assert_eq!(
        log.client_error,
        Some(HandshakeError::Certificate(CertificateError::Expired))
    );
    assert!(log.client_peer.is_none());
}

#[test]
fn a_responder_version_outside_the_initiators_range_is_a_downgrade() {
    let mut acct = Account::new();
    let car = acct.member(Role::Vehicle);
    let phone = acct.member(Role::Phone);
    let tickets = Arc::new(TicketKey::new([9; 32]));
    // The client accepts only 2; a responder (old, or made to downgrade)
    // answers 1. The version is inside the sealed, signed ServerAuth, so
    // only the responder itself can pick it.
    let cfg = HandshakeConfig::default();
    let old = HandshakeConfig {
        min_version: 1,
        max_version: 1,
        ..HandshakeConfig::default()
    };
    let mut client = member_client(&phone, &cfg);
    let mut server = responder(&car, &tickets, &old);
    let log = drive(&mut client, &mut server, NOW, no_tamper);
    assert_eq!(
        log.client_error,
        Some(HandshakeError::VersionMismatch {
            min: 2,
            max: 2,
            got: 1
        })
    );
    assert!(log.server_received.is_empty(), "no ClientAuth follows");
    assert!(log.client_peer.is_none() && log.server_peer.is_none());

    // Tampering with the sealed answer in flight (to change its version or
    // anything else) is caught by the seal.
    let mut client = member_client(&phone, &cfg);
    let mut server = responder(&car, &tickets, &cfg);
    let log = drive(&mut client, &mut server, NOW, |leg, bytes| {
        if leg == Leg::ToClient(0) {
            bytes[SEAL_NONCE_LEN + 3] ^= 0x02;
        }
    });
    assert_eq!(log.client_error, Some(HandshakeError::NotAMember));

    // A client offering 1..=2 and a responder at 2 agree on 2.
    let wide = HandshakeConfig {
        min_version: 1,
        max_version: 2,
        ..HandshakeConfig::default()
    };
    let mut client = member_client(&phone, &wide);
    let mut server = responder(&car, &tickets, &cfg);
    let log = drive(&mut client, &mut server, NOW, no_tamper);
    assert_eq!(log.client_peer.unwrap().version, 2);
    assert_eq!(log.server_peer.unwrap().version, 2);
}

#[test]
fn no_common_version_is_a_version_mismatch() {
    let mut acct = Account::new();
    let car = acct.member(Role::Vehicle);
    let phone = acct.member(Role::Phone);
    let tickets = Arc::new(TicketKey::new([9; 32]));
    let client_cfg = HandshakeConfig {
        min_version: 1,
        max_version: 1,
        ..Default::default()
    };
    let server_cfg = HandshakeConfig {
        min_version: 2,
        max_version: 3,
        ..Default::default()
    };
    let mut client = member_client(&phone, &client_cfg);
    let mut server = responder(&car, &tickets, &server_cfg);
    let log = drive(&mut client, &mut server, NOW, no_tamper);
    assert_eq!(
        log.client_error,
        Some(HandshakeError::VersionMismatch {
            min: 1,
            max: 1,
            got: 3
        })
    );
    assert!(log.client_peer.is_none() && log.server_peer.is_none());
}

#[test]
fn garbage_and_out_of_order_messages_are_typed_errors() {
    let mut acct = Account::new();
    let car = acct.member(Role::Vehicle);
    let phone = acct.member(Role::Phone);
    let tickets = Arc::new(TicketKey::new([9; 32]));
    let cfg = HandshakeConfig::default();
    for junk in [&b""[..], &[0xff; 8], &[0x0a, 0xff, 0xff], &[0; 4096]] {
        // Before the hints, and after them.
        let mut server = responder(&car, &tickets, &cfg);
        assert!(server.handle_message(junk, NOW).is_err());
        let mut server = responder(&car, &tickets, &cfg);
        server
            .answer_hints(&[[0; HINT_LEN]; HINTS], &PIN, &ANSWER_ENTROPY, NOW)
            .unwrap();
        server.set_exporter(EXPORTER);
        assert!(server.handle_message(junk, NOW).is_err());
        // And as the sealed ServerAuth or a frame to the initiator.
        let mut client = member_client(&phone, &cfg);
        assert!(
            client
                .handle_server_auth(junk, &PIN, &EXPORTER, NOW)
                .is_err()
        );
        let mut client = member_client(&phone, &cfg);
        assert!(client.handle_message(junk, NOW).is_err());
    }
    let mut client = member_client(&phone, &cfg);
    let mut server = responder(&car, &tickets, &cfg);
    let log = drive(&mut client, &mut server, NOW, no_tamper);
    assert!(log.server_peer.is_some());
    let client_auth = log.server_received[0].clone();
    let (sealed, accept) = (&log.client_received[0], &log.client_received[1]);

    // A ClientAuth before the hints were answered: no exporter yet, or
    // (with one) the hints first.
    let mut fresh = responder(&car, &tickets, &cfg);
    assert_eq!(
        fresh.handle_message(&client_auth, NOW),
        Err(HandshakeError::NoExporter)
    );
    let mut fresh = responder(&car, &tickets, &cfg);
    fresh.set_exporter(EXPORTER);
    assert!(matches!(
        fresh.handle_message(&client_auth, NOW),
        Err(HandshakeError::UnexpectedMessage { .. })
    ));
    // Hints answered, but the exporter never set.
    let mut fresh = responder(&car, &tickets, &cfg);
    let fresh_client = member_client(&phone, &cfg);
    fresh
        .answer_hints(fresh_client.hints(), &PIN, &ANSWER_ENTROPY, NOW)
        .unwrap();
    assert_eq!(
        fresh.handle_message(&client_auth, NOW),
        Err(HandshakeError::NoExporter)
    );
    // Hints answered twice.
    let mut fresh = responder(&car, &tickets, &cfg);
    fresh
        .answer_hints(fresh_client.hints(), &PIN, &ANSWER_ENTROPY, NOW)
        .unwrap();
    assert!(matches!(
        fresh.answer_hints(fresh_client.hints(), &PIN, &ANSWER_ENTROPY, NOW),
        Err(HandshakeError::UnexpectedMessage { .. })
    ));

    // The initiator: an Accept before the sealed ServerAuth; the sealed
    // ServerAuth twice; the ServerAuth's frame after the end.
    let mut fresh = member_client(&phone, &cfg);
    assert!(matches!(
        fresh.handle_message(accept, NOW),
        Err(HandshakeError::UnexpectedMessage { .. })
    ));
    let mut fresh = member_client(&phone, &cfg);
    let mut server = responder(&car, &tickets, &cfg);
    let again = server
        .answer_hints(fresh.hints(), &PIN, &ANSWER_ENTROPY, NOW)
        .unwrap();
    fresh
        .handle_server_auth(&again, &PIN, &EXPORTER, NOW)
        .unwrap();
    assert!(matches!(
        fresh.handle_server_auth(&again, &PIN, &EXPORTER, NOW),
        Err(HandshakeError::UnexpectedMessage { .. })
    ));
    assert_eq!(
        client.handle_server_auth(sealed, &PIN, &EXPORTER, NOW),
        Err(HandshakeError::Finished)
    );
    assert_eq!(
        client.handle_message(accept, NOW),
        Err(HandshakeError::Finished)
    );
    // Another initiator's sealed answer opens under nobody else's hints.
    let mut other = ClientHandshake::new(phone.clone(), [3; 32], &cfg).unwrap();
    assert_eq!(
        other.handle_server_auth(sealed, &PIN, &EXPORTER, NOW),
        Err(HandshakeError::NotAMember)
    );
}

#[test]
fn a_smart_device_cannot_start_a_member_handshake() {
    let mut acct = Account::new();
    let lamp = acct.member(Role::Device);
    let cfg = HandshakeConfig::default();
    assert_eq!(
        ClientHandshake::new(lamp.clone(), [2; 32], &cfg).unwrap_err(),
        HandshakeError::NoGroupKey
    );
}

fn full_handshake_ticket(
    phone: &Arc<Credentials>,
    car: &Arc<Credentials>,
    tickets: &Arc<TicketKey>,
) -> ResumptionTicket {
    let cfg = HandshakeConfig::default();
    let mut client = member_client(phone, &cfg);
    let mut server = responder(car, tickets, &cfg);
    drive(&mut client, &mut server, NOW, no_tamper)
        .ticket
        .unwrap()
}

#[test]
fn resumption_authenticates_without_waiting_for_a_flight() {
    let mut acct = Account::new();
    let car = acct.member(Role::Vehicle);
    let phone = acct.member(Role::Phone);
    let tickets = Arc::new(TicketKey::new([9; 32]));
    let ticket = full_handshake_ticket(&phone, &car, &tickets);
    let cfg = HandshakeConfig::default();
    let mut client = ClientHandshake::resume(phone.clone(), [11; 32], [12; 32], &ticket);
    let mut server = ServerHandshake::new(car.clone(), tickets.clone(), [14; 32], &cfg);
    let log = drive_resumed(&mut client, &mut server, NOW + 5, [11; 32]);
    assert_eq!(log.server_error, None);
    assert_eq!(client.flights_waited(), 0);
    let server_peer = log.server_peer.unwrap();
    assert!(server_peer.resumed);
    assert_eq!(server_peer.certificate.public_key, phone.key().public_key());
    assert_eq!(log.client_peer.unwrap().certificate.role, Role::Vehicle);
    // A fresh ticket for next time, different from the one used.
    assert_ne!(log.ticket.unwrap().ticket, ticket.ticket);
}

#[test]
fn resumption_is_refused_when_relayed_expired_or_forged() {
    let mut acct = Account::new();
    let car = acct.member(Role::Vehicle);
    let phone = acct.member(Role::Phone);
    let tickets = Arc::new(TicketKey::new([9; 32]));
    let ticket = full_handshake_ticket(&phone, &car, &tickets);
    let cfg = HandshakeConfig::default();

    // Relayed: made for exporter 11, presented on a connection with exporter 12.
    let mut client = ClientHandshake::resume(phone.clone(), [11; 32], [12; 32], &ticket);
    let mut server = ServerHandshake::new(car.clone(), tickets.clone(), [14; 32], &cfg);
    let log = drive_resumed(&mut client, &mut server, NOW, [12; 32]);
    assert_eq!(log.server_error, Some(HandshakeError::ResumptionRefused));
    assert!(log.server_peer.is_none());

    // Expired.
    let mut client = ClientHandshake::resume(phone.clone(), [11; 32], [12; 32], &ticket);
    let mut server = ServerHandshake::new(car.clone(), tickets.clone(), [14; 32], &cfg);
    let log = drive_resumed(&mut client, &mut server, ticket.not_after + 1, [11; 32]);
    assert_eq!(log.server_error, Some(HandshakeError::ResumptionRefused));

    // Another responder's ticket key (e.g. after a restart).
    let other_key = Arc::new(TicketKey::new([8; 32]));
    let mut client = ClientHandshake::resume(phone.clone(), [11; 32], [12; 32], &ticket);
    let mut server = ServerHandshake::new(car.clone(), other_key.clone(), [14; 32], &cfg);
    let log = drive_resumed(&mut client, &mut server, NOW, [11; 32]);
    assert_eq!(log.server_error, Some(HandshakeError::ResumptionRefused));

    // A guessed secret.
    let mut forged = ticket.clone();
    forged.secret = [0; 32];
    let mut client = ClientHandshake::resume(phone.clone(), [11; 32], [12; 32], &forged);
    let mut server = ServerHandshake::new(car.clone(), tickets.clone(), [14; 32], &cfg);
    let log = drive_resumed(&mut client, &mut server, NOW, [11; 32]);
    assert_eq!(log.server_error, Some(HandshakeError::ResumptionRefused));

    // Without the exporter the responder cannot check the proof at all.
    let mut client = ClientHandshake::resume(phone.clone(), [11; 32], [12; 32], &ticket);
    let mut server = ServerHandshake::new(car.clone(), tickets.clone(), [14; 32], &cfg);
    server
        .answer_hints(client.hints(), &PIN, &ANSWER_ENTROPY, NOW)
        .unwrap();
    let Output::Transmit(hello) = client.poll_output() else {
        panic!("the ResumeHello comes first")
    };
    assert_eq!(
        server.handle_message(&hello, NOW),
        Err(HandshakeError::NoExporter)
    );
}

// ------------------------------------------------ revocation (SPEC §3.6)

/// The account removes `lost`: a new list and group key, adopted by every
/// credentials in `members`.
fn remove(acct: &mut Account, lost: &Arc<Credentials>, members: &[&Arc<Credentials>]) {
    let previous = members.first().and_then(|m| m.revocation_list());
    let (list, key) = acct
        .authority
        .remove_devices(previous.as_ref(), &[lost.key().public_key()], NOW)
        .unwrap();
    for m in members {
        m.adopt(&list, Some(key.as_bytes())).unwrap();
    }
}

fn refused_not_accepted(log: &Log) -> bool {
    log.client_error
        == Some(HandshakeError::Refused(
            tether_proto::v1::RefuseReason::NotAccepted,
        ))
}

#[test]
fn revoked_initiator_is_refused_like_a_non_member_even_with_the_old_key_r3() {
    let mut acct = Account::new();
    let car = acct.member(Role::Vehicle);
    let lost = acct.member(Role::Phone);
    remove(&mut acct, &lost, &[&car]);
    let tickets = Arc::new(TicketKey::new([9; 32]));
    let cfg = HandshakeConfig::default();
    // During the grace period the old key's hint is recognised, but the
    // certificate is on the list: a bare Refuse, no session.
    let mut client = member_client(&lost, &cfg);
    let mut server = responder(&car, &tickets, &cfg);
    let log = drive(&mut client, &mut server, NOW, no_tamper);
    assert_eq!(log.server_error, Some(HandshakeError::Revoked));
    assert!(refused_not_accepted(&log));
    assert!(log.server_peer.is_none());
    assert_eq!(server.proven(), Proven::Nothing, "failed: proves nothing");
    // After the grace period the old key proves nothing: the answer is a
    // look-alike the lost phone cannot open, without the car's certificate
    // (R3), and nothing more.
    let after = NOW + tether_identity::GROUP_KEY_GRACE_S + 1;
    let mut client = member_client(&lost, &cfg);
    let mut server = responder(&car, &tickets, &cfg);
    let log = drive(&mut client, &mut server, after, no_tamper);
    assert_eq!(log.client_error, Some(HandshakeError::NotAMember));
    assert_eq!(server.proven(), Proven::Nothing);
    assert_eq!(log.client_received.len(), 1, "only the look-alike");
    assert!(!contains(
        &log.client_received[0],
        &car.certificate_message().body
    ));
}

#[test]
fn revoked_peer_ticket_resumes_nothing() {
    let mut acct = Account::new();
    let car = acct.member(Role::Vehicle);
    let lost = acct.member(Role::Phone);
    let tickets = Arc::new(TicketKey::new([9; 32]));
    let ticket = full_handshake_ticket(&lost, &car, &tickets);
    remove(&mut acct, &lost, &[&car]);
    let cfg = HandshakeConfig::default();
    let mut client = ClientHandshake::resume(lost.clone(), [11; 32], [12; 32], &ticket);
    let mut server = ServerHandshake::new(car.clone(), tickets, [14; 32], &cfg);
    let log = drive_resumed(&mut client, &mut server, NOW + 5, [11; 32]);
    assert_eq!(log.server_error, Some(HandshakeError::Revoked));
    assert!(refused_not_accepted(&log));
    assert!(log.server_peer.is_none());
}

#[test]
fn initiator_refuses_a_revoked_responder() {
    let mut acct = Account::new();
    let hub = acct.member(Role::Hub);
    let phone = acct.member(Role::Phone);
    remove(&mut acct, &hub, &[&phone]);
    let cfg = HandshakeConfig::default();
    // The hub still holds the old key: it recognises the phone's second
    // hint (under the previous epoch's key) and answers; the phone finds
    // its certificate on the list.
    let mut client = member_client(&phone, &cfg);
    let mut server = responder(&hub, &Arc::new(TicketKey::new([9; 32])), &cfg);
    let log = drive(&mut client, &mut server, NOW, no_tamper);
    assert_eq!(log.client_error, Some(HandshakeError::Revoked));
    assert!(log.client_peer.is_none());
    assert!(
        log.server_received.is_empty(),
        "no ClientAuth to a revoked hub"
    );
}

#[test]
fn members_on_either_epoch_authenticate_during_the_grace_period_only() {
    let mut acct = Account::new();
    let car = acct.member(Role::Vehicle);
    let phone = acct.member(Role::Phone);
    let watch = acct.member(Role::Watch); // offline during the removal
    let lost = acct.member(Role::Phone);
    remove(&mut acct, &lost, &[&car, &phone]);
    let tickets = Arc::new(TicketKey::new([9; 32]));
    let cfg = HandshakeConfig::default();
    let after = NOW + tether_identity::GROUP_KEY_GRACE_S + 1;
    // Old-epoch initiator, caught-up responder: its (only) hint is under
    // what the responder holds as the previous key.
    for (now, ok) in [(NOW, true), (after, false)] {
        let mut client = member_client(&watch, &cfg);
        let mut server = responder(&car, &tickets, &cfg);
        let log = drive(&mut client, &mut server, now, no_tamper);
        assert_eq!(log.server_peer.is_some(), ok, "at {now}");
        if ok {
            assert_eq!(server.matched_hint(), Some(&client.hints()[0]));
        } else {
            assert_eq!(log.client_error, Some(HandshakeError::NotAMember));
        }
    }
    // New-epoch initiator, a responder still on the old epoch (it holds
    // only the old key): the initiator's second hint, under the previous
    // epoch's key, admits it.
    let mut client = member_client(&phone, &cfg);
    let mut server = responder(&watch, &tickets, &cfg);
    let log = drive(&mut client, &mut server, NOW, no_tamper);
    assert_eq!(log.server_error, None);
    assert_eq!(log.client_error, None);
    assert!(log.server_peer.is_some() && log.client_peer.is_some());
    assert_eq!(server.matched_hint(), Some(&client.hints()[1]));
    // A caught-up responder in its grace period holds both keys: it
    // recognises the second hint alone too (the first one spoilt).
    let client = member_client(&phone, &cfg);
    let mut hints = *client.hints();
    hints[0] = [0x5c; HINT_LEN];
    let mut server = responder(&car, &tickets, &cfg);
    server
        .answer_hints(&hints, &PIN, &ANSWER_ENTROPY, NOW)
        .unwrap();
    assert_eq!(server.proven(), Proven::Member);
    assert_eq!(server.matched_hint(), Some(&hints[1]));
    // ... but not after the grace period.
    let mut server = responder(&car, &tickets, &cfg);
    server
        .answer_hints(&hints, &PIN, &ANSWER_ENTROPY, after)
        .unwrap();
    assert_eq!(server.proven(), Proven::Nothing);
    // Both on the new epoch: the first hint does it.
    let mut client = member_client(&phone, &cfg);
    let mut server = responder(&car, &tickets, &cfg);
    let log = drive(&mut client, &mut server, after, no_tamper);
    assert_eq!(log.server_error, None);
    assert_eq!(server.matched_hint(), Some(&client.hints()[0]));
}
