//! The `sample` built-in plugin: keeps a consistent fraction of lines per level, limits rates,
//! thins frequent keys and drops duplicates.
//!
//! Four steps, each optional, in this order for every entry (the first that drops it decides and
//! counts it):
//! 1. `dedupe`: a line identical to one of the same stream seen less than `window` before or
//!    after it is dropped (`deduplicated`);
//! 2. probabilistic sampling: the entry's level (`level`, default the `level` label) picks a rate
//!    from `rates` (else `default_rate`), and the entry is kept iff [`keeps`]`(key, rate)`, with
//!    the key's value (`key`, e.g. metadata `trace_id`): every line of a trace gets the same
//!    decision, on every replica and every run (`dropped:<level>`);
//! 3. `dynamic`: rare keys are kept whole, frequent ones thinned to about `target_per_key` per
//!    window (`thinned`); per instance, so not replica-consistent;
//! 4. `rate_limit`: a token bucket per stream or key, in lines and/or bytes per second of entry
//!    time, with an optional summary entry per stream and batch (`rate_limited`).
//!
//! The reference chain's sampling (all WARN and ERROR, all INFO, 10% of DEBUG, by trace):
//!
//! ```yaml
//! - plugin: sample
//!   config:
//!     key: { metadata: trace_id }
//!     rates: { debug: 0.1 }
//! ```
//!
//! State (buckets, dedupe table, dynamic counts) belongs to one instance, i.e. one worker
//! thread. sluice shards streams over workers by their labels, so per-stream state sees all of
//! its stream on a replica; per-key state across streams is per worker. Every table is bounded:
//! when one is full, entries that no longer matter go first, then the least recently seen.

mod config;
mod dedupe;
mod dynamic;
mod limit;
mod scan;
mod table;
#[cfg(test)]
mod tests;

use sluice_sdk::{Batch, Entry, Error, NewEntry, Plugin, Stream, Verdict, bail, count};
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

pub use config::{Config, DedupeConfig, DynamicConfig, MissingKey, Per, RateLimit, Source};
pub use scan::{LEVELS, level_index};

use dedupe::Dedupe;
use dynamic::Dynamic;
use limit::{Limiter, Rate};
use scan::UNKNOWN;

/// 2⁶⁴, exactly.
const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;

/// The sampling decision: whether an entry whose key is `key` is kept at `rate`.
///
/// Kept iff `xxh3_64(key) < floor(rate × 2⁶⁴)`, with xxh3 64-bit and seed 0 (`xxhash-rust`'s
/// `xxh3_64`); a rate of 1 or more keeps everything, 0 or less (or NaN) nothing. The same key
/// and rate always give the same answer, on every replica; a key kept at `rate` is kept at any
/// higher rate; over many keys the kept fraction is `rate`.
pub fn keeps(key: &[u8], rate: f64) -> bool {
    Threshold::of(rate).keeps(xxh3_64(key))
}

/// A rate as the hash bound it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Threshold {
    All,
    /// Keep hashes below this.
    Below(u64),
}

impl Threshold {
    fn of(rate: f64) -> Self {
        if rate >= 1.0 {
            Threshold::All
        } else if rate > 0.0 {
            // Exact: scaling by a power of two; the cast truncates (floor) and stays below 2⁶⁴.
            Threshold::Below((rate * TWO_POW_64) as u64)
        } else {
            Threshold::Below(0)
        }
    }

    fn keeps(self, hash: u64) -> bool {
        match self {
            Threshold::All => true,
            Threshold::Below(bound) => hash < bound,
        }
    }
}

/// Counter names for probabilistic drops, by level index.
const DROPPED: [&str; 6] =
    ["dropped:debug", "dropped:info", "dropped:warn", "dropped:error", "dropped:fatal", "dropped:unknown"];

/// What a batch counted, handed to [`count`] once per batch.
#[derive(Debug, Default)]
struct Counts {
    dropped: [u64; 6],
    missing_key: u64,
    deduplicated: u64,
    thinned: u64,
    rate_limited: u64,
    summaries: u64,
}

