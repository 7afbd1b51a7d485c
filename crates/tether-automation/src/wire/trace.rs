//! Traces in their protobuf form (`tether.v1.Trace` in
//! `proto/tether/v1/automation_state.proto`, SPEC §18): what the automation
//! service lists, and what the engine's snapshot keeps for each run.
//!
//! Like the model, the protobuf form holds no position (R10, R32): places
//! by name only.

use prost::Message;
use tether_proto::v1 as pb;
use tether_proto::v1::{state_value, step_result, trace_cause, trace_outcome};

use super::WireError;
use crate::engine::{MAX_ACTION_NODES, MAX_BRANCHES, MAX_CONDITION_NODES, MAX_NESTING};
use crate::model::{
    DeviceId, PlaceId, PropertyId, SunEvent, TaskId, Transition, Value, VehicleEvent,
};
use crate::trace::{
    CancelReason, Cause, ConditionRecord, MissReason, Outcome, RunId, SkipReason, StepRecord,
    StepResult, Trace,
};

/// The longest text a decoded trace or snapshot may hold in one field (a
/// place, device, signal path, description, failure reason or text value),
/// in bytes. Far above what the engine writes (names are at most
/// [`crate::MAX_NAME_BYTES`], messages [`crate::MAX_MESSAGE_BYTES`]).
pub const MAX_TRACE_TEXT_BYTES: usize = 8 * 1024;

/// The most condition records a decoded trace may hold: the engine records
/// each condition node once per run, and a task has at most
/// [`crate::MAX_CONDITION_NODES`]; twice that leaves room.
pub const MAX_TRACE_CONDITIONS: usize = 2 * MAX_CONDITION_NODES;

/// The most step records a decoded trace may hold: each action node runs
/// at most once per run, and a task has at most [`crate::MAX_ACTION_NODES`];
/// twice that leaves room.
pub const MAX_TRACE_STEPS: usize = 2 * MAX_ACTION_NODES;

/// The longest step path a decoded trace may hold: an index per level of
/// nesting ([`crate::MAX_NESTING`]) and a branch between each two.
pub const MAX_STEP_PATH_LEN: usize = 2 * MAX_NESTING + 1;

/// A trace in its protobuf form.
pub fn trace_to_proto(trace: &Trace) -> pb::Trace {
    pb::Trace {
        seq: trace.seq,
        task: trace.task.0,
        run: trace.run.map(|r| r.0),
        at_ms: trace.at_ms,
        cause: Some(cause_to_proto(&trace.cause)),
        conditions: trace
            .conditions
            .iter()
            .map(|c| pb::ConditionRecord {
                position: c.position.clone(),
                description: c.description.clone(),
                value: c.value,
            })
            .collect(),
        steps: trace.steps.iter().map(step_to_proto).collect(),
        outcome: Some(outcome_to_proto(trace.outcome)),
        ended_ms: trace.ended_ms,
    }
}

/// A trace from its protobuf form (untrusted): every field checked, every
/// text and list bounded ([`MAX_TRACE_TEXT_BYTES`], [`MAX_TRACE_CONDITIONS`],
/// [`MAX_TRACE_STEPS`], [`MAX_STEP_PATH_LEN`]), an unknown enum value
/// refused.
pub fn trace_from_proto(trace: pb::Trace) -> Result<Trace, WireError> {
    if trace.conditions.len() > MAX_TRACE_CONDITIONS {
        return Err(WireError::TooLarge("conditions"));
    }
    if trace.steps.len() > MAX_TRACE_STEPS {
        return Err(WireError::TooLarge("steps"));
    }
    Ok(Trace {
        seq: trace.seq,
        task: TaskId(trace.task),
        run: trace.run.map(RunId),
        at_ms: trace.at_ms,
        cause: cause_from_proto(trace.cause.ok_or(WireError::Missing("cause"))?)?,
        conditions: trace
            .conditions
            .into_iter()
            .map(|c| {
                Ok(ConditionRecord {
                    position: bounded_state_text(c.position, "conditions.position")?,
                    description: bounded_state_text(c.description, "conditions.description")?,
                    value: c.value,
                })
            })
            .collect::<Result<_, WireError>>()?,
        steps: trace
            .steps
            .into_iter()
            .map(step_from_proto)
            .collect::<Result<_, _>>()?,
        outcome: outcome_from_proto(trace.outcome.ok_or(WireError::Missing("outcome"))?)?,
        ended_ms: trace.ended_ms,
    })
}

