//! The account-bound handshake, version 2 (SPEC §5; R2, R3, R31).
//!
//! This module contains no networking code and does not read the clock or a
//! random source: the exporter, nonces, the TLS certificate hash and `now`
//! come from the caller, so two cores can be driven against each other
//! deterministically.
//!
//! ```text
//!  initiator (client)                              responder (server)
//!  TLS ClientHello, ALPN [tether/2, H1, H2]  ──►  H = hint under a key it holds?
//!                                            ◄──  TLS ServerHello … Finished,
//!                                                 0.5-RTT: Seal_K(ServerAuth)
//!  opens it (holds K), checks cert + sig
//!  TLS Finished, ClientAuth + first requests ──►  checks cert + sig (exporter)
//!                                            ◄──  Accept{ticket}, responses
//! ```
//!
//! A hint is a fresh random value and its MAC under the membership key (or
//! a grant's admission key, or a bound device's key): a non-member sees
//! random bytes. The responder's `ServerAuth` (its certificate) travels
//! only sealed under a key derived from the key the hint was made with, so a
//! non-member — passive, active, or replaying a member's hint — gets bytes
//! it cannot open, of the same length as everyone else's. `ServerAuth` signs
//! the hints and the hash of the responder's TLS certificate, whose TLS
//! `CertificateVerify` proves it live on this connection; `ClientAuth` signs
//! the TLS exporter. Nothing relays into another connection.
//!
//! # Driving a core
//! Initiator: create the core, offer [`ClientHandshake::hints`] in the TLS
//! ClientHello, give the sealed `ServerAuth` to
//! [`ClientHandshake::handle_server_auth`], then loop: drain
//! [`ClientHandshake::poll_output`] until [`Output::Pending`], sending each
//! `Transmit` as one frame on stream 0; feed each frame received there to
//! `handle_message`. Responder: [`ServerHandshake::answer_hints`] gives the
//! sealed `ServerAuth` to send; once the TLS handshake is complete,
//! [`ServerHandshake::set_exporter`], then the same loop. An error is final;
//! the responder queues a `Refuse` to send before it reports the error.

use prost::Message;
use ring::{aead, digest, hmac};
use std::collections::VecDeque;
use std::sync::Arc;
use tether_identity::{CertificateError, Credentials, VerifiedCertificate, verify_signature};
use tether_proto::v1::{
    Accept, ClientAuth, DeviceCertificate, HandshakeMessage, Refuse, RefuseReason, ResumeHello,
    ServerAuth, TicketBody, handshake_message::Message as Msg,
};
use thiserror::Error;

/// The Tether protocol version this build speaks (the ALPN `tether/2`).
pub const PROTOCOL_VERSION: u32 = 2;
/// TLS exporter label (RFC 5705 / RFC 8446 §7.5) the handshake binds to.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-tether/2 handshake";
/// Bytes of an admission hint: 16 random bytes and a 32-byte HMAC.
pub const HINT_LEN: usize = HINT_RANDOM_LEN + 32;
/// Random bytes at the start of a hint.
pub const HINT_RANDOM_LEN: usize = 16;
/// How many hints an initiator offers, always (SPEC §5.2).
pub const HINTS: usize = 2;
/// The sealed `ServerAuth`'s plaintext is padded to this many bytes, so
/// every responder's answer has the same length (SPEC §5.3).
pub const SEALED_PLAINTEXT_LEN: usize = 512;
/// Bytes of a sealed `ServerAuth`: nonce, padded plaintext, tag.
pub const SEALED_SERVER_AUTH_LEN: usize = SEAL_NONCE_LEN + SEALED_PLAINTEXT_LEN + 16;
/// Bytes of the AEAD nonce in front of a sealed `ServerAuth`.
pub const SEAL_NONCE_LEN: usize = 12;
/// Randomness the responder needs to answer hints: a seal nonce and a key
/// for the look-alike answer to hints it does not know.
pub const ANSWER_ENTROPY_LEN: usize = SEAL_NONCE_LEN + 32;
/// Length of the exporter value the cores take.
pub const EXPORTER_LEN: usize = 32;
/// Length of every handshake nonce.
pub const NONCE_LEN: usize = 32;
/// Handshake messages larger than this are refused before decoding.
pub const MAX_HANDSHAKE_MESSAGE_BYTES: usize = 2048;
/// Default lifetime of a resumption ticket: 24 hours.
pub const TICKET_LIFETIME_S: u32 = 24 * 3600;

const TICKET_AAD: &[u8] = b"tether/2 ticket";
const TICKET_NONCE_LEN: usize = 12;

/// The exporter value of one connection.
pub type Exporter = [u8; EXPORTER_LEN];
/// A 32-byte random nonce supplied by the driver.
pub type Nonce = [u8; NONCE_LEN];
/// SHA-256 of the responder's TLS end-entity certificate (DER) on this
/// connection.
pub type TlsPin = [u8; 32];
/// One admission hint as offered in the ALPN list.
pub type Hint = [u8; HINT_LEN];

/// Handshake settings shared by both roles.
#[derive(Debug, Clone)]
pub struct HandshakeConfig {
    /// Lowest protocol version accepted.
    pub min_version: u32,
    /// Highest protocol version offered.
    pub max_version: u32,
    /// Lifetime of tickets issued by a responder, seconds.
    pub ticket_lifetime_s: u32,
}

impl Default for HandshakeConfig {
    fn default() -> Self {
        Self {
            min_version: PROTOCOL_VERSION,
            max_version: PROTOCOL_VERSION,
            ticket_lifetime_s: TICKET_LIFETIME_S,
        }
    }
}

/// Why a handshake failed. Sorted by whose fault it is, after rustls.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The peer's bytes are not a valid handshake message.
    #[error("invalid handshake message: {0}")]
    InvalidMessage(&'static str),
    /// A valid message arrived at the wrong time.
    #[error("unexpected handshake message: expected {expected}")]
    UnexpectedMessage {
        /// What the core was waiting for.
        expected: &'static str,
    },
    /// The peer did not prove account membership: the initiator's hints
    /// name no key the responder holds (or were seen before), or the
    /// responder's sealed `ServerAuth` does not open under the initiator's
    /// keys.
    #[error("peer did not prove account membership")]
    NotAMember,
    /// The responder spoke before it knew the connection's exporter, or
    /// a message needs it and the driver has not set it.
    #[error("the connection's exporter is not known yet")]
    NoExporter,
    /// The peer's certificate was rejected.
    #[error("peer certificate rejected: {0}")]
    Certificate(#[from] CertificateError),
    /// The peer's transcript signature does not verify.
    #[error("peer signature does not verify")]
    BadSignature,
    /// The peer's certificate is on the account's revocation list (SPEC
    /// §3.6): the device was removed. Refused like a non-member (§5.4).
    #[error("peer certificate is revoked")]
    Revoked,
    /// The peer's role may not take this side of the handshake.
    #[error("peer role {0} not allowed here")]
    RoleNotAllowed(tether_identity::Role),
    /// No version in common, or the responder picked one outside the range
    /// offered (a downgrade).
    #[error("protocol version mismatch (offered {min}..={max}, got {got})")]
    VersionMismatch {
        /// Lowest offered.
        min: u32,
        /// Highest offered.
        max: u32,
        /// What the peer chose or offered.
        got: u32,
    },
    /// The resumption ticket could not be opened, has expired or its proof
    /// fails.
    #[error("resumption refused")]
    ResumptionRefused,
    /// The responder refused; it says nothing more by design.
    #[error("refused by peer ({0:?})")]
    Refused(RefuseReason),
    /// This node has no group key (a smart device), so it cannot prove
    /// membership.
    #[error("this node holds no account group key")]
    NoGroupKey,
    /// The core was used after it finished or failed.
    #[error("handshake already finished")]
    Finished,
}

impl HandshakeError {
    /// The reason a responder puts in its `Refuse`. Deliberately coarse.
    fn refuse_reason(&self) -> RefuseReason {
        match self {
            HandshakeError::VersionMismatch { .. } => RefuseReason::VersionMismatch,
            _ => RefuseReason::NotAccepted,
        }
    }
}

/// The authenticated peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The peer's checked certificate.
    pub certificate: VerifiedCertificate,
    /// Whether this session was resumed from a ticket.
    pub resumed: bool,
    /// The protocol version in use.
    pub version: u32,
    /// (Responder) the share grant the peer was admitted under, when it is a
    /// co-user of another account rather than a member (SPEC §17.3).
    pub grant: Option<[u8; GRANT_ID_LEN]>,
}

