//! Conditions, choose, delays and the host's answers (R20): each
//! condition's value is traced, a choose takes the first branch that holds,
//! a delay waits on the fake clock, a failed or unanswered step stops the
//! run, vehicle commands carry idempotency keys derived from run and step.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

mod common;

use std::collections::HashSet;

use common::*;
use tether_automation::{
    Action, ActionResult, AppIntent, Branch, ClockTime, Condition, Config, DayTime, Effect,
    EngineError, Outcome, Recipients, Site, StepResult, SunEvent, Task, TaskId, Test, Trigger,
    Value, VehicleCommand, Weekdays,
};

fn manual(id: u64) -> Task {
    Task::new(TaskId(id), format!("task {id}")).trigger(Trigger::Manual)
}

#[test]
fn conditions_and_or_not_over_signals_properties_places_and_time_r20() {
    let mut h = Harness::new(Site::HeadUnit);
    let condition = Condition::All(vec![
        Condition::Signal {
            path: SOC.into(),
            test: Test::Above(50.0),
        },
        Condition::Any(vec![
            Condition::Property {
                device: lamp(),
                property: POWER,
                test: Test::Equals(Value::Bool(true)),
            },
            Condition::Not(Box::new(Condition::Place {
                place: home(),
                inside: true,
            })),
        ]),
        // 18:00 to 06:00 spans midnight.
        Condition::TimeWindow {
            after: Some(DayTime::Clock(ClockTime::hm(18, 0))),
            before: Some(DayTime::Clock(ClockTime::hm(6, 0))),
            weekdays: Weekdays::ALL,
        },
    ]);
    h.install(
        manual(1)
            .condition(condition)
            .action(set_power(porch(), true)),
    );
    h.start();
    h.drain();
    h.fix(HOME, 10.0);
    h.signal(SOC, Value::Double(80.0));
    h.property(&lamp(), POWER, Value::Bool(false));

    // 00:00 Monday: in the window; lamp off and car at home: the `any`
    // fails, so everything fails.
    h.engine.handle_manual_run(TaskId(1), h.now).unwrap();
    assert!(actions(&h.drain()).is_empty());
    let trace = h.traces(TaskId(1)).pop().unwrap();
    assert_eq!(trace.outcome, Outcome::ConditionsNotMet);
    let values: Vec<(String, bool)> = trace
        .conditions
        .iter()
        .map(|c| (c.position.clone(), c.value))
        .collect();
    assert_eq!(
        values,
        [
            ("conditions[0]".to_owned(), false),
            ("conditions[0].all[0]".to_owned(), true),
            ("conditions[0].all[1]".to_owned(), false),
            ("conditions[0].all[1].any[0]".to_owned(), false),
            ("conditions[0].all[1].any[1]".to_owned(), false),
            ("conditions[0].all[1].any[1].not".to_owned(), true),
            ("conditions[0].all[2]".to_owned(), true),
        ]
    );
    assert!(trace.conditions[1].description.contains("is 80"));

    // The lamp is on now: the `any` holds.
    h.property(&lamp(), POWER, Value::Bool(true));
    h.engine.handle_manual_run(TaskId(1), h.now).unwrap();
    assert_eq!(actions(&h.drain()).len(), 1);

    // Noon: outside the window.
    h.advance(12 * HOUR);
    h.engine.handle_manual_run(TaskId(1), h.now).unwrap();
    assert!(actions(&h.drain()).is_empty());
    let trace = h.traces(TaskId(1)).pop().unwrap();
    assert!(!trace.conditions.last().unwrap().value);
}

