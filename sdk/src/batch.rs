//! Borrowed views of a batch, with setters that record changes as patches.
//!
//! Reading never copies: a view's strings point into the request buffer. The first change to an
//! entry takes a slot from a pool of edit records that is reused across batches; an entry nobody
//! changes costs no allocation. When the plugin is done, each changed entry becomes one patch with
//! only the fields that really differ, written in entry order into a reused [`ResponseWriter`].

use std::cmp::Ordering;
use std::iter::Peekable;
use std::ops::Range;

use crate::Error;
use crate::format::request::{EntryRef, Request};
use crate::format::response::{self, Patch, ResponseWriter};
use crate::format::{Pair, Pairs, is_valid_label_name};

/// What happens to an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The entry goes on, with whatever changes were made through the setters.
    Keep,
    /// The entry is dropped.
    Drop,
}

/// A slot of [`State::slots`] that holds no edits.
const NONE: u32 = u32::MAX;

/// Pending changes to one entry. Label and metadata changes are kept as a diff over the request,
/// so untouched pairs are never copied.
#[derive(Debug, Default)]
struct Edits {
    timestamp_ns: Option<i64>,
    line: Option<String>,
    /// Sorted by name, names unique.
    labels: PairEdits,
    /// In the order first changed, names unique.
    metadata: PairEdits,
}

/// Changes to a set of pairs: names with a new value, or removed. Clearing keeps the strings, so
/// once the pool is warm, changing labels or metadata allocates nothing.
#[derive(Debug, Default)]
struct PairEdits {
    items: Vec<PairEdit>,
    len: usize,
}

#[derive(Debug, Default)]
struct PairEdit {
    name: String,
    value: String,
    removed: bool,
}

impl PairEdit {
    /// The new value; `None` if removed.
    fn value(&self) -> Option<&str> {
        (!self.removed).then_some(self.value.as_str())
    }
}

impl PairEdits {
    fn clear(&mut self) {
        self.len = 0;
    }

    fn as_slice(&self) -> &[PairEdit] {
        &self.items[..self.len]
    }

    /// Where `name` is, or where it goes, in a set kept sorted by name.
    fn find_sorted(&self, name: &str) -> Result<usize, usize> {
        self.as_slice().binary_search_by(|e| e.name.as_str().cmp(name))
    }

    /// Where `name` is, or the end, in a set kept in insertion order.
    fn find_ordered(&self, name: &str) -> Result<usize, usize> {
        self.as_slice().iter().position(|e| e.name == name).ok_or(self.len)
    }

    /// Sets `name` (found at, or to be inserted at, `at`) to `value`; `None` removes.
    fn put(&mut self, at: Result<usize, usize>, name: &str, value: Option<&str>) {
        let i = match at {
            Ok(i) => i,
            Err(i) => {
                if self.len == self.items.len() {
                    self.items.push(PairEdit::default());
                }
                self.items[i..=self.len].rotate_right(1);
                self.len += 1;
                self.items[i].name.clear();
                self.items[i].name.push_str(name);
                i
            }
        };
        let item = &mut self.items[i];
        item.value.clear();
        item.value.push_str(value.unwrap_or_default());
        item.removed = value.is_none();
    }
}

impl Edits {
    fn clear(&mut self) {
        self.timestamp_ns = None;
        self.line = None;
        self.labels.clear();
        self.metadata.clear();
    }
}

/// The per-batch bookkeeping, owned by the plugin runner and reused across batches.
#[derive(Debug)]
pub(crate) struct State {
    writer: ResponseWriter,
    /// Entry index → index into `edits`, or [`NONE`]; filled only once an entry is changed.
    slots: Vec<u32>,
    slots_ready: bool,
    /// A pool of edit records; the first `used` belong to this batch.
    edits: Vec<Edits>,
    used: usize,
    added: Vec<NewEntry>,
}

impl State {
    pub(crate) fn new() -> Self {
        Self {
            writer: ResponseWriter::new(0),
            slots: Vec::new(),
            slots_ready: false,
            edits: Vec::new(),
            used: 0,
            added: Vec::new(),
        }
    }

    /// Prepares for a batch of `entry_count` entries.
    pub(crate) fn reset(&mut self, entry_count: usize) {
        self.writer.reset(entry_count);
        self.slots_ready = false;
        self.used = 0;
        self.added.clear();
    }

