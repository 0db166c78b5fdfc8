//! The response: a verdict per entry, patches, and added entries; written by the plugin, read and
//! checked by the host.

use super::{
    ArenaWriter, FormatError, PAIR, Pair, Pairs, SPAN, VERSION, arena_str, check_pairs, i64_at,
    is_valid_label_name, malformed, put_u32, range_at, span_str, to_u32, u32_at,
};

const MAGIC: &[u8; 4] = b"SLCR";
const HEADER: usize = 32;
const PATCH: usize = 40;
/// `entry` of an added entry.
const ADDED: u32 = u32::MAX;

/// What happens to an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Keep = 0,
    Drop = 1,
    Patched = 2,
}

/// Bits of a patch's `fields`.
pub mod fields {
    pub const LINE: u32 = 1;
    pub const LABELS: u32 = 2;
    pub const METADATA: u32 = 4;
    pub const TIMESTAMP: u32 = 8;
    pub const ALL: u32 = LINE | LABELS | METADATA | TIMESTAMP;
}

/// Changes to one entry; `None` leaves a field as it was.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Patch<'a> {
    pub timestamp_ns: Option<i64>,
    pub line: Option<&'a str>,
    /// The complete new label set; the entry moves to that stream.
    pub labels: Option<&'a [Pair<'a>]>,
    /// The complete new structured metadata.
    pub metadata: Option<&'a [Pair<'a>]>,
}

/// Builds a response for a request of `entry_count` entries; every entry starts as kept.
#[derive(Debug)]
pub struct ResponseWriter {
    verdicts: Vec<u8>,
    patches: Vec<u8>,
    patch_count: u32,
    last_patched: Option<u32>,
    added: Vec<u8>,
    added_count: u32,
    pairs: Vec<u8>,
    pair_count: u32,
    arena: ArenaWriter,
    /// Ranges of the last label sets written, newest last: a patch whose set equals one of them
    /// points at it instead of writing the pairs again (see `FORMAT.md`, shared ranges).
    recent_labels: Vec<(u32, u32)>,
}

/// How many recent label sets [`ResponseWriter`] looks for a patch's set among. Entries of one
/// stream move to a few sets (one per `level`, say), so a few cover them.
const RECENT_LABEL_SETS: usize = 8;

impl ResponseWriter {
    pub fn new(entry_count: usize) -> Self {
        Self {
            verdicts: vec![Verdict::Keep as u8; entry_count],
            patches: Vec::new(),
            patch_count: 0,
            last_patched: None,
            added: Vec::new(),
            added_count: 0,
            pairs: Vec::new(),
            pair_count: 0,
            arena: ArenaWriter::default(),
            recent_labels: Vec::with_capacity(RECENT_LABEL_SETS),
        }
    }

    /// Empties the writer for a request of `entry_count` entries, keeping the buffers' capacity.
    pub fn reset(&mut self, entry_count: usize) {
        self.verdicts.clear();
        self.verdicts.resize(entry_count, Verdict::Keep as u8);
        self.patches.clear();
        self.patch_count = 0;
        self.last_patched = None;
        self.added.clear();
        self.added_count = 0;
        self.pairs.clear();
        self.pair_count = 0;
        self.arena.clear();
        self.recent_labels.clear();
    }

    /// Drops entry `i`.
    pub fn drop_entry(&mut self, i: usize) {
        if let Some(v) = self.verdicts.get_mut(i) {
            *v = Verdict::Drop as u8;
        }
    }

    /// Undoes [`ResponseWriter::drop_entry`]: entry `i` is kept (a patched entry stays patched).
    pub fn keep_entry(&mut self, i: usize) {
        if let Some(v) = self.verdicts.get_mut(i).filter(|v| **v == Verdict::Drop as u8) {
            *v = Verdict::Keep as u8;
        }
    }

    /// The verdict written so far for entry `i` (`Keep` past the end).
    pub fn verdict(&self, i: usize) -> Verdict {
        match self.verdicts.get(i) {
            Some(1) => Verdict::Drop,
            Some(2) => Verdict::Patched,
            _ => Verdict::Keep,
        }
    }

    /// How many entries the response is for.
    pub fn entry_count(&self) -> usize {
        self.verdicts.len()
    }

