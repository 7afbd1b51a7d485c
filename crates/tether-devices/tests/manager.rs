//! The management core driven in memory: every request kind and its failure
//! paths, reorder validation, presence across scans (R17), unbind (R14),
//! what each requester sees (R12, R16), handles.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

mod common;

use common::*;
use tether_devices::{
    Audience, Control, DeviceCommand, DeviceError, DeviceRef, HANDLE_BYTES, LAMP_PRODUCT_MODEL,
    MAX_NAME_BYTES, OrderError, Output, Requester, ScanReason,
};
use tether_proto::v1::{
    Envelope, ErrorCode, GetDevice, InvokeAction, ListDevices, Ping, RenameDevice, ReorderDevices,
    Request, SetProperties, UnbindDevice, WatchDevices, device_event, envelope, request, response,
};

/// Values to write, and the refusal they must get.
type Refusal = (
    Vec<tether_proto::v1::PropertyValue>,
    fn(&DeviceError) -> bool,
);

const LAMP: DeviceRef = DeviceRef::Bound(LAMP_KEY);
const CAMERA: DeviceRef = DeviceRef::Bound(CAMERA_KEY);

fn set(handle: &[u8], values: Vec<tether_proto::v1::PropertyValue>) -> request::Kind {
    request::Kind::SetProperties(SetProperties {
        handle: handle.to_vec(),
        values,
    })
}

fn events(outputs: &[Output]) -> Vec<(DeviceRef, Audience, device_event::Kind)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Event(u) => Some((u.device, u.audience, u.event.kind.clone().unwrap())),
            _ => None,
        })
        .collect()
}

#[test]
fn list_shows_bound_devices_in_order_without_keys_r14() {
    let mut store = store_with_bound_devices();
    let mut m = manager();
    let entries = list(&mut m, &mut store, Requester::Member);
    assert_eq!(names(&entries), ["Desk lamp", "Dashcam"]);
    let lamp = &entries[0];
    assert_eq!(lamp.product_model, u32::from(LAMP_PRODUCT_MODEL));
    assert_eq!(lamp.firmware_version, "1.0.0");
    assert!(!lamp.online && !lamp.offline_attached);
    // The handle is opaque: 16 bytes, not the key or a part of it.
    assert_eq!(lamp.handle.len(), HANDLE_BYTES);
    assert!(
        !LAMP_KEY
            .windows(4)
            .any(|w| lamp.handle.windows(4).any(|h| h == w))
    );
    assert_eq!(lamp.handle, m.handle_of(&LAMP).to_vec());
    // Another head unit (another handle key) gives other handles.
    let other = tether_devices::DeviceManager::new(
        Default::default(),
        tether_devices::Catalogue::builtin(),
        [0x77; 32],
    );
    assert_ne!(other.handle_of(&LAMP).to_vec(), lamp.handle);
    // WatchDevices starts with the same list.
    let watch = m
        .handle_request(
            &mut store,
            Requester::Member,
            &request::Kind::WatchDevices(WatchDevices {}),
            0,
        )
        .unwrap();
    assert!(matches!(watch, response::Kind::DeviceList(l) if l.devices == entries));
}

#[test]
fn get_device_shows_model_settings_and_reported_state_r14() {
    let mut store = store_with_bound_devices();
    let mut m = manager();
    let handle = m.handle_of(&LAMP).to_vec();
    m.handle_properties(
        &store,
        LAMP,
        &[prop(2, 1, bool_value(true)), prop(2, 2, uint_value(40))],
        5,
    )
    .unwrap();
    let get = request::Kind::GetDevice(GetDevice {
        handle: handle.clone(),
    });
    let response::Kind::DeviceDetails(details) = m
        .handle_request(&mut store, Requester::Member, &get, 6)
        .unwrap()
    else {
        panic!("details");
    };
    let entry = details.device.unwrap();
    assert_eq!((entry.name.as_str(), entry.online), ("Desk lamp", true));
    assert_eq!(details.model.unwrap(), tether_devices::lamp_model());
    assert_eq!(
        details.values,
        [prop(2, 1, bool_value(true)), prop(2, 2, uint_value(40))]
    );

    // Failure paths: a malformed handle, an unknown one.
    for (bad, code) in [
        (vec![1, 2, 3], ErrorCode::BadRequest),
        (vec![0; HANDLE_BYTES], ErrorCode::NotFound),
    ] {
        let err = m
            .handle_request(
                &mut store,
                Requester::Member,
                &request::Kind::GetDevice(GetDevice { handle: bad }),
                7,
            )
            .unwrap_err();
        assert_eq!(err.code(), code);
    }
}

