//! The app's platform key store (Android Keystore, iOS Keychain), plugged
//! under the node's SQLite store.

use std::sync::Arc;

use tether_node::{KeyStore, SecretName};

use crate::KeyStoreError;

/// Implemented by the app to keep Tether's secrets (the device's private
/// key, the account group key and, on the phone that hosts the account, the
/// authority's keys) in the platform key store instead of the SQLite file.
///
/// `name` is one of `device-key`, `group-key`, `authority-signing-key`,
/// `authority-group-key`; `secret` is opaque bytes (at most a few hundred).
/// Calls come from the thread that called into Tether, or from a Tether
/// runtime thread; they must not call back into Tether.
#[uniffi::export(callback_interface)]
pub trait PlatformKeyStore: Send + Sync {
    /// The secret saved under `name`, or `None`.
    fn load(&self, name: String) -> Result<Option<Vec<u8>>, KeyStoreError>;
    /// Saves `secret` under `name` durably, replacing any previous value.
    fn save(&self, name: String, secret: Vec<u8>) -> Result<(), KeyStoreError>;
    /// Deletes the secret under `name`; a missing one is not an error.
    fn delete(&self, name: String) -> Result<(), KeyStoreError>;
}

/// Adapts the foreign key store to the node's [`KeyStore`].
struct KeyStoreBridge(Box<dyn PlatformKeyStore>);

/// The node-side key store for an optional foreign one.
pub(crate) fn bridge(key_store: Option<Box<dyn PlatformKeyStore>>) -> Option<Arc<dyn KeyStore>> {
    key_store.map(|k| Arc::new(KeyStoreBridge(k)) as Arc<dyn KeyStore>)
}

fn to_node(e: KeyStoreError) -> tether_node::KeyStoreError {
    tether_node::KeyStoreError(e.to_string())
}

impl KeyStore for KeyStoreBridge {
    fn load(&self, name: SecretName) -> Result<Option<Vec<u8>>, tether_node::KeyStoreError> {
        self.0.load(name.as_str().to_owned()).map_err(to_node)
    }

    fn save(&self, name: SecretName, secret: &[u8]) -> Result<(), tether_node::KeyStoreError> {
        self.0
            .save(name.as_str().to_owned(), secret.to_vec())
            .map_err(to_node)
    }

    fn delete(&self, name: SecretName) -> Result<(), tether_node::KeyStoreError> {
        self.0.delete(name.as_str().to_owned()).map_err(to_node)
    }
}
