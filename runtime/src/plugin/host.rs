//! What a plugin instance's store holds and what the host offers it: the sandboxed WASI context
//! (no files, no environment, no arguments, no network; clocks and random allowed), the memory
//! limiter, and the `host` imports — `log` into sluice's log under the stage's and plugin's
//! names (truncated and capped per call), `keyed-hash` under the stage's secret key, and `count`
//! (kept for the stage to export once the call has succeeded).

use std::sync::Arc;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::sluice::plugin::host::{Host, Level};
use super::capture::Capture;

/// Longest plugin log message kept, in bytes; longer ones are cut at a character boundary.
pub const MAX_LOG_MESSAGE: usize = 2048;
/// Log messages a plugin may write per call; the rest are counted and reported once.
pub const MAX_LOGS_PER_CALL: u32 = 16;
/// Counter names a plugin may report per call; more are ignored (the SDK sends one per event).
pub const MAX_COUNTS_PER_CALL: usize = 256;

/// Who a store belongs to, for logs and metrics; shared by all instances of a stage.
#[derive(Debug)]
pub struct StageIdentity {
    pub stage: Arc<str>,
    /// The plugin's own name from `info`, or its file stem until that is known.
    pub plugin: Arc<str>,
    pub hash_key: [u8; 32],
    /// Set once the stage has warned that it hashes with sluice's public default key.
    pub warned_default_key: std::sync::atomic::AtomicBool,
}

/// The data of one instance's store.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub limiter: MemoryLimiter,
    pub id: Arc<StageIdentity>,
    stdout: Capture,
    stderr: Capture,
    logs: u32,
    /// What the plugin counted during the current call.
    pub counts: Vec<(String, u64)>,
}

/// Most WASI resources one instance may hold at once; past it the call that asks for one fails.
pub const MAX_RESOURCES: usize = 4096;

impl HostState {
    pub fn new(id: Arc<StageIdentity>, max_memory: usize) -> Self {
        let (stdout, stderr) = (Capture::default(), Capture::default());
        // The builder's defaults are the sandbox: stdin closed, no env, no args, no preopened
        // directories, every socket address denied. Sockets are switched off outright as well.
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        // An instance is reused for every batch, so resources a plugin never drops (streams,
        // pollables) would pile up; wasmtime's own cap is a million.
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        Self {
            wasi,
            table,
            limiter: MemoryLimiter { max_memory, exceeded: false },
            id,
            stdout,
            stderr,
            logs: 0,
            counts: Vec::new(),
        }
    }

    /// Called before each call into the plugin.
    pub fn begin_call(&mut self) {
        self.logs = 0;
        self.limiter.exceeded = false;
        self.counts.clear();
    }

    /// Called after each call: writes what the plugin printed and how much logging was cut.
    pub fn end_call(&mut self) {
        let (stage, plugin) = (&*self.id.stage, &*self.id.plugin);
        if let Some((text, discarded)) = self.stdout.take() {
            tracing::info!(target: "sluice::plugin", stage, plugin, discarded, "plugin stdout: {text}");
        }
        if let Some((text, discarded)) = self.stderr.take() {
            tracing::warn!(target: "sluice::plugin", stage, plugin, discarded, "plugin stderr: {text}");
        }
        if self.logs > MAX_LOGS_PER_CALL {
            let suppressed = self.logs - MAX_LOGS_PER_CALL;
            metrics::counter!("sluice_plugin_log_suppressed_total", "stage" => stage.to_string(), "plugin" => plugin.to_string())
                .increment(u64::from(suppressed));
            tracing::warn!(target: "sluice::plugin", stage, plugin, suppressed, "plugin log messages over the per-call limit were dropped");
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl Host for HostState {
    fn log(&mut self, level: Level, message: String) {
        self.logs = self.logs.saturating_add(1);
        if self.logs > MAX_LOGS_PER_CALL {
            return;
        }
        let (stage, plugin) = (&*self.id.stage, &*self.id.plugin);
        let message = truncate(&message, MAX_LOG_MESSAGE);
        match level {
            Level::Trace => tracing::trace!(target: "sluice::plugin", stage, plugin, "{message}"),
            Level::Debug => tracing::debug!(target: "sluice::plugin", stage, plugin, "{message}"),
            Level::Info => tracing::info!(target: "sluice::plugin", stage, plugin, "{message}"),
            Level::Warn => tracing::warn!(target: "sluice::plugin", stage, plugin, "{message}"),
            Level::Error => tracing::error!(target: "sluice::plugin", stage, plugin, "{message}"),
        }
    }

    fn keyed_hash(&mut self, data: Vec<u8>) -> Vec<u8> {
        // Warned here, at the first hash, not at load: most plugins never hash.
        if self.id.hash_key == *super::build::DEFAULT_HASH_KEY
            && !self.id.warned_default_key.swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            let (stage, plugin) = (&*self.id.stage, &*self.id.plugin);
            tracing::warn!(
                target: "sluice::plugin", stage, plugin,
                "the plugin hashes values with sluice's public default key: set the stage's hash_key, or its hashes are not secret"
            );
        }
        sluice_sdk::hash::keyed_hash(&self.id.hash_key, &data).to_vec()
    }

    fn count(&mut self, counts: Vec<(String, u64)>) {
        let room = MAX_COUNTS_PER_CALL.saturating_sub(self.counts.len());
        self.counts.extend(counts.into_iter().take(room));
    }
}

/// `s` cut to at most `max` bytes at a character boundary, marked when cut.
fn truncate(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max {
        return s.into();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes cut)", &s[..end], s.len() - end).into()
}

/// Caps an instance's linear memories at the stage's `max_memory` and remembers a refusal, so
/// the trap that usually follows is reported as memory exhaustion.
#[derive(Debug)]
pub struct MemoryLimiter {
    max_memory: usize,
    pub exceeded: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory {
            self.exceeded = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold function references; a million is far beyond any real plugin.
        Ok(desired <= 1_000_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_holds_a_bounded_number_of_resources() {
        let id = Arc::new(StageIdentity {
            stage: "s".into(),
            plugin: "p".into(),
            hash_key: [0; 32],
            warned_default_key: false.into(),
        });
        let mut state = HostState::new(id, 1 << 20);
        for i in 0..MAX_RESOURCES {
            state.table.push(i).unwrap_or_else(|e| panic!("resource {i}: {e}"));
        }
        assert!(state.table.push(0usize).is_err(), "one past the cap is refused");
    }

    #[test]
    fn truncates_at_a_character_boundary() {
        assert_eq!(truncate("short", 10), "short");
        let cut = truncate("ééééé", 3);
        assert!(cut.starts_with("é…"), "{cut}");
        assert!(cut.contains("8 bytes cut"), "{cut}");
    }
}
