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

/// Two nodes over `url`, in `tmp`: node A, then node B with A's key file;
/// the nurse and the paramedic as users; test patient `n` on the nurse's
/// caseload and the paramedic's `incident`; the state opened beside B.
pub struct TwoNodes {
    pub a: RunningServer,
    pub b: RunningServer,
    pub dir_a: std::path::PathBuf,
    pub dir_b: std::path::PathBuf,
    pub state: NodeState,
    pub nhs: scr_core::NhsNumber,
}

pub async fn two_nodes(tmp: &Path, url: &str, n: u32, incident: &str) -> TwoNodes {
    use scr_core::record::SharingChoice::CoreAndAdditional;
    let (dir_a, dir_b) = (tmp.join("node-a"), tmp.join("node-b"));
    let a = node(&dir_a, url).await;
    second_dir(&dir_a, &dir_b);
    let b = node(&dir_b, url).await;
    let state = beside(&dir_b, url);
    a.directory
        .add_user(&super::nurse(), super::NURSE_PASSCODE)
        .unwrap();
    b.directory
        .add_user(&super::device::paramedic(), "sam-1357")
        .unwrap();
    let nhs = super::site::on_caseload(&a, &state.store, n, CoreAndAdditional);
    super::site::on_incident(&b, &state.store, n, CoreAndAdditional, incident);
    TwoNodes {
        a,
        b,
        dir_a,
        dir_b,
        state,
        nhs,
    }
}
