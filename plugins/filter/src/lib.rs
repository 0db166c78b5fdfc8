//! The `filter` built-in: keeps or drops entries by their line, labels, structured metadata or
//! level.
//!
//! The configuration is a list of `rules`, each `{name, action: drop | keep, when: {…}}`, and a
//! `default` action (`keep`). For each entry the rules are tried in order; the first rule whose
//! conditions all hold decides, and an entry no rule matches gets `default`. A `keep` rule before
//! a `drop` rule makes an exception to it.
//!
//! Conditions in `when` (all that are set must hold):
//! - `line_contains`: a string or a list; the line contains one of them (case-sensitive);
//! - `line_regex`: a regex or a list; one of them matches somewhere in the line;
//! - `labels`: `{name: value}`, every label has exactly that value (a missing label is "");
//! - `labels_regex`: `{name: regex}`, every label's whole value matches;
//! - `metadata`, `metadata_regex`: the same for structured metadata;
//! - `level`: a level or a list: the entry's level (label `level`, else structured metadata
//!   `level`, else `detected_level`, spelled in any common way) is one of them.
//!
//! ```yaml
//! - plugin: filter
//!   config:
//!     rules:
//!       - name: health_checks
//!         action: drop
//!         when:
//!           line_contains: ["GET /health", "GET /ready", "kube-probe/"]
//! ```
//!
//! Label conditions are evaluated once per stream of a batch; substring finders and regexes are
//! built once at init. Counted events: `dropped` (every dropped entry), `dropped:<name>` /
//! `kept:<name>` per named rule, `dropped:default`.

mod contains;
mod level;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;

use regex::Regex;
use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use sluice_sdk::prelude::*;
use sluice_sdk::{is_valid_event_name, is_valid_label_name};

use crate::contains::Contains;
use crate::level::Level;

/// The configuration.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Tried in order; the first whose conditions hold decides.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// What happens to an entry no rule matches; `keep` by default.
    #[serde(default)]
    pub default: Action,
}

/// One rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Names the rule's counter: `dropped:<name>` or `kept:<name>`.
    #[serde(default)]
    pub name: Option<String>,
    /// What happens to a matching entry.
    pub action: Action,
    /// The conditions, all of which must hold.
    pub when: When,
}

/// Keep or drop.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    #[default]
    Keep,
    Drop,
}

/// A rule's conditions.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct When {
    /// The line contains one of these.
    #[serde(default)]
    pub line_contains: Option<Strings>,
    /// One of these regexes matches somewhere in the line.
    #[serde(default)]
    pub line_regex: Option<Strings>,
    /// Labels with exactly these values.
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    /// Labels whose whole values match these regexes.
    #[serde(default)]
    pub labels_regex: Option<BTreeMap<String, String>>,
    /// Structured metadata with exactly these values.
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    /// Structured metadata whose whole values match these regexes.
    #[serde(default)]
    pub metadata_regex: Option<BTreeMap<String, String>>,
    /// The entry's level is one of these.
    #[serde(default)]
    pub level: Option<Strings>,
}

/// One string or a list of strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Strings {
    pub values: Vec<String>,
    /// Given as a list (item paths in messages get an index).
    pub list: bool,
}

impl<'de> Deserialize<'de> for Strings {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StringsVisitor;
        impl<'de> Visitor<'de> for StringsVisitor {
            type Value = Strings;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Strings, E> {
                Ok(Strings { values: vec![v.to_string()], list: false })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strings, A::Error> {
                let mut values = Vec::new();
                while let Some(v) = seq.next_element::<String>()? {
                    values.push(v);
                }
                Ok(Strings { values, list: true })
            }
        }
        deserializer.deserialize_any(StringsVisitor)
    }
}

/// A compiled rule.
#[derive(Debug)]
struct Rule {
    action: Action,
    /// `dropped:<name>` or `kept:<name>`.
    event: Option<String>,
    labels: Vec<(String, Value)>,
    metadata: Vec<(String, Value)>,
    /// Levels as [`Level::bit`]s; 0 for no level condition.
    levels: u8,
    /// `line_contains`.
    contains: Option<Contains>,
    /// All of `line_regex` as one alternation.
    regex: Option<Regex>,
}

/// What a label or metadata value must be.
#[derive(Debug)]
enum Value {
    Exact(String),
    /// Fully anchored.
    Regex(Regex),
}

impl Value {
    fn holds(&self, value: Option<&str>) -> bool {
        let value = value.unwrap_or_default();
        match self {
            Self::Exact(expected) => value == expected,
            Self::Regex(regex) => regex.is_match(value),
        }
    }
}

impl Rule {
    /// Whether the label conditions hold for a stream's labels (read through one of its entries).
    fn labels_hold(&self, entry: &Entry<'_>) -> bool {
        self.labels.iter().all(|(name, value)| value.holds(entry.label(name)))
    }

