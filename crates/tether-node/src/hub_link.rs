//! The phone's side of the home hub's task service (SPEC §18.8): the
//! owner manages the hub's super tasks over an account-bound session, as
//! on the car.

use std::sync::Arc;

use tether_automation::template::{Binding, Template};
use tether_automation::{Task, Trace};
use tether_session::quic::{ClientSession, CloseCode};

use crate::NodeError;
use crate::automation::TaskInfo;
use crate::automation_link::Tasks;

/// An authenticated session to the account's home hub. Obtained from
/// [`Phone::connect_hub`](crate::Phone::connect_hub). Cheap to share.
#[derive(Debug, Clone)]
pub struct HubLink {
    session: Arc<ClientSession>,
}

impl HubLink {
    pub(crate) fn new(session: ClientSession) -> Result<Self, NodeError> {
        if session.peer().certificate.role != tether_identity::Role::Hub {
            session.close(CloseCode::Normal, "not a hub");
            return Err(NodeError::UnexpectedPeer("the peer is not a home hub"));
        }
        Ok(Self {
            session: Arc::new(session),
        })
    }

    /// The hub's super tasks, as a handle of their own (the methods below
    /// go through it too).
    pub fn tasks(&self) -> Tasks {
        Tasks(self.session.clone())
    }

    /// Whether the session was resumed from a ticket.
    pub fn resumed(&self) -> bool {
        self.session.peer().resumed
    }

    /// Closes the session.
    pub fn close(&self) {
        self.session.close(CloseCode::Normal, "bye");
    }

    /// Creates a super task on the hub (its id is assigned there).
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

    /// The hub's tasks.
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

    /// Installs a shared template on the hub, bound to this home's places
    /// and devices (R22).
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
}
