//! Firmware upgrade over a session (R15; SPEC §15.1): [`send_firmware`] on
//! the head unit drives a [`tether_ota::OtaSender`] over a request whose
//! body is the image, and [`OtaTarget`] on the device answers it with a
//! [`tether_ota::OtaReceiver`].
//!
//! Thin drivers: the battery gate, the manifest signature, the order of
//! bytes and the SHA-256 check are the sans-IO cores'. What lives here is
//! the transport: one request stream carries the image as its body with a
//! window of it in flight, the device stores and hashes each frame as it
//! arrives and acknowledges it, and a transfer is kept on the device across
//! disconnects so that a new session resumes it.

use std::sync::{Arc, Mutex, MutexGuard};

use prost::bytes::Bytes;
use tether_ota::{MIN_VEHICLE_BATTERY_PERCENT, OtaError, OtaReceiver, OtaSender, Received};
use tether_proto::v1::{
    Envelope, ErrorCode, OtaAck, OtaFinish, OtaManifest, OtaOutcome, OtaResult, OtaStart,
    OtaStream, Request, Response, envelope, request, response,
};
use tether_session::FrameError;
use tether_session::quic::{
    ClientSession, IncomingRequest, RequestBody, Responder, ServerSession, SessionError,
};
use thiserror::Error;

/// Answers in a row that did not move the acknowledged offset (streams
/// the device ended early count too) before the sender gives up on a
/// device that makes no progress.
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
    /// Chunks (body frames of at most [`tether_ota::CHUNK_BYTES`]) this
    /// call sent.
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
        OtaOutcome::Rollback => "the image is not newer than the device's firmware",
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
        .handle_ack_message(&OtaAck {
            next_offset: resumed_from,
        })
        .map_err(|_| OtaTransferError::Protocol("resume offset past the image"))?;
    let last = resumed.acknowledged;
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
    let mut run = Run {
        sender,
        report: &mut report,
        last,
        stalled: 0,
        progress: &mut progress,
        battery_percent,
    };
    while !run.sender.is_done() {
        // One stream carries the rest of the image. A device that ends it
        // early (it stands at another offset) gets a new one from there.
        run.stream_image(session).await?;
    }
    let last = run.last;

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

/// The state of one [`send_firmware`] call across its streams.
struct Run<'a, P> {
    sender: OtaSender,
    report: &'a mut OtaReport,
    /// The offset the device last acknowledged.
    last: u64,
    stalled: u32,
    progress: &'a mut P,
    battery_percent: u8,
}