/// A stream of the current batch. What comes from its labels is read once, not per entry.
#[derive(Debug, Clone, Copy)]
struct StreamState<'a> {
    /// xxh3 of the tenant and the labels: the key of per-stream state.
    fingerprint: u64,
    /// The level index when it comes from a stream label; `None`: read per entry.
    level: Option<usize>,
    /// The key's value when `key` is a label; `None`: read per entry.
    key: Option<Option<&'a [u8]>>,
    /// The dynamic key's value when it is a label; `None`: read per entry.
    dynamic_key: Option<Option<&'a [u8]>>,
    /// Nothing to do for its entries.
    idle: bool,
    dropped_lines: u64,
    dropped_bytes: u64,
    last_dropped_ts: i64,
}

#[derive(Debug)]
struct RateLimiting {
    per: Per,
    summary: bool,
    limiter: Limiter,
}

/// The `sample` plugin.
#[derive(Debug)]
pub struct Sample {
    key: Option<Source>,
    missing_key: MissingKey,
    level: Source,
    /// By level index; the last for unknown levels.
    thresholds: [Threshold; 6],
    max_scan: usize,
    dedupe: Option<Dedupe>,
    dynamic: Option<(Source, Dynamic)>,
    limit: Option<RateLimiting>,
    /// Per-batch scratch, reused.
    scratch: Vec<u8>,
    counts: Counts,
}

impl Plugin for Sample {
    type Config = Config;

    fn init(config: Config) -> Result<Self, Error> {
        if let Some(key) = &config.key {
            config::check_source("key", key)?;
        } else if config.missing_key.is_some() {
            bail!("`missing_key` needs a `key`: without one, every entry's line is hashed");
        }
        config::check_source("level", &config.level)?;
        let thresholds = config::rates(&config)?.map(Threshold::of);
        if config.max_scan_bytes == 0 {
            bail!("`max_scan_bytes` must be at least 1");
        }
        let dedupe = match &config.dedupe {
            Some(d) => Some(Dedupe::new(
                config::window_ns("dedupe.window", d.window)?,
                config::at_least_one("dedupe.max_entries", d.max_entries as u64)? as usize,
            )),
            None => None,
        };
        let dynamic = match &config.dynamic {
            Some(d) => {
                config::check_source("dynamic.key", &d.key)?;
                let window = config::window_ns("dynamic.window", d.window)?;
                let target = config::at_least_one("dynamic.target_per_key", d.target_per_key)?;
                let max_keys = config::at_least_one("dynamic.max_keys", d.max_keys as u64)? as usize;
                Some((d.key.clone(), Dynamic::new(window, target, max_keys)))
            }
            None => None,
        };
        let limit = match &config.rate_limit {
            Some(r) => Some(rate_limiting(r, config.key.is_some())?),
            None => None,
        };
        Ok(Self {
            key: config.key,
            missing_key: config.missing_key.unwrap_or_default(),
            level: config.level,
            thresholds,
            max_scan: config.max_scan_bytes,
            dedupe,
            dynamic,
            limit,
            scratch: Vec::new(),
            counts: Counts::default(),
        })
    }

    fn process(&mut self, entry: &mut Entry<'_>) -> Result<Verdict, Error> {
        // Used only when called directly: `process_batch` is what sluice calls.
        let fingerprint = self.fingerprint("", entry.labels());
        let mut stream = self.stream_state(fingerprint, None, None, None);
        Ok(self.decide(entry, &mut stream, xxh3_64(b"")))
    }

