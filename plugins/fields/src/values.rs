//! The values a parser found in one line, by field index: ranges of the line where the text is
//! usable as it stands, decoded text in a reused arena where it had escapes.

use std::ops::Range;

/// What a parser found for one field.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Slot {
    /// Not seen (yet).
    Missing,
    /// Seen without a value (JSON `null`, a logfmt key without `=`): no output, and later
    /// occurrences of the field are ignored like any other repeat.
    Null,
    /// This part of the parsed text.
    Source(Range<usize>),
    /// This part of the arena.
    Arena(Range<usize>),
}

/// The values of one line's wanted fields, reused from line to line (no allocation once warm).
#[derive(Debug)]
pub struct Values {
    slots: Vec<Slot>,
    arena: String,
    found: usize,
}

impl Values {
    /// Room for `fields` fields, all missing.
    pub fn new(fields: usize) -> Self {
        Self { slots: vec![Slot::Missing; fields], arena: String::new(), found: 0 }
    }

    /// Forgets the previous line's values.
    pub fn reset(&mut self) {
        if self.found > 0 {
            self.slots.fill(Slot::Missing);
            self.found = 0;
        }
        self.arena.clear();
    }

    /// The number of fields.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Whether every field has been seen: a parser may stop reading the line.
    pub fn all_found(&self) -> bool {
        self.found == self.slots.len()
    }

    /// Whether field `i` has been seen.
    pub fn is_found(&self, i: usize) -> bool {
        self.slots.get(i).is_some_and(|s| *s != Slot::Missing)
    }

    /// Marks field `i` seen and returns its slot, or `None` if it was seen before (the first
    /// occurrence of a field wins) or is out of range.
    fn claim(&mut self, i: usize) -> Option<&mut Slot> {
        let slot = self.slots.get_mut(i).filter(|s| **s == Slot::Missing)?;
        self.found += 1;
        Some(slot)
    }

    /// Field `i` is `range` of the parsed text, unless already seen.
    pub fn set(&mut self, i: usize, range: Range<usize>) {
        if let Some(slot) = self.claim(i) {
            *slot = Slot::Source(range);
        }
    }

    /// Field `i` was seen without a value, unless already seen.
    pub fn set_null(&mut self, i: usize) {
        if let Some(slot) = self.claim(i) {
            *slot = Slot::Null;
        }
    }

    /// Field `i` is `escaped` (a JSON-style quoted string's contents) decoded with
    /// [`unescape_into`], unless already seen.
    pub fn set_unescaped(&mut self, i: usize, escaped: &str) {
        if self.is_found(i) || i >= self.slots.len() {
            return;
        }
        let start = self.arena.len();
        unescape_into(escaped, &mut self.arena);
        let end = self.arena.len();
        if let Some(slot) = self.claim(i) {
            *slot = Slot::Arena(start..end);
        }
    }

    /// The value of field `i`; `source` is the text the parser was given. `None` when missing
    /// or seen without a value.
    pub fn get<'x>(&'x self, i: usize, source: &'x str) -> Option<&'x str> {
        match self.slots.get(i)? {
            Slot::Missing | Slot::Null => None,
            Slot::Source(r) => source.get(r.clone()),
            Slot::Arena(r) => self.arena.get(r.clone()),
        }
    }
}

/// Appends `escaped`, the contents of a double-quoted string with JSON escapes, decoded:
/// `\"`, `\\`, `\/`, `\b`, `\f`, `\n`, `\r`, `\t` and `\uXXXX` (a surrogate pair as one
/// character; a lone surrogate as U+FFFD). Any other backslash is kept as it is, with the
/// character after it (logfmt writers are less careful than JSON's).
pub fn unescape_into(escaped: &str, out: &mut String) {
    let b = escaped.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            i += 1;
            continue;
        }
        out.push_str(&escaped[start..i]);
        let (decoded, len) = match b.get(i + 1) {
            Some(b'"') => ('"', 2),
            Some(b'\\') => ('\\', 2),
            Some(b'/') => ('/', 2),
            Some(b'b') => ('\u{8}', 2),
            Some(b'f') => ('\u{c}', 2),
            Some(b'n') => ('\n', 2),
            Some(b'r') => ('\r', 2),
            Some(b't') => ('\t', 2),
            Some(b'u') => match hex4(b, i + 2) {
                Some(hi @ 0xD800..=0xDBFF) => match (b.get(i + 6..i + 8), hex4(b, i + 8)) {
                    (Some(b"\\u"), Some(lo @ 0xDC00..=0xDFFF)) => {
                        let c = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                        (char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER), 12)
                    }
                    _ => (char::REPLACEMENT_CHARACTER, 6),
                },
                Some(c) => (char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER), 6),
                None => ('\\', 1),
            },
            _ => ('\\', 1),
        };
        out.push(decoded);
        i += len;
        start = i;
    }
    out.push_str(&escaped[start..]);
}

/// The four hex digits at `b[at..at + 4]` as a number.
fn hex4(b: &[u8], at: usize) -> Option<u32> {
    let digits = b.get(at..at + 4)?;
    digits.iter().try_fold(0u32, |n, &d| Some(n * 16 + char::from(d).to_digit(16)?))
}
