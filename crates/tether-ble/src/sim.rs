//! The simulated radio: an in-process Bluetooth LE "air" with RSSI, loss and
//! latency. [`SimCentral`] and [`SimLink`] implement [`Central`] and [`Link`]
//! the way the BlueZ backend does, so the commissioning driver, its tests and
//! the demo run without hardware; each simulated peripheral is a
//! [`PeripheralHandler`] behind which a device's sans-IO cores sit.
//!
//! Deterministic: every random choice (losses, jitter, addresses) comes from
//! one PRNG seeded by [`SimConfig::seed`], and every delay is a
//! `tokio::time` sleep, so under a paused clock
//! (`#[tokio::test(start_paused = true)]`) a run is reproducible and takes
//! no wall-clock time. Nothing here opens a socket or spawns a thread or a
//! task: the work happens inside the futures of the caller.
//!
//! # Usage
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tether_ble::radio::RadioError> {
//! use std::time::Duration;
//! use tether_ble::radio::{Central, Link};
//! use tether_ble::sim::{PeripheralHandler, SimAir, SimConfig};
//!
//! /// A device that notifies every write straight back.
//! struct Echo;
//! impl PeripheralHandler for Echo {
//!     fn on_write(&mut self, segment: &[u8]) -> Vec<Vec<u8>> {
//!         vec![segment.to_vec()]
//!     }
//! }
//!
//! let air = SimAir::new(SimConfig::default());
//! let device = air.add_peripheral(Box::new(Echo));
//! device.set_advert(Some(vec![0x08, 0x12, 0x34, 0x05, 0x61]));
//!
//! let central = air.central();
//! let seen = central.scan(Duration::from_millis(300)).await?;
//! let link = central.connect(&seen[0].id).await?;
//! link.send(b"hello").await?;
//! assert_eq!(link.recv().await?, b"hello");
//! link.disconnect().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Model
//!
//! - **Adverts.** A peripheral advertises its Tether service data (under
//!   [`TETHER_SERVICE_UUID`]) and an RSSI it is given. A scan of `window`
//!   sleeps `window`, then reports every peripheral advertising at that
//!   moment. It assumes one advert event per [`ADVERT_INTERVAL`] (at least
//!   one per scan, `k = max(1, window / ADVERT_INTERVAL)`), each lost with
//!   probability `loss`; a peripheral is missing from the scan only if all
//!   `k` are lost, with probability `loss^k`.
//! - **Privacy (R1; issue 4: "the BLE address rotates together with the
//!   token").** Every [`SimPeripheral::set_advert`] with new bytes gives the
//!   peripheral a fresh random [`PeripheralId`] from the PRNG, never derived
//!   from anything stable, so scans before and after a rotation cannot be
//!   linked by address. A connection stays up across a rotation; the old
//!   address no longer connects.
//! - **Connect.** Pays one `latency + jitter`; never lost. A peripheral
//!   takes one connection at a time.
//! - **PDUs.** A write with response is two PDUs (the write, then its
//!   response); a notification is one. Each transmission attempt of a PDU
//!   takes `latency` plus a uniform extra in `[0, jitter)` and is lost with
//!   probability `loss`; a lost attempt is retransmitted (link-layer ARQ),
//!   so the PDU arrives after the sum of its attempts, exactly once and in
//!   order. After [`SimConfig::supervision_losses`] consecutive lost
//!   attempts of one PDU the link drops (a supervision timeout): both sides
//!   see [`RadioError::Disconnected`] and the handler's `on_disconnect` runs.
//! - **Notifications** are queued per link. Each one's arrival time and
//!   losses are drawn when it is queued; it arrives no earlier than the one
//!   before it (head-of-line blocking keeps them in order), and
//!   [`Link::recv`] hands them out as their arrival time passes.
//! - **Disconnects.** After either side disconnects (or the link drops),
//!   notifications still in flight are lost and every call on the link fails
//!   with [`RadioError::Disconnected`]; a pending `recv` wakes at once.
//!
//! # Limits
//!
//! No interference between links or with other radios, no RSSI-dependent
//! loss, no connection intervals or throughput limit (a PDU's delay does not
//! depend on its size), no MTU exchange (every link gets
//! [`SimConfig::mtu`]) and no GATT discovery (every peripheral has the
//! commissioning service). A scan sees adverts as they stand at the end of
//! its window, so a rotation during the window shows only the new address.
//! Losses of a notification are counted in [`SimStats`] when it is queued,
//! and a link that a notification's supervision timeout drops is closed at
//! the first use of the air after that instant. Handler callbacks run under
//! the air's lock and must not call back into the air or its handles: such
//! calls are refused and logged instead of deadlocking.

use std::cell::Cell;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::radio::{Central, Link, PeripheralId, RadioError, ScanResult, TETHER_SERVICE_UUID};

/// The ATT MTU links get by default: what current phones and BlueZ usually
/// negotiate.
pub const DEFAULT_MTU: u16 = 185;
/// Consecutive losses of one PDU after which a link drops, by default.
pub const DEFAULT_SUPERVISION_LOSSES: u32 = 6;
/// One-way delay of a PDU, by default.
pub const DEFAULT_LATENCY: Duration = Duration::from_millis(1);
/// The RSSI a peripheral reports until [`SimPeripheral::set_rssi`].
pub const DEFAULT_RSSI_DBM: i16 = -60;
/// The assumed advertising interval: one advert event per interval.
pub const ADVERT_INTERVAL: Duration = Duration::from_millis(100);

/// Smallest ATT MTU (Bluetooth Core, Vol 3, Part F, §3.2.8).
const MIN_ATT_MTU: u16 = 23;
/// Largest useful ATT MTU: 512-byte values plus a 5-byte header.
const MAX_ATT_MTU: u16 = 517;
/// The ATT opcode and handle in front of a written or notified value.
const ATT_HEADER_BYTES: u16 = 3;

/// The behaviour of the simulated air. Out-of-range values are brought into
/// range by [`SimAir::new`]: `loss` into `[0, 1]` (NaN is 0), `mtu` into
/// `[23, 517]`, `supervision_losses` to at least 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimConfig {
    /// Probability that one transmission of a PDU (or one advert event) is
    /// lost; a lost PDU is retransmitted.
    pub loss: f64,
    /// One-way delay of every transmission attempt.
    pub latency: Duration,
    /// Extra delay per attempt, uniform in `[0, jitter)`.
    pub jitter: Duration,
    /// Seed of the PRNG behind losses, jitter and addresses.
    pub seed: u64,
    /// The ATT MTU every link gets.
    pub mtu: u16,
    /// Consecutive losses of one PDU after which the link drops.
    pub supervision_losses: u32,
}

