//! How much of its trail one device may upload, and how fast: a bound on
//! one upload's bytes, and a per-device bucket of events that refills
//! steadily. An honest tablet's day offline is a few thousand events,
//! uploaded in batches back to back when the signal returns: the bucket
//! holds a day of that. A device past it is refused ("try later") and
//! keeps its queue: nothing is lost, and the archive cannot be filled
//! without limit, by a revoked device either.

use std::collections::HashMap;
use std::sync::Mutex;

/// One upload's bytes at most (256 events of a few hundred bytes each, with
/// room for views that list many entries).
pub const MAX_UPLOAD_BYTES: usize = 4 * 1024 * 1024;
/// Events one device may upload at once, after a quiet spell.
pub const BURST_EVENTS: f64 = 20_000.0;
/// Events per hour a device's bucket regains.
pub const EVENTS_PER_HOUR: f64 = 20_000.0;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at_ms: i64,
}

/// Each device's bucket of events (in memory: a restart forgives, which
/// costs an attacker a restart of the server per day's worth).
#[derive(Debug, Default)]
pub struct AuditBudget {
    buckets: Mutex<HashMap<[u8; 32], Bucket>>,
}

impl AuditBudget {
    /// Takes `events` from `device`'s bucket at `now_ms`; false (taking
    /// nothing) when it holds fewer.
    pub fn take(&self, device: &[u8; 32], events: usize, now_ms: i64) -> bool {
        let Ok(mut buckets) = self.buckets.lock() else {
            return false;
        };
        let b = buckets.entry(*device).or_insert(Bucket {
            tokens: BURST_EVENTS,
            at_ms: now_ms,
        });
        let hours = (now_ms.saturating_sub(b.at_ms)).max(0) as f64 / 3_600_000.0;
        b.tokens = (b.tokens + hours * EVENTS_PER_HOUR).min(BURST_EVENTS);
        b.at_ms = b.at_ms.max(now_ms);
        let wanted = events as f64;
        if b.tokens < wanted {
            return false;
        }
        b.tokens -= wanted;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_uploads_a_burst_then_at_the_refill_rate_and_others_are_not_held_back() {
        let budget = AuditBudget::default();
        let (a, b) = ([1; 32], [2; 32]);
        let t0 = 1_000_000;
        for _ in 0..(BURST_EVENTS as usize / 250) {
            assert!(budget.take(&a, 250, t0));
        }
        assert!(!budget.take(&a, 1, t0), "the bucket is empty");
        assert!(budget.take(&b, 250, t0), "another device's is full");
        // Six minutes regain a tenth of an hour's events.
        let later = t0 + 6 * 60 * 1000;
        assert!(budget.take(&a, 1_999, later));
        assert!(!budget.take(&a, 2, later));
        // A clock step back gives nothing.
        assert!(!budget.take(&a, 2, t0));
    }
}
