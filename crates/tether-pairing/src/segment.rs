//! Segmentation and reassembly of messages over BLE GATT (R13).
//!
//! Sans-IO: bytes go in, bytes come out. Nothing here reads a clock, touches a
//! socket or a radio; the driver writes each segment as one GATT
//! characteristic write (central to peripheral) or notification (peripheral
//! to central) and hands each received value to a [`Reassembler`].
//!
//! # Wire format
//!
//! A *message* is opaque bytes (an encoded protobuf), at most
//! [`MAX_MESSAGE_BYTES`] (4096) long. It is sent as one or more *segments*;
//! one segment is one ATT value and is at most `ATT_MTU - 3` bytes (the 3-byte
//! ATT opcode and handle). The ATT MTU is anything from [`MIN_ATT_MTU`] (23,
//! the BLE default, so at least 20 bytes per segment) to [`MAX_ATT_MTU`] (517).
//!
//! ```text
//! every segment:  flags (1) | index (1) | payload ...
//! first segment:  flags (1) | index (1) | total length (2, big-endian) | payload ...
//!
//! flags:  bit 7    FIRST  this segment starts a message (its index is 0)
//!         bit 6    LAST   this segment ends the message
//!         bits 5-4 reserved, 0
//!         bits 3-0 message counter
//! ```
//!
//! - The *message counter* is 4 bits, kept per direction by the sender: it
//!   starts at 0, is the same in every segment of one message and goes up by
//!   one (modulo 16) for each message. It ties continuation segments to their
//!   FIRST segment, so that a stale segment of an earlier message is refused
//!   rather than spliced into the current one. The receiver does not enforce
//!   any order between the counters of successive messages: a sender that
//!   reconnects may start again from any value.
//! - The *index* is the position of the segment in its message: 0 for the
//!   FIRST segment, then 1, 2, … with no gap and no repeat. A message has at
//!   most 228 segments (`1 + ceil((4096 - 16) / 18)` at the smallest MTU), so
//!   the index fits in 8 bits; an index of 255 must be LAST.
//! - The *total length* (FIRST segment only) is the length of the whole
//!   message. It lets the receiver refuse an oversized message before
//!   buffering anything and reserve exactly the right amount of memory.
//! - A message that fits in one segment is a single segment with both FIRST and
//!   LAST set; the empty message is the 4-byte segment
//!   `FIRST|LAST|counter, 0, 0, 0`.
//!
//! With `room = ATT_MTU - 3`, the FIRST segment carries up to `room - 4`
//! message bytes and every following one up to `room - 2`. The [`Segmenter`]
//! fills every segment but the last one completely; the [`Reassembler`] does
//! not rely on that (it accepts any split, including empty continuation
//! segments) and checks only the rules below.
//!
//! # Receiver rules
//!
//! For each segment, in this order:
//!
//! 1. Shorter than 2 bytes, or FIRST and shorter than 4: `Truncated`.
//! 2. A reserved flag bit set: `ReservedBits`.
//! 3. FIRST: the total length above the receiver's limit is `TooLong` (nothing
//!    is buffered); an index other than 0 is `OutOfOrder`; more payload than
//!    the total length is `Overrun`. Otherwise the segment starts a new
//!    message, replacing any partial one: that is not an error (the peer may
//!    have restarted after a reconnect) but is counted
//!    ([`Reassembler::discarded`]).
//! 4. Not FIRST: with no message started, `NoMessageStarted`; a counter other
//!    than the FIRST segment's, `WrongCounter`; an index other than the next
//!    one, `OutOfOrder` (so a duplicate is refused); bytes beyond the total
//!    length, `Overrun`; a non-LAST segment with index 255, `TooManySegments`.
//! 5. LAST: the bytes received must be exactly the total length, else
//!    `LengthMismatch`; the message is then delivered.
//!
//! After any error the partial message is dropped and the receiver is idle;
//! the next FIRST segment starts afresh. The receiver never holds more than
//! its limit (at most [`MAX_MESSAGE_BYTES`]) in memory.

use thiserror::Error;

/// Largest message, in bytes, that can be segmented or reassembled.
pub const MAX_MESSAGE_BYTES: usize = 4096;
/// Smallest ATT MTU (the BLE default): 20 bytes per segment.
pub const MIN_ATT_MTU: u16 = 23;
/// Largest ATT MTU: 512-byte attribute values plus the 5-byte ATT header of
/// a prepared write (Bluetooth Core, Vol 3, Part F, §3.2.9).
pub const MAX_ATT_MTU: u16 = 517;
/// Bytes of every ATT value lost to the ATT opcode and attribute handle.
pub const ATT_HEADER_BYTES: usize = 3;
/// Bytes of the header at the start of every segment (flags, index).
pub const SEGMENT_HEADER_BYTES: usize = 2;
/// Bytes of the header of a FIRST segment (flags, index, total length).
pub const FIRST_SEGMENT_HEADER_BYTES: usize = SEGMENT_HEADER_BYTES + 2;

