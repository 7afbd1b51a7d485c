//! Each trigger kind, driven by a fake clock and scripted events (R20,
//! R21): geofences with accuracy, margin and dwell (no flapping at the
//! edge, the first fix silent, leave A before enter B), signal and property
//! changes and thresholds with holds, clock and sun times, vehicle events,
//! manual runs.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

mod common;

use std::collections::BTreeSet;

use common::*;
use tether_automation::{
    Action, AppIntent, Audience, Cause, Change, ClockTime, Date, Delivery, EngineError, Outcome,
    Output, Place, Recipients, Site, SunEvent, Task, TaskId, Test, Transition, Trigger, Value,
    VehicleEvent, Weekdays,
};

fn on_place(
    id: u64,
    place: tether_automation::PlaceId,
    transition: Transition,
    device: tether_automation::DeviceId,
    on: bool,
) -> Task {
    Task::new(TaskId(id), format!("{transition} {place}"))
        .trigger(Trigger::Place { place, transition })
        .action(set_power(device, on))
}

#[test]
fn geofence_leave_and_enter_fire_after_the_dwell_time_r21() {
    let mut h = Harness::new(Site::HeadUnit);
    h.install(on_place(1, home(), Transition::Leave, lamp(), false));
    h.install(on_place(2, home(), Transition::Enter, porch(), true));
    h.start();
    h.drain();

    assert!(h.fix(HOME, 10.0).is_empty(), "the first fix is silent");
    assert_eq!(h.engine.place_state(&home()), Some(true));
    h.advance(10_000);
    assert!(h.fix(north_of(HOME, 400.0), 10.0).is_empty());
    assert!(h.advance(29_999).is_empty(), "not held for the dwell yet");
    let out = h.advance(1);
    assert_eq!(
        writes(&actions(&out)),
        [("lamp".to_owned(), Value::Bool(false))]
    );
    h.succeed_all(&out);
    assert_eq!(h.engine.place_state(&home()), Some(false));

    h.advance(60_000);
    assert!(h.fix(north_of(HOME, 20.0), 15.0).is_empty());
    let out = h.advance(30_000);
    assert_eq!(
        writes(&actions(&out)),
        [("porch".to_owned(), Value::Bool(true))]
    );
    let trace = &h.traces(TaskId(2))[0];
    assert_eq!(
        trace.cause,
        Cause::Place {
            place: home(),
            transition: Transition::Enter
        }
    );
}

#[test]
fn polygon_place_enter_and_leave_r21() {
    let mut h = Harness::new(Site::HeadUnit);
    // A square of about 220 m around a point north of home.
    let c = north_of(HOME, 2_000.0);
    let d = 0.001;
    h.engine
        .add_place(Place::polygon(
            "yard",
            vec![
                tether_automation::LatLon::new(c.lat - d, c.lon - 1.5 * d),
                tether_automation::LatLon::new(c.lat - d, c.lon + 1.5 * d),
                tether_automation::LatLon::new(c.lat + d, c.lon + 1.5 * d),
                tether_automation::LatLon::new(c.lat + d, c.lon - 1.5 * d),
            ],
        ))
        .unwrap();
    let yard = tether_automation::PlaceId::new("yard");
    h.install(on_place(1, yard.clone(), Transition::Enter, lamp(), true));
    h.install(on_place(2, yard.clone(), Transition::Leave, lamp(), false));
    h.start();
    h.drain();
    h.fix(north_of(c, 1_000.0), 10.0);
    h.fix(c, 10.0);
    let out = h.advance(30_000);
    assert_eq!(
        writes(&actions(&out)),
        [("lamp".to_owned(), Value::Bool(true))]
    );
    h.succeed_all(&out);
    h.fix(north_of(c, 500.0), 10.0);
    let out = h.advance(30_000);
    assert_eq!(
        writes(&actions(&out)),
        [("lamp".to_owned(), Value::Bool(false))]
    );
}