#[test]
fn a_window_after_sunset_uses_the_sun_at_the_place_r20() {
    let mut h = Harness::new(Site::Hub);
    h.install(
        manual(1)
            .condition(Condition::TimeWindow {
                after: Some(DayTime::Sun {
                    event: SunEvent::Sunset,
                    offset_min: 0,
                    place: home(),
                }),
                before: None,
                weekdays: Weekdays::ALL,
            })
            .action(set_power(porch(), true)),
    );
    h.start();
    h.drain();
    // Sunset in Munich on 2026-11-30 is about 15:22 UTC.
    h.advance(15 * HOUR);
    h.engine.handle_manual_run(TaskId(1), h.now).unwrap();
    assert!(actions(&h.drain()).is_empty());
    h.advance(HOUR);
    h.engine.handle_manual_run(TaskId(1), h.now).unwrap();
    assert_eq!(actions(&h.drain()).len(), 1);
}

#[test]
fn choose_takes_the_first_branch_that_holds_else_otherwise_r20() {
    let mut h = Harness::new(Site::HeadUnit);
    let choose = Action::Choose {
        branches: vec![
            Branch {
                conditions: vec![Condition::Signal {
                    path: SOC.into(),
                    test: Test::Below(20.0),
                }],
                actions: vec![Action::App(AppIntent::Notify {
                    recipients: Recipients::Owner,
                    message: "charge".into(),
                })],
            },
            Branch {
                conditions: vec![Condition::Place {
                    place: home(),
                    inside: true,
                }],
                actions: vec![set_power(lamp(), true), set_power(porch(), true)],
            },
        ],
        otherwise: vec![set_power(garage(), false)],
    };
    h.install(manual(1).action(choose).action(set_power(lamp(), false)));
    h.start();
    h.drain();
    h.fix(north_of(HOME, 3_000.0), 10.0);
    h.signal(SOC, Value::Double(60.0));

    let run = |h: &mut Harness| {
        h.engine.handle_manual_run(TaskId(1), h.now).unwrap();
        let out = h.drain();
        h.succeed_until_quiet(out)
    };
    // Neither branch: otherwise, then the step after the choose.
    assert_eq!(
        writes(&run(&mut h)),
        [
            ("garage".to_owned(), Value::Bool(false)),
            ("lamp".to_owned(), Value::Bool(false))
        ]
    );
    let trace = h.traces(TaskId(1)).pop().unwrap();
    assert_eq!(trace.steps[0].result, StepResult::Chose(None));
    assert_eq!(trace.steps[1].step, vec![0, 2, 0]);

    // Second branch.
    h.fix(HOME, 10.0);
    h.advance(60_000);
    assert_eq!(h.engine.place_state(&home()), Some(true));
    assert_eq!(
        writes(&run(&mut h)),
        [
            ("lamp".to_owned(), Value::Bool(true)),
            ("porch".to_owned(), Value::Bool(true)),
            ("lamp".to_owned(), Value::Bool(false))
        ]
    );

    // First branch wins over the second.
    h.signal(SOC, Value::Double(10.0));
    let requests = run(&mut h);
    assert!(matches!(
        requests[0].effect,
        Effect::App(AppIntent::Notify { .. })
    ));
    assert_eq!(requests.len(), 2);
    let trace = h.traces(TaskId(1)).pop().unwrap();
    assert_eq!(trace.steps[0].result, StepResult::Chose(Some(0)));
    assert!(
        trace
            .conditions
            .iter()
            .any(|c| c.position == "step 0 branch 0 conditions[0]" && c.value)
    );
}

#[test]
fn a_delay_waits_on_the_clock_r20() {
    let mut h = Harness::new(Site::HeadUnit);
    h.install(
        manual(1)
            .action(set_power(lamp(), true))
            .action(Action::Delay { ms: 5 * MINUTE })
            .action(set_power(lamp(), false)),
    );
    h.start();
    h.drain();
    h.engine.handle_manual_run(TaskId(1), h.now).unwrap();
    let out = h.drain();
    assert!(h.succeed_all(&out).is_empty());
    assert_eq!(h.engine.poll_timeout(), Some(h.now + 5 * MINUTE));
    assert!(h.advance(5 * MINUTE - 1).is_empty());
    let out = h.advance(1);
    assert_eq!(
        writes(&actions(&out)),
        [("lamp".to_owned(), Value::Bool(false))]
    );
    h.succeed_all(&out);
    let trace = h.traces(TaskId(1)).pop().unwrap();
    assert_eq!(trace.outcome, Outcome::Completed);
    assert_eq!(trace.steps[1].result, StepResult::Waited);
    assert_eq!(trace.steps[2].at_ms - trace.steps[1].at_ms, 5 * MINUTE);
}

