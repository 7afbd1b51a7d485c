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

    /// A grant of `permissions` as [`World::grant`] makes it, accepted by
    /// the co-user, and the co-user's session to the car under it (found
    /// at the car's address, not by discovery).
    async fn shared(
        &self,
        permissions: &[SharePermission],
    ) -> (VehicleLink, IssuedShare, VehicleLink) {
        let (owner_link, issued) = self.grant(permissions).await;
        self.co_user.accept_invite(&issued.invite).unwrap();
        let address = self.car.address().await.unwrap();
        let co_link = self
            .co_user
            .connect_shared(issued.grant_id, address)
            .await
            .unwrap();
        (owner_link, issued, co_link)
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
    // A cold handshake under the grant: QUIC's round trip only (SPEC §5.6).
    assert_eq!(link.round_trips(), 1);
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
    let (owner_link, issued, link) = w
        .shared(&[
            SharePermission::VehicleStatus,
            SharePermission::VehicleControl,
        ])
        .await;
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
    let (owner_link, issued, link) = w.shared(&[]).await;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r21_r32_a_co_user_reads_the_cars_position_only_with_the_location_permission() {
    let w = world().await;
    let position = || vec![signals::LOCATION.to_owned()];

    // VEHICLE_STATUS: the car's state, but not where it is, though the
    // co-user's certificate is a phone's.
    let (_owner_link, _status_only, link) = w.shared(&[SharePermission::VehicleStatus]).await;
    assert!(denied(link.get(position()).await));
    let everything = link.get(Vec::new()).await.unwrap();
    assert!(!everything.is_empty());
    assert!(everything.iter().all(|v| v.path != signals::LOCATION));

    // VEHICLE_LOCATION as well: the position at the moment, never as a
    // subscription (a track).
    let (_owner_link, _with_location, link) = w
        .shared(&[
            SharePermission::VehicleStatus,
            SharePermission::VehicleLocation,
        ])
        .await;
    assert_eq!(link.get(position()).await.unwrap().len(), 1);
    let tracked = match link.subscribe(position()).await {
        Err(e) => denied(Err::<(), _>(e)),
        Ok(mut s) => denied(s.next().await),
    };
    assert!(tracked, "R32: no subscription to the position");
    w.car.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r16_r23_only_the_owners_phone_installs_and_revokes_grants() {
    let w = world().await;
    let address = w.car.address().await.unwrap();
    let (_owner_link, issued) = w.grant(&[SharePermission::VehicleStatus]).await;
    let invite = ShareInvite::decode(issued.invite.as_slice()).unwrap();
    for role in [
        tether_identity::Role::Watch,
        tether_identity::Role::Hub,
        tether_identity::Role::Vehicle,
    ] {
        let member = support::session_as(&w.owner, address, role).await;
        let revoke = raw(request::Kind::RevokeShareGrant(RevokeShareGrant {
            grant_id: issued.grant_id.to_vec(),
        }));
        assert!(refused(member.call(revoke).await), "{role:?} revokes");
        let install = raw(request::Kind::InstallShareGrant(InstallShareGrant {
            grant: invite.grant.clone(),
            grant_key: invite.grant_key.clone(),
        }));
        assert!(refused(member.call(install).await), "{role:?} installs");
    }
    assert_eq!(w.car.active_shares().await.len(), 1, "the grant stands");
    w.car.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r16_r19_revocation_cuts_the_co_user_off_even_while_the_store_fails() {
    let dir = tempfile::tempdir().unwrap();
    let owner = Phone::open(NodeConfig::default()).unwrap();
    owner.create_account().unwrap();
    let car = HeadUnit::open(NodeConfig {
        data_dir: Some(dir.path().join("car")),
        ..NodeConfig::default()
    })
    .unwrap();
    car.complete_enrollment(
        &owner
            .enroll_device(&car.enrollment_request().unwrap())
            .unwrap(),
    )
    .unwrap();
    let address = car.start().await.unwrap();
    let co_user = Phone::open(NodeConfig::default()).unwrap();
    co_user.create_account().unwrap();
    let w = World {
        owner,
        car,
        co_user,
    };
    let (owner_link, issued, link) = w.shared(&[SharePermission::VehicleStatus]).await;
    assert!(!link.get(Vec::new()).await.unwrap().is_empty());

    // The car's store fails: its grants table is gone for a while.
    let database = dir.path().join("car").join(tether_store::DATABASE_FILE);
    let sql = rusqlite::Connection::open(&database).unwrap();
    sql.execute_batch("ALTER TABLE share_grants RENAME TO share_grants_away")
        .unwrap();
    let revoking = w.owner.revoke_share(&owner_link, issued.grant_id);
    let meanwhile = async {
        let closed = tokio::time::timeout(Duration::from_secs(1), link.session().closed()).await;
        // The store comes back; the car's retries store the revocation.
        sql.execute_batch("ALTER TABLE share_grants_away RENAME TO share_grants")
            .unwrap();
        closed
    };
    let (revoked, closed) = tokio::join!(revoking, meanwhile);
    let closed = closed.expect("R16: the co-user is cut off while the store fails");
    assert!(
        matches!(
            closed,
            SessionError::Closed {
                code: Some(CloseCode::Revoked),
                ..
            }
        ),
        "{closed:?}"
    );
    assert_eq!(revoked.unwrap(), 1);
    w.co_user.forget_tickets().await.unwrap();
    assert!(
        w.co_user
            .connect_shared(issued.grant_id, address)
            .await
            .unwrap_err()
            .is_refused()
    );

    // The revocation was stored: a restart does not bring the grant back.
    w.car.shutdown().await.unwrap();
    let address = w.car.start().await.unwrap();
    assert!(w.car.active_shares().await.is_empty());
    assert!(
        w.co_user
            .connect_shared(issued.grant_id, address)
            .await
            .unwrap_err()
            .is_refused()
    );
    w.car.shutdown().await.unwrap();
}

/// Idempotency keys are scoped to their principal (SPEC §8.3): the owner's
/// phone and a co-user (by its grant) sending the same key are two
/// commands, each run and each with its own receipt; a retry by either
/// still gets its own receipt and runs nothing (at most once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r23_one_key_from_the_owner_and_a_co_user_executes_twice_each_with_its_own_receipt() {
    let w = world().await;
    let (owner_link, _issued, co_link) = w.shared(&[SharePermission::VehicleControl]).await;
    let key = [77u8; 16];
    let owner_first = owner_link.command(control::lock(), &key).await.unwrap();
    let co_first = co_link.command(control::lock(), &key).await.unwrap();
    assert_eq!(
        co_first.states,
        vec![
            tether_proto::v1::CommandState::Accepted,
            tether_proto::v1::CommandState::InProgress,
            tether_proto::v1::CommandState::Succeeded
        ],
        "the co-user's command ran: it is not the owner's receipt"
    );
    assert_ne!(owner_first.receipt, co_first.receipt);
    assert!(co_first.sequence > owner_first.sequence);
    assert_eq!(w.car.executions().await.unwrap().lock, 2);

    let owner_retry = owner_link.command(control::lock(), &key).await.unwrap();
    let co_retry = co_link.command(control::lock(), &key).await.unwrap();
    assert_eq!(owner_retry.receipt, owner_first.receipt);
    assert_eq!(co_retry.receipt, co_first.receipt);
    assert_eq!(w.car.executions().await.unwrap().lock, 2);
    w.car.shutdown().await.unwrap();
}

/// Whether the car refuses `phone`'s member session to `address` (SPEC
/// §17.5): the connection fails, or it is closed `logged out` at once and
/// serves nothing. Returns whether the attempt resumed a ticket, too (a
/// refused resumption can fail `connect` itself, when the close arrives
/// under the phone's first request: then it resumed if it held a ticket).
async fn member_refused(phone: &Phone, address: std::net::SocketAddr) -> (bool, bool) {
    let had_ticket = phone.has_ticket(address).await;
    let link = match phone.connect(address).await {
        Err(_) => return (true, had_ticket),
        Ok(link) => link,
    };
    let resumed = link.resumed();
    let closed = tokio::time::timeout(Duration::from_secs(1), link.session().closed()).await;
    let logged_out = matches!(
        &closed,
        Ok(SessionError::Closed { code: Some(CloseCode::Normal), reason }) if reason == "logged out"
    );
    let served = link
        .get(vec![signals::DOOR_IS_LOCKED[0].into()])
        .await
        .is_ok();
    (logged_out && !served, resumed)
}

/// Logged out means refused until the owner logs in again (SPEC §17.5):
/// the owner's phone cannot come back with its ticket nor with a full
/// handshake; the co-user keeps working, old session and new (R16); after
/// the owner logs in on the car, the phone is served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r16_after_owner_logout_the_owner_is_refused_cold_and_resumed_until_login() {
    let w = world().await;
    let address = w.car.address().await.unwrap();
    let (owner_link, issued, co_link) = w.shared(&[SharePermission::VehicleStatus]).await;
    assert!(
        w.owner.has_ticket(address).await,
        "the phone holds a ticket from before the logout"
    );

    assert_eq!(w.car.owner_logged_out().await.unwrap(), 1);
    assert!(w.car.is_owner_logged_out());
    tokio::time::timeout(Duration::from_secs(1), owner_link.session().closed())
        .await
        .expect("the owner's live session closes");

    // Resumed with the ticket issued before the logout: refused.
    let (refused, resumed) = member_refused(&w.owner, address).await;
    assert!(refused, "a resumed member session is refused");
    assert!(resumed, "the attempt resumed the old ticket");
    // A full handshake with the group key: refused.
    w.owner.forget_tickets().await.unwrap();
    let (refused, resumed) = member_refused(&w.owner, address).await;
    assert!(refused, "a member's full handshake is refused");
    assert!(!resumed);

    // The co-user keeps working, and comes back too.
    co_link
        .get(vec![signals::DOOR_IS_LOCKED[0].into()])
        .await
        .unwrap();
    co_link.close();
    let again = w
        .co_user
        .connect_shared(issued.grant_id, address)
        .await
        .unwrap();
    again
        .get(vec![signals::DOOR_IS_LOCKED[0].into()])
        .await
        .unwrap();

    // The owner logs in on the car: served again.
    w.car.owner_logged_in().unwrap();
    assert!(!w.car.is_owner_logged_out());
    let link = w.owner.connect(address).await.unwrap();
    link.get(vec![signals::DOOR_IS_LOCKED[0].into()])
        .await
        .unwrap();
    link.command(control::lock(), &[3; 16]).await.unwrap();
    assert_eq!(w.car.executions().await.unwrap().lock, 1);
    w.car.shutdown().await.unwrap();
}

/// The logout is stored (SPEC §17.5): a restarted head unit still refuses
/// the owner's phone until the owner logs in, and the log-in is stored too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r16_owner_logout_survives_a_head_unit_restart_until_login() {
    let dir = tempfile::tempdir().unwrap();
    let config = NodeConfig {
        data_dir: Some(dir.path().to_path_buf()),
        ..NodeConfig::default()
    };
    let owner = Phone::open(NodeConfig::default()).unwrap();
    owner.create_account().unwrap();
    {
        let car = HeadUnit::open(config.clone()).unwrap();
        car.complete_enrollment(
            &owner
                .enroll_device(&car.enrollment_request().unwrap())
                .unwrap(),
        )
        .unwrap();
        car.start().await.unwrap();
        assert_eq!(car.owner_logged_out().await.unwrap(), 0);
        car.shutdown().await.unwrap();
    }
    let car = HeadUnit::open(config.clone()).unwrap();
    assert!(car.is_owner_logged_out(), "the logout was stored");
    let address = car.start().await.unwrap();
    let (refused, _) = member_refused(&owner, address).await;
    assert!(refused, "still logged out after the restart");
    car.owner_logged_in().unwrap();
    let link = owner.connect(address).await.unwrap();
    link.get(vec![signals::DOOR_IS_LOCKED[0].into()])
        .await
        .unwrap();
    link.close();
    car.shutdown().await.unwrap();
    drop(car);
    let car = HeadUnit::open(config).unwrap();
    assert!(!car.is_owner_logged_out(), "the log-in was stored");
}

