//! Vehicle status and control for Tether (R23): the head unit answers signal
//! reads and subscriptions named by COVESA VSS paths, and runs commands from
//! the owner's phone at most once, each with a receipt signed by the
//! vehicle's device key.
//!
//! This crate is a sans-IO core: it contains no networking code and reads no
//! clock. Time comes from the caller as `now_ms` (monotonic milliseconds);
//! responses come out of [`VehicleService::poll_output`] for the caller to
//! write on the request's stream.
//!
//! - [`signals`]: the catalogue of VSS paths with type, access and sensitivity.
//! - [`VehicleBackend`]: the car; [`SimulatedVehicle`] is a simulation.
//! - [`VehicleService`]: the head unit's service, with a [`ReceiptLog`] that
//!   makes commands at-most-once across retries and restarts.
//! - [`client`]: request builders, response parsing, receipt verification.
//! - [`navigation`]: a destination handed from the phone to the car, and
//!   the rest of the way on foot back to the phone (R5, R32).
//! - [`sentry`]: sentry mode's danger alerts, once to each authorised
//!   recipient (R25).
//! - [`profile`]: driver profiles and their per-setting merge between the
//!   account's cars (R26).
//!
//! # Roles (R23)
//!
//! The role is the one in the peer's verified device certificate.
//!
//! | role    | read signals          | subscribe             | command |
//! |---------|-----------------------|-----------------------|---------|
//! | Phone   | all                   | all                   | yes     |
//! | Watch   | all                   | all                   | yes     |
//! | Hub     | all but location      | all but location      | no      |
//! | Vehicle | all but location      | all but location      | no      |
//! | Device  | none                  | none                  | no      |
//!
//! A refused read or command is an `ERROR_CODE_PERMISSION_DENIED` error
//! envelope; a refused command executes nothing, gets no receipt and leaves
//! no trace in the receipt log. Location is withheld from hub and vehicle
//! peers because the home gets geofence state, not a position (R10), and
//! automations only the minimum they need (R21).
//!
//! # Commands
//!
//! A command needs an idempotency key of 16..=32 bytes. Its stream receives
//! `ACCEPTED`, then `IN_PROGRESS` and a final `SUCCEEDED`, `FAILED` or
//! `REJECTED` (with a `CommandReason`), or `TIMED_OUT` if its deadline passed
//! before the car acted (then the car did nothing). The final status carries a
//! `CommandReceipt`: Ed25519 over `"tether/1 receipt\0" || body`. A retry with
//! the same key and command executes nothing and gets the identical receipt
//! bytes; the same key with another command is `ERROR_CODE_IDEMPOTENCY_CONFLICT`.
//!
//! # Usage
//! ```
//! use tether_control::{
//!     client, Config, MemoryReceiptLog, Output, PeerInfo, SimulatedVehicle, StreamId,
//!     VehicleService,
//! };
//! use tether_identity::{DeviceKey, Role};
//! use tether_proto::v1::CommandState;
//!
//! let car_key = DeviceKey::generate().unwrap();
//! let mut car = VehicleService::new(
//!     Config::default(),
//!     car_key,
//!     SimulatedVehicle::new(),
//!     MemoryReceiptLog::new(),
//! )
//! .unwrap();
//! let vehicle_key = car.public_key();
//!
//! // The phone locks the car.
//! let key = client::IdempotencyKey::generate().unwrap();
//! let request = client::command(1, &key, 0, client::lock());
//! let phone = PeerInfo::new(Role::Phone);
//! car.handle_request(StreamId(7), phone, &request, 0);
//! car.handle_timeout(0);
//!
//! // Drain the responses: ACCEPTED, IN_PROGRESS, SUCCEEDED with a receipt.
//! let mut last = None;
//! while let Output::Transmit(t) = car.poll_output() {
//!     last = Some(client::command_status(&t.envelope).unwrap().clone());
//! }
//! let status = last.unwrap();
//! assert_eq!(status.state, CommandState::Succeeded as i32);
//! let body = client::verify_receipt_for(
//!     &vehicle_key,
//!     status.receipt.as_ref().unwrap(),
//!     &key,
//!     &client::lock(),
//! )
//! .unwrap();
//! assert_eq!(body.state, CommandState::Succeeded as i32);
//! assert_eq!(car.backend().executions().lock, 1);
//! ```

pub mod access;
mod backend;
pub mod camera;
pub mod client;
pub mod navigation;
mod principal;
pub mod profile;
mod receipt;
pub mod sentry;
mod service;
pub mod signals;
mod simulated;

pub use backend::{Actuation, ActuationError, VehicleBackend};
pub use principal::{DEVICE_PRINCIPAL_LEN, GRANT_PRINCIPAL_LEN, Principal};
pub use receipt::{
    DEFAULT_RECEIPT_CAPACITY, MAX_IDEMPOTENCY_KEY_BYTES, MIN_IDEMPOTENCY_KEY_BYTES,
    MemoryReceiptLog, RECEIPT_CONTEXT, ReceiptLog, ReceiptLogError, StoredReceipt, command_digest,
};
pub use service::{
    Config, Output, PeerInfo, Requester, SessionId, StreamId, Transmit, VehicleService,
};
pub use simulated::{
    BATTERY_KWH, Executions, FULL_RANGE_M, HVAC_TARGET_RANGE_CELSIUS, HVAC_TIME_CONSTANT_S,
    PASSIVE_TIME_CONSTANT_S, SimulatedVehicle,
};
