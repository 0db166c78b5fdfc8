//! A loaded plugin — compiled (or loaded from the cache), linked and pre-instantiated once per
//! stage — and its instances: each worker thread instantiates its own from the `InstancePre`
//! (cheap with the pooling allocator and copy-on-write memory images), calls `init` once, and
//! reuses it for every batch until a trap, timeout or memory exhaustion poisons it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Store, Trap};

use super::bindings::{LogPlugin, LogPluginPre};
use super::cache::{self, CacheOutcome};
use super::engine::{PluginEngine, ticks};
use super::host::{HostState, StageIdentity};
use super::{Failure, PluginError};

/// What a plugin says about itself (`info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    pub format_version: u16,
}

/// Everything a stage needs to know to load its plugin.
#[derive(Debug, Clone)]
pub struct PluginSpec {
    /// The stage's name, for logs and metrics.
    pub stage: String,
    /// The stage's `config`, as JSON, for `init`.
    pub config_json: String,
    /// Deadline of one `process` call.
    pub timeout: Duration,
    /// Linear-memory cap per instance, in bytes.
    pub max_memory: usize,
    /// The key behind `keyed-hash`.
    pub hash_key: [u8; 32],
}

impl PluginSpec {
    /// `init` may compile patterns or build tables: it gets ten times the call deadline, at
    /// least five seconds.
    fn init_timeout(&self) -> Duration {
        (self.timeout * 10).max(Duration::from_secs(5))
    }
}

/// A compiled, linked plugin whose `init` accepted the stage's configuration.
pub struct LoadedPlugin {
    pre: LogPluginPre<HostState>,
    engine: PluginEngine,
    spec: PluginSpec,
    pub(super) id: Arc<StageIdentity>,
    pub info: PluginInfo,
    /// Whether the compiled artifact came from the cache.
    pub cache: CacheOutcome,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LoadedPlugin({} in stage {})", self.info.name, self.spec.stage)
    }
}

impl LoadedPlugin {
    /// Reads, compiles (or loads from `cache_dir`), links and pre-instantiates the plugin at
    /// `path`, then instantiates it once to read its `info` and let its `init` check the
    /// configuration: what an operator must hear about before the first batch.
    pub fn load(
        engine: &PluginEngine,
        path: &Path,
        spec: PluginSpec,
        cache_dir: Option<&Path>,
    ) -> Result<Arc<Self>, PluginError> {
        let wasm = std::fs::read(path)
            .map_err(|e| PluginError::Read { path: path.display().to_string(), message: e.to_string() })?;
        let stem = path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
        Self::load_bytes(engine, &wasm, &stem, spec, cache_dir)
    }

    /// [`LoadedPlugin::load`] of a component already in memory (a built-in); `origin` names it
    /// in logs until its `info` is known.
    pub fn load_bytes(
        engine: &PluginEngine,
        wasm: &[u8],
        origin: &str,
        spec: PluginSpec,
        cache_dir: Option<&Path>,
    ) -> Result<Arc<Self>, PluginError> {
        let (component, cache) = cache::load(engine.engine(), wasm, cache_dir)?;
        let mut linker = Linker::<HostState>::new(engine.engine());
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .and_then(|()| forbid_blocking(&mut linker))
            .map_err(|e| PluginError::Link(format!("{e:#}")))?;
        LogPlugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| PluginError::Link(format!("{e:#}")))?;
        let pre = linker
            .instantiate_pre(&component)
            .and_then(LogPluginPre::new)
            .map_err(|e| PluginError::Link(format!("{e:#}")))?;
        let mut plugin = Self {
            pre,
            engine: engine.clone(),
            id: Arc::new(StageIdentity {
                stage: spec.stage.as_str().into(),
                plugin: origin.into(),
                hash_key: spec.hash_key,
                warned_default_key: false.into(),
            }),
            spec,
            info: PluginInfo { name: String::new(), version: String::new(), format_version: 0 },
            cache,
        };
        let mut probe = plugin.start().map_err(|f| PluginError::Instantiate(f.to_string()))?;
        let info = probe.info().map_err(|f| PluginError::Instantiate(f.to_string()))?;
        if info.format_version != sluice_sdk::format::VERSION {
            return Err(PluginError::Incompatible(format!(
                "`{}` speaks batch format version {}, this sluice speaks {}",
                info.name,
                info.format_version,
                sluice_sdk::format::VERSION
            )));
        }
        plugin.id = Arc::new(StageIdentity {
            stage: plugin.id.stage.clone(),
            plugin: info.name.as_str().into(),
            hash_key: plugin.spec.hash_key,
            warned_default_key: false.into(),
        });
        plugin.info = info;
        probe.init(&plugin.spec)?;
        Ok(Arc::new(plugin))
    }

    /// A new instance, initialised with the stage's configuration.
    pub fn instantiate(&self) -> Result<Instance, Failure> {
        let mut instance = self.start()?;
        instance.init(&self.spec).map_err(|e| match e {
            PluginError::Rejected(m) => Failure::Instantiate(format!("init rejected the configuration: {m}")),
            other => Failure::Instantiate(other.to_string()),
        })?;
        Ok(instance)
    }

    /// A new instance, before `init`.
    fn start(&self) -> Result<Instance, Failure> {
        let state = HostState::new(Arc::clone(&self.id), self.spec.max_memory);
        let mut store = Store::new(self.engine.engine(), state);
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(ticks(self.spec.init_timeout()));
        let bindings = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| Failure::Instantiate(format!("cannot instantiate: {e:#}")))?;
        Ok(Instance { store, bindings, timeout: self.spec.timeout })
    }

    /// The stage's name.
    pub fn stage(&self) -> &str {
        &self.id.stage
    }
}

