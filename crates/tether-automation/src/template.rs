//! Sharing a task with another account (R22): a [`Template`].
//!
//! The share page shows the sharer's nickname and the task; the task keeps
//! nothing that identifies the sharer's places or devices. A template
//! **keeps**: the sharer's nickname, the task's name (as the sharer typed
//! it; the node's `share` lets the sharer replace it), its structure (triggers, conditions, actions and their order, mode,
//! missed-time policy), signal paths, property and action iids, values and
//! thresholds, times, weekdays and sun offsets, vehicle commands, and the
//! audience of a notification (owner, or owner and authorised users: roles
//! relative to whoever installs it). It **replaces by a slot**:
//!
//! - every place ([`PlaceId`]: place triggers and conditions, sun triggers
//!   and time-window bounds, navigation destinations, inputs) by
//!   `place-1`, `place-2`, … in order of first appearance; a
//!   [`PlaceSlot`] says what the task does with it. A place's shape never
//!   was in a task (R10, R21).
//! - every device ([`DeviceId`]) by `device-1`, …; a [`DeviceSlot`] lists
//!   the properties (with their kinds, when known) and actions the task
//!   uses of it, never its id or its name.
//! - every notification text by `message-1`, …: free text may name people
//!   and places, so the recipient writes their own.
//!
//! It **drops** the task's id (the recipient's head unit assigns one).
//!
//! The recipient then [`Template::bind`]s every slot to a place, a device
//! and a text of their own ([`Binding`]) and installs the resulting task
//! like any other: the engine validates it against the recipient's
//! catalogue, places and permissions. The wire form is
//! [`crate::wire::encode_template`] (`tether.v1.TaskTemplate`).

use std::collections::{BTreeMap, BTreeSet};

use crate::catalogue::{Catalogue, DeviceSpec};
use crate::model::{DeviceActionId, DeviceId, PlaceId, PropertyId, Task, ValueKind};
use crate::{MAX_ACTION_NODES, MAX_CONDITION_NODES, MAX_TRIGGERS};

mod rename;

use rename::{Binder, DeviceCollector, Slotter, rename_task};

/// Longest sharer's nickname, bytes of UTF-8 (as in a share invite, §17).
pub const MAX_NICKNAME_BYTES: usize = 64;
/// Most slots of each kind in a template (and properties or actions per
/// device slot): as many places or devices as a task the wire accepts can
/// name — one per trigger, two per condition (a time window's bounds), one
/// per action and one per declared input.
pub const MAX_SLOTS: usize =
    MAX_TRIGGERS + 2 * MAX_CONDITION_NODES + MAX_ACTION_NODES + crate::wire::MAX_INPUTS;

/// A place the template's task names, by slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaceSlot {
    /// `place-1`, `place-2`, …
    pub slot: String,
    /// Entered, left or tested: needs a shape on the head unit.
    pub geofence: bool,
    /// Sunrise or sunset is computed there: needs a shape.
    pub sun: bool,
    /// A navigation destination.
    pub destination: bool,
}

/// How a template's task uses a property of a device slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PropertyUse {
    /// Its kind: from the sharer's catalogue, else from a value the task
    /// writes or compares; `None` when neither tells.
    pub kind: Option<ValueKind>,
    /// Read by a trigger or a condition.
    pub read: bool,
    /// Written by an action.
    pub write: bool,
}

/// A device the template's task names, by slot: what it must offer, not
/// which device it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSlot {
    /// `device-1`, `device-2`, …
    pub slot: String,
    /// The properties the task uses.
    pub properties: BTreeMap<PropertyId, PropertyUse>,
    /// The actions the task runs, with the number of arguments it gives.
    pub actions: BTreeMap<DeviceActionId, usize>,
}

impl DeviceSlot {
    /// Whether a device described by `spec` offers everything the task
    /// uses of this slot: each property with a compatible kind, readable
    /// and writable as used, each action with that many arguments. For a
    /// picker of the recipient's devices.
    pub fn fits(&self, spec: &DeviceSpec) -> bool {
        let properties = self.properties.iter().all(|(id, used)| {
            spec.properties.get(id).is_some_and(|p| {
                used.kind.is_none_or(|k| p.kind.accepts(k))
                    && (!used.read || p.readable)
                    && (!used.write || p.writable)
            })
        });
        let actions = self
            .actions
            .iter()
            .all(|(id, n)| spec.actions.get(id) == Some(n));
        properties && actions
    }
}

