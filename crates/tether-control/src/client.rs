//! The phone's side: request builders, response parsing and receipt checks.

use prost::Message;
use ring::rand::{SecureRandom, SystemRandom};
use tether_identity::{KeyError, verify_signature};
use tether_proto::v1::{
    Climate, CommandReceipt, CommandStatus, DoorLock, Envelope, ErrorCode, FlashHonk, GetSignals,
    ReceiptBody, Request, SignalValues, Subscribe, VehicleCommand, Window, WindowPosition,
    envelope, request, response, vehicle_command::Command,
};

use crate::receipt::{
    MAX_IDEMPOTENCY_KEY_BYTES, MIN_IDEMPOTENCY_KEY_BYTES, command_digest, receipt_message,
};

/// An idempotency key of 16..=32 bytes. Use a fresh one per user action and
/// the same one for every retry of it (SPEC §8.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(Vec<u8>);

impl IdempotencyKey {
    /// 16 fresh random bytes.
    pub fn generate() -> Result<Self, KeyError> {
        let mut key = vec![0; MIN_IDEMPOTENCY_KEY_BYTES];
        SystemRandom::new()
            .fill(&mut key)
            .map_err(|_| KeyError::Random)?;
        Ok(Self(key))
    }

    /// Wraps stored bytes; `None` unless 16..=32 bytes long.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        (MIN_IDEMPOTENCY_KEY_BYTES..=MAX_IDEMPOTENCY_KEY_BYTES)
            .contains(&bytes.len())
            .then(|| Self(bytes.to_vec()))
    }

    /// The raw key.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

fn request_envelope(request_id: u64, kind: request::Kind) -> Envelope {
    Envelope {
        request_id,
        body: Some(envelope::Body::Request(Request { kind: Some(kind) })),
        ..Default::default()
    }
}

/// A Get for `paths`; empty asks for every signal this device may read.
pub fn get_signals(request_id: u64, paths: &[&str]) -> Envelope {
    let paths = paths.iter().map(|p| (*p).to_owned()).collect();
    request_envelope(request_id, request::Kind::GetSignals(GetSignals { paths }))
}

/// A Subscribe for `paths`; empty subscribes to every signal this device may read.
pub fn subscribe(request_id: u64, paths: &[&str]) -> Envelope {
    let paths = paths.iter().map(|p| (*p).to_owned()).collect();
    request_envelope(request_id, request::Kind::Subscribe(Subscribe { paths }))
}

/// A command envelope. `deadline_ms = 0` leaves the deadline to the vehicle.
pub fn command(
    request_id: u64,
    key: &IdempotencyKey,
    deadline_ms: u32,
    command: VehicleCommand,
) -> Envelope {
    Envelope {
        idempotency_key: key.as_bytes().to_vec(),
        deadline_ms,
        ..request_envelope(request_id, request::Kind::Command(command))
    }
}

/// Lock every door.
pub fn lock() -> VehicleCommand {
    VehicleCommand {
        command: Some(Command::Lock(DoorLock {})),
    }
}

/// Unlock every door.
pub fn unlock() -> VehicleCommand {
    VehicleCommand {
        command: Some(Command::Unlock(DoorLock {})),
    }
}

/// Switch climate control; `target_celsius: None` keeps the current target.
pub fn climate(on: bool, target_celsius: Option<f32>) -> VehicleCommand {
    VehicleCommand {
        command: Some(Command::Climate(Climate {
            on,
            target_celsius: target_celsius.unwrap_or(0.0),
        })),
    }
}

/// Move every window to `percent_open` (0 closed, 100 open).
pub fn window(percent_open: u8) -> VehicleCommand {
    VehicleCommand {
        command: Some(Command::Window(Window {
            position: WindowPosition::Percent as i32,
            percent_open: u32::from(percent_open),
        })),
    }
}

/// Flash the lights and/or sound the horn.
pub fn flash_honk(flash: bool, honk: bool) -> VehicleCommand {
    VehicleCommand {
        command: Some(Command::FlashHonk(FlashHonk { flash, honk })),
    }
}

