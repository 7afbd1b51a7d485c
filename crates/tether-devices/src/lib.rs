//! Device management on the head unit, sans-IO (R12, R14, R17; SPEC §16).
//!
//! This crate contains no networking code and reads no clock: requests and
//! what the transport learns go in (times as `now_ms` arguments), responses,
//! commands for devices, scan requests and events come out. Records live in
//! the caller's [`tether_store::Store`]; presence and property values live in
//! memory.
//!
//! - [`Catalogue`]: the typed model of each known product, after the MIoT
//!   specification (services, properties with format, access, range or value
//!   list and unit, actions, events), with [`lamp_model`] and
//!   [`camera_model`] built in, and [`check_model`] for new ones.
//! - [`validate`]: writes, action calls and device reports checked against
//!   the model, with typed errors ([`DeviceError`]).
//! - [`Handle`]: what a list shows instead of a device key or hardware
//!   identifier (SPEC §16.3).
//! - [`DeviceManager`]: list, view state and settings (R14), control, rename,
//!   reorder, unbind; presence; scans at power-on and account switch (R17);
//!   offline devices attached physically, which carry no personal data and
//!   are never shown to another terminal (R12).
//!
//! # Usage
//! ```
//! use tether_devices::{
//!     Catalogue, Config, DeviceManager, LAMP_PRODUCT_MODEL, Output, Requester, ScanReason,
//! };
//! use tether_proto::v1::{ListDevices, SetProperties, PropertyValue, DeviceValue,
//!     device_value, request, response};
//! use tether_store::Store;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut store = Store::open_in_memory()?;
//! let mut manager = DeviceManager::new(Config::default(), Catalogue::builtin(), [7; 32]);
//!
//! // Power-on: a scan is asked for (R17).
//! manager.start(0);
//! assert_eq!(manager.poll_output(), Output::Scan(ScanReason::Startup));
//!
//! // A lamp is plugged in (R12), then listed on the head unit's screen.
//! let lamp = manager.attach_offline(&mut store, LAMP_PRODUCT_MODEL, Some("1.0.0"), 10)?;
//! let list = manager.handle_request(
//!     &mut store, Requester::HeadUnit, &request::Kind::ListDevices(ListDevices {}), 20)?;
//! let response::Kind::DeviceList(list) = list else { unreachable!() };
//! assert_eq!(list.devices[0].name, "Lamp");
//!
//! // Switch it on: checked against the model, then a command for the host.
//! let on = PropertyValue { siid: 2, piid: 1,
//!     value: Some(DeviceValue { kind: Some(device_value::Kind::BoolValue(true)) }) };
//! manager.handle_request(&mut store, Requester::HeadUnit, &request::Kind::SetProperties(
//!     SetProperties { handle: list.devices[0].handle.clone(), values: vec![on] }), 30)?;
//! loop {
//!     match manager.poll_output() {
//!         Output::Command(command) => assert_eq!(command.device, lamp), // deliver it
//!         Output::Pending => break,
//!         _ => {} // events for the screen
//!     }
//! }
//! # Ok(())
//! # }
//! ```

pub mod access;
mod catalogue;
mod device_side;
mod error;
mod handle;
mod manager;
pub mod validate;

pub use catalogue::{
    ACCESS_NOTIFY, ACCESS_READ, ACCESS_WRITE, CAMERA_PRODUCT_MODEL, Catalogue, LAMP_PRODUCT_MODEL,
    camera_model, check_model, lamp_model,
};
pub use device_side::DeviceState;
pub use error::{DeviceError, OrderError};
pub use handle::{DeviceRef, HANDLE_BYTES, HANDLE_CONTEXT, Handle};
pub use manager::{
    Audience, Config, Control, DEFAULT_PRESENCE_TIMEOUT_MS, DeviceCommand, DeviceManager,
    DeviceUpdate, MAX_NAME_BYTES, MAX_VALUES_PER_REQUEST, Output, Requester, ScanReason,
};
pub use validate::MAX_STRING_VALUE_BYTES;
