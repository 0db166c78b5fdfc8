//! `--since` and `--until`: an RFC 3339 time with any offset (`2024-03-01T12:00:00+01:00`), a
//! date (`2024-03-01`, UTC midnight), or a duration (`24h`, `90m`, `7days`) meaning that long
//! before now. The text is kept beside the instant: a checkpoint is keyed by what was typed, and
//! a resumed replay reuses the instants of its first run (so `--since 24h` does not move).

use chrono::{NaiveDate, SecondsFormat, TimeZone, Utc};

/// A parsed `--since`/`--until`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeArg {
    /// As given on the command line.
    pub text: String,
    /// Nanoseconds since the Unix epoch.
    pub ns: i64,
}

/// Parses a time argument relative to the current time (clap's value parser).
pub fn parse(text: &str) -> Result<TimeArg, String> {
    parse_at(text, now_ns()).map(|ns| TimeArg { text: text.to_string(), ns })
}

/// Parses a time argument; `now_ns` anchors durations.
pub fn parse_at(text: &str, now_ns: i64) -> Result<i64, String> {
    let text = text.trim();
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        let midnight = date.and_hms_opt(0, 0, 0).map(|t| Utc.from_utc_datetime(&t));
        return midnight
            .and_then(|t| t.timestamp_nanos_opt())
            .ok_or_else(|| format!("`{text}`: out of range"));
    }
    if let Ok(ns) = crate::archive::record::parse_rfc3339(text) {
        return Ok(ns);
    }
    if let Ok(ago) = humantime::parse_duration(text) {
        let ago = i64::try_from(ago.as_nanos()).map_err(|_| format!("`{text}`: out of range"))?;
        return now_ns.checked_sub(ago).ok_or_else(|| format!("`{text}`: out of range"));
    }
    Err(format!(
        "`{text}`: expected an RFC 3339 time (2024-03-01T12:00:00+01:00), a date (2024-03-01, \
         UTC midnight) or a duration before now (24h)"
    ))
}

/// RFC 3339 in UTC, as short as the instant allows (`2024-03-01T11:00:00Z`), for messages.
pub fn show(ns: i64) -> String {
    Utc.timestamp_nanos(ns).to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn now_ns() -> i64 {
    Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;
    /// 2024-03-01T00:00:00Z
    const MARCH_1: i64 = 1_709_251_200 * S;

    #[test]
    fn parses_dates_times_with_offsets_and_durations() {
        let now = MARCH_1 + 12 * 3600 * S;
        assert_eq!(parse_at("2024-03-01", now), Ok(MARCH_1));
        assert_eq!(parse_at("2024-03-01T01:00:00+01:00", now), Ok(MARCH_1));
        assert_eq!(parse_at("2024-02-29T23:30:00-00:30", now), Ok(MARCH_1));
        assert_eq!(parse_at("2024-03-01T00:00:00.5Z", now), Ok(MARCH_1 + S / 2));
        assert_eq!(parse_at("12h", now), Ok(MARCH_1));
        assert_eq!(parse_at("1h 30m", now), Ok(now - 5400 * S));
        assert_eq!(parse_at(" 2024-03-01 ", now), Ok(MARCH_1), "surrounding spaces are fine");
    }

    #[test]
    fn explains_what_it_accepts() {
        for bad in ["yesterday", "2024-13-01", "2024-03-01T25:00:00Z", "", "-5h"] {
            let e = parse_at(bad, MARCH_1).expect_err(bad);
            assert!(e.contains("RFC 3339") && e.contains("24h"), "{bad}: {e}");
        }
    }

    #[test]
    fn shows_instants_in_utc() {
        assert_eq!(show(MARCH_1), "2024-03-01T00:00:00Z");
        assert_eq!(show(MARCH_1 + 1), "2024-03-01T00:00:00.000000001Z");
        let arg = parse("2024-03-01").expect("parses");
        assert_eq!(arg, TimeArg { text: "2024-03-01".into(), ns: MARCH_1 });
    }
}
