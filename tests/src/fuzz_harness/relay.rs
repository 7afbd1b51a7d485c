//! Harness for the relay transport (SPEC §19): what a broker delivers to a
//! relay socket. Input: the raw bytes, decoded as an envelope (§19.3) and
//! parsed as a topic (§19.2).

use tether_relay::addr::Peer;
use tether_relay::envelope::{MAX_DATAGRAM_BYTES, decode, encode};
use tether_relay::{Rendezvous, TopicId, TopicPrefix};

/// Any bytes: a typed result, never a panic. A decoded envelope re-encodes
/// to exactly the input (nothing ignored, one form only); a parsed topic
/// prints back to the input; a reply id survives the virtual address.
pub fn relay_envelope(data: &[u8]) {
    if let Ok(env) = decode(data) {
        assert!(!env.datagram.is_empty() && env.datagram.len() <= MAX_DATAGRAM_BYTES);
        assert_eq!(
            encode(env.reply.as_ref(), env.datagram).expect("a decoded envelope encodes"),
            data
        );
        if let Some(reply) = env.reply {
            assert_eq!(
                Peer::from_addr(Peer::Answered(reply).addr()),
                Some(Peer::Answered(reply))
            );
        }
    }
    let prefix = TopicPrefix::default();
    if let Ok(id) = prefix.parse(data) {
        assert_eq!(id.topic(&prefix).as_bytes(), data);
    }
}

pub(super) fn seeds(add: &mut dyn FnMut(&'static str, &str, Vec<u8>)) {
    let reply = TopicId([0x5e; 16]);
    let initial = {
        let mut d = vec![0u8; 1200];
        d[0] = 0xc3;
        d[1..5].copy_from_slice(&1u32.to_be_bytes());
        d
    };
    let ok = |reply: Option<&TopicId>, datagram: &[u8]| {
        encode(reply, datagram).expect("a seed envelope encodes")
    };
    add(
        "relay_envelope",
        "initial_with_reply",
        ok(Some(&reply), &initial),
    );
    add(
        "relay_envelope",
        "answer_no_reply",
        ok(None, &[0x40, 1, 2, 3]),
    );
    add(
        "relay_envelope",
        "largest",
        ok(None, &vec![0x41; MAX_DATAGRAM_BYTES]),
    );
    let mut over = ok(None, &[0x41]);
    over.resize(2 + MAX_DATAGRAM_BYTES + 1, 0x41);
    add("relay_envelope", "too_large", over);
    add("relay_envelope", "truncated_reply", vec![1, 1, 0x5e, 0x5e]);
    add("relay_envelope", "unknown_flags", vec![1, 3, 0x40]);
    add("relay_envelope", "version_2", vec![2, 0, 0x40]);
    add("relay_envelope", "header_only", vec![1, 0]);
    add("relay_envelope", "empty", Vec::new());
    let topic = Rendezvous::new(&[0x47; 32])
        .id(2_000_000)
        .topic(&TopicPrefix::default());
    add("relay_envelope", "rendezvous_topic", topic.into_bytes());
}
