//! Firmware upgrade over a session (R15; SPEC §15.1): [`send_firmware`] on
//! the head unit drives a [`tether_ota::OtaSender`] over request streams, and
//! [`OtaTarget`] on the device answers them with a [`tether_ota::OtaReceiver`].
//!
//! Thin drivers: the battery gate, the manifest signature, the order of
//! bytes and the SHA-256 check are the sans-IO cores'. What lives here is
//! the transport: one request stream per chunk with a window of them in
//! flight, the reordering that concurrent streams need, and a transfer kept
//! on the device across disconnects so that a new session resumes it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::stream::{FuturesUnordered, StreamExt};
use prost::Message;
use tether_ota::{MIN_VEHICLE_BATTERY_PERCENT, OtaError, OtaReceiver, OtaSender, Received};
use tether_proto::v1::{
    Envelope, ErrorCode, OtaAck, OtaChunk, OtaFinish, OtaManifest, OtaOutcome, OtaResult, OtaStart,
    Request, Response, envelope, request, response,
};
use tether_session::quic::{
    ClientSession, IncomingRequest, Responder, ServerSession, SessionError,
};
use thiserror::Error;

/// Chunks a device holds while it waits for the one before them. Requests
/// travel on separate streams and may be read in any order; a sender that
/// keeps to its window never has more than this many ahead of a gap (the
/// session allows 64 streams at once, SPEC §6.5).
const MAX_HELD_CHUNKS: usize = 64;

/// Answers in a row that did not move the acknowledged offset before the
/// sender gives up on a device that makes no progress.
const MAX_STALLED_ANSWERS: u32 = 1024;

/// How far a transfer has come, as the device acknowledged it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OtaProgress {
    /// Bytes of the image the device has stored, in order.
    pub acknowledged: u64,
    /// The image size.
    pub total: u64,
    /// Where this call started: the device's resume point.
    pub resumed_from: u64,
}

impl OtaProgress {
    /// Acknowledged share of the image, 0.0 to 100.0.
    pub fn percent(&self) -> f64 {
        if self.total == 0 {
            return 100.0;
        }
        self.acknowledged as f64 * 100.0 / self.total as f64
    }
}

/// A completed upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtaReport {
    /// The version the device installed.
    pub version: String,
    /// The image size.
    pub total: u64,
    /// The offset the device asked for when this call started (0 for a new
    /// transfer, more after a resume).
    pub resumed_from: u64,
    /// Image bytes this call sent, resent ones included.
    pub bytes_sent: u64,
    /// Chunk requests this call sent.
    pub chunks_sent: u64,
}

/// Why [`send_firmware`] did not end with an installed image. Says whose
/// fault it is: the car's state, the image, the device, or the link.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum OtaTransferError {
    /// The vehicle battery is below [`MIN_VEHICLE_BATTERY_PERCENT`] (R15):
    /// nothing was sent (or the device refused to start). Charge and retry.
    #[error("firmware upgrade refused: {}", low_battery(.percent))]
    LowBattery {
        /// The level reported.
        percent: u8,
    },
    /// The image does not match its signed manifest: the device found
    /// another SHA-256 (and discarded what it had, so a retry starts from
    /// 0), the manifest is not signed by the vendor, or the image has
    /// another size than the manifest says.
    #[error("firmware image refused as tampered: {reason}")]
    Tampered {
        /// What did not match.
        reason: &'static str,
    },
    /// The device refused the transfer for another reason (another
    /// product's manifest, no transfer started, a chunk past the size).
    #[error("the device refused the upgrade: {}", outcome_text(.outcome))]
    Refused {
        /// The device's typed answer.
        outcome: OtaOutcome,
    },
    /// The device answered with an error envelope, e.g. `BAD_REQUEST` from
    /// a peer that serves no firmware upgrade.
    #[error("the device answered {code:?}: {message}")]
    Device {
        /// The error code (SPEC §7.1).
        code: ErrorCode,
        /// Its human text.
        message: String,
    },
    /// The session dropped mid-transfer. The device keeps what it stored:
    /// call [`send_firmware`] again on a new session to resume.
    #[error(
        "link lost with {offset} bytes acknowledged (call again on a new session to resume): {source}"
    )]
    LinkLost {
        /// Bytes the device had acknowledged when the link dropped.
        offset: u64,
        /// Why the session failed.
        #[source]
        source: SessionError,
    },
    /// The device's answer does not follow SPEC §15.1 (a bug on the device).
    #[error("the device broke the upgrade protocol: {0}")]
    Protocol(&'static str),
}