    fn edits(&self, i: usize) -> Option<&Edits> {
        if !self.slots_ready {
            return None;
        }
        match self.slots[i] {
            NONE => None,
            slot => Some(&self.edits[slot as usize]),
        }
    }

    fn edits_mut(&mut self, i: usize) -> &mut Edits {
        if !self.slots_ready {
            self.slots.clear();
            self.slots.resize(self.writer.entry_count(), NONE);
            self.slots_ready = true;
        }
        if self.slots[i] == NONE {
            if self.used == self.edits.len() {
                self.edits.push(Edits::default());
            } else {
                self.edits[self.used].clear();
            }
            // Fits: there are fewer edit records than entries, and entries fit the format's u32.
            self.slots[i] = self.used as u32;
            self.used += 1;
        }
        &mut self.edits[self.slots[i] as usize]
    }

    /// Writes the response for `request`: verdicts, one patch per really changed entry, added
    /// entries. Fails when a change would give an entry no labels.
    pub(crate) fn finish(&mut self, request: &Request<'_>, out: &mut Vec<u8>) -> Result<(), Error> {
        let Self { writer, slots, slots_ready, edits, added, .. } = self;
        let mut labels: Vec<Pair<'_>> = Vec::new();
        let mut metadata: Vec<Pair<'_>> = Vec::new();
        if *slots_ready {
            for stream in request.streams() {
                for i in stream.entries.clone() {
                    let slot = slots[i];
                    if slot == NONE || writer.verdict(i) == response::Verdict::Drop {
                        continue;
                    }
                    let e = &edits[slot as usize];
                    let original = request.entry(i);
                    let line = e.line.as_deref().filter(|l| *l != original.line);
                    let timestamp_ns = e.timestamp_ns.filter(|t| *t != original.timestamp_ns);
                    labels.clear();
                    let labels_changed = e.labels.len > 0 && {
                        labels.extend(Labels::new(stream.labels.clone(), e.labels.as_slice()));
                        !labels.iter().copied().eq(stream.labels.clone())
                    };
                    if labels_changed && labels.is_empty() {
                        return Err(Error::msg(format!(
                            "entry {i}: its labels were all removed, and an entry needs at least one label"
                        )));
                    }
                    metadata.clear();
                    let metadata_changed = e.metadata.len > 0 && {
                        metadata.extend(Metadata::new(original.metadata.clone(), e.metadata.as_slice()));
                        !metadata.iter().copied().eq(original.metadata.clone())
                    };
                    let patch = Patch {
                        timestamp_ns,
                        line,
                        labels: labels_changed.then_some(labels.as_slice()),
                        metadata: metadata_changed.then_some(metadata.as_slice()),
                    };
                    if patch != Patch::default() {
                        writer.patch(i, &patch).map_err(|e| Error::msg(format!("entry {i}: {e}")))?;
                    }
                }
            }
        }
        for entry in added.iter() {
            labels.clear();
            labels.extend(entry.labels.iter().map(|(n, v)| (n.as_str(), v.as_str())));
            metadata.clear();
            metadata.extend(entry.metadata.iter().map(|(n, v)| (n.as_str(), v.as_str())));
            writer.add(entry.timestamp_ns, &entry.line, &labels, &metadata);
        }
        writer.finish_into(out).map_err(Error::msg)
    }
}

/// One batch: a tenant's streams and their entries. Given to [`Plugin::process_batch`].
///
/// [`Plugin::process_batch`]: crate::Plugin::process_batch
pub struct Batch<'a> {
    request: &'a Request<'a>,
    state: &'a mut State,
}

impl<'a> Batch<'a> {
    pub(crate) fn new(request: &'a Request<'a>, state: &'a mut State) -> Self {
        state.reset(request.entry_count());
        Self { request, state }
    }