#[test]
fn first_fix_after_start_sets_the_state_silently_r21() {
    let mut h = Harness::new(Site::HeadUnit);
    h.install(on_place(1, home(), Transition::Leave, lamp(), false));
    h.install(on_place(2, home(), Transition::Enter, lamp(), true));
    h.start();
    h.drain();
    // The car starts far from home: no "leave" for a state never seen.
    assert!(h.fix(north_of(HOME, 5_000.0), 10.0).is_empty());
    assert!(h.advance(120_000).is_empty());
    assert_eq!(h.engine.place_state(&home()), Some(false));
    assert!(h.traces(TaskId(1)).is_empty());
    assert!(h.traces(TaskId(2)).is_empty());
}

#[test]
fn gps_jitter_at_the_fence_edge_does_not_flap_r21() {
    let mut h = Harness::new(Site::HeadUnit);
    h.install(on_place(1, home(), Transition::Leave, lamp(), false));
    h.install(on_place(2, home(), Transition::Enter, lamp(), true));
    h.engine
        .handle_remote_interest(Audience::Phone, BTreeSet::from([home()]), h.now)
        .unwrap();
    h.start();
    h.drain();
    h.fix(HOME, 5.0);
    // Parked by the fence for ten minutes, a fix every 5 s: readings
    // inside, uncertain, one surely outside now and then, uncertain again,
    // and some too inaccurate to use.
    let script = [
        (120.0, 25.0),
        (170.0, 30.0),
        (260.0, 20.0),
        (150.0, 40.0),
        (140.0, 8.0),
        (230.0, 160.0),
        (205.0, 10.0),
        (175.0, 5.0),
    ];
    let mut outputs = Vec::new();
    for i in 0..120 {
        let (distance, accuracy) = script[i % script.len()];
        outputs.extend(h.advance(5_000));
        outputs.extend(h.fix(north_of(HOME, distance), accuracy));
    }
    outputs.extend(h.advance(120_000));
    assert!(outputs.is_empty(), "{outputs:?}");
    assert_eq!(h.engine.place_state(&home()), Some(true));
    assert!(h.traces(TaskId(1)).is_empty() && h.traces(TaskId(2)).is_empty());
}

#[test]
fn fixes_worse_than_the_accuracy_bound_are_dropped_r21() {
    let mut h = Harness::new(Site::HeadUnit);
    h.install(on_place(1, home(), Transition::Leave, lamp(), false));
    h.start();
    h.drain();
    h.fix(HOME, 10.0);
    let far = tether_automation::Fix {
        position: north_of(HOME, 2_000.0),
        accuracy_m: 101.0,
    };
    assert_eq!(h.engine.handle_fix(far, h.now), Delivery::Dropped);
    let nan = tether_automation::Fix {
        position: tether_automation::LatLon::new(f64::NAN, 11.0),
        accuracy_m: 5.0,
    };
    assert_eq!(h.engine.handle_fix(nan, h.now), Delivery::Dropped);
    assert!(h.advance(60_000).is_empty());
    assert_eq!(h.engine.place_state(&home()), Some(true));
}

#[test]
fn moving_straight_from_a_to_b_reads_leave_a_then_enter_b_r21() {
    let mut h = Harness::new(Site::HeadUnit);
    h.install(on_place(1, home(), Transition::Leave, lamp(), false));
    h.install(on_place(2, office(), Transition::Enter, porch(), true));
    h.engine
        .handle_remote_interest(Audience::Phone, BTreeSet::from([home(), office()]), h.now)
        .unwrap();
    h.start();
    h.drain();
    h.fix(HOME, 10.0);
    h.advance(60_000);
    // Out of a tunnel: the next fix is already at the office. Both
    // transitions start with it and are due together.
    h.fix(OFFICE, 10.0);
    let out = h.advance(30_000);
    let events: Vec<_> = place_events(&out)
        .into_iter()
        .map(|e| (e.place.0, e.transition))
        .collect();
    assert_eq!(
        events,
        [
            ("home".to_owned(), Transition::Leave),
            ("office".to_owned(), Transition::Enter)
        ]
    );
    assert_eq!(
        writes(&actions(&out)),
        [
            ("lamp".to_owned(), Value::Bool(false)),
            ("porch".to_owned(), Value::Bool(true))
        ]
    );
}