impl Default for SimConfig {
    /// A perfect air: no loss, [`DEFAULT_LATENCY`], no jitter,
    /// [`DEFAULT_MTU`], [`DEFAULT_SUPERVISION_LOSSES`], seed 0.
    fn default() -> Self {
        Self {
            loss: 0.0,
            latency: DEFAULT_LATENCY,
            jitter: Duration::ZERO,
            seed: 0,
            mtu: DEFAULT_MTU,
            supervision_losses: DEFAULT_SUPERVISION_LOSSES,
        }
    }
}

impl SimConfig {
    fn sanitized(mut self) -> Self {
        self.loss = if self.loss.is_nan() {
            0.0
        } else {
            self.loss.clamp(0.0, 1.0)
        };
        self.mtu = self.mtu.clamp(MIN_ATT_MTU, MAX_ATT_MTU);
        self.supervision_losses = self.supervision_losses.max(1);
        self
    }
}

/// Counters of what happened on the air since [`SimAir::new`]. Only link
/// traffic counts; adverts do not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SimStats {
    /// Transmission attempts of PDUs (writes, write responses,
    /// notifications), retransmissions included.
    pub pdus_sent: u64,
    /// Attempts that were lost (and retransmitted, unless the link dropped).
    pub pdus_lost: u64,
    /// Links dropped by a supervision timeout (not those disconnected on
    /// purpose by either side).
    pub links_dropped: u64,
}

