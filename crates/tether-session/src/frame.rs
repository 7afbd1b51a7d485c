//! Length-prefixed framing (SPEC §6). Sans-IO: bytes in, frames out.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of
//! protobuf (or raw bytes, in a request body, SPEC §6.2). The length is
//! checked against the limit *before* any payload is buffered, so an
//! oversized frame costs the receiver 4 bytes of memory.
//!
//! Two readers apply the same rules: [`FrameDecoder`] gathers each frame in
//! a buffer of its own, and [`FrameSplitter`] only says which received bytes
//! are header and which are payload, so that a caller holding the received
//! buffers can pass payloads on without copying them.

use std::collections::VecDeque;

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
///
/// Each byte of payload is copied once, into the buffer of its own frame,
/// which is handed out whole (no shifting of later bytes). The header is
/// checked against the limit before any of its payload is buffered.
/// [`FrameSplitter`] cuts frames without copying them.
#[derive(Debug)]
pub struct FrameDecoder {
    limit: usize,
    /// The header of the frame being read, `header_len` bytes of it so far.
    header: [u8; FRAME_HEADER_BYTES],
    header_len: usize,
    /// The announced length, once the header is complete and checked.
    announced: Option<usize>,
    /// Payload of the frame being read.
    payload: Vec<u8>,
    /// Frames complete and not yet polled, oldest first.
    ready: VecDeque<Vec<u8>>,
    failed: Option<FrameError>,
}

impl FrameDecoder {
    /// A decoder that refuses payloads larger than `limit` bytes. A frame's
    /// buffer grows with the bytes that arrive: an announced length costs
    /// nothing until its payload is sent.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            header: [0; FRAME_HEADER_BYTES],
            header_len: 0,
            announced: None,
            payload: Vec::new(),
            ready: VecDeque::new(),
            failed: None,
        }
    }

    /// Appends received bytes.
    pub fn handle_bytes(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && self.failed.is_none() {
            let Some(announced) = self.announced else {
                let take = (FRAME_HEADER_BYTES - self.header_len).min(bytes.len());
                let (head, rest) = bytes.split_at(take);
                self.header[self.header_len..self.header_len + take].copy_from_slice(head);
                self.header_len += take;
                bytes = rest;
                if self.header_len == FRAME_HEADER_BYTES {
                    self.start_payload(bytes.len());
                }
                continue;
            };
            let take = (announced - self.payload.len()).min(bytes.len());
            let (head, rest) = bytes.split_at(take);
            self.payload.extend_from_slice(head);
            bytes = rest;
            if self.payload.len() == announced {
                self.complete();
            }
        }
    }

    /// The header is complete: check it, then prepare the payload buffer.
    fn start_payload(&mut self, available: usize) {
        let announced = u32::from_be_bytes(self.header) as usize;
        if announced > self.limit {
            self.failed = Some(FrameError::TooLarge {
                announced,
                limit: self.limit,
            });
            self.header_len = 0;
            self.payload = Vec::new();
            return;
        }
        self.announced = Some(announced);
        // Grows with what arrives: an announced length costs nothing until
        // its payload is sent.
        self.payload = Vec::with_capacity(announced.min(available));
        if announced == 0 {
            self.complete();
        }
    }

    fn complete(&mut self) {
        self.ready.push_back(std::mem::take(&mut self.payload));
        self.header_len = 0;
        self.announced = None;
    }

    /// The next complete frame's payload, if one is buffered. Frames that
    /// completed before an error are returned before it.
    #[must_use = "a decoded frame must be handled"]
    pub fn poll_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        if let Some(frame) = self.ready.pop_front() {
            return Ok(Some(frame));
        }
        match &self.failed {
            Some(e) => Err(e.clone()),
            None => Ok(None),
        }
    }

    /// Bytes needed before the next frame can complete (at least 1).
    pub fn wants(&self) -> usize {
        match self.announced {
            None => FRAME_HEADER_BYTES - self.header_len,
            Some(announced) => (announced - self.payload.len()).max(1),
        }
    }

    /// Whether nothing is buffered: no frame begun, none waiting to be
    /// polled.
    pub fn is_empty(&self) -> bool {
        self.header_len == 0 && self.ready.is_empty()
    }

    /// Declares the end of the stream: an unfinished frame is an error.
    pub fn finish(&self) -> Result<(), FrameError> {
        match self.header_len + self.payload.len() {
            0 => Ok(()),
            buffered => Err(FrameError::Truncated { buffered }),
        }
    }
}

