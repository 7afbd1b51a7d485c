//! Runs: from a trigger through the conditions and the mode to each step,
//! with the host answering every action.

use std::sync::Arc;

use ring::digest::{Context, SHA256};

use super::timers::Timer;
use super::{
    ActionRequest, ActionResult, ConfirmRequest, ConfirmationId, CursorFrame, Effect, Engine,
    IDEMPOTENCY_CONTEXT, IdempotencyKey, Output, RequestId, Run, Wait,
};
use crate::error::EngineError;
use crate::model::{Action, AppIntent, Mode, Task, TaskId, VehicleState};
use crate::trace::{
    Cause, ConditionRecord, Outcome, RunId, SkipReason, StepPath, StepRecord, StepResult, Trace,
};

/// The list the innermost frame of `cursor` walks, and its index there.
pub(super) fn current<'a>(
    actions: &'a [Action],
    cursor: &[CursorFrame],
) -> Option<(&'a [Action], usize)> {
    let (last, parents) = cursor.split_last()?;
    let mut list = actions;
    for frame in parents {
        let Some(Action::Choose {
            branches,
            otherwise,
        }) = list.get(usize::from(frame.index))
        else {
            return None;
        };
        let branch = usize::from(frame.branch?);
        list = match branch.cmp(&branches.len()) {
            std::cmp::Ordering::Less => &branches[branch].actions,
            std::cmp::Ordering::Equal => otherwise,
            std::cmp::Ordering::Greater => return None,
        };
    }
    Some((list, usize::from(last.index)))
}

/// The step path of the innermost frame.
pub(super) fn step_path(cursor: &[CursorFrame]) -> StepPath {
    let mut path = Vec::with_capacity(cursor.len() * 2);
    for (i, frame) in cursor.iter().enumerate() {
        path.push(frame.index);
        if i + 1 < cursor.len() {
            path.push(frame.branch.unwrap_or(u16::MAX));
        }
    }
    path
}

