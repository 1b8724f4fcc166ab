//! A document the server refused part of, rebuilt on the device (issue
//! 16): the refused changes and what depends on them taken out, the
//! refused versions kept aside (quarantined: shown, never sent again), the
//! honest versions that waited on them put again, so the document is in
//! step with the server again. Audited; needs no unlocked session (sync
//! runs it in the background, with samod stopped).

use automerge::{Automerge, ChangeHash};

use super::{Engine, EngineError};
use crate::NhsNumber;
use crate::audit::AuditDraft;
use crate::record::rebuild::{RebuildError, rebuild};
use crate::record::{Compartment, EntryVersion};
use crate::store::StoreError;

/// What rebuilding one document did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rebuild {
    pub nhs_number: NhsNumber,
    pub compartment: Compartment,
    /// Versions the refused changes wrote, now kept aside.
    pub quarantined: usize,
    /// Versions written after them, put again on the rebuilt document.
    pub replayed: usize,
}

/// A version this device wrote that the server refused, kept aside.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "uniffi", derive(uniffi::Record))]
pub struct QuarantinedVersion {
    pub compartment: Compartment,
    pub version: EntryVersion,
}

impl Engine {
    /// Rebuilds `doc_id` without the changes `refused` names; `None` when
    /// the document holds none of them (already rebuilt, or not held).
    /// Must not run while samod holds the document (sync stopped).
    pub fn rebuild_refused(
        &self,
        doc_id: &str,
        refused: &[ChangeHash],
    ) -> Result<Option<Rebuild>, EngineError> {
        let Some((nhs, compartment)) = self.store.owner_of_document(doc_id)? else {
            return Ok(None);
        };
        // Held from the read to the replacement: an app's write to the
        // record waits, so nothing written meanwhile is replaced away.
        let mut state = self.state()?;
        let bytes = self.store.document_bytes(doc_id)?;
        if bytes.is_empty() {
            return Ok(None);
        }
        let doc = Automerge::load(&bytes)
            .map_err(|_| StoreError::InvalidEdit("a stored document could not be read"))?;
        let rebuilt = match rebuild(&doc, refused) {
            Ok(r) => r,
            Err(RebuildError::NothingRefusedHere) => return Ok(None),
            Err(_) => {
                return Err(StoreError::InvalidEdit("the document could not be rebuilt").into());
            }
        };
        let report = Rebuild {
            nhs_number: nhs,
            compartment,
            quarantined: rebuilt.quarantined.len(),
            replayed: rebuilt.replayed,
        };
        let draft = AuditDraft {
            compartments: vec![compartment],
            ..self.device_draft(
                "quarantine",
                Some(nhs),
                Some(format!(
                    "refused by the server: {} kept aside, {} written again",
                    report.quarantined, report.replayed
                )),
            )
        };
        let now = self.clock.now_ms();
        // The replayed versions are unsent until the server has them.
        self.mark_unsent_durably(&nhs)?;
        let heads = rebuilt.doc.get_heads();
        self.commit_audited(&mut state, draft, now, |tx| {
            self.store.replace_document_with_tx(
                tx,
                doc_id,
                &rebuilt.doc,
                &heads,
                &rebuilt.quarantined,
            )
        })?;
        state.records.remove(&nhs);
        drop(state);
        if report.replayed > 0 {
            self.local_changes.mark(&nhs);
        }
        self.record_changed(&nhs);
        Ok(Some(report))
    }

    /// The versions of this patient's record kept aside after the server
    /// refused them, for the app to show ("refused by the server"). Needs
    /// an unlocked session; the showing is audited first.
    pub fn quarantined(&self, nhs: &NhsNumber) -> Result<Vec<QuarantinedVersion>, EngineError> {
        let mut state = self.state()?;
        let grant = self.active(&mut state)?;
        let now = self.now_checked(&state)?;
        let kept = self.store.quarantined(nhs)?;
        let (user, role, organisation) = grant.actor();
        let draft = AuditDraft {
            user,
            role,
            organisation,
            compartments: kept.iter().map(|(c, _)| *c).collect(),
            ..self.device_draft("view-quarantined", Some(*nhs), None)
        };
        self.commit_audited(&mut state, draft, now, |_| Ok(()))?;
        Ok(kept
            .into_iter()
            .filter_map(|(compartment, text)| {
                serde_json::from_str(&text)
                    .ok()
                    .map(|version| QuarantinedVersion {
                        compartment,
                        version,
                    })
            })
            .collect())
    }
}
