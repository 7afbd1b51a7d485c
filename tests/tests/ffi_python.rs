//! The phone role from a real foreign language: `examples/python/phone.py`
//! runs on the machine's `python3` through Python bindings generated from
//! the freshly built native library, against a head unit started here in
//! Rust. Every step of the script must pass (R2, R3, R23), including the
//! management of a lamp bound to the account, through the car (SPEC §16),
//! and super tasks on the car with the owner's confirmation (SPEC §18).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use prost::Message;
use ring::rand::{SecureRandom, SystemRandom};
use tether_identity::{DeviceKey, Role};
use tether_node::{DeviceNode, HeadUnit, NodeConfig, PropertyValue, device_value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

mod support;

#[path = "../../crates/tether-relay/tests/support/mod.rs"]
mod mosquitto;

/// Steps `phone.py` reports when everything works.
const EXPECTED_STEPS: usize = 25;
/// The whole script, discovery windows included, takes a few seconds.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the car may look for the lamp's token on loopback mDNS.
const LAMP_SCAN: Duration = Duration::from_secs(15);

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is one level down")
        .to_path_buf()
}

/// The cdylib cargo built for this test: tether-ffi is a dependency, so its
/// `cdylib` lands in `target/<profile>/deps/`, beside this executable.
fn native_library() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe.parent().expect("tests live in target/<profile>/deps");
    let lib = deps.join(format!(
        "{}tether_ffi{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ));
    assert!(
        lib.exists(),
        "{} is missing: cargo builds it with this test",
        lib.display()
    );
    lib
}

/// Generates the Python bindings into `out` and links the library beside
/// them, where the generated module looks for it.
fn generate_python_bindings(out: &Path) {
    let lib = native_library();
    uniffi::generate(uniffi::GenerateOptions {
        languages: vec![uniffi::TargetLanguage::Python],
        source: lib.to_str().expect("utf-8 path").to_owned().into(),
        out_dir: out.to_str().expect("utf-8 path").to_owned().into(),
        config_override: None,
        format: false,
        crate_filter: None,
        metadata_no_deps: true,
    })
    .expect("uniffi-bindgen generates Python");
    assert!(out.join("tether.py").exists(), "tether.py generated");
    std::os::unix::fs::symlink(&lib, out.join(lib.file_name().expect("file name")))
        .expect("link the library beside the bindings");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex from the script"))
        .collect()
}

/// A lamp bound to the script's account as commissioning would leave it:
/// `grant` is the phone's answer to the lamp's enrollment request; the car
/// then finds it by its token.
async fn bind_lamp(car: &HeadUnit, key: DeviceKey, grant: &[u8]) -> DeviceNode {
    let grant = tether_node::EnrollmentGrant::decode(grant).unwrap();
    let mut secret = [0u8; 32];
    SystemRandom::new().fill(&mut secret).unwrap();
    let (lamp, _vendor) = support::bind_lamp(car, key, &grant, secret, "Desk lamp").await;
    assert_eq!(
        car.scan_devices(LAMP_SCAN).await.unwrap(),
        1,
        "the car finds the lamp"
    );
    lamp
}

fn lamp_value(values: &[PropertyValue], siid: u32, piid: u32) -> Option<device_value::Kind> {
    values
        .iter()
        .find(|v| v.siid == siid && v.piid == piid)
        .and_then(|v| v.value.clone())
        .and_then(|v| v.kind)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_phone_enrolls_controls_and_is_refused_by_another_account_r2_r23() {
    let bindings = tempfile::tempdir().unwrap();
    // TETHER_FFI_BINDINGS names a directory made by generate-bindings.sh
    // (a shipped build, e.g. `--phone-only`) to run the script on instead.
    let shipped = std::env::var_os("TETHER_FFI_BINDINGS").map(PathBuf::from);
    let bindings_dir = match &shipped {
        Some(dir) => dir.clone(),
        None => {
            generate_python_bindings(bindings.path());
            bindings.path().to_path_buf()
        }
    };
    // The remote-path step: the car also answers through a real broker.
    let broker = mosquitto::Mosquitto::start();
    let car = HeadUnit::open(NodeConfig {
        relay: Some(tether_node::RelayConfig::new("127.0.0.1", broker.port())),
        ..NodeConfig::default()
    })
    .unwrap();
    let hub = tether_node::Hub::open(NodeConfig::default()).unwrap();

    let script = workspace_root().join("examples/python/phone.py");
    let mut child = Command::new("python3")
        .arg(&script)
        .arg("--bindings")
        .arg(&bindings_dir)
        .args(["--host", "stdio", "--json"])
        .args(["--broker", &format!("mqtt://127.0.0.1:{}", broker.port())])
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 is on PATH");
    let mut to_script = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();

    let mut steps = Vec::new();
    let mut done = None;
    let mut lamp_key = None;
    let mut lamp = None;
    let drive = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line == "ENROLL?" {
                let request = car.enrollment_request().unwrap().encode_to_vec();
                to_script
                    .write_all(format!("REQUEST {}\n", hex(&request)).as_bytes())
                    .await
                    .unwrap();
            } else if let Some(grant) = line.strip_prefix("GRANT ") {
                let grant = tether_node::EnrollmentGrant::decode(unhex(grant).as_slice()).unwrap();
                car.complete_enrollment(&grant).unwrap();
                car.start().await.unwrap();
                // The phone, as the account authority, certifies a lamp.
                let key = DeviceKey::generate().unwrap();
                let request = key
                    .enrollment_request(Role::Device, [7; 16])
                    .encode_to_vec();
                lamp_key = Some(key);
                to_script
                    .write_all(format!("DEVICE? {}\n", hex(&request)).as_bytes())
                    .await
                    .unwrap();
            } else if let Some(grant) = line.strip_prefix("DEVICE-GRANT ") {
                let key = lamp_key.take().expect("DEVICE-GRANT answers DEVICE?");
                lamp = Some(bind_lamp(&car, key, &unhex(grant)).await);
                to_script.write_all(b"STARTED\n").await.unwrap();
            } else if line == "PARK?" {
                // The car shifts into park: its vehicle integration tells
                // the tasks (the script's lock task fires on it).
                let automation = car.automation().await.unwrap();
                let delivery =
                    automation.handle_vehicle_event(tether_automation::VehicleEvent::Parked);
                assert_eq!(delivery, tether_automation::Delivery::Delivered);
                to_script.write_all(b"PARKED\n").await.unwrap();
            } else if line == "HUB?" {
                let request = hub.enrollment_request().unwrap().encode_to_vec();
                to_script
                    .write_all(format!("HUB-REQUEST {}\n", hex(&request)).as_bytes())
                    .await
                    .unwrap();
            } else if let Some(grant) = line.strip_prefix("HUB-GRANT ") {
                let grant = tether_node::EnrollmentGrant::decode(unhex(grant).as_slice()).unwrap();
                hub.complete_enrollment(&grant).unwrap();
                hub.start(tether_node::Clock::System).unwrap();
                hub.serve().unwrap();
                to_script.write_all(b"HUB-STARTED\n").await.unwrap();
            } else if let Some(step) = line.strip_prefix("STEP ") {
                let step: serde_json::Value = serde_json::from_str(step).unwrap();
                eprintln!("python step: {step}");
                steps.push(step);
            } else if let Some(summary) = line.strip_prefix("DONE ") {
                done = Some(serde_json::from_str::<serde_json::Value>(summary).unwrap());
            } else {
                eprintln!("python: {line}");
            }
        }
    };
    tokio::time::timeout(SCRIPT_TIMEOUT, drive)
        .await
        .expect("the script finishes in time");
    let status = child.wait().await.unwrap();

    let done = done.expect("the script printed its summary");
    assert_eq!(done["ok"], true, "script failed: {done}");
    assert!(status.success(), "script exit status {status}");
    assert_eq!(steps.len(), EXPECTED_STEPS, "steps: {steps:?}");
    assert!(steps.iter().all(|s| s["ok"] == true));
    let names: Vec<&str> = steps.iter().filter_map(|s| s["name"].as_str()).collect();
    for name in [
        "enroll",
        "discover",
        "authenticate",
        "read status",
        "subscribe",
        "lock",
        "callback sees the lock",
        "retry is idempotent",
        "typed errors",
        "other account refused",
        "share and revoke",
        "devices through the car",
        "car data to home on",
        "create task",
        "list tasks",
        "run task",
        "share task",
        "confirm on the phone",
        "car data to home off",
        "hub tasks",
        "remove a lost phone",
        "key store",
    ] {
        assert!(
            names.contains(&name),
            "step {name:?} missing from {names:?}"
        );
    }

    // What the Rust side saw: the phone's lock ran once despite the retry,
    // then the task locked twice (run by hand, then on "parked") and
    // unlocked once, when the owner confirmed (the declined unlock did not
    // run); and the other account's phone was refused by this head unit.
    let executions = car.executions().await.unwrap();
    assert_eq!(
        (executions.lock, executions.unlock),
        (3, 1),
        "{executions:?}"
    );
    // The hub's task ran, sent as bytes from Python (SPEC §18.8).
    assert_eq!(hub.home().state().get("porch"), Some(&true));
    // The phone removed a second phone and handed the list to the car
    // (SPEC §3.6).
    assert_eq!(car.revocation_serial(), 1);
    assert_eq!(car.group_key_epoch(), 1);
    let stats = car.listener_stats().await.unwrap();
    assert!(stats.authenticated >= 2, "{stats:?}");
    assert!(stats.refused >= 1, "{stats:?}");

    // The phone's writes reached the lamp itself, and its unbind too (R13).
    let lamp = lamp.expect("the script asked for a lamp");
    let values = lamp.values();
    assert_eq!(
        lamp_value(&values, 2, 2),
        Some(device_value::Kind::UintValue(40)),
        "brightness on the lamp: {values:?}"
    );
    assert_eq!(
        lamp_value(&values, 2, 1),
        Some(device_value::Kind::BoolValue(true)),
        "toggled on"
    );
    assert!(lamp.was_unbound(), "the lamp forgot its binding");
    assert!(!lamp.is_bound().unwrap());
    assert!(car.list_devices().await.unwrap().is_empty());
    lamp.shutdown().await.unwrap();
    car.shutdown().await.unwrap();
}

