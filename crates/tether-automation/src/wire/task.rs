//! Tasks in their protobuf form (`tether.v1.Task`, SPEC §18.1), both ways.
//!
//! The conversion is exact: for every task `t` the model can hold with
//! finite numbers, `decode_task(&encode_task(&t)) == Ok(t)`. The decoder
//! takes untrusted messages: it refuses an empty required field or oneof,
//! an enum's `UNSPECIFIED` or unknown value, a number outside the model's
//! range, a non-finite real, and, *before* building the nested parts, more
//! conditions, actions, branches or levels than the engine's limits
//! ([`MAX_CONDITION_NODES`], [`MAX_ACTION_NODES`], [`MAX_BRANCHES`],
//! [`MAX_NESTING`]), so a hostile message cannot make it recurse deeply or
//! allocate much. It counts the way [`crate::Engine::validate`] does, so a
//! task the engine accepts always decodes. What a task means (known names,
//! permissions, declared inputs) is left to that validation.

use std::collections::BTreeSet;

use prost::Message;
use tether_proto::v1 as pb;
use tether_proto::v1::{action, condition, trigger};

use super::WireError;
use crate::model::{Action, AppIntent, Branch, Condition, Task, TaskId, Trigger, VehicleCommand};
use crate::{
    MAX_ACTION_NODES, MAX_BRANCHES, MAX_CONDITION_NODES, MAX_MESSAGE_BYTES, MAX_NAME_BYTES,
    MAX_NESTING, MAX_TRIGGERS,
};

mod parts;
mod service;
mod template;

use parts::*;
pub use parts::{
    transition_from_proto, transition_to_proto, value_from_proto, value_to_proto,
    vehicle_event_from_proto, vehicle_event_to_proto,
};
pub use service::*;
pub use template::*;

/// Longest place name, device name, signal path or slot id on the wire,
/// bytes of UTF-8. The engine sets no limit of its own; the wire does, so
/// that one message cannot name a megabyte.
pub const MAX_ID_BYTES: usize = 256;
/// Most arguments of a device action on the wire.
pub const MAX_ARGUMENTS: usize = 32;
/// Most inputs a task may declare on the wire: one per trigger and per
/// condition, and the parking state an opening command reads. A valid task
/// declares no more (R21: exactly the inputs it uses).
pub const MAX_INPUTS: usize = MAX_TRIGGERS + MAX_CONDITION_NODES + 1;

// ------------------------------------------------------------------ entry points

/// The protobuf bytes of `task`.
pub fn encode_task(task: &Task) -> Vec<u8> {
    task_to_proto(task).encode_to_vec()
}

/// The task in `bytes` (a `tether.v1.Task`), checked as
/// [`task_from_proto`] does.
pub fn decode_task(bytes: &[u8]) -> Result<Task, WireError> {
    let message = pb::Task::decode(bytes).map_err(|e| WireError::Decode(e.to_string()))?;
    task_from_proto(message)
}

/// The protobuf form of `task`.
pub fn task_to_proto(task: &Task) -> pb::Task {
    pb::Task {
        id: task.id.0,
        name: task.name.clone(),
        triggers: task.triggers.iter().map(trigger_to_proto).collect(),
        conditions: task.conditions.iter().map(condition_to_proto).collect(),
        actions: task.actions.iter().map(action_to_proto).collect(),
        mode: Some(mode_to_proto(task.mode)),
        missed: Some(missed_to_proto(task.missed)),
        inputs: task.inputs.iter().map(input_to_proto).collect(),
    }
}

