//! The product catalogue: the typed model of each product the head unit
//! knows (SPEC §16.1), after the MIoT specification's shape.
//!
//! Type URNs follow MIoT's pattern under Tether's own namespace
//! (`urn:tether-spec:<kind>:<name>:<number>`). No model has a property for a
//! serial number, a MAC address or any other hardware identifier (R2, R12):
//! the device-information service names the maker, the model and the
//! firmware only.

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use tether_proto::v1::{
    AccessBit, ActionSpec, DeviceModel, EventSpec, PropertyFormat, PropertyRange, PropertySpec,
    ServiceSpec, ValueListEntry,
};

use crate::DeviceError;

/// The simulated lamp's product model (the one `tether pair` and the demo
/// commission, SPEC §12).
pub const LAMP_PRODUCT_MODEL: u16 = 0x1a2b;
/// The in-car camera's product model (SPEC §14, §16.1).
pub const CAMERA_PRODUCT_MODEL: u16 = 0x1a2c;

/// [`AccessBit::Read`] as a bit.
pub const ACCESS_READ: u32 = AccessBit::Read as u32;
/// [`AccessBit::Write`] as a bit.
pub const ACCESS_WRITE: u32 = AccessBit::Write as u32;
/// [`AccessBit::Notify`] as a bit.
pub const ACCESS_NOTIFY: u32 = AccessBit::Notify as u32;
/// Read, write and notify: a setting the user changes and the device reports.
const RWN: u32 = ACCESS_READ | ACCESS_WRITE | ACCESS_NOTIFY;
/// Read and notify: a state the device reports.
const RN: u32 = ACCESS_READ | ACCESS_NOTIFY;

/// The models the head unit can show and control, by product model.
#[derive(Debug, Clone, Default)]
pub struct Catalogue {
    models: BTreeMap<u16, DeviceModel>,
}

impl Catalogue {
    /// An empty catalogue.
    pub fn new() -> Self {
        Self::default()
    }

    /// The built-in products: the simulated lamp and the in-car camera.
    pub fn builtin() -> Self {
        let mut catalogue = Self::new();
        for model in [lamp_model(), camera_model()] {
            catalogue
                .insert(model)
                .expect("the built-in models are well formed");
        }
        catalogue
    }

    /// Adds (or replaces) a model after checking it with [`check_model`].
    pub fn insert(&mut self, model: DeviceModel) -> Result<(), DeviceError> {
        check_model(&model)?;
        let product_model = u16::try_from(model.product_model)
            .map_err(|_| DeviceError::InvalidModel("product model above 65535"))?;
        self.models.insert(product_model, model);
        Ok(())
    }

    /// The model of `product_model`, if known.
    pub fn get(&self, product_model: u16) -> Option<&DeviceModel> {
        self.models.get(&product_model)
    }

    /// Every product model known, ascending.
    pub fn product_models(&self) -> impl Iterator<Item = u16> + '_ {
        self.models.keys().copied()
    }
}

/// Checks that a model is coherent: a product model that fits 16 bits and a
/// name; service iids unique and non-zero, and within a service property,
/// action and event iids unique and non-zero; every property has a known
/// format and at least one access bit; a range only on a numeric format, with
/// `min <= max` and a non-negative step; a value list only on an integer
/// format and never with a range; action and event arguments name properties
/// of the same service.
pub fn check_model(model: &DeviceModel) -> Result<(), DeviceError> {
    let bad = DeviceError::InvalidModel;
    if model.product_model > u32::from(u16::MAX) {
        return Err(bad("product model above 65535"));
    }
    if model.name.is_empty() {
        return Err(bad("model without a name"));
    }
    let mut siids = BTreeSet::new();
    for service in &model.services {
        if service.iid == 0 || !siids.insert(service.iid) {
            return Err(bad("service iid zero or repeated"));
        }
        let mut piids = BTreeSet::new();
        for property in &service.properties {
            if property.iid == 0 || !piids.insert(property.iid) {
                return Err(bad("property iid zero or repeated"));
            }
            check_property(property)?;
        }
        let mut aiids = BTreeSet::new();
        for action in &service.actions {
            if action.iid == 0 || !aiids.insert(action.iid) {
                return Err(bad("action iid zero or repeated"));
            }
            if !action
                .inputs
                .iter()
                .chain(&action.outputs)
                .all(|p| piids.contains(p))
            {
                return Err(bad("action argument names no property of its service"));
            }
        }
        let mut eiids = BTreeSet::new();
        for event in &service.events {
            if event.iid == 0 || !eiids.insert(event.iid) {
                return Err(bad("event iid zero or repeated"));
            }
            if !event.arguments.iter().all(|p| piids.contains(p)) {
                return Err(bad("event argument names no property of its service"));
            }
        }
    }
    Ok(())
}

