//! The edit rules: add an entry, supersede versions, mark entered-in-error
//! (never overwrite), each with an optional audit event committed with it.

use super::reading::PatientReplica;
use super::values::AuditSpec;
use crate::record::{
    Compartment, EntryContent, EntryId, EntryVersion, EntryView, Provenance, VersionId,
    VersionStatus,
};
use crate::store::StoreError;

impl PatientReplica {
    /// Adds a new entry; sensitive items go to the sensitive compartment.
    /// `audit`, if given, commits in the same transaction.
    pub fn add_entry(
        &mut self,
        content: EntryContent,
        sensitive: bool,
        provenance: Provenance,
        audit: Option<&AuditSpec>,
    ) -> Result<EntryVersion, StoreError> {
        if sensitive && !content.may_be_sensitive() {
            return Err(StoreError::InvalidEdit(
                "this kind of entry cannot be marked sensitive",
            ));
        }
        let compartment = if sensitive {
            Compartment::Sensitive
        } else {
            content.home_compartment()
        };
        self.add_entry_in(compartment, content, provenance, audit)
    }

    /// Adds a permission to view to a record of layout 1 (no permissions
    /// compartment yet: a device offline since before the server moved the
    /// record to layout 2), in governance where layout 1 keeps it.
    pub fn add_legacy_permission(
        &mut self,
        content: EntryContent,
        provenance: Provenance,
        audit: Option<&AuditSpec>,
    ) -> Result<EntryVersion, StoreError> {
        if !matches!(content, EntryContent::PermissionToView { .. }) {
            return Err(StoreError::InvalidEdit(
                "only a permission to view goes to governance",
            ));
        }
        self.add_entry_in(Compartment::Governance, content, provenance, audit)
    }

    fn add_entry_in(
        &mut self,
        compartment: Compartment,
        content: EntryContent,
        provenance: Provenance,
        audit: Option<&AuditSpec>,
    ) -> Result<EntryVersion, StoreError> {
        let version = EntryVersion::new(
            EntryId::new(),
            Vec::new(),
            VersionStatus::Current,
            content,
            provenance,
        );
        self.write_version(compartment, version, audit)
    }

    /// Writes a new version of `entry` replacing the versions the author saw
    /// (`replaces`, normally the entry's current heads; all of them to
    /// resolve a conflict). `audit`, if given, commits in the same
    /// transaction.
    pub fn supersede(
        &mut self,
        compartment: Compartment,
        entry: EntryId,
        replaces: &[VersionId],
        content: EntryContent,
        provenance: Provenance,
        audit: Option<&AuditSpec>,
    ) -> Result<EntryVersion, StoreError> {
        let view = self.checked_heads(compartment, entry, replaces)?;
        // The kind of what it replaces, not of whatever else the entry holds
        // (another writer may have put a version of another kind under the
        // same entry id: that must not block this one).
        let named: Vec<&EntryVersion> = view
            .heads()
            .into_iter()
            .filter(|h| replaces.contains(&h.version_id))
            .collect();
        let sharing = matches!(content, EntryContent::Sharing { .. });
        if (named.is_empty() && !sharing)
            || named
                .iter()
                .any(|h| h.content.kind_name() != content.kind_name())
        {
            return Err(StoreError::InvalidEdit(
                "a new version must keep the entry's kind",
            ));
        }
        let version = EntryVersion::new(
            entry,
            replaces.to_vec(),
            VersionStatus::Current,
            content,
            provenance,
        );
        self.write_version(compartment, version, audit)
    }

    /// Marks the entry entered-in-error, keeping what it said and why.
    /// `audit`, if given, commits in the same transaction.
    pub fn mark_entered_in_error(
        &mut self,
        compartment: Compartment,
        entry: EntryId,
        replaces: &[VersionId],
        reason: &str,
        provenance: Provenance,
        audit: Option<&AuditSpec>,
    ) -> Result<EntryVersion, StoreError> {
        if reason.trim().is_empty() {
            return Err(StoreError::InvalidEdit("entered-in-error needs a reason"));
        }
        let view = self.checked_heads(compartment, entry, replaces)?;
        let content = view
            .heads()
            .into_iter()
            .filter(|h| replaces.contains(&h.version_id))
            .max_by_key(|h| h.version_id)
            .map(|h| h.content.clone())
            .ok_or(StoreError::EntryNotFound)?;
        let status = VersionStatus::EnteredInError {
            reason: reason.to_owned(),
        };
        let version = EntryVersion::new(entry, replaces.to_vec(), status, content, provenance);
        self.write_version(compartment, version, audit)
    }

    /// Checks that `replaces` names only current heads of the entry: writing
    /// over a version someone else already replaced would hide their change.
    /// A sharing choice also names the heads of other sharing entries (each
    /// choice supersedes every choice its writer saw, `access::sharing_entry`).
    fn checked_heads(
        &self,
        compartment: Compartment,
        entry: EntryId,
        replaces: &[VersionId],
    ) -> Result<EntryView, StoreError> {
        if replaces.is_empty() {
            return Err(StoreError::InvalidEdit(
                "a new version must name the versions it replaces",
            ));
        }
        let entries = self.held(compartment)?.doc.view().entries;
        let view = entries
            .iter()
            .find(|e| e.entry_id == entry)
            .cloned()
            .ok_or(StoreError::EntryNotFound)?;
        let choice = |v: &&EntryVersion| matches!(v.content, EntryContent::Sharing { .. });
        let mut heads = view.head_ids();
        if view.heads().iter().any(choice) {
            heads.extend(
                entries
                    .iter()
                    .flat_map(|e| e.heads())
                    .filter(choice)
                    .map(|v| v.version_id),
            );
        }
        if !replaces.iter().all(|r| heads.contains(r)) {
            return Err(StoreError::InvalidEdit(
                "a named version is not current; review the entry and try again",
            ));
        }
        Ok(view)
    }

    fn write_version(
        &mut self,
        compartment: Compartment,
        version: EntryVersion,
        audit: Option<&AuditSpec>,
    ) -> Result<EntryVersion, StoreError> {
        // The audit record names the entry it touched.
        let audit = audit.map(|a| {
            let mut a = a.clone();
            a.draft.entries = vec![version.entry_id.to_string()];
            a
        });
        self.held_mut(compartment)?.doc.put_version(&version)?;
        self.persist(compartment, audit.as_ref())?;
        Ok(version)
    }
}
