//! The community nurse: a caseload cached in the morning, visits written
//! offline all day (through an app restart), merged in the evening with
//! nothing lost; and two nurses correcting the same note offline, both
//! corrections kept as a conflict for review and then resolved.

use std::collections::HashSet;

use scr_core::grant::RelationshipKind;
use scr_core::record::{EntryContent, EntryState};
use scr_core::retention::DeviceClass;
use scr_server::demo::site::{nurse, second_nurse, visit_note};

use crate::{
    SHARED, archived, holds, on_server, patient_of, site, tablet, uploaded, with_permission,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_offline_with_the_caseload_merges_every_visit_in_the_evening() {
    let (_dir, site) = site().await;
    let caseload: Vec<_> = (31..34)
        .map(|n| patient_of(&site, n, &nurse(), RelationshipKind::Caseload))
        .collect();
    let jo = tablet(&site, "jo", DeviceClass::NurseTablet, &nurse()).await;
    for nhs in &caseload {
        holds(&jo, nhs, &SHARED).await;
    }

    // Out of signal all day.
    jo.device.stop_sync().await;
    let engine = jo.engine().unwrap();
    let mut written = Vec::new();
    for (i, nhs) in caseload.iter().enumerate() {
        engine.record_permission(nhs, false, true).unwrap();
        engine.view(nhs, with_permission()).unwrap();
        let note = format!("Visit {i}: dressing changed.");
        written.push(
            engine
                .add_entry(nhs, visit_note("home", &note), false, None)
                .unwrap(),
        );
    }
    // The app is killed at lunch and reopened, still offline: unlock with
    // the passcode, and the morning's visits are there.
    drop(engine);
    let jo = jo.reopen().unwrap();
    let engine = jo.engine().unwrap();
    engine.unlock(nurse().passcode).unwrap();
    for (nhs, v) in caseload.iter().zip(&written) {
        engine.record_permission(nhs, false, true).unwrap();
        let view = engine.view(nhs, with_permission()).unwrap();
        assert!(
            view.view.entry(v.entry_id).is_some(),
            "a visit survived the restart"
        );
    }

    // Evening: signal. Every visit reaches the server, and every event.
    jo.device.start_sync().await.unwrap();
    uploaded(&jo).await;
    for (nhs, v) in caseload.iter().zip(&written) {
        let on_server = on_server(&site, nhs, |r| r.entry(v.entry_id).is_some()).await;
        let entry = on_server
            .entry(v.entry_id)
            .expect("the visit is on the server");
        assert!(matches!(&entry.state, EntryState::Current(c) if c.version_id == v.version_id));
        let trail = archived(&site, &jo, nhs);
        let actions: HashSet<_> = trail.iter().map(|e| e.action.as_str()).collect();
        for action in ["record-permission", "view", "add-entry"] {
            assert!(actions.contains(action), "{action} missing: {actions:?}");
        }
    }
    jo.device.stop_sync().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nurses_correcting_one_note_offline_keep_both_versions_for_review() {
    let (_dir, site) = site().await;
    let nhs = patient_of(&site, 35, &nurse(), RelationshipKind::Caseload);
    site.assign(&second_nurse(), nhs, RelationshipKind::Caseload)
        .unwrap();
    let jo = tablet(&site, "jo", DeviceClass::NurseTablet, &nurse()).await;
    let kim = tablet(&site, "kim", DeviceClass::NurseTablet, &second_nurse()).await;
    holds(&jo, &nhs, &SHARED).await;
    holds(&kim, &nhs, &SHARED).await;
    let (je, ke) = (jo.engine().unwrap(), kim.engine().unwrap());
    je.record_permission(&nhs, true, true).unwrap();
    let note = je
        .add_entry(&nhs, visit_note("home", "Leg ulcer dressed."), false, None)
        .unwrap();
    jo.settle().await.unwrap();
    let arrived = kim
        .sync_until(|_| {
            ke.record_permission(&nhs, true, true).is_ok()
                && ke
                    .view(&nhs, with_permission())
                    .is_ok_and(|v| v.view.entry(note.entry_id).is_some())
        })
        .await
        .unwrap();
    assert!(arrived, "Jo's note reached Kim's tablet");

    // Both offline; both correct the same note.
    jo.device.stop_sync().await;
    kim.device.stop_sync().await;
    let by_jo = je
        .supersede(
            &nhs,
            note.entry_id,
            &[note.version_id],
            visit_note("home", "LEFT leg ulcer dressed."),
        )
        .unwrap();
    let by_kim = ke
        .supersede(
            &nhs,
            note.entry_id,
            &[note.version_id],
            visit_note("home", "Leg ulcer dressed; review Friday."),
        )
        .unwrap();

    // Both online: each tablet shows both corrections, as a conflict.
    jo.device.start_sync().await.unwrap();
    kim.device.start_sync().await.unwrap();
    let both = |e: &scr_core::engine::Engine| {
        e.view(&nhs, with_permission()).is_ok_and(|v| {
            matches!(v.view.entry(note.entry_id).map(|e| &e.state),
                Some(EntryState::Conflict(c)) if c.len() == 2
                    && c.iter().any(|x| x.version_id == by_jo.version_id)
                    && c.iter().any(|x| x.version_id == by_kim.version_id))
        })
    };
    assert!(
        jo.sync_until(|_| both(&je)).await.unwrap(),
        "Jo sees the conflict"
    );
    assert!(
        kim.sync_until(|_| both(&ke)).await.unwrap(),
        "Kim sees the conflict"
    );

    // Jo resolves it, naming both; everyone sees one note, four versions kept.
    let resolved = je
        .supersede(
            &nhs,
            note.entry_id,
            &[by_jo.version_id, by_kim.version_id],
            visit_note("home", "LEFT leg ulcer dressed; review Friday."),
        )
        .unwrap();
    let settled = |e: &scr_core::engine::Engine| {
        e.view(&nhs, with_permission()).is_ok_and(|v| {
            v.view.entry(note.entry_id).is_some_and(|x| {
                matches!(&x.state, EntryState::Current(c) if c.version_id == resolved.version_id)
                    && x.history.len() == 4
            })
        })
    };
    jo.settle().await.unwrap();
    assert!(
        kim.sync_until(|_| settled(&ke)).await.unwrap(),
        "Kim sees the resolution"
    );
    assert!(settled(&je));
    let on_server = on_server(&site, &nhs, |r| {
        r.entry(note.entry_id).is_some_and(|e| e.history.len() == 4)
    })
    .await;
    let entry = on_server.entry(note.entry_id).unwrap();
    assert_eq!(entry.history.len(), 4, "no version lost on the server");
    assert!(matches!(&entry.state, EntryState::Current(c)
        if matches!(&c.content, EntryContent::EncounterSummary { note, .. } if note.starts_with("LEFT"))));
    jo.device.stop_sync().await;
    kim.device.stop_sync().await;
}
