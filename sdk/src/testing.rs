//! Helpers for a plugin's unit tests: build a batch from streams and lines, run the plugin
//! natively, and look at what was kept, dropped, changed and added — without the format.
//!
//! ```ignore
//! use sluice_sdk::testing::{self, TestBatch};
//!
//! let mut plugin = testing::plugin::<DropNoise>(r#"{"drop_if_contains": "health"}"#);
//! let out = testing::run(&mut plugin, &TestBatch::new().stream(&[("app", "api")]).line("GET /health").line("GET /x"));
//! assert_eq!(out.dropped_lines(), ["GET /health"]);
//! assert_eq!(out.lines(), ["GET /x"]);
//! ```
//!
//! Every response is checked exactly as the host checks it, so a test also proves the plugin's
//! output would be accepted.

use std::sync::{Arc, Mutex};

use crate::format::request::{Request, RequestWriter};
use crate::format::response::{self, Response};
use crate::native::NativePlugin;
use crate::{Level, Plugin};

/// The hash key test plugins get: `hash::derive_key(b"sluice test key")`.
pub fn test_key() -> [u8; 32] {
    crate::hash::derive_key(b"sluice test key")
}

/// Builds a plugin natively from a JSON config with [`test_key`]; panics with the plugin's
/// message if `init` fails.
pub fn plugin<P: Plugin>(config_json: &str) -> NativePlugin<P> {
    match NativePlugin::new(config_json, test_key()) {
        Ok(plugin) => plugin,
        Err(e) => panic!("init failed: {e}"),
    }
}

/// The error `init` gives for this JSON config; panics if `init` succeeds.
pub fn init_error<P: Plugin>(config_json: &str) -> String {
    match NativePlugin::<P>::new(config_json, test_key()) {
        Ok(_) => panic!("init accepted {config_json}"),
        Err(e) => e,
    }
}

/// A batch for a test: streams with their entries, in order.
#[derive(Debug, Clone)]
pub struct TestBatch {
    tenant: String,
    streams: Vec<TestStream>,
    next_timestamp: i64,
}

type OwnedPairs = Vec<(String, String)>;

#[derive(Debug, Clone)]
struct TestStream {
    labels: OwnedPairs,
    entries: Vec<(i64, String, OwnedPairs)>,
}

impl Default for TestBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl TestBatch {
    /// An empty batch of tenant `test`.
    pub fn new() -> Self {
        Self { tenant: "test".to_string(), streams: Vec::new(), next_timestamp: 1 }
    }

    /// Sets the tenant.
    pub fn tenant(mut self, tenant: &str) -> Self {
        self.tenant = tenant.to_string();
        self
    }

    /// Starts a stream with these labels (any order); the entries added next belong to it.
    pub fn stream(mut self, labels: &[(&str, &str)]) -> Self {
        let mut labels = owned(labels);
        labels.sort();
        self.streams.push(TestStream { labels, entries: Vec::new() });
        self
    }

    /// Adds a line to the current stream (a stream `{job="test"}` if none was started), with the
    /// next timestamp of 1, 2, 3, …
    pub fn line(self, line: &str) -> Self {
        let timestamp = self.next_timestamp;
        self.entry(timestamp, line, &[])
    }

    /// Adds an entry with a timestamp and structured metadata to the current stream.
    pub fn entry(mut self, timestamp_ns: i64, line: &str, metadata: &[(&str, &str)]) -> Self {
        if self.streams.is_empty() {
            self = self.stream(&[("job", "test")]);
        }
        if let Some(stream) = self.streams.last_mut() {
            stream.entries.push((timestamp_ns, line.to_string(), owned(metadata)));
        }
        self.next_timestamp = timestamp_ns.saturating_add(1);
        self
    }

    /// The request buffer (`sdk/FORMAT.md`).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = RequestWriter::new(&self.tenant);
        for s in &self.streams {
            w.stream(borrowed(&s.labels));
            for (ts, line, metadata) in &s.entries {
                w.entry(*ts, line, borrowed(metadata));
            }
        }
        let mut out = Vec::new();
        if let Err(e) = w.finish_into(&mut out) {
            panic!("test batch too large: {e}");
        }
        out
    }
}

fn owned(pairs: &[(&str, &str)]) -> OwnedPairs {
    pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
}

fn borrowed(pairs: &OwnedPairs) -> impl Iterator<Item = (&str, &str)> {
    pairs.iter().map(|(n, v)| (n.as_str(), v.as_str()))
}

/// What happened to an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Kept,
    Dropped,
    Changed,
    /// Added by the plugin.
    Added,
}

/// An entry after the plugin: for a dropped one, as it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutEntry {
    pub status: Status,
    pub timestamp_ns: i64,
    /// Sorted by name.
    pub labels: OwnedPairs,
    pub line: String,
    pub metadata: OwnedPairs,
}

impl OutEntry {
    /// The value of label `name`.
    pub fn label(&self, name: &str) -> Option<&str> {
        find(&self.labels, name)
    }

    /// The value of structured metadata `name`.
    pub fn metadata_value(&self, name: &str) -> Option<&str> {
        find(&self.metadata, name)
    }
}

