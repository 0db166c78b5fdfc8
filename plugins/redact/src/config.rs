//! The stage's configuration, as written, and its validation into [`Settings`].

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, SeqAccess, Visitor};

use crate::detect::{KINDS, Kind};

/// The configuration; every key is optional. See the crate docs and README for the reference.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Detector name → action (`redact`, `mask`, `hash`, `truncate` for `ipv4`/`ipv6`, `off`).
    /// Detectors not named get `secrets`' action if they are secret detectors, `off` otherwise.
    #[serde(default)]
    pub detectors: BTreeMap<String, String>,
    /// The action of every secret detector not named in `detectors`; default `redact`.
    #[serde(default)]
    pub secrets: Option<String>,
    /// Custom rules, applied after the built-in secret detectors.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// Redact the log line; default true.
    #[serde(default = "yes")]
    pub line: bool,
    /// The labels whose values are redacted: `all` (default), `none` or a list of names.
    #[serde(default)]
    pub labels: Targets,
    /// The structured metadata whose values are redacted: `all` (default), `none` or a list.
    #[serde(default)]
    pub metadata: Targets,
    /// `secret` and `bearer`: shortest value that counts as a secret; default 8.
    #[serde(default = "default_min_length")]
    pub min_secret_length: usize,
    /// `secret` and `bearer`: least Shannon entropy, bits per character; default 3.0.
    #[serde(default = "default_min_entropy")]
    pub min_secret_entropy: f64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            detectors: BTreeMap::new(),
            secrets: None,
            rules: Vec::new(),
            line: true,
            labels: Targets::All,
            metadata: Targets::All,
            min_secret_length: default_min_length(),
            min_secret_entropy: default_min_entropy(),
        }
    }
}

fn yes() -> bool {
    true
}

fn default_min_length() -> usize {
    8
}

fn default_min_entropy() -> f64 {
    3.0
}

/// A custom rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// The kind: in `[REDACTED:<name>]`, hashes and the counter; `[a-z][a-z0-9_-]*`, at most 32.
    pub name: String,
    /// A regular expression (Rust `regex` syntax). With a group named `value`, only that group
    /// is replaced.
    pub regex: String,
    /// `redact` (default), `mask`, `hash`, or `replace` (with `replacement`).
    #[serde(default)]
    pub action: Option<String>,
    /// The replacement of `replace`, with `$1`/`$name` group references; implies `replace`.
    #[serde(default)]
    pub replacement: Option<String>,
}

/// Which labels or metadata entries are redacted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Targets {
    #[default]
    All,
    None,
    Names(Vec<String>),
}

impl Targets {
    /// Whether `name` is a target.
    pub fn includes(&self, name: &str) -> bool {
        match self {
            Targets::All => true,
            Targets::None => false,
            Targets::Names(names) => names.iter().any(|n| n == name),
        }
    }

    /// Whether no name is a target.
    pub fn is_none(&self) -> bool {
        match self {
            Targets::None => true,
            Targets::Names(names) => names.is_empty(),
            Targets::All => false,
        }
    }
}

impl<'de> Deserialize<'de> for Targets {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TargetsVisitor;

        impl<'de> Visitor<'de> for TargetsVisitor {
            type Value = Targets;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`all`, `none` or a list of names")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Targets, E> {
                match v {
                    "all" => Ok(Targets::All),
                    "none" => Ok(Targets::None),
                    _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
                }
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Targets, A::Error> {
                let mut names = Vec::new();
                while let Some(name) = seq.next_element::<String>()? {
                    names.push(name);
                }
                Ok(Targets::Names(names))
            }
        }

        deserializer.deserialize_any(TargetsVisitor)
    }
}

/// What happens to a finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `[REDACTED:<kind>]`.
    Redact,
    /// Kind-specific: cards keep their last 4 digits, e-mails their first character and domain,
    /// anything else `****` (plus its last 4 characters when it has 16 or more).
    Mask,
    /// `<kind>:<16 hex digits of the keyed hash>`.
    Hash,
    /// IPv4: the last octet becomes 0; IPv6: only the first 48 bits are kept.
    Truncate,
    /// Custom rules: the replacement template.
    Replace(String),
}

/// A validated custom rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub regex: regex::Regex,
    pub action: Action,
    /// The index of the group named `value`, if any.
    pub value_group: Option<usize>,
    /// Whether the replacement refers to groups (`$…`), so matches need their captures.
    pub expands: bool,
}

/// The configuration, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Per built-in detector (by [`Kind`] index): its action, `None` when off.
    pub actions: [Option<Action>; KINDS],
    pub rules: Vec<Rule>,
    pub line: bool,
    pub labels: Targets,
    pub metadata: Targets,
    pub min_secret_length: usize,
    pub min_secret_entropy: f64,
}

/// The detector names, for messages.
fn detector_names() -> String {
    Kind::ALL.iter().map(|k| k.name()).collect::<Vec<_>>().join(", ")
}

/// Parses an action word; `None` for `off`.
fn action(key: &str, word: &str, kind: Option<Kind>) -> Result<Option<Action>, String> {
    let ip = matches!(kind, Some(Kind::Ipv4 | Kind::Ipv6));
    Ok(Some(match word {
        "off" => return Ok(None),
        "redact" => Action::Redact,
        "mask" => Action::Mask,
        "hash" => Action::Hash,
        "truncate" if ip => Action::Truncate,
        "truncate" => return Err(format!("`{key}`: `truncate` applies only to ipv4 and ipv6")),
        _ => {
            let expected = if ip { "off, redact, mask, hash, truncate" } else { "off, redact, mask, hash" };
            return Err(format!("`{key}`: unknown action `{word}`, expected one of {expected}"));
        }
    }))
}

