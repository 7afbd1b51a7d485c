//! Harnesses for the commissioning decoders (tether-pairing): the pairing
//! cores, provisioning, the setup payload parsers, GATT reassembly and BLE
//! adverts.

use std::sync::OnceLock;

use tether_pairing::pake::{
    AttemptLimiter, Commissioner, CommissionerStep, DeviceEvent, MAX_FAILED_ATTEMPTS,
    PAIRING_TIMEOUT_MS, PairingDevice, PairingKey,
};
use tether_pairing::provision::{
    Credentials, Network, Outcome, ProvisioningCommissioner, ProvisioningDevice, Security,
};

use tether_pairing::binding::{BindingCommissioner, BindingDevice};

use super::{NOW, authority, device_key, record, records};

/// The passcode every pairing harness uses (a valid one).
const PASSCODE: u32 = 20_202_021;
/// The commissioner's seed in the committed success paths.
const COMMISSIONER_SEED: [u8; 32] = [1; 32];

fn device_seed(i: usize) -> [u8; 32] {
    [u8::try_from(i % 251).unwrap_or(0) + 2; 32]
}

/// `pairing`: selector byte, then records (2-byte big-endian length, bytes).
///
/// Selector bit 0 clear: a `PairingDevice` receives each record as a message
/// from a commissioner, one second apart; bit 1 set: its pending attempt
/// times out after each record. Oracles: the failure count never exceeds the
/// lockout bound, never drops except on `Paired`, and a locked-out device
/// never pairs (R6).
///
/// Selector bit 0 set: a `Commissioner` (passcode [`PASSCODE`], seed
/// [`COMMISSIONER_SEED`]) receives each record as the device's answer; it
/// reports `Paired` at most once and nothing after an error.
pub fn pairing(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    if selector & 1 == 0 {
        let mut device = PairingDevice::new(PASSCODE, AttemptLimiter::default());
        let mut now_ms = 0u64;
        for (i, message) in records(rest).enumerate() {
            now_ms += 1_000;
            let before = device.limiter().failures();
            let paired = match device.handle(message, now_ms, device_seed(i)) {
                Ok(out) => {
                    let paired = matches!(out.event, Some(DeviceEvent::Paired(_)));
                    assert!(
                        !(paired && before >= MAX_FAILED_ATTEMPTS),
                        "a locked-out device paired"
                    );
                    paired
                }
                Err(_) => false,
            };
            let after = device.limiter().failures();
            assert!(
                after <= MAX_FAILED_ATTEMPTS,
                "failures past the lockout bound"
            );
            assert!(paired || after >= before, "a failure was refunded");
            if selector & 2 != 0 {
                let _ = device.handle_timeout(now_ms + PAIRING_TIMEOUT_MS);
            }
        }
    } else {
        let (mut commissioner, _request) = Commissioner::start(PASSCODE, COMMISSIONER_SEED);
        let mut paired = 0;
        let mut failed = false;
        for message in records(rest) {
            match commissioner.handle(message) {
                Ok(CommissionerStep::Paired(_)) => {
                    assert!(!failed, "paired after an error");
                    paired += 1;
                }
                Ok(CommissionerStep::Send(_)) => assert!(!failed, "sent after an error"),
                Err(_) => failed = true,
            }
        }
        assert!(paired <= 1, "paired twice");
    }
}

/// The messages of the committed successful pairing (fixed seeds and
/// times) and the key it gives.
struct FixedPairing {
    request: Vec<u8>,
    challenge: Vec<u8>,
    confirm: Vec<u8>,
    result: Vec<u8>,
    key: PairingKey,
}

fn fixed_pairing() -> FixedPairing {
    let mut device = PairingDevice::new(PASSCODE, AttemptLimiter::default());
    let (mut commissioner, request) = Commissioner::start(PASSCODE, COMMISSIONER_SEED);
    let challenge = device
        .handle(&request, 1_000, device_seed(0))
        .ok()
        .and_then(|o| o.reply)
        .expect("a fresh device answers a request");
    let Ok(CommissionerStep::Send(confirm)) = commissioner.handle(&challenge) else {
        panic!("the right passcode verifies");
    };
    let result = device
        .handle(&confirm, 2_000, device_seed(1))
        .ok()
        .and_then(|o| o.reply)
        .expect("the device answers the confirm");
    let Ok(CommissionerStep::Paired(key)) = commissioner.handle(&result) else {
        panic!("the fixed pairing succeeds");
    };
    FixedPairing {
        request,
        challenge,
        confirm,
        result,
        key,
    }
}

