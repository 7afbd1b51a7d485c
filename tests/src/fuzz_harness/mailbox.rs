//! Harness for mailbox letters (SPEC §19.12): what the broker delivers to
//! the car's mailbox. Input: a mode byte, then bytes. Even mode: the bytes
//! are a sealed letter as delivered. Odd mode: the bytes are sealed first
//! (under the account's mailbox key, a fixed nonce), so the decoding behind
//! the seal (`Letter`, `LetterBody`, certificate, signature) is reached.

use tether_identity::{
    AccountAuthority, Credentials, GroupKey, LetterContents, MAX_SEALED_LETTER, Role,
    letter_plaintext_for_fuzzing,
};

use super::{NOW, authority, device_key};

const GROUP_KEY: [u8; 32] = [0x4d; 32];

fn member(role: Role, seed: u8) -> Credentials {
    let mut authority = authority(0xd0, GROUP_KEY);
    let key = device_key(seed);
    let grant = AccountAuthority::enroll(
        &mut authority,
        &key.enrollment_request(role, [0x4e; 16]),
        NOW,
    )
    .expect("a fresh key enrolls");
    Credentials::from_grant(key, &grant, NOW).expect("a grant just issued")
}

fn mailbox_key() -> tether_identity::MailboxKey {
    GroupKey::from_bytes(&GROUP_KEY)
        .expect("32 bytes")
        .mailbox_key()
}

/// Any bytes: a typed result, never a panic. A letter that opens is for
/// the car's mailbox, from a member of the fixture account, and its ids
/// are 16 bytes.
pub fn mailbox_letter(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let car = member(Role::Vehicle, 0xd1);
    let key = mailbox_key();
    let mailbox = key.car_mailbox();
    let sealed = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        key.seal_plaintext_for_fuzzing(&mailbox, rest, [0x4f; 12])
    };
    if let Ok(letter) = key.open(&car, &mailbox, &sealed, NOW) {
        assert!(sealed.len() <= MAX_SEALED_LETTER);
        assert_eq!(
            letter.sender.account_key_id,
            car.certificate().account_key_id
        );
        assert!(!car.is_revoked(&letter.sender.public_key));
    }
}

pub(super) fn seeds(add: &mut dyn FnMut(&'static str, &str, Vec<u8>)) {
    let phone = member(Role::Phone, 0xd2);
    let key = mailbox_key();
    let mailbox = key.car_mailbox();
    let contents = LetterContents {
        not_after_unix_ms: NOW * 1000 + 60_000,
        reply_mailbox: key.member_mailbox(&phone.certificate().public_key),
        payload: vec![0x0a, 0x02, 0x08, 0x01],
        in_reply_to: None,
    };
    let plain = letter_plaintext_for_fuzzing(&phone, &mailbox, &contents, [0x4c; 16]);
    let with_mode = |mode: u8, bytes: &[u8]| [&[mode][..], bytes].concat();
    add("mailbox_letter", "plaintext_valid", with_mode(1, &plain));
    let sealed = key.seal_plaintext_for_fuzzing(&mailbox, &plain, [0x4b; 12]);
    add("mailbox_letter", "sealed_valid", with_mode(0, &sealed));
    let mut flipped = sealed.clone();
    flipped[20] ^= 1;
    add("mailbox_letter", "sealed_flipped", with_mode(0, &flipped));
    add(
        "mailbox_letter",
        "sealed_truncated",
        with_mode(0, &sealed[..20]),
    );
    let reply = LetterContents {
        in_reply_to: Some([0x4a; 16]),
        ..contents
    };
    let answer = letter_plaintext_for_fuzzing(&phone, &mailbox, &reply, [0x49; 16]);
    add("mailbox_letter", "plaintext_answer", with_mode(1, &answer));
    add(
        "mailbox_letter",
        "plaintext_garbage",
        with_mode(1, &[0xff; 40]),
    );
    add("mailbox_letter", "version_2", with_mode(0, &[2; 40]));
}