#[test]
fn entering_an_adjacent_place_first_leaves_the_one_surely_left_r21() {
    let mut h = Harness::new(Site::HeadUnit);
    // "street" covers 180..380 m north of home's centre: the band where
    // home is uncertain (150..200 m) overlaps it.
    h.engine
        .add_place(Place::circle("street", north_of(HOME, 280.0), 100.0))
        .unwrap();
    let street = tether_automation::PlaceId::new("street");
    h.install(on_place(1, home(), Transition::Leave, lamp(), false));
    h.install(on_place(
        2,
        street.clone(),
        Transition::Enter,
        porch(),
        true,
    ));
    h.engine
        .handle_remote_interest(Audience::Phone, BTreeSet::from([home(), street]), h.now)
        .unwrap();
    h.start();
    h.drain();
    h.fix(HOME, 5.0);
    h.advance(10_000);
    // Inside the street, still in home's margin: the street's enter starts.
    h.fix(north_of(HOME, 200.0), 5.0);
    h.advance(20_000);
    // Surely outside home now; its leave would be due 30 s from here.
    h.fix(north_of(HOME, 260.0), 10.0);
    let out = h.advance(10_000);
    let events: Vec<_> = place_events(&out)
        .into_iter()
        .map(|e| (e.place.0, e.transition))
        .collect();
    assert_eq!(
        events,
        [
            ("home".to_owned(), Transition::Leave),
            ("street".to_owned(), Transition::Enter)
        ]
    );
}

#[test]
fn signal_threshold_fires_only_on_crossing_r20() {
    let mut h = Harness::new(Site::HeadUnit);
    h.install(
        Task::new(TaskId(1), "low battery")
            .trigger(Trigger::Signal {
                path: SOC.into(),
                change: Change::Becomes(Test::Below(20.0)),
                hold_ms: 0,
            })
            .action(Action::App(AppIntent::Notify {
                recipients: Recipients::Owner,
                message: "battery low".into(),
            })),
    );
    h.start();
    h.drain();
    let mut fired = 0;
    for soc in [15.0, 25.0, 18.0, 17.0, 16.0, 30.0, 10.0] {
        h.advance(1_000);
        let out = h.signal(SOC, Value::Double(soc));
        fired += actions(&out).len();
        h.succeed_all(&out);
    }
    // 15 only sets the state; 25→18 and 30→10 cross.
    assert_eq!(fired, 2);
    let causes: Vec<_> = h.traces(TaskId(1)).into_iter().map(|t| t.cause).collect();
    assert_eq!(
        causes[0],
        Cause::Signal {
            path: SOC.into(),
            value: Value::Double(18.0),
            held_ms: 0
        }
    );
}

#[test]
fn signal_change_fires_on_every_change_r20() {
    let mut h = Harness::new(Site::HeadUnit);
    h.install(
        Task::new(TaskId(1), "locks changed")
            .trigger(Trigger::Signal {
                path: IS_LOCKED.into(),
                change: Change::Any,
                hold_ms: 0,
            })
            .action(set_power(lamp(), true))
            .mode(tether_automation::Mode::Parallel { max: 10 }),
    );
    h.start();
    h.drain();
    let mut fired = 0;
    for locked in [true, true, false, false, true] {
        let out = h.signal(IS_LOCKED, Value::Bool(locked));
        fired += actions(&out).len();
        h.succeed_all(&out);
    }
    assert_eq!(fired, 2);
}

