//! Relabel rules: their configuration, checked and compiled at init, and how one rule changes
//! the working state of an entry.

use std::collections::BTreeMap;

use regex::Regex;
use serde::Deserialize;
use sluice_sdk::Entry;
use sluice_sdk::is_valid_label_name;

use crate::TENANT_LABEL;
use crate::matcher::{DEFAULT_REGEX, Matcher, Template, anchored};
use crate::pairs::PairSet;

/// The prefix that makes a `source_labels` or `target_label` name structured metadata.
pub(crate) const METADATA_PREFIX: &str = "metadata.";

/// One rule as configured.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// What the rule does; `replace` by default.
    #[serde(default)]
    pub action: Action,
    /// Labels (or `metadata.NAME`) whose values, joined with `separator`, the regex matches.
    pub source_labels: Option<Vec<String>>,
    /// Joins the source values; `;` by default.
    pub separator: Option<String>,
    /// Matched against the whole joined value (or label names for `labelkeep`, `labeldrop`,
    /// `labelmap`, `to_metadata`; metadata names for `to_label`); `(.*)` by default.
    pub regex: Option<String>,
    /// The label (or `metadata.NAME`) a `replace`, `lowercase` or `uppercase` writes, or that
    /// `keepequal` / `dropequal` compare with.
    pub target_label: Option<String>,
    /// The value written, with `$1`, `${1}`, `${name}` references; `$1` by default.
    pub replacement: Option<String>,
    /// `static`: the labels to set (`{name: value}`); `to_metadata`: the labels to move.
    pub labels: Option<serde_json::Value>,
    /// `to_label`: the structured metadata to move into labels.
    pub metadata: Option<Vec<String>>,
}

/// A rule's action.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    #[default]
    Replace,
    Keep,
    Drop,
    #[serde(rename = "keepequal")]
    KeepEqual,
    #[serde(rename = "dropequal")]
    DropEqual,
    #[serde(rename = "labelkeep")]
    LabelKeep,
    #[serde(rename = "labeldrop")]
    LabelDrop,
    #[serde(rename = "labelmap")]
    LabelMap,
    Lowercase,
    Uppercase,
    ToMetadata,
    ToLabel,
    #[serde(alias = "set")]
    Static,
    Tenant,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Self::Replace => "replace",
            Self::Keep => "keep",
            Self::Drop => "drop",
            Self::KeepEqual => "keepequal",
            Self::DropEqual => "dropequal",
            Self::LabelKeep => "labelkeep",
            Self::LabelDrop => "labeldrop",
            Self::LabelMap => "labelmap",
            Self::Lowercase => "lowercase",
            Self::Uppercase => "uppercase",
            Self::ToMetadata => "to_metadata",
            Self::ToLabel => "to_label",
            Self::Static => "static",
            Self::Tenant => "tenant",
        }
    }
}

/// Where a value is read from or written to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Field {
    Label(String),
    Metadata(String),
}

impl Field {
    /// `name` or `metadata.name`, if the name is valid.
    fn parse(s: &str) -> Option<Self> {
        match s.strip_prefix(METADATA_PREFIX) {
            Some(name) => is_valid_label_name(name).then(|| Self::Metadata(name.to_string())),
            None => is_valid_label_name(s).then(|| Self::Label(s.to_string())),
        }
    }
}

/// What a replace-like rule writes to.
#[derive(Debug)]
pub(crate) enum Target {
    Field(Field),
    /// A `target_label` with `$` references, expanded per match; skipped when the result is no
    /// valid name (as Prometheus does).
    Template(Template),
}

/// The values a rule joins.
#[derive(Debug)]
pub(crate) struct Sources {
    fields: Vec<Field>,
    separator: String,
}

/// A compiled rule.
#[derive(Debug)]
pub(crate) enum Rule {
    Replace {
        sources: Sources,
        matcher: Matcher,
        target: Target,
        replacement: Template,
    },
    Case {
        sources: Sources,
        target: Field,
        upper: bool,
    },
    /// `keep` (drop unless the value matches) or `drop` (drop if it matches).
    Filter {
        sources: Sources,
        matcher: Matcher,
        keep: bool,
    },
    /// `keepequal` / `dropequal`: the joined value against the target's.
    Equal {
        sources: Sources,
        target: Field,
        keep: bool,
    },
    /// `labelkeep` (keep: true) / `labeldrop`.
    LabelNames {
        regex: Regex,
        keep: bool,
    },
    LabelMap {
        matcher: Matcher,
        replacement: Template,
    },
    ToMetadata {
        names: Vec<String>,
        regex: Option<Regex>,
    },
    ToLabel {
        names: Vec<String>,
        regex: Option<Regex>,
    },
    Static {
        labels: Vec<(String, String)>,
    },
    Tenant {
        sources: Sources,
        matcher: Matcher,
        replacement: Template,
    },
}