/// The device side of a simulated peripheral: the commissioning GATT server.
/// Callbacks run under the air's lock: they must not call into the
/// [`SimAir`] or its handles (such calls are refused and logged), and they
/// answer by returning segments instead.
pub trait PeripheralHandler: Send {
    /// A central connected.
    fn on_connect(&mut self) {}

    /// The central wrote `segment` to RX. Returns the segments to notify
    /// back on TX, in order. A segment longer than `mtu - 3` is truncated,
    /// as a real ATT server does.
    fn on_write(&mut self, segment: &[u8]) -> Vec<Vec<u8>>;

    /// The connection ended, from either side or by a supervision timeout.
    /// Called once per connection.
    fn on_disconnect(&mut self) {}
}

/// The shared medium: peripherals advertise on it and centrals scan and
/// connect through it. Cloning gives another handle to the same air.
#[derive(Clone)]
pub struct SimAir {
    shared: Shared,
}

impl std::fmt::Debug for SimAir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimAir").finish_non_exhaustive()
    }
}

impl SimAir {
    /// An empty air behaving as `config` says.
    pub fn new(config: SimConfig) -> Self {
        let config = config.sanitized();
        let air = Air {
            rng: SplitMix64(config.seed),
            config,
            stats: SimStats::default(),
            peripherals: BTreeMap::new(),
            links: BTreeMap::new(),
            next_key: 0,
        };
        Self {
            shared: Shared(Arc::new(Mutex::new(air))),
        }
    }

    /// Adds a peripheral driven by `handler`. It does not advertise until
    /// [`SimPeripheral::set_advert`].
    pub fn add_peripheral(&self, handler: Box<dyn PeripheralHandler>) -> SimPeripheral {
        let key = match self.shared.lock_for("add_peripheral") {
            Some(mut air) => air.add(handler),
            // Refused inside a callback: the handle refers to no peripheral
            // and all its calls do nothing.
            None => u64::MAX,
        };
        SimPeripheral {
            shared: self.shared.clone(),
            key,
        }
    }

    /// A central on this air.
    pub fn central(&self) -> SimCentral {
        SimCentral {
            shared: self.shared.clone(),
        }
    }

    /// What happened on the air so far (all zero if called from a handler
    /// callback).
    pub fn stats(&self) -> SimStats {
        self.shared
            .lock_for("stats")
            .map(|air| air.stats)
            .unwrap_or_default()
    }
}

/// A handle to one simulated peripheral, for the test or demo that plays
/// the device. Once the peripheral is removed every call does nothing.
#[derive(Clone)]
pub struct SimPeripheral {
    shared: Shared,
    key: u64,
}

impl std::fmt::Debug for SimPeripheral {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimPeripheral")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl SimPeripheral {
    /// Advertises `service_data` under [`TETHER_SERVICE_UUID`], or stops
    /// advertising with `None`. New bytes (a rotated token, or advertising
    /// again after a pause) come with a new random address, so that scans
    /// before and after cannot be linked by [`PeripheralId`] (R1, issue 4).
    /// The same bytes keep the address. A connection stays up.
    pub fn set_advert(&self, service_data: Option<Vec<u8>>) {
        if let Some(mut air) = self.shared.lock_for("set_advert") {
            air.set_advert(self.key, service_data);
        }
    }

    /// Sets the RSSI, in dBm, that scans report.
    pub fn set_rssi(&self, dbm: i16) {
        if let Some(mut air) = self.shared.lock_for("set_rssi")
            && let Some(device) = air.peripherals.get_mut(&self.key)
        {
            device.rssi = dbm;
        }
    }

    /// Notifies `segment` on TX without a write before it (a later
    /// provisioning status, say). Dropped when no central is connected.
    pub fn notify(&self, segment: Vec<u8>) {
        if let Some(mut air) = self.shared.lock_for("notify")
            && let Some(link) = air.peripherals.get(&self.key).and_then(|d| d.link)
        {
            air.queue_notification(link, segment, Instant::now());
        }
    }

