//! `scr-server serve` as a child process on a data directory, as an
//! operator runs it, and its audit archive read beside it.
#![allow(clippy::unwrap_used, dead_code)]

use std::io::BufRead;
use std::process::{Child, ChildStdout, Command, Stdio};

use scr_server::archive::Archive;

pub struct ServerProcess {
    pub child: Child,
    /// Where it serves sync.
    pub addr: std::net::SocketAddr,
    /// Its standard output after the first line (kept open: a server that
    /// prints to a closed pipe would fail).
    pub stdout: std::io::BufReader<ChildStdout>,
}

impl ServerProcess {
    /// The next line it prints (empty once it has exited).
    pub fn line(&mut self) -> String {
        let mut line = String::new();
        let _ = self.stdout.read_line(&mut line);
        line
    }
}

/// `scr-server serve` on `dir`, once it says where it listens.
pub fn serve(dir: &std::path::Path) -> ServerProcess {
    serve_with(dir, None)
}

/// `scr-server serve` on `dir` with its state in PostgreSQL at `store`
/// (given in `SCR_STORE`, as an operator would), or on its files.
pub fn serve_with(dir: &std::path::Path, store: Option<&str>) -> ServerProcess {
    let mut command = Command::new(env!("CARGO_BIN_EXE_scr-server"));
    command.env_remove("SCR_STORE");
    if let Some(url) = store {
        command.env("SCR_STORE", url);
    }
    let mut child = command
        .args(["serve", "--data-dir"])
        .arg(dir)
        .args(["--listen", "127.0.0.1:0", "--health", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(if std::env::var("SCR_TEST_SERVER_LOG").is_ok() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    // serving sync on ADDR and health on ADDR; server key HEX
    let addr = line
        .split_whitespace()
        .nth(3)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("the server did not start: {line:?}"));
    ServerProcess {
        child,
        addr,
        stdout,
    }
}

/// The archive as the server left it (opened beside the running server, as
/// an admin command would).
pub fn archive(dir: &std::path::Path) -> Archive {
    let store = super::server_store(dir);
    Archive::open(
        &dir.join("audit.db"),
        &scr_server::serve::identity::archive_root(&store).unwrap(),
    )
    .unwrap()
}

/// Visits written to `nhs` on the tablet every 40 ms until the handle is
/// aborted; the version id of each, as written.
pub struct Visits {
    pub writer: tokio::task::JoinHandle<()>,
    pub written: std::sync::Arc<std::sync::Mutex<Vec<scr_core::record::VersionId>>>,
}

pub fn write_visits(
    engine: std::sync::Arc<scr_core::engine::Engine>,
    nhs: scr_core::NhsNumber,
) -> Visits {
    let written: std::sync::Arc<std::sync::Mutex<Vec<_>>> = std::sync::Arc::default();
    let kept = written.clone();
    let writer = tokio::spawn(async move {
        for i in 0u64.. {
            let v = engine
                .add_entry(
                    &nhs,
                    super::device::visit(&format!("visit {i}")),
                    false,
                    None,
                )
                .unwrap();
            kept.lock().unwrap().push(v.version_id);
            tokio::time::sleep(std::time::Duration::from_millis(40)).await;
        }
    });
    Visits { writer, written }
}

/// Waits (30 s at most) until the archive holds at least `n` of the
/// device's events: part of its trail is uploaded.
pub async fn until_archived(archive: &Archive, device: &[u8; 32], n: u64) {
    let began = std::time::Instant::now();
    while archive.counts_of(device).unwrap().0 < n {
        assert!(
            began.elapsed() < std::time::Duration::from_secs(30),
            "the node archives"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Stops the visits, lets the tablet settle with the server on
/// `server_dir` (a minute at most), then checks that every visit written
/// is on the server and the tablet's whole trail is archived once, in one
/// unbroken chain. `context` names the run in a failure.
pub async fn assert_converged(
    tablet: &super::device::Device,
    server_dir: &std::path::Path,
    nhs: &scr_core::NhsNumber,
    visits: Visits,
    context: &str,
) {
    let on = (super::server_store(server_dir), archive(server_dir));
    assert_converged_on(tablet, (&on.0, &on.1), nhs, visits, context).await;
}

/// [`assert_converged`] against the server's store and archive wherever
/// they are (PostgreSQL, for several nodes).
pub async fn assert_converged_on(
    tablet: &super::device::Device,
    (store, archive): (&scr_core::Store, &Archive),
    nhs: &scr_core::NhsNumber,
    visits: Visits,
    context: &str,
) {
    visits.writer.abort();
    let stopped = visits.writer.await;
    assert!(
        stopped.is_err_and(|e| e.is_cancelled()),
        "the visit writer failed before it was stopped ({context})"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let pass = tablet.settle().await;
        let uploaded = tablet.engine.audit_queue_len().unwrap() == 0;
        if (pass.in_step == pass.documents && uploaded) || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    assert_eq!(
        tablet.engine.audit_queue_len().unwrap(),
        0,
        "the trail was uploaded ({context})"
    );
    let written = visits.written.lock().unwrap().clone();
    assert!(written.len() >= 5, "visits were written ({context})");
    // The server stores what it merged a moment after it merged it (samod
    // writes in the background): read until it is all there, or a minute.
    let read = || -> std::collections::HashSet<_> {
        store
            .open_record(nhs)
            .unwrap()
            .view_compartment(scr_core::record::Compartment::CareEvents)
            .unwrap()
            .entries
            .iter()
            .flat_map(|e| e.history.clone())
            .collect()
    };
    let mut on_server = read();
    while written.iter().any(|v| !on_server.contains(v)) && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        on_server = read();
    }
    let lost = written.iter().filter(|v| !on_server.contains(v)).count();
    assert_eq!(
        lost,
        0,
        "{lost} of {} visits lost ({context})",
        written.len()
    );
    let key = tablet.keys.public();
    let (archived, flagged) = archive.counts_of(&key).unwrap();
    let (last_seq, _) = archive.chain(&key).unwrap();
    assert!(archived > 0, "the trail reached the archive ({context})");
    assert_eq!(flagged, 0, "no gap or fork ({context})");
    assert_eq!(
        archived, last_seq,
        "every event once, 1 to {last_seq} ({context})"
    );
    eprintln!(
        "{} visits written, all on the server; {archived} audit events archived, none lost or repeated ({context})",
        written.len()
    );
}

/// A nurse's tablet syncing with `scr-server serve` as a child process,
/// through a proxy a test can cut and point at a restarted server; patient
/// `n` on her caseload, permission to view recorded.
pub struct TabletOnServer {
    pub tablet: super::device::Device,
    pub nhs: scr_core::NhsNumber,
    pub server_dir: std::path::PathBuf,
    pub server: ServerProcess,
    pub proxy: super::proxy::Proxy,
    /// Holds the directories.
    pub dir: tempfile::TempDir,
}

pub async fn tablet_on_server(n: u32) -> TabletOnServer {
    let dir = tempfile::tempdir().unwrap();
    let s = super::site::site(dir.path()).await;
    let nhs = super::site::on_caseload(
        &s.srv,
        &s.store,
        n,
        scr_core::record::SharingChoice::CoreAndAdditional,
    );
    let mut tablet = super::device::Device::nurse(&s.srv, dir.path()).await;
    let server_dir = s.server_dir.clone();
    s.srv.shutdown().await;
    drop(s.store);
    let server = serve(&server_dir);
    let proxy = super::proxy::Proxy::start(server.addr).await;
    tablet.url = proxy.url();
    tablet.online().await;
    tablet.settle().await;
    tablet.engine.record_permission(&nhs, true, true).unwrap();
    TabletOnServer {
        tablet,
        nhs,
        server_dir,
        server,
        proxy,
        dir,
    }
}
