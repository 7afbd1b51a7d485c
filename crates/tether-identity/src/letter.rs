//! Letters for a member that is away (SPEC §19.12): a command left for a
//! sleeping car, and the car's answer. Pure functions, no I/O: the relay
//! carries the sealed bytes, the node acts on what opens.
//!
//! A letter is signed by the sender's device key (so the receiver knows
//! which member sent it, as a session would tell it) and sealed with
//! ChaCha20-Poly1305 under the account's mailbox key, with the mailbox id
//! as associated data: the broker that queues it learns neither sender,
//! content nor deadline, cannot forge one, and cannot move one to another
//! mailbox. Replays are the receiver's to refuse (the car's command log).

use prost::Message;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use tether_proto::v1::{Letter, LetterBody};

use crate::{CertificateError, Credentials, Role, VerifiedCertificate, verify_signature};

/// Length of a mailbox id and a letter id.
pub const MAILBOX_ID_LEN: usize = 16;

/// The sealed format's version byte.
pub const LETTER_VERSION: u8 = 1;

/// The largest sealed letter accepted (a command and a certificate fit in
/// well under 2 KiB).
pub const MAX_SEALED_LETTER: usize = 4096;

const SIGNATURE_CONTEXT: &[u8] = b"tether/1 letter\0";
const SEAL_CONTEXT: &[u8] = b"tether/1 letter seal\0";
const TAG_LEN: usize = 16;

/// A letter that does not open or does not verify. Every variant means
/// "drop it": the receiver answers nothing to what it cannot authenticate.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LetterError {
    /// Shorter than version, nonce and tag.
    #[error("letter truncated")]
    Truncated,
    /// Larger than [`MAX_SEALED_LETTER`].
    #[error("letter too large ({0} bytes)")]
    TooLarge(usize),
    /// A version this build does not know.
    #[error("unsupported letter version {0}")]
    UnsupportedVersion(u8),
    /// The seal does not open under this mailbox's key and id (another
    /// account's, forged, altered, or moved from another mailbox).
    #[error("letter does not open")]
    Unsealed,
    /// It opened but is not a well-formed letter.
    #[error("malformed letter: {0}")]
    Malformed(&'static str),
    /// The sender's certificate is not valid for this account now.
    #[error("sender certificate: {0}")]
    Certificate(#[from] CertificateError),
    /// The sender was removed from the account (SPEC §3.6).
    #[error("sender is revoked")]
    Revoked,
    /// The sender's signature does not verify.
    #[error("letter signature does not verify")]
    BadSignature,
    /// Sealed for another mailbox than the one it arrived in.
    #[error("letter is for another mailbox")]
    WrongMailbox,
    /// The system random source failed (sealing).
    #[error("system random source failed")]
    Random,
}

/// The account's mailbox key (HKDF info `tether/1 mailbox` from the group
/// key): names the mailboxes and seals the letters.
#[derive(Clone)]
pub struct MailboxKey([u8; 32]);

impl std::fmt::Debug for MailboxKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MailboxKey(..)")
    }
}

/// What goes into a letter besides the sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LetterContents {
    /// Unix milliseconds after which it must not be acted on.
    pub not_after_unix_ms: u64,
    /// Where the answer goes (the sender's own mailbox).
    pub reply_mailbox: [u8; MAILBOX_ID_LEN],
    /// An encoded Envelope.
    pub payload: Vec<u8>,
    /// The letter this answers, if it is an answer.
    pub in_reply_to: Option<[u8; MAILBOX_ID_LEN]>,
}

/// A letter that opened and whose sender verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedLetter {
    /// The sender's certificate, checked against the account at the time
    /// given to [`MailboxKey::open`] and against the revocation list.
    pub sender: VerifiedCertificate,
    /// The letter's own id.
    pub letter_id: [u8; MAILBOX_ID_LEN],
    /// Everything else.
    pub contents: LetterContents,
}

fn id16(bytes: &[u8], what: &'static str) -> Result<[u8; MAILBOX_ID_LEN], LetterError> {
    bytes.try_into().map_err(|_| LetterError::Malformed(what))
}

