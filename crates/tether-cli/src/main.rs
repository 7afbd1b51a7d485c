//! `tether`: run the demo, one role per process, or the benchmarks.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

mod demo;
mod demo_devices;
mod demo_remote;
mod demo_removal;
mod demo_tasks;
mod narrate;
mod pair;
mod progress;
mod roles;
mod share;
mod soak;
mod tasks;

/// Counts live heap bytes only while `tether bench` measures idle sessions
/// (`idle_session_bytes`); otherwise the system allocator plus one relaxed
/// load per allocation.
#[global_allocator]
static HEAP: tether_bench::CountingAllocator = tether_bench::CountingAllocator;

/// Tether joins a car's head unit, its owner's phone and the smart home into
/// one trusted, private network.
#[derive(Debug, Parser)]
#[command(name = "tether", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Which path `tether phone` takes to the car (SPEC §19.11).
#[derive(Debug, Clone, Copy, ValueEnum, Default)]
enum ViaArg {
    /// The LAN when the car is on it, the broker otherwise.
    #[default]
    Auto,
    /// The LAN only.
    Lan,
    /// The broker only (`--broker` needed).
    Relay,
}

impl From<ViaArg> for tether_node::Via {
    fn from(v: ViaArg) -> Self {
        match v {
            ViaArg::Auto => tether_node::Via::Auto,
            ViaArg::Lan => tether_node::Via::Lan,
            ViaArg::Relay => tether_node::Via::Relay,
        }
    }
}

/// Reads `--broker mqtt://HOST:PORT`.
fn parse_broker(url: &str) -> Result<tether_node::RelayConfig, String> {
    tether_node::RelayConfig::from_url(url).map_err(|e| e.to_string())
}

