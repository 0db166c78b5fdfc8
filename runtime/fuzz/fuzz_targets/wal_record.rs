//! The write-ahead log's reading side: `frame::parse` looped over a segment as the log reads it
//! (a record, a torn tail, damage and the search for the next magic), each payload through
//! `record::Header::decode`, `is_for`, `tenant` and `streams`, and `SegmentReader`/`scan` over
//! the same bytes in a file. The first byte picks the mode:
//!
//! - `0` (low two bits): the rest is a segment as found on disk.
//! - `1`: the rest is cut into pieces, each framed as a record or kept as damage (with no magic
//!   inside, so the next record is findable): every framed payload must be read back, in order.
//! - `2`, `3`: a record the harness encodes from fuzz-chosen content (tenant, sinks, streams):
//!   framing and decoding give back exactly that content, and every cut of it is an error.
//!
//! For every payload that decodes: the content encoded again decodes to the same content, is as
//! long as the payload (only label order can change: the model sorts labels), and framing it
//! gives back exactly that payload.
//!
//! Segments are framed with the fixed key [`KEY`] (the seeds are made with it, see
//! `gen_seeds.py`); whatever a line holds, only frames checked with it are records.

#![no_main]

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::sync::{Mutex, OnceLock};

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use sluice::model::{Batch, Stream};
use sluice::wal::frame::{self, Format, Frame, MAGIC, Read, SegmentReader};
use sluice::wal::record::{self, Header};
use sluice_fuzz::{entry, text, valid_labels};

/// The frame key of every segment here.
const KEY: Format = Format::Keyed(0x5eed_f022);

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode & 3 {
        0 => {
            let records = read_segment(rest);
            check_file(rest, mode);
            for payload in records {
                check_payload(payload);
            }
        }
        1 => pieces(rest, mode),
        _ => {
            let _ = encoded(rest);
        }
    }
});

/// One step of reading a segment held in memory, as `SegmentReader::read` documents it.
#[derive(Debug, PartialEq, Eq)]
enum Step<'a> {
    Record { payload: &'a [u8], next: u64 },
    End,
    Damaged { resume: Option<u64> },
}

fn step(data: &[u8], offset: usize, end: usize, resyncing: bool) -> Step<'_> {
    if offset >= end {
        return Step::End;
    }
    let limit = end.min(data.len());
    let view = data.get(offset..limit).unwrap_or_default();
    match frame::parse(KEY, view) {
        Frame::Record { payload, len } => {
            assert!(len >= frame::HEADER_LEN && len <= view.len(), "frame length {len} of {}", view.len());
            assert_eq!(payload, &view[frame::HEADER_LEN..len]);
            Step::Record { payload, next: (offset + len) as u64 }
        }
        // A frame that cannot be completed is a torn tail, unless it was reached by resyncing
        // after damage and the magic comes again.
        Frame::Partial { need } => {
            assert!(need > view.len(), "partial, needing {need} of the {} there", view.len());
            match next_magic(data, offset, limit).filter(|_| resyncing) {
                Some(at) => Step::Damaged { resume: Some(at) },
                None => Step::End,
            }
        }
        Frame::Damaged => Step::Damaged { resume: next_magic(data, offset, limit) },
    }
}

/// The first magic after `offset`, before `limit`.
fn next_magic(data: &[u8], offset: usize, limit: usize) -> Option<u64> {
    let from = (offset + 1).min(limit);
    let found = data[from..limit].windows(MAGIC.len()).position(|w| w == MAGIC);
    found.map(|at| (from + at) as u64)
}

/// The steps of reading `data` from the start up to `end`, as the log's reader loops.
fn steps(data: &[u8], end: usize) -> Vec<Step<'_>> {
    let mut out = Vec::new();
    let (mut offset, mut resyncing) = (0, false);
    loop {
        let s = step(data, offset, end, resyncing);
        resyncing = matches!(s, Step::Damaged { resume: Some(_) });
        let next = match s {
            Step::Record { next, .. } => Some(next),
            Step::Damaged { resume: Some(at) } => Some(at),
            Step::End | Step::Damaged { resume: None } => None,
        };
        out.push(s);
        match next {
            Some(next) => {
                assert!(next as usize > offset, "the reader does not advance at {offset}");
                offset = next as usize;
            }
            None => return out,
        }
    }
}

/// The payloads of the whole records of a segment.
fn read_segment(data: &[u8]) -> Vec<&[u8]> {
    steps(data, data.len())
        .into_iter()
        .filter_map(|s| match s {
            Step::Record { payload, .. } => Some(payload),
            _ => None,
        })
        .collect()
}