    /// Patches entry `i`. Entries must be patched in increasing order, each at most once; an
    /// out-of-order or repeated call is refused (the plugin's bug, reported, not a corrupt buffer).
    pub fn patch(&mut self, i: usize, patch: &Patch<'_>) -> Result<(), FormatError> {
        let i = u32::try_from(i).or_else(|_| malformed("entry index too large"))?;
        if (i as usize) >= self.verdicts.len() {
            return malformed(format!("patch for entry {i} of {}", self.verdicts.len()));
        }
        if self.last_patched.is_some_and(|last| i <= last) {
            return malformed(format!(
                "entries must be patched in increasing order, {i} after {:?}",
                self.last_patched
            ));
        }
        self.last_patched = Some(i);
        self.verdicts[i as usize] = Verdict::Patched as u8;
        let mut rec = std::mem::take(&mut self.patches);
        self.write_record(&mut rec, i, patch);
        self.patches = rec;
        self.patch_count += 1;
        Ok(())
    }

    /// Adds a new entry after the batch's own. It needs a line, labels and a timestamp.
    pub fn add(&mut self, timestamp_ns: i64, line: &str, labels: &[Pair<'_>], metadata: &[Pair<'_>]) {
        let patch = Patch {
            timestamp_ns: Some(timestamp_ns),
            line: Some(line),
            labels: Some(labels),
            metadata: Some(metadata),
        };
        let mut rec = std::mem::take(&mut self.added);
        self.write_record(&mut rec, ADDED, &patch);
        self.added = rec;
        self.added_count += 1;
    }

    fn write_record(&mut self, out: &mut Vec<u8>, entry: u32, p: &Patch<'_>) {
        let mut flags = 0;
        flags |= if p.line.is_some() { fields::LINE } else { 0 };
        flags |= if p.labels.is_some() { fields::LABELS } else { 0 };
        flags |= if p.metadata.is_some() { fields::METADATA } else { 0 };
        flags |= if p.timestamp_ns.is_some() { fields::TIMESTAMP } else { 0 };
        put_u32(out, entry);
        put_u32(out, flags);
        out.extend_from_slice(&p.timestamp_ns.unwrap_or(0).to_le_bytes());
        match p.line {
            Some(line) => self.arena.push(line, out),
            None => out.extend_from_slice(&[0; SPAN]),
        }
        let labels = p.labels.map(|set| self.label_range(set));
        let metadata = p.metadata.map(|set| self.push_pairs(set));
        for range in [labels, metadata] {
            let (start, len) = range.unwrap_or((0, 0));
            put_u32(out, start);
            put_u32(out, len);
        }
    }

