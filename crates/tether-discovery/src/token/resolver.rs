//! Telling which of our discovery keys, if any, minted a token.

use ring::hmac;

use super::{DiscoveryToken, TAG_BYTES, compute_tag};

/// Domain separation for the key that blinds tag comparisons (see
/// [`TokenResolver::resolve`]).
const COMPARE_CONTEXT: &[u8] = b"tether/1 token compare\0";

/// Resolves tokens against the discovery keys a member holds.
///
/// A member may hold several keys (its own account's, and later co-user
/// grants, R16); [`resolve`](Self::resolve) returns the index of the key that
/// minted a token, in the order given to [`new`](Self::new). A non-member,
/// holding no matching key, learns nothing from a token (R2).
pub struct TokenResolver {
    keys: Vec<ResolverKey>,
}

struct ResolverKey {
    /// Mints the expected tag.
    token: hmac::Key,
    /// Blinds the comparison of the expected and the received tag.
    compare: hmac::Key,
}

impl TokenResolver {
    /// Precomputes the HMAC keys for `discovery_keys` once.
    pub fn new(discovery_keys: &[[u8; 32]]) -> Self {
        let keys = discovery_keys
            .iter()
            .map(|raw| {
                let token = hmac::Key::new(hmac::HMAC_SHA256, raw);
                let compare_raw = hmac::sign(&token, COMPARE_CONTEXT);
                ResolverKey {
                    compare: hmac::Key::new(hmac::HMAC_SHA256, compare_raw.as_ref()),
                    token,
                }
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
    /// say which key matched.
    pub fn resolve(&self, token: &DiscoveryToken) -> Option<usize> {
        let mut found = None;
        for (index, key) in self.keys.iter().enumerate() {
            let expected = compute_tag(&key.token, token.nonce());
            if tags_equal(&key.compare, &expected, token.tag()) && found.is_none() {
                found = Some(index);
            }
        }
        found
    }
}

/// Compares two truncated tags without leaking where they first differ.
///
/// An early-exit compare would let an attacker who can time our answers
/// forge a tag for a nonce of their choice byte by byte. `ring::hmac::verify`
/// is constant time but only takes a full 32-byte tag, and our tags are
/// truncated to 8 bytes; `ring::constant_time::verify_slices_are_equal` still
/// exists in ring 0.17 but is deprecated, hidden from the docs and documented
/// as making "no promises regarding side channels". So we use the double-HMAC
/// pattern instead: `HMAC(k, a) == HMAC(k, b)` exactly when `a == b`, and
/// `hmac::verify` compares the two MACs in constant time. Even if a
/// comparison leaked, it would leak bits of MACs under a key the attacker does
/// not hold, not bits of the expected tag. It costs two extra HMACs per key
/// per token, and tokens arrive a few times a minute.
fn tags_equal(
    compare_key: &hmac::Key,
    expected: &[u8; TAG_BYTES],
    received: &[u8; TAG_BYTES],
) -> bool {
    let blinded = hmac::sign(compare_key, expected);
    hmac::verify(compare_key, received, blinded.as_ref()).is_ok()
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
    fn debug_does_not_print_keys() {
        let resolver = TokenResolver::new(&[KEY_A]);
        assert_eq!(format!("{resolver:?}"), "TokenResolver { keys: 1 }");
    }
}
