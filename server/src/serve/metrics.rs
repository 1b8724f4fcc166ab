//! The server's counters and gauges, and the `/metrics` text (Prometheus
//! text format 0.0.4, written by the Prometheus project's own client,
//! `prometheus-client`). No metric carries a label naming a device, a user
//! or a patient.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use scr_core::channel;

/// A device may hold this many sync sessions at once; more are refused.
/// A new session ends the device's older ones (see `Sessions::end_all_of`),
/// so this is a backstop against races, not the usual limit.
pub const MAX_SESSIONS_PER_DEVICE: usize = 4;

/// Counters for `/metrics`, counted where things happen.
pub struct Metrics {
    pub connections: Counter,
    pub handshakes_ok: Counter,
    pub handshakes_refused: Counter,
    pub enrollments: Counter,
    pub logins: Counter,
    /// Connections turned away before their handshake: too many
    /// unauthenticated ones (everywhere or from their address).
    pub connections_turned_away: Counter,
    /// Connections turned away: their address started too many handshakes.
    pub handshakes_rate_limited: Counter,
    /// Handshakes refused: the device key made too many lately.
    pub device_handshakes_rate_limited: Counter,
    /// Pushes dropped for carrying more bytes than a push may.
    pub pushes_oversized: Counter,
    /// Logins refused because the device already had one in progress.
    pub logins_refused_busy: Counter,
    /// Audit uploads refused: oversized, or past the device's budget.
    pub audit_uploads_refused: Counter,
    pub sync_sessions: Counter,
    pub sessions_refused: Counter,
    /// Sync sessions a device resumed over a new connection (ADR 0005).
    pub sessions_resumed: Counter,
    /// Audit events devices uploaded and the archive stored (duplicates
    /// not counted), and those stored flagged.
    pub audit_archived: Counter,
    pub audit_flagged: Counter,
    /// Pushes to documents the device may not write (not merged).
    pub pushes_refused: Counter,
    /// Pushes whose changes the record's rules refuse (not merged).
    pub changes_refused: Counter,
    /// Messages dropped because a session named more documents, or sent
    /// more requests, than any caseload needs (see `guard::flood`).
    pub flood_dropped: Counter,
    pub traffic: Arc<channel::Traffic>,
    /// The server is shutting down: `/health` says not ready (a load
    /// balancer sends no more devices) and `scr_draining` is 1.
    pub draining: Arc<std::sync::atomic::AtomicBool>,
    open: Arc<Mutex<HashMap<[u8; 32], usize>>>,
    /// What the last scrape read from elsewhere (set just before encoding).
    observed: Arc<Mutex<Option<Gauges>>>,
    registry: Registry,
}

/// What `/metrics` reads from elsewhere at each scrape.
#[derive(Clone, Copy, Debug, Default)]
pub struct Gauges {
    pub devices: i64,
    pub storage_failures: u64,
    /// Chunks samod asked to store that the store refused, kept in memory
    /// until it takes them.
    pub storage_unsaved: i64,
    /// Successful puts and deletes of samod's storage.
    pub storage_writes: u64,
    pub audit_backlog: u64,
    /// Devices whose last upload left an event older than the threshold.
    pub audit_devices_overdue: u64,
    /// 1 when the store answered this scrape (a PostgreSQL node cut off
    /// from its database shows 0), else 0.
    pub store_reachable: i64,
    /// Write transactions this node committed to its store, and the
    /// microseconds they took in all.
    pub store_writes: u64,
    pub store_write_micros: u64,
}

