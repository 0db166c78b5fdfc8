//! Wiring: starts the sinks, the pipeline workers and the HTTP server, and owns shutdown.
//!
//! Shutdown runs front to back so nothing accepted is dropped on the way: stop answering ready,
//! stop accepting and finish in-flight requests, let the workers drain their queues into the
//! write-ahead log (or, `in_memory`, the sinks), let the log's readers hand the sinks what is
//! left, then let each sink flush what it holds — all within `server.shutdown_timeout`. What a
//! sink has not delivered by then stays in the log for the next start. Reloads build a new
//! [`Generation`] over the same running sinks ([`crate::reload`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use tokio::net::TcpListener;

use crate::buffer::Budget;
use crate::config::{Config, OnErrorConfig, WalConfig};
use crate::ingest::{self, Ingest};
use crate::pipeline::{Generation, OnError, Pipeline, RoutePlan, SinkTarget, StagePlan};
use crate::plugin::{self, PluginStages};
use crate::reload::Reloading;
use crate::route::Router;
use crate::sink::SinkSender;
use crate::wal::Wal;
use crate::{sink, telemetry, wal};

/// Reads the configuration again, from the same file and flags as at start.
pub type Reloader = Arc<dyn Fn() -> Result<Config, crate::config::ConfigErrors> + Send + Sync>;

/// Runs until SIGTERM or SIGINT, then shuts down.
pub async fn run(config: Config, reloader: Reloader) -> anyhow::Result<()> {
    // Bad TLS files stop the start before anything else is opened.
    let transport = match &config.server.tls {
        Some(tls) => ingest::serve::Transport::Tls(ingest::tls::Tls::new(tls).context("server.tls")?),
        None => ingest::serve::Transport::Plain,
    };
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
    let wal = open_wal(&config)?;
    // Each sink follows the log from its own cursor (see `wal`).
    let stop_readers = Arc::new(AtomicBool::new(false));
    if let Some(wal) = &wal {
        for (name, tx) in &sinks {
            let tracker = wal.tracker(name).with_context(|| format!("sink `{name}` has no log cursor"))?;
            let read_ahead = config.wal.read_ahead.as_u64();
            wal::reader::spawn(Arc::clone(wal), tracker, tx.clone(), read_ahead, Arc::clone(&stop_readers))
                .context("cannot start a write-ahead log reader")?;
        }
    }
    let workers = crate::config::threads_or_cores(config.server.workers);
    let generation = tokio::task::block_in_place(|| build_generation(1, &config, sinks, workers))?;
    // From here on only generations hold sink senders, so sinks end once the pipeline has.
    let (pipeline, worker_handles) = Pipeline::start(workers, generation, wal.clone())?;
    let pipeline = Arc::new(pipeline);
    let budget = Budget::new(config.queue.max_entries as u64, config.queue.max_bytes.as_u64());
    let mut ingest = Ingest::new(&config, Arc::clone(&pipeline), Arc::clone(&budget), metrics);
    let reloading = Reloading::new(
        reloader,
        Arc::clone(&pipeline),
        Arc::clone(&ingest.tenants),
        workers,
        &config,
        wal.is_some(),
    );
    ingest.wal = wal.clone();
    ingest.reload = Some(reloading.hook());
    let state = Arc::new(ingest);
    reloading.spawn_triggers(&config.reload);

    let listen = config.server.listen;
    let listener = TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    let local = listener.local_addr().context("listening socket has no address")?;
    if !local.ip().is_loopback() && !config.tenants.require_auth {
        tracing::warn!(
            listen = %local,
            "listening beyond loopback without tenants.require_auth: anyone who reaches this port can push as any tenant that has no auth entry"
        );
    }
    let admin_listener = match config.server.admin_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (server.admin_listen)"))?,
        ),
        None => None,
    };
    let admin_local = admin_listener.as_ref().map(TcpListener::local_addr).transpose()?;
    let sink_names: Vec<&String> = config.sinks.keys().collect();
    let tls = matches!(transport, ingest::serve::Transport::Tls(_));
    tracing::info!(
        listen = %local, tls, admin_listen = ?admin_local, sinks = ?sink_names, workers,
        data_dir = %config.data_dir.display(), "sluice is ready"
    );
    let tls_watch = match &transport {
        ingest::serve::Transport::Tls(tls) => Some(tokio::spawn(Arc::clone(tls).watch())),
        ingest::serve::Transport::Plain => None,
    };

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let signal_state = Arc::clone(&state);
    tokio::spawn(async move {
        shutdown_signal().await;
        signal_state.ready.store(false, Ordering::Release);
        tracing::info!("shutting down: no new requests; flushing what was accepted");
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let limits = ingest::serve::ConnectionLimits {
        max_connections: config.server.max_connections,
        header_read_timeout: config.server.header_read_timeout,
    };
    let endpoints = if admin_listener.is_some() { ingest::Endpoints::Public } else { ingest::Endpoints::All };
    let app = ingest::app(Arc::clone(&state), endpoints);
    let server =
        tokio::spawn(ingest::serve::serve(listener, app, limits, transport, stopped(stop_rx.clone())));
    let admin_server = admin_listener.map(|listener| {
        let app = ingest::app(Arc::clone(&state), ingest::Endpoints::Admin);
        let plain = ingest::serve::Transport::Plain;
        tokio::spawn(ingest::serve::serve(listener, app, limits, plain, stopped(stop_rx.clone())))
    });
    stopped(stop_rx).await;
    if let Some(watch) = tls_watch {
        watch.abort();
    }

    let timeout = config.server.shutdown_timeout;
    let deadline = tokio::time::Instant::now() + timeout;
    let _ = shutdown_deadline.set(deadline);
    let drained = tokio::time::timeout_at(deadline, async {
        for server in std::iter::once(server).chain(admin_server) {
            if let Err(e) = server.await {
                tracing::error!("server task failed: {e}");
            }
        }
        pipeline.close();
        let _ = tokio::task::spawn_blocking(move || {
            for handle in worker_handles {
                let _ = handle.join();
            }
        })
        .await;
        // The readers hand the sinks what is left in the log, then let go of them.
        if let Some(wal) = &wal {
            wal.close();
        }
        for (name, task) in sink_tasks {
            if let Err(e) = task.await {
                tracing::error!(sink = %name, "sink task failed: {e}");
            }
        }
    })
    .await;
    drop(state);
    stop_readers.store(true, Ordering::Release);
    if let Some(wal) = wal {
        let left = tokio::task::spawn_blocking(move || wal.shutdown()).await.unwrap_or_default();
        for (sink, bytes) in left {
            tracing::warn!(sink = %sink, bytes, "records stay in the write-ahead log; they are delivered after the next start");
        }
    }
    // What the log holds survives; only entries acknowledged `in_memory` can be lost here.
    if drained.is_err() && budget.entries() > 0 {
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
    let senders: Vec<SinkTarget> =
        sinks.iter().map(|(n, s)| SinkTarget { name: Arc::from(n.as_str()), sender: s.clone() }).collect();
    let router = Router::new(config, &sink_names)?;
    let cache_dir = config.data_dir.join("plugin-cache");
    let plugins =
        plugin::build_stages(config, workers, Some(&cache_dir)).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut routes = Vec::with_capacity(router.len());
    for i in 0..router.len() {
        let route = router.route(i);
        let route_sinks = route.sinks.iter().map(|&s| senders[s].clone()).collect();
        // The router numbers the configured routes in order, the default route last.
        let (pipeline, ack, tenants_out) = match config.routes.get(i) {
            Some(r) => (r.pipeline.as_deref(), r.ack, r.tenants_out.as_slice()),
            None => config
                .default_route
                .as_ref()
                .map_or((None, None, &[][..]), |d| (d.pipeline.as_deref(), d.ack, d.tenants_out.as_slice())),
        };
        let stages = stage_plans(&plugins, pipeline, &sink_names, &senders)?;
        let tenants_out = tenants_out.iter().map(|t| Arc::from(t.as_str())).collect();
        routes.push(RoutePlan { name: route.name.clone(), stages, sinks: route_sinks, ack, tenants_out });
    }
    Ok(Generation { id, router, routes, sinks, default_ack: config.wal.ack })
}

/// The stages of `pipeline` (none without one), each with its failure policy.
fn stage_plans(
    plugins: &PluginStages,
    pipeline: Option<&str>,
    sink_names: &[String],
    senders: &[SinkTarget],
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
                    OnError::DeadLetter(senders[i].clone())
                }
                (OnErrorConfig::DeadLetter, None) => anyhow::bail!("on_error: dead_letter without a sink"),
            };
            Ok(StagePlan { factory: stage.factory(), on_error })
        })
        .collect()
}

