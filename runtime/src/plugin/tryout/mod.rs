//! `sluice plugin test`: runs one plugin over a file of log lines and shows what it did.
//!
//! The plugin is loaded exactly as a pipeline stage loads it — the stage's defaults and limits,
//! the same engine, `init` on the given configuration, the same hash-key derivation — without
//! the compiled-plugin cache. The input ([`input`]) is cut into batches of at most
//! `batch_size` entries; each batch is one `process` call whose response is checked as the
//! service checks it. The report ([`report`]) shows every entry kept, changed (old and new),
//! dropped or added, then a summary; or, as NDJSON, the entries that come out.

pub mod input;
pub mod logs;
pub mod report;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytesize::ByteSize;
use sluice_sdk::format::request::RequestWriter;
use sluice_sdk::format::response::Response;

use super::Failure;
use super::apply::apply;
use super::build::{DEFAULT_HASH_SECRET, StagePlugin, check_stage};
use super::engine::{PluginEngine, PoolSize};
use super::instance::LoadedPlugin;
use super::stage::{check_output_bound, encode_request};
use crate::config::{MAX_PLUGIN_MEMORY, PluginSource, StageConfig};

pub use report::{OutputFormat, Summary};

/// The stage name the plugin runs under, as `<pipeline>/<file stem>` would be in a pipeline.
pub const PIPELINE: &str = "plugin-test";

/// What to run and on what.
#[derive(Debug, Clone)]
pub struct Options {
    /// The plugin's `.wasm`, or a built-in's name.
    pub plugin: PathBuf,
    /// The stage's `config`, as JSON.
    pub config: serde_json::Value,
    /// The input file; `-` is stdin.
    pub input: PathBuf,
    pub tenant: String,
    /// The stage's `hash_key`; `None`: sluice's public default, as for a stage without one.
    pub hash_key: Option<String>,
    pub format: OutputFormat,
    /// Most entries per `process` call.
    pub batch_size: usize,
    /// The stage's `timeout`; `None`: the stage default.
    pub timeout: Option<Duration>,
    /// The stage's `max_memory`; `None`: the stage default.
    pub max_memory: Option<ByteSize>,
}

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum TryoutError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot read the input {path}: {message}")]
    Input { path: String, message: String },
    #[error("plugin {plugin}: {message}")]
    Load { plugin: String, message: String },
    #[error(
        "plugin `{plugin}` failed on batch {batch} of {batches} ({entries} entr{}): {failure}",
        if *.entries == 1 { "y" } else { "ies" }
    )]
    Failed { plugin: String, batch: usize, batches: usize, entries: usize, failure: Failure },
    #[error("cannot write the output: {0}")]
    Output(std::io::Error),
}

/// Loads the plugin, runs it over the input and writes the report to `out` (the summary of the
/// NDJSON format to `err`).
pub fn run(options: &Options, out: &mut dyn Write, err: &mut dyn Write) -> Result<Summary, TryoutError> {
    let stage = stage_config(options)?;
    let bytes = read_input(&options.input)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    let input = input::parse(&bytes, &options.tenant, now)
        .map_err(|message| TryoutError::Input { path: options.input.display().to_string(), message })?;
    drop(bytes);
    for rejected in &input.rejected {
        writeln!(err, "warning: input entries left out: {rejected}").map_err(TryoutError::Output)?;
    }
    logs::hold();
    let loaded = load(options, &stage);
    logs::release(loaded.is_err());
    let plugin = loaded?;
    let batches = input::split(input.batch, options.batch_size);
    let mut report = report::Report::new(options.format, out);
    let count = batches.len();
    let mut writer = RequestWriter::default();
    let mut request = Vec::new();
    let mut instance = None;
    for (i, batch) in batches.into_iter().enumerate() {
        let failed = |failure| TryoutError::Failed {
            plugin: plugin.info.name.clone(),
            batch: i + 1,
            batches: count,
            entries: batch.entry_count(),
            failure,
        };
        let instance = match &mut instance {
            Some(instance) => instance,
            None => instance.insert(plugin.instantiate().map_err(failed)?),
        };
        encode_request(&mut writer, &batch, &mut request).map_err(failed)?;
        let started = Instant::now();
        let response = instance.process(&request).map_err(failed)?;
        let elapsed = started.elapsed();
        let checked =
            Response::parse(&response, batch.entry_count()).map_err(|e| failed(Failure::Malformed(e.0)))?;
        check_output_bound(&checked, batch.entry_count(), request.len()).map_err(failed)?;
        let mut after = batch.clone();
        apply(&mut after, &checked);
        report.batch(&batch, &checked, &after, elapsed).map_err(TryoutError::Output)?;
    }
    let summary = report.finish(&plugin.info.name, &plugin.info.version).map_err(TryoutError::Output)?;
    if options.format == OutputFormat::Ndjson {
        writeln!(err, "{summary}").map_err(TryoutError::Output)?;
    }
    Ok(summary)
}

