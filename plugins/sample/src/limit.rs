//! The token buckets of `rate_limit`, driven by entry timestamps.
//!
//! A plugin has no trustworthy clock (and batches may be replayed), so time is the entries' own:
//! a bucket refills by `rate × (ts − last_ts)` when an entry is newer than the newest it has
//! seen, and not at all for older (out-of-order) entries. Tokens are counted in billionths, so
//! refills from nanosecond timestamps are exact: no drift, whatever the spacing.

use crate::table::{Aging, Table};

/// Billionths of a token per token.
const NANO: i128 = 1_000_000_000;

/// One bucket's rate and capacity.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    /// Tokens per second: billionths of a token per nanosecond.
    per_second: u64,
    /// Capacity, in billionths.
    burst: i128,
}

impl Rate {
    /// `per_second` tokens per second, at most `burst` (both at least 1).
    pub fn new(per_second: u64, burst: u64) -> Self {
        Self { per_second, burst: i128::from(burst) * NANO }
    }

    /// `tokens` after `elapsed_ns` more nanoseconds. The product of two `u64`s fits a `u128`.
    fn refill(&self, tokens: i128, elapsed_ns: u64) -> i128 {
        let added = u128::from(elapsed_ns) * u128::from(self.per_second);
        let added = i128::try_from(added).unwrap_or(i128::MAX);
        tokens.saturating_add(added).min(self.burst)
    }
}

/// A key's buckets: lines and bytes, in billionths of a token (negative: in debt).
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    lines: i128,
    bytes: i128,
    last_ts: i64,
}

impl Aging for Bucket {
    fn last_seen(&self) -> i64 {
        self.last_ts
    }
}

/// The `rate_limit` state of one plugin instance.
#[derive(Debug)]
pub struct Limiter {
    lines: Option<Rate>,
    bytes: Option<Rate>,
    buckets: Table<Bucket>,
    /// The newest timestamp seen.
    now: i64,
}

impl Limiter {
    /// Limits by lines, bytes or both, with at most `max_keys` buckets.
    pub fn new(lines: Option<Rate>, bytes: Option<Rate>, max_keys: usize) -> Self {
        Self { lines, bytes, buckets: Table::new(max_keys), now: i64::MIN }
    }

    /// Whether an entry of `len` bytes at `ts` fits the bucket of `key`; if it does, it is
    /// charged. A line needs one line token; it needs `len` byte tokens, or a full byte bucket
    /// if it is larger than the burst (then the bucket goes into debt, repaid by later refills).
    pub fn admit(&mut self, key: u64, ts: i64, len: usize) -> bool {
        self.now = self.now.max(ts);
        let (lines, bytes, now) = (self.lines, self.bytes, self.now);
        let bucket = self.buckets.entry(
            key,
            || Bucket {
                lines: lines.map_or(0, |r| r.burst),
                bytes: bytes.map_or(0, |r| r.burst),
                last_ts: ts,
            },
            // A bucket that would have refilled completely by now is what a new one would be.
            |b| {
                let elapsed = now.abs_diff(b.last_ts);
                lines.is_none_or(|r| r.refill(b.lines, elapsed) >= r.burst)
                    && bytes.is_none_or(|r| r.refill(b.bytes, elapsed) >= r.burst)
            },
        );
        if ts > bucket.last_ts {
            let elapsed = ts.abs_diff(bucket.last_ts);
            if let Some(r) = lines {
                bucket.lines = r.refill(bucket.lines, elapsed);
            }
            if let Some(r) = bytes {
                bucket.bytes = r.refill(bucket.bytes, elapsed);
            }
            bucket.last_ts = ts;
        }
        // Lines are far shorter than 2⁶⁴ bytes.
        let cost = len as i128 * NANO;
        let fits = lines.is_none_or(|_| bucket.lines >= NANO)
            && bytes.is_none_or(|r| bucket.bytes >= cost.min(r.burst));
        if fits {
            if lines.is_some() {
                bucket.lines -= NANO;
            }
            if bytes.is_some() {
                bucket.bytes -= cost;
            }
        }
        fits
    }

    /// Buckets forgotten while not yet full, since the last call.
    pub fn take_evicted(&mut self) -> u64 {
        self.buckets.take_evicted()
    }

    #[cfg(test)]
    pub fn buckets(&self) -> usize {
        self.buckets.len()
    }
}
