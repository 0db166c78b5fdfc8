//! `dynamic`: keeps rare keys whole and thins frequent ones to about `target_per_key` lines per
//! window, by entry timestamps (windows are aligned: `floor(ts / window)`).
//!
//! A key's rate is `target / max(count in the previous window, count so far in this one)`, and
//! lines are kept by a running credit (add `target`, keep and subtract the estimate when it
//! covers it), so thinning is even, not bursty: a key seen N times per window keeps about
//! `target` of them once the previous window is known, about `target × (1 + ln(N / target))` in
//! its first window. The counts are this instance's only: decisions depend on which lines this
//! worker saw, so they are neither replica-consistent nor the same on a replay.

use crate::table::{Aging, Table};

#[derive(Debug, Clone, Copy)]
struct KeyState {
    window: i64,
    count: u64,
    prev: u64,
    credit: u64,
    last_ts: i64,
}

impl Aging for KeyState {
    fn last_seen(&self) -> i64 {
        self.last_ts
    }
}

/// The `dynamic` state of one plugin instance.
#[derive(Debug)]
pub struct Dynamic {
    window: i64,
    target: u64,
    keys: Table<KeyState>,
    now_window: i64,
}

impl Dynamic {
    /// Windows of `window_ns`, about `target` lines per key and window, at most `max_keys` keys.
    pub fn new(window_ns: i64, target: u64, max_keys: usize) -> Self {
        Self { window: window_ns, target, keys: Table::new(max_keys), now_window: i64::MIN }
    }

    /// Whether to keep a line of the key hashed to `key` at `ts`.
    pub fn keeps(&mut self, key: u64, ts: i64) -> bool {
        let w = ts.div_euclid(self.window);
        self.now_window = self.now_window.max(w);
        let now_window = self.now_window;
        let s = self.keys.entry(
            key,
            || KeyState { window: w, count: 0, prev: 0, credit: 0, last_ts: ts },
            // Not seen in this window or the previous one: a new key would behave the same.
            |s| s.window.saturating_add(1) < now_window,
        );
        if w > s.window {
            s.prev = if w == s.window + 1 { s.count } else { 0 };
            s.count = 0;
            s.credit = 0;
            s.window = w;
        }
        s.last_ts = s.last_ts.max(ts);
        s.count += 1;
        let estimate = s.count.max(s.prev);
        if estimate <= self.target {
            return true;
        }
        s.credit += self.target;
        if s.credit >= estimate {
            s.credit -= estimate;
            true
        } else {
            false
        }
    }

    /// Keys forgotten while still counting, since the last call.
    pub fn take_evicted(&mut self) -> u64 {
        self.keys.take_evicted()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.keys.len()
    }
}
