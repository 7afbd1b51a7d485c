//! A quick run over real loopback sockets: every measurement completes and
//! the report is well formed. No timing is asserted.

use tether_bench::{BenchConfig, CountingAllocator, GOALS, render_text, run};

// As the binary does, so the idle-session heap figure is measured here too.
#[global_allocator]
static HEAP: CountingAllocator = CountingAllocator;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_run_reports_every_measurement() {
    let config = BenchConfig::quick();
    let report = match run(config.clone()).await {
        Ok(report) => report,
        Err(e) => panic!("quick bench failed: {e}"),
    };

    assert_eq!(report.config, config);
    assert_eq!(report.tether_handshakes, config.handshakes);
    assert_eq!(report.tether_resumed_handshakes, config.handshakes);
    assert_eq!(report.tether_first_contact_handshakes, config.handshakes);
    assert_eq!(report.bare_handshakes, config.handshakes);
    assert_eq!(report.tether_rtt_samples, config.rtt_samples);
    assert_eq!(report.bare_rtt_samples, config.rtt_samples);
    assert_eq!(report.tether_pipelined_requests, config.pipelined_requests);
    assert_eq!(report.bare_pipelined_requests, config.pipelined_requests);
    assert_eq!(report.token_resolutions, config.token_resolutions);
    assert_eq!(report.token_keys, config.token_keys);
    assert_eq!(report.pairing_cycles, config.pairing_cycles);
    assert!((0.0..=1.0).contains(&report.pairing_success_rate));
    assert!(report.pairing_p50_ms > 0.0 && report.pairing_p50_ms <= report.pairing_p99_ms);
    assert!(report.pairing_pdus_sent > 0);
    assert!(report.pairing_pdus_lost <= report.pairing_pdus_sent);
    assert_eq!(report.ota_runs_mib_s.len(), config.ota_transfers);
    // The relay figures (issue 13, item 6), through the embedded broker.
    assert_eq!(report.relay_rtt_samples, config.relay_rtt_samples);
    assert_eq!(report.mqtt_rtt_samples, config.relay_rtt_samples);
    assert_eq!(
        report.relay_pipelined_requests,
        config.relay_pipelined_requests
    );
    assert_eq!(
        report.mqtt_pipelined_requests,
        config.relay_pipelined_requests
    );
    assert_eq!(report.relay_cold_connects, config.relay_connects);
    assert_eq!(report.mqtt_request_bytes, report.tether_request_bytes + 4);
    assert_eq!(report.mqtt_response_bytes, report.tether_response_bytes + 4);
    assert!(report.relay_broker.starts_with("embedded"));
    assert_eq!(report.bare_runs_mib_s.len(), config.ota_transfers);
    // Idle sessions (issue 19, item 3): measured, since the counting
    // allocator is installed; each side keeps some heap per session.
    let (Some(tether), Some(bare), Some(extra)) = (
        report.tether_idle_session_bytes,
        report.bare_idle_connection_bytes,
        report.idle_session_bytes,
    ) else {
        panic!("idle session heap not measured: {report:?}");
    };
    assert!(tether > 0.0 && bare > 0.0, "tether {tether}, bare {bare}");
    assert!((extra - (tether - bare)).abs() <= 1e-6 * tether, "{extra}");

    let figures = [
        ("handshake_ratio", report.handshake_ratio),
        ("resumed_handshake_ratio", report.resumed_handshake_ratio),
        (
            "first_contact_handshake_ratio",
            report.first_contact_handshake_ratio,
        ),
        ("tether_handshake_core_us", report.tether_handshake_core_us),
        (
            "tether_known_peer_handshake_core_us",
            report.tether_known_peer_handshake_core_us,
        ),
        ("rtt_p50_ratio", report.rtt_p50_ratio),
        ("rtt_p99_ratio", report.rtt_p99_ratio),
        ("pipelined_ratio", report.pipelined_ratio),
        ("tether_handshakes_per_s", report.tether_handshakes_per_s),
        ("bare_handshakes_per_s", report.bare_handshakes_per_s),
        ("tether_rtt_p50_us", report.tether_rtt_p50_us),
        ("bare_rtt_p99_us", report.bare_rtt_p99_us),
        ("tether_pipelined_per_s", report.tether_pipelined_per_s),
        ("bare_pipelined_per_s", report.bare_pipelined_per_s),
        ("token_resolutions_per_s", report.token_resolutions_per_s),
        ("ota_ratio", report.ota_ratio),
        ("ota_mib_s", report.ota_mib_s),
        ("bare_mib_s", report.bare_mib_s),
        ("relay_rtt_ratio", report.relay_rtt_ratio),
        ("relay_rtt_p99_ratio", report.relay_rtt_p99_ratio),
        ("relay_rtt_p50_us", report.relay_rtt_p50_us),
        ("mqtt_rtt_p50_us", report.mqtt_rtt_p50_us),
        ("relay_cold_connect_ms", report.relay_cold_connect_ms),
        ("relay_broker_connect_ms", report.relay_broker_connect_ms),
        ("relay_pipelined_ratio", report.relay_pipelined_ratio),
        ("relay_pipelined_per_s", report.relay_pipelined_per_s),
        ("mqtt_pipelined_per_s", report.mqtt_pipelined_per_s),
        ("relay_wan_rtt_ratio", report.relay_wan_rtt_ratio),
        ("relay_wan_rtt_p50_ms", report.relay_wan_rtt_p50_ms),
        ("mqtt_wan_rtt_p50_ms", report.mqtt_wan_rtt_p50_ms),
    ];
    for (name, value) in figures {
        assert!(value.is_finite() && value > 0.0, "{name} = {value}");
    }
    assert!(report.tether_rtt_p50_us <= report.tether_rtt_p99_us);
    assert!(report.bare_rtt_p50_us <= report.bare_rtt_p99_us);
    assert!(report.relay_rtt_p50_us <= report.relay_rtt_p99_us);
    assert!(report.mqtt_rtt_p50_us <= report.mqtt_rtt_p99_us);
    // Through the delaying proxy every round trip crosses it twice each
    // way (request and answer): at least 4 one-way delays.
    assert_eq!(report.relay_wan_delay_ms, config.relay_wan_delay_ms as f64);
    assert!(report.mqtt_wan_rtt_p50_ms >= 4.0 * report.relay_wan_delay_ms);
    assert!(report.relay_wan_rtt_p50_ms >= 4.0 * report.relay_wan_delay_ms);

    let goal_names: Vec<_> = GOALS.iter().map(|g| g.name).collect();
    let reported: Vec<_> = report.goals_met.keys().copied().collect();
    assert_eq!(reported.len(), goal_names.len());
    assert!(goal_names.iter().all(|g| reported.contains(g)));

    let json = serde_json::to_value(&report).expect("a report always serialises");
    for key in [
        "handshake_ratio",
        "first_contact_handshake_ratio",
        "pipelined_ratio",
        "rtt_p50_ratio",
        "rtt_p99_ratio",
        "token_resolutions_per_s",
        "pairing_success_rate",
        "pairing_p99_ms",
        "ota_ratio",
        "ota_mib_s",
        "bare_mib_s",
        "relay_rtt_ratio",
        "relay_cold_connect_ms",
        "relay_pipelined_ratio",
        "relay_wan_rtt_ratio",
        "idle_session_bytes",
        "tether_idle_session_bytes",
        "goals_met",
    ] {
        assert!(json.get(key).is_some(), "JSON lacks {key}");
    }
    let text = render_text(&report);
    assert!(text.contains("pipelined commands/s"));
    assert!(text.contains("handshakes/s (first contact)"));
    assert!(text.contains("Pairing stress"));
    assert!(text.contains("firmware upgrade MiB/s"));
    assert!(text.contains("relay RTT p50 (us)"));
    assert!(text.contains("relay pipelined commands/s"));
    assert!(text.contains("relay cold connect (ms)"));
    assert!(text.contains("idle session heap (KiB)"));
}
