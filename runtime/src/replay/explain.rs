//! Loki's refusals in plain words: which limit a message points at, and what to do about it.
//!
//! Replays meet limits that live ingestion never does, mostly about age: Loki refuses entries
//! older than `reject_old_samples_max_age`, and per stream, entries too far behind the stream's
//! newest one. The patterns are Loki's own messages (distributor validation, ingester, rate
//! limiter) and the drop reasons of the delivery (`unauthorized`, `retries_exhausted`, …).

/// A cause of refused entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cause {
    /// "entry too far behind" / "entry out of order".
    Behind,
    /// "timestamp too old" / "greater than max age".
    TooOld,
    /// "timestamp too new" / "too far in the future".
    TooNew,
    /// 429: ingestion or per-stream rate limit.
    RateLimited,
    /// 429: too many active streams.
    StreamLimit,
    LineTooLong,
    StructuredMetadata,
    Labels,
    Auth,
    NotFound,
    /// 5xx until the attempts ran out.
    ServerError,
    /// Network errors or timeouts until the attempts ran out.
    Unreachable,
}

/// The causes a drop with `reason` and Loki's `message` points at (several when a 400 names
/// several problems); empty when it is none of the known ones.
pub fn causes(reason: &str, message: &str) -> Vec<Cause> {
    let m = message.to_ascii_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|n| m.contains(n));
    let mut out = Vec::new();
    let mut add = |c: Cause| {
        if !out.contains(&c) {
            out.push(c);
        }
    };
    if has(&["too far behind", "out of order"]) {
        add(Cause::Behind);
    }
    if has(&["too old", "greater than max age", "greater_than_max_sample_age"]) {
        add(Cause::TooOld);
    }
    if has(&["too new", "too far in the future", "too_far_in_future"]) {
        add(Cause::TooNew);
    }
    if has(&["stream limit"]) {
        add(Cause::StreamLimit);
    } else if has(&["rate limit"]) || m.starts_with("429") {
        add(Cause::RateLimited);
    }
    if has(&["max entry size", "line too long", "line_too_long"]) {
        add(Cause::LineTooLong);
    }
    if has(&["structured metadata"]) {
        add(Cause::StructuredMetadata);
    }
    if has(&["label name", "label value", "label pair", "duplicate label", "error parsing labels"]) {
        add(Cause::Labels);
    }
    if matches!(reason, "unauthorized" | "forbidden") || m.starts_with("401") || m.starts_with("403") {
        add(Cause::Auth);
    }
    if reason == "not_found" || m.starts_with("404") {
        add(Cause::NotFound);
    }
    let nothing_else = out.is_empty();
    if nothing_else && reason == "retries_exhausted" {
        out.push(if m.starts_with('5') { Cause::ServerError } else { Cause::Unreachable });
    }
    out
}

