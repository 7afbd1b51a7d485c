//! The account's revocation list and group-key epochs (SPEC §3.6).
//!
//! The authority removes a device by signing a new [`RevocationList`]: a
//! higher serial, the removed devices' public keys, and the epoch of a new
//! group key, named by a check value that reveals nothing about the key.
//! Members hand the list (and, to members it does not revoke, the key) to
//! each other inside authenticated sessions. Sans-IO: no clock, no storage.

use prost::Message;
use ring::digest;
use tether_proto::v1::{RevocationList, RevocationListBody};
use thiserror::Error;

use crate::certificate::AccountKeyId;
use crate::keys::{DeviceKey, GroupKey, PUBLIC_KEY_LEN, hkdf_sha256, verify_signature};

/// The revocation list format version this crate writes and accepts.
pub const REVOCATION_LIST_VERSION: u32 = 1;
/// Lists larger than this are not decoded.
pub const MAX_REVOCATION_LIST_BYTES: usize = 16 * 1024;
/// At most this many removed devices per list.
pub const MAX_REVOKED_KEYS: usize = 256;
/// How long after a removal members still accept the previous group key's
/// proofs and advertise its tokens, so a member that was offline catches up
/// on its next contact: 7 days.
pub const GROUP_KEY_GRACE_S: u64 = 7 * 24 * 3600;

/// Context of the authority's signature over a list body.
pub const REVOCATION_LIST_CONTEXT: &[u8] = b"tether/1 revocation list\0";

/// A revocation list was refused. Every variant is the sender's fault.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RevocationError {
    /// The bytes are not a list (bad protobuf, lengths, order, too large).
    #[error("malformed revocation list: {0}")]
    Malformed(&'static str),
    /// A format version we do not understand.
    #[error("unsupported revocation list version {0}")]
    UnsupportedVersion(u32),
    /// Issued for another account.
    #[error("revocation list belongs to another account")]
    OtherAccount,
    /// The authority's signature does not verify.
    #[error("revocation list signature does not verify")]
    BadSignature,
    /// A newer epoch came without its group key, or with a key that does not
    /// match the list's check value.
    #[error("group key does not match the revocation list")]
    KeyMismatch,
    /// The list's epoch is older than the one this member holds.
    #[error("revocation list is for an older group key epoch")]
    OlderEpoch,
    /// The system random source failed (making a new group key).
    #[error("the system random source failed")]
    Random,
}

/// The check value naming a group key: HKDF info `tether/1 group key check`.
pub fn group_key_check(key: &GroupKey) -> [u8; 32] {
    hkdf_sha256(
        b"tether/1 group key",
        key.as_bytes(),
        b"tether/1 group key check",
    )
}

/// A list whose signature and account have been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedRevocationList {
    /// The list's serial.
    pub serial: u64,
    /// The removed devices' public keys, ascending.
    pub revoked: Vec<[u8; PUBLIC_KEY_LEN]>,
    /// The group key epoch in force with this list.
    pub group_key_epoch: u32,
    /// Names that epoch's key ([`group_key_check`]).
    pub group_key_check: [u8; 32],
    /// When the authority made it (Unix seconds).
    pub issued_at: u64,
    /// Last second the previous epoch is still accepted.
    pub previous_epoch_until: u64,
    /// The signed list as received, to hand on.
    pub signed: RevocationList,
}

impl VerifiedRevocationList {
    /// Whether the device with this public key is removed.
    pub fn is_revoked(&self, public_key: &[u8; PUBLIC_KEY_LEN]) -> bool {
        self.revoked.binary_search(public_key).is_ok()
    }

    /// Whether `key` is this list's group key.
    pub fn names_key(&self, key: &GroupKey) -> bool {
        // Not secret-dependent in a way that matters: the check value is
        // public to members and derived one-way from the key.
        group_key_check(key) == self.group_key_check
    }
}