impl MailboxKey {
    pub(crate) fn new(key: [u8; 32]) -> Self {
        Self(key)
    }

    fn mac(&self, parts: &[&[u8]]) -> hmac::Tag {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.0);
        let mut ctx = hmac::Context::with_key(&key);
        for p in parts {
            ctx.update(p);
        }
        ctx.sign()
    }

    fn truncated(&self, parts: &[&[u8]]) -> [u8; MAILBOX_ID_LEN] {
        let tag = self.mac(parts);
        let mut out = [0; MAILBOX_ID_LEN];
        out.copy_from_slice(&tag.as_ref()[..MAILBOX_ID_LEN]);
        out
    }

    /// The head unit's mailbox: HMAC(key, "tether/1 car mailbox")[0..16].
    pub fn car_mailbox(&self) -> [u8; MAILBOX_ID_LEN] {
        self.truncated(&[b"tether/1 car mailbox"])
    }

    /// A member's own mailbox, where answers and pushes wait for it:
    /// HMAC(key, "tether/1 member mailbox\0" || device public key)[0..16].
    pub fn member_mailbox(&self, device_public_key: &[u8; 32]) -> [u8; MAILBOX_ID_LEN] {
        self.truncated(&[b"tether/1 member mailbox\0", device_public_key])
    }

    /// The MQTT client id under which the broker keeps `mailbox`'s
    /// persistent session: 20 lower-case hex characters of
    /// HMAC(key, "tether/1 mailbox client\0" || mailbox), so the owner of
    /// the mailbox finds its session again after a sleep, and the id names
    /// nobody without the key.
    pub fn client_id(&self, mailbox: &[u8; MAILBOX_ID_LEN]) -> String {
        let tag = self.mac(&[b"tether/1 mailbox client\0", mailbox]);
        tag.as_ref()[..10]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn aead(&self) -> LessSafeKey {
        let key = crate::keys::hkdf_sha256(SEAL_CONTEXT, &self.0, b"tether/1 letter key");
        // A 32-byte key is what CHACHA20_POLY1305 takes: cannot fail.
        LessSafeKey::new(
            UnboundKey::new(&CHACHA20_POLY1305, &key)
                .unwrap_or_else(|_| unreachable!("a 32-byte key fits ChaCha20-Poly1305")),
        )
    }

    /// Signs `contents` as `credentials`' device and seals the letter for
    /// `mailbox`. Returns the sealed bytes and the letter's id.
    pub fn seal(
        &self,
        credentials: &Credentials,
        mailbox: &[u8; MAILBOX_ID_LEN],
        contents: &LetterContents,
    ) -> Result<(Vec<u8>, [u8; MAILBOX_ID_LEN]), LetterError> {
        let rng = SystemRandom::new();
        let mut letter_id = [0; MAILBOX_ID_LEN];
        rng.fill(&mut letter_id).map_err(|_| LetterError::Random)?;
        let plain = letter_plaintext(credentials, mailbox, contents, letter_id);
        let mut nonce = [0; NONCE_LEN];
        rng.fill(&mut nonce).map_err(|_| LetterError::Random)?;
        let out = self.seal_plaintext(mailbox, plain, nonce);
        if out.len() > MAX_SEALED_LETTER {
            return Err(LetterError::TooLarge(out.len()));
        }
        Ok((out, letter_id))
    }

    fn seal_plaintext(
        &self,
        mailbox: &[u8; MAILBOX_ID_LEN],
        mut plain: Vec<u8>,
        nonce: [u8; NONCE_LEN],
    ) -> Vec<u8> {
        // Sealing in place cannot fail for a plaintext this size.
        if self
            .aead()
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(mailbox),
                &mut plain,
            )
            .is_err()
        {
            return Vec::new();
        }
        let mut out = Vec::with_capacity(1 + NONCE_LEN + plain.len());
        out.push(LETTER_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&plain);
        out
    }

    /// Seals raw bytes as a letter's plaintext with a given nonce, so the
    /// fuzz harness reaches the decoding behind the seal. Not for use: a
    /// nonce must never repeat under one key.
    #[doc(hidden)]
    pub fn seal_plaintext_for_fuzzing(
        &self,
        mailbox: &[u8; MAILBOX_ID_LEN],
        plain: &[u8],
        nonce: [u8; NONCE_LEN],
    ) -> Vec<u8> {
        self.seal_plaintext(mailbox, plain.to_vec(), nonce)
    }

    /// Opens a letter that arrived in `mailbox` and verifies its sender
    /// against `credentials`' account at `now` (Unix seconds): a valid
    /// certificate of the account, not revoked, whose key signed the body.
    /// The deadline is the caller's to check (it may answer "expired").
    pub fn open(
        &self,
        credentials: &Credentials,
        mailbox: &[u8; MAILBOX_ID_LEN],
        sealed: &[u8],
        now: u64,
    ) -> Result<OpenedLetter, LetterError> {
        let letter = self.open_under(
            credentials,
            credentials.authority_public_key(),
            mailbox,
            sealed,
            now,
        )?;
        if credentials.is_revoked(&letter.sender.public_key) {
            return Err(LetterError::Revoked);
        }
        Ok(letter)
    }

    /// Opens a letter of a share grant's mailbox (SPEC §19.12, co-users):
    /// the sender's certificate must be valid at `now` under `authority`,
    /// the **other** account's authority (the grantee's, when the car reads
    /// a co-user's letter; the owner's, when the co-user reads the car's
    /// answer). No revocation list is consulted: the reader holds none of
    /// that account; the grant itself is what the owner revokes.
    pub fn open_under(
        &self,
        credentials: &Credentials,
        authority: &[u8],
        mailbox: &[u8; MAILBOX_ID_LEN],
        sealed: &[u8],
        now: u64,
    ) -> Result<OpenedLetter, LetterError> {
        let letter = self.unseal(mailbox, sealed)?;
        let cert = letter
            .sender
            .as_ref()
            .ok_or(LetterError::Malformed("no sender"))?;
        let sender = credentials.verify_peer_certificate(cert, authority, now)?;
        if !verify_signature(
            &sender.public_key,
            &[SIGNATURE_CONTEXT, &letter.body].concat(),
            &letter.signature,
        ) {
            return Err(LetterError::BadSignature);
        }
        let body = LetterBody::decode(letter.body.as_slice())
            .map_err(|_| LetterError::Malformed("body"))?;
        if body.mailbox_id != mailbox {
            return Err(LetterError::WrongMailbox);
        }
        Ok(OpenedLetter {
            sender,
            letter_id: id16(&body.letter_id, "letter id")?,
            contents: LetterContents {
                not_after_unix_ms: body.not_after_unix_ms,
                reply_mailbox: id16(&body.reply_mailbox_id, "reply mailbox")?,
                payload: body.payload,
                in_reply_to: match body.in_reply_to.len() {
                    0 => None,
                    _ => Some(id16(&body.in_reply_to, "in reply to")?),
                },
            },
        })
    }

    /// Only the seal and the outer decoding (no certificate): for the fuzz
    /// harness and [`MailboxKey::open`].
    pub fn unseal(
        &self,
        mailbox: &[u8; MAILBOX_ID_LEN],
        sealed: &[u8],
    ) -> Result<Letter, LetterError> {
        if sealed.len() > MAX_SEALED_LETTER {
            return Err(LetterError::TooLarge(sealed.len()));
        }
        if sealed.len() < 1 + NONCE_LEN + TAG_LEN {
            return Err(LetterError::Truncated);
        }
        if sealed[0] != LETTER_VERSION {
            return Err(LetterError::UnsupportedVersion(sealed[0]));
        }
        let nonce: [u8; NONCE_LEN] = sealed[1..1 + NONCE_LEN]
            .try_into()
            .map_err(|_| LetterError::Truncated)?;
        let mut buf = sealed[1 + NONCE_LEN..].to_vec();
        let plain = self
            .aead()
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(mailbox),
                &mut buf,
            )
            .map_err(|_| LetterError::Unsealed)?;
        Letter::decode(&plain[..]).map_err(|_| LetterError::Malformed("letter"))
    }
}