const FLAG_FIRST: u8 = 0x80;
const FLAG_LAST: u8 = 0x40;
const RESERVED_MASK: u8 = 0x30;
const COUNTER_MASK: u8 = 0x0f;

// The wire format depends on these: the last index of the largest message
// at the smallest MTU (its number of continuation segments) fits in 8 bits,
// and its length fits the 16-bit length field.
const _: () = {
    let room = MIN_ATT_MTU as usize - ATT_HEADER_BYTES;
    let first = room - FIRST_SEGMENT_HEADER_BYTES;
    let rest = room - SEGMENT_HEADER_BYTES;
    assert!((MAX_MESSAGE_BYTES - first).div_ceil(rest) <= u8::MAX as usize);
    assert!(MAX_MESSAGE_BYTES <= u16::MAX as usize);
};

/// A segmentation error.
///
/// [`SegmentError::InvalidMtu`] and a [`SegmentError::TooLong`] from
/// [`Segmenter::segment`] are the caller's mistakes; every error from
/// [`Reassembler::push`] is the peer's (or the link's) fault.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SegmentError {
    /// The ATT MTU is outside [`MIN_ATT_MTU`]`..=`[`MAX_ATT_MTU`].
    #[error("ATT MTU {mtu} is outside {MIN_ATT_MTU}..={MAX_ATT_MTU}")]
    InvalidMtu {
        /// The MTU given.
        mtu: u16,
    },
    /// The message is longer than the limit: handed to the segmenter, or
    /// announced by a FIRST segment.
    #[error("message of {declared} bytes exceeds the {limit}-byte limit")]
    TooLong {
        /// The message's length (given, or announced by the peer).
        declared: usize,
        /// The limit it exceeds.
        limit: usize,
    },
    /// The segment is shorter than its header.
    #[error("segment of {len} bytes is shorter than its {needed}-byte header")]
    Truncated {
        /// The segment's length.
        len: usize,
        /// The length of the header it should carry.
        needed: usize,
    },
    /// A reserved bit (5 or 4) of the flags byte is set.
    #[error("reserved flag bits set in {flags:#04x}")]
    ReservedBits {
        /// The flags byte received.
        flags: u8,
    },
    /// A continuation segment arrived while no message was being received.
    #[error("continuation segment without a first segment")]
    NoMessageStarted,
    /// A continuation segment carries another message's counter.
    #[error("segment of message {found}, expected message {expected}")]
    WrongCounter {
        /// The counter of the message being received.
        expected: u8,
        /// The counter in the segment.
        found: u8,
    },
    /// A segment's index is not the next one (lost, repeated or reordered).
    #[error("segment index {found}, expected {expected}")]
    OutOfOrder {
        /// The index expected.
        expected: u8,
        /// The index received.
        found: u8,
    },
    /// The segments carry more bytes than the announced total length.
    #[error("segments carry {received} bytes, more than the announced {declared}")]
    Overrun {
        /// The announced total length.
        declared: usize,
        /// The bytes received so far, this segment included.
        received: usize,
    },
    /// The LAST segment ends the message short of the announced length.
    #[error("message ended after {received} of the announced {declared} bytes")]
    LengthMismatch {
        /// The announced total length.
        declared: usize,
        /// The bytes received, the LAST segment included.
        received: usize,
    },
    /// Segment 255 is not LAST: no further index exists.
    #[error("segment 255 is not the last one")]
    TooManySegments,
}

/// Splits outgoing messages into segments for one direction of a GATT link.
///
/// Create it with the ATT MTU in force, call [`Segmenter::segment`] for each
/// message and send the segments in order; call [`Segmenter::set_mtu`] when
/// an MTU exchange completes.
#[derive(Debug, Clone)]
pub struct Segmenter {
    /// The ATT MTU, within `MIN_ATT_MTU..=MAX_ATT_MTU`.
    mtu: usize,
    /// The counter of the next message, 0..=15.
    counter: u8,
}

impl Segmenter {
    /// A segmenter for `mtu`; its first message has counter 0.
    ///
    /// # Errors
    ///
    /// [`SegmentError::InvalidMtu`] outside 23..=517.
    pub fn new(mtu: u16) -> Result<Self, SegmentError> {
        Ok(Self {
            mtu: checked_mtu(mtu)?,
            counter: 0,
        })
    }

    /// Changes the MTU from the next message on (an ATT MTU exchange may
    /// complete after the first messages were sent).
    ///
    /// # Errors
    ///
    /// [`SegmentError::InvalidMtu`] outside 23..=517; the MTU is unchanged.
    pub fn set_mtu(&mut self, mtu: u16) -> Result<(), SegmentError> {
        self.mtu = checked_mtu(mtu)?;
        Ok(())
    }

    /// The most bytes one segment may take: `ATT_MTU - 3`.
    pub fn max_segment_bytes(&self) -> usize {
        self.mtu.saturating_sub(ATT_HEADER_BYTES)
    }

