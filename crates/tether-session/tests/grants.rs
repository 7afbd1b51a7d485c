//! Co-users admitted by a share grant (R16, R19; SPEC §17.3), two handshake
//! cores driven against each other in memory.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

use std::sync::Arc;
use tether_identity::{AccountAuthority, Credentials, DeviceKey, GrantKey, LocalAuthority, Role};
use tether_session::handshake::*;

const NOW: u64 = 1_800_000_000;

fn enroll(authority: &mut LocalAuthority, role: Role) -> Arc<Credentials> {
    let key = DeviceKey::generate().unwrap();
    let grant = authority
        .enroll(&key.enrollment_request(role, [3; 16]), NOW)
        .unwrap();
    Arc::new(Credentials::from_grant(key, &grant, NOW).unwrap())
}

struct Outcome {
    client: Option<PeerIdentity>,
    server: Option<PeerIdentity>,
    ticket: Option<ResumptionTicket>,
    server_error: Option<HandshakeError>,
    client_error: Option<HandshakeError>,
    to_client: Vec<Vec<u8>>,
}

const PIN: TlsPin = [0x70; 32];
const EXPORTER: Exporter = [1; 32];

/// A full handshake at `NOW` over one connection.
fn drive(client: &mut ClientHandshake, server: &mut ServerHandshake) -> Outcome {
    drive_at(client, server, NOW)
}

/// [`drive`] with the responder's clock at `now`: the initiator's hints
/// answered, the sealed `ServerAuth` opened, then frames until neither core
/// has output. `to_client` starts with the sealed answer.
fn drive_at(client: &mut ClientHandshake, server: &mut ServerHandshake, now: u64) -> Outcome {
    let mut o = outcome();
    let sealed = server
        .answer_hints(client.hints(), &PIN, &[0x44; ANSWER_ENTROPY_LEN], now)
        .unwrap();
    assert_eq!(sealed.len(), SEALED_SERVER_AUTH_LEN);
    server.set_exporter(EXPORTER);
    o.to_client.push(sealed.clone());
    if let Err(e) = client.handle_server_auth(&sealed, &PIN, &EXPORTER, NOW) {
        o.client_error.get_or_insert(e);
    }
    exchange(client, server, now, &mut o);
    o
}

/// A resumption at `now`: the responder answers the resuming initiator's
/// (meaningless) hints as the driver does, then takes its `ResumeHello`.
fn resume_at(client: &mut ClientHandshake, server: &mut ServerHandshake, now: u64) -> Outcome {
    let mut o = outcome();
    server
        .answer_hints(client.hints(), &PIN, &[0x44; ANSWER_ENTROPY_LEN], now)
        .unwrap();
    exchange(client, server, now, &mut o);
    o
}

fn resume(client: &mut ClientHandshake, server: &mut ServerHandshake) -> Outcome {
    resume_at(client, server, NOW)
}

fn outcome() -> Outcome {
    Outcome {
        client: None,
        server: None,
        ticket: None,
        server_error: None,
        client_error: None,
        to_client: Vec::new(),
    }
}

fn exchange(client: &mut ClientHandshake, server: &mut ServerHandshake, now: u64, o: &mut Outcome) {
    loop {
        let mut progressed = false;
        loop {
            match client.poll_output() {
                Output::Transmit(bytes) => {
                    progressed = true;
                    if let Err(e) = server.handle_message(&bytes, now) {
                        o.server_error.get_or_insert(e);
                    }
                }
                Output::Event(Event::Authenticated(p)) => o.client = Some(p),
                Output::Event(Event::Ticket(t)) => o.ticket = Some(t),
                Output::Pending => break,
            }
        }
        loop {
            match server.poll_output() {
                Output::Transmit(bytes) => {
                    progressed = true;
                    o.to_client.push(bytes.clone());
                    if let Err(e) = client.handle_message(&bytes, NOW) {
                        o.client_error.get_or_insert(e);
                    }
                }
                Output::Event(Event::Authenticated(p)) => o.server = Some(p),
                Output::Event(Event::Ticket(_)) => unreachable!(),
                Output::Pending => break,
            }
        }
        if !progressed {
            return;
        }
    }
}

