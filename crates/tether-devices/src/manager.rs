//! [`DeviceManager`]: the head unit's device-management core (SPEC §16).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use tether_proto::v1::{
    ControlAccepted, DeviceDetails, DeviceEntry, DeviceEvent, DeviceList, DeviceModel,
    DeviceRemoved, DeviceValue, Envelope, Error as WireError, ErrorCode, EventOccurred,
    PropertyValue, PropertyValues, Request, Response, device_event, envelope, request, response,
};
use tether_store::Store;

use crate::catalogue::{ACCESS_READ, Catalogue};
use crate::handle::{DeviceRef, Handle, HandleKey};
use crate::validate;
use crate::{DeviceError, OrderError};

/// Longest device name, in bytes of UTF-8.
pub const MAX_NAME_BYTES: usize = 64;
/// Most property values in one `SetProperties`.
pub const MAX_VALUES_PER_REQUEST: usize = 32;
/// Default of [`Config::presence_timeout_ms`].
pub const DEFAULT_PRESENCE_TIMEOUT_MS: u64 = 90_000;

/// Settings of a [`DeviceManager`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// A bound device that has not been seen (`handle_seen`, a property
    /// report or an event) for this long is marked offline by
    /// [`DeviceManager::handle_timeout`]. Offline devices attached physically
    /// stay present until [`DeviceManager::handle_lost`]: the host knows
    /// when a cable is pulled.
    pub presence_timeout_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            presence_timeout_ms: DEFAULT_PRESENCE_TIMEOUT_MS,
        }
    }
}

/// Who asks: decides which devices a request can see (SPEC §16.5). Whether
/// the requester may manage devices at all (its role, a share grant's
/// permissions) is checked by the caller before the request gets here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requester<'a> {
    /// The head unit's own screen: sees bound devices and offline devices
    /// attached physically.
    HeadUnit,
    /// A member of the account over a session (a phone): sees bound devices
    /// only. Offline devices never leave the head unit (R12).
    Member,
    /// A co-user under a share grant (R16): sees only the bound devices whose
    /// keys the grant lists.
    Grantee(&'a [[u8; 32]]),
}

/// Why the manager asks for a scan (R17).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanReason {
    /// The head unit started ([`DeviceManager::start`]).
    Startup,
    /// Another account signed in ([`DeviceManager::account_switched`]).
    AccountSwitch,
}

/// Who may be shown an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// The head unit's own screen only. Every event about an offline device
    /// has this audience (R12: nothing is synced to other terminals).
    HeadUnit,
    /// The head unit's screen and the watch streams of members (and of
    /// grantees whose grant lists the device).
    Members,
}

/// What a command asks of a device.
#[derive(Debug, Clone, PartialEq)]
pub enum Control {
    /// Write these properties; each was checked against the model.
    SetProperties(Vec<PropertyValue>),
    /// Run an action; the arguments match its inputs.
    InvokeAction {
        /// Service iid.
        siid: u32,
        /// Action iid.
        aiid: u32,
        /// Arguments, in the order of the action's inputs.
        arguments: Vec<DeviceValue>,
    },
}

/// A command for the host to deliver to a device over its own transport.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceCommand {
    /// The number the requester got in `ControlAccepted`.
    pub id: u64,
    /// The device.
    pub device: DeviceRef,
    /// What to do.
    pub control: Control,
}

/// An event for watchers, with its audience.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceUpdate {
    /// The device it is about (for the host's filtering, e.g. by a share
    /// grant's device list; never put on the wire).
    pub device: DeviceRef,
    /// Who may see it.
    pub audience: Audience,
    /// The wire event (response 103).
    pub event: DeviceEvent,
}

/// What the manager asks of its host, drained by
/// [`DeviceManager::poll_output`] until [`Output::Pending`].
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub enum Output {
    /// Scan for devices (Bluetooth, LAN, physical ports) and report each one
    /// found with `handle_seen` (R17).
    Scan(ScanReason),
    /// Deliver a command to a device.
    Command(DeviceCommand),
    /// Tell the device to forget its credentials (a bound device) or its
    /// pairing with this head unit (an offline one): it was unbound and its
    /// record is already deleted.
    Forget(DeviceRef),
    /// Show an event to its audience.
    Event(DeviceUpdate),
    /// Nothing more until the next input.
    Pending,
}

