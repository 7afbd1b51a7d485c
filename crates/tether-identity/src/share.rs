//! Share grants (R16, R19; SPEC §17): the owner's authority signs a scoped,
//! expiring grant naming a co-user's account authority; a random grant key
//! travels with it to the co-user and to the car, and the handshake's
//! admission and discovery keys derive from it. The co-user never receives
//! the owner's group key, so it can neither resolve the owner's other tokens
//! nor pose as a member.

use prost::Message;
use ring::rand::{SecureRandom, SystemRandom};
use tether_proto::v1::{ShareGrant, ShareGrantBody, ShareInvite, SharePermission};
use thiserror::Error;

use crate::certificate::AccountKeyId;
use crate::keys::{DeviceKey, PUBLIC_KEY_LEN, hkdf_sha256, verify_signature};

/// The grant format version this crate writes and accepts.
pub const SHARE_GRANT_VERSION: u32 = 1;
/// Signature context of a grant body.
pub const SHARE_GRANT_CONTEXT: &[u8] = b"tether/1 share grant\0";
/// Grants (and invites) larger than this are rejected before decoding.
pub const MAX_SHARE_GRANT_BYTES: usize = 4096;
/// At most this many devices in one grant.
pub const MAX_SHARED_DEVICES: usize = 64;
/// Bytes of a grant id.
pub const GRANT_ID_LEN: usize = 16;

/// A grant or invite was rejected. Each variant is the sender's fault.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShareError {
    /// Not a grant: bad protobuf, wrong lengths, too large, unknown permission.
    #[error("malformed share grant: {0}")]
    Malformed(&'static str),
    /// The grant format version is not one we understand.
    #[error("unsupported share grant version {0}")]
    UnsupportedVersion(u32),
    /// Not signed by the expected owner's authority.
    #[error("share grant signature does not verify")]
    BadSignature,
    /// `now` is before `not_before`.
    #[error("share grant is not yet valid")]
    NotYetValid,
    /// `now` is after `not_after`.
    #[error("share grant has expired")]
    Expired,
    /// The system random source failed.
    #[error("the system random source failed")]
    Random,
}

/// The permissions of a grant, as a set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Permissions(u32);

impl Permissions {
    /// No permission at all.
    pub const NONE: Self = Self(0);

    /// The set holding `permissions`.
    pub fn of(permissions: &[SharePermission]) -> Self {
        permissions.iter().fold(Self::NONE, |set, p| set.with(*p))
    }

    /// This set plus `permission`.
    pub fn with(self, permission: SharePermission) -> Self {
        match permission {
            SharePermission::Unspecified => self,
            p => Self(self.0 | 1 << (p as u32)),
        }
    }

    /// Whether `permission` is in the set.
    pub fn allows(self, permission: SharePermission) -> bool {
        permission != SharePermission::Unspecified && self.0 & (1 << (permission as u32)) != 0
    }

    /// The permissions in the set, in wire order.
    pub fn to_vec(self) -> Vec<SharePermission> {
        (1..32)
            .filter_map(|n| SharePermission::try_from(n).ok())
            .filter(|p| self.allows(*p))
            .collect()
    }
}

/// The secret of one grant (32 random bytes). Both the car and the co-user
/// hold it; nobody else does.
#[derive(Clone, PartialEq, Eq)]
pub struct GrantKey([u8; 32]);

impl std::fmt::Debug for GrantKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GrantKey(..)")
    }
}

impl GrantKey {
    /// A fresh grant key.
    pub fn generate() -> Result<Self, ShareError> {
        let mut key = [0; 32];
        SystemRandom::new()
            .fill(&mut key)
            .map_err(|_| ShareError::Random)?;
        Ok(Self(key))
    }

    /// Wraps received or stored bytes; they must be exactly 32.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ShareError> {
        Ok(Self(
            bytes
                .try_into()
                .map_err(|_| ShareError::Malformed("grant key length"))?,
        ))
    }

    /// The raw key, for the store and the invite.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Key of the handshake's admission proof under this grant: HKDF info
    /// `tether/1 grant admission`.
    pub fn admission_key(&self) -> [u8; 32] {
        hkdf_sha256(b"tether/1 grant key", &self.0, b"tether/1 grant admission")
    }

    /// Key of the discovery tokens the car advertises for this grant's
    /// grantee: HKDF info `tether/1 grant discovery`.
    pub fn discovery_key(&self) -> [u8; 32] {
        hkdf_sha256(b"tether/1 grant key", &self.0, b"tether/1 grant discovery")
    }

    /// Key of the rendezvous topics at which the car answers this grant's
    /// grantee on an MQTT relay (SPEC §19.2): HKDF info `tether/1 grant
    /// relay`. The co-user never learns the owner's relay key.
    pub fn relay_key(&self) -> [u8; 32] {
        hkdf_sha256(b"tether/1 grant key", &self.0, b"tether/1 grant relay")
    }

    /// Key of this grant's mailboxes on an MQTT relay (SPEC §19.12): the
    /// car's mailbox for the grantee's letters and the grantee's devices'
    /// own, named and sealed as the account's are. HKDF info `tether/1
    /// grant mailbox`: the co-user never learns the owner's mailbox key,
    /// and two grants' mailboxes share nothing.
    pub fn mailbox_key(&self) -> crate::MailboxKey {
        crate::MailboxKey::new(hkdf_sha256(
            b"tether/1 grant key",
            &self.0,
            b"tether/1 grant mailbox",
        ))
    }
}

