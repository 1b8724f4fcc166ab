//! A pass's first exchange when the server answers asks (ADR 0016, part
//! 2): one digest per held record, asked on the sync session, and back
//! which documents differ (and the holdings list, if the device's is out of
//! date). Only those documents then run samod's sync. Any failure here
//! leaves the pass as it was before the catalogue: every held document
//! through samod.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use automerge::ChangeHash;
use futures::StreamExt;
use samod::DocumentId;
use tokio::sync::mpsc;

use super::SyncError;
use super::driver::{Driver, blocking};
use crate::NhsNumber;
use crate::channel::Session;
use crate::engine::HoldingsOutcome;
use crate::protocol::{
    Ask, CATALOGUE_FORMAT, CatalogueReply, CatalogueRequest, RecordDigest, heads_from_hex,
    record_digest,
};

/// What the catalogue said a pass must do.
pub(super) struct Plan {
    /// The documents to bring in step through samod (by id).
    pub sync: HashSet<String>,
    /// Documents the server compared this pass and found in step (or sent
    /// whole): their records may be confirmed.
    pub in_step: HashSet<String>,
    /// Count the rest as in step (as of the last catalogue), without
    /// confirming their records: an edit-only pass.
    pub assume_rest: bool,
    /// Documents fetched whole (held nothing of before).
    pub fetched: usize,
    pub holdings: HoldingsOutcome,
}

fn sorted(mut heads: Vec<ChangeHash>) -> Vec<ChangeHash> {
    heads.sort();
    heads
}

impl Driver {
    /// The current session, if its server answers asks.
    pub(super) fn asking_session(&self) -> Option<Arc<Session>> {
        self.asker
            .lock()
            .ok()
            .and_then(|a| a.clone())
            .filter(|s| !s.is_ended())
    }

    /// A pass woken by this device's edits alone, while the last
    /// catalogue still holds (same session, younger than the refresh,
    /// nothing signalled since): only the edited records go through samod.
    /// `None`: ask the catalogue.
    pub(super) async fn edits_only(
        &self,
        session: &Arc<Session>,
        dirty: &BTreeSet<NhsNumber>,
    ) -> Result<Option<Plan>, SyncError> {
        let fresh = self.catalogue_fresh.lock().ok().is_some_and(|f| {
            f.as_ref().is_some_and(|(on, at)| {
                on.upgrade().is_some_and(|on| Arc::ptr_eq(&on, session))
                    && at.elapsed() < self.config.refresh
            })
        });
        let signalled =
            self.notice_moved.load(Ordering::SeqCst) || self.list_stale.load(Ordering::SeqCst);
        if !fresh || signalled || dirty.is_empty() {
            return Ok(None);
        }
        let sync = blocking(&self.engine, |e| e.held_documents())
            .await?
            .into_iter()
            .filter(|(nhs, _)| dirty.contains(nhs))
            .map(|(_, d)| d.doc_id)
            .collect();
        Ok(Some(Plan {
            sync,
            in_step: HashSet::new(),
            assume_rest: true,
            fetched: 0,
            holdings: HoldingsOutcome::default(),
        }))
    }

