//! SPAKE2 pairing, both cores driven against each other in memory (R6).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

use prost::Message;
use tether_pairing::pake::{
    AttemptLimiter, BASE_BACKOFF_MS, Commissioner, CommissionerStep, DeviceEvent,
    MAX_FAILED_ATTEMPTS, PAIRING_TIMEOUT_MS, PairingDevice, PairingError, Refusal, decode_message,
};
use tether_proto::v1::{CommissioningMessage, PairingRequest, commissioning_message::Kind};

const PASSCODE: u32 = 20_202_021;

fn seed(n: u8) -> [u8; 32] {
    [n; 32]
}

/// Runs one attempt; returns the commissioner's result and the device's
/// events.
fn attempt(
    device: &mut PairingDevice,
    passcode: u32,
    now_ms: u64,
    n: u8,
) -> (Result<CommissionerStep, PairingError>, Vec<DeviceEvent>) {
    let mut events = Vec::new();
    let (mut commissioner, request) = Commissioner::start(passcode, seed(n));
    let out = device.handle(&request, now_ms, seed(n + 100)).unwrap();
    events.extend(out.event.clone());
    let step = commissioner.handle(&out.reply.unwrap());
    let confirm = match step {
        Ok(CommissionerStep::Send(bytes)) => bytes,
        other => {
            // The commissioner gives up and drops the link.
            device.link_closed();
            return (other, events);
        }
    };
    let out = device.handle(&confirm, now_ms + 5, seed(n + 101)).unwrap();
    events.extend(out.event.clone());
    (commissioner.handle(&out.reply.unwrap()), events)
}

#[test]
fn the_right_passcode_gives_both_sides_the_same_key_r6() {
    let mut device = PairingDevice::new(PASSCODE, AttemptLimiter::default());
    let (result, events) = attempt(&mut device, PASSCODE, 0, 1);
    let CommissionerStep::Paired(key) = result.unwrap() else {
        panic!("not paired")
    };
    assert_eq!(events, vec![DeviceEvent::Paired(key.clone())]);
    assert_eq!(device.limiter().failures(), 0, "success clears the count");
    // Fresh randomness gives a fresh key.
    let (again, _) = attempt(&mut device, PASSCODE, 10, 2);
    let CommissionerStep::Paired(other) = again.unwrap() else {
        panic!("not paired")
    };
    assert_ne!(key, other);
}

#[test]
fn a_wrong_passcode_is_detected_by_the_commissioner_and_counted_by_the_device_r6() {
    let mut device = PairingDevice::new(PASSCODE, AttemptLimiter::default());
    let (result, events) = attempt(&mut device, PASSCODE + 1, 0, 1);
    assert_eq!(result, Err(PairingError::WrongPasscode));
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(device.limiter().failures(), 1);
}

#[test]
fn failures_back_off_exponentially_then_lock_out_r6() {
    let mut device = PairingDevice::new(PASSCODE, AttemptLimiter::default());
    let mut now = 0;
    for failure in 1..=MAX_FAILED_ATTEMPTS {
        let (result, _) = attempt(&mut device, PASSCODE + 7, now, failure as u8);
        assert_eq!(result, Err(PairingError::WrongPasscode));
        let backoff = BASE_BACKOFF_MS << (failure - 1);
        if failure < MAX_FAILED_ATTEMPTS {
            // Too early: refused without SPAKE2 work, told how long to wait.
            let (result, events) = attempt(&mut device, PASSCODE, now + backoff - 1, 50);
            assert_eq!(result, Err(PairingError::RetryLater { retry_after_s: 1 }));
            assert_eq!(events, vec![DeviceEvent::Refused(Refusal::RetryAfter(1))]);
        }
        now += backoff;
    }
    // Locked out: even the right passcode is refused, at any later time.
    let (result, events) = attempt(&mut device, PASSCODE, now + 86_400_000, 60);
    assert_eq!(result, Err(PairingError::LockedOut));
    assert_eq!(events, vec![DeviceEvent::Refused(Refusal::LockedOut)]);
    assert_eq!(device.limiter().failures(), MAX_FAILED_ATTEMPTS);
    // A user reset lets the owner pair.
    device.reset_by_user();
    let (result, _) = attempt(&mut device, PASSCODE, now + 86_400_001, 61);
    assert!(matches!(result, Ok(CommissionerStep::Paired(_))));
}

#[test]
fn an_abandoned_attempt_still_counts_and_the_limit_survives_a_restart_r6() {
    let mut device = PairingDevice::new(PASSCODE, AttemptLimiter::default());
    let (_c, request) = Commissioner::start(PASSCODE + 1, seed(1));
    let out = device.handle(&request, 0, seed(2)).unwrap();
    assert_eq!(out.timer_ms, Some(PAIRING_TIMEOUT_MS));
    // The attacker learns the challenge and walks away.
    assert_eq!(device.handle_timeout(PAIRING_TIMEOUT_MS - 1), None);
    assert_eq!(
        device.handle_timeout(PAIRING_TIMEOUT_MS),
        Some(DeviceEvent::TimedOut)
    );
    assert_eq!(device.limiter().failures(), 1);
    // The host persisted the limiter; a reboot continues from it.
    let (failures, not_before) = device.limiter().to_parts();
    let rebooted = PairingDevice::new(PASSCODE, AttemptLimiter::from_parts(failures, not_before));
    assert_eq!(rebooted.limiter().failures(), 1);
}

