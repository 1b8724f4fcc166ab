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

use crate::policy::AccessPolicy;

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

    /// Documents whose heads are kept.
    pub fn heads_kept(&self) -> usize {
        self.heads.len()
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

/// Answers one device's asks on its session: the catalogue (JSON) and the
/// fetch (binary, `protocol::fetch`).
pub fn answerer(desk: CatalogueDesk, asking: Asking) -> Answerer {
    Arc::new(move |question: Vec<u8>| {
        let desk = desk.clone();
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
            let answered = tokio::task::spawn_blocking(move || match ask {
                Ask::Catalogue(request) => {
                    serde_json::to_vec(&desk.answer(asking, &request)).unwrap_or_default()
                }
                Ask::Fetch(request) => desk.fetch(asking, &request.docs).encode(),
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
    /// Blocking: the share policy, SQLite, document loads on a cold index.
    pub fn answer(&self, asking: Asking, request: &CatalogueRequest) -> CatalogueReply {
        let Asking {
            ref device,
            session,
            layout,
        } = asking;
        let refused = crate::refusals::of_device(&self.store, device);
        let Some(list) = self.policy.holdings_for(device) else {
            self.catalogue.watchers.forget(device, session);
            return CatalogueReply::Answered {
                list: None,
                has_grant: false,
                differing: Vec::new(),
                refused,
            };
        };
        let list = if layout == 1 {
            list.in_layout_1()
        } else {
            list
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
        let (mut differing, mut in_step) = (Vec::new(), Vec::new());
        for patient in &list.patients {
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
            let same = readable
                && docs
                    .iter()
                    .map(|(d, _)| d.as_str())
                    .min()
                    .and_then(|key| named.get(key))
                    .is_some_and(|theirs| *theirs == record_digest(&docs));
            if same {
                in_step.extend(docs.into_iter().map(|(d, _)| d));
            } else {
                differing.extend(docs.into_iter().map(|(doc, heads)| DocHeads {
                    heads: heads_to_hex(&heads),
                    doc,
                }));
            }
        }
        // What samod will bring in step is joined there; only the rest
        // stays watched here.
        self.catalogue.watchers.watch(*device, session, in_step);
        let list = (request.list.as_deref() != Some(list_digest(&list).as_str())).then_some(list);
        CatalogueReply::Answered {
            list,
            has_grant: true,
            differing,
            refused,
        }
    }

    /// The stored bytes of each asked document the device may hold now,
    /// in the order asked, until the answer's budget is spent (the device
    /// asks again for the rest). Blocking: the share policy and SQLite.
    pub fn fetch(&self, asking: Asking, docs: &[String]) -> FetchAnswer {
        let Some(list) = self.policy.holdings_for(&asking.device) else {
            return FetchAnswer::Documents(
                docs.iter()
                    .map(|doc| Fetched::Withheld { doc: doc.clone() })
                    .collect(),
            );
        };
        let list = if asking.layout == 1 {
            list.in_layout_1()
        } else {
            list
        };
        let listed: std::collections::HashSet<&str> = list
            .patients
            .iter()
            .flat_map(|p| p.documents.iter().map(|d| d.doc_id.as_str()))
            .collect();
        let (mine, withheld): (Vec<&String>, Vec<&String>) =
            docs.iter().partition(|d| listed.contains(d.as_str()));
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
                    sent.push(doc.clone());
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
        self.sent.sent(asking.device, sent);
        FetchAnswer::Documents(out)
    }
}
