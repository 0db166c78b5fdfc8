//! From findings to output: overlapping findings resolved, each replaced by its detector's
//! action, the text rebuilt into a reused buffer.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::Ipv6Addr;

use crate::config::{Action, Rule, Settings};
use crate::detect::{KINDS, Kind, Scanner, Span};

/// Distinct hashed values remembered per batch before the memo starts over.
const MAX_MEMO: usize = 4096;

/// Finds and replaces; owns every buffer it needs, reused from text to text.
#[derive(Debug)]
pub struct Engine {
    scanner: Scanner,
    /// By detector id: built-ins (by [`Kind`] index), then the custom rules.
    actions: Vec<Option<Action>>,
    names: Vec<String>,
    rules: Vec<Rule>,
    /// Findings of the current text, then resolved.
    spans: Vec<Span>,
    accepted: Vec<Span>,
    /// Expanded replacements of custom `replace` rules that refer to groups.
    expanded: String,
    /// The rewritten text.
    out: String,
    /// The normalized value to hash.
    norm: Vec<u8>,
    /// Keyed hashes (first 8 bytes) of this batch's values: one host call per distinct value.
    memo: HashMap<Box<[u8]>, [u8; 8]>,
    /// Replacements per detector id since the last [`Engine::flush_counts`].
    hits: Vec<u64>,
}

impl Engine {
    /// An engine for validated settings.
    pub fn new(settings: &Settings) -> Self {
        let enabled = std::array::from_fn(|i| settings.actions[i].is_some());
        let scanner = Scanner::new(enabled, settings.min_secret_length, settings.min_secret_entropy);
        let mut actions: Vec<Option<Action>> = settings.actions.to_vec();
        let mut names: Vec<String> = Kind::ALL.iter().map(|k| k.name().to_string()).collect();
        for rule in &settings.rules {
            actions.push(Some(rule.action.clone()));
            names.push(rule.name.clone());
        }
        let detectors = actions.len();
        Self {
            scanner,
            actions,
            names,
            rules: settings.rules.clone(),
            spans: Vec::new(),
            accepted: Vec::new(),
            expanded: String::new(),
            out: String::new(),
            norm: Vec::new(),
            memo: HashMap::new(),
            hits: vec![0; detectors],
        }
    }

    /// Rewrites `text` into [`Engine::output`]; whether anything changed.
    pub fn rewrite(&mut self, text: &str) -> bool {
        self.spans.clear();
        self.expanded.clear();
        self.scanner.scan(text, &mut self.spans);
        self.run_rules(text);
        if self.spans.is_empty() {
            return false;
        }
        self.resolve(text);
        self.out.clear();
        self.out.reserve(text.len() + 32);
        let mut last = 0;
        for i in 0..self.accepted.len() {
            let span = self.accepted[i];
            let (Some(gap), Some(value)) = (text.get(last..span.start), text.get(span.start..span.end))
            else {
                continue;
            };
            self.out.push_str(gap);
            let before = self.out.len();
            self.apply(span, value);
            if self.out.get(before..) != Some(value)
                && let Some(n) = self.hits.get_mut(usize::from(span.det))
            {
                *n += 1;
            }
            last = span.end;
        }
        self.out.push_str(text.get(last..).unwrap_or_default());
        self.out != text
    }

    /// The text of the last [`Engine::rewrite`] that changed something.
    pub fn output(&self) -> &str {
        &self.out
    }

    /// Forgets the batch's hashes.
    pub fn begin_batch(&mut self) {
        self.memo.clear();
    }

    /// Adds the replacements per detector to the plugin's counters and starts over.
    pub fn flush_counts(&mut self) {
        for (name, n) in self.names.iter().zip(self.hits.iter_mut()) {
            sluice_sdk::count(name, *n);
            *n = 0;
        }
    }

