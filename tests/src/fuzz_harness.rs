//! What each fuzz target in `fuzz/` runs, one function per target, so that
//! the replay test (`tests/tests/fuzz_corpus.rs`, stable Rust) runs exactly
//! the code libFuzzer runs. Every function takes arbitrary bytes and must
//! never panic; the assertions in here are oracles: a panic is a bug found.
//!
//! # Deterministic credentials
//! Keys come from fixed seeds, not the system RNG, and time and nonces are
//! fixed, so Ed25519 signatures, membership proofs and sealed tickets are the
//! same on every run. Committed hints, a sealed ServerAuth, a ClientAuth or
//! a certificate therefore stay valid, and the fuzzer can start from the success paths and
//! mutate from there. [`seeds`] regenerates those inputs from the real
//! encoders; the replay test checks that the committed copies are current.
//!
//! # Input formats
//! - `envelope`, `certificate`, `discovery_token`: the raw bytes.
//! - `frame`: 2 bytes big-endian limit (`0xffff` = [`MAX_FRAME_BYTES`]), 1
//!   chunking byte (0: one chunk, 1: as much as `wants()` asks, n: random
//!   chunks of 1..=n bytes), then the stream.
//! - `handshake_server`, `handshake_client`: 1 selector byte (see
//!   [`handshake_server`]), then messages as *records*: 2 bytes big-endian
//!   length, then that many bytes (a last, short record takes what is left).
//!   For the responder the first record is the initiator's admission hints
//!   (its bytes cut into [`HINTS`] hints of [`HINT_LEN`] bytes, missing
//!   bytes zero); for a full handshake's initiator it is the sealed
//!   `ServerAuth`. The other records are frames of stream 0.
//! - `discovery_txt`: TXT RDATA as on the wire (RFC 6763 §6), split into
//!   properties the way mdns-sd does.
//! - `vehicle_request`: repeated `control byte, record` (see
//!   [`vehicle_request`]).
//! - `pairing`, `provisioning`, `setup_payload`, `gatt_segments`,
//!   `ble_advert`: see [`pairing()`], [`provisioning()`], [`setup_payload()`],
//!   [`gatt_segments()`] and [`ble_advert()`].
//! - `devices`: see [`devices()`].
//! - `share_invite`: the raw bytes, as a `ShareInvite` and a `ShareGrant`.
//! - `revocation_list`: the raw bytes, as a `RevocationList` (SPEC §3.6).
//! - `automation_task`: the raw bytes, as a `Task` and a `TaskTemplate`.
//! - `automation_state`: the raw bytes, as a `Trace` and an `EngineSnapshot`.
//! - `relay_envelope`: the raw bytes, as a relay envelope and a relay topic.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};

use prost::Message;
use ring::signature::{Ed25519KeyPair, KeyPair};
use tether_control::{
    Config, MemoryReceiptLog, PeerInfo, SimulatedVehicle, StreamId, VehicleService, client,
};
use tether_discovery::token::{TXT_VERSION_KEY, parse_txt};
use tether_discovery::{DiscoveryToken, TokenResolver};
use tether_identity::{
    AccountAuthority, AccountKeyId, AuthorityState, CERTIFICATE_VALIDITY_S, Credentials, DeviceKey,
    LocalAuthority, MAX_CERTIFICATE_BYTES, Role, VerifiedCertificate, decode_certificate,
    verify_certificate,
};
use tether_proto::v1::{
    Envelope, HandshakeMessage, RefuseReason, Request, envelope, handshake_message::Message as Msg,
    request,
};
use tether_session::frame::{
    FrameDecoder, FrameError, FrameSplitter, MAX_FRAME_BYTES, Piece, encode_frame,
};

mod pairing;
pub use pairing::{binding, ble_advert, gatt_segments, ota, pairing, provisioning, setup_payload};
mod devices;
pub use devices::devices;
mod share;
pub use share::share_invite;
mod revocation;
pub use revocation::revocation_list;
mod automation;
mod automation_state;
pub use automation::automation_task;
pub use automation_state::automation_state;
mod relay;
pub use relay::relay_envelope;
mod mailbox;
pub use mailbox::mailbox_letter;
use tether_session::handshake::{
    ANSWER_ENTROPY_LEN, ClientHandshake, Event, HINT_LEN, HINTS, HandshakeConfig, HandshakeError,
    Hint, HintEntropy, Output, Proven, ResumptionTicket, SEALED_SERVER_AUTH_LEN, ServerHandshake,
    TICKET_LIFETIME_S, TicketKey, TlsPin, decode_message,
};

/// A fuzz target's body: takes any bytes, panics only on a bug.
pub type Harness = fn(&[u8]);

/// Every target: its name (the `[[bin]]` in `fuzz/Cargo.toml` and the
/// directory under `fuzz/corpus/`) and its harness.
pub const TARGETS: [(&str, Harness); 22] = [
    ("envelope", envelope),
    ("frame", frame),
    ("handshake_server", handshake_server),
    ("handshake_client", handshake_client),
    ("discovery_token", discovery_token),
    ("discovery_txt", discovery_txt),
    ("certificate", certificate),
    ("vehicle_request", vehicle_request),
    ("pairing", pairing),
    ("setup_payload", setup_payload),
    ("gatt_segments", gatt_segments),
    ("provisioning", provisioning),
    ("ble_advert", ble_advert),
    ("binding", binding),
    ("ota", ota),
    ("share_invite", share_invite),
    ("devices", devices),
    ("automation_task", automation_task),
    ("automation_state", automation_state),
    ("revocation_list", revocation_list),
    ("relay_envelope", relay_envelope),
    ("mailbox_letter", mailbox_letter),
];

/// The fixed "now" (Unix seconds) the fixture's certificates are issued at.
pub const NOW: u64 = 1_800_000_000;
/// The TLS exporter value of every fuzzed connection.
const EXPORTER: [u8; 32] = [0xe1; 32];
/// The initiator's hint randomness in a full handshake.
const CLIENT_ENTROPY: HintEntropy = [0xc1; 32];
/// SHA-256 of the responder's TLS certificate on every fuzzed connection.
const PIN: TlsPin = [0xe2; 32];
/// The responder's randomness for its sealed answer.
const ANSWER_ENTROPY: [u8; ANSWER_ENTROPY_LEN] = [0x52; ANSWER_ENTROPY_LEN];
/// The initiator's nonce when resuming.
const RESUME_NONCE: [u8; 32] = [0xc2; 32];
/// The responder's nonce.
const SERVER_NONCE: [u8; 32] = [0x51; 32];
/// The fixture account's group key.
const GROUP_KEY: [u8; 32] = [0x47; 32];
/// The responder's ticket key.
const TICKET_KEY: [u8; 32] = [0x71; 32];
/// A discovery key of some other account.
const OTHER_DISCOVERY_KEY: [u8; 32] = [0x0d; 32];
/// Bound on outputs drained after one input; more means a loop.
const MAX_OUTPUTS: usize = 100_000;

