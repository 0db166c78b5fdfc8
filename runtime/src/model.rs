//! The data every part of sluice shares: a tenant's [`Batch`] of [`Stream`]s, each with a sorted
//! [`LabelSet`] and time-stamped [`Entry`]s, plus the [`Ack`] that tells the ingest handler when
//! a batch has been handed on.
//!
//! Decoders build these types directly (lines are moved, never copied), stages mutate them in
//! place, and sinks encode them.

use std::fmt;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// A label or structured-metadata pair: `(name, value)`.
pub type Pair = (String, String);

/// A stream's labels, sorted by name, with a fingerprint computed once.
///
/// The fingerprint is a stable hash (xxh3) of the sorted pairs: it shards streams over pipeline
/// workers and keys per-stream state, so it must not depend on the process.
#[derive(Clone)]
pub struct LabelSet {
    pairs: Vec<Pair>,
    fingerprint: u64,
}

/// Sets that differ almost always differ in fingerprint: compared first, it spares most string
/// comparisons (a plugin stage compares an entry's new labels with its stream's).
impl PartialEq for LabelSet {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint && self.pairs == other.pairs
    }
}

impl Eq for LabelSet {}

impl std::hash::Hash for LabelSet {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.fingerprint.hash(state);
    }
}

impl LabelSet {
    /// Sorts `pairs` by name (stable, so duplicates keep their order for validation to report).
    pub fn new(mut pairs: Vec<Pair>) -> Self {
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let fingerprint = fingerprint(&pairs);
        Self { pairs, fingerprint }
    }

    /// The pairs, sorted by name.
    pub fn pairs(&self) -> &[Pair] {
        &self.pairs
    }

    /// The value of label `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs.binary_search_by(|(n, _)| n.as_str().cmp(name)).ok().map(|i| self.pairs[i].1.as_str())
    }

    /// Stable hash of the sorted pairs.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// True when there are no labels.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Gives the pairs back, e.g. to edit them and build a new set.
    pub fn into_pairs(self) -> Vec<Pair> {
        self.pairs
    }
}

fn fingerprint(pairs: &[Pair]) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for (name, value) in pairs {
        hasher.update(name.as_bytes());
        hasher.update(&[0xff]);
        hasher.update(value.as_bytes());
        hasher.update(&[0xfe]);
    }
    hasher.digest()
}

/// Formats as a Loki/Prometheus selector: `{app="api", namespace="prod"}`, values escaped.
impl fmt::Display for LabelSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (name, value)) in self.pairs.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{name}=\"")?;
            for c in value.chars() {
                match c {
                    '"' => f.write_str("\\\"")?,
                    '\\' => f.write_str("\\\\")?,
                    '\n' => f.write_str("\\n")?,
                    c => write!(f, "{c}")?,
                }
            }
            f.write_str("\"")?;
        }
        f.write_str("}")
    }
}

impl fmt::Debug for LabelSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// One log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Nanoseconds since the Unix epoch.
    pub timestamp_ns: i64,
    pub line: String,
    /// Structured metadata, in the order the client sent it.
    pub metadata: Vec<Pair>,
}

impl Entry {
    /// Bytes of structured metadata as Loki counts them (names plus values).
    pub fn metadata_size(&self) -> usize {
        self.metadata.iter().map(|(n, v)| n.len() + v.len()).sum()
    }

    /// Approximate bytes this entry holds in memory, for queue and batch accounting.
    pub fn size(&self) -> usize {
        self.line.len() + self.metadata_size() + std::mem::size_of::<Self>()
    }
}

/// The entries of one label set, in the order they arrived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stream {
    pub labels: LabelSet,
    pub entries: Vec<Entry>,
}

impl Stream {
    /// Approximate bytes held, for accounting.
    pub fn size(&self) -> usize {
        self.entries.iter().map(Entry::size).sum::<usize>()
            + self.labels.pairs().iter().map(|(n, v)| n.len() + v.len()).sum::<usize>()
    }
}

/// A tenant's streams, as one push delivered them or as a sink batches them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    pub tenant: Arc<str>,
    pub streams: Vec<Stream>,
}

impl Batch {
    pub fn new(tenant: Arc<str>) -> Self {
        Self { tenant, streams: Vec::new() }
    }

    /// Number of entries over all streams.
    pub fn entry_count(&self) -> usize {
        self.streams.iter().map(|s| s.entries.len()).sum()
    }

