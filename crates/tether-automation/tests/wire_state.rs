//! Traces and engine snapshots in their protobuf form
//! (`proto/tether/v1/automation_state.proto`, SPEC §18): exact round trips,
//! a restart through bytes that finishes runs as if nothing happened, no
//! position in either (R32), and typed errors on untrusted bytes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

mod common;

use common::*;
use prost::Message;
use tether_automation::wire::{
    MAX_CURSOR_DEPTH, MAX_STEP_PATH_LEN, MAX_TRACE_TEXT_BYTES, WireError, decode_snapshot,
    decode_trace, encode_snapshot, encode_trace, snapshot_from_proto, snapshot_to_proto,
    trace_from_proto, trace_to_proto,
};
use tether_automation::{
    Action, Branch, CancelReason, Cause, Change, Condition, ConditionRecord, CursorFrame, DeviceId,
    HoldSnapshot, MissReason, Mode, Outcome, PlaceId, PlaceSnapshot, PropertyId, RunId,
    RunSnapshot, SNAPSHOT_VERSION, Site, SkipReason, Snapshot, StepRecord, StepResult, SunEvent,
    Task, TaskId, Test, Trace, Transition, Trigger, Value, VehicleEvent, Waiting,
};
use tether_proto::v1 as pb;

fn trace(cause: Cause, outcome: Outcome) -> Trace {
    Trace {
        seq: 41,
        task: TaskId(7),
        run: Some(RunId(3)),
        at_ms: MONDAY_MS,
        cause,
        conditions: vec![
            ConditionRecord {
                position: "conditions[0]".into(),
                description: "all of 1".into(),
                value: true,
            },
            ConditionRecord {
                position: "conditions[0].all[0]".into(),
                description: format!("{SOC} < 20 (seen 15)"),
                value: false,
            },
        ],
        steps: vec![StepRecord {
            step: vec![0],
            at_ms: MONDAY_MS + 5,
            description: "set lamp 2.1 to true".into(),
            result: StepResult::Succeeded,
        }],
        outcome,
        ended_ms: Some(MONDAY_MS + 9),
    }
}

fn every_cause() -> Vec<Cause> {
    let mut causes = vec![
        Cause::Place {
            place: home(),
            transition: Transition::Enter,
        },
        Cause::Place {
            place: office(),
            transition: Transition::Leave,
        },
        Cause::Property {
            device: motion(),
            property: MOTION,
            value: Value::Bool(true),
            held_ms: 0,
        },
        Cause::Property {
            device: DeviceId::new("thermostat"),
            property: PropertyId::new(u32::MAX, 0),
            value: Value::Int(i64::MIN),
            held_ms: u64::MAX,
        },
        Cause::Manual,
        Cause::ConsentWithdrawn,
    ];
    for value in [
        Value::Bool(false),
        Value::Int(-42),
        Value::Int(i64::MAX),
        Value::Double(15.25),
        Value::Double(-0.0),
        Value::Double(f64::INFINITY),
        Value::Text(String::new()),
        Value::Text("Drive ✓".into()),
    ] {
        causes.push(Cause::Signal {
            path: SOC.into(),
            value,
            held_ms: 30 * MINUTE,
        });
    }
    for sun in [None, Some(SunEvent::Sunrise), Some(SunEvent::Sunset)] {
        causes.push(Cause::Time {
            sun,
            scheduled_ms: MONDAY_MS + 7 * HOUR,
            late_ms: HOUR,
            missed: 3,
        });
    }
    for event in [
        VehicleEvent::Parked,
        VehicleEvent::Driving,
        VehicleEvent::Locked,
        VehicleEvent::Unlocked,
        VehicleEvent::ChargingStarted,
        VehicleEvent::ChargingStopped,
    ] {
        causes.push(Cause::Vehicle(event));
    }
    causes
}