/// The keys a rule can have, in the order they are checked.
const KEYS: [&str; 8] =
    ["source_labels", "separator", "regex", "target_label", "replacement", "labels", "metadata", "action"];

impl RuleConfig {
    fn is_set(&self, key: &str) -> bool {
        match key {
            "source_labels" => self.source_labels.is_some(),
            "separator" => self.separator.is_some(),
            "regex" => self.regex.is_some(),
            "target_label" => self.target_label.is_some(),
            "replacement" => self.replacement.is_some(),
            "labels" => self.labels.is_some(),
            "metadata" => self.metadata.is_some(),
            _ => false,
        }
    }
}

/// Compiles rule `i`; errors name the key, e.g. "`rules[2].regex`: …".
pub(crate) fn compile(i: usize, c: RuleConfig) -> Result<Rule, String> {
    let action = c.action;
    let at = |key: &str| format!("`rules[{i}].{key}`");
    // The keys each action reads; any other is a mistake.
    let (allowed, required): (&[&str], &[&str]) = match action {
        Action::Replace => {
            (&["source_labels", "separator", "regex", "target_label", "replacement"], &["target_label"])
        }
        Action::Lowercase | Action::Uppercase => {
            (&["source_labels", "separator", "target_label"], &["source_labels", "target_label"])
        }
        Action::Keep | Action::Drop => (&["source_labels", "separator", "regex"], &["source_labels"]),
        Action::KeepEqual | Action::DropEqual => {
            (&["source_labels", "separator", "target_label"], &["source_labels", "target_label"])
        }
        Action::LabelKeep | Action::LabelDrop => (&["regex"], &["regex"]),
        Action::LabelMap => (&["regex", "replacement"], &["regex"]),
        Action::ToMetadata => (&["regex", "labels"], &[]),
        Action::ToLabel => (&["regex", "metadata"], &[]),
        Action::Static => (&["labels"], &["labels"]),
        Action::Tenant => (&["source_labels", "separator", "regex", "replacement"], &[]),
    };
    for key in KEYS {
        if c.is_set(key) && !allowed.contains(&key) {
            return Err(format!("{}: not used by action `{}`", at(key), action.name()));
        }
    }
    for key in required {
        if !c.is_set(key) {
            return Err(format!("{}: required by action `{}`", at(key), action.name()));
        }
    }

    let sources = || -> Result<Sources, String> {
        let names = c.source_labels.as_deref().unwrap_or_default();
        let mut fields = Vec::with_capacity(names.len());
        for (j, name) in names.iter().enumerate() {
            fields
                .push(Field::parse(name).ok_or_else(|| {
                    format!("{}: {}", at(&format!("source_labels[{j}]")), not_a_name(name))
                })?);
        }
        Ok(Sources { fields, separator: c.separator.clone().unwrap_or_else(|| ";".to_string()) })
    };
    let matcher = || {
        let source = c.regex.as_deref().unwrap_or(DEFAULT_REGEX);
        Matcher::new(source).map_err(|e| format!("{}: `{source}` is not a valid regex: {e}", at("regex")))
    };
    let name_regex = || -> Result<Option<Regex>, String> {
        c.regex
            .as_deref()
            .map(|source| {
                anchored(source).map_err(|e| format!("{}: `{source}` is not a valid regex: {e}", at("regex")))
            })
            .transpose()
    };
    let target_field = || -> Result<Field, String> {
        let name = c.target_label.as_deref().unwrap_or_default();
        Field::parse(name).ok_or_else(|| format!("{}: {}", at("target_label"), not_a_name(name)))
    };
    let replacement = |matcher: &Matcher| Template::parse(c.replacement.as_deref().unwrap_or("$1"), matcher);

    Ok(match action {
        Action::Replace => {
            let matcher = matcher()?;
            let name = c.target_label.as_deref().unwrap_or_default();
            let target = if name.contains('$') {
                Target::Template(Template::parse(name, &matcher))
            } else {
                Target::Field(target_field()?)
            };
            let replacement = replacement(&matcher);
            Rule::Replace { sources: sources()?, matcher, target, replacement }
        }
        Action::Lowercase | Action::Uppercase => {
            Rule::Case { sources: sources()?, target: target_field()?, upper: action == Action::Uppercase }
        }
        Action::Keep | Action::Drop => {
            Rule::Filter { sources: sources()?, matcher: matcher()?, keep: action == Action::Keep }
        }
        Action::KeepEqual | Action::DropEqual => {
            Rule::Equal { sources: sources()?, target: target_field()?, keep: action == Action::KeepEqual }
        }
        Action::LabelKeep | Action::LabelDrop => {
            let regex = name_regex()?
                .ok_or_else(|| format!("{}: required by action `{}`", at("regex"), action.name()))?;
            Rule::LabelNames { regex, keep: action == Action::LabelKeep }
        }
        Action::LabelMap => {
            let matcher = matcher()?;
            let replacement = replacement(&matcher);
            if let Some(name) = replacement.as_literal()
                && !is_valid_label_name(name)
            {
                return Err(format!("{}: {}", at("replacement"), not_a_name(name)));
            }
            Rule::LabelMap { matcher, replacement }
        }
        Action::ToMetadata => {
            let names = match &c.labels {
                None => Vec::new(),
                Some(value) => name_list(value, |j| at(&format!("labels[{j}]")), &at("labels"))?,
            };
            let regex = name_regex()?;
            if names.is_empty() && regex.is_none() {
                return Err(format!("{}: action `to_metadata` needs `labels` or `regex`", at("labels")));
            }
            Rule::ToMetadata { names, regex }
        }
        Action::ToLabel => {
            let names = c.metadata.clone().unwrap_or_default();
            for (j, name) in names.iter().enumerate() {
                if !is_valid_label_name(name) {
                    return Err(format!("{}: {}", at(&format!("metadata[{j}]")), not_a_name(name)));
                }
            }
            let regex = name_regex()?;
            if names.is_empty() && regex.is_none() {
                return Err(format!("{}: action `to_label` needs `metadata` or `regex`", at("metadata")));
            }
            Rule::ToLabel { names, regex }
        }
        Action::Static => {
            let key = at("labels");
            let Some(serde_json::Value::Object(map)) = &c.labels else {
                return Err(format!("{key}: action `static` takes a map of label names to values"));
            };
            if map.is_empty() {
                return Err(format!("{key}: set at least one label"));
            }
            let mut labels = Vec::with_capacity(map.len());
            for (name, value) in map {
                if !is_valid_label_name(name) {
                    return Err(format!("{key}: {}", not_a_name(name)));
                }
                let serde_json::Value::String(value) = value else {
                    let key = at(&format!("labels.{name}"));
                    return Err(format!("{key}: the value must be a string, not `{value}`"));
                };
                labels.push((name.clone(), value.clone()));
            }
            Rule::Static { labels }
        }
        Action::Tenant => {
            if c.source_labels.is_none() && c.replacement.is_none() {
                return Err(format!(
                    "{}: action `tenant` needs `source_labels` or `replacement`",
                    at("replacement")
                ));
            }
            let matcher = matcher()?;
            let replacement = replacement(&matcher);
            if let Some(tenant) = replacement.as_literal()
                && !tenant.is_empty()
                && !is_valid_tenant(tenant)
            {
                return Err(format!(
                    "{}: `{}` is not a valid tenant id: {TENANT_RULES}",
                    at("replacement"),
                    tenant.escape_default()
                ));
            }
            Rule::Tenant { sources: sources()?, matcher, replacement }
        }
    })
}