/// A trace as protobuf bytes.
pub fn encode_trace(trace: &Trace) -> Vec<u8> {
    trace_to_proto(trace).encode_to_vec()
}

/// A trace from protobuf bytes (untrusted), checked as by
/// [`trace_from_proto`]. `decode_trace(&encode_trace(t)) == Ok(t)`.
pub fn decode_trace(bytes: &[u8]) -> Result<Trace, WireError> {
    let message = pb::Trace::decode(bytes).map_err(|e| WireError::Decode(e.to_string()))?;
    trace_from_proto(message)
}

/// `text`, if it is at most [`MAX_TRACE_TEXT_BYTES`] long.
pub(super) fn bounded_state_text(text: String, field: &'static str) -> Result<String, WireError> {
    if text.len() > MAX_TRACE_TEXT_BYTES {
        return Err(WireError::TooLarge(field));
    }
    Ok(text)
}

/// A `u32` from the wire as the model's `u16`.
pub(super) fn narrow_state_u16(value: u32, field: &'static str) -> Result<u16, WireError> {
    u16::try_from(value).map_err(|_| WireError::OutOfRange(field))
}

fn state_value_to_proto(value: &Value) -> pb::StateValue {
    let kind = match value {
        Value::Bool(b) => state_value::Kind::BoolValue(*b),
        Value::Int(i) => state_value::Kind::IntValue(*i),
        Value::Double(d) => state_value::Kind::DoubleValue(*d),
        Value::Text(t) => state_value::Kind::TextValue(t.clone()),
    };
    pb::StateValue { kind: Some(kind) }
}

fn state_value_from_proto(
    value: Option<pb::StateValue>,
    field: &'static str,
) -> Result<Value, WireError> {
    Ok(
        match value
            .and_then(|v| v.kind)
            .ok_or(WireError::Missing(field))?
        {
            state_value::Kind::BoolValue(b) => Value::Bool(b),
            state_value::Kind::IntValue(i) => Value::Int(i),
            state_value::Kind::DoubleValue(d) => Value::Double(d),
            state_value::Kind::TextValue(t) => Value::Text(bounded_state_text(t, field)?),
        },
    )
}

/// A transition in its protobuf form.
pub(super) fn state_transition_to_proto(transition: Transition) -> pb::StateTransition {
    match transition {
        Transition::Enter => pb::StateTransition::Enter,
        Transition::Leave => pb::StateTransition::Leave,
    }
}

/// A transition from its protobuf form (required).
pub(super) fn state_transition_from_proto(
    value: i32,
    field: &'static str,
) -> Result<Transition, WireError> {
    match pb::StateTransition::try_from(value) {
        Ok(pb::StateTransition::Enter) => Ok(Transition::Enter),
        Ok(pb::StateTransition::Leave) => Ok(Transition::Leave),
        Ok(pb::StateTransition::Unspecified) => Err(WireError::Missing(field)),
        Err(_) => Err(WireError::UnknownEnum { field, value }),
    }
}

fn vehicle_event_to_proto(event: VehicleEvent) -> pb::StateVehicleEvent {
    match event {
        VehicleEvent::Parked => pb::StateVehicleEvent::Parked,
        VehicleEvent::Driving => pb::StateVehicleEvent::Driving,
        VehicleEvent::Locked => pb::StateVehicleEvent::Locked,
        VehicleEvent::Unlocked => pb::StateVehicleEvent::Unlocked,
        VehicleEvent::ChargingStarted => pb::StateVehicleEvent::ChargingStarted,
        VehicleEvent::ChargingStopped => pb::StateVehicleEvent::ChargingStopped,
    }
}

