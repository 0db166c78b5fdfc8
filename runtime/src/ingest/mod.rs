//! The HTTP side: Loki's push endpoint, readiness and metrics.
//!
//! A push is read with a size limit, decoded and validated (valid entries are kept, as Loki
//! does), charged against the memory budget (429 when it is spent), split by route and worker,
//! handed to the pipeline, and answered once the pipeline has passed it to the sinks.

mod error;
pub mod serve;
mod tenant;
mod throttle;
pub mod tls;
pub use tenant::is_valid_tenant_id;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderMap, StatusCode, header};
use http_body_util::BodyExt;
use metrics_exporter_prometheus::PrometheusHandle;

pub use error::IngestError;
pub use tenant::{Tenant, Tenants};

use crate::buffer::{Budget, Charge};
use crate::config::AckMode;
use crate::config::Config;
use crate::decode::{self, BodyFormat, DecodeError, Decoded, PushLimits};
use crate::model::{Ack, AckFailureKind, Batch};
use crate::pipeline::{Job, Pipeline};
use crate::wal::Wal;

/// Everything the handlers need.
pub struct Ingest {
    /// Shared with the reload controller, which replaces their settings.
    pub tenants: Arc<Tenants>,
    /// Reloads the configuration (`POST /-/reload`); answers what changed or why not.
    pub reload: Option<ReloadHook>,
    pub pipeline: Arc<Pipeline>,
    pub budget: Arc<Budget>,
    /// The write-ahead log, when some route or tenant acknowledges `on_disk`.
    pub wal: Option<Arc<Wal>>,
    /// How long an `on_delivery` push waits for its sinks.
    pub delivery_timeout: std::time::Duration,
    /// Largest body read: `server.max_body_size`, never more than the whole memory budget.
    pub max_body_size: u64,
    pub max_decompressed_size: usize,
    /// Entry and stream counts a push may have.
    pub push_limits: PushLimits,
    /// How long a client may take to send a body.
    pub body_read_timeout: std::time::Duration,
    /// One permit per push being decoded (`server.decode_threads`).
    decode_slots: Arc<tokio::sync::Semaphore>,
    /// Failed authentications per client address and tenant.
    auth_throttle: throttle::AuthThrottle,
    /// One permit per request being handled (`server.max_inflight_requests`).
    inflight: tokio::sync::Semaphore,
    max_inflight: usize,
    /// The bearer token `POST /-/reload` needs (`server.admin_token`); without one it is off.
    admin_token: Option<String>,
    /// Cleared when shutdown begins, so load balancers stop sending.
    pub ready: AtomicBool,
    pub metrics: Option<PrometheusHandle>,
}

impl Ingest {
    pub fn new(
        config: &Config,
        pipeline: Arc<Pipeline>,
        budget: Arc<Budget>,
        metrics: Option<PrometheusHandle>,
    ) -> Self {
        let server = &config.server;
        let decode_threads = crate::config::threads_or_cores(server.decode_threads);
        let push_limits = PushLimits {
            max_entries: server.max_entries_per_push.min(config.queue.max_entries),
            max_streams: server.max_streams_per_push,
        };
        Self {
            tenants: Arc::new(Tenants::new(config)),
            reload: None,
            pipeline,
            wal: None,
            delivery_timeout: config.wal.delivery_timeout,
            max_body_size: server.max_body_size.as_u64().min(budget.capacity().1),
            max_decompressed_size: usize::try_from(server.max_decompressed_size.as_u64())
                .unwrap_or(usize::MAX),
            push_limits,
            body_read_timeout: server.body_read_timeout,
            decode_slots: Arc::new(tokio::sync::Semaphore::new(decode_threads)),
            auth_throttle: throttle::AuthThrottle::default(),
            inflight: tokio::sync::Semaphore::new(server.max_inflight_requests),
            max_inflight: server.max_inflight_requests,
            admin_token: server.admin_token.clone().filter(|t| !t.is_empty()),
            budget,
            ready: AtomicBool::new(true),
            metrics,
        }
    }
}

/// Which endpoints a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoints {
    /// Everything, on one port.
    All,
    /// Pushes and `/ready` (the main port when `server.admin_listen` is set).
    Public,
    /// `/metrics`, `POST /-/reload` and `/ready` (`server.admin_listen`).
    Admin,
}