// ------------------------------------------------------------------ fixture

/// Fixed credentials and flights, built once per process.
struct Fixture {
    authority_public_key: [u8; 32],
    car: Arc<Credentials>,
    phone: Arc<Credentials>,
    tickets: Arc<TicketKey>,
    /// The phone's ticket from a full handshake with the car at [`NOW`].
    ticket: ResumptionTicket,
    /// `[other account's, ours]`, the order `resolver` holds them in.
    discovery_keys: [[u8; 32]; 2],
    resolver: TokenResolver,
    /// A full handshake, phone to car, at [`NOW`]: `to_server` starts with
    /// the hints, `to_client` with the sealed `ServerAuth`.
    full: Flights,
    /// Frames of the resumption with `ticket`, at [`NOW`].
    resumed: Flights,
}

/// Frames one handshake put on the wire, in each direction.
#[derive(Default)]
struct Flights {
    to_server: Vec<Vec<u8>>,
    to_client: Vec<Vec<u8>>,
    ticket: Option<ResumptionTicket>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let mut authority = authority(0xa0, GROUP_KEY);
        let car = enroll(&mut authority, device_key(0xa1), Role::Vehicle);
        let phone = enroll(&mut authority, device_key(0xa2), Role::Phone);
        let tickets = Arc::new(TicketKey::new(TICKET_KEY));
        let mut client =
            ClientHandshake::new(phone.clone(), CLIENT_ENTROPY, &HandshakeConfig::default())
                .expect("a phone holds the group key");
        let full = drive(&mut client, &mut server(&car, &tickets, 0), NOW, false);
        let ticket = full
            .ticket
            .clone()
            .expect("a full handshake issues a ticket");
        let mut client = ClientHandshake::resume(phone.clone(), EXPORTER, RESUME_NONCE, &ticket);
        let resumed = drive(&mut client, &mut server(&car, &tickets, 0), NOW, true);
        let ours = tether_identity::GroupKey::from_bytes(&GROUP_KEY)
            .expect("32 bytes")
            .discovery_key();
        let discovery_keys = [OTHER_DISCOVERY_KEY, ours];
        Fixture {
            authority_public_key: authority.public_key(),
            car,
            phone,
            tickets,
            ticket,
            resolver: TokenResolver::new(&discovery_keys),
            discovery_keys,
            full,
            resumed,
        }
    })
}

/// An Ed25519 key from a fixed seed (`[seed; 32]`), as the PKCS#8 v2
/// document `ring` writes.
pub(crate) fn device_key(seed: u8) -> DeviceKey {
    const PREFIX: [u8; 16] = [
        0x30, 0x53, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    const MIDDLE: [u8; 5] = [0xa1, 0x23, 0x03, 0x21, 0x00];
    let seed = [seed; 32];
    let pair = Ed25519KeyPair::from_seed_unchecked(&seed).expect("any 32 bytes are a seed");
    let mut pkcs8 = PREFIX.to_vec();
    pkcs8.extend_from_slice(&seed);
    pkcs8.extend_from_slice(&MIDDLE);
    pkcs8.extend_from_slice(pair.public_key().as_ref());
    DeviceKey::from_pkcs8(&pkcs8).expect("a well-formed PKCS#8 v2 document")
}

pub(crate) fn authority(seed: u8, group_key: [u8; 32]) -> LocalAuthority {
    LocalAuthority::restore(&AuthorityState {
        signing_key_pkcs8: device_key(seed).pkcs8().to_vec(),
        group_key,
        next_serial: 1,
    })
    .expect("fixed authority state")
}

fn enroll(authority: &mut LocalAuthority, key: DeviceKey, role: Role) -> Arc<Credentials> {
    let grant = authority
        .enroll(&key.enrollment_request(role, [0x3e; 16]), NOW)
        .expect("a fresh key enrolls");
    Arc::new(Credentials::from_grant(key, &grant, NOW).expect("a grant just issued"))
}

/// The fuzzed responder: the car, with the config picked by `selector`.
fn server(car: &Arc<Credentials>, tickets: &Arc<TicketKey>, selector: u8) -> ServerHandshake {
    ServerHandshake::new(
        car.clone(),
        tickets.clone(),
        SERVER_NONCE,
        &config_for(selector),
    )
}

/// The hints a responder reads from a record: [`HINTS`] slices of
/// [`HINT_LEN`] bytes, zeros where the record is short (as
/// `hints_from_alpn` leaves a missing hint).
fn hints_of(record: &[u8]) -> [Hint; HINTS] {
    let mut hints = [[0; HINT_LEN]; HINTS];
    for (hint, chunk) in hints.iter_mut().zip(record.chunks(HINT_LEN)) {
        hint[..chunk.len()].copy_from_slice(chunk);
    }
    hints
}

/// Drives two cores against each other until neither has output: the
/// hints answered, the sealed `ServerAuth` given to a full handshake's
/// initiator (a resuming one does not read it), then frames of stream 0.
fn drive(
    client: &mut ClientHandshake,
    server: &mut ServerHandshake,
    now: u64,
    resuming: bool,
) -> Flights {
    let mut flights = Flights::default();
    let hints = client.hints().concat();
    let sealed = server
        .answer_hints(&hints_of(&hints), &PIN, &ANSWER_ENTROPY, now)
        .expect("a fresh responder answers hints");
    server.set_exporter(EXPORTER);
    flights.to_server.push(hints);
    if !resuming {
        let _ = client.handle_server_auth(&sealed, &PIN, &EXPORTER, now);
        flights.to_client.push(sealed);
    }
    loop {
        let mut progressed = false;
        while let Some(bytes) = next_transmit(|| client.poll_output(), &mut flights.ticket) {
            let _ = server.handle_message(&bytes, now);
            flights.to_server.push(bytes);
            progressed = true;
        }
        while let Some(bytes) = next_transmit(|| server.poll_output(), &mut flights.ticket) {
            let _ = client.handle_message(&bytes, now);
            flights.to_client.push(bytes);
            progressed = true;
        }
        if !progressed {
            return flights;
        }
    }
}

/// Polls past events (keeping a ticket) to the next frame to send.
fn next_transmit(
    mut poll: impl FnMut() -> Output,
    ticket: &mut Option<ResumptionTicket>,
) -> Option<Vec<u8>> {
    loop {
        match poll() {
            Output::Transmit(bytes) => return Some(bytes),
            Output::Event(Event::Ticket(t)) => *ticket = Some(t),
            Output::Event(Event::Authenticated(_)) => {}
            Output::Pending => return None,
        }
    }
}

// ---------------------------------------------------------- input helpers

/// Splits off one record: 2 bytes big-endian length, then that many bytes
/// (fewer if the input ends first). Returns the record and the rest.
fn take_record(data: &[u8]) -> (&[u8], &[u8]) {
    let [hi, lo, rest @ ..] = data else {
        return (data, &[]);
    };
    rest.split_at(usize::from(u16::from_be_bytes([*hi, *lo])).min(rest.len()))
}

/// Every record in `data`.
fn records(mut data: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        if data.is_empty() {
            return None;
        }
        let (record, rest) = take_record(data);
        data = rest;
        Some(record)
    })
}

