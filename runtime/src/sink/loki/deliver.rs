//! Delivers one batch: encode, send, retry, and isolate what Loki rejects by splitting.
//!
//! On a 400 Loki has already stored the request's valid entries and refused only the invalid
//! ones (and it ignores exact duplicates — same stream, timestamp and line — when they come
//! again). So on a 400, or a 413, for a request of more than one entry, the request is halved —
//! by streams while it has several, then by entries — and each half is sent again, depth
//! first, so the neighbours of a bad line are delivered (or confirmed) and only the entries
//! that still fail on their own are dropped as `rejected` (or `payload_too_large`). Isolating
//! `k` bad entries among `n` costs about `2k·log2(n)` requests; [`SPLIT_REQUEST_LIMIT`] bounds
//! it per batch. Past that bound the remaining refused parts are dropped whole: against real
//! Loki their valid entries were stored by the 400 already, so only the counting is coarser.
//!
//! Every other answer is retried (see `retry`). When `max_attempts` runs out, the rest of the
//! batch — the next request would meet the same fate — is set aside in the sink's
//! [`DeadLetter`] directory, and only then are its log records confirmed; without one (`sluice
//! replay`, which stops resumably instead) it is dropped as `retries_exhausted`. A batch's drops
//! are logged once, at warn, with the first message Loki gave.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::HeaderValue;
use reqwest::header::RETRY_AFTER;

use super::encode::Encoder;
use super::retry::{self, RETRIES_EXHAUSTED, Verdict};
use crate::config::RetryConfig;
use crate::model::{AckFailureKind, Stream};
use crate::sink::Pending;
use crate::sink::dead_letter::DeadLetter;

/// Most extra requests spent isolating refused entries of one batch.
pub const SPLIT_REQUEST_LIMIT: usize = 128;

/// Longest part of a response body kept as the error message.
const MAX_MESSAGE: usize = 1024;

/// Everything a delivery needs, shared by the sink's concurrent deliveries.
#[derive(Debug)]
pub struct Context {
    pub name: Arc<str>,
    /// Built once: timeout, connection pool, static headers (content type, auth, extras).
    pub client: reqwest::Client,
    pub url: reqwest::Url,
    /// Overrides the batch's tenant in `X-Scope-OrgID`.
    pub tenant: Option<HeaderValue>,
    pub retry: RetryConfig,
    /// Log a batch's drops at warn. `sluice replay` turns it off: it reports drops itself, once,
    /// in its summary, rather than once per batch.
    pub log_drops: bool,
    /// Where batches go when `retry.max_attempts` runs out (the sink's, when it has a limit).
    pub dead_letter: Option<Arc<DeadLetter>>,
    /// Retry 401, 403, 404, 3xx and other unexpected answers (the sink). `sluice replay` stops
    /// at the first instead, to explain it: an operator is watching, and it resumes.
    pub retry_refusals: bool,
}

/// What became of one batch.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Entries in requests Loki accepted.
    pub sent: usize,
    /// Dropped entries by reason, in the order the reasons first occurred.
    pub dropped: Vec<(String, usize)>,
    /// The first message Loki (or the network) gave for a drop.
    pub message: Option<String>,
    /// HTTP requests made, retries included.
    pub requests: usize,
    /// Entries set aside in the dead-letter directory.
    pub dead_lettered: usize,
    /// Whether this batch's first retry was logged (once per batch, at warn).
    retry_logged: bool,
    /// What ran out of attempts, for the dead-letter directory.
    gave_up: Vec<Stream>,
}

impl Outcome {
    fn drop(&mut self, reason: &str, entries: usize, message: Option<String>) {
        if entries == 0 {
            return;
        }
        match self.dropped.iter_mut().find(|(r, _)| r == reason) {
            Some((_, n)) => *n += entries,
            None => self.dropped.push((reason.to_string(), entries)),
        }
        if self.message.is_none() {
            self.message = message;
        }
    }

    /// Entries dropped for any reason.
    pub fn dropped_total(&self) -> usize {
        self.dropped.iter().map(|(_, n)| n).sum()
    }
}

/// How a request ended after its retries.
enum Sent {
    Delivered,
    /// Refused in a way that splitting may resolve.
    Split {
        reason: &'static str,
        message: String,
    },
    /// Out of attempts (or refused, without `retry_refusals`); the rest of the batch would be
    /// too. `reason` names why.
    GaveUp {
        reason: &'static str,
        message: String,
    },
}

