//! Our server against the reference automerge-repo sync server (Node.js,
//! `js-compare/server.mjs`), each in its own process, serving the same
//! documents (150 patients' compartments, 20 entries each) to a fresh
//! client: how long the client takes to fetch them all, and each server's
//! resident memory after serving them. Ours also decides every document
//! against the access rules, seals at rest and runs Noise; the reference
//! server does none of these, so the gap is the price of those.
//!
//! Ours is measured two ways with the same tablet: a fresh app's path
//! (the catalogue, then the documents fetched in batches: ADR 0016) and a
//! plain samod client syncing each document, as the Node server's client
//! does. Two floors are measured in the same run: plain Automerge loading the
//! documents from bytes, and loading plus syncing each (one process, no
//! network). Every figure is the median of `RUNS` fetches by fresh clients.
//!
//! Run: `scripts/bench-vs-js` (installs the npm packages, then
//! `cargo bench -p scr-server --bench vs_js_server`). Under `cargo test`
//! it does nothing: it needs Node.js and the packages.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;
use futures::{SinkExt, StreamExt};
use scr_core::channel::{self, Hello, Purpose, StaticKeypair, hex_key};
use scr_core::fixtures::{sample_entry, test_nhs_number};
use scr_core::grant::RelationshipKind;
use scr_core::protocol::{LoginRequest, LoginResponse};
use scr_core::record::SharingChoice;
use scr_server::directory::Directory;
use scr_server::records::{FileEntry, RecordFile, load};
use scr_server::serve::identity::{ServerIdentity, key_provider};
use scr_server::users::{NewUser, assign};
use tokio_tungstenite::tungstenite::Message;

const NURSE: &str = "555000000102";
const PATIENTS: u32 = 150;
/// Fetches per server (each by a fresh client); the median is reported.
const RUNS: usize = 5;
/// Documents read at a time on one blocking thread, as the app's fetch.
const READ_PIECE: usize = 48;

/// A plain WebSocket dialer, as automerge-repo's own clients use.
struct PlainWs(String);

impl samod::Dialer for PlainWs {
    type Error = std::io::Error;

    fn url(&self) -> samod::Url {
        samod::Url::parse(&self.0).unwrap()
    }