    /// Splits `message` into segments of at most
    /// [`Segmenter::max_segment_bytes`] each, to be sent in order, and moves
    /// the counter on. The empty message is one segment.
    ///
    /// # Errors
    ///
    /// [`SegmentError::TooLong`] above [`MAX_MESSAGE_BYTES`]; the counter is
    /// not used up.
    pub fn segment(&mut self, message: &[u8]) -> Result<Vec<Vec<u8>>, SegmentError> {
        let too_long = SegmentError::TooLong {
            declared: message.len(),
            limit: MAX_MESSAGE_BYTES,
        };
        if message.len() > MAX_MESSAGE_BYTES {
            return Err(too_long);
        }
        let declared = u16::try_from(message.len()).map_err(|_| too_long)?;
        let counter = self.counter & COUNTER_MASK;
        let room = self.max_segment_bytes();
        // Both at least 16 since the MTU is at least 23; `max(1)` only keeps
        // `chunks` total should that invariant ever break.
        let first_room = room.saturating_sub(FIRST_SEGMENT_HEADER_BYTES);
        let rest_room = room.saturating_sub(SEGMENT_HEADER_BYTES).max(1);

        let (head, tail) = message.split_at(message.len().min(first_room));
        let mut segments = Vec::with_capacity(1 + tail.len().div_ceil(rest_room));

        let mut first = Vec::with_capacity(FIRST_SEGMENT_HEADER_BYTES + head.len());
        let last = if tail.is_empty() { FLAG_LAST } else { 0 };
        first.push(FLAG_FIRST | last | counter);
        first.push(0);
        first.extend_from_slice(&declared.to_be_bytes());
        first.extend_from_slice(head);
        segments.push(first);

        // The const assertion above guarantees 255 indexes are enough, so
        // `zip` never cuts the message short.
        let mut rest = (1..=u8::MAX).zip(tail.chunks(rest_room)).peekable();
        while let Some((index, chunk)) = rest.next() {
            let last = if rest.peek().is_none() { FLAG_LAST } else { 0 };
            let mut segment = Vec::with_capacity(SEGMENT_HEADER_BYTES + chunk.len());
            segment.push(last | counter);
            segment.push(index);
            segment.extend_from_slice(chunk);
            segments.push(segment);
        }

        self.counter = counter.wrapping_add(1) & COUNTER_MASK;
        Ok(segments)
    }
}

fn checked_mtu(mtu: u16) -> Result<usize, SegmentError> {
    if (MIN_ATT_MTU..=MAX_ATT_MTU).contains(&mtu) {
        Ok(usize::from(mtu))
    } else {
        Err(SegmentError::InvalidMtu { mtu })
    }
}

/// Rebuilds incoming messages from segments, for one direction of a GATT
/// link, holding at most its limit in memory.
///
/// Call [`Reassembler::push`] with each received value, in order of arrival;
/// it returns the message when a LAST segment completes one. It is usable
/// again after any error.
#[derive(Debug)]
pub struct Reassembler {
    limit: usize,
    partial: Option<Partial>,
    discarded: u64,
}

/// A message being received.
#[derive(Debug)]
struct Partial {
    counter: u8,
    next_index: u8,
    declared: usize,
    /// Pre-sized to `declared`, which is at most the limit, and never grown.
    buf: Vec<u8>,
}

/// A parsed segment header and its payload.
struct Segment<'a> {
    last: bool,
    counter: u8,
    index: u8,
    /// The total length, in a FIRST segment only.
    declared: Option<usize>,
    payload: &'a [u8],
}

impl<'a> Segment<'a> {
    fn parse(segment: &'a [u8]) -> Result<Self, SegmentError> {
        let truncated = |needed| SegmentError::Truncated {
            len: segment.len(),
            needed,
        };
        let [flags, index, rest @ ..] = segment else {
            return Err(truncated(SEGMENT_HEADER_BYTES));
        };
        if flags & RESERVED_MASK != 0 {
            return Err(SegmentError::ReservedBits { flags: *flags });
        }
        let (declared, payload) = if flags & FLAG_FIRST != 0 {
            let [high, low, payload @ ..] = rest else {
                return Err(truncated(FIRST_SEGMENT_HEADER_BYTES));
            };
            let declared = usize::from(u16::from_be_bytes([*high, *low]));
            (Some(declared), payload)
        } else {
            (None, rest)
        };
        Ok(Self {
            last: flags & FLAG_LAST != 0,
            counter: flags & COUNTER_MASK,
            index: *index,
            declared,
            payload,
        })
    }
}

impl Default for Reassembler {
    /// A reassembler with the largest limit, [`MAX_MESSAGE_BYTES`].
    fn default() -> Self {
        Self::new(MAX_MESSAGE_BYTES)
    }
}

impl Reassembler {
    /// A reassembler that refuses messages longer than `max_message_bytes`,
    /// itself clamped to [`MAX_MESSAGE_BYTES`].
    pub fn new(max_message_bytes: usize) -> Self {
        Self {
            limit: max_message_bytes.min(MAX_MESSAGE_BYTES),
            partial: None,
            discarded: 0,
        }
    }

    /// The longest message accepted.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// How many partial messages were dropped because a new FIRST segment
    /// arrived before their LAST one. Partial messages dropped on an error
    /// are not counted here: the error reported them.
    pub fn discarded(&self) -> u64 {
        self.discarded
    }