    /// Writes `set` into the pair table; its range.
    fn push_pairs(&mut self, set: &[Pair<'_>]) -> (u32, u32) {
        let start = self.pair_count;
        for (name, value) in set {
            self.arena.push(name, &mut self.pairs);
            self.arena.push(value, &mut self.pairs);
            self.pair_count += 1;
        }
        (start, self.pair_count - start)
    }

    /// The range of a label set: a recently written equal one, or `set` written anew.
    fn label_range(&mut self, set: &[Pair<'_>]) -> (u32, u32) {
        if let Some(&range) = self.recent_labels.iter().rev().find(|&&range| self.written_equals(range, set))
        {
            return range;
        }
        let range = self.push_pairs(set);
        if self.recent_labels.len() == RECENT_LABEL_SETS {
            self.recent_labels.remove(0);
        }
        self.recent_labels.push(range);
        range
    }

    /// Whether the pairs written at `(start, len)` are `set`, in the same order.
    fn written_equals(&self, (start, len): (u32, u32), set: &[Pair<'_>]) -> bool {
        let string = |rec: &[u8], at: usize| {
            let (off, len) = (u32_at(rec, at) as usize, u32_at(rec, at + 4) as usize);
            &self.arena.bytes[off..off + len]
        };
        len as usize == set.len()
            && set.iter().enumerate().all(|(k, (name, value))| {
                let rec = &self.pairs[(start as usize + k) * PAIR..][..PAIR];
                string(rec, 0) == name.as_bytes() && string(rec, SPAN) == value.as_bytes()
            })
    }

    /// The response bytes.
    pub fn finish(self) -> Result<Vec<u8>, FormatError> {
        let mut out = Vec::new();
        self.finish_into(&mut out)?;
        Ok(out)
    }

    /// Writes the response bytes into `out` (cleared first, sized exactly once); the writer stays
    /// usable after a [`ResponseWriter::reset`].
    pub fn finish_into(&self, out: &mut Vec<u8>) -> Result<(), FormatError> {
        let padded = self.verdicts.len().div_ceil(4) * 4;
        let arena_len = to_u32(self.arena.bytes.len(), "arena")?;
        out.clear();
        out.reserve_exact(
            HEADER
                + padded
                + self.patches.len()
                + self.added.len()
                + self.pairs.len()
                + self.arena.bytes.len(),
        );
        let out = &mut *out;
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        put_u32(out, to_u32(self.verdicts.len(), "entries")?);
        put_u32(out, self.patch_count);
        put_u32(out, self.added_count);
        put_u32(out, self.pair_count);
        put_u32(out, arena_len);
        put_u32(out, 0);
        out.extend_from_slice(&self.verdicts);
        out.resize(HEADER + padded, 0);
        out.extend_from_slice(&self.patches);
        out.extend_from_slice(&self.added);
        out.extend_from_slice(&self.pairs);
        out.extend_from_slice(&self.arena.bytes);
        Ok(())
    }
}

/// The label ranges checked last. Patches that share a set (see `FORMAT.md`) get it checked
/// once; as many as the SDK shares suffice, and the bound keeps a hostile
/// response from making the lookup costly.
#[derive(Default)]
struct CheckedSets {
    ranges: [std::ops::Range<u32>; RECENT_LABEL_SETS],
    next: usize,
}

impl CheckedSets {
    /// Whether `range` has not been checked yet; remembers it.
    fn first_time(&mut self, range: &std::ops::Range<u32>) -> bool {
        if !range.is_empty() && self.ranges.contains(range) {
            return false;
        }
        self.ranges[self.next] = range.clone();
        self.next = (self.next + 1) % self.ranges.len();
        true
    }
}

/// A parsed, fully checked response.
#[derive(Debug, Clone)]
pub struct Response<'a> {
    verdicts: &'a [u8],
    patches: &'a [u8],
    added: &'a [u8],
    pairs: &'a [u8],
    arena: &'a str,
    pair_count: u32,
}

/// One patch or added entry of a response.
#[derive(Debug, Clone)]
pub struct PatchRef<'a> {
    /// The entry patched; `None` for an added entry.
    pub entry: Option<usize>,
    pub timestamp_ns: Option<i64>,
    pub line: Option<&'a str>,
    pub labels: Option<Pairs<'a>>,
    pub metadata: Option<Pairs<'a>>,
}

impl<'a> Response<'a> {
    /// Parses a plugin's response to a request of `entry_count` entries, checking everything
    /// `FORMAT.md` lists: a response from untrusted code is either entirely valid or refused.
    pub fn parse(buf: &'a [u8], entry_count: usize) -> Result<Self, FormatError> {
        if buf.len() < HEADER || &buf[..4] != MAGIC {
            return malformed("not a response (magic `SLCR` missing)");
        }
        let version = u16::from_le_bytes([buf[4], buf[5]]);
        if version != VERSION {
            return malformed(format!("response version {version}, the host reads {VERSION}"));
        }
        if buf[6..8] != [0, 0] || u32_at(buf, 28) != 0 {
            return malformed("reserved header fields are not zero");
        }
        let count = u32_at(buf, 8);
        if count as usize != entry_count {
            return malformed(format!("response has {count} verdicts for {entry_count} entries"));
        }
        let (patch_count, added_count, pair_count, arena_len) =
            (u32_at(buf, 12), u32_at(buf, 16), u32_at(buf, 20), u32_at(buf, 24));
        let padded = u32::try_from(entry_count.div_ceil(4) * 4).or_else(|_| malformed("too many entries"))?;
        let layout = super::Layout::new(
            buf.len(),
            HEADER,
            &[(1, padded), (PATCH, patch_count), (PATCH, added_count), (PAIR, pair_count)],
            arena_len,
        )?;
        let arena = arena_str(buf, layout.arena.clone())?;
        let [verdict_bytes, patches, added, pairs] = [0, 1, 2, 3].map(|i| &buf[layout.tables[i].clone()]);
        let (verdicts, padding) = verdict_bytes.split_at(entry_count);
        if padding.iter().any(|&b| b != 0) {
            return malformed("verdict padding is not zero");
        }
        check_pairs(pairs, arena)?;
        let r = Self { verdicts, patches, added, pairs, arena, pair_count };

        let mut patched = 0usize;
        for (i, &v) in verdicts.iter().enumerate() {
            match v {
                0 | 1 => {}
                2 => patched += 1,
                v => return malformed(format!("entry {i} has verdict {v} (0 keep, 1 drop, 2 patched)")),
            }
        }
        if patched != patch_count as usize {
            return malformed(format!(
                "{patched} entries are marked patched but there are {patch_count} patches"
            ));
        }
        let mut checked = CheckedSets::default();
        let mut previous: Option<usize> = None;
        for rec in patches.chunks_exact(PATCH) {
            let i = u32_at(rec, 0) as usize;
            if previous.is_some_and(|p| i <= p) {
                return malformed(format!(
                    "patches are not sorted by entry, or repeated: {i} after {previous:?}"
                ));
            }
            if verdicts.get(i) != Some(&(Verdict::Patched as u8)) {
                return malformed(format!("patch for entry {i}, whose verdict is not `patched`"));
            }
            previous = Some(i);
            r.check_record(rec, 0, &mut checked)?;
        }
        for rec in added.chunks_exact(PATCH) {
            if u32_at(rec, 0) != ADDED {
                return malformed("an added entry's index must be 0xFFFFFFFF");
            }
            r.check_record(rec, fields::LINE | fields::LABELS | fields::TIMESTAMP, &mut checked)?;
        }
        Ok(r)
    }

