//! How much to measure.

use serde::Serialize;

use crate::BenchError;

/// Sizes of one benchmark run. Every count applies to Tether and to the
/// bare-quinn baseline alike.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BenchConfig {
    /// The MQTT broker the relay measurements run through, `(host, port)`;
    /// `None` starts an embedded one on 127.0.0.1 for the run
    /// (`tether_broker::EmbeddedBroker`, SPEC §19.10).
    pub broker: Option<(String, u16)>,
    /// Sequential small-command round trips sampled per side over the
    /// relay and over bare MQTT (after `rtt_warmup` untimed).
    pub relay_rtt_samples: usize,
    /// Requests sent with `pipelined_concurrency` in flight, per side, over
    /// one relay session and over the bare MQTT request/response.
    pub relay_pipelined_requests: usize,
    /// Cold relay connects timed (`RelaySocket::dial` + a full handshake).
    pub relay_connects: usize,
    /// One-way delay of the proxy in front of the broker for the
    /// `relay_wan_rtt_ratio` figure, ms (a nearby cloud broker).
    pub relay_wan_delay_ms: u64,
    /// Round trips sampled per side through that proxy.
    pub relay_wan_samples: usize,
    /// Cold and resumed connect-then-read sequences timed through it
    /// (`cold_read_round_trips`, `resumed_read_round_trips`).
    pub relay_wan_reads: usize,
    /// Sequential cold handshakes per side; as many resumed Tether
    /// handshakes are measured too.
    pub handshakes: usize,
    /// Sequential small-command round trips run and discarded before
    /// sampling, per side.
    pub rtt_warmup: usize,
    /// Sequential small-command round trips sampled per side.
    pub rtt_samples: usize,
    /// Requests sent on one connection with `pipelined_concurrency` in
    /// flight, per side.
    pub pipelined_requests: usize,
    /// Requests in flight at once in the pipelined measurement.
    pub pipelined_concurrency: usize,
    /// Discovery tokens parsed and resolved.
    pub token_resolutions: usize,
    /// Discovery keys the resolver holds (each is tried for every token).
    pub token_keys: usize,
    /// Pair-and-provision cycles over the simulated radio (5 % loss).
    pub pairing_cycles: usize,
    /// Size of the firmware image sent in the upgrade measurement, bytes.
    pub ota_image_bytes: usize,
    /// Timed transfers of that image per side (Tether upgrade, bare
    /// stream), alternating which goes first, after one untimed each.
    pub ota_transfers: usize,
    /// Signal events dispatched to the super-task engine per setup (10 000
    /// and 100 unrelated tasks installed beside the interested ones).
    pub dispatch_events: usize,
    /// Idle sessions held open at once per side (Tether sessions, bare quinn
    /// connections) for `idle_session_bytes`.
    pub idle_sessions: usize,
    /// Each measurement is split into this many rounds that alternate
    /// which side goes first, so drift on a shared machine (another build,
    /// a noisy neighbour) hits both sides alike.
    pub rounds: usize,
}

impl Default for BenchConfig {
    /// The sizes behind `BENCHMARKS.md`: a few seconds on a 2-core machine.
    fn default() -> Self {
        Self {
            broker: None,
            relay_rtt_samples: 1_000,
            relay_pipelined_requests: 5_000,
            relay_connects: 20,
            relay_wan_delay_ms: 5,
            relay_wan_samples: 200,
            relay_wan_reads: 10,
            handshakes: 300,
            rtt_warmup: 200,
            rtt_samples: 2_000,
            pipelined_requests: 20_000,
            pipelined_concurrency: 64,
            token_resolutions: 200_000,
            token_keys: 4,
            pairing_cycles: 1_000,
            ota_image_bytes: 16 * 1024 * 1024,
            ota_transfers: 7,
            dispatch_events: 50_000,
            idle_sessions: 200,
            rounds: 10,
        }
    }
}

