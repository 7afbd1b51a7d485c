//! The "car data to home" switch (R11, R28): off withholds every vehicle
//! signal, vehicle event and place event from the hub's tasks from the next
//! event on, and each task that reads car data says "disabled by consent";
//! on resumes them; earlier traces stay. On the head unit, off stops the
//! place events for the home.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

mod common;

use std::collections::BTreeSet;

use common::*;
use tether_automation::{
    Action, Audience, CancelReason, Cause, Change, Delivery, Outcome, Output, Site, Subscription,
    Task, TaskId, TaskStatus, Test, Transition, Trigger, Value, VehicleEvent,
};

fn arrive_home() -> Task {
    Task::new(TaskId(1), "arrive home: porch on, off after 5 min")
        .trigger(Trigger::Place {
            place: home(),
            transition: Transition::Enter,
        })
        .action(set_power(porch(), true))
        .action(Action::Delay { ms: 5 * MINUTE })
        .action(set_power(porch(), false))
}

fn motion_light() -> Task {
    Task::new(TaskId(2), "motion: lamp on")
        .trigger(Trigger::Property {
            device: motion(),
            property: MOTION,
            change: Change::Becomes(Test::Equals(Value::Bool(true))),
            hold_ms: 0,
        })
        .action(set_power(lamp(), true))
}

fn charging_done() -> Task {
    Task::new(TaskId(3), "charged: lamp blinks")
        .trigger(Trigger::Vehicle(VehicleEvent::ChargingStopped))
        .trigger(Trigger::Signal {
            path: SOC.into(),
            change: Change::Becomes(Test::Above(90.0)),
            hold_ms: 0,
        })
        .action(set_power(lamp(), false))
}

fn hub() -> Harness {
    let mut h = Harness::new(Site::Hub);
    h.engine.handle_consent(true, h.now);
    h.install(arrive_home());
    h.install(motion_light());
    h.install(charging_done());
    h.start();
    h.drain();
    h
}

#[test]
fn switching_off_withholds_car_data_and_disables_dependent_tasks_r11() {
    let mut h = hub();
    // On: the car arrives, the porch light goes on.
    let _ = h
        .engine
        .handle_place_event(&home(), Transition::Enter, h.now);
    let out = h.drain();
    h.succeed_all(&out);
    assert_eq!(
        writes(&actions(&out)),
        [("porch".to_owned(), Value::Bool(true))]
    );
    h.advance(MINUTE);

    // Off: from this input on.
    h.engine.handle_consent(false, h.now);
    let out = h.drain();
    let dropped: BTreeSet<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Unsubscribe(s) => Some(s.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        dropped,
        BTreeSet::from([
            Subscription::Place(home()),
            Subscription::Signal(SOC.into()),
            Subscription::Vehicle(tether_automation::VehicleState::Charging),
        ])
    );
    assert_eq!(
        h.engine.status(TaskId(1)),
        Some(TaskStatus::DisabledByConsent)
    );
    assert_eq!(
        h.engine.status(TaskId(3)),
        Some(TaskStatus::DisabledByConsent)
    );
    assert_eq!(h.engine.status(TaskId(2)), Some(TaskStatus::Active));
    // Nothing of the car reaches a task any more.
    assert_eq!(
        h.engine
            .handle_place_event(&home(), Transition::Leave, h.now),
        Delivery::WithheldByConsent
    );
    assert_eq!(
        h.engine.handle_signal(SOC, Value::Double(95.0), h.now),
        Delivery::WithheldByConsent
    );
    assert_eq!(
        h.engine
            .handle_vehicle_event(VehicleEvent::ChargingStopped, h.now),
        Delivery::WithheldByConsent
    );
    // The running arrival was cancelled: the porch is not switched off by
    // a run that car data started.
    assert!(actions(&h.advance(10 * MINUTE)).is_empty());
    assert_eq!(h.engine.place_state(&home()), None, "state forgotten");
    let outcomes = h.outcomes(TaskId(1));
    assert_eq!(
        outcomes,
        [
            Outcome::Cancelled(CancelReason::ConsentWithdrawn),
            Outcome::DisabledByConsent
        ]
    );
    // The earlier run stays in the trace, with its first step done.
    let first = &h.traces(TaskId(1))[0];
    assert_eq!(
        first.cause,
        Cause::Place {
            place: home(),
            transition: Transition::Enter
        }
    );
    assert_eq!(first.steps.len(), 2);
    // A manual run says why it does not run.
    h.engine.handle_manual_run(TaskId(3), h.now).unwrap();
    assert!(actions(&h.drain()).is_empty());
    assert_eq!(
        h.outcomes(TaskId(3)).last(),
        Some(&Outcome::DisabledByConsent)
    );
    // Home data still works.
    h.property(&motion(), MOTION, Value::Bool(false));
    let out = h.property(&motion(), MOTION, Value::Bool(true));
    assert_eq!(actions(&out).len(), 1);
}