impl Default for Metrics {
    fn default() -> Self {
        let open = Arc::<Mutex<HashMap<[u8; 32], usize>>>::default();
        let observed = Arc::<Mutex<Option<Gauges>>>::default();
        let traffic = Arc::<channel::Traffic>::default();
        let draining = Arc::<std::sync::atomic::AtomicBool>::default();
        let mut registry = Registry::default();
        let mut counter = |name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let counters = Self {
            connections: counter("scr_connections", "TCP connections accepted"),
            handshakes_ok: counter("scr_handshakes_ok", "Noise handshakes admitted"),
            handshakes_refused: counter(
                "scr_handshakes_refused",
                "Connections refused before or during the handshake",
            ),
            enrollments: counter("scr_enrollments", "Devices enrolled with a one-time token"),
            logins: counter("scr_logins", "Logins granted"),
            connections_turned_away: counter(
                "scr_connections_turned_away",
                "Connections turned away before their handshake: too many unauthenticated ones",
            ),
            handshakes_rate_limited: counter(
                "scr_handshakes_rate_limited",
                "Connections turned away: their address started too many handshakes lately",
            ),
            device_handshakes_rate_limited: counter(
                "scr_device_handshakes_rate_limited",
                "Handshakes refused: the device made too many lately",
            ),
            pushes_oversized: counter(
                "scr_pushes_oversized",
                "Pushes dropped for carrying more bytes than a push may",
            ),
            logins_refused_busy: counter(
                "scr_logins_refused_busy",
                "Logins refused because the device already had one in progress",
            ),
            audit_uploads_refused: counter(
                "scr_audit_uploads_refused",
                "Audit uploads refused as oversized or past the device's budget",
            ),
            sync_sessions: counter("scr_sync_sessions", "Sync sessions opened"),
            sessions_refused: counter(
                "scr_sync_sessions_refused",
                "Sync sessions refused at the per-device cap",
            ),
            sessions_resumed: counter(
                "scr_sync_sessions_resumed",
                "Sync sessions resumed over a new connection",
            ),
            pushes_refused: counter(
                "scr_sync_pushes_refused",
                "Pushes to documents the device may not write (not merged)",
            ),
            changes_refused: counter(
                "scr_sync_changes_refused",
                "Pushes whose changes the record's rules refuse (not merged)",
            ),
            flood_dropped: counter(
                "scr_sync_flood_dropped",
                "Messages dropped past a session's bound on documents and requests",
            ),
            audit_archived: counter(
                "scr_audit_events_archived",
                "Uploaded audit events stored in the archive",
            ),
            audit_flagged: counter(
                "scr_audit_events_flagged",
                "Uploaded audit events stored flagged for review",
            ),
            traffic: traffic.clone(),
            draining: draining.clone(),
            open: open.clone(),
            observed: observed.clone(),
            registry: Registry::default(),
        };
        registry.register_collector(Box::new(Observed {
            traffic,
            open,
            observed,
            draining,
        }));
        Self {
            registry,
            ..counters
        }
    }
}

impl Metrics {
    pub fn open_sessions(&self) -> usize {
        open_sessions(&self.open)
    }

    /// Counts a new sync session for `device`, or refuses it at the cap.
    pub(super) fn open_session(self: &Arc<Self>, device: [u8; 32]) -> Option<SessionGuard> {
        let mut open = self.open.lock().ok()?;
        let n = open.entry(device).or_insert(0);
        if *n >= MAX_SESSIONS_PER_DEVICE {
            return None;
        }
        *n += 1;
        self.sync_sessions.inc();
        Some(SessionGuard {
            open: self.open.clone(),
            device,
        })
    }

    /// The `/metrics` text, with `gauges` as read for this scrape.
    pub fn render(&self, gauges: &Gauges) -> String {
        if let Ok(mut observed) = self.observed.lock() {
            *observed = Some(*gauges);
        }
        let mut text = String::new();
        if prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry).is_err()
        {
            text.clear();
        }
        text
    }
}

fn open_sessions(open: &Mutex<HashMap<[u8; 32], usize>>) -> usize {
    open.lock().map(|m| m.values().sum()).unwrap_or(0)
}

/// The values owned elsewhere, encoded at each scrape.
struct Observed {
    traffic: Arc<channel::Traffic>,
    open: Arc<Mutex<HashMap<[u8; 32], usize>>>,
    observed: Arc<Mutex<Option<Gauges>>>,
    draining: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for Observed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observed").finish_non_exhaustive()
    }
}

impl Observed {
    fn counter(e: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: u64) -> std::fmt::Result {
        let c = ConstCounter::new(v);
        c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
    }

    fn gauge(e: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: i64) -> std::fmt::Result {
        let g = ConstGauge::new(v);
        g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
    }
}