#[test]
fn set_properties_checks_then_queues_a_command_r14() {
    let mut store = store_with_bound_devices();
    let mut m = manager();
    m.start(0);
    let handle = m.handle_of(&LAMP).to_vec();

    // Offline until seen: a valid write is refused as "retry later".
    let err = m
        .handle_request(
            &mut store,
            Requester::Member,
            &set(&handle, vec![prop(2, 1, bool_value(true))]),
            1,
        )
        .unwrap_err();
    assert!(matches!(err, DeviceError::Offline));
    assert_eq!(err.code(), ErrorCode::Busy);

    m.handle_seen(&store, LAMP, 2).unwrap();
    drain(&mut m);
    let values = vec![prop(2, 1, bool_value(true)), prop(2, 2, uint_value(75))];
    let accepted = m
        .handle_request(
            &mut store,
            Requester::Member,
            &set(&handle, values.clone()),
            3,
        )
        .unwrap();
    let response::Kind::ControlAccepted(accepted) = accepted else {
        panic!("accepted");
    };
    assert_eq!(
        drain(&mut m),
        [Output::Command(DeviceCommand {
            id: accepted.command_id,
            device: LAMP,
            control: Control::SetProperties(values),
        })]
    );

    // Every refusal is typed and queues nothing.
    let refusals: Vec<Refusal> = vec![
        (vec![], |e| matches!(e, DeviceError::ValueCount)),
        (vec![prop(2, 1, bool_value(true)); 33], |e| {
            matches!(e, DeviceError::ValueCount)
        }),
        (
            vec![prop(2, 1, bool_value(true)), prop(2, 1, bool_value(false))],
            |e| matches!(e, DeviceError::DuplicateProperty { siid: 2, piid: 1 }),
        ),
        (vec![prop(2, 9, bool_value(true))], |e| {
            matches!(e, DeviceError::UnknownProperty { siid: 2, piid: 9 })
        }),
        (vec![prop(2, 5, float_value(1.0))], |e| {
            matches!(e, DeviceError::ReadOnly { siid: 2, piid: 5 })
        }),
        (vec![prop(2, 2, uint_value(0))], |e| {
            matches!(e, DeviceError::OutOfRange { siid: 2, piid: 2 })
        }),
        (vec![prop(2, 2, bool_value(true))], |e| {
            matches!(e, DeviceError::WrongFormat { siid: 2, piid: 2 })
        }),
    ];
    for (values, expected) in refusals {
        let err = m
            .handle_request(&mut store, Requester::Member, &set(&handle, values), 4)
            .unwrap_err();
        assert!(expected(&err), "{err:?}");
        assert_eq!(drain(&mut m), [], "a refused write queued something");
    }

    // A device of an unknown product can be listed but not controlled.
    store
        .put_binding(&binding([0xee; 32], 0x7777, "Mystery", 5))
        .unwrap();
    let mystery = DeviceRef::Bound([0xee; 32]);
    m.handle_seen(&store, mystery, 5).unwrap();
    let err = m
        .handle_request(
            &mut store,
            Requester::Member,
            &set(
                &m.handle_of(&mystery).to_vec(),
                vec![prop(2, 1, bool_value(true))],
            ),
            6,
        )
        .unwrap_err();
    assert!(matches!(err, DeviceError::UnknownModel(0x7777)));
}

