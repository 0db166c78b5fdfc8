//! The one processing path behind both the Wasm export and [`NativePlugin`]: parse the request,
//! run the plugin over it, write the response.
//!
//! [`NativePlugin`]: crate::native::NativePlugin

use serde::de::DeserializeOwned;

use crate::Plugin;
use crate::batch::{Batch, State};
use crate::format::request::Request;

/// A plugin instance and its reusable per-batch state.
#[doc(hidden)]
pub struct Runner<P> {
    plugin: P,
    state: State,
    /// What the plugin counted during the last successful batch.
    counts: Vec<(String, u64)>,
}

impl<P: Plugin> Runner<P> {
    /// Deserializes the configuration and builds the plugin; errors are for the operator.
    pub fn init(config_json: &str) -> Result<Self, String> {
        let config = parse_config::<P::Config>(config_json)?;
        let plugin = P::init(config).map_err(|e| e.to_string())?;
        Ok(Self { plugin, state: State::new(), counts: Vec::new() })
    }

    /// Processes one request buffer into a response buffer.
    pub fn process(&mut self, request: &[u8]) -> Result<Vec<u8>, String> {
        // Counts belong to the batch that made them: a failed batch's are dropped.
        drop(crate::counters::take());
        self.counts.clear();
        let request = Request::parse(request).map_err(|e| e.to_string())?;
        let mut batch = Batch::new(&request, &mut self.state);
        self.plugin.process_batch(&mut batch).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        self.state.finish(&request, &mut out).map_err(|e| e.to_string())?;
        self.counts = crate::counters::take();
        Ok(out)
    }

    /// What the plugin counted ([`count`](crate::count)) during the last successful batch.
    pub fn counts(&self) -> &[(String, u64)] {
        &self.counts
    }

    pub fn plugin(&self) -> &P {
        &self.plugin
    }

    pub fn plugin_mut(&mut self) -> &mut P {
        &mut self.plugin
    }
}

/// Deserializes a stage's JSON config. No config (an empty string, `null` or `{}`) is both `null`
/// and `{}`, so `type Config = ()` and a struct whose fields all have defaults both accept a stage
/// without `config:`.
pub(crate) fn parse_config<C: DeserializeOwned>(json: &str) -> Result<C, String> {
    let json = match json.trim() {
        "" => "null",
        trimmed => trimmed,
    };
    match from_json(json) {
        Err(e) if json == "null" => from_json("{}").map_err(|_| e),
        Err(e) if json.split_whitespace().collect::<String>() == "{}" => from_json("null").map_err(|_| e),
        result => result,
    }
}

fn from_json<C: DeserializeOwned>(json: &str) -> Result<C, String> {
    let mut de = serde_json::Deserializer::from_str(json);
    let config = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            format!("invalid config: {inner}")
        } else {
            format!("invalid config at `{path}`: {inner}")
        }
    })?;
    de.end().map_err(|e| format!("invalid config: {e}"))?;
    Ok(config)
}
