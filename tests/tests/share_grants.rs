//! Share grants between two accounts over real loopback mDNS and QUIC
//! (R16, R19; SPEC §17): a co-user finds the car by the grant's own token,
//! is admitted under the grant, is held to its scope, keeps working after
//! the owner logs out, and is cut off within a second of a revocation.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

mod support;

use std::time::{Duration, Instant};

use prost::Message;
use tether_control::client as control;
use tether_control::signals;
use tether_node::{
    HeadUnit, IssuedShare, NodeConfig, NodeError, Phone, ShareOptions, SharePermission, VehicleLink,
};
use tether_proto::v1::{
    Envelope, ErrorCode, InstallShareGrant, Request, RevokeShareGrant, ShareInvite, envelope,
    request,
};
use tether_session::quic::{CloseCode, SessionError};

struct World {
    owner: Phone,
    car: HeadUnit,
    co_user: Phone,
}

async fn world() -> World {
    let (owner, car) = support::owner_and_enrolled_car();
    car.start().await.unwrap();
    let co_user = Phone::open(NodeConfig::default()).unwrap();
    co_user.create_account().unwrap();
    World {
        owner,
        car,
        co_user,
    }
}

impl World {
    /// The owner's session to the car, and a grant of `permissions` issued
    /// to the co-user's account over it (not yet accepted).
    async fn grant(&self, permissions: &[SharePermission]) -> (VehicleLink, IssuedShare) {
        let address = self.car.address().await.unwrap();
        let owner_link = self.owner.connect(address).await.unwrap();
        let issued = self
            .owner
            .share(
                &owner_link,
                self.co_user.authority_public_key().unwrap(),
                &options(permissions),
            )
            .await
            .unwrap();
        (owner_link, issued)
    }
}

fn options(permissions: &[SharePermission]) -> ShareOptions {
    ShareOptions {
        permissions: permissions.to_vec(),
        devices: Vec::new(),
        valid_for_s: 3600,
        nickname: "Ana".into(),
    }
}

fn denied(result: Result<impl std::fmt::Debug, NodeError>) -> bool {
    refused_with(result, ErrorCode::PermissionDenied)
}

