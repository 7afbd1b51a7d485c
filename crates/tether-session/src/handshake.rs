//! The account-bound handshake (SPEC §5; R2, R3, R31).
//!
//! This module contains no networking code and does not read the clock or a
//! random source: the exporter, nonces and `now` come from the caller, so two
//! cores can be driven against each other deterministically.
//!
//! ```text
//!  initiator (client)                         responder (server)
//!  ── QUIC/TLS 1.3 handshake, ephemeral certificates, ALPN tether/1 ──
//!  ClientHello{versions, nonce, HMAC_mk(exporter…)}  ──►  checks membership
//!                                                 ◄──  ServerAuth{cert, sig}
//!  checks cert + sig
//!  ClientAuth{cert, sig} + first requests        ──►  checks cert + sig
//!                                                 ◄──  Accept{ticket}
//! ```
//!
//! A non-member never sees a certificate: the responder answers a ClientHello
//! whose membership proof fails with a bare [`Refuse`]. Proofs and signatures
//! cover the TLS exporter, so nothing relays into another connection.
//!
//! # Driving a core
//! Create the core, then loop: drain [`ClientHandshake::poll_output`] until
//! [`Output::Pending`], sending each `Transmit` as one frame; feed each frame
//! received to `handle_message`. An error is final; the responder queues a
//! `Refuse` to send before it reports the error.

use prost::Message;
use ring::{aead, digest, hmac};
use std::collections::VecDeque;
use std::sync::Arc;
use tether_identity::{CertificateError, Credentials, VerifiedCertificate, verify_signature};
use tether_proto::v1::{
    Accept, ClientAuth, ClientHello, DeviceCertificate, HandshakeMessage, Refuse, RefuseReason,
    ResumeHello, ServerAuth, TicketBody, handshake_message::Message as Msg,
};
use thiserror::Error;

/// The Tether protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// TLS exporter label (RFC 5705 / RFC 8446 §7.5) the handshake binds to.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-tether/1 handshake";
/// Length of the exporter value the cores take.
pub const EXPORTER_LEN: usize = 32;
/// Length of every handshake nonce.
pub const NONCE_LEN: usize = 32;
/// Handshake messages larger than this are refused before decoding.
pub const MAX_HANDSHAKE_MESSAGE_BYTES: usize = 2048;
/// Default lifetime of a resumption ticket: 24 hours.
pub const TICKET_LIFETIME_S: u32 = 24 * 3600;

const TICKET_AAD: &[u8] = b"tether/1 ticket";
const TICKET_NONCE_LEN: usize = 12;

/// The exporter value of one connection.
pub type Exporter = [u8; EXPORTER_LEN];
/// A 32-byte random nonce supplied by the driver.
pub type Nonce = [u8; NONCE_LEN];

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
    /// The initiator's membership proof does not verify: not a member of
    /// this account, or the proof was made for another connection.
    #[error("peer did not prove account membership")]
    NotAMember,
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

    /// The grantee valid at `now` whose admission key verifies `proof` over
    /// `input`. Every candidate is checked with ring's constant-time verify;
    /// the validity test comes after, so an expired grant costs the same
    /// time as a valid one and its proof is refused like a stranger's.
    fn admit(&self, input: &[u8], proof: &[u8], now: u64) -> Option<Grantee> {
        self.read()
            .iter()
            .find(|g| {
                hmac::verify(
                    &hmac::Key::new(hmac::HMAC_SHA256, &g.admission_key),
                    input,
                    proof,
                )
                .is_ok()
            })
            .filter(|g| g.is_valid_at(now))
            .cloned()
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
        let mut inout = body.encode_to_vec();
        self.0
            .seal_in_place_append_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(TICKET_AAD),
                &mut inout,
            )
            .expect("ticket bodies are far below the AEAD length limit");
        let mut out = nonce.to_vec();
        out.extend(inout);
        out
    }

    fn open(&self, ticket: &[u8]) -> Option<TicketBody> {
        if ticket.len() < TICKET_NONCE_LEN + aead::CHACHA20_POLY1305.tag_len() {
            return None;
        }
        let (nonce, sealed) = ticket.split_at(TICKET_NONCE_LEN);
        let nonce = aead::Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut inout = sealed.to_vec();
        let plain = self
            .0
            .open_in_place(nonce, aead::Aad::from(TICKET_AAD), &mut inout)
            .ok()?;
        TicketBody::decode(&plain[..]).ok()
    }
}

