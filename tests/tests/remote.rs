//! The remote path end to end (SPEC §19.11; R2, R16, R23): a phone that is
//! not on the car's LAN reads, subscribes and locks through a real
//! mosquitto on loopback, over the same Tether session as on the LAN; a
//! co-user reaches the car at its grant's rendezvous and is cut off by
//! revocation; a phone with a broker still prefers the LAN when the car is
//! on it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

#[path = "../../crates/tether-relay/tests/support/mod.rs"]
mod mosquitto;

use std::time::Duration;

use mosquitto::Mosquitto;
use tether_control::{client as control, signals};
use tether_node::{
    HeadUnit, NodeConfig, NodeError, Phone, RelayConfig, ShareOptions, SharePermission, SignalData,
    VehicleRoute, Via,
};
use tether_session::quic::{CloseCode, SessionError};

fn over(broker: &Mosquitto) -> NodeConfig {
    NodeConfig {
        relay: Some(RelayConfig::new("127.0.0.1", broker.port())),
        ..NodeConfig::default()
    }
}

/// An owner's phone and an enrolled, started car, both with the broker.
async fn owner_and_car(broker: &Mosquitto) -> (Phone, HeadUnit) {
    let owner = Phone::open(over(broker)).unwrap();
    owner.create_account().unwrap();
    let car = HeadUnit::open(over(broker)).unwrap();
    car.complete_enrollment(
        &owner
            .enroll_device(&car.enrollment_request().unwrap())
            .unwrap(),
    )
    .unwrap();
    car.start().await.unwrap();
    (owner, car)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r23_phone_reads_subscribes_and_locks_the_car_through_the_broker() {
    let broker = Mosquitto::start();
    let (owner, car) = owner_and_car(&broker).await;
    let link = owner.connect_via_relay().await.unwrap();
    assert!(link.via_relay());
    assert!(
        !link.resumed(),
        "each relay connection is cold (SPEC §19.5)"
    );

    let mut sub = link
        .subscribe(vec![signals::DOOR_IS_LOCKED[0].into()])
        .await
        .unwrap();
    let first = sub.next().await.unwrap().unwrap();
    assert_eq!(first[0].value, SignalData::Bool(false));
    let outcome = link.command(control::lock(), &[7; 16]).await.unwrap();
    assert!(!outcome.receipt.is_empty());
    let pushed = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("the subscription delivers through the broker")
        .unwrap()
        .unwrap();
    assert_eq!(pushed[0].value, SignalData::Bool(true));
    let read = link
        .get(vec![signals::DOOR_IS_LOCKED[0].into()])
        .await
        .unwrap();
    assert_eq!(read[0].value, SignalData::Bool(true));
    // A retry over the relay is the same command: run once (SPEC §8.3).
    let again = link.command(control::lock(), &[7; 16]).await.unwrap();
    assert_eq!(again.receipt, outcome.receipt);
    assert_eq!(car.executions().await.unwrap().lock, 1);
    sub.cancel();
    car.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r16_co_user_works_remotely_and_is_cut_off_by_revocation() {
    let broker = Mosquitto::start();
    let (owner, car) = owner_and_car(&broker).await;
    let co_user = Phone::open(over(&broker)).unwrap();
    co_user.create_account().unwrap();
    // The owner shares from afar, too.
    let owner_link = owner.connect_via_relay().await.unwrap();
    let issued = owner
        .share(
            &owner_link,
            co_user.authority_public_key().unwrap(),
            &ShareOptions {
                permissions: vec![SharePermission::VehicleStatus],
                devices: Vec::new(),
                valid_for_s: 3600,
                nickname: "Ana".into(),
            },
        )
        .await
        .unwrap();
    co_user.accept_invite(&issued.invite).unwrap();
    let co_link = co_user
        .connect_shared_via_relay(issued.grant_id)
        .await
        .unwrap();
    assert!(co_link.via_relay());
    co_link
        .get(vec![signals::DOOR_IS_LOCKED[0].into()])
        .await
        .unwrap();
    // The grant's scope holds over the relay as on the LAN.
    assert!(co_link.command(control::lock(), &[8; 16]).await.is_err());
    assert_eq!(car.executions().await.unwrap().lock, 0);
    // The co-user is not a member: the account's own rendezvous refuses it.
    assert!(co_user.connect_via_relay().await.is_err());

    assert_eq!(
        owner
            .revoke_share(&owner_link, issued.grant_id)
            .await
            .unwrap(),
        1
    );
    assert!(matches!(
        tokio::time::timeout(Duration::from_secs(3), co_link.session().closed())
            .await
            .expect("the co-user's relay session is closed at once"),
        SessionError::Closed {
            code: Some(CloseCode::Revoked),
            ..
        }
    ));
    // And it gets no new session: the car no longer answers at the grant's
    // rendezvous (and would refuse the grant if it did).
    let again = tokio::time::timeout(
        Duration::from_secs(10),
        co_user.connect_shared_via_relay(issued.grant_id),
    )
    .await;
    assert!(
        !matches!(again, Ok(Ok(_))),
        "a revoked co-user got a session"
    );
    car.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_path_prefers_the_lan_and_takes_the_relay_when_the_lan_fails() {
    let broker = Mosquitto::start();
    let (owner, car) = owner_and_car(&broker).await;
    // The car is on the LAN too: the LAN wins.
    let (lan, route) = owner
        .reach_vehicle_via(Via::Auto, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(route, VehicleRoute::Discovered);
    assert!(!lan.via_relay());
    drop(lan);
    // Forced, and when the LAN finds nothing in time: the relay.
    let (relay, route) = owner
        .reach_vehicle_via(Via::Relay, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(route, VehicleRoute::Relay);
    assert!(relay.via_relay());
    relay
        .get(vec![signals::DOOR_IS_LOCKED[0].into()])
        .await
        .unwrap();
    // A phone that has never seen the car on the LAN (nothing remembered)
    // and gives mDNS no time goes through the broker.
    let away = Phone::open(over(&broker)).unwrap();
    let request = away
        .enrollment_request(tether_identity::Role::Phone)
        .unwrap();
    away.complete_enrollment(&owner.enroll_device(&request).unwrap())
        .unwrap();
    let (link, route) = away
        .reach_vehicle_via(Via::Auto, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(route, VehicleRoute::Relay);
    link.get(vec![signals::DOOR_IS_LOCKED[0].into()])
        .await
        .unwrap();
    // Without a broker there is no remote path, and the error says so.
    let lan_only = Phone::open(NodeConfig::default()).unwrap();
    let request = lan_only
        .enrollment_request(tether_identity::Role::Phone)
        .unwrap();
    lan_only
        .complete_enrollment(&owner.enroll_device(&request).unwrap())
        .unwrap();
    assert!(matches!(
        lan_only.connect_via_relay().await,
        Err(NodeError::NoRelay)
    ));
    car.shutdown().await.unwrap();
}
