//! The `level` built-in plugin: finds each line's log level and sets it, normalised to `debug`,
//! `info`, `warn`, `error` or `fatal`, as a label (default) or as structured metadata.
//!
//! Detection looks only at the first `max_scan_bytes` of a line, in one pass, without parsing
//! it ([`detect`] has the details):
//! 1. JSON lines (`{…`): a top-level key from `fields` (`"level": "WARN"`); other lines: a logfmt
//!    key from `fields` (`level=warn`). A key that is present decides, even if its value is no
//!    level: fields win over text, so `{"level":"INFO","msg":"no ERROR here"}` is `info`;
//! 2. text forms: a glog/klog header (`W1121 12:00:00.000000 …`), then the first level word that
//!    is upper case (`ERROR`, `WARNING:`), bracketed (`[warn]`, `[E]`, `<error>`) or followed by a
//!    colon (`Error: …`). Lower-case words in running text don't count (`3 errors`, `errors=0`).
//!
//! Spellings are normalised case-insensitively: `TRACE`/`DEBUG`/`DBG` → debug,
//! `INFO`/`NOTICE` → info, `WARN`/`WARNING` → warn, `ERROR`/`ERR` → error,
//! `FATAL`/`CRITICAL`/`CRIT`/`PANIC`/`EMERG`/`ALERT` → fatal (the README has the full table).
//!
//! ```yaml
//! - plugin: level
//!   config:
//!     target: label            # label | metadata
//!     name: level
//!     existing: normalize      # normalize | keep | overwrite
//!     default: unknown         # a level, `unknown`, or none (leave undetected lines alone)
//!     fields: [level, lvl, severity, loglevel, log.level]
//!     text: true
//!     max_scan_bytes: 512
//! ```
//!
//! An entry is changed only when the value it should carry differs from what it has, so lines
//! that already carry their normalised level cost no patch.

pub mod detect;
#[cfg(test)]
mod tests;

use serde::Deserialize;
use sluice_sdk::{Batch, Entry, Error, Plugin, Verdict, bail, count};

pub use detect::{Detector, Severity, normalize};

/// The configuration; every key has a default, so `- plugin: level` alone works.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the level goes: a `label` (default) or structured `metadata`.
    #[serde(default)]
    pub target: Target,
    /// The label or metadata name (default `level`).
    #[serde(default = "default_name")]
    pub name: String,
    /// What to do with an entry that already has `name`: `normalize` (default) keeps its value
    /// but rewrites a known spelling to the normalised one (`WARNING` → `warn`); `keep` leaves
    /// it untouched; `overwrite` detects from the line and replaces it when a level is found.
    #[serde(default)]
    pub existing: Existing,
    /// The value for lines without a detectable level: `debug`, `info`, `warn`, `error`,
    /// `fatal`, `unknown`, or `none` (the default): leave them without.
    #[serde(default)]
    pub default: Option<String>,
    /// JSON and logfmt keys that hold the level, matched case-insensitively; JSON keys only at
    /// the top level (a dotted name such as `log.level` is a key of its own).
    #[serde(default = "default_fields")]
    pub fields: Vec<String>,
    /// Whether to look for text forms (`ERROR`, `[W]`, `WARNING:`, glog headers) when no field
    /// decides (default true).
    #[serde(default = "default_text")]
    pub text: bool,
    /// How many bytes at the start of a line are looked at (default 512).
    #[serde(default = "default_max_scan_bytes")]
    pub max_scan_bytes: usize,
}

/// Where the level is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    #[default]
    Label,
    Metadata,
}

/// What happens to an entry that already has the label or metadata.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Existing {
    /// Keep it, in its normalised spelling when it is a known one.
    #[default]
    Normalize,
    /// Keep it as it is.
    Keep,
    /// Replace it with the level detected in the line, if any.
    Overwrite,
}

fn default_name() -> String {
    "level".to_string()
}

/// Default `fields`.
pub const DEFAULT_FIELDS: [&str; 5] = ["level", "lvl", "severity", "loglevel", "log.level"];

fn default_fields() -> Vec<String> {
    DEFAULT_FIELDS.iter().map(|f| f.to_string()).collect()
}

fn default_text() -> bool {
    true
}

/// Default `max_scan_bytes`: wide enough for logrus, which orders its JSON keys alphabetically.
pub const DEFAULT_MAX_SCAN_BYTES: usize = 512;

fn default_max_scan_bytes() -> usize {
    DEFAULT_MAX_SCAN_BYTES
}

/// Counter names, by [`Severity`] index.
const DETECTED: [&str; 5] =
    ["detected:debug", "detected:info", "detected:warn", "detected:error", "detected:fatal"];

