//! The head unit's device management (R12, R14, R17; SPEC §12.6, §16): the
//! sans-IO [`DeviceManager`] driven with the store, the clock, and one LAN
//! session per bound device (found by its own rotating token, admitted with
//! the device secret). Phones manage devices through the car; the devices
//! never see a phone.
//!
//! The car's super tasks (SPEC §18.6) see the bound devices too: the
//! service keeps the automation host's catalogue in step with the bindings,
//! marks the tasks of an unbound device broken, hands it every value a
//! device reports, and performs the tasks' writes and actions.

pub(crate) mod api;
pub(crate) mod commission;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use tether_automation::{DeviceActionId, DeviceId, DeviceSpec, PropertyId, Value};
use tether_devices::{
    Catalogue, Config as ManagerConfig, Control, DeviceCommand, DeviceManager, DeviceRef, Output,
    Requester, validate,
};
use tether_discovery::{Browser, DiscoveryEvent, Interfaces};
use tether_identity::{DeviceSecret, SharePermission};
use tether_proto::v1::{
    DeviceDetails, Envelope, GetDevice, InvokeAction, PropertyValue, SetProperties, UnbindDevice,
    envelope, request, response,
};
use tether_session::GrantAccess;
use tether_session::quic::{ClientSession, Connector};
use tether_store::{BindingRecord, Store};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::NodeError;
use crate::automation::AutomationHost;
use crate::automation::catalogue::{
    car_catalogue, device_spec, from_device_value, task_device_id, to_device_value,
};
use crate::config::random_bytes;
use crate::wire::lock;

mod tasks;
use tasks::Acknowledgement;
pub(crate) use tasks::TaskControl;

/// The setting that holds the key device handles are derived with (hex).
const HANDLE_KEY_SETTING: &str = "device_handle_key";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn unhex32(text: &str) -> Option<[u8; 32]> {
    unhex(text)?.try_into().ok()
}

/// The permission a co-user needs for a device-management request (SPEC
/// §17.4), `None` if it is not one.
pub(crate) fn device_permission(kind: &request::Kind) -> Option<SharePermission> {
    Some(match kind {
        request::Kind::ListDevices(_)
        | request::Kind::GetDevice(_)
        | request::Kind::WatchDevices(_)
        | request::Kind::SetProperties(_)
        | request::Kind::InvokeAction(_) => SharePermission::DeviceControl,
        request::Kind::RenameDevice(_) => SharePermission::DeviceRename,
        request::Kind::ReorderDevices(_) => SharePermission::DeviceSort,
        request::Kind::UnbindDevice(_) => SharePermission::DeviceDelete,
        _ => return None,
    })
}

/// A request reaching the device service from a session.
pub(crate) struct DeviceRequest {
    pub(crate) envelope: Envelope,
    /// `None` for a member; the grant's device list for a co-user.
    pub(crate) grantee_devices: Option<Vec<[u8; 32]>>,
    pub(crate) reply: mpsc::UnboundedSender<Envelope>,
    /// Whether the stream stays open for events (WatchDevices).
    pub(crate) watch: bool,
}

struct Watcher {
    grantee_devices: Option<Vec<[u8; 32]>>,
    stream: mpsc::UnboundedSender<Envelope>,
    request_id: u64,
}

/// The device side of a head unit.
pub(crate) struct DeviceService {
    store: Arc<Mutex<Store>>,
    manager: Mutex<DeviceManager>,
    links: tokio::sync::Mutex<HashMap<[u8; 32], Arc<ClientSession>>>,
    connector: Connector,
    authority: [u8; 32],
    interfaces: Interfaces,
    watchers: Mutex<Vec<Watcher>>,
    started: Instant,
    /// The car's super tasks, once [`DeviceService::follow_automation`].
    automation: OnceLock<Weak<AutomationHost>>,
    /// The last value each bound device reported, by task device id: where
    /// a task's change trigger starts from.
    reported: Mutex<HashMap<DeviceId, BTreeMap<PropertyId, Value>>>,
    /// Tasks' commands waiting for the device's answer, by command id.
    waiting: Mutex<HashMap<u64, oneshot::Sender<Acknowledgement>>>,
}

