//! `parse-logfmt`: reads logfmt lines (`time=… level=info msg="hello world"`) and promotes
//! chosen keys to labels or structured metadata, or rewrites the line to one key's value. Lines
//! that aren't logfmt pass untouched and are counted (`unparsed`).
//!
//! ```yaml
//! - plugin: parse-logfmt
//!   config:
//!     labels:
//!       level: { transform: level }     # level=INFO → info, level=warning → warn
//!     metadata: [trace_id, request_id]
//!     line: msg                         # optional: keep only the message
//! ```
//!
//! The format, as read by a hand scanner (no regex):
//! - A line is pairs separated by whitespace (spaces, tabs, newlines). A pair is `key=value`;
//!   a key alone (no `=`) is a key without a value.
//! - A key is a run of characters other than whitespace, `=` and `"`.
//! - A value is either quoted — `"…"`, with `\"`, `\\`, `\n`, `\t`, `\r`, `\/`, `\b`, `\f` and
//!   `\uXXXX` decoded and any other backslash kept — and then followed by whitespace or the end
//!   of the line, or unquoted: everything up to the next whitespace (`=` and `"` included, as in
//!   `url=/q?a=b`). `key=` is an empty value, which gives no output.
//! - A line is logfmt only if its first token is a `key=value` pair: a line starting with `{`
//!   (JSON), with a bare word (plain text, `2026-01-01T… INFO …`) or with `=` is rejected at
//!   once. A token that is neither a key nor a pair (a `"` in a key, a lone `=`, an unterminated
//!   quote) makes the line unparsed, unless every wanted key was found before it: the scanner
//!   stops as soon as it has them all.
//!
//! Keys are matched exactly (`http.status` is a key like any other). The output keys
//! (`labels`, `metadata`, `line`, `max_label_values`, `overwrite`) are those of every parse
//! plugin: see the `sluice-fields` crate and this plugin's README.

#[cfg(test)]
mod tests;

use serde::Deserialize;
use sluice_fields::{Extract, OutputList, Outputs, OutputsConfig, Parser, Values};
use sluice_sdk::prelude::*;

/// The configuration: the output keys shared by the parse plugins.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Keys promoted to labels: a list of keys (each label named after its key, characters
    /// outside `[a-zA-Z0-9_]` → `_`), or a map of label name to key or `{ field, transform }`.
    #[serde(default)]
    pub labels: Option<OutputList>,
    /// Keys copied to structured metadata, in the same forms as `labels`.
    #[serde(default)]
    pub metadata: Option<OutputList>,
    /// The key whose value replaces the line.
    #[serde(default)]
    pub line: Option<String>,
    /// Distinct values per promoted label and instance (default 500); later new values go to
    /// structured metadata and are counted as `label_overflow`.
    #[serde(default)]
    pub max_label_values: Option<usize>,
    /// Whether a parsed value replaces a label or metadata the entry already has (default true).
    #[serde(default)]
    pub overwrite: Option<bool>,
}

/// The parse-logfmt plugin.
#[derive(Debug)]
pub struct ParseLogfmt {
    parser: Parser<Logfmt>,
}

impl Plugin for ParseLogfmt {
    type Config = Config;

    fn init(config: Config) -> Result<Self, Error> {
        let outputs = Outputs::new(OutputsConfig {
            labels: config.labels,
            metadata: config.metadata,
            line: config.line,
            max_label_values: config.max_label_values,
            overwrite: config.overwrite,
        })?;
        outputs.check_fields(|key| {
            if key.bytes().any(|b| is_space(b) || b == b'=' || b == b'"') {
                Err(format!(
                    "`{}` is not a logfmt key: keys have no whitespace, `=` or `\"`",
                    key.escape_default()
                ))
            } else {
                Ok(())
            }
        })?;
        let keys = outputs.fields().iter().map(|f| f.path.clone()).collect();
        Ok(Self { parser: Parser::new(outputs, Logfmt { keys }) })
    }

    fn process(&mut self, entry: &mut Entry<'_>) -> Result<Verdict, Error> {
        self.parser.process(entry)
    }

    fn process_batch(&mut self, batch: &mut Batch<'_>) -> Result<(), Error> {
        self.parser.process_batch(batch)
    }
}

sluice_sdk::export!(ParseLogfmt);

/// The logfmt line format: the wanted keys, by field index.
#[derive(Debug)]
struct Logfmt {
    keys: Vec<String>,
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

impl Extract for Logfmt {
    fn extract(&mut self, line: &str, values: &mut Values) -> bool {
        let b = line.as_bytes();
        let mut i = 0;
        while b.get(i).copied().is_some_and(is_space) {
            i += 1;
        }
        // JSON, even `{a=b}`-looking: never logfmt.
        if b.get(i) == Some(&b'{') {
            return false;
        }
        let mut first = true;
        loop {
            while b.get(i).copied().is_some_and(is_space) {
                i += 1;
            }
            if i == b.len() {
                // The end; an empty line has no pair, so isn't logfmt.
                return !first;
            }
            let key_start = i;
            while let Some(&c) = b.get(i)
                && !is_space(c)
                && c != b'='
            {
                if c == b'"' {
                    return false;
                }
                i += 1;
            }
            if i == key_start {
                return false;
            }
            let field = self.keys.iter().position(|k| k.as_bytes() == &b[key_start..i]);
            if b.get(i) != Some(&b'=') {
                // A key without a value; a line that starts with one is prose, not logfmt.
                if first {
                    return false;
                }
                if let Some(f) = field {
                    values.set_null(f);
                }
            } else if b.get(i + 1) == Some(&b'"') {
                let start = i + 2;
                i = start;
                let mut escaped = false;
                loop {
                    match b.get(i) {
                        Some(b'"') => break,
                        Some(b'\\') if i + 1 < b.len() => {
                            escaped = true;
                            i += 2;
                        }
                        Some(_) => i += 1,
                        None => return false,
                    }
                }
                let end = i;
                i += 1;
                if b.get(i).is_some_and(|&c| !is_space(c)) {
                    return false;
                }
                match field {
                    Some(f) if escaped => values.set_unescaped(f, &line[start..end]),
                    Some(f) => values.set(f, start..end),
                    None => {}
                }
            } else {
                let start = i + 1;
                i = start;
                while b.get(i).is_some_and(|&c| !is_space(c)) {
                    i += 1;
                }
                if let Some(f) = field {
                    values.set(f, start..i);
                }
            }
            first = false;
            if values.all_found() {
                return true;
            }
        }
    }
}