/// A wire error from the vehicle, one variant per `ErrorCode`, or a response
/// that does not fit the request. The message is the vehicle's human text and
/// carries no identifiers (R2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// `BAD_REQUEST`: our request was malformed or lacked a field (our bug).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// `UNAUTHENTICATED`: the session is not authenticated yet (reconnect).
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// `PERMISSION_DENIED`: this device's role may not do this (R23; not retryable).
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// `NOT_FOUND`: the vehicle does not know a requested signal.
    #[error("not found: {0}")]
    NotFound(String),
    /// `MESSAGE_TOO_LARGE`: our frame exceeded the negotiated limit (our bug).
    #[error("message too large: {0}")]
    MessageTooLarge(String),
    /// `DEADLINE_EXCEEDED`: the deadline passed before the work finished.
    #[error("deadline exceeded: {0}")]
    DeadlineExceeded(String),
    /// `UNSUPPORTED`: the vehicle does not implement this request.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// `BUSY`: too much in flight on the vehicle; retry later with the same key.
    #[error("busy: {0}")]
    Busy(String),
    /// `INTERNAL`: a fault on the vehicle (its receipt log, for instance).
    #[error("vehicle fault: {0}")]
    Internal(String),
    /// `VERSION_MISMATCH`: no protocol version in common.
    #[error("version mismatch: {0}")]
    VersionMismatch(String),
    /// `IDEMPOTENCY_CONFLICT`: the key was used before for another command (our bug).
    #[error("idempotency conflict: {0}")]
    IdempotencyConflict(String),
    /// `CLOSING`: the session is shutting down; retry on a new one.
    #[error("closing: {0}")]
    Closing(String),
    /// A command that arrived as TLS 0-RTT early data: not executed; send
    /// it again (SPEC §5.8). The session layer never sends one early.
    #[error("sent too early, not executed: {0}")]
    TooEarly(String),
    /// `UNSPECIFIED` or a code this build does not know (the peer's bug or a newer peer).
    #[error("error code {code}: {message}")]
    Unknown {
        /// The raw wire code.
        code: i32,
        /// The vehicle's text.
        message: String,
    },
    /// The vehicle answered with something other than the expected response
    /// (the peer's bug).
    #[error("unexpected response from the vehicle")]
    UnexpectedResponse,
}

impl ControlError {
    /// Maps a wire `Error`.
    pub fn from_wire(error: &tether_proto::v1::Error) -> Self {
        let m = error.message.clone();
        match ErrorCode::try_from(error.code) {
            Ok(ErrorCode::BadRequest) => Self::BadRequest(m),
            Ok(ErrorCode::Unauthenticated) => Self::Unauthenticated(m),
            Ok(ErrorCode::PermissionDenied) => Self::PermissionDenied(m),
            Ok(ErrorCode::NotFound) => Self::NotFound(m),
            Ok(ErrorCode::MessageTooLarge) => Self::MessageTooLarge(m),
            Ok(ErrorCode::DeadlineExceeded) => Self::DeadlineExceeded(m),
            Ok(ErrorCode::Unsupported) => Self::Unsupported(m),
            Ok(ErrorCode::Busy) => Self::Busy(m),
            Ok(ErrorCode::Internal) => Self::Internal(m),
            Ok(ErrorCode::VersionMismatch) => Self::VersionMismatch(m),
            Ok(ErrorCode::IdempotencyConflict) => Self::IdempotencyConflict(m),
            Ok(ErrorCode::Closing) => Self::Closing(m),
            Ok(ErrorCode::TooEarly) => Self::TooEarly(m),
            Ok(ErrorCode::Unspecified) | Err(_) => Self::Unknown {
                code: error.code,
                message: m,
            },
        }
    }

    /// The wire code; `None` for [`ControlError::UnexpectedResponse`].
    pub fn code(&self) -> Option<ErrorCode> {
        Some(match self {
            Self::BadRequest(_) => ErrorCode::BadRequest,
            Self::Unauthenticated(_) => ErrorCode::Unauthenticated,
            Self::PermissionDenied(_) => ErrorCode::PermissionDenied,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::MessageTooLarge(_) => ErrorCode::MessageTooLarge,
            Self::DeadlineExceeded(_) => ErrorCode::DeadlineExceeded,
            Self::Unsupported(_) => ErrorCode::Unsupported,
            Self::Busy(_) => ErrorCode::Busy,
            Self::Internal(_) => ErrorCode::Internal,
            Self::VersionMismatch(_) => ErrorCode::VersionMismatch,
            Self::IdempotencyConflict(_) => ErrorCode::IdempotencyConflict,
            Self::Closing(_) => ErrorCode::Closing,
            Self::TooEarly(_) => ErrorCode::TooEarly,
            Self::Unknown { code, .. } => {
                ErrorCode::try_from(*code).unwrap_or(ErrorCode::Unspecified)
            }
            Self::UnexpectedResponse => return None,
        })
    }
}

