use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use tether_discovery::Interfaces;
use tether_session::quic::SessionConfig;

/// Settings shared by every role.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Where the node keeps its SQLite state (mode 0600). `None` keeps state
    /// in memory only, as the demo does.
    pub data_dir: Option<PathBuf>,
    /// Which interfaces mDNS uses. Loopback only by default (tests, demo).
    pub interfaces: Interfaces,
    /// Address the session endpoint binds to and advertises.
    pub bind_ip: IpAddr,
    /// UDP port for the session endpoint; 0 picks a free one.
    pub port: u16,
    /// Session limits and timeouts.
    pub session: SessionConfig,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            data_dir: None,
            interfaces: Interfaces::LoopbackOnly,
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            session: SessionConfig::default(),
        }
    }
}

impl NodeConfig {
    pub(crate) fn open_store(&self) -> Result<tether_store::Store, crate::NodeError> {
        Ok(match &self.data_dir {
            Some(dir) => tether_store::Store::open(dir)?,
            None => tether_store::Store::open_in_memory()?,
        })
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], crate::NodeError> {
    use ring::rand::SecureRandom;
    let mut out = [0; N];
    ring::rand::SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| crate::NodeError::Random)?;
    Ok(out)
}
