//! Templates (R22, SPEC §18.2) and bindings in their protobuf form
//! (`tether.v1.TaskTemplate`, `tether.v1.TemplateBinding`), both ways and
//! exact. The decoders bound every list by [`MAX_SLOTS`] and every slot id
//! by [`super::MAX_ID_BYTES`], and refuse a slot listed twice.

use std::collections::{BTreeMap, BTreeSet};

use prost::Message;
use tether_proto::v1 as pb;
use tether_proto::v1::{device_slot, template_binding};

use super::{
    MAX_ARGUMENTS, WireError, bounded_id, device_action_from_proto, device_action_to_proto,
    enumeration, property_from_proto, property_to_proto, task_from_proto, task_to_proto,
};
use crate::MAX_MESSAGE_BYTES;
use crate::model::{DeviceId, PlaceId, ValueKind};
use crate::template::{
    Binding, DeviceSlot, MAX_NICKNAME_BYTES, MAX_SLOTS, PlaceSlot, PropertyUse, Template,
};

/// The protobuf bytes of `template`.
pub fn encode_template(template: &Template) -> Vec<u8> {
    template_to_proto(template).encode_to_vec()
}

/// The template in `bytes` (a `tether.v1.TaskTemplate`), checked as
/// [`template_from_proto`] does.
pub fn decode_template(bytes: &[u8]) -> Result<Template, WireError> {
    let message = pb::TaskTemplate::decode(bytes).map_err(|e| WireError::Decode(e.to_string()))?;
    template_from_proto(message)
}

/// The protobuf form of `template`.
pub fn template_to_proto(template: &Template) -> pb::TaskTemplate {
    pb::TaskTemplate {
        nickname: template.nickname.clone(),
        task: Some(task_to_proto(&template.task)),
        places: template
            .places
            .iter()
            .map(|p| pb::PlaceSlot {
                slot: p.slot.clone(),
                geofence: p.geofence,
                sun: p.sun,
                destination: p.destination,
            })
            .collect(),
        devices: template.devices.iter().map(device_slot_to_proto).collect(),
        messages: template.messages.clone(),
    }
}

/// The template `message` describes: its task checked as
/// [`super::task_from_proto`] does, the nickname at most
/// [`MAX_NICKNAME_BYTES`], at most [`MAX_SLOTS`] slots of each kind, each
/// once. Whether the task names only its slots is checked by
/// [`Template::bind`].
pub fn template_from_proto(message: pb::TaskTemplate) -> Result<Template, WireError> {
    if message.nickname.len() > MAX_NICKNAME_BYTES {
        return Err(WireError::TooLarge("TaskTemplate.nickname"));
    }
    if message.places.len() > MAX_SLOTS {
        return Err(WireError::TooLarge("TaskTemplate.places"));
    }
    if message.devices.len() > MAX_SLOTS {
        return Err(WireError::TooLarge("TaskTemplate.devices"));
    }
    if message.messages.len() > MAX_SLOTS {
        return Err(WireError::TooLarge("TaskTemplate.messages"));
    }
    let task = task_from_proto(
        message
            .task
            .ok_or(WireError::Missing("TaskTemplate.task"))?,
    )?;
    let mut seen = BTreeSet::new();
    let mut places = Vec::with_capacity(message.places.len());
    for p in message.places {
        let slot = unique(p.slot, "PlaceSlot.slot", &mut seen)?;
        places.push(PlaceSlot {
            slot,
            geofence: p.geofence,
            sun: p.sun,
            destination: p.destination,
        });
    }
    let mut seen = BTreeSet::new();
    let mut devices = Vec::with_capacity(message.devices.len());
    for d in message.devices {
        devices.push(device_slot_from_proto(d, &mut seen)?);
    }
    let mut seen = BTreeSet::new();
    let messages = message
        .messages
        .into_iter()
        .map(|m| unique(m, "TaskTemplate.messages", &mut seen))
        .collect::<Result<_, _>>()?;
    Ok(Template {
        nickname: message.nickname,
        task,
        places,
        devices,
        messages,
    })
}

/// The protobuf form of `binding`.
pub fn binding_to_proto(binding: &Binding) -> pb::TemplateBinding {
    fn entries<'a>(
        map: impl Iterator<Item = (&'a String, &'a str)>,
    ) -> Vec<template_binding::Entry> {
        map.map(|(slot, value)| template_binding::Entry {
            slot: slot.clone(),
            value: value.to_owned(),
        })
        .collect()
    }
    pb::TemplateBinding {
        places: entries(binding.places.iter().map(|(s, p)| (s, p.0.as_str()))),
        devices: entries(binding.devices.iter().map(|(s, d)| (s, d.0.as_str()))),
        messages: entries(binding.messages.iter().map(|(s, m)| (s, m.as_str()))),
    }
}

