//! Self-observability: the tracing subscriber for sluice's own logs, and the Prometheus recorder
//! behind `GET /metrics`.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// How sluice's own logs are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber; `RUST_LOG` overrides `level` (e.g. `sluice=debug`).
pub fn init_logging(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    // Another subscriber may exist already (tests); keeping it is fine.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Seconds buckets for request and stage latencies: 0.5 ms to 30 s.
const LATENCY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Installs the global metrics recorder and returns the handle that renders it.
pub fn init_metrics() -> Result<PrometheusHandle, String> {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
        .map_err(|e| e.to_string())?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)
        .map_err(|e| format!("a metrics recorder is already installed: {e}"))?;
    describe();
    Ok(handle)
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!("sluice_ingest_requests_total", "Push requests by tenant and HTTP status.");
    describe_counter!(
        "sluice_ingest_received_bytes_total",
        "Request body bytes received, as sent (compressed)."
    );
    describe_counter!("sluice_ingest_entries_total", "Entries accepted.");
    describe_counter!("sluice_ingest_streams_total", "Streams accepted (one per stream per push).");
    describe_counter!("sluice_ingest_rejected_entries_total", "Entries rejected by validation, by reason.");
    describe_counter!("sluice_ingest_truncated_lines_total", "Lines truncated to max_line_size.");
    describe_histogram!("sluice_ingest_request_duration_seconds", "Push request latency.");
    describe_gauge!("sluice_queue_entries", "Entries held between ingest and delivery.");
    describe_gauge!("sluice_queue_bytes", "Bytes held between ingest and delivery.");
    describe_counter!("sluice_stage_errors_total", "Pipeline stage failures, by stage and reason.");
    describe_histogram!("sluice_stage_duration_seconds", "Time spent in a pipeline stage per batch.");
    describe_counter!(
        "sluice_stage_failed_entries_total",
        "Entries of batches a stage failed on, by the on_error policy applied."
    );
    describe_counter!("sluice_plugin_batches_total", "Batches a plugin processed.");
    describe_counter!("sluice_plugin_entries_in_total", "Entries passed into a plugin.");
    describe_counter!("sluice_plugin_entries_out_total", "Entries out of a plugin (kept, modified, added).");
    describe_counter!("sluice_plugin_entries_dropped_total", "Entries a plugin dropped.");
    describe_counter!("sluice_plugin_entries_modified_total", "Entries a plugin modified.");
    describe_counter!("sluice_plugin_entries_added_total", "Entries a plugin added.");
    describe_counter!("sluice_plugin_errors_total", "Plugin failures, by stage, plugin and reason.");
    describe_counter!(
        "sluice_plugin_instance_rebuilds_total",
        "Plugin instances rebuilt after a trap, timeout or memory exhaustion."
    );
    describe_counter!("sluice_plugin_log_suppressed_total", "Plugin log messages over the per-call limit.");
    describe_counter!(
        "sluice_plugin_events_total",
        "What a plugin counted, by event (at most 64 per stage)."
    );
    describe_counter!(
        "sluice_tenant_rewrites_total",
        "Entries a stage moved to another tenant (__tenant_id__)."
    );
    describe_counter!(
        "sluice_tenant_rewrites_refused_total",
        "Entries a stage tried to move to a tenant the route does not allow (tenants_out) or to an invalid id; they kept their tenant."
    );
    describe_counter!("sluice_reloads_total", "Configuration reloads, by result.");
    describe_gauge!("sluice_http_connections", "HTTP connections open.");
    describe_counter!(
        "sluice_tenants_refused_total",
        "Pushes refused because tenants.max_active tenants without an entry were active already."
    );
    describe_counter!(
        "sluice_http_connections_refused_total",
        "Connections answered 503 and closed past server.max_connections."
    );
    describe_counter!(
        "sluice_http_requests_refused_total",
        "Requests refused before they were handled, by reason (inflight: server.max_inflight_requests; admin_auth: a reload without the admin token)."
    );
    describe_counter!("sluice_route_dropped_entries_total", "Entries that no route or sink took.");
    describe_counter!("sluice_sink_requests_total", "Sink requests by status.");
    describe_counter!("sluice_sink_sent_entries_total", "Entries delivered by a sink.");
    describe_counter!("sluice_sink_sent_bytes_total", "Bytes delivered by a sink.");
    describe_counter!("sluice_sink_retries_total", "Sink retries, by reason.");
    describe_counter!("sluice_sink_dropped_entries_total", "Entries a sink dropped, by reason.");
    describe_histogram!("sluice_sink_request_duration_seconds", "Sink request latency.");
}
