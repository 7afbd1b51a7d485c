//! SPAKE2 pairing over the setup passcode, with key confirmation and attempt
//! limits (R6; SPEC §12.3).
//!
//! The commissioner (the head unit, or a phone) is SPAKE2 side A, the new
//! device side B. Three messages establish a 32-byte pairing key that only a
//! holder of the passcode can share:
//!
//! ```text
//! commissioner                                   device
//!   PairingRequest { version, pake_A }  ──────▶  limiter check; attempt counted
//!                                       ◀──────  PairingChallenge { pake_B, confirm_D }
//!   verify confirm_D (else wrong passcode)
//!   PairingConfirm { confirm_C }        ──────▶  verify confirm_C
//!                                       ◀──────  PairingResult { PAIRED | FAILED }
//! ```
//!
//! SPAKE2 gives a passive observer nothing to test passcodes against, and an
//! active attacker one guess per attempt. The device's [`AttemptLimiter`]
//! counts every started attempt as a failure until it succeeds, so dropping
//! the link mid-way does not buy a free guess. Failures back off
//! exponentially ([`BASE_BACKOFF_MS`] doubled per failure), and after
//! [`MAX_FAILED_ATTEMPTS`] the device locks out until the user resets it.
//!
//! The identities bound into SPAKE2 are fixed protocol strings: no device id,
//! MAC or name is involved (R2).

use prost::Message;
use rand_core::{CryptoRng, RngCore};
use ring::{hkdf, hmac};
use spake2::{Ed25519Group, Identity, Password, Spake2};
use tether_proto::v1::{
    CommissioningMessage, PairingChallenge, PairingConfirm, PairingRequest, PairingResult,
    PairingStatus, commissioning_message::Kind,
};
use thiserror::Error;

/// The pairing protocol version this build speaks.
pub const PAIRING_VERSION: u32 = 1;
/// Length of a key confirmation (HMAC-SHA256).
pub const CONFIRM_LEN: usize = 32;
/// How long the device waits for the commissioner's confirmation.
pub const PAIRING_TIMEOUT_MS: u64 = 30_000;
/// Failures after which the device accepts no attempt until a user reset.
pub const MAX_FAILED_ATTEMPTS: u32 = 5;
/// Wait after the first failure; doubled for each further one.
pub const BASE_BACKOFF_MS: u64 = 1_000;
/// Largest commissioning message accepted by the pairing cores.
pub const MAX_PAIRING_MESSAGE_BYTES: usize = 256;

const SPAKE_ID_COMMISSIONER: &[u8] = b"tether/1 commissioner";
const SPAKE_ID_DEVICE: &[u8] = b"tether/1 device";
const PASSWORD_LABEL: &[u8] = b"tether/1 passcode";
const KEY_SALT: &[u8] = b"tether/1 pairing";
const INFO_CONFIRM_COMMISSIONER: &[u8] = b"tether/1 confirm commissioner";
const INFO_CONFIRM_DEVICE: &[u8] = b"tether/1 confirm device";
const INFO_PAIRING_KEY: &[u8] = b"tether/1 pairing key";

/// Why pairing failed or a message was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PairingError {
    /// The bytes are not a commissioning message.
    #[error("malformed commissioning message: {0}")]
    Malformed(&'static str),
    /// A message arrived that this step does not expect.
    #[error("unexpected message: {0}")]
    Unexpected(&'static str),
    /// The device's confirmation did not verify: the passcode is wrong (or a
    /// message was tampered with).
    #[error("wrong passcode")]
    WrongPasscode,
    /// The device did not accept the commissioner's confirmation.
    #[error("the device rejected the pairing")]
    Rejected,
    /// The device asks to wait before the next attempt.
    #[error("the device asks to retry in {retry_after_s} s")]
    RetryLater {
        /// Seconds to wait.
        retry_after_s: u32,
    },
    /// The device is locked out until its user resets it.
    #[error("the device is locked out after too many failed attempts")]
    LockedOut,
    /// The device is pairing with someone else.
    #[error("the device is busy with another pairing")]
    Busy,
    /// The peer speaks another pairing version.
    #[error("unsupported pairing version")]
    UnsupportedVersion,
    /// The exchange is over; no more messages are accepted.
    #[error("the pairing exchange is finished")]
    Finished,
}

/// The key both sides hold after pairing; it seals provisioning data.
#[derive(Clone, PartialEq, Eq)]
pub struct PairingKey([u8; 32]);

impl PairingKey {
    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The secret the commissioner and the device keep after binding: the
    /// device admits LAN sessions from whoever proves it, and advertises
    /// tokens under a key derived from it (SPEC §12.6). HKDF-SHA256, salt
    /// `tether/1 device secret`, info `tether/1 device secret`. Each device
    /// has its own, so a compromised device exposes nothing of the account.
    pub fn device_secret(&self) -> [u8; 32] {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"tether/1 device secret").extract(&self.0);
        expand(&prk, b"tether/1 device secret")
    }
}

