//! Bluetooth LE for Tether (R1, R13; SPEC §13).
//!
//! - [`advert`]: the advert formats, sans-IO. Members carry a rotating token,
//!   unprovisioned devices their product model, a random discriminator and
//!   flags; nothing derives from a MAC, serial or device id.
//! - [`radio`]: the central-role radio trait (scan, connect, exchange GATT
//!   segments) that the commissioning driver uses, with two backends:
//! - [`sim`]: an in-process simulated radio (RSSI, loss, latency) for tests
//!   and the demo, whose peripherals are driven by sans-IO device cores;
//! - `bluez`: btleplug on BlueZ (feature `btleplug`), the real radio;
//! - [`commission`]: the commissioner's async driver over any link (pair,
//!   then provision), on the sans-IO cores of `tether-pairing`.

pub mod advert;
#[cfg(feature = "btleplug")]
pub mod bluez;
pub mod commission;
pub mod radio;
pub mod sim;
pub mod sim_device;