/// The pairing key of the committed success path, computed once: the
/// provisioning and binding seeds stay valid from run to run.
fn pairing_key() -> &'static PairingKey {
    static KEY: OnceLock<PairingKey> = OnceLock::new();
    KEY.get_or_init(|| fixed_pairing().key)
}

fn home_network() -> Credentials {
    Credentials {
        ssid: b"Fuzz Home".to_vec(),
        passphrase: b"fuzz passphrase".to_vec(),
        security: Security::Wpa2Personal,
        network: Network::Home,
    }
}

/// `provisioning`: selector byte, then records (2-byte big-endian length,
/// bytes), under the fixed pairing key.
///
/// Selector bit 0 clear: a `ProvisioningDevice` opens each record as
/// credentials; every accepted one must validate, and accepted sequence
/// numbers must strictly increase (no replay). Bit 0 set: a
/// `ProvisioningCommissioner` sends [`home_network`] and opens each record as
/// the device's report; it accepts at most one report per credentials sent.
pub fn provisioning(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let key = pairing_key();
    if selector & 1 == 0 {
        let mut device = ProvisioningDevice::new(key);
        for message in records(rest) {
            if let Ok(credentials) = device.handle_credentials(message) {
                assert!(
                    credentials.validate().is_ok(),
                    "accepted invalid credentials"
                );
                assert!(device.report(Outcome::Joined).is_ok());
            }
        }
    } else {
        let mut commissioner = ProvisioningCommissioner::new(key);
        if commissioner.send_credentials(&home_network()).is_err() {
            return;
        }
        let mut accepted = 0;
        for message in records(rest) {
            if commissioner.handle_status(message).is_ok() {
                accepted += 1;
            }
        }
        assert!(accepted <= 1, "two reports accepted for one request");
    }
}

/// The binding nonce of the committed success path.
const BIND_NONCE: [u8; 16] = [0x42; 16];

/// `binding`: selector byte, then records, under the fixed pairing key.
///
/// Selector bit 0 clear: a `BindingDevice` takes the first record as the
/// offer (answering with the fixed key 0x61) and the next ones as grants.
/// Oracle: accepted credentials are a device's, without a group key (R8).
/// Bit 0 set: a `BindingCommissioner` makes the fixed offer, then takes
/// records as requests (issued by the fixed authority 0x62) or results.
/// Oracle: every certificate it issues is for the device role.
pub fn binding(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let key = pairing_key();
    let mut messages = records(rest);
    if selector & 1 == 0 {
        let mut device = BindingDevice::new(key);
        let Some(offer) = messages.next() else {
            return;
        };
        if device.handle_offer(offer, device_key(0x61)).is_err() {
            return;
        }
        for grant in messages {
            if let (Ok(credentials), _) = device.handle_grant(grant, NOW) {
                assert_eq!(credentials.role(), tether_identity::Role::Device);
                assert!(
                    credentials.group_key().is_none(),
                    "a device got the group key"
                );
            }
        }
    } else {
        let mut authority = authority(0x62, [0x63; 32]);
        let mut commissioner = BindingCommissioner::new(key);
        let public = tether_identity::AccountAuthority::public_key(&authority);
        if commissioner.offer(BIND_NONCE, public).is_err() {
            return;
        }
        for message in messages {
            if let Ok((_, issued)) = commissioner.handle_request(message, &mut authority, NOW) {
                assert_eq!(issued.role, tether_identity::Role::Device);
            }
            let _ = commissioner.handle_result(message);
        }
    }
}

/// The image the `ota` harness expects: small, fixed.
fn ota_image() -> Vec<u8> {
    (0..3000u32).map(|i| (i % 251) as u8).collect()
}

/// The fixed vendor key (0x71) and its signed manifest for [`ota_image`].
fn ota_manifest() -> (DeviceKeyPublic, tether_proto::v1::OtaManifest) {
    let vendor = device_key(0x71);
    let image = ota_image();
    let mut manifest = tether_proto::v1::OtaManifest {
        product_model: 0x1a2b,
        version: "1".into(),
        size: image.len() as u64,
        sha256: ring::digest::digest(&ring::digest::SHA256, &image)
            .as_ref()
            .to_vec(),
        signature: Vec::new(),
    };
    manifest.signature = vendor
        .sign(&tether_ota::manifest_signing_input(&manifest))
        .to_vec();
    (vendor.public_key(), manifest)
}

