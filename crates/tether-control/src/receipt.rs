//! Signed command receipts and the log that makes commands at-most-once.

use std::collections::{HashMap, VecDeque};

use prost::Message;
use tether_identity::DeviceKey;
use tether_proto::v1::{CommandReceipt, ReceiptBody, VehicleCommand};

use crate::principal::Principal;

/// Shortest idempotency key a command may carry, bytes (envelope.proto).
pub const MIN_IDEMPOTENCY_KEY_BYTES: usize = 16;
/// Longest idempotency key a command may carry, bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 32;
/// Domain separation prefix of the receipt signature: the vehicle signs
/// `RECEIPT_CONTEXT || body`, so a receipt can never be replayed as any other
/// signed Tether message.
pub const RECEIPT_CONTEXT: &[u8] = b"tether/1 receipt\0";
/// How many receipts [`MemoryReceiptLog`] keeps by default.
pub const DEFAULT_RECEIPT_CAPACITY: usize = 4096;

/// SHA-256 of the encoded command. prost encodes a message deterministically
/// (fields in tag order, unknown fields dropped), so the same command gives
/// the same digest on both ends.
pub fn command_digest(command: &VehicleCommand) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, &command.encode_to_vec());
    let mut out = [0; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// The signed message for an encoded receipt body.
pub(crate) fn receipt_message(body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(RECEIPT_CONTEXT.len() + body.len());
    m.extend_from_slice(RECEIPT_CONTEXT);
    m.extend_from_slice(body);
    m
}

/// Encodes and signs `body` with the vehicle's key.
pub(crate) fn sign_receipt(key: &DeviceKey, body: &ReceiptBody) -> CommandReceipt {
    let body = body.encode_to_vec();
    let signature = key.sign(&receipt_message(&body)).to_vec();
    CommandReceipt { body, signature }
}

/// What the log keeps per idempotency key: plain bytes, so any store can hold
/// it (the node keeps it in SQLite).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReceipt {
    /// SHA-256 of the encoded `VehicleCommand` the key was first used with.
    pub command_digest: [u8; 32],
    /// The receipt's sequence number (also inside the signed body), so a store
    /// can answer [`ReceiptLog::last_sequence`].
    pub sequence: u64,
    /// The encoded `CommandReceipt`, returned byte for byte on every retry.
    /// `None` is the write-ahead mark left just before the car acted: if it is
    /// still there after a restart, the outcome was never recorded, and the
    /// command is not run again.
    pub receipt: Option<Vec<u8>>,
}

/// The receipt store could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("receipt log: {0}")]
pub struct ReceiptLogError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// Durable idempotency cache: (principal, idempotency key) → receipt (SPEC
/// §8.3). A key is scoped to the principal that sent it: the same key from
/// two principals is two commands, each with its own record.
///
/// At-most-once holds for as long as a key stays in the log; an
/// implementation that evicts (as [`MemoryReceiptLog`] does, oldest first)
/// should keep keys for longer than any client retries. Errors are reported,
/// never swallowed: on a failed read the service executes nothing.
pub trait ReceiptLog {
    /// The record `principal` holds for `key`, if any.
    fn get(
        &self,
        principal: &Principal,
        key: &[u8],
    ) -> Result<Option<StoredReceipt>, ReceiptLogError>;
    /// Stores (or replaces) the record `principal` holds for `key`. Must be
    /// durable when it returns: the service acts on the car only after the
    /// write-ahead mark is stored.
    fn put(
        &mut self,
        principal: &Principal,
        key: &[u8],
        record: StoredReceipt,
    ) -> Result<(), ReceiptLogError>;
    /// Stores several records, all or none, durable when it returns. A log
    /// on a database writes them in one transaction (group commit); the
    /// default stores them one by one.
    fn put_batch(
        &mut self,
        records: Vec<(Principal, Vec<u8>, StoredReceipt)>,
    ) -> Result<(), ReceiptLogError> {
        for (principal, key, record) in records {
            self.put(&principal, &key, record)?;
        }
        Ok(())
    }
    /// The highest sequence number ever stored (0 when empty), so sequence
    /// numbers keep increasing across restarts.
    fn last_sequence(&self) -> Result<u64, ReceiptLogError>;
}

