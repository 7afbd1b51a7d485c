//! Harness for device management (tether-devices, SPEC §16): the head
//! unit's `DeviceManager` answering request envelopes, and checking device
//! reports against the model.

use prost::Message;
use tether_devices::validate::{check_action, check_report, check_write};
use tether_devices::{
    Audience, Catalogue, Config, Control, DeviceManager, DeviceRef, LAMP_PRODUCT_MODEL, Output,
    Requester,
};
use tether_proto::v1::{
    DeviceEntry, DeviceValue, Envelope, GetDevice, InvokeAction, ListDevices, PropertyValue,
    PropertyValues, RenameDevice, ReorderDevices, Request, SetProperties, UnbindDevice,
    WatchDevices, device_value, envelope, request, response,
};
use tether_store::{BindingRecord, Store};

use super::{NOW, record, records};

/// The handle key of the fuzzed head unit: handles in the seeds stay valid.
const HANDLE_KEY: [u8; 32] = [0x4b; 32];
/// The bound lamp's and camera's keys.
const LAMP_KEY: [u8; 32] = [0xd1; 32];
const CAMERA_KEY: [u8; 32] = [0xd2; 32];
/// A grantee's share lists the camera only.
const SHARED: [[u8; 32]; 1] = [CAMERA_KEY];

fn binding(device_key: [u8; 32], product_model: u16, name: &str, sort_order: i64) -> BindingRecord {
    BindingRecord {
        device_key,
        certificate: vec![device_key[0]; 80],
        serial: u64::from(device_key[0]),
        product_model,
        name: name.into(),
        sort_order,
        firmware_version: Some("1.0.0".into()),
        ssid: None,
        bound_unix_s: NOW,
    }
}

/// A head unit with a bound lamp (online), a bound camera (offline) and an
/// offline lamp attached by cable, after its start-up scan.
fn head_unit() -> (Store, DeviceManager, DeviceRef) {
    let mut store = Store::open_in_memory().expect("an in-memory store");
    let mut manager = DeviceManager::new(Config::default(), Catalogue::builtin(), HANDLE_KEY);
    store
        .put_binding(&binding(LAMP_KEY, LAMP_PRODUCT_MODEL, "Lamp", 0))
        .expect("a binding");
    store
        .put_binding(&binding(
            CAMERA_KEY,
            tether_devices::CAMERA_PRODUCT_MODEL,
            "Camera",
            1,
        ))
        .expect("a binding");
    manager.start(0);
    let attached = manager
        .attach_offline(&mut store, LAMP_PRODUCT_MODEL, None, 0)
        .expect("a known model");
    manager
        .handle_seen(&store, DeviceRef::Bound(LAMP_KEY), 0)
        .expect("bound");
    drain(&mut manager);
    (store, manager, attached)
}

fn drain(manager: &mut DeviceManager) -> Vec<Output> {
    let mut outputs = Vec::new();
    loop {
        match manager.poll_output() {
            Output::Pending => return outputs,
            output => outputs.push(output),
        }
        assert!(outputs.len() < 10_000, "outputs never end");
    }
}

fn requester(selector: u8) -> Requester<'static> {
    match selector & 3 {
        0 => Requester::HeadUnit,
        2 => Requester::Grantee(&SHARED),
        _ => Requester::Member,
    }
}