/// One file, reused: created once, unlinked at once, rewritten for every input.
fn file() -> &'static Mutex<File> {
    static FILE: OnceLock<Mutex<File>> = OnceLock::new();
    FILE.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("sluice-fuzz-wal-{}", std::process::id()));
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .expect("a temporary file");
        let _ = std::fs::remove_file(&path);
        Mutex::new(file)
    })
}

/// `SegmentReader` and `scan` over `data` in a file agree with the in-memory steps, reading to
/// the file's end or (bits 2-3 of `mode`) a little before or past it.
fn check_file(data: &[u8], mode: u8) {
    let guard = file().lock().unwrap_or_else(|p| p.into_inner());
    let f: &File = &guard;
    f.set_len(0).expect("truncate");
    f.write_all_at(data, 0).expect("write");
    let len = data.len();
    let end = match (mode >> 2) & 3 {
        0 | 1 => len,
        2 => len.saturating_sub(usize::from(mode >> 4)),
        _ => len + usize::from(mode >> 4),
    };
    let mut reader = SegmentReader::new(f.try_clone().expect("clone"), KEY);
    let mut offset = 0u64;
    let mut records = 0;
    let mut valid_end = 0;
    let mut damaged = 0;
    let mut after_damage = false;
    let expected_steps = steps(data, end);
    sluice_fuzz::trace!(
        "segment of {len} read to {end}: {:?}",
        expected_steps
            .iter()
            .map(|s| match s {
                Step::Record { next, .. } => format!("record to {next}"),
                other => format!("{other:?}"),
            })
            .collect::<Vec<_>>()
    );
    for expected in expected_steps {
        let got = reader.read(offset, end as u64).expect("read");
        let got = match got {
            Read::Record { payload, next } => Step::Record { payload, next },
            Read::End => Step::End,
            Read::Damaged { resume } => Step::Damaged { resume },
        };
        assert_eq!(got, expected, "SegmentReader at {offset} of {len} (end {end})");
        match got {
            Step::Record { next, .. } => {
                records += 1;
                valid_end = next;
                // Damage counts once a whole record follows it; up to the end it is torn.
                damaged += u64::from(std::mem::take(&mut after_damage));
                offset = next;
            }
            Step::Damaged { resume: Some(at) } => {
                after_damage = true;
                offset = at;
            }
            Step::End | Step::Damaged { resume: None } => {}
        }
    }
    let scanned = frame::scan(f.try_clone().expect("clone"), end as u64, KEY).expect("scan");
    assert_eq!(
        (scanned.records, scanned.valid_end, scanned.damaged),
        (records, valid_end, damaged),
        "scan disagrees with reading"
    );
}

/// Everything a reader does with a payload, and the round trips of what decodes.
fn check_payload(payload: &[u8]) {
    let header = match Header::decode(payload) {
        Ok(header) => header,
        Err(e) => {
            sluice_fuzz::trace!("record refused: {e}");
            return;
        }
    };
    for sink in header.sinks.iter() {
        assert!(header.is_for(sink));
    }
    let absent = "\u{0}absent";
    assert_eq!(header.is_for(absent), header.sinks.contains(&absent));
    assert_eq!(&*header.tenant(), header.tenant);
    let streams = match header.streams() {
        Ok(streams) => streams,
        Err(e) => {
            sluice_fuzz::trace!("streams refused: {e}");
            return;
        }
    };
    sluice_fuzz::trace!(
        "record: tenant {:?}, sinks {:?}, {} streams",
        header.tenant,
        header.sinks,
        streams.len()
    );
    let sinks: Vec<&str> = header.sinks.clone();
    let again = encode(header.tenant, &sinks, &streams);
    assert_eq!(again.len(), payload.len(), "a decoded record encodes to another length");
    check_encoded(header.tenant, &sinks, &streams, &again);
    // Sorted once, the labels stay: encoding what decodes is then byte for byte.
    let h = Header::decode(&again).expect("decodes");
    assert_eq!(encode(h.tenant, &h.sinks, &h.streams().expect("decodes")), again);
}

fn encode(tenant: &str, sinks: &[&str], streams: &[Stream]) -> Vec<u8> {
    let mut out = Vec::new();
    record::encode(tenant, sinks, streams, &mut out).expect("what fit a record fits again");
    out
}

