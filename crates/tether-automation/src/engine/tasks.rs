//! Places and tasks: adding, installing, enabling, removing, starting.

use std::collections::VecDeque;
use std::sync::Arc;

use super::{Engine, PlaceEntry, Site, TaskEntry};
use crate::catalogue::Permissions;
use crate::error::{EngineError, ValidationError};
use crate::geo::Place;
use crate::model::{PlaceId, Task, TaskId};
use crate::trace::{CancelReason, Outcome};

impl Engine {
    // ------------------------------------------------------------ places

    /// Adds a place, or replaces its shape. On the head unit a place needs a
    /// shape to be a geofence; elsewhere a shape is only used for sun times.
    /// A changed shape forgets the place's state (the next fix sets it
    /// silently).
    pub fn add_place(&mut self, place: Place) -> Result<(), EngineError> {
        if let Some(shape) = &place.shape {
            shape.check().map_err(|reason| EngineError::BadPlace {
                place: place.id.clone(),
                reason,
            })?;
        }
        match self.places.get_mut(&place.id) {
            Some(entry) => {
                if entry.shape != place.shape {
                    if let Some(pending) = entry.pending.take() {
                        self.timers.cancel(pending.timer);
                    }
                    if self.config.site == Site::HeadUnit {
                        entry.inside = None;
                    }
                    entry.shape = place.shape;
                }
            }
            None => {
                self.places.insert(
                    place.id,
                    PlaceEntry {
                        shape: place.shape,
                        refs: 0,
                        inside: None,
                        pending: None,
                    },
                );
            }
        }
        Ok(())
    }

    /// Removes a place no task and no audience names.
    pub fn remove_place(&mut self, id: &PlaceId) -> Result<(), EngineError> {
        if !self.places.contains_key(id) {
            return Err(EngineError::UnknownPlace(id.clone()));
        }
        let named = self
            .tasks
            .values()
            .any(|e| validate_names_place(&e.task, id))
            || self.remote_interest.values().any(|s| s.contains(id));
        if named {
            return Err(EngineError::PlaceInUse(id.clone()));
        }
        if let Some(entry) = self.places.remove(id)
            && let Some(pending) = entry.pending
        {
            self.timers.cancel(pending.timer);
        }
        Ok(())
    }

    // ------------------------------------------------------------- tasks

    /// Checks `task` as [`Engine::install`] would, without installing it.
    pub fn validate(&self, task: &Task, permissions: &Permissions) -> Result<(), ValidationError> {
        if self.tasks.contains_key(&task.id) {
            return Err(ValidationError::DuplicateTask(task.id));
        }
        self.validate_replacement(task, permissions)
    }

    /// Checks `task` as the new version of the installed task with its
    /// number (an edit): as [`Engine::validate`], except that the number
    /// may be taken, by the version it replaces (which the loop check
    /// already leaves out).
    pub fn validate_replacement(
        &self,
        task: &Task,
        permissions: &Permissions,
    ) -> Result<(), ValidationError> {
        self.check_task(task, permissions)?;
        if let Some(cycle) = self.find_loop(task) {
            return Err(ValidationError::Loop { cycle });
        }
        Ok(())
    }

    /// Validates and installs `task`, enabled, for an author with
    /// `permissions`; subscribes to its declared inputs. On the hub while
    /// "car data to home" is off, a task that reads car data is installed
    /// disabled by consent (and its trace says so).
    pub fn install(
        &mut self,
        task: Task,
        permissions: &Permissions,
        now_ms: u64,
    ) -> Result<(), ValidationError> {
        self.validate(&task, permissions)?;
        let now = if self.started {
            self.advance(now_ms)
        } else {
            now_ms
        };
        let id = task.id;
        let blocked = self.consent_blocks(&task);
        self.index.add(&task);
        self.tasks.insert(
            id,
            TaskEntry {
                task: Arc::new(task),
                enabled: true,
                consent_blocked: blocked,
                active: Vec::new(),
                queue: VecDeque::new(),
                traces: VecDeque::new(),
                schedule: Vec::new(),
            },
        );
        if blocked {
            self.trace_disabled_by_consent(id, now);
        } else {
            self.acquire_inputs(id);
        }
        if self.started {
            self.schedule_task(id, now);
        }
        Ok(())
    }

    /// Removes a task: its runs are cancelled, its timers dropped, its
    /// inputs released, its traces forgotten.
    pub fn remove(&mut self, id: TaskId, now_ms: u64) -> Result<(), EngineError> {
        if !self.tasks.contains_key(&id) {
            return Err(EngineError::UnknownTask(id));
        }
        let now = self.advance(now_ms);
        self.deactivate(id, CancelReason::Removed, now);
        self.unschedule_task(id);
        if let Some(entry) = self.tasks.remove(&id) {
            self.index.remove(&entry.task);
        }
        Ok(())
    }

    /// Enables or disables a task. Disabling cancels its runs and releases
    /// its inputs; enabling subscribes again.
    pub fn set_enabled(
        &mut self,
        id: TaskId,
        enabled: bool,
        now_ms: u64,
    ) -> Result<(), EngineError> {
        let Some(entry) = self.tasks.get(&id) else {
            return Err(EngineError::UnknownTask(id));
        };
        if entry.enabled == enabled {
            return Ok(());
        }
        let now = self.advance(now_ms);
        if enabled {
            let was_live = self.tasks.get(&id).is_some_and(TaskEntry::live);
            if let Some(entry) = self.tasks.get_mut(&id) {
                entry.enabled = true;
            }
            if !was_live && self.tasks.get(&id).is_some_and(TaskEntry::live) {
                self.acquire_inputs(id);
            }
        } else {
            self.deactivate(id, CancelReason::Disabled, now);
            if let Some(entry) = self.tasks.get_mut(&id) {
                entry.enabled = false;
            }
        }
        Ok(())
    }

    /// Cancels the task's runs and holds and releases its inputs if it was
    /// live.
    pub(super) fn deactivate(&mut self, id: TaskId, reason: CancelReason, now: u64) {
        let Some(entry) = self.tasks.get(&id) else {
            return;
        };
        let live = entry.live();
        let runs: Vec<_> = entry
            .queue
            .iter()
            .rev()
            .chain(entry.active.iter())
            .copied()
            .collect();
        // Queued runs first (newest first) so none starts when an active
        // one ends.
        for run in runs {
            self.finish(run, Outcome::Cancelled(reason), now);
        }
        self.cancel_holds(id);
        if live {
            self.release_inputs(id);
        }
    }

    pub(super) fn cancel_holds(&mut self, id: TaskId) {
        let keys: Vec<(TaskId, u16)> = self.holds.keys().filter(|k| k.0 == id).copied().collect();
        for key in keys {
            if let Some((timer, _)) = self.holds.remove(&key) {
                self.timers.cancel(timer);
            }
        }
    }

    /// Starts the engine at `now_ms` without a snapshot: time triggers are
    /// scheduled from now, and nothing is known about places or values.
    pub fn start(&mut self, now_ms: u64) {
        if self.started {
            return;
        }
        self.started = true;
        self.clock = now_ms;
        for id in self.task_ids() {
            self.schedule_task(id, now_ms);
        }
    }
}

/// Whether `task` names `place` anywhere (triggers, conditions, sun times,
/// navigation).
fn validate_names_place(task: &Task, place: &PlaceId) -> bool {
    super::validate::places_named(task).contains(place)
}