fn every_outcome() -> Vec<Outcome> {
    vec![
        Outcome::Running,
        Outcome::Queued,
        Outcome::Completed,
        Outcome::ConditionsNotMet,
        Outcome::Skipped(SkipReason::AlreadyRunning),
        Outcome::Skipped(SkipReason::QueueFull),
        Outcome::Skipped(SkipReason::TooManyRuns),
        Outcome::Failed,
        Outcome::Cancelled(CancelReason::Restarted),
        Outcome::Cancelled(CancelReason::Disabled),
        Outcome::Cancelled(CancelReason::Removed),
        Outcome::Cancelled(CancelReason::ConsentWithdrawn),
        Outcome::DisabledByConsent,
        Outcome::Missed {
            occurrences: 1,
            reason: MissReason::PolicySkip,
        },
        Outcome::Missed {
            occurrences: u32::MAX,
            reason: MissReason::OutsideGrace,
        },
    ]
}

fn every_step_result() -> Vec<StepResult> {
    vec![
        StepResult::Pending,
        StepResult::Succeeded,
        StepResult::Failed("device offline".into()),
        StepResult::Failed(String::new()),
        StepResult::TimedOut,
        StepResult::Waited,
        StepResult::Chose(None),
        StepResult::Chose(Some(0)),
        StepResult::Chose(Some(tether_automation::MAX_BRANCHES - 1)),
        StepResult::AwaitingConfirmation,
        StepResult::Declined,
        StepResult::ConfirmationTimedOut,
        StepResult::NotParked,
        StepResult::Cancelled,
        StepResult::NotDispatched,
    ]
}

fn assert_round_trip(t: &Trace) {
    assert_eq!(decode_trace(&encode_trace(t)).as_ref(), Ok(t));
    assert_eq!(trace_from_proto(trace_to_proto(t)).as_ref(), Ok(t));
}

#[test]
fn a_trace_of_every_cause_round_trips_exactly() {
    for cause in every_cause() {
        assert_round_trip(&trace(cause, Outcome::Completed));
    }
}

#[test]
fn a_trace_of_every_outcome_round_trips_exactly() {
    for outcome in every_outcome() {
        assert_round_trip(&trace(Cause::Manual, outcome));
    }
}

#[test]
fn every_step_result_and_a_deep_step_path_round_trip_exactly() {
    let mut t = trace(Cause::Manual, Outcome::Failed);
    t.steps = every_step_result()
        .into_iter()
        .enumerate()
        .map(|(i, result)| StepRecord {
            step: vec![i as u16, 0, u16::MAX],
            at_ms: MONDAY_MS + i as u64,
            description: format!("step {i}"),
            result,
        })
        .collect();
    t.steps.push(StepRecord {
        step: vec![1; MAX_STEP_PATH_LEN],
        at_ms: 0,
        description: "x".repeat(MAX_TRACE_TEXT_BYTES),
        result: StepResult::Waited,
    });
    assert_round_trip(&t);
}

#[test]
fn a_trace_that_has_not_run_or_ended_round_trips_exactly() {
    let mut t = trace(
        Cause::Time {
            sun: None,
            scheduled_ms: 0,
            late_ms: 0,
            missed: 0,
        },
        Outcome::Queued,
    );
    t.run = None;
    t.ended_ms = None;
    t.conditions.clear();
    t.steps.clear();
    assert_round_trip(&t);
    t.run = Some(RunId(0));
    t.ended_ms = Some(0);
    assert_round_trip(&t);
}

/// Every way a run can wait, every place state, in a snapshot built by hand.
fn handmade_snapshot() -> Snapshot {
    let waitings = [
        Waiting::Ready,
        Waiting::Queued,
        Waiting::Delay {
            until_ms: MONDAY_MS + HOUR,
        },
        Waiting::ActionResult,
        Waiting::Confirmation {
            deadline_ms: MONDAY_MS + MINUTE,
        },
    ];
    Snapshot {
        version: SNAPSHOT_VERSION,
        taken_at_ms: MONDAY_MS,
        seed: *b"0123456789abcdef",
        next_run: 9,
        next_request: 31,
        next_trace: 77,
        places: vec![
            PlaceSnapshot {
                place: home(),
                inside: Some(true),
                pending: Some((Transition::Leave, MONDAY_MS - 1)),
            },
            PlaceSnapshot {
                place: office(),
                inside: Some(false),
                pending: None,
            },
            PlaceSnapshot {
                place: PlaceId::new("gym"),
                inside: None,
                pending: Some((Transition::Enter, 0)),
            },
        ],
        holds: vec![
            HoldSnapshot {
                task: TaskId(1),
                trigger: 0,
                since_ms: MONDAY_MS - MINUTE,
                due_ms: MONDAY_MS + MINUTE,
            },
            HoldSnapshot {
                task: TaskId(1),
                trigger: u16::MAX,
                since_ms: 0,
                due_ms: u64::MAX,
            },
        ],
        runs: waitings
            .into_iter()
            .enumerate()
            .map(|(i, waiting)| RunSnapshot {
                run: RunId(i as u64 + 1),
                task: TaskId(i as u64 % 2),
                cursor: vec![
                    CursorFrame {
                        index: 2,
                        branch: Some(1),
                    },
                    CursorFrame {
                        index: u16::MAX,
                        branch: None,
                    },
                ][..i % 3]
                    .to_vec(),
                waiting,
                trace: trace(Cause::Manual, Outcome::Running),
            })
            .collect(),
    }
}

