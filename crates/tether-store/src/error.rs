use thiserror::Error;

/// Why a [`Store`](crate::Store) operation failed. Bad bytes on disk are
/// always an error value, never a panic (R31).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite refused an operation (locked, full disk, corrupt file, …).
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Creating the data directory or the database file, or setting their
    /// permissions, failed.
    #[error("store file system: {0}")]
    Io(#[from] std::io::Error),
    /// A stored value does not parse (wrong length, bad PKCS#8 or protobuf,
    /// negative integer); names the value.
    #[error("corrupt stored record: {0}")]
    CorruptRecord(&'static str),
    /// The database was written by a newer Tether whose schema this build does
    /// not know; it is left untouched.
    #[error("database schema version {found} is newer than supported version {supported}")]
    NewerSchema {
        /// The database's `user_version`.
        found: u32,
        /// The newest schema version this build knows.
        supported: u32,
    },
    /// A value to store does not fit SQLite's signed 64-bit integer; names the
    /// value.
    #[error("value out of range for storage: {0}")]
    OutOfRange(&'static str),
    /// Stored identity parts parse but do not form valid credentials (the
    /// certificate's signature does not verify, or it names another key).
    #[error("stored identity is invalid: {0}")]
    Identity(#[from] tether_identity::EnrollmentError),
    /// The platform key store failed.
    #[error(transparent)]
    KeyStore(#[from] crate::KeyStoreError),
    /// The record says a secret is held by the platform key store, but no key
    /// store is plugged in or it does not have the secret.
    #[error("secret {0} is held by a platform key store that does not have it")]
    SecretUnavailable(crate::SecretName),
}
