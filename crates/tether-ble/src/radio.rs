//! The central-role radio: what the head unit (or a phone) needs from
//! Bluetooth LE to commission a device. Two backends implement it: the
//! simulated radio ([`crate::sim`]) and btleplug on BlueZ.
//!
//! The GATT side is reduced to what commissioning uses: one Tether service
//! with an RX characteristic the central writes segments to (with response)
//! and a TX characteristic the peripheral notifies segments on (SPEC §13.2).
//! Segmentation itself is `tether_pairing::segment`.

use std::future::Future;
use std::time::Duration;

use thiserror::Error;

/// A 128-bit Bluetooth UUID, as a big-endian integer
/// (`0000fff3-0000-1000-8000-00805f9b34fb` is `0x0000fff3_0000_1000_8000_00805f9b34fb`).
pub type Uuid = u128;

/// The Bluetooth base UUID; a 16-bit UUID `x` is `BASE_UUID | (x << 96)`.
pub const BASE_UUID: Uuid = 0x0000_0000_0000_1000_8000_0080_5f9b_34fb;

/// The 16-bit service UUID under which Tether adverts carry service data.
/// Provisional and not assigned to Tether by the Bluetooth SIG: a value from
/// the SIG member range must replace it before products ship.
pub const TETHER_SERVICE_UUID16: u16 = 0xfff3;

/// [`TETHER_SERVICE_UUID16`] as a 128-bit UUID.
pub const TETHER_SERVICE_UUID: Uuid = BASE_UUID | ((TETHER_SERVICE_UUID16 as u128) << 96);

/// The commissioning GATT service.
pub const COMMISSIONING_SERVICE_UUID: Uuid = 0x7e7e_0001_5a1e_4d2b_9c51_7e7e_7e7e_0001;
/// RX: the central writes segments here (write with response).
pub const RX_CHARACTERISTIC_UUID: Uuid = 0x7e7e_0002_5a1e_4d2b_9c51_7e7e_7e7e_0001;
/// TX: the peripheral notifies segments here.
pub const TX_CHARACTERISTIC_UUID: Uuid = 0x7e7e_0003_5a1e_4d2b_9c51_7e7e_7e7e_0001;

/// How long a backend may take to report that there is no adapter or no
/// system bus: it fails fast instead of hanging (issue 4).
pub const NO_ADAPTER_DEADLINE: Duration = Duration::from_secs(2);

/// A peripheral seen in a scan. `id` is the backend's opaque handle for a
/// later `connect`; it is never shown to users or sent anywhere (R1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeripheralId(pub String);

/// One advertising peripheral, as the last scan saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanResult {
    /// Handle for [`Central::connect`].
    pub id: PeripheralId,
    /// Received signal strength, dBm, if the backend reports it.
    pub rssi: Option<i16>,
    /// Service data by 128-bit service UUID (16-bit UUIDs are expanded with
    /// [`BASE_UUID`]).
    pub service_data: Vec<(Uuid, Vec<u8>)>,
}

impl ScanResult {
    /// The service data under [`TETHER_SERVICE_UUID`], if any.
    pub fn tether_data(&self) -> Option<&[u8]> {
        self.service_data
            .iter()
            .find(|(uuid, _)| *uuid == TETHER_SERVICE_UUID)
            .map(|(_, data)| data.as_slice())
    }
}

/// Why a radio operation failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RadioError {
    /// No system bus (BlueZ is reached over D-Bus), or no Bluetooth service
    /// on it.
    #[error("no Bluetooth service: {0}")]
    NoBluetooth(String),
    /// The bus works but there is no adapter.
    #[error("no Bluetooth adapter")]
    NoAdapter,
    /// The peripheral is not (or no longer) in range.
    #[error("peripheral not found")]
    NotFound,
    /// The peripheral lacks the commissioning service.
    #[error("the peripheral has no Tether commissioning service")]
    NoService,
    /// The link dropped.
    #[error("disconnected")]
    Disconnected,
    /// An operation did not finish in time.
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// Anything else the backend reported.
    #[error("bluetooth: {0}")]
    Backend(String),
}

/// The central role over one adapter.
pub trait Central: Send + Sync {
    /// A connection to one peripheral.
    type Link: Link;

    /// Scans for `window` and returns every peripheral seen with its latest
    /// advert. Fails within [`NO_ADAPTER_DEADLINE`] when there is no adapter
    /// or bus.
    fn scan(
        &self,
        window: Duration,
    ) -> impl Future<Output = Result<Vec<ScanResult>, RadioError>> + Send;

    /// Connects to a peripheral from a scan and finds its commissioning
    /// service.
    fn connect(
        &self,
        id: &PeripheralId,
    ) -> impl Future<Output = Result<Self::Link, RadioError>> + Send;
}

/// A connection carrying commissioning segments both ways.
pub trait Link: Send + Sync {
    /// The ATT MTU in use (23 if the backend cannot tell).
    fn mtu(&self) -> u16;

    /// Writes one segment to RX, with response.
    fn send(&self, segment: &[u8]) -> impl Future<Output = Result<(), RadioError>> + Send;

    /// Waits for the next segment notified on TX.
    fn recv(&self) -> impl Future<Output = Result<Vec<u8>, RadioError>> + Send;

    /// Disconnects. Idempotent: a second call is `Ok`. Later `send` and
    /// `recv` calls fail with [`RadioError::Disconnected`].
    fn disconnect(&self) -> impl Future<Output = Result<(), RadioError>> + Send;
}
