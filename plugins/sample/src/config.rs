//! The configuration, as written in the stage's `config:`, and its validation.

use std::collections::BTreeMap;
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;
use sluice_sdk::{Error, bail};

use crate::scan::LEVELS;

/// The configuration; every key is optional.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// What the sampling decision hashes: `{ metadata: trace_id }`, `{ label: app }` or
    /// `{ field: trace_id }` (a top-level JSON key or a logfmt key of the line). Without it,
    /// the line itself is hashed.
    #[serde(default)]
    pub key: Option<Source>,
    /// Entries without the key (or with an empty value), when their rate is below 1: `line`
    /// (default) hashes the line instead, `keep` keeps them, `drop` drops them.
    #[serde(default)]
    pub missing_key: Option<MissingKey>,
    /// Where the level is read (default `{ label: level }`); values are normalised
    /// case-insensitively (`WARNING` → warn).
    #[serde(default = "default_level")]
    pub level: Source,
    /// The kept fraction per level, 0 to 1: `{ debug: 0.1 }`. Levels not listed, and entries
    /// without a recognised level, get `default_rate`.
    #[serde(default)]
    pub rates: BTreeMap<String, f64>,
    /// The kept fraction for everything `rates` doesn't name (default 1: keep).
    #[serde(default = "default_rate")]
    pub default_rate: f64,
    /// How far into a line a `field` key is looked for (default 1024 bytes).
    #[serde(default = "default_max_scan_bytes")]
    pub max_scan_bytes: usize,
    /// Token-bucket rate limit, per stream or per key.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// Dynamic sampling per key: keep rare keys, thin frequent ones.
    #[serde(default)]
    pub dynamic: Option<DynamicConfig>,
    /// Drop lines identical to one of the same stream within a time window.
    #[serde(default)]
    pub dedupe: Option<DedupeConfig>,
}

/// Where a value comes from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A label of the entry's stream.
    Label(String),
    /// A structured metadata pair of the entry.
    Metadata(String),
    /// A top-level JSON key or a logfmt key of the line.
    Field(String),
}

/// What entries without the key get.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MissingKey {
    /// Hash the line instead of the key.
    #[default]
    Line,
    /// Keep them.
    Keep,
    /// Drop them (when their rate is below 1).
    Drop,
}

/// `rate_limit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// One bucket per `stream` (default) or per value of the top-level `key` (entries without
    /// it use their stream's bucket).
    #[serde(default)]
    pub per: Per,
    /// Lines per second.
    #[serde(default)]
    pub lines_per_second: Option<u64>,
    /// Line bytes per second: a number or a size (`1MiB`).
    #[serde(default)]
    pub bytes_per_second: Option<ByteSize>,
    /// The line bucket's capacity (default: one second's worth).
    #[serde(default)]
    pub burst_lines: Option<u64>,
    /// The byte bucket's capacity (default: one second's worth).
    #[serde(default)]
    pub burst_bytes: Option<ByteSize>,
    /// Add one entry per stream and batch saying how much the limit dropped (default false).
    #[serde(default)]
    pub summary: bool,
    /// At most this many buckets per instance (default 10000).
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
}

/// What a rate-limit bucket belongs to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Per {
    #[default]
    Stream,
    Key,
}

/// `dynamic`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DynamicConfig {
    /// The key whose frequency is measured, e.g. `{ label: app }`; entries without it are not
    /// thinned.
    pub key: Source,
    /// The window the counts are per (default 30s).
    #[serde(default = "default_dynamic_window", with = "humantime_serde")]
    pub window: Duration,
    /// About how many lines of each key to keep per window.
    pub target_per_key: u64,
    /// At most this many keys per instance (default 10000).
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
}

/// `dedupe`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupeConfig {
    /// A line identical to one of its stream kept less than this before or after it is dropped.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// At most this many remembered lines per instance (default 100000).
    #[serde(default = "default_max_entries")]
    pub max_entries: usize,
}

fn default_level() -> Source {
    Source::Label("level".to_string())
}

fn default_rate() -> f64 {
    1.0
}

/// Default `max_scan_bytes`.
pub const DEFAULT_MAX_SCAN_BYTES: usize = 1024;

fn default_max_scan_bytes() -> usize {
    DEFAULT_MAX_SCAN_BYTES
}

fn default_max_keys() -> usize {
    10_000
}

fn default_max_entries() -> usize {
    100_000
}

fn default_dynamic_window() -> Duration {
    Duration::from_secs(30)
}

/// Checks a source: valid label or metadata names, plausible keys.
pub fn check_source(at: &str, source: &Source) -> Result<(), Error> {
    match source {
        Source::Label(name) | Source::Metadata(name) => {
            if !sluice_sdk::is_valid_label_name(name) {
                let kind = if matches!(source, Source::Label(_)) { "label" } else { "metadata" };
                bail!(
                    "`{at}.{kind}`: `{}` is not a valid name ([a-zA-Z_][a-zA-Z0-9_]*)",
                    name.escape_default()
                );
            }
        }
        Source::Field(key) => {
            if key.is_empty() || key.bytes().any(|b| b == b'"' || b == b'=' || b == b'\\' || b <= b' ') {
                bail!(
                    "`{at}.field`: `{}` is not a key: keys are non-empty, without quotes, `=`, backslashes, spaces or control characters",
                    key.escape_default()
                );
            }
        }
    }
    Ok(())
}

/// Checks a rate: a number from 0 to 1.
pub fn check_rate(at: &str, rate: f64) -> Result<f64, Error> {
    if !(0.0..=1.0).contains(&rate) {
        bail!("`{at}`: {rate} is not a rate, expected a number from 0 to 1");
    }
    Ok(rate)
}

/// The rates by level index (`scan::LEVELS`; the last one for unknown levels).
pub fn rates(config: &Config) -> Result<[f64; 6], Error> {
    let default = check_rate("default_rate", config.default_rate)?;
    let mut rates = [default; 6];
    for (level, &rate) in &config.rates {
        let Some(i) = LEVELS[..5].iter().position(|l| l == level) else {
            bail!(
                "`rates.{}`: unknown level, expected one of debug, info, warn, error, fatal",
                level.escape_default()
            );
        };
        rates[i] = check_rate(&format!("rates.{level}"), rate)?;
    }
    Ok(rates)
}

/// A duration in nanoseconds, at least 1.
pub fn window_ns(at: &str, window: Duration) -> Result<i64, Error> {
    match i64::try_from(window.as_nanos()) {
        Ok(0) => bail!("`{at}` must be longer than 0s"),
        Ok(ns) => Ok(ns),
        Err(_) => bail!("`{at}`: {window:?} is too long"),
    }
}

/// A count that must be at least 1.
pub fn at_least_one(at: &str, n: u64) -> Result<u64, Error> {
    if n == 0 {
        bail!("`{at}` must be at least 1");
    }
    Ok(n)
}
