//! Record layout 2 (ADR 0011): permissions to view in a compartment of
//! their own. A store of layout 1 is upgraded when the server starts and
//! its permissions move; during the transition a permission an older app
//! pushes into governance is taken and moved; after it, governance is not
//! a viewer's to write; an older app is never sent the new compartment.
#![allow(clippy::unwrap_used)]

use automerge::{Automerge, ROOT, ReadDoc};
use scr_core::access::AccessRequest;
use scr_core::channel::{self, Hello, Purpose};
use scr_core::fixtures::{sample_entry, test_nhs_number};
use scr_core::grant::RelationshipKind;
use scr_core::protocol::HoldingsReply;
use scr_core::record::{
    Compartment, EntryContent, EntryId, EntryVersion, PermissionScope, Provenance, SharingChoice,
    VersionStatus,
};
use scr_server::users::assign;

mod common;
use common::device::Device;
use common::pusher::Pusher;

fn permission() -> EntryContent {
    EntryContent::PermissionToView {
        organisation: "RX1".into(),
        user_id: common::NURSE_ID.into(),
        scope: PermissionScope::Organisation,
        granted: true,
    }
}

fn has(doc: &Automerge, version: &EntryVersion) -> bool {
    let versions = doc.get(ROOT, "versions").unwrap().unwrap().1;
    doc.get(&versions, version.version_id.to_string().as_str())
        .unwrap()
        .is_some()
}

/// The holdings list as an app that says (or does not say) its layout.
async fn holdings(p: &Pusher, hello: &[u8]) -> Vec<Compartment> {
    let ws = common::ws(p.srv.sync_addr).await;
    let mut ch = channel::connect(ws, &p.keys, &p.srv.server_key, hello)
        .await
        .unwrap();
    let reply: HoldingsReply = serde_json::from_slice(&ch.recv().await.unwrap().unwrap()).unwrap();
    let list = reply.list.unwrap();
    list.patients
        .iter()
        .flat_map(|p| p.documents.iter().map(|d| d.compartment))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permission_an_older_app_records_in_governance_moves_to_its_own_compartment() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Pusher::new(dir.path(), 91, Vec::new()).await;
    let answer = EntryVersion::new(
        EntryId::new(),
        Vec::new(),
        VersionStatus::Current,
        permission(),
        p.nurse_wrote(scr_core::clock::now_ms()),
    );
    p.push(Compartment::Governance, |doc, _| {
        common::put_version(doc, &answer)
    })
    .await;
    assert!(
        p.until(Compartment::Permissions, |d| has(d, &answer)).await,
        "the permission reached the permissions compartment, under its own id"
    );
    assert!(has(&p.server_doc(Compartment::Governance).await, &answer));
    assert!(p.refusals().is_empty());

    // An app of layout 1 is never sent the compartment it cannot read.
    let old = holdings(&p, br#"{"v":1,"purpose":"holdings"}"#).await;
    assert!(old.contains(&Compartment::Governance) && !old.contains(&Compartment::Permissions));
    let new = holdings(&p, &Hello::new(Purpose::Holdings, None).encode()).await;
    assert!(new.contains(&Compartment::Permissions));
    p.srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_transition_a_viewer_writes_permissions_only_in_their_compartment() {
    let dir = tempfile::tempdir().unwrap();
    let ended = scr_core::clock::now_ms() - 1;
    let mut p = Pusher::with_config(dir.path(), 92, Vec::new(), |c| {
        c.legacy_permissions_until_ms = ended;
    })
    .await;
    let now = scr_core::clock::now_ms();
    let answer = |at| {
        EntryVersion::new(
            EntryId::new(),
            Vec::new(),
            VersionStatus::Current,
            permission(),
            p.nurse_wrote(at),
        )
    };
    let (late, honest) = (answer(now), answer(now + 1));
    p.push(Compartment::Governance, |doc, _| {
        common::put_version(doc, &late)
    })
    .await;
    p.push(Compartment::Permissions, |doc, _| {
        common::put_version(doc, &honest)
    })
    .await;
    // The session's messages are taken in order: the honest one merged,
    // so the one before it was judged, and governance did not take it.
    assert!(p.until(Compartment::Permissions, |d| has(d, &honest)).await);
    assert!(!has(&p.server_doc(Compartment::Governance).await, &late));
    p.srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_of_layout_1_is_upgraded_at_start_and_its_tablets_follow() {
    let dir = tempfile::tempdir().unwrap();
    let server_dir = dir.path().join("server");
    // A store written before permissions had their own compartment.
    common::server(&server_dir).await.shutdown().await;
    let nhs = test_nhs_number(93);
    let answer = {
        let store = common::server_store(&server_dir);
        let mut record = store.create_record(&nhs, &Compartment::LAYOUT_1).unwrap();
        let gp = Provenance {
            author_id: "555000000001".into(),
            role: "R0260".into(),
            organisation: "A99001".into(),
            device: "gp-feed".into(),
            recorded_at_ms: scr_core::clock::now_ms(),
        };
        record
            .add_entry(sample_entry(0), false, gp.clone(), None)
            .unwrap();
        let sharing = EntryContent::Sharing {
            choice: SharingChoice::CoreAndAdditional,
            include_sensitive: false,
            hidden: false,
        };
        record.add_entry(sharing, false, gp, None).unwrap();
        let nurse = Provenance {
            author_id: common::NURSE_ID.into(),
            role: "R0050".into(),
            organisation: "RX1".into(),
            device: "an-older-tablet".into(),
            recorded_at_ms: scr_core::clock::now_ms(),
        };
        record
            .add_legacy_permission(permission(), nurse, None)
            .unwrap()
    };

    let srv = common::server(&server_dir).await;
    let store = common::server_store(&server_dir);
    let moved = store
        .view_of_compartment(&nhs, Compartment::Permissions)
        .unwrap()
        .expect("the upgrade added the permissions document");
    assert_eq!(
        moved
            .entries
            .iter()
            .flat_map(|e| e.heads())
            .map(|v| v.version_id)
            .collect::<Vec<_>>(),
        vec![answer.version_id],
        "the permission moved, under its own id"
    );
    srv.directory
        .add_user(&common::nurse(), common::NURSE_PASSCODE)
        .unwrap();
    assign(
        &store,
        &srv.directory,
        common::NURSE_ID,
        nhs,
        RelationshipKind::Caseload,
    )
    .unwrap();
    let mut tablet = Device::nurse(&srv, dir.path()).await;
    tablet.online().await;
    tablet.settle().await;
    assert!(
        tablet
            .compartments(&nhs)
            .contains(&Compartment::Permissions)
    );
    // The permission recorded on an older tablet holds on this one.
    assert!(
        tablet
            .engine
            .view(&nhs, AccessRequest::with_permission())
            .is_ok()
    );
    tablet.offline().await;
    srv.shutdown().await;
}
