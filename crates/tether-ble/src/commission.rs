//! The commissioner's side of commissioning over any [`Link`]: pair with the
//! device's passcode, bind it to the account through the account authority,
//! then hand it network credentials and wait for its report (SPEC §12, §13). A thin async driver over the sans-IO cores of
//! `tether-pairing`.

use std::time::Duration;

use thiserror::Error;

use tether_identity::{AccountAuthority, VerifiedCertificate};
use tether_pairing::binding::{BindError, BindingCommissioner};
use tether_pairing::pake::{Commissioner, CommissionerStep, PairingError};
use tether_pairing::provision::{Credentials, Outcome, ProvisionError, ProvisioningCommissioner};
use tether_pairing::segment::{Reassembler, SegmentError, Segmenter};

use crate::radio::{Central, Link, PeripheralId, RadioError};

/// How long the commissioner waits for each answer from the device, and
/// how often [`commission_peripheral`] reconnects a link that dropped.
/// Joining a network can take a while; pairing answers are quick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommissionTimeouts {
    /// For each pairing answer.
    pub pairing: Duration,
    /// For the device's report after it tried the network.
    pub provisioning: Duration,
    /// Reconnections after a dropped link (SPEC §12.7). Each drop during
    /// SPAKE2 costs one of the device's failed attempts (R6: five before
    /// lockout), so this stays small.
    pub link_retries: u32,
}

impl Default for CommissionTimeouts {
    fn default() -> Self {
        Self {
            pairing: Duration::from_secs(10),
            provisioning: Duration::from_secs(60),
            link_retries: DEFAULT_LINK_RETRIES,
        }
    }
}

/// Reconnections after a dropped link, by default: two drops during
/// SPAKE2 still leave the user three of the device's five attempts.
pub const DEFAULT_LINK_RETRIES: u32 = 2;

/// The longest backoff [`commission_peripheral`] waits out by itself after
/// a dropped attempt (the device's first backoffs are 1 s and 2 s); a
/// longer one is returned as [`PairingError::RetryLater`].
pub const MAX_RETRY_WAIT_S: u32 = 8;

