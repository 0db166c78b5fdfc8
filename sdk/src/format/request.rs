//! The request: a batch of streams and entries, written by the host, read by the plugin.

use std::ops::Range;

use super::{
    ArenaWriter, FormatError, PAIR, Pair, Pairs, SPAN, VERSION, arena_str, check_pairs, i64_at, malformed,
    put_u32, range_at, span_str, to_u32, u32_at,
};

const MAGIC: &[u8; 4] = b"SLCB";
const HEADER: usize = 32;
const STREAM: usize = 16;
const ENTRY: usize = 24;

/// Builds a request. Reusable: [`RequestWriter::reset`] keeps the buffers' capacity.
#[derive(Debug, Default)]
pub struct RequestWriter {
    tenant: String,
    /// `(labels start, labels len, entries start)` per stream; entry counts follow from the next.
    streams: Vec<(u32, u32, u32)>,
    entries: Vec<u8>,
    entry_count: u32,
    pairs: Vec<u8>,
    pair_count: u32,
    arena: ArenaWriter,
}

impl RequestWriter {
    pub fn new(tenant: &str) -> Self {
        Self { tenant: tenant.to_string(), ..Self::default() }
    }

    /// Empties the writer for a new batch of `tenant`.
    pub fn reset(&mut self, tenant: &str) {
        self.tenant.clear();
        self.tenant.push_str(tenant);
        self.streams.clear();
        self.entries.clear();
        self.entry_count = 0;
        self.pairs.clear();
        self.pair_count = 0;
        self.arena.clear();
    }

    /// Starts a stream; the entries written next belong to it. `labels` must be sorted by name.
    pub fn stream<'a>(&mut self, labels: impl IntoIterator<Item = Pair<'a>>) {
        let start = self.pair_count;
        self.push_pairs(labels);
        self.streams.push((start, self.pair_count - start, self.entry_count));
    }

    /// Adds an entry to the current stream.
    pub fn entry<'a>(&mut self, timestamp_ns: i64, line: &str, metadata: impl IntoIterator<Item = Pair<'a>>) {
        let start = self.pair_count;
        self.push_pairs(metadata);
        self.entries.extend_from_slice(&timestamp_ns.to_le_bytes());
        self.arena.push(line, &mut self.entries);
        put_u32(&mut self.entries, start);
        put_u32(&mut self.entries, self.pair_count - start);
        self.entry_count += 1;
    }

    fn push_pairs<'a>(&mut self, pairs: impl IntoIterator<Item = Pair<'a>>) {
        for (name, value) in pairs {
            self.arena.push(name, &mut self.pairs);
            self.arena.push(value, &mut self.pairs);
            self.pair_count += 1;
        }
    }

    /// Writes the request into `out` (cleared first). Fails only for batches beyond 4 GiB.
    pub fn finish_into(&mut self, out: &mut Vec<u8>) -> Result<(), FormatError> {
        out.clear();
        let tenant_off = to_u32(self.arena.bytes.len(), "arena")?;
        self.arena.bytes.extend_from_slice(self.tenant.as_bytes());
        let arena_len = to_u32(self.arena.bytes.len(), "arena")?;
        out.reserve(
            HEADER + self.streams.len() * STREAM + self.entries.len() + self.pairs.len() + arena_len as usize,
        );
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        put_u32(out, tenant_off);
        put_u32(out, to_u32(self.tenant.len(), "tenant")?);
        put_u32(out, to_u32(self.streams.len(), "streams")?);
        put_u32(out, self.entry_count);
        put_u32(out, self.pair_count);
        put_u32(out, arena_len);
        for (i, &(labels_start, labels_len, entries_start)) in self.streams.iter().enumerate() {
            let entries_end = self.streams.get(i + 1).map_or(self.entry_count, |s| s.2);
            for v in [labels_start, labels_len, entries_start, entries_end - entries_start] {
                put_u32(out, v);
            }
        }
        out.extend_from_slice(&self.entries);
        out.extend_from_slice(&self.pairs);
        out.extend_from_slice(&self.arena.bytes);
        self.arena.bytes.truncate(tenant_off as usize);
        Ok(())
    }
}