/// Characters a replacement must not contain, so JSON strings and logfmt values stay valid.
fn bad_replacement_char(c: char) -> bool {
    c == '"' || c == '\\' || c.is_whitespace() || c.is_control()
}

impl Config {
    /// Validates the configuration; the error names the key and the value.
    pub fn validate(self) -> Result<Settings, String> {
        let secrets = match &self.secrets {
            None => Some(Action::Redact),
            Some(word) => action("secrets", word, None)?,
        };
        let mut actions: [Option<Action>; KINDS] = Default::default();
        for kind in Kind::ALL {
            if kind.is_secret() {
                actions[kind as usize] = secrets.clone();
            }
        }
        for (name, word) in &self.detectors {
            let key = format!("detectors.{name}");
            let Some(kind) = Kind::from_name(name) else {
                return Err(format!("`{key}`: unknown detector, expected one of {}", detector_names()));
            };
            actions[kind as usize] = action(&key, word, Some(kind))?;
        }
        let mut rules = Vec::with_capacity(self.rules.len());
        for (i, rule) in self.rules.into_iter().enumerate() {
            rules.push(rule.validate(i, &rules)?);
        }
        for (key, targets) in [("labels", &self.labels), ("metadata", &self.metadata)] {
            if let Targets::Names(names) = targets {
                for (i, name) in names.iter().enumerate() {
                    if !sluice_sdk::is_valid_label_name(name) {
                        return Err(format!(
                            "`{key}[{i}]`: `{name}` is not a valid name ([a-zA-Z_][a-zA-Z0-9_]*)"
                        ));
                    }
                }
            }
        }
        if !(1..=512).contains(&self.min_secret_length) {
            return Err(format!("`min_secret_length`: {} is out of range 1..=512", self.min_secret_length));
        }
        if !(0.0..=8.0).contains(&self.min_secret_entropy) {
            return Err(format!(
                "`min_secret_entropy`: {} is out of range 0..=8 (bits per character)",
                self.min_secret_entropy
            ));
        }
        let nothing = actions.iter().all(Option::is_none) && rules.is_empty();
        let nowhere = !self.line && self.labels.is_none() && self.metadata.is_none();
        if nothing {
            return Err("every detector is off and there are no `rules`: nothing to redact".to_string());
        }
        if nowhere {
            return Err(
                "`line` is false and `labels` and `metadata` are none: nothing to look at".to_string()
            );
        }
        Ok(Settings {
            actions,
            rules,
            line: self.line,
            labels: self.labels,
            metadata: self.metadata,
            min_secret_length: self.min_secret_length,
            min_secret_entropy: self.min_secret_entropy,
        })
    }
}

impl RuleConfig {
    fn validate(self, i: usize, earlier: &[Rule]) -> Result<Rule, String> {
        let name = &self.name;
        let name_ok = name.len() <= 32
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-');
        if !name_ok {
            return Err(format!(
                "`rules[{i}].name`: `{name}` must match [a-z][a-z0-9_-]* (at most 32 characters)"
            ));
        }
        if Kind::from_name(name).is_some() {
            return Err(format!("`rules[{i}].name`: `{name}` is the name of a built-in detector"));
        }
        if earlier.iter().any(|r| r.name == *name) {
            return Err(format!("`rules[{i}].name`: `{name}` is used by an earlier rule"));
        }
        let regex = regex::RegexBuilder::new(&self.regex)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| format!("`rules[{i}].regex`: {}", one_line(&e.to_string())))?;
        if regex.is_match("") {
            return Err(format!("`rules[{i}].regex`: `{}` matches the empty string", self.regex));
        }
        let value_group = regex.capture_names().position(|n| n == Some("value"));
        let key = format!("rules[{i}].action");
        let action = match (self.action.as_deref(), self.replacement) {
            (None | Some("replace"), Some(replacement)) => {
                if let Some(c) = replacement.chars().find(|&c| bad_replacement_char(c)) {
                    return Err(format!(
                        "`rules[{i}].replacement`: {c:?} is not allowed (no quotes, backslashes or white space, so JSON and logfmt lines stay valid)"
                    ));
                }
                Action::Replace(replacement)
            }
            (Some("replace"), None) => return Err(format!("`{key}`: `replace` needs a `replacement`")),
            (Some(word), Some(_)) => {
                return Err(format!("`rules[{i}].replacement`: only with action `replace`, not `{word}`"));
            }
            (None, None) => Action::Redact,
            (Some(word), None) => match word {
                "redact" => Action::Redact,
                "mask" => Action::Mask,
                "hash" => Action::Hash,
                _ => {
                    return Err(format!(
                        "`{key}`: unknown action `{word}`, expected one of redact, mask, hash, replace"
                    ));
                }
            },
        };
        let expands = matches!(&action, Action::Replace(r) if r.contains('$'));
        Ok(Rule { name: self.name, regex, action, value_group, expands })
    }
}

/// The first line of a multi-line message (the regex crate's errors draw a caret diagram).
fn one_line(message: &str) -> String {
    let lines: Vec<&str> = message.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    // "regex parse error:", the pattern, the caret, "error: …": keep the pattern and the error.
    match lines.iter().find(|l| l.starts_with("error:")) {
        Some(error) => format!("invalid regex: {}", error.trim_start_matches("error:").trim()),
        None => format!("invalid regex: {}", lines.join(" ")),
    }
}
