//! Frames over QUIC streams.

use prost::Message;
use prost::bytes::Bytes;
use tether_proto::v1::{Envelope, ErrorCode, envelope};

use super::SessionError;
use crate::frame::{FrameDecoder, check_len, encode_frame};

/// Largest chunk read from a stream at once.
const READ_CHUNK: usize = 16 * 1024;

/// Reads whole frames from a receive stream, enforcing a size limit before
/// buffering (an oversized frame costs 4 bytes).
pub(crate) struct FrameReader {
    recv: quinn::RecvStream,
    decoder: FrameDecoder,
}

impl FrameReader {
    /// A reader of whole frames, each buffered as its bytes arrive.
    pub(crate) fn new(recv: quinn::RecvStream, limit: usize) -> Self {
        Self {
            recv,
            decoder: FrameDecoder::new(limit),
        }
    }

    /// The stream, for a reader that goes on after the last frame read
    /// (a request body). Nothing is buffered past a frame: the reader
    /// never reads beyond the frame it decodes.
    pub(crate) fn into_recv(self) -> quinn::RecvStream {
        debug_assert!(self.decoder.is_empty(), "bytes past the frame read");
        self.recv
    }

    /// The next frame, or `None` at a clean end of stream.
    pub(crate) async fn next(&mut self) -> Result<Option<Vec<u8>>, SessionError> {
        loop {
            if let Some(frame) = self.decoder.poll_frame()? {
                return Ok(Some(frame));
            }
            let want = self.decoder.wants().min(READ_CHUNK);
            match self.recv.read_chunk(want, true).await? {
                Some(chunk) => self.decoder.handle_bytes(&chunk.bytes),
                None => {
                    self.decoder.finish()?;
                    return Ok(None);
                }
            }
        }
    }

    /// Whether the stream was opened in TLS 0-RTT early data (SPEC §5.8).
    pub(crate) fn is_0rtt(&self) -> bool {
        self.recv.is_0rtt()
    }

    /// Tells the peer we will read no more.
    pub(crate) fn stop(&mut self) {
        let _ = self.recv.stop(0u32.into());
    }
}

/// Writes one frame after checking it against `limit`.
pub(crate) async fn write_frame(
    send: &mut quinn::SendStream,
    payload: &[u8],
    limit: usize,
) -> Result<(), SessionError> {
    check_len(payload.len(), limit).map_err(|_| SessionError::MessageTooLarge {
        len: payload.len(),
        limit,
    })?;
    send.write_all(&encode_frame(payload)).await?;
    Ok(())
}

/// Writes one frame whose payload is already in a shared buffer: the
/// payload is handed to QUIC without a copy.
pub(crate) async fn write_frame_bytes(
    send: &mut quinn::SendStream,
    payload: Bytes,
    limit: usize,
) -> Result<(), SessionError> {
    check_len(payload.len(), limit).map_err(|_| SessionError::MessageTooLarge {
        len: payload.len(),
        limit,
    })?;
    let header = Bytes::copy_from_slice(&(payload.len() as u32).to_be_bytes());
    send.write_all_chunks(&mut [header, payload]).await?;
    Ok(())
}

/// An error envelope. The message is for humans and carries no identifier.
pub(crate) fn error_envelope(request_id: u64, code: ErrorCode, message: &str) -> Envelope {
    Envelope {
        request_id,
        body: Some(envelope::Body::Error(tether_proto::v1::Error {
            code: code as i32,
            message: message.to_owned(),
        })),
        ..Default::default()
    }
}

pub(crate) fn decode_envelope(frame: &[u8]) -> Result<Envelope, SessionError> {
    Envelope::decode(frame).map_err(|_| SessionError::InvalidMessage("envelope"))
}

/// Aborts a task when dropped.
#[derive(Debug)]
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Drains a handshake core's outputs: sends each transmit as one frame and
/// returns the peer if the core reported it authenticated. Tickets are
/// ignored here (the initiator collects them after returning).
pub(crate) async fn flush_handshake(
    mut poll: impl FnMut() -> crate::handshake::Output,
    send: &mut quinn::SendStream,
) -> Result<Option<crate::handshake::PeerIdentity>, SessionError> {
    use crate::handshake::{Event, MAX_HANDSHAKE_MESSAGE_BYTES, Output};
    let mut peer = None;
    loop {
        match poll() {
            Output::Transmit(bytes) => {
                write_frame(send, &bytes, MAX_HANDSHAKE_MESSAGE_BYTES).await?
            }
            Output::Event(Event::Authenticated(p)) => peer = Some(p),
            Output::Event(Event::Ticket(_)) => {}
            Output::Pending => return Ok(peer),
        }
    }
}