/// The HTTP routes; tests call this without a socket. Pushes and the admin endpoint count
/// toward `server.max_inflight_requests`; `/ready` and `/metrics` never wait behind them.
pub fn app(state: Arc<Ingest>, endpoints: Endpoints) -> Router {
    let limit = || axum::middleware::from_fn_with_state(Arc::clone(&state), limit_inflight);
    let mut router = Router::new().route("/ready", get(ready));
    if endpoints != Endpoints::Admin {
        let pushes = Router::new().route("/loki/api/v1/push", post(push)).route("/api/prom/push", post(push));
        router = router.merge(pushes.layer(limit()));
    }
    if endpoints == Endpoints::Public {
        router = router.route("/metrics", get(on_admin_port)).route("/-/reload", post(on_admin_port));
    } else {
        router = router
            .route("/metrics", get(metrics))
            .merge(Router::new().route("/-/reload", post(reload)).layer(limit()));
    }
    router.with_state(state)
}

/// `/metrics` and `/-/reload` on the main port when they are served on `server.admin_listen`.
async fn on_admin_port() -> Response {
    (StatusCode::NOT_FOUND, "served on the admin port (server.admin_listen), not this one\n").into_response()
}

/// Answers 503 when `server.max_inflight_requests` requests are being handled already.
async fn limit_inflight(
    State(s): State<Arc<Ingest>>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    let Ok(_slot) = s.inflight.try_acquire() else {
        metrics::counter!("sluice_http_requests_refused_total", "reason" => "inflight").increment(1);
        let mut response = (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "sluice is handling {} requests already (server.max_inflight_requests): retry later\n",
                s.max_inflight
            ),
        )
            .into_response();
        response.headers_mut().insert(header::RETRY_AFTER, http::HeaderValue::from_static("1"));
        return response;
    };
    next.run(request).await
}

async fn ready(State(s): State<Arc<Ingest>>) -> Response {
    if s.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    }
}

/// Runs a reload and says what it did.
pub type ReloadHook =
    Arc<dyn Fn() -> std::pin::Pin<Box<dyn Future<Output = ReloadOutcome> + Send>> + Send + Sync>;

/// What a reload did, in words for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// Everything that changed is in effect (200).
    Applied(String),
    /// Some changes are in effect, others need a restart and are not (409).
    Partial(String),
    /// Nothing changed; the running configuration stays (400).
    Refused(String),
}

async fn reload(State(s): State<Arc<Ingest>>, headers: HeaderMap) -> Response {
    let Some(hook) = &s.reload else {
        return (StatusCode::NOT_FOUND, "reloading is not enabled\n").into_response();
    };
    // Anyone who can reach the port, a web page in a browser among them, could otherwise make
    // sluice re-read its files at will.
    let Some(token) = &s.admin_token else {
        let message = "POST /-/reload is off: set server.admin_token to use it (SIGHUP and reload.watch need no token)\n";
        return (StatusCode::FORBIDDEN, message).into_response();
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !given.is_some_and(|g| tenant::secrets_equal(g.as_bytes(), token.as_bytes())) {
        metrics::counter!("sluice_http_requests_refused_total", "reason" => "admin_auth").increment(1);
        let mut response =
            (StatusCode::UNAUTHORIZED, "POST /-/reload needs Authorization: Bearer <server.admin_token>\n")
                .into_response();
        response.headers_mut().insert(header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
        return response;
    }
    let (status, message) = match hook().await {
        ReloadOutcome::Applied(m) => (StatusCode::OK, m),
        ReloadOutcome::Partial(m) => (StatusCode::CONFLICT, m),
        ReloadOutcome::Refused(m) => (StatusCode::BAD_REQUEST, m),
    };
    (status, format!("{message}\n")).into_response()
}

async fn metrics(State(s): State<Arc<Ingest>>) -> Response {
    metrics::gauge!("sluice_queue_entries").set(s.budget.entries() as f64);
    metrics::gauge!("sluice_queue_bytes").set(s.budget.bytes() as f64);
    match &s.metrics {
        Some(handle) => {
            ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], handle.render())
                .into_response()
        }
        None => (StatusCode::NOT_FOUND, "metrics are not enabled\n").into_response(),
    }
}

/// How much of an unread body is read and thrown away after an early refusal, so the client
/// gets the answer on a connection it can keep using; past this the connection is closed.
const DRAIN_LIMIT: usize = 8 << 20;
/// How long that reading may take.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(2);