    /// Ends the current connection from the device side, if there is one:
    /// the central's link fails with [`RadioError::Disconnected`] and the
    /// handler's `on_disconnect` runs.
    pub fn disconnect(&self) {
        if let Some(mut air) = self.shared.lock_for("disconnect")
            && let Some(link) = air.peripherals.get(&self.key).and_then(|d| d.link)
        {
            air.close_link(link, false);
        }
    }

    /// Disconnects (as [`disconnect`](Self::disconnect)) and takes the
    /// peripheral off the air; its handler is dropped.
    pub fn remove(&self) {
        if let Some(mut air) = self.shared.lock_for("remove") {
            if let Some(link) = air.peripherals.get(&self.key).and_then(|d| d.link) {
                air.close_link(link, false);
            }
            air.peripherals.remove(&self.key);
        }
    }

    /// The peripheral's current address, as a scan would report it, whether
    /// or not it advertises; `None` once removed. For tests that need an
    /// address a lossy scan would not give them.
    pub fn id(&self) -> Option<PeripheralId> {
        let air = self.shared.lock_for("id")?;
        air.peripherals.get(&self.key).map(|d| d.id.clone())
    }
}

/// The central role on a [`SimAir`].
#[derive(Clone)]
pub struct SimCentral {
    shared: Shared,
}

impl std::fmt::Debug for SimCentral {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimCentral").finish_non_exhaustive()
    }
}

impl Central for SimCentral {
    type Link = SimLink;

    /// Sleeps `window`, then reports every peripheral advertising at that
    /// moment, sorted by id, each missing with probability `loss^k` for
    /// `k = max(1, window / ADVERT_INTERVAL)` advert events.
    async fn scan(&self, window: Duration) -> Result<Vec<ScanResult>, RadioError> {
        tokio::time::sleep(window).await;
        Ok(self.shared.lock()?.scan(window))
    }

    /// Pays one `latency + jitter`, then connects. Fails with
    /// [`RadioError::NotFound`] for an unknown id, a peripheral that does
    /// not advertise, or one whose address rotated meanwhile, and with
    /// [`RadioError::Backend`] if the peripheral already has a connection.
    async fn connect(&self, id: &PeripheralId) -> Result<SimLink, RadioError> {
        let delay = {
            let mut air = self.shared.lock()?;
            air.find_advertising(id)?;
            air.attempt_delay()
        };
        tokio::time::sleep(delay).await;
        let (link, mtu) = self.shared.lock()?.connect(id)?;
        Ok(SimLink {
            shared: self.shared.clone(),
            link,
            mtu,
            att: tokio::sync::Mutex::new(()),
        })
    }
}

/// A simulated connection to one peripheral. Dropping it disconnects.
pub struct SimLink {
    shared: Shared,
    link: u64,
    mtu: u16,
    /// ATT allows one outstanding request per connection (Bluetooth Core,
    /// Vol 3, Part F, §3.3.2): concurrent sends queue here.
    att: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for SimLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimLink")
            .field("link", &self.link)
            .field("mtu", &self.mtu)
            .finish_non_exhaustive()
    }
}

impl SimLink {
    /// Carries one PDU: sleeps for its planned attempts, then reports
    /// whether the link survived them.
    async fn transfer(&self) -> Result<(), RadioError> {
        let plan = self.shared.lock()?.plan_pdu(self.link)?;
        tokio::time::sleep(plan.delay).await;
        let mut air = self.shared.lock()?;
        if plan.delivered {
            air.check_open(self.link)
        } else {
            // Supervision timeout (no-op if the link closed meanwhile).
            air.close_link(self.link, true);
            Err(RadioError::Disconnected)
        }
    }
}

impl Link for SimLink {
    /// [`SimConfig::mtu`].
    fn mtu(&self) -> u16 {
        self.mtu
    }

    /// The write PDU, the handler's `on_write` (whose segments are queued as
    /// notifications), then the write response PDU. A segment longer than
    /// `mtu - 3` fails with [`RadioError::Backend`]. If the future is dropped
    /// midway the write may or may not have reached the peripheral.
    async fn send(&self, segment: &[u8]) -> Result<(), RadioError> {
        if segment.len() > usize::from(self.mtu - ATT_HEADER_BYTES) {
            return Err(RadioError::Backend("segment exceeds ATT MTU".into()));
        }
        let _request = self.att.lock().await;
        self.transfer().await?;
        self.shared.lock()?.deliver_write(self.link, segment)?;
        self.transfer().await
    }

