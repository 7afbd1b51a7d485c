//! The phone's side of the automation service (SPEC §18.1): super tasks on
//! the car, managed over the phone's session.

use tether_automation::template::{Binding, Template};
use tether_automation::{Task, Trace, wire};
use tether_proto::v1::{self as pb, request, response};

use crate::NodeError;
use crate::automation::{TaskInfo, TaskState};
use crate::phone::vehicle_link::VehicleLink;
use crate::wire::{answer, request};

fn info_from_proto(info: pb::TaskInfo) -> Result<TaskInfo, NodeError> {
    let mut task = wire::task_from_proto(
        info.task
            .ok_or(NodeError::UnexpectedResponse("a task without its task"))?,
    )
    .map_err(crate::automation::AutomationError::from)?;
    task.id = tether_automation::TaskId(info.id);
    let state = match pb::TaskState::try_from(info.state) {
        Ok(pb::TaskState::Active) => TaskState::Active,
        Ok(pb::TaskState::Disabled) => TaskState::Disabled,
        Ok(pb::TaskState::DisabledByConsent) => TaskState::DisabledByConsent,
        Ok(pb::TaskState::Broken) => TaskState::Broken(info.broken_reason),
        _ => return Err(NodeError::UnexpectedResponse("an unknown task state")),
    };
    Ok(TaskInfo {
        task,
        enabled: info.enabled,
        state,
    })
}

fn one(kind: response::Kind) -> Result<TaskInfo, NodeError> {
    match kind {
        response::Kind::TaskInfo(info) => info_from_proto(info),
        _ => Err(NodeError::UnexpectedResponse("not a task")),
    }
}

fn many(kind: response::Kind) -> Result<Vec<TaskInfo>, NodeError> {
    match kind {
        response::Kind::TaskList(list) => list.tasks.into_iter().map(info_from_proto).collect(),
        _ => Err(NodeError::UnexpectedResponse("not a task list")),
    }
}

/// A question from the car: may a task unlock or open it now (R23)?
#[derive(Debug, Clone, PartialEq)]
pub struct Confirmation {
    /// Answer with [`VehicleLink::answer_confirmation`].
    pub id: u64,
    /// The task.
    pub task_id: u64,
    /// Its name.
    pub task_name: String,
    /// The command waiting (`None` on a withdrawal).
    pub command: Option<tether_automation::VehicleCommand>,
    /// After this (the car's Unix ms) the command does not run.
    pub deadline_ms: u64,
    /// The question is over: answered, timed out, or the run ended.
    pub withdrawn: bool,
}

/// Questions from the car, as they come.
#[derive(Debug)]
pub struct Confirmations {
    stream: tether_session::quic::ResponseStream,
}

impl Confirmations {
    /// The next question or withdrawal; `None` when the car ended the
    /// stream.
    pub async fn next(&mut self) -> Result<Option<Confirmation>, NodeError> {
        let Some(reply) = self.stream.next().await? else {
            return Ok(None);
        };
        match answer(reply)? {
            response::Kind::ConfirmationNotice(n) => Ok(Some(Confirmation {
                id: n.id,
                task_id: n.task_id,
                task_name: n.task_name,
                command: match n.command {
                    Some(c) if !n.withdrawn => Some(
                        wire::vehicle_command_from_proto(c)
                            .map_err(|e| NodeError::Automation(e.into()))?,
                    ),
                    _ => None,
                },
                deadline_ms: n.deadline_ms,
                withdrawn: n.withdrawn,
            })),
            _ => Err(NodeError::UnexpectedResponse("not a confirmation")),
        }
    }

    /// Stops watching.
    pub fn cancel(self) {
        self.stream.cancel();
    }
}

impl VehicleLink {
    /// Follows the car's questions for the owner: a task that would unlock
    /// or open the car waits for the owner's answer at run time (R23).
    pub async fn watch_confirmations(&self) -> Result<Confirmations, NodeError> {
        let stream = self
            .session()
            .request(request(request::Kind::WatchConfirmations(
                pb::WatchConfirmations {},
            )))
            .await?;
        Ok(Confirmations { stream })
    }