type DeviceKeyPublic = [u8; 32];

/// `ota`: selector byte, then records. Bit 0 clear: an `OtaReceiver` for
/// the fixed signed manifest takes each record as data: 8 bytes big-endian
/// offset, then the bytes (a request body's frames carry them, SPEC
/// §15.1). Oracles: it never holds more than the declared size, and it
/// completes only with exactly the manifest's image (R15). Bit 0 set: an
/// `OtaSender` of that image takes each record as an acknowledgement;
/// progress never passes the image size.
pub fn ota(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let (vendor, manifest) = ota_manifest();
    if selector & 1 == 0 {
        let Ok(mut receiver) = tether_ota::OtaReceiver::new(&manifest, &vendor, 0x1a2b, "0") else {
            panic!("the fixed manifest verifies");
        };
        for record in records(rest) {
            let (offset, data) = record.split_at(record.len().min(8));
            let mut be = [0; 8];
            be[..offset.len()].copy_from_slice(offset);
            let complete = matches!(
                receiver.handle_data(u64::from_be_bytes(be), data),
                Ok(tether_ota::Received::Complete(_))
            );
            assert!(
                receiver.next_offset() <= manifest.size,
                "past the declared size"
            );
            if complete {
                assert_eq!(
                    receiver.into_image(),
                    Some(ota_image()),
                    "completed a wrong image"
                );
                return;
            }
        }
    } else {
        let Ok(mut sender) = tether_ota::OtaSender::start(ota_image(), 90) else {
            return;
        };
        for ack in records(rest) {
            let _ = sender.next_chunks();
            if let Ok(progress) = sender.handle_ack(ack) {
                assert!(progress.acknowledged <= progress.total);
            }
        }
    }
}

/// `ble_advert`: the bytes as Tether service data. Oracle: whatever decodes
/// re-encodes to exactly the same bytes (the format has one encoding).
pub fn ble_advert(data: &[u8]) {
    if let Ok(advert) = tether_ble::advert::Advert::decode(data) {
        let again = advert.encode().expect("a decoded advert encodes");
        assert_eq!(again, data, "decode/encode is not the identity");
    }
}

/// `setup_payload`: the bytes as a QR string and as a manual code (see
/// `tether_pairing::setup::parse_any`, whose round-trip asserts are the
/// oracles).
pub fn setup_payload(data: &[u8]) {
    tether_pairing::setup::parse_any(data);
}

/// `gatt_segments`: see `tether_pairing::segment::fuzz_reassemble` for the
/// input format and oracles.
pub fn gatt_segments(data: &[u8]) {
    tether_pairing::segment::fuzz_reassemble(data);
}

