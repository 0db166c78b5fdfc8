//! Sinks: where processed batches go. Each sink is a tokio task fed by an unbounded channel
//! (bounded in effect by the [`Budget`](crate::buffer::Budget) charge every input carries); it
//! batches per tenant by size and age with [`Batcher`], delivers, and on shutdown (its channel
//! closed) flushes everything it holds before it returns.

pub mod archive;
pub mod dead_letter;
pub mod loki;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::buffer::Charge;
use crate::config::SinkConfig;
use crate::model::{Ack, Batch, Entry, LabelSet, Stream};
use crate::wal::Mark;

/// What a sink receives: a processed batch, the budget charge that holds its memory, and,
/// when it was read from the write-ahead log, the mark that confirms its delivery.
#[derive(Debug)]
pub struct SinkInput {
    pub batch: Batch,
    pub charge: Arc<Charge>,
    /// Settle it once the entries are delivered (or dropped for good); dropped unsettled, the
    /// record stays in the log and is delivered again after a restart.
    pub mark: Option<Mark>,
    /// `on_delivery`: a share of the push's acknowledgement, dropped once the entries are
    /// delivered, and failed first if they were refused.
    pub ack: Option<Ack>,
}

/// The sending side of a sink's channel.
pub type SinkSender = mpsc::UnboundedSender<SinkInput>;

/// A sink that could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("sink `{name}`: {message}")]
    Start { name: String, message: String },
}

/// When shutdown must be over; set once it begins. A sink whose work survives a restart (the
/// archive's spool) stops waiting shortly before it instead of holding the exit.
pub type ShutdownDeadline = Arc<std::sync::OnceLock<Instant>>;

/// Starts the sink `name`; it runs until every sender is dropped and it has flushed.
pub async fn spawn(
    name: &str,
    config: &SinkConfig,
    data_dir: &Path,
    shutdown: &ShutdownDeadline,
) -> Result<(SinkSender, JoinHandle<()>), SinkError> {
    let (tx, rx) = mpsc::unbounded_channel();
    let start_err = |message: String| SinkError::Start { name: name.to_string(), message };
    let task = match config {
        SinkConfig::Loki(c) => {
            let dead_letter = match c.retry.max_attempts {
                0 => None,
                _ => Some(dead_letter::DeadLetter::open(data_dir, name).map_err(|e| {
                    start_err(format!(
                        "cannot open its dead-letter directory under {}: {e}",
                        data_dir.display()
                    ))
                })?),
            };
            let sink = loki::LokiSink::new(name, c, dead_letter).map_err(start_err)?;
            tokio::spawn(sink.run(rx))
        }
        SinkConfig::Archive(c) => {
            let sink = archive::ArchiveSink::start(name, c, data_dir, Arc::clone(shutdown))
                .await
                .map_err(start_err)?;
            tokio::spawn(sink.run(rx))
        }
    };
    Ok((tx, task))
}

/// One tenant's batch being filled.
#[derive(Debug)]
pub struct Pending {
    pub batch: Batch,
    /// Bytes of lines and metadata, the unit of `batch_size`.
    pub bytes: usize,
    pub entries: usize,
    /// Charges of the inputs whose entries are in here; dropped once delivered.
    pub charges: Vec<Arc<Charge>>,
    /// Log records whose entries are in here; settled once delivered.
    pub marks: Vec<Mark>,
    /// Acknowledgements (`on_delivery`) waiting for these entries.
    pub acks: Vec<Ack>,
    started: Instant,
    /// Streams of `batch` by label fingerprint (a collision just means two candidates).
    index: HashMap<u64, Vec<usize>>,
}

impl Pending {
    fn new(tenant: Arc<str>, now: Instant) -> Self {
        Self {
            batch: Batch::new(tenant),
            bytes: 0,
            entries: 0,
            charges: Vec::new(),
            marks: Vec::new(),
            acks: Vec::new(),
            started: now,
            index: HashMap::new(),
        }
    }

    /// A batch built elsewhere (by `sluice replay`), holding no budget charges.
    pub fn from_batch(batch: Batch) -> Self {
        let entries = batch.entry_count();
        let bytes =
            batch.streams.iter().flat_map(|s| &s.entries).map(|e| e.line.len() + e.metadata_size()).sum();
        Self {
            batch,
            bytes,
            entries,
            charges: Vec::new(),
            marks: Vec::new(),
            acks: Vec::new(),
            started: Instant::now(),
            index: HashMap::new(),
        }
    }

    fn add(&mut self, labels: &LabelSet, entry: Entry) {
        self.bytes += entry.line.len() + entry.metadata_size();
        self.entries += 1;
        let streams = &mut self.batch.streams;
        let candidates = self.index.entry(labels.fingerprint()).or_default();
        let i = match candidates.iter().find(|&&i| streams[i].labels == *labels) {
            Some(&i) => i,
            None => {
                // The labels are copied once per stream and batch, not per entry.
                streams.push(Stream { labels: labels.clone(), entries: Vec::new() });
                candidates.push(streams.len() - 1);
                streams.len() - 1
            }
        };
        streams[i].entries.push(entry);
    }

