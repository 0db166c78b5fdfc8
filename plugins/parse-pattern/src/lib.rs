//! `parse-pattern`: matches each line against a pattern like LogQL's `pattern` parser —
//! literals between `<name>` captures — and promotes the captures to labels or structured
//! metadata, or rewrites the line to one capture. Lines that don't match pass untouched and are
//! counted (`unparsed`).
//!
//! ```yaml
//! - plugin: parse-pattern
//!   config:
//!     pattern: '<ip> - <_> [<ts>] "<method> <path> <_>" <status> <size>'
//!     labels: [method, status]
//!     metadata: { client: ip }
//! ```
//!
//! The syntax: `<name>` captures, `<_>` skips, everything else is a literal. A `<` starts a
//! capture only when it is followed by letters, digits, `_`, `.` or `-` and then `>`; otherwise
//! it is a literal `<` (so `a < b` and `<=>` are literals). A capture's name must be a valid
//! label name (`[a-zA-Z_][a-zA-Z0-9_]*`) and appear once; there must be at least one named
//! capture, and a literal between any two captures (else where the first ends is undefined).
//!
//! The matching, left to right from the start of the line, with no backtracking:
//! - a literal at the start of the pattern must be at the start of the line;
//! - a capture takes everything up to the first occurrence of the literal after it (possibly
//!   nothing; an empty capture gives no output), and that literal must then be there;
//! - a capture at the end of the pattern takes the rest of the line; after a final literal, the
//!   rest of the line is ignored;
//! - a literal that isn't found means the line doesn't match: nothing is applied and it counts
//!   as `unparsed`.
//!
//! Captures may span newlines. The output keys (`labels`, `metadata`, `line`,
//! `max_label_values`, `overwrite`) are those of every parse plugin, with capture names as the
//! fields: see the `sluice-fields` crate and this plugin's README.

#[cfg(test)]
mod tests;

use serde::Deserialize;
use sluice_fields::{Extract, OutputList, Outputs, OutputsConfig, Parser, Values};
use sluice_sdk::prelude::*;

/// The configuration: the pattern and the output keys shared by the parse plugins.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The pattern: literals and `<name>` captures (`<_>` skips).
    #[serde(default)]
    pub pattern: Option<String>,
    /// Captures promoted to labels: a list of capture names, or a map of label name to capture
    /// name or `{ field, transform }`.
    #[serde(default)]
    pub labels: Option<OutputList>,
    /// Captures copied to structured metadata, in the same forms as `labels`.
    #[serde(default)]
    pub metadata: Option<OutputList>,
    /// The capture whose text replaces the line.
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

/// The parse-pattern plugin.
#[derive(Debug)]
pub struct ParsePattern {
    parser: Parser<Pattern>,
}

impl Plugin for ParsePattern {
    type Config = Config;

    fn init(config: Config) -> Result<Self, Error> {
        let Some(source) = config.pattern else { bail!("`pattern` is required") };
        let tokens = tokenize(&source).map_err(|e| Error::msg(format!("`pattern`: {e}")))?;
        let names: Vec<&str> = tokens
            .iter()
            .filter_map(|t| if let Token::Capture(Some(n)) = t { Some(n.as_str()) } else { None })
            .collect();
        let outputs = Outputs::new(OutputsConfig {
            labels: config.labels,
            metadata: config.metadata,
            line: config.line,
            max_label_values: config.max_label_values,
            overwrite: config.overwrite,
        })?;
        outputs.check_fields(|name| {
            if names.contains(&name) {
                Ok(())
            } else {
                Err(format!("`{name}` is not a capture of `pattern` (its captures: {})", names.join(", ")))
            }
        })?;
        // Captures no output reads are skipped like `<_>`.
        let steps = tokens
            .into_iter()
            .map(|t| match t {
                Token::Literal(text) => Step::Literal(Literal::new(text)),
                Token::Capture(name) => {
                    Step::Capture(name.and_then(|n| outputs.fields().iter().position(|f| f.path == n)))
                }
            })
            .collect();
        Ok(Self { parser: Parser::new(outputs, Pattern { steps }) })
    }

    fn process(&mut self, entry: &mut Entry<'_>) -> Result<Verdict, Error> {
        self.parser.process(entry)
    }

    fn process_batch(&mut self, batch: &mut Batch<'_>) -> Result<(), Error> {
        self.parser.process_batch(batch)
    }
}

sluice_sdk::export!(ParsePattern);

/// A piece of a pattern as written.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(String),
    /// `<name>`, or `<_>` (`None`).
    Capture(Option<String>),
}

