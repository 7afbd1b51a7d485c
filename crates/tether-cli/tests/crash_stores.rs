//! Crash safety of what the head unit, the hub and the phone keep (issue 15,
//! item 1; RELIABILITY.md §1): a child process edits one node's state in a
//! loop and is killed with SIGKILL at a random moment; the node is then
//! opened on the same data directory and checked against what the child saw
//! acknowledged:
//!
//! - **head unit**: super tasks created, edited and deleted; devices bound
//!   (a lamp commissioned over the simulated radio with the owner's
//!   authority) or attached offline, and unbound;
//! - **hub**: its super tasks;
//! - **phone**: the account authority's state: devices enrolled and removed
//!   (the revocation list, its serial and the group key epoch, SPEC §3.6).
//!
//! Both also switch "car data to home" (a setting, R11/R28) now and then.
//!
//! After every kill: the store opens; every acknowledged write is there
//! with its acknowledged content, and nothing acknowledged as removed came
//! back; the write in flight at the kill took effect entirely or not at all;
//! a deleted task's number is never given to another task (SPEC §18.1);
//! the revocation serial and the group key epoch never go back.
//!
//! The child is this test binary run again with `TETHER_CRASH_CHILD` set
//! (the test `crash_child`; run without it, that test runs each writer for a
//! few steps in this process and checks the clean history the same way).
//! It prints `begin …` before each write and `ack …` once the node returned.
//!
//! Short form (the README's test command): 10 kills per node. Long form:
//! `TETHER_CRASH_KILLS=100 cargo test -p tether-cli --test crash_stores`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a harness may panic on setup failures

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use ring::rand::{SecureRandom, SystemRandom};
use tether_node::proto::v1::{UnbindDevice, request};
use tether_node::tether_automation::{
    Action, DeviceId, Task, TaskId, Trigger, Value, VehicleCommand, VehicleEvent,
};
use tether_node::{
    CommissionRequest, DeviceKey, HOME_SWITCH, HeadUnit, HomeNetwork, Hub, LAMP_PRODUCT_MODEL,
    NodeConfig, Phone, Role, SetupCode, SimulatedAccessory, owner_permissions,
};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const CHILD_ENV: &str = "TETHER_CRASH_CHILD";
const DIR_ENV: &str = "TETHER_CRASH_DIR";
/// The owner's phone directory, for the head unit's commissioning.
const OWNER_ENV: &str = "TETHER_CRASH_OWNER";