/// Encodes `message` as one record (the inverse of [`take_record`]).
fn record(message: &[u8]) -> Vec<u8> {
    let len = u16::try_from(message.len()).expect("seed messages are small");
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(message);
    out
}

/// A decoded message must re-encode to bytes that decode to the same
/// encoding (prost's canonical form is a fixed point).
fn assert_reencodes<M: Message + Default>(message: &M) {
    let bytes = message.encode_to_vec();
    assert_eq!(message.encoded_len(), bytes.len());
    let again = M::decode(bytes.as_slice()).expect("a re-encoded message decodes");
    assert_eq!(again.encode_to_vec(), bytes, "re-encoding is not stable");
}

// ----------------------------------------------------------------- targets

/// `envelope`: an [`Envelope`] as either side receives it, then the phone's
/// response parsing (signal values, command status, receipt signature under
/// the fixture car's key).
pub fn envelope(data: &[u8]) {
    let Ok(envelope) = Envelope::decode(data) else {
        return;
    };
    assert_reencodes(&envelope);
    if let Err(e) = client::signal_values(&envelope) {
        let _ = e.code();
    }
    if let Ok(status) = client::command_status(&envelope)
        && let Some(receipt) = &status.receipt
        && let Ok(body) = client::verify_receipt(&fixture().car.key().public_key(), receipt)
    {
        assert_reencodes(&body);
    }
}

/// `frame`: a [`FrameDecoder`] fed the stream in chunks, and a
/// [`FrameSplitter`] cutting the same chunks. Each must give the same frames
/// and error as a one-shot parse of the whole stream, never a payload over
/// the limit, and stay failed once it has failed.
pub fn frame(data: &[u8]) {
    let [hi, lo, chunking, stream @ ..] = data else {
        return;
    };
    let limit = match u16::from_be_bytes([*hi, *lo]) {
        u16::MAX => MAX_FRAME_BYTES,
        n => usize::from(n),
    };
    let (expected, expected_error, leftover) = parse_frames(stream, limit);
    let mut decoder = FrameDecoder::new(limit);
    let mut frames = Vec::new();
    let mut error: Option<FrameError> = None;
    let mut rng = u32::from(*chunking) | 0x5a00;
    let mut offset = 0;
    while offset < stream.len() {
        let len = match *chunking {
            0 => stream.len(),
            1 => decoder.wants(),
            n => {
                rng ^= rng << 13;
                rng ^= rng >> 17;
                rng ^= rng << 5;
                (rng % u32::from(n)) as usize + 1
            }
        }
        .min(stream.len() - offset);
        decoder.handle_bytes(&stream[offset..offset + len]);
        offset += len;
        loop {
            match decoder.poll_frame() {
                Ok(Some(frame)) => {
                    assert!(error.is_none(), "a frame after an error");
                    assert!(frame.len() <= limit, "frame over the limit");
                    frames.push(frame);
                }
                Ok(None) => {
                    assert!(error.is_none(), "an error did not stick");
                    break;
                }
                Err(e) => {
                    assert!(error.is_none_or(|first| first == e), "the error changed");
                    error = Some(e);
                    break;
                }
            }
        }
        assert!(decoder.wants() >= 1);
    }
    assert_eq!(frames, expected);
    assert_eq!(error, expected_error);
    let finish = match leftover {
        0 => Ok(()),
        buffered => Err(FrameError::Truncated { buffered }),
    };
    if error.is_none() {
        assert_eq!(decoder.finish(), finish);
    }
    split_frames(
        stream,
        limit,
        *chunking,
        (&expected, &expected_error, &finish),
    );
}

/// The [`FrameSplitter`] half of [`frame`]: cut in the same chunks, its
/// payload pieces put together give the same frames, error and end.
fn split_frames(
    stream: &[u8],
    limit: usize,
    chunking: u8,
    (expected, expected_error, finish): (&[Vec<u8>], &Option<FrameError>, &Result<(), FrameError>),
) {
    let mut splitter = FrameSplitter::new(limit);
    let (mut frames, mut current) = (Vec::new(), Vec::new());
    let mut error = None;
    let mut rng = u32::from(chunking) | 0x5a00;
    let mut offset = 0;
    'stream: while offset < stream.len() {
        let len = match chunking {
            0 => stream.len(),
            1 => splitter.wants(),
            n => {
                rng ^= rng << 13;
                rng ^= rng >> 17;
                rng ^= rng << 5;
                (rng % u32::from(n)) as usize + 1
            }
        }
        .min(stream.len() - offset);
        let mut chunk = &stream[offset..offset + len];
        offset += len;
        while !chunk.is_empty() {
            let (n, piece) = match splitter.split(chunk) {
                Ok(cut) => cut,
                Err(e) => {
                    assert_eq!(
                        splitter.split(chunk),
                        Err(e.clone()),
                        "the error did not stick"
                    );
                    error = Some(e);
                    break 'stream;
                }
            };
            assert!((1..=chunk.len()).contains(&n), "cut {n} of {}", chunk.len());
            match piece {
                Piece::Header { ends_frame } => {
                    assert!(n <= 4, "a header of {n} bytes");
                    if ends_frame {
                        frames.push(Vec::new());
                    }
                }
                Piece::Payload { ends_frame } => {
                    current.extend_from_slice(&chunk[..n]);
                    assert!(current.len() <= limit, "payload over the limit");
                    if ends_frame {
                        assert_eq!(splitter.announced(), None);
                        frames.push(std::mem::take(&mut current));
                    }
                }
            }
            chunk = &chunk[n..];
        }
        assert!(splitter.wants() >= 1);
    }
    assert_eq!(frames, expected, "the splitter cut other frames");
    assert_eq!(&error, expected_error, "the splitter failed otherwise");
    if error.is_none() {
        assert_eq!(&splitter.finish(), finish, "the splitter ended otherwise");
    }
}

