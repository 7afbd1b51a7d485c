//! One error type for the whole FFI surface, with the variants of
//! [`tether_node::NodeError`] plus the failures only the boundary has.

use tether_node::NodeError;

/// Why a Tether call failed. Foreign languages see it as a typed exception
/// (`TetherException` in Kotlin, `TetherError` in Swift and Python) whose
/// variants match Rust's `tether_node::NodeError`; `detail` is a human-readable
/// sentence for logs, not for parsing.
#[derive(Debug, thiserror::Error, uniffi::Error)]
#[non_exhaustive]
pub enum TetherError {
    /// The local store (SQLite or the platform key store) failed.
    #[error("store: {detail}")]
    Store {
        /// What failed.
        detail: String,
    },
    /// Enrollment or a certificate was refused.
    #[error("enrollment: {detail}")]
    Enrollment {
        /// What failed.
        detail: String,
    },
    /// A key could not be made or parsed.
    #[error("key: {detail}")]
    Key {
        /// What failed.
        detail: String,
    },
    /// The session failed. `refused` is true when the peer refused this
    /// node's handshake: another account, a revoked or expired certificate.
    #[error("session: {detail}")]
    Session {
        /// What failed.
        detail: String,
        /// The peer refused us (not a transport failure).
        refused: bool,
    },
    /// mDNS discovery failed, or found nothing in time.
    #[error("discovery: {detail}")]
    Discovery {
        /// What failed.
        detail: String,
    },
    /// The vehicle answered with a typed error (`code` is the wire name,
    /// e.g. `ERROR_CODE_PERMISSION_DENIED`).
    #[error("vehicle: {detail}")]
    Control {
        /// The wire error code, or `UNKNOWN`.
        code: String,
        /// What failed.
        detail: String,
    },
    /// A command receipt failed verification.
    #[error("receipt: {detail}")]
    Receipt {
        /// What failed.
        detail: String,
    },
    /// The head unit's device manager refused a call made on its own screen
    /// (`HeadUnit` methods: an unknown handle or product model, a bad
    /// name...; SPEC §16.8). `code` is the wire name the same refusal has
    /// when it reaches a phone through the car as `Control`, e.g.
    /// `ERROR_CODE_UNSUPPORTED`.
    #[error("device: {detail}")]
    Device {
        /// The wire error code (SPEC §7).
        code: String,
        /// What failed.
        detail: String,
    },
    /// A firmware upgrade failed: the vehicle battery is too low (R15), the
    /// image does not match its signed manifest, the device refused it, or
    /// the link dropped (calling again resumes; SPEC §15).
    #[error("upgrade: {detail}")]
    Upgrade {
        /// What failed.
        detail: String,
    },
    /// A super task, template or trace failed on this node: the car sent
    /// one this version cannot read, or (on a `HeadUnit`) the task engine
    /// refused (SPEC §18). A task the car refuses reaches a phone as
    /// `Control` instead, with the wire code.
    #[error("automation: {detail}")]
    Automation {
        /// What failed.
        detail: String,
    },
    /// A share grant or invite was refused: not for this account, not
    /// signed by the owner, expired, malformed (R16).
    #[error("share: {detail}")]
    Share {
        /// What failed.
        detail: String,
    },
    /// A revocation list was refused: not signed by the account's
    /// authority, malformed, or without its group key (SPEC §3.6).
    #[error("revocation list: {detail}")]
    Revocation {
        /// What failed.
        detail: String,
    },
    /// The remote path: the MQTT broker could not be reached or used, or
    /// no broker is set (`NodeSettings.broker`), SPEC §19.11.
    #[error("relay: {detail}")]
    Relay {
        /// What failed.
        detail: String,
    },
    /// Commissioning a device failed (SPEC §12.8): no device matched the
    /// setup code, the code does not read, or the radio, pairing, binding
    /// or provisioning failed. `wrong_passcode`: the device refused the
    /// passcode; `retry_after_s`: the device asks to wait (R6).
    #[error("commissioning: {detail}")]
    Commission {
        /// What failed.
        detail: String,
        /// The device refused the passcode.
        wrong_passcode: bool,
        /// Seconds the device asks to wait before the next attempt.
        retry_after_s: Option<u32>,
    },
    /// The node has no certificate yet.
    #[error("this node is not enrolled in an account")]
    NotEnrolled,
    /// This phone hosts no account authority.
    #[error("this phone hosts no account authority")]
    NoAuthority,
    /// The call does not fit the node's state (already started, not
    /// running...), or an argument is out of range.
    #[error("invalid state: {detail}")]
    State {
        /// What is wrong.
        detail: String,
    },
    /// The peer is not what this call expects (e.g. not a vehicle).
    #[error("unexpected peer: {detail}")]
    UnexpectedPeer {
        /// What is wrong.
        detail: String,
    },
    /// The peer sent a response this call cannot use.
    #[error("unexpected response: {detail}")]
    UnexpectedResponse {
        /// What is wrong.
        detail: String,
    },
    /// The system random source failed.
    #[error("system random source failed")]
    Random,
    /// The vehicle service stopped.
    #[error("the vehicle service stopped")]
    ServiceStopped,
    /// An argument from the app does not parse (an address, protobuf bytes).
    #[error("invalid argument: {detail}")]
    InvalidArgument {
        /// What is wrong.
        detail: String,
    },
    /// A bug inside the library: a caught panic or a cancelled task. The
    /// library stays usable; please report `detail`.
    #[error("internal: {detail}")]
    Internal {
        /// What happened.
        detail: String,
    },
}

