//! Session resumption tickets held by a client, one use each.

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use crate::{Store, StoreError, from_sql_u64, to_sql_i64};

/// At most this many tickets are kept per peer; putting another drops the
/// oldest (R30).
pub const MAX_TICKETS_PER_PEER: usize = 4;

/// A resumption ticket and the secret that goes with it.
#[derive(Clone, PartialEq, Eq)]
pub struct ResumptionTicket {
    /// The opaque ticket sent back to the peer.
    pub ticket: Vec<u8>,
    /// The resumption secret known only to this client.
    pub secret: Vec<u8>,
    /// Last second (Unix) at which the ticket may be used.
    pub not_after: u64,
}

impl std::fmt::Debug for ResumptionTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResumptionTicket")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Stores a ticket for `peer_label` (a local name for the peer, never
    /// sent anywhere), valid until `not_after` inclusive. Keeps at most
    /// [`MAX_TICKETS_PER_PEER`] per peer, newest first.
    pub fn put_ticket(
        &mut self,
        peer_label: &str,
        ticket: &[u8],
        secret: &[u8],
        not_after: u64,
    ) -> Result<(), StoreError> {
        let not_after = to_sql_i64(not_after, "ticket expiry")?;
        let keep = i64::try_from(MAX_TICKETS_PER_PEER).unwrap_or(i64::MAX);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO tickets (peer_label, ticket, secret, not_after)
             VALUES (?1, ?2, ?3, ?4)",
            params![peer_label, ticket, secret, not_after],
        )?;
        tx.execute(
            "DELETE FROM tickets WHERE peer_label = ?1 AND seq NOT IN
                 (SELECT seq FROM tickets WHERE peer_label = ?1 ORDER BY seq DESC LIMIT ?2)",
            params![peer_label, keep],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Removes and returns the newest ticket for `peer_label` still valid at
    /// `now_unix_s`. A ticket is returned at most once (single use); expired
    /// tickets for the peer are deleted on the way.
    pub fn take_ticket(
        &mut self,
        peer_label: &str,
        now_unix_s: u64,
    ) -> Result<Option<ResumptionTicket>, StoreError> {
        let now = saturating_i64(now_unix_s);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "DELETE FROM tickets WHERE peer_label = ?1 AND not_after < ?2",
            params![peer_label, now],
        )?;
        let row = tx
            .query_row(
                "DELETE FROM tickets WHERE seq =
                     (SELECT seq FROM tickets WHERE peer_label = ?1 ORDER BY seq DESC LIMIT 1)
                 RETURNING ticket, secret, not_after",
                params![peer_label],
                |row| {
                    Ok((
                        row.get::<_, Vec<u8>>(0)?,
                        row.get::<_, Vec<u8>>(1)?,
                        row.get::<_, i64>(2)?,
                    ))
                },
            )
            .optional()?;
        tx.commit()?;
        row.map(|(ticket, secret, not_after)| {
            Ok(ResumptionTicket {
                ticket,
                secret,
                not_after: from_sql_u64(not_after, "ticket expiry")?,
            })
        })
        .transpose()
    }

    /// Deletes every ticket expired at `now_unix_s` (R30). Returns how many.
    pub fn purge_expired_tickets(&mut self, now_unix_s: u64) -> Result<usize, StoreError> {
        let deleted = self.conn.execute(
            "DELETE FROM tickets WHERE not_after < ?1",
            params![saturating_i64(now_unix_s)],
        )?;
        Ok(deleted)
    }
}

/// A time for comparison only: past i64::MAX every stored time is earlier.
fn saturating_i64(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}
