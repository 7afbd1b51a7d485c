//! Each mode under a burst of triggers (R20): single, restart, queued and
//! parallel, each with its maximum; every trigger that does not run is in
//! the trace with the reason.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

mod common;

use common::*;
use tether_automation::{
    Action, CancelReason, Change, Mode, Outcome, Site, SkipReason, Task, TaskId, Trigger, Value,
};

/// A task fired by every change of speed: wait 10 s, then switch the lamp.
fn task(mode: Mode) -> Task {
    Task::new(TaskId(1), "burst")
        .trigger(Trigger::Signal {
            path: SPEED.into(),
            change: Change::Any,
            hold_ms: 0,
        })
        .action(Action::Delay { ms: 10_000 })
        .action(set_power(lamp(), true))
        .mode(mode)
}

/// Five changes 100 ms apart, then a minute with every action answered.
fn burst(mode: Mode) -> (Harness, usize) {
    let mut h = Harness::new(Site::HeadUnit);
    h.install(task(mode));
    h.start();
    h.drain();
    h.signal(SPEED, Value::Double(0.0));
    for speed in 1..=5 {
        h.advance(100);
        h.signal(SPEED, Value::Double(f64::from(speed)));
    }
    let actions = h.run_for(60_000).len();
    (h, actions)
}

#[test]
fn single_runs_once_and_skips_the_rest_r20() {
    let (h, actions) = burst(Mode::Single);
    assert_eq!(actions, 1);
    assert_eq!(
        h.outcomes(TaskId(1)),
        // In trigger order: the first ran, the four after it were skipped.
        [
            Outcome::Completed,
            Outcome::Skipped(SkipReason::AlreadyRunning),
            Outcome::Skipped(SkipReason::AlreadyRunning),
            Outcome::Skipped(SkipReason::AlreadyRunning),
            Outcome::Skipped(SkipReason::AlreadyRunning),
        ]
    );
}

#[test]
fn restart_cancels_the_run_and_starts_anew_r20() {
    let (h, actions) = burst(Mode::Restart);
    assert_eq!(actions, 1, "only the last run reaches the lamp");
    let traces = h.traces(TaskId(1));
    let outcomes: Vec<_> = traces.iter().map(|t| t.outcome).collect();
    assert_eq!(
        outcomes,
        [
            Outcome::Cancelled(CancelReason::Restarted),
            Outcome::Cancelled(CancelReason::Restarted),
            Outcome::Cancelled(CancelReason::Restarted),
            Outcome::Cancelled(CancelReason::Restarted),
            Outcome::Completed,
        ]
    );
    let last = traces.last().unwrap();
    assert_eq!(
        last.cause,
        tether_automation::Cause::Signal {
            path: SPEED.into(),
            value: Value::Double(5.0),
            held_ms: 0
        }
    );
}

#[test]
fn queued_runs_one_after_another_up_to_its_maximum_r20() {
    let (h, actions) = burst(Mode::Queued { max: 3 });
    assert_eq!(actions, 3);
    let traces = h.traces(TaskId(1));
    let outcomes: Vec<_> = traces.iter().map(|t| t.outcome).collect();
    assert_eq!(
        outcomes,
        [
            Outcome::Completed,
            Outcome::Completed,
            Outcome::Completed,
            Outcome::Skipped(SkipReason::QueueFull),
            Outcome::Skipped(SkipReason::QueueFull),
        ]
    );
    // One after the other: each run starts its delay when the previous
    // one ended.
    let mut runs: Vec<_> = traces.iter().filter(|t| t.run.is_some()).collect();
    runs.sort_by_key(|t| t.run);
    for pair in runs.windows(2) {
        let first_end = pair[0].ended_ms.unwrap();
        let second_delay = pair[1].steps[0].at_ms;
        assert!(second_delay >= first_end);
    }
}

#[test]
fn parallel_runs_side_by_side_up_to_its_maximum_r20() {
    let (h, actions) = burst(Mode::Parallel { max: 2 });
    assert_eq!(actions, 2);
    let traces = h.traces(TaskId(1));
    let completed: Vec<_> = traces
        .iter()
        .filter(|t| t.outcome == Outcome::Completed)
        .collect();
    assert_eq!(completed.len(), 2);
    assert_eq!(
        traces
            .iter()
            .filter(|t| t.outcome == Outcome::Skipped(SkipReason::TooManyRuns))
            .count(),
        3
    );
    // Side by side: the second started before the first ended.
    assert!(completed[1].at_ms < completed[0].ended_ms.unwrap());
}

#[test]
fn traces_are_bounded_per_task_r20() {
    let mut config = config(Site::HeadUnit);
    config.traces_per_task = 4;
    let mut h = Harness::with_config(config);
    h.install(task(Mode::Single));
    h.start();
    h.drain();
    h.signal(SPEED, Value::Double(0.0));
    for speed in 1..=50 {
        h.signal(SPEED, Value::Double(f64::from(speed)));
    }
    h.run_for(60_000);
    let traces = h.traces(TaskId(1));
    assert_eq!(traces.len(), 4);
    // The run ended last, so it is kept; the oldest skips went.
    assert_eq!(traces[0].outcome, Outcome::Completed);
    assert!(
        traces[1..]
            .iter()
            .all(|t| t.outcome == Outcome::Skipped(SkipReason::AlreadyRunning))
    );
}
