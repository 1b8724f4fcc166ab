//! The server's counters and gauges, and the `/metrics` text.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use scr_core::channel;

/// A device may hold this many sync sessions at once; more are refused.
/// A new session ends the device's older ones (see `Sessions::end_all_of`),
/// so this is a backstop against races, not the usual limit.
pub const MAX_SESSIONS_PER_DEVICE: usize = 4;

/// Counters for `/metrics`.
#[derive(Default)]
pub struct Metrics {
    pub connections: AtomicU64,
    pub handshakes_ok: AtomicU64,
    pub handshakes_refused: AtomicU64,
    pub enrollments: AtomicU64,
    pub logins: AtomicU64,
    pub sync_sessions: AtomicU64,
    pub sessions_refused: AtomicU64,
    /// Sync sessions a device resumed over a new connection (ADR 0005).
    pub sessions_resumed: AtomicU64,
    /// Audit events devices uploaded and the archive stored (duplicates
    /// not counted), and those stored flagged.
    pub audit_archived: AtomicU64,
    pub audit_flagged: AtomicU64,
    /// Pushes to documents the device may not write (not merged).
    pub pushes_refused: Arc<AtomicU64>,
    /// Messages dropped because a session named more documents, or sent
    /// more requests, than any caseload needs (see `flood`).
    pub flood_dropped: Arc<AtomicU64>,
    pub traffic: Arc<channel::Traffic>,
    open: std::sync::Mutex<std::collections::HashMap<[u8; 32], usize>>,
}

/// What `/metrics` reads from elsewhere.
pub struct Gauges {
    pub devices: i64,
    pub storage_failures: u64,
    pub audit_backlog: u64,
    /// Devices whose last upload left an event older than the threshold.
    pub audit_devices_overdue: u64,
}

impl Metrics {
    pub fn open_sessions(&self) -> usize {
        self.open.lock().map(|m| m.values().sum()).unwrap_or(0)
    }

    /// Counts a new sync session for `device`, or refuses it at the cap.
    pub(super) fn open_session(self: &Arc<Self>, device: [u8; 32]) -> Option<SessionGuard> {
        let mut open = self.open.lock().ok()?;
        let n = open.entry(device).or_insert(0);
        if *n >= MAX_SESSIONS_PER_DEVICE {
            return None;
        }
        *n += 1;
        self.sync_sessions.fetch_add(1, Ordering::Relaxed);
        Some(SessionGuard {
            metrics: self.clone(),
            device,
        })
    }

    pub fn render(&self, gauges: &Gauges) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "# TYPE scr_connections_total counter\nscr_connections_total {}\n\
             # TYPE scr_handshakes_ok_total counter\nscr_handshakes_ok_total {}\n\
             # TYPE scr_handshakes_refused_total counter\nscr_handshakes_refused_total {}\n\
             # TYPE scr_enrollments_total counter\nscr_enrollments_total {}\n\
             # TYPE scr_logins_total counter\nscr_logins_total {}\n\
             # TYPE scr_sync_sessions_total counter\nscr_sync_sessions_total {}\n\
             # TYPE scr_sync_sessions_open gauge\nscr_sync_sessions_open {}\n\
             # TYPE scr_sync_sessions_refused_total counter\nscr_sync_sessions_refused_total {}\n\
             # TYPE scr_sync_sessions_resumed_total counter\nscr_sync_sessions_resumed_total {}\n\
             # TYPE scr_sync_pushes_refused_total counter\nscr_sync_pushes_refused_total {}\n\
             # TYPE scr_sync_flood_dropped_total counter\nscr_sync_flood_dropped_total {}\n\
             # TYPE scr_sync_bytes_received_total counter\nscr_sync_bytes_received_total {}\n\
             # TYPE scr_sync_bytes_sent_total counter\nscr_sync_bytes_sent_total {}\n\
             # TYPE scr_enrolled_devices gauge\nscr_enrolled_devices {}\n\
             # TYPE scr_storage_failures_total counter\nscr_storage_failures_total {}\n\
             # TYPE scr_audit_backlog gauge\nscr_audit_backlog {}\n\
             # TYPE scr_audit_events_archived_total counter\nscr_audit_events_archived_total {}\n\
             # TYPE scr_audit_events_flagged_total counter\nscr_audit_events_flagged_total {}\n\
             # TYPE scr_audit_devices_overdue gauge\nscr_audit_devices_overdue {}\n",
            g(&self.connections),
            g(&self.handshakes_ok),
            g(&self.handshakes_refused),
            g(&self.enrollments),
            g(&self.logins),
            g(&self.sync_sessions),
            self.open_sessions(),
            g(&self.sessions_refused),
            g(&self.sessions_resumed),
            g(&self.pushes_refused),
            g(&self.flood_dropped),
            g(&self.traffic.received),
            g(&self.traffic.sent),
            gauges.devices,
            gauges.storage_failures,
            gauges.audit_backlog,
            g(&self.audit_archived),
            g(&self.audit_flagged),
            gauges.audit_devices_overdue,
        )
    }
}

/// Held by a sync session's transport: the session counts as open (and
/// against its device's cap) until samod drops it.
pub(super) struct SessionGuard {
    metrics: Arc<Metrics>,
    device: [u8; 32],
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        if let Ok(mut open) = self.metrics.open.lock()
            && let Some(n) = open.get_mut(&self.device)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.device);
            }
        }
    }
}
