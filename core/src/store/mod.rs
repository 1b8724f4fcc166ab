//! The encrypted on-device store: SQLite (bundled), WAL, one connection
//! behind a mutex (one writer), every value sealed, every identifier a keyed
//! hash. Key hierarchy:
//!
//! ```text
//! KEK (from the app's KeyProvider)
//!  └─ store key (random; sealed in meta)
//!      ├─ lookup key  (keyed hashes of NHS numbers, document ids, storage keys)
//!      ├─ audit key   (seals the audit queue and its chain head)
//!      ├─ general key (seals chunks of documents not tied to a patient)
//!      └─ wrap key    (wraps each record's random data key)
//!          └─ record data key (seals that patient's documents and chunks)
//! ```

mod arrivals;
mod audit;
mod chunks;
mod error;
mod holdings;
mod quarantine;
mod records;
pub mod rows;
mod samod_storage;
mod schema;
mod sqlite_rows;
mod unsaved;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{Connection, OpenFlags};

use crate::crypto::{self, KeyProvider, LookupKey, Ref, SecretKey};
use sqlite_rows::SqliteRows;

pub use arrivals::Arrival;
pub use audit::ChainPoint;
pub use chunks::ChunkKey;
pub use error::StoreError;
pub use holdings::{HoldReason, Holding};
pub use records::DocumentInfo;
pub use rows::{RowBackend, Rows};
pub use samod_storage::SamodStorage;
pub(crate) use samod_storage::off_runtime;
pub use schema::SCHEMA_VERSION;

/// The named value holding the store key (sealed under the
/// key-encryption key): present once a store has been opened.
pub const STORE_KEY_ROW: &str = "store-key";

/// A handle to an open store. Cheap to clone; all clones share one
/// connection.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    /// The SQLite file; empty for a store over another backend.
    path: PathBuf,
    rows: Backend,
    keys: StoreKeys,
    /// Unwrapped record keys by record ref, so a chunk write does not unwrap
    /// again. Cleared for a record when it is forgotten.
    record_keys: Mutex<HashMap<Ref, Arc<SecretKey>>>,
    /// Write transactions committed, and the microseconds they took.
    writes: std::sync::atomic::AtomicU64,
    write_micros: std::sync::atomic::AtomicU64,
}

/// Where the rows are kept.
enum Backend {
    /// This crate's SQLite file, on one connection (one writer).
    Sqlite(Mutex<Connection>),
    /// Another backend (the server's PostgreSQL).
    Other(Arc<dyn RowBackend>),
}

struct StoreKeys {
    lookup: LookupKey,
    /// Seals the audit queue; not a record key, so forgetting keeps the trail.
    audit: SecretKey,
    general: SecretKey,
    wrap: SecretKey,
}

impl Store {
    /// Opens (creating if needed) the store at `path`, unlocking it with the
    /// key-encryption key from `keys`.
    pub fn open(path: impl AsRef<Path>, keys: &dyn KeyProvider) -> Result<Self, StoreError> {
        Self::open_inner(path.as_ref(), keys, false)
    }

    /// [`Store::open`], after SQLite's quick integrity check (every page's
    /// structure) and before anything is written, so a damaged file is
    /// found here and left exactly as it was. Costs time in proportion to
    /// the file: for a device's store, not a server's.
    pub fn open_checked(
        path: impl AsRef<Path>,
        keys: &dyn KeyProvider,
    ) -> Result<Self, StoreError> {
        Self::open_inner(path.as_ref(), keys, true)
    }

    fn open_inner(path: &Path, keys: &dyn KeyProvider, check: bool) -> Result<Self, StoreError> {
        let path = path.to_path_buf();
        let mut conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        if check {
            quick_check(&conn)?;
        }
        configure(&conn)?;
        schema::migrate(&mut conn)?;
        let kek = keys
            .key_encryption_key()
            .map_err(StoreError::KeyUnavailable)?;
        let store_key = {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let key = load_or_create_store_key(&SqliteRows(&tx), &kek)?;
            tx.commit()?;
            key
        };
        Ok(Self::with(
            path,
            Backend::Sqlite(Mutex::new(conn)),
            &store_key,
        ))
    }

