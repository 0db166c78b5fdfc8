//! The log's framing. Every record is
//!
//! ```text
//! magic "SLW\x02" (4) | payload length, u32 LE (4) | check, u64 LE (8) | payload
//! ```
//!
//! so a reader tells a whole record from a torn one (its length runs past what was written) and
//! from a damaged one (wrong magic or check), and finds the next record after damage by
//! searching for the magic (a candidate counts only if its check matches).
//!
//! The check is xxh3-64 of the payload seeded with the log's **frame key**, a random number
//! kept in the log's directory (`frame-key`), which no client can read. Lines are stored raw,
//! so a client can write a whole frame inside a line; after damage in the middle of a segment,
//! the search for the next record may land on it. Without the key its check cannot be made
//! right (a chance of 2⁻⁶⁴ per candidate), so a crafted frame never reads as a record, with
//! whatever tenant and labels it names.
//!
//! Segments written before the key existed use the first framing (`SLW\x01`, CRC-32, 12-byte
//! header) and are read with it ([`Format::Legacy`]); a keyed segment never accepts such a
//! frame, which anyone can compute.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// The first bytes of every record; the last byte is the framing's version.
pub const MAGIC: [u8; 4] = *b"SLW\x02";
/// Magic, length and check.
pub const HEADER_LEN: usize = 16;
/// The first framing's magic and header length (CRC-32 check).
pub const LEGACY_MAGIC: [u8; 4] = *b"SLW\x01";
pub const LEGACY_HEADER_LEN: usize = 12;
/// A larger length field is damage, not a record.
pub const MAX_PAYLOAD: usize = 1 << 30;

/// How the frames of a segment are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Checked with the log's frame key (every segment written since it exists).
    Keyed(u64),
    /// The first framing, CRC-32: segments written before the key existed.
    Legacy,
}

impl Format {
    pub fn magic(self) -> [u8; 4] {
        match self {
            Self::Keyed(_) => MAGIC,
            Self::Legacy => LEGACY_MAGIC,
        }
    }

    pub fn header_len(self) -> usize {
        match self {
            Self::Keyed(_) => HEADER_LEN,
            Self::Legacy => LEGACY_HEADER_LEN,
        }
    }

    /// The check of `payload` (CRC-32 in the low half for the legacy framing).
    fn check(self, payload: &[u8]) -> u64 {
        match self {
            Self::Keyed(key) => xxhash_rust::xxh3::xxh3_64_with_seed(payload, key),
            Self::Legacy => u64::from(crc32fast::hash(payload)),
        }
    }
}

/// Appends the frame of `payload` to `out`.
pub fn encode(format: Format, payload: &[u8], out: &mut Vec<u8>) {
    let start = begin(format, out);
    out.extend_from_slice(payload);
    finish(format, out, start);
}

/// Starts a frame at the end of `out`; write the payload after it, then call [`finish`] with
/// the returned start. Saves copying a payload built elsewhere.
pub fn begin(format: Format, out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.resize(start + format.header_len(), 0);
    start
}

/// Fills in the header of the frame begun at `start`; its payload is the rest of `out`.
pub fn finish(format: Format, out: &mut [u8], start: usize) {
    let header = format.header_len();
    let payload = &out[start + header..];
    debug_assert!(payload.len() <= MAX_PAYLOAD);
    let len = (payload.len() as u32).to_le_bytes();
    let check = format.check(payload).to_le_bytes();
    out[start..start + 4].copy_from_slice(&format.magic());
    out[start + 4..start + 8].copy_from_slice(&len);
    out[start + 8..start + header].copy_from_slice(&check[..header - 8]);
}

/// What the bytes at the start of a buffer hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A whole record: its payload, and the bytes the frame takes.
    Record { payload: &'a [u8], len: usize },
    /// The start of a record that takes `need` bytes in all; the buffer has fewer.
    Partial { need: usize },
    /// No valid record starts here.
    Damaged,
}

/// The frame at the start of `buf`, in `format`.
pub fn parse(format: Format, buf: &[u8]) -> Frame<'_> {
    let (magic, header) = (format.magic(), format.header_len());
    if buf.len() < header {
        let n = buf.len().min(magic.len());
        return if buf[..n] == magic[..n] { Frame::Partial { need: header } } else { Frame::Damaged };
    }
    if buf[..4] != magic {
        return Frame::Damaged;
    }
    let len = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
    if len > MAX_PAYLOAD {
        return Frame::Damaged;
    }
    let total = header + len;
    if buf.len() < total {
        return Frame::Partial { need: total };
    }
    let mut check = [0u8; 8];
    check[..header - 8].copy_from_slice(&buf[8..header]);
    let payload = &buf[header..total];
    if format.check(payload) != u64::from_le_bytes(check) {
        return Frame::Damaged;
    }
    Frame::Record { payload, len: total }
}

