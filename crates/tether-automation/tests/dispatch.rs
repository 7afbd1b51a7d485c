//! The dispatch index (issue 5, item 2): an event touches only the tasks
//! that listen to it, however many others are installed. The timing
//! figures come from `bench::dispatch_bench` in a release build
//! (`cargo run --release -p tether-automation --example dispatch`); this
//! test only checks that the bench runs and that no other task is touched.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

mod common;

use common::*;
use tether_automation::bench::dispatch_bench;
use tether_automation::{
    Change, Config, Engine, Permissions, SignalSpec, Task, TaskId, Trigger, Value, ValueKind,
};

#[test]
fn an_event_touches_only_the_tasks_that_listen_to_it_r21() {
    let mut catalogue = catalogue();
    for i in 0..2_000 {
        catalogue = catalogue.with_signal(
            format!("Vehicle.Other{i}"),
            SignalSpec::sensor(ValueKind::Int),
        );
    }
    let mut engine = Engine::new(Config::default(), catalogue);
    for i in 0..2_000u64 {
        let task = Task::new(TaskId(100 + i), "other")
            .trigger(Trigger::Signal {
                path: format!("Vehicle.Other{i}"),
                change: Change::Any,
                hold_ms: 0,
            })
            .action(set_power(lamp(), true))
            .declare_inputs();
        engine.install(task, &Permissions::ALL, MONDAY_MS).unwrap();
    }
    let listener = Task::new(TaskId(1), "listener")
        .trigger(Trigger::Signal {
            path: SOC.into(),
            change: Change::Any,
            hold_ms: 0,
        })
        .action(set_power(porch(), true))
        .declare_inputs();
    engine
        .install(listener, &Permissions::ALL, MONDAY_MS)
        .unwrap();
    engine.start(MONDAY_MS);
    for (i, soc) in [50.0, 51.0, 52.0].into_iter().enumerate() {
        let _ = engine.handle_signal(SOC, Value::Double(soc), MONDAY_MS + i as u64);
    }
    assert_eq!(engine.traces(TaskId(1)).len(), 2);
    for i in 0..2_000u64 {
        assert!(engine.traces(TaskId(100 + i)).is_empty());
    }
}

#[test]
fn the_dispatch_bench_runs_and_fires_one_task_per_event() {
    let figures = dispatch_bench(4, 200, 500);
    assert_eq!(figures.tasks_installed, 204);
    assert_eq!(figures.events, 500);
    assert!((figures.actions_per_event - 1.0).abs() < f64::EPSILON);
    assert!(figures.p50_us <= figures.p99_us && figures.p99_us <= figures.max_us);
    assert!(figures.mean_us.is_finite());
}