    /// Answers question `id`: `confirm` lets the command run.
    pub async fn answer_confirmation(&self, id: u64, confirm: bool) -> Result<(), NodeError> {
        match self
            .automation(request::Kind::AnswerConfirmation(pb::AnswerConfirmation {
                id,
                confirm,
            }))
            .await?
        {
            response::Kind::ConfirmationAnswered(_) => Ok(()),
            _ => Err(NodeError::UnexpectedResponse("not an answer")),
        }
    }

    async fn automation(&self, kind: request::Kind) -> Result<response::Kind, NodeError> {
        self.tasks().call(kind).await
    }

    /// The car's super tasks, as a handle of their own (the methods below
    /// go through it too).
    pub fn tasks(&self) -> Tasks {
        Tasks(self.shared_session())
    }

    /// Creates a super task on the car (its id is assigned there).
    pub async fn create_task(&self, task: &Task, enabled: bool) -> Result<TaskInfo, NodeError> {
        self.tasks().create_task(task, enabled).await
    }

    /// Replaces task `id`.
    pub async fn update_task(&self, id: u64, task: &Task) -> Result<TaskInfo, NodeError> {
        self.tasks().update_task(id, task).await
    }

    /// Deletes task `id`; returns the tasks left.
    pub async fn delete_task(&self, id: u64) -> Result<Vec<TaskInfo>, NodeError> {
        self.tasks().delete_task(id).await
    }

    /// The car's tasks.
    pub async fn list_tasks(&self) -> Result<Vec<TaskInfo>, NodeError> {
        self.tasks().list_tasks().await
    }

    /// Runs task `id` now; returns the run's number (0: its mode or
    /// conditions kept it from running; the trace says which).
    pub async fn run_task(&self, id: u64) -> Result<u64, NodeError> {
        self.tasks().run_task(id).await
    }

    /// Task `id`'s traces, oldest first (at most `limit`; 0: all kept).
    pub async fn task_traces(&self, id: u64, limit: u32) -> Result<Vec<Trace>, NodeError> {
        self.tasks().task_traces(id, limit).await
    }

    /// Task `id` as a template to share, showing `nickname` (R22), named
    /// `name` in the template instead of the task's own name when given.
    pub async fn share_task(
        &self,
        id: u64,
        nickname: &str,
        name: Option<&str>,
    ) -> Result<Template, NodeError> {
        self.tasks().share_task(id, nickname, name).await
    }

    /// Installs a shared template on the car, bound to this account's own
    /// places and devices (R22).
    pub async fn accept_template(
        &self,
        template: &Template,
        binding: &Binding,
        enabled: bool,
    ) -> Result<TaskInfo, NodeError> {
        self.tasks()
            .accept_template(template, binding, enabled)
            .await
    }

    /// Enables or disables task `id`.
    pub async fn set_task_enabled(&self, id: u64, enabled: bool) -> Result<TaskInfo, NodeError> {
        self.tasks().set_task_enabled(id, enabled).await
    }

    /// Turns "car data to home" on or off (R11, R27, R28); returns the
    /// switch's state.
    pub async fn set_car_data_to_home(&self, on: bool) -> Result<bool, NodeError> {
        match self
            .automation(request::Kind::SetCarDataToHome(pb::SetCarDataToHome { on }))
            .await?
        {
            response::Kind::ConsentState(s) => Ok(s.car_data_to_home),
            _ => Err(NodeError::UnexpectedResponse("not the consent state")),
        }
    }
}

/// The super tasks of the peer of a session (SPEC §18.1): the car's, from
/// [`VehicleLink::tasks`], or the home hub's, from
/// [`HubLink::tasks`](crate::HubLink::tasks) (§18.8). One request, one
/// answer. Cheap to clone: it shares the session.
#[derive(Debug, Clone)]
pub struct Tasks(pub(crate) std::sync::Arc<tether_session::quic::ClientSession>);

