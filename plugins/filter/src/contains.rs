//! "Does the line contain one of these substrings?" in as few passes over the line as possible.
//!
//! One needle is a `memchr::memmem` finder. Several needles would be one memmem pass each; instead
//! each needle gets an anchor, its rarest byte by a log-text frequency guess, and one
//! `memchr3` pass finds the candidates of up to three distinct anchors, each checked in place.
//! Plugins run as Wasm without SIMD, where a scan costs about a quarter of a nanosecond per byte,
//! so for the usual health-check list (3–4 needles) this halves the work.

use memchr::memmem::Finder;

/// A set of needles, none empty.
#[derive(Debug)]
pub(crate) enum Contains {
    One(Box<Finder<'static>>),
    Many(Vec<Pass>),
}

/// One scan for up to three anchor bytes.
#[derive(Debug)]
pub(crate) struct Pass {
    anchors: Vec<u8>,
    /// Each needle with its anchor and the anchor's offset in it.
    needles: Vec<Anchored>,
}

#[derive(Debug)]
struct Anchored {
    anchor: u8,
    offset: usize,
    needle: Box<[u8]>,
}

impl Contains {
    /// The search for `needles` (none empty).
    pub(crate) fn new(needles: &[String]) -> Self {
        if let [needle] = needles {
            return Self::One(Box::new(Finder::new(needle.as_bytes()).into_owned()));
        }
        let mut passes: Vec<Pass> = Vec::new();
        for needle in needles {
            let bytes = needle.as_bytes();
            let offset = (0..bytes.len()).min_by_key(|&i| rank(bytes[i])).unwrap_or_default();
            let anchor = bytes.get(offset).copied().unwrap_or_default();
            let entry = Anchored { anchor, offset, needle: bytes.into() };
            let at = passes
                .iter()
                .position(|p| p.anchors.contains(&anchor))
                .or_else(|| passes.iter().position(|p| p.anchors.len() < 3));
            match at.map(|i| &mut passes[i]) {
                Some(pass) => {
                    if !pass.anchors.contains(&anchor) {
                        pass.anchors.push(anchor);
                    }
                    pass.needles.push(entry);
                }
                None => passes.push(Pass { anchors: vec![anchor], needles: vec![entry] }),
            }
        }
        Self::Many(passes)
    }

    /// Whether `haystack` contains one of the needles.
    pub(crate) fn is_match(&self, haystack: &[u8]) -> bool {
        match self {
            Self::One(finder) => finder.find(haystack).is_some(),
            Self::Many(passes) => passes.iter().any(|p| p.is_match(haystack)),
        }
    }
}

impl Pass {
    fn is_match(&self, haystack: &[u8]) -> bool {
        let check = |at: usize| {
            let byte = haystack[at];
            self.needles.iter().any(|n| {
                n.anchor == byte
                    && at
                        .checked_sub(n.offset)
                        .and_then(|start| haystack.get(start..start + n.needle.len()))
                        .is_some_and(|s| *s == *n.needle)
            })
        };
        match *self.anchors.as_slice() {
            [a] => memchr::memchr_iter(a, haystack).any(check),
            [a, b] => memchr::memchr2_iter(a, b, haystack).any(check),
            [a, b, c] => memchr::memchr3_iter(a, b, c, haystack).any(check),
            _ => false,
        }
    }
}

/// A guess at how common `byte` is in log lines (JSON, logfmt, text): lower is rarer.
fn rank(byte: u8) -> u8 {
    match byte {
        b' ' | b'e' | b't' | b'a' | b'o' | b'i' | b'n' | b's' | b'r' | b'"' => 250,
        b'a'..=b'z' | b'0'..=b'9' => 200,
        b':' | b',' | b'=' | b'.' | b'-' | b'_' | b'/' | b'{' | b'}' => 180,
        b'A'..=b'Z' => 100,
        0x21..=0x7e => 80,
        _ => 50,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contains(needles: &[&str], haystack: &str) -> bool {
        let needles: Vec<String> = needles.iter().map(|s| s.to_string()).collect();
        Contains::new(&needles).is_match(haystack.as_bytes())
    }

    #[test]
    fn finds_any_needle_anywhere() {
        let health = ["GET /health", "GET /ready", "kube-probe/", "health probe ok"];
        assert!(contains(&health, "GET /health"));
        assert!(contains(&health, "x GET /ready y"));
        assert!(contains(&health, "\"kube-probe/1.29\""));
        assert!(contains(&health, "the health probe ok"));
        assert!(!contains(&health, "GET /healt"));
        assert!(!contains(&health, "health probe o"));
        assert!(!contains(&health, ""));
        assert!(contains(&["ab", "b"], "b"), "the anchor at the very start");
        assert!(contains(&["xyz", "Q"], "...Q"), "and at the very end");
        assert!(contains(&["é", "日本"], "ünï日本"));
    }

    #[test]
    fn spreads_anchors_over_passes_of_three() {
        let needles: Vec<String> = ["A1", "B2", "C3", "D4", "E5"].iter().map(|s| s.to_string()).collect();
        let Contains::Many(passes) = Contains::new(&needles) else { panic!("several needles") };
        assert_eq!(passes.len(), 2);
        assert_eq!(passes[0].anchors, b"ABC");
        assert_eq!(passes[1].anchors, b"DE");
        for (needle, hay) in needles.iter().zip(["xA1", "B2y", "zC3z", "D4", "..E5.."]) {
            assert!(Contains::new(&needles).is_match(hay.as_bytes()), "{needle}");
        }
        assert!(!Contains::new(&needles).is_match(b"A2 B3 C4 D5 E1"));
    }

    #[test]
    fn agrees_with_str_contains() {
        // A small alphabet so that needles often occur, partly or wholly.
        let alphabet = b"abAB /-";
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        for _ in 0..5000 {
            let needles: Vec<String> = (0..1 + next(6))
                .map(|_| (0..1 + next(4)).map(|_| alphabet[next(alphabet.len())] as char).collect())
                .collect();
            let haystack: String = (0..next(40)).map(|_| alphabet[next(alphabet.len())] as char).collect();
            let expected = needles.iter().any(|n| haystack.contains(n.as_str()));
            assert_eq!(
                Contains::new(&needles).is_match(haystack.as_bytes()),
                expected,
                "{needles:?} in {haystack:?}"
            );
        }
    }
}