impl<P: FnMut(OtaProgress)> Run<'_, P> {
    /// Sends the image from the last acknowledged offset as the body of one
    /// `OtaStream` request, keeping at most the window past the device's
    /// acknowledgements, until the device acknowledged everything or ended
    /// the stream.
    async fn stream_image(&mut self, session: &ClientSession) -> Result<(), OtaTransferError> {
        // Nothing past the last acknowledgement counts on a new stream.
        self.sender.link_lost();
        let offset = self.sender.progress().acknowledged;
        let stream = request_envelope(request::Kind::OtaStream(OtaStream { offset }));
        let (writer, mut answers) = session
            .request_with_body(stream)
            .await
            .map_err(|e| link_error(self.last, e))?;
        let mut body = Some(writer);
        while !self.sender.is_done() {
            if let Some(writer) = body.as_mut() {
                for chunk in self.sender.next_chunks() {
                    let len = chunk.data.len() as u64;
                    if writer.send(chunk.data).await.is_err() {
                        // The device stopped reading (its answer says why)
                        // or the link dropped (reading says so).
                        body = None;
                        break;
                    }
                    self.report.bytes_sent += len;
                    self.report.chunks_sent += 1;
                }
                if self.sender.next_offset() == self.report.total
                    && let Some(writer) = body.take()
                {
                    writer.finish();
                }
            }
            let answer = match answers.next().await {
                Ok(Some(answer)) => answer,
                // The device ended the stream before the end of the image.
                Ok(None) => return self.stall(),
                Err(e) => return Err(link_error(self.last, e)),
            };
            let ack = match ota_answer(answer)? {
                OtaAnswer::Ack(ack) => ack,
                OtaAnswer::Result(result) => return Err(refusal(&result, self.battery_percent)),
            };
            let now = self
                .sender
                .handle_ack_message(&ack)
                .map_err(|_| OtaTransferError::Protocol("acknowledgement past the image"))?;
            if now.acknowledged > self.last {
                self.last = now.acknowledged;
                self.stalled = 0;
                (self.progress)(OtaProgress {
                    acknowledged: self.last,
                    total: self.report.total,
                    resumed_from: self.report.resumed_from,
                });
            } else {
                self.stall()?;
            }
        }
        Ok(())
    }

    fn stall(&mut self) -> Result<(), OtaTransferError> {
        self.stalled += 1;
        if self.stalled > MAX_STALLED_ANSWERS {
            return Err(OtaTransferError::Protocol("the device stores nothing"));
        }
        Ok(())
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
pub struct FirmwareImage(Bytes);

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

struct TargetState {
    transfer: Option<Transfer>,
    installed: Option<InstalledFirmware>,
    /// The firmware version the device runs: an image must be newer
    /// (no rollback, SPEC §15).
    running: String,
    /// Counts starts; a stream stores only while its transfer's
    /// `generation` is the one it began with.
    starts: u64,
}

struct Transfer {
    manifest: OtaManifest,
    receiver: OtaReceiver,
    /// Whether the receiver reported the image complete and matching.
    complete: bool,
    /// The start that opened or last resumed it: a stream of an older
    /// link stops storing once a newer start took the transfer over.
    generation: u64,
}

impl std::fmt::Debug for OtaTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtaTarget")
            .field("product_model", &self.inner.product_model)
            .field("next_offset", &self.next_offset())
            .finish_non_exhaustive()
    }
}