/// `devices`: selector byte, then records.
///
/// Selector bit 2 clear: each record is an [`Envelope`] from the requester
/// picked by bits 0–1 (0 the head unit's screen, 2 a grantee sharing the
/// camera, else a member), answered by `DeviceManager::handle_envelope`.
/// Oracles: the answer echoes the request id and is a response or a coded
/// error; no one but the head unit's screen ever sees an offline device, in
/// an answer or an event (R12); every command and every accepted write
/// passes the model's checks; a grantee never changes a device outside its
/// share; a reorder answers with the same devices.
///
/// Bit 2 set: each record is a `PropertyValues` the bound lamp reports.
/// Oracle: an accepted report passes `check_report`, a refused one changes
/// nothing and queues nothing.
pub fn devices(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let (mut store, mut manager, attached) = head_unit();
    let lamp = tether_devices::lamp_model();
    if selector & 4 != 0 {
        for report in records(rest) {
            let Ok(report) = PropertyValues::decode(report) else {
                continue;
            };
            let accepted = manager
                .handle_properties(&store, DeviceRef::Bound(LAMP_KEY), &report.values, NOW)
                .is_ok();
            let outputs = drain(&mut manager);
            if accepted {
                for value in &report.values {
                    assert!(
                        check_report(&lamp, value.siid, value.piid, value.value.as_ref()).is_ok(),
                        "accepted an invalid report"
                    );
                }
            } else {
                assert!(outputs.is_empty(), "a refused report changed something");
            }
        }
        return;
    }
    let who = requester(selector);
    let hidden = manager.handle_of(&attached).to_vec();
    let mut now_ms = 0;
    for message in records(rest) {
        let Ok(request) = Envelope::decode(message) else {
            continue;
        };
        now_ms += 1_000;
        let before = listed(&mut manager, &mut store, who);
        let answer = manager.handle_envelope(&mut store, who, &request, now_ms);
        assert_eq!(answer.request_id, request.request_id);
        let outputs = drain(&mut manager);
        match &answer.body {
            Some(envelope::Body::Response(response)) => {
                let kind = response.kind.as_ref().expect("a response kind");
                check_response(kind, who, &hidden, &before);
            }
            Some(envelope::Body::Error(error)) => assert_ne!(error.code, 0, "an uncoded error"),
            other => panic!("answered with {other:?}"),
        }
        for output in &outputs {
            check_output(output, &store);
        }
        if let Requester::Grantee(_) = who {
            // The share lists the camera only: the lamp is untouched.
            let lamp = store
                .get_binding(&LAMP_KEY)
                .expect("store")
                .expect("a grantee cannot unbind the lamp");
            assert_eq!((lamp.name.as_str(), lamp.sort_order), ("Lamp", 0));
        }
    }
}

fn listed(manager: &mut DeviceManager, store: &mut Store, who: Requester<'_>) -> Vec<DeviceEntry> {
    match manager.handle_request(store, who, &request::Kind::ListDevices(ListDevices {}), 0) {
        Ok(response::Kind::DeviceList(list)) => list.devices,
        other => panic!("listing failed: {other:?}"),
    }
}

fn check_response(
    kind: &response::Kind,
    who: Requester<'_>,
    hidden: &[u8],
    before: &[DeviceEntry],
) {
    let remote = who != Requester::HeadUnit;
    let entries: Vec<&DeviceEntry> = match kind {
        response::Kind::DeviceList(list) => list.devices.iter().collect(),
        response::Kind::DeviceDetails(details) => details.device.iter().collect(),
        response::Kind::ControlAccepted(_) => Vec::new(),
        other => panic!("not a management response: {other:?}"),
    };
    for entry in entries {
        assert!(
            !(remote && (entry.offline_attached || entry.handle == hidden)),
            "an offline device reached another terminal (R12)"
        );
    }
    if let response::Kind::DeviceList(list) = kind {
        // Lists shrink by unbinding only; they never gain a device.
        assert!(list.devices.len() <= before.len());
        assert!(
            list.devices
                .iter()
                .all(|e| before.iter().any(|b| b.handle == e.handle)),
            "a device appeared from nowhere"
        );
    }
}

