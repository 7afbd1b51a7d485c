//! Minimum data (R10, R21, R32): the engine subscribes to exactly the
//! inputs its live tasks declare, drops and forgets everything else, and no
//! output, trace or snapshot ever carries a coordinate: a taint test plants
//! positions and searches everything the engine gives out for them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

mod common;

use std::collections::BTreeSet;

use common::*;
use tether_automation::{
    Action, AppIntent, Audience, Change, Condition, DayTime, Delivery, LatLon, Outcome, Output,
    Recipients, Site, Subscription, SunEvent, Task, TaskId, Test, Transition, Trigger, Value,
    VehicleEvent, VehicleState, Weekdays,
};

fn leave_home() -> Task {
    Task::new(TaskId(1), "leave home")
        .trigger(Trigger::Place {
            place: home(),
            transition: Transition::Leave,
        })
        .action(set_power(lamp(), false))
}

fn low_battery() -> Task {
    Task::new(TaskId(2), "low battery")
        .trigger(Trigger::Signal {
            path: SOC.into(),
            change: Change::Becomes(Test::Below(20.0)),
            hold_ms: 0,
        })
        .action(Action::App(AppIntent::Notify {
            recipients: Recipients::Owner,
            message: "charge".into(),
        }))
}

#[test]
fn subscriptions_are_exactly_the_declared_inputs_of_live_tasks_r21() {
    let mut h = Harness::new(Site::HeadUnit);
    h.install(leave_home());
    h.install(low_battery());
    h.install(
        Task::new(TaskId(3), "if locked, climate")
            .trigger(Trigger::Manual)
            .condition(Condition::Vehicle(VehicleEvent::Locked))
            .action(set_power(porch(), true)),
    );
    assert_eq!(
        subscribed(&h.drain()),
        [
            Subscription::Location,
            Subscription::Signal(SOC.into()),
            Subscription::Vehicle(VehicleState::Locking)
        ]
    );
    assert_eq!(
        h.engine.subscriptions(),
        BTreeSet::from([
            Subscription::Location,
            Subscription::Signal(SOC.into()),
            Subscription::Vehicle(VehicleState::Locking)
        ])
    );
    h.start();
    // Nothing undeclared is taken.
    assert_eq!(
        h.engine.handle_signal(SPEED, Value::Double(30.0), h.now),
        Delivery::NotSubscribed
    );
    assert_eq!(
        h.engine.handle_vehicle_event(VehicleEvent::Parked, h.now),
        Delivery::NotSubscribed
    );
    assert_eq!(
        h.engine
            .handle_property(&lamp(), POWER, Value::Bool(true), h.now),
        Delivery::NotSubscribed
    );
    // Disabling and removing release them.
    h.engine.set_enabled(TaskId(2), false, h.now).unwrap();
    h.engine.remove(TaskId(1), h.now).unwrap();
    assert_eq!(
        h.drain(),
        [
            Output::Unsubscribe(Subscription::Signal(SOC.into())),
            Output::Unsubscribe(Subscription::Location)
        ]
    );
    let fix = tether_automation::Fix {
        position: HOME,
        accuracy_m: 5.0,
    };
    assert_eq!(h.engine.handle_fix(fix, h.now), Delivery::NotSubscribed);
}

#[test]
fn a_hub_asks_for_place_events_not_for_the_location_r10() {
    let mut h = Harness::new(Site::Hub);
    h.engine.handle_consent(true, h.now);
    h.install(leave_home());
    assert_eq!(subscribed(&h.drain()), [Subscription::Place(home())]);
    let fix = tether_automation::Fix {
        position: HOME,
        accuracy_m: 5.0,
    };
    assert_eq!(h.engine.handle_fix(fix, h.now), Delivery::NotSubscribed);
}

#[test]
fn values_no_task_needs_any_more_are_forgotten_r21() {
    let mut h = Harness::new(Site::HeadUnit);
    h.install(low_battery());
    h.install(
        Task::new(TaskId(3), "report")
            .trigger(Trigger::Manual)
            .condition(Condition::Signal {
                path: SOC.into(),
                test: Test::Below(20.0),
            })
            .action(set_power(porch(), true)),
    );
    h.start();
    h.drain();
    h.signal(SOC, Value::Double(12.0));
    // Both tasks stop: the value is dropped with the subscription.
    h.engine.set_enabled(TaskId(2), false, h.now).unwrap();
    h.engine.set_enabled(TaskId(3), false, h.now).unwrap();
    h.engine.set_enabled(TaskId(3), true, h.now).unwrap();
    h.drain();
    h.engine.handle_manual_run(TaskId(3), h.now).unwrap();
    let trace = h.traces(TaskId(3)).pop().unwrap();
    assert_eq!(trace.outcome, Outcome::ConditionsNotMet);
    assert!(trace.conditions[0].description.contains("unknown"));
}

