//! A Tether node's local state in one SQLite file: its identity (device key
//! and certificate), the account authority it may host, the idempotency log
//! of vehicle commands, resumption tickets and small settings.
//!
//! Everything here stays on the device (R2, R24): the store has no network
//! code and nothing in it is synchronised. The API is synchronous; call it
//! from a blocking context. [`Store`] is `Send`, so it can be moved into the
//! task or thread that owns it. Times are Unix seconds passed in by the
//! caller; the store never reads the clock.
//!
//! Why SQLite in WAL mode: each write is an atomic, durable transaction, so a
//! head unit losing power mid-write keeps either the old or the new state
//! (never a half-written key or receipt), and readers do not block the
//! writer. Why mode 0600 (directory 0700): the file holds the device's
//! private key and the account group key, so only the node's own user may
//! read it (R31); the `-wal` and `-shm` files, which hold the same pages,
//! get the same mode. An app may plug a platform key store (Android
//! Keystore, iOS Keychain) with [`Store::set_key_store`]; the secrets then
//! live there and their columns hold an empty blob.
//!
//! # Usage
//! ```
//! use tether_identity::DeviceKey;
//! use tether_store::{CommandRecord, Store};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let mut store = Store::open(&dir.path().join("node"))?;
//!
//! // First start: generate the key on the device and keep it before enrolling.
//! if store.load_device_key()?.is_none() {
//!     store.save_device_key(&DeviceKey::generate()?)?;
//! }
//! assert!(store.load_identity()?.is_none()); // not enrolled yet
//!
//! // A vehicle command is executed once; a retry by the same requester
//! // (principal) gets the stored receipt.
//! let record = CommandRecord { command_digest: vec![0; 32], sequence: 1, receipt: Some(b"receipt".to_vec()) };
//! store.put_command_record(b"principal", b"idempotency-key", &record, 1_800_000_000)?;
//! let stored = store.get_command_record(b"principal", b"idempotency-key")?.expect("just stored");
//! assert_eq!(stored.receipt.as_deref(), Some(&b"receipt"[..]));
//! store.prune_command_log(1024)?;
//! # Ok(())
//! # }
//! ```

mod automation;
mod bindings;
mod command_log;
mod device_secrets;
mod error;
mod identity;
mod key_store;
mod offline_devices;
mod schema;
mod settings;
mod shares;
mod store;
mod tickets;

pub use automation::TaskRecord;
pub use bindings::BindingRecord;
pub use command_log::CommandRecord;
pub use error::StoreError;
pub use identity::AccountDeviceRecord;
pub use key_store::{KeyStore, KeyStoreError, SecretName};
pub use offline_devices::OfflineDeviceRecord;
pub use schema::SCHEMA_VERSION;
pub use shares::{ShareGrantRecord, StoredInvite};
pub use store::{BUSY_TIMEOUT, DATABASE_FILE, DIRECTORY_MODE, FILE_MODE, Store};
pub use tickets::{MAX_TICKETS_PER_PEER, ResumptionTicket};

/// Converts a `u64` for an INTEGER column, which SQLite stores as `i64`.
fn to_sql_i64(value: u64, what: &'static str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::OutOfRange(what))
}

/// Reads back a value written by [`to_sql_i64`]; a negative one is corrupt.
fn from_sql_u64(value: i64, what: &'static str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::CorruptRecord(what))
}
