//! The store's rich internal error. Messages name what failed (a table, a
//! step), never patient data, keys or SQL values.

use crate::crypto::{CryptoError, KeyProviderError};
use crate::record::DocError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the key provider could not supply the key")]
    KeyUnavailable(#[source] KeyProviderError),
    #[error("the key does not open this store")]
    WrongKey,
    #[error("sealed data in {table} did not open")]
    Tampered {
        table: &'static str,
        #[source]
        cause: CryptoError,
    },
    #[error("a sealed row in {table} decoded to an impossible value")]
    BadRow { table: &'static str },
    #[error("the database file is corrupt or not a database")]
    Corrupt(#[source] rusqlite::Error),
    #[error("the storage device is full")]
    Full(#[source] rusqlite::Error),
    #[error("the database has schema version {found}; this build knows up to {known}")]
    NewerSchema { found: i64, known: i64 },
    #[error("no record for that patient on this device")]
    RecordNotFound,
    #[error("this device already holds a record for that patient")]
    RecordExists,
    #[error("this replica does not hold the {0} compartment")]
    CompartmentNotHeld(&'static str),
    #[error("the entry does not exist in this compartment")]
    EntryNotFound,
    #[error("{0}")]
    InvalidEdit(&'static str),
    #[error("a compartment document is invalid")]
    Document(#[from] DocError),
    #[error("a cryptographic operation failed")]
    Crypto(#[source] CryptoError),
    #[error("file system error")]
    Io(#[source] std::io::Error),
    #[error("database error")]
    Sqlite(#[source] rusqlite::Error),
    #[error("the store lock was poisoned by an earlier panic")]
    Poisoned,
    /// Another backend (the server's PostgreSQL) could not be reached, or
    /// did not answer in time: nothing was written.
    #[error("the store's database could not be reached")]
    Unreachable,
    /// A statement of another backend failed (named by what it did).
    #[error("a store statement failed ({0})")]
    Statement(&'static str),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        match e.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => StoreError::Full(e),
            Some(ErrorCode::DatabaseCorrupt) | Some(ErrorCode::NotADatabase) => {
                StoreError::Corrupt(e)
            }
            _ => StoreError::Sqlite(e),
        }
    }
}