async fn push(State(s): State<Arc<Ingest>>, request: Request) -> Response {
    let started = Instant::now();
    let (parts, mut body) = request.into_parts();
    let peer = parts.extensions.get::<serve::Peer>().map(|p| p.0);
    // The tenant a request claims, for throttling failed authentications (invalid ids are
    // refused before credentials matter, and are not keys of their own).
    let claimed = parts
        .headers
        .get("x-scope-orgid")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|t| is_valid_tenant_id(t))
        .unwrap_or("");
    let now = Instant::now();
    let authenticated = match peer.map(|ip| s.auth_throttle.check(ip, claimed, now)) {
        Some(Err(wait)) => Err(IngestError::AuthThrottled { wait }),
        _ => s.tenants.authenticate(&parts.headers, parts.extensions.get::<tls::ClientCert>()).inspect_err(
            |e| {
                if let (IngestError::Unauthorized(_), Some(ip)) = (e, peer) {
                    s.auth_throttle.failed(ip, claimed, now);
                }
            },
        ),
    };
    let (tenant, result) = match authenticated {
        Ok(tenant) => {
            let label = s.tenants.metric_label(&tenant.name);
            let result = accept(&s, &tenant, &label, &parts.headers, &mut body).await;
            (Some(label), result)
        }
        Err(e) => (None, Err(e)),
    };
    let tenant = tenant.as_deref().unwrap_or("").to_string();
    let response = match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => {
            tracing::debug!(tenant = %tenant, status = e.status().as_u16(), error = %e, "push refused");
            let timed_out = matches!(e, IngestError::BodyTimeout { .. });
            let mut response = e.into_response();
            // A client still sending would see a broken pipe instead of our answer if we
            // closed now; read on (bounded in bytes and time) and keep the connection usable.
            // A client too slow to send its body in time is not waited for again.
            let drained = !timed_out
                && tokio::time::timeout(DRAIN_TIME, drain(&mut body, DRAIN_LIMIT)).await.unwrap_or(false);
            if !drained {
                response.headers_mut().insert(header::CONNECTION, http::HeaderValue::from_static("close"));
            }
            response
        }
    };
    let status = response.status().as_u16().to_string();
    metrics::counter!("sluice_ingest_requests_total", "tenant" => tenant, "status" => status).increment(1);
    metrics::histogram!("sluice_ingest_request_duration_seconds").record(started.elapsed().as_secs_f64());
    response
}

/// Reads, decodes and dispatches a push of `tenant`, whose metric label is `label`.
async fn accept(
    s: &Ingest,
    tenant: &Tenant,
    label: &str,
    headers: &HeaderMap,
    body: &mut Body,
) -> Result<(), IngestError> {
    s.tenants.admit(tenant)?;
    let read = read_body(body, headers, s.max_body_size, &s.budget);
    let (body, body_charge) = tokio::time::timeout(s.body_read_timeout, read)
        .await
        .map_err(|_| IngestError::BodyTimeout { timeout: s.body_read_timeout })??;
    let t = label.to_string();
    metrics::counter!("sluice_ingest_received_bytes_total", "tenant" => t.clone())
        .increment(body.len() as u64);
    let (decoded, charge) = decode_off_runtime(s, tenant, headers, body).await?;
    drop(body_charge);
    let Decoded { batch, rejected, truncated_lines } = decoded;
    if truncated_lines > 0 {
        metrics::counter!("sluice_ingest_truncated_lines_total", "tenant" => t.clone())
            .increment(truncated_lines as u64);
    }
    for r in &rejected {
        metrics::counter!("sluice_ingest_rejected_entries_total", "tenant" => t.clone(), "reason" => r.reason.as_str())
            .increment(r.entries as u64);
    }
    if !batch.streams.is_empty() {
        s.tenants.admit_rate(tenant, batch.line_bytes())?;
        let entries = batch.entry_count();
        metrics::counter!("sluice_ingest_entries_total", "tenant" => t.clone()).increment(entries as u64);
        metrics::counter!("sluice_ingest_streams_total", "tenant" => t).increment(batch.streams.len() as u64);
        dispatch(s, tenant, batch, charge).await?;
    }
    if rejected.is_empty() {
        return Ok(());
    }
    let total: usize = rejected.iter().map(|r| r.entries).sum();
    let mut message = format!("{total} entries rejected, the rest of the push was accepted:");
    const SHOWN: usize = 20;
    for r in rejected.iter().take(SHOWN) {
        message.push_str("\n  ");
        message.push_str(&r.message);
    }
    if rejected.len() > SHOWN {
        message.push_str(&format!("\n  … and {} more", rejected.len() - SHOWN));
    }
    Err(IngestError::Rejected(message))
}