/// R3, R2: what an initiator the responder did not admit received: one
/// look-alike answer of the usual length, without the responder's
/// certificate, which it could not open.
fn got_only_a_look_alike(o: &Outcome, responder: &Credentials) -> bool {
    let cert = responder.certificate_message();
    o.client_error == Some(HandshakeError::NotAMember)
        && o.to_client.len() == 1
        && o.to_client[0].len() == SEALED_SERVER_AUTH_LEN
        && !o.to_client[0]
            .windows(cert.body.len())
            .any(|x| x == cert.body)
        && o.server.is_none()
        && o.client.is_none()
}

struct World {
    owner: LocalAuthority,
    car: Arc<Credentials>,
    co_user: LocalAuthority,
    co_phone: Arc<Credentials>,
    grant_key: GrantKey,
    grantees: Arc<Grantees>,
    tickets: Arc<TicketKey>,
}

const GRANT_ID: [u8; 16] = [0x5a; 16];
/// The last second the test grant is valid.
const GRANT_END: u64 = NOW + 3600;

fn world() -> World {
    let mut owner = LocalAuthority::generate().unwrap();
    let car = enroll(&mut owner, Role::Vehicle);
    let mut co_user = LocalAuthority::generate().unwrap();
    let co_phone = enroll(&mut co_user, Role::Phone);
    let grant_key = GrantKey::generate().unwrap();
    let grantees = Arc::new(Grantees::default());
    grantees.insert(Grantee {
        grant_id: GRANT_ID,
        admission_key: grant_key.admission_key(),
        authority_public_key: co_user.public_key(),
        not_before: NOW - 60,
        not_after: GRANT_END,
    });
    World {
        owner,
        car,
        co_user,
        co_phone,
        grant_key,
        grantees,
        tickets: Arc::new(TicketKey::new([9; 32])),
    }
}

impl World {
    fn access(&self) -> GrantAccess {
        GrantAccess {
            admission_key: self.grant_key.admission_key(),
            owner_authority_public_key: self.owner.public_key(),
            expect_device: false,
        }
    }

    /// The car, on a connection with this exporter.
    fn server(&self, exporter: [u8; 32]) -> ServerHandshake {
        let mut server = ServerHandshake::new(
            self.car.clone(),
            self.tickets.clone(),
            [4; 32],
            &HandshakeConfig::default(),
        )
        .with_grantees(self.grantees.clone());
        server.set_exporter(exporter);
        server
    }

    fn grant_client(&self, who: &Arc<Credentials>) -> ClientHandshake {
        ClientHandshake::with_grant(
            who.clone(),
            &self.access(),
            [2; 32],
            &HandshakeConfig::default(),
        )
    }
}

#[test]
fn co_user_is_admitted_under_the_grant_r16() {
    let w = world();
    let mut client = w.grant_client(&w.co_phone);
    let mut server = w.server([1; 32]);
    let o = drive(&mut client, &mut server);
    assert!(o.server_error.is_none() && o.client_error.is_none());
    assert_eq!(server.proven(), Proven::Grantee);
    assert_eq!(server.matched_hint(), Some(&client.hints()[0]));
    let seen = o.server.unwrap();
    assert_eq!(seen.grant, Some(GRANT_ID));
    assert_eq!(seen.certificate.public_key, w.co_phone.key().public_key());
    assert_eq!(o.client.unwrap().certificate.role, Role::Vehicle);
    assert!(o.ticket.is_some());
}

#[test]
fn owner_members_are_not_marked_as_grantees_r16() {
    let mut w = world();
    let phone = enroll(&mut w.owner, Role::Phone);
    let mut client = ClientHandshake::new(phone, [2; 32], &HandshakeConfig::default()).unwrap();
    let mut server = w.server([1; 32]);
    let o = drive(&mut client, &mut server);
    assert_eq!(o.server.unwrap().grant, None);
}

#[test]
fn revoked_grant_admits_nobody_and_reveals_nothing_r16_r2() {
    let w = world();
    assert!(w.grantees.remove(&GRANT_ID));
    let mut client = w.grant_client(&w.co_phone);
    let mut server = w.server([1; 32]);
    let o = drive(&mut client, &mut server);
    assert_eq!(server.proven(), Proven::Nothing);
    assert!(got_only_a_look_alike(&o, &w.car));
}

