//! The hub's simulated home (tests, the demo): lights, porch and garage
//! as boolean switches its super tasks act on.

use std::collections::BTreeMap;
use std::sync::Mutex;

use tether_automation::{
    ActionResult, Catalogue, DeviceId, DeviceSpec, Effect, PropertyId, PropertySpec, Value,
    ValueKind,
};

use crate::automation::{Actuator, EffectFuture};
use crate::wire::lock;

/// The one property of each simulated home device: on/off, or closed for
/// the garage door (MIoT service 2, property 1).
pub const HOME_SWITCH: PropertyId = PropertyId { siid: 2, piid: 1 };

/// The home's simulated devices: `lights`, `porch` (power) and `garage`
/// (closed), all booleans, all off/open at first.
#[derive(Debug, Default)]
pub struct SimHome {
    state: Mutex<BTreeMap<DeviceId, Value>>,
}

impl SimHome {
    /// The three devices, off (the garage open).
    pub fn new() -> Self {
        let state = ["lights", "porch", "garage"]
            .into_iter()
            .map(|name| (DeviceId::new(name), Value::Bool(false)))
            .collect();
        Self {
            state: Mutex::new(state),
        }
    }

    /// What tasks may name: each device's switch, readable and writable.
    pub fn catalogue(&self) -> Catalogue {
        self.catalogue_onto(Catalogue::new())
    }

    /// `base` (the car's signals, on a hub) with each device's switch.
    pub fn catalogue_onto(&self, base: Catalogue) -> Catalogue {
        let mut catalogue = base;
        for device in lock(&self.state).keys() {
            catalogue.add_device(
                device.clone(),
                DeviceSpec::default().property(
                    HOME_SWITCH,
                    PropertySpec {
                        kind: ValueKind::Bool,
                        readable: true,
                        writable: true,
                    },
                ),
            );
        }
        catalogue
    }

    /// A home with these devices, all off.
    pub fn with_devices(names: &[&str]) -> Self {
        Self {
            state: Mutex::new(
                names
                    .iter()
                    .map(|name| (DeviceId::new(*name), Value::Bool(false)))
                    .collect(),
            ),
        }
    }

    /// Takes a device out of the home (unbound). Returns whether it was
    /// there.
    pub fn remove(&self, device: &str) -> bool {
        lock(&self.state).remove(&DeviceId::new(device)).is_some()
    }

    /// Sets a device's switch by hand (someone at home). Returns whether
    /// the device exists.
    pub fn set(&self, device: &str, on: bool) -> bool {
        match lock(&self.state).get_mut(&DeviceId::new(device)) {
            Some(slot) => {
                *slot = Value::Bool(on);
                true
            }
            None => false,
        }
    }

    /// Each device's switch now.
    pub fn state(&self) -> BTreeMap<String, bool> {
        lock(&self.state)
            .iter()
            .map(|(d, v)| (d.0.clone(), matches!(v, Value::Bool(true))))
            .collect()
    }
}

impl Actuator for SimHome {
    fn perform(&self, effect: Effect) -> EffectFuture {
        let result = match effect {
            Effect::SetProperty {
                device,
                property,
                value,
            } => {
                let mut state = lock(&self.state);
                match state.get_mut(&device) {
                    Some(slot) if property == HOME_SWITCH && matches!(value, Value::Bool(_)) => {
                        *slot = value;
                        ActionResult::Succeeded
                    }
                    Some(_) => ActionResult::Failed("no such property".into()),
                    None => ActionResult::Failed("no such device in this home".into()),
                }
            }
            Effect::DeviceAction { .. } => ActionResult::Failed("no actions in this home".into()),
            Effect::Vehicle { .. } => {
                ActionResult::Failed("the hub does not command the car".into())
            }
            // The hub has no screen: a notification is the phone's job.
            Effect::App(_) => ActionResult::Failed("no app on the hub".into()),
        };
        Box::pin(async move { result })
    }

    fn current(&self, device: &DeviceId, property: PropertyId) -> Option<Value> {
        if property != HOME_SWITCH {
            return None;
        }
        lock(&self.state).get(device).cloned()
    }
}