/// Bytes of a grant id.
pub const GRANT_ID_LEN: usize = 16;

/// A co-user admitted by a share grant (SPEC §17.3): the key of the
/// admission proof and the authority that signs the co-user's certificates.
#[derive(Clone, PartialEq, Eq)]
pub struct Grantee {
    /// The grant's id.
    pub grant_id: [u8; GRANT_ID_LEN],
    /// `GrantKey::admission_key()` of the grant.
    pub admission_key: [u8; 32],
    /// The co-user account's authority public key.
    pub authority_public_key: [u8; 32],
    /// First second (Unix) the grant admits anyone (the grant's `not_before`).
    pub not_before: u64,
    /// Last second (Unix) the grant admits anyone, inclusive (the grant's
    /// `not_after`, SPEC §17.1). Past it the grant admits no handshake and
    /// resumes no ticket, whether or not the host has removed it yet (R16).
    pub not_after: u64,
}

impl Grantee {
    /// Whether the grant admits anyone at `now` (Unix seconds).
    pub fn is_valid_at(&self, now: u64) -> bool {
        self.not_before <= now && now <= self.not_after
    }
}

impl std::fmt::Debug for Grantee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grantee").finish_non_exhaustive()
    }
}

/// The grants a responder admits besides its own account, shared with the
/// host so it can add and revoke grants while connections run. A revoked
/// grant admits no new handshake and resumes no ticket; nor does one whose
/// validity has ended, judged with the `now` the driver passes to the core
/// (the table reads no clock).
#[derive(Debug, Default)]
pub struct Grantees(std::sync::RwLock<Vec<Grantee>>);

impl Grantees {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Grantee>> {
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits `grantee` (replacing an entry with the same grant id).
    pub fn insert(&self, grantee: Grantee) {
        let mut all = self.0.write().unwrap_or_else(|p| p.into_inner());
        all.retain(|g| g.grant_id != grantee.grant_id);
        all.push(grantee);
    }

    /// Stops admitting a grant. Returns whether it was admitted.
    pub fn remove(&self, grant_id: &[u8; GRANT_ID_LEN]) -> bool {
        let mut all = self.0.write().unwrap_or_else(|p| p.into_inner());
        let before = all.len();
        all.retain(|g| &g.grant_id != grant_id);
        all.len() != before
    }

    /// Whether a grant is in the table, valid or not (see
    /// [`Grantees::admits`]).
    pub fn contains(&self, grant_id: &[u8; GRANT_ID_LEN]) -> bool {
        self.read().iter().any(|g| &g.grant_id == grant_id)
    }

    /// Whether a grant is in the table and valid at `now` (Unix seconds).
    pub fn admits(&self, grant_id: &[u8; GRANT_ID_LEN], now: u64) -> bool {
        self.read()
            .iter()
            .any(|g| &g.grant_id == grant_id && g.is_valid_at(now))
    }

    /// The validity end of a grant in the table (`None` if absent).
    pub fn not_after(&self, grant_id: &[u8; GRANT_ID_LEN]) -> Option<u64> {
        self.read()
            .iter()
            .find(|g| &g.grant_id == grant_id)
            .map(|g| g.not_after)
    }

    /// How many grants are admitted.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether no grant is admitted.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// The grantee valid at `now` whose admission key made one of `hints`,
    /// with that hint's index. Every candidate is checked against every
    /// hint (ring's constant-time verify, no short cut); the validity test
    /// comes after, so an expired grant costs the same time as a valid one
    /// and its hint is answered like a stranger's.
    fn admit_hints(&self, hints: &[Hint; HINTS], now: u64) -> Option<(Grantee, usize)> {
        let mut found = None;
        for grantee in self.read().iter() {
            for (i, hint) in hints.iter().enumerate() {
                if hint_matches(&grantee.admission_key, hint) && found.is_none() {
                    found = Some((grantee.clone(), i));
                }
            }
        }
        found.filter(|(g, _)| g.is_valid_at(now))
    }
}

/// What a co-user's initiator needs to reach a car under a grant.
#[derive(Clone, PartialEq, Eq)]
pub struct GrantAccess {
    /// `GrantKey::admission_key()` of the grant.
    pub admission_key: [u8; 32],
    /// The owner's authority public key; the car's certificate must verify
    /// under it.
    pub owner_authority_public_key: [u8; 32],
    /// The responder is a bound smart device (`ROLE_DEVICE`, reached with
    /// its device key: SPEC §12.6) rather than a member.
    pub expect_device: bool,
}

impl GrantAccess {
    /// Access to a bound device of our own account: the proof is under the
    /// device key derived from the device secret; the device's certificate
    /// verifies under our authority (SPEC §12.6).
    pub fn device(device_key: [u8; 32], authority_public_key: [u8; 32]) -> Self {
        Self {
            admission_key: device_key,
            owner_authority_public_key: authority_public_key,
            expect_device: true,
        }
    }
}

impl std::fmt::Debug for GrantAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrantAccess").finish_non_exhaustive()
    }
}

/// What an initiator keeps to resume a session with the same responder.
#[derive(Clone, PartialEq, Eq)]
pub struct ResumptionTicket {
    /// Opaque ticket, sealed by the responder.
    pub ticket: Vec<u8>,
    /// The resumption secret.
    pub secret: [u8; 32],
    /// Unix seconds after which the responder will refuse it.
    pub not_after: u64,
    /// The responder as authenticated in the full handshake.
    pub peer: VerifiedCertificate,
}

impl std::fmt::Debug for ResumptionTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResumptionTicket")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// What a core wants done next.
#[derive(Debug)]
#[must_use = "outputs must be drained"]
pub enum Output {
    /// Send these bytes as one frame on the handshake stream.
    Transmit(Vec<u8>),
    /// Something happened.
    Event(Event),
    /// Nothing to do until more input arrives.
    Pending,
}

/// Handshake events.
#[derive(Debug)]
pub enum Event {
    /// The peer is authenticated. The initiator may send requests from now
    /// on; the responder may serve them.
    Authenticated(PeerIdentity),
    /// (Initiator) a ticket to resume later.
    Ticket(ResumptionTicket),
}

/// The key a responder seals resumption tickets with (ChaCha20-Poly1305).
pub struct TicketKey(aead::LessSafeKey);

impl std::fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TicketKey(..)")
    }
}

impl TicketKey {
    /// Wraps 32 random bytes.
    pub fn new(key: [u8; 32]) -> Self {
        let unbound = aead::UnboundKey::new(&aead::CHACHA20_POLY1305, &key)
            .expect("32 bytes is the ChaCha20-Poly1305 key length");
        Self(aead::LessSafeKey::new(unbound))
    }

    fn seal(&self, nonce: [u8; TICKET_NONCE_LEN], body: &TicketBody) -> Vec<u8> {
        seal_prefixed(&self.0, nonce, TICKET_AAD, body.encode_to_vec())
    }

    fn open(&self, ticket: &[u8]) -> Option<TicketBody> {
        let plain = open_prefixed(&self.0, TICKET_AAD, ticket)?;
        TicketBody::decode(&plain[..]).ok()
    }
}

// ---------------------------------------------------------------- transcript

fn transcript_start(exporter: &Exporter) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(b"tether/2 resume transcript\0");
    ctx.update(exporter);
    finish(ctx)
}

/// `T0` of a full handshake: the hints offered and the responder's TLS
/// certificate (SPEC §5.3).
fn transcript_hints(hints: &[Hint; HINTS], pin: &TlsPin) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(b"tether/2 transcript\0");
    for hint in hints {
        ctx.update(hint);
    }
    ctx.update(pin);
    finish(ctx)
}

fn transcript_next(prev: &[u8; 32], message: &[u8]) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(prev);
    ctx.update(&(message.len() as u32).to_be_bytes());
    ctx.update(message);
    finish(ctx)
}

fn finish(ctx: digest::Context) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

fn signed_input(label: &[u8], transcript: &[u8; 32]) -> Vec<u8> {
    let mut m = label.to_vec();
    m.extend_from_slice(transcript);
    m
}

const HINT_LABEL: &[u8] = b"tether/2 hint\0";
const SEAL_SALT: &[u8] = b"tether/2 server auth";
const SEAL_AAD: &[u8] = b"tether/2 server auth";

