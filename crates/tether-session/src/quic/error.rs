use tether_proto::v1::ErrorCode;
use thiserror::Error;

use crate::frame::FrameError;
use crate::handshake::HandshakeError;

/// Application close codes (QUIC `CONNECTION_CLOSE` with an application
/// error code). The reason text never carries an identifier (R2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum CloseCode {
    /// Orderly close by the application.
    Normal = 0,
    /// The handshake was refused.
    Refused = 1,
    /// The handshake did not finish within the deadline.
    HandshakeTimeout = 2,
    /// Dropped to make room under a flood of unauthenticated connections.
    Evicted = 3,
    /// The endpoint is shutting down.
    Shutdown = 4,
    /// The peer broke the protocol.
    ProtocolViolation = 5,
    /// The share grant this co-user session ran under was revoked (SPEC §17.5).
    Revoked = 6,
}

impl CloseCode {
    /// Parses a received code.
    pub fn from_u64(code: u64) -> Option<Self> {
        Some(match code {
            0 => CloseCode::Normal,
            1 => CloseCode::Refused,
            2 => CloseCode::HandshakeTimeout,
            3 => CloseCode::Evicted,
            4 => CloseCode::Shutdown,
            5 => CloseCode::ProtocolViolation,
            6 => CloseCode::Revoked,
            _ => return None,
        })
    }
}

/// A session failed. Each variant says whose fault it is.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The account-bound handshake failed (see the inner error).
    #[error("handshake failed: {0}")]
    Handshake(#[from] HandshakeError),
    /// The handshake did not finish within the deadline.
    #[error("handshake timed out")]
    HandshakeTimeout,
    /// The peer closed the connection.
    #[error("connection closed by peer ({code:?}): {reason}")]
    Closed {
        /// The close code, when it is one of ours.
        code: Option<CloseCode>,
        /// The peer's reason text.
        reason: String,
    },
    /// The QUIC connection failed.
    #[error("connection failed: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// The QUIC connection could not be started (bad address, endpoint
    /// closed).
    #[error("cannot connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// Binding a UDP socket failed.
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
    /// TLS configuration failed (a bug, not the peer's fault).
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// A frame broke the size limit or was cut short.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The caller tried to send a message larger than the frame limit.
    #[error("message of {len} bytes exceeds the {limit}-byte frame limit")]
    MessageTooLarge {
        /// Encoded size.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The peer sent bytes that are not a valid envelope.
    #[error("invalid message from peer: {0}")]
    InvalidMessage(&'static str),
    /// The peer answered with a typed error.
    #[error("peer returned {code:?}: {message}")]
    Remote {
        /// The wire error code.
        code: ErrorCode,
        /// Human text from the peer.
        message: String,
    },
    /// No response before the request's deadline.
    #[error("deadline exceeded")]
    DeadlineExceeded,
    /// Writing to a stream failed.
    #[error("stream write failed: {0}")]
    Write(#[from] quinn::WriteError),
    /// Reading from a stream failed.
    #[error("stream read failed: {0}")]
    Read(#[from] quinn::ReadError),
    /// The stream was closed before it was used.
    #[error("stream already closed")]
    StreamClosed,
    /// The TLS certificate of a resumed peer differs from the pinned one.
    #[error("peer TLS certificate does not match the resumption pin")]
    PinMismatch,
    /// The TLS exporter was unavailable.
    #[error("TLS exporter unavailable")]
    Exporter,
    /// The system random source failed.
    #[error("system random source failed")]
    Random,
}

impl SessionError {
    /// Whether this is quinn's report that the responder refused the
    /// early data the request travelled in (SPEC §5.8): nothing of it was
    /// executed.
    pub fn is_early_data_rejected(&self) -> bool {
        matches!(
            self,
            SessionError::Read(quinn::ReadError::ZeroRttRejected)
                | SessionError::Write(quinn::WriteError::ZeroRttRejected)
        )
    }

    /// Maps a connection error, turning our own close codes into `Closed`.
    pub(crate) fn from_connection(e: quinn::ConnectionError) -> Self {
        match e {
            quinn::ConnectionError::ApplicationClosed(close) => SessionError::Closed {
                code: CloseCode::from_u64(close.error_code.into_inner()),
                reason: String::from_utf8_lossy(&close.reason).into_owned(),
            },
            e => SessionError::Connection(e),
        }
    }
}

impl From<quinn::ClosedStream> for SessionError {
    fn from(_: quinn::ClosedStream) -> Self {
        SessionError::StreamClosed
    }
}
