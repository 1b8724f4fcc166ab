//! What the sync driver's catalogue exchange (ADR 0016) needs of the
//! engine: every held record's documents with their heads, read with one
//! replica per record, and the digest of the holdings list last applied,
//! kept across restarts so an unchanged list is not sent again. The digest
//! is kept with one of the set of records held just after: if the device
//! later holds a different set (a record forgotten by retention, a wipe),
//! it asks for the list again.

use automerge::ChangeHash;

use super::{Engine, EngineError, HoldingsOutcome};
use crate::NhsNumber;
use crate::protocol::{HoldingsList, list_digest};
use crate::store::DocumentInfo;

const LIST_DIGEST: &str = "sync-catalogue-list-digest";

/// One held record as the catalogue describes it.
pub struct HeldRecord {
    pub nhs: NhsNumber,
    /// Each document with its heads (empty: nothing of it arrived yet).
    pub docs: Vec<(DocumentInfo, Vec<ChangeHash>)>,
}

impl Engine {
    /// Every record the device holds, with its documents' heads.
    pub fn held_records(&self) -> Result<Vec<HeldRecord>, EngineError> {
        let mut state = self.state()?;
        let mut out = Vec::new();
        for holding in self.store.holdings()? {
            let nhs = holding.nhs_number;
            let docs = match self.store.documents_of_record(&nhs) {
                Ok(docs) => docs,
                Err(crate::store::StoreError::RecordNotFound) => continue,
                Err(e) => return Err(e.into()),
            };
            let heads = self
                .with_sync_replica(&mut state, &nhs, |r| {
                    Ok(docs
                        .iter()
                        .map(|d| r.heads_of(&d.doc_id).unwrap_or_default())
                        .collect::<Vec<_>>())
                })?
                .unwrap_or_else(|| vec![Vec::new(); docs.len()]);
            out.push(HeldRecord {
                nhs,
                docs: docs.into_iter().zip(heads).collect(),
            });
        }
        Ok(out)
    }

    /// The digest of the list last applied through the catalogue, if the
    /// device still holds exactly what it held after applying it.
    pub fn applied_list_digest(&self) -> Result<Option<String>, EngineError> {
        let Some(kept) = self.store.secret(LIST_DIGEST)? else {
            return Ok(None);
        };
        let kept = String::from_utf8_lossy(&kept).into_owned();
        let Some((list, held)) = kept.split_once(':') else {
            return Ok(None);
        };
        Ok((held == self.held_set_digest()?).then(|| list.to_owned()))
    }

    /// Applies a list the catalogue sent, and keeps its digest, unless a
    /// record it no longer names was kept for its unsent changes: once they
    /// are sent, the same list must be applied again to forget it.
    pub fn apply_catalogue_list(
        &self,
        list: &HoldingsList,
    ) -> Result<HoldingsOutcome, EngineError> {
        let outcome = self.apply_holdings(list)?;
        let kept = if outcome.kept_unsent > 0 {
            String::new()
        } else {
            format!("{}:{}", list_digest(list), self.held_set_digest()?)
        };
        self.store.put_secret(LIST_DIGEST, kept.as_bytes())?;
        Ok(outcome)
    }

    /// In the transaction forgetting a record: the next catalogue asks for
    /// the list whatever it held, and no digest over a set that named the
    /// forgotten record is left.
    pub(super) fn forget_list_digest_tx(
        &self,
        tx: &dyn crate::store::Rows,
    ) -> Result<(), crate::StoreError> {
        self.store
            .put_sealed_meta_tx(tx, &format!("secret:{LIST_DIGEST}"), b"")
    }

    fn held_set_digest(&self) -> Result<String, EngineError> {
        let mut held: Vec<String> = self
            .store
            .holdings()?
            .into_iter()
            .map(|h| h.nhs_number.to_string())
            .collect();
        held.sort();
        let mut h = blake3::Hasher::new_derive_key("scr-sync held records v1");
        for n in held {
            h.update(n.as_bytes());
            h.update(b"\n");
        }
        Ok(crate::channel::to_hex(&h.finalize().as_bytes()[..16]))
    }
}
