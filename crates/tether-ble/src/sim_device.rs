//! A simulated smart device waiting to be commissioned: the sans-IO device
//! core of `tether-pairing` behind a [`PeripheralHandler`], with a tiny
//! Wi-Fi world that knows which networks exist. For tests, the stress bench
//! and the demo; not a security boundary (its randomness is a seeded
//! generator, not the system source).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tether_identity::{DeviceKey, KeyError};
use tether_pairing::device::{CommissioneeEvent, DeviceCommissioning};
use tether_pairing::pake::AttemptLimiter;
use tether_pairing::provision::{Credentials, Outcome};
use tether_pairing::segment::SegmentError;

use crate::sim::PeripheralHandler;

/// What the simulated device's host observed; shared with whoever made it.
#[derive(Debug, Default)]
pub struct CommissioneeLog {
    /// Every event of the device core, in order.
    pub events: Vec<CommissioneeEvent>,
    /// The attempt limiter after the last step (what a real device persists).
    pub limiter: AttemptLimiter,
    /// Networks the device joined.
    pub joined: Vec<Credentials>,
    /// Serials of the certificates it was bound with (it holds no group
    /// key: the core refuses one).
    pub bound: Vec<u64>,
    /// What the device keeps from its last binding: its credentials and the
    /// device secret (SPEC §12.6), to serve members on the LAN.
    pub binding: Option<(tether_identity::Credentials, [u8; 32])>,
}

/// Why a simulated device could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimDeviceError {
    /// The MTU is out of range.
    #[error(transparent)]
    Segment(#[from] SegmentError),
    /// Its key could not be generated.
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// A shared [`CommissioneeLog`].
pub type SharedLog = Arc<Mutex<CommissioneeLog>>;

/// A simulated device: answers commissioning over the simulated radio and
/// joins a network if it exists and the passphrase matches.
pub struct SimCommissionee {
    core: DeviceCommissioning,
    networks: HashMap<Vec<u8>, Vec<u8>>,
    log: SharedLog,
    started: tokio::time::Instant,
    rng: u64,
}

impl std::fmt::Debug for SimCommissionee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimCommissionee").finish_non_exhaustive()
    }
}

impl SimCommissionee {
    /// A device with `passcode`, on a radio of ATT MTU `mtu`, in a world
    /// where `networks` (SSID, passphrase) exist; `seed` drives its
    /// randomness. Returns the handler and its log.
    pub fn new(
        passcode: u32,
        mtu: u16,
        networks: &[(Vec<u8>, Vec<u8>)],
        seed: u64,
    ) -> Result<(Self, SharedLog), SimDeviceError> {
        let log = SharedLog::default();
        // Generated on the device, as a real one would at first boot.
        let key = DeviceKey::generate()?;
        let device = Self {
            core: DeviceCommissioning::new(passcode, AttemptLimiter::default(), mtu, &key)?,
            networks: networks.iter().cloned().collect(),
            log: log.clone(),
            started: tokio::time::Instant::now(),
            rng: seed,
        };
        Ok((device, log))
    }

    fn next_seed(&mut self) -> [u8; 32] {
        let mut out = [0; 32];
        for chunk in out.chunks_mut(8) {
            // SplitMix64.
            self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.rng;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_le_bytes());
        }
        out
    }

    fn try_network(&self, credentials: &Credentials) -> Outcome {
        match self.networks.get(&credentials.ssid) {
            None => Outcome::NetworkNotFound,
            Some(pass) if *pass != credentials.passphrase => Outcome::WrongPassphrase,
            Some(_) => Outcome::Joined,
        }
    }

    fn log(&self) -> std::sync::MutexGuard<'_, CommissioneeLog> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl PeripheralHandler for SimCommissionee {
    fn on_write(&mut self, segment: &[u8]) -> Vec<Vec<u8>> {
        let now_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let seed = self.next_seed();
        self.core.set_unix_time(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        );
        let step = self.core.on_segment(segment, now_ms, seed);
        let mut notify = step.notify;
        let mut joined = Vec::new();
        let mut bound = Vec::new();
        for event in &step.events {
            if let CommissioneeEvent::Bound { serial } = event {
                bound.push(*serial);
            }
            if let CommissioneeEvent::Credentials(credentials) = event {
                let outcome = self.try_network(credentials);
                if outcome == Outcome::Joined {
                    joined.push(credentials.clone());
                }
                match self.core.report(outcome) {
                    Ok(segments) => notify.extend(segments),
                    Err(e) => tracing::warn!(error = %e, "simulated device cannot report"),
                }
            }
        }
        let limiter = self.core.limiter();
        let binding = self.core.take_binding();
        let mut log = self.log();
        if binding.is_some() {
            log.binding = binding;
        }
        log.events.extend(step.events);
        log.joined.extend(joined);
        log.bound.extend(bound);
        log.limiter = limiter;
        notify
    }

    fn on_disconnect(&mut self) {
        self.core.on_link_closed();
        let limiter = self.core.limiter();
        self.log().limiter = limiter;
    }
}
