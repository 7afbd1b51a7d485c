//! One async facade per Tether role: [`HeadUnit`] (the car) and [`Phone`]
//! (the owner's phone, which hosts the local account authority).
//!
//! The public surface is shaped for UniFFI: owned types, no lifetimes and no
//! generics. Everything below is wired from the layer crates: identity and
//! store for who we are, discovery for finding members (R2), sessions for
//! the account-bound QUIC link (R2, R3, R31) and control for the vehicle
//! (R23).
//!
//! # Usage
//! ```no_run
//! # async fn demo() -> Result<(), tether_node::NodeError> {
//! use tether_node::{HeadUnit, NodeConfig, Phone};
//! let phone = Phone::open(NodeConfig::default())?;
//! phone.create_account()?;
//! let car = HeadUnit::open(NodeConfig::default())?;
//! car.complete_enrollment(&phone.enroll_device(&car.enrollment_request()?)?)?;
//! car.start().await?;
//! let found = phone.discover_vehicle(std::time::Duration::from_secs(10)).await?;
//! let link = phone.connect(found.address).await?;
//! let status = link.get(Vec::new()).await?;
//! # let _ = status; Ok(()) }
//! ```

mod adverts;
mod automation;
mod car;
mod config;
mod device;
mod devices;
mod error;
mod hub;
mod members;
mod membership;
mod ota;
mod phone;
mod share;
mod wire;

pub use automation::drive::{Drive, DriveError, DriveInput, DriveStep};
pub use automation::serve::owner_permissions;
pub use automation::{
    Actuator, AutomationError, AutomationHost, Clock, ConfirmNotice, EffectFuture, Interest,
    Performed, TRACES_KEPT, TaskInfo, TaskState,
};
pub use car::head_unit::HeadUnit;
pub use car::tasks::AppNotice;
pub use config::{LocalIdentifiers, NodeConfig, unix_now};
pub use device::DeviceNode;
pub use devices::api::{CommissionedDevice, DeviceInfo};
#[cfg(feature = "bluetooth")]
pub use devices::commission::BluezCentral;
pub use devices::commission::{
    Central, CommissionProgress, CommissionReport, CommissionRequest, DEFAULT_SCAN_WINDOW,
    DeviceBinding, HomeNetwork, NetworkOutcome, RadioError, SetupCode, SimCentral, SimStats,
    SimulatedAccessory,
};
pub use error::NodeError;
pub use hub::{HOME_SWITCH, Hub, SimHome};
pub use ota::{
    FirmwareImage, InstalledFirmware, OtaProgress, OtaReport, OtaTarget, OtaTransferError,
    send_firmware,
};
pub use phone::automation_link::{Confirmation, Confirmations, Tasks};
pub use phone::hub_link::HubLink;
pub use phone::mailbox::{MAX_LETTER_VALIDITY, MailboxAnswer, MailboxReply, PostedCommand};
pub use phone::vehicle_link::{
    CommandOutcome, Reading, RoamEvent, RoamingSubscription, SignalData, Subscription, VehicleLink,
    new_idempotency_key,
};
pub use phone::{
    AccountDevice, DiscoveredVehicle, DiscoveryReport, Phone, PhoneAuthority, Removal,
    VehicleRoute, Via,
};
pub use share::{HeldShare, IssuedShare, ShareOptions};
/// The super-task model and its wire forms, for the layers above the node
/// (the FFI builds and reads tasks with it).
pub use tether_automation;
pub use tether_control::Executions;
pub use tether_discovery::Interfaces;
pub use tether_identity::{Role, ShareError, SharePermission};
pub use tether_ota::MIN_VEHICLE_BATTERY_PERCENT;
pub use tether_proto::v1::{
    CommandReason, CommandState, EnrollmentGrant, EnrollmentRequest, VehicleCommand,
};
pub use tether_proto::v1::{DeviceValue, OtaManifest, OtaOutcome, PropertyValue, device_value};
/// The relay transport's settings (`NodeConfig::relay`, SPEC §19.5).
pub use tether_relay::{RelayConfig, RelayError};
pub use tether_session::quic::ListenerStats;
pub use tether_store::{KeyStore, KeyStoreError, SecretName, StoreError};

/// An MQTT 5 broker inside the process, for the demo and the bench only
/// (SPEC §19.10).
#[cfg(feature = "embedded-broker")]
pub use tether_broker::EmbeddedBroker;
pub use tether_control::client::ControlError;
/// The vehicle signal paths (VSS names) a member reads and subscribes to
/// (SPEC §8.1).
pub use tether_control::signals;
/// The built-in device models (SPEC §16.3) and their product models.
pub use tether_devices::{CAMERA_PRODUCT_MODEL, LAMP_PRODUCT_MODEL, camera_model, lamp_model};
/// An account authority (the owner phone's, [`Phone::authority`]) and a
/// device key (a vendor's, to sign firmware manifests).
pub use tether_identity::{AccountAuthority, DeviceKey};
/// What a vendor signs in a firmware manifest (SPEC §15).
pub use tether_ota::manifest_signing_input;
/// The wire messages (`tether.v1`), their file descriptor set and prost,
/// for callers that build or read messages of their own (task files).
pub use tether_proto as proto;
/// How a session was closed (SPEC §6.4).
pub use tether_session::quic::CloseCode;

/// Builders for the vehicle commands a phone may send (R23; SPEC §8).
pub mod commands {
    pub use tether_control::client::{climate, flash_honk, lock, unlock, window};
}