/// The task `message` describes. Bounds depth and sizes before it builds
/// the nested parts; see the module doc for what it refuses.
pub fn task_from_proto(message: pb::Task) -> Result<Task, WireError> {
    if message.name.len() > MAX_NAME_BYTES {
        return Err(WireError::TooLarge("Task.name"));
    }
    if message.triggers.len() > MAX_TRIGGERS {
        return Err(WireError::TooLarge("Task.triggers"));
    }
    if message.inputs.len() > MAX_INPUTS {
        return Err(WireError::TooLarge("Task.inputs"));
    }
    let mut budget = Budget::default();
    let triggers = message
        .triggers
        .into_iter()
        .map(trigger_from_proto)
        .collect::<Result<_, _>>()?;
    let conditions = conditions_from_proto(message.conditions, 1, &mut budget)?;
    let actions = actions_from_proto(message.actions, 1, &mut budget)?;
    let inputs = message
        .inputs
        .into_iter()
        .map(input_from_proto)
        .collect::<Result<BTreeSet<_>, _>>()?;
    Ok(Task {
        id: TaskId(message.id),
        name: message.name,
        triggers,
        conditions,
        actions,
        mode: mode_from_proto(message.mode.ok_or(WireError::Missing("Task.mode"))?)?,
        missed: missed_from_proto(message.missed.ok_or(WireError::Missing("Task.missed"))?)?,
        inputs,
    })
}

// ------------------------------------------------------------------ triggers

fn trigger_to_proto(t: &Trigger) -> pb::Trigger {
    use trigger::Kind;
    let kind = match t {
        Trigger::Place { place, transition } => Kind::Place(pb::PlaceTransition {
            place: place.0.clone(),
            transition: transition_to_proto(*transition).into(),
        }),
        Trigger::Signal {
            path,
            change,
            hold_ms,
        } => Kind::Signal(trigger::Signal {
            path: path.clone(),
            change: Some(change_to_proto(change)),
            hold_ms: *hold_ms,
        }),
        Trigger::Property {
            device,
            property,
            change,
            hold_ms,
        } => Kind::Property(trigger::Property {
            device: device.0.clone(),
            property: Some(property_to_proto(*property)),
            change: Some(change_to_proto(change)),
            hold_ms: *hold_ms,
        }),
        Trigger::Time { at, weekdays } => Kind::Time(trigger::Time {
            at: Some(clock_to_proto(*at)),
            weekdays: weekdays_to_proto(*weekdays),
        }),
        Trigger::Sun {
            event,
            offset_min,
            place,
            weekdays,
        } => Kind::Sun(trigger::Sun {
            event: sun_to_proto(*event),
            offset_min: *offset_min,
            place: place.0.clone(),
            weekdays: weekdays_to_proto(*weekdays),
        }),
        Trigger::Vehicle(event) => Kind::Vehicle(vehicle_event_to_proto(*event).into()),
        Trigger::Manual => Kind::Manual(trigger::Manual {}),
    };
    pb::Trigger { kind: Some(kind) }
}

fn trigger_from_proto(message: pb::Trigger) -> Result<Trigger, WireError> {
    use trigger::Kind;
    Ok(
        match message.kind.ok_or(WireError::Missing("Trigger.kind"))? {
            Kind::Place(p) => Trigger::Place {
                place: place_id(p.place, "PlaceTransition.place")?,
                transition: transition_from_proto(p.transition)?,
            },
            Kind::Signal(s) => Trigger::Signal {
                path: bounded_id(s.path, "Trigger.Signal.path")?,
                change: change_from_proto(s.change, "Trigger.Signal.change")?,
                hold_ms: s.hold_ms,
            },
            Kind::Property(p) => Trigger::Property {
                device: device_id(p.device, "Trigger.Property.device")?,
                property: property_from_proto(p.property, "Trigger.Property.property")?,
                change: change_from_proto(p.change, "Trigger.Property.change")?,
                hold_ms: p.hold_ms,
            },
            Kind::Time(t) => Trigger::Time {
                at: clock_from_proto(t.at)?,
                weekdays: weekdays_from_proto(t.weekdays, "Trigger.Time.weekdays")?,
            },
            Kind::Sun(s) => Trigger::Sun {
                event: sun_from_proto(s.event)?,
                offset_min: sun_offset(s.offset_min)?,
                place: place_id(s.place, "Trigger.Sun.place")?,
                weekdays: weekdays_from_proto(s.weekdays, "Trigger.Sun.weekdays")?,
            },
            Kind::Vehicle(event) => Trigger::Vehicle(vehicle_event_from_proto(event)?),
            Kind::Manual(_) => Trigger::Manual,
        },
    )
}

