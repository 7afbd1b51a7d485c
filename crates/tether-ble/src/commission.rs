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

/// How long the commissioner waits for each answer from the device. Joining
/// a network can take a while; pairing answers are quick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommissionTimeouts {
    /// For each pairing answer.
    pub pairing: Duration,
    /// For the device's report after it tried the network.
    pub provisioning: Duration,
}

impl Default for CommissionTimeouts {
    fn default() -> Self {
        Self {
            pairing: Duration::from_secs(10),
            provisioning: Duration::from_secs(60),
        }
    }
}

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
/// attempt).
pub async fn commission<L: Link>(
    link: &L,
    plan: &CommissionPlan,
    authority: &mut (dyn AccountAuthority + Send),
    timeouts: CommissionTimeouts,
    mut progress: impl FnMut(CommissionStage) + Send,
) -> Result<Commissioned, CommissionError> {
    let mut channel = Channel {
        link,
        segmenter: Segmenter::new(link.mtu())?,
        reassembler: Reassembler::default(),
    };
    let (mut commissioner, request) = Commissioner::start(plan.passcode, plan.seed);
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

    let mut binding = BindingCommissioner::new(&key);
    channel
        .send(&binding.offer(plan.bind_nonce, authority.public_key())?)
        .await?;
    let request = channel.recv(timeouts.pairing, "binding request").await?;
    let (grant, _) = binding.handle_request(&request, authority, plan.unix_now)?;
    channel.send(&grant).await?;
    let result = channel.recv(timeouts.pairing, "binding result").await?;
    let certificate = binding.handle_result(&result)?;
    progress(CommissionStage::Bound);

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
        device_secret: key.device_secret(),
        outcome,
    })
}

/// Connects to peripheral `id`, commissions it (see [`commission`]) and
/// disconnects, whatever the outcome (the device then ends any attempt).
pub async fn commission_peripheral<C: Central>(
    central: &C,
    id: &PeripheralId,
    plan: &CommissionPlan,
    authority: &mut (dyn AccountAuthority + Send),
    timeouts: CommissionTimeouts,
) -> Result<Commissioned, CommissionError> {
    let link = central.connect(id).await?;
    let result = commission(&link, plan, authority, timeouts, |_| {}).await;
    // A failed disconnect changes nothing: the link is gone either way.
    let _ = link.disconnect().await;
    result
}
