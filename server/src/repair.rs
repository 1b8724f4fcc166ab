//! Repairing a record's document that no longer reads, from its last
//! readable state (`scr_core::record::repair`): the operator's
//! `admin repair-document`. The repair is one new change, stored as the
//! document's next chunk and audited (patient, compartment, what was put
//! back); a running server merges it from the store (`outside_writes`)
//! and every device receives it like any other change.

use automerge::{Automerge, LoadOptions, OnPartialLoad, ReadDoc, VerificationMode};
use scr_core::Store;
use scr_core::audit::Outcome;
use scr_core::record::Compartment;
use scr_core::record::repair::{RepairError, Repaired, repair};
use scr_core::store::ChunkKey;

#[derive(Debug, thiserror::Error)]
pub enum RepairDocError {
    #[error("no record owns that document")]
    NotARecordDocument,
    #[error("the document's stored chunks do not load")]
    Unloadable,
    #[error(transparent)]
    Repair(#[from] RepairError),
    #[error("store: {0}")]
    Store(#[from] scr_core::StoreError),
}

/// Repairs document `doc_id` if it does not read: what was done, with its
/// compartment, or `None` when it reads as it should.
pub fn repair_document(
    store: &Store,
    doc_id: &str,
    by: &str,
) -> Result<(Compartment, Option<Repaired>), RepairDocError> {
    let (patient, compartment) = store
        .owner_of_document(doc_id)?
        .ok_or(RepairDocError::NotARecordDocument)?;
    let bytes = store.document_bytes(doc_id)?;
    // The chunks were authenticated when unsealed.
    let mut doc = Automerge::load_with_options(
        &bytes,
        LoadOptions::new()
            .on_partial_load(OnPartialLoad::Error)
            .verification_mode(VerificationMode::DontCheck),
    )
    .map_err(|_| RepairDocError::Unloadable)?;
    let Some(repaired) = repair(compartment, &mut doc)? else {
        return Ok((compartment, None));
    };
    let change = doc
        .get_change_by_hash(&repaired.change)
        .ok_or(RepairDocError::Repair(RepairError::Automerge))?;
    let key = ChunkKey::from_parts([doc_id, "incremental", &repaired.change.to_string()])
        .map_err(|_| RepairDocError::NotARecordDocument)?;
    // Audited first: nothing changes in a record without its audit
    // event on disk.
    crate::audit::record(
        store,
        by,
        "document-repaired",
        Some(patient),
        Outcome::Recorded,
        Some(format!(
            "{} document repair: header {}, {} versions restored",
            compartment.as_str(),
            if repaired.header {
                "put back"
            } else {
                "intact"
            },
            repaired.versions_restored
        )),
    )?;
    if !store.put_chunk_if_registered(&key, change.raw_bytes(), false)? {
        return Err(RepairDocError::NotARecordDocument);
    }
    Ok((compartment, Some(repaired)))
}
