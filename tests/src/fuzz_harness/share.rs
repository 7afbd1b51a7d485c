//! Harness for share grants (SPEC §17): a co-user's phone accepting an
//! invite, and the car verifying a grant it is asked to install. Input: the
//! raw bytes, tried as a `ShareInvite` and as a `ShareGrant`.

use prost::Message;
use tether_identity::{
    GrantRequest, MAX_SHARE_GRANT_BYTES, Permissions, SharePermission, accept_invite, fuzz_invite,
};
use tether_proto::v1::ShareInvite;

use super::{NOW, authority};

/// The co-user account the invites are for (what `fuzz_invite` checks).
const GRANTEE: [u8; 32] = [7; 32];

/// Any bytes: a typed result, never a panic; an accepted invite is for
/// [`GRANTEE`], within its size bound, and valid at the fixed time.
pub fn share_invite(data: &[u8]) {
    fuzz_invite(data);
    if let Ok(accepted) = accept_invite(data, &GRANTEE, 1_800_000_000) {
        assert!(data.len() <= MAX_SHARE_GRANT_BYTES);
        assert_eq!(accepted.grant.grantee_authority_public_key, GRANTEE);
        assert!(accepted.grant.is_valid_at(1_800_000_000));
        assert!(accepted.sharer_nickname.len() <= 64);
    }
}

pub(super) fn seeds(add: &mut dyn FnMut(&'static str, &str, Vec<u8>)) {
    let owner = authority(0xc0, [0x5c; 32]);
    let grant = owner
        .sign_share_grant(
            [0x61; 16],
            &GrantRequest {
                grantee_authority_public_key: GRANTEE,
                permissions: Permissions::of(&[
                    SharePermission::VehicleStatus,
                    SharePermission::DeviceControl,
                ]),
                devices: vec![[0xd1; 32]],
                not_before: NOW - 60,
                not_after: 1_800_000_000 + 3600,
            },
        )
        .expect("a valid grant");
    let invite = ShareInvite {
        grant: Some(grant.clone()),
        grant_key: vec![0x99; 32],
        owner_authority_public_key: tether_identity::AccountAuthority::public_key(&owner).to_vec(),
        sharer_nickname: "Ana".into(),
    };
    add("share_invite", "invite", invite.encode_to_vec());
    add("share_invite", "grant", grant.encode_to_vec());
    let mut tampered = invite.clone();
    if let Some(g) = tampered.grant.as_mut() {
        g.signature[0] ^= 1;
    }
    add("share_invite", "bad_signature", tampered.encode_to_vec());
    add("share_invite", "empty", Vec::new());
}