/// A task as shared (R22): see the module doc for what it keeps and what
/// it replaces.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    /// The sharer's nickname, at most [`MAX_NICKNAME_BYTES`].
    pub nickname: String,
    /// The task, id 0, with slot ids for places, devices and notification
    /// texts.
    pub task: Task,
    /// Its place slots, in order.
    pub places: Vec<PlaceSlot>,
    /// Its device slots, in order.
    pub devices: Vec<DeviceSlot>,
    /// Its message slots (`message-1`, …), in order.
    pub messages: Vec<String>,
}

/// The recipient's choices: a place, a device or a text of their own for
/// each slot of a template.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Binding {
    /// Place slot → the recipient's place.
    pub places: BTreeMap<String, PlaceId>,
    /// Device slot → the recipient's device.
    pub devices: BTreeMap<String, DeviceId>,
    /// Message slot → the recipient's notification text.
    pub messages: BTreeMap<String, String>,
}

/// Why a template cannot be bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// The binding gives nothing for a slot of the template (the
    /// recipient's to fix).
    #[error("slot `{0}` is not bound")]
    Unbound(String),
    /// The binding names a slot the template does not have (the
    /// recipient's to fix).
    #[error("the template has no slot `{0}`")]
    UnknownSlot(String),
    /// The template's task names a place, device or text that is not one
    /// of its slots: the template is malformed (the sender's fault).
    #[error("the template's task names `{0}`, which is not one of its slots")]
    NotASlot(String),
}

/// Every device `task` names: in a trigger, a condition, an action or an
/// input (the same walk that makes a template's device slots).
pub fn devices_named(task: &Task) -> std::collections::BTreeSet<DeviceId> {
    let mut collector = DeviceCollector::default();
    match rename_task(task, &mut collector) {
        Ok(_) => collector.devices,
        Err(never) => match never {},
    }
}

impl Template {
    /// The template of `task`, shared by `nickname`. Property kinds come
    /// from the values the task writes or compares; see
    /// [`Template::from_task_with`] to take them from a catalogue. A
    /// nickname longer than [`MAX_NICKNAME_BYTES`] is cut at a character
    /// boundary.
    pub fn from_task(task: &Task, nickname: &str) -> Template {
        Self::build(task, nickname, None)
    }

    /// As [`Template::from_task`], with property kinds from the sharer's
    /// `catalogue` where it lists them.
    pub fn from_task_with(task: &Task, nickname: &str, catalogue: &Catalogue) -> Template {
        Self::build(task, nickname, Some(catalogue))
    }

    fn build(task: &Task, nickname: &str, catalogue: Option<&Catalogue>) -> Template {
        let mut slotter = Slotter {
            catalogue,
            places: Vec::new(),
            devices: Vec::new(),
            messages: 0,
        };
        let Ok(slotted) = rename_task(task, &mut slotter);
        let mut end = nickname.len().min(MAX_NICKNAME_BYTES);
        while !nickname.is_char_boundary(end) {
            end -= 1;
        }
        Template {
            nickname: nickname[..end].to_owned(),
            task: slotted,
            places: slotter.places.into_iter().map(|(_, slot)| slot).collect(),
            devices: slotter.devices.into_iter().map(|(_, slot)| slot).collect(),
            messages: (1..=slotter.messages)
                .map(|n| format!("message-{n}"))
                .collect(),
        }
    }

    /// The recipient's task: every slot replaced by what `binding` maps it
    /// to, with [`TaskId`](crate::TaskId) 0 (the installer assigns the id). The binding
    /// must map every slot of the template and nothing else. The result
    /// still has to pass [`crate::Engine::validate`] on the recipient's
    /// node.
    pub fn bind(&self, binding: &Binding) -> Result<Task, TemplateError> {
        let places: BTreeSet<&str> = self.places.iter().map(|p| p.slot.as_str()).collect();
        let devices: BTreeSet<&str> = self.devices.iter().map(|d| d.slot.as_str()).collect();
        let messages: BTreeSet<&str> = self.messages.iter().map(String::as_str).collect();
        for (slots, bound) in [
            (&places, keys(&binding.places)),
            (&devices, keys(&binding.devices)),
            (&messages, keys(&binding.messages)),
        ] {
            if let Some(slot) = slots.iter().find(|s| !bound.contains(**s)) {
                return Err(TemplateError::Unbound((*slot).to_owned()));
            }
            if let Some(slot) = bound.iter().find(|s| !slots.contains(**s)) {
                return Err(TemplateError::UnknownSlot((*slot).to_owned()));
            }
        }
        rename_task(&self.task, &mut Binder { binding })
    }
}

fn keys<V>(map: &BTreeMap<String, V>) -> BTreeSet<&str> {
    map.keys().map(String::as_str).collect()
}
