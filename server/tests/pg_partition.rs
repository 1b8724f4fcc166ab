//! A node cut off from PostgreSQL (its connections dropped by a proxy, and
//! no new one getting through) fails closed: an enrollment cut off before
//! its commit, and an enrollment and an audit upload tried while cut off,
//! are refused with a typed error, promptly, and nothing of them is
//! written; once the network is back the node recovers by itself (the pool
//! drops its broken connections), the same token still enrolls and the
//! upload goes through. A serving node says so: `/health` is not ready and
//! `/metrics` shows the store unreachable until it is back.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use scr_core::audit::{AuditDraft, AuditEvent, GENESIS_HASH, Outcome};
use scr_core::channel::hex_key;
use scr_core::crypto::SecretKey;
use scr_core::protocol::{AUDIT_UPLOAD_FORMAT, AuditUpload, Backlog};
use scr_core::retention::DeviceClass;
use scr_server::archive::{Archive, ArchiveError, DEVICE_USER, Issued};
use scr_server::directory::{Directory, DirectoryError};

mod common;
use common::proxy::Proxy;

/// The cluster's address in `url`, a proxy in front of it, and `url`
/// through the proxy.
async fn behind_proxy(url: &str) -> (std::net::SocketAddr, std::sync::Arc<Proxy>, String) {
    // postgres://postgres@127.0.0.1:PORT/DB
    let host_port = url.split('@').nth(1).unwrap().split('/').next().unwrap();
    let cluster: std::net::SocketAddr = host_port.parse().unwrap();
    let proxy = std::sync::Arc::new(Proxy::start(cluster).await);
    let via = url.replacen(host_port, &proxy.addr.to_string(), 1);
    (cluster, proxy, via)
}

