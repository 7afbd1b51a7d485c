//! Device handles: what a phone or the head unit's screen names a device by
//! (SPEC §16.3).
//!
//! The device list must not hand the phone UI a device's key or any hardware
//! identifier (R2, R12): the key is the device's identity in the account and
//! would link it across head units, and an offline device has no identity at
//! all. So a handle is 16 bytes of HMAC-SHA256, under a key that only the
//! head unit holds, over the head unit's own reference to the device:
//!
//! ```text
//! handle = HMAC-SHA256(handle_key, "tether/1 device handle\0" ‖ 0x01 ‖ device_key)[..16]   bound
//! handle = HMAC-SHA256(handle_key, "tether/1 device handle\0" ‖ 0x02 ‖ i64be(local_id))[..16]  offline
//! ```
//!
//! A handle reveals nothing about the device, is stable for as long as the
//! host keeps the handle key, and means nothing to another head unit. 128
//! bits make a collision between two devices of one head unit negligible.

use ring::hmac;

/// Bytes in a handle.
pub const HANDLE_BYTES: usize = 16;
/// The HMAC input prefix of a handle.
pub const HANDLE_CONTEXT: &[u8] = b"tether/1 device handle\0";

/// The head unit's own reference to a device: never on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DeviceRef {
    /// A device bound to the account, by its public key (the `bindings`
    /// table, R13).
    Bound([u8; 32]),
    /// An offline device attached physically, by its `local_id` (the
    /// `offline_devices` table, R12).
    Offline(i64),
}

impl DeviceRef {
    /// Whether this is an offline device attached physically (R12).
    pub fn is_offline_attached(&self) -> bool {
        matches!(self, DeviceRef::Offline(_))
    }
}

/// An opaque device handle as the list shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Handle(pub [u8; HANDLE_BYTES]);

impl Handle {
    /// A handle from the wire: exactly [`HANDLE_BYTES`] bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<Handle> {
        bytes.try_into().ok().map(Handle)
    }

    /// The bytes the wire carries.
    pub fn to_vec(self) -> Vec<u8> {
        self.0.to_vec()
    }
}

/// Derives handles under one key.
pub(crate) struct HandleKey(hmac::Key);

impl HandleKey {
    pub(crate) fn new(key: [u8; 32]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, &key))
    }

    pub(crate) fn handle(&self, device: &DeviceRef) -> Handle {
        let mut context = hmac::Context::with_key(&self.0);
        context.update(HANDLE_CONTEXT);
        match device {
            DeviceRef::Bound(key) => {
                context.update(&[0x01]);
                context.update(key);
            }
            DeviceRef::Offline(local_id) => {
                context.update(&[0x02]);
                context.update(&local_id.to_be_bytes());
            }
        }
        let tag = context.sign();
        let mut handle = [0; HANDLE_BYTES];
        handle.copy_from_slice(&tag.as_ref()[..HANDLE_BYTES]);
        Handle(handle)
    }
}

impl std::fmt::Debug for HandleKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HandleKey(..)")
    }
}
