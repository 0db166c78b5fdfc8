//! Routing: which routes a stream belongs to, from its tenant and labels.
//!
//! Routes are evaluated in order; the first that matches wins unless it says `continue`, in
//! which case later routes are tried too. A stream that no route takes goes to the default
//! route. Selectors use Loki's stream-selector syntax (`{app="api", env!="dev", pod=~"web-.*"}`)
//! with Prometheus semantics: regexes are anchored, and an absent label has the value "".

use std::fmt;

use regex::Regex;

use crate::config::{self, Config};
use crate::model::LabelSet;

/// A compiled `{…}` stream selector.
#[derive(Debug, Clone)]
pub struct Selector {
    matchers: Vec<Matcher>,
}

#[derive(Debug, Clone)]
struct Matcher {
    name: String,
    op: MatchOp,
}

#[derive(Debug, Clone)]
enum MatchOp {
    Eq(String),
    Ne(String),
    Re(Regex),
    NotRe(Regex),
}

impl Selector {
    /// Parses a selector; the error says what is wrong and where (byte offset).
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        Parser { text, pos: 0 }.selector()
    }

    /// Whether a stream with `labels` is selected.
    pub fn matches(&self, labels: &LabelSet) -> bool {
        self.matchers.iter().all(|m| {
            let value = labels.get(&m.name).unwrap_or("");
            match &m.op {
                MatchOp::Eq(v) => value == v,
                MatchOp::Ne(v) => value != v,
                MatchOp::Re(r) => r.is_match(value),
                MatchOp::NotRe(r) => !r.is_match(value),
            }
        })
    }
}

/// Why a selector does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid stream selector at offset {offset}: {message}")]
pub struct SelectorError {
    pub offset: usize,
    pub message: String,
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn fail<T>(&self, message: impl Into<String>) -> Result<T, SelectorError> {
        Err(SelectorError { offset: self.pos, message: message.into() })
    }

    fn rest(&self) -> &str {
        &self.text[self.pos..]
    }

    fn skip_ws(&mut self) {
        let trimmed = self.rest().trim_start();
        self.pos = self.text.len() - trimmed.len();
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_ws();
        if self.rest().starts_with(token) {
            self.pos += token.len();
            true
        } else {
            false
        }
    }

    fn selector(mut self) -> Result<Selector, SelectorError> {
        if !self.eat("{") {
            return self.fail("expected `{`");
        }
        let mut matchers = Vec::new();
        if !self.eat("}") {
            loop {
                matchers.push(self.matcher()?);
                if self.eat("}") {
                    break;
                }
                if !self.eat(",") {
                    return self.fail("expected `,` or `}` after a matcher");
                }
            }
        }
        self.skip_ws();
        if !self.rest().is_empty() {
            return self.fail("unexpected text after `}`");
        }
        Ok(Selector { matchers })
    }

