//! Firmware upgrade of a bound device, sans-IO (R15; SPEC §15).
//!
//! - [`verify_manifest`]: a manifest signed by the vendor key (Ed25519 over
//!   `tether/1 ota\0` and the manifest without its signature) names the
//!   product model, version, size and SHA-256 of the image.
//! - [`OtaSender`] (head unit): refuses to start when the vehicle battery is
//!   below [`MIN_VEHICLE_BATTERY_PERCENT`] (R15), cuts the image into chunks,
//!   keeps a window in flight, and after a disconnect resumes from the last
//!   offset the device acknowledged. It reports progress.
//! - [`OtaReceiver`] (device): checks the manifest, accepts only the next
//!   offset in order (a gap or repeat is answered with the offset it needs,
//!   which is how a resume works), keeps the image within the declared size,
//!   and installs only if the SHA-256 matches.
//!
//! Nothing here reads a clock or a socket: bytes and numbers in, bytes and
//! outcomes out.

use prost::Message;
use ring::digest::{Context, SHA256};
use ring::signature::{ED25519, UnparsedPublicKey};
use tether_proto::v1::{OtaAck, OtaChunk, OtaManifest};
use thiserror::Error;

/// Signature context of a manifest.
pub const MANIFEST_CONTEXT: &[u8] = b"tether/1 ota\0";
/// Below this vehicle battery level (percent) no upgrade starts (R15).
pub const MIN_VEHICLE_BATTERY_PERCENT: u8 = 30;
/// Bytes of image per chunk: as many as fit, with the envelope around them,
/// in one 64 KiB session frame (SPEC §6.1, §15.1), since every chunk costs
/// a request stream.
pub const CHUNK_BYTES: usize = 60 * 1024;
/// Chunks in flight before waiting for an acknowledgement (480 KiB).
pub const WINDOW_CHUNKS: u64 = 8;
/// Largest image accepted.
pub const MAX_IMAGE_BYTES: u64 = 64 * 1024 * 1024;
/// Largest encoded OTA message accepted from the wire.
pub const MAX_OTA_MESSAGE_BYTES: usize = CHUNK_BYTES + 64;

