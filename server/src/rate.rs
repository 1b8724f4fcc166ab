//! Token buckets keyed by who is asking: a burst, then a steady rate. The
//! one way the server bounds how fast an address, a device or an uploader
//! may make it work (handshakes, audit events). Time is passed in.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

/// Keys kept before buckets that have refilled are forgotten.
const MAX_KEYS: usize = 65_536;

/// A burst, then so many a second.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    pub burst: f64,
    pub per_second: f64,
}

impl Rate {
    pub const fn per_second(burst: f64, per_second: f64) -> Self {
        Self { burst, per_second }
    }

    pub const fn per_hour(burst: f64, per_hour: f64) -> Self {
        Self {
            burst,
            per_second: per_hour / 3600.0,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at_ms: i64,
}

/// One bucket per key, each starting full.
#[derive(Debug)]
pub struct Buckets<K> {
    rate: Rate,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Hash + Eq + Copy> Buckets<K> {
    pub fn new(rate: Rate) -> Self {
        Self {
            rate,
            buckets: Mutex::default(),
        }
    }

    /// Takes `n` from `key`'s bucket at `now_ms`; false (taking nothing)
    /// when it holds fewer. A clock step back gives nothing.
    pub fn take(&self, key: K, n: f64, now_ms: i64) -> bool {
        let Ok(mut buckets) = self.buckets.lock() else {
            return false;
        };
        if buckets.len() >= MAX_KEYS {
            let rate = self.rate;
            buckets.retain(|_, b| refilled(rate, *b, now_ms) < rate.burst);
        }
        let b = buckets.entry(key).or_insert(Bucket {
            tokens: self.rate.burst,
            at_ms: now_ms,
        });
        b.tokens = refilled(self.rate, *b, now_ms);
        b.at_ms = b.at_ms.max(now_ms);
        if b.tokens < n {
            return false;
        }
        b.tokens -= n;
        true
    }
}

fn refilled(rate: Rate, b: Bucket, now_ms: i64) -> f64 {
    let seconds = now_ms.saturating_sub(b.at_ms).max(0) as f64 / 1000.0;
    (b.tokens + seconds * rate.per_second).min(rate.burst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_takes_a_burst_then_the_rate_and_other_keys_are_not_held_back() {
        let b = Buckets::new(Rate::per_second(10.0, 2.0));
        let t0 = 1_000_000;
        for _ in 0..10 {
            assert!(b.take(1, 1.0, t0));
        }
        assert!(!b.take(1, 1.0, t0), "the burst is spent");
        assert!(b.take(2, 1.0, t0), "another key's bucket is full");
        assert!(b.take(1, 1.0, t0 + 500), "half a second regains one");
        assert!(!b.take(1, 1.0, t0 + 500));
        assert!(!b.take(1, 1.0, t0), "a clock step back gives nothing");
        let h = Rate::per_hour(20_000.0, 20_000.0);
        assert!((h.per_second - 20_000.0 / 3600.0).abs() < 1e-9);
    }

    #[test]
    fn many_keys_do_not_grow_the_map_without_bound() {
        let b = Buckets::new(Rate::per_second(1.0, 1.0));
        for k in 0..(MAX_KEYS as u32 + 10) {
            b.take(k, 1.0, 0);
        }
        // A second later every bucket has refilled: the next key clears them.
        b.take(u32::MAX, 1.0, 2_000);
        assert!(b.buckets.lock().unwrap().len() < 10);
    }
}
