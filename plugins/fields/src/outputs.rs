//! The outputs of a parse plugin, checked once at `init` and applied to every parsed entry.

use std::collections::HashSet;

use sluice_sdk::{Entry, Error, is_valid_label_name};

use crate::config::{DEFAULT_MAX_LABEL_VALUES, MAX_MAX_LABEL_VALUES, OutputList, OutputsConfig, Transform};
use crate::level::{lowercase, normalize_level};
use crate::values::Values;

/// A field the outputs read, and the config key that first named it (for error messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The field path as written, e.g. `http.status`.
    pub path: String,
    /// Where it was named: `labels.status`, `metadata`, `line`.
    pub key: String,
}

/// One label or metadata output.
#[derive(Debug)]
struct Output {
    name: String,
    /// Index into [`Outputs::fields`].
    field: usize,
    transform: Option<Transform>,
}

/// The outputs of one plugin instance: where each wanted field goes, and the cardinality guard.
#[derive(Debug)]
pub struct Outputs {
    fields: Vec<Field>,
    labels: Vec<Output>,
    /// One per label, in the same order.
    guards: Vec<Guard>,
    metadata: Vec<Output>,
    line: Option<usize>,
    overwrite: bool,
    /// The `lowercase` transform's buffer.
    scratch: String,
    /// Label values that went to metadata instead, not yet counted.
    overflowed: u64,
}

impl Outputs {
    /// Checks the output keys; errors name the key and the value.
    pub fn new(config: OutputsConfig) -> Result<Self, Error> {
        let max_label_values = config.max_label_values.unwrap_or(DEFAULT_MAX_LABEL_VALUES);
        if !(1..=MAX_MAX_LABEL_VALUES).contains(&max_label_values) {
            return Err(Error::msg(format!(
                "`max_label_values`: must be between 1 and {MAX_MAX_LABEL_VALUES}, got {max_label_values}"
            )));
        }
        let mut fields = Vec::new();
        let labels = outputs("labels", "label", config.labels, &mut fields)?;
        let metadata = outputs("metadata", "metadata", config.metadata, &mut fields)?;
        if let Some(label) = labels.iter().find(|l| metadata.iter().any(|m| m.name == l.name)) {
            return Err(Error::msg(format!(
                "`{}` is both a label and metadata: a label whose value overflows `max_label_values` \
                 goes to metadata under its own name, so a name can be only one of them",
                label.name
            )));
        }
        let line = match config.line {
            None => None,
            Some(path) if path.is_empty() => {
                return Err(Error::msg("`line`: the field path must not be empty"));
            }
            Some(path) => Some(field_index(&mut fields, path, "line")),
        };
        if labels.is_empty() && metadata.is_empty() && line.is_none() {
            return Err(Error::msg("nothing to do: set at least one of `labels`, `metadata` and `line`"));
        }
        Ok(Self {
            guards: labels.iter().map(|_| Guard::new(max_label_values)).collect(),
            fields,
            labels,
            metadata,
            line,
            overwrite: config.overwrite.unwrap_or(true),
            scratch: String::new(),
            overflowed: 0,
        })
    }

    /// The fields the outputs read; a parser finds them by index into this.
    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    /// Checks every field path with `check` (the parser's own rules: a group of its regex, a
    /// valid logfmt key…); its error message is given with the config key that named the field.
    pub fn check_fields(&self, mut check: impl FnMut(&str) -> Result<(), String>) -> Result<(), Error> {
        for field in &self.fields {
            check(&field.path).map_err(|e| Error::msg(format!("`{}`: {e}", field.key)))?;
        }
        Ok(())
    }

    /// Label values that went to metadata since the last call.
    pub fn take_overflowed(&mut self) -> u64 {
        std::mem::take(&mut self.overflowed)
    }

    /// Applies the values found in `source` (the text the parser was given) to `entry`: labels,
    /// then metadata, then the line. Only values that differ from what the entry has are set.
    pub fn apply(&mut self, entry: &mut Entry<'_>, values: &Values, source: &str) -> Result<(), Error> {
        let Self { labels, guards, metadata, line, overwrite, scratch, overflowed, .. } = self;
        for (out, guard) in labels.iter().zip(guards.iter_mut()) {
            let Some(value) = output_value(out, values, source, scratch) else { continue };
            match entry.label(&out.name) {
                Some(current) if current == value || !*overwrite => continue,
                _ => {}
            }
            if guard.admit(value) {
                entry.set_label(&out.name, value)?;
            } else {
                *overflowed += 1;
                set_metadata(entry, &out.name, value, *overwrite)?;
            }
        }
        for out in metadata.iter() {
            if let Some(value) = output_value(out, values, source, scratch) {
                set_metadata(entry, &out.name, value, *overwrite)?;
            }
        }
        if let Some(field) = *line
            && let Some(value) = values.get(field, source).filter(|v| !v.is_empty())
            && entry.line() != value
        {
            entry.set_line(value);
        }
        Ok(())
    }
}

