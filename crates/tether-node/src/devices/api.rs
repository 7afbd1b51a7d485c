//! The device-management surface of the node (SPEC §12.6, §16): what the
//! head unit's own screen does, and what a phone does through the car.

use tether_devices::DeviceRef;
use tether_proto::v1::{
    DeviceEntry, DeviceValue, GetDevice, InvokeAction, ListDevices, OtaManifest, PropertyValue,
    RenameDevice, ReorderDevices, SetProperties, UnbindDevice, request, response,
};
use tether_store::BindingRecord;

use crate::ota::{OtaProgress, OtaReport, send_firmware};
use crate::wire::{answer, request};
use crate::{HeadUnit, NodeError, VehicleLink};

/// One device as a list shows it. `handle` is opaque (SPEC §16.3): neither
/// the device key nor a hardware identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Pass it back to address this device.
    pub handle: Vec<u8>,
    /// The user's name for it.
    pub name: String,
    /// The vendor's product model.
    pub product_model: u16,
    /// Its place in the list.
    pub sort_order: i64,
    /// Seen since the last scan.
    pub online: bool,
    /// Attached physically, bound to no account (R12).
    pub offline_attached: bool,
    /// Empty when unknown.
    pub firmware_version: String,
}

impl DeviceInfo {
    /// The name the car's super tasks give this device (SPEC §18.6): the
    /// lowercase hex of [`DeviceInfo::handle`]. The head unit's screen, a
    /// member's phone and a co-user list the same handle for a device, and
    /// it stays the same across restarts of the car; a task naming it
    /// validates while the device is bound to the car. (An offline device
    /// attached physically, R12, cannot be named by a task.)
    pub fn task_device(&self) -> tether_automation::DeviceId {
        crate::automation::catalogue::task_device_id(&self.handle)
    }
}

impl From<&DeviceEntry> for DeviceInfo {
    fn from(e: &DeviceEntry) -> Self {
        Self {
            handle: e.handle.clone(),
            name: e.name.clone(),
            product_model: u16::try_from(e.product_model).unwrap_or(u16::MAX),
            sort_order: e.sort_order,
            online: e.online,
            offline_attached: e.offline_attached,
            firmware_version: e.firmware_version.clone(),
        }
    }
}

/// What binding a device gave the head unit, to keep (SPEC §12.5, §12.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommissionedDevice {
    /// The device's public key (its identity in the account).
    pub device_key: [u8; 32],
    /// Its encoded certificate.
    pub certificate: Vec<u8>,
    /// The certificate's serial.
    pub serial: u64,
    /// The vendor's product model.
    pub product_model: u16,
    /// The name to list it under.
    pub name: String,
    /// The SSID it joined, if any.
    pub ssid: Option<Vec<u8>>,
    /// The device secret from the pairing (SPEC §12.6).
    pub device_secret: [u8; 32],
}

fn list_of(kind: response::Kind) -> Result<Vec<DeviceInfo>, NodeError> {
    match kind {
        response::Kind::DeviceList(list) => Ok(list.devices.iter().map(DeviceInfo::from).collect()),
        _ => Err(NodeError::UnexpectedResponse("not a device list")),
    }
}

fn values_of(kind: response::Kind) -> Result<Vec<PropertyValue>, NodeError> {
    match kind {
        response::Kind::DeviceDetails(d) => Ok(d.values),
        _ => Err(NodeError::UnexpectedResponse("not device details")),
    }
}

impl HeadUnit {
    /// Keeps a device this head unit commissioned and bound: its binding
    /// record (R13) and the device secret. It is listed at once and comes
    /// online when a scan finds it on the LAN.
    pub async fn add_commissioned(
        &self,
        device: &CommissionedDevice,
        bound_unix_s: u64,
    ) -> Result<(), NodeError> {
        let devices = self.devices().await?;
        let sort_order = self.list_devices().await?.len() as i64;
        devices.add_binding(
            &BindingRecord {
                device_key: device.device_key,
                certificate: device.certificate.clone(),
                serial: device.serial,
                product_model: device.product_model,
                name: device.name.clone(),
                sort_order,
                firmware_version: None,
                ssid: device.ssid.clone(),
                bound_unix_s,
            },
            &device.device_secret,
        )
    }

    /// Scans the LAN for bound devices (at most `window`) and opens a
    /// session to each one found. Returns how many are online.
    pub async fn scan_devices(&self, window: std::time::Duration) -> Result<u32, NodeError> {
        Ok(self.devices().await?.scan(window).await)
    }

    /// Another account signed in to the car (R17): presence is forgotten
    /// and the devices are scanned again.
    pub async fn account_switched(&self, window: std::time::Duration) -> Result<u32, NodeError> {
        Ok(self.devices().await?.rescan(true, window).await)
    }

    /// The device list as the head unit's own screen shows it: bound
    /// devices and offline devices attached physically (R12, R14).
    pub async fn list_devices(&self) -> Result<Vec<DeviceInfo>, NodeError> {
        list_of(
            self.devices()
                .await?
                .local(request::Kind::ListDevices(ListDevices {}))
                .await?,
        )
    }

    /// A device attached physically (R12): listed on this screen only, with
    /// no account, key, serial or address stored. Returns its handle.
    pub async fn attach_offline_device(
        &self,
        product_model: u16,
        firmware_version: Option<String>,
    ) -> Result<Vec<u8>, NodeError> {
        self.devices()
            .await?
            .attach_offline(product_model, firmware_version.as_deref())
            .await
    }

