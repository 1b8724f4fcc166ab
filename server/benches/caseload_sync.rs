//! A community nurse's caseload refresh: 150 patients (20 entries each)
//! synced to a fresh tablet through the engine's sync driver, then a pass
//! with nothing new, then a pass carrying one visit summary, each with no
//! added latency and with 100 ms round trips (a loopback proxy delaying
//! each direction by 50 ms). Prints the times.
//!
//! Run: `cargo bench -p scr-server --bench caseload_sync`
//! (under `cargo test` it runs a quick mode: 5 patients.)
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use scr_core::channel::{self, Hello, Purpose, StaticKeypair};
use scr_core::channel::{from_hex, hex_key};
use scr_core::clock::SystemClock;
use scr_core::crypto::{SecretKey, StaticKeyProvider};
use scr_core::engine::{Engine, EngineConfig};
use scr_core::fixtures::{sample_entry, test_nhs_number};
use scr_core::grant::RelationshipKind;
use scr_core::protocol::{LoginRequest, LoginResponse};
use scr_core::record::{EntryContent, SharingChoice};
use scr_core::retention::DeviceClass;
use scr_core::sync::{DeviceSync, SyncConfig};
use scr_server::records::{FileEntry, RecordFile, load};
use scr_server::serve::{ServeConfig, start};
use scr_server::users::{NewUser, assign};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const NURSE: &str = "555000000102";

type Pipes = Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>;

/// Forwards loopback TCP to `upstream`, delaying every chunk by `one_way`
/// in each direction (order kept, throughput not limited). Aborting the
/// returned pipes cuts every connection (signal lost).
async fn delaying_proxy(
    upstream: std::net::SocketAddr,
    one_way: Duration,
) -> (std::net::SocketAddr, Pipes) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let pipes = Pipes::default();
    let held = pipes.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = TcpStream::connect(upstream).await.unwrap();
            // As the ends do: Nagle off, or the proxy adds 40 ms stalls.
            client.set_nodelay(true).unwrap();
            server.set_nodelay(true).unwrap();
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            let mut held = held.lock().unwrap();
            held.push(tokio::spawn(pipe(cr, sw, one_way)));
            held.push(tokio::spawn(pipe(sr, cw, one_way)));
        }
    });
    (addr, pipes)
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = async move {
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due.into()).await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
    };
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    };
    // One task for both halves, so aborting it drops both sockets at once.
    futures::join!(reader, writer);
}

/// A visit note as another of the nurse's tablets writes it.
fn another_tablets_note(note: &str) -> scr_core::record::EntryVersion {
    use scr_core::record::{EntryId, EntryVersion, Provenance, VersionStatus};
    EntryVersion::new(
        EntryId::new(),
        Vec::new(),
        VersionStatus::Current,
        EntryContent::EncounterSummary {
            setting: "home visit".into(),
            occurred_at: "2026-12-06".into(),
            note: note.into(),
        },
        Provenance {
            author_id: NURSE.into(),
            role: "R0050".into(),
            organisation: "RX1".into(),
            device: hex_key(&[7; 32]),
            recorded_at_ms: scr_core::clock::now_ms(),
        },
    )
}

