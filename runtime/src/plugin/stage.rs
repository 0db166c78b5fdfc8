//! [`PluginStage`]: a plugin as a pipeline stage, one per worker thread. Per batch: encode the
//! batch into the reused request buffer, one `process` call, check the response, apply it.
//! The batch is untouched until the response has been checked, so a failure leaves it as it was
//! and the pipeline's `on_error` policy needs no copy.
//!
//! The call goes to a Wasm instance in its sandbox or, for a built-in run with `run: native`,
//! to the same plugin compiled into the host; everything around the call is the same, so the
//! two differ only by the sandbox's price.

use std::sync::Arc;

use metrics::Counter;
use sluice_sdk::format::request::RequestWriter;
use sluice_sdk::format::response::Response;

use super::Failure;
use super::apply::{Applied, apply};
use super::builtin::NativeCall;
use super::instance::{Instance, LoadedPlugin};
use crate::model::Batch;
use crate::pipeline::{Stage, StageError};

/// What a plugin counted in one call: event name and amount.
pub type Counts = Vec<(String, u64)>;

/// Builds a native plugin instance (init on the stage's config); used again after a panic.
pub type NativeMaker = Arc<dyn Fn() -> Result<Box<dyn NativeCall>, String> + Send + Sync>;

/// A plugin stage's instance on one worker.
pub struct PluginStage {
    stage: Arc<str>,
    plugin: Arc<str>,
    backend: Backend,
    writer: RequestWriter,
    request: Vec<u8>,
    metrics: StageMetrics,
    events: Events,
}

/// Where the call goes. An instance is `None` after a failure that poisoned it and is rebuilt
/// on the next batch.
enum Backend {
    Wasm { plugin: Arc<LoadedPlugin>, instance: Option<Instance> },
    Native { make: NativeMaker, instance: Option<Box<dyn NativeCall>> },
}

impl Backend {
    /// One `process` call: the untrusted response and what the plugin counted.
    fn call(&mut self, request: &[u8], rebuilds: &Counter) -> Result<(Vec<u8>, Counts), Failure> {
        match self {
            Self::Wasm { plugin, instance } => {
                let live = match instance {
                    Some(i) => i,
                    None => {
                        rebuilds.increment(1);
                        instance.insert(plugin.instantiate()?)
                    }
                };
                match live.process(request) {
                    Ok(response) => Ok((response, live.take_counts())),
                    Err(f) => {
                        if f.poisons_instance() {
                            // A trapped instance must not run again; the next batch gets a fresh one.
                            *instance = None;
                        }
                        Err(f)
                    }
                }
            }
            Self::Native { make, instance } => {
                let live = match instance {
                    Some(i) => i,
                    None => {
                        rebuilds.increment(1);
                        instance.insert(make().map_err(Failure::Instantiate)?)
                    }
                };
                match live.process(request) {
                    Ok(response) => Ok((response, live.counts().to_vec())),
                    Err(message) if live.is_poisoned() => {
                        *instance = None;
                        Err(Failure::Trap(message))
                    }
                    Err(message) => Err(Failure::Error(message)),
                }
            }
        }
    }
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

/// Distinct event names one stage exports; later ones are counted under [`OTHER_EVENT`].
pub const MAX_EVENTS: usize = 64;
/// The event that collects names beyond [`MAX_EVENTS`] and names sluice refuses.
pub const OTHER_EVENT: &str = "other";

/// `sluice_plugin_events_total{stage, plugin, event}`: what the plugin counted, with the number
/// of series bounded whatever the plugin sends.
struct Events {
    stage: Arc<str>,
    plugin: Arc<str>,
    counters: Vec<(String, Counter)>,
}

impl Events {
    fn record(&mut self, counts: Counts) {
        for (name, n) in counts {
            let known = self.counters.iter().position(|(e, _)| *e == name);
            let index = match known {
                Some(i) => i,
                None => {
                    let name =
                        if sluice_sdk::is_valid_event_name(&name) && self.counters.len() < MAX_EVENTS - 1 {
                            name
                        } else {
                            OTHER_EVENT.to_string()
                        };
                    match self.counters.iter().position(|(e, _)| *e == name) {
                        Some(i) => i,
                        None => {
                            let counter = metrics::counter!("sluice_plugin_events_total", "stage" => self.stage.to_string(), "plugin" => self.plugin.to_string(), "event" => name.clone());
                            self.counters.push((name, counter));
                            self.counters.len() - 1
                        }
                    }
                }
            };
            self.counters[index].1.increment(n);
        }
    }
}

impl std::fmt::Debug for PluginStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.backend {
            Backend::Wasm { .. } => "wasm",
            Backend::Native { .. } => "native",
        };
        write!(f, "PluginStage({} in stage {}, {kind})", self.plugin, self.stage)
    }
}