fn vehicle_event_from_proto(value: i32) -> Result<VehicleEvent, WireError> {
    const FIELD: &str = "cause.vehicle";
    match pb::StateVehicleEvent::try_from(value) {
        Ok(pb::StateVehicleEvent::Parked) => Ok(VehicleEvent::Parked),
        Ok(pb::StateVehicleEvent::Driving) => Ok(VehicleEvent::Driving),
        Ok(pb::StateVehicleEvent::Locked) => Ok(VehicleEvent::Locked),
        Ok(pb::StateVehicleEvent::Unlocked) => Ok(VehicleEvent::Unlocked),
        Ok(pb::StateVehicleEvent::ChargingStarted) => Ok(VehicleEvent::ChargingStarted),
        Ok(pb::StateVehicleEvent::ChargingStopped) => Ok(VehicleEvent::ChargingStopped),
        Ok(pb::StateVehicleEvent::Unspecified) => Err(WireError::Missing(FIELD)),
        Err(_) => Err(WireError::UnknownEnum {
            field: FIELD,
            value,
        }),
    }
}

fn cause_to_proto(cause: &Cause) -> pb::TraceCause {
    let kind = match cause {
        Cause::Place { place, transition } => trace_cause::Kind::Place(trace_cause::Place {
            place: place.0.clone(),
            transition: state_transition_to_proto(*transition).into(),
        }),
        Cause::Signal {
            path,
            value,
            held_ms,
        } => trace_cause::Kind::Signal(trace_cause::Signal {
            path: path.clone(),
            value: Some(state_value_to_proto(value)),
            held_ms: *held_ms,
        }),
        Cause::Property {
            device,
            property,
            value,
            held_ms,
        } => trace_cause::Kind::Property(trace_cause::Property {
            device: device.0.clone(),
            siid: property.siid,
            piid: property.piid,
            value: Some(state_value_to_proto(value)),
            held_ms: *held_ms,
        }),
        Cause::Time {
            sun,
            scheduled_ms,
            late_ms,
            missed,
        } => trace_cause::Kind::Time(trace_cause::Time {
            sun: match sun {
                None => pb::StateSunEvent::Unspecified,
                Some(SunEvent::Sunrise) => pb::StateSunEvent::Sunrise,
                Some(SunEvent::Sunset) => pb::StateSunEvent::Sunset,
            }
            .into(),
            scheduled_ms: *scheduled_ms,
            late_ms: *late_ms,
            missed: *missed,
        }),
        Cause::Vehicle(event) => trace_cause::Kind::Vehicle(vehicle_event_to_proto(*event).into()),
        Cause::Manual => trace_cause::Kind::Event(trace_cause::Event::Manual.into()),
        Cause::ConsentWithdrawn => {
            trace_cause::Kind::Event(trace_cause::Event::ConsentWithdrawn.into())
        }
    };
    pb::TraceCause { kind: Some(kind) }
}

fn cause_from_proto(cause: pb::TraceCause) -> Result<Cause, WireError> {
    Ok(match cause.kind.ok_or(WireError::Missing("cause"))? {
        trace_cause::Kind::Place(p) => Cause::Place {
            place: PlaceId(bounded_state_text(p.place, "cause.place")?),
            transition: state_transition_from_proto(p.transition, "cause.place.transition")?,
        },
        trace_cause::Kind::Signal(s) => Cause::Signal {
            path: bounded_state_text(s.path, "cause.signal.path")?,
            value: state_value_from_proto(s.value, "cause.signal.value")?,
            held_ms: s.held_ms,
        },
        trace_cause::Kind::Property(p) => Cause::Property {
            device: DeviceId(bounded_state_text(p.device, "cause.property.device")?),
            property: PropertyId::new(p.siid, p.piid),
            value: state_value_from_proto(p.value, "cause.property.value")?,
            held_ms: p.held_ms,
        },
        trace_cause::Kind::Time(t) => Cause::Time {
            sun: match pb::StateSunEvent::try_from(t.sun) {
                Ok(pb::StateSunEvent::Unspecified) => None,
                Ok(pb::StateSunEvent::Sunrise) => Some(SunEvent::Sunrise),
                Ok(pb::StateSunEvent::Sunset) => Some(SunEvent::Sunset),
                Err(_) => {
                    return Err(WireError::UnknownEnum {
                        field: "cause.time.sun",
                        value: t.sun,
                    });
                }
            },
            scheduled_ms: t.scheduled_ms,
            late_ms: t.late_ms,
            missed: t.missed,
        },
        trace_cause::Kind::Vehicle(event) => Cause::Vehicle(vehicle_event_from_proto(event)?),
        trace_cause::Kind::Event(event) => match trace_cause::Event::try_from(event) {
            Ok(trace_cause::Event::Manual) => Cause::Manual,
            Ok(trace_cause::Event::ConsentWithdrawn) => Cause::ConsentWithdrawn,
            Ok(trace_cause::Event::Unspecified) => return Err(WireError::Missing("cause.event")),
            Err(_) => {
                return Err(WireError::UnknownEnum {
                    field: "cause.event",
                    value: event,
                });
            }
        },
    })
}

