//! Durable time (R20, issue 5): pending delays, holds and dwell timers, and
//! runs waiting for the host or the owner, survive a restart through a
//! snapshot; a time trigger missed while the node was down follows the
//! task's policy and is never silent.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

mod common;

use common::*;
use tether_automation::{
    Action, Cause, Change, ClockTime, Effect, MissReason, MissedPolicy, Outcome, RestoreError,
    SNAPSHOT_VERSION, Site, Snapshot, StepResult, Task, TaskId, Test, Transition, Trigger, Value,
    VehicleCommand, VehicleEvent, Weekdays,
};

/// A "node" that is restarted: the host installs the same tasks again,
/// then restores the snapshot.
fn reboot(tasks: &[Task], site: Site, snapshot: Snapshot, at: u64) -> Harness {
    let mut h = Harness::new(site);
    h.now = at;
    for task in tasks {
        h.install(task.clone());
    }
    h.engine.restore(snapshot, at).expect("restore");
    h
}

fn lights_out() -> Task {
    Task::new(TaskId(1), "lights out in ten minutes")
        .trigger(Trigger::Manual)
        .action(set_power(lamp(), true))
        .action(Action::Delay { ms: 10 * MINUTE })
        .action(set_power(lamp(), false))
}

#[test]
fn a_pending_delay_survives_a_restart_r20() {
    let tasks = [lights_out()];
    let mut h = Harness::new(Site::HeadUnit);
    h.install(tasks[0].clone());
    h.start();
    h.drain();
    h.engine.handle_manual_run(TaskId(1), h.now).unwrap();
    let out = h.drain();
    h.succeed_all(&out);
    h.advance(MINUTE);
    let snapshot = h.engine.snapshot();
    assert_eq!(snapshot.runs.len(), 1);

    // Down for four minutes.
    let mut h = reboot(&tasks, Site::HeadUnit, snapshot, h.now + 4 * MINUTE);
    assert!(
        h.drain()
            .iter()
            .all(|o| !matches!(o, tether_automation::Output::Action(_)))
    );
    assert!(h.advance(5 * MINUTE - 1).is_empty());
    let out = h.advance(1);
    assert_eq!(
        writes(&actions(&out)),
        [("lamp".to_owned(), Value::Bool(false))]
    );
    h.succeed_all(&out);
    let trace = h.traces(TaskId(1)).pop().unwrap();
    assert_eq!(trace.outcome, Outcome::Completed);
    // The steps before the restart are still in the trace.
    assert_eq!(trace.steps.len(), 3);
    assert_eq!(trace.steps[0].result, StepResult::Succeeded);
}

#[test]
fn a_delay_that_ended_while_down_continues_at_once_r20() {
    let tasks = [lights_out()];
    let mut h = Harness::new(Site::HeadUnit);
    h.install(tasks[0].clone());
    h.start();
    h.drain();
    h.engine.handle_manual_run(TaskId(1), h.now).unwrap();
    let out = h.drain();
    h.succeed_all(&out);
    let snapshot = h.engine.snapshot();
    let mut h = reboot(&tasks, Site::HeadUnit, snapshot, h.now + HOUR);
    let out = h.drain();
    assert_eq!(
        writes(&actions(&out)),
        [("lamp".to_owned(), Value::Bool(false))]
    );
}

