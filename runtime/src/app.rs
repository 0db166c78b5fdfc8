//! Wiring: starts the sinks, the pipeline workers and the HTTP server, and owns shutdown.
//!
//! Shutdown runs front to back so nothing accepted is dropped on the way: stop answering ready,
//! stop accepting and finish in-flight requests, let the workers drain their queues, then let
//! each sink flush what it holds — all within `server.shutdown_timeout`. Reloads build a new
//! [`Generation`] over the same running sinks ([`crate::reload`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::buffer::Budget;
use crate::config::{Config, OnErrorConfig};
use crate::ingest::{self, Ingest};
use crate::pipeline::{Generation, OnError, Pipeline, RoutePlan, StagePlan};
use crate::plugin::{self, PluginStages};
use crate::reload::Reloading;
use crate::route::Router;
use crate::sink::SinkSender;
use crate::{sink, telemetry};

/// Reads the configuration again, from the same file and flags as at start.
pub type Reloader = Arc<dyn Fn() -> Result<Config, crate::config::ConfigErrors> + Send + Sync>;

/// Runs until SIGTERM or SIGINT, then shuts down.
pub async fn run(config: Config, reloader: Reloader) -> anyhow::Result<()> {
    let metrics = match telemetry::init_metrics() {
        Ok(handle) => Some(handle),
        Err(e) => {
            tracing::warn!("metrics disabled: {e}");
            None
        }
    };
    let mut sinks = Vec::new();
    let mut sink_tasks = Vec::new();
    let shutdown_deadline = sink::ShutdownDeadline::default();
    for (name, sink_config) in &config.sinks {
        let (tx, task) = sink::spawn(name, sink_config, &config.data_dir, &shutdown_deadline).await?;
        sinks.push((name.clone(), tx));
        sink_tasks.push((name.clone(), task));
    }
    let workers = match config.server.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let generation = tokio::task::block_in_place(|| build_generation(1, &config, sinks, workers))?;
    // From here on only generations hold sink senders, so sinks end once the pipeline has.
    let (pipeline, worker_handles) = Pipeline::start(workers, generation)?;
    let pipeline = Arc::new(pipeline);
    let budget = Budget::new(config.queue.max_entries as u64, config.queue.max_bytes.as_u64());
    let reloading = Reloading::new(reloader, Arc::clone(&pipeline), workers, &config);
    let mut ingest = Ingest::new(&config, Arc::clone(&pipeline), Arc::clone(&budget), metrics);
    ingest.reload = Some(reloading.hook());
    let state = Arc::new(ingest);
    reloading.spawn_triggers(&config.reload);

    let listen = config.server.listen;
    let listener = TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    let local = listener.local_addr().context("listening socket has no address")?;
    let sink_names: Vec<&String> = config.sinks.keys().collect();
    tracing::info!(listen = %local, sinks = ?sink_names, workers, data_dir = %config.data_dir.display(), "sluice is ready");

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let signal_state = Arc::clone(&state);
    let server = axum::serve(listener, ingest::app(Arc::clone(&state))).with_graceful_shutdown(async move {
        shutdown_signal().await;
        signal_state.ready.store(false, Ordering::Release);
        tracing::info!("shutting down: no new requests; flushing what was accepted");
        let _ = stop_tx.send(());
    });
    let server = tokio::spawn(async move { server.await });
    let _ = stop_rx.await;

    let timeout = config.server.shutdown_timeout;
    let deadline = tokio::time::Instant::now() + timeout;
    let _ = shutdown_deadline.set(deadline);
    let drained = tokio::time::timeout_at(deadline, async {
        match server.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("server error: {e}"),
            Err(e) => tracing::error!("server task failed: {e}"),
        }
        pipeline.close();
        let _ = tokio::task::spawn_blocking(move || {
            for handle in worker_handles {
                let _ = handle.join();
            }
        })
        .await;
        for (name, task) in sink_tasks {
            if let Err(e) = task.await {
                tracing::error!(sink = %name, "sink task failed: {e}");
            }
        }
    })
    .await;
    drop(state);
    if drained.is_err() {
        anyhow::bail!(
            "shutdown did not finish within {} (server.shutdown_timeout): {} entries ({} bytes) were not delivered",
            humantime::format_duration(timeout),
            budget.entries(),
            budget.bytes()
        );
    }
    tracing::info!("shutdown complete");
    Ok(())
}

/// The routes of `config` with their plugin stages (loaded now: compiled or from the cache,
/// then `init`) over the running `sinks`. Blocking: plugins compile on this thread.
pub fn build_generation(
    id: u64,
    config: &Config,
    sinks: Vec<(String, SinkSender)>,
    workers: usize,
) -> anyhow::Result<Generation> {
    let sink_names: Vec<String> = sinks.iter().map(|(n, _)| n.clone()).collect();
    let senders: Vec<SinkSender> = sinks.iter().map(|(_, s)| s.clone()).collect();
    let router = Router::new(config, &sink_names)?;
    let cache_dir = config.data_dir.join("plugin-cache");
    let plugins =
        plugin::build_stages(config, workers, Some(&cache_dir)).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut routes = Vec::with_capacity(router.len());
    for i in 0..router.len() {
        let route = router.route(i);
        let route_sinks = route.sinks.iter().map(|&s| senders[s].clone()).collect();
        // The router numbers the configured routes in order, the default route last.
        let pipeline = match config.routes.get(i) {
            Some(r) => r.pipeline.as_deref(),
            None => config.default_route.as_ref().and_then(|d| d.pipeline.as_deref()),
        };
        let stages = stage_plans(&plugins, pipeline, &sink_names, &senders)?;
        routes.push(RoutePlan { name: route.name.clone(), stages, sinks: route_sinks });
    }
    Ok(Generation { id, router, routes, sinks })
}

/// The stages of `pipeline` (none without one), each with its failure policy.
fn stage_plans(
    plugins: &PluginStages,
    pipeline: Option<&str>,
    sink_names: &[String],
    senders: &[sink::SinkSender],
) -> anyhow::Result<Vec<StagePlan>> {
    let Some(name) = pipeline else { return Ok(Vec::new()) };
    let stages = plugins.pipelines.get(name).with_context(|| format!("unknown pipeline `{name}`"))?;
    stages
        .iter()
        .map(|stage| {
            let on_error = match (stage.on_error, &stage.dead_letter) {
                (OnErrorConfig::Pass, _) => OnError::Pass,
                (OnErrorConfig::Drop, _) => OnError::Drop,
                (OnErrorConfig::DeadLetter, Some(sink)) => {
                    let i = sink_names
                        .iter()
                        .position(|n| n == sink)
                        .with_context(|| format!("unknown dead-letter sink `{sink}`"))?;
                    OnError::DeadLetter { sink: sink.clone(), sender: senders[i].clone() }
                }
                (OnErrorConfig::DeadLetter, None) => anyhow::bail!("on_error: dead_letter without a sink"),
            };
            Ok(StagePlan { factory: stage.factory(), on_error })
        })
        .collect()
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
