//! Schema versions, tracked in SQLite's `user_version` header field.

use rusqlite::{Connection, TransactionBehavior};

use crate::StoreError;

/// The schema version this build writes; a database with a higher
/// `user_version` is refused with [`StoreError::NewerSchema`].
pub const SCHEMA_VERSION: u32 = 9;

/// `MIGRATIONS[i]` takes a database from version `i` to `i + 1`. Append only:
/// a released step is never edited.
const MIGRATIONS: [&str; SCHEMA_VERSION as usize] = [V1, V2, V3, V4, V5, V6, V7, V8, V9];

/// Version 1. Tables are STRICT so a value of the wrong type cannot be stored;
/// single-row tables are pinned to `id = 1`.
const V1: &str = "
CREATE TABLE identity (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    device_key BLOB NOT NULL,
    certificate BLOB,
    authority_public_key BLOB,
    group_key BLOB,
    CHECK ((certificate IS NULL) = (authority_public_key IS NULL)),
    CHECK (certificate IS NOT NULL OR group_key IS NULL)
) STRICT;

CREATE TABLE authority (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    signing_key BLOB NOT NULL,
    group_key BLOB NOT NULL,
    next_serial INTEGER NOT NULL
) STRICT;

CREATE TABLE receipts (
    seq INTEGER PRIMARY KEY,
    idempotency_key BLOB NOT NULL UNIQUE,
    command_digest BLOB NOT NULL,
    receipt BLOB NOT NULL,
    recorded_unix_s INTEGER NOT NULL
) STRICT;

CREATE TABLE tickets (
    seq INTEGER PRIMARY KEY,
    peer_label TEXT NOT NULL,
    ticket BLOB NOT NULL,
    secret BLOB NOT NULL,
    not_after INTEGER NOT NULL
) STRICT;
CREATE INDEX tickets_by_peer ON tickets (peer_label, seq);

CREATE TABLE settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;
";

/// Version 2: the vehicle's command log (idempotency key → outcome), which
/// also holds the write-ahead mark (`receipt` NULL) left just before the car
/// acts, so at-most-once survives a restart (SPEC §8.3).
const V2: &str = "
CREATE TABLE command_log (
    seq INTEGER PRIMARY KEY,
    idempotency_key BLOB NOT NULL UNIQUE,
    command_digest BLOB NOT NULL,
    sequence INTEGER NOT NULL,
    receipt BLOB,
    recorded_unix_s INTEGER NOT NULL
) STRICT;
";

/// Version 3: the v1 `receipts` table (first write kept, no write-ahead
/// mark) is replaced by `command_log`.
const V3: &str = "DROP TABLE receipts;";

/// Version 4: the head unit's binding records of smart devices (R13; SPEC
/// §12.5), one per device key. Kept locally only (R2, R24).
const V4: &str = "
CREATE TABLE bindings (
    device_key BLOB PRIMARY KEY CHECK (length(device_key) = 32),
    certificate BLOB NOT NULL,
    serial INTEGER NOT NULL,
    product_model INTEGER NOT NULL CHECK (product_model BETWEEN 0 AND 65535),
    name TEXT NOT NULL,
    sort_order INTEGER NOT NULL,
    firmware_version TEXT,
    ssid BLOB,
    bound_unix_s INTEGER NOT NULL
) STRICT;
";

/// Version 5: offline devices attached physically (R12; SPEC §16), which
/// carry no account, no key, no serial and no address: only what the list
/// needs. Share grants the owner issued (R16, R19; SPEC §17), kept by the head
/// unit that admits the grantee, and the invites a grantee holds. Device
/// secrets (SPEC §12.6): the head unit keeps one per bound device, a device
/// keeps its own.
const V5: &str = "
CREATE TABLE offline_devices (
    local_id INTEGER PRIMARY KEY,
    product_model INTEGER NOT NULL CHECK (product_model BETWEEN 0 AND 65535),
    name TEXT NOT NULL,
    sort_order INTEGER NOT NULL,
    firmware_version TEXT
) STRICT;

CREATE TABLE share_grants (
    grant_id BLOB PRIMARY KEY CHECK (length(grant_id) = 16),
    grant BLOB NOT NULL,
    grant_key BLOB NOT NULL,
    not_after INTEGER NOT NULL,
    revoked_unix_s INTEGER
) STRICT;

CREATE TABLE share_invites (
    grant_id BLOB PRIMARY KEY CHECK (length(grant_id) = 16),
    invite BLOB NOT NULL
) STRICT;