    /// The tenant (`X-Scope-OrgID`) the batch belongs to.
    pub fn tenant(&self) -> &'a str {
        self.request.tenant()
    }

    /// The number of entries in the batch (not counting added ones).
    pub fn len(&self) -> usize {
        self.request.entry_count()
    }

    /// Whether the batch has no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The number of streams.
    pub fn stream_count(&self) -> usize {
        self.request.stream_count()
    }

    /// Stream `i`; panics if out of range, like slice indexing.
    pub fn stream(&self, i: usize) -> Stream<'a> {
        let s = self.request.stream(i);
        Stream { index: i, labels: s.labels, entries: s.entries }
    }

    /// The streams in order; their entries are numbered consecutively over the batch.
    pub fn streams(&self) -> impl ExactSizeIterator<Item = Stream<'a>> + '_ {
        (0..self.stream_count()).map(|i| self.stream(i))
    }

    /// A view of entry `i` (over the whole batch) with its setters; panics if out of range.
    pub fn entry(&mut self, i: usize) -> Entry<'_> {
        let request = self.request;
        assert!(i < request.entry_count(), "entry {i} of a batch of {}", request.entry_count());
        // The first stream whose entries end after `i`: streams cover the entries in order.
        let (mut s, mut hi) = (0, request.stream_count());
        while s < hi {
            let mid = s + (hi - s) / 2;
            if request.stream(mid).entries.end <= i {
                s = mid + 1;
            } else {
                hi = mid;
            }
        }
        let stream = request.stream(s);
        Entry { index: i, stream: s, original: request.entry(i), labels: stream.labels, state: self.state }
    }

    /// Calls `f` for every entry in order, dropping those it answers [`Verdict::Drop`] for
    /// ([`Verdict::Keep`] leaves an earlier [`Batch::drop_entry`] in place). The default
    /// [`Plugin::process_batch`](crate::Plugin::process_batch) is this with `process`. An error
    /// stops the batch and names the entry.
    pub fn for_each_entry(
        &mut self,
        mut f: impl FnMut(&mut Entry<'_>) -> Result<Verdict, Error>,
    ) -> Result<(), Error> {
        let request = self.request;
        for s in 0..request.stream_count() {
            let stream = request.stream(s);
            for i in stream.entries {
                let mut entry = Entry {
                    index: i,
                    stream: s,
                    original: request.entry(i),
                    labels: stream.labels.clone(),
                    state: &mut *self.state,
                };
                match f(&mut entry) {
                    Ok(Verdict::Keep) => {}
                    Ok(Verdict::Drop) => self.state.writer.drop_entry(i),
                    Err(e) => return Err(e.context(format_args!("entry {i}"))),
                }
            }
        }
        Ok(())
    }

    /// The verdict of entry `i` so far.
    pub fn verdict(&self, i: usize) -> Verdict {
        match self.state.writer.verdict(i) {
            response::Verdict::Drop => Verdict::Drop,
            _ => Verdict::Keep,
        }
    }

    /// Sets the verdict of entry `i`; out of range is ignored.
    pub fn set_verdict(&mut self, i: usize, verdict: Verdict) {
        match verdict {
            Verdict::Keep => self.state.writer.keep_entry(i),
            Verdict::Drop => self.state.writer.drop_entry(i),
        }
    }

    /// Drops entry `i`; out of range is ignored.
    pub fn drop_entry(&mut self, i: usize) {
        self.set_verdict(i, Verdict::Drop);
    }

    /// Adds a new entry after the batch's own (a summary line, for example). It needs at least
    /// one label; label and metadata names must be valid (`[a-zA-Z_][a-zA-Z0-9_]*`).
    pub fn add_entry(&mut self, entry: NewEntry) -> Result<(), Error> {
        if entry.labels.is_empty() {
            return Err(Error::msg("an added entry needs at least one label"));
        }
        for (name, _) in entry.labels.iter().chain(&entry.metadata) {
            check_name(name)?;
        }
        self.state.added.push(entry);
        Ok(())
    }
}

/// A stream of a batch: its labels and the indices of its entries.
#[derive(Debug, Clone)]
pub struct Stream<'a> {
    index: usize,
    labels: Pairs<'a>,
    entries: Range<usize>,
}

impl<'a> Stream<'a> {
    /// The stream's index in the batch.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The labels, sorted by name.
    pub fn labels(&self) -> Pairs<'a> {
        self.labels.clone()
    }

    /// The value of label `name`.
    pub fn label(&self, name: &str) -> Option<&'a str> {
        self.labels.clone().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// The indices of the stream's entries, for [`Batch::entry`].
    pub fn entries(&self) -> Range<usize> {
        self.entries.clone()
    }
}

