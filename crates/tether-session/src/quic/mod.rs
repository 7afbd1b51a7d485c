//! The tokio + quinn driver (SPEC §5-6). Thin: it moves bytes between QUIC
//! streams and the sans-IO cores, reads the clock, draws nonces and spawns
//! one task per connection and per stream.
//!
//! TLS runs with an ephemeral, identity-free certificate made at start-up
//! and replaceable at each token rotation (rcgen, Ed25519), ALPN `tether/2`
//! followed by the initiator's admission hints, and the constant SNI
//! [`SERVER_NAME`]; who is who is settled by the account-bound handshake,
//! whose `ServerAuth` rides sealed in the responder's TLS flight (0.5-RTT)
//! and whose `ClientAuth` binds to the TLS exporter (R2, R3; SPEC §5).

mod client;
mod error;
mod server;
mod stream;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use client::{BodyWriter, ClientSession, Connector, ResponseStream};
pub use error::{CloseCode, SessionError};
pub use server::{
    CertificateRotator, IncomingRequest, Listener, ListenerCloser, ListenerStats, RequestBody,
    Responder, ServerSession, SessionCloser, SocketAttacher, StatsHandle,
};

use crate::handshake::HandshakeConfig;

/// The exact QUIC/TLS configurations the driver uses, for a bare-quinn
/// baseline that must match them (tether-bench). Not a stable API.
#[doc(hidden)]
pub mod raw_config {
    use super::{SessionConfig, SessionError, tls};

    /// Server configuration with a fresh ephemeral certificate, with the
    /// transport of an authenticated session (the driver starts each
    /// connection narrower and widens it after the handshake, SPEC §5.7).
    pub fn server(config: &SessionConfig) -> Result<quinn::ServerConfig, SessionError> {
        let (cert, key) = tls::ephemeral_certificate()?;
        let mut server = tls::server_config(config, cert, key)?;
        server.transport_config(std::sync::Arc::new(config.transport()));
        Ok(server)
    }

    /// Client configuration (any certificate, handshake signature checked).
    pub fn client(config: &SessionConfig) -> Result<quinn::ClientConfig, SessionError> {
        tls::client_config(config)
    }

    /// The same, offering exactly `alpn` (a version-1 peer, or one with
    /// other hints), for tests of version negotiation (SPEC §5.1).
    pub fn client_offering(
        config: &SessionConfig,
        alpn: Vec<Vec<u8>>,
    ) -> Result<quinn::ClientConfig, SessionError> {
        let mut tls = tls::client_tls()?;
        tls.alpn_protocols = alpn;
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
            .map_err(|e| SessionError::Tls(e.to_string()))?;
        let mut client = quinn::ClientConfig::new(std::sync::Arc::new(crypto));
        client.transport_config(std::sync::Arc::new(config.client_transport()));
        Ok(client)
    }

    /// An endpoint bound at `addr` on a UDP socket set up as the driver's
    /// are (buffer sizes from `config`); a server when `server` is given.
    pub fn endpoint(
        addr: std::net::SocketAddr,
        server: Option<quinn::ServerConfig>,
        config: &SessionConfig,
    ) -> Result<quinn::Endpoint, SessionError> {
        super::endpoint(addr, server, config)
    }
}

/// SHA-256 of the TLS certificate the peer of `conn` presented (what a
/// resumption ticket is pinned to, SPEC §5.5). For tests of certificate
/// rotation; not a stable API.
#[doc(hidden)]
pub fn peer_certificate_pin(conn: &quinn::Connection) -> Option<[u8; 32]> {
    tls::peer_certificate_pin(conn)
}

/// ALPN protocol id: the protocol version (SPEC §5.1). A `tether/1` peer
/// finds no protocol in common and TLS refuses it.
pub const ALPN: &[u8] = b"tether/2";
/// The SNI every client sends: constant, so it names nobody (R2).
pub const SERVER_NAME: &str = "tether.invalid";

