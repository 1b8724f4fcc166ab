//! The catalogue exchange, the server's side (ADR 0016, part 2): a device
//! names each record it holds with a digest; the server answers, in the
//! same round trip, with its list when the device's is out of date and with
//! every document of a record whose digest differs. Only those run samod's
//! sync. The answer names nothing the share policy would not send the
//! device: it is computed from the same holdings list (`policy`), so a
//! device naming a record it may not hold learns nothing of it.
//!
//! Heads come from an index kept per document (`heads`); a document found
//! in step is watched for the device (`watch`), and a later write to it
//! bumps the device's holdings notice.

mod heads;
mod watch;

use std::collections::HashMap;
use std::sync::Arc;

use scr_core::Store;
use scr_core::channel::Answerer;
use scr_core::protocol::{
    Ask, CatalogueReply, CatalogueRequest, DocHeads, FETCH_ANSWER_BUDGET, FetchAnswer, Fetched,
    heads_to_hex, list_digest, record_digest,
};
use tokio::sync::mpsc;

pub use heads::{HeadsError, HeadsIndex};
pub use watch::Watchers;

use crate::policy::{AccessPolicy, PolicyStamp};
use scr_core::protocol::HoldingsList;

type Device = [u8; 32];

/// The server's catalogue state: the heads index and who watches what.
pub struct Catalogue {
    heads: HeadsIndex,
    watchers: Watchers,
    /// Devices whose notice to bump (a task of the server does it).
    notify: mpsc::UnboundedSender<Device>,
    sessions: std::sync::atomic::AtomicU64,
}

impl Catalogue {
    /// The catalogue, and the devices to notify as they come.
    pub fn new() -> (Arc<Self>, mpsc::UnboundedReceiver<Device>) {
        let (notify, rx) = mpsc::unbounded_channel();
        let c = Self {
            heads: HeadsIndex::default(),
            watchers: Watchers::default(),
            notify,
            sessions: Default::default(),
        };
        (Arc::new(c), rx)
    }

    /// samod wrote the document (a put or a delete of one of its chunks).
    pub fn written(&self, doc: &str) {
        self.heads.written(doc);
        for device in self.watchers.written(doc) {
            let _ = self.notify.send(device);
        }
    }

    /// Every document the catalogue keeps anything of (heads indexed, or
    /// devices watching it): what another node's write of it must reach.
    pub fn known_documents(&self) -> Vec<String> {
        let mut docs = self.heads.documents();
        docs.extend(self.watchers.documents());
        docs
    }

    /// Another process wrote documents (an admin command): nothing kept
    /// holds, and every watching device asks again.
    pub fn outside_write(&self) {
        self.heads.clear();
        for device in self.watchers.all() {
            let _ = self.notify.send(device);
        }
    }

    /// The device's samod syncs `doc` on its session (a message of it
    /// arrived): it gets the document's changes through samod now.
    pub fn joined(&self, device: &Device, doc: &str) {
        self.watchers.joined(device, doc);
    }

    /// A number for a new sync session, for [`answerer`] and
    /// [`Catalogue::session_ended`].
    pub fn session_number(&self) -> u64 {
        self.sessions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .wrapping_add(1)
    }

    /// The device's sync session numbered `session` ended.
    pub fn session_ended(&self, device: &Device, session: u64) {
        self.watchers.forget(device, session);
    }
}

/// What answering needs.
#[derive(Clone)]
pub struct CatalogueDesk {
    pub catalogue: Arc<Catalogue>,
    pub policy: AccessPolicy,
    pub store: Store,
    /// What a fetch sends is logged as samod's sends are.
    pub sent: crate::sent_log::SentLog,
}

/// The session a catalogue is asked on.
#[derive(Clone, Copy)]
pub struct Asking {
    pub device: Device,
    /// [`Catalogue::session_number`].
    pub session: u64,
    /// The record layout the device's hello named.
    pub layout: u8,
}

/// A session's last holdings list, the stamp it was computed under and
/// when: the fetches that follow a catalogue reuse it for a moment.
type ListCache =
    Arc<std::sync::Mutex<Option<(PolicyStamp, std::time::Instant, Arc<HoldingsList>)>>>;