/// A hint under `key`: `random || HMAC-SHA256(key, "tether/2 hint\0" || random)`.
pub fn make_hint(key: &[u8; 32], random: [u8; HINT_RANDOM_LEN]) -> Hint {
    let tag = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, key),
        &hint_input(&random),
    );
    let mut hint = [0; HINT_LEN];
    hint[..HINT_RANDOM_LEN].copy_from_slice(&random);
    hint[HINT_RANDOM_LEN..].copy_from_slice(tag.as_ref());
    hint
}

fn hint_input(random: &[u8]) -> Vec<u8> {
    let mut m = HINT_LABEL.to_vec();
    m.extend_from_slice(random);
    m
}

/// Whether `hint` was made under `key` (constant time, ring).
fn hint_matches(key: &[u8; 32], hint: &Hint) -> bool {
    let (random, tag) = hint.split_at(HINT_RANDOM_LEN);
    hmac::verify(
        &hmac::Key::new(hmac::HMAC_SHA256, key),
        &hint_input(random),
        tag,
    )
    .is_ok()
}

/// The key a `ServerAuth` answering `hint` is sealed under.
fn seal_key(key: &[u8; 32], hint: &Hint) -> aead::LessSafeKey {
    let prk = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, SEAL_SALT).extract(key);
    let info = [&hint[..]];
    let okm = prk
        .expand(&info, &aead::CHACHA20_POLY1305)
        .expect("32 bytes is within HKDF-SHA256's output limit");
    aead::LessSafeKey::new(aead::UnboundKey::from(okm))
}

fn seal_padded(
    key: &aead::LessSafeKey,
    nonce: [u8; SEAL_NONCE_LEN],
    message: &[u8],
) -> Result<Vec<u8>, HandshakeError> {
    if message.len() + 2 > SEALED_PLAINTEXT_LEN {
        return Err(HandshakeError::InvalidMessage(
            "ServerAuth exceeds the sealed size",
        ));
    }
    let mut plain = Vec::with_capacity(SEALED_SERVER_AUTH_LEN);
    plain.extend_from_slice(&(message.len() as u16).to_be_bytes());
    plain.extend_from_slice(message);
    plain.resize(SEALED_PLAINTEXT_LEN, 0);
    Ok(seal_prefixed(key, nonce, SEAL_AAD, plain))
}

/// `nonce || ChaCha20-Poly1305-Seal(key, nonce, aad, plain)`.
fn seal_prefixed(
    key: &aead::LessSafeKey,
    nonce: [u8; 12],
    aad: &[u8],
    mut plain: Vec<u8>,
) -> Vec<u8> {
    key.seal_in_place_append_tag(
        aead::Nonce::assume_unique_for_key(nonce),
        aead::Aad::from(aad),
        &mut plain,
    )
    .expect("tickets and seals are far below the AEAD length limit");
    let mut out = nonce.to_vec();
    out.extend(plain);
    out
}

/// Opens what [`seal_prefixed`] made; `None` if it does not open.
fn open_prefixed(key: &aead::LessSafeKey, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < 12 + aead::CHACHA20_POLY1305.tag_len() {
        return None;
    }
    let (nonce, body) = sealed.split_at(12);
    let nonce = aead::Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut inout = body.to_vec();
    let plain = key
        .open_in_place(nonce, aead::Aad::from(aad), &mut inout)
        .ok()?;
    let len = plain.len();
    inout.truncate(len);
    Some(inout)
}

/// Opens a sealed `ServerAuth`; `None` if `key` is not the one.
fn open_padded(key: &aead::LessSafeKey, sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() != SEALED_SERVER_AUTH_LEN {
        return None;
    }
    let plain = open_prefixed(key, SEAL_AAD, sealed)?;
    let len = usize::from(u16::from_be_bytes([*plain.first()?, *plain.get(1)?]));
    plain.get(2..2 + len).map(<[u8]>::to_vec)
}

/// Reads the hints out of a TLS ClientHello's ALPN list: the entries of
/// [`HINT_LEN`] bytes after the protocol id, at most [`HINTS`]. Missing
/// hints are all zeros, which match no key.
pub fn hints_from_alpn<'a>(alpn: impl IntoIterator<Item = &'a [u8]>) -> [Hint; HINTS] {
    let mut out = [[0; HINT_LEN]; HINTS];
    let found = alpn.into_iter().filter_map(|p| <Hint>::try_from(p).ok());
    for (slot, hint) in out.iter_mut().zip(found) {
        *slot = hint;
    }
    out
}

fn resume_input(exporter: &Exporter, version: u32, ticket: &[u8], nonce: &[u8]) -> Vec<u8> {
    let mut m = b"tether/2 resume\0".to_vec();
    m.extend_from_slice(exporter);
    m.extend_from_slice(&version.to_be_bytes());
    m.extend_from_slice(&(ticket.len() as u32).to_be_bytes());
    m.extend_from_slice(ticket);
    m.extend_from_slice(nonce);
    m
}

fn early_resume_input(version: u32, ticket: &[u8], nonce: &[u8]) -> Vec<u8> {
    let mut m = b"tether/2 early resume\0".to_vec();
    m.extend_from_slice(&version.to_be_bytes());
    m.extend_from_slice(&(ticket.len() as u32).to_be_bytes());
    m.extend_from_slice(ticket);
    m.extend_from_slice(nonce);
    m
}

fn resumption_secret(exporter: &Exporter, transcript: &[u8; 32]) -> [u8; 32] {
    let prk =
        ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"tether/2 resumption").extract(exporter);
    let info = [&transcript[..]];
    let okm = prk
        .expand(&info, ring::hkdf::HKDF_SHA256)
        .expect("32 bytes is within HKDF-SHA256's output limit");
    let mut out = [0; 32];
    okm.fill(&mut out)
        .expect("buffer length equals the requested length");
    out
}

const SERVER_BINDING: &[u8] = b"tether/2 server binding\0";

/// What a responder signs to bind its device key to a TLS certificate:
/// `"tether/2 server binding\0" || P || u32be(version)` (SPEC §5.3).
pub fn server_binding_input(pin: &TlsPin, version: u32) -> Vec<u8> {
    let mut m = SERVER_BINDING.to_vec();
    m.extend_from_slice(pin);
    m.extend_from_slice(&version.to_be_bytes());
    m
}

/// The responder's signature binding its device key to the TLS
/// certificate with hash `pin` (`ServerAuth.signature`, SPEC §5.3). Static
/// per certificate: a driver signs it once per certificate.
pub fn sign_server_binding(credentials: &Credentials, pin: &TlsPin, version: u32) -> Vec<u8> {
    credentials
        .key()
        .sign(&server_binding_input(pin, version))
        .to_vec()
}
const CLIENT_SIG: &[u8] = b"tether/2 client signature\0";

/// Whether a request may travel as TLS 0-RTT early data and be answered
/// before the handshake completes (SPEC §5.8): idempotent reads only, whose
/// replay changes nothing. Every other request waits for the handshake on
/// the initiator and is refused with `TOO_EARLY` by a responder that gets
/// it early anyway.
pub fn may_travel_early(envelope: &tether_proto::v1::Envelope) -> bool {
    use tether_proto::v1::{Request, envelope::Body, request::Kind};
    matches!(
        &envelope.body,
        Some(Body::Request(Request {
            kind: Some(
                Kind::Ping(_)
                    | Kind::GetSignals(_)
                    | Kind::Subscribe(_)
                    | Kind::ListDevices(_)
                    | Kind::GetDevice(_)
                    | Kind::WatchDevices(_)
                    | Kind::ListTasks(_)
                    | Kind::GetTraces(_)
            ),
        }))
    ) && !envelope.body_follows
}

/// Decodes one handshake message from untrusted bytes. Never panics.
pub fn decode_message(bytes: &[u8]) -> Result<Msg, HandshakeError> {
    if bytes.len() > MAX_HANDSHAKE_MESSAGE_BYTES {
        return Err(HandshakeError::InvalidMessage("too large"));
    }
    HandshakeMessage::decode(bytes)
        .map_err(|_| HandshakeError::InvalidMessage("protobuf"))?
        .message
        .ok_or(HandshakeError::InvalidMessage("empty"))
}

fn encode(message: Msg) -> Vec<u8> {
    HandshakeMessage {
        message: Some(message),
    }
    .encode_to_vec()
}

