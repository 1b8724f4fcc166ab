//! Record layout 2 (ADR 0011): permissions to view have a compartment of
//! their own. Upgrading a record of layout 1 adds the empty document, and
//! every permission that governance holds (written before, or by an app of
//! layout 1 during the transition) is copied over, version for version:
//! the same ids, the same provenance, so nothing is authored anew and the
//! readers (which read both) see each answer once.

use super::held::HeldDoc;
use super::keys::{new_doc_id, snapshot_key};
use super::reading::PatientReplica;
use crate::NhsNumber;
use crate::record::{Compartment, CompartmentDoc, EntryContent, EntryVersion};
use crate::store::{DocumentInfo, Store, StoreError};

impl Store {
    /// Adds an empty document for `compartment` to the record of `nhs`,
    /// unless it holds one. Returns the new document's id.
    pub fn add_compartment(
        &self,
        nhs: &NhsNumber,
        compartment: Compartment,
    ) -> Result<Option<String>, StoreError> {
        let record_ref = self.record_ref(nhs);
        self.write(|tx| {
            let key = self.record_key(tx, &record_ref)?;
            let held = self.documents_of(tx, &record_ref, &key)?;
            if held.iter().any(|d| d.compartment == compartment) {
                return Ok(None);
            }
            let mut doc = CompartmentDoc::create(compartment)?;
            let info = DocumentInfo {
                doc_id: new_doc_id()?,
                compartment,
            };
            self.register_document_tx(tx, &record_ref, &key, &info)?;
            let snapshot = snapshot_key(&info.doc_id, &doc.heads())?;
            self.put_chunk_sealed_tx(tx, &snapshot, &doc.save(), &key)?;
            Ok(Some(info.doc_id))
        })
    }
}

/// The permissions to view in `governance` that `permissions` lacks (by
/// version id), oldest id first.
pub fn permissions_to_move(
    governance: Vec<EntryVersion>,
    permissions: &[EntryVersion],
) -> Vec<EntryVersion> {
    let mut out: Vec<EntryVersion> = governance
        .into_iter()
        .filter(|v| matches!(v.content, EntryContent::PermissionToView { .. }))
        .filter(|v| !permissions.iter().any(|p| p.version_id == v.version_id))
        .collect();
    out.sort_by_key(|v| v.version_id);
    out.dedup_by_key(|v| v.version_id);
    out
}

impl PatientReplica {
    /// Copies the permissions to view that governance holds into the
    /// permissions compartment, in one write. Returns how many were copied
    /// (none when the record has no permissions document yet).
    pub fn move_legacy_permissions(&mut self) -> Result<usize, StoreError> {
        let Ok(held) = self.held(Compartment::Permissions) else {
            return Ok(0);
        };
        let (present, _) = held.doc.versions();
        let (governance, _) = self.held(Compartment::Governance)?.doc.versions();
        let moving = permissions_to_move(governance, &present);
        if moving.is_empty() {
            return Ok(0);
        }
        let target: &mut HeldDoc = self.held_mut(Compartment::Permissions)?;
        for version in &moving {
            target.doc.put_version(version)?;
        }
        self.persist(Compartment::Permissions, None)?;
        Ok(moving.len())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::record::{EntryId, PermissionScope, Provenance, SharingChoice, VersionStatus};

    fn version(content: EntryContent) -> EntryVersion {
        EntryVersion::new(
            EntryId::new(),
            Vec::new(),
            VersionStatus::Current,
            content,
            Provenance {
                author_id: "u".into(),
                role: "R8000".into(),
                organisation: "A81002".into(),
                device: "d".into(),
                recorded_at_ms: 1,
            },
        )
    }

    #[test]
    fn only_permissions_not_yet_moved_are_moved() {
        let permission = |granted| {
            version(EntryContent::PermissionToView {
                organisation: "A81002".into(),
                user_id: "u".into(),
                scope: PermissionScope::Organisation,
                granted,
            })
        };
        let (moved, waiting) = (permission(true), permission(false));
        let choice = version(EntryContent::Sharing {
            choice: SharingChoice::CoreOnly,
            include_sensitive: false,
            hidden: false,
        });
        let governance = vec![moved.clone(), choice, waiting.clone(), waiting.clone()];
        let out = permissions_to_move(governance, std::slice::from_ref(&moved));
        assert_eq!(out, vec![waiting]);
    }
}