/// A grant whose signature, format and validity have been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedGrant {
    /// Names the grant.
    pub grant_id: [u8; GRANT_ID_LEN],
    /// The issuing (owner's) account.
    pub owner: AccountKeyId,
    /// The co-user account's authority public key.
    pub grantee_authority_public_key: [u8; PUBLIC_KEY_LEN],
    /// What the grantee may do.
    pub permissions: Permissions,
    /// The device public keys the grant covers.
    pub devices: Vec<[u8; PUBLIC_KEY_LEN]>,
    /// Start of validity, Unix seconds.
    pub not_before: u64,
    /// End of validity, Unix seconds.
    pub not_after: u64,
}

impl VerifiedGrant {
    /// Whether `device` (its public key) is covered.
    pub fn covers_device(&self, device: &[u8; PUBLIC_KEY_LEN]) -> bool {
        self.devices.iter().any(|d| d == device)
    }

    /// Whether the grant is valid at `now` (Unix seconds).
    pub fn is_valid_at(&self, now: u64) -> bool {
        self.not_before <= now && now <= self.not_after
    }
}

/// What the owner decides to share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRequest {
    /// The co-user account's authority public key.
    pub grantee_authority_public_key: [u8; PUBLIC_KEY_LEN],
    /// What the co-user may do.
    pub permissions: Permissions,
    /// The devices covered.
    pub devices: Vec<[u8; PUBLIC_KEY_LEN]>,
    /// Start of validity, Unix seconds.
    pub not_before: u64,
    /// End of validity, Unix seconds.
    pub not_after: u64,
}

/// Signs a grant with the owner's authority key. `grant_id` must be 16
/// random bytes.
pub fn sign_grant(
    authority: &DeviceKey,
    grant_id: [u8; GRANT_ID_LEN],
    request: &GrantRequest,
) -> Result<ShareGrant, ShareError> {
    if request.devices.len() > MAX_SHARED_DEVICES {
        return Err(ShareError::Malformed("too many devices"));
    }
    if request.not_after < request.not_before {
        return Err(ShareError::Malformed("validity ends before it starts"));
    }
    let body = ShareGrantBody {
        version: SHARE_GRANT_VERSION,
        grant_id: grant_id.to_vec(),
        owner_account_key_id: AccountKeyId::of(&authority.public_key()).0.to_vec(),
        grantee_authority_public_key: request.grantee_authority_public_key.to_vec(),
        permissions: request
            .permissions
            .to_vec()
            .into_iter()
            .map(|p| p as i32)
            .collect(),
        devices: request.devices.iter().map(|d| d.to_vec()).collect(),
        not_before: request.not_before,
        not_after: request.not_after,
    }
    .encode_to_vec();
    let signature = authority.sign(&signed_message(&body)).to_vec();
    Ok(ShareGrant { body, signature })
}

fn signed_message(body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SHARE_GRANT_CONTEXT.len() + body.len());
    m.extend_from_slice(SHARE_GRANT_CONTEXT);
    m.extend_from_slice(body);
    m
}

/// Checks a grant against the owner's authority key and the clock.
pub fn verify_grant(
    grant: &ShareGrant,
    owner_authority_public_key: &[u8; PUBLIC_KEY_LEN],
    now: u64,
) -> Result<VerifiedGrant, ShareError> {
    let verified = verify_grant_signature(grant, owner_authority_public_key)?;
    if now < verified.not_before {
        return Err(ShareError::NotYetValid);
    }
    if now > verified.not_after {
        return Err(ShareError::Expired);
    }
    Ok(verified)
}

