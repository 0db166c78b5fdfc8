//! A JSON scanner that finds the wanted paths of one object without building anything: keys are
//! compared in place, values not wanted are skipped (and checked as they go), wanted values are
//! ranges of the line (strings with escapes are decoded), and the scan stops as soon as every
//! wanted field has been seen.

use sluice_fields::{Extract, Values, unescape_into};

/// The deepest nesting of objects and arrays read (serde_json's default limit too); a deeper
/// line is not parsed.
pub(crate) const MAX_DEPTH: usize = 128;

/// The wanted paths as a tree of keys: a node is a key path; `field` is set where a path ends.
#[derive(Debug, Default)]
pub(crate) struct Node {
    children: Vec<(String, Node)>,
    field: Option<usize>,
}

impl Node {
    /// Adds the dotted `path` (checked: no empty key) as field `field`.
    pub(crate) fn insert(&mut self, path: &str, field: usize) {
        let mut node = self;
        for key in path.split('.') {
            let at = match node.children.iter().position(|(k, _)| k == key) {
                Some(at) => at,
                None => {
                    node.children.push((key.to_string(), Node::default()));
                    node.children.len() - 1
                }
            };
            node = &mut node.children[at].1;
        }
        node.field = Some(field);
    }

    /// Where the object key `key` leads from here. A key with dots goes down one level per part,
    /// so `{"http.status": 200}` and `{"http": {"status": 200}}` both reach `http.status`.
    fn find(&self, key: &str) -> Option<&Node> {
        // Children are single keys: a key without dots can only match one of them exactly.
        if let Some((_, child)) = self.children.iter().find(|(k, _)| k == key) {
            return Some(child);
        }
        if !key.contains('.') {
            return None;
        }
        let mut node = self;
        for part in key.split('.') {
            node = &node.children.iter().find(|(k, _)| k == part)?.1;
        }
        Some(node)
    }
}

/// The JSON line format: the tree of wanted paths and a buffer for keys with escapes.
#[derive(Debug)]
pub(crate) struct Json {
    pub(crate) root: Node,
    key: String,
}

impl Json {
    pub(crate) fn new(root: Node) -> Self {
        Self { root, key: String::new() }
    }
}

impl Extract for Json {
    fn extract(&mut self, line: &str, values: &mut Values) -> bool {
        let mut s = Scanner { line, b: line.as_bytes(), i: 0 };
        s.ws();
        // Not an object: rejected on its first byte.
        if s.peek() != Some(b'{') {
            return false;
        }
        match s.object(&self.root, values, &mut self.key, 0) {
            Ok(Flow::Done) => true,
            Ok(Flow::More) => {
                s.ws();
                s.i == s.b.len()
            }
            Err(Bad) => false,
        }
    }
}

/// Whether to go on reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    More,
    /// Every wanted field has been seen.
    Done,
}

/// The line is not well-formed JSON (as far as it was read).
#[derive(Debug)]
struct Bad;

struct Scanner<'a> {
    line: &'a str,
    b: &'a [u8],
    i: usize,
}

/// Bytes that go into a string as they are: not `"`, `\` or a control character.
const PLAIN: [bool; 256] = {
    let mut t = [true; 256];
    let mut c = 0;
    while c < 0x20 {
        t[c] = false;
        c += 1;
    }
    t[b'"' as usize] = false;
    t[b'\\' as usize] = false;
    t
};

