//! The sans-IO discovery core: unlinkable tokens, the TXT rule and the
//! rotation schedule.
//!
//! This module is a fully deterministic implementation that contains no
//! networking code, reads no clock and draws no randomness: nonces and
//! instants come from the caller.
//!
//! A *discovery token* is one DNS label, the lower-case hex of
//! `nonce (8 bytes) || tag (8 bytes)` where
//! `tag = HMAC-SHA256(discovery_key, "tether/1 token\0" || nonce)[..8]`.
//! Only a holder of the discovery key can tell whose token it is; to everyone
//! else it is 16 random-looking bytes that change at every rotation (R2: the
//! head unit's network identifier, account UID, DID, device name and MAC stay
//! local).

mod resolver;
mod rotation;
mod txt;

use ring::hmac;

pub use resolver::TokenResolver;
pub use rotation::{MIN_TOKEN_ROTATION, Rotation, RotationOutput, TOKEN_ROTATION};
pub use txt::{
    MAX_TXT_VALUE_BYTES, PROTOCOL_VERSION, TXT_VERSION_KEY, TxtError, parse_txt, txt_properties,
};

/// Length of a token's nonce in bytes.
pub const NONCE_BYTES: usize = 8;
/// Length of a token's truncated HMAC tag in bytes.
pub const TAG_BYTES: usize = 8;
/// Length of a token label in characters (two hex digits per byte).
pub const TOKEN_LABEL_CHARS: usize = 2 * (NONCE_BYTES + TAG_BYTES);

/// Domain separation for the token HMAC, so a discovery key can never be
/// coaxed into producing a tag that means something elsewhere.
const TOKEN_CONTEXT: &[u8] = b"tether/1 token\0";

/// Why a string is not a discovery token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The label is not exactly [`TOKEN_LABEL_CHARS`] bytes long (the peer
    /// sent something that is not a Tether token).
    #[error("token label is {found} bytes long, expected {TOKEN_LABEL_CHARS}")]
    Length {
        /// Length of the rejected label in bytes.
        found: usize,
    },
    /// A byte of the label is not a lower-case hex digit (`0-9a-f`); upper
    /// case is refused too, so that every token has exactly one spelling.
    #[error("token label has a non lower-case hex byte at offset {offset}")]
    NotLowerHex {
        /// Byte offset of the first offending byte.
        offset: usize,
    },
}

/// One rotating, unlinkable discovery token (R2).
///
/// It carries nothing but a random nonce and a truncated HMAC of it: no MAC
/// address, device id, account id, VIN or name. Two tokens minted with fresh
/// nonces cannot be linked without the discovery key.
///
/// A token is a plain value (no heap): parsing a heard label allocates
/// nothing, which matters for a member that hears many adverts (issue 19).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct DiscoveryToken {
    nonce: [u8; NONCE_BYTES],
    tag: [u8; TAG_BYTES],
    /// The label's bytes: always [`TOKEN_LABEL_CHARS`] lower-case hex
    /// digits (every constructor writes or checks exactly that), so always
    /// UTF-8.
    label: [u8; TOKEN_LABEL_CHARS],
}

impl DiscoveryToken {
    /// Mints the token for `nonce` under `discovery_key`.
    ///
    /// `nonce` must be fresh randomness for every rotation (the caller draws
    /// it: this core has no random source); reusing one reproduces the same
    /// label and makes the two advertisements linkable.
    pub fn mint(discovery_key: &[u8; 32], nonce: [u8; NONCE_BYTES]) -> Self {
        let key = hmac::Key::new(hmac::HMAC_SHA256, discovery_key);
        Self::from_parts(nonce, compute_tag(&key, &nonce))
    }

