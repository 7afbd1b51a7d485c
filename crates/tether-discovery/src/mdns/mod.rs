//! The thin Tokio driver: publishes and browses discovery tokens with
//! `mdns-sd`.
//!
//! Each [`Advertiser`] and [`Browser`] runs its own `mdns-sd` daemon thread
//! (they share UDP port 5353 through `SO_REUSEPORT`). All protocol decisions
//! are made by the sans-IO [`token`](crate::token) core; this module only
//! reads the clock, draws nonces and moves records.

mod advertiser;
mod browser;

use std::time::Duration;

use mdns_sd::{IfKind, ServiceDaemon};

pub use advertiser::{Advertiser, AdvertiserConfig};
pub use browser::{Browser, DiscoveryEvent, Resolved};

use crate::DiscoveryError;

/// The DNS-SD service type of every Tether advertisement.
pub const SERVICE_TYPE: &str = "_tether._udp.local.";

/// How long a clean shutdown waits for the daemon to confirm.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(2);

/// Which network interfaces the mDNS daemon may use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Interfaces {
    /// IPv4 loopback only: nothing leaves the machine. For tests and demos.
    #[default]
    LoopbackOnly,
    /// Every interface `mdns-sd` finds: for real LANs.
    All,
}

/// An `mdns-sd` daemon that is shut down when dropped.
///
/// `ServiceDaemon` handles are cheap clones of a channel to a daemon thread
/// which also holds a sender to itself, so dropping every handle does not end
/// the thread: without an explicit shutdown it would leak.
struct Daemon {
    inner: ServiceDaemon,
    stopped: bool,
}

impl Daemon {
    fn start(interfaces: Interfaces) -> Result<Self, DiscoveryError> {
        let inner = ServiceDaemon::new().map_err(|e| DiscoveryError::daemon("start", e))?;
        let daemon = Self {
            inner,
            stopped: false,
        };
        // The daemon thread joins the mDNS groups on every interface that is
        // up before it reads its first command (mdns-sd 0.21's `Zeroconf::new`;
        // no constructor takes an interface selection), so IGMP/MLD join and
        // leave reports go out on each: SPEC §11 item 2. Commands run in
        // order, so these take effect before any register or browse and no
        // mDNS packet leaves through a disabled interface.
        if interfaces == Interfaces::LoopbackOnly {
            daemon
                .inner
                .disable_interface(IfKind::All)
                .map_err(|e| DiscoveryError::daemon("disable interfaces", e))?;
            daemon
                .inner
                .enable_interface(IfKind::LoopbackV4)
                .map_err(|e| DiscoveryError::daemon("enable loopback", e))?;
        }
        Ok(daemon)
    }

    fn handle(&self) -> &ServiceDaemon {
        &self.inner
    }

    /// Shuts the daemon down and waits (bounded) for its thread to confirm.
    /// The daemon sends goodbye packets for anything still registered.
    async fn shutdown(&mut self) -> Result<(), DiscoveryError> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        let status = self
            .inner
            .shutdown()
            .map_err(|e| DiscoveryError::daemon("shut down", e))?;
        match tokio::time::timeout(SHUTDOWN_WAIT, status.recv_async()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(DiscoveryError::Stopped),
            Err(_) => Err(DiscoveryError::Daemon {
                operation: "shut down",
                detail: format!("no confirmation within {SHUTDOWN_WAIT:?}"),
            }),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if !self.stopped {
            // Fire and forget: an error only means the thread is already gone.
            let _ = self.inner.shutdown();
        }
    }
}
