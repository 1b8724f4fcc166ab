//! Clients that speak the protocol badly on purpose: an oversized frame
//! before the handshake, bytes that are not a WebSocket at all, garbage
//! after a valid handshake (at the session layer and at samod's), a flood
//! of requests for documents the user may not see, and sessions that never
//! read. The server refuses each, its memory stays bounded, and a nurse's
//! tablet keeps syncing throughout.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use scr_core::access::AccessRequest;
use scr_core::channel::{self, Hello, Purpose, StaticKeypair, hex_key};
use scr_core::record::SharingChoice;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

mod common;
use common::device::{Device, visit};
use common::fault_proxy::Rng;
use common::site::{Site, on_caseload, site};

/// The process's resident memory in MB (server and clients share it; the
/// clients' part is small and fixed).
fn resident_mb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb / 1024
}

/// Whether the server closes this connection within `within`.
async fn closed_within<S>(mut stream: S, within: Duration) -> bool
where
    S: futures::Stream + Unpin,
{
    tokio::time::timeout(within, async { while stream.next().await.is_some() {} })
        .await
        .is_ok()
}

/// A samod message's type and document id (empty when absent).
fn kind_and_document(bytes: &[u8]) -> (String, String) {
    let mut d = minicbor::Decoder::new(bytes);
    let (mut kind, mut doc) = (String::new(), String::new());
    let Ok(Some(n)) = d.map() else {
        return (kind, doc);
    };
    for _ in 0..n {
        let Ok(key) = d.str() else { break };
        match key {
            "type" => kind = d.str().unwrap_or_default().to_owned(),
            "documentId" => doc = d.str().unwrap_or_default().to_owned(),
            _ => {
                if d.skip().is_err() {
                    break;
                }
            }
        }
    }
    (kind, doc)
}

/// A new, enrolled nurse-tablet key.
async fn enrolled(s: &Site) -> Arc<StaticKeypair> {
    let keys = Arc::new(StaticKeypair::generate().unwrap());
    let token = s
        .srv
        .directory
        .create_enrollment_token(
            "RX1",
            scr_core::retention::DeviceClass::NurseTablet,
            scr_core::clock::now_ms() + 60_000,
        )
        .unwrap();
    common::enroll(&s.srv, &keys, &token).await;
    keys
}

/// A sync session speaking samod's protocol by hand, joined.
async fn joined(
    s: &Site,
    keys: &StaticKeypair,
) -> channel::PlainSession<impl channel::WebSocket + use<>> {
    let hello = Hello::new(Purpose::Sync, None).encode();
    let ch = channel::connect(
        common::ws(s.srv.sync_addr).await,
        keys,
        &s.srv.server_key,
        &hello,
    )
    .await
    .unwrap();
    let mut session = channel::PlainSession::open(ch).await.unwrap();
    let me = hex_key(&keys.public());
    session
        .send(&common::wire("join", &[("senderId", &me)], None))
        .await
        .unwrap();
    session.recv().await.unwrap().unwrap();
    session
}