CREATE TABLE device_secrets (
    device_key BLOB PRIMARY KEY CHECK (length(device_key) = 32),
    secret BLOB NOT NULL CHECK (length(secret) = 32)
) STRICT;
";

/// Super tasks (SPEC §18): each task in its protobuf form with its enabled
/// flag and, when a device or place it names is gone, why it is broken; the
/// last traces of each task (bounded by the caller); and the engine's
/// durable snapshot (timers, place states, runs in flight). Nothing here
/// holds a coordinate: places live in their own table on the head unit,
/// and fixes are never stored (R10, R32).
const V6: &str = "
CREATE TABLE automation_tasks (
    task_id INTEGER PRIMARY KEY CHECK (task_id > 0),
    task BLOB NOT NULL,
    enabled INTEGER NOT NULL CHECK (enabled IN (0, 1)),
    broken TEXT
) STRICT;

CREATE TABLE automation_traces (
    task_id INTEGER NOT NULL,
    run_seq INTEGER NOT NULL,
    trace BLOB NOT NULL,
    PRIMARY KEY (task_id, run_seq)
) STRICT;

CREATE TABLE automation_places (
    name TEXT PRIMARY KEY,
    place BLOB NOT NULL
) STRICT;

CREATE TABLE automation_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    snapshot BLOB NOT NULL
) STRICT;
";

/// Version 7: the command log is keyed by (principal, idempotency key), so
/// one requester can never receive another's receipt by reusing its key
/// (SPEC §8.3). The principal is opaque bytes the node chooses. Records
/// from before keep an empty principal, which no requester has: they still
/// count for the last sequence number, and age out with pruning.
const V7: &str = "
CREATE TABLE command_log_v7 (
    seq INTEGER PRIMARY KEY,
    principal BLOB NOT NULL,
    idempotency_key BLOB NOT NULL,
    command_digest BLOB NOT NULL,
    sequence INTEGER NOT NULL,
    receipt BLOB,
    recorded_unix_s INTEGER NOT NULL,
    UNIQUE (principal, idempotency_key)
) STRICT;
INSERT INTO command_log_v7
    (seq, principal, idempotency_key, command_digest, sequence, receipt, recorded_unix_s)
    SELECT seq, X'', idempotency_key, command_digest, sequence, receipt, recorded_unix_s
    FROM command_log;
DROP TABLE command_log;
ALTER TABLE command_log_v7 RENAME TO command_log;
";

/// Version 8: the account's revocation list and the previous group key
/// epoch (SPEC §3.6). One row; the current group key stays in `identity`.
/// `previous_group_key` is empty when a platform key store holds it. On the
/// phone that hosts the authority, `account_devices` lists the devices it
/// enrolled, so the owner can pick one to remove.
const V8: &str = "
CREATE TABLE membership (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    revocation_list BLOB,
    previous_group_key BLOB,
    previous_until INTEGER
) STRICT;
CREATE TABLE account_devices (
    public_key BLOB PRIMARY KEY,
    role INTEGER NOT NULL,
    serial INTEGER NOT NULL,
    enrolled_unix_s INTEGER NOT NULL,
    removed_unix_s INTEGER
) STRICT;
";

/// Version 9: the highest task number ever handed out (SPEC §18.1), so a
/// deleted task's number is never given to a new task, not even after a
/// restart (until version 8 the next number was one past the highest task
/// *left*: deleting the newest task and restarting reused its number, and a
/// phone still holding it edited the wrong task). Seeded from the tasks
/// stored now; no row until a task is stored (an empty store holds nothing,
/// R12).
const V9: &str = "
CREATE TABLE automation_counters (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    last_task_id INTEGER NOT NULL CHECK (last_task_id >= 0)
) STRICT;
INSERT INTO automation_counters (id, last_task_id)
    SELECT 1, max(task_id) FROM automation_tasks HAVING count(*) > 0;
";

/// Reads `user_version` and refuses a database newer than this build.
pub(crate) fn check_version(conn: &Connection) -> Result<u32, StoreError> {
    let raw: i64 = conn.pragma_query_one(None, "user_version")?;
    let found = u32::try_from(raw).map_err(|_| StoreError::CorruptRecord("schema version"))?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(found)
}

/// Brings the schema up to [`SCHEMA_VERSION`] in one write transaction, so a
/// crash mid-migration leaves the old version intact and two processes
/// opening the same file do not both migrate.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Re-read under the write lock: another process may have migrated since.
    let found = check_version(&tx)?;
    if found < SCHEMA_VERSION {
        for step in &MIGRATIONS[found as usize..] {
            tx.execute_batch(step)?;
        }
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    }
    tx.commit()?;
    Ok(())
}
