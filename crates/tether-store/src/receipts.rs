//! The idempotency log for vehicle commands: a retried command gets the
//! first execution's receipt instead of running twice.

use rusqlite::{OptionalExtension, params};

use crate::{Store, StoreError, from_sql_u64, to_sql_i64};

/// A recorded command outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// Digest of the command that produced this receipt; a retry with the
    /// same idempotency key but another digest is a different command.
    pub command_digest: Vec<u8>,
    /// The encoded receipt returned to the caller.
    pub receipt: Vec<u8>,
    /// When it was recorded, Unix seconds (the caller's clock).
    pub recorded_unix_s: u64,
}

impl Store {
    /// Records the receipt for idempotency `key`. The first receipt for a key
    /// is kept: returns `false`, changing nothing, if `key` already has one.
    pub fn put_receipt(
        &mut self,
        key: &[u8],
        command_digest: &[u8],
        receipt: &[u8],
        now_unix_s: u64,
    ) -> Result<bool, StoreError> {
        let inserted = self.conn.execute(
            "INSERT INTO receipts (idempotency_key, command_digest, receipt, recorded_unix_s)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (idempotency_key) DO NOTHING",
            params![
                key,
                command_digest,
                receipt,
                to_sql_i64(now_unix_s, "receipt time")?
            ],
        )?;
        Ok(inserted == 1)
    }

    /// The receipt recorded for idempotency `key`, if it is still kept.
    pub fn get_receipt(&self, key: &[u8]) -> Result<Option<Receipt>, StoreError> {
        let row = self
            .conn
            .query_row(
                "SELECT command_digest, receipt, recorded_unix_s
                 FROM receipts WHERE idempotency_key = ?1",
                params![key],
                |row| {
                    Ok((
                        row.get::<_, Vec<u8>>(0)?,
                        row.get::<_, Vec<u8>>(1)?,
                        row.get::<_, i64>(2)?,
                    ))
                },
            )
            .optional()?;
        row.map(|(command_digest, receipt, recorded)| {
            Ok(Receipt {
                command_digest,
                receipt,
                recorded_unix_s: from_sql_u64(recorded, "receipt time")?,
            })
        })
        .transpose()
    }

    /// Keeps only the `keep` most recently recorded receipts and deletes the
    /// rest (R30: kept only as long as retries need them). "Recent" is
    /// insertion order, not the caller's clock, which may jump. Returns how
    /// many were deleted.
    pub fn prune_receipts(&mut self, keep: usize) -> Result<usize, StoreError> {
        // More than i64::MAX rows cannot exist; saturating keeps them all.
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        let deleted = self.conn.execute(
            "DELETE FROM receipts WHERE seq NOT IN
                 (SELECT seq FROM receipts ORDER BY seq DESC LIMIT ?1)",
            params![keep],
        )?;
        Ok(deleted)
    }
}
