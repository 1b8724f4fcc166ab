//! The HTTP endpoint on its own port, served by axum (HTTP/1.1): `GET
//! /health` and `GET /metrics` (Prometheus text). Nothing else, and no
//! patient data.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use scr_core::store::SamodStorage;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::metrics::{Gauges, Metrics};
use crate::directory::Directory;

/// Where the metrics' gauges are read from.
#[derive(Clone)]
pub struct Sources {
    pub directory: Arc<Directory>,
    pub metrics: Arc<Metrics>,
    pub storage: SamodStorage,
    pub store: scr_core::Store,
    pub archive: Arc<crate::archive::Archive>,
    /// A device's audit backlog older than this counts as overdue.
    pub overdue_after: std::time::Duration,
    /// Whether the store answers (probed twice a second).
    pub store_health: super::store_health::StoreHealth,
}

impl Sources {
    /// SQLite reads: call off the async runtime.
    fn gauges(&self) -> Gauges {
        let overdue_ms = i64::try_from(self.overdue_after.as_millis()).unwrap_or(i64::MAX);
        let (store_writes, took) = self.store.write_stats();
        Gauges {
            store_reachable: i64::from(self.store_health.reachable()),
            store_writes,
            store_write_micros: u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            devices: self.directory.active_device_count().unwrap_or(-1),
            storage_failures: self.storage.failures(),
            storage_unsaved: i64::try_from(self.storage.unsaved()).unwrap_or(i64::MAX),
            storage_writes: self.storage.writes(),
            audit_backlog: self.store.audit_queue_len().unwrap_or(0),
            audit_devices_overdue: self
                .archive
                .overdue_devices(scr_core::clock::now_ms().saturating_sub(overdue_ms))
                .unwrap_or(0),
        }
    }
}

/// The Prometheus text format's content type.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4";

/// 200 "ok" while serving; 503 "draining" once shutting down, and 503
/// "store unreachable" while the store does not answer (a node cut off from
/// PostgreSQL: `store_health`), so a load balancer's readiness check sends
/// no devices here.
async fn health(State(sources): State<Sources>) -> impl IntoResponse {
    if sources
        .metrics
        .draining
        .load(std::sync::atomic::Ordering::SeqCst)
    {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, PROMETHEUS_TEXT)],
            "draining\n",
        );
    }
    if !sources.store_health.reachable() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, PROMETHEUS_TEXT)],
            "store unreachable\n",
        );
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, PROMETHEUS_TEXT)],
        "ok\n",
    )
}

async fn metrics(State(sources): State<Sources>) -> impl IntoResponse {
    let metrics = sources.metrics.clone();
    // SQLite reads: off the runtime.
    match tokio::task::spawn_blocking(move || sources.gauges()).await {
        Ok(g) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, PROMETHEUS_TEXT)],
            metrics.render(&g),
        ),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, PROMETHEUS_TEXT)],
            "metrics failed\n".to_owned(),
        ),
    }
}

async fn not_found() -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, PROMETHEUS_TEXT)],
        "not found\n",
    )
}

/// Serves until `stopped` changes.
pub async fn serve(listener: TcpListener, mut stopped: watch::Receiver<bool>, sources: Sources) {
    let app = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(sources);
    let shutdown = async move {
        let _ = stopped.changed().await;
    };
    if axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .is_err()
    {
        tracing::warn!("the health endpoint stopped");
    }
}