    fn matcher(&mut self) -> Result<Matcher, SelectorError> {
        self.skip_ws();
        let name_len = self
            .rest()
            .bytes()
            .enumerate()
            .take_while(|&(i, b)| b == b'_' || b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit()))
            .count();
        if name_len == 0 {
            return self.fail("expected a label name ([a-zA-Z_][a-zA-Z0-9_]*)");
        }
        let name = self.rest()[..name_len].to_string();
        self.pos += name_len;
        // Longest operators first, so `=~` is not read as `=`.
        let op = ["=~", "!~", "!=", "="].into_iter().find(|op| self.eat(op));
        let Some(op) = op else { return self.fail(format!("expected =, !=, =~ or !~ after `{name}`")) };
        let value = self.string()?;
        let regex = |p: &Self| {
            Regex::new(&format!("^(?:{value})$"))
                .or_else(|e| p.fail(format!("invalid regular expression for `{name}`: {e}")))
        };
        let op = match op {
            "=" => MatchOp::Eq(value.clone()),
            "!=" => MatchOp::Ne(value.clone()),
            "=~" => MatchOp::Re(regex(self)?),
            _ => MatchOp::NotRe(regex(self)?),
        };
        Ok(Matcher { name, op })
    }

    /// A double-quoted or back-quoted string with Go escapes (`\"`, `\\`, `\n`, `\t`, `\uXXXX`).
    fn string(&mut self) -> Result<String, SelectorError> {
        self.skip_ws();
        let mut chars = self.rest().char_indices();
        let quote = match chars.next() {
            Some((_, q @ ('"' | '`'))) => q,
            _ => return self.fail("expected a quoted value"),
        };
        let mut out = String::new();
        while let Some((i, c)) = chars.next() {
            match c {
                c if c == quote => {
                    self.pos += i + 1;
                    return Ok(out);
                }
                '\\' if quote == '"' => {
                    let escaped = match chars.next().map(|(_, c)| c) {
                        Some('n') => '\n',
                        Some('t') => '\t',
                        Some('r') => '\r',
                        Some(c @ ('"' | '\\' | '\'')) => c,
                        Some('u') => {
                            let hex: String = chars.by_ref().take(4).map(|(_, c)| c).collect();
                            match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                                Some(c) if hex.len() == 4 => c,
                                _ => return self.fail(format!("invalid escape `\\u{hex}`")),
                            }
                        }
                        Some(c) => return self.fail(format!("unknown escape `\\{c}`")),
                        None => break,
                    };
                    out.push(escaped);
                }
                c => out.push(c),
            }
        }
        self.fail("unterminated string")
    }
}

/// The routes of a configuration, compiled.
#[derive(Debug)]
pub struct Router {
    routes: Vec<Route>,
    default: Route,
}

/// One compiled route.
#[derive(Debug)]
pub struct Route {
    /// Name in metrics and logs.
    pub name: String,
    tenants: Vec<String>,
    selector: Option<Selector>,
    /// Indices into the sink list the router was built with.
    pub sinks: Vec<usize>,
    continue_matching: bool,
}

/// A configuration that does not compile into a router (`Config::validate` catches these first).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RouterError(String);