// ------------------------------------------------------------------ conditions

/// What a task has used of its node limits so far while decoding.
#[derive(Default)]
struct Budget {
    conditions: usize,
    actions: usize,
}

fn condition_to_proto(c: &Condition) -> pb::Condition {
    use condition::Kind;
    let list = |cs: &[Condition]| condition::List {
        conditions: cs.iter().map(condition_to_proto).collect(),
    };
    let kind = match c {
        Condition::All(cs) => Kind::All(list(cs)),
        Condition::Any(cs) => Kind::Any(list(cs)),
        Condition::Not(inner) => Kind::Not(Box::new(condition_to_proto(inner))),
        Condition::Signal { path, test } => Kind::Signal(condition::Signal {
            path: path.clone(),
            test: Some(test_to_proto(test)),
        }),
        Condition::Property {
            device,
            property,
            test,
        } => Kind::Property(condition::Property {
            device: device.0.clone(),
            property: Some(property_to_proto(*property)),
            test: Some(test_to_proto(test)),
        }),
        Condition::TimeWindow {
            after,
            before,
            weekdays,
        } => Kind::TimeWindow(condition::TimeWindow {
            after: after.as_ref().map(day_time_to_proto),
            before: before.as_ref().map(day_time_to_proto),
            weekdays: weekdays_to_proto(*weekdays),
        }),
        Condition::Place { place, inside } => Kind::Place(condition::Place {
            place: place.0.clone(),
            inside: *inside,
        }),
        Condition::Vehicle(event) => Kind::Vehicle(vehicle_event_to_proto(*event).into()),
    };
    pb::Condition { kind: Some(kind) }
}

/// A list of conditions at nesting level `depth` (the task's own are at 1).
fn conditions_from_proto(
    list: Vec<pb::Condition>,
    depth: usize,
    budget: &mut Budget,
) -> Result<Vec<Condition>, WireError> {
    // Refuse an oversized list before allocating for it.
    if list.len() > MAX_CONDITION_NODES.saturating_sub(budget.conditions) {
        return Err(WireError::TooLarge("conditions"));
    }
    list.into_iter()
        .map(|c| condition_from_proto(c, depth, budget))
        .collect()
}

fn condition_from_proto(
    message: pb::Condition,
    depth: usize,
    budget: &mut Budget,
) -> Result<Condition, WireError> {
    use condition::Kind;
    budget.conditions += 1;
    if budget.conditions > MAX_CONDITION_NODES {
        return Err(WireError::TooLarge("conditions"));
    }
    if depth > MAX_NESTING {
        return Err(WireError::TooLarge("nesting"));
    }
    Ok(
        match message.kind.ok_or(WireError::Missing("Condition.kind"))? {
            Kind::All(list) => {
                Condition::All(conditions_from_proto(list.conditions, depth + 1, budget)?)
            }
            Kind::Any(list) => {
                Condition::Any(conditions_from_proto(list.conditions, depth + 1, budget)?)
            }
            Kind::Not(inner) => {
                Condition::Not(Box::new(condition_from_proto(*inner, depth + 1, budget)?))
            }
            Kind::Signal(s) => Condition::Signal {
                path: bounded_id(s.path, "Condition.Signal.path")?,
                test: test_from_proto(s.test, "Condition.Signal.test")?,
            },
            Kind::Property(p) => Condition::Property {
                device: device_id(p.device, "Condition.Property.device")?,
                property: property_from_proto(p.property, "Condition.Property.property")?,
                test: test_from_proto(p.test, "Condition.Property.test")?,
            },
            Kind::TimeWindow(w) => Condition::TimeWindow {
                after: w.after.map(day_time_from_proto).transpose()?,
                before: w.before.map(day_time_from_proto).transpose()?,
                weekdays: weekdays_from_proto(w.weekdays, "Condition.TimeWindow.weekdays")?,
            },
            Kind::Place(p) => Condition::Place {
                place: place_id(p.place, "Condition.Place.place")?,
                inside: p.inside,
            },
            Kind::Vehicle(event) => Condition::Vehicle(vehicle_event_from_proto(event)?),
        },
    )
}

