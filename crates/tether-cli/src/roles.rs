//! `tether head-unit` and `tether phone`: one role per process.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use serde_json::json;
use tether_node::commands as control;
use tether_node::tether_automation::{LatLon, Place};
use tether_node::{
    HeadUnit, Hub, Interfaces, NodeConfig, NodeError, Phone, RelayConfig, VehicleRoute, Via,
};

/// What the phone does.
#[derive(Debug, Subcommand)]
pub(crate) enum PhoneAction {
    /// Create a new account hosted on this phone.
    Init,
    /// Browse the LAN and list the members this phone can resolve.
    Discover {
        /// How long to browse, seconds.
        #[arg(long, default_value_t = 3)]
        seconds: u64,
    },
    /// List the account's devices this phone's authority enrolled (their
    /// public keys in hex, to pick one for `remove-device`).
    Devices,
    /// Remove a lost or sold device from the account (SPEC §3.6): sign a
    /// new revocation list, rotate the group key, and hand both to the car.
    RemoveDevice {
        /// The device's public key, 64 hex digits, as `devices` prints it.
        public_key: String,
    },
    /// Find the car and print its status.
    Status,
    /// Lock the car's doors.
    Lock,
    /// Unlock the car's doors.
    Unlock,
    /// Leave a command in the car's mailbox on the broker (`--broker`),
    /// asleep or not: run once if it reads it within `--valid-for`, never
    /// after (SPEC §19.12). The answer: `tether phone replies`.
    Post {
        /// lock, unlock or flash.
        #[arg(value_parser = ["lock", "unlock", "flash"])]
        command: String,
        /// How long the command stays valid, seconds (at most 7 days).
        #[arg(long, default_value_t = 600)]
        valid_for: u64,
    },
    /// Print the car's answers waiting in this phone's mailbox (waiting up
    /// to `--wait` seconds for the first).
    Replies {
        /// Seconds to wait for an answer.
        #[arg(long, default_value_t = 10)]
        wait: u64,
    },
    /// Switch climate control on (with a target) or off.
    Climate {
        /// Target cabin temperature in °C; omit to switch climate off.
        #[arg(long)]
        target: Option<f32>,
    },
}

fn config(data_dir: PathBuf, interfaces: Interfaces, port: u16) -> NodeConfig {
    NodeConfig {
        data_dir: Some(data_dir),
        interfaces,
        port,
        ..NodeConfig::default()
    }
}