/// One device as the store lists it.
#[derive(Debug, Clone)]
struct Listed {
    device: DeviceRef,
    name: String,
    product_model: u16,
    sort_order: i64,
    firmware_version: Option<String>,
}

/// The head unit's device-management core (R12, R14, R17; SPEC §16).
///
/// Sans-IO: it reads no clock (times are `now_ms`, monotonic milliseconds),
/// opens no socket and spawns nothing. Records live in the caller's
/// [`Store`] (bound devices in `bindings`, offline devices in
/// `offline_devices`); presence and the last reported property values live
/// in memory only.
///
/// # Order of calls
/// 1. [`DeviceManager::start`] once, at power-on, then drain
///    [`DeviceManager::poll_output`]: it asks for a scan (R17).
/// 2. Feed inputs as they come: requests with
///    [`DeviceManager::handle_request`] (or [`DeviceManager::handle_envelope`]),
///    what the transport learns with `handle_seen`, `handle_lost`,
///    `handle_properties`, `handle_device_event`, and a physical attach with
///    `attach_offline`.
/// 3. After every input, drain `poll_output` until [`Output::Pending`];
///    call [`DeviceManager::handle_timeout`] at [`DeviceManager::poll_timeout`].
/// 4. At an account switch, [`DeviceManager::account_switched`] and drain.
#[derive(Debug)]
pub struct DeviceManager {
    config: Config,
    catalogue: Catalogue,
    handles: HandleKey,
    /// Devices seen since the last scan, with when they were last seen.
    online: BTreeMap<DeviceRef, u64>,
    /// The last value each device reported, by (siid, piid).
    values: BTreeMap<DeviceRef, BTreeMap<(u32, u32), DeviceValue>>,
    outputs: VecDeque<Output>,
    next_command_id: u64,
    last_scan_ms: Option<u64>,
}

impl DeviceManager {
    /// A manager over `catalogue`. `handle_key` derives the handles the list
    /// shows (SPEC §16.3): draw it at random once and keep it (e.g. in the
    /// store's settings) for handles that survive a restart, or draw a new
    /// one to make every handle given out so far unknown.
    pub fn new(config: Config, catalogue: Catalogue, handle_key: [u8; 32]) -> Self {
        Self {
            config,
            catalogue,
            handles: HandleKey::new(handle_key),
            online: BTreeMap::new(),
            values: BTreeMap::new(),
            outputs: VecDeque::new(),
            next_command_id: 1,
            last_scan_ms: None,
        }
    }

    /// The catalogue of known products.
    pub fn catalogue(&self) -> &Catalogue {
        &self.catalogue
    }

    /// The handle the list shows for `device`.
    pub fn handle_of(&self, device: &DeviceRef) -> Handle {
        self.handles.handle(device)
    }

    /// Whether `device` has been seen since the last scan and not lost since.
    pub fn is_online(&self, device: &DeviceRef) -> bool {
        self.online.contains_key(device)
    }

    /// When the last scan was asked for, if any.
    pub fn last_scan_ms(&self) -> Option<u64> {
        self.last_scan_ms
    }

    /// The device `handle` names among those `requester` may see.
    pub fn resolve_handle(
        &self,
        store: &Store,
        requester: Requester<'_>,
        handle: &[u8],
    ) -> Result<DeviceRef, DeviceError> {
        Ok(self.resolve(store, requester, handle)?.device)
    }

    // ------------------------------------------------------- scans (R17)

    /// Power-on (R17): every device is offline until seen, no property value
    /// is known, and a scan is asked for ([`Output::Scan`]).
    pub fn start(&mut self, now_ms: u64) {
        self.forget_presence(now_ms);
        self.outputs.push_back(Output::Scan(ScanReason::Startup));
    }

    /// Account switch (R17): as [`DeviceManager::start`], and queued events
    /// are dropped, because their watchers belonged to the previous account.
    /// Queued commands and forget requests stay.
    pub fn account_switched(&mut self, now_ms: u64) {
        self.outputs.retain(|o| !matches!(o, Output::Event(_)));
        self.forget_presence(now_ms);
        self.outputs
            .push_back(Output::Scan(ScanReason::AccountSwitch));
    }

