//! Sans-IO cores for commissioning a device that is not yet a member: the
//! setup payload printed on it (QR string and 11-digit manual code), the
//! SPAKE2 pairing over its passcode with key confirmation and attempt limits
//! (R6), the segmentation of messages over GATT for any MTU, and the
//! provisioning of network credentials sealed under the pairing key (R13).
//!
//! Nothing here reads a clock, a socket or the system random source: bytes,
//! times and random seeds go in; bytes, events and timer requests come out.

pub mod binding;
pub mod device;
pub mod pake;
pub mod provision;
pub mod segment;
pub mod setup;
