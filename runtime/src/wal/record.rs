//! A record's payload: one tenant's processed streams and the sinks they are for.
//!
//! ```text
//! version u8 = 1
//! tenant      u16 length + UTF-8
//! sinks       u8 count, each u8 length + UTF-8
//! streams     u32 count, each:
//!   labels    u16 count, each name and value as u32 length + UTF-8
//!   entries   u32 count, each: timestamp i64, line (u32 length + UTF-8),
//!             metadata u16 count, each name and value as u32 length + UTF-8
//! ```
//!
//! All integers little-endian. The frame's checksum guards the bytes; the decoder still checks
//! every length and string, so a record that passed a checksum by chance (or a bug) gives an
//! error, never a panic or a huge allocation.

use std::sync::Arc;

use crate::model::{Entry, LabelSet, Pair, Stream};

const VERSION: u8 = 1;

/// A payload that cannot be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("{0} is too long for a log record")]
    TooLong(&'static str),
    #[error("record version {0} is not known to this sluice")]
    Version(u8),
    #[error("record ends early, in {0}")]
    Truncated(&'static str),
    #[error("record has invalid UTF-8 in {0}")]
    Utf8(&'static str),
    #[error("record has {0} bytes after its last stream")]
    Trailing(usize),
}

/// Appends the payload of a record to `out`.
pub fn encode(
    tenant: &str,
    sinks: &[&str],
    streams: &[Stream],
    out: &mut Vec<u8>,
) -> Result<(), RecordError> {
    out.push(VERSION);
    let tenant_len = u16::try_from(tenant.len()).map_err(|_| RecordError::TooLong("the tenant"))?;
    out.extend_from_slice(&tenant_len.to_le_bytes());
    out.extend_from_slice(tenant.as_bytes());
    out.push(u8::try_from(sinks.len()).map_err(|_| RecordError::TooLong("the sink list"))?);
    for sink in sinks {
        out.push(u8::try_from(sink.len()).map_err(|_| RecordError::TooLong("a sink name"))?);
        out.extend_from_slice(sink.as_bytes());
    }
    put_u32(out, streams.len(), "the stream list")?;
    for stream in streams {
        put_pairs(out, stream.labels.pairs(), "a label set")?;
        put_u32(out, stream.entries.len(), "an entry list")?;
        for entry in &stream.entries {
            out.extend_from_slice(&entry.timestamp_ns.to_le_bytes());
            put_str(out, &entry.line, "a line")?;
            put_pairs(out, &entry.metadata, "structured metadata")?;
        }
    }
    Ok(())
}

fn put_u32(out: &mut Vec<u8>, n: usize, what: &'static str) -> Result<(), RecordError> {
    out.extend_from_slice(&u32::try_from(n).map_err(|_| RecordError::TooLong(what))?.to_le_bytes());
    Ok(())
}

fn put_str(out: &mut Vec<u8>, s: &str, what: &'static str) -> Result<(), RecordError> {
    put_u32(out, s.len(), what)?;
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn put_pairs(out: &mut Vec<u8>, pairs: &[Pair], what: &'static str) -> Result<(), RecordError> {
    out.extend_from_slice(&u16::try_from(pairs.len()).map_err(|_| RecordError::TooLong(what))?.to_le_bytes());
    for (name, value) in pairs {
        put_str(out, name, what)?;
        put_str(out, value, what)?;
    }
    Ok(())
}

/// The start of a decoded record: who it is for. The streams follow in `rest`.
#[derive(Debug, PartialEq, Eq)]
pub struct Header<'a> {
    pub tenant: &'a str,
    pub sinks: Vec<&'a str>,
    rest: &'a [u8],
}

impl<'a> Header<'a> {
    /// Decodes the tenant and sinks only, so a reader skips records for other sinks cheaply.
    pub fn decode(payload: &'a [u8]) -> Result<Self, RecordError> {
        let mut r = Reader(payload);
        let version = r.u8("the version")?;
        if version != VERSION {
            return Err(RecordError::Version(version));
        }
        let tenant_len = r.u16("the tenant")? as usize;
        let tenant = r.str(tenant_len, "the tenant")?;
        let count = r.u8("the sink list")?;
        let mut sinks = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let len = r.u8("a sink name")? as usize;
            sinks.push(r.str(len, "a sink name")?);
        }
        Ok(Self { tenant, sinks, rest: r.0 })
    }

    /// True when the record is for `sink`.
    pub fn is_for(&self, sink: &str) -> bool {
        self.sinks.contains(&sink)
    }

    /// Decodes the streams.
    pub fn streams(&self) -> Result<Vec<Stream>, RecordError> {
        let mut r = Reader(self.rest);
        let count = r.u32("the stream list")? as usize;
        // Every stream takes at least 6 bytes: never allocate more than the input can hold.
        let mut streams = Vec::with_capacity(count.min(r.0.len() / 6));
        for _ in 0..count {
            let labels = LabelSet::new(r.pairs("a label set")?);
            let n = r.u32("an entry list")? as usize;
            let mut entries = Vec::with_capacity(n.min(r.0.len() / 14));
            for _ in 0..n {
                let timestamp_ns = r.i64("a timestamp")?;
                let len = r.u32("a line")? as usize;
                let line = r.str(len, "a line")?.to_string();
                let metadata = r.pairs("structured metadata")?;
                entries.push(Entry { timestamp_ns, line, metadata });
            }
            streams.push(Stream { labels, entries });
        }
        if !r.0.is_empty() {
            return Err(RecordError::Trailing(r.0.len()));
        }
        Ok(streams)
    }

    /// The tenant as the model holds it.
    pub fn tenant(&self) -> Arc<str> {
        Arc::from(self.tenant)
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], RecordError> {
        if self.0.len() < n {
            return Err(RecordError::Truncated(what));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, RecordError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, RecordError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, RecordError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn i64(&mut self, what: &'static str) -> Result<i64, RecordError> {
        let b = self.take(8, what)?;
        Ok(i64::from_le_bytes(b.try_into().map_err(|_| RecordError::Truncated(what))?))
    }

    fn str(&mut self, len: usize, what: &'static str) -> Result<&'a str, RecordError> {
        std::str::from_utf8(self.take(len, what)?).map_err(|_| RecordError::Utf8(what))
    }

    fn pairs(&mut self, what: &'static str) -> Result<Vec<Pair>, RecordError> {
        let count = self.u16(what)? as usize;
        let mut pairs = Vec::with_capacity(count.min(self.0.len() / 8));
        for _ in 0..count {
            let n = self.u32(what)? as usize;
            let name = self.str(n, what)?.to_string();
            let n = self.u32(what)? as usize;
            let value = self.str(n, what)?.to_string();
            pairs.push((name, value));
        }
        Ok(pairs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn streams() -> Vec<Stream> {
        let labels = LabelSet::new(vec![("app".into(), "api".into()), ("env".into(), "prod".into())]);
        let entries = vec![
            Entry {
                timestamp_ns: -5,
                line: "first ✓".into(),
                metadata: vec![("trace_id".into(), "abc".into())],
            },
            Entry { timestamp_ns: i64::MAX, line: String::new(), metadata: vec![] },
        ];
        vec![Stream { labels, entries }, Stream { labels: LabelSet::new(vec![]), entries: vec![] }]
    }

    #[test]
    fn round_trips_tenant_sinks_and_streams() {
        let mut out = Vec::new();
        encode("team-a", &["loki", "archive"], &streams(), &mut out).expect("encodes");
        let header = Header::decode(&out).expect("header");
        assert_eq!(header.tenant, "team-a");
        assert!(header.is_for("archive") && !header.is_for("arch"));
        assert_eq!(header.streams().expect("streams"), streams());
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let mut out = Vec::new();
        encode("t", &["loki"], &streams(), &mut out).expect("encodes");
        for cut in 0..out.len() {
            let result = Header::decode(&out[..cut]).and_then(|h| h.streams());
            assert!(result.is_err(), "a record cut at {cut} of {} decoded", out.len());
        }
        out.push(0);
        assert_eq!(Header::decode(&out).and_then(|h| h.streams()), Err(RecordError::Trailing(1)));
    }

    #[test]
    fn huge_counts_do_not_allocate_what_the_input_cannot_hold() {
        let mut out = Vec::new();
        encode("t", &[], &[], &mut out).expect("encodes");
        let at = out.len() - 4;
        out[at..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            Header::decode(&out).and_then(|h| h.streams()),
            Err(RecordError::Truncated("a label set"))
        );
        assert_eq!(Header::decode(&[9]), Err(RecordError::Version(9)));
    }
}
