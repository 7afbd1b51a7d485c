//! `tether tasks`: the car's super tasks (or, with `--hub`, the home hub's),
//! one step per command, over the owner's phone session (issue 5; SPEC
//! §18.1, §18.8; R20–R22, R11).
//!
//! ```text
//! tether tasks --data-dir PHONE add --file examples/tasks/parked-lock.json
//! tether tasks --data-dir PHONE list
//! tether tasks --data-dir PHONE run 1            # 0: did not run; see `trace`
//! tether tasks --data-dir PHONE trace 1 --limit 5
//! tether tasks --data-dir PHONE share 1 --nickname Sam --out lock.template
//! tether tasks --data-dir OTHER accept --template lock.template --bind place-1=home
//! tether tasks --data-dir PHONE disable 1 | enable 1 | delete 1
//! tether tasks --data-dir PHONE consent off      # "car data to home" (R11)
//! tether tasks --data-dir PHONE --hub list       # the home hub's tasks (§18.8)
//! ```
//!
//! A task file is the proto3 JSON form of `tether.v1.Task`
//! (`proto/tether/v1/automation.proto`), read by reflection over
//! [`tether_node::proto::FILE_DESCRIPTOR_SET`]. With `--json` each step prints one
//! JSON object; the tasks and traces in it are in that same proto3 JSON
//! form, except that 64-bit integers are numbers, not strings, and fields
//! at their default value are written too. A template
//! file is the binary `tether.v1.TaskTemplate` as it travels (R22);
//! `accept` also reads one in proto3 JSON.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::Duration;

use clap::{Subcommand, ValueEnum};
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};
use serde_json::{Value as Json, json};
use tether_node::ControlError;
use tether_node::proto::prost::Message;
use tether_node::proto::v1 as pb;
use tether_node::tether_automation::template::{Binding, Template};
use tether_node::tether_automation::{DeviceId, PlaceId, Task, Trace, wire};
use tether_node::{
    Interfaces, NodeConfig, NodeError, Phone, TaskInfo, TaskState, Tasks, VehicleLink,
};

use crate::demo_tasks::describe_trace;

/// How long to look for the car before giving up.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(15);

/// What `tether tasks` does.
#[derive(Debug, Subcommand)]
pub(crate) enum TasksAction {
    /// Install a task on the car from a file (proto3 JSON of `tether.v1.Task`).
    Add {
        /// The task file, e.g. examples/tasks/parked-lock.json.
        #[arg(long)]
        file: PathBuf,
        /// Install it switched off.
        #[arg(long)]
        disabled: bool,
    },
    /// List the car's tasks: id, name, whether enabled, state.
    List,
    /// Run a task now (its conditions still apply).
    Run {
        /// The task's id.
        id: u64,
    },
    /// Show a task's latest runs: cause, conditions, steps, outcome.
    Trace {
        /// The task's id.
        id: u64,
        /// At most this many, the newest (0: all the car keeps).
        #[arg(long, default_value_t = 0)]
        limit: u32,
    },
    /// Write a task as a template to share (R22): no place, device or
    /// notification text of yours goes in it, only slots to bind.
    Share {
        /// The task's id.
        id: u64,
        /// Your nickname, shown to the recipient.
        #[arg(long)]
        nickname: String,
        /// The task's name in the template (1 to 64 bytes), instead of the
        /// name you gave it, which may say where or who.
        #[arg(long)]
        name: Option<String>,
        /// Where to write the template (binary `tether.v1.TaskTemplate`).
        #[arg(long)]
        out: PathBuf,
    },
    /// Install a template someone shared, bound to your own places, devices
    /// and texts.
    Accept {
        /// The template file (binary, as `share` writes it, or proto3 JSON).
        #[arg(long)]
        template: PathBuf,
        /// SLOT=VALUE for each slot: place-N=<your place name>,
        /// device-N=<your device id>, message-N=<your text>.
        #[arg(long = "bind", value_name = "SLOT=VALUE")]
        binds: Vec<String>,
        /// Install it switched off.
        #[arg(long)]
        disabled: bool,
    },
    /// Switch a task on.
    Enable {
        /// The task's id.
        id: u64,
    },
    /// Switch a task off (it is kept).
    Disable {
        /// The task's id.
        id: u64,
    },
    /// Remove a task and its traces.
    Delete {
        /// The task's id.
        id: u64,
    },
    /// Turn "car data to home" on or off (R11): off, no car event reaches
    /// the home hub and its tasks that need one are disabled.
    Consent {
        /// On or off.
        #[arg(value_enum)]
        switch: Switch,
    },
}