impl DeviceService {
    pub(crate) fn new(
        store: Arc<Mutex<Store>>,
        connector: Connector,
        authority: [u8; 32],
        interfaces: Interfaces,
    ) -> Result<Arc<Self>, NodeError> {
        let handle_key = {
            let mut s = lock(&store);
            match s
                .get_setting(HANDLE_KEY_SETTING)?
                .as_deref()
                .and_then(unhex32)
            {
                Some(key) => key,
                None => {
                    let key: [u8; 32] = random_bytes()?;
                    s.set_setting(HANDLE_KEY_SETTING, &hex(&key))?;
                    key
                }
            }
        };
        let manager =
            DeviceManager::new(ManagerConfig::default(), Catalogue::builtin(), handle_key);
        Ok(Arc::new(Self {
            store,
            manager: Mutex::new(manager),
            links: tokio::sync::Mutex::default(),
            connector,
            authority,
            interfaces,
            watchers: Mutex::default(),
            started: Instant::now(),
            automation: OnceLock::new(),
            reported: Mutex::default(),
            waiting: Mutex::default(),
        }))
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Records a device the head unit just commissioned: its binding and the
    /// device secret (SPEC §12.6).
    pub(crate) fn add_binding(
        &self,
        record: &BindingRecord,
        secret: &[u8; 32],
    ) -> Result<(), NodeError> {
        {
            let mut store = lock(&self.store);
            store.put_binding(record)?;
            store.put_device_secret(&record.device_key, secret)?;
        }
        // Tasks may name it from now on.
        self.refresh_catalogue();
        Ok(())
    }

    /// Power-on or account switch (R17): presence starts from nothing and
    /// the LAN is scanned for `window`.
    pub(crate) async fn rescan(self: &Arc<Self>, account_switch: bool, window: Duration) -> u32 {
        {
            let mut manager = lock(&self.manager);
            let now = self.now_ms();
            if account_switch {
                manager.account_switched(now);
            } else {
                manager.start(now);
            }
        }
        // R17: no value is known until the devices report again.
        lock(&self.reported).clear();
        self.links.lock().await.clear();
        self.drain();
        self.scan(window).await
    }

    /// Browses the LAN for bound devices' tokens for up to `window` (or
    /// until every bound device with a secret is found) and opens a session
    /// to each one found. Returns how many are online afterwards.
    pub(crate) async fn scan(self: &Arc<Self>, window: Duration) -> u32 {
        let targets: Vec<([u8; 32], DeviceSecret)> = {
            let store = lock(&self.store);
            match store.list_bindings() {
                Ok(bindings) => bindings
                    .iter()
                    .filter_map(|b| {
                        store
                            .get_device_secret(&b.device_key)
                            .ok()
                            .flatten()
                            .map(|s| (b.device_key, DeviceSecret::new(s)))
                    })
                    .collect(),
                Err(e) => {
                    warn!(error = %e, "cannot list bindings to scan");
                    Vec::new()
                }
            }
        };
        let missing: Vec<_> = {
            let mut links = self.links.lock().await;
            // A session that closed but whose loss is not processed yet is
            // gone all the same.
            links.retain(|_, link| !link.is_closed());
            targets
                .into_iter()
                .filter(|(key, _)| !links.contains_key(key))
                .collect()
        };
        if !missing.is_empty() {
            let keys = missing.iter().map(|(_, s)| s.discovery_key()).collect();
            match Browser::start(keys, self.interfaces) {
                Ok(mut browser) => {
                    let deadline = tokio::time::Instant::now() + window;
                    let mut found = 0;
                    while found < missing.len() {
                        let Ok(Some(event)) =
                            tokio::time::timeout_at(deadline, browser.next()).await
                        else {
                            break;
                        };
                        if let DiscoveryEvent::Resolved(r) = event
                            && let Some((key, secret)) = missing.get(r.key_index)
                            && let Some(ip) = r.addresses.first()
                        {
                            let address = SocketAddr::new(*ip, r.port);
                            if self.connect(*key, secret, address).await {
                                found += 1;
                            }
                        }
                    }
                    let _ = browser.shutdown().await;
                }
                Err(e) => warn!(error = %e, "device scan could not browse"),
            }
        }
        self.links.lock().await.len() as u32
    }

    async fn connect(
        self: &Arc<Self>,
        key: [u8; 32],
        secret: &DeviceSecret,
        address: SocketAddr,
    ) -> bool {
        if self
            .links
            .lock()
            .await
            .get(&key)
            .is_some_and(|link| !link.is_closed())
        {
            return true;
        }
        let access = GrantAccess::device(secret.admission_key(), self.authority);
        let session = match self.connector.connect_with_grant(address, &access).await {
            Ok(s) => s,
            Err(e) => {
                debug!(error = %e, "a device's token resolved but its session failed");
                return false;
            }
        };
        if session.peer().certificate.public_key != key {
            warn!("a device answered with another certificate; dropped");
            return false;
        }
        let session = Arc::new(session);
        let values = match session
            .call(crate::wire::request(request::Kind::GetDevice(
                GetDevice::default(),
            )))
            .await
        {
            Ok(reply) => details_of(&reply).map(|d| d.values).unwrap_or_default(),
            Err(e) => {
                debug!(error = %e, "a device did not answer its first read");
                return false;
            }
        };
        {
            let mut links = self.links.lock().await;
            // Two scans may race to the same device: keep the first session.
            if links.get(&key).is_some_and(|l| !l.is_closed()) {
                session.close(tether_session::quic::CloseCode::Normal, "duplicate");
                return true;
            }
            links.insert(key, session.clone());
        }
        let accepted = {
            let store = lock(&self.store);
            let mut manager = lock(&self.manager);
            let now = self.now_ms();
            let device = DeviceRef::Bound(key);
            if let Err(e) = manager.handle_seen(&store, device, now) {
                warn!(error = %e, "a found device has no record");
            }
            match manager.handle_properties(&store, device, &values, now) {
                Ok(()) => true,
                Err(e) => {
                    warn!(error = %e, "a device reported values outside its model");
                    false
                }
            }
        };
        if accepted {
            self.observed(key, &values);
        }
        info!("bound device online");
        // Mark it offline when its session ends.
        let service = self.clone();
        tokio::spawn(async move {
            let _ = session.closed().await;
            service.lost(key).await;
        });
        self.drain();
        true
    }

    pub(crate) async fn lost(self: &Arc<Self>, key: [u8; 32]) {
        {
            let mut links = self.links.lock().await;
            // A newer session may already have replaced the lost one.
            if links.get(&key).is_some_and(|link| !link.is_closed()) {
                return;
            }
            links.remove(&key);
        }
        {
            let mut manager = lock(&self.manager);
            let now = self.now_ms();
            manager.handle_lost(DeviceRef::Bound(key), now);
        }
        self.drain();
    }

    /// The LAN session to a bound device, if it is online.
    pub(crate) async fn link(&self, key: &[u8; 32]) -> Option<Arc<ClientSession>> {
        self.links
            .lock()
            .await
            .get(key)
            .filter(|link| !link.is_closed())
            .cloned()
    }

    /// Resolves a handle (as listed to the head unit's screen).
    pub(crate) fn resolve(&self, handle: &[u8]) -> Result<DeviceRef, NodeError> {
        let store = lock(&self.store);
        lock(&self.manager)
            .resolve_handle(&store, Requester::HeadUnit, handle)
            .map_err(NodeError::Device)
    }

    /// A firmware version the head unit installed on a device.
    pub(crate) async fn firmware_installed(
        self: &Arc<Self>,
        device: DeviceRef,
        version: &str,
    ) -> Result<(), NodeError> {
        {
            let mut store = lock(&self.store);
            let mut manager = lock(&self.manager);
            let now = self.now_ms();
            manager
                .handle_firmware_installed(&mut store, device, version, now)
                .map_err(NodeError::Device)?;
        }
        self.drain();
        Ok(())
    }

    /// A device attached physically (R12).
    pub(crate) async fn attach_offline(
        self: &Arc<Self>,
        product_model: u16,
        firmware: Option<&str>,
    ) -> Result<Vec<u8>, NodeError> {
        let handle = {
            let mut store = lock(&self.store);
            let mut manager = lock(&self.manager);
            let now = self.now_ms();
            let device = manager
                .attach_offline(&mut store, product_model, firmware, now)
                .map_err(NodeError::Device)?;
            manager.handle_of(&device).to_vec()
        };
        self.drain();
        Ok(handle)
    }

    /// A management request from the head unit's own screen (sees offline
    /// devices too).
    pub(crate) async fn local(
        self: &Arc<Self>,
        kind: request::Kind,
    ) -> Result<response::Kind, NodeError> {
        let result = {
            let mut store = lock(&self.store);
            let mut manager = lock(&self.manager);
            let now = self.now_ms();
            manager.handle_request(&mut store, Requester::HeadUnit, &kind, now)
        };
        self.drain();
        result.map_err(NodeError::Device)
    }

    /// A management request from a session (a member or a co-user).
    pub(crate) async fn handle(self: &Arc<Self>, request: DeviceRequest) {
        let reply = {
            let mut store = lock(&self.store);
            let mut manager = lock(&self.manager);
            let now = self.now_ms();
            let requester = match &request.grantee_devices {
                Some(devices) => Requester::Grantee(devices),
                None => Requester::Member,
            };
            manager.handle_envelope(&mut store, requester, &request.envelope, now)
        };
        let failed = matches!(reply.body, Some(envelope::Body::Error(_)));
        // Before the answer: a phone that unbound a device finds the tasks
        // naming it broken as soon as it hears back.
        self.drain();
        let _ = request.reply.send(reply);
        if request.watch && !failed {
            let mut watchers = lock(&self.watchers);
            // Watchers whose stream ended go now, not at the next member
            // event, which may never come: memory stays bounded by the
            // live watches.
            watchers.retain(|w| !w.stream.is_closed());
            watchers.push(Watcher {
                grantee_devices: request.grantee_devices,
                stream: request.reply,
                request_id: request.envelope.request_id,
            });
        }
    }

    /// How many device watchers are held (live or not yet pruned).
    pub(crate) fn watcher_count(&self) -> usize {
        lock(&self.watchers).len()
    }

    /// Carries out what the manager asked for: events now, deliveries in
    /// their own tasks.
    fn drain(self: &Arc<Self>) {
        loop {
            let output = lock(&self.manager).poll_output();
            match output {
                Output::Pending => return,
                // Scans run from `rescan`/`scan`, which the node schedules.
                Output::Scan(reason) => debug!(?reason, "device scan requested"),
                Output::Command(command) => {
                    let service = self.clone();
                    tokio::spawn(async move { service.deliver(command).await });
                }
                Output::Forget(DeviceRef::Bound(key)) => {
                    // Unbound: its record is gone already.
                    self.device_left(key);
                    let service = self.clone();
                    tokio::spawn(async move { service.forget(key).await });
                }
                // An offline device's port driver is the platform's.
                Output::Forget(DeviceRef::Offline(_)) => {}
                Output::Event(update) => {
                    if update.audience != tether_devices::Audience::Members {
                        continue;
                    }
                    let key = match update.device {
                        DeviceRef::Bound(key) => Some(key),
                        DeviceRef::Offline(_) => None,
                    };
                    lock(&self.watchers).retain(|w| {
                        let visible = match (&w.grantee_devices, key) {
                            (None, _) => true,
                            (Some(list), Some(k)) => list.contains(&k),
                            (Some(_), None) => false,
                        };
                        if !visible {
                            return !w.stream.is_closed();
                        }
                        w.stream
                            .send(Envelope {
                                request_id: w.request_id,
                                body: Some(envelope::Body::Response(tether_proto::v1::Response {
                                    kind: Some(response::Kind::DeviceEvent(update.event.clone())),
                                })),
                                ..Envelope::default()
                            })
                            .is_ok()
                    });
                }
            }
        }
    }

    /// R13: an unbound device is told to forget its credentials.
    async fn forget(self: &Arc<Self>, key: [u8; 32]) {
        let link = self.links.lock().await.remove(&key);
        match link {
            Some(link) => {
                let unbind =
                    crate::wire::request(request::Kind::UnbindDevice(UnbindDevice::default()));
                if let Err(e) = link.call(unbind).await {
                    warn!(error = %e, "an unbound device did not confirm forgetting");
                }
                link.close(tether_session::quic::CloseCode::Normal, "unbound");
            }
            None => warn!(
                "an unbound device is offline; its secret is deleted, so it cannot be reached again"
            ),
        }
    }

    async fn deliver(self: &Arc<Self>, command: DeviceCommand) {
        let DeviceRef::Bound(key) = command.device else {
            // An offline device attached physically: its port driver is the
            // platform's; nothing to send on the LAN.
            self.acknowledge(command.id, Err("the device has no LAN session".into()));
            return;
        };
        let Some(link) = self.link(&key).await else {
            warn!("a command for an offline device was dropped");
            self.acknowledge(command.id, Err("the device is offline".into()));
            return;
        };
        let kind = match command.control {
            Control::SetProperties(values) => request::Kind::SetProperties(SetProperties {
                handle: Vec::new(),
                values,
            }),
            Control::InvokeAction {
                siid,
                aiid,
                arguments,
            } => request::Kind::InvokeAction(InvokeAction {
                handle: Vec::new(),
                siid,
                aiid,
                arguments,
            }),
        };
        let answer = match link.call(crate::wire::request(kind)).await {
            Ok(reply) => {
                if let Some(details) = details_of(&reply) {
                    self.report(key, &details.values);
                }
                Ok(())
            }
            Err(e) => {
                warn!(error = %e, "a device refused or missed a command");
                Err(format!("the device did not take it: {e}"))
            }
        };
        self.drain();
        // After the report: whoever waits sees the device's new state.
        self.acknowledge(command.id, answer);
    }

    fn report(&self, key: [u8; 32], values: &[PropertyValue]) {
        let accepted = {
            let store = lock(&self.store);
            let mut manager = lock(&self.manager);
            let now = self.now_ms();
            manager.handle_properties(&store, DeviceRef::Bound(key), values, now)
        };
        match accepted {
            Ok(()) => self.observed(key, values),
            Err(e) => warn!(error = %e, "a device reported values outside its model"),
        }
    }

    /// Closes every device session (shutdown).
    pub(crate) async fn close(&self) {
        for (_, link) in self.links.lock().await.drain() {
            link.close(tether_session::quic::CloseCode::Shutdown, "shutting down");
        }
    }
}

fn details_of(reply: &Envelope) -> Option<DeviceDetails> {
    match &reply.body {
        Some(envelope::Body::Response(r)) => match &r.kind {
            Some(response::Kind::DeviceDetails(d)) => Some(d.clone()),
            _ => None,
        },
        _ => None,
    }
}
