//! Tether's relay transport (SPEC §19): QUIC datagrams carried in MQTT
//! publishes, so that the same Tether handshake and sessions
//! (`tether_session::quic`) run end to end through a broker, which sees
//! only opaque QUIC packets under rotating pseudonymous topics (R2, R4).
//!
//! The core is sans-IO: [`topic`] derives rendezvous topics from a raw
//! 32-byte relay key and a time given by the caller, [`envelope`] encodes
//! and strictly decodes what one publish carries, [`addr`] maps reply ids
//! to the virtual socket addresses quinn sees. It knows no identity: the
//! keys come from `tether-identity` (`GroupKey::relay_key`,
//! `GrantKey::relay_key`), as discovery keys do.
//!
//! Feature `mqtt` (default) adds the driver, [`RelaySocket`]: a quinn
//! `AsyncUdpSocket` over a rumqttc MQTT 5 client. The fuzz targets build
//! without it.

pub mod addr;
pub mod envelope;
pub mod topic;

#[cfg(feature = "mqtt")]
pub mod mailbox;
#[cfg(feature = "mqtt")]
mod mqtt;

pub use envelope::{Envelope, EnvelopeError, decode, encode};
pub use topic::{ROTATION_S, Rendezvous, TopicError, TopicId, TopicPrefix, window_at};

#[cfg(feature = "mqtt")]
pub use mailbox::{Delivery, Mailbox};
#[cfg(feature = "mqtt")]
pub use mqtt::{MAX_INCOMING_PACKET, RelayConfig, RelayError, RelaySocket, RelayStats};