/// Reads `--place NAME=LAT,LON,RADIUS_M` (degrees, metres): a circle for
/// the car's super tasks.
pub(crate) fn parse_place(text: &str) -> Result<Place, String> {
    const SYNTAX: &str = "expected NAME=LAT,LON,RADIUS_M, e.g. home=48.1372,11.5756,150";
    let (name, numbers) = text.split_once('=').ok_or(SYNTAX)?;
    let name = name.trim();
    if name.is_empty() {
        return Err(format!("the place has no name; {SYNTAX}"));
    }
    let numbers: Vec<f64> = numbers
        .split(',')
        .map(|n| n.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{e}; {SYNTAX}"))?;
    let [lat, lon, radius_m] = numbers[..] else {
        return Err(format!("{} number(s); {SYNTAX}", numbers.len()));
    };
    if !(-90.0..=90.0).contains(&lat) {
        return Err(format!("latitude {lat} is not within -90..=90"));
    }
    if !(-180.0..=180.0).contains(&lon) {
        return Err(format!("longitude {lon} is not within -180..=180"));
    }
    if !(radius_m.is_finite() && radius_m > 0.0) {
        return Err(format!(
            "radius {radius_m} m is not a positive number of metres"
        ));
    }
    Ok(Place::circle(name, LatLon::new(lat, lon), radius_m))
}

pub(crate) async fn head_unit(
    data_dir: PathBuf,
    enroll_from: Option<PathBuf>,
    port: u16,
    interfaces: Interfaces,
    places: Vec<Place>,
    broker: Option<RelayConfig>,
) -> Result<ExitCode, NodeError> {
    let relay = broker
        .as_ref()
        .map(|b| format!("mqtt://{}:{}", b.host, b.port));
    let car = HeadUnit::open(NodeConfig {
        relay: broker,
        ..config(data_dir, interfaces, port)
    })?;
    if let Some(phone_dir) = enroll_from {
        car.complete_enrollment(&enroll_with(
            phone_dir,
            interfaces,
            car.enrollment_request()?,
        )?)?;
    }
    if !car.is_enrolled() {
        return Ok(not_enrolled());
    }
    let address = car.start().await?;
    // The places live in the head unit's store only: tasks name them, no
    // coordinate ever goes on the wire (R10).
    let names: Vec<String> = places.iter().map(|p| p.id.0.clone()).collect();
    if !places.is_empty() {
        let automation = car.automation().await?;
        for place in places {
            automation.define_place(place)?;
        }
    }
    println!(
        "head unit serving on {address}, advertising token {}; Ctrl-C to stop",
        car.current_token().await.unwrap_or_default()
    );
    if let Some(url) = relay {
        println!("also answering through the broker at {url} (remote path)");
    }
    if !names.is_empty() {
        println!("places for super tasks: {}", names.join(", "));
    }
    let _ = tokio::signal::ctrl_c().await;
    car.shutdown().await?;
    Ok(ExitCode::SUCCESS)
}

/// Has the phone whose store is in `phone_dir` enroll a node (local mode:
/// a stand-in for pairing).
fn enroll_with(
    phone_dir: PathBuf,
    interfaces: Interfaces,
    request: tether_node::EnrollmentRequest,
) -> Result<tether_node::EnrollmentGrant, NodeError> {
    let phone = Phone::open(config(phone_dir, interfaces, 0))?;
    let grant = phone.enroll_device(&request)?;
    println!("enrolled in the phone's account");
    Ok(grant)
}

fn not_enrolled() -> ExitCode {
    eprintln!(
        "not enrolled: run once with --enroll-from <phone data dir> (after `tether phone --data-dir <dir> init`)"
    );
    ExitCode::FAILURE
}

/// How long `tether hub --follow-car` looks for the car.
const CAR_SEARCH: Duration = Duration::from_secs(15);

pub(crate) async fn hub(
    data_dir: PathBuf,
    enroll_from: Option<PathBuf>,
    interfaces: Interfaces,
    places: Vec<String>,
    follow_car: bool,
    broker: Option<RelayConfig>,
) -> Result<ExitCode, NodeError> {
    let relay = broker
        .as_ref()
        .map(|b| format!("mqtt://{}:{}", b.host, b.port));
    let hub = Hub::open(NodeConfig {
        relay: broker,
        ..config(data_dir, interfaces, 0)
    })?;
    if let Some(phone_dir) = enroll_from {
        hub.complete_enrollment(&enroll_with(
            phone_dir,
            interfaces,
            hub.enrollment_request()?,
        )?)?;
    }
    if !hub.is_enrolled() {
        return Ok(not_enrolled());
    }
    hub.start(tether_node::Clock::System)?;
    for place in &places {
        hub.define_place(Place::named(place))?;
    }
    let address = hub.serve()?;
    if relay.is_some() {
        hub.serve_relay().await?;
    }
    let devices: Vec<String> = hub.home().state().into_keys().collect();
    println!(
        "hub serving its tasks on {address}; home devices: {}; Ctrl-C to stop",
        devices.join(", ")
    );
    if let Some(url) = relay {
        println!("also answering through the broker at {url} (remote path)");
    }
    if follow_car {
        match hub.discover_car(CAR_SEARCH).await {
            Ok(car) => match hub.connect(car).await {
                Ok(()) => println!("following the car at {car}"),
                Err(e) => eprintln!("cannot follow the car at {car}: {e}"),
            },
            Err(e) => eprintln!("no car found: {e}"),
        }
    }
    let _ = tokio::signal::ctrl_c().await;
    hub.stop_serving();
    hub.disconnect();
    Ok(ExitCode::SUCCESS)
}

fn signal_json(value: &tether_node::SignalData) -> serde_json::Value {
    use tether_node::SignalData;
    match value {
        SignalData::Bool(b) => json!(b),
        SignalData::Number(n) => json!(n),
        SignalData::Integer(i) => json!(i),
        SignalData::Text(t) => json!(t),
        SignalData::Location {
            latitude,
            longitude,
        } => json!({ "latitude": latitude, "longitude": longitude }),
    }
}

fn state_name(state: tether_node::proto::v1::CommandState) -> String {
    state
        .as_str_name()
        .trim_start_matches("COMMAND_STATE_")
        .to_lowercase()
}

fn route_name(route: VehicleRoute) -> &'static str {
    match route {
        VehicleRoute::Remembered => "lan_remembered",
        VehicleRoute::Discovered => "lan_discovered",
        VehicleRoute::Relay => "relay",
    }
}

