//! A bound smart device on the LAN (SPEC §12.6): after commissioning it
//! keeps its certificate (`ROLE_DEVICE`, no group key) and the device secret
//! shared with the head unit; it advertises a rotating token under a key
//! derived from that secret, admits only members that prove the secret, and
//! serves its properties, actions, firmware upgrades and unbinding.
//!
//! The demo's lamp runs as one; so would a hub that embeds Tether for the
//! devices it bridges.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tether_devices::{DeviceError, DeviceState};
use tether_discovery::Advertiser;
use tether_identity::{Credentials, DeviceSecret, Role};
use tether_proto::v1::{
    ControlAccepted, DeviceDetails, DeviceModel, Envelope, ErrorCode, PropertyValue, Request,
    Response, envelope, request, response,
};
use tether_session::quic::{CloseCode, IncomingRequest, Listener, ListenerCloser, ServerSession};
use tether_store::Store;
use tokio::sync::watch;
use tracing::info;

use crate::NodeError;
use crate::config::NodeConfig;
use crate::ota::OtaTarget;
use crate::wire::lock;

/// How long an unbound device waits for the car to read its answer.
const UNBIND_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

struct Running {
    address: SocketAddr,
    advertiser: Advertiser,
    closer: ListenerCloser,
    task: tokio::task::JoinHandle<()>,
}

/// A bound smart device serving the account's members on the LAN.
pub struct DeviceNode {
    config: NodeConfig,
    store: Arc<Mutex<Store>>,
    state: Arc<Mutex<DeviceState>>,
    ota: OtaTarget,
    forgotten: Arc<AtomicBool>,
    forget_tx: watch::Sender<bool>,
    running: Arc<tokio::sync::Mutex<Option<Running>>>,
}

impl std::fmt::Debug for DeviceNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceNode").finish_non_exhaustive()
    }
}

/// The device's binding as kept in its store.
fn binding(store: &Store) -> Result<Option<(Credentials, DeviceSecret)>, NodeError> {
    let Some(credentials) = store.load_identity()? else {
        return Ok(None);
    };
    let own = credentials.key().public_key();
    Ok(store
        .get_device_secret(&own)?
        .map(|s| (credentials, DeviceSecret::new(s))))
}

impl DeviceNode {
    /// Opens the device's state. `model` is its product's model (SPEC §16),
    /// `firmware` the revision it runs, `vendor_key` the key its firmware
    /// images must be signed with (SPEC §15).
    pub fn open(
        config: NodeConfig,
        model: DeviceModel,
        firmware: &str,
        vendor_key: [u8; 32],
    ) -> Result<Self, NodeError> {
        let store = config.open_store()?;
        let product_model = u16::try_from(model.product_model)
            .map_err(|_| NodeError::State("product model out of range"))?;
        let (forget_tx, _) = watch::channel(false);
        Ok(Self {
            config,
            store: Arc::new(Mutex::new(store)),
            state: Arc::new(Mutex::new(DeviceState::new(model, firmware))),
            ota: OtaTarget::new(vendor_key, product_model, firmware),
            forgotten: Arc::default(),
            forget_tx,
            running: Arc::default(),
        })
    }

