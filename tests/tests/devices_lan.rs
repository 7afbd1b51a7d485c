//! Bound smart devices on the LAN, managed through the car (SPEC §12.6,
//! §16): a lamp bound to the owner's account advertises its own token, the
//! head unit finds it and opens a session with the device secret, a phone
//! lists, renames, reorders and controls it through the car, the car
//! upgrades its firmware, and unbinding makes the lamp forget its binding.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

use std::time::Duration;

use ring::digest::{SHA256, digest};
use tether_devices::LAMP_PRODUCT_MODEL;
use tether_identity::{DeviceKey, Role};
use tether_node::{
    DeviceNode, HeadUnit, NodeConfig, NodeError, Phone, ShareOptions, SharePermission,
};

mod support;
use tether_proto::v1::{
    DeviceValue, Envelope, ErrorCode, ListDevices, OtaManifest, PropertyValue, RenameDevice,
    ReorderDevices, Request, SetProperties, UnbindDevice, WatchDevices, device_value, envelope,
    request,
};
use tether_session::quic::{ClientSession, SessionError};

const SCAN: Duration = Duration::from_secs(15);

struct Lamp {
    node: DeviceNode,
    key: [u8; 32],
    vendor: DeviceKey,
}

/// A lamp bound to the owner's account as commissioning would leave it.
async fn bound_lamp(owner: &Phone, car: &HeadUnit, secret: [u8; 32], name: &str) -> Lamp {
    let key = DeviceKey::generate().unwrap();
    let public = key.public_key();
    let grant = owner
        .enroll_device(&key.enrollment_request(Role::Device, [1; 16]))
        .unwrap();
    let (node, vendor) = support::bind_lamp(car, key, &grant, secret, name).await;
    Lamp {
        node,
        key: public,
        vendor,
    }
}

async fn owner_and_car() -> (Phone, HeadUnit) {
    let (owner, car) = support::owner_and_enrolled_car();
    car.start().await.unwrap();
    (owner, car)
}

fn uint(v: u32) -> Option<DeviceValue> {
    Some(DeviceValue {
        kind: Some(device_value::Kind::UintValue(v)),
    })
}