impl std::fmt::Debug for PairingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PairingKey(<hidden>)")
    }
}

/// A deterministic CSPRNG stream from a 32-byte seed (HMAC-SHA256 in counter
/// mode), so the cores take randomness as input instead of reading the
/// system source.
struct SeedRng {
    key: hmac::Key,
    counter: u64,
    block: [u8; 32],
    used: usize,
}

impl SeedRng {
    fn new(seed: &[u8; 32]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, seed),
            counter: 0,
            block: [0; 32],
            used: 32,
        }
    }
}

impl RngCore for SeedRng {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }

    fn next_u64(&mut self) -> u64 {
        let mut b = [0; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for byte in dest {
            if self.used == self.block.len() {
                let tag = hmac::sign(&self.key, &self.counter.to_be_bytes());
                self.block.copy_from_slice(tag.as_ref());
                self.counter += 1;
                self.used = 0;
            }
            *byte = self.block[self.used];
            self.used += 1;
        }
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for SeedRng {}

fn password(passcode: u32) -> Password {
    let mut bytes = PASSWORD_LABEL.to_vec();
    bytes.extend_from_slice(&passcode.to_be_bytes());
    Password::new(bytes)
}

fn identities() -> (Identity, Identity) {
    (
        Identity::new(SPAKE_ID_COMMISSIONER),
        Identity::new(SPAKE_ID_DEVICE),
    )
}

/// Keys derived from the SPAKE2 output.
struct DerivedKeys {
    confirm_commissioner: hmac::Key,
    confirm_device: hmac::Key,
    pairing: PairingKey,
}

struct Len32;

impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

fn expand(prk: &hkdf::Prk, info: &[u8]) -> [u8; 32] {
    let mut out = [0; 32];
    let info = [info];
    // Expanding 32 bytes from SHA-256 is always within HKDF's limit.
    prk.expand(&info, Len32)
        .and_then(|okm| okm.fill(&mut out))
        .expect("32 bytes is within HKDF-SHA256's output limit");
    out
}

fn derive(spake_key: &[u8]) -> DerivedKeys {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, KEY_SALT).extract(spake_key);
    DerivedKeys {
        confirm_commissioner: hmac::Key::new(
            hmac::HMAC_SHA256,
            &expand(&prk, INFO_CONFIRM_COMMISSIONER),
        ),
        confirm_device: hmac::Key::new(hmac::HMAC_SHA256, &expand(&prk, INFO_CONFIRM_DEVICE)),
        pairing: PairingKey(expand(&prk, INFO_PAIRING_KEY)),
    }
}

/// What each confirmation MACs: the version and both SPAKE2 messages.
fn transcript(pake_a: &[u8], pake_b: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(4 + 2 + pake_a.len() + pake_b.len());
    t.extend_from_slice(&PAIRING_VERSION.to_be_bytes());
    t.push(u8::try_from(pake_a.len()).unwrap_or(u8::MAX));
    t.extend_from_slice(pake_a);
    t.push(u8::try_from(pake_b.len()).unwrap_or(u8::MAX));
    t.extend_from_slice(pake_b);
    t
}

fn encode(kind: Kind) -> Vec<u8> {
    CommissioningMessage { kind: Some(kind) }.encode_to_vec()
}

/// Decodes one commissioning message from untrusted bytes.
pub fn decode_message(bytes: &[u8]) -> Result<Kind, PairingError> {
    if bytes.len() > MAX_PAIRING_MESSAGE_BYTES {
        return Err(PairingError::Malformed("message too long"));
    }
    CommissioningMessage::decode(bytes)
        .map_err(|_| PairingError::Malformed("not a CommissioningMessage"))?
        .kind
        .ok_or(PairingError::Malformed("empty CommissioningMessage"))
}

fn result_error(result: &PairingResult) -> PairingError {
    match PairingStatus::try_from(result.status) {
        Ok(PairingStatus::RetryLater) => PairingError::RetryLater {
            retry_after_s: result.retry_after_s,
        },
        Ok(PairingStatus::LockedOut) => PairingError::LockedOut,
        Ok(PairingStatus::Busy) => PairingError::Busy,
        Ok(PairingStatus::UnsupportedVersion) => PairingError::UnsupportedVersion,
        Ok(PairingStatus::Failed) => PairingError::Rejected,
        _ => PairingError::Malformed("unknown pairing status"),
    }
}

enum CommissionerState {
    AwaitChallenge {
        spake: Spake2<Ed25519Group>,
        pake_a: Vec<u8>,
    },
    AwaitResult {
        key: PairingKey,
    },
    Done,
}

/// The commissioner's side of pairing (SPAKE2 side A).
pub struct Commissioner {
    state: CommissionerState,
}

impl std::fmt::Debug for Commissioner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Commissioner").finish_non_exhaustive()
    }
}

