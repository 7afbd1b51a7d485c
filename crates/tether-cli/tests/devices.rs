//! `tether devices --json` as a process: the device life cycle on its own
//! (R12–R15, R17; SPEC §12.6, §15, §16).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

use std::process::Command;

#[test]
fn devices_json_reports_every_step_and_a_resumed_upgrade() {
    let out = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["devices", "--json"])
        .output()
        .expect("run tether devices");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {stdout}"));
    assert_eq!(report["ok"], true, "{report:#}");
    assert!(out.status.success());
    let names: Vec<&str> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    for name in [
        "car commissions a lamp",
        "car commissions a camera",
        "devices reappear on the LAN",
        "phone lists, renames, reorders",
        "phone controls the lamp",
        "upgrade refused on low battery",
        "lamp firmware upgrade resumes",
        "offline device stays local",
        "unbound camera forgets",
    ] {
        assert!(names.contains(&name), "{name:?} missing from {names:?}");
    }
    let ota = &report["details"]["ota"];
    let cut = ota["disconnected_at"].as_u64().unwrap();
    let resumed = ota["resumed_from"].as_u64().unwrap();
    let size = ota["image_bytes"].as_u64().unwrap();
    assert!(
        cut > 0 && cut < size,
        "the disconnect came mid-transfer: {ota}"
    );
    assert!(
        resumed >= cut && resumed < size,
        "resumed where it stopped: {ota}"
    );
    assert_eq!(report["details"]["devices_online"], 2);
}