/// Seeds: a complete pairing from both sides, a wrong passcode, and setup
/// payloads and segment streams from the real encoders.
pub(super) fn seeds(add: &mut dyn FnMut(&'static str, &str, Vec<u8>)) {
    // A successful pairing from both sides.
    let FixedPairing {
        request,
        challenge,
        confirm,
        result,
        ..
    } = fixed_pairing();
    let mut device_side = vec![0];
    device_side.extend(record(&request));
    device_side.extend(record(&confirm));
    add("pairing", "device_success", device_side);
    let mut commissioner_side = vec![1];
    commissioner_side.extend(record(&challenge));
    commissioner_side.extend(record(&result));
    add("pairing", "commissioner_success", commissioner_side);
    // A wrong passcode, repeated to the lockout, with timeouts.
    let mut lockout = vec![2];
    for n in 0..6u8 {
        let (_, wrong) = Commissioner::start(PASSCODE + 1, [n + 10; 32]);
        lockout.extend(record(&wrong));
    }
    add("pairing", "wrong_passcode_lockout", lockout);

    // Provisioning under the fixed key: credentials, then the report.
    let key = pairing_key();
    let mut commissioner = ProvisioningCommissioner::new(key);
    let mut device = ProvisioningDevice::new(key);
    let network = commissioner
        .send_credentials(&home_network())
        .expect("valid credentials");
    device
        .handle_credentials(&network)
        .expect("the paired device opens them");
    let report = device.report(Outcome::Joined).expect("a report");
    let mut device_side = vec![0];
    device_side.extend(record(&network));
    add("provisioning", "device_credentials", device_side);
    let mut commissioner_side = vec![1];
    commissioner_side.extend(record(&report));
    add("provisioning", "commissioner_report", commissioner_side);

    // Binding under the fixed key: offer, request, grant, result.
    let mut authority = authority(0x62, [0x63; 32]);
    let public = tether_identity::AccountAuthority::public_key(&authority);
    let mut commissioner = BindingCommissioner::new(key);
    let mut device = BindingDevice::new(key);
    let offer = commissioner.offer(BIND_NONCE, public).expect("an offer");
    let request = device
        .handle_offer(&offer, device_key(0x61))
        .expect("the device answers");
    let (grant, _) = commissioner
        .handle_request(&request, &mut authority, NOW)
        .expect("the authority issues");
    let (credentials, result) = device.handle_grant(&grant, NOW);
    assert!(credentials.is_ok(), "the fixed binding succeeds");
    let mut device_side = vec![0];
    device_side.extend(record(&offer));
    device_side.extend(record(&grant));
    add("binding", "device_success", device_side);
    let mut commissioner_side = vec![1];
    commissioner_side.extend(record(&request));
    commissioner_side.extend(record(&result.expect("a report")));
    add("binding", "commissioner_success", commissioner_side);

    // OTA: the whole image as chunks, and the acknowledgements.
    let Ok(mut sender) = tether_ota::OtaSender::start(ota_image(), 90) else {
        panic!("battery above the gate");
    };
    let (vendor, manifest) = ota_manifest();
    let mut receiver =
        tether_ota::OtaReceiver::new(&manifest, &vendor, 0x1a2b, "0").expect("the fixed manifest");
    let mut chunks = vec![0];
    let mut acks = vec![1];
    for chunk in sender.next_chunks() {
        let mut data = chunk.offset.to_be_bytes().to_vec();
        data.extend_from_slice(&chunk.data);
        chunks.extend(record(&data));
        if let Ok(tether_ota::Received::Ack(ack) | tether_ota::Received::Complete(ack)) =
            receiver.handle_data(chunk.offset, &chunk.data)
        {
            acks.extend(record(&ack));
        }
    }
    add("ota", "receiver_whole_image", chunks);
    add("ota", "sender_acks", acks);

    // Adverts from the encoder.
    for (name, advert) in [
        (
            "member",
            tether_ble::advert::Advert::Member { token: [0x5a; 16] },
        ),
        (
            "unprovisioned",
            tether_ble::advert::Advert::Unprovisioned {
                product_model: 0x1a2b,
                discriminator: 3840,
                flags: tether_ble::advert::FLAG_PAIRING_OPEN,
            },
        ),
    ] {
        if let Ok(bytes) = advert.encode() {
            add("ble_advert", name, bytes);
        }
    }

    // Setup payloads from the encoder.
    for (name, payload) in [
        (
            "typical",
            tether_pairing::setup::SetupPayload {
                version: 0,
                product_model: 0x1a2b,
                discriminator: 3840,
                flags: 0b001,
                passcode: PASSCODE,
            },
        ),
        (
            "edges",
            tether_pairing::setup::SetupPayload {
                version: 0,
                product_model: u16::MAX,
                discriminator: 4095,
                flags: 0xff,
                passcode: 99_999_998,
            },
        ),
    ] {
        if let Ok(qr) = payload.to_qr_string() {
            add("setup_payload", &format!("qr_{name}"), qr.into_bytes());
        }
        if let Ok(code) = payload.manual_code() {
            add(
                "setup_payload",
                &format!("manual_{name}"),
                code.into_bytes(),
            );
        }
    }

    // Segment streams: records of real segments for two MTUs.
    for (name, mtu) in [("mtu23", 23u16), ("mtu185", 185)] {
        let Ok(mut segmenter) = tether_pairing::segment::Segmenter::new(mtu) else {
            continue;
        };
        let message: Vec<u8> = (0..300u32).map(|i| (i % 251) as u8).collect();
        let Ok(segments) = segmenter.segment(&message) else {
            continue;
        };
        // Limit selector 255: 4096 bytes; then 1-byte-length records.
        let mut data = vec![255];
        for segment in &segments {
            data.push(u8::try_from(segment.len()).unwrap_or(u8::MAX));
            data.extend_from_slice(segment);
        }
        add("gatt_segments", name, data);
    }
}
