//! Firmware upgrade cores driven against each other in memory (R15).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

use ring::digest::{SHA256, digest};
use tether_identity::DeviceKey;
use tether_ota::{
    CHUNK_BYTES, INITIAL_WINDOW_CHUNKS, MIN_VEHICLE_BATTERY_PERCENT, OtaError, OtaReceiver,
    OtaSender, Received, WINDOW_CHUNKS, manifest_signing_input,
};
use tether_proto::v1::{OtaAck, OtaManifest};

const MODEL: u16 = 0x1a2b;

fn image(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

/// The firmware the device runs in these tests; the manifests offer 2.1.0.
const RUNNING: &str = "2.0.9";

fn signed_manifest(vendor: &DeviceKey, image: &[u8]) -> OtaManifest {
    signed_manifest_of(vendor, image, "2.1.0")
}

fn signed_manifest_of(vendor: &DeviceKey, image: &[u8], version: &str) -> OtaManifest {
    let mut manifest = OtaManifest {
        product_model: u32::from(MODEL),
        version: version.into(),
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
            match receiver.handle_data(chunk.offset, &chunk.data).unwrap() {
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
    let mut receiver = OtaReceiver::new(&manifest, &vendor.public_key(), MODEL, RUNNING).unwrap();
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
        OtaReceiver::new(&manifest, &vendor.public_key(), MODEL, RUNNING).unwrap_err(),
        OtaError::BadSignature
    );
    let mut tampered = signed_manifest(&vendor, &img);
    tampered.size += 1;
    assert_eq!(
        OtaReceiver::new(&tampered, &vendor.public_key(), MODEL, RUNNING).unwrap_err(),
        OtaError::BadSignature
    );
    let manifest = signed_manifest(&vendor, &img);
    assert!(matches!(
        OtaReceiver::new(&manifest, &vendor.public_key(), MODEL + 1, RUNNING),
        Err(OtaError::WrongManifest(_))
    ));
}

#[test]
fn a_disconnect_mid_upgrade_resumes_from_the_last_acknowledged_offset_r15() {
    let vendor = DeviceKey::generate().unwrap();
    let img = image(20 * CHUNK_BYTES);
    let manifest = signed_manifest(&vendor, &img);
    let mut receiver = OtaReceiver::new(&manifest, &vendor.public_key(), MODEL, RUNNING).unwrap();
    let mut sender = OtaSender::start(img.clone(), 60).unwrap();
    // First link: the window goes out, only three chunks arrive.
    let first = sender.next_chunks();
    for chunk in first.iter().take(3) {
        receiver.handle_data(chunk.offset, &chunk.data).unwrap();
    }
    sender.link_lost();
    // New link: the device says where it stands; the sender resumes there.
    let progress = sender.handle_ack(&receiver.resume_ack()).unwrap();
    assert_eq!(progress.acknowledged, 3 * CHUNK_BYTES as u64);
    let resumed = sender.next_chunks();
    assert_eq!(
        resumed[0].offset,
        3 * CHUNK_BYTES as u64,
        "nothing sent twice from 0"
    );
    for chunk in resumed {
        receiver.handle_data(chunk.offset, &chunk.data).unwrap();
    }
    transfer(&mut sender, &mut receiver, 0);
    assert_eq!(receiver.into_image().unwrap(), img);
}

#[test]
fn lost_chunks_are_resent_from_the_gap() {
    let vendor = DeviceKey::generate().unwrap();
    let img = image(30 * CHUNK_BYTES + 7);
    let manifest = signed_manifest(&vendor, &img);
    let mut receiver = OtaReceiver::new(&manifest, &vendor.public_key(), MODEL, RUNNING).unwrap();
    let mut sender = OtaSender::start(img.clone(), 60).unwrap();
    // Every 17th chunk sent is lost: more than a window apart, so a resent
    // window never loses the same chunk again.
    transfer(&mut sender, &mut receiver, WINDOW_CHUNKS as usize + 1);
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
    let mut receiver = OtaReceiver::new(&manifest, &vendor.public_key(), MODEL, RUNNING).unwrap();
    let mut sender = OtaSender::start(bad, 60).unwrap();
    let mut result = None;
    for chunk in sender.next_chunks() {
        result = Some(receiver.handle_data(chunk.offset, &chunk.data));
    }
    assert_eq!(result, Some(Err(OtaError::Corrupt("SHA-256 differs"))));
    assert_eq!(receiver.next_offset(), 0, "the receiver starts over");
    assert!(receiver.into_image().is_none());
}

#[test]
fn data_past_the_declared_size_is_refused() {
    let vendor = DeviceKey::generate().unwrap();
    let img = image(100);
    let manifest = signed_manifest(&vendor, &img);
    let mut receiver = OtaReceiver::new(&manifest, &vendor.public_key(), MODEL, RUNNING).unwrap();
    assert!(matches!(
        receiver.handle_data(0, &[0; 101]),
        Err(OtaError::Overflow { .. })
    ));
    assert_eq!(receiver.next_offset(), 0, "nothing of it stored");
    let mut sender = OtaSender::start(img, 60).unwrap();
    assert!(matches!(
        sender.handle_ack(&[0xff; 3]),
        Err(OtaError::Malformed(_))
    ));
    assert!(matches!(
        sender.handle_ack(&[0; 65]),
        Err(OtaError::Malformed("ack too long"))
    ));
}

#[test]
fn data_at_another_offset_is_not_stored_and_the_answer_names_the_offset_needed() {
    let vendor = DeviceKey::generate().unwrap();
    let img = image(3 * CHUNK_BYTES);
    let manifest = signed_manifest(&vendor, &img);
    let mut receiver = OtaReceiver::new(&manifest, &vendor.public_key(), MODEL, RUNNING).unwrap();
    let need = |r: Result<Received, OtaError>| match r.unwrap() {
        Received::Ack(ack) | Received::Complete(ack) => {
            <OtaAck as prost::Message>::decode(ack.as_slice())
                .unwrap()
                .next_offset
        }
    };
    assert_eq!(need(receiver.handle_data(5, &img[5..50])), 0, "a gap");
    assert_eq!(need(receiver.handle_data(0, &img[..50])), 50);
    assert_eq!(need(receiver.handle_data(0, &img[..50])), 50, "a repeat");
    assert_eq!(need(receiver.handle_data(50, &[])), 50, "empty data");
    assert_eq!(receiver.next_offset(), 50);
}

#[test]
fn chunks_are_slices_of_the_image_within_the_window() {
    let img = image(40 * CHUNK_BYTES + 9);
    let shared = prost::bytes::Bytes::from(img.clone());
    let mut sender = OtaSender::start(shared.clone(), 60).unwrap();
    let chunks = sender.next_chunks();
    assert_eq!(chunks.len() as u64, INITIAL_WINDOW_CHUNKS);
    for (i, chunk) in chunks.iter().enumerate() {
        assert_eq!(chunk.offset, (i * CHUNK_BYTES) as u64);
        assert_eq!(chunk.data.len(), CHUNK_BYTES);
        assert_eq!(
            chunk.data.as_ptr(),
            shared[i * CHUNK_BYTES..].as_ptr(),
            "a slice, not a copy"
        );
    }
    assert_eq!(
        sender.next_offset(),
        INITIAL_WINDOW_CHUNKS * CHUNK_BYTES as u64
    );
    assert!(sender.next_chunks().is_empty(), "the window is full");
}

#[test]
fn the_window_opens_with_acknowledgements_and_starts_small_on_a_new_link() {
    let chunk = CHUNK_BYTES as u64;
    let mut sender = OtaSender::start(image(200 * CHUNK_BYTES), 60).unwrap();
    assert_eq!(sender.window(), INITIAL_WINDOW_CHUNKS * chunk);
    let mut acked = 0;
    while acked < 100 * chunk {
        let in_flight = sender.next_chunks();
        assert!(!in_flight.is_empty());
        assert!(sender.next_offset() - acked <= WINDOW_CHUNKS * chunk);
        // Everything sent arrives: the window doubles.
        acked = sender.next_offset();
        let before = sender.window();
        sender
            .handle_ack_message(&OtaAck { next_offset: acked })
            .unwrap();
        assert!(sender.window() >= before.min(WINDOW_CHUNKS * chunk));
    }
    assert_eq!(sender.window(), WINDOW_CHUNKS * chunk, "at most the window");
    sender.link_lost();
    assert_eq!(sender.window(), INITIAL_WINDOW_CHUNKS * chunk);
    assert_eq!(sender.next_chunks()[0].offset, acked);
}

#[test]
fn r15_a_signed_older_or_equal_image_is_refused_no_rollback() {
    let vendor = DeviceKey::generate().unwrap();
    let img = image(1000);
    for (offered, running, newer) in [
        ("2.1.0", "2.0.9", true),
        ("2.10", "2.9.9", true),
        ("3", "2.99.99", true),
        ("1.0.1", "1.0", true),
        ("2.0.9", "2.1.0", false),
        ("2.1.0", "2.1.0", false),
        ("2.1", "2.1.0", false),
        ("1.9.99", "2.0", false),
    ] {
        let manifest = signed_manifest_of(&vendor, &img, offered);
        let got = OtaReceiver::new(&manifest, &vendor.public_key(), MODEL, running);
        if newer {
            assert!(got.is_ok(), "{offered} over {running}");
        } else {
            assert_eq!(
                got.unwrap_err(),
                OtaError::Rollback {
                    offered: offered.into(),
                    installed: running.into()
                },
                "{offered} over {running}"
            );
        }
    }
    for bad in ["", "2.x", "1..2", "v2", "-1", "1.2.3-beta"] {
        let manifest = signed_manifest_of(&vendor, &img, bad);
        assert_eq!(
            OtaReceiver::new(&manifest, &vendor.public_key(), MODEL, RUNNING).unwrap_err(),
            OtaError::WrongManifest("version format"),
            "{bad:?}"
        );
    }
}