    /// The next notification, once its arrival time has passed. Cancel-safe:
    /// a notification is taken off the queue only when it is returned.
    async fn recv(&self) -> Result<Vec<u8>, RadioError> {
        loop {
            let (mut wake, until) = match self.shared.lock()?.poll_inbox(self.link)? {
                Inbox::Ready(segment) => return Ok(segment),
                Inbox::Wait { wake, until } => (wake, until),
            };
            // A new notification, a disconnect (the sender is dropped) or
            // the next arrival time ends the wait; then look again.
            match until {
                Some(deadline) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(deadline) => {}
                        _ = wake.changed() => {}
                    }
                }
                None => {
                    let _closed = wake.changed().await;
                }
            }
        }
    }

    /// Ends the connection; the handler's `on_disconnect` runs. Idempotent:
    /// later calls (and calls after the peripheral disconnected) return
    /// `Ok`, while `send` and `recv` fail with [`RadioError::Disconnected`].
    async fn disconnect(&self) -> Result<(), RadioError> {
        self.shared.lock()?.close_link(self.link, false);
        Ok(())
    }
}

impl Drop for SimLink {
    fn drop(&mut self) {
        if let Some(mut air) = self.shared.lock_for("drop a link") {
            air.close_link(self.link, false);
        }
    }
}

thread_local! {
    /// Set while a handler callback runs on this thread, whose caller holds
    /// the air's lock.
    static IN_CALLBACK: Cell<bool> = const { Cell::new(false) };
}

/// Runs a handler callback, marking the thread so that a call back into the
/// air is refused instead of deadlocking on its lock.
fn callback<R>(f: impl FnOnce() -> R) -> R {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            IN_CALLBACK.set(false);
        }
    }
    IN_CALLBACK.set(true);
    let _reset = Reset;
    f()
}

#[derive(Clone)]
struct Shared(Arc<Mutex<Air>>);

impl Shared {
    /// Locks the air and applies supervision timeouts that are due.
    fn lock(&self) -> Result<MutexGuard<'_, Air>, RadioError> {
        if IN_CALLBACK.get() {
            return Err(RadioError::Backend(
                "the simulated air was called from a peripheral handler callback".into(),
            ));
        }
        // A handler that panicked poisons the lock; the air's state is still
        // consistent between operations, so carry on.
        let mut air = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        air.settle(Instant::now());
        Ok(air)
    }

    /// [`Shared::lock`] for calls that cannot return an error.
    fn lock_for(&self, what: &'static str) -> Option<MutexGuard<'_, Air>> {
        match self.lock() {
            Ok(air) => Some(air),
            Err(error) => {
                tracing::error!(%error, what, "simulated air call refused");
                None
            }
        }
    }
}

struct Air {
    config: SimConfig,
    rng: SplitMix64,
    stats: SimStats,
    /// By insertion order, so that scans draw from the PRNG in a fixed order.
    peripherals: BTreeMap<u64, Device>,
    links: BTreeMap<u64, LinkState>,
    next_key: u64,
}

struct Device {
    handler: Box<dyn PeripheralHandler>,
    id: PeripheralId,
    advert: Option<Vec<u8>>,
    rssi: i16,
    link: Option<u64>,
}

struct LinkState {
    device: u64,
    /// Notifications in flight, with their arrival times (non-decreasing).
    inbox: VecDeque<(Instant, Vec<u8>)>,
    /// Arrival time of the last notification queued.
    tail: Instant,
    /// When a notification's supervision timeout drops the link.
    doomed_at: Option<Instant>,
    /// Bumped on every new notification; dropped with the link, which wakes
    /// a pending `recv` either way.
    wake: watch::Sender<()>,
}

/// The fate of one PDU, drawn up front.
struct Plan {
    /// Sum of the attempts' delays.
    delay: Duration,
    /// False if the last attempt was the supervision timeout's.
    delivered: bool,
}

