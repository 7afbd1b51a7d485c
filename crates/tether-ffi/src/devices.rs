//! Device management through the bindings (R12, R14, R17; SPEC §16):
//! records for the device list and property values, the methods a phone
//! calls on `VehicleLink` to manage devices through the car, and those of
//! the head unit's own screen on `HeadUnit`.

use tether_node::device_value::Kind;

#[cfg(feature = "head-unit")]
use crate::HeadUnit;
use crate::runtime::run;
use crate::{TetherError, VehicleLink};

/// One device as a list shows it.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct DeviceInfo {
    /// Names the device in every call (16 bytes). Opaque: it is neither the
    /// device's key nor a hardware identifier, and means nothing to another
    /// head unit (SPEC §16.3).
    pub handle: Vec<u8>,
    /// The user's name for it.
    pub name: String,
    /// The vendor's product model (`0x1a2b` is the lamp).
    pub product_model: u16,
    /// Its place in the list.
    pub sort_order: i64,
    /// Seen since the last scan (R17).
    pub online: bool,
    /// Attached physically and bound to no account (R12); only the head
    /// unit's own screen lists these.
    pub offline_attached: bool,
    /// The firmware revision; empty when unknown.
    pub firmware_version: String,
    /// How a super task names this device (the `device` of a property
    /// write, an action or a property trigger; SPEC §18.6). Empty for an
    /// offline device, which tasks cannot name.
    pub task_device: String,
}

impl From<tether_node::DeviceInfo> for DeviceInfo {
    fn from(d: tether_node::DeviceInfo) -> Self {
        let task_device = if d.offline_attached {
            String::new()
        } else {
            d.task_device().0
        };
        Self {
            task_device,
            handle: d.handle,
            name: d.name,
            product_model: d.product_model,
            sort_order: d.sort_order,
            online: d.online,
            offline_attached: d.offline_attached,
            firmware_version: d.firmware_version,
        }
    }
}

/// A property value. Which variant a property takes is its format in the
/// device model (SPEC §16.1): `Uint` for the three unsigned formats.
#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum DeviceValue {
    /// `BOOL`.
    Bool {
        /// The value.
        value: bool,
    },
    /// `UINT8`, `UINT16` or `UINT32`.
    Uint {
        /// The value.
        value: u32,
    },
    /// `INT32`.
    Int {
        /// The value.
        value: i32,
    },
    /// `FLOAT`.
    Float {
        /// The value.
        value: f32,
    },
    /// `STRING` (at most 256 bytes).
    Text {
        /// The value.
        value: String,
    },
}

impl DeviceValue {
    /// The node's value, `None` when it carries none.
    fn from_node(v: tether_node::DeviceValue) -> Option<Self> {
        Some(match v.kind? {
            Kind::BoolValue(value) => Self::Bool { value },
            Kind::UintValue(value) => Self::Uint { value },
            Kind::IntValue(value) => Self::Int { value },
            Kind::FloatValue(value) => Self::Float { value },
            Kind::StringValue(value) => Self::Text { value },
        })
    }
}

impl From<DeviceValue> for tether_node::DeviceValue {
    fn from(v: DeviceValue) -> Self {
        let kind = match v {
            DeviceValue::Bool { value } => Kind::BoolValue(value),
            DeviceValue::Uint { value } => Kind::UintValue(value),
            DeviceValue::Int { value } => Kind::IntValue(value),
            DeviceValue::Float { value } => Kind::FloatValue(value),
            DeviceValue::Text { value } => Kind::StringValue(value),
        };
        Self { kind: Some(kind) }
    }
}

/// The value of property `piid` of service `siid`.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct PropertyValue {
    /// Service instance id.
    pub siid: u32,
    /// Property instance id within the service.
    pub piid: u32,
    /// The value.
    pub value: DeviceValue,
}

impl PropertyValue {
    /// The node's value, `None` when it carries no value (the car checks a
    /// device's reports, so it lists none such; skipping is only defensive).
    fn from_node(p: tether_node::PropertyValue) -> Option<Self> {
        Some(Self {
            siid: p.siid,
            piid: p.piid,
            value: DeviceValue::from_node(p.value?)?,
        })
    }
}

impl From<PropertyValue> for tether_node::PropertyValue {
    fn from(p: PropertyValue) -> Self {
        Self {
            siid: p.siid,
            piid: p.piid,
            value: Some(p.value.into()),
        }
    }
}

fn infos(list: Vec<tether_node::DeviceInfo>) -> Vec<DeviceInfo> {
    list.into_iter().map(Into::into).collect()
}

/// What a phone does with the account's devices, through the car. The car
/// checks each request against the device's model before anything reaches
/// the device; a refusal is `TetherError.Control` with the wire code
/// (`ERROR_CODE_NOT_FOUND`, `ERROR_CODE_BAD_REQUEST`, `ERROR_CODE_BUSY` for
/// an offline device...; SPEC §16.8).
#[uniffi::export]
impl VehicleLink {
    /// The devices this phone may see: the bound devices (a co-user: those
    /// its grant lists), never the offline ones.
    pub async fn list_devices(&self) -> Result<Vec<DeviceInfo>, TetherError> {
        let inner = self.node().clone();
        run(async move { inner.list_devices().await.map(infos) }).await
    }

