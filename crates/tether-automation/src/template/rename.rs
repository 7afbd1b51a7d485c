//! Replacing the identifiers of a task one at a time, in a fixed order
//! (triggers, conditions, actions, inputs): the sharer's side gives each
//! place, device and notification text a slot ([`Slotter`]), the
//! recipient's side puts its own names in ([`Binder`]).

use std::collections::BTreeMap;

use super::{Binding, DeviceSlot, PlaceSlot, TemplateError};
use crate::catalogue::Catalogue;
use crate::model::{
    Action, AppIntent, Branch, Change, Condition, DayTime, DeviceActionId, DeviceId, Input,
    PlaceId, PropertyId, Task, TaskId, Test, Trigger, ValueKind,
};

/// What a task does with a place it names.
#[derive(Clone, Copy)]
pub(super) enum PlaceUse {
    Geofence,
    Sun,
    Destination,
}

/// What a task does with a device it names.
#[derive(Clone, Copy)]
pub(super) enum DeviceUse {
    Read(PropertyId, Option<ValueKind>),
    Write(PropertyId, ValueKind),
    Invoke(DeviceActionId, usize),
    /// Named by an input (its use shows elsewhere in the task).
    Input(PropertyId),
}

/// Replaces the identifiers of a task, one at a time, in a fixed order.
pub(super) trait Rename {
    type Error;
    fn place(&mut self, place: &PlaceId, used: PlaceUse) -> Result<PlaceId, Self::Error>;
    fn device(&mut self, device: &DeviceId, used: DeviceUse) -> Result<DeviceId, Self::Error>;
    fn message(&mut self, text: &str) -> Result<String, Self::Error>;
}

/// Sharer's side: gives each place, device and text a slot.
pub(super) struct Slotter<'a> {
    pub(super) catalogue: Option<&'a Catalogue>,
    pub(super) places: Vec<(PlaceId, PlaceSlot)>,
    pub(super) devices: Vec<(DeviceId, DeviceSlot)>,
    pub(super) messages: usize,
}

impl Rename for Slotter<'_> {
    type Error = std::convert::Infallible;

    fn place(&mut self, place: &PlaceId, used: PlaceUse) -> Result<PlaceId, Self::Error> {
        let index = match self.places.iter().position(|(p, _)| p == place) {
            Some(i) => i,
            None => {
                let slot = PlaceSlot {
                    slot: format!("place-{}", self.places.len() + 1),
                    geofence: false,
                    sun: false,
                    destination: false,
                };
                self.places.push((place.clone(), slot));
                self.places.len() - 1
            }
        };
        let slot = &mut self.places[index].1;
        match used {
            PlaceUse::Geofence => slot.geofence = true,
            PlaceUse::Sun => slot.sun = true,
            PlaceUse::Destination => slot.destination = true,
        }
        Ok(PlaceId(slot.slot.clone()))
    }

    fn device(&mut self, device: &DeviceId, used: DeviceUse) -> Result<DeviceId, Self::Error> {
        let index = match self.devices.iter().position(|(d, _)| d == device) {
            Some(i) => i,
            None => {
                let slot = DeviceSlot {
                    slot: format!("device-{}", self.devices.len() + 1),
                    properties: BTreeMap::new(),
                    actions: BTreeMap::new(),
                };
                self.devices.push((device.clone(), slot));
                self.devices.len() - 1
            }
        };
        let catalogue_kind = |property: &PropertyId| {
            self.catalogue
                .and_then(|c| c.device(device))
                .and_then(|spec| spec.properties.get(property))
                .map(|p| p.kind)
        };
        let (property, seen, read, write) = match used {
            DeviceUse::Read(p, kind) => (p, kind, true, false),
            DeviceUse::Write(p, kind) => (p, Some(kind), false, true),
            DeviceUse::Input(p) => (p, None, false, false),
            DeviceUse::Invoke(action, arguments) => {
                self.devices[index].1.actions.insert(action, arguments);
                return Ok(DeviceId(self.devices[index].1.slot.clone()));
            }
        };
        let known = catalogue_kind(&property);
        let slot = &mut self.devices[index].1;
        let entry = slot.properties.entry(property).or_default();
        entry.kind = known.or(entry.kind).or(seen);
        entry.read |= read;
        entry.write |= write;
        Ok(DeviceId(slot.slot.clone()))
    }

    fn message(&mut self, _text: &str) -> Result<String, Self::Error> {
        self.messages += 1;
        Ok(format!("message-{}", self.messages))
    }
}