#[test]
fn a_snapshot_of_every_wait_and_place_state_round_trips_exactly() {
    let s = handmade_snapshot();
    assert_eq!(decode_snapshot(&encode_snapshot(&s)).as_ref(), Ok(&s));
    assert_eq!(snapshot_from_proto(snapshot_to_proto(&s)).as_ref(), Ok(&s));
    let empty = Snapshot {
        places: Vec::new(),
        holds: Vec::new(),
        runs: Vec::new(),
        ..s
    };
    assert_eq!(decode_snapshot(&encode_snapshot(&empty)), Ok(empty));
}

// ------------------------------------------------------------------ restart

/// Mode queued: lamp on, then (if the speed is not above 200, which it is
/// not while unknown) wait ten minutes inside a branch and turn it off.
fn evening() -> Task {
    Task::new(TaskId(1), "evening")
        .trigger(Trigger::Manual)
        .mode(Mode::Queued { max: 3 })
        .action(set_power(lamp(), true))
        .action(Action::Choose {
            branches: vec![Branch {
                conditions: vec![Condition::Not(Box::new(Condition::Signal {
                    path: SPEED.into(),
                    test: Test::Above(200.0),
                }))],
                actions: vec![Action::Delay { ms: 10 * MINUTE }, set_power(lamp(), false)],
            }],
            otherwise: vec![],
        })
}

fn left_home() -> Task {
    Task::new(TaskId(2), "left home")
        .trigger(Trigger::Place {
            place: home(),
            transition: Transition::Leave,
        })
        .action(set_power(porch(), false))
}

fn charge_stuck_low() -> Task {
    Task::new(TaskId(3), "charge stuck low for 30 min")
        .trigger(Trigger::Signal {
            path: SOC.into(),
            change: Change::Becomes(Test::Below(20.0)),
            hold_ms: 30 * MINUTE,
        })
        .action(set_power(garage(), true))
}

fn tasks() -> [Task; 3] {
    [evening(), left_home(), charge_stuck_low()]
}

/// An engine mid-run: a delay pending inside a branch, a run queued behind
/// it, a dwell timer pending and a hold pending.
fn busy_engine() -> Harness {
    let mut h = Harness::new(Site::HeadUnit);
    for task in tasks() {
        h.install(task);
    }
    h.start();
    h.drain();
    h.fix(HOME, 10.0);
    h.advance(MINUTE);
    h.signal(SOC, Value::Double(50.0));
    h.signal(SOC, Value::Double(15.0));
    h.engine.handle_manual_run(TaskId(1), h.now).unwrap();
    h.engine.handle_manual_run(TaskId(1), h.now).unwrap();
    let out = h.drain();
    assert!(h.succeed_all(&out).is_empty());
    h.fix(north_of(HOME, 500.0), 10.0);
    h.advance(10_000);
    h
}