#[test]
fn a_hold_fires_only_if_the_state_lasts_r20() {
    let mut h = Harness::new(Site::HeadUnit);
    h.install(
        Task::new(TaskId(1), "fast for 10 s")
            .trigger(Trigger::Signal {
                path: SPEED.into(),
                change: Change::Becomes(Test::Above(100.0)),
                hold_ms: 10_000,
            })
            .action(set_power(lamp(), true)),
    );
    h.start();
    h.drain();
    h.signal(SPEED, Value::Double(50.0));
    // Above for 5 s only.
    h.signal(SPEED, Value::Double(120.0));
    h.advance(5_000);
    h.signal(SPEED, Value::Double(90.0));
    assert!(h.advance(30_000).is_empty());
    // Above and staying there (still above at 110).
    h.signal(SPEED, Value::Double(130.0));
    h.advance(4_000);
    assert!(h.signal(SPEED, Value::Double(110.0)).is_empty());
    assert!(h.advance(5_999).is_empty());
    let out = h.advance(1);
    assert_eq!(actions(&out).len(), 1);
    assert_eq!(
        h.traces(TaskId(1))[0].cause,
        Cause::Signal {
            path: SPEED.into(),
            value: Value::Double(110.0),
            held_ms: 10_000
        }
    );
}

#[test]
fn device_property_change_and_threshold_r20() {
    let mut h = Harness::new(Site::Hub);
    h.install(
        Task::new(TaskId(1), "motion turns the porch on")
            .trigger(Trigger::Property {
                device: motion(),
                property: MOTION,
                change: Change::Becomes(Test::Equals(Value::Bool(true))),
                hold_ms: 0,
            })
            .action(set_power(porch(), true)),
    );
    h.install(
        Task::new(TaskId(2), "brightness changed")
            .trigger(Trigger::Property {
                device: lamp(),
                property: BRIGHTNESS,
                change: Change::Becomes(Test::Between {
                    low: 10.0,
                    high: 50.0,
                }),
                hold_ms: 0,
            })
            .action(Action::App(AppIntent::Notify {
                recipients: Recipients::OwnerAndAuthorised,
                message: "dimmed".into(),
            })),
    );
    h.start();
    h.drain();
    h.property(&motion(), MOTION, Value::Bool(false));
    let out = h.property(&motion(), MOTION, Value::Bool(true));
    assert_eq!(
        writes(&actions(&out)),
        [("porch".to_owned(), Value::Bool(true))]
    );
    h.succeed_all(&out);
    h.property(&lamp(), BRIGHTNESS, Value::Int(80));
    let out = h.property(&lamp(), BRIGHTNESS, Value::Int(30));
    assert!(matches!(
        &actions(&out)[0].effect,
        tether_automation::Effect::App(AppIntent::Notify {
            recipients: Recipients::OwnerAndAuthorised,
            ..
        })
    ));
}

#[test]
fn time_of_day_fires_on_the_chosen_weekdays_r20() {
    let mut config = config(Site::Hub);
    config.utc_offset_min = 60;
    let mut h = Harness::with_config(config);
    h.install(
        Task::new(TaskId(1), "workday mornings")
            .trigger(Trigger::Time {
                at: ClockTime::hm(7, 30),
                weekdays: Weekdays::WORKDAYS,
            })
            .action(set_power(lamp(), true)),
    );
    h.start();
    h.drain();
    let requests = h.run_for(7 * DAY);
    let times: Vec<u64> = h
        .traces(TaskId(1))
        .iter()
        .map(|t| match t.cause {
            Cause::Time {
                scheduled_ms,
                late_ms,
                missed,
                sun: None,
            } => {
                assert_eq!((late_ms, missed), (0, 0));
                scheduled_ms
            }
            ref other => panic!("{other:?}"),
        })
        .collect();
    // 07:30 at UTC+1 is 06:30 UTC, Monday to Friday.
    let expected: Vec<u64> = (0..5)
        .map(|d| MONDAY_MS + d * DAY + 6 * HOUR + 30 * MINUTE)
        .collect();
    assert_eq!(times, expected);
    assert_eq!(requests.len(), 5);
}

