//! The baseline: bare quinn with the TLS set-up Tether's driver uses, and
//! nothing on top.
//!
//! Same crypto provider (rustls ring), TLS 1.3 only, an ephemeral Ed25519
//! self-signed certificate, ALPN set, no TLS tickets, and the same QUIC
//! transport settings (taken from the same [`SessionConfig`]). The client
//! trusts any certificate but, like Tether's driver, still verifies the TLS
//! handshake signature, so both sides do the same TLS work. A request is a
//! bidirectional stream carrying [`PAYLOAD_BYTES`] that the server echoes
//! back, the stream-per-request pattern Tether uses.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tether_session::quic::SessionConfig;

use crate::error::BenchError;
use crate::tether::LOOPBACK;

/// Bytes in one baseline request and its echo.
pub(crate) const PAYLOAD_BYTES: usize = 32;
/// The baseline's ALPN id.
const ALPN: &[u8] = b"tether-bench/bare";
/// The name in the certificate and the SNI.
const SERVER_NAME: &str = "bare.invalid";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Mirrors the transport Tether's driver builds from `config`.
fn transport(config: &SessionConfig) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(config.keep_alive));
    t.max_idle_timeout(quinn::IdleTimeout::try_from(config.idle_timeout).ok());
    t.max_concurrent_bidi_streams(config.max_concurrent_streams.into());
    t.max_concurrent_uni_streams(0u32.into());
    Arc::new(t)
}

/// A bare quinn server endpoint on loopback.
pub(crate) fn server(config: &SessionConfig) -> Result<quinn::Endpoint, BenchError> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
        .map_err(|e| BenchError::setup("baseline key", e))?;
    let cert = rcgen::CertificateParams::new(vec![SERVER_NAME.to_owned()])
        .and_then(|params| params.self_signed(&key))
        .map_err(|e| BenchError::setup("baseline certificate", e))?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| BenchError::setup("baseline TLS", e))?
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)
        .map_err(|e| BenchError::setup("baseline TLS", e))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.send_tls13_tickets = 0;
    tls.max_early_data_size = 0;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| BenchError::setup("baseline TLS", e))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(transport(config));
    quinn::Endpoint::server(server, LOOPBACK).map_err(|e| BenchError::setup("baseline socket", e))
}

/// A bare quinn client endpoint and the configuration it connects with.
pub(crate) struct Client {
    endpoint: quinn::Endpoint,
    config: quinn::ClientConfig,
}

impl Client {
    pub(crate) fn new(config: &SessionConfig) -> Result<Self, BenchError> {
        let provider = provider();
        let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| BenchError::setup("baseline TLS", e))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth();
        tls.alpn_protocols = vec![ALPN.to_vec()];
        tls.resumption = rustls::client::Resumption::disabled();
        tls.enable_early_data = false;
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
            .map_err(|e| BenchError::setup("baseline TLS", e))?;
        let mut client = quinn::ClientConfig::new(Arc::new(crypto));
        client.transport_config(transport(config));
        let endpoint = quinn::Endpoint::client(LOOPBACK)
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

/// Accepts any certificate but checks the TLS 1.3 handshake signature,
/// exactly as Tether's driver does, so the baseline skips no crypto.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