fn check_property(property: &PropertySpec) -> Result<(), DeviceError> {
    let bad = DeviceError::InvalidModel;
    let format = PropertyFormat::try_from(property.format).unwrap_or_default();
    let numeric = !matches!(
        format,
        PropertyFormat::Unspecified | PropertyFormat::Bool | PropertyFormat::String
    );
    if format == PropertyFormat::Unspecified {
        return Err(bad("property without a format"));
    }
    if property.access & (ACCESS_READ | ACCESS_WRITE | ACCESS_NOTIFY) == 0
        || property.access & !(ACCESS_READ | ACCESS_WRITE | ACCESS_NOTIFY) != 0
    {
        return Err(bad("property access bits empty or unknown"));
    }
    if let Some(range) = &property.range {
        if !numeric {
            return Err(bad("range on a non-numeric property"));
        }
        if !(range.min.is_finite() && range.max.is_finite() && range.step.is_finite())
            || range.min > range.max
            || range.step < 0.0
        {
            return Err(bad("range bounds or step invalid"));
        }
        if !property.value_list.is_empty() {
            return Err(bad("both a range and a value list"));
        }
    }
    if !property.value_list.is_empty() && (!numeric || format == PropertyFormat::Float) {
        return Err(bad("value list on a non-integer property"));
    }
    Ok(())
}

// ------------------------------------------------------------ builders

fn urn(kind: &str, name: &str, number: u32) -> String {
    format!("urn:tether-spec:{kind}:{name}:{number:08X}")
}

fn property(
    iid: u32,
    name: &str,
    number: u32,
    format: PropertyFormat,
    access: u32,
) -> PropertySpec {
    PropertySpec {
        iid,
        r#type: urn("property", name, number),
        description: name.replace('-', " "),
        format: format as i32,
        access,
        range: None,
        value_list: Vec::new(),
        unit: String::new(),
    }
}

fn ranged(mut spec: PropertySpec, min: f64, max: f64, step: f64, unit: &str) -> PropertySpec {
    spec.range = Some(PropertyRange { min, max, step });
    spec.unit = unit.to_owned();
    spec
}

fn listed(mut spec: PropertySpec, values: &[(i64, &str)]) -> PropertySpec {
    spec.value_list = values
        .iter()
        .map(|&(value, description)| ValueListEntry {
            value,
            description: description.to_owned(),
        })
        .collect();
    spec
}

fn with_unit(mut spec: PropertySpec, unit: &str) -> PropertySpec {
    spec.unit = unit.to_owned();
    spec
}

/// MIoT's service 1: maker, model and firmware; deliberately no serial
/// number (R2, R12).
fn device_information() -> ServiceSpec {
    use PropertyFormat::String as Text;
    ServiceSpec {
        iid: 1,
        r#type: urn("service", "device-information", 0x0001),
        description: "device information".into(),
        properties: vec![
            property(1, "manufacturer", 0x0001, Text, ACCESS_READ),
            property(2, "model", 0x0002, Text, ACCESS_READ),
            property(3, "firmware-revision", 0x0005, Text, ACCESS_READ),
        ],
        actions: Vec::new(),
        events: Vec::new(),
    }
}

