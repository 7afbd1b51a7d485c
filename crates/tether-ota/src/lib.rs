//! Firmware upgrade of a bound device, sans-IO (R15; SPEC §15).
//!
//! - [`verify_manifest`]: a manifest signed by the vendor key (Ed25519 over
//!   `tether/1 ota\0` and the manifest without its signature) names the
//!   product model, version, size and SHA-256 of the image.
//! - [`OtaSender`] (head unit): refuses to start when the vehicle battery is
//!   below [`MIN_VEHICLE_BATTERY_PERCENT`] (R15), cuts the image into
//!   [`Chunk`]s (slices of the image, not copies), keeps a window in flight
//!   that opens as acknowledgements come back, and after a disconnect
//!   resumes from the last offset the device acknowledged. It reports
//!   progress.
//! - [`OtaReceiver`] (device): checks the manifest and that its version is
//!   newer than the running one ([`check_newer`]), accepts only the next
//!   offset in order (a gap or repeat is answered with the offset it needs,
//!   which is how a resume works), keeps the image within the declared size,
//!   and installs only if the SHA-256 matches.
//!
//! Nothing here reads a clock or a socket: bytes and numbers in, bytes and
//! outcomes out. How chunks travel is the transport's business (SPEC §15.1
//! sends them as the body of one request).
//!
//! # Usage
//! ```
//! # use tether_ota::{OtaReceiver, OtaSender, Received};
//! # fn demo(mut receiver: OtaReceiver, image: Vec<u8>) -> Result<(), tether_ota::OtaError> {
//! let mut sender = OtaSender::start(image, 80)?;
//! while !sender.is_done() {
//!     for chunk in sender.next_chunks() {
//!         let (Received::Ack(ack) | Received::Complete(ack)) =
//!             receiver.handle_data(chunk.offset, &chunk.data)?;
//!         sender.handle_ack(&ack)?;
//!     }
//! }
//! let image = receiver.into_image(); // Some: its SHA-256 matched
//! # Ok(())
//! # }
//! ```

use prost::Message;
use prost::bytes::Bytes;
use ring::digest::{Context, SHA256};
use ring::signature::{ED25519, UnparsedPublicKey};
use tether_proto::v1::{OtaAck, OtaManifest};
use thiserror::Error;

/// Signature context of a manifest.
pub const MANIFEST_CONTEXT: &[u8] = b"tether/1 ota\0";
/// Below this vehicle battery level (percent) no upgrade starts (R15).
pub const MIN_VEHICLE_BATTERY_PERCENT: u8 = 30;
/// Bytes of image per chunk: one frame of a request body at the default
/// frame limit (64 KiB, SPEC §6.1, §15.1).
pub const CHUNK_BYTES: usize = 64 * 1024;
/// Chunks in flight past the last acknowledgement when a transfer starts or
/// resumes (256 KiB). The window then opens by what comes back
/// acknowledged, up to [`WINDOW_CHUNKS`].
pub const INITIAL_WINDOW_CHUNKS: u64 = 4;
/// The most chunks in flight past the last acknowledgement (2 MiB).
pub const WINDOW_CHUNKS: u64 = 32;
/// Largest image accepted.
pub const MAX_IMAGE_BYTES: u64 = 64 * 1024 * 1024;
/// Largest encoded acknowledgement accepted from the wire (an `OtaAck` is
/// at most 11 bytes; the rest is room for fields a newer device adds).
pub const MAX_ACK_BYTES: usize = 64;

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
    /// The image is not newer than the firmware the device runs: a signed
    /// older image is refused, so nobody can roll a device back to a
    /// version with a known flaw.
    #[error("version {offered} is not newer than the installed {installed}")]
    Rollback {
        /// The manifest's version.
        offered: String,
        /// The version the device runs.
        installed: String,
    },
}

/// Parses a version of dot-separated decimal numbers (`2`, `1.10.3`).
fn version_numbers(version: &str) -> Option<Vec<u64>> {
    if version.is_empty() || version.len() > 64 {
        return None;
    }
    version.split('.').map(|n| n.parse().ok()).collect()
}

/// Whether `offered` is a newer version than `installed`: numbers compared
/// one by one from the left, a missing one counting as 0 (`1.2` = `1.2.0`).
/// A version that is not dot-separated decimal numbers is
/// [`OtaError::WrongManifest`]; one not newer is [`OtaError::Rollback`].
pub fn check_newer(offered: &str, installed: &str) -> Result<(), OtaError> {
    let new = version_numbers(offered).ok_or(OtaError::WrongManifest("version format"))?;
    let Some(old) = version_numbers(installed) else {
        // The running version is the device's own: if it does not parse,
        // the device cannot order versions, and refuses rather than guess.
        return Err(OtaError::WrongManifest("installed version format"));
    };
    let len = new.len().max(old.len());
    let pad = |v: &[u64]| {
        (0..len)
            .map(|i| v.get(i).copied().unwrap_or(0))
            .collect::<Vec<_>>()
    };
    if pad(&new) > pad(&old) {
        Ok(())
    } else {
        Err(OtaError::Rollback {
            offered: offered.to_owned(),
            installed: installed.to_owned(),
        })
    }
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

/// A piece of the image at its offset: a slice of the sender's image,
/// shared, not copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Where it goes in the image.
    pub offset: u64,
    /// At most [`CHUNK_BYTES`] bytes of the image from `offset`.
    pub data: Bytes,
}

