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
    client_received: Vec<Vec<u8>>,
    server_received: Vec<Vec<u8>>,
    client_peer: Option<PeerIdentity>,
    server_peer: Option<PeerIdentity>,
    ticket: Option<ResumptionTicket>,
    client_error: Option<HandshakeError>,
    server_error: Option<HandshakeError>,
}

/// Drives both cores until neither has output. `tamper` may rewrite a frame
/// in flight (`true` = client to server).
fn drive(
    client: &mut ClientHandshake,
    server: &mut ServerHandshake,
    now: u64,
    mut tamper: impl FnMut(bool, usize, &mut Vec<u8>),
) -> Log {
    let mut log = Log::default();
    let (mut c2s, mut s2c) = (0, 0);
    loop {
        let mut progressed = false;
        loop {
            match client.poll_output() {
                Output::Transmit(mut bytes) => {
                    tamper(true, c2s, &mut bytes);
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
                    tamper(false, s2c, &mut bytes);
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
            return log;
        }
    }
}

fn no_tamper(_: bool, _: usize, _: &mut Vec<u8>) {}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn members_of_one_account_authenticate_each_other() {
    let mut acct = Account::new();
    let car = acct.member(Role::Vehicle);
    let phone = acct.member(Role::Phone);
    let tickets = Arc::new(TicketKey::new([9; 32]));
    let cfg = HandshakeConfig::default();
    let mut client = ClientHandshake::new(phone.clone(), [1; 32], [2; 32], &cfg).unwrap();
    let mut server = ServerHandshake::new(car.clone(), tickets.clone(), [1; 32], [4; 32], &cfg);
    let log = drive(&mut client, &mut server, NOW, no_tamper);
    assert_eq!(log.client_error, None);
    assert_eq!(log.server_error, None);
    assert_eq!(log.client_peer.unwrap().certificate.role, Role::Vehicle);
    let server_peer = log.server_peer.unwrap();
    assert_eq!(server_peer.certificate.public_key, phone.key().public_key());
    assert!(!server_peer.resumed);
    assert!(log.ticket.is_some());
    // Cold: one handshake flight waited for before requests (SPEC §5.6).
    assert_eq!(client.flights_waited(), 1);
    assert!(client.is_finished());
}

#[test]
fn r3_other_account_is_refused_and_learns_no_certificate() {
    let mut mine = Account::new();
    let mut other = Account::new();
    let car = mine.member(Role::Vehicle);
    let stranger = other.member(Role::Phone);
    let tickets = Arc::new(TicketKey::new([9; 32]));
    let cfg = HandshakeConfig::default();
    let mut client = ClientHandshake::new(stranger.clone(), [1; 32], [2; 32], &cfg).unwrap();
    let mut server = ServerHandshake::new(car.clone(), tickets.clone(), [1; 32], [4; 32], &cfg);
    let log = drive(&mut client, &mut server, NOW, no_tamper);
    assert_eq!(log.server_error, Some(HandshakeError::NotAMember));
    assert_eq!(
        log.client_error,
        Some(HandshakeError::Refused(
            tether_proto::v1::RefuseReason::NotAccepted
        ))
    );
    assert!(log.client_peer.is_none() && log.server_peer.is_none());
    let cert = car.certificate_message();
    let public_key = car.key().public_key();
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
        assert!(
            frame.len() < 16,
            "a refusal is a few bytes, got {}",
            frame.len()
        );
    }
}

#[test]
fn tampered_messages_are_rejected_in_each_direction() {
    let mut acct = Account::new();
    let car = acct.member(Role::Vehicle);
    let phone = acct.member(Role::Phone);
    let tickets = Arc::new(TicketKey::new([9; 32]));
    let cfg = HandshakeConfig::default();
    // Flip the last byte of each message in turn (the signature or proof tail).
    for (dir, index) in [(true, 0), (false, 0), (true, 1)] {
        let mut client = ClientHandshake::new(phone.clone(), [1; 32], [2; 32], &cfg).unwrap();
        let mut server = ServerHandshake::new(car.clone(), tickets.clone(), [1; 32], [4; 32], &cfg);
        let log = drive(&mut client, &mut server, NOW, |d, i, bytes| {
            if d == dir && i == index {
                let last = bytes.len() - 1;
                bytes[last] ^= 0x01;
            }
        });
        let failed = if dir {
            log.server_error.is_some()
        } else {
            log.client_error.is_some()
        };
        assert!(failed, "tampering {dir}/{index} went unnoticed: {log:?}");
        assert!(
            log.server_peer.is_none(),
            "server accepted a tampered handshake"
        );
    }
}

#[test]
fn proof_relayed_into_another_connection_fails() {
    let mut acct = Account::new();
    let car = acct.member(Role::Vehicle);
    let phone = acct.member(Role::Phone);
    let tickets = Arc::new(TicketKey::new([9; 32]));
    let cfg = HandshakeConfig::default();
    // The phone talks to a relay on connection A (exporter 1); the relay
    // forwards the ClientHello into its own connection B (exporter 7).
    let mut client = ClientHandshake::new(phone.clone(), [1; 32], [2; 32], &cfg).unwrap();
    let Output::Transmit(hello) = client.poll_output() else {
        panic!("expected hello")
    };
    let mut server = ServerHandshake::new(car.clone(), tickets.clone(), [7; 32], [4; 32], &cfg);
    assert_eq!(
        server.handle_message(&hello, NOW),
        Err(HandshakeError::NotAMember)
    );
    let Output::Transmit(refusal) = server.poll_output() else {
        panic!("expected refusal")
    };
    assert!(!contains(&refusal, &car.certificate_message().body));
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
    let handshake = |now: u64, tamper: &mut dyn FnMut(bool, usize, &mut Vec<u8>)| {
        let mut client = ClientHandshake::new(phone.clone(), [1; 32], [2; 32], &cfg).unwrap();
        let mut server = ServerHandshake::new(car.clone(), tickets.clone(), [1; 32], [4; 32], &cfg);
        drive(&mut client, &mut server, now, tamper)
    };
    let log = handshake(NOW, &mut no_tamper);
    assert!(log.client_peer.is_some() && log.server_peer.is_some());
    assert_eq!(phone.peer_certificates().len(), 1);
    assert_eq!(car.peer_certificates().len(), 1);

    // Again, from the caches: the same peers.
    let again = handshake(NOW + 60, &mut no_tamper);
    assert_eq!(again.client_peer.unwrap(), log.client_peer.unwrap());
    assert_eq!(again.server_peer.unwrap(), log.server_peer.unwrap());

    // Known, but expired by now.
    let late = NOW + tether_identity::CERTIFICATE_VALIDITY_S + 1;
    let expired = handshake(late, &mut no_tamper);
    assert_eq!(
        expired.client_error,
        Some(HandshakeError::Certificate(CertificateError::Expired))
    );
    assert!(expired.server_peer.is_none());

    // Known, but the ServerAuth signature is broken in flight.
    let forged = handshake(NOW, &mut |to_server, i, bytes: &mut Vec<u8>| {
        if !to_server && i == 0 {
            let last = bytes.len() - 1;
            bytes[last] ^= 0x01;
        }
    });
    assert_eq!(forged.client_error, Some(HandshakeError::BadSignature));
    assert!(forged.client_peer.is_none() && forged.server_peer.is_none());
}

#[test]
fn expired_client_certificate_is_refused() {
    let mut acct = Account::new();
    let car = acct.member(Role::Vehicle);
    let expired = acct.expired_member(Role::Phone);
    let tickets = Arc::new(TicketKey::new([9; 32]));
    let cfg = HandshakeConfig::default();
    let mut client = ClientHandshake::new(expired.clone(), [1; 32], [2; 32], &cfg).unwrap();
    let mut server = ServerHandshake::new(car.clone(), tickets.clone(), [1; 32], [4; 32], &cfg);
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
    let mut client = ClientHandshake::new(phone.clone(), [1; 32], [2; 32], &cfg).unwrap();
    let mut server = ServerHandshake::new(car.clone(), tickets.clone(), [1; 32], [4; 32], &cfg);
    let log = drive(&mut client, &mut server, NOW, no_tamper);
    assert_eq!(
        log.client_error,
        Some(HandshakeError::Certificate(CertificateError::Expired))
    );
    assert!(log.client_peer.is_none());
}

#[test]
fn version_downgrade_in_flight_is_detected() {
    let mut acct = Account::new();
    let car = acct.member(Role::Vehicle);
    let phone = acct.member(Role::Phone);
    let tickets = Arc::new(TicketKey::new([9; 32]));
    // The client offers 1..=2; an attacker rewrites max_version to 1.
    let cfg = HandshakeConfig {
        max_version: 2,
        ..HandshakeConfig::default()
    };
    let server_cfg = HandshakeConfig {
        max_version: 2,
        ..HandshakeConfig::default()
    };
    let mut client = ClientHandshake::new(phone.clone(), [1; 32], [2; 32], &cfg).unwrap();
    let mut server =
        ServerHandshake::new(car.clone(), tickets.clone(), [1; 32], [4; 32], &server_cfg);
    let log = drive(&mut client, &mut server, NOW, |to_server, i, bytes| {
        if to_server && i == 0 {
            use prost::Message;
            let mut m = tether_proto::v1::HandshakeMessage::decode(bytes.as_slice()).unwrap();
            if let Some(tether_proto::v1::handshake_message::Message::ClientHello(h)) =
                &mut m.message
            {
                h.max_version = 1;
            }
            *bytes = m.encode_to_vec();
        }
    });
    assert_eq!(log.server_error, Some(HandshakeError::NotAMember));
    assert!(log.client_peer.is_none() && log.server_peer.is_none());

    // Without tampering both pick 2.
    let mut client = ClientHandshake::new(phone.clone(), [1; 32], [2; 32], &cfg).unwrap();
    let mut server =
        ServerHandshake::new(car.clone(), tickets.clone(), [1; 32], [4; 32], &server_cfg);
    let log = drive(&mut client, &mut server, NOW, no_tamper);
    assert_eq!(log.client_peer.unwrap().version, 2);
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
        max_version: 2,
        ..Default::default()
    };
    let mut client = ClientHandshake::new(phone.clone(), [1; 32], [2; 32], &client_cfg).unwrap();
    let mut server =
        ServerHandshake::new(car.clone(), tickets.clone(), [1; 32], [4; 32], &server_cfg);
    let log = drive(&mut client, &mut server, NOW, no_tamper);
    assert!(matches!(
        log.server_error,
        Some(HandshakeError::VersionMismatch { .. })
    ));
    assert_eq!(
        log.client_error,
        Some(HandshakeError::Refused(
            tether_proto::v1::RefuseReason::VersionMismatch
        ))
    );
}

