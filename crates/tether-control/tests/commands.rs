//! Commands: life cycle, at-most-once, receipts, deadlines (R23, SPEC §8.3).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

mod common;

use common::{Car, error, final_receipt, key, states};
use prost::Message;
use tether_control::{
    MemoryReceiptLog, PeerInfo, Principal, ReceiptLog, SimulatedVehicle, StoredReceipt, client,
    command_digest, signals::Door,
};
use tether_identity::{DeviceKey, Role};
use tether_proto::v1::{CommandReason, CommandState, ErrorCode, ReceiptBody};

use CommandState::{Accepted, InProgress, Rejected, Succeeded, TimedOut};

#[test]
fn command_runs_through_accepted_in_progress_succeeded_with_one_request_id() {
    let mut car = Car::new();
    let (_, out) = car.request(
        Role::Phone,
        &client::command(42, &key(1), 0, client::lock()),
    );
    assert_eq!(states(&out), [Accepted, InProgress, Succeeded]);
    assert!(out.iter().all(|e| e.request_id == 42));
    let statuses: Vec<_> = out
        .iter()
        .map(|e| client::command_status(e).unwrap())
        .collect();
    assert!(statuses[0].receipt.is_none() && statuses[1].receipt.is_none());
    assert_eq!(car.service.backend().executions().lock, 1);
}

#[test]
fn r23_lock_retried_with_the_same_key_executes_once_and_returns_identical_receipt() {
    let mut car = Car::new();
    let request = client::command(1, &key(1), 0, client::lock());
    let (_, first) = car.request(Role::Phone, &request);
    let receipt = final_receipt(&first);

    // A retry (new stream, new request id) and a replay of the same frame.
    let retry = client::command(2, &key(1), 0, client::lock());
    let (_, second) = car.request(Role::Phone, &retry);
    let (_, third) = car.request(Role::Watch, &request);

    assert_eq!(
        states(&second),
        [Succeeded],
        "a retry gets only the final status"
    );
    assert_eq!(second[0].request_id, 2);
    for replay in [&second, &third] {
        let again = final_receipt(replay);
        assert_eq!(again.encode_to_vec(), receipt.encode_to_vec());
    }
    assert_eq!(car.service.backend().executions().lock, 1);
    assert_eq!(car.service.backend().executions().total(), 1);
}

/// Keys are scoped to their principal (SPEC §8.3): a key another principal
/// (another phone, a co-user's grant, the car's own tasks) already used is a
/// new command for this one, run and receipted on its own.
#[test]
fn r23_the_same_key_from_two_principals_executes_twice_each_with_its_own_receipt() {
    let mut car = Car::new();
    let owner = PeerInfo::new(Role::Phone).with_principal(Principal::Device([1; 32]));
    let co_user = PeerInfo::new(Role::Phone).with_principal(Principal::Grant([2; 16]));
    let tasks = PeerInfo::new(Role::Phone).with_principal(Principal::Automation);
    let mut receipts = Vec::new();
    for (i, peer) in [owner, co_user, tasks].into_iter().enumerate() {
        let request = client::command(i as u64 + 1, &key(2), 0, client::flash_honk(true, false));
        let (_, out) = car.request_as(peer, &request);
        assert_eq!(states(&out), [Accepted, InProgress, Succeeded], "{i}");
        receipts.push(final_receipt(&out));
    }
    assert_eq!(car.service.backend().executions().flash_honk, 3);
    let sequences: Vec<u64> = receipts
        .iter()
        .map(|r| ReceiptBody::decode(r.body.as_slice()).unwrap().sequence)
        .collect();
    assert_eq!(sequences, [1, 2, 3], "each its own receipt");

    // Another principal's key with another command is not a conflict
    // either: it is not this principal's key.
    let other = PeerInfo::new(Role::Phone).with_principal(Principal::Device([9; 32]));
    let (_, out) = car.request_as(other, &client::command(9, &key(2), 0, client::lock()));
    assert_eq!(states(&out), [Accepted, InProgress, Succeeded]);

    // And each principal's retry still gets its own receipt, byte for
    // byte, executing nothing (at most once).
    for (i, peer) in [owner, co_user, tasks].into_iter().enumerate() {
        let retry = client::command(10 + i as u64, &key(2), 0, client::flash_honk(true, false));
        let (_, out) = car.request_as(peer, &retry);
        assert_eq!(states(&out), [Succeeded]);
        assert_eq!(
            final_receipt(&out).encode_to_vec(),
            receipts[i].encode_to_vec()
        );
    }
    assert_eq!(car.service.backend().executions().flash_honk, 3);
}

