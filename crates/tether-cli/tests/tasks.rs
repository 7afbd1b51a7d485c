//! `tether tasks` across processes: the owner's phone manages super tasks
//! on the car run by `tether head-unit --place …` (issue 5; SPEC §18.1):
//! add from a JSON file, list, run, trace, share as a template (R22),
//! accept it bound to a place, disable, delete; errors are clear.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

mod common;
use common::{KillOnDrop, json, spawn_until, tether};

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/tasks")
        .join(name)
        .to_str()
        .unwrap()
        .to_owned()
}

/// A phone with an account and its car, serving with place "home".
struct Car {
    phone_dir: tempfile::TempDir,
    _car_dir: tempfile::TempDir,
    _head_unit: KillOnDrop,
}

impl Car {
    fn start() -> Self {
        let phone_dir = tempfile::tempdir().unwrap();
        let car_dir = tempfile::tempdir().unwrap();
        let phone = phone_dir.path().to_str().unwrap();
        let (ok, _, err) = tether(&["phone", "--data-dir", phone, "init"]);
        assert!(ok, "{err}");
        let mut head_unit = KillOnDrop(
            Command::new(env!("CARGO_BIN_EXE_tether"))
                .args([
                    "head-unit",
                    "--data-dir",
                    car_dir.path().to_str().unwrap(),
                    "--enroll-from",
                    phone,
                    "--place",
                    "home=48.1372,11.5756,150",
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap(),
        );
        let stdout = head_unit.0.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
        lines
            .by_ref()
            .take(5)
            .find(|l| l.contains("serving on"))
            .expect("head unit did not start");
        let places = lines.next().unwrap_or_default();
        assert_eq!(places, "places for super tasks: home");
        Self {
            phone_dir,
            _car_dir: car_dir,
            _head_unit: head_unit,
        }
    }

    fn phone(&self) -> &str {
        self.phone_dir.path().to_str().unwrap()
    }

    /// `tether tasks --data-dir PHONE --json ARGS…`, which must succeed.
    fn tasks(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["tasks", "--data-dir", self.phone(), "--json"];
        all.extend_from_slice(args);
        json(&all)
    }

    /// `tether tasks --data-dir PHONE ARGS…`, which must fail: its stderr.
    fn tasks_fail(&self, args: &[&str]) -> String {
        let mut all = vec!["tasks", "--data-dir", self.phone()];
        all.extend_from_slice(args);
        let (ok, stdout, stderr) = tether(&all);
        assert!(!ok, "tether {all:?} succeeded: {stdout}");
        stderr
    }
}

#[test]
fn tasks_add_list_run_trace_share_accept_disable_delete_across_processes_r22() {
    let car = Car::start();

    // Add the example task from its proto3 JSON file.
    let added = car.tasks(&["add", "--file", &example("parked-lock.json")]);
    let task = &added["task"];
    let id = task["id"].as_u64().unwrap();
    assert!(id > 0, "{added}");
    assert_eq!(task["name"], "parked: lock up");
    assert_eq!(task["state"], "active");
    assert_eq!(task["enabled"], true);
    assert_eq!(
        task["task"]["triggers"][0]["vehicle"], "VEHICLE_EVENT_PARKED",
        "{added}"
    );
    let id_text = id.to_string();
    let id_arg = id_text.as_str();

    let listed = car.tasks(&["list"]);
    let tasks = listed["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 1, "{listed}");
    assert_eq!(tasks[0]["id"].as_u64(), Some(id));
    assert_eq!(tasks[0]["state"], "active");

    // Run by hand: no fix yet, so whether the car is inside "home" is not
    // known, the condition is false, and the task does not run.
    let run = car.tasks(&["run", id_arg]);
    assert_eq!(run["task_id"].as_u64(), Some(id));
    assert_eq!(run["ran"], false, "{run}");
    assert_eq!(run["run_id"].as_u64(), Some(0));

    // The trace says why: run by hand, "inside home" false, conditions not
    // met, no step taken.
    let traced = car.tasks(&["trace", id_arg]);
    let traces = traced["traces"].as_array().unwrap();
    assert!(!traces.is_empty(), "{traced}");
    let last = traces.last().unwrap();
    assert_eq!(last["task"].as_u64(), Some(id), "{last}");
    assert_eq!(last["cause"]["event"], "EVENT_MANUAL", "{last}");
    let condition = &last["conditions"][0];
    assert!(
        condition["description"].as_str().unwrap().contains("home"),
        "{last}"
    );
    assert_eq!(condition["value"], false, "{last}");
    assert_eq!(
        last["outcome"]["status"], "STATUS_CONDITIONS_NOT_MET",
        "{last}"
    );
    assert_eq!(last["steps"], serde_json::json!([]), "{last}");
    // Readable, too.
    let (ok, text, _) = tether(&["tasks", "--data-dir", car.phone(), "trace", id_arg]);
    assert!(
        ok && text.contains("run by hand") && text.contains("conditions not met"),
        "{text}"
    );
    // `--json` may also follow the step.
    let again = json(&[
        "tasks",
        "--data-dir",
        car.phone(),
        "trace",
        id_arg,
        "--limit",
        "1",
        "--json",
    ]);
    assert_eq!(again["traces"].as_array().map(Vec::len), Some(1), "{again}");

    // Share as a template (R22): the place is a slot, its name and
    // coordinates are not in the file.
    let out_dir = tempfile::tempdir().unwrap();
    let file = out_dir.path().join("lock.template");
    let file = file.to_str().unwrap();
    let shared = car.tasks(&["share", id_arg, "--nickname", "Sam", "--out", file]);
    assert_eq!(shared["slots"], serde_json::json!(["place-1"]), "{shared}");
    assert_eq!(shared["nickname"], "Sam");
    let bytes = std::fs::read(file).unwrap();
    assert_eq!(shared["bytes"].as_u64(), Some(bytes.len() as u64));
    for needle in ["home", "48.137", "11.575"] {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "the template holds {needle:?}"
        );
    }
    assert!(bytes.windows(3).any(|w| w == b"Sam"));
    // The owner may name the template otherwise (R22): the task's own name
    // is then not in it.
    let own_name = added["task"]["task"]["name"].as_str().unwrap().to_owned();
    let named = out_dir.path().join("named.template");
    let named = named.to_str().unwrap();
    let renamed = car.tasks(&[
        "share",
        id_arg,
        "--nickname",
        "Sam",
        "--name",
        "Lock up",
        "--out",
        named,
    ]);
    assert_eq!(renamed["name"], "Lock up", "{renamed}");
    let named_bytes = std::fs::read(named).unwrap();
    assert!(
        !named_bytes
            .windows(own_name.len())
            .any(|w| w == own_name.as_bytes()),
        "the renamed template still holds {own_name:?}"
    );
    let long = "x".repeat(65);
    let err = car.tasks_fail(&[
        "share",
        id_arg,
        "--nickname",
        "Sam",
        "--name",
        &long,
        "--out",
        named,
    ]);
    assert!(err.contains("1..=64"), "{err}");

    // Accept it, bound to this car's "home": a second task.
    let accepted = car.tasks(&["accept", "--template", file, "--bind", "place-1=home"]);
    assert_eq!(accepted["sharer"], "Sam");
    let second = accepted["task"]["id"].as_u64().unwrap();
    assert_ne!(second, id);
    assert_eq!(accepted["task"]["state"], "active");
    assert_eq!(
        accepted["task"]["task"]["conditions"][0]["place"]["place"], "home",
        "{accepted}"
    );
    assert_eq!(car.tasks(&["list"])["tasks"].as_array().unwrap().len(), 2);

    // Disable, then delete.
    let disabled = car.tasks(&["disable", id_arg]);
    assert_eq!(disabled["task"]["state"], "disabled");
    assert_eq!(disabled["task"]["enabled"], false);
    let enabled = car.tasks(&["enable", id_arg]);
    assert_eq!(enabled["task"]["state"], "active");
    let deleted = car.tasks(&["delete", id_arg]);
    assert_eq!(deleted["deleted"].as_u64(), Some(id));
    let left = deleted["tasks"].as_array().unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["id"].as_u64(), Some(second));

    // "Car data to home" (R11).
    assert_eq!(car.tasks(&["consent", "on"])["car_data_to_home"], true);
    assert_eq!(car.tasks(&["consent", "off"])["car_data_to_home"], false);

    // Clear errors, non-zero exit.
    let stderr = car.tasks_fail(&["run", "999"]);
    assert!(stderr.contains("no task 999"), "{stderr}");
    let stderr = car.tasks_fail(&["trace", &id_text]);
    assert!(stderr.contains(&format!("no task {id}")), "{stderr}");
    let stderr = car.tasks_fail(&["accept", "--template", file, "--bind", "place-9=home"]);
    assert!(stderr.contains("no slot \"place-9\""), "{stderr}");
    let stderr = car.tasks_fail(&["accept", "--template", file]);
    assert!(stderr.contains("place-1"), "{stderr}");
}

#[test]
fn a_place_trigger_with_a_notification_shares_without_its_place_or_text_r22() {
    let car = Car::start();
    let added = car.tasks(&[
        "add",
        "--file",
        &example("arrived-notify.json"),
        "--disabled",
    ]);
    assert_eq!(added["task"]["state"], "disabled", "{added}");
    assert_eq!(
        added["task"]["task"]["triggers"][0]["place"]["transition"],
        "TRANSITION_ENTER"
    );
    // Its template asks for a place and a message (the text is the
    // sharer's own, R22).
    let out_dir = tempfile::tempdir().unwrap();
    let file = out_dir.path().join("t");
    let id = added["task"]["id"].to_string();
    let shared = car.tasks(&[
        "share",
        &id,
        "--nickname",
        "Sam",
        "--out",
        file.to_str().unwrap(),
    ]);
    assert_eq!(shared["slots"], serde_json::json!(["place-1", "message-1"]));
    let bytes = std::fs::read(&file).unwrap();
    assert!(!bytes.windows(4).any(|w| w == b"home"));
    assert!(!bytes.windows(8).any(|w| w == b"The car "));
}

#[test]
fn a_file_that_is_not_a_task_is_refused_with_its_path_before_the_car_is_sought() {
    let dir = tempfile::tempdir().unwrap();
    let phone = dir.path().join("phone");
    let phone = phone.to_str().unwrap();
    let (ok, _, err) = tether(&["phone", "--data-dir", phone, "init"]);
    assert!(ok, "{err}");
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{ "name": "x", "trigers": [] }"#).unwrap();
    let bad = bad.to_str().unwrap();
    let (ok, _, stderr) = tether(&["tasks", "--data-dir", phone, "add", "--file", bad]);
    assert!(!ok);
    assert!(
        stderr.contains(bad) && stderr.contains("tether.v1.Task") && stderr.contains("trigers"),
        "{stderr}"
    );
    // Valid JSON, but not a task the wire accepts (no mode).
    let partial = dir.path().join("partial.json");
    std::fs::write(
        &partial,
        r#"{ "name": "x", "actions": [ { "vehicle": { "lock": {} } } ] }"#,
    )
    .unwrap();
    let (ok, _, stderr) = tether(&[
        "tasks",
        "--data-dir",
        phone,
        "add",
        "--file",
        partial.to_str().unwrap(),
    ]);
    assert!(!ok && stderr.contains("partial.json"), "{stderr}");
    let (ok, _, stderr) = tether(&[
        "tasks",
        "--data-dir",
        phone,
        "add",
        "--file",
        "/nonexistent.json",
    ]);
    assert!(!ok && stderr.contains("/nonexistent.json"), "{stderr}");
}

#[test]
fn head_unit_refuses_a_malformed_place() {
    for bad in [
        "home",
        "home=48.1,11.5",
        "home=91,11.5,150",
        "home=48.1,11.5,-1",
        "=1,2,3",
    ] {
        let (ok, _, stderr) = tether(&["head-unit", "--data-dir", "/nonexistent", "--place", bad]);
        assert!(!ok, "{bad} accepted");
        assert!(stderr.contains("--place"), "{bad}: {stderr}");
    }
}

#[test]
fn a_task_on_the_locked_event_runs_when_the_phone_locks_the_car_r21() {
    let car = Car::start();
    let added = car.tasks(&["add", "--file", &example("locked-flash.json")]);
    let id = added["task"]["id"].as_u64().unwrap().to_string();
    assert_eq!(
        added["task"]["task"]["triggers"][0]["vehicle"], "VEHICLE_EVENT_LOCKED",
        "{added}"
    );
    let none = car.tasks(&["trace", &id]);
    assert_eq!(none["traces"], serde_json::json!([]), "{none}");

    // Locking from the phone locks every door: the head unit derives
    // LOCKED from its signals (SPEC §18.6) and the task runs once.
    let (ok, out, err) = tether(&["phone", "--data-dir", car.phone(), "lock"]);
    assert!(ok && out.contains("succeeded"), "{out}{err}");
    let mut traces = serde_json::Value::Null;
    for _ in 0..50 {
        traces = car.tasks(&["trace", &id]);
        if traces["traces"].as_array().is_some_and(|t| !t.is_empty()) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let runs = traces["traces"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{traces}");
    let run = &runs[0];
    assert!(
        run["cause"]["vehicle"]
            .as_str()
            .is_some_and(|c| c.ends_with("VEHICLE_EVENT_LOCKED")),
        "{run}"
    );
    assert_eq!(run["outcome"]["status"], "STATUS_COMPLETED", "{run}");
    assert_eq!(
        run["steps"][0]["result"]["status"], "STATUS_SUCCEEDED",
        "{run}"
    );
    assert!(
        run["steps"][0]["description"]
            .as_str()
            .is_some_and(|d| d.contains("FlashHonk")),
        "{run}"
    );
}

/// `tether hub` serves the home's tasks; `tether tasks --hub` finds it by
/// its own token and manages them from the phone's store (SPEC §18.8).
#[test]
fn tasks_with_hub_manage_the_home_hubs_tasks_across_processes() {
    let phone_dir = tempfile::tempdir().unwrap();
    let hub_dir = tempfile::tempdir().unwrap();
    let phone = phone_dir.path().to_str().unwrap();
    let (ok, _, err) = tether(&["phone", "--data-dir", phone, "init"]);
    assert!(ok, "{err}");
    let hub_dir = hub_dir.path().to_str().unwrap();
    let (_hub, serving) = spawn_until(
        &["hub", "--data-dir", hub_dir, "--enroll-from", phone],
        "hub serving",
    );
    assert!(serving.contains("porch"), "{serving}");
    let on_hub = |args: &[&str]| {
        let mut all = vec!["tasks", "--data-dir", phone, "--hub", "--json"];
        all.extend_from_slice(args);
        json(&all)
    };

    let added = on_hub(&["add", "--file", &example("porch-on.json")]);
    let id = added["task"]["id"].as_u64().unwrap().to_string();
    assert_eq!(added["task"]["state"], "active", "{added}");
    assert_eq!(on_hub(&["list"])["tasks"].as_array().unwrap().len(), 1);
    let run = on_hub(&["run", &id]);
    assert_eq!(run["ran"], true, "{run}");
    let mut traces = serde_json::Value::Null;
    for _ in 0..50 {
        traces = on_hub(&["trace", &id]);
        if traces["traces"][0]["endedMs"].as_u64().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        traces["traces"][0]["outcome"]["status"], "STATUS_COMPLETED",
        "{traces}"
    );

    // The switch is the car's, and an unknown task says whose it is not.
    let (ok, _, err) = tether(&["tasks", "--data-dir", phone, "--hub", "consent", "on"]);
    assert!(!ok && err.contains("the car's"), "{err}");
    let (ok, _, err) = tether(&["tasks", "--data-dir", phone, "--hub", "run", "99"]);
    assert!(!ok && err.contains("no task 99 on the hub"), "{err}");
}