fn response_kind(envelope: &Envelope) -> Result<&response::Kind, ControlError> {
    match &envelope.body {
        Some(envelope::Body::Response(r)) => {
            r.kind.as_ref().ok_or(ControlError::UnexpectedResponse)
        }
        Some(envelope::Body::Error(e)) => Err(ControlError::from_wire(e)),
        _ => Err(ControlError::UnexpectedResponse),
    }
}

/// The values in a Get answer, a Subscribe's first answer or an update.
pub fn signal_values(envelope: &Envelope) -> Result<&SignalValues, ControlError> {
    match response_kind(envelope)? {
        response::Kind::Signals(v) | response::Kind::Update(v) => Ok(v),
        _ => Err(ControlError::UnexpectedResponse),
    }
}

/// The status in a command response.
pub fn command_status(envelope: &Envelope) -> Result<&CommandStatus, ControlError> {
    match response_kind(envelope)? {
        response::Kind::CommandStatus(s) => Ok(s),
        _ => Err(ControlError::UnexpectedResponse),
    }
}

/// Why a receipt was not accepted. Every variant means "do not trust it".
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiptError {
    /// The signature does not verify under the vehicle's key, or the key or
    /// signature is malformed.
    #[error("receipt signature does not verify")]
    BadSignature,
    /// The signed body is not a `ReceiptBody` (the signer's bug).
    #[error("receipt body is malformed")]
    MalformedBody,
    /// A valid receipt, but for another idempotency key or command.
    #[error("receipt is for another command")]
    OtherCommand,
}

/// Checks the vehicle's signature over `"tether/1 receipt\0" || body` and
/// decodes the body. A malformed key or signature is an error, never a panic.
pub fn verify_receipt(
    vehicle_public_key: &[u8],
    receipt: &CommandReceipt,
) -> Result<ReceiptBody, ReceiptError> {
    if !verify_signature(
        vehicle_public_key,
        &receipt_message(&receipt.body),
        &receipt.signature,
    ) {
        return Err(ReceiptError::BadSignature);
    }
    ReceiptBody::decode(receipt.body.as_slice()).map_err(|_| ReceiptError::MalformedBody)
}

/// [`verify_receipt`], then checks that the receipt is for this key and this
/// command, so a genuine receipt for something else is not mistaken for ours.
pub fn verify_receipt_for(
    vehicle_public_key: &[u8],
    receipt: &CommandReceipt,
    key: &IdempotencyKey,
    command: &VehicleCommand,
) -> Result<ReceiptBody, ReceiptError> {
    let body = verify_receipt(vehicle_public_key, receipt)?;
    if body.idempotency_key != key.as_bytes() || body.command_digest != command_digest(command) {
        return Err(ReceiptError::OtherCommand);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_wire_code_maps_to_its_own_variant_and_back() {
        for code in 1..=12 {
            let wire = tether_proto::v1::Error {
                code,
                message: "m".into(),
            };
            let err = ControlError::from_wire(&wire);
            assert!(!matches!(err, ControlError::Unknown { .. }), "{code}");
            assert_eq!(err.code().map(|c| c as i32), Some(code));
        }
        let unknown = ControlError::from_wire(&tether_proto::v1::Error {
            code: 999,
            message: String::new(),
        });
        assert!(matches!(unknown, ControlError::Unknown { code: 999, .. }));
    }

    #[test]
    fn malformed_key_or_signature_is_an_error_not_a_panic() {
        let receipt = CommandReceipt {
            body: vec![1, 2, 3],
            signature: vec![0; 3],
        };
        assert_eq!(
            verify_receipt(&[], &receipt),
            Err(ReceiptError::BadSignature)
        );
        assert_eq!(
            verify_receipt(&[0xff; 32], &receipt),
            Err(ReceiptError::BadSignature)
        );
    }

    #[test]
    fn idempotency_key_length_is_checked() {
        assert!(IdempotencyKey::from_bytes(&[0; 15]).is_none());
        assert!(IdempotencyKey::from_bytes(&[0; 33]).is_none());
        assert!(IdempotencyKey::from_bytes(&[0; 32]).is_some());
        let a = IdempotencyKey::generate().unwrap();
        let b = IdempotencyKey::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.as_bytes().len(), MIN_IDEMPOTENCY_KEY_BYTES);
    }
}
