//! Log levels and their spellings.

/// A normalised level; `Unknown` for an entry without a level or with one no spelling matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Level {
    Debug = 0,
    Info = 1,
    Warn = 2,
    Error = 3,
    Fatal = 4,
    Unknown = 5,
}

impl Level {
    /// The bit of this level in a set of levels.
    pub(crate) fn bit(self) -> u8 {
        1 << self as u8
    }

    /// Reads a level, case-insensitively: `trace`, `trc`, `debug`, `dbg`, `verbose`, `fine`,
    /// `finer`, `finest` are debug; `info`, `inf`, `information`, `informational`, `notice` are
    /// info; `warn`, `warning`, `wrn` are warn; `error`, `err`, `eror`, `severe` are error;
    /// `fatal`, `ftl`, `critical`, `crit`, `panic`, `dpanic`, `emerg`, `emergency`, `alert`
    /// are fatal; anything else is unknown.
    pub(crate) fn parse(s: &str) -> Self {
        const LONGEST: usize = 13; // "informational"
        let bytes = s.as_bytes();
        if bytes.is_empty() || bytes.len() > LONGEST {
            return Self::Unknown;
        }
        let mut buf = [0u8; LONGEST];
        let lower = &mut buf[..bytes.len()];
        lower.copy_from_slice(bytes);
        lower.make_ascii_lowercase();
        match &*lower {
            b"trace" | b"trc" | b"debug" | b"dbg" | b"verbose" | b"fine" | b"finer" | b"finest" => {
                Self::Debug
            }
            b"info" | b"inf" | b"information" | b"informational" | b"notice" => Self::Info,
            b"warn" | b"warning" | b"wrn" => Self::Warn,
            b"error" | b"err" | b"eror" | b"severe" => Self::Error,
            b"fatal" | b"ftl" | b"critical" | b"crit" | b"panic" | b"dpanic" | b"emerg" | b"emergency"
            | b"alert" => Self::Fatal,
            _ => Self::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings() {
        for (s, level) in [
            ("INFO", Level::Info),
            ("info", Level::Info),
            ("Information", Level::Info),
            ("notice", Level::Info),
            ("DEBUG", Level::Debug),
            ("trace", Level::Debug),
            ("dbg", Level::Debug),
            ("WARNING", Level::Warn),
            ("Warn", Level::Warn),
            ("ERR", Level::Error),
            ("error", Level::Error),
            ("SEVERE", Level::Error),
            ("CRITICAL", Level::Fatal),
            ("panic", Level::Fatal),
            ("fatal", Level::Fatal),
            ("", Level::Unknown),
            ("unknown", Level::Unknown),
            ("informational!", Level::Unknown),
            ("i", Level::Unknown),
            ("ÉRROR", Level::Unknown),
        ] {
            assert_eq!(Level::parse(s), level, "{s}");
        }
    }
}
