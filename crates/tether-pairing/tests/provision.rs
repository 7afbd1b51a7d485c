//! Provisioning over a paired link: pairing, then sealed Wi-Fi credentials
//! through GATT segmentation, then the device's sealed report (R13).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

use prost::Message;
use tether_pairing::pake::{
    AttemptLimiter, Commissioner, CommissionerStep, DeviceEvent, PairingDevice, PairingKey,
};
use tether_pairing::provision::{
    Credentials, Network, Outcome, ProvisionError, ProvisioningCommissioner, ProvisioningDevice,
    Security,
};
use tether_pairing::segment::{Reassembler, Segmenter};
use tether_proto::v1::{CommissioningMessage, commissioning_message::Kind};

const PASSCODE: u32 = 34_567_890;

fn pair() -> (PairingKey, PairingKey) {
    pair_with(9)
}

/// Pairs with commissioner seed `n` (fresh randomness gives a fresh key).
fn pair_with(n: u8) -> (PairingKey, PairingKey) {
    let mut device = PairingDevice::new(PASSCODE, AttemptLimiter::default());
    let (mut commissioner, request) = Commissioner::start(PASSCODE, [n; 32]);
    let challenge = device.handle(&request, 0, [8; 32]).unwrap().reply.unwrap();
    let CommissionerStep::Send(confirm) = commissioner.handle(&challenge).unwrap() else {
        panic!("expected a confirm")
    };
    let done = device.handle(&confirm, 1, [7; 32]).unwrap();
    let Some(DeviceEvent::Paired(device_key)) = done.event else {
        panic!("device not paired")
    };
    let CommissionerStep::Paired(key) = commissioner.handle(&done.reply.unwrap()).unwrap() else {
        panic!("commissioner not paired")
    };
    (key, device_key)
}

fn home() -> Credentials {
    Credentials {
        ssid: b"Anna's Home 5G".to_vec(),
        passphrase: b"correct horse battery".to_vec(),
        security: Security::Wpa3Personal,
        network: Network::Home,
    }
}

