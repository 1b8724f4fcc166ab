//! Which documents the server sends each device, logged as they go
//! (`archive::sent`): each session's observer notes the first message of
//! the session carrying a document's changes, and one task writes them,
//! batched, off the async runtime. Logged moments after sending, not
//! before: a crash in between can lose the last moments' rows (the
//! device's samod asks for what it lacks again, and it is logged then).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use scr_core::channel::Observer;
use scr_core::protocol::wire;
use scr_core::record::Compartment;
use scr_core::{NhsNumber, Store};
use tokio::sync::mpsc;

use crate::archive::{Archive, SentNow};

/// Documents noted per session at most (a session names at most
/// `guard::flood::MAX_DOCUMENTS` anyway).
const MAX_NOTED: usize = 4096;
/// Notes (a session's one document, or a fetch's many) taken into one
/// transaction at most.
const BATCH: usize = 512;

/// A document sent, with its patient and compartment when the sender
/// knew them (a fetch answers from the holdings list, which names both);
/// otherwise the writer looks them up.
pub type SentDoc = (String, Option<(NhsNumber, Compartment)>);

/// What the writer is handed: documents sent, or a wish to know that
/// everything handed before is written.
enum Note {
    Sent([u8; 32], Vec<SentDoc>),
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Hands each session its observer; writes what they note.
#[derive(Clone)]
pub struct SentLog {
    to_writer: mpsc::UnboundedSender<Note>,
}

impl SentLog {
    /// Starts the writer (it ends when every observer and this are gone).
    pub fn start(store: Store, archive: Arc<Archive>) -> Self {
        let (to_writer, mut from_sessions) = mpsc::unbounded_channel::<Note>();
        tokio::spawn(async move {
            let mut batch = Vec::new();
            while from_sessions.recv_many(&mut batch, BATCH).await > 0 {
                let (store, archive) = (store.clone(), archive.clone());
                let mut flushes = Vec::new();
                let mut noted: Vec<([u8; 32], SentDoc)> = Vec::new();
                for note in std::mem::take(&mut batch) {
                    match note {
                        Note::Sent(device, docs) => {
                            noted.extend(docs.into_iter().map(|d| (device, d)));
                        }
                        Note::Flush(done) => flushes.push(done),
                    }
                }
                if !noted.is_empty() {
                    let written =
                        tokio::task::spawn_blocking(move || write(&store, &archive, noted));
                    if !matches!(written.await, Ok(Ok(()))) {
                        tracing::warn!("documents sent to devices could not be logged");
                    }
                }
                for done in flushes {
                    let _ = done.send(());
                }
            }
        });
        Self { to_writer }
    }

    /// Resolves once everything noted before it has been through the
    /// writer (written, or its failure logged; a shutdown waits for it).
    pub async fn flush(&self) {
        let (done, written) = tokio::sync::oneshot::channel();
        if self.to_writer.send(Note::Flush(done)).is_ok() {
            let _ = written.await;
        }
    }

    /// Documents sent to `device` outside samod (a fetch's answer): one
    /// batch, appended in one transaction.
    pub fn sent(&self, device: [u8; 32], docs: Vec<SentDoc>) {
        if !docs.is_empty() {
            let _ = self.to_writer.send(Note::Sent(device, docs));
        }
    }

    /// The observer of one session of `device`.
    pub fn observer(&self, device: [u8; 32]) -> Observer {
        let to_writer = self.to_writer.clone();
        let noted = Mutex::new(HashSet::<String>::new());
        Box::new(move |message: &[u8]| {
            let Some((kind, Some(doc))) = wire::kind_and_document(message) else {
                return;
            };
            let Ok(mut noted) = noted.lock() else {
                return;
            };
            if kind != "sync" || noted.contains(&doc) || noted.len() >= MAX_NOTED {
                return;
            }
            let carries_changes = wire::parse(message)
                .and_then(|m| m.sync)
                .is_some_and(|s| s.is_ok_and(|s| !s.changes.is_empty()));
            if carries_changes {
                noted.insert(doc.clone());
                let _ = to_writer.send(Note::Sent(device, vec![(doc, None)]));
            }
        })
    }
}

/// Logs each noted document of a patient's record (a device's holdings
/// list is no patient's: not logged).
fn write(
    store: &Store,
    archive: &Archive,
    noted: Vec<([u8; 32], SentDoc)>,
) -> Result<(), crate::archive::ArchiveError> {
    let sent: Vec<SentNow> = noted
        .into_iter()
        .filter_map(|(device, (document, owner))| {
            let (patient, compartment) = match owner {
                Some(owner) => owner,
                None => store.owner_of_document(&document).ok()??,
            };
            Some(SentNow {
                device,
                document,
                patient,
                compartment,
            })
        })
        .collect();
    archive.record_sent(&sent, scr_core::clock::now_ms())
}