    fn check_record(&self, rec: &[u8], required: u32, checked: &mut CheckedSets) -> Result<(), FormatError> {
        let flags = u32_at(rec, 4);
        if flags & !fields::ALL != 0 {
            return malformed(format!("unknown field flags {flags:#x}"));
        }
        if flags & required != required {
            return malformed(format!(
                "an added entry needs a line, labels and a timestamp (flags {flags:#x})"
            ));
        }
        let unset_zero =
            |bit: u32, range: std::ops::Range<usize>| flags & bit != 0 || rec[range].iter().all(|&b| b == 0);
        if !(unset_zero(fields::TIMESTAMP, 8..16)
            && unset_zero(fields::LINE, 16..24)
            && unset_zero(fields::LABELS, 24..32)
            && unset_zero(fields::METADATA, 32..40))
        {
            return malformed("a field that is not set is not zero");
        }
        if flags & fields::LINE != 0 {
            span_str(self.arena, rec, 16)?;
        }
        range_at(rec, 32, self.pair_count, "metadata")?;
        let labels = range_at(rec, 24, self.pair_count, "labels")?;
        if flags & fields::LABELS != 0 && checked.first_time(&labels) {
            let mut names: Vec<&str> = self.pairs(labels).map(|(n, _)| n).collect();
            if let Some(bad) = names.iter().find(|n| !is_valid_label_name(n)) {
                return malformed(format!("invalid label name `{}`", bad.escape_default()));
            }
            names.sort_unstable();
            if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
                return malformed(format!("label `{}` appears twice", w[0]));
            }
            if names.is_empty() {
                return malformed("a label set must not be empty");
            }
        }
        Ok(())
    }

    /// The verdict of entry `i` (`Keep` past the end).
    pub fn verdict(&self, i: usize) -> Verdict {
        match self.verdicts.get(i) {
            Some(1) => Verdict::Drop,
            Some(2) => Verdict::Patched,
            _ => Verdict::Keep,
        }
    }

    /// The patches, in entry order.
    pub fn patches(&self) -> impl Iterator<Item = PatchRef<'a>> + '_ {
        self.patches.chunks_exact(PATCH).map(|rec| self.record(rec))
    }

    /// The added entries, in order.
    pub fn added(&self) -> impl Iterator<Item = PatchRef<'a>> + '_ {
        self.added.chunks_exact(PATCH).map(|rec| self.record(rec))
    }

