//! Devices syncing through the engine's background driver, over real
//! sockets: a nurse's and a paramedic's tablets edit one patient offline and
//! converge in either order with both contributions kept; a device learns
//! from its holdings list what to hold, never receives what it may not see,
//! and forgets a patient who leaves its caseload.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use scr_core::access::AccessRequest;
use scr_core::channel::hex_key;
use scr_core::fixtures::test_nhs_number;
use scr_core::grant::RelationshipKind;
use scr_core::record::{Compartment, SharingChoice};
use scr_core::sync::SyncState;
use scr_core::{NhsNumber, Store};
use scr_server::records::load;
use scr_server::serve::RunningServer;
use scr_server::users::{assign, unassign};

mod common;

use common::device::{Device, PARAMEDIC_ID, paramedic, record, visit};

struct World {
    _dir: tempfile::TempDir,
    srv: RunningServer,
    store: Store,
    nurse: Device,
    paramedic: Device,
}

async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let server_dir = dir.path().join("server");
    let srv = common::server(&server_dir).await;
    let store = common::server_store(&server_dir);
    load(
        &store,
        &record(61, SharingChoice::CoreAndAdditional),
        "test",
    )
    .unwrap();
    load(&store, &record(62, SharingChoice::CoreOnly), "test").unwrap();
    load(
        &store,
        &record(63, SharingChoice::CoreAndAdditional),
        "test",
    )
    .unwrap();
    srv.directory
        .add_user(&common::nurse(), common::NURSE_PASSCODE)
        .unwrap();
    srv.directory.add_user(&paramedic(), "sam-1357").unwrap();
    for n in [61, 62] {
        assign(
            &store,
            &srv.directory,
            common::NURSE_ID,
            test_nhs_number(n),
            RelationshipKind::Caseload,
        )
        .unwrap();
    }
    assign(
        &store,
        &srv.directory,
        PARAMEDIC_ID,
        test_nhs_number(61),
        RelationshipKind::Incident {
            incident_id: "INC-77".into(),
        },
    )
    .unwrap();
    let nurse = Device::nurse(&srv, dir.path()).await;
    let paramedic = Device::paramedic(&srv, dir.path()).await;
    World {
        _dir: dir,
        srv,
        store,
        nurse,
        paramedic,
    }
}

