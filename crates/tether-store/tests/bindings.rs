//! The head unit's binding records (R13): stored, listed in the user's
//! order, replaced, and deleted for good on unbind (R30).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

use tether_store::{BindingRecord, DATABASE_FILE, Store};

fn record(key: u8, name: &str, sort_order: i64) -> BindingRecord {
    BindingRecord {
        device_key: [key; 32],
        certificate: vec![key; 80],
        serial: u64::from(key),
        product_model: 0x1a2b,
        name: name.into(),
        sort_order,
        firmware_version: Some("1.0.3".into()),
        ssid: Some(b"Home".to_vec()),
        bound_unix_s: 1_800_000_000,
    }
}

#[test]
fn bindings_survive_a_restart_in_the_users_order_r13() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = Store::open(dir.path()).unwrap();
        store.put_binding(&record(1, "Porch light", 2)).unwrap();
        store.put_binding(&record(2, "Dashcam", 1)).unwrap();
        store.put_binding(&record(3, "Desk lamp", 2)).unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let names: Vec<String> = store
        .list_bindings()
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["Dashcam", "Desk lamp", "Porch light"]);
    assert_eq!(
        store.get_binding(&[2; 32]).unwrap(),
        Some(record(2, "Dashcam", 1))
    );
    assert_eq!(store.get_binding(&[9; 32]).unwrap(), None);
}

#[test]
fn renaming_replaces_the_record_of_the_same_device() {
    let mut store = Store::open_in_memory().unwrap();
    store.put_binding(&record(1, "Lamp", 0)).unwrap();
    store.put_binding(&record(1, "Reading lamp", 5)).unwrap();
    let all = store.list_bindings().unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].name, "Reading lamp");
    assert_eq!(all[0].sort_order, 5);
}

#[test]
fn unbinding_deletes_the_record_from_the_file_r13_r30() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    store
        .put_binding(&record(7, "Marker-Name-For-Unbind", 0))
        .unwrap();
    assert!(store.remove_binding(&[7; 32]).unwrap());
    assert!(!store.remove_binding(&[7; 32]).unwrap(), "already gone");
    assert!(store.list_bindings().unwrap().is_empty());
    drop(store);
    // secure_delete: the name is not left in free pages of any file.
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        bytes.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    let needle = b"Marker-Name-For-Unbind";
    assert!(
        !bytes.windows(needle.len()).any(|w| w == needle),
        "an unbound device's name is still in {}",
        DATABASE_FILE
    );
}
