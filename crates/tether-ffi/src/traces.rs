//! Traces of super tasks for an app's screen (SPEC §18): each run, or each
//! trigger that did not become one, as short human-readable lines, with the
//! `tether.v1.Trace` bytes beside them for an app that wants every field.

use tether_node::tether_automation::trace::{
    CancelReason, Cause, MissReason, Outcome, SkipReason, StepResult, Trace,
};
use tether_node::tether_automation::{SunEvent, Transition, VehicleEvent, wire};

/// One trace: what started a run (or would have), each condition's value,
/// each step's result and how it ended. The strings are for people, in
/// English; switch on `encoded` (a `tether.v1.Trace`) for anything else.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct TraceSummary {
    /// Creation order on the car, across every task.
    pub seq: u64,
    /// The run's number, if a run started (or is queued).
    pub run_id: Option<u64>,
    /// When it was triggered, the car's Unix milliseconds.
    pub at_ms: u64,
    /// When it ended; `None` while it runs or waits.
    pub ended_ms: Option<u64>,
    /// What triggered it: `run by hand`, `car parked`, `car entered home`…
    pub cause: String,
    /// Each condition as `description = true|false`, in order.
    pub conditions: Vec<String>,
    /// Each step as `description: result` (`vehicle command Lock: done`).
    pub steps: Vec<String>,
    /// How it stands: `running`, `completed`, `conditions not met`,
    /// `failed`, `skipped: …`, `cancelled: …`, `missed …`.
    pub outcome: String,
    /// The trace as protobuf bytes (`tether.v1.Trace`).
    pub encoded: Vec<u8>,
}

impl From<&Trace> for TraceSummary {
    fn from(trace: &Trace) -> Self {
        Self {
            seq: trace.seq,
            run_id: trace.run.map(|r| r.0),
            at_ms: trace.at_ms,
            ended_ms: trace.ended_ms,
            cause: cause(&trace.cause),
            conditions: trace
                .conditions
                .iter()
                .map(|c| format!("{} = {}", c.description, c.value))
                .collect(),
            steps: trace
                .steps
                .iter()
                .map(|s| format!("{}: {}", s.description, step_result(&s.result)))
                .collect(),
            outcome: outcome(trace.outcome),
            encoded: wire::encode_trace(trace),
        }
    }
}

fn cause(cause: &Cause) -> String {
    match cause {
        Cause::Place { place, transition } => match transition {
            Transition::Enter => format!("car entered {place}"),
            Transition::Leave => format!("car left {place}"),
        },
        Cause::Signal {
            path,
            value,
            held_ms,
        } => held(format!("{path} = {value}"), *held_ms),
        Cause::Property {
            device,
            property,
            value,
            held_ms,
        } => held(
            format!("property {property} of {device} = {value}"),
            *held_ms,
        ),
        Cause::Time {
            sun,
            scheduled_ms,
            late_ms,
            missed,
        } => {
            let what = match sun {
                Some(SunEvent::Sunrise) => "sunrise",
                Some(SunEvent::Sunset) => "sunset",
                None => "clock time",
            };
            let mut text = format!("{what} due at {scheduled_ms} ms, {late_ms} ms late");
            if *missed > 0 {
                text.push_str(&format!(", {missed} earlier time(s) missed"));
            }
            text
        }
        Cause::Vehicle(event) => match event {
            VehicleEvent::Parked => "car parked",
            VehicleEvent::Driving => "car driving",
            VehicleEvent::Locked => "car locked",
            VehicleEvent::Unlocked => "car unlocked",
            VehicleEvent::ChargingStarted => "charging started",
            VehicleEvent::ChargingStopped => "charging stopped",
        }
        .to_owned(),
        Cause::Manual => "run by hand".to_owned(),
        Cause::ConsentWithdrawn => "\"car data to home\" turned off".to_owned(),
    }
}

fn held(text: String, held_ms: u64) -> String {
    if held_ms == 0 {
        text
    } else {
        format!("{text} (held {held_ms} ms)")
    }
}

