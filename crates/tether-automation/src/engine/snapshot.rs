//! Durable time: the engine's pending delays, holds and dwell timers, its
//! runs and their traces, exported for the host to persist and restored
//! after a restart. Tasks are not in it (the host installs them again
//! first), nor is any position: places carry inside/outside and a pending
//! transition's start only (R32).

use std::sync::Arc;

use super::timers::Timer;
use super::{
    ConfirmRequest, ConfirmationId, CursorFrame, Engine, Output, PendingTransition, Run, Wait,
};
use crate::error::RestoreError;
use crate::model::{TaskId, Transition, Trigger};
use crate::trace::{Outcome, RunId, StepResult, Trace};

/// The format [`Engine::snapshot`] writes and [`Engine::restore`] reads.
pub const SNAPSHOT_VERSION: u32 = 1;

/// A place's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaceSnapshot {
    /// The place.
    pub place: crate::model::PlaceId,
    /// Inside, outside, or unknown.
    pub inside: Option<bool>,
    /// A transition held since then (ms), waiting for the dwell time.
    pub pending: Option<(Transition, u64)>,
}

/// A trigger's hold ("for") going on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldSnapshot {
    /// The task.
    pub task: TaskId,
    /// Its trigger's index.
    pub trigger: u16,
    /// When the state began.
    pub since_ms: u64,
    /// When the hold is over.
    pub due_ms: u64,
}

/// What a run was waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiting {
    /// Nothing: it continues at once.
    Ready,
    /// Its turn (mode queued).
    Queued,
    /// The end of a delay.
    Delay {
        /// When.
        until_ms: u64,
    },
    /// The host's answer to the action at its cursor: after a restore the
    /// action is asked for again (a vehicle command with the same
    /// idempotency key, so the car runs it at most once).
    ActionResult,
    /// The owner's confirmation: asked again, with the same deadline.
    Confirmation {
        /// The deadline.
        deadline_ms: u64,
    },
}

/// A run going on.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSnapshot {
    /// The run.
    pub run: RunId,
    /// Its task.
    pub task: TaskId,
    /// Where it is.
    pub cursor: Vec<CursorFrame>,
    /// What it waits for.
    pub waiting: Waiting,
    /// Its trace so far.
    pub trace: Trace,
}

/// Everything time-dependent in an engine.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// [`SNAPSHOT_VERSION`].
    pub version: u32,
    /// The engine's time when taken: time triggers due after it and before
    /// the restore count as missed.
    pub taken_at_ms: u64,
    /// The seed of idempotency keys in use.
    pub seed: [u8; 16],
    /// The next run number.
    pub next_run: u64,
    /// The next request number.
    pub next_request: u64,
    /// The next trace number.
    pub next_trace: u64,
    /// Place states (only of places a live task or audience needed).
    pub places: Vec<PlaceSnapshot>,
    /// Holds going on.
    pub holds: Vec<HoldSnapshot>,
    /// Runs going on or queued.
    pub runs: Vec<RunSnapshot>,
}

/// What [`Engine::restore`] brought back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RestoreReport {
    /// Runs restored.
    pub runs: usize,
    /// Runs dropped: their task is gone or changed shape.
    pub runs_dropped: usize,
    /// Holds restored.
    pub holds: usize,
    /// Places whose state was restored.
    pub places: usize,
}

impl Engine {
    /// The engine's time-dependent state, for the host to persist.
    pub fn snapshot(&self) -> Snapshot {
        let places = self
            .places
            .iter()
            .filter(|(_, e)| e.refs > 0 && (e.inside.is_some() || e.pending.is_some()))
            .map(|(id, e)| PlaceSnapshot {
                place: id.clone(),
                inside: e.inside,
                pending: e.pending.map(|p| (p.transition, p.since)),
            })
            .collect();
        let mut holds: Vec<HoldSnapshot> = self
            .holds
            .iter()
            .map(|(&(task, trigger), &(timer, since))| HoldSnapshot {
                task,
                trigger,
                since_ms: since,
                due_ms: timer.0,
            })
            .collect();
        holds.sort_by_key(|h| (h.task, h.trigger));
        let mut runs: Vec<RunSnapshot> = self
            .runs
            .iter()
            .map(|(&id, run)| RunSnapshot {
                run: id,
                task: run.task,
                cursor: run.cursor.clone(),
                waiting: match run.wait {
                    Wait::Nothing => Waiting::Ready,
                    Wait::Queued => Waiting::Queued,
                    Wait::Delay { until, .. } => Waiting::Delay { until_ms: until },
                    Wait::Result { .. } => Waiting::ActionResult,
                    Wait::Confirmation { deadline, .. } => Waiting::Confirmation {
                        deadline_ms: deadline,
                    },
                },
                trace: run.trace.clone(),
            })
            .collect();
        runs.sort_by_key(|r| r.run);
        Snapshot {
            version: SNAPSHOT_VERSION,
            taken_at_ms: self.clock,
            seed: self.config.seed,
            next_run: self.next_run,
            next_request: self.next_request,
            next_trace: self.next_trace,
            places,
            holds,
            runs,
        }
    }