/// Settings of a session endpoint. `Default` gives the values in SPEC §6.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Handshake versions and ticket lifetime.
    pub handshake: HandshakeConfig,
    /// Largest request or response frame, bytes.
    pub max_frame_bytes: usize,
    /// A connection must finish the Tether handshake within this time.
    pub handshake_timeout: Duration,
    /// At most this many connections may be unauthenticated at once; past
    /// it the oldest one that has not proven membership is dropped.
    pub max_unauthenticated: usize,
    /// QUIC keep-alive interval.
    pub keep_alive: Duration,
    /// Idle timeout after which a silent connection is closed.
    pub idle_timeout: Duration,
    /// Concurrent request streams per session (backpressure).
    pub max_concurrent_streams: u32,
    /// (Responder) request streams a peer may open before its handshake
    /// ends (held until then, SPEC §5.7); raised to
    /// `max_concurrent_streams` once it authenticates. Bounds what an
    /// unauthenticated peer makes the responder hold (R31): see
    /// [`SessionConfig::max_unauthenticated_bytes`].
    pub max_held_requests: u32,
    /// Requests queued for the application per session (backpressure).
    pub request_queue: usize,
    /// Deadline applied to a request that carries none.
    pub default_deadline: Duration,
    /// Receive and send buffers asked for the endpoint's UDP socket, bytes
    /// (`SO_RCVBUF`, `SO_SNDBUF`; Linux caps them at `net.core.rmem_max`
    /// and `wmem_max`). Large enough for a stream window of datagrams, so
    /// that a receiver busy for a moment (hashing a firmware image) does
    /// not drop them. 0 keeps the system's default.
    pub udp_buffer_bytes: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            handshake: HandshakeConfig::default(),
            max_frame_bytes: crate::frame::MAX_FRAME_BYTES,
            handshake_timeout: Duration::from_secs(5),
            max_unauthenticated: 32,
            keep_alive: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            max_concurrent_streams: 64,
            max_held_requests: 4,
            request_queue: 64,
            default_deadline: Duration::from_secs(10),
            udp_buffer_bytes: 2 * 1024 * 1024,
        }
    }
}

impl SessionConfig {
    fn transport(&self) -> quinn::TransportConfig {
        let mut t = quinn::TransportConfig::default();
        t.keep_alive_interval(Some(self.keep_alive));
        t.max_idle_timeout(quinn::IdleTimeout::try_from(self.idle_timeout).ok());
        t.max_concurrent_bidi_streams(self.max_concurrent_streams.into());
        t.max_concurrent_uni_streams(0u32.into());
        t
    }

    /// The initiator's transport: as [`SessionConfig::transport`], and one
    /// unidirectional stream the responder opens for its sealed
    /// `ServerAuth` (SPEC §5.2).
    fn client_transport(&self) -> quinn::TransportConfig {
        let mut t = self.transport();
        t.max_concurrent_uni_streams(1u32.into());
        t
    }

    /// The responder's transport until a connection authenticates (R31,
    /// SPEC §5.7): the handshake stream and `max_held_requests` request
    /// streams, and a connection receive window of one request frame and
    /// two handshake messages. The driver widens both once the handshake
    /// succeeds (`server::widen_after_authentication`).
    fn server_transport(&self) -> quinn::TransportConfig {
        let mut t = self.transport();
        t.max_concurrent_bidi_streams((1 + self.max_held_requests).into());
        t.receive_window(
            quinn::VarInt::from_u64(self.unauthenticated_receive_window())
                .unwrap_or(quinn::VarInt::MAX),
        );
        t
    }

    /// Connection receive window before authentication, bytes: one request
    /// frame and two handshake messages, each with its 4-byte header.
    fn unauthenticated_receive_window(&self) -> u64 {
        let frame = FRAME_HEADER_BYTES + self.max_frame_bytes as u64;
        frame + 2 * (FRAME_HEADER_BYTES + crate::handshake::MAX_HANDSHAKE_MESSAGE_BYTES as u64)
    }