fn nonce_of(bytes: &[u8]) -> Result<Nonce, HandshakeError> {
    bytes
        .try_into()
        .map_err(|_| HandshakeError::InvalidMessage("nonce length"))
}

fn certificate_of(cert: Option<&DeviceCertificate>) -> Result<&DeviceCertificate, HandshakeError> {
    cert.ok_or(HandshakeError::InvalidMessage("missing certificate"))
}

// ------------------------------------------------------------------ client

/// The initiator's states, one type each (rustls style).
#[derive(Debug)]
enum ClientState {
    ExpectServerAuth(ExpectServerAuth),
    /// The `ClientAuth` is queued; the responder's signatures are checked
    /// next, by [`ClientHandshake::verify_responder`] (SPEC §5.3).
    VerifyResponder(Box<VerifyResponder>),
    ExpectAccept(ExpectAccept),
    Done,
    Failed,
}

/// The keys the hints were made under: the sealed `ServerAuth` opens under
/// the one the responder recognised.
#[derive(Debug)]
struct ExpectServerAuth {
    /// `(hint index, key)` for each hint made under a key (the others are
    /// random).
    keys: Vec<(usize, [u8; 32])>,
    min_version: u32,
    max_version: u32,
}

/// What the opened `ServerAuth` still has to prove: the authority's
/// signature on the responder's certificate and the responder's binding of
/// its TLS key (SPEC §5.3).
#[derive(Debug)]
struct VerifyResponder {
    certificate: DeviceCertificate,
    binding: Vec<u8>,
    signature: Vec<u8>,
    version: u32,
    next: ExpectAccept,
}

#[derive(Debug)]
struct ExpectAccept {
    peer: VerifiedCertificate,
    /// The secret for the next ticket: from the full handshake's transcript,
    /// or from the ResumeHello transcript when resuming. `None` after an
    /// early ResumeHello until the exporter is known.
    secret: Option<[u8; 32]>,
    /// An early ResumeHello, as sent: the secret is made from it and the
    /// exporter once the TLS handshake is complete (SPEC §5.8).
    early_hello: Option<Vec<u8>>,
}

/// The initiator's side of the handshake.
#[derive(Debug)]
pub struct ClientHandshake {
    credentials: Arc<Credentials>,
    /// The authority the responder's certificate must verify under: our own,
    /// or the owner's when connecting under a grant.
    peer_authority: [u8; 32],
    /// The responder must be a smart device, not a member.
    expect_device: bool,
    hints: [Hint; HINTS],
    state: ClientState,
    out: VecDeque<Output>,
}

/// Randomness an initiator needs for its hints: 16 bytes per hint.
pub type HintEntropy = [u8; HINT_RANDOM_LEN * HINTS];

/// Hints under `keys` (first hint under the first key...), the rest made of
/// `entropy` alone so that every initiator offers [`HINTS`] hints of the
/// same shape (SPEC §5.2).
fn hints_for(keys: &[[u8; 32]], entropy: &HintEntropy) -> [Hint; HINTS] {
    let mut hints = [[0; HINT_LEN]; HINTS];
    for (i, hint) in hints.iter_mut().enumerate() {
        let mut random = [0; HINT_RANDOM_LEN];
        random.copy_from_slice(&entropy[i * HINT_RANDOM_LEN..(i + 1) * HINT_RANDOM_LEN]);
        *hint = match keys.get(i) {
            Some(key) => make_hint(key, random),
            // A look-alike: the random part, and a MAC under a key nobody
            // holds (derived from the random part itself).
            None => make_hint(&finish_hash(b"tether/2 no key\0", &random), random),
        };
    }
    hints
}

fn finish_hash(label: &[u8], data: &[u8]) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(label);
    ctx.update(data);
    finish(ctx)
}

impl ClientHandshake {
    /// Starts a full handshake as a member: the first hint is under the
    /// membership key, the second under the previous epoch's while this
    /// member still holds it (SPEC §3.6), so a responder that has not
    /// caught up with a rotation still admits it.
    pub fn new(
        credentials: Arc<Credentials>,
        entropy: HintEntropy,
        config: &HandshakeConfig,
    ) -> Result<Self, HandshakeError> {
        let mut keys = vec![
            credentials
                .group_key()
                .ok_or(HandshakeError::NoGroupKey)?
                .membership_key(),
        ];
        if let Some((previous, _)) = credentials.previous_group_key_until() {
            keys.push(previous.membership_key());
        }
        let peer_authority = *credentials.authority_public_key();
        Ok(Self::with_keys(
            credentials,
            peer_authority,
            false,
            keys,
            &entropy,
            config,
        ))
    }

    /// Starts a full handshake as a co-user admitted by a share grant
    /// (SPEC §17.3): the hint is under the grant's admission key and the
    /// responder must hold a certificate of the owner's account. Also
    /// reaches a bound device with [`GrantAccess::device`].
    pub fn with_grant(
        credentials: Arc<Credentials>,
        access: &GrantAccess,
        entropy: HintEntropy,
        config: &HandshakeConfig,
    ) -> Self {
        Self::with_keys(
            credentials,
            access.owner_authority_public_key,
            access.expect_device,
            vec![access.admission_key],
            &entropy,
            config,
        )
    }

    fn with_keys(
        credentials: Arc<Credentials>,
        peer_authority: [u8; 32],
        expect_device: bool,
        keys: Vec<[u8; 32]>,
        entropy: &HintEntropy,
        config: &HandshakeConfig,
    ) -> Self {
        let hints = hints_for(&keys, entropy);
        Self {
            credentials,
            peer_authority,
            expect_device,
            hints,
            state: ClientState::ExpectServerAuth(ExpectServerAuth {
                keys: keys.into_iter().enumerate().collect(),
                min_version: config.min_version,
                max_version: config.max_version,
            }),
            out: VecDeque::new(),
        }
    }

    /// The hints to offer in the TLS ClientHello's ALPN list, after the
    /// protocol id (SPEC §5.2).
    pub fn hints(&self) -> &[Hint; HINTS] {
        &self.hints
    }

    /// Resumes with a ticket. The driver must first have checked that the
    /// connection's TLS certificate is the one pinned with the ticket
    /// (SPEC §5.5). The peer counts as authenticated at once, so requests
    /// may follow the `ResumeHello` in the same flight. The responder's
    /// sealed `ServerAuth` on this connection is not needed.
    pub fn resume(
        credentials: Arc<Credentials>,
        exporter: Exporter,
        nonce: Nonce,
        ticket: &ResumptionTicket,
    ) -> Self {
        let version = PROTOCOL_VERSION;
        let key = hmac::Key::new(hmac::HMAC_SHA256, &ticket.secret);
        let proof = hmac::sign(
            &key,
            &resume_input(&exporter, version, &ticket.ticket, &nonce),
        );
        let hello = encode(Msg::ResumeHello(ResumeHello {
            version,
            ticket: ticket.ticket.clone(),
            nonce: nonce.to_vec(),
            proof: proof.as_ref().to_vec(),
            early: false,
        }));
        let transcript = transcript_next(&transcript_start(&exporter), &hello);
        let secret = resumption_secret(&exporter, &transcript);
        Self::resuming(credentials, ticket, hello, Some(secret))
    }

    /// A core that has sent `hello` (a `ResumeHello`) and counts the
    /// ticket's peer as authenticated; the next ticket's secret is
    /// `secret`, or made from `hello` and the exporter later (early).
    fn resuming(
        credentials: Arc<Credentials>,
        ticket: &ResumptionTicket,
        hello: Vec<u8>,
        secret: Option<[u8; 32]>,
    ) -> Self {
        let peer = PeerIdentity {
            certificate: ticket.peer.clone(),
            resumed: true,
            version: PROTOCOL_VERSION,
            grant: None,
        };
        let peer_authority = *credentials.authority_public_key();
        let expect_device = ticket.peer.role == tether_identity::Role::Device;
        let early_hello = secret.is_none().then(|| hello.clone());
        Self {
            credentials,
            peer_authority,
            expect_device,
            hints: [[0; HINT_LEN]; HINTS],
            state: ClientState::ExpectAccept(ExpectAccept {
                peer: ticket.peer.clone(),
                secret,
                early_hello,
            }),
            out: VecDeque::from([
                Output::Transmit(hello),
                Output::Event(Event::Authenticated(peer)),
            ]),
        }
    }