    /// Restores a snapshot into an engine whose tasks and places are
    /// installed and which has not started, then catches up to `now_ms`:
    /// delays, holds and dwell timers due meanwhile fire now (late), and
    /// each time trigger missed since the snapshot follows its task's
    /// [`crate::MissedPolicy`], in its trace.
    pub fn restore(
        &mut self,
        snapshot: Snapshot,
        now_ms: u64,
    ) -> Result<RestoreReport, RestoreError> {
        if self.started {
            return Err(RestoreError::AlreadyStarted);
        }
        if snapshot.version != SNAPSHOT_VERSION {
            return Err(RestoreError::Version {
                found: snapshot.version,
                expected: SNAPSHOT_VERSION,
            });
        }
        let mut report = RestoreReport::default();
        self.started = true;
        self.clock = snapshot.taken_at_ms;
        self.config.seed = snapshot.seed;
        self.next_run = self.next_run.max(snapshot.next_run);
        self.next_request = self.next_request.max(snapshot.next_request);
        self.next_trace = self.next_trace.max(snapshot.next_trace);
        let dwell = self.config.geofence.dwell_ms;

        for place in snapshot.places {
            let Some(entry) = self.places.get_mut(&place.place) else {
                continue;
            };
            if entry.refs == 0 {
                continue;
            }
            entry.inside = place.inside;
            if let Some((transition, since)) = place.pending {
                let timer = self.timers.add(
                    since.saturating_add(dwell),
                    Timer::Dwell {
                        place: place.place.clone(),
                        transition,
                    },
                );
                entry.pending = Some(PendingTransition {
                    transition,
                    since,
                    timer,
                });
            }
            report.places += 1;
        }

        for hold in snapshot.holds {
            let valid = self.tasks.get(&hold.task).is_some_and(|e| {
                e.live()
                    && matches!(
                        e.task.triggers.get(usize::from(hold.trigger)),
                        Some(Trigger::Signal { hold_ms, .. } | Trigger::Property { hold_ms, .. })
                            if *hold_ms > 0
                    )
            });
            if !valid {
                continue;
            }
            let timer = self.timers.add(
                hold.due_ms,
                Timer::Hold {
                    task: hold.task,
                    trigger: hold.trigger,
                },
            );
            self.holds
                .insert((hold.task, hold.trigger), (timer, hold.since_ms));
            report.holds += 1;
        }

        for id in self.task_ids() {
            self.schedule_task(id, snapshot.taken_at_ms);
        }

        let mut ready = Vec::new();
        let mut reissue = Vec::new();
        for saved in snapshot.runs {
            let fits = self.tasks.get(&saved.task).is_some_and(|e| {
                e.live()
                    && super::run::current(&e.task.actions, &saved.cursor)
                        .is_some_and(|(list, i)| i <= list.len())
            });
            if !fits {
                report.runs_dropped += 1;
                continue;
            }
            let mut trace = saved.trace;
            let wait = match saved.waiting {
                Waiting::Ready => {
                    ready.push(saved.run);
                    Wait::Nothing
                }
                Waiting::Queued => Wait::Queued,
                Waiting::Delay { until_ms } => Wait::Delay {
                    until: until_ms,
                    timer: self.timers.add(until_ms, Timer::Delay { run: saved.run }),
                },
                Waiting::ActionResult => {
                    // Asked for again below; the old record is replaced.
                    if trace
                        .steps
                        .last()
                        .is_some_and(|s| s.result == StepResult::Pending)
                    {
                        trace.steps.pop();
                    }
                    reissue.push(saved.run);
                    Wait::Nothing
                }
                Waiting::Confirmation { deadline_ms } => {
                    let id = ConfirmationId(self.next_request);
                    self.next_request += 1;
                    let timer = self.timers.add(deadline_ms, Timer::ConfirmDeadline { id });
                    self.confirmations.insert(id, saved.run);
                    let ask = self.tasks.get(&saved.task).and_then(|e| {
                        let (list, i) = super::run::current(&e.task.actions, &saved.cursor)?;
                        match list.get(i) {
                            Some(crate::model::Action::Vehicle(command)) => {
                                Some((e.task.name.clone(), *command))
                            }
                            _ => None,
                        }
                    });
                    if let Some((task_name, command)) = ask {
                        self.outputs.push_back(Output::Confirm(ConfirmRequest {
                            id,
                            task: saved.task,
                            task_name,
                            run: saved.run,
                            command,
                            deadline_ms,
                        }));
                    }
                    Wait::Confirmation {
                        id,
                        deadline: deadline_ms,
                        timer,
                    }
                }
            };
            if let Some(entry) = self.tasks.get_mut(&saved.task) {
                if wait == Wait::Queued {
                    entry.queue.push_back(saved.run);
                } else {
                    entry.active.push(saved.run);
                }
            }
            self.runs.insert(
                saved.run,
                Run {
                    task: saved.task,
                    cursor: saved.cursor,
                    wait,
                    trace,
                },
            );
            report.runs += 1;
        }

        // Asked again now, with a fresh answer deadline from now (the
        // restart itself must not time them out).
        let clock = now_ms.max(self.clock);
        for run_id in reissue {
            let Some(run) = self.runs.get(&run_id) else {
                continue;
            };
            let (task_id, cursor) = (run.task, run.cursor.clone());
            let Some(task) = self.tasks.get(&task_id).map(|e| Arc::clone(&e.task)) else {
                continue;
            };
            match super::run::current(&task.actions, &cursor).and_then(|(l, i)| l.get(i)) {
                Some(action) => {
                    let description = format!(
                        "{} (asked again after a restart)",
                        super::run::describe_action(action)
                    );
                    self.request_action(
                        run_id,
                        task_id,
                        super::run::step_path(&cursor),
                        action,
                        description,
                        clock,
                    );
                }
                None => self.finish(run_id, Outcome::Failed, clock),
            }
        }
        for run_id in ready {
            self.drive(run_id, clock);
        }
        self.advance(now_ms);
        Ok(report)
    }
}
