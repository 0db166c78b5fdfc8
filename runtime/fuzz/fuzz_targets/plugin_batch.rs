//! The plugin batch format (`sdk/FORMAT.md`), both sides. The first byte picks the mode:
//!
//! - `0` (low two bits): the guest side. `Request::parse` of the rest; when it parses, every
//!   stream, entry, label and metadata pair is walked, and the content written again with
//!   `RequestWriter` parses back to the same content.
//! - `1`: the host side. The rest is an untrusted plugin's response to a fixed batch (bits 2-3
//!   pick which); when `Response::parse` accepts it, `sluice::plugin::apply::apply` must do what
//!   an independent model of its documented semantics does, leave valid labels, and count
//!   right; the response written again with `ResponseWriter` parses back to the same content.
//! - `2`, `3`: both sides from fuzz-chosen content. A batch becomes a request that must parse
//!   back to it; a response written with `ResponseWriter` (verdicts, patches, added entries,
//!   now and then an invalid label set) must parse exactly when its label sets are valid, back
//!   to the same content, and apply as the model says.

#![no_main]

use std::sync::Arc;

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use sluice::model::{Batch, Entry, LabelSet, Stream};
use sluice::plugin::apply::{Applied, apply};
use sluice_fuzz::{entry, label_name, line, pairs, text, timestamp, valid_labels};
use sluice_sdk::format::Pairs;
use sluice_sdk::format::request::{Request, RequestWriter};
use sluice_sdk::format::response::{Patch, Response, ResponseWriter, Verdict};
use sluice_sdk::is_valid_label_name;

type Owned = (String, String);

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode & 3 {
        0 => guest_side(rest),
        1 => host_side(rest, fixed_batch((mode >> 2) & 3)),
        _ => {
            let _ = both_sides(rest);
        }
    }
});

/// A request's content, owned.
#[derive(Debug, Clone, PartialEq)]
struct RequestContent {
    tenant: String,
    streams: Vec<(Vec<Owned>, Vec<(i64, String, Vec<Owned>)>)>,
}

fn owned(pairs: Pairs<'_>) -> Vec<Owned> {
    let n = pairs.len();
    let v: Vec<Owned> = pairs.map(|(a, b)| (a.to_owned(), b.to_owned())).collect();
    assert_eq!(v.len(), n, "a pair range's length disagrees with its iteration");
    v
}

fn borrowed(pairs: &[Owned]) -> Vec<(&str, &str)> {
    pairs.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect()
}

/// Walks everything a plugin can reach in a parsed request.
fn read_request(r: &Request<'_>) -> RequestContent {
    let n = r.entry_count();
    let mut next = 0;
    let mut streams = Vec::new();
    for s in r.streams() {
        assert_eq!(s.entries.start, next, "streams' entries are not contiguous");
        assert!(s.entries.end <= n, "a stream's entries run past the batch");
        next = s.entries.end;
        let labels = owned(s.labels);
        let entries = s
            .entries
            .map(|i| {
                let e = r.entry(i);
                (e.timestamp_ns, e.line.to_owned(), owned(e.metadata))
            })
            .collect();
        streams.push((labels, entries));
    }
    assert_eq!(next, n, "the streams do not cover the entries");
    assert_eq!(streams.len(), r.stream_count());
    RequestContent { tenant: r.tenant().to_owned(), streams }
}

/// The request for `c`, written by a writer that wrote another batch before (`reset`).
fn write_request(c: &RequestContent) -> Vec<u8> {
    let mut w = RequestWriter::new("previous");
    w.stream([("stale", "labels")]);
    w.entry(1, "stale line", [("stale", "metadata")]);
    let mut out = Vec::new();
    w.finish_into(&mut out).expect("fits");
    w.reset(&c.tenant);
    for (labels, entries) in &c.streams {
        w.stream(borrowed(labels));
        for (ts, line, metadata) in entries {
            w.entry(*ts, line, borrowed(metadata));
        }
    }
    w.finish_into(&mut out).expect("fits");
    out
}

fn guest_side(buf: &[u8]) {
    let r = match Request::parse(buf) {
        Ok(r) => r,
        Err(e) => {
            sluice_fuzz::trace!("request refused: {e}");
            return;
        }
    };
    let content = read_request(&r);
    sluice_fuzz::trace!("request: {} streams, {} entries", content.streams.len(), r.entry_count());
    let written = write_request(&content);
    let again = Request::parse(&written).expect("a written request parses");
    assert_eq!(read_request(&again), content, "the request changed when written again");
    assert_eq!(write_request(&content), written, "writing is not deterministic");
}

