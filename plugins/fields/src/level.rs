//! Level normalisation: the many spellings of a log level, as loggers write them, to the five
//! that sluice's other stages (and Grafana) use.

/// A normalised level: the five that sluice's stages (and Grafana) use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
    Fatal,
}

impl Level {
    /// Every level, in order of severity.
    pub const ALL: [Level; 5] = [Level::Debug, Level::Info, Level::Warn, Level::Error, Level::Fatal];

    /// The normalised spelling: `debug`, `info`, `warn`, `error` or `fatal`.
    pub fn as_str(self) -> &'static str {
        ["debug", "info", "warn", "error", "fatal"][self as usize]
    }
}

/// The level a field, label or metadata value spells, case-insensitively, after trimming ASCII
/// whitespace; `None` for a value that is no level spelling. The one table every built-in uses:
///
/// | spellings | level |
/// |---|---|
/// | `trace`, `trc`, `debug`, `dbg`, `verbose`, `fine`, `finer`, `finest`, `t`, `d`; pino/bunyan `10`, `20` | `debug` |
/// | `info`, `inf`, `information`, `informational`, `notice`, `i`; `30` | `info` |
/// | `warn`, `wrn`, `warning`, `w`; `40` | `warn` |
/// | `error`, `err`, `eror`, `severe`, `e`; `50` | `error` |
/// | `fatal`, `ftl`, `critical`, `crit`, `panic`, `dpanic`, `pnc`, `emerg`, `emergency`, `alert`, `f`; `60` | `fatal` |
pub fn level_of(value: &[u8]) -> Option<Level> {
    const LONGEST: usize = "informational".len();
    let value = value.trim_ascii();
    match value {
        [b] => match b.to_ascii_lowercase() {
            b't' | b'd' => Some(Level::Debug),
            b'i' => Some(Level::Info),
            b'w' => Some(Level::Warn),
            b'e' => Some(Level::Error),
            b'f' => Some(Level::Fatal),
            _ => None,
        },
        b"10" | b"20" => Some(Level::Debug),
        b"30" => Some(Level::Info),
        b"40" => Some(Level::Warn),
        b"50" => Some(Level::Error),
        b"60" => Some(Level::Fatal),
        _ if (3..=LONGEST).contains(&value.len()) => {
            let mut buf = [0u8; LONGEST];
            for (d, s) in buf.iter_mut().zip(value) {
                *d = s.to_ascii_lowercase();
            }
            match &buf[..value.len()] {
                b"trace" | b"trc" | b"debug" | b"dbg" | b"verbose" | b"fine" | b"finer" | b"finest" => {
                    Some(Level::Debug)
                }
                b"info" | b"inf" | b"information" | b"informational" | b"notice" => Some(Level::Info),
                b"warn" | b"warning" | b"wrn" => Some(Level::Warn),
                b"error" | b"err" | b"eror" | b"severe" => Some(Level::Error),
                b"fatal" | b"ftl" | b"critical" | b"crit" | b"panic" | b"dpanic" | b"pnc" | b"emerg"
                | b"emergency" | b"alert" => Some(Level::Fatal),
                _ => None,
            }
        }
        _ => None,
    }
}

/// [`level_of`] as the normalised spelling: what the `level` transform writes.
pub fn normalize_level(value: &str) -> Option<&'static str> {
    level_of(value.as_bytes()).map(Level::as_str)
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
