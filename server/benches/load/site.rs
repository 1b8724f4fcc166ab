//! The load bench's site: users, records, relationships and tokens written
//! with the server's own library, then `scr-server serve` as processes
//! (one on its files, or several over one PostgreSQL), and what can be
//! read of them.

use std::io::BufRead;

use scr_core::channel::from_hex;
use scr_core::fixtures::{sample_entry, test_nhs_number};
use scr_core::grant::RelationshipKind;
use scr_core::record::{Compartment, SharingChoice};
use scr_server::records::{FileEntry, RecordFile, load};
use scr_server::serve::state::StoreAt;
use scr_server::serve::{ServeConfig, start};
use scr_server::users::{NewUser, assign};

pub struct Plan {
    pub devices: usize,
    pub nurses: usize,
    pub caseload: u32,
    pub pushes: usize,
    /// Server processes the tablets are spread over.
    pub nodes: usize,
    /// The PostgreSQL database they share (one node on its files if none).
    pub store: Option<String>,
}

impl Plan {
    pub fn store_at(&self) -> StoreAt {
        match &self.store {
            Some(url) => StoreAt::Postgres(scr_server::pg::PgConfig::new(url)),
            None => StoreAt::Files,
        }
    }

    /// The node tablet `index` connects to: a nurse's two tablets (`i` and
    /// `i + nurses`) on different nodes, so her pushes cross between them.
    pub fn node_of(&self, index: usize) -> usize {
        (index / self.nurses.max(1)) % self.nodes.max(1)
    }
}

pub struct Site {
    pub sync_addrs: Vec<String>,
    pub server_key: [u8; 32],
    /// (token, nurse index) per tablet.
    pub tablets: Vec<(String, usize)>,
    /// Per nurse: the documents a tablet syncs (core and care events of
    /// each caseload patient), care events first.
    pub docs: Vec<Vec<String>>,
}

/// The nodes: the first on `dir`, each other on a directory of its own
/// holding a copy of the first one's key file. Servers, sync and health
/// addresses, and the server key.
pub fn serve_nodes(
    dir: &std::path::Path,
    plan: &Plan,
) -> (Vec<Server>, Vec<String>, Vec<String>, [u8; 32]) {
    let (mut servers, mut sync, mut health) = (Vec::new(), Vec::new(), Vec::new());
    let mut key = [0; 32];
    for n in 0..plan.nodes.max(1) {
        let here = if n == 0 {
            dir.to_path_buf()
        } else {
            let other = dir.join(format!("node{n}"));
            std::fs::create_dir_all(&other).unwrap();
            std::fs::copy(dir.join("server.key"), other.join("server.key")).unwrap();
            other
        };
        let (server, s, h, k) = serve(&here, plan.store.as_deref());
        servers.push(server);
        sync.push(s);
        health.push(h);
        key = k;
    }
    (servers, sync, health, key)
}

/// A new database on the cluster at `url` (`scripts/with-postgres`'s),
/// its URL.
pub fn fresh_database(url: &str) -> String {
    let name = format!("scr_load_{}", std::process::id());
    let (admin, sql) = (url.to_owned(), format!("CREATE DATABASE {name}"));
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(conn);
                client.batch_execute(&sql).await.unwrap();
            });
    })
    .join()
    .unwrap();
    let (base, _) = url.rsplit_once('/').unwrap();
    format!("{base}/{name}")
}

/// A counter's value in a Prometheus text.
pub fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

pub async fn http_get(addr: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut tcp) = tokio::net::TcpStream::connect(addr).await else {
        return String::new();
    };
    let _ = tcp
        .write_all(
            format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await;
    let mut out = String::new();
    let _ = tcp.read_to_string(&mut out).await;
    out
}

pub fn nurse_id(n: usize) -> String {
    format!("5550{n:08}")
}

/// Users, records, relationships and tokens, written with the server's
/// own library into the state the server processes then serve (the data
/// directory's files, or PostgreSQL).
pub async fn prepare(
    dir: &std::path::Path,
    plan: &Plan,
) -> (Vec<(String, usize)>, Vec<Vec<String>>) {
    let at = plan.store_at();
    let mut config = ServeConfig::on_loopback(dir);
    config.store = at.clone();
    let srv = start(config).await.unwrap();
    let store = scr_server::serve::state::open(dir, &at).unwrap().store;
    let mut docs = Vec::new();
    for n in 0..plan.nurses {
        srv.directory
            .add_user(
                &NewUser {
                    user_id: nurse_id(n),
                    display_name: format!("Nurse {n}"),
                    organisation: "RX1".into(),
                    job_role: "R0050".into(),
                    job_role_name: "Community Nurse".into(),
                    activities: vec!["B0264".into(), "B0370".into(), "B0380".into()],
                    privacy_officer: false,
                    card_serial: format!("CARD-{n}"),
                },
                "jo-2468",
            )
            .unwrap();
        let mut mine = Vec::new();
        for p in 0..plan.caseload {
            let file = RecordFile {
                nhs_number: test_nhs_number(10_000 + n as u32 * plan.caseload + p),
                sharing: SharingChoice::CoreAndAdditional,
                include_sensitive: false,
                entries: (0..8)
                    .map(|i| FileEntry {
                        sensitive: false,
                        content: sample_entry(i),
                    })
                    .collect(),
            };
            let ids = load(&store, &file, "load").unwrap();
            assign(
                &store,
                &srv.directory,
                &nurse_id(n),
                file.nhs_number,
                RelationshipKind::Caseload,
            )
            .unwrap();
            for c in [Compartment::CareEvents, Compartment::Core] {
                mine.push(ids.iter().find(|(k, _)| *k == c).unwrap().1.clone());
            }
        }
        docs.push(mine);
    }
    let tablets = (0..plan.devices)
        .map(|i| {
            let token = srv
                .directory
                .create_enrollment_token(
                    "RX1",
                    scr_core::retention::DeviceClass::NurseTablet,
                    scr_core::clock::now_ms() + 3_600_000,
                )
                .unwrap();
            (token, i % plan.nurses)
        })
        .collect();
    srv.shutdown().await;
    (tablets, docs)
}

/// A server process, killed when the run ends however it ends.
pub struct Server(pub std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `scr-server serve` on `dir` (its state in PostgreSQL at `store`,
/// or on its files); its addresses and key from the line it prints.
pub fn serve(dir: &std::path::Path, store: Option<&str>) -> (Server, String, String, [u8; 32]) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_scr-server"));
    command.env_remove("SCR_STORE");
    if let Some(url) = store {
        command.env("SCR_STORE", url);
    }
    let mut child = command
        .args(["serve", "--data-dir"])
        .arg(dir)
        .args(["--listen", "127.0.0.1:0", "--health", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        // SCR_LOAD_SERVER_LOG=FILE keeps the server's log.
        .stderr(match std::env::var_os("SCR_LOAD_SERVER_LOG") {
            Some(path) => std::fs::File::create(path)
                .map(std::process::Stdio::from)
                .unwrap_or_else(|_| std::process::Stdio::null()),
            None => std::process::Stdio::null(),
        })
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    // serving sync on ADDR and health on ADDR; server key HEX
    let words: Vec<&str> = line.split_whitespace().collect();
    let key = from_hex(words[10]).unwrap().try_into().unwrap();
    (
        Server(child),
        words[3].to_owned(),
        words[7].trim_end_matches(';').to_owned(),
        key,
    )
}

pub fn memory_mb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0)
        / 1024
}
