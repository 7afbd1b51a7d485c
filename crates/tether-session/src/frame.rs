//! Length-prefixed framing (SPEC §6). Sans-IO: bytes in, frames out.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of
//! protobuf. The length is checked against the limit *before* any payload is
//! buffered, so an oversized frame costs the receiver 4 bytes of memory.

use thiserror::Error;

/// Default limit on one frame's payload: 64 KiB.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;
/// Length of the frame header.
pub const FRAME_HEADER_BYTES: usize = 4;

/// A framing error. Both are the peer's fault.
#[derive(Debug, Error, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum FrameError {
    /// The announced payload is larger than the limit.
    #[error("frame of {announced} bytes exceeds the {limit}-byte limit")]
    TooLarge {
        /// What the header announced.
        announced: usize,
        /// The receiver's limit.
        limit: usize,
    },
    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a frame ({buffered} bytes buffered)")]
    Truncated {
        /// Bytes received of the unfinished frame.
        buffered: usize,
    },
}

/// Prefixes `payload` with its length. The caller checks the limit with
/// [`check_len`] first when the payload came from elsewhere.
pub fn encode_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAME_HEADER_BYTES + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Checks a payload against a limit before sending.
pub fn check_len(len: usize, limit: usize) -> Result<(), FrameError> {
    if len > limit {
        Err(FrameError::TooLarge {
            announced: len,
            limit,
        })
    } else {
        Ok(())
    }
}

/// Reassembles frames from arbitrary chunks.
///
/// Call [`FrameDecoder::handle_bytes`] with each chunk received, then
/// [`FrameDecoder::poll_frame`] until it returns `Ok(None)`; at end of stream
/// call [`FrameDecoder::finish`].
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    limit: usize,
    failed: Option<FrameError>,
}

impl FrameDecoder {
    /// A decoder that refuses payloads larger than `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            buf: Vec::new(),
            limit,
            failed: None,
        }
    }

    /// Appends received bytes.
    pub fn handle_bytes(&mut self, bytes: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// The next complete frame's payload, if one is buffered.
    #[must_use = "a decoded frame must be handled"]
    pub fn poll_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let Some(header) = self.buf.get(..FRAME_HEADER_BYTES) else {
            return Ok(None);
        };
        let announced = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        if announced > self.limit {
            let e = FrameError::TooLarge {
                announced,
                limit: self.limit,
            };
            self.failed = Some(e.clone());
            self.buf = Vec::new();
            return Err(e);
        }
        if self.buf.len() < FRAME_HEADER_BYTES + announced {
            return Ok(None);
        }
        let rest = self.buf.split_off(FRAME_HEADER_BYTES + announced);
        let mut frame = std::mem::replace(&mut self.buf, rest);
        frame.drain(..FRAME_HEADER_BYTES);
        Ok(Some(frame))
    }

    /// Bytes needed before the next frame can complete (at least 1).
    pub fn wants(&self) -> usize {
        match self.buf.get(..FRAME_HEADER_BYTES) {
            None => FRAME_HEADER_BYTES - self.buf.len(),
            Some(h) => {
                let announced = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
                (FRAME_HEADER_BYTES + announced)
                    .saturating_sub(self.buf.len())
                    .max(1)
            }
        }
    }

    /// Declares the end of the stream: an unfinished frame is an error.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(FrameError::Truncated {
                buffered: self.buf.len(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_reassemble_from_single_bytes() {
        let mut wire = encode_frame(b"hello");
        wire.extend(encode_frame(b""));
        wire.extend(encode_frame(&[7; 300]));
        let mut d = FrameDecoder::new(1024);
        let mut got = Vec::new();
        for b in wire {
            d.handle_bytes(&[b]);
            while let Some(f) = d.poll_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, vec![b"hello".to_vec(), vec![], vec![7; 300]]);
        d.finish().unwrap();
    }

    #[test]
    fn oversized_frame_is_refused_from_its_header() {
        let mut d = FrameDecoder::new(16);
        d.handle_bytes(&(17u32).to_be_bytes());
        assert_eq!(
            d.poll_frame(),
            Err(FrameError::TooLarge {
                announced: 17,
                limit: 16
            })
        );
        // Stays failed; buffers nothing more.
        d.handle_bytes(&[0; 100]);
        assert!(d.poll_frame().is_err());
    }

    #[test]
    fn truncated_stream_is_an_error() {
        let mut d = FrameDecoder::new(16);
        d.handle_bytes(&[0, 0, 0, 5, 1, 2]);
        assert_eq!(d.poll_frame(), Ok(None));
        assert_eq!(d.wants(), 3);
        assert_eq!(d.finish(), Err(FrameError::Truncated { buffered: 6 }));
    }
}
