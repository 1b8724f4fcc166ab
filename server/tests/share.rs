//! Least-privilege replication: a nurse's tablet receives only the
//! compartments her grant and the patient's choices allow, of only her
//! caseload's patients; a push to a compartment she may not write is not
//! merged, while her care-event writes are.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use automerge::transaction::Transactable;
use scr_core::channel::{self, Hello, Purpose, StaticKeypair, hex_key};
use scr_core::fixtures::{sample_entry, test_nhs_number};
use scr_core::grant::RelationshipKind;
use scr_core::protocol::{LoginRequest, LoginResponse};
use scr_core::record::Compartment;
use scr_server::records::{FileEntry, RecordFile, load};
use scr_server::serve::RunningServer;
use scr_server::users::assign;

mod common;

fn record(n: u32, sharing: scr_core::record::SharingChoice) -> RecordFile {
    RecordFile {
        nhs_number: test_nhs_number(n),
        sharing,
        include_sensitive: false,
        entries: vec![
            FileEntry {
                sensitive: false,
                content: sample_entry(0),
            },
            FileEntry {
                sensitive: false,
                content: sample_entry(3),
            },
            FileEntry {
                sensitive: false,
                content: sample_entry(7),
            },
            FileEntry {
                sensitive: true,
                content: sample_entry(13),
            },
        ],
    }
}

fn doc(docs: &[(Compartment, String)], c: Compartment) -> samod::DocumentId {
    docs.iter()
        .find(|(k, _)| *k == c)
        .unwrap()
        .1
        .parse()
        .unwrap()
}

async fn received(repo: &samod::Repo, id: samod::DocumentId) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(3), repo.find(id)).await,
        Ok(Ok(Some(_)))
    )
}

async fn server_has_key(srv: &RunningServer, id: samod::DocumentId, key: &str) -> bool {
    let handle = srv.repo().find(id).await.unwrap().unwrap();
    handle.with_document(|d| {
        use automerge::ReadDoc;
        let in_versions = d
            .get(automerge::ROOT, "versions")
            .ok()
            .flatten()
            .is_some_and(|(_, vs)| d.get(&vs, key).ok().flatten().is_some());
        in_versions || d.get(automerge::ROOT, key).ok().flatten().is_some()
    })
}

async fn server_put(srv: &RunningServer, id: samod::DocumentId, key: &str) {
    let handle = srv.repo().find(id).await.unwrap().unwrap();
    handle.with_document(|d| {
        let mut tx = d.transaction();
        tx.put(automerge::ROOT, key, "x").unwrap();
        tx.commit();
    });
}

