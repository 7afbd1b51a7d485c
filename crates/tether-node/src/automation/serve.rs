//! The automation service on the wire (SPEC §18.1; requests 200–210): the
//! head unit answers the owner's phone (tasks) and the home hub (place and
//! vehicle events). Every request is checked against the peer's role before
//! the host sees it; a co-user never gets here (the share gate refuses).

use std::sync::Arc;

use tether_automation::template::Binding;
use tether_automation::{Permissions, PlaceId, Task, wire};
use tether_identity::Role;
use tether_proto::v1::{self as pb, request, response};
use tokio::sync::mpsc;

use crate::automation::{
    AutomationError, AutomationHost, ConfirmNotice, Interest, TaskInfo, TaskState,
};

/// Whether `kind` is an automation request (200–212).
pub(crate) fn is_automation(kind: &request::Kind) -> bool {
    is_task_management(kind)
        || matches!(
            kind,
            request::Kind::WatchHomeEvents(_)
                | request::Kind::SetCarDataToHome(_)
                | request::Kind::WatchConfirmations(_)
                | request::Kind::AnswerConfirmation(_)
        )
}

/// Whether `kind` manages tasks (§18.1): what the car and the hub (§18.8)
/// both answer. The switch, home events and confirmations are the car's.
pub(crate) fn is_task_management(kind: &request::Kind) -> bool {
    matches!(
        kind,
        request::Kind::CreateTask(_)
            | request::Kind::UpdateTask(_)
            | request::Kind::DeleteTask(_)
            | request::Kind::ListTasks(_)
            | request::Kind::RunTask(_)
            | request::Kind::GetTraces(_)
            | request::Kind::ShareTask(_)
            | request::Kind::AcceptTemplate(_)
            | request::Kind::SetTaskEnabled(_)
    )
}

/// What a task's author may make it do: what the author's role may do
/// itself (R23: automation never bypasses the session layer's roles).
pub(crate) fn permissions_of(role: Role) -> Permissions {
    Permissions {
        vehicle_commands: tether_control::access::may_command(role),
        device_control: matches!(role, Role::Phone | Role::Watch | Role::Vehicle | Role::Hub),
        navigation: matches!(role, Role::Phone | Role::Watch | Role::Vehicle),
        notifications: !matches!(role, Role::Device),
    }
}

/// What the owner (the account's phone) may make a task do: everything
/// the phone may do itself.
pub fn owner_permissions() -> Permissions {
    permissions_of(Role::Phone)
}

/// Who may send which automation request (SPEC §18.1): the owner's phone
/// manages tasks and the switch; the watch lists, reads traces and runs;
/// the hub only watches home events.
fn allowed(role: Role, kind: &request::Kind) -> bool {
    match kind {
        request::Kind::WatchHomeEvents(_) => role == Role::Hub,
        request::Kind::ListTasks(_)
        | request::Kind::GetTraces(_)
        | request::Kind::RunTask(_)
        | request::Kind::WatchConfirmations(_)
        | request::Kind::AnswerConfirmation(_) => matches!(role, Role::Phone | Role::Watch),
        _ => role == Role::Phone,
    }
}

fn info_to_proto(info: &TaskInfo) -> pb::TaskInfo {
    let (state, reason) = match &info.state {
        TaskState::Active => (pb::TaskState::Active, String::new()),
        TaskState::Disabled => (pb::TaskState::Disabled, String::new()),
        TaskState::DisabledByConsent => (pb::TaskState::DisabledByConsent, String::new()),
        TaskState::Broken(reason) => (pb::TaskState::Broken, reason.clone()),
    };
    pb::TaskInfo {
        id: info.task.id.0,
        task: Some(wire::task_to_proto(&info.task)),
        enabled: info.enabled,
        state: state as i32,
        broken_reason: reason,
    }
}

fn task_of(task: Option<pb::Task>) -> Result<Task, AutomationError> {
    Ok(wire::task_from_proto(
        task.ok_or(AutomationError::BadRequest("missing task"))?,
    )?)
}

fn list(host: &AutomationHost) -> response::Kind {
    response::Kind::TaskList(pb::TaskList {
        tasks: host.list().iter().map(info_to_proto).collect(),
    })
}

/// The interest a hub states in its `WatchHomeEvents`.
pub(crate) fn interest_of(watch: &pb::WatchHomeEvents) -> Interest {
    Interest {
        places: watch.places.iter().cloned().map(PlaceId).collect(),
        vehicle: watch.vehicle_events,
        // Signals are read with `Subscribe`, under the same switch.
        signals: Default::default(),
    }
}

