//! The real radio: the central role with btleplug on BlueZ (feature
//! `btleplug`, on by default; SPEC §13.3).
//!
//! BlueZ is reached over the D-Bus **system** bus (`DBUS_SYSTEM_BUS_ADDRESS`
//! if set, else `/run/dbus/system_bus_socket`). With no bus, no BlueZ on it,
//! or no adapter, [`BluezCentral::new`] fails with a typed error within
//! [`NO_ADAPTER_DEADLINE`] instead of hanging (issue 4).
//!
//! # Usage
//!
//! ```no_run
//! # async fn demo() -> Result<(), tether_ble::radio::RadioError> {
//! use std::time::Duration;
//! use tether_ble::advert::Advert;
//! use tether_ble::bluez::BluezCentral;
//! use tether_ble::radio::Central;
//!
//! let central = BluezCentral::new().await?;
//! for seen in central.scan(Duration::from_secs(2)).await? {
//!     if let Some(Ok(advert)) = seen.tether_data().map(Advert::decode) {
//!         println!("{advert:?} at {:?} dBm", seen.rssi);
//!     }
//! }
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeSet;
use std::pin::Pin;
use std::time::Duration;

use btleplug::api::{
    Central as _, Characteristic, Manager as _, Peripheral as _, ScanFilter, ValueNotification,
    WriteType,
};
use btleplug::platform::{Adapter, Manager, Peripheral};
use futures_util::stream::{Stream, StreamExt};
use tokio::sync::{Mutex, watch};

use crate::radio::{
    COMMISSIONING_SERVICE_UUID, Central, Link, NO_ADAPTER_DEADLINE, PeripheralId,
    RX_CHARACTERISTIC_UUID, RadioError, ScanResult, TX_CHARACTERISTIC_UUID,
};

/// How long one BlueZ call made on behalf of a scan or a connection may take
/// before the operation fails with [`RadioError::Timeout`]. BlueZ's own
/// D-Bus timeout is 25-30 s; a head unit should not wait that long.
pub const BLUEZ_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The central role on the first Bluetooth adapter BlueZ reports.
#[derive(Debug, Clone)]
pub struct BluezCentral {
    adapter: Adapter,
}

impl BluezCentral {
    /// Connects to BlueZ over the system bus and takes its first adapter.
    ///
    /// Fails within [`NO_ADAPTER_DEADLINE`]: with
    /// [`RadioError::NoBluetooth`] when there is no system bus or no BlueZ
    /// service on it, [`RadioError::NoAdapter`] when BlueZ has no adapter,
    /// and [`RadioError::Timeout`] when the bus does not answer in time.
    /// After a timeout the abandoned lookup may hold a blocking-pool thread
    /// until libdbus gives up (its default call timeout, 25 s), which also
    /// delays the shutdown of the runtime by as much.
    pub async fn new() -> Result<Self, RadioError> {
        // libdbus opens the bus and says Hello synchronously inside
        // `Manager::new`, so a wedged bus would block the task where no
        // timeout could preempt it. The lookup therefore runs on a blocking
        // thread and only the wait for it is bounded here.
        let runtime = tokio::runtime::Handle::current();
        let lookup = tokio::task::spawn_blocking(move || runtime.block_on(first_adapter()));
        match tokio::time::timeout(NO_ADAPTER_DEADLINE, lookup).await {
            Ok(Ok(found)) => found.map(|adapter| Self { adapter }),
            Ok(Err(join)) => Err(RadioError::Backend(format!(
                "bluetooth adapter lookup failed: {join}"
            ))),
            Err(_elapsed) => Err(RadioError::Timeout("bluetooth adapter lookup")),
        }
    }
}

async fn first_adapter() -> Result<Adapter, RadioError> {
    let manager = Manager::new()
        .await
        .map_err(|e| RadioError::NoBluetooth(format!("cannot reach the system bus: {e}")))?;
    // `ServiceUnknown` (no BlueZ on the bus) is the usual failure here; any
    // other (access denied, a bus that went away) leaves us without a radio
    // just the same, so all map to `NoBluetooth` with BlueZ's words.
    let adapters = manager
        .adapters()
        .await
        .map_err(|e| RadioError::NoBluetooth(format!("cannot list BlueZ's adapters: {e}")))?;
    adapters.into_iter().next().ok_or(RadioError::NoAdapter)
}

