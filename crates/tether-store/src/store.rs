//! Opening the database: private directory and file, connection settings,
//! migration.

use std::fs::{self, DirBuilder, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::schema;
use crate::{KeyStore, StoreError};

/// The database's file name inside the data directory.
pub const DATABASE_FILE: &str = "tether.sqlite3";
/// Mode of a data directory that [`Store::open`] creates (R31).
pub const DIRECTORY_MODE: u32 = 0o700;
/// Mode of the database file and its `-wal`, `-shm` and `-journal` siblings (R31).
pub const FILE_MODE: u32 = 0o600;
/// How long a statement waits for another connection's lock before failing.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Files SQLite keeps beside the database; they hold the same secrets.
const SIBLING_SUFFIXES: [&str; 3] = ["-wal", "-shm", "-journal"];

/// A node's local state: one SQLite connection. `Send`, not `Sync`: move it
/// into the blocking task that owns it. Every method is synchronous.
pub struct Store {
    pub(crate) conn: Connection,
    /// Where secrets go instead of the file, if the host plugged one in.
    pub(crate) key_store: Option<Arc<dyn KeyStore>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("key_store", &self.key_store.is_some())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) `data_dir/tether.sqlite3`.
    ///
    /// A missing `data_dir` is created with mode 0700. The database file is
    /// created with mode 0600 before SQLite opens it, an existing one is
    /// tightened to 0600, and so are any `-wal`/`-shm` files (R31). The
    /// connection uses WAL, `foreign_keys`, `secure_delete`, in-memory
    /// temporary tables and [`BUSY_TIMEOUT`]; the schema is migrated to
    /// [`SCHEMA_VERSION`](crate::SCHEMA_VERSION). A database from a newer
    /// build is refused with [`StoreError::NewerSchema`] and left unchanged.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        create_private_dir(data_dir)?;
        let path = data_dir.join(DATABASE_FILE);
        create_private_file(&path)?;
        // NOFOLLOW: the database must be the file we just checked, not a link.
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_NOFOLLOW;
        let conn = Connection::open_with_flags(&path, flags)?;
        configure(&conn)?;
        // Refuse a newer schema before switching the journal mode, which
        // would write to the file.
        schema::check_version(&conn)?;
        // WAL: readers never block the writer and a crash mid-write cannot
        // corrupt the file. Where WAL is unavailable SQLite keeps a rollback
        // journal, which is also safe.
        let _mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
        let mut store = Store {
            conn,
            key_store: None,
        };
        schema::migrate(&mut store.conn)?;
        tighten_siblings(&path)?;
        Ok(store)
    }

    /// Opens a private in-memory database with the current schema (tests).
    pub fn open_in_memory() -> Result<Store, StoreError> {
        let conn = Connection::open_in_memory()?;
        configure(&conn)?;
        let mut store = Store {
            conn,
            key_store: None,
        };
        schema::migrate(&mut store.conn)?;
        Ok(store)
    }
}

/// Connection settings that are not persisted in the file.
fn configure(conn: &Connection) -> Result<(), StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "foreign_keys", true)?;
    // Deleted keys, tickets and receipts are overwritten, not left in free
    // pages (R30, R31).
    conn.pragma_update(None, "secure_delete", true)?;
    // 2 = MEMORY: no temporary files outside the private directory.
    conn.pragma_update(None, "temp_store", 2)?;
    Ok(())
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    if dir.try_exists()? {
        // An existing directory belongs to the operator; the file modes below
        // still protect the database.
        return Ok(());
    }
    DirBuilder::new()
        .recursive(true)
        .mode(DIRECTORY_MODE)
        .create(dir)?;
    // The umask may have cleared bits; set the exact mode.
    fs::set_permissions(dir, Permissions::from_mode(DIRECTORY_MODE))
}

/// Makes `path` a regular file with mode 0600 before SQLite sees it.
fn create_private_file(path: &Path) -> io::Result<()> {
    // create_new (O_EXCL) never follows a symlink.
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
    {
        Ok(file) => file.set_permissions(Permissions::from_mode(FILE_MODE)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => tighten(path),
        Err(e) => Err(e),
    }
}

/// Sets an existing regular file to mode 0600; refuses anything else.
fn tighten(path: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    if !meta.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", path.display()),
        ));
    }
    if meta.permissions().mode() & 0o777 != FILE_MODE {
        fs::set_permissions(path, Permissions::from_mode(FILE_MODE))?;
    }
    Ok(())
}

/// SQLite gives `-wal`/`-shm` the database file's mode; this also fixes
/// files left by an older, looser run.
fn tighten_siblings(path: &Path) -> io::Result<()> {
    for suffix in SIBLING_SUFFIXES {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        match tighten(&PathBuf::from(name)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            other => other?,
        }
    }
    Ok(())
}