/// The nurse's tablet writes a visit and a pass brings it to the server
/// and back in step.
async fn still_syncing(nurse: &Device, nhs: &scr_core::NhsNumber, note: &str) -> Duration {
    nurse
        .engine
        .add_entry(nhs, visit(note), false, None)
        .unwrap();
    let started = Instant::now();
    let pass = nurse.settle().await;
    assert_eq!(pass.in_step, pass.documents, "the tablet's pass completed");
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_are_refused_memory_stays_bounded_and_others_keep_syncing() {
    let dir = tempfile::tempdir().unwrap();
    let s = site(dir.path()).await;
    let nhs = on_caseload(&s.srv, &s.store, 81, SharingChoice::CoreAndAdditional);
    // A patient the hostile client's user has no relationship with.
    let stranger = scr_core::fixtures::test_nhs_number(82);
    scr_server::records::load(
        &s.store,
        &common::device::record(82, SharingChoice::CoreAndAdditional),
        "test",
    )
    .unwrap();
    let mut nurse = Device::nurse(&s.srv, dir.path()).await;
    nurse.online().await;
    nurse.settle().await;
    nurse.engine.record_permission(&nhs, true, true).unwrap();
    let baseline = still_syncing(&nurse, &nhs, "before").await;
    let mb_before = resident_mb();

    // 1. A 1 MB frame before any handshake: the WebSocket limit refuses it.
    let mut ws = common::ws(s.srv.sync_addr).await;
    let _ = ws.send(Message::binary(vec![0u8; 1 << 20])).await;
    assert!(
        closed_within(ws, Duration::from_secs(5)).await,
        "oversized frame: closed"
    );

    // 2. Bytes that are not a WebSocket upgrade at all.
    let mut tcp = tokio::net::TcpStream::connect(s.srv.sync_addr)
        .await
        .unwrap();
    let mut rng = Rng::new(8);
    let junk: Vec<u8> = (0..64 * 1024).map(|_| rng.next() as u8).collect();
    let _ = tcp.write_all(&junk).await;
    let mut sink = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(12), tcp.read_to_end(&mut sink)).await;
    assert!(read.is_ok(), "not a WebSocket: closed");

    // 3. Garbage after a valid handshake: first where a session frame
    //    belongs, then where a samod message belongs.
    let keys = enrolled(&s).await;
    let hello = Hello::new(Purpose::Sync, None).encode();
    let mut ch = channel::connect(
        common::ws(s.srv.sync_addr).await,
        &keys,
        &s.srv.server_key,
        &hello,
    )
    .await
    .unwrap();
    ch.send(&junk[..4096]).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = ch.recv().await {}
    })
    .await;
    assert!(ended.is_ok(), "garbage session frame: the session ends");
    let mut session = joined(&s, &keys).await;
    session.send(&junk[..2048]).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = session.recv().await {}
    })
    .await;
    assert!(ended.is_ok(), "garbage samod message: the session ends");
    assert!(
        still_syncing(&nurse, &nhs, "after garbage").await < baseline + Duration::from_secs(10)
    );

    // 4. A flood: 20,000 requests for documents the user may not see (a
    //    stranger's record, and ids that name nothing), answered or
    //    dropped, never served, while the tablet keeps syncing.
    let stranger_docs: Vec<String> = s
        .store
        .open_record(&stranger)
        .unwrap()
        .export()
        .into_iter()
        .map(|e| e.doc_id)
        .collect();
    let mut flooder = joined(&s, &keys).await;
    let (me, server) = (hex_key(&keys.public()), hex_key(&s.srv.server_key));
    let empty_request = {
        let doc = automerge::Automerge::new();
        let mut state = automerge::sync::State::new();
        automerge::sync::SyncDoc::generate_sync_message(&doc, &mut state)
            .unwrap()
            .encode()
    };
    let flood = 20_000;
    let mut asked = std::collections::HashSet::new();
    let mut sent = 0usize;
    let mut cut_off = false;
    let flooding = async {
        for i in 0..flood {
            let id = if i % 4 == 0 {
                stranger_docs[i % stranger_docs.len()].clone()
            } else {
                let bytes: Vec<u8> = (0..16).map(|_| rng.next() as u8).collect();
                samod::DocumentId::try_from(bytes).unwrap().to_string()
            };
            asked.insert(id.clone());
            let msg = common::wire(
                "request",
                &[
                    ("documentId", &id),
                    ("senderId", &me),
                    ("targetId", &server),
                ],
                Some(&empty_request),
            );
            if flooder.send(&msg).await.is_err() {
                cut_off = true; // the server may cut a flooder off
                break;
            }
            sent += 1;
        }
    };
    let syncing = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        still_syncing(&nurse, &nhs, "during the flood").await
    };
    let ((), during) = tokio::join!(flooding, syncing);
    // Whatever came back: no sync message for a document asked about.
    let mut served = 0usize;
    loop {
        match tokio::time::timeout(Duration::from_millis(500), flooder.recv()).await {
            Ok(Ok(Some(reply))) => {
                let (kind, doc) = kind_and_document(&reply);
                served += usize::from(kind == "sync" && asked.contains(&doc));
            }
            // Closed by the server (after every send had left).
            Ok(_) => {
                cut_off = true;
                break;
            }
            Err(_) => break,
        }
    }
    assert_eq!(served, 0, "no document the user may not see was served");
    let mb_flood = resident_mb();

    // 5. Four sessions (the cap for a device) that ask for everything the
    //    user may see and never read a byte.
    let mine: Vec<String> = s
        .store
        .open_record(&nhs)
        .unwrap()
        .export()
        .into_iter()
        .map(|e| e.doc_id)
        .collect();
    let mut sleepers = Vec::new();
    for _ in 0..4 {
        let mut sleeper = joined(&s, &keys).await;
        for id in &mine {
            let msg = common::wire(
                "request",
                &[("documentId", id), ("senderId", &me), ("targetId", &server)],
                Some(&empty_request),
            );
            sleeper.send(&msg).await.unwrap();
        }
        sleepers.push(sleeper);
    }
    let beside_sleepers = still_syncing(&nurse, &nhs, "beside sleepers").await;
    let mb_after = resident_mb();

    eprintln!(
        "sync pass: {baseline:?} before, {during:?} during a {flood}-request flood, \
         {beside_sleepers:?} beside 4 sessions that never read; resident memory \
         {mb_before} MB -> {mb_flood} MB after the flood -> {mb_after} MB"
    );
    assert!(
        mb_after < mb_before + 200,
        "memory bounded: {mb_before} MB -> {mb_after} MB"
    );
    let notes = nurse.notes(&nhs, AccessRequest::with_permission());
    for note in [
        "before",
        "after garbage",
        "during the flood",
        "beside sleepers",
    ] {
        assert!(notes.iter().any(|n| n == note), "{note} reached the record");
    }
    let metrics = common::http_get(s.srv.health_addr, "/metrics").await;
    let dropped: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("scr_sync_flood_dropped_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    eprintln!("flood: {sent} requests sent (cut off: {cut_off}), {dropped} dropped before samod");
    // Past the per-session allowance the flood was dropped before samod,
    // or samod cut the flooder off (requests piling up behind a pending
    // share decision end the session), whichever came first; sends still
    // in the socket when the cut came were never read.
    let allowance = scr_server::guard::flood::MAX_REQUESTS;
    assert!(
        dropped as usize >= allowance / 4 && (cut_off || dropped as usize + allowance >= sent),
        "the flood was dropped before samod or cut off: {dropped} dropped of {sent} sent"
    );
    drop(sleepers);
    nurse.offline().await;
    s.srv.shutdown().await;
}