/// The simulated lamp ([`LAMP_PRODUCT_MODEL`]).
///
/// | siid.piid | property | format | access | range / values |
/// |---|---|---|---|---|
/// | 2.1 | on | bool | read write notify | |
/// | 2.2 | brightness | uint8 | read write notify | 1–100 step 1, percentage |
/// | 2.3 | color-temperature | uint16 | read write notify | 2700–6500 step 1, kelvin |
/// | 2.4 | mode | uint8 | read write notify | 0 day, 1 night, 2 reading |
/// | 2.5 | temperature | float | read notify | −40–125 step 0.1, celsius |
///
/// Action 2.1 `toggle` (no input, reports 2.1); event 2.1 `overheated`
/// (argument 2.5).
pub fn lamp_model() -> DeviceModel {
    use PropertyFormat::{Bool, Float, Uint8, Uint16};
    DeviceModel {
        product_model: u32::from(LAMP_PRODUCT_MODEL),
        name: "Lamp".into(),
        services: vec![
            device_information(),
            ServiceSpec {
                iid: 2,
                r#type: urn("service", "light", 0x0002),
                description: "light".into(),
                properties: vec![
                    property(1, "on", 0x0006, Bool, RWN),
                    ranged(
                        property(2, "brightness", 0x000D, Uint8, RWN),
                        1.0,
                        100.0,
                        1.0,
                        "percentage",
                    ),
                    ranged(
                        property(3, "color-temperature", 0x000F, Uint16, RWN),
                        2700.0,
                        6500.0,
                        1.0,
                        "kelvin",
                    ),
                    listed(
                        property(4, "mode", 0x0008, Uint8, RWN),
                        &[(0, "Day"), (1, "Night"), (2, "Reading")],
                    ),
                    ranged(
                        property(5, "temperature", 0x0020, Float, RN),
                        -40.0,
                        125.0,
                        0.1,
                        "celsius",
                    ),
                ],
                actions: vec![ActionSpec {
                    iid: 1,
                    r#type: urn("action", "toggle", 0x0001),
                    description: "toggle".into(),
                    inputs: Vec::new(),
                    outputs: vec![1],
                }],
                events: vec![EventSpec {
                    iid: 1,
                    r#type: urn("event", "overheated", 0x0001),
                    description: "overheated".into(),
                    arguments: vec![5],
                }],
            },
        ],
    }
}

/// The in-car camera ([`CAMERA_PRODUCT_MODEL`]). Live view is not a property:
/// it goes through the consent rules of SPEC §14 (R18, R19).
///
/// | siid.piid | property | format | access | range / values |
/// |---|---|---|---|---|
/// | 2.1 | on | bool | read write notify | |
/// | 2.2 | recording-mode | uint8 | read write notify | 0 off, 1 continuous, 2 events only |
/// | 2.3 | night-shot | uint8 | read write notify | 0 auto, 1 off, 2 on |
/// | 2.4 | image-rollover | uint16 | read write | 0–270 step 90, arcdegrees |
/// | 2.5 | time-watermark | bool | read write | |
/// | 3.1 | storage-status | uint8 | read notify | 0 normal, 1 no card, 2 full, 3 error |
/// | 3.2 | free-space | uint32 | read notify | mb |
///
/// Action 3.1 `format-storage` (no input, reports 3.1); event 3.1
/// `storage-full` (argument 3.2).
pub fn camera_model() -> DeviceModel {
    use PropertyFormat::{Bool, Uint8, Uint16, Uint32};
    DeviceModel {
        product_model: u32::from(CAMERA_PRODUCT_MODEL),
        name: "In-car camera".into(),
        services: vec![
            device_information(),
            ServiceSpec {
                iid: 2,
                r#type: urn("service", "camera-control", 0x0010),
                description: "camera control".into(),
                properties: vec![
                    property(1, "on", 0x0006, Bool, RWN),
                    listed(
                        property(2, "recording-mode", 0x0030, Uint8, RWN),
                        &[(0, "Off"), (1, "Continuous"), (2, "Events only")],
                    ),
                    listed(
                        property(3, "night-shot", 0x0031, Uint8, RWN),
                        &[(0, "Auto"), (1, "Off"), (2, "On")],
                    ),
                    ranged(
                        property(
                            4,
                            "image-rollover",
                            0x0032,
                            Uint16,
                            ACCESS_READ | ACCESS_WRITE,
                        ),
                        0.0,
                        270.0,
                        90.0,
                        "arcdegrees",
                    ),
                    property(
                        5,
                        "time-watermark",
                        0x0033,
                        Bool,
                        ACCESS_READ | ACCESS_WRITE,
                    ),
                ],
                actions: Vec::new(),
                events: Vec::new(),
            },
            ServiceSpec {
                iid: 3,
                r#type: urn("service", "memory-card-management", 0x0011),
                description: "memory card management".into(),
                properties: vec![
                    listed(
                        property(1, "storage-status", 0x0034, Uint8, RN),
                        &[(0, "Normal"), (1, "No card"), (2, "Full"), (3, "Error")],
                    ),
                    with_unit(property(2, "free-space", 0x0035, Uint32, RN), "mb"),
                ],
                actions: vec![ActionSpec {
                    iid: 1,
                    r#type: urn("action", "format-storage", 0x0010),
                    description: "format storage".into(),
                    inputs: Vec::new(),
                    outputs: vec![1],
                }],
                events: vec![EventSpec {
                    iid: 1,
                    r#type: urn("event", "storage-full", 0x0010),
                    description: "storage full".into(),
                    arguments: vec![2],
                }],
            },
        ],
    }
}