    /// Resumes with a ticket in TLS 0-RTT early data, before the TLS
    /// handshake (and so the exporter) exists (SPEC §5.8): the proof covers
    /// the version, ticket and nonce; the TLS early secret, which only the
    /// holder of the single-use TLS ticket of that responder has, keeps it
    /// from anyone else, and the responder's single-use TLS ticket store
    /// refuses a replay. Only idempotent reads may follow before the
    /// handshake completes. Call [`ClientHandshake::set_exporter`] once it
    /// has, before feeding the `Accept`.
    pub fn resume_early(
        credentials: Arc<Credentials>,
        nonce: Nonce,
        ticket: &ResumptionTicket,
    ) -> Self {
        let version = PROTOCOL_VERSION;
        let key = hmac::Key::new(hmac::HMAC_SHA256, &ticket.secret);
        let proof = hmac::sign(&key, &early_resume_input(version, &ticket.ticket, &nonce));
        let hello = encode(Msg::ResumeHello(ResumeHello {
            version,
            ticket: ticket.ticket.clone(),
            nonce: nonce.to_vec(),
            proof: proof.as_ref().to_vec(),
            early: true,
        }));
        Self::resuming(credentials, ticket, hello, None)
    }

    /// After an early resumption: the connection's exporter, once this
    /// side's TLS handshake is complete. The next ticket's secret binds to
    /// it. Does nothing otherwise.
    pub fn set_exporter(&mut self, exporter: &Exporter) {
        if let ClientState::ExpectAccept(s) = &mut self.state
            && s.secret.is_none()
            && let Some(hello) = &s.early_hello
        {
            let transcript = transcript_next(&transcript_start(exporter), hello);
            s.secret = Some(resumption_secret(exporter, &transcript));
        }
    }

    /// How many responder flights the initiator waited for beyond QUIC's
    /// own before it could send its first request: none in version 2, cold
    /// or resumed, since the sealed `ServerAuth` rides with the responder's
    /// TLS flight (SPEC §5.6).
    pub fn flights_waited(&self) -> u32 {
        0
    }

    /// Whether the handshake completed (ticket received) or failed.
    pub fn is_finished(&self) -> bool {
        matches!(self.state, ClientState::Done | ClientState::Failed)
    }

    /// The next output.
    pub fn poll_output(&mut self) -> Output {
        self.out.pop_front().unwrap_or(Output::Pending)
    }

    /// Handles the responder's sealed `ServerAuth` (its 0.5-RTT data), once
    /// this side's TLS handshake is complete: `pin` is the hash of the
    /// responder's TLS certificate on this connection and `exporter` its
    /// exporter. On success the `ClientAuth` to send and the authenticated
    /// peer are queued. `now` is Unix seconds.
    ///
    /// The same as [`ClientHandshake::open_server_auth`] followed by
    /// [`ClientHandshake::verify_responder`], except that nothing is queued
    /// unless both succeed.
    pub fn handle_server_auth(
        &mut self,
        sealed: &[u8],
        pin: &TlsPin,
        exporter: &Exporter,
        now: u64,
    ) -> Result<(), HandshakeError> {
        let queued = self.out.len();
        self.open_server_auth(sealed, pin, exporter, now)?;
        if let Err(e) = self.verify_responder(now) {
            self.out.truncate(queued);
            return Err(e);
        }
        Ok(())
    }

    /// The first half of [`ClientHandshake::handle_server_auth`]: opens the
    /// sealed `ServerAuth`, checks everything in it but its two signatures
    /// (version, certificate format, account, validity, role, revocation),
    /// and queues the `ClientAuth`. The seal has proved that the responder
    /// holds the key a hint was made under, so the `ClientAuth` may leave
    /// now, while [`ClientHandshake::verify_responder`] checks the
    /// signatures (SPEC §5.3): the driver sends it first and verifies
    /// during its flight. Nothing may be sent after it, and no peer is
    /// reported, until `verify_responder` succeeded.
    pub fn open_server_auth(
        &mut self,
        sealed: &[u8],
        pin: &TlsPin,
        exporter: &Exporter,
        now: u64,
    ) -> Result<(), HandshakeError> {
        let state = std::mem::replace(&mut self.state, ClientState::Failed);
        let ClientState::ExpectServerAuth(s) = state else {
            return Err(match state {
                ClientState::Done | ClientState::Failed => HandshakeError::Finished,
                _ => HandshakeError::UnexpectedMessage { expected: "Accept" },
            });
        };
        if sealed.len() > MAX_HANDSHAKE_MESSAGE_BYTES {
            return Err(HandshakeError::InvalidMessage("too large"));
        }
        // Every key is tried (no short cut); one opens it or the responder
        // holds none of them.
        let mut opened = None;
        for (i, key) in &s.keys {
            let Some(hint) = self.hints.get(*i) else {
                continue;
            };
            if let Some(plain) = open_padded(&seal_key(key, hint), sealed) {
                opened.get_or_insert(plain);
            }
        }
        let bytes = opened.ok_or(HandshakeError::NotAMember)?;
        let Msg::ServerAuth(auth) = decode_message(&bytes)? else {
            return Err(HandshakeError::UnexpectedMessage {
                expected: "ServerAuth",
            });
        };
        let pending = self.check_server_auth(s, auth, &bytes, pin, exporter, now)?;
        self.state = ClientState::VerifyResponder(Box::new(pending));
        Ok(())
    }

    /// Whether [`ClientHandshake::verify_responder`] is due: the
    /// `ClientAuth` is queued and the responder's signatures not checked.
    pub fn awaits_verification(&self) -> bool {
        matches!(self.state, ClientState::VerifyResponder(_))
    }

    /// The second half of [`ClientHandshake::handle_server_auth`]: checks
    /// the authority's signature on the responder's certificate and the
    /// responder's binding of its TLS key (each skipped when the same bytes
    /// verified before, SPEC §5.4), then queues the authenticated peer.
    /// `now` is Unix seconds.
    pub fn verify_responder(&mut self, now: u64) -> Result<(), HandshakeError> {
        let state = std::mem::replace(&mut self.state, ClientState::Failed);
        let ClientState::VerifyResponder(pending) = state else {
            return Err(match state {
                ClientState::Done | ClientState::Failed => HandshakeError::Finished,
                _ => HandshakeError::UnexpectedMessage {
                    expected: "the sealed ServerAuth",
                },
            });
        };
        let VerifyResponder {
            certificate,
            binding,
            signature,
            version,
            next,
        } = *pending;
        let cache = self.credentials.peer_certificates();
        let peer = cache.verify(&certificate, &self.peer_authority, now)?;
        // The same certificate as checked before the ClientAuth left
        // (`check_server_auth`); only its signature was not.
        if peer != next.peer {
            return Err(HandshakeError::InvalidMessage("certificate changed"));
        }
        // The signature binds the responder's device key to the TLS
        // certificate of this connection, whose CertificateVerify proved
        // its key live here (SPEC §5.3): a ServerAuth lifted from another
        // connection, or shown over another TLS key, fails here. It is the
        // same for every connection to that certificate, so one verified
        // before is not verified again (the same bytes, cached).
        if !cache.verify_signature(&peer.public_key, &binding, &signature) {
            return Err(HandshakeError::BadSignature);
        }
        self.out
            .push_back(Output::Event(Event::Authenticated(PeerIdentity {
                certificate: peer,
                resumed: false,
                version,
                grant: None,
            })));
        self.state = ClientState::ExpectAccept(next);
        Ok(())
    }

    /// Handles one frame from the responder on stream 0 (`Accept` or
    /// `Refuse`). `now` is Unix seconds.
    pub fn handle_message(&mut self, bytes: &[u8], now: u64) -> Result<(), HandshakeError> {
        let state = std::mem::replace(&mut self.state, ClientState::Failed);
        let message = decode_message(bytes)?;
        if let Msg::Refuse(Refuse { reason }) = message {
            return Err(HandshakeError::Refused(
                RefuseReason::try_from(reason).unwrap_or(RefuseReason::Unspecified),
            ));
        }
        self.state = match state {
            ClientState::ExpectServerAuth(_) => {
                return Err(HandshakeError::UnexpectedMessage {
                    expected: "the sealed ServerAuth",
                });
            }
            ClientState::VerifyResponder(_) => {
                return Err(HandshakeError::UnexpectedMessage {
                    expected: "nothing before the responder is verified",
                });
            }
            ClientState::ExpectAccept(s) => {
                let Msg::Accept(accept) = message else {
                    return Err(HandshakeError::UnexpectedMessage { expected: "Accept" });
                };
                let secret = s.secret.ok_or(HandshakeError::NoExporter)?;
                if !accept.resumption_ticket.is_empty() {
                    self.out
                        .push_back(Output::Event(Event::Ticket(ResumptionTicket {
                            ticket: accept.resumption_ticket,
                            secret,
                            not_after: now.saturating_add(u64::from(accept.ticket_lifetime_s)),
                            peer: s.peer,
                        })));
                }
                ClientState::Done
            }
            ClientState::Done | ClientState::Failed => return Err(HandshakeError::Finished),
        };
        Ok(())
    }

