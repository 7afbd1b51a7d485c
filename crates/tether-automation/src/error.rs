//! Errors: why a task is refused ([`ValidationError`], the author's to fix),
//! why a call to the engine was refused ([`EngineError`], the host's), and
//! why a snapshot cannot be restored ([`RestoreError`]).

use std::fmt;

use thiserror::Error;

use crate::model::{DeviceActionId, DeviceId, Input, PlaceId, PropertyId, TaskId, ValueKind};

/// Something a task asks its author's role cannot do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// Command the car.
    CommandVehicle,
    /// Control a device.
    ControlDevices,
    /// Hand navigation to the car.
    Navigate,
    /// Send notifications.
    Notify,
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Capability::CommandVehicle => "command the car",
            Capability::ControlDevices => "control devices",
            Capability::Navigate => "hand navigation to the car",
            Capability::Notify => "send notifications",
        })
    }
}

/// Why a task cannot be installed. The author must change the task.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum ValidationError {
    /// The name is empty or longer than [`crate::MAX_NAME_BYTES`].
    #[error("a task's name must be 1..={} bytes", crate::MAX_NAME_BYTES)]
    BadName,
    /// Nothing would start the task.
    #[error("a task needs at least one trigger")]
    NoTrigger,
    /// The task would do nothing.
    #[error("a task needs at least one action")]
    NoAction,
    /// Past a size limit.
    #[error("too many {what} (at most {limit})")]
    TooLarge {
        /// What.
        what: &'static str,
        /// The limit.
        limit: usize,
    },
    /// A signal the catalogue does not list (or this node may not read).
    #[error("unknown vehicle signal `{0}`")]
    UnknownSignal(String),
    /// A device the catalogue does not list.
    #[error("unknown device `{0}`")]
    UnknownDevice(DeviceId),
    /// A property the device does not have.
    #[error("device `{device}` has no property {property}")]
    UnknownProperty {
        /// The device.
        device: DeviceId,
        /// The property.
        property: PropertyId,
    },
    /// A trigger or condition on a property the device does not report.
    #[error("property {property} of `{device}` is not readable")]
    PropertyNotReadable {
        /// The device.
        device: DeviceId,
        /// The property.
        property: PropertyId,
    },
    /// A write to a property that is not writable.
    #[error("property {property} of `{device}` is not writable")]
    PropertyNotWritable {
        /// The device.
        device: DeviceId,
        /// The property.
        property: PropertyId,
    },
    /// An action the device does not have.
    #[error("device `{device}` has no action {action}")]
    UnknownDeviceAction {
        /// The device.
        device: DeviceId,
        /// The action.
        action: DeviceActionId,
    },
    /// A device action called with the wrong number of arguments.
    #[error("action {action} of `{device}` takes {expected} arguments, not {given}")]
    WrongArguments {
        /// The device.
        device: DeviceId,
        /// The action.
        action: DeviceActionId,
        /// What it takes.
        expected: usize,
        /// What it was given.
        given: usize,
    },
    /// A value or test of the wrong kind for what it is applied to.
    #[error("{what} holds {expected:?} values")]
    TypeMismatch {
        /// The signal or property.
        what: String,
        /// Its kind.
        expected: ValueKind,
    },
    /// A place this node does not know.
    #[error("unknown place `{0}`")]
    UnknownPlace(PlaceId),
    /// A place without a shape where one is needed (a geofence on the head
    /// unit, sun times anywhere).
    #[error("place `{0}` has no shape on this node")]
    PlaceWithoutShape(PlaceId),
    /// The author's role may not do this (the session layer's role table).
    #[error("the author's role may not {0}")]
    NotPermitted(Capability),
    /// The task reads data it did not declare (R21).
    #[error("the task reads {0} but does not declare it")]
    UndeclaredInput(Input),
    /// The task declares data it does not read (R21: only the minimum).
    #[error("the task declares {0} but does not read it")]
    UnusedInput(Input),
    /// Its actions would trigger tasks whose actions trigger it again,
    /// without end.
    #[error("the task would retrigger itself without end through {cycle:?}")]
    Loop {
        /// The tasks around the loop, starting with this one.
        cycle: Vec<TaskId>,
    },
    /// A value out of range or not a number.
    #[error("invalid value: {0}")]
    InvalidValue(&'static str),
    /// A task with this id is installed already.
    #[error("{0} is installed already")]
    DuplicateTask(TaskId),
}

/// Why the engine refused a call. The host must fix the call.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum EngineError {
    /// No such task.
    #[error("no {0}")]
    UnknownTask(TaskId),
    /// No action request or confirmation with this id is pending (already
    /// answered, timed out, or cancelled).
    #[error("nothing is waiting for this answer")]
    NotPending,
    /// No such place.
    #[error("unknown place `{0}`")]
    UnknownPlace(PlaceId),
    /// The place is still named by a task.
    #[error("place `{0}` is used by a task")]
    PlaceInUse(PlaceId),
    /// A place with an unusable shape.
    #[error("place `{place}`: {reason}")]
    BadPlace {
        /// The place.
        place: PlaceId,
        /// Why.
        reason: &'static str,
    },
    /// The task is refused.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
}

/// Why a snapshot cannot be restored.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RestoreError {
    /// The engine is already running: restore right after installing the
    /// tasks, before any other input.
    #[error("the engine has already started")]
    AlreadyStarted,
    /// A snapshot of another format.
    #[error("snapshot format {found}, this engine reads {expected}")]
    Version {
        /// The snapshot's.
        found: u32,
        /// This engine's.
        expected: u32,
    },
}
