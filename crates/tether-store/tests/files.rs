//! The database file on disk: modes (R31), persistence, schema versions.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use rusqlite::Connection;
use tether_store::{DATABASE_FILE, SCHEMA_VERSION, Store, StoreError};

fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .expect("file exists")
        .permissions()
        .mode()
        & 0o777
}

fn sibling(dir: &Path, suffix: &str) -> std::path::PathBuf {
    dir.join(format!("{DATABASE_FILE}{suffix}"))
}

#[test]
fn store_is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<Store>();
}

#[test]
fn new_directory_is_0700_and_files_are_0600_r31() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("var").join("tether");
    let mut store = Store::open(&dir).unwrap();
    store.set_setting("interface", "wifi-only").unwrap();

    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&root.path().join("var")), 0o700);
    assert_eq!(mode(&dir.join(DATABASE_FILE)), 0o600);
    // With the connection open after a write, WAL mode keeps both siblings.
    for suffix in ["-wal", "-shm"] {
        let path = sibling(&dir, suffix);
        assert!(path.exists(), "{suffix} missing");
        assert_eq!(mode(&path), 0o600, "{suffix}");
    }
}

#[test]
fn existing_loose_files_are_tightened_to_0600_r31() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    // A database and an (empty) WAL left loose by an older run or a restore.
    let database = sibling(dir.path(), "");
    let wal = sibling(dir.path(), "-wal");
    fs::write(&wal, b"").unwrap();
    for path in [&database, &wal] {
        fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
    }

    let mut store = Store::open(dir.path()).unwrap();
    store.set_setting("a", "b").unwrap();
    for suffix in ["", "-wal", "-shm"] {
        assert_eq!(mode(&sibling(dir.path(), suffix)), 0o600, "{suffix:?}");
    }
}

#[test]
fn symlinked_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("elsewhere");
    fs::write(&target, b"").unwrap();
    std::os::unix::fs::symlink(&target, dir.path().join(DATABASE_FILE)).unwrap();
    assert!(Store::open(dir.path()).is_err());
}

#[test]
fn data_survives_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = Store::open(dir.path()).unwrap();
        store.set_setting("interface", "ethernet").unwrap();
        let record = tether_store::CommandRecord {
            command_digest: vec![1; 32],
            sequence: 1,
            receipt: Some(b"r".to_vec()),
        };
        store.put_command_record(b"p", b"k", &record, 10).unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(
        store.get_setting("interface").unwrap().as_deref(),
        Some("ethernet")
    );
    assert_eq!(
        store
            .get_command_record(b"p", b"k")
            .unwrap()
            .unwrap()
            .receipt,
        Some(b"r".to_vec())
    );
}

#[test]
fn new_database_has_current_schema_version_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    let raw = Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
    let version: u32 = raw.pragma_query_one(None, "user_version").unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let journal: String = raw.pragma_query_one(None, "journal_mode").unwrap();
    assert_eq!(journal, "wal");
}

/// Version 7 keys the command log by principal (SPEC §8.3): a version-6
/// file is migrated in place, its records kept under the empty principal
/// (no requester's), so sequence numbers keep increasing.
#[test]
fn a_version_6_command_log_migrates_keeping_its_records_under_no_principal() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    let path = dir.path().join(DATABASE_FILE);
    {
        // The version-6 table, with one record, as an older build left it
        // (and none of the later tables).
        let raw = Connection::open(&path).unwrap();
        raw.execute_batch(
            "DROP TABLE membership;
             DROP TABLE account_devices;
             DROP TABLE automation_counters;
             DROP TABLE command_log;
             CREATE TABLE command_log (
                 seq INTEGER PRIMARY KEY,
                 idempotency_key BLOB NOT NULL UNIQUE,
                 command_digest BLOB NOT NULL,
                 sequence INTEGER NOT NULL,
                 receipt BLOB,
                 recorded_unix_s INTEGER NOT NULL
             ) STRICT;
             INSERT INTO command_log
                 (idempotency_key, command_digest, sequence, receipt, recorded_unix_s)
                 VALUES (X'6b6b', X'01', 41, X'72', 10);
             PRAGMA user_version = 6;",
        )
        .unwrap();
    }
    let mut store = Store::open(dir.path()).unwrap();
    assert_eq!(store.last_command_sequence().unwrap(), 41);
    assert_eq!(
        store
            .get_command_record(b"", b"kk")
            .unwrap()
            .unwrap()
            .receipt,
        Some(b"r".to_vec())
    );
    assert!(store.get_command_record(b"p", b"kk").unwrap().is_none());
    let record = tether_store::CommandRecord {
        command_digest: vec![2; 32],
        sequence: 42,
        receipt: None,
    };
    store.put_command_record(b"p", b"kk", &record, 11).unwrap();
    assert_eq!(store.get_command_record(b"p", b"kk").unwrap(), Some(record));
    drop(store);
    let version: u32 = Connection::open(&path)
        .unwrap()
        .pragma_query_one(None, "user_version")
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
}

#[test]
fn a_version_7_database_migrates_to_empty_membership_tables() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    let path = dir.path().join(DATABASE_FILE);
    Connection::open(&path)
        .unwrap()
        .execute_batch(
            "DROP TABLE membership; DROP TABLE account_devices; DROP TABLE automation_counters;
             PRAGMA user_version = 7;",
        )
        .unwrap();
    drop(Store::open(dir.path()).unwrap());
    let raw = Connection::open(&path).unwrap();
    let rows: i64 = raw
        .query_row("SELECT count(*) FROM membership", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 0);
    let version: u32 = raw.pragma_query_one(None, "user_version").unwrap();
    assert_eq!(version, SCHEMA_VERSION);
}

#[test]
fn newer_schema_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    let path = dir.path().join(DATABASE_FILE);
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();

    let err = Store::open(dir.path()).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::NewerSchema { found, supported }
                if found == SCHEMA_VERSION + 1 && supported == SCHEMA_VERSION
        ),
        "{err:?}"
    );
    let version: u32 = Connection::open(&path)
        .unwrap()
        .pragma_query_one(None, "user_version")
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION + 1);
}

#[test]
fn a_file_that_is_not_a_database_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(DATABASE_FILE), [0xa5; 4096]).unwrap();
    assert!(matches!(
        Store::open(dir.path()),
        Err(StoreError::Sqlite(_))
    ));
}