enum Inbox {
    Ready(Vec<u8>),
    Wait {
        wake: watch::Receiver<()>,
        until: Option<Instant>,
    },
}

impl Air {
    fn add(&mut self, handler: Box<dyn PeripheralHandler>) -> u64 {
        let key = self.next_key;
        self.next_key += 1;
        let id = self.fresh_id();
        self.peripherals.insert(
            key,
            Device {
                handler,
                id,
                advert: None,
                rssi: DEFAULT_RSSI_DBM,
                link: None,
            },
        );
        key
    }

    /// A random 48-bit address, unlike any current one (R1: never derived
    /// from anything stable).
    fn fresh_id(&mut self) -> PeripheralId {
        loop {
            let address = self.rng.next_u64() & 0xffff_ffff_ffff;
            let id = PeripheralId(format!("sim-{address:012x}"));
            if !self.peripherals.values().any(|d| d.id == id) {
                return id;
            }
        }
    }

    fn set_advert(&mut self, key: u64, service_data: Option<Vec<u8>>) {
        let Some(device) = self.peripherals.get(&key) else {
            return;
        };
        let rotates = service_data.is_some() && service_data != device.advert;
        let id = rotates.then(|| self.fresh_id());
        if let Some(device) = self.peripherals.get_mut(&key) {
            if let Some(id) = id {
                device.id = id;
            }
            device.advert = service_data;
        }
    }

    fn scan(&mut self, window: Duration) -> Vec<ScanResult> {
        let events = (window.as_nanos() / ADVERT_INTERVAL.as_nanos()).max(1);
        let missed = self
            .config
            .loss
            .powi(i32::try_from(events).unwrap_or(i32::MAX));
        let mut results = Vec::new();
        for device in self.peripherals.values() {
            let Some(data) = &device.advert else {
                continue;
            };
            if self.rng.chance(missed) {
                continue;
            }
            results.push(ScanResult {
                id: device.id.clone(),
                rssi: Some(device.rssi),
                service_data: vec![(TETHER_SERVICE_UUID, data.clone())],
            });
        }
        results.sort_by(|a, b| a.id.0.cmp(&b.id.0));
        results
    }

    fn find_advertising(&self, id: &PeripheralId) -> Result<u64, RadioError> {
        self.peripherals
            .iter()
            .find(|(_, d)| d.id == *id && d.advert.is_some())
            .map(|(key, _)| *key)
            .ok_or(RadioError::NotFound)
    }

    fn connect(&mut self, id: &PeripheralId) -> Result<(u64, u16), RadioError> {
        let key = self.find_advertising(id)?;
        let link = self.next_key;
        let Some(device) = self.peripherals.get_mut(&key) else {
            return Err(RadioError::NotFound);
        };
        if device.link.is_some() {
            return Err(RadioError::Backend(
                "the peripheral already has a connection".into(),
            ));
        }
        device.link = Some(link);
        callback(|| device.handler.on_connect());
        self.next_key += 1;
        let (wake, _) = watch::channel(());
        self.links.insert(
            link,
            LinkState {
                device: key,
                inbox: VecDeque::new(),
                tail: Instant::now(),
                doomed_at: None,
                wake,
            },
        );
        Ok((link, self.config.mtu))
    }

    fn check_open(&self, link: u64) -> Result<(), RadioError> {
        if self.links.contains_key(&link) {
            Ok(())
        } else {
            Err(RadioError::Disconnected)
        }
    }

    /// Closes `link` if it is open: the handler's `on_disconnect` runs, and
    /// a pending `recv` wakes as the link's wake sender is dropped.
    fn close_link(&mut self, link: u64, supervision_timeout: bool) {
        let Some(state) = self.links.remove(&link) else {
            return;
        };
        if let Some(device) = self.peripherals.get_mut(&state.device) {
            if device.link == Some(link) {
                device.link = None;
            }
            callback(|| device.handler.on_disconnect());
        }
        if supervision_timeout {
            self.stats.links_dropped += 1;
        }
    }