/// Checks format and signature only (for a stored grant read back to be
/// revoked or listed after it expired).
pub fn verify_grant_signature(
    grant: &ShareGrant,
    owner_authority_public_key: &[u8; PUBLIC_KEY_LEN],
) -> Result<VerifiedGrant, ShareError> {
    if grant.body.len() > MAX_SHARE_GRANT_BYTES {
        return Err(ShareError::Malformed("grant too large"));
    }
    let body = ShareGrantBody::decode(grant.body.as_slice())
        .map_err(|_| ShareError::Malformed("undecodable grant body"))?;
    if body.version != SHARE_GRANT_VERSION {
        return Err(ShareError::UnsupportedVersion(body.version));
    }
    if !verify_signature(
        owner_authority_public_key,
        &signed_message(&grant.body),
        &grant.signature,
    ) {
        return Err(ShareError::BadSignature);
    }
    let owner = AccountKeyId::of(owner_authority_public_key);
    if body.owner_account_key_id != owner.0 {
        return Err(ShareError::BadSignature);
    }
    let grant_id = body
        .grant_id
        .as_slice()
        .try_into()
        .map_err(|_| ShareError::Malformed("grant id length"))?;
    let grantee_authority_public_key = body
        .grantee_authority_public_key
        .as_slice()
        .try_into()
        .map_err(|_| ShareError::Malformed("grantee key length"))?;
    if body.devices.len() > MAX_SHARED_DEVICES {
        return Err(ShareError::Malformed("too many devices"));
    }
    let devices = body
        .devices
        .iter()
        .map(|d| {
            d.as_slice()
                .try_into()
                .map_err(|_| ShareError::Malformed("device key length"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut permissions = Permissions::NONE;
    for p in &body.permissions {
        let p = SharePermission::try_from(*p)
            .map_err(|_| ShareError::Malformed("unknown permission"))?;
        permissions = permissions.with(p);
    }
    Ok(VerifiedGrant {
        grant_id,
        owner,
        grantee_authority_public_key,
        permissions,
        devices,
        not_before: body.not_before,
        not_after: body.not_after,
    })
}

/// An invite the co-user received, checked.
#[derive(Debug, Clone)]
pub struct AcceptedInvite {
    /// The grant, verified under the owner's key.
    pub grant: VerifiedGrant,
    /// The signed grant as received.
    pub signed: ShareGrant,
    /// The grant's secret.
    pub grant_key: GrantKey,
    /// The owner's authority public key (the car's certificate verifies under it).
    pub owner_authority_public_key: [u8; PUBLIC_KEY_LEN],
    /// Shown to the co-user (R22).
    pub sharer_nickname: String,
}

/// Decodes and checks an invite for the co-user whose authority key is
/// `own_authority_public_key`.
pub fn accept_invite(
    bytes: &[u8],
    own_authority_public_key: &[u8; PUBLIC_KEY_LEN],
    now: u64,
) -> Result<AcceptedInvite, ShareError> {
    if bytes.len() > MAX_SHARE_GRANT_BYTES {
        return Err(ShareError::Malformed("invite too large"));
    }
    let invite =
        ShareInvite::decode(bytes).map_err(|_| ShareError::Malformed("undecodable invite"))?;
    let owner: [u8; PUBLIC_KEY_LEN] = invite
        .owner_authority_public_key
        .as_slice()
        .try_into()
        .map_err(|_| ShareError::Malformed("owner key length"))?;
    let signed = invite.grant.ok_or(ShareError::Malformed("missing grant"))?;
    let grant = verify_grant(&signed, &owner, now)?;
    if &grant.grantee_authority_public_key != own_authority_public_key {
        return Err(ShareError::Malformed("invite is for another account"));
    }
    if invite.sharer_nickname.len() > 64 {
        return Err(ShareError::Malformed("nickname too long"));
    }
    Ok(AcceptedInvite {
        grant,
        signed,
        grant_key: GrantKey::from_bytes(&invite.grant_key)?,
        owner_authority_public_key: owner,
        sharer_nickname: invite.sharer_nickname,
    })
}

/// Fuzz oracle: any bytes give a typed result, never a panic.
pub fn fuzz_invite(bytes: &[u8]) {
    let _ = accept_invite(bytes, &[7; PUBLIC_KEY_LEN], 1_800_000_000);
    if let Ok(grant) = ShareGrant::decode(bytes) {
        let _ = verify_grant(&grant, &[7; PUBLIC_KEY_LEN], 1_800_000_000);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_keys_differ_by_purpose_and_grant() {
        let a = GrantKey::from_bytes(&[1; 32]).unwrap();
        let b = GrantKey::from_bytes(&[2; 32]).unwrap();
        let all = [a.admission_key(), a.discovery_key(), a.relay_key()];
        assert_ne!(all[0], all[1]);
        assert_ne!(all[0], all[2]);
        assert_ne!(all[1], all[2]);
        assert_ne!(a.relay_key(), b.relay_key());
        assert_eq!(
            a.relay_key(),
            hkdf_sha256(b"tether/1 grant key", &[1; 32], b"tether/1 grant relay")
        );
    }
}