#[test]
fn a_snapshot_taken_mid_run_holds_each_kind_of_pending_time() {
    let h = busy_engine();
    let s = h.engine.snapshot();
    assert_eq!(s.runs.len(), 2);
    assert_eq!(s.runs[0].cursor.len(), 2, "inside the branch");
    assert!(matches!(s.runs[0].waiting, Waiting::Delay { .. }));
    assert_eq!(
        s.runs[0].trace.steps.last().unwrap().result,
        StepResult::Waited
    );
    assert!(!s.runs[0].trace.conditions.is_empty());
    assert_eq!(s.runs[1].waiting, Waiting::Queued);
    assert_eq!(s.holds.len(), 1);
    assert!(s.places.iter().any(|p| p.pending.is_some()));
    assert_eq!(decode_snapshot(&encode_snapshot(&s)), Ok(s));
}

#[test]
fn an_engine_restored_from_snapshot_bytes_finishes_its_runs_as_the_original_r20() {
    let mut original = busy_engine();
    let bytes = encode_snapshot(&original.engine.snapshot());

    let mut restored = Harness::new(Site::HeadUnit);
    restored.now = original.now;
    for task in tasks() {
        restored.install(task);
    }
    let report = restored
        .engine
        .restore(decode_snapshot(&bytes).unwrap(), restored.now)
        .unwrap();
    assert_eq!((report.runs, report.holds, report.places), (2, 1, 1));
    assert_eq!(report.runs_dropped, 0);
    restored.drain();

    // The car reports the charge again after the restart (the engine
    // keeps no signal values across it); the original sees the same.
    for h in [&mut original, &mut restored] {
        h.signal(SOC, Value::Double(15.0));
    }
    let done = original.run_for(2 * HOUR);
    let again = restored.run_for(2 * HOUR);
    // Porch off (dwell), lamp off and on and off (delay, then the queued
    // run), garage on (hold).
    assert_eq!(done.len(), 5, "{done:?}");
    assert_eq!(again, done);
    for id in [TaskId(1), TaskId(2), TaskId(3)] {
        assert_eq!(restored.traces(id), original.traces(id), "{id}");
    }
    assert!(
        original
            .outcomes(TaskId(1))
            .iter()
            .all(|o| *o == Outcome::Completed)
    );
}

#[test]
fn neither_a_snapshot_nor_a_trace_carries_a_position_r32() {
    let h = busy_engine();
    let bytes = encode_snapshot(&h.engine.snapshot());
    let traces: Vec<u8> = [TaskId(1), TaskId(2), TaskId(3)]
        .into_iter()
        .flat_map(|id| h.traces(id))
        .flat_map(|t| encode_trace(&t))
        .collect();
    for at in [HOME, north_of(HOME, 500.0)] {
        for coordinate in [at.lat, at.lon] {
            let le = coordinate.to_le_bytes();
            for haystack in [&bytes, &traces] {
                assert!(!haystack.windows(8).any(|w| w == le));
            }
        }
    }
}

// ------------------------------------------------------------------ untrusted bytes

#[test]
fn bytes_that_are_not_a_trace_or_snapshot_are_refused() {
    assert!(matches!(
        decode_trace(&[0xff, 0xff, 0xff]),
        Err(WireError::Decode(_))
    ));
    assert!(matches!(
        decode_snapshot(&[0x0a, 0x05, 0x01]),
        Err(WireError::Decode(_))
    ));
    // An empty message lacks what every trace has.
    assert_eq!(decode_trace(&[]), Err(WireError::Missing("cause")));
    assert_eq!(decode_snapshot(&[]), Err(WireError::OutOfRange("seed")));
}

fn proto_trace() -> pb::Trace {
    trace_to_proto(&trace(Cause::Manual, Outcome::Completed))
}

