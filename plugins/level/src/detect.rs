//! Level detection: one bounded pass over the start of a line, no allocation, no JSON parse.
//!
//! In order, the first that applies decides:
//! 1. a line whose first non-blank byte is `{`: a top-level key of the object named in `fields`
//!    (`"level": "WARN"`, any whitespace around the colon, escaped quotes skipped properly);
//!    other lines: a logfmt key named in `fields` (`level=warn`, `level="warn"`). A key that is
//!    there decides even when its value is no level (`"level":"verbose2"`): the line then has
//!    no level, rather than one guessed from its text;
//! 2. text forms (if enabled): a glog/klog header at the start (`W1121 12:00:00.000000 …`), then
//!    the first level word in the window that is upper case (`ERROR`, `WARNING:`), bracketed
//!    (`[warn]`, `<error>`, `[E]`) or followed by a colon (`Error:`, `warning:`).
//!
//! Keys must start within the first `max_scan_bytes` of the line; a key's value is read on up to
//! [`VALUE_MAX`] bytes past it. Nothing after the window is looked at otherwise.

/// A normalised level: the set the `level` plugin writes (shared by every built-in).
pub use sluice_fields::Level as Severity;

/// How far past its key a value is read (longer values are no level anyway).
pub const VALUE_MAX: usize = 64;

/// The level a field value or label value stands for, case-insensitively: a level word (see the
/// README's table: `WARNING` → warn, `CRIT` → fatal, …), a single letter (`D`, `I`, `W`, `E`, `F`,
/// `T`), or a pino/bunyan number (`10`, `20` → debug, `30` info, `40` warn, `50` error, `60`
/// fatal).
pub fn normalize(value: &str) -> Option<Severity> {
    normalize_bytes(value.as_bytes())
}

fn normalize_bytes(value: &[u8]) -> Option<Severity> {
    sluice_fields::level_of(value)
}

/// An upper-case level letter: `[E]`, klog's `E0102`.
fn letter(b: u8) -> Option<Severity> {
    match b {
        b'T' | b'D' => Some(Severity::Debug),
        b'I' => Some(Severity::Info),
        b'W' => Some(Severity::Warn),
        b'E' => Some(Severity::Error),
        b'F' => Some(Severity::Fatal),
        _ => None,
    }
}

/// A level word, case-insensitively, and whether it also counts in running text when followed
/// by a colon (`error: …`); words that are common in prose (`fine:`, `alert:`, `stack trace:`)
/// count in text only upper case or bracketed.
fn word(w: &[u8]) -> Option<(Severity, bool)> {
    const LONGEST: usize = "informational".len();
    if !(3..=LONGEST).contains(&w.len()) {
        return None;
    }
    let mut buf = [0u8; LONGEST];
    for (d, s) in buf.iter_mut().zip(w) {
        *d = s.to_ascii_lowercase();
    }
    Some(match &buf[..w.len()] {
        b"debug" | b"dbg" => (Severity::Debug, true),
        b"trace" | b"trc" | b"verbose" | b"fine" | b"finer" | b"finest" => (Severity::Debug, false),
        b"info" | b"inf" | b"notice" => (Severity::Info, true),
        b"information" | b"informational" => (Severity::Info, false),
        b"warn" | b"warning" | b"wrn" => (Severity::Warn, true),
        b"error" | b"err" => (Severity::Error, true),
        b"severe" => (Severity::Error, false),
        b"fatal" | b"ftl" | b"critical" | b"crit" | b"panic" | b"emerg" | b"emergency" => {
            (Severity::Fatal, true)
        }
        b"pnc" | b"alert" => (Severity::Fatal, false),
        _ => return None,
    })
}

/// The detector a configuration builds.
#[derive(Debug, Clone)]
pub struct Detector {
    /// Keys, compared ASCII-case-insensitively.
    fields: Vec<Box<[u8]>>,
    /// Bit `n` set: a key of `n` bytes (`n` < 64) is in `fields`; most keys are rejected by it.
    lengths: u64,
    text: bool,
    max_scan: usize,
}

impl Detector {
    /// A detector for these keys, with or without text forms, looking at `max_scan` bytes.
    pub fn new(fields: &[String], text: bool, max_scan: usize) -> Self {
        let lengths = fields.iter().fold(0u64, |m, f| m | 1u64.checked_shl(f.len() as u32).unwrap_or(0));
        Self { fields: fields.iter().map(|f| f.as_bytes().into()).collect(), lengths, text, max_scan }
    }

    /// The level of `line`, if it has one.
    pub fn detect(&self, line: &str) -> Option<Severity> {
        let line = line.as_bytes();
        let window = line.len().min(self.max_scan);
        let start = line[..window].iter().position(|b| !b.is_ascii_whitespace())?;
        if !self.fields.is_empty() {
            let value = if line[start] == b'{' {
                self.json_field(line, window, start + 1)
            } else if line[start..window].contains(&b'=') {
                self.logfmt_field(line, window, start)
            } else {
                None
            };
            if let Some(value) = value {
                return normalize_bytes(value);
            }
        }
        if self.text { text_level(line, window, start) } else { None }
    }

    fn is_field(&self, key: &[u8]) -> bool {
        let maybe = key.len() >= 64 || self.lengths & (1 << key.len()) != 0;
        maybe && self.fields.iter().any(|f| f.eq_ignore_ascii_case(key))
    }

