//! Firmware upgrade over real loopback QUIC sessions between two members of
//! one account: a head unit sends, a hub (the device) installs (R15; SPEC
//! §15.1).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

use std::net::SocketAddr;
use std::sync::Arc;

use ring::digest::{SHA256, digest};
use tether_identity::{AccountAuthority, Credentials, DeviceKey, LocalAuthority, Role};
use tether_node::{
    MIN_VEHICLE_BATTERY_PERCENT, OtaManifest, OtaOutcome, OtaProgress, OtaTarget, OtaTransferError,
    send_firmware,
};
use tether_ota::{CHUNK_BYTES, WINDOW_CHUNKS, manifest_signing_input};
use tether_proto::v1::{
    Envelope, ErrorCode, OtaStart, OtaStream, Ping, Request, Response, envelope, request, response,
};
use tether_session::quic::{
    ClientSession, CloseCode, Connector, Listener, SessionCloser, SessionConfig, SessionError,
};
use tokio::sync::watch;

const MODEL: u16 = 0x0f7a;
const LOOPBACK: &str = "127.0.0.1:0";

fn now() -> u64 {
    tether_node::unix_now()
}

fn member(authority: &mut LocalAuthority, role: Role) -> Arc<Credentials> {
    let key = DeviceKey::generate().unwrap();
    let grant = authority
        .enroll(&key.enrollment_request(role, [9; 16]), now())
        .unwrap();
    Arc::new(Credentials::from_grant(key, &grant, now()).unwrap())
}

fn image(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 131 % 251) as u8).collect()
}

