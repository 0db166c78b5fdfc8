//! A sluice plugin: drops entries whose line contains any of the configured substrings, and
//! marks the rest with the label `filtered="true"` if so configured.
//!
//! ```yaml
//! stages:
//!   - plugin: plugins/drop_noise.wasm
//!     config: { drop_if_contains: ["GET /health", "GET /metrics"], mark: true }
//! ```

use serde::Deserialize;
use sluice_sdk::prelude::*;

/// The stage's `config:` from the sluice YAML.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Drop entries whose line contains any of these.
    drop_if_contains: Vec<String>,
    /// Label kept entries `filtered="true"`.
    #[serde(default)]
    mark: bool,
}

/// The plugin: built once per instance by `init`, then given every batch.
pub struct DropNoise {
    needles: Vec<String>,
    mark: bool,
}

impl Plugin for DropNoise {
    type Config = Config;

    fn init(config: Config) -> Result<Self, Error> {
        if config.drop_if_contains.iter().any(String::is_empty) {
            bail!("`drop_if_contains` must not contain an empty string (it would drop everything)");
        }
        info!("dropping lines containing any of {:?}", config.drop_if_contains);
        Ok(Self { needles: config.drop_if_contains, mark: config.mark })
    }

    fn process(&mut self, entry: &mut Entry<'_>) -> Result<Verdict, Error> {
        let line = entry.line();
        if self.needles.iter().any(|n| line.contains(n.as_str())) {
            return Ok(Verdict::Drop);
        }
        if self.mark {
            entry.set_label("filtered", "true")?;
        }
        Ok(Verdict::Keep)
    }
}

sluice_sdk::export!(DropNoise);

#[cfg(test)]
mod tests {
    use sluice_sdk::testing::{self, TestBatch};

    use super::*;

    #[test]
    fn drops_noise_and_marks_the_rest() {
        let mut plugin =
            testing::plugin::<DropNoise>(r#"{"drop_if_contains": ["GET /health"], "mark": true}"#);
        let batch =
            TestBatch::new().stream(&[("app", "api")]).line("GET /health 200").line("POST /orders 201");
        let out = testing::run(&mut plugin, &batch);
        assert_eq!(out.dropped_lines(), ["GET /health 200"]);
        assert_eq!(out.lines(), ["POST /orders 201"]);
        assert_eq!(out.entries[1].label("filtered"), Some("true"));
    }

    #[test]
    fn rejects_an_empty_needle() {
        let error = testing::init_error::<DropNoise>(r#"{"drop_if_contains": [""]}"#);
        assert!(error.contains("must not contain an empty string"), "{error}");
    }
}
