//! What the server refuses in what a device sends over sync, before samod
//! sees it: the one gate each sync session's transport hands every incoming
//! message to, which reads it once (`wire::parse`). In order:
//!
//! 1. a message that is not a samod wire map goes on, for samod to refuse;
//! 2. a push (a message carrying changes) of more bytes than a push may
//!    carry is dropped and counted;
//!    `wire::vet`: ephemeral messages, degenerate Bloom filters and
//!    changes that do not parse or inflate past a bound
//!    (`scr_core::record::untrusted`) are dropped; the changes that do are
//!    kept, parsed, for step 5;
//! 3. `flood`: past the per-session bound on documents and requests,
//!    dropped and counted;
//! 4. a push to a document the device may not write goes on (samod's share
//!    policy does not merge it) and is flagged (`flag`): counted, logged and
//!    audited;
//! 5. then (`changes::gate`), a push of
//!    changes to a record's document is checked against the record's rules
//!    (`scr_core::push_rules`, on the changes' own operations) against the
//!    document as samod holds it: refused whole, counted and audited, or
//!    handed to samod.

pub mod added;
pub mod changes;
pub mod flag;
pub mod flood;
pub use scr_core::protocol::wire;

use std::collections::HashSet;

use prometheus_client::metrics::counter::Counter;
use scr_core::Store;
use scr_core::record::untrusted::Parsed;

use crate::policy::AccessPolicy;

/// Documents checked per session; past this a device flooding pushes to
/// made-up ids is checked no further (each check reads the store).
const MAX_CHECKED: usize = 1024;

/// What an admission counts, and the bound on a push's bytes.
pub struct Counted {
    pub refused: Counter,
    pub flood_dropped: Counter,
    pub oversized: Counter,
    pub max_push_bytes: usize,
}

/// What every incoming message of one session goes through first, in the
/// session's gate (`changes::gate`), before the push check: says whether
/// it goes on, with its changes parsed once for that check.
pub struct Admission {
    flagger: tokio::sync::mpsc::Sender<String>,
    checked: std::sync::Mutex<HashSet<String>>,
    flood: std::sync::Mutex<flood::FloodGuard>,
    flood_dropped: Counter,
    max_push_bytes: usize,
    oversized: Counter,
}

impl Admission {
    /// For one session of `device`.
    pub fn new(policy: AccessPolicy, store: Store, device: [u8; 32], counted: Counted) -> Self {
        Self {
            flagger: flag::spawn_flagger(policy, store, device, counted.refused),
            checked: std::sync::Mutex::default(),
            flood: std::sync::Mutex::default(),
            flood_dropped: counted.flood_dropped,
            max_push_bytes: counted.max_push_bytes,
            oversized: counted.oversized,
        }
    }

    /// `None` drops the message (`bytes` long); otherwise its changes,
    /// each parsed.
    pub fn admit(&self, incoming: &wire::Incoming, bytes: usize) -> Option<Vec<Parsed>> {
        // A push past the bound is dropped before its changes are read.
        if bytes > self.max_push_bytes && wire::document_with_changes(incoming).is_some() {
            self.oversized.inc();
            tracing::warn!(bytes, "a push larger than a push may be was dropped");
            return None;
        }
        let Some(parsed) = wire::vet(incoming) else {
            tracing::warn!(kind = %incoming.kind, "an incoming sync message was dropped by the guard");
            return None;
        };
        let admitted = self
            .flood
            .lock()
            .map(|mut g| g.admit(&incoming.kind, incoming.document_id.as_deref()))
            .unwrap_or(false);
        if !admitted {
            let dropped = self.flood_dropped.inc();
            if dropped.is_multiple_of(1024) {
                tracing::warn!(
                    "a device asked about more documents than any caseload holds; dropped"
                );
            }
            return None;
        }
        if let Some(doc) = wire::document_with_changes(incoming)
            && let Ok(mut checked) = self.checked.lock()
            && checked.len() < MAX_CHECKED
            && checked.insert(doc.clone())
        {
            let _ = self.flagger.try_send(doc);
        }
        Some(parsed)
    }
}