/// Which interfaces mDNS may use.
#[derive(Debug, Clone, Copy, ValueEnum, Default)]
enum Net {
    /// Loopback only: nothing leaves this machine (the default).
    #[default]
    Loopback,
    /// Every interface: for two machines on one LAN.
    All,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a head unit and two phones in one process over loopback mDNS and
    /// QUIC, narrating each step. Exits 0 only if every step behaved.
    Demo {
        /// Print one JSON object instead of the narration.
        #[arg(long)]
        json: bool,
        /// Interfaces for mDNS.
        #[arg(long, value_enum, default_value_t = Net::Loopback)]
        net: Net,
        /// A real MQTT broker for the remote steps, `mqtt://HOST:PORT`;
        /// without it the demo embeds one on loopback.
        #[arg(long, value_name = "URL", value_parser = parse_broker)]
        broker: Option<tether_node::RelayConfig>,
    },
    /// Run the embedded MQTT 5 broker on 127.0.0.1 until Ctrl-C: a stand-in
    /// for a real broker when trying the remote path on one machine
    /// (`--broker mqtt://127.0.0.1:PORT` for the head unit and the phone).
    Broker {
        /// TCP port on 127.0.0.1.
        #[arg(long, default_value_t = 1883)]
        port: u16,
    },
    /// Run the head-unit role until Ctrl-C: advertise over mDNS and serve the
    /// (simulated) vehicle to members of its account.
    HeadUnit {
        /// Where the head unit keeps its state.
        #[arg(long)]
        data_dir: PathBuf,
        /// Enroll from a phone's data directory on this machine (local-mode
        /// stand-in for pairing over Bluetooth).
        #[arg(long)]
        enroll_from: Option<PathBuf>,
        /// UDP port for sessions (0 picks one).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Interfaces for mDNS.
        #[arg(long, value_enum, default_value_t = Net::Loopback)]
        net: Net,
        /// A place for the car's super tasks (repeatable), e.g.
        /// `home=48.1372,11.5756,150` (latitude, longitude in degrees,
        /// radius in metres). Kept on the head unit only (R10).
        #[arg(long = "place", value_name = "NAME=LAT,LON,RADIUS_M", value_parser = roles::parse_place)]
        places: Vec<tether_node::tether_automation::Place>,
        /// An MQTT broker for the remote path, `mqtt://HOST:PORT`: the car
        /// also answers there, end to end encrypted, to phones anywhere
        /// (SPEC §19).
        #[arg(long, value_name = "URL", value_parser = parse_broker)]
        broker: Option<tether_node::RelayConfig>,
    },
    /// Run the home hub role: a simulated home (lights, porch, garage)
    /// whose super tasks the owner manages with `tether tasks --hub`
    /// (found by the hub's own token, SPEC §18.8); with `--follow-car` it
    /// also follows the account's car for place and vehicle events.
    Hub {
        /// Where the hub keeps its state (its tasks included).
        #[arg(long)]
        data_dir: PathBuf,
        /// Enroll from a phone's data directory on this machine (local-mode
        /// stand-in for pairing).
        #[arg(long)]
        enroll_from: Option<PathBuf>,
        /// Interfaces for mDNS.
        #[arg(long, value_enum, default_value_t = Net::Loopback)]
        net: Net,
        /// A place name the car defines, for the hub's tasks (repeatable).
        #[arg(long = "place", value_name = "NAME")]
        places: Vec<String>,
        /// Look for the account's car and follow its events.
        #[arg(long)]
        follow_car: bool,
        /// An MQTT broker, `mqtt://HOST:PORT`: the hub also answers the
        /// owner there, from anywhere (SPEC §19.11).
        #[arg(long, value_name = "URL", value_parser = parse_broker)]
        broker: Option<tether_node::RelayConfig>,
    },
    /// Commission a simulated lamp over the simulated Bluetooth radio: show
    /// its setup QR code, read it, find the lamp by its advert, pair with
    /// SPAKE2 over the passcode and hand it sealed Wi-Fi credentials.
    Pair {
        /// Print one JSON object instead of the narration.
        #[arg(long)]
        json: bool,
        /// Read the 11-digit manual code instead of the QR code.
        #[arg(long)]
        manual: bool,
        /// Try a mistyped passcode first (refused, then the lamp backs off).
        #[arg(long)]
        wrong_passcode_first: bool,
        /// Packet loss of the simulated radio, 0 to 0.5 (lost packets are
        /// retransmitted, as BLE does).
        #[arg(long, default_value_t = 0.0)]
        loss: f64,
        /// Have the lamp drop the Bluetooth link once, as binding starts:
        /// the head unit reconnects and pairs again (SPEC §12.7).
        #[arg(long)]
        drop_link: bool,
    },
    /// Measure Tether against a bare-quinn baseline in the same run
    /// (handshakes/s, request round trip p50/p99, pipelined requests/s,
    /// token resolutions/s), the relay against bare MQTT through the same
    /// broker, and print each figure and ratio.
    Bench {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// A small run (seconds), for a smoke test; figures are noisy.
        #[arg(long)]
        quick: bool,
        /// Measure the relay figures through this MQTT broker,
        /// `mqtt://HOST:PORT`, instead of one embedded for the run.
        #[arg(long, value_name = "URL", value_parser = parse_broker)]
        broker: Option<tether_node::RelayConfig>,
    },
    /// Load one head unit (or, with `--hub`, a home hub) like a household
    /// would, in this process on loopback: many member sessions sending
    /// lock/unlock commands (a hub: task requests) at a set rate, first
    /// quiet, then while a stranger floods it with connection attempts.
    /// Reports latency, memory per session, and that nothing was lost or ran
    /// twice (exit 1 otherwise). See RELIABILITY.md §3.
    Soak {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// A few seconds with 50 sessions, instead of the full run.
        #[arg(long)]
        quick: bool,
        /// Concurrent member sessions (full run: 1000).
        #[arg(long)]
        sessions: Option<usize>,
        /// Commands per second over all sessions (full run: 10000).
        #[arg(long)]
        rate: Option<u32>,
        /// Seconds per phase, quiet and flooded (full run: 60).
        #[arg(long)]
        seconds: Option<u64>,
        /// Non-member connection attempts during the second phase (full
        /// run: 10000).
        #[arg(long)]
        flood: Option<usize>,
        /// Load a home hub instead: members list its tasks, every tenth
        /// request runs one.
        #[arg(long)]
        hub: bool,
    },
    /// The smart-device life cycle on its own: commission a lamp and a camera
    /// over the simulated radio, find them on the LAN, list, rename, reorder
    /// and control them through the car, upgrade the lamp (with a progress
    /// bar, resumed after a forced disconnect), keep an offline device local,
    /// unbind the camera. Exits 0 only if every step behaved.
    Devices {
        /// Print one JSON object instead of the narration.
        #[arg(long)]
        json: bool,
        /// Interfaces for mDNS.
        #[arg(long, value_enum, default_value_t = Net::Loopback)]
        net: Net,
    },
    /// Share the car with a co-user's account, one step per command: print
    /// the account key, grant, accept, read the shared car, revoke (R16).
    Share {
        /// Where this phone keeps its state.
        #[arg(long)]
        data_dir: PathBuf,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// Interfaces for mDNS.
        #[arg(long, value_enum, default_value_t = Net::Loopback)]
        net: Net,
        #[command(subcommand)]
        action: share::ShareAction,
    },
    /// Manage the car's super tasks from the phone, one step per command:
    /// add (from a JSON file), list, run, trace, share, accept, enable,
    /// disable, delete, and the "car data to home" switch.
    Tasks {
        /// Where this phone keeps its state.
        #[arg(long)]
        data_dir: PathBuf,
        /// Print one JSON object (before or after the step's name).
        #[arg(long, global = true)]
        json: bool,
        /// Interfaces for mDNS.
        #[arg(long, value_enum, default_value_t = Net::Loopback, global = true)]
        net: Net,
        /// The home hub's tasks (a running `tether hub`, found by its own
        /// token) instead of the car's.
        #[arg(long, global = true)]
        hub: bool,
        #[command(subcommand)]
        action: tasks::TasksAction,
    },
    /// Run the phone role: create an account, find the car, read or command it.
    Phone {
        /// Where the phone keeps its state (account authority included).
        #[arg(long)]
        data_dir: PathBuf,
        /// Interfaces for mDNS.
        #[arg(long, value_enum, default_value_t = Net::Loopback)]
        net: Net,
        /// An MQTT broker for the remote path, `mqtt://HOST:PORT` (the
        /// car's `--broker`): reach the car from anywhere (SPEC §19).
        #[arg(long, value_name = "URL", value_parser = parse_broker, global = true)]
        broker: Option<tether_node::RelayConfig>,
        /// Which path to the car: auto (the LAN when the car is on it, the
        /// broker otherwise), lan, or relay.
        #[arg(long, value_enum, default_value_t = ViaArg::Auto, global = true)]
        via: ViaArg,
        /// Print one JSON object instead of text.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        action: roles::PhoneAction,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TETHER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Demo { json, net, broker } => demo::run(json, net.into(), broker).await,
            Command::HeadUnit {
                data_dir,
                enroll_from,
                port,
                net,
                places,
                broker,
            } => roles::head_unit(data_dir, enroll_from, port, net.into(), places, broker).await,
            Command::Phone {
                data_dir,
                net,
                broker,
                via,
                json,
                action,
            } => roles::phone(data_dir, net.into(), broker, via.into(), json, action).await,
            Command::Hub {
                data_dir,
                enroll_from,
                net,
                places,
                follow_car,
                broker,
            } => {
                roles::hub(
                    data_dir,
                    enroll_from,
                    net.into(),
                    places,
                    follow_car,
                    broker,
                )
                .await
            }
            Command::Devices { json, net } => Ok(demo_devices::run(json, net.into()).await),
            Command::Share {
                data_dir,
                json,
                net,
                action,
            } => share::run(data_dir, net.into(), json, action).await,
            Command::Tasks {
                data_dir,
                json,
                net,
                hub,
                action,
            } => tasks::run(data_dir, net.into(), json, hub, action).await,
            Command::Bench {
                json,
                quick,
                broker,
            } => bench(json, quick, broker).await,
            Command::Soak {
                json,
                quick,
                sessions,
                rate,
                seconds,
                flood,
                hub,
            } => {
                let mut options = if quick {
                    soak::SoakOptions::quick(json)
                } else {
                    soak::SoakOptions::full(json)
                };
                options.sessions = sessions.unwrap_or(options.sessions).max(1);
                options.rate = rate.unwrap_or(options.rate).max(1);
                options.seconds = seconds.unwrap_or(options.seconds).max(1);
                options.flood = flood.unwrap_or(options.flood);
                options.hub = hub;
                soak::run(options).await
            }
            Command::Broker { port } => broker(port).await,
            Command::Pair {
                json,
                manual,
                wrong_passcode_first,
                loss,
                drop_link,
            } => Ok(pair::run(pair::PairOptions {
                json,
                manual,
                wrong_first: wrong_passcode_first,
                loss,
                drop_link,
            })
            .await),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn broker(port: u16) -> Result<ExitCode, tether_node::NodeError> {
    let addr = std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port));
    match tether_node::EmbeddedBroker::start(addr).await {
        Ok(broker) => {
            println!(
                "embedded MQTT 5 broker at {} (loopback only, in memory); Ctrl-C to stop",
                broker.url()
            );
            let _ = tokio::signal::ctrl_c().await;
            broker.shutdown().await;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn bench(
    json: bool,
    quick: bool,
    broker: Option<tether_node::RelayConfig>,
) -> Result<ExitCode, tether_node::NodeError> {
    let mut config = if quick {
        tether_bench::BenchConfig::quick()
    } else {
        tether_bench::BenchConfig::default()
    };
    config.broker = broker.map(|b| (b.host, b.port));
    match tether_bench::run(config).await {
        Ok(report) => {
            if json {
                if !print_json(&report) {
                    return Ok(ExitCode::FAILURE);
                }
            } else {
                print!("{}", tether_bench::render_text(&report));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: benchmark failed: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Prints `report` as one line of JSON; false (and says why) if it cannot
/// be encoded.
pub(crate) fn print_json(report: &impl serde::Serialize) -> bool {
    match serde_json::to_string(report) {
        Ok(text) => {
            println!("{text}");
            true
        }
        Err(e) => {
            eprintln!("error: cannot encode the report: {e}");
            false
        }
    }
}

impl From<Net> for tether_node::Interfaces {
    fn from(n: Net) -> Self {
        match n {
            Net::Loopback => tether_node::Interfaces::LoopbackOnly,
            Net::All => tether_node::Interfaces::All,
        }
    }
}
