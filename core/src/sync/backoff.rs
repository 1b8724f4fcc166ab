//! Waiting between attempts: jittered delays, and the audit upload's own
//! retry schedule.

use std::time::Duration;

/// A delay in [d/2, d) from the system RNG, so devices that lost the
/// server together do not come back together.
pub(super) fn jittered(d: Duration) -> Duration {
    let mut b = [0u8; 4];
    let r = getrandom::fill(&mut b)
        .map(|_| u32::from_le_bytes(b))
        .unwrap_or(0);
    let frac = 0.5 + f64::from(r) / f64::from(u32::MAX) / 2.0;
    d.mul_f64(frac)
}

/// When the next upload may be tried after failures: 1 s, doubling to
/// 5 minutes, jittered (a server that refuses uploads is not hammered by
/// every pass of every device; a success resets it).
#[derive(Debug)]
pub(super) struct AuditRetry {
    next: Option<std::time::Instant>,
    delay: std::time::Duration,
}

impl AuditRetry {
    const FIRST: std::time::Duration = std::time::Duration::from_secs(1);
    const MAX: std::time::Duration = std::time::Duration::from_secs(300);

    pub(super) fn new() -> Self {
        Self {
            next: None,
            delay: Self::FIRST,
        }
    }

    pub(super) fn due(&self, now: std::time::Instant) -> bool {
        self.next.is_none_or(|next| now >= next)
    }

    pub(super) fn failed(&mut self, now: std::time::Instant) {
        self.next = Some(now + jittered(self.delay));
        self.delay = (self.delay * 2).min(Self::MAX);
    }

    /// The connection failed mid-upload (a network fault, not a server
    /// refusing): try again after the first delay, without escalating, so a
    /// device back in signal uploads on its next pass instead of minutes
    /// later.
    pub(super) fn connection_lost(&mut self, now: std::time::Instant) {
        self.next = Some(now + jittered(Self::FIRST));
    }

    pub(super) fn succeeded(&mut self) {
        *self = Self::new();
    }
}

#[cfg(test)]
mod retry_tests {
    use std::time::{Duration, Instant};

    use super::AuditRetry;

    #[test]
    fn failures_back_off_to_five_minutes_and_a_success_resets() {
        let t0 = Instant::now();
        let mut retry = AuditRetry::new();
        assert!(retry.due(t0));
        let mut waits = Vec::new();
        for _ in 0..12 {
            retry.failed(t0);
            assert!(!retry.due(t0));
            waits.push(retry.next.unwrap() - t0);
        }
        // Each wait is in [d/2, d) of a doubling d capped at 300 s.
        assert!(waits[0] >= Duration::from_millis(500) && waits[0] < Duration::from_secs(1));
        assert!(waits[3] >= Duration::from_secs(4) && waits[3] < Duration::from_secs(8));
        assert!(waits[11] >= Duration::from_secs(150) && waits[11] < Duration::from_secs(300));
        assert!(retry.due(t0 + Duration::from_secs(300)));
        retry.succeeded();
        assert!(retry.due(t0));
        // Lost connections do not escalate: each waits about the first delay.
        for _ in 0..5 {
            retry.connection_lost(t0);
            assert!(retry.next.unwrap() - t0 <= Duration::from_millis(1500));
        }
        assert_eq!(retry.delay, Duration::from_secs(1));
    }
}