/// The summary of the first pass after `after` to finish.
async fn pass_after(
    states: &mut tokio::sync::watch::Receiver<scr_core::sync::SyncState>,
    after: u64,
) -> scr_core::sync::PassSummary {
    loop {
        if let scr_core::sync::SyncState::Idle { pass, summary, .. } = &*states.borrow_and_update()
            && *pass > after
        {
            return *summary;
        }
        states.changed().await.unwrap();
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn run(patients: u32, one_way: Duration, rounds: usize) {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(ServeConfig::on_loopback(dir.path().join("server")))
        .await
        .unwrap();
    let store = scr_core::Store::open(
        dir.path().join("server/server.db"),
        &scr_server::serve::identity::key_provider(&dir.path().join("server")).unwrap(),
    )
    .unwrap();
    srv.directory
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
    for n in 0..patients {
        let file = RecordFile {
            nhs_number: test_nhs_number(1000 + n),
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
            &srv.directory,
            NURSE,
            file.nhs_number,
            RelationshipKind::Caseload,
        )
        .unwrap();
    }

    let keys = Arc::new(StaticKeypair::generate().unwrap());
    let token = srv
        .directory
        .create_enrollment_token(
            "RX1",
            scr_core::retention::DeviceClass::NurseTablet,
            scr_core::clock::now_ms() + 60_000,
        )
        .unwrap();
    let ws = || async {
        tokio_tungstenite::connect_async(format!("ws://{}/sync", srv.sync_addr))
            .await
            .unwrap()
            .0
    };
    let hello = Hello::new(Purpose::Sync, Some(&token)).encode();
    drop(
        channel::connect(ws().await, &keys, &srv.server_key, &hello)
            .await
            .unwrap(),
    );
    let login = LoginRequest {
        user_id: NURSE.into(),
        card_serial: "CARD-0001".into(),
        passcode: "jo-2468".into(),
    };
    let LoginResponse::Granted {
        grant_hex,
        grant_key_hex,
        holdings_doc,
    } = scr_core::sync::login(ws().await, &keys, &srv.server_key, &login)
        .await
        .unwrap()
    else {
        panic!("login refused");
    };
    let engine = Arc::new(
        Engine::open(
            dir.path().join("tablet.db"),
            &StaticKeyProvider::new(SecretKey::from_bytes([9; 32])),
            EngineConfig::new(
                &hex_key(&keys.public()),
                DeviceClass::NurseTablet,
                from_hex(&grant_key_hex).unwrap().try_into().unwrap(),
            ),
            Arc::new(SystemClock),
        )
        .unwrap(),
    );
    engine
        .login_online(&from_hex(&grant_hex).unwrap(), "tablet-1357")
        .unwrap();
    engine
        .set_holdings_document(&holdings_doc.unwrap())
        .unwrap();

    let (addr, pipes) = delaying_proxy(srv.sync_addr, one_way).await;
    // What a connection alone costs through the proxy (TCP, WebSocket,
    // Noise, the session reply), measured with a second enrolled key so
    // the tablet's own session is left alone.
    let probe = StaticKeypair::generate().unwrap();
    let probe_token = srv
        .directory
        .create_enrollment_token(
            "RX1",
            DeviceClass::NurseTablet,
            scr_core::clock::now_ms() + 60_000,
        )
        .unwrap();
    let enroll = Hello::new(Purpose::Sync, Some(&probe_token)).encode();
    drop(
        channel::connect(ws().await, &probe, &srv.server_key, &enroll)
            .await
            .unwrap(),
    );
    let mut connects = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let socket = channel::open_websocket(&format!("ws://{addr}/sync"))
            .await
            .unwrap();
        let hello = Hello::new(Purpose::Sync, None).encode();
        let mut ch = channel::connect(socket, &probe, &srv.server_key, &hello)
            .await
            .unwrap();
        ch.recv().await.unwrap().unwrap();
        connects.push(t.elapsed());
    }
    let connect_time = median(connects);
    let mut config = SyncConfig::new(&format!("ws://{addr}/sync"), srv.server_key, keys.clone());
    config.pass_wait = Duration::from_secs(120);
    let t = Instant::now();
    let sync = DeviceSync::start(engine.clone(), config).await.unwrap();
    let cold = sync.sync_once(Duration::from_secs(600)).await.unwrap();
    let cold_time = t.elapsed();
    assert_eq!(cold.holdings.received, patients as usize);
    assert_eq!(cold.in_step, cold.documents, "every document in step");

    let mut idle = Vec::new();
    let mut edited = Vec::new();
    let mut states = sync.watch();
    for r in 0..rounds {
        let t = Instant::now();
        sync.sync_once(Duration::from_secs(120)).await.unwrap();
        idle.push(t.elapsed());
        let last = match &*states.borrow_and_update() {
            scr_core::sync::SyncState::Idle { pass, .. } => *pass,
            _ => 0,
        };
        engine
            .add_entry(
                &test_nhs_number(1000 + (r as u32 % patients)),
                EntryContent::EncounterSummary {
                    setting: "home".into(),
                    occurred_at: "2026-11-27T09:00:00Z".into(),
                    note: format!("bench visit {r}"),
                },
                false,
                None,
            )
            .unwrap();
        // The pass the edit itself starts, as in the app.
        let t = Instant::now();
        let s = pass_after(&mut states, last).await;
        edited.push(t.elapsed());
        assert_eq!(s.in_step, s.documents);
    }
    let rtt = one_way.as_millis() * 2;
    println!(
        "caseload {patients} patients ({} documents), RTT {rtt} ms: cold sync {:.0} ms; \
         pass with nothing new p50 {:.0} ms; the pass a visit summary starts p50 {:.0} ms; \
         device store (db + WAL) {:.1} MB",
        cold.documents,
        cold_time.as_secs_f64() * 1000.0,
        median(idle).as_secs_f64() * 1000.0,
        median(edited).as_secs_f64() * 1000.0,
        ["tablet.db", "tablet.db-wal"]
            .iter()
            .filter_map(|f| std::fs::metadata(dir.path().join(f)).ok())
            .map(|m| m.len())
            .sum::<u64>() as f64
            / 1e6,
    );
    let traffic = srv.metrics.traffic.clone();
    let bytes = || {
        traffic.received.load(std::sync::atomic::Ordering::Relaxed)
            + traffic.sent.load(std::sync::atomic::Ordering::Relaxed)
    };
    // Signal lost: every connection cut. The session resumes on a new
    // connection (ADR 0005) and a pass with nothing new follows.
    let before = bytes();
    let t = Instant::now();
    for p in pipes.lock().unwrap().drain(..) {
        p.abort();
    }
    let resumed = sync.sync_once(Duration::from_secs(600)).await.unwrap();
    let resume_time = t.elapsed();
    assert_eq!(resumed.in_step, resumed.documents);
    assert!(srv.metrics.sessions_resumed.get() >= 1);
    println!(
        "  connection cut, session resumed, pass with nothing new ({} documents): {:.0} ms, {:.1} KB both ways",
        resumed.documents,
        resume_time.as_secs_f64() * 1000.0,
        (bytes() - before) as f64 / 1024.0,
    );
    // App restart: a fresh session (a new Automerge sync state for every
    // document, as samod keeps none across restarts) and one pass with
    // nothing new.
    sync.stop().await;
    let before = bytes();
    let mut config = SyncConfig::new(&format!("ws://{addr}/sync"), srv.server_key, keys.clone());
    config.pass_wait = Duration::from_secs(120);
    let t = Instant::now();
    let sync = DeviceSync::start(engine.clone(), config).await.unwrap();
    // The pass the restart itself runs (asking for one more would time two).
    let resumed = pass_after(&mut sync.watch(), 0).await;
    let resume_time = t.elapsed();
    assert_eq!(resumed.in_step, resumed.documents);
    // The pass alone, on the connected session: the catalogue's round
    // trip and what follows it.
    let before_pass = bytes();
    let t = Instant::now();
    let again = sync.sync_once(Duration::from_secs(600)).await.unwrap();
    let pass_time = t.elapsed();
    assert_eq!(again.in_step, again.documents);
    println!(
        "  a connection alone (TCP, WebSocket, Noise, session reply): {:.0} ms",
        connect_time.as_secs_f64() * 1000.0
    );
    println!(
        "  app restarted, fresh session, pass with nothing new ({} documents, {} through samod): \
         {:.0} ms, {:.1} KB both ways ({:.0} B per document), connection included; \
         the next pass alone {:.0} ms, {:.1} KB",
        resumed.documents,
        resumed.synced,
        resume_time.as_secs_f64() * 1000.0,
        (before_pass - before) as f64 / 1024.0,
        (before_pass - before) as f64 / resumed.documents as f64,
        pass_time.as_secs_f64() * 1000.0,
        (bytes() - before_pass) as f64 / 1024.0,
    );
    // 10% of the caseload changed on the server while the app was closed
    // (another tablet's visit notes, written here straight to the server's
    // samod), then a restart.
    sync.stop().await;
    let changed = (patients / 10).max(1);
    for n in 0..changed {
        let nhs = test_nhs_number(1000 + n);
        let docs = store.documents_of_record(&nhs).unwrap();
        let doc = docs
            .iter()
            .find(|d| d.compartment == scr_core::record::Compartment::CareEvents)
            .unwrap();
        let handle = srv
            .repo()
            .find(doc.doc_id.parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        let note = another_tablets_note(&format!("visit by another tablet {n}"));
        handle
            .with_document_async(move |d| {
                use automerge::ReadDoc;
                use automerge::transaction::Transactable;
                let versions = d.get(automerge::ROOT, "versions").unwrap().unwrap().1;
                let mut tx = d.transaction();
                tx.put(
                    &versions,
                    note.version_id.to_string(),
                    serde_json::to_string(&note).unwrap(),
                )
                .unwrap();
                tx.commit();
            })
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = bytes();
    let mut config = SyncConfig::new(&format!("ws://{addr}/sync"), srv.server_key, keys.clone());
    config.pass_wait = Duration::from_secs(120);
    let t = Instant::now();
    let sync = DeviceSync::start(engine.clone(), config).await.unwrap();
    let changed_pass = pass_after(&mut sync.watch(), 0).await;
    let changed_time = t.elapsed();
    assert_eq!(changed_pass.in_step, changed_pass.documents);
    println!(
        "  app restarted, {changed} records changed on the server: {:.0} ms, {:.1} KB both ways, {} documents through samod, connection included",
        changed_time.as_secs_f64() * 1000.0,
        (bytes() - before) as f64 / 1024.0,
        changed_pass.synced,
    );
    sync.stop().await;
    // A day's audit trail, uploaded with sync stopped (so nothing else
    // moves): one view of every patient, twice over, with permission
    // recorded first.
    for n in 0..patients {
        let nhs = test_nhs_number(1000 + n);
        engine.record_permission(&nhs, true, true).unwrap();
        for _ in 0..2 {
            engine
                .view(&nhs, scr_core::access::AccessRequest::with_permission())
                .unwrap();
        }
    }
    let queued = engine.audit_queue_len().unwrap();
    let t = Instant::now();
    let up = scr_core::sync::upload_audit_queue(
        &engine,
        &format!("ws://{addr}/sync"),
        &keys,
        &srv.server_key,
    )
    .await
    .unwrap();
    let upload_time = t.elapsed();
    assert_eq!(up.released as u64, queued);
    println!(
        "  audit upload: {queued} events in {} batches, {:.0} ms ({:.0} events/s)",
        up.batches,
        upload_time.as_secs_f64() * 1000.0,
        queued as f64 / upload_time.as_secs_f64(),
    );
    srv.shutdown().await;
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (patients, rounds) = if quick { (5, 2) } else { (150, 7) };
    for one_way in [Duration::ZERO, Duration::from_millis(50)] {
        rt.block_on(run(patients, one_way, rounds));
    }
}