/// Delivers `pending`, then releases its budget charges and confirms its log records: what was
/// not delivered now was dropped for good (and counted), so it must not come back.
pub async fn deliver(ctx: &Context, encoder: &mut Encoder, pending: Pending) -> Outcome {
    let Pending { batch, charges, marks, acks, .. } = pending;
    let mut outcome = Outcome::default();
    let tenant = match &ctx.tenant {
        Some(t) => Ok(t.clone()),
        None => HeaderValue::from_str(&batch.tenant),
    };
    let tenant_name: &str = match &ctx.tenant {
        Some(t) => t.to_str().unwrap_or("?"),
        None => &batch.tenant,
    };
    match tenant {
        Ok(tenant) => deliver_streams(ctx, encoder, &tenant, batch.streams, &mut outcome).await,
        Err(_) => {
            let entries = batch.streams.iter().map(|s| s.entries.len()).sum();
            outcome.drop("invalid_tenant", entries, Some("tenant is not a valid header value".into()));
        }
    }
    drop(charges);
    let set_aside = match (&ctx.dead_letter, outcome.gave_up.is_empty()) {
        (Some(dead_letter), false) => set_aside(ctx, dead_letter, &batch.tenant, &mut outcome).await,
        _ => true,
    };
    if set_aside {
        Pending::settle_marks(marks);
    } else {
        // Unsettled, the records stay in the log and are delivered after a restart.
        drop(marks);
    }
    if !acks.is_empty() && outcome.dead_lettered > 0 {
        let message = format!(
            "sink `{}` set {} entries aside in its dead-letter directory after retry.max_attempts: {}",
            ctx.name,
            outcome.dead_lettered,
            outcome.message.as_deref().unwrap_or("")
        );
        for ack in &acks {
            ack.fail_with(AckFailureKind::Unavailable, message.clone());
        }
    }
    if !acks.is_empty() && !outcome.dropped.is_empty() {
        // `on_delivery` pushes learn what became of their lines: a refusal is the client's to
        // fix (400), anything else may pass if it tries again (503).
        let refused = outcome.dropped.iter().all(|(r, _)| r == retry::REJECTED || r == "payload_too_large");
        let kind = if refused { AckFailureKind::Rejected } else { AckFailureKind::Unavailable };
        let reasons: Vec<String> = outcome.dropped.iter().map(|(r, n)| format!("{n} {r}")).collect();
        let message = format!(
            "sink `{}` did not deliver {} entries ({}): {}",
            ctx.name,
            outcome.dropped_total(),
            reasons.join(", "),
            outcome.message.as_deref().unwrap_or("")
        );
        for ack in &acks {
            ack.fail_with(kind, message.clone());
        }
    }
    drop(acks);
    for (reason, n) in &outcome.dropped {
        metrics::counter!("sluice_sink_dropped_entries_total", "sink" => Arc::clone(&ctx.name), "reason" => reason.clone())
            .increment(*n as u64);
    }
    if ctx.log_drops && !outcome.dropped.is_empty() {
        let reasons: Vec<String> = outcome.dropped.iter().map(|(r, n)| format!("{r}={n}")).collect();
        tracing::warn!(
            sink = %ctx.name,
            tenant = %tenant_name,
            dropped = outcome.dropped_total(),
            delivered = outcome.sent,
            reasons = %reasons.join(","),
            message = outcome.message.as_deref().unwrap_or(""),
            "Loki sink dropped entries of a batch",
        );
    }
    outcome
}

async fn deliver_streams(
    ctx: &Context,
    encoder: &mut Encoder,
    tenant: &HeaderValue,
    streams: Vec<Stream>,
    outcome: &mut Outcome,
) {
    let mut parts = vec![streams];
    let mut splits_left = SPLIT_REQUEST_LIMIT;
    while let Some(part) = parts.pop() {
        let entries = entry_count(&part);
        if entries == 0 {
            continue;
        }
        let body = match encoder.encode(&part) {
            Ok(body) => body,
            Err(e) => {
                outcome.drop("encode_error", entries, Some(e.to_string()));
                continue;
            }
        };
        match send(ctx, tenant, body, outcome).await {
            Sent::Delivered => {
                outcome.sent += entries;
                metrics::counter!("sluice_sink_sent_entries_total", "sink" => Arc::clone(&ctx.name))
                    .increment(entries as u64);
            }
            Sent::Split { reason, message } => {
                if entries > 1 && splits_left >= 2 {
                    splits_left -= 2;
                    let (first, second) = halve(part);
                    // Depth first, first half first: keeps each stream's entries in order.
                    parts.push(second);
                    parts.push(first);
                    tracing::debug!(sink = %ctx.name, entries, %message, "splitting a refused request");
                } else {
                    outcome.drop(reason, entries, Some(message));
                }
            }
            Sent::GaveUp { reason, message } => {
                if ctx.dead_letter.is_some() {
                    outcome.gave_up = std::iter::once(part).chain(parts).flatten().collect();
                    outcome.message.get_or_insert(message);
                } else {
                    let rest = entries + parts.iter().map(|p| entry_count(p)).sum::<usize>();
                    outcome.drop(reason, rest, Some(message));
                }
                return;
            }
        }
    }
}