/// The frames of a whole stream, the error that stops it, and how many
/// bytes of an unfinished frame are left.
fn parse_frames(mut stream: &[u8], limit: usize) -> (Vec<Vec<u8>>, Option<FrameError>, usize) {
    let mut frames = Vec::new();
    while let [a, b, c, d, rest @ ..] = stream {
        let announced = u32::from_be_bytes([*a, *b, *c, *d]) as usize;
        if announced > limit {
            return (frames, Some(FrameError::TooLarge { announced, limit }), 0);
        }
        let Some(payload) = rest.get(..announced) else {
            break;
        };
        frames.push(payload.to_vec());
        stream = &rest[announced..];
    }
    (frames, None, stream.len())
}

/// The time picked by a selector's low 2 bits: the fixture's issue time,
/// before every certificate's `not_before`, after tickets issued at [`NOW`]
/// expired, after every certificate expired.
fn now_for(selector: u8) -> u64 {
    match selector & 3 {
        0 => NOW,
        1 => NOW - 3600,
        2 => NOW + u64::from(TICKET_LIFETIME_S) + 1,
        _ => NOW + CERTIFICATE_VALIDITY_S + 1,
    }
}

/// The version range picked by a selector's low 2 bits (0: the default).
fn config_for(selector: u8) -> HandshakeConfig {
    let (min_version, max_version) = match selector & 3 {
        0 => (2, 2),
        1 => (1, 2),
        2 => (1, 1),
        _ => (0, u32::MAX),
    };
    HandshakeConfig {
        min_version,
        max_version,
        ..HandshakeConfig::default()
    }
}

/// [`decode_message`], checking that what decodes re-encodes stably.
fn decode_handshake(bytes: &[u8]) -> Result<Msg, HandshakeError> {
    let decoded = decode_message(bytes);
    if let Ok(message) = &decoded {
        assert_reencodes(&HandshakeMessage {
            message: Some(message.clone()),
        });
    }
    decoded
}

fn assert_valid_at(certificate: &VerifiedCertificate, now: u64) {
    assert!(
        certificate.not_before <= now && now <= certificate.not_after,
        "authenticated a peer outside its certificate's validity"
    );
}

/// `handshake_server`: the car's responder fed the initiator's hints (the
/// first record), then, once it knows the exporter, the frames of stream 0
/// (the other records).
///
/// Selector bits 0-1 pick `now` (see `now_for`), bits 2-3 the responder's
/// version range (`config_for`); the fixture's seeds use selector 0. Any
/// hints get an answer of [`SEALED_SERVER_AUTH_LEN`] bytes (R3: the same
/// for everyone); hints it did not recognise admit nobody by a full
/// handshake. A failed responder must queue exactly one small `Refuse`, and
/// a finished one must refuse everything.
pub fn handshake_server(data: &[u8]) {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    let f = fixture();
    let now = now_for(selector);
    let mut server = server(&f.car, &f.tickets, selector >> 2);
    let mut messages = records(input);
    let hints = hints_of(messages.next().unwrap_or_default());
    let sealed = server
        .answer_hints(&hints, &PIN, &ANSWER_ENTROPY, now)
        .expect("answering hints never fails on the peer's input");
    assert_eq!(
        sealed.len(),
        SEALED_SERVER_AUTH_LEN,
        "R3: one length for all"
    );
    assert!(server.has_answered_hello());
    assert!(matches!(server.poll_output(), Output::Pending));
    let admitted = server.proven();
    assert_eq!(admitted != Proven::Nothing, server.matched_hint().is_some());
    if let Some(hint) = server.matched_hint() {
        assert!(hints.contains(hint), "matched a hint it was not offered");
    }
    let cert = f.car.certificate_message();
    assert!(
        !sealed.windows(cert.body.len()).any(|w| w == cert.body),
        "R3: the certificate travels sealed"
    );
    let mut finished = false;
    let mut exporter_set = false;
    for (i, message) in messages.enumerate() {
        let decoded = decode_handshake(message);
        // SPEC §5.8: a first frame that is an early ResumeHello goes to the
        // early entry, as the driver routes it; the exporter comes after.
        let early = i == 0 && matches!(&decoded, Ok(Msg::ResumeHello(h)) if h.early);
        if !early && !exporter_set {
            server.set_exporter(EXPORTER);
            exporter_set = true;
        }
        let result = if early {
            server.handle_early_message(message, now)
        } else {
            server.handle_message(message, now)
        };
        if early && result.is_ok() {
            assert!(
                drain_server(&mut server, now, admitted),
                "early: authenticated"
            );
            server.set_exporter(EXPORTER);
            exporter_set = true;
            let Output::Transmit(accept) = server.poll_output() else {
                panic!("no Accept once the exporter is known");
            };
            assert!(matches!(decode_message(&accept), Ok(Msg::Accept(_))));
            assert!(matches!(server.poll_output(), Output::Pending));
            finished = true;
            continue;
        }
        if finished {
            assert_eq!(result, Err(HandshakeError::Finished));
            assert!(matches!(server.poll_output(), Output::Pending));
            continue;
        }
        if let Err(error) = result {
            if let Err(decode_error) = decoded {
                assert_eq!(error, decode_error);
            }
            let Output::Transmit(refusal) = server.poll_output() else {
                panic!("no Refuse queued after {error}");
            };
            assert!(matches!(decode_message(&refusal), Ok(Msg::Refuse(_))));
            assert!(refusal.len() < 16, "a Refuse says nothing more");
            assert!(matches!(server.poll_output(), Output::Pending));
            assert_eq!(server.proven(), Proven::Nothing, "a failure proves nothing");
            finished = true;
            continue;
        }
        assert!(decoded.is_ok());
        finished = drain_server(&mut server, now, admitted);
    }
}

/// Drains the responder; whether it authenticated its peer. A peer whose
/// hints it did not recognise can only have resumed (R3).
fn drain_server(server: &mut ServerHandshake, now: u64, admitted: Proven) -> bool {
    let mut authenticated = false;
    for _ in 0..MAX_OUTPUTS {
        match server.poll_output() {
            Output::Transmit(bytes) => {
                assert!(matches!(decode_message(&bytes), Ok(Msg::Accept(_))));
            }
            Output::Event(Event::Authenticated(peer)) => {
                assert_valid_at(&peer.certificate, now);
                assert!(
                    peer.resumed || admitted != Proven::Nothing,
                    "R3: a full handshake without a recognised hint"
                );
                authenticated = true;
            }
            Output::Event(Event::Ticket(_)) => panic!("a responder got a ticket"),
            Output::Pending => return authenticated,
        }
    }
    panic!("the responder never stops producing output");
}