/// What the commissioner does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommissionerStep {
    /// Send these bytes to the device and wait for its answer.
    Send(Vec<u8>),
    /// Pairing succeeded: both sides hold this key.
    Paired(PairingKey),
}

impl Commissioner {
    /// Starts pairing with the passcode from the device's setup payload;
    /// `seed` is 32 fresh random bytes. Returns the first message to send.
    pub fn start(passcode: u32, seed: [u8; 32]) -> (Self, Vec<u8>) {
        let (id_a, id_b) = identities();
        let (spake, pake_a) = Spake2::<Ed25519Group>::start_a_with_rng(
            &password(passcode),
            &id_a,
            &id_b,
            SeedRng::new(&seed),
        );
        let request = encode(Kind::PairingRequest(PairingRequest {
            version: PAIRING_VERSION,
            pake: pake_a.clone(),
        }));
        (
            Self {
                state: CommissionerState::AwaitChallenge { spake, pake_a },
            },
            request,
        )
    }

    /// Handles the device's message. Any error ends the exchange.
    pub fn handle(&mut self, bytes: &[u8]) -> Result<CommissionerStep, PairingError> {
        let state = std::mem::replace(&mut self.state, CommissionerState::Done);
        let message = decode_message(bytes)?;
        match (state, message) {
            (_, Kind::PairingResult(result))
                if PairingStatus::try_from(result.status) != Ok(PairingStatus::Paired) =>
            {
                Err(result_error(&result))
            }
            (CommissionerState::AwaitChallenge { spake, pake_a }, Kind::PairingChallenge(c)) => {
                let spake_key = spake
                    .finish(&c.pake)
                    .map_err(|_| PairingError::Malformed("SPAKE2 message"))?;
                let keys = derive(&spake_key);
                let t = transcript(&pake_a, &c.pake);
                let mut device_input = b"device".to_vec();
                device_input.extend_from_slice(&t);
                hmac::verify(&keys.confirm_device, &device_input, &c.confirm)
                    .map_err(|_| PairingError::WrongPasscode)?;
                let mut own_input = b"commissioner".to_vec();
                own_input.extend_from_slice(&t);
                let confirm = hmac::sign(&keys.confirm_commissioner, &own_input);
                self.state = CommissionerState::AwaitResult { key: keys.pairing };
                Ok(CommissionerStep::Send(encode(Kind::PairingConfirm(
                    PairingConfirm {
                        confirm: confirm.as_ref().to_vec(),
                    },
                ))))
            }
            (CommissionerState::AwaitResult { key }, Kind::PairingResult(_)) => {
                Ok(CommissionerStep::Paired(key))
            }
            (CommissionerState::Done, _) => Err(PairingError::Finished),
            _ => Err(PairingError::Unexpected("not the next pairing message")),
        }
    }
}

/// Why the device refuses to start an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Wait this long (milliseconds) before the next attempt.
    RetryAfter(u64),
    /// No attempt until the user resets the device.
    LockedOut,
}

/// The device's record of failed pairing attempts. The host persists it
/// ([`AttemptLimiter::to_parts`]) so that a reboot does not reset the count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AttemptLimiter {
    failures: u32,
    not_before_ms: u64,
}

