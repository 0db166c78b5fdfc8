//! Object keys: a template such as `tenant={tenant}/dt={date}/hour={hour}` rendered for a
//! tenant, a stream's labels and an hour, to which the sink adds a unique file name.
//!
//! Values are made safe for keys and paths: every byte outside `[A-Za-z0-9._-]` is written as
//! `%XX` (so a `/` in a label value cannot add a directory level), a missing label is written
//! as `__none__`, and an empty value as `__empty__`.

use crate::model::LabelSet;

/// Written for `{label:NAME}` when the stream has no such label.
pub const MISSING_LABEL: &str = "__none__";
/// Written for `{tenant}` or `{label:NAME}` when the value is empty.
pub const EMPTY_VALUE: &str = "__empty__";

/// A parsed key template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTemplate {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Tenant,
    Date,
    Year,
    Month,
    Day,
    Hour,
    Label(String),
}

/// The calendar hour an entry falls in (UTC), from which the time placeholders render.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hour(pub i64);

impl Hour {
    const NANOS: i64 = 3_600_000_000_000;

    /// The hour of a timestamp in nanoseconds (times before 1970 fall in its first hour).
    pub fn of(timestamp_ns: i64) -> Self {
        Self(timestamp_ns.max(0) / Self::NANOS)
    }

    /// `(year, month, day, hour)` in UTC.
    pub fn civil(self) -> (i64, u32, u32, u32) {
        let days = self.0.div_euclid(24);
        let hour = self.0.rem_euclid(24) as u32;
        let (y, m, d) = civil_from_days(days);
        (y, m, d, hour)
    }
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl KeyTemplate {
    /// Parses a template; the error names the problem.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.starts_with('/') || text.ends_with('/') {
            return Err(format!("`{text}`: must not start or end with `/`"));
        }
        if text.split('/').any(str::is_empty) {
            return Err(format!("`{text}`: has an empty path segment (`//`)"));
        }
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_string()));
            }
            let close = rest[open..].find('}').ok_or_else(|| format!("`{text}`: `{{` without `}}`"))? + open;
            let name = &rest[open + 1..close];
            parts.push(match name {
                "tenant" => Part::Tenant,
                "date" => Part::Date,
                "year" => Part::Year,
                "month" => Part::Month,
                "day" => Part::Day,
                "hour" => Part::Hour,
                _ => match name.strip_prefix("label:") {
                    Some(label) if crate::decode::is_valid_label_name(label) => Part::Label(label.to_string()),
                    Some(label) => return Err(format!("`{{label:{label}}}`: `{label}` is not a label name")),
                    None => {
                        return Err(format!(
                            "unknown placeholder `{{{name}}}` (known: tenant, date, year, month, day, hour, label:NAME)"
                        ));
                    }
                },
            });
            rest = &rest[close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("`{text}`: `}}` without `{{`"));
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        Ok(Self { parts })
    }

    /// Whether the key depends on a stream's labels (else streams of a tenant and hour share it).
    pub fn uses_labels(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Label(_)))
    }

    /// The key for a tenant, a stream's labels and an hour.
    pub fn render(&self, tenant: &str, labels: &LabelSet, hour: Hour) -> String {
        let (year, month, day, h) = hour.civil();
        let mut out = String::with_capacity(64);
        for part in &self.parts {
            match part {
                Part::Literal(l) => out.push_str(l),
                Part::Tenant => push_value(&mut out, Some(tenant)),
                Part::Date => out.push_str(&format!("{year:04}-{month:02}-{day:02}")),
                Part::Year => out.push_str(&format!("{year:04}")),
                Part::Month => out.push_str(&format!("{month:02}")),
                Part::Day => out.push_str(&format!("{day:02}")),
                Part::Hour => out.push_str(&format!("{h:02}")),
                Part::Label(name) => push_value(&mut out, labels.get(name)),
            }
        }
        out
    }
}

fn push_value(out: &mut String, value: Option<&str>) {
    match value {
        None => out.push_str(MISSING_LABEL),
        Some("") => out.push_str(EMPTY_VALUE),
        Some(v) => {
            // `.` and `..` would read as path steps, which stores refuse (and a directory store
            // would follow): a value of dots alone has every dot escaped.
            let dots_only = v.bytes().all(|b| b == b'.');
            for b in v.bytes() {
                if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-') || (b == b'.' && !dots_only) {
                    out.push(b as char);
                } else {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> LabelSet {
        LabelSet::new(pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect())
    }

    #[test]
    fn renders_the_default_and_every_placeholder() {
        // 2024-02-29T23:59:59Z
        let hour = Hour::of(1_709_251_199_000_000_000);
        let default = KeyTemplate::parse("tenant={tenant}/dt={date}/hour={hour}").expect("parses");
        assert_eq!(default.render("team-a", &labels(&[]), hour), "tenant=team-a/dt=2024-02-29/hour=23");
        assert!(!default.uses_labels());
        let all =
            KeyTemplate::parse("logs/{year}/{month}/{day}/{label:app}-{label:env}/{tenant}").expect("parses");
        assert!(all.uses_labels());
        assert_eq!(
            all.render("a*b", &labels(&[("app", "web/api x"), ("env", "")]), hour),
            "logs/2024/02/29/web%2Fapi%20x-__empty__/a%2Ab"
        );
        assert_eq!(all.render("t", &labels(&[]), Hour::of(0)), "logs/1970/01/01/__none__-__none__/t");
    }

    #[test]
    fn values_of_dots_alone_never_make_a_path_step() {
        let key = KeyTemplate::parse("x/{label:app}/{date}").expect("parses");
        let hour = Hour::of(0);
        assert_eq!(key.render("t", &labels(&[("app", ".")]), hour), "x/%2E/1970-01-01");
        assert_eq!(key.render("t", &labels(&[("app", "..")]), hour), "x/%2E%2E/1970-01-01");
        assert_eq!(key.render("t", &labels(&[("app", "a.b")]), hour), "x/a.b/1970-01-01", "other dots stay");
    }

    #[test]
    fn civil_dates_match_known_days() {
        for (ns, expected) in [
            (0, (1970, 1, 1, 0)),
            (951_782_400_000_000_000, (2000, 2, 29, 0)),
            (4_107_542_400_000_000_000 + 3_600_000_000_000 * 5, (2100, 3, 1, 5)),
            (-5, (1970, 1, 1, 0)),
        ] {
            assert_eq!(Hour::of(ns).civil(), expected, "{ns}");
        }
    }

    #[test]
    fn bad_templates_are_named() {
        for (text, message) in [
            ("dt={date", "`{` without `}`"),
            ("dt={when}", "unknown placeholder `{when}`"),
            ("{label:a-b}", "`a-b` is not a label name"),
            ("/x/{date}", "must not start or end with `/`"),
            ("x//{date}", "empty path segment"),
            ("x}", "`}` without `{`"),
        ] {
            let e = KeyTemplate::parse(text).expect_err(text);
            assert!(e.contains(message), "{text}: {e}");
        }
    }
}