/// An output's value after its transform; `None` when the field is missing or empty.
fn output_value<'v>(
    out: &Output,
    values: &'v Values,
    source: &'v str,
    scratch: &'v mut String,
) -> Option<&'v str> {
    let value = values.get(out.field, source).filter(|v| !v.is_empty())?;
    Some(match out.transform {
        None => value,
        Some(Transform::Level) => normalize_level(value).unwrap_or(value),
        Some(Transform::Lowercase) => lowercase(value, scratch),
    })
}

fn set_metadata(entry: &mut Entry<'_>, name: &str, value: &str, overwrite: bool) -> Result<(), Error> {
    match entry.metadata_value(name) {
        Some(current) if current == value || !overwrite => Ok(()),
        _ => entry.set_metadata(name, value),
    }
}

/// The index of the field `path` in `fields`, adding it if new.
fn field_index(fields: &mut Vec<Field>, path: String, key: &str) -> usize {
    match fields.iter().position(|f| f.path == path) {
        Some(i) => i,
        None => {
            fields.push(Field { path, key: key.to_string() });
            fields.len() - 1
        }
    }
}

/// The outputs of `labels:` or `metadata:` (`key`), each name checked; `what` is `label` or
/// `metadata` for the messages.
fn outputs(
    key: &str,
    what: &str,
    list: Option<OutputList>,
    fields: &mut Vec<Field>,
) -> Result<Vec<Output>, Error> {
    let mut out: Vec<Output> = Vec::new();
    let named: Vec<(String, String, Option<Transform>, String)> = match list {
        None => Vec::new(),
        Some(OutputList::Fields(list)) => {
            let mut named = Vec::with_capacity(list.len());
            for path in list {
                if path.is_empty() {
                    return Err(Error::msg(format!("`{key}`: a field path must not be empty")));
                }
                named.push((sanitize(&path), path, None, key.to_string()));
            }
            named
        }
        Some(OutputList::Named(map)) => {
            let mut named = Vec::with_capacity(map.len());
            for (name, spec) in map {
                let at = format!("{key}.{name}");
                if !is_valid_label_name(&name) {
                    return Err(Error::msg(format!(
                        "`{key}`: `{}` is not a valid {what} name: names must match [a-zA-Z_][a-zA-Z0-9_]*",
                        name.escape_default()
                    )));
                }
                let path = spec.field.unwrap_or_else(|| name.clone());
                if path.is_empty() {
                    return Err(Error::msg(format!("`{at}`: the field path must not be empty")));
                }
                named.push((name, path, spec.transform, at));
            }
            named
        }
    };
    for (name, path, transform, at) in named {
        if name.starts_with("__") {
            return Err(Error::msg(format!(
                "`{at}`: `{name}` starts with `__`, which is reserved for sluice's own labels"
            )));
        }
        if let Some(other) = out.iter().find(|o| o.name == name) {
            return Err(Error::msg(format!(
                "`{key}`: two outputs named `{name}` (from the fields `{}` and `{path}`)",
                fields[other.field].path
            )));
        }
        let field = field_index(fields, path, &at);
        out.push(Output { name, field, transform });
    }
    Ok(out)
}

/// The output name of a field named in the list form: every character outside `[a-zA-Z0-9_]`
/// becomes `_` (`http.status` → `http_status`, as LogQL's `json` parser names nested keys), and
/// a name starting with a digit gets a leading `_`.
pub fn sanitize(path: &str) -> String {
    let mut name = String::with_capacity(path.len() + 1);
    if path.starts_with(|c: char| c.is_ascii_digit()) {
        name.push('_');
    }
    name.extend(path.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }));
    name
}

/// The cardinality guard of one promoted label: the distinct values admitted so far, at most
/// `max`. A short list while small (most labels have a handful of values, and comparing a few
/// strings is cheaper than hashing one), a hash set beyond.
#[derive(Debug)]
struct Guard {
    max: usize,
    few: Vec<Box<str>>,
    many: HashSet<Box<str>>,
}

/// Values kept in the list before the guard switches to the set.
const FEW: usize = 16;

impl Guard {
    fn new(max: usize) -> Self {
        Self { max, few: Vec::new(), many: HashSet::new() }
    }

    /// Whether `value` may be a label value: it was admitted before, or there is room for it.
    fn admit(&mut self, value: &str) -> bool {
        if self.many.is_empty() {
            if self.few.iter().any(|v| **v == *value) {
                return true;
            }
            if self.few.len() >= self.max {
                return false;
            }
            if self.few.len() < FEW {
                self.few.push(value.into());
                return true;
            }
            self.many.extend(self.few.drain(..));
        }
        if self.many.contains(value) {
            return true;
        }
        if self.many.len() >= self.max {
            return false;
        }
        self.many.insert(value.into());
        true
    }
}
