//! Data from the host: signals, properties, vehicle events, manual runs,
//! the local time's offset. (Fixes and place events are in `places.rs`.)

use super::{Delivery, Engine, Site};
use crate::error::EngineError;
use crate::model::{Change, DeviceId, PropertyId, TaskId, Trigger, Value, VehicleEvent};
use crate::trace::Cause;

use super::index::Slot;

impl Engine {
    // -------------------------------------------------------------- data

    /// A vehicle signal's value. Fires the tasks whose trigger it meets
    /// (the first value after start only sets the state).
    pub fn handle_signal(&mut self, path: &str, value: Value, now_ms: u64) -> Delivery {
        let now = self.advance(now_ms);
        if self.config.site == Site::Hub && !self.config.car_data_to_home {
            return Delivery::WithheldByConsent;
        }
        if !self.signal_refs.contains_key(path) {
            return Delivery::NotSubscribed;
        }
        let previous = self.signal_values.insert(path.to_owned(), value.clone());
        let slots = self.index.signal(path).to_vec();
        self.on_value(&slots, previous.as_ref(), &value, now);
        Delivery::Delivered
    }

    /// A device property's value. As [`Engine::handle_signal`].
    pub fn handle_property(
        &mut self,
        device: &DeviceId,
        property: PropertyId,
        value: Value,
        now_ms: u64,
    ) -> Delivery {
        let now = self.advance(now_ms);
        if !self
            .property_refs
            .get(device)
            .is_some_and(|p| p.contains_key(&property))
        {
            return Delivery::NotSubscribed;
        }
        let previous = self
            .property_values
            .entry(device.clone())
            .or_default()
            .insert(property, value.clone());
        let slots = self.index.property(device, property).to_vec();
        self.on_value(&slots, previous.as_ref(), &value, now);
        Delivery::Delivered
    }

    /// Applies a new value to the triggers in `slots`: fires edges, starts
    /// and cancels holds.
    fn on_value(&mut self, slots: &[Slot], previous: Option<&Value>, value: &Value, now: u64) {
        let mut fired: Vec<(TaskId, Cause)> = Vec::new();
        for &(task_id, trigger) in slots {
            let Some(entry) = self.tasks.get(&task_id) else {
                continue;
            };
            if !entry.enabled {
                continue;
            }
            let (cause, change, hold_ms) = match entry.task.triggers.get(usize::from(trigger)) {
                Some(Trigger::Signal {
                    path,
                    change,
                    hold_ms,
                }) => (
                    crate::trace::Cause::Signal {
                        path: path.clone(),
                        value: value.clone(),
                        held_ms: 0,
                    },
                    change,
                    *hold_ms,
                ),
                Some(Trigger::Property {
                    device,
                    property,
                    change,
                    hold_ms,
                }) => (
                    Cause::Property {
                        device: device.clone(),
                        property: *property,
                        value: value.clone(),
                        held_ms: 0,
                    },
                    change,
                    *hold_ms,
                ),
                _ => continue,
            };
            let (edge, holds) = match change {
                Change::Any => (previous.is_some_and(|p| !p.same_as(value)), true),
                Change::Becomes(test) => {
                    let now_passes = test.matches(value);
                    (
                        previous.is_some_and(|p| !test.matches(p)) && now_passes,
                        now_passes,
                    )
                }
            };
            if hold_ms == 0 {
                if edge && fired.last().is_none_or(|(t, _)| *t != task_id) {
                    fired.push((task_id, cause));
                }
            } else if edge {
                let key = (task_id, trigger);
                if let Some((timer, _)) = self.holds.remove(&key) {
                    self.timers.cancel(timer);
                }
                let timer = self.timers.add(
                    now.saturating_add(hold_ms),
                    super::timers::Timer::Hold {
                        task: task_id,
                        trigger,
                    },
                );
                self.holds.insert(key, (timer, now));
            } else if !holds && let Some((timer, _)) = self.holds.remove(&(task_id, trigger)) {
                self.timers.cancel(timer);
            }
        }
        for (task, cause) in fired {
            self.fire(task, cause, now);
        }
    }

    /// A hold ran out: the trigger's state held for its `hold_ms`.
    pub(super) fn on_hold(&mut self, task_id: TaskId, trigger: u16, now: u64) {
        let Some((_, since)) = self.holds.remove(&(task_id, trigger)) else {
            return;
        };
        let Some(entry) = self.tasks.get(&task_id) else {
            return;
        };
        let held_ms = now.saturating_sub(since);
        let cause = match entry.task.triggers.get(usize::from(trigger)) {
            Some(Trigger::Signal { path, .. }) => match self.signal_values.get(path.as_str()) {
                Some(value) => Cause::Signal {
                    path: path.clone(),
                    value: value.clone(),
                    held_ms,
                },
                None => return,
            },
            Some(Trigger::Property {
                device, property, ..
            }) => match self
                .property_values
                .get(device)
                .and_then(|p| p.get(property))
            {
                Some(value) => Cause::Property {
                    device: device.clone(),
                    property: *property,
                    value: value.clone(),
                    held_ms,
                },
                None => return,
            },
            _ => return,
        };
        self.fire(task_id, cause, now);
    }

    /// An event of the car. Repeating the state the car is already in fires
    /// nothing.
    pub fn handle_vehicle_event(&mut self, event: VehicleEvent, now_ms: u64) -> Delivery {
        let now = self.advance(now_ms);
        if self.config.site == Site::Hub && !self.config.car_data_to_home {
            return Delivery::WithheldByConsent;
        }
        let (state, on) = event.state();
        if self.vehicle_refs[state.index()] == 0 {
            return Delivery::NotSubscribed;
        }
        let previous = self.vehicle_states[state.index()].replace(on);
        if previous == Some(on) {
            return Delivery::Delivered;
        }
        let slots = self.index.vehicle(event).to_vec();
        let mut last = None;
        for (task, _) in slots {
            if last != Some(task) {
                last = Some(task);
                self.fire(task, Cause::Vehicle(event), now);
            }
        }
        Delivery::Delivered
    }

    /// Runs a task now (its conditions are still evaluated and traced).
    pub fn handle_manual_run(&mut self, id: TaskId, now_ms: u64) -> Result<(), EngineError> {
        if !self.tasks.contains_key(&id) {
            return Err(EngineError::UnknownTask(id));
        }
        let now = self.advance(now_ms);
        self.fire(id, Cause::Manual, now);
        Ok(())
    }

    /// The local time's offset from UTC changed (a daylight-saving change,
    /// a new time zone): time triggers are scheduled again from now.
    pub fn handle_utc_offset(&mut self, offset_min: i32, now_ms: u64) {
        let now = self.advance(now_ms);
        if self.config.utc_offset_min == offset_min {
            return;
        }
        self.config.utc_offset_min = offset_min;
        for id in self.task_ids() {
            self.unschedule_task(id);
            self.schedule_task(id, now);
        }
    }
}