/// Every way a coordinate could be written down.
fn needles(at: &LatLon) -> Vec<String> {
    let mut out = Vec::new();
    for x in [at.lat, at.lon] {
        out.push(format!("{x}"));
        out.push(format!("{x:.3}"));
        out.push(format!("{x:.4}"));
        out.push(format!("{}", (x * 1e5).round() as i64));
        out.push(format!("{}", (x * 1e6).round() as i64));
        out.push(format!("{}", (x * 1e7).round() as i64));
        out.push(format!("{:x}", x.to_bits()));
        out.push(format!("{}", x.to_bits()));
        out.push(format!("{:?}", x.to_le_bytes()));
        out.push(format!("{:?}", x.to_be_bytes()));
        out.push(format!("{:?}", (x as f32).to_le_bytes()));
    }
    out
}

#[test]
fn no_output_trace_or_snapshot_carries_a_coordinate_r10_r21_r32() {
    let mut h = Harness::new(Site::HeadUnit);
    h.engine.handle_consent(true, h.now);
    h.install(
        leave_home()
            .action(Action::App(AppIntent::Navigate {
                destination: office(),
            }))
            .action(Action::App(AppIntent::Notify {
                recipients: Recipients::OwnerAndAuthorised,
                message: "left home".into(),
            })),
    );
    h.install(
        Task::new(TaskId(2), "arrive at the office after sunset")
            .trigger(Trigger::Place {
                place: office(),
                transition: Transition::Enter,
            })
            .condition(Condition::Place {
                place: home(),
                inside: false,
            })
            .condition(Condition::TimeWindow {
                after: Some(DayTime::Sun {
                    event: SunEvent::Sunset,
                    offset_min: 0,
                    place: office(),
                }),
                before: None,
                weekdays: Weekdays::ALL,
            })
            .action(set_power(porch(), true))
            .action(Action::Delay { ms: 10 * MINUTE })
            .action(set_power(porch(), false)),
    );
    h.install(
        Task::new(TaskId(3), "sunrise")
            .trigger(Trigger::Sun {
                event: SunEvent::Sunrise,
                offset_min: 10,
                place: home(),
                weekdays: Weekdays::ALL,
            })
            .action(set_power(lamp(), true)),
    );
    for audience in [Audience::Home, Audience::Phone] {
        h.engine
            .handle_remote_interest(audience, BTreeSet::from([home(), office()]), h.now)
            .unwrap();
    }
    h.start();
    h.drain();

    // A drive from home to the office in the evening, with planted fixes
    // of odd digits, jitter and a fix too inaccurate to use.
    h.advance(17 * HOUR);
    let mut planted = vec![LatLon::new(48.137_913_7, 11.575_482_9)];
    for i in 0..40 {
        let f = f64::from(i) / 39.0;
        planted.push(LatLon::new(
            48.137_913_7 + f * (OFFICE.lat - HOME.lat) + 0.000_003_1 * f64::from(i % 3),
            11.575_482_9 + 0.000_017_3 * f64::from(i % 5),
        ));
    }
    for at in &planted {
        h.run_for(20_000);
        let out = h.fix(*at, 12.0);
        h.succeed_until_quiet(out);
    }
    let _ = h.engine.handle_fix(
        tether_automation::Fix::new(48.144_444_4, 11.588_888_8, 500.0),
        h.now,
    );
    planted.push(LatLon::new(48.144_444_4, 11.588_888_8));
    h.run_for(DAY);

    // The drive did what it should, with place names only.
    let events: Vec<_> = place_events(&h.seen)
        .into_iter()
        .map(|e| (e.place.0, e.transition, e.audience))
        .collect();
    assert!(events.contains(&("home".into(), Transition::Leave, Audience::Home)));
    assert!(events.contains(&("office".into(), Transition::Enter, Audience::Phone)));
    assert!(!h.traces(TaskId(1)).is_empty() && !h.traces(TaskId(2)).is_empty());

    // Search everything the engine gave out or keeps for a position.
    let mut haystack = format!("{:?}", h.seen);
    for id in [1, 2, 3] {
        haystack.push_str(&format!("{:?}", h.traces(TaskId(id))));
    }
    haystack.push_str(&format!("{:?}", h.engine.snapshot()));
    let mut checked = 0;
    for at in planted.iter().chain([&HOME, &OFFICE]) {
        for needle in needles(at) {
            assert!(!haystack.contains(&needle), "found {needle} in the outputs");
            checked += 1;
        }
    }
    assert!(checked > 900);
    // Nor does the engine keep the fixes themselves (R32): only the
    // places' own shapes are in its state (needles that the shapes
    // contain anyway, such as a rounded longitude, cannot tell).
    let state = format!("{:?}", h.engine);
    let shapes = format!("{HOME:?} {OFFICE:?}");
    for at in &planted {
        for needle in needles(at) {
            if !shapes.contains(&needle) {
                assert!(!state.contains(&needle), "the engine kept {needle}");
            }
        }
    }
}
