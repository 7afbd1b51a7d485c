//! The demo a newcomer runs, run as a process: `tether demo --json`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

use std::process::Command;

#[test]
fn demo_json_reports_every_step_ok_with_counted_round_trips() {
    let out = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["demo", "--json"])
        .output()
        .expect("run tether demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {stdout}"));
    assert_eq!(report["ok"], true, "{report:#}");
    assert!(out.status.success());
    let steps = report["steps"].as_array().unwrap();
    // Every step of the demo; the lost phone's two, then the sleeping
    // car's two, last (SPEC §3.6, §19.12).
    assert_eq!(steps.len(), 43, "{report:#}");
    for (i, name) in [
        "owner removes a lost phone",
        "car refuses the lost phone",
        "car sleeps, unlock queued",
        "expired queued command refused",
    ]
    .iter()
    .enumerate()
    {
        assert_eq!(steps[39 + i]["name"], *name, "{report:#}");
    }
    for name in [
        "devices reappear on the LAN",
        "phone lists, renames, reorders",
        "phone controls the lamp",
        "lamp firmware upgrade resumes",
        "co-user controls the lamp",
        "owner shares with a co-user",
        "co-user held to the grant",
        "owner logs out, co-user stays",
        "owner refused until logged in",
        "revocation cuts the co-user off",
        "subscription follows off the LAN",
        "phone leaves home, via broker",
        "subscribe and lock via broker",
        "co-user remote, then revoked",
        "phone back on the LAN",
        "car sleeps, unlock queued",
        "expired queued command refused",
        "hub joins and follows car",
        "owner creates super tasks",
        "car leaves home",
        "car returns after sunset",
        "tasks trace says why",
        "share task as template",
        "car data to home off",
        "owner removes a lost phone",
        "car refuses the lost phone",
    ] {
        assert!(
            steps.iter().any(|s| s["name"] == name),
            "step {name:?} missing: {report:#}"
        );
    }
    // R16: revocation closes the co-user's live session within 1 s.
    assert!(report["details"]["revocation_close_ms"].as_f64().unwrap() < 1000.0);
    let lamp = steps
        .iter()
        .find(|s| s["name"] == "car commissions a lamp")
        .expect("the commissioning step");
    assert!(
        lamp["detail"].as_str().unwrap().contains("no group key"),
        "{lamp}"
    );
    for step in steps {
        assert_eq!(step["ok"], true, "{step}");
        assert!(step["ms"].is_u64());
        assert!(step["name"].is_string());
    }
    // Issue 5: each task's trace says why it fired.
    let traces = &report["details"]["traces"];
    for (task, why) in [
        ("leave", "car left home"),
        ("arrive", "car entered home"),
        ("lock", "car inside home (is inside) = true"),
    ] {
        let lines = traces[task].as_array().unwrap();
        assert!(
            lines
                .iter()
                .any(|l| l.as_str().unwrap().contains(why)
                    && l.as_str().unwrap().ends_with("completed")),
            "{task}: {traces:#}"
        );
    }
    assert_eq!(report["round_trips"]["cold"], 1);
    assert_eq!(report["round_trips"]["resumed"], 0);
    assert_eq!(report["details"]["lock_executions"], 1);
    // The car holds the owner's list: serial 1, group key epoch 1.
    assert_eq!(report["details"]["removal"]["car_serial"], 1);
    assert_eq!(report["details"]["removal"]["group_key_epoch"], 1);
}

#[test]
fn help_lists_every_subcommand() {
    let out = Command::new(env!("CARGO_BIN_EXE_tether"))
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for sub in [
        "demo",
        "head-unit",
        "phone",
        "bench",
        "pair",
        "devices",
        "share",
        "tasks",
        "broker",
    ] {
        assert!(text.contains(sub), "--help does not mention {sub}: {text}");
    }
}