    /// Runs a management request from the head unit's screen (rename,
    /// reorder, control, unbind of bound and offline devices).
    pub async fn manage_device(&self, request: request::Kind) -> Result<response::Kind, NodeError> {
        self.devices().await?.local(request).await
    }

    /// Upgrades a bound device's firmware over its LAN session (R15; SPEC
    /// §15). The car's own state of charge gates it
    /// ([`HeadUnit::vehicle_battery_percent`]): refused with
    /// [`crate::ota::OtaTransferError::LowBattery`] below the threshold. Call
    /// again after a lost link: it resumes.
    pub async fn upgrade_device(
        &self,
        handle: &[u8],
        manifest: &OtaManifest,
        image: Vec<u8>,
        progress: impl FnMut(OtaProgress),
    ) -> Result<OtaReport, NodeError> {
        let devices = self.devices().await?;
        let DeviceRef::Bound(key) = devices.resolve(handle)? else {
            return Err(NodeError::State(
                "an offline device is upgraded through its port, not the LAN",
            ));
        };
        let link = devices
            .link(&key)
            .await
            .ok_or(NodeError::State("the device is not online"))?;
        let battery_percent = self.vehicle_battery_percent().await?;
        let report = send_firmware(&link, manifest, image, battery_percent, progress).await?;
        devices
            .firmware_installed(DeviceRef::Bound(key), &report.version)
            .await?;
        Ok(report)
    }

    /// How many `WatchDevices` streams the device service holds (tests:
    /// ended ones must not pile up).
    #[doc(hidden)]
    pub async fn device_watchers(&self) -> Result<usize, NodeError> {
        Ok(self.devices().await?.watcher_count())
    }

    /// The LAN session to a bound device, if online (tests and the demo
    /// force a disconnect with it).
    #[doc(hidden)]
    pub async fn device_session(
        &self,
        handle: &[u8],
    ) -> Result<Option<std::sync::Arc<tether_session::quic::ClientSession>>, NodeError> {
        let devices = self.devices().await?;
        Ok(match devices.resolve(handle)? {
            DeviceRef::Bound(key) => devices.link(&key).await,
            DeviceRef::Offline(_) => None,
        })
    }

    /// Closes the LAN session to a device (tests: a forced disconnect).
    #[doc(hidden)]
    pub async fn drop_device_link(&self, handle: &[u8]) -> Result<bool, NodeError> {
        let devices = self.devices().await?;
        let DeviceRef::Bound(key) = devices.resolve(handle)? else {
            return Ok(false);
        };
        Ok(match devices.link(&key).await {
            Some(link) => {
                link.close(tether_session::quic::CloseCode::Normal, "dropped");
                devices.lost(key).await;
                true
            }
            None => false,
        })
    }
}

impl VehicleLink {
    /// The devices this phone may see, through the car (SPEC §16).
    pub async fn list_devices(&self) -> Result<Vec<DeviceInfo>, NodeError> {
        let reply = self
            .session()
            .call(request(request::Kind::ListDevices(ListDevices {})))
            .await?;
        list_of(answer(reply)?)
    }

    /// A device's current property values.
    pub async fn device_values(&self, handle: &[u8]) -> Result<Vec<PropertyValue>, NodeError> {
        let reply = self
            .session()
            .call(request(request::Kind::GetDevice(GetDevice {
                handle: handle.to_vec(),
            })))
            .await?;
        values_of(answer(reply)?)
    }

    /// Writes properties of a device (checked against its model by the car,
    /// then by the device).
    pub async fn set_device_properties(
        &self,
        handle: &[u8],
        values: Vec<PropertyValue>,
    ) -> Result<(), NodeError> {
        let reply = self
            .session()
            .call(request(request::Kind::SetProperties(SetProperties {
                handle: handle.to_vec(),
                values,
            })))
            .await?;
        answer(reply).map(|_| ())
    }

    /// Runs an action of a device.
    pub async fn invoke_device_action(
        &self,
        handle: &[u8],
        siid: u32,
        aiid: u32,
        arguments: Vec<DeviceValue>,
    ) -> Result<(), NodeError> {
        let reply = self
            .session()
            .call(request(request::Kind::InvokeAction(InvokeAction {
                handle: handle.to_vec(),
                siid,
                aiid,
                arguments,
            })))
            .await?;
        answer(reply).map(|_| ())
    }

    /// Renames a device; returns the list after the change.
    pub async fn rename_device(
        &self,
        handle: &[u8],
        name: &str,
    ) -> Result<Vec<DeviceInfo>, NodeError> {
        let reply = self
            .session()
            .call(request(request::Kind::RenameDevice(RenameDevice {
                handle: handle.to_vec(),
                name: name.to_owned(),
            })))
            .await?;
        list_of(answer(reply)?)
    }

    /// Puts the devices in this order (every handle the phone sees, once);
    /// returns the list after the change.
    pub async fn reorder_devices(
        &self,
        handles: Vec<Vec<u8>>,
    ) -> Result<Vec<DeviceInfo>, NodeError> {
        let reply = self
            .session()
            .call(request(request::Kind::ReorderDevices(ReorderDevices {
                handles,
            })))
            .await?;
        list_of(answer(reply)?)
    }

    /// Unbinds a device: its record is deleted and it forgets its
    /// credentials (R13). Returns the list after the change.
    pub async fn unbind_device(&self, handle: &[u8]) -> Result<Vec<DeviceInfo>, NodeError> {
        let reply = self
            .session()
            .call(request(request::Kind::UnbindDevice(UnbindDevice {
                handle: handle.to_vec(),
            })))
            .await?;
        list_of(answer(reply)?)
    }
}
