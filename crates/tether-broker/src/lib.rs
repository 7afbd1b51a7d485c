//! An MQTT 5 broker embedded in the process, for `tether demo` and
//! `tether bench` on a machine with nothing installed (SPEC §19.10).
//!
//! It wraps the `mqtt5` crate's broker with the settings the relay needs and
//! nothing more: it listens on a **loopback address only** (anything else is
//! refused, network hygiene of the demo and the tests), keeps sessions and
//! queued messages in memory (nothing is written to disk, so it leaves no
//! file behind), publishes no `$SYS` topics and allows anonymous clients,
//! which is safe on loopback and is the worst case §19.7 assumes anyway:
//! the relay's safety never depends on the broker.
//!
//! A deployment runs a real broker or cluster (mosquitto, EMQX, HiveMQ,
//! VerneMQ, ejabberd) and points `--broker mqtt://HOST:PORT` at it.

use std::net::SocketAddr;
use std::time::Duration;

use mqtt5::broker::config::{StorageBackend, StorageConfig};
use mqtt5::broker::{BrokerConfig, BrokerShutdownHandle, MqttBroker};
use thiserror::Error;
use tokio::task::JoinHandle;

/// The largest MQTT packet the embedded broker accepts: well above a relay
/// envelope under its topic (SPEC §19.3), far below the crate's 256 MiB.
pub const MAX_PACKET_BYTES: usize = 64 * 1024;

/// Messages queued for one disconnected client with a persistent session.
pub const MAX_QUEUED_PER_CLIENT: usize = 1024;

/// The embedded broker could not start.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// Only loopback addresses are allowed (tests and the demo send no
    /// traffic off the machine).
    #[error("the embedded broker listens on loopback only, not {0}")]
    NotLoopback(SocketAddr),
    /// The broker refused its configuration or could not bind.
    #[error("embedded broker: {0}")]
    Start(String),
}

/// A running embedded broker; [`EmbeddedBroker::shutdown`] (or dropping it)
/// stops it.
pub struct EmbeddedBroker {
    addr: SocketAddr,
    shutdown: BrokerShutdownHandle,
    task: Option<JoinHandle<()>>,
}

impl EmbeddedBroker {
    /// Starts a broker on `addr` (a loopback address; port 0 picks a free
    /// port, see [`EmbeddedBroker::addr`]). Must run inside a tokio runtime.
    pub async fn start(addr: SocketAddr) -> Result<Self, BrokerError> {
        if !addr.ip().is_loopback() {
            return Err(BrokerError::NotLoopback(addr));
        }
        let storage = StorageConfig::new()
            .with_backend(StorageBackend::Memory)
            .with_persistence(true)
            .with_max_queued_messages_per_client(MAX_QUEUED_PER_CLIENT);
        let config = BrokerConfig::default()
            .with_bind_address(addr)
            .with_max_packet_size(MAX_PACKET_BYTES)
            .with_storage(storage)
            .with_sys_topics_enabled(false);
        let mut broker = MqttBroker::with_config(config)
            .await
            .map_err(|e| BrokerError::Start(e.to_string()))?;
        let addr = broker
            .local_addr()
            .ok_or_else(|| BrokerError::Start("no listening address".into()))?;
        let shutdown = broker.shutdown_handle();
        let task = tokio::spawn(async move {
            if let Err(e) = broker.run().await {
                tracing::warn!(error = %e, "embedded MQTT broker stopped");
            }
        });
        Ok(Self {
            addr,
            shutdown,
            task: Some(task),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `mqtt://HOST:PORT`, as `--broker` takes it.
    pub fn url(&self) -> String {
        format!("mqtt://{}", self.addr)
    }

    /// Stops the broker and waits (at most 2 s) until it has closed its
    /// connections.
    pub async fn shutdown(mut self) {
        self.shutdown.shutdown();
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
    }
}

impl std::fmt::Debug for EmbeddedBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBroker")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        self.shutdown.shutdown();
    }
}