impl Collector for Observed {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        use std::sync::atomic::Ordering::Relaxed;
        let g = self
            .observed
            .lock()
            .ok()
            .and_then(|g| *g)
            .unwrap_or_default();
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let open = n(open_sessions(&self.open) as u64);
        Self::gauge(
            &mut e,
            "scr_sync_sessions_open",
            "Sync sessions open now",
            open,
        )?;
        Self::counter(
            &mut e,
            "scr_store_writes",
            "Write transactions committed to the server's store",
            g.store_writes,
        )?;
        Self::counter(
            &mut e,
            "scr_store_write_microseconds",
            "Time those writes took in all, waiting for the database included",
            g.store_write_micros,
        )?;
        Self::gauge(
            &mut e,
            "scr_store_reachable",
            "1 when the server's store answered (0: cut off from its database; nothing is acknowledged)",
            g.store_reachable,
        )?;
        Self::gauge(
            &mut e,
            "scr_draining",
            "1 while the server shuts down (no new connections; sessions told to go elsewhere)",
            i64::from(self.draining.load(Relaxed)),
        )?;
        let received = self.traffic.received.load(Relaxed);
        let sent = self.traffic.sent.load(Relaxed);
        Self::counter(
            &mut e,
            "scr_sync_bytes_received",
            "Sync bytes received",
            received,
        )?;
        Self::counter(&mut e, "scr_sync_bytes_sent", "Sync bytes sent", sent)?;
        Self::gauge(
            &mut e,
            "scr_enrolled_devices",
            "Devices enrolled and not revoked",
            g.devices,
        )?;
        Self::counter(
            &mut e,
            "scr_storage_failures",
            "Writes of samod's storage that failed",
            g.storage_failures,
        )?;
        Self::gauge(
            &mut e,
            "scr_storage_unsaved",
            "Chunks the store refused, kept in memory until it takes them",
            g.storage_unsaved,
        )?;
        Self::counter(
            &mut e,
            "scr_storage_writes",
            "Puts and deletes of samod's storage (a fetch makes none)",
            g.storage_writes,
        )?;
        Self::gauge(
            &mut e,
            "scr_audit_backlog",
            "The server's own audit events not yet archived",
            n(g.audit_backlog),
        )?;
        Self::gauge(
            &mut e,
            "scr_audit_devices_overdue",
            "Devices whose oldest unsent audit event is older than the threshold",
            n(g.audit_devices_overdue),
        )
    }
}

/// Held by a sync session's transport: the session counts as open (and
/// against its device's cap) until samod drops it.
pub(super) struct SessionGuard {
    open: Arc<Mutex<HashMap<[u8; 32], usize>>>,
    device: [u8; 32],
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        if let Ok(mut open) = self.open.lock()
            && let Some(n) = open.get_mut(&self.device)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.device);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_in_the_prometheus_text_once() {
        let m = Metrics::default();
        m.logins.inc();
        m.audit_archived.inc_by(3);
        let text = m.render(&Gauges {
            devices: 2,
            storage_failures: 1,
            storage_unsaved: 6,
            storage_writes: 5,
            audit_backlog: 4,
            audit_devices_overdue: 0,
            store_reachable: 1,
            store_writes: 7,
            store_write_micros: 700,
        });
        for line in [
            "# TYPE scr_logins_total counter",
            "scr_logins_total 1",
            "scr_audit_events_archived_total 3",
            "scr_connections_total 0",
            "# TYPE scr_enrolled_devices gauge",
            "scr_enrolled_devices 2",
            "scr_storage_failures_total 1",
            "scr_storage_writes_total 5",
            "# TYPE scr_storage_unsaved gauge",
            "scr_storage_unsaved 6",
            "scr_audit_backlog 4",
            "scr_audit_devices_overdue 0",
            "scr_sync_sessions_open 0",
            "scr_draining 0",
            "scr_store_reachable 1",
            "scr_store_writes_total 7",
            "scr_store_write_microseconds_total 700",
            "scr_sync_bytes_sent_total 0",
        ] {
            assert_eq!(
                text.lines().filter(|l| *l == line).count(),
                1,
                "{line}: {text}"
            );
        }
        assert_eq!(text.matches("# TYPE").count(), 32, "{text}");
    }
}