    /// Approximate bytes held, for accounting.
    pub fn size(&self) -> usize {
        self.streams.iter().map(Stream::size).sum()
    }

    /// Bytes of log lines only (the "input MB" of the benchmarks).
    pub fn line_bytes(&self) -> usize {
        self.streams.iter().flat_map(|s| &s.entries).map(|e| e.line.len()).sum()
    }
}

/// Why a batch could not be handed on; sent back to the ingest handler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AckFailure {
    pub kind: AckFailureKind,
    pub message: String,
}

/// What the client should make of a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckFailureKind {
    /// Something broke (500).
    Failed,
    /// Sluice is at capacity: retry later (429).
    Overloaded,
    /// Sluice cannot take data now, e.g. its disk is full, or a sink cannot deliver (503).
    Unavailable,
    /// A sink refused the data for good, e.g. Loki answered 400 (400).
    Rejected,
}

/// A share of a batch's acknowledgement. Clone it for every part a batch is split into; when
/// the last clone is dropped the waiter learns the outcome: success unless some holder called
/// [`Ack::fail`]. A panic that unwinds through a holder drops it too, so holders that may fail
/// must catch that and call `fail` first.
#[derive(Clone)]
pub struct Ack {
    state: Arc<AckState>,
}

struct AckState {
    failure: Mutex<Option<AckFailure>>,
    tx: Mutex<Option<oneshot::Sender<Result<(), AckFailure>>>>,
}

/// Receives the outcome of one batch's [`Ack`].
pub type AckWaiter = oneshot::Receiver<Result<(), AckFailure>>;

impl Ack {
    /// A new acknowledgement and the receiver of its outcome.
    pub fn new() -> (Self, AckWaiter) {
        let (tx, rx) = oneshot::channel();
        let state = AckState { failure: Mutex::new(None), tx: Mutex::new(Some(tx)) };
        (Self { state: Arc::new(state) }, rx)
    }

    /// Marks the batch failed; the first reason wins.
    pub fn fail(&self, reason: impl Into<String>) {
        self.fail_with(AckFailureKind::Failed, reason);
    }

    /// True when both are shares of the same acknowledgement.
    pub fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.state, &other.state)
    }

    /// Marks the batch failed with a kind that tells the client what to do; the first wins.
    pub fn fail_with(&self, kind: AckFailureKind, reason: impl Into<String>) {
        let mut failure = self.state.failure.lock().unwrap_or_else(|p| p.into_inner());
        failure.get_or_insert_with(|| AckFailure { kind, message: reason.into() });
    }
}

impl fmt::Debug for Ack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Ack")
    }
}

impl Drop for AckState {
    fn drop(&mut self) {
        let failure = self.failure.get_mut().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(tx) = self.tx.get_mut().unwrap_or_else(|p| p.into_inner()).take() {
            // The waiter may have gone (client disconnected); nothing to tell then.
            let _ = tx.send(failure.map_or(Ok(()), Err));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<Pair> {
        p.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    #[test]
    fn labels_sort_and_fingerprint_ignores_input_order() {
        let a = LabelSet::new(pairs(&[("b", "2"), ("a", "1")]));
        let b = LabelSet::new(pairs(&[("a", "1"), ("b", "2")]));
        assert_eq!(a, b);
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.get("a"), Some("1"));
        assert_eq!(a.get("c"), None);
        let c = LabelSet::new(pairs(&[("a", "12"), ("b", "")]));
        assert_ne!(a.fingerprint(), c.fingerprint());
    }

    #[test]
    fn labels_display_escapes_values() {
        let l = LabelSet::new(pairs(&[("msg", "say \"hi\"\\\n"), ("app", "x")]));
        assert_eq!(l.to_string(), r#"{app="x", msg="say \"hi\"\\\n"}"#);
    }

    #[tokio::test]
    async fn ack_fires_when_last_share_drops() {
        let (ack, waiter) = Ack::new();
        let other = ack.clone();
        drop(ack);
        other.fail("stage exploded");
        drop(other);
        let failure = AckFailure { kind: AckFailureKind::Failed, message: "stage exploded".into() };
        assert_eq!(waiter.await.expect("sent"), Err(failure));

        let (ack, waiter) = Ack::new();
        drop(ack);
        assert_eq!(waiter.await.expect("sent"), Ok(()));
    }
}
