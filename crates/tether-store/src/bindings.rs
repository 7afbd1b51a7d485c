//! The head unit's binding records: which smart devices are bound to the
//! account, as R13 lists (device key and certificate, model, name, firmware
//! version, the network it joined, when). Local only: nothing here is
//! synchronised or sent (R2, R24). Unbinding deletes the record, and
//! `secure_delete` overwrites it (R30).

use rusqlite::{OptionalExtension, params};

use crate::{Store, StoreError, from_sql_u64, to_sql_i64};

/// One bound device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingRecord {
    /// The device's Ed25519 public key (its identity in the account).
    pub device_key: [u8; 32],
    /// Its encoded `DeviceCertificate`.
    pub certificate: Vec<u8>,
    /// The certificate's serial.
    pub serial: u64,
    /// The vendor's product model (from its setup payload).
    pub product_model: u16,
    /// The name the user gave it.
    pub name: String,
    /// Its place in the user's list.
    pub sort_order: i64,
    /// Firmware version, when known.
    pub firmware_version: Option<String>,
    /// The SSID it was provisioned with, when it joined one.
    pub ssid: Option<Vec<u8>>,
    /// When it was bound, Unix seconds.
    pub bound_unix_s: u64,
}

type Row = (
    Vec<u8>,
    Vec<u8>,
    i64,
    i64,
    String,
    i64,
    Option<String>,
    Option<Vec<u8>>,
    i64,
);

fn record_from(row: Row) -> Result<BindingRecord, StoreError> {
    let (key, certificate, serial, model, name, sort_order, firmware_version, ssid, bound) = row;
    Ok(BindingRecord {
        device_key: key
            .as_slice()
            .try_into()
            .map_err(|_| StoreError::CorruptRecord("binding device key"))?,
        certificate,
        serial: from_sql_u64(serial, "binding serial")?,
        product_model: u16::try_from(model)
            .map_err(|_| StoreError::CorruptRecord("binding product model"))?,
        name,
        sort_order,
        firmware_version,
        ssid,
        bound_unix_s: from_sql_u64(bound, "binding time")?,
    })
}

const COLUMNS: &str = "device_key, certificate, serial, product_model, name, sort_order,
                       firmware_version, ssid, bound_unix_s";

impl Store {
    /// Stores a binding, replacing the record of the same device key.
    pub fn put_binding(&mut self, record: &BindingRecord) -> Result<(), StoreError> {
        self.conn.execute(
            &format!(
                "INSERT OR REPLACE INTO bindings ({COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
            ),
            params![
                record.device_key.as_slice(),
                record.certificate,
                to_sql_i64(record.serial, "binding serial")?,
                i64::from(record.product_model),
                record.name,
                record.sort_order,
                record.firmware_version,
                record.ssid,
                to_sql_i64(record.bound_unix_s, "binding time")?,
            ],
        )?;
        Ok(())
    }

    /// The binding of `device_key`, if any.
    pub fn get_binding(&self, device_key: &[u8; 32]) -> Result<Option<BindingRecord>, StoreError> {
        let row = self
            .conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM bindings WHERE device_key = ?1"),
                params![device_key.as_slice()],
                row_tuple,
            )
            .optional()?;
        row.map(record_from).transpose()
    }

    /// Every binding, in the user's sort order (then by name).
    pub fn list_bindings(&self) -> Result<Vec<BindingRecord>, StoreError> {
        let mut statement = self.conn.prepare(&format!(
            "SELECT {COLUMNS} FROM bindings ORDER BY sort_order, name"
        ))?;
        let rows = statement.query_map([], row_tuple)?;
        rows.map(|row| record_from(row?)).collect()
    }

    /// Renames a bound device. Returns whether it is bound.
    pub fn rename_binding(
        &mut self,
        device_key: &[u8; 32],
        name: &str,
    ) -> Result<bool, StoreError> {
        let changed = self.conn.execute(
            "UPDATE bindings SET name = ?2 WHERE device_key = ?1",
            params![device_key.as_slice(), name],
        )?;
        Ok(changed > 0)
    }

    /// Records the firmware a bound device now runs (after an upgrade).
    /// Returns whether it is bound.
    pub fn set_binding_firmware(
        &mut self,
        device_key: &[u8; 32],
        firmware_version: Option<&str>,
    ) -> Result<bool, StoreError> {
        let changed = self.conn.execute(
            "UPDATE bindings SET firmware_version = ?2 WHERE device_key = ?1",
            params![device_key.as_slice(), firmware_version],
        )?;
        Ok(changed > 0)
    }

    /// Unbinds: deletes the record and the device secret kept with it (SPEC
    /// §12.6), in one transaction. Returns whether there was a record.
    pub fn remove_binding(&mut self, device_key: &[u8; 32]) -> Result<bool, StoreError> {
        let tx = self.conn.transaction()?;
        let removed = tx.execute(
            "DELETE FROM bindings WHERE device_key = ?1",
            params![device_key.as_slice()],
        )?;
        tx.execute(
            "DELETE FROM device_secrets WHERE device_key = ?1",
            params![device_key.as_slice()],
        )?;
        tx.commit()?;
        Ok(removed > 0)
    }
}

fn row_tuple(row: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
        row.get(7)?,
        row.get(8)?,
    ))
}