/// What to send on a request stream.
enum Answer {
    /// Boxed: a response kind is large, an error small.
    Ok(Box<response::Kind>),
    Error(ErrorCode, &'static str),
}

async fn send_answer(responder: &mut Responder, answer: Answer) -> Result<(), SessionError> {
    match answer {
        Answer::Ok(kind) => {
            let response = Envelope {
                body: Some(envelope::Body::Response(Response { kind: Some(*kind) })),
                ..Default::default()
            };
            responder.send(&response).await
        }
        Answer::Error(code, message) => responder.send_error(code, message).await,
    }
}

/// Sends one answer and ends the stream.
async fn answer_once(mut responder: Responder, answer: Answer) {
    if send_answer(&mut responder, answer).await.is_ok() {
        responder.finish();
    }
}

/// How an `OtaStream` begins.
enum StreamStart {
    /// Store its body under this start of the transfer.
    Store { generation: u64 },
    /// Answer this and end the stream unread.
    Refuse(Answer),
}

fn ack(next_offset: u64) -> Answer {
    Answer::Ok(Box::new(response::Kind::OtaAck(OtaAck { next_offset })))
}

fn result(outcome: OtaOutcome, next_offset: u64) -> Answer {
    Answer::Ok(Box::new(response::Kind::OtaResult(OtaResult {
        outcome: outcome as i32,
        next_offset,
        version: String::new(),
    })))
}

fn outcome_of(error: &OtaError) -> OtaOutcome {
    match error {
        OtaError::LowBattery { .. } => OtaOutcome::LowBattery,
        OtaError::BadSignature => OtaOutcome::BadSignature,
        OtaError::Corrupt(_) => OtaOutcome::Corrupt,
        OtaError::Overflow { .. } => OtaOutcome::Overflow,
        OtaError::Rollback { .. } => OtaOutcome::Rollback,
        _ => OtaOutcome::WrongManifest,
    }
}

impl OtaTarget {
    /// A device of `product_model` running firmware `running_version`
    /// that accepts images signed by `vendor_key` (Ed25519 public key) and
    /// newer than the version it runs.
    pub fn new(vendor_key: [u8; 32], product_model: u16, running_version: &str) -> Self {
        Self {
            inner: Arc::new(TargetInner {
                vendor_key,
                product_model,
                state: Mutex::new(TargetState {
                    transfer: None,
                    installed: None,
                    running: running_version.to_owned(),
                    starts: 0,
                }),
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
    /// An `OtaStream` is served on a task of its own until its body ends,
    /// so that the session's other requests do not wait for the image.
    pub async fn handle(&self, mut request: IncomingRequest) -> Option<IncomingRequest> {
        let is_ota = matches!(
            &request.envelope.body,
            Some(envelope::Body::Request(Request {
                kind: Some(
                    request::Kind::OtaStart(_)
                        | request::Kind::OtaStream(_)
                        | request::Kind::OtaFinish(_)
                ),
            }))
        );
        if !is_ota {
            return Some(request);
        }
        // A body on any other request is not read: dropped, it is stopped.
        let body = request.take_body();
        let IncomingRequest {
            envelope,
            responder,
        } = request;
        match envelope.body {
            Some(envelope::Body::Request(Request {
                kind: Some(request::Kind::OtaStart(start)),
            })) => answer_once(responder, self.start(start)).await,
            Some(envelope::Body::Request(Request {
                kind: Some(request::Kind::OtaStream(stream)),
            })) => match body {
                Some(body) => {
                    let target = self.clone();
                    tokio::spawn(async move {
                        target.receive(stream.offset, body, responder).await;
                    });
                }
                None => {
                    let answer = Answer::Error(ErrorCode::BadRequest, "an OtaStream needs a body");
                    answer_once(responder, answer).await;
                }
            },
            _ => {
                let (answer, replaced) = self.finish();
                answer_once(responder, answer).await;
                // Freeing a large image takes a while: not before the answer.
                drop(replaced);
            }
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
        state.starts += 1;
        let generation = state.starts;
        if let Some(transfer) = state.transfer.as_mut().filter(|t| t.manifest == manifest) {
            // A resume: a stream of the old link, if it is still read,
            // stores nothing more, so the offset answered stays true.
            transfer.generation = generation;
            return ack(transfer.receiver.next_offset());
        }
        match OtaReceiver::new(
            &manifest,
            &self.inner.vendor_key,
            self.inner.product_model,
            &state.running,
        ) {
            Ok(receiver) => {
                state.transfer = Some(Transfer {
                    manifest,
                    receiver,
                    complete: false,
                    generation,
                });
                ack(0)
            }
            Err(e) => result(outcome_of(&e), 0),
        }
    }

    /// Serves an `OtaStream`: the body's frames are the image from
    /// `offset` on. Each is stored (and hashed) as it arrives and answered
    /// with the offset reached (SPEC §15.1).
    async fn receive(&self, mut offset: u64, mut body: RequestBody, mut responder: Responder) {
        let generation = match self.begin_stream(offset) {
            StreamStart::Store { generation } => generation,
            // The body is dropped unread: stopped.
            StreamStart::Refuse(answer) => return answer_once(responder, answer).await,
        };
        // A frame's payload in the buffers it arrived in: stored straight
        // from them, not assembled first.
        let mut parts = Vec::new();
        loop {
            parts.clear();
            let answer = match body.next_parts(&mut parts).await {
                // Hashing a frame holds this task for some tens of
                // microseconds; QUIC goes on receiving on other threads.
                Ok(true) => self.store(generation, offset, &parts),
                Err(SessionError::Frame(FrameError::TooLarge { .. })) => Answer::Error(
                    ErrorCode::MessageTooLarge,
                    "a body frame exceeds the frame limit",
                ),
                // The end of the body; or it was abandoned, cut short, or
                // the link dropped: what was stored stays (a frame cut
                // short is not stored).
                Ok(false) | Err(_) => break,
            };
            let len: usize = parts.iter().map(Bytes::len).sum();
            offset = offset.saturating_add(len as u64);
            let goes_on = match &answer {
                // Out of step (another stream stored meanwhile): the answer
                // says where the device stands, and this stream ends.
                Answer::Ok(kind) => {
                    matches!(&**kind, response::Kind::OtaAck(a) if a.next_offset == offset)
                }
                // A refusal ends the stream.
                _ => false,
            };
            if send_answer(&mut responder, answer).await.is_err() || !goes_on {
                break;
            }
        }
        responder.finish();
        // Dropping the body stops it if it did not end.
    }

    /// Whether a stream may start at `offset`.
    fn begin_stream(&self, offset: u64) -> StreamStart {
        let state = self.lock();
        let Some(transfer) = state.transfer.as_ref() else {
            return StreamStart::Refuse(result(OtaOutcome::NotStarted, 0));
        };
        let next = transfer.receiver.next_offset();
        if offset != next {
            // The sender sends again from where the device stands.
            return StreamStart::Refuse(ack(next));
        }
        StreamStart::Store {
            generation: transfer.generation,
        }
    }

    /// Stores one frame at `offset`, given as the parts it arrived in, and
    /// says what to answer.
    fn store(&self, generation: u64, mut offset: u64, frame: &[Bytes]) -> Answer {
        let mut state = self.lock();
        let Some(transfer) = state
            .transfer
            .as_mut()
            .filter(|t| t.generation == generation)
        else {
            // A newer start took the transfer over, or a finish ended it.
            return result(OtaOutcome::NotStarted, 0);
        };
        for part in frame {
            match transfer.receiver.handle_data(offset, part) {
                Ok(Received::Ack(_)) => {}
                Ok(Received::Complete(_)) => transfer.complete = true,
                Err(OtaError::Malformed(why)) => {
                    return Answer::Error(ErrorCode::BadRequest, why);
                }
                // A corrupt image was discarded (the receiver starts over);
                // an overflow stores nothing.
                Err(e) => return result(outcome_of(&e), transfer.receiver.next_offset()),
            }
            offset = offset.saturating_add(part.len() as u64);
        }
        ack(transfer.receiver.next_offset())
    }

    /// Installs a complete transfer. Also returns the image it replaces,
    /// for the caller to drop once the answer is out.
    fn finish(&self) -> (Answer, Option<InstalledFirmware>) {
        let mut state = self.lock();
        let Some(transfer) = state.transfer.take() else {
            let answer = match &state.installed {
                Some(installed) => installed_answer(&installed.manifest),
                None => result(OtaOutcome::NotStarted, 0),
            };
            return (answer, None);
        };
        if !transfer.complete {
            let next = transfer.receiver.next_offset();
            state.transfer = Some(transfer);
            return (result(OtaOutcome::Incomplete, next), None);
        }
        let Transfer {
            manifest, receiver, ..
        } = transfer;
        let Some(image) = receiver.into_image() else {
            return (result(OtaOutcome::Incomplete, 0), None);
        };
        let answer = installed_answer(&manifest);
        state.running.clone_from(&manifest.version);
        let replaced = state.installed.replace(InstalledFirmware {
            manifest,
            // Taken over, not copied: the head unit waits for this answer.
            image: FirmwareImage(Bytes::from(image)),
        });
        (answer, replaced)
    }
}

fn installed_answer(manifest: &OtaManifest) -> Answer {
    Answer::Ok(Box::new(response::Kind::OtaResult(OtaResult {
        outcome: OtaOutcome::Installed as i32,
        next_offset: manifest.size,
        version: manifest.version.clone(),
    })))
}