impl PluginStage {
    /// A stage instance for one worker with its own Wasm instance of `plugin`.
    pub fn wasm(plugin: Arc<LoadedPlugin>) -> Result<Self, Failure> {
        let instance = plugin.instantiate()?;
        let (stage, name) = (Arc::from(plugin.stage()), Arc::from(plugin.info.name.as_str()));
        Ok(Self::with_backend(stage, name, Backend::Wasm { plugin, instance: Some(instance) }))
    }

    /// A stage instance for one worker calling a plugin compiled into the host, built by `make`.
    pub fn native(stage: &str, plugin: &str, make: NativeMaker) -> Result<Self, Failure> {
        let instance = make().map_err(Failure::Instantiate)?;
        Ok(Self::with_backend(
            stage.into(),
            plugin.into(),
            Backend::Native { make, instance: Some(instance) },
        ))
    }

    fn with_backend(stage: Arc<str>, plugin: Arc<str>, backend: Backend) -> Self {
        Self {
            metrics: StageMetrics::new(&stage, &plugin),
            events: Events { stage: Arc::clone(&stage), plugin: Arc::clone(&plugin), counters: Vec::new() },
            stage,
            plugin,
            backend,
            writer: RequestWriter::default(),
            request: Vec::new(),
        }
    }

    /// One call for a batch within [`MAX_CALL_ENTRIES`] and [`MAX_CALL_BYTES`]; a larger one is
    /// cut into chunks that are, each its own call, and applied only once every chunk's
    /// response has been checked, so a failure still leaves the batch as it was.
    fn run(&mut self, batch: &mut Batch) -> Result<(Applied, Counts), Failure> {
        if batch.entry_count() <= MAX_CALL_ENTRIES && payload_bytes(batch) <= MAX_CALL_BYTES {
            let (response, counts) = self.call(batch)?;
            let response = self.check(&response, batch.entry_count())?;
            return Ok((apply(batch, &response), counts));
        }
        let mut chunks = chunks::split(batch);
        let mut responses = Vec::with_capacity(chunks.len());
        let mut counts = Counts::new();
        for chunk in &chunks {
            let checked = self.call(&chunk.batch).and_then(|(response, c)| {
                self.check(&response, chunk.batch.entry_count())?;
                Ok((response, c))
            });
            match checked {
                Ok((response, c)) => {
                    responses.push(response);
                    counts.extend(c);
                }
                Err(f) => {
                    chunks::join(batch, chunks);
                    return Err(f);
                }
            }
        }
        let mut total = Applied::default();
        for (chunk, response) in chunks.iter_mut().zip(&responses) {
            let entries = chunk.batch.entry_count();
            let response = Response::parse(response, entries).map_err(|e| Failure::Malformed(e.0))?;
            let a = apply(&mut chunk.batch, &response);
            total.entries_in += a.entries_in;
            total.entries_out += a.entries_out;
            total.dropped += a.dropped;
            total.modified += a.modified;
            total.added += a.added;
            total.moved += a.moved;
        }
        chunks::join(batch, chunks);
        Ok((total, counts))
    }