/// A patch or an added entry, owned.
#[derive(Debug, Clone, PartialEq)]
struct PatchContent {
    entry: Option<usize>,
    timestamp_ns: Option<i64>,
    line: Option<String>,
    labels: Option<Vec<Owned>>,
    metadata: Option<Vec<Owned>>,
}

#[derive(Debug, Clone, PartialEq)]
struct ResponseContent {
    verdicts: Vec<Verdict>,
    patches: Vec<PatchContent>,
    added: Vec<PatchContent>,
}

/// A parsed response's content, checking what `Response::parse` promises.
fn read_response(r: &Response<'_>, n: usize) -> ResponseContent {
    let verdicts: Vec<Verdict> = (0..n).map(|i| r.verdict(i)).collect();
    assert_eq!(r.verdict(n), Verdict::Keep, "a verdict past the end");
    let read = |p: sluice_sdk::format::response::PatchRef<'_>| PatchContent {
        entry: p.entry,
        timestamp_ns: p.timestamp_ns,
        line: p.line.map(str::to_owned),
        labels: p.labels.map(owned),
        metadata: p.metadata.map(owned),
    };
    let patches: Vec<PatchContent> = r.patches().map(read).collect();
    let added: Vec<PatchContent> = r.added().map(read).collect();
    let patched: Vec<Option<usize>> =
        verdicts.iter().enumerate().filter(|(_, v)| **v == Verdict::Patched).map(|(i, _)| Some(i)).collect();
    let patch_entries: Vec<Option<usize>> = patches.iter().map(|p| p.entry).collect();
    assert_eq!(patch_entries, patched, "patches do not match the patched verdicts");
    for p in &added {
        assert!(p.entry.is_none() && p.timestamp_ns.is_some() && p.line.is_some(), "{p:?}");
        assert!(p.labels.is_some(), "an added entry without labels: {p:?}");
    }
    for labels in patches.iter().chain(&added).filter_map(|p| p.labels.as_ref()) {
        assert!(labels_valid(labels), "a checked response has invalid labels: {labels:?}");
    }
    ResponseContent { verdicts, patches, added }
}

/// Names valid and unique, at least one: what the host requires of a plugin's label set.
fn labels_valid(labels: &[Owned]) -> bool {
    let mut names: Vec<&str> = labels.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    !names.is_empty()
        && names.iter().all(|n| is_valid_label_name(n))
        && names.windows(2).all(|w| w[0] != w[1])
}

fn write_response(c: &ResponseContent) -> Vec<u8> {
    let mut w = ResponseWriter::new(c.verdicts.len());
    for (i, v) in c.verdicts.iter().enumerate() {
        if *v == Verdict::Drop {
            w.drop_entry(i);
        }
    }
    for p in &c.patches {
        let labels = p.labels.as_deref().map(borrowed);
        let metadata = p.metadata.as_deref().map(borrowed);
        let patch = Patch {
            timestamp_ns: p.timestamp_ns,
            line: p.line.as_deref(),
            labels: labels.as_deref(),
            metadata: metadata.as_deref(),
        };
        w.patch(p.entry.expect("a patch names its entry"), &patch).expect("patches in order");
    }
    for a in &c.added {
        let labels = borrowed(a.labels.as_deref().unwrap_or_default());
        let metadata = borrowed(a.metadata.as_deref().unwrap_or_default());
        w.add(a.timestamp_ns.unwrap_or_default(), a.line.as_deref().unwrap_or_default(), &labels, &metadata);
    }
    w.finish().expect("fits")
}

/// `ResponseWriter::add` always writes the metadata field; an added entry without it reads back
/// with empty metadata.
fn normalized(mut c: ResponseContent) -> ResponseContent {
    for a in &mut c.added {
        a.metadata.get_or_insert_with(Vec::new);
    }
    c
}

fn labels(p: &[(&str, &str)]) -> LabelSet {
    LabelSet::new(p.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect())
}

fn fixed_entry(ts: i64, line: &str, metadata: &[(&str, &str)]) -> Entry {
    let metadata = metadata.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
    Entry { timestamp_ns: ts, line: line.into(), metadata }
}