#[test]
fn grant_key_does_not_admit_another_accounts_phone_r16() {
    // A third account's phone that stole the grant key still fails: its
    // certificate is not signed by the grantee's authority.
    let w = world();
    let mut thief_authority = LocalAuthority::generate().unwrap();
    let thief = enroll(&mut thief_authority, Role::Phone);
    let mut client = w.grant_client(&thief);
    let mut server = w.server([1; 32]);
    let o = drive(&mut client, &mut server);
    assert!(matches!(
        o.server_error,
        Some(HandshakeError::Certificate(_))
    ));
    assert!(o.server.is_none());
}

#[test]
fn grant_admits_only_a_phone_or_watch_r16() {
    let mut w = world();
    let hub = enroll(&mut w.co_user, Role::Hub);
    let mut client = w.grant_client(&hub);
    let mut server = w.server([1; 32]);
    let o = drive(&mut client, &mut server);
    assert_eq!(
        o.server_error,
        Some(HandshakeError::RoleNotAllowed(Role::Hub))
    );
}

#[test]
fn grant_ticket_resumes_only_while_the_grant_stands_r16() {
    let w = world();
    let mut client = w.grant_client(&w.co_phone);
    let mut server = w.server([1; 32]);
    let ticket = drive(&mut client, &mut server).ticket.unwrap();

    let mut client = ClientHandshake::resume(w.co_phone.clone(), [7; 32], [8; 32], &ticket);
    let mut server = w.server([7; 32]);
    let o = resume(&mut client, &mut server);
    assert_eq!(
        o.server.unwrap().grant,
        Some(GRANT_ID),
        "resumed under the grant"
    );

    w.grantees.remove(&GRANT_ID);
    let mut client = ClientHandshake::resume(w.co_phone.clone(), [7; 32], [8; 32], &ticket);
    let mut server = w.server([7; 32]);
    let o = resume(&mut client, &mut server);
    assert_eq!(o.server_error, Some(HandshakeError::ResumptionRefused));
}

#[test]
fn expired_grant_is_refused_at_admission_and_resumption_r16() {
    let w = world();
    let mut client = w.grant_client(&w.co_phone);
    let mut server = w.server([1; 32]);
    let ticket = drive(&mut client, &mut server).ticket.unwrap();
    assert!(
        ticket.not_after > GRANT_END,
        "the ticket outlives the grant"
    );

    // The last second of the grant still admits; the next one does not,
    // though the host has not removed the grant from the table.
    let mut client = w.grant_client(&w.co_phone);
    let mut server = w.server([1; 32]);
    assert!(
        drive_at(&mut client, &mut server, GRANT_END)
            .server
            .is_some()
    );
    let mut client = w.grant_client(&w.co_phone);
    let mut server = w.server([1; 32]);
    let o = drive_at(&mut client, &mut server, GRANT_END + 1);
    assert_eq!(server.proven(), Proven::Nothing);
    assert!(
        got_only_a_look_alike(&o, &w.car),
        "R2: an ex-co-user gets a look-alike, not the car's certificate"
    );

    // Its ticket resumes until the end of the grant, not after.
    let mut client = ClientHandshake::resume(w.co_phone.clone(), [7; 32], [8; 32], &ticket);
    let mut server = w.server([7; 32]);
    assert!(
        resume_at(&mut client, &mut server, GRANT_END)
            .server
            .is_some()
    );
    let mut client = ClientHandshake::resume(w.co_phone.clone(), [7; 32], [8; 32], &ticket);
    let mut server = w.server([7; 32]);
    let o = resume_at(&mut client, &mut server, GRANT_END + 1);
    assert_eq!(o.server_error, Some(HandshakeError::ResumptionRefused));
    assert!(w.grantees.contains(&GRANT_ID) && !w.grantees.admits(&GRANT_ID, GRANT_END + 1));
}