/// A switch position on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Switch {
    /// On.
    On,
    /// Off.
    Off,
}

/// Why a `tether tasks` step failed.
#[derive(Debug, thiserror::Error)]
enum TasksError {
    /// The car (or the hub) has no task with this id (the user's to fix).
    #[error("no task {0} on the {1}")]
    NoTask(u64, &'static str),
    /// A file could not be read or written.
    #[error("{}: {error}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// A file is not what the step expects (the JSON or protobuf error).
    #[error("{}: not a {what}: {error}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What it should have been.
        what: &'static str,
        /// Why it is not.
        error: String,
    },
    /// A command-line value is wrong.
    #[error("{0}")]
    Usage(String),
    /// Finding the car, the session or the car's answer failed.
    #[error(transparent)]
    Node(#[from] NodeError),
}

/// Runs one `tether tasks` step for the phone whose state is in
/// `data_dir`. Every failure is printed here, as `error: …`.
pub(crate) async fn run(
    data_dir: PathBuf,
    interfaces: Interfaces,
    json_out: bool,
    hub: bool,
    action: TasksAction,
) -> Result<ExitCode, NodeError> {
    match step(data_dir, interfaces, json_out, hub, action).await {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn step(
    data_dir: PathBuf,
    interfaces: Interfaces,
    json_out: bool,
    hub: bool,
    action: TasksAction,
) -> Result<(), TasksError> {
    let whose = if hub { "hub" } else { "car" };
    let flag = if hub { " --hub" } else { "" };
    let phone = Phone::open(NodeConfig {
        data_dir: Some(data_dir),
        interfaces,
        ..NodeConfig::default()
    })?;
    let out = Output { json: json_out };
    match action {
        TasksAction::Add { file, disabled } => {
            // Read the file before looking for the car: a bad file fails fast.
            let task = read_task(&file)?;
            let info = on_peer(&phone, hub, None, async |link| {
                link.create_task(&task, !disabled).await
            })
            .await?;
            out.emit(
                json!({ "task": info_json(&info) }),
                format!("added {}", info_line(&info)),
            );
        }
        TasksAction::List => {
            let tasks = on_peer(&phone, hub, None, async |link| link.list_tasks().await).await?;
            out.emit(
                json!({ "tasks": tasks.iter().map(info_json).collect::<Vec<_>>() }),
                if tasks.is_empty() {
                    format!("no tasks on the {whose}")
                } else {
                    lines(tasks.iter().map(info_line))
                },
            );
        }
        TasksAction::Run { id } => {
            let run = on_peer(&phone, hub, Some(id), async |link| link.run_task(id).await).await?;
            out.emit(
                json!({ "task_id": id, "ran": run != 0, "run_id": run }),
                if run == 0 {
                    format!(
                        "task {id} did not run (its mode or conditions kept it from running); \
                         `tether tasks{flag} trace {id}` says why"
                    )
                } else {
                    format!(
                        "task {id}: run {run} started; `tether tasks{flag} trace {id}` shows it"
                    )
                },
            );
        }
        TasksAction::Trace { id, limit } => {
            let traces = on_peer(&phone, hub, Some(id), async |link| {
                link.task_traces(id, limit).await
            })
            .await?;
            out.emit(
                json!({
                    "task_id": id,
                    "traces": traces.iter().map(trace_json).collect::<Vec<_>>(),
                }),
                if traces.is_empty() {
                    format!("task {id} has no traces yet")
                } else {
                    lines(traces.iter().map(trace_line))
                },
            );
        }
        TasksAction::Share {
            id,
            nickname,
            name,
            out: path,
        } => {
            let template = on_peer(&phone, hub, Some(id), async |link| {
                link.share_task(id, &nickname, name.as_deref()).await
            })
            .await?;
            let bytes = wire::encode_template(&template);
            std::fs::write(&path, &bytes).map_err(|error| TasksError::File {
                path: path.clone(),
                error,
            })?;
            out.emit(
                template_json(&template, &path, bytes.len()),
                template_text(&template, &path, bytes.len()),
            );
        }
        TasksAction::Accept {
            template: path,
            binds,
            disabled,
        } => {
            let template = read_template(&path)?;
            let binding = parse_binding(&template, &binds)?;
            // Bind here first: a missing or unknown slot is reported
            // without looking for the car (the car checks it again).
            template
                .bind(&binding)
                .map_err(|e| TasksError::Usage(format!("{e} (see `--bind SLOT=VALUE`)")))?;
            let info = on_peer(&phone, hub, None, async |link| {
                link.accept_template(&template, &binding, !disabled).await
            })
            .await?;
            out.emit(
                json!({ "sharer": template.nickname, "task": info_json(&info) }),
                format!(
                    "accepted {:?}'s template: {}",
                    template.nickname,
                    info_line(&info)
                ),
            );
        }
        TasksAction::Enable { id } | TasksAction::Disable { id } => {
            let on = matches!(action, TasksAction::Enable { .. });
            let info = on_peer(&phone, hub, Some(id), async |link| {
                link.set_task_enabled(id, on).await
            })
            .await?;
            out.emit(json!({ "task": info_json(&info) }), info_line(&info));
        }
        TasksAction::Delete { id } => {
            let left = on_peer(&phone, hub, Some(id), async |link| {
                link.delete_task(id).await
            })
            .await?;
            out.emit(
                json!({ "deleted": id, "tasks": left.iter().map(info_json).collect::<Vec<_>>() }),
                format!("deleted task {id}; {} task(s) left", left.len()),
            );
        }
        TasksAction::Consent { switch } => {
            if hub {
                return Err(TasksError::Usage(
                    "the \"car data to home\" switch is the car's: run it without --hub".into(),
                ));
            }
            let on = on_car(&phone, None, async |link| {
                link.set_car_data_to_home(switch == Switch::On).await
            })
            .await?;
            out.emit(
                json!({ "car_data_to_home": on }),
                format!("car data to home: {}", if on { "on" } else { "off" }),
            );
        }
    }
    Ok(())
}

/// Finds the car, opens a session, makes `call` and closes it. A "not
/// found" answer to a step about task `id` is reported as such.
async fn on_car<T>(
    phone: &Phone,
    id: Option<u64>,
    call: impl AsyncFnOnce(&VehicleLink) -> Result<T, NodeError>,
) -> Result<T, TasksError> {
    let found = phone.discover_vehicle(DISCOVERY_TIMEOUT).await?;
    let link = phone.connect(found.address).await?;
    let result = call(&link).await;
    link.close();
    result.map_err(|e| not_found(id, "car", e))
}

/// As [`on_car`] for the tasks of the car, or with `hub` of the home hub,
/// found by its own token (SPEC §18.8).
async fn on_peer<T>(
    phone: &Phone,
    hub: bool,
    id: Option<u64>,
    call: impl AsyncFnOnce(&Tasks) -> Result<T, NodeError>,
) -> Result<T, TasksError> {
    if !hub {
        return on_car(phone, id, async |link| call(&link.tasks()).await).await;
    }
    let found = phone.discover_hub(DISCOVERY_TIMEOUT).await?;
    let link = phone.connect_hub(found).await?;
    let result = call(&link.tasks()).await;
    link.close();
    result.map_err(|e| not_found(id, "hub", e))
}

fn not_found(id: Option<u64>, whose: &'static str, error: NodeError) -> TasksError {
    match (id, error) {
        (Some(id), NodeError::Control(ControlError::NotFound(_))) => TasksError::NoTask(id, whose),
        (_, e) => e.into(),
    }
}

/// Prints one JSON object or readable lines.
struct Output {
    json: bool,
}

impl Output {
    fn emit(&self, value: Json, text: String) {
        if self.json {
            println!("{value}");
        } else {
            println!("{text}");
        }
    }
}

fn lines(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join("\n")
}

// ---- files ------------------------------------------------------------

fn read(path: &Path) -> Result<Vec<u8>, TasksError> {
    std::fs::read(path).map_err(|error| TasksError::File {
        path: path.to_owned(),
        error,
    })
}

/// A task file: proto3 JSON of `tether.v1.Task`, decoded by the wire's
/// rules (limits, required fields; SPEC §18.1).
fn read_task(path: &Path) -> Result<Task, TasksError> {
    const WHAT: &str = "tether.v1.Task in proto3 JSON";
    let format = |error: String| TasksError::Format {
        path: path.to_owned(),
        what: WHAT,
        error,
    };
    let bytes = read(path)?;
    let text = std::str::from_utf8(&bytes).map_err(|e| format(e.to_string()))?;
    let message: pb::Task = from_json("tether.v1.Task", text).map_err(format)?;
    wire::task_from_proto(message).map_err(|e| format(e.to_string()))
}

/// A template file: binary `tether.v1.TaskTemplate` (as `share` writes
/// it) or its proto3 JSON.
fn read_template(path: &Path) -> Result<Template, TasksError> {
    let bytes = read(path)?;
    let json_text = std::str::from_utf8(&bytes)
        .ok()
        .filter(|t| t.trim_start().starts_with('{'));
    let (what, decoded) = match json_text {
        Some(text) => (
            "tether.v1.TaskTemplate in proto3 JSON",
            from_json::<pb::TaskTemplate>("tether.v1.TaskTemplate", text)
                .and_then(|m| wire::template_from_proto(m).map_err(|e| e.to_string())),
        ),
        None => (
            "tether.v1.TaskTemplate",
            wire::decode_template(&bytes).map_err(|e| e.to_string()),
        ),
    };
    decoded.map_err(|error| TasksError::Format {
        path: path.to_owned(),
        what,
        error,
    })
}

/// `--bind SLOT=VALUE`s against the template's slots: each slot of the
/// template at most once, and nothing else.
fn parse_binding(template: &Template, binds: &[String]) -> Result<Binding, TasksError> {
    let mut binding = Binding::default();
    for bind in binds {
        let (slot, value) = bind.split_once('=').ok_or_else(|| {
            TasksError::Usage(format!(
                "--bind {bind:?}: expected SLOT=VALUE, e.g. place-1=home"
            ))
        })?;
        let fresh = if template.places.iter().any(|p| p.slot == slot) {
            binding
                .places
                .insert(slot.to_owned(), PlaceId::new(value))
                .is_none()
        } else if template.devices.iter().any(|d| d.slot == slot) {
            binding
                .devices
                .insert(slot.to_owned(), DeviceId::new(value))
                .is_none()
        } else if template.messages.iter().any(|m| m == slot) {
            binding
                .messages
                .insert(slot.to_owned(), value.to_owned())
                .is_none()
        } else {
            return Err(TasksError::Usage(format!(
                "--bind {bind:?}: the template has no slot {slot:?} (its slots: {})",
                slot_names(template).join(", ")
            )));
        };
        if !fresh {
            return Err(TasksError::Usage(format!("slot {slot:?} is bound twice")));
        }
    }
    Ok(binding)
}

fn slot_names(template: &Template) -> Vec<String> {
    let places = template.places.iter().map(|p| p.slot.clone());
    let devices = template.devices.iter().map(|d| d.slot.clone());
    places
        .chain(devices)
        .chain(template.messages.iter().cloned())
        .collect()
}

// ---- proto3 JSON by reflection -----------------------------------------

fn descriptor(name: &str) -> MessageDescriptor {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(tether_node::proto::FILE_DESCRIPTOR_SET)
            .expect("tether-proto's build embeds a valid descriptor set")
    })
    .get_message_by_name(name)
    .expect("the message is declared in tether.v1")
}

/// Decodes proto3 JSON into message `M` (named `name` in the descriptors).
fn from_json<M: Message + Default>(name: &str, text: &str) -> Result<M, String> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let dynamic = DynamicMessage::deserialize(descriptor(name), &mut deserializer)
        .map_err(|e| e.to_string())?;
    deserializer.end().map_err(|e| e.to_string())?;
    M::decode(dynamic.encode_to_vec().as_slice()).map_err(|e| e.to_string())
}

