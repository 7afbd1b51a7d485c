//! Offline devices attached physically to the head unit (R12; SPEC §16.6):
//! viewed, controlled, renamed, sorted, upgraded and unbound with no account.
//!
//! A record holds only what the device list needs: a local number, the
//! product model, the user's name, the sort order and the firmware version.
//! There is no column for an account, a key, a certificate, a serial, an
//! address or an SSID, so none can be stored (R12: no personal information).
//! Nothing here is synchronised or sent (R2, R24). Removing a record deletes
//! it, and `secure_delete` overwrites it (R30).

use rusqlite::{OptionalExtension, params};

use crate::{Store, StoreError};

/// One offline device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfflineDeviceRecord {
    /// The head unit's own number for it, assigned by
    /// [`Store::add_offline_device`]. Not a hardware identifier. A number
    /// freed by a removal may be given again to a later device.
    pub local_id: i64,
    /// The vendor's product model.
    pub product_model: u16,
    /// The name the user gave it (at first, the model's name).
    pub name: String,
    /// Its place in the user's list.
    pub sort_order: i64,
    /// Firmware version, when known.
    pub firmware_version: Option<String>,
}

type Row = (i64, i64, String, i64, Option<String>);

fn record_from(row: Row) -> Result<OfflineDeviceRecord, StoreError> {
    let (local_id, model, name, sort_order, firmware_version) = row;
    Ok(OfflineDeviceRecord {
        local_id,
        product_model: u16::try_from(model)
            .map_err(|_| StoreError::CorruptRecord("offline device product model"))?,
        name,
        sort_order,
        firmware_version,
    })
}

fn row_tuple(row: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
    ))
}

const COLUMNS: &str = "local_id, product_model, name, sort_order, firmware_version";

impl Store {
    /// Records a newly attached offline device and returns its `local_id`.
    pub fn add_offline_device(
        &mut self,
        product_model: u16,
        name: &str,
        sort_order: i64,
        firmware_version: Option<&str>,
    ) -> Result<i64, StoreError> {
        self.conn.execute(
            "INSERT INTO offline_devices (product_model, name, sort_order, firmware_version)
             VALUES (?1, ?2, ?3, ?4)",
            params![i64::from(product_model), name, sort_order, firmware_version],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// The offline device `local_id`, if any.
    pub fn get_offline_device(
        &self,
        local_id: i64,
    ) -> Result<Option<OfflineDeviceRecord>, StoreError> {
        let row = self
            .conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM offline_devices WHERE local_id = ?1"),
                params![local_id],
                row_tuple,
            )
            .optional()?;
        row.map(record_from).transpose()
    }

    /// Every offline device, in the user's sort order (then by name).
    pub fn list_offline_devices(&self) -> Result<Vec<OfflineDeviceRecord>, StoreError> {
        let mut statement = self.conn.prepare(&format!(
            "SELECT {COLUMNS} FROM offline_devices ORDER BY sort_order, name, local_id"
        ))?;
        let rows = statement.query_map([], row_tuple)?;
        rows.map(|row| record_from(row?)).collect()
    }

    /// Renames an offline device. Returns whether it exists.
    pub fn rename_offline_device(&mut self, local_id: i64, name: &str) -> Result<bool, StoreError> {
        let changed = self.conn.execute(
            "UPDATE offline_devices SET name = ?2 WHERE local_id = ?1",
            params![local_id, name],
        )?;
        Ok(changed > 0)
    }

    /// Records the firmware an offline device now runs (after an upgrade).
    /// Returns whether it exists.
    pub fn set_offline_device_firmware(
        &mut self,
        local_id: i64,
        firmware_version: Option<&str>,
    ) -> Result<bool, StoreError> {
        let changed = self.conn.execute(
            "UPDATE offline_devices SET firmware_version = ?2 WHERE local_id = ?1",
            params![local_id, firmware_version],
        )?;
        Ok(changed > 0)
    }

    /// Deletes an offline device's record (unbind or detach). Returns whether
    /// there was one.
    pub fn remove_offline_device(&mut self, local_id: i64) -> Result<bool, StoreError> {
        let removed = self.conn.execute(
            "DELETE FROM offline_devices WHERE local_id = ?1",
            params![local_id],
        )?;
        Ok(removed > 0)
    }

    /// Sets the sort order of bound and offline devices in one transaction:
    /// `bound` pairs a device key with its new order, `offline` a `local_id`
    /// with its. Either every row changes or none does: if a device does not
    /// exist, nothing changes and the answer is `false`.
    pub fn set_device_sort_orders(
        &mut self,
        bound: &[([u8; 32], i64)],
        offline: &[(i64, i64)],
    ) -> Result<bool, StoreError> {
        let tx = self.conn.transaction()?;
        for (device_key, sort_order) in bound {
            let changed = tx.execute(
                "UPDATE bindings SET sort_order = ?2 WHERE device_key = ?1",
                params![device_key.as_slice(), sort_order],
            )?;
            if changed == 0 {
                // Dropping the transaction rolls it back.
                return Ok(false);
            }
        }
        for (local_id, sort_order) in offline {
            let changed = tx.execute(
                "UPDATE offline_devices SET sort_order = ?2 WHERE local_id = ?1",
                params![local_id, sort_order],
            )?;
            if changed == 0 {
                return Ok(false);
            }
        }
        tx.commit()?;
        Ok(true)
    }
}