/// How long a session's list is reused while the policy's inputs have not
/// moved (the clock alone moves an expiry: one second at most late).
const LIST_REUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// Answers one device's asks on its session: the catalogue (JSON) and the
/// fetch (binary, `protocol::fetch`).
pub fn answerer(desk: CatalogueDesk, asking: Asking) -> Answerer {
    let lists = ListCache::default();
    // Documents this session's fetches sent and logged: each logged once
    // however often it is asked for again.
    let logged: Arc<std::sync::Mutex<std::collections::HashSet<String>>> = Arc::default();
    Arc::new(move |question: Vec<u8>| {
        let (desk, lists, logged) = (desk.clone(), lists.clone(), logged.clone());
        Box::pin(async move {
            let ask = match Ask::decode(&question) {
                Ok(ask) => ask,
                Err(e) => {
                    let refused = CatalogueReply::Refused {
                        reason: e.to_string(),
                    };
                    return serde_json::to_vec(&refused).unwrap_or_default();
                }
            };
            let fetching = matches!(ask, Ask::Fetch(_));
            let answered = tokio::task::spawn_blocking(move || {
                let list = desk.list_for(asking, &lists);
                match ask {
                    Ask::Catalogue(request) => {
                        serde_json::to_vec(&desk.answer(asking, list, &request)).unwrap_or_default()
                    }
                    Ask::Fetch(request) => {
                        let (answer, sent) = desk.fetch(asking, list, &request.docs);
                        let new: Vec<_> = match logged.lock() {
                            Ok(mut logged) => sent
                                .into_iter()
                                .filter(|(d, _)| logged.insert(d.clone()))
                                .collect(),
                            Err(_) => sent,
                        };
                        desk.sent.sent(asking.device, new);
                        answer.encode()
                    }
                }
            })
            .await;
            answered.unwrap_or_else(|_| {
                let reason = "the ask could not be answered".to_owned();
                if fetching {
                    FetchAnswer::Refused(reason).encode()
                } else {
                    serde_json::to_vec(&CatalogueReply::Refused { reason }).unwrap_or_default()
                }
            })
        })
    })
}

impl CatalogueDesk {
    /// The device's current list as its app reads it (`None`: no current
    /// grant), reused from `lists` while the policy's inputs stand and it
    /// is under a second old. Blocking.
    fn list_for(&self, asking: Asking, lists: &ListCache) -> Option<Arc<HoldingsList>> {
        let stamp = self.policy.stamp_for(&asking.device);
        if let Ok(cached) = lists.lock()
            && let Some((at, when, list)) = cached.as_ref()
            && *at == stamp
            && when.elapsed() < LIST_REUSE
        {
            return Some(list.clone());
        }
        let list = self.policy.holdings_for(&asking.device)?;
        let list = Arc::new(if asking.layout == 1 {
            list.in_layout_1()
        } else {
            list
        });
        if let Ok(mut cached) = lists.lock() {
            *cached = Some((stamp, std::time::Instant::now(), list.clone()));
        }
        Some(list)
    }

