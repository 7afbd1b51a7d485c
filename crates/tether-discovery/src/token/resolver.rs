//! Telling which of our discovery keys, if any, minted a token.

use ring::hmac;

use super::{DiscoveryToken, TAG_BYTES, TOKEN_CONTEXT, finish_tag};

/// Resolves tokens against the discovery keys a member holds.
///
/// A member may hold several keys (its own account's, and later co-user
/// grants, R16); [`resolve`](Self::resolve) returns the index of the key that
/// minted a token, in the order given to [`new`](Self::new). A non-member,
/// holding no matching key, learns nothing from a token (R2).
pub struct TokenResolver {
    /// Per key, the HMAC state after the key's inner pad and
    /// [`TOKEN_CONTEXT`]: resolving clones it, so a token costs one HMAC of
    /// its nonce per key and no key set-up.
    keys: Vec<hmac::Context>,
}

impl TokenResolver {
    /// Precomputes the keyed HMAC state for `discovery_keys` once.
    pub fn new(discovery_keys: &[[u8; 32]]) -> Self {
        let keys = discovery_keys
            .iter()
            .map(|raw| {
                let mut ctx = hmac::Context::with_key(&hmac::Key::new(hmac::HMAC_SHA256, raw));
                ctx.update(TOKEN_CONTEXT);
                ctx
            })
            .collect();
        Self { keys }
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is held (every token is then unresolvable).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Index of the key that minted `token`, or `None` for anyone else's.
    ///
    /// Every key is tried, with no early exit, so the time taken does not
    /// say which key matched (SPEC §4.3). An early exit would save work only
    /// for tokens that do match; a stranger's token, the common case in a
    /// crowded place, costs every key either way. What it would leak is the
    /// matching key's position in our list, and only to someone who can time
    /// this device's resolution to a fraction of a microsecond and who
    /// already holds a member's genuine token (no one else can make one
    /// match). That is little, but it is not nothing, and trying every key
    /// still meets the issue 19 budget (1 M adverts/s with 4 keys), so we
    /// keep it.
    pub fn resolve(&self, token: &DiscoveryToken) -> Option<usize> {
        let mut found = None;
        for (index, key) in self.keys.iter().enumerate() {
            let expected = finish_tag(key.clone(), token.nonce());
            if tags_equal(&expected, token.tag()) && found.is_none() {
                found = Some(index);
            }
        }
        found
    }
}

/// Compares two truncated tags in constant time: the time taken does not
/// depend on where, or whether, they differ.
///
/// An early-exit compare (`==` on slices, `memcmp`) would let an attacker
/// who can time our answers forge a tag for a nonce of their choice byte by
/// byte. Here the whole tag is one 64-bit word: both are read in full, XORed,
/// and the difference goes through [`std::hint::black_box`] so that the
/// compiler cannot turn the test back into a byte-wise early exit. The only
/// branch is on the final answer, which the caller acts on anyway. (This
/// replaced an earlier double-HMAC blinding, which cost two more HMACs
/// per key per token, a third of the budget of issue 19, item 5, to guard
/// against a leaky compare that this one does not have.) The expected tag is a secret-keyed value for a nonce
/// the sender chose, so it must not leak; the received one is public.
fn tags_equal(expected: &[u8; TAG_BYTES], received: &[u8; TAG_BYTES]) -> bool {
    let diff = u64::from_ne_bytes(*expected) ^ u64::from_ne_bytes(*received);
    std::hint::black_box(diff) == 0
}

impl std::fmt::Debug for TokenResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("TokenResolver")
            .field("keys", &self.keys.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: [u8; 32] = [0xa1; 32];
    const KEY_B: [u8; 32] = [0xb2; 32];
    const KEY_C: [u8; 32] = [0xc3; 32];

    #[test]
    fn own_token_resolves_to_its_key_index() {
        let resolver = TokenResolver::new(&[KEY_B, KEY_A]);
        let token = DiscoveryToken::mint(&KEY_A, [3; 8]);
        assert_eq!(resolver.resolve(&token), Some(1));
        let parsed = DiscoveryToken::parse(token.label()).unwrap();
        assert_eq!(resolver.resolve(&parsed), Some(1));
    }

    #[test]
    fn other_account_token_resolves_to_none() {
        let resolver = TokenResolver::new(&[KEY_B, KEY_C]);
        let token = DiscoveryToken::mint(&KEY_A, [3; 8]);
        assert_eq!(resolver.resolve(&token), None);
    }

    #[test]
    fn empty_resolver_resolves_nothing() {
        let resolver = TokenResolver::new(&[]);
        assert!(resolver.is_empty());
        assert_eq!(
            resolver.resolve(&DiscoveryToken::mint(&KEY_A, [0; 8])),
            None
        );
    }

    #[test]
    fn tampered_tag_or_nonce_does_not_resolve() {
        let resolver = TokenResolver::new(&[KEY_A]);
        let label = DiscoveryToken::mint(&KEY_A, [5; 8]).label().to_owned();
        for offset in [0, 15, 16, 31] {
            let mut bytes = label.clone().into_bytes();
            bytes[offset] = if bytes[offset] == b'0' { b'1' } else { b'0' };
            let tampered = String::from_utf8(bytes).unwrap();
            let token = DiscoveryToken::parse(&tampered).unwrap();
            assert_eq!(resolver.resolve(&token), None, "offset {offset}");
        }
    }

    #[test]
    fn each_of_four_keys_a_stranger_and_tampered_tokens_resolve_correctly() {
        let keys: Vec<[u8; 32]> = (1..=4u8).map(|i| [i.wrapping_mul(0x3d); 32]).collect();
        let stranger = [0x5e; 32];
        let resolver = TokenResolver::new(&keys);
        for nonce in [[0u8; 8], [0xff; 8], [1, 2, 3, 4, 5, 6, 7, 8]] {
            for (index, key) in keys.iter().enumerate() {
                let label = DiscoveryToken::mint(key, nonce).label().to_owned();
                let heard = DiscoveryToken::parse(&label).unwrap();
                assert_eq!(resolver.resolve(&heard), Some(index), "key {index}");
                // One flipped bit anywhere in the tag, or in the nonce, and
                // no key resolves it.
                for offset in 0..label.len() {
                    let mut bytes = label.clone().into_bytes();
                    bytes[offset] = if bytes[offset] == b'0' { b'1' } else { b'0' };
                    let tampered = DiscoveryToken::parse(std::str::from_utf8(&bytes).unwrap());
                    assert_eq!(
                        resolver.resolve(&tampered.unwrap()),
                        None,
                        "key {index}, offset {offset}"
                    );
                }
            }
            let theirs = DiscoveryToken::mint(&stranger, nonce);
            assert_eq!(resolver.resolve(&theirs), None);
        }
    }

    #[test]
    fn resolver_tags_are_the_specified_hmac_for_every_key() {
        // The resolver computes tags from a precomputed keyed state (issue
        // 19, item 5); it must agree with the SPEC §4.2 formula computed
        // from scratch.
        let keys = [KEY_A, KEY_B, KEY_C];
        let resolver = TokenResolver::new(&keys);
        for i in 0..64u64 {
            let nonce = i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes();
            for (index, key) in keys.iter().enumerate() {
                let mut msg = b"tether/1 token\0".to_vec();
                msg.extend_from_slice(&nonce);
                let full = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), &msg);
                let mut label = String::new();
                for byte in nonce.iter().chain(&full.as_ref()[..8]) {
                    label.push_str(&format!("{byte:02x}"));
                }
                let heard = DiscoveryToken::parse(&label).unwrap();
                assert_eq!(resolver.resolve(&heard), Some(index));
            }
        }
    }

    #[test]
    fn debug_does_not_print_keys() {
        let resolver = TokenResolver::new(&[KEY_A]);
        assert_eq!(format!("{resolver:?}"), "TokenResolver { keys: 1 }");
    }
}
