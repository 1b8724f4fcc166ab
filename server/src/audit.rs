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
    store
        .append_audit(draft, "scr-server", scr_core::clock::now_ms())
        .map(|_| ())
}
