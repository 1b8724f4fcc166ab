//! A minimal HTTP endpoint on its own port: `GET /health` and
//! `GET /metrics` (Prometheus text). Nothing else, and no patient data.

use std::sync::Arc;

use scr_core::store::SamodStorage;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
}

impl Sources {
    /// SQLite reads: call off the async runtime.
    fn gauges(&self) -> Gauges {
        let overdue_ms = i64::try_from(self.overdue_after.as_millis()).unwrap_or(i64::MAX);
        Gauges {
            devices: self.directory.active_device_count().unwrap_or(-1),
            storage_failures: self.storage.failures(),
            audit_backlog: self.store.audit_queue_len().unwrap_or(0),
            audit_devices_overdue: self
                .archive
                .overdue_devices(scr_core::clock::now_ms().saturating_sub(overdue_ms))
                .unwrap_or(0),
        }
    }
}

pub async fn serve(listener: TcpListener, mut stopped: watch::Receiver<bool>, sources: Sources) {
    loop {
        tokio::select! {
            _ = stopped.changed() => return,
            accepted = listener.accept() => {
                let Ok((mut tcp, _)) = accepted else {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                };
                let sources = sources.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let n = match tokio::time::timeout(std::time::Duration::from_secs(5), tcp.read(&mut buf)).await {
                        Ok(Ok(n)) => n,
                        _ => return,
                    };
                    let request = String::from_utf8_lossy(&buf[..n]);
                    let path = request.split_whitespace().nth(1).unwrap_or("");
                    let (status, body) = match (request.starts_with("GET "), path) {
                        (true, "/health") => ("200 OK", "ok\n".to_owned()),
                        (true, "/metrics") => {
                            // SQLite reads: off the runtime.
                            let metrics = sources.metrics.clone();
                            let gauges = tokio::task::spawn_blocking(move || sources.gauges()).await;
                            match gauges {
                                Ok(g) => ("200 OK", metrics.render(&g)),
                                Err(_) => ("500 Internal Server Error", "metrics failed\n".to_owned()),
                            }
                        }
                        _ => ("404 Not Found", "not found\n".to_owned()),
                    };
                    let response = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tcp.write_all(response.as_bytes()).await;
                });
            }
        }
    }
}