/// Splits a pattern into literals and captures, and checks it.
fn tokenize(pattern: &str) -> Result<Vec<Token>, String> {
    let mut tokens: Vec<Token> = Vec::new();
    let mut literal = String::new();
    let mut rest = pattern;
    while let Some(lt) = rest.find('<') {
        literal.push_str(&rest[..lt]);
        let after = &rest[lt + 1..];
        let name_len = after
            .bytes()
            .take_while(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
            .count();
        if name_len == 0 || after.as_bytes().get(name_len) != Some(&b'>') {
            literal.push('<');
            rest = after;
            continue;
        }
        let name = &after[..name_len];
        rest = &after[name_len + 1..];
        if !literal.is_empty() {
            tokens.push(Token::Literal(std::mem::take(&mut literal)));
        } else if matches!(tokens.last(), Some(Token::Capture(_))) {
            return Err(format!(
                "`{pattern}` has two captures with nothing between them (before `<{name}>`): where the \
                 first ends would be undefined, so put a literal between them"
            ));
        }
        let capture = match name {
            "_" => None,
            name if !sluice_sdk::is_valid_label_name(name) => {
                return Err(format!(
                    "`<{name}>` is not a valid capture: names must match [a-zA-Z_][a-zA-Z0-9_]*"
                ));
            }
            name if tokens.contains(&Token::Capture(Some(name.to_string()))) => {
                return Err(format!("`<{name}>` appears twice"));
            }
            name => Some(name.to_string()),
        };
        tokens.push(Token::Capture(capture));
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        tokens.push(Token::Literal(literal));
    }
    if !tokens.iter().any(|t| matches!(t, Token::Capture(Some(_)))) {
        return Err(format!(
            "`{pattern}` has no named capture such as `<name>`, so nothing to take from a line"
        ));
    }
    Ok(tokens)
}

/// A step of the matcher.
#[derive(Debug)]
enum Step {
    Literal(Literal),
    /// A capture, with the field it fills (`None`: skipped).
    Capture(Option<usize>),
}

/// A literal, with the byte to look for first when searching it.
#[derive(Debug)]
struct Literal {
    text: Box<[u8]>,
    /// The index in `text` of its rarest byte (by a rough rank for log text): searching for
    /// `[` finds ` [` with far fewer false starts than searching for the space.
    anchor: usize,
}

impl Literal {
    fn new(text: String) -> Self {
        let rank = |b: u8| match b {
            b' ' => 0,
            b'a'..=b'z' => 1,
            b'0'..=b'9' => 2,
            b'A'..=b'Z' => 3,
            b'-' | b'.' | b':' | b'/' | b',' | b'_' => 4,
            _ => 5,
        };
        let text = text.into_bytes().into_boxed_slice();
        // The first of the rarest, so that a rare byte early in the literal is preferred.
        let anchor = (0..text.len()).rev().max_by_key(|&i| rank(text[i])).unwrap_or(0);
        Self { text, anchor }
    }

    /// Where the literal first occurs in `haystack`.
    fn find(&self, haystack: &[u8]) -> Option<usize> {
        let byte = *self.text.get(self.anchor)?;
        let mut from = self.anchor;
        while let Some(offset) = haystack.get(from..).and_then(|rest| find_byte(byte, rest)) {
            let start = from + offset - self.anchor;
            if haystack.get(start..start + self.text.len()) == Some(&self.text[..]) {
                return Some(start);
            }
            from += offset + 1;
        }
        None
    }
}

/// Where `byte` first occurs in `haystack`, eight bytes at a time (no SIMD in Wasm).
fn find_byte(byte: u8, haystack: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let pattern = ONES * u64::from(byte);
    let mut i = 0;
    while let Some(chunk) = haystack.get(i..i + 8).and_then(|c| <[u8; 8]>::try_from(c).ok()) {
        let x = u64::from_le_bytes(chunk) ^ pattern;
        // The classic zero-byte test: its lowest set bit is the first zero byte's.
        let zero = x.wrapping_sub(ONES) & !x & HIGH;
        if zero != 0 {
            return Some(i + (zero.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    haystack.get(i..)?.iter().position(|&b| b == byte).map(|p| i + p)
}

/// The pattern "format": its steps.
#[derive(Debug)]
struct Pattern {
    steps: Vec<Step>,
}

impl Extract for Pattern {
    fn extract(&mut self, line: &str, values: &mut Values) -> bool {
        let b = line.as_bytes();
        let mut pos = 0;
        // The capture waiting for the literal that ends it.
        let mut open: Option<Option<usize>> = None;
        for step in &self.steps {
            match step {
                Step::Capture(field) => open = Some(*field),
                Step::Literal(literal) => {
                    let rest = b.get(pos..).unwrap_or_default();
                    let at = match open.take() {
                        None if rest.starts_with(&literal.text) => pos,
                        None => return false,
                        Some(field) => {
                            let Some(offset) = literal.find(rest) else { return false };
                            if let Some(field) = field {
                                values.set(field, pos..pos + offset);
                            }
                            pos + offset
                        }
                    };
                    pos = at + literal.text.len();
                }
            }
        }
        if let Some(Some(field)) = open {
            values.set(field, pos..b.len());
        }
        true
    }
}

#[cfg(test)]
mod search_tests {
    use super::*;

    #[test]
    fn literals_are_found_where_str_find_finds_them() {
        let haystacks = [
            "",
            "a",
            "abc [x] [y]",
            "2026-01-01T00:00:00.021874Z INFO  [router::upstream] request",
            "ééé [ż] 🐢 - - x",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab",
            "[[[[[[[[[[[[[[[[[[[ [",
        ];
        let literals = [" [", "[", "] ", " ", "ab", "b", " - ", "ż]", "🐢", "zzz", "aaaaaaaaab", "[ ["];
        for h in haystacks {
            for l in literals {
                assert_eq!(Literal::new(l.to_string()).find(h.as_bytes()), h.find(l), "{l:?} in {h:?}");
            }
        }
        for byte in [0u8, b' ', 0x7f, 0x80, 0xff] {
            for len in 0..20 {
                for at in 0..len {
                    let mut h = vec![b'x'; len];
                    h[at] = byte;
                    assert_eq!(find_byte(byte, &h), Some(at));
                    if at + 1 < len {
                        h[at + 1] = byte;
                        assert_eq!(find_byte(byte, &h), Some(at));
                    }
                }
                assert_eq!(find_byte(byte, &vec![b'x'; len]), None);
            }
        }
    }
}
