//! The plugin stages of a configuration: every stage's plugin loaded once (compiled or taken
//! from the cache, linked, pre-instantiated, its `init` run on the stage's `config`), with
//! every problem reported at its location in the configuration. `sluice run` builds the
//! pipeline's stages from this; `sluice validate` runs the same checks without a cache.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::config::{Config, ConfigErrors, OnErrorConfig, PluginSource, RunMode, StageConfig, StageProblem};
use crate::pipeline::{Stage, StageError, StageFactory};

use super::PluginError;
use super::builtin::{self, Builtin};
use super::engine::{PluginEngine, PoolSize};
use super::instance::{LoadedPlugin, PluginSpec};
use super::stage::{NativeMaker, PluginStage};

/// The secret behind `keyed-hash` when a stage sets no `hash_key`. Public, so hashes made with
/// it are stable but not secret; sluice warns at startup when a stage uses it.
pub const DEFAULT_HASH_SECRET: &str = "sluice default hash key: set hash_key";

/// The key [`DEFAULT_HASH_SECRET`] derives; a Wasm stage hashing with it warns once.
pub static DEFAULT_HASH_KEY: std::sync::LazyLock<[u8; 32]> =
    std::sync::LazyLock::new(|| sluice_sdk::hash::derive_key(DEFAULT_HASH_SECRET.as_bytes()));

/// One loaded stage of a pipeline.
#[derive(Debug, Clone)]
pub struct LoadedStage {
    pub plugin: StagePlugin,
    pub on_error: OnErrorConfig,
    pub dead_letter: Option<String>,
}

/// A stage's plugin, checked: a Wasm component ready to instantiate, or a built-in compiled in.
#[derive(Clone)]
pub enum StagePlugin {
    Wasm(Arc<LoadedPlugin>),
    Native { stage: String, builtin: Builtin, make: NativeMaker },
}

impl std::fmt::Debug for StagePlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Wasm(p) => p.fmt(f),
            Self::Native { stage, builtin, .. } => write!(f, "Native({} in stage {stage})", builtin.name),
        }
    }
}

impl LoadedStage {
    /// Builds this stage's instance on each worker that calls it.
    pub fn factory(&self) -> StageFactory {
        match &self.plugin {
            StagePlugin::Wasm(plugin) => {
                let plugin = Arc::clone(plugin);
                Arc::new(move || {
                    PluginStage::wasm(Arc::clone(&plugin)).map(|s| Box::new(s) as Box<dyn Stage>).map_err(
                        |f| StageError {
                            stage: plugin.stage().to_string(),
                            reason: f.reason(),
                            message: format!("plugin `{}` {f}", plugin.info.name),
                        },
                    )
                })
            }
            StagePlugin::Native { stage, builtin, make } => {
                let (stage, name, make) = (stage.clone(), builtin.name, Arc::clone(make));
                Arc::new(move || {
                    PluginStage::native(&stage, name, Arc::clone(&make))
                        .map(|s| Box::new(s) as Box<dyn Stage>)
                        .map_err(|f| StageError {
                            stage: stage.clone(),
                            reason: f.reason(),
                            message: format!("plugin `{name}` {f}"),
                        })
                })
            }
        }
    }
}

/// Every pipeline's loaded stages, by pipeline name.
#[derive(Debug, Default)]
pub struct PluginStages {
    pub pipelines: BTreeMap<String, Vec<LoadedStage>>,
}

/// Loads every stage of every pipeline. `workers` sizes the instance pool (one instance per
/// worker per route that uses the pipeline); `cache_dir` is where compiled plugins are kept.
pub fn build_stages(
    config: &Config,
    workers: usize,
    cache_dir: Option<&Path>,
) -> Result<PluginStages, ConfigErrors> {
    let out = load_stages(config, workers, cache_dir)?;
    // A stage whose plugin file is missing was skipped; never run a pipeline without it.
    for (name, pipeline) in &config.pipelines {
        let loaded = out.pipelines.get(name).map_or(0, Vec::len);
        if loaded != pipeline.stages.len() {
            return Err(ConfigErrors(vec![crate::config::ConfigError {
                location: format!("pipelines.{name}"),
                message: "a stage's plugin file is missing".into(),
            }]));
        }
    }
    Ok(out)
}

/// What `sluice validate` adds to [`Config::validate`]: every plugin that exists is compiled
/// (not cached) and its `init` run on its stage's `config`.
pub fn check_config(config: &Config) -> Result<(), ConfigErrors> {
    load_stages(config, 1, None).map(drop)
}

fn load_stages(
    config: &Config,
    workers: usize,
    cache_dir: Option<&Path>,
) -> Result<PluginStages, ConfigErrors> {
    let mut out = PluginStages::default();
    if config.pipelines.is_empty() {
        return Ok(out);
    }
    let engine = PluginEngine::new(pool_size(config, workers)).map_err(|e| {
        ConfigErrors(vec![crate::config::ConfigError {
            location: "pipelines".into(),
            message: e.to_string(),
        }])
    })?;
    config.check_stages(|at| {
        let plugin = check_stage(&engine, &at.name, at.stage, &at.source, cache_dir)?;
        let stage =
            LoadedStage { plugin, on_error: at.stage.on_error(), dead_letter: at.stage.dead_letter.clone() };
        out.pipelines.entry(at.pipeline.to_string()).or_default().push(stage);
        Ok(())
    })?;
    Ok(out)
}