/// Two principals' commands with one key queued at once do not join: each
/// runs, and each stream hears only its own.
#[test]
fn r23_queued_commands_of_two_principals_with_one_key_do_not_join() {
    let mut car = Car::new();
    let a = PeerInfo::new(Role::Phone).with_principal(Principal::Device([1; 32]));
    let b = PeerInfo::new(Role::Watch).with_principal(Principal::Device([2; 32]));
    let first = car.send_as(a, &client::command(1, &key(5), 0, client::lock()));
    let second = car.send_as(b, &client::command(2, &key(5), 0, client::unlock()));
    let out = car.advance(0);
    let a = common::on_stream(&out, first);
    let b = common::on_stream(&out, second);
    assert_eq!(states(&a), [Accepted, InProgress, Succeeded]);
    assert_eq!(states(&b), [Accepted, InProgress, Succeeded]);
    assert_ne!(final_receipt(&a), final_receipt(&b));
    let executions = car.service.backend().executions();
    assert_eq!((executions.lock, executions.unlock), (1, 1));
}

#[test]
fn receipt_verifies_with_the_vehicle_key_and_fails_with_another() {
    let mut car = Car::new();
    let (_, out) = car.request(Role::Phone, &client::command(1, &key(3), 0, client::lock()));
    let receipt = final_receipt(&out);

    let body =
        client::verify_receipt_for(&car.vehicle_key, &receipt, &key(3), &client::lock()).unwrap();
    assert_eq!(body.idempotency_key, key(3).as_bytes());
    assert_eq!(body.command_digest, command_digest(&client::lock()));
    assert_eq!(body.state, Succeeded as i32);
    assert_eq!(body.reason, CommandReason::Unspecified as i32);
    assert_eq!(body.sequence, 1);

    // The signed message is exactly "tether/1 receipt\0" || body (SPEC §8.3).
    let mut message = b"tether/1 receipt\0".to_vec();
    message.extend_from_slice(&receipt.body);
    assert!(tether_identity::verify_signature(
        &car.vehicle_key,
        &message,
        &receipt.signature
    ));

    let stranger = DeviceKey::generate().unwrap().public_key();
    assert_eq!(
        client::verify_receipt(&stranger, &receipt),
        Err(client::ReceiptError::BadSignature)
    );
    // A genuine receipt is not accepted for another command or key.
    assert_eq!(
        client::verify_receipt_for(&car.vehicle_key, &receipt, &key(3), &client::unlock()),
        Err(client::ReceiptError::OtherCommand)
    );
    assert_eq!(
        client::verify_receipt_for(&car.vehicle_key, &receipt, &key(4), &client::lock()),
        Err(client::ReceiptError::OtherCommand)
    );
    // Flipping a body bit breaks the signature.
    let mut tampered = receipt.clone();
    let last = tampered.body.len() - 1;
    tampered.body[last] ^= 1;
    assert_eq!(
        client::verify_receipt(&car.vehicle_key, &tampered),
        Err(client::ReceiptError::BadSignature)
    );
}

#[test]
fn same_key_with_another_command_is_an_idempotency_conflict() {
    let mut car = Car::new();
    car.request(Role::Phone, &client::command(1, &key(5), 0, client::lock()));
    let (_, out) = car.request(
        Role::Phone,
        &client::command(2, &key(5), 0, client::unlock()),
    );
    let (code, _) = error(&out);
    assert_eq!(code, ErrorCode::IdempotencyConflict);
    assert_eq!(car.service.backend().executions().unlock, 0);
}

#[test]
fn same_key_with_another_command_while_the_first_is_queued_is_a_conflict() {
    let mut car = Car::new();
    let (_, queued) = car.send(Role::Phone, &client::command(1, &key(5), 0, client::lock()));
    assert_eq!(states(&queued), [Accepted]);
    let (_, out) = car.send(
        Role::Phone,
        &client::command(2, &key(5), 0, client::unlock()),
    );
    assert_eq!(error(&out).0, ErrorCode::IdempotencyConflict);
}

#[test]
fn retry_while_the_first_attempt_is_queued_joins_it_and_executes_once() {
    let mut car = Car::new();
    let (first, a) = car.send(Role::Phone, &client::command(1, &key(6), 0, client::lock()));
    let (second, b) = car.send(Role::Phone, &client::command(2, &key(6), 0, client::lock()));
    assert_eq!(states(&a), [Accepted]);
    assert_eq!(states(&b), [Accepted]);

    let out = car.advance(0);
    let a = common::on_stream(&out, first);
    let b = common::on_stream(&out, second);
    assert_eq!(states(&a), [InProgress, Succeeded]);
    assert_eq!(states(&b), [InProgress, Succeeded]);
    assert_eq!(final_receipt(&a), final_receipt(&b));
    assert_eq!(car.service.backend().executions().lock, 1);
}