    fn record(&self, rec: &'a [u8]) -> PatchRef<'a> {
        let flags = u32_at(rec, 4);
        let entry = u32_at(rec, 0);
        let set = |bit: u32| flags & bit != 0;
        let pairs = |at| self.pairs(range_at(rec, at, self.pair_count, "").unwrap_or(0..0));
        PatchRef {
            entry: (entry != ADDED).then_some(entry as usize),
            timestamp_ns: set(fields::TIMESTAMP).then(|| i64_at(rec, 8)),
            line: set(fields::LINE).then(|| span_str(self.arena, rec, 16).unwrap_or_default()),
            labels: set(fields::LABELS).then(|| pairs(24)),
            metadata: set(fields::METADATA).then(|| pairs(32)),
        }
    }

    fn pairs(&self, range: std::ops::Range<u32>) -> Pairs<'a> {
        Pairs { pairs: self.pairs, arena: self.arena, range }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut w = ResponseWriter::new(5);
        w.drop_entry(1);
        w.patch(2, &Patch { line: Some("redacted"), ..Patch::default() }).expect("in order");
        let labels = [("app", "api"), ("level", "warn")];
        w.patch(
            4,
            &Patch {
                labels: Some(&labels),
                metadata: Some(&[("trace_id", "t")]),
                timestamp_ns: Some(-5),
                line: None,
            },
        )
        .expect("in order");
        w.add(99, "summary: 3 dropped", &[("app", "api")], &[]);
        w.finish().expect("fits")
    }

    #[test]
    fn round_trips_verdicts_patches_and_added_entries() {
        let buf = sample();
        let r = Response::parse(&buf, 5).expect("valid");
        let verdicts: Vec<_> = (0..5).map(|i| r.verdict(i)).collect();
        use Verdict::*;
        assert_eq!(verdicts, [Keep, Drop, Patched, Keep, Patched]);
        let p: Vec<_> = r.patches().collect();
        assert_eq!((p[0].entry, p[0].line, p[0].timestamp_ns), (Some(2), Some("redacted"), None));
        assert!(p[0].labels.is_none() && p[0].metadata.is_none());
        assert_eq!(p[1].entry, Some(4));
        assert_eq!(p[1].timestamp_ns, Some(-5));
        assert_eq!(
            p[1].labels.clone().expect("set").collect::<Vec<_>>(),
            [("app", "api"), ("level", "warn")]
        );
        assert_eq!(p[1].metadata.clone().expect("set").collect::<Vec<_>>(), [("trace_id", "t")]);
        let a: Vec<_> = r.added().collect();
        assert_eq!((a[0].entry, a[0].line, a[0].timestamp_ns), (None, Some("summary: 3 dropped"), Some(99)));
    }

    #[test]
    fn writer_is_reusable_and_verdicts_can_be_undone() {
        let mut w = ResponseWriter::new(2);
        w.drop_entry(0);
        w.patch(1, &Patch { line: Some("x"), ..Patch::default() }).expect("in order");
        let mut out = Vec::new();
        w.finish_into(&mut out).expect("fits");
        assert_eq!(out, sample_two_dropped_patched());
        w.reset(3);
        w.drop_entry(2);
        assert_eq!(w.verdict(2), Verdict::Drop);
        w.keep_entry(2);
        w.drop_entry(1);
        w.patch(0, &Patch { line: Some("y"), ..Patch::default() }).expect("fresh order after reset");
        w.keep_entry(0);
        assert_eq!(
            (w.verdict(0), w.verdict(1), w.verdict(2)),
            (Verdict::Patched, Verdict::Drop, Verdict::Keep)
        );
        w.finish_into(&mut out).expect("fits");
        let r = Response::parse(&out, 3).expect("valid");
        assert_eq!(r.patches().map(|p| p.line).collect::<Vec<_>>(), [Some("y")]);
        assert_eq!(r.verdict(1), Verdict::Drop);
    }

    fn sample_two_dropped_patched() -> Vec<u8> {
        let mut w = ResponseWriter::new(2);
        w.drop_entry(0);
        w.patch(1, &Patch { line: Some("x"), ..Patch::default() }).expect("in order");
        w.finish().expect("fits")
    }

    #[test]
    fn writer_refuses_out_of_order_patches() {
        let mut w = ResponseWriter::new(3);
        w.patch(1, &Patch::default()).expect("first");
        assert!(w.patch(1, &Patch::default()).is_err(), "repeated");
        assert!(w.patch(0, &Patch::default()).is_err(), "backwards");
        assert!(w.patch(3, &Patch::default()).is_err(), "out of range");
    }

