//! The server's log of every document it sent to each device: a row per
//! (device, document), first and last sent, sealed like the events beside
//! it. A device's own trail says what its user opened; this says what the
//! device could have read, unmodified or not.

use scr_core::NhsNumber;
use scr_core::crypto;
use scr_core::record::Compartment;
use serde::{Deserialize, Serialize};

use super::rows::SentRow;
use super::{Archive, ArchiveError};

const SENT: &[u8] = b"sent";

/// One document sent to a device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    pub document: String,
    pub patient: NhsNumber,
    pub compartment: Compartment,
    #[serde(skip)]
    pub first_sent_ms: i64,
    #[serde(skip)]
    pub last_sent_ms: i64,
}

/// A document just sent to a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentNow {
    pub device: [u8; 32],
    pub document: String,
    pub patient: NhsNumber,
    pub compartment: Compartment,
}

impl Archive {
    /// Notes, in one transaction, that each document (of a patient's
    /// compartment) went to its device at `now_ms`.
    pub fn record_sent(&self, sent: &[SentNow], now_ms: i64) -> Result<(), ArchiveError> {
        let rows = sent
            .iter()
            .map(|s| {
                let doc_ref = self.lookup.hash(&[b"document", s.document.as_bytes()]);
                let entry = Sent {
                    document: s.document.clone(),
                    patient: s.patient,
                    compartment: s.compartment,
                    first_sent_ms: now_ms,
                    last_sent_ms: now_ms,
                };
                let plain = serde_json::to_vec(&entry).map_err(|_| ArchiveError::Tampered)?;
                let sealed = crypto::seal(&self.seal, &[SENT, &s.device, &doc_ref], &plain)
                    .map_err(|_| ArchiveError::Tampered)?;
                Ok(SentRow {
                    device: s.device,
                    doc_ref,
                    patient_ref: self.patient_ref(&s.patient),
                    sealed,
                })
            })
            .collect::<Result<Vec<_>, ArchiveError>>()?;
        self.rows.record_sent(&rows, now_ms)
    }

    /// Every document sent to `device`, first sent first.
    pub fn sent_to(&self, device: &[u8; 32]) -> Result<Vec<Sent>, ArchiveError> {
        let rows = self.rows.sent_to(device)?;
        rows.into_iter()
            .map(|r| {
                let (doc_ref, first, last, sealed) =
                    (r.doc_ref, r.first_sent_ms, r.last_sent_ms, r.sealed);
                let plain = crypto::open(&self.seal, &[SENT, device, &doc_ref], &sealed)
                    .map_err(|_| ArchiveError::Tampered)?;
                let mut sent: Sent =
                    serde_json::from_slice(&plain).map_err(|_| ArchiveError::Tampered)?;
                (sent.first_sent_ms, sent.last_sent_ms) = (first, last);
                Ok(sent)
            })
            .collect()
    }
}