/// Reads the whole body, refusing it as soon as it passes `limit` (before, if Content-Length
/// says so); what is left unread stays in `body`. The bytes read are charged to `budget` as they
/// arrive (429 when it is spent), so bodies being read count toward the memory bound too.
async fn read_body(
    body: &mut Body,
    headers: &HeaderMap,
    limit: u64,
    budget: &Arc<Budget>,
) -> Result<(bytes::Bytes, Charge), IngestError> {
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(IngestError::BodyTooLarge { limit });
    }
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let mut charge = budget.empty_charge();
    // Trust the declared length for the first allocation only up to 1 MiB: a client could
    // declare much and send little.
    let first = declared.map_or(0, |n| n.min(1 << 20) as usize);
    if !charge.grow(0, first as u64) {
        return Err(queue_full(budget));
    }
    let mut buf = bytes::BytesMut::with_capacity(first);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| IngestError::Body(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(IngestError::BodyTooLarge { limit: limit as u64 });
            }
            let more = (buf.len() + data.len()) as u64;
            if more > charge.bytes() && !charge.grow(0, more - charge.bytes()) {
                return Err(queue_full(budget));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok((buf.freeze(), charge))
}

fn queue_full(budget: &Budget) -> IngestError {
    IngestError::QueueFull { entries: budget.entries(), bytes: budget.bytes() }
}

/// Pushes that decompress to at most this many bytes are decoded on the HTTP thread: in about a
/// millisecond, less than a hop to another thread costs (and their memory is then freed by the
/// threads that allocate all day, not by an idle decoding thread).
const DECODE_INLINE: usize = 1 << 20;

/// Decodes a push: first on the HTTP thread with decompression stopped at [`DECODE_INLINE`]
/// bytes; a push that decompresses to more is decoded again on a thread of the blocking pool,
/// at most `server.decode_threads` at once, so a large push never holds up the HTTP threads
/// (`/ready`, other tenants, the sinks). The decoded batch is charged to the memory budget while
/// it is built; the charge returned is its real size.
async fn decode_off_runtime(
    s: &Ingest,
    tenant: &Tenant,
    headers: &HeaderMap,
    body: bytes::Bytes,
) -> Result<(Decoded, Charge), IngestError> {
    let header =
        |name| headers.get(name).and_then(|v: &http::HeaderValue| v.to_str().ok()).map(str::to_string);
    let push = PushToDecode {
        body,
        content_type: header(header::CONTENT_TYPE),
        content_encoding: header(header::CONTENT_ENCODING),
        tenant: tenant.clone(),
        budget: Arc::clone(&s.budget),
        push_limits: s.push_limits,
    };
    let small = push.body.len() <= DECODE_INLINE && s.max_decompressed_size > DECODE_INLINE;
    let result = match small.then(|| push.decode(DECODE_INLINE)) {
        Some(Err(DecodeError::TooLarge { .. })) | None => {
            let permit =
                Arc::clone(&s.decode_slots).acquire_owned().await.map_err(|_| IngestError::ShuttingDown)?;
            let max = s.max_decompressed_size;
            let task = tokio::task::spawn_blocking(move || {
                let _permit = permit;
                push.decode(max)
            });
            match task.await {
                Ok(result) => result,
                Err(e) => return Err(IngestError::NotProcessed(format!("decoding failed: {e}"))),
            }
        }
        Some(result) => result,
    };
    result.map_err(|e| match e {
        DecodeError::AtCapacity { entries, bytes } => IngestError::QueueFull { entries, bytes },
        e => IngestError::Decode(e),
    })
}

/// A push's body and what decoding it needs.
struct PushToDecode {
    body: bytes::Bytes,
    content_type: Option<String>,
    content_encoding: Option<String>,
    tenant: Tenant,
    budget: Arc<Budget>,
    push_limits: PushLimits,
}

impl PushToDecode {
    /// Decodes the body, decompressing at most `max_decompressed` bytes, and charges the batch.
    fn decode(&self, max_decompressed: usize) -> Result<(Decoded, Charge), DecodeError> {
        let format = BodyFormat {
            content_type: self.content_type.as_deref(),
            content_encoding: self.content_encoding.as_deref(),
        };
        let bounds = decode::Bounds { max_decompressed, push: self.push_limits };
        let mut meter =
            BudgetMeter { charge: self.budget.empty_charge(), held_elsewhere: self.body.len() as u64 };
        let (name, limits) = (Arc::clone(&self.tenant.name), &self.tenant.limits);
        let decoded =
            decode::decode_push_metered(&self.body, format, name, limits, bounds, &mut meter, now_ns())?;
        let mut charge = meter.charge;
        charge.shrink_to(decoded.batch.entry_count() as u64, decoded.batch.size() as u64);
        Ok((decoded, charge))
    }
}