// ------------------------------------------------------------------ actions

/// A task's vehicle command in its protobuf form.
pub fn vehicle_command_to_proto(command: &VehicleCommand) -> action::VehicleCommand {
    use action::vehicle_command::{self as vc, Kind};
    let kind = match command {
        VehicleCommand::Lock => Kind::Lock(vc::Lock {}),
        VehicleCommand::Unlock => Kind::Unlock(vc::Unlock {}),
        VehicleCommand::Climate { on, target_celsius } => Kind::Climate(vc::Climate {
            on: *on,
            target_celsius: *target_celsius,
        }),
        VehicleCommand::Window { percent_open } => Kind::Window(vc::Window {
            percent_open: u32::from(*percent_open),
        }),
        VehicleCommand::FlashHonk { flash, honk } => Kind::FlashHonk(vc::FlashHonk {
            flash: *flash,
            honk: *honk,
        }),
    };
    action::VehicleCommand { kind: Some(kind) }
}

/// The vehicle command `message` holds.
pub fn vehicle_command_from_proto(
    message: action::VehicleCommand,
) -> Result<VehicleCommand, WireError> {
    use action::vehicle_command::Kind;
    Ok(
        match message
            .kind
            .ok_or(WireError::Missing("VehicleCommand.kind"))?
        {
            Kind::Lock(_) => VehicleCommand::Lock,
            Kind::Unlock(_) => VehicleCommand::Unlock,
            Kind::Climate(c) => VehicleCommand::Climate {
                on: c.on,
                target_celsius: match c.target_celsius {
                    Some(t) if !t.is_finite() => {
                        return Err(WireError::NotFinite("Climate.target_celsius"));
                    }
                    t => t,
                },
            },
            Kind::Window(w) => VehicleCommand::Window {
                percent_open: u8::try_from(w.percent_open)
                    .map_err(|_| WireError::OutOfRange("Window.percent_open"))?,
            },
            Kind::FlashHonk(f) => VehicleCommand::FlashHonk {
                flash: f.flash,
                honk: f.honk,
            },
        },
    )
}

fn app_intent_to_proto(intent: &AppIntent) -> pb::AppIntent {
    use pb::app_intent::{Kind, Navigate, Notify};
    let kind = match intent {
        AppIntent::Navigate { destination } => Kind::Navigate(Navigate {
            destination: destination.0.clone(),
        }),
        AppIntent::Notify {
            recipients,
            message,
        } => Kind::Notify(Notify {
            recipients: recipients_to_proto(*recipients),
            message: message.clone(),
        }),
    };
    pb::AppIntent { kind: Some(kind) }
}

fn app_intent_from_proto(message: pb::AppIntent) -> Result<AppIntent, WireError> {
    use pb::app_intent::Kind;
    Ok(
        match message.kind.ok_or(WireError::Missing("AppIntent.kind"))? {
            Kind::Navigate(n) => AppIntent::Navigate {
                destination: place_id(n.destination, "Navigate.destination")?,
            },
            Kind::Notify(n) => {
                if n.message.len() > MAX_MESSAGE_BYTES {
                    return Err(WireError::TooLarge("Notify.message"));
                }
                AppIntent::Notify {
                    recipients: recipients_from_proto(n.recipients)?,
                    message: n.message,
                }
            }
        },
    )
}

