//! The users' journeys end to end: the server (`scr-server`'s own code) on
//! loopback with its SQLite store, and each device opened as the apps open
//! one (`scr_core::device::Device`) on its own store, over real sockets.
//! Each journey asserts what its user sees and what the audit trail
//! records, on the device and in the server's archive, and its failure
//! paths. The demo (`scr-server demo`) tells the same story.
#![allow(clippy::unwrap_used)]

mod lost_tablet;
mod nurse;
mod paramedic;
mod patient;
mod privacy_officer;

use scr_core::NhsNumber;
use scr_core::access::AccessRequest;
use scr_core::audit::AuditEvent;
use scr_core::grant::RelationshipKind;
use scr_core::record::{Compartment, SharingChoice};
use scr_core::retention::DeviceClass;
use scr_server::demo::site::{App, Site, Staff, log_in};
pub use scr_server::demo::site::{CORE_ONLY, SHARED};

pub const BORN: &str = "1948-03-12";

pub async fn site() -> (tempfile::TempDir, Site) {
    let dir = tempfile::tempdir().unwrap();
    let site = Site::start(dir.path()).await.unwrap();
    (dir, site)
}

/// Test patient `n`, loaded and given to `staff` on `kind`.
pub fn patient_of(site: &Site, n: u32, staff: &Staff, kind: RelationshipKind) -> NhsNumber {
    let nhs = site
        .load_patient(n, SharingChoice::CoreAndAdditional)
        .unwrap();
    site.assign(staff, nhs, kind).unwrap();
    nhs
}

/// A tablet enrolled, its user logged in online, syncing in the background.
pub async fn tablet(site: &Site, name: &str, class: DeviceClass, who: &Staff) -> App {
    let app = site
        .tablet(name, class, &who.user.organisation)
        .await
        .unwrap();
    log_in(&app, who).await.unwrap();
    app.device.start_sync().await.unwrap();
    app
}

/// The patient's phone, logged in with the passcode they chose, syncing.
pub async fn phone(site: &Site, nhs: NhsNumber) -> App {
    let app = site
        .patient_phone("phone", nhs, "tulip-2468")
        .await
        .unwrap();
    app.device.login("patient", "", "tulip-2468").await.unwrap();
    app.device.start_sync().await.unwrap();
    app
}

/// Syncs until the device holds exactly `compartments` of `nhs`.
pub async fn holds(app: &App, nhs: &NhsNumber, compartments: &[Compartment]) {
    let got = app
        .sync_until(|a| a.held(nhs) == compartments)
        .await
        .unwrap();
    assert!(got, "held {:?}, wanted {compartments:?}", app.held(nhs));
}

/// The device's own events about `nhs` that the server's archive holds.
pub fn archived(site: &Site, app: &App, nhs: &NhsNumber) -> Vec<AuditEvent> {
    let me = app.device.device_key().unwrap();
    let mut events: Vec<_> = site
        .server
        .archive
        .events_about(nhs)
        .unwrap()
        .into_iter()
        .inspect(|a| assert_eq!(a.flag, None, "an archived event was flagged"))
        .map(|a| a.event)
        .filter(|e| e.device == me)
        .collect();
    events.sort_by_key(|e| e.seq);
    events
}

/// The device's whole trail about `nhs` reached the server, and its
/// chain verifies.
pub async fn uploaded(app: &App) {
    assert!(app.settle().await.unwrap());
    let engine = app.engine().unwrap();
    assert_eq!(engine.audit_queue_len().unwrap(), 0, "events left unsent");
    assert!(matches!(engine.verify_audit_chain(), Ok(Ok(()))));
}

/// The server's own copy of the record once `done` holds of it (a pass in
/// step means samod holds a change; its write to the store follows), or
/// the last copy read after five seconds.
pub async fn on_server(
    site: &Site,
    nhs: &NhsNumber,
    done: impl Fn(&scr_core::replica::RecordView) -> bool,
) -> scr_core::replica::RecordView {
    let mut view = site.store.open_record(nhs).unwrap().view();
    for _ in 0..50 {
        if done(&view) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        view = site.store.open_record(nhs).unwrap().view();
    }
    view
}

pub fn with_permission() -> AccessRequest {
    AccessRequest::with_permission()
}
