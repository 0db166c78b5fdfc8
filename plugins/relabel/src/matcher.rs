//! Fully anchored regexes with Prometheus' semantics, and `$1` / `${1}` / `${name}` templates
//! expanded the way Go's `Regexp.ExpandString` does (which is what Prometheus uses).

use regex::{CaptureLocations, Regex};

/// The regex a rule gets when it sets none.
pub(crate) const DEFAULT_REGEX: &str = "(.*)";

/// A regex matched against a whole value, as Prometheus anchors it: `^(?s:REGEX)$`.
#[derive(Debug)]
pub(crate) enum Matcher {
    /// `(.*)`, the default: matches everything, group 1 is the whole value. No regex engine.
    All,
    Regex {
        regex: Regex,
        locations: CaptureLocations,
    },
}

impl Matcher {
    /// Compiles `source`; the error is a one-line reason.
    pub(crate) fn new(source: &str) -> Result<Self, String> {
        if source == DEFAULT_REGEX {
            return Ok(Self::All);
        }
        let regex = anchored(source)?;
        let locations = regex.capture_locations();
        Ok(Self::Regex { regex, locations })
    }

    /// Whether the whole of `value` matches.
    pub(crate) fn is_match(&self, value: &str) -> bool {
        match self {
            Self::All => true,
            Self::Regex { regex, .. } => regex.is_match(value),
        }
    }

    /// Matches the whole of `value` and returns its groups, or `None`.
    pub(crate) fn captures(&mut self, value: &str) -> Option<Groups<'_>> {
        match self {
            Self::All => Some(Groups::All(value.len())),
            Self::Regex { regex, locations } => {
                regex.captures_read(locations, value)?;
                Some(Groups::Locations(locations))
            }
        }
    }

    /// The index of the group called `name`.
    fn group_index(&self, name: &str) -> Option<usize> {
        match self {
            Self::All => None,
            Self::Regex { regex, .. } => regex.capture_names().position(|n| n == Some(name)),
        }
    }

    /// The number of groups, the whole match (group 0) included.
    fn group_count(&self) -> usize {
        match self {
            Self::All => 2,
            Self::Regex { regex, .. } => regex.captures_len(),
        }
    }
}

/// Compiles `^(?s:source)$`; the error is the regex crate's reason, on one line.
pub(crate) fn anchored(source: &str) -> Result<Regex, String> {
    Regex::new(&format!("^(?s:{source})$")).map_err(|e| reason(&e))
}

/// The last line of a regex error without its `error: ` prefix: the parser's messages draw the
/// pattern with a caret on the lines before, which does not fit a one-line config error.
fn reason(e: &regex::Error) -> String {
    let text = e.to_string();
    let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or(&text);
    last.trim().trim_start_matches("error: ").to_string()
}

/// The groups of a match: byte ranges into the matched value.
#[derive(Debug)]
pub(crate) enum Groups<'a> {
    /// [`Matcher::All`]: groups 0 and 1 are the whole value of this length.
    All(usize),
    Locations(&'a CaptureLocations),
}

impl Groups<'_> {
    fn get(&self, i: usize) -> Option<(usize, usize)> {
        match self {
            Self::All(len) => (i <= 1).then_some((0, *len)),
            Self::Locations(l) => l.get(i),
        }
    }
}

/// A replacement template, resolved against one regex's groups at init.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    pieces: Vec<Piece>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    /// A group's text; a group that did not take part in the match gives nothing.
    Group(usize),
}