    /// Blocking: SQLite, document loads on a cold index.
    pub fn answer(
        &self,
        asking: Asking,
        list: Option<Arc<HoldingsList>>,
        request: &CatalogueRequest,
    ) -> CatalogueReply {
        let Asking {
            ref device,
            session,
            ..
        } = asking;
        let refused = crate::refusals::of_device(&self.store, device);
        let Some(list) = list else {
            self.catalogue.watchers.forget(device, session);
            return CatalogueReply::Answered {
                list: None,
                has_grant: false,
                differing: Vec::new(),
                matched: Vec::new(),
                refused,
            };
        };
        let named: HashMap<&str, &str> = request
            .records
            .iter()
            .map(|r| (r.doc.as_str(), r.digest.as_str()))
            .collect();
        // Watch every listed document before reading heads: a write from
        // here on notifies the device, so heads read before it are never
        // the last word.
        let listed: Vec<String> = list
            .patients
            .iter()
            .flat_map(|p| p.documents.iter().map(|d| d.doc_id.clone()))
            .collect();
        self.catalogue.watchers.watch(*device, session, listed);
        let (mut differing, mut matched) = (Vec::new(), Vec::new());
        for patient in &list.patients {
            // A record the device did not name at all it holds nothing of
            // to compare: its documents go without heads, none read.
            let named_here = patient
                .documents
                .iter()
                .any(|d| named.contains_key(d.doc_id.as_str()));
            if !named_here {
                differing.extend(patient.documents.iter().map(|d| DocHeads {
                    heads: Vec::new(),
                    doc: d.doc_id.clone(),
                }));
                continue;
            }
            let docs: Vec<_> = patient
                .documents
                .iter()
                .map(|d| {
                    let heads = self.catalogue.heads.heads(&self.store, &d.doc_id);
                    if let Err(e) = &heads {
                        tracing::warn!(error = %e, "a document's heads could not be read");
                    }
                    (d.doc_id.clone(), heads.ok())
                })
                .collect();
            let readable = docs.iter().all(|(_, h)| h.is_some());
            let docs: Vec<_> = docs
                .into_iter()
                .map(|(d, h)| (d, h.unwrap_or_default()))
                .collect();
            let key = docs.iter().map(|(d, _)| d.as_str()).min();
            let same = readable
                && key
                    .and_then(|key| named.get(key))
                    .is_some_and(|theirs| *theirs == record_digest(&docs));
            if same {
                matched.extend(key.map(str::to_owned));
            } else {
                differing.extend(docs.into_iter().map(|(doc, heads)| DocHeads {
                    heads: heads_to_hex(&heads),
                    doc,
                }));
            }
        }
        // Every listed document stays watched: one the device then syncs
        // through samod leaves the watch when a message of it arrives
        // (`Catalogue::joined`); one it found equal, or fetches, stays.
        let list = (request.list.as_deref() != Some(list_digest(&list).as_str()))
            .then(|| HoldingsList::clone(&list));
        CatalogueReply::Answered {
            list,
            has_grant: true,
            differing,
            matched,
            refused,
        }
    }

    /// The stored bytes of each asked document the device may hold now,
    /// in the order asked, until the answer's budget is spent (the device
    /// asks again for the rest), and the ids of those sent (for the sent
    /// log). Blocking: SQLite unless the bytes are kept.
    pub fn fetch(
        &self,
        asking: Asking,
        list: Option<Arc<HoldingsList>>,
        docs: &[String],
    ) -> (FetchAnswer, Vec<crate::sent_log::SentDoc>) {
        let Some(list) = list else {
            let withheld = docs
                .iter()
                .map(|doc| Fetched::Withheld { doc: doc.clone() })
                .collect();
            return (FetchAnswer::Documents(withheld), Vec::new());
        };
        let listed: HashMap<&str, (scr_core::NhsNumber, scr_core::record::Compartment)> = list
            .patients
            .iter()
            .flat_map(|p| {
                p.documents
                    .iter()
                    .map(|d| (d.doc_id.as_str(), (p.nhs_number, d.compartment)))
            })
            .collect();
        let (mine, withheld): (Vec<&String>, Vec<&String>) =
            docs.iter().partition(|d| listed.contains_key(d.as_str()));
        // Watched before they are read: a write after the read notifies.
        let mine_owned: Vec<String> = mine.iter().map(|d| (*d).clone()).collect();
        self.catalogue
            .watchers
            .add(asking.device, asking.session, mine_owned);
        let mut out: Vec<Fetched> = withheld
            .into_iter()
            .map(|doc| Fetched::Withheld { doc: doc.clone() })
            .collect();
        let (mut spent, mut sent) = (0usize, Vec::new());
        for doc in mine {
            if spent >= FETCH_ANSWER_BUDGET {
                break;
            }
            match self.catalogue.heads.bytes(&self.store, doc) {
                Ok(bytes) if !bytes.is_empty() => {
                    spent += bytes.len();
                    sent.push((doc.clone(), listed.get(doc.as_str()).copied()));
                    out.push(Fetched::Bytes {
                        doc: doc.clone(),
                        bytes: bytes.to_vec(),
                    });
                }
                // Nothing stored, or unreadable: samod's sync will say.
                Ok(_) => out.push(Fetched::Withheld { doc: doc.clone() }),
                Err(e) => {
                    tracing::warn!(error = %e, "a document to fetch could not be read");
                    out.push(Fetched::Withheld { doc: doc.clone() });
                }
            }
        }
        (FetchAnswer::Documents(out), sent)
    }
}
