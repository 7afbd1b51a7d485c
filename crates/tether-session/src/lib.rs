//! Tether sessions: the account-bound handshake and the framing, as sans-IO
//! cores, and (feature `quic`) the thin tokio + quinn driver that runs them
//! over QUIC (SPEC §5-6; R2, R3, R31).
//!
//! The cores in [`handshake`] and [`frame`] contain no networking code and do
//! not get any timestamps or randomness from the operating system: the
//! caller supplies exporter values, nonces and `now`.

pub mod frame;
pub mod handshake;

pub use frame::{FrameDecoder, FrameError, FrameSplitter, MAX_FRAME_BYTES, Piece, encode_frame};
pub use handshake::{
    ClientHandshake, Event, GRANT_ID_LEN, GrantAccess, Grantee, Grantees, HINTS, HandshakeConfig,
    HandshakeError, Output, PROTOCOL_VERSION, PeerIdentity, Proven, ResumptionTicket,
    ServerHandshake, TicketKey, may_travel_early,
};

#[cfg(feature = "quic")]
pub mod quic;