/// Why an upgrade did not go ahead.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum OtaError {
    /// The vehicle battery is too low (R15).
    #[error(
        "vehicle battery at {percent} %, below the {MIN_VEHICLE_BATTERY_PERCENT} % an upgrade needs"
    )]
    LowBattery {
        /// The level reported.
        percent: u8,
    },
    /// The manifest's signature does not verify under the vendor key.
    #[error("the image manifest is not signed by the vendor")]
    BadSignature,
    /// The manifest is for another product, or malformed.
    #[error("the manifest does not fit this device: {0}")]
    WrongManifest(&'static str),
    /// The image does not match its manifest (size or SHA-256): tampered.
    #[error("the image does not match its manifest ({0})")]
    Corrupt(&'static str),
    /// A chunk would write past the declared size.
    #[error("chunk at {offset} of {len} bytes exceeds the image size {size}")]
    Overflow {
        /// Its offset.
        offset: u64,
        /// Its length.
        len: usize,
        /// The declared size.
        size: u64,
    },
    /// Bytes from the wire do not parse.
    #[error("malformed OTA message: {0}")]
    Malformed(&'static str),
}

fn unsigned_bytes(manifest: &OtaManifest) -> Vec<u8> {
    let mut unsigned = manifest.clone();
    unsigned.signature.clear();
    let mut message = MANIFEST_CONTEXT.to_vec();
    message.extend(unsigned.encode_to_vec());
    message
}

/// The bytes a vendor signs for `manifest` (its signature field ignored).
pub fn manifest_signing_input(manifest: &OtaManifest) -> Vec<u8> {
    unsigned_bytes(manifest)
}

/// Checks the vendor's signature, the product model and the size bound.
pub fn verify_manifest(
    manifest: &OtaManifest,
    vendor_key: &[u8; 32],
    product_model: u16,
) -> Result<(), OtaError> {
    UnparsedPublicKey::new(&ED25519, vendor_key)
        .verify(&unsigned_bytes(manifest), &manifest.signature)
        .map_err(|_| OtaError::BadSignature)?;
    if manifest.product_model != u32::from(product_model) {
        return Err(OtaError::WrongManifest("another product model"));
    }
    if manifest.size == 0 || manifest.size > MAX_IMAGE_BYTES {
        return Err(OtaError::WrongManifest("size out of range"));
    }
    if manifest.sha256.len() != 32 {
        return Err(OtaError::WrongManifest("digest length"));
    }
    Ok(())
}

/// Progress of a transfer, for a progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes the device has acknowledged.
    pub acknowledged: u64,
    /// Image size.
    pub total: u64,
}

/// The head unit's side: sends chunks, follows acknowledgements.
#[derive(Debug)]
pub struct OtaSender {
    image: Vec<u8>,
    acknowledged: u64,
    sent_up_to: u64,
}

impl OtaSender {
    /// Starts sending `image` if the vehicle battery is at least
    /// [`MIN_VEHICLE_BATTERY_PERCENT`] (R15).
    pub fn start(image: Vec<u8>, vehicle_battery_percent: u8) -> Result<Self, OtaError> {
        if vehicle_battery_percent < MIN_VEHICLE_BATTERY_PERCENT {
            return Err(OtaError::LowBattery {
                percent: vehicle_battery_percent,
            });
        }
        Ok(Self {
            image,
            acknowledged: 0,
            sent_up_to: 0,
        })
    }

    /// The encoded chunks to send now: up to the window past the last
    /// acknowledgement.
    pub fn next_chunks(&mut self) -> Vec<Vec<u8>> {
        self.next_chunk_messages()
            .iter()
            .map(Message::encode_to_vec)
            .collect()
    }

    /// [`OtaSender::next_chunks`] as messages, for a transport that encodes
    /// them inside its own (a session's `Request`, SPEC §15.1): the image
    /// is copied once instead of three times.
    pub fn next_chunk_messages(&mut self) -> Vec<OtaChunk> {
        let total = self.image.len() as u64;
        let limit = self
            .acknowledged
            .saturating_add(WINDOW_CHUNKS * CHUNK_BYTES as u64)
            .min(total);
        let mut out = Vec::new();
        while self.sent_up_to < limit {
            let start = self.sent_up_to as usize;
            let end = (start + CHUNK_BYTES).min(self.image.len());
            let data = self.image.get(start..end).unwrap_or_default().to_vec();
            out.push(OtaChunk {
                offset: self.sent_up_to,
                data,
            });
            self.sent_up_to = end as u64;
        }
        out
    }

    /// Handles an acknowledgement from the device. A new one advances the
    /// window; the same one repeated while chunks are in flight means the
    /// chunk at that offset was lost, and sending resumes there.
    pub fn handle_ack(&mut self, bytes: &[u8]) -> Result<Progress, OtaError> {
        if bytes.len() > MAX_OTA_MESSAGE_BYTES {
            return Err(OtaError::Malformed("ack too long"));
        }
        let ack = OtaAck::decode(bytes).map_err(|_| OtaError::Malformed("not an OtaAck"))?;
        let total = self.image.len() as u64;
        if ack.next_offset > total {
            return Err(OtaError::Malformed("ack past the image"));
        }
        if ack.next_offset > self.acknowledged {
            self.acknowledged = ack.next_offset;
            // After a reconnect the device may be ahead of what this link
            // sent: continue from where it stands.
            self.sent_up_to = self.sent_up_to.max(ack.next_offset);
        } else if ack.next_offset == self.acknowledged && ack.next_offset < self.sent_up_to {
            // The same acknowledgement again while more is in flight: the
            // device is missing the chunk at this offset. Send from there.
            self.sent_up_to = ack.next_offset;
        } else {
            // An older acknowledgement, overtaken: nothing to do.
        }
        Ok(self.progress())
    }

    /// The link dropped: nothing past the last acknowledgement counts.
    pub fn link_lost(&mut self) {
        self.sent_up_to = self.acknowledged;
    }

    /// Progress so far.
    pub fn progress(&self) -> Progress {
        Progress {
            acknowledged: self.acknowledged,
            total: self.image.len() as u64,
        }
    }

    /// Whether the device acknowledged the whole image.
    pub fn is_done(&self) -> bool {
        self.acknowledged == self.image.len() as u64
    }
}

/// What the device's receiver says after a chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// Send this acknowledgement back.
    Ack(Vec<u8>),
    /// The whole image arrived and matches its manifest: install it; and
    /// send the final acknowledgement.
    Complete(Vec<u8>),
}

