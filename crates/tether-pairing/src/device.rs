//! The device's whole commissioning side as one sans-IO core: GATT segments
//! in, segments to notify and events out (SPEC §12).
//!
//! It reassembles the commissioner's segments, runs [`PairingDevice`], then,
//! once paired, enrolls the device with [`BindingDevice`] (§12.5) and opens
//! the sealed credentials with [`ProvisioningDevice`] (§12.4).
//! The host (a real BLE stack, or the simulated radio) moves the segments,
//! tries the network it is given, and reports the outcome back with
//! [`DeviceCommissioning::report`].

use tether_identity::{Credentials as DeviceCredentials, DeviceKey};
use tether_proto::v1::commissioning_message::Kind;

use crate::binding::BindingDevice;
use crate::pake::{
    AttemptLimiter, DeviceEvent, PairingDevice, PairingError, Refusal, decode_message,
};
use crate::provision::{Credentials, Outcome, ProvisionError, ProvisioningDevice};
use crate::segment::{Reassembler, SegmentError, Segmenter};

/// What the device's host should know about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommissioneeEvent {
    /// Paired with a commissioner that knows the passcode.
    Paired,
    /// A pairing attempt failed and was counted (R6).
    PairingFailed,
    /// An attempt was refused (backoff or lockout).
    Refused(Refusal),
    /// A pending attempt timed out.
    TimedOut,
    /// Credentials to try; answer with [`DeviceCommissioning::report`].
    Credentials(Credentials),
    /// Bound to the account: a certificate with this serial, no group key.
    /// Take the credentials with [`DeviceCommissioning::take_credentials`].
    Bound {
        /// The certificate's serial.
        serial: u64,
    },
    /// A binding attempt failed (and the commissioner was told why).
    BindingFailed(String),
    /// Input that was dropped, and why (malformed, out of turn, replayed).
    Dropped(String),
}

/// The answer to one input.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceStep {
    /// Segments to notify to the commissioner, in order.
    pub notify: Vec<Vec<u8>>,
    /// Events, in order.
    pub events: Vec<CommissioneeEvent>,
    /// Call [`DeviceCommissioning::handle_timeout`] at this time (ms).
    pub timer_ms: Option<u64>,
}

