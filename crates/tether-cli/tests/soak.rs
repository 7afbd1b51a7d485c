//! `tether soak` (issue 15, item 3; RELIABILITY.md §3) in a small run: the
//! command works, its JSON carries the figures, and the invariants hold under
//! load and a non-member flood — no command lost, none run twice, no
//! stranger admitted. The full run's figures are in RELIABILITY.md.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

use std::process::Command;

/// Runs `tether soak --json --quick` with `args` and returns its report,
/// once it exited 0.
fn soak(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["soak", "--json", "--quick"])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "soak {args:?} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap()
}

fn number(report: &serde_json::Value, key: &str) -> u64 {
    report[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} in {report}"))
}

/// A small run's arguments: 20 sessions, 200 requests/s, 1 s per phase,
/// 40 non-member attempts.
const SMALL: [&str; 8] = [
    "--sessions",
    "20",
    "--rate",
    "200",
    "--seconds",
    "1",
    "--flood",
    "40",
];

#[test]
fn r23_r31_a_loaded_and_flooded_head_unit_loses_no_command_and_runs_none_twice() {
    let report = soak(&SMALL);
    let n = |k: &str| number(&report, k);
    assert_eq!(n("sessions"), 20);
    assert_eq!(n("lost"), 0, "{report}");
    assert_eq!(n("duplicated"), 0, "{report}");
    assert_eq!(n("flood_admitted"), 0, "{report}");
    assert_eq!(n("flood_attempts"), 40, "{report}");
    assert_eq!(n("actuations"), n("completed"), "{report}");
    // One second per phase at 200/s: most of the 400 commands go through.
    assert!(n("commands_total") >= 300, "{report}");
    for phase in ["quiet", "flood"] {
        let p99 = report[phase]["latency_p99_us"].as_u64().unwrap();
        assert!(p99 > 0, "{phase}: no latency measured: {report}");
    }
}

/// The hub under its members' task requests (ListTasks, every tenth a
/// RunTask) and the same flood: nothing lost, every run its own number, no
/// stranger admitted.
#[test]
fn r31_a_loaded_and_flooded_hub_answers_every_member_and_admits_no_stranger() {
    let report = soak(&[&["--hub"][..], &SMALL[..]].concat());
    let n = |k: &str| number(&report, k);
    assert_eq!(report["node"], "hub");
    assert_eq!(n("lost"), 0, "{report}");
    assert_eq!(n("duplicated"), 0, "{report}");
    assert_eq!(n("flood_admitted"), 0, "{report}");
    assert!(n("commands_total") >= 300, "{report}");
    // Every tenth request ran the task, each run its own number.
    assert!(n("actuations") >= 30, "{report}");
}
