//! Runs the Tether benchmarks standalone: `tether-bench [--json] [--quick]`.
//! Build with `--release`.

use std::process::ExitCode;

use tether_bench::{BenchConfig, CountingAllocator, render_text, run};

/// Counts live heap bytes while the idle-session measurement runs
/// (`idle_session_bytes`); the plain system allocator otherwise.
#[global_allocator]
static HEAP: CountingAllocator = CountingAllocator;

const USAGE: &str = "\
usage: tether-bench [--json] [--quick] [--broker mqtt://HOST:PORT]

Measures Tether sessions against a bare-quinn baseline in the same process,
on loopback. Build with --release for meaningful figures.

  --json    print the report as JSON instead of a table
  --quick   a small smoke run (figures too small to compare)
  --broker  measure the relay through this MQTT broker instead of an
            embedded one
";

#[tokio::main]
async fn main() -> ExitCode {
    let mut json = false;
    let mut config = BenchConfig::default();
    let mut broker = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--json" => json = true,
            "--quick" => config = BenchConfig::quick(),
            "--broker" => {
                let url = args.next().unwrap_or_default();
                match tether_relay::RelayConfig::from_url(&url) {
                    Ok(b) => broker = Some((b.host, b.port)),
                    Err(e) => {
                        eprint!("--broker {url:?}: {e}\n\n{USAGE}");
                        return ExitCode::from(2);
                    }
                }
            }
            "-h" | "--help" => {
                print!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => {
                eprint!("unknown argument {other:?}\n\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    config.broker = broker;
    if cfg!(debug_assertions) {
        eprintln!("warning: debug build; figures are not comparable (use --release)");
    }
    let report = match run(config).await {
        Ok(report) => report,
        Err(e) => {
            eprintln!("tether-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    if json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("tether-bench: cannot encode the report: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", render_text(&report));
    }
    ExitCode::SUCCESS
}
