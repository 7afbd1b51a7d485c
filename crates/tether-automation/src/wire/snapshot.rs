//! The engine's snapshot in its protobuf form (`tether.v1.EngineSnapshot` in
//! `proto/tether/v1/automation_state.proto`, SPEC §18): what the host
//! persists so that delays, holds, dwell timers and runs survive a restart
//! ([`crate::Engine::snapshot`], [`crate::Engine::restore`]).
//!
//! It holds no task (runs name theirs by id; the host installs the tasks
//! again before restoring) and no position: places carry inside/outside
//! and a pending transition's start only (R32).

use std::collections::BTreeSet;

use prost::Message;
use tether_proto::v1 as pb;
use tether_proto::v1::run_waiting;

use super::WireError;
use super::trace::{
    bounded_state_text, narrow_state_u16, state_transition_from_proto, state_transition_to_proto,
    trace_from_proto, trace_to_proto,
};
use crate::engine::{
    CursorFrame, HoldSnapshot, MAX_NESTING, PlaceSnapshot, RunSnapshot, Snapshot, Waiting,
};
use crate::model::{PlaceId, TaskId};
use crate::trace::RunId;

/// The deepest cursor a decoded run may have: one frame per level of
/// nesting the engine allows ([`crate::MAX_NESTING`]), plus one.
pub const MAX_CURSOR_DEPTH: usize = MAX_NESTING + 1;

/// A snapshot in its protobuf form.
pub fn snapshot_to_proto(snapshot: &Snapshot) -> pb::EngineSnapshot {
    pb::EngineSnapshot {
        version: snapshot.version,
        taken_at_ms: snapshot.taken_at_ms,
        seed: snapshot.seed.to_vec(),
        next_run: snapshot.next_run,
        next_request: snapshot.next_request,
        next_trace: snapshot.next_trace,
        places: snapshot
            .places
            .iter()
            .map(|p| pb::PlaceSnapshot {
                place: p.place.0.clone(),
                inside: p.inside,
                pending: p
                    .pending
                    .map(|(transition, since_ms)| pb::PendingTransition {
                        transition: state_transition_to_proto(transition).into(),
                        since_ms,
                    }),
            })
            .collect(),
        holds: snapshot
            .holds
            .iter()
            .map(|h| pb::HoldSnapshot {
                task: h.task.0,
                trigger: u32::from(h.trigger),
                since_ms: h.since_ms,
                due_ms: h.due_ms,
            })
            .collect(),
        runs: snapshot.runs.iter().map(run_to_proto).collect(),
    }
}

/// A snapshot from its protobuf form (untrusted): every field checked, an
/// unknown enum value refused, cursors at most [`MAX_CURSOR_DEPTH`] deep,
/// texts and traces bounded as by [`super::trace_from_proto`], and no place,
/// hold or run listed twice. The version is kept as found:
/// [`crate::Engine::restore`] refuses another one.
pub fn snapshot_from_proto(snapshot: pb::EngineSnapshot) -> Result<Snapshot, WireError> {
    let seed: [u8; 16] = snapshot
        .seed
        .as_slice()
        .try_into()
        .map_err(|_| WireError::OutOfRange("seed"))?;

    let mut seen_places = BTreeSet::new();
    let mut places = Vec::with_capacity(snapshot.places.len());
    for p in snapshot.places {
        let place = PlaceId(bounded_state_text(p.place, "places.place")?);
        if !seen_places.insert(place.clone()) {
            return Err(WireError::Duplicate("places"));
        }
        let pending = match p.pending {
            None => None,
            Some(pending) => Some((
                state_transition_from_proto(pending.transition, "places.pending.transition")?,
                pending.since_ms,
            )),
        };
        places.push(PlaceSnapshot {
            place,
            inside: p.inside,
            pending,
        });
    }

    let mut seen_holds = BTreeSet::new();
    let mut holds = Vec::with_capacity(snapshot.holds.len());
    for h in snapshot.holds {
        let hold = HoldSnapshot {
            task: TaskId(h.task),
            trigger: narrow_state_u16(h.trigger, "holds.trigger")?,
            since_ms: h.since_ms,
            due_ms: h.due_ms,
        };
        if !seen_holds.insert((hold.task, hold.trigger)) {
            return Err(WireError::Duplicate("holds"));
        }
        holds.push(hold);
    }

    let mut seen_runs = BTreeSet::new();
    let mut runs = Vec::with_capacity(snapshot.runs.len());
    for r in snapshot.runs {
        let run = run_from_proto(r)?;
        if !seen_runs.insert(run.run) {
            return Err(WireError::Duplicate("runs"));
        }
        runs.push(run);
    }

    Ok(Snapshot {
        version: snapshot.version,
        taken_at_ms: snapshot.taken_at_ms,
        seed,
        next_run: snapshot.next_run,
        next_request: snapshot.next_request,
        next_trace: snapshot.next_trace,
        places,
        holds,
        runs,
    })
}

