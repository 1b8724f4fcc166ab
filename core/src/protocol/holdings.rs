//! What a device should hold and why. The list itself travels over a
//! one-shot request on the channel (`Purpose::Holdings`), never in an
//! Automerge document: a document keeps every value it ever had, so a list
//! kept in one would carry, for ever, every patient it ever named (ended
//! caseloads, opted-out patients, a shared tablet's previous user).
//!
//! What the device syncs instead is its *notice* document, shared read-only
//! with that device alone, holding only a counter (format 2:
//! `{"format": 2, "version": n}`) that the server increments whenever the
//! device's list changes. A change to it starts a pass, which fetches the
//! list, registers what it names and forgets what it no longer names.

use automerge::transaction::Transactable;
use automerge::{Automerge, ROOT, ReadDoc, ScalarValue, Value};
use serde::{Deserialize, Serialize};

use crate::NhsNumber;
use crate::store::{DocumentInfo, HoldReason};

pub const NOTICE_FORMAT: u64 = 2;

/// One patient the device should hold: why, and which compartment documents.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldPatient {
    pub nhs_number: NhsNumber,
    pub reason: HoldReason,
    pub documents: Vec<DocumentInfo>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldingsList {
    /// The grant the server computed this list from.
    pub grant_id: String,
    pub patients: Vec<HeldPatient>,
    /// Patients the user still has a relationship with whose record the
    /// patient withdrew (hidden, or opted out): forget them even with
    /// changes the server never received (they can no longer be delivered;
    /// the audit trail keeps what was done).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub withdrawn: Vec<crate::NhsNumber>,
}

impl HoldingsList {
    /// The list as an app of record layout 1 reads it: without the
    /// compartments that layout lacks.
    pub fn in_layout_1(mut self) -> Self {
        for p in &mut self.patients {
            p.documents
                .retain(|d| crate::record::Compartment::LAYOUT_1.contains(&d.compartment));
        }
        self
    }
}

/// The server's answer to a holdings request: no list when the device has
/// no current grant (it then keeps what it holds, under its own retention).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldingsReply {
    pub list: Option<HoldingsList>,
    /// The notice's version read just before the list was computed: the
    /// device knows the list is at least that new even if its own copy of
    /// the notice lags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice_version: Option<u64>,
    /// The pushes of this device the server refused (the newest
    /// `KEPT_REFUSALS`): what the app shows as "refused by the server".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<super::PushRefusal>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NoticeError {
    #[error("the holdings notice has format {0}, newer than this app understands")]
    NewerFormat(u64),
    #[error("the holdings notice is malformed")]
    Malformed,
}

/// Increments the notice's version (the server, when a list changed).
pub fn bump_notice(doc: &mut Automerge) -> Result<u64, NoticeError> {
    let next = read_notice(doc)?.unwrap_or(0) + 1;
    doc.transact::<_, _, automerge::AutomergeError>(|tx| {
        tx.put(ROOT, "format", NOTICE_FORMAT)?;
        tx.put(ROOT, "version", next)?;
        Ok(())
    })
    .map_err(|_| NoticeError::Malformed)?;
    Ok(next)
}

/// The notice's version; `None` while the document is still empty.
pub fn read_notice<D: ReadDoc>(doc: &D) -> Result<Option<u64>, NoticeError> {
    let uint = |key: &str| match doc.get(ROOT, key) {
        Ok(None) => Ok(None),
        Ok(Some((Value::Scalar(s), _))) => match s.as_ref() {
            ScalarValue::Uint(n) => Ok(Some(*n)),
            ScalarValue::Int(n) => u64::try_from(*n)
                .map(Some)
                .map_err(|_| NoticeError::Malformed),
            _ => Err(NoticeError::Malformed),
        },
        _ => Err(NoticeError::Malformed),
    };
    match uint("format")? {
        None => Ok(None),
        Some(f) if f > NOTICE_FORMAT => Err(NoticeError::NewerFormat(f)),
        Some(_) => uint("version"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_notice_counts_up_and_holds_nothing_else() {
        let mut doc = Automerge::new();
        assert_eq!(read_notice(&doc), Ok(None));
        assert_eq!(bump_notice(&mut doc), Ok(1));
        assert_eq!(bump_notice(&mut doc), Ok(2));
        assert_eq!(read_notice(&doc), Ok(Some(2)));
        let keys: Vec<String> = doc.keys(ROOT).collect();
        assert_eq!(keys, ["format", "version"]);
    }

    #[test]
    fn a_newer_format_or_garbage_is_a_typed_error() {
        let mut doc = automerge::AutoCommit::new();
        doc.put(ROOT, "format", 3u64).unwrap();
        assert_eq!(read_notice(&doc), Err(NoticeError::NewerFormat(3)));
        let mut doc = automerge::AutoCommit::new();
        doc.put(ROOT, "format", "two").unwrap();
        assert_eq!(read_notice(&doc), Err(NoticeError::Malformed));
        let reply: Result<HoldingsReply, _> = serde_json::from_slice(b"{\"list\": 7}");
        assert!(reply.is_err());
    }
}
