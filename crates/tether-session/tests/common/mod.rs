//! Shared by the QUIC driver's tests over loopback.

#![allow(dead_code, clippy::unwrap_used)] // test support

use std::sync::Arc;

use tether_identity::{AccountAuthority, Credentials, DeviceKey, LocalAuthority, Role};

/// The system clock, Unix seconds.
pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A new member of `authority`'s account with `role`, enrolled now.
pub(crate) fn member(authority: &mut LocalAuthority, role: Role) -> Arc<Credentials> {
    let key = DeviceKey::generate().unwrap();
    let grant = authority
        .enroll(&key.enrollment_request(role, [3; 16]), now())
        .unwrap();
    Arc::new(Credentials::from_grant(key, &grant, now()).unwrap())
}