#[test]
fn closed_stream_still_gets_its_command_run_once_and_a_retry_gets_the_receipt() {
    let mut car = Car::new();
    let (stream, _) = car.send(Role::Phone, &client::command(1, &key(7), 0, client::lock()));
    car.service.handle_stream_closed(stream);
    let out = car.advance(0);
    assert!(common::on_stream(&out, stream).is_empty());
    assert_eq!(car.service.backend().executions().lock, 1);

    let (_, retry) = car.request(Role::Phone, &client::command(2, &key(7), 0, client::lock()));
    assert_eq!(states(&retry), [Succeeded]);
    assert_eq!(car.service.backend().executions().lock, 1);
}

#[test]
fn deadline_zero_means_the_vehicle_default_and_the_command_runs() {
    let mut car = Car::new();
    let (_, accepted) = car.send(Role::Phone, &client::command(1, &key(8), 0, client::lock()));
    assert_eq!(states(&accepted), [Accepted]);
    // Five seconds later is still inside the default deadline (10 s).
    let out = car.advance(5_000);
    assert_eq!(
        states(&common::on_stream(&out, out[0].stream)),
        [InProgress, Succeeded]
    );
    assert_eq!(car.service.backend().executions().lock, 1);
}

#[test]
fn elapsed_deadline_times_out_without_touching_the_car() {
    let mut car = Car::new();
    let (stream, accepted) = car.send(
        Role::Phone,
        &client::command(1, &key(9), 100, client::lock()),
    );
    assert_eq!(states(&accepted), [Accepted]);
    let out = common::on_stream(&car.advance(500), stream);
    assert_eq!(states(&out), [TimedOut]);
    assert_eq!(car.service.backend().executions().total(), 0);

    let body = client::verify_receipt(&car.vehicle_key, &final_receipt(&out)).unwrap();
    assert_eq!(body.state, TimedOut as i32);
    // The key is spent: a retry returns the same TIMED_OUT receipt, never runs.
    let (_, retry) = car.request(
        Role::Phone,
        &client::command(2, &key(9), 100, client::lock()),
    );
    assert_eq!(final_receipt(&retry), final_receipt(&out));
    assert_eq!(car.service.backend().executions().total(), 0);
}

#[test]
fn lock_while_moving_is_rejected_in_use_with_a_signed_receipt() {
    let mut car = Car::new();
    car.sim().drive(30.0);
    let (_, out) = car.request(
        Role::Phone,
        &client::command(1, &key(10), 0, client::lock()),
    );
    assert_eq!(states(&out), [Accepted, InProgress, Rejected]);
    let last = client::command_status(out.last().unwrap()).unwrap();
    assert_eq!(last.reason, CommandReason::InUse as i32);
    let body = client::verify_receipt(&car.vehicle_key, &final_receipt(&out)).unwrap();
    assert_eq!(
        (body.state, body.reason),
        (Rejected as i32, CommandReason::InUse as i32)
    );
}

#[test]
fn lock_with_a_door_open_is_rejected_in_use() {
    let mut car = Car::new();
    car.sim().set_door_open(Door::Row1PassengerSide, true);
    let (_, out) = car.request(
        Role::Phone,
        &client::command(1, &key(11), 0, client::lock()),
    );
    let last = client::command_status(out.last().unwrap()).unwrap();
    assert_eq!(
        (last.state, last.reason),
        (Rejected as i32, CommandReason::InUse as i32)
    );
}

#[test]
fn invalid_argument_is_rejected_without_reaching_the_car() {
    let mut car = Car::new();
    let mut bad_window = client::window(10);
    if let Some(tether_proto::v1::vehicle_command::Command::Window(w)) = &mut bad_window.command {
        w.position = 0; // WINDOW_POSITION_UNSPECIFIED
    }
    let (_, out) = car.request(Role::Phone, &client::command(1, &key(12), 0, bad_window));
    assert_eq!(states(&out), [Accepted, Rejected]);
    let last = client::command_status(out.last().unwrap()).unwrap();
    assert_eq!(last.reason, CommandReason::InvalidArgument as i32);
    assert_eq!(car.service.backend().executions().total(), 0);
}