    fn check_server_auth(
        &mut self,
        s: ExpectServerAuth,
        auth: ServerAuth,
        bytes: &[u8],
        pin: &TlsPin,
        exporter: &Exporter,
        now: u64,
    ) -> Result<VerifyResponder, HandshakeError> {
        if auth.version < s.min_version || auth.version > s.max_version {
            return Err(HandshakeError::VersionMismatch {
                min: s.min_version,
                max: s.max_version,
                got: auth.version,
            });
        }
        nonce_of(&auth.nonce)?;
        let cert = certificate_of(auth.certificate.as_ref())?;
        // Everything but the signature, which `verify_responder` checks
        // while the ClientAuth travels.
        let peer =
            self.credentials
                .peer_certificates()
                .check_unsigned(cert, &self.peer_authority, now)?;
        let role_ok = if self.expect_device {
            peer.role == tether_identity::Role::Device
        } else {
            peer.role.holds_group_key()
        };
        if !role_ok {
            return Err(HandshakeError::RoleNotAllowed(peer.role));
        }
        // SPEC §3.6: a removed device of our own account is no member.
        if self.peer_authority == *self.credentials.authority_public_key()
            && self.credentials.is_revoked(&peer.public_key)
        {
            return Err(HandshakeError::Revoked);
        }
        let binding = server_binding_input(pin, auth.version);
        let t0 = transcript_hints(&self.hints, pin);
        // From here on the transcript also covers the exporter.
        let transcript = transcript_next(&transcript_next(&t0, bytes), exporter);

        let certificate = Some(self.credentials.certificate_message().clone());
        let unsigned = encode(Msg::ClientAuth(ClientAuth {
            certificate: certificate.clone(),
            signature: vec![],
        }));
        let signature = self
            .credentials
            .key()
            .sign(&signed_input(
                CLIENT_SIG,
                &transcript_next(&transcript, &unsigned),
            ))
            .to_vec();
        let client_auth = encode(Msg::ClientAuth(ClientAuth {
            certificate,
            signature,
        }));
        let transcript = transcript_next(&transcript, &client_auth);
        let secret = resumption_secret(exporter, &transcript);
        self.out.push_back(Output::Transmit(client_auth));
        Ok(VerifyResponder {
            certificate: cert.clone(),
            binding,
            signature: auth.signature,
            version: auth.version,
            next: ExpectAccept {
                peer,
                secret: Some(secret),
                early_hello: None,
            },
        })
    }
}

// ------------------------------------------------------------------ server

#[derive(Debug)]
enum ServerState {
    ExpectHints,
    ExpectClient(ExpectClient),
    /// Authenticated by an early ResumeHello; the `Accept` (its ticket binds
    /// to the exporter) waits for [`ServerHandshake::set_exporter`].
    AwaitExporter(AwaitExporter),
    Done,
    Failed,
}

#[derive(Debug)]
struct AwaitExporter {
    peer: VerifiedCertificate,
    grant: Option<[u8; GRANT_ID_LEN]>,
    hello: Vec<u8>,
    /// When the early hello was checked: the ticket's lifetime counts from
    /// then.
    now: u64,
}

#[derive(Debug)]
struct ExpectClient {
    /// The transcript after the `ServerAuth`, when a hint was recognised
    /// (a `ClientAuth` may follow); `None` when only a `ResumeHello` can.
    transcript: Option<[u8; 32]>,
    version: u32,
    /// Set when the initiator was admitted by a grant, not as a member.
    grantee: Option<Grantee>,
}

/// The responder's side of the handshake.
#[derive(Debug)]
pub struct ServerHandshake {
    credentials: Arc<Credentials>,
    tickets: Arc<TicketKey>,
    grantees: Arc<Grantees>,
    /// A bound device's admission key, proven by members instead of the
    /// membership key (the device holds no group key: SPEC §12.6).
    device_key: Option<[u8; 32]>,
    exporter: Option<Exporter>,
    nonce: Nonce,
    config: HandshakeConfig,
    state: ServerState,
    proven: Proven,
    matched_hint: Option<Hint>,
    /// [`sign_server_binding`] for this connection's TLS certificate, made
    /// once per certificate by the driver; signed here when absent.
    binding: Option<Vec<u8>>,
    out: VecDeque<Output>,
}

/// What an initiator has proven to a responder before the end of the
/// handshake ([`ServerHandshake::proven`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proven {
    /// Nothing yet, or it failed.
    Nothing,
    /// A hint under the membership key (or the bound device's key): it
    /// holds the account's secret, or replays a hint of someone who does
    /// (the driver refuses hints it has seen: SPEC §5.7).
    Member,
    /// A hint under a share grant's admission key: a co-user (or whoever
    /// holds the grant key), not a member.
    Grantee,
}

impl ServerHandshake {
    /// A responder waiting for the initiator's hints. `nonce` must be fresh
    /// random bytes for this connection.
    pub fn new(
        credentials: Arc<Credentials>,
        tickets: Arc<TicketKey>,
        nonce: Nonce,
        config: &HandshakeConfig,
    ) -> Self {
        Self {
            credentials,
            tickets,
            grantees: Arc::default(),
            device_key: None,
            exporter: None,
            nonce,
            config: config.clone(),
            state: ServerState::ExpectHints,
            proven: Proven::Nothing,
            matched_hint: None,
            binding: None,
            out: VecDeque::new(),
        }
    }

    /// Uses `binding` ([`sign_server_binding`] of this node for the TLS
    /// certificate whose hash the driver passes to `answer_hints`) instead
    /// of signing it for every connection.
    pub fn with_binding(mut self, binding: Vec<u8>) -> Self {
        self.binding = Some(binding);
        self
    }

    /// Makes this responder a bound smart device (SPEC §12.6): members make
    /// their hint under `device_key` (derived from the device secret)
    /// instead of the membership key, since a device holds no group key.
    pub fn as_device(mut self, device_key: [u8; 32]) -> Self {
        self.device_key = Some(device_key);
        self
    }

    /// Also admits the co-users of these share grants (SPEC §17.3).
    pub fn with_grantees(mut self, grantees: Arc<Grantees>) -> Self {
        self.grantees = grantees;
        self
    }

    /// The next output.
    pub fn poll_output(&mut self) -> Output {
        self.out.pop_front().unwrap_or(Output::Pending)
    }

    /// Whether the responder has answered the hints (so the initiator may
    /// legitimately have requests in flight).
    pub fn has_answered_hello(&self) -> bool {
        !matches!(self.state, ServerState::ExpectHints)
    }

    /// What the initiator has proven so far: the key its hint was made
    /// with. A driver uses it to decide which half-finished handshakes a
    /// flood may evict (SPEC §5.7).
    pub fn proven(&self) -> Proven {
        self.proven
    }

    /// The hint this responder recognised, if any: a driver remembers it
    /// so that a replay of it is answered like a stranger's (SPEC §5.7).
    pub fn matched_hint(&self) -> Option<&Hint> {
        self.matched_hint.as_ref()
    }