/// A parsed request: borrowed views into the buffer, checked once on parsing.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    tenant: &'a str,
    streams: &'a [u8],
    entries: &'a [u8],
    pairs: &'a [u8],
    arena: &'a str,
    pair_count: u32,
}

impl<'a> Request<'a> {
    /// Parses and checks a request buffer.
    pub fn parse(buf: &'a [u8]) -> Result<Self, FormatError> {
        if buf.len() < HEADER || &buf[..4] != MAGIC {
            return malformed("not a request (magic `SLCB` missing)");
        }
        let version = u16::from_le_bytes([buf[4], buf[5]]);
        if version != VERSION {
            return malformed(format!("request version {version}, this side reads {VERSION}"));
        }
        let (stream_count, entry_count, pair_count, arena_len) =
            (u32_at(buf, 16), u32_at(buf, 20), u32_at(buf, 24), u32_at(buf, 28));
        let layout = super::Layout::new(
            buf.len(),
            HEADER,
            &[(STREAM, stream_count), (ENTRY, entry_count), (PAIR, pair_count)],
            arena_len,
        )?;
        let arena = arena_str(buf, layout.arena.clone())?;
        let tenant = span_str(arena, buf, 8)?;
        let [streams, entries, pairs] = [0, 1, 2].map(|i| &buf[layout.tables[i].clone()]);
        check_pairs(pairs, arena)?;
        let mut next_entry = 0;
        for rec in streams.chunks_exact(STREAM) {
            range_at(rec, 0, pair_count, "stream labels")?;
            let entries_range = range_at(rec, SPAN, entry_count, "stream entries")?;
            if entries_range.start != next_entry {
                return malformed("streams' entries are not contiguous and in order");
            }
            next_entry = entries_range.end;
        }
        if next_entry != entry_count {
            return malformed(format!("streams cover {next_entry} of {entry_count} entries"));
        }
        for rec in entries.chunks_exact(ENTRY) {
            span_str(arena, rec, 8)?;
            range_at(rec, 16, pair_count, "entry metadata")?;
        }
        Ok(Self { tenant, streams, entries, pairs, arena, pair_count })
    }

    /// The tenant the batch belongs to.
    pub fn tenant(&self) -> &'a str {
        self.tenant
    }

    pub fn stream_count(&self) -> usize {
        self.streams.len() / STREAM
    }

    pub fn entry_count(&self) -> usize {
        self.entries.len() / ENTRY
    }

    /// Stream `i`; panics if out of range, like slice indexing.
    pub fn stream(&self, i: usize) -> StreamRef<'a> {
        let rec = &self.streams[i * STREAM..(i + 1) * STREAM];
        let labels = range_at(rec, 0, self.pair_count, "").unwrap_or(0..0);
        let entries = range_at(rec, SPAN, u32::MAX, "").unwrap_or(0..0);
        StreamRef { labels: self.pairs(labels), entries: entries.start as usize..entries.end as usize }
    }

    /// Entry `i` (over the whole batch); panics if out of range, like slice indexing.
    pub fn entry(&self, i: usize) -> EntryRef<'a> {
        let rec = &self.entries[i * ENTRY..(i + 1) * ENTRY];
        EntryRef {
            timestamp_ns: i64_at(rec, 0),
            line: span_str(self.arena, rec, 8).unwrap_or_default(),
            metadata: self.pairs(range_at(rec, 16, self.pair_count, "").unwrap_or(0..0)),
        }
    }

    /// The streams in order.
    pub fn streams(&self) -> impl ExactSizeIterator<Item = StreamRef<'a>> + '_ {
        (0..self.stream_count()).map(|i| self.stream(i))
    }

    fn pairs(&self, range: Range<u32>) -> Pairs<'a> {
        Pairs { pairs: self.pairs, arena: self.arena, range }
    }
}

