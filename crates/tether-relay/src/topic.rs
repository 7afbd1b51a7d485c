//! Rendezvous and reply topics (SPEC §19.2), sans-IO: time is an argument.
//!
//! A responder (the head unit, the hub) is reached at a *rendezvous topic*
//! that only holders of its relay key can compute, and that changes every
//! [`ROTATION_S`] seconds:
//!
//! ```text
//! window = unix_s / ROTATION_S
//! id     = HMAC-SHA256(K_relay, "tether/1 relay topic\0" || u64be(window))[0..16]
//! topic  = prefix || lower-case hex(id)          prefix = "tether/1/r/"
//! ```
//!
//! Two windows' topics cannot be linked without the key. An initiator's
//! *reply topic* has the same shape with 16 random bytes as its id, so the
//! broker cannot tell the two kinds apart by their names.

use ring::hmac;
use thiserror::Error;

/// Seconds a rendezvous topic lives: 15 minutes, as discovery tokens (§4.5).
pub const ROTATION_S: u64 = 900;
/// The topic prefix of every relay topic, unless a deployment sets its own.
pub const TOPIC_PREFIX: &str = "tether/1/r/";
/// HMAC prefix of a rendezvous topic id.
pub const TOPIC_CONTEXT: &[u8] = b"tether/1 relay topic\0";
/// Bytes of a topic id (rendezvous or reply).
pub const TOPIC_ID_LEN: usize = 16;
/// Windows on either side of the current one a responder also listens to,
/// so that an initiator whose clock is up to one window off still reaches
/// it.
pub const SKEW_WINDOWS: u64 = 1;
/// Longest prefix a deployment may set (an MQTT topic is at most 65 535
/// bytes; brokers usually allow far less).
pub const MAX_PREFIX_LEN: usize = 128;

/// The 16 bytes that name a relay topic under a prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicId(pub [u8; TOPIC_ID_LEN]);

impl TopicId {
    /// The topic string: `prefix || lower-case hex(id)`.
    pub fn topic(&self, prefix: &TopicPrefix) -> String {
        let mut out = String::with_capacity(prefix.0.len() + 2 * TOPIC_ID_LEN);
        out.push_str(&prefix.0);
        out.push_str(&hex(&self.0));
        out
    }
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(2 * bytes.len());
    for byte in bytes {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// A topic string that is not a relay topic under our prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TopicError {
    /// It does not start with the prefix.
    #[error("topic outside the relay prefix")]
    Prefix,
    /// The part after the prefix is not 32 characters.
    #[error("topic id of the wrong length")]
    Length,
    /// The part after the prefix is not lower-case hex.
    #[error("topic id not lower-case hex")]
    NotLowerHex,
}

/// A prefix was refused by [`TopicPrefix::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum PrefixError {
    /// Longer than [`MAX_PREFIX_LEN`].
    #[error("relay topic prefix too long")]
    TooLong,
    /// Holds an MQTT wildcard (`+`, `#`), a NUL, or a character outside
    /// printable ASCII.
    #[error("relay topic prefix holds a wildcard or a character outside printable ASCII")]
    BadCharacter,
}

/// The prefix under which relay topics live (a deployment may need its own,
/// e.g. to fit a managed broker's topic policy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPrefix(String);

impl Default for TopicPrefix {
    fn default() -> Self {
        Self(TOPIC_PREFIX.to_owned())
    }
}

impl TopicPrefix {
    /// Checks a prefix: printable ASCII, no wildcard, at most
    /// [`MAX_PREFIX_LEN`] bytes. It should end with `/`.
    pub fn new(prefix: &str) -> Result<Self, PrefixError> {
        if prefix.len() > MAX_PREFIX_LEN {
            return Err(PrefixError::TooLong);
        }
        if prefix
            .bytes()
            .any(|b| !(0x21..=0x7e).contains(&b) || b == b'+' || b == b'#')
        {
            return Err(PrefixError::BadCharacter);
        }
        Ok(Self(prefix.to_owned()))
    }

    /// The prefix itself.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses a topic a broker delivered: the prefix, then exactly 32
    /// lower-case hex characters.
    pub fn parse(&self, topic: &[u8]) -> Result<TopicId, TopicError> {
        let rest = topic
            .strip_prefix(self.0.as_bytes())
            .ok_or(TopicError::Prefix)?;
        if rest.len() != 2 * TOPIC_ID_LEN {
            return Err(TopicError::Length);
        }
        let mut id = [0; TOPIC_ID_LEN];
        for (out, pair) in id.iter_mut().zip(rest.chunks_exact(2)) {
            *out = (nibble(pair[0])? << 4) | nibble(pair[1])?;
        }
        Ok(TopicId(id))
    }
}

