//! Records of layout 1 moved to layout 2 (ADR 0011): at start, every
//! record the server holds without a permissions document gets one, and
//! the permissions to view governance holds are copied into it; while the
//! transition lasts, what apps of layout 1 still push into governance is
//! copied over as it arrives (the watcher calls [`move_written`] with the
//! governance documents samod stored).

use samod::{DocumentId, Repo};
use scr_core::record::Compartment;
use scr_core::{NhsNumber, Store, StoreError};

/// Upgrades every record to layout 2. Returns how many records it changed.
pub fn upgrade_records(store: &Store) -> Result<usize, StoreError> {
    let mut upgraded = 0;
    for holding in store.holdings()? {
        let nhs = holding.nhs_number;
        // A read first: after the first start every record has it, and a
        // write transaction per record at each start would cost.
        let held = store.documents_of_record(&nhs)?;
        if held
            .iter()
            .any(|d| d.compartment == Compartment::Permissions)
        {
            continue;
        }
        if store
            .add_compartment(&nhs, Compartment::Permissions)?
            .is_some()
        {
            move_permissions(store, &nhs)?;
            upgraded += 1;
        }
    }
    if upgraded > 0 {
        tracing::info!(records = upgraded, "records moved to layout 2");
    }
    Ok(upgraded)
}

/// Copies the record's permissions to view from governance into its
/// permissions document; the document's id if anything was copied.
fn move_permissions(store: &Store, nhs: &NhsNumber) -> Result<Option<String>, StoreError> {
    let mut record = store.open_record(nhs)?;
    if record.move_legacy_permissions()? == 0 {
        return Ok(None);
    }
    Ok(store
        .documents_of_record(nhs)?
        .into_iter()
        .find(|d| d.compartment == Compartment::Permissions)
        .map(|d| d.doc_id))
}

/// For each governance document among `written`, copies what permissions
/// it gained into its record's permissions document, then merges that
/// into samod's copy so devices receive it. Returns the permissions
/// documents written (the caller tells the catalogue: these writes bypass
/// samod's storage).
pub async fn move_written(repo: &Repo, store: &Store, written: Vec<String>) -> Vec<String> {
    let copy = store.clone();
    let moved = tokio::task::spawn_blocking(move || {
        let mut moved = Vec::new();
        for doc in written {
            let Ok(Some((nhs, Compartment::Governance))) = copy.owner_of_document(&doc) else {
                continue;
            };
            match move_permissions(&copy, &nhs) {
                Ok(Some(target)) => moved.push(target),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "permissions could not be moved to layout 2"),
            }
        }
        moved
    })
    .await
    .unwrap_or_default();
    let ids: Vec<DocumentId> = moved.iter().filter_map(|d| d.parse().ok()).collect();
    crate::outside_writes::refresh_documents(repo, store, ids).await;
    moved
}
