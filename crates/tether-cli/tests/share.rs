//! `tether share` across processes: an owner shares the car run by
//! `tether head-unit` with a co-user's phone, which reads it, is held to the
//! grant, and is shut out after the owner revokes (R16; SPEC §17).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

mod common;
use common::{KillOnDrop, json, tether};

#[test]
fn share_grant_accept_status_revoke_across_processes_r16() {
    let owner_dir = tempfile::tempdir().unwrap();
    let co_dir = tempfile::tempdir().unwrap();
    let car_dir = tempfile::tempdir().unwrap();
    let owner = owner_dir.path().to_str().unwrap();
    let co = co_dir.path().to_str().unwrap();
    for dir in [owner, co] {
        let (ok, _, err) = tether(&["phone", "--data-dir", dir, "init"]);
        assert!(ok, "{err}");
    }
    let mut car = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_tether"))
            .args([
                "head-unit",
                "--data-dir",
                car_dir.path().to_str().unwrap(),
                "--enroll-from",
                owner,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let stdout = car.0.stdout.take().unwrap();
    BufReader::new(stdout)
        .lines()
        .take(5)
        .map_while(Result::ok)
        .find(|l| l.contains("serving on"))
        .expect("head unit did not start");

    let key = json(&["share", "--data-dir", co, "--json", "key"]);
    let key = key["account_key"].as_str().unwrap();
    assert_eq!(key.len(), 64);

    let granted = json(&[
        "share",
        "--data-dir",
        owner,
        "--json",
        "grant",
        "--to",
        key,
        "--allow",
        "vehicle-status",
        "--nickname",
        "Ana",
    ]);
    let grant_id = granted["grant_id"].as_str().unwrap();
    let invite = granted["invite"].as_str().unwrap();

    let accepted = json(&["share", "--data-dir", co, "--json", "accept", invite]);
    assert_eq!(accepted["sharer"], "Ana");
    assert_eq!(
        accepted["permissions"],
        serde_json::json!(["vehicle-status"])
    );
    let listed = json(&["share", "--data-dir", co, "--json", "list"]);
    assert_eq!(listed["shares"][0]["grant_id"], grant_id);

    let status = json(&["share", "--data-dir", co, "--json", "status", grant_id]);
    assert!(status["signals"].as_array().unwrap().len() > 10, "{status}");

    // The owner's own phone command still works beside it; the co-user's
    // account resolves nothing of the owner's with `phone discover`.
    let (ok, text, _) = tether(&["phone", "--data-dir", co, "discover", "--seconds", "2"]);
    assert!(ok && text.contains("0 member(s)"), "{text}");

    let revoked = json(&["share", "--data-dir", owner, "--json", "revoke", grant_id]);
    assert_eq!(revoked["revoked"], true);
    let (ok, _, stderr) = tether(&[
        "share",
        "--data-dir",
        co,
        "status",
        grant_id,
        "--timeout-s",
        "3",
    ]);
    assert!(!ok, "the co-user still reached the car after revocation");
    assert!(stderr.contains("error"), "{stderr}");

    // Bad input gets a clear error, not a panic.
    let (ok, _, stderr) = tether(&["share", "--data-dir", co, "accept", "zz"]);
    assert!(!ok && stderr.contains("hex"), "{stderr}");
}