/// Bounds one BlueZ call by [`BLUEZ_CALL_TIMEOUT`] and maps its error.
async fn bounded<T>(
    what: &'static str,
    call: impl Future<Output = btleplug::Result<T>>,
) -> Result<T, RadioError> {
    match tokio::time::timeout(BLUEZ_CALL_TIMEOUT, call).await {
        Ok(result) => result.map_err(radio_error),
        Err(_elapsed) => Err(RadioError::Timeout(what)),
    }
}

fn radio_error(error: btleplug::Error) -> RadioError {
    match error {
        btleplug::Error::DeviceNotFound => RadioError::NotFound,
        btleplug::Error::NotConnected => RadioError::Disconnected,
        btleplug::Error::NoAdapterAvailable => RadioError::NoAdapter,
        other => RadioError::Backend(other.to_string()),
    }
}

impl BluezCentral {
    /// Every peripheral BlueZ knows on this adapter, with its latest advert.
    async fn collect(&self) -> Result<Vec<ScanResult>, RadioError> {
        let peripherals = bounded("list peripherals", self.adapter.peripherals()).await?;
        let mut results = Vec::with_capacity(peripherals.len());
        for peripheral in peripherals {
            // A device BlueZ drops between the listing and this query is
            // simply no longer in range.
            let properties = match bounded("read advert", peripheral.properties()).await {
                Ok(Some(properties)) => properties,
                Ok(None) => continue,
                Err(e) => {
                    tracing::debug!(error = %e, "peripheral vanished during the scan");
                    continue;
                }
            };
            let mut service_data: Vec<(u128, Vec<u8>)> = properties
                .service_data
                .into_iter()
                .map(|(uuid, data)| (uuid.as_u128(), data))
                .collect();
            service_data.sort();
            results.push(ScanResult {
                id: PeripheralId(peripheral.id().to_string()),
                rssi: properties.rssi,
                service_data,
            });
        }
        results.sort_by(|a, b| a.id.0.cmp(&b.id.0));
        Ok(results)
    }

    async fn find(&self, id: &PeripheralId) -> Result<Peripheral, RadioError> {
        bounded("list peripherals", self.adapter.peripherals())
            .await?
            .into_iter()
            .find(|peripheral| peripheral.id().to_string() == id.0)
            .ok_or(RadioError::NotFound)
    }
}

impl Central for BluezCentral {
    type Link = BluezLink;

    /// Discovers for `window`, then reports every peripheral BlueZ knows on
    /// the adapter (including ones it remembers from earlier scans; their
    /// RSSI may be absent). The caller picks Tether adverts with
    /// [`ScanResult::tether_data`].
    ///
    /// The scan is not filtered by service UUID: BlueZ matches a discovery
    /// filter against the advertised UUID *list*, and Tether adverts carry
    /// only service data (SPEC §13.1), so a filter would hide them on real
    /// hardware.
    ///
    /// Dropping the returned future during the window leaves BlueZ
    /// discovering until this process leaves the bus or the next scan ends.
    async fn scan(&self, window: Duration) -> Result<Vec<ScanResult>, RadioError> {
        match tokio::time::timeout(
            NO_ADAPTER_DEADLINE,
            self.adapter.start_scan(ScanFilter::default()),
        )
        .await
        {
            Ok(started) => started.map_err(radio_error)?,
            Err(_elapsed) => return Err(RadioError::Timeout("start scan")),
        }
        tokio::time::sleep(window).await;
        let collected = self.collect().await;
        // Stop discovery even if collecting failed; report the first error.
        let stopped = bounded("stop scan", self.adapter.stop_scan()).await;
        let results = collected?;
        stopped?;
        Ok(results)
    }

    /// Connects, discovers services and subscribes to TX. Fails with
    /// [`RadioError::NotFound`] for an id BlueZ no longer knows and
    /// [`RadioError::NoService`] (after disconnecting) when the peripheral
    /// lacks the commissioning service's RX or TX characteristic.
    async fn connect(&self, id: &PeripheralId) -> Result<BluezLink, RadioError> {
        let peripheral = self.find(id).await?;
        bounded("connect", peripheral.connect()).await?;
        match open_link(&peripheral).await {
            Ok(link) => Ok(link),
            Err(e) => {
                // Best effort: the error that matters is the one above.
                if let Err(close) = bounded("disconnect", peripheral.disconnect()).await {
                    tracing::debug!(error = %close, "disconnect after a failed connect");
                }
                Err(e)
            }
        }
    }
}

