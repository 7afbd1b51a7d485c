//! Benchmarks of Tether sessions against a bare-quinn baseline measured in
//! the same run (`tether bench`).
//!
//! Everything runs in one process on loopback with the same crypto provider
//! (rustls ring), the same TLS 1.3 settings and the same QUIC transport
//! settings on both sides, so a ratio shows what Tether adds on top of QUIC
//! — its account-bound handshake, framing and protobuf — and not what this
//! machine happens to be. Each measurement is split into rounds that
//! alternate which side goes first.
//!
//! | measurement | Tether | bare quinn |
//! |---|---|---|
//! | handshakes/s | `Connector::connect`, tickets forgotten, until both ends hold an authenticated session; also resumed | `Endpoint::connect` until both ends hold a connection |
//! | small-command RTT | `ClientSession::call` with a vehicle Get, answered by a [`tether_control::VehicleService`] | a stream carrying 32 bytes, echoed |
//! | pipelined commands/s | the same call, many in flight on one session | the same echo, as many in flight on one connection |
//! | token resolutions/s | parse a heard label and try every held discovery key | — |
//! | firmware upgrade MiB/s | `tether_node::send_firmware` of an image to an `OtaTarget` (SPEC §15.1): one request whose body is the image, stored and hashed as it arrives | the expected SHA-256 and the same bytes on one stream, stored and hashed as they arrive, the digest checked |
//! | pairing stress | scan, connect, SPAKE2, sealed Wi-Fi credentials, report over a 5 %-loss simulated radio; success rate and p50/p99 in simulated radio time | — |
//! | relay small-command RTT | the same call over a relay session (SPEC §19: QUIC in MQTT publishes) through a broker | bare MQTT 5 request/response of the same framed sizes, QoS 0, through the same broker, rumqttc with the relay's settings |
//! | relay pipelined commands/s | the same call, many in flight on one relay session | the same request/response, as many in flight |
//! | relay cold connect | `RelaySocket::dial` + `Connector::connect` (no ticket) until the phone holds the session | — |
//! | idle session heap | `n` idle authenticated sessions held open, both ends in this process; heap growth per session, counted by [`CountingAllocator`] if installed (`idle_session_bytes`: Tether's minus bare quinn's) | `n` idle connections, the same way |
//! | super-task dispatch | one signal event through `tether_automation::Engine` until drained, with 10 000 and with 100 unrelated tasks installed (`dispatch_p99_us`, `dispatch_unrelated_ratio`) | — |
//!
//! Goals ([`GOALS`]) are reported in [`BenchReport::goals_met`], never
//! asserted: timing on a shared machine is not a test.
//!
//! # Usage
//! ```no_run
//! # async fn demo() -> Result<(), tether_bench::BenchError> {
//! let report = tether_bench::run(tether_bench::BenchConfig::default()).await?;
//! println!("{}", tether_bench::render_text(&report));
//! println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
//! # Ok(())
//! # }
//! ```
//! Build with `--release`; debug figures say little. The `tether-bench`
//! binary runs the same thing standalone (`--json`, `--quick`).

mod bare;
mod commands;
mod config;
mod cores;
mod error;
mod handshakes;
mod heap;
mod idle;
mod measure;
mod ota;
mod pairing;
mod relay;
mod report;
mod tether;
mod tokens;

use std::time::Duration;

use tether_session::quic::SessionConfig;

pub use config::BenchConfig;
pub use error::{BenchError, BoxError};
pub use heap::CountingAllocator;
pub use report::{
    BenchReport, DISPATCH_P99_GOAL, DISPATCH_UNRELATED_GOAL, FIRST_CONTACT_GOAL, GOALS, Goal,
    HANDSHAKE_GOAL, IDLE_SESSION_GOAL, OTA_GOAL, PAIRING_GOAL, PIPELINED_GOAL,
    RELAY_PIPELINED_GOAL, RELAY_RTT_GOAL, RESUMED_READ_GOAL, RTT_P50_GOAL, RTT_P99_GOAL,
    render_text,
};

use commands::measure_commands;
use handshakes::measure_handshakes;
use measure::{per_second, percentile_us};
use report::ratio;