    /// Asks the catalogue. `None`: not answered (old server, lost
    /// connection, a malformed reply): the pass syncs every document.
    pub(super) async fn ask_catalogue(
        &self,
        session: &Arc<Session>,
        dirty: &BTreeSet<NhsNumber>,
    ) -> Result<Option<Plan>, SyncError> {
        // A notice that moves from here on starts another full pass.
        self.notice_moved.store(false, Ordering::SeqCst);
        let held = blocking(&self.engine, |e| e.held_records()).await?;
        let list = if self.list_stale.swap(false, Ordering::SeqCst) {
            None
        } else {
            blocking(&self.engine, |e| e.applied_list_digest()).await?
        };
        let mut ours: HashMap<String, Vec<ChangeHash>> = HashMap::new();
        let mut records = Vec::with_capacity(held.len());
        for record in &held {
            let docs: Vec<(String, Vec<ChangeHash>)> = record
                .docs
                .iter()
                .map(|(d, h)| (d.doc_id.clone(), h.clone()))
                .collect();
            if let Some(key) = docs.iter().map(|(d, _)| d).min() {
                records.push(RecordDigest {
                    doc: key.clone(),
                    digest: record_digest(&docs),
                });
            }
            ours.extend(docs.into_iter().map(|(d, h)| (d, sorted(h))));
        }
        let request = CatalogueRequest {
            format: CATALOGUE_FORMAT,
            list,
            records,
        };
        let question = Ask::Catalogue(request).encode();
        let answer = match tokio::time::timeout(self.config.pass_wait, session.ask(question)).await
        {
            Ok(Ok(answer)) => answer,
            _ => return Ok(None),
        };
        let (list, differing, matched, refused) = match CatalogueReply::decode(&answer) {
            Ok(CatalogueReply::Answered {
                list,
                differing,
                matched,
                refused,
                ..
            }) => (list, differing, matched, refused),
            Ok(CatalogueReply::Refused { reason }) => {
                tracing::warn!(%reason, "the server refused the catalogue");
                return Ok(None);
            }
            Err(e) => {
                tracing::warn!(error = %e, "the catalogue's answer was not read");
                return Ok(None);
            }
        };
        if let Ok(mut r) = self.server_refusals.lock() {
            *r = refused;
        }
        let holdings = match list {
            Some(list) => blocking(&self.engine, move |e| e.apply_catalogue_list(&list)).await?,
            None => HoldingsOutcome::default(),
        };
        // In step: every document of a record whose digest matched (named
        // by the key this device sent), and each differing one whose heads
        // are ours. Anything else held was not compared.
        let matched: HashSet<String> = matched.into_iter().collect();
        let mut in_step: HashSet<String> = held
            .iter()
            .filter(|r| {
                r.docs
                    .iter()
                    .map(|(d, _)| &d.doc_id)
                    .min()
                    .is_some_and(|key| matched.contains(key))
            })
            .flat_map(|r| r.docs.iter().map(|(d, _)| d.doc_id.clone()))
            .collect();
        let mut sync = HashSet::new();
        for d in differing {
            // No heads: the server did not compare this record (or holds
            // nothing of the document): never taken as in step.
            let theirs = heads_from_hex(&d.heads)
                .ok()
                .filter(|h| !h.is_empty())
                .map(sorted);
            if theirs.is_none() || ours.get(&d.doc) != theirs.as_ref() {
                sync.insert(d.doc);
            } else {
                in_step.insert(d.doc);
            }
        }
        // A record changed here since the last pass goes through samod
        // whatever its digest said (the digest was read after the change
        // was taken, but a change is never left to a digest).
        for record in held.iter().filter(|r| dirty.contains(&r.nhs)) {
            for (d, _) in &record.docs {
                in_step.remove(&d.doc_id);
                sync.insert(d.doc_id.clone());
            }
        }
        // What the device holds nothing of comes whole, in batches.
        let dirty_docs: HashSet<&String> = held
            .iter()
            .filter(|r| dirty.contains(&r.nhs))
            .flat_map(|r| r.docs.iter().map(|(d, _)| &d.doc_id))
            .collect();
        let fresh: Vec<String> = sync
            .iter()
            .filter(|d| ours.get(*d).is_none_or(Vec::is_empty) && !dirty_docs.contains(d))
            .cloned()
            .collect();
        let fetched = self.fetch_fresh(session, fresh).await?;
        sync.retain(|d| !fetched.contains(d));
        in_step.extend(fetched.iter().cloned());
        if let Ok(mut f) = self.catalogue_fresh.lock() {
            *f = Some((Arc::downgrade(session), std::time::Instant::now()));
        }
        Ok(Some(Plan {
            sync,
            in_step,
            assume_rest: false,
            fetched: fetched.len(),
            holdings,
        }))
    }

    /// Follows the holdings notice without waiting for it: the catalogue
    /// already said what the list is; the notice only wakes a later pass.
    pub(super) fn watch_notice(
        &self,
        id: &str,
        watched: &Arc<Mutex<HashSet<String>>>,
        changed_tx: &mpsc::UnboundedSender<()>,
    ) {
        let Ok(doc_id) = id.parse::<DocumentId>() else {
            return;
        };
        if !watched
            .lock()
            .map(|mut w| w.insert(id.to_owned()))
            .unwrap_or(false)
        {
            return;
        }
        self.storage.keep_in_memory_only(id);
        let (repo, tx, watched, id) = (
            self.repo.clone(),
            changed_tx.clone(),
            watched.clone(),
            id.to_owned(),
        );
        let moved = self.notice_moved.clone();
        tokio::spawn(async move {
            let Ok(Some(handle)) = repo.find(doc_id).await else {
                // Not found now: the next pass tries again.
                if let Ok(mut w) = watched.lock() {
                    w.remove(&id);
                }
                return;
            };
            let mut changes = handle.changes();
            while changes.next().await.is_some() {
                moved.store(true, Ordering::SeqCst);
                if tx.send(()).is_err() {
                    return;
                }
            }
        });
    }
}