impl AttemptLimiter {
    /// Rebuilds a limiter from persisted parts.
    pub fn from_parts(failures: u32, not_before_ms: u64) -> Self {
        Self {
            failures,
            not_before_ms,
        }
    }

    /// The parts to persist: failures so far, and the earliest time of the
    /// next attempt (host clock, milliseconds).
    pub fn to_parts(&self) -> (u32, u64) {
        (self.failures, self.not_before_ms)
    }

    /// Failed (or abandoned) attempts since the last success or reset.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Whether an attempt may start at `now_ms`.
    pub fn check(&self, now_ms: u64) -> Result<(), Refusal> {
        if self.failures >= MAX_FAILED_ATTEMPTS {
            return Err(Refusal::LockedOut);
        }
        if now_ms < self.not_before_ms {
            return Err(Refusal::RetryAfter(self.not_before_ms - now_ms));
        }
        Ok(())
    }

    /// Counts a failure at `now_ms` and sets the backoff: 1 s after the first,
    /// doubled after each further one.
    pub fn record_failure(&mut self, now_ms: u64) {
        self.failures = self.failures.saturating_add(1);
        let exponent = self.failures.saturating_sub(1).min(20);
        self.not_before_ms = now_ms.saturating_add(BASE_BACKOFF_MS << exponent);
    }

    /// Clears the count after a successful pairing.
    pub fn record_success(&mut self) {
        *self = Self::default();
    }

    /// Clears the lockout after a physical user action (button, power cycle
    /// with the user present); the host decides what counts.
    pub fn reset_by_user(&mut self) {
        *self = Self::default();
    }
}

/// What the device reports to its host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceEvent {
    /// Paired: provisioning may start under this key.
    Paired(PairingKey),
    /// An attempt failed (wrong passcode or tampering) and was counted.
    Failed,
    /// An attempt was refused without any SPAKE2 work.
    Refused(Refusal),
    /// The commissioner did not confirm in time; the attempt stays counted.
    TimedOut,
}

/// The device's answer to one input.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceOutput {
    /// Bytes to send back, if any.
    pub reply: Option<Vec<u8>>,
    /// Something the host should know.
    pub event: Option<DeviceEvent>,
    /// Call [`PairingDevice::handle_timeout`] at this time (host clock, ms).
    pub timer_ms: Option<u64>,
}

struct Pending {
    keys: DerivedKeys,
    transcript: Vec<u8>,
    deadline_ms: u64,
}

/// The device's side of pairing (SPAKE2 side B).
pub struct PairingDevice {
    passcode: u32,
    limiter: AttemptLimiter,
    pending: Option<Pending>,
}

impl std::fmt::Debug for PairingDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PairingDevice")
            .field("limiter", &self.limiter)
            .field("pending", &self.pending.is_some())
            .finish_non_exhaustive()
    }
}

fn result_message(status: PairingStatus, retry_after_ms: u64) -> Vec<u8> {
    encode(Kind::PairingResult(PairingResult {
        status: status as i32,
        retry_after_s: u32::try_from(retry_after_ms.div_ceil(1000)).unwrap_or(u32::MAX),
    }))
}

impl PairingDevice {
    /// A device that pairs with `passcode`, continuing the persisted
    /// `limiter`.
    pub fn new(passcode: u32, limiter: AttemptLimiter) -> Self {
        Self {
            passcode,
            limiter,
            pending: None,
        }
    }

    /// The limiter, to persist after every event.
    pub fn limiter(&self) -> AttemptLimiter {
        self.limiter
    }

    /// Clears a lockout after a physical user action.
    pub fn reset_by_user(&mut self) {
        self.limiter.reset_by_user();
    }

    /// Handles a message from a commissioner at `now_ms`; `seed` is 32 fresh
    /// random bytes (used only when an attempt starts). Malformed bytes are
    /// an error and change nothing, except that they end a pending attempt
    /// (which stays counted as failed).
    pub fn handle(
        &mut self,
        bytes: &[u8],
        now_ms: u64,
        seed: [u8; 32],
    ) -> Result<DeviceOutput, PairingError> {
        let message = match decode_message(bytes) {
            Ok(m) => m,
            Err(e) => {
                self.pending = None;
                return Err(e);
            }
        };
        match message {
            Kind::PairingRequest(request) => Ok(self.start_attempt(&request, now_ms, seed)),
            Kind::PairingConfirm(confirm) => self.finish_attempt(&confirm),
            _ => Err(PairingError::Unexpected(
                "a device only accepts requests and confirms",
            )),
        }
    }