/// tether-ota's own wording of the R15 refusal.
fn low_battery(percent: &u8) -> OtaError {
    OtaError::LowBattery { percent: *percent }
}

fn outcome_text(outcome: &OtaOutcome) -> &'static str {
    match outcome {
        OtaOutcome::Installed => "installed",
        OtaOutcome::Corrupt => "the image's SHA-256 differs from its manifest",
        OtaOutcome::LowBattery => "the vehicle battery is too low",
        OtaOutcome::BadSignature => "the manifest is not signed by the vendor",
        OtaOutcome::WrongManifest => "the manifest is for another product or malformed",
        OtaOutcome::NotStarted => "no transfer is in progress",
        OtaOutcome::Overflow => "a chunk goes past the image size",
        OtaOutcome::Incomplete => "the image is not complete",
        OtaOutcome::Unspecified => "no reason given",
    }
}

/// Sends `image` to the device at the other end of `session` and has it
/// installed (R15; SPEC §15.1).
///
/// Refuses before sending anything when `battery_percent` (the vehicle
/// battery) is below [`MIN_VEHICLE_BATTERY_PERCENT`]. The device answers the
/// start with the offset it needs, so calling this again after
/// [`OtaTransferError::LinkLost`], on a new session, resumes from the last
/// offset the device stored. `progress` is called with the device's
/// acknowledgements: first at the resume point, then each time it rises,
/// last at 100 %.
pub async fn send_firmware(
    session: &ClientSession,
    manifest: &OtaManifest,
    image: Vec<u8>,
    battery_percent: u8,
    mut progress: impl FnMut(OtaProgress),
) -> Result<OtaReport, OtaTransferError> {
    let total = image.len() as u64;
    let mut sender = OtaSender::start(image, battery_percent).map_err(|e| match e {
        OtaError::LowBattery { percent } => OtaTransferError::LowBattery { percent },
        _ => OtaTransferError::Protocol("the sender refused to start"),
    })?;
    if total != manifest.size {
        return Err(OtaTransferError::Tampered {
            reason: "the image size differs from its manifest",
        });
    }
    let refusal = |result: &OtaResult| refusal(result, battery_percent);

    let start = OtaStart {
        manifest: Some(manifest.clone()),
        vehicle_battery_percent: u32::from(battery_percent),
    };
    let answer = session
        .call(request_envelope(request::Kind::OtaStart(start)))
        .await
        .map_err(|e| link_error(0, e))?;
    let resumed_from = match ota_answer(answer)? {
        OtaAnswer::Ack(ack) => ack.next_offset,
        OtaAnswer::Result(result) => return Err(refusal(&result)),
    };
    let resumed = sender
        .handle_ack(&OtaAck::encode_to_vec(&OtaAck {
            next_offset: resumed_from,
        }))
        .map_err(|_| OtaTransferError::Protocol("resume offset past the image"))?;
    let mut last = resumed.acknowledged;
    progress(OtaProgress {
        acknowledged: last,
        total,
        resumed_from,
    });

    let mut report = OtaReport {
        version: String::new(),
        total,
        resumed_from,
        bytes_sent: 0,
        chunks_sent: 0,
    };
    let mut in_flight = FuturesUnordered::new();
    let mut stalled = 0u32;
    while !sender.is_done() {
        for chunk in sender.next_chunk_messages() {
            report.bytes_sent += chunk.data.len() as u64;
            report.chunks_sent += 1;
            in_flight.push(session.call(request_envelope(request::Kind::OtaChunk(chunk))));
        }
        let Some(answer) = in_flight.next().await else {
            return Err(OtaTransferError::Protocol(
                "nothing to send, nothing in flight",
            ));
        };
        let answer = answer.map_err(|e| link_error(last, e))?;
        let ack = match ota_answer(answer)? {
            OtaAnswer::Ack(ack) => ack,
            OtaAnswer::Result(result) => return Err(refusal(&result)),
        };
        let now = sender
            .handle_ack(&ack.encode_to_vec())
            .map_err(|_| OtaTransferError::Protocol("acknowledgement past the image"))?;
        if now.acknowledged > last {
            last = now.acknowledged;
            stalled = 0;
            progress(OtaProgress {
                acknowledged: last,
                total,
                resumed_from,
            });
        } else {
            stalled += 1;
            if stalled > MAX_STALLED_ANSWERS {
                return Err(OtaTransferError::Protocol("the device stores nothing"));
            }
        }
    }
    // Answers still in flight are for chunks already acknowledged.
    drop(in_flight);

    let answer = session
        .call(request_envelope(request::Kind::OtaFinish(OtaFinish {})))
        .await
        .map_err(|e| link_error(last, e))?;
    match ota_answer(answer)? {
        OtaAnswer::Result(result) if result.outcome() == OtaOutcome::Installed => {
            report.version = result.version;
            Ok(report)
        }
        OtaAnswer::Result(result) => Err(refusal(&result)),
        OtaAnswer::Ack(_) => Err(OtaTransferError::Protocol("a finish answered by an ack")),
    }
}

