//! The server's background tasks: share decisions remade when what they
//! depend on changes, and the server's own audit trail archived.

use std::sync::Arc;

use scr_core::Store;
use scr_core::store::SamodStorage;
use tokio::sync::watch;

use crate::directory::Directory;

/// Once a second, asks every share decision to be made again if anything it
/// depends on changed: admin commands (another process's commits show in
/// SQLite's `data_version`) or governance documents written by sync (a
/// patient's choices). Other documents written by sync change no decision:
/// re-deciding every (document, device) pair on each of them was what first
/// broke under load (40 tablets syncing kept the server busy re-deciding).
pub(super) async fn watch_for_changes(
    mut stopped: watch::Receiver<bool>,
    store: Store,
    directory: Arc<Directory>,
    storage: SamodStorage,
    epoch: crate::policy::Epoch,
    (holdings, repo, catalogue): (
        crate::holdings::HoldingsWriter,
        samod::Repo,
        Arc<crate::catalogue::Catalogue>,
    ),
    follows_others: bool,
) {
    // SQLite reads behind the store's lock: off the runtime.
    let seen = |s: &Store, d: &Arc<Directory>, st: &SamodStorage| {
        let (s, d, written) = (s.clone(), d.clone(), st.take_written());
        async move {
            tokio::task::spawn_blocking(move || {
                let governance: Vec<String> = written
                    .into_iter()
                    .filter(|doc| {
                        matches!(
                            s.owner_of_document(doc),
                            Ok(Some((_, scr_core::record::Compartment::Governance)))
                        )
                    })
                    .collect();
                (
                    (s.data_version().ok(), d.data_version().ok()),
                    Some(governance),
                )
            })
            .await
            // Not known what was written: as if governance were (fail closed).
            .unwrap_or(((None, None), None))
        }
    };
    let (mut last, _) = seen(&store, &directory, &storage).await;
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            _ = stopped.changed() => return,
            _ = tick.tick() => {
                let (now, governance) = seen(&store, &directory, &storage).await;
                let governance_written = governance.as_ref().is_none_or(|g| !g.is_empty());
                if let Some(written) = governance.filter(|g| !g.is_empty()) {
                    // Permissions an app of layout 1 recorded in governance.
                    for doc in crate::layout::move_written(&repo, &store, written).await {
                        catalogue.written(&doc);
                    }
                }
                ticks += 1;
                // Also once a minute regardless, so grants that expire on a
                // quiet server stop sharing within a minute.
                if now != last || governance_written || ticks.is_multiple_of(60) {
                    // Decide again at once (a revocation must not wait for
                    // the refresh below)...
                    epoch.bump();
                    // ...then, if another process (an admin command) wrote
                    // documents, merge them into samod's copies in memory
                    // and decide again with them. (Several nodes: each
                    // document another wrote is told and followed by
                    // itself, `follow_other_nodes`; a counter move there is
                    // a grant, a relationship, a holding.)
                    if now.0 != last.0 && !follows_others {
                        catalogue.outside_write();
                        let n = crate::outside_writes::refresh_from_store(&repo, &store, &storage).await;
                        if n > 0 {
                            tracing::info!(documents = n, "documents refreshed from the store");
                            epoch.bump();
                        }
                    }
                    last = now;
                    // Rewrites only lists that changed, so this settles: the
                    // tick after a rewrite finds nothing new to write.
                    holdings.refresh_all().await;
                }
            }
        }
    }
}

/// Follows other nodes' document writes (several nodes on PostgreSQL):
/// each document another node wrote that this node keeps in memory (in
/// samod, or in the catalogue's index and watchers) is merged from the
/// store into samod's copy, so connected devices get the change through
/// samod, and the devices the catalogue told it was in step are told to
/// ask again. Writes that may have been missed (a node that had not read
/// as far as was pruned, or its first reading) refresh everything held,
/// as an admin command's write does on one node. Share decisions are made again after
/// any refresh that changed something (a choice may have changed).
pub(super) async fn follow_other_nodes(
    mut stopped: watch::Receiver<bool>,
    mut notices: tokio::sync::mpsc::UnboundedReceiver<crate::pg::written::DocNotice>,
    (store, storage, repo): (Store, SamodStorage, samod::Repo),
    catalogue: Arc<crate::catalogue::Catalogue>,
    epoch: crate::policy::Epoch,
) {
    use crate::pg::written::DocNotice;
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            _ = stopped.changed() => return,
            n = notices.recv_many(&mut batch, 256) => {
                if n == 0 {
                    return;
                }
                let mut written = std::collections::HashSet::new();
                let mut missed = false;
                for notice in batch.drain(..) {
                    match notice {
                        DocNotice::Written(refs) => written.extend(refs),
                        DocNotice::Missed => missed = true,
                    }
                }
                if missed {
                    catalogue.outside_write();
                    crate::outside_writes::refresh_from_store(&repo, &store, &storage).await;
                    epoch.bump();
                    continue;
                }
                let mut held: Vec<String> = storage.documents_seen();
                held.extend(catalogue.known_documents());
                held.sort_unstable();
                held.dedup();
                let hit: Vec<String> = held
                    .into_iter()
                    .filter(|doc| written.contains(&store.document_ref(doc)))
                    .collect();
                if hit.is_empty() {
                    continue;
                }
                let in_samod: std::collections::HashSet<String> =
                    storage.documents_seen().into_iter().collect();
                let ids = hit
                    .iter()
                    .filter(|d| in_samod.contains(*d))
                    .filter_map(|d| d.parse::<samod::DocumentId>().ok())
                    .collect();
                let changed = crate::outside_writes::refresh_documents(&repo, &store, ids).await;
                for doc in &hit {
                    catalogue.written(doc);
                }
                if changed > 0 {
                    epoch.bump();
                }
            }
        }
    }
}

/// Bumps the holdings notice of each device a catalogue watcher names (a
/// document it was told is in step was written since): in batches, each
/// device once per batch, at most four batches a second, so a document
/// written over and over costs each watching device a bump a quarter
/// second at most (each bump is itself a write).
pub(super) async fn notify_watchers(
    mut stopped: watch::Receiver<bool>,
    mut devices: tokio::sync::mpsc::UnboundedReceiver<[u8; 32]>,
    holdings: crate::holdings::HoldingsWriter,
) {
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            _ = stopped.changed() => return,
            n = devices.recv_many(&mut batch, 4096) => {
                if n == 0 {
                    return;
                }
                let mut due: Vec<[u8; 32]> = std::mem::take(&mut batch);
                due.sort_unstable();
                due.dedup();
                for device in due {
                    holdings.notify(device).await;
                }
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
        }
    }
}

/// Once a second, copies the server's own new audit events (logins, admin
/// commands from other processes, encounters) into the archive, where the
/// patient's access log and privacy officers' alerts read them.
pub(super) async fn archive_own_trail(
    mut stopped: watch::Receiver<bool>,
    store: Store,
    archive: Arc<crate::archive::Archive>,
    server_key: [u8; 32],
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stopped.changed() => return,
            _ = tick.tick() => {
                let (store, archive) = (store.clone(), archive.clone());
                let taken = tokio::task::spawn_blocking(move || {
                    archive.take_server_trail(&store, &server_key, scr_core::clock::now_ms())
                })
                .await;
                if !matches!(taken, Ok(Ok(_))) {
                    tracing::warn!("the server's own audit trail could not be archived");
                }
            }
        }
    }
}