impl Tasks {
    pub(crate) async fn call(&self, kind: request::Kind) -> Result<response::Kind, NodeError> {
        answer(self.0.call(request(kind)).await?)
    }

    /// Creates a super task on the peer (its id is assigned there).
    pub async fn create_task(&self, task: &Task, enabled: bool) -> Result<TaskInfo, NodeError> {
        one(self
            .call(request::Kind::CreateTask(pb::CreateTask {
                task: Some(wire::task_to_proto(task)),
                enabled,
            }))
            .await?)
    }

    /// Replaces task `id`.
    pub async fn update_task(&self, id: u64, task: &Task) -> Result<TaskInfo, NodeError> {
        one(self
            .call(request::Kind::UpdateTask(pb::UpdateTask {
                task_id: id,
                task: Some(wire::task_to_proto(task)),
            }))
            .await?)
    }

    /// Deletes task `id`; returns the tasks left.
    pub async fn delete_task(&self, id: u64) -> Result<Vec<TaskInfo>, NodeError> {
        many(
            self.call(request::Kind::DeleteTask(pb::DeleteTask { task_id: id }))
                .await?,
        )
    }

    /// The peer's tasks.
    pub async fn list_tasks(&self) -> Result<Vec<TaskInfo>, NodeError> {
        many(
            self.call(request::Kind::ListTasks(pb::ListTasks {}))
                .await?,
        )
    }

    /// Runs task `id` now; returns the run's number (0: its mode or
    /// conditions kept it from running; the trace says which).
    pub async fn run_task(&self, id: u64) -> Result<u64, NodeError> {
        match self
            .call(request::Kind::RunTask(pb::RunTask { task_id: id }))
            .await?
        {
            response::Kind::RunStarted(r) => Ok(r.run_id),
            _ => Err(NodeError::UnexpectedResponse("not a run")),
        }
    }

    /// Task `id`'s traces, oldest first (at most `limit`; 0: all kept).
    pub async fn task_traces(&self, id: u64, limit: u32) -> Result<Vec<Trace>, NodeError> {
        match self
            .call(request::Kind::GetTraces(pb::GetTraces {
                task_id: id,
                limit,
            }))
            .await?
        {
            response::Kind::TraceList(list) => list
                .traces
                .into_iter()
                .map(|t| wire::trace_from_proto(t).map_err(|e| NodeError::Automation(e.into())))
                .collect(),
            _ => Err(NodeError::UnexpectedResponse("not a trace list")),
        }
    }

    /// Task `id` as a template to share, showing `nickname` (R22), named
    /// `name` in the template instead of the task's own name when given.
    pub async fn share_task(
        &self,
        id: u64,
        nickname: &str,
        name: Option<&str>,
    ) -> Result<Template, NodeError> {
        match self
            .call(request::Kind::ShareTask(pb::ShareTask {
                task_id: id,
                nickname: nickname.to_owned(),
                name: name.unwrap_or_default().to_owned(),
            }))
            .await?
        {
            response::Kind::TaskTemplate(t) => {
                Ok(wire::template_from_proto(t).map_err(|e| NodeError::Automation(e.into()))?)
            }
            _ => Err(NodeError::UnexpectedResponse("not a template")),
        }
    }

    /// Installs a shared template on the peer, bound to this account's own
    /// places and devices (R22).
    pub async fn accept_template(
        &self,
        template: &Template,
        binding: &Binding,
        enabled: bool,
    ) -> Result<TaskInfo, NodeError> {
        one(self
            .call(request::Kind::AcceptTemplate(pb::AcceptTemplate {
                template: Some(wire::template_to_proto(template)),
                binding: Some(wire::binding_to_proto(binding)),
                enabled,
            }))
            .await?)
    }

    /// Enables or disables task `id`.
    pub async fn set_task_enabled(&self, id: u64, enabled: bool) -> Result<TaskInfo, NodeError> {
        one(self
            .call(request::Kind::SetTaskEnabled(pb::SetTaskEnabled {
                task_id: id,
                enabled,
            }))
            .await?)
    }
}