    fn run_rules(&mut self, text: &str) {
        let Self { rules, spans, expanded, actions, .. } = self;
        for (i, rule) in rules.iter().enumerate() {
            let det = (KINDS + i) as u16;
            if rule.value_group.is_none() && !rule.expands {
                spans.extend(rule.regex.find_iter(text).filter(|m| !m.is_empty()).map(|m| Span {
                    start: m.start(),
                    end: m.end(),
                    det,
                    repl: (0, 0),
                }));
                continue;
            }
            let template = match actions.get(KINDS + i) {
                Some(Some(Action::Replace(t))) => t.as_str(),
                _ => "",
            };
            for caps in rule.regex.captures_iter(text) {
                let m = match rule.value_group {
                    Some(g) => caps.get(g),
                    None => caps.get(0),
                };
                let Some(m) = m.filter(|m| !m.is_empty()) else { continue };
                let mut repl = (0, 0);
                if rule.expands {
                    let from = expanded.len();
                    caps.expand(template, expanded);
                    repl = (from as u32, expanded.len() as u32);
                }
                spans.push(Span { start: m.start(), end: m.end(), det, repl });
            }
        }
    }

    /// Resolves `spans` into `accepted`: sorted, disjoint. Overlapping secrets (and custom
    /// rules) merge into one span named by the longest of them (ties: the higher priority);
    /// personal data overlapping anything accepted is dropped.
    fn resolve(&mut self, text: &str) {
        let b = text.as_bytes();
        for span in &mut self.spans {
            fix_boundaries(text, b, span);
        }
        self.spans.retain(|s| s.start < s.end);
        let secret = |s: &Span| usize::from(s.det) >= KINDS || Kind::ALL[usize::from(s.det)].is_secret();
        self.spans.sort_unstable_by_key(|s| (!secret(s), s.start, std::cmp::Reverse(s.end), s.det));
        self.accepted.clear();
        let mut best_len = 0;
        let mut pii_from = self.spans.len();
        for (i, &span) in self.spans.iter().enumerate() {
            if !secret(&span) {
                pii_from = i;
                break;
            }
            match self.accepted.last_mut() {
                Some(cur) if span.start < cur.end => {
                    let len = span.end - span.start;
                    if len > best_len || (len == best_len && span.det < cur.det) {
                        best_len = len;
                        cur.det = span.det;
                        cur.repl = span.repl;
                    }
                    cur.end = cur.end.max(span.end);
                }
                _ => {
                    best_len = span.end - span.start;
                    self.accepted.push(span);
                }
            }
        }
        // Personal data, in order: not where a secret is; of two overlapping, the earlier kind.
        let secrets = self.accepted.len();
        let mut j = 0;
        for i in pii_from..self.spans.len() {
            let span = self.spans[i];
            while j < secrets && self.accepted[j].end <= span.start {
                j += 1;
            }
            if j < secrets && self.accepted[j].start < span.end {
                continue;
            }
            let len = self.accepted.len();
            match self.accepted.last_mut() {
                Some(last) if len > secrets && span.start < last.end => {
                    if span.det < last.det {
                        *last = span;
                    }
                }
                _ => self.accepted.push(span),
            }
        }
        self.accepted.sort_unstable_by_key(|s| s.start);
    }

    /// Writes the replacement of `value` (found as `span`) to `out`.
    fn apply(&mut self, span: Span, value: &str) {
        let det = usize::from(span.det);
        let kind = Kind::ALL.get(det).copied();
        let name = self.names.get(det).map_or("unknown", String::as_str);
        let action = self.actions.get(det).cloned().flatten().unwrap_or(Action::Redact);
        let out = &mut self.out;
        match action {
            Action::Redact => redacted(name, out),
            Action::Mask => mask(kind, value, out),
            Action::Truncate => truncate(kind, value, name, out),
            Action::Replace(template) => {
                let (from, to) = span.repl;
                match self.expanded.get(from as usize..to as usize) {
                    Some(expanded) if to > from => out.push_str(expanded),
                    _ if template.contains('$') => {}
                    _ => out.push_str(&template),
                }
            }
            Action::Hash => {
                self.norm.clear();
                match kind {
                    Some(Kind::Email) => self.norm.extend(value.bytes().map(|c| c.to_ascii_lowercase())),
                    Some(Kind::CreditCard) => self.norm.extend(value.bytes().filter(u8::is_ascii_digit)),
                    _ => self.norm.extend_from_slice(value.as_bytes()),
                }
                let hash = match self.memo.get(self.norm.as_slice()) {
                    Some(hash) => *hash,
                    None => {
                        let full = sluice_sdk::keyed_hash(&self.norm);
                        let mut hash = [0u8; 8];
                        hash.copy_from_slice(&full[..8]);
                        if self.memo.len() >= MAX_MEMO {
                            self.memo.clear();
                        }
                        self.memo.insert(self.norm.as_slice().into(), hash);
                        hash
                    }
                };
                let name = self.names.get(det).map_or("unknown", String::as_str);
                self.out.push_str(name);
                self.out.push(':');
                const HEX: &[u8; 16] = b"0123456789abcdef";
                for byte in hash {
                    self.out.push(char::from(HEX[usize::from(byte >> 4)]));
                    self.out.push(char::from(HEX[usize::from(byte & 15)]));
                }
            }
        }
    }
}