    /// Encodes `batch` and calls the plugin: its untrusted response and what it counted.
    fn call(&mut self, batch: &Batch) -> Result<(Vec<u8>, Counts), Failure> {
        encode_request(&mut self.writer, batch, &mut self.request)?;
        self.backend.call(&self.request, &self.metrics.rebuilds)
    }

    /// Checks a response to the last request, of `entries_in` entries: its format, and that
    /// applying it stays within the output bound.
    fn check<'r>(&self, response: &'r [u8], entries_in: usize) -> Result<Response<'r>, Failure> {
        let parsed = Response::parse(response, entries_in).map_err(|e| Failure::Malformed(e.0))?;
        check_output_bound(&parsed, entries_in, self.request.len())?;
        Ok(parsed)
    }
}

/// Most entries one plugin call gets: a push of any size meets fixed time and memory limits per
/// call, so a client must not be able to make a stage fail (and, with `on_error: pass`, skip
/// it) by sending a large push.
pub const MAX_CALL_ENTRIES: usize = 10_000;
/// Most line and metadata bytes one plugin call gets.
pub const MAX_CALL_BYTES: usize = 8 << 20;

/// Line and structured-metadata bytes of `batch`: what a request carries per entry.
fn payload_bytes(batch: &Batch) -> usize {
    batch.streams.iter().flat_map(|s| &s.entries).map(|e| e.line.len() + e.metadata_size()).sum()
}

/// Cutting a batch into chunks within the per-call bounds, and putting it back together.
mod chunks {
    use super::{MAX_CALL_BYTES, MAX_CALL_ENTRIES};
    use crate::model::{Batch, Stream};

    /// A piece of a batch; `continues` when its first stream is the rest of the previous
    /// chunk's last one.
    pub(super) struct Chunk {
        pub(super) batch: Batch,
        continues: bool,
    }

    /// Moves `batch`'s streams into chunks, in order, cutting a stream where a chunk is full.
    pub(super) fn split(batch: &mut Batch) -> Vec<Chunk> {
        let mut chunks = Vec::new();
        let mut current = Chunk { batch: Batch::new(batch.tenant.clone()), continues: false };
        let (mut entries, mut bytes) = (0, 0);
        for stream in std::mem::take(&mut batch.streams) {
            let Stream { labels, entries: all } = stream;
            let mut part = Vec::new();
            for entry in all {
                let size = entry.line.len() + entry.metadata_size();
                if entries > 0 && (entries + 1 > MAX_CALL_ENTRIES || bytes + size > MAX_CALL_BYTES) {
                    let continues = !part.is_empty();
                    if continues {
                        current
                            .batch
                            .streams
                            .push(Stream { labels: labels.clone(), entries: std::mem::take(&mut part) });
                    }
                    let next = Chunk { batch: Batch::new(batch.tenant.clone()), continues };
                    chunks.push(std::mem::replace(&mut current, next));
                    (entries, bytes) = (0, 0);
                }
                entries += 1;
                bytes += size;
                part.push(entry);
            }
            current.batch.streams.push(Stream { labels, entries: part });
        }
        chunks.push(current);
        chunks
    }

    /// Puts the chunks' streams back into `batch`, rejoining each stream that was cut when the
    /// pieces still have the same labels.
    pub(super) fn join(batch: &mut Batch, chunks: Vec<Chunk>) {
        for chunk in chunks {
            let mut streams = chunk.batch.streams.into_iter();
            if chunk.continues
                && let Some(first) = streams.next()
            {
                match batch.streams.last_mut() {
                    Some(last) if last.labels == first.labels => last.entries.extend(first.entries),
                    _ => batch.streams.push(first),
                }
            }
            batch.streams.extend(streams);
        }
    }
}