    #[test]
    fn host_refuses_inconsistent_responses() {
        let good = sample();
        assert!(Response::parse(&good, 4).expect_err("wrong count").0.contains("verdicts for 4 entries"));
        type Corruption = Box<dyn Fn(&mut Vec<u8>)>;
        let cases: Vec<(&str, Corruption)> = vec![
            ("verdict 3", Box::new(|b| b[HEADER] = 3)),
            ("patched without patch", Box::new(|b| b[HEADER + 3] = 2)),
            ("patch whose verdict is not patched", Box::new(|b| b[HEADER + 2] = 0)),
            ("unknown flag", Box::new(|b| b[HEADER + 8 + 4] |= 0x10)),
            ("nonzero padding", Box::new(|b| b[HEADER + 7] = 1)),
            ("line span outside arena", Box::new(|b| b[HEADER + 8 + 20] = 0xff)),
            ("reserved", Box::new(|b| b[6] = 1)),
            ("trailing byte", Box::new(|b| b.push(0))),
        ];
        for (name, corrupt) in cases {
            let mut b = good.clone();
            corrupt(&mut b);
            assert!(Response::parse(&b, 5).is_err(), "{name} accepted");
        }
    }

    #[test]
    fn host_refuses_invalid_label_sets() {
        for labels in [&[("1bad", "x")][..], &[("a", "1"), ("a", "2")], &[]] {
            let mut w = ResponseWriter::new(1);
            w.patch(0, &Patch { labels: Some(labels), ..Patch::default() }).expect("in order");
            let buf = w.finish().expect("fits");
            assert!(Response::parse(&buf, 1).is_err(), "{labels:?} accepted");
        }
    }

    #[test]
    fn equal_label_sets_of_recent_patches_share_one_range() {
        let (info, warn) = ([("app", "a"), ("level", "info")], [("app", "a"), ("level", "warn")]);
        let mut w = ResponseWriter::new(12);
        for (i, set) in [info, warn, info, warn].iter().enumerate() {
            w.patch(i, &Patch { labels: Some(set), ..Patch::default() }).expect("in order");
        }
        // Eight other sets push `info` out of the recent ones: it is written again.
        let others: Vec<String> = (0..8).map(|k| format!("v{k}")).collect();
        for (k, v) in others.iter().enumerate() {
            w.patch(4 + k, &Patch { labels: Some(&[("app", v)]), ..Patch::default() }).expect("in order");
        }
        w.add(1, "added", &info, &[]);
        let buf = w.finish().expect("fits");
        let r = Response::parse(&buf, 12).expect("valid");
        let ranges: Vec<_> = r.patches().chain(r.added()).map(|p| p.labels.expect("set").range()).collect();
        assert_eq!(ranges[0], ranges[2], "info twice: one range");
        assert_eq!(ranges[1], ranges[3], "warn twice: one range");
        assert_ne!(ranges[0], ranges[1]);
        assert_ne!(ranges[12], ranges[0], "info again after eight other sets: written anew");
        let sets: Vec<Vec<_>> =
            r.patches().chain(r.added()).map(|p| p.labels.expect("set").collect()).collect();
        assert_eq!(
            (sets[2].as_slice(), sets[3].as_slice(), sets[12].as_slice()),
            (&info[..], &warn[..], &info[..])
        );
        // 2 pairs each for info, warn and info again, 1 for each other set.
        assert_eq!(u32_at(&buf, 20), 2 + 2 + 8 + 2);
    }

    #[test]
    fn a_shared_invalid_label_set_is_refused_whatever_patch_points_at_it() {
        let mut w = ResponseWriter::new(3);
        for i in 0..3 {
            w.patch(i, &Patch { labels: Some(&[("a", "1"), ("a", "2")]), ..Patch::default() })
                .expect("in order");
        }
        let buf = w.finish().expect("fits");
        assert_eq!(u32_at(&buf, 20), 2, "one shared set");
        assert!(Response::parse(&buf, 3).expect_err("duplicate name").0.contains("appears twice"));
    }

    #[test]
    fn every_single_byte_corruption_is_refused_or_consistent() {
        let good = sample();
        for i in 0..good.len() {
            for v in [0u8, 1, 2, 0x80, 0xff] {
                let mut b = good.clone();
                b[i] = v;
                if let Ok(r) = Response::parse(&b, 5) {
                    for p in r.patches().chain(r.added()) {
                        let _ = (p.labels.map(Iterator::count), p.metadata.map(Iterator::count));
                    }
                }
            }
        }
    }
}
