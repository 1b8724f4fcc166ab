//! What the server refuses in what a device sends over sync, before samod
//! sees it: the one inspector each sync session's transport calls with every
//! incoming message. In order:
//!
//! 1. a message that is not a samod wire map goes on, for samod to refuse;
//! 2. `wire::acceptable`: ephemeral messages, degenerate Bloom filters and
//!    changes that do not parse (`scr_core::record::untrusted`) are dropped;
//! 3. `flood`: past the per-session bound on documents and requests,
//!    dropped and counted;
//! 4. a push to a document the device may not write goes on (samod's share
//!    policy does not merge it) and is flagged (`flag`): counted, logged and
//!    audited;
//! 5. then, in order and off the read path (`changes::gate`), a push of
//!    changes to a record's document is checked against the record's rules
//!    (`scr_core::push_rules`, on the changes' own operations) against the
//!    document as samod holds it: refused whole, counted and audited, or
//!    handed to samod.

pub mod changes;
pub mod flag;
pub mod flood;
pub use scr_core::protocol::wire;

use std::collections::HashSet;

use prometheus_client::metrics::counter::Counter;
use scr_core::Store;

use crate::policy::AccessPolicy;

/// Documents checked per session; past this a device flooding pushes to
/// made-up ids is checked no further (each check reads the store).
const MAX_CHECKED: usize = 1024;

/// The inspector for one session's transport: `true` passes a message on
/// to samod, `false` drops it.
pub fn inspector(
    policy: AccessPolicy,
    store: Store,
    device: [u8; 32],
    refused: Counter,
    flood_dropped: Counter,
) -> scr_core::channel::Inspector {
    let tx = flag::spawn_flagger(policy, store, device, refused);
    let checked = std::sync::Mutex::new(HashSet::new());
    let flood = std::sync::Mutex::new(flood::FloodGuard::default());
    Box::new(move |message: &[u8]| {
        let Some(incoming) = wire::parse(message) else {
            // Not a map samod could read either: let samod refuse it.
            return true;
        };
        if !wire::acceptable(&incoming) {
            tracing::warn!(kind = %incoming.kind, "an incoming sync message was dropped by the guard");
            return false;
        }
        let admitted = flood
            .lock()
            .map(|mut g| g.admit(&incoming.kind, incoming.document_id.as_deref()))
            .unwrap_or(false);
        if !admitted {
            let dropped = flood_dropped.inc();
            if dropped.is_multiple_of(1024) {
                tracing::warn!(
                    "a device asked about more documents than any caseload holds; dropped"
                );
            }
            return false;
        }
        if let Some(doc) = wire::document_with_changes(&incoming)
            && let Ok(mut checked) = checked.lock()
            && checked.len() < MAX_CHECKED
            && checked.insert(doc.clone())
        {
            let _ = tx.try_send(doc);
        }
        true
    })
}