// ---------------------------------------------------------------- transcript

fn transcript_start(exporter: &Exporter) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(b"tether/1 transcript\0");
    ctx.update(exporter);
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

fn membership_input(exporter: &Exporter, min: u32, max: u32, nonce: &[u8]) -> Vec<u8> {
    let mut m = b"tether/1 client hello\0".to_vec();
    m.extend_from_slice(exporter);
    m.extend_from_slice(&min.to_be_bytes());
    m.extend_from_slice(&max.to_be_bytes());
    m.extend_from_slice(nonce);
    m
}

fn resume_input(exporter: &Exporter, version: u32, ticket: &[u8], nonce: &[u8]) -> Vec<u8> {
    let mut m = b"tether/1 resume\0".to_vec();
    m.extend_from_slice(exporter);
    m.extend_from_slice(&version.to_be_bytes());
    m.extend_from_slice(&(ticket.len() as u32).to_be_bytes());
    m.extend_from_slice(ticket);
    m.extend_from_slice(nonce);
    m
}

fn resumption_secret(exporter: &Exporter, transcript: &[u8; 32]) -> [u8; 32] {
    let prk =
        ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"tether/1 resumption").extract(exporter);
    let info = [&transcript[..]];
    let okm = prk
        .expand(&info, ring::hkdf::HKDF_SHA256)
        .expect("32 bytes is within HKDF-SHA256's output limit");
    let mut out = [0; 32];
    okm.fill(&mut out)
        .expect("buffer length equals the requested length");
    out
}

const SERVER_SIG: &[u8] = b"tether/1 server signature\0";
const CLIENT_SIG: &[u8] = b"tether/1 client signature\0";

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
    ExpectAccept(ExpectAccept),
    Done,
    Failed,
}

#[derive(Debug)]
struct ExpectServerAuth {
    transcript: [u8; 32],
    min_version: u32,
    max_version: u32,
}

#[derive(Debug)]
struct ExpectAccept {
    transcript: [u8; 32],
    peer: VerifiedCertificate,
    /// The secret for the next ticket: from the full handshake's transcript,
    /// or from the ResumeHello transcript when resuming.
    secret: [u8; 32],
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
    exporter: Exporter,
    state: ClientState,
    out: VecDeque<Output>,
    flights_waited: u32,
}

impl ClientHandshake {
    /// Starts a full handshake; the first output is the `ClientHello`.
    pub fn new(
        credentials: Arc<Credentials>,
        exporter: Exporter,
        nonce: Nonce,
        config: &HandshakeConfig,
    ) -> Result<Self, HandshakeError> {
        let membership_key = credentials
            .group_key()
            .ok_or(HandshakeError::NoGroupKey)?
            .membership_key();
        // SPEC §3.6: while this member holds the previous epoch's key, it
        // proves that one too, so a responder that has not caught up with
        // the rotation yet still admits it (and then receives the new list
        // and key). The responder judges the grace period of its own keys.
        let previous_key = credentials
            .previous_group_key_until()
            .map(|(k, _)| k.membership_key());
        let peer_authority = *credentials.authority_public_key();
        let mut core = Self::with_proof_key(
            credentials,
            peer_authority,
            false,
            &membership_key,
            exporter,
            nonce,
            config,
        );
        if let Some(previous_key) = previous_key {
            core.add_previous_proof(&previous_key, config);
        }
        Ok(core)
    }

