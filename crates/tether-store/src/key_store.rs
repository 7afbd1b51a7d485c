//! Secrets kept outside the SQLite file, in a platform key store (Android
//! Keystore, iOS Keychain) that the host application implements.
//!
//! Without a key store every secret lives in the store's own file (mode
//! 0600, R31). With one, the store writes each secret to the key store first
//! and leaves an empty blob in its column: an empty secret column means
//! "held by the platform key store". A secret that was already in the file
//! before a key store was plugged in stays readable from the file until it
//! is saved again.

use std::fmt;
use std::sync::Arc;

use thiserror::Error;

use crate::{Store, StoreError};

/// The secrets a node keeps. The key store sees only these names and opaque
/// bytes; it never learns what account or device they belong to (R2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecretName {
    /// The device's Ed25519 private key (PKCS#8).
    DeviceKey,
    /// The account group key held by a member device.
    GroupKey,
    /// The account authority's signing key (PKCS#8), on the phone that hosts
    /// the authority.
    AuthoritySigningKey,
    /// The account group key as held by the authority.
    AuthorityGroupKey,
    /// The previous epoch's group key, kept for the grace period after a
    /// device removal (SPEC §3.6).
    PreviousGroupKey,
}

impl SecretName {
    /// Every secret name, for listing or wiping.
    pub const ALL: [SecretName; 5] = [
        SecretName::DeviceKey,
        SecretName::GroupKey,
        SecretName::AuthoritySigningKey,
        SecretName::AuthorityGroupKey,
        SecretName::PreviousGroupKey,
    ];

    /// A stable name for the key store entry.
    pub fn as_str(self) -> &'static str {
        match self {
            SecretName::DeviceKey => "device-key",
            SecretName::GroupKey => "group-key",
            SecretName::AuthoritySigningKey => "authority-signing-key",
            SecretName::AuthorityGroupKey => "authority-group-key",
            SecretName::PreviousGroupKey => "previous-group-key",
        }
    }
}

impl fmt::Display for SecretName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The platform key store refused or failed an operation.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("platform key store: {0}")]
pub struct KeyStoreError(pub String);

/// A place for secrets outside the SQLite file. Implementations must be
/// durable: a `save` that returned `Ok` survives a restart of the app.
pub trait KeyStore: Send + Sync {
    /// Returns the secret saved under `name`, or `None` if there is none.
    fn load(&self, name: SecretName) -> Result<Option<Vec<u8>>, KeyStoreError>;
    /// Saves `secret` under `name`, replacing any previous value.
    fn save(&self, name: SecretName, secret: &[u8]) -> Result<(), KeyStoreError>;
    /// Deletes the secret under `name`; deleting a missing one is not an error.
    fn delete(&self, name: SecretName) -> Result<(), KeyStoreError>;
}

impl Store {
    /// Keeps this store's secrets in `key_store` from now on (see the
    /// module documentation of [`KeyStore`]).
    pub fn set_key_store(&mut self, key_store: Arc<dyn KeyStore>) {
        self.key_store = Some(key_store);
    }

    /// Whether secrets go to a platform key store.
    pub fn has_key_store(&self) -> bool {
        self.key_store.is_some()
    }

    /// Saves `secret` where it belongs and returns what its column holds:
    /// the secret itself, or an empty blob when a key store holds it.
    pub(crate) fn put_secret(
        &self,
        name: SecretName,
        secret: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        match &self.key_store {
            Some(key_store) => {
                key_store.save(name, secret)?;
                Ok(Vec::new())
            }
            None => Ok(secret.to_vec()),
        }
    }

    /// Resolves a secret column: an empty blob is fetched from the key store.
    pub(crate) fn get_secret(
        &self,
        name: SecretName,
        column: Vec<u8>,
    ) -> Result<Vec<u8>, StoreError> {
        if !column.is_empty() {
            return Ok(column);
        }
        let key_store = self
            .key_store
            .as_ref()
            .ok_or(StoreError::SecretUnavailable(name))?;
        key_store
            .load(name)?
            .filter(|s| !s.is_empty())
            .ok_or(StoreError::SecretUnavailable(name))
    }
}
