use prost::Message;
use ring::digest;
use tether_proto::v1::{CertificateBody, DeviceCertificate};

use crate::keys::{PUBLIC_KEY_LEN, verify_signature};
use crate::{CertificateError, Role};

/// The certificate format version this crate writes and accepts.
pub const CERTIFICATE_VERSION: u32 = 1;
/// Certificates larger than this are rejected before decoding.
pub const MAX_CERTIFICATE_BYTES: usize = 512;

pub(crate) const CERTIFICATE_CONTEXT: &[u8] = b"tether/1 certificate\0";

/// Names an account's authority key: the first 8 bytes of SHA-256 of its
/// public key. Local to members; never appears outside an authenticated
/// session (R2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AccountKeyId(pub [u8; 8]);

impl AccountKeyId {
    /// The id of the authority with this public key.
    pub fn of(authority_public_key: &[u8]) -> Self {
        let d = digest::digest(&digest::SHA256, authority_public_key);
        let mut id = [0; 8];
        id.copy_from_slice(&d.as_ref()[..8]);
        Self(id)
    }
}

/// A certificate whose signature, account and validity have been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCertificate {
    /// The device's raw Ed25519 public key.
    pub public_key: [u8; PUBLIC_KEY_LEN],
    /// The device's role in the account.
    pub role: Role,
    /// The issuing account.
    pub account_key_id: AccountKeyId,
    /// Serial number assigned by the authority.
    pub serial: u64,
    /// Start of validity, Unix seconds.
    pub not_before: u64,
    /// End of validity, Unix seconds.
    pub not_after: u64,
}

impl VerifiedCertificate {
    /// The body this certificate was decoded from, re-encoded (for tickets).
    pub fn to_body(&self) -> CertificateBody {
        CertificateBody {
            version: CERTIFICATE_VERSION,
            device_public_key: self.public_key.to_vec(),
            role: self.role.to_proto() as i32,
            account_key_id: self.account_key_id.0.to_vec(),
            serial: self.serial,
            not_before: self.not_before,
            not_after: self.not_after,
        }
    }

    /// Parses a body without any signature check (the caller vouches for it,
    /// e.g. it came out of a ticket sealed by this node).
    pub fn from_body(body: &CertificateBody) -> Result<Self, CertificateError> {
        if body.version != CERTIFICATE_VERSION {
            return Err(CertificateError::UnsupportedVersion(body.version));
        }
        let public_key: [u8; PUBLIC_KEY_LEN] = body
            .device_public_key
            .as_slice()
            .try_into()
            .map_err(|_| CertificateError::Malformed("device public key length"))?;
        let account_key_id: [u8; 8] = body
            .account_key_id
            .as_slice()
            .try_into()
            .map_err(|_| CertificateError::Malformed("account key id length"))?;
        let role = Role::from_proto(body.role).ok_or(CertificateError::Malformed("role"))?;
        if body.not_before > body.not_after {
            return Err(CertificateError::Malformed("validity interval"));
        }
        Ok(Self {
            public_key,
            role,
            account_key_id: AccountKeyId(account_key_id),
            serial: body.serial,
            not_before: body.not_before,
            not_after: body.not_after,
        })
    }
}

/// Decodes a certificate from untrusted bytes (size-bounded, never panics).
pub fn decode_certificate(bytes: &[u8]) -> Result<DeviceCertificate, CertificateError> {
    if bytes.len() > MAX_CERTIFICATE_BYTES {
        return Err(CertificateError::Malformed("too large"));
    }
    DeviceCertificate::decode(bytes).map_err(|_| CertificateError::Malformed("protobuf"))
}

/// Checks `cert` against the account's authority key at time `now` (Unix
/// seconds): signature, account, validity window. The order of checks does
/// not depend on secrets.
pub fn verify_certificate(
    cert: &DeviceCertificate,
    authority_public_key: &[u8],
    now: u64,
) -> Result<VerifiedCertificate, CertificateError> {
    let verified = verify_certificate_signature(cert, authority_public_key)?;
    check_validity(&verified, now)?;
    Ok(verified)
}

fn check_validity(verified: &VerifiedCertificate, now: u64) -> Result<(), CertificateError> {
    if now < verified.not_before {
        return Err(CertificateError::NotYetValid);
    }
    if now > verified.not_after {
        return Err(CertificateError::Expired);
    }
    Ok(())
}

/// Decodes `cert`'s body and checks its format and account: everything but
/// the authority's signature and the validity window.
fn check_body(
    cert: &DeviceCertificate,
    authority_public_key: &[u8],
) -> Result<VerifiedCertificate, CertificateError> {
    if cert.body.len() > MAX_CERTIFICATE_BYTES {
        return Err(CertificateError::Malformed("too large"));
    }
    let body = CertificateBody::decode(cert.body.as_slice())
        .map_err(|_| CertificateError::Malformed("protobuf body"))?;
    let verified = VerifiedCertificate::from_body(&body)?;
    if verified.account_key_id != AccountKeyId::of(authority_public_key) {
        return Err(CertificateError::OtherAccount);
    }
    Ok(verified)
}

