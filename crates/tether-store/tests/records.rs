//! The command log (idempotency), resumption tickets and settings.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

use tether_store::{CommandRecord, MAX_TICKETS_PER_PEER, Store, StoreError};

/// The principal of most tests (the node's encoding is its own business).
const P: &[u8] = b"principal-a";

fn record(digest: u8, sequence: u64, receipt: Option<&[u8]>) -> CommandRecord {
    CommandRecord {
        command_digest: vec![digest; 32],
        sequence,
        receipt: receipt.map(<[u8]>::to_vec),
    }
}

#[test]
fn command_record_round_trips_and_is_replaced() {
    let mut store = Store::open_in_memory().unwrap();
    assert!(store.get_command_record(P, b"k1").unwrap().is_none());
    store
        .put_command_record(P, b"k1", &record(1, 1, None), 100)
        .unwrap();
    store
        .put_command_record(P, b"k1", &record(1, 1, Some(b"ok")), 101)
        .unwrap();
    assert_eq!(
        store.get_command_record(P, b"k1").unwrap(),
        Some(record(1, 1, Some(b"ok")))
    );
}

/// SPEC §8.3: one key under two principals is two records; neither sees
/// or replaces the other's.
#[test]
fn r23_command_records_are_scoped_to_their_principal() {
    let mut store = Store::open_in_memory().unwrap();
    store
        .put_command_record(b"a", b"k1", &record(1, 1, Some(b"a's")), 100)
        .unwrap();
    assert!(store.get_command_record(b"b", b"k1").unwrap().is_none());
    store
        .put_command_record(b"b", b"k1", &record(2, 2, Some(b"b's")), 101)
        .unwrap();
    assert_eq!(
        store.get_command_record(b"a", b"k1").unwrap(),
        Some(record(1, 1, Some(b"a's")))
    );
    assert_eq!(
        store.get_command_record(b"b", b"k1").unwrap(),
        Some(record(2, 2, Some(b"b's")))
    );
    assert_eq!(store.last_command_sequence().unwrap(), 2);
}

#[test]
fn prune_command_log_keeps_newest_n_r30() {
    let mut store = Store::open_in_memory().unwrap();
    // Recorded times go backwards on purpose: a clock jump must not make the
    // newest record look old.
    for i in 0..10u8 {
        store
            .put_command_record(
                P,
                &[i],
                &record(i, u64::from(i), Some(&[i])),
                1_000 - u64::from(i),
            )
            .unwrap();
    }
    assert_eq!(store.prune_command_log(3).unwrap(), 7);
    for i in 0..7u8 {
        assert!(
            store.get_command_record(P, &[i]).unwrap().is_none(),
            "{i} kept"
        );
    }
    for i in 7..10u8 {
        let kept = store.get_command_record(P, &[i]).unwrap().unwrap();
        assert_eq!(kept.receipt, Some(vec![i]));
    }
    assert_eq!(store.prune_command_log(3).unwrap(), 0);
    assert_eq!(store.prune_command_log(0).unwrap(), 3);
    assert!(store.get_command_record(P, &[9]).unwrap().is_none());
}

#[test]
fn time_beyond_sqlite_range_is_out_of_range() {
    let mut store = Store::open_in_memory().unwrap();
    assert!(matches!(
        store.put_command_record(P, b"k", &record(1, 1, None), u64::MAX),
        Err(StoreError::OutOfRange(_))
    ));
    assert!(matches!(
        store.put_ticket("car", b"t", b"s", u64::MAX),
        Err(StoreError::OutOfRange(_))
    ));
}

#[test]
fn ticket_take_is_single_use() {
    let mut store = Store::open_in_memory().unwrap();
    store.put_ticket("car", b"ticket", b"secret", 200).unwrap();
    let ticket = store.take_ticket("car", 100).unwrap().unwrap();
    assert_eq!(ticket.ticket, b"ticket");
    assert_eq!(ticket.secret, b"secret");
    assert_eq!(ticket.not_after, 200);
    assert!(store.take_ticket("car", 100).unwrap().is_none());
}

#[test]
fn newest_ticket_is_taken_first_and_peers_are_separate() {
    let mut store = Store::open_in_memory().unwrap();
    store.put_ticket("car", b"old", b"s1", 500).unwrap();
    store.put_ticket("car", b"new", b"s2", 400).unwrap();
    store.put_ticket("hub", b"hub", b"s3", 500).unwrap();
    assert_eq!(
        store.take_ticket("car", 100).unwrap().unwrap().ticket,
        b"new"
    );
    assert_eq!(
        store.take_ticket("car", 100).unwrap().unwrap().ticket,
        b"old"
    );
    assert!(store.take_ticket("car", 100).unwrap().is_none());
    assert_eq!(
        store.take_ticket("hub", 100).unwrap().unwrap().ticket,
        b"hub"
    );
}