fn request_envelope(kind: request::Kind) -> Envelope {
    Envelope {
        body: Some(envelope::Body::Request(Request { kind: Some(kind) })),
        ..Default::default()
    }
}

fn link_error(offset: u64, error: SessionError) -> OtaTransferError {
    match error {
        SessionError::Remote { code, message } => OtaTransferError::Device { code, message },
        source => OtaTransferError::LinkLost { offset, source },
    }
}

fn refusal(result: &OtaResult, battery_percent: u8) -> OtaTransferError {
    match result.outcome() {
        OtaOutcome::LowBattery => OtaTransferError::LowBattery {
            percent: battery_percent,
        },
        OtaOutcome::Corrupt => OtaTransferError::Tampered {
            reason: "the device found another SHA-256 than the manifest's and discarded the image",
        },
        OtaOutcome::BadSignature => OtaTransferError::Tampered {
            reason: "the manifest is not signed by the vendor",
        },
        outcome => OtaTransferError::Refused { outcome },
    }
}

enum OtaAnswer {
    Ack(OtaAck),
    Result(OtaResult),
}

fn ota_answer(envelope: Envelope) -> Result<OtaAnswer, OtaTransferError> {
    match envelope.body {
        Some(envelope::Body::Response(Response {
            kind: Some(response::Kind::OtaAck(ack)),
        })) => Ok(OtaAnswer::Ack(ack)),
        Some(envelope::Body::Response(Response {
            kind: Some(response::Kind::OtaResult(result)),
        })) => Ok(OtaAnswer::Result(result)),
        _ => Err(OtaTransferError::Protocol("not an OTA answer")),
    }
}

/// An image the device verified and installed.
#[derive(Clone, PartialEq, Eq)]
pub struct InstalledFirmware {
    /// Its manifest.
    pub manifest: OtaManifest,
    /// The image, whose SHA-256 matched the manifest's.
    pub image: FirmwareImage,
}

/// The bytes of an installed image, shared: cloning an
/// [`InstalledFirmware`] (as [`OtaTarget::installed`] does) copies no image.
#[derive(Clone, PartialEq, Eq)]
pub struct FirmwareImage(Arc<[u8]>);

impl std::ops::Deref for FirmwareImage {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for FirmwareImage {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl PartialEq<Vec<u8>> for FirmwareImage {
    fn eq(&self, other: &Vec<u8>) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<[u8]> for FirmwareImage {
    fn eq(&self, other: &[u8]) -> bool {
        *self.0 == *other
    }
}

impl std::fmt::Debug for FirmwareImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FirmwareImage({} bytes)", self.0.len())
    }
}

impl std::fmt::Debug for InstalledFirmware {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstalledFirmware")
            .field("version", &self.manifest.version)
            .field("size", &self.image.len())
            .finish_non_exhaustive()
    }
}

/// The device's side: answers firmware-upgrade requests (SPEC §15.1) with
/// an [`OtaReceiver`] for the vendor key and product model it was made with.
///
/// One transfer at a time, kept across sessions: a start with the same
/// manifest resumes it from the offset stored; a start with another
/// manifest replaces it. Cheap to clone; clones share the transfer.
#[derive(Clone)]
pub struct OtaTarget {
    inner: Arc<TargetInner>,
}

struct TargetInner {
    vendor_key: [u8; 32],
    product_model: u16,
    state: Mutex<TargetState>,
}

#[derive(Default)]
struct TargetState {
    transfer: Option<Transfer>,
    installed: Option<InstalledFirmware>,
}

struct Transfer {
    manifest: OtaManifest,
    receiver: OtaReceiver,
    /// Whether the receiver reported the image complete and matching.
    complete: bool,
    /// Chunks that arrived ahead of a gap, with where to answer them.
    held: BTreeMap<u64, HeldChunk>,
}

impl std::fmt::Debug for OtaTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtaTarget")
            .field("product_model", &self.inner.product_model)
            .field("next_offset", &self.next_offset())
            .finish_non_exhaustive()
    }
}

type HeldChunk = (OtaChunk, Responder);
type Answers = Vec<(Responder, Answer)>;

