//! The flat batch format that crosses the Wasm boundary (see `sdk/FORMAT.md`): the host writes
//! a [`request`] and reads a [`response`]; a plugin reads the request and writes the response.
//! Both sides use this one implementation, so they cannot disagree about the layout.

pub mod request;
pub mod response;

use std::ops::Range;

/// Version of the format this crate reads and writes.
pub const VERSION: u16 = 1;

/// A malformed buffer: what is wrong and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatError(pub String);

impl std::fmt::Display for FormatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed plugin batch: {}", self.0)
    }
}

impl std::error::Error for FormatError {}

fn malformed<T>(message: impl Into<String>) -> Result<T, FormatError> {
    Err(FormatError(message.into()))
}

/// A `(name, value)` pair of borrowed strings.
pub type Pair<'a> = (&'a str, &'a str);

const SPAN: usize = 8;
const PAIR: usize = 16;

fn u32_at(buf: &[u8], at: usize) -> u32 {
    let mut b = [0; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(b)
}

fn i64_at(buf: &[u8], at: usize) -> i64 {
    let mut b = [0; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    i64::from_le_bytes(b)
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Converts a length to the format's u32, refusing what does not fit.
fn to_u32(n: usize, what: &str) -> Result<u32, FormatError> {
    u32::try_from(n).or_else(|_| malformed(format!("{what} ({n}) does not fit the format's 32 bits")))
}

/// A header's counts turned into the byte ranges of each table, checked against the buffer.
struct Layout {
    tables: Vec<Range<usize>>,
    arena: Range<usize>,
}

impl Layout {
    /// `widths[i] * counts[i]` bytes per table after `header` bytes, then `arena` bytes; the
    /// buffer must be exactly that long.
    fn new(len: usize, header: usize, tables: &[(usize, u32)], arena: u32) -> Result<Self, FormatError> {
        let mut at = header;
        let mut ranges = Vec::with_capacity(tables.len());
        for &(width, count) in tables {
            let size =
                width.checked_mul(count as usize).ok_or_else(|| FormatError("table too large".into()))?;
            let end = at.checked_add(size).filter(|&e| e <= len);
            let Some(end) = end else {
                return malformed(format!("tables end past the buffer ({len} bytes)"));
            };
            ranges.push(at..end);
            at = end;
        }
        let end = at.checked_add(arena as usize);
        if end != Some(len) {
            return malformed(format!(
                "buffer is {len} bytes, the header describes {}",
                at as u64 + u64::from(arena)
            ));
        }
        Ok(Self { tables: ranges, arena: at..len })
    }
}

/// The arena as text, checked once so that each span is an O(1) slice.
fn arena_str(buf: &[u8], range: Range<usize>) -> Result<&str, FormatError> {
    std::str::from_utf8(&buf[range]).or_else(|e| malformed(format!("arena is not UTF-8: {e}")))
}

/// The string a span names; it must lie inside the arena on character boundaries.
fn span_str<'a>(arena: &'a str, rec: &[u8], at: usize) -> Result<&'a str, FormatError> {
    let (off, len) = (u32_at(rec, at) as usize, u32_at(rec, at + 4) as usize);
    off.checked_add(len).and_then(|end| arena.get(off..end)).ok_or_else(|| {
        FormatError(format!(
            "span {off}+{len} is outside the arena ({} bytes) or splits a character",
            arena.len()
        ))
    })
}

/// A range into a table of `count` records; it must lie inside the table.
fn range_at(rec: &[u8], at: usize, count: u32, what: &str) -> Result<Range<u32>, FormatError> {
    let (start, len) = (u32_at(rec, at), u32_at(rec, at + 4));
    match start.checked_add(len) {
        Some(end) if end <= count => Ok(start..end),
        _ => malformed(format!("{what} range {start}+{len} is outside its table of {count}")),
    }
}

/// Appends strings to an arena and records their spans.
#[derive(Debug, Default)]
struct ArenaWriter {
    bytes: Vec<u8>,
}

impl ArenaWriter {
    fn push(&mut self, s: &str, out: &mut Vec<u8>) {
        put_u32(out, self.bytes.len() as u32);
        put_u32(out, s.len() as u32);
        self.bytes.extend_from_slice(s.as_bytes());
    }

    fn clear(&mut self) {
        self.bytes.clear();
    }
}

/// Iterates the pairs of a range of a pair table.
#[derive(Debug, Clone)]
pub struct Pairs<'a> {
    pairs: &'a [u8],
    arena: &'a str,
    range: Range<u32>,
}

impl<'a> Pairs<'a> {
    /// Where these pairs are in their buffer's pair table. Two `Pairs` of one buffer with the same
    /// range are the same pairs: a reader can check or resolve a shared set once.
    pub fn range(&self) -> Range<u32> {
        self.range.clone()
    }

    fn get(&self, i: u32) -> Pair<'a> {
        let rec = &self.pairs[i as usize * PAIR..(i as usize + 1) * PAIR];
        // Spans were checked when the buffer was parsed.
        let s = |at| span_str(self.arena, rec, at).unwrap_or_default();
        (s(0), s(SPAN))
    }
}

impl<'a> Iterator for Pairs<'a> {
    type Item = Pair<'a>;

    fn next(&mut self) -> Option<Pair<'a>> {
        let i = self.range.next()?;
        Some(self.get(i))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.range.size_hint()
    }
}

impl ExactSizeIterator for Pairs<'_> {}

/// Checks every pair of a pair table once, so iteration cannot fail later.
fn check_pairs(pairs: &[u8], arena: &str) -> Result<(), FormatError> {
    for rec in pairs.chunks_exact(PAIR) {
        span_str(arena, rec, 0)?;
        span_str(arena, rec, SPAN)?;
    }
    Ok(())
}

/// Whether `name` is a valid Loki label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn is_valid_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b == b'_' || b.is_ascii_alphabetic())
        && bytes.all(|b| b == b'_' || b.is_ascii_alphanumeric())
}