/// Recipient's side: replaces each slot by the binding's choice.
pub(super) struct Binder<'a> {
    pub(super) binding: &'a Binding,
}

impl Rename for Binder<'_> {
    type Error = TemplateError;

    fn place(&mut self, place: &PlaceId, _: PlaceUse) -> Result<PlaceId, TemplateError> {
        self.binding
            .places
            .get(&place.0)
            .cloned()
            .ok_or_else(|| TemplateError::NotASlot(place.0.clone()))
    }

    fn device(&mut self, device: &DeviceId, _: DeviceUse) -> Result<DeviceId, TemplateError> {
        self.binding
            .devices
            .get(&device.0)
            .cloned()
            .ok_or_else(|| TemplateError::NotASlot(device.0.clone()))
    }

    fn message(&mut self, text: &str) -> Result<String, TemplateError> {
        self.binding
            .messages
            .get(text)
            .cloned()
            .ok_or_else(|| TemplateError::NotASlot(text.to_owned()))
    }
}

/// Collects the devices a task names, renaming nothing.
#[derive(Default)]
pub(super) struct DeviceCollector {
    pub(super) devices: std::collections::BTreeSet<DeviceId>,
}

impl Rename for DeviceCollector {
    type Error = std::convert::Infallible;

    fn place(&mut self, place: &PlaceId, _: PlaceUse) -> Result<PlaceId, Self::Error> {
        Ok(place.clone())
    }

    fn device(&mut self, device: &DeviceId, _: DeviceUse) -> Result<DeviceId, Self::Error> {
        self.devices.insert(device.clone());
        Ok(device.clone())
    }

    fn message(&mut self, text: &str) -> Result<String, Self::Error> {
        Ok(text.to_owned())
    }
}

pub(super) fn rename_task<R: Rename>(task: &Task, r: &mut R) -> Result<Task, R::Error> {
    Ok(Task {
        id: TaskId(0),
        name: task.name.clone(),
        triggers: task
            .triggers
            .iter()
            .map(|t| rename_trigger(t, r))
            .collect::<Result<_, _>>()?,
        conditions: rename_conditions(&task.conditions, r)?,
        actions: rename_actions(&task.actions, r)?,
        mode: task.mode,
        missed: task.missed,
        inputs: task
            .inputs
            .iter()
            .map(|i| rename_input(i, r))
            .collect::<Result<_, _>>()?,
    })
}

/// The kind a test shows, if it compares with a value.
fn test_kind(test: &Test) -> Option<ValueKind> {
    match test {
        Test::Equals(v) | Test::NotEquals(v) => Some(v.kind()),
        Test::Above(_) | Test::Below(_) | Test::Between { .. } => None,
    }
}

fn rename_trigger<R: Rename>(t: &Trigger, r: &mut R) -> Result<Trigger, R::Error> {
    Ok(match t {
        Trigger::Place { place, transition } => Trigger::Place {
            place: r.place(place, PlaceUse::Geofence)?,
            transition: *transition,
        },
        Trigger::Property {
            device,
            property,
            change,
            hold_ms,
        } => {
            let kind = match change {
                Change::Any => None,
                Change::Becomes(test) => test_kind(test),
            };
            Trigger::Property {
                device: r.device(device, DeviceUse::Read(*property, kind))?,
                property: *property,
                change: change.clone(),
                hold_ms: *hold_ms,
            }
        }
        Trigger::Sun {
            event,
            offset_min,
            place,
            weekdays,
        } => Trigger::Sun {
            event: *event,
            offset_min: *offset_min,
            place: r.place(place, PlaceUse::Sun)?,
            weekdays: *weekdays,
        },
        Trigger::Signal { .. } | Trigger::Time { .. } | Trigger::Vehicle(_) | Trigger::Manual => {
            t.clone()
        }
    })
}