#[test]
fn invoke_action_checks_then_queues_a_command_r14() {
    let mut store = store_with_bound_devices();
    let mut m = manager();
    m.handle_seen(&store, LAMP, 0).unwrap();
    drain(&mut m);
    let handle = m.handle_of(&LAMP).to_vec();
    let invoke = |siid, aiid, arguments| {
        request::Kind::InvokeAction(InvokeAction {
            handle: handle.clone(),
            siid,
            aiid,
            arguments,
        })
    };
    let response::Kind::ControlAccepted(accepted) = m
        .handle_request(&mut store, Requester::Member, &invoke(2, 1, vec![]), 1)
        .unwrap()
    else {
        panic!("accepted");
    };
    assert_eq!(
        drain(&mut m),
        [Output::Command(DeviceCommand {
            id: accepted.command_id,
            device: LAMP,
            control: Control::InvokeAction {
                siid: 2,
                aiid: 1,
                arguments: vec![],
            },
        })]
    );
    assert!(matches!(
        m.handle_request(&mut store, Requester::Member, &invoke(2, 2, vec![]), 2),
        Err(DeviceError::UnknownAction { siid: 2, aiid: 2 })
    ));
    assert!(matches!(
        m.handle_request(
            &mut store,
            Requester::Member,
            &invoke(2, 1, vec![bool_value(true).unwrap()]),
            3
        ),
        Err(DeviceError::WrongArguments { .. })
    ));
    assert_eq!(drain(&mut m), []);
}

#[test]
fn rename_stores_the_name_and_tells_watchers_r14() {
    let mut store = store_with_bound_devices();
    let mut m = manager();
    let handle = m.handle_of(&LAMP).to_vec();
    let rename = |name: &str| {
        request::Kind::RenameDevice(RenameDevice {
            handle: handle.clone(),
            name: name.into(),
        })
    };
    let response::Kind::DeviceList(after) = m
        .handle_request(&mut store, Requester::Member, &rename("Reading lamp"), 0)
        .unwrap()
    else {
        panic!("list");
    };
    assert_eq!(names(&after.devices), ["Reading lamp", "Dashcam"]);
    assert_eq!(
        store.get_binding(&LAMP_KEY).unwrap().unwrap().name,
        "Reading lamp"
    );
    let changed = events(&drain(&mut m));
    assert!(matches!(
        &changed[..],
        [(LAMP, Audience::Members, device_event::Kind::Changed(e))] if e.name == "Reading lamp"
    ));
    for bad in ["", "tab\there", &"x".repeat(MAX_NAME_BYTES + 1)] {
        assert!(matches!(
            m.handle_request(&mut store, Requester::Member, &rename(bad), 1),
            Err(DeviceError::BadName)
        ));
    }
    m.handle_request(
        &mut store,
        Requester::Member,
        &rename(&"é".repeat(MAX_NAME_BYTES / 2)),
        2,
    )
    .unwrap();
}