fn random_u64() -> u64 {
    let mut b = [0; 8];
    SystemRandom::new().fill(&mut b).unwrap();
    u64::from_le_bytes(b)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn config(dir: &Path) -> NodeConfig {
    NodeConfig {
        data_dir: Some(dir.to_owned()),
        ..NodeConfig::default()
    }
}

fn kills() -> u32 {
    std::env::var("TETHER_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}

/// Which node a writer edits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    HeadUnit,
    Hub,
    Phone,
}

impl Node {
    fn name(self) -> &'static str {
        match self {
            Node::HeadUnit => "head-unit",
            Node::Hub => "hub",
            Node::Phone => "phone",
        }
    }

    fn parse(name: &str) -> Option<Node> {
        [Node::HeadUnit, Node::Hub, Node::Phone]
            .into_iter()
            .find(|node| node.name() == name)
    }
}

// ---- the writers (the child's side) ---------------------------------------

fn home() -> HomeNetwork {
    HomeNetwork {
        ssid: b"Crash Test Home".to_vec(),
        passphrase: b"crash passphrase".to_vec(),
    }
}

fn car_task(name: &str) -> Task {
    Task::new(TaskId(0), name)
        .trigger(Trigger::Vehicle(VehicleEvent::Parked))
        .action(Action::Vehicle(VehicleCommand::Lock))
        .declare_inputs()
}

fn hub_task(name: &str) -> Task {
    Task::new(TaskId(0), name)
        .trigger(Trigger::Manual)
        .action(Action::SetProperty {
            device: DeviceId::new("porch"),
            property: HOME_SWITCH,
            value: Value::Bool(true),
        })
        .declare_inputs()
}

/// Edits tasks (and, on the head unit, devices) until `steps` run out or
/// the process is killed. `emit` gets each `begin`/`ack` line.
async fn write_node(
    node: Node,
    dir: &Path,
    owner: Option<&Path>,
    steps: Option<u64>,
    emit: &mut dyn FnMut(String),
) {
    // Unique task names across child runs: a run prefix.
    let run = random_u64() & 0xffff_ffff;
    let mut car = None;
    let mut hub = None;
    let host = match node {
        Node::HeadUnit => {
            let head_unit = HeadUnit::open(config(dir)).unwrap();
            head_unit.start().await.unwrap();
            car.insert(head_unit).automation().await.unwrap()
        }
        Node::Hub => hub
            .insert(Hub::open(config(dir)).unwrap())
            .start(tether_node::Clock::System)
            .unwrap(),
        Node::Phone => unreachable!("the phone has its own writer"),
    };
    let permissions = owner_permissions();
    // The owner's phone signs the bindings the head unit commissions.
    let owner = owner.map(|dir| Phone::open(config(dir)).unwrap());
    emit("ready".into());
    let mut step = 0u64;
    while steps.is_none_or(|s| step < s) {
        let tasks = host.list();
        let kind = step % 5;
        let name = format!("{run:08x}-{step}");
        let task = |name: &str| match node {
            Node::HeadUnit => car_task(name),
            _ => hub_task(name),
        };
        match kind {
            // A setting: the "car data to home" switch (R11, R28).
            0 if step % 10 == 5 => {
                let on = (step / 10).is_multiple_of(2);
                emit(format!("begin consent {on}"));
                host.set_car_data_to_home(on).unwrap();
                emit(format!("ack consent {on}"));
            }
            2 if !tasks.is_empty() => {
                let id = tasks[step as usize % tasks.len()].task.id.0;
                emit(format!("begin update {id} {name}"));
                host.update(id, task(&name), &permissions).unwrap();
                emit(format!("ack update {id} {name}"));
            }
            // The hub has no devices here: its fourth step deletes too,
            // so its task list stays short.
            3 | 4 if tasks.len() > 2 && (kind == 3 || car.is_none()) => {
                // The oldest or the newest: deleting the newest is what
                // would free its number for reuse (SPEC §18.1).
                let id = if (step / 5).is_multiple_of(2) {
                    tasks[0].task.id.0
                } else {
                    tasks[tasks.len() - 1].task.id.0
                };
                emit(format!("begin delete {id}"));
                host.delete(id).unwrap();
                emit(format!("ack delete {id}"));
            }
            1 | 4 if car.is_some() => {
                let car = car.as_ref().unwrap();
                let devices = car.list_devices().await.unwrap();
                if kind == 4 && devices.len() > 1 {
                    let handle = devices[0].handle.clone();
                    emit(format!("begin unbind {}", hex(&handle)));
                    car.manage_device(request::Kind::UnbindDevice(UnbindDevice {
                        handle: handle.clone(),
                    }))
                    .await
                    .unwrap();
                    emit(format!("ack unbind {}", hex(&handle)));
                } else if (step / 5).is_multiple_of(2) || owner.is_none() {
                    emit("begin attach".into());
                    let handle = car
                        .attach_offline_device(LAMP_PRODUCT_MODEL, Some("1.0".into()))
                        .await
                        .unwrap();
                    emit(format!("ack attach {}", hex(&handle)));
                } else {
                    // A lamp commissioned over the simulated radio: paired,
                    // bound with the owner's authority, provisioned, saved.
                    let owner = owner.as_ref().unwrap();
                    let lamp =
                        SimulatedAccessory::power_on(LAMP_PRODUCT_MODEL, &[home()], 0.0).unwrap();
                    let code = SetupCode::parse(&lamp.setup_qr().unwrap()).unwrap();
                    let lamp_name = format!("lamp-{name}");
                    emit(format!("begin bind {lamp_name}"));
                    car.commission(
                        &lamp.central(),
                        &mut owner.authority().unwrap(),
                        &CommissionRequest::new(code, lamp_name.clone(), home()),
                        |_| {},
                    )
                    .await
                    .unwrap();
                    let handle = car
                        .list_devices()
                        .await
                        .unwrap()
                        .into_iter()
                        .find(|d| d.name == lamp_name)
                        .expect("the commissioned lamp is listed")
                        .handle;
                    emit(format!("ack bind {}", hex(&handle)));
                }
            }
            _ => {
                emit(format!("begin create {name}"));
                let info = host.create(task(&name), true, &permissions).unwrap();
                emit(format!("ack create {} {name}", info.task.id.0));
            }
        }
        step += 1;
    }
}

/// Enrolls watches and removes the oldest every third step, on the phone
/// that hosts the account authority.
fn write_phone(dir: &Path, steps: Option<u64>, emit: &mut dyn FnMut(String)) {
    let phone = Phone::open(config(dir)).unwrap();
    emit("ready".into());
    let mut step = 0u64;
    while steps.is_none_or(|s| step < s) {
        let devices = phone.account_devices().unwrap();
        let removable: Vec<_> = devices
            .iter()
            .filter(|d| !d.removed && !d.this_device)
            .collect();
        // A revocation list holds at most 256 keys (SPEC §3.6): the long
        // form stops removing short of it and goes on enrolling.
        let removed = devices.iter().filter(|d| d.removed).count();
        if step % 3 == 2 && !removable.is_empty() && removed < 250 {
            let key = removable[0].public_key;
            emit(format!("begin remove {}", hex(&key)));
            let removal = phone.remove_device(key).unwrap();
            emit(format!(
                "ack remove {} {} {}",
                hex(&key),
                removal.serial,
                removal.group_key_epoch
            ));
        } else {
            let key = DeviceKey::generate().unwrap();
            let mut nonce = [0; 16];
            SystemRandom::new().fill(&mut nonce).unwrap();
            let enrollment = key.enrollment_request(Role::Watch, nonce);
            emit(format!("begin enroll {}", hex(&key.public_key())));
            phone.enroll_device(&enrollment).unwrap();
            emit(format!("ack enroll {}", hex(&key.public_key())));
        }
        step += 1;
    }
}

// ---- the checks (the parent's side) --------------------------------------

/// What the parent knows of a node's tasks and devices.
#[derive(Debug, Default)]
struct TaskModel {
    /// Task number → name, as acknowledged.
    tasks: BTreeMap<u64, String>,
    /// Every number ever acknowledged as deleted.
    deleted: BTreeSet<u64>,
    /// The highest task number ever seen.
    highest: u64,
    /// Device handles (hex) attached and not unbound.
    devices: BTreeSet<String>,
    /// Every handle acknowledged as unbound.
    unbound: BTreeSet<String>,
    /// The "car data to home" switch as last acknowledged (None: never set,
    /// the default, off).
    consent: Option<bool>,
}

/// What the parent knows of the phone's authority.
#[derive(Debug, Default)]
struct AuthorityModel {
    enrolled: BTreeSet<String>,
    removed: BTreeSet<String>,
    serial: u64,
    epoch: u32,
}

/// A child's history: the acknowledged lines, in order, and the write in
/// flight at the kill (a `begin` with no `ack`).
fn history(lines: &[String]) -> (Vec<Vec<String>>, Option<Vec<String>>) {
    let mut acks = Vec::new();
    let mut pending = None;
    for line in lines {
        let words: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        match words.first().map(String::as_str) {
            Some("begin") => pending = Some(words[1..].to_vec()),
            Some("ack") => {
                acks.push(words[1..].to_vec());
                pending = None;
            }
            _ => {}
        }
    }
    (acks, pending)
}

/// Applies the acknowledged writes to the model.
fn apply_task_acks(model: &mut TaskModel, acks: &[Vec<String>], round: u32) {
    for ack in acks {
        match ack[0].as_str() {
            "create" => {
                let id: u64 = ack[1].parse().unwrap();
                assert!(
                    id > model.highest,
                    "round {round}: new task {id} did not get a fresh number (highest seen {})",
                    model.highest
                );
                assert!(
                    !model.deleted.contains(&id),
                    "round {round}: deleted task {id}'s number was given again"
                );
                model.highest = id;
                model.tasks.insert(id, ack[2].clone());
            }
            "update" => {
                let id: u64 = ack[1].parse().unwrap();
                model.tasks.insert(id, ack[2].clone());
            }
            "delete" => {
                let id: u64 = ack[1].parse().unwrap();
                model.tasks.remove(&id);
                model.deleted.insert(id);
            }
            "consent" => model.consent = Some(ack[1] == "true"),
            "attach" | "bind" => {
                model.devices.insert(ack[1].clone());
            }
            "unbind" => {
                model.devices.remove(&ack[1]);
                model.unbound.insert(ack[1].clone());
            }
            other => panic!("unknown ack {other}"),
        }
    }
}

/// Checks the node's tasks and devices after a kill against the model, then
/// adopts the outcome of the write in flight.
fn check_tasks(
    model: &mut TaskModel,
    pending: Option<&[String]>,
    found_tasks: BTreeMap<u64, String>,
    found_devices: Option<BTreeSet<String>>,
    round: u32,
) {
    for id in found_tasks.keys() {
        assert!(
            !model.deleted.contains(id),
            "round {round}: deleted task {id} came back"
        );
    }
    let mut expected = model.tasks.clone();
    match pending {
        Some([op, name]) if op == "create" => {
            // Created entirely (one new task of that name) or not at all.
            let new: Vec<_> = found_tasks
                .iter()
                .filter(|(id, _)| !expected.contains_key(id))
                .collect();
            assert!(new.len() <= 1, "round {round}: extra tasks {new:?}");
            if let Some((id, found_name)) = new.first() {
                assert_eq!(*found_name, name, "round {round}: a task nobody created");
                assert!(**id > model.highest, "round {round}: reused number {id}");
                model.highest = **id;
                expected.insert(**id, name.clone());
            }
        }
        Some([op, id, name]) if op == "update" => {
            let id: u64 = id.parse().unwrap();
            if found_tasks.get(&id) == Some(name) {
                expected.insert(id, name.clone());
            }
        }
        Some([op, id]) if op == "delete" => {
            let id: u64 = id.parse().unwrap();
            if !found_tasks.contains_key(&id) {
                expected.remove(&id);
                model.deleted.insert(id);
            }
        }
        _ => {}
    }
    assert_eq!(
        found_tasks, expected,
        "round {round}: the tasks differ from what was acknowledged (in flight: {pending:?})"
    );
    model.tasks = expected;
    let Some(found) = found_devices else {
        return;
    };
    for handle in &found {
        assert!(
            !model.unbound.contains(handle),
            "round {round}: unbound device {handle} came back"
        );
    }
    let mut expected = model.devices.clone();
    match pending {
        Some([op]) | Some([op, _]) if op == "attach" || op == "bind" => {
            let new: Vec<_> = found.difference(&expected).cloned().collect();
            assert!(new.len() <= 1, "round {round}: extra devices {new:?}");
            expected.extend(new);
        }
        Some([op, handle]) if op == "unbind" && !found.contains(handle) => {
            expected.remove(handle);
            model.unbound.insert(handle.clone());
        }
        _ => {}
    }
    assert_eq!(
        found, expected,
        "round {round}: the devices differ from what was acknowledged (in flight: {pending:?})"
    );
    model.devices = expected;
}

/// The "car data to home" switch after a kill: as last acknowledged, or
/// what the switch in flight set.
fn check_consent(model: &mut TaskModel, pending: Option<&[String]>, found: bool, round: u32) {
    let acked = model.consent.unwrap_or(false);
    match pending {
        Some([op, value]) if op == "consent" => {
            let flight = value == "true";
            assert!(
                found == acked || found == flight,
                "round {round}: the consent is {found}, neither {acked} nor the switch in flight"
            );
            model.consent = Some(found);
        }
        _ => assert_eq!(found, acked, "round {round}: the consent setting was lost"),
    }
}

/// The head unit's or hub's tasks (number → name) and, for the head unit,
/// its devices, read by opening the node on `dir`.
async fn read_node(
    node: Node,
    dir: &Path,
) -> (BTreeMap<u64, String>, Option<BTreeSet<String>>, bool) {
    let names = |infos: Vec<tether_node::TaskInfo>| {
        infos
            .into_iter()
            .map(|info| (info.task.id.0, info.task.name))
            .collect::<BTreeMap<_, _>>()
    };
    match node {
        Node::HeadUnit => {
            let car = HeadUnit::open(config(dir)).expect("the head unit's store opens");
            car.start().await.unwrap();
            let host = car.automation().await.unwrap();
            let consent = host.car_data_to_home();
            let tasks = names(host.list());
            let devices = car
                .list_devices()
                .await
                .unwrap()
                .into_iter()
                .map(|d| hex(&d.handle))
                .collect();
            car.shutdown().await.unwrap();
            (tasks, Some(devices), consent)
        }
        Node::Hub => {
            let hub = Hub::open(config(dir)).expect("the hub's store opens");
            let host = hub.start(tether_node::Clock::System).unwrap();
            (names(host.list()), None, host.car_data_to_home())
        }
        Node::Phone => unreachable!(),
    }
}

fn check_authority(
    model: &mut AuthorityModel,
    acks: &[Vec<String>],
    pending: Option<&[String]>,
    dir: &Path,
    round: u32,
) {
    for ack in acks {
        match ack[0].as_str() {
            "enroll" => {
                model.enrolled.insert(ack[1].clone());
            }
            "remove" => {
                model.removed.insert(ack[1].clone());
                let serial: u64 = ack[2].parse().unwrap();
                let epoch: u32 = ack[3].parse().unwrap();
                assert!(serial > model.serial, "round {round}: serial went back");
                assert!(epoch > model.epoch, "round {round}: epoch went back");
                model.serial = serial;
                model.epoch = epoch;
            }
            other => panic!("unknown ack {other}"),
        }
    }
    let phone = Phone::open(config(dir)).expect("the phone's store opens");
    let devices: BTreeMap<String, bool> = phone
        .account_devices()
        .unwrap()
        .into_iter()
        .filter(|d| !d.this_device)
        .map(|d| (hex(&d.public_key), d.removed))
        .collect();
    for key in &model.enrolled {
        assert!(
            devices.contains_key(key),
            "round {round}: enrolled device {key} was lost"
        );
    }
    for key in &model.removed {
        assert_eq!(
            devices.get(key),
            Some(&true),
            "round {round}: removed device {key} is back"
        );
    }
    let serial = phone.revocation_serial().unwrap();
    let epoch = phone.group_key_epoch().unwrap();
    assert!(
        serial >= model.serial,
        "round {round}: revocation serial {serial} < acknowledged {}",
        model.serial
    );
    assert!(
        epoch >= model.epoch,
        "round {round}: epoch {epoch} < acknowledged {}",
        model.epoch
    );
    // The write in flight: entirely or not at all, and consistent.
    match pending {
        Some([op, key]) if op == "enroll" && devices.contains_key(key) => {
            model.enrolled.insert(key.clone());
        }
        Some([op, key]) if op == "remove" => {
            let removed = devices.get(key) == Some(&true);
            assert_eq!(
                removed,
                serial > model.serial,
                "round {round}: the removal in flight left the list and the device disagreeing"
            );
            if removed {
                model.removed.insert(key.clone());
            }
        }
        _ => {}
    }
    // Every device the phone lists as removed is on a list the serial counts.
    let removed_now = devices.values().filter(|r| **r).count();
    assert!(
        serial as usize >= removed_now,
        "round {round}: {removed_now} removed devices but serial {serial}"
    );
    model.serial = serial;
    model.epoch = epoch;
    // The authority still signs: a new enrollment works.
    let key = DeviceKey::generate().unwrap();
    let enrollment = key.enrollment_request(Role::Watch, [7; 16]);
    phone
        .enroll_device(&enrollment)
        .expect("the authority signs after a restart");
    model.enrolled.insert(hex(&key.public_key()));
}

/// The child's own lines (after the `@ ` marker); the test harness's are
/// skipped.
struct ChildLines(tokio::io::Lines<BufReader<tokio::process::ChildStdout>>);

impl ChildLines {
    async fn next_line(&mut self) -> std::io::Result<Option<String>> {
        loop {
            match self.0.next_line().await? {
                Some(line) => {
                    if let Some(ours) = line.strip_prefix("@ ") {
                        return Ok(Some(ours.to_owned()));
                    }
                }
                None => return Ok(None),
            }
        }
    }
}

/// Runs the child on `dir` until a random moment, kills it with SIGKILL and
/// returns what it printed.
async fn run_and_kill(node: Node, dir: &Path, owner: Option<&Path>) -> Vec<String> {
    let mut child = Command::new(std::env::current_exe().unwrap());
    if let Some(owner) = owner {
        child.env(OWNER_ENV, owner);
    }
    let mut child = child
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, node.name())
        .env(DIR_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let mut lines = ChildLines(lines);
    // Ready first (the store opened), then a random moment 5 to 200 ms in.
    let ready = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line == "ready" {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(ready, Ok(true), "the {} child did not start", node.name());
    // The head unit's commissioning takes longer than any other write (a
    // pairing, a binding, a provisioning): a wider window lets some finish
    // and kills others at every stage.
    let window = if node == Node::HeadUnit { 1500 } else { 196 };
    let kill_at = tokio::time::sleep(Duration::from_millis(5 + random_u64() % window));
    tokio::pin!(kill_at);
    loop {
        tokio::select! {
            line = lines.next_line() => match line.unwrap() {
                Some(line) => seen.push(line),
                None => panic!("the {} child ended by itself: {seen:?}", node.name()),
            },
            () = &mut kill_at => break,
        }
    }
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    // Lines already written before the kill.
    while let Ok(Some(line)) = lines.next_line().await {
        seen.push(line);
    }
    seen
}

/// Enrolls a head unit or hub on `dir` with a new owner, whose phone's
/// directory is returned (the head unit's child commissions with it).
fn enrolled_car_and_hub(dir: &Path, node: Node) -> tempfile::TempDir {
    let owner_dir = tempfile::tempdir().unwrap();
    let owner = Phone::open(config(owner_dir.path())).unwrap();
    owner.create_account().unwrap();
    match node {
        Node::HeadUnit => {
            let car = HeadUnit::open(config(dir)).unwrap();
            car.complete_enrollment(
                &owner
                    .enroll_device(&car.enrollment_request().unwrap())
                    .unwrap(),
            )
            .unwrap();
        }
        Node::Hub => {
            let hub = Hub::open(config(dir)).unwrap();
            hub.complete_enrollment(
                &owner
                    .enroll_device(&hub.enrollment_request().unwrap())
                    .unwrap(),
            )
            .unwrap();
        }
        Node::Phone => unreachable!("the phone is its own authority"),
    }
    owner_dir
}

async fn crash_tasks(node: Node) {
    let dir = tempfile::tempdir().unwrap();
    let owner = enrolled_car_and_hub(dir.path(), node);
    let mut model = TaskModel::default();
    let mut writes = 0;
    let mut in_flight = 0;
    let (mut binds, mut binds_in_flight) = (0, 0);
    for round in 0..kills() {
        let lines = run_and_kill(node, dir.path(), Some(owner.path())).await;
        let (acks, pending) = history(&lines);
        writes += acks.len();
        in_flight += usize::from(pending.is_some());
        binds += acks.iter().filter(|a| a[0] == "bind").count();
        binds_in_flight += usize::from(pending.as_ref().is_some_and(|p| p[0] == "bind"));
        apply_task_acks(&mut model, &acks, round);
        let (tasks, devices, consent) = read_node(node, dir.path()).await;
        check_consent(&mut model, pending.as_deref(), consent, round);
        check_tasks(&mut model, pending.as_deref(), tasks, devices, round);
    }
    assert!(writes > kills() as usize, "too few writes: {writes}");
    assert!(!model.deleted.is_empty(), "no deletion was tested");
    eprintln!(
        "{}: {} kills, {writes} writes acknowledged ({binds} commissioned devices), {in_flight} in flight at a kill ({binds_in_flight} commissionings), {} tasks and {} devices at the end, {} tasks deleted",
        node.name(),
        kills(),
        model.tasks.len(),
        model.devices.len(),
        model.deleted.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r23_head_unit_tasks_and_devices_survive_sigkill_mid_write() {
    crash_tasks(Node::HeadUnit).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r23_hub_tasks_survive_sigkill_mid_write() {
    crash_tasks(Node::Hub).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r16_the_phones_authority_survives_sigkill_mid_write() {
    let dir = tempfile::tempdir().unwrap();
    Phone::open(config(dir.path()))
        .unwrap()
        .create_account()
        .unwrap();
    let mut model = AuthorityModel::default();
    let mut writes = 0;
    for round in 0..kills() {
        let lines = run_and_kill(Node::Phone, dir.path(), None).await;
        let (acks, pending) = history(&lines);
        writes += acks.len();
        check_authority(&mut model, &acks, pending.as_deref(), dir.path(), round);
    }
    assert!(writes > kills() as usize, "too few writes: {writes}");
    assert!(!model.removed.is_empty(), "no removal was tested");
    eprintln!(
        "phone: {} kills, {writes} writes acknowledged, {} devices enrolled, {} removed, serial {}",
        kills(),
        model.enrolled.len(),
        model.removed.len(),
        model.serial
    );
}

/// The child's entry (`TETHER_CRASH_CHILD=<node>`): writes until killed.
/// Without it: each writer runs a few steps here, and its clean history
/// checks out against the node it leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_child() {
    if let Some(node) = std::env::var(CHILD_ENV).ok().and_then(|n| Node::parse(&n)) {
        let dir = std::path::PathBuf::from(std::env::var(DIR_ENV).unwrap());
        // libtest writes "test crash_child ... " with no newline first: a
        // marker starts each of the child's lines.
        let mut emit = |line: String| println!("\n@ {line}");
        match node {
            Node::Phone => write_phone(&dir, None, &mut emit),
            node => {
                let owner = std::env::var(OWNER_ENV).ok().map(std::path::PathBuf::from);
                write_node(node, &dir, owner.as_deref(), None, &mut emit).await
            }
        }
        return;
    }
    for node in [Node::HeadUnit, Node::Hub] {
        let dir = tempfile::tempdir().unwrap();
        let owner = enrolled_car_and_hub(dir.path(), node);
        let mut lines = Vec::new();
        write_node(node, dir.path(), Some(owner.path()), Some(20), &mut |l| {
            lines.push(l)
        })
        .await;
        let (acks, pending) = history(&lines);
        assert_eq!(acks.len(), 20);
        if node == Node::HeadUnit {
            assert!(
                acks.iter().any(|a| a[0] == "bind"),
                "no device was commissioned: {acks:?}"
            );
        }
        assert!(pending.is_none());
        let mut model = TaskModel::default();
        apply_task_acks(&mut model, &acks, 0);
        let (tasks, devices, consent) = read_node(node, dir.path()).await;
        check_consent(&mut model, None, consent, 0);
        check_tasks(&mut model, None, tasks, devices, 0);
        assert!(model.consent.is_some(), "no setting was written");
        assert!(!model.deleted.is_empty() && !model.tasks.is_empty());
    }
    let dir = tempfile::tempdir().unwrap();
    Phone::open(config(dir.path()))
        .unwrap()
        .create_account()
        .unwrap();
    let mut lines = Vec::new();
    write_phone(dir.path(), Some(9), &mut |l| lines.push(l));
    let (acks, pending) = history(&lines);
    assert_eq!(acks.len(), 9);
    assert!(pending.is_none());
    let mut model = AuthorityModel::default();
    check_authority(&mut model, &acks, None, dir.path(), 0);
    assert_eq!(model.removed.len(), 3);
}
