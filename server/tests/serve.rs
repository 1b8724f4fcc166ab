//! The server over real sockets: a device enrolls with a one-time token,
//! syncs a document over the Noise channel into the sealed server store,
//! and the document survives a restart; strangers, reused or expired
//! tokens and revoked devices are refused; health and metrics answer.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use common::http_get;
use scr_core::Store;
use scr_core::channel::{self, Hello, Purpose, StaticKeypair, hex_key};
use scr_core::crypto::{SecretKey, StaticKeyProvider};
use scr_core::store::SamodStorage;
use scr_server::serve::{RunningServer, ServeConfig, start};

fn hour_from_now() -> i64 {
    scr_core::clock::now_ms() + 3_600_000
}

mod common;

async fn read_visit(repo: &samod::Repo, id: samod::DocumentId) -> Option<String> {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(Some(h)) = repo.find(id.clone()).await {
                let v = h.with_document(|d| {
                    common::notes_of(d)
                        .into_iter()
                        .find(|n| n.contains("dressing"))
                });
                if v.is_some() {
                    return v;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .ok()
    .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_enrolls_logs_in_writes_into_the_sealed_store_and_the_data_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server_dir = dir.path().join("server");
    let srv = common::server(&server_dir).await;
    let server_key = srv.server_key;
    let store = Store::open(
        server_dir.join("server.db"),
        &scr_server::serve::identity::key_provider(&server_dir).unwrap(),
    )
    .unwrap();
    let nhs = scr_core::fixtures::test_nhs_number(7);
    let docs = scr_server::records::load(
        &store,
        &scr_server::records::RecordFile {
            nhs_number: nhs,
            sharing: scr_core::record::SharingChoice::CoreAndAdditional,
            include_sensitive: false,
            entries: vec![],
        },
        "test",
    )
    .unwrap();
    let care: samod::DocumentId = docs
        .iter()
        .find(|(c, _)| *c == scr_core::record::Compartment::CareEvents)
        .unwrap()
        .1
        .parse()
        .unwrap();
    srv.directory
        .add_user(&common::nurse(), common::NURSE_PASSCODE)
        .unwrap();
    scr_server::users::assign(
        &store,
        &srv.directory,
        "555000000102",
        nhs,
        scr_core::grant::RelationshipKind::Caseload,
    )
    .unwrap();
    let token = srv
        .directory
        .create_enrollment_token(
            "RX1",
            scr_core::retention::DeviceClass::NurseTablet,
            hour_from_now(),
        )
        .unwrap();

    let device_keys = Arc::new(StaticKeypair::generate().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/sync", srv.sync_addr))
        .await
        .unwrap();
    drop(
        channel::connect(
            ws,
            &device_keys,
            &server_key,
            &Hello::new(Purpose::Sync, Some(&token)).encode(),
        )
        .await
        .unwrap(),
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/sync", srv.sync_addr))
        .await
        .unwrap();
    let login = common::nurse_login();
    assert!(matches!(
        scr_core::sync::login(ws, &device_keys, &server_key, &login)
            .await
            .unwrap(),
        scr_core::protocol::LoginResponse::Granted { .. }
    ));

    let device_store = Store::open(
        dir.path().join("device.db"),
        &StaticKeyProvider::new(SecretKey::from_bytes([3; 32])),
    )
    .unwrap();
    let device = samod::Repo::build_tokio()
        .with_storage(SamodStorage::new(device_store))
        .with_peer_id(samod::PeerId::from(hex_key(&device_keys.public())))
        .load()
        .await;
    let dialer = device
        .dial(
            samod::BackoffConfig::default(),
            common::dialer(&srv, device_keys.clone()),
        )
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), dialer.established())
        .await
        .unwrap()
        .unwrap();
    let handle = tokio::time::timeout(Duration::from_secs(5), device.find(care.clone()))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let visit = common::nurse_note(&device_keys.public(), "Quillfeather dressing changed");
    handle.with_document(|d| common::put_version(d, &visit));

    assert_eq!(
        read_visit(srv.repo(), care.clone()).await.as_deref(),
        Some("Quillfeather dressing changed")
    );
    assert_eq!(srv.metrics.enrollments.get(), 1);
    let enrolled = srv
        .directory
        .device(&device_keys.public())
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            enrolled.organisation.as_str(),
            enrolled.device_class.as_str()
        ),
        ("RX1", "nurse-tablet")
    );
    device.stop().await;
    srv.shutdown().await;
    drop(store);

    // Restart: same identity, and the change comes back from the sealed store.
    let srv = common::server(&server_dir).await;
    assert_eq!(srv.server_key, server_key);
    assert_eq!(
        read_visit(srv.repo(), care).await.as_deref(),
        Some("Quillfeather dressing changed")
    );
    srv.shutdown().await;
    for entry in std::fs::read_dir(&server_dir).unwrap() {
        // (A SQLite -wal or -shm file may go as a connection closes.)
        let Ok(bytes) = std::fs::read(entry.unwrap().path()) else {
            continue;
        };
        assert!(
            !bytes.windows(12).any(|w| w == b"Quillfeather"),
            "document text in clear on the server"
        );
    }
}