async fn offline_edits_converge(nurse_first: bool) {
    let mut w = world().await;
    let patient = test_nhs_number(61);
    w.nurse.online().await;
    w.paramedic.online().await;
    // (The pass a connection starts may be the one that receives them.)
    w.nurse.settle().await;
    w.paramedic.settle().await;
    assert!(w.nurse.engine.holds(&patient).unwrap());
    assert!(w.paramedic.engine.holds(&patient).unwrap());

    // Both lose signal and write a visit summary for the same patient.
    w.nurse.offline().await;
    w.paramedic.offline().await;
    w.nurse
        .engine
        .record_permission(&patient, true, true)
        .unwrap();
    w.nurse
        .engine
        .add_entry(&patient, visit("nurse: dressing changed"), false, None)
        .unwrap();
    w.paramedic
        .engine
        .add_entry(&patient, visit("paramedic: fall, no injury"), false, None)
        .unwrap();

    // Back online one after the other, in the order given.
    let (a, b) = if nurse_first {
        (&mut w.nurse, &mut w.paramedic)
    } else {
        (&mut w.paramedic, &mut w.nurse)
    };
    // (Each settles: on a loaded machine one pass may not finish pushing.)
    a.online().await;
    a.settle().await;
    b.online().await;
    b.settle().await;
    let both = vec![
        "Visit 7: leg ulcer dressing changed, healing well.".to_owned(),
        "nurse: dressing changed".to_owned(),
        "paramedic: fall, no injury".to_owned(),
    ];
    // A pass is "in step" with the heads the server last reported, so the
    // first tablet's pass can end before the server has forwarded what the
    // second just pushed: wait (bounded) for the notes themselves. Each
    // tablet's own note is never missing from its own view, not even for
    // a moment; a note really lost never comes, and the bound fails it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (nurse_sees, paramedic_sees) = loop {
        let first = if nurse_first { &w.nurse } else { &w.paramedic };
        let last = first.settle().await;
        let nurse_sees = w.nurse.notes(&patient, AccessRequest::with_permission());
        let paramedic_sees = w.paramedic.notes(&patient, AccessRequest::emergency());
        assert!(
            nurse_sees.contains(&both[1]),
            "the nurse's own note: {nurse_sees:?}"
        );
        assert!(
            paramedic_sees.contains(&both[2]),
            "the paramedic's own note: {paramedic_sees:?}"
        );
        let converged = nurse_sees == both && paramedic_sees == both;
        if (converged && last.in_step == last.documents) || tokio::time::Instant::now() > deadline {
            break (nurse_sees, paramedic_sees);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(nurse_sees, both, "the nurse's tablet holds both notes");
    assert_eq!(
        paramedic_sees, both,
        "the paramedic's tablet holds both notes"
    );
    w.nurse.offline().await;
    w.paramedic.offline().await;
    w.srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_edits_converge_when_the_nurse_reconnects_first() {
    offline_edits_converge(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_edits_converge_when_the_paramedic_reconnects_first() {
    offline_edits_converge(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_holds_what_its_list_names_and_forgets_a_patient_who_leaves() {
    let mut w = world().await;
    let (on_list, core_only, stranger) = (
        test_nhs_number(61),
        test_nhs_number(62),
        test_nhs_number(63),
    );
    w.nurse.online().await;
    let summary = w.nurse.sync().await;
    assert_eq!(summary.documents, 10, "two caseload patients arrived");
    assert_eq!(summary.in_step, summary.documents, "every document in step");
    assert!(matches!(
        w.nurse.sync.as_ref().unwrap().state(),
        SyncState::Idle { .. }
    ));

    // Core + additional, not sensitive; core only: no additional; a
    // patient outside her relationships: nothing at all.
    use Compartment::*;
    assert_eq!(
        w.nurse.compartments(&on_list),
        vec![
            Core,
            Additional,
            CareEvents,
            PatientEntered,
            Governance,
            Permissions
        ]
    );
    assert_eq!(
        w.nurse.compartments(&core_only),
        vec![Core, PatientEntered, Governance, Permissions]
    );
    assert!(!w.nurse.engine.holds(&stranger).unwrap());
    let traffic = &w.srv.metrics.traffic;
    assert!(traffic.sent.load(std::sync::atomic::Ordering::Relaxed) > 0);
    assert!(traffic.received.load(std::sync::atomic::Ordering::Relaxed) > 0);
    // What arrived is readable through the engine, gated and audited.
    w.nurse
        .engine
        .record_permission(&on_list, true, true)
        .unwrap();
    let notes = w.nurse.notes(&on_list, AccessRequest::with_permission());
    assert_eq!(notes.len(), 1);

    // The patient leaves her caseload: on the next sync the tablet forgets
    // them (crypto-shred) and says so in its audit queue.
    w.nurse.sync().await;
    unassign(&w.store, common::NURSE_ID, on_list).unwrap();
    // (A pass the new list itself triggers may be the one that forgets; a
    // pass that started before the list changed waits out `pass_wait` for
    // the documents the server stopped sharing.)
    tokio::time::timeout(Duration::from_secs(45), async {
        while w.nurse.engine.holds(&on_list).unwrap() {
            w.nurse.sync().await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the tablet forgot the patient");
    assert!(w.nurse.engine.holds(&core_only).unwrap(), "others stay");
    let forget_events = w
        .nurse
        .trail(&w.srv, &on_list)
        .into_iter()
        .filter(|e| e.action == "forget" && e.patient == Some(on_list))
        .count();
    assert_eq!(forget_events, 1);
    // What the tablet syncs to learn of list changes is a counter: no
    // patient it ever listed is in that document's history.
    let notice = w.nurse.engine.holdings_document().unwrap().unwrap();
    let handle = w
        .srv
        .repo()
        .find(notice.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    let history = handle.with_document(|d| d.save_nocompress());
    for nhs in [on_list, core_only] {
        let digits = nhs.digits();
        assert!(
            !history
                .windows(digits.len())
                .any(|w| w == digits.as_bytes()),
            "an NHS number in the notice's history"
        );
    }
    let bumped = tokio::time::timeout(Duration::from_secs(10), async {
        while handle.with_document(|d| scr_core::protocol::read_notice(d).unwrap().unwrap()) < 2 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(bumped.is_ok(), "the notice is bumped when the list changes");
    w.nurse.offline().await;
    w.srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_device_shows_why_uploads_its_trail_and_wipes_itself() {
    let mut w = world().await;
    let patient = test_nhs_number(61);
    w.nurse.online().await;
    w.nurse.settle().await;
    w.nurse.offline().await;
    // The tablet is lost after a view nobody has uploaded yet.
    w.nurse
        .engine
        .record_permission(&patient, true, true)
        .unwrap();
    w.nurse
        .engine
        .view(&patient, AccessRequest::with_permission())
        .unwrap();
    let held: Vec<_> = [61, 62]
        .into_iter()
        .map(test_nhs_number)
        .filter(|n| w.nurse.engine.holds(n).unwrap())
        .collect();
    assert_eq!(held.len(), 2);
    assert!(w.srv.directory.revoke(&w.nurse.keys.public()).unwrap());

    w.nurse.online().await;
    let mut state = w.nurse.sync.as_ref().unwrap().watch();
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let SyncState::Connecting {
                attempt,
                last_error: Some(cause),
            } = &*state.borrow_and_update()
                && *attempt >= 1
            {
                return cause.clone();
            }
            state.changed().await.unwrap();
        }
    })
    .await
    .expect("the state names the refusal");
    assert!(seen.contains("refused"), "{seen}");
    // It hands over its trail, is told it was revoked, forgets every
    // patient, and reports that it did.
    tokio::time::timeout(Duration::from_secs(30), async {
        while held.iter().any(|n| w.nurse.engine.holds(n).unwrap())
            || w.nurse.engine.audit_queue_len().unwrap() > 0
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the revoked tablet wipes itself and uploads the record of it");
    let me = hex_key(&w.nurse.keys.public());
    for nhs in &held {
        let trail: Vec<_> = w
            .srv
            .archive
            .events_about(nhs)
            .unwrap()
            .into_iter()
            .map(|a| a.event)
            .filter(|e| e.device == me)
            .collect();
        assert!(
            trail
                .iter()
                .any(|e| e.action == "forget" && e.detail.as_deref() == Some("remote-wipe")),
            "{trail:?}"
        );
    }
    let views = w
        .srv
        .archive
        .events_about(&patient)
        .unwrap()
        .into_iter()
        .filter(|a| a.event.device == me && a.event.action == "view")
        .count();
    assert_eq!(views, 1, "the view before the loss reached the server");
    w.nurse.offline().await;
    w.srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_with_unsent_changes_is_kept_when_it_leaves_the_list() {
    let mut w = world().await;
    let patient = test_nhs_number(61);
    w.nurse.online().await;
    w.nurse.sync().await;
    w.nurse.offline().await;
    // Offline, she writes a visit summary; meanwhile the patient leaves her
    // caseload.
    w.nurse
        .engine
        .add_entry(&patient, visit("nurse: late visit"), false, None)
        .unwrap();
    unassign(&w.store, common::NURSE_ID, patient).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // And the app restarts: what was edited since the last pass is known
    // only from the persisted unsent set now. A record the server no longer
    // lists is never compared, so no pass may take it as confirmed.
    w.nurse.restart().await;

    w.nurse.online().await;
    let mut kept = 0;
    for _ in 0..3 {
        kept = kept.max(w.nurse.sync().await.holdings.kept_unsent);
    }
    let status = w
        .nurse
        .engine
        .record_sync_statuses()
        .unwrap()
        .into_iter()
        .find(|s| s.nhs_number == patient)
        .expect("still held");
    assert!(
        status.unsent,
        "her note never reached the server: {status:?}"
    );
    assert_eq!(
        kept, 1,
        "the list no longer names her, but her note is unsent"
    );
    assert!(
        w.nurse.engine.holds(&patient).unwrap(),
        "nothing she wrote is lost"
    );
    w.nurse
        .engine
        .record_permission(&patient, false, true)
        .unwrap();
    assert!(
        w.nurse
            .notes(&patient, AccessRequest::with_permission())
            .contains(&"nurse: late visit".to_owned())
    );
    w.nurse.offline().await;
    w.srv.shutdown().await;
}

/// Syncs until the tablet holds exactly `want` of the patient's compartments.
async fn until_compartments(device: &Device, nhs: &NhsNumber, want: &[Compartment]) {
    tokio::time::timeout(Duration::from_secs(45), async {
        while device.compartments(nhs) != want {
            device.sync().await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("still holding {:?}", device.compartments(nhs)));
    // A pass registers documents before it brings them in step: finish one.
    device.sync().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_sets_core_only_and_back_and_the_tablet_follows() {
    use Compartment::*;
    let mut w = world().await;
    let patient = test_nhs_number(61);
    w.nurse.online().await;
    w.nurse.sync().await;
    let everything = [
        Core,
        Additional,
        CareEvents,
        PatientEntered,
        Governance,
        Permissions,
    ];
    assert_eq!(w.nurse.compartments(&patient), everything);

    // `admin set-choice` (another connection to the server's store, as the
    // CLI is) while the server runs and the tablet is connected.
    let now = scr_server::records::set_choice(
        &w.store,
        &patient,
        scr_server::records::ChoiceInstruction {
            choice: SharingChoice::CoreOnly,
            include_sensitive: None,
            hidden: None,
            patients_own: false,
        },
        "test",
    )
    .unwrap();
    assert!(!now.hidden && !now.include_sensitive);
    until_compartments(
        &w.nurse,
        &patient,
        &[Core, PatientEntered, Governance, Permissions],
    )
    .await;
    let forgotten: Vec<Compartment> = w
        .nurse
        .trail(&w.srv, &patient)
        .into_iter()
        .filter(|e| e.action == "forget" && e.patient == Some(patient))
        .flat_map(|e| e.compartments)
        .collect();
    assert_eq!(forgotten.len(), 2, "{forgotten:?}");
    assert!(forgotten.contains(&Additional) && forgotten.contains(&CareEvents));

    // The patient changes their mind back: the tablet receives them again.
    scr_server::records::set_choice(
        &w.store,
        &patient,
        scr_server::records::ChoiceInstruction {
            choice: SharingChoice::CoreAndAdditional,
            include_sensitive: None,
            hidden: None,
            patients_own: false,
        },
        "test",
    )
    .unwrap();
    until_compartments(&w.nurse, &patient, &everything).await;
    w.nurse
        .engine
        .record_permission(&patient, true, true)
        .unwrap();
    // Registered first, then brought in step as the server shares them
    // again (its decisions are remade within a second or so).
    let back = tokio::time::timeout(Duration::from_secs(45), async {
        while w
            .nurse
            .notes(&patient, AccessRequest::with_permission())
            .is_empty()
        {
            w.nurse.sync().await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(back.is_ok(), "the care events came back");
    assert_eq!(
        w.nurse
            .notes(&patient, AccessRequest::with_permission())
            .len(),
        1,
        "whole: the note the record had before"
    );
    w.nurse.offline().await;
    w.srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_user_cannot_log_in_and_tablets_holding_their_grant_wipe_themselves() {
    let mut w = world().await;
    w.nurse.online().await;
    w.nurse.settle().await;
    let held: Vec<_> = [61, 62]
        .into_iter()
        .map(test_nhs_number)
        .filter(|n| w.nurse.engine.holds(n).unwrap())
        .collect();
    assert_eq!(held.len(), 2);
    // The nurse leaves; her tablet stays enrolled (another nurse may use it).
    assert!(w.srv.directory.revoke_user(common::NURSE_ID).unwrap());
    assert!(!w.srv.directory.revoke_user(common::NURSE_ID).unwrap());
    w.nurse.sync.as_ref().unwrap().sync_now();
    tokio::time::timeout(Duration::from_secs(30), async {
        while held.iter().any(|n| w.nurse.engine.holds(n).unwrap())
            || w.nurse.engine.audit_queue_len().unwrap() > 0
        {
            w.nurse.sync.as_ref().unwrap().sync_now();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the tablet wipes itself and uploads the record of it");
    let me = hex_key(&w.nurse.keys.public());
    for nhs in &held {
        assert!(
            w.srv
                .archive
                .events_about(nhs)
                .unwrap()
                .into_iter()
                .any(|a| a.event.device == me
                    && a.event.action == "forget"
                    && a.event.detail.as_deref() == Some("remote-wipe"))
        );
    }
    // Her login is refused, on this tablet as on any other.
    let refused = scr_core::sync::login(
        common::ws(w.srv.sync_addr).await,
        &w.nurse.keys,
        &w.srv.server_key,
        &common::nurse_login(),
    )
    .await
    .unwrap();
    assert!(matches!(
        refused,
        scr_core::protocol::LoginResponse::Refused { .. }
    ));
    // The paramedic's tablet is untouched.
    w.paramedic.online().await;
    w.paramedic.settle().await;
    assert!(w.paramedic.engine.holds(&test_nhs_number(61)).unwrap());
    w.nurse.offline().await;
    w.paramedic.offline().await;
    w.srv.shutdown().await;
}
