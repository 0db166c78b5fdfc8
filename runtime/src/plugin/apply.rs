//! Applies a plugin's checked response to the host's batch, in place: dropped entries go, patched
//! ones change, an entry whose labels change moves to the stream with those labels, and added
//! entries join their streams. Streams keep their order and each stream its entries' order;
//! entries that move or are added come after the target stream's own, in batch order, and
//! streams that did not exist are appended. Nothing is allocated for entries that stay as they
//! are.

use std::collections::HashMap;

use sluice_sdk::format::Pairs;
use sluice_sdk::format::response::{PatchRef, Response, Verdict};

use crate::model::{Batch, Entry, LabelSet, Pair, Stream};

/// What applying a response did, for the stage's metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Entries the plugin received.
    pub entries_in: usize,
    /// Entries after the plugin (kept, patched, and added).
    pub entries_out: usize,
    pub dropped: usize,
    pub modified: usize,
    pub added: usize,
    /// Patched entries that moved to another stream.
    pub moved: usize,
}

/// Applies `response` (checked by [`Response::parse`] against this batch's entry count).
pub fn apply(batch: &mut Batch, response: &Response<'_>) -> Applied {
    let entries_in = batch.entry_count();
    let mut stats = Applied { entries_in, ..Applied::default() };
    let unchanged = (0..entries_in).all(|i| response.verdict(i) == Verdict::Keep);
    let mut added = response.added().peekable();
    if unchanged && added.peek().is_none() {
        stats.entries_out = entries_in;
        return stats;
    }
    let mut patches = response.patches();
    let mut targets = Targets::default();
    let mut moved: Vec<(usize, Entry)> = Vec::new();
    let mut index = 0;
    for Stream { labels, entries } in &mut batch.streams {
        entries.retain_mut(|entry| {
            let i = index;
            index += 1;
            match response.verdict(i) {
                Verdict::Keep => true,
                Verdict::Drop => {
                    stats.dropped += 1;
                    false
                }
                Verdict::Patched => {
                    stats.modified += 1;
                    // Patches are sorted and exist exactly for the patched entries (checked).
                    let Some(patch) = patches.next() else { return true };
                    debug_assert_eq!(patch.entry, Some(i));
                    patch_entry(entry, &patch);
                    let Some(new) = patch.labels else { return true };
                    let target = targets.index(new);
                    if targets.sets[target] == *labels {
                        return true;
                    }
                    moved.push((target, std::mem::replace(entry, empty_entry())));
                    false
                }
            }
        });
    }
    stats.moved = moved.len();
    // Each target label set finds (or becomes) its stream once, however many entries move there.
    let mut index = StreamIndex::default();
    let streams: Vec<usize> =
        targets.sets.into_iter().map(|labels| index.find_or_add(batch, labels)).collect();
    for (target, entry) in moved {
        batch.streams[streams[target]].entries.push(entry);
    }
    for p in added {
        let entry = Entry {
            timestamp_ns: p.timestamp_ns.unwrap_or_default(),
            line: p.line.unwrap_or_default().to_string(),
            metadata: p.metadata.map(owned_pairs).unwrap_or_default(),
        };
        stats.added += 1;
        // Added entries always carry labels (checked); the fallback only satisfies the types.
        let labels = p.labels.map_or_else(|| LabelSet::new(Vec::new()), label_set);
        let i = index.find_or_add(batch, labels);
        batch.streams[i].entries.push(entry);
    }
    stats.entries_out = entries_in - stats.dropped + stats.added;
    stats
}

fn patch_entry(entry: &mut Entry, patch: &PatchRef<'_>) {
    if let Some(ts) = patch.timestamp_ns {
        entry.timestamp_ns = ts;
    }
    if let Some(line) = patch.line {
        // Reuses the line's buffer: a shorter line (redaction) allocates nothing.
        entry.line.clear();
        entry.line.push_str(line);
    }
    if let Some(metadata) = &patch.metadata {
        assign_pairs(&mut entry.metadata, metadata.clone());
    }
}

