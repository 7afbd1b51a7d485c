//! Secrets in a platform key store instead of the SQLite file (R31).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tether_identity::{AccountAuthority, Credentials, DeviceKey, LocalAuthority, Role};
use tether_store::{KeyStore, KeyStoreError, SecretName, Store, StoreError};

const NOW: u64 = 1_800_000_000;

#[derive(Default)]
struct MemoryKeyStore {
    secrets: Mutex<HashMap<SecretName, Vec<u8>>>,
    fail: Mutex<bool>,
}

impl KeyStore for MemoryKeyStore {
    fn load(&self, name: SecretName) -> Result<Option<Vec<u8>>, KeyStoreError> {
        if *self.fail.lock().unwrap() {
            return Err(KeyStoreError("locked".into()));
        }
        Ok(self.secrets.lock().unwrap().get(&name).cloned())
    }
    fn save(&self, name: SecretName, secret: &[u8]) -> Result<(), KeyStoreError> {
        if *self.fail.lock().unwrap() {
            return Err(KeyStoreError("locked".into()));
        }
        self.secrets.lock().unwrap().insert(name, secret.to_vec());
        Ok(())
    }
    fn delete(&self, name: SecretName) -> Result<(), KeyStoreError> {
        self.secrets.lock().unwrap().remove(&name);
        Ok(())
    }
}

fn phone_with_authority() -> (LocalAuthority, Credentials) {
    let mut authority = LocalAuthority::generate().unwrap();
    let key = DeviceKey::generate().unwrap();
    let grant = authority
        .enroll(&key.enrollment_request(Role::Phone, [7; 16]), NOW)
        .unwrap();
    (
        authority,
        Credentials::from_grant(key, &grant, NOW).unwrap(),
    )
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every file of the store directory, concatenated (database, WAL, SHM).
fn all_file_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        out.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    out
}

#[test]
fn secrets_with_a_key_store_never_reach_the_file_r31() {
    let dir = tempfile::tempdir().unwrap();
    let key_store = Arc::new(MemoryKeyStore::default());
    let (authority, phone) = phone_with_authority();
    {
        let mut store = Store::open(dir.path()).unwrap();
        store.set_key_store(key_store.clone());
        store.save_identity(&phone).unwrap();
        store.save_authority(&authority.state()).unwrap();
    }
    let bytes = all_file_bytes(dir.path());
    let state = authority.state();
    for (name, secret) in [
        ("device key", phone.key().pkcs8().to_vec()),
        ("group key", phone.group_key().unwrap().as_bytes().to_vec()),
        ("authority key", state.signing_key_pkcs8.clone()),
    ] {
        assert!(
            !contains(&bytes, &secret),
            "{name} found in the store files"
        );
    }
    let held = key_store.secrets.lock().unwrap().len();
    assert_eq!(held, 4, "all four secrets are in the key store");

    let mut store = Store::open(dir.path()).unwrap();
    // Without the key store the secrets are unavailable, with a typed error.
    assert!(matches!(
        store.load_identity(),
        Err(StoreError::SecretUnavailable(SecretName::DeviceKey))
    ));
    store.set_key_store(key_store.clone());
    let restored = store.load_identity().unwrap().expect("identity restored");
    assert_eq!(restored.key().public_key(), phone.key().public_key());
    assert_eq!(
        restored.group_key().unwrap().as_bytes(),
        phone.group_key().unwrap().as_bytes()
    );
    let restored_authority = store.load_authority().unwrap().expect("authority restored");
    assert_eq!(
        restored_authority.signing_key_pkcs8,
        state.signing_key_pkcs8
    );
    assert_eq!(restored_authority.next_serial, state.next_serial);
}

#[test]
fn a_failing_key_store_is_a_typed_error_and_keeps_the_old_identity() {
    let dir = tempfile::tempdir().unwrap();
    let key_store = Arc::new(MemoryKeyStore::default());
    let mut store = Store::open(dir.path()).unwrap();
    store.set_key_store(key_store.clone());
    let (_, first) = phone_with_authority();
    store.save_identity(&first).unwrap();
    *key_store.fail.lock().unwrap() = true;
    let (_, second) = phone_with_authority();
    assert!(matches!(
        store.save_identity(&second),
        Err(StoreError::KeyStore(KeyStoreError(ref m))) if m == "locked"
    ));
    assert!(matches!(
        store.load_identity(),
        Err(StoreError::KeyStore(_))
    ));
    *key_store.fail.lock().unwrap() = false;
    let kept = store.load_identity().unwrap().unwrap();
    assert_eq!(kept.key().public_key(), first.key().public_key());
}

#[test]
fn a_key_store_without_the_secret_reports_which_one_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let key_store = Arc::new(MemoryKeyStore::default());
    let mut store = Store::open(dir.path()).unwrap();
    store.set_key_store(key_store.clone());
    let (_, phone) = phone_with_authority();
    store.save_identity(&phone).unwrap();
    key_store.delete(SecretName::GroupKey).unwrap();
    assert!(matches!(
        store.load_identity(),
        Err(StoreError::SecretUnavailable(SecretName::GroupKey))
    ));
}

#[test]
fn secrets_already_in_the_file_stay_readable_after_plugging_a_key_store() {
    let dir = tempfile::tempdir().unwrap();
    let (_, phone) = phone_with_authority();
    Store::open(dir.path())
        .unwrap()
        .save_identity(&phone)
        .unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    store.set_key_store(Arc::new(MemoryKeyStore::default()));
    let restored = store.load_identity().unwrap().unwrap();
    assert_eq!(restored.key().public_key(), phone.key().public_key());
}