    fn connect(
        &self,
    ) -> futures::future::BoxFuture<
        'static,
        Result<samod::transport::Transport, samod::DialError<std::io::Error>>,
    > {
        let url = self.0.clone();
        Box::pin(async move {
            // Nagle off, as for our clients (`channel::open_websocket`).
            let (ws, _) = tokio_tungstenite::connect_async_with_config(url.as_str(), None, true)
                .await
                .map_err(samod::DialError::transient)?;
            let (sink, stream) = ws.split();
            let incoming = stream.filter_map(|m| async move {
                match m {
                    Ok(Message::Binary(b)) => Some(Ok(b.to_vec())),
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                }
            });
            let outgoing = sink.with(|b: Vec<u8>| async move {
                Ok::<_, tokio_tungstenite::tungstenite::Error>(Message::binary(b))
            });
            Ok(samod::transport::Transport::new(
                Box::pin(incoming),
                Box::pin(outgoing),
            ))
        })
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Resident and peak resident memory of a process, in MB.
fn memory_mb(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |field: &str| {
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (kb("VmRSS:") / 1024.0, kb("VmHWM:") / 1024.0)
}

async fn wait_for_port(port: u16) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server on port {port} did not start");
}

/// Finds every document from a fresh in-memory client; returns the time.
async fn fetch_all(
    dialer: Arc<dyn samod::Dialer<Error = impl std::error::Error + Send + Sync + 'static>>,
    peer: &str,
    ids: &[samod::DocumentId],
) -> Duration {
    let client = samod::Repo::build_tokio()
        .with_peer_id(samod::PeerId::from(peer.to_owned()))
        .load()
        .await;
    let t = Instant::now();
    let dial = client
        .dial(samod::BackoffConfig::default(), dialer)
        .unwrap();
    dial.established().await.unwrap();
    let mut finds: FuturesUnordered<_> = ids.iter().map(|id| client.find(id.clone())).collect();
    let mut found = 0;
    while let Some(r) = finds.next().await {
        if matches!(r, Ok(Some(_))) {
            found += 1;
        }
    }
    let elapsed = t.elapsed();
    assert_eq!(found, ids.len(), "every document fetched");
    client.stop().await;
    elapsed
}

/// A fresh device's fetch on our server as the app does it (ADR 0016):
/// one sync session, the catalogue naming nothing held, then every
/// document it names fetched in batches and each read through the
/// `untrusted` guard into Automerge. Returns the time and the count.
async fn fetch_by_catalogue(
    url: &str,
    keys: &StaticKeypair,
    server_key: &[u8; 32],
) -> (Duration, usize) {
    use scr_core::protocol::{
        Ask, CATALOGUE_FORMAT, CatalogueReply, CatalogueRequest, FetchAnswer, FetchRequest, Fetched,
    };
    let t = Instant::now();
    let ws = channel::open_websocket(url).await.unwrap();
    let hello = Hello::new(Purpose::Sync, None).encode();
    let ch = channel::connect(ws, keys, server_key, &hello)
        .await
        .unwrap();
    let mut session = channel::PlainSession::open(ch).await.unwrap();
    let connected = t.elapsed();
    let ask = Ask::Catalogue(CatalogueRequest {
        format: CATALOGUE_FORMAT,
        list: None,
        records: Vec::new(),
    });
    let answer = session.ask(1, &ask.encode()).await.unwrap();
    let CatalogueReply::Answered { differing, .. } = CatalogueReply::decode(&answer).unwrap()
    else {
        panic!("the catalogue was refused");
    };
    let catalogued = t.elapsed();
    let mut wanted: std::collections::HashSet<String> =
        differing.into_iter().map(|d| d.doc).collect();
    // Each answer is read on the blocking pool, in pieces across the cores,
    // while the next is asked for, as the app's fetch reads them (its engine
    // then takes each piece as it is read, the reads at most two pieces
    // ahead: `scr_core::sync` fetch, `READ_PIECE`, `READ_AHEAD`).
    let mut reads = Vec::new();
    let mut id = 1;
    while !wanted.is_empty() {
        id += 1;
        let ask = Ask::Fetch(FetchRequest {
            docs: wanted.iter().cloned().collect(),
        });
        let answer = session.ask(id, &ask.encode()).await.unwrap();
        let FetchAnswer::Documents(got) = FetchAnswer::decode(&answer).unwrap() else {
            panic!("the fetch was refused");
        };
        let all: Vec<Vec<u8>> = got
            .into_iter()
            .filter_map(|f| match f {
                Fetched::Bytes { doc, bytes } => {
                    wanted.remove(&doc);
                    Some(bytes)
                }
                Fetched::Withheld { .. } => None,
            })
            .collect();
        let mut all = all.into_iter().peekable();
        while all.peek().is_some() {
            let batch: Vec<Vec<u8>> = all.by_ref().take(READ_PIECE).collect();
            reads.push(tokio::task::spawn_blocking(move || {
                batch
                    .iter()
                    .map(|bytes| {
                        let mut budget = scr_core::record::untrusted::MAX_INFLATED_DOCUMENT;
                        assert!(
                            scr_core::record::untrusted::plain_chunks(bytes)
                                && scr_core::record::untrusted::inflation_within(
                                    bytes,
                                    &mut budget
                                )
                        );
                        scr_core::record::untrusted::contained(|| automerge::Automerge::load(bytes))
                            .unwrap()
                            .unwrap()
                    })
                    .collect::<Vec<_>>()
            }));
        }
    }
    let fetched = t.elapsed();
    let mut loaded = Vec::new();
    for read in reads {
        loaded.extend(read.await.unwrap());
    }
    eprintln!(
        "    (connected {:.1} ms, catalogue {:.1} ms, fetched {:.1} ms, all read {:.1} ms)",
        ms(connected),
        ms(catalogued - connected),
        ms(fetched - catalogued),
        ms(t.elapsed() - fetched)
    );
    (t.elapsed(), loaded.len())
}

struct Setup {
    dir: tempfile::TempDir,
    ids: Vec<samod::DocumentId>,
    exports: Vec<Vec<u8>>,
    server_key: [u8; 32],
    token: String,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("ours");
    std::fs::create_dir_all(&data).unwrap();
    let store =
        scr_core::Store::open(data.join("server.db"), &key_provider(&data).unwrap()).unwrap();
    let identity = ServerIdentity::load_or_create(&store).unwrap();
    let directory = Directory::open(&data.join("directory.db")).unwrap();
    directory
        .add_user(
            &NewUser {
                user_id: NURSE.into(),
                display_name: "Jo Nurse".into(),
                organisation: "RX1".into(),
                job_role: "R0050".into(),
                job_role_name: "Community Nurse".into(),
                activities: vec!["B0264".into(), "B0370".into(), "B0380".into()],
                privacy_officer: false,
                card_serial: "CARD-0001".into(),
            },
            "jo-2468",
        )
        .unwrap();
    let (mut ids, mut exports) = (Vec::new(), Vec::new());
    for n in 0..PATIENTS {
        let file = RecordFile {
            nhs_number: test_nhs_number(2000 + n),
            sharing: SharingChoice::CoreAndAdditional,
            include_sensitive: false,
            entries: (0..20)
                .filter(|i| i % 10 != 9)
                .map(|i| FileEntry {
                    sensitive: false,
                    content: sample_entry(i),
                })
                .collect(),
        };
        load(&store, &file, "bench").unwrap();
        assign(
            &store,
            &directory,
            NURSE,
            file.nhs_number,
            RelationshipKind::Caseload,
        )
        .unwrap();
        // The documents a nurse may receive (not sensitive: she may not).
        for e in store.open_record(&file.nhs_number).unwrap().export() {
            if e.compartment != scr_core::record::Compartment::Sensitive {
                ids.push(e.doc_id.parse().unwrap());
                exports.push(e.bytes);
            }
        }
    }
    let token = directory
        .create_enrollment_token(
            "RX1",
            scr_core::retention::DeviceClass::NurseTablet,
            scr_core::clock::now_ms() + 600_000,
        )
        .unwrap();
    Setup {
        server_key: identity.noise.public(),
        dir,
        ids,
        exports,
        token,
    }
}

/// Fetches from our server, `RUNS` times, each by a fresh client (nothing
/// held) of one enrolled, logged-in tablet; then the server's memory.
async fn ours(s: &Setup) -> (Vec<Duration>, Vec<Duration>, (f64, f64)) {
    let (port, health) = (free_port(), free_port());
    let mut child: Child = Command::new(env!("CARGO_BIN_EXE_scr-server"))
        .args(["serve", "--data-dir"])
        .arg(s.dir.path().join("ours"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--health", &format!("127.0.0.1:{health}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(port).await;
    let url = format!("ws://127.0.0.1:{port}/sync");
    let keys = Arc::new(StaticKeypair::generate().unwrap());
    let ws = || async {
        tokio_tungstenite::connect_async(url.as_str())
            .await
            .unwrap()
            .0
    };
    let hello = Hello::new(Purpose::Sync, Some(&s.token)).encode();
    drop(
        channel::connect(ws().await, &keys, &s.server_key, &hello)
            .await
            .unwrap(),
    );
    let login = LoginRequest {
        user_id: NURSE.into(),
        card_serial: "CARD-0001".into(),
        passcode: "jo-2468".into(),
    };
    let response = scr_core::sync::login(ws().await, &keys, &s.server_key, &login)
        .await
        .unwrap();
    assert!(matches!(response, LoginResponse::Granted { .. }));
    let mut took = Vec::new();
    for _ in 0..if profiling() { 0 } else { RUNS } {
        let dialer =
            Arc::new(scr_core::sync::NoiseDialer::new(&url, keys.clone(), s.server_key).unwrap());
        took.push(fetch_all(dialer, &hex_key(&keys.public()), &s.ids).await);
    }
    let mut fetched = Vec::new();
    for _ in 0..if profiling() { 200 } else { RUNS } {
        let (t, n) = fetch_by_catalogue(&url, &keys, &s.server_key).await;
        assert_eq!(n, s.ids.len(), "every document fetched");
        fetched.push(t);
    }
    let memory = memory_mb(child.id());
    let _ = child.kill();
    let _ = child.wait();
    (took, fetched, memory)
}

/// `SCR_BENCH_PROFILE=1`: only our fetch, many times over (to profile the
/// server with `perf record -p`); no comparison is printed.
fn profiling() -> bool {
    std::env::var_os("SCR_BENCH_PROFILE").is_some()
}

async fn reference(s: &Setup) -> Option<(Vec<Duration>, (f64, f64))> {
    if profiling() {
        return None;
    }
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/js-compare/server.mjs");
    if !script.with_file_name("node_modules").exists() {
        return None;
    }
    let port = free_port();
    let data = s.dir.path().join("js");
    let mut child = Command::new("node")
        .arg(&script)
        .arg(port.to_string())
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .ok()?;
    let mut ready = String::new();
    BufReader::new(child.stdout.take()?)
        .read_line(&mut ready)
        .ok()?;
    let url = format!("ws://127.0.0.1:{port}");

    // Upload the same documents (new ids: a client creates them).
    let uploader = samod::Repo::build_tokio()
        .with_peer_id(samod::PeerId::from("uploader".to_owned()))
        .load()
        .await;
    let dial = uploader
        .dial(
            samod::BackoffConfig::default(),
            Arc::new(PlainWs(url.clone())),
        )
        .unwrap();
    dial.established().await.unwrap();
    let conn = dial.connection_id().unwrap();
    let mut ids = Vec::new();
    let mut uploads = FuturesUnordered::new();
    for bytes in &s.exports {
        let handle = uploader
            .create(automerge::Automerge::load(bytes).unwrap())
            .await
            .unwrap();
        ids.push(handle.document_id().clone());
        uploads.push(async move { handle.they_have_our_changes(conn).await });
    }
    while uploads.next().await.is_some() {}
    uploader.stop().await;

    let mut took = Vec::new();
    for run in 0..RUNS {
        let peer = format!("fresh-client-{run}");
        took.push(fetch_all(Arc::new(PlainWs(url.clone())), &peer, &ids).await);
    }
    let memory = memory_mb(child.id());
    let _ = child.kill();
    let _ = child.wait();
    Some((took, memory))
}

/// The first floor: plain Automerge loading every document from its bytes.
fn floor_load(exports: &[Vec<u8>]) -> Duration {
    let t = Instant::now();
    for bytes in exports {
        std::hint::black_box(automerge::Automerge::load(bytes).unwrap());
    }
    t.elapsed()
}

/// The first floor as the app must read bytes from outside: through the
/// `untrusted` guard (whole chunks only, deflated parts inflated capped,
/// panics contained) before Automerge loads them.
fn floor_guarded_load(exports: &[Vec<u8>]) -> Duration {
    use scr_core::record::untrusted;
    let t = Instant::now();
    for bytes in exports {
        let mut budget = untrusted::MAX_INFLATED_DOCUMENT;
        assert!(untrusted::plain_chunks(bytes) && untrusted::inflation_within(bytes, &mut budget));
        std::hint::black_box(
            untrusted::contained(|| automerge::Automerge::load(bytes))
                .unwrap()
                .unwrap(),
        );
    }
    t.elapsed()
}

/// The second floor: loading each document and syncing it to an empty one
/// by Automerge's sync protocol, one document at a time, in one process
/// (messages encoded and decoded as on a wire).
fn floor_load_and_sync(exports: &[Vec<u8>]) -> Duration {
    use automerge::sync::{Message, State, SyncDoc};
    let t = Instant::now();
    for bytes in exports {
        let mut server = automerge::Automerge::load(bytes).unwrap();
        let mut client = automerge::Automerge::new();
        let (mut at_server, mut at_client) = (State::new(), State::new());
        loop {
            let mut moved = false;
            if let Some(m) = client.generate_sync_message(&mut at_client) {
                let m = Message::decode(&m.encode()).unwrap();
                server.receive_sync_message(&mut at_server, m).unwrap();
                moved = true;
            }
            if let Some(m) = server.generate_sync_message(&mut at_server) {
                let m = Message::decode(&m.encode()).unwrap();
                client.receive_sync_message(&mut at_client, m).unwrap();
                moved = true;
            }
            if !moved {
                break;
            }
        }
        assert_eq!(client.get_heads(), server.get_heads());
    }
    t.elapsed()
}

fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs[runs.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("vs_js_server: run with `scripts/bench-vs-js` (needs Node.js and npm packages)");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let s = setup();
    let n = s.ids.len();
    println!(
        "{n} documents (150 patients) to a fresh client, median of {RUNS} runs, one process per server:"
    );
    let report = |name: &str, took: Duration, memory: Option<(f64, f64)>| {
        let memory = memory
            .map(|(rss, peak)| format!("; server RSS {rss:.0} MB (peak {peak:.0} MB)"))
            .unwrap_or_default();
        println!(
            "  {name:<46} {:>7.1} ms ({:>6.0} docs/s){memory}",
            ms(took),
            n as f64 / took.as_secs_f64(),
        );
    };
    let (our_runs, fetch_runs, our_memory) = rt.block_on(ours(&s));
    let theirs = rt.block_on(reference(&s));
    let load: Vec<_> = (0..RUNS).map(|_| floor_load(&s.exports)).collect();
    let guarded: Vec<_> = (0..RUNS).map(|_| floor_guarded_load(&s.exports)).collect();
    let load_sync: Vec<_> = (0..RUNS).map(|_| floor_load_and_sync(&s.exports)).collect();
    if profiling() {
        println!(
            "profiled: {} fetches, median {:.1} ms",
            fetch_runs.len(),
            ms(median(fetch_runs))
        );
        return;
    }
    let by_samod = median(our_runs.clone());
    let ours = median(fetch_runs.clone());
    report(
        "scr-server, catalogue and fetch (the app's path)",
        ours,
        Some(our_memory),
    );
    println!(
        "    runs: {:?} ms",
        fetch_runs
            .iter()
            .map(|d| ms(*d).round())
            .collect::<Vec<_>>()
    );
    report("scr-server, samod's sync for each document", by_samod, None);
    println!(
        "    runs: {:?} ms",
        our_runs.iter().map(|d| ms(*d).round()).collect::<Vec<_>>()
    );
    match theirs {
        Some((their_runs, memory)) => {
            let theirs = median(their_runs.clone());
            report("automerge-repo sync server (Node.js)", theirs, Some(memory));
            println!(
                "    runs: {:?} ms",
                their_runs
                    .iter()
                    .map(|d| ms(*d).round())
                    .collect::<Vec<_>>()
            );
            println!(
                "  scr-server is {:.2}x the Node server's speed by catalogue and fetch (target: 10x, aim 20x); {:.2}x by samod's sync",
                theirs.as_secs_f64() / ours.as_secs_f64(),
                theirs.as_secs_f64() / by_samod.as_secs_f64()
            );
        }
        None => println!("  reference server skipped: run scripts/bench-vs-js (npm packages)"),
    }
    report("floor: Automerge loading from bytes", median(load), None);
    report(
        "floor: the same through the untrusted guard",
        median(guarded),
        None,
    );
    report(
        "floor: Automerge loading and syncing each",
        median(load_sync),
        None,
    );
}