#[test]
fn garbage_and_out_of_order_messages_are_typed_errors() {
    let mut acct = Account::new();
    let car = acct.member(Role::Vehicle);
    let phone = acct.member(Role::Phone);
    let tickets = Arc::new(TicketKey::new([9; 32]));
    let cfg = HandshakeConfig::default();
    for junk in [&b""[..], &[0xff; 8], &[0x0a, 0xff, 0xff], &[0; 4096]] {
        let mut server = ServerHandshake::new(car.clone(), tickets.clone(), [1; 32], [4; 32], &cfg);
        assert!(server.handle_message(junk, NOW).is_err());
    }
    // A ClientAuth before any hello.
    let mut client = ClientHandshake::new(phone.clone(), [1; 32], [2; 32], &cfg).unwrap();
    let mut server = ServerHandshake::new(car.clone(), tickets.clone(), [1; 32], [4; 32], &cfg);
    let log = drive(&mut client, &mut server, NOW, no_tamper);
    assert!(log.server_peer.is_some());
    let client_auth = log.server_received[1].clone();
    let mut fresh = ServerHandshake::new(car.clone(), tickets.clone(), [1; 32], [4; 32], &cfg);
    assert!(matches!(
        fresh.handle_message(&client_auth, NOW),
        Err(HandshakeError::UnexpectedMessage { .. })
    ));
}

