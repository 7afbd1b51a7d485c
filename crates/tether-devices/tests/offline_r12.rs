//! Offline devices attached physically (R12): viewed, controlled, renamed,
//! sorted, upgraded and unbound with no account, no personal data in the
//! store, and nothing for any other terminal.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

mod common;

use common::*;
use rusqlite::Connection;
use tether_devices::{
    Audience, CAMERA_PRODUCT_MODEL, DeviceError, DeviceRef, LAMP_PRODUCT_MODEL, Output, Requester,
};
use tether_proto::v1::{
    GetDevice, RenameDevice, ReorderDevices, SetProperties, UnbindDevice, request, response,
};
use tether_store::{DATABASE_FILE, Store};

/// Checks that nothing in `outputs` is meant for another terminal.
fn assert_nothing_for_other_terminals(outputs: &[Output]) {
    for output in outputs {
        if let Output::Event(update) = output {
            assert_eq!(
                update.audience,
                Audience::HeadUnit,
                "an offline device's event would reach members: {update:?}"
            );
            assert!(update.device.is_offline_attached());
        }
    }
}

#[test]
fn offline_devices_store_no_personal_data_r12() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let mut m = manager();
    m.start(0);
    let mut outputs = drain(&mut m);

    // Attach a lamp and a camera over a cable: no account, nothing bound.
    let lamp = m
        .attach_offline(&mut store, LAMP_PRODUCT_MODEL, Some("1.0.0"), 10)
        .unwrap();
    let camera = m
        .attach_offline(&mut store, CAMERA_PRODUCT_MODEL, None, 11)
        .unwrap();
    assert!(matches!(lamp, DeviceRef::Offline(_)));
    assert!(m.is_online(&lamp), "attached means present");
    let entries = list(&mut m, &mut store, Requester::HeadUnit);
    assert_eq!(names(&entries), ["Lamp", "In-car camera"]);
    assert!(entries.iter().all(|e| e.offline_attached && e.online));
    let lamp_handle = handle_named(&entries, "Lamp");
    let camera_handle = handle_named(&entries, "In-car camera");

    // View.
    let response::Kind::DeviceDetails(details) = m
        .handle_request(
            &mut store,
            Requester::HeadUnit,
            &request::Kind::GetDevice(GetDevice {
                handle: lamp_handle.clone(),
            }),
            12,
        )
        .unwrap()
    else {
        panic!("details");
    };
    assert_eq!(
        details.model.unwrap().product_model,
        u32::from(LAMP_PRODUCT_MODEL)
    );

    // Control.
    m.handle_request(
        &mut store,
        Requester::HeadUnit,
        &request::Kind::SetProperties(SetProperties {
            handle: lamp_handle.clone(),
            values: vec![prop(2, 1, bool_value(true)), prop(2, 2, uint_value(60))],
        }),
        13,
    )
    .unwrap();
    m.handle_properties(
        &store,
        lamp,
        &[prop(2, 1, bool_value(true)), prop(2, 2, uint_value(60))],
        14,
    )
    .unwrap();

    // Rename.
    m.handle_request(
        &mut store,
        Requester::HeadUnit,
        &request::Kind::RenameDevice(RenameDevice {
            handle: lamp_handle.clone(),
            name: "Boot light".into(),
        }),
        15,
    )
    .unwrap();

    // Sort.
    let response::Kind::DeviceList(sorted) = m
        .handle_request(
            &mut store,
            Requester::HeadUnit,
            &request::Kind::ReorderDevices(ReorderDevices {
                handles: vec![camera_handle.clone(), lamp_handle.clone()],
            }),
            16,
        )
        .unwrap()
    else {
        panic!("list");
    };
    assert_eq!(names(&sorted.devices), ["In-car camera", "Boot light"]);

    // Upgrade.
    m.handle_firmware_installed(&mut store, lamp, "1.1.0", 17)
        .unwrap();

    // Unbind the camera: its record goes, and it is told to forget.
    m.handle_request(
        &mut store,
        Requester::HeadUnit,
        &request::Kind::UnbindDevice(UnbindDevice {
            handle: camera_handle,
        }),
        18,
    )
    .unwrap();
    outputs.extend(drain(&mut m));
    assert!(outputs.contains(&Output::Forget(camera)));
    assert!(
        outputs
            .iter()
            .any(|o| matches!(o, Output::Command(c) if c.device == lamp))
    );

    // Nothing was queued for sync: every event is for the head unit's screen.
    assert_nothing_for_other_terminals(&outputs);

    // No other terminal sees them, even with the handle.
    assert!(list(&mut m, &mut store, Requester::Member).is_empty());
    assert!(list(&mut m, &mut store, Requester::Grantee(&[[0; 32]])).is_empty());
    assert!(matches!(
        m.handle_request(
            &mut store,
            Requester::Member,
            &request::Kind::GetDevice(GetDevice {
                handle: lamp_handle.clone()
            }),
            19
        ),
        Err(DeviceError::UnknownDevice)
    ));
    drop(store);

    // Inspect the file itself.
    let db = Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
    let tables: Vec<String> = db
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(tables.contains(&"offline_devices".to_owned()));
    for table in &tables {
        let rows: i64 = db
            .query_row(&format!("SELECT count(*) FROM \"{table}\""), [], |r| {
                r.get(0)
            })
            .unwrap();
        if table == "offline_devices" {
            assert_eq!(rows, 1, "the lamp only: the camera was unbound");
        } else {
            // No account key, device key, certificate, serial, SSID, binding
            // or setting was written for them anywhere.
            assert_eq!(rows, 0, "table {table} holds {rows} rows");
        }
    }
    // The offline table has no column that could hold personal data.
    let columns: Vec<String> = db
        .prepare("SELECT name FROM pragma_table_info('offline_devices')")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        columns,
        [
            "local_id",
            "product_model",
            "name",
            "sort_order",
            "firmware_version"
        ]
    );
    for banned in ["key", "cert", "serial", "ssid", "mac", "account", "address"] {
        assert!(
            columns.iter().all(|c| !c.contains(banned)),
            "offline_devices has a {banned} column"
        );
    }
    let row: (i64, String, i64, Option<String>) = db
        .query_row(
            "SELECT product_model, name, sort_order, firmware_version FROM offline_devices",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(
        row,
        (
            i64::from(LAMP_PRODUCT_MODEL),
            "Boot light".to_owned(),
            1,
            Some("1.1.0".to_owned())
        )
    );
    // The property values it reported were never written to disk.
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        bytes.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    assert!(
        !bytes.windows(13).any(|w| w == b"In-car camera"),
        "the unbound camera's record is still in the files (R30)"
    );
}