/// Loki's tenant id rules, for messages.
pub(crate) const TENANT_RULES: &str =
    "use 1 to 150 characters of a-z, A-Z, 0-9 and !-_.*'(), not `.` or `..`";

/// Loki's tenant ids: 1 to 150 bytes of `[a-zA-Z0-9!\-_.*'()]`, not `.` or `..`.
pub(crate) fn is_valid_tenant(id: &str) -> bool {
    let ok = |b: u8| b.is_ascii_alphanumeric() || b"!-_.*'()".contains(&b);
    !id.is_empty() && id.len() <= 150 && id != "." && id != ".." && id.bytes().all(ok)
}

fn not_a_name(name: &str) -> String {
    format!(
        "`{}` is not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*, or `metadata.<name>` for structured metadata)",
        name.escape_default()
    )
}

/// A list of label names (`to_metadata`'s `labels`); `item_at(j)` names item `j` in messages.
fn name_list(
    value: &serde_json::Value,
    item_at: impl Fn(usize) -> String,
    at: &str,
) -> Result<Vec<String>, String> {
    let serde_json::Value::Array(items) = value else {
        return Err(format!("{at}: action `to_metadata` takes a list of label names"));
    };
    let mut names = Vec::with_capacity(items.len());
    for (j, item) in items.iter().enumerate() {
        match item {
            serde_json::Value::String(name) if is_valid_label_name(name) => names.push(name.clone()),
            serde_json::Value::String(name) => return Err(format!("{}: {}", item_at(j), not_a_name(name))),
            other => return Err(format!("{}: expected a label name, not `{other}`", item_at(j))),
        }
    }
    Ok(names)
}

