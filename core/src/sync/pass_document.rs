//! One document through samod in a pass: found (from the store, or from
//! the server if it is new), handed any local change, brought in step both
//! ways, and what samod holds merged into the engine as it arrives.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use samod::{ConnectionId, DocHandle, DocumentId};

use super::driver::{Driver, blocking};
use crate::NhsNumber;
use crate::engine::Engine;
use crate::record::Compartment;

impl Driver {
    /// Finds one document (loading it from the store, or from the server if
    /// it is new), hands it any local change, and waits until both sides
    /// have each other's changes. Returns whether that happened in time,
    /// and the document's id if the wait for it ran out (not a document
    /// samod could not find, nor a change it could not take).
    pub(super) fn sync_document(
        &self,
        conn: ConnectionId,
        nhs: NhsNumber,
        compartment: Compartment,
        doc_id: DocumentId,
        dirty: bool,
        watched: Arc<Mutex<HashSet<String>>>,
    ) -> impl Future<Output = (NhsNumber, bool, Option<String>)> + use<> {
        let (engine, repo, wait) = (
            self.engine.clone(),
            self.repo.clone(),
            self.config.pass_wait,
        );
        async move {
            let handle = match tokio::time::timeout(wait, repo.find(doc_id.clone())).await {
                Ok(Ok(Some(h))) => h,
                _ => {
                    if dirty {
                        // Retried next pass; the record stays unsent meanwhile.
                        engine.mark_dirty_again(&nhs);
                    }
                    return (nhs, false, None);
                }
            };
            let id = doc_id.to_string();
            if dirty {
                let doc = id.clone();
                let pushed = match blocking(&engine, move |e| e.document_bytes(&nhs, &doc)).await {
                    Ok(Some(bytes)) => matches!(
                        handle
                            .with_document_async(move |d| d.load_incremental(&bytes).map(|_| ()))
                            .await,
                        Ok(Ok(()))
                    ),
                    Ok(None) => true,
                    Err(_) => false,
                };
                if !pushed {
                    // Retried next pass; the record stays unsent meanwhile.
                    engine.mark_dirty_again(&nhs);
                    return (nhs, false, None);
                }
            }
            if watched
                .lock()
                .map(|mut w| w.insert(id.clone()))
                .unwrap_or(false)
            {
                tokio::spawn(merge_into_engine(
                    engine.clone(),
                    handle.clone(),
                    nhs,
                    compartment,
                ));
                // What arrived before the listener started.
                merge_now(&engine, &handle, nhs, compartment).await;
            }
            let both = futures::future::join(
                handle.we_have_their_changes(conn),
                handle.they_have_our_changes(conn),
            );
            let in_step = tokio::time::timeout(wait, both).await.is_ok();
            if in_step {
                merge_now(&engine, &handle, nhs, compartment).await;
            }
            (nhs, in_step, (!in_step).then_some(id))
        }
    }
}

/// Hands the document as samod holds it to the engine.
async fn merge_now(
    engine: &Arc<Engine>,
    handle: &DocHandle,
    nhs: NhsNumber,
    compartment: Compartment,
) {
    // Same heads, same document: nothing to save or merge (most documents,
    // most passes).
    let Ok(mut theirs) = handle.with_document_async(|d| d.get_heads()).await else {
        return;
    };
    let doc_id = handle.document_id().to_string();
    if let Ok(Some(mut ours)) = blocking(engine, move |e| e.document_heads(&nhs, &doc_id)).await {
        ours.sort();
        theirs.sort();
        if ours == theirs {
            return;
        }
    }
    let Ok(bytes) = handle.with_document_async(|d| d.save()).await else {
        return;
    };
    let export = crate::CompartmentExport {
        compartment,
        doc_id: handle.document_id().to_string(),
        bytes,
    };
    if let Err(e) = blocking(engine, move |e| e.merge_synced(&nhs, &export)).await {
        tracing::warn!(error = %e, "a synced document could not be merged");
    }
}

/// Merges every change samod receives for the document into the engine,
/// coalescing bursts, until the repo stops.
async fn merge_into_engine(
    engine: Arc<Engine>,
    handle: DocHandle,
    nhs: NhsNumber,
    compartment: Compartment,
) {
    let mut changes = handle.changes();
    while changes.next().await.is_some() {
        while let Some(Some(_)) = changes.next().now_or_never_ready() {}
        merge_now(&engine, &handle, nhs, compartment).await;
    }
}

trait NowOrNever: Future + Sized {
    fn now_or_never_ready(self) -> Option<Self::Output>;
}

impl<F: Future> NowOrNever for F {
    fn now_or_never_ready(self) -> Option<F::Output> {
        futures::FutureExt::now_or_never(self)
    }
}