/// Decodes a list from untrusted bytes (size-bounded, never panics).
pub fn decode_revocation_list(bytes: &[u8]) -> Result<RevocationList, RevocationError> {
    if bytes.len() > MAX_REVOCATION_LIST_BYTES {
        return Err(RevocationError::Malformed("too large"));
    }
    RevocationList::decode(bytes).map_err(|_| RevocationError::Malformed("protobuf"))
}

/// Checks `list` against the account's authority key: size, format,
/// account, signature. Lists carry no expiry: a newer serial replaces them.
pub fn verify_revocation_list(
    list: &RevocationList,
    authority_public_key: &[u8],
) -> Result<VerifiedRevocationList, RevocationError> {
    if list.body.len() > MAX_REVOCATION_LIST_BYTES {
        return Err(RevocationError::Malformed("too large"));
    }
    let body = RevocationListBody::decode(&list.body[..])
        .map_err(|_| RevocationError::Malformed("protobuf"))?;
    if body.version != REVOCATION_LIST_VERSION {
        return Err(RevocationError::UnsupportedVersion(body.version));
    }
    if body.revoked_keys.len() > MAX_REVOKED_KEYS {
        return Err(RevocationError::Malformed("too many revoked keys"));
    }
    let mut revoked: Vec<[u8; PUBLIC_KEY_LEN]> = Vec::with_capacity(body.revoked_keys.len());
    for key in &body.revoked_keys {
        let key: [u8; PUBLIC_KEY_LEN] = key
            .as_slice()
            .try_into()
            .map_err(|_| RevocationError::Malformed("revoked key length"))?;
        if revoked.last().is_some_and(|last| *last >= key) {
            return Err(RevocationError::Malformed("revoked keys not ascending"));
        }
        revoked.push(key);
    }
    let group_key_check: [u8; 32] = body
        .group_key_check
        .as_slice()
        .try_into()
        .map_err(|_| RevocationError::Malformed("group key check length"))?;
    if body.serial == 0 || body.group_key_epoch == 0 {
        return Err(RevocationError::Malformed("serial and epoch start at 1"));
    }
    if body.account_key_id.as_slice() != AccountKeyId::of(authority_public_key).0 {
        return Err(RevocationError::OtherAccount);
    }
    if !verify_signature(
        authority_public_key,
        &signed_message(&list.body),
        &list.signature,
    ) {
        return Err(RevocationError::BadSignature);
    }
    Ok(VerifiedRevocationList {
        serial: body.serial,
        revoked,
        group_key_epoch: body.group_key_epoch,
        group_key_check,
        issued_at: body.issued_at,
        previous_epoch_until: body.previous_epoch_until,
        signed: list.clone(),
    })
}

fn signed_message(body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(REVOCATION_LIST_CONTEXT.len() + body.len());
    m.extend_from_slice(REVOCATION_LIST_CONTEXT);
    m.extend_from_slice(body);
    m
}

/// Signs the list that follows `previous` (or the first one): serial + 1,
/// the previous removals plus `remove`, the epoch of `new_key` (previous
/// epoch + 1), and a grace period of [`GROUP_KEY_GRACE_S`] from `now`.
pub(crate) fn sign_next(
    authority: &DeviceKey,
    previous: Option<&VerifiedRevocationList>,
    remove: &[[u8; PUBLIC_KEY_LEN]],
    new_key: &GroupKey,
    now: u64,
) -> Result<RevocationList, RevocationError> {
    let mut revoked: Vec<[u8; PUBLIC_KEY_LEN]> =
        previous.map(|p| p.revoked.clone()).unwrap_or_default();
    revoked.extend_from_slice(remove);
    revoked.sort_unstable();
    revoked.dedup();
    if revoked.len() > MAX_REVOKED_KEYS {
        return Err(RevocationError::Malformed("too many revoked keys"));
    }
    let body = RevocationListBody {
        version: REVOCATION_LIST_VERSION,
        account_key_id: AccountKeyId::of(&authority.public_key()).0.to_vec(),
        serial: previous.map_or(1, |p| p.serial.saturating_add(1)),
        revoked_keys: revoked.iter().map(|k| k.to_vec()).collect(),
        group_key_epoch: previous.map_or(1, |p| p.group_key_epoch.saturating_add(1)),
        group_key_check: group_key_check(new_key).to_vec(),
        issued_at: now,
        previous_epoch_until: now.saturating_add(GROUP_KEY_GRACE_S),
    }
    .encode_to_vec();
    let signature = authority.sign(&signed_message(&body)).to_vec();
    Ok(RevocationList { body, signature })
}