impl Rule {
    /// Whether the rule reads an entry's structured metadata (and so must run per entry).
    pub(crate) fn reads_metadata(&self) -> bool {
        let any = |s: &Sources| s.fields.iter().any(|f| matches!(f, Field::Metadata(_)));
        match self {
            Self::Replace { sources, .. } | Self::Filter { sources, .. } | Self::Tenant { sources, .. } => {
                any(sources)
            }
            Self::Case { sources, .. } => any(sources),
            Self::Equal { sources, target, .. } => any(sources) || matches!(target, Field::Metadata(_)),
            Self::ToLabel { .. } => true,
            Self::LabelNames { .. }
            | Self::LabelMap { .. }
            | Self::ToMetadata { .. }
            | Self::Static { .. } => false,
        }
    }
}

/// An entry's labels and metadata changes while the rules run.
#[derive(Debug, Default)]
pub(crate) struct State {
    /// The labels, sorted; no empty values.
    pub(crate) labels: PairSet,
    /// Structured metadata written by the rules; an empty value removes the name.
    pub(crate) metadata: PairSet,
    /// A `keep` / `drop` rule dropped the entry.
    pub(crate) dropped: bool,
    /// A `tenant` rule made a value that is no valid tenant id (and left the tenant as it was).
    pub(crate) invalid_tenant: bool,
}

impl State {
    pub(crate) fn copy_from(&mut self, other: &State) {
        self.labels.copy_from(&other.labels);
        self.metadata.copy_from(&other.metadata);
        self.dropped = other.dropped;
        self.invalid_tenant = other.invalid_tenant;
    }
}

/// What the rules read besides the state.
#[derive(Clone, Copy)]
pub(crate) struct Context<'a, 'e> {
    /// The batch's tenant: the value of `__tenant_id__` while no rule has set it.
    pub(crate) tenant: &'a str,
    /// The entry, for its structured metadata; `None` while rules run once per stream (those
    /// rules read no metadata).
    pub(crate) entry: Option<&'a Entry<'e>>,
}

/// Buffers reused across rules and entries.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    value: String,
    out: String,
    name: String,
    pending: PairSet,
}

impl Context<'_, '_> {
    /// A field's current value; "" when absent.
    fn read<'s>(&'s self, state: &'s State, field: &Field) -> &'s str {
        match field {
            Field::Label(name) => match state.labels.get(name) {
                Some(v) => v,
                None if name == TENANT_LABEL => self.tenant,
                None => "",
            },
            Field::Metadata(name) => self.metadata(state, name),
        }
    }

    /// Structured metadata `name` as the rules left it so far; "" when absent.
    fn metadata<'s>(&'s self, state: &'s State, name: &str) -> &'s str {
        match state.metadata.get(name) {
            Some(v) => v,
            None => self.entry.and_then(|e| e.metadata_value(name)).unwrap_or_default(),
        }
    }

    fn join(&self, state: &State, sources: &Sources, out: &mut String) {
        out.clear();
        for (i, field) in sources.fields.iter().enumerate() {
            if i > 0 {
                out.push_str(&sources.separator);
            }
            out.push_str(self.read(state, field));
        }
    }
}

fn write(state: &mut State, field: &Field, value: &str) {
    match field {
        Field::Label(name) => state.labels.set(name, value),
        Field::Metadata(name) => state.metadata.put(name, value),
    }
}