/// A stream of a request.
#[derive(Debug, Clone)]
pub struct StreamRef<'a> {
    /// The labels, sorted by name.
    pub labels: Pairs<'a>,
    /// Indices of its entries.
    pub entries: Range<usize>,
}

/// An entry of a request.
#[derive(Debug, Clone)]
pub struct EntryRef<'a> {
    pub timestamp_ns: i64,
    pub line: &'a str,
    pub metadata: Pairs<'a>,
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Vec<u8> {
        let mut w = RequestWriter::new("team-a");
        w.stream([("app", "api"), ("env", "prod")]);
        w.entry(1, "first line", [("trace_id", "t1")]);
        w.entry(2, "second", []);
        w.stream([("app", "db")]);
        w.entry(3, "héllo wörld", [("k", "v"), ("k2", "")]);
        let mut out = Vec::new();
        w.finish_into(&mut out).expect("fits");
        out
    }

    #[test]
    fn round_trips_streams_entries_and_metadata() {
        let buf = sample();
        let r = Request::parse(&buf).expect("valid");
        assert_eq!(r.tenant(), "team-a");
        assert_eq!((r.stream_count(), r.entry_count()), (2, 3));
        let s0 = r.stream(0);
        assert_eq!(s0.labels.clone().collect::<Vec<_>>(), [("app", "api"), ("env", "prod")]);
        assert_eq!(s0.entries, 0..2);
        assert_eq!(r.stream(1).entries, 2..3);
        let e = r.entry(0);
        assert_eq!((e.timestamp_ns, e.line), (1, "first line"));
        assert_eq!(e.metadata.collect::<Vec<_>>(), [("trace_id", "t1")]);
        assert_eq!(r.entry(1).metadata.len(), 0);
        let e = r.entry(2);
        assert_eq!((e.line, e.metadata.collect::<Vec<_>>()), ("héllo wörld", vec![("k", "v"), ("k2", "")]));
    }

    #[test]
    fn writer_is_reusable() {
        let mut w = RequestWriter::new("a");
        w.stream([("x", "1")]);
        w.entry(1, "old", []);
        let mut out = Vec::new();
        w.finish_into(&mut out).expect("fits");
        w.reset("b");
        w.stream([("y", "2")]);
        w.entry(2, "new", []);
        w.finish_into(&mut out).expect("fits");
        let r = Request::parse(&out).expect("valid");
        assert_eq!((r.tenant(), r.entry_count(), r.entry(0).line), ("b", 1, "new"));
    }

    #[test]
    fn empty_batch_is_valid() {
        let mut out = Vec::new();
        RequestWriter::new("t").finish_into(&mut out).expect("fits");
        let r = Request::parse(&out).expect("valid");
        assert_eq!((r.stream_count(), r.entry_count()), (0, 0));
    }

    #[test]
    fn corrupt_buffers_are_refused_not_panicking() {
        let good = sample();
        assert!(Request::parse(&good[..good.len() - 1]).is_err(), "truncated");
        let mut bad = good.clone();
        bad[0] = b'X';
        assert!(Request::parse(&bad).expect_err("corrupt").0.contains("magic"));
        let mut bad = good.clone();
        bad[4] = 9;
        assert!(Request::parse(&bad).expect_err("corrupt").0.contains("version"));
        // Every single-byte corruption either parses or is refused; none panics.
        for i in 0..good.len() {
            for v in [0u8, 0x7f, 0xff] {
                let mut b = good.clone();
                b[i] = v;
                let _ = Request::parse(&b).map(|r| {
                    for s in r.streams() {
                        let _ = s.labels.count();
                        for e in s.entries {
                            let _ = r.entry(e).metadata.count();
                        }
                    }
                });
            }
        }
    }
}