async fn open_link(peripheral: &Peripheral) -> Result<BluezLink, RadioError> {
    bounded("discover services", peripheral.discover_services()).await?;
    let characteristics = peripheral.characteristics();
    let rx = commissioning_characteristic(&characteristics, RX_CHARACTERISTIC_UUID)?;
    let tx = commissioning_characteristic(&characteristics, TX_CHARACTERISTIC_UUID)?;
    // Open the stream before subscribing, so no early notification is lost.
    let notifications = bounded("open notifications", peripheral.notifications()).await?;
    bounded("subscribe", peripheral.subscribe(&tx)).await?;
    let (closed, _) = watch::channel(false);
    Ok(BluezLink {
        peripheral: peripheral.clone(),
        rx,
        tx,
        notifications: Mutex::new(notifications),
        closed,
    })
}

fn commissioning_characteristic(
    characteristics: &BTreeSet<Characteristic>,
    uuid: u128,
) -> Result<Characteristic, RadioError> {
    characteristics
        .iter()
        .find(|c| {
            c.uuid.as_u128() == uuid && c.service_uuid.as_u128() == COMMISSIONING_SERVICE_UUID
        })
        .cloned()
        .ok_or(RadioError::NoService)
}

type NotificationStream = Pin<Box<dyn Stream<Item = ValueNotification> + Send>>;

/// A GATT connection to one peripheral's commissioning service.
///
/// A drop of the link by the peripheral is not signalled to a pending
/// [`Link::recv`] (btleplug's notification stream does not end on BlueZ);
/// the commissioning driver's own timeouts cover it, and the next
/// [`Link::send`] fails.
pub struct BluezLink {
    peripheral: Peripheral,
    rx: Characteristic,
    tx: Characteristic,
    notifications: Mutex<NotificationStream>,
    closed: watch::Sender<bool>,
}

impl std::fmt::Debug for BluezLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BluezLink")
            .field("peripheral", &self.peripheral.id())
            .field("closed", &*self.closed.borrow())
            .finish_non_exhaustive()
    }
}

impl BluezLink {
    fn check_open(&self) -> Result<(), RadioError> {
        if *self.closed.borrow() {
            Err(RadioError::Disconnected)
        } else {
            Ok(())
        }
    }
}

impl Link for BluezLink {
    /// The ATT MTU BlueZ reports on the commissioning characteristics
    /// (their `MTU` property, BlueZ 5.62 and later, read when the link
    /// opened); 23, the Core specification's minimum, when BlueZ does not
    /// report one.
    fn mtu(&self) -> u16 {
        self.peripheral.mtu()
    }

    async fn send(&self, segment: &[u8]) -> Result<(), RadioError> {
        self.check_open()?;
        bounded(
            "write segment",
            self.peripheral
                .write(&self.rx, segment, WriteType::WithResponse),
        )
        .await
    }

    async fn recv(&self) -> Result<Vec<u8>, RadioError> {
        self.check_open()?;
        let mut closed = self.closed.subscribe();
        let mut notifications = self.notifications.lock().await;
        loop {
            let next = tokio::select! {
                next = notifications.next() => next,
                _ = closed.wait_for(|closed| *closed) => return Err(RadioError::Disconnected),
            };
            match next {
                Some(notification) if notification.uuid == self.tx.uuid => {
                    return Ok(notification.value);
                }
                // Other characteristics of the device (none before pairing,
                // SPEC §13.2) are not ours to read.
                Some(_) => continue,
                None => return Err(RadioError::Disconnected),
            }
        }
    }

    async fn disconnect(&self) -> Result<(), RadioError> {
        // Later calls fail, and a pending recv wakes, whatever BlueZ says.
        if self.closed.send_replace(true) {
            // Idempotent, like every backend (see `Link::disconnect`).
            return Ok(());
        }
        bounded("disconnect", self.peripheral.disconnect()).await
    }
}
