//! `tether pair` as a user runs it: the binary, its JSON report, its exit
//! code (R6, R13).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

use std::process::Command;

fn pair(args: &[&str]) -> (bool, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_tether"))
        .arg("pair")
        .arg("--json")
        .args(args)
        .output()
        .expect("the tether binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {stdout}"));
    (out.status.success(), report)
}

fn step_names(report: &serde_json::Value) -> Vec<String> {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn pair_reads_the_qr_code_pairs_and_provisions_a_lamp_r6_r13() {
    let (ok, report) = pair(&[]);
    assert!(ok, "{report}");
    assert_eq!(report["ok"], true);
    assert!(
        report["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["ok"] == true)
    );
    assert_eq!(
        step_names(&report),
        [
            "lamp shows its setup code",
            "head unit reads the code",
            "scan finds the lamp",
            "pair, bind and provision",
            "lamp joined the home Wi-Fi"
        ]
    );
    let qr = report["setup"]["qr"].as_str().unwrap();
    assert!(qr.starts_with("TT:") && qr.len() == 18, "{qr}");
    let manual = report["setup"]["manual_code"].as_str().unwrap();
    assert!(manual.len() == 11 && manual.bytes().all(|b| b.is_ascii_digit()));
    assert!(report["radio"]["pdus_sent"].as_u64().unwrap() > 0);
}

#[test]
fn pair_with_the_manual_code_refuses_a_mistyped_passcode_then_backs_off_r6() {
    let (ok, report) = pair(&["--manual", "--wrong-passcode-first", "--loss", "0.05"]);
    assert!(ok, "{report}");
    let names = step_names(&report);
    for expected in [
        "a mistyped passcode is refused",
        "an immediate retry must wait",
        "pair, bind and provision",
        "lamp joined the home Wi-Fi",
    ] {
        assert!(names.iter().any(|n| n == expected), "{names:?}");
    }
    assert_eq!(report["radio"]["loss"], 0.05);
}

#[test]
fn pair_reconnects_a_link_the_lamp_drops_once_r13() {
    let (ok, report) = pair(&["--drop-link"]);
    assert!(ok, "{report}");
    assert_eq!(report["radio"]["reconnections"], 1, "{report}");
    let step = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "pair, bind and provision")
        .unwrap();
    assert_eq!(step["ok"], true);
    let detail = step["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("reconnected"), "{step}");
    // Without the flag nothing drops and nothing is reconnected.
    let (ok, report) = pair(&[]);
    assert!(ok, "{report}");
    assert_eq!(report["radio"]["reconnections"], 0, "{report}");
}