/// The vehicle answered with this typed error.
fn refused_with(result: Result<impl std::fmt::Debug, NodeError>, want: ErrorCode) -> bool {
    matches!(result, Err(NodeError::Control(e)) if e.code() == Some(want))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r16_co_user_finds_the_car_by_grant_token_and_keeps_working_after_owner_logout() {
    let w = world().await;
    let address = w.car.address().await.unwrap();
    let (owner_link, issued) = w.grant(&[SharePermission::VehicleStatus]).await;
    let held = w.co_user.accept_invite(&issued.invite).unwrap();
    assert_eq!(held.grant_id, issued.grant_id);
    assert_eq!(
        held.sharer_nickname, "Ana",
        "R22: the sharer's nickname is shown"
    );
    assert_eq!(held.permissions, vec![SharePermission::VehicleStatus]);

    // The co-user cannot resolve the owner's own token, only the grant's.
    let report = w.co_user.discover(Duration::from_secs(3)).await.unwrap();
    assert!(report.resolved.is_empty(), "the owner's token stays opaque");
    let found = w
        .co_user
        .discover_shared_vehicle(issued.grant_id, Duration::from_secs(15))
        .await
        .unwrap();
    assert_eq!(found.address, address);
    assert_ne!(Some(found.token), w.car.current_token().await);

    let link = w
        .co_user
        .connect_shared(issued.grant_id, address)
        .await
        .unwrap();
    assert_eq!(link.round_trips(), 2);
    assert_eq!(link.vehicle_key(), w.car.public_key().unwrap());
    let status = link
        .get(vec![signals::DOOR_IS_LOCKED[0].into()])
        .await
        .unwrap();
    assert_eq!(status.len(), 1);
    assert!(denied(link.command(control::lock(), &[1; 16]).await));
    assert_eq!(w.car.executions().await.unwrap().lock, 0);
    assert_eq!(w.car.co_user_sessions().await, 1);

    // The owner logs out of the car: the owner's session closes, the
    // co-user's keeps working.
    assert_eq!(w.car.owner_logged_out().await.unwrap(), 1);
    let closed = tokio::time::timeout(Duration::from_secs(1), owner_link.session().closed())
        .await
        .expect("the owner's session closes");
    assert!(matches!(closed, SessionError::Closed { .. }));
    let status = link
        .get(vec![signals::DOOR_IS_LOCKED[0].into()])
        .await
        .unwrap();
    assert_eq!(status.len(), 1);
    w.car.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r16_r19_revocation_closes_the_live_co_user_session_within_a_second() {
    let w = world().await;
    let address = w.car.address().await.unwrap();
    let (owner_link, issued) = w
        .grant(&[
            SharePermission::VehicleStatus,
            SharePermission::VehicleControl,
        ])
        .await;
    w.co_user.accept_invite(&issued.invite).unwrap();
    let link = w
        .co_user
        .connect_shared(issued.grant_id, address)
        .await
        .unwrap();
    let outcome = link.command(control::lock(), &[2; 16]).await.unwrap();
    assert_eq!(outcome.state, tether_proto::v1::CommandState::Succeeded);
    let mut subscription = link
        .subscribe(vec![signals::DOOR_IS_LOCKED[0].into()])
        .await
        .unwrap();
    subscription.next().await.unwrap().unwrap();

    let started = Instant::now();
    let closed = w
        .owner
        .revoke_share(&owner_link, issued.grant_id)
        .await
        .unwrap();
    assert_eq!(closed, 1, "one live co-user session closed");
    let reason = tokio::time::timeout(Duration::from_secs(1), link.session().closed())
        .await
        .expect("R16: the co-user's session closes within 1 s of the revocation");
    let elapsed = started.elapsed();
    assert!(
        matches!(
            reason,
            SessionError::Closed {
                code: Some(CloseCode::Revoked),
                ..
            }
        ),
        "closed as revoked: {reason:?}"
    );
    assert!(subscription.next().await.is_err(), "the subscription ends");
    assert!(link.get(Vec::new()).await.is_err());
    eprintln!("revocation to close: {elapsed:?}");

    // New sessions are refused, resumed or cold.
    let resumed = w.co_user.connect_shared(issued.grant_id, address).await;
    if let Ok(resumed) = resumed {
        assert!(resumed.get(Vec::new()).await.is_err(), "the ticket is dead");
    }
    w.co_user.forget_tickets().await.unwrap();
    let cold = w.co_user.connect_shared(issued.grant_id, address).await;
    assert!(cold.unwrap_err().is_refused());
    assert!(w.car.active_shares().await.is_empty());

    // Still revoked after a restart of the car; the owner cannot reinstall it.
    w.car.shutdown().await.unwrap();
    let address = w.car.start().await.unwrap();
    assert!(w.car.active_shares().await.is_empty());
    let cold = w.co_user.connect_shared(issued.grant_id, address).await;
    assert!(cold.unwrap_err().is_refused());
    w.car.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r16_grant_survives_a_car_restart() {
    let w = world().await;
    let (_owner_link, issued) = w.grant(&[SharePermission::VehicleStatus]).await;
    w.co_user.accept_invite(&issued.invite).unwrap();
    w.car.shutdown().await.unwrap();
    let address = w.car.start().await.unwrap();
    assert_eq!(w.car.active_shares().await.len(), 1);
    let link = w
        .co_user
        .connect_shared(issued.grant_id, address)
        .await
        .unwrap();
    assert!(!link.get(Vec::new()).await.unwrap().is_empty());
    w.car.shutdown().await.unwrap();
}

fn raw(kind: request::Kind) -> Envelope {
    Envelope {
        request_id: 0,
        body: Some(envelope::Body::Request(Request { kind: Some(kind) })),
        ..Envelope::default()
    }
}

fn refused(reply: Result<Envelope, SessionError>) -> bool {
    matches!(
        reply,
        Err(SessionError::Remote {
            code: ErrorCode::PermissionDenied,
            ..
        })
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r16_every_out_of_scope_request_and_escalation_is_refused() {
    let w = world().await;
    let address = w.car.address().await.unwrap();
    let (owner_link, issued) = w.grant(&[]).await;
    w.co_user.accept_invite(&issued.invite).unwrap();
    let link = w
        .co_user
        .connect_shared(issued.grant_id, address)
        .await
        .unwrap();

    assert!(denied(link.get(Vec::new()).await));
    // A subscription's refusal arrives as its first item.
    let subscribed = match link.subscribe(Vec::new()).await {
        Err(e) => denied(Err::<(), _>(e)),
        Ok(mut s) => denied(s.next().await),
    };
    assert!(subscribed);
    assert!(denied(link.command(control::lock(), &[3; 16]).await));
    assert!(denied(link.command(control::unlock(), &[4; 16]).await));
    let executions = w.car.executions().await.unwrap();
    assert_eq!((executions.lock, executions.unlock), (0, 0));

    // Escalation: the co-user re-installs its own grant, revokes it, or
    // installs one it signed itself. All refused, and the grant stands.
    let invite = ShareInvite::decode(issued.invite.as_slice()).unwrap();
    let session = link.session();
    let reinstall = raw(request::Kind::InstallShareGrant(InstallShareGrant {
        grant: invite.grant.clone(),
        grant_key: invite.grant_key.clone(),
    }));
    assert!(refused(session.call(reinstall).await));
    let revoke = raw(request::Kind::RevokeShareGrant(RevokeShareGrant {
        grant_id: issued.grant_id.to_vec(),
    }));
    assert!(refused(session.call(revoke).await));
    assert_eq!(w.car.active_shares().await.len(), 1);

    // A grant signed by another authority is refused even from the owner's
    // own session: only the owner's authority signs grants.
    let forged = w
        .co_user
        .share(
            &owner_link,
            w.co_user.authority_public_key().unwrap(),
            &options(&[SharePermission::VehicleControl]),
        )
        .await;
    assert!(refused_with(forged, ErrorCode::BadRequest));

    // Ping stays allowed: the session itself is fine.
    let ping = raw(request::Kind::Ping(tether_proto::v1::Ping {
        payload: b"hi".to_vec(),
    }));
    assert!(session.call(ping).await.is_ok());
    w.car.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r16_invites_for_another_account_or_tampered_are_refused() {
    let w = world().await;
    let (_owner_link, issued) = w.grant(&[SharePermission::VehicleStatus]).await;
    let third = Phone::open(NodeConfig::default()).unwrap();
    third.create_account().unwrap();
    assert!(matches!(
        third.accept_invite(&issued.invite),
        Err(NodeError::Share(_))
    ));
    let mut tampered = ShareInvite::decode(issued.invite.as_slice()).unwrap();
    let mut grant = tampered.grant.take().unwrap();
    let last = grant.body.len() - 1;
    grant.body[last] ^= 1;
    tampered.grant = Some(grant);
    assert!(matches!(
        w.co_user.accept_invite(&tampered.encode_to_vec()),
        Err(NodeError::Share(_))
    ));
    assert!(w.co_user.held_shares().unwrap().is_empty());
    assert!(matches!(
        w.co_user.accept_invite(b"\xff\xff not an invite"),
        Err(NodeError::Share(_))
    ));
    w.car.shutdown().await.unwrap();
}

/// What the car answers to a `ClientHello` made with `admission_key` on a
/// fresh connection: the decoded reply (a `Refuse`, or the car's
/// `ServerAuth` with its certificate). The phone refuses an expired invite
/// before asking the car, so the door is tried with a raw handshake.
async fn car_answer_to_grant_hello(
    address: std::net::SocketAddr,
    admission_key: [u8; 32],
    owner_authority: [u8; 32],
) -> tether_proto::v1::handshake_message::Message {
    use tether_identity::{AccountAuthority, Credentials, DeviceKey, LocalAuthority, Role};
    use tether_session::handshake::{
        ClientHandshake, EXPORTER_LABEL, GrantAccess, HandshakeConfig, Output, decode_message,
    };
    use tether_session::quic::{Connector, SessionConfig};
    let now = tether_node::unix_now();
    let mut authority = LocalAuthority::generate().unwrap();
    let key = DeviceKey::generate().unwrap();
    let enrolled = authority
        .enroll(&key.enrollment_request(Role::Phone, [3; 16]), now)
        .unwrap();
    let credentials = std::sync::Arc::new(Credentials::from_grant(key, &enrolled, now).unwrap());
    let connector = Connector::new(
        "127.0.0.1:0".parse().unwrap(),
        credentials.clone(),
        SessionConfig::default(),
    )
    .unwrap();
    let conn = connector.connect_unauthenticated(address).await.unwrap();
    let mut exporter = [0; 32];
    conn.export_keying_material(&mut exporter, EXPORTER_LABEL, b"")
        .unwrap();
    let access = GrantAccess {
        admission_key,
        owner_authority_public_key: owner_authority,
        expect_device: false,
    };
    let mut core = ClientHandshake::with_grant(
        credentials,
        &access,
        exporter,
        [9; 32],
        &HandshakeConfig::default(),
    );
    let Output::Transmit(hello) = core.poll_output() else {
        panic!("the first output is the ClientHello");
    };
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&tether_session::encode_frame(&hello))
        .await
        .unwrap();
    let mut len = [0; 4];
    recv.read_exact(&mut len).await.unwrap();
    let mut reply = vec![0; u32::from_be_bytes(len) as usize];
    recv.read_exact(&mut reply).await.unwrap();
    decode_message(&reply).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r16_an_expired_grant_is_cut_off_at_its_end_without_any_request() {
    use tether_proto::v1::handshake_message::Message as Hs;
    let w = world().await;
    let address = w.car.address().await.unwrap();
    let owner_link = w.owner.connect(address).await.unwrap();
    let issued = w
        .owner
        .share(
            &owner_link,
            w.co_user.authority_public_key().unwrap(),
            &ShareOptions {
                valid_for_s: 4,
                ..options(&[SharePermission::VehicleStatus])
            },
        )
        .await
        .unwrap();
    w.co_user.accept_invite(&issued.invite).unwrap();
    let invite = ShareInvite::decode(issued.invite.as_slice()).unwrap();
    let grant_key = tether_identity::GrantKey::from_bytes(&invite.grant_key).unwrap();
    let owner_authority = w.owner.authority_public_key().unwrap();

    // While the grant stands: found by its token, admitted, served.
    w.co_user
        .discover_shared_vehicle(issued.grant_id, Duration::from_secs(15))
        .await
        .unwrap();
    let link = w
        .co_user
        .connect_shared(issued.grant_id, address)
        .await
        .unwrap();
    assert!(!link.get(Vec::new()).await.unwrap().is_empty());
    assert_eq!(w.car.co_user_sessions().await, 1);

    // The co-user sends nothing more; the car closes the session at the
    // grant's end (the timeout only keeps a broken build from hanging).
    let reason = tokio::time::timeout(Duration::from_secs(30), link.session().closed())
        .await
        .expect("R16: the car closes the co-user's session when the grant ends");
    assert!(
        matches!(
            reason,
            SessionError::Closed {
                code: Some(CloseCode::Revoked),
                ..
            }
        ),
        "closed as ended: {reason:?}"
    );
    assert_eq!(w.car.co_user_sessions().await, 0);
    assert!(w.car.active_shares().await.is_empty());

    // The door: the grant's proof gets a bare Refuse, not the car's
    // certificate (R2, R16).
    let answer =
        car_answer_to_grant_hello(address, grant_key.admission_key(), owner_authority).await;
    assert!(matches!(answer, Hs::Refuse(_)), "{answer:?}");

    // The advert is withdrawn: the grant's token no longer resolves.
    let mut browser = tether_discovery::Browser::start(
        vec![grant_key.discovery_key()],
        tether_discovery::Interfaces::LoopbackOnly,
    )
    .unwrap();
    let found = browser.find_first(Duration::from_secs(3)).await;
    let _ = browser.shutdown().await;
    assert!(found.is_err(), "the expired grant is still advertised");
    w.car.shutdown().await.unwrap();
}