fn step_result(result: &StepResult) -> String {
    match result {
        StepResult::Pending => "pending".to_owned(),
        StepResult::Succeeded => "done".to_owned(),
        StepResult::Failed(why) => format!("failed ({why})"),
        StepResult::TimedOut => "timed out".to_owned(),
        StepResult::Waited => "waited".to_owned(),
        StepResult::Chose(Some(branch)) => format!("chose branch {branch}"),
        StepResult::Chose(None) => "chose otherwise".to_owned(),
        StepResult::AwaitingConfirmation => "awaiting the owner's confirmation".to_owned(),
        StepResult::Declined => "declined by the owner".to_owned(),
        StepResult::ConfirmationTimedOut => "not confirmed in time".to_owned(),
        StepResult::NotParked => "refused: the car is not parked".to_owned(),
        StepResult::Cancelled => "cancelled".to_owned(),
        StepResult::NotDispatched => "not sent: the run could not be stored first".to_owned(),
    }
}

fn outcome(outcome: Outcome) -> String {
    match outcome {
        Outcome::Running => "running".to_owned(),
        Outcome::Queued => "queued".to_owned(),
        Outcome::Completed => "completed".to_owned(),
        Outcome::ConditionsNotMet => "conditions not met".to_owned(),
        Outcome::Skipped(why) => format!(
            "skipped: {}",
            match why {
                SkipReason::AlreadyRunning => "a run was going on",
                SkipReason::QueueFull => "the queue was full",
                SkipReason::TooManyRuns => "too many runs",
            }
        ),
        Outcome::Failed => "failed".to_owned(),
        Outcome::Cancelled(why) => format!(
            "cancelled: {}",
            match why {
                CancelReason::Restarted => "restarted by a new trigger",
                CancelReason::Disabled => "the task was disabled",
                CancelReason::Removed => "the task was deleted",
                CancelReason::ConsentWithdrawn => "\"car data to home\" turned off",
            }
        ),
        Outcome::DisabledByConsent => "disabled by consent".to_owned(),
        Outcome::Missed {
            occurrences,
            reason,
        } => format!(
            "missed {occurrences} time(s): {}",
            match reason {
                MissReason::PolicySkip => "the task skips missed times",
                MissReason::OutsideGrace => "older than the grace window",
            }
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_node::tether_automation::TaskId;
    use tether_node::tether_automation::trace::{ConditionRecord, RunId, StepRecord};

    #[test]
    fn a_manual_run_reads_as_lines_and_keeps_its_bytes() {
        let trace = Trace {
            seq: 4,
            task: TaskId(2),
            run: Some(RunId(9)),
            at_ms: 1_000,
            cause: Cause::Manual,
            conditions: vec![ConditionRecord {
                position: "conditions[0]".into(),
                description: "inside home".into(),
                value: true,
            }],
            steps: vec![StepRecord {
                step: vec![0],
                at_ms: 1_001,
                description: "vehicle command Lock".into(),
                result: StepResult::Succeeded,
            }],
            outcome: Outcome::Completed,
            ended_ms: Some(1_050),
        };
        let summary = TraceSummary::from(&trace);
        assert_eq!(summary.run_id, Some(9));
        assert_eq!(summary.cause, "run by hand");
        assert_eq!(summary.conditions, ["inside home = true"]);
        assert_eq!(summary.steps, ["vehicle command Lock: done"]);
        assert_eq!(summary.outcome, "completed");
        assert_eq!(wire::decode_trace(&summary.encoded), Ok(trace));
    }

    #[test]
    fn reasons_are_spelled_out() {
        assert_eq!(
            outcome(Outcome::Skipped(SkipReason::AlreadyRunning)),
            "skipped: a run was going on"
        );
        assert_eq!(
            step_result(&StepResult::NotParked),
            "refused: the car is not parked"
        );
        assert_eq!(cause(&Cause::Vehicle(VehicleEvent::Parked)), "car parked");
    }
}