/// What [`SegmentReader::read`] found at an offset.
#[derive(Debug, PartialEq, Eq)]
pub enum Read<'a> {
    /// A whole record, and the offset after it.
    Record { payload: &'a [u8], next: u64 },
    /// Nothing whole before `end`: the end of the data, or a torn record at the tail.
    End,
    /// Damage; the next record may start at `resume` (`None`: no candidate before `end`).
    Damaged { resume: Option<u64> },
}

/// Reads frames from one segment file through a buffer of whole chunks.
pub struct SegmentReader {
    file: File,
    format: Format,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    start: u64,
    /// The last read was damage: the next offset is a candidate found by its magic.
    resyncing: bool,
}

/// How much is read at once.
const CHUNK: usize = 1 << 20;

impl SegmentReader {
    pub fn new(file: File, format: Format) -> Self {
        Self { file, format, buf: Vec::new(), start: 0, resyncing: false }
    }

    /// The frame at `offset`, looking no further than `end`. Call it at a record's start, or at
    /// the `resume` of the damage it returned just before.
    pub fn read(&mut self, offset: u64, end: u64) -> io::Result<Read<'_>> {
        if offset >= end {
            return Ok(Read::End);
        }
        let mut want = self.format.header_len() as u64;
        loop {
            let target = (offset + want.max(CHUNK as u64)).min(end);
            let have = self.fill(offset, target)?;
            // The file ends before `end` (cut short under us): nothing more is whole.
            let complete = have as u64 == target - offset;
            let at = (offset - self.start) as usize;
            let partial = match parse(self.format, &self.buf[at..at + have]) {
                Frame::Record { len, .. } => {
                    self.resyncing = false;
                    let next = offset + len as u64;
                    let Frame::Record { payload, .. } = parse(self.format, &self.buf[at..at + len]) else {
                        unreachable!("parsed the same bytes before")
                    };
                    return Ok(Read::Record { payload, next });
                }
                Frame::Partial { need } if complete && offset + need as u64 <= end => {
                    want = need as u64;
                    continue;
                }
                // It cannot be completed: a torn tail, unless we got here by resyncing after
                // damage. Then it may be the magic inside a damaged record's line, and the whole
                // records after it must not be lost: search on. (Only then: a torn tail's own
                // lines are never searched, so a line holding a crafted frame is never read as
                // a record.)
                Frame::Partial { .. } if !self.resyncing => return Ok(Read::End),
                Frame::Partial { .. } => true,
                Frame::Damaged => false,
            };
            let resume = self.find_magic(offset + 1, end)?;
            self.resyncing = resume.is_some();
            // A frame that cannot be completed with no candidate after it is the tail.
            return Ok(if partial && resume.is_none() { Read::End } else { Read::Damaged { resume } });
        }
    }

    /// Makes the buffer hold `[offset, end)`; returns how many bytes from `offset` it holds.
    fn fill(&mut self, offset: u64, end: u64) -> io::Result<usize> {
        let buf_end = self.start + self.buf.len() as u64;
        if offset >= self.start && end <= buf_end {
            return Ok((end - offset) as usize);
        }
        let len = (end - offset) as usize;
        self.buf.clear();
        self.buf.resize(len, 0);
        self.start = offset;
        let mut read = 0;
        while read < len {
            match self.file.read_at(&mut self.buf[read..], offset + read as u64) {
                Ok(0) => break,
                Ok(n) => read += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.buf.truncate(read);
        Ok(read)
    }

    /// The first offset in `[from, end)` where the magic starts, if any.
    fn find_magic(&mut self, from: u64, end: u64) -> io::Result<Option<u64>> {
        let mut at = from;
        while at < end {
            let have = self.fill(at, (at + CHUNK as u64).min(end))?;
            if have == 0 {
                return Ok(None);
            }
            let i = (at - self.start) as usize;
            let magic = self.format.magic();
            if let Some(found) = memchr::memmem::find(&self.buf[i..i + have], &magic) {
                return Ok(Some(at + found as u64));
            }
            if at + have as u64 >= end {
                return Ok(None);
            }
            // The magic may straddle the chunk boundary.
            at += (have.saturating_sub(magic.len() - 1)).max(1) as u64;
        }
        Ok(None)
    }
}

/// Where the valid data of a segment ends, found by reading it whole: the end of the last
/// whole record, and how many damaged regions lie before it.
pub fn scan(file: File, len: u64, format: Format) -> io::Result<Scanned> {
    let mut reader = SegmentReader::new(file, format);
    let mut scanned = Scanned::default();
    let mut offset = 0;
    // Damage counts once a whole record follows it; damage up to the end is a torn tail.
    let mut after_damage = false;
    loop {
        match reader.read(offset, len)? {
            Read::Record { next, .. } => {
                scanned.records += 1;
                scanned.valid_end = next;
                scanned.damaged += u64::from(std::mem::take(&mut after_damage));
                offset = next;
            }
            Read::End | Read::Damaged { resume: None } => return Ok(scanned),
            Read::Damaged { resume: Some(at) } => {
                after_damage = true;
                offset = at;
            }
        }
    }
}

/// What [`scan`] found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Scanned {
    pub records: u64,
    /// The end of the last whole record; anything after it is a torn tail.
    pub valid_end: u64,
    /// Damaged regions followed by a whole record (a damaged tail counts as torn instead).
    pub damaged: u64,
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    /// The format of these tests' segments.
    const K: Format = Format::Keyed(0x005e_ed0f_5105);

    fn frames(payloads: &[&[u8]]) -> Vec<u8> {
        frames_in(K, payloads)
    }

    fn frames_in(format: Format, payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in payloads {
            encode(format, p, &mut out);
        }
        out
    }

    fn file_with(bytes: &[u8]) -> (tempfile::NamedTempFile, u64) {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        f.write_all(bytes).expect("write");
        (f, bytes.len() as u64)
    }

    #[test]
    fn whole_partial_and_damaged_frames() {
        let buf = frames(&[b"hello"]);
        assert_eq!(parse(K, &buf), Frame::Record { payload: b"hello", len: HEADER_LEN + 5 });
        assert_eq!(parse(K, &buf[..HEADER_LEN + 2]), Frame::Partial { need: HEADER_LEN + 5 });
        assert_eq!(parse(K, &buf[..3]), Frame::Partial { need: HEADER_LEN });
        assert_eq!(parse(K, b"XY"), Frame::Damaged);
        let mut flipped = buf.clone();
        flipped[HEADER_LEN + 1] ^= 1;
        assert_eq!(parse(K, &flipped), Frame::Damaged, "checksum catches a flipped bit");
        let mut huge = buf.clone();
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(parse(K, &huge), Frame::Damaged);
    }

    #[test]
    fn reads_records_in_order_then_end() {
        let bytes = frames(&[b"one", b"two", b""]);
        let (f, len) = file_with(&bytes);
        let mut r = SegmentReader::new(f.reopen().expect("reopen"), K);
        let mut offset = 0;
        let mut got = Vec::new();
        while let Read::Record { payload, next } = r.read(offset, len).expect("read") {
            got.push(payload.to_vec());
            offset = next;
        }
        assert_eq!(got, [b"one".to_vec(), b"two".to_vec(), Vec::new()]);
        assert_eq!(offset, len);
        // A reader limited to less than a whole record sees the end, not damage.
        assert_eq!(r.read(0, 5).expect("read"), Read::End);
        // So does one told the file is longer than it is.
        let mut r = SegmentReader::new(f.reopen().expect("reopen"), K);
        assert_eq!(r.read(len - 3, len + 100).expect("read"), Read::Damaged { resume: None });
        let cut = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(cut.path(), &bytes[..HEADER_LEN + 1]).expect("write");
        let mut r = SegmentReader::new(cut.reopen().expect("reopen"), K);
        assert_eq!(r.read(0, len).expect("read"), Read::End, "a short file is not a loop");
    }

    #[test]
    fn a_torn_tail_ends_the_scan_and_damage_in_the_middle_is_skipped() {
        let mut bytes = frames(&[b"first", b"second", b"third"]);
        let second_at = HEADER_LEN + 5;
        bytes[second_at + HEADER_LEN] ^= 0xff; // damage inside "second"
        let whole = bytes.len() as u64;
        bytes.extend_from_slice(&frames(&[b"torn record"])[..HEADER_LEN + 3]);
        let (f, len) = file_with(&bytes);
        let scanned = scan(f.reopen().expect("reopen"), len, K).expect("scan");
        assert_eq!(scanned, Scanned { records: 2, valid_end: whole, damaged: 1 });

        let mut r = SegmentReader::new(f.reopen().expect("reopen"), K);
        match r.read(second_at as u64, len).expect("read") {
            Read::Damaged { resume: Some(at) } => {
                assert_eq!(at, (2 * HEADER_LEN + 5 + 6) as u64, "resumes at the third record")
            }
            other => panic!("{other:?}"),
        }
    }

    /// Found by the `wal_record` fuzz target: a resync that lands on the magic inside a damaged
    /// record's line, whose "length" runs past the end, must not pass for a torn tail (recovery
    /// would cut away the whole records after it).
    #[test]
    fn a_line_holding_the_magic_in_a_damaged_record_does_not_hide_the_records_after_it() {
        let mut trap = b"line with ".to_vec();
        trap.extend_from_slice(&MAGIC);
        trap.extend_from_slice(&[0x7f, 0x7f, 0x7f, 0x3f]); // a length of ~1 GiB
        trap.extend_from_slice(b" and more");
        let mut bytes = frames(&[b"first", &trap, b"after"]);
        let trap_at = HEADER_LEN + 5;
        bytes[trap_at + HEADER_LEN] ^= 1; // damage in the trap record, before its magic
        let (f, len) = file_with(&bytes);
        let scanned = scan(f.reopen().expect("reopen"), len, K).expect("scan");
        assert_eq!(scanned, Scanned { records: 2, valid_end: len, damaged: 1 });

        // The same bytes as a torn tail (nothing whole after them) are torn, not damage.
        let torn = &bytes[..bytes.len() - (HEADER_LEN + 5)];
        let (f, len) = file_with(torn);
        let scanned = scan(f.reopen().expect("reopen"), len, K).expect("scan");
        assert_eq!(scanned, Scanned { records: 1, valid_end: (HEADER_LEN + 5) as u64, damaged: 0 });

        // A torn tail is never searched: a line holding a whole crafted frame is not a record.
        let mut crafted = b"line: ".to_vec();
        encode(K, b"forged record", &mut crafted);
        let mut bytes = frames(&[b"first"]);
        let whole = bytes.len() as u64;
        bytes.extend_from_slice(&frames(&[&crafted])[..HEADER_LEN + crafted.len() - 1]);
        let (f, len) = file_with(&bytes);
        let scanned = scan(f.reopen().expect("reopen"), len, K).expect("scan");
        assert_eq!(scanned, Scanned { records: 1, valid_end: whole, damaged: 0 });
    }

    /// A client's line holding whole frames — in today's framing with a guessed key, and in
    /// the legacy framing anyone can compute — where the search after damage lands: none is
    /// read as a record, and the real record after them is.
    #[test]
    fn a_frame_crafted_inside_a_line_never_reads_as_a_record_after_damage() {
        let mut line = b"innocent looking ".to_vec();
        encode(Format::Keyed(0), b"forged: tenant victim", &mut line);
        encode(Format::Keyed(0x005e_ed0f_5104), b"forged: a neighbouring key", &mut line);
        encode(Format::Legacy, b"forged: legacy framing", &mut line);
        line.extend_from_slice(&MAGIC);
        let mut bytes = frames(&[b"first", &line, b"after"]);
        let line_at = HEADER_LEN + 5;
        bytes[line_at] ^= 0xff; // the record holding the line loses its magic
        let (f, len) = file_with(&bytes);
        let mut r = SegmentReader::new(f.reopen().expect("reopen"), K);
        let mut offset = 0;
        let mut got = Vec::new();
        loop {
            match r.read(offset, len).expect("read") {
                Read::Record { payload, next } => {
                    got.push(String::from_utf8_lossy(payload).into_owned());
                    offset = next;
                }
                Read::Damaged { resume: Some(at) } => offset = at,
                Read::End | Read::Damaged { resume: None } => break,
            }
        }
        assert_eq!(got, ["first", "after"]);
        assert_eq!(scan(f.reopen().expect("reopen"), len, K).expect("scan").damaged, 1);
    }

    /// The check is XXH3-64 with the key as seed, as any xxhash library computes it (the fuzz
    /// seeds are made with Python's `xxhash`: `xxh3_64_intdigest(b"abc", seed=5)`).
    #[test]
    fn the_check_is_seeded_xxh3() {
        let mut out = Vec::new();
        encode(Format::Keyed(5), b"abc", &mut out);
        assert_eq!(&out[..4], b"SLW\x02");
        assert_eq!(u64::from_le_bytes(out[8..16].try_into().expect("8 bytes")), 0x5599_169c_9856_140b);
    }

    #[test]
    fn legacy_segments_are_read_in_their_own_framing_only() {
        let bytes = frames_in(Format::Legacy, &[b"written", b"before the key"]);
        let (f, len) = file_with(&bytes);
        let scanned = scan(f.reopen().expect("reopen"), len, Format::Legacy).expect("scan");
        assert_eq!(scanned, Scanned { records: 2, valid_end: len, damaged: 0 });
        assert_eq!(
            parse(Format::Legacy, &bytes),
            Frame::Record { payload: b"written", len: LEGACY_HEADER_LEN + 7 }
        );
        assert_eq!(parse(K, &bytes), Frame::Damaged, "a keyed segment takes no legacy frame");
        assert_eq!(scan(f.reopen().expect("reopen"), len, K).expect("scan").records, 0);
    }

    #[test]
    fn records_larger_than_a_chunk_are_read_whole() {
        let big = vec![7u8; CHUNK * 2 + 17];
        let bytes = frames(&[b"a", &big, b"b"]);
        let (f, len) = file_with(&bytes);
        let scanned = scan(f.reopen().expect("reopen"), len, K).expect("scan");
        assert_eq!(scanned, Scanned { records: 3, valid_end: len, damaged: 0 });
    }
}
