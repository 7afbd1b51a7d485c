//! The head unit's side of super tasks: what its tasks may name (the car's
//! signals, never its position, and the devices bound to the car) and how
//! their actions are performed (a vehicle command goes through the vehicle
//! service with the author's role, exactly as if the owner's phone sent it:
//! R23, SPEC §18; a device write or action goes through the device service
//! the way the head unit's own screen controls a device: R13, R14, SPEC §16).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tether_automation::{ActionResult, AppIntent, DeviceId, Effect, PropertyId, Value};
use tether_control::{PeerInfo, Principal, StreamId};
use tether_identity::Role;
use tether_proto::v1::{self as pb, CommandState, envelope, request, response};
use tokio::sync::mpsc;

use crate::automation::catalogue::command_to_proto;
use crate::automation::{Actuator, EffectFuture};
use crate::car::serve::ServiceInput;
use crate::devices::{DeviceService, TaskControl};
use crate::wire::lock;

/// Stream numbers for the engine's own commands: far from the sessions'.
const FIRST_AUTOMATION_STREAM: u64 = 1 << 62;

/// How long a task waits for a device to acknowledge a write or an action
/// (the LAN call has its own, shorter deadline; this only bounds a lost one).
const DEVICE_ACK_TIMEOUT: Duration = Duration::from_secs(30);

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
