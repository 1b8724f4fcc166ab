//! Rolling restarts (issue 19): the server stops gracefully on SIGTERM, as
//! systemd and Kubernetes stop a service, and on Ctrl-C. It says it is not
//! ready, accepts nothing new, tells every synced device to open a fresh
//! session elsewhere, finishes what is in flight (an audit upload is
//! archived and acknowledged), stores what samod holds, and exits 0.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use scr_core::channel::{self, Hello, Purpose};
use scr_core::protocol::AuditReply;
use scr_core::record::SharingChoice;

mod common;
use common::device::Device;
use common::process::{
    TabletOnServer, archive, assert_converged, serve, tablet_on_server, write_visits,
};
use common::site::{on_caseload, site};

/// In one process, speaking the protocol directly: a sync session is told
/// its server is going (an END frame, not a dropped connection); `/health`
/// says draining; the port takes no new connection; and an audit upload
/// whose connection was open when the shutdown began is still archived and
/// acknowledged before the server stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_tells_sessions_takes_nothing_new_and_finishes_what_is_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let s = site(dir.path()).await;
    let nhs = on_caseload(&s.srv, &s.store, 61, SharingChoice::CoreAndAdditional);
    let mut tablet = Device::nurse(&s.srv, dir.path()).await;
    tablet.online().await;
    tablet.settle().await;
    tablet.offline().await;
    tablet.engine.record_permission(&nhs, true, true).unwrap();
    let upload = scr_core::sync::next_audit_batch(&tablet.engine).unwrap();
    assert!(!upload.events.is_empty(), "the tablet has events to upload");

    let (sync_addr, health_addr, server_key) =
        (s.srv.sync_addr, s.srv.health_addr, s.srv.server_key);
    let archived = s.srv.archive.clone();
    let open = |purpose| {
        let keys = tablet.keys.clone();
        async move {
            let ws = common::ws(sync_addr).await;
            channel::connect(ws, &keys, &server_key, &Hello::new(purpose, None).encode())
                .await
                .unwrap()
        }
    };
    let mut session = channel::PlainSession::open(open(Purpose::Sync).await)
        .await
        .unwrap();
    // An audit upload's connection, handshake done, its batch not yet sent.
    let mut audit = open(Purpose::Audit).await;

    let shutdown = tokio::spawn(s.srv.shutdown_within(Duration::from_secs(30)));

    // The sync session ends by the server's word.
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while session.recv().await.unwrap_or(None).is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "the sync session was never ended");
    assert!(
        session.ended_by_peer(),
        "the server dropped the connection without telling the device its session is over"
    );
    let health = common::http_get(health_addr, "/health").await;
    assert!(
        health.starts_with("HTTP/1.1 503") && health.contains("draining"),
        "{health}"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(sync_addr).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sync port still takes connections while shutting down"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !shutdown.is_finished(),
        "the server stopped with an audit upload in flight"
    );

    // The upload in flight goes through: archived, then acknowledged.
    audit
        .send(&serde_json::to_vec(&upload).unwrap())
        .await
        .unwrap();
    let reply = audit.recv().await.unwrap().expect("an acknowledgement");
    let AuditReply::Acknowledged(ack) = serde_json::from_slice(&reply).unwrap() else {
        panic!("the upload was refused");
    };
    assert_eq!(ack.stored as usize, upload.events.len());
    let drained = shutdown.await.unwrap();
    assert_eq!(drained.sessions_ended, 1);
    assert!(drained.in_time, "everything in flight finished");
    let (archived_to, _) = archived.chain(&tablet.keys.public()).unwrap();
    assert_eq!(archived_to, upload.events.last().unwrap().seq);
}

/// `scr-server serve` as a child process, a nurse's tablet writing a visit
/// every 40 ms and syncing through a proxy: SIGTERM mid-traffic. The server
/// exits 0 (not 143, killed), having archived every audit event it
/// acknowledged; started again on the same directory, the tablet comes
/// back by itself and every visit it wrote is on the server, its trail
/// archived once, unbroken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_traffic_exits_cleanly_and_loses_nothing_acknowledged() {
    let TabletOnServer {
        mut tablet,
        nhs,
        server_dir,
        mut server,
        proxy,
        dir: _dir,
    } = tablet_on_server(62).await;

    let visits = write_visits(tablet.engine.clone(), nhs);
    tokio::time::sleep(Duration::from_millis(1_200)).await;

    let pid = i32::try_from(server.child.id()).unwrap();
    // SAFETY: kill(2) with a child's pid and a signal number.
    #[allow(unsafe_code)]
    let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(sent, 0);
    let status = tokio::task::spawn_blocking(move || {
        let said = server.line();
        let status = server.child.wait().unwrap();
        (said, status)
    });
    let (said, status) = tokio::time::timeout(Duration::from_secs(60), status)
        .await
        .expect("the server did not stop within a minute of SIGTERM")
        .unwrap();
    assert!(
        status.success(),
        "SIGTERM should end the server cleanly (exit 0), not {status:?}"
    );
    assert!(said.contains("SIGTERM"), "{said:?}");
    // Everything the server acknowledged before it stopped (the tablet
    // released it) is in the archive it left.
    // (The last upload may have taken everything just before the server
    // went: the next visit, written with no server to take it, says where
    // the releases stopped.)
    let waited = std::time::Instant::now();
    let released = loop {
        if let Some(released) = tablet.audit_released_up_to() {
            break released;
        }
        assert!(
            waited.elapsed() < Duration::from_secs(10),
            "visits go on being written and queued"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (archived_to, _) = archive(&server_dir).chain(&tablet.keys.public()).unwrap();
    assert!(
        released > 0 && archived_to >= released,
        "the tablet released events up to {released}, the archive holds up to {archived_to}"
    );

    // The next release of the server, on the same directory.
    let mut server = serve(&server_dir);
    proxy.point_at(server.addr);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_converged(&tablet, &server_dir, &nhs, visits, "after SIGTERM").await;
    tablet.offline().await;
    let _ = server.child.kill();
    let _ = server.child.wait();
}