/// The WASI interface plugins could wait with: `poll` and `pollable.block` (behind sleeping,
/// `std::thread::sleep` among them).
const POLL_INTERFACE: &str = "wasi:io/poll@0.2.12";

/// Makes waiting trap. A plugin that sleeps or polls would block inside the host, where the
/// epoch deadline cannot reach it: a sleeping `process` would hang its worker, a sleeping `init`
/// the start and every reload. A plugin has nothing to wait for (no files, no network, stdin is
/// empty), so the two functions that wait are replaced by ones that fail the call at once.
fn forbid_blocking(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut poll = linker.instance(POLL_INTERFACE)?;
    for name in ["poll", "[method]pollable.block"] {
        poll.func_new(name, move |_, _, _, _| {
            Err(wasmtime::Error::msg(format!(
                "the plugin waited ({POLL_INTERFACE} {name}, e.g. a sleep): plugins may not block"
            )))
        })?;
    }
    linker.allow_shadowing(false);
    Ok(())
}

/// One live instance of a plugin, owned by one worker thread.
pub struct Instance {
    store: Store<HostState>,
    bindings: LogPlugin,
    timeout: Duration,
}

impl Instance {
    fn info(&mut self) -> Result<PluginInfo, Failure> {
        let result = self.call(Duration::from_secs(5), |b, s| b.sluice_plugin_plugin().call_info(s))?;
        Ok(PluginInfo { name: result.name, version: result.version, format_version: result.format_version })
    }

    fn init(&mut self, spec: &PluginSpec) -> Result<(), PluginError> {
        let config = spec.config_json.as_str();
        match self.call(spec.init_timeout(), |b, s| b.sluice_plugin_plugin().call_init(s, config)) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(PluginError::Rejected(message)),
            Err(f) => Err(PluginError::InitFailed(f.to_string())),
        }
    }

    /// Runs `process` on a request buffer; the response is still untrusted.
    pub fn process(&mut self, request: &[u8]) -> Result<Vec<u8>, Failure> {
        match self.call(self.timeout, |b, s| b.sluice_plugin_plugin().call_process(s, request))? {
            Ok(response) => Ok(response),
            Err(message) => Err(Failure::Error(message)),
        }
    }

    /// What the plugin counted during the last call.
    pub fn take_counts(&mut self) -> Vec<(String, u64)> {
        std::mem::take(&mut self.store.data_mut().counts)
    }

    /// Calls into the plugin under a deadline, classifying failures.
    fn call<R>(
        &mut self,
        deadline: Duration,
        f: impl FnOnce(&LogPlugin, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, Failure> {
        self.store.data_mut().begin_call();
        self.store.set_epoch_deadline(ticks(deadline));
        let result = f(&self.bindings, &mut self.store);
        self.store.data_mut().end_call();
        result.map_err(|e| {
            if self.store.data().limiter.exceeded {
                Failure::Memory(format!("{e:#}"))
            } else if matches!(e.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
                Failure::Timeout(deadline)
            } else {
                Failure::Trap(format!("{e:#}"))
            }
        })
    }
}
