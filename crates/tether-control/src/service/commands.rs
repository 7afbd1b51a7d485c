//! The command half of the service: idempotency, life cycle, receipts
//! (R23, SPEC §8.3).

use prost::Message;
use tether_proto::v1::{
    CommandReason, CommandReceipt, CommandState, CommandStatus, Envelope, ErrorCode, ReceiptBody,
    VehicleCommand, response,
};

use super::{PeerInfo, Refusal, StreamId, VehicleService, refuse};
use crate::access::may_command;
use crate::backend::{Actuation, ActuationError, VehicleBackend};
use crate::principal::Principal;
use crate::receipt::{
    MAX_IDEMPOTENCY_KEY_BYTES, MIN_IDEMPOTENCY_KEY_BYTES, ReceiptLog, StoredReceipt,
    command_digest, sign_receipt,
};

const BAD_KEY: Refusal = refuse(
    ErrorCode::BadRequest,
    "a command needs an idempotency key of 16 to 32 bytes",
);
const EMPTY_COMMAND: Refusal = refuse(ErrorCode::BadRequest, "the command is empty");
const MAY_NOT_COMMAND: Refusal = refuse(
    ErrorCode::PermissionDenied,
    "commands are not permitted for this device",
);
const KEY_REUSED: Refusal = refuse(
    ErrorCode::IdempotencyConflict,
    "the idempotency key was already used for a different command",
);
const TOO_MANY_COMMANDS: Refusal = refuse(ErrorCode::Busy, "too many commands in flight");
const LOG_UNAVAILABLE: Refusal = refuse(
    ErrorCode::Internal,
    "the receipt log is unavailable; nothing was done",
);
const OUTCOME_UNKNOWN: Refusal = refuse(
    ErrorCode::Internal,
    "an earlier attempt with this key was interrupted; it was not run again",
);
const RECEIPT_UNREADABLE: Refusal = refuse(ErrorCode::Internal, "a stored receipt is unreadable");

/// A stream waiting for a command's statuses.
#[derive(Debug, Clone, Copy)]
pub(super) struct Waiter {
    stream: StreamId,
    request_id: u64,
}

/// A command accepted but not yet run; retries with its key join `waiters`.
#[derive(Debug)]
pub(super) struct PendingCommand {
    /// Whose key it is (SPEC §8.3): keys are scoped to their principal.
    principal: Principal,
    key: Vec<u8>,
    digest: [u8; 32],
    actuation: Result<Actuation, CommandReason>,
    deadline_at_ms: u64,
    waiters: Vec<Waiter>,
}

impl<B: VehicleBackend, L: ReceiptLog> VehicleService<B, L> {
    pub(super) fn accept_command(
        &mut self,
        stream: StreamId,
        peer: PeerInfo,
        request: &Envelope,
        command: &VehicleCommand,
    ) -> Result<(), Refusal> {
        let principal = peer.principal;
        // Role first: a peer that may not command learns nothing about keys
        // and cannot fill the log, which would evict the owner's receipts (R23).
        if !may_command(peer.role) {
            return Err(MAY_NOT_COMMAND);
        }
        let key = &request.idempotency_key;
        if !(MIN_IDEMPOTENCY_KEY_BYTES..=MAX_IDEMPOTENCY_KEY_BYTES).contains(&key.len()) {
            return Err(BAD_KEY);
        }
        let Some(inner) = &command.command else {
            return Err(EMPTY_COMMAND);
        };
        let digest = command_digest(command);
        let waiter = Waiter {
            stream,
            request_id: request.request_id,
        };

        // A retry while the first attempt is still queued joins it. Keys
        // are the principal's own: another principal's key is another
        // command, and it never sees this one's statuses (SPEC §8.3).
        if let Some(pending) = self
            .pending
            .iter_mut()
            .find(|p| p.principal == principal && p.key == *key)
        {
            if pending.digest != digest {
                return Err(KEY_REUSED);
            }
            pending.waiters.push(waiter);
            self.send_status(waiter, status(CommandState::Accepted));
            return Ok(());
        }

        // A retry after it finished gets the stored receipt, byte for byte.
        match self.log.get(&principal, key) {
            Err(_) => return Err(LOG_UNAVAILABLE),
            Ok(Some(stored)) => {
                if stored.command_digest != digest {
                    return Err(KEY_REUSED);
                }
                let bytes = stored.receipt.ok_or(OUTCOME_UNKNOWN)?;
                let (receipt, body) = decode_stored(&bytes).ok_or(RECEIPT_UNREADABLE)?;
                self.send_status(
                    waiter,
                    CommandStatus {
                        state: body.state,
                        reason: body.reason,
                        receipt: Some(receipt),
                    },
                );
                return Ok(());
            }
            Ok(None) => {}
        }

        if self.pending.len() >= self.config.max_pending_commands {
            return Err(TOO_MANY_COMMANDS);
        }
        let deadline_ms = match request.deadline_ms {
            0 => self.config.default_deadline_ms,
            ms => ms.min(self.config.max_deadline_ms),
        };
        self.pending.push_back(PendingCommand {
            principal,
            key: key.clone(),
            digest,
            actuation: Actuation::from_command(inner),
            deadline_at_ms: self.now_ms.saturating_add(u64::from(deadline_ms)),
            waiters: vec![waiter],
        });
        self.send_status(waiter, status(CommandState::Accepted));
        Ok(())
    }