#[test]
fn offline_devices_survive_a_restart_but_start_offline_r12_r17() {
    let dir = tempfile::tempdir().unwrap();
    let lamp = {
        let mut store = Store::open(dir.path()).unwrap();
        let mut m = manager();
        m.start(0);
        m.attach_offline(&mut store, LAMP_PRODUCT_MODEL, None, 1)
            .unwrap()
    };
    let mut store = Store::open(dir.path()).unwrap();
    let mut m = manager();
    m.start(0);
    let entries = list(&mut m, &mut store, Requester::HeadUnit);
    assert_eq!(names(&entries), ["Lamp"]);
    assert!(!entries[0].online, "offline until the host sees it again");
    // Handles are stable under the same handle key.
    assert_eq!(entries[0].handle, m.handle_of(&lamp).to_vec());
    m.handle_seen(&store, lamp, 5).unwrap();
    // An attached device does not time out; the host reports a pulled cable.
    assert_eq!(m.poll_timeout(), None);
    m.handle_timeout(u64::MAX);
    assert!(m.is_online(&lamp));
    m.handle_lost(lamp, 6);
    assert!(!m.is_online(&lamp));
    assert_nothing_for_other_terminals(&drain(&mut m));
    // An unknown product cannot be attached.
    assert!(matches!(
        m.attach_offline(&mut store, 0x4242, None, 7),
        Err(DeviceError::UnknownModel(0x4242))
    ));
}