/// Polls `/health` until its answer contains `want` (30 s at most).
async fn health_says(addr: std::net::SocketAddr, want: &str) {
    let began = Instant::now();
    loop {
        let answer = common::http_get(addr, "/health").await;
        if answer.contains(want) {
            return;
        }
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "/health never said {want:?}: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serving_node_cut_off_says_it_is_not_ready_until_it_is_back() {
    let Some(url) = common::postgres::fresh_database() else {
        return;
    };
    let (cluster, proxy, via) = behind_proxy(&url).await;
    let dir = tempfile::tempdir().unwrap();
    let node = common::nodes::node(dir.path(), &via).await;
    health_says(node.health_addr, "200 OK").await;
    assert!(
        common::http_get(node.health_addr, "/metrics")
            .await
            .contains("scr_store_reachable 1")
    );

    proxy.point_at(dead_port());
    proxy.cut();
    health_says(node.health_addr, "store unreachable").await;
    assert!(
        common::http_get(node.health_addr, "/health")
            .await
            .starts_with("HTTP/1.1 503"),
        "not ready: a load balancer sends no device here"
    );
    assert!(
        common::http_get(node.health_addr, "/metrics")
            .await
            .contains("scr_store_reachable 0")
    );

    proxy.point_at(cluster);
    health_says(node.health_addr, "200 OK").await;
    assert!(
        common::http_get(node.health_addr, "/metrics")
            .await
            .contains("scr_store_reachable 1")
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_acknowledges_no_push_and_takes_it_once_back() {
    use scr_core::record::SharingChoice;
    let Some(url) = common::postgres::fresh_database() else {
        return;
    };
    let (cluster, proxy, via) = behind_proxy(&url).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    let node = common::nodes::node(&dir, &via).await;
    // The state read directly, not through the proxy.
    let state = common::nodes::beside(&dir, &url);
    node.directory
        .add_user(&common::nurse(), common::NURSE_PASSCODE)
        .unwrap();
    let nhs = common::site::on_caseload(&node, &state.store, 75, SharingChoice::CoreAndAdditional);
    let mut tablet = common::device::Device::nurse(&node, tmp.path()).await;
    tablet.online().await;
    tablet.settle().await;
    tablet.engine.record_permission(&nhs, true, true).unwrap();
    tablet.settle().await;
    let unsent = |t: &common::device::Device| {
        t.engine
            .record_sync_statuses()
            .unwrap()
            .iter()
            .any(|r| r.nhs_number == nhs && r.unsent)
    };
    assert!(!unsent(&tablet), "in step before the cut");

    proxy.point_at(dead_port());
    proxy.cut();
    health_says(node.health_addr, "store unreachable").await;
    // Its sessions are ended (the tablet would go to another node), and no
    // new one opens while the store does not answer.
    let began = Instant::now();
    while !common::http_get(node.health_addr, "/metrics")
        .await
        .contains("scr_sync_sessions_open 0")
    {
        assert!(
            began.elapsed() < Duration::from_secs(20),
            "the node ends its sync sessions"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A visit written while the node cannot store it: the node takes
    // nothing of it, so the tablet never counts it as sent.
    const CUT: &str = "written while the node was cut off";
    tablet
        .engine
        .add_entry(&nhs, common::device::visit(CUT), false, None)
        .unwrap();
    for _ in 0..3 {
        let _ = tablet
            .sync
            .as_ref()
            .unwrap()
            .sync_once(Duration::from_secs(3))
            .await;
        assert!(
            unsent(&tablet),
            "acknowledged while the store was unreachable"
        );
    }
    let on_server = |state: &scr_server::serve::state::NodeState| {
        scr_server::demo::site::notes_in(&state.store.open_record(&nhs).unwrap().view())
            .iter()
            .any(|n| n.contains(CUT))
    };
    assert!(!on_server(&state), "nothing of it stored");

    // Back: the tablet's visit reaches the store, once acknowledged.
    proxy.point_at(cluster);
    health_says(node.health_addr, "200 OK").await;
    let began = Instant::now();
    while unsent(&tablet) {
        assert!(began.elapsed() < Duration::from_secs(60), "sent once back");
        let _ = tablet
            .sync
            .as_ref()
            .unwrap()
            .sync_once(Duration::from_secs(5))
            .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let began = Instant::now();
    while !on_server(&state) {
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "stored once back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tablet.offline().await;
    node.shutdown().await;
}

/// A port nothing listens on.
fn dead_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_postgresql_refuses_and_recovers() {
    let Some(url) = common::postgres::fresh_database() else {
        return;
    };
    // The node reaches PostgreSQL through a proxy.
    let (cluster, proxy, via) = behind_proxy(&url).await;
    let (directory, archive) = tokio::task::spawn_blocking(move || {
        let pg = common::postgres::connect(&via);
        (
            Directory::on_postgres(pg.clone()),
            Archive::on_postgres(pg, &SecretKey::from_bytes([4; 32])),
        )
    })
    .await
    .unwrap();
    let (directory, archive) = (std::sync::Arc::new(directory), std::sync::Arc::new(archive));
    let token = {
        let d = directory.clone();
        tokio::task::spawn_blocking(move || {
            d.create_enrollment_token("RX1", DeviceClass::NurseTablet, i64::MAX)
                .unwrap()
        })
        .await
        .unwrap()
    };

    // The partition comes mid-enrollment, while the token's row is held
    // and the audit is being written: nothing commits.
    let (d, t, p) = (directory.clone(), token.clone(), proxy.clone());
    let cut_mid_way = tokio::task::spawn_blocking(move || {
        d.enroll(&[1; 32], &t, 0, |_| {
            p.point_at(dead_port());
            p.cut();
            true
        })
    })
    .await
    .unwrap();
    assert!(
        matches!(cut_mid_way, Err(DirectoryError::Postgres(_))),
        "an enrollment cut off before its commit: {cut_mid_way:?}"
    );
    // Cut off: refused promptly with a typed error naming no value.
    let started = Instant::now();
    let (d, t) = (directory.clone(), token.clone());
    let refused = tokio::task::spawn_blocking(move || d.enroll(&[1; 32], &t, 0, |_| true))
        .await
        .unwrap();
    assert!(
        matches!(refused, Err(DirectoryError::Postgres(_))),
        "an enrollment while cut off: {refused:?}"
    );
    let message = refused.unwrap_err().to_string();
    assert!(
        !message.contains(&token) && !message.contains("127.0.0.1"),
        "{message}"
    );
    let a = archive.clone();
    let refused = tokio::task::spawn_blocking(move || {
        a.accept(&DEVICE, &housekeeping(), &issued_nothing(), 0)
    })
    .await
    .unwrap();
    assert!(
        matches!(refused, Err(ArchiveError::Postgres(_))),
        "an audit upload while cut off: {refused:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "refused promptly, not hung: {:?}",
        started.elapsed()
    );

    // The network back: the node recovers by itself; nothing was used up.
    proxy.point_at(cluster);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (d, t) = (directory.clone(), token.clone());
        let enrolled = tokio::task::spawn_blocking(move || d.enroll(&[1; 32], &t, 0, |_| true))
            .await
            .unwrap();
        match enrolled {
            Ok(device) => {
                assert_eq!(device.organisation, "RX1");
                break;
            }
            Err(DirectoryError::Postgres(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the node never recovered: {e}"),
        }
    }
    let a = archive.clone();
    let (chain, counts) = tokio::task::spawn_blocking(move || {
        (a.chain(&DEVICE).unwrap(), a.counts_of(&DEVICE).unwrap())
    })
    .await
    .unwrap();
    assert_eq!(
        (chain.0, counts),
        (0, (0, 0)),
        "nothing of the refused upload was written"
    );
    let a = archive.clone();
    let ack = tokio::task::spawn_blocking(move || {
        a.accept(&DEVICE, &housekeeping(), &issued_nothing(), 0)
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!((ack.stored, ack.flagged), (1, 0), "and it goes through now");
}

const DEVICE: [u8; 32] = [6; 32];

/// One event of the device's own housekeeping (no user, no patient), the
/// first of its chain.
fn housekeeping() -> AuditUpload {
    let draft = AuditDraft {
        user: DEVICE_USER.into(),
        role: String::new(),
        organisation: String::new(),
        patient: None,
        action: "sync".into(),
        compartments: Vec::new(),
        entries: Vec::new(),
        outcome: Outcome::Recorded,
        basis: None,
        alerts: Vec::new(),
        detail: None,
    };
    AuditUpload {
        format: AUDIT_UPLOAD_FORMAT,
        events: vec![AuditEvent::from_draft(
            draft,
            &hex_key(&DEVICE),
            1,
            GENESIS_HASH.into(),
            1_000,
        )],
        backlog: Backlog::default(),
    }
}

fn issued_nothing() -> Issued {
    Issued {
        grants: Vec::new(),
        revoked_at_ms: None,
        users_revoked_at: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_refused_while_cut_off_is_stored_once_back_and_nothing_it_replaces_is_deleted() {
    use samod::storage::Storage;
    use scr_core::store::{ChunkKey, SamodStorage};
    let Some(url) = common::postgres::fresh_database() else {
        return;
    };
    let (cluster, proxy, via) = behind_proxy(&url).await;
    let kek = scr_core::crypto::StaticKeyProvider::new(SecretKey::from_bytes([5; 32]));
    let pg = common::postgres::connect(&via);
    let store = scr_core::Store::over(
        std::sync::Arc::new(scr_server::pg::store::PgStore::new(pg)),
        &kek,
    )
    .unwrap();
    let storage = SamodStorage::new(store.clone());
    let key = |parts: [&str; 3]| ChunkKey::from_parts(parts).unwrap();
    let (old, whole) = (
        key(["docA", "incremental", "01"]),
        key(["docA", "snapshot", "02"]),
    );
    storage.put(old.clone(), b"a change".to_vec()).await;
    assert_eq!(storage.unsaved(), 0);

    // Cut off: samod compacts the document into a snapshot, which the
    // store refuses (samod is not told: its trait has no error).
    proxy.point_at(dead_port());
    proxy.cut();
    storage
        .put(whole.clone(), b"the whole document".to_vec())
        .await;
    assert_eq!(storage.unsaved(), 1, "the refused chunk is kept");
    // samod reading the document again meanwhile finds it.
    assert_eq!(
        storage.load(whole.clone()).await.as_deref(),
        Some(&b"the whole document"[..])
    );

    // Back; samod deletes the change its snapshot replaces before the
    // snapshot is stored: the change stays.
    proxy.point_at(cluster);
    let began = Instant::now();
    while store.data_version().is_err() {
        assert!(began.elapsed() < Duration::from_secs(30), "never back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    storage.delete(old.clone()).await;
    assert_eq!(
        store.load_chunk(&old).unwrap().as_deref(),
        Some(&b"a change"[..]),
        "nothing of a document with an unsaved chunk is deleted"
    );
    let loaded = storage
        .load_range(ChunkKey::from_parts(["docA"]).unwrap())
        .await;
    assert_eq!(loaded.len(), 2, "the stored change and the kept snapshot");
    assert_eq!(
        loaded.get(&whole).map(Vec::as_slice),
        Some(&b"the whole document"[..])
    );

    // The node stores what was refused (its store watch does, once the
    // store answers): then the document may lose what it replaces.
    let s = storage.clone();
    let saved = tokio::task::spawn_blocking(move || s.save_unsaved())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((saved, storage.unsaved()), (1, 0));
    assert_eq!(
        store.load_chunk(&whole).unwrap().as_deref(),
        Some(&b"the whole document"[..])
    );
    storage.delete(old.clone()).await;
    assert_eq!(store.load_chunk(&old).unwrap(), None);
}
