//! Harness for the account's revocation list (SPEC §3.6): a member checking
//! a list handed over by a peer, and adopting it with a group key. Input:
//! the raw bytes of a `RevocationList`.

use prost::Message;
use tether_identity::{
    Adopted, Credentials, GroupKey, MAX_REVOCATION_LIST_BYTES, MAX_REVOKED_KEYS, Role,
    decode_revocation_list, fuzz_revocation_list, verify_revocation_list,
};

use super::{NOW, authority, device_key};

const GROUP_KEY: [u8; 32] = [0x5e; 32];
const NEW_GROUP_KEY: [u8; 32] = [0x6e; 32];

/// A watch of the fixture account, fresh for each input.
fn watch() -> Credentials {
    let mut authority = authority(0xe0, GROUP_KEY);
    let key = device_key(0xe1);
    let grant = tether_identity::AccountAuthority::enroll(
        &mut authority,
        &key.enrollment_request(Role::Watch, [0x3e; 16]),
        NOW,
    )
    .expect("a fresh key enrolls");
    Credentials::from_grant(key, &grant, NOW).expect("a grant just issued")
}

/// Any bytes: a typed result, never a panic. A list that verifies is within
/// its bounds, for the fixture account, with ascending keys; adopting it
/// with the new key either takes it (then the held serial is its serial)
/// or leaves the watch as it was.
pub fn revocation_list(data: &[u8]) {
    let owner = tether_identity::AccountAuthority::public_key(&authority(0xe0, GROUP_KEY));
    fuzz_revocation_list(data, &owner);
    let Ok(list) = decode_revocation_list(data) else {
        return;
    };
    assert!(data.len() <= MAX_REVOCATION_LIST_BYTES);
    if let Ok(verified) = verify_revocation_list(&list, &owner) {
        assert!(verified.revoked.len() <= MAX_REVOKED_KEYS);
        assert!(verified.revoked.windows(2).all(|w| w[0] < w[1]));
        assert!(verified.serial >= 1 && verified.group_key_epoch >= 1);
    }
    let watch = watch();
    match watch.adopt(&list, Some(&NEW_GROUP_KEY)) {
        Ok(Adopted::Updated { .. }) => {
            let held = watch.revocation_list().expect("adopted");
            assert_eq!(held.signed.encode_to_vec(), list.encode_to_vec());
            assert_eq!(
                watch.group_key(),
                Some(GroupKey::from_bytes(&NEW_GROUP_KEY).expect("32 bytes"))
            );
        }
        Ok(Adopted::Ignored) => unreachable!("a fresh watch holds no list"),
        Err(_) => {
            assert_eq!(watch.revocation_serial(), 0);
            assert_eq!(
                watch.group_key(),
                Some(GroupKey::from_bytes(&GROUP_KEY).expect("32 bytes"))
            );
        }
    }
}

pub(super) fn seeds(add: &mut dyn FnMut(&'static str, &str, Vec<u8>)) {
    let mut owner = authority(0xe0, GROUP_KEY);
    let new_key = GroupKey::from_bytes(&NEW_GROUP_KEY).expect("32 bytes");
    let lost = device_key(0xe2).public_key();
    let list = owner
        .rotate_to(None, &[lost, [0x11; 32]], &new_key, NOW)
        .expect("a list");
    add("revocation_list", "list", list.encode_to_vec());
    let mut forged = list.clone();
    forged.signature[0] ^= 1;
    add("revocation_list", "bad_signature", forged.encode_to_vec());
    let other = authority(0xe3, GROUP_KEY)
        .rotate_to(None, &[lost], &new_key, NOW)
        .expect("a list");
    add("revocation_list", "other_account", other.encode_to_vec());
    add("revocation_list", "empty", Vec::new());
}