/// The script also plays the head unit through the bindings (`--host self`):
/// the head unit's own calls (offline devices, scans, a refused LAN upgrade)
/// run from Python too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_hosts_its_own_head_unit_through_the_bindings() {
    let bindings = tempfile::tempdir().unwrap();
    generate_python_bindings(bindings.path());
    let broker = mosquitto::Mosquitto::start();
    let script = workspace_root().join("examples/python/phone.py");
    let out = tokio::time::timeout(
        SCRIPT_TIMEOUT,
        Command::new("python3")
            .arg(&script)
            .arg("--bindings")
            .arg(bindings.path())
            .args(["--host", "self", "--json"])
            .args(["--broker", &format!("mqtt://127.0.0.1:{}", broker.port())])
            .env("RUST_BACKTRACE", "0")
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the script finishes in time")
    .expect("python3 is on PATH");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let steps: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("STEP "))
        .map(|s| serde_json::from_str(s).unwrap())
        .collect();
    let done: serde_json::Value = stdout
        .lines()
        .find_map(|l| l.strip_prefix("DONE "))
        .map(|s| serde_json::from_str(s).unwrap())
        .unwrap_or_else(|| panic!("no summary: {stdout}"));
    assert_eq!(done["ok"], true, "{stdout}");
    assert!(out.status.success());
    // One more step than a phone alone: the head unit commissions a lamp.
    assert_eq!(steps.len(), EXPECTED_STEPS + 1, "{stdout}");
    assert!(
        steps
            .iter()
            .any(|s| s["name"] == "head unit commissions a lamp" && s["ok"] == true),
        "{stdout}"
    );
    assert!(
        steps
            .iter()
            .any(|s| s["name"] == "remote path" && s["ok"] == true),
        "{stdout}"
    );
    assert!(
        steps.iter().any(|s| s["name"] == "devices on the head unit"
            && s["detail"].as_str().unwrap().contains("upgrade is refused")),
        "{stdout}"
    );
}
