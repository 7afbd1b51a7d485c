//! Super tasks in the store (issue 5 item 4): tasks with their enabled flag
//! and broken reason survive a reopen, traces are bounded per task, and a
//! task's deletion takes its traces with it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

use tether_store::{Store, TaskRecord};

fn record(task_id: u64, enabled: bool, broken: Option<&str>) -> TaskRecord {
    TaskRecord {
        task_id,
        task: vec![task_id as u8; 3],
        enabled,
        broken: broken.map(str::to_owned),
    }
}

#[test]
fn tasks_survive_a_reopen_with_enabled_flag_and_broken_reason() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = Store::open(dir.path()).unwrap();
        assert_eq!(store.max_task_id().unwrap(), 0);
        store.put_task(&record(2, true, None)).unwrap();
        store.put_task(&record(1, false, None)).unwrap();
        store
            .put_task(&record(2, true, Some("device unbound")))
            .unwrap();
        store.put_automation_snapshot(b"snap").unwrap();
        store.put_place("home", b"circle").unwrap();
    }
    let mut store = Store::open(dir.path()).unwrap();
    assert_eq!(
        store.list_tasks().unwrap(),
        [
            record(1, false, None),
            record(2, true, Some("device unbound"))
        ]
    );
    assert_eq!(store.max_task_id().unwrap(), 2);
    assert_eq!(store.automation_snapshot().unwrap().unwrap(), b"snap");
    assert_eq!(
        store.list_places().unwrap(),
        [("home".to_owned(), b"circle".to_vec())]
    );
    assert!(store.delete_place("home").unwrap());
    assert!(!store.delete_place("home").unwrap());
}

#[test]
fn traces_are_bounded_per_task_and_go_with_their_task() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    store.put_task(&record(1, true, None)).unwrap();
    store.put_task(&record(2, true, None)).unwrap();
    for run in 1..=5u64 {
        store.put_trace(1, run, &[run as u8], 3).unwrap();
    }
    store.put_trace(2, 1, b"other", 3).unwrap();
    // A live run's trace is replaced, not duplicated.
    store.put_trace(1, 5, &[55], 3).unwrap();
    assert_eq!(store.list_traces(1).unwrap(), [vec![3], vec![4], vec![55]]);
    assert!(store.delete_task(1).unwrap());
    assert!(store.list_traces(1).unwrap().is_empty());
    assert_eq!(store.list_traces(2).unwrap(), [b"other".to_vec()]);
    assert!(!store.delete_task(1).unwrap());
}

/// Found while building the crash harness (issue 15, which now checks it):
/// the next task number was one past
/// the highest task left, so deleting the newest task and restarting handed
/// its number to the next new task, and a phone still holding the old
/// number edited or deleted the new one.
#[test]
fn a_deleted_tasks_number_is_not_handed_out_again_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = Store::open(dir.path()).unwrap();
        store.put_task(&record(1, true, None)).unwrap();
        store.put_task(&record(2, true, None)).unwrap();
        assert!(store.delete_task(2).unwrap());
        assert_eq!(store.max_task_id().unwrap(), 2);
    }
    let mut store = Store::open(dir.path()).unwrap();
    assert_eq!(store.max_task_id().unwrap(), 2, "task 2's number came back");
    assert!(store.delete_task(1).unwrap());
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert!(store.list_tasks().unwrap().is_empty());
    assert_eq!(store.max_task_id().unwrap(), 2);
}

/// A version-8 database (tasks, no counter) keeps its highest stored task
/// number through the migration to version 9.
#[test]
fn the_migration_seeds_the_task_counter_from_the_stored_tasks() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = Store::open(dir.path()).unwrap();
        store.put_task(&record(7, true, None)).unwrap();
    }
    {
        let raw = rusqlite::Connection::open(dir.path().join(tether_store::DATABASE_FILE)).unwrap();
        raw.execute_batch("DROP TABLE automation_counters; PRAGMA user_version = 8;")
            .unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.max_task_id().unwrap(), 7);
}
