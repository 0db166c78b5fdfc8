//! The output keys every parse plugin's configuration carries, as serde types.
//!
//! A plugin's config struct holds these keys itself (next to its own, e.g. `regex:`), because
//! `#[serde(flatten)]` and `deny_unknown_fields` don't go together; it hands them over as an
//! [`OutputsConfig`].

use std::fmt;

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// `max_label_values` when not set.
pub const DEFAULT_MAX_LABEL_VALUES: usize = 500;
/// The largest `max_label_values` accepted: the guard keeps every value it admits in memory.
pub const MAX_MAX_LABEL_VALUES: usize = 100_000;

/// The output keys of a parse plugin's configuration, as its config struct read them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutputsConfig {
    /// `labels`: fields promoted to labels.
    pub labels: Option<OutputList>,
    /// `metadata`: fields copied to structured metadata.
    pub metadata: Option<OutputList>,
    /// `line`: the field whose value replaces the line.
    pub line: Option<String>,
    /// `max_label_values`: distinct values admitted per promoted label and instance.
    pub max_label_values: Option<usize>,
    /// `overwrite`: whether a parsed value replaces a label or metadata the entry already has.
    pub overwrite: Option<bool>,
}

/// `labels:` or `metadata:`: a list of field names (each output named after its field), or a
/// map of output name to field path or `{ field, transform }`.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputList {
    /// `[level, http.status]`.
    Fields(Vec<String>),
    /// `{ status: http.status, level: { transform: level } }`, in the order written.
    Named(Vec<(String, OutputSpec)>),
}

/// One output of the map form.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// The field path; the output's name when not set.
    #[serde(default)]
    pub field: Option<String>,
    /// What to do to the value first.
    #[serde(default)]
    pub transform: Option<Transform>,
}

/// A per-output transform of the parsed value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transform {
    /// Normalise a level spelling to debug, info, warn, error or fatal ([`crate::normalize_level`]).
    Level,
    /// Lowercase the value.
    Lowercase,
}

impl<'de> Deserialize<'de> for OutputList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListVisitor;

        impl<'de> Visitor<'de> for ListVisitor {
            type Value = OutputList;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of field names or a map of output name to field path")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OutputList, A::Error> {
                let mut fields = Vec::new();
                while let Some(field) = seq.next_element::<String>()? {
                    fields.push(field);
                }
                Ok(OutputList::Fields(fields))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OutputList, A::Error> {
                let mut named: Vec<(String, OutputSpec)> = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    let AnySpec(spec) = map.next_value::<AnySpec>()?;
                    if named.iter().any(|(n, _)| *n == name) {
                        return Err(de::Error::custom(format_args!("`{name}` is given twice")));
                    }
                    named.push((name, spec));
                }
                Ok(OutputList::Named(named))
            }
        }

        deserializer.deserialize_any(ListVisitor)
    }
}

/// The map form's value: a field path, or `{ field, transform }` (serde's derive of
/// [`OutputSpec`] handles only the latter).
struct SpecVisitor;

impl<'de> Visitor<'de> for SpecVisitor {
    type Value = OutputSpec;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field path or a map with `field` and `transform`")
    }

    fn visit_str<E: de::Error>(self, path: &str) -> Result<OutputSpec, E> {
        Ok(OutputSpec { field: Some(path.to_string()), transform: None })
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<OutputSpec, A::Error> {
        OutputSpec::deserialize(MapAccessDeserializer::new(map))
    }
}

/// A map-form value: a path string or a full [`OutputSpec`].
struct AnySpec(OutputSpec);

impl<'de> Deserialize<'de> for AnySpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SpecVisitor).map(AnySpec)
    }
}
