//! Why the server could not start or go on.

use scr_core::store::StoreError;

use crate::directory::DirectoryError;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}: {1}")]
    Io(&'static str, std::io::ErrorKind),
    #[error("server.key must hold exactly 32 bytes")]
    BadKeyFile,
    #[error("the server store exists but server.key is missing: restore the key file")]
    MissingKeyFile,
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] crate::pg::PgError),
    #[error("the system random number generator failed")]
    Random,
    #[error("server store: {0}")]
    Store(#[from] StoreError),
    #[error("directory: {0}")]
    Directory(#[from] DirectoryError),
    #[error("audit archive: {0}")]
    Archive(#[from] crate::archive::ArchiveError),
    #[error("the sync repo stopped")]
    Stopped,
}
