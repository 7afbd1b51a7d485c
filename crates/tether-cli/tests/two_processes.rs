//! `tether head-unit` and `tether phone` as two processes on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

mod common;
use common::KillOnDrop;

fn tether() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tether"))
}

#[test]
fn head_unit_and_phone_processes_lock_the_car() {
    let phone_dir = tempfile::tempdir().unwrap();
    let car_dir = tempfile::tempdir().unwrap();
    let phone = phone_dir.path().to_str().unwrap();
    let out = tether()
        .args(["phone", "--data-dir", phone, "init"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut car = KillOnDrop(
        tether()
            .args([
                "head-unit",
                "--data-dir",
                car_dir.path().to_str().unwrap(),
                "--enroll-from",
                phone,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    // Wait until the head unit says it serves.
    let stdout = car.0.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let serving = lines
        .by_ref()
        .take(5)
        .map_while(Result::ok)
        .find(|l| l.contains("serving on"))
        .expect("head unit did not start");
    assert!(serving.contains("127.0.0.1"), "{serving}");

    let out = tether()
        .args(["phone", "--data-dir", phone, "lock"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("succeeded") && text.contains("receipt #1 verified"),
        "{text}"
    );

    let out = tether()
        .args(["phone", "--data-dir", phone, "status"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Vehicle.Cabin.Door.Row1.DriverSide.IsLocked") && text.contains("Bool(true)"),
        "{text}"
    );

    // --json: one object per command.
    let (ok, text, err) = common::tether(&["phone", "--data-dir", phone, "--json", "status"]);
    assert!(ok, "{err}");
    let status: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(
        status["signals"]["Vehicle.Cabin.Door.Row1.DriverSide.IsLocked"], true,
        "{status}"
    );
    assert!(
        status["route"].as_str().unwrap().starts_with("lan"),
        "{status}"
    );
    let (ok, text, err) = common::tether(&["phone", "--data-dir", phone, "--json", "unlock"]);
    assert!(ok, "{err}");
    let outcome: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(outcome["state"], "succeeded", "{outcome}");
    assert_eq!(outcome["receipt_verified"], true);
    let (ok, text, err) = common::tether(&["phone", "--data-dir", phone, "--json", "devices"]);
    assert!(ok, "{err}");
    let devices: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert!(
        devices["devices"].as_array().unwrap().len() >= 2,
        "{devices}"
    );
}

#[path = "../../tether-relay/tests/support/mod.rs"]
mod mosquitto;

/// The remote path as processes (SPEC §19.11): `tether head-unit --broker`
/// and `tether phone --broker … --via relay` through a real mosquitto.
#[test]
fn head_unit_and_phone_processes_meet_through_the_broker() {
    let broker = mosquitto::Mosquitto::start();
    let url = format!("mqtt://127.0.0.1:{}", broker.port());
    let phone_dir = tempfile::tempdir().unwrap();
    let car_dir = tempfile::tempdir().unwrap();
    let phone = phone_dir.path().to_str().unwrap();
    let (ok, _, err) = common::tether(&["phone", "--data-dir", phone, "init"]);
    assert!(ok, "{err}");
    let mut car = KillOnDrop(
        tether()
            .args([
                "head-unit",
                "--data-dir",
                car_dir.path().to_str().unwrap(),
                "--enroll-from",
                phone,
                "--broker",
                &url,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let stdout = car.0.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let answering = lines
        .by_ref()
        .take(6)
        .map_while(Result::ok)
        .find(|l| l.contains("through the broker"))
        .expect("head unit did not say it answers through the broker");
    assert!(answering.contains(&url), "{answering}");

    let (ok, text, err) = common::tether(&[
        "phone",
        "--data-dir",
        phone,
        "--broker",
        &url,
        "--via",
        "relay",
        "lock",
    ]);
    assert!(ok, "{text}{err}");
    assert!(text.contains("through the broker"), "{text}");
    assert!(text.contains("succeeded"), "{text}");
    let (ok, text, err) = common::tether(&[
        "phone",
        "--data-dir",
        phone,
        "--broker",
        &url,
        "--via",
        "relay",
        "status",
    ]);
    assert!(ok, "{text}{err}");
    assert!(
        text.contains("Vehicle.Cabin.Door.Row1.DriverSide.IsLocked") && text.contains("Bool(true)"),
        "{text}"
    );
    // The car sleeps (its process is gone): a command left in its mailbox
    // runs when it starts again, and the answer waits for the phone.
    drop(car);
    let (ok, text, err) = common::tether(&[
        "phone",
        "--data-dir",
        phone,
        "--broker",
        &url,
        "post",
        "unlock",
        "--valid-for",
        "120",
    ]);
    assert!(ok, "{text}{err}");
    assert!(text.contains("left in the car's mailbox"), "{text}");
    let mut car = KillOnDrop(
        tether()
            .args([
                "head-unit",
                "--data-dir",
                car_dir.path().to_str().unwrap(),
                "--broker",
                &url,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let stdout = car.0.stdout.take().unwrap();
    BufReader::new(stdout)
        .lines()
        .take(6)
        .map_while(Result::ok)
        .find(|l| l.contains("through the broker"))
        .expect("head unit did not start again");
    let (ok, text, err) = common::tether(&[
        "phone",
        "--data-dir",
        phone,
        "--broker",
        &url,
        "replies",
        "--wait",
        "15",
    ]);
    assert!(ok, "{text}{err}");
    assert!(
        text.contains("succeeded") && text.contains("receipt"),
        "{text}"
    );
    drop(car);

    // Without a broker, --via relay says what is missing.
    let (ok, _, err) = common::tether(&["phone", "--data-dir", phone, "--via", "relay", "status"]);
    assert!(!ok);
    assert!(err.contains("no relay broker"), "{err}");
    // A malformed broker URL is refused before anything runs.
    let (ok, _, err) = common::tether(&[
        "phone",
        "--data-dir",
        phone,
        "--broker",
        "tcp://x",
        "status",
    ]);
    assert!(!ok);
    assert!(err.contains("mqtt://"), "{err}");
}