/// The `level` plugin.
#[derive(Debug)]
pub struct Level {
    target: Target,
    name: String,
    existing: Existing,
    default: Option<&'static str>,
    detector: Detector,
    /// Counts of the current batch, handed to [`count`] once per batch.
    detected: [u64; 5],
    undetected: u64,
    kept: u64,
}

impl Level {
    /// The value an entry with `line` whose label or metadata is `current` should carry;
    /// `None`: leave it as it is.
    fn decide(&mut self, line: &str, current: Option<&str>) -> Option<&'static str> {
        match (current, self.existing) {
            (Some(_), Existing::Keep) => {
                self.kept += 1;
                None
            }
            (Some(value), Existing::Normalize) => {
                self.kept += 1;
                normalize(value).map(Severity::as_str)
            }
            (current, _) => match self.detector.detect(line) {
                Some(level) => {
                    self.detected[level as usize] += 1;
                    Some(level.as_str())
                }
                None => {
                    self.undetected += 1;
                    match current {
                        Some(value) => normalize(value).map(Severity::as_str),
                        None => self.default,
                    }
                }
            },
        }
    }

    /// Sets `want` on `entry` if it isn't `current` already.
    fn apply(&self, entry: &mut Entry<'_>, current: Option<&str>, want: Option<&str>) -> Result<(), Error> {
        if let Some(want) = want
            && current != Some(want)
        {
            match self.target {
                Target::Label => entry.set_label(&self.name, want)?,
                Target::Metadata => entry.set_metadata(&self.name, want)?,
            }
        }
        Ok(())
    }
}

impl Plugin for Level {
    type Config = Config;

    fn init(config: Config) -> Result<Self, Error> {
        let name = config.name;
        if !sluice_sdk::is_valid_label_name(&name) {
            bail!("`name`: `{}` is not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*)", name.escape_default());
        }
        if name.starts_with("__") {
            bail!("`name`: `{name}`: names starting with `__` are reserved for temporary labels");
        }
        let default = match config.default.as_deref() {
            None | Some("none") => None,
            Some("unknown") => Some("unknown"),
            Some(value) => match Severity::ALL.into_iter().find(|s| s.as_str() == value) {
                Some(s) => Some(s.as_str()),
                None => bail!(
                    "`default`: unknown level `{}`, expected one of debug, info, warn, error, fatal, unknown, none",
                    value.escape_default()
                ),
            },
        };
        for (i, field) in config.fields.iter().enumerate() {
            if field.is_empty() || field.bytes().any(|b| b == b'"' || b == b'=' || b == b'\\' || b <= b' ') {
                bail!(
                    "`fields[{i}]`: `{}` is not a key: keys are non-empty, without quotes, `=`, backslashes, spaces or control characters",
                    field.escape_default()
                );
            }
            if config.fields[..i].iter().any(|f| f.eq_ignore_ascii_case(field)) {
                bail!("`fields[{i}]`: `{field}` is listed twice (keys match case-insensitively)");
            }
        }
        if config.fields.is_empty() && !config.text {
            bail!("nothing to detect with: `fields` is empty and `text` is false");
        }
        if config.max_scan_bytes == 0 {
            bail!("`max_scan_bytes` must be at least 1");
        }
        Ok(Self {
            target: config.target,
            name,
            existing: config.existing,
            default,
            detector: Detector::new(&config.fields, config.text, config.max_scan_bytes),
            detected: [0; 5],
            undetected: 0,
            kept: 0,
        })
    }

    fn process(&mut self, entry: &mut Entry<'_>) -> Result<Verdict, Error> {
        let current = match self.target {
            Target::Label => entry.label(&self.name),
            Target::Metadata => entry.metadata_value(&self.name),
        };
        let want = self.decide(entry.line(), current);
        // `current` borrows the entry: compare before changing it.
        if want.is_none() || current == want {
            return Ok(Verdict::Keep);
        }
        self.apply(entry, None, want)?;
        Ok(Verdict::Keep)
    }

    fn process_batch(&mut self, batch: &mut Batch<'_>) -> Result<(), Error> {
        let result = match self.target {
            // A label belongs to its stream: look it up once per stream, not per entry.
            Target::Label => {
                let by_stream: Vec<Option<&str>> = batch.streams().map(|s| s.label(&self.name)).collect();
                batch.for_each_entry(|entry| {
                    let current = by_stream[entry.stream_index()];
                    let want = self.decide(entry.line(), current);
                    self.apply(entry, current, want)?;
                    Ok(Verdict::Keep)
                })
            }
            Target::Metadata => batch.for_each_entry(|entry| self.process(entry)),
        };
        for (name, n) in DETECTED.iter().zip(&mut self.detected) {
            count(name, std::mem::take(n));
        }
        count("undetected", std::mem::take(&mut self.undetected));
        count("existing", std::mem::take(&mut self.kept));
        result
    }
}

sluice_sdk::export!(Level);
