//! Device secrets (SPEC §12.6): the secret a bound smart device shares with
//! the head unit that commissioned it. The head unit keeps one per bound
//! device (to reach it on the LAN); a device keeps its own, under its own
//! key. Removing a binding removes its secret ([`Store::remove_binding`]).

use rusqlite::{OptionalExtension, params};

use crate::{Store, StoreError};

impl Store {
    /// Keeps the secret shared with the device whose key is `device_key`.
    pub fn put_device_secret(
        &mut self,
        device_key: &[u8; 32],
        secret: &[u8; 32],
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT OR REPLACE INTO device_secrets (device_key, secret) VALUES (?1, ?2)",
            params![device_key.as_slice(), secret.as_slice()],
        )?;
        Ok(())
    }

    /// The secret shared with `device_key`, if any.
    pub fn get_device_secret(&self, device_key: &[u8; 32]) -> Result<Option<[u8; 32]>, StoreError> {
        let secret: Option<Vec<u8>> = self
            .conn
            .query_row(
                "SELECT secret FROM device_secrets WHERE device_key = ?1",
                params![device_key.as_slice()],
                |r| r.get(0),
            )
            .optional()?;
        secret
            .map(|s| {
                s.as_slice()
                    .try_into()
                    .map_err(|_| StoreError::CorruptRecord("device secret"))
            })
            .transpose()
    }

    /// Forgets the secret of `device_key`. Returns whether there was one.
    pub fn remove_device_secret(&mut self, device_key: &[u8; 32]) -> Result<bool, StoreError> {
        Ok(self.conn.execute(
            "DELETE FROM device_secrets WHERE device_key = ?1",
            params![device_key.as_slice()],
        )? > 0)
    }
}
