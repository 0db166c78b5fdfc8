//! The HTTP side: Loki's push endpoint, readiness and metrics.
//!
//! A push is read with a size limit, decoded and validated (valid entries are kept, as Loki
//! does), charged against the memory budget (429 when it is spent), split by route and worker,
//! handed to the pipeline, and answered once the pipeline has passed it to the sinks.

mod error;
mod tenant;
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

use crate::buffer::Budget;
use crate::config::AckMode;
use crate::config::Config;
use crate::decode::{self, BodyFormat, Decoded};
use crate::model::{Ack, AckFailureKind, Batch};
use crate::pipeline::{Job, Pipeline};
use crate::wal::Wal;

/// Everything the handlers need.
pub struct Ingest {
    pub tenants: Tenants,
    /// Reloads the configuration (`POST /-/reload`); answers what changed or why not.
    pub reload: Option<ReloadHook>,
    pub pipeline: Arc<Pipeline>,
    pub budget: Arc<Budget>,
    /// The write-ahead log, when some route or tenant acknowledges `on_disk`.
    pub wal: Option<Arc<Wal>>,
    /// How long an `on_delivery` push waits for its sinks.
    pub delivery_timeout: std::time::Duration,
    pub max_body_size: u64,
    pub max_decompressed_size: usize,
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
        Self {
            tenants: Tenants::new(config),
            reload: None,
            pipeline,
            budget,
            wal: None,
            delivery_timeout: config.wal.delivery_timeout,
            max_body_size: config.server.max_body_size.as_u64(),
            max_decompressed_size: usize::try_from(config.server.max_decompressed_size.as_u64())
                .unwrap_or(usize::MAX),
            ready: AtomicBool::new(true),
            metrics,
        }
    }
}

/// The HTTP routes; tests call this without a socket.
pub fn app(state: Arc<Ingest>) -> Router {
    Router::new()
        .route("/loki/api/v1/push", post(push))
        .route("/api/prom/push", post(push))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/-/reload", post(reload))
        .with_state(state)
}

async fn ready(State(s): State<Arc<Ingest>>) -> Response {
    if s.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    }
}

/// Runs a reload; `Ok` says what is now in effect, `Err` why the old configuration stays.
pub type ReloadHook =
    Arc<dyn Fn() -> std::pin::Pin<Box<dyn Future<Output = Result<String, String>> + Send>> + Send + Sync>;

async fn reload(State(s): State<Arc<Ingest>>) -> Response {
    let Some(hook) = &s.reload else {
        return (StatusCode::NOT_FOUND, "reloading is not enabled\n").into_response();
    };
    match hook().await {
        Ok(message) => (StatusCode::OK, format!("{message}\n")).into_response(),
        Err(message) => (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response(),
    }
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

async fn push(State(s): State<Arc<Ingest>>, request: Request) -> Response {
    let started = Instant::now();
    let (parts, mut body) = request.into_parts();
    let (tenant, result) = match s.tenants.authenticate(&parts.headers) {
        Ok(tenant) => {
            let result = accept(&s, &tenant, &parts.headers, &mut body).await;
            (Some(tenant.name), result)
        }
        Err(e) => (None, Err(e)),
    };
    let tenant = tenant.as_deref().unwrap_or("").to_string();
    let response = match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => {
            tracing::debug!(tenant = %tenant, status = e.status().as_u16(), error = %e, "push refused");
            let mut response = e.into_response();
            // A client still sending would see a broken pipe instead of our answer if we
            // closed now; read on (bounded) and keep the connection usable.
            if !drain(&mut body, DRAIN_LIMIT).await {
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

async fn accept(
    s: &Ingest,
    tenant: &Tenant,
    headers: &HeaderMap,
    body: &mut Body,
) -> Result<(), IngestError> {
    let body = read_body(body, headers, s.max_body_size).await?;
    let t = tenant.name.to_string();
    metrics::counter!("sluice_ingest_received_bytes_total", "tenant" => t.clone())
        .increment(body.len() as u64);
    let format = BodyFormat {
        content_type: headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()),
        content_encoding: headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()),
    };
    let Decoded { batch, rejected, truncated_lines } = decode::decode_push(
        &body,
        format,
        Arc::clone(&tenant.name),
        &tenant.limits,
        s.max_decompressed_size,
        now_ns(),
    )?;
    drop(body);
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
        dispatch(s, tenant, batch).await?;
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
/// says so); what is left unread stays in `body`.
async fn read_body(body: &mut Body, headers: &HeaderMap, limit: u64) -> Result<bytes::Bytes, IngestError> {
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(IngestError::BodyTooLarge { limit });
    }
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    // Trust the declared length for the first allocation only up to 1 MiB: a client could
    // declare much and send little.
    let mut buf = bytes::BytesMut::with_capacity(declared.map_or(0, |n| n.min(1 << 20) as usize));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| IngestError::Body(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(IngestError::BodyTooLarge { limit: limit as u64 });
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
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
async fn dispatch(s: &Ingest, tenant_info: &Tenant, batch: Batch) -> Result<(), IngestError> {
    let charge = s
        .budget
        .try_charge(batch.entry_count() as u64, batch.size() as u64)
        .map(Arc::new)
        .ok_or_else(|| IngestError::QueueFull { entries: s.budget.entries(), bytes: s.budget.bytes() })?;
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
