//! Parser for Prometheus-style label strings, `{app="api", env='prod'}`, as Loki reads the
//! `labels` field of a protobuf push (Loki hands it to the PromQL `ParseMetric` parser).
//!
//! Accepted, as PromQL does: an optional metric name before the braces (it becomes `__name__`),
//! an empty or absent brace block, a trailing comma, whitespace and `#` comments between tokens,
//! label names as identifiers or quoted strings, and values quoted with `"`, `'` (Go escapes:
//! `\a \b \f \n \r \t \v \\ \" \' \NNN \xNN \uXXXX \UXXXXXXXX`) or backticks (raw). Byte escapes
//! must add up to valid UTF-8. Only `=` is allowed between name and value.
//!
//! The parser returns the pairs as written (order, duplicates and empty values kept); callers
//! decide what to normalise. [`parse_label_set`] applies Loki's normalisation for pushes.

use std::fmt;

use crate::model::{LabelSet, Pair};

/// Why a label string did not parse, with the byte offset where the problem starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelParseError {
    /// Byte offset into the input.
    pub offset: usize,
    /// What was wrong there.
    pub message: String,
}

impl fmt::Display for LabelParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at byte {}: {}", self.offset, self.message)
    }
}

impl std::error::Error for LabelParseError {}

/// Parses a label string into its pairs, in the order written.
pub fn parse_labels(input: &str) -> Result<Vec<Pair>, LabelParseError> {
    let mut p = Parser { src: input, bytes: input.as_bytes(), pos: 0 };
    let mut pairs = Vec::new();
    p.skip_space();
    if p.peek().is_some_and(is_metric_start) {
        let name = p.identifier(true);
        pairs.push(("__name__".to_owned(), name.to_owned()));
        p.skip_space();
    }
    match p.peek() {
        None => return Ok(pairs),
        Some(b'{') => p.pos += 1,
        Some(_) => return Err(p.error_here("expected `{`")),
    }
    loop {
        p.skip_space();
        match p.peek() {
            Some(b'}') => {
                p.pos += 1;
                break;
            }
            None => return Err(p.error_here("unexpected end of input, expected a label name or `}`")),
            Some(_) => {}
        }
        let name = p.label_name()?;
        p.skip_space();
        p.equals()?;
        p.skip_space();
        let value = p.string("label value")?;
        pairs.push((name, value));
        p.skip_space();
        match p.peek() {
            Some(b',') => p.pos += 1,
            Some(b'}') => {
                p.pos += 1;
                break;
            }
            None => return Err(p.error_here("unexpected end of input, expected `,` or `}`")),
            Some(_) => return Err(p.error_here("expected `,` or `}` after a label value")),
        }
    }
    p.skip_space();
    if p.pos < p.bytes.len() {
        return Err(p.error_here("unexpected text after `}`"));
    }
    Ok(pairs)
}

/// Parses a push's label string as Loki does: pairs with empty values are dropped (Loki treats
/// them as absent), the rest sorted. Duplicates and invalid names are kept for validation.
pub fn parse_label_set(input: &str) -> Result<LabelSet, LabelParseError> {
    let mut pairs = parse_labels(input)?;
    pairs.retain(|(_, v)| !v.is_empty());
    Ok(LabelSet::new(pairs))
}

/// True when `name` is a valid label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn is_valid_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphabetic() || b == b'_' => {}
        _ => return false,
    }
    bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn is_metric_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b == b':'
}