/// One entry of a batch, as the plugin sees it: reads reflect the changes made so far.
pub struct Entry<'a> {
    index: usize,
    stream: usize,
    original: EntryRef<'a>,
    /// The stream's labels, sorted by name.
    labels: Pairs<'a>,
    state: &'a mut State,
}

impl std::fmt::Debug for Entry<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("index", &self.index)
            .field("timestamp_ns", &self.timestamp_ns())
            .field("labels", &self.labels().collect::<Vec<_>>())
            .field("line", &self.line())
            .field("metadata", &self.metadata().collect::<Vec<_>>())
            .finish()
    }
}

impl<'a> Entry<'a> {
    /// The entry's index over the whole batch.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The index of the stream the entry arrived in.
    pub fn stream_index(&self) -> usize {
        self.stream
    }

    fn edits(&self) -> Option<&Edits> {
        self.state.edits(self.index)
    }

    /// Nanoseconds since the Unix epoch.
    pub fn timestamp_ns(&self) -> i64 {
        self.edits().and_then(|e| e.timestamp_ns).unwrap_or(self.original.timestamp_ns)
    }

    /// The log line.
    pub fn line(&self) -> &str {
        self.edits().and_then(|e| e.line.as_deref()).unwrap_or(self.original.line)
    }

    /// The line as it arrived, whatever was set since.
    pub fn original_line(&self) -> &'a str {
        self.original.line
    }

    /// The labels, sorted by name: the stream's, with this entry's changes applied.
    pub fn labels(&self) -> Labels<'_> {
        Labels::new(self.labels.clone(), self.edits().map_or(&[][..], |e| e.labels.as_slice()))
    }

    /// The value of label `name`.
    pub fn label(&self, name: &str) -> Option<&str> {
        if let Some(e) = self.edits()
            && let Ok(at) = e.labels.find_sorted(name)
        {
            return e.labels.as_slice()[at].value();
        }
        self.labels.clone().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// The structured metadata, in the order sent, with this entry's changes applied (values
    /// changed in place, new names at the end).
    pub fn metadata(&self) -> Metadata<'_> {
        Metadata::new(self.original.metadata.clone(), self.edits().map_or(&[][..], |e| e.metadata.as_slice()))
    }

    /// The value of structured metadata `name`.
    pub fn metadata_value(&self, name: &str) -> Option<&str> {
        if let Some(e) = self.edits()
            && let Ok(at) = e.metadata.find_ordered(name)
        {
            return e.metadata.as_slice()[at].value();
        }
        self.original.metadata.clone().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// Replaces the line.
    pub fn set_line(&mut self, line: impl Into<String>) {
        self.state.edits_mut(self.index).line = Some(line.into());
    }

    /// Replaces the timestamp (nanoseconds since the Unix epoch).
    pub fn set_timestamp_ns(&mut self, timestamp_ns: i64) {
        self.state.edits_mut(self.index).timestamp_ns = Some(timestamp_ns);
    }

    /// Sets label `name`; the entry moves to the stream with its new label set. Fails for an
    /// invalid label name (`[a-zA-Z_][a-zA-Z0-9_]*`).
    pub fn set_label(&mut self, name: &str, value: impl AsRef<str>) -> Result<(), Error> {
        check_name(name)?;
        let labels = &mut self.state.edits_mut(self.index).labels;
        labels.put(labels.find_sorted(name), name, Some(value.as_ref()));
        Ok(())
    }

    /// Removes label `name`, if present. An entry must keep at least one label: removing the last
    /// one fails the batch.
    pub fn remove_label(&mut self, name: &str) {
        if self.label(name).is_none() {
            return;
        }
        let labels = &mut self.state.edits_mut(self.index).labels;
        labels.put(labels.find_sorted(name), name, None);
    }

    /// Sets structured metadata `name` (its value in place, or a new pair at the end). Fails for
    /// an invalid name (`[a-zA-Z_][a-zA-Z0-9_]*`).
    pub fn set_metadata(&mut self, name: &str, value: impl AsRef<str>) -> Result<(), Error> {
        check_name(name)?;
        let metadata = &mut self.state.edits_mut(self.index).metadata;
        metadata.put(metadata.find_ordered(name), name, Some(value.as_ref()));
        Ok(())
    }

    /// Removes structured metadata `name`, if present.
    pub fn remove_metadata(&mut self, name: &str) {
        if self.metadata_value(name).is_some() {
            let metadata = &mut self.state.edits_mut(self.index).metadata;
            metadata.put(metadata.find_ordered(name), name, None);
        }
    }
}

