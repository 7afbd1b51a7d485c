//! Super tasks through the bindings (R20–R22; SPEC §18): the owner's phone
//! manages the car's tasks over its `VehicleLink`, and a vehicle app
//! reports the car's events to them on its `HeadUnit`.
//!
//! A task crosses the boundary as the protobuf bytes of `tether.v1.Task`
//! and a template as those of `tether.v1.TaskTemplate`
//! (`proto/tether/v1/automation.proto`): apps build and read them with
//! their own protobuf library, and the car validates every task.

use std::collections::HashMap;

use tether_node::tether_automation::template::{Binding, Template};
use tether_node::tether_automation::{DeviceId, PlaceId, Task, wire};
use tether_node::{TaskInfo, TaskState};

#[cfg(feature = "head-unit")]
use crate::HeadUnit;
use crate::runtime::{guard, run};
use crate::traces::TraceSummary;
use crate::{TetherError, VehicleLink};

/// A task installed on the car, as a list shows it.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct TaskSummary {
    /// The car's number for it: pass it to `run_task`, `task_traces`…
    pub id: u64,
    /// Its name.
    pub name: String,
    /// The owner's switch.
    pub enabled: bool,
    /// Whether it can run: `active`, `disabled`, `disabled by consent` or
    /// `broken`.
    pub state: String,
    /// For a `broken` task: why, for people.
    pub broken_reason: Option<String>,
    /// The task as installed (`tether.v1.Task`, its `id` set).
    pub task: Vec<u8>,
}

impl From<TaskInfo> for TaskSummary {
    fn from(info: TaskInfo) -> Self {
        let broken_reason = match &info.state {
            TaskState::Broken(why) => Some(why.clone()),
            _ => None,
        };
        Self {
            id: info.task.id.0,
            name: info.task.name.clone(),
            enabled: info.enabled,
            state: info.state.label().to_owned(),
            broken_reason,
            task: wire::encode_task(&info.task),
        }
    }
}

/// What a template asks of its recipient: the slots to bind in
/// `accept_template` (R22).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct TemplateSummary {
    /// The sharer's nickname, to show.
    pub nickname: String,
    /// The task's name as the sharer typed it.
    pub task_name: String,
    /// Place slots (`place-1`…): bind each to one of the recipient's place
    /// names.
    pub place_slots: Vec<String>,
    /// Device slots (`device-1`…): bind each to one of the recipient's
    /// device ids.
    pub device_slots: Vec<String>,
    /// Message slots (`message-1`…): bind each to the recipient's own
    /// notification text.
    pub message_slots: Vec<String>,
    /// The template's task, slots in place of places, devices and texts
    /// (`tether.v1.Task`).
    pub task: Vec<u8>,
}

impl From<&Template> for TemplateSummary {
    fn from(t: &Template) -> Self {
        Self {
            nickname: t.nickname.clone(),
            task_name: t.task.name.clone(),
            place_slots: t.places.iter().map(|p| p.slot.clone()).collect(),
            device_slots: t.devices.iter().map(|d| d.slot.clone()).collect(),
            message_slots: t.messages.clone(),
            task: wire::encode_task(&t.task),
        }
    }
}

/// The slots and task of a shared template (`tether.v1.TaskTemplate`
/// bytes), to ask the recipient for a binding. Bad bytes are
/// `TetherError.InvalidArgument`.
#[uniffi::export]
pub fn describe_template(template: Vec<u8>) -> Result<TemplateSummary, TetherError> {
    guard(|| Ok(TemplateSummary::from(&decode_template(&template)?)))
}

fn decode_task(bytes: &[u8]) -> Result<Task, TetherError> {
    wire::decode_task(bytes).map_err(|e| TetherError::InvalidArgument {
        detail: format!("not a valid tether.v1.Task: {e}"),
    })
}

