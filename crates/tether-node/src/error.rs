use thiserror::Error;

/// A node operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The local store failed.
    #[error("store: {0}")]
    Store(#[from] tether_store::StoreError),
    /// Enrollment or a certificate was refused.
    #[error("enrollment: {0}")]
    Enrollment(#[from] tether_identity::EnrollmentError),
    /// A key could not be made.
    #[error("key: {0}")]
    Key(#[from] tether_identity::KeyError),
    /// The session failed or was refused.
    #[error("session: {0}")]
    Session(tether_session::quic::SessionError),
    /// mDNS discovery failed.
    #[error("discovery: {0}")]
    Discovery(#[from] tether_discovery::DiscoveryError),
    /// The vehicle answered with a typed error.
    #[error("vehicle: {0}")]
    Control(#[from] tether_control::client::ControlError),
    /// A command receipt failed verification.
    #[error("receipt: {0}")]
    Receipt(#[from] tether_control::client::ReceiptError),
    /// A device-management request was refused (unknown device, read-only
    /// property, out of range...; SPEC §16).
    #[error("device: {0}")]
    Device(#[from] tether_devices::DeviceError),
    /// A firmware upgrade failed (SPEC §15).
    #[error(transparent)]
    Upgrade(#[from] crate::ota::OtaTransferError),
    /// A super-task operation failed (SPEC §18).
    #[error("automation: {0}")]
    Automation(#[from] crate::automation::AutomationError),
    /// A share grant or invite was refused (R16).
    #[error("share: {0}")]
    Share(#[from] tether_identity::ShareError),
    /// A revocation list was refused (SPEC §3.6).
    #[error("revocation list: {0}")]
    Revocation(#[from] tether_identity::RevocationError),
    /// The MQTT broker of the remote path could not be reached or used
    /// (SPEC §19.5).
    #[error("relay: {0}")]
    Relay(#[from] tether_relay::RelayError),

    /// Commissioning a device failed (radio, pairing, binding,
    /// provisioning: SPEC §12, §13). Boxed: the error is large.
    #[error("commissioning: {0}")]
    Commission(Box<tether_ble::commission::CommissionError>),
    /// No unprovisioned device matching the setup code was heard.
    #[error("no device matching the setup code was heard")]
    NoDeviceFound,
    /// A setup code that does not read (SPEC §12.1).
    #[error("setup code: {0}")]
    SetupCode(String),
    /// A letter for the relay's mailbox could not be sealed (SPEC §19.12).
    #[error("letter: {0}")]
    Letter(#[from] tether_identity::LetterError),
    /// The node has no broker configured (`NodeConfig::relay`), so it has
    /// no remote path (SPEC §19.11).
    #[error("no relay broker is configured")]
    NoRelay,
    /// The node has no certificate yet.
    #[error("this node is not enrolled in an account")]
    NotEnrolled,
    /// This phone hosts no account authority.
    #[error("this phone hosts no account authority")]
    NoAuthority,
    /// The node is already running or not running.
    #[error("invalid state: {0}")]
    State(&'static str),
    /// The peer is not what this call expects (e.g. not a vehicle).
    #[error("unexpected peer: {0}")]
    UnexpectedPeer(&'static str),
    /// The peer sent a response this call cannot use.
    #[error("unexpected response: {0}")]
    UnexpectedResponse(&'static str),
    /// The system random source failed.
    #[error("system random source failed")]
    Random,
    /// The vehicle service stopped.
    #[error("the vehicle service stopped")]
    ServiceStopped,
}

impl From<tether_session::quic::SessionError> for NodeError {
    /// A typed error the peer answered with is the service's answer
    /// ([`NodeError::Control`]), whichever call path carried it; anything
    /// else is the session's.
    fn from(e: tether_session::quic::SessionError) -> Self {
        match e {
            tether_session::quic::SessionError::Remote { code, message } => NodeError::Control(
                tether_control::client::ControlError::from_wire(&tether_proto::v1::Error {
                    code: code as i32,
                    message,
                }),
            ),
            e => NodeError::Session(e),
        }
    }
}

impl NodeError {
    /// Whether the peer refused this node's handshake (another account, a
    /// revoked or expired certificate): a `Refuse`, a close as refused, or
    /// `UNAUTHENTICATED` on the first request, which the initiator sends
    /// before the responder has checked its `ClientAuth` and which the
    /// responder answers so after refusing it (SPEC §5.7); or a responder
    /// whose sealed `ServerAuth` opens under none of this node's keys: it
    /// does not admit us, and we saw nothing of it (SPEC §5.4).
    pub fn is_refused(&self) -> bool {
        use tether_session::HandshakeError;
        use tether_session::quic::{CloseCode, SessionError};
        match self {
            NodeError::Control(c) => c.code() == Some(tether_proto::v1::ErrorCode::Unauthenticated),
            _ => matches!(
                self,
                NodeError::Session(SessionError::Handshake(
                    HandshakeError::Refused(_) | HandshakeError::NotAMember
                )) | NodeError::Session(SessionError::Closed {
                    code: Some(CloseCode::Refused),
                    ..
                })
            ),
        }
    }
}
