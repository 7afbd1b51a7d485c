//! The dispatch index: tasks by what they listen to, so an event touches
//! only the tasks that care (issue 5, item 2). Every lookup is a hash of the
//! event's key; the number of unrelated tasks does not enter.

use std::collections::HashMap;

use crate::model::{DeviceId, PlaceId, PropertyId, Task, TaskId, Trigger, VehicleEvent};

/// A task and the index of one of its triggers.
pub(crate) type Slot = (TaskId, u16);

#[derive(Debug, Default)]
pub(crate) struct Index {
    signals: HashMap<String, Vec<Slot>>,
    properties: HashMap<DeviceId, HashMap<PropertyId, Vec<Slot>>>,
    places: HashMap<PlaceId, Vec<Slot>>,
    vehicle: HashMap<VehicleEvent, Vec<Slot>>,
}

/// Inserts keeping the list sorted, so tasks fire in id order.
fn insert(list: &mut Vec<Slot>, slot: Slot) {
    if let Err(at) = list.binary_search(&slot) {
        list.insert(at, slot);
    }
}

fn remove(list: &mut Vec<Slot>, task: TaskId) {
    list.retain(|(t, _)| *t != task);
}

impl Index {
    pub(crate) fn add(&mut self, task: &Task) {
        for (i, trigger) in task.triggers.iter().enumerate() {
            let slot = (task.id, i as u16);
            match trigger {
                Trigger::Signal { path, .. } => {
                    insert(self.signals.entry(path.clone()).or_default(), slot);
                }
                Trigger::Property {
                    device, property, ..
                } => insert(
                    self.properties
                        .entry(device.clone())
                        .or_default()
                        .entry(*property)
                        .or_default(),
                    slot,
                ),
                Trigger::Place { place, .. } => {
                    insert(self.places.entry(place.clone()).or_default(), slot);
                }
                Trigger::Vehicle(event) => insert(self.vehicle.entry(*event).or_default(), slot),
                // Time triggers live in the timer queue; manual runs name
                // the task.
                Trigger::Time { .. } | Trigger::Sun { .. } | Trigger::Manual => {}
            }
        }
    }

    pub(crate) fn remove(&mut self, task: &Task) {
        for trigger in &task.triggers {
            match trigger {
                Trigger::Signal { path, .. } => {
                    if let Some(list) = self.signals.get_mut(path.as_str()) {
                        remove(list, task.id);
                        if list.is_empty() {
                            self.signals.remove(path.as_str());
                        }
                    }
                }
                Trigger::Property {
                    device, property, ..
                } => {
                    if let Some(props) = self.properties.get_mut(device) {
                        if let Some(list) = props.get_mut(property) {
                            remove(list, task.id);
                            if list.is_empty() {
                                props.remove(property);
                            }
                        }
                        if props.is_empty() {
                            self.properties.remove(device);
                        }
                    }
                }
                Trigger::Place { place, .. } => {
                    if let Some(list) = self.places.get_mut(place) {
                        remove(list, task.id);
                        if list.is_empty() {
                            self.places.remove(place);
                        }
                    }
                }
                Trigger::Vehicle(event) => {
                    if let Some(list) = self.vehicle.get_mut(event) {
                        remove(list, task.id);
                        if list.is_empty() {
                            self.vehicle.remove(event);
                        }
                    }
                }
                Trigger::Time { .. } | Trigger::Sun { .. } | Trigger::Manual => {}
            }
        }
    }

    pub(crate) fn signal(&self, path: &str) -> &[Slot] {
        self.signals.get(path).map_or(&[], Vec::as_slice)
    }

    pub(crate) fn property(&self, device: &DeviceId, property: PropertyId) -> &[Slot] {
        self.properties
            .get(device)
            .and_then(|p| p.get(&property))
            .map_or(&[], Vec::as_slice)
    }

    /// Every property trigger on `device`.
    pub(crate) fn device(&self, device: &DeviceId) -> impl Iterator<Item = &Slot> {
        self.properties
            .get(device)
            .into_iter()
            .flat_map(|p| p.values().flatten())
    }

    pub(crate) fn place(&self, place: &PlaceId) -> &[Slot] {
        self.places.get(place).map_or(&[], Vec::as_slice)
    }

    pub(crate) fn vehicle(&self, event: VehicleEvent) -> &[Slot] {
        self.vehicle.get(&event).map_or(&[], Vec::as_slice)
    }
}