/// `handshake_client`: the phone's initiator fed the responder's messages:
/// in a full handshake the first record is the sealed `ServerAuth` (its
/// 0.5-RTT data), the others frames of stream 0; a resuming initiator reads
/// no sealed answer, so every record is a frame.
///
/// Selector bits 0-1 pick `now` (see `now_for`); bit 2 resumes with the
/// fixture's ticket instead of a full handshake; bits 3-4 pick the
/// initiator's version range (`config_for`). An error is final.
pub fn handshake_client(data: &[u8]) {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    let f = fixture();
    let now = now_for(selector);
    let resuming = selector & 4 != 0;
    let config = config_for(selector >> 3);
    let mut client = if resuming {
        ClientHandshake::resume(f.phone.clone(), EXPORTER, RESUME_NONCE, &f.ticket)
    } else {
        ClientHandshake::new(f.phone.clone(), CLIENT_ENTROPY, &config)
            .expect("a phone holds the group key")
    };
    drain_client(&mut client, now, &config);
    let mut messages = records(input);
    if !resuming {
        let sealed = messages.next().unwrap_or_default();
        match client.handle_server_auth(sealed, &PIN, &EXPORTER, now) {
            Err(_) => {
                assert!(client.is_finished(), "an error is final");
                assert!(matches!(client.poll_output(), Output::Pending));
            }
            Ok(()) => {
                assert_eq!(sealed.len(), SEALED_SERVER_AUTH_LEN);
                let Output::Transmit(client_auth) = client.poll_output() else {
                    panic!("an opened ServerAuth is answered with a ClientAuth");
                };
                assert!(matches!(
                    decode_message(&client_auth),
                    Ok(Msg::ClientAuth(_))
                ));
                drain_client(&mut client, now, &config);
            }
        }
    }
    for message in messages {
        let decoded = decode_handshake(message);
        let was_finished = client.is_finished();
        match client.handle_message(message, now) {
            Err(error) => {
                if let Err(decode_error) = &decoded {
                    assert_eq!(&error, decode_error);
                }
                if let Ok(Msg::Refuse(refuse)) = &decoded {
                    assert_eq!(
                        error,
                        HandshakeError::Refused(
                            RefuseReason::try_from(refuse.reason)
                                .unwrap_or(RefuseReason::Unspecified)
                        )
                    );
                }
                assert!(client.is_finished(), "an error is final");
                assert!(matches!(client.poll_output(), Output::Pending));
            }
            Ok(()) => {
                assert!(!was_finished, "a finished initiator took a message");
                assert!(decoded.is_ok());
                drain_client(&mut client, now, &config);
            }
        }
    }
}

fn drain_client(client: &mut ClientHandshake, now: u64, config: &HandshakeConfig) {
    for _ in 0..MAX_OUTPUTS {
        match client.poll_output() {
            Output::Transmit(bytes) => assert!(matches!(
                decode_message(&bytes),
                Ok(Msg::ResumeHello(_) | Msg::ClientAuth(_))
            )),
            Output::Event(Event::Authenticated(peer)) => {
                if !peer.resumed {
                    assert_valid_at(&peer.certificate, now);
                    assert!(
                        (config.min_version..=config.max_version).contains(&peer.version),
                        "a version outside the range offered"
                    );
                }
                assert!(peer.certificate.role.holds_group_key());
            }
            Output::Event(Event::Ticket(ticket)) => assert!(ticket.not_after >= now),
            Output::Pending => return,
        }
    }
    panic!("the initiator never stops producing output");
}

/// `discovery_token`: an mDNS instance label (lossy UTF-8, as a string
/// arrives from mdns-sd) parsed and resolved against the fixture account's
/// discovery key and another account's.
pub fn discovery_token(data: &[u8]) {
    let label = String::from_utf8_lossy(data);
    let Ok(token) = DiscoveryToken::parse(&label) else {
        return;
    };
    assert_eq!(token.label(), label);
    assert_eq!(DiscoveryToken::parse(token.label()).as_ref(), Ok(&token));
    let f = fixture();
    if let Some(index) = f.resolver.resolve(&token) {
        let key = f.discovery_keys.get(index).expect("index of a key held");
        assert_eq!(DiscoveryToken::mint(key, *token.nonce()), token);
    }
}

/// `discovery_txt`: TXT RDATA (length-prefixed `key=value` strings) split
/// into properties as mdns-sd 0.21 does, but keeping repeated keys, then
/// [`parse_txt`]. An accepted record is exactly one `v=<digits>`.
pub fn discovery_txt(data: &[u8]) {
    let properties = txt_rdata_properties(data);
    let parsed = parse_txt(properties.iter().map(|(k, v)| (k.as_str(), v.as_deref())));
    if let Ok(version) = parsed {
        let [(key, Some(value))] = properties.as_slice() else {
            panic!("accepted {properties:?}");
        };
        assert_eq!(key, TXT_VERSION_KEY);
        assert!(value.iter().all(u8::is_ascii_digit));
        let text = std::str::from_utf8(value).expect("digits are UTF-8");
        assert_eq!(text.parse::<u64>().ok(), Some(u64::from(version)));
    }
}

/// mdns-sd's `decode_txt`: a zero length or one past the end stops; the key
/// is what precedes the first `=`; a key that is not UTF-8 is dropped.
fn txt_rdata_properties(mut data: &[u8]) -> Vec<(String, Option<Vec<u8>>)> {
    let mut properties = Vec::new();
    while let Some((&len, rest)) = data.split_first() {
        let Some(string) = rest.get(..usize::from(len)).filter(|s| !s.is_empty()) else {
            break;
        };
        data = &rest[string.len()..];
        let (key, value) = match string.iter().position(|&b| b == b'=') {
            Some(at) => (&string[..at], Some(string[at + 1..].to_vec())),
            None => (string, None),
        };
        if let Ok(key) = std::str::from_utf8(key) {
            properties.push((key.to_owned(), value));
        }
    }
    properties
}

/// `certificate`: [`decode_certificate`], then [`verify_certificate`] under
/// the fixture authority at [`NOW`], at 0 and at `u64::MAX`.
pub fn certificate(data: &[u8]) {
    let Ok(certificate) = decode_certificate(data) else {
        return;
    };
    assert!(data.len() <= MAX_CERTIFICATE_BYTES);
    assert_reencodes(&certificate);
    let authority = &fixture().authority_public_key;
    for now in [NOW, 0, u64::MAX] {
        if let Ok(verified) = verify_certificate(&certificate, authority, now) {
            assert_valid_at(&verified, now);
            assert_eq!(verified.account_key_id, AccountKeyId::of(authority));
            assert_eq!(
                VerifiedCertificate::from_body(&verified.to_body()).as_ref(),
                Ok(&verified)
            );
        }
    }
}