/// What the car answers to admission hints made with `admission_key` on a
/// fresh connection: its sealed `ServerAuth` (a look-alike when it does not
/// recognise them) and whether the co-user's core can open it. The phone
/// refuses an expired invite before asking the car, so the door is tried
/// with a raw handshake.
async fn car_answer_to_grant_hints(
    address: std::net::SocketAddr,
    admission_key: [u8; 32],
    owner_authority: [u8; 32],
    entropy: [u8; 32],
) -> (
    Vec<u8>,
    Result<(), tether_session::handshake::HandshakeError>,
) {
    use tether_identity::{AccountAuthority, Credentials, DeviceKey, LocalAuthority, Role};
    use tether_session::handshake::{
        ClientHandshake, EXPORTER_LABEL, GrantAccess, HandshakeConfig,
    };
    use tether_session::quic::{Connector, SessionConfig, peer_certificate_pin};
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
    let access = GrantAccess {
        admission_key,
        owner_authority_public_key: owner_authority,
        expect_device: false,
    };
    let mut core =
        ClientHandshake::with_grant(credentials, &access, entropy, &HandshakeConfig::default());
    let conn = connector
        .connect_offering(address, core.hints())
        .await
        .unwrap();
    let mut exporter = [0; 32];
    conn.export_keying_material(&mut exporter, EXPORTER_LABEL, b"")
        .unwrap();
    let pin = peer_certificate_pin(&conn).unwrap();
    let mut uni = conn.accept_uni().await.unwrap();
    let mut len = [0; 4];
    uni.read_exact(&mut len).await.unwrap();
    let mut sealed = vec![0; u32::from_be_bytes(len) as usize];
    uni.read_exact(&mut sealed).await.unwrap();
    let opened = core.handle_server_auth(&sealed, &pin, &exporter, now);
    (sealed, opened)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r16_an_expired_grant_is_cut_off_at_its_end_without_any_request() {
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

    // While the grant stands: its hint opens the door (the check below
    // means something), it is found by its token, admitted, served.
    let (answer, opened) =
        car_answer_to_grant_hints(address, grant_key.admission_key(), owner_authority, [7; 32])
            .await;
    assert_eq!(
        answer.len(),
        tether_session::handshake::SEALED_SERVER_AUTH_LEN
    );
    assert_eq!(opened, Ok(()));
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

    // The door: the grant's hint gets a look-alike that does not open
    // under the grant key, not the car's certificate (R2, R3, R16).
    let (answer, opened) =
        car_answer_to_grant_hints(address, grant_key.admission_key(), owner_authority, [8; 32])
            .await;
    assert_eq!(
        answer.len(),
        tether_session::handshake::SEALED_SERVER_AUTH_LEN
    );
    assert_eq!(
        opened,
        Err(tether_session::handshake::HandshakeError::NotAMember)
    );

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