/// The signed, encoded `Letter` (before the seal).
fn letter_plaintext(
    credentials: &Credentials,
    mailbox: &[u8; MAILBOX_ID_LEN],
    contents: &LetterContents,
    letter_id: [u8; MAILBOX_ID_LEN],
) -> Vec<u8> {
    let body = LetterBody {
        mailbox_id: mailbox.to_vec(),
        letter_id: letter_id.to_vec(),
        not_after_unix_ms: contents.not_after_unix_ms,
        reply_mailbox_id: contents.reply_mailbox.to_vec(),
        payload: contents.payload.clone(),
        in_reply_to: contents.in_reply_to.map(|i| i.to_vec()).unwrap_or_default(),
    }
    .encode_to_vec();
    let signature = credentials.key().sign(&[SIGNATURE_CONTEXT, &body].concat());
    Letter {
        sender: Some(credentials.certificate_message().clone()),
        body,
        signature: signature.to_vec(),
    }
    .encode_to_vec()
}

/// [`letter_plaintext`] with a given letter id, for the fuzz harness's
/// seeds (deterministic: Ed25519 signatures are).
#[doc(hidden)]
pub fn letter_plaintext_for_fuzzing(
    credentials: &Credentials,
    mailbox: &[u8; MAILBOX_ID_LEN],
    contents: &LetterContents,
    letter_id: [u8; MAILBOX_ID_LEN],
) -> Vec<u8> {
    letter_plaintext(credentials, mailbox, contents, letter_id)
}

