//! The built-in plugins (`plugins/`): written with the SDK like any user's plugin, embedded in
//! the binary as Wasm components (built by `runtime/build.rs`) and linked natively as well, so a
//! stage names one by name (`plugin: redact`) and runs it sandboxed (the default) or, trusted,
//! compiled in (`run: native`).

use std::sync::Arc;

use sluice_sdk::Plugin;
use sluice_sdk::native::NativePlugin;

// `WASM`: every built-in's component bytes by name.
include!(concat!(env!("OUT_DIR"), "/builtins.rs"));

/// A built-in plugin compiled into the host, behind the same request/response buffers as Wasm.
pub trait NativeCall: Send {
    /// Processes one request buffer; the response is as untrusted as a Wasm plugin's.
    fn process(&mut self, request: &[u8]) -> Result<Vec<u8>, String>;
    /// What the plugin counted during the last successful call.
    fn counts(&self) -> &[(String, u64)];
    /// Whether a panic poisoned the instance.
    fn is_poisoned(&self) -> bool;
}

impl<P: Plugin + Send> NativeCall for NativePlugin<P> {
    fn process(&mut self, request: &[u8]) -> Result<Vec<u8>, String> {
        NativePlugin::process(self, request)
    }

    fn counts(&self) -> &[(String, u64)] {
        NativePlugin::counts(self)
    }

    fn is_poisoned(&self) -> bool {
        NativePlugin::is_poisoned(self)
    }
}

/// Builds a native instance from a stage's JSON config and hash key; log lines go to `logger`.
pub type NativeFactory =
    fn(&str, [u8; 32], sluice_sdk::native::Logger) -> Result<Box<dyn NativeCall>, String>;

fn native<P: Plugin + Send>(
    config_json: &str,
    hash_key: [u8; 32],
    logger: sluice_sdk::native::Logger,
) -> Result<Box<dyn NativeCall>, String> {
    let logger = Arc::clone(&logger);
    let plugin =
        NativePlugin::<P>::with_logger(config_json, hash_key, move |level, message| logger(level, message))?;
    Ok(Box::new(plugin))
}

/// The native side of every built-in, by the name its Wasm build has in [`WASM`].
static NATIVE: &[(&str, NativeFactory)] = &[
    ("filter", native::<filter::Filter>),
    ("level", native::<level::Level>),
    ("parse-json", native::<parse_json::ParseJson>),
    ("parse-logfmt", native::<parse_logfmt::ParseLogfmt>),
    ("parse-pattern", native::<parse_pattern::ParsePattern>),
    ("parse-regex", native::<parse_regex::ParseRegex>),
    ("redact", native::<redact::Redact>),
    ("relabel", native::<relabel::Relabel>),
    ("sample", native::<sample::Sample>),
];

/// One built-in plugin.
#[derive(Clone, Copy)]
pub struct Builtin {
    pub name: &'static str,
    /// The Wasm component.
    pub wasm: &'static [u8],
    /// The same plugin compiled into the host.
    pub native: NativeFactory,
}

impl std::fmt::Debug for Builtin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Builtin({})", self.name)
    }
}

/// The built-in called `name`.
pub fn find(name: &str) -> Option<Builtin> {
    let &(name, wasm) = WASM.iter().find(|(n, _)| *n == name)?;
    let &(_, native) = NATIVE.iter().find(|(n, _)| *n == name)?;
    Some(Builtin { name, wasm, native })
}

/// Every built-in's name, sorted.
pub fn names() -> Vec<&'static str> {
    WASM.iter().map(|(n, _)| *n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_is_both_wasm_and_native() {
        let wasm: Vec<&str> = WASM.iter().map(|(n, _)| *n).collect();
        let mut native: Vec<&str> = NATIVE.iter().map(|(n, _)| *n).collect();
        native.sort_unstable();
        assert_eq!(wasm, native, "runtime/Cargo.toml's plugin dependencies and NATIVE disagree");
        for name in wasm {
            assert!(find(name).is_some_and(|b| b.wasm.starts_with(b"\0asm")), "{name}");
        }
    }
}
