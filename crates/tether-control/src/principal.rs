//! Who a command is from, for idempotency (SPEC §8.3): the vehicle's
//! command log keys each command by `(principal, idempotency key)`, so one
//! principal can never receive another's receipt by reusing its key.

/// Bytes of a member device's public key in [`Principal::Device`].
pub const DEVICE_PRINCIPAL_LEN: usize = 32;
/// Bytes of a share grant's id in [`Principal::Grant`].
pub const GRANT_PRINCIPAL_LEN: usize = 16;

/// The requester a command's idempotency key belongs to. The host names it
/// from what the session layer proved about the peer (SPEC §8.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Principal {
    /// A member device of the car's account: the Ed25519 public key its
    /// verified certificate names (the owner's phone, watch, hub).
    Device([u8; DEVICE_PRINCIPAL_LEN]),
    /// A co-user admitted by a share grant: the grant's id, whichever of
    /// the co-user's devices sends (SPEC §17).
    Grant([u8; GRANT_PRINCIPAL_LEN]),
    /// The car's own super tasks (SPEC §18.6).
    Automation,
    /// One shared principal for callers that name none
    /// ([`crate::PeerInfo::new`]): tests and single-peer hosts. A host that
    /// serves more than one requester must name each.
    Unnamed,
}

impl Principal {
    /// A stable byte form for a store: a tag byte, then the id. Distinct
    /// principals never share a form, and none is empty (the empty form is
    /// left to records older than principals, which match no requester).
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Principal::Device(key) => [&[1u8][..], key].concat(),
            Principal::Grant(id) => [&[2u8][..], id].concat(),
            Principal::Automation => vec![3],
            Principal::Unnamed => vec![4],
        }
    }
}