#[test]
fn reorder_takes_a_full_permutation_only_r14() {
    let mut store = store_with_bound_devices();
    store
        .put_binding(&binding([0xa3; 32], LAMP_PRODUCT_MODEL, "Porch", 2))
        .unwrap();
    let mut m = manager();
    let entries = list(&mut m, &mut store, Requester::Member);
    let [lamp, camera, porch] = [0, 1, 2].map(|i| entries[i].handle.clone());
    let reorder = |handles: Vec<Vec<u8>>| request::Kind::ReorderDevices(ReorderDevices { handles });

    let refusals = [
        (
            vec![lamp.clone(), camera.clone()],
            OrderError::WrongLength {
                expected: 3,
                got: 2,
            },
        ),
        (
            vec![lamp.clone(), camera.clone(), porch.clone(), porch.clone()],
            OrderError::WrongLength {
                expected: 3,
                got: 4,
            },
        ),
        (
            vec![lamp.clone(), camera.clone(), lamp.clone()],
            OrderError::Duplicate(2),
        ),
        (
            vec![lamp.clone(), vec![0; HANDLE_BYTES], porch.clone()],
            OrderError::UnknownHandle(1),
        ),
        (
            vec![lamp.clone(), vec![1, 2], porch.clone()],
            OrderError::UnknownHandle(1),
        ),
    ];
    for (handles, expected) in refusals {
        match m.handle_request(&mut store, Requester::Member, &reorder(handles), 0) {
            Err(DeviceError::BadOrder(got)) => assert_eq!(got, expected),
            other => panic!("expected {expected:?}, got {other:?}"),
        }
        assert_eq!(
            names(&list(&mut m, &mut store, Requester::Member)),
            ["Desk lamp", "Dashcam", "Porch"]
        );
    }
    assert_eq!(drain(&mut m), []);

    let response::Kind::DeviceList(after) = m
        .handle_request(
            &mut store,
            Requester::Member,
            &reorder(vec![porch, lamp, camera]),
            1,
        )
        .unwrap()
    else {
        panic!("list");
    };
    assert_eq!(names(&after.devices), ["Porch", "Desk lamp", "Dashcam"]);
    assert_eq!(
        after
            .devices
            .iter()
            .map(|e| e.sort_order)
            .collect::<Vec<_>>(),
        [0, 1, 2]
    );
    // The order survives: it is in the store.
    assert_eq!(
        names(&list(&mut manager(), &mut store, Requester::Member)),
        ["Porch", "Desk lamp", "Dashcam"]
    );
    assert_eq!(
        events(&drain(&mut m)).len(),
        3,
        "each moved device is a change"
    );
}

#[test]
fn unbind_deletes_the_record_and_asks_the_device_to_forget_r14() {
    let mut store = store_with_bound_devices();
    let mut m = manager();
    m.handle_seen(&store, LAMP, 0).unwrap();
    m.handle_properties(&store, LAMP, &[prop(2, 1, bool_value(true))], 0)
        .unwrap();
    drain(&mut m);
    let handle = m.handle_of(&LAMP).to_vec();
    let unbind = request::Kind::UnbindDevice(UnbindDevice {
        handle: handle.clone(),
    });
    let response::Kind::DeviceList(after) = m
        .handle_request(&mut store, Requester::Member, &unbind, 1)
        .unwrap()
    else {
        panic!("list");
    };
    assert_eq!(names(&after.devices), ["Dashcam"]);
    assert_eq!(
        store.get_binding(&LAMP_KEY).unwrap(),
        None,
        "record deleted"
    );
    assert!(!m.is_online(&LAMP));
    let outputs = drain(&mut m);
    assert_eq!(outputs[0], Output::Forget(LAMP));
    assert!(matches!(
        &events(&outputs)[..],
        [(LAMP, Audience::Members, device_event::Kind::Removed(_))]
    ));
    // The handle is dead now.
    assert!(matches!(
        m.handle_request(&mut store, Requester::Member, &unbind, 2),
        Err(DeviceError::UnknownDevice)
    ));
    assert!(matches!(
        m.handle_seen(&store, LAMP, 3),
        Err(DeviceError::UnknownDevice)
    ));
}