/// `payload`, encoded from this content, frames and decodes back to exactly it.
fn check_encoded(tenant: &str, sinks: &[&str], streams: &[Stream], payload: &[u8]) {
    let mut framed = Vec::new();
    frame::encode(KEY, payload, &mut framed);
    assert_eq!(frame::parse(KEY, &framed), Frame::Record { payload, len: framed.len() });
    assert_eq!(frame::parse(Format::Keyed(0x5eed_f023), &framed), Frame::Damaged, "another key");
    let mut built = vec![7];
    let start = frame::begin(KEY, &mut built);
    built.extend_from_slice(payload);
    frame::finish(KEY, &mut built, start);
    assert_eq!(&built[1..], framed.as_slice(), "begin/finish differs from encode");
    let header = Header::decode(payload).expect("an encoded header decodes");
    assert_eq!(header.tenant, tenant);
    assert_eq!(header.sinks, sinks);
    let decoded = header.streams().expect("encoded streams decode");
    assert_eq!(decoded, streams, "streams changed through a record");
    let batch = Batch { tenant: header.tenant(), streams: decoded };
    assert_eq!(&*batch.tenant, tenant);
}

/// Pieces framed as records or left as damage; every record is found again, in order.
fn pieces(data: &[u8], mode: u8) {
    let mut segment = Vec::new();
    let mut expected: Vec<&[u8]> = Vec::new();
    // Where the damage that ends the segment so far starts.
    let mut damage: Option<usize> = None;
    let mut rest = data;
    while let Some((&head, tail)) = rest.split_first() {
        let n = usize::from(head & 0x7f).min(tail.len());
        let (piece, tail) = tail.split_at(n);
        rest = tail;
        if head & 0x80 == 0 {
            frame::encode(KEY, piece, &mut segment);
            expected.push(piece);
            damage = None;
        } else {
            let at = *damage.get_or_insert(segment.len());
            segment.extend_from_slice(piece);
            // Damage holds no magic: a magic in damage is a record candidate by design, and
            // one whose length runs past the end reads as a torn tail.
            while let Some(i) = segment[at..].windows(MAGIC.len()).position(|w| w == MAGIC) {
                segment[at + i] = b'T';
            }
        }
    }
    let found = read_segment(&segment);
    assert_eq!(found, expected, "records lost or invented around damage");
    check_file(&segment, mode & 0xf3);
    for payload in found {
        check_payload(payload);
    }
}

/// A record from fuzz-chosen content.
fn encoded(data: &[u8]) -> arbitrary::Result<()> {
    let mut u = Unstructured::new(data);
    let tenant = text(&mut u, &["fake", "", "team-ä"], 64)?;
    let mut sinks: Vec<String> = Vec::new();
    for _ in 0..u.int_in_range(0..=3)? {
        sinks.push(text(&mut u, &["loki", "archive", ""], 32)?);
    }
    let mut streams = Vec::new();
    for _ in 0..u.int_in_range(0..=3)? {
        let labels = valid_labels(&mut u)?;
        let entries = (0..u.int_in_range(0..=3)?).map(|_| entry(&mut u)).collect::<arbitrary::Result<_>>()?;
        streams.push(Stream { labels, entries });
    }
    let sinks: Vec<&str> = sinks.iter().map(String::as_str).collect();
    let payload = encode(&tenant, &sinks, &streams);
    sluice_fuzz::trace!("encoded: {} streams, {} bytes", streams.len(), payload.len());
    check_encoded(&tenant, &sinks, &streams, &payload);
    for sink in &sinks {
        assert!(Header::decode(&payload).expect("decodes").is_for(sink));
    }
    // Every cut of the record, and a byte too many, is an error, never a panic or a record.
    let cut = u.int_in_range(0..=payload.len().saturating_sub(1))?;
    for cut in [cut, payload.len() / 2, payload.len().saturating_sub(1)] {
        if cut < payload.len() {
            let result = Header::decode(&payload[..cut]).and_then(|h| h.streams());
            assert!(result.is_err(), "a record cut at {cut} of {} decodes", payload.len());
        }
    }
    let mut longer = payload.clone();
    longer.push(u.arbitrary()?);
    assert_eq!(
        Header::decode(&longer).and_then(|h| h.streams()),
        Err(record::RecordError::Trailing(1)),
        "a byte after the last stream"
    );
    // In a segment with a torn copy after it, the record is read and the tail is not.
    let mut segment = Vec::new();
    frame::encode(KEY, &payload, &mut segment);
    let whole = segment.len();
    frame::encode(KEY, &payload, &mut segment);
    segment.truncate(whole + u.int_in_range(0..=segment.len() - whole - 1)?);
    let read = read_segment(&segment);
    assert_eq!(read, [payload.as_slice()], "a torn copy was read or the record lost");
    Ok(())
}