/// Added entries a response may have per entry of its request (plus [`ADDED_SLACK`]).
pub const MAX_ADDED_PER_ENTRY: usize = 4;
pub const ADDED_SLACK: usize = 1024;
/// Bytes the host may copy out of a response per byte of its request (plus [`COPY_SLACK`]).
pub const MAX_COPY_PER_BYTE: usize = 4;
pub const COPY_SLACK: usize = 1 << 20;

/// Refuses, before anything is copied, a response whose entries would make the host allocate
/// far more than the request it answers: patches and added entries may point at overlapping
/// spans of the plugin's memory, so a 32 MiB line referenced 800 k times is a small response
/// and terabytes once applied. Each referenced pair is counted at the size the host allocates
/// for it, and its length is known without reading it, so the check itself is bounded too.
pub(crate) fn check_output_bound(
    response: &Response<'_>,
    entries_in: usize,
    request_len: usize,
) -> Result<(), Failure> {
    let max_added = entries_in.saturating_mul(MAX_ADDED_PER_ENTRY).saturating_add(ADDED_SLACK);
    let added = response.added().count();
    if added > max_added {
        return Err(Failure::Oversized(format!(
            "{added} added entries for a batch of {entries_in} (at most {MAX_ADDED_PER_ENTRY} per entry + {ADDED_SLACK})"
        )));
    }
    let budget = request_len.saturating_mul(MAX_COPY_PER_BYTE).saturating_add(COPY_SLACK);
    let pair_cost = std::mem::size_of::<crate::model::Pair>();
    let mut cost = 0usize;
    let mut pairs = Vec::new();
    // A label set shared by consecutive patches is resolved once by `apply`, and counted once.
    let mut last_labels = None;
    for p in response.patches().chain(response.added()) {
        cost = cost.saturating_add(p.line.map_or(0, str::len));
        let labels = p.labels.filter(|set| last_labels.replace(set.range()) != Some(set.range()));
        for set in [labels, p.metadata].into_iter().flatten() {
            let r = set.range();
            cost = cost.saturating_add((r.end - r.start) as usize * pair_cost);
            pairs.push(set);
        }
        if cost > budget {
            break;
        }
    }
    // The pairs' own bytes, now that their number is known to be bounded.
    if cost <= budget {
        cost = pairs.into_iter().flatten().fold(cost, |c, (n, v)| c.saturating_add(n.len() + v.len()));
    }
    if cost > budget {
        return Err(Failure::Oversized(format!(
            "applying it would copy more than {budget} bytes for a request of {request_len} ({MAX_COPY_PER_BYTE} per byte + 1 MiB)"
        )));
    }
    Ok(())
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

impl Stage for PluginStage {
    fn name(&self) -> &str {
        &self.stage
    }

    fn process(&mut self, batch: &mut Batch) -> Result<(), StageError> {
        match self.run(batch) {
            Ok((applied, counts)) => {
                self.metrics.record(&applied);
                self.events.record(counts);
                Ok(())
            }
            Err(f) => {
                let (stage, plugin) = (&*self.stage, &*self.plugin);
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

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::format::response::ResponseWriter;

    fn bound(
        entries_in: usize,
        request_len: usize,
        write: impl FnOnce(&mut ResponseWriter),
    ) -> Result<(), Failure> {
        let mut w = ResponseWriter::new(entries_in);
        write(&mut w);
        let bytes = w.finish().expect("a valid response");
        let response = Response::parse(&bytes, entries_in).expect("parses");
        check_output_bound(&response, entries_in, request_len)
    }

    fn stream(app: &str, lines: impl IntoIterator<Item = String>) -> crate::model::Stream {
        let labels = crate::model::LabelSet::new(vec![("app".into(), app.into())]);
        let entries = lines
            .into_iter()
            .enumerate()
            .map(|(i, line)| crate::model::Entry { timestamp_ns: i as i64, line, metadata: vec![] })
            .collect();
        crate::model::Stream { labels, entries }
    }

    #[test]
    fn a_large_batch_is_cut_into_bounded_chunks_and_put_back_as_it_was() {
        let lines = |n: usize, tag: &str| (0..n).map(move |i| format!("{tag} {i}")).collect::<Vec<_>>();
        let original = Batch {
            tenant: "t".into(),
            streams: vec![
                stream("a", lines(3, "a")),
                stream("b", lines(25_000, "b")),
                stream("c", lines(7_000, "c")),
            ],
        };
        let mut batch = original.clone();
        let chunks = chunks::split(&mut batch);
        assert!(batch.streams.is_empty());
        let sizes: Vec<usize> = chunks.iter().map(|c| c.batch.entry_count()).collect();
        assert_eq!(sizes, [10_000, 10_000, 10_000, 2_003], "{sizes:?}");
        chunks::join(&mut batch, chunks);
        assert_eq!(batch, original, "cut streams are whole again");

        // Bytes bound the chunks too: 20 lines of 1 MiB go 8, 8 and 4 to a call (8 MiB each at most).
        let big =
            Batch { tenant: "t".into(), streams: vec![stream("a", (0..20).map(|_| "x".repeat(1 << 20)))] };
        let mut b = big.clone();
        let chunks = chunks::split(&mut b);
        let sizes: Vec<usize> = chunks.iter().map(|c| c.batch.entry_count()).collect();
        assert_eq!(sizes, [8, 8, 4]);
        assert!(chunks.iter().all(|c| payload_bytes(&c.batch) <= MAX_CALL_BYTES));
        chunks::join(&mut b, chunks);
        assert_eq!(b, big);
    }

    #[test]
    fn a_response_cannot_make_the_host_hold_far_more_than_its_request() {
        let labels = [("app", "a")];
        // Within the bounds: a few added entries, lines of ordinary size.
        assert!(bound(10, 2000, |w| (0..40).for_each(|i| w.add(i, "line", &labels, &[]))).is_ok());
        // More added entries than 4 per entry + 1024.
        let e =
            bound(10, 2000, |w| (0..1065).for_each(|i| w.add(i, "", &labels, &[]))).expect_err("too many");
        assert!(matches!(&e, Failure::Oversized(m) if m.contains("1065 added entries")), "{e}");
        assert_eq!(e.reason(), "oversized_output");
        // Few entries, but lines that add up past 4 bytes per request byte + 1 MiB.
        let long = "x".repeat(300 << 10);
        let e = bound(10, 2000, |w| (0..4).for_each(|i| w.add(i, &long, &labels, &[]))).expect_err("too big");
        assert!(matches!(&e, Failure::Oversized(m) if m.contains("copy more than")), "{e}");
        // Pairs count at the size the host allocates for them, even when empty.
        let names: Vec<String> = (0..30_000).map(|i| format!("k{i}")).collect();
        let short: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "")).collect();
        let e = bound(1000, 2000, |w| w.add(0, "", &labels, &short)).expect_err("many pairs");
        assert!(matches!(e, Failure::Oversized(_)), "{e}");
    }

    #[test]
    fn a_plugin_cannot_make_more_than_64_event_series_per_stage() {
        let mut events = Events { stage: "s".into(), plugin: "p".into(), counters: Vec::new() };
        let mut counts: Counts = (0..100).map(|i| (format!("event_{i}"), 1)).collect();
        counts.push(("not valid!".into(), 1));
        counts.push(("x".repeat(65), 1));
        events.record(counts);
        events.record(vec![("event_0".into(), 2), ("event_99".into(), 1)]);
        let names: Vec<&str> = events.counters.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names.len(), MAX_EVENTS, "{names:?}");
        assert_eq!(names[..3], ["event_0", "event_1", "event_2"]);
        assert_eq!(names[MAX_EVENTS - 2], "event_62");
        assert_eq!(names[MAX_EVENTS - 1], OTHER_EVENT, "the rest, invalid names too, go to `other`");
    }
}
