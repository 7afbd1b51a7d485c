//! Discovery token resolution: what a member does for every advertisement
//! it hears (parse the label, try each held key).

use std::time::Duration;

use tether_discovery::token::{DiscoveryToken, NONCE_BYTES, TokenResolver};

use crate::error::BenchError;

/// Distinct labels cycled through, so no single token stays hot in cache.
const LABELS: usize = 256;

/// Parses and resolves `count` heard labels against `keys`. Labels are
/// minted under each held key in turn and, one in `keys.len() + 1`, under a
/// stranger's key, which must not resolve. Returns the wall time.
pub(crate) fn resolve_tokens(
    keys: &[[u8; 32]],
    stranger: &[u8; 32],
    count: usize,
) -> Result<Duration, BenchError> {
    let resolver = TokenResolver::new(keys);
    let labels: Vec<(String, Option<usize>)> = (0..LABELS)
        .map(|i| {
            let slot = i % (keys.len() + 1);
            let (key, expected) = match keys.get(slot) {
                Some(key) => (key, Some(slot)),
                None => (stranger, None),
            };
            let mut nonce = [0u8; NONCE_BYTES];
            nonce[..8].copy_from_slice(&(i as u64).to_be_bytes());
            (
                DiscoveryToken::mint(key, nonce).label().to_owned(),
                expected,
            )
        })
        .collect();
    let start = std::time::Instant::now();
    for (label, expected) in labels.iter().cycle().take(count) {
        let token = DiscoveryToken::parse(std::hint::black_box(label))
            .map_err(|_| BenchError::Unexpected("a minted token did not parse"))?;
        if resolver.resolve(&token) != *expected {
            return Err(BenchError::Unexpected("a token resolved to the wrong key"));
        }
    }
    Ok(start.elapsed())
}