/// Message `M` (named `name`) as proto3 JSON, 64-bit integers as numbers
/// and every field present (a condition's `"value": false` says more than
/// its absence).
fn to_json<M: Message>(name: &str, message: &M) -> Json {
    let dynamic = DynamicMessage::decode(descriptor(name), message.encode_to_vec().as_slice())
        .expect("prost encodes what the descriptor describes");
    dynamic
        .serialize_with_options(
            serde_json::value::Serializer,
            &SerializeOptions::new()
                .stringify_64_bit_integers(false)
                .skip_default_fields(false),
        )
        .expect("a message serializes to a JSON value")
}

// ---- what is printed ---------------------------------------------------

fn info_json(info: &TaskInfo) -> Json {
    let mut value = json!({
        "id": info.task.id.0,
        "name": info.task.name,
        "enabled": info.enabled,
        "state": info.state.label(),
        "task": to_json("tether.v1.Task", &wire::task_to_proto(&info.task)),
    });
    if let TaskState::Broken(why) = &info.state {
        value["broken_reason"] = why.as_str().into();
    }
    value
}

fn info_line(info: &TaskInfo) -> String {
    let state = match &info.state {
        TaskState::Broken(why) => format!("broken ({why})"),
        other => other.label().to_owned(),
    };
    let switch = if info.enabled { "on" } else { "off" };
    format!(
        "task {} {:?}: {state} (switched {switch})",
        info.task.id.0, info.task.name
    )
}