    /// Drops the links whose supervision timeout has come.
    fn settle(&mut self, now: Instant) {
        let due: Vec<u64> = self
            .links
            .iter()
            .filter(|(_, state)| state.doomed_at.is_some_and(|at| at <= now))
            .map(|(link, _)| *link)
            .collect();
        for link in due {
            self.close_link(link, true);
        }
    }

    /// One attempt's delay: `latency` plus uniform `[0, jitter)`.
    fn attempt_delay(&mut self) -> Duration {
        let jitter = u64::try_from(self.config.jitter.as_nanos()).unwrap_or(u64::MAX);
        let extra = if jitter == 0 {
            0
        } else {
            self.rng.next_u64() % jitter
        };
        self.config
            .latency
            .saturating_add(Duration::from_nanos(extra))
    }

    /// Draws the attempts of one PDU until one gets through or the
    /// supervision timeout, counting them.
    fn plan(&mut self) -> Plan {
        let mut delay = Duration::ZERO;
        let mut losses = 0;
        loop {
            delay = delay.saturating_add(self.attempt_delay());
            self.stats.pdus_sent += 1;
            if !self.rng.chance(self.config.loss) {
                return Plan {
                    delay,
                    delivered: true,
                };
            }
            self.stats.pdus_lost += 1;
            losses += 1;
            if losses >= self.config.supervision_losses {
                return Plan {
                    delay,
                    delivered: false,
                };
            }
        }
    }

    fn plan_pdu(&mut self, link: u64) -> Result<Plan, RadioError> {
        self.check_open(link)?;
        Ok(self.plan())
    }

    fn deliver_write(&mut self, link: u64, segment: &[u8]) -> Result<(), RadioError> {
        let device = self
            .links
            .get(&link)
            .map(|state| state.device)
            .ok_or(RadioError::Disconnected)?;
        let notifications = match self.peripherals.get_mut(&device) {
            Some(device) => callback(|| device.handler.on_write(segment)),
            None => return Err(RadioError::Disconnected),
        };
        let now = Instant::now();
        for notification in notifications {
            self.queue_notification(link, notification, now);
        }
        Ok(())
    }

    fn queue_notification(&mut self, link: u64, mut segment: Vec<u8>, now: Instant) {
        match self.links.get(&link) {
            // Queued behind a PDU whose loss drops the link: never arrives.
            Some(state) if state.doomed_at.is_some() => return,
            Some(_) => {}
            None => return,
        }
        let room = usize::from(self.config.mtu - ATT_HEADER_BYTES);
        if segment.len() > room {
            tracing::warn!(
                len = segment.len(),
                room,
                "notification truncated to the ATT MTU"
            );
            segment.truncate(room);
        }
        let plan = self.plan();
        let Some(state) = self.links.get_mut(&link) else {
            return;
        };
        let at = later(now, plan.delay).max(state.tail);
        if plan.delivered {
            state.tail = at;
            state.inbox.push_back((at, segment));
        } else {
            state.doomed_at = Some(at);
        }
        state.wake.send_replace(());
    }

    fn poll_inbox(&mut self, link: u64) -> Result<Inbox, RadioError> {
        let state = self.links.get_mut(&link).ok_or(RadioError::Disconnected)?;
        let now = Instant::now();
        if state.inbox.front().is_some_and(|(at, _)| *at <= now)
            && let Some((_, segment)) = state.inbox.pop_front()
        {
            return Ok(Inbox::Ready(segment));
        }
        let next = state.inbox.front().map(|(at, _)| *at);
        let until = match (next, state.doomed_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Ok(Inbox::Wait {
            wake: state.wake.subscribe(),
            until,
        })
    }
}

/// `now + delay`, saturating far in the future instead of overflowing.
fn later(now: Instant, delay: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    now.checked_add(delay)
        .or_else(|| now.checked_add(CENTURY))
        .unwrap_or(now)
}

/// SplitMix64 (Steele, Lea, Flood 2014): small, fast and good enough for a
/// simulation; not for anything secret.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        // The top 53 bits fill an f64 mantissa exactly.
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`; draws nothing when `p` is 0.
    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }
}