/// A snapshot as protobuf bytes, for the host to persist.
pub fn encode_snapshot(snapshot: &Snapshot) -> Vec<u8> {
    snapshot_to_proto(snapshot).encode_to_vec()
}

/// A snapshot from protobuf bytes (untrusted: read back from storage),
/// checked as by [`snapshot_from_proto`].
/// `decode_snapshot(&encode_snapshot(s)) == Ok(s)`.
pub fn decode_snapshot(bytes: &[u8]) -> Result<Snapshot, WireError> {
    let message =
        pb::EngineSnapshot::decode(bytes).map_err(|e| WireError::Decode(e.to_string()))?;
    snapshot_from_proto(message)
}

fn run_to_proto(run: &RunSnapshot) -> pb::RunSnapshot {
    use run_waiting::{Kind, State};
    let kind = match run.waiting {
        Waiting::Ready => Kind::State(State::Ready.into()),
        Waiting::Queued => Kind::State(State::Queued.into()),
        Waiting::ActionResult => Kind::State(State::ActionResult.into()),
        Waiting::Delay { until_ms } => Kind::DelayUntilMs(until_ms),
        Waiting::Confirmation { deadline_ms } => Kind::ConfirmationDeadlineMs(deadline_ms),
    };
    pb::RunSnapshot {
        run: run.run.0,
        task: run.task.0,
        cursor: run
            .cursor
            .iter()
            .map(|f| pb::CursorFrame {
                index: u32::from(f.index),
                branch: f.branch.map(u32::from),
            })
            .collect(),
        waiting: Some(pb::RunWaiting { kind: Some(kind) }),
        trace: Some(trace_to_proto(&run.trace)),
    }
}

fn run_from_proto(run: pb::RunSnapshot) -> Result<RunSnapshot, WireError> {
    use run_waiting::{Kind, State};
    if run.cursor.len() > MAX_CURSOR_DEPTH {
        return Err(WireError::TooLarge("runs.cursor"));
    }
    let cursor = run
        .cursor
        .iter()
        .map(|f| {
            Ok(CursorFrame {
                index: narrow_state_u16(f.index, "runs.cursor.index")?,
                branch: f
                    .branch
                    .map(|b| narrow_state_u16(b, "runs.cursor.branch"))
                    .transpose()?,
            })
        })
        .collect::<Result<_, WireError>>()?;
    const FIELD: &str = "runs.waiting";
    let waiting = match run
        .waiting
        .and_then(|w| w.kind)
        .ok_or(WireError::Missing(FIELD))?
    {
        Kind::State(value) => match State::try_from(value) {
            Ok(State::Ready) => Waiting::Ready,
            Ok(State::Queued) => Waiting::Queued,
            Ok(State::ActionResult) => Waiting::ActionResult,
            Ok(State::Unspecified) => return Err(WireError::Missing(FIELD)),
            Err(_) => {
                return Err(WireError::UnknownEnum {
                    field: FIELD,
                    value,
                });
            }
        },
        Kind::DelayUntilMs(until_ms) => Waiting::Delay { until_ms },
        Kind::ConfirmationDeadlineMs(deadline_ms) => Waiting::Confirmation { deadline_ms },
    };
    Ok(RunSnapshot {
        run: RunId(run.run),
        task: TaskId(run.task),
        cursor,
        waiting,
        trace: trace_from_proto(run.trace.ok_or(WireError::Missing("runs.trace"))?)?,
    })
}