/// Opens the write-ahead log when some route or tenant acknowledges `on_disk`, or when an
/// earlier run left records in it (they are delivered even if nothing uses the log any more).
fn open_wal(config: &Config) -> anyhow::Result<Option<Arc<Wal>>> {
    if !WalConfig::in_use(config) && !crate::wal::has_segments(&config.wal.dir_in(&config.data_dir)) {
        return Ok(None);
    }
    let sinks: Vec<String> = config.sinks.keys().cloned().collect();
    let (wal, recovered) = tokio::task::block_in_place(|| Wal::open(&config.wal, &config.data_dir, &sinks))
        .map_err(anyhow::Error::msg)?;
    if recovered.torn_bytes > 0 || recovered.damaged > 0 {
        tracing::warn!(
            torn_bytes = recovered.torn_bytes,
            damaged_regions = recovered.damaged,
            "the write-ahead log was cut off by a crash: its torn tail was removed; damaged records are skipped"
        );
    }
    let backlog: u64 = recovered.backlog.iter().map(|(_, b)| b).sum();
    tracing::info!(
        dir = %wal.dir().display(),
        segments = recovered.segments,
        bytes = recovered.bytes,
        undelivered_bytes = backlog,
        took = ?recovered.took,
        "write-ahead log opened"
    );
    Ok(Some(wal))
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
