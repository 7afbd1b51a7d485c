//! Identity and authority persistence, including bad bytes on disk.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

use rusqlite::{Connection, params};
use tether_identity::{
    AccountAuthority, Credentials, DeviceKey, LocalAuthority, Role, verify_signature,
};
use tether_store::{DATABASE_FILE, Store, StoreError};

const NOW: u64 = 1_800_000_000;

fn enroll(authority: &mut LocalAuthority, role: Role) -> Credentials {
    let key = DeviceKey::generate().expect("system random source");
    let grant = authority
        .enroll(&key.enrollment_request(role, [7; 16]), NOW)
        .expect("valid request");
    Credentials::from_grant(key, &grant, NOW).expect("grant for this key")
}

/// A store on disk with an enrolled phone identity; returns the directory.
fn enrolled_store() -> (tempfile::TempDir, Credentials) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut authority = LocalAuthority::generate().expect("system random source");
    let phone = enroll(&mut authority, Role::Phone);
    Store::open(dir.path())
        .and_then(|mut store| store.save_identity(&phone))
        .expect("fresh store accepts an identity");
    (dir, phone)
}

/// A second, plain SQLite connection to tamper with the file.
fn raw(dir: &tempfile::TempDir) -> Connection {
    Connection::open(dir.path().join(DATABASE_FILE)).expect("database exists")
}

#[test]
fn restored_credentials_sign_for_the_original_public_key() {
    let (dir, phone) = enrolled_store();
    let restored = Store::open(dir.path())
        .unwrap()
        .load_identity()
        .unwrap()
        .expect("identity was saved");

    let signature = restored.key().sign(b"challenge");
    assert!(verify_signature(
        &phone.key().public_key(),
        b"challenge",
        &signature
    ));
    assert_eq!(restored.certificate(), phone.certificate());
    assert_eq!(restored.certificate_message(), phone.certificate_message());
    assert_eq!(
        restored.authority_public_key(),
        phone.authority_public_key()
    );
    assert_eq!(restored.group_key(), phone.group_key());
    assert_eq!(restored.role(), Role::Phone);
}

#[test]
fn smart_device_identity_round_trips_without_group_key() {
    let mut authority = LocalAuthority::generate().unwrap();
    let lamp = enroll(&mut authority, Role::Device);
    let mut store = Store::open_in_memory().unwrap();
    store.save_identity(&lamp).unwrap();
    let restored = store.load_identity().unwrap().unwrap();
    assert!(restored.group_key().is_none());
    assert_eq!(restored.certificate(), lamp.certificate());
}

#[test]
fn unenrolled_device_keeps_its_key_and_has_no_identity() {
    let mut store = Store::open_in_memory().unwrap();
    assert!(store.load_device_key().unwrap().is_none());
    assert!(store.load_identity().unwrap().is_none());

    let key = DeviceKey::generate().unwrap();
    store.save_device_key(&key).unwrap();
    assert_eq!(
        store.load_device_key().unwrap().unwrap().public_key(),
        key.public_key()
    );
    assert!(store.load_identity().unwrap().is_none());
}

#[test]
fn enrolled_device_key_is_the_identity_key() {
    let mut authority = LocalAuthority::generate().unwrap();
    let car = enroll(&mut authority, Role::Vehicle);
    let mut store = Store::open_in_memory().unwrap();
    store.save_identity(&car).unwrap();
    assert_eq!(
        store.load_device_key().unwrap().unwrap().public_key(),
        car.key().public_key()
    );
}

#[test]
fn saving_a_new_device_key_drops_the_old_certificate() {
    let mut authority = LocalAuthority::generate().unwrap();
    let car = enroll(&mut authority, Role::Vehicle);
    let mut store = Store::open_in_memory().unwrap();
    store.save_identity(&car).unwrap();
    store
        .save_device_key(&DeviceKey::generate().unwrap())
        .unwrap();
    assert!(store.load_identity().unwrap().is_none());
}

#[test]
fn authority_state_round_trips_and_keeps_issuing() {
    let dir = tempfile::tempdir().unwrap();
    let mut authority = LocalAuthority::generate().unwrap();
    enroll(&mut authority, Role::Vehicle);
    Store::open(dir.path())
        .unwrap()
        .save_authority(&authority.state())
        .unwrap();

    let store = Store::open(dir.path()).unwrap();
    let state = store
        .load_authority()
        .unwrap()
        .expect("authority was saved");
    assert_eq!(state.signing_key_pkcs8, authority.state().signing_key_pkcs8);
    assert_eq!(state.group_key, authority.state().group_key);
    assert_eq!(state.next_serial, 2);

    let mut restored = LocalAuthority::restore(&state).unwrap();
    assert_eq!(restored.public_key(), authority.public_key());
    let phone = enroll(&mut restored, Role::Phone);
    assert_eq!(phone.certificate().serial, 2);
}

#[test]
fn no_authority_is_none() {
    assert!(
        Store::open_in_memory()
            .unwrap()
            .load_authority()
            .unwrap()
            .is_none()
    );
}