struct Parser<'a> {
    src: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn error_at(&self, offset: usize, message: impl Into<String>) -> LabelParseError {
        LabelParseError { offset, message: message.into() }
    }

    fn error_here(&self, expected: &str) -> LabelParseError {
        let found = match self.src.get(self.pos..).and_then(|rest| rest.chars().next()) {
            Some(c) => format!("{expected}, found `{}`", c.escape_debug()),
            None => expected.to_owned(),
        };
        self.error_at(self.pos, found)
    }

    fn skip_space(&mut self) {
        while let Some(b) = self.peek() {
            match b {
                b' ' | b'\t' | b'\n' | b'\r' => self.pos += 1,
                b'#' => {
                    while self.peek().is_some_and(|b| b != b'\n') {
                        self.pos += 1;
                    }
                }
                _ => break,
            }
        }
    }

    /// An identifier starting at `pos` (the caller checked the first byte); colons only in
    /// metric names.
    fn identifier(&mut self, colons: bool) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || (colons && b == b':')) {
            self.pos += 1;
        }
        self.src.get(start..self.pos).unwrap_or_default()
    }

    fn label_name(&mut self) -> Result<String, LabelParseError> {
        match self.peek() {
            Some(b) if b.is_ascii_alphabetic() || b == b'_' => Ok(self.identifier(false).to_owned()),
            Some(b'"' | b'\'' | b'`') => self.string("label name"),
            _ => Err(self.error_here("expected a label name")),
        }
    }

    fn equals(&mut self) -> Result<(), LabelParseError> {
        let start = self.pos;
        match (self.peek(), self.bytes.get(self.pos + 1).copied()) {
            (Some(b'='), Some(b'~')) | (Some(b'!'), Some(b'=' | b'~')) => Err(self.error_at(
                start,
                "only `=` may join a label name and value here (a stream's labels are not matchers)",
            )),
            (Some(b'='), _) => {
                self.pos += 1;
                Ok(())
            }
            _ => Err(self.error_here("expected `=` after the label name")),
        }
    }

    /// A quoted string; `what` names it in errors.
    fn string(&mut self, what: &str) -> Result<String, LabelParseError> {
        let open_at = self.pos;
        let quote = match self.peek() {
            Some(q @ (b'"' | b'\'' | b'`')) => q,
            _ => return Err(self.error_here(&format!("expected a quoted {what}"))),
        };
        self.pos += 1;
        let start = self.pos;
        if quote == b'`' {
            let Some(len) = self.bytes.get(start..).and_then(|rest| rest.iter().position(|&b| b == b'`'))
            else {
                return Err(self.error_at(open_at, format!("unterminated {what}")));
            };
            self.pos = start + len + 1;
            return Ok(self.src.get(start..start + len).unwrap_or_default().to_owned());
        }
        // Fast path: no escapes, so the value is a slice of the input.
        loop {
            match self.peek() {
                Some(b) if b == quote => {
                    let value = self.src.get(start..self.pos).unwrap_or_default().to_owned();
                    self.pos += 1;
                    return Ok(value);
                }
                Some(b'\\') => break,
                Some(b'\n') | None => return Err(self.error_at(open_at, format!("unterminated {what}"))),
                Some(_) => self.pos += 1,
            }
        }
        let mut out: Vec<u8> = self.bytes.get(start..self.pos).unwrap_or_default().to_vec();
        loop {
            match self.peek() {
                Some(b) if b == quote => {
                    self.pos += 1;
                    return String::from_utf8(out).map_err(|_| {
                        self.error_at(open_at, format!("byte escapes in the {what} do not form valid UTF-8"))
                    });
                }
                Some(b'\\') => self.escape(quote, &mut out)?,
                Some(b'\n') | None => return Err(self.error_at(open_at, format!("unterminated {what}"))),
                Some(b) => {
                    out.push(b);
                    self.pos += 1;
                }
            }
        }
    }

    /// One escape sequence at `pos` (the backslash), appended to `out` as bytes.
    fn escape(&mut self, quote: u8, out: &mut Vec<u8>) -> Result<(), LabelParseError> {
        let at = self.pos;
        let Some(c) = self.bytes.get(at + 1).copied() else {
            return Err(self.error_at(at, "unterminated escape sequence"));
        };
        self.pos = at + 2;
        let simple = match c {
            b'a' => Some(0x07),
            b'b' => Some(0x08),
            b'f' => Some(0x0c),
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            b'v' => Some(0x0b),
            b'\\' => Some(b'\\'),
            b'"' | b'\'' if c == quote => Some(c),
            _ => None,
        };
        if let Some(b) = simple {
            out.push(b);
            return Ok(());
        }
        match c {
            b'0'..=b'7' => {
                let digits = self.digits(at + 1, 3, 8)?;
                let byte = u8::try_from(digits)
                    .map_err(|_| self.error_at(at, "octal escape value above 255 (\\377)"))?;
                out.push(byte);
            }
            b'x' => {
                let v = self.digits(at + 2, 2, 16)?;
                out.push(u8::try_from(v).unwrap_or_default());
            }
            b'u' | b'U' => {
                let n = if c == b'u' { 4 } else { 8 };
                let v = self.digits(at + 2, n, 16)?;
                let ch = char::from_u32(v).ok_or_else(|| {
                    self.error_at(at, format!("escape \\{} is not a Unicode scalar value", v))
                })?;
                let mut buf = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
            }
            _ => {
                let shown = self.src.get(at..).and_then(|r| r.chars().nth(1)).unwrap_or('?');
                return Err(
                    self.error_at(at, format!("unknown escape sequence `\\{}`", shown.escape_debug()))
                );
            }
        }
        Ok(())
    }

    /// Exactly `n` digits of `radix` starting at byte `from`; moves `pos` past them.
    fn digits(&mut self, from: usize, n: usize, radix: u32) -> Result<u32, LabelParseError> {
        let mut v: u32 = 0;
        for i in 0..n {
            let d = self
                .bytes
                .get(from + i)
                .and_then(|&b| char::from(b).to_digit(radix))
                .ok_or_else(|| self.error_at(from.saturating_sub(2), "malformed escape sequence"))?;
            v = v.wrapping_mul(radix).wrapping_add(d);
        }
        self.pos = from + n;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Vec<(String, String)> {
        parse_labels(s).unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }

    fn p(pairs: &[(&str, &str)]) -> Vec<Pair> {
        pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    fn err(s: &str) -> LabelParseError {
        match parse_labels(s) {
            Ok(v) => panic!("{s:?} should not parse, got {v:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn parses_plain_selectors() {
        assert_eq!(ok(r#"{app="api", env="prod"}"#), p(&[("app", "api"), ("env", "prod")]));
        assert_eq!(ok(r#"{app="api",}"#), p(&[("app", "api")]));
        assert_eq!(ok("  {\n\tapp = \"x\" ,\r\n b=\"y\" }  "), p(&[("app", "x"), ("b", "y")]));
        assert_eq!(ok("{}"), p(&[]));
        assert_eq!(ok(""), p(&[]));
        assert_eq!(ok(r#"{a=""}"#), p(&[("a", "")]));
        assert_eq!(ok(r#"{_x1="1", a="2", a="3"}"#), p(&[("_x1", "1"), ("a", "2"), ("a", "3")]));
    }

    #[test]
    fn parses_metric_name_comments_and_quotes() {
        assert_eq!(ok(r#"up:rate{a="b"}"#), p(&[("__name__", "up:rate"), ("a", "b")]));
        assert_eq!(ok("up"), p(&[("__name__", "up")]));
        assert_eq!(ok("{a='x\"y'}"), p(&[("a", "x\"y")]));
        assert_eq!(ok("{a=`raw \\n\nline`}"), p(&[("a", "raw \\n\nline")]));
        assert_eq!(ok("{a=\"1\" # note\n}"), p(&[("a", "1")]));
        assert_eq!(ok(r#"{"service.name"="x"}"#), p(&[("service.name", "x")]));
    }

    #[test]
    fn decodes_go_escapes() {
        assert_eq!(ok(r#"{a="q\"b\\s\n\t\r"}"#), p(&[("a", "q\"b\\s\n\t\r")]));
        assert_eq!(ok(r#"{a="\a\b\f\v"}"#), p(&[("a", "\x07\x08\x0c\x0b")]));
        assert_eq!(ok(r#"{a="\u00e9\U0001F600"}"#), p(&[("a", "é😀")]));
        assert_eq!(ok(r#"{a="\xc3\xa9\101"}"#), p(&[("a", "éA")]));
        assert_eq!(ok(r#"{a='it\'s'}"#), p(&[("a", "it's")]));
        assert_eq!(ok("{a=\"ünï\\ncode\"}"), p(&[("a", "ünï\ncode")]));
    }

    #[test]
    fn rejects_malformed_strings_with_position() {
        let e = err(r#"{a="x"#);
        assert_eq!(e.offset, 3);
        assert!(e.message.contains("unterminated label value"), "{e}");
        assert!(err("{a=\"x\ny\"}").message.contains("unterminated"));
        assert!(err(r#"{a="\q"}"#).message.contains("unknown escape sequence `\\q`"));
        assert!(err(r#"{a="\'"}"#).message.contains("unknown escape"));
        assert!(err(r#"{a='\"'}"#).message.contains("unknown escape"));
        assert!(err(r#"{a="\x4"}"#).message.contains("malformed escape"));
        assert!(err(r#"{a="\400"}"#).message.contains("above 255"));
        assert!(err(r#"{a="\uD800"}"#).message.contains("not a Unicode scalar"));
        assert!(err(r#"{a="\xff"}"#).message.contains("valid UTF-8"));
        assert!(err(r#"{a="\"#).message.contains("unterminated"));
        assert!(err("{a=`x}").message.contains("unterminated"));
    }

    #[test]
    fn rejects_malformed_structure() {
        assert!(err(r#"{a!="x"}"#).message.contains("only `=`"));
        assert!(err(r#"{a=~"x"}"#).message.contains("only `=`"));
        assert!(err(r#"{a="x"} extra"#).message.contains("after `}`"));
        assert!(err(r#"{a="x" b="y"}"#).message.contains("expected `,` or `}`"));
        assert!(err(r#"{a="x""#).message.contains("end of input"));
        assert!(err("{").message.contains("end of input"));
        assert!(err(r#"{a}"#).message.contains("expected `=`"));
        assert!(err(r#"{a=x}"#).message.contains("expected a quoted label value"));
        assert!(err(r#"{1a="x"}"#).message.contains("expected a label name"));
        assert!(err(r#"{,}"#).message.contains("expected a label name"));
        assert!(err(r#"a="x""#).message.contains("expected `{`"));
        assert!(err("{é=\"x\"}").message.contains("found `é`"));
    }

    #[test]
    fn label_set_drops_empty_values_and_sorts() {
        let set = parse_label_set(r#"{z="1", a="", m="2"}"#).expect("parses");
        assert_eq!(set.pairs(), p(&[("m", "2"), ("z", "1")]).as_slice());
    }

    #[test]
    fn label_name_rule() {
        for good in ["a", "_", "A_9", "__name__"] {
            assert!(is_valid_label_name(good), "{good}");
        }
        for bad in ["", "9a", "a.b", "a-b", "é", "a:b"] {
            assert!(!is_valid_label_name(bad), "{bad}");
        }
    }
}