fn check_output(output: &Output, store: &Store) {
    let catalogue = Catalogue::builtin();
    match output {
        Output::Event(update) => {
            if update.device.is_offline_attached() {
                assert_eq!(update.audience, Audience::HeadUnit, "synced (R12)");
            }
        }
        Output::Command(command) => {
            let product_model = match command.device {
                DeviceRef::Bound(key) => {
                    store
                        .get_binding(&key)
                        .expect("store")
                        .expect("a command for a stored device")
                        .product_model
                }
                DeviceRef::Offline(id) => {
                    store
                        .get_offline_device(id)
                        .expect("store")
                        .expect("a command for a stored device")
                        .product_model
                }
            };
            let model = catalogue.get(product_model).expect("a known model");
            match &command.control {
                Control::SetProperties(values) => {
                    for v in values {
                        assert!(
                            check_write(model, v.siid, v.piid, v.value.as_ref()).is_ok(),
                            "an invalid write reached a device"
                        );
                    }
                }
                Control::InvokeAction {
                    siid,
                    aiid,
                    arguments,
                } => assert!(check_action(model, *siid, *aiid, arguments).is_ok()),
            }
        }
        Output::Scan(_) | Output::Forget(_) | Output::Pending => {}
    }
}

fn request_envelope(id: u64, kind: request::Kind) -> Vec<u8> {
    Envelope {
        request_id: id,
        body: Some(envelope::Body::Request(Request { kind: Some(kind) })),
        ..Envelope::default()
    }
    .encode_to_vec()
}

fn value(kind: device_value::Kind) -> Option<DeviceValue> {
    Some(DeviceValue { kind: Some(kind) })
}

/// Seeds: a whole session of every request kind from each requester, with
/// real handles, and a lamp's reports.
pub(super) fn seeds(add: &mut dyn FnMut(&'static str, &str, Vec<u8>)) {
    let (_, manager, attached) = head_unit();
    let lamp = manager.handle_of(&DeviceRef::Bound(LAMP_KEY)).to_vec();
    let camera = manager.handle_of(&DeviceRef::Bound(CAMERA_KEY)).to_vec();
    let offline = manager.handle_of(&attached).to_vec();
    let on = PropertyValue {
        siid: 2,
        piid: 1,
        value: value(device_value::Kind::BoolValue(true)),
    };
    let brightness = PropertyValue {
        siid: 2,
        piid: 2,
        value: value(device_value::Kind::UintValue(60)),
    };
    let session = |target: &[u8], order: Vec<Vec<u8>>| {
        [
            request::Kind::ListDevices(ListDevices {}),
            request::Kind::WatchDevices(WatchDevices {}),
            request::Kind::GetDevice(GetDevice {
                handle: target.to_vec(),
            }),
            request::Kind::SetProperties(SetProperties {
                handle: target.to_vec(),
                values: vec![on.clone(), brightness.clone()],
            }),
            request::Kind::InvokeAction(InvokeAction {
                handle: target.to_vec(),
                siid: 2,
                aiid: 1,
                arguments: Vec::new(),
            }),
            request::Kind::RenameDevice(RenameDevice {
                handle: target.to_vec(),
                name: "Reading lamp".into(),
            }),
            request::Kind::ReorderDevices(ReorderDevices { handles: order }),
            request::Kind::UnbindDevice(UnbindDevice {
                handle: target.to_vec(),
            }),
        ]
        .into_iter()
        .enumerate()
        .flat_map(|(i, kind)| record(&request_envelope(i as u64 + 1, kind)))
        .collect::<Vec<u8>>()
    };
    let mut head_unit = vec![0];
    head_unit.extend(session(
        &offline,
        vec![offline.clone(), camera.clone(), lamp.clone()],
    ));
    add("devices", "head_unit_offline_lamp", head_unit);
    let mut member = vec![1];
    member.extend(session(&lamp, vec![camera.clone(), lamp.clone()]));
    add("devices", "member_bound_lamp", member);
    let mut grantee = vec![2];
    grantee.extend(session(&lamp, vec![camera.clone()]));
    add("devices", "grantee_outside_share", grantee);

    let mut reports = vec![4];
    for values in [
        vec![on.clone(), brightness],
        vec![PropertyValue {
            siid: 2,
            piid: 5,
            value: value(device_value::Kind::FloatValue(36.5)),
        }],
        vec![PropertyValue {
            siid: 2,
            piid: 2,
            value: value(device_value::Kind::UintValue(0)),
        }],
    ] {
        reports.extend(record(&PropertyValues { values }.encode_to_vec()));
    }
    add("devices", "lamp_reports", reports);
}