fn find<'a>(pairs: &'a OwnedPairs, name: &str) -> Option<&'a str> {
    pairs.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

/// The result of running a plugin over a [`TestBatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The batch's entries in order, each with its status.
    pub entries: Vec<OutEntry>,
    /// The entries the plugin added, in order.
    pub added: Vec<OutEntry>,
    /// What the plugin logged during the call.
    pub logs: Vec<(Level, String)>,
    /// What the plugin counted during the call ([`count`](crate::count)), in first-count order.
    pub counts: Vec<(String, u64)>,
}

impl Outcome {
    /// The lines that come out, in order: kept, changed, then added.
    pub fn lines(&self) -> Vec<&str> {
        self.entries
            .iter()
            .filter(|e| e.status != Status::Dropped)
            .chain(&self.added)
            .map(|e| e.line.as_str())
            .collect()
    }

    /// The lines of the dropped entries, as they arrived.
    pub fn dropped_lines(&self) -> Vec<&str> {
        self.with_status(Status::Dropped).map(|e| e.line.as_str()).collect()
    }

    /// The changed entries, after the change.
    pub fn changed(&self) -> Vec<&OutEntry> {
        self.with_status(Status::Changed).collect()
    }

    /// The count of `event` ([`count`](crate::count)) during the call, 0 if none.
    pub fn count(&self, event: &str) -> u64 {
        self.counts.iter().find(|(e, _)| e == event).map_or(0, |(_, n)| *n)
    }

    fn with_status(&self, status: Status) -> impl Iterator<Item = &OutEntry> {
        self.entries.iter().filter(move |e| e.status == status)
    }
}

/// Runs `plugin` over `batch`, capturing its log lines; panics with the plugin's error if the
/// batch fails (use [`NativePlugin::process`] to test errors).
pub fn run<P: Plugin>(plugin: &mut NativePlugin<P>, batch: &TestBatch) -> Outcome {
    match try_run(plugin, batch) {
        Ok(outcome) => outcome,
        Err(e) => panic!("the plugin failed the batch: {e}"),
    }
}

/// Runs `plugin` over `batch`; the plugin's error if it fails the batch.
pub fn try_run<P: Plugin>(plugin: &mut NativePlugin<P>, batch: &TestBatch) -> Result<Outcome, String> {
    let logs = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&logs);
    let previous = plugin.set_logger(Some(Arc::new(move |level, message: &str| {
        if let Ok(mut logs) = sink.lock() {
            logs.push((level, message.to_string()));
        }
    })));
    let request = batch.encode();
    let response = plugin.process(&request);
    plugin.set_logger(previous);
    let mut outcome = decode(&request, &response?)?;
    outcome.logs = logs.lock().map(|mut l| std::mem::take(&mut *l)).unwrap_or_default();
    outcome.counts = plugin.counts().to_vec();
    Ok(outcome)
}

/// Applies a response to its request, after checking it as the host does.
pub fn decode(request: &[u8], response: &[u8]) -> Result<Outcome, String> {
    let request = Request::parse(request).map_err(|e| e.to_string())?;
    let response = Response::parse(response, request.entry_count()).map_err(|e| e.to_string())?;
    let mut patches = response.patches().peekable();
    let mut entries = Vec::with_capacity(request.entry_count());
    for stream in request.streams() {
        for i in stream.entries.clone() {
            let e = request.entry(i);
            let mut out = OutEntry {
                status: Status::Kept,
                timestamp_ns: e.timestamp_ns,
                labels: collect(stream.labels.clone()),
                line: e.line.to_string(),
                metadata: collect(e.metadata),
            };
            match response.verdict(i) {
                response::Verdict::Keep => {}
                response::Verdict::Drop => out.status = Status::Dropped,
                response::Verdict::Patched => {
                    out.status = Status::Changed;
                    let Some(p) = patches.next_if(|p| p.entry == Some(i)) else {
                        return Err(format!("entry {i} is patched without a patch"));
                    };
                    if let Some(ts) = p.timestamp_ns {
                        out.timestamp_ns = ts;
                    }
                    if let Some(line) = p.line {
                        out.line = line.to_string();
                    }
                    if let Some(labels) = p.labels {
                        out.labels = collect(labels);
                        out.labels.sort();
                    }
                    if let Some(metadata) = p.metadata {
                        out.metadata = collect(metadata);
                    }
                }
            }
            entries.push(out);
        }
    }
    let added = response
        .added()
        .map(|p| {
            let mut labels = p.labels.map(collect).unwrap_or_default();
            labels.sort();
            OutEntry {
                status: Status::Added,
                timestamp_ns: p.timestamp_ns.unwrap_or_default(),
                labels,
                line: p.line.unwrap_or_default().to_string(),
                metadata: p.metadata.map(collect).unwrap_or_default(),
            }
        })
        .collect();
    Ok(Outcome { entries, added, logs: Vec::new(), counts: Vec::new() })
}

fn collect<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> OwnedPairs {
    pairs.map(|(n, v)| (n.to_string(), v.to_string())).collect()
}