fn describe_step(step: &[u16]) -> String {
    step.iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

/// A short description of an action, for traces.
pub(super) fn describe_action(action: &Action) -> String {
    match action {
        Action::SetProperty {
            device,
            property,
            value,
        } => format!("set {property} of {device} to {value}"),
        Action::DeviceAction { device, action, .. } => format!("run action {action} of {device}"),
        Action::Vehicle(command) => format!("vehicle command {command:?}"),
        Action::App(AppIntent::Navigate { destination }) => {
            format!("hand navigation to {destination} to the car")
        }
        Action::App(AppIntent::Notify { recipients, .. }) => format!("notify {recipients:?}"),
        Action::Delay { ms } => format!("wait {ms} ms"),
        Action::Choose { branches, .. } => format!("choose among {} branches", branches.len()),
    }
}

/// The idempotency key of the vehicle command at `step` of `run`.
pub(crate) fn idempotency_key(
    seed: &[u8; 16],
    task: TaskId,
    run: RunId,
    step: &[u16],
) -> IdempotencyKey {
    let mut context = Context::new(&SHA256);
    context.update(IDEMPOTENCY_CONTEXT);
    context.update(seed);
    context.update(&task.0.to_be_bytes());
    context.update(&run.0.to_be_bytes());
    context.update(&(step.len() as u16).to_be_bytes());
    for index in step {
        context.update(&index.to_be_bytes());
    }
    let mut key = [0; 32];
    key.copy_from_slice(context.finish().as_ref());
    IdempotencyKey(key)
}

impl Engine {
    pub(super) fn new_trace(
        &mut self,
        task: TaskId,
        cause: Cause,
        now: u64,
        outcome: Outcome,
    ) -> Trace {
        let ended_ms = match outcome {
            Outcome::Running | Outcome::Queued => None,
            _ => Some(now),
        };
        Trace {
            seq: self.next_trace_seq(),
            task,
            run: None,
            at_ms: now,
            cause,
            conditions: Vec::new(),
            steps: Vec::new(),
            outcome,
            ended_ms,
        }
    }

    /// A trigger of `task_id` fired: conditions, then the mode, then a run.
    pub(super) fn fire(&mut self, task_id: TaskId, cause: Cause, now: u64) {
        let Some(entry) = self.tasks.get(&task_id) else {
            return;
        };
        if !entry.enabled {
            return;
        }
        let task = Arc::clone(&entry.task);
        if entry.consent_blocked {
            let trace = self.new_trace(task_id, cause, now, Outcome::DisabledByConsent);
            self.push_trace(trace);
            return;
        }
        let mut conditions = Vec::new();
        let pass = self.eval_all(&task.conditions, "conditions", now, &mut conditions);
        let mut trace = self.new_trace(task_id, cause, now, Outcome::Running);
        trace.conditions = conditions;
        if !pass {
            trace.outcome = Outcome::ConditionsNotMet;
            trace.ended_ms = Some(now);
            self.push_trace(trace);
            return;
        }
        let Some(entry) = self.tasks.get(&task_id) else {
            return;
        };
        let running = entry.active.len();
        let queued = entry.queue.len();
        let skip = |reason| Outcome::Skipped(reason);
        let decision = match task.mode {
            Mode::Single if running > 0 => Err(skip(SkipReason::AlreadyRunning)),
            Mode::Single => Ok(false),
            Mode::Restart => {
                let old = entry.active.clone();
                for run in old {
                    self.finish(
                        run,
                        Outcome::Cancelled(crate::trace::CancelReason::Restarted),
                        now,
                    );
                }
                Ok(false)
            }
            Mode::Queued { max } => {
                if running == 0 && queued == 0 {
                    Ok(false)
                } else if running + queued < usize::from(max) {
                    Ok(true)
                } else {
                    Err(skip(SkipReason::QueueFull))
                }
            }
            Mode::Parallel { max } => {
                if running < usize::from(max) {
                    Ok(false)
                } else {
                    Err(skip(SkipReason::TooManyRuns))
                }
            }
        };
        match decision {
            Err(outcome) => {
                trace.outcome = outcome;
                trace.ended_ms = Some(now);
                self.push_trace(trace);
            }
            Ok(enqueue) => {
                let id = RunId(self.next_run);
                self.next_run += 1;
                trace.run = Some(id);
                trace.outcome = if enqueue {
                    Outcome::Queued
                } else {
                    Outcome::Running
                };
                let run = Run {
                    task: task_id,
                    cursor: vec![CursorFrame {
                        index: 0,
                        branch: None,
                    }],
                    wait: if enqueue { Wait::Queued } else { Wait::Nothing },
                    trace,
                };
                self.runs.insert(id, run);
                if let Some(entry) = self.tasks.get_mut(&task_id) {
                    if enqueue {
                        entry.queue.push_back(id);
                    } else {
                        entry.active.push(id);
                    }
                }
                if !enqueue {
                    self.drive(id, now);
                }
            }
        }
    }

    /// Runs steps until the run waits or ends.
    pub(super) fn drive(&mut self, run_id: RunId, now: u64) {
        loop {
            let Some(run) = self.runs.get(&run_id) else {
                return;
            };
            let task_id = run.task;
            let cursor = run.cursor.clone();
            let Some(task) = self.tasks.get(&task_id).map(|e| Arc::clone(&e.task)) else {
                return;
            };
            let Some((list, index)) = current(&task.actions, &cursor) else {
                // A cursor that no longer fits the task (restored against a
                // changed task): stop rather than guess.
                self.finish(run_id, Outcome::Failed, now);
                return;
            };
            if index >= list.len() {
                let Some(run) = self.runs.get_mut(&run_id) else {
                    return;
                };
                run.cursor.pop();
                match run.cursor.last_mut() {
                    Some(parent) => {
                        parent.index += 1;
                        parent.branch = None;
                        continue;
                    }
                    None => {
                        self.finish(run_id, Outcome::Completed, now);
                        return;
                    }
                }
            }
            let action = &list[index];
            let step = step_path(&cursor);
            match action {
                Action::Delay { ms } => {
                    let until = now.saturating_add(*ms);
                    let timer = self.timers.add(until, Timer::Delay { run: run_id });
                    if let Some(run) = self.runs.get_mut(&run_id) {
                        run.trace.steps.push(StepRecord {
                            step,
                            at_ms: now,
                            description: describe_action(action),
                            result: StepResult::Waited,
                        });
                        run.wait = Wait::Delay { until, timer };
                    }
                    return;
                }
                Action::Choose {
                    branches,
                    otherwise,
                } => {
                    let mut records: Vec<ConditionRecord> = Vec::new();
                    let mut chosen = None;
                    for (b, branch) in branches.iter().enumerate() {
                        let prefix = format!("step {} branch {b} conditions", describe_step(&step));
                        if self.eval_all(&branch.conditions, &prefix, now, &mut records) {
                            chosen = Some(b);
                            break;
                        }
                    }
                    let (branch, len) = match chosen {
                        Some(b) => (b, branches[b].actions.len()),
                        None => (branches.len(), otherwise.len()),
                    };
                    let Some(run) = self.runs.get_mut(&run_id) else {
                        return;
                    };
                    run.trace.conditions.extend(records);
                    run.trace.steps.push(StepRecord {
                        step,
                        at_ms: now,
                        description: describe_action(action),
                        result: StepResult::Chose(chosen),
                    });
                    if let Some(top) = run.cursor.last_mut() {
                        if len == 0 {
                            top.index += 1;
                        } else {
                            top.branch = Some(branch as u16);
                            run.cursor.push(CursorFrame {
                                index: 0,
                                branch: None,
                            });
                        }
                    }
                    continue;
                }
                Action::Vehicle(command) if command.opens_the_car() => {
                    self.ask_confirmation(
                        run_id,
                        &task,
                        *command,
                        step,
                        describe_action(action),
                        now,
                    );
                    return;
                }
                Action::SetProperty { .. }
                | Action::DeviceAction { .. }
                | Action::Vehicle(_)
                | Action::App(_) => {
                    self.request_action(
                        run_id,
                        task_id,
                        step,
                        action,
                        describe_action(action),
                        now,
                    );
                    return;
                }
            }
        }
    }

    /// Hands a host action out and waits for its answer.
    pub(super) fn request_action(
        &mut self,
        run_id: RunId,
        task_id: TaskId,
        step: StepPath,
        action: &Action,
        description: String,
        now: u64,
    ) {
        let effect = match action {
            Action::SetProperty {
                device,
                property,
                value,
            } => Effect::SetProperty {
                device: device.clone(),
                property: *property,
                value: value.clone(),
            },
            Action::DeviceAction {
                device,
                action,
                arguments,
            } => Effect::DeviceAction {
                device: device.clone(),
                action: *action,
                arguments: arguments.clone(),
            },
            Action::Vehicle(command) => Effect::Vehicle {
                command: *command,
                idempotency_key: idempotency_key(&self.config.seed, task_id, run_id, &step),
            },
            Action::App(intent) => Effect::App(intent.clone()),
            Action::Delay { .. } | Action::Choose { .. } => return,
        };
        let id = RequestId(self.next_request);
        self.next_request += 1;
        let deadline_ms = now.saturating_add(self.config.action_timeout_ms);
        let timer = self
            .timers
            .add(deadline_ms, Timer::ActionDeadline { request: id });
        self.requests.insert(id, run_id);
        if let Some(run) = self.runs.get_mut(&run_id) {
            run.trace.steps.push(StepRecord {
                step: step.clone(),
                at_ms: now,
                description,
                result: StepResult::Pending,
            });
            run.wait = Wait::Result { request: id, timer };
        }
        self.outputs.push_back(Output::Action(ActionRequest {
            id,
            task: task_id,
            run: run_id,
            step,
            effect,
            deadline_ms,
        }));
    }

    /// The safety rule: unlocking or opening the car needs it parked, and
    /// the owner's confirmation on the phone at run time.
    fn ask_confirmation(
        &mut self,
        run_id: RunId,
        task: &Task,
        command: crate::model::VehicleCommand,
        step: StepPath,
        description: String,
        now: u64,
    ) {
        let parked = self.vehicle_states[VehicleState::Parking.index()] == Some(true);
        let Some(run) = self.runs.get_mut(&run_id) else {
            return;
        };
        if !parked {
            run.trace.steps.push(StepRecord {
                step,
                at_ms: now,
                description,
                result: StepResult::NotParked,
            });
            self.finish(run_id, Outcome::Failed, now);
            return;
        }
        let id = ConfirmationId(self.next_request);
        self.next_request += 1;
        let deadline_ms = now.saturating_add(self.config.confirmation_timeout_ms);
        let timer = self.timers.add(deadline_ms, Timer::ConfirmDeadline { id });
        run.trace.steps.push(StepRecord {
            step,
            at_ms: now,
            description,
            result: StepResult::AwaitingConfirmation,
        });
        run.wait = Wait::Confirmation {
            id,
            deadline: deadline_ms,
            timer,
        };
        self.confirmations.insert(id, run_id);
        self.outputs.push_back(Output::Confirm(ConfirmRequest {
            id,
            task: task.id,
            task_name: task.name.clone(),
            run: run_id,
            command,
            deadline_ms,
        }));
    }

    /// The host's answer to an action request.
    pub fn handle_action_result(
        &mut self,
        id: RequestId,
        result: ActionResult,
        now_ms: u64,
    ) -> Result<(), EngineError> {
        let now = self.advance(now_ms);
        let run_id = self.requests.remove(&id).ok_or(EngineError::NotPending)?;
        let Some(run) = self.runs.get_mut(&run_id) else {
            return Err(EngineError::NotPending);
        };
        if let Wait::Result { timer, .. } = run.wait {
            self.timers.cancel(timer);
        }
        run.wait = Wait::Nothing;
        let ok = result == ActionResult::Succeeded;
        if let Some(step) = run.trace.steps.last_mut() {
            step.result = match result {
                ActionResult::Succeeded => StepResult::Succeeded,
                ActionResult::Failed(reason) => StepResult::Failed(reason),
                ActionResult::NotDispatched => StepResult::NotDispatched,
            };
        }
        if ok {
            if let Some(top) = run.cursor.last_mut() {
                top.index += 1;
            }
            self.drive(run_id, now);
        } else {
            self.finish(run_id, Outcome::Failed, now);
        }
        Ok(())
    }

    /// The owner's answer to a confirmation request. The host must pass only
    /// an answer given on the owner's phone, over the owner's session.
    /// Approval is checked against the car's state again: it must still be
    /// parked.
    pub fn handle_confirmation(
        &mut self,
        id: ConfirmationId,
        approved: bool,
        now_ms: u64,
    ) -> Result<(), EngineError> {
        let now = self.advance(now_ms);
        let run_id = self
            .confirmations
            .remove(&id)
            .ok_or(EngineError::NotPending)?;
        let parked = self.vehicle_states[VehicleState::Parking.index()] == Some(true);
        let Some(run) = self.runs.get_mut(&run_id) else {
            return Err(EngineError::NotPending);
        };
        if let Wait::Confirmation { timer, .. } = run.wait {
            self.timers.cancel(timer);
        }
        run.wait = Wait::Nothing;
        if !approved || !parked {
            if let Some(step) = run.trace.steps.last_mut() {
                step.result = if approved {
                    StepResult::NotParked
                } else {
                    StepResult::Declined
                };
            }
            self.finish(run_id, Outcome::Failed, now);
            return Ok(());
        }
        // Approved and parked: send the command. The confirmation step's
        // record becomes the command's.
        let Some(record) = run.trace.steps.pop() else {
            return Ok(());
        };
        let task_id = run.task;
        let cursor = run.cursor.clone();
        let Some(task) = self.tasks.get(&task_id).map(|e| Arc::clone(&e.task)) else {
            return Ok(());
        };
        if let Some((list, index)) = current(&task.actions, &cursor)
            && let Some(action) = list.get(index)
        {
            self.request_action(
                run_id,
                task_id,
                record.step,
                action,
                format!("{} (confirmed by the owner)", record.description),
                now,
            );
        }
        Ok(())
    }

    pub(super) fn on_delay(&mut self, run_id: RunId, now: u64) {
        let Some(run) = self.runs.get_mut(&run_id) else {
            return;
        };
        if !matches!(run.wait, Wait::Delay { .. }) {
            return;
        }
        run.wait = Wait::Nothing;
        if let Some(top) = run.cursor.last_mut() {
            top.index += 1;
        }
        self.drive(run_id, now);
    }

    pub(super) fn on_action_deadline(&mut self, request: RequestId, now: u64) {
        let Some(run_id) = self.requests.remove(&request) else {
            return;
        };
        if let Some(run) = self.runs.get_mut(&run_id) {
            run.wait = Wait::Nothing;
            if let Some(step) = run.trace.steps.last_mut() {
                step.result = StepResult::TimedOut;
            }
        }
        self.finish(run_id, Outcome::Failed, now);
    }

    pub(super) fn on_confirm_deadline(&mut self, id: ConfirmationId, now: u64) {
        let Some(run_id) = self.confirmations.remove(&id) else {
            return;
        };
        if let Some(run) = self.runs.get_mut(&run_id) {
            run.wait = Wait::Nothing;
            if let Some(step) = run.trace.steps.last_mut() {
                step.result = StepResult::ConfirmationTimedOut;
            }
        }
        self.outputs.push_back(Output::ConfirmWithdrawn(id));
        self.finish(run_id, Outcome::Failed, now);
    }

    /// Ends a run (or a queued one) with `outcome`, files its trace, and
    /// starts the next queued run of its task.
    pub(super) fn finish(&mut self, run_id: RunId, outcome: Outcome, now: u64) {
        let Some(mut run) = self.runs.remove(&run_id) else {
            return;
        };
        match std::mem::replace(&mut run.wait, Wait::Nothing) {
            Wait::Nothing | Wait::Queued => {}
            Wait::Delay { timer, .. } => self.timers.cancel(timer),
            Wait::Result { request, timer } => {
                self.timers.cancel(timer);
                self.requests.remove(&request);
            }
            Wait::Confirmation { id, timer, .. } => {
                self.timers.cancel(timer);
                self.confirmations.remove(&id);
                self.outputs.push_back(Output::ConfirmWithdrawn(id));
            }
        }
        if matches!(outcome, Outcome::Cancelled(_))
            && let Some(step) = run.trace.steps.last_mut()
            && matches!(
                step.result,
                StepResult::Pending | StepResult::AwaitingConfirmation | StepResult::Waited
            )
            && run.trace.outcome == Outcome::Running
        {
            step.result = StepResult::Cancelled;
        }
        run.trace.outcome = outcome;
        run.trace.ended_ms = Some(now);
        let task_id = run.task;
        let mut next = None;
        if let Some(entry) = self.tasks.get_mut(&task_id) {
            entry.active.retain(|r| *r != run_id);
            entry.queue.retain(|r| *r != run_id);
            if entry.active.is_empty()
                && let Some(queued) = entry.queue.pop_front()
            {
                entry.active.push(queued);
                next = Some(queued);
            }
        }
        self.push_trace(run.trace);
        if let Some(next) = next {
            if let Some(run) = self.runs.get_mut(&next) {
                run.wait = Wait::Nothing;
                run.trace.outcome = Outcome::Running;
            }
            self.drive(next, now);
        }
    }
}