fn step_to_proto(step: &StepRecord) -> pb::StepRecord {
    use step_result::{Kind, Status};
    let status = |s: Status| Kind::Status(s.into());
    let kind = match &step.result {
        StepResult::Pending => status(Status::Pending),
        StepResult::Succeeded => status(Status::Succeeded),
        StepResult::Failed(reason) => Kind::Failed(reason.clone()),
        StepResult::TimedOut => status(Status::TimedOut),
        StepResult::Waited => status(Status::Waited),
        StepResult::Chose(branch) => Kind::Chose(step_result::Chose {
            // A branch index is below MAX_BRANCHES; saturating keeps an
            // impossible one out of range rather than wrapping it.
            branch: branch.map(|b| u32::try_from(b).unwrap_or(u32::MAX)),
        }),
        StepResult::AwaitingConfirmation => status(Status::AwaitingConfirmation),
        StepResult::Declined => status(Status::Declined),
        StepResult::ConfirmationTimedOut => status(Status::ConfirmationTimedOut),
        StepResult::NotParked => status(Status::NotParked),
        StepResult::Cancelled => status(Status::Cancelled),
        StepResult::NotDispatched => status(Status::NotDispatched),
    };
    pb::StepRecord {
        step: step.step.iter().map(|&i| u32::from(i)).collect(),
        at_ms: step.at_ms,
        description: step.description.clone(),
        result: Some(pb::StepResult { kind: Some(kind) }),
    }
}

fn step_from_proto(step: pb::StepRecord) -> Result<StepRecord, WireError> {
    use step_result::{Kind, Status};
    if step.step.len() > MAX_STEP_PATH_LEN {
        return Err(WireError::TooLarge("steps.step"));
    }
    let path = step
        .step
        .iter()
        .map(|&i| narrow_state_u16(i, "steps.step"))
        .collect::<Result<_, _>>()?;
    const FIELD: &str = "steps.result";
    let kind = step
        .result
        .and_then(|r| r.kind)
        .ok_or(WireError::Missing(FIELD))?;
    let result = match kind {
        Kind::Status(value) => match Status::try_from(value) {
            Ok(Status::Pending) => StepResult::Pending,
            Ok(Status::Succeeded) => StepResult::Succeeded,
            Ok(Status::TimedOut) => StepResult::TimedOut,
            Ok(Status::Waited) => StepResult::Waited,
            Ok(Status::AwaitingConfirmation) => StepResult::AwaitingConfirmation,
            Ok(Status::Declined) => StepResult::Declined,
            Ok(Status::ConfirmationTimedOut) => StepResult::ConfirmationTimedOut,
            Ok(Status::NotParked) => StepResult::NotParked,
            Ok(Status::Cancelled) => StepResult::Cancelled,
            Ok(Status::NotDispatched) => StepResult::NotDispatched,
            Ok(Status::Unspecified) => return Err(WireError::Missing(FIELD)),
            Err(_) => {
                return Err(WireError::UnknownEnum {
                    field: FIELD,
                    value,
                });
            }
        },
        Kind::Failed(reason) => {
            StepResult::Failed(bounded_state_text(reason, "steps.result.failed")?)
        }
        Kind::Chose(chose) => StepResult::Chose(match chose.branch {
            None => None,
            Some(b) => match usize::try_from(b) {
                Ok(b) if b < MAX_BRANCHES => Some(b),
                _ => return Err(WireError::OutOfRange("steps.result.chose.branch")),
            },
        }),
    };
    Ok(StepRecord {
        step: path,
        at_ms: step.at_ms,
        description: bounded_state_text(step.description, "steps.description")?,
        result,
    })
}