fn check_name(name: &str) -> Result<(), Error> {
    if is_valid_label_name(name) {
        Ok(())
    } else {
        Err(Error::msg(format!(
            "invalid label or metadata name `{}`: names must match [a-zA-Z_][a-zA-Z0-9_]*",
            name.escape_default()
        )))
    }
}

/// An entry's labels with its changes applied, sorted by name.
#[derive(Debug, Clone)]
pub struct Labels<'e> {
    base: Peekable<Pairs<'e>>,
    edits: &'e [PairEdit],
}

impl<'e> Labels<'e> {
    fn new(base: Pairs<'e>, edits: &'e [PairEdit]) -> Self {
        Self { base: base.peekable(), edits }
    }
}

impl<'e> Iterator for Labels<'e> {
    type Item = Pair<'e>;

    fn next(&mut self) -> Option<Pair<'e>> {
        loop {
            let base = self.base.peek().copied();
            let Some((edit, rest)) = self.edits.split_first() else {
                return self.base.next();
            };
            match base.map(|(n, _)| n.cmp(edit.name.as_str())) {
                Some(Ordering::Less) => return self.base.next(),
                order => {
                    if order == Some(Ordering::Equal) {
                        self.base.next();
                    }
                    self.edits = rest;
                    if let Some(value) = edit.value() {
                        return Some((edit.name.as_str(), value));
                    }
                }
            }
        }
    }
}

/// An entry's structured metadata with its changes applied.
#[derive(Debug, Clone)]
pub struct Metadata<'e> {
    original: Pairs<'e>,
    base: Pairs<'e>,
    edits: &'e [PairEdit],
    appended: usize,
}

impl<'e> Metadata<'e> {
    fn new(base: Pairs<'e>, edits: &'e [PairEdit]) -> Self {
        Self { original: base.clone(), base, edits, appended: 0 }
    }
}

impl<'e> Iterator for Metadata<'e> {
    type Item = Pair<'e>;

    fn next(&mut self) -> Option<Pair<'e>> {
        for (name, value) in self.base.by_ref() {
            match self.edits.iter().find(|e| e.name == name) {
                None => return Some((name, value)),
                Some(edit) => {
                    if let Some(new) = edit.value() {
                        return Some((name, new));
                    }
                }
            }
        }
        while let Some(edit) = self.edits.get(self.appended) {
            self.appended += 1;
            if let Some(value) = edit.value()
                && !self.original.clone().any(|(n, _)| n == edit.name)
            {
                return Some((edit.name.as_str(), value));
            }
        }
        None
    }
}

/// A new entry for [`Batch::add_entry`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    timestamp_ns: i64,
    line: String,
    /// Sorted by name, names unique.
    labels: Vec<(String, String)>,
    metadata: Vec<(String, String)>,
}

impl NewEntry {
    /// An entry with this timestamp (ns since the Unix epoch) and line; add labels next.
    pub fn new(timestamp_ns: i64, line: impl Into<String>) -> Self {
        Self { timestamp_ns, line: line.into(), labels: Vec::new(), metadata: Vec::new() }
    }

    /// Sets label `name` (replacing an earlier value).
    pub fn label(mut self, name: &str, value: impl Into<String>) -> Self {
        match self.labels.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
            Ok(at) => self.labels[at].1 = value.into(),
            Err(at) => self.labels.insert(at, (name.to_string(), value.into())),
        }
        self
    }

    /// Sets all of these labels, e.g. a stream's: `.labels(batch.stream(0).labels())`.
    pub fn labels<'x>(self, labels: impl IntoIterator<Item = Pair<'x>>) -> Self {
        labels.into_iter().fold(self, |e, (n, v)| e.label(n, v))
    }

    /// Sets structured metadata `name` (replacing an earlier value).
    pub fn metadata(mut self, name: &str, value: impl Into<String>) -> Self {
        match self.metadata.iter_mut().find(|(n, _)| n == name) {
            Some(pair) => pair.1 = value.into(),
            None => self.metadata.push((name.to_string(), value.into())),
        }
        self
    }
}
