//! A small in-memory harness: one simulated car behind a `VehicleService`,
//! a fake clock, and streams opened per request. Not every test binary uses
//! every helper.
#![allow(dead_code)]
// Harness helpers run only inside tests: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use tether_control::{
    Config, MemoryReceiptLog, Output, PeerInfo, SimulatedVehicle, StreamId, Transmit,
    VehicleService, client,
};
use tether_identity::{DeviceKey, Role};
use tether_proto::v1::{
    CommandReceipt, CommandState, Envelope, ErrorCode, SignalValues, envelope, signal_value::Value,
};

pub(crate) type Service = VehicleService<SimulatedVehicle, MemoryReceiptLog>;

pub(crate) struct Car {
    pub(crate) service: Service,
    pub(crate) now_ms: u64,
    pub(crate) vehicle_key: [u8; 32],
    next_stream: u64,
}

impl Car {
    pub(crate) fn new() -> Self {
        Self::with_log(MemoryReceiptLog::new())
    }

    pub(crate) fn with_log(log: MemoryReceiptLog) -> Self {
        Self::with_parts(DeviceKey::generate().unwrap(), SimulatedVehicle::new(), log)
    }

    pub(crate) fn with_parts(key: DeviceKey, car: SimulatedVehicle, log: MemoryReceiptLog) -> Self {
        let vehicle_key = key.public_key();
        let service = VehicleService::new(Config::default(), key, car, log).unwrap();
        Self {
            service,
            now_ms: 0,
            vehicle_key,
            next_stream: 1,
        }
    }

    pub(crate) fn sim(&mut self) -> &mut SimulatedVehicle {
        self.service.backend_mut()
    }

    /// Sends `request` on a new stream and drives the car until it is idle at
    /// the current time; returns the stream and what was sent on it.
    pub(crate) fn request(&mut self, role: Role, request: &Envelope) -> (StreamId, Vec<Envelope>) {
        self.request_as(PeerInfo::new(role), request)
    }

    /// Like [`Car::request`], from `peer` (a co-user, another session).
    pub(crate) fn request_as(
        &mut self,
        peer: PeerInfo,
        request: &Envelope,
    ) -> (StreamId, Vec<Envelope>) {
        let stream = self.send_as(peer, request);
        let out = self.drive();
        (stream, on_stream(&out, stream))
    }

    /// Like [`Car::request`], but returns what was sent on every stream.
    pub(crate) fn request_all(&mut self, role: Role, request: &Envelope) -> Vec<Transmit> {
        self.send_as(PeerInfo::new(role), request);
        self.drive()
    }

    /// Sends `request` on a new stream without firing any timer; returns the
    /// stream and the immediate answers.
    pub(crate) fn send(&mut self, role: Role, request: &Envelope) -> (StreamId, Vec<Envelope>) {
        let stream = self.send_as(PeerInfo::new(role), request);
        let out = self.drain();
        (stream, on_stream(&out, stream))
    }

    /// Sends `request` from `peer` on a new stream without driving the car.
    pub(crate) fn send_as(&mut self, peer: PeerInfo, request: &Envelope) -> StreamId {
        let stream = StreamId(self.next_stream);
        self.next_stream += 1;
        self.service
            .handle_request(stream, peer, request, self.now_ms);
        stream
    }

    /// Moves the clock forward and fires the timer; returns everything sent.
    pub(crate) fn advance(&mut self, ms: u64) -> Vec<Transmit> {
        self.now_ms += ms;
        self.service.handle_timeout(self.now_ms);
        self.drive()
    }

    /// Drains output, firing every timer that is already due, until the car
    /// is idle at the current time (commands run, due tick sent).
    pub(crate) fn drive(&mut self) -> Vec<Transmit> {
        let mut out = Vec::new();
        loop {
            match self.service.poll_output() {
                Output::Transmit(t) => out.push(t),
                // Terminates: after a timeout no command is queued and the
                // next tick lies a full interval ahead.
                Output::Timeout(at) if at <= self.now_ms => {
                    self.service.handle_timeout(self.now_ms)
                }
                Output::Timeout(_) => return out,
            }
        }
    }

    fn drain(&mut self) -> Vec<Transmit> {
        let mut out = Vec::new();
        while let Output::Transmit(t) = self.service.poll_output() {
            out.push(t);
        }
        out
    }
}

pub(crate) fn on_stream(out: &[Transmit], stream: StreamId) -> Vec<Envelope> {
    out.iter()
        .filter(|t| t.stream == stream)
        .map(|t| t.envelope.clone())
        .collect()
}

pub(crate) fn key(byte: u8) -> client::IdempotencyKey {
    client::IdempotencyKey::from_bytes(&[byte; 16]).unwrap()
}

/// The command states in a stream's responses, in order.
pub(crate) fn states(responses: &[Envelope]) -> Vec<CommandState> {
    responses
        .iter()
        .map(|e| {
            let status = client::command_status(e).expect("a command status");
            CommandState::try_from(status.state).unwrap()
        })
        .collect()
}

/// The receipt of the last (final) status.
pub(crate) fn final_receipt(responses: &[Envelope]) -> CommandReceipt {
    let last = responses.last().expect("at least one response");
    client::command_status(last)
        .unwrap()
        .receipt
        .clone()
        .expect("final status carries a receipt")
}

/// The error code of a single error response.
pub(crate) fn error(responses: &[Envelope]) -> (ErrorCode, String) {
    assert_eq!(responses.len(), 1, "{responses:?}");
    match &responses[0].body {
        Some(envelope::Body::Error(e)) => (ErrorCode::try_from(e.code).unwrap(), e.message.clone()),
        other => panic!("expected an error, got {other:?}"),
    }
}

pub(crate) fn values(envelope: &Envelope) -> SignalValues {
    client::signal_values(envelope).unwrap().clone()
}

pub(crate) fn value_of(values: &SignalValues, path: &str) -> Option<Value> {
    values
        .values
        .iter()
        .find(|v| v.path == path)
        .and_then(|v| v.value.clone())
}