#[test]
fn start_asks_for_a_scan_and_everything_is_offline_until_seen_r17() {
    let mut store = store_with_bound_devices();
    let mut m = manager();
    m.start(1_000);
    assert_eq!(drain(&mut m), [Output::Scan(ScanReason::Startup)]);
    assert_eq!(m.last_scan_ms(), Some(1_000));
    assert!(
        list(&mut m, &mut store, Requester::Member)
            .iter()
            .all(|e| !e.online)
    );

    m.handle_seen(&store, LAMP, 1_100).unwrap();
    assert!(matches!(
        &events(&drain(&mut m))[..],
        [(LAMP, Audience::Members, device_event::Kind::Online(true))]
    ));
    // Seen again: no new event.
    m.handle_seen(&store, LAMP, 1_200).unwrap();
    assert_eq!(drain(&mut m), []);
    let entries = list(&mut m, &mut store, Requester::Member);
    assert_eq!(
        entries.iter().map(|e| e.online).collect::<Vec<_>>(),
        [true, false]
    );
    // Unseen for the presence timeout: offline again.
    assert_eq!(m.poll_timeout(), Some(1_200 + 90_000));
    m.handle_timeout(1_200 + 89_999);
    assert!(m.is_online(&LAMP));
    m.handle_timeout(1_200 + 90_000);
    assert!(!m.is_online(&LAMP));
    assert!(matches!(
        &events(&drain(&mut m))[..],
        [(LAMP, _, device_event::Kind::Online(false))]
    ));
    assert_eq!(m.poll_timeout(), None);
    // Lost explicitly.
    m.handle_seen(&store, CAMERA, 100_000).unwrap();
    m.handle_lost(CAMERA, 100_001);
    assert!(!m.is_online(&CAMERA));
}

#[test]
fn account_switch_scans_again_and_forgets_presence_and_state_r17() {
    let mut store = store_with_bound_devices();
    let mut m = manager();
    m.start(0);
    m.handle_properties(&store, LAMP, &[prop(2, 1, bool_value(true))], 10)
        .unwrap();
    m.handle_seen(&store, CAMERA, 10).unwrap();
    assert!(m.is_online(&LAMP) && m.is_online(&CAMERA));
    // Events still queued for the previous account's watchers are dropped.
    m.account_switched(20);
    assert_eq!(
        drain(&mut m),
        [
            Output::Scan(ScanReason::Startup),
            Output::Scan(ScanReason::AccountSwitch)
        ]
    );
    assert_eq!(m.last_scan_ms(), Some(20));
    assert!(!m.is_online(&LAMP) && !m.is_online(&CAMERA));
    let response::Kind::DeviceDetails(details) = m
        .handle_request(
            &mut store,
            Requester::Member,
            &request::Kind::GetDevice(GetDevice {
                handle: m.handle_of(&LAMP).to_vec(),
            }),
            21,
        )
        .unwrap()
    else {
        panic!("details");
    };
    assert!(details.values.is_empty(), "state from before the switch");
    assert!(
        list(&mut m, &mut store, Requester::Member)
            .iter()
            .all(|e| !e.online)
    );
}

#[test]
fn device_reports_become_events_only_when_valid_r14() {
    let store = store_with_bound_devices();
    let mut m = manager();
    // Only notify properties are announced; all are kept.
    m.handle_properties(
        &store,
        LAMP,
        &[
            prop(2, 2, uint_value(30)),
            prop(
                1,
                3,
                Some(tether_proto::v1::DeviceValue {
                    kind: Some(tether_proto::v1::device_value::Kind::StringValue(
                        "1.0.1".into(),
                    )),
                }),
            ),
        ],
        0,
    )
    .unwrap();
    let outputs = drain(&mut m);
    let evs = events(&outputs);
    assert!(matches!(evs[0].2, device_event::Kind::Online(true)));
    assert!(matches!(
        &evs[1].2,
        device_event::Kind::PropertiesChanged(p) if p.values == [prop(2, 2, uint_value(30))]
    ));
    // A bad report changes nothing.
    assert!(matches!(
        m.handle_properties(
            &store,
            LAMP,
            &[prop(2, 1, bool_value(false)), prop(2, 2, uint_value(0))],
            1
        ),
        Err(DeviceError::OutOfRange { .. })
    ));
    assert_eq!(drain(&mut m), []);
    m.handle_device_event(&store, LAMP, 2, 1, &[float_value(80.0).unwrap()], 2)
        .unwrap();
    assert!(matches!(
        &events(&drain(&mut m))[..],
        [(LAMP, Audience::Members, device_event::Kind::Event(e))] if e.eiid == 1
    ));
    assert!(m.handle_device_event(&store, LAMP, 2, 1, &[], 3).is_err());
    assert!(matches!(
        m.handle_properties(&store, DeviceRef::Bound([9; 32]), &[], 4),
        Err(DeviceError::UnknownDevice)
    ));
}

