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
    Session(#[from] tether_session::quic::SessionError),
    /// mDNS discovery failed.
    #[error("discovery: {0}")]
    Discovery(#[from] tether_discovery::DiscoveryError),
    /// The vehicle answered with a typed error.
    #[error("vehicle: {0}")]
    Control(#[from] tether_control::client::ControlError),
    /// A command receipt failed verification.
    #[error("receipt: {0}")]
    Receipt(#[from] tether_control::client::ReceiptError),
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

impl NodeError {
    /// Whether the peer refused this node's handshake (another account, a
    /// revoked or expired certificate).
    pub fn is_refused(&self) -> bool {
        use tether_session::quic::{CloseCode, SessionError};
        matches!(
            self,
            NodeError::Session(SessionError::Handshake(
                tether_session::HandshakeError::Refused(_)
            )) | NodeError::Session(SessionError::Closed {
                code: Some(CloseCode::Refused),
                ..
            })
        )
    }
}