#[test]
fn expired_ticket_is_not_returned() {
    let mut store = Store::open_in_memory().unwrap();
    store.put_ticket("car", b"t", b"s", 200).unwrap();
    // Valid through not_after inclusive.
    store.put_ticket("hub", b"t", b"s", 200).unwrap();
    assert!(store.take_ticket("hub", 200).unwrap().is_some());
    assert!(store.take_ticket("car", 201).unwrap().is_none());
    // The expired ticket was deleted, not just skipped.
    assert!(store.take_ticket("car", 0).unwrap().is_none());
}

#[test]
fn purge_deletes_only_expired_tickets_r30() {
    let mut store = Store::open_in_memory().unwrap();
    store.put_ticket("car", b"a", b"s", 100).unwrap();
    store.put_ticket("hub", b"b", b"s", 100).unwrap();
    store.put_ticket("car", b"c", b"s", 300).unwrap();
    assert_eq!(store.purge_expired_tickets(200).unwrap(), 2);
    assert!(store.take_ticket("hub", 0).unwrap().is_none());
    assert_eq!(store.take_ticket("car", 0).unwrap().unwrap().ticket, b"c");
    assert!(store.take_ticket("car", 0).unwrap().is_none());
}

#[test]
fn tickets_per_peer_are_capped_oldest_dropped() {
    let mut store = Store::open_in_memory().unwrap();
    let n = MAX_TICKETS_PER_PEER + 3;
    for i in 0..n {
        store.put_ticket("car", &[i as u8], b"s", 1_000).unwrap();
    }
    let mut taken = Vec::new();
    while let Some(t) = store.take_ticket("car", 0).unwrap() {
        taken.push(t.ticket[0]);
    }
    let expected: Vec<u8> = (3..n as u8).rev().collect();
    assert_eq!(taken, expected);
}

#[test]
fn ticket_debug_hides_the_secret() {
    let mut store = Store::open_in_memory().unwrap();
    store.put_ticket("car", b"t", b"TOPSECRET", 10).unwrap();
    let ticket = store.take_ticket("car", 0).unwrap().unwrap();
    assert!(!format!("{ticket:?}").contains("TOPSECRET"));
    assert!(!format!("{ticket:?}").contains("84, 79, 80"));
}

#[test]
fn settings_set_get_and_replace() {
    let mut store = Store::open_in_memory().unwrap();
    assert!(store.get_setting("interface").unwrap().is_none());
    store.set_setting("interface", "wifi").unwrap();
    store.set_setting("interface", "ethernet").unwrap();
    assert_eq!(
        store.get_setting("interface").unwrap().as_deref(),
        Some("ethernet")
    );
}

#[test]
fn command_log_replaces_the_mark_with_the_outcome_and_survives_reopen() {
    let dir = std::env::temp_dir().join(format!(
        "tether-store-cmdlog-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    ));
    {
        let mut store = Store::open(&dir).unwrap();
        assert_eq!(store.last_command_sequence().unwrap(), 0);
        let mark = CommandRecord {
            command_digest: vec![1; 32],
            sequence: 7,
            receipt: None,
        };
        store
            .put_command_record(P, b"key-0123456789ab", &mark, 10)
            .unwrap();
        assert_eq!(
            store.get_command_record(P, b"key-0123456789ab").unwrap(),
            Some(mark.clone())
        );
        let done = CommandRecord {
            receipt: Some(vec![9, 9]),
            ..mark
        };
        store
            .put_command_record(P, b"key-0123456789ab", &done, 11)
            .unwrap();
    }
    let mut store = Store::open(&dir).unwrap();
    let got = store
        .get_command_record(P, b"key-0123456789ab")
        .unwrap()
        .unwrap();
    assert_eq!(got.receipt, Some(vec![9, 9]));
    assert_eq!(store.last_command_sequence().unwrap(), 7);
    let other = CommandRecord {
        command_digest: vec![2; 32],
        sequence: 8,
        receipt: None,
    };
    store
        .put_command_record(P, b"key-other-0000000", &other, 12)
        .unwrap();
    assert_eq!(store.prune_command_log(1).unwrap(), 1);
    assert!(
        store
            .get_command_record(P, b"key-0123456789ab")
            .unwrap()
            .is_none()
    );
    std::fs::remove_dir_all(&dir).ok();
}
