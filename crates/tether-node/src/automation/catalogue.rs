//! What the car's super tasks may name, as the engine sees it (SPEC §18):
//! the car's signals (never its position, R10) and the devices bound to it,
//! with the conversions between the engine's values and the wire's. Pure
//! functions: the device service and the car's actuator both use them, and
//! this module uses neither.

use tether_automation::{
    Catalogue, CommandKind, DeviceActionId, DeviceId, DeviceSpec, PropertyId, PropertySpec,
    SignalSpec, Value, ValueKind, VehicleCommand,
};
use tether_control::signals::{self, Access, Sensitivity, ValueType};
use tether_devices::{ACCESS_NOTIFY, ACCESS_READ, ACCESS_WRITE};
use tether_proto::v1::{self as pb, DeviceModel, DeviceValue, PropertyFormat, device_value};

/// The car's signals a task may name: every catalogue signal except the
/// position, which only the geofences read, on the head unit (R10, R32).
pub(crate) fn vehicle_catalogue() -> Catalogue {
    let mut catalogue = Catalogue::new();
    for signal in signals::CATALOGUE {
        if signal.sensitivity == Sensitivity::Personal {
            continue;
        }
        let kind = match signal.value_type {
            ValueType::Bool => ValueKind::Bool,
            ValueType::Double => ValueKind::Double,
            ValueType::Int => ValueKind::Int,
            ValueType::Location => continue,
        };
        let spec = match signal.access {
            Access::ReadOnly => SignalSpec::sensor(kind),
            Access::Actuator => SignalSpec::actuator(kind, changed_by(signal.path)),
        };
        catalogue.add_signal(signal.path, spec);
    }
    catalogue
}

/// The name a task on the car gives a bound device: the lowercase hex of
/// the handle the device lists show for it (SPEC §16.3). Handles do not
/// depend on who lists (the head unit's screen, a member's phone and a
/// co-user see the same one), are derived under a key the head unit keeps in
/// its store, and so stay the same across restarts; they name neither the
/// device's key nor any hardware identifier.
pub(crate) fn task_device_id(handle: &[u8]) -> DeviceId {
    DeviceId::new(
        handle
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
    )
}

/// The car's catalogue: its signals ([`vehicle_catalogue`]) and the bound
/// devices, each by [`task_device_id`] with [`device_spec`] of its model.
pub(crate) fn car_catalogue(
    devices: impl IntoIterator<Item = (DeviceId, DeviceSpec)>,
) -> Catalogue {
    let mut catalogue = vehicle_catalogue();
    for (id, spec) in devices {
        catalogue.add_device(id, spec);
    }
    catalogue
}

/// What a task may do with a device of `model` (SPEC §16.1): every
/// property whose format has a value kind, readable if the device reports
/// it (read or notify), writable if it may be written; every action with
/// the number of its inputs.
pub(crate) fn device_spec(model: &DeviceModel) -> DeviceSpec {
    let mut spec = DeviceSpec::default();
    for service in &model.services {
        for property in &service.properties {
            let Some(kind) = value_kind(property.format) else {
                continue;
            };
            spec = spec.property(
                PropertyId::new(service.iid, property.iid),
                PropertySpec {
                    kind,
                    readable: property.access & (ACCESS_READ | ACCESS_NOTIFY) != 0,
                    writable: property.access & ACCESS_WRITE != 0,
                },
            );
        }
        for action in &service.actions {
            spec = spec.action(
                DeviceActionId {
                    siid: service.iid,
                    aiid: action.iid,
                },
                action.inputs.len(),
            );
        }
    }
    spec
}

/// The kind of a MIoT format's values: integer formats are integers.
fn value_kind(format: i32) -> Option<ValueKind> {
    Some(match PropertyFormat::try_from(format).ok()? {
        PropertyFormat::Bool => ValueKind::Bool,
        PropertyFormat::Uint8
        | PropertyFormat::Uint16
        | PropertyFormat::Uint32
        | PropertyFormat::Int32 => ValueKind::Int,
        PropertyFormat::Float => ValueKind::Double,
        PropertyFormat::String => ValueKind::Text,
        PropertyFormat::Unspecified => return None,
    })
}

/// A task's value in the wire form of a property of `spec`'s format, if it
/// has one (a real with no fraction stands for an integer). Range and
/// value list are the model check's business
/// ([`tether_devices::validate::check_write`]).
pub(crate) fn to_device_value(spec: &pb::PropertySpec, value: &Value) -> Option<DeviceValue> {
    use device_value::Kind;
    let integer = |value: &Value| -> Option<i64> {
        match *value {
            Value::Int(i) => Some(i),
            Value::Double(d) if d.fract() == 0.0 && d.abs() < 9.0e15 => Some(d as i64),
            _ => None,
        }
    };
    let kind = match PropertyFormat::try_from(spec.format).ok()? {
        PropertyFormat::Bool => match value {
            Value::Bool(b) => Kind::BoolValue(*b),
            _ => return None,
        },
        PropertyFormat::Uint8 | PropertyFormat::Uint16 | PropertyFormat::Uint32 => {
            Kind::UintValue(u32::try_from(integer(value)?).ok()?)
        }
        PropertyFormat::Int32 => Kind::IntValue(i32::try_from(integer(value)?).ok()?),
        PropertyFormat::Float => Kind::FloatValue(value.as_f64()? as f32),
        PropertyFormat::String => match value {
            Value::Text(t) => Kind::StringValue(t.clone()),
            _ => return None,
        },
        PropertyFormat::Unspecified => return None,
    };
    Some(DeviceValue { kind: Some(kind) })
}

/// A device's reported value as a task reads it.
pub(crate) fn from_device_value(value: &DeviceValue) -> Option<Value> {
    use device_value::Kind;
    Some(match value.kind.as_ref()? {
        Kind::BoolValue(b) => Value::Bool(*b),
        Kind::UintValue(u) => Value::Int(i64::from(*u)),
        Kind::IntValue(i) => Value::Int(i64::from(*i)),
        Kind::FloatValue(f) => Value::Double(f64::from(*f)),
        Kind::StringValue(s) => Value::Text(s.clone()),
    })
}

fn changed_by(path: &str) -> &'static [CommandKind] {
    if path.ends_with(".IsLocked") {
        &[CommandKind::Lock, CommandKind::Unlock]
    } else if path.contains(".Window.") {
        &[CommandKind::Window]
    } else if path.contains(".HVAC.") {
        &[CommandKind::Climate]
    } else {
        &[]
    }
}

/// The wire form of a task's vehicle command.
pub(crate) fn command_to_proto(command: &VehicleCommand) -> pb::VehicleCommand {
    use pb::vehicle_command::Command;
    let command = match *command {
        VehicleCommand::Lock => Command::Lock(pb::DoorLock {}),
        VehicleCommand::Unlock => Command::Unlock(pb::DoorLock {}),
        VehicleCommand::Climate { on, target_celsius } => Command::Climate(pb::Climate {
            on,
            target_celsius: target_celsius.unwrap_or(0.0),
        }),
        VehicleCommand::Window { percent_open } => Command::Window(pb::Window {
            position: pb::WindowPosition::Percent as i32,
            percent_open: u32::from(percent_open),
        }),
        VehicleCommand::FlashHonk { flash, honk } => {
            Command::FlashHonk(pb::FlashHonk { flash, honk })
        }
    };
    pb::VehicleCommand {
        command: Some(command),
    }
}
