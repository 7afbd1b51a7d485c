//! Shared fixtures: a store with bound devices, a manager, request helpers.

#![allow(dead_code, unreachable_pub)] // each test file uses a part

use tether_devices::{Catalogue, Config, DeviceManager, Output, Requester};
use tether_proto::v1::{
    DeviceEntry, DeviceValue, ListDevices, PropertyValue, device_value, request, response,
};
use tether_store::{BindingRecord, Store};

pub const HANDLE_KEY: [u8; 32] = [0x5c; 32];
pub const LAMP_KEY: [u8; 32] = [0xa1; 32];
pub const CAMERA_KEY: [u8; 32] = [0xa2; 32];

pub fn binding(key: [u8; 32], product_model: u16, name: &str, sort_order: i64) -> BindingRecord {
    BindingRecord {
        device_key: key,
        certificate: vec![key[0]; 90],
        serial: u64::from(key[0]),
        product_model,
        name: name.into(),
        sort_order,
        firmware_version: Some("1.0.0".into()),
        ssid: Some(b"Home Wi-Fi".to_vec()),
        bound_unix_s: 1_800_000_000,
    }
}

/// A store with a bound lamp ("Desk lamp", order 0) and camera ("Dashcam", 1).
pub fn store_with_bound_devices() -> Store {
    let mut store = Store::open_in_memory().expect("in-memory store");
    store
        .put_binding(&binding(
            LAMP_KEY,
            tether_devices::LAMP_PRODUCT_MODEL,
            "Desk lamp",
            0,
        ))
        .expect("put");
    store
        .put_binding(&binding(
            CAMERA_KEY,
            tether_devices::CAMERA_PRODUCT_MODEL,
            "Dashcam",
            1,
        ))
        .expect("put");
    store
}

pub fn manager() -> DeviceManager {
    DeviceManager::new(Config::default(), Catalogue::builtin(), HANDLE_KEY)
}

/// Every output until `Pending`.
pub fn drain(manager: &mut DeviceManager) -> Vec<Output> {
    let mut outputs = Vec::new();
    loop {
        match manager.poll_output() {
            Output::Pending => return outputs,
            output => outputs.push(output),
        }
    }
}

pub fn list(
    manager: &mut DeviceManager,
    store: &mut Store,
    requester: Requester<'_>,
) -> Vec<DeviceEntry> {
    match manager
        .handle_request(
            store,
            requester,
            &request::Kind::ListDevices(ListDevices {}),
            0,
        )
        .expect("list")
    {
        response::Kind::DeviceList(list) => list.devices,
        other => panic!("not a list: {other:?}"),
    }
}

pub fn handle_named(entries: &[DeviceEntry], name: &str) -> Vec<u8> {
    entries
        .iter()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("no device named {name}"))
        .handle
        .clone()
}

pub fn names(entries: &[DeviceEntry]) -> Vec<String> {
    entries.iter().map(|e| e.name.clone()).collect()
}

pub fn bool_value(v: bool) -> Option<DeviceValue> {
    Some(DeviceValue {
        kind: Some(device_value::Kind::BoolValue(v)),
    })
}

pub fn uint_value(v: u32) -> Option<DeviceValue> {
    Some(DeviceValue {
        kind: Some(device_value::Kind::UintValue(v)),
    })
}

pub fn float_value(v: f32) -> Option<DeviceValue> {
    Some(DeviceValue {
        kind: Some(device_value::Kind::FloatValue(v)),
    })
}

pub fn prop(siid: u32, piid: u32, value: Option<DeviceValue>) -> PropertyValue {
    PropertyValue { siid, piid, value }
}