/// A digest of a list's signed bytes (for logs and tests).
pub fn revocation_list_digest(list: &RevocationList) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(&list.body);
    ctx.update(&list.signature);
    let mut out = [0; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// Decodes and verifies untrusted list bytes, for the fuzz harness: never
/// panics, whatever the input.
#[doc(hidden)]
pub fn fuzz_revocation_list(bytes: &[u8], authority_public_key: &[u8]) {
    if let Ok(list) = decode_revocation_list(bytes)
        && let Ok(verified) = verify_revocation_list(&list, authority_public_key)
    {
        let _ = verified.is_revoked(&[0; PUBLIC_KEY_LEN]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AccountAuthority, Adopted, Credentials, LocalAuthority, Role};

    const NOW: u64 = 1_800_000_000;

    fn member(auth: &mut LocalAuthority, role: Role) -> Credentials {
        let key = DeviceKey::generate().unwrap();
        let grant = auth
            .enroll(&key.enrollment_request(role, [3; 16]), NOW)
            .unwrap();
        Credentials::from_grant(key, &grant, NOW).unwrap()
    }

    #[test]
    fn list_round_trips_and_names_the_removed_keys_and_the_new_key() {
        let mut auth = LocalAuthority::generate().unwrap();
        let lost = member(&mut auth, Role::Phone);
        let pk = lost.certificate().public_key;
        let (list, key) = auth.remove_devices(None, &[pk], NOW).unwrap();
        let bytes = list.encode_to_vec();
        let verified =
            verify_revocation_list(&decode_revocation_list(&bytes).unwrap(), &auth.public_key())
                .unwrap();
        assert_eq!(verified.serial, 1);
        assert_eq!(verified.group_key_epoch, 1);
        assert!(verified.is_revoked(&pk));
        assert!(!verified.is_revoked(&[0; 32]));
        assert!(verified.names_key(&key));
        assert_eq!(verified.previous_epoch_until, NOW + GROUP_KEY_GRACE_S);
        // Compact: one removed key costs its 32 bytes and a tag.
        assert!(bytes.len() < 200, "{} bytes", bytes.len());
        // The next list keeps the first removal and counts on.
        let other = [9; 32];
        let (next, _) = auth.remove_devices(Some(&verified), &[other], NOW).unwrap();
        let next = verify_revocation_list(&next, &auth.public_key()).unwrap();
        assert_eq!((next.serial, next.group_key_epoch), (2, 2));
        assert!(next.is_revoked(&pk) && next.is_revoked(&other));
    }

    #[test]
    fn forged_foreign_and_malformed_lists_are_typed_errors() {
        let mut auth = LocalAuthority::generate().unwrap();
        let other = LocalAuthority::generate().unwrap();
        let (list, _) = auth.remove_devices(None, &[[1; 32]], NOW).unwrap();
        let pk = auth.public_key();
        let mut forged = list.clone();
        forged.signature[0] ^= 1;
        assert_eq!(
            verify_revocation_list(&forged, &pk),
            Err(RevocationError::BadSignature)
        );
        assert_eq!(
            verify_revocation_list(&list, &other.public_key()),
            Err(RevocationError::OtherAccount)
        );
        let mut body = RevocationListBody::decode(&list.body[..]).unwrap();
        body.revoked_keys = vec![vec![2; 32], vec![1; 32]];
        let unordered = RevocationList {
            body: body.encode_to_vec(),
            signature: list.signature.clone(),
        };
        assert_eq!(
            verify_revocation_list(&unordered, &pk),
            Err(RevocationError::Malformed("revoked keys not ascending"))
        );
        body.revoked_keys = vec![vec![2; 31]];
        let short = RevocationList {
            body: body.encode_to_vec(),
            signature: list.signature.clone(),
        };
        assert!(matches!(
            verify_revocation_list(&short, &pk),
            Err(RevocationError::Malformed(_))
        ));
        body.version = 2;
        let future = RevocationList {
            body: body.encode_to_vec(),
            signature: list.signature,
        };
        assert_eq!(
            verify_revocation_list(&future, &pk),
            Err(RevocationError::UnsupportedVersion(2))
        );
        assert!(decode_revocation_list(&[0xff; 20]).is_err());
        assert!(decode_revocation_list(&vec![0; MAX_REVOCATION_LIST_BYTES + 1]).is_err());
        fuzz_revocation_list(&[0x0a, 0x80], &pk);
    }

    #[test]
    fn member_adopts_a_newer_list_with_its_key_and_ignores_an_older_one() {
        let mut auth = LocalAuthority::generate().unwrap();
        let watch = member(&mut auth, Role::Watch);
        let old = watch.group_key().unwrap();
        let (first, key1) = auth.remove_devices(None, &[[1; 32]], NOW).unwrap();
        // Without the new epoch's key, or with a wrong one, nothing changes.
        assert_eq!(watch.adopt(&first, None), Err(RevocationError::KeyMismatch));
        assert_eq!(
            watch.adopt(&first, Some(&[7; 32])),
            Err(RevocationError::KeyMismatch)
        );
        assert_eq!(watch.revocation_serial(), 0);
        assert_eq!(
            watch.adopt(&first, Some(key1.as_bytes())),
            Ok(Adopted::Updated { new_epoch: true })
        );
        assert_eq!(watch.group_key(), Some(key1.clone()));
        assert_eq!(watch.group_key_epoch(), 1);
        assert!(watch.is_revoked(&[1; 32]));
        // The old key stays accepted for the grace period only.
        assert_eq!(watch.previous_group_key(NOW + GROUP_KEY_GRACE_S), Some(old));
        assert_eq!(watch.previous_group_key(NOW + GROUP_KEY_GRACE_S + 1), None);
        let verified = watch.revocation_list().unwrap();
        let (second, key2) = auth
            .remove_devices(Some(&verified), &[[2; 32]], NOW)
            .unwrap();
        assert_eq!(
            watch.adopt(&second, Some(key2.as_bytes())),
            Ok(Adopted::Updated { new_epoch: true })
        );
        // The first list again is older: ignored, the key stays.
        assert_eq!(
            watch.adopt(&first, Some(key1.as_bytes())),
            Ok(Adopted::Ignored)
        );
        assert_eq!(watch.group_key(), Some(key2));
        assert_eq!(watch.revocation_serial(), 2);
    }

    #[test]
    fn a_grant_signed_before_a_rotation_still_verifies_after_it() {
        let mut auth = LocalAuthority::generate().unwrap();
        let grantee = LocalAuthority::generate().unwrap();
        let request = crate::GrantRequest {
            grantee_authority_public_key: grantee.public_key(),
            permissions: crate::Permissions::of(&[crate::SharePermission::VehicleStatus]),
            devices: Vec::new(),
            not_before: NOW - 60,
            not_after: NOW + 3600,
        };
        let grant = auth.sign_share_grant([4; 16], &request).unwrap();
        let before = auth.public_key();
        auth.remove_devices(None, &[[1; 32]], NOW).unwrap();
        // Only the authority signs grants (SPEC §17.1), and its signing key
        // does not rotate with the group key.
        assert_eq!(auth.public_key(), before);
        assert!(crate::verify_grant(&grant, &auth.public_key(), NOW).is_ok());
        assert!(matches!(
            auth.remove_devices(None, &[before], NOW),
            Err(RevocationError::Malformed(_))
        ));
    }
}