/// The stage's `config` from `--config` or `--config-file`, JSON or YAML as in sluice.yaml;
/// `{}` without either.
pub fn parse_config(inline: Option<&str>, file: Option<&Path>) -> Result<serde_json::Value, TryoutError> {
    let (text, source) = match (inline, file) {
        (Some(text), _) => (text.to_string(), "--config".to_string()),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| TryoutError::Usage(format!("cannot read {}: {e}", path.display())))?;
            (text, path.display().to_string())
        }
        (None, None) => return Ok(serde_json::Value::Object(serde_json::Map::new())),
    };
    serde_yaml_ng::from_str::<serde_json::Value>(&text)
        .map_err(|e| TryoutError::Usage(format!("{source}: not valid JSON or YAML: {e}")))
}

/// The stage as the configuration would give it, with the flags' overrides.
fn stage_config(options: &Options) -> Result<StageConfig, TryoutError> {
    let secret = options.hash_key.clone().unwrap_or_else(|| DEFAULT_HASH_SECRET.to_string());
    let value = serde_json::json!({ "plugin": options.plugin, "config": options.config, "hash_key": secret });
    let mut stage: StageConfig =
        serde_json::from_value(value).map_err(|e| TryoutError::Usage(format!("invalid stage: {e}")))?;
    if let Some(timeout) = options.timeout {
        stage.timeout = timeout;
    }
    if let Some(max_memory) = options.max_memory {
        stage.max_memory = max_memory;
    }
    let memory = stage.max_memory.as_u64();
    if memory < ByteSize::mib(1).as_u64() || memory > MAX_PLUGIN_MEMORY {
        return Err(TryoutError::Usage("--max-memory must be between 1MiB and 4GiB".into()));
    }
    if stage.timeout.is_zero() {
        return Err(TryoutError::Usage("--timeout must be more than 0".into()));
    }
    Ok(stage)
}

/// Compiles the plugin (no cache) and runs its `init` on the configuration, as a stage does.
fn load(options: &Options, stage: &StageConfig) -> Result<Arc<LoadedPlugin>, TryoutError> {
    let fail = |message: String| TryoutError::Load { plugin: options.plugin.display().to_string(), message };
    // The rule a config uses: a bare name is a built-in, anything else a file.
    let source = crate::config::plugin_source(Path::new(""), &options.plugin);
    if matches!(&source, PluginSource::File(path) if !path.is_file()) {
        return Err(fail("no such file".into()));
    }
    // The probe instance of loading, the instance that runs, and room for one rebuild.
    let engine = PluginEngine::new(PoolSize { instances: 3, max_memory: stage.max_memory.as_u64() })
        .map_err(|e| fail(e.to_string()))?;
    let name = crate::config::stage_name(PIPELINE, stage);
    match check_stage(&engine, &name, stage, &source, None).map_err(|p| fail(p.message))? {
        StagePlugin::Wasm(plugin) => Ok(plugin),
        StagePlugin::Native { .. } => Err(fail("`plugin test` runs plugins as Wasm".into())),
    }
}

fn read_input(path: &Path) -> Result<Vec<u8>, TryoutError> {
    let result = if path == Path::new("-") {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut bytes).map(|_| bytes)
    } else {
        std::fs::read(path)
    };
    result.map_err(|e| TryoutError::Input { path: path.display().to_string(), message: e.to_string() })
}