async fn device_sees(device: &samod::Repo, id: samod::DocumentId, key: &str, secs: u64) -> bool {
    let handle = device.find(id).await.unwrap().unwrap();
    tokio::time::timeout(Duration::from_secs(secs), async {
        loop {
            let seen = handle.with_document(|d| {
                use automerge::ReadDoc;
                d.get(automerge::ROOT, key).ok().flatten().is_some()
            });
            if seen {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tablet_receives_exactly_what_its_user_may_see_and_cannot_write_core() {
    let dir = tempfile::tempdir().unwrap();
    let server_dir = dir.path().join("server");
    let srv = common::server(&server_dir).await;
    let store = common::server_store(&server_dir);
    let on_caseload = load(
        &store,
        &record(41, scr_core::record::SharingChoice::CoreAndAdditional),
        "test",
    )
    .unwrap();
    let core_only = load(
        &store,
        &record(42, scr_core::record::SharingChoice::CoreOnly),
        "test",
    )
    .unwrap();
    let stranger = load(
        &store,
        &record(43, scr_core::record::SharingChoice::CoreAndAdditional),
        "test",
    )
    .unwrap();
    let opted_out = load(
        &store,
        &record(44, scr_core::record::SharingChoice::OptOut),
        "test",
    )
    .unwrap();

    srv.directory
        .add_user(&common::nurse(), common::NURSE_PASSCODE)
        .unwrap();
    for n in [41, 42, 44] {
        assign(
            &store,
            &srv.directory,
            "555000000102",
            test_nhs_number(n),
            RelationshipKind::Caseload,
        )
        .unwrap();
    }

    // Enroll the tablet and log the nurse in (the server records her grant).
    let tablet = Arc::new(StaticKeypair::generate().unwrap());
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
    drop(
        channel::connect(
            ws().await,
            &tablet,
            &srv.server_key,
            &Hello::new(Purpose::Sync, Some(&token)).encode(),
        )
        .await
        .unwrap(),
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let login = LoginRequest {
        user_id: "555000000102".into(),
        card_serial: "CARD-0001".into(),
        passcode: "jo-2468".into(),
    };
    assert!(matches!(
        scr_core::sync::login(ws().await, &tablet, &srv.server_key, &login)
            .await
            .unwrap(),
        LoginResponse::Granted { .. }
    ));

    let device = samod::Repo::build_tokio()
        .with_peer_id(samod::PeerId::from(hex_key(&tablet.public())))
        .load()
        .await;
    let dialer = device
        .dial(
            samod::BackoffConfig::default(),
            common::dialer(&srv, tablet.clone()),
        )
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), dialer.established())
        .await
        .unwrap()
        .unwrap();

    // Her caseload patient who shares core + additional: those, not sensitive.
    assert!(received(&device, doc(&on_caseload, Compartment::Core)).await);
    assert!(received(&device, doc(&on_caseload, Compartment::Additional)).await);
    assert!(received(&device, doc(&on_caseload, Compartment::CareEvents)).await);
    assert!(!received(&device, doc(&on_caseload, Compartment::Sensitive)).await);
    // A core-only patient: never the additional compartment.
    assert!(received(&device, doc(&core_only, Compartment::Core)).await);
    assert!(!received(&device, doc(&core_only, Compartment::Additional)).await);
    // A patient who opted out: nothing, even on her caseload.
    assert!(!received(&device, doc(&opted_out, Compartment::Core)).await);
    // A patient outside her relationships: nothing.
    assert!(!received(&device, doc(&stranger, Compartment::Core)).await);

    // Writes: care events merge; a push to core (read-only for a nurse) does not.
    // (The care event is an honest version, as her engine writes it.)
    let visit = common::nurse_note(&tablet.public(), "nurse-visit");
    let handle = device
        .find(doc(&on_caseload, Compartment::CareEvents))
        .await
        .unwrap()
        .unwrap();
    handle.with_document(|d| common::put_version(d, &visit));
    let handle = device
        .find(doc(&on_caseload, Compartment::Core))
        .await
        .unwrap()
        .unwrap();
    handle.with_document(|d| {
        let mut tx = d.transaction();
        tx.put(automerge::ROOT, "nurse-tamper", "x").unwrap();
        tx.commit();
    });
    let merged = tokio::time::timeout(Duration::from_secs(10), async {
        while !server_has_key(
            &srv,
            doc(&on_caseload, Compartment::CareEvents),
            &visit.version_id.to_string(),
        )
        .await
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(merged.is_ok(), "the care-event write reached the server");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !server_has_key(&srv, doc(&on_caseload, Compartment::Core), "nurse-tamper").await,
        "core stayed read-only"
    );
    // (samod itself stops offering changes to a peer that never answers
    // them; a client that pushes anyway is tests/hostile_push.rs.)

    // Live: a server-side change reaches the connected tablet...
    let core41 = doc(&on_caseload, Compartment::Core);
    server_put(&srv, core41.clone(), "server-note-1").await;
    assert!(
        device_sees(&device, core41.clone(), "server-note-1", 5).await,
        "control: changes flow"
    );
    // ...until the relationship ends while the tablet stays connected:
    // within a couple of seconds the open share is re-decided and stops.
    scr_server::users::unassign(&store, "555000000102", test_nhs_number(41)).unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    server_put(&srv, core41.clone(), "server-note-2").await;
    assert!(
        !device_sees(&device, core41, "server-note-2", 2).await,
        "no more changes after the relationship ended"
    );
    assert!(!received(&device, doc(&on_caseload, Compartment::PatientEntered)).await);
    assert!(
        received(&device, doc(&core_only, Compartment::PatientEntered)).await,
        "others still shared"
    );

    device.stop().await;
    srv.shutdown().await;
}