/// The device's side: stores chunks in order and checks the result.
pub struct OtaReceiver {
    size: u64,
    sha256: Vec<u8>,
    image: Vec<u8>,
    digest: Context,
}

impl std::fmt::Debug for OtaReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtaReceiver")
            .field("size", &self.size)
            .field("received", &self.image.len())
            .finish_non_exhaustive()
    }
}

impl OtaReceiver {
    /// Accepts a manifest signed by `vendor_key` for `product_model`. A
    /// receiver may be kept across a disconnect: the next chunk it needs is
    /// [`OtaReceiver::next_offset`].
    pub fn new(
        manifest: &OtaManifest,
        vendor_key: &[u8; 32],
        product_model: u16,
    ) -> Result<Self, OtaError> {
        verify_manifest(manifest, vendor_key, product_model)?;
        Ok(Self {
            size: manifest.size,
            sha256: manifest.sha256.clone(),
            // The size is bounded by MAX_IMAGE_BYTES (checked above); one
            // allocation instead of a copy at each doubling.
            image: Vec::with_capacity(usize::try_from(manifest.size).unwrap_or(0)),
            digest: Context::new(&SHA256),
        })
    }

    /// The offset of the next byte the device needs.
    pub fn next_offset(&self) -> u64 {
        self.image.len() as u64
    }

    /// The acknowledgement to send when a link (re)opens: the resume point.
    pub fn resume_ack(&self) -> Vec<u8> {
        OtaAck {
            next_offset: self.next_offset(),
        }
        .encode_to_vec()
    }

    /// Handles one chunk from the wire. A chunk at another offset than the
    /// next one is not stored; the answer names the offset needed.
    pub fn handle_chunk(&mut self, bytes: &[u8]) -> Result<Received, OtaError> {
        if bytes.len() > MAX_OTA_MESSAGE_BYTES {
            return Err(OtaError::Malformed("chunk too long"));
        }
        let chunk = OtaChunk::decode(bytes).map_err(|_| OtaError::Malformed("not an OtaChunk"))?;
        self.handle_chunk_message(&chunk)
    }

    /// [`OtaReceiver::handle_chunk`] for a chunk a transport already decoded
    /// (a session's `Request`, SPEC §15.1). Same rules, same answers.
    pub fn handle_chunk_message(&mut self, chunk: &OtaChunk) -> Result<Received, OtaError> {
        if chunk.encoded_len() > MAX_OTA_MESSAGE_BYTES {
            return Err(OtaError::Malformed("chunk too long"));
        }
        if chunk.offset == self.next_offset() && !chunk.data.is_empty() {
            let end = chunk.offset.saturating_add(chunk.data.len() as u64);
            if end > self.size {
                return Err(OtaError::Overflow {
                    offset: chunk.offset,
                    len: chunk.data.len(),
                    size: self.size,
                });
            }
            self.digest.update(&chunk.data);
            self.image.extend_from_slice(&chunk.data);
        }
        let ack = self.resume_ack();
        if self.next_offset() < self.size {
            return Ok(Received::Ack(ack));
        }
        let digest = self.digest.clone().finish();
        if digest.as_ref() != self.sha256.as_slice() {
            // Start over: a corrupt image is never installed.
            self.image.clear();
            self.digest = Context::new(&SHA256);
            return Err(OtaError::Corrupt("SHA-256 differs"));
        }
        Ok(Received::Complete(ack))
    }

    /// The verified image, once complete.
    pub fn into_image(self) -> Option<Vec<u8>> {
        (self.image.len() as u64 == self.size).then_some(self.image)
    }
}