    /// Stops sending statuses to `stream`; its commands still run.
    pub(super) fn detach_waiters(&mut self, stream: StreamId) {
        for command in &mut self.pending {
            command.waiters.retain(|w| w.stream != stream);
        }
    }

    pub(super) fn run(&mut self, command: PendingCommand) {
        if self.now_ms >= command.deadline_at_ms {
            // The requester has stopped waiting; acting now would surprise
            // them. TIMED_OUT therefore always means "the car did nothing".
            return self.seal(command, CommandState::TimedOut, CommandReason::Unspecified);
        }
        let actuation = match command.actuation {
            Ok(actuation) => actuation,
            Err(reason) => return self.seal(command, CommandState::Rejected, reason),
        };
        // Write-ahead mark: if we crash while the car acts, a retry finds the
        // mark and the command is not run twice (at most once, SPEC §8.3).
        let sequence = self.last_sequence + 1;
        let mark = StoredReceipt {
            command_digest: command.digest,
            sequence,
            receipt: None,
        };
        if self
            .log
            .put(&command.principal, &command.key, mark)
            .is_err()
        {
            for waiter in &command.waiters {
                self.send_error(waiter.stream, waiter.request_id, LOG_UNAVAILABLE);
            }
            return;
        }
        self.last_sequence = sequence;
        for waiter in &command.waiters {
            self.send_status(*waiter, status(CommandState::InProgress));
        }
        let (state, reason) = match self.backend.execute(&actuation, self.now_ms) {
            Ok(()) => (CommandState::Succeeded, CommandReason::Unspecified),
            Err(ActuationError::Rejected(reason)) => (CommandState::Rejected, reason),
            Err(ActuationError::Failed(reason)) => (CommandState::Failed, reason),
        };
        self.finish(command, sequence, state, reason);
    }

    /// Finishes a command the car never saw, with the next sequence number.
    fn seal(&mut self, command: PendingCommand, state: CommandState, reason: CommandReason) {
        self.last_sequence += 1;
        self.finish(command, self.last_sequence, state, reason);
    }

    /// Signs the receipt, stores it under the key and sends it to every waiter.
    fn finish(
        &mut self,
        command: PendingCommand,
        sequence: u64,
        state: CommandState,
        reason: CommandReason,
    ) {
        let body = ReceiptBody {
            idempotency_key: command.key.clone(),
            command_digest: command.digest.to_vec(),
            state: state as i32,
            reason: reason as i32,
            sequence,
        };
        let receipt = sign_receipt(&self.key, &body);
        let record = StoredReceipt {
            command_digest: command.digest,
            sequence,
            receipt: Some(receipt.encode_to_vec()),
        };
        // If this write fails, an executed command's write-ahead mark stays,
        // so retries get OUTCOME_UNKNOWN and nothing runs twice. The waiters
        // still get their receipt.
        let _ = self.log.put(&command.principal, &command.key, record);
        let final_status = CommandStatus {
            state: state as i32,
            reason: reason as i32,
            receipt: Some(receipt),
        };
        for waiter in &command.waiters {
            self.send_status(*waiter, final_status.clone());
        }
    }

    fn send_status(&mut self, waiter: Waiter, status: CommandStatus) {
        self.respond(
            waiter.stream,
            waiter.request_id,
            response::Kind::CommandStatus(status),
        );
    }
}

/// A non-final status: no reason, no receipt yet.
fn status(state: CommandState) -> CommandStatus {
    CommandStatus {
        state: state as i32,
        reason: CommandReason::Unspecified as i32,
        receipt: None,
    }
}

fn decode_stored(bytes: &[u8]) -> Option<(CommandReceipt, ReceiptBody)> {
    let receipt = CommandReceipt::decode(bytes).ok()?;
    let body = ReceiptBody::decode(receipt.body.as_slice()).ok()?;
    Some((receipt, body))
}
