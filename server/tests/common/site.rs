//! A server on loopback with its store open beside it (as an admin command
//! would), and one-line ways to give a user a patient.
#![allow(clippy::unwrap_used, dead_code)]

use scr_core::fixtures::test_nhs_number;
use scr_core::grant::RelationshipKind;
use scr_core::record::SharingChoice;
use scr_core::{NhsNumber, Store};
use scr_server::records::load;
use scr_server::serve::RunningServer;
use scr_server::users::assign;

use super::device::{PARAMEDIC_ID, paramedic, record};

pub struct Site {
    pub srv: RunningServer,
    pub store: Store,
    pub server_dir: std::path::PathBuf,
}

/// A server in `dir/server`, with the nurse and the paramedic as users.
pub async fn site(dir: &std::path::Path) -> Site {
    let server_dir = dir.join("server");
    let srv = super::server(&server_dir).await;
    let store = super::server_store(&server_dir);
    srv.directory
        .add_user(&super::nurse(), super::NURSE_PASSCODE)
        .unwrap();
    srv.directory.add_user(&paramedic(), "sam-1357").unwrap();
    Site {
        srv,
        store,
        server_dir,
    }
}

/// Loads test patient `n` (if not yet loaded) and puts them on the
/// nurse's caseload.
pub fn on_caseload(
    srv: &RunningServer,
    store: &Store,
    n: u32,
    sharing: SharingChoice,
) -> NhsNumber {
    give(
        srv,
        store,
        super::NURSE_ID,
        n,
        sharing,
        RelationshipKind::Caseload,
    )
}

/// Loads test patient `n` (if not yet loaded) and assigns them to the
/// paramedic's incident.
pub fn on_incident(
    srv: &RunningServer,
    store: &Store,
    n: u32,
    sharing: SharingChoice,
    incident: &str,
) -> NhsNumber {
    let kind = RelationshipKind::Incident {
        incident_id: incident.into(),
    };
    give(srv, store, PARAMEDIC_ID, n, sharing, kind)
}

fn give(
    srv: &RunningServer,
    store: &Store,
    user: &str,
    n: u32,
    sharing: SharingChoice,
    kind: RelationshipKind,
) -> NhsNumber {
    let nhs = test_nhs_number(n);
    if store.open_record(&nhs).is_err() {
        load(store, &record(n, sharing), "test").unwrap();
    }
    assign(store, &srv.directory, user, nhs, kind).unwrap();
    nhs
}