/// The binding `message` describes: at most [`MAX_SLOTS`] entries of each
/// kind, each slot once; places and devices at most
/// [`super::MAX_ID_BYTES`], texts at most [`MAX_MESSAGE_BYTES`].
pub fn binding_from_proto(message: pb::TemplateBinding) -> Result<Binding, WireError> {
    Ok(Binding {
        places: entries_from_proto(message.places, "TemplateBinding.places", |v| {
            bounded_id(v, "TemplateBinding.places").map(PlaceId)
        })?,
        devices: entries_from_proto(message.devices, "TemplateBinding.devices", |v| {
            bounded_id(v, "TemplateBinding.devices").map(DeviceId)
        })?,
        messages: entries_from_proto(message.messages, "TemplateBinding.messages", |v| {
            if v.len() > MAX_MESSAGE_BYTES {
                Err(WireError::TooLarge("TemplateBinding.messages"))
            } else {
                Ok(v)
            }
        })?,
    })
}

fn entries_from_proto<V>(
    entries: Vec<template_binding::Entry>,
    field: &'static str,
    value: impl Fn(String) -> Result<V, WireError>,
) -> Result<BTreeMap<String, V>, WireError> {
    if entries.len() > MAX_SLOTS {
        return Err(WireError::TooLarge(field));
    }
    let mut map = BTreeMap::new();
    for e in entries {
        let slot = bounded_id(e.slot, field)?;
        if map.contains_key(&slot) {
            return Err(WireError::Duplicate(field));
        }
        map.insert(slot, value(e.value)?);
    }
    Ok(map)
}

/// `slot`, bounded, if not yet in `seen`.
fn unique(
    slot: String,
    field: &'static str,
    seen: &mut BTreeSet<String>,
) -> Result<String, WireError> {
    let slot = bounded_id(slot, field)?;
    if seen.insert(slot.clone()) {
        Ok(slot)
    } else {
        Err(WireError::Duplicate(field))
    }
}

fn kind_to_proto(kind: Option<ValueKind>) -> pb::ValueKind {
    match kind {
        None => pb::ValueKind::Unspecified,
        Some(ValueKind::Bool) => pb::ValueKind::Bool,
        Some(ValueKind::Int) => pb::ValueKind::Int,
        Some(ValueKind::Double) => pb::ValueKind::Double,
        Some(ValueKind::Text) => pb::ValueKind::Text,
    }
}

fn kind_from_proto(value: i32) -> Result<Option<ValueKind>, WireError> {
    Ok(
        match enumeration::<pb::ValueKind>(value, "PropertyUse.kind")? {
            pb::ValueKind::Unspecified => None,
            pb::ValueKind::Bool => Some(ValueKind::Bool),
            pb::ValueKind::Int => Some(ValueKind::Int),
            pb::ValueKind::Double => Some(ValueKind::Double),
            pb::ValueKind::Text => Some(ValueKind::Text),
        },
    )
}

fn device_slot_to_proto(slot: &DeviceSlot) -> pb::DeviceSlot {
    pb::DeviceSlot {
        slot: slot.slot.clone(),
        properties: slot
            .properties
            .iter()
            .map(|(id, used)| device_slot::PropertyUse {
                property: Some(property_to_proto(*id)),
                kind: kind_to_proto(used.kind).into(),
                read: used.read,
                write: used.write,
            })
            .collect(),
        actions: slot
            .actions
            .iter()
            .map(|(id, arguments)| device_slot::ActionUse {
                action: Some(device_action_to_proto(*id)),
                arguments: u32::try_from(*arguments).unwrap_or(u32::MAX),
            })
            .collect(),
    }
}

fn device_slot_from_proto(
    message: pb::DeviceSlot,
    seen: &mut BTreeSet<String>,
) -> Result<DeviceSlot, WireError> {
    let slot = unique(message.slot, "DeviceSlot.slot", seen)?;
    if message.properties.len() > MAX_SLOTS {
        return Err(WireError::TooLarge("DeviceSlot.properties"));
    }
    if message.actions.len() > MAX_SLOTS {
        return Err(WireError::TooLarge("DeviceSlot.actions"));
    }
    let mut properties = BTreeMap::new();
    for p in message.properties {
        let id = property_from_proto(p.property, "PropertyUse.property")?;
        let used = PropertyUse {
            kind: kind_from_proto(p.kind)?,
            read: p.read,
            write: p.write,
        };
        if properties.insert(id, used).is_some() {
            return Err(WireError::Duplicate("DeviceSlot.properties"));
        }
    }
    let mut actions = BTreeMap::new();
    for a in message.actions {
        let id = device_action_from_proto(a.action, "ActionUse.action")?;
        let arguments = usize::try_from(a.arguments)
            .ok()
            .filter(|n| *n <= MAX_ARGUMENTS)
            .ok_or(WireError::OutOfRange("ActionUse.arguments"))?;
        if actions.insert(id, arguments).is_some() {
            return Err(WireError::Duplicate("DeviceSlot.actions"));
        }
    }
    Ok(DeviceSlot {
        slot,
        properties,
        actions,
    })
}