impl Rule {
    /// Applies the rule to `state`. Returns false when the entry is dropped (no further rule
    /// runs).
    pub(crate) fn apply(&mut self, state: &mut State, cx: Context<'_, '_>, scratch: &mut Scratch) -> bool {
        let Scratch { value, out, name, pending } = scratch;
        match self {
            Self::Replace { sources, matcher, target, replacement } => {
                cx.join(state, sources, value);
                let Some(groups) = matcher.captures(value) else { return true };
                out.clear();
                replacement.expand(value, &groups, out);
                match target {
                    Target::Field(field) => write(state, field, out),
                    Target::Template(template) => {
                        name.clear();
                        template.expand(value, &groups, name);
                        if let Some(field) = Field::parse(name) {
                            write(state, &field, out);
                        }
                    }
                }
            }
            Self::Case { sources, target, upper } => {
                cx.join(state, sources, value);
                out.clear();
                if *upper {
                    out.extend(value.chars().flat_map(char::to_uppercase));
                } else {
                    out.extend(value.chars().flat_map(char::to_lowercase));
                }
                write(state, target, out);
            }
            Self::Filter { sources, matcher, keep } => {
                cx.join(state, sources, value);
                if matcher.is_match(value) != *keep {
                    state.dropped = true;
                    return false;
                }
            }
            Self::Equal { sources, target, keep } => {
                cx.join(state, sources, value);
                if (value.as_str() == cx.read(state, target)) != *keep {
                    state.dropped = true;
                    return false;
                }
            }
            Self::LabelNames { regex, keep } => {
                state.labels.retain(|p| p.name == TENANT_LABEL || regex.is_match(&p.name) == *keep);
            }
            Self::LabelMap { matcher, replacement } => {
                pending.clear();
                for (label, v) in state.labels.iter() {
                    if label == TENANT_LABEL {
                        continue;
                    }
                    let Some(groups) = matcher.captures(label) else { continue };
                    name.clear();
                    replacement.expand(label, &groups, name);
                    if is_valid_label_name(name) {
                        pending.put(name, v);
                    }
                }
                for (label, v) in pending.iter() {
                    state.labels.set(label, v);
                }
            }
            Self::ToMetadata { names, regex } => {
                let State { labels, metadata, .. } = state;
                labels.retain(|p| {
                    let moved = p.name != TENANT_LABEL
                        && (names.contains(&p.name) || regex.as_ref().is_some_and(|r| r.is_match(&p.name)));
                    if moved {
                        metadata.put(&p.name, &p.value);
                    }
                    !moved
                });
            }
            Self::ToLabel { names, regex } => {
                pending.clear();
                for n in names.iter() {
                    let v = cx.metadata(state, n);
                    if !v.is_empty() {
                        pending.put(n, v);
                    }
                }
                if let Some(regex) = regex {
                    for (n, v) in state.metadata.iter() {
                        if !v.is_empty() && regex.is_match(n) {
                            pending.put(n, v);
                        }
                    }
                    if let Some(entry) = cx.entry {
                        for (n, v) in entry.metadata() {
                            if state.metadata.get(n).is_none() && !v.is_empty() && regex.is_match(n) {
                                pending.put(n, v);
                            }
                        }
                    }
                }
                for (n, v) in pending.iter() {
                    state.labels.set(n, v);
                    state.metadata.put(n, "");
                }
            }
            Self::Static { labels } => {
                for (n, v) in labels.iter() {
                    state.labels.set(n, v);
                }
            }
            Self::Tenant { sources, matcher, replacement } => {
                cx.join(state, sources, value);
                let Some(groups) = matcher.captures(value) else { return true };
                out.clear();
                replacement.expand(value, &groups, out);
                if is_valid_tenant(out) {
                    state.labels.set(TENANT_LABEL, out);
                } else if !out.is_empty() {
                    state.invalid_tenant = true;
                }
            }
        }
        true
    }
}

/// `labels_to_keep`, checked: sorted names.
pub(crate) fn keep_list(names: Vec<String>) -> Result<Vec<String>, String> {
    let mut sorted = BTreeMap::new();
    for (i, name) in names.into_iter().enumerate() {
        if !is_valid_label_name(&name) {
            return Err(format!(
                "`labels_to_keep[{i}]`: `{}` is not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*)",
                name.escape_default()
            ));
        }
        sorted.insert(name, ());
    }
    Ok(sorted.into_keys().collect())
}