/// An in-memory [`ReceiptLog`] bounded to `capacity` keys, evicting the
/// oldest. Survives a service restart within one process, not a process exit.
#[derive(Debug, Clone)]
pub struct MemoryReceiptLog {
    capacity: usize,
    records: HashMap<(Principal, Vec<u8>), StoredReceipt>,
    order: VecDeque<(Principal, Vec<u8>)>,
    last_sequence: u64,
}

impl Default for MemoryReceiptLog {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_RECEIPT_CAPACITY)
    }
}

impl MemoryReceiptLog {
    /// A log keeping [`DEFAULT_RECEIPT_CAPACITY`] keys.
    pub fn new() -> Self {
        Self::default()
    }

    /// A log keeping at most `capacity` keys (at least one).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            records: HashMap::new(),
            order: VecDeque::new(),
            last_sequence: 0,
        }
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the log holds no key.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

impl ReceiptLog for MemoryReceiptLog {
    fn get(
        &self,
        principal: &Principal,
        key: &[u8],
    ) -> Result<Option<StoredReceipt>, ReceiptLogError> {
        Ok(self.records.get(&(*principal, key.to_vec())).cloned())
    }

    fn put(
        &mut self,
        principal: &Principal,
        key: &[u8],
        record: StoredReceipt,
    ) -> Result<(), ReceiptLogError> {
        self.last_sequence = self.last_sequence.max(record.sequence);
        let id = (*principal, key.to_vec());
        if self.records.insert(id.clone(), record).is_none() {
            self.order.push_back(id);
            while self.order.len() > self.capacity {
                if let Some(oldest) = self.order.pop_front() {
                    self.records.remove(&oldest);
                }
            }
        }
        Ok(())
    }

    fn last_sequence(&self) -> Result<u64, ReceiptLogError> {
        Ok(self.last_sequence)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(sequence: u64) -> StoredReceipt {
        StoredReceipt {
            command_digest: [0; 32],
            sequence,
            receipt: Some(vec![sequence as u8]),
        }
    }

    #[test]
    fn memory_log_evicts_oldest_and_remembers_last_sequence() {
        let p = Principal::Unnamed;
        let mut log = MemoryReceiptLog::with_capacity(2);
        log.put(&p, b"a", record(1)).unwrap();
        log.put(&p, b"b", record(2)).unwrap();
        log.put(&p, b"a", record(3)).unwrap(); // replaces, does not grow
        assert_eq!(log.len(), 2);
        log.put(&p, b"c", record(4)).unwrap();
        assert_eq!(log.len(), 2);
        assert!(log.get(&p, b"a").unwrap().is_none(), "oldest key evicted");
        assert_eq!(log.get(&p, b"c").unwrap(), Some(record(4)));
        assert_eq!(log.last_sequence().unwrap(), 4);
    }

    #[test]
    fn memory_log_keeps_one_record_per_principal_and_key() {
        let (a, b) = (Principal::Device([1; 32]), Principal::Grant([1; 16]));
        let mut log = MemoryReceiptLog::new();
        log.put(&a, b"k", record(1)).unwrap();
        assert!(log.get(&b, b"k").unwrap().is_none());
        log.put(&b, b"k", record(2)).unwrap();
        assert_eq!(log.get(&a, b"k").unwrap(), Some(record(1)));
        assert_eq!(log.get(&b, b"k").unwrap(), Some(record(2)));
    }

    #[test]
    fn digest_differs_between_commands() {
        use tether_proto::v1::{DoorLock, vehicle_command::Command};
        let lock = VehicleCommand {
            command: Some(Command::Lock(DoorLock {})),
        };
        let unlock = VehicleCommand {
            command: Some(Command::Unlock(DoorLock {})),
        };
        assert_ne!(command_digest(&lock), command_digest(&unlock));
        assert_eq!(command_digest(&lock), command_digest(&lock.clone()));
    }
}
