//! The head-unit role, for a vehicle app or a hub that embeds Tether
//! through the bindings rather than in Rust.

use std::sync::Arc;

use prost::Message;

use crate::TetherError;
use crate::key_store::{PlatformKeyStore, bridge};
use crate::records::{Executions, ListenerStats, LocalIdentifiers, NodeSettings};
use crate::runtime::{guard, run};

/// The car (`tether_node::HeadUnit`): serves the vehicle to its account's
/// members and advertises a rotating token.
#[derive(Debug, uniffi::Object)]
pub struct HeadUnit {
    inner: Arc<tether_node::HeadUnit>,
}

impl HeadUnit {
    pub(crate) fn node(&self) -> Arc<tether_node::HeadUnit> {
        self.inner.clone()
    }
}

#[uniffi::export]
impl HeadUnit {
    /// Opens (or creates) the head unit's state; generates its device key
    /// on first use.
    #[uniffi::constructor]
    pub fn open(
        settings: NodeSettings,
        key_store: Option<Box<dyn PlatformKeyStore>>,
    ) -> Result<Arc<Self>, TetherError> {
        guard(|| {
            let inner = tether_node::HeadUnit::open(settings.into_config(bridge(key_store))?)?;
            Ok(Arc::new(Self {
                inner: Arc::new(inner),
            }))
        })
    }

    /// Whether the head unit holds a certificate.
    pub fn is_enrolled(&self) -> bool {
        guard(|| Ok(self.inner.is_enrolled())).unwrap_or(false)
    }

    /// The enrollment request to hand to the owner's phone (protobuf bytes).
    pub fn enrollment_request(&self) -> Result<Vec<u8>, TetherError> {
        guard(|| Ok(self.inner.enrollment_request()?.encode_to_vec()))
    }

    /// Accepts the phone's `EnrollmentGrant` (protobuf bytes).
    pub fn complete_enrollment(&self, grant: Vec<u8>) -> Result<(), TetherError> {
        guard(|| {
            let grant = tether_node::EnrollmentGrant::decode(grant.as_slice())?;
            Ok(self.inner.complete_enrollment(&grant)?)
        })
    }

    /// The device's public key.
    pub fn public_key(&self) -> Result<Vec<u8>, TetherError> {
        guard(|| Ok(self.inner.public_key()?.to_vec()))
    }

    /// The identifiers kept in the local store (R2).
    pub fn local_identifiers(&self) -> Result<LocalIdentifiers, TetherError> {
        guard(|| Ok(self.inner.local_identifiers()?.into()))
    }

    /// Binds the session endpoint, starts advertising and serving; returns
    /// the endpoint's `ip:port`.
    pub async fn start(&self) -> Result<String, TetherError> {
        let inner = self.inner.clone();
        run(async move { inner.start().await.map(|a| a.to_string()) }).await
    }

    /// The current discovery token, while running.
    pub async fn current_token(&self) -> Result<Option<String>, TetherError> {
        let inner = self.inner.clone();
        run(async move { Ok::<_, TetherError>(inner.current_token().await) }).await
    }

    /// Rotates the discovery token now (e.g. on a network change).
    pub async fn rotate_token(&self) -> Result<String, TetherError> {
        let inner = self.inner.clone();
        run(async move { inner.rotate_token().await }).await
    }

    /// The listener's counters, while running.
    pub async fn listener_stats(&self) -> Result<Option<ListenerStats>, TetherError> {
        let inner = self.inner.clone();
        run(async move { Ok::<_, TetherError>(inner.listener_stats().await.map(Into::into)) }).await
    }

    /// How often the vehicle performed each actuation.
    pub async fn executions(&self) -> Result<Executions, TetherError> {
        let inner = self.inner.clone();
        run(async move { inner.executions().await.map(Into::into) }).await
    }

    /// Stops advertising and serving; open sessions are closed.
    pub async fn shutdown(&self) -> Result<(), TetherError> {
        let inner = self.inner.clone();
        run(async move { inner.shutdown().await }).await
    }
}
