//! The WebAssembly plugin host: plugins are components of the `log-plugin` world
//! (`sdk/wit/plugin.wit`) that see each batch as one flat buffer (`sdk/FORMAT.md`).
//!
//! - [`engine`]: the one wasmtime engine (pooling allocator, copy-on-write images, epoch
//!   deadlines driven by a ticker thread);
//! - [`cache`]: compile once, keep the artifact in `<data_dir>/plugin-cache/`;
//! - [`instance`]: load (compile, link, pre-instantiate, check `info` and `init`) and the
//!   per-worker instances;
//! - [`host`] and [`capture`]: the sandbox and the host imports (`log`, `keyed-hash`);
//! - [`apply`]: a checked response applied to the host's batch;
//! - [`stage`]: [`PluginStage`], the pipeline stage (Wasm or a native built-in), with its metrics and failure handling;
//! - [`build`]: stages from the configuration, for `sluice run` and `sluice validate`;
//! - [`tryout`] and [`scaffold`]: `sluice plugin test` and `sluice plugin new`, for authors.
//!
//! A plugin is untrusted: a trap, a timeout, exhausted memory, a returned error or a malformed
//! response fails only the batch at hand (the stage's `on_error` policy decides its fate, see
//! [`crate::pipeline`]), and an instance that trapped is thrown away and rebuilt.

pub mod apply;
mod bindings;
pub mod build;
pub mod builtin;
pub mod cache;
pub mod capture;
pub mod engine;
pub mod host;
pub mod instance;
#[cfg(test)]
mod parity;
pub mod scaffold;
pub mod stage;
#[cfg(test)]
mod tests;
pub mod tryout;

pub use build::{PluginStages, StagePlugin, build_stages, check_config, check_stage};
pub use engine::{PluginEngine, PoolSize};
pub use instance::{LoadedPlugin, PluginInfo, PluginSpec};
pub use stage::PluginStage;

use std::time::Duration;

/// Why a plugin could not be loaded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PluginError {
    #[error("cannot start the WebAssembly engine: {0}")]
    Engine(String),
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error(
        "not a valid plugin component (build it with `cargo build --release --target wasm32-wasip2`): {0}"
    )]
    Compile(String),
    #[error(
        "the plugin needs imports sluice does not offer (only WASI p2 and the sluice host interface): {0}"
    )]
    Link(String),
    #[error("the plugin failed to start: {0}")]
    Instantiate(String),
    #[error("incompatible plugin: {0}")]
    Incompatible(String),
    #[error("the plugin rejected its configuration: {0}")]
    Rejected(String),
    #[error("the plugin failed in init: {0}")]
    InitFailed(String),
}

/// Why a plugin failed on one batch.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Failure {
    #[error("trapped: {0}")]
    Trap(String),
    #[error("timed out after {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error("exceeded its memory limit: {0}")]
    Memory(String),
    #[error("returned an error: {0}")]
    Error(String),
    #[error("returned a malformed response: {0}")]
    Malformed(String),
    /// The response would make the host hold far more than the batch it was given.
    #[error("returned a response too large to apply: {0}")]
    Oversized(String),
    #[error("could not be instantiated: {0}")]
    Instantiate(String),
    #[error("the batch does not fit the plugin format: {0}")]
    Encode(String),
}

impl Failure {
    /// The `reason` label of `sluice_plugin_errors_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Trap(_) => "trap",
            Self::Timeout(_) => "timeout",
            Self::Memory(_) => "memory",
            Self::Error(_) => "error",
            Self::Malformed(_) => "malformed_output",
            Self::Oversized(_) => "oversized_output",
            Self::Instantiate(_) => "instantiate",
            Self::Encode(_) => "encode",
        }
    }

    /// Whether the instance must be thrown away: after a trap its state is undefined (wasmtime
    /// refuses to enter it again anyway).
    pub fn poisons_instance(&self) -> bool {
        matches!(self, Self::Trap(_) | Self::Timeout(_) | Self::Memory(_))
    }
}
