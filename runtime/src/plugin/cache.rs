//! Compile once: a plugin's compiled artifact is cached in `<data_dir>/plugin-cache/`, named by
//! a BLAKE3 hash of the Wasm bytes and of the engine's compatibility hash (wasmtime's version,
//! its compiler settings, the host CPU's features), so a new sluice, a changed plugin or another
//! engine configuration never loads a stale artifact. Compiling a real plugin takes seconds;
//! loading the cached artifact takes milliseconds.

use std::hash::Hasher;
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

use super::PluginError;

/// What loading a component did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded from the cache.
    Hit,
    /// Compiled and written to the cache.
    Compiled,
    /// Compiled; no cache directory was given (e.g. `sluice validate`).
    Uncached,
}

/// Compiles `wasm`, or loads it from `cache_dir` when it was compiled before.
pub fn load(
    engine: &Engine,
    wasm: &[u8],
    cache_dir: Option<&Path>,
) -> Result<(Component, CacheOutcome), PluginError> {
    let compile = || Component::new(engine, wasm).map_err(|e| PluginError::Compile(format!("{e:#}")));
    let Some(dir) = cache_dir else { return Ok((compile()?, CacheOutcome::Uncached)) };
    let path = dir.join(format!("{}.cwasm", key(engine, wasm)));
    if path.is_file() {
        // A cached artifact runs as native code: only one this user wrote, that nobody else can
        // change, is loaded; anything else is compiled again and replaced.
        let trusted =
            crate::private_fs::check_owned(dir).and_then(|()| crate::private_fs::check_owned(&path));
        match trusted.map_err(wasmtime::Error::msg).and_then(|()| deserialize(engine, &path)) {
            Ok(component) => return Ok((component, CacheOutcome::Hit)),
            // Not ours, written by another wasmtime build under a colliding name, or damaged
            // on disk: compile again and replace it.
            Err(e) => tracing::warn!(path = %path.display(), "ignoring an unusable cached plugin: {e:#}"),
        }
    }
    let component = compile()?;
    match component.serialize() {
        Ok(bytes) => {
            if let Err(e) = write_atomically(dir, &path, &bytes) {
                tracing::warn!(path = %path.display(), "cannot cache the compiled plugin: {e}");
            }
        }
        Err(e) => tracing::warn!("cannot serialize the compiled plugin: {e:#}"),
    }
    Ok((component, CacheOutcome::Compiled))
}

/// The cache file name: what the artifact was compiled from and by what.
fn key(engine: &Engine, wasm: &[u8]) -> String {
    let mut hasher = Blake3Hasher(blake3::Hasher::new());
    hasher.0.update(b"sluice plugin cache v1\0");
    hasher.0.update(&(wasm.len() as u64).to_le_bytes());
    hasher.0.update(wasm);
    std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut hasher);
    hasher.0.finalize().to_hex().to_string()
}

/// Feeds `Hash` implementations into BLAKE3.
struct Blake3Hasher(blake3::Hasher);

impl Hasher for Blake3Hasher {
    fn finish(&self) -> u64 {
        0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// Loads a compiled artifact from the cache. The file is read into memory rather than mapped
/// (`Component::deserialize_file`): a mapped file that someone truncates or rewrites in place
/// kills the process with SIGBUS, a copy cannot; reading a few MiB once per stage is cheap.
#[allow(unsafe_code)]
fn deserialize(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    let bytes = std::fs::read(path)?;
    // SAFETY: `deserialize` trusts the bytes to be machine code that wasmtime produced. We only
    // ever read files this module wrote itself — `Component::serialize` output, written to a
    // temporary file in our own data dir and renamed into place, so a reader never sees a
    // partial file — under a name that hashes the exact Wasm bytes and the engine's
    // compatibility hash. wasmtime additionally checks the header, its version and the engine
    // settings and refuses a mismatch. Anyone who can write sluice's data dir can already
    // replace its plugins, so the file is as trusted as the configuration.
    unsafe { Component::deserialize(engine, &bytes) }
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename, so
/// concurrent sluices and crashes never leave a partial artifact under the final name.
fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    crate::private_fs::create_dir_all(dir)?;
    let tmp: PathBuf = dir.join(format!(".tmp-{}-{:016x}", std::process::id(), fastrand::u64(..)));
    let result = crate::private_fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
