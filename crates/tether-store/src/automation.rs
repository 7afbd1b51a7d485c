//! Super tasks (SPEC §18; issue 5 item 4): tasks with their enabled flag
//! and broken reason, bounded traces, the places a head unit evaluates, and
//! the engine's durable snapshot. Tasks, traces and the snapshot are stored
//! in their protobuf form, opaque to this crate (`tether_automation::wire`
//! encodes and decodes them); a place in the form its owner chose.
//!
//! A task whose device was unbound is marked broken, never dropped: the
//! user sees it and why. Traces are kept per task up to a bound the caller
//! gives; the oldest go first. A position fix is never stored (R10, R32):
//! there is no table for one.

use rusqlite::{OptionalExtension, params};

use crate::{Store, StoreError};

/// One stored task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRecord {
    /// The task's number (its `TaskId`).
    pub task_id: u64,
    /// The task, encoded.
    pub task: Vec<u8>,
    /// Whether its owner enabled it.
    pub enabled: bool,
    /// Why it cannot run (a device unbound, a place removed), if so.
    pub broken: Option<String>,
}

fn to_sql_id(task_id: u64) -> Result<i64, StoreError> {
    i64::try_from(task_id).map_err(|_| StoreError::CorruptRecord("task id"))
}

fn from_sql_id(task_id: i64) -> Result<u64, StoreError> {
    u64::try_from(task_id).map_err(|_| StoreError::CorruptRecord("task id"))
}

