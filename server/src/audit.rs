//! The server's own audit trail: every admin action, enrollment and login,
//! in the same sealed, hash-chained queue the devices use (never released
//! on the server). Patient identifiers stay inside the sealed events.

use scr_core::audit::{AuditDraft, Outcome};
use scr_core::{NhsNumber, Store};

/// Records one server-side action. A failure to audit is returned, so a
/// command that cannot be audited reports an error.
pub fn record(
    store: &Store,
    actor: &str,
    action: &str,
    patient: Option<NhsNumber>,
    outcome: Outcome,
    detail: Option<String>,
) -> Result<(), scr_core::StoreError> {
    let draft = AuditDraft {
        user: actor.to_owned(),
        role: String::new(),
        organisation: String::new(),
        patient,
        action: action.to_owned(),
        compartments: Vec::new(),
        entries: Vec::new(),
        outcome,
        basis: None,
        alerts: Vec::new(),
        detail,
    };
    record_draft(store, draft)
}

/// Records one server-side action on behalf of a user (their role and
/// organisation, the basis and any alerts, as a device would).
pub fn record_draft(store: &Store, draft: AuditDraft) -> Result<(), scr_core::StoreError> {
    store
        .append_audit(
            draft,
            crate::archive::SERVER_DEVICE,
            scr_core::clock::now_ms(),
        )
        .map(|_| ())
}