#[test]
fn a_failed_or_unanswered_step_stops_the_run_r20() {
    let mut h = Harness::new(Site::HeadUnit);
    h.install(
        manual(1)
            .action(set_power(lamp(), true))
            .action(set_power(porch(), true)),
    );
    h.start();
    h.drain();
    h.engine.handle_manual_run(TaskId(1), h.now).unwrap();
    let request = actions(&h.drain()).remove(0);
    h.engine
        .handle_action_result(request.id, ActionResult::Failed("offline".into()), h.now)
        .unwrap();
    assert!(actions(&h.drain()).is_empty());
    let trace = h.traces(TaskId(1)).pop().unwrap();
    assert_eq!(trace.outcome, Outcome::Failed);
    assert_eq!(trace.steps[0].result, StepResult::Failed("offline".into()));

    h.engine.handle_manual_run(TaskId(1), h.now).unwrap();
    let request = actions(&h.drain()).remove(0);
    let config = Config::default();
    assert_eq!(request.deadline_ms, h.now + config.action_timeout_ms);
    assert!(actions(&h.advance(config.action_timeout_ms)).is_empty());
    let trace = h.traces(TaskId(1)).pop().unwrap();
    assert_eq!(trace.steps[0].result, StepResult::TimedOut);
    // A late answer is refused.
    assert_eq!(
        h.engine
            .handle_action_result(request.id, ActionResult::Succeeded, h.now),
        Err(EngineError::NotPending)
    );
}

#[test]
fn vehicle_commands_carry_keys_derived_from_run_and_step_r23() {
    let task = || {
        manual(1)
            .action(Action::Vehicle(VehicleCommand::Lock))
            .action(Action::Vehicle(VehicleCommand::Climate {
                on: true,
                target_celsius: Some(21.0),
            }))
    };
    let keys = |seed: [u8; 16]| {
        let mut config = config(Site::HeadUnit);
        config.seed = seed;
        let mut h = Harness::with_config(config);
        h.install(task());
        h.start();
        h.drain();
        let mut keys = Vec::new();
        for _ in 0..2 {
            h.engine.handle_manual_run(TaskId(1), h.now).unwrap();
            let out = h.drain();
            for request in h.succeed_until_quiet(out) {
                if let Effect::Vehicle {
                    idempotency_key, ..
                } = request.effect
                {
                    keys.push(idempotency_key);
                }
            }
        }
        keys
    };
    let first = keys([1; 16]);
    assert_eq!(first.len(), 4);
    // Each step of each run has its own key.
    assert_eq!(first.iter().collect::<HashSet<_>>().len(), 4);
    // The same seed, run and step give the same key (a retry is the same
    // command to the car); another seed gives other keys.
    assert_eq!(first, keys([1; 16]));
    assert!(keys([2; 16]).iter().all(|k| !first.contains(k)));
}

#[test]
fn navigation_hand_off_names_only_the_place_r21() {
    let mut h = Harness::new(Site::Hub);
    h.engine
        .add_place(tether_automation::Place::named("grandma"))
        .unwrap();
    h.install(manual(1).action(Action::App(AppIntent::Navigate {
        destination: tether_automation::PlaceId::new("grandma"),
    })));
    h.start();
    h.drain();
    h.engine.handle_manual_run(TaskId(1), h.now).unwrap();
    let request = actions(&h.drain()).remove(0);
    assert_eq!(
        request.effect,
        Effect::App(AppIntent::Navigate {
            destination: tether_automation::PlaceId::new("grandma")
        })
    );
}
