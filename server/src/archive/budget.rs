//! How much of its trail one device may upload, and how fast: a bound on
//! one upload's bytes, and a per-device bucket of events that refills
//! steadily. An honest tablet's day offline is a few thousand events,
//! uploaded in batches back to back when the signal returns: the bucket
//! holds a day of that. A device past it is refused ("try later") and
//! keeps its queue: nothing is lost, and the archive cannot be filled
//! without limit, by a revoked device either.

use crate::rate::{Buckets, Rate};

/// One upload's bytes at most (256 events of a few hundred bytes each, with
/// room for views that list many entries).
pub const MAX_UPLOAD_BYTES: usize = 4 * 1024 * 1024;
/// Events one device may upload at once, after a quiet spell, and how
/// many an hour it regains.
pub const EVENTS: Rate = Rate::per_hour(20_000.0, 20_000.0);

/// Each device's bucket of events (in memory: a restart forgives, which
/// costs an attacker a restart of the server per day's worth).
#[derive(Debug)]
pub struct AuditBudget {
    buckets: Buckets<[u8; 32]>,
}

impl Default for AuditBudget {
    fn default() -> Self {
        Self {
            buckets: Buckets::new(EVENTS),
        }
    }
}

impl AuditBudget {
    /// Takes `events` from `device`'s bucket at `now_ms`; false (taking
    /// nothing) when it holds fewer.
    pub fn take(&self, device: &[u8; 32], events: usize, now_ms: i64) -> bool {
        self.buckets.take(*device, events as f64, now_ms)
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
        for _ in 0..(EVENTS.burst as usize / 250) {
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