/// `vehicle_request`: the car's [`VehicleService`] serving a phone.
///
/// The input is a sequence of `control byte, record`; each record that
/// decodes as an [`Envelope`] is a request. Control bits 0-1 pick the stream
/// (4 streams), bit 2 calls `handle_timeout` afterwards, bit 3 closes the
/// stream afterwards, bits 4-7 advance the clock by that many seconds first.
/// Every response must go to an open stream and echo a request id sent on
/// it, and the car must not act more often than it was commanded.
pub fn vehicle_request(data: &[u8]) {
    let key = DeviceKey::from_pkcs8(fixture().car.key().pkcs8()).expect("the fixture key");
    let mut car = VehicleService::new(
        Config::default(),
        key,
        SimulatedVehicle::new(),
        MemoryReceiptLog::new(),
    )
    .expect("an empty memory log");
    let phone = PeerInfo::new(Role::Phone);
    let mut open: BTreeMap<StreamId, BTreeSet<u64>> = BTreeMap::new();
    let mut commands = 0;
    let mut now_ms = 0;
    let mut rest = data;
    while let Some((&control, tail)) = rest.split_first() {
        let (message, tail) = take_record(tail);
        rest = tail;
        let stream = StreamId(u64::from(control & 3));
        now_ms += u64::from(control >> 4) * 1000;
        if let Ok(request) = Envelope::decode(message) {
            if let Some(envelope::Body::Request(Request {
                kind: Some(request::Kind::Command(_)),
            })) = &request.body
            {
                commands += 1;
            }
            open.entry(stream).or_default().insert(request.request_id);
            car.handle_request(stream, phone, &request, now_ms);
            drain_vehicle(&mut car, &open);
        }
        if control & 4 != 0 {
            car.handle_timeout(now_ms);
            drain_vehicle(&mut car, &open);
        }
        if control & 8 != 0 {
            car.handle_stream_closed(stream);
            open.remove(&stream);
            drain_vehicle(&mut car, &open);
        }
        assert!(car.backend().executions().total() <= commands);
    }
}

fn drain_vehicle(
    car: &mut VehicleService<SimulatedVehicle, MemoryReceiptLog>,
    open: &BTreeMap<StreamId, BTreeSet<u64>>,
) {
    for _ in 0..MAX_OUTPUTS {
        match car.poll_output() {
            tether_control::Output::Transmit(t) => {
                let sent = open.get(&t.stream).expect("a response on a closed stream");
                assert!(sent.contains(&t.envelope.request_id), "unknown request id");
                assert!(matches!(
                    t.envelope.body,
                    Some(envelope::Body::Response(_) | envelope::Body::Error(_))
                ));
            }
            tether_control::Output::Timeout(_) => return,
        }
    }
    panic!("the vehicle service never stops producing output");
}

// ------------------------------------------------------------------- seeds

/// One seed input, made by the real encoders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    /// The target it is for (a name in [`TARGETS`]).
    pub target: &'static str,
    /// The file name under `fuzz/corpus/<target>/`: `seed-` and a description.
    pub file_name: String,
    /// The input.
    pub bytes: Vec<u8>,
}