    fn hold(&mut self, charge: &Arc<Charge>, mark: Option<&Mark>, ack: Option<&Ack>) {
        if let Some(ack) = ack
            && !self.acks.last().is_some_and(|a| a.same(ack))
        {
            self.acks.push(ack.clone());
        }
        if !self.charges.last().is_some_and(|c| Arc::ptr_eq(c, charge)) {
            self.charges.push(Arc::clone(charge));
        }
        if let Some(mark) = mark {
            mark.share_into(&mut self.marks);
        }
    }

    /// The entries are delivered or dropped for good: confirm their log records.
    pub fn settle_marks(marks: Vec<Mark>) {
        marks.into_iter().for_each(Mark::settle);
    }
}

/// Gathers entries per tenant into batches of at most `max_bytes` (a single larger entry makes
/// a batch of its own), emitted when full or `max_wait` after their first entry. Streams with
/// the same labels are merged and keep their entries' order.
#[derive(Debug)]
pub struct Batcher {
    max_bytes: usize,
    max_wait: Duration,
    pending: HashMap<Arc<str>, Pending>,
}

impl Batcher {
    pub fn new(max_bytes: usize, max_wait: Duration) -> Self {
        Self { max_bytes: max_bytes.max(1), max_wait, pending: HashMap::new() }
    }

    /// Adds an input; returns the batches it filled.
    pub fn push(&mut self, input: SinkInput) -> Vec<Pending> {
        let now = Instant::now();
        let SinkInput { batch, charge, mark, ack } = input;
        let tenant = batch.tenant;
        let mut full = Vec::new();
        for stream in batch.streams {
            for entry in stream.entries {
                let size = entry.line.len() + entry.metadata_size();
                let pending = self
                    .pending
                    .entry(Arc::clone(&tenant))
                    .or_insert_with(|| Pending::new(Arc::clone(&tenant), now));
                if pending.entries > 0 && pending.bytes + size > self.max_bytes {
                    let done = std::mem::replace(pending, Pending::new(Arc::clone(&tenant), now));
                    full.push(done);
                }
                pending.add(&stream.labels, entry);
                pending.hold(&charge, mark.as_ref(), ack.as_ref());
            }
        }
        // Every pending batch with entries of the record holds a share now.
        if let Some(mark) = mark {
            mark.settle();
        }
        full
    }

    /// Batches whose wait is over at `now`.
    pub fn due(&mut self, now: Instant) -> Vec<Pending> {
        let expired: Vec<Arc<str>> = self
            .pending
            .iter()
            .filter(|(_, p)| now.duration_since(p.started) >= self.max_wait)
            .map(|(t, _)| Arc::clone(t))
            .collect();
        expired.iter().filter_map(|t| self.pending.remove(t)).collect()
    }

    /// Everything held, e.g. at shutdown.
    pub fn drain(&mut self) -> Vec<Pending> {
        self.pending.drain().map(|(_, p)| p).collect()
    }

    /// When the oldest held batch is due, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.started + self.max_wait).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::Budget;

    fn input(tenant: &str, app: &str, lines: &[&str]) -> SinkInput {
        let labels = LabelSet::new(vec![("app".into(), app.into())]);
        let entries = lines
            .iter()
            .enumerate()
            .map(|(i, l)| Entry { timestamp_ns: i as i64, line: l.to_string(), metadata: vec![] })
            .collect();
        let budget = Budget::new(1000, 1_000_000);
        let charge = Arc::new(budget.try_charge(lines.len() as u64, 100).expect("fits"));
        SinkInput {
            batch: Batch { tenant: tenant.into(), streams: vec![Stream { labels, entries }] },
            charge,
            mark: None,
            ack: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn batches_by_size_merging_streams_in_order() {
        let mut b = Batcher::new(10, Duration::from_secs(1));
        assert!(b.push(input("t", "a", &["1234", "5678"])).is_empty());
        let full = b.push(input("t", "a", &["9abc", "d"]));
        assert_eq!(full.len(), 1);
        let lines: Vec<&str> = full[0].batch.streams[0].entries.iter().map(|e| e.line.as_str()).collect();
        assert_eq!(lines, ["1234", "5678"]);
        assert_eq!(full[0].charges.len(), 1);
        let rest = b.drain();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].batch.streams.len(), 1, "same labels merged into one stream");
        assert_eq!(rest[0].entries, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn batches_by_age_per_tenant() {
        let mut b = Batcher::new(1 << 20, Duration::from_secs(1));
        b.push(input("t1", "a", &["x"]));
        tokio::time::advance(Duration::from_millis(600)).await;
        b.push(input("t2", "a", &["y"]));
        assert_eq!(b.next_deadline(), Some(Instant::now() + Duration::from_millis(400)));
        tokio::time::advance(Duration::from_millis(400)).await;
        let due = b.due(Instant::now());
        assert_eq!(due.len(), 1);
        assert_eq!(&*due[0].batch.tenant, "t1");
        assert!(b.due(Instant::now()).is_empty());
    }
}