#[test]
fn an_unknown_or_unset_enum_value_is_refused() {
    let mut t = proto_trace();
    t.outcome = Some(pb::TraceOutcome {
        kind: Some(pb::trace_outcome::Kind::Skipped(99)),
    });
    assert_eq!(
        trace_from_proto(t.clone()),
        Err(WireError::UnknownEnum {
            field: "outcome.skipped",
            value: 99
        })
    );
    t.outcome = Some(pb::TraceOutcome {
        kind: Some(pb::trace_outcome::Kind::Status(0)),
    });
    assert_eq!(
        trace_from_proto(t.clone()),
        Err(WireError::Missing("outcome.status"))
    );
    t.outcome = None;
    assert_eq!(trace_from_proto(t), Err(WireError::Missing("outcome")));

    let mut t = proto_trace();
    t.cause = Some(pb::TraceCause {
        kind: Some(pb::trace_cause::Kind::Place(pb::trace_cause::Place {
            place: "home".into(),
            transition: 3,
        })),
    });
    assert!(matches!(
        trace_from_proto(t.clone()),
        Err(WireError::UnknownEnum { value: 3, .. })
    ));
    t.cause = Some(pb::TraceCause {
        kind: Some(pb::trace_cause::Kind::Time(pb::trace_cause::Time {
            sun: -1,
            ..Default::default()
        })),
    });
    assert!(matches!(
        trace_from_proto(t.clone()),
        Err(WireError::UnknownEnum { value: -1, .. })
    ));
    t.cause = Some(pb::TraceCause {
        kind: Some(pb::trace_cause::Kind::Vehicle(7)),
    });
    assert!(matches!(
        trace_from_proto(t),
        Err(WireError::UnknownEnum { value: 7, .. })
    ));

    let mut s = snapshot_to_proto(&handmade_snapshot());
    s.runs[0].waiting = Some(pb::RunWaiting {
        kind: Some(pb::run_waiting::Kind::State(42)),
    });
    assert!(matches!(
        snapshot_from_proto(s),
        Err(WireError::UnknownEnum { value: 42, .. })
    ));
}

#[test]
fn a_value_or_result_without_its_kind_is_refused() {
    let mut t = proto_trace();
    t.cause = Some(pb::TraceCause {
        kind: Some(pb::trace_cause::Kind::Signal(pb::trace_cause::Signal {
            path: SOC.into(),
            value: Some(pb::StateValue { kind: None }),
            held_ms: 0,
        })),
    });
    assert_eq!(
        trace_from_proto(t),
        Err(WireError::Missing("cause.signal.value"))
    );
    let mut t = proto_trace();
    t.steps[0].result = None;
    assert_eq!(trace_from_proto(t), Err(WireError::Missing("steps.result")));
    let mut s = snapshot_to_proto(&handmade_snapshot());
    s.runs[1].trace = None;
    assert_eq!(
        snapshot_from_proto(s.clone()),
        Err(WireError::Missing("runs.trace"))
    );
    s.runs[1].waiting = None;
    assert_eq!(
        snapshot_from_proto(s),
        Err(WireError::Missing("runs.waiting"))
    );
}

#[test]
fn lengths_and_numbers_beyond_the_engines_limits_are_refused() {
    let mut t = proto_trace();
    t.steps[0].step = vec![0; MAX_STEP_PATH_LEN + 1];
    assert_eq!(
        trace_from_proto(t.clone()),
        Err(WireError::TooLarge("steps.step"))
    );
    t.steps[0].step = vec![u32::from(u16::MAX) + 1];
    assert_eq!(
        trace_from_proto(t.clone()),
        Err(WireError::OutOfRange("steps.step"))
    );
    t.steps[0].step = vec![0];
    t.steps[0].description = "x".repeat(MAX_TRACE_TEXT_BYTES + 1);
    assert_eq!(
        trace_from_proto(t.clone()),
        Err(WireError::TooLarge("steps.description"))
    );
    t.steps[0].description.clear();
    t.steps[0].result = Some(pb::StepResult {
        kind: Some(pb::step_result::Kind::Chose(pb::step_result::Chose {
            branch: Some(tether_automation::MAX_BRANCHES as u32),
        })),
    });
    assert_eq!(
        trace_from_proto(t.clone()),
        Err(WireError::OutOfRange("steps.result.chose.branch"))
    );
    t.steps = vec![t.steps[0].clone(); tether_automation::wire::MAX_TRACE_STEPS + 1];
    assert_eq!(trace_from_proto(t), Err(WireError::TooLarge("steps")));
    let mut t = proto_trace();
    t.conditions = vec![t.conditions[0].clone(); tether_automation::wire::MAX_TRACE_CONDITIONS + 1];
    assert_eq!(trace_from_proto(t), Err(WireError::TooLarge("conditions")));

    let good = snapshot_to_proto(&handmade_snapshot());
    let mut s = good.clone();
    s.seed.pop();
    assert_eq!(snapshot_from_proto(s), Err(WireError::OutOfRange("seed")));
    let mut s = good.clone();
    s.runs[0].cursor = vec![pb::CursorFrame::default(); MAX_CURSOR_DEPTH + 1];
    assert_eq!(
        snapshot_from_proto(s),
        Err(WireError::TooLarge("runs.cursor"))
    );
    let mut s = good.clone();
    s.runs[0].cursor = vec![pb::CursorFrame {
        index: 0,
        branch: Some(1 << 16),
    }];
    assert_eq!(
        snapshot_from_proto(s),
        Err(WireError::OutOfRange("runs.cursor.branch"))
    );
    let mut s = good.clone();
    s.holds[0].trigger = 1 << 16;
    assert_eq!(
        snapshot_from_proto(s),
        Err(WireError::OutOfRange("holds.trigger"))
    );
    let mut s = good;
    s.places[0].place = "p".repeat(MAX_TRACE_TEXT_BYTES + 1);
    assert_eq!(
        snapshot_from_proto(s),
        Err(WireError::TooLarge("places.place"))
    );
}

