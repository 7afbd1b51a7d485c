//! The device's own identity and, on the phone, the account authority.

use prost::Message;
use rusqlite::{OptionalExtension, params};
use tether_identity::{
    AuthorityState, CertificateError, Credentials, DeviceKey, EnrollmentError, PUBLIC_KEY_LEN,
    decode_certificate,
};

use crate::{SecretName, Store, StoreError, from_sql_u64, to_sql_i64};

/// Length of the account group key.
const GROUP_KEY_LEN: usize = 32;

impl Store {
    /// Saves enrolled credentials: device key (PKCS#8), certificate,
    /// authority public key and group key, replacing any stored identity.
    /// The private key stays in this file only (R2, R31).
    pub fn save_identity(&mut self, credentials: &Credentials) -> Result<(), StoreError> {
        let device_key = self.put_secret(SecretName::DeviceKey, credentials.key().pkcs8())?;
        let group_key = credentials
            .group_key()
            .map(|k| self.put_secret(SecretName::GroupKey, k.as_bytes()))
            .transpose()?;
        self.conn.execute(
            "INSERT INTO identity (id, device_key, certificate, authority_public_key, group_key)
             VALUES (1, ?1, ?2, ?3, ?4)
             ON CONFLICT (id) DO UPDATE SET
                 device_key = excluded.device_key,
                 certificate = excluded.certificate,
                 authority_public_key = excluded.authority_public_key,
                 group_key = excluded.group_key",
            params![
                device_key,
                credentials.certificate_message().encode_to_vec(),
                credentials.authority_public_key().as_slice(),
                group_key,
            ],
        )?;
        Ok(())
    }

    /// Forgets the certificate, authority key and group key, keeping only
    /// the device key (an unbound device, SPEC §12.6). Returns whether an
    /// identity was enrolled.
    pub fn forget_identity(&mut self) -> Result<bool, StoreError> {
        let changed = self.conn.execute(
            "UPDATE identity SET certificate = NULL, authority_public_key = NULL, group_key = NULL
             WHERE id = 1 AND certificate IS NOT NULL",
            [],
        )?;
        Ok(changed > 0)
    }

    /// Loads the enrolled credentials; `None` if there is no identity or only
    /// a key saved with [`Store::save_device_key`].
    ///
    /// The certificate's validity window is not checked here: check it
    /// against the clock at use. Bytes that do not parse give
    /// [`StoreError::CorruptRecord`]; parts that parse but do not verify give
    /// [`StoreError::Identity`].
    pub fn load_identity(&self) -> Result<Option<Credentials>, StoreError> {
        let row = self
            .conn
            .query_row(
                "SELECT device_key, certificate, authority_public_key, group_key
                 FROM identity WHERE id = 1",
                [],
                |row| {
                    Ok((
                        row.get::<_, Vec<u8>>(0)?,
                        row.get::<_, Option<Vec<u8>>>(1)?,
                        row.get::<_, Option<Vec<u8>>>(2)?,
                        row.get::<_, Option<Vec<u8>>>(3)?,
                    ))
                },
            )
            .optional()?;
        let Some((pkcs8, Some(certificate), Some(authority_public_key), group_key)) = row else {
            return Ok(None);
        };
        let pkcs8 = self.get_secret(SecretName::DeviceKey, pkcs8)?;
        let group_key = group_key
            .map(|k| self.get_secret(SecretName::GroupKey, k))
            .transpose()?;
        let key = parse_device_key(&pkcs8, "identity device key")?;
        let certificate = decode_certificate(&certificate)
            .map_err(|_| StoreError::CorruptRecord("identity certificate"))?;
        if authority_public_key.len() != PUBLIC_KEY_LEN {
            return Err(StoreError::CorruptRecord("identity authority public key"));
        }
        if group_key.as_ref().is_some_and(|k| k.len() != GROUP_KEY_LEN) {
            return Err(StoreError::CorruptRecord("identity group key"));
        }
        let credentials = Credentials::restore(
            key,
            certificate,
            &authority_public_key,
            group_key.as_deref(),
        )
        .map_err(|e| match e {
            EnrollmentError::Malformed(_)
            | EnrollmentError::Key(_)
            | EnrollmentError::Certificate(
                CertificateError::Malformed(_) | CertificateError::UnsupportedVersion(_),
            ) => StoreError::CorruptRecord("identity certificate"),
            e => StoreError::Identity(e),
        })?;
        self.load_membership(&credentials)?;
        Ok(Some(credentials))
    }

