//! Whether the node's store answers (ADR 0017: fail closed). A node cut off
//! from PostgreSQL must acknowledge nothing it cannot store: samod would
//! merge a push in memory, answer that it has it, and fail to write it. So
//! a watch probes the store twice a second; while it does not answer,
//! every sync session is ended
//! with a goodbye (its device reconnects, to another node if the load
//! balancer sees this one not ready), no new one is opened, and no sync
//! message reaches samod. It clears by itself once the store answers, and
//! then stores first the chunks samod asked for and the store refused
//! (`SamodStorage::save_unsaved`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use scr_core::Store;
use scr_core::store::SamodStorage;
use tokio::sync::watch;

/// How often the store is probed, and how long a probe may take.
const PROBE_EVERY: Duration = Duration::from_millis(500);
const PROBE_LIMIT: Duration = Duration::from_secs(2);
/// How long after a refusal the chunks the store refused are tried again.
const RETRY_REFUSED: Duration = Duration::from_secs(10);

/// The store's reachability, shared by the node's tasks.
#[derive(Clone, Debug)]
pub struct StoreHealth(Arc<AtomicBool>);

impl Default for StoreHealth {
    fn default() -> Self {
        Self(Arc::new(AtomicBool::new(true)))
    }
}

impl StoreHealth {
    /// The store answered at the last probe. (One document failing to
    /// load or store says nothing of the rest: not counted here, or one
    /// damaged document would end every session over and over.)
    pub fn reachable(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    fn set(&self, reachable: bool) -> bool {
        self.0.swap(reachable, Ordering::SeqCst)
    }
}

/// Probes the store until stopped; `lost` runs each time it stops
/// answering (the node ends its sessions).
pub(super) async fn watch(
    mut stopped: watch::Receiver<bool>,
    (store, storage): (Store, SamodStorage),
    health: StoreHealth,
    lost: impl Fn(),
) {
    let mut tick = tokio::time::interval(PROBE_EVERY);
    let mut retry_at: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = stopped.changed() => return,
            _ = tick.tick() => {
                let s = store.clone();
                let probe = tokio::task::spawn_blocking(move || s.data_version().is_ok());
                let reachable =
                    matches!(tokio::time::timeout(PROBE_LIMIT, probe).await, Ok(Ok(true)));
                let was = health.set(reachable);
                if was && !reachable {
                    tracing::warn!("the store does not answer: sync sessions ended until it does");
                    lost();
                } else if !was && reachable {
                    tracing::info!("the store answers again");
                }
                // After a refusal, tried again every 10 s (a chunk the store
                // refuses whatever happens is not retried twice a second).
                if reachable && storage.unsaved() > 0 && retry_at.is_none_or(|at| at <= Instant::now()) {
                    let st = storage.clone();
                    retry_at = None;
                    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || st.save_unsaved()).await {
                        tracing::warn!(error = %e, "refused chunks could not be stored yet");
                        retry_at = Some(Instant::now() + RETRY_REFUSED);
                    }
                }
            }
        }
    }
}
