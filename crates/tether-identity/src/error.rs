use thiserror::Error;

/// A key could not be created or parsed.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// The system random source failed.
    #[error("the system random source failed")]
    Random,
    /// Stored or received key bytes are not a valid key.
    #[error("malformed key material")]
    Malformed,
}

/// A certificate from a peer or from disk was rejected. Every variant is the
/// peer's (or the disk's) fault, never a panic.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CertificateError {
    /// The bytes are not a certificate (bad protobuf, wrong lengths, too large).
    #[error("malformed certificate: {0}")]
    Malformed(&'static str),
    /// The certificate format version is not one we understand.
    #[error("unsupported certificate version {0}")]
    UnsupportedVersion(u32),
    /// The authority's signature does not verify.
    #[error("certificate signature does not verify")]
    BadSignature,
    /// Issued by another account's authority.
    #[error("certificate belongs to another account")]
    OtherAccount,
    /// `now` is before `not_before`.
    #[error("certificate is not yet valid")]
    NotYetValid,
    /// `now` is after `not_after`.
    #[error("certificate has expired")]
    Expired,
}

/// An enrollment request was refused by the authority, or a grant was
/// refused by the device.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum EnrollmentError {
    /// The request is malformed (lengths, role).
    #[error("malformed enrollment message: {0}")]
    Malformed(&'static str),
    /// The proof of possession does not verify.
    #[error("proof of possession does not verify")]
    BadProof,
    /// The grant's certificate is not for this device key.
    #[error("grant is for another device key")]
    WrongKey,
    /// The grant's certificate is invalid.
    #[error(transparent)]
    Certificate(#[from] CertificateError),
    /// A key could not be made or parsed.
    #[error(transparent)]
    Key(#[from] KeyError),
}