impl Router {
    /// Compiles the routes of `config`; `sink_names` fixes the order sinks are numbered in.
    pub fn new(config: &Config, sink_names: &[String]) -> Result<Self, RouterError> {
        let index = |route: &str, names: &[String]| {
            names
                .iter()
                .map(|n| {
                    sink_names
                        .iter()
                        .position(|s| s == n)
                        .ok_or_else(|| RouterError(format!("{route}: unknown sink `{n}`")))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let mut routes = Vec::new();
        for (i, r) in config.routes.iter().enumerate() {
            let name = config::route_name(i, r);
            let selector = r
                .selector
                .as_deref()
                .map(Selector::parse)
                .transpose()
                .map_err(|e| RouterError(format!("routes[{i}].selector: {e}")))?;
            let sinks = index(&name, &r.sinks)?;
            routes.push(Route {
                name,
                tenants: r.tenants.clone(),
                selector,
                sinks,
                continue_matching: r.continue_matching,
            });
        }
        let default_sinks = match &config.default_route {
            Some(d) => index("default_route", &d.sinks)?,
            None => (0..sink_names.len()).collect(),
        };
        let default = Route {
            name: "default".into(),
            tenants: Vec::new(),
            selector: None,
            sinks: default_sinks,
            continue_matching: false,
        };
        Ok(Self { routes, default })
    }

    /// Indices (into [`Router::route`]) of the routes a stream goes to, in order; the default
    /// route's index is the number of configured routes.
    pub fn select(&self, tenant: &str, labels: &LabelSet, out: &mut Vec<usize>) {
        out.clear();
        for (i, r) in self.routes.iter().enumerate() {
            let tenant_ok = r.tenants.is_empty() || r.tenants.iter().any(|t| t == tenant);
            if tenant_ok && r.selector.as_ref().is_none_or(|s| s.matches(labels)) {
                out.push(i);
                if !r.continue_matching {
                    return;
                }
            }
        }
        if out.is_empty() {
            out.push(self.routes.len());
        }
    }

    /// The route with index `i` as returned by [`Router::select`].
    pub fn route(&self, i: usize) -> &Route {
        self.routes.get(i).unwrap_or(&self.default)
    }

    /// Number of routes including the default one.
    pub fn len(&self) -> usize {
        self.routes.len() + 1
    }

    /// Never true: the default route always exists.
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(p: &[(&str, &str)]) -> LabelSet {
        LabelSet::new(p.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect())
    }

    #[test]
    fn selector_operators_follow_prometheus_semantics() {
        let l = labels(&[("namespace", "airflow"), ("app", "ml-train")]);
        let yes = [
            r#"{namespace="airflow"}"#,
            r#"{ namespace = "airflow" , app =~ "ml-.*" }"#,
            r#"{app!="web"}"#,
            r#"{app!~"web|api"}"#,
            r#"{missing=""}"#,
            r#"{missing!~".+"}"#,
            "{app=~`ml-\\w+`}",
            "{}",
        ];
        for s in yes {
            assert!(Selector::parse(s).expect(s).matches(&l), "{s} should match");
        }
        let no = [r#"{namespace="air"}"#, r#"{app=~"ml"}"#, r#"{app!~"ml-.*"}"#, r#"{missing!=""}"#];
        for s in no {
            assert!(!Selector::parse(s).expect(s).matches(&l), "{s} should not match (regex anchored)");
        }
    }

    #[test]
    fn selector_string_escapes() {
        let l = labels(&[("msg", "a\"b\\c\n\u{e9}")]);
        assert!(Selector::parse(r#"{msg="a\"b\\c\n\u00e9"}"#).expect("parses").matches(&l));
    }

    #[test]
    fn selector_errors_say_where() {
        let cases = [
            ("app=\"x\"", 0, "expected `{`"),
            ("{app=\"x\"", 8, "expected `,` or `}`"),
            ("{1app=\"x\"}", 1, "label name"),
            ("{app~\"x\"}", 4, "expected =, !=, =~ or !~"),
            ("{app=x}", 5, "quoted value"),
            ("{app=\"x}", 5, "unterminated"),
            ("{app=~\"(\"}", 9, "invalid regular expression"),
            ("{app=\"x\"} junk", 10, "unexpected text"),
            (r#"{app="\q"}"#, 5, "unknown escape"),
        ];
        for (text, offset, message) in cases {
            let e = Selector::parse(text).expect_err(text);
            assert!(e.message.contains(message), "{text}: {e}");
            assert_eq!(e.offset, offset, "{text}: {e}");
        }
    }

    #[test]
    fn first_match_wins_unless_continue_and_default_catches_the_rest() {
        let text = r#"
sinks: { a: { type: archive }, b: { type: archive }, c: { type: archive } }
routes:
  - { name: ml, selector: '{app=~"ml-.*"}', sinks: [a], continue: true }
  - { name: airflow, selector: '{namespace="airflow"}', sinks: [b] }
  - { name: never, selector: '{namespace="airflow"}', sinks: [c] }
  - { name: team-x, tenants: [x], sinks: [c] }
default_route: { sinks: [a, b] }
"#;
        let config = Config::parse(text, |_| None).expect("parses");
        let names: Vec<String> = config.sinks.keys().cloned().collect();
        let router = Router::new(&config, &names).expect("compiles");
        let mut out = Vec::new();
        let route_names =
            |out: &[usize]| out.iter().map(|&i| router.route(i).name.clone()).collect::<Vec<_>>();

        router.select("t", &labels(&[("namespace", "airflow"), ("app", "ml-x")]), &mut out);
        assert_eq!(route_names(&out), ["ml", "airflow"]);
        router.select("t", &labels(&[("namespace", "other"), ("app", "ml-x")]), &mut out);
        assert_eq!(route_names(&out), ["ml"]);
        router.select("x", &labels(&[("namespace", "other")]), &mut out);
        assert_eq!(route_names(&out), ["team-x"]);
        router.select("y", &labels(&[("namespace", "other")]), &mut out);
        assert_eq!(route_names(&out), ["default"]);
        assert_eq!(router.route(out[0]).sinks, [0, 1]);
    }
}
