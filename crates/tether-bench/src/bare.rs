//! The baseline: bare quinn with the TLS set-up Tether's driver uses, and
//! nothing on top.
//!
//! Same crypto provider (rustls ring), TLS 1.3 only, an ephemeral Ed25519
//! self-signed certificate, ALPN set, no TLS tickets, the same QUIC
//! transport settings and the same UDP socket buffers (all taken from the
//! same [`SessionConfig`] through `raw_config`). The client
//! trusts any certificate but, like Tether's driver, still verifies the TLS
//! handshake signature, so both sides do the same TLS work. A request is a
//! bidirectional stream carrying [`PAYLOAD_BYTES`] that the server echoes
//! back, the stream-per-request pattern Tether uses.

use std::net::SocketAddr;

use tether_session::quic::SessionConfig;

use crate::error::BenchError;
use crate::tether::LOOPBACK;

/// Bytes in one baseline request and its echo.
pub(crate) const PAYLOAD_BYTES: usize = 32;
/// The name the client connects to (the SNI); the configurations below are
/// Tether's own, so the baseline runs the identical TLS and transport setup.
const SERVER_NAME: &str = tether_session::quic::SERVER_NAME;

/// A bare quinn server endpoint on loopback, with Tether's exact server
/// configuration (ephemeral Ed25519 certificate, TLS 1.3, ring, ALPN,
/// transport limits).
pub(crate) fn server(config: &SessionConfig) -> Result<quinn::Endpoint, BenchError> {
    let server = tether_session::quic::raw_config::server(config)
        .map_err(|e| BenchError::setup("baseline TLS", e))?;
    tether_session::quic::raw_config::endpoint(LOOPBACK, Some(server), config)
        .map_err(|e| BenchError::setup("baseline socket", e))
}

/// A bare quinn client endpoint and the configuration it connects with.
pub(crate) struct Client {
    endpoint: quinn::Endpoint,
    config: quinn::ClientConfig,
}

impl Client {
    pub(crate) fn new(config: &SessionConfig) -> Result<Self, BenchError> {
        let client = tether_session::quic::raw_config::client(config)
            .map_err(|e| BenchError::setup("baseline TLS", e))?;
        let endpoint = tether_session::quic::raw_config::endpoint(LOOPBACK, None, config)
            .map_err(|e| BenchError::setup("baseline socket", e))?;
        Ok(Self {
            endpoint,
            config: client,
        })
    }

    /// Opens a QUIC connection (one full TLS 1.3 handshake).
    pub(crate) async fn connect(&self, addr: SocketAddr) -> Result<quinn::Connection, BenchError> {
        self.endpoint
            .connect_with(self.config.clone(), addr, SERVER_NAME)
            .map_err(|e| BenchError::baseline("connect", e))?
            .await
            .map_err(|e| BenchError::baseline("handshake", e))
    }
}

/// Accepts the next connection on `server` and completes its handshake.
pub(crate) async fn accept(server: &quinn::Endpoint) -> Result<quinn::Connection, BenchError> {
    let incoming = server
        .accept()
        .await
        .ok_or(BenchError::Unexpected("baseline endpoint closed"))?;
    incoming
        .await
        .map_err(|e| BenchError::baseline("accept", e))
}

/// Serves the echo on every connection `server` accepts, one task per
/// connection and per stream (as quinn requires for concurrent streams).
pub(crate) async fn serve_echo(server: quinn::Endpoint) {
    while let Some(incoming) = server.accept().await {
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else {
                return;
            };
            while let Ok((send, recv)) = conn.accept_bi().await {
                tokio::spawn(echo_stream(send, recv));
            }
        });
    }
}

async fn echo_stream(mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
    let Ok(request) = recv.read_to_end(PAYLOAD_BYTES).await else {
        return;
    };
    if send.write_all(&request).await.is_ok() {
        let _ = send.finish();
    }
}

/// One small command: a new stream, [`PAYLOAD_BYTES`] out, the echo back.
pub(crate) async fn echo(conn: &quinn::Connection) -> Result<(), BenchError> {
    const REQUEST: [u8; PAYLOAD_BYTES] = [0x5a; PAYLOAD_BYTES];
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| BenchError::baseline("open stream", e))?;
    send.write_all(&REQUEST)
        .await
        .map_err(|e| BenchError::baseline("write", e))?;
    send.finish()
        .map_err(|e| BenchError::baseline("finish", e))?;
    let echo = recv
        .read_to_end(PAYLOAD_BYTES)
        .await
        .map_err(|e| BenchError::baseline("read", e))?;
    if echo != REQUEST {
        return Err(BenchError::Unexpected("baseline echo differs"));
    }
    Ok(())
}