impl Store {
    /// Inserts or replaces task `task_id`, and raises the highest task
    /// number handed out to it in the same transaction (a new task's number
    /// is never reused, SPEC §18.1).
    pub fn put_task(&mut self, record: &TaskRecord) -> Result<(), StoreError> {
        let id = to_sql_id(record.task_id)?;
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO automation_tasks (task_id, task, enabled, broken)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (task_id) DO UPDATE SET
                task = excluded.task, enabled = excluded.enabled, broken = excluded.broken",
            params![id, record.task, record.enabled, record.broken],
        )?;
        tx.execute(
            "INSERT INTO automation_counters (id, last_task_id) VALUES (1, ?1)
             ON CONFLICT (id) DO UPDATE SET
                last_task_id = max(last_task_id, excluded.last_task_id)",
            params![id],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Every stored task, by number.
    pub fn list_tasks(&self) -> Result<Vec<TaskRecord>, StoreError> {
        let mut statement = self.conn.prepare(
            "SELECT task_id, task, enabled, broken FROM automation_tasks ORDER BY task_id",
        )?;
        let rows = statement.query_map([], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, Vec<u8>>(1)?,
                row.get::<_, bool>(2)?,
                row.get::<_, Option<String>>(3)?,
            ))
        })?;
        rows.map(|row| {
            let (task_id, task, enabled, broken) = row?;
            Ok(TaskRecord {
                task_id: from_sql_id(task_id)?,
                task,
                enabled,
                broken,
            })
        })
        .collect()
    }

    /// The highest task number ever stored, 0 if none (new tasks take the
    /// next one). Deleted tasks count: their numbers are not handed out
    /// again.
    pub fn max_task_id(&self) -> Result<u64, StoreError> {
        let max: Option<i64> = self.conn.query_row(
            "SELECT max(coalesce((SELECT last_task_id FROM automation_counters WHERE id = 1), 0),
                        coalesce((SELECT max(task_id) FROM automation_tasks), 0))",
            [],
            |row| row.get(0),
        )?;
        max.map_or(Ok(0), from_sql_id)
    }

    /// Deletes task `task_id` and its traces. Returns whether it existed.
    pub fn delete_task(&mut self, task_id: u64) -> Result<bool, StoreError> {
        let id = to_sql_id(task_id)?;
        let tx = self.conn.transaction()?;
        let removed = tx.execute(
            "DELETE FROM automation_tasks WHERE task_id = ?1",
            params![id],
        )?;
        tx.execute(
            "DELETE FROM automation_traces WHERE task_id = ?1",
            params![id],
        )?;
        tx.commit()?;
        Ok(removed > 0)
    }

    /// Stores the trace of run `run_seq` of task `task_id` (replacing one
    /// with the same number, as a live run's trace grows), then keeps only
    /// the task's `keep` latest traces.
    pub fn put_trace(
        &mut self,
        task_id: u64,
        run_seq: u64,
        trace: &[u8],
        keep: usize,
    ) -> Result<(), StoreError> {
        self.put_automation_changes(None, &[(task_id, run_seq, trace.to_vec())], keep)
    }

    /// The highest run number of any stored trace, 0 if none.
    pub fn max_trace_seq(&self) -> Result<u64, StoreError> {
        let max: Option<i64> =
            self.conn
                .query_row("SELECT max(run_seq) FROM automation_traces", [], |row| {
                    row.get(0)
                })?;
        max.map_or(Ok(0), |m| {
            u64::try_from(m).map_err(|_| StoreError::CorruptRecord("run number"))
        })
    }

    /// Task `task_id`'s stored traces, oldest first.
    pub fn list_traces(&self, task_id: u64) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut statement = self
            .conn
            .prepare("SELECT trace FROM automation_traces WHERE task_id = ?1 ORDER BY run_seq")?;
        let rows = statement.query_map(params![to_sql_id(task_id)?], |row| row.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Inserts or replaces the place `name`.
    pub fn put_place(&mut self, name: &str, place: &[u8]) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO automation_places (name, place) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET place = excluded.place",
            params![name, place],
        )?;
        Ok(())
    }

    /// Every place, by name.
    pub fn list_places(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut statement = self
            .conn
            .prepare("SELECT name, place FROM automation_places ORDER BY name")?;
        let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deletes the place `name`. Returns whether it existed.
    pub fn delete_place(&mut self, name: &str) -> Result<bool, StoreError> {
        let removed = self.conn.execute(
            "DELETE FROM automation_places WHERE name = ?1",
            params![name],
        )?;
        Ok(removed > 0)
    }

    /// Replaces the engine's snapshot.
    pub fn put_automation_snapshot(&mut self, snapshot: &[u8]) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO automation_state (id, snapshot) VALUES (1, ?1)
             ON CONFLICT (id) DO UPDATE SET snapshot = excluded.snapshot",
            params![snapshot],
        )?;
        Ok(())
    }

    /// The engine's snapshot (if given) and any number of traces, each
    /// bounded to its task's newest `keep`, in **one** transaction: one
    /// commit for what a turn of the engine changed, instead of one per
    /// trace (found by `tether soak --hub`, RELIABILITY.md §3). All are
    /// stored or none.
    pub fn put_automation_changes(
        &mut self,
        snapshot: Option<&[u8]>,
        traces: &[(u64, u64, Vec<u8>)],
        keep: usize,
    ) -> Result<(), StoreError> {
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        let tx = self.conn.transaction()?;
        if let Some(snapshot) = snapshot {
            tx.execute(
                "INSERT INTO automation_state (id, snapshot) VALUES (1, ?1)
                 ON CONFLICT (id) DO UPDATE SET snapshot = excluded.snapshot",
                params![snapshot],
            )?;
        }
        let mut tasks = std::collections::BTreeSet::new();
        for (task_id, run_seq, trace) in traces {
            let id = to_sql_id(*task_id)?;
            let seq =
                i64::try_from(*run_seq).map_err(|_| StoreError::CorruptRecord("run number"))?;
            tx.execute(
                "INSERT INTO automation_traces (task_id, run_seq, trace) VALUES (?1, ?2, ?3)
                 ON CONFLICT (task_id, run_seq) DO UPDATE SET trace = excluded.trace",
                params![id, seq, trace],
            )?;
            tasks.insert(id);
        }
        for id in tasks {
            tx.execute(
                "DELETE FROM automation_traces WHERE task_id = ?1 AND run_seq NOT IN
                    (SELECT run_seq FROM automation_traces WHERE task_id = ?1
                     ORDER BY run_seq DESC LIMIT ?2)",
                params![id, keep],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The engine's last snapshot, if one was stored.
    pub fn automation_snapshot(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT snapshot FROM automation_state WHERE id = 1",
                [],
                |row| row.get(0),
            )
            .optional()?)
    }
}
