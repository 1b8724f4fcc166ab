//! The holdings list: one Automerge document per device, written only by the
//! server and shared read-only with that device, saying which patients'
//! documents the device should hold and why. The device registers what it
//! lists, syncs it, and forgets what it no longer lists, so a patient
//! leaving a caseload, an incident closing or a patient going core-only
//! reaches the device on its next sync.
//!
//! Format 1: `{"format": 1, "holdings": "<JSON of HoldingsList>"}`. The list
//! is one string because only the server writes it (no concurrent edits to
//! merge) and the device needs it whole.

use automerge::transaction::Transactable;
use automerge::{Automerge, ROOT, ReadDoc, ScalarValue, Value};
use serde::{Deserialize, Serialize};

use crate::NhsNumber;
use crate::store::{DocumentInfo, HoldReason};

pub const HOLDINGS_FORMAT: u64 = 1;

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
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HoldingsError {
    #[error("the holdings list has format {0}, newer than this app understands")]
    NewerFormat(u64),
    #[error("the holdings document is malformed")]
    Malformed,
}

impl HoldingsList {
    /// Writes the list into `doc` if it differs from what is there; returns
    /// whether it changed.
    pub fn write_to(&self, doc: &mut Automerge) -> Result<bool, HoldingsError> {
        if Self::read_from(doc).ok().flatten().as_ref() == Some(self) {
            return Ok(false);
        }
        let json = serde_json::to_string(self).map_err(|_| HoldingsError::Malformed)?;
        doc.transact::<_, _, automerge::AutomergeError>(|tx| {
            tx.put(ROOT, "format", HOLDINGS_FORMAT)?;
            tx.put(ROOT, "holdings", json)?;
            Ok(())
        })
        .map_err(|_| HoldingsError::Malformed)?;
        Ok(true)
    }

    /// The list in `doc`; `None` while the document is still empty (not yet
    /// received from the server).
    pub fn read_from<D: ReadDoc>(doc: &D) -> Result<Option<Self>, HoldingsError> {
        let format = match doc.get(ROOT, "format") {
            Ok(None) => return Ok(None),
            Ok(Some((Value::Scalar(s), _))) => match s.as_ref() {
                ScalarValue::Uint(n) => *n,
                ScalarValue::Int(n) => u64::try_from(*n).map_err(|_| HoldingsError::Malformed)?,
                _ => return Err(HoldingsError::Malformed),
            },
            _ => return Err(HoldingsError::Malformed),
        };
        if format > HOLDINGS_FORMAT {
            return Err(HoldingsError::NewerFormat(format));
        }
        let json = match doc.get(ROOT, "holdings") {
            Ok(Some((Value::Scalar(s), _))) => match s.as_ref() {
                ScalarValue::Str(j) => j.to_string(),
                _ => return Err(HoldingsError::Malformed),
            },
            _ => return Err(HoldingsError::Malformed),
        };
        serde_json::from_str(&json)
            .map(Some)
            .map_err(|_| HoldingsError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::test_nhs_number;
    use crate::record::Compartment;

    fn list() -> HoldingsList {
        HoldingsList {
            grant_id: "g1".into(),
            patients: vec![HeldPatient {
                nhs_number: test_nhs_number(1),
                reason: HoldReason::Caseload,
                documents: vec![DocumentInfo {
                    doc_id: "doc-a".into(),
                    compartment: Compartment::Core,
                }],
            }],
        }
    }

    #[test]
    fn a_list_round_trips_and_rewriting_it_unchanged_makes_no_change() {
        let mut doc = Automerge::new();
        assert_eq!(HoldingsList::read_from(&doc), Ok(None));
        assert_eq!(list().write_to(&mut doc), Ok(true));
        assert_eq!(HoldingsList::read_from(&doc), Ok(Some(list())));
        let heads = doc.get_heads();
        assert_eq!(list().write_to(&mut doc), Ok(false));
        assert_eq!(doc.get_heads(), heads);
    }

    #[test]
    fn a_newer_format_or_garbage_is_a_typed_error() {
        let mut doc = automerge::AutoCommit::new();
        doc.put(ROOT, "format", 2u64).unwrap();
        assert_eq!(
            HoldingsList::read_from(&doc),
            Err(HoldingsError::NewerFormat(2))
        );
        let mut doc = automerge::AutoCommit::new();
        doc.put(ROOT, "format", 1u64).unwrap();
        doc.put(ROOT, "holdings", "{not json").unwrap();
        assert_eq!(HoldingsList::read_from(&doc), Err(HoldingsError::Malformed));
        let mut doc = automerge::AutoCommit::new();
        doc.put(ROOT, "format", "one").unwrap();
        assert_eq!(HoldingsList::read_from(&doc), Err(HoldingsError::Malformed));
    }
}