fn rename_day_time<R: Rename>(t: &Option<DayTime>, r: &mut R) -> Result<Option<DayTime>, R::Error> {
    Ok(match t {
        Some(DayTime::Sun {
            event,
            offset_min,
            place,
        }) => Some(DayTime::Sun {
            event: *event,
            offset_min: *offset_min,
            place: r.place(place, PlaceUse::Sun)?,
        }),
        Some(DayTime::Clock(_)) | None => t.clone(),
    })
}

fn rename_conditions<R: Rename>(list: &[Condition], r: &mut R) -> Result<Vec<Condition>, R::Error> {
    list.iter().map(|c| rename_condition(c, r)).collect()
}

fn rename_condition<R: Rename>(c: &Condition, r: &mut R) -> Result<Condition, R::Error> {
    Ok(match c {
        Condition::All(cs) => Condition::All(rename_conditions(cs, r)?),
        Condition::Any(cs) => Condition::Any(rename_conditions(cs, r)?),
        Condition::Not(inner) => Condition::Not(Box::new(rename_condition(inner, r)?)),
        Condition::Property {
            device,
            property,
            test,
        } => Condition::Property {
            device: r.device(device, DeviceUse::Read(*property, test_kind(test)))?,
            property: *property,
            test: test.clone(),
        },
        Condition::TimeWindow {
            after,
            before,
            weekdays,
        } => Condition::TimeWindow {
            after: rename_day_time(after, r)?,
            before: rename_day_time(before, r)?,
            weekdays: *weekdays,
        },
        Condition::Place { place, inside } => Condition::Place {
            place: r.place(place, PlaceUse::Geofence)?,
            inside: *inside,
        },
        Condition::Signal { .. } | Condition::Vehicle(_) => c.clone(),
    })
}

fn rename_actions<R: Rename>(list: &[Action], r: &mut R) -> Result<Vec<Action>, R::Error> {
    list.iter().map(|a| rename_action(a, r)).collect()
}

fn rename_action<R: Rename>(a: &Action, r: &mut R) -> Result<Action, R::Error> {
    Ok(match a {
        Action::SetProperty {
            device,
            property,
            value,
        } => Action::SetProperty {
            device: r.device(device, DeviceUse::Write(*property, value.kind()))?,
            property: *property,
            value: value.clone(),
        },
        Action::DeviceAction {
            device,
            action,
            arguments,
        } => Action::DeviceAction {
            device: r.device(device, DeviceUse::Invoke(*action, arguments.len()))?,
            action: *action,
            arguments: arguments.clone(),
        },
        Action::App(AppIntent::Navigate { destination }) => Action::App(AppIntent::Navigate {
            destination: r.place(destination, PlaceUse::Destination)?,
        }),
        Action::App(AppIntent::Notify {
            recipients,
            message,
        }) => Action::App(AppIntent::Notify {
            recipients: *recipients,
            message: r.message(message)?,
        }),
        Action::Choose {
            branches,
            otherwise,
        } => Action::Choose {
            branches: branches
                .iter()
                .map(|b| {
                    Ok(Branch {
                        conditions: rename_conditions(&b.conditions, r)?,
                        actions: rename_actions(&b.actions, r)?,
                    })
                })
                .collect::<Result<_, _>>()?,
            otherwise: rename_actions(otherwise, r)?,
        },
        Action::Vehicle(_) | Action::Delay { .. } => a.clone(),
    })
}

fn rename_input<R: Rename>(input: &Input, r: &mut R) -> Result<Input, R::Error> {
    Ok(match input {
        Input::Place(place) => Input::Place(r.place(place, PlaceUse::Geofence)?),
        Input::Property(device, property) => {
            Input::Property(r.device(device, DeviceUse::Input(*property))?, *property)
        }
        Input::Signal(_) | Input::Vehicle(_) => input.clone(),
    })
}
