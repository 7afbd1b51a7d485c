//! The vehicle's command log: one record per (principal, idempotency key),
//! replaced as the command moves from "about to act" (no receipt) to its
//! signed outcome. The principal is the caller's opaque name of the
//! requester; keys of two principals never meet.

use rusqlite::{OptionalExtension, params};

use crate::{Store, StoreError, from_sql_u64, to_sql_i64};

/// One command's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRecord {
    /// Digest of the command first sent with this key.
    pub command_digest: Vec<u8>,
    /// The vehicle's sequence number for this outcome.
    pub sequence: u64,
    /// The encoded signed receipt; `None` is the write-ahead mark.
    pub receipt: Option<Vec<u8>>,
}

impl Store {
    /// Stores or replaces the record `principal` holds for idempotency `key`.
    pub fn put_command_record(
        &mut self,
        principal: &[u8],
        key: &[u8],
        record: &CommandRecord,
        now_unix_s: u64,
    ) -> Result<(), StoreError> {
        self.put_command_records(&[(principal, key, record)], now_unix_s)
    }

    /// Stores several records in **one** transaction: one commit (one
    /// sync of the write-ahead log) for a batch of commands, instead of one
    /// each (group commit, SPEC §8.3). All are stored or none.
    pub fn put_command_records(
        &mut self,
        records: &[(&[u8], &[u8], &CommandRecord)],
        now_unix_s: u64,
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        {
            let mut statement = tx.prepare_cached(
                "INSERT INTO command_log
                     (principal, idempotency_key, command_digest, sequence, receipt, recorded_unix_s)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (principal, idempotency_key) DO UPDATE SET
                     command_digest = excluded.command_digest,
                     sequence = excluded.sequence,
                     receipt = excluded.receipt,
                     recorded_unix_s = excluded.recorded_unix_s",
            )?;
            for (principal, key, record) in records {
                statement.execute(params![
                    principal,
                    key,
                    record.command_digest,
                    to_sql_i64(record.sequence, "command sequence")?,
                    record.receipt,
                    to_sql_i64(now_unix_s, "command time")?
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The record `principal` holds for idempotency `key`, if kept.
    pub fn get_command_record(
        &self,
        principal: &[u8],
        key: &[u8],
    ) -> Result<Option<CommandRecord>, StoreError> {
        let row = self
            .conn
            .query_row(
                "SELECT command_digest, sequence, receipt FROM command_log
                 WHERE principal = ?1 AND idempotency_key = ?2",
                params![principal, key],
                |row| {
                    Ok((
                        row.get::<_, Vec<u8>>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, Option<Vec<u8>>>(2)?,
                    ))
                },
            )
            .optional()?;
        row.map(|(command_digest, sequence, receipt)| {
            Ok(CommandRecord {
                command_digest,
                sequence: from_sql_u64(sequence, "command sequence")?,
                receipt,
            })
        })
        .transpose()
    }

    /// The highest sequence number recorded (0 when empty).
    pub fn last_command_sequence(&self) -> Result<u64, StoreError> {
        let max: Option<i64> =
            self.conn
                .query_row("SELECT MAX(sequence) FROM command_log", [], |row| {
                    row.get(0)
                })?;
        max.map_or(Ok(0), |m| from_sql_u64(m, "command sequence"))
    }

    /// Keeps the `keep` most recently inserted records (R30). Returns how
    /// many were deleted.
    pub fn prune_command_log(&mut self, keep: usize) -> Result<usize, StoreError> {
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        Ok(self.conn.execute(
            "DELETE FROM command_log WHERE seq NOT IN
                 (SELECT seq FROM command_log ORDER BY seq DESC LIMIT ?1)",
            params![keep],
        )?)
    }
}