    /// Replaces the queued `ClientHello` by one that also carries the proof
    /// under `previous_key` (SPEC §3.6), and restarts the transcript on it.
    fn add_previous_proof(&mut self, previous_key: &[u8; 32], config: &HandshakeConfig) {
        let Some(Output::Transmit(bytes)) = self.out.pop_front() else {
            return;
        };
        let Ok(Msg::ClientHello(mut hello)) = decode_message(&bytes) else {
            return;
        };
        let key = hmac::Key::new(hmac::HMAC_SHA256, previous_key);
        hello.previous_proof = hmac::sign(
            &key,
            &membership_input(
                &self.exporter,
                config.min_version,
                config.max_version,
                &hello.nonce,
            ),
        )
        .as_ref()
        .to_vec();
        let hello = encode(Msg::ClientHello(hello));
        if let ClientState::ExpectServerAuth(s) = &mut self.state {
            s.transcript = transcript_next(&transcript_start(&self.exporter), &hello);
        }
        self.out.push_front(Output::Transmit(hello));
    }

    /// Starts a full handshake as a co-user admitted by a share grant
    /// (SPEC §17.3): the proof is under the grant's admission key and the
    /// responder must hold a certificate of the owner's account.
    pub fn with_grant(
        credentials: Arc<Credentials>,
        access: &GrantAccess,
        exporter: Exporter,
        nonce: Nonce,
        config: &HandshakeConfig,
    ) -> Self {
        Self::with_proof_key(
            credentials,
            access.owner_authority_public_key,
            access.expect_device,
            &access.admission_key,
            exporter,
            nonce,
            config,
        )
    }

    fn with_proof_key(
        credentials: Arc<Credentials>,
        peer_authority: [u8; 32],
        expect_device: bool,
        proof_key: &[u8; 32],
        exporter: Exporter,
        nonce: Nonce,
        config: &HandshakeConfig,
    ) -> Self {
        let key = hmac::Key::new(hmac::HMAC_SHA256, proof_key);
        let proof = hmac::sign(
            &key,
            &membership_input(&exporter, config.min_version, config.max_version, &nonce),
        );
        let hello = encode(Msg::ClientHello(ClientHello {
            min_version: config.min_version,
            max_version: config.max_version,
            nonce: nonce.to_vec(),
            membership_proof: proof.as_ref().to_vec(),
            previous_proof: Vec::new(),
        }));
        let transcript = transcript_next(&transcript_start(&exporter), &hello);
        Self {
            credentials,
            peer_authority,
            expect_device,
            exporter,
            state: ClientState::ExpectServerAuth(ExpectServerAuth {
                transcript,
                min_version: config.min_version,
                max_version: config.max_version,
            }),
            out: VecDeque::from([Output::Transmit(hello)]),
            flights_waited: 0,
        }
    }