/// Batches as the pipeline hands them to a stage: 6 entries over streams that include a repeated
/// label set and an empty stream (what an earlier stage leaves), no entries, one entry, and 9.
fn fixed_batch(which: u8) -> Batch {
    let s = |l: &[(&str, &str)], entries: Vec<Entry>| Stream { labels: labels(l), entries };
    let streams = match which {
        0 => vec![
            s(
                &[("app", "a")],
                vec![
                    fixed_entry(1, "a1", &[("k", "v")]),
                    fixed_entry(2, "a2", &[]),
                    fixed_entry(3, "a3", &[]),
                ],
            ),
            s(&[("app", "b"), ("env", "prod")], vec![fixed_entry(4, "b1", &[]), fixed_entry(5, "b2", &[])]),
            s(&[("app", "c"), ("level", "warn")], vec![]),
            s(&[("app", "a")], vec![fixed_entry(6, "a4", &[("trace_id", "t")])]),
        ],
        1 => vec![],
        2 => vec![s(&[("service_name", "api")], vec![fixed_entry(-1, "only", &[])])],
        _ => (0..3)
            .map(|k| {
                let app = ["x", "y", "z"][k];
                let entries = (0..3).map(|j| fixed_entry(j, &format!("{app}{j}"), &[("n", app)])).collect();
                s(&[("app", app), ("job", "j")], entries)
            })
            .collect(),
    };
    Batch { tenant: Arc::from("tenant"), streams }
}

fn host_side(buf: &[u8], batch: Batch) {
    let n = batch.entry_count();
    let r = match Response::parse(buf, n) {
        Ok(r) => r,
        Err(e) => {
            sluice_fuzz::trace!("response refused: {e}");
            return;
        }
    };
    assert!(Response::parse(buf, n + 1).is_err(), "a response for {n} entries also parses for {}", n + 1);
    let content = read_response(&r, n);
    let written = write_response(&content);
    let again = Response::parse(&written, n).expect("a written response parses");
    assert_eq!(read_response(&again, n), normalized(content.clone()), "the response changed when written");
    check_apply(&batch, &r, &content);
}

/// `apply` against the model, then the invariants the pipeline relies on.
fn check_apply(batch: &Batch, r: &Response<'_>, content: &ResponseContent) {
    let mut applied = batch.clone();
    let stats = apply(&mut applied, r);
    let (expected, expected_stats) = model_apply(batch, content);
    sluice_fuzz::trace!("applied: {stats:?}");
    assert_eq!(applied, expected, "apply differs from the model");
    assert_eq!(stats, expected_stats, "apply's counts differ from the model");
    assert_eq!(applied.tenant, batch.tenant);
    for stream in &applied.streams {
        let pairs = stream.labels.pairs();
        assert!(
            labels_valid(pairs),
            "a stream with invalid labels after apply: {:?} (its batch's were valid)",
            stream.labels
        );
        assert_eq!(LabelSet::new(pairs.to_vec()).fingerprint(), stream.labels.fingerprint());
    }
}

/// What `apply` documents: dropped entries go, patched ones change, an entry whose labels change
/// moves to the first stream with those labels (appended if none), after its own entries and in
/// batch order, then the added entries likewise, in order.
fn model_apply(batch: &Batch, c: &ResponseContent) -> (Batch, Applied) {
    let mut stats = Applied { entries_in: batch.entry_count(), ..Applied::default() };
    let mut streams: Vec<Stream> =
        batch.streams.iter().map(|s| Stream { labels: s.labels.clone(), entries: Vec::new() }).collect();
    let mut patches = c.patches.iter();
    let mut moved = Vec::new();
    let mut i = 0;
    for (k, s) in batch.streams.iter().enumerate() {
        for e in &s.entries {
            match c.verdicts[i] {
                Verdict::Keep => streams[k].entries.push(e.clone()),
                Verdict::Drop => stats.dropped += 1,
                Verdict::Patched => {
                    stats.modified += 1;
                    let p = patches.next().expect("a patch for each patched entry");
                    let mut e = e.clone();
                    if let Some(ts) = p.timestamp_ns {
                        e.timestamp_ns = ts;
                    }
                    if let Some(line) = &p.line {
                        e.line = line.clone();
                    }
                    if let Some(metadata) = &p.metadata {
                        e.metadata = metadata.clone();
                    }
                    match p.labels.as_ref().map(|l| LabelSet::new(l.clone())) {
                        Some(new) if new != s.labels => moved.push((new, e)),
                        _ => streams[k].entries.push(e),
                    }
                }
            }
            i += 1;
        }
    }
    stats.moved = moved.len();
    let mut out = Batch { tenant: batch.tenant.clone(), streams };
    let mut push = |labels: LabelSet, e: Entry| {
        let k = out.streams.iter().position(|s| s.labels == labels).unwrap_or_else(|| {
            out.streams.push(Stream { labels, entries: Vec::new() });
            out.streams.len() - 1
        });
        out.streams[k].entries.push(e);
    };
    for (labels, e) in moved {
        push(labels, e);
    }
    for a in &c.added {
        stats.added += 1;
        let e = Entry {
            timestamp_ns: a.timestamp_ns.unwrap_or_default(),
            line: a.line.clone().unwrap_or_default(),
            metadata: a.metadata.clone().unwrap_or_default(),
        };
        push(LabelSet::new(a.labels.clone().unwrap_or_default()), e);
    }
    stats.entries_out = out.entry_count();
    (out, stats)
}

