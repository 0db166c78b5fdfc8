//! Hot reload: SIGHUP, `POST /-/reload`, or a changed configuration or plugin file re-reads the
//! configuration and swaps in a new [`Generation`](crate::pipeline::Generation) of routes and
//! plugin stages over the running sinks.
//!
//! Tenants (credentials, limits, acknowledgement modes) and the global `limits` are replaced too,
//! so a revoked token stops working at the reload. `server`, `data_dir`, `queue` and `wal` need a
//! restart: a reload that changes them applies the rest and says (409) that they are not in
//! effect.
//!
//! A reload is all or nothing: a configuration that does not validate, a plugin that fails to
//! compile or whose `init` rejects its config, or a change to `sinks` (which needs a restart)
//! leaves the running generation in place and says why. Batches already routed finish on the
//! generation they started with (see [`crate::pipeline`]), so nothing is lost or processed twice.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::app::{Reloader, build_generation};
use crate::config::{Config, ReloadConfig, WalConfig};
use crate::ingest::{ReloadHook, ReloadOutcome, Tenants};
use crate::pipeline::Pipeline;

/// The reload controller.
pub struct Reloading {
    reloader: Reloader,
    pipeline: Arc<Pipeline>,
    /// Ingest's tenants: credentials and limits are replaced by a reload too.
    tenants: Arc<Tenants>,
    workers: usize,
    /// One reload at a time.
    busy: tokio::sync::Mutex<()>,
    running: Mutex<Running>,
    /// Whether the write-ahead log is open.
    has_wal: bool,
}

/// What the running configuration was, to tell what a reload may change.
struct Running {
    generation: u64,
    /// `sinks`, as text: a change needs a restart.
    sinks: String,
    /// The sections a reload does not apply, as text.
    restart_only: [(&'static str, String); 4],
    watched: Vec<PathBuf>,
    stamp: Vec<Option<(SystemTime, u64)>>,
}

impl Running {
    fn of(config: &Config, generation: u64) -> Self {
        let watched = config.watched_files();
        Self {
            generation,
            sinks: format!("{:?}", config.sinks),
            restart_only: [
                ("server", format!("{:?}", config.server)),
                ("data_dir", format!("{:?}", config.data_dir)),
                ("queue", format!("{:?}", config.queue)),
                ("wal", format!("{:?}", config.wal)),
            ],
            stamp: stamp(&watched),
            watched,
        }
    }
}

/// Modification time and length of each file; `None` when it cannot be read. What the
/// watchers compare to tell that a file changed (the configuration, plugins, TLS files).
pub(crate) fn stamp<'a>(files: impl IntoIterator<Item = &'a PathBuf>) -> Vec<Option<(SystemTime, u64)>> {
    files
        .into_iter()
        .map(|f| std::fs::metadata(f).ok().and_then(|m| Some((m.modified().ok()?, m.len()))))
        .collect()
}

impl Reloading {
    /// `has_wal`: whether the write-ahead log was opened at start (a reload cannot open it).
    pub fn new(
        reloader: Reloader,
        pipeline: Arc<Pipeline>,
        tenants: Arc<Tenants>,
        workers: usize,
        config: &Config,
        has_wal: bool,
    ) -> Arc<Self> {
        Arc::new(Self {
            has_wal,
            reloader,
            pipeline,
            tenants,
            workers,
            busy: tokio::sync::Mutex::new(()),
            running: Mutex::new(Running::of(config, 1)),
        })
    }

    /// The handler behind `POST /-/reload`.
    pub fn hook(self: &Arc<Self>) -> ReloadHook {
        let this = Arc::clone(self);
        Arc::new(move || {
            let this = Arc::clone(&this);
            Box::pin(async move { this.reload("POST /-/reload").await })
        })
    }