    /// Resumes with a ticket. The driver must first have checked that the
    /// connection's TLS certificate is the one pinned with the ticket
    /// (SPEC §5.5). The peer counts as authenticated at once, so requests
    /// may follow the `ResumeHello` in the same flight.
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
        }));
        let transcript = transcript_next(&transcript_start(&exporter), &hello);
        let secret = resumption_secret(&exporter, &transcript);
        let peer = PeerIdentity {
            certificate: ticket.peer.clone(),
            resumed: true,
            version,
            grant: None,
        };
        let peer_authority = *credentials.authority_public_key();
        let expect_device = ticket.peer.role == tether_identity::Role::Device;
        Self {
            credentials,
            peer_authority,
            expect_device,
            exporter,
            state: ClientState::ExpectAccept(ExpectAccept {
                transcript,
                peer: ticket.peer.clone(),
                secret,
            }),
            out: VecDeque::from([
                Output::Transmit(hello),
                Output::Event(Event::Authenticated(peer)),
            ]),
            flights_waited: 0,
        }
    }

    /// How many peer flights the initiator waited for before it could send
    /// its first request (1 for a full handshake, 0 when resuming). Add the
    /// QUIC handshake's own round trip for the total (SPEC §5.6).
    pub fn flights_waited(&self) -> u32 {
        self.flights_waited
    }

    /// Whether the handshake completed (ticket received) or failed.
    pub fn is_finished(&self) -> bool {
        matches!(self.state, ClientState::Done | ClientState::Failed)
    }

    /// The next output.
    pub fn poll_output(&mut self) -> Output {
        self.out.pop_front().unwrap_or(Output::Pending)
    }

    /// Handles one frame from the responder. `now` is Unix seconds.
    pub fn handle_message(&mut self, bytes: &[u8], now: u64) -> Result<(), HandshakeError> {
        let state = std::mem::replace(&mut self.state, ClientState::Failed);
        let message = decode_message(bytes)?;
        if let Msg::Refuse(Refuse { reason }) = message {
            return Err(HandshakeError::Refused(
                RefuseReason::try_from(reason).unwrap_or(RefuseReason::Unspecified),
            ));
        }
        self.state = match state {
            ClientState::ExpectServerAuth(s) => {
                let Msg::ServerAuth(auth) = message else {
                    return Err(HandshakeError::UnexpectedMessage {
                        expected: "ServerAuth",
                    });
                };
                self.flights_waited += 1;
                ClientState::ExpectAccept(self.handle_server_auth(s, auth, bytes, now)?)
            }
            ClientState::ExpectAccept(s) => {
                let Msg::Accept(accept) = message else {
                    return Err(HandshakeError::UnexpectedMessage { expected: "Accept" });
                };
                if !accept.resumption_ticket.is_empty() {
                    self.out
                        .push_back(Output::Event(Event::Ticket(ResumptionTicket {
                            ticket: accept.resumption_ticket,
                            secret: s.secret,
                            not_after: now.saturating_add(u64::from(accept.ticket_lifetime_s)),
                            peer: s.peer,
                        })));
                }
                let _ = s.transcript;
                ClientState::Done
            }
            ClientState::Done | ClientState::Failed => return Err(HandshakeError::Finished),
        };
        Ok(())
    }

    fn handle_server_auth(
        &mut self,
        s: ExpectServerAuth,
        auth: ServerAuth,
        bytes: &[u8],
        now: u64,
    ) -> Result<ExpectAccept, HandshakeError> {
        if auth.version < s.min_version || auth.version > s.max_version {
            return Err(HandshakeError::VersionMismatch {
                min: s.min_version,
                max: s.max_version,
                got: auth.version,
            });
        }
        nonce_of(&auth.nonce)?;
        let cert = certificate_of(auth.certificate.as_ref())?;
        // A certificate verified before skips only its signature check.
        let peer = self
            .credentials
            .verify_peer_certificate(cert, &self.peer_authority, now)?;
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
        let unsigned = encode(Msg::ServerAuth(ServerAuth {
            signature: Vec::new(),
            ..auth.clone()
        }));
        let signed = signed_input(SERVER_SIG, &transcript_next(&s.transcript, &unsigned));
        if !verify_signature(&peer.public_key, &signed, &auth.signature) {
            return Err(HandshakeError::BadSignature);
        }
        let transcript = transcript_next(&s.transcript, bytes);

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
        let secret = resumption_secret(&self.exporter, &transcript);
        self.out.push_back(Output::Transmit(client_auth));
        self.out
            .push_back(Output::Event(Event::Authenticated(PeerIdentity {
                certificate: peer.clone(),
                resumed: false,
                version: auth.version,
                grant: None,
            })));
        Ok(ExpectAccept {
            transcript,
            peer,
            secret,
        })
    }
}

// ------------------------------------------------------------------ server

#[derive(Debug)]
enum ServerState {
    ExpectHello,
    ExpectClientAuth(ExpectClientAuth),
    Done,
    Failed,
}

#[derive(Debug)]
struct ExpectClientAuth {
    transcript: [u8; 32],
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
    exporter: Exporter,
    nonce: Nonce,
    config: HandshakeConfig,
    state: ServerState,
    proven: Proven,
    out: VecDeque<Output>,
}