    /// A store whose rows another backend keeps (the server's PostgreSQL,
    /// shared by several nodes), unlocked with the key-encryption key from
    /// `keys`. Sealing and the key hierarchy are exactly as on SQLite; the
    /// backend holds only ciphertext and keyed hashes.
    pub fn over(backend: Arc<dyn RowBackend>, keys: &dyn KeyProvider) -> Result<Self, StoreError> {
        let kek = keys
            .key_encryption_key()
            .map_err(StoreError::KeyUnavailable)?;
        let mut store_key = None;
        backend.write(&mut |rows| {
            store_key = Some(load_or_create_store_key(rows, &kek)?);
            Ok(())
        })?;
        let store_key = store_key.ok_or(StoreError::BadRow { table: "meta" })?;
        Ok(Self::with(
            PathBuf::new(),
            Backend::Other(backend),
            &store_key,
        ))
    }

    fn with(path: PathBuf, rows: Backend, store_key: &SecretKey) -> Self {
        let keys = StoreKeys {
            lookup: LookupKey::from_secret(store_key, "scr-sync 2026-11 store lookup hashes"),
            audit: store_key.derive("scr-sync 2026-11 store audit sealing"),
            general: store_key.derive("scr-sync 2026-11 store general sealing"),
            wrap: store_key.derive("scr-sync 2026-11 store record key wrapping"),
        };
        Self {
            inner: Arc::new(Inner {
                path,
                rows,
                keys,
                record_keys: Mutex::new(HashMap::new()),
                writes: Default::default(),
                write_micros: Default::default(),
            }),
        }
    }

    /// The SQLite file (empty for a store over another backend).
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The SQLite connection; `None` for a store over another backend.
    fn conn(&self) -> Result<Option<MutexGuard<'_, Connection>>, StoreError> {
        match &self.inner.rows {
            Backend::Sqlite(conn) => conn.lock().map(Some).map_err(|_| StoreError::Poisoned),
            Backend::Other(_) => Ok(None),
        }
    }

    /// Write transactions committed through this handle, and the time they
    /// took in all (waiting for the database included): what a write costs
    /// on this backend.
    pub fn write_stats(&self) -> (u64, std::time::Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.inner.writes.load(Relaxed),
            std::time::Duration::from_micros(self.inner.write_micros.load(Relaxed)),
        )
    }

    /// Runs `f` in one transaction that commits only if `f` returns `Ok`.
    pub(crate) fn write<T>(
        &self,
        f: impl FnOnce(&dyn Rows) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        use std::sync::atomic::Ordering::Relaxed;
        let began = std::time::Instant::now();
        let out = self.write_once(f)?;
        let micros = u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.inner.writes.fetch_add(1, Relaxed);
        self.inner.write_micros.fetch_add(micros, Relaxed);
        Ok(out)
    }

    fn write_once<T>(
        &self,
        f: impl FnOnce(&dyn Rows) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match &self.inner.rows {
            Backend::Sqlite(conn) => {
                let mut conn = conn.lock().map_err(|_| StoreError::Poisoned)?;
                let tx =
                    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let out = f(&SqliteRows(&tx))?;
                tx.commit()?;
                Ok(out)
            }
            Backend::Other(backend) => once(f, |work| backend.write(work)),
        }
    }

    /// Runs `f`, which only reads, on the rows as they stand: each
    /// statement sees what is committed (no transaction spans them, on
    /// SQLite as on another backend).
    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&dyn Rows) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match &self.inner.rows {
            Backend::Sqlite(conn) => {
                let conn = conn.lock().map_err(|_| StoreError::Poisoned)?;
                f(&SqliteRows(&conn))
            }
            Backend::Other(backend) => once(f, |work| backend.read(work)),
        }
    }

    /// Moves when another connection (another process, another handle on
    /// the file, another node) commits: SQLite's `data_version`, or the
    /// backend's. Used to notice admin changes made while a server runs.
    pub fn data_version(&self) -> Result<i64, StoreError> {
        match &self.inner.rows {
            Backend::Sqlite(conn) => Ok(conn
                .lock()
                .map_err(|_| StoreError::Poisoned)?
                .pragma_query_value(None, "data_version", |r| r.get(0))?),
            Backend::Other(backend) => backend.data_version(),
        }
    }

    /// Writes the WAL back into the main file and truncates it, so that
    /// crypto-shredded pages do not linger in the log. (Another backend
    /// keeps its own log.)
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        let Some(conn) = self.conn()? else {
            return Ok(());
        };
        conn.execute_batch("PRAGMA incremental_vacuum")?;
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }

    /// Rewrites the file without the free space that compaction and
    /// forgetting leave inside pages. Costs time in proportion to the file
    /// (tens of milliseconds for a day's caseload): for the app to run when
    /// idle, not on a user's path.
    pub fn vacuum(&self) -> Result<(), StoreError> {
        let Some(conn) = self.conn()? else {
            return Ok(());
        };
        conn.execute_batch("VACUUM")?;
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }

    /// Total bytes of the database file and its WAL on disk (0 for a store
    /// over another backend).
    pub fn bytes_on_disk(&self) -> Result<u64, StoreError> {
        if self.conn()?.is_none() {
            return Ok(0);
        }
        let mut total = 0;
        for suffix in ["", "-wal"] {
            let mut p = self.inner.path.clone().into_os_string();
            p.push(suffix);
            match std::fs::metadata(&p) {
                Ok(m) => total += m.len(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::Io(e)),
            }
        }
        Ok(total)
    }

    fn lookup(&self) -> &LookupKey {
        &self.inner.keys.lookup
    }
}

