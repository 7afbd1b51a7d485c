//! TLS with ephemeral, identity-free certificates. The client accepts any
//! server certificate here: the account-bound handshake authenticates the
//! peer, signs the hash of this certificate and binds to the exporter.
//!
//! The initiator's admission hints ride in its ClientHello's ALPN list
//! (SPEC §5.2). Each incoming connection gets a server configuration of its
//! own whose certificate resolver keeps the hints it saw for the driver.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, SignatureScheme};

use super::{ALPN, SERVER_NAME, SessionConfig, SessionError};
use crate::handshake::{HINTS, Hint, TlsPin, hints_from_alpn};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// An ephemeral self-signed certificate (Ed25519) for the constant name.
pub(crate) fn ephemeral_certificate()
-> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), SessionError> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
        .map_err(|e| SessionError::Tls(e.to_string()))?;
    let params = rcgen::CertificateParams::new(vec![SERVER_NAME.to_owned()])
        .map_err(|e| SessionError::Tls(e.to_string()))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| SessionError::Tls(e.to_string()))?;
    Ok((
        cert.der().clone(),
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    ))
}

pub(crate) fn server_config(
    config: &SessionConfig,
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
) -> Result<quinn::ServerConfig, SessionError> {
    let tls = server_tls(cert, key)?;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls.base.clone())
        .map_err(|e| SessionError::Tls(e.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(config.server_transport()));
    Ok(server)
}

/// TLS tickets an endpoint keeps for early data (SPEC §5.8); the oldest
/// goes first.
const TLS_TICKETS_KEPT: usize = 1024;

/// One endpoint's TLS server side: its ephemeral certificate and the
/// configuration each connection's own is cloned from.
#[derive(Debug, Clone)]
pub(crate) struct ServerTls {
    base: rustls::ServerConfig,
    certified: Arc<CertifiedKey>,
    /// SHA-256 of the certificate: what `ServerAuth` signs (SPEC §5.3).
    pub(crate) pin: TlsPin,
    /// The listener's binding signature for this certificate, made on
    /// first use (one Ed25519 signature per certificate, not per
    /// connection).
    pub(crate) binding: Arc<std::sync::OnceLock<Vec<u8>>>,
    /// The quinn settings each connection's configuration starts from.
    quinn: quinn::ServerConfig,
}

impl ServerTls {
    /// A fresh ephemeral certificate and its configuration.
    pub(crate) fn generate() -> Result<Self, SessionError> {
        let (cert, key) = ephemeral_certificate()?;
        server_tls(cert, key)
    }

    /// The endpoint's default server configuration (the driver accepts
    /// each connection with its own, [`ServerTls::for_connection`]).
    pub(crate) fn quinn_config(
        &self,
        transport: &Arc<quinn::TransportConfig>,
    ) -> Result<quinn::ServerConfig, SessionError> {
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(self.base.clone())
            .map_err(|e| SessionError::Tls(e.to_string()))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        server.transport_config(transport.clone());
        Ok(server)
    }

    /// A server configuration for one incoming connection, and where its
    /// hints will be once the ClientHello is read.
    pub(crate) fn for_connection(
        &self,
        transport: &Arc<quinn::TransportConfig>,
    ) -> Result<(Arc<HintSlot>, Arc<quinn::ServerConfig>), SessionError> {
        let slot = Arc::new(HintSlot {
            certified: self.certified.clone(),
            hints: Mutex::new(None),
            admitted: AtomicBool::new(false),
        });
        let mut tls = self.base.clone();
        tls.cert_resolver = slot.clone();
        // SPEC §5.8: a TLS ticket only for a connection whose hint was
        // recognised; a stranger's flood neither fills the store nor evicts
        // the members' tickets.
        tls.session_storage = Arc::new(AdmittedOnly {
            inner: self.base.session_storage.clone(),
            slot: slot.clone(),
        });
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
            .map_err(|e| SessionError::Tls(e.to_string()))?;
        // The endpoint's retry-token key and settings, this connection's
        // resolver: no new key is drawn per connection.
        let mut server = self.quinn.clone();
        server.crypto = Arc::new(crypto);
        server.transport_config(transport.clone());
        Ok((slot, Arc::new(server)))
    }
}