#[test]
fn a_snapshot_listing_a_run_hold_or_place_twice_is_refused() {
    let good = snapshot_to_proto(&handmade_snapshot());
    let mut s = good.clone();
    s.runs[1].run = s.runs[0].run;
    assert_eq!(snapshot_from_proto(s), Err(WireError::Duplicate("runs")));
    let mut s = good.clone();
    s.holds[1].trigger = s.holds[0].trigger;
    assert_eq!(snapshot_from_proto(s), Err(WireError::Duplicate("holds")));
    let mut s = good;
    s.places[1].place = s.places[0].place.clone();
    assert_eq!(snapshot_from_proto(s), Err(WireError::Duplicate("places")));
}

/// A small deterministic generator (xorshift64*), so the test needs no
/// dependency and fails the same way every time.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn damaged_bytes_give_an_error_or_a_valid_value_never_a_panic() {
    let snapshot = encode_snapshot(&busy_engine().engine.snapshot());
    let trace = encode_trace(&trace(
        Cause::Signal {
            path: SOC.into(),
            value: Value::Text("x".into()),
            held_ms: 1,
        },
        Outcome::Completed,
    ));
    let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
    let mut restored = 0;
    for len in 0..snapshot.len() {
        let _ = decode_snapshot(&snapshot[..len]);
    }
    for len in 0..trace.len() {
        let _ = decode_trace(&trace[..len]);
    }
    for _ in 0..3_000 {
        let mut s = snapshot.clone();
        let mut t = trace.clone();
        for _ in 0..1 + noise.next() % 4 {
            let i = (noise.next() % s.len() as u64) as usize;
            s[i] ^= 1 << (noise.next() % 8);
            let i = (noise.next() % t.len() as u64) as usize;
            t[i] = noise.next() as u8;
        }
        let _ = decode_trace(&t);
        // A damaged snapshot that still decodes restores without a panic.
        if let Ok(decoded) = decode_snapshot(&s) {
            restored += 1;
            let mut h = Harness::new(Site::HeadUnit);
            for task in tasks() {
                h.install(task);
            }
            let _ = h.engine.restore(decoded, h.now + MINUTE);
            h.drain();
            h.run_for(HOUR);
        }
    }
    // Flips in values (times, ids) keep the message valid: those reach
    // the engine.
    assert!(restored > 100, "{restored}");
    let random: Vec<u8> = (0..512).map(|_| noise.next() as u8).collect();
    for len in 0..random.len() {
        let _ = decode_trace(&random[..len]);
        let _ = decode_snapshot(&random[..len]);
    }
}

#[test]
fn a_decoded_message_reencodes_to_the_same_bytes() {
    let bytes = encode_snapshot(&busy_engine().engine.snapshot());
    let message = pb::EngineSnapshot::decode(bytes.as_slice()).unwrap();
    assert_eq!(message.encode_to_vec(), bytes);
    assert_eq!(
        encode_snapshot(&decode_snapshot(&bytes).unwrap()),
        bytes,
        "stable for the host's storage"
    );
}