/// Checks `cert`'s format, account and authority signature, but not its
/// validity window: for certificates restored from the device's own store,
/// which are checked against the clock when used.
pub fn verify_certificate_signature(
    cert: &DeviceCertificate,
    authority_public_key: &[u8],
) -> Result<VerifiedCertificate, CertificateError> {
    let verified = check_body(cert, authority_public_key)?;
    let mut signed = Vec::with_capacity(CERTIFICATE_CONTEXT.len() + cert.body.len());
    signed.extend_from_slice(CERTIFICATE_CONTEXT);
    signed.extend_from_slice(&cert.body);
    if !verify_signature(authority_public_key, &signed, &cert.signature) {
        return Err(CertificateError::BadSignature);
    }
    Ok(verified)
}

/// How many verified certificates a [`CertificateCache`] remembers.
pub const CERTIFICATE_CACHE_ENTRIES: usize = 64;

/// Certificates whose authority signature has already been checked, so that
/// a peer met again costs no Ed25519 verification for its certificate (about
/// 65 µs, a sixth of a full handshake's signature work).
///
/// An entry is a SHA-256 digest of the authority key, the certificate body
/// and the signature: only the exact bytes checked before, under the same
/// authority key, hit. A hit skips the signature check only. The body is
/// decoded and its account and validity window are checked on every use.
/// Only certificates that passed every check are remembered; the oldest
/// entry goes first. The digests stay in memory, never on disk.
#[derive(Default)]
pub struct CertificateCache {
    digests: std::sync::Mutex<std::collections::VecDeque<[u8; 32]>>,
}

impl std::fmt::Debug for CertificateCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateCache")
            .field("entries", &self.len())
            .finish()
    }
}

impl CertificateCache {
    /// [`verify_certificate`], without the signature check when the same
    /// certificate verified under the same key before.
    pub fn verify(
        &self,
        cert: &DeviceCertificate,
        authority_public_key: &[u8],
        now: u64,
    ) -> Result<VerifiedCertificate, CertificateError> {
        let key = Self::digest_of(cert, authority_public_key);
        if self.lock().contains(&key) {
            let verified = check_body(cert, authority_public_key)?;
            check_validity(&verified, now)?;
            return Ok(verified);
        }
        let verified = verify_certificate(cert, authority_public_key, now)?;
        let mut digests = self.lock();
        if !digests.contains(&key) {
            if digests.len() >= CERTIFICATE_CACHE_ENTRIES {
                digests.pop_front();
            }
            digests.push_back(key);
        }
        Ok(verified)
    }

    /// Every check of [`CertificateCache::verify`] but the authority's
    /// signature: format, account and validity window at `now`. What an
    /// initiator may check before it answers a responder whose seal has
    /// already proved it holds the admission key (SPEC §5.3); the signature
    /// is checked by `verify` afterwards, before the session is used.
    pub fn check_unsigned(
        &self,
        cert: &DeviceCertificate,
        authority_public_key: &[u8],
        now: u64,
    ) -> Result<VerifiedCertificate, CertificateError> {
        let verified = check_body(cert, authority_public_key)?;
        check_validity(&verified, now)?;
        Ok(verified)
    }

    /// Whether `signature` by `public_key` over `message` verifies, without
    /// verifying it again when these exact bytes verified before (a
    /// responder's static binding of its TLS key, SPEC §5.3). Only
    /// signatures that verified are remembered, with the certificates.
    pub fn verify_signature(&self, public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(b"tether/1 verified signature\0");
        for part in [public_key, message, signature] {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part);
        }
        let mut key = [0; 32];
        key.copy_from_slice(ctx.finish().as_ref());
        if self.lock().contains(&key) {
            return true;
        }
        if !crate::verify_signature(public_key, message, signature) {
            return false;
        }
        let mut digests = self.lock();
        if !digests.contains(&key) {
            if digests.len() >= CERTIFICATE_CACHE_ENTRIES {
                digests.pop_front();
            }
            digests.push_back(key);
        }
        true
    }

    /// Forgets every certificate and signature (a benchmark's first
    /// contact).
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Certificates remembered.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<[u8; 32]>> {
        // A list of digests has no invariant a panic could break.
        self.digests.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn digest_of(cert: &DeviceCertificate, authority_public_key: &[u8]) -> [u8; 32] {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(b"tether/1 verified certificate\0");
        for part in [authority_public_key, &cert.body, &cert.signature] {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part);
        }
        let mut out = [0; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }
}