fn action_to_proto(a: &Action) -> pb::Action {
    use action::Kind;
    let kind = match a {
        Action::SetProperty {
            device,
            property,
            value,
        } => Kind::SetProperty(action::SetProperty {
            device: device.0.clone(),
            property: Some(property_to_proto(*property)),
            value: Some(value_to_proto(value)),
        }),
        Action::DeviceAction {
            device,
            action,
            arguments,
        } => Kind::DeviceAction(action::DeviceAction {
            device: device.0.clone(),
            action: Some(device_action_to_proto(*action)),
            arguments: arguments.iter().map(value_to_proto).collect(),
        }),
        Action::Vehicle(command) => Kind::Vehicle(vehicle_command_to_proto(command)),
        Action::App(intent) => Kind::App(app_intent_to_proto(intent)),
        Action::Delay { ms } => Kind::Delay(action::Delay { ms: *ms }),
        Action::Choose {
            branches,
            otherwise,
        } => Kind::Choose(action::Choose {
            branches: branches
                .iter()
                .map(|b| action::Branch {
                    conditions: b.conditions.iter().map(condition_to_proto).collect(),
                    actions: b.actions.iter().map(action_to_proto).collect(),
                })
                .collect(),
            otherwise: otherwise.iter().map(action_to_proto).collect(),
        }),
    };
    pb::Action { kind: Some(kind) }
}

/// A list of actions at nesting level `depth` (the task's own are at 1).
fn actions_from_proto(
    list: Vec<pb::Action>,
    depth: usize,
    budget: &mut Budget,
) -> Result<Vec<Action>, WireError> {
    if depth > MAX_NESTING {
        return Err(WireError::TooLarge("nesting"));
    }
    if list.len() > MAX_ACTION_NODES.saturating_sub(budget.actions) {
        return Err(WireError::TooLarge("actions"));
    }
    list.into_iter()
        .map(|a| action_from_proto(a, depth, budget))
        .collect()
}

fn action_from_proto(
    message: pb::Action,
    depth: usize,
    budget: &mut Budget,
) -> Result<Action, WireError> {
    use action::Kind;
    budget.actions += 1;
    if budget.actions > MAX_ACTION_NODES {
        return Err(WireError::TooLarge("actions"));
    }
    Ok(
        match message.kind.ok_or(WireError::Missing("Action.kind"))? {
            Kind::SetProperty(s) => Action::SetProperty {
                device: device_id(s.device, "SetProperty.device")?,
                property: property_from_proto(s.property, "SetProperty.property")?,
                value: value_from_proto(s.value.ok_or(WireError::Missing("SetProperty.value"))?)?,
            },
            Kind::DeviceAction(d) => {
                if d.arguments.len() > MAX_ARGUMENTS {
                    return Err(WireError::TooLarge("DeviceAction.arguments"));
                }
                Action::DeviceAction {
                    device: device_id(d.device, "DeviceAction.device")?,
                    action: device_action_from_proto(d.action, "DeviceAction.action")?,
                    arguments: d
                        .arguments
                        .into_iter()
                        .map(value_from_proto)
                        .collect::<Result<_, _>>()?,
                }
            }
            Kind::Vehicle(command) => Action::Vehicle(vehicle_command_from_proto(command)?),
            Kind::App(intent) => Action::App(app_intent_from_proto(intent)?),
            Kind::Delay(d) => Action::Delay { ms: d.ms },
            Kind::Choose(c) => {
                if c.branches.len() > MAX_BRANCHES {
                    return Err(WireError::TooLarge("Choose.branches"));
                }
                let mut branches = Vec::with_capacity(c.branches.len());
                for b in c.branches {
                    branches.push(Branch {
                        conditions: conditions_from_proto(b.conditions, depth + 1, budget)?,
                        actions: actions_from_proto(b.actions, depth + 1, budget)?,
                    });
                }
                Action::Choose {
                    branches,
                    otherwise: actions_from_proto(c.otherwise, depth + 1, budget)?,
                }
            }
        },
    )
}