#[test]
fn co_user_rejects_a_car_of_another_owner_r16() {
    let w = world();
    let mut stranger_owner = LocalAuthority::generate().unwrap();
    let other_car = enroll(&mut stranger_owner, Role::Vehicle);
    // The other car somehow admits the same grant key: the co-user still
    // refuses, because the car's certificate is not the owner's.
    let mut client = w.grant_client(&w.co_phone);
    let mut server = ServerHandshake::new(
        other_car,
        w.tickets.clone(),
        [4; 32],
        &HandshakeConfig::default(),
    )
    .with_grantees(w.grantees.clone());
    let o = drive(&mut client, &mut server);
    assert!(matches!(
        o.client_error,
        Some(HandshakeError::Certificate(_))
    ));
    assert!(o.client.is_none());
}

// ---- bound smart devices on the LAN (SPEC §12.6) ----

fn device_server(lamp: &Arc<Credentials>, device_key: [u8; 32]) -> ServerHandshake {
    ServerHandshake::new(
        lamp.clone(),
        Arc::new(TicketKey::new([6; 32])),
        [4; 32],
        &HandshakeConfig::default(),
    )
    .as_device(device_key)
}

fn device_client(who: &Arc<Credentials>, key: [u8; 32], authority: [u8; 32]) -> ClientHandshake {
    ClientHandshake::with_grant(
        who.clone(),
        &GrantAccess::device(key, authority),
        [2; 32],
        &HandshakeConfig::default(),
    )
}

#[test]
fn the_car_reaches_its_bound_lamp_with_the_device_secret_r13() {
    let mut w = world();
    let lamp = enroll(&mut w.owner, Role::Device);
    assert!(
        lamp.group_key().is_none(),
        "R13: a device holds no group key"
    );
    let secret = tether_identity::DeviceSecret::new([0x42; 32]);
    let mut client = device_client(&w.car, secret.admission_key(), w.owner.public_key());
    let mut server = device_server(&lamp, secret.admission_key());
    let o = drive(&mut client, &mut server);
    assert!(o.server_error.is_none() && o.client_error.is_none());
    assert_eq!(o.client.unwrap().certificate.role, Role::Device);
    assert_eq!(o.server.unwrap().certificate.role, Role::Vehicle);
}

#[test]
fn a_lamp_refuses_a_wrong_secret_and_reveals_nothing_r2_r13() {
    let mut w = world();
    let lamp = enroll(&mut w.owner, Role::Device);
    let right = tether_identity::DeviceSecret::new([0x42; 32]);
    let wrong = tether_identity::DeviceSecret::new([0x43; 32]);
    let mut client = device_client(&w.car, wrong.admission_key(), w.owner.public_key());
    let mut server = device_server(&lamp, right.admission_key());
    let o = drive(&mut client, &mut server);
    assert_eq!(server.proven(), Proven::Nothing);
    assert!(got_only_a_look_alike(&o, &lamp));
    // The account's membership key does not open a device either.
    let mut client =
        ClientHandshake::new(w.car.clone(), [2; 32], &HandshakeConfig::default()).unwrap();
    let mut server = device_server(&lamp, right.admission_key());
    let o = drive(&mut client, &mut server);
    assert_eq!(server.proven(), Proven::Nothing);
    assert!(got_only_a_look_alike(&o, &lamp));
}

#[test]
fn a_device_serves_members_only_and_is_expected_to_be_a_device_r13() {
    let mut w = world();
    let lamp = enroll(&mut w.owner, Role::Device);
    let other_lamp = enroll(&mut w.owner, Role::Device);
    let secret = tether_identity::DeviceSecret::new([0x42; 32]);
    // Another device that learnt the secret is still not a member.
    let mut client = device_client(&other_lamp, secret.admission_key(), w.owner.public_key());
    let mut server = device_server(&lamp, secret.admission_key());
    let o = drive(&mut client, &mut server);
    assert_eq!(
        o.server_error,
        Some(HandshakeError::RoleNotAllowed(Role::Device))
    );
    // A member answering where a device was expected is rejected by the car.
    let phone = enroll(&mut w.owner, Role::Phone);
    let mut client = device_client(&w.car, secret.admission_key(), w.owner.public_key());
    let mut server = ServerHandshake::new(
        phone,
        w.tickets.clone(),
        [4; 32],
        &HandshakeConfig::default(),
    )
    .as_device(secret.admission_key());
    let o = drive(&mut client, &mut server);
    assert_eq!(
        o.client_error,
        Some(HandshakeError::RoleNotAllowed(Role::Phone))
    );
}
