//! After the server refused part of a document: sync stops (samod must not
//! hold the document while it is replaced), each document a refusal names
//! is rebuilt from what the server took (`Engine::rebuild_refused`), and
//! sync starts again, so the honest versions written after the refused one
//! reach the server and the document is in step again.

use std::collections::BTreeMap;

use automerge::{ChangeHash, ReadDoc};

use super::{DeviceSync, SyncError};
use crate::engine::{EngineError, Rebuild};

impl DeviceSync {
    /// Whether a refusal the server reported names a change a document
    /// here still holds (it then waits on it: rebuild).
    pub async fn holds_refused(&self) -> bool {
        for (doc, hashes) in refused_by_document(&self.server_refusals()) {
            let Ok(id) = doc.parse::<samod::DocumentId>() else {
                continue;
            };
            let Ok(Some(handle)) = self.repo.find(id).await else {
                continue;
            };
            let held =
                handle.with_document(|d| hashes.iter().any(|h| d.get_change_by_hash(h).is_some()));
            if held {
                return true;
            }
        }
        false
    }

    /// Stops sync, rebuilds every document a refusal names, and starts sync
    /// again. Returns the new sync, and what was rebuilt (or why not: sync
    /// runs again either way).
    pub async fn rebuild_refused(
        self,
    ) -> Result<(DeviceSync, Result<Vec<Rebuild>, EngineError>), SyncError> {
        let refused = refused_by_document(&self.server_refusals());
        let (engine, config) = (self.engine.clone(), self.config.clone());
        self.stop().await;
        let rebuilding = engine.clone();
        // Each document on its own: one that cannot be rebuilt does not
        // hold back the others; sync starts again whatever happened.
        let rebuilt = tokio::task::spawn_blocking(move || {
            let mut done = Vec::new();
            let mut failed = None;
            for (doc, hashes) in refused {
                match rebuilding.rebuild_refused(&doc, &hashes) {
                    Ok(Some(r)) => {
                        tracing::info!(
                            compartment = r.compartment.as_str(),
                            quarantined = r.quarantined,
                            replayed = r.replayed,
                            "a document the server refused part of was rebuilt"
                        );
                        done.push(r);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "a document could not be rebuilt");
                        failed.get_or_insert(e);
                    }
                }
            }
            match failed {
                Some(e) if done.is_empty() => Err(e),
                _ => Ok(done),
            }
        })
        .await
        .unwrap_or(Err(EngineError::InvalidInput("the rebuild stopped")));
        let sync = DeviceSync::start(engine, config).await?;
        Ok((sync, rebuilt))
    }
}

/// The refused change hashes, by document (a refusal of a whole push
/// names a digest, not a change: nothing to take out).
fn refused_by_document(
    refusals: &[crate::protocol::PushRefusal],
) -> BTreeMap<String, Vec<ChangeHash>> {
    let mut out: BTreeMap<String, Vec<ChangeHash>> = BTreeMap::new();
    for r in refusals {
        if let Ok(hash) = r.change.parse::<ChangeHash>() {
            out.entry(r.document.clone()).or_default().push(hash);
        }
    }
    out
}