    /// Saves what changed in `credentials` with a device removal (SPEC
    /// §3.6): the current group key, the revocation list and the previous
    /// epoch's key with the end of its grace period, in one transaction.
    pub fn save_membership(&mut self, credentials: &Credentials) -> Result<(), StoreError> {
        let row = self.membership_row(credentials)?;
        let tx = self.conn.transaction()?;
        write_membership(&tx, &row)?;
        tx.commit()?;
        Ok(())
    }

    /// A device removal on the phone that hosts the account authority (SPEC
    /// §3.6), in **one** transaction: the authority's new state (its new
    /// group key), this phone's own membership as [`Store::save_membership`]
    /// writes it, and the device marked removed in `account_devices`. A
    /// crash leaves all three or none (found by the crash harness, issue
    /// 15: written one after the other, a kill between them left a device
    /// revoked by the list but listed as enrolled, or an authority a key
    /// ahead of its own phone).
    pub fn save_removal(
        &mut self,
        state: &AuthorityState,
        credentials: &Credentials,
        public_key: &[u8; PUBLIC_KEY_LEN],
        now: u64,
    ) -> Result<(), StoreError> {
        let authority = self.authority_row(state)?;
        let membership = self.membership_row(credentials)?;
        let tx = self.conn.transaction()?;
        write_authority(&tx, &authority)?;
        write_membership(&tx, &membership)?;
        tx.execute(
            "UPDATE account_devices SET removed_unix_s = ?2 WHERE public_key = ?1",
            params![public_key.as_slice(), to_sql_i64(now, "removal time")?],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// What [`write_membership`] stores for `credentials` (secrets through
    /// the key store first).
    fn membership_row(&mut self, credentials: &Credentials) -> Result<MembershipRow, StoreError> {
        let group_key = credentials
            .group_key()
            .map(|k| self.put_secret(SecretName::GroupKey, k.as_bytes()))
            .transpose()?;
        let previous = credentials
            .previous_group_key_until()
            .map(|(k, until)| {
                self.put_secret(SecretName::PreviousGroupKey, k.as_bytes())
                    .map(|k| (k, until))
            })
            .transpose()?;
        let list = credentials
            .revocation_list()
            .map(|l| l.signed.encode_to_vec());
        Ok(MembershipRow {
            group_key,
            list,
            previous_key: previous.as_ref().map(|(k, _)| k.clone()),
            previous_until: previous
                .map(|(_, until)| to_sql_i64(until, "previous group key end"))
                .transpose()?,
        })
    }

    /// What [`write_authority`] stores for `state`.
    fn authority_row(&mut self, state: &AuthorityState) -> Result<AuthorityRow, StoreError> {
        Ok(AuthorityRow {
            signing_key: self
                .put_secret(SecretName::AuthoritySigningKey, &state.signing_key_pkcs8)?,
            group_key: self.put_secret(SecretName::AuthorityGroupKey, &state.group_key)?,
            next_serial: to_sql_i64(state.next_serial, "authority next serial")?,
        })
    }

    fn load_membership(&self, credentials: &Credentials) -> Result<(), StoreError> {
        let row = self
            .conn
            .query_row(
                "SELECT revocation_list, previous_group_key, previous_until
                 FROM membership WHERE id = 1",
                [],
                |row| {
                    Ok((
                        row.get::<_, Option<Vec<u8>>>(0)?,
                        row.get::<_, Option<Vec<u8>>>(1)?,
                        row.get::<_, Option<i64>>(2)?,
                    ))
                },
            )
            .optional()?;
        let Some((list, previous, until)) = row else {
            return Ok(());
        };
        let list = list
            .map(|bytes| tether_identity::decode_revocation_list(&bytes))
            .transpose()
            .map_err(|_| StoreError::CorruptRecord("membership revocation list"))?;
        let previous = match (previous, until) {
            (Some(k), Some(until)) => Some((
                self.get_secret(SecretName::PreviousGroupKey, k)?,
                from_sql_u64(until, "previous group key end")?,
            )),
            _ => None,
        };
        credentials
            .restore_membership(
                list.as_ref(),
                previous.as_ref().map(|(k, until)| (k.as_slice(), *until)),
            )
            .map_err(|_| StoreError::CorruptRecord("membership"))
    }

    /// Saves a device key generated on this device before enrollment.
    /// Replaces any stored identity: a certificate for another key would no
    /// longer match.
    pub fn save_device_key(&mut self, key: &DeviceKey) -> Result<(), StoreError> {
        let device_key = self.put_secret(SecretName::DeviceKey, key.pkcs8())?;
        if let Some(key_store) = &self.key_store {
            // The group key of a previous enrollment no longer applies.
            key_store.delete(SecretName::GroupKey)?;
        }
        self.conn.execute(
            "INSERT INTO identity (id, device_key) VALUES (1, ?1)
             ON CONFLICT (id) DO UPDATE SET
                 device_key = excluded.device_key,
                 certificate = NULL,
                 authority_public_key = NULL,
                 group_key = NULL",
            params![device_key],
        )?;
        Ok(())
    }

    /// Loads the device key, whether or not the device has been enrolled.
    pub fn load_device_key(&self) -> Result<Option<DeviceKey>, StoreError> {
        let pkcs8: Option<Vec<u8>> = self
            .conn
            .query_row("SELECT device_key FROM identity WHERE id = 1", [], |row| {
                row.get(0)
            })
            .optional()?;
        pkcs8
            .map(|p| {
                let p = self.get_secret(SecretName::DeviceKey, p)?;
                parse_device_key(&p, "identity device key")
            })
            .transpose()
    }

    /// Saves the account authority's state (phone, local mode). Call after
    /// every enrollment so a serial is never issued twice.
    pub fn save_authority(&mut self, state: &AuthorityState) -> Result<(), StoreError> {
        let row = self.authority_row(state)?;
        write_authority(&self.conn, &row)
    }

    /// Loads the account authority's state; `None` if this node hosts none.
    /// The signing key and group key are checked to parse.
    pub fn load_authority(&self) -> Result<Option<AuthorityState>, StoreError> {
        let row = self
            .conn
            .query_row(
                "SELECT signing_key, group_key, next_serial FROM authority WHERE id = 1",
                [],
                |row| {
                    Ok((
                        row.get::<_, Vec<u8>>(0)?,
                        row.get::<_, Vec<u8>>(1)?,
                        row.get::<_, i64>(2)?,
                    ))
                },
            )
            .optional()?;
        let Some((signing_key_pkcs8, group_key, next_serial)) = row else {
            return Ok(None);
        };
        let signing_key_pkcs8 =
            self.get_secret(SecretName::AuthoritySigningKey, signing_key_pkcs8)?;
        let group_key = self.get_secret(SecretName::AuthorityGroupKey, group_key)?;
        parse_device_key(&signing_key_pkcs8, "authority signing key")?;
        let group_key: [u8; GROUP_KEY_LEN] = group_key
            .as_slice()
            .try_into()
            .map_err(|_| StoreError::CorruptRecord("authority group key"))?;
        Ok(Some(AuthorityState {
            signing_key_pkcs8,
            group_key,
            next_serial: from_sql_u64(next_serial, "authority next serial")?,
        }))
    }
}

fn parse_device_key(pkcs8: &[u8], what: &'static str) -> Result<DeviceKey, StoreError> {
    DeviceKey::from_pkcs8(pkcs8).map_err(|_| StoreError::CorruptRecord(what))
}

/// A device the authority on this phone enrolled (SPEC §3.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountDeviceRecord {
    /// Its raw Ed25519 public key.
    pub public_key: [u8; PUBLIC_KEY_LEN],
    /// The wire value of its role.
    pub role: i32,
    /// Its certificate's serial.
    pub serial: u64,
    /// When it was enrolled (Unix seconds).
    pub enrolled_unix_s: u64,
    /// When it was removed, if it was.
    pub removed_unix_s: Option<u64>,
}

impl Store {
    /// Records a device the authority enrolled, or on a car a phone or
    /// watch of the account it heard from (SPEC §19.12); a second record of
    /// the same key replaces the first and clears a removal.
    pub fn record_account_device(
        &mut self,
        public_key: &[u8; PUBLIC_KEY_LEN],
        role: i32,
        serial: u64,
        now: u64,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO account_devices (public_key, role, serial, enrolled_unix_s, removed_unix_s)
             VALUES (?1, ?2, ?3, ?4, NULL)
             ON CONFLICT (public_key) DO UPDATE SET role = excluded.role,
                 serial = excluded.serial, enrolled_unix_s = excluded.enrolled_unix_s,
                 removed_unix_s = NULL",
            params![
                public_key.as_slice(),
                role,
                to_sql_i64(serial, "certificate serial")?,
                to_sql_i64(now, "enrollment time")?
            ],
        )?;
        Ok(())
    }

