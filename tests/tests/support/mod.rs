//! Shared by the integration tests: an owner with an enrolled car, a bound
//! device on the LAN, and waiting for what a test expects.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // test support

use prost::Message;
use tether_devices::{LAMP_PRODUCT_MODEL, lamp_model};
use tether_identity::{Credentials, DeviceKey};
use tether_node::{
    CommissionedDevice, DeviceNode, EnrollmentGrant, HeadUnit, Hub, NodeConfig, Phone, unix_now,
};

/// A new account on a phone, which hosts its authority.
pub(crate) fn owner() -> Phone {
    let owner = Phone::open(NodeConfig::default()).unwrap();
    owner.create_account().unwrap();
    owner
}

/// A home hub with `config`, enrolled by `owner`'s authority (not started).
pub(crate) fn enrolled_hub(owner: &Phone, config: NodeConfig) -> Hub {
    let hub = Hub::open(config).unwrap();
    hub.complete_enrollment(
        &owner
            .enroll_device(&hub.enrollment_request().unwrap())
            .unwrap(),
    )
    .unwrap();
    hub
}

/// A phone (or watch) of the owner's account, enrolled by the owner.
pub(crate) fn member_phone(
    owner: &Phone,
    role: tether_identity::Role,
    config: NodeConfig,
) -> Phone {
    let phone = Phone::open(config).unwrap();
    let request = phone.enrollment_request(role).unwrap();
    phone
        .complete_enrollment(&owner.enroll_device(&request).unwrap())
        .unwrap();
    phone
}

/// A new account on a phone, and a car enrolled in it (not started: a test
/// may set the car's clock first).
pub(crate) fn owner_and_enrolled_car() -> (Phone, HeadUnit) {
    owner_and_enrolled_car_with(NodeConfig::default())
}

/// [`owner_and_enrolled_car`], the car opened with `config` (a data
/// directory a test reaches into, say).
pub(crate) fn owner_and_enrolled_car_with(config: NodeConfig) -> (Phone, HeadUnit) {
    let owner = owner();
    let car = HeadUnit::open(config).unwrap();
    car.complete_enrollment(
        &owner
            .enroll_device(&car.enrollment_request().unwrap())
            .unwrap(),
    )
    .unwrap();
    (owner, car)
}

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

/// Polls `check` every 20 ms for up to 3 s; its last answer.
pub(crate) async fn until(mut check: impl FnMut() -> bool) -> bool {
    for _ in 0..150 {
        if check() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    check()
}

/// Polls the car's executed commands every 20 ms for up to 3 s until
/// `check` holds.
pub(crate) async fn until_executions(
    car: &HeadUnit,
    check: impl Fn(tether_node::Executions) -> bool,
) -> bool {
    for _ in 0..150 {
        if check(car.executions().await.unwrap()) {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    false
}

/// A task action: flash the car's lights once, no horn.
pub(crate) fn flash_once() -> tether_automation::Action {
    tether_automation::Action::Vehicle(tether_automation::VehicleCommand::FlashHonk {
        flash: true,
        honk: false,
    })
}

/// A raw session to `address` with a certificate of `role` in `owner`'s
/// account (a watch, a hub, another vehicle).
pub(crate) async fn session_as(
    owner: &Phone,
    address: std::net::SocketAddr,
    role: tether_identity::Role,
) -> tether_session::quic::ClientSession {
    let key = DeviceKey::generate().unwrap();
    let grant = owner
        .enroll_device(&key.enrollment_request(role, [5; 16]))
        .unwrap();
    tether_session::quic::Connector::new(
        "127.0.0.1:0".parse().unwrap(),
        std::sync::Arc::new(Credentials::from_grant(key, &grant, unix_now()).unwrap()),
        Default::default(),
    )
    .unwrap()
    .connect(address)
    .await
    .unwrap()
}