/// A word whose lowest set bit is in the first byte of `x` (little-endian) that is `"`, `\\` or
/// a control character; 0 if there is none. (Bits above the first such byte may be wrong: the
/// classic zero-byte test borrows across bytes, but never below the first hit.)
fn special_bytes(x: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    zero(x ^ (ONES * u64::from(b'"')))
        | zero(x ^ (ONES * u64::from(b'\\')))
        | (x.wrapping_sub(ONES * 0x20) & !x & HIGH)
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    /// The object at `self.i` (a `{`), whose keys are looked up under `node`.
    fn object(
        &mut self,
        node: &Node,
        values: &mut Values,
        key: &mut String,
        depth: usize,
    ) -> Result<Flow, Bad> {
        if depth >= MAX_DEPTH {
            return Err(Bad);
        }
        self.i += 1;
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(Flow::More);
        }
        loop {
            if self.peek() != Some(b'"') {
                return Err(Bad);
            }
            let (start, end, escaped) = self.string()?;
            let target = if escaped {
                key.clear();
                unescape_into(&self.line[start..end], key);
                node.find(key)
            } else {
                node.find(&self.line[start..end])
            };
            self.ws();
            self.expect(b':')?;
            self.ws();
            match target {
                Some(target) => {
                    if self.wanted(target, values, key, depth)? == Flow::Done {
                        return Ok(Flow::Done);
                    }
                }
                None => self.skip(depth + 1)?,
            }
            self.ws();
            match self.bump() {
                Some(b',') => self.ws(),
                Some(b'}') => return Ok(Flow::More),
                _ => return Err(Bad),
            }
        }
    }

    /// A value whose key path is `node` in the tree: stored if a path ends there, searched if
    /// paths go on below it and it is an object, skipped otherwise.
    fn wanted(
        &mut self,
        node: &Node,
        values: &mut Values,
        key: &mut String,
        depth: usize,
    ) -> Result<Flow, Bad> {
        let start = self.i;
        match self.peek() {
            Some(b'{') if !node.children.is_empty() => {
                if self.object(node, values, key, depth + 1)? == Flow::Done {
                    return Ok(Flow::Done);
                }
                if let Some(field) = node.field {
                    values.set(field, start..self.i);
                }
            }
            Some(b'"') => {
                let (s, e, escaped) = self.string()?;
                match node.field {
                    Some(field) if escaped => values.set_unescaped(field, &self.line[s..e]),
                    Some(field) => values.set(field, s..e),
                    None => {}
                }
            }
            Some(b'n') => {
                self.literal(b"null")?;
                if let Some(field) = node.field {
                    values.set_null(field);
                }
            }
            _ => {
                self.skip(depth + 1)?;
                if let Some(field) = node.field {
                    values.set(field, start..self.i);
                }
            }
        }
        Ok(if values.all_found() { Flow::Done } else { Flow::More })
    }

    /// Skips the value at `self.i`, checking it; `depth` is the nesting of a container there.
    fn skip(&mut self, depth: usize) -> Result<(), Bad> {
        match self.peek() {
            Some(b'"') => self.string().map(drop),
            Some(b'{') => {
                if depth >= MAX_DEPTH {
                    return Err(Bad);
                }
                self.i += 1;
                self.ws();
                if self.peek() == Some(b'}') {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    if self.peek() != Some(b'"') {
                        return Err(Bad);
                    }
                    self.string()?;
                    self.ws();
                    self.expect(b':')?;
                    self.ws();
                    self.skip(depth + 1)?;
                    self.ws();
                    match self.bump() {
                        Some(b',') => self.ws(),
                        Some(b'}') => return Ok(()),
                        _ => return Err(Bad),
                    }
                }
            }
            Some(b'[') => {
                if depth >= MAX_DEPTH {
                    return Err(Bad);
                }
                self.i += 1;
                self.ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    self.skip(depth + 1)?;
                    self.ws();
                    match self.bump() {
                        Some(b',') => self.ws(),
                        Some(b']') => return Ok(()),
                        _ => return Err(Bad),
                    }
                }
            }
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(Bad),
        }
    }

    /// The string at `self.i` (a `"`): the range of its contents and whether it has escapes.
    fn string(&mut self) -> Result<(usize, usize, bool), Bad> {
        let b = self.b;
        let start = self.i + 1;
        let mut i = start;
        let mut escaped = false;
        loop {
            // Eight bytes at a time while none of them needs a look.
            while let Some(chunk) = b.get(i..i + 8).and_then(|c| <[u8; 8]>::try_from(c).ok()) {
                let special = special_bytes(u64::from_le_bytes(chunk));
                if special != 0 {
                    i += (special.trailing_zeros() / 8) as usize;
                    break;
                }
                i += 8;
            }
            while let Some(&c) = b.get(i)
                && PLAIN[usize::from(c)]
            {
                i += 1;
            }
            match b.get(i) {
                Some(b'"') => {
                    self.i = i + 1;
                    return Ok((start, i, escaped));
                }
                Some(b'\\') => {
                    escaped = true;
                    match b.get(i + 1) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
                        Some(b'u')
                            if b.get(i + 2..i + 6).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) =>
                        {
                            i += 6;
                        }
                        _ => return Err(Bad),
                    }
                }
                // A control character, or the end of the line.
                _ => return Err(Bad),
            }
        }
    }

    /// A number, by JSON's grammar: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    fn number(&mut self) -> Result<(), Bad> {
        let b = self.b;
        let mut i = self.i;
        let digits = |mut i: usize| {
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            i
        };
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        match b.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => i = digits(i + 1),
            _ => return Err(Bad),
        }
        if b.get(i) == Some(&b'.') {
            let end = digits(i + 1);
            if end == i + 1 {
                return Err(Bad);
            }
            i = end;
        }
        if let Some(b'e' | b'E') = b.get(i) {
            i += 1;
            if let Some(b'+' | b'-') = b.get(i) {
                i += 1;
            }
            let end = digits(i);
            if end == i {
                return Err(Bad);
            }
            i = end;
        }
        self.i = i;
        Ok(())
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), Bad> {
        if self.b.get(self.i..self.i + word.len()) == Some(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(Bad)
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), Bad> {
        if self.bump() == Some(c) { Ok(()) } else { Err(Bad) }
    }

    fn bump(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The word trick finds exactly the first byte the table calls special, whatever the
    /// bytes around it.
    #[test]
    fn special_bytes_finds_the_first_special_byte() {
        let first = |w: [u8; 8]| w.iter().position(|&c| !PLAIN[usize::from(c)]);
        for filler in [b'a', b' ', 0x7f, 0x80, 0xc3, 0xff, 0x21, 0x5d, 0x23] {
            for at in 0..8 {
                for v in 0..=255u8 {
                    for after in [filler, 0, b'"', b'\\', 0x1f, 0x20] {
                        let mut w = [filler; 8];
                        w[at] = v;
                        if at + 1 < 8 {
                            w[at + 1] = after;
                        }
                        let got = special_bytes(u64::from_le_bytes(w));
                        let got = (got != 0).then(|| (got.trailing_zeros() / 8) as usize);
                        assert_eq!(got, first(w), "{w:?}");
                    }
                }
            }
        }
    }
}