    /// Answers the initiator's hints (from its TLS ClientHello) with the
    /// sealed `ServerAuth` to send as 0.5-RTT data: this node's certificate
    /// and a signature over the hints and `pin` (the hash of this
    /// connection's TLS certificate), sealed under a key derived from the
    /// key a hint was made with (R3: nobody else can read it). Hints it
    /// does not recognise get [`SEALED_SERVER_AUTH_LEN`] bytes of the same
    /// shape that nobody can open. Never fails on the peer's input.
    pub fn answer_hints(
        &mut self,
        hints: &[Hint; HINTS],
        pin: &TlsPin,
        entropy: &[u8; ANSWER_ENTROPY_LEN],
        now: u64,
    ) -> Result<Vec<u8>, HandshakeError> {
        if !matches!(self.state, ServerState::ExpectHints) {
            return Err(HandshakeError::UnexpectedMessage {
                expected: "nothing: the hints are answered",
            });
        }
        let mut seal_nonce = [0; SEAL_NONCE_LEN];
        seal_nonce.copy_from_slice(&entropy[..SEAL_NONCE_LEN]);
        let version = self.config.max_version;
        let (matched, grantee) = self.recognise(hints, now);
        self.state = ServerState::ExpectClient(ExpectClient {
            transcript: None,
            version,
            grantee: grantee.clone(),
        });
        let Some((index, key)) = matched else {
            // A look-alike: zeros sealed under a key nobody holds.
            let mut dummy = [0; 32];
            dummy.copy_from_slice(&entropy[SEAL_NONCE_LEN..]);
            let key = aead::LessSafeKey::new(
                aead::UnboundKey::new(&aead::CHACHA20_POLY1305, &dummy)
                    .expect("32 bytes is the ChaCha20-Poly1305 key length"),
            );
            return seal_padded(&key, seal_nonce, &[]);
        };
        let hint = hints[index];
        let t0 = transcript_hints(hints, pin);
        let signature = match &self.binding {
            Some(binding) => binding.clone(),
            None => sign_server_binding(&self.credentials, pin, version),
        };
        let server_auth = encode(Msg::ServerAuth(ServerAuth {
            version,
            nonce: self.nonce.to_vec(),
            certificate: Some(self.credentials.certificate_message().clone()),
            signature,
        }));
        let sealed = seal_padded(&seal_key(&key, &hint), seal_nonce, &server_auth)?;
        self.state = ServerState::ExpectClient(ExpectClient {
            transcript: Some(transcript_next(&t0, &server_auth)),
            version,
            grantee: grantee.clone(),
        });
        self.proven = match grantee {
            Some(_) => Proven::Grantee,
            None => Proven::Member,
        };
        self.matched_hint = Some(hint);
        Ok(sealed)
    }

    /// The hint (index) and key this responder recognises, and the grantee
    /// when it is a grant's. R3: this is all that is checked before
    /// anything about this node is sealed for the initiator. SPEC §3.6:
    /// during a rotation's grace period the previous epoch's membership key
    /// is tried too. Every pair is verified; none short-cuts the others.
    fn recognise(
        &self,
        hints: &[Hint; HINTS],
        now: u64,
    ) -> (Option<(usize, [u8; 32])>, Option<Grantee>) {
        let member_keys: Vec<[u8; 32]> = match (self.device_key, self.credentials.group_key()) {
            (Some(key), _) => vec![key],
            (None, Some(current)) => {
                let mut keys = vec![current.membership_key()];
                if let Some(previous) = self.credentials.previous_group_key(now) {
                    keys.push(previous.membership_key());
                }
                keys
            }
            (None, None) => Vec::new(),
        };
        let mut member = None;
        for key in &member_keys {
            for (i, hint) in hints.iter().enumerate() {
                if hint_matches(key, hint) && member.is_none() {
                    member = Some((i, *key));
                }
            }
        }
        // R16: a co-user's hint is under the grant's admission key, checked
        // just as early; a revoked grant is no longer in the table, and an
        // expired one admits nobody (`now` is the driver's clock).
        let granted = self.grantees.admit_hints(hints, now);
        match (member, granted) {
            (Some(m), _) => (Some(m), None),
            (None, Some((g, i))) => (Some((i, g.admission_key)), Some(g)),
            (None, None) => (None, None),
        }
    }

    /// Gives the core the connection's TLS exporter, once the TLS handshake
    /// is complete on this side; `ClientAuth` and `ResumeHello` bind to it.
    /// After an early resumption it queues the `Accept` with the next
    /// ticket.
    pub fn set_exporter(&mut self, exporter: Exporter) {
        self.exporter = Some(exporter);
        if matches!(self.state, ServerState::AwaitExporter(_)) {
            let ServerState::AwaitExporter(s) =
                std::mem::replace(&mut self.state, ServerState::Done)
            else {
                return;
            };
            let transcript = transcript_next(&transcript_start(&exporter), &s.hello);
            let secret = resumption_secret(&exporter, &transcript);
            self.send_ticket(&s.peer, secret, s.grant, s.now);
        }
    }

    /// Handles the first frame on stream 0 when it arrived as TLS 0-RTT
    /// early data (SPEC §5.8): only an early `ResumeHello` is accepted, and
    /// the peer counts as authenticated at once; the `Accept` follows
    /// [`ServerHandshake::set_exporter`]. On error a `Refuse` is queued.
    pub fn handle_early_message(&mut self, bytes: &[u8], now: u64) -> Result<(), HandshakeError> {
        let state = std::mem::replace(&mut self.state, ServerState::Failed);
        let result = match (state, decode_message(bytes)) {
            (ServerState::ExpectClient(_), Ok(Msg::ResumeHello(hello))) if hello.early => {
                self.check_resume(&hello, now).map(|(peer, grant)| {
                    self.out
                        .push_back(Output::Event(Event::Authenticated(PeerIdentity {
                            certificate: peer.clone(),
                            resumed: true,
                            version: hello.version,
                            grant,
                        })));
                    ServerState::AwaitExporter(AwaitExporter {
                        peer,
                        grant,
                        hello: bytes.to_vec(),
                        now,
                    })
                })
            }
            (ServerState::Done | ServerState::Failed, _) => Err(HandshakeError::Finished),
            (_, Err(e)) => Err(e),
            (_, Ok(_)) => Err(HandshakeError::UnexpectedMessage {
                expected: "an early ResumeHello",
            }),
        };
        self.settle(result)
    }

    /// Takes the next state, or on an error (except `Finished`) queues the
    /// one `Refuse` and proves nothing from then on (SPEC §5.4).
    fn settle(
        &mut self,
        result: Result<ServerState, HandshakeError>,
    ) -> Result<(), HandshakeError> {
        match result {
            Ok(next) => {
                self.state = next;
                Ok(())
            }
            Err(HandshakeError::Finished) => Err(HandshakeError::Finished),
            Err(e) => {
                self.proven = Proven::Nothing;
                self.out.clear();
                self.out
                    .push_back(Output::Transmit(encode(Msg::Refuse(Refuse {
                        reason: e.refuse_reason() as i32,
                    }))));
                Err(e)
            }
        }
    }

    /// Handles one frame from the initiator on stream 0. On error a
    /// `Refuse` is queued (send it, then close) and the core is finished.
    /// `now` is Unix seconds.
    pub fn handle_message(&mut self, bytes: &[u8], now: u64) -> Result<(), HandshakeError> {
        let state = std::mem::replace(&mut self.state, ServerState::Failed);
        if matches!(state, ServerState::Done | ServerState::Failed) {
            return Err(HandshakeError::Finished);
        }
        let result = self.step(state, bytes, now);
        self.settle(result)
    }

    fn step(
        &mut self,
        state: ServerState,
        bytes: &[u8],
        now: u64,
    ) -> Result<ServerState, HandshakeError> {
        let message = decode_message(bytes)?;
        let exporter = self.exporter.ok_or(HandshakeError::NoExporter)?;
        match (state, message) {
            (ServerState::ExpectClient(_), Msg::ResumeHello(hello)) => {
                self.handle_resume(hello, bytes, &exporter, now)
            }
            (
                ServerState::ExpectClient(ExpectClient {
                    transcript: Some(transcript),
                    version,
                    grantee,
                }),
                Msg::ClientAuth(auth),
            ) => {
                let s = ExpectClientAuth {
                    transcript: transcript_next(&transcript, &exporter),
                    version,
                    grantee,
                };
                self.handle_client_auth(s, auth, bytes, &exporter, now)
            }
            // A ClientAuth after hints this node did not recognise: the
            // initiator is no member (R3).
            (ServerState::ExpectClient(_), Msg::ClientAuth(_)) => Err(HandshakeError::NotAMember),
            (ServerState::ExpectClient(_), _) => Err(HandshakeError::UnexpectedMessage {
                expected: "ClientAuth or ResumeHello",
            }),
            (ServerState::ExpectHints, _) => Err(HandshakeError::UnexpectedMessage {
                expected: "the hints first",
            }),
            (ServerState::AwaitExporter(_), _) => Err(HandshakeError::UnexpectedMessage {
                expected: "nothing: authenticated early",
            }),
            (ServerState::Done | ServerState::Failed, _) => Err(HandshakeError::Finished),
        }
    }
}

