//! Pair-and-provision stress over the simulated radio (issue 4): many
//! commissioning cycles on a lossy, jittery air, each from scan through
//! pairing and binding (a certificate from the account authority) to the
//! device's "joined" report.
//!
//! The air runs on a paused tokio clock, so a cycle's duration is simulated
//! radio time (connection events, losses and retransmissions), the same on
//! every machine for a given seed; the CPU cost of SPAKE2 and sealing is not
//! in it (it is a few milliseconds per cycle, see `tether_handshake_core_us`
//! for the order of magnitude of the crypto). Wall time is reported apart.

use std::time::{Duration, Instant};

use tether_ble::advert::{Advert, FLAG_PAIRING_OPEN};
use tether_ble::commission::{
    CommissionPlan, CommissionStage, CommissionTimeouts, commission_peripheral,
};
use tether_ble::radio::Central;
use tether_ble::sim::{SimAir, SimConfig};
use tether_ble::sim_device::SimCommissionee;
use tether_identity::LocalAuthority;
use tether_pairing::provision::{Credentials, Network, Outcome, Security};

use crate::error::BenchError;

/// Loss probability of each radio PDU (each lost PDU is retransmitted).
pub(crate) const STRESS_LOSS: f64 = 0.05;
/// One-way latency of a PDU: about half a 30 ms connection interval.
pub(crate) const STRESS_LATENCY: Duration = Duration::from_millis(15);
/// Extra uniform delay per PDU.
pub(crate) const STRESS_JITTER: Duration = Duration::from_millis(15);
/// The smallest ATT MTU: the most segments per message.
pub(crate) const STRESS_MTU: u16 = 23;
/// How long each cycle scans before connecting.
const SCAN_WINDOW: Duration = Duration::from_millis(500);
const PASSCODE: u32 = 20_202_021;
const DISCRIMINATOR: u16 = 3840;

/// What the stress run measured.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PairingStress {
    pub cycles: usize,
    pub joined: usize,
    /// Simulated radio time per successful cycle, ms, sorted.
    pub durations_ms: Vec<f64>,
    pub pdus_sent: u64,
    pub pdus_lost: u64,
    pub links_dropped: u64,
    /// Links the commissioner reconnected after a drop (SPEC §12.7).
    pub reconnections: u64,
    pub wall: Duration,
    /// The first failure, for the report.
    pub first_failure: Option<String>,
}

fn home() -> Credentials {
    Credentials {
        ssid: b"Stress Home".to_vec(),
        passphrase: b"stress passphrase".to_vec(),
        security: Security::Wpa2Personal,
        network: Network::Home,
    }
}

/// Runs `cycles` pair-and-provision cycles on its own paused-clock runtime
/// (call from a blocking thread).
pub(crate) fn stress(cycles: usize, seed: u64) -> Result<PairingStress, BenchError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .map_err(|e| BenchError::setup("paused runtime for the radio simulation", e))?;
    let wall = Instant::now();
    let mut result = runtime.block_on(run_cycles(cycles, seed))?;
    result.wall = wall.elapsed();
    Ok(result)
}

async fn run_cycles(cycles: usize, seed: u64) -> Result<PairingStress, BenchError> {
    let air = SimAir::new(SimConfig {
        loss: STRESS_LOSS,
        latency: STRESS_LATENCY,
        jitter: STRESS_JITTER,
        seed,
        mtu: STRESS_MTU,
        ..SimConfig::default()
    });
    let central = air.central();
    let mut authority = LocalAuthority::generate()
        .map_err(|e| BenchError::setup("account authority for the stress", e))?;
    let networks = [(home().ssid, home().passphrase)];
    let advert = Advert::Unprovisioned {
        product_model: 0x1a2b,
        discriminator: DISCRIMINATOR,
        flags: FLAG_PAIRING_OPEN,
    }
    .encode()
    .map_err(|_| BenchError::Unexpected("advert encodes"))?;
    let mut out = PairingStress {
        cycles,
        joined: 0,
        durations_ms: Vec::with_capacity(cycles),
        pdus_sent: 0,
        pdus_lost: 0,
        links_dropped: 0,
        reconnections: 0,
        wall: Duration::ZERO,
        first_failure: None,
    };
    for cycle in 0..cycles {
        let (device, _log) = SimCommissionee::new(
            PASSCODE,
            STRESS_MTU,
            &networks,
            seed ^ (cycle as u64).wrapping_mul(0x9e37_79b9),
        )
        .map_err(|_| BenchError::Unexpected("simulated device"))?;
        let peripheral = air.add_peripheral(Box::new(device));
        peripheral.set_advert(Some(advert.clone()));
        let started = tokio::time::Instant::now();
        let outcome = one_cycle(&central, &mut authority, cycle, &mut out.reconnections).await;
        let elapsed = started.elapsed();
        peripheral.remove();
        match outcome {
            Ok(Outcome::Joined) => {
                out.joined += 1;
                out.durations_ms.push(elapsed.as_secs_f64() * 1e3);
            }
            other => {
                if out.first_failure.is_none() {
                    out.first_failure = Some(format!("cycle {cycle}: {other:?}"));
                }
            }
        }
    }
    let stats = air.stats();
    out.pdus_sent = stats.pdus_sent;
    out.pdus_lost = stats.pdus_lost;
    out.links_dropped = stats.links_dropped;
    out.durations_ms.sort_by(f64::total_cmp);
    Ok(out)
}

async fn one_cycle(
    central: &tether_ble::sim::SimCentral,
    authority: &mut LocalAuthority,
    cycle: usize,
    reconnections: &mut u64,
) -> Result<Outcome, String> {
    let seen = central.scan(SCAN_WINDOW).await.map_err(|e| e.to_string())?;
    let id = seen
        .into_iter()
        .find(|r| {
            matches!(
                r.tether_data().map(Advert::decode),
                Some(Ok(Advert::Unprovisioned { discriminator, .. })) if discriminator == DISCRIMINATOR
            )
        })
        .map(|r| r.id)
        .ok_or("the device was not heard")?;
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&(cycle as u64).to_le_bytes());
    let plan = CommissionPlan {
        passcode: PASSCODE,
        credentials: home(),
        seed,
        bind_nonce: [0x5b; 16],
        unix_now: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    commission_peripheral(
        central,
        &id,
        &plan,
        authority,
        CommissionTimeouts::default(),
        |stage| {
            if matches!(stage, CommissionStage::Reconnecting { .. }) {
                *reconnections += 1;
            }
        },
    )
    .await
    .map(|c| c.outcome)
    .map_err(|e| e.to_string())
}

/// Nearest-rank percentile of sorted values; 0 for none.
pub(crate) fn percentile_ms(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
