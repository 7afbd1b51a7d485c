//! UniFFI bindings of the Tether node for phone apps (Kotlin, Swift) and
//! hubs (Python): a thin skin over [`tether_node`].
//!
//! Nothing here speaks the protocol. Each exported item converts owned
//! records and enums to and from `tether-node` types, runs async work on the
//! library's own tokio runtime, and turns every failure (a panic included)
//! into a [`TetherError`]. See `README.md` beside this crate for the
//! threading model, object lifetimes, events, key stores and errors.

#[cfg(feature = "head-unit")]
mod commission;
mod confirm;
mod devices;
mod error;
#[cfg(feature = "head-unit")]
mod head_unit;
mod key_store;
mod link;
mod phone;
mod records;
mod runtime;
mod share;
mod tasks;
mod traces;
#[cfg(feature = "head-unit")]
mod upgrade;

#[cfg(feature = "head-unit")]
pub use commission::{CommissionListener, CommissionResult, CommissionStage, SimulatedAccessory};
pub use confirm::{Confirmation, ConfirmationListener, ConfirmationWatch};
pub use devices::{DeviceInfo, DeviceValue, PropertyValue};
pub use error::{KeyStoreError, TetherError};
#[cfg(feature = "head-unit")]
pub use head_unit::HeadUnit;
pub use key_store::PlatformKeyStore;
pub use link::{SignalListener, SignalSubscription, VehicleLink};
pub use phone::Phone;
pub use records::{
    AccountDevice, CommandOutcome, CommandReason, CommandState, DiscoveredVehicle, DiscoveryReport,
    Executions, ListenerStats, LocalIdentifiers, Network, NodeSettings, Reading, Removal,
    SignalData, VehicleAction,
};
pub use share::{HeldShare, IssuedShare, ShareOptions, SharePermission};
#[cfg(feature = "head-unit")]
pub use tasks::VehicleEvent;
pub use tasks::{HubLink, TaskSummary, TemplateSummary, describe_template};
pub use traces::TraceSummary;
#[cfg(feature = "head-unit")]
pub use upgrade::{UpgradeListener, UpgradeReport};

uniffi::setup_scaffolding!("tether");

/// The Tether library version.
#[uniffi::export]
pub fn tether_version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}

/// A fresh random idempotency key (16 bytes) for `VehicleLink.command`.
/// Keep it and send it again to retry the same command safely (R23).
#[uniffi::export]
pub fn new_idempotency_key() -> Result<Vec<u8>, TetherError> {
    runtime::guard(|| Ok(tether_node::new_idempotency_key()?.to_vec()))
}

/// Panics inside the library on purpose, on the caller's thread. Lets a
/// binding check that a panic surfaces as `TetherError.Internal` and the
/// library stays usable; it has no other effect.
#[uniffi::export]
pub fn self_test_panic() -> Result<(), TetherError> {
    runtime::guard(|| panic!("self_test_panic: a deliberate panic"))
}

/// Like `self_test_panic`, inside an async task on the library's runtime.
#[uniffi::export]
pub async fn self_test_panic_async() -> Result<(), TetherError> {
    runtime::run::<(), TetherError>(async { panic!("self_test_panic_async: a deliberate panic") })
        .await
}
