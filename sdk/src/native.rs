//! Running a plugin natively: the same processing path as the Wasm export, with the host imports
//! stubbed. The host uses it for the sandbox-cost comparison and for native-vs-Wasm parity tests;
//! authors get it through [`testing`](crate::testing).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use crate::host::imp::{self, Stub};
use crate::runner::Runner;
use crate::{Level, Plugin};

/// Where a native plugin's log lines go.
pub type Logger = Arc<dyn Fn(Level, &str) + Send + Sync>;

/// A plugin instance run natively. Its calls see a host whose `keyed-hash` uses the key given
/// here and whose `log` goes to the logger given here (stderr without one), for the duration of
/// each call on the calling thread.
///
/// A panic in the plugin is caught and returned as an error (like a trap in Wasm); the instance
/// is then poisoned and refuses further batches, as a trapped Wasm instance would be rebuilt.
pub struct NativePlugin<P> {
    runner: Runner<P>,
    stub: Stub,
    poisoned: bool,
}

impl<P> std::fmt::Debug for NativePlugin<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativePlugin").field("poisoned", &self.poisoned).finish_non_exhaustive()
    }
}

impl<P: Plugin> NativePlugin<P> {
    /// `init` with the stage's JSON config; keyed hashes use `hash_key` (see
    /// [`hash::derive_key`](crate::hash::derive_key)); log lines go to stderr.
    pub fn new(config_json: &str, hash_key: [u8; 32]) -> Result<Self, String> {
        Self::build(config_json, Stub { key: hash_key, logger: None })
    }

    /// Like [`NativePlugin::new`], with log lines going to `logger`.
    pub fn with_logger(
        config_json: &str,
        hash_key: [u8; 32],
        logger: impl Fn(Level, &str) + Send + Sync + 'static,
    ) -> Result<Self, String> {
        Self::build(config_json, Stub { key: hash_key, logger: Some(Arc::new(logger)) })
    }

    fn build(config_json: &str, stub: Stub) -> Result<Self, String> {
        let _host = imp::enter(&stub);
        let runner = catch_unwind(|| Runner::init(config_json)).map_err(|p| panicked(p.as_ref()))??;
        Ok(Self { runner, stub, poisoned: false })
    }

    /// Processes one request buffer (`sdk/FORMAT.md`) into a response buffer, exactly as the
    /// Wasm export does.
    pub fn process(&mut self, request: &[u8]) -> Result<Vec<u8>, String> {
        if self.poisoned {
            return Err("the plugin panicked earlier; build a new instance".to_string());
        }
        let _host = imp::enter(&self.stub);
        let runner = &mut self.runner;
        catch_unwind(AssertUnwindSafe(|| runner.process(request))).unwrap_or_else(|p| {
            self.poisoned = true;
            Err(panicked(p.as_ref()))
        })
    }

    /// Whether a panic poisoned this instance (it refuses further batches; build a new one).
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// What the plugin counted ([`count`](crate::count)) during the last successful batch.
    pub fn counts(&self) -> &[(String, u64)] {
        self.runner.counts()
    }

    /// Replaces the logger (`None`: stderr), returning the previous one.
    pub fn set_logger(&mut self, logger: Option<Logger>) -> Option<Logger> {
        std::mem::replace(&mut self.stub.logger, logger)
    }

    /// The plugin, e.g. to inspect its state in a test.
    pub fn plugin(&self) -> &P {
        self.runner.plugin()
    }

    /// The plugin, mutably.
    pub fn plugin_mut(&mut self) -> &mut P {
        self.runner.plugin_mut()
    }
}

fn panicked(payload: &(dyn std::any::Any + Send)) -> String {
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    format!("plugin panicked: {message}")
}