/// What an initiator has proven to a responder before the end of the
/// handshake ([`ServerHandshake::proven`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proven {
    /// Nothing yet, or it failed.
    Nothing,
    /// Its `ClientHello` verified under the membership key (or the bound
    /// device's key): it holds the account's secret.
    Member,
    /// Its `ClientHello` verified under a share grant's admission key: a
    /// co-user (or whoever holds the grant key), not a member.
    Grantee,
}

impl ServerHandshake {
    /// A responder waiting for a `ClientHello` or `ResumeHello`. `nonce` must
    /// be fresh random bytes for this connection.
    pub fn new(
        credentials: Arc<Credentials>,
        tickets: Arc<TicketKey>,
        exporter: Exporter,
        nonce: Nonce,
        config: &HandshakeConfig,
    ) -> Self {
        Self {
            credentials,
            tickets,
            grantees: Arc::default(),
            device_key: None,
            exporter,
            nonce,
            config: config.clone(),
            state: ServerState::ExpectHello,
            proven: Proven::Nothing,
            out: VecDeque::new(),
        }
    }

    /// Makes this responder a bound smart device (SPEC §12.6): members prove
    /// `device_key` (derived from the device secret) instead of the
    /// membership key, since a device holds no group key.
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

    /// Whether the responder has sent its first reply (so the initiator may
    /// legitimately have requests in flight).
    pub fn has_answered_hello(&self) -> bool {
        !matches!(self.state, ServerState::ExpectHello)
    }

    /// What the initiator has proven so far: the key its `ClientHello` was
    /// made with. A driver uses it to decide which half-finished handshakes
    /// a flood may evict (SPEC §5.7).
    pub fn proven(&self) -> Proven {
        self.proven
    }