impl BenchConfig {
    /// A smoke run for CI: every code path once, in well under a second of
    /// measuring. Its figures are too small to compare.
    pub fn quick() -> Self {
        Self {
            broker: None,
            relay_rtt_samples: 20,
            relay_pipelined_requests: 100,
            relay_connects: 2,
            relay_wan_delay_ms: 1,
            relay_wan_samples: 10,
            relay_wan_reads: 2,
            handshakes: 8,
            rtt_warmup: 10,
            rtt_samples: 50,
            pipelined_requests: 400,
            pipelined_concurrency: 16,
            token_resolutions: 1_000,
            token_keys: 4,
            pairing_cycles: 20,
            ota_image_bytes: 1024 * 1024,
            ota_transfers: 2,
            dispatch_events: 2_000,
            idle_sessions: 20,
            rounds: 2,
        }
    }

    /// Checks that every count can be run.
    pub fn validate(&self) -> Result<(), BenchError> {
        let positive = [
            (self.handshakes, "handshakes must be at least 1"),
            (self.rtt_samples, "rtt_samples must be at least 1"),
            (
                self.pipelined_requests,
                "pipelined_requests must be at least 1",
            ),
            (
                self.pipelined_concurrency,
                "pipelined_concurrency must be at least 1",
            ),
            (
                self.token_resolutions,
                "token_resolutions must be at least 1",
            ),
            (self.token_keys, "token_keys must be at least 1"),
            (self.rounds, "rounds must be at least 1"),
            (self.pairing_cycles, "pairing_cycles must be at least 1"),
            (self.ota_image_bytes, "ota_image_bytes must be at least 1"),
            (self.ota_transfers, "ota_transfers must be at least 1"),
            (self.dispatch_events, "dispatch_events must be at least 1"),
            (self.idle_sessions, "idle_sessions must be at least 1"),
            (
                self.relay_rtt_samples,
                "relay_rtt_samples must be at least 1",
            ),
            (
                self.relay_pipelined_requests,
                "relay_pipelined_requests must be at least 1",
            ),
            (self.relay_connects, "relay_connects must be at least 1"),
            (
                self.relay_wan_samples,
                "relay_wan_samples must be at least 1",
            ),
        ];
        if let Some((_, why)) = positive.iter().find(|(n, _)| *n == 0) {
            return Err(BenchError::InvalidConfig(why));
        }
        if self.ota_image_bytes as u64 > tether_ota::MAX_IMAGE_BYTES {
            return Err(BenchError::InvalidConfig(
                "ota_image_bytes must be at most 64 MiB (SPEC §15)",
            ));
        }
        // Every round must measure something on each side.
        let per_round = [
            self.handshakes,
            self.rtt_samples,
            self.pipelined_requests,
            self.relay_rtt_samples,
            self.relay_pipelined_requests,
        ];
        if per_round.iter().any(|n| *n < self.rounds) {
            return Err(BenchError::InvalidConfig(
                "each count must be at least the number of rounds",
            ));
        }
        Ok(())
    }
}

/// The share of `total` measured in round `round` of `rounds`; the shares
/// add up to `total`.
pub(crate) fn share(total: usize, round: usize, rounds: usize) -> usize {
    total * (round + 1) / rounds - total * round / rounds
}

/// Which side goes first in `round`: the baseline in even rounds.
pub(crate) fn tether_first(round: usize) -> bool {
    round % 2 == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_to_the_total() {
        for (total, rounds) in [(300, 3), (301, 3), (7, 7), (20_000, 3)] {
            let sum: usize = (0..rounds).map(|r| share(total, r, rounds)).sum();
            assert_eq!(sum, total);
        }
    }

    #[test]
    fn presets_are_valid_and_zero_counts_are_not() {
        assert!(BenchConfig::default().validate().is_ok());
        assert!(BenchConfig::quick().validate().is_ok());
        let zero = BenchConfig {
            rtt_samples: 0,
            ..BenchConfig::quick()
        };
        assert!(matches!(zero.validate(), Err(BenchError::InvalidConfig(_))));
    }
}