/// Loads one stage's plugin: what `sluice validate` runs for each stage.
pub fn check_stage(
    engine: &PluginEngine,
    stage_name: &str,
    stage: &StageConfig,
    source: &PluginSource,
    cache_dir: Option<&Path>,
) -> Result<StagePlugin, StageProblem> {
    let hash_key = match &stage.hash_key {
        Some(secret) => sluice_sdk::hash::derive_key(secret.as_bytes()),
        None => *DEFAULT_HASH_KEY,
    };
    let builtin = match source {
        PluginSource::Builtin(name) => Some(builtin::find(name).ok_or_else(|| StageProblem {
            key: "plugin",
            message: format!(
                "no built-in plugin `{name}` (built-ins: {}); a plugin file needs a path with a `/` or ending in `.wasm`",
                builtin::names().join(", ")
            ),
        })?),
        PluginSource::File(_) => None,
    };
    if let (Some(builtin), RunMode::Native) = (builtin, stage.run) {
        if stage.hash_key.is_none() {
            // Natively the hash runs inside the SDK, out of the host's sight: warn at load.
            tracing::warn!(
                stage = stage_name,
                "no hash_key: if the plugin hashes values it uses sluice's public default key, so its hashes are not secret"
            );
        }
        return load_native(stage_name, stage, builtin, hash_key);
    }
    let spec = PluginSpec {
        stage: stage_name.to_string(),
        config_json: stage.config.to_string(),
        timeout: stage.timeout,
        max_memory: usize::try_from(stage.max_memory.as_u64()).unwrap_or(usize::MAX),
        hash_key,
    };
    let started = std::time::Instant::now();
    let loaded = match (builtin, source) {
        (Some(b), _) => LoadedPlugin::load_bytes(engine, b.wasm, b.name, spec, cache_dir),
        (None, PluginSource::File(path)) => LoadedPlugin::load(engine, path, spec, cache_dir),
        (None, PluginSource::Builtin(_)) => unreachable!("a built-in source was resolved above"),
    };
    let plugin = loaded.map_err(|e| StageProblem {
        key: match e {
            PluginError::Rejected(_) | PluginError::InitFailed(_) => "config",
            _ => "plugin",
        },
        message: e.to_string(),
    })?;
    tracing::info!(
        stage = stage_name,
        plugin = %plugin.info.name,
        version = %plugin.info.version,
        source = ?source,
        cache = ?plugin.cache,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "plugin loaded"
    );
    Ok(StagePlugin::Wasm(plugin))
}

/// A built-in compiled into the host: its `init` runs now on the stage's config, so a bad
/// config is reported at load exactly as for Wasm.
fn load_native(
    stage_name: &str,
    stage: &StageConfig,
    builtin: Builtin,
    hash_key: [u8; 32],
) -> Result<StagePlugin, StageProblem> {
    let (config, factory) = (stage.config.to_string(), builtin.native);
    let (log_stage, plugin): (Arc<str>, Arc<str>) = (stage_name.into(), builtin.name.into());
    let logger: sluice_sdk::native::Logger = Arc::new(move |level, message: &str| {
        let (stage, plugin) = (&*log_stage, &*plugin);
        match level {
            sluice_sdk::Level::Trace => tracing::trace!(target: "sluice::plugin", stage, plugin, "{message}"),
            sluice_sdk::Level::Debug => tracing::debug!(target: "sluice::plugin", stage, plugin, "{message}"),
            sluice_sdk::Level::Info => tracing::info!(target: "sluice::plugin", stage, plugin, "{message}"),
            sluice_sdk::Level::Warn => tracing::warn!(target: "sluice::plugin", stage, plugin, "{message}"),
            sluice_sdk::Level::Error => tracing::error!(target: "sluice::plugin", stage, plugin, "{message}"),
        }
    });
    let make: NativeMaker = Arc::new(move || factory(&config, hash_key, Arc::clone(&logger)));
    make().map_err(|message| StageProblem {
        key: "config",
        message: format!("the plugin rejected its configuration: {message}"),
    })?;
    tracing::info!(
        stage = stage_name,
        plugin = builtin.name,
        "built-in plugin loaded, running natively (no sandbox)"
    );
    Ok(StagePlugin::Native { stage: stage_name.to_string(), builtin, make })
}

/// Instances alive at once: each worker holds one per stage per route that runs the stage's
/// pipeline; loading holds one more per stage for a moment.
fn pool_size(config: &Config, workers: usize) -> PoolSize {
    let stages =
        |p: &Option<String>| p.as_ref().and_then(|p| config.pipelines.get(p)).map_or(0, |p| p.stages.len());
    let per_worker: usize = config.routes.iter().map(|r| stages(&r.pipeline)).sum::<usize>()
        + config.default_route.as_ref().map_or(0, |d| stages(&d.pipeline));
    let loading: usize = config.pipelines.values().map(|p| p.stages.len()).sum();
    let instances = workers.saturating_mul(per_worker).saturating_add(loading).saturating_add(2);
    let max_memory = config
        .pipelines
        .values()
        .flat_map(|p| &p.stages)
        .map(|s| s.max_memory.as_u64())
        .max()
        .unwrap_or(1 << 20);
    PoolSize { instances: u32::try_from(instances).unwrap_or(u32::MAX), max_memory }
}