    /// R17: a scan starts from nothing; a device is online only once seen.
    fn forget_presence(&mut self, now_ms: u64) {
        self.online.clear();
        self.values.clear();
        self.last_scan_ms = Some(now_ms);
    }

    // ---------------------------------------------------------- outputs

    /// The next thing the host must do; [`Output::Pending`] when there is
    /// nothing.
    pub fn poll_output(&mut self) -> Output {
        self.outputs.pop_front().unwrap_or(Output::Pending)
    }

    /// When [`DeviceManager::handle_timeout`] must next be called: the
    /// earliest time a bound device would go offline unseen.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<u64> {
        self.online
            .iter()
            .filter(|(device, _)| !device.is_offline_attached())
            .map(|(_, seen)| seen.saturating_add(self.config.presence_timeout_ms))
            .min()
    }

    /// Marks offline every bound device not seen for
    /// [`Config::presence_timeout_ms`].
    pub fn handle_timeout(&mut self, now_ms: u64) {
        let timeout = self.config.presence_timeout_ms;
        let expired: Vec<DeviceRef> = self
            .online
            .iter()
            .filter(|(device, seen)| {
                !device.is_offline_attached() && seen.saturating_add(timeout) <= now_ms
            })
            .map(|(device, _)| *device)
            .collect();
        for device in expired {
            self.online.remove(&device);
            self.emit(device, device_event::Kind::Online(false));
        }
    }

    // ----------------------------------------------- inputs from the host

    /// The transport found `device` (a scan result, a connection, a
    /// heartbeat). It is online from now; the first sighting is an event.
    pub fn handle_seen(
        &mut self,
        store: &Store,
        device: DeviceRef,
        now_ms: u64,
    ) -> Result<(), DeviceError> {
        self.lookup(store, &device)?;
        self.mark_seen(device, now_ms);
        Ok(())
    }

    /// The transport lost `device` (disconnect, cable pulled). Its last
    /// property values are kept and shown until it reports again.
    pub fn handle_lost(&mut self, device: DeviceRef, _now_ms: u64) {
        if self.online.remove(&device).is_some() {
            self.emit(device, device_event::Kind::Online(false));
        }
    }

    /// `device` reported property values. All are checked against its model
    /// first (a bad report changes nothing); then they are kept, the device
    /// counts as seen, and the values of notify properties become an event.
    pub fn handle_properties(
        &mut self,
        store: &Store,
        device: DeviceRef,
        values: &[PropertyValue],
        now_ms: u64,
    ) -> Result<(), DeviceError> {
        let listed = self.lookup(store, &device)?;
        let model = self.model(listed.product_model)?;
        let mut notified = Vec::new();
        for value in values {
            validate::check_report(model, value.siid, value.piid, value.value.as_ref())?;
            let spec = validate::find_property(model, value.siid, value.piid)?;
            if spec.access & crate::catalogue::ACCESS_NOTIFY != 0 {
                notified.push(value.clone());
            }
        }
        self.mark_seen(device, now_ms);
        let state = self.values.entry(device).or_default();
        for value in values {
            if let Some(v) = &value.value {
                state.insert((value.siid, value.piid), v.clone());
            }
        }
        if !notified.is_empty() {
            self.emit(
                device,
                device_event::Kind::PropertiesChanged(PropertyValues { values: notified }),
            );
        }
        Ok(())
    }

    /// `device` reported an event of its model; it becomes an event for
    /// watchers.
    pub fn handle_device_event(
        &mut self,
        store: &Store,
        device: DeviceRef,
        siid: u32,
        eiid: u32,
        arguments: &[DeviceValue],
        now_ms: u64,
    ) -> Result<(), DeviceError> {
        let listed = self.lookup(store, &device)?;
        validate::check_event(self.model(listed.product_model)?, siid, eiid, arguments)?;
        self.mark_seen(device, now_ms);
        self.emit(
            device,
            device_event::Kind::Event(EventOccurred {
                siid,
                eiid,
                arguments: arguments.to_vec(),
            }),
        );
        Ok(())
    }

    /// `device` now runs `firmware_version` (an upgrade finished, SPEC §15;
    /// R12 for offline devices). Stored, and shown as a change.
    pub fn handle_firmware_installed(
        &mut self,
        store: &mut Store,
        device: DeviceRef,
        firmware_version: &str,
        _now_ms: u64,
    ) -> Result<(), DeviceError> {
        let found = match device {
            DeviceRef::Bound(key) => store.set_binding_firmware(&key, Some(firmware_version))?,
            DeviceRef::Offline(id) => {
                store.set_offline_device_firmware(id, Some(firmware_version))?
            }
        };
        if !found {
            return Err(DeviceError::UnknownDevice);
        }
        self.emit_changed(store, device)
    }

    /// An offline device was attached physically (R12). It gets a record
    /// holding only its product model, the model's name as its name, the
    /// last place in the list and its firmware version: no account, key,
    /// certificate, serial, MAC or SSID, because the table has no column for
    /// any. It is present from now on, and the head unit's screen is told.
    ///
    /// Call it once per new device; when a known one is plugged in again,
    /// report it with [`DeviceManager::handle_seen`].
    pub fn attach_offline(
        &mut self,
        store: &mut Store,
        product_model: u16,
        firmware_version: Option<&str>,
        now_ms: u64,
    ) -> Result<DeviceRef, DeviceError> {
        let name = self.model(product_model)?.name.clone();
        let last = all_devices(store)?
            .iter()
            .map(|d| d.sort_order)
            .max()
            .map_or(0, |m| m.saturating_add(1));
        // R12: only the product model, a name, an order and a version.
        let local_id = store.add_offline_device(product_model, &name, last, firmware_version)?;
        let device = DeviceRef::Offline(local_id);
        self.online.insert(device, now_ms);
        self.emit_changed(store, device)?;
        Ok(device)
    }

    // ------------------------------------------------------------ requests

    /// Whether `request` is a management request (fields 100–129).
    pub fn is_management(request: &request::Kind) -> bool {
        crate::access::operation(request).is_some()
    }

    /// Answers a request envelope: a `Response` envelope, or an `Error` one
    /// whose code comes from [`DeviceError::code`]. The `request_id` is
    /// echoed. A `WatchDevices` gets the list; the host keeps the stream and
    /// sends it the [`Output::Event`]s its requester may see.
    pub fn handle_envelope(
        &mut self,
        store: &mut Store,
        requester: Requester<'_>,
        envelope: &Envelope,
        now_ms: u64,
    ) -> Envelope {
        let body = match &envelope.body {
            Some(envelope::Body::Request(Request { kind: Some(kind) })) => {
                match self.handle_request(store, requester, kind, now_ms) {
                    Ok(kind) => envelope::Body::Response(Response { kind: Some(kind) }),
                    Err(e) => envelope::Body::Error(wire_error(&e)),
                }
            }
            _ => envelope::Body::Error(WireError {
                code: ErrorCode::BadRequest as i32,
                message: "not a request".into(),
            }),
        };
        Envelope {
            request_id: envelope.request_id,
            body: Some(body),
            ..Envelope::default()
        }
    }

    /// Handles one management request from `requester` and returns the
    /// response. Presence timeouts up to `now_ms` are applied first.
    /// Commands, forget requests and events are queued for
    /// [`DeviceManager::poll_output`].
    pub fn handle_request(
        &mut self,
        store: &mut Store,
        requester: Requester<'_>,
        request: &request::Kind,
        now_ms: u64,
    ) -> Result<response::Kind, DeviceError> {
        // Presence is current before anything is answered.
        self.handle_timeout(now_ms);
        match request {
            request::Kind::ListDevices(_) | request::Kind::WatchDevices(_) => {
                Ok(response::Kind::DeviceList(self.list(store, requester)?))
            }
            request::Kind::GetDevice(get) => {
                let listed = self.resolve(store, requester, &get.handle)?;
                Ok(response::Kind::DeviceDetails(self.details(&listed)))
            }
            request::Kind::SetProperties(set) => {
                let listed = self.resolve(store, requester, &set.handle)?;
                self.set_properties(&listed, &set.values)
            }
            request::Kind::InvokeAction(invoke) => {
                let listed = self.resolve(store, requester, &invoke.handle)?;
                self.invoke_action(&listed, invoke.siid, invoke.aiid, &invoke.arguments)
            }
            request::Kind::RenameDevice(rename) => {
                let listed = self.resolve(store, requester, &rename.handle)?;
                self.rename(store, &listed, &rename.name)?;
                Ok(response::Kind::DeviceList(self.list(store, requester)?))
            }
            request::Kind::ReorderDevices(reorder) => {
                self.reorder(store, requester, &reorder.handles)?;
                Ok(response::Kind::DeviceList(self.list(store, requester)?))
            }
            request::Kind::UnbindDevice(unbind) => {
                let listed = self.resolve(store, requester, &unbind.handle)?;
                self.unbind(store, listed.device)?;
                Ok(response::Kind::DeviceList(self.list(store, requester)?))
            }
            _ => Err(DeviceError::NotManagement),
        }
    }

    fn list(&self, store: &Store, requester: Requester<'_>) -> Result<DeviceList, DeviceError> {
        Ok(DeviceList {
            devices: visible(store, requester)?
                .iter()
                .map(|l| self.entry(l))
                .collect(),
        })
    }

    /// R14: the head unit shows a device's settings (the entry), its model
    /// and its state (the readable values it last reported).
    fn details(&self, listed: &Listed) -> DeviceDetails {
        let model = self.catalogue.get(listed.product_model);
        let values = match (model, self.values.get(&listed.device)) {
            (Some(model), Some(state)) => state
                .iter()
                .filter(|((siid, piid), _)| {
                    validate::find_property(model, *siid, *piid)
                        .is_ok_and(|p| p.access & ACCESS_READ != 0)
                })
                .map(|(&(siid, piid), value)| PropertyValue {
                    siid,
                    piid,
                    value: Some(value.clone()),
                })
                .collect(),
            _ => Vec::new(),
        };
        DeviceDetails {
            device: Some(self.entry(listed)),
            model: model.cloned(),
            values,
        }
    }

    fn set_properties(
        &mut self,
        listed: &Listed,
        values: &[PropertyValue],
    ) -> Result<response::Kind, DeviceError> {
        let model = self.model(listed.product_model)?;
        if values.is_empty() || values.len() > MAX_VALUES_PER_REQUEST {
            return Err(DeviceError::ValueCount);
        }
        let mut written = BTreeSet::new();
        for value in values {
            if !written.insert((value.siid, value.piid)) {
                return Err(DeviceError::DuplicateProperty {
                    siid: value.siid,
                    piid: value.piid,
                });
            }
            validate::check_write(model, value.siid, value.piid, value.value.as_ref())?;
        }
        self.command(listed.device, Control::SetProperties(values.to_vec()))
    }

    fn invoke_action(
        &mut self,
        listed: &Listed,
        siid: u32,
        aiid: u32,
        arguments: &[DeviceValue],
    ) -> Result<response::Kind, DeviceError> {
        validate::check_action(self.model(listed.product_model)?, siid, aiid, arguments)?;
        self.command(
            listed.device,
            Control::InvokeAction {
                siid,
                aiid,
                arguments: arguments.to_vec(),
            },
        )
    }

    /// Queues a checked command for an online device.
    fn command(
        &mut self,
        device: DeviceRef,
        control: Control,
    ) -> Result<response::Kind, DeviceError> {
        if !self.is_online(&device) {
            return Err(DeviceError::Offline);
        }
        let id = self.next_command_id;
        self.next_command_id += 1;
        self.outputs.push_back(Output::Command(DeviceCommand {
            id,
            device,
            control,
        }));
        Ok(response::Kind::ControlAccepted(ControlAccepted {
            command_id: id,
        }))
    }

    fn rename(
        &mut self,
        store: &mut Store,
        listed: &Listed,
        name: &str,
    ) -> Result<(), DeviceError> {
        if name.is_empty() || name.len() > MAX_NAME_BYTES || name.chars().any(char::is_control) {
            return Err(DeviceError::BadName);
        }
        let found = match listed.device {
            DeviceRef::Bound(key) => store.rename_binding(&key, name)?,
            DeviceRef::Offline(id) => store.rename_offline_device(id, name)?,
        };
        if !found {
            return Err(DeviceError::UnknownDevice);
        }
        self.emit_changed(store, listed.device)
    }

    /// Applies a new order of the requester's devices. The list must name
    /// each device the requester sees exactly once. Devices the requester
    /// does not see keep their places; then every device is renumbered
    /// 0, 1, 2 … in one transaction.
    fn reorder(
        &mut self,
        store: &mut Store,
        requester: Requester<'_>,
        handles: &[Vec<u8>],
    ) -> Result<(), DeviceError> {
        let seen = visible(store, requester)?;
        if handles.len() != seen.len() {
            return Err(OrderError::WrongLength {
                expected: seen.len(),
                got: handles.len(),
            }
            .into());
        }
        let index: BTreeMap<Handle, usize> = seen
            .iter()
            .enumerate()
            .map(|(i, l)| (self.handle_of(&l.device), i))
            .collect();
        let mut taken = BTreeSet::new();
        let mut order = Vec::with_capacity(handles.len());
        for (position, bytes) in handles.iter().enumerate() {
            let i = Handle::from_bytes(bytes)
                .and_then(|h| index.get(&h).copied())
                .ok_or(OrderError::UnknownHandle(position))?;
            if !taken.insert(i) {
                return Err(OrderError::Duplicate(position).into());
            }
            order.push(seen[i].device);
        }
        // The requester's devices take the places they held, in the new order.
        let mine: BTreeSet<DeviceRef> = seen.iter().map(|l| l.device).collect();
        let all = all_devices(store)?;
        let mut reordered = order.into_iter();
        let mut bound = Vec::new();
        let mut offline = Vec::new();
        let mut changed = Vec::new();
        for (position, current) in all.iter().enumerate() {
            let device = if mine.contains(&current.device) {
                reordered
                    .next()
                    .expect("the order holds exactly the requester's devices")
            } else {
                current.device
            };
            let sort_order = i64::try_from(position).unwrap_or(i64::MAX);
            let before = all
                .iter()
                .find(|l| l.device == device)
                .map(|l| l.sort_order);
            if before == Some(sort_order) {
                continue;
            }
            changed.push(device);
            match device {
                DeviceRef::Bound(key) => bound.push((key, sort_order)),
                DeviceRef::Offline(id) => offline.push((id, sort_order)),
            }
        }
        if !store.set_device_sort_orders(&bound, &offline)? {
            return Err(DeviceError::UnknownDevice);
        }
        for device in changed {
            self.emit_changed(store, device)?;
        }
        Ok(())
    }

    /// Unbinds: deletes the record, forgets presence and values, asks the
    /// host to tell the device to forget its credentials, and tells watchers.
    fn unbind(&mut self, store: &mut Store, device: DeviceRef) -> Result<(), DeviceError> {
        let removed = match device {
            DeviceRef::Bound(key) => store.remove_binding(&key)?,
            DeviceRef::Offline(id) => store.remove_offline_device(id)?,
        };
        if !removed {
            return Err(DeviceError::UnknownDevice);
        }
        self.online.remove(&device);
        self.values.remove(&device);
        self.outputs.push_back(Output::Forget(device));
        self.emit(device, device_event::Kind::Removed(DeviceRemoved {}));
        Ok(())
    }

    // ------------------------------------------------------------ helpers

    fn model(&self, product_model: u16) -> Result<&DeviceModel, DeviceError> {
        self.catalogue
            .get(product_model)
            .ok_or(DeviceError::UnknownModel(product_model))
    }

    /// The device `handle` names among those `requester` sees.
    fn resolve(
        &self,
        store: &Store,
        requester: Requester<'_>,
        handle: &[u8],
    ) -> Result<Listed, DeviceError> {
        let handle = Handle::from_bytes(handle).ok_or(DeviceError::MalformedHandle)?;
        visible(store, requester)?
            .into_iter()
            .find(|l| self.handle_of(&l.device) == handle)
            .ok_or(DeviceError::UnknownDevice)
    }

    /// The stored record of `device`.
    fn lookup(&self, store: &Store, device: &DeviceRef) -> Result<Listed, DeviceError> {
        let listed = match *device {
            DeviceRef::Bound(key) => store.get_binding(&key)?.map(|r| Listed {
                device: *device,
                name: r.name,
                product_model: r.product_model,
                sort_order: r.sort_order,
                firmware_version: r.firmware_version,
            }),
            DeviceRef::Offline(id) => store.get_offline_device(id)?.map(|r| Listed {
                device: *device,
                name: r.name,
                product_model: r.product_model,
                sort_order: r.sort_order,
                firmware_version: r.firmware_version,
            }),
        };
        listed.ok_or(DeviceError::UnknownDevice)
    }

    fn entry(&self, listed: &Listed) -> DeviceEntry {
        DeviceEntry {
            handle: self.handle_of(&listed.device).to_vec(),
            name: listed.name.clone(),
            product_model: u32::from(listed.product_model),
            sort_order: listed.sort_order,
            online: self.is_online(&listed.device),
            offline_attached: listed.device.is_offline_attached(),
            firmware_version: listed.firmware_version.clone().unwrap_or_default(),
        }
    }

    fn mark_seen(&mut self, device: DeviceRef, now_ms: u64) {
        if self.online.insert(device, now_ms).is_none() {
            self.emit(device, device_event::Kind::Online(true));
        }
    }

    fn emit_changed(&mut self, store: &Store, device: DeviceRef) -> Result<(), DeviceError> {
        let entry = self.entry(&self.lookup(store, &device)?);
        self.emit(device, device_event::Kind::Changed(entry));
        Ok(())
    }

    /// Queues an event. R12: an offline device's events are for the head
    /// unit's screen only; nothing about it is synced to other terminals.
    fn emit(&mut self, device: DeviceRef, kind: device_event::Kind) {
        let audience = if device.is_offline_attached() {
            Audience::HeadUnit
        } else {
            Audience::Members
        };
        self.outputs.push_back(Output::Event(DeviceUpdate {
            device,
            audience,
            event: DeviceEvent {
                handle: self.handle_of(&device).to_vec(),
                kind: Some(kind),
            },
        }));
    }
}