async fn send_answers(answers: Answers) {
    for (mut responder, answer) in answers {
        let sent = match answer {
            Answer::Ok(kind) => {
                let response = Envelope {
                    body: Some(envelope::Body::Response(Response { kind: Some(kind) })),
                    ..Default::default()
                };
                responder.send(&response).await
            }
            Answer::Error(code, message) => responder.send_error(code, message).await,
        };
        if sent.is_ok() {
            responder.finish();
        }
    }
}

/// What to send on one request stream.
enum Answer {
    Ok(response::Kind),
    Error(ErrorCode, &'static str),
}

fn ack(next_offset: u64) -> Answer {
    Answer::Ok(response::Kind::OtaAck(OtaAck { next_offset }))
}

fn result(outcome: OtaOutcome, next_offset: u64) -> Answer {
    Answer::Ok(response::Kind::OtaResult(OtaResult {
        outcome: outcome as i32,
        next_offset,
        version: String::new(),
    }))
}

fn outcome_of(error: &OtaError) -> OtaOutcome {
    match error {
        OtaError::LowBattery { .. } => OtaOutcome::LowBattery,
        OtaError::BadSignature => OtaOutcome::BadSignature,
        OtaError::Corrupt(_) => OtaOutcome::Corrupt,
        OtaError::Overflow { .. } => OtaOutcome::Overflow,
        _ => OtaOutcome::WrongManifest,
    }
}

impl OtaTarget {
    /// A device of `product_model` that accepts images signed by
    /// `vendor_key` (Ed25519 public key).
    pub fn new(vendor_key: [u8; 32], product_model: u16) -> Self {
        Self {
            inner: Arc::new(TargetInner {
                vendor_key,
                product_model,
                state: Mutex::default(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, TargetState> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Bytes of the current transfer stored so far (0 when none).
    pub fn next_offset(&self) -> u64 {
        self.lock()
            .transfer
            .as_ref()
            .map_or(0, |t| t.receiver.next_offset())
    }

    /// The last image installed, if any. Cheap: the image is shared.
    pub fn installed(&self) -> Option<InstalledFirmware> {
        self.lock().installed.clone()
    }

    /// Answers every request of `session` until it closes: upgrade requests
    /// as SPEC §15.1 says, anything else with `BAD_REQUEST`.
    pub async fn serve(&self, mut session: ServerSession) {
        while let Some(request) = session.next_request().await {
            if let Some(other) = self.handle(request).await {
                let mut responder = other.responder;
                let _ = responder
                    .send_error(ErrorCode::BadRequest, "not a firmware upgrade request")
                    .await;
                responder.finish();
            }
        }
    }

    /// Answers `request` if it is a firmware-upgrade request and returns
    /// `None`; gives any other request back untouched, for another service.
    pub async fn handle(&self, request: IncomingRequest) -> Option<IncomingRequest> {
        let is_ota = matches!(
            &request.envelope.body,
            Some(envelope::Body::Request(Request {
                kind: Some(
                    request::Kind::OtaStart(_)
                        | request::Kind::OtaChunk(_)
                        | request::Kind::OtaFinish(_)
                ),
            }))
        );
        if !is_ota {
            return Some(request);
        }
        let IncomingRequest {
            envelope,
            responder,
        } = request;
        match envelope.body {
            Some(envelope::Body::Request(Request {
                kind: Some(request::Kind::OtaStart(start)),
            })) => send_answers(vec![(responder, self.start(start))]).await,
            Some(envelope::Body::Request(Request {
                kind: Some(request::Kind::OtaChunk(chunk)),
            })) => {
                let mut current = Some((chunk, responder));
                while let Some((chunk, responder)) = current.take() {
                    let (answers, ready) = self.chunk(chunk, responder);
                    // Each answer goes out before the next held chunk is
                    // stored, so the sender's window moves on at once.
                    send_answers(answers).await;
                    current = ready;
                    // Storing a chunk hashes it: let the runtime drain the
                    // socket in between, or a burst of held chunks delays
                    // it and datagrams are dropped (SPEC §15.1).
                    tokio::task::yield_now().await;
                }
            }
            _ => send_answers(vec![(responder, self.finish())]).await,
        }
        None
    }

    fn start(&self, start: OtaStart) -> Answer {
        // The head unit checks the battery before it starts; the device
        // checks again, so a head unit that skips the gate still cannot
        // upgrade on a low battery (R15).
        if start.vehicle_battery_percent < u32::from(MIN_VEHICLE_BATTERY_PERCENT) {
            return result(OtaOutcome::LowBattery, 0);
        }
        let Some(manifest) = start.manifest else {
            return Answer::Error(ErrorCode::BadRequest, "no manifest");
        };
        let mut state = self.lock();
        if state.transfer.is_none()
            && state
                .installed
                .as_ref()
                .is_some_and(|i| i.manifest == manifest)
        {
            // Already installed (the answer to the finish was lost): nothing
            // to send; the finish that follows answers INSTALLED again.
            return ack(manifest.size);
        }
        if let Some(transfer) = state.transfer.as_mut().filter(|t| t.manifest == manifest) {
            // A resume: answers for the old link's held chunks cannot
            // arrive anymore; the sender resends from the offset stored.
            transfer.held.clear();
            return ack(transfer.receiver.next_offset());
        }
        match OtaReceiver::new(&manifest, &self.inner.vendor_key, self.inner.product_model) {
            Ok(receiver) => {
                state.transfer = Some(Transfer {
                    manifest,
                    receiver,
                    complete: false,
                    held: BTreeMap::new(),
                });
                ack(0)
            }
            Err(e) => result(outcome_of(&e), 0),
        }
    }

    /// Stores one chunk if it is the next one, holds it if it is ahead.
    /// Returns the answers to send and the held chunk that is next now.
    fn chunk(&self, chunk: OtaChunk, responder: Responder) -> (Answers, Option<HeldChunk>) {
        let mut state = self.lock();
        let Some(transfer) = state.transfer.as_mut() else {
            return (vec![(responder, result(OtaOutcome::NotStarted, 0))], None);
        };
        let next = transfer.receiver.next_offset();
        if chunk.offset > next && !transfer.complete {
            if transfer.held.len() < MAX_HELD_CHUNKS && !transfer.held.contains_key(&chunk.offset) {
                transfer.held.insert(chunk.offset, (chunk, responder));
                return (Vec::new(), None);
            }
            // Too far ahead: say what is needed; the sender resends from it.
            return (vec![(responder, ack(next))], None);
        }
        // Each chunk is answered with the offset reached right after it, so
        // answers never repeat one another (a repeat would tell the sender
        // a chunk was lost).
        let answer = match transfer.receiver.handle_chunk_message(&chunk) {
            Ok(Received::Ack(_)) => ack(transfer.receiver.next_offset()),
            Ok(Received::Complete(_)) => {
                transfer.complete = true;
                ack(transfer.receiver.next_offset())
            }
            Err(OtaError::Malformed(why)) => Answer::Error(ErrorCode::BadRequest, why),
            Err(e) => {
                // A corrupt image was discarded (the receiver starts over);
                // an overflow stores nothing. Held chunks get the same
                // answer.
                let outcome = outcome_of(&e);
                let next = transfer.receiver.next_offset();
                let held = std::mem::take(&mut transfer.held);
                let answers = std::iter::once(responder)
                    .chain(held.into_values().map(|(_, r)| r))
                    .map(|r| (r, result(outcome, next)))
                    .collect();
                return (answers, None);
            }
        };
        let mut answers = vec![(responder, answer)];
        let next = transfer.receiver.next_offset();
        // Anything held below the new offset is a repeat: answer it.
        while let Some(entry) = transfer.held.first_entry() {
            if *entry.key() >= next {
                break;
            }
            let (_, responder) = entry.remove();
            answers.push((responder, ack(next)));
        }
        (answers, transfer.held.remove(&next))
    }

    fn finish(&self) -> Answer {
        let mut state = self.lock();
        let Some(transfer) = state.transfer.take() else {
            return match &state.installed {
                Some(installed) => installed_answer(&installed.manifest),
                None => result(OtaOutcome::NotStarted, 0),
            };
        };
        if !transfer.complete {
            let next = transfer.receiver.next_offset();
            state.transfer = Some(transfer);
            return result(OtaOutcome::Incomplete, next);
        }
        let Transfer {
            manifest, receiver, ..
        } = transfer;
        let Some(image) = receiver.into_image() else {
            return result(OtaOutcome::Incomplete, 0);
        };
        let answer = installed_answer(&manifest);
        state.installed = Some(InstalledFirmware {
            manifest,
            image: FirmwareImage(image.into()),
        });
        answer
    }
}

fn installed_answer(manifest: &OtaManifest) -> Answer {
    Answer::Ok(response::Kind::OtaResult(OtaResult {
        outcome: OtaOutcome::Installed as i32,
        next_offset: manifest.size,
        version: manifest.version.clone(),
    }))
}
