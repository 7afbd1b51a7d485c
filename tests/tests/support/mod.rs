//! Shared by the integration tests that need a bound device on the LAN.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // test support

use prost::Message;
use tether_devices::{LAMP_PRODUCT_MODEL, lamp_model};
use tether_identity::{Credentials, DeviceKey};
use tether_node::{
    CommissionedDevice, DeviceNode, EnrollmentGrant, HeadUnit, NodeConfig, unix_now,
};

/// A lamp as commissioning leaves it (SPEC §12.5, §12.6): `key` is its
/// device key, `grant` the account authority's answer to its enrollment
/// request. The lamp serves on the LAN under `secret`; the car keeps its
/// binding record and the same secret. Returns the lamp and the vendor key
/// its firmware must be signed with.
pub(crate) async fn bind_lamp(
    car: &HeadUnit,
    key: DeviceKey,
    grant: &EnrollmentGrant,
    secret: [u8; 32],
    name: &str,
) -> (DeviceNode, DeviceKey) {
    let public = key.public_key();
    let credentials = Credentials::from_grant(key, grant, unix_now()).unwrap();
    let vendor = DeviceKey::generate().unwrap();
    let lamp = DeviceNode::open(
        NodeConfig::default(),
        lamp_model(),
        "1.0.0",
        vendor.public_key(),
    )
    .unwrap();
    lamp.install_binding(&credentials, secret).unwrap();
    lamp.start().await.unwrap();
    car.add_commissioned(
        &CommissionedDevice {
            device_key: public,
            certificate: grant.certificate.clone().unwrap().encode_to_vec(),
            serial: credentials.certificate().serial,
            product_model: LAMP_PRODUCT_MODEL,
            name: name.into(),
            ssid: Some(b"home".to_vec()),
            device_secret: secret,
        },
        unix_now(),
    )
    .await
    .unwrap();
    (lamp, vendor)
}
