//! The catalogue before samod (ADR 0016, part 2). A restarted tablet finds
//! its unchanged caseload in step in one exchange, with no document through
//! samod; a change made later by another device still reaches it without a
//! pass of its own (the server bumps its notice); and a modified app with a
//! valid grant that names records it may not hold learns nothing of them,
//! while malformed asks are refused by name (overlapping asks end the
//! session: `channel::session` tests).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use scr_core::NhsNumber;
use scr_core::access::AccessRequest;
use scr_core::channel::{self, Hello, Purpose, StaticKeypair};
use scr_core::protocol::{
    Ask, CATALOGUE_FORMAT, CatalogueReply, CatalogueRequest, FetchAnswer, FetchRequest, Fetched,
    RecordDigest, record_digest,
};
use scr_core::record::SharingChoice;
use scr_core::retention::DeviceClass;

mod common;
use common::device::{Device, visit};
use common::site::{on_caseload, on_incident, site};

/// The tablet's documents of `nhs` with their heads, as it holds them.
fn held(device: &Device, nhs: &NhsNumber) -> Vec<(String, Vec<automerge::ChangeHash>)> {
    device
        .engine
        .held_records()
        .unwrap()
        .into_iter()
        .filter(|r| r.nhs == *nhs)
        .flat_map(|r| r.docs.into_iter().map(|(d, h)| (d.doc_id, h)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_tablet_finds_its_caseload_in_step_at_once_and_later_changes_still_reach_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = site(dir.path()).await;
    for n in 1..=4 {
        on_caseload(&s.srv, &s.store, n, SharingChoice::CoreAndAdditional);
    }
    let patient = on_incident(
        &s.srv,
        &s.store,
        1,
        SharingChoice::CoreAndAdditional,
        "INC-5",
    );
    let mut nurse = Device::nurse(&s.srv, dir.path()).await;
    let mut paramedic = Device::paramedic(&s.srv, dir.path()).await;
    nurse.online().await;
    nurse.settle().await;
    nurse
        .engine
        .record_permission(&patient, true, true)
        .unwrap();
    let first = nurse.settle().await;
    assert!(first.documents >= 16 && first.in_step == first.documents);
    paramedic.online().await;
    paramedic.settle().await;

    // The app restarts: a fresh session, nothing changed anywhere.
    nurse.offline().await;
    let sessions = s.srv.metrics.sync_sessions.get();
    nurse.online().await;
    let restart = nurse.sync().await;
    assert!(
        s.srv.metrics.sync_sessions.get() > sessions,
        "a fresh session"
    );
    assert_eq!(restart.in_step, restart.documents);
    assert_eq!(restart.documents, first.documents);
    assert_eq!(
        restart.synced, 0,
        "no document went through samod: {restart:?}"
    );

    // The paramedic writes to a record the nurse holds but did not sync on
    // this session. No pass of the nurse's is asked for: the server must
    // tell her tablet (her refresh is a minute away).
    let before = held(&nurse, &patient);
    paramedic
        .engine
        .add_entry(
            &patient,
            visit("paramedic: found on the floor"),
            false,
            None,
        )
        .unwrap();
    let pushed = paramedic.settle().await;
    assert_eq!(pushed.in_step, pushed.documents);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while held(&nurse, &patient) == before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the paramedic's change never reached the nurse's tablet"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let notes = nurse.notes(&patient, AccessRequest::with_permission());
    assert!(
        notes.contains(&"paramedic: found on the floor".to_owned()),
        "{notes:?}"
    );
    // And the nurse's own next edit goes up and comes back in step.
    nurse
        .engine
        .add_entry(&patient, visit("nurse: seen after the fall"), false, None)
        .unwrap();
    let edited = nurse.settle().await;
    assert_eq!(edited.in_step, edited.documents);
    assert!(edited.synced > 0 && edited.synced < edited.documents);
    nurse.offline().await;
    paramedic.offline().await;
}

/// A sync session spoken by hand, as a modified app would.
async fn session(
    s: &common::site::Site,
    keys: &StaticKeypair,
) -> channel::PlainSession<impl channel::WebSocket + use<>> {
    let hello = Hello::new(Purpose::Sync, None);
    let ch = channel::connect(
        common::ws(s.srv.sync_addr).await,
        keys,
        &s.srv.server_key,
        &hello.encode(),
    )
    .await
    .unwrap();
    channel::PlainSession::open(ch).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_modified_app_naming_records_it_may_not_hold_learns_nothing_of_them() {
    let dir = tempfile::tempdir().unwrap();
    let s = site(dir.path()).await;
    let theirs = on_caseload(&s.srv, &s.store, 21, SharingChoice::CoreAndAdditional);
    let mine = on_incident(
        &s.srv,
        &s.store,
        22,
        SharingChoice::CoreAndAdditional,
        "INC-9",
    );
    // The paramedic's tablet, logged in: a valid grant for patient 22 only.
    let keys = common::raw_device(
        &s.srv,
        "RYA",
        DeviceClass::AmbulanceTablet,
        Some(&scr_core::protocol::LoginRequest {
            user_id: common::device::PARAMEDIC_ID.into(),
            card_serial: "CARD-0203".into(),
            passcode: "sam-1357".into(),
        }),
    )
    .await;
    // It names the nurse's patient's documents, once with the digest the
    // server's own copy has (as if it held them in step) and once with a
    // made-up one, hoping to learn their heads or confirm their state.
    let docs = s.store.documents_of_record(&theirs).unwrap();
    let true_digest = {
        let with_heads: Vec<_> = docs
            .iter()
            .map(|d| {
                let bytes = s.store.document_bytes(&d.doc_id).unwrap();
                let heads = automerge::Automerge::load(&bytes).unwrap().get_heads();
                (d.doc_id.clone(), heads)
            })
            .collect();
        record_digest(&with_heads)
    };
    let key = docs.iter().map(|d| d.doc_id.clone()).min().unwrap();
    let mut ch = session(&s, &keys).await;
    let mut shared_with_it = Vec::new();
    for digest in [true_digest, "0".repeat(32)] {
        let request = CatalogueRequest {
            format: CATALOGUE_FORMAT,
            list: None,
            records: vec![RecordDigest {
                doc: key.clone(),
                digest,
            }],
        };
        let answer = ch.ask(1, &Ask::Catalogue(request).encode()).await.unwrap();
        let text = String::from_utf8_lossy(&answer).into_owned();
        for d in &docs {
            assert!(!text.contains(&d.doc_id), "an unshared document named");
        }
        let CatalogueReply::Answered {
            list, differing, ..
        } = CatalogueReply::decode(&answer).unwrap()
        else {
            panic!("not answered: {text}");
        };
        // What it may hold, it is told of: its own patient, in full.
        let list = list.expect("the list, since it named none");
        let listed: Vec<_> = list.patients.iter().map(|p| p.nhs_number).collect();
        assert_eq!(listed, vec![mine]);
        let own: Vec<_> = s
            .store
            .documents_of_record(&mine)
            .unwrap()
            .into_iter()
            .map(|d| d.doc_id)
            .collect();
        let mut told: Vec<_> = differing.into_iter().map(|d| d.doc).collect();
        told.sort();
        let mut expected = own.clone();
        expected.retain(|d| list.patients[0].documents.iter().any(|l| &l.doc_id == d));
        expected.sort();
        assert_eq!(told, expected);
        shared_with_it = expected;
    }

    // Malformed asks are refused by name, and the session goes on.
    for (bad, named) in [
        (b"not json".to_vec(), "ask"),
        (
            br#"{"ask":"catalogue","format":1,"records":[{"doc":"x","digest":"short"}]}"#.to_vec(),
            "record digest",
        ),
    ] {
        let answer = ch.ask(2, &bad).await.unwrap();
        match CatalogueReply::decode(&answer).unwrap() {
            CatalogueReply::Refused { reason } => assert!(reason.contains(named), "{reason}"),
            other => panic!("answered a malformed ask: {other:?}"),
        }
    }
    let huge = vec![b' '; scr_core::protocol::MAX_CATALOGUE_REQUEST + 1];
    let answer = ch.ask(3, &huge).await.unwrap();
    assert!(matches!(
        CatalogueReply::decode(&answer).unwrap(),
        CatalogueReply::Refused { .. }
    ));

    // The fetch: the nurse's patient's documents are withheld, every one,
    // with no byte of them; its own patient's come as the server stores
    // them (those the share policy gives it: not every compartment).
    let own = s.store.documents_of_record(&mine).unwrap();
    let mut asked: Vec<String> = docs.iter().map(|d| d.doc_id.clone()).collect();
    asked.extend(own.iter().map(|d| d.doc_id.clone()));
    let answer = ch
        .ask(
            4,
            &Ask::Fetch(FetchRequest {
                docs: asked.clone(),
            })
            .encode(),
        )
        .await
        .unwrap();
    let FetchAnswer::Documents(got) = FetchAnswer::decode(&answer).unwrap() else {
        panic!("the fetch was refused");
    };
    assert_eq!(got.len(), asked.len());
    for f in got {
        match f {
            Fetched::Withheld { doc } => {
                assert!(!shared_with_it.contains(&doc), "its own withheld")
            }
            Fetched::Bytes { doc, bytes } => {
                assert!(shared_with_it.contains(&doc), "an unshared document sent");
                let stored = s.store.document_bytes(&doc).unwrap();
                let heads = |b: &[u8]| automerge::Automerge::load(b).unwrap().get_heads();
                assert_eq!(heads(&bytes), heads(&stored));
            }
        }
    }
    // A fetch naming too many documents is refused by name.
    let many = format!(
        r#"{{"ask":"fetch","docs":[{}]}}"#,
        vec!["\"d\""; scr_core::protocol::MAX_FETCH_DOCS + 1].join(",")
    );
    let answer = ch.ask(5, many.as_bytes()).await.unwrap();
    assert!(matches!(
        CatalogueReply::decode(&answer).unwrap(),
        CatalogueReply::Refused { .. }
    ));
}
