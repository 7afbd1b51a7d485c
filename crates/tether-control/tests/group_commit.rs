//! Group commit (SPEC §8.3): the commands accepted since the service's last
//! turn run as one batch with two commits — every write-ahead mark before
//! any command acts, every receipt before any is answered — and the
//! at-most-once rules hold per command.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

use std::sync::{Arc, Mutex};

use prost::Message;
use tether_control::{
    Config, MemoryReceiptLog, Output, PeerInfo, Principal, ReceiptLog, ReceiptLogError,
    SimulatedVehicle, StoredReceipt, StreamId, VehicleService, client,
};
use tether_identity::{DeviceKey, Role};
use tether_proto::v1::{CommandState, Envelope, ErrorCode, ReceiptBody, envelope, response};

/// What the log saw: each write, as (records, how many of them were marks).
type Writes = Arc<Mutex<Vec<(usize, usize)>>>;

/// A receipt log that records its writes and can refuse them.
struct RecordingLog {
    inner: MemoryReceiptLog,
    writes: Writes,
    refuse: Arc<Mutex<bool>>,
}

#[derive(Debug, thiserror::Error)]
#[error("refused by the test")]
struct Refused;

impl ReceiptLog for RecordingLog {
    fn get(&self, p: &Principal, key: &[u8]) -> Result<Option<StoredReceipt>, ReceiptLogError> {
        self.inner.get(p, key)
    }

    fn put(&mut self, p: &Principal, key: &[u8], r: StoredReceipt) -> Result<(), ReceiptLogError> {
        self.put_batch(vec![(*p, key.to_vec(), r)])
    }

    fn put_batch(
        &mut self,
        records: Vec<(Principal, Vec<u8>, StoredReceipt)>,
    ) -> Result<(), ReceiptLogError> {
        if *self.refuse.lock().unwrap() {
            return Err(ReceiptLogError(Box::new(Refused)));
        }
        let marks = records
            .iter()
            .filter(|(_, _, r)| r.receipt.is_none())
            .count();
        self.writes.lock().unwrap().push((records.len(), marks));
        self.inner.put_batch(records)
    }

    fn last_sequence(&self) -> Result<u64, ReceiptLogError> {
        self.inner.last_sequence()
    }
}

fn key(byte: u8) -> client::IdempotencyKey {
    client::IdempotencyKey::from_bytes(&[byte; 16]).unwrap()
}

fn service() -> (
    VehicleService<SimulatedVehicle, RecordingLog>,
    Writes,
    Arc<Mutex<bool>>,
) {
    let writes = Writes::default();
    let refuse = Arc::new(Mutex::new(false));
    let log = RecordingLog {
        inner: MemoryReceiptLog::new(),
        writes: writes.clone(),
        refuse: refuse.clone(),
    };
    let service = VehicleService::new(
        Config::default(),
        DeviceKey::generate().unwrap(),
        SimulatedVehicle::new(),
        log,
    )
    .unwrap();
    (service, writes, refuse)
}

/// Everything sent on `stream`.
fn drain(
    service: &mut VehicleService<SimulatedVehicle, RecordingLog>,
) -> Vec<(StreamId, Envelope)> {
    let mut out = Vec::new();
    while let Output::Transmit(t) = service.poll_output() {
        out.push((t.stream, t.envelope));
    }
    out
}

fn final_state(out: &[(StreamId, Envelope)], stream: StreamId) -> Option<(CommandState, u64)> {
    out.iter().filter(|(s, _)| *s == stream).find_map(|(_, e)| {
        let Some(envelope::Body::Response(r)) = &e.body else {
            return None;
        };
        let Some(response::Kind::CommandStatus(status)) = &r.kind else {
            return None;
        };
        let receipt = status.receipt.as_ref()?;
        let body = ReceiptBody::decode(receipt.body.as_slice()).unwrap();
        Some((CommandState::try_from(status.state).unwrap(), body.sequence))
    })
}

fn error_code(out: &[(StreamId, Envelope)], stream: StreamId) -> Option<ErrorCode> {
    out.iter()
        .filter(|(s, _)| *s == stream)
        .find_map(|(_, e)| match &e.body {
            Some(envelope::Body::Error(e)) => ErrorCode::try_from(e.code).ok(),
            _ => None,
        })
}

#[test]
fn r23_a_batch_of_commands_costs_two_commits_and_keeps_their_order() {
    let (mut service, writes, _) = service();
    let peer = PeerInfo::new(Role::Phone);
    let commands = [client::lock(), client::unlock(), client::lock()];
    for (i, command) in commands.into_iter().enumerate() {
        let n = u8::try_from(i).unwrap();
        service.handle_request(
            StreamId(u64::from(n) + 1),
            peer,
            &client::command(1, &key(n), 0, command),
            0,
        );
    }
    assert!(
        writes.lock().unwrap().is_empty(),
        "nothing is written before the turn"
    );
    service.handle_timeout(0);
    let out = drain(&mut service);
    // One commit of three marks, then one of three receipts.
    assert_eq!(*writes.lock().unwrap(), [(3, 3), (3, 0)]);
    let finals: Vec<_> = (1..=3).map(|s| final_state(&out, StreamId(s))).collect();
    assert_eq!(
        finals,
        [
            Some((CommandState::Succeeded, 1)),
            Some((CommandState::Succeeded, 2)),
            Some((CommandState::Succeeded, 3))
        ],
        "receipts in the order the commands came"
    );
    assert_eq!(service.backend().executions().total(), 3);
    // A retry of the middle one is answered from the log, no third commit.
    service.handle_request(
        StreamId(9),
        peer,
        &client::command(2, &key(1), 0, client::unlock()),
        0,
    );
    service.handle_timeout(0);
    let out = drain(&mut service);
    assert_eq!(
        final_state(&out, StreamId(9)),
        Some((CommandState::Succeeded, 2))
    );
    assert_eq!(service.backend().executions().total(), 3);
    assert_eq!(writes.lock().unwrap().len(), 2);
}

#[test]
fn r23_when_the_marks_cannot_be_stored_no_command_of_the_batch_acts() {
    let (mut service, writes, refuse) = service();
    let peer = PeerInfo::new(Role::Phone);
    for n in 0..4u8 {
        service.handle_request(
            StreamId(u64::from(n) + 1),
            peer,
            &client::command(1, &key(n), 0, client::lock()),
            0,
        );
    }
    *refuse.lock().unwrap() = true;
    service.handle_timeout(0);
    let out = drain(&mut service);
    assert_eq!(
        service.backend().executions().total(),
        0,
        "the car was touched"
    );
    for s in 1..=4 {
        assert_eq!(
            error_code(&out, StreamId(s)),
            Some(ErrorCode::Internal),
            "stream {s}"
        );
        assert_eq!(final_state(&out, StreamId(s)), None);
    }
    assert!(writes.lock().unwrap().is_empty());
    // The log is back: a retry runs them, with sequence numbers from 1.
    *refuse.lock().unwrap() = false;
    service.handle_request(
        StreamId(7),
        peer,
        &client::command(2, &key(0), 0, client::lock()),
        0,
    );
    service.handle_timeout(0);
    let out = drain(&mut service);
    assert_eq!(
        final_state(&out, StreamId(7)),
        Some((CommandState::Succeeded, 1))
    );
    assert_eq!(service.backend().executions().total(), 1);
}
