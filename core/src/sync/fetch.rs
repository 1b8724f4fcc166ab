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
use crate::engine::{Engine, EngineError};
use crate::protocol::{Ask, FetchAnswer, FetchRequest, Fetched, MAX_FETCH_DOCS};
use crate::record::CompartmentDoc;
use crate::{CompartmentExport, NhsNumber};

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
        // Each answer is read and merged while the next is asked for.
        let mut taking: Option<tokio::task::JoinHandle<Result<Vec<String>, SyncError>>> = None;
        while !wanted.is_empty() {
            let docs: Vec<String> = wanted.iter().take(MAX_FETCH_DOCS).cloned().collect();
            let ask = Ask::Fetch(FetchRequest { docs }).encode();
            let asked = tokio::time::timeout(self.config.pass_wait, session.ask(ask));
            let answer = match taking.take() {
                Some(previous) => {
                    let (answer, taken) = tokio::join!(asked, previous);
                    fetched.extend(taken.map_err(|_| SyncError::Internal)??);
                    answer
                }
                None => asked.await,
            };
            let answer = match answer {
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
            taking = Some(tokio::spawn(take_fetched(self.engine.clone(), merges)));
        }
        if let Some(last) = taking {
            fetched.extend(last.await.map_err(|_| SyncError::Internal)??);
        }
        Ok(fetched)
    }
}

/// Documents read at a time on one blocking thread: an answer's pieces are
/// read across the cores before the engine (one lock) takes them.
const READ_PIECE: usize = 48;
/// Pieces read ahead of the engine's merge at most: what a fetch holds in
/// memory stays a few pieces' worth, whatever an answer carries.
const READ_AHEAD: usize = 2;

type Read = Vec<(
    NhsNumber,
    CompartmentExport,
    Result<CompartmentDoc, crate::record::DocError>,
)>;

/// Reads one piece of an answer (the `untrusted` guard, then Automerge).
fn read_piece(piece: Vec<(NhsNumber, CompartmentExport)>) -> tokio::task::JoinHandle<Read> {
    tokio::task::spawn_blocking(move || {
        piece
            .into_iter()
            .map(|(nhs, export)| {
                let read = CompartmentDoc::load(export.compartment, &export.bytes);
                (nhs, export, read)
            })
            .collect()
    })
}

/// Reads one answer's documents in pieces across the cores, a few pieces
/// ahead of the engine, which takes each piece as it is read; returns the
/// ids taken. One that fails to read or merge is left to samod's sync.
async fn take_fetched(
    engine: Arc<Engine>,
    merges: Vec<(NhsNumber, CompartmentExport)>,
) -> Result<Vec<String>, SyncError> {
    let mut merges = merges.into_iter().peekable();
    let mut next_piece = move || {
        merges
            .peek()
            .is_some()
            .then(|| merges.by_ref().take(READ_PIECE).collect::<Vec<_>>())
    };
    let mut reading = std::collections::VecDeque::new();
    let mut taken = Vec::new();
    loop {
        while reading.len() < READ_AHEAD {
            match next_piece() {
                Some(piece) => reading.push_back(read_piece(piece)),
                None => break,
            }
        }
        let Some(first) = reading.pop_front() else {
            break;
        };
        let read = first.await.map_err(|_| SyncError::Internal)?;
        // The next piece reads while this one is merged.
        if let Some(piece) = next_piece() {
            reading.push_back(read_piece(piece));
        }
        let merged = blocking(&engine, move |e| {
            let mut taken = Vec::new();
            for (nhs, export, doc) in read {
                let merged = doc
                    .map_err(|err| EngineError::Store(err.into()))
                    .and_then(|doc| e.merge_fetched(&nhs, &export, Some(doc)));
                match merged {
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
        taken.extend(merged);
    }
    Ok(taken)
}