/// The seed corpus: real messages from the encoders and the cores, driven
/// with the fixture's fixed keys, plus edge cases. Deterministic, so the
/// committed files can be checked against it.
pub fn seeds() -> Vec<Seed> {
    let mut seeds = Vec::new();
    let mut add = |target: &'static str, name: &str, bytes: Vec<u8>| {
        seeds.push(Seed {
            target,
            file_name: format!("seed-{name}"),
            bytes,
        });
    };
    let f = fixture();

    // Requests and the car's real responses to them.
    let lock = client::command(3, &idempotency_key(0x0a), 0, client::lock());
    let requests = [
        ("get_all", client::get_signals(1, &[])),
        ("subscribe_locks", client::subscribe(2, &DOOR_LOCKS)),
        ("lock", lock.clone()),
        ("ping", ping(4, b"hello")),
    ];
    for (name, request) in &requests {
        add(
            "envelope",
            &format!("request_{name}"),
            request.encode_to_vec(),
        );
    }
    let responses = vehicle_responses(&[(StreamId(0), Role::Phone, &lock)]);
    for (i, response) in responses.iter().enumerate() {
        add(
            "envelope",
            &format!("lock_response_{i}"),
            response.encode_to_vec(),
        );
    }
    let denied = vehicle_responses(&[(StreamId(0), Role::Device, &requests[0].1)]);
    add("envelope", "error_permission", denied[0].encode_to_vec());
    add("envelope", "empty", Vec::new());

    // Frames of those envelopes.
    let mut stream: Vec<u8> = requests
        .iter()
        .flat_map(|(_, r)| encode_frame(&r.encode_to_vec()))
        .collect();
    stream.extend(encode_frame(&[]));
    for (name, chunking) in [("one_chunk", 0), ("wants", 1), ("chunks_of_1_to_7", 7)] {
        add(
            "frame",
            &format!("envelopes_{name}"),
            frame_input(0xffff, chunking, &stream),
        );
    }
    let mut oversized = 17u32.to_be_bytes().to_vec();
    oversized.extend([0; 17]);
    add("frame", "too_large", frame_input(16, 3, &oversized));
    add(
        "frame",
        "truncated",
        frame_input(0xffff, 0, &stream[..stream.len() - 3]),
    );
    add(
        "frame",
        "zero_limit",
        frame_input(0, 1, &[0, 0, 0, 0, 0, 0, 0, 1, 9]),
    );

    // Handshakes. A stranger from another account; a responder that
    // answers version 1 only; a phone accepting 1..=2.
    let mut other_authority = authority(0xb0, [0x48; 32]);
    let stranger = enroll(&mut other_authority, device_key(0xb2), Role::Phone);
    let stranger_flights = handshake_flights(&stranger, 0, 0);
    let v1_flights = handshake_flights(&f.phone, 0, 2);
    let v1_2_flights = handshake_flights(&f.phone, 1, 0);
    // A phone that adopted a rotation the car has not seen: its first hint
    // is under the new key, the second under the car's (the previous).
    let rotated_flights = {
        let mut authority = authority(0xa0, GROUP_KEY);
        let phone = enroll(&mut authority, device_key(0xa3), Role::Phone);
        let new_key = [0x49; 32];
        let list = authority
            .rotate_to(
                None,
                &[device_key(0xa4).public_key()],
                &tether_identity::GroupKey::from_bytes(&new_key).expect("32 bytes"),
                NOW,
            )
            .expect("a fixed rotation");
        phone
            .adopt(&list, Some(&new_key))
            .expect("the list of our authority");
        handshake_flights(&phone, 0, 0)
    };
    let hints = &f.full.to_server[0];
    let client_auth = &f.full.to_server[1];
    let resume_hints = &f.resumed.to_server[0];
    let resume_hello = &f.resumed.to_server[1];
    let mut tampered_client_auth = client_auth.clone();
    if let Some(last) = tampered_client_auth.last_mut() {
        *last ^= 1;
    }
    // Only the second hint survives: a responder on the old epoch's view.
    let mut second_hint_only = vec![0; HINT_LEN];
    second_hint_only.extend_from_slice(&hints[HINT_LEN..]);
    let none = Vec::new();
    let server = |selector: u8, messages: &[&Vec<u8>]| {
        let mut input = vec![selector];
        messages.iter().for_each(|m| input.extend(record(m)));
        input
    };
    // SPEC §5.8: the same ticket, in an early ResumeHello.
    let early_hello = match ClientHandshake::resume_early(f.phone.clone(), RESUME_NONCE, &f.ticket)
        .poll_output()
    {
        Output::Transmit(bytes) => bytes,
        _ => Vec::new(),
    };
    let mut early_tampered = early_hello.clone();
    if let Some(last) = early_tampered.last_mut() {
        *last ^= 1;
    }
    let server_seeds = [
        ("full", server(0, &[hints, client_auth])),
        ("resume_early", server(0, &[resume_hints, &early_hello])),
        (
            "resume_early_then_more",
            server(0, &[resume_hints, &early_hello, client_auth]),
        ),
        (
            "resume_early_tampered",
            server(0, &[resume_hints, &early_tampered]),
        ),
        ("full_versions_1_2", server(1 << 2, &[hints, client_auth])),
        ("full_certificate_expired", server(3, &[hints, client_auth])),
        ("after_done", server(0, &[hints, client_auth, client_auth])),
        ("resume", server(0, &[resume_hints, resume_hello])),
        (
            "resume_after_member_hints",
            server(0, &[hints, resume_hello]),
        ),
        (
            "resume_before_not_before",
            server(1, &[resume_hints, resume_hello]),
        ),
        (
            "resume_ticket_expired",
            server(2, &[resume_hints, resume_hello]),
        ),
        (
            "not_a_member",
            server(0, &[&stranger_flights.to_server[0], client_auth]),
        ),
        ("no_hints", server(0, &[&none, client_auth])),
        (
            "second_hint_only",
            server(0, &[&second_hint_only, client_auth]),
        ),
        (
            "second_hint_after_rotation",
            server(
                0,
                &[&rotated_flights.to_server[0], &rotated_flights.to_server[1]],
            ),
        ),
        ("hints_only", server(0, &[hints])),
        ("version_1_responder", server(2 << 2, &[hints, client_auth])),
        (
            "client_auth_tampered",
            server(0, &[hints, &tampered_client_auth]),
        ),
        ("client_auth_as_hints", server(0, &[client_auth])),
        ("garbage", server(0, &[hints, &vec![0xff; 8]])),
        ("empty_message", server(0, &[hints, &Vec::new()])),
    ];
    for (name, input) in server_seeds {
        add("handshake_server", name, input);
    }
    let sealed = &f.full.to_client[0];
    let accept = &f.full.to_client[1];
    let refuse = HandshakeMessage {
        message: Some(Msg::Refuse(tether_proto::v1::Refuse {
            reason: RefuseReason::NotAccepted as i32,
        })),
    }
    .encode_to_vec();
    let mut tampered_sealed = sealed.clone();
    if let Some(byte) = tampered_sealed.get_mut(20) {
        *byte ^= 1;
    }
    let client_seeds = [
        ("full", server(0, &[sealed, accept])),
        ("full_not_yet_valid", server(1, &[sealed, accept])),
        ("full_certificate_expired", server(3, &[sealed, accept])),
        ("after_done", server(0, &[sealed, accept, accept])),
        (
            "full_versions_1_2",
            server(
                1 << 3,
                &[&v1_2_flights.to_client[0], &v1_2_flights.to_client[1]],
            ),
        ),
        (
            "version_1_responder",
            server(0, &[&v1_flights.to_client[0]]),
        ),
        (
            "version_1_accepted",
            server(1 << 3, &[&v1_flights.to_client[0], accept]),
        ),
        ("refused", server(0, &[sealed, &refuse])),
        ("look_alike", server(0, &[&stranger_flights.to_client[0]])),
        ("sealed_tampered", server(0, &[&tampered_sealed, accept])),
        (
            "sealed_truncated",
            server(0, &[&sealed[..sealed.len() - 1].to_vec()]),
        ),
        ("accept_first", server(0, &[accept])),
        ("resume", server(4, &[&f.resumed.to_client[0]])),
        ("resume_refused", server(4, &[&refuse])),
    ];
    for (name, input) in client_seeds {
        add("handshake_client", name, input);
    }

    // Discovery.
    let ours = DiscoveryToken::mint(&f.discovery_keys[1], [0x11; 8]);
    let theirs = DiscoveryToken::mint(&f.discovery_keys[0], [0x22; 8]);
    let label = ours.label();
    let token_seeds = [
        ("ours", label.to_owned()),
        ("theirs", theirs.label().to_owned()),
        ("upper_case", label.to_uppercase()),
        ("short", label[..31].to_owned()),
        ("long", format!("{label}0")),
        ("not_hex", format!("{}g{}", &label[..5], &label[6..])),
        ("multibyte", "é".repeat(16)),
        ("empty", String::new()),
    ];
    for (name, text) in token_seeds {
        add("discovery_token", name, text.into_bytes());
    }
    let advertised: Vec<String> =
        tether_discovery::token::txt_properties(tether_discovery::PROTOCOL_VERSION)
            .into_iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect();
    add("discovery_txt", "advertised", txt_rdata(&advertised));
    let txt_seeds: [(&str, &[&[u8]]); 10] = [
        ("max_version", &[b"v=4294967295"]),
        ("no_value", &[b"v"]),
        ("empty_value", &[b"v="]),
        ("two_versions", &[b"v=1", b"v=2"]),
        ("extra_key", &[b"name=car", b"v=1"]),
        ("too_long", &[b"v=00000000001"]),
        ("overflow", &[b"v=4294967296"]),
        ("non_utf8_key", &[b"\xff=1", b"v=1"]),
        ("upper_case_key", &[b"V=1"]),
        ("none", &[]),
    ];
    for (name, strings) in txt_seeds {
        add("discovery_txt", name, txt_rdata(strings));
    }
    add(
        "discovery_txt",
        "zero_length_stops",
        b"\x00\x03v=1".to_vec(),
    );
    add("discovery_txt", "past_the_end", b"\x09v=1".to_vec());

    // Certificates.
    let mut authority = authority(0xa0, GROUP_KEY);
    let lamp = enroll(&mut authority, device_key(0xa3), Role::Device);
    let expired = authority
        .issue(
            &device_key(0xa4).enrollment_request(Role::Watch, [0x3e; 16]),
            NOW - 100,
            NOW - 10,
        )
        .expect("an explicit window")
        .certificate
        .expect("a grant carries its certificate");
    let certificate_seeds = [
        ("car", f.car.certificate_message().encode_to_vec()),
        ("phone", f.phone.certificate_message().encode_to_vec()),
        ("device", lamp.certificate_message().encode_to_vec()),
        ("expired", expired.encode_to_vec()),
        (
            "other_account",
            stranger.certificate_message().encode_to_vec(),
        ),
        ("garbage", vec![0xff; 3]),
        ("too_large", vec![0; MAX_CERTIFICATE_BYTES + 1]),
    ];
    for (name, bytes) in certificate_seeds {
        add("certificate", name, bytes);
    }

    // Requests to the car: `control byte, record` each.
    let unlock = client::command(5, &idempotency_key(0x0a), 0, client::unlock());
    let hurried = client::command(6, &idempotency_key(0x0b), 1, client::lock());
    let bad_key = Envelope {
        idempotency_key: vec![1, 2, 3],
        ..lock.clone()
    };
    let commands = [
        ("climate", client::climate(true, Some(21.5))),
        ("window", client::window(50)),
        ("flash_honk", client::flash_honk(true, true)),
    ];
    let not_an_envelope = [0xff];
    let request = |steps: &[(u8, &[u8])]| -> Vec<u8> {
        let mut input = Vec::new();
        for (control, message) in steps {
            input.push(*control);
            input.extend(record(message));
        }
        input
    };
    let e = |envelope: &Envelope| envelope.encode_to_vec();
    let vehicle_seeds = [
        ("lock", request(&[(0x14, &e(&lock))])),
        (
            "lock_retry",
            request(&[(0x04, &e(&lock)), (0x15, &e(&lock))]),
        ),
        (
            "key_conflict",
            request(&[(0x00, &e(&lock)), (0x05, &e(&unlock))]),
        ),
        (
            "timed_out",
            request(&[(0x00, &e(&hurried)), (0x14, &not_an_envelope)]),
        ),
        ("bad_key", request(&[(0x04, &e(&bad_key))])),
        ("get_all", request(&[(0x00, &e(&requests[0].1))])),
        (
            "get_unknown",
            request(&[(0x00, &e(&client::get_signals(7, &["Vehicle.Nope"])))]),
        ),
        (
            "subscribe_then_lock",
            request(&[(0x00, &e(&requests[1].1)), (0x15, &e(&lock))]),
        ),
        (
            "subscribe_then_close",
            request(&[(0x00, &e(&requests[1].1)), (0x1c, &[])]),
        ),
        ("ping", request(&[(0x00, &e(&requests[3].1))])),
        ("not_a_request", request(&[(0x00, &[])])),
    ];
    for (name, input) in vehicle_seeds {
        add("vehicle_request", name, input);
    }
    for (i, (name, command)) in commands.into_iter().enumerate() {
        let key = idempotency_key(0x20 + u8::try_from(i).expect("a few commands"));
        add(
            "vehicle_request",
            name,
            request(&[(0x14, &e(&client::command(8, &key, 0, command)))]),
        );
    }
    pairing::seeds(&mut add);
    devices::seeds(&mut add);
    share::seeds(&mut add);
    revocation::seeds(&mut add);
    automation::seeds(&mut add);
    automation_state::seeds(&mut add);
    relay::seeds(&mut add);
    mailbox::seeds(&mut add);
    seeds
}

