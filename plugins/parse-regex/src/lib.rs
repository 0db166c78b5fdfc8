//! `parse-regex`: matches each line against a regular expression and promotes its named groups
//! to labels or structured metadata, or rewrites the line to one group. Lines that don't match
//! pass untouched and are counted (`unparsed`).
//!
//! ```yaml
//! - plugin: parse-regex
//!   config:
//!     regex: '^(?P<ts>\S+) (?P<level>[A-Z]+) +\[(?P<target>[^\]]+)\] (?P<msg>.*)'
//!     labels:
//!       level: { transform: level }
//!     metadata: [target]
//! ```
//!
//! `regex` is Rust `regex` syntax (<https://docs.rs/regex>), searched anywhere in the line like
//! Promtail's `regex` stage (anchor it with `^` and `$` to match whole lines); `(?P<name>…)` or
//! `(?<name>…)` names a group, and outputs name groups as their fields. A group that didn't take
//! part in the match gives no output. The line is what is matched; captures use the regex's
//! flags (add `(?s)` for `.` to match newlines of multi-line entries).
//!
//! The output keys (`labels`, `metadata`, `line`, `max_label_values`, `overwrite`) are those of
//! every parse plugin: see the `sluice-fields` crate and this plugin's README.

#[cfg(test)]
mod tests;

use regex::{CaptureLocations, Regex};
use serde::Deserialize;
use sluice_fields::{Extract, OutputList, Outputs, OutputsConfig, Parser, Values};
use sluice_sdk::prelude::*;

/// The configuration: the regex and the output keys shared by the parse plugins.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The regular expression, with at least one named group.
    #[serde(default)]
    pub regex: Option<String>,
    /// Groups promoted to labels: a list of group names, or a map of label name to group name or
    /// `{ field, transform }`.
    #[serde(default)]
    pub labels: Option<OutputList>,
    /// Groups copied to structured metadata, in the same forms as `labels`.
    #[serde(default)]
    pub metadata: Option<OutputList>,
    /// The group whose text replaces the line.
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

/// The parse-regex plugin.
#[derive(Debug)]
pub struct ParseRegex {
    parser: Parser<RegexFormat>,
}

impl Plugin for ParseRegex {
    type Config = Config;

    fn init(config: Config) -> Result<Self, Error> {
        let Some(source) = config.regex else { bail!("`regex` is required") };
        let regex = Regex::new(&source).map_err(|e| Error::msg(format!("`regex`: {e}")))?;
        let names: Vec<&str> = regex.capture_names().flatten().collect();
        if names.is_empty() {
            bail!(
                "`regex`: `{source}` has no named group, so nothing to take from a line: name them (?P<name>…)"
            );
        }
        let outputs = Outputs::new(OutputsConfig {
            labels: config.labels,
            metadata: config.metadata,
            line: config.line,
            max_label_values: config.max_label_values,
            overwrite: config.overwrite,
        })?;
        // The group index of each field, in field order.
        let mut groups = Vec::with_capacity(outputs.fields().len());
        outputs.check_fields(|name| match regex.capture_names().position(|n| n == Some(name)) {
            Some(group) => {
                groups.push(group);
                Ok(())
            }
            None => {
                Err(format!("`{name}` is not a named group of `regex` (its groups: {})", names.join(", ")))
            }
        })?;
        let locations = regex.capture_locations();
        Ok(Self { parser: Parser::new(outputs, RegexFormat { regex, locations, groups }) })
    }

    fn process(&mut self, entry: &mut Entry<'_>) -> Result<Verdict, Error> {
        self.parser.process(entry)
    }

    fn process_batch(&mut self, batch: &mut Batch<'_>) -> Result<(), Error> {
        self.parser.process_batch(batch)
    }
}

sluice_sdk::export!(ParseRegex);

/// The regex "format": the regex, its reused capture locations, and the group of each field.
#[derive(Debug)]
struct RegexFormat {
    regex: Regex,
    locations: CaptureLocations,
    groups: Vec<usize>,
}

impl Extract for RegexFormat {
    fn extract(&mut self, line: &str, values: &mut Values) -> bool {
        if self.regex.captures_read(&mut self.locations, line).is_none() {
            return false;
        }
        for (field, &group) in self.groups.iter().enumerate() {
            match self.locations.get(group) {
                Some((start, end)) => values.set(field, start..end),
                None => values.set_null(field),
            }
        }
        true
    }
}