    /// Whether no message is partly received.
    pub fn is_idle(&self) -> bool {
        self.partial.is_none()
    }

    /// Takes one received segment; returns the message it completes, if any.
    ///
    /// # Errors
    ///
    /// Any breach of the receiver rules in the [module doc](self). The
    /// partial message, if any, is dropped and the reassembler is idle.
    pub fn push(&mut self, segment: &[u8]) -> Result<Option<Vec<u8>>, SegmentError> {
        // Taken out so that every early return leaves the reassembler idle.
        let partial = self.partial.take();
        let segment = Segment::parse(segment)?;
        match segment.declared {
            Some(declared) => self.start(partial.is_some(), declared, segment),
            None => self.continue_with(partial, segment),
        }
    }

    fn start(
        &mut self,
        replaces_partial: bool,
        declared: usize,
        segment: Segment<'_>,
    ) -> Result<Option<Vec<u8>>, SegmentError> {
        // Checked before anything is buffered (R13).
        if declared > self.limit {
            return Err(SegmentError::TooLong {
                declared,
                limit: self.limit,
            });
        }
        if segment.index != 0 {
            return Err(SegmentError::OutOfOrder {
                expected: 0,
                found: segment.index,
            });
        }
        let received = segment.payload.len();
        if received > declared {
            return Err(SegmentError::Overrun { declared, received });
        }
        if segment.last && received != declared {
            return Err(SegmentError::LengthMismatch { declared, received });
        }
        // Only a well-formed FIRST segment replaces a partial message; a bad
        // one drops it as an error.
        if replaces_partial {
            self.discarded = self.discarded.saturating_add(1);
        }
        if segment.last {
            return Ok(Some(segment.payload.to_vec()));
        }
        let mut buf = Vec::with_capacity(declared);
        buf.extend_from_slice(segment.payload);
        self.partial = Some(Partial {
            counter: segment.counter,
            next_index: 1,
            declared,
            buf,
        });
        Ok(None)
    }

    fn continue_with(
        &mut self,
        partial: Option<Partial>,
        segment: Segment<'_>,
    ) -> Result<Option<Vec<u8>>, SegmentError> {
        let Some(mut partial) = partial else {
            return Err(SegmentError::NoMessageStarted);
        };
        if segment.counter != partial.counter {
            return Err(SegmentError::WrongCounter {
                expected: partial.counter,
                found: segment.counter,
            });
        }
        if segment.index != partial.next_index {
            return Err(SegmentError::OutOfOrder {
                expected: partial.next_index,
                found: segment.index,
            });
        }
        let declared = partial.declared;
        let received = partial.buf.len().saturating_add(segment.payload.len());
        if received > declared {
            return Err(SegmentError::Overrun { declared, received });
        }
        if segment.last {
            if received != declared {
                return Err(SegmentError::LengthMismatch { declared, received });
            }
            partial.buf.extend_from_slice(segment.payload);
            return Ok(Some(partial.buf));
        }
        let Some(next_index) = partial.next_index.checked_add(1) else {
            return Err(SegmentError::TooManySegments);
        };
        partial.buf.extend_from_slice(segment.payload);
        partial.next_index = next_index;
        self.partial = Some(partial);
        Ok(None)
    }

    /// Bytes reserved for the partial message.
    fn buffered_capacity(&self) -> usize {
        self.partial.as_ref().map_or(0, |p| p.buf.capacity())
    }
}