impl Cause {
    /// What it means and what to do, in a sentence or three.
    pub fn advice(self) -> &'static str {
        match self {
            Self::Behind => {
                "Loki accepts an entry only if it is newer than its stream's newest entry minus half of \
                 max_chunk_age (2h by default, so one hour): these streams already hold newer entries \
                 (live logs, or an earlier replay). Replay into a tenant whose streams hold nothing newer, \
                 e.g. a backfill tenant with --tenant."
            }
            Self::TooOld => {
                "Loki refuses entries older than reject_old_samples_max_age (1 week by default) while \
                 reject_old_samples is true. Push them to a backfill tenant whose limits allow it \
                 (per-tenant overrides: reject_old_samples: false, or a larger reject_old_samples_max_age) \
                 with --tenant."
            }
            Self::TooNew => {
                "The entries are ahead of Loki's clock by more than creation_grace_period (10 minutes by \
                 default): check the clocks of the machines that wrote them, or raise \
                 creation_grace_period for the tenant."
            }
            Self::RateLimited => {
                "Loki rate-limited the pushes (429, retried with backoff): raise ingestion_rate_mb and \
                 ingestion_burst_size_mb (or per_stream_rate_limit) for the tenant, or replay a smaller \
                 time range at a time; --max-attempts waits longer."
            }
            Self::StreamLimit => {
                "The tenant reached its active stream limit (max_global_streams_per_user): raise it for \
                 the tenant, or replay fewer streams at once with --selector."
            }
            Self::LineTooLong => {
                "Lines longer than the tenant's max_line_size (256 KB by default) are refused."
            }
            Self::StructuredMetadata => {
                "Loki refused the structured metadata: it needs allow_structured_metadata (and schema v13), \
                 and limits its size and number of pairs per entry."
            }
            Self::Labels => {
                "Loki refused the streams' labels (e.g. more than max_label_names_per_series, or names or \
                 values too long for the tenant's limits)."
            }
            Self::Auth => {
                "Loki refused the credentials or the tenant (401/403): give --loki-username and \
                 --loki-password, or --loki-bearer-token, and check that they may write to the tenant."
            }
            Self::NotFound => {
                "Nothing answers at that path: give Loki's base URL (http://loki:3100) or its push URL \
                 (…/loki/api/v1/push) with --to-loki."
            }
            Self::ServerError => {
                "Loki answered with server errors until the attempts ran out: check Loki's health, then \
                 run the same command again to resume (--max-attempts waits longer)."
            }
            Self::Unreachable => {
                "Loki could not be reached until the attempts ran out: check --to-loki and the network, \
                 then run the same command again to resume."
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_lokis_messages() {
        let cases: &[(&str, &str, &[Cause])] = &[
            (
                "rejected",
                "400 Bad Request: entry too far behind, entry timestamp is: 2024-03-01T00:00:00Z, oldest acceptable timestamp is: 2024-03-01T01:00:00Z",
                &[Cause::Behind],
            ),
            ("rejected", "400 Bad Request: entry out of order", &[Cause::Behind]),
            (
                "rejected",
                "400 Bad Request: entry for stream '{app=\"a\"}' has timestamp too old: 2024-01-01T00:00:00Z, oldest acceptable timestamp is: 2024-02-23T00:00:00Z",
                &[Cause::TooOld],
            ),
            ("rejected", "greater than max age", &[Cause::TooOld]),
            ("rejected", "entry for stream '{a=\"b\"}' has timestamp too new: 2030-01-01", &[Cause::TooNew]),
            (
                "retries_exhausted",
                "429 Too Many Requests: Ingestion rate limit exceeded for user t (limit: 4194304 bytes/sec)",
                &[Cause::RateLimited],
            ),
            (
                "retries_exhausted",
                "429 Too Many Requests: Maximum active stream limit exceeded",
                &[Cause::StreamLimit],
            ),
            ("unauthorized", "401 Unauthorized: no org id", &[Cause::Auth]),
            ("forbidden", "403 Forbidden", &[Cause::Auth]),
            ("not_found", "404 Not Found: 404 page not found", &[Cause::NotFound]),
            ("retries_exhausted", "503 Service Unavailable: programmed failure 503", &[Cause::ServerError]),
            (
                "retries_exhausted",
                "error sending request for url (http://127.0.0.1:9/loki/api/v1/push): client error (Connect): tcp connect error: Connection refused (os error 111)",
                &[Cause::Unreachable],
            ),
            (
                "rejected",
                "Max entry size '256000' bytes exceeded for stream '{a=\"b\"}'",
                &[Cause::LineTooLong],
            ),
            (
                "rejected",
                "stream '{a=\"b\"}' has structured metadata too large",
                &[Cause::StructuredMetadata],
            ),
            ("rejected", "entry for stream '{a=\"b\"}' has 16 label names; limit 15", &[Cause::Labels]),
            ("rejected", "something Loki never says", &[]),
        ];
        for (reason, message, expected) in cases {
            assert_eq!(causes(reason, message), *expected, "{reason}: {message}");
        }
    }

    #[test]
    fn one_message_can_name_several_causes() {
        let m =
            "400 Bad Request: entry for stream '{a=\"b\"}' has timestamp too old: 1\nentry too far behind";
        assert_eq!(causes("rejected", m), vec![Cause::Behind, Cause::TooOld]);
    }

    #[test]
    fn advice_names_the_limits() {
        assert!(Cause::Behind.advice().contains("max_chunk_age"));
        assert!(Cause::TooOld.advice().contains("reject_old_samples_max_age"));
        assert!(Cause::TooOld.advice().contains("--tenant"));
        assert!(Cause::TooNew.advice().contains("creation_grace_period"));
        assert!(Cause::RateLimited.advice().contains("ingestion_rate_mb"));
    }
}
