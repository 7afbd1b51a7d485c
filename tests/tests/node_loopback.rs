//! Head unit and phones as nodes over real loopback mDNS and QUIC:
//! discovery → session → commands.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

use std::time::Duration;

use tether_control::client as control;
use tether_control::signals;
use tether_node::{HeadUnit, NodeConfig, Phone, SignalData, VehicleRoute};
use tether_proto::v1::CommandState;

async fn enrolled_pair() -> (Phone, HeadUnit) {
    let phone = Phone::open(NodeConfig::default()).unwrap();
    phone.create_account().unwrap();
    let car = HeadUnit::open(NodeConfig::default()).unwrap();
    car.complete_enrollment(
        &phone
            .enroll_device(&car.enrollment_request().unwrap())
            .unwrap(),
    )
    .unwrap();
    car.start().await.unwrap();
    (phone, car)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r2_discovery_then_session_then_commands() {
    let (phone, car) = enrolled_pair().await;
    let found = phone
        .discover_vehicle(Duration::from_secs(15))
        .await
        .unwrap();
    assert_eq!(Some(found.address), car.address().await);
    assert_eq!(Some(found.token.clone()), car.current_token().await);

    let link = phone.connect(found.address).await.unwrap();
    assert_eq!(link.round_trips(), 1, "cold: one round trip (SPEC §5.6)");
    assert_eq!(link.vehicle_key(), car.public_key().unwrap());

    let status = link
        .get(vec![signals::DOOR_IS_LOCKED[0].into()])
        .await
        .unwrap();
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].value, SignalData::Bool(false));

    let outcome = link.command(control::lock(), &[7; 16]).await.unwrap();
    assert_eq!(outcome.state, CommandState::Succeeded);
    assert_eq!(
        outcome.states,
        vec![
            CommandState::Accepted,
            CommandState::InProgress,
            CommandState::Succeeded
        ]
    );
    let status = link
        .get(vec![signals::DOOR_IS_LOCKED[0].into()])
        .await
        .unwrap();
    assert_eq!(status[0].value, SignalData::Bool(true));
    car.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r23_replayed_command_executes_once_with_the_same_receipt() {
    let (phone, car) = enrolled_pair().await;
    let address = car.address().await.unwrap();
    let link = phone.connect(address).await.unwrap();
    let key = [42u8; 20];
    let first = link.command(control::lock(), &key).await.unwrap();
    // A retry on the same session, and a replay on a new session.
    let retry = link.command(control::lock(), &key).await.unwrap();
    link.close();
    let link2 = phone.connect(address).await.unwrap();
    let replay = link2.command(control::lock(), &key).await.unwrap();
    assert_eq!(first.receipt, retry.receipt);
    assert_eq!(first.receipt, replay.receipt);
    assert_eq!(
        retry.states,
        vec![CommandState::Succeeded],
        "a retry reports only the final state"
    );
    assert_eq!(car.executions().await.unwrap().lock, 1);
    // Same key, another command: refused, nothing executed.
    let conflict = link2.command(control::unlock(), &key).await;
    assert!(conflict.is_err(), "key reuse for another command must fail");
    assert_eq!(car.executions().await.unwrap().unlock, 0);
    car.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r3_other_account_resolves_nothing_and_is_refused() {
    let (_phone, car) = enrolled_pair().await;
    let stranger = Phone::open(NodeConfig::default()).unwrap();
    stranger.create_account().unwrap();
    let report = stranger.discover(Duration::from_secs(3)).await.unwrap();
    assert!(report.resolved.is_empty(), "{report:?}");
    assert!(
        report.unresolvable >= 1,
        "the car's token should be seen but not resolved"
    );
    let err = stranger
        .connect(car.address().await.unwrap())
        .await
        .unwrap_err();
    assert!(err.is_refused(), "{err:?}");
    let stats = car.listener_stats().await.unwrap();
    assert_eq!(stats.authenticated, 0);
    assert!(car.executions().await.unwrap().total() == 0);
    car.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_pushes_changes_and_resumed_session_works() {
    let (phone, car) = enrolled_pair().await;
    let address = car.address().await.unwrap();
    let link = phone.connect(address).await.unwrap();
    let mut sub = link
        .subscribe(vec![signals::DOOR_IS_LOCKED[0].into()])
        .await
        .unwrap();
    let first = sub.next().await.unwrap().unwrap();
    assert_eq!(first[0].value, SignalData::Bool(false));
    link.command(control::lock(), &[1; 16]).await.unwrap();
    let pushed = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(pushed[0].value, SignalData::Bool(true));
    sub.cancel();
    for _ in 0..200 {
        if phone.has_ticket(address).await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    link.close();
    let resumed = phone.connect(address).await.unwrap();
    assert!(resumed.resumed());
    // SPEC §5.8: the ResumeHello and the read go as 0-RTT early data.
    assert_eq!(resumed.round_trips(), 0);
    assert_eq!(
        resumed
            .get(vec![signals::RANGE.into()])
            .await
            .unwrap()
            .len(),
        1
    );
    car.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r31_state_is_kept_in_a_private_data_directory() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile_dir();
    let config = NodeConfig {
        data_dir: Some(dir.clone()),
        ..NodeConfig::default()
    };
    {
        let phone = Phone::open(config.clone()).unwrap();
        phone.create_account().unwrap();
    }
    // Reopened: the account and the authority survive.
    let phone = Phone::open(config).unwrap();
    assert!(phone.is_enrolled());
    assert!(
        phone.create_account().is_err(),
        "a second account must not replace the first"
    );
    let db = dir.join("tether.sqlite3");
    let mode = std::fs::metadata(&db).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    std::fs::remove_dir_all(&dir).ok();
}

fn tempfile_dir() -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    std::env::temp_dir().join(format!("tether-test-{}-{nanos}", std::process::id()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r23_replay_after_a_head_unit_restart_executes_nothing() {
    let dir = tempfile_dir();
    let car_config = NodeConfig {
        data_dir: Some(dir.clone()),
        ..NodeConfig::default()
    };
    let phone = Phone::open(NodeConfig::default()).unwrap();
    phone.create_account().unwrap();
    let key = [5u8; 16];
    let first = {
        let car = HeadUnit::open(car_config.clone()).unwrap();
        car.complete_enrollment(
            &phone
                .enroll_device(&car.enrollment_request().unwrap())
                .unwrap(),
        )
        .unwrap();
        let address = car.start().await.unwrap();
        let link = phone.connect(address).await.unwrap();
        let outcome = link.command(control::lock(), &key).await.unwrap();
        assert_eq!(car.executions().await.unwrap().lock, 1);
        link.close();
        car.shutdown().await.unwrap();
        outcome
    };
    // The head unit restarts from its data directory: a new process-level
    // vehicle, listener and ticket key, the same command log.
    let car = HeadUnit::open(car_config).unwrap();
    assert!(car.is_enrolled());
    let address = car.start().await.unwrap();
    let link = phone.connect(address).await.unwrap();
    let replay = link.command(control::lock(), &key).await.unwrap();
    assert_eq!(
        replay.receipt, first.receipt,
        "the stored receipt comes back byte for byte"
    );
    assert_eq!(
        car.executions().await.unwrap().lock,
        0,
        "the replay must not execute again"
    );
    // A new key still executes, with a sequence number after the first.
    let next = link.command(control::unlock(), &[6u8; 16]).await.unwrap();
    assert!(next.sequence > first.sequence);
    car.shutdown().await.unwrap();
    std::fs::remove_dir_all(&dir).ok();
}

/// The SHA-256 of the TLS certificate the car shows a stranger who only
/// completes QUIC (what such a peer could link the car by).
async fn certificate_seen_by_a_stranger(address: std::net::SocketAddr) -> [u8; 32] {
    use tether_identity::{AccountAuthority, Credentials, DeviceKey, LocalAuthority, Role};
    let now = tether_node::unix_now();
    let mut authority = LocalAuthority::generate().unwrap();
    let key = DeviceKey::generate().unwrap();
    let enrolled = authority
        .enroll(&key.enrollment_request(Role::Phone, [3; 16]), now)
        .unwrap();
    let stranger = tether_session::quic::Connector::new(
        "127.0.0.1:0".parse().unwrap(),
        std::sync::Arc::new(Credentials::from_grant(key, &enrolled, now).unwrap()),
        tether_session::quic::SessionConfig::default(),
    )
    .unwrap();
    let conn = stranger.connect_unauthenticated(address).await.unwrap();
    tether_session::quic::peer_certificate_pin(&conn).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r2_each_token_rotation_brings_a_new_tls_certificate() {
    let (phone, car) = enrolled_pair().await;
    let address = car.address().await.unwrap();
    let first = certificate_seen_by_a_stranger(address).await;
    assert_eq!(first, certificate_seen_by_a_stranger(address).await);
    let link = phone.connect(address).await.unwrap();

    let token = car.current_token().await.unwrap();
    assert_ne!(car.rotate_token().await.unwrap(), token);
    let after = certificate_seen_by_a_stranger(address).await;
    assert_ne!(
        first, after,
        "R2: the old and new tokens share no certificate"
    );

    // The open session keeps working; the next one is a full handshake.
    assert_eq!(
        link.get(vec![signals::DOOR_IS_LOCKED[0].into()])
            .await
            .unwrap()
            .len(),
        1
    );
    // The next connection tries early data; the car, with a new
    // certificate and TLS ticket store, refuses it, and the session
    // authenticates again with a full handshake (SPEC §5.8): it serves.
    let again = phone.connect(address).await.unwrap();
    assert_eq!(
        again
            .get(vec![signals::DOOR_IS_LOCKED[0].into()])
            .await
            .unwrap()
            .len(),
        1
    );
    // A subscription opened in early data the car refuses is opened again
    // by itself: its reader sees values, not the refusal.
    assert_ne!(car.rotate_token().await.unwrap(), token);
    let third = phone.connect(address).await.unwrap();
    let mut sub = third
        .subscribe(vec![signals::DOOR_IS_LOCKED[0].into()])
        .await
        .unwrap();
    assert_eq!(sub.next().await.unwrap().unwrap().len(), 1);
    car.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_phone_reaches_the_car_where_it_answered_last_and_browses_when_it_moved() {
    let (phone, car) = enrolled_pair().await;
    let (link, route) = phone.reach_vehicle(Duration::from_secs(15)).await.unwrap();
    assert_eq!(route, VehicleRoute::Discovered, "nothing remembered yet");
    assert!(!link.get(Vec::new()).await.unwrap().is_empty());
    link.close();

    // Run again: straight to the remembered address, no mDNS.
    let (link, route) = phone.reach_vehicle(Duration::from_secs(15)).await.unwrap();
    assert_eq!(route, VehicleRoute::Remembered);
    assert!(!link.get(Vec::new()).await.unwrap().is_empty());
    link.close();

    // The car restarts on another port: the remembered address no longer
    // answers, the phone finds the car by its token again.
    let old = car.address().await.unwrap();
    car.shutdown().await.unwrap();
    let new = car.start().await.unwrap();
    assert_ne!(old, new);
    let (link, route) = phone.reach_vehicle(Duration::from_secs(15)).await.unwrap();
    assert_eq!(route, VehicleRoute::Discovered);
    assert!(!link.get(Vec::new()).await.unwrap().is_empty());
    link.close();
    let (_, route) = phone.reach_vehicle(Duration::from_secs(15)).await.unwrap();
    assert_eq!(
        route,
        VehicleRoute::Remembered,
        "the new address is remembered"
    );
    car.shutdown().await.unwrap();
}
