//! The smart-device part of `tether demo` (issue 4): the car commissions a
//! lamp and a camera over the simulated radio, they come back on the LAN,
//! the phone manages and controls them through the car, the lamp takes a
//! firmware upgrade that resumes after a forced disconnect, an offline device
//! stays on the car's screen, and an unbound camera forgets its binding.

use std::time::{Duration, Instant};

use ring::digest::{SHA256, digest};
use serde_json::json;
use tether_node::proto::v1::{DeviceValue, OtaManifest, PropertyValue, device_value};
use tether_node::signals;
use tether_node::{AccountAuthority, DeviceKey};
use tether_node::{CAMERA_PRODUCT_MODEL, LAMP_PRODUCT_MODEL, camera_model, lamp_model};
use tether_node::{
    CommissionReport, CommissionRequest, DeviceInfo, DeviceNode, HeadUnit, NetworkOutcome,
    NodeConfig, NodeError, OtaTransferError, Phone, SetupCode, SignalData, SimulatedAccessory,
    VehicleLink,
};

use crate::narrate::Narrator;
use crate::pair::home;
use crate::progress;

/// How long the car browses for its bound devices.
const DEVICE_SCAN: Duration = Duration::from_secs(15);
/// Size of the demo firmware image.
const IMAGE_BYTES: usize = 1 << 20;
/// Where the demo forces a disconnect mid-upgrade.
const DROP_AT_PERCENT: f64 = 40.0;

