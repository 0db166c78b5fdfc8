//! `parse-json`: reads JSON lines and promotes chosen fields to labels or structured metadata,
//! or rewrites the line to one field's value. Lines that aren't JSON objects pass untouched and
//! are counted (`unparsed`).
//!
//! ```yaml
//! - plugin: parse-json
//!   config:
//!     labels:
//!       level: { transform: level }       # "INFO" → info, "Warning" → warn, ...
//!       app: kubernetes.labels.app        # nested path
//!     metadata: [trace_id, request_id]
//!     line: message                       # optional: keep only the message
//!     max_label_values: 500               # per promoted label; beyond: metadata, counted
//! ```
//!
//! A field path is object keys joined by `.`; a key that itself contains dots matches too, so
//! `http.status` finds `{"http":{"status":200}}` and `{"http.status":200}`. Arrays aren't
//! entered. A string value is decoded (escapes resolved); numbers, `true` and `false` are taken
//! as written; an object or array as its JSON text; `null` gives no output.
//!
//! The line isn't parsed into a tree: a scanner reads it once, compares keys in place, skips
//! (and checks) what isn't wanted, and stops as soon as every wanted field has been seen. So a
//! line is *parsed* when it starts with `{` (after whitespace) and is well-formed JSON up to the
//! point where the last wanted field was found, or to its end; the rest of a line isn't read.
//! A line that isn't an object is rejected on its first byte.
//!
//! The output keys (`labels`, `metadata`, `line`, `max_label_values`, `overwrite`) are those of
//! every parse plugin: see the `sluice-fields` crate and this plugin's README.

mod scan;

#[cfg(test)]
mod tests;

use serde::Deserialize;
use sluice_fields::{OutputList, Outputs, OutputsConfig, Parser};
use sluice_sdk::prelude::*;

use crate::scan::{Json, Node};

/// The configuration: the output keys shared by the parse plugins.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Fields promoted to labels: a list of paths (each label named after its path, `.` → `_`),
    /// or a map of label name to path or `{ field, transform }`.
    #[serde(default)]
    pub labels: Option<OutputList>,
    /// Fields copied to structured metadata, in the same forms as `labels`.
    #[serde(default)]
    pub metadata: Option<OutputList>,
    /// The path of the field whose value replaces the line.
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

/// The parse-json plugin.
#[derive(Debug)]
pub struct ParseJson {
    parser: Parser<Json>,
}

impl Plugin for ParseJson {
    type Config = Config;

    fn init(config: Config) -> Result<Self, Error> {
        let outputs = Outputs::new(OutputsConfig {
            labels: config.labels,
            metadata: config.metadata,
            line: config.line,
            max_label_values: config.max_label_values,
            overwrite: config.overwrite,
        })?;
        outputs.check_fields(|path| {
            if path.split('.').any(str::is_empty) {
                Err(format!("`{path}` is not a field path: object keys joined by `.`, none of them empty"))
            } else {
                Ok(())
            }
        })?;
        let mut root = Node::default();
        for (i, field) in outputs.fields().iter().enumerate() {
            root.insert(&field.path, i);
        }
        Ok(Self { parser: Parser::new(outputs, Json::new(root)) })
    }

    fn process(&mut self, entry: &mut Entry<'_>) -> Result<Verdict, Error> {
        self.parser.process(entry)
    }

    fn process_batch(&mut self, batch: &mut Batch<'_>) -> Result<(), Error> {
        self.parser.process_batch(batch)
    }
}

sluice_sdk::export!(ParseJson);