    /// Whether the entry's own conditions hold (the label conditions already did).
    fn entry_holds(&self, entry: &Entry<'_>, stream_level: Option<Level>) -> bool {
        if self.levels != 0 && self.levels & entry_level(entry, stream_level).bit() == 0 {
            return false;
        }
        if !self.metadata.iter().all(|(name, value)| value.holds(entry.metadata_value(name))) {
            return false;
        }
        let line = entry.line();
        if self.contains.as_ref().is_some_and(|c| !c.is_match(line.as_bytes())) {
            return false;
        }
        self.regex.as_ref().is_none_or(|r| r.is_match(line))
    }
}

/// The entry's level: the stream's `level` label, else its structured metadata `level`, else
/// `detected_level`.
fn entry_level(entry: &Entry<'_>, stream_level: Option<Level>) -> Level {
    if let Some(level) = stream_level {
        return level;
    }
    entry
        .metadata_value("level")
        .or_else(|| entry.metadata_value("detected_level"))
        .map_or(Level::Unknown, Level::parse)
}

/// The filter plugin.
#[derive(Debug)]
pub struct Filter {
    rules: Vec<Rule>,
    default: Action,
    /// Per rule: whether its label conditions hold for the current stream.
    applies: Vec<bool>,
    /// Per rule: entries it decided in this batch.
    hits: Vec<u64>,
}

impl Plugin for Filter {
    type Config = Config;

    fn init(config: Config) -> Result<Self, Error> {
        if config.rules.is_empty() {
            bail!("no `rules`: the filter would {} every entry", action_name(config.default));
        }
        let rules = config
            .rules
            .into_iter()
            .enumerate()
            .map(|(i, r)| compile(i, r))
            .collect::<Result<Vec<_>, _>>()?;
        let n = rules.len();
        Ok(Self { rules, default: config.default, applies: vec![false; n], hits: vec![0; n] })
    }

    /// One entry on its own, every condition checked; `process_batch` is what sluice calls.
    fn process(&mut self, entry: &mut Entry<'_>) -> Result<Verdict, Error> {
        let stream_level = entry.label("level").map(Level::parse);
        let decided =
            self.rules.iter().position(|r| r.labels_hold(entry) && r.entry_holds(entry, stream_level));
        Ok(verdict(decided.map_or(self.default, |k| self.rules[k].action)))
    }

    fn process_batch(&mut self, batch: &mut Batch<'_>) -> Result<(), Error> {
        let Self { rules, default, applies, hits } = self;
        hits.iter_mut().for_each(|h| *h = 0);
        let mut by_default = 0u64;
        let mut dropped = 0u64;
        let mut current = usize::MAX;
        let mut any_applies = false;
        let mut stream_level = None;
        batch.for_each_entry(|entry| {
            if entry.stream_index() != current {
                current = entry.stream_index();
                for (rule, applies) in rules.iter().zip(applies.iter_mut()) {
                    *applies = rule.labels_hold(entry);
                }
                any_applies = applies.contains(&true);
                stream_level = entry.label("level").map(Level::parse);
            }
            let decided = if any_applies {
                rules.iter().zip(applies.iter()).position(|(r, a)| *a && r.entry_holds(entry, stream_level))
            } else {
                None
            };
            let action = match decided {
                Some(k) => {
                    hits[k] += 1;
                    rules[k].action
                }
                None => {
                    by_default += 1;
                    *default
                }
            };
            dropped += u64::from(action == Action::Drop);
            Ok(verdict(action))
        })?;
        count("dropped", dropped);
        for (rule, hits) in rules.iter().zip(hits.iter()) {
            if let Some(event) = &rule.event {
                count(event, *hits);
            }
        }
        if *default == Action::Drop {
            count("dropped:default", by_default);
        }
        Ok(())
    }
}

fn verdict(action: Action) -> Verdict {
    match action {
        Action::Keep => Verdict::Keep,
        Action::Drop => Verdict::Drop,
    }
}

fn action_name(action: Action) -> &'static str {
    match action {
        Action::Keep => "keep",
        Action::Drop => "drop",
    }
}

/// The condition keys, for messages.
const CONDITIONS: &str = "line_contains, line_regex, labels, labels_regex, metadata, metadata_regex, level";

