//! Reading a key or a level out of a line without parsing it: a targeted scan for one top-level
//! JSON key (`{"trace_id": "…"}`) or one logfmt key (`trace_id=…`), and the level spellings.
//!
//! The same scan as the `level` plugin's (a built-in plugin can't link another one: both would
//! export the component's functions), reduced to what sampling needs: the raw value of one key.

/// The level index used for entries without a recognised level.
pub const UNKNOWN: usize = 5;

/// The normalised level names, by index; the last, `unknown`, is for no recognised level.
pub const LEVELS: [&str; 6] = ["debug", "info", "warn", "error", "fatal", "unknown"];

/// The level index (into [`LEVELS`]) of a label, metadata or field value, with the spellings
/// every built-in shares ([`sluice_fields::level_of`]); [`UNKNOWN`] otherwise.
pub fn level_index(value: &[u8]) -> usize {
    sluice_fields::level_of(value).map_or(UNKNOWN, |level| level as usize)
}

/// The raw value of `key` in `line`: a top-level key of a JSON object line, or a logfmt key of
/// any other line, matched exactly, starting within the first `max_scan` bytes. A string value
/// is its content between the quotes (escapes left as they are); a bare value runs to the next
/// delimiter. `None` if the key isn't there.
pub fn field<'a>(line: &'a [u8], key: &[u8], max_scan: usize) -> Option<&'a [u8]> {
    let window = line.len().min(max_scan);
    let start = line[..window].iter().position(|b| !b.is_ascii_whitespace())?;
    if line[start] == b'{' {
        json_field(line, window, start + 1, key)
    } else {
        logfmt_field(line, window, start, key)
    }
}

fn json_field<'a>(line: &'a [u8], window: usize, mut i: usize, key: &[u8]) -> Option<&'a [u8]> {
    let w = &line[..window];
    let mut depth = 1u32;
    loop {
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
        if depth != 1 || w.get(i) != Some(&b':') {
            continue;
        }
        i += 1;
        if &w[start..end] == key {
            return value_at(line, skip_blanks(line, i), |b| is_blank(b) || matches!(b, b',' | b'}' | b']'));
        }
    }
}

fn logfmt_field<'a>(line: &'a [u8], window: usize, mut i: usize, key: &[u8]) -> Option<&'a [u8]> {
    let w = &line[..window];
    loop {
        i = skip_blanks(w, i);
        if *w.get(i)? == b'"' {
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
        let found = &w[start..i] == key;
        i += 1;
        if found {
            return value_at(line, i, is_blank);
        }
        if w.get(i) == Some(&b'"') {
            i = string_end(w, i + 1)? + 1;
        } else {
            while w.get(i).is_some_and(|&b| !is_blank(b)) {
                i += 1;
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

/// The value at `i`: a string's content, or a bare token up to `delimiter`. An unterminated
/// string is no value.
fn value_at(line: &[u8], i: usize, delimiter: fn(u8) -> bool) -> Option<&[u8]> {
    let rest = &line[i.min(line.len())..];
    if rest.first() == Some(&b'"') {
        return string_end(rest, 1).map(|end| &rest[1..end]);
    }
    let end = rest.iter().position(|&b| delimiter(b)).unwrap_or(rest.len());
    Some(&rest[..end])
}
