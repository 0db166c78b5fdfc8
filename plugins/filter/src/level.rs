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

    /// Reads a level with the spellings every built-in shares ([`sluice_fields::level_of`]);
    /// anything else is unknown.
    pub(crate) fn parse(s: &str) -> Self {
        match sluice_fields::level_of(s.as_bytes()) {
            Some(sluice_fields::Level::Debug) => Self::Debug,
            Some(sluice_fields::Level::Info) => Self::Info,
            Some(sluice_fields::Level::Warn) => Self::Warn,
            Some(sluice_fields::Level::Error) => Self::Error,
            Some(sluice_fields::Level::Fatal) => Self::Fatal,
            None => Self::Unknown,
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
            ("i", Level::Info),
            ("x", Level::Unknown),
            ("40", Level::Warn),
            ("ÉRROR", Level::Unknown),
        ] {
            assert_eq!(Level::parse(s), level, "{s}");
        }
    }
}