#[test]
fn a_hold_survives_a_restart_r20() {
    let tasks = [Task::new(TaskId(1), "charge stuck low for 30 min")
        .trigger(Trigger::Signal {
            path: SOC.into(),
            change: Change::Becomes(Test::Below(20.0)),
            hold_ms: 30 * MINUTE,
        })
        .action(set_power(lamp(), true))];
    let mut h = Harness::new(Site::HeadUnit);
    h.install(tasks[0].clone());
    h.start();
    h.drain();
    h.signal(SOC, Value::Double(50.0));
    h.signal(SOC, Value::Double(15.0));
    h.advance(5 * MINUTE);
    let snapshot = h.engine.snapshot();
    assert_eq!(snapshot.holds.len(), 1);
    let mut h = reboot(&tasks, Site::HeadUnit, snapshot, h.now + 5 * MINUTE);
    // The car reports the value again after the restart.
    h.signal(SOC, Value::Double(15.0));
    assert!(h.advance(20 * MINUTE - 1).is_empty());
    let out = h.advance(1);
    assert_eq!(actions(&out).len(), 1);
    match &h.traces(TaskId(1))[0].cause {
        Cause::Signal { held_ms, .. } => assert_eq!(*held_ms, 30 * MINUTE),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_dwell_timer_and_place_state_survive_a_restart_r21() {
    let tasks = [Task::new(TaskId(1), "left home")
        .trigger(Trigger::Place {
            place: home(),
            transition: Transition::Leave,
        })
        .action(set_power(lamp(), false))];
    let mut h = Harness::new(Site::HeadUnit);
    h.install(tasks[0].clone());
    h.start();
    h.drain();
    h.fix(HOME, 10.0);
    h.advance(MINUTE);
    h.fix(north_of(HOME, 500.0), 10.0);
    h.advance(10_000);
    let snapshot = h.engine.snapshot();
    assert_eq!(snapshot.places.len(), 1);
    assert_eq!(snapshot.places[0].inside, Some(true));
    assert!(snapshot.places[0].pending.is_some());
    let mut h = reboot(&tasks, Site::HeadUnit, snapshot, h.now + 5_000);
    assert_eq!(
        h.drain(),
        [tether_automation::Output::Subscribe(
            tether_automation::Subscription::Location
        )]
    );
    assert!(h.advance(14_999).is_empty());
    let out = h.advance(1);
    assert_eq!(
        writes(&actions(&out)),
        [("lamp".to_owned(), Value::Bool(false))]
    );
}

#[test]
fn a_vehicle_command_waiting_for_its_answer_is_asked_again_with_the_same_key_r23() {
    let tasks = [Task::new(TaskId(1), "lock")
        .trigger(Trigger::Manual)
        .action(Action::Vehicle(VehicleCommand::Lock))];
    let mut h = Harness::with_config(tether_automation::Config {
        seed: [7; 16],
        ..config(Site::HeadUnit)
    });
    h.install(tasks[0].clone());
    h.start();
    h.drain();
    h.engine.handle_manual_run(TaskId(1), h.now).unwrap();
    let before = actions(&h.drain()).remove(0);
    let snapshot = h.engine.snapshot();
    let mut h = reboot(&tasks, Site::HeadUnit, snapshot, h.now + 2_000);
    let after = actions(&h.drain()).remove(0);
    let key = |e: &Effect| match e {
        Effect::Vehicle {
            idempotency_key, ..
        } => *idempotency_key,
        other => panic!("{other:?}"),
    };
    assert_eq!(key(&before.effect), key(&after.effect));
    assert_eq!(before.run, after.run);
    h.succeed_all(&[tether_automation::Output::Action(after)]);
    let trace = h.traces(TaskId(1)).pop().unwrap();
    assert_eq!(trace.outcome, Outcome::Completed);
    assert_eq!(trace.steps.len(), 1);
}

#[test]
fn a_confirmation_waiting_for_the_owner_is_asked_again_r23() {
    let tasks = [Task::new(TaskId(1), "unlock")
        .trigger(Trigger::Manual)
        .action(Action::Vehicle(VehicleCommand::Unlock))];
    let mut h = Harness::new(Site::HeadUnit);
    h.install(tasks[0].clone());
    h.start();
    h.drain();
    let _ = h.engine.handle_vehicle_event(VehicleEvent::Parked, h.now);
    h.engine.handle_manual_run(TaskId(1), h.now).unwrap();
    let first = confirms(&h.drain()).remove(0);
    let snapshot = h.engine.snapshot();
    let mut h = reboot(&tasks, Site::HeadUnit, snapshot, h.now + 2_000);
    let again = confirms(&h.drain()).remove(0);
    assert_eq!(again.deadline_ms, first.deadline_ms);
    assert_eq!(again.run, first.run);
    // The parking state is not restored: the car must report it again
    // before a yes can open it.
    h.engine.handle_confirmation(again.id, true, h.now).unwrap();
    let trace = h.traces(TaskId(1)).pop().unwrap();
    assert_eq!(trace.steps[0].result, StepResult::NotParked);
}

fn morning(policy: MissedPolicy) -> Task {
    Task::new(TaskId(1), "07:00 lights")
        .trigger(Trigger::Time {
            at: ClockTime::hm(7, 0),
            weekdays: Weekdays::ALL,
        })
        .action(set_power(lamp(), true))
        .missed(policy)
}

/// Snapshot at Monday 06:00, restart `down_ms` later.
fn missed(policy: MissedPolicy, down_ms: u64) -> Harness {
    let tasks = [morning(policy)];
    let mut h = Harness::new(Site::Hub);
    h.install(tasks[0].clone());
    h.start();
    h.drain();
    h.advance(6 * HOUR);
    let snapshot = h.engine.snapshot();
    reboot(&tasks, Site::Hub, snapshot, h.now + down_ms)
}

#[test]
fn a_missed_time_is_skipped_and_traced_under_the_skip_policy_r20() {
    let mut h = missed(MissedPolicy::Skip, 2 * HOUR);
    assert!(actions(&h.drain()).is_empty());
    let trace = h.traces(TaskId(1)).pop().unwrap();
    assert_eq!(
        trace.outcome,
        Outcome::Missed {
            occurrences: 1,
            reason: MissReason::PolicySkip
        }
    );
    assert_eq!(
        trace.cause,
        Cause::Time {
            sun: None,
            scheduled_ms: MONDAY_MS + 7 * HOUR,
            late_ms: HOUR,
            missed: 0
        }
    );
    // The next day runs as usual.
    assert_eq!(h.run_for(DAY).len(), 1);
}

#[test]
fn a_missed_time_runs_once_late_within_the_grace_window_r20() {
    let mut h = missed(MissedPolicy::RunLate { grace_ms: 2 * HOUR }, 2 * HOUR);
    let out = h.drain();
    assert_eq!(actions(&out).len(), 1);
    let trace = h.traces(TaskId(1)).pop().unwrap();
    assert_eq!(trace.outcome, Outcome::Running);
    assert!(matches!(
        trace.cause,
        Cause::Time {
            late_ms,
            missed: 0,
            ..
        } if late_ms == HOUR
    ));
}

#[test]
fn days_of_missed_times_outside_the_grace_window_are_counted_not_run_r20() {
    // Down from Monday 06:00 to Thursday 12:00: Monday to Thursday 07:00.
    let mut h = missed(
        MissedPolicy::RunLate { grace_ms: 2 * HOUR },
        3 * DAY + 6 * HOUR,
    );
    assert!(actions(&h.drain()).is_empty());
    let trace = h.traces(TaskId(1)).pop().unwrap();
    assert_eq!(
        trace.outcome,
        Outcome::Missed {
            occurrences: 4,
            reason: MissReason::OutsideGrace
        }
    );
    assert!(matches!(trace.cause, Cause::Time { missed: 3, late_ms, .. } if late_ms == 5 * HOUR));
}

#[test]
fn a_host_that_wakes_late_gets_the_same_policy_r20() {
    let mut h = Harness::new(Site::Hub);
    h.install(morning(MissedPolicy::Skip));
    h.start();
    h.drain();
    // The host sleeps through 07:00 and comes back at 07:20.
    h.now += 7 * HOUR + 20 * MINUTE;
    h.engine.handle_timeout(h.now);
    assert!(actions(&h.drain()).is_empty());
    assert!(matches!(
        h.traces(TaskId(1)).pop().unwrap().outcome,
        Outcome::Missed { .. }
    ));
}

#[test]
fn restore_is_refused_after_start_or_for_another_format_r20() {
    let mut h = Harness::new(Site::Hub);
    h.start();
    let snapshot = h.engine.snapshot();
    assert_eq!(
        h.engine.restore(snapshot.clone(), h.now),
        Err(RestoreError::AlreadyStarted)
    );
    let mut fresh = Harness::new(Site::Hub);
    let mut other = snapshot;
    other.version = SNAPSHOT_VERSION + 1;
    assert!(matches!(
        fresh.engine.restore(other, fresh.now),
        Err(RestoreError::Version { .. })
    ));
}
