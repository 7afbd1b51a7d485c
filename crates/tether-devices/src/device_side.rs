//! The device's own side (SPEC §12.6): a bound smart device keeps the
//! values of its model's properties, applies writes and actions the head
//! unit sends on its LAN session, checked against the model exactly as the
//! head unit checks them. Sans-IO: no clock, no socket.

use std::collections::BTreeMap;

use tether_proto::v1::{
    DeviceModel, DeviceValue, PropertyFormat, PropertySpec, PropertyValue, device_value,
};

use crate::DeviceError;
use crate::validate::{check_action, check_write};

/// The current values of a device's properties.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceState {
    model: DeviceModel,
    values: BTreeMap<(u32, u32), DeviceValue>,
}

fn initial(spec: &PropertySpec) -> Option<DeviceValue> {
    use device_value::Kind;
    let floor = spec.range.as_ref().map_or(0.0, |r| r.min);
    let kind = match PropertyFormat::try_from(spec.format).ok()? {
        PropertyFormat::Bool => Kind::BoolValue(false),
        PropertyFormat::Uint8 | PropertyFormat::Uint16 | PropertyFormat::Uint32 => {
            let first = spec.value_list.first().map_or(floor, |v| v.value as f64);
            Kind::UintValue(first.max(0.0) as u32)
        }
        PropertyFormat::Int32 => Kind::IntValue(floor as i32),
        // A sensor reads room temperature until told otherwise.
        PropertyFormat::Float => {
            let ceiling = spec.range.as_ref().map_or(floor, |r| r.max.max(floor));
            Kind::FloatValue(20.0f64.clamp(floor, ceiling) as f32)
        }
        PropertyFormat::String => Kind::StringValue(String::new()),
        PropertyFormat::Unspecified => return None,
    };
    Some(DeviceValue { kind: Some(kind) })
}

impl DeviceState {
    /// A device of `model` with every property at its initial value (off,
    /// the bottom of its range, the first listed value, an empty string),
    /// and its firmware revision set.
    pub fn new(model: DeviceModel, firmware: &str) -> Self {
        let mut values = BTreeMap::new();
        for service in &model.services {
            for property in &service.properties {
                if let Some(value) = initial(property) {
                    values.insert((service.iid, property.iid), value);
                }
            }
        }
        let mut state = Self { model, values };
        state.set_firmware(firmware);
        state
    }

    /// Records a new firmware revision (siid 1, piid 3: SPEC §16.2).
    pub fn set_firmware(&mut self, version: &str) {
        self.values.insert(
            (1, 3),
            DeviceValue {
                kind: Some(device_value::Kind::StringValue(version.to_owned())),
            },
        );
    }

    /// The model.
    pub fn model(&self) -> &DeviceModel {
        &self.model
    }

    /// Every current value.
    pub fn values(&self) -> Vec<PropertyValue> {
        self.values
            .iter()
            .map(|((siid, piid), value)| PropertyValue {
                siid: *siid,
                piid: *piid,
                value: Some(value.clone()),
            })
            .collect()
    }

    /// One value.
    pub fn value(&self, siid: u32, piid: u32) -> Option<&DeviceValue> {
        self.values.get(&(siid, piid))
    }

    /// Applies writes, all or none: each is checked against the model
    /// (writable, format, range) before any is applied.
    pub fn apply(&mut self, writes: &[PropertyValue]) -> Result<(), DeviceError> {
        for w in writes {
            check_write(&self.model, w.siid, w.piid, w.value.as_ref())?;
        }
        for w in writes {
            if let Some(value) = &w.value {
                self.values.insert((w.siid, w.piid), value.clone());
            }
        }
        Ok(())
    }

    /// Runs an action. The one action the built-in models define, `toggle`
    /// (its single output is a bool property), flips that property.
    pub fn invoke(
        &mut self,
        siid: u32,
        aiid: u32,
        arguments: &[DeviceValue],
    ) -> Result<(), DeviceError> {
        let action = check_action(&self.model, siid, aiid, arguments)?.clone();
        for piid in &action.outputs {
            if let Some(DeviceValue {
                kind: Some(device_value::Kind::BoolValue(b)),
            }) = self.values.get(&(siid, *piid))
            {
                let flipped = DeviceValue {
                    kind: Some(device_value::Kind::BoolValue(!b)),
                };
                self.values.insert((siid, *piid), flipped);
            }
        }
        Ok(())
    }
}
