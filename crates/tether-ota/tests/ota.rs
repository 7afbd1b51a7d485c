//! Firmware upgrade cores driven against each other in memory (R15).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

use prost::Message;
use ring::digest::{SHA256, digest};
use tether_identity::DeviceKey;
use tether_ota::{
    CHUNK_BYTES, MIN_VEHICLE_BATTERY_PERCENT, OtaError, OtaReceiver, OtaSender, Received,
    manifest_signing_input,
};
use tether_proto::v1::{OtaChunk, OtaManifest};

const MODEL: u16 = 0x1a2b;

fn image(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn signed_manifest(vendor: &DeviceKey, image: &[u8]) -> OtaManifest {
    let mut manifest = OtaManifest {
        product_model: u32::from(MODEL),
        version: "2.1.0".into(),
        size: image.len() as u64,
        sha256: digest(&SHA256, image).as_ref().to_vec(),
        signature: Vec::new(),
    };
    manifest.signature = vendor.sign(&manifest_signing_input(&manifest)).to_vec();
    manifest
}

/// Runs chunks through until done; `drop_every` loses every n-th chunk.
fn transfer(sender: &mut OtaSender, receiver: &mut OtaReceiver, drop_every: usize) -> Vec<f64> {
    let mut progress = Vec::new();
    let mut n = 0;
    for _ in 0..10_000 {
        let chunks = sender.next_chunks();
        if chunks.is_empty() && sender.is_done() {
            break;
        }
        let mut last_ack = None;
        for chunk in chunks {
            n += 1;
            if drop_every > 0 && n % drop_every == 0 {
                continue;
            }
            match receiver.handle_chunk(&chunk).unwrap() {
                Received::Ack(ack) | Received::Complete(ack) => last_ack = Some(ack),
            }
        }
        let ack = last_ack.unwrap_or_else(|| receiver.resume_ack());
        let p = sender.handle_ack(&ack).unwrap();
        progress.push(p.acknowledged as f64 / p.total as f64);
    }
    progress
}

#[test]
fn a_signed_image_arrives_whole_and_progress_rises_r15() {
    let vendor = DeviceKey::generate().unwrap();
    let img = image(5 * CHUNK_BYTES * 3 + 123);
    let manifest = signed_manifest(&vendor, &img);
    let mut receiver = OtaReceiver::new(&manifest, &vendor.public_key(), MODEL).unwrap();
    let mut sender = OtaSender::start(img.clone(), 80).unwrap();
    let progress = transfer(&mut sender, &mut receiver, 0);
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
    assert_eq!(progress.last(), Some(&1.0));
    assert_eq!(receiver.into_image().unwrap(), img);
}

#[test]
fn a_low_vehicle_battery_refuses_the_upgrade_r15() {
    assert_eq!(
        OtaSender::start(image(10), MIN_VEHICLE_BATTERY_PERCENT - 1).unwrap_err(),
        OtaError::LowBattery {
            percent: MIN_VEHICLE_BATTERY_PERCENT - 1
        }
    );
    assert!(OtaSender::start(image(10), MIN_VEHICLE_BATTERY_PERCENT).is_ok());
}

#[test]
fn an_unsigned_or_foreign_manifest_is_refused() {
    let vendor = DeviceKey::generate().unwrap();
    let other = DeviceKey::generate().unwrap();
    let img = image(1000);
    let manifest = signed_manifest(&other, &img);
    assert_eq!(
        OtaReceiver::new(&manifest, &vendor.public_key(), MODEL).unwrap_err(),
        OtaError::BadSignature
    );
    let mut tampered = signed_manifest(&vendor, &img);
    tampered.size += 1;
    assert_eq!(
        OtaReceiver::new(&tampered, &vendor.public_key(), MODEL).unwrap_err(),
        OtaError::BadSignature
    );
    let manifest = signed_manifest(&vendor, &img);
    assert!(matches!(
        OtaReceiver::new(&manifest, &vendor.public_key(), MODEL + 1),
        Err(OtaError::WrongManifest(_))
    ));
}

#[test]
fn a_disconnect_mid_upgrade_resumes_from_the_last_acknowledged_offset_r15() {
    let vendor = DeviceKey::generate().unwrap();
    let img = image(20 * CHUNK_BYTES);
    let manifest = signed_manifest(&vendor, &img);
    let mut receiver = OtaReceiver::new(&manifest, &vendor.public_key(), MODEL).unwrap();
    let mut sender = OtaSender::start(img.clone(), 60).unwrap();
    // First link: the window goes out, only three chunks arrive.
    let first = sender.next_chunks();
    for chunk in first.iter().take(3) {
        receiver.handle_chunk(chunk).unwrap();
    }
    sender.link_lost();
    // New link: the device says where it stands; the sender resumes there.
    let progress = sender.handle_ack(&receiver.resume_ack()).unwrap();
    assert_eq!(progress.acknowledged, 3 * CHUNK_BYTES as u64);
    let resumed = sender.next_chunks();
    let first_offset = OtaChunk::decode(resumed[0].as_slice()).unwrap().offset;
    assert_eq!(
        first_offset,
        3 * CHUNK_BYTES as u64,
        "nothing sent twice from 0"
    );
    for chunk in resumed {
        receiver.handle_chunk(&chunk).unwrap();
    }
    transfer(&mut sender, &mut receiver, 0);
    assert_eq!(receiver.into_image().unwrap(), img);
}

#[test]
fn lost_chunks_are_resent_from_the_gap() {
    let vendor = DeviceKey::generate().unwrap();
    let img = image(30 * CHUNK_BYTES + 7);
    let manifest = signed_manifest(&vendor, &img);
    let mut receiver = OtaReceiver::new(&manifest, &vendor.public_key(), MODEL).unwrap();
    let mut sender = OtaSender::start(img.clone(), 60).unwrap();
    transfer(&mut sender, &mut receiver, 5);
    assert!(sender.is_done());
    assert_eq!(receiver.into_image().unwrap(), img);
}

#[test]
fn a_tampered_image_is_never_installed_r15() {
    let vendor = DeviceKey::generate().unwrap();
    let img = image(3 * CHUNK_BYTES);
    let manifest = signed_manifest(&vendor, &img);
    let mut bad = img.clone();
    bad[CHUNK_BYTES + 5] ^= 0x40;
    let mut receiver = OtaReceiver::new(&manifest, &vendor.public_key(), MODEL).unwrap();
    let mut sender = OtaSender::start(bad, 60).unwrap();
    let mut result = None;
    for chunk in sender.next_chunks() {
        result = Some(receiver.handle_chunk(&chunk));
    }
    assert_eq!(result, Some(Err(OtaError::Corrupt("SHA-256 differs"))));
    assert_eq!(receiver.next_offset(), 0, "the receiver starts over");
    assert!(receiver.into_image().is_none());
}

#[test]
fn a_chunk_past_the_declared_size_is_refused() {
    let vendor = DeviceKey::generate().unwrap();
    let img = image(100);
    let manifest = signed_manifest(&vendor, &img);
    let mut receiver = OtaReceiver::new(&manifest, &vendor.public_key(), MODEL).unwrap();
    let chunk = OtaChunk {
        offset: 0,
        data: vec![0; 101],
    }
    .encode_to_vec();
    assert!(matches!(
        receiver.handle_chunk(&chunk),
        Err(OtaError::Overflow { .. })
    ));
    assert!(matches!(
        receiver.handle_chunk(&[0xff; 3]),
        Err(OtaError::Malformed(_))
    ));
}

#[test]
fn typed_chunks_match_the_encoded_ones() {
    let vendor = DeviceKey::generate().unwrap();
    let img = image(3 * CHUNK_BYTES + 9);
    let manifest = signed_manifest(&vendor, &img);
    let mut encoded = OtaSender::start(img.clone(), 60).unwrap();
    let mut typed = OtaSender::start(img.clone(), 60).unwrap();
    let typed_chunks = typed.next_chunk_messages();
    assert_eq!(
        encoded.next_chunks(),
        typed_chunks
            .iter()
            .map(Message::encode_to_vec)
            .collect::<Vec<_>>()
    );
    let mut by_bytes = OtaReceiver::new(&manifest, &vendor.public_key(), MODEL).unwrap();
    let mut by_message = OtaReceiver::new(&manifest, &vendor.public_key(), MODEL).unwrap();
    for chunk in &typed_chunks {
        assert_eq!(
            by_bytes.handle_chunk(&chunk.encode_to_vec()),
            by_message.handle_chunk_message(chunk)
        );
    }
    assert_eq!(by_message.into_image().unwrap(), img);
    let too_long = OtaChunk {
        offset: 0,
        data: vec![0; CHUNK_BYTES + 64],
    };
    let mut receiver = OtaReceiver::new(&manifest, &vendor.public_key(), MODEL).unwrap();
    assert_eq!(
        receiver.handle_chunk_message(&too_long),
        Err(OtaError::Malformed("chunk too long"))
    );
}
