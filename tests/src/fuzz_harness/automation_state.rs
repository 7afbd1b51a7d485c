//! Harness for what a phone reads back about super tasks and what a node
//! reads back from its store (SPEC §18.1, §18.6): a `Trace` (a `TraceList`
//! from the car) and an `EngineSnapshot`. Input: the raw bytes, tried as
//! both. A snapshot that decodes is restored into an engine holding the
//! fixture's task, which then runs for a while.

use tether_automation::wire::{decode_snapshot, decode_trace, encode_snapshot, encode_trace};
use tether_automation::{
    Action, ActionResult, Catalogue, Config, DeviceId, DeviceSpec, Engine, LatLon, Output,
    Permissions, Place, PlaceId, PropertyId, PropertySpec, Task, TaskId, Transition, Trigger,
    Value, ValueKind,
};

const POWER: PropertyId = PropertyId::new(2, 1);

fn task() -> Task {
    Task::new(TaskId(1), "porch for a while")
        .trigger(Trigger::Place {
            place: PlaceId::new("home"),
            transition: Transition::Enter,
        })
        .action(Action::SetProperty {
            device: DeviceId::new("porch"),
            property: POWER,
            value: Value::Bool(true),
        })
        .action(Action::Delay { ms: 60_000 })
        .action(Action::SetProperty {
            device: DeviceId::new("porch"),
            property: POWER,
            value: Value::Bool(false),
        })
        .declare_inputs()
}

fn engine() -> Engine {
    let catalogue = Catalogue::new().with_device(
        DeviceId::new("porch"),
        DeviceSpec::default().property(
            POWER,
            PropertySpec {
                kind: ValueKind::Bool,
                readable: true,
                writable: true,
            },
        ),
    );
    let mut engine = Engine::new(Config::default(), catalogue);
    engine
        .add_place(Place::circle("home", LatLon::new(47.0, 8.0), 150.0))
        .expect("a valid place");
    engine
        .install(task(), &Permissions::ALL, 0)
        .expect("the fixture's task validates");
    engine
}

/// Any bytes: a typed result, never a panic. A trace or snapshot that
/// decodes encodes back to the same value; a decoded snapshot restores (or
/// is refused with a typed error) and the engine then runs for a day.
pub fn automation_state(data: &[u8]) {
    if let Ok(trace) = decode_trace(data) {
        let again = decode_trace(&encode_trace(&trace));
        assert_eq!(again.as_ref(), Ok(&trace), "a trace round trip changed it");
    }
    if let Ok(snapshot) = decode_snapshot(data) {
        let again = decode_snapshot(&encode_snapshot(&snapshot));
        assert_eq!(
            again.as_ref(),
            Ok(&snapshot),
            "a snapshot round trip changed it"
        );
        let mut engine = engine();
        let start = snapshot.taken_at_ms.min(u64::MAX / 4);
        if engine.restore(snapshot, start).is_ok() {
            for hour in 1..=24u64 {
                let now = start + hour * 3_600_000;
                engine.handle_timeout(now);
                drain(&mut engine, now);
            }
        }
    }
}

/// Answers every action as done until the engine has nothing more.
fn drain(engine: &mut Engine, now: u64) {
    loop {
        match engine.poll_output() {
            Output::Pending => return,
            Output::Action(request) => {
                let _ = engine.handle_action_result(request.id, ActionResult::Succeeded, now);
            }
            _ => {}
        }
    }
}

/// Seeds: a real snapshot taken mid-run (a delay pending) and its trace.
pub(super) fn seeds(add: &mut dyn FnMut(&'static str, &str, Vec<u8>)) {
    let mut engine = engine();
    engine.start(0);
    let _ = engine.handle_fix(tether_automation::Fix::new(47.1, 8.0, 5.0), 1_000);
    let _ = engine.handle_fix(tether_automation::Fix::new(47.0, 8.0, 5.0), 2_000);
    let _ = engine.handle_fix(tether_automation::Fix::new(47.0, 8.0, 5.0), 40_000);
    drain(&mut engine, 41_000);
    assert_eq!(
        engine.pending_timers(),
        1,
        "the seed snapshot has a delay pending"
    );
    add(
        "automation_state",
        "snapshot",
        encode_snapshot(&engine.snapshot()),
    );
    let trace = engine.traces(TaskId(1)).pop().expect("the run's trace");
    add("automation_state", "trace", encode_trace(&trace));
}
