//! Audit upload over real sockets: every event reaches the server's archive
//! exactly once whatever point the upload is cut at; the server verifies
//! each device's chain and stores a gap, a fork or a foreign event flagged;
//! a revoked device still hands over its trail; an old backlog shows in the
//! metrics; emergency access reaches the acting organisation's privacy
//! officer as an alert.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use scr_core::access::AccessRequest;
use scr_core::access::{Alert, AlertReason, AlertType};
use scr_core::audit::{AuditDraft, AuditEvent, GENESIS_HASH, Outcome};
use scr_core::channel::{self, Hello, Purpose, hex_key};
use scr_core::fixtures::test_nhs_number;
use scr_core::protocol::{AUDIT_UPLOAD_FORMAT, AuditUpload, Backlog, MAX_AUDIT_BATCH};
use scr_core::record::SharingChoice;
use scr_core::sync::{next_audit_batch, send_audit_batch, upload_audit_queue};
use scr_server::serve::RunningServer;

mod common;

use common::site::{Site, on_caseload, on_incident, site};

use common::device::{Device, PARAMEDIC_ID};
use common::proxy::Proxy;

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let waited = tokio::time::timeout(Duration::from_secs(10), async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "never happened: {what}");
}

/// Events the device with `key` uploaded (the server's own trail goes
/// into the archive beside them, each second).
fn archived(srv: &RunningServer, key: &[u8; 32]) -> u64 {
    srv.archive.counts_of(key).unwrap().0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_at_any_point_of_an_upload_loses_no_event_and_stores_none_twice() {
    let dir = tempfile::tempdir().unwrap();
    let Site { srv, store, .. } = site(dir.path()).await;
    let patient = on_caseload(&srv, &store, 81, SharingChoice::CoreAndAdditional);
    let mut nurse = Device::nurse(&srv, dir.path()).await;
    nurse.online().await;
    nurse.settle().await;
    nurse.offline().await;
    // A day of views offline (the patient agreed): more events than one
    // batch holds.
    nurse
        .engine
        .record_permission(&patient, true, true)
        .unwrap();
    for _ in 0..300 {
        nurse
            .engine
            .view(&patient, AccessRequest::with_permission())
            .unwrap();
    }
    let queued = nurse.engine.audit_queue().unwrap();
    // (Her first sync uploaded what she had done until then.)
    let earlier = archived(&srv, &nurse.keys.public());
    assert!(earlier >= 1);
    assert!(queued.len() > MAX_AUDIT_BATCH);
    let (keys, server_key) = (nurse.keys.clone(), srv.server_key);
    let proxy = Proxy::start(srv.sync_addr).await;
    let queue_len = || nurse.engine.audit_queue_len().unwrap();

    // 1. Before sending: the server cannot be reached.
    assert!(
        upload_audit_queue(&nurse.engine, "ws://127.0.0.1:9/sync", &keys, &server_key)
            .await
            .is_err()
    );
    assert_eq!(queue_len(), queued.len() as u64);

    // 2. Sent, but the connection drops before the whole request arrived:
    //    the server cannot commit what it never fully received.
    proxy.cut_after(Some(16 * 1024));
    assert!(
        upload_audit_queue(&nurse.engine, &proxy.url(), &keys, &server_key)
            .await
            .is_err()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(archived(&srv, &nurse.keys.public()), earlier);
    assert_eq!(queue_len(), queued.len() as u64);
    proxy.cut_after(None);

    // 3. The server commits, but the device never reads the acknowledgement.
    let batch = tokio::task::block_in_place(|| next_audit_batch(&nurse.engine)).unwrap();
    assert_eq!(batch.events.len(), MAX_AUDIT_BATCH);
    let mut ch = channel::connect(
        common::ws(proxy.addr).await,
        &keys,
        &server_key,
        &Hello::new(Purpose::Audit, None).encode(),
    )
    .await
    .unwrap();
    ch.send(&serde_json::to_vec(&batch).unwrap()).await.unwrap();
    drop(ch);
    wait_until("the server stores the first batch", || {
        archived(&srv, &nurse.keys.public()) == earlier + MAX_AUDIT_BATCH as u64
    })
    .await;
    assert_eq!(queue_len(), queued.len() as u64, "nothing released");

    // 4. The acknowledgement arrives, and the device crashes before it
    //    releases anything: the same batch again is stored no second time.
    let ack = send_audit_batch(&proxy.url(), &keys, &server_key, &batch)
        .await
        .unwrap();
    assert_eq!((ack.stored, ack.duplicates), (0, MAX_AUDIT_BATCH as u32));
    assert_eq!(ack.through_seq, batch.events.last().unwrap().seq);
    assert_eq!(queue_len(), queued.len() as u64);

    // Then a whole upload: every event once, the chain verified, the
    // device's queue empty.
    let outcome = upload_audit_queue(&nurse.engine, &proxy.url(), &keys, &server_key)
        .await
        .unwrap();
    assert_eq!(outcome.released, queued.len());
    assert_eq!(queue_len(), 0);
    assert_eq!(
        srv.archive.counts_of(&keys.public()).unwrap(),
        (earlier + queued.len() as u64, 0)
    );
    let last = queued.last().unwrap();
    assert_eq!(
        srv.archive.chain(&keys.public()).unwrap(),
        (last.seq, last.hash())
    );
    // What the archive holds about the patient from this queue is exactly
    // the queue's events about her, once each, unaltered.
    let first = queued[0].seq;
    let about: Vec<AuditEvent> = srv
        .archive
        .events_about(&patient)
        .unwrap()
        .into_iter()
        .map(|a| a.event)
        .filter(|e| e.seq >= first)
        .collect();
    let expected: Vec<AuditEvent> = queued
        .iter()
        .filter(|e| e.patient == Some(patient))
        .cloned()
        .collect();
    assert_eq!(about.len(), expected.len());
    assert!(
        about == expected,
        "the archived events differ from those sent"
    );
    assert_eq!(
        srv.metrics.audit_archived.get(),
        earlier + queued.len() as u64
    );
    srv.shutdown().await;
}

fn event(device: &str, seq: u64, prev: &str) -> AuditEvent {
    AuditEvent::from_draft(
        AuditDraft {
            user: "555000000203".into(),
            role: "R1290".into(),
            organisation: "RYA".into(),
            patient: Some(test_nhs_number(82)),
            action: "view".into(),
            compartments: vec![],
            entries: vec![],
            outcome: Outcome::Permit,
            basis: Some("emergency".into()),
            alerts: vec![Alert::new(AlertType::AccessAlert, AlertReason::Emergency).unwrap()],
            detail: None,
        },
        device,
        seq,
        prev.to_owned(),
        scr_core::clock::now_ms(),
    )
}

/// The flags of every archived event about test patient `n`.
fn flags_about(srv: &RunningServer, n: u32) -> Vec<Option<String>> {
    srv.archive
        .events_about(&test_nhs_number(n))
        .unwrap()
        .into_iter()
        .map(|a| a.flag)
        .collect()
}

fn paramedic_login() -> scr_core::protocol::LoginRequest {
    scr_core::protocol::LoginRequest {
        user_id: PARAMEDIC_ID.into(),
        card_serial: "CARD-0203".into(),
        passcode: "sam-1357".into(),
    }
}

fn upload(events: Vec<AuditEvent>, backlog: Backlog) -> AuditUpload {
    AuditUpload {
        format: AUDIT_UPLOAD_FORMAT,
        events,
        backlog,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gaps_forks_and_foreign_events_are_stored_flagged_and_a_revoked_device_still_uploads() {
    let dir = tempfile::tempdir().unwrap();
    let Site { srv, store, .. } = site(dir.path()).await;
    on_incident(&srv, &store, 82, SharingChoice::CoreOnly, "INC-82");
    // The paramedic's tablet, logged in: its grant vouches for her events.
    let keys = common::raw_device(
        &srv,
        "RYA",
        scr_core::retention::DeviceClass::AmbulanceTablet,
        Some(&paramedic_login()),
    )
    .await;
    let url = format!("ws://{}/sync", srv.sync_addr);
    let me = hex_key(&keys.public());
    let send = |events: Vec<AuditEvent>, backlog: Backlog| {
        let (url, keys, server_key) = (url.clone(), &keys, srv.server_key);
        async move { send_audit_batch(&url, keys, &server_key, &upload(events, backlog)).await }
    };

    let e1 = event(&me, 1, GENESIS_HASH);
    let e2 = event(&me, 2, &e1.hash());
    let e3 = event(&me, 3, &e2.hash());
    let e4 = event(&me, 4, &e3.hash());
    let ack = send(vec![e2.clone(), e1.clone()], Backlog::default())
        .await
        .unwrap();
    assert_eq!((ack.stored, ack.flagged, ack.through_seq), (2, 0, 2));
    // e3 never arrives: e4 is a gap.
    let ack = send(vec![e4.clone()], Backlog::default()).await.unwrap();
    assert_eq!((ack.stored, ack.flagged), (1, 1));
    // A second event 2 (a rewritten history) is a fork.
    let forked = event(&me, 2, &e1.hash());
    let ack = send(vec![forked], Backlog::default()).await.unwrap();
    assert_eq!((ack.stored, ack.flagged), (1, 1));
    // An event naming another device is foreign.
    let foreign = event(&"ab".repeat(32), 5, &e4.hash());
    let ack = send(vec![foreign], Backlog::default()).await.unwrap();
    assert_eq!((ack.stored, ack.flagged), (1, 1));
    // An alert pair the rules do not allow does not even decode: the whole
    // batch is refused and nothing of it stored.
    let e5 = event(&me, 5, &e4.hash());
    let mut bad = serde_json::to_value(upload(vec![e5.clone()], Backlog::default())).unwrap();
    bad["events"][0]["alerts"][0]["reason"] = "self-claim-emergency".into();
    let mut ch = channel::connect(
        common::ws(srv.sync_addr).await,
        &keys,
        &srv.server_key,
        &Hello::new(Purpose::Audit, None).encode(),
    )
    .await
    .unwrap();
    ch.send(&serde_json::to_vec(&bad).unwrap()).await.unwrap();
    let reply = String::from_utf8(ch.recv().await.unwrap().unwrap()).unwrap();
    assert!(reply.contains("refused"), "{reply}");
    assert_eq!(srv.archive.counts_of(&keys.public()).unwrap(), (5, 3));
    // The server counts a batch after it has sent the acknowledgement:
    // on a loaded machine the count can trail the reply by a moment.
    let mut counted = srv.metrics.audit_flagged.get();
    for _ in 0..100 {
        if counted == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        counted = srv.metrics.audit_flagged.get();
    }
    assert_eq!(counted, 3);
    let flags = flags_about(&srv, 82);
    assert_eq!(
        flags.iter().flatten().collect::<Vec<_>>(),
        ["gap", "fork", "foreign"]
    );

    // Revoked (a lost tablet), it may still hand over its trail; it may
    // not sync.
    assert!(srv.directory.revoke(&keys.public()).unwrap());
    let two_days_ago = scr_core::clock::now_ms() - 48 * 3600 * 1000;
    let ack = send(
        vec![e5.clone()],
        Backlog {
            queued: 3,
            oldest_ms: Some(two_days_ago),
        },
    )
    .await
    .unwrap();
    assert_eq!((ack.stored, ack.flagged), (1, 0));
    // What it says it did after its revocation is not believed; the
    // forgetting its remote wipe records is.
    let mut late = event(&me, 6, &e5.hash());
    late.wall_time_ms = scr_core::clock::now_ms() + 10 * 60 * 1000;
    let mut wipe = event(&me, 7, &late.hash());
    (wipe.user, wipe.role, wipe.organisation) = ("device".into(), String::new(), String::new());
    (wipe.action, wipe.outcome, wipe.basis) = ("forget".into(), Outcome::Recorded, None);
    wipe.alerts.clear();
    wipe.wall_time_ms = late.wall_time_ms;
    let still_held = Backlog {
        queued: 3,
        oldest_ms: Some(two_days_ago),
    };
    let ack = send(vec![late, wipe], still_held).await.unwrap();
    assert_eq!((ack.stored, ack.flagged), (2, 1));
    let flags = flags_about(&srv, 82);
    assert_eq!(
        flags.iter().flatten().collect::<Vec<_>>(),
        ["gap", "fork", "foreign", "after-revocation"]
    );
    assert!(matches!(
        channel::connect(
            common::ws(srv.sync_addr).await,
            &keys,
            &srv.server_key,
            &Hello::new(Purpose::Sync, None).encode(),
        )
        .await,
        Err(channel::ChannelError::NotAdmitted)
    ));
    // It said it still holds events two days old: overdue in the metrics.
    assert_eq!(
        srv.archive
            .overdue_devices(scr_core::clock::now_ms() - 24 * 3600 * 1000)
            .unwrap(),
        1
    );
    let metrics = common::http_get(srv.health_addr, "/metrics").await;
    assert!(metrics.contains("scr_audit_devices_overdue 1"), "{metrics}");
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emergency_access_offline_reaches_the_paramedics_privacy_officer_on_reconnect() {
    let dir = tempfile::tempdir().unwrap();
    let Site { srv, store, .. } = site(dir.path()).await;
    let patient = on_incident(&srv, &store, 83, SharingChoice::CoreAndAdditional, "INC-5");
    let mut paramedic = Device::paramedic(&srv, dir.path()).await;
    paramedic.online().await;
    paramedic.settle().await;
    paramedic.offline().await;
    // No signal; the patient cannot consent.
    paramedic
        .engine
        .view(&patient, AccessRequest::emergency())
        .unwrap();
    assert!(srv.archive.alerts("RYA", false).unwrap().is_empty());

    paramedic.online().await;
    let pass = paramedic.sync().await;
    assert!(pass.audit.uploaded >= 1 && !pass.audit_failed);
    assert_eq!(paramedic.engine.audit_queue_len().unwrap(), 0);
    let alerts = srv.archive.alerts("RYA", false).unwrap();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(
        alerts[0].alert,
        Alert::new(AlertType::AccessAlert, AlertReason::Emergency).unwrap()
    );
    assert_eq!(alerts[0].event.patient, Some(patient));
    assert_eq!(alerts[0].event.user, PARAMEDIC_ID);
    // Routed to the organisation whose user acted, nowhere else.
    assert!(srv.archive.alerts("RX1", true).unwrap().is_empty());
    paramedic.offline().await;
    srv.shutdown().await;
}