fn value(values: &[PropertyValue], siid: u32, piid: u32) -> Option<device_value::Kind> {
    values
        .iter()
        .find(|v| v.siid == siid && v.piid == piid)
        .and_then(|v| v.value.clone())
        .and_then(|v| v.kind)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r13_r14_lamp_found_on_the_lan_then_listed_renamed_reordered_controlled() {
    let (owner, car) = owner_and_car().await;
    let lamp = bound_lamp(&owner, &car, [0x11; 32], "Desk lamp").await;
    let porch = bound_lamp(&owner, &car, [0x22; 32], "Porch light").await;
    assert_eq!(
        car.scan_devices(SCAN).await.unwrap(),
        2,
        "both lamps found by their tokens"
    );

    let link = owner.connect(car.address().await.unwrap()).await.unwrap();
    let list = link.list_devices().await.unwrap();
    assert_eq!(list.len(), 2);
    assert!(list.iter().all(|d| d.online && !d.offline_attached));
    // Handles are opaque: neither device key appears (SPEC §16.3).
    for d in &list {
        assert_ne!(d.handle.as_slice(), lamp.key.as_slice());
        assert_ne!(d.handle.as_slice(), porch.key.as_slice());
    }
    let desk = list
        .iter()
        .find(|d| d.name == "Desk lamp")
        .unwrap()
        .handle
        .clone();
    let porch_handle = list
        .iter()
        .find(|d| d.name == "Porch light")
        .unwrap()
        .handle
        .clone();

    // Control through the car reaches the lamp itself.
    link.set_device_properties(
        &desk,
        vec![PropertyValue {
            siid: 2,
            piid: 2,
            value: uint(40),
        }],
    )
    .await
    .unwrap();
    let mut on_lamp = None;
    for _ in 0..100 {
        on_lamp = value(&lamp.node.values(), 2, 2);
        if on_lamp == Some(device_value::Kind::UintValue(40)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(on_lamp, Some(device_value::Kind::UintValue(40)));
    link.invoke_device_action(&desk, 2, 1, Vec::new())
        .await
        .unwrap();
    for _ in 0..100 {
        if value(&lamp.node.values(), 2, 1) == Some(device_value::Kind::BoolValue(true)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        value(&lamp.node.values(), 2, 1),
        Some(device_value::Kind::BoolValue(true)),
        "toggle switched it on"
    );
    // Out of range is refused by the car before anything is sent.
    let refused = link
        .set_device_properties(
            &desk,
            vec![PropertyValue {
                siid: 2,
                piid: 2,
                value: uint(101),
            }],
        )
        .await;
    assert!(refused.is_err());
    assert_eq!(
        value(&lamp.node.values(), 2, 2),
        Some(device_value::Kind::UintValue(40))
    );

    // Rename and reorder.
    let renamed = link.rename_device(&desk, "Reading lamp").await.unwrap();
    assert!(renamed.iter().any(|d| d.name == "Reading lamp"));
    let reordered = link
        .reorder_devices(vec![porch_handle.clone(), desk.clone()])
        .await
        .unwrap();
    assert_eq!(reordered[0].handle, porch_handle);
    assert!(
        link.reorder_devices(vec![desk.clone()]).await.is_err(),
        "a partial order is refused"
    );

    // Unbind: the record goes, and the lamp forgets its binding (R13).
    let after = link.unbind_device(&desk).await.unwrap();
    assert_eq!(after.len(), 1);
    tokio::time::timeout(Duration::from_secs(5), lamp.node.unbound())
        .await
        .expect("the lamp was told to forget");
    assert!(!lamp.node.is_bound().unwrap());
    assert!(lamp.node.was_unbound());
    car.shutdown().await.unwrap();
}

fn manifest(vendor: &DeviceKey, image: &[u8], version: &str) -> OtaManifest {
    let mut m = OtaManifest {
        product_model: u32::from(LAMP_PRODUCT_MODEL),
        version: version.into(),
        size: image.len() as u64,
        sha256: digest(&SHA256, image).as_ref().to_vec(),
        signature: Vec::new(),
    };
    m.signature = vendor
        .sign(&tether_ota::manifest_signing_input(&m))
        .to_vec();
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r15_car_upgrades_the_lamp_over_its_lan_session_and_checks_the_battery() {
    let (owner, car) = owner_and_car().await;
    let lamp = bound_lamp(&owner, &car, [0x33; 32], "Lamp").await;
    assert_eq!(car.scan_devices(SCAN).await.unwrap(), 1);
    let handle = car.list_devices().await.unwrap()[0].handle.clone();
    let image: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let m = manifest(&lamp.vendor, &image, "2.0.0");

    // R15: the car's own state of charge gates the upgrade; no caller
    // passes a number in.
    car.set_simulated_battery(12.5).await.unwrap();
    assert_eq!(car.vehicle_battery_percent().await.unwrap(), 12);
    let low = car.upgrade_device(&handle, &m, image.clone(), |_| {}).await;
    assert!(
        matches!(low, Err(NodeError::Upgrade(ref e)) if e.to_string().contains("battery")),
        "R15: refused below the threshold: {low:?}"
    );
    assert!(lamp.node.installed_firmware().is_none());

    car.set_simulated_battery(80.0).await.unwrap();
    let mut last = 0.0;
    let report = car
        .upgrade_device(&handle, &m, image.clone(), |p| {
            assert!(p.percent() >= last);
            last = p.percent();
        })
        .await
        .unwrap();
    assert_eq!(report.version, "2.0.0");
    assert_eq!(last, 100.0);
    assert_eq!(lamp.node.installed_firmware().unwrap().image, image);
    let listed = car.list_devices().await.unwrap();
    assert_eq!(listed[0].firmware_version, "2.0.0");
    car.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r12_r16_r17_offline_devices_stay_on_the_car_grants_scope_devices_scan_after_switch() {
    let (owner, car) = owner_and_car().await;
    let lamp = bound_lamp(&owner, &car, [0x44; 32], "Lamp").await;
    assert_eq!(car.scan_devices(SCAN).await.unwrap(), 1);

    // R12: an offline device attached to the car is listed on its screen
    // only, never to a phone.
    let offline = car
        .attach_offline_device(LAMP_PRODUCT_MODEL, Some("0.9".into()))
        .await
        .unwrap();
    let local = car.list_devices().await.unwrap();
    assert_eq!(local.len(), 2);
    assert!(
        local
            .iter()
            .any(|d| d.handle == offline && d.offline_attached)
    );
    let address = car.address().await.unwrap();
    let link = owner.connect(address).await.unwrap();
    let phone_list = link.list_devices().await.unwrap();
    assert_eq!(phone_list.len(), 1);
    assert!(!phone_list[0].offline_attached);

    // R16: a co-user with device control over the lamp sees and controls
    // it, but may not rename it; one whose grant lists no device sees none.
    let co = Phone::open(NodeConfig::default()).unwrap();
    co.create_account().unwrap();
    let issued = owner
        .share(
            &link,
            co.authority_public_key().unwrap(),
            &ShareOptions {
                permissions: vec![SharePermission::DeviceControl],
                devices: vec![lamp.key],
                valid_for_s: 600,
                nickname: "Owner".into(),
            },
        )
        .await
        .unwrap();
    co.accept_invite(&issued.invite).unwrap();
    let co_link = co.connect_shared(issued.grant_id, address).await.unwrap();
    let seen = co_link.list_devices().await.unwrap();
    assert_eq!(seen.len(), 1);
    co_link
        .set_device_properties(
            &seen[0].handle,
            vec![PropertyValue {
                siid: 2,
                piid: 2,
                value: uint(10),
            }],
        )
        .await
        .unwrap();
    let rename = co_link.rename_device(&seen[0].handle, "Mine now").await;
    assert!(
        matches!(rename, Err(NodeError::Control(ref e)) if e.code() == Some(tether_proto::v1::ErrorCode::PermissionDenied)),
        "{rename:?}"
    );
    assert!(co_link.unbind_device(&seen[0].handle).await.is_err());
    assert_eq!(
        link.list_devices().await.unwrap().len(),
        1,
        "nothing was unbound"
    );

    // R17: at an account switch presence starts over and a scan finds the
    // lamp again.
    assert_eq!(car.account_switched(SCAN).await.unwrap(), 1);
    assert!(
        car.list_devices()
            .await
            .unwrap()
            .iter()
            .any(|d| d.online && !d.offline_attached)
    );
    lamp.node.shutdown().await.unwrap();
    car.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r16_each_permission_is_needed_for_its_requests() {
    use tether_control::client as control;
    let (owner, car) = owner_and_car().await;
    let lamp = bound_lamp(&owner, &car, [0x55; 32], "Lamp").await;
    assert_eq!(car.scan_devices(SCAN).await.unwrap(), 1);
    let address = car.address().await.unwrap();
    let owner_link = owner.connect(address).await.unwrap();
    let handle = owner_link.list_devices().await.unwrap()[0].handle.clone();
    let all = [
        SharePermission::VehicleStatus,
        SharePermission::VehicleControl,
        SharePermission::DeviceControl,
        SharePermission::DeviceRename,
        SharePermission::DeviceSort,
        SharePermission::DeviceDelete,
    ];
    let denied = |r: Result<(), NodeError>| matches!(r, Err(NodeError::Control(ref e)) if e.code() == Some(tether_proto::v1::ErrorCode::PermissionDenied));
    for (i, missing) in all.iter().enumerate() {
        let co = Phone::open(NodeConfig::default()).unwrap();
        co.create_account().unwrap();
        let granted: Vec<_> = all.iter().copied().filter(|p| p != missing).collect();
        let issued = owner
            .share(
                &owner_link,
                co.authority_public_key().unwrap(),
                &ShareOptions {
                    permissions: granted,
                    devices: vec![lamp.key],
                    valid_for_s: 600,
                    nickname: "Owner".into(),
                },
            )
            .await
            .unwrap();
        co.accept_invite(&issued.invite).unwrap();
        let link = co.connect_shared(issued.grant_id, address).await.unwrap();
        let key = [i as u8 + 1; 16];
        let result = match missing {
            SharePermission::VehicleStatus => link.get(Vec::new()).await.map(|_| ()),
            SharePermission::VehicleControl => link
                .command(control::flash_honk(true, false), &key)
                .await
                .map(|_| ()),
            SharePermission::DeviceControl => link.list_devices().await.map(|_| ()),
            SharePermission::DeviceRename => link.rename_device(&handle, "x").await.map(|_| ()),
            SharePermission::DeviceSort => {
                link.reorder_devices(vec![handle.clone()]).await.map(|_| ())
            }
            SharePermission::DeviceDelete => link.unbind_device(&handle).await.map(|_| ()),
            _ => unreachable!(),
        };
        assert!(denied(result), "{missing:?} was not needed");
        // What the grant does hold still works (one check per grant).
        let allowed = match missing {
            SharePermission::DeviceControl => link.get(Vec::new()).await.map(|_| ()),
            _ => link.list_devices().await.map(|_| ()),
        };
        assert!(allowed.is_ok(), "without {missing:?} the rest still works");
        owner
            .revoke_share(&owner_link, issued.grant_id)
            .await
            .unwrap();
    }
    assert_eq!(
        owner_link.list_devices().await.unwrap().len(),
        1,
        "the lamp is still bound"
    );
    assert!(lamp.node.is_bound().unwrap());
    car.shutdown().await.unwrap();
}

/// A raw request of `kind`.
fn raw(kind: request::Kind) -> Envelope {
    Envelope {
        body: Some(envelope::Body::Request(Request { kind: Some(kind) })),
        ..Envelope::default()
    }
}

/// What `session` gets for `kind`: `Ok` for an answer, else the error code.
async fn ask(session: &ClientSession, kind: request::Kind) -> Result<(), ErrorCode> {
    match session.call(raw(kind)).await {
        Ok(_) => Ok(()),
        Err(SessionError::Remote { code, .. }) => Err(code),
        Err(e) => panic!("the session failed: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r10_r11_r23_device_management_follows_the_role_table() {
    let (owner, car) = owner_and_car().await;
    let _lamp = bound_lamp(&owner, &car, [0x33; 32], "Desk lamp").await;
    let address = car.address().await.unwrap();
    let link = owner.connect(address).await.unwrap();
    let handle = link.list_devices().await.unwrap()[0].handle.clone();
    let list = || request::Kind::ListDevices(ListDevices {});
    let rename = || {
        request::Kind::RenameDevice(RenameDevice {
            handle: handle.clone(),
            name: "Mine now".into(),
        })
    };
    let reorder = || {
        request::Kind::ReorderDevices(ReorderDevices {
            handles: vec![handle.clone()],
        })
    };
    let unbind = || {
        request::Kind::UnbindDevice(UnbindDevice {
            handle: handle.clone(),
        })
    };
    let set = || {
        request::Kind::SetProperties(SetProperties {
            handle: handle.clone(),
            values: vec![PropertyValue {
                siid: 2,
                piid: 1,
                value: Some(DeviceValue {
                    kind: Some(device_value::Kind::BoolValue(true)),
                }),
            }],
        })
    };
    let denied = Err(ErrorCode::PermissionDenied);

    // The watch reads, and manages nothing (R23: the owner's phone does).
    let watch = support::session_as(&owner, address, Role::Watch).await;
    assert_eq!(ask(&watch, list()).await, Ok(()));
    for kind in [rename(), reorder(), unbind()] {
        assert_eq!(ask(&watch, kind).await, denied);
    }

    // Another vehicle of the account does nothing to the car's devices.
    let vehicle = support::session_as(&owner, address, Role::Vehicle).await;
    for kind in [list(), set(), rename(), unbind()] {
        assert_eq!(ask(&vehicle, kind).await, denied);
    }

    // The hub sees in-car devices only under "car data to home" (R10,
    // R11), and never controls or manages them.
    let hub = support::session_as(&owner, address, Role::Hub).await;
    assert_eq!(ask(&hub, list()).await, denied, "R11: off by default");
    assert!(
        hub.request(raw(request::Kind::WatchDevices(WatchDevices {})))
            .await
            .unwrap()
            .next()
            .await
            .is_err(),
        "R11: no watch while the switch is off"
    );
    assert!(link.set_car_data_to_home(true).await.unwrap());
    assert_eq!(ask(&hub, list()).await, Ok(()));
    for kind in [set(), rename(), reorder(), unbind()] {
        assert_eq!(ask(&hub, kind).await, denied);
    }

    // A hub's watch ends when the switch goes off (R11, R28).
    let mut watching = hub
        .request(raw(request::Kind::WatchDevices(WatchDevices {})))
        .await
        .unwrap();
    assert!(watching.next().await.unwrap().is_some(), "the list first");
    assert!(!link.set_car_data_to_home(false).await.unwrap());
    let ended = tokio::time::timeout(Duration::from_secs(2), watching.next())
        .await
        .expect("R11: the hub's watch ends at once when the switch goes off");
    assert!(!matches!(ended, Ok(Some(_))), "nothing more: {ended:?}");
    assert_eq!(ask(&hub, list()).await, denied);

    // The device is still bound, under its own name, and the phone still
    // manages it.
    let devices = link.list_devices().await.unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].name, "Desk lamp");
    assert_eq!(
        link.rename_device(&handle, "Desk").await.unwrap()[0].name,
        "Desk"
    );
    car.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ended_device_watches_do_not_pile_up_without_an_event() {
    let (owner, car) = owner_and_car().await;
    let link = owner.connect(car.address().await.unwrap()).await.unwrap();
    for _ in 0..20 {
        let mut watching = link
            .session()
            .request(raw(request::Kind::WatchDevices(WatchDevices {})))
            .await
            .unwrap();
        assert!(watching.next().await.unwrap().is_some());
        watching.cancel();
    }
    // Once the car has seen those streams end, a new watch prunes them,
    // though no device event ever fired.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut live = link
        .session()
        .request(raw(request::Kind::WatchDevices(WatchDevices {})))
        .await
        .unwrap();
    assert!(live.next().await.unwrap().is_some());
    assert_eq!(
        car.device_watchers().await.unwrap(),
        1,
        "only the live watch"
    );
    car.shutdown().await.unwrap();
}