/// The devices the demo made, for the steps that follow.
pub(crate) struct DemoDevices {
    pub(crate) lamp: DeviceNode,
    pub(crate) camera: DeviceNode,
    /// The lamp's public key (what a share grant names).
    pub(crate) lamp_key: [u8; 32],
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn uint(v: u32) -> Option<DeviceValue> {
    Some(DeviceValue {
        kind: Some(device_value::Kind::UintValue(v)),
    })
}

/// Reads property `siid.piid` of a device node.
pub(crate) fn value_of(node: &DeviceNode, siid: u32, piid: u32) -> Option<device_value::Kind> {
    node.values()
        .into_iter()
        .find(|v| v.siid == siid && v.piid == piid)
        .and_then(|v| v.value)
        .and_then(|v| v.kind)
}

/// Waits (up to 2 s) until the device reports `want` at `siid.piid`.
pub(crate) async fn wait_for(
    node: &DeviceNode,
    siid: u32,
    piid: u32,
    want: &device_value::Kind,
) -> bool {
    for _ in 0..100 {
        if value_of(node, siid, piid).as_ref() == Some(want) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

fn signed_manifest(vendor: &DeviceKey, image: &[u8], version: &str) -> OtaManifest {
    let mut manifest = OtaManifest {
        product_model: u32::from(LAMP_PRODUCT_MODEL),
        version: version.into(),
        size: image.len() as u64,
        sha256: digest(&SHA256, image).as_ref().to_vec(),
        signature: Vec::new(),
    };
    manifest.signature = vendor
        .sign(&tether_node::manifest_signing_input(&manifest))
        .to_vec();
    manifest
}

/// `tether devices`: the device life cycle on its own, in one process over
/// loopback: an owner's phone and a car, then every device step of the demo.
pub(crate) async fn run(json: bool, interfaces: tether_node::Interfaces) -> std::process::ExitCode {
    let mut n = Narrator {
        json,
        steps: Vec::new(),
    };
    let mut extra = json!({});
    let total = Instant::now();
    if !json {
        println!(
            "tether devices: a car commissions a lamp and a camera over simulated Bluetooth,\n\
             finds them again on the LAN, and the owner's phone manages them through the car.\n"
        );
    }
    let outcome = async {
        let config = NodeConfig {
            interfaces,
            ..NodeConfig::default()
        };
        let phone = Phone::open(config.clone())?;
        phone.create_account()?;
        let car = HeadUnit::open(config.clone())?;
        car.complete_enrollment(&phone.enroll_device(&car.enrollment_request()?)?)?;
        let address = car.start().await?;
        let link = phone.connect(address).await?;
        let mut authority = phone.authority()?;
        let devices = device_steps(
            &config,
            &phone,
            &car,
            &link,
            &mut authority,
            &mut n,
            &mut extra,
        )
        .await?;
        if let Some(d) = devices {
            d.lamp.shutdown().await?;
            d.camera.shutdown().await?;
        }
        car.shutdown().await?;
        Ok::<_, NodeError>(())
    }
    .await;
    if let Err(e) = &outcome {
        n.record("devices aborted", total, Err(e.to_string()));
    }
    let ok = outcome.is_ok() && !n.steps.is_empty() && n.steps.iter().all(|s| s.ok);
    if json {
        println!(
            "{}",
            json!({
                "ok": ok,
                "steps": n.steps,
                "total_ms": total.elapsed().as_millis() as u64,
                "details": extra,
            })
        );
    } else {
        println!(
            "\n{} of {} steps behaved as described: {}",
            n.steps.iter().filter(|s| s.ok).count(),
            n.steps.len(),
            if ok { "OK" } else { "FAILED" }
        );
    }
    if ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

/// Runs the device steps. `None` when a step failed so that the rest cannot
/// run (the failure is already recorded).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn device_steps(
    config: &NodeConfig,
    phone: &Phone,
    car: &HeadUnit,
    link: &VehicleLink,
    authority: &mut (dyn AccountAuthority + Send),
    n: &mut Narrator,
    extra: &mut serde_json::Value,
) -> Result<Option<DemoDevices>, NodeError> {
    let _ = phone;
    // 1. Commission the lamp and the camera over the simulated radio.
    let mut made = Vec::new();
    for (model, name, step) in [
        (LAMP_PRODUCT_MODEL, "Lamp", "car commissions a lamp"),
        (
            CAMERA_PRODUCT_MODEL,
            "Cabin camera",
            "car commissions a camera",
        ),
    ] {
        let t = Instant::now();
        // The device powers on unprovisioned and shows its code; the head
        // unit reads it and commissions it (SPEC §12, §13).
        let commissioned = async {
            let device = SimulatedAccessory::power_on(model, &[home()], 0.0)?;
            let qr = device.setup_qr()?;
            let report = car
                .commission(
                    &device.central(),
                    authority,
                    &CommissionRequest::new(SetupCode::parse(&qr)?, name, home()),
                    |_| {},
                )
                .await?;
            Ok::<_, NodeError>((device, qr, report))
        }
        .await;
        match commissioned {
            Ok((device, qr, report)) if report.outcome == NetworkOutcome::Joined => {
                if !n.json
                    && let Ok(art) = crate::pair::render_qr(&qr)
                {
                    println!("{name}'s setup code, as the head unit shows it ({qr}):\n{art}");
                }
                n.record(
                    step,
                    t,
                    Ok(format!(
                        "setup QR read, SPAKE2 paired, bound to the owner's account (certificate #{}, no group key), joined Wi-Fi",
                        report.serial
                    )),
                );
                made.push((device, report));
            }
            Ok((_, _, report)) => {
                n.record(
                    step,
                    t,
                    Err(format!("the device reported {:?}", report.outcome)),
                );
                return Ok(None);
            }
            Err(e) => {
                n.record(step, t, Err(e.to_string()));
                return Ok(None);
            }
        }
    }
    let camera_device = made.pop().ok_or(NodeError::State("no camera"))?;
    let lamp_device = made.pop().ok_or(NodeError::State("no lamp"))?;

    // 2. They join the LAN and come back, found by their own tokens.
    let t = Instant::now();
    let vendor = DeviceKey::generate()?;
    let open = |model, (device, _): &(SimulatedAccessory, CommissionReport)| {
        let node = DeviceNode::open(config.clone(), model, "1.0.0", vendor.public_key())?;
        let binding = device
            .take_binding()
            .ok_or(NodeError::State("the device kept no binding"))?;
        node.install(&binding)?;
        Ok::<_, NodeError>(node)
    };
    let lamp = open(lamp_model(), &lamp_device)?;
    let camera = open(camera_model(), &camera_device)?;
    lamp.start().await?;
    camera.start().await?;
    let online = car.scan_devices(DEVICE_SCAN).await?;
    extra["devices_online"] = json!(online);
    if !n.record(
        "devices reappear on the LAN",
        t,
        if online == 2 {
            Ok("each advertises its own rotating token over mDNS; the car resolves both and opens sessions with the device secret".into())
        } else {
            Err(format!("{online} of 2 devices found"))
        },
    ) {
        return Ok(None);
    }

    // 3. The phone lists, renames and reorders them through the car.
    let t = Instant::now();
    let organised: Result<(Vec<DeviceInfo>, Vec<u8>), NodeError> = async {
        let list = link.list_devices().await?;
        let find = |name: &str| {
            list.iter()
                .find(|d| d.name == name)
                .map(|d| d.handle.clone())
                .ok_or(NodeError::UnexpectedResponse(
                    "a device is missing from the list",
                ))
        };
        let lamp_handle = find("Lamp")?;
        let camera_handle = find("Cabin camera")?;
        link.rename_device(&lamp_handle, "Reading lamp").await?;
        let list = link
            .reorder_devices(vec![camera_handle, lamp_handle.clone()])
            .await?;
        Ok((list, lamp_handle))
    }
    .await;
    let lamp_handle = match organised {
        Ok((list, handle))
            if list.len() == 2
                && list[0].name == "Cabin camera"
                && list[1].name == "Reading lamp"
                && list.iter().all(|d| d.online) =>
        {
            n.record(
                "phone lists, renames, reorders",
                t,
                Ok("2 devices online; the lamp renamed \"Reading lamp\"; the camera moved first; handles are opaque".into()),
            );
            handle
        }
        Ok((list, _)) => {
            n.record(
                "phone lists, renames, reorders",
                t,
                Err(format!(
                    "unexpected list: {:?}",
                    list.iter().map(|d| &d.name).collect::<Vec<_>>()
                )),
            );
            return Ok(None);
        }
        Err(e) => {
            n.record("phone lists, renames, reorders", t, Err(err(e)));
            return Ok(None);
        }
    };

    // 4. Control through the car reaches the lamp.
    let t = Instant::now();
    let controlled = async {
        link.set_device_properties(
            &lamp_handle,
            vec![PropertyValue {
                siid: 2,
                piid: 2,
                value: uint(40),
            }],
        )
        .await?;
        link.invoke_device_action(&lamp_handle, 2, 1, Vec::new())
            .await?;
        let out_of_range = link
            .set_device_properties(
                &lamp_handle,
                vec![PropertyValue {
                    siid: 2,
                    piid: 2,
                    value: uint(250),
                }],
            )
            .await;
        Ok::<_, NodeError>(out_of_range.is_err())
    }
    .await;
    let bright = wait_for(&lamp, 2, 2, &device_value::Kind::UintValue(40)).await;
    let on = wait_for(&lamp, 2, 1, &device_value::Kind::BoolValue(true)).await;
    n.record(
        "phone controls the lamp",
        t,
        match controlled {
            Ok(true) if bright && on => Ok(
                "brightness 40 % and the toggle action reached the lamp; 250 % refused by the model".into(),
            ),
            Ok(refused) => Err(format!(
                "brightness {bright}, on {on}, out-of-range refused {refused}"
            )),
            Err(e) => Err(err(e)),
        },
    );

    // 5. Firmware upgrade, refused on a low battery, then resumed after a
    //    forced disconnect (R15).
    upgrade_steps(car, link, &lamp, &vendor, &lamp_handle, n, extra).await?;

    // 6. An offline device attached to the car stays on its screen (R12).
    let t = Instant::now();
    let attached = car
        .attach_offline_device(LAMP_PRODUCT_MODEL, Some("0.9".into()))
        .await?;
    let on_car = car.list_devices().await?;
    let on_phone = link.list_devices().await?;
    n.record(
        "offline device stays local",
        t,
        if on_car.iter().any(|d| d.handle == attached && d.offline_attached)
            && on_phone.len() == 2
        {
            Ok("a lamp on the car's port: listed on the head unit only, no account or identifier stored (R12)".into())
        } else {
            Err(format!(
                "car lists {}, phone lists {}",
                on_car.len(),
                on_phone.len()
            ))
        },
    );

    // 7. Unbinding the camera: the record goes and the camera forgets.
    let t = Instant::now();
    let camera_handle = link
        .list_devices()
        .await?
        .into_iter()
        .find(|d| d.name == "Cabin camera")
        .map(|d| d.handle);
    let result = match camera_handle {
        Some(h) => link.unbind_device(&h).await.map(|l| l.len()),
        None => Err(NodeError::UnexpectedResponse("the camera is not listed")),
    };
    let forgot = tokio::time::timeout(Duration::from_secs(5), camera.unbound())
        .await
        .is_ok();
    n.record(
        "unbound camera forgets",
        t,
        match result {
            Ok(1) if forgot && !camera.is_bound()? => Ok(
                "record deleted on the car; the camera erased its certificate and secret".into(),
            ),
            Ok(left) => Err(format!("{left} devices left; camera forgot: {forgot}")),
            Err(e) => Err(err(e)),
        },
    );

    Ok(Some(DemoDevices {
        lamp,
        camera,
        lamp_key: lamp_device.1.device_key,
    }))
}

#[allow(clippy::too_many_arguments)]
async fn upgrade_steps(
    car: &HeadUnit,
    link: &VehicleLink,
    lamp: &DeviceNode,
    vendor: &DeviceKey,
    handle: &[u8],
    n: &mut Narrator,
    extra: &mut serde_json::Value,
) -> Result<(), NodeError> {
    let image: Vec<u8> = (0..IMAGE_BYTES).map(|i| (i * 131 % 251) as u8).collect();
    let manifest = signed_manifest(vendor, &image, "1.1.0");

    // The car reads its own battery (R15): the phone sees the same level.
    let t = Instant::now();
    let battery = match link
        .get(vec![signals::BATTERY_STATE_OF_CHARGE.into()])
        .await?
        .first()
        .map(|r| r.value.clone())
    {
        Some(SignalData::Number(p)) => p,
        _ => return Err(NodeError::UnexpectedResponse("no battery level")),
    };
    car.set_simulated_battery(12.0).await?;
    let low = car
        .upgrade_device(handle, &manifest, image.clone(), |_| {})
        .await;
    car.set_simulated_battery(battery).await?;
    n.record(
        "upgrade refused on low battery",
        t,
        match low {
            Err(NodeError::Upgrade(e @ OtaTransferError::LowBattery { .. })) => Ok(e.to_string()),
            Err(e) => Err(format!("refused, but not for the battery: {e}")),
            Ok(_) => Err("an upgrade ran at 12 % battery".into()),
        },
    );

    let t = Instant::now();
    let battery = car.vehicle_battery_percent().await?;
    let bar = progress::upgrade_bar(n.json);
    // A forced disconnect mid-upgrade: the car's session to the lamp is cut
    // from inside the progress callback, at once.
    let session = car
        .device_session(handle)
        .await?
        .ok_or(NodeError::State("the lamp is not online"))?;
    let first = car
        .upgrade_device(handle, &manifest, image.clone(), |p| {
            progress::show(&bar, p);
            if p.percent() >= DROP_AT_PERCENT && !session.is_closed() {
                session.close(tether_node::CloseCode::Normal, "forced disconnect");
            }
        })
        .await;
    let stopped_at = match &first {
        Err(NodeError::Upgrade(OtaTransferError::LinkLost { offset, .. })) => {
            bar.abandon_with_message(format!("link lost at {} KiB", offset / 1024));
            Some(*offset)
        }
        _ => {
            bar.abandon();
            None
        }
    };
    // The car finds the lamp again and resumes where it stopped.
    car.scan_devices(DEVICE_SCAN).await?;
    let bar = progress::upgrade_bar(n.json);
    let second = car
        .upgrade_device(handle, &manifest, image.clone(), |p| {
            progress::show(&bar, p)
        })
        .await;
    match &second {
        Ok(report) => progress::finish(&bar, &Ok(report.clone())),
        Err(_) => bar.abandon_with_message("failed"),
    }
    let installed = lamp.installed_firmware();
    extra["ota"] = json!({
        "image_bytes": IMAGE_BYTES,
        "disconnected_at": stopped_at,
        "resumed_from": second.as_ref().ok().map(|r| r.resumed_from),
        "version": second.as_ref().ok().map(|r| r.version.clone()),
    });
    n.record(
        "lamp firmware upgrade resumes",
        t,
        match (stopped_at, second) {
            (Some(at), Ok(report))
                if report.resumed_from > 0
                    && installed.as_ref().is_some_and(|i| i.image == image) =>
            {
                Ok(format!(
                    "battery {battery} %; link dropped at {} KiB, resumed from {} KiB; SHA-256 checked, {} installed",
                    at / 1024,
                    report.resumed_from / 1024,
                    report.version
                ))
            }
            (None, _) => Err(format!("the forced disconnect did not interrupt: {first:?}")),
            (_, Ok(report)) => Err(format!("resumed from {}", report.resumed_from)),
            (_, Err(e)) => Err(err(e)),
        },
    );
    Ok(())
}