#[test]
fn a_smart_device_cannot_start_a_member_handshake() {
    let mut acct = Account::new();
    let lamp = acct.member(Role::Device);
    let cfg = HandshakeConfig::default();
    assert_eq!(
        ClientHandshake::new(lamp.clone(), [1; 32], [2; 32], &cfg).unwrap_err(),
        HandshakeError::NoGroupKey
    );
}

fn full_handshake_ticket(
    phone: &Arc<Credentials>,
    car: &Arc<Credentials>,
    tickets: &Arc<TicketKey>,
) -> ResumptionTicket {
    let cfg = HandshakeConfig::default();
    let mut client = ClientHandshake::new(phone.clone(), [1; 32], [2; 32], &cfg).unwrap();
    let mut server = ServerHandshake::new(car.clone(), tickets.clone(), [1; 32], [4; 32], &cfg);
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
    let mut server = ServerHandshake::new(car.clone(), tickets.clone(), [11; 32], [14; 32], &cfg);
    let log = drive(&mut client, &mut server, NOW + 5, no_tamper);
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
    let mut server = ServerHandshake::new(car.clone(), tickets.clone(), [12; 32], [14; 32], &cfg);
    let log = drive(&mut client, &mut server, NOW, no_tamper);
    assert_eq!(log.server_error, Some(HandshakeError::ResumptionRefused));
    assert!(log.server_peer.is_none());

    // Expired.
    let mut client = ClientHandshake::resume(phone.clone(), [11; 32], [12; 32], &ticket);
    let mut server = ServerHandshake::new(car.clone(), tickets.clone(), [11; 32], [14; 32], &cfg);
    let log = drive(&mut client, &mut server, ticket.not_after + 1, no_tamper);
    assert_eq!(log.server_error, Some(HandshakeError::ResumptionRefused));

    // Another responder's ticket key (e.g. after a restart).
    let other_key = Arc::new(TicketKey::new([8; 32]));
    let mut client = ClientHandshake::resume(phone.clone(), [11; 32], [12; 32], &ticket);
    let mut server = ServerHandshake::new(car.clone(), other_key.clone(), [11; 32], [14; 32], &cfg);
    let log = drive(&mut client, &mut server, NOW, no_tamper);
    assert_eq!(log.server_error, Some(HandshakeError::ResumptionRefused));

    // A guessed secret.
    let mut forged = ticket.clone();
    forged.secret = [0; 32];
    let mut client = ClientHandshake::resume(phone.clone(), [11; 32], [12; 32], &forged);
    let mut server = ServerHandshake::new(car.clone(), tickets.clone(), [11; 32], [14; 32], &cfg);
    let log = drive(&mut client, &mut server, NOW, no_tamper);
    assert_eq!(log.server_error, Some(HandshakeError::ResumptionRefused));
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
    // During the grace period the old key's proof passes the hello, but the
    // certificate is on the list: a bare Refuse, no session.
    let mut client = ClientHandshake::new(lost.clone(), [1; 32], [2; 32], &cfg).unwrap();
    let mut server = ServerHandshake::new(car.clone(), tickets.clone(), [1; 32], [4; 32], &cfg);
    let log = drive(&mut client, &mut server, NOW, no_tamper);
    assert_eq!(log.server_error, Some(HandshakeError::Revoked));
    assert!(refused_not_accepted(&log));
    assert!(log.server_peer.is_none());
    // After the grace period the old key proves nothing: refused at the hello,
    // before the car's certificate is sent (R3).
    let after = NOW + tether_identity::GROUP_KEY_GRACE_S + 1;
    let mut client = ClientHandshake::new(lost.clone(), [1; 32], [2; 32], &cfg).unwrap();
    let mut server = ServerHandshake::new(car.clone(), tickets, [1; 32], [4; 32], &cfg);
    let log = drive(&mut client, &mut server, after, no_tamper);
    assert_eq!(log.server_error, Some(HandshakeError::NotAMember));
    assert_eq!(log.client_received.len(), 1, "only the Refuse");
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
    let mut server = ServerHandshake::new(car.clone(), tickets, [11; 32], [14; 32], &cfg);
    let log = drive(&mut client, &mut server, NOW + 5, no_tamper);
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
    let mut client = ClientHandshake::new(phone.clone(), [1; 32], [2; 32], &cfg).unwrap();
    let mut server = ServerHandshake::new(
        hub,
        Arc::new(TicketKey::new([9; 32])),
        [1; 32],
        [4; 32],
        &cfg,
    );
    let log = drive(&mut client, &mut server, NOW, no_tamper);
    assert_eq!(log.client_error, Some(HandshakeError::Revoked));
    assert!(log.client_peer.is_none());
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
    // Old-epoch initiator, caught-up responder.
    for (now, ok) in [(NOW, true), (after, false)] {
        let mut client = ClientHandshake::new(watch.clone(), [1; 32], [2; 32], &cfg).unwrap();
        let mut server = ServerHandshake::new(car.clone(), tickets.clone(), [1; 32], [4; 32], &cfg);
        let log = drive(&mut client, &mut server, now, no_tamper);
        assert_eq!(log.server_peer.is_some(), ok, "at {now}");
    }
    // New-epoch initiator, a responder still on the old epoch: the
    // initiator's previous-epoch proof admits it.
    let mut client = ClientHandshake::new(phone.clone(), [1; 32], [2; 32], &cfg).unwrap();
    let mut server = ServerHandshake::new(watch.clone(), tickets.clone(), [1; 32], [4; 32], &cfg);
    let log = drive(&mut client, &mut server, NOW, no_tamper);
    assert_eq!(log.server_error, None);
    assert!(log.server_peer.is_some());
    // Both on the new epoch: no previous proof needed.
    let mut client = ClientHandshake::new(phone.clone(), [1; 32], [2; 32], &cfg).unwrap();
    let mut server = ServerHandshake::new(car.clone(), tickets, [1; 32], [4; 32], &cfg);
    let log = drive(&mut client, &mut server, after, no_tamper);
    assert_eq!(log.server_error, None);
}
