//! Get and Subscribe (R23).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

mod common;

use common::{Car, error, value_of, values};
use tether_control::{client, signals};
use tether_identity::Role;
use tether_proto::v1::{ErrorCode, signal_value::Value};

#[test]
fn get_with_no_paths_returns_every_signal_the_phone_may_read() {
    let mut car = Car::new();
    let (_, out) = car.request(Role::Phone, &client::get_signals(5, &[]));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].request_id, 5);
    let got = values(&out[0]);
    let paths: Vec<_> = got.values.iter().map(|v| v.path.as_str()).collect();
    let all: Vec<_> = signals::CATALOGUE.iter().map(|s| s.path).collect();
    assert_eq!(paths, all);
    assert!(got.values.iter().all(|v| v.value.is_some()));
}

#[test]
fn get_returns_exactly_the_requested_known_signals() {
    let mut car = Car::new();
    let request = client::get_signals(
        1,
        &[
            signals::BATTERY_STATE_OF_CHARGE,
            signals::DOOR_ROW1_DRIVER_IS_LOCKED,
        ],
    );
    let (_, out) = car.request(Role::Phone, &request);
    let got = values(&out[0]);
    assert_eq!(got.values.len(), 2);
    assert_eq!(
        value_of(&got, signals::BATTERY_STATE_OF_CHARGE),
        Some(Value::DoubleValue(80.0))
    );
    assert_eq!(
        value_of(&got, signals::DOOR_ROW1_DRIVER_IS_LOCKED),
        Some(Value::BoolValue(false))
    );
    assert!(got.values.iter().all(|v| v.sampled_at_ms == car.now_ms));
}

#[test]
fn get_with_an_unknown_path_is_not_found_and_does_not_echo_the_path() {
    let mut car = Car::new();
    let secret = "Vehicle.Owner.HomeAddress";
    let (_, out) = car.request(
        Role::Phone,
        &client::get_signals(1, &[signals::SPEED, secret]),
    );
    let (code, message) = error(&out);
    assert_eq!(code, ErrorCode::NotFound);
    assert!(!message.contains("Vehicle"), "{message}");
    assert_eq!(out[0].request_id, 1);
}

#[test]
fn subscription_sends_current_values_then_only_changes() {
    let mut car = Car::new();
    let request = client::subscribe(
        9,
        &[
            signals::DOOR_ROW1_DRIVER_IS_LOCKED,
            signals::CABIN_TEMPERATURE,
            signals::ODOMETER,
        ],
    );
    let (stream, first) = car.request(Role::Phone, &request);
    assert_eq!(values(&first[0]).values.len(), 3, "initial state");

    // Parked, climate off, cabin at outside temperature: nothing changes.
    for _ in 0..5 {
        assert!(common::on_stream(&car.advance(1_000), stream).is_empty());
    }

    // Lock: subscribers get the lock change together with the command's
    // final status, not at the next tick, and only the changed signal.
    let out = car.request_all(
        Role::Phone,
        &client::command(1, &common::key(1), 0, client::lock()),
    );
    let updates = common::on_stream(&out, stream);
    assert_eq!(updates.len(), 1, "{updates:?}");
    let changed = values(&updates[0]);
    assert_eq!(changed.values.len(), 1);
    assert_eq!(
        value_of(&changed, signals::DOOR_ROW1_DRIVER_IS_LOCKED),
        Some(Value::BoolValue(true))
    );
    // No repeat of an unchanged value at the next tick.
    assert!(common::on_stream(&car.advance(1_000), stream).is_empty());

    // Climate on: cabin temperature changes, odometer and lock do not.
    car.request(
        Role::Phone,
        &client::command(2, &common::key(2), 0, client::climate(true, Some(22.0))),
    );
    let updates = common::on_stream(&car.advance(60_000), stream);
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0].request_id, 9);
    let changed: Vec<_> = values(&updates[0])
        .values
        .iter()
        .map(|v| v.path.clone())
        .collect();
    assert_eq!(changed, [signals::CABIN_TEMPERATURE]);
}

#[test]
fn lock_change_reaches_subscribers_with_the_command() {
    let mut car = Car::new();
    let (stream, _) = car.request(
        Role::Hub,
        &client::subscribe(3, &[signals::DOOR_ROW2_PASSENGER_IS_LOCKED]),
    );
    let out = car.request_all(
        Role::Phone,
        &client::command(1, &common::key(1), 0, client::lock()),
    );
    let updates = common::on_stream(&out, stream);
    assert_eq!(updates.len(), 1);
    assert_eq!(
        value_of(&values(&updates[0]), signals::DOOR_ROW2_PASSENGER_IS_LOCKED),
        Some(Value::BoolValue(true))
    );
}

#[test]
fn unsubscribed_stream_gets_no_more_updates() {
    let mut car = Car::new();
    let (stream, _) = car.request(Role::Phone, &client::subscribe(1, &[signals::ODOMETER]));
    car.sim().drive(100.0);
    assert_eq!(common::on_stream(&car.advance(60_000), stream).len(), 1);
    assert!(car.service.unsubscribe(stream));
    assert!(common::on_stream(&car.advance(60_000), stream).is_empty());
    assert!(!car.service.unsubscribe(stream));
    assert_eq!(car.service.subscription_count(), 0);
}

#[test]
fn subscribe_to_an_unknown_path_registers_nothing() {
    let mut car = Car::new();
    let (_, out) = car.request(Role::Phone, &client::subscribe(1, &["Vehicle.Nope"]));
    assert_eq!(error(&out).0, ErrorCode::NotFound);
    assert_eq!(car.service.subscription_count(), 0);
}

#[test]
fn climate_moves_cabin_temperature_toward_target_as_seen_by_the_phone() {
    let mut car = Car::new();
    let cabin = |car: &mut Car| {
        let (_, out) = car.request(
            Role::Phone,
            &client::get_signals(1, &[signals::CABIN_TEMPERATURE]),
        );
        match value_of(&values(&out[0]), signals::CABIN_TEMPERATURE) {
            Some(Value::DoubleValue(t)) => t,
            other => panic!("{other:?}"),
        }
    };
    let start = cabin(&mut car);
    car.request(
        Role::Phone,
        &client::command(1, &common::key(1), 0, client::climate(true, Some(22.0))),
    );
    let mut readings = vec![start];
    for _ in 0..10 {
        car.advance(120_000);
        readings.push(cabin(&mut car));
    }
    assert!(readings.windows(2).all(|w| w[1] > w[0]), "{readings:?}");
    let last = *readings.last().unwrap();
    assert!(last < 22.0 && 22.0 - last < 0.5, "{readings:?}");
}
