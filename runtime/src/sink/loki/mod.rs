//! The Loki sink: batches per tenant, pushes protobuf+snappy to Loki's push API, retries, and
//! isolates rejected lines so that one bad line never drops its neighbours.
//!
//! One file per job: [`encode`] writes the request body, [`retry`] classifies answers and
//! computes backoff, [`deliver`] carries one batch through sends, retries and 400 splitting;
//! this file owns the loop.
//!
//! **The loop.** Inputs go into a [`Batcher`] (per tenant, `batch_size` bytes, `batch_wait`
//! age). Full and due batches queue up and are handed to at most `max_concurrency` delivery
//! tasks; each task owns one reusable [`Encoder`](encode::Encoder), so the encoders double as
//! the concurrency permits. While every task is busy, batches wait in the queue with their
//! budget charges, so ingest answers 429 rather than memory growing. When the channel closes
//! (shutdown) the batcher is drained, everything is sent, and `run` returns once the last
//! delivery has finished. With `retry.max_attempts: 0` and Loki unreachable that never happens
//! on its own: the app's `shutdown_timeout` ends it.
//!
//! **Ordering.** Batches of one tenant may be in flight concurrently, so entries of one stream
//! can reach Loki out of order across requests. Loki accepts that: unordered writes per stream
//! are the default since Loki 2.4 (`unordered_writes: true`), within its out-of-order window.
//! Within one request each stream's entries stay in the order they arrived, and splitting after
//! a 400 sends the halves first-half-first.
//!
//! **The request.** `POST <push_url>` with `Content-Type: application/x-protobuf`, the
//! `User-Agent` `sluice/<version>`, `X-Scope-OrgID` (the sink's `tenant` if set, else the
//! batch's), the configured `headers`, and `Authorization` (bearer or basic). Like Promtail and
//! Alloy we send no `Content-Encoding`: Loki decodes protobuf bodies as raw snappy by contract
//! (it also accepts `Content-Encoding: snappy`, but a proxy in between might not).
//!
//! **The HTTP client** is built once: `timeout` per request, pooled keep-alive connections, no
//! proxy taken from `HTTP(S)_PROXY` environment variables (the same config reaches the same Loki
//! wherever it runs; a proxy in front of Loki is addressed by `url` and `headers`), and no
//! redirects followed (a 301/302 would turn the POST into a bodiless GET): a 3xx is retried and
//! logged at error, like a 401 or a 404, so point `url` at the final address.
//!
//! **Metrics**, all labelled `sink`: `sluice_sink_requests_total{status}` (HTTP code or
//! `error`), `sluice_sink_sent_entries_total`, `sluice_sink_sent_bytes_total` (compressed bodies of accepted requests),
//! `sluice_sink_retries_total{reason}`, `sluice_sink_dropped_entries_total{reason}`,
//! `sluice_sink_dead_lettered_entries_total`,
//! `sluice_sink_request_duration_seconds`, `sluice_sink_inflight_requests`. Nothing is logged
//! per entry above debug; drops are logged once per batch.

pub(crate) mod deliver;
pub mod encode;
pub(crate) mod retry;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::Arc;

use base64::Engine as _;
use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::{AuthConfig, LokiSinkConfig};
use crate::sink::dead_letter::DeadLetter;
use crate::sink::{Batcher, Pending, SinkInput};
use deliver::Context;
use encode::Encoder;

/// Pushes batches to Loki.
#[derive(Debug)]
pub struct LokiSink {
    ctx: Arc<Context>,
    batcher: Batcher,
    concurrency: usize,
}

impl LokiSink {
    /// Checks the configuration and builds the HTTP client; sends nothing yet. With a
    /// `retry.max_attempts` limit, what runs out of attempts goes to `dead_letter`.
    pub fn new(name: &str, config: &LokiSinkConfig, dead_letter: Option<DeadLetter>) -> Result<Self, String> {
        let mut ctx = context(name, config)?;
        ctx.dead_letter = dead_letter.map(Arc::new);
        let max_bytes = usize::try_from(config.batch_size.as_u64()).unwrap_or(usize::MAX);
        Ok(Self {
            ctx: Arc::new(ctx),
            batcher: Batcher::new(max_bytes, config.batch_wait),
            concurrency: config.max_concurrency.max(1),
        })
    }