/// Prints `value` (with `--json`) or `text`.
fn emit(json_out: bool, value: serde_json::Value, text: impl std::fmt::Display) {
    if json_out {
        println!("{value}");
    } else {
        println!("{text}");
    }
}

pub(crate) async fn phone(
    data_dir: PathBuf,
    interfaces: Interfaces,
    broker: Option<RelayConfig>,
    via: Via,
    json_out: bool,
    action: PhoneAction,
) -> Result<ExitCode, NodeError> {
    let phone = Phone::open(NodeConfig {
        relay: broker,
        ..config(data_dir, interfaces, 0)
    })?;
    match action {
        PhoneAction::Init => {
            phone.create_account()?;
            emit(
                json_out,
                json!({ "account": "created" }),
                "account created; this phone hosts its authority",
            );
            return Ok(ExitCode::SUCCESS);
        }
        PhoneAction::Discover { seconds } => {
            let report = phone.discover(Duration::from_secs(seconds)).await?;
            let mut text = String::new();
            for v in &report.resolved {
                text.push_str(&format!("member at {} (token {})\n", v.address, v.token));
            }
            text.push_str(&format!(
                "{} member(s); {} token(s) of other accounts",
                report.resolved.len(),
                report.unresolvable
            ));
            let members: Vec<_> = report
                .resolved
                .iter()
                .map(|v| json!({ "address": v.address.to_string(), "token": v.token }))
                .collect();
            emit(
                json_out,
                json!({ "members": members, "unresolvable": report.unresolvable }),
                text,
            );
            return Ok(ExitCode::SUCCESS);
        }
        PhoneAction::Devices => {
            let devices = phone.account_devices()?;
            let text: Vec<String> = devices
                .iter()
                .map(|d| {
                    format!(
                        "{} {:<8} serial {:<4}{}{}",
                        crate::share::hex(&d.public_key),
                        d.role,
                        d.serial,
                        if d.this_device { " (this phone)" } else { "" },
                        if d.removed { " removed" } else { "" },
                    )
                })
                .collect();
            let value: Vec<_> = devices
                .iter()
                .map(|d| {
                    json!({
                        "public_key": crate::share::hex(&d.public_key),
                        "role": d.role.to_string(),
                        "serial": d.serial,
                        "this_device": d.this_device,
                        "removed": d.removed,
                    })
                })
                .collect();
            emit(json_out, json!({ "devices": value }), text.join("\n"));
            return Ok(ExitCode::SUCCESS);
        }
        PhoneAction::RemoveDevice { public_key } => {
            let Some(key) = parse_key(&public_key) else {
                eprintln!("error: a public key is 64 hex digits");
                return Ok(ExitCode::from(2));
            };
            let removal = phone.remove_device(key)?;
            // Hand the list to the car now; other members get it from the
            // car or this phone at their next contact.
            let handed = match phone.discover_vehicle(Duration::from_secs(15)).await {
                Ok(found) => {
                    phone.connect(found.address).await?;
                    Ok(())
                }
                Err(e) => Err(e.to_string()),
            };
            emit(
                json_out,
                json!({
                    "serial": removal.serial,
                    "group_key_epoch": removal.group_key_epoch,
                    "grace_until": removal.grace_until,
                    "car_holds_list": handed.is_ok(),
                }),
                format!(
                    "removed; revocation list {} and group key epoch {} (old key accepted until {})\n{}",
                    removal.serial,
                    removal.group_key_epoch,
                    removal.grace_until,
                    match &handed {
                        Ok(()) => "the car holds the new list".to_owned(),
                        Err(e) =>
                            format!("the car was not reached ({e}); it gets the list next time"),
                    }
                ),
            );
            return Ok(ExitCode::SUCCESS);
        }
        PhoneAction::Post { command, valid_for } => {
            let command = match command.as_str() {
                "lock" => control::lock(),
                "unlock" => control::unlock(),
                _ => control::flash_honk(true, false),
            };
            let posted = phone
                .post_command(
                    command,
                    tether_node::new_idempotency_key()?,
                    Duration::from_secs(valid_for),
                )
                .await?;
            let letter = crate::share::hex(&posted.letter_id);
            emit(
                json_out,
                json!({ "letter": letter, "not_after_unix_ms": posted.not_after_unix_ms }),
                format!(
                    "left in the car's mailbox as letter {letter} (valid until unix ms {}); \
                     `tether phone replies` shows the answer",
                    posted.not_after_unix_ms
                ),
            );
            return Ok(ExitCode::SUCCESS);
        }
        PhoneAction::Replies { wait } => {
            let mut wait = Duration::from_secs(wait);
            let (mut lines, mut values) = (Vec::new(), Vec::new());
            while let Some(reply) = phone.next_mailbox_reply(wait).await? {
                let letter = crate::share::hex(&reply.in_reply_to);
                let (what, value) = match reply.answer {
                    tether_node::MailboxAnswer::Executed(o) => (
                        format!(
                            "{}; signed receipt #{} verified",
                            state_name(o.state),
                            o.sequence
                        ),
                        json!({ "letter": letter, "state": state_name(o.state), "sequence": o.sequence }),
                    ),
                    tether_node::MailboxAnswer::Signals(readings) => (
                        readings
                            .iter()
                            .map(|r| format!("{} = {:?}", r.path, r.value))
                            .collect::<Vec<_>>()
                            .join(", "),
                        json!({
                            "letter": letter,
                            "signals": readings
                                .iter()
                                .map(|r| json!({ "path": r.path, "value": signal_json(&r.value) }))
                                .collect::<Vec<_>>(),
                        }),
                    ),
                    tether_node::MailboxAnswer::Refused { code, message } => {
                        let code = code
                            .as_str_name()
                            .trim_start_matches("ERROR_CODE_")
                            .to_lowercase();
                        (
                            format!("refused ({code}): {message}"),
                            json!({ "letter": letter, "refused": code, "message": message }),
                        )
                    }
                };
                lines.push(format!("letter {letter}: {what}"));
                values.push(value);
                // The first waited for; the rest are already there.
                wait = Duration::from_millis(500);
            }
            if lines.is_empty() {
                lines.push("no answer in the mailbox".into());
            }
            emit(json_out, json!({ "replies": values }), lines.join("\n"));
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let (link, route) = phone
        .reach_vehicle_via(via, Duration::from_secs(15))
        .await?;
    if route == VehicleRoute::Relay && !json_out {
        println!("reached the car through the broker (remote path)");
    }
    let command = match action {
        PhoneAction::Status => {
            let readings = link.get(Vec::new()).await?;
            let text: Vec<String> = readings
                .iter()
                .map(|r| format!("{:<55} {:?}", r.path, r.value))
                .collect();
            let signals: serde_json::Map<String, serde_json::Value> = readings
                .iter()
                .map(|r| (r.path.clone(), signal_json(&r.value)))
                .collect();
            emit(
                json_out,
                json!({ "route": route_name(route), "signals": signals }),
                text.join("\n"),
            );
            return Ok(ExitCode::SUCCESS);
        }
        PhoneAction::Lock => control::lock(),
        PhoneAction::Unlock => control::unlock(),
        PhoneAction::Climate { target } => control::climate(target.is_some(), target),
        PhoneAction::Init
        | PhoneAction::Discover { .. }
        | PhoneAction::Devices
        | PhoneAction::Post { .. }
        | PhoneAction::Replies { .. }
        | PhoneAction::RemoveDevice { .. } => return Ok(ExitCode::SUCCESS),
    };
    let key = tether_node::new_idempotency_key()?;
    let outcome = link.command(command, &key).await?;
    let state = state_name(outcome.state);
    let reason = match outcome.reason {
        tether_node::proto::v1::CommandReason::Unspecified => String::new(),
        r => r
            .as_str_name()
            .trim_start_matches("COMMAND_REASON_")
            .to_lowercase(),
    };
    emit(
        json_out,
        json!({
            "route": route_name(route),
            "state": state,
            "reason": if reason.is_empty() { serde_json::Value::Null } else { json!(reason) },
            "sequence": outcome.sequence,
            "receipt_verified": true,
        }),
        format!(
            "{state}{}; signed receipt #{} verified",
            if reason.is_empty() {
                String::new()
            } else {
                format!(" ({reason})")
            },
            outcome.sequence
        ),
    );
    link.close();
    Ok(
        if outcome.state == tether_node::proto::v1::CommandState::Succeeded {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        },
    )
}

fn parse_key(text: &str) -> Option<[u8; 32]> {
    crate::share::hex_decode(text.trim())?.try_into().ok()
}