impl Store {
    /// Keeps a secret (a device or server private key) sealed in the store.
    pub fn put_secret(&self, name: &str, secret: &[u8]) -> Result<(), StoreError> {
        self.write(|tx| self.put_sealed_meta_tx(tx, &format!("secret:{name}"), secret))
    }

    /// Reads, changes and writes a secret in one transaction, so two
    /// writers cannot lose each other's update.
    pub fn update_secret(
        &self,
        name: &str,
        change: impl FnOnce(Option<&[u8]>) -> Vec<u8>,
    ) -> Result<(), StoreError> {
        let name = format!("secret:{name}");
        self.write(|tx| {
            let old = self.sealed_meta(tx, &name)?;
            let new = change(old.as_deref());
            self.put_sealed_meta_tx(tx, &name, &new)
        })
    }

    /// A secret stored with [`Store::put_secret`].
    pub fn secret(&self, name: &str) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>, StoreError> {
        self.read(|rows| self.sealed_meta(rows, &format!("secret:{name}")))
            .map(|v| v.map(zeroize::Zeroizing::new))
    }

    /// A store-wide value sealed with the general key, bound to its name.
    pub(crate) fn put_sealed_meta_tx(
        &self,
        tx: &dyn Rows,
        name: &str,
        plain: &[u8],
    ) -> Result<(), StoreError> {
        let sealed = crypto::seal(&self.inner.keys.general, &[b"meta", name.as_bytes()], plain)
            .map_err(StoreError::Crypto)?;
        tx.meta_put(name, &sealed)
    }

    /// Removes a store-wide value.
    pub(crate) fn delete_meta_tx(&self, tx: &dyn Rows, name: &str) -> Result<(), StoreError> {
        tx.meta_delete(name)
    }