/// Whether a member of `role` may leave commands in the car's mailbox: the
/// roles that command the car in a session (R23).
pub fn may_post_commands(role: Role) -> bool {
    matches!(role, Role::Phone | Role::Watch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AccountAuthority, DeviceKey, LocalAuthority};

    fn now() -> u64 {
        1_900_000_000
    }

    fn member(authority: &mut LocalAuthority, role: Role) -> Credentials {
        let key = DeviceKey::generate().unwrap();
        let grant = authority
            .enroll(&key.enrollment_request(role, [3; 16]), now())
            .unwrap();
        Credentials::from_grant(key, &grant, now()).unwrap()
    }

    fn contents() -> LetterContents {
        LetterContents {
            not_after_unix_ms: now() * 1000 + 60_000,
            reply_mailbox: [7; 16],
            payload: b"an envelope".to_vec(),
            in_reply_to: None,
        }
    }

    #[test]
    fn a_sealed_letter_opens_for_its_mailbox_only_and_names_its_sender() {
        let mut authority = LocalAuthority::generate().unwrap();
        let phone = member(&mut authority, Role::Phone);
        let car = member(&mut authority, Role::Vehicle);
        let key = car.group_key().unwrap().mailbox_key();
        let mailbox = key.car_mailbox();
        let (sealed, id) = key.seal(&phone, &mailbox, &contents()).unwrap();
        let opened = key.open(&car, &mailbox, &sealed, now()).unwrap();
        assert_eq!(opened.sender.public_key, phone.certificate().public_key);
        assert_eq!(opened.letter_id, id);
        assert_eq!(opened.contents, contents());
        // Moved to another mailbox: does not open.
        let other = key.member_mailbox(&[1; 32]);
        assert_eq!(
            key.open(&car, &other, &sealed, now()),
            Err(LetterError::Unsealed)
        );
        // Any flipped byte: does not open.
        for i in [0, 5, sealed.len() / 2, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(key.open(&car, &mailbox, &bad, now()).is_err(), "byte {i}");
        }
        // Another account's key: does not open.
        let mut other_authority = LocalAuthority::generate().unwrap();
        let stranger = member(&mut other_authority, Role::Vehicle);
        let stranger_key = stranger.group_key().unwrap().mailbox_key();
        assert_eq!(
            stranger_key.open(&stranger, &mailbox, &sealed, now()),
            Err(LetterError::Unsealed)
        );
    }

    #[test]
    fn a_letter_from_another_account_with_our_key_is_refused_by_its_certificate() {
        let mut authority = LocalAuthority::generate().unwrap();
        let car = member(&mut authority, Role::Vehicle);
        let key = car.group_key().unwrap().mailbox_key();
        let mut other = LocalAuthority::generate().unwrap();
        let outsider = member(&mut other, Role::Phone);
        let mailbox = key.car_mailbox();
        // Even with the mailbox key (a leaked group key), a certificate of
        // another account does not pass.
        let (sealed, _) = key.seal(&outsider, &mailbox, &contents()).unwrap();
        assert!(matches!(
            key.open(&car, &mailbox, &sealed, now()),
            Err(LetterError::Certificate(_))
        ));
    }

    #[test]
    fn r16_a_co_users_letter_opens_under_its_own_authority_in_the_grants_mailbox_only() {
        let mut owner = LocalAuthority::generate().unwrap();
        let car = member(&mut owner, Role::Vehicle);
        let mut grantee = LocalAuthority::generate().unwrap();
        let co_user = member(&mut grantee, Role::Phone);
        let grant = crate::GrantKey::generate().unwrap();
        let key = grant.mailbox_key();
        let mailbox = key.car_mailbox();
        // Nothing of the grant's mailboxes is the account's.
        let account = car.group_key().unwrap().mailbox_key();
        assert_ne!(mailbox, account.car_mailbox());
        assert_ne!(key.client_id(&mailbox), account.client_id(&mailbox));
        let (sealed, id) = key.seal(&co_user, &mailbox, &contents()).unwrap();
        // The car checks the co-user's certificate under the grantee's
        // authority, not its own account's.
        let opened = key
            .open_under(&car, &grantee.public_key(), &mailbox, &sealed, now())
            .unwrap();
        assert_eq!(opened.letter_id, id);
        assert_eq!(opened.sender.public_key, co_user.certificate().public_key);
        assert!(matches!(
            key.open(&car, &mailbox, &sealed, now()),
            Err(LetterError::Certificate(_))
        ));
        // The account's key does not open it, nor another grant's.
        assert_eq!(
            account.open_under(&car, &grantee.public_key(), &mailbox, &sealed, now()),
            Err(LetterError::Unsealed)
        );
        let other = crate::GrantKey::generate().unwrap().mailbox_key();
        assert_eq!(
            other.open_under(&car, &grantee.public_key(), &mailbox, &sealed, now()),
            Err(LetterError::Unsealed)
        );
    }

    #[test]
    fn ids_are_distinct_and_client_ids_are_twenty_hex_characters() {
        let mut authority = LocalAuthority::generate().unwrap();
        let car = member(&mut authority, Role::Vehicle);
        let key = car.group_key().unwrap().mailbox_key();
        let car_box = key.car_mailbox();
        let a = key.member_mailbox(&[1; 32]);
        let b = key.member_mailbox(&[2; 32]);
        assert!(car_box != a && a != b);
        let id = key.client_id(&car_box);
        assert_eq!(id.len(), 20);
        assert!(
            id.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(id, key.client_id(&a));
    }

    #[test]
    fn garbage_never_panics() {
        let mut authority = LocalAuthority::generate().unwrap();
        let car = member(&mut authority, Role::Vehicle);
        let key = car.group_key().unwrap().mailbox_key();
        let mailbox = key.car_mailbox();
        for len in 0..80 {
            let bytes = vec![1u8; len];
            assert!(key.open(&car, &mailbox, &bytes, now()).is_err());
        }
        assert_eq!(
            key.unseal(&mailbox, &[2; 64]),
            Err(LetterError::UnsupportedVersion(2))
        );
        assert!(matches!(
            key.unseal(&mailbox, &vec![1; MAX_SEALED_LETTER + 1]),
            Err(LetterError::TooLarge(_))
        ));
    }
}