#[test]
fn missing_short_or_long_idempotency_key_is_bad_request() {
    let mut car = Car::new();
    for len in [0, 1, 15, 33] {
        let mut request = client::command(1, &key(13), 0, client::lock());
        request.idempotency_key = vec![7; len];
        let (_, out) = car.request(Role::Phone, &request);
        assert_eq!(error(&out).0, ErrorCode::BadRequest, "key of {len} bytes");
    }
    assert_eq!(car.service.backend().executions().total(), 0);
    assert!(car.service.log().is_empty());
}

#[test]
fn empty_command_is_bad_request() {
    let mut car = Car::new();
    let request = client::command(
        1,
        &key(14),
        0,
        tether_proto::v1::VehicleCommand { command: None },
    );
    let (_, out) = car.request(Role::Phone, &request);
    assert_eq!(error(&out).0, ErrorCode::BadRequest);
}

#[test]
fn sequence_numbers_increase_and_continue_after_a_restart() {
    let key_bytes = DeviceKey::generate().unwrap();
    let pkcs8 = key_bytes.pkcs8().to_vec();
    let mut car = Car::with_parts(key_bytes, SimulatedVehicle::new(), MemoryReceiptLog::new());
    let (_, a) = car.request(
        Role::Phone,
        &client::command(1, &key(20), 0, client::lock()),
    );
    let (_, b) = car.request(
        Role::Phone,
        &client::command(2, &key(21), 0, client::unlock()),
    );
    let seq = |out: &[tether_proto::v1::Envelope]| {
        ReceiptBody::decode(final_receipt(out).body.as_slice())
            .unwrap()
            .sequence
    };
    assert_eq!((seq(&a), seq(&b)), (1, 2));

    // Restart: same key, same log, a fresh car process.
    let (_, log) = car.service.into_parts();
    let mut car = Car::with_parts(
        DeviceKey::from_pkcs8(&pkcs8).unwrap(),
        SimulatedVehicle::new(),
        log,
    );
    let (_, replay) = car.request(
        Role::Phone,
        &client::command(3, &key(20), 0, client::lock()),
    );
    assert_eq!(
        final_receipt(&replay),
        final_receipt(&a),
        "receipt survives restart"
    );
    assert_eq!(car.service.backend().executions().total(), 0);
    let (_, c) = car.request(
        Role::Phone,
        &client::command(4, &key(22), 0, client::lock()),
    );
    assert_eq!(seq(&c), 3);
}

#[test]
fn interrupted_attempt_found_after_restart_is_never_run_again() {
    // The write-ahead mark of a command the car was acting on when the
    // process died: the outcome was never recorded.
    let mut log = MemoryReceiptLog::new();
    log.put(
        &Principal::Unnamed,
        key(30).as_bytes(),
        StoredReceipt {
            command_digest: command_digest(&client::lock()),
            sequence: 9,
            receipt: None,
        },
    )
    .unwrap();
    let mut car = Car::with_log(log);
    let (_, out) = car.request(
        Role::Phone,
        &client::command(1, &key(30), 0, client::lock()),
    );
    let (code, message) = error(&out);
    assert_eq!(code, ErrorCode::Internal);
    assert!(message.contains("not run again"), "{message}");
    assert_eq!(car.service.backend().executions().total(), 0);

    // Numbering continues after the interrupted sequence number.
    let (_, next) = car.request(
        Role::Phone,
        &client::command(2, &key(31), 0, client::lock()),
    );
    let body = ReceiptBody::decode(final_receipt(&next).body.as_slice()).unwrap();
    assert_eq!(body.sequence, 10);
}

#[test]
fn receipt_log_keeps_the_receipt_bytes_sent_to_the_phone() {
    let mut car = Car::new();
    let (_, out) = car.request(
        Role::Phone,
        &client::command(1, &key(40), 0, client::lock()),
    );
    let stored = car
        .service
        .log()
        .get(&Principal::Unnamed, key(40).as_bytes())
        .unwrap()
        .unwrap();
    assert_eq!(stored.command_digest, command_digest(&client::lock()));
    assert_eq!(stored.receipt, Some(final_receipt(&out).encode_to_vec()));
}

#[test]
fn too_many_queued_commands_is_busy() {
    let mut car = Car::new();
    for i in 0..16u8 {
        let (_, out) = car.send(
            Role::Phone,
            &client::command(1, &key(100 + i), 0, client::lock()),
        );
        assert_eq!(states(&out), [Accepted]);
    }
    let (_, out) = car.send(
        Role::Phone,
        &client::command(1, &key(200), 0, client::lock()),
    );
    assert_eq!(error(&out).0, ErrorCode::Busy);
}
