//! The R23 role table, enforced end to end.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

mod common;

use common::{Car, error, key, states, values};
use tether_control::{Config, PeerInfo, SessionId, client, signals};
use tether_identity::Role;
use tether_proto::v1::{CommandState, ErrorCode};

#[test]
fn r23_phone_and_watch_may_read_and_command() {
    for role in [Role::Phone, Role::Watch] {
        let mut car = Car::new();
        let (_, got) = car.request(role, &client::get_signals(1, &[signals::LOCATION]));
        assert_eq!(values(&got[0]).values.len(), 1, "{role}");
        let (_, out) = car.request(role, &client::command(2, &key(1), 0, client::lock()));
        assert_eq!(
            states(&out).last(),
            Some(&CommandState::Succeeded),
            "{role}"
        );
    }
}

#[test]
fn r23_hub_cannot_command_the_car() {
    let mut car = Car::new();
    let (_, out) = car.request(Role::Hub, &client::command(1, &key(1), 0, client::unlock()));
    let (code, message) = error(&out);
    assert_eq!(code, ErrorCode::PermissionDenied);
    assert!(message.contains("not permitted"), "{message}");
    assert_eq!(car.service.backend().executions().total(), 0);
    assert!(
        car.service.log().is_empty(),
        "a refused command leaves no receipt"
    );
}

#[test]
fn r23_hub_reads_the_car_but_not_its_location() {
    let mut car = Car::new();
    let (_, all) = car.request(Role::Hub, &client::get_signals(1, &[]));
    let got = values(&all[0]);
    assert_eq!(got.values.len(), signals::CATALOGUE.len() - 1);
    assert!(got.values.iter().all(|v| v.path != signals::LOCATION));

    let (_, out) = car.request(Role::Hub, &client::get_signals(2, &[signals::LOCATION]));
    assert_eq!(error(&out).0, ErrorCode::PermissionDenied);
    let (_, out) = car.request(Role::Hub, &client::subscribe(3, &[signals::LOCATION]));
    assert_eq!(error(&out).0, ErrorCode::PermissionDenied);
    let (_, out) = car.request(Role::Hub, &client::subscribe(4, &[signals::RANGE]));
    assert_eq!(values(&out[0]).values.len(), 1);
}

#[test]
fn r23_vehicle_peer_reads_but_cannot_command() {
    let mut car = Car::new();
    let (_, got) = car.request(Role::Vehicle, &client::get_signals(1, &[signals::SPEED]));
    assert_eq!(values(&got[0]).values.len(), 1);
    let (_, out) = car.request(
        Role::Vehicle,
        &client::command(2, &key(1), 0, client::lock()),
    );
    assert_eq!(error(&out).0, ErrorCode::PermissionDenied);
    assert_eq!(car.service.backend().executions().total(), 0);
}

#[test]
fn r23_device_can_neither_read_subscribe_nor_command() {
    let mut car = Car::new();
    for request in [
        client::get_signals(1, &[]),
        client::get_signals(2, &[signals::SPEED]),
        client::subscribe(3, &[]),
        client::command(4, &key(1), 0, client::flash_honk(true, true)),
    ] {
        let (_, out) = car.request(Role::Device, &request);
        assert_eq!(error(&out).0, ErrorCode::PermissionDenied, "{request:?}");
    }
    assert_eq!(car.service.subscription_count(), 0);
    assert_eq!(car.service.backend().executions().total(), 0);
}

#[test]
fn r23_refused_hub_command_does_not_spend_the_owners_key() {
    // The hub cannot claim (or learn about) a key: the phone's command with
    // the same key still runs.
    let mut car = Car::new();
    car.request(Role::Hub, &client::command(1, &key(9), 0, client::unlock()));
    let (_, out) = car.request(Role::Phone, &client::command(2, &key(9), 0, client::lock()));
    assert_eq!(states(&out).last(), Some(&CommandState::Succeeded));
    assert_eq!(car.service.backend().executions().lock, 1);
}

#[test]
fn r21_r32_a_co_users_phone_is_not_the_owners_and_reads_no_position_without_its_grant() {
    let mut car = Car::new();
    let co_user = PeerInfo::co_user(Role::Phone, SessionId(7), false);
    let (_, out) = car.request_as(co_user, &client::get_signals(1, &[signals::LOCATION]));
    assert_eq!(error(&out).0, ErrorCode::PermissionDenied);
    let (_, out) = car.request_as(co_user, &client::subscribe(2, &[signals::LOCATION]));
    assert_eq!(error(&out).0, ErrorCode::PermissionDenied);
    let (_, all) = car.request_as(co_user, &client::get_signals(3, &[]));
    let got = values(&all[0]);
    assert!(!got.values.is_empty(), "the car's state is readable");
    assert!(got.values.iter().all(|v| v.path != signals::LOCATION));
    let (_, all) = car.request_as(co_user, &client::subscribe(4, &[]));
    assert!(
        values(&all[0])
            .values
            .iter()
            .all(|v| v.path != signals::LOCATION)
    );
}

#[test]
fn r32_a_co_user_with_the_location_permission_reads_the_position_now_but_never_tracks_it() {
    let mut car = Car::new();
    let co_user = PeerInfo::co_user(Role::Phone, SessionId(7), true);
    let (_, got) = car.request_as(co_user, &client::get_signals(1, &[signals::LOCATION]));
    assert_eq!(values(&got[0]).values.len(), 1, "at the moment: yes");
    let (_, out) = car.request_as(co_user, &client::subscribe(2, &[signals::LOCATION]));
    let (code, message) = error(&out);
    assert_eq!(code, ErrorCode::PermissionDenied);
    assert!(message.contains("never by subscription"), "{message}");
    let (_, all) = car.request_as(co_user, &client::subscribe(3, &[]));
    let got = values(&all[0]);
    assert!(!got.values.is_empty());
    assert!(
        got.values.iter().all(|v| v.path != signals::LOCATION),
        "a subscription to everything leaves the position out"
    );
    assert_eq!(car.service.subscription_count(), 1);
}

#[test]
fn one_session_cannot_take_every_subscription_and_lock_the_owner_out() {
    let mut car = Car::new();
    let per_session = Config::default().max_subscriptions_per_session;
    assert!(per_session < Config::default().max_subscriptions);
    let greedy = PeerInfo::co_user(Role::Phone, SessionId(1), false);
    for id in 0..per_session as u64 {
        let (_, out) = car.request_as(greedy, &client::subscribe(id, &[signals::SPEED]));
        assert!(!values(&out[0]).values.is_empty());
    }
    let (_, out) = car.request_as(greedy, &client::subscribe(99, &[signals::SPEED]));
    let (code, message) = error(&out);
    assert_eq!(code, ErrorCode::Busy);
    assert!(message.contains("this session"), "{message}");
    let owner = PeerInfo::member(Role::Phone, SessionId(2));
    let (_, out) = car.request_as(owner, &client::subscribe(100, &[signals::SPEED]));
    assert_eq!(
        values(&out[0]).values.len(),
        1,
        "the owner still subscribes"
    );
}