    /// Parses a label received from the network.
    ///
    /// Strict: exactly [`TOKEN_LABEL_CHARS`] lower-case hex characters.
    /// Anything else (upper case, wrong length, non-hex, non-ASCII) is a
    /// typed error, never a panic.
    pub fn parse(label: &str) -> Result<Self, TokenError> {
        let bytes: &[u8; TOKEN_LABEL_CHARS] = label
            .as_bytes()
            .try_into()
            .map_err(|_| TokenError::Length { found: label.len() })?;
        // One table look-up per character and one check for the whole label;
        // the offending offset is looked for only on the error path.
        let mut raw = [0u8; NONCE_BYTES + TAG_BYTES];
        let mut invalid = 0u8;
        for (out, pair) in raw.iter_mut().zip(bytes.chunks_exact(2)) {
            let hi = HEX_VALUE[usize::from(pair[0])];
            let lo = HEX_VALUE[usize::from(pair[1])];
            invalid |= hi | lo;
            *out = (hi << 4) | (lo & 0x0f);
        }
        if invalid & NOT_HEX != 0 {
            let offset = bytes
                .iter()
                .position(|&b| HEX_VALUE[usize::from(b)] == NOT_HEX)
                .unwrap_or(0);
            return Err(TokenError::NotLowerHex { offset });
        }
        let (nonce, tag) = split(raw);
        Ok(Self {
            nonce,
            tag,
            label: *bytes,
        })
    }

    /// The DNS label: [`TOKEN_LABEL_CHARS`] lower-case hex characters.
    pub fn label(&self) -> &str {
        // Lower-case hex is ASCII: this never falls back.
        std::str::from_utf8(&self.label).unwrap_or_default()
    }

    /// The random nonce the token was minted from.
    pub fn nonce(&self) -> &[u8; NONCE_BYTES] {
        &self.nonce
    }

    /// The truncated HMAC tag.
    pub fn tag(&self) -> &[u8; TAG_BYTES] {
        &self.tag
    }

    fn from_parts(nonce: [u8; NONCE_BYTES], tag: [u8; TAG_BYTES]) -> Self {
        let mut label = [0u8; TOKEN_LABEL_CHARS];
        for (out, byte) in label
            .chunks_exact_mut(2)
            .zip(nonce.iter().chain(tag.iter()))
        {
            out[0] = HEX_DIGITS[usize::from(byte >> 4)];
            out[1] = HEX_DIGITS[usize::from(byte & 0x0f)];
        }
        Self { nonce, tag, label }
    }
}

impl std::fmt::Debug for DiscoveryToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The label is public (it is broadcast); nothing secret to hide.
        f.debug_tuple("DiscoveryToken")
            .field(&self.label())
            .finish()
    }
}

impl std::fmt::Display for DiscoveryToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// `HMAC-SHA256(key, TOKEN_CONTEXT || nonce)[..TAG_BYTES]`.
fn compute_tag(key: &hmac::Key, nonce: &[u8; NONCE_BYTES]) -> [u8; TAG_BYTES] {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(TOKEN_CONTEXT);
    finish_tag(ctx, nonce)
}

/// The tag from an HMAC context that has absorbed [`TOKEN_CONTEXT`] already.
fn finish_tag(mut ctx: hmac::Context, nonce: &[u8; NONCE_BYTES]) -> [u8; TAG_BYTES] {
    ctx.update(nonce);
    let full = ctx.sign();
    let mut tag = [0u8; TAG_BYTES];
    tag.copy_from_slice(&full.as_ref()[..TAG_BYTES]);
    tag
}