    /// Handles one frame from the initiator. On error a `Refuse` is queued
    /// (send it, then close) and the core is finished. `now` is Unix seconds.
    pub fn handle_message(&mut self, bytes: &[u8], now: u64) -> Result<(), HandshakeError> {
        let state = std::mem::replace(&mut self.state, ServerState::Failed);
        if matches!(state, ServerState::Done | ServerState::Failed) {
            return Err(HandshakeError::Finished);
        }
        match self.step(state, bytes, now) {
            Ok(next) => {
                self.state = next;
                Ok(())
            }
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

    fn step(
        &mut self,
        state: ServerState,
        bytes: &[u8],
        now: u64,
    ) -> Result<ServerState, HandshakeError> {
        let message = decode_message(bytes)?;
        match (state, message) {
            (ServerState::ExpectHello, Msg::ClientHello(hello)) => {
                self.handle_hello(hello, bytes, now)
            }
            (ServerState::ExpectHello, Msg::ResumeHello(hello)) => {
                self.handle_resume(hello, bytes, now)
            }
            (ServerState::ExpectHello, _) => Err(HandshakeError::UnexpectedMessage {
                expected: "ClientHello or ResumeHello",
            }),
            (ServerState::ExpectClientAuth(s), Msg::ClientAuth(auth)) => {
                self.handle_client_auth(s, auth, bytes, now)
            }
            (ServerState::ExpectClientAuth(_), _) => Err(HandshakeError::UnexpectedMessage {
                expected: "ClientAuth",
            }),
            (ServerState::Done | ServerState::Failed, _) => Err(HandshakeError::Finished),
        }
    }

    fn handle_hello(
        &mut self,
        hello: ClientHello,
        bytes: &[u8],
        now: u64,
    ) -> Result<ServerState, HandshakeError> {
        nonce_of(&hello.nonce)?;
        // R3: membership is checked first, before anything about this node
        // is revealed. Constant-time comparison (ring's hmac::verify).
        // SPEC §3.6: during a rotation's grace period the previous epoch's
        // membership key is accepted too (a member that was offline proves
        // the old key), and an initiator's `previous_proof` is tried, so a
        // responder that has not caught up still admits a member with the
        // new key. Every pair is verified; none short-cuts the others.
        let member_keys: Vec<[u8; 32]> = match self.device_key {
            Some(key) => vec![key],
            None => {
                let current = self
                    .credentials
                    .group_key()
                    .ok_or(HandshakeError::NoGroupKey)?
                    .membership_key();
                let mut keys = vec![current];
                if let Some(previous) = self.credentials.previous_group_key(now) {
                    keys.push(previous.membership_key());
                }
                keys
            }
        };
        let input = membership_input(
            &self.exporter,
            hello.min_version,
            hello.max_version,
            &hello.nonce,
        );
        let mut proofs = vec![&hello.membership_proof];
        if self.device_key.is_none() && !hello.previous_proof.is_empty() {
            proofs.push(&hello.previous_proof);
        }
        let mut member = false;
        for key in &member_keys {
            let key = hmac::Key::new(hmac::HMAC_SHA256, key);
            for proof in &proofs {
                member |= hmac::verify(&key, &input, proof).is_ok();
            }
        }
        // R16: a co-user proves the grant's admission key instead, checked
        // just as early; a revoked grant is no longer in the table, and an
        // expired one admits nobody (`now` is the driver's clock).
        let grantee = match member {
            true => None,
            false => Some(
                self.grantees
                    .admit(&input, &hello.membership_proof, now)
                    .ok_or(HandshakeError::NotAMember)?,
            ),
        };
        let version = hello.max_version.min(self.config.max_version);
        if version < hello.min_version.max(self.config.min_version) {
            return Err(HandshakeError::VersionMismatch {
                min: hello.min_version,
                max: hello.max_version,
                got: self.config.max_version,
            });
        }
        let transcript = transcript_next(&transcript_start(&self.exporter), bytes);
        let mut auth = ServerAuth {
            version,
            nonce: self.nonce.to_vec(),
            certificate: Some(self.credentials.certificate_message().clone()),
            signature: Vec::new(),
        };
        let unsigned = encode(Msg::ServerAuth(auth.clone()));
        auth.signature = self
            .credentials
            .key()
            .sign(&signed_input(
                SERVER_SIG,
                &transcript_next(&transcript, &unsigned),
            ))
            .to_vec();
        let server_auth = encode(Msg::ServerAuth(auth));
        let transcript = transcript_next(&transcript, &server_auth);
        self.out.push_back(Output::Transmit(server_auth));
        self.proven = match grantee {
            Some(_) => Proven::Grantee,
            None => Proven::Member,
        };
        Ok(ServerState::ExpectClientAuth(ExpectClientAuth {
            transcript,
            version,
            grantee,
        }))
    }

    fn handle_client_auth(
        &mut self,
        s: ExpectClientAuth,
        auth: ClientAuth,
        bytes: &[u8],
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
        let secret = resumption_secret(&self.exporter, &transcript);
        let grant = s.grantee.map(|g| g.grant_id);
        self.accept(peer, secret, s.version, false, grant, now);
        Ok(ServerState::Done)
    }

    fn handle_resume(
        &mut self,
        hello: ResumeHello,
        bytes: &[u8],
        now: u64,
    ) -> Result<ServerState, HandshakeError> {
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
        let key = hmac::Key::new(hmac::HMAC_SHA256, &secret);
        hmac::verify(
            &key,
            &resume_input(&self.exporter, hello.version, &hello.ticket, &hello.nonce),
            &hello.proof,
        )
        .map_err(|_| HandshakeError::ResumptionRefused)?;
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
        if now > peer.not_after || now < peer.not_before {
            return Err(HandshakeError::Certificate(CertificateError::Expired));
        }
        // SPEC §3.6: a ticket issued to a device removed since resumes
        // nothing (the list is checked on every resumption).
        if grant.is_none() && self.credentials.is_revoked(&peer.public_key) {
            return Err(HandshakeError::Revoked);
        }
        let transcript = transcript_next(&transcript_start(&self.exporter), bytes);
        let secret = resumption_secret(&self.exporter, &transcript);
        self.accept(peer, secret, hello.version, true, grant, now);
        Ok(ServerState::Done)
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
        self.out
            .push_back(Output::Event(Event::Authenticated(PeerIdentity {
                certificate: peer,
                resumed,
                version,
                grant,
            })));
    }
}