const DOOR_LOCKS: [&str; 4] = tether_control::signals::DOOR_IS_LOCKED;

fn idempotency_key(byte: u8) -> client::IdempotencyKey {
    client::IdempotencyKey::from_bytes(&[byte; 16]).expect("16 bytes")
}

fn ping(request_id: u64, payload: &[u8]) -> Envelope {
    Envelope {
        request_id,
        body: Some(envelope::Body::Request(Request {
            kind: Some(request::Kind::Ping(tether_proto::v1::Ping {
                payload: payload.to_vec(),
            })),
        })),
        ..Envelope::default()
    }
}

/// TXT RDATA: each string prefixed with its length.
fn txt_rdata<S: AsRef<[u8]>>(strings: &[S]) -> Vec<u8> {
    let mut rdata = Vec::new();
    for s in strings {
        let s = s.as_ref();
        rdata.push(u8::try_from(s.len()).expect("a TXT string is at most 255 bytes"));
        rdata.extend_from_slice(s);
    }
    rdata
}

fn frame_input(limit: u16, chunking: u8, stream: &[u8]) -> Vec<u8> {
    let mut input = limit.to_be_bytes().to_vec();
    input.push(chunking);
    input.extend_from_slice(stream);
    input
}

/// A full handshake of `phone` (version range `client_config`) with the
/// fixture car (`server_config`), at [`NOW`].
fn handshake_flights(phone: &Arc<Credentials>, client_config: u8, server_config: u8) -> Flights {
    let f = fixture();
    let mut client =
        ClientHandshake::new(phone.clone(), CLIENT_ENTROPY, &config_for(client_config))
            .expect("a phone holds the group key");
    drive(
        &mut client,
        &mut server(&f.car, &f.tickets, server_config),
        NOW,
        false,
    )
}

/// What the fixture car answers to `requests`, running commands at once.
fn vehicle_responses(requests: &[(StreamId, Role, &Envelope)]) -> Vec<Envelope> {
    let key = DeviceKey::from_pkcs8(fixture().car.key().pkcs8()).expect("the fixture key");
    let mut car = VehicleService::new(
        Config::default(),
        key,
        SimulatedVehicle::new(),
        MemoryReceiptLog::new(),
    )
    .expect("an empty memory log");
    let mut responses = Vec::new();
    for (stream, role, request) in requests {
        car.handle_request(*stream, PeerInfo::new(*role), request, 0);
        car.handle_timeout(1);
        while let tether_control::Output::Transmit(t) = car.poll_output() {
            responses.push(t.envelope);
        }
    }
    responses
}