    /// Batches and delivers until `rx` closes, then flushes everything and returns.
    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<SinkInput>) {
        let mut ready: VecDeque<Pending> = VecDeque::new();
        let mut idle: Vec<Encoder> = (0..self.concurrency).map(|_| Encoder::new()).collect();
        let mut tasks: JoinSet<Encoder> = JoinSet::new();
        let mut open = true;
        loop {
            while !ready.is_empty() && !idle.is_empty() {
                let (Some(mut encoder), Some(pending)) = (idle.pop(), ready.pop_front()) else { break };
                let ctx = Arc::clone(&self.ctx);
                tasks.spawn(async move {
                    deliver::deliver(&ctx, &mut encoder, pending).await;
                    encoder
                });
            }
            if !open && ready.is_empty() && tasks.is_empty() {
                break;
            }
            let deadline = self.batcher.next_deadline();
            tokio::select! {
                input = rx.recv(), if open => match input {
                    Some(input) => ready.extend(self.batcher.push(input)),
                    None => {
                        open = false;
                        ready.extend(self.batcher.drain());
                    }
                },
                () = sleep_until(deadline) => ready.extend(self.batcher.due(Instant::now())),
                Some(done) = tasks.join_next(), if !tasks.is_empty() => match done {
                    Ok(encoder) => idle.push(encoder),
                    Err(e) => {
                        // The batch's charges were released as the task unwound.
                        tracing::error!(sink = %self.ctx.name, error = %e, "a Loki delivery task failed");
                        idle.push(Encoder::new());
                    }
                },
            }
        }
        tracing::debug!(sink = %self.ctx.name, "Loki sink flushed and stopped");
    }
}

/// Checks `config` and builds what deliveries need: the push URL, the HTTP client with its
/// static headers, the tenant override and the retry policy. Shared by the sink and by
/// `sluice replay`, so both talk to Loki the same way.
pub(crate) fn context(name: &str, config: &LokiSinkConfig) -> Result<Context, String> {
    let url = config.push_url()?;
    let mut url =
        reqwest::Url::parse(&url).map_err(|e| format!("url `{}`: {e}", crate::config::redact_url(&url)))?;
    let mut headers = HeaderMap::new();
    // Credentials written into the URL become a Basic header, so the URL that reqwest puts into
    // its error messages (and so into logs) carries none.
    if !url.username().is_empty() || url.password().is_some() {
        if config.auth.is_some() {
            return Err("url: credentials in the URL and `auth` both given; keep only `auth`".into());
        }
        let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
        let auth = AuthConfig {
            bearer_token: None,
            username: Some(decode(url.username())),
            password: url.password().map(decode),
        };
        headers.insert(http::header::AUTHORIZATION, authorization(&auth)?);
        let _ = url.set_username("");
        let _ = url.set_password(None);
    }
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/x-protobuf"));
    for (key, value) in &config.headers {
        let key = HeaderName::from_bytes(key.as_bytes())
            .map_err(|_| format!("headers: `{key}` is not a valid HTTP header name"))?;
        if key.as_str() == "x-scope-orgid" {
            return Err("headers: set the tenant with `tenant`, not an X-Scope-OrgID header".into());
        }
        let value = HeaderValue::from_str(value)
            .map_err(|_| format!("headers.{key}: the value is not a valid HTTP header value"))?;
        headers.insert(key, value);
    }
    if let Some(auth) = &config.auth {
        headers.insert(http::header::AUTHORIZATION, authorization(auth)?);
    }
    let tenant = match &config.tenant {
        Some(t) if t.is_empty() => return Err("tenant: must not be empty".into()),
        Some(t) => {
            Some(HeaderValue::from_str(t).map_err(|_| format!("tenant `{t}` is not a valid header value"))?)
        }
        None => None,
    };
    let client = reqwest::Client::builder()
        .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
        .default_headers(headers)
        .timeout(config.timeout)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let mut retry = config.retry.clone();
    retry.min_backoff = retry.min_backoff.min(retry.max_backoff);
    Ok(Context {
        name: Arc::from(name),
        client,
        url,
        tenant,
        retry,
        log_drops: true,
        dead_letter: None,
        retry_refusals: true,
    })
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The `Authorization` header for `auth`, marked sensitive so it is never logged.
fn authorization(auth: &AuthConfig) -> Result<HeaderValue, String> {
    let text = match (&auth.bearer_token, &auth.username, &auth.password) {
        (Some(token), None, None) => format!("Bearer {token}"),
        (None, Some(user), password) => {
            let credentials = format!("{user}:{}", password.as_deref().unwrap_or(""));
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(credentials))
        }
        _ => return Err("auth: give either bearer_token, or username and password".into()),
    };
    let mut value =
        HeaderValue::from_str(&text).map_err(|_| "auth: credentials are not a valid header value")?;
    value.set_sensitive(true);
    Ok(value)
}
