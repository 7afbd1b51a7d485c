//! Errors of the mDNS driver.

use std::time::Duration;

/// What went wrong while advertising or browsing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// The mDNS daemon could not be started, refused a command or has
    /// stopped (a local fault: sockets, threads or a full command queue).
    #[error("mDNS daemon failed to {operation}: {detail}")]
    Daemon {
        /// What we asked of the daemon.
        operation: &'static str,
        /// The daemon's own description of the failure.
        detail: String,
    },
    /// No member advertisement was resolved in the time allowed.
    #[error("no member advertisement resolved within {waited:?}")]
    Timeout {
        /// How long we waited.
        waited: Duration,
    },
    /// The system random number generator failed to give a nonce.
    #[error("system random number generator failed")]
    Random,
    /// An advertiser was started outside a Tokio runtime (API misuse).
    #[error("Advertiser::start must be called inside a Tokio runtime")]
    NoRuntime,
    /// The advertiser's task or the browser's daemon has already stopped.
    #[error("discovery has stopped")]
    Stopped,
}

impl DiscoveryError {
    pub(crate) fn daemon(operation: &'static str, error: mdns_sd::Error) -> Self {
        Self::Daemon {
            operation,
            detail: error.to_string(),
        }
    }
}
