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

/// A [`ReceiptLog`] on the node's store.
pub(crate) struct StoreReceiptLog(pub(crate) Arc<Mutex<Store>>);

impl StoreReceiptLog {
    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
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
            .map_err(boxed)
    }

    fn last_sequence(&self) -> Result<u64, ReceiptLogError> {
        self.store().last_command_sequence().map_err(boxed)
    }
}