fn outcome_to_proto(outcome: Outcome) -> pb::TraceOutcome {
    use trace_outcome::{Kind, Status};
    let status = |s: Status| Kind::Status(s.into());
    let kind = match outcome {
        Outcome::Running => status(Status::Running),
        Outcome::Queued => status(Status::Queued),
        Outcome::Completed => status(Status::Completed),
        Outcome::ConditionsNotMet => status(Status::ConditionsNotMet),
        Outcome::Failed => status(Status::Failed),
        Outcome::DisabledByConsent => status(Status::DisabledByConsent),
        Outcome::Skipped(reason) => Kind::Skipped(
            match reason {
                SkipReason::AlreadyRunning => pb::SkipReason::AlreadyRunning,
                SkipReason::QueueFull => pb::SkipReason::QueueFull,
                SkipReason::TooManyRuns => pb::SkipReason::TooManyRuns,
            }
            .into(),
        ),
        Outcome::Cancelled(reason) => Kind::Cancelled(
            match reason {
                CancelReason::Restarted => pb::CancelReason::Restarted,
                CancelReason::Disabled => pb::CancelReason::Disabled,
                CancelReason::Removed => pb::CancelReason::Removed,
                CancelReason::ConsentWithdrawn => pb::CancelReason::ConsentWithdrawn,
            }
            .into(),
        ),
        Outcome::Missed {
            occurrences,
            reason,
        } => Kind::Missed(trace_outcome::Missed {
            occurrences,
            reason: match reason {
                MissReason::PolicySkip => pb::MissReason::PolicySkip,
                MissReason::OutsideGrace => pb::MissReason::OutsideGrace,
            }
            .into(),
        }),
    };
    pb::TraceOutcome { kind: Some(kind) }
}

fn outcome_from_proto(outcome: pb::TraceOutcome) -> Result<Outcome, WireError> {
    use trace_outcome::{Kind, Status};
    let unknown = |field, value| WireError::UnknownEnum { field, value };
    Ok(match outcome.kind.ok_or(WireError::Missing("outcome"))? {
        Kind::Status(value) => match Status::try_from(value) {
            Ok(Status::Running) => Outcome::Running,
            Ok(Status::Queued) => Outcome::Queued,
            Ok(Status::Completed) => Outcome::Completed,
            Ok(Status::ConditionsNotMet) => Outcome::ConditionsNotMet,
            Ok(Status::Failed) => Outcome::Failed,
            Ok(Status::DisabledByConsent) => Outcome::DisabledByConsent,
            Ok(Status::Unspecified) => return Err(WireError::Missing("outcome.status")),
            Err(_) => return Err(unknown("outcome.status", value)),
        },
        Kind::Skipped(value) => Outcome::Skipped(match pb::SkipReason::try_from(value) {
            Ok(pb::SkipReason::AlreadyRunning) => SkipReason::AlreadyRunning,
            Ok(pb::SkipReason::QueueFull) => SkipReason::QueueFull,
            Ok(pb::SkipReason::TooManyRuns) => SkipReason::TooManyRuns,
            Ok(pb::SkipReason::Unspecified) => {
                return Err(WireError::Missing("outcome.skipped"));
            }
            Err(_) => return Err(unknown("outcome.skipped", value)),
        }),
        Kind::Cancelled(value) => Outcome::Cancelled(match pb::CancelReason::try_from(value) {
            Ok(pb::CancelReason::Restarted) => CancelReason::Restarted,
            Ok(pb::CancelReason::Disabled) => CancelReason::Disabled,
            Ok(pb::CancelReason::Removed) => CancelReason::Removed,
            Ok(pb::CancelReason::ConsentWithdrawn) => CancelReason::ConsentWithdrawn,
            Ok(pb::CancelReason::Unspecified) => {
                return Err(WireError::Missing("outcome.cancelled"));
            }
            Err(_) => return Err(unknown("outcome.cancelled", value)),
        }),
        Kind::Missed(missed) => Outcome::Missed {
            occurrences: missed.occurrences,
            reason: match pb::MissReason::try_from(missed.reason) {
                Ok(pb::MissReason::PolicySkip) => MissReason::PolicySkip,
                Ok(pb::MissReason::OutsideGrace) => MissReason::OutsideGrace,
                Ok(pb::MissReason::Unspecified) => {
                    return Err(WireError::Missing("outcome.missed.reason"));
                }
                Err(_) => return Err(unknown("outcome.missed.reason", missed.reason)),
            },
        },
    })
}
