//! The datagram envelope (SPEC §19.3): what one MQTT publish carries.
//!
//! ```text
//! envelope = version (1 byte, = 1)
//!         || flags   (1 byte: bit 0 = a reply id follows; other bits 0)
//!         || [reply id (16 bytes), when bit 0 is set]
//!         || one QUIC datagram (1..=MAX_DATAGRAM_BYTES bytes)
//! ```
//!
//! It lives in the payload, not in MQTT 5 properties, so that the same bytes
//! work over MQTT 3.1.1 brokers. The decoder is strict: every byte that is
//! not understood is an error, never ignored.

use thiserror::Error;

use crate::topic::{TOPIC_ID_LEN, TopicId};

/// The envelope version this crate writes and accepts.
pub const ENVELOPE_VERSION: u8 = 1;
/// Flag: a reply id follows the flags byte.
pub const FLAG_REPLY: u8 = 0x01;
/// Largest QUIC datagram carried (quinn's default UDP payload limit, 1472,
/// with room to spare).
pub const MAX_DATAGRAM_BYTES: usize = 1500;
/// Bytes of the header with a reply id.
pub const MAX_HEADER_BYTES: usize = 2 + TOPIC_ID_LEN;
/// Largest envelope.
pub const MAX_ENVELOPE_BYTES: usize = MAX_HEADER_BYTES + MAX_DATAGRAM_BYTES;

/// A decoded envelope, borrowing the datagram from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// Where the receiver sends its answers: set by an initiator on
    /// publishes to a rendezvous topic, absent on a responder's answers.
    pub reply: Option<TopicId>,
    /// One QUIC datagram.
    pub datagram: &'a [u8],
}

/// Bytes that are not an envelope of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum EnvelopeError {
    /// Shorter than the fixed header.
    #[error("envelope shorter than its header")]
    Truncated,
    /// A version this crate does not speak.
    #[error("unsupported envelope version {0}")]
    UnsupportedVersion(u8),
    /// Flags other than [`FLAG_REPLY`] are set.
    #[error("unknown envelope flags {0:#04x}")]
    UnknownFlags(u8),
    /// No datagram after the header.
    #[error("envelope carries no datagram")]
    EmptyDatagram,
    /// The datagram is over [`MAX_DATAGRAM_BYTES`].
    #[error("datagram of {0} bytes is over the limit")]
    DatagramTooLarge(usize),
}

/// Decodes an envelope received from a broker (untrusted bytes).
pub fn decode(bytes: &[u8]) -> Result<Envelope<'_>, EnvelopeError> {
    let [version, flags, rest @ ..] = bytes else {
        return Err(EnvelopeError::Truncated);
    };
    if *version != ENVELOPE_VERSION {
        return Err(EnvelopeError::UnsupportedVersion(*version));
    }
    if flags & !FLAG_REPLY != 0 {
        return Err(EnvelopeError::UnknownFlags(*flags));
    }
    let (reply, datagram) = if flags & FLAG_REPLY != 0 {
        let (id, datagram) = rest
            .split_first_chunk::<TOPIC_ID_LEN>()
            .ok_or(EnvelopeError::Truncated)?;
        (Some(TopicId(*id)), datagram)
    } else {
        (None, rest)
    };
    if datagram.is_empty() {
        return Err(EnvelopeError::EmptyDatagram);
    }
    if datagram.len() > MAX_DATAGRAM_BYTES {
        return Err(EnvelopeError::DatagramTooLarge(datagram.len()));
    }
    Ok(Envelope { reply, datagram })
}

/// Encodes an envelope. The sender checks its own limits first: an empty
/// or oversized datagram is refused and nothing is written.
pub fn encode(reply: Option<&TopicId>, datagram: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
    if datagram.is_empty() {
        return Err(EnvelopeError::EmptyDatagram);
    }
    if datagram.len() > MAX_DATAGRAM_BYTES {
        return Err(EnvelopeError::DatagramTooLarge(datagram.len()));
    }
    let mut out = Vec::with_capacity(MAX_HEADER_BYTES + datagram.len());
    out.push(ENVELOPE_VERSION);
    match reply {
        Some(id) => {
            out.push(FLAG_REPLY);
            out.extend_from_slice(&id.0);
        }
        None => out.push(0),
    }
    out.extend_from_slice(datagram);
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn envelopes_round_trip() {
        let id = TopicId([9; 16]);
        let with = encode(Some(&id), b"quic").unwrap();
        assert_eq!(with.len(), 2 + 16 + 4);
        assert_eq!(
            decode(&with),
            Ok(Envelope {
                reply: Some(id),
                datagram: b"quic"
            })
        );
        let without = encode(None, b"q").unwrap();
        assert_eq!(without, [1, 0, b'q']);
        assert_eq!(decode(&without).unwrap().reply, None);
        let big = vec![0u8; MAX_DATAGRAM_BYTES];
        assert_eq!(
            decode(&encode(Some(&id), &big).unwrap())
                .unwrap()
                .datagram
                .len(),
            MAX_DATAGRAM_BYTES
        );
    }

    #[test]
    fn malformed_envelopes_are_typed_errors() {
        assert_eq!(decode(&[]), Err(EnvelopeError::Truncated));
        assert_eq!(decode(&[1]), Err(EnvelopeError::Truncated));
        assert_eq!(
            decode(&[2, 0, 1]),
            Err(EnvelopeError::UnsupportedVersion(2))
        );
        assert_eq!(decode(&[1, 2, 1]), Err(EnvelopeError::UnknownFlags(2)));
        assert_eq!(
            decode(&[1, 0x81, 1]),
            Err(EnvelopeError::UnknownFlags(0x81))
        );
        assert_eq!(decode(&[1, 0]), Err(EnvelopeError::EmptyDatagram));
        assert_eq!(decode(&[1, 1, 0, 0, 0]), Err(EnvelopeError::Truncated));
        assert_eq!(
            decode(&[1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(EnvelopeError::EmptyDatagram)
        );
        let mut over = vec![1, 0];
        over.resize(2 + MAX_DATAGRAM_BYTES + 1, 0);
        assert_eq!(
            decode(&over),
            Err(EnvelopeError::DatagramTooLarge(MAX_DATAGRAM_BYTES + 1))
        );
        assert_eq!(encode(None, b""), Err(EnvelopeError::EmptyDatagram));
        assert_eq!(
            encode(None, &over),
            Err(EnvelopeError::DatagramTooLarge(over.len()))
        );
    }
}