/// What [`FrameSplitter::split`] found at the front of the bytes it was
/// given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    /// Bytes of a frame's header. `ends_frame` when they complete a header
    /// that announces an empty payload: that frame is whole.
    Header {
        /// The frame (an empty one) ends here.
        ends_frame: bool,
    },
    /// Bytes of a frame's payload. `ends_frame` when they complete it.
    Payload {
        /// The frame ends with these bytes.
        ends_frame: bool,
    },
}

/// Cuts a stream into frames without buffering payloads: the same rules
/// as [`FrameDecoder`] (the limit is checked on the header, before any
/// payload), but it only says which received bytes are header and which
/// are payload, so the caller can hand payload bytes on in the buffers
/// they arrived in.
///
/// Call [`FrameSplitter::split`] on the bytes received, drop as many bytes
/// as it consumed, and call it again on the rest; at end of stream call
/// [`FrameSplitter::finish`].
#[derive(Debug)]
pub struct FrameSplitter {
    limit: usize,
    header: [u8; FRAME_HEADER_BYTES],
    header_len: usize,
    /// Payload bytes still to come in the current frame, once its header
    /// is complete and checked.
    remaining: Option<usize>,
    /// Payload bytes of the current frame seen so far.
    payload_seen: usize,
    failed: Option<FrameError>,
}

