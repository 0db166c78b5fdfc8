//! [`WasmStage`]: a plugin as a pipeline stage, one per worker thread. Per batch: encode the
//! batch into the reused request buffer, one `process` call, check the response, apply it.
//! The batch is untouched until the response has been checked, so a failure leaves it as it was
//! and the pipeline's `on_error` policy needs no copy.

use std::sync::Arc;

use metrics::Counter;
use sluice_sdk::format::request::RequestWriter;
use sluice_sdk::format::response::Response;

use super::Failure;
use super::apply::{Applied, apply};
use super::instance::{Instance, LoadedPlugin};
use crate::model::Batch;
use crate::pipeline::{Stage, StageError};

/// A plugin stage's instance on one worker.
pub struct WasmStage {
    plugin: Arc<LoadedPlugin>,
    /// `None` after a failure that poisoned it; rebuilt on the next batch.
    instance: Option<Instance>,
    writer: RequestWriter,
    request: Vec<u8>,
    metrics: StageMetrics,
}

struct StageMetrics {
    batches: Counter,
    entries_in: Counter,
    entries_out: Counter,
    dropped: Counter,
    modified: Counter,
    added: Counter,
    rebuilds: Counter,
}

impl StageMetrics {
    fn new(stage: &str, plugin: &str) -> Self {
        let c = |name: &'static str| metrics::counter!(name, "stage" => stage.to_string(), "plugin" => plugin.to_string());
        Self {
            batches: c("sluice_plugin_batches_total"),
            entries_in: c("sluice_plugin_entries_in_total"),
            entries_out: c("sluice_plugin_entries_out_total"),
            dropped: c("sluice_plugin_entries_dropped_total"),
            modified: c("sluice_plugin_entries_modified_total"),
            added: c("sluice_plugin_entries_added_total"),
            rebuilds: c("sluice_plugin_instance_rebuilds_total"),
        }
    }

    fn record(&self, a: &Applied) {
        self.batches.increment(1);
        self.entries_in.increment(a.entries_in as u64);
        self.entries_out.increment(a.entries_out as u64);
        self.dropped.increment(a.dropped as u64);
        self.modified.increment(a.modified as u64);
        self.added.increment(a.added as u64);
    }
}

impl std::fmt::Debug for WasmStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WasmStage({:?})", self.plugin)
    }
}

impl WasmStage {
    /// A stage instance for one worker, with its own plugin instance.
    pub fn new(plugin: Arc<LoadedPlugin>) -> Result<Self, Failure> {
        let instance = plugin.instantiate()?;
        let metrics = StageMetrics::new(plugin.stage(), &plugin.info.name);
        Ok(Self {
            plugin,
            instance: Some(instance),
            writer: RequestWriter::default(),
            request: Vec::new(),
            metrics,
        })
    }

    fn run(&mut self, batch: &mut Batch) -> Result<Applied, Failure> {
        encode_request(&mut self.writer, batch, &mut self.request)?;
        let instance = match &mut self.instance {
            Some(i) => i,
            None => {
                self.metrics.rebuilds.increment(1);
                self.instance.insert(self.plugin.instantiate()?)
            }
        };
        let response = match instance.process(&self.request) {
            Ok(r) => r,
            Err(f) => {
                if f.poisons_instance() {
                    // A trapped instance must not run again; the next batch gets a fresh one.
                    self.instance = None;
                }
                return Err(f);
            }
        };
        let entry_count = batch.entry_count();
        let response = Response::parse(&response, entry_count).map_err(|e| Failure::Malformed(e.0))?;
        Ok(apply(batch, &response))
    }
}

/// Writes `batch` as a plugin request into `out` (cleared first), reusing `writer`'s buffers.
pub fn encode_request(writer: &mut RequestWriter, batch: &Batch, out: &mut Vec<u8>) -> Result<(), Failure> {
    writer.reset(&batch.tenant);
    for stream in &batch.streams {
        writer.stream(stream.labels.pairs().iter().map(|(n, v)| (n.as_str(), v.as_str())));
        for e in &stream.entries {
            writer.entry(e.timestamp_ns, &e.line, e.metadata.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        }
    }
    writer.finish_into(out).map_err(|e| Failure::Encode(e.to_string()))
}

impl Stage for WasmStage {
    fn name(&self) -> &str {
        self.plugin.stage()
    }

    fn process(&mut self, batch: &mut Batch) -> Result<(), StageError> {
        match self.run(batch) {
            Ok(applied) => {
                self.metrics.record(&applied);
                Ok(())
            }
            Err(f) => {
                let (stage, plugin) = (self.plugin.stage(), self.plugin.info.name.as_str());
                metrics::counter!("sluice_plugin_errors_total", "stage" => stage.to_string(), "plugin" => plugin.to_string(), "reason" => f.reason())
                    .increment(1);
                Err(StageError {
                    stage: stage.to_string(),
                    reason: f.reason(),
                    message: format!("plugin `{plugin}` {f}"),
                })
            }
        }
    }
}