fn trace_json(trace: &Trace) -> Json {
    to_json("tether.v1.Trace", &wire::trace_to_proto(trace))
}

fn trace_line(trace: &Trace) -> String {
    let run = trace
        .run
        .map(|r| format!("run {}", r.0))
        .unwrap_or_else(|| "no run".into());
    format!("#{} ({run}): {}", trace.seq, describe_trace(trace))
}

fn template_json(template: &Template, path: &Path, len: usize) -> Json {
    let proto = wire::template_to_proto(template);
    json!({
        "file": path.display().to_string(),
        "format": "tether.v1.TaskTemplate (binary protobuf)",
        "bytes": len,
        "nickname": template.nickname,
        "name": template.task.name,
        "slots": slot_names(template),
        "places": proto.places.iter().map(|p| to_json("tether.v1.PlaceSlot", p)).collect::<Vec<_>>(),
        "devices": proto.devices.iter().map(|d| to_json("tether.v1.DeviceSlot", d)).collect::<Vec<_>>(),
        "messages": proto.messages,
    })
}

fn template_text(template: &Template, path: &Path, len: usize) -> String {
    let mut text = format!(
        "template {:?} from {:?} written to {} ({len} bytes, binary tether.v1.TaskTemplate)",
        template.task.name,
        template.nickname,
        path.display()
    );
    if slot_names(template).is_empty() {
        text.push_str("\nno slots to bind");
        return text;
    }
    text.push_str("\nthe recipient binds each slot with `tether tasks accept --bind SLOT=VALUE`:");
    for p in &template.places {
        let mut uses = Vec::new();
        if p.geofence {
            uses.push("entered, left or tested");
        }
        if p.sun {
            uses.push("sunrise/sunset there");
        }
        if p.destination {
            uses.push("navigated to");
        }
        text.push_str(&format!(
            "\n  {:<10} one of their places ({})",
            p.slot,
            uses.join(", ")
        ));
    }
    for d in &template.devices {
        let properties = d.properties.iter().map(|(id, used)| {
            let how = match (used.read, used.write) {
                (true, true) => "read, write",
                (false, true) => "write",
                _ => "read",
            };
            format!("property {}.{} ({how})", id.siid, id.piid)
        });
        let actions = d
            .actions
            .iter()
            .map(|(id, n)| format!("action {}.{} ({n} argument(s))", id.siid, id.aiid));
        text.push_str(&format!(
            "\n  {:<10} one of their device ids, offering {}",
            d.slot,
            properties.chain(actions).collect::<Vec<_>>().join(", ")
        ));
    }
    for m in &template.messages {
        text.push_str(&format!("\n  {m:<10} their own notification text"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(name: &str) -> Task {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/tasks")
            .join(name);
        read_task(&path).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn parked_lock_example_is_the_demo_task() {
        assert_eq!(example("parked-lock.json"), crate::demo_tasks::lock_task());
    }

    #[test]
    fn every_example_reads_back_and_round_trips() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/tasks");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).expect("examples/tasks exists") {
            let path = entry.expect("a directory entry").path();
            if path.extension().is_some_and(|e| e == "json") {
                let task = read_task(&path).unwrap_or_else(|e| panic!("{e}"));
                // Printed and read again, it is the same task.
                let printed = to_json("tether.v1.Task", &wire::task_to_proto(&task)).to_string();
                let again: pb::Task = from_json("tether.v1.Task", &printed).expect("reads back");
                assert_eq!(wire::task_from_proto(again).expect("valid"), task);
                seen += 1;
            }
        }
        assert!(seen >= 2, "{seen} examples");
    }
}