impl FrameSplitter {
    /// A splitter that refuses payloads larger than `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            header: [0; FRAME_HEADER_BYTES],
            header_len: 0,
            remaining: None,
            payload_seen: 0,
            failed: None,
        }
    }

    /// Looks at the front of `bytes`: how many of them form the next piece
    /// (at least 1 unless `bytes` is empty), and what it is. A header
    /// announcing more than the limit is an error, and the splitter stays
    /// failed.
    pub fn split(&mut self, bytes: &[u8]) -> Result<(usize, Piece), FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if let Some(remaining) = self.remaining {
            let take = remaining.min(bytes.len());
            let ends_frame = take == remaining;
            self.payload_seen += take;
            if ends_frame {
                self.next_frame();
            } else {
                self.remaining = Some(remaining - take);
            }
            return Ok((take, Piece::Payload { ends_frame }));
        }
        let take = (FRAME_HEADER_BYTES - self.header_len).min(bytes.len());
        self.header[self.header_len..self.header_len + take].copy_from_slice(&bytes[..take]);
        self.header_len += take;
        if self.header_len < FRAME_HEADER_BYTES {
            return Ok((take, Piece::Header { ends_frame: false }));
        }
        let announced = u32::from_be_bytes(self.header) as usize;
        if announced > self.limit {
            let e = FrameError::TooLarge {
                announced,
                limit: self.limit,
            };
            self.failed = Some(e.clone());
            self.header_len = 0;
            return Err(e);
        }
        if announced == 0 {
            self.next_frame();
            return Ok((take, Piece::Header { ends_frame: true }));
        }
        self.remaining = Some(announced);
        Ok((take, Piece::Header { ends_frame: false }))
    }

    fn next_frame(&mut self) {
        self.header_len = 0;
        self.remaining = None;
        self.payload_seen = 0;
    }

    /// The payload length of the current frame, once its header is
    /// complete.
    pub fn announced(&self) -> Option<usize> {
        self.remaining.map(|r| r + self.payload_seen)
    }

    /// Bytes needed before the current frame can complete (at least 1).
    pub fn wants(&self) -> usize {
        match self.remaining {
            None => FRAME_HEADER_BYTES - self.header_len,
            Some(remaining) => remaining.max(1),
        }
    }

    /// Declares the end of the stream: an unfinished frame is an error.
    pub fn finish(&self) -> Result<(), FrameError> {
        match self.header_len + self.payload_seen {
            0 => Ok(()),
            buffered => Err(FrameError::Truncated { buffered }),
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
    fn one_chunk_of_many_frames_is_cut_whole() {
        let mut wire = encode_frame(&[1; 40]);
        wire.extend(encode_frame(b""));
        wire.extend(encode_frame(&[2; 1000]));
        wire.extend(&[0, 0]);
        {
            let mut d = FrameDecoder::new(1024);
            d.handle_bytes(&wire);
            assert_eq!(d.poll_frame(), Ok(Some(vec![1; 40])));
            assert_eq!(d.poll_frame(), Ok(Some(vec![])));
            assert_eq!(d.poll_frame(), Ok(Some(vec![2; 1000])));
            assert_eq!(d.poll_frame(), Ok(None));
            assert_eq!(d.wants(), 2);
            assert_eq!(d.finish(), Err(FrameError::Truncated { buffered: 2 }));
        }
    }

    #[test]
    fn frames_before_an_oversized_header_come_out_first() {
        let mut wire = encode_frame(b"ok");
        wire.extend((17u32).to_be_bytes());
        let mut d = FrameDecoder::new(16);
        d.handle_bytes(&wire);
        assert_eq!(d.poll_frame(), Ok(Some(b"ok".to_vec())));
        assert!(matches!(d.poll_frame(), Err(FrameError::TooLarge { .. })));
        assert_eq!(d.finish(), Ok(()));
    }

    /// Cuts `wire` fed in pieces of `step` bytes; the frames put together.
    fn split_all(wire: &[u8], step: usize, limit: usize) -> (Vec<Vec<u8>>, Option<FrameError>) {
        let mut splitter = FrameSplitter::new(limit);
        let (mut frames, mut current) = (Vec::new(), Vec::new());
        for mut chunk in wire.chunks(step) {
            while !chunk.is_empty() {
                let (n, piece) = match splitter.split(chunk) {
                    Ok(cut) => cut,
                    Err(e) => return (frames, Some(e)),
                };
                assert!(n >= 1);
                match piece {
                    Piece::Header { ends_frame: true } => frames.push(Vec::new()),
                    Piece::Header { ends_frame: false } => {}
                    Piece::Payload { ends_frame } => {
                        current.extend_from_slice(&chunk[..n]);
                        if ends_frame {
                            frames.push(std::mem::take(&mut current));
                        }
                    }
                }
                chunk = &chunk[n..];
            }
        }
        (frames, splitter.finish().err())
    }

    #[test]
    fn a_splitter_cuts_as_the_decoder_decodes() {
        let mut wire = encode_frame(b"hello");
        wire.extend(encode_frame(b""));
        wire.extend(encode_frame(&[7; 300]));
        for step in [1, 2, 3, 5, 64, 1000] {
            let (frames, error) = split_all(&wire, step, 1024);
            assert_eq!(frames, vec![b"hello".to_vec(), vec![], vec![7; 300]]);
            assert_eq!(error, None);
        }
        let (frames, error) = split_all(&wire[..wire.len() - 3], 7, 1024);
        assert_eq!(frames.len(), 2);
        assert_eq!(error, Some(FrameError::Truncated { buffered: 301 }));
        let mut oversized = encode_frame(b"ok");
        oversized.extend((17u32).to_be_bytes());
        oversized.extend([0; 17]);
        let (frames, error) = split_all(&oversized, 3, 16);
        assert_eq!(frames, vec![b"ok".to_vec()]);
        assert_eq!(
            error,
            Some(FrameError::TooLarge {
                announced: 17,
                limit: 16
            })
        );
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