    /// Marks a device removed. Returns whether it was recorded.
    pub fn mark_account_device_removed(
        &mut self,
        public_key: &[u8; PUBLIC_KEY_LEN],
        now: u64,
    ) -> Result<bool, StoreError> {
        let changed = self.conn.execute(
            "UPDATE account_devices SET removed_unix_s = ?2 WHERE public_key = ?1",
            params![public_key.as_slice(), to_sql_i64(now, "removal time")?],
        )?;
        Ok(changed > 0)
    }

    /// The devices the authority enrolled, oldest first.
    pub fn list_account_devices(&self) -> Result<Vec<AccountDeviceRecord>, StoreError> {
        let mut statement = self.conn.prepare(
            "SELECT public_key, role, serial, enrolled_unix_s, removed_unix_s
             FROM account_devices ORDER BY enrolled_unix_s, serial",
        )?;
        let rows = statement.query_map([], |row| {
            Ok((
                row.get::<_, Vec<u8>>(0)?,
                row.get::<_, i32>(1)?,
                row.get::<_, i64>(2)?,
                row.get::<_, i64>(3)?,
                row.get::<_, Option<i64>>(4)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (key, role, serial, enrolled, removed) = row?;
            out.push(AccountDeviceRecord {
                public_key: key
                    .as_slice()
                    .try_into()
                    .map_err(|_| StoreError::CorruptRecord("account device key"))?,
                role,
                serial: from_sql_u64(serial, "certificate serial")?,
                enrolled_unix_s: from_sql_u64(enrolled, "enrollment time")?,
                removed_unix_s: removed
                    .map(|r| from_sql_u64(r, "removal time"))
                    .transpose()?,
            });
        }
        Ok(out)
    }
}

/// The membership row and the current group key, as stored.
struct MembershipRow {
    group_key: Option<Vec<u8>>,
    list: Option<Vec<u8>>,
    previous_key: Option<Vec<u8>>,
    previous_until: Option<i64>,
}

fn write_membership(conn: &rusqlite::Connection, row: &MembershipRow) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE identity SET group_key = ?1 WHERE id = 1",
        params![row.group_key],
    )?;
    conn.execute(
        "INSERT INTO membership (id, revocation_list, previous_group_key, previous_until)
         VALUES (1, ?1, ?2, ?3)
         ON CONFLICT (id) DO UPDATE SET
             revocation_list = excluded.revocation_list,
             previous_group_key = excluded.previous_group_key,
             previous_until = excluded.previous_until",
        params![row.list, row.previous_key, row.previous_until],
    )?;
    Ok(())
}

/// The authority row, as stored.
struct AuthorityRow {
    signing_key: Vec<u8>,
    group_key: Vec<u8>,
    next_serial: i64,
}

fn write_authority(conn: &rusqlite::Connection, row: &AuthorityRow) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO authority (id, signing_key, group_key, next_serial)
         VALUES (1, ?1, ?2, ?3)
         ON CONFLICT (id) DO UPDATE SET
             signing_key = excluded.signing_key,
             group_key = excluded.group_key,
             next_serial = excluded.next_serial",
        params![row.signing_key, row.group_key, row.next_serial],
    )?;
    Ok(())
}
