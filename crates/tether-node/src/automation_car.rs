//! The head unit's side of super tasks: what its tasks may name (the car's
//! signals, never its position) and how their actions are performed (a
//! vehicle command goes through the vehicle service with the author's role,
//! exactly as if the owner's phone sent it: R23, SPEC §18).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tether_automation::{
    ActionResult, AppIntent, Catalogue, CommandKind, Effect, SignalSpec, ValueKind, VehicleCommand,
};
use tether_control::signals::{self, Access, Sensitivity, ValueType};
use tether_control::{PeerInfo, StreamId};
use tether_identity::Role;
use tether_proto::v1::{self as pb, CommandState, envelope, request, response};
use tokio::sync::mpsc;

use crate::automation::{Actuator, EffectFuture};
use crate::serve::ServiceInput;
use crate::wire::lock;

/// Stream numbers for the engine's own commands: far from the sessions'.
const FIRST_AUTOMATION_STREAM: u64 = 1 << 62;

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
    pub(crate) service: mpsc::UnboundedSender<ServiceInput>,
    pub(crate) streams: AtomicU64,
    pub(crate) notices: Arc<Mutex<Vec<AppNotice>>>,
}

impl CarActuator {
    pub(crate) fn new(
        service: mpsc::UnboundedSender<ServiceInput>,
        notices: Arc<Mutex<Vec<AppNotice>>>,
    ) -> Self {
        Self {
            service,
            streams: AtomicU64::new(FIRST_AUTOMATION_STREAM),
            notices,
        }
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
                    // The author's role: the owner's phone (R23).
                    peer: PeerInfo::new(Role::Phone),
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
            Effect::SetProperty { .. } | Effect::DeviceAction { .. } => {
                Box::pin(async { ActionResult::Failed("no such device on the head unit".into()) })
            }
        }
    }
}
