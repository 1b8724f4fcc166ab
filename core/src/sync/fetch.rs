//! The fetch (ADR 0016, part 2): documents the catalogue named that the
//! device holds nothing of come as the server stores them, many to an
//! answer, instead of one samod exchange each. Each goes through the
//! engine's merge, which reads it with the `untrusted` guard and refuses
//! a foreign or newer-format document; one that fails is left to samod's
//! sync.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::SyncError;
use super::driver::{Driver, blocking};
use crate::channel::Session;
use crate::protocol::{Ask, FetchAnswer, FetchRequest, Fetched, MAX_FETCH_DOCS};

impl Driver {
    /// Fetches `fresh` in batches; returns the ids the engine took.
    pub(super) async fn fetch_fresh(
        &self,
        session: &Arc<Session>,
        fresh: Vec<String>,
    ) -> Result<HashSet<String>, SyncError> {
        let mut fetched = HashSet::new();
        if fresh.is_empty() {
            return Ok(fetched);
        }
        let owners: HashMap<String, _> = blocking(&self.engine, |e| e.held_documents())
            .await?
            .into_iter()
            .map(|(nhs, d)| (d.doc_id, (nhs, d.compartment)))
            .collect();
        let mut wanted: HashSet<String> = fresh
            .into_iter()
            .filter(|d| owners.contains_key(d))
            .collect();
        while !wanted.is_empty() {
            let docs: Vec<String> = wanted.iter().take(MAX_FETCH_DOCS).cloned().collect();
            let ask = Ask::Fetch(FetchRequest { docs }).encode();
            let answer = match tokio::time::timeout(self.config.pass_wait, session.ask(ask)).await {
                Ok(Ok(answer)) => answer,
                _ => break,
            };
            let got = match FetchAnswer::decode(&answer) {
                Ok(FetchAnswer::Documents(got)) => got,
                Ok(FetchAnswer::Refused(reason)) => {
                    tracing::warn!(%reason, "the server refused a fetch");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "a fetch's answer was not read");
                    break;
                }
            };
            // Only what was asked (documents this device holds nothing of)
            // is taken: bytes for anything else, a held document above all,
            // would skip the received-changes rules samod's path applies.
            let mut answered = HashSet::new();
            let mut merges = Vec::new();
            for f in got {
                let doc = match &f {
                    Fetched::Bytes { doc, .. } | Fetched::Withheld { doc } => doc.clone(),
                };
                if !wanted.contains(&doc) || !answered.insert(doc.clone()) {
                    continue;
                }
                if let (Fetched::Bytes { bytes, .. }, Some((nhs, compartment))) =
                    (f, owners.get(&doc))
                {
                    let export = crate::CompartmentExport {
                        compartment: *compartment,
                        doc_id: doc,
                        bytes,
                    };
                    merges.push((*nhs, export));
                }
            }
            // An answer naming nothing asked moves nothing on: stop.
            wanted.retain(|d| !answered.contains(d));
            if answered.is_empty() {
                break;
            }
            let taken = blocking(&self.engine, move |e| {
                let mut taken = Vec::new();
                for (nhs, export) in merges {
                    match e.merge_synced(&nhs, &export) {
                        Ok(true) => taken.push(export.doc_id),
                        Ok(false) => {}
                        Err(err) => {
                            tracing::warn!(error = %err, "a fetched document was refused; left to sync");
                        }
                    }
                }
                Ok(taken)
            })
            .await?;
            fetched.extend(taken);
        }
        Ok(fetched)
    }
}