fn server_tls(
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
) -> Result<ServerTls, SessionError> {
    let PrivateKeyDer::Pkcs8(pkcs8) = &key else {
        return Err(SessionError::Tls("the ephemeral key is not PKCS#8".into()));
    };
    let signing = rustls::crypto::ring::sign::any_eddsa_type(pkcs8)
        .map_err(|e| SessionError::Tls(e.to_string()))?;
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    let mut pin = [0; 32];
    pin.copy_from_slice(digest.as_ref());
    let certified = Arc::new(CertifiedKey::new(vec![cert], signing));
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| SessionError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(HintSlot {
            certified: certified.clone(),
            hints: Mutex::new(None),
            admitted: AtomicBool::new(false),
        }));
    tls.alpn_protocols = vec![ALPN.to_vec()];
    // SPEC §5.8: one TLS ticket per connection, kept by this endpoint
    // (stateful, so each resumes once: rustls takes it from the store, and
    // a replayed 0-RTT flight finds nothing), for early data.
    tls.session_storage = rustls::server::ServerSessionMemoryCache::new(TLS_TICKETS_KEPT);
    tls.send_tls13_tickets = 1;
    // QUIC allows only "any amount" or none (RFC 9001 §4.6.1).
    tls.max_early_data_size = u32::MAX;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls.clone())
        .map_err(|e| SessionError::Tls(e.to_string()))?;
    Ok(ServerTls {
        base: tls,
        certified,
        pin,
        binding: Arc::default(),
        quinn: quinn::ServerConfig::with_crypto(Arc::new(crypto)),
    })
}

/// The certificate resolver of one connection: serves the endpoint's
/// certificate and keeps the hints of the ClientHello it saw.
#[derive(Debug)]
pub(crate) struct HintSlot {
    certified: Arc<CertifiedKey>,
    hints: Mutex<Option<[Hint; HINTS]>>,
    /// Set once the responder recognised one of the hints: only then does
    /// the connection get a TLS ticket ([`AdmittedOnly`]).
    admitted: AtomicBool,
}

/// The endpoint's TLS ticket store, seen from one connection: a ticket is
/// stored, and so issued (rustls sends none it could not store), only once
/// the responder recognised the connection's hint (SPEC §5.8). rustls
/// issues it on the initiator's TLS Finished, after the hints were answered.
#[derive(Debug)]
struct AdmittedOnly {
    inner: Arc<dyn rustls::server::StoresServerSessions>,
    slot: Arc<HintSlot>,
}

impl rustls::server::StoresServerSessions for AdmittedOnly {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.slot.admitted.load(Ordering::SeqCst) && self.inner.put(key, value)
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.inner.get(key)
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.inner.take(key)
    }

    fn can_cache(&self) -> bool {
        self.inner.can_cache()
    }
}

impl HintSlot {
    /// The hints the ClientHello offered (all zeros, matching nothing, for
    /// a ClientHello without them); `None` before the ClientHello is read.
    pub(crate) fn take(&self) -> Option<[Hint; HINTS]> {
        self.hints.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// The responder recognised a hint: this connection may get a TLS
    /// ticket.
    pub(crate) fn admit(&self) {
        self.admitted.store(true, Ordering::SeqCst);
    }
}

impl ResolvesServerCert for HintSlot {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let hints = match client_hello.alpn() {
            Some(alpn) => hints_from_alpn(alpn),
            None => hints_from_alpn([]),
        };
        *self.hints.lock().unwrap_or_else(|p| p.into_inner()) = Some(hints);
        Some(self.certified.clone())
    }
}

pub(crate) fn client_config(config: &SessionConfig) -> Result<quinn::ClientConfig, SessionError> {
    client_config_with(&client_tls()?, &[], &Arc::new(config.transport()), None)
}

/// The TLS client configuration every connection's own is cloned from.
pub(crate) fn client_tls() -> Result<rustls::ClientConfig, SessionError> {
    let provider = provider();
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| SessionError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.resumption = rustls::client::Resumption::disabled();
    tls.enable_early_data = false;
    Ok(tls)
}

/// A client configuration offering `hints` after the protocol id in its
/// ALPN list (SPEC §5.2).
pub(crate) fn client_config_with(
    base: &rustls::ClientConfig,
    hints: &[Hint],
    transport: &Arc<quinn::TransportConfig>,
    tickets: Option<Arc<dyn rustls::client::ClientSessionStore>>,
) -> Result<quinn::ClientConfig, SessionError> {
    let mut tls = base.clone();
    // SPEC §5.8: TLS tickets from this responder only (every responder has
    // the same constant name), each used once, for early data.
    if let Some(store) = tickets {
        tls.resumption = rustls::client::Resumption::store(store)
            .tls12_resumption(rustls::client::Tls12Resumption::Disabled);
        tls.enable_early_data = true;
    }
    tls.alpn_protocols = std::iter::once(ALPN.to_vec())
        .chain(hints.iter().map(|h| h.to_vec()))
        .collect();
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| SessionError::Tls(e.to_string()))?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    client.transport_config(transport.clone());
    Ok(client)
}

/// Accepts any certificate but still checks the handshake signature, so the
/// exporter is bound to a key the server holds.
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

/// SHA-256 of the peer's end-entity certificate, for resumption pins.
pub(crate) fn peer_certificate_pin(conn: &quinn::Connection) -> Option<[u8; 32]> {
    let identity = conn.peer_identity()?;
    let certs = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    let first = certs.first()?;
    let d = ring::digest::digest(&ring::digest::SHA256, first.as_ref());
    let mut out = [0; 32];
    out.copy_from_slice(d.as_ref());
    Some(out)
}
