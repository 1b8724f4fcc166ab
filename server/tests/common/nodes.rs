//! Nodes over one PostgreSQL database (ADR 0017), in this process: each
//! with its own data directory holding only its copy of the shared
//! `server.key`, and the state opened beside them as an admin command opens
//! it.
#![allow(clippy::unwrap_used, dead_code)]

use std::path::Path;

use scr_server::pg::PgConfig;
use scr_server::serve::state::{NodeState, StoreAt};
use scr_server::serve::{RunningServer, ServeConfig, start};

pub fn on_postgres(url: &str) -> StoreAt {
    StoreAt::Postgres(PgConfig::new(url))
}

/// A node on `url` with its own data directory (holding only its copy of
/// the shared `server.key`).
pub async fn node(dir: &Path, url: &str) -> RunningServer {
    let mut config = ServeConfig::on_loopback(dir);
    config.store = on_postgres(url);
    start(config).await.unwrap()
}

/// The second node's data directory: the first node's key file, copied as
/// an operator would.
pub fn second_dir(first: &Path, second: &Path) {
    std::fs::create_dir_all(second).unwrap();
    std::fs::copy(first.join("server.key"), second.join("server.key")).unwrap();
}

/// The nodes' state opened beside them, as an admin command opens it.
pub fn beside(dir: &Path, url: &str) -> NodeState {
    scr_server::serve::state::open(dir, &on_postgres(url)).unwrap()
}