impl Template {
    /// Parses `template` as Go's `Regexp.Expand` reads it: `$$` is a `$`; `$name` takes the
    /// longest run of letters, digits and `_`; `${name}` is braced; an all-digit name is a group
    /// number (no leading zeros); a name or number the regex lacks expands to nothing; a `$`
    /// that starts no valid reference is kept as is.
    pub(crate) fn parse(template: &str, matcher: &Matcher) -> Self {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = template;
        while let Some(at) = rest.find('$') {
            literal.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            if let Some(tail) = after.strip_prefix('$') {
                literal.push('$');
                rest = tail;
                continue;
            }
            let Some((name, tail)) = reference(after) else {
                literal.push('$');
                rest = after;
                continue;
            };
            let group = match number(name) {
                Some(n) => (n < matcher.group_count()).then_some(n),
                None => matcher.group_index(name),
            };
            if let Some(group) = group {
                if !literal.is_empty() {
                    pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                }
                pieces.push(Piece::Group(group));
            }
            rest = tail;
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        Self { pieces }
    }

    /// The template's text when it refers to no group.
    pub(crate) fn as_literal(&self) -> Option<&str> {
        match self.pieces.as_slice() {
            [] => Some(""),
            [Piece::Literal(s)] => Some(s),
            _ => None,
        }
    }

    /// Appends the expansion for a match of `value` to `out`.
    pub(crate) fn expand(&self, value: &str, groups: &Groups<'_>, out: &mut String) {
        for piece in &self.pieces {
            match piece {
                Piece::Literal(s) => out.push_str(s),
                Piece::Group(i) => {
                    if let Some((start, end)) = groups.get(*i) {
                        out.push_str(&value[start..end]);
                    }
                }
            }
        }
    }
}

/// The name of a `$` reference at the start of `s` (after the `$`) and what follows it.
fn reference(s: &str) -> Option<(&str, &str)> {
    let (braced, body) = match s.strip_prefix('{') {
        Some(body) => (true, body),
        None => (false, s),
    };
    let end = body.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(body.len());
    if end == 0 {
        return None;
    }
    let (name, tail) = body.split_at(end);
    if braced {
        return tail.strip_prefix('}').map(|tail| (name, tail));
    }
    Some((name, tail))
}

/// An all-digit reference without a leading zero, as Go reads group numbers.
fn number(name: &str) -> Option<usize> {
    if !name.bytes().all(|b| b.is_ascii_digit()) || (name.len() > 1 && name.starts_with('0')) {
        return None;
    }
    name.parse().ok().filter(|n| *n < 100_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(regex: &str, template: &str, value: &str) -> Option<String> {
        let mut matcher = Matcher::new(regex).expect("regex");
        let template = Template::parse(template, &matcher);
        let groups = matcher.captures(value)?;
        let mut out = String::new();
        template.expand(value, &groups, &mut out);
        Some(out)
    }

    #[test]
    fn expands_like_go() {
        assert_eq!(expand("(.*)", "$1", "a;b").as_deref(), Some("a;b"));
        assert_eq!(expand("(.*)", "x-${1}-$0", "v").as_deref(), Some("x-v-v"));
        assert_eq!(expand("(a)(b)?", "[$2]", "a").as_deref(), Some("[]"), "an unmatched group is empty");
        assert_eq!(
            expand("(?P<ns>[a-z]+)/(?P<app>.+)", "${app}.${ns}", "prod/api").as_deref(),
            Some("api.prod")
        );
        assert_eq!(expand("(x)", "$1x", "x").as_deref(), Some(""), "`$1x` names group `1x`, which is absent");
        assert_eq!(expand("(x)", "${1}x", "x").as_deref(), Some("xx"));
        assert_eq!(expand("(x)", "$$1 costs $", "x").as_deref(), Some("$1 costs $"));
        assert_eq!(expand("(x)", "${1", "x").as_deref(), Some("${1"), "an unclosed brace is literal");
        assert_eq!(expand("(x)", "$-", "x").as_deref(), Some("$-"));
        assert_eq!(expand("(x)", "$01", "x").as_deref(), Some(""), "no leading zeros: a name, absent");
        assert_eq!(expand("(x)", "$9", "x").as_deref(), Some(""), "out of range");
        assert_eq!(expand("(x)", "${nope}", "x").as_deref(), Some(""));
        assert_eq!(expand("(x)", "naïve ${1}é", "x").as_deref(), Some("naïve xé"));
    }

    #[test]
    fn anchors_and_matches_newlines() {
        assert_eq!(expand("b", "$0", "abc"), None, "fully anchored");
        assert_eq!(expand("a|b", "$0", "b").as_deref(), Some("b"), "alternation stays inside the anchors");
        assert_eq!(expand("a.c", "$0", "a\nc").as_deref(), Some("a\nc"), "`.` matches a newline");
        assert!(Matcher::new("(.*)").expect("regex").is_match("x\ny"));
        assert!(!Matcher::new("x").expect("regex").is_match("xx"));
    }

    #[test]
    fn literal_templates() {
        let m = Matcher::All;
        assert_eq!(Template::parse("team-a", &m).as_literal(), Some("team-a"));
        assert_eq!(Template::parse("", &m).as_literal(), Some(""));
        assert_eq!(Template::parse("$$", &m).as_literal(), Some("$"));
        assert_eq!(Template::parse("$9", &m).as_literal(), Some(""), "refers to no existing group");
        assert_eq!(Template::parse("$1", &m).as_literal(), None);
    }

    #[test]
    fn regex_errors_fit_on_one_line() {
        assert_eq!(Matcher::new("(").err().as_deref(), Some("unclosed group"));
        assert_eq!(
            Matcher::new("a{2,1}").err().as_deref(),
            Some("invalid repetition count range, the start must be <= the end")
        );
    }
}