/// Makes `pairs` a copy of `new`, reusing its strings' buffers: a stage usually adds a pair or
/// two to the metadata the entry has, so most pairs are rewritten with what they already hold.
fn assign_pairs(pairs: &mut Vec<Pair>, new: Pairs<'_>) {
    let mut len = 0;
    for (name, value) in new {
        match pairs.get_mut(len) {
            Some((n, v)) => {
                if n != name {
                    n.clear();
                    n.push_str(name);
                }
                if v != value {
                    v.clear();
                    v.push_str(value);
                }
            }
            None => pairs.push((name.to_string(), value.to_string())),
        }
        len += 1;
    }
    pairs.truncate(len);
}

/// Whether `new` (in any order, names unique) is exactly `current`.
fn same_labels(current: &LabelSet, new: &Pairs<'_>) -> bool {
    new.len() == current.len() && new.clone().all(|(n, v)| current.get(n) == Some(v))
}

fn label_set(pairs: Pairs<'_>) -> LabelSet {
    LabelSet::new(owned_pairs(pairs))
}

fn owned_pairs(pairs: Pairs<'_>) -> Vec<Pair> {
    pairs.map(|(n, v)| (n.to_string(), v.to_string())).collect()
}

fn empty_entry() -> Entry {
    Entry { timestamp_ns: 0, line: String::new(), metadata: Vec::new() }
}

/// The batch's streams by label fingerprint, to find the stream of a label set without
/// comparing it with every stream. Built on first use: a response that moves and adds no entry
/// (a redaction) needs none.
#[derive(Default)]
struct StreamIndex {
    by_fingerprint: Option<HashMap<u64, Vec<usize>>>,
}

impl StreamIndex {
    /// The index of the stream with `labels`, appended to the batch if it has none.
    fn find_or_add(&mut self, batch: &mut Batch, labels: LabelSet) -> usize {
        let by_fingerprint = self.by_fingerprint.get_or_insert_with(|| {
            let mut map: HashMap<u64, Vec<usize>> = HashMap::with_capacity(batch.streams.len());
            for (i, s) in batch.streams.iter().enumerate() {
                map.entry(s.labels.fingerprint()).or_default().push(i);
            }
            map
        });
        let candidates = by_fingerprint.entry(labels.fingerprint()).or_default();
        if let Some(&i) = candidates.iter().find(|&&i| batch.streams[i].labels == labels) {
            return i;
        }
        batch.streams.push(Stream { labels, entries: Vec::new() });
        candidates.push(batch.streams.len() - 1);
        batch.streams.len() - 1
    }
}

/// The distinct label sets entries move to in one response. Many patches carry the same new set
/// (a parser's `level` label, a relabel of a whole stream), so each is built once. A set the
/// plugin wrote once for several patches (one range of the response's pairs) is found by that
/// range; others by an order-independent hash of the borrowed pairs, without allocating.
#[derive(Default)]
struct Targets {
    sets: Vec<LabelSet>,
    by_range: HashMap<(u32, u32), usize>,
    by_hash: HashMap<u64, Vec<usize>>,
}

impl Targets {
    fn index(&mut self, pairs: Pairs<'_>) -> usize {
        let range = pairs.range();
        let key = (range.start, range.end);
        if let Some(&i) = self.by_range.get(&key) {
            return i;
        }
        let i = self.index_by_hash(pairs);
        self.by_range.insert(key, i);
        i
    }