/// Answers one automation request other than `WatchHomeEvents`.
pub(crate) fn handle(
    host: &Arc<AutomationHost>,
    role: Role,
    kind: request::Kind,
) -> Result<response::Kind, AutomationError> {
    if !allowed(role, &kind) {
        return Err(AutomationError::Denied(
            "this role may not make this automation request",
        ));
    }
    let permissions = permissions_of(role);
    Ok(match kind {
        request::Kind::CreateTask(r) => response::Kind::TaskInfo(info_to_proto(&host.create(
            task_of(r.task)?,
            r.enabled,
            &permissions,
        )?)),
        request::Kind::UpdateTask(r) => response::Kind::TaskInfo(info_to_proto(&host.update(
            r.task_id,
            task_of(r.task)?,
            &permissions,
        )?)),
        request::Kind::DeleteTask(r) => {
            host.delete(r.task_id)?;
            list(host)
        }
        request::Kind::ListTasks(_) => list(host),
        request::Kind::RunTask(r) => response::Kind::RunStarted(pb::RunStarted {
            run_id: host.run(r.task_id)?,
        }),
        request::Kind::GetTraces(r) => response::Kind::TraceList(pb::TraceList {
            traces: host
                .traces(r.task_id, r.limit as usize)?
                .iter()
                .map(wire::trace_to_proto)
                .collect(),
        }),
        request::Kind::ShareTask(r) => {
            if r.nickname.trim().is_empty() {
                return Err(AutomationError::BadRequest("a template needs a nickname"));
            }
            response::Kind::TaskTemplate(wire::template_to_proto(&host.share(
                r.task_id,
                &r.nickname,
                (!r.name.is_empty()).then_some(r.name.as_str()),
            )?))
        }
        request::Kind::AcceptTemplate(r) => {
            let template = wire::template_from_proto(
                r.template
                    .ok_or(AutomationError::BadRequest("missing template"))?,
            )?;
            let binding: Binding = wire::binding_from_proto(r.binding.unwrap_or_default())?;
            response::Kind::TaskInfo(info_to_proto(&host.accept(
                &template,
                &binding,
                r.enabled,
                &permissions,
            )?))
        }
        request::Kind::SetTaskEnabled(r) => {
            response::Kind::TaskInfo(info_to_proto(&host.set_enabled(r.task_id, r.enabled)?))
        }
        request::Kind::SetCarDataToHome(r) => {
            host.set_car_data_to_home(r.on)?;
            response::Kind::ConsentState(pb::ConsentState {
                car_data_to_home: host.car_data_to_home(),
            })
        }
        request::Kind::AnswerConfirmation(r) => {
            host.confirm(tether_automation::ConfirmationId(r.id), r.confirm)?;
            response::Kind::ConfirmationAnswered(pb::ConfirmationAnswered {
                id: r.id,
                confirmed: r.confirm,
            })
        }
        request::Kind::WatchHomeEvents(_) | request::Kind::WatchConfirmations(_) => {
            return Err(AutomationError::BadRequest("a watch is a stream"));
        }
        _ => return Err(AutomationError::BadRequest("not an automation request")),
    })
}

/// Starts a hub's `WatchHomeEvents`: the consent state first, then each
/// place or vehicle event it asked for, into `reply`, until either side
/// ends it.
pub(crate) fn watch(
    host: &Arc<AutomationHost>,
    role: Role,
    request_id: u64,
    watch: &pb::WatchHomeEvents,
    reply: mpsc::UnboundedSender<pb::Envelope>,
) -> Result<(), AutomationError> {
    if role != Role::Hub {
        return Err(AutomationError::Denied(
            "only the home hub watches home events",
        ));
    }
    let mut events = host.watch_home(interest_of(watch))?;
    tokio::spawn(async move {
        let mut first = true;
        while let Some(event) = events.recv().await {
            let kind = match (first, event.kind) {
                (true, Some(pb::home_event::Kind::Consent(state))) => {
                    response::Kind::ConsentState(state)
                }
                (_, kind) => response::Kind::HomeEvent(pb::HomeEvent { kind }),
            };
            first = false;
            let envelope = pb::Envelope {
                request_id,
                body: Some(pb::envelope::Body::Response(pb::Response {
                    kind: Some(kind),
                })),
                ..pb::Envelope::default()
            };
            if reply.send(envelope).is_err() {
                return;
            }
        }
    });
    Ok(())
}

/// Starts the owner's `WatchConfirmations` (R23): each question for the
/// owner pending now, then each new one and each withdrawal, into `reply`.
pub(crate) fn watch_confirmations(
    host: &Arc<AutomationHost>,
    role: Role,
    request_id: u64,
    reply: mpsc::UnboundedSender<pb::Envelope>,
) -> Result<(), AutomationError> {
    if !matches!(role, Role::Phone | Role::Watch) {
        return Err(AutomationError::Denied("only the owner confirms"));
    }
    let mut notices = host.watch_confirmations();
    tokio::spawn(async move {
        while let Some(notice) = notices.recv().await {
            let notice = match notice {
                ConfirmNotice::Ask(q) => pb::ConfirmationNotice {
                    id: q.id.0,
                    task_id: q.task.0,
                    task_name: q.task_name,
                    command: Some(wire::vehicle_command_to_proto(&q.command)),
                    deadline_ms: q.deadline_ms,
                    withdrawn: false,
                },
                ConfirmNotice::Withdrawn(id) => pb::ConfirmationNotice {
                    id: id.0,
                    withdrawn: true,
                    ..pb::ConfirmationNotice::default()
                },
            };
            let envelope = pb::Envelope {
                request_id,
                body: Some(pb::envelope::Body::Response(pb::Response {
                    kind: Some(response::Kind::ConfirmationNotice(notice)),
                })),
                ..pb::Envelope::default()
            };
            if reply.send(envelope).is_err() {
                return;
            }
        }
    });
    Ok(())
}