/// Connects a raw channel and reports whether the server kept it open.
async fn admitted(srv: &RunningServer, keys: &StaticKeypair, token: &str) -> bool {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/sync", srv.sync_addr))
        .await
        .unwrap();
    let hello = Hello::new(Purpose::Sync, Some(token).filter(|t| !t.is_empty())).encode();
    let Ok(mut ch) = channel::connect(ws, keys, &srv.server_key, &hello).await else {
        return false;
    };
    // A refused device finds the socket closed at once; an admitted one is
    // handed to samod, which waits for the device to speak first.
    !matches!(
        tokio::time::timeout(Duration::from_secs(1), ch.recv()).await,
        Ok(Ok(None)) | Ok(Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_reused_or_expired_tokens_and_revoked_devices_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let srv = common::server(dir.path()).await;
    let (a, b, c) = (
        StaticKeypair::generate().unwrap(),
        StaticKeypair::generate().unwrap(),
        StaticKeypair::generate().unwrap(),
    );
    assert!(!admitted(&srv, &a, "").await, "no token");
    assert!(!admitted(&srv, &a, "not-a-token").await, "made-up token");
    let token = srv
        .directory
        .create_enrollment_token(
            "RYA",
            scr_core::retention::DeviceClass::AmbulanceTablet,
            hour_from_now(),
        )
        .unwrap();
    assert!(admitted(&srv, &a, &token).await, "fresh token");
    assert!(admitted(&srv, &a, "").await, "enrolled key needs no token");
    assert!(!admitted(&srv, &b, &token).await, "token already used");
    let expired = srv
        .directory
        .create_enrollment_token(
            "RYA",
            scr_core::retention::DeviceClass::AmbulanceTablet,
            scr_core::clock::now_ms() - 1,
        )
        .unwrap();
    assert!(!admitted(&srv, &c, &expired).await, "expired token");
    assert!(srv.directory.revoke(&a.public()).unwrap());
    let fresh = srv
        .directory
        .create_enrollment_token(
            "RYA",
            scr_core::retention::DeviceClass::AmbulanceTablet,
            hour_from_now(),
        )
        .unwrap();
    assert!(
        !admitted(&srv, &a, &fresh).await,
        "a revoked key cannot re-enroll"
    );
    // The server counts a refusal after the device has seen it: wait for it.
    let counted = tokio::time::timeout(Duration::from_secs(5), async {
        while srv.metrics.handshakes_refused.get() < 5 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(counted.is_ok());
    assert_eq!(srv.metrics.handshakes_refused.get(), 5);
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metrics_answer_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let srv = common::server(dir.path()).await;
    let health = http_get(srv.health_addr, "/health").await;
    assert!(
        health.starts_with("HTTP/1.1 200 OK") && health.ends_with("ok\n"),
        "{health}"
    );
    let metrics = http_get(srv.health_addr, "/metrics").await;
    assert!(metrics.contains("scr_enrolled_devices 0"), "{metrics}");
    assert!(
        metrics.contains("scr_storage_failures_total 0"),
        "{metrics}"
    );
    assert!(
        http_get(srv.health_addr, "/nope")
            .await
            .starts_with("HTTP/1.1 404")
    );

    // A device runs one sync session: a new one ends any it left behind,
    // so sessions never pile up, however often a client reconnects.
    let keys = StaticKeypair::generate().unwrap();
    let token = srv
        .directory
        .create_enrollment_token(
            "RX1",
            scr_core::retention::DeviceClass::NurseTablet,
            hour_from_now(),
        )
        .unwrap();
    common::enroll(&srv, &keys, &token).await;
    let hello = channel::Hello::new(channel::Purpose::Sync, None).encode();
    let mut sessions = Vec::new();
    for _ in 0..5 {
        let ch = channel::PlainSession::open(
            channel::connect(
                common::ws(srv.sync_addr).await,
                &keys,
                &srv.server_key,
                &hello,
            )
            .await
            .unwrap(),
        )
        .await
        .unwrap();
        sessions.push(ch);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let metrics = http_get(srv.health_addr, "/metrics").await;
    // (The enrollment's own connection was a session too.)
    assert!(metrics.contains("scr_sync_sessions_total 6"), "{metrics}");
    assert!(metrics.contains("scr_sync_sessions_open 1"), "{metrics}");
    assert!(metrics.contains("scr_sync_bytes_sent_total"), "{metrics}");
    assert!(
        metrics.contains("scr_audit_backlog 1"),
        "the enrollment: {metrics}"
    );
    // The older ones were ended: their connections close.
    let first = sessions.first_mut().unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), first.recv()).await;
    assert!(
        matches!(closed, Ok(Ok(None)) | Ok(Err(_))),
        "an older session is closed"
    );
    drop(sessions);
    srv.shutdown().await;
}

#[tokio::test]
async fn a_store_without_its_key_file_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    common::server(dir.path()).await.shutdown().await;
    std::fs::remove_file(dir.path().join("server.key")).unwrap();
    let err = start(ServeConfig::on_loopback(dir.path()))
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("server.key is missing"), "{err}");
}

#[test]
fn admin_commands_give_a_token_or_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let run = |args: &[&str]| common::admin::as_operator(d, args, "");
    let ok = run(&[
        "admin",
        "enroll-token",
        "--data-dir",
        d,
        "--org",
        "RX1",
        "--class",
        "nurse-tablet",
    ]);
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{stdout}");
    assert!(
        stdout.contains("enrollment token: ") && stdout.contains("server key"),
        "{stdout}"
    );
    let bad = run(&[
        "admin",
        "enroll-token",
        "--data-dir",
        d,
        "--org",
        "RX1",
        "--class",
        "toaster",
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown device class"));
    let missing = run(&[
        "admin",
        "enroll-token",
        "--data-dir",
        d,
        "--class",
        "nurse-tablet",
    ]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("--org is required"));
    let revoke = run(&["admin", "revoke-device", "--data-dir", d, "--key", "zz"]);
    assert!(String::from_utf8_lossy(&revoke.stderr).contains("64 hex digits"));
    let nobody = run(&["admin", "revoke-user", "--data-dir", d, "--user-id", "42"]);
    assert!(!nobody.status.success());
    assert!(String::from_utf8_lossy(&nobody.stderr).contains("no such user"));

    let add = common::admin::as_operator(
        d,
        &[
            "admin",
            "add-user",
            "--data-dir",
            d,
            "--user-id",
            "555000000102",
            "--name",
            "Jo Nurse",
            "--org",
            "RX1",
            "--job-role",
            "R0050",
            "--role-name",
            "Community Nurse",
            "--activities",
            "B0264,B0370,B0380",
            "--card-serial",
            "CARD-1",
        ],
        "jo-2468\n",
    );
    assert!(add.status.success(), "{}", common::admin::text(&add));
    let assigned = run(&[
        "admin",
        "assign",
        "--data-dir",
        d,
        "--user-id",
        "555000000102",
        "--nhs",
        "943 476 5919",
        "--kind",
        "caseload",
    ]);
    assert!(
        assigned.status.success(),
        "{}",
        String::from_utf8_lossy(&assigned.stderr)
    );
    let bad_nhs = run(&[
        "admin",
        "assign",
        "--data-dir",
        d,
        "--user-id",
        "555000000102",
        "--nhs",
        "9434765918",
        "--kind",
        "caseload",
    ]);
    assert!(String::from_utf8_lossy(&bad_nhs.stderr).contains("check digit"));
    // Without --nhs the number comes on standard input.
    let piped = common::admin::as_operator(
        d,
        &[
            "admin",
            "assign",
            "--data-dir",
            d,
            "--user-id",
            "555000000102",
            "--kind",
            "referral",
        ],
        "943 476 5919\n",
    );
    assert!(piped.status.success());
    let nobody = run(&[
        "admin",
        "assign",
        "--data-dir",
        d,
        "--user-id",
        "1",
        "--nhs",
        "9434765919",
        "--kind",
        "caseload",
    ]);
    assert!(String::from_utf8_lossy(&nobody.stderr).contains("no such user"));
    let ended = run(&[
        "admin",
        "unassign",
        "--data-dir",
        d,
        "--user-id",
        "555000000102",
        "--nhs",
        "9434765919",
    ]);
    assert!(String::from_utf8_lossy(&ended.stdout).contains("relationship ended"));
    let set = |choice: &str| {
        run(&[
            "admin",
            "set-choice",
            "--data-dir",
            d,
            "--nhs",
            "9434765919",
            "--choice",
            choice,
        ])
    };
    assert!(String::from_utf8_lossy(&set("maybe").stderr).contains("--choice is core-only"));
    assert!(
        String::from_utf8_lossy(&set("core-only").stderr).contains("holds no record"),
        "a choice for a patient the server does not hold is refused"
    );

    let store = scr_core::Store::open(
        dir.path().join("server.db"),
        &scr_server::serve::identity::key_provider(dir.path()).unwrap(),
    )
    .unwrap();
    let actions: Vec<String> = store
        .queued_audit_events()
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    // Every action left an audit event, refusals too, in one chain.
    assert_eq!(
        actions,
        [
            "admin-add-operator",
            "admin-enroll-token",
            "admin-refused",
            "admin-refused",
            "admin-add-user",
            "admin-assign",
            "admin-refused",
            "admin-assign",
            "admin-refused",
            "admin-unassign",
            "admin-refused",
        ]
    );
    assert_eq!(store.verify_audit_chain().unwrap(), Ok(()));
}