fn decode_template(bytes: &[u8]) -> Result<Template, TetherError> {
    wire::decode_template(bytes).map_err(|e| TetherError::InvalidArgument {
        detail: format!("not a valid tether.v1.TaskTemplate: {e}"),
    })
}

/// `bindings` (slot → value) sorted into the template's place, device and
/// message slots. A slot the template does not have is refused here,
/// naming the ones it has; a slot left out is refused by the car.
fn binding_for(
    template: &Template,
    bindings: HashMap<String, String>,
) -> Result<Binding, TetherError> {
    let mut binding = Binding::default();
    for (slot, value) in bindings {
        if template.places.iter().any(|p| p.slot == slot) {
            binding.places.insert(slot, PlaceId(value));
        } else if template.devices.iter().any(|d| d.slot == slot) {
            binding.devices.insert(slot, DeviceId(value));
        } else if template.messages.contains(&slot) {
            binding.messages.insert(slot, value);
        } else {
            let summary = TemplateSummary::from(template);
            let slots = [
                summary.place_slots,
                summary.device_slots,
                summary.message_slots,
            ]
            .concat();
            return Err(TetherError::InvalidArgument {
                detail: format!(
                    "the template has no slot {slot:?} (its slots: [{}])",
                    slots.join(", ")
                ),
            });
        }
    }
    Ok(binding)
}

fn summaries(list: Vec<TaskInfo>) -> Vec<TaskSummary> {
    list.into_iter().map(Into::into).collect()
}

/// What the task methods of a `VehicleLink` and a `HubLink` do, the same
/// on both: decode, call the peer on the runtime, convert the answer.
struct TaskOps(tether_node::Tasks);

impl TaskOps {
    async fn create_task(self, task: Vec<u8>, enabled: bool) -> Result<TaskSummary, TetherError> {
        let task = decode_task(&task)?;
        let tasks = self.0;
        run(async move { tasks.create_task(&task, enabled).await.map(Into::into) }).await
    }

    async fn update_task(self, id: u64, task: Vec<u8>) -> Result<TaskSummary, TetherError> {
        let task = decode_task(&task)?;
        let tasks = self.0;
        run(async move { tasks.update_task(id, &task).await.map(Into::into) }).await
    }

    async fn delete_task(self, id: u64) -> Result<Vec<TaskSummary>, TetherError> {
        let tasks = self.0;
        run(async move { tasks.delete_task(id).await.map(summaries) }).await
    }

    async fn list_tasks(self) -> Result<Vec<TaskSummary>, TetherError> {
        let tasks = self.0;
        run(async move { tasks.list_tasks().await.map(summaries) }).await
    }

    async fn run_task(self, id: u64) -> Result<u64, TetherError> {
        let tasks = self.0;
        run(async move { tasks.run_task(id).await }).await
    }

    async fn task_traces(self, id: u64, limit: u32) -> Result<Vec<TraceSummary>, TetherError> {
        let tasks = self.0;
        run(async move {
            tasks
                .task_traces(id, limit)
                .await
                .map(|traces| traces.iter().map(TraceSummary::from).collect())
        })
        .await
    }

    async fn share_task(
        self,
        id: u64,
        nickname: String,
        name: Option<String>,
    ) -> Result<Vec<u8>, TetherError> {
        let tasks = self.0;
        run(async move {
            tasks
                .share_task(id, &nickname, name.as_deref())
                .await
                .map(|t| wire::encode_template(&t))
        })
        .await
    }

    async fn accept_template(
        self,
        template: Vec<u8>,
        bindings: HashMap<String, String>,
        enabled: bool,
    ) -> Result<TaskSummary, TetherError> {
        let template = decode_template(&template)?;
        let binding = binding_for(&template, bindings)?;
        let tasks = self.0;
        run(async move {
            tasks
                .accept_template(&template, &binding, enabled)
                .await
                .map(Into::into)
        })
        .await
    }