#[test]
fn a_second_commissioner_is_told_busy_while_one_is_pairing() {
    let mut device = PairingDevice::new(PASSCODE, AttemptLimiter::default());
    let (mut first, request) = Commissioner::start(PASSCODE, seed(1));
    let challenge = device.handle(&request, 0, seed(2)).unwrap().reply.unwrap();
    let (mut second, request2) = Commissioner::start(PASSCODE, seed(3));
    let busy = device
        .handle(&request2, 10, seed(4))
        .unwrap()
        .reply
        .unwrap();
    assert_eq!(second.handle(&busy), Err(PairingError::Busy));
    // The first one still completes.
    let CommissionerStep::Send(confirm) = first.handle(&challenge).unwrap() else {
        panic!("expected a confirm")
    };
    let done = device.handle(&confirm, 20, seed(5)).unwrap();
    assert!(matches!(done.event, Some(DeviceEvent::Paired(_))));
    assert!(matches!(
        first.handle(&done.reply.unwrap()),
        Ok(CommissionerStep::Paired(_))
    ));
}

#[test]
fn a_tampered_confirmation_fails_on_the_device_r6() {
    let mut device = PairingDevice::new(PASSCODE, AttemptLimiter::default());
    let (mut commissioner, request) = Commissioner::start(PASSCODE, seed(1));
    let challenge = device.handle(&request, 0, seed(2)).unwrap().reply.unwrap();
    let CommissionerStep::Send(confirm) = commissioner.handle(&challenge).unwrap() else {
        panic!("expected a confirm")
    };
    let mut message = CommissioningMessage::decode(confirm.as_slice()).unwrap();
    if let Some(Kind::PairingConfirm(c)) = &mut message.kind {
        c.confirm[0] ^= 1;
    }
    let out = device.handle(&message.encode_to_vec(), 5, seed(3)).unwrap();
    assert_eq!(out.event, Some(DeviceEvent::Failed));
    assert_eq!(
        commissioner.handle(&out.reply.unwrap()),
        Err(PairingError::Rejected)
    );
    assert_eq!(device.limiter().failures(), 1);
}

#[test]
fn malformed_and_out_of_turn_messages_are_typed_errors() {
    let mut device = PairingDevice::new(PASSCODE, AttemptLimiter::default());
    assert!(matches!(
        device.handle(&[0xff, 0x01, 0x02], 0, seed(1)),
        Err(PairingError::Malformed(_))
    ));
    assert!(matches!(
        device.handle(&[0; 300], 0, seed(1)),
        Err(PairingError::Malformed(_))
    ));
    // A confirm with no attempt in progress.
    let (mut c, request) = Commissioner::start(PASSCODE, seed(1));
    let challenge = {
        let mut d = PairingDevice::new(PASSCODE, AttemptLimiter::default());
        d.handle(&request, 0, seed(2)).unwrap().reply.unwrap()
    };
    let CommissionerStep::Send(confirm) = c.handle(&challenge).unwrap() else {
        panic!("expected a confirm")
    };
    assert!(matches!(
        device.handle(&confirm, 0, seed(3)),
        Err(PairingError::Unexpected(_))
    ));
    // A commissioner handed its own request back.
    let (mut c2, request2) = Commissioner::start(PASSCODE, seed(4));
    assert!(matches!(
        c2.handle(&request2),
        Err(PairingError::Unexpected(_))
    ));
    assert_eq!(c2.handle(&request2), Err(PairingError::Finished));
    // A bad SPAKE2 element is refused and counted, not a panic.
    let bad = CommissioningMessage {
        kind: Some(Kind::PairingRequest(PairingRequest {
            version: 1,
            pake: vec![0x41; 33],
        })),
    }
    .encode_to_vec();
    let out = device.handle(&bad, 0, seed(5)).unwrap();
    assert!(matches!(
        decode_message(&out.reply.unwrap()),
        Ok(Kind::PairingResult(_))
    ));
}

#[test]
fn the_passcode_never_appears_in_any_pairing_message_r6() {
    let mut device = PairingDevice::new(PASSCODE, AttemptLimiter::default());
    let (mut commissioner, request) = Commissioner::start(PASSCODE, seed(1));
    let challenge = device.handle(&request, 0, seed(2)).unwrap().reply.unwrap();
    let CommissionerStep::Send(confirm) = commissioner.handle(&challenge).unwrap() else {
        panic!("expected a confirm")
    };
    let forms: Vec<Vec<u8>> = vec![
        PASSCODE.to_be_bytes().to_vec(),
        PASSCODE.to_le_bytes().to_vec(),
        PASSCODE.to_string().into_bytes(),
    ];
    for message in [&request, &challenge, &confirm] {
        for form in &forms {
            assert!(
                !message.windows(form.len()).any(|w| w == form.as_slice()),
                "passcode form {form:?} found on the wire"
            );
        }
    }
}