    fn process_batch(&mut self, batch: &mut Batch<'_>) -> Result<(), Error> {
        let tenant = batch.tenant();
        let tenant_seed = xxh3_64(tenant.as_bytes());
        let stateful = self.dedupe.is_some() || self.limit.is_some();
        let mut streams = Vec::with_capacity(batch.stream_count());
        for stream in batch.streams() {
            let fingerprint = if stateful { self.fingerprint(tenant, stream.labels()) } else { 0 };
            let level = stream_label(Some(&self.level), &stream).map(|v| v.map_or(UNKNOWN, level_index));
            let key = stream_label(self.key.as_ref(), &stream);
            let dynamic_key = stream_label(self.dynamic.as_ref().map(|(source, _)| source), &stream);
            streams.push(self.stream_state(fingerprint, level, key, dynamic_key));
        }
        let result = batch.for_each_entry(|entry| {
            let i = entry.stream_index();
            Ok(self.decide(entry, &mut streams[i], tenant_seed))
        });
        if result.is_ok() && self.limit.as_ref().is_some_and(|l| l.summary) {
            for (i, s) in streams.iter().enumerate() {
                if s.dropped_lines > 0 {
                    let line = summary_line(s.dropped_lines, s.dropped_bytes);
                    batch
                        .add_entry(NewEntry::new(s.last_dropped_ts, line).labels(batch.stream(i).labels()))?;
                    self.counts.summaries += 1;
                }
            }
        }
        self.flush_counts();
        result
    }
}

/// The summary entry's line: logfmt, so `| logfmt` in LogQL reads it.
pub fn summary_line(lines: u64, bytes: u64) -> String {
    format!("msg=\"sample: rate limit exceeded\" dropped_lines={lines} dropped_bytes={bytes}")
}

fn rate_limiting(r: &RateLimit, has_key: bool) -> Result<RateLimiting, Error> {
    if r.per == Per::Key && !has_key {
        bail!("`rate_limit.per: key` needs a top-level `key`");
    }
    let rate = |at: &str, per_second: Option<u64>, burst_at: &str, burst: Option<u64>| -> Result<_, Error> {
        match (per_second, burst) {
            (None, None) => Ok(None),
            (None, Some(_)) => bail!("`rate_limit.{burst_at}` needs `rate_limit.{at}`"),
            (Some(n), burst) => {
                let n = config::at_least_one(&format!("rate_limit.{at}"), n)?;
                let burst = config::at_least_one(&format!("rate_limit.{burst_at}"), burst.unwrap_or(n))?;
                Ok(Some(Rate::new(n, burst)))
            }
        }
    };
    let lines = rate("lines_per_second", r.lines_per_second, "burst_lines", r.burst_lines)?;
    let bytes = rate(
        "bytes_per_second",
        r.bytes_per_second.map(|b| b.as_u64()),
        "burst_bytes",
        r.burst_bytes.map(|b| b.as_u64()),
    )?;
    if lines.is_none() && bytes.is_none() {
        bail!("`rate_limit` needs `lines_per_second`, `bytes_per_second` or both");
    }
    let max_keys = config::at_least_one("rate_limit.max_keys", r.max_keys as u64)? as usize;
    Ok(RateLimiting { per: r.per, summary: r.summary, limiter: Limiter::new(lines, bytes, max_keys) })
}

/// A label source's value for all entries of `stream` (an empty value counts as none); `None`
/// for other sources, which are read per entry.
fn stream_label<'a>(source: Option<&Source>, stream: &Stream<'a>) -> Option<Option<&'a [u8]>> {
    match source {
        Some(Source::Label(name)) => Some(stream.label(name).map(str::as_bytes).filter(|v| !v.is_empty())),
        _ => None,
    }
}

/// The value of `source` for `entry`; an empty value counts as none.
fn value<'e>(entry: &'e Entry<'_>, source: &Source, max_scan: usize) -> Option<&'e [u8]> {
    let v = match source {
        Source::Label(name) => entry.label(name).map(str::as_bytes),
        Source::Metadata(name) => entry.metadata_value(name).map(str::as_bytes),
        Source::Field(key) => scan::field(entry.line().as_bytes(), key.as_bytes(), max_scan),
    };
    v.filter(|v| !v.is_empty())
}