/// Why commissioning stopped.
#[derive(Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CommissionError {
    /// The radio failed or the link dropped.
    #[error(transparent)]
    Radio(#[from] RadioError),
    /// Pairing failed (wrong passcode, lockout, backoff, busy...).
    #[error(transparent)]
    Pairing(#[from] PairingError),
    /// Binding failed (wrong role, the authority refused, the device
    /// rejected the grant...).
    #[error(transparent)]
    Binding(#[from] BindError),
    /// Provisioning failed (tampered, replayed, invalid credentials).
    #[error(transparent)]
    Provision(#[from] ProvisionError),
    /// A segment from the device was malformed.
    #[error(transparent)]
    Segment(#[from] SegmentError),
    /// The device did not answer in time.
    #[error("the device did not answer in time ({0})")]
    Timeout(&'static str),
}

/// One step of commissioning, for progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommissionStage {
    /// SPAKE2 request sent.
    PairingStarted,
    /// Both confirmations verified.
    Paired,
    /// The device holds its certificate (no group key).
    Bound,
    /// Sealed credentials sent; the device is trying the network.
    CredentialsSent,
    /// The link dropped; reconnecting (the `retry`th time) to start over
    /// from pairing. Not repeated: [`CommissionStage::Bound`] when the
    /// device was bound before the drop.
    Reconnecting {
        /// 1 for the first reconnection.
        retry: u32,
    },
    /// The device asked to wait this long after the attempt the drop
    /// abandoned (its backoff, R6); the commissioner waits, then pairs.
    Waiting {
        /// Seconds the device asked for.
        seconds: u32,
    },
}

/// A message exchange over a link: segments out, reassembled messages in.
struct Channel<'a, L: Link> {
    link: &'a L,
    segmenter: Segmenter,
    reassembler: Reassembler,
}

impl<L: Link> Channel<'_, L> {
    async fn send(&mut self, message: &[u8]) -> Result<(), CommissionError> {
        for segment in self.segmenter.segment(message)? {
            self.link.send(&segment).await?;
        }
        Ok(())
    }

    async fn recv(
        &mut self,
        timeout: Duration,
        what: &'static str,
    ) -> Result<Vec<u8>, CommissionError> {
        let receive = async {
            loop {
                let segment = self.link.recv().await?;
                if let Some(message) = self.reassembler.push(&segment)? {
                    return Ok::<_, CommissionError>(message);
                }
            }
        };
        tokio::time::timeout(timeout, receive)
            .await
            .map_err(|_| CommissionError::Timeout(what))?
    }
}

/// What one commissioning needs besides the link and the authority.
#[derive(Debug, Clone)]
pub struct CommissionPlan {
    /// The passcode from the device's setup payload.
    pub passcode: u32,
    /// The network the device should join.
    pub credentials: Credentials,
    /// 32 fresh random bytes for SPAKE2.
    pub seed: [u8; 32],
    /// 16 fresh random bytes binding the enrollment to this offer.
    pub bind_nonce: [u8; 16],
    /// The wall clock, Unix seconds (certificate validity).
    pub unix_now: u64,
}

/// A device that was paired, bound and provisioned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commissioned {
    /// The certificate the authority issued for the device.
    pub certificate: VerifiedCertificate,
    /// The same certificate, encoded as the device holds it
    /// (`DeviceCertificate`), for the binding record.
    pub certificate_message: Vec<u8>,
    /// The secret shared with the device from this pairing (SPEC §12.6):
    /// keep it with the binding record to reach the device on the LAN.
    pub device_secret: [u8; 32],
    /// The device's report on the network.
    pub outcome: Outcome,
}

/// Pairs with the device on `link`, binds it through `authority` and
/// provisions the plan's credentials; returns the certificate and the
/// device's report. `progress` hears each stage as it is reached. On any
/// error the caller should disconnect the link (the device then ends its
/// attempt). One link, no retry: [`commission_peripheral`] reconnects a
/// dropped link.
pub async fn commission<L: Link>(
    link: &L,
    plan: &CommissionPlan,
    authority: &mut (dyn AccountAuthority + Send),
    timeouts: CommissionTimeouts,
    mut progress: impl FnMut(CommissionStage) + Send,
) -> Result<Commissioned, CommissionError> {
    let mut state = Attempts::default();
    commission_once(link, plan, authority, timeouts, &mut progress, &mut state).await
}

/// What earlier links of one commissioning achieved.
#[derive(Default)]
struct Attempts {
    /// Reconnections after a drop so far.
    retries: u32,
    /// Links opened before this one (0 on the first): each gets its own
    /// randomness, a link after a backoff wait too.
    links: u32,
    /// The device confirmed its binding on an earlier link: its
    /// certificate, and the device secret of the pairing it was bound
    /// under (the one the device keeps, SPEC §12.6).
    bound: Option<(VerifiedCertificate, [u8; 32], Vec<u8>)>,
}

impl Attempts {
    /// Fresh randomness for this link's SPAKE2 and binding offer: the plan's
    /// own on the first link, then derived from it with the link's number,
    /// so that no two links share a SPAKE2 scalar.
    fn randomness(&self, plan: &CommissionPlan) -> ([u8; 32], [u8; 16]) {
        if self.links == 0 {
            return (plan.seed, plan.bind_nonce);
        }
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(b"tether/1 commissioning retry\0");
        ctx.update(&plan.seed);
        ctx.update(&plan.bind_nonce);
        ctx.update(&self.links.to_be_bytes());
        let digest = ctx.finish();
        let mut seed = [0u8; 32];
        seed.copy_from_slice(digest.as_ref());
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(b"tether/1 commissioning retry nonce\0");
        ctx.update(&seed);
        let mut nonce = [0u8; 16];
        nonce.copy_from_slice(&ctx.finish().as_ref()[..16]);
        (seed, nonce)
    }
}

async fn commission_once<L: Link>(
    link: &L,
    plan: &CommissionPlan,
    authority: &mut (dyn AccountAuthority + Send),
    timeouts: CommissionTimeouts,
    progress: &mut (impl FnMut(CommissionStage) + Send),
    state: &mut Attempts,
) -> Result<Commissioned, CommissionError> {
    let (seed, bind_nonce) = state.randomness(plan);
    let mut channel = Channel {
        link,
        segmenter: Segmenter::new(link.mtu())?,
        reassembler: Reassembler::default(),
    };
    let (mut commissioner, request) = Commissioner::start(plan.passcode, seed);
    channel.send(&request).await?;
    progress(CommissionStage::PairingStarted);
    let key = loop {
        let answer = channel.recv(timeouts.pairing, "pairing").await?;
        match commissioner.handle(&answer)? {
            CommissionerStep::Send(confirm) => channel.send(&confirm).await?,
            CommissionerStep::Paired(key) => break key,
        }
    };
    progress(CommissionStage::Paired);

    let (certificate, device_secret, certificate_message) = match &state.bound {
        // Bound on an earlier link: this pairing only carries the
        // credentials.
        Some(bound) => bound.clone(),
        None => {
            let mut binding = BindingCommissioner::new(&key);
            channel
                .send(&binding.offer(bind_nonce, authority.public_key())?)
                .await?;
            let request = channel.recv(timeouts.pairing, "binding request").await?;
            let (grant, _) = binding.handle_request(&request, authority, plan.unix_now)?;
            channel.send(&grant).await?;
            let result = channel.recv(timeouts.pairing, "binding result").await?;
            let certificate = binding.handle_result(&result)?;
            let message = binding.granted_certificate().to_vec();
            state.bound = Some((certificate.clone(), key.device_secret(), message.clone()));
            progress(CommissionStage::Bound);
            (certificate, key.device_secret(), message)
        }
    };

    let mut provisioning = ProvisioningCommissioner::new(&key);
    channel
        .send(&provisioning.send_credentials(&plan.credentials)?)
        .await?;
    progress(CommissionStage::CredentialsSent);
    let report = channel
        .recv(timeouts.provisioning, "provisioning report")
        .await?;
    let outcome = provisioning.handle_status(&report)?;
    Ok(Commissioned {
        certificate,
        certificate_message,
        device_secret,
        outcome,
    })
}

/// Connects to peripheral `id`, commissions it (see [`commission`]) and
/// disconnects, whatever the outcome (the device then ends any attempt).
///
/// A link that drops is reconnected, up to `timeouts.link_retries` times
/// (SPEC §12.7): the next link pairs again with fresh randomness; when the
/// device was bound on an earlier link it is not bound again, and the
/// certificate and device secret of that binding are returned. If the
/// device asks to wait after an attempt the drop abandoned (it counted it,
/// R6), the wait is kept and shown as [`CommissionStage::Waiting`]. A drop
/// between the certificate's grant and the device's confirmation is
/// retried too: a device that accepted that grant is bound again on the
/// next link and keeps the newer certificate, for the same device key.
pub async fn commission_peripheral<C: Central>(
    central: &C,
    id: &PeripheralId,
    plan: &CommissionPlan,
    authority: &mut (dyn AccountAuthority + Send),
    timeouts: CommissionTimeouts,
    mut progress: impl FnMut(CommissionStage) + Send,
) -> Result<Commissioned, CommissionError> {
    let mut state = Attempts::default();
    // Whether this link's attempt already waited for the device's backoff.
    let mut waited = false;
    loop {
        let result = match central.connect(id).await {
            Ok(link) => {
                let result =
                    commission_once(&link, plan, authority, timeouts, &mut progress, &mut state)
                        .await;
                // A failed disconnect changes nothing: the link is gone
                // either way.
                let _ = link.disconnect().await;
                state.links += 1;
                result
            }
            Err(e) => Err(e.into()),
        };
        match result {
            Err(CommissionError::Radio(RadioError::Disconnected))
                if state.retries < timeouts.link_retries =>
            {
                state.retries += 1;
                waited = false;
                progress(CommissionStage::Reconnecting {
                    retry: state.retries,
                });
            }
            Err(CommissionError::Pairing(PairingError::RetryLater { retry_after_s }))
                if state.retries > 0 && !waited && retry_after_s <= MAX_RETRY_WAIT_S =>
            {
                // The backoff our own abandoned attempt started.
                waited = true;
                progress(CommissionStage::Waiting {
                    seconds: retry_after_s,
                });
                tokio::time::sleep(Duration::from_secs(u64::from(retry_after_s))).await;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_link_of_one_commissioning_gets_its_own_spake2_randomness() {
        let plan = CommissionPlan {
            passcode: 20_202_021,
            credentials: Credentials {
                ssid: b"Home".to_vec(),
                passphrase: b"pass-phrase".to_vec(),
                security: tether_pairing::provision::Security::Wpa2Personal,
                network: tether_pairing::provision::Network::Home,
            },
            seed: [1; 32],
            bind_nonce: [2; 16],
            unix_now: 0,
        };
        let of = |links| {
            Attempts {
                links,
                ..Attempts::default()
            }
            .randomness(&plan)
        };
        assert_eq!(of(0), (plan.seed, plan.bind_nonce));
        let (one, two, three) = (of(1), of(2), of(3));
        let seeds = [plan.seed, one.0, two.0, three.0];
        let nonces = [plan.bind_nonce, one.1, two.1, three.1];
        for i in 0..seeds.len() {
            for j in i + 1..seeds.len() {
                assert_ne!(seeds[i], seeds[j]);
                assert_ne!(nonces[i], nonces[j]);
            }
        }
        // Derived from the plan's secret seed, not from the count alone.
        let other = CommissionPlan {
            seed: [3; 32],
            ..plan.clone()
        };
        let other_one = Attempts {
            links: 1,
            ..Attempts::default()
        }
        .randomness(&other);
        assert_ne!(other_one.0, one.0);
    }
}