    async fn set_task_enabled(self, id: u64, enabled: bool) -> Result<TaskSummary, TetherError> {
        let tasks = self.0;
        run(async move { tasks.set_task_enabled(id, enabled).await.map(Into::into) }).await
    }
}

/// Super tasks on the car, for the owner's phone (a watch may list, run
/// and read traces). Bytes from the app that do not decode are
/// `TetherError.InvalidArgument`; a task the car refuses (unknown signal
/// or device, a command the phone may not send, no such task) is
/// `TetherError.Control` with the wire code (`ERROR_CODE_BAD_REQUEST`,
/// `ERROR_CODE_NOT_FOUND`, `ERROR_CODE_PERMISSION_DENIED`).
#[uniffi::export]
impl VehicleLink {
    /// Installs a task (`tether.v1.Task` bytes; its `id` is ignored, the
    /// car assigns one) and returns it as installed.
    pub async fn create_task(
        &self,
        task: Vec<u8>,
        enabled: bool,
    ) -> Result<TaskSummary, TetherError> {
        self.ops().create_task(task, enabled).await
    }

    /// Replaces task `id` (`tether.v1.Task` bytes), keeping its number and
    /// its switch.
    pub async fn update_task(&self, id: u64, task: Vec<u8>) -> Result<TaskSummary, TetherError> {
        self.ops().update_task(id, task).await
    }

    /// Deletes task `id`; returns the tasks left.
    pub async fn delete_task(&self, id: u64) -> Result<Vec<TaskSummary>, TetherError> {
        self.ops().delete_task(id).await
    }

    /// The car's tasks.
    pub async fn list_tasks(&self) -> Result<Vec<TaskSummary>, TetherError> {
        self.ops().list_tasks().await
    }

    /// Runs task `id` now, whatever its triggers; returns the run's number
    /// (0: its mode or conditions kept it from running; its trace says
    /// which). The run goes on in the car: follow it with `task_traces`.
    pub async fn run_task(&self, id: u64) -> Result<u64, TetherError> {
        self.ops().run_task(id).await
    }

    /// Task `id`'s latest traces, oldest first: at most `limit`, 0 for all
    /// the car keeps.
    pub async fn task_traces(&self, id: u64, limit: u32) -> Result<Vec<TraceSummary>, TetherError> {
        self.ops().task_traces(id, limit).await
    }

    /// Task `id` as a template to share with another account, showing
    /// `nickname` (R22): `tether.v1.TaskTemplate` bytes, with every place,
    /// device and notification text replaced by a slot. `name`, when given,
    /// replaces the task's own name in the template (1 to 64 bytes).
    pub async fn share_task(
        &self,
        id: u64,
        nickname: String,
        name: Option<String>,
    ) -> Result<Vec<u8>, TetherError> {
        self.ops().share_task(id, nickname, name).await
    }

    /// Installs a template received from another account (`tether.v1.
    /// TaskTemplate` bytes), each slot bound to this account's own: place
    /// slots to place names, device slots to device ids, message slots to
    /// texts (see `describe_template`). Every slot must be bound.
    pub async fn accept_template(
        &self,
        template: Vec<u8>,
        bindings: HashMap<String, String>,
        enabled: bool,
    ) -> Result<TaskSummary, TetherError> {
        self.ops()
            .accept_template(template, bindings, enabled)
            .await
    }

    /// Enables or disables task `id`; a disabled task neither listens nor
    /// runs, and its running runs are cancelled.
    pub async fn set_task_enabled(
        &self,
        id: u64,
        enabled: bool,
    ) -> Result<TaskSummary, TetherError> {
        self.ops().set_task_enabled(id, enabled).await
    }

    /// Turns "car data to home" on or off (R11, R27, R28): while it is off
    /// the car sends the home hub no place or vehicle event, and the hub's
    /// tasks that read car data are disabled. Returns the switch's state.
    pub async fn set_car_data_to_home(&self, on: bool) -> Result<bool, TetherError> {
        let inner = self.node().clone();
        run(async move { inner.set_car_data_to_home(on).await }).await
    }
}