/// Runs every measurement and returns the report. Needs a multi-threaded
/// tokio runtime (server and client tasks run side by side, as they would
/// on two machines).
pub async fn run(config: BenchConfig) -> Result<BenchReport, BenchError> {
    config.validate()?;
    let started_unix_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let session_config = SessionConfig::default();
    let account = tether::Account::generate()?;

    // First, while nothing else has run: the heap figure counts the whole
    // process.
    let idle = idle::measure_idle(config.idle_sessions, &account, &session_config).await?;
    let handshakes = measure_handshakes(&config, &account, &session_config).await?;
    let commands = measure_commands(&config, &account, &session_config).await?;
    let (tether_request_bytes, tether_response_bytes) = tether::small_command_sizes()?;
    // The baseline carries the Tether request and response as framed on a
    // stream (4-byte length each).
    let mqtt_bytes = (tether_request_bytes + 4, tether_response_bytes + 4);
    let mut relay = relay::measure_relay(&config, &account, &session_config, mqtt_bytes).await?;
    let tokens = measure_tokens(&config, account.discovery_key).await?;
    let upgrades = ota::measure_ota(&config, &session_config).await?;
    let core = {
        let (phone, car, n) = (
            account.phone.clone(),
            account.car.clone(),
            config.handshakes,
        );
        tokio::task::spawn_blocking(move || cores::handshake_cost(&phone, &car, n)).await??
    };
    let events = config.dispatch_events;
    let dispatch =
        tokio::task::spawn_blocking(move || tether_automation::bench::dispatch_report(events))
            .await?;
    let cycles = config.pairing_cycles;
    let stress =
        tokio::task::spawn_blocking(move || pairing::stress(cycles, 0x7e7e_0001)).await??;

    let mut tether_rtt = commands.tether_rtt;
    let mut bare_rtt = commands.bare_rtt;
    let tether_rtt_p50_us = percentile_us(&mut tether_rtt, 50.0);
    let tether_rtt_p99_us = percentile_us(&mut tether_rtt, 99.0);
    let bare_rtt_p50_us = percentile_us(&mut bare_rtt, 50.0);
    let bare_rtt_p99_us = percentile_us(&mut bare_rtt, 99.0);
    let tether_handshakes_per_s = per_second(handshakes.tether.0, handshakes.tether.1);
    let bare_handshakes_per_s = per_second(handshakes.bare.0, handshakes.bare.1);
    let tether_resumed_handshakes_per_s = per_second(handshakes.resumed.0, handshakes.resumed.1);
    let tether_first_contact_handshakes_per_s =
        per_second(handshakes.first_contact.0, handshakes.first_contact.1);
    let tether_pipelined_per_s =
        per_second(commands.tether_pipelined.0, commands.tether_pipelined.1);
    let bare_pipelined_per_s = per_second(commands.bare_pipelined.0, commands.bare_pipelined.1);

    let (mut cold_reads, mut resumed_reads) = std::mem::take(&mut relay.wan_reads);
    let cold_read_us = percentile_us(&mut cold_reads, 50.0);
    let resumed_read_us = percentile_us(&mut resumed_reads, 50.0);
    let (mut relay_wan, mut mqtt_wan) = std::mem::take(&mut relay.wan_rtt);
    let relay_wan_p50_us = percentile_us(&mut relay_wan, 50.0);
    let mqtt_wan_p50_us = percentile_us(&mut mqtt_wan, 50.0);
    let mut relay_rtt = relay.relay_rtt;
    let mut mqtt_rtt = relay.mqtt_rtt;
    let relay_rtt_p50_us = percentile_us(&mut relay_rtt, 50.0);
    let relay_rtt_p99_us = percentile_us(&mut relay_rtt, 99.0);
    let mqtt_rtt_p50_us = percentile_us(&mut mqtt_rtt, 50.0);
    let mqtt_rtt_p99_us = percentile_us(&mut mqtt_rtt, 99.0);
    let relay_pipelined_per_s = per_second(relay.relay_pipelined.0, relay.relay_pipelined.1);
    let mqtt_pipelined_per_s = per_second(relay.mqtt_pipelined.0, relay.mqtt_pipelined.1);
    let mut cold_connects = relay.cold_connects;
    let mut broker_connects = relay.broker_connects;

    let mut report = BenchReport {
        started_unix_s,
        release_build: !cfg!(debug_assertions),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        tether_handshakes: handshakes.tether.0,
        bare_handshakes: handshakes.bare.0,
        tether_resumed_handshakes: handshakes.resumed.0,
        tether_first_contact_handshakes: handshakes.first_contact.0,
        tether_first_contact_handshakes_per_s,
        first_contact_handshake_ratio: ratio(
            tether_first_contact_handshakes_per_s,
            bare_handshakes_per_s,
        ),
        tether_handshakes_per_s,
        bare_handshakes_per_s,
        tether_resumed_handshakes_per_s,
        handshake_ratio: ratio(tether_handshakes_per_s, bare_handshakes_per_s),
        resumed_handshake_ratio: ratio(tether_resumed_handshakes_per_s, bare_handshakes_per_s),
        tether_handshake_core_us: core.full.as_secs_f64() * 1e6,
        tether_known_peer_handshake_core_us: core.known.as_secs_f64() * 1e6,
        tether_resumed_handshake_core_us: core.resumed.as_secs_f64() * 1e6,
        small_command: tether::SMALL_COMMAND,
        tether_request_bytes,
        tether_response_bytes,
        bare_payload_bytes: bare::PAYLOAD_BYTES,
        tether_rtt_samples: tether_rtt.len(),
        bare_rtt_samples: bare_rtt.len(),
        tether_rtt_p50_us,
        tether_rtt_p99_us,
        bare_rtt_p50_us,
        bare_rtt_p99_us,
        rtt_p50_ratio: ratio(tether_rtt_p50_us, bare_rtt_p50_us),
        rtt_p99_ratio: ratio(tether_rtt_p99_us, bare_rtt_p99_us),
        tether_pipelined_requests: commands.tether_pipelined.0,
        bare_pipelined_requests: commands.bare_pipelined.0,
        tether_pipelined_per_s,
        bare_pipelined_per_s,
        pipelined_ratio: ratio(tether_pipelined_per_s, bare_pipelined_per_s),
        token_resolutions: config.token_resolutions,
        token_keys: config.token_keys,
        token_resolutions_per_s: per_second(config.token_resolutions, tokens),
        pairing_cycles: stress.cycles,
        pairing_success_rate: stress.joined as f64 / stress.cycles.max(1) as f64,
        pairing_p50_ms: pairing::percentile_ms(&stress.durations_ms, 50.0),
        pairing_p99_ms: pairing::percentile_ms(&stress.durations_ms, 99.0),
        pairing_pdus_sent: stress.pdus_sent,
        pairing_pdus_lost: stress.pdus_lost,
        pairing_links_dropped: stress.links_dropped,
        pairing_reconnections: stress.reconnections,
        pairing_wall_s: stress.wall.as_secs_f64(),
        pairing_first_failure: stress.first_failure,
        ota_mib_s: ota::median(&upgrades.tether_mib_s),
        bare_mib_s: ota::median(&upgrades.bare_mib_s),
        ota_ratio: ota::median_ratio(&upgrades.tether_mib_s, &upgrades.bare_mib_s),
        ota_runs_mib_s: upgrades.tether_mib_s,
        bare_runs_mib_s: upgrades.bare_mib_s,
        dispatch_p99_us: dispatch.dispatch_p99_us,
        dispatch_p50_us: dispatch.with_10_000.p50_us,
        dispatch_unrelated_ratio: dispatch.dispatch_unrelated_ratio,
        relay_broker: relay.broker,
        mqtt_request_bytes: relay.mqtt_bytes.0,
        mqtt_response_bytes: relay.mqtt_bytes.1,
        relay_rtt_samples: relay_rtt.len(),
        mqtt_rtt_samples: mqtt_rtt.len(),
        relay_rtt_p50_us,
        relay_rtt_p99_us,
        mqtt_rtt_p50_us,
        mqtt_rtt_p99_us,
        relay_rtt_ratio: ratio(relay_rtt_p50_us, mqtt_rtt_p50_us),
        relay_rtt_p99_ratio: ratio(relay_rtt_p99_us, mqtt_rtt_p99_us),
        relay_wan_delay_ms: relay.wan_delay.as_secs_f64() * 1000.0,
        relay_wan_rtt_p50_ms: relay_wan_p50_us / 1000.0,
        mqtt_wan_rtt_p50_ms: mqtt_wan_p50_us / 1000.0,
        relay_wan_rtt_ratio: ratio(relay_wan_p50_us, mqtt_wan_p50_us),
        cold_read_ms: cold_read_us / 1000.0,
        resumed_read_ms: resumed_read_us / 1000.0,
        cold_read_round_trips: ratio(cold_read_us, mqtt_wan_p50_us),
        resumed_read_round_trips: ratio(resumed_read_us, mqtt_wan_p50_us),
        relay_cold_connects: cold_connects.len(),
        relay_cold_connect_ms: relay::median_ms(&mut cold_connects),
        relay_broker_connect_ms: relay::median_ms(&mut broker_connects),
        relay_pipelined_requests: relay.relay_pipelined.0,
        mqtt_pipelined_requests: relay.mqtt_pipelined.0,
        relay_pipelined_per_s,
        mqtt_pipelined_per_s,
        relay_pipelined_ratio: ratio(relay_pipelined_per_s, mqtt_pipelined_per_s),
        tether_idle_session_bytes: idle
            .as_ref()
            .map(|i| i.tether_bytes as f64 / config.idle_sessions as f64),
        bare_idle_connection_bytes: idle
            .as_ref()
            .map(|i| i.bare_bytes as f64 / config.idle_sessions as f64),
        idle_session_bytes: idle
            .as_ref()
            .map(|i| (i.tether_bytes - i.bare_bytes) as f64 / config.idle_sessions as f64),
        goals_met: Default::default(),
        config,
    };
    report.judge();
    Ok(report)
}

async fn measure_tokens(config: &BenchConfig, own_key: [u8; 32]) -> Result<Duration, BenchError> {
    let mut keys = vec![own_key];
    for _ in 1..config.token_keys {
        keys.push(tether::other_discovery_key()?);
    }
    let stranger = tether::other_discovery_key()?;
    let count = config.token_resolutions;
    // CPU-bound: off the async workers.
    tokio::task::spawn_blocking(move || tokens::resolve_tokens(&keys, &stranger, count)).await?
}
