//! The safety rule (R23, issue 5): a task may unlock or open the car only
//! when it is parked and the owner confirms on the phone at run time; a
//! refusal, a "no" or no answer in time leaves the car as it is.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

mod common;

use common::*;
use tether_automation::{
    Action, ActionResult, Effect, EngineError, Outcome, Output, Site, StepResult, Task, TaskId,
    Trigger, VehicleCommand, VehicleEvent,
};

fn harness(command: VehicleCommand) -> Harness {
    let mut h = Harness::new(Site::HeadUnit);
    h.install(
        Task::new(TaskId(1), "open up for the delivery")
            .trigger(Trigger::Manual)
            .action(Action::Vehicle(command)),
    );
    h.start();
    h.drain();
    h
}

fn vehicle_actions(outputs: &[Output]) -> usize {
    actions(outputs)
        .iter()
        .filter(|a| matches!(a.effect, Effect::Vehicle { .. }))
        .count()
}

#[test]
fn unlock_is_refused_unless_the_car_is_parked_r23() {
    let mut h = harness(VehicleCommand::Unlock);
    // Parking state unknown.
    h.engine.handle_manual_run(TaskId(1), h.now).unwrap();
    let out = h.drain();
    assert!(confirms(&out).is_empty() && vehicle_actions(&out) == 0);
    // Driving.
    let _ = h.engine.handle_vehicle_event(VehicleEvent::Driving, h.now);
    h.engine.handle_manual_run(TaskId(1), h.now).unwrap();
    let out = h.drain();
    assert!(confirms(&out).is_empty() && vehicle_actions(&out) == 0);
    for trace in h.traces(TaskId(1)) {
        assert_eq!(trace.outcome, Outcome::Failed);
        assert_eq!(trace.steps[0].result, StepResult::NotParked);
    }
}

#[test]
fn unlock_runs_when_parked_and_the_owner_confirms_r23() {
    let mut h = harness(VehicleCommand::Unlock);
    let _ = h.engine.handle_vehicle_event(VehicleEvent::Parked, h.now);
    h.engine.handle_manual_run(TaskId(1), h.now).unwrap();
    let out = h.drain();
    assert_eq!(
        vehicle_actions(&out),
        0,
        "nothing before the owner says yes"
    );
    let ask = confirms(&out).remove(0);
    assert_eq!(ask.command, VehicleCommand::Unlock);
    assert_eq!(ask.task_name, "open up for the delivery");
    h.advance(10_000);
    h.engine.handle_confirmation(ask.id, true, h.now).unwrap();
    let out = h.drain();
    let request = actions(&out).remove(0);
    assert!(matches!(
        request.effect,
        Effect::Vehicle {
            command: VehicleCommand::Unlock,
            ..
        }
    ));
    h.engine
        .handle_action_result(request.id, ActionResult::Succeeded, h.now)
        .unwrap();
    let trace = h.traces(TaskId(1)).pop().unwrap();
    assert_eq!(trace.outcome, Outcome::Completed);
    assert_eq!(trace.steps.len(), 1);
    assert!(
        trace.steps[0]
            .description
            .contains("confirmed by the owner")
    );
    // The answer counts once.
    assert_eq!(
        h.engine.handle_confirmation(ask.id, true, h.now),
        Err(EngineError::NotPending)
    );
}

#[test]
fn a_no_or_no_answer_leaves_the_car_locked_r23() {
    let mut h = harness(VehicleCommand::Unlock);
    let _ = h.engine.handle_vehicle_event(VehicleEvent::Parked, h.now);

    h.engine.handle_manual_run(TaskId(1), h.now).unwrap();
    let ask = confirms(&h.drain()).remove(0);
    h.engine.handle_confirmation(ask.id, false, h.now).unwrap();
    assert_eq!(vehicle_actions(&h.drain()), 0);
    let trace = h.traces(TaskId(1)).pop().unwrap();
    assert_eq!(trace.steps[0].result, StepResult::Declined);

    h.engine.handle_manual_run(TaskId(1), h.now).unwrap();
    let ask = confirms(&h.drain()).remove(0);
    let out = h.advance(ask.deadline_ms - h.now);
    assert_eq!(vehicle_actions(&out), 0);
    assert!(out.contains(&Output::ConfirmWithdrawn(ask.id)));
    let trace = h.traces(TaskId(1)).pop().unwrap();
    assert_eq!(trace.outcome, Outcome::Failed);
    assert_eq!(trace.steps[0].result, StepResult::ConfirmationTimedOut);
}

#[test]
fn a_yes_after_the_car_drove_off_is_refused_r23() {
    let mut h = harness(VehicleCommand::Unlock);
    let _ = h.engine.handle_vehicle_event(VehicleEvent::Parked, h.now);
    h.engine.handle_manual_run(TaskId(1), h.now).unwrap();
    let ask = confirms(&h.drain()).remove(0);
    let _ = h.engine.handle_vehicle_event(VehicleEvent::Driving, h.now);
    h.engine.handle_confirmation(ask.id, true, h.now).unwrap();
    assert_eq!(vehicle_actions(&h.drain()), 0);
    let trace = h.traces(TaskId(1)).pop().unwrap();
    assert_eq!(trace.steps[0].result, StepResult::NotParked);
}

#[test]
fn opening_a_window_needs_confirmation_closing_it_does_not_r23() {
    let mut h = harness(VehicleCommand::Window { percent_open: 30 });
    let _ = h.engine.handle_vehicle_event(VehicleEvent::Parked, h.now);
    h.engine.handle_manual_run(TaskId(1), h.now).unwrap();
    let out = h.drain();
    assert_eq!(confirms(&out).len(), 1);
    assert_eq!(vehicle_actions(&out), 0);

    let mut h = harness(VehicleCommand::Window { percent_open: 0 });
    h.engine.handle_manual_run(TaskId(1), h.now).unwrap();
    let out = h.drain();
    assert!(confirms(&out).is_empty());
    assert_eq!(vehicle_actions(&out), 1);
}