/// Moves a span's ends to character boundaries and keeps JSON escapes whole: a span never
/// starts with the escaped half of `\x` / `\uXXXX` nor ends with an escaping backslash.
fn fix_boundaries(text: &str, b: &[u8], span: &mut Span) {
    let escaped_at = |i: usize| b[..i].iter().rev().take(4096).take_while(|&&c| c == b'\\').count() % 2 == 1;
    let escape_len = |i: usize| {
        let hex4 = b.get(i + 1..i + 5).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit));
        if b.get(i) == Some(&b'u') && hex4 { 5 } else { 1 }
    };
    span.end = span.end.min(b.len());
    if span.start > 0 && span.start < span.end && escaped_at(span.start) {
        span.start = (span.start + escape_len(span.start)).min(span.end);
    }
    if span.end > span.start && span.end < b.len() && escaped_at(span.end) {
        span.end = (span.end + escape_len(span.end)).min(b.len());
    }
    while span.start > 0 && !text.is_char_boundary(span.start) {
        span.start -= 1;
    }
    while span.end < b.len() && !text.is_char_boundary(span.end) {
        span.end += 1;
    }
}

/// `mask`: cards keep their last 4 digits (separators stay), e-mails their first character and
/// domain (`a***@example.com`); anything else is `****`, followed by its last 4 characters
/// when it has 16 or more and those are ASCII letters or digits.
fn mask(kind: Option<Kind>, value: &str, out: &mut String) {
    match kind {
        Some(Kind::CreditCard) => {
            let digits = value.bytes().filter(u8::is_ascii_digit).count();
            let mut seen = 0;
            for c in value.chars() {
                if c.is_ascii_digit() {
                    seen += 1;
                    out.push(if seen + 4 <= digits { '*' } else { c });
                } else {
                    out.push(c);
                }
            }
        }
        Some(Kind::Email) if value.contains('@') => {
            let at = value.find('@').unwrap_or(0);
            out.extend(value.chars().next());
            out.push_str("***");
            out.push_str(value.get(at..).unwrap_or_default());
        }
        _ => {
            out.push_str("****");
            let count = value.chars().count();
            let tail = value.char_indices().nth(count.saturating_sub(4)).map_or("", |(i, _)| &value[i..]);
            if count >= 16 && tail.bytes().all(|c| c.is_ascii_alphanumeric()) {
                out.push_str(tail);
            }
        }
    }
}

/// `truncate`: `10.1.2.3` → `10.1.2.0`; an IPv6 address keeps its first 48 bits
/// (`2001:db8:85a3::`).
fn truncate(kind: Option<Kind>, value: &str, name: &str, out: &mut String) {
    match kind {
        Some(Kind::Ipv4) => match value.rfind('.') {
            Some(dot) => {
                out.push_str(&value[..=dot]);
                out.push('0');
            }
            None => redacted(name, out),
        },
        Some(Kind::Ipv6) => match value.parse::<Ipv6Addr>() {
            Ok(ip) => {
                let s = ip.segments();
                let _ = write!(out, "{}", Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0));
            }
            Err(_) => redacted(name, out),
        },
        _ => redacted(name, out),
    }
}

/// `[REDACTED:<name>]`.
fn redacted(name: &str, out: &mut String) {
    out.push_str("[REDACTED:");
    out.push_str(name);
    out.push(']');
}
