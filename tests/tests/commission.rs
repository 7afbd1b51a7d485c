//! Commissioning through the node (SPEC §12, §13; issue 14): the head unit
//! reads a device's setup code, finds it over the (simulated) Bluetooth
//! radio, pairs, binds and provisions it with the owner phone's authority,
//! keeps the binding, and finds the device on the LAN afterwards. Progress
//! comes as events; a mistyped passcode, the device's backoff, a wrong
//! Wi-Fi passphrase and a code no device answers are typed errors.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tether_devices::{LAMP_PRODUCT_MODEL, lamp_model};
use tether_identity::DeviceKey;
use tether_node::{
    CommissionProgress, CommissionRequest, DeviceNode, HeadUnit, HomeNetwork, NetworkOutcome,
    NodeConfig, NodeError, Phone, SetupCode, SimulatedAccessory,
};

mod support;

fn home() -> HomeNetwork {
    HomeNetwork {
        ssid: b"Tether Test Home".to_vec(),
        passphrase: b"test passphrase 1".to_vec(),
    }
}

async fn owner_and_car() -> (Phone, HeadUnit) {
    let (owner, car) = support::owner_and_enrolled_car();
    car.start().await.unwrap();
    (owner, car)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r13_the_head_unit_commissions_a_lamp_and_finds_it_on_the_lan() {
    let (owner, car) = owner_and_car().await;
    let lamp = SimulatedAccessory::power_on(LAMP_PRODUCT_MODEL, &[home()], 0.0).unwrap();
    let code = SetupCode::parse(&lamp.setup_qr().unwrap()).unwrap();
    assert!(!code.is_manual());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let events = seen.clone();
    let report = car
        .commission(
            &lamp.central(),
            &mut owner.authority().unwrap(),
            &CommissionRequest::new(code, "Desk lamp", home()),
            move |p| events.lock().unwrap().push(p),
        )
        .await
        .unwrap();
    assert_eq!(report.outcome, NetworkOutcome::Joined);
    assert_eq!(report.product_model, LAMP_PRODUCT_MODEL);
    assert!(lamp.joined(&home().ssid));
    let seen = seen.lock().unwrap().clone();
    assert!(
        matches!(seen[1], CommissionProgress::Found { .. }),
        "{seen:?}"
    );
    assert_eq!(
        [seen[0], seen[2], seen[3], seen[4], seen[5], seen[6]],
        [
            CommissionProgress::Scanning,
            CommissionProgress::PairingStarted,
            CommissionProgress::Paired,
            CommissionProgress::Bound,
            CommissionProgress::CredentialsSent,
            CommissionProgress::Saved,
        ]
    );
    // The car keeps the binding: the lamp is listed, under its name.
    let listed = car.list_devices().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, "Desk lamp");
    // The lamp becomes a device node with what it kept, and the car finds
    // it on the LAN by its own token.
    let binding = lamp.take_binding().expect("the lamp kept its binding");
    assert_eq!(binding.device_key(), report.device_key);
    let node = DeviceNode::open(
        NodeConfig::default(),
        lamp_model(),
        "1.0.0",
        DeviceKey::generate().unwrap().public_key(),
    )
    .unwrap();
    node.install(&binding).unwrap();
    node.start().await.unwrap();
    assert_eq!(car.scan_devices(Duration::from_secs(15)).await.unwrap(), 1);
    car.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r6_a_mistyped_passcode_is_refused_then_the_device_asks_to_wait() {
    let (owner, car) = owner_and_car().await;
    let lamp = SimulatedAccessory::power_on(LAMP_PRODUCT_MODEL, &[home()], 0.0).unwrap();
    // The manual code this time.
    let code = SetupCode::parse(&lamp.manual_code().unwrap()).unwrap();
    assert!(code.is_manual());
    let mut authority = owner.authority().unwrap();
    let wrong = car
        .commission(
            &lamp.central(),
            &mut authority,
            &CommissionRequest::new(code.mistyped(), "Lamp", home()),
            |_| {},
        )
        .await
        .unwrap_err();
    assert!(wrong.is_wrong_passcode(), "{wrong}");
    let again = car
        .commission(
            &lamp.central(),
            &mut authority,
            &CommissionRequest::new(code.clone(), "Lamp", home()),
            |_| {},
        )
        .await
        .unwrap_err();
    let wait = again.retry_after_s().expect("the device's backoff");
    assert!(wait >= 1, "{again}");
    assert!(car.list_devices().await.unwrap().is_empty(), "nothing kept");
    // After the wait, the right code works.
    tokio::time::sleep(Duration::from_secs(u64::from(wait))).await;
    let report = car
        .commission(
            &lamp.central(),
            &mut authority,
            &CommissionRequest::new(code, "Lamp", home()),
            |_| {},
        )
        .await
        .unwrap();
    assert_eq!(report.outcome, NetworkOutcome::Joined);
    car.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_passphrase_or_an_absent_device_keeps_nothing_and_says_why() {
    let (owner, car) = owner_and_car().await;
    let lamp = SimulatedAccessory::power_on(LAMP_PRODUCT_MODEL, &[home()], 0.0).unwrap();
    let code = SetupCode::parse(&lamp.setup_qr().unwrap()).unwrap();
    let mut authority = owner.authority().unwrap();
    let typo = HomeNetwork {
        passphrase: b"not the passphrase".to_vec(),
        ..home()
    };
    let report = car
        .commission(
            &lamp.central(),
            &mut authority,
            &CommissionRequest::new(code, "Lamp", typo),
            |_| {},
        )
        .await
        .unwrap();
    assert_eq!(report.outcome, NetworkOutcome::WrongPassphrase);
    assert!(car.list_devices().await.unwrap().is_empty());
    // A code whose device is not on this air.
    let elsewhere = SimulatedAccessory::power_on(LAMP_PRODUCT_MODEL, &[home()], 0.0).unwrap();
    let other = SetupCode::parse(&elsewhere.setup_qr().unwrap()).unwrap();
    let absent = car
        .commission(
            &lamp.central(),
            &mut authority,
            &CommissionRequest {
                scan_window: Duration::from_millis(200),
                ..CommissionRequest::new(other, "Lamp", home())
            },
            |_| {},
        )
        .await
        .unwrap_err();
    assert!(matches!(absent, NodeError::NoDeviceFound), "{absent}");
    assert!(matches!(
        SetupCode::parse("TT:not a code"),
        Err(NodeError::SetupCode(_))
    ));
    car.shutdown().await.unwrap();
}