    fn start_attempt(
        &mut self,
        request: &PairingRequest,
        now_ms: u64,
        seed: [u8; 32],
    ) -> DeviceOutput {
        if let Some(pending) = &self.pending {
            if now_ms < pending.deadline_ms {
                return DeviceOutput {
                    reply: Some(result_message(PairingStatus::Busy, 0)),
                    ..DeviceOutput::default()
                };
            }
            self.pending = None;
        }
        if request.version != PAIRING_VERSION {
            return DeviceOutput {
                reply: Some(result_message(PairingStatus::UnsupportedVersion, 0)),
                ..DeviceOutput::default()
            };
        }
        if let Err(refusal) = self.limiter.check(now_ms) {
            let reply = match refusal {
                Refusal::RetryAfter(ms) => result_message(PairingStatus::RetryLater, ms),
                Refusal::LockedOut => result_message(PairingStatus::LockedOut, 0),
            };
            return DeviceOutput {
                reply: Some(reply),
                event: Some(DeviceEvent::Refused(refusal)),
                timer_ms: None,
            };
        }
        // Counted before any work: abandoning the attempt does not refund it.
        self.limiter.record_failure(now_ms);
        let (id_a, id_b) = identities();
        let (spake, pake_b) = Spake2::<Ed25519Group>::start_b_with_rng(
            &password(self.passcode),
            &id_a,
            &id_b,
            SeedRng::new(&seed),
        );
        let Ok(spake_key) = spake.finish(&request.pake) else {
            return DeviceOutput {
                reply: Some(result_message(PairingStatus::Failed, 0)),
                event: Some(DeviceEvent::Failed),
                timer_ms: None,
            };
        };
        let keys = derive(&spake_key);
        let t = transcript(&request.pake, &pake_b);
        let mut input = b"device".to_vec();
        input.extend_from_slice(&t);
        let confirm = hmac::sign(&keys.confirm_device, &input);
        let deadline_ms = now_ms.saturating_add(PAIRING_TIMEOUT_MS);
        self.pending = Some(Pending {
            keys,
            transcript: t,
            deadline_ms,
        });
        DeviceOutput {
            reply: Some(encode(Kind::PairingChallenge(PairingChallenge {
                pake: pake_b,
                confirm: confirm.as_ref().to_vec(),
            }))),
            event: None,
            timer_ms: Some(deadline_ms),
        }
    }

    fn finish_attempt(&mut self, confirm: &PairingConfirm) -> Result<DeviceOutput, PairingError> {
        let pending = self
            .pending
            .take()
            .ok_or(PairingError::Unexpected("no pairing in progress"))?;
        let mut input = b"commissioner".to_vec();
        input.extend_from_slice(&pending.transcript);
        if hmac::verify(&pending.keys.confirm_commissioner, &input, &confirm.confirm).is_err() {
            // The failure was counted when the attempt started.
            return Ok(DeviceOutput {
                reply: Some(result_message(PairingStatus::Failed, 0)),
                event: Some(DeviceEvent::Failed),
                timer_ms: None,
            });
        }
        self.limiter.record_success();
        Ok(DeviceOutput {
            reply: Some(result_message(PairingStatus::Paired, 0)),
            event: Some(DeviceEvent::Paired(pending.keys.pairing)),
            timer_ms: None,
        })
    }

    /// The link to the commissioner closed: ends a pending attempt, which
    /// stays counted. (A commissioner that finds the passcode wrong simply
    /// disconnects.) Returns whether an attempt was pending.
    pub fn link_closed(&mut self) -> bool {
        self.pending.take().is_some()
    }

    /// Ends a pending attempt whose deadline has passed at `now_ms`.
    pub fn handle_timeout(&mut self, now_ms: u64) -> Option<DeviceEvent> {
        let expired = self
            .pending
            .as_ref()
            .is_some_and(|p| now_ms >= p.deadline_ms);
        if expired {
            self.pending = None;
            Some(DeviceEvent::TimedOut)
        } else {
            None
        }
    }
}
