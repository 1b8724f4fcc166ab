//! Where a node keeps its state (ADR 0017): the data directory's SQLite
//! files (the default: one node), or PostgreSQL shared with other nodes,
//! the data directory then holding only `server.key`. One place opens the
//! sealed store, the directory and the archive, for `serve` and every
//! `admin` command alike.

use std::path::Path;
use std::sync::Arc;

use scr_core::Store;
use scr_core::crypto::StaticKeyProvider;

use super::ServeError;
use super::identity;
use crate::archive::Archive;
use crate::directory::Directory;
use crate::pg::store::PgStore;
use crate::pg::{Pg, PgConfig};

/// Where the state is kept.
#[derive(Clone, Debug, Default)]
pub enum StoreAt {
    /// `server.db`, `directory.db` and `audit.db` in the data directory.
    #[default]
    Files,
    /// A PostgreSQL database, shared by every node given it.
    Postgres(PgConfig),
}

/// A node's state, open.
pub struct NodeState {
    pub store: Store,
    pub directory: Directory,
    pub archive: Archive,
    /// The pool, when the state is in PostgreSQL (for the listener).
    pub pg: Option<(Pg, PgConfig)>,
}

/// Opens (creating) the data directory and the state where `at` says.
pub fn open(data_dir: &Path, at: &StoreAt) -> Result<NodeState, ServeError> {
    std::fs::create_dir_all(data_dir).map_err(|e| ServeError::Io("data directory", e.kind()))?;
    match at {
        StoreAt::Files => {
            let keys = identity::key_provider(data_dir)?;
            let store = Store::open(data_dir.join("server.db"), &keys)?;
            let archive =
                Archive::open(&data_dir.join("audit.db"), &identity::archive_root(&store)?)?;
            let directory = Directory::open(&data_dir.join("directory.db"))?;
            Ok(NodeState {
                store,
                directory,
                archive,
                pg: None,
            })
        }
        StoreAt::Postgres(config) => {
            let pg = Pg::connect(config)?;
            let backend = PgStore::new(pg.clone());
            let keys: StaticKeyProvider =
                identity::key_provider_for(data_dir, backend.has_store_key()?)?;
            let store = Store::over(Arc::new(backend), &keys)?;
            let archive = Archive::on_postgres(pg.clone(), &identity::archive_root(&store)?);
            let directory = Directory::on_postgres(pg.clone());
            Ok(NodeState {
                store,
                directory,
                archive,
                pg: Some((pg, config.clone())),
            })
        }
    }
}
