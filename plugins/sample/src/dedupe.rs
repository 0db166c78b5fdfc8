//! `dedupe`: drops a line identical to one of the same stream seen less than `window` before or
//! after it (entry timestamps). It runs first, so "seen" means passed by this step, whatever
//! later steps decide.
//!
//! The table maps a hash of (tenant, stream labels, line) to the timestamp of the occurrence
//! that opened its window. Duplicates don't extend the window: a line repeated every second
//! with a 10 s window passes once every 10 s, so an endless repeat stays visible.

use crate::table::{Aging, Table};

/// When the occurrence that opened a line's window was.
#[derive(Debug, Clone, Copy)]
struct Seen(i64);

impl Aging for Seen {
    fn last_seen(&self) -> i64 {
        self.0
    }
}

/// The `dedupe` state of one plugin instance.
#[derive(Debug)]
pub struct Dedupe {
    window: i64,
    seen: Table<Seen>,
    now: i64,
}

impl Dedupe {
    /// A window of `window_ns`, remembering at most `max_entries` lines.
    pub fn new(window_ns: i64, max_entries: usize) -> Self {
        Self { window: window_ns, seen: Table::new(max_entries), now: i64::MIN }
    }

    /// Whether the line hashed to `key` at `ts` is a duplicate; if not, it is remembered.
    pub fn is_duplicate(&mut self, key: u64, ts: i64) -> bool {
        self.now = self.now.max(ts);
        if let Some(seen) = self.seen.get_mut(key) {
            if ts.abs_diff(seen.0) < self.window.unsigned_abs() {
                return true;
            }
            // Outside the window: this one opens a new window, unless it is older.
            seen.0 = seen.0.max(ts);
            return false;
        }
        // Stale: no entry newer than `now` can fall within its window any more (older ones
        // could, but out-of-order entries are rare; forgetting lets such a duplicate through).
        let (window, now) = (self.window, self.now);
        self.seen.entry(key, || Seen(ts), |seen| seen.0.saturating_add(window) <= now);
        false
    }

    /// Lines forgotten within their window, since the last call.
    pub fn take_evicted(&mut self) -> u64 {
        self.seen.take_evicted()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.seen.len()
    }
}