impl Sample {
    /// xxh3 of the tenant and the sorted labels, with separators no UTF-8 text contains.
    fn fingerprint<'a>(&mut self, tenant: &str, labels: impl Iterator<Item = (&'a str, &'a str)>) -> u64 {
        let buf = &mut self.scratch;
        buf.clear();
        buf.extend_from_slice(tenant.as_bytes());
        for (name, value) in labels {
            buf.push(0xff);
            buf.extend_from_slice(name.as_bytes());
            buf.push(0xfe);
            buf.extend_from_slice(value.as_bytes());
        }
        xxh3_64(buf)
    }

    fn stream_state<'a>(
        &self,
        fingerprint: u64,
        level: Option<usize>,
        key: Option<Option<&'a [u8]>>,
        dynamic_key: Option<Option<&'a [u8]>>,
    ) -> StreamState<'a> {
        let idle = self.dedupe.is_none()
            && self.dynamic.is_none()
            && self.limit.is_none()
            && level.is_some_and(|l| self.thresholds[l] == Threshold::All);
        StreamState {
            fingerprint,
            level,
            key,
            dynamic_key,
            idle,
            dropped_lines: 0,
            dropped_bytes: 0,
            last_dropped_ts: i64::MIN,
        }
    }

    fn decide(&mut self, entry: &Entry<'_>, stream: &mut StreamState<'_>, tenant_seed: u64) -> Verdict {
        if stream.idle {
            return Verdict::Keep;
        }
        let line = entry.line().as_bytes();
        let ts = entry.timestamp_ns();
        if let Some(dedupe) = &mut self.dedupe
            && dedupe.is_duplicate(xxh3_64_with_seed(line, stream.fingerprint), ts)
        {
            self.counts.deduplicated += 1;
            return Verdict::Drop;
        }
        let level = match stream.level {
            Some(level) => level,
            None => value(entry, &self.level, self.max_scan).map_or(UNKNOWN, level_index),
        };
        let threshold = self.thresholds[level];
        let per_key = self.limit.as_ref().is_some_and(|l| l.per == Per::Key);
        let key = match (stream.key, &self.key) {
            (Some(key), _) => key,
            (None, Some(source)) if threshold != Threshold::All || per_key => {
                value(entry, source, self.max_scan)
            }
            _ => None,
        };
        if let Threshold::Below(bound) = threshold {
            let keep = match key {
                Some(key) => xxh3_64(key) < bound,
                None if self.key.is_none() => xxh3_64(line) < bound,
                None => {
                    self.counts.missing_key += 1;
                    match self.missing_key {
                        MissingKey::Line => xxh3_64(line) < bound,
                        MissingKey::Keep => true,
                        MissingKey::Drop => false,
                    }
                }
            };
            if !keep {
                self.counts.dropped[level] += 1;
                return Verdict::Drop;
            }
        }
        if let Some((source, dynamic)) = &mut self.dynamic {
            let k = match stream.dynamic_key {
                Some(k) => k,
                None => value(entry, source, self.max_scan),
            };
            if let Some(k) = k
                && !dynamic.keeps(xxh3_64_with_seed(k, tenant_seed), ts)
            {
                self.counts.thinned += 1;
                return Verdict::Drop;
            }
        }
        if let Some(limit) = &mut self.limit {
            let bucket = match (limit.per, key) {
                (Per::Key, Some(k)) => xxh3_64_with_seed(k, tenant_seed),
                _ => stream.fingerprint,
            };
            if !limit.limiter.admit(bucket, ts, line.len()) {
                self.counts.rate_limited += 1;
                stream.dropped_lines += 1;
                stream.dropped_bytes += line.len() as u64;
                stream.last_dropped_ts = stream.last_dropped_ts.max(ts);
                return Verdict::Drop;
            }
        }
        Verdict::Keep
    }

    fn flush_counts(&mut self) {
        let c = std::mem::take(&mut self.counts);
        for (name, n) in DROPPED.iter().zip(c.dropped) {
            count(name, n);
        }
        count("missing_key", c.missing_key);
        count("deduplicated", c.deduplicated);
        count("thinned", c.thinned);
        count("rate_limited", c.rate_limited);
        count("summaries", c.summaries);
        let mut evicted = 0;
        if let Some(d) = &mut self.dedupe {
            evicted += d.take_evicted();
        }
        if let Some((_, d)) = &mut self.dynamic {
            evicted += d.take_evicted();
        }
        if let Some(l) = &mut self.limit {
            evicted += l.limiter.take_evicted();
        }
        count("evicted", evicted);
    }
}

sluice_sdk::export!(Sample);
