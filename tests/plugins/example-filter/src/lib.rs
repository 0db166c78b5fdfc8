//! A small real plugin, used to prove that the same plugin gives the same output natively and as
//! Wasm: drops noisy lines, sets a label, redacts a substring and records a keyed hash of what it
//! redacted in structured metadata.
//!
//! ```yaml
//! config: { drop_if_contains: "GET /health", label: team, value: payments, redact: "secret" }
//! ```

use serde::Deserialize;
use sluice_sdk::prelude::*;

/// The configuration; every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Drop entries whose line contains this.
    #[serde(default)]
    pub drop_if_contains: Option<String>,
    /// Set this label on every kept entry (with `value`).
    #[serde(default)]
    pub label: Option<String>,
    /// The value for `label`.
    #[serde(default)]
    pub value: Option<String>,
    /// Replace this substring in lines with `[REDACTED]`, recording the keyed hash of the original
    /// line in the metadata `redacted_hash`.
    #[serde(default)]
    pub redact: Option<String>,
}

/// The example-filter plugin.
#[derive(Debug)]
pub struct ExampleFilter {
    drop_if_contains: Option<String>,
    label: Option<(String, String)>,
    redact: Option<String>,
    /// Entries redacted so far, reported per batch.
    redacted: u64,
}

impl Plugin for ExampleFilter {
    type Config = Config;

    fn init(config: Config) -> Result<Self, Error> {
        let label = match (config.label, config.value) {
            (Some(label), Some(_)) if !sluice_sdk::is_valid_label_name(&label) => {
                bail!("`label`: `{label}` is not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*)")
            }
            (Some(label), Some(value)) => Some((label, value)),
            (None, None) => None,
            _ => bail!("`label` and `value` go together: set both or neither"),
        };
        if config.drop_if_contains.as_deref() == Some("") || config.redact.as_deref() == Some("") {
            bail!("`drop_if_contains` and `redact` must not be empty");
        }
        Ok(Self { drop_if_contains: config.drop_if_contains, label, redact: config.redact, redacted: 0 })
    }

    fn process(&mut self, entry: &mut Entry<'_>) -> Result<Verdict, Error> {
        if let Some(needle) = &self.drop_if_contains
            && entry.line().contains(needle.as_str())
        {
            sluice_sdk::count("dropped", 1);
            return Ok(Verdict::Drop);
        }
        if let Some(secret) = &self.redact
            && entry.line().contains(secret.as_str())
        {
            let hash = sluice_sdk::keyed_hash_hex(entry.line().as_bytes());
            let redacted = entry.line().replace(secret.as_str(), "[REDACTED]");
            entry.set_line(redacted);
            entry.set_metadata("redacted_hash", hash)?;
            self.redacted += 1;
            sluice_sdk::count("redacted", 1);
        }
        if let Some((name, value)) = &self.label {
            entry.set_label(name, value.as_str())?;
        }
        Ok(Verdict::Keep)
    }

    fn process_batch(&mut self, batch: &mut Batch<'_>) -> Result<(), Error> {
        let before = self.redacted;
        batch.for_each_entry(|entry| self.process(entry))?;
        if self.redacted > before {
            debug!("redacted {} entries of tenant {}", self.redacted - before, batch.tenant());
        }
        Ok(())
    }
}

sluice_sdk::export!(ExampleFilter);

#[cfg(test)]
mod tests {
    use sluice_sdk::testing::{self, Status, TestBatch};

    use super::*;

    const CONFIG: &str =
        r#"{"drop_if_contains": "GET /health", "label": "team", "value": "payments", "redact": "hunter2"}"#;

    #[test]
    fn drops_labels_redacts_and_hashes() {
        let mut plugin = testing::plugin::<ExampleFilter>(CONFIG);
        let batch = TestBatch::new()
            .stream(&[("app", "api")])
            .line("GET /health 200")
            .line("login password=hunter2")
            .stream(&[("app", "db"), ("team", "core")])
            .entry(10, "query ok", &[("trace_id", "t1")]);
        let out = testing::run(&mut plugin, &batch);

        assert_eq!(out.dropped_lines(), ["GET /health 200"]);
        assert_eq!(out.lines(), ["login password=[REDACTED]", "query ok"]);
        assert_eq!((out.count("dropped"), out.count("redacted"), out.count("other")), (1, 1, 0));
        let redacted = &out.entries[1];
        assert_eq!(redacted.status, Status::Changed);
        assert_eq!(redacted.labels, [("app".into(), "api".into()), ("team".into(), "payments".into())]);
        let expected = sluice_sdk::to_hex(&sluice_sdk::hash::keyed_hash(
            &testing::test_key(),
            b"login password=hunter2",
        ));
        assert_eq!(redacted.metadata_value("redacted_hash"), Some(expected.as_str()));
        let relabelled = &out.entries[2];
        assert_eq!(relabelled.label("team"), Some("payments"), "replaced, not added twice");
        assert_eq!(relabelled.metadata, [("trace_id".into(), "t1".into())]);
        assert_eq!(out.logs, [(Level::Debug, "redacted 1 entries of tenant test".to_string())]);
        assert_eq!(plugin.plugin().redacted, 1);
    }

    #[test]
    fn an_entry_already_right_is_not_patched() {
        let mut plugin = testing::plugin::<ExampleFilter>(r#"{"label": "team", "value": "core"}"#);
        let out = testing::run(&mut plugin, &TestBatch::new().stream(&[("team", "core")]).line("x"));
        assert_eq!(out.entries[0].status, Status::Kept);
    }

    #[test]
    fn rejects_bad_configs() {
        let e = testing::init_error::<ExampleFilter>(r#"{"label": "team"}"#);
        assert!(e.contains("set both or neither"), "{e}");
        let e = testing::init_error::<ExampleFilter>(r#"{"colour": "red"}"#);
        assert!(e.contains("unknown field `colour`"), "{e}");
        let e = testing::init_error::<ExampleFilter>(r#"{"label": "bad-name", "value": "x"}"#);
        assert!(e.contains("`bad-name` is not a valid label name"), "{e}");
    }
}