/// The `Error` body for a refusal. Internal faults get a generic message, so
/// no path or SQL text reaches a peer (R2).
fn wire_error(error: &DeviceError) -> WireError {
    let code = error.code();
    let message = if code == ErrorCode::Internal {
        "internal error".to_owned()
    } else {
        error.to_string()
    };
    WireError {
        code: code as i32,
        message,
    }
}

/// Every device, bound and offline, in the user's order (then by name, then
/// bound before offline), as the head unit's screen shows them.
fn all_devices(store: &Store) -> Result<Vec<Listed>, DeviceError> {
    let mut all: Vec<Listed> = store
        .list_bindings()?
        .into_iter()
        .map(|r| Listed {
            device: DeviceRef::Bound(r.device_key),
            name: r.name,
            product_model: r.product_model,
            sort_order: r.sort_order,
            firmware_version: r.firmware_version,
        })
        .collect();
    all.extend(store.list_offline_devices()?.into_iter().map(|r| Listed {
        device: DeviceRef::Offline(r.local_id),
        name: r.name,
        product_model: r.product_model,
        sort_order: r.sort_order,
        firmware_version: r.firmware_version,
    }));
    all.sort_by(|a, b| (a.sort_order, &a.name, a.device).cmp(&(b.sort_order, &b.name, b.device)));
    Ok(all)
}

/// The devices `requester` may see, in order.
fn visible(store: &Store, requester: Requester<'_>) -> Result<Vec<Listed>, DeviceError> {
    let mut all = all_devices(store)?;
    match requester {
        Requester::HeadUnit => {}
        // R12: offline devices are never shown to another terminal.
        Requester::Member => all.retain(|l| matches!(l.device, DeviceRef::Bound(_))),
        Requester::Grantee(keys) => {
            all.retain(|l| matches!(l.device, DeviceRef::Bound(key) if keys.contains(&key)))
        }
    }
    Ok(all)
}