/// Something the car reports as it happens, for its tasks' triggers.
#[cfg(feature = "head-unit")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum VehicleEvent {
    /// Shifted into park.
    Parked,
    /// Shifted out of park.
    Driving,
    /// Central locking locked.
    Locked,
    /// Central locking unlocked.
    Unlocked,
    /// Charging started.
    ChargingStarted,
    /// Charging stopped.
    ChargingStopped,
}

#[cfg(feature = "head-unit")]
impl From<VehicleEvent> for tether_node::tether_automation::VehicleEvent {
    fn from(e: VehicleEvent) -> Self {
        use tether_node::tether_automation::VehicleEvent as E;
        match e {
            VehicleEvent::Parked => E::Parked,
            VehicleEvent::Driving => E::Driving,
            VehicleEvent::Locked => E::Locked,
            VehicleEvent::Unlocked => E::Unlocked,
            VehicleEvent::ChargingStarted => E::ChargingStarted,
            VehicleEvent::ChargingStopped => E::ChargingStopped,
        }
    }
}

#[cfg(feature = "head-unit")]
#[uniffi::export]
impl HeadUnit {
    /// The vehicle app reports an event of the car to its super tasks:
    /// tasks it triggers run, and the state it sets (parked, locked,
    /// charging) is what their conditions and the unlock safety rule read
    /// (R23). Returns whether a task uses it: an event no task declared
    /// is dropped unread (R21). Needs a started head unit. From the first
    /// report on, the head unit stops deriving locked, unlocked, parked
    /// and driving from its own signals (SPEC §18.6): the app reports
    /// them all, and none is counted twice.
    pub async fn report_vehicle_event(&self, event: VehicleEvent) -> Result<bool, TetherError> {
        let inner = self.node();
        run(async move {
            let host = inner.automation().await?;
            Ok::<_, tether_node::NodeError>(
                host.report_vehicle_event(event.into())
                    == tether_node::tether_automation::Delivery::Delivered,
            )
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use tether_node::tether_automation::{
        Action, Condition, TaskId, Trigger, VehicleCommand, VehicleEvent as Event,
    };

    fn parked_at_home() -> Task {
        Task::new(TaskId(0), "parked: lock up")
            .trigger(Trigger::Vehicle(Event::Parked))
            .condition(Condition::Place {
                place: PlaceId::new("home"),
                inside: true,
            })
            .action(Action::Vehicle(VehicleCommand::Lock))
            .declare_inputs()
    }

    #[test]
    fn bad_task_bytes_are_an_invalid_argument() {
        match decode_task(&[0xff, 0x01]) {
            Err(TetherError::InvalidArgument { detail }) => {
                assert!(detail.contains("tether.v1.Task"), "{detail}")
            }
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn a_binding_sorts_slots_by_kind_and_names_the_real_ones() {
        let template = Template::from_task(&parked_at_home(), "Ana");
        let summary = describe_template(wire::encode_template(&template)).unwrap();
        assert_eq!(summary.nickname, "Ana");
        assert_eq!(summary.place_slots, ["place-1"]);
        assert_eq!(decode_task(&summary.task).unwrap(), template.task);

        let good = HashMap::from([("place-1".to_owned(), "home".to_owned())]);
        let binding = binding_for(&template, good).unwrap();
        assert_eq!(binding.places["place-1"], PlaceId::new("home"));
        assert_eq!(template.bind(&binding).unwrap().name, "parked: lock up");

        let bad = HashMap::from([("device-1".to_owned(), "lamp".to_owned())]);
        match binding_for(&template, bad) {
            Err(TetherError::InvalidArgument { detail }) => {
                assert!(detail.contains("[place-1]"), "{detail}")
            }
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn a_summary_carries_the_installed_task() {
        let mut task = parked_at_home();
        task.id = TaskId(7);
        let summary = TaskSummary::from(TaskInfo {
            task: task.clone(),
            enabled: true,
            state: TaskState::Broken("place home is gone".into()),
        });
        assert_eq!((summary.id, summary.state.as_str()), (7, "broken"));
        assert_eq!(summary.broken_reason.as_deref(), Some("place home is gone"));
        assert_eq!(decode_task(&summary.task).unwrap(), task);
    }
}

impl VehicleLink {
    fn ops(&self) -> TaskOps {
        TaskOps(self.node().tasks())
    }
}

/// An authenticated session to the account's home hub, to manage the
/// hub's super tasks as the car's (SPEC §18.8): from `Phone.connect_hub`.
/// The hub answers the task methods only; errors as on `VehicleLink`.
#[derive(Debug, uniffi::Object)]
pub struct HubLink {
    inner: tether_node::HubLink,
}

impl HubLink {
    pub(crate) fn new(inner: tether_node::HubLink) -> Self {
        Self { inner }
    }

    fn ops(&self) -> TaskOps {
        TaskOps(self.inner.tasks())
    }
}

#[uniffi::export]
impl HubLink {
    /// Whether the session was resumed from a ticket.
    pub fn resumed(&self) -> bool {
        self.inner.resumed()
    }

    /// Closes the session; later calls fail with `TetherError.Session`.
    pub fn close(&self) {
        let _ = guard(|| {
            self.inner.close();
            Ok(())
        });
    }

    /// Installs a task on the hub (`tether.v1.Task` bytes; the hub assigns
    /// its `id`) and returns it as installed.
    pub async fn create_task(
        &self,
        task: Vec<u8>,
        enabled: bool,
    ) -> Result<TaskSummary, TetherError> {
        self.ops().create_task(task, enabled).await
    }

    /// Replaces task `id`, keeping its number and its switch.
    pub async fn update_task(&self, id: u64, task: Vec<u8>) -> Result<TaskSummary, TetherError> {
        self.ops().update_task(id, task).await
    }

    /// Deletes task `id`; returns the tasks left.
    pub async fn delete_task(&self, id: u64) -> Result<Vec<TaskSummary>, TetherError> {
        self.ops().delete_task(id).await
    }

    /// The hub's tasks.
    pub async fn list_tasks(&self) -> Result<Vec<TaskSummary>, TetherError> {
        self.ops().list_tasks().await
    }

    /// Runs task `id` now, whatever its triggers; returns the run's number
    /// (0: its mode or conditions kept it from running).
    pub async fn run_task(&self, id: u64) -> Result<u64, TetherError> {
        self.ops().run_task(id).await
    }

    /// Task `id`'s latest traces, oldest first: at most `limit`, 0 for all
    /// the hub keeps.
    pub async fn task_traces(&self, id: u64, limit: u32) -> Result<Vec<TraceSummary>, TetherError> {
        self.ops().task_traces(id, limit).await
    }

    /// Task `id` as a template to share (R22), as on `VehicleLink`.
    pub async fn share_task(
        &self,
        id: u64,
        nickname: String,
        name: Option<String>,
    ) -> Result<Vec<u8>, TetherError> {
        self.ops().share_task(id, nickname, name).await
    }

    /// Installs a template on the hub, bound to this home's places and
    /// devices, as on `VehicleLink`.
    pub async fn accept_template(
        &self,
        template: Vec<u8>,
        bindings: HashMap<String, String>,
        enabled: bool,
    ) -> Result<TaskSummary, TetherError> {
        self.ops()
            .accept_template(template, bindings, enabled)
            .await
    }

    /// Enables or disables task `id`.
    pub async fn set_task_enabled(
        &self,
        id: u64,
        enabled: bool,
    ) -> Result<TaskSummary, TetherError> {
        self.ops().set_task_enabled(id, enabled).await
    }
}
