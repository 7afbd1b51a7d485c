//! The head unit's side of super tasks: what its tasks may name (the car's
//! signals, never its position, and the devices bound to the car) and how
//! their actions are performed (a vehicle command goes through the vehicle
//! service with the author's role, exactly as if the owner's phone sent it:
//! R23, SPEC §18; a device write or action goes through the device service
//! the way the head unit's own screen controls a device: R13, R14, SPEC §16).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tether_automation::{
    ActionResult, AppIntent, Catalogue, CommandKind, DeviceActionId, DeviceId, DeviceSpec, Effect,
    PropertyId, PropertySpec, SignalSpec, Value, ValueKind, VehicleCommand,
};
use tether_control::signals::{self, Access, Sensitivity, ValueType};
use tether_control::{PeerInfo, Principal, StreamId};
use tether_devices::{ACCESS_NOTIFY, ACCESS_READ, ACCESS_WRITE};
use tether_identity::Role;
use tether_proto::v1::{
    self as pb, CommandState, DeviceModel, DeviceValue, PropertyFormat, device_value, envelope,
    request, response,
};
use tokio::sync::mpsc;

use crate::automation::{Actuator, EffectFuture};
use crate::devices::{DeviceService, TaskControl};
use crate::serve::ServiceInput;
use crate::wire::lock;

/// Stream numbers for the engine's own commands: far from the sessions'.
const FIRST_AUTOMATION_STREAM: u64 = 1 << 62;

/// How long a task waits for a device to acknowledge a write or an action
/// (the LAN call has its own, shorter deadline; this only bounds a lost one).
const DEVICE_ACK_TIMEOUT: Duration = Duration::from_secs(30);

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

/// A notification or hand-off a task produced, for the owner's apps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppNotice {
    /// The intent.
    pub intent: AppIntent,
}

/// Performs the head unit's task actions.
pub(crate) struct CarActuator {
    service: mpsc::UnboundedSender<ServiceInput>,
    streams: AtomicU64,
    notices: Arc<Mutex<Vec<AppNotice>>>,
    devices: Arc<DeviceService>,
}

impl CarActuator {
    pub(crate) fn new(
        service: mpsc::UnboundedSender<ServiceInput>,
        notices: Arc<Mutex<Vec<AppNotice>>>,
        devices: Arc<DeviceService>,
    ) -> Self {
        Self {
            service,
            streams: AtomicU64::new(FIRST_AUTOMATION_STREAM),
            notices,
            devices,
        }
    }

    /// A device write or action: checked against the device's model and
    /// queued like a control from the head unit's screen; it has succeeded
    /// once the device acknowledged it.
    fn control_device(&self, device: &DeviceId, control: TaskControl) -> EffectFuture {
        let acknowledged = self.devices.control_for_task(device, control);
        Box::pin(async move {
            let acknowledged = match acknowledged {
                Ok(acknowledged) => acknowledged,
                Err(why) => return ActionResult::Failed(why),
            };
            match tokio::time::timeout(DEVICE_ACK_TIMEOUT, acknowledged).await {
                Ok(Ok(Ok(()))) => ActionResult::Succeeded,
                Ok(Ok(Err(why))) => ActionResult::Failed(why),
                Ok(Err(_)) => ActionResult::Failed("the device service stopped".into()),
                Err(_) => ActionResult::Failed("the device did not acknowledge in time".into()),
            }
        })
    }
}

impl Actuator for CarActuator {
    fn perform(&self, effect: Effect) -> EffectFuture {
        match effect {
            Effect::Vehicle {
                command,
                idempotency_key,
            } => {
                let stream = StreamId(self.streams.fetch_add(1, Ordering::Relaxed));
                let (writer, mut replies) = mpsc::unbounded_channel();
                let envelope = pb::Envelope {
                    request_id: stream.0,
                    idempotency_key: idempotency_key.0.to_vec(),
                    body: Some(envelope::Body::Request(pb::Request {
                        kind: Some(request::Kind::Command(command_to_proto(&command))),
                    })),
                    ..pb::Envelope::default()
                };
                let sent = self.service.send(ServiceInput::Request {
                    stream,
                    // The author's role: the owner's phone (R23); the
                    // car's own tasks are their own principal, so no
                    // session's key can meet theirs (SPEC §8.3).
                    peer: PeerInfo::new(Role::Phone).with_principal(Principal::Automation),
                    envelope: Box::new(envelope),
                    writer,
                });
                let service = self.service.clone();
                Box::pin(async move {
                    if sent.is_err() {
                        return ActionResult::Failed("the vehicle service stopped".into());
                    }
                    let result = loop {
                        let Some(reply) = replies.recv().await else {
                            break ActionResult::Failed("no answer from the vehicle".into());
                        };
                        match reply.body {
                            Some(envelope::Body::Response(pb::Response {
                                kind: Some(response::Kind::CommandStatus(status)),
                            })) => match CommandState::try_from(status.state) {
                                Ok(CommandState::Accepted | CommandState::InProgress) => {}
                                Ok(CommandState::Succeeded) => break ActionResult::Succeeded,
                                Ok(state) => {
                                    break ActionResult::Failed(format!(
                                        "the car answered {}",
                                        state.as_str_name()
                                    ));
                                }
                                Err(_) => {
                                    break ActionResult::Failed("unknown command state".into());
                                }
                            },
                            Some(envelope::Body::Error(e)) => {
                                break ActionResult::Failed(format!("refused: {}", e.message));
                            }
                            _ => break ActionResult::Failed("unexpected answer".into()),
                        }
                    };
                    let _ = service.send(ServiceInput::Closed(stream));
                    result
                })
            }
            Effect::App(intent) => {
                lock(&self.notices).push(AppNotice { intent });
                Box::pin(async { ActionResult::Succeeded })
            }
            Effect::SetProperty {
                device,
                property,
                value,
            } => self.control_device(&device, TaskControl::Set(property, value)),
            Effect::DeviceAction {
                device,
                action,
                arguments,
            } => self.control_device(&device, TaskControl::Action(action, arguments)),
        }
    }

    fn current(&self, device: &DeviceId, property: PropertyId) -> Option<Value> {
        self.devices.last_value(device, property)
    }
}

/// A vehicle signal's value as a task sees it. Texts are bounded like a
/// task's own, so its trace stays readable. A position is never a task's
/// input (R10): geofences are evaluated from it, and it goes no further.
pub(crate) fn task_value(value: tether_proto::v1::signal_value::Value) -> Option<Value> {
    use tether_proto::v1::signal_value::Value as V;
    match value {
        V::BoolValue(b) => Some(Value::Bool(b)),
        V::DoubleValue(d) => Some(Value::Double(d)),
        V::IntValue(i) => Some(Value::Int(i)),
        V::StringValue(s) if s.len() <= tether_automation::MAX_MESSAGE_BYTES => {
            Some(Value::Text(s))
        }
        V::StringValue(_) | V::Location(_) => None,
    }
}