/// The head unit's side: sends chunks, follows acknowledgements.
#[derive(Debug)]
pub struct OtaSender {
    image: Bytes,
    acknowledged: u64,
    sent_up_to: u64,
    /// The offset acknowledged when the current link began: the window
    /// grows with what was acknowledged since.
    link_start: u64,
}

impl OtaSender {
    /// Starts sending `image` (a `Vec<u8>` or `Bytes`, taken without a
    /// copy) if the vehicle battery is at least
    /// [`MIN_VEHICLE_BATTERY_PERCENT`] (R15).
    pub fn start(image: impl Into<Bytes>, vehicle_battery_percent: u8) -> Result<Self, OtaError> {
        if vehicle_battery_percent < MIN_VEHICLE_BATTERY_PERCENT {
            return Err(OtaError::LowBattery {
                percent: vehicle_battery_percent,
            });
        }
        Ok(Self {
            image: image.into(),
            acknowledged: 0,
            sent_up_to: 0,
            link_start: 0,
        })
    }

    /// The chunks to send now, in order, up to the window past the last
    /// acknowledgement. Each is a slice of the image.
    pub fn next_chunks(&mut self) -> Vec<Chunk> {
        let total = self.image.len() as u64;
        let limit = self.acknowledged.saturating_add(self.window()).min(total);
        let mut out = Vec::new();
        while self.sent_up_to < limit {
            let start = self.sent_up_to as usize;
            let end = (start + CHUNK_BYTES).min(self.image.len());
            out.push(Chunk {
                offset: self.sent_up_to,
                data: self.image.slice(start..end),
            });
            self.sent_up_to = end as u64;
        }
        out
    }

    /// The offset the next chunk starts at.
    pub fn next_offset(&self) -> u64 {
        self.sent_up_to
    }

    /// Bytes that may be in flight past the last acknowledgement: what
    /// this link had acknowledged so far (the window doubles each round
    /// trip, as TCP's slow start does), at least [`INITIAL_WINDOW_CHUNKS`]
    /// and at most [`WINDOW_CHUNKS`] chunks.
    pub fn window(&self) -> u64 {
        let chunk = CHUNK_BYTES as u64;
        (self.acknowledged - self.link_start)
            .clamp(INITIAL_WINDOW_CHUNKS * chunk, WINDOW_CHUNKS * chunk)
    }

    /// Handles an encoded acknowledgement from the device; see
    /// [`OtaSender::handle_ack_message`].
    pub fn handle_ack(&mut self, bytes: &[u8]) -> Result<Progress, OtaError> {
        if bytes.len() > MAX_ACK_BYTES {
            return Err(OtaError::Malformed("ack too long"));
        }
        let ack = OtaAck::decode(bytes).map_err(|_| OtaError::Malformed("not an OtaAck"))?;
        self.handle_ack_message(&ack)
    }

    /// Handles an acknowledgement from the device. A new one advances the
    /// window; the same one repeated while chunks are in flight means the
    /// chunk at that offset was lost, and sending resumes there.
    pub fn handle_ack_message(&mut self, ack: &OtaAck) -> Result<Progress, OtaError> {
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

    /// The link dropped: nothing past the last acknowledgement counts, and
    /// the window starts small again on the next link.
    pub fn link_lost(&mut self) {
        self.sent_up_to = self.acknowledged;
        self.link_start = self.acknowledged;
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

/// What the device's receiver says after a piece of data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// Send this acknowledgement back.
    Ack(Vec<u8>),
    /// The whole image arrived and matches its manifest: install it; and
    /// send the final acknowledgement.
    Complete(Vec<u8>),
}

/// The device's side: stores the image in order and checks the result.
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
    /// Accepts a manifest signed by `vendor_key` for `product_model` whose
    /// version is newer than `installed_version`, the firmware the device
    /// runs ([`check_newer`]: no rollback). A receiver may be kept across a
    /// disconnect: the next byte it needs is at [`OtaReceiver::next_offset`].
    pub fn new(
        manifest: &OtaManifest,
        vendor_key: &[u8; 32],
        product_model: u16,
        installed_version: &str,
    ) -> Result<Self, OtaError> {
        verify_manifest(manifest, vendor_key, product_model)?;
        check_newer(&manifest.version, installed_version)?;
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

    /// Handles `data`, the image from `offset` on. Data at another offset
    /// than the next one is not stored (nor is empty data); the answer
    /// names the offset needed. Data past the declared size is refused
    /// whole, and a complete image whose SHA-256 differs is discarded (the
    /// next transfer starts at 0).
    pub fn handle_data(&mut self, offset: u64, data: &[u8]) -> Result<Received, OtaError> {
        if offset == self.next_offset() && !data.is_empty() {
            let end = offset.saturating_add(data.len() as u64);
            if end > self.size {
                return Err(OtaError::Overflow {
                    offset,
                    len: data.len(),
                    size: self.size,
                });
            }
            self.digest.update(data);
            self.image.extend_from_slice(data);
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