    /// A device's readable values as it last reported them.
    pub async fn device_values(&self, handle: Vec<u8>) -> Result<Vec<PropertyValue>, TetherError> {
        let inner = self.node().clone();
        run(async move {
            inner.device_values(&handle).await.map(|values| {
                values
                    .into_iter()
                    .filter_map(PropertyValue::from_node)
                    .collect()
            })
        })
        .await
    }

    /// Writes 1 to 32 properties of an online device. Returns once the car
    /// has accepted the write; the device's new values show in
    /// `device_values` when it reports them.
    pub async fn set_device_properties(
        &self,
        handle: Vec<u8>,
        values: Vec<PropertyValue>,
    ) -> Result<(), TetherError> {
        let values = values.into_iter().map(Into::into).collect();
        let inner = self.node().clone();
        run(async move { inner.set_device_properties(&handle, values).await }).await
    }

    /// Runs action `aiid` of service `siid` with one argument per input the
    /// model lists.
    pub async fn invoke_device_action(
        &self,
        handle: Vec<u8>,
        siid: u32,
        aiid: u32,
        arguments: Vec<DeviceValue>,
    ) -> Result<(), TetherError> {
        let arguments = arguments.into_iter().map(Into::into).collect();
        let inner = self.node().clone();
        run(async move {
            inner
                .invoke_device_action(&handle, siid, aiid, arguments)
                .await
        })
        .await
    }

    /// Renames a device (1 to 64 bytes of UTF-8, no control characters);
    /// returns the list after the change.
    pub async fn rename_device(
        &self,
        handle: Vec<u8>,
        name: String,
    ) -> Result<Vec<DeviceInfo>, TetherError> {
        let inner = self.node().clone();
        run(async move { inner.rename_device(&handle, &name).await.map(infos) }).await
    }

    /// Puts this phone's devices in the given order: every handle it sees,
    /// each once. Returns the list after the change.
    pub async fn reorder_devices(
        &self,
        handles: Vec<Vec<u8>>,
    ) -> Result<Vec<DeviceInfo>, TetherError> {
        let inner = self.node().clone();
        run(async move { inner.reorder_devices(handles).await.map(infos) }).await
    }

    /// Unbinds a device: the car deletes its record and the device forgets
    /// its credentials (R13). Returns the list after the change.
    pub async fn unbind_device(&self, handle: Vec<u8>) -> Result<Vec<DeviceInfo>, TetherError> {
        let inner = self.node().clone();
        run(async move { inner.unbind_device(&handle).await.map(infos) }).await
    }
}

/// The head unit's own screen: it sees bound and offline devices (R12,
/// R17). A refusal here is `TetherError.Device`.
#[cfg(feature = "head-unit")]
#[uniffi::export]
impl HeadUnit {
    /// Scans the LAN for bound devices for at most `window_ms` (less once
    /// every one is found) and opens a session to each. Returns how many
    /// bound devices are online. Needs a started head unit.
    pub async fn scan_devices(&self, window_ms: u64) -> Result<u32, TetherError> {
        let inner = self.node();
        run(async move {
            inner
                .scan_devices(std::time::Duration::from_millis(window_ms))
                .await
        })
        .await
    }

    /// Another account signed in to the car (R17): every device is marked
    /// offline, its values forgotten, and the LAN scanned again as in
    /// `scan_devices`.
    pub async fn account_switched(&self, window_ms: u64) -> Result<u32, TetherError> {
        let inner = self.node();
        run(async move {
            inner
                .account_switched(std::time::Duration::from_millis(window_ms))
                .await
        })
        .await
    }

    /// Every device, as the head unit's screen lists it: bound devices and
    /// offline ones attached physically.
    pub async fn list_devices(&self) -> Result<Vec<DeviceInfo>, TetherError> {
        let inner = self.node();
        run(async move { inner.list_devices().await.map(infos) }).await
    }

    /// Records a device attached physically, bound to no account (R12):
    /// only its product model, a name, a place and `firmware` are kept.
    /// Returns its handle. An unknown product model is
    /// `TetherError.Device` with `ERROR_CODE_UNSUPPORTED`.
    pub async fn attach_offline_device(
        &self,
        product_model: u16,
        firmware: Option<String>,
    ) -> Result<Vec<u8>, TetherError> {
        let inner = self.node();
        run(async move { inner.attach_offline_device(product_model, firmware).await }).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_kind_survives_the_round_trip() {
        let values = [
            DeviceValue::Bool { value: true },
            DeviceValue::Uint { value: 40 },
            DeviceValue::Int { value: -7 },
            DeviceValue::Float { value: 21.5 },
            DeviceValue::Text {
                value: "Reading".into(),
            },
        ];
        for value in values {
            let property = PropertyValue {
                siid: 2,
                piid: 2,
                value: value.clone(),
            };
            let node = tether_node::PropertyValue::from(property.clone());
            assert_eq!(PropertyValue::from_node(node), Some(property));
        }
    }

    #[test]
    fn a_property_without_a_value_is_skipped() {
        let empty = tether_node::PropertyValue {
            siid: 2,
            piid: 2,
            value: Some(tether_node::DeviceValue { kind: None }),
        };
        assert_eq!(PropertyValue::from_node(empty), None);
    }
}