/// Compiles rule `i`; errors name the key, e.g. "`rules[2].when.line_regex`: …".
fn compile(i: usize, c: RuleConfig) -> Result<Rule, Error> {
    let at = |key: &str| format!("`rules[{i}].{key}`");
    let event = match &c.name {
        None => None,
        Some(name) => {
            let event = format!("{}:{name}", if c.action == Action::Drop { "dropped" } else { "kept" });
            if name.is_empty() || !is_valid_event_name(&event) {
                bail!(
                    "{}: `{}` cannot name a counter: use 1 to 56 characters of a-z, A-Z, 0-9 and _:.-",
                    at("name"),
                    name.escape_default()
                );
            }
            Some(event)
        }
    };
    let w = c.when;
    let empty = w.line_contains.is_none()
        && w.line_regex.is_none()
        && w.labels.is_none()
        && w.labels_regex.is_none()
        && w.metadata.is_none()
        && w.metadata_regex.is_none()
        && w.level.is_none();
    if empty {
        bail!(
            "{}: no condition: set one or more of {CONDITIONS} (`default` covers every other entry)",
            at("when")
        );
    }
    let item = |key: &str, s: &Strings, j: usize| {
        if s.list { at(&format!("when.{key}[{j}]")) } else { at(&format!("when.{key}")) }
    };
    let nonempty = |key: &str, s: &Strings| -> Result<(), Error> {
        if s.values.is_empty() {
            bail!("{}: the list is empty", at(&format!("when.{key}")));
        }
        Ok(())
    };

    let mut contains = None;
    if let Some(needles) = &w.line_contains {
        nonempty("line_contains", needles)?;
        for (j, needle) in needles.values.iter().enumerate() {
            if needle.is_empty() {
                bail!("{}: an empty string is in every line", item("line_contains", needles, j));
            }
        }
        contains = Some(Contains::new(&needles.values));
    }
    let regex = match &w.line_regex {
        None => None,
        Some(patterns) => {
            nonempty("line_regex", patterns)?;
            for (j, pattern) in patterns.values.iter().enumerate() {
                Regex::new(pattern).map_err(|e| {
                    Error::msg(format!(
                        "{}: `{pattern}` is not a valid regex: {}",
                        item("line_regex", patterns, j),
                        reason(&e)
                    ))
                })?;
            }
            let joined = patterns.values.iter().map(|p| format!("(?:{p})")).collect::<Vec<_>>().join("|");
            Some(
                Regex::new(&joined)
                    .map_err(|e| Error::msg(format!("{}: {}", at("when.line_regex"), reason(&e))))?,
            )
        }
    };
    let mut labels = Vec::new();
    pairs(
        &mut labels,
        w.labels.as_ref(),
        w.labels_regex.as_ref(),
        &|key| at(&format!("when.{key}")),
        "labels",
    )?;
    let mut metadata = Vec::new();
    pairs(
        &mut metadata,
        w.metadata.as_ref(),
        w.metadata_regex.as_ref(),
        &|key| at(&format!("when.{key}")),
        "metadata",
    )?;

    let mut levels = 0;
    if let Some(names) = &w.level {
        nonempty("level", names)?;
        for (j, name) in names.values.iter().enumerate() {
            let level = match Level::parse(name) {
                Level::Unknown if name.eq_ignore_ascii_case("unknown") => Level::Unknown,
                Level::Unknown => bail!(
                    "{}: `{}` is not a level: expected debug, info, warn, error, fatal or unknown \
                     (or a common spelling of one, such as WARNING, ERR, critical)",
                    item("level", names, j),
                    name.escape_default()
                ),
                level => level,
            };
            levels |= level.bit();
        }
    }
    Ok(Rule { action: c.action, event, labels, metadata, levels, contains, regex })
}

/// Adds the exact and regex conditions of `labels` / `labels_regex` (or the metadata ones).
fn pairs(
    out: &mut Vec<(String, Value)>,
    exact: Option<&BTreeMap<String, String>>,
    regex: Option<&BTreeMap<String, String>>,
    at: &dyn Fn(&str) -> String,
    key: &str,
) -> Result<(), Error> {
    let regex_key = format!("{key}_regex");
    for (k, map) in [(key, exact), (regex_key.as_str(), regex)] {
        let Some(map) = map else { continue };
        if map.is_empty() {
            bail!("{}: the map is empty", at(k));
        }
        for (name, value) in map {
            if !is_valid_label_name(name) {
                bail!(
                    "{}: `{}` is not a valid {} name ([a-zA-Z_][a-zA-Z0-9_]*)",
                    at(k),
                    name.escape_default(),
                    if key == "labels" { "label" } else { "metadata" }
                );
            }
            let value = if k == key {
                Value::Exact(value.clone())
            } else {
                Value::Regex(Regex::new(&format!("^(?s:{value})$")).map_err(|e| {
                    Error::msg(format!(
                        "{}: `{value}` is not a valid regex: {}",
                        at(&format!("{k}.{name}")),
                        reason(&e)
                    ))
                })?)
            };
            out.push((name.clone(), value));
        }
    }
    Ok(())
}

/// The last line of a regex error without its `error: ` prefix (the parser draws the pattern
/// with a caret on the lines before).
fn reason(e: &regex::Error) -> String {
    let text = e.to_string();
    let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or(&text);
    last.trim().trim_start_matches("error: ").to_string()
}

sluice_sdk::export!(Filter);
