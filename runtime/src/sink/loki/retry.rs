//! What to do with Loki's answer, and how long to wait before trying again.
//!
//! - 2xx: delivered.
//! - 400 and 413: the request is split to isolate what Loki refuses (see `deliver`): only
//!   these two say something about the lines.
//! - Everything else is retried: 429, 5xx, network errors and timeouts (as Promtail and Alloy
//!   do), and 401, 403, 404, 408, 3xx and any other answer — a rotated token, a deploy that
//!   briefly routes to a 404, a wrong path — which are the configuration's or the moment's, not
//!   the lines'. Dropping them would delete lines that were answered 204 "on disk". Until
//!   `max_attempts` runs out; then the batch is set aside (see `deliver`), never dropped.
//!
//! Backoff is exponential with full jitter: before retry `n` the wait is uniform in
//! `[min_backoff, min(max_backoff, min_backoff · 2^(n-1))]`. Classic full jitter starts at 0; we
//! keep `min_backoff` as a floor so the setting means what it says.
//!
//! `Retry-After` (delay-seconds or an IMF-fixdate HTTP-date) on 429 and 503 is a floor for that
//! wait, itself capped at `max_backoff`: the operator's bound wins over a server asking for
//! hours, because waiting longer would only hold the queue (and make ingest answer 429) while
//! Loki may well be back.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::StatusCode;

use crate::config::RetryConfig;

/// What one attempt's answer means for the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Loki took it.
    Delivered,
    /// Try the same request again later; `reason` labels `sluice_sink_retries_total`.
    Retry { reason: &'static str, retry_after: Option<Duration> },
    /// Loki refused part of the request; halve it to find out which part.
    Split { reason: &'static str },
}

/// Drop reason for entries Loki rejected with 400.
pub const REJECTED: &str = "rejected";
/// Drop reason when `max_attempts` ran out.
pub const RETRIES_EXHAUSTED: &str = "retries_exhausted";

/// Classifies a response status; `retry_after` is the parsed header, if any.
pub fn classify(status: StatusCode, retry_after: Option<Duration>) -> Verdict {
    let retry = |reason| Verdict::Retry { reason, retry_after: None };
    match status.as_u16() {
        200..=299 => Verdict::Delivered,
        400 => Verdict::Split { reason: REJECTED },
        413 => Verdict::Split { reason: "payload_too_large" },
        429 => Verdict::Retry { reason: "rate_limited", retry_after },
        503 => Verdict::Retry { reason: "server_error", retry_after },
        500..=599 => retry("server_error"),
        401 => retry("unauthorized"),
        403 => retry("forbidden"),
        404 => retry("not_found"),
        408 => retry("request_timeout"),
        300..=399 => retry("redirect"),
        _ => retry("unexpected_status"),
    }
}

/// Whether a retry `reason` means the sink's configuration, or what stands in front of Loki, is
/// wrong (logged at error, with a hint) rather than Loki being busy or down.
pub fn needs_an_operator(reason: &str) -> bool {
    matches!(reason, "unauthorized" | "forbidden" | "not_found" | "redirect" | "unexpected_status")
}

/// Exponential backoff with full jitter before retry number `retry` (1 = the first retry).
pub fn backoff(retry: u32, min: Duration, max: Duration) -> Duration {
    let min = min.min(max);
    // A zero min_backoff still grows, from 1 ms.
    let base = min.max(Duration::from_millis(1));
    let factor = 1u32.checked_shl(retry.saturating_sub(1)).unwrap_or(u32::MAX);
    let ceiling = base.saturating_mul(factor).min(max);
    let span = ceiling.saturating_sub(min);
    min + span.mul_f64(fastrand::f64())
}

/// The wait before retry number `retry`: [`backoff`], at least `retry_after` (capped at
/// `max_backoff`).
pub fn delay(retry: u32, config: &RetryConfig, retry_after: Option<Duration>) -> Duration {
    let wait = backoff(retry, config.min_backoff, config.max_backoff);
    match retry_after {
        Some(at_least) => wait.max(at_least.min(config.max_backoff)),
        None => wait,
    }
}

/// Parses `Retry-After`: delay-seconds or an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`),
/// relative to `now`. A date in the past means no wait. Obsolete date formats are not
/// accepted (senders must not generate them); the plain backoff applies then.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Absurdly many digits: as long as we would ever wait anyway.
        return Some(value.parse().map_or(Duration::MAX, Duration::from_secs));
    }
    let at = parse_imf_fixdate(value)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

const MONTHS: [&str; 12] =
    ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

