//! Offline devices attached physically (R12): records hold a model, a name,
//! an order and a firmware version, and nothing else; sort orders of both
//! device tables change together or not at all.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

use tether_store::{BindingRecord, OfflineDeviceRecord, Store};

#[test]
fn offline_devices_are_added_listed_renamed_and_removed_r12() {
    let dir = tempfile::tempdir().unwrap();
    let (lamp, camera) = {
        let mut store = Store::open(dir.path()).unwrap();
        let lamp = store
            .add_offline_device(0x1a2b, "Lamp", 1, Some("1.0.0"))
            .unwrap();
        let camera = store.add_offline_device(0x1a2c, "Camera", 0, None).unwrap();
        assert_ne!(lamp, camera);
        (lamp, camera)
    };
    let mut store = Store::open(dir.path()).unwrap();
    assert_eq!(
        store.list_offline_devices().unwrap(),
        [
            OfflineDeviceRecord {
                local_id: camera,
                product_model: 0x1a2c,
                name: "Camera".into(),
                sort_order: 0,
                firmware_version: None,
            },
            OfflineDeviceRecord {
                local_id: lamp,
                product_model: 0x1a2b,
                name: "Lamp".into(),
                sort_order: 1,
                firmware_version: Some("1.0.0".into()),
            },
        ]
    );
    assert!(store.rename_offline_device(lamp, "Boot light").unwrap());
    assert!(
        store
            .set_offline_device_firmware(lamp, Some("1.1.0"))
            .unwrap()
    );
    let record = store.get_offline_device(lamp).unwrap().unwrap();
    assert_eq!(record.name, "Boot light");
    assert_eq!(record.firmware_version.as_deref(), Some("1.1.0"));
    assert!(store.remove_offline_device(camera).unwrap());
    assert!(!store.remove_offline_device(camera).unwrap());
    assert!(!store.rename_offline_device(camera, "x").unwrap());
    assert_eq!(store.get_offline_device(camera).unwrap(), None);
}

#[test]
fn sort_orders_of_both_tables_change_together_or_not_at_all() {
    let mut store = Store::open_in_memory().unwrap();
    store
        .put_binding(&BindingRecord {
            device_key: [1; 32],
            certificate: vec![1; 80],
            serial: 1,
            product_model: 0x1a2b,
            name: "Bound".into(),
            sort_order: 0,
            firmware_version: None,
            ssid: None,
            bound_unix_s: 1_800_000_000,
        })
        .unwrap();
    let offline = store
        .add_offline_device(0x1a2b, "Offline", 1, None)
        .unwrap();
    assert!(
        store
            .set_device_sort_orders(&[([1; 32], 5)], &[(offline, 4)])
            .unwrap()
    );
    assert_eq!(store.get_binding(&[1; 32]).unwrap().unwrap().sort_order, 5);
    assert_eq!(
        store
            .get_offline_device(offline)
            .unwrap()
            .unwrap()
            .sort_order,
        4
    );
    // An unknown device: nothing changes.
    assert!(
        !store
            .set_device_sort_orders(&[([1; 32], 9)], &[(offline + 100, 9)])
            .unwrap()
    );
    assert_eq!(store.get_binding(&[1; 32]).unwrap().unwrap().sort_order, 5);
    assert!(store.rename_binding(&[1; 32], "Renamed").unwrap());
    assert!(store.set_binding_firmware(&[1; 32], Some("2")).unwrap());
    assert!(!store.rename_binding(&[2; 32], "Nobody").unwrap());
    let bound = store.get_binding(&[1; 32]).unwrap().unwrap();
    assert_eq!(
        (bound.name.as_str(), bound.firmware_version.as_deref()),
        ("Renamed", Some("2"))
    );
}