#[test]
fn switching_on_again_resumes_r11() {
    let mut h = hub();
    h.engine.handle_consent(false, h.now);
    h.drain();
    h.advance(MINUTE);
    h.engine.handle_consent(true, h.now);
    assert_eq!(
        subscribed(&h.drain()).into_iter().collect::<BTreeSet<_>>(),
        BTreeSet::from([
            Subscription::Place(home()),
            Subscription::Signal(SOC.into()),
            Subscription::Vehicle(tether_automation::VehicleState::Charging),
        ])
    );
    assert_eq!(h.engine.status(TaskId(1)), Some(TaskStatus::Active));
    let _ = h
        .engine
        .handle_place_event(&home(), Transition::Enter, h.now);
    assert_eq!(actions(&h.drain()).len(), 1);
    // The "disabled by consent" entry is still there, before the new run.
    assert_eq!(h.outcomes(TaskId(1))[0], Outcome::DisabledByConsent);
}

#[test]
fn a_task_installed_while_off_is_disabled_by_consent_r11() {
    let mut h = Harness::new(Site::Hub);
    h.install(arrive_home());
    assert!(subscribed(&h.drain()).is_empty());
    assert_eq!(
        h.engine.status(TaskId(1)),
        Some(TaskStatus::DisabledByConsent)
    );
    assert_eq!(h.outcomes(TaskId(1)), [Outcome::DisabledByConsent]);
}

#[test]
fn the_head_unit_stops_place_events_for_the_home_r11() {
    let mut h = Harness::new(Site::HeadUnit);
    h.engine.handle_consent(true, h.now);
    h.engine
        .handle_remote_interest(Audience::Home, BTreeSet::from([home()]), h.now)
        .unwrap();
    assert_eq!(subscribed(&h.drain()), [Subscription::Location]);
    h.start();
    h.fix(HOME, 10.0);
    h.fix(north_of(HOME, 1_000.0), 10.0);
    let out = h.advance(30_000);
    assert_eq!(
        place_events(&out)
            .into_iter()
            .map(|e| (e.place.0, e.transition, e.audience))
            .collect::<Vec<_>>(),
        [("home".to_owned(), Transition::Leave, Audience::Home)]
    );

    // Off: the home's interest no longer counts, and nothing else needs
    // the location, so it is not even read.
    h.engine.handle_consent(false, h.now);
    assert_eq!(h.drain(), [Output::Unsubscribe(Subscription::Location)]);
    let fix = tether_automation::Fix {
        position: HOME,
        accuracy_m: 10.0,
    };
    assert_eq!(h.engine.handle_fix(fix, h.now), Delivery::NotSubscribed);
    assert!(place_events(&h.advance(60_000)).is_empty());

    // The phone asks too: its events go on, the home's do not.
    h.engine
        .handle_remote_interest(Audience::Phone, BTreeSet::from([home()]), h.now)
        .unwrap();
    h.drain();
    h.fix(HOME, 10.0);
    h.fix(north_of(HOME, 1_000.0), 10.0);
    let out = h.advance(30_000);
    assert_eq!(
        place_events(&out)
            .into_iter()
            .map(|e| e.audience)
            .collect::<Vec<_>>(),
        [Audience::Phone]
    );
}