fn signed_manifest(vendor: &DeviceKey, image: &[u8], version: &str) -> OtaManifest {
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

/// A head unit and a device of one account, the device serving upgrades.
struct Rig {
    vendor: DeviceKey,
    target: OtaTarget,
    connector: Connector,
    addr: SocketAddr,
    /// Closes the device's side of its first session: the link drops.
    first_session: watch::Receiver<Option<SessionCloser>>,
}

async fn rig() -> Rig {
    let mut authority = LocalAuthority::generate().unwrap();
    let head_unit = member(&mut authority, Role::Vehicle);
    let device = member(&mut authority, Role::Hub);
    let vendor = DeviceKey::generate().unwrap();
    let target = OtaTarget::new(vendor.public_key(), MODEL, "1.0.0");
    let mut listener =
        Listener::bind(LOOPBACK.parse().unwrap(), device, SessionConfig::default()).unwrap();
    let addr = listener.local_addr().unwrap();
    let served = target.clone();
    let (first, first_session) = watch::channel(None);
    tokio::spawn(async move {
        while let Some(session) = listener.accept().await {
            first.send_modify(|first| {
                first.get_or_insert_with(|| session.closer());
            });
            let target = served.clone();
            tokio::spawn(async move { target.serve(session).await });
        }
    });
    let connector = Connector::new(
        LOOPBACK.parse().unwrap(),
        head_unit,
        SessionConfig::default(),
    )
    .unwrap();
    Rig {
        vendor,
        target,
        connector,
        addr,
        first_session,
    }
}

impl Rig {
    async fn connect(&self) -> ClientSession {
        self.connector.connect(self.addr).await.unwrap()
    }
}

fn request_envelope(kind: request::Kind) -> Envelope {
    Envelope {
        body: Some(envelope::Body::Request(Request { kind: Some(kind) })),
        ..Default::default()
    }
}

fn ota_outcome(envelope: &Envelope) -> OtaOutcome {
    match &envelope.body {
        Some(envelope::Body::Response(Response {
            kind: Some(response::Kind::OtaResult(result)),
        })) => result.outcome(),
        other => panic!("not an OtaResult: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_image_is_sent_over_a_session_and_installed_with_its_sha256_r15() {
    let rig = rig().await;
    let img = image(40 * CHUNK_BYTES + 777);
    let manifest = signed_manifest(&rig.vendor, &img, "3.1.4");
    let session = rig.connect().await;
    let report = send_firmware(&session, &manifest, img.clone(), 80, |_| {})
        .await
        .unwrap();
    assert_eq!(report.version, "3.1.4");
    assert_eq!(report.total, img.len() as u64);
    assert_eq!(report.resumed_from, 0);
    assert_eq!(report.bytes_sent, img.len() as u64, "nothing sent twice");
    assert_eq!(report.chunks_sent, 41);

    let installed = rig.target.installed().expect("installed");
    assert_eq!(installed.manifest, manifest);
    assert_eq!(
        digest(&SHA256, &installed.image).as_ref(),
        digest(&SHA256, &img).as_ref()
    );
    assert_eq!(installed.image, img);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_events_rise_monotonically_and_end_at_100_percent() {
    let rig = rig().await;
    let img = image(64 * CHUNK_BYTES + 5);
    let manifest = signed_manifest(&rig.vendor, &img, "1.0.1");
    let session = rig.connect().await;
    let mut events: Vec<OtaProgress> = Vec::new();
    send_firmware(&session, &manifest, img.clone(), 55, |p| events.push(p))
        .await
        .unwrap();
    assert!(events.len() > 2, "{events:?}");
    assert_eq!(events[0].acknowledged, 0, "first event at the start");
    assert!(
        events
            .windows(2)
            .all(|w| w[0].acknowledged < w[1].acknowledged),
        "{events:?}"
    );
    let last = events.last().unwrap();
    assert_eq!(last.acknowledged, img.len() as u64);
    assert_eq!(last.percent(), 100.0);
    assert!(events.iter().all(|p| p.total == img.len() as u64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_low_vehicle_battery_refuses_the_upgrade_with_a_clear_error_r15() {
    let rig = rig().await;
    let img = image(3 * CHUNK_BYTES);
    let manifest = signed_manifest(&rig.vendor, &img, "2.0.0");
    let session = rig.connect().await;
    let low = MIN_VEHICLE_BATTERY_PERCENT - 1;
    let mut events = 0;
    let err = send_firmware(&session, &manifest, img.clone(), low, |_| events += 1)
        .await
        .unwrap_err();
    assert!(
        matches!(err, OtaTransferError::LowBattery { percent } if percent == low),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "firmware upgrade refused: vehicle battery at {low} %, below the \
             {MIN_VEHICLE_BATTERY_PERCENT} % an upgrade needs"
        )
    );
    assert_eq!(events, 0, "refused before anything was sent");
    assert_eq!(rig.target.next_offset(), 0);
    assert!(rig.target.installed().is_none());

    // The device holds the gate too: a head unit that skips it is refused.
    let start = OtaStart {
        manifest: Some(manifest.clone()),
        vehicle_battery_percent: 10,
    };
    let answer = session
        .call(request_envelope(request::Kind::OtaStart(start)))
        .await
        .unwrap();
    assert_eq!(ota_outcome(&answer), OtaOutcome::LowBattery);

    // At the threshold the same upgrade goes through.
    let report = send_firmware(
        &session,
        &manifest,
        img,
        MIN_VEHICLE_BATTERY_PERCENT,
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(report.version, "2.0.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_image_is_refused_and_never_installed_r15() {
    let rig = rig().await;
    let img = image(20 * CHUNK_BYTES + 3);
    let manifest = signed_manifest(&rig.vendor, &img, "4.0.0");
    let mut tampered = img.clone();
    tampered[7 * CHUNK_BYTES + 11] ^= 0x20;
    let session = rig.connect().await;
    let err = send_firmware(&session, &manifest, tampered, 90, |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, OtaTransferError::Tampered { .. }), "{err:?}");
    assert!(err.to_string().contains("SHA-256"), "{err}");
    assert!(rig.target.installed().is_none());
    assert_eq!(rig.target.next_offset(), 0, "the device discarded it");

    // A manifest the vendor did not sign is refused at the start.
    let stranger = DeviceKey::generate().unwrap();
    let forged = signed_manifest(&stranger, &img, "4.0.0");
    let err = send_firmware(&session, &forged, img.clone(), 90, |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, OtaTransferError::Tampered { .. }), "{err:?}");
    assert!(
        err.to_string().contains("not signed by the vendor"),
        "{err}"
    );

    // An image of another size than its manifest is not even sent.
    let err = send_firmware(&session, &manifest, image(10), 90, |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, OtaTransferError::Tampered { .. }), "{err:?}");

    // The genuine image still installs afterwards.
    send_firmware(&session, &manifest, img.clone(), 90, |_| {})
        .await
        .unwrap();
    assert_eq!(rig.target.installed().unwrap().image, img);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_mid_upgrade_resumes_on_a_new_session_from_the_last_acknowledged_offset_r15() {
    let rig = rig().await;
    let window = WINDOW_CHUNKS * CHUNK_BYTES as u64;
    let img = image(4 * window as usize + 1234);
    let manifest = signed_manifest(&rig.vendor, &img, "5.2.0");
    // The device drops the link once a window is acknowledged.
    let drop_at = window;

    let first = rig.connect().await;
    let mut first_events = Vec::new();
    // The device holds the session once it has checked the head unit.
    let closer = rig
        .first_session
        .clone()
        .wait_for(Option::is_some)
        .await
        .unwrap()
        .clone()
        .expect("a session");
    let err = send_firmware(&first, &manifest, img.clone(), 70, |p| {
        if p.acknowledged >= drop_at {
            closer.close(CloseCode::Normal, "link drops");
        }
        first_events.push(p);
    })
    .await
    .unwrap_err();
    let OtaTransferError::LinkLost { offset, .. } = err else {
        panic!("expected a lost link, got {err:?}");
    };
    assert!(offset >= drop_at, "offset {offset}");
    let stored = rig.target.next_offset();
    assert!(
        stored >= offset,
        "the device stored {stored}, acked {offset}"
    );
    // Nothing is sent past the window: the device cannot be further on.
    assert!(
        stored <= offset + window,
        "the device stored {stored}, acked {offset}"
    );
    assert!(stored < img.len() as u64);
    assert!(rig.target.installed().is_none());

    let second = rig.connect().await;
    let mut second_events = Vec::new();
    let report = send_firmware(&second, &manifest, img.clone(), 70, |p| {
        second_events.push(p)
    })
    .await
    .unwrap();
    // A chunk of the first session still in flight on the device may land
    // after `stored` was read: the device answers where it stands then,
    // never behind what it had stored and never past the unacknowledged
    // window.
    assert!(
        report.resumed_from >= stored && report.resumed_from <= offset + window,
        "resumed from {} where the device stood at {stored} (acked {offset})",
        report.resumed_from
    );
    assert_eq!(report.bytes_sent, img.len() as u64 - report.resumed_from);
    assert!(
        report.bytes_sent < img.len() as u64,
        "fewer bytes the second time"
    );
    assert_eq!(second_events[0].acknowledged, report.resumed_from);
    assert_eq!(second_events.last().unwrap().percent(), 100.0);
    assert_eq!(rig.target.installed().unwrap().image, img);

    // Asked again, an installed image is not sent again.
    let again = send_firmware(&second, &manifest, img.clone(), 70, |_| {})
        .await
        .unwrap();
    assert_eq!(again.bytes_sent, 0);
    assert_eq!(again.version, "5.2.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_at_another_offset_than_the_devices_is_answered_with_the_offset_needed() {
    let rig = rig().await;
    let img = image(4 * CHUNK_BYTES);
    let manifest = signed_manifest(&rig.vendor, &img, "6.0.0");
    let session = rig.connect().await;
    let start = OtaStart {
        manifest: Some(manifest.clone()),
        vehicle_battery_percent: 90,
    };
    session
        .call(request_envelope(request::Kind::OtaStart(start)))
        .await
        .unwrap();
    let stream = request_envelope(request::Kind::OtaStream(OtaStream {
        offset: CHUNK_BYTES as u64,
    }));
    let (mut body, mut answers) = session.request_with_body(stream).await.unwrap();
    // The device answers without reading the body, and ends the stream.
    let _ = body
        .send(img[CHUNK_BYTES..2 * CHUNK_BYTES].to_vec().into())
        .await;
    match answers.next().await.unwrap().unwrap().body {
        Some(envelope::Body::Response(Response {
            kind: Some(response::Kind::OtaAck(ack)),
        })) => assert_eq!(ack.next_offset, 0),
        other => panic!("not an OtaAck: {other:?}"),
    }
    assert!(answers.next().await.unwrap().is_none(), "the stream ended");
    assert_eq!(rig.target.next_offset(), 0, "nothing stored");

    // The sender starts again from the device's offset.
    let report = send_firmware(&session, &manifest, img.clone(), 90, |_| {})
        .await
        .unwrap();
    assert_eq!(report.chunks_sent, 4);
    assert_eq!(rig.target.installed().unwrap().image, img);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_refuses_a_stream_without_a_start_and_other_requests() {
    let rig = rig().await;
    let session = rig.connect().await;
    let stream = request_envelope(request::Kind::OtaStream(OtaStream { offset: 0 }));
    let (mut body, mut answers) = session.request_with_body(stream).await.unwrap();
    let _ = body.send(vec![1; 100].into()).await;
    let answer = answers.next().await.unwrap().unwrap();
    assert_eq!(ota_outcome(&answer), OtaOutcome::NotStarted);

    // An OtaStream must carry the image as its body.
    let bodiless = request_envelope(request::Kind::OtaStream(OtaStream { offset: 0 }));
    let err = session.call(bodiless).await.unwrap_err();
    assert!(
        matches!(
            err,
            SessionError::Remote {
                code: ErrorCode::BadRequest,
                ..
            }
        ),
        "{err:?}"
    );

    let ping = request_envelope(request::Kind::Ping(Ping {
        payload: vec![1, 2],
    }));
    let err = session.call(ping).await.unwrap_err();
    assert!(
        matches!(err, SessionError::Remote { code, .. } if code == ErrorCode::BadRequest),
        "{err:?}"
    );

    // A manifest for another product is refused with its typed outcome.
    let img = image(1000);
    let mut manifest = signed_manifest(&rig.vendor, &img, "9");
    manifest.product_model += 1;
    manifest.signature = rig.vendor.sign(&manifest_signing_input(&manifest)).to_vec();
    let err = send_firmware(&session, &manifest, img, 90, |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            OtaTransferError::Refused {
                outcome: OtaOutcome::WrongManifest
            }
        ),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r15_a_signed_older_image_is_refused_after_an_upgrade_no_rollback() {
    let rig = rig().await;
    let session = rig.connect().await;
    let refused = |err: OtaTransferError| {
        matches!(
            err,
            OtaTransferError::Refused {
                outcome: OtaOutcome::Rollback
            }
        )
    };
    // Older than the 1.0.0 the device runs: refused before any byte.
    let img = image(3 * CHUNK_BYTES);
    let old = signed_manifest(&rig.vendor, &img, "0.9.0");
    let err = send_firmware(&session, &old, img.clone(), 80, |_| {})
        .await
        .unwrap_err();
    assert!(refused(err));
    assert_eq!(rig.target.next_offset(), 0);

    let new = signed_manifest(&rig.vendor, &img, "2.0.0");
    send_firmware(&session, &new, img.clone(), 80, |_| {})
        .await
        .unwrap();
    // Now 2.0.0 runs: 1.5.0, though newer than the first firmware and
    // signed by the vendor, is a rollback; so is another 2.0.0 image.
    let between = signed_manifest(&rig.vendor, &img, "1.5.0");
    let err = send_firmware(&session, &between, img.clone(), 80, |_| {})
        .await
        .unwrap_err();
    assert!(refused(err));
    let other = image(2 * CHUNK_BYTES);
    let same_version = signed_manifest(&rig.vendor, &other, "2.0.0");
    let err = send_firmware(&session, &same_version, other, 80, |_| {})
        .await
        .unwrap_err();
    assert!(refused(err));
    assert_eq!(rig.target.installed().unwrap().manifest, new);
    // The installed manifest itself is answered as installed (a lost
    // answer's retry), not as a rollback.
    let again = send_firmware(&session, &new, img, 80, |_| {})
        .await
        .unwrap();
    assert_eq!(again.version, "2.0.0");
}