    fn index_by_hash(&mut self, pairs: Pairs<'_>) -> usize {
        let hash = pairs.clone().fold(0u64, |h, (n, v)| {
            let pair = xxhash_rust::xxh3::xxh3_64(n.as_bytes()).rotate_left(1)
                ^ xxhash_rust::xxh3::xxh3_64(v.as_bytes());
            h.wrapping_add(pair)
        });
        let candidates = self.by_hash.entry(hash).or_default();
        if let Some(&i) = candidates.iter().find(|&&i| same_labels(&self.sets[i], &pairs)) {
            return i;
        }
        self.sets.push(label_set(pairs));
        candidates.push(self.sets.len() - 1);
        self.sets.len() - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_sdk::format::response::{Patch, ResponseWriter};

    fn labels(p: &[(&str, &str)]) -> LabelSet {
        LabelSet::new(p.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect())
    }

    fn entry(ts: i64, line: &str) -> Entry {
        Entry { timestamp_ns: ts, line: line.into(), metadata: vec![("k".into(), "v".into())] }
    }

    /// Stream `a` with entries 0..3, stream `b` with entries 3..5.
    fn batch() -> Batch {
        Batch {
            tenant: "t".into(),
            streams: vec![
                Stream {
                    labels: labels(&[("app", "a")]),
                    entries: vec![entry(1, "a1"), entry(2, "a2"), entry(3, "a3")],
                },
                Stream { labels: labels(&[("app", "b")]), entries: vec![entry(4, "b1"), entry(5, "b2")] },
            ],
        }
    }

    fn apply_written(b: &mut Batch, w: ResponseWriter) -> Applied {
        let buf = w.finish().expect("fits");
        let r = Response::parse(&buf, b.entry_count()).expect("valid");
        apply(b, &r)
    }

    fn lines(b: &Batch) -> Vec<(String, Vec<String>)> {
        b.streams
            .iter()
            .map(|s| (s.labels.to_string(), s.entries.iter().map(|e| e.line.clone()).collect()))
            .collect()
    }

    #[test]
    fn an_all_keep_response_changes_nothing() {
        let mut b = batch();
        let stats = apply_written(&mut b, ResponseWriter::new(5));
        assert_eq!(b, batch());
        assert_eq!((stats.entries_in, stats.entries_out, stats.dropped), (5, 5, 0));
    }

    #[test]
    fn verdicts_drop_and_patches_change_fields_in_place() {
        let mut b = batch();
        let mut w = ResponseWriter::new(5);
        w.drop_entry(1);
        w.patch(2, &Patch { line: Some("A3"), timestamp_ns: Some(30), ..Patch::default() }).expect("ordered");
        w.patch(4, &Patch { metadata: Some(&[("trace", "x")]), ..Patch::default() }).expect("ordered");
        w.drop_entry(3);
        let stats = apply_written(&mut b, w);
        assert_eq!(
            lines(&b),
            [
                ("{app=\"a\"}".into(), vec!["a1".into(), "A3".into()]),
                ("{app=\"b\"}".into(), vec!["b2".into()])
            ]
        );
        let a3 = &b.streams[0].entries[1];
        assert_eq!((a3.timestamp_ns, a3.metadata.clone()), (30, vec![("k".into(), "v".into())]));
        assert_eq!(b.streams[1].entries[0].metadata, vec![("trace".to_string(), "x".to_string())]);
        assert_eq!(
            stats,
            Applied { entries_in: 5, entries_out: 3, dropped: 2, modified: 2, added: 0, moved: 0 }
        );
    }

    #[test]
    fn a_label_change_moves_the_entry_keeping_orders() {
        let mut b = batch();
        let mut w = ResponseWriter::new(5);
        // a1 → the existing stream b (after b's own entries); a2 → a new stream (appended);
        // b1 gets its own labels back in another order: it stays; b2 → stream a.
        w.patch(0, &Patch { labels: Some(&[("app", "b")]), ..Patch::default() }).expect("ordered");
        w.patch(1, &Patch { labels: Some(&[("level", "warn"), ("app", "a")]), ..Patch::default() })
            .expect("ordered");
        w.patch(3, &Patch { labels: Some(&[("app", "b")]), line: Some("B1"), ..Patch::default() })
            .expect("ordered");
        w.patch(4, &Patch { labels: Some(&[("app", "a")]), ..Patch::default() }).expect("ordered");
        let stats = apply_written(&mut b, w);
        assert_eq!(
            lines(&b),
            [
                ("{app=\"a\"}".into(), vec!["a3".into(), "b2".into()]),
                ("{app=\"b\"}".into(), vec!["B1".into(), "a1".into()]),
                ("{app=\"a\", level=\"warn\"}".into(), vec!["a2".into()]),
            ]
        );
        assert_eq!((stats.moved, stats.modified, stats.entries_out), (3, 4, 5));
        assert_eq!(b.streams[1].entries[1].timestamp_ns, 1, "a moved entry keeps its fields");
    }

    #[test]
    fn metadata_patches_grow_and_shrink_the_entry_s_metadata() {
        let mut b = batch();
        let mut w = ResponseWriter::new(5);
        let longer = [("k", "v"), ("trace_id", "t1"), ("pod", "p")];
        w.patch(0, &Patch { metadata: Some(&longer), ..Patch::default() }).expect("ordered");
        w.patch(1, &Patch { metadata: Some(&[]), ..Patch::default() }).expect("ordered");
        w.patch(2, &Patch { metadata: Some(&[("other", "v")]), ..Patch::default() }).expect("ordered");
        apply_written(&mut b, w);
        let metadata: Vec<Vec<(String, String)>> =
            b.streams[0].entries.iter().map(|e| e.metadata.clone()).collect();
        let owned = |p: &[(&str, &str)]| -> Vec<(String, String)> {
            p.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
        };
        assert_eq!(metadata, [owned(&longer), vec![], owned(&[("other", "v")])]);
    }

    #[test]
    fn entries_pointing_at_one_shared_label_set_move_together_and_a_set_equal_to_their_own_keeps_them() {
        let mut b = batch();
        let mut w = ResponseWriter::new(5);
        let moved = [("app", "a"), ("level", "info")];
        for i in [0, 2, 3] {
            w.patch(i, &Patch { labels: Some(&moved), ..Patch::default() }).expect("ordered");
        }
        // Stream b's own labels, written once and shared by both of its entries: nothing moves.
        w.patch(4, &Patch { labels: Some(&[("app", "b")]), line: Some("B2"), ..Patch::default() })
            .expect("ordered");
        let buf = w.finish().expect("fits");
        let r = Response::parse(&buf, 5).expect("valid");
        let ranges: Vec<_> = r.patches().map(|p| p.labels.expect("set").range()).collect();
        assert!(ranges[0] == ranges[1] && ranges[1] == ranges[2], "the writer shared the set: {ranges:?}");
        let stats = apply(&mut b, &r);
        assert_eq!(
            lines(&b),
            [
                ("{app=\"a\"}".into(), vec!["a2".into()]),
                ("{app=\"b\"}".into(), vec!["B2".into()]),
                ("{app=\"a\", level=\"info\"}".into(), vec!["a1".into(), "a3".into(), "b1".into()]),
            ]
        );
        assert_eq!((stats.moved, stats.modified, stats.entries_out), (3, 4, 5));
    }

    #[test]
    fn added_entries_join_their_streams_after_the_batch_s_own() {
        let mut b = batch();
        let mut w = ResponseWriter::new(5);
        w.drop_entry(0);
        w.add(99, "summary", &[("app", "a")], &[("n", "1")]);
        w.add(100, "elsewhere", &[("app", "new")], &[]);
        let stats = apply_written(&mut b, w);
        assert_eq!(
            lines(&b),
            [
                ("{app=\"a\"}".into(), vec!["a2".into(), "a3".into(), "summary".into()]),
                ("{app=\"b\"}".into(), vec!["b1".into(), "b2".into()]),
                ("{app=\"new\"}".into(), vec!["elsewhere".into()]),
            ]
        );
        let summary = &b.streams[0].entries[2];
        assert_eq!((summary.timestamp_ns, summary.metadata.clone()), (99, vec![("n".into(), "1".into())]));
        assert_eq!((stats.added, stats.dropped, stats.entries_out), (2, 1, 6));
    }
}