    /// The most stream bytes one unauthenticated connection can make the
    /// responder hold at once (R31; SPEC §5.7, §11): the receive
    /// window, plus what the responder reads (and so credits back) before
    /// authentication: the first frame of each held request and the two
    /// handshake messages. With the defaults: 5 × 65 540 + 4 × 2 052 =
    /// 335 908 bytes; times `max_unauthenticated` (32) ≈ 10.7 MB.
    pub fn max_unauthenticated_bytes(&self) -> u64 {
        let frame = FRAME_HEADER_BYTES + self.max_frame_bytes as u64;
        let handshake =
            2 * (FRAME_HEADER_BYTES + crate::handshake::MAX_HANDSHAKE_MESSAGE_BYTES as u64);
        self.unauthenticated_receive_window()
            + u64::from(self.max_held_requests) * frame
            + handshake
    }
}

/// The length prefix of every frame (SPEC §6.1).
const FRAME_HEADER_BYTES: u64 = crate::frame::FRAME_HEADER_BYTES as u64;

/// Binds a UDP socket at `addr` with the buffers `config` asks for and
/// makes it a quinn endpoint (a server when `server` is given).
pub(crate) fn endpoint(
    addr: SocketAddr,
    server: Option<quinn::ServerConfig>,
    config: &SessionConfig,
) -> Result<quinn::Endpoint, SessionError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // As quinn's own constructors do: v4-mapped peers too.
        let _ = socket.set_only_v6(false);
    }
    if config.udp_buffer_bytes > 0 {
        // Best effort: a kernel that refuses keeps its default, which only
        // costs throughput.
        if let Err(e) = socket.set_recv_buffer_size(config.udp_buffer_bytes) {
            tracing::debug!(error = %e, "UDP receive buffer not enlarged");
        }
        if let Err(e) = socket.set_send_buffer_size(config.udp_buffer_bytes) {
            tracing::debug!(error = %e, "UDP send buffer not enlarged");
        }
    }
    socket.bind(&addr.into())?;
    Ok(quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        server,
        socket.into(),
        Arc::new(quinn::TokioRuntime),
    )?)
}

/// Where an endpoint's datagrams go: a UDP socket bound here, or a socket
/// the caller made (the relay transport, SPEC §19).
pub(crate) enum Bind {
    Udp(SocketAddr),
    Socket(Arc<dyn quinn::AsyncUdpSocket>),
}

/// A quinn endpoint over `bind` (a server when `server` is given).
pub(crate) fn endpoint_on(
    bind: Bind,
    server: Option<quinn::ServerConfig>,
    config: &SessionConfig,
) -> Result<quinn::Endpoint, SessionError> {
    match bind {
        Bind::Udp(addr) => endpoint(addr, server, config),
        Bind::Socket(socket) => Ok(quinn::Endpoint::new_with_abstract_socket(
            quinn::EndpointConfig::default(),
            server,
            socket,
            Arc::new(quinn::TokioRuntime),
        )?),
    }
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) fn random_nonce() -> Result<[u8; 32], SessionError> {
    let mut n = [0; 32];
    fill_random(&mut n)?;
    Ok(n)
}

pub(crate) fn fill_random(out: &mut [u8]) -> Result<(), SessionError> {
    use ring::rand::SecureRandom;
    ring::rand::SystemRandom::new()
        .fill(out)
        .map_err(|_| SessionError::Random)
}

pub(crate) fn exporter(
    conn: &quinn::Connection,
) -> Result<crate::handshake::Exporter, SessionError> {
    let mut out = [0; crate::handshake::EXPORTER_LEN];
    conn.export_keying_material(&mut out, crate::handshake::EXPORTER_LABEL, b"")
        .map_err(|_| SessionError::Exporter)?;
    Ok(out)
}
