//! The one wasmtime [`Engine`] of the process: the component model, Cranelift, copy-on-write
//! memory images, the pooling allocator sized for every instance the pipeline will hold, and
//! epoch interruption driven by a ticker thread (the per-call deadline; cheaper than fuel).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig};

use super::PluginError;

/// How often the epoch advances: the granularity of every plugin deadline.
pub const TICK: Duration = Duration::from_millis(10);

/// How many instances the pool must hold at once, and how large their memories may grow.
#[derive(Debug, Clone, Copy)]
pub struct PoolSize {
    /// Plugin instances alive at the same time (workers × plugin stages, plus the ones being
    /// checked or rebuilt).
    pub instances: u32,
    /// The largest `max_memory` of any stage; each stage's own limit is enforced per store.
    pub max_memory: u64,
}

/// The engine and its epoch ticker; the ticker stops when the last clone is dropped.
#[derive(Clone)]
pub struct PluginEngine {
    engine: Engine,
    _ticker: Arc<Ticker>,
}

impl std::fmt::Debug for PluginEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PluginEngine")
    }
}

struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl PluginEngine {
    /// An engine whose pool holds `size.instances` instances.
    pub fn new(size: PoolSize) -> Result<Self, PluginError> {
        let n = size.instances.max(1);
        let mut pool = PoolingAllocationConfig::new();
        // A Rust component for wasm32-wasip2 has a handful of core instances and tables and one
        // memory; the per-component maxima stay at wasmtime's generous defaults.
        pool.total_component_instances(n)
            .total_core_instances(n.saturating_mul(8))
            .total_memories(n.saturating_mul(2))
            .total_tables(n.saturating_mul(8))
            .max_memory_size(usize::try_from(size.max_memory).unwrap_or(usize::MAX));
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .cranelift_opt_level(OptLevel::Speed)
            .memory_init_cow(true)
            .parallel_compilation(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (engine, stop) = (engine.clone(), Arc::clone(&stop));
            std::thread::Builder::new()
                .name("sluice-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| PluginError::Engine(format!("cannot start the epoch ticker: {e}")))?
        };
        Ok(Self { engine, _ticker: Arc::new(Ticker { stop, thread: Some(thread) }) })
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

/// Epoch ticks that cover `timeout`, plus one because the next tick may come at once.
pub fn ticks(timeout: Duration) -> u64 {
    (timeout.as_nanos().div_ceil(TICK.as_nanos()) as u64).saturating_add(1)
}