/// Charges a push's decoded form to the shared budget as the decoder builds it.
struct BudgetMeter {
    charge: Charge,
    /// What this push holds of the budget already (its body).
    held_elsewhere: u64,
}

impl decode::Meter for BudgetMeter {
    fn take(&mut self, entries: u64, bytes: u64) -> Result<(), DecodeError> {
        let (_, max_bytes) = self.charge.budget().capacity();
        // A push that alone would pass the whole budget can never be taken: 413, not 429.
        if self.held_elsewhere + self.charge.bytes() + bytes > max_bytes {
            return Err(DecodeError::TooCostly { limit: max_bytes });
        }
        if self.charge.grow(entries, bytes) {
            Ok(())
        } else {
            let budget = self.charge.budget();
            Err(DecodeError::AtCapacity { entries: budget.entries(), bytes: budget.bytes() })
        }
    }
}

/// Reads and discards up to `limit` more bytes; true when the body has ended.
async fn drain(body: &mut Body, limit: usize) -> bool {
    let mut read = 0;
    while read <= limit {
        match body.frame().await {
            None => return true,
            Some(Ok(frame)) => read += frame.data_ref().map_or(0, |d| d.len()),
            Some(Err(_)) => return false,
        }
    }
    false
}

/// Charges the budget, splits the batch by route and worker, and waits for the pipeline (and,
/// for `on_disk` routes, the write-ahead log).
async fn dispatch(s: &Ingest, tenant_info: &Tenant, batch: Batch, charge: Charge) -> Result<(), IngestError> {
    let charge = Arc::new(charge);
    let generation = s.pipeline.current().map_err(|_| IngestError::ShuttingDown)?;
    let workers = s.pipeline.workers();
    let mut parts: Vec<Option<Batch>> = Vec::new();
    parts.resize_with(generation.router.len() * workers, || None);
    let mut selected = Vec::new();
    let tenant = batch.tenant;
    for stream in batch.streams {
        generation.router.select(&tenant, &stream.labels, &mut selected);
        let shard = s.pipeline.shard(stream.labels.fingerprint());
        let Some((&last, rest)) = selected.split_last() else { continue };
        for &route in rest {
            let part = parts[route * workers + shard].get_or_insert_with(|| Batch::new(Arc::clone(&tenant)));
            part.streams.push(stream.clone());
        }
        let part = parts[last * workers + shard].get_or_insert_with(|| Batch::new(Arc::clone(&tenant)));
        part.streams.push(stream);
    }
    let ack_mode = |route: usize| generation.ack_mode(route, tenant_info.ack);
    // Refuse before the pipeline runs when the log cannot take the push anyway.
    if let Some(wal) = &s.wal {
        let needs_log =
            parts.iter().enumerate().any(|(i, p)| p.is_some() && ack_mode(i / workers) == AckMode::OnDisk);
        if needs_log {
            wal.check_room().map_err(|e| IngestError::Overloaded(e.to_string()))?;
        }
    }
    let waits_for_delivery =
        parts.iter().enumerate().any(|(i, p)| p.is_some() && ack_mode(i / workers) == AckMode::OnDelivery);
    let (ack, waiter) = Ack::new();
    let jobs = parts.into_iter().enumerate().filter_map(|(i, part)| {
        let batch = part?;
        let job = Job {
            generation: Arc::clone(&generation),
            route: i / workers,
            batch,
            ack: ack.clone(),
            charge: Arc::clone(&charge),
            ack_mode: ack_mode(i / workers),
        };
        Some((i % workers, job))
    });
    s.pipeline.submit(jobs).map_err(|_| IngestError::ShuttingDown)?;
    drop(ack);
    drop(charge);
    let outcome = if waits_for_delivery {
        let Ok(outcome) = tokio::time::timeout(s.delivery_timeout, waiter).await else {
            return Err(IngestError::Unavailable(format!(
                "the sinks did not confirm the push within {} (wal.delivery_timeout); its lines may still be delivered",
                humantime::format_duration(s.delivery_timeout)
            )));
        };
        outcome
    } else {
        waiter.await
    };
    match outcome {
        Ok(Ok(())) => Ok(()),
        Ok(Err(failure)) => Err(match failure.kind {
            AckFailureKind::Failed => IngestError::NotProcessed(failure.message),
            AckFailureKind::Overloaded => IngestError::Overloaded(failure.message),
            AckFailureKind::Unavailable => IngestError::Unavailable(failure.message),
            AckFailureKind::Rejected => IngestError::Rejected(failure.message),
        }),
        Err(_) => Err(IngestError::NotProcessed("the pipeline dropped the batch".into())),
    }
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