#[test]
fn corrupted_identity_row_is_corrupt_record_not_panic() {
    let cases: [(&str, &[u8]); 5] = [
        ("device_key", b"junk"),
        ("certificate", &[0xff; 3]),
        ("certificate", &[0xff; 600]),
        ("authority_public_key", &[1; 31]),
        ("group_key", &[1; 5]),
    ];
    for (column, bytes) in cases {
        let (dir, _) = enrolled_store();
        raw(&dir)
            .execute(
                &format!("UPDATE identity SET {column} = ?1 WHERE id = 1"),
                params![bytes],
            )
            .unwrap();
        let store = Store::open(dir.path()).unwrap();
        let err = store.load_identity().unwrap_err();
        assert!(
            matches!(err, StoreError::CorruptRecord(_)),
            "{column}: {err:?}"
        );
    }
}

#[test]
fn corrupted_device_key_alone_is_corrupt_record() {
    let (dir, _) = enrolled_store();
    raw(&dir)
        .execute("UPDATE identity SET device_key = x'00'", [])
        .unwrap();
    let err = Store::open(dir.path())
        .unwrap()
        .load_device_key()
        .unwrap_err();
    assert!(matches!(err, StoreError::CorruptRecord(_)), "{err:?}");
}

#[test]
fn certificate_with_bad_signature_is_an_identity_error() {
    let (dir, phone) = enrolled_store();
    let mut certificate = phone.certificate_message().clone();
    certificate.signature[0] ^= 1;
    raw(&dir)
        .execute(
            "UPDATE identity SET certificate = ?1",
            params![prost::Message::encode_to_vec(&certificate)],
        )
        .unwrap();
    let err = Store::open(dir.path())
        .unwrap()
        .load_identity()
        .unwrap_err();
    assert!(matches!(err, StoreError::Identity(_)), "{err:?}");
}

#[test]
fn certificate_for_another_key_is_an_identity_error() {
    let (dir, _) = enrolled_store();
    let other = DeviceKey::generate().unwrap();
    raw(&dir)
        .execute(
            "UPDATE identity SET device_key = ?1",
            params![other.pkcs8()],
        )
        .unwrap();
    let err = Store::open(dir.path())
        .unwrap()
        .load_identity()
        .unwrap_err();
    assert!(matches!(err, StoreError::Identity(_)), "{err:?}");
}

#[test]
fn corrupted_authority_row_is_corrupt_record() {
    let cases = [
        "UPDATE authority SET group_key = x'0102'",
        "UPDATE authority SET signing_key = x'0102'",
        "UPDATE authority SET next_serial = -1",
    ];
    for sql in cases {
        let dir = tempfile::tempdir().unwrap();
        let authority = LocalAuthority::generate().unwrap();
        Store::open(dir.path())
            .unwrap()
            .save_authority(&authority.state())
            .unwrap();
        raw(&dir).execute(sql, []).unwrap();
        let err = Store::open(dir.path())
            .unwrap()
            .load_authority()
            .unwrap_err();
        assert!(
            matches!(err, StoreError::CorruptRecord(_)),
            "{sql}: {err:?}"
        );
    }
}

#[test]
fn value_of_wrong_type_cannot_be_stored() {
    let (dir, _) = enrolled_store();
    // STRICT tables: a text key is refused by SQLite itself.
    assert!(
        raw(&dir)
            .execute("UPDATE identity SET device_key = 'text'", [])
            .is_err()
    );
}

#[test]
fn revocation_list_and_previous_group_key_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut authority = LocalAuthority::generate().unwrap();
    let watch = enroll(&mut authority, Role::Watch);
    let old = watch.group_key().unwrap();
    Store::open(dir.path())
        .unwrap()
        .save_identity(&watch)
        .unwrap();
    // A store from before the removal has no membership row: no list.
    let before = Store::open(dir.path())
        .unwrap()
        .load_identity()
        .unwrap()
        .unwrap();
    assert_eq!(before.revocation_serial(), 0);
    let (list, key) = authority.remove_devices(None, &[[1; 32]], NOW).unwrap();
    watch.adopt(&list, Some(key.as_bytes())).unwrap();
    Store::open(dir.path())
        .unwrap()
        .save_membership(&watch)
        .unwrap();
    let restored = Store::open(dir.path())
        .unwrap()
        .load_identity()
        .unwrap()
        .unwrap();
    assert_eq!(restored.revocation_serial(), 1);
    assert_eq!(restored.group_key_epoch(), 1);
    assert!(restored.is_revoked(&[1; 32]));
    assert_eq!(restored.group_key(), Some(key));
    assert_eq!(restored.previous_group_key(NOW), Some(old));
    // A tampered list on disk is a corrupt record, not a panic.
    raw(&dir)
        .execute(
            "UPDATE membership SET revocation_list = X'0a0201'",
            params![],
        )
        .unwrap();
    assert!(matches!(
        Store::open(dir.path()).unwrap().load_identity(),
        Err(StoreError::CorruptRecord(_))
    ));
}
