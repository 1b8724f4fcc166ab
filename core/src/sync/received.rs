//! What a device checks of what it receives, before its samod merges it:
//! the record's rules (`push_rules::check_received_changes`) on every sync
//! message that carries changes to a record's document the device holds,
//! against the document as its samod holds it. A buggy or tampered server
//! that sends a rewritten or deleted version, a changed header or a
//! misplaced entry is refused: the message is dropped whole (nothing of
//! it merged), counted and logged (naming the compartment and the rule,
//! never a value). Who wrote a version is the server's to check: the
//! device holds no one else's grants.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use automerge::Automerge;
use samod::DocumentId;

use crate::channel::Gate;
use crate::protocol::wire;
use crate::push_rules::{PushLimits, Refusal, check_received_applied, check_received_parsed};
use crate::record::Compartment;
use crate::record::untrusted::lone_changes;
use crate::store::Store;

/// The gate for the device's sync sessions. `repo` is set once samod's repo
/// is built; until then nothing is held, so nothing is checked.
pub(super) fn gate(
    repo: Arc<OnceLock<samod::Repo>>,
    store: Store,
    refused: Arc<AtomicU64>,
) -> Gate {
    let checker = Arc::new(Checker {
        repo,
        store,
        refused,
    });
    Arc::new(move |message: Vec<u8>| {
        let checker = checker.clone();
        Box::pin(async move { checker.pass(message).await })
    })
}

struct Checker {
    repo: Arc<OnceLock<samod::Repo>>,
    store: Store,
    refused: Arc<AtomicU64>,
}

impl Checker {
    async fn pass(&self, message: Vec<u8>) -> Option<Vec<u8>> {
        let Some(incoming) = wire::parse(&message) else {
            return Some(message);
        };
        let Some(parsed) = wire::vet(&incoming) else {
            // Changes that do not parse or would break automerge's parser,
            // a degenerate Bloom filter: as the server drops them.
            self.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(kind = %incoming.kind, "a message from the server was dropped by the guard");
            return None;
        };
        let (Some(doc), Some(Ok(sync)), Some(repo)) = (
            wire::document_with_changes(&incoming),
            &incoming.sync,
            self.repo.get(),
        ) else {
            return Some(message);
        };
        let Ok(doc_id) = doc.parse::<DocumentId>() else {
            return Some(message);
        };
        let store = self.store.clone();
        let id = doc.clone();
        let owner = crate::store::off_runtime(move || {
            let owner = store.owner_of_document(&id).ok().flatten()?;
            store.has_chunks(&id).ok()?.then_some(owner)
        })
        .await
        .flatten();
        // Not a record's document this device holds (its holdings notice,
        // say: its storage never writes it), or one arriving for the first
        // time: nothing held to compare with, and finding it would ask
        // the server, whose answer waits behind this message.
        let Some((_, compartment)) = owner else {
            return Some(message);
        };
        let Ok(Some(handle)) = repo.find(doc_id).await else {
            return Some(message);
        };
        let changes: Vec<Vec<u8>> = sync.changes.iter().map(|c| c.to_vec()).collect();
        let parsed = lone_changes(parsed);
        let verdict = handle
            .with_document_async(move |held: &mut Automerge| {
                verdict(compartment, held, &changes, parsed.as_deref())
            })
            .await
            .ok()?;
        match verdict {
            Ok(_) => Some(message),
            Err(refusal) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    compartment = compartment.as_str(),
                    %refusal,
                    "the server sent changes the record's rules refuse; not merged"
                );
                None
            }
        }
    }
}

/// On the changes as parsed when each element is one change, else (or
/// when they cannot be judged alone) applied to a copy.
fn verdict(
    compartment: Compartment,
    held: &Automerge,
    changes: &[Vec<u8>],
    parsed: Option<&[automerge::Change]>,
) -> Result<usize, Refusal> {
    let limits = PushLimits::default();
    parsed
        .and_then(|parsed| check_received_parsed(compartment, held, parsed, &limits))
        .unwrap_or_else(|| check_received_applied(compartment, held, changes, &limits))
}