fn entry_count(streams: &[Stream]) -> usize {
    streams.iter().map(|s| s.entries.len()).sum()
}

/// Two halves of a part of at least two entries: by streams, or a single stream's entries.
fn halve(mut part: Vec<Stream>) -> (Vec<Stream>, Vec<Stream>) {
    if part.len() > 1 {
        let second = part.split_off(part.len() / 2);
        return (part, second);
    }
    let Some(mut stream) = part.pop() else { return (Vec::new(), Vec::new()) };
    let entries = stream.entries.split_off(stream.entries.len() / 2);
    let second = Stream { labels: stream.labels.clone(), entries };
    (vec![stream], vec![second])
}

/// Sends one request body until it is delivered, refused, or out of attempts.
async fn send(ctx: &Context, tenant: &HeaderValue, body: Bytes, outcome: &mut Outcome) -> Sent {
    let mut attempt: u32 = 0;
    loop {
        attempt = attempt.saturating_add(1);
        outcome.requests += 1;
        let (verdict, message) = attempt_once(ctx, tenant, body.clone()).await;
        match verdict {
            Verdict::Delivered => {
                metrics::counter!("sluice_sink_sent_bytes_total", "sink" => Arc::clone(&ctx.name))
                    .increment(body.len() as u64);
                return Sent::Delivered;
            }
            Verdict::Split { reason } => return Sent::Split { reason, message },
            Verdict::Retry { reason, retry_after } => {
                if !ctx.retry_refusals && retry::needs_an_operator(reason) {
                    return Sent::GaveUp { reason, message };
                }
                if ctx.retry.max_attempts != 0 && attempt >= ctx.retry.max_attempts {
                    return Sent::GaveUp { reason: RETRIES_EXHAUSTED, message };
                }
                metrics::counter!("sluice_sink_retries_total", "sink" => Arc::clone(&ctx.name), "reason" => reason)
                    .increment(1);
                let wait = retry::delay(attempt, &ctx.retry, retry_after);
                let tenant = tenant.to_str().unwrap_or("?");
                if retry::needs_an_operator(reason) {
                    // Not going to pass by itself: say so every time, at error.
                    tracing::error!(
                        sink = %ctx.name, tenant, attempt, ?wait, %message, url = %ctx.url,
                        "Loki (or what stands in front of it) refused the push ({reason}): check the sink's url and auth; retrying, nothing is dropped"
                    );
                } else if outcome.retry_logged {
                    tracing::debug!(sink = %ctx.name, attempt, ?wait, %message, "retrying a push to Loki");
                } else {
                    outcome.retry_logged = true;
                    tracing::warn!(sink = %ctx.name, tenant, ?wait, %message, "push to Loki failed; retrying");
                }
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Writes what ran out of attempts into the dead-letter directory; false if it could not be
/// written (then the log keeps its records).
async fn set_aside(
    ctx: &Context,
    dead_letter: &Arc<DeadLetter>,
    tenant: &Arc<str>,
    outcome: &mut Outcome,
) -> bool {
    let streams = std::mem::take(&mut outcome.gave_up);
    let entries = entry_count(&streams);
    let (dl, tenant) = (Arc::clone(dead_letter), Arc::clone(tenant));
    let written = tokio::task::spawn_blocking(move || dl.put(&tenant, streams)).await;
    let dir = dead_letter.dir().display();
    match written {
        Ok(Ok(_)) => {
            outcome.dead_lettered = entries;
            metrics::counter!("sluice_sink_dead_lettered_entries_total", "sink" => Arc::clone(&ctx.name))
                .increment(entries as u64);
            tracing::error!(
                sink = %ctx.name, entries, max_attempts = ctx.retry.max_attempts,
                message = outcome.message.as_deref().unwrap_or(""),
                "set aside in {dir} after retry.max_attempts; send them again with `sluice replay --from {dir} --to-loki <url>`"
            );
            true
        }
        Ok(Err(e)) => {
            tracing::error!(sink = %ctx.name, entries, "cannot write to the dead-letter directory {dir}: {e}; the entries stay in the write-ahead log");
            false
        }
        Err(e) => {
            tracing::error!(sink = %ctx.name, entries, "writing to the dead-letter directory {dir} failed: {e}; the entries stay in the write-ahead log");
            false
        }
    }
}

/// Decrements the in-flight gauge even when the request is cancelled.
struct InFlight(Arc<str>);

impl InFlight {
    fn start(name: &Arc<str>) -> Self {
        metrics::gauge!("sluice_sink_inflight_requests", "sink" => Arc::clone(name)).increment(1.0);
        Self(Arc::clone(name))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!("sluice_sink_inflight_requests", "sink" => Arc::clone(&self.0)).decrement(1.0);
    }
}

/// One HTTP request: its verdict and, when it failed, a message for logs.
async fn attempt_once(ctx: &Context, tenant: &HeaderValue, body: Bytes) -> (Verdict, String) {
    let started = Instant::now();
    let in_flight = InFlight::start(&ctx.name);
    let request = ctx.client.post(ctx.url.clone()).header("X-Scope-OrgID", tenant.clone()).body(body);
    let (verdict, message, status) = match request.send().await {
        Ok(mut response) => {
            let status = response.status();
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| retry::parse_retry_after(v, SystemTime::now()));
            let verdict = retry::classify(status, retry_after);
            // Read (a bounded part of) the body: the message on errors, connection reuse on success.
            let text = read_message(&mut response).await;
            let message = if text.is_empty() { status.to_string() } else { format!("{status}: {text}") };
            (verdict, message, status.as_u16().to_string())
        }
        Err(e) => {
            let reason = if e.is_timeout() { "timeout" } else { "network" };
            (Verdict::Retry { reason, retry_after: None }, error_chain(&e), "error".to_string())
        }
    };
    drop(in_flight);
    metrics::histogram!("sluice_sink_request_duration_seconds", "sink" => Arc::clone(&ctx.name))
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("sluice_sink_requests_total", "sink" => Arc::clone(&ctx.name), "status" => status)
        .increment(1);
    (verdict, message)
}

async fn read_message(response: &mut reqwest::Response) -> String {
    let mut buf = Vec::new();
    while buf.len() < MAX_MESSAGE {
        match response.chunk().await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    buf.truncate(MAX_MESSAGE);
    String::from_utf8_lossy(&buf).trim().to_string()
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Entry, LabelSet};

    fn stream(app: &str, lines: &[&str]) -> Stream {
        Stream {
            labels: LabelSet::new(vec![("app".into(), app.into())]),
            entries: lines
                .iter()
                .enumerate()
                .map(|(i, l)| Entry { timestamp_ns: i as i64, line: l.to_string(), metadata: vec![] })
                .collect(),
        }
    }

    fn lines(part: &[Stream]) -> Vec<&str> {
        part.iter().flat_map(|s| &s.entries).map(|e| e.line.as_str()).collect()
    }

    #[test]
    fn halves_by_streams_then_by_entries() {
        let (a, b) = halve(vec![stream("a", &["1"]), stream("b", &["2", "3"]), stream("c", &["4"])]);
        assert_eq!((lines(&a), lines(&b)), (vec!["1"], vec!["2", "3", "4"]));
        let (a, b) = halve(vec![stream("a", &["1", "2", "3"])]);
        assert_eq!((lines(&a), lines(&b)), (vec!["1"], vec!["2", "3"]));
        assert_eq!(a[0].labels, b[0].labels);
    }

    #[test]
    fn outcome_sums_drops_by_reason_and_keeps_the_first_message() {
        let mut o = Outcome::default();
        o.drop(retry::REJECTED, 1, Some("first".into()));
        o.drop("unauthorized", 3, Some("second".into()));
        o.drop(retry::REJECTED, 2, None);
        o.drop("nothing", 0, Some("ignored".into()));
        assert_eq!(o.dropped, vec![("rejected".to_string(), 3), ("unauthorized".to_string(), 3)]);
        assert_eq!(o.dropped_total(), 6);
        assert_eq!(o.message.as_deref(), Some("first"));
    }
}
