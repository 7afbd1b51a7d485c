//! Share grants (R16, R19; SPEC §17). The head unit keeps the grants the
//! owner installed (the signed grant and its key) and marks them revoked; a
//! co-user's phone keeps the invites it accepted. Local only (R2).

use rusqlite::{OptionalExtension, params};

use crate::{Store, StoreError, from_sql_u64, to_sql_i64};

/// A grant as the head unit keeps it.
#[derive(Clone, PartialEq, Eq)]
pub struct ShareGrantRecord {
    /// The grant's id.
    pub grant_id: [u8; 16],
    /// The encoded, signed `ShareGrant`.
    pub grant: Vec<u8>,
    /// The grant's 32-byte secret.
    pub grant_key: [u8; 32],
    /// End of validity, Unix seconds.
    pub not_after: u64,
    /// When it was revoked, if it was.
    pub revoked_unix_s: Option<u64>,
}

impl std::fmt::Debug for ShareGrantRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShareGrantRecord")
            .field("not_after", &self.not_after)
            .field("revoked_unix_s", &self.revoked_unix_s)
            .finish_non_exhaustive()
    }
}

type Row = (Vec<u8>, Vec<u8>, Vec<u8>, i64, Option<i64>);

/// An invite a co-user holds: its grant id and the encoded `ShareInvite`.
pub type StoredInvite = ([u8; 16], Vec<u8>);

fn record_from(row: Row) -> Result<ShareGrantRecord, StoreError> {
    let (id, grant, key, not_after, revoked) = row;
    Ok(ShareGrantRecord {
        grant_id: id
            .as_slice()
            .try_into()
            .map_err(|_| StoreError::CorruptRecord("grant id"))?,
        grant,
        grant_key: key
            .as_slice()
            .try_into()
            .map_err(|_| StoreError::CorruptRecord("grant key"))?,
        not_after: from_sql_u64(not_after, "grant expiry")?,
        revoked_unix_s: revoked
            .map(|r| from_sql_u64(r, "grant revocation time"))
            .transpose()?,
    })
}

impl Store {
    /// Keeps a grant (replacing one with the same id, which un-revokes it
    /// only if the owner installs it again).
    pub fn put_share_grant(&mut self, record: &ShareGrantRecord) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT OR REPLACE INTO share_grants
             (grant_id, grant, grant_key, not_after, revoked_unix_s)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                record.grant_id.as_slice(),
                record.grant,
                record.grant_key.as_slice(),
                to_sql_i64(record.not_after, "grant expiry")?,
                record
                    .revoked_unix_s
                    .map(|r| to_sql_i64(r, "grant revocation time"))
                    .transpose()?,
            ],
        )?;
        Ok(())
    }

    /// The grant with this id, revoked or not.
    pub fn get_share_grant(
        &self,
        grant_id: &[u8; 16],
    ) -> Result<Option<ShareGrantRecord>, StoreError> {
        self.conn
            .query_row(
                "SELECT grant_id, grant, grant_key, not_after, revoked_unix_s
                 FROM share_grants WHERE grant_id = ?1",
                params![grant_id.as_slice()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()?
            .map(record_from)
            .transpose()
    }

    /// Grants neither revoked nor expired at `now`.
    pub fn active_share_grants(&self, now: u64) -> Result<Vec<ShareGrantRecord>, StoreError> {
        let mut statement = self.conn.prepare(
            "SELECT grant_id, grant, grant_key, not_after, revoked_unix_s
             FROM share_grants
             WHERE revoked_unix_s IS NULL AND not_after >= ?1
             ORDER BY grant_id",
        )?;
        let rows = statement.query_map(params![to_sql_i64(now, "time")?], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?;
        rows.map(|row| record_from(row?)).collect()
    }

    /// Marks a grant revoked at `now` and wipes its key (it must never admit
    /// anyone again). Returns whether an unrevoked grant was found.
    pub fn revoke_share_grant(
        &mut self,
        grant_id: &[u8; 16],
        now: u64,
    ) -> Result<bool, StoreError> {
        let changed = self.conn.execute(
            "UPDATE share_grants SET revoked_unix_s = ?2, grant_key = zeroblob(32)
             WHERE grant_id = ?1 AND revoked_unix_s IS NULL",
            params![grant_id.as_slice(), to_sql_i64(now, "time")?],
        )?;
        Ok(changed > 0)
    }

    /// Keeps an invite this (co-user's) node accepted.
    pub fn put_share_invite(
        &mut self,
        grant_id: &[u8; 16],
        invite: &[u8],
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT OR REPLACE INTO share_invites (grant_id, invite) VALUES (?1, ?2)",
            params![grant_id.as_slice(), invite],
        )?;
        Ok(())
    }

    /// Every invite held, by grant id.
    pub fn list_share_invites(&self) -> Result<Vec<StoredInvite>, StoreError> {
        let mut statement = self
            .conn
            .prepare("SELECT grant_id, invite FROM share_invites ORDER BY grant_id")?;
        let rows = statement.query_map([], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?;
        rows.map(|row| {
            let (id, invite) = row?;
            let id = id
                .as_slice()
                .try_into()
                .map_err(|_| StoreError::CorruptRecord("grant id"))?;
            Ok((id, invite))
        })
        .collect()
    }

    /// Drops an invite (its grant was revoked or expired).
    pub fn remove_share_invite(&mut self, grant_id: &[u8; 16]) -> Result<bool, StoreError> {
        Ok(self.conn.execute(
            "DELETE FROM share_invites WHERE grant_id = ?1",
            params![grant_id.as_slice()],
        )? > 0)
    }
}