fn nibble(c: u8) -> Result<u8, TopicError> {
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        _ => Err(TopicError::NotLowerHex),
    }
}

/// The rotation window of a Unix time.
pub fn window_at(unix_s: u64) -> u64 {
    unix_s / ROTATION_S
}

/// Seconds from `unix_s` until the next window starts (at least 1).
pub fn seconds_to_next_window(unix_s: u64) -> u64 {
    ROTATION_S - unix_s % ROTATION_S
}

/// The rendezvous topics of one relay key. Holds the key; derives ids.
pub struct Rendezvous {
    key: hmac::Key,
}

impl std::fmt::Debug for Rendezvous {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Rendezvous(..)")
    }
}

impl Rendezvous {
    /// A rendezvous under the raw 32-byte relay key (SPEC §3.3: the group
    /// key's, the hub's, or a grant's).
    pub fn new(relay_key: &[u8; 32]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, relay_key),
        }
    }

    /// The topic id of `window`.
    pub fn id(&self, window: u64) -> TopicId {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(TOPIC_CONTEXT);
        ctx.update(&window.to_be_bytes());
        let tag = ctx.sign();
        let mut id = [0; TOPIC_ID_LEN];
        id.copy_from_slice(&tag.as_ref()[..TOPIC_ID_LEN]);
        TopicId(id)
    }

    /// Where an initiator sends at `unix_s`: the current window's id.
    pub fn send_id(&self, unix_s: u64) -> TopicId {
        self.id(window_at(unix_s))
    }

    /// What a responder listens to at `unix_s`: the current window and
    /// [`SKEW_WINDOWS`] on either side, oldest first.
    pub fn listen_ids(&self, unix_s: u64) -> Vec<TopicId> {
        let w = window_at(unix_s);
        (w.saturating_sub(SKEW_WINDOWS)..=w.saturating_add(SKEW_WINDOWS))
            .map(|w| self.id(w))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn id_is_the_specified_hmac() {
        let key = [7u8; 32];
        let r = Rendezvous::new(&key);
        let mut msg = TOPIC_CONTEXT.to_vec();
        msg.extend_from_slice(&42u64.to_be_bytes());
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &key), &msg);
        assert_eq!(&r.id(42).0[..], &tag.as_ref()[..16]);
    }

    #[test]
    fn windows_and_keys_give_unrelated_topics() {
        let a = Rendezvous::new(&[1; 32]);
        let b = Rendezvous::new(&[2; 32]);
        assert_ne!(a.id(1), a.id(2));
        assert_ne!(a.id(1), b.id(1));
        let now = 1_800_000_123;
        let ids = a.listen_ids(now);
        assert_eq!(ids.len(), 3);
        assert_eq!(ids[1], a.send_id(now));
        assert_eq!(ids[0], a.send_id(now - ROTATION_S));
        assert_eq!(ids[2], a.send_id(now + ROTATION_S));
        assert_eq!(seconds_to_next_window(900 * 5), ROTATION_S);
        assert_eq!(seconds_to_next_window(900 * 5 + 899), 1);
    }

    #[test]
    fn topics_round_trip_and_foreign_topics_are_typed_errors() {
        let p = TopicPrefix::default();
        let id = Rendezvous::new(&[3; 32]).id(9);
        let t = id.topic(&p);
        assert!(t.starts_with("tether/1/r/"));
        assert_eq!(t.len(), 11 + 32);
        assert_eq!(p.parse(t.as_bytes()), Ok(id));
        assert_eq!(p.parse(b"other/x"), Err(TopicError::Prefix));
        assert_eq!(p.parse(b"tether/1/r/00"), Err(TopicError::Length));
        let upper = t.to_uppercase().replace("TETHER/1/R/", "tether/1/r/");
        assert_eq!(p.parse(upper.as_bytes()), Err(TopicError::NotLowerHex));
        assert_eq!(TopicPrefix::new("a/#/"), Err(PrefixError::BadCharacter));
        assert_eq!(TopicPrefix::new("a b/"), Err(PrefixError::BadCharacter));
        assert_eq!(
            TopicPrefix::new(&"a".repeat(129)),
            Err(PrefixError::TooLong)
        );
        assert!(TopicPrefix::new("fleet-7/tether/").is_ok());
    }
}
