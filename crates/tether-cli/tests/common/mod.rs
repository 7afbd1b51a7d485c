//! Shared by the CLI tests that run `tether` as processes.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // test support

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A background `tether` process (a head unit), killed when dropped.
pub(crate) struct KillOnDrop(pub(crate) Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `tether args…` to the end: success, stdout, stderr.
pub(crate) fn tether(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `tether args…`, which must succeed and print one JSON object.
pub(crate) fn json(args: &[&str]) -> serde_json::Value {
    let (ok, stdout, stderr) = tether(args);
    assert!(ok, "tether {args:?} failed: {stdout}{stderr}");
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// Starts `tether args…` in the background and waits, over its first
/// lines, for one containing `ready`: the process and that line.
pub(crate) fn spawn_until(args: &[&str], ready: &str) -> (KillOnDrop, String) {
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_tether"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let line = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .take(5)
        .find(|l| l.contains(ready))
        .unwrap_or_else(|| panic!("tether {args:?} never printed {ready:?}"));
    (child, line)
}

/// A node's configuration with its state in `dir` (the rest as default:
/// loopback only).
pub(crate) fn config_in(dir: &std::path::Path) -> tether_node::NodeConfig {
    tether_node::NodeConfig {
        data_dir: Some(dir.to_owned()),
        ..tether_node::NodeConfig::default()
    }
}

/// Enrolls a head unit whose state is in `dir` into `owner`'s account, and
/// closes it (a test then runs it, as a process or not).
pub(crate) fn enroll_car_in(owner: &tether_node::Phone, dir: &std::path::Path) {
    let car = tether_node::HeadUnit::open(config_in(dir)).unwrap();
    car.complete_enrollment(
        &owner
            .enroll_device(&car.enrollment_request().unwrap())
            .unwrap(),
    )
    .unwrap();
}
