//! `tether head-unit` and `tether phone`: one role per process.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use tether_automation::{LatLon, Place};
use tether_control::client as control;
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

pub(crate) async fn phone(
    data_dir: PathBuf,
    interfaces: Interfaces,
    broker: Option<RelayConfig>,
    via: Via,
    action: PhoneAction,
) -> Result<ExitCode, NodeError> {
    let phone = Phone::open(NodeConfig {
        relay: broker,
        ..config(data_dir, interfaces, 0)
    })?;
    match action {
        PhoneAction::Init => {
            phone.create_account()?;
            println!("account created; this phone hosts its authority");
            return Ok(ExitCode::SUCCESS);
        }
        PhoneAction::Discover { seconds } => {
            let report = phone.discover(Duration::from_secs(seconds)).await?;
            for v in &report.resolved {
                println!("member at {} (token {})", v.address, v.token);
            }
            println!(
                "{} member(s); {} token(s) of other accounts",
                report.resolved.len(),
                report.unresolvable
            );
            return Ok(ExitCode::SUCCESS);
        }
        PhoneAction::Devices => {
            for d in phone.account_devices()? {
                println!(
                    "{} {:<8} serial {:<4}{}{}",
                    crate::share::hex(&d.public_key),
                    d.role,
                    d.serial,
                    if d.this_device { " (this phone)" } else { "" },
                    if d.removed { " removed" } else { "" },
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        PhoneAction::RemoveDevice { public_key } => {
            let Some(key) = parse_key(&public_key) else {
                eprintln!("error: a public key is 64 hex digits");
                return Ok(ExitCode::from(2));
            };
            let removal = phone.remove_device(key)?;
            println!(
                "removed; revocation list {} and group key epoch {} (old key accepted until {})",
                removal.serial, removal.group_key_epoch, removal.grace_until
            );
            // Hand the list to the car now; other members get it from the
            // car or this phone at their next contact.
            match phone.discover_vehicle(Duration::from_secs(15)).await {
                Ok(found) => {
                    phone.connect(found.address).await?;
                    println!("the car holds the new list");
                }
                Err(e) => println!("the car was not reached ({e}); it gets the list next time"),
            }
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
            println!(
                "left in the car's mailbox as letter {} (valid until unix ms {}); \
                 `tether phone replies` shows the answer",
                crate::share::hex(&posted.letter_id),
                posted.not_after_unix_ms
            );
            return Ok(ExitCode::SUCCESS);
        }
        PhoneAction::Replies { wait } => {
            let mut wait = Duration::from_secs(wait);
            let mut seen = 0;
            while let Some(reply) = phone.next_mailbox_reply(wait).await? {
                seen += 1;
                let what = match reply.answer {
                    tether_node::MailboxAnswer::Executed(o) => format!(
                        "{}; signed receipt #{} verified",
                        o.state
                            .as_str_name()
                            .trim_start_matches("COMMAND_STATE_")
                            .to_lowercase(),
                        o.sequence
                    ),
                    tether_node::MailboxAnswer::Signals(values) => values
                        .iter()
                        .map(|r| format!("{} = {:?}", r.path, r.value))
                        .collect::<Vec<_>>()
                        .join(", "),
                    tether_node::MailboxAnswer::Refused { code, message } => format!(
                        "refused ({}): {message}",
                        code.as_str_name()
                            .trim_start_matches("ERROR_CODE_")
                            .to_lowercase()
                    ),
                };
                println!("letter {}: {what}", crate::share::hex(&reply.in_reply_to));
                // The first waited for; the rest are already there.
                wait = Duration::from_millis(500);
            }
            if seen == 0 {
                println!("no answer in the mailbox");
            }
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let (link, route) = phone
        .reach_vehicle_via(via, Duration::from_secs(15))
        .await?;
    if route == VehicleRoute::Relay {
        println!("reached the car through the broker (remote path)");
    }
    let command = match action {
        PhoneAction::Status => {
            for r in link.get(Vec::new()).await? {
                println!("{:<55} {:?}", r.path, r.value);
            }
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
    let key = {
        use ring::rand::SecureRandom;
        let mut key = vec![0; 16];
        ring::rand::SystemRandom::new()
            .fill(&mut key)
            .map_err(|_| NodeError::Random)?;
        key
    };
    let outcome = link.command(command, &key).await?;
    let state = outcome
        .state
        .as_str_name()
        .trim_start_matches("COMMAND_STATE_")
        .to_lowercase();
    let reason = match outcome.reason {
        tether_proto::v1::CommandReason::Unspecified => String::new(),
        r => format!(
            " ({})",
            r.as_str_name()
                .trim_start_matches("COMMAND_REASON_")
                .to_lowercase()
        ),
    };
    println!(
        "{state}{reason}; signed receipt #{} verified",
        outcome.sequence
    );
    link.close();
    Ok(
        if outcome.state == tether_proto::v1::CommandState::Succeeded {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        },
    )
}

fn parse_key(text: &str) -> Option<[u8; 32]> {
    crate::share::hex_decode(text.trim())?.try_into().ok()
}
