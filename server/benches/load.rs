//! Load: many simulated tablets against one server, all connected at once.
//!
//! The server runs as its own process (`scr-server serve`, on its embedded
//! SQLite store), so its memory is its own. Each simulated tablet is a task
//! here that does what a real one does over the real protocol: enrolls with
//! a one-time token, logs in (Argon2id on the server), opens a Noise sync
//! session and syncs its nurse's caseload (Automerge sync, by hand, over
//! samod's wire messages), then holds the session open and pushes visit
//! changes while every other tablet does the same.
//!
//! Reported: connect, login and cold-sync latency (p50, p99), push latency
//! (a change sent until the server's reply shows it merged), throughput,
//! peak open sessions, the server's resident and peak memory, and errors.
//!
//!   cargo bench -p scr-server --bench load -- --devices 2000
//!   cargo test  -p scr-server --bench load     (a 40-tablet smoke run)

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::BufRead;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use automerge::sync::{Message, State, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{Automerge, ChangeHash, ROOT, ReadDoc};
use scr_core::channel::{self, Hello, Purpose, StaticKeypair};
use scr_core::channel::{from_hex, hex_key};
use scr_core::fixtures::{sample_entry, test_nhs_number};
use scr_core::grant::RelationshipKind;
use scr_core::protocol::{LoginRequest, LoginResponse};
use scr_core::record::{
    Compartment, EntryContent, EntryId, EntryVersion, Provenance, SharingChoice, VersionStatus,
};
use scr_server::records::{FileEntry, RecordFile, load};
use scr_server::serve::{ServeConfig, start};
use scr_server::users::{NewUser, assign};
use tokio::sync::Barrier;

struct Plan {
    devices: usize,
    nurses: usize,
    caseload: u32,
    pushes: usize,
}

struct Site {
    sync_addr: String,
    health_addr: String,
    server_key: [u8; 32],
    /// (token, nurse index) per tablet.
    tablets: Vec<(String, usize)>,
    /// Per nurse: the documents a tablet syncs (core and care events of
    /// each caseload patient), care events first.
    docs: Vec<Vec<String>>,
}

fn nurse_id(n: usize) -> String {
    format!("5550{n:08}")
}

/// Users, records, relationships and tokens, written with the server's
/// own library into the data directory the server process then serves.
async fn prepare(dir: &std::path::Path, plan: &Plan) -> (Vec<(String, usize)>, Vec<Vec<String>>) {
    let srv = start(ServeConfig::on_loopback(dir)).await.unwrap();
    let store = scr_core::Store::open(
        dir.join("server.db"),
        &scr_server::serve::identity::key_provider(dir).unwrap(),
    )
    .unwrap();
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

/// The server process, killed when the run ends however it ends.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `scr-server serve` on `dir`; its addresses and key from the line
/// it prints.
fn serve(dir: &std::path::Path) -> (Server, String, String, [u8; 32]) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_scr-server"))
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

fn memory_mb(pid: u32, field: &str) -> u64 {
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

/// One samod wire message.
fn wire(kind: &str, doc: &str, me: &str, server: &str, data: &[u8]) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut e = minicbor::Encoder::new(&mut buf);
    let ok = e.map(5).is_ok()
        && e.str("type").and_then(|e| e.str(kind)).is_ok()
        && e.str("documentId").and_then(|e| e.str(doc)).is_ok()
        && e.str("senderId").and_then(|e| e.str(me)).is_ok()
        && e.str("targetId").and_then(|e| e.str(server)).is_ok()
        && e.str("data").and_then(|e| e.bytes(data)).is_ok();
    assert!(ok);
    buf
}

/// A received samod message: its type, document and data.
fn unwire(bytes: &[u8]) -> (String, String, Vec<u8>) {
    let mut d = minicbor::Decoder::new(bytes);
    let (mut kind, mut doc, mut data) = (String::new(), String::new(), Vec::new());
    let n = d.map().ok().flatten().unwrap_or(0);
    for _ in 0..n {
        match d.str() {
            Ok("type") => kind = d.str().unwrap_or_default().to_owned(),
            Ok("documentId") => doc = d.str().unwrap_or_default().to_owned(),
            Ok("data") => data = d.bytes().unwrap_or_default().to_vec(),
            Ok(_) => {
                if d.skip().is_err() {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    (kind, doc, data)
}

#[derive(Default)]
struct Timings {
    connect: Vec<Duration>,
    login: Vec<Duration>,
    cold_sync: Vec<Duration>,
    push: Vec<Duration>,
}

struct Tablet {
    session: channel::PlainSession<
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
    >,
    me: String,
    /// The nurse logged in on it (the author of what it writes).
    user: String,
    server: String,
    /// The care-events document it pushes visits to.
    care: String,
    docs: HashMap<String, (Automerge, State)>,
}

impl Tablet {
    async fn send(&mut self, kind: &str, doc: &str) -> Result<(), String> {
        let (d, s) = self.docs.get_mut(doc).ok_or("unknown document")?;
        if let Some(m) = d.generate_sync_message(s) {
            let bytes = wire(kind, doc, &self.me, &self.server, &m.encode());
            self.session.send(&bytes).await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Receives one message and answers it; the document it was about.
    async fn receive(&mut self) -> Result<String, String> {
        // A heartbeat every ten seconds while waiting, as a real tablet's
        // session sends (the server counts 30 s of silence as a lost link).
        let mut waited = 0;
        let bytes = loop {
            match tokio::time::timeout(Duration::from_secs(10), self.session.recv()).await {
                Ok(received) => {
                    break received
                        .map_err(|e| e.to_string())?
                        .ok_or("the server closed the session")?;
                }
                Err(_) if waited < 12 => {
                    waited += 1;
                    self.session.heartbeat().await.map_err(|e| e.to_string())?;
                }
                Err(_) => return Err("no message for 120 s".into()),
            }
        };
        let (kind, doc, data) = unwire(&bytes);
        match kind.as_str() {
            "sync" if self.docs.contains_key(&doc) => {
                let (d, s) = self.docs.get_mut(&doc).ok_or("unknown document")?;
                let m = Message::decode(&data).map_err(|e| e.to_string())?;
                d.receive_sync_message(s, m).map_err(|e| e.to_string())?;
                self.send("sync", &doc).await?;
                Ok(doc)
            }
            "doc-unavailable" => Err("a caseload document was unavailable".into()),
            "error" => Err("the server sent an error".into()),
            _ => Ok(doc), // announcements of other documents: not ours
        }
    }

    /// Holds the session open, as an idle tablet does (a heartbeat every
    /// ten seconds), until `until` resolves.
    async fn idle_until(&mut self, until: impl std::future::Future<Output = impl Sized>) {
        let beat = async {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                if self.session.heartbeat().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            _ = until => {}
            () = beat => {}
        }
    }

    fn in_step(&self, doc: &str, want: Option<ChangeHash>) -> bool {
        self.docs.get(doc).is_some_and(|(d, s)| {
            let theirs = s.their_heads.clone().unwrap_or_default();
            !theirs.is_empty()
                && match want {
                    Some(h) => theirs.contains(&h),
                    None => d.get_heads().iter().all(|h| theirs.contains(h)),
                }
        })
    }
}

async fn ws(
    addr: &str,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    String,
> {
    // As the app connects (`channel::open_websocket`: Nagle off).
    scr_core::channel::open_websocket(&format!("ws://{addr}/sync"))
        .await
        .map_err(|e| e.to_string())
}

/// A tablet's first minutes: enroll, log in, sync its caseload cold.
async fn connect(
    site: &Site,
    index: usize,
    timings: &std::sync::Mutex<Timings>,
) -> Result<Tablet, String> {
    let (token, nurse) = site.tablets[index].clone();
    let keys = StaticKeypair::generate().map_err(|e| e.to_string())?;
    let t = Instant::now();
    let hello = Hello::new(Purpose::Sync, Some(&token)).encode();
    drop(
        channel::connect(ws(&site.sync_addr).await?, &keys, &site.server_key, &hello)
            .await
            .map_err(|e| format!("enroll: {e}"))?,
    );
    let enrolled = t.elapsed();
    let t = Instant::now();
    let login = LoginRequest {
        user_id: nurse_id(nurse),
        card_serial: format!("CARD-{nurse}"),
        passcode: "jo-2468".into(),
    };
    match scr_core::sync::login(ws(&site.sync_addr).await?, &keys, &site.server_key, &login).await {
        Ok(LoginResponse::Granted { .. }) => {}
        Ok(other) => return Err(format!("login refused: {other:?}")),
        Err(e) => return Err(format!("login: {e}")),
    }
    let login_time = t.elapsed();

    let t = Instant::now();
    let hello = Hello::new(Purpose::Sync, None).encode();
    let ch = channel::connect(ws(&site.sync_addr).await?, &keys, &site.server_key, &hello)
        .await
        .map_err(|e| format!("sync session: {e}"))?;
    let mut session = channel::PlainSession::open(ch)
        .await
        .map_err(|e| e.to_string())?;
    let me = hex_key(&keys.public());
    let join = {
        let mut buf = Vec::new();
        let mut e = minicbor::Encoder::new(&mut buf);
        let ok = e.map(3).is_ok()
            && e.str("type").and_then(|e| e.str("join")).is_ok()
            && e.str("senderId").and_then(|e| e.str(&me)).is_ok()
            && e.str("supportedProtocolVersions").is_ok()
            && e.array(1).and_then(|e| e.str("1")).is_ok();
        assert!(ok);
        buf
    };
    session.send(&join).await.map_err(|e| e.to_string())?;
    session.recv().await.map_err(|e| e.to_string())?;
    let docs: Vec<String> = site.docs[nurse].clone();
    let mut tab = Tablet {
        session,
        care: docs[0].clone(),
        me,
        user: nurse_id(nurse),
        server: hex_key(&site.server_key),
        docs: docs
            .iter()
            .map(|d| (d.clone(), (Automerge::new(), State::new())))
            .collect(),
    };
    for d in &docs {
        tab.send("request", d).await?;
    }
    while !docs.iter().all(|d| tab.in_step(d, None)) {
        tab.receive().await?;
    }
    let cold = t.elapsed();
    {
        let mut t = timings.lock().map_err(|_| "poisoned")?;
        t.connect.push(enrolled);
        t.login.push(login_time);
        t.cold_sync.push(cold);
    }

    Ok(tab)
}

/// `pushes` visit changes to the first care-events document, each timed
/// until the server's reply shows it merged.
async fn push(
    mut tab: Tablet,
    index: usize,
    pushes: usize,
    timings: &std::sync::Mutex<Timings>,
) -> Result<Tablet, String> {
    let care = tab.care.clone();
    for n in 0..pushes {
        tokio::time::sleep(Duration::from_millis(
            (index as u64 * 37 + n as u64 * 101) % 1000,
        ))
        .await;
        // A visit note as the nurse's app writes it: a new version under
        // the document's versions, authored as her grant says (anything
        // else the server's push check refuses, and it never merges).
        let version = EntryVersion::new(
            EntryId::new(),
            Vec::new(),
            VersionStatus::Current,
            EntryContent::EncounterSummary {
                setting: "home visit".into(),
                occurred_at: "2026-12-06".into(),
                note: format!("load {index}-{n}: dressing changed"),
            },
            Provenance {
                author_id: tab.user.clone(),
                role: "R0050".into(),
                organisation: "RX1".into(),
                device: tab.me.clone(),
                recorded_at_ms: scr_core::clock::now_ms(),
            },
        );
        let json = serde_json::to_string(&version).map_err(|e| e.to_string())?;
        let head = {
            let (d, _) = tab.docs.get_mut(&care).ok_or("no care events")?;
            let versions = match d.get(ROOT, "versions").map_err(|e| e.to_string())? {
                Some((_, id)) => id,
                None => return Err("care events without versions".into()),
            };
            let mut tx = d.transaction();
            tx.put(&versions, version.version_id.to_string(), json)
                .map_err(|e| e.to_string())?;
            tx.commit();
            d.get_heads()[0]
        };
        let t = Instant::now();
        tab.send("sync", &care).await?;
        while !tab.in_step(&care, Some(head)) {
            tab.receive().await?;
        }
        timings
            .lock()
            .map_err(|_| "poisoned")?
            .push
            .push(t.elapsed());
    }
    Ok(tab)
}

/// One tablet's life: connected and synced, then (once every tablet is,
/// at the first barrier) pushing, its session held open until every
/// tablet is done (the second).
async fn tablet(
    site: Arc<Site>,
    index: usize,
    pushes: usize,
    ready: Arc<Barrier>,
    timings: Arc<std::sync::Mutex<Timings>>,
) -> Result<(), String> {
    let mut connected = connect(&site, index, &timings).await;
    if let Ok(tab) = &mut connected {
        tab.idle_until(ready.wait()).await;
    } else {
        ready.wait().await;
    }
    let mut pushed = match connected {
        Ok(tab) => push(tab, index, pushes, &timings).await,
        Err(e) => Err(e),
    };
    if let Ok(tab) = &mut pushed {
        tab.idle_until(ready.wait()).await;
    } else {
        ready.wait().await;
    }
    pushed.map(drop)
}

fn percentiles(label: &str, mut v: Vec<Duration>) -> String {
    if v.is_empty() {
        return format!("{label}: none");
    }
    v.sort();
    let at = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    format!(
        "{label} p50 {:.0} ms, p99 {:.0} ms (n={})",
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        v.len()
    )
}

async fn run(plan: Plan) {
    let dir = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let (tablets, docs) = prepare(dir.path(), &plan).await;
    let setup = t.elapsed();
    let (server, sync_addr, health_addr, server_key) = serve(dir.path());
    let pid = server.0.id();
    let site = Arc::new(Site {
        sync_addr,
        health_addr,
        server_key,
        tablets,
        docs,
    });
    let idle_mb = memory_mb(pid, "VmRSS:");
    let timings = Arc::new(std::sync::Mutex::new(Timings::default()));
    let ready = Arc::new(Barrier::new(plan.devices + 1));
    let failed = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(std::sync::Mutex::new(HashMap::<String, usize>::new()));
    let started = Instant::now();
    // Where a long run is, every ten seconds.
    let progress = {
        let (timings, failed) = (timings.clone(), failed.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                let (synced, pushed) = timings
                    .lock()
                    .map(|t| (t.cold_sync.len(), t.push.len()))
                    .unwrap_or_default();
                eprintln!(
                    "  ... {:.0} s: {synced} synced, {pushed} pushes, {} failed",
                    started.elapsed().as_secs_f64(),
                    failed.load(Ordering::Relaxed)
                );
            }
        })
    };
    let mut tasks = Vec::new();
    for i in 0..plan.devices {
        let (site, ready, timings) = (site.clone(), ready.clone(), timings.clone());
        let (failed, errors) = (failed.clone(), errors.clone());
        let pushes = plan.pushes;
        tasks.push(tokio::spawn(async move {
            if let Err(e) = tablet(site, i, pushes, ready, timings).await {
                failed.fetch_add(1, Ordering::Relaxed);
                *errors.lock().unwrap().entry(e).or_default() += 1;
            }
        }));
        // A tablet every 2 ms: a burst, not a single instant.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    ready.wait().await;
    let all_synced = started.elapsed();
    let metrics = http_get(&site.health_addr, "/metrics").await;
    let open_sessions = metrics
        .lines()
        .find_map(|l| l.strip_prefix("scr_sync_sessions_open "))
        .unwrap_or("?")
        .to_owned();
    let connected_mb = memory_mb(pid, "VmRSS:");
    let t = Instant::now();
    ready.wait().await;
    let push_phase = t.elapsed();
    for task in tasks {
        let _ = task.await;
    }
    let peak_mb = memory_mb(pid, "VmHWM:");
    drop(server);
    progress.abort();

    let t = timings.lock().unwrap();
    let pushes = t.push.len();
    println!(
        "load: {} tablets ({} nurses x {} patients, 2 documents each), setup {:.1} s",
        plan.devices,
        plan.nurses,
        plan.caseload,
        setup.as_secs_f64()
    );
    println!(
        "  all enrolled, logged in and synced in {:.1} s; open sync sessions at the peak: {open_sessions}",
        all_synced.as_secs_f64()
    );
    println!(
        "  {}",
        percentiles("enroll (Noise handshake)", t.connect.clone())
    );
    println!("  {}", percentiles("login (Argon2id)", t.login.clone()));
    println!(
        "  {}",
        percentiles("cold sync of the caseload", t.cold_sync.clone())
    );
    println!(
        "  {}; {:.0} pushes/s with every session open",
        percentiles("push merged", t.push.clone()),
        pushes as f64 / push_phase.as_secs_f64().max(1e-3)
    );
    println!(
        "  server memory: {idle_mb} MB idle, {connected_mb} MB with all connected, peak {peak_mb} MB"
    );
    println!(
        "  errors: {} tablets failed {:?}",
        failed.load(Ordering::Relaxed),
        errors.lock().unwrap()
    );
}

async fn http_get(addr: &str, path: &str) -> String {
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

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<usize>().ok())
    };
    // `cargo bench` passes --bench; under `cargo test` this is a smoke run.
    let full = args.iter().any(|a| a == "--bench");
    let devices = value("--devices").unwrap_or(if full { 2_000 } else { 40 });
    let plan = Plan {
        devices,
        // Two tablets per nurse (a user's parallel logins are capped).
        nurses: value("--nurses").unwrap_or((devices / 2).max(1)),
        caseload: value("--caseload").unwrap_or(5) as u32,
        pushes: value("--pushes").unwrap_or(if full { 3 } else { 1 }),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(plan));
}