fn request_content(batch: &Batch) -> RequestContent {
    RequestContent {
        tenant: batch.tenant.to_string(),
        streams: batch
            .streams
            .iter()
            .map(|s| {
                let entries =
                    s.entries.iter().map(|e| (e.timestamp_ns, e.line.clone(), e.metadata.clone())).collect();
                (s.labels.pairs().to_vec(), entries)
            })
            .collect(),
    }
}

/// A label set a plugin might answer with: the stream's own in another order, another
/// stream's, a new one, or (rarely) an invalid one, which clears `valid`.
fn response_labels(
    u: &mut Unstructured<'_>,
    batch: &Batch,
    own: &LabelSet,
    valid: &mut bool,
) -> arbitrary::Result<Vec<Owned>> {
    Ok(match u.int_in_range(0u8..=15)? {
        0..=4 => {
            let mut pairs = own.pairs().to_vec();
            pairs.reverse();
            pairs
        }
        5..=8 if !batch.streams.is_empty() => u.choose(&batch.streams)?.labels.pairs().to_vec(),
        13 => {
            *valid = false;
            Vec::new()
        }
        14 => {
            let mut pairs = own.pairs().to_vec();
            let name = label_name(u)?;
            *valid &= is_valid_label_name(&name) && !pairs.iter().any(|(n, _)| *n == name);
            pairs.push((name, text(u, &["v"], 8)?));
            pairs
        }
        15 if !own.is_empty() => {
            *valid = false;
            let mut pairs = own.pairs().to_vec();
            pairs.push(pairs[0].clone());
            pairs
        }
        _ => valid_labels(u)?.pairs().to_vec(),
    })
}

fn both_sides(data: &[u8]) -> arbitrary::Result<()> {
    let mut u = Unstructured::new(data);
    let tenant = text(&mut u, &["tenant", "", "ténant"], 24)?;
    let mut streams = Vec::new();
    for _ in 0..u.int_in_range(0..=4)? {
        let labels = valid_labels(&mut u)?;
        let entries = (0..u.int_in_range(0..=4)?).map(|_| entry(&mut u)).collect::<arbitrary::Result<_>>()?;
        streams.push(Stream { labels, entries });
    }
    let batch = Batch { tenant: Arc::from(tenant.as_str()), streams };

    // The host writes the request; the plugin reads it back.
    let request = request_content(&batch);
    let buf = write_request(&request);
    let parsed = Request::parse(&buf).expect("a written request parses");
    assert_eq!(read_request(&parsed), request, "the request changed on the way");

    // The plugin answers; the host checks and applies.
    let n = batch.entry_count();
    let mut valid = true;
    let mut verdicts = Vec::with_capacity(n);
    let mut patches = Vec::new();
    let own_labels: Vec<&LabelSet> =
        batch.streams.iter().flat_map(|s| s.entries.iter().map(|_| &s.labels)).collect();
    for (i, own) in own_labels.iter().enumerate() {
        verdicts.push(match u.int_in_range(0u8..=3)? {
            0 | 1 => Verdict::Keep,
            2 => Verdict::Drop,
            _ => {
                let labels = if u.arbitrary()? {
                    Some(response_labels(&mut u, &batch, own, &mut valid)?)
                } else {
                    None
                };
                patches.push(PatchContent {
                    entry: Some(i),
                    timestamp_ns: if u.arbitrary()? { Some(timestamp(&mut u)?) } else { None },
                    line: if u.arbitrary()? { Some(line(&mut u)?) } else { None },
                    labels,
                    metadata: if u.arbitrary()? { Some(pairs(&mut u, 2)?) } else { None },
                });
                Verdict::Patched
            }
        });
    }
    let mut added = Vec::new();
    for _ in 0..u.int_in_range(0..=2)? {
        let own = valid_labels(&mut u)?;
        added.push(PatchContent {
            entry: None,
            timestamp_ns: Some(timestamp(&mut u)?),
            line: Some(line(&mut u)?),
            labels: Some(response_labels(&mut u, &batch, &own, &mut valid)?),
            metadata: Some(pairs(&mut u, 2)?),
        });
    }
    let content = ResponseContent { verdicts, patches, added };
    let buf = write_response(&content);
    match Response::parse(&buf, n) {
        Ok(r) => {
            assert!(valid, "a response with an invalid label set was accepted: {content:?}");
            assert_eq!(read_response(&r, n), content, "the response changed on the way");
            check_apply(&batch, &r, &content);
        }
        Err(e) => {
            sluice_fuzz::trace!("response refused: {e}");
            assert!(!valid, "a valid response was refused: {e}\n{content:?}");
        }
    }
    Ok(())
}