fn split(raw: [u8; NONCE_BYTES + TAG_BYTES]) -> ([u8; NONCE_BYTES], [u8; TAG_BYTES]) {
    let mut nonce = [0u8; NONCE_BYTES];
    let mut tag = [0u8; TAG_BYTES];
    nonce.copy_from_slice(&raw[..NONCE_BYTES]);
    tag.copy_from_slice(&raw[NONCE_BYTES..]);
    (nonce, tag)
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Marks a byte that is not a lower-case hex digit in [`HEX_VALUE`]; no
/// digit's value has this bit.
const NOT_HEX: u8 = 0x80;

/// The value of each lower-case hex digit, [`NOT_HEX`] for every other byte.
const HEX_VALUE: [u8; 256] = {
    let mut table = [NOT_HEX; 256];
    let mut i = 0;
    while i < 16 {
        table[HEX_DIGITS[i] as usize] = i as u8;
        i += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: [u8; 32] = [0xa1; 32];

    #[test]
    fn label_is_32_lower_hex_of_nonce_and_tag() {
        let token = DiscoveryToken::mint(&KEY_A, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(token.label().len(), TOKEN_LABEL_CHARS);
        assert!(token.label().starts_with("0102030405060708"));
        assert!(
            token
                .label()
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
    }

    #[test]
    fn tag_matches_the_specified_hmac() {
        let nonce = [9u8; 8];
        let token = DiscoveryToken::mint(&KEY_A, nonce);
        let key = hmac::Key::new(hmac::HMAC_SHA256, &KEY_A);
        let mut msg = b"tether/1 token\0".to_vec();
        msg.extend_from_slice(&nonce);
        let full = hmac::sign(&key, &msg);
        assert_eq!(token.tag(), &full.as_ref()[..8]);
    }

    #[test]
    fn parse_round_trips_a_minted_token() {
        let token = DiscoveryToken::mint(&KEY_A, [0xfe; 8]);
        let parsed = DiscoveryToken::parse(token.label()).unwrap();
        assert_eq!(parsed, token);
        assert_eq!(parsed.nonce(), &[0xfe; 8]);
    }

    #[test]
    fn fresh_nonces_give_unrelated_labels() {
        let a = DiscoveryToken::mint(&KEY_A, [0; 8]);
        let b = DiscoveryToken::mint(&KEY_A, [1; 8]);
        assert_ne!(a.label()[16..], b.label()[16..]);
    }

    #[test]
    fn malformed_labels_are_typed_errors() {
        let good = DiscoveryToken::mint(&KEY_A, [7; 8]).label().to_owned();
        let upper = good.to_uppercase();
        let cases: Vec<(String, TokenError)> = vec![
            (String::new(), TokenError::Length { found: 0 }),
            (good[..31].to_owned(), TokenError::Length { found: 31 }),
            (format!("{good}0"), TokenError::Length { found: 33 }),
            (upper.clone(), first_upper_error(&upper)),
            (
                format!("{}g{}", &good[..5], &good[6..]),
                TokenError::NotLowerHex { offset: 5 },
            ),
            (
                format!("{} ", &good[..31]),
                TokenError::NotLowerHex { offset: 31 },
            ),
            // 16 two-byte characters: 32 bytes, none of them hex.
            ("é".repeat(16), TokenError::NotLowerHex { offset: 0 }),
            // 32 characters but more than 32 bytes.
            (
                format!("{}é", &good[..31]),
                TokenError::Length { found: 33 },
            ),
            ("-".repeat(32), TokenError::NotLowerHex { offset: 0 }),
        ];
        for (label, expected) in cases {
            assert_eq!(DiscoveryToken::parse(&label), Err(expected), "{label:?}");
        }
    }

    fn first_upper_error(label: &str) -> TokenError {
        let offset = label
            .bytes()
            .position(|b| b.is_ascii_uppercase())
            .expect("a minted label has at least one letter in practice");
        TokenError::NotLowerHex { offset }
    }

    #[test]
    fn parse_never_panics_on_arbitrary_bytes() {
        // A cheap deterministic sweep; the fuzz target covers the rest.
        let mut state = 0x1234_5678_u32;
        for len in 0..40 {
            for _ in 0..50 {
                let s: String = (0..len)
                    .map(|_| {
                        state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
                        char::from_u32((state >> 16) % 0x300).unwrap_or('x')
                    })
                    .collect();
                let _ = DiscoveryToken::parse(&s);
            }
        }
    }
}