#[derive(Debug)]
struct ExpectClientAuth {
    transcript: [u8; 32],
    version: u32,
    grantee: Option<Grantee>,
}

impl ServerHandshake {
    fn handle_client_auth(
        &mut self,
        s: ExpectClientAuth,
        auth: ClientAuth,
        bytes: &[u8],
        exporter: &Exporter,
        now: u64,
    ) -> Result<ServerState, HandshakeError> {
        let cert = certificate_of(auth.certificate.as_ref())?;
        let authority = match &s.grantee {
            Some(g) => &g.authority_public_key,
            None => self.credentials.authority_public_key(),
        };
        let peer = self
            .credentials
            .verify_peer_certificate(cert, authority, now)?;
        // A grant admits a co-user's phone or watch, nothing else.
        if s.grantee.is_some()
            && !matches!(
                peer.role,
                tether_identity::Role::Phone | tether_identity::Role::Watch
            )
        {
            return Err(HandshakeError::RoleNotAllowed(peer.role));
        }
        // A device serves members only, never another device.
        if self.device_key.is_some() && !peer.role.holds_group_key() {
            return Err(HandshakeError::RoleNotAllowed(peer.role));
        }
        // SPEC §3.6: a removed device of this account is refused like a
        // non-member, whichever epoch's key it proved.
        if s.grantee.is_none() && self.credentials.is_revoked(&peer.public_key) {
            return Err(HandshakeError::Revoked);
        }
        let unsigned = encode(Msg::ClientAuth(ClientAuth {
            signature: Vec::new(),
            ..auth.clone()
        }));
        let signed = signed_input(CLIENT_SIG, &transcript_next(&s.transcript, &unsigned));
        if !verify_signature(&peer.public_key, &signed, &auth.signature) {
            return Err(HandshakeError::BadSignature);
        }
        let transcript = transcript_next(&s.transcript, bytes);
        let secret = resumption_secret(exporter, &transcript);
        let grant = s.grantee.map(|g| g.grant_id);
        self.accept(peer, secret, s.version, false, grant, now);
        Ok(ServerState::Done)
    }

    fn handle_resume(
        &mut self,
        hello: ResumeHello,
        bytes: &[u8],
        exporter: &Exporter,
        now: u64,
    ) -> Result<ServerState, HandshakeError> {
        // An early hello carries no exporter binding: it is accepted only as
        // early data, where the TLS early secret keeps it (SPEC §5.8).
        if hello.early {
            return Err(HandshakeError::ResumptionRefused);
        }
        let (peer, grant) = self.check_resume_bound(&hello, exporter, now)?;
        let transcript = transcript_next(&transcript_start(exporter), bytes);
        let secret = resumption_secret(exporter, &transcript);
        self.accept(peer, secret, hello.version, true, grant, now);
        Ok(ServerState::Done)
    }

    /// The checks of SPEC §5.5 for an early `ResumeHello` (§5.8): the proof
    /// without the exporter.
    fn check_resume(
        &self,
        hello: &ResumeHello,
        now: u64,
    ) -> Result<(VerifiedCertificate, Option<[u8; GRANT_ID_LEN]>), HandshakeError> {
        self.check_ticket(hello, now, |secret| {
            tag_verifies(
                secret,
                &early_resume_input(hello.version, &hello.ticket, &hello.nonce),
                &hello.proof,
            )
        })
    }

    fn check_resume_bound(
        &self,
        hello: &ResumeHello,
        exporter: &Exporter,
        now: u64,
    ) -> Result<(VerifiedCertificate, Option<[u8; GRANT_ID_LEN]>), HandshakeError> {
        self.check_ticket(hello, now, |secret| {
            tag_verifies(
                secret,
                &resume_input(exporter, hello.version, &hello.ticket, &hello.nonce),
                &hello.proof,
            )
        })
    }

    /// Opens the ticket, checks the proof with `proof_ok` under its
    /// secret, then its lifetime, grant, certificate and the revocation
    /// list (SPEC §5.5).
    fn check_ticket(
        &self,
        hello: &ResumeHello,
        now: u64,
        proof_ok: impl FnOnce(&[u8; 32]) -> bool,
    ) -> Result<(VerifiedCertificate, Option<[u8; GRANT_ID_LEN]>), HandshakeError> {
        nonce_of(&hello.nonce)?;
        if hello.version < self.config.min_version || hello.version > self.config.max_version {
            return Err(HandshakeError::VersionMismatch {
                min: self.config.min_version,
                max: self.config.max_version,
                got: hello.version,
            });
        }
        let body = self
            .tickets
            .open(&hello.ticket)
            .ok_or(HandshakeError::ResumptionRefused)?;
        let secret: [u8; 32] = body
            .resumption_secret
            .as_slice()
            .try_into()
            .map_err(|_| HandshakeError::ResumptionRefused)?;
        if !proof_ok(&secret) {
            return Err(HandshakeError::ResumptionRefused);
        }
        if now > body.not_after {
            return Err(HandshakeError::ResumptionRefused);
        }
        // A ticket issued under a grant resumes only while the grant is in
        // the table and valid (R16).
        let grant = match body.grant_id.len() {
            0 => None,
            GRANT_ID_LEN => {
                let id: [u8; GRANT_ID_LEN] = body
                    .grant_id
                    .as_slice()
                    .try_into()
                    .map_err(|_| HandshakeError::ResumptionRefused)?;
                if !self.grantees.admits(&id, now) {
                    return Err(HandshakeError::ResumptionRefused);
                }
                Some(id)
            }
            _ => return Err(HandshakeError::ResumptionRefused),
        };
        let peer_body = body.peer.ok_or(HandshakeError::ResumptionRefused)?;
        let peer = VerifiedCertificate::from_body(&peer_body)?;
        // The certificate may have expired since the ticket was issued.
        if now > peer.not_after {
            return Err(HandshakeError::Certificate(CertificateError::Expired));
        }
        if now < peer.not_before {
            return Err(HandshakeError::Certificate(CertificateError::NotYetValid));
        }
        // SPEC §3.6: a ticket issued to a device removed since resumes
        // nothing (the list is checked on every resumption).
        if grant.is_none() && self.credentials.is_revoked(&peer.public_key) {
            return Err(HandshakeError::Revoked);
        }
        Ok((peer, grant))
    }

    fn accept(
        &mut self,
        peer: VerifiedCertificate,
        secret: [u8; 32],
        version: u32,
        resumed: bool,
        grant: Option<[u8; GRANT_ID_LEN]>,
        now: u64,
    ) {
        self.send_ticket(&peer, secret, grant, now);
        self.out
            .push_back(Output::Event(Event::Authenticated(PeerIdentity {
                certificate: peer,
                resumed,
                version,
                grant,
            })));
    }

    /// Queues the `Accept` with a fresh ticket for `peer`.
    fn send_ticket(
        &mut self,
        peer: &VerifiedCertificate,
        secret: [u8; 32],
        grant: Option<[u8; GRANT_ID_LEN]>,
        now: u64,
    ) {
        let lifetime = self.config.ticket_lifetime_s;
        let not_after = now.saturating_add(u64::from(lifetime)).min(peer.not_after);
        let mut ticket_nonce = [0; TICKET_NONCE_LEN];
        ticket_nonce.copy_from_slice(&self.nonce[..TICKET_NONCE_LEN]);
        let ticket = self.tickets.seal(
            ticket_nonce,
            &TicketBody {
                peer: Some(peer.to_body()),
                resumption_secret: secret.to_vec(),
                not_after,
                grant_id: grant.map(|g| g.to_vec()).unwrap_or_default(),
            },
        );
        self.out
            .push_back(Output::Transmit(encode(Msg::Accept(Accept {
                resumption_ticket: ticket,
                ticket_lifetime_s: lifetime,
            }))));
    }
}

/// Whether `tag` is HMAC-SHA256 under `key` over `data` (constant time, ring).
fn tag_verifies(key: &[u8; 32], data: &[u8], tag: &[u8]) -> bool {
    hmac::verify(&hmac::Key::new(hmac::HMAC_SHA256, key), data, tag).is_ok()
}