fn parse_imf_fixdate(s: &str) -> Option<SystemTime> {
    let mut parts = s.split_ascii_whitespace();
    let day_name = parts.next()?.strip_suffix(',')?;
    if !DAYS.contains(&day_name) {
        return None;
    }
    let day = parse_digits(parts.next()?, 2)?;
    let month_name = parts.next()?;
    let month = MONTHS.iter().position(|m| *m == month_name)? as u64 + 1;
    let year = parse_digits(parts.next()?, 4)?;
    let mut hms = parts.next()?.split(':');
    let (h, m, sec) =
        (parse_digits(hms.next()?, 2)?, parse_digits(hms.next()?, 2)?, parse_digits(hms.next()?, 2)?);
    if hms.next().is_some() || parts.next()? != "GMT" || parts.next().is_some() {
        return None;
    }
    if !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 || year < 1970 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = u64::try_from(days).ok()? * 86_400 + h * 3600 + m * 60 + sec;
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

fn parse_digits(s: &str, len: usize) -> Option<u64> {
    (s.len() == len && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok()).flatten()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: u64, month: u64, day: u64) -> i64 {
    let (year, month, day) = (year as i64, month as i64, day as i64);
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_retry_after_seconds_and_http_dates() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now), Some(Duration::from_secs(30)));
        assert_eq!(
            parse_retry_after("Mon, 07 Nov 1994 08:49:37 GMT", now),
            Some(Duration::from_secs(86_400))
        );
        assert_eq!(parse_retry_after("Sat, 05 Nov 1994 08:49:37 GMT", now), Some(Duration::ZERO), "past");
        assert_eq!(parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT", UNIX_EPOCH), Some(Duration::ZERO));
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(parse_retry_after("Tue, 29 Feb 2000 00:00:01 GMT", leap), Some(Duration::from_secs(1)));
        assert_eq!(parse_retry_after("99999999999999999999999", now), Some(Duration::MAX));
        for bad in [
            "",
            "-5",
            "1.5",
            "soon",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 25:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 GMT extra",
        ] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn backoff_grows_exponentially_within_bounds() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(2));
        for retry in 1..=40 {
            let ceiling = (min * 2u32.saturating_pow(retry - 1)).min(max);
            let mut highest = Duration::ZERO;
            for _ in 0..200 {
                let d = backoff(retry, min, max);
                assert!(d >= min && d <= ceiling, "retry {retry}: {d:?} outside [{min:?}, {ceiling:?}]");
                highest = highest.max(d);
            }
            if retry >= 3 {
                assert!(highest > ceiling / 2, "retry {retry}: jitter never reached the upper half");
            }
        }
        assert_eq!(backoff(1, min, max), min, "first retry waits min_backoff");
        assert_eq!(backoff(u32::MAX, max, max), max);
        assert!(backoff(5, Duration::ZERO, max) <= Duration::from_millis(16), "zero min grows from 1 ms");
    }

    #[test]
    fn retry_after_is_a_floor_capped_at_max_backoff() {
        let config = RetryConfig {
            min_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_secs(5),
            max_attempts: 0,
        };
        assert_eq!(delay(1, &config, Some(Duration::from_secs(3))), Duration::from_secs(3));
        assert_eq!(delay(1, &config, Some(Duration::from_secs(3600))), Duration::from_secs(5));
        assert_eq!(delay(1, &config, Some(Duration::ZERO)), Duration::from_millis(10));
        assert!(delay(1, &config, None) <= Duration::from_millis(10));
    }

    #[test]
    fn classifies_statuses() {
        let ra = Some(Duration::from_secs(1));
        assert_eq!(classify(StatusCode::NO_CONTENT, None), Verdict::Delivered);
        assert_eq!(
            classify(StatusCode::TOO_MANY_REQUESTS, ra),
            Verdict::Retry { reason: "rate_limited", retry_after: ra }
        );
        assert_eq!(
            classify(StatusCode::SERVICE_UNAVAILABLE, ra),
            Verdict::Retry { reason: "server_error", retry_after: ra }
        );
        assert_eq!(
            classify(StatusCode::BAD_GATEWAY, ra),
            Verdict::Retry { reason: "server_error", retry_after: None }
        );
        assert_eq!(classify(StatusCode::BAD_REQUEST, None), Verdict::Split { reason: REJECTED });
        assert_eq!(
            classify(StatusCode::PAYLOAD_TOO_LARGE, None),
            Verdict::Split { reason: "payload_too_large" }
        );
        // Answers about the configuration or the moment, not the lines: retried, never dropped.
        for (code, reason) in [
            (401, "unauthorized"),
            (403, "forbidden"),
            (404, "not_found"),
            (408, "request_timeout"),
            (301, "redirect"),
            (307, "redirect"),
            (499, "unexpected_status"),
            (101, "unexpected_status"),
        ] {
            let status = StatusCode::from_u16(code).expect("valid code");
            assert_eq!(classify(status, ra), Verdict::Retry { reason, retry_after: None }, "{code}");
        }
        assert!(needs_an_operator("unauthorized") && !needs_an_operator("rate_limited"));
    }
}
