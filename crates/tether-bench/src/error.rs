//! Why a benchmark run stopped.

use thiserror::Error;

/// A boxed source error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A benchmark run failed. Timing never fails a run: only a broken setup, a
/// failed connection or a wrong answer does.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BenchError {
    /// The [`BenchConfig`](crate::BenchConfig) cannot be run (the caller's
    /// mistake).
    #[error("invalid benchmark configuration: {0}")]
    InvalidConfig(&'static str),
    /// Building identities, certificates, sockets or the vehicle service
    /// failed (a local problem, not the network's).
    #[error("benchmark setup failed ({what}): {source}")]
    Setup {
        /// The step that failed.
        what: &'static str,
        /// The underlying error.
        source: BoxError,
    },
    /// A Tether session operation failed.
    #[error("tether session failed: {0}")]
    Session(#[from] tether_session::quic::SessionError),
    /// A firmware upgrade over a Tether session failed.
    #[error("firmware upgrade failed: {0}")]
    Ota(#[from] tether_node::OtaTransferError),
    /// The bare-quinn baseline failed.
    #[error("bare quinn baseline failed ({during}): {source}")]
    Baseline {
        /// The operation that failed.
        during: &'static str,
        /// The underlying quinn error.
        source: BoxError,
    },
    /// The bare MQTT baseline of the relay measurements failed.
    #[error("bare MQTT baseline failed ({during}): {source}")]
    Mqtt {
        /// The operation that failed.
        during: &'static str,
        /// The underlying rumqttc error.
        source: BoxError,
    },
    /// An answer or a handshake was not what the benchmark expects (a bug in
    /// the benchmark or a regression in the code under test).
    #[error("unexpected result: {0}")]
    Unexpected(&'static str),
    /// Something did not happen within its time limit.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// A worker task panicked or was cancelled.
    #[error("benchmark task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl BenchError {
    pub(crate) fn setup(what: &'static str, source: impl Into<BoxError>) -> Self {
        Self::Setup {
            what,
            source: source.into(),
        }
    }

    pub(crate) fn mqtt(during: &'static str, source: impl Into<BoxError>) -> Self {
        Self::Mqtt {
            during,
            source: source.into(),
        }
    }

    pub(crate) fn baseline(during: &'static str, source: impl Into<BoxError>) -> Self {
        Self::Baseline {
            during,
            source: source.into(),
        }
    }
}
