//! The verified-certificate cache: a hit skips only the signature check.

#![allow(clippy::unwrap_used)] // tests may panic on setup failures

use tether_identity::{
    AccountAuthority, CERTIFICATE_CACHE_ENTRIES, CertificateCache, CertificateError,
    DeviceCertificate, DeviceKey, LocalAuthority, Role, verify_certificate,
};

const NOW: u64 = 1_800_000_000;

fn certificate(authority: &mut LocalAuthority, not_after: u64) -> DeviceCertificate {
    let key = DeviceKey::generate().unwrap();
    authority
        .issue(
            &key.enrollment_request(Role::Phone, [7; 16]),
            NOW - 10,
            not_after,
        )
        .unwrap()
        .certificate
        .unwrap()
}

#[test]
fn a_known_certificate_verifies_to_the_same_result_and_is_remembered_once() {
    let mut authority = LocalAuthority::generate().unwrap();
    let cert = certificate(&mut authority, NOW + 1000);
    let cache = CertificateCache::default();
    let first = cache.verify(&cert, &authority.public_key(), NOW).unwrap();
    let again = cache.verify(&cert, &authority.public_key(), NOW).unwrap();
    assert_eq!(first, again);
    assert_eq!(
        first,
        verify_certificate(&cert, &authority.public_key(), NOW).unwrap()
    );
    assert_eq!(cache.len(), 1);
}

#[test]
fn r3_a_cached_certificate_is_still_refused_once_it_expires() {
    let mut authority = LocalAuthority::generate().unwrap();
    let cert = certificate(&mut authority, NOW + 1000);
    let cache = CertificateCache::default();
    cache.verify(&cert, &authority.public_key(), NOW).unwrap();
    assert_eq!(
        cache.verify(&cert, &authority.public_key(), NOW + 1001),
        Err(CertificateError::Expired)
    );
    assert_eq!(
        cache.verify(&cert, &authority.public_key(), NOW - 11),
        Err(CertificateError::NotYetValid)
    );
}

#[test]
fn r3_a_changed_signature_or_another_authority_is_checked_in_full() {
    let mut authority = LocalAuthority::generate().unwrap();
    let other = LocalAuthority::generate().unwrap();
    let cert = certificate(&mut authority, NOW + 1000);
    let cache = CertificateCache::default();
    cache.verify(&cert, &authority.public_key(), NOW).unwrap();

    let mut forged = cert.clone();
    forged.signature[0] ^= 1;
    assert_eq!(
        cache.verify(&forged, &authority.public_key(), NOW),
        Err(CertificateError::BadSignature)
    );
    assert_eq!(
        cache.verify(&cert, &other.public_key(), NOW),
        Err(CertificateError::OtherAccount)
    );
    // Nothing that failed is remembered.
    assert_eq!(cache.len(), 1);
}

#[test]
fn the_cache_keeps_at_most_its_bound() {
    let mut authority = LocalAuthority::generate().unwrap();
    let cache = CertificateCache::default();
    let certs: Vec<_> = (0..CERTIFICATE_CACHE_ENTRIES + 3)
        .map(|_| certificate(&mut authority, NOW + 1000))
        .collect();
    for cert in &certs {
        cache.verify(cert, &authority.public_key(), NOW).unwrap();
    }
    assert_eq!(cache.len(), CERTIFICATE_CACHE_ENTRIES);
    // Verifying an old one again keeps the length at the bound.
    cache
        .verify(&certs[0], &authority.public_key(), NOW)
        .unwrap();
    assert_eq!(cache.len(), CERTIFICATE_CACHE_ENTRIES);
    cache.clear();
    assert!(cache.is_empty());
}

/// A responder's static TLS binding signature (SPEC §5.3): remembered once
/// it verified, for those exact bytes only; a bad one is never remembered.
#[test]
fn a_verified_signature_is_remembered_and_a_bad_one_never() {
    let key = DeviceKey::generate().unwrap();
    let public = key.public_key();
    let message = b"tether/2 server binding\0pin";
    let good = key.sign(message).to_vec();
    let mut bad = good.clone();
    bad[0] ^= 1;
    let cache = CertificateCache::default();
    assert!(!cache.verify_signature(&public, message, &bad));
    assert!(cache.is_empty(), "a failed check is not remembered");
    assert!(cache.verify_signature(&public, message, &good));
    assert_eq!(cache.len(), 1);
    assert!(cache.verify_signature(&public, message, &good));
    assert_eq!(cache.len(), 1, "remembered once");
    // Other bytes still go through the real check.
    assert!(!cache.verify_signature(&public, b"another message", &good));
    assert!(!cache.verify_signature(&public, message, &bad));
    cache.clear();
    assert!(cache.is_empty());
}