/// Fuzz oracle for segmentation; panics if an invariant breaks.
///
/// Input format:
///
/// - byte 0 selects the reassembler's limit: `(byte + 1) * 16` bytes;
/// - the remaining bytes are records, each one length byte followed by that
///   many bytes (the last record takes whatever is left), pushed in order as
///   segments into that reassembler. Every completed message must be at most
///   the limit, and the reserved buffer never exceeds it.
///
/// Then, if the input has at least 2 bytes, a second oracle: a [`Segmenter`]
/// with ATT MTU `23 + byte1 % 495` segments the first `min(len, 4096)` bytes
/// of the whole input; every segment must be at most `MTU - 3` bytes, and
/// feeding them to a fresh `Reassembler::new(4096)` must give the same bytes
/// back on the LAST segment and nothing before.
#[doc(hidden)]
pub fn fuzz_reassemble(data: &[u8]) {
    let Some((&selector, mut records)) = data.split_first() else {
        return;
    };
    let limit = (usize::from(selector) + 1) * 16;
    let mut reassembler = Reassembler::new(limit);
    while let Some((&len, rest)) = records.split_first() {
        let (record, rest) = rest.split_at(usize::from(len).min(rest.len()));
        if let Ok(Some(message)) = reassembler.push(record) {
            assert!(message.len() <= limit, "message above the limit");
        }
        assert!(
            reassembler.buffered_capacity() <= limit,
            "buffer above the limit"
        );
        records = rest;
    }

    let Some(&mtu_selector) = data.get(1) else {
        return;
    };
    let mtu = MIN_ATT_MTU + u16::from(mtu_selector) % (MAX_ATT_MTU - MIN_ATT_MTU + 1);
    let Ok(mut segmenter) = Segmenter::new(mtu) else {
        panic!("MTU {mtu} is in range");
    };
    let (message, _) = data.split_at(data.len().min(MAX_MESSAGE_BYTES));
    let Ok(segments) = segmenter.segment(message) else {
        panic!("a message of at most {MAX_MESSAGE_BYTES} bytes segments");
    };
    let mut reassembler = Reassembler::new(MAX_MESSAGE_BYTES);
    let mut delivered = None;
    for segment in &segments {
        assert!(segment.len() <= usize::from(mtu) - ATT_HEADER_BYTES);
        assert!(delivered.is_none(), "message delivered before its end");
        delivered = reassembler.push(segment).ok().flatten();
    }
    assert_eq!(delivered.as_deref(), Some(message), "round trip");
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// A deterministic message whose bytes depend on their position.
    fn message(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + len) as u8).collect()
    }

    /// Feeds `segments` in order; returns the one delivered message, and
    /// fails if any segment errs or a message comes before the last segment.
    fn reassemble(reassembler: &mut Reassembler, segments: &[Vec<u8>]) -> Vec<u8> {
        let (last, init) = segments.split_last().expect("at least one segment");
        for segment in init {
            assert_eq!(reassembler.push(segment), Ok(None));
        }
        reassembler.push(last).unwrap().expect("message on LAST")
    }

    /// xorshift64: deterministic randomness for the loss simulation.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn every_mtu_round_trips_boundary_sizes_r13() {
        let mut reassembler = Reassembler::new(MAX_MESSAGE_BYTES);
        for mtu in MIN_ATT_MTU..=MAX_ATT_MTU {
            let mut segmenter = Segmenter::new(mtu).unwrap();
            let room = usize::from(mtu) - ATT_HEADER_BYTES;
            let first = room - FIRST_SEGMENT_HEADER_BYTES;
            let rest = room - SEGMENT_HEADER_BYTES;
            let sizes = [
                0,
                1,
                first - 1,
                first,
                first + 1,
                first + rest,
                first + rest + 1,
                first + 2 * rest,
                MAX_MESSAGE_BYTES - 1,
                MAX_MESSAGE_BYTES,
            ];
            for len in sizes.into_iter().filter(|&len| len <= MAX_MESSAGE_BYTES) {
                let sent = message(len);
                let segments = segmenter.segment(&sent).unwrap();
                let expected_count = 1 + len.saturating_sub(first).div_ceil(rest);
                assert_eq!(segments.len(), expected_count, "mtu {mtu} len {len}");
                assert!(segments.iter().all(|s| s.len() <= room), "mtu {mtu}");
                // Every segment but the last is full.
                let (last, init) = segments.split_last().unwrap();
                assert!(init.iter().all(|s| s.len() == room), "mtu {mtu} len {len}");
                assert!(!last.is_empty());
                assert_eq!(reassemble(&mut reassembler, &segments), sent);
                assert!(reassembler.is_idle());
            }
        }
        assert_eq!(reassembler.discarded(), 0);
    }

    #[test]
    fn largest_message_at_smallest_mtu_takes_228_segments() {
        let segments = Segmenter::new(MIN_ATT_MTU)
            .unwrap()
            .segment(&message(MAX_MESSAGE_BYTES))
            .unwrap();
        assert_eq!(segments.len(), 228);
        assert_eq!(segments.last().unwrap()[1], 227);
    }

    #[test]
    fn segments_carry_the_specified_header_bytes() {
        let sent = message(20);
        let segments = Segmenter::new(23).unwrap().segment(&sent).unwrap();
        assert_eq!(segments.len(), 2);
        let mut first = vec![0x80, 0, 0, 20];
        first.extend_from_slice(&sent[..16]);
        let mut second = vec![0x40, 1];
        second.extend_from_slice(&sent[16..]);
        assert_eq!(segments, vec![first, second]);
    }

    #[test]
    fn empty_message_is_one_first_and_last_segment_of_length_zero() {
        let mut segmenter = Segmenter::new(23).unwrap();
        let segments = segmenter.segment(&[]).unwrap();
        assert_eq!(segments, vec![vec![0xc0, 0, 0, 0]]);
        assert_eq!(Reassembler::default().push(&segments[0]), Ok(Some(vec![])));
    }

    #[test]
    fn counter_advances_per_message_and_wraps_after_15() {
        let mut segmenter = Segmenter::new(23).unwrap();
        let counters: Vec<u8> = (0..18)
            .map(|_| segmenter.segment(b"x").unwrap()[0][0] & COUNTER_MASK)
            .collect();
        let expected: Vec<u8> = (0..18).map(|i| i % 16).collect();
        assert_eq!(counters, expected);
        // Every segment of one message carries the same counter.
        let segments = segmenter.segment(&message(100)).unwrap();
        assert!(segments.iter().all(|s| s[0] & COUNTER_MASK == 2));
    }

    #[test]
    fn segmenter_refuses_a_message_above_4096_bytes_without_using_a_counter() {
        let mut segmenter = Segmenter::new(517).unwrap();
        assert_eq!(
            segmenter.segment(&message(MAX_MESSAGE_BYTES + 1)),
            Err(SegmentError::TooLong {
                declared: MAX_MESSAGE_BYTES + 1,
                limit: MAX_MESSAGE_BYTES
            })
        );
        assert_eq!(segmenter.segment(b"x").unwrap()[0][0] & COUNTER_MASK, 0);
    }

    #[test]
    fn segmenter_refuses_an_mtu_outside_23_to_517() {
        for mtu in [0, 22, 518, u16::MAX] {
            assert_eq!(
                Segmenter::new(mtu).err(),
                Some(SegmentError::InvalidMtu { mtu })
            );
        }
        let mut segmenter = Segmenter::new(23).unwrap();
        assert_eq!(
            segmenter.set_mtu(22),
            Err(SegmentError::InvalidMtu { mtu: 22 })
        );
        assert_eq!(segmenter.max_segment_bytes(), 20);
    }

    #[test]
    fn new_mtu_applies_from_the_next_message() {
        let mut segmenter = Segmenter::new(23).unwrap();
        let mut reassembler = Reassembler::default();
        let sent = message(400);
        let small = segmenter.segment(&sent).unwrap();
        segmenter.set_mtu(247).unwrap();
        assert_eq!(segmenter.max_segment_bytes(), 244);
        let large = segmenter.segment(&sent).unwrap();
        assert!(small.len() > large.len());
        assert!(large.iter().all(|s| s.len() <= 244));
        assert_eq!(reassemble(&mut reassembler, &small), sent);
        assert_eq!(reassemble(&mut reassembler, &large), sent);
    }

    #[test]
    fn segment_shorter_than_its_header_is_truncated() {
        let mut reassembler = Reassembler::default();
        assert_eq!(
            reassembler.push(&[]),
            Err(SegmentError::Truncated { len: 0, needed: 2 })
        );
        assert_eq!(
            reassembler.push(&[0x40]),
            Err(SegmentError::Truncated { len: 1, needed: 2 })
        );
        assert_eq!(
            reassembler.push(&[0x80, 0, 0]),
            Err(SegmentError::Truncated { len: 3, needed: 4 })
        );
    }

    #[test]
    fn reserved_flag_bits_are_refused() {
        let mut reassembler = Reassembler::default();
        for flags in [0xd0, 0xe0, 0xf0, 0x10] {
            assert_eq!(
                reassembler.push(&[flags, 0, 0, 0]),
                Err(SegmentError::ReservedBits { flags })
            );
        }
    }

    #[test]
    fn continuation_without_a_first_segment_is_refused() {
        let mut reassembler = Reassembler::default();
        assert_eq!(
            reassembler.push(&[0x40, 1, 9]),
            Err(SegmentError::NoMessageStarted)
        );
        assert_eq!(
            reassembler.push(&[0x00, 1, 9]),
            Err(SegmentError::NoMessageStarted)
        );
    }

    #[test]
    fn segment_of_the_previous_message_is_refused_by_its_counter() {
        let mut segmenter = Segmenter::new(23).unwrap();
        let mut reassembler = Reassembler::default();
        let old = segmenter.segment(&message(30)).unwrap();
        assert_eq!(reassemble(&mut reassembler, &old), message(30));
        let new = segmenter.segment(&message(60)).unwrap();
        assert_eq!(reassembler.push(&new[0]), Ok(None));
        // A late copy of the old message's segment 1 (same index as expected).
        assert_eq!(
            reassembler.push(&old[1]),
            Err(SegmentError::WrongCounter {
                expected: 1,
                found: 0
            })
        );
        assert!(reassembler.is_idle());
    }

    #[test]
    fn skipped_segment_is_out_of_order() {
        let segments = Segmenter::new(23).unwrap().segment(&message(60)).unwrap();
        let mut reassembler = Reassembler::default();
        assert_eq!(reassembler.push(&segments[0]), Ok(None));
        assert_eq!(
            reassembler.push(&segments[2]),
            Err(SegmentError::OutOfOrder {
                expected: 1,
                found: 2
            })
        );
    }

    #[test]
    fn duplicate_segment_is_out_of_order() {
        let segments = Segmenter::new(23).unwrap().segment(&message(60)).unwrap();
        let mut reassembler = Reassembler::default();
        assert_eq!(reassembler.push(&segments[0]), Ok(None));
        assert_eq!(reassembler.push(&segments[1]), Ok(None));
        assert_eq!(
            reassembler.push(&segments[1]),
            Err(SegmentError::OutOfOrder {
                expected: 2,
                found: 1
            })
        );
        assert!(reassembler.is_idle());
    }

    #[test]
    fn first_segment_with_a_nonzero_index_is_out_of_order() {
        let mut reassembler = Reassembler::default();
        assert_eq!(
            reassembler.push(&[0x80, 3, 0, 1, 7]),
            Err(SegmentError::OutOfOrder {
                expected: 0,
                found: 3
            })
        );
    }

    #[test]
    fn bytes_beyond_the_declared_length_are_an_overrun() {
        let mut reassembler = Reassembler::default();
        // In the FIRST segment itself.
        assert_eq!(
            reassembler.push(&[0xc0, 0, 0, 2, 1, 2, 3]),
            Err(SegmentError::Overrun {
                declared: 2,
                received: 3
            })
        );
        assert_eq!(
            reassembler.push(&[0x80, 0, 0, 2, 1, 2, 3]),
            Err(SegmentError::Overrun {
                declared: 2,
                received: 3
            })
        );
        // In a continuation segment, LAST or not.
        for flags in [0x00, 0x40] {
            assert_eq!(reassembler.push(&[0x80, 0, 0, 4, 1, 2]), Ok(None));
            assert_eq!(
                reassembler.push(&[flags, 1, 3, 4, 5]),
                Err(SegmentError::Overrun {
                    declared: 4,
                    received: 5
                })
            );
            assert!(reassembler.is_idle());
        }
    }

    #[test]
    fn last_segment_short_of_the_declared_length_is_a_mismatch() {
        let mut reassembler = Reassembler::default();
        assert_eq!(
            reassembler.push(&[0xc0, 0, 0, 3, 1, 2]),
            Err(SegmentError::LengthMismatch {
                declared: 3,
                received: 2
            })
        );
        assert_eq!(reassembler.push(&[0x85, 0, 0, 5, 1, 2]), Ok(None));
        assert_eq!(
            reassembler.push(&[0x45, 1, 3]),
            Err(SegmentError::LengthMismatch {
                declared: 5,
                received: 3
            })
        );
        assert!(reassembler.is_idle());
    }

    #[test]
    fn declared_length_above_the_limit_is_refused_before_buffering_r13() {
        let mut reassembler = Reassembler::new(100);
        assert_eq!(
            reassembler.push(&[0x80, 0, 0, 101, 1, 2, 3]),
            Err(SegmentError::TooLong {
                declared: 101,
                limit: 100
            })
        );
        assert!(reassembler.is_idle());
        assert_eq!(reassembler.buffered_capacity(), 0);
        // The largest length the field can carry.
        assert_eq!(
            Reassembler::default().push(&[0x80, 0, 0xff, 0xff]),
            Err(SegmentError::TooLong {
                declared: 65535,
                limit: MAX_MESSAGE_BYTES
            })
        );
    }

    #[test]
    fn reassembly_never_returns_a_message_longer_than_the_limit_r13() {
        assert_eq!(Reassembler::new(1 << 20).limit(), MAX_MESSAGE_BYTES);
        let mut segmenter = Segmenter::new(23).unwrap();
        let mut reassembler = Reassembler::new(100);
        let at_limit = segmenter.segment(&message(100)).unwrap();
        assert_eq!(reassembler.push(&at_limit[0]), Ok(None));
        // Pre-sized exactly, never grown.
        assert_eq!(reassembler.buffered_capacity(), 100);
        for segment in &at_limit[1..at_limit.len() - 1] {
            assert_eq!(reassembler.push(segment), Ok(None));
            assert_eq!(reassembler.buffered_capacity(), 100);
        }
        assert_eq!(
            reassembler.push(at_limit.last().unwrap()),
            Ok(Some(message(100)))
        );
        let above = segmenter.segment(&message(101)).unwrap();
        assert_eq!(
            reassembler.push(&above[0]),
            Err(SegmentError::TooLong {
                declared: 101,
                limit: 100
            })
        );
        for segment in &above[1..] {
            assert!(reassembler.push(segment).is_err());
        }
    }

    #[test]
    fn non_last_segment_255_is_too_many_segments() {
        let mut reassembler = Reassembler::default();
        // Empty continuation segments are legal, but indexes run out.
        assert_eq!(reassembler.push(&[0x80, 0, 0, 1]), Ok(None));
        for index in 1..=254u8 {
            assert_eq!(reassembler.push(&[0x00, index]), Ok(None));
        }
        assert_eq!(
            reassembler.push(&[0x00, 255]),
            Err(SegmentError::TooManySegments)
        );
        // Index 255 may still be LAST.
        assert_eq!(reassembler.push(&[0x80, 0, 0, 1]), Ok(None));
        for index in 1..=254u8 {
            assert_eq!(reassembler.push(&[0x00, index]), Ok(None));
        }
        assert_eq!(reassembler.push(&[0x40, 255, 9]), Ok(Some(vec![9])));
    }

    #[test]
    fn reassembler_recovers_after_every_error() {
        let bad: [&[u8]; 10] = [
            &[],
            &[0x80, 0, 0],
            &[0x90, 0, 0, 0],
            &[0x40, 1, 9],
            &[0x01, 1, 9],
            &[0x00, 2, 9],
            &[0x80, 2, 0, 0],
            &[0x40, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9],
            &[0xc0, 0, 0, 2, 1],
            &[0x80, 0, 0x10, 0x01],
        ];
        let sent = message(50);
        let segments = Segmenter::new(23).unwrap().segment(&sent).unwrap();
        for bad in bad {
            let mut reassembler = Reassembler::default();
            // Start a message so that the error also has a partial to drop.
            assert_eq!(reassembler.push(&[0x80, 0, 0, 8, 0, 0]), Ok(None));
            assert!(reassembler.push(bad).is_err(), "{bad:?}");
            assert!(reassembler.is_idle());
            assert_eq!(reassembler.buffered_capacity(), 0);
            assert_eq!(reassemble(&mut reassembler, &segments), sent);
            assert_eq!(reassembler.discarded(), 0);
        }
    }

    #[test]
    fn new_first_segment_replaces_a_partial_message_and_counts_it() {
        let mut segmenter = Segmenter::new(23).unwrap();
        let mut reassembler = Reassembler::default();
        let abandoned = segmenter.segment(&message(100)).unwrap();
        assert_eq!(reassembler.push(&abandoned[0]), Ok(None));
        assert_eq!(reassembler.push(&abandoned[1]), Ok(None));
        // The peer reconnects and starts over with a fresh segmenter.
        let mut restarted = Segmenter::new(23).unwrap();
        let sent = message(70);
        let segments = restarted.segment(&sent).unwrap();
        assert_eq!(reassemble(&mut reassembler, &segments), sent);
        assert_eq!(reassembler.discarded(), 1);
        // A one-segment message also replaces a partial one.
        assert_eq!(reassembler.push(&abandoned[0]), Ok(None));
        assert_eq!(reassembler.push(&[0xc3, 0, 0, 1, 5]), Ok(Some(vec![5])));
        assert_eq!(reassembler.discarded(), 2);
    }

    #[test]
    fn losing_any_one_segment_never_yields_a_wrong_message() {
        for mtu in [23, 24, 50, 185, 247, 517] {
            let mut segmenter = Segmenter::new(mtu).unwrap();
            for len in [0, 1, 17, 40, 500, 1000, MAX_MESSAGE_BYTES] {
                let sent = message(len);
                let segments = segmenter.segment(&sent).unwrap();
                for lost in 0..segments.len() {
                    let mut reassembler = Reassembler::default();
                    for (i, segment) in segments.iter().enumerate() {
                        if i == lost {
                            continue;
                        }
                        assert_eq!(
                            reassembler.push(segment).ok().flatten(),
                            None,
                            "mtu {mtu} len {len} lost {lost}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn random_loss_delivers_only_the_messages_sent() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut segmenter = Segmenter::new(23).unwrap();
        let mut reassembler = Reassembler::default();
        let (mut delivered, mut lost_messages) = (0, 0);
        for round in 0..2000 {
            if round % 100 == 0 {
                let mtu = MIN_ATT_MTU + rng.below(495) as u16;
                segmenter.set_mtu(mtu).unwrap();
            }
            let len = rng.below(MAX_MESSAGE_BYTES / 8);
            let sent: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let segments = segmenter.segment(&sent).unwrap();
            let mut complete = true;
            for segment in &segments {
                // Lose about one segment in 20.
                if rng.below(20) == 0 {
                    complete = false;
                    continue;
                }
                if let Ok(Some(message)) = reassembler.push(segment) {
                    assert_eq!(message, sent, "round {round}");
                    delivered += 1;
                }
            }
            if !complete {
                lost_messages += 1;
            }
        }
        assert_eq!(delivered + lost_messages, 2000);
        assert!(delivered > 0 && lost_messages > 0);
    }

    #[test]
    fn fuzz_oracle_holds_on_edge_and_random_inputs() {
        fuzz_reassemble(&[]);
        fuzz_reassemble(&[0]);
        fuzz_reassemble(&[255, 0]);
        fuzz_reassemble(&[0, 4, 0xc0, 0, 0, 0]);
        fuzz_reassemble(&[0, 5, 0x80, 0, 0, 1, 7, 3, 0x40, 1, 8]);
        fuzz_reassemble(&message(5000));
        let mut rng = Rng(42);
        for _ in 0..300 {
            let len = rng.below(600);
            let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            fuzz_reassemble(&data);
        }
        // Inputs made of valid segments, so that messages do complete.
        let mut segmenter = Segmenter::new(23).unwrap();
        for len in [0, 10, 16, 50, 200] {
            let mut data = vec![(len / 16) as u8];
            for segment in segmenter.segment(&message(len)).unwrap() {
                data.push(segment.len() as u8);
                data.extend_from_slice(&segment);
            }
            fuzz_reassemble(&data);
        }
    }

    #[test]
    fn errors_read_as_sentences() {
        assert_eq!(
            SegmentError::TooLong {
                declared: 5000,
                limit: 4096
            }
            .to_string(),
            "message of 5000 bytes exceeds the 4096-byte limit"
        );
        assert_eq!(
            SegmentError::InvalidMtu { mtu: 22 }.to_string(),
            "ATT MTU 22 is outside 23..=517"
        );
        assert_eq!(
            SegmentError::ReservedBits { flags: 0x30 }.to_string(),
            "reserved flag bits set in 0x30"
        );
    }
}