    pub(crate) fn sealed_meta(
        &self,
        conn: &dyn Rows,
        name: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        conn.meta_get(name)?
            .map(|s| {
                crypto::open(&self.inner.keys.general, &[b"meta", name.as_bytes()], &s).map_err(
                    |cause| StoreError::Tampered {
                        table: "meta",
                        cause,
                    },
                )
            })
            .transpose()
    }
}

/// SQLite's quick integrity check (every page's structure, not index
/// contents). Reads only.
fn quick_check(conn: &Connection) -> Result<(), StoreError> {
    let verdict: String = conn.query_row("PRAGMA quick_check(1)", [], |r| r.get(0))?;
    if verdict == "ok" {
        Ok(())
    } else {
        Err(StoreError::Corrupt(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
            None,
        )))
    }
}

fn configure(conn: &Connection) -> Result<(), StoreError> {
    // First: another handle opening the same new file at this moment holds
    // its lock for a moment (WAL's switch, a migration); wait for it.
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // Chunks are 1-20 KB; 16 KB pages waste far less at their ends than the
    // 4 KB default (measured: benches/footprint.rs). Also new files only.
    conn.pragma_update(None, "page_size", 16384)?;
    // Takes effect only on a new file (before the first table): lets forget
    // and compaction hand freed pages back to the file system.
    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    // WAL: readers never block the writer; NORMAL sync in WAL mode keeps every
    // commit atomic and durable across an app crash (ADR 0002).
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // With 16 KB pages the default checkpoint (1000 pages) lets the WAL grow
    // to 16 MB and stay that size: checkpoint at 4 MB and truncate back to
    // it (measured: a 150-patient caseload's files went from 19.9 to 7.6 MB).
    conn.pragma_update(None, "wal_autocheckpoint", 256)?;
    conn.pragma_update(None, "journal_size_limit", 4 * 1024 * 1024)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Overwrite deleted content, so a forgotten record's wrapped key and
    // chunks do not survive in free pages.
    conn.pragma_update(None, "secure_delete", "ON")?;
    Ok(())
}

/// Runs `f` (an `FnOnce`) as a backend's work, once, and hands back what
/// it returned.
fn once<T>(
    f: impl FnOnce(&dyn Rows) -> Result<T, StoreError>,
    run: impl FnOnce(&mut rows::RowWork<'_>) -> Result<(), StoreError>,
) -> Result<T, StoreError> {
    let mut f = Some(f);
    let mut out = None;
    run(&mut |rows| {
        // A backend runs the work once; a second call finds nothing to do.
        let f = f.take().ok_or(StoreError::BadRow { table: "meta" })?;
        out = Some(f(rows)?);
        Ok(())
    })?;
    out.ok_or(StoreError::BadRow { table: "meta" })
}

/// The store key, sealed under the key-encryption key; created on first
/// use. Two handles creating it at once (two nodes starting together):
/// the first insert wins and the other reads it.
fn load_or_create_store_key(rows: &dyn Rows, kek: &SecretKey) -> Result<SecretKey, StoreError> {
    let place: &[&[u8]] = &[b"meta", STORE_KEY_ROW.as_bytes()];
    let existing = match rows.meta_get(STORE_KEY_ROW)? {
        Some(sealed) => Some(sealed),
        None => {
            let key = SecretKey::random().map_err(StoreError::Crypto)?;
            let sealed = crypto::seal(kek, place, key.expose()).map_err(StoreError::Crypto)?;
            if rows.meta_insert_new(STORE_KEY_ROW, &sealed)? {
                return Ok(key);
            }
            rows.meta_get(STORE_KEY_ROW)?
        }
    };
    let sealed = existing.ok_or(StoreError::BadRow { table: "meta" })?;
    let bytes = crypto::open(kek, place, &sealed).map_err(|e| match e {
        crypto::CryptoError::Authentication => StoreError::WrongKey,
        cause => StoreError::Tampered {
            table: "meta",
            cause,
        },
    })?;
    SecretKey::from_slice(&bytes).ok_or(StoreError::BadRow { table: "meta" })
}
