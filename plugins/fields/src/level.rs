//! Level normalisation: the many spellings of a log level, as loggers write them, to the five
//! that sluice's other stages (and Grafana) use.

/// The normalised level of `value`, or `None` for a value that isn't a known level spelling.
///
/// Case-insensitive, after trimming ASCII whitespace (a padded `"INFO "` is info):
///
/// | spellings | level |
/// |---|---|
/// | `trace`, `trc`, `debug`, `dbg`, `d`; pino/bunyan `10`, `20` | `debug` |
/// | `info`, `inf`, `information`, `informational`, `notice`, `i`; `30` | `info` |
/// | `warn`, `wrn`, `warning`, `w`; `40` | `warn` |
/// | `error`, `err`, `eror`, `e`; `50` | `error` |
/// | `fatal`, `ftl`, `critical`, `crit`, `panic`, `emerg`, `emergency`, `alert`, `f`; `60` | `fatal` |
pub fn normalize_level(value: &str) -> Option<&'static str> {
    let v = value.trim_matches(|c: char| c.is_ascii_whitespace());
    let is = |s: &str| v.eq_ignore_ascii_case(s);
    // Dispatch on the length first: most values are rejected or matched with one comparison.
    let level = match v.len() {
        1 => match v.as_bytes()[0].to_ascii_lowercase() {
            b'd' => "debug",
            b'i' => "info",
            b'w' => "warn",
            b'e' => "error",
            b'f' => "fatal",
            _ => return None,
        },
        2 => match v {
            "10" | "20" => "debug",
            "30" => "info",
            "40" => "warn",
            "50" => "error",
            "60" => "fatal",
            _ => return None,
        },
        3 => {
            if is("dbg") || is("trc") {
                "debug"
            } else if is("inf") {
                "info"
            } else if is("wrn") {
                "warn"
            } else if is("err") {
                "error"
            } else if is("ftl") {
                "fatal"
            } else {
                return None;
            }
        }
        4 => {
            if is("info") {
                "info"
            } else if is("warn") {
                "warn"
            } else if is("eror") {
                "error"
            } else if is("crit") {
                "fatal"
            } else {
                return None;
            }
        }
        5 => {
            if is("debug") || is("trace") {
                "debug"
            } else if is("error") {
                "error"
            } else if is("fatal") || is("panic") || is("emerg") || is("alert") {
                "fatal"
            } else {
                return None;
            }
        }
        6 if is("notice") => "info",
        7 if is("warning") => "warn",
        8 if is("critical") => "fatal",
        9 if is("emergency") => "fatal",
        11 if is("information") => "info",
        13 if is("informational") => "info",
        _ => return None,
    };
    Some(level)
}

/// Applies the `lowercase` transform: `value` itself when it has no uppercase letter, else its
/// lowercase form written into `scratch`.
pub(crate) fn lowercase<'v>(value: &'v str, scratch: &'v mut String) -> &'v str {
    if value.is_ascii() {
        if !value.bytes().any(|b| b.is_ascii_uppercase()) {
            return value;
        }
        scratch.clear();
        scratch.push_str(value);
        scratch.make_ascii_lowercase();
        return scratch;
    }
    if !value.chars().any(char::is_uppercase) {
        return value;
    }
    scratch.clear();
    scratch.extend(value.chars().flat_map(char::to_lowercase));
    scratch
}