#[test]
fn firmware_upgrade_updates_the_record_r14() {
    let mut store = store_with_bound_devices();
    let mut m = manager();
    m.handle_firmware_installed(&mut store, LAMP, "2.0.0", 0)
        .unwrap();
    assert_eq!(
        store
            .get_binding(&LAMP_KEY)
            .unwrap()
            .unwrap()
            .firmware_version
            .as_deref(),
        Some("2.0.0")
    );
    assert!(matches!(
        &events(&drain(&mut m))[..],
        [(LAMP, Audience::Members, device_event::Kind::Changed(e))] if e.firmware_version == "2.0.0"
    ));
}

#[test]
fn a_grantee_sees_only_the_shared_devices_r16() {
    let mut store = store_with_bound_devices();
    let mut m = manager();
    let shared = [CAMERA_KEY];
    let entries = list(&mut m, &mut store, Requester::Grantee(&shared));
    assert_eq!(names(&entries), ["Dashcam"]);
    let lamp = m.handle_of(&LAMP).to_vec();
    assert!(matches!(
        m.handle_request(
            &mut store,
            Requester::Grantee(&shared),
            &request::Kind::UnbindDevice(UnbindDevice { handle: lamp }),
            0
        ),
        Err(DeviceError::UnknownDevice)
    ));
    assert!(store.get_binding(&LAMP_KEY).unwrap().is_some());
    // A grantee's reorder names its devices only; the others keep their places.
    m.handle_request(
        &mut store,
        Requester::Grantee(&shared),
        &request::Kind::ReorderDevices(ReorderDevices {
            handles: vec![entries[0].handle.clone()],
        }),
        1,
    )
    .unwrap();
    assert_eq!(
        names(&list(&mut m, &mut store, Requester::Member)),
        ["Desk lamp", "Dashcam"]
    );
}

#[test]
fn envelopes_get_responses_or_typed_errors() {
    let mut store = store_with_bound_devices();
    let mut m = manager();
    let request = |kind| Envelope {
        request_id: 42,
        body: Some(envelope::Body::Request(Request { kind: Some(kind) })),
        ..Default::default()
    };
    let answer = m.handle_envelope(
        &mut store,
        Requester::Member,
        &request(request::Kind::ListDevices(ListDevices {})),
        0,
    );
    assert_eq!(answer.request_id, 42);
    assert!(matches!(
        answer.body,
        Some(envelope::Body::Response(tether_proto::v1::Response {
            kind: Some(response::Kind::DeviceList(_))
        }))
    ));
    for (kind, code) in [
        (
            request::Kind::GetDevice(GetDevice {
                handle: vec![0; 16],
            }),
            ErrorCode::NotFound,
        ),
        (
            request::Kind::Ping(Ping { payload: vec![] }),
            ErrorCode::Unsupported,
        ),
    ] {
        let answer = m.handle_envelope(&mut store, Requester::Member, &request(kind), 0);
        let Some(envelope::Body::Error(error)) = answer.body else {
            panic!("an error");
        };
        assert_eq!(error.code, code as i32);
    }
    let not_a_request = Envelope::default();
    let answer = m.handle_envelope(&mut store, Requester::Member, &not_a_request, 0);
    assert!(matches!(
        answer.body,
        Some(envelope::Body::Error(e)) if e.code == ErrorCode::BadRequest as i32
    ));
}
