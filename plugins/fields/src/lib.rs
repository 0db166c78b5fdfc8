//! What the four parse plugins (`parse-json`, `parse-logfmt`, `parse-regex`, `parse-pattern`)
//! share: the output configuration and its application, the label cardinality guard, value
//! decoding and level normalisation. A plain library, not a plugin.
//!
//! A parse plugin is an [`Extract`] (its line format: finds the wanted fields of a line) in a
//! [`Parser`] with the [`Outputs`] built from the keys below, which every parse plugin's config
//! has (next to its own, e.g. `regex:`):
//!
//! ```yaml
//! labels:                      # fields promoted to labels
//!   level: { field: level, transform: level }   # out name: path, or { field, transform }
//!   status: http.status
//! metadata: [trace_id, request_id]             # or a list: each named after its field
//! line: message                # rewrite the line to this field's value
//! max_label_values: 500        # distinct values per promoted label and instance
//! overwrite: true              # a parsed value replaces a label/metadata the entry has
//! ```
//!
//! The rules, which the plugins' READMEs repeat:
//!
//! - **Names.** In the map form the key is the output name and must be a valid label name
//!   (`[a-zA-Z_][a-zA-Z0-9_]*`), else `init` fails naming it. In the list form the output is
//!   named after the field with every character outside `[a-zA-Z0-9_]` replaced by `_` and a
//!   leading `_` before a digit ([`sanitize`]: `http.status` → `http_status`, as LogQL's `json`
//!   parser names nested keys). Names starting with `__` are refused (sluice's own), as are two
//!   outputs of the same name, and a name that is both a label and metadata (a label's overflow
//!   goes to metadata under its name). `field` defaults to the output name.
//! - **Transforms.** `level` ([`normalize_level`]) maps the usual spellings, case-insensitively,
//!   to `debug`, `info`, `warn`, `error`, `fatal`; a value it doesn't know is kept as it is.
//!   `lowercase` lowercases.
//! - **Values.** A missing field, a field without a value (JSON `null`, a bare logfmt key) and
//!   an empty value give no output. If a field occurs twice in a line, the first wins.
//! - **Overwrite.** With `overwrite: true` (the default, what Promtail's and Alloy's `labels`
//!   stages do) a parsed value replaces the label or metadata the entry already has; with
//!   `false` an existing one is kept and the parsed value dropped.
//! - **Cardinality guard.** Each promoted label admits at most `max_label_values` (default 500,
//!   at most 100,000) distinct values per plugin instance (sluice runs one per worker thread).
//!   A value beyond that goes to structured metadata under the label's name instead, and is
//!   counted as the event `label_overflow`. Values already admitted stay labels.
//! - **Line.** `line: path` replaces the line with the field's value (a string decoded, other
//!   JSON values as written); the labels and metadata come from the line as it arrived.
//! - **Only real changes.** A value equal to what the entry has causes no setter call, so an
//!   entry whose outputs are all already right is passed on unchanged, at no cost.
//! - **Unparsed.** A line that isn't of the plugin's format passes untouched and is counted as
//!   the event `unparsed`.

mod config;
mod level;
mod outputs;
mod parser;
mod values;

#[cfg(test)]
mod tests;

pub use config::{
    DEFAULT_MAX_LABEL_VALUES, MAX_MAX_LABEL_VALUES, OutputList, OutputSpec, OutputsConfig, Transform,
};
pub use level::{Level, level_of, normalize_level};
pub use outputs::{Field, Outputs, sanitize};
pub use parser::{Extract, LABEL_OVERFLOW, Parser, UNPARSED};
pub use values::{Values, unescape_into};