    /// Keeps what binding gave the device: its credentials (a certificate of
    /// role device, no group key) and the device secret (SPEC §12.6).
    pub fn install_binding(
        &self,
        credentials: &Credentials,
        secret: [u8; 32],
    ) -> Result<(), NodeError> {
        if credentials.role() != Role::Device || credentials.group_key().is_some() {
            return Err(NodeError::UnexpectedPeer(
                "a device binding is a device certificate without a group key",
            ));
        }
        let mut store = lock(&self.store);
        store.save_device_key(credentials.key())?;
        store.save_identity(credentials)?;
        store.put_device_secret(&credentials.key().public_key(), &secret)?;
        self.forgotten.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// Keeps a binding the device received when it was commissioned
    /// ([`crate::SimulatedAccessory::take_binding`]).
    pub fn install(&self, binding: &crate::DeviceBinding) -> Result<(), NodeError> {
        self.install_binding(&binding.credentials, binding.secret)
    }

    /// Whether the device holds a binding.
    pub fn is_bound(&self) -> Result<bool, NodeError> {
        Ok(binding(&lock(&self.store))?.is_some())
    }

    /// Whether the head unit told the device to forget its binding.
    pub fn was_unbound(&self) -> bool {
        self.forgotten.load(Ordering::Relaxed)
    }

    /// The current property values.
    pub fn values(&self) -> Vec<PropertyValue> {
        lock(&self.state).values()
    }

    /// The firmware image installed by the last upgrade, if any.
    pub fn installed_firmware(&self) -> Option<crate::ota::InstalledFirmware> {
        self.ota.installed()
    }

    /// Bytes of an interrupted upgrade stored so far.
    pub fn upgrade_offset(&self) -> u64 {
        self.ota.next_offset()
    }

    /// Starts serving on the LAN: binds the session endpoint and advertises
    /// a token under the device's discovery key. Must be inside a tokio
    /// runtime.
    pub async fn start(&self) -> Result<SocketAddr, NodeError> {
        let mut running = self.running.lock().await;
        if running.is_some() {
            return Err(NodeError::State("already started"));
        }
        let (credentials, secret) = binding(&lock(&self.store))?.ok_or(NodeError::NotEnrolled)?;
        let mut listener = Listener::bind_device(
            SocketAddr::new(self.config.bind_ip, self.config.port),
            Arc::new(credentials),
            secret.admission_key(),
            self.config.session.clone(),
        )?;
        let address = listener.local_addr()?;
        let advertiser =
            Advertiser::start(self.config.advertiser(secret.discovery_key(), address))?;
        let closer = listener.closer();
        let serving = Serving {
            store: self.store.clone(),
            state: self.state.clone(),
            ota: self.ota.clone(),
            forgotten: self.forgotten.clone(),
            forget_tx: self.forget_tx.clone(),
        };
        let task = tokio::spawn(async move {
            while let Some(session) = listener.accept().await {
                info!(role = %session.peer().certificate.role, "device session authenticated");
                tokio::spawn(serving.clone().serve(session));
            }
        });
        *running = Some(Running {
            address,
            advertiser,
            closer,
            task,
        });
        // Once unbound, withdraw the token and stop serving (R2: an unbound
        // device advertises nothing of its old binding).
        let mut forgot = self.forget_tx.subscribe();
        let slot = self.running.clone();
        tokio::spawn(async move {
            if forgot.wait_for(|f| *f).await.is_ok()
                && let Err(e) = stop(slot.lock().await.take()).await
            {
                tracing::warn!(error = %e, "an unbound device could not withdraw its advert");
            }
        });
        Ok(address)
    }

    /// The session endpoint's address, once started.
    pub async fn address(&self) -> Option<SocketAddr> {
        self.running.lock().await.as_ref().map(|r| r.address)
    }

    /// Resolves once the head unit has unbound the device.
    pub async fn unbound(&self) {
        let mut rx = self.forget_tx.subscribe();
        let _ = rx.wait_for(|f| *f).await;
    }

    /// Stops advertising and serving.
    pub async fn shutdown(&self) -> Result<(), NodeError> {
        stop(self.running.lock().await.take()).await
    }
}

async fn stop(running: Option<Running>) -> Result<(), NodeError> {
    let Some(r) = running else {
        return Ok(());
    };
    let result = r.advertiser.shutdown().await;
    r.closer.close();
    r.task.abort();
    result?;
    Ok(())
}

#[derive(Clone)]
struct Serving {
    store: Arc<Mutex<Store>>,
    state: Arc<Mutex<DeviceState>>,
    ota: OtaTarget,
    forgotten: Arc<AtomicBool>,
    forget_tx: watch::Sender<bool>,
}

impl Serving {
    async fn serve(self, mut session: ServerSession) {
        let closer = session.closer();
        while let Some(request) = session.next_request().await {
            let Some(request) = self.ota.handle(request).await else {
                if let Some(installed) = self.ota.installed() {
                    lock(&self.state).set_firmware(&installed.manifest.version);
                }
                continue;
            };
            let IncomingRequest {
                envelope,
                mut responder,
            } = request;
            let answer = self.answer(&envelope);
            let forget = matches!(
                &envelope.body,
                Some(envelope::Body::Request(Request {
                    kind: Some(request::Kind::UnbindDevice(_))
                }))
            ) && answer.is_ok();
            match answer {
                Ok(kind) => {
                    let _ = responder
                        .send(&Envelope {
                            request_id: envelope.request_id,
                            body: Some(envelope::Body::Response(Response { kind: Some(kind) })),
                            ..Envelope::default()
                        })
                        .await;
                }
                Err((code, message)) => {
                    let _ = responder.send_error(code, &message).await;
                }
            }
            responder.finish();
            if forget {
                // The binding is gone: let the car read the answer and close
                // (at most a second), then stop serving and advertising until
                // the device is commissioned anew.
                let _ = tokio::time::timeout(UNBIND_GRACE, session.closed()).await;
                closer.close(CloseCode::Normal, "unbound");
                let _ = self.forget_tx.send(true);
                return;
            }
        }
    }

    /// The device's answer to one request (SPEC §12.6): reads and control
    /// are answered with the values after the change.
    fn answer(&self, envelope: &Envelope) -> Result<response::Kind, (ErrorCode, String)> {
        let Some(envelope::Body::Request(Request { kind: Some(kind) })) = &envelope.body else {
            return Err((ErrorCode::BadRequest, "not a request".into()));
        };
        let refused = |e: DeviceError| (e.code(), e.to_string());
        let details = |state: &DeviceState| {
            response::Kind::DeviceDetails(DeviceDetails {
                device: None,
                model: None,
                values: state.values(),
            })
        };
        match kind {
            request::Kind::Ping(p) => Ok(response::Kind::Pong(tether_proto::v1::Pong {
                payload: p.payload.clone(),
            })),
            request::Kind::GetDevice(_) => Ok(details(&lock(&self.state))),
            request::Kind::SetProperties(set) => {
                let mut state = lock(&self.state);
                state.apply(&set.values).map_err(refused)?;
                Ok(details(&state))
            }
            request::Kind::InvokeAction(action) => {
                let mut state = lock(&self.state);
                state
                    .invoke(action.siid, action.aiid, &action.arguments)
                    .map_err(refused)?;
                Ok(details(&state))
            }
            request::Kind::UnbindDevice(_) => {
                // R13: the device forgets its credentials and secret.
                let mut store = lock(&self.store);
                let own = store
                    .load_identity()
                    .map_err(|e| (ErrorCode::Internal, e.to_string()))?
                    .map(|c| c.key().public_key());
                if let Some(own) = own {
                    store
                        .remove_device_secret(&own)
                        .and_then(|_| store.forget_identity())
                        .map_err(|e| (ErrorCode::Internal, e.to_string()))?;
                }
                self.forgotten.store(true, Ordering::Relaxed);
                Ok(response::Kind::ControlAccepted(ControlAccepted {
                    command_id: 0,
                }))
            }
            _ => Err((
                ErrorCode::Unsupported,
                "a device answers reads, control, upgrades and unbinding".into(),
            )),
        }
    }
}
