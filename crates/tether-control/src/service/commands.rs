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

    /// Runs the accepted commands in order with **two commits for the
    /// whole batch** (group commit, SPEC §8.3): the write-ahead marks of
    /// those that will act, before any acts; then every receipt, before any
    /// is sent. Each command still runs at most once and is answered only
    /// once its receipt is stored.
    pub(super) fn run_batch(&mut self, commands: Vec<PendingCommand>) {
        // What each command will do. TIMED_OUT always means "the car did
        // nothing": a requester that stopped waiting is not surprised.
        let mut planned: Vec<(PendingCommand, Plan)> = commands
            .into_iter()
            .map(|mut command| {
                let plan = if self.now_ms >= command.deadline_at_ms {
                    Err((CommandState::TimedOut, CommandReason::Unspecified))
                } else {
                    match std::mem::replace(&mut command.actuation, Err(CommandReason::Unspecified))
                    {
                        Ok(actuation) => Ok(actuation),
                        Err(reason) => Err((CommandState::Rejected, reason)),
                    }
                };
                (command, plan)
            })
            .collect();
        // Write-ahead marks: if we crash while the car acts, a retry finds
        // the mark and the command is not run twice (at most once).
        let first = self.last_sequence + 1;
        let marks: Vec<_> = planned
            .iter()
            .zip(first..)
            .filter(|((_, plan), _)| plan.is_ok())
            .map(|((command, _), sequence)| {
                (
                    command.principal,
                    command.key.clone(),
                    StoredReceipt {
                        command_digest: command.digest,
                        sequence,
                        receipt: None,
                    },
                )
            })
            .collect();
        if !marks.is_empty() && self.log.put_batch(marks).is_err() {
            // Not stored: none of them acts; their requesters hear so.
            planned.retain(|(command, plan)| {
                if plan.is_ok() {
                    for waiter in &command.waiters {
                        self.send_error(waiter.stream, waiter.request_id, LOG_UNAVAILABLE);
                    }
                }
                plan.is_err()
            });
        }
        let mut finished = Vec::with_capacity(planned.len());
        for ((command, plan), sequence) in planned.into_iter().zip(first..) {
            self.last_sequence = sequence;
            let (state, reason) = match plan {
                Ok(actuation) => {
                    for waiter in &command.waiters {
                        self.send_status(*waiter, status(CommandState::InProgress));
                    }
                    match self.backend.execute(&actuation, self.now_ms) {
                        Ok(()) => (CommandState::Succeeded, CommandReason::Unspecified),
                        Err(ActuationError::Rejected(reason)) => (CommandState::Rejected, reason),
                        Err(ActuationError::Failed(reason)) => (CommandState::Failed, reason),
                    }
                }
                Err(sealed) => sealed,
            };
            finished.push((command, sequence, state, reason));
        }
        self.finish_batch(finished);
    }

    /// Signs the receipts, stores them under their keys in one commit and
    /// sends each to its waiters.
    fn finish_batch(&mut self, finished: Vec<(PendingCommand, u64, CommandState, CommandReason)>) {
        let mut answers = Vec::with_capacity(finished.len());
        let mut records = Vec::with_capacity(finished.len());
        for (command, sequence, state, reason) in finished {
            let body = ReceiptBody {
                idempotency_key: command.key.clone(),
                command_digest: command.digest.to_vec(),
                state: state as i32,
                reason: reason as i32,
                sequence,
            };
            let receipt = sign_receipt(&self.key, &body);
            records.push((
                command.principal,
                command.key.clone(),
                StoredReceipt {
                    command_digest: command.digest,
                    sequence,
                    receipt: Some(receipt.encode_to_vec()),
                },
            ));
            answers.push((
                command.waiters,
                CommandStatus {
                    state: state as i32,
                    reason: reason as i32,
                    receipt: Some(receipt),
                },
            ));
        }
        // If this write fails, an executed command's write-ahead mark stays,
        // so retries get OUTCOME_UNKNOWN and nothing runs twice. The waiters
        // still get their receipt.
        if !records.is_empty() {
            let _ = self.log.put_batch(records);
        }
        for (waiters, final_status) in answers {
            for waiter in &waiters {
                self.send_status(*waiter, final_status.clone());
            }
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

/// What a command of a batch will do: act, or end at once with this state
/// and reason (timed out, or a command the car cannot perform).
type Plan = Result<Actuation, (CommandState, CommandReason)>;

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