/// Carries one message over GATT at `mtu`, as the radio would.
fn over_gatt(message: &[u8], mtu: u16) -> (Vec<u8>, Vec<Vec<u8>>) {
    let segments = Segmenter::new(mtu).unwrap().segment(message).unwrap();
    let mut reassembler = Reassembler::new(4096);
    let mut out = None;
    for s in &segments {
        if let Some(m) = reassembler.push(s).unwrap() {
            out = Some(m);
        }
    }
    (out.expect("message reassembled"), segments)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn credentials_reach_the_device_sealed_over_any_mtu_r13() {
    let (key, device_key) = pair();
    for mtu in [23u16, 64, 185, 517] {
        let mut commissioner = ProvisioningCommissioner::new(&key);
        let mut device = ProvisioningDevice::new(&device_key);
        let message = commissioner.send_credentials(&home()).unwrap();
        let (received, segments) = over_gatt(&message, mtu);
        // Nothing of the network is visible on the air (R13).
        let air: Vec<u8> = segments.concat();
        for secret in [&b"Anna's Home 5G"[..], b"correct horse battery", b"Anna"] {
            assert!(!contains(&air, secret), "secret visible at MTU {mtu}");
        }
        let credentials = device.handle_credentials(&received).unwrap();
        assert_eq!(credentials, home());
        let (report, _) = over_gatt(&device.report(Outcome::Joined).unwrap(), mtu);
        assert_eq!(commissioner.handle_status(&report), Ok(Outcome::Joined));
    }
}

#[test]
fn each_typed_failure_reaches_the_commissioner_r13() {
    let (key, device_key) = pair();
    let mut commissioner = ProvisioningCommissioner::new(&key);
    let mut device = ProvisioningDevice::new(&device_key);
    for outcome in [
        Outcome::WrongPassphrase,
        Outcome::NetworkNotFound,
        Outcome::Timeout,
        Outcome::Joined,
    ] {
        // The user retries with new credentials after each failure.
        let message = commissioner.send_credentials(&home()).unwrap();
        device.handle_credentials(&message).unwrap();
        let report = device.report(outcome).unwrap();
        assert_eq!(commissioner.handle_status(&report), Ok(outcome));
    }
}

#[test]
fn a_replayed_or_tampered_message_is_refused_r13() {
    let (key, device_key) = pair();
    let mut commissioner = ProvisioningCommissioner::new(&key);
    let mut device = ProvisioningDevice::new(&device_key);
    let first = commissioner.send_credentials(&home()).unwrap();
    device.handle_credentials(&first).unwrap();
    assert_eq!(
        device.handle_credentials(&first),
        Err(ProvisionError::Replay { last: 1, found: 1 })
    );

    let second = commissioner.send_credentials(&home()).unwrap();
    let mut tampered = CommissioningMessage::decode(second.as_slice()).unwrap();
    if let Some(Kind::ProvisionNetwork(n)) = &mut tampered.kind {
        n.sealed[3] ^= 0x40;
    }
    assert_eq!(
        device.handle_credentials(&tampered.encode_to_vec()),
        Err(ProvisionError::Unsealed)
    );
    // The genuine message still opens after the forgery was refused.
    assert_eq!(device.handle_credentials(&second).unwrap(), home());

    // A forged "joined" report from someone without the key.
    let (other_key, _) = pair_with(42);
    assert_ne!(other_key, key);
    let mut stranger = ProvisioningDevice::new(&other_key);
    let mut stranger_commissioner = ProvisioningCommissioner::new(&other_key);
    stranger
        .handle_credentials(&stranger_commissioner.send_credentials(&home()).unwrap())
        .unwrap();
    let third = commissioner.send_credentials(&home()).unwrap();
    device.handle_credentials(&third).unwrap();
    let forged = stranger.report(Outcome::Joined).unwrap();
    assert_eq!(
        commissioner.handle_status(&forged),
        Err(ProvisionError::Unsealed)
    );
}

#[test]
fn a_report_for_older_credentials_is_not_taken_for_the_newest() {
    let (key, device_key) = pair();
    let mut commissioner = ProvisioningCommissioner::new(&key);
    let mut device = ProvisioningDevice::new(&device_key);
    device
        .handle_credentials(&commissioner.send_credentials(&home()).unwrap())
        .unwrap();
    let stale = device.report(Outcome::WrongPassphrase).unwrap();
    // The commissioner has meanwhile sent new credentials.
    let newer = commissioner.send_credentials(&home()).unwrap();
    assert_eq!(
        commissioner.handle_status(&stale),
        Err(ProvisionError::WrongAnswer {
            answers: 1,
            expected: 2
        })
    );
    device.handle_credentials(&newer).unwrap();
    assert_eq!(
        commissioner.handle_status(&device.report(Outcome::Joined).unwrap()),
        Ok(Outcome::Joined)
    );
}

#[test]
fn unusable_credentials_are_refused_before_sending() {
    let (key, _) = pair();
    let mut commissioner = ProvisioningCommissioner::new(&key);
    let cases = [
        Credentials {
            ssid: Vec::new(),
            ..home()
        },
        Credentials {
            ssid: vec![b'x'; 33],
            ..home()
        },
        Credentials {
            passphrase: b"short".to_vec(),
            ..home()
        },
        Credentials {
            security: Security::Open,
            ..home()
        },
    ];
    for credentials in cases {
        assert!(matches!(
            commissioner.send_credentials(&credentials),
            Err(ProvisionError::InvalidCredentials(_))
        ));
    }
    let open = Credentials {
        passphrase: Vec::new(),
        security: Security::Open,
        network: Network::CarHotspot,
        ..home()
    };
    assert!(commissioner.send_credentials(&open).is_ok());
}

#[test]
fn debug_output_hides_the_ssid_and_passphrase_r13() {
    let shown = format!("{:?}", home());
    assert!(!shown.contains("Anna"), "{shown}");
    assert!(!shown.contains("horse"), "{shown}");
}