    /// Re-reads the configuration and swaps in its routes, plugins and tenants, or says why not.
    pub async fn reload(self: &Arc<Self>, cause: &str) -> ReloadOutcome {
        let _one_at_a_time = self.busy.lock().await;
        let this = Arc::clone(self);
        let outcome = tokio::task::spawn_blocking(move || this.reload_blocking())
            .await
            .unwrap_or_else(|e| Err(format!("the reload failed: {e}")));
        let (outcome, result) = match outcome {
            Ok((message, false)) => {
                tracing::info!(cause, "{message}");
                (ReloadOutcome::Applied(message), "success")
            }
            Ok((message, true)) => {
                tracing::warn!(cause, "{message}");
                (ReloadOutcome::Partial(message), "partial")
            }
            Err(message) => {
                tracing::error!(cause, "{message}");
                (ReloadOutcome::Refused(message), "failure")
            }
        };
        metrics::counter!("sluice_reloads_total", "result" => result).increment(1);
        outcome
    }

    /// What is now in effect, and whether some change is not (it needs a restart); or why
    /// nothing changed.
    fn reload_blocking(&self) -> Result<(String, bool), String> {
        let refused = |why: String| format!("configuration not reloaded, the running one stays: {why}");
        let config = (self.reloader)().map_err(|e| refused(e.to_string()))?;
        let current = self.pipeline.current().map_err(|e| refused(e.to_string()))?;
        let (id, changed_restart_only) = {
            let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            let next = Running::of(&config, running.generation + 1);
            // Whatever happens next, these files have been looked at in this state.
            running.stamp = next.stamp.clone();
            if next.sinks != running.sinks {
                return Err(refused("`sinks` changed, which needs a restart".into()));
            }
            let changed: Vec<&str> = next
                .restart_only
                .iter()
                .zip(&running.restart_only)
                .filter(|(a, b)| a.1 != b.1)
                .map(|(a, _)| a.0)
                .collect();
            (next.generation, changed)
        };
        // Without a log, an `on_disk` route would quietly acknowledge from memory: a promise
        // the reload cannot keep. (A changed `wal.ack` is restart-only, reported below.)
        if !self.has_wal && WalConfig::asked_for(&config) {
            return Err(refused(
                "a route or tenant now acknowledges `on_disk`, but the write-ahead log was not opened at start \
                 (nothing acknowledged on_disk then): restart sluice to apply it"
                    .into(),
            ));
        }
        let mut generation = build_generation(id, &config, current.sinks.clone(), self.workers)
            .map_err(|e| refused(format!("{e:#}")))?;
        // `wal` (its default acknowledgement mode included) takes effect after a restart.
        generation.default_ack = current.default_ack;
        let (routes, stages) =
            (generation.routes.len(), generation.routes.iter().map(|r| r.stages.len()).sum::<usize>());
        self.pipeline.swap(generation).map_err(|e| refused(e.to_string()))?;
        self.tenants.reconfigure(&config);
        *self.running.lock().unwrap_or_else(|p| p.into_inner()) = Running::of(&config, id);
        let mut message =
            format!("reloaded: generation {id}, {routes} routes, {stages} plugin stages, tenants and limits");
        if !changed_restart_only.is_empty() {
            message.push_str(&format!(
                "; changes to {} are NOT in effect: they need a restart",
                changed_restart_only.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
            ));
        }
        Ok((message, !changed_restart_only.is_empty()))
    }

    /// Starts the SIGHUP listener and, if configured, the file watcher; both end with the pipeline.
    pub fn spawn_triggers(self: &Arc<Self>, config: &ReloadConfig) {
        #[cfg(unix)]
        {
            let this = Arc::clone(self);
            tokio::spawn(async move {
                let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                else {
                    tracing::warn!("cannot listen for SIGHUP; reload with POST /-/reload");
                    return;
                };
                while hup.recv().await.is_some() && this.pipeline.current().is_ok() {
                    let _ = this.reload("SIGHUP").await;
                }
            });
        }
        if config.watch {
            let this = Arc::clone(self);
            let interval = config.watch_interval;
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    if this.pipeline.current().is_err() {
                        return;
                    }
                    let changed = {
                        let running = this.running.lock().unwrap_or_else(|p| p.into_inner());
                        stamp(&running.watched) != running.stamp
                    };
                    if changed {
                        let _ = this.reload("a watched file changed").await;
                    }
                }
            });
        }
    }
}
