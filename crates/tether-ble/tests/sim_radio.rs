//! The simulated radio behaves like a BLE central should: scans, the R1
//! address rotation, ordered exactly-once delivery over a lossy air,
//! disconnects and supervision timeouts, all deterministic per seed.
//!
//! These tests run on tokio's real clock, with millisecond latencies, because
//! this crate's tokio has no `test-util` feature (needed for
//! `#[tokio::test(start_paused = true)]`). Every assertion holds under a
//! paused clock too: time is only ever checked as a lower bound.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tether_ble::radio::{Central, Link, PeripheralId, RadioError, TETHER_SERVICE_UUID};
use tether_ble::sim::{PeripheralHandler, SimAir, SimConfig, SimPeripheral, SimStats};
use tokio::time::{Instant, timeout};

const WINDOW: Duration = Duration::from_millis(300);

/// What a handler saw, shared with the test.
#[derive(Debug, Clone, Default)]
struct Seen(Arc<Mutex<Vec<String>>>);

impl Seen {
    fn push(&self, event: impl Into<String>) {
        self.0.lock().unwrap().push(event.into());
    }

    fn events(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// Notifies every write straight back.
struct Echo(Seen);

impl PeripheralHandler for Echo {
    fn on_connect(&mut self) {
        self.0.push("connect");
    }

    fn on_write(&mut self, segment: &[u8]) -> Vec<Vec<u8>> {
        vec![segment.to_vec()]
    }

    fn on_disconnect(&mut self) {
        self.0.push("disconnect");
    }
}

fn echo(air: &SimAir, advert: &[u8]) -> (SimPeripheral, Seen) {
    let seen = Seen::default();
    let peripheral = air.add_peripheral(Box::new(Echo(seen.clone())));
    peripheral.set_advert(Some(advert.to_vec()));
    (peripheral, seen)
}

async fn only_id(air: &SimAir) -> PeripheralId {
    let found = air.central().scan(WINDOW).await.unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    found[0].id.clone()
}

fn segment(i: u32) -> Vec<u8> {
    let mut bytes = i.to_be_bytes().to_vec();
    // Varying lengths, up to the 182 bytes of the default MTU.
    bytes.resize(4 + (i as usize * 7) % 179, 0xa5);
    bytes
}

/// Sends `count` segments and receives their echoes concurrently; returns
/// what arrived.
async fn echo_many(link: &impl Link, count: u32) -> Vec<Vec<u8>> {
    let sending = async {
        for i in 0..count {
            link.send(&segment(i)).await.unwrap();
        }
    };
    let receiving = async {
        let mut got = Vec::new();
        for _ in 0..count {
            got.push(link.recv().await.unwrap());
        }
        got
    };
    tokio::join!(sending, receiving).1
}

#[tokio::test(start_paused = true)]
async fn scan_reports_advertising_peripherals_with_rssi_and_service_data() {
    let air = SimAir::new(SimConfig::default());
    let (near, _) = echo(&air, &[0x08, 0, 1, 0, 0x11]);
    near.set_rssi(-42);
    let (far, _) = echo(&air, &[0x08, 0, 2, 0, 0x21]);
    far.set_rssi(-90);
    let (removed, _) = echo(&air, &[0x08, 0, 3, 0, 0x31]);
    removed.remove();
    let _silent = air.add_peripheral(Box::new(Echo(Seen::default())));

    let central = air.central();
    let started = Instant::now();
    let found = central.scan(WINDOW).await.unwrap();
    assert!(started.elapsed() >= WINDOW, "a scan lasts its window");
    assert_eq!(found.len(), 2, "{found:?}");
    let near_seen = found
        .iter()
        .find(|r| r.id == near.id().unwrap())
        .expect("the near peripheral");
    assert_eq!(near_seen.rssi, Some(-42));
    assert_eq!(
        near_seen.service_data,
        vec![(TETHER_SERVICE_UUID, vec![0x08, 0, 1, 0, 0x11])]
    );
    let far_seen = found.iter().find(|r| r.id == far.id().unwrap()).unwrap();
    assert_eq!(far_seen.rssi, Some(-90));
    assert_eq!(far_seen.tether_data(), Some(&[0x08, 0, 2, 0, 0x21][..]));
    assert_eq!(removed.id(), None);

    far.set_advert(None);
    let found = central.scan(WINDOW).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id, near.id().unwrap());
}

#[tokio::test(start_paused = true)]
async fn connecting_to_an_unknown_or_silent_peripheral_is_not_found() {
    let air = SimAir::new(SimConfig::default());
    let central = air.central();
    let nobody = PeripheralId("sim-000000000000".into());
    assert_eq!(
        central.connect(&nobody).await.unwrap_err(),
        RadioError::NotFound
    );
    let (quiet, _) = echo(&air, &[0x08, 0, 1, 0, 0x11]);
    let id = only_id(&air).await;
    quiet.set_advert(None);
    assert_eq!(
        central.connect(&id).await.unwrap_err(),
        RadioError::NotFound
    );
}

#[tokio::test(start_paused = true)]
async fn advert_rotation_changes_the_peripheral_id_r1() {
    let air = SimAir::new(SimConfig::default());
    let (device, _) = echo(&air, &[0; 17]);
    let first = only_id(&air).await;

    device.set_advert(Some(vec![0; 17]));
    assert_eq!(only_id(&air).await, first, "same bytes, same address");

    device.set_advert(Some(vec![1; 17]));
    let second = only_id(&air).await;
    assert_ne!(second, first, "a new token comes with a new address");

    // Pausing and advertising again is a new advert too.
    device.set_advert(None);
    device.set_advert(Some(vec![1; 17]));
    let third = only_id(&air).await;
    assert_ne!(third, second);
    assert_ne!(third, first);

    // The old addresses are gone for good.
    let central = air.central();
    for old in [&first, &second] {
        assert_eq!(
            central.connect(old).await.unwrap_err(),
            RadioError::NotFound
        );
    }
    central.connect(&third).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_link_survives_an_advert_rotation_r1() {
    let air = SimAir::new(SimConfig::default());
    let (device, seen) = echo(&air, &[0; 17]);
    let before = only_id(&air).await;
    let link = air.central().connect(&before).await.unwrap();

    device.set_advert(Some(vec![2; 17]));
    assert_ne!(only_id(&air).await, before);
    link.send(b"still here").await.unwrap();
    assert_eq!(link.recv().await.unwrap(), b"still here");
    assert_eq!(seen.events(), ["connect"]);
}

#[tokio::test(start_paused = true)]
async fn echo_round_trip_delivers_segments_in_order() {
    let air = SimAir::new(SimConfig::default());
    let (_device, seen) = echo(&air, &[0x08, 0, 1, 0, 0x11]);
    let link = air.central().connect(&only_id(&air).await).await.unwrap();
    assert_eq!(link.mtu(), 185);

    // Sent first, received after: notifications wait in order.
    for i in 0..20 {
        link.send(&segment(i)).await.unwrap();
    }
    for i in 0..20 {
        assert_eq!(link.recv().await.unwrap(), segment(i));
    }
    assert_eq!(seen.events(), ["connect"]);
    assert_eq!(air.stats().pdus_sent, 60, "write, response, notification");
    assert_eq!(air.stats().pdus_lost, 0);
}

#[tokio::test(start_paused = true)]
async fn a_lossy_air_delivers_every_segment_once_and_in_order() {
    let air = SimAir::new(SimConfig {
        loss: 0.05,
        jitter: Duration::from_millis(2),
        seed: 7,
        ..SimConfig::default()
    });
    let (device, _) = echo(&air, &[0x08, 0, 1, 0, 0x11]);
    let link = air.central().connect(&device.id().unwrap()).await.unwrap();

    let got = echo_many(&link, 1000).await;
    for (i, segment_got) in got.iter().enumerate() {
        assert_eq!(*segment_got, segment(i as u32), "segment {i}");
    }
    // Nothing more: no duplicate is waiting.
    assert!(
        timeout(Duration::from_millis(100), link.recv())
            .await
            .is_err()
    );

    let stats = air.stats();
    assert!(stats.pdus_lost > 50, "{stats:?}");
    assert_eq!(stats.pdus_sent, 3000 + stats.pdus_lost, "{stats:?}");
    assert_eq!(stats.links_dropped, 0);
}

#[tokio::test(start_paused = true)]
async fn peripheral_notifications_arrive_without_a_write() {
    let air = SimAir::new(SimConfig::default());
    let (device, _) = echo(&air, &[0x08, 0, 1, 0, 0x11]);
    device.notify(b"before any connection: dropped".to_vec());
    let link = air.central().connect(&only_id(&air).await).await.unwrap();

    device.notify(b"status 1".to_vec());
    device.notify(b"status 2".to_vec());
    assert_eq!(link.recv().await.unwrap(), b"status 1");
    assert_eq!(link.recv().await.unwrap(), b"status 2");
}

#[tokio::test(start_paused = true)]
async fn a_peripheral_disconnect_fails_the_link_and_a_new_link_works() {
    let air = SimAir::new(SimConfig::default());
    let (device, seen) = echo(&air, &[0x08, 0, 1, 0, 0x11]);
    let id = only_id(&air).await;
    let central = air.central();
    let link = central.connect(&id).await.unwrap();

    // A pending recv wakes when the device drops the link.
    let (pending, ()) = tokio::join!(link.recv(), async {
        tokio::time::sleep(Duration::from_millis(10)).await;
        device.disconnect();
    });
    assert_eq!(pending, Err(RadioError::Disconnected));
    assert_eq!(link.recv().await, Err(RadioError::Disconnected));
    assert_eq!(link.send(b"hi").await, Err(RadioError::Disconnected));
    assert_eq!(seen.events(), ["connect", "disconnect"]);

    // Resume: the device still advertises, under the same address.
    let again = central.connect(&id).await.unwrap();
    again.send(b"resumed").await.unwrap();
    assert_eq!(again.recv().await.unwrap(), b"resumed");
    assert_eq!(seen.events(), ["connect", "disconnect", "connect"]);
    assert_eq!(
        air.stats().links_dropped,
        0,
        "a forced disconnect is no drop"
    );
}

#[tokio::test(start_paused = true)]
async fn notifications_in_flight_are_lost_on_disconnect() {
    let air = SimAir::new(SimConfig {
        latency: Duration::from_millis(50),
        ..SimConfig::default()
    });
    let (device, _) = echo(&air, &[0x08, 0, 1, 0, 0x11]);
    let link = air.central().connect(&device.id().unwrap()).await.unwrap();
    device.notify(b"late".to_vec());
    device.disconnect();
    assert_eq!(link.recv().await, Err(RadioError::Disconnected));
}

#[tokio::test(start_paused = true)]
async fn disconnect_is_idempotent_and_later_calls_fail() {
    let air = SimAir::new(SimConfig::default());
    let (_device, seen) = echo(&air, &[0x08, 0, 1, 0, 0x11]);
    let link = air.central().connect(&only_id(&air).await).await.unwrap();
    link.disconnect().await.unwrap();
    link.disconnect().await.unwrap();
    assert_eq!(link.send(b"x").await, Err(RadioError::Disconnected));
    assert_eq!(link.recv().await, Err(RadioError::Disconnected));
    drop(link);
    assert_eq!(seen.events(), ["connect", "disconnect"]);
}

#[tokio::test(start_paused = true)]
async fn a_peripheral_takes_one_connection_and_dropping_a_link_frees_it() {
    let air = SimAir::new(SimConfig::default());
    let (_device, seen) = echo(&air, &[0x08, 0, 1, 0, 0x11]);
    let id = only_id(&air).await;
    let central = air.central();
    let link = central.connect(&id).await.unwrap();
    assert!(matches!(
        central.connect(&id).await,
        Err(RadioError::Backend(_))
    ));
    drop(link);
    assert_eq!(seen.events(), ["connect", "disconnect"]);
    central.connect(&id).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_dead_air_drops_the_link_after_the_supervision_losses() {
    let air = SimAir::new(SimConfig {
        loss: 1.0,
        ..SimConfig::default()
    });
    let (device, seen) = echo(&air, &[0x08, 0, 1, 0, 0x11]);
    assert!(air.central().scan(WINDOW).await.unwrap().is_empty());
    // Connecting is never lost in the model; the id comes from the device.
    let link = air.central().connect(&device.id().unwrap()).await.unwrap();

    let started = Instant::now();
    assert_eq!(link.send(b"hello?").await, Err(RadioError::Disconnected));
    assert!(started.elapsed() >= 6 * SimConfig::default().latency);
    assert_eq!(link.recv().await, Err(RadioError::Disconnected));
    assert_eq!(seen.events(), ["connect", "disconnect"]);
    let stats = air.stats();
    assert_eq!(stats.links_dropped, 1);
    assert_eq!((stats.pdus_sent, stats.pdus_lost), (6, 6));
}

#[tokio::test(start_paused = true)]
async fn a_lost_notification_can_drop_the_link_too() {
    let air = SimAir::new(SimConfig {
        loss: 1.0,
        supervision_losses: 3,
        ..SimConfig::default()
    });
    let (device, seen) = echo(&air, &[0x08, 0, 1, 0, 0x11]);
    let link = air.central().connect(&device.id().unwrap()).await.unwrap();
    device.notify(b"never arrives".to_vec());
    assert_eq!(link.recv().await, Err(RadioError::Disconnected));
    assert_eq!(seen.events(), ["connect", "disconnect"]);
    assert_eq!(air.stats().links_dropped, 1);
}

#[tokio::test(start_paused = true)]
async fn a_segment_beyond_the_att_mtu_is_refused() {
    let air = SimAir::new(SimConfig {
        mtu: 23,
        ..SimConfig::default()
    });
    let (device, _) = echo(&air, &[0x08, 0, 1, 0, 0x11]);
    let link = air.central().connect(&device.id().unwrap()).await.unwrap();
    assert_eq!(link.mtu(), 23);
    assert_eq!(
        link.send(&[0; 21]).await,
        Err(RadioError::Backend("segment exceeds ATT MTU".into()))
    );
    link.send(&[7; 20]).await.unwrap();
    assert_eq!(link.recv().await.unwrap(), [7; 20]);
}

#[tokio::test(start_paused = true)]
async fn short_scans_on_a_lossy_air_miss_adverts_long_ones_do_not() {
    let air = SimAir::new(SimConfig {
        loss: 0.3,
        seed: 3,
        ..SimConfig::default()
    });
    let _device = echo(&air, &[0x08, 0, 1, 0, 0x11]);
    let central = air.central();
    let mut missed = 0;
    for _ in 0..40 {
        // One advert event: missed with probability 0.3.
        if central
            .scan(Duration::from_millis(50))
            .await
            .unwrap()
            .is_empty()
        {
            missed += 1;
        }
    }
    assert!((3..=25).contains(&missed), "missed {missed} of 40");
    for _ in 0..5 {
        // 8 advert events: missed with probability 0.3^8, below 1e-4.
        assert_eq!(
            central
                .scan(Duration::from_millis(800))
                .await
                .unwrap()
                .len(),
            1
        );
    }
}

/// One lossy session; what it leaves behind for comparison.
async fn session(seed: u64) -> (SimStats, Vec<PeripheralId>) {
    let air = SimAir::new(SimConfig {
        loss: 0.1,
        jitter: Duration::from_millis(1),
        seed,
        ..SimConfig::default()
    });
    let (a, _) = echo(&air, &[0; 17]);
    let (_b, _) = echo(&air, &[1; 17]);
    let central = air.central();
    let mut ids: Vec<PeripheralId> = Vec::new();
    ids.extend(
        central
            .scan(WINDOW)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id),
    );
    a.set_advert(Some(vec![2; 17]));
    ids.extend(
        central
            .scan(WINDOW)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id),
    );
    let link = central.connect(&a.id().unwrap()).await.unwrap();
    let got = echo_many(&link, 200).await;
    assert_eq!(got.len(), 200);
    (air.stats(), ids)
}

#[tokio::test(start_paused = true)]
async fn the_same_seed_gives_the_same_run() {
    let (stats, ids) = session(42).await;
    assert!(stats.pdus_lost > 0);
    assert_eq!(session(42).await, (stats, ids.clone()));
    let (_, other_ids) = session(43).await;
    assert_ne!(other_ids, ids, "addresses come from the seed");
}