/// An enrolled device logged in as a nurse who may write the patient's care
/// events pushes changes that make automerge's parser panic (the input a
/// long fuzzing run found), then a deflate bomb: the guard drops both
/// messages, and the document stays served to the nurse's own tablet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_that_breaks_automerges_parser_is_dropped_and_the_document_stays_served() {
    let dir = tempfile::tempdir().unwrap();
    let s = site(dir.path()).await;
    let nhs = on_caseload(&s.srv, &s.store, 83, SharingChoice::CoreAndAdditional);
    let mut nurse = Device::nurse(&s.srv, dir.path()).await;
    nurse.online().await;
    nurse.settle().await;
    nurse.engine.record_permission(&nhs, true, true).unwrap();
    still_syncing(&nurse, &nhs, "before").await;

    // A second tablet of the same nurse, logged in, so it may write.
    let keys = enrolled(&s).await;
    let granted = scr_core::sync::login(
        common::ws(s.srv.sync_addr).await,
        &keys,
        &s.srv.server_key,
        &common::nurse_login(),
    )
    .await
    .unwrap();
    assert!(matches!(
        granted,
        scr_core::protocol::LoginResponse::Granted { .. }
    ));
    let care_events = s
        .store
        .open_record(&nhs)
        .unwrap()
        .export()
        .into_iter()
        .find(|e| e.compartment == scr_core::record::Compartment::CareEvents)
        .unwrap()
        .doc_id;
    let crasher = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/regressions/compartment_document/crash-hexane-leb128-unwrap"),
    )
    .unwrap();
    let with_changes = |chunk: Vec<u8>| {
        let doc = automerge::Automerge::new();
        let mut state = automerge::sync::State::new();
        let mut message =
            automerge::sync::SyncDoc::generate_sync_message(&doc, &mut state).unwrap();
        message.changes = vec![chunk].into();
        message.encode()
    };
    let poisoned = with_changes(crasher);
    // And a deflate bomb: a compressed change chunk of 256 KB that
    // automerge would inflate to 256 MiB, whole, before reading its
    // checksum (`core/tests/inflation.rs` sees what refusing it costs).
    let bomb = with_changes({
        use std::io::Write;
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..256 {
            e.write_all(&zeros).unwrap();
        }
        let deflated = e.finish().unwrap();
        let mut chunk = vec![0x85, 0x6f, 0x4a, 0x83, 0, 0, 0, 0, 2];
        let mut n = deflated.len();
        while n >= 0x80 {
            chunk.push((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
        chunk.push(n as u8);
        chunk.extend_from_slice(&deflated);
        chunk
    });
    let mut session = joined(&s, &keys).await;
    let (me, server) = (hex_key(&keys.public()), hex_key(&s.srv.server_key));
    for (kind, poisoned) in [("request", &poisoned), ("sync", &poisoned), ("sync", &bomb)] {
        let msg = common::wire(
            kind,
            &[
                ("documentId", &care_events),
                ("senderId", &me),
                ("targetId", &server),
            ],
            Some(poisoned),
        );
        session.send(&msg).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The nurse's tablet still writes to and syncs that very document.
    still_syncing(&nurse, &nhs, "after the poisoned push").await;
    let notes = nurse.notes(&nhs, AccessRequest::with_permission());
    assert!(notes.iter().any(|n| n == "after the poisoned push"));
    // In step means samod holds it; its write to the store follows.
    let mut stored = false;
    for _ in 0..50 {
        let on_server =
            scr_server::demo::site::notes_in(&s.store.open_record(&nhs).unwrap().view());
        stored = on_server.iter().any(|n| n == "after the poisoned push");
        if stored {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(stored, "the note reached the server's store");
    drop(session);
    nurse.offline().await;
    s.srv.shutdown().await;
}