/// Why the device could not produce a report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// Not paired, or no credentials received yet.
    #[error("no credentials to report on")]
    NothingToReport,
    /// Provisioning failed.
    #[error(transparent)]
    Provision(#[from] ProvisionError),
    /// Segmentation failed.
    #[error(transparent)]
    Segment(#[from] SegmentError),
}

/// The device side of commissioning over one BLE link at a time.
#[derive(Debug)]
pub struct DeviceCommissioning {
    pairing: PairingDevice,
    provisioning: Option<ProvisioningDevice>,
    binding: Option<BindingDevice>,
    key_pkcs8: Vec<u8>,
    credentials: Option<DeviceCredentials>,
    /// From the current link's pairing key (SPEC §12.6).
    device_secret: Option<[u8; 32]>,
    /// Kept with the credentials of the last binding.
    bound_secret: Option<[u8; 32]>,
    unix_now: u64,
    reassembler: Reassembler,
    segmenter: Segmenter,
}

impl DeviceCommissioning {
    /// A device with `passcode`, its persisted attempt `limiter`, a link of
    /// ATT MTU `mtu` (23 to 517), and `device_key`, generated on the device,
    /// which binding certifies (its private half never leaves).
    pub fn new(
        passcode: u32,
        limiter: AttemptLimiter,
        mtu: u16,
        device_key: &DeviceKey,
    ) -> Result<Self, SegmentError> {
        Ok(Self {
            pairing: PairingDevice::new(passcode, limiter),
            provisioning: None,
            binding: None,
            key_pkcs8: device_key.pkcs8().to_vec(),
            credentials: None,
            device_secret: None,
            bound_secret: None,
            unix_now: 0,
            reassembler: Reassembler::default(),
            segmenter: Segmenter::new(mtu)?,
        })
    }

    /// The attempt limiter, to persist after every step.
    pub fn limiter(&self) -> AttemptLimiter {
        self.pairing.limiter()
    }

    /// Sets the wall clock (Unix seconds) used to check a certificate's
    /// validity when binding.
    pub fn set_unix_time(&mut self, unix_now: u64) {
        self.unix_now = unix_now;
    }

    /// The credentials from the last successful binding (once).
    pub fn take_credentials(&mut self) -> Option<DeviceCredentials> {
        self.credentials.take()
    }

    /// The credentials and the device secret (SPEC §12.6) of the last
    /// successful binding (once): what the device keeps to serve members
    /// on the LAN.
    pub fn take_binding(&mut self) -> Option<(DeviceCredentials, [u8; 32])> {
        let credentials = self.credentials.take()?;
        Some((credentials, self.bound_secret.take()?))
    }

    /// Whether the device is paired on the current link.
    pub fn is_paired(&self) -> bool {
        self.provisioning.is_some()
    }

    /// Handles one segment written by the commissioner at `now_ms`; `seed`
    /// is 32 fresh random bytes.
    pub fn on_segment(&mut self, segment: &[u8], now_ms: u64, seed: [u8; 32]) -> DeviceStep {
        let mut step = DeviceStep::default();
        let message = match self.reassembler.push(segment) {
            Ok(Some(message)) => message,
            Ok(None) => return step,
            Err(e) => {
                step.events.push(CommissioneeEvent::Dropped(e.to_string()));
                return step;
            }
        };
        if let (Some(binding), Ok(kind @ (Kind::BindOffer(_) | Kind::BindGrant(_)))) =
            (&mut self.binding, decode_message(&message))
        {
            match kind {
                Kind::BindOffer(_) => {
                    let key = DeviceKey::from_pkcs8(&self.key_pkcs8);
                    match key.map(|key| binding.handle_offer(&message, key)) {
                        Ok(Ok(request)) => self.queue(&request, &mut step),
                        Ok(Err(e)) => step.events.push(CommissioneeEvent::Dropped(e.to_string())),
                        Err(e) => step.events.push(CommissioneeEvent::Dropped(e.to_string())),
                    }
                }
                _ => {
                    let (result, report) = binding.handle_grant(&message, self.unix_now);
                    if let Some(report) = report {
                        self.queue(&report, &mut step);
                    }
                    match result {
                        Ok(credentials) => {
                            step.events.push(CommissioneeEvent::Bound {
                                serial: credentials.certificate().serial,
                            });
                            self.credentials = Some(credentials);
                            self.bound_secret = self.device_secret;
                        }
                        Err(e) => step
                            .events
                            .push(CommissioneeEvent::BindingFailed(e.to_string())),
                    }
                }
            }
            return step;
        }
        if let Some(provisioning) = &mut self.provisioning {
            match provisioning.handle_credentials(&message) {
                Ok(credentials) => step
                    .events
                    .push(CommissioneeEvent::Credentials(credentials)),
                Err(ProvisionError::InvalidCredentials(why)) => {
                    step.events.push(CommissioneeEvent::Dropped(format!(
                        "invalid credentials: {why}"
                    )));
                    // Opened but unusable: tell the commissioner.
                    if let Ok(report) = provisioning.report(Outcome::Invalid) {
                        self.queue(&report, &mut step);
                    }
                }
                Err(e) => step.events.push(CommissioneeEvent::Dropped(e.to_string())),
            }
            return step;
        }
        match self.pairing.handle(&message, now_ms, seed) {
            Ok(out) => {
                if let Some(reply) = &out.reply {
                    self.queue(reply, &mut step);
                }
                step.timer_ms = out.timer_ms;
                match out.event {
                    Some(DeviceEvent::Paired(key)) => {
                        self.device_secret = Some(key.device_secret());
                        self.provisioning = Some(ProvisioningDevice::new(&key));
                        self.binding = Some(BindingDevice::new(&key));
                        step.events.push(CommissioneeEvent::Paired);
                    }
                    Some(DeviceEvent::Failed) => step.events.push(CommissioneeEvent::PairingFailed),
                    Some(DeviceEvent::Refused(r)) => {
                        step.events.push(CommissioneeEvent::Refused(r))
                    }
                    Some(DeviceEvent::TimedOut) => step.events.push(CommissioneeEvent::TimedOut),
                    None => {}
                }
            }
            Err(e @ (PairingError::Malformed(_) | PairingError::Unexpected(_))) => {
                step.events.push(CommissioneeEvent::Dropped(e.to_string()));
            }
            Err(e) => step.events.push(CommissioneeEvent::Dropped(e.to_string())),
        }
        step
    }

    /// Reports how joining the network went.
    pub fn report(&mut self, outcome: Outcome) -> Result<Vec<Vec<u8>>, DeviceError> {
        let provisioning = self
            .provisioning
            .as_mut()
            .ok_or(DeviceError::NothingToReport)?;
        let message = provisioning
            .report(outcome)
            .map_err(|_| DeviceError::NothingToReport)?;
        Ok(self.segmenter.segment(&message)?)
    }

    /// Ends a pending pairing attempt whose deadline passed.
    pub fn handle_timeout(&mut self, now_ms: u64) -> Option<CommissioneeEvent> {
        self.pairing
            .handle_timeout(now_ms)
            .map(|_| CommissioneeEvent::TimedOut)
    }

    /// The BLE link closed: a pending attempt ends (still counted), the
    /// pairing key is forgotten, a partial message is dropped.
    pub fn on_link_closed(&mut self) {
        self.pairing.link_closed();
        self.provisioning = None;
        self.binding = None;
        self.reassembler = Reassembler::default();
    }

    fn queue(&mut self, message: &[u8], step: &mut DeviceStep) {
        match self.segmenter.segment(message) {
            Ok(segments) => step.notify.extend(segments),
            Err(e) => step.events.push(CommissioneeEvent::Dropped(e.to_string())),
        }
    }
}
