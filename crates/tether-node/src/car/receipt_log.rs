//! The vehicle service's idempotency log kept in the node's SQLite store,
//! so a command's write-ahead mark and receipt survive a restart (R23,
//! SPEC §8.3), keyed by the requester's principal and the idempotency key.

use std::sync::{Arc, Mutex};

use tether_control::{Principal, ReceiptLog, ReceiptLogError, StoredReceipt};
use tether_session::handshake::PeerIdentity;
use tether_store::{CommandRecord, Store};

use crate::config::unix_now;

/// How many command records the head unit keeps (R30: as long as retries
/// need them). Pruned when the service starts.
pub(crate) const COMMAND_LOG_KEEP: usize = 4096;

/// Whom a session's commands belong to (SPEC §8.3): a co-user by the share
/// grant that admitted it, whichever of its devices sends; a member by its
/// verified certificate's public key. One principal can never receive
/// another's receipt by reusing its key.
pub(crate) fn principal_of(peer: &PeerIdentity) -> Principal {
    match peer.grant {
        Some(grant) => Principal::Grant(grant),
        None => Principal::Device(peer.certificate.public_key),
    }
}

/// A [`ReceiptLog`] on the node's store. It prunes the log to
/// [`COMMAND_LOG_KEEP`] when the service starts and again after every
/// [`PRUNE_EVERY`] records written, so a head unit that runs for months
/// keeps no more than retries need (R30).
pub(crate) struct StoreReceiptLog {
    store: Arc<Mutex<Store>>,
    written: usize,
}

/// Records written between two prunes while running.
const PRUNE_EVERY: usize = 1024;

impl StoreReceiptLog {
    /// The log on `store`, pruned now.
    pub(crate) fn open(store: Arc<Mutex<Store>>) -> Result<Self, tether_store::StoreError> {
        store
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .prune_command_log(COMMAND_LOG_KEEP)?;
        Ok(Self { store, written: 0 })
    }

    /// Counts `n` records written; prunes when due. A failed prune is
    /// retried at the next one (the records stay; nothing is lost).
    fn wrote(&mut self, n: usize) {
        self.written += n;
        if self.written >= PRUNE_EVERY {
            self.written = 0;
            let _ = self.store().prune_command_log(COMMAND_LOG_KEEP);
        }
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn boxed(e: tether_store::StoreError) -> ReceiptLogError {
    ReceiptLogError(Box::new(e))
}

#[derive(Debug, thiserror::Error)]
#[error("stored command digest is not 32 bytes")]
struct BadDigest;

impl ReceiptLog for StoreReceiptLog {
    fn get(
        &self,
        principal: &Principal,
        key: &[u8],
    ) -> Result<Option<StoredReceipt>, ReceiptLogError> {
        let Some(record) = self
            .store()
            .get_command_record(&principal.to_bytes(), key)
            .map_err(boxed)?
        else {
            return Ok(None);
        };
        let command_digest: [u8; 32] = record
            .command_digest
            .as_slice()
            .try_into()
            .map_err(|_| ReceiptLogError(Box::new(BadDigest)))?;
        Ok(Some(StoredReceipt {
            command_digest,
            sequence: record.sequence,
            receipt: record.receipt,
        }))
    }

    fn put(
        &mut self,
        principal: &Principal,
        key: &[u8],
        record: StoredReceipt,
    ) -> Result<(), ReceiptLogError> {
        let record = CommandRecord {
            command_digest: record.command_digest.to_vec(),
            sequence: record.sequence,
            receipt: record.receipt,
        };
        self.store()
            .put_command_record(&principal.to_bytes(), key, &record, unix_now())
            .map_err(boxed)?;
        self.wrote(1);
        Ok(())
    }

    fn put_batch(
        &mut self,
        records: Vec<(Principal, Vec<u8>, StoredReceipt)>,
    ) -> Result<(), ReceiptLogError> {
        let rows: Vec<(Vec<u8>, Vec<u8>, CommandRecord)> = records
            .into_iter()
            .map(|(principal, key, record)| {
                (
                    principal.to_bytes(),
                    key,
                    CommandRecord {
                        command_digest: record.command_digest.to_vec(),
                        sequence: record.sequence,
                        receipt: record.receipt,
                    },
                )
            })
            .collect();
        let refs: Vec<(&[u8], &[u8], &CommandRecord)> = rows
            .iter()
            .map(|(p, k, r)| (p.as_slice(), k.as_slice(), r))
            .collect();
        self.store()
            .put_command_records(&refs, unix_now())
            .map_err(boxed)?;
        self.wrote(refs.len());
        Ok(())
    }

    fn last_sequence(&self) -> Result<u64, ReceiptLogError> {
        self.store().last_command_sequence().map_err(boxed)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests may panic on setup failures

    use super::*;

    fn record(sequence: u64) -> StoredReceipt {
        StoredReceipt {
            command_digest: [7; 32],
            sequence,
            receipt: Some(vec![1, 2, 3]),
        }
    }

    /// R30 while running: the log is pruned to what retries need after every
    /// 1024 records, not only at start (a head unit may run for months).
    #[test]
    fn r30_a_running_head_unit_prunes_its_command_log() {
        let store = Arc::new(Mutex::new(Store::open_in_memory().unwrap()));
        let mut log = StoreReceiptLog::open(store.clone()).unwrap();
        let principal = Principal::Device([9; 32]);
        let key = |n: u64| n.to_be_bytes().repeat(2);
        let total = COMMAND_LOG_KEEP as u64 + 2 * PRUNE_EVERY as u64;
        for chunk in (1..=total).collect::<Vec<_>>().chunks(100) {
            log.put_batch(
                chunk
                    .iter()
                    .map(|&n| (principal, key(n), record(n)))
                    .collect(),
            )
            .unwrap();
        }
        assert!(
            log.get(&principal, &key(1)).unwrap().is_none(),
            "the oldest was kept"
        );
        assert!(log.get(&principal, &key(total)).unwrap().is_some());
        let newest_kept = total - COMMAND_LOG_KEEP as u64 + 1;
        assert!(log.get(&principal, &key(newest_kept)).unwrap().is_some());
        assert_eq!(log.last_sequence().unwrap(), total);
    }
}