impl From<NodeError> for TetherError {
    fn from(e: NodeError) -> Self {
        let detail = e.to_string();
        let refused = e.is_refused();
        match e {
            NodeError::Store(_) => TetherError::Store { detail },
            NodeError::Enrollment(_) => TetherError::Enrollment { detail },
            NodeError::Key(_) => TetherError::Key { detail },
            NodeError::Session(_) => TetherError::Session { detail, refused },
            NodeError::Discovery(_) => TetherError::Discovery { detail },
            NodeError::Control(c) => TetherError::Control {
                code: c
                    .code()
                    .map_or("UNKNOWN", |code| code.as_str_name())
                    .to_owned(),
                detail,
            },
            NodeError::Receipt(_) => TetherError::Receipt { detail },
            NodeError::Device(d) => TetherError::Device {
                code: d.code().as_str_name().to_owned(),
                detail,
            },
            NodeError::Upgrade(_) => TetherError::Upgrade { detail },
            NodeError::Automation(_) => TetherError::Automation { detail },
            NodeError::Share(_) => TetherError::Share { detail },
            NodeError::Revocation(_) => TetherError::Revocation { detail },
            NodeError::Relay(_) | NodeError::NoRelay => TetherError::Relay { detail },
            NodeError::NotEnrolled => TetherError::NotEnrolled,
            NodeError::NoAuthority => TetherError::NoAuthority,
            NodeError::State(_) => TetherError::State { detail },
            NodeError::UnexpectedPeer(_) => TetherError::UnexpectedPeer { detail },
            NodeError::UnexpectedResponse(_) => TetherError::UnexpectedResponse { detail },
            NodeError::Random => TetherError::Random,
            NodeError::ServiceStopped => TetherError::ServiceStopped,
            NodeError::Commission(_) | NodeError::NoDeviceFound | NodeError::SetupCode(_) => {
                TetherError::Commission {
                    wrong_passcode: e.is_wrong_passcode(),
                    retry_after_s: e.retry_after_s(),
                    detail,
                }
            }
            // NodeError is non-exhaustive: a variant added later is still an
            // error, never a panic.
            _ => TetherError::Internal { detail },
        }
    }
}

impl From<prost::DecodeError> for TetherError {
    fn from(e: prost::DecodeError) -> Self {
        TetherError::InvalidArgument {
            detail: format!("protobuf: {e}"),
        }
    }
}

/// A platform key store failed; raised by the app's `PlatformKeyStore`
/// implementation.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum KeyStoreError {
    /// The key store could not do it (locked device, user cancelled, I/O).
    #[error("{detail}")]
    Failed {
        /// What failed, for logs.
        detail: String,
    },
}

impl From<uniffi::UnexpectedUniFFICallbackError> for KeyStoreError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        KeyStoreError::Failed {
            detail: format!("the key store raised an unexpected error: {}", e.reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_error_keeps_its_variant() {
        let cases = [
            (NodeError::NotEnrolled, "NotEnrolled"),
            (NodeError::NoRelay, "Relay"),
            (NodeError::NoAuthority, "NoAuthority"),
            (NodeError::State("x"), "State"),
            (NodeError::UnexpectedPeer("x"), "UnexpectedPeer"),
            (NodeError::UnexpectedResponse("x"), "UnexpectedResponse"),
            (NodeError::Random, "Random"),
            (NodeError::ServiceStopped, "ServiceStopped"),
            (NodeError::Share(tether_node::ShareError::Expired), "Share"),
            (
                NodeError::Automation(tether_node::AutomationError::UnknownTask(3)),
                "Automation",
            ),
            (
                NodeError::Upgrade(tether_node::OtaTransferError::LowBattery { percent: 10 }),
                "Upgrade",
            ),
        ];
        for (node, name) in cases {
            let ffi = TetherError::from(node);
            assert!(
                format!("{ffi:?}").starts_with(name),
                "{ffi:?} is not {name}"
            );
        }
    }

    #[test]
    fn a_device_error_keeps_its_wire_code() {
        // tether-devices is not a dependency of this crate: reach a
        // `DeviceError` through its `From<StoreError>` (a store failure
        // inside the device manager is INTERNAL on the wire, SPEC §16.8).
        let store = tether_node::StoreError::SecretUnavailable(tether_node::SecretName::DeviceKey);
        match TetherError::from(NodeError::Device(store.into())) {
            TetherError::Device { code, detail } => {
                assert_eq!(code, "ERROR_CODE_INTERNAL");
                assert!(detail.starts_with("device: "), "{detail}");
            }
            other => panic!("expected Device, got {other:?}"),
        }
    }

    #[test]
    fn a_store_error_names_the_missing_secret() {
        let e = NodeError::Store(tether_node::StoreError::SecretUnavailable(
            tether_node::SecretName::DeviceKey,
        ));
        match TetherError::from(e) {
            TetherError::Store { detail } => assert!(detail.contains("device-key"), "{detail}"),
            other => panic!("expected Store, got {other:?}"),
        }
    }
}