    /// The value of the first top-level key in `fields` of the object opened before `i`.
    fn json_field<'a>(&self, line: &'a [u8], window: usize, mut i: usize) -> Option<&'a [u8]> {
        let w = &line[..window];
        let mut depth = 1u32;
        loop {
            // To the next string, following the nesting between strings.
            loop {
                match *w.get(i)? {
                    b'"' => break,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return None;
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            let start = i + 1;
            let end = string_end(w, start)?;
            i = skip_blanks(w, end + 1);
            // Only a string followed by a colon is a key; keys of nested objects don't count.
            if depth != 1 || w.get(i) != Some(&b':') {
                continue;
            }
            i += 1;
            if self.is_field(&w[start..end]) {
                return Some(json_value(line, skip_blanks(line, i)));
            }
        }
    }

    /// The value of the first logfmt key in `fields`; words that are no `key=value` are skipped.
    fn logfmt_field<'a>(&self, line: &'a [u8], window: usize, mut i: usize) -> Option<&'a [u8]> {
        let w = &line[..window];
        loop {
            i = skip_blanks(w, i);
            if *w.get(i)? == b'"' {
                // A quoted word, not a key.
                i = string_end(w, i + 1)? + 1;
                continue;
            }
            let start = i;
            while w.get(i).is_some_and(|&b| !is_blank(b) && b != b'=' && b != b'"') {
                i += 1;
            }
            if w.get(i) != Some(&b'=') {
                continue;
            }
            let key = &w[start..i];
            i += 1;
            if !key.is_empty() && self.is_field(key) {
                return Some(logfmt_value(line, i));
            }
            // Skip the value: a quoted value may hold spaces and `key=value` look-alikes.
            if w.get(i) == Some(&b'"') {
                i = string_end(w, i + 1)? + 1;
            } else {
                while w.get(i).is_some_and(|&b| !is_blank(b)) {
                    i += 1;
                }
            }
        }
    }
}

fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn skip_blanks(s: &[u8], mut i: usize) -> usize {
    while s.get(i).is_some_and(|&b| is_blank(b)) {
        i += 1;
    }
    i
}

/// The index of the quote that closes the string whose content starts at `i`, skipping escapes.
fn string_end(s: &[u8], mut i: usize) -> Option<usize> {
    loop {
        match *s.get(i)? {
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
}

/// The bytes of the value at `i`: a string's content (escapes left as they are), or a bare
/// token up to a delimiter; at most [`VALUE_MAX`] bytes are read. An unterminated string is
/// empty, which is no level.
fn value_at(line: &[u8], i: usize, delimiter: fn(u8) -> bool) -> &[u8] {
    let rest = &line[i.min(line.len())..];
    let rest = &rest[..rest.len().min(VALUE_MAX + 2)];
    if rest.first() == Some(&b'"') {
        return string_end(rest, 1).map_or(&[][..], |end| &rest[1..end]);
    }
    let end = rest.iter().position(|&b| delimiter(b)).unwrap_or(rest.len());
    &rest[..end]
}

fn json_value(line: &[u8], i: usize) -> &[u8] {
    value_at(line, i, |b| is_blank(b) || matches!(b, b',' | b'}' | b']'))
}

fn logfmt_value(line: &[u8], i: usize) -> &[u8] {
    value_at(line, i, is_blank)
}

/// Word bytes: ASCII letters, digits, `_`, and any byte of a non-ASCII character, so that
/// `ERROR_COUNT` and `ERRÖR` are words of their own, not `ERROR` and `ERR`.
fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

/// A level in text forms within the window, the first one found.
fn text_level(line: &[u8], window: usize, start: usize) -> Option<Severity> {
    if let Some(level) = glog(&line[start..window]) {
        return Some(level);
    }
    let w = &line[..window];
    let mut i = start;
    while i < window {
        if !is_word(w[i]) {
            i += 1;
            continue;
        }
        let s = i;
        while i < window && is_word(w[i]) {
            i += 1;
        }
        let after = line.get(i).copied();
        if i == window && after.is_some_and(is_word) {
            // Cut by the window: `ERRORS` is not `ERROR`.
            return None;
        }
        let word_bytes = &w[s..i];
        let before = s.checked_sub(1).map(|p| w[p]);
        let bracketed = matches!(before, Some(b'[' | b'<')) && matches!(after, Some(b']' | b'>'));
        if let [b] = word_bytes {
            if bracketed && let Some(level) = letter(*b) {
                return Some(level);
            }
        } else if let Some((level, colon_ok)) = word(word_bytes)
            && (bracketed
                || word_bytes.iter().all(u8::is_ascii_uppercase)
                || (colon_ok && after == Some(b':')))
        {
            return Some(level);
        }
    }
    None
}

/// glog/klog's header, `Lmmdd hh:mm:ss.uuuuuu …` with `L` one of `IWEF`.
fn glog(s: &[u8]) -> Option<Severity> {
    let digits = |r: std::ops::Range<usize>| s.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let header = digits(1..5) && s.get(5) == Some(&b' ') && digits(6..8) && s.get(8) == Some(&b':');
    match s.first() {
        Some(&b @ (b'I' | b'W' | b'E' | b'F')) if header => letter(b),
        _ => None,
    }
}
