//! Time, injectable. Access rules depend on the clock (grant expiry, idle
//! lock, retention), so the engine reads it through [`Clock`]; tests drive a
//! [`ManualClock`] instead of sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// Milliseconds since the Unix epoch on the system clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub trait Clock: Send + Sync {
    /// Wall-clock time (can be wound back by the user).
    fn now_ms(&self) -> i64;
    /// Time that only moves forward, for idle timeouts: winding the wall
    /// clock back must not keep a session unlocked.
    fn monotonic_ms(&self) -> i64;
}

#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        now_ms()
    }

    fn monotonic_ms(&self) -> i64 {
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let start = START.get_or_init(std::time::Instant::now);
        i64::try_from(start.elapsed().as_millis()).unwrap_or(i64::MAX)
    }
}

/// A clock the test sets and winds. Winding the wall clock back leaves the
/// monotonic clock where it was, as on a real device.
#[derive(Clone, Debug)]
pub struct ManualClock {
    wall: Arc<AtomicI64>,
    monotonic: Arc<AtomicI64>,
}

impl ManualClock {
    pub fn new(now_ms: i64) -> Self {
        Self {
            wall: Arc::new(AtomicI64::new(now_ms)),
            monotonic: Arc::new(AtomicI64::new(0)),
        }
    }

    pub fn set(&self, now_ms: i64) {
        self.wall.store(now_ms, Ordering::SeqCst);
    }

    /// The app starts again (or the device reboots): the monotonic clock
    /// starts from zero, the wall clock goes on.
    pub fn restart(&self) {
        self.monotonic.store(0, Ordering::SeqCst);
    }

    /// Time passes (`ms` > 0) or the user winds the clock back (`ms` < 0).
    pub fn advance(&self, ms: i64) {
        self.wall.fetch_add(ms, Ordering::SeqCst);
        if ms > 0 {
            self.monotonic.fetch_add(ms, Ordering::SeqCst);
        }
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.wall.load(Ordering::SeqCst)
    }

    fn monotonic_ms(&self) -> i64 {
        self.monotonic.load(Ordering::SeqCst)
    }
}