#[test]
fn sunset_with_an_offset_fires_at_the_computed_time_r20() {
    let mut h = Harness::new(Site::Hub);
    h.install(
        Task::new(TaskId(1), "half an hour before sunset")
            .trigger(Trigger::Sun {
                event: SunEvent::Sunset,
                offset_min: -30,
                place: home(),
                weekdays: Weekdays::ALL,
            })
            .action(set_power(porch(), true)),
    );
    h.start();
    h.drain();
    let out = h.advance(DAY);
    assert_eq!(actions(&out).len(), 1);
    let sunset = tether_automation::sun::sun_event_utc_ms(
        Date::new(2026, 11, 30),
        HOME.lat,
        HOME.lon,
        SunEvent::Sunset,
    )
    .unwrap() as u64;
    // Munich, end of November: sunset about 16:22 local, 15:22 UTC.
    assert!((MONDAY_MS + 15 * HOUR..MONDAY_MS + 16 * HOUR).contains(&sunset));
    match h.traces(TaskId(1))[0].cause {
        Cause::Time {
            sun: Some(SunEvent::Sunset),
            scheduled_ms,
            ..
        } => assert_eq!(scheduled_ms, sunset - 30 * MINUTE),
        ref other => panic!("{other:?}"),
    }
}

#[test]
fn vehicle_events_fire_on_a_change_of_state_r20() {
    let mut h = Harness::new(Site::HeadUnit);
    h.install(
        Task::new(TaskId(1), "parked")
            .trigger(Trigger::Vehicle(VehicleEvent::Parked))
            .action(set_power(lamp(), true)),
    );
    h.install(
        Task::new(TaskId(2), "charging")
            .trigger(Trigger::Vehicle(VehicleEvent::ChargingStarted))
            .trigger(Trigger::Vehicle(VehicleEvent::ChargingStopped))
            .action(set_power(porch(), true)),
    );
    h.install(
        Task::new(TaskId(3), "locked")
            .trigger(Trigger::Vehicle(VehicleEvent::Locked))
            .action(set_power(garage(), false)),
    );
    h.start();
    h.drain();
    let mut fired = Vec::new();
    for event in [
        VehicleEvent::Parked,
        VehicleEvent::Parked,
        VehicleEvent::Locked,
        VehicleEvent::ChargingStarted,
        VehicleEvent::ChargingStopped,
        VehicleEvent::Driving,
        VehicleEvent::Parked,
    ] {
        let _ = h.engine.handle_vehicle_event(event, h.now);
        let out = h.drain();
        fired.extend(writes(&actions(&out)).into_iter().map(|(d, _)| d));
        h.succeed_all(&out);
    }
    assert_eq!(fired, ["lamp", "garage", "porch", "porch", "lamp"]);
}

#[test]
fn a_manual_run_runs_the_task_r20() {
    let mut h = Harness::new(Site::Hub);
    h.install(
        Task::new(TaskId(1), "scene")
            .trigger(Trigger::Manual)
            .action(set_power(lamp(), true))
            .action(set_power(porch(), true)),
    );
    h.start();
    h.drain();
    h.engine.handle_manual_run(TaskId(1), h.now).unwrap();
    let out = h.drain();
    let all = h.succeed_until_quiet(out);
    assert_eq!(writes(&all).len(), 2);
    assert_eq!(h.outcomes(TaskId(1)), [Outcome::Completed]);
    assert_eq!(h.traces(TaskId(1))[0].cause, Cause::Manual);
    assert_eq!(
        h.engine.handle_manual_run(TaskId(9), h.now),
        Err(EngineError::UnknownTask(TaskId(9)))
    );
    assert!(!h.drain().iter().any(|o| matches!(o, Output::Action(_))));
}
