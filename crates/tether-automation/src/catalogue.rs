//! What tasks may name, and what their author may do: both handed in by the
//! host, which knows them from the crates that own them (the VSS catalogue
//! and the role table in `tether-control`, the device models in
//! `tether-devices`). The engine checks tasks against them; it holds no
//! role table of its own.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{CommandKind, DeviceActionId, DeviceId, PropertyId, ValueKind};

/// A vehicle signal a task may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalSpec {
    /// The kind of its values.
    pub kind: ValueKind,
    /// The vehicle commands that change it (for loop detection).
    pub changed_by: BTreeSet<CommandKind>,
}

impl SignalSpec {
    /// A signal only the car changes.
    pub fn sensor(kind: ValueKind) -> Self {
        Self {
            kind,
            changed_by: BTreeSet::new(),
        }
    }

    /// A signal these commands change.
    pub fn actuator(kind: ValueKind, changed_by: &[CommandKind]) -> Self {
        Self {
            kind,
            changed_by: changed_by.iter().copied().collect(),
        }
    }
}

/// A device property.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PropertySpec {
    /// The kind of its values.
    pub kind: ValueKind,
    /// Reported by the device (usable in triggers and conditions).
    pub readable: bool,
    /// Writable by a task.
    pub writable: bool,
}

/// A device and what it offers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceSpec {
    /// Its properties.
    pub properties: BTreeMap<PropertyId, PropertySpec>,
    /// Its actions, with the number of arguments each takes.
    pub actions: BTreeMap<DeviceActionId, usize>,
}

impl DeviceSpec {
    /// Adds a property.
    pub fn property(mut self, id: PropertyId, spec: PropertySpec) -> Self {
        self.properties.insert(id, spec);
        self
    }

    /// Adds an action taking `arguments` arguments.
    pub fn action(mut self, id: DeviceActionId, arguments: usize) -> Self {
        self.actions.insert(id, arguments);
        self
    }
}

/// The signals and devices tasks on this node may name. The host builds it
/// from what this node may read (e.g. a hub's catalogue has no location,
/// R10) and the devices bound to the account.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalogue {
    signals: BTreeMap<String, SignalSpec>,
    devices: BTreeMap<DeviceId, DeviceSpec>,
}

impl Catalogue {
    /// An empty catalogue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a signal.
    pub fn with_signal(mut self, path: impl Into<String>, spec: SignalSpec) -> Self {
        self.signals.insert(path.into(), spec);
        self
    }

    /// Adds (or replaces) a device.
    pub fn with_device(mut self, device: DeviceId, spec: DeviceSpec) -> Self {
        self.devices.insert(device, spec);
        self
    }

    /// Adds (or replaces) a signal in place.
    pub fn add_signal(&mut self, path: impl Into<String>, spec: SignalSpec) {
        self.signals.insert(path.into(), spec);
    }

    /// Adds (or replaces) a device in place.
    pub fn add_device(&mut self, device: DeviceId, spec: DeviceSpec) {
        self.devices.insert(device, spec);
    }

    /// The signal at `path`.
    pub fn signal(&self, path: &str) -> Option<&SignalSpec> {
        self.signals.get(path)
    }

    /// The device `device`.
    pub fn device(&self, device: &DeviceId) -> Option<&DeviceSpec> {
        self.devices.get(device)
    }

    /// The signals a command of `kind` changes.
    pub(crate) fn signals_changed_by(&self, kind: CommandKind) -> impl Iterator<Item = &str> {
        self.signals
            .iter()
            .filter(move |(_, s)| s.changed_by.contains(&kind))
            .map(|(p, _)| p.as_str())
    }
}

/// What the author of a task may make it do. The host fills it from the
/// role table of the session layer for the author's role (e.g.
/// `vehicle_commands = tether_control::access::may_command(role)`), so
/// automation never does more than its author could do by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permissions {
    /// Command the car.
    pub vehicle_commands: bool,
    /// Write device properties and run device actions.
    pub device_control: bool,
    /// Hand navigation over to the car.
    pub navigation: bool,
    /// Notify the owner and authorised users.
    pub notifications: bool,
}

impl Permissions {
    /// Everything (the owner's phone).
    pub const ALL: Permissions = Permissions {
        vehicle_commands: true,
        device_control: true,
        navigation: true,
        notifications: true,
    };
    /// Nothing.
    pub const NONE: Permissions = Permissions {
        vehicle_commands: false,
        device_control: false,
        navigation: false,
        notifications: false,
    };
}
