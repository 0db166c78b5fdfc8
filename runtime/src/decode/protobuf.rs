//! `logproto.PushRequest` (already un-snappied) into validated model streams. Lines and strings
//! are moved out of the prost structs, never copied.
//!
//! The request is walked on the wire one stream at a time: a stream's entries and pairs are
//! counted and charged ([`Cost`]) before prost builds it, so a push of millions of empty entries
//! is refused after a scan, not after it has been allocated.

use prost::Message as _;

use super::DecodeError;
use super::cost::{Cost, PAIR_OVERHEAD};
use super::labels::parse_labels;
use super::validate::{RawLabels, Validator};
use crate::model::Entry;
use crate::proto::{EntryAdapter, StreamAdapter};

/// Field numbers of `logproto`: `PushRequest.streams`, `StreamAdapter.entries`, and the two
/// repeated pairs of `EntryAdapter` (structured metadata and parsed).
const STREAMS: u32 = 1;
const ENTRIES: u32 = 2;
const METADATA: u32 = 3;
const PARSED: u32 = 4;

/// Decodes `bytes` and hands each stream to `validator`, charging `cost` first.
pub(crate) fn decode(
    bytes: &[u8],
    validator: &mut Validator<'_>,
    cost: &mut Cost<'_>,
) -> Result<(), DecodeError> {
    let malformed =
        |e: WireError| DecodeError::Malformed(format!("cannot decode the protobuf PushRequest: {e}"));
    let mut rest = bytes;
    while let Some(slice) = next_bytes_field(&mut rest, STREAMS).map_err(malformed)? {
        let (entries, pairs) = count_stream(slice).map_err(malformed)?;
        // Every string of the stream is at most its bytes on the wire.
        cost.stream(slice.len()).map_err(|_| cost.take_error())?;
        cost.entries(entries, pairs.saturating_mul(PAIR_OVERHEAD)).map_err(|_| cost.take_error())?;
        let stream = StreamAdapter::decode(slice).map_err(|e| malformed(WireError::Prost(e)))?;
        let entries = stream.entries.into_iter().map(entry).collect();
        let labels = match parse_labels(&stream.labels) {
            Ok(pairs) => RawLabels::Pairs(pairs),
            Err(error) => RawLabels::Unparsed { text: &stream.labels, error },
        };
        validator.push_stream(labels, entries);
    }
    Ok(())
}

/// Why the wire format does not read as a `PushRequest`.
#[derive(Debug, thiserror::Error)]
enum WireError {
    #[error(transparent)]
    Prost(#[from] prost::DecodeError),
    #[error("invalid wire type {wire:?} for field {tag}")]
    WireType { tag: u32, wire: prost::encoding::WireType },
    #[error("a length-delimited field runs past the end of its message")]
    Underflow,
}

/// The next occurrence of the length-delimited field `tag` in the message `buf`, skipping other
/// fields as prost does (so exactly what prost accepts is accepted); `None` at the end.
fn next_bytes_field<'a>(buf: &mut &'a [u8], tag: u32) -> Result<Option<&'a [u8]>, WireError> {
    use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};
    while !buf.is_empty() {
        let (t, wire) = decode_key(buf)?;
        if t != tag {
            skip_field(wire, t, buf, DecodeContext::default())?;
            continue;
        }
        if wire != WireType::LengthDelimited {
            return Err(WireError::WireType { tag, wire });
        }
        let len = usize::try_from(decode_varint(buf)?).unwrap_or(usize::MAX);
        if len > buf.len() {
            return Err(WireError::Underflow);
        }
        let (field, tail) = buf.split_at(len);
        *buf = tail;
        return Ok(Some(field));
    }
    Ok(None)
}

/// Entries and structured-metadata pairs (parsed ones too) of one `StreamAdapter`.
fn count_stream(stream: &[u8]) -> Result<(usize, usize), WireError> {
    let (mut entries, mut pairs) = (0usize, 0usize);
    let mut rest = stream;
    while let Some(mut entry) = next_bytes_field(&mut rest, ENTRIES)? {
        entries += 1;
        while !entry.is_empty() {
            let (t, wire) = prost::encoding::decode_key(&mut entry)?;
            if t == METADATA || t == PARSED {
                pairs += 1;
            }
            prost::encoding::skip_field(wire, t, &mut entry, prost::encoding::DecodeContext::default())?;
        }
    }
    Ok((entries, pairs))
}

fn entry(e: EntryAdapter) -> Entry {
    // A missing timestamp is Go's zero time in Loki, so too old when old samples are rejected;
    // the Unix epoch gives that outcome with a value every consumer can represent.
    let timestamp_ns = match e.timestamp {
        None => 0,
        Some(ts) => ts.to_nanos().unwrap_or(if ts.seconds < 0 { i64::MIN } else { i64::MAX }),
    };
    // Same element layout, so this collect reuses the allocation.
    let metadata = e.structured_metadata.into_iter().map(|p| (p.name, p.value)).collect();
    Entry { timestamp_ns, line: e.line, metadata }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::Limits;
    use crate::decode::{Decoded, Reason};
    use crate::proto::{LabelPairAdapter, PushRequest, Timestamp};

    const NOW: i64 = 1_700_000_000_000_000_000;

    fn e(ts: Option<i64>, line: &str, meta: &[(&str, &str)]) -> EntryAdapter {
        EntryAdapter {
            timestamp: ts.map(Timestamp::from_nanos),
            line: line.into(),
            structured_metadata: meta
                .iter()
                .map(|(n, v)| LabelPairAdapter { name: n.to_string(), value: v.to_string() })
                .collect(),
            parsed: Vec::new(),
        }
    }

    fn s(labels: &str, entries: Vec<EntryAdapter>) -> StreamAdapter {
        StreamAdapter { labels: labels.into(), entries, hash: 0 }
    }

    fn run(streams: Vec<StreamAdapter>) -> Result<Decoded, DecodeError> {
        let bytes = PushRequest { streams }.encode_to_vec();
        let limits = Limits::default();
        let mut v = Validator::new(&limits, Arc::from("t"), NOW);
        let mut meter = crate::decode::Unmetered::default();
        let mut cost = Cost::new(crate::decode::PushLimits::NONE, &mut meter);
        decode(&bytes, &mut v, &mut cost)?;
        cost.finish()?;
        Ok(v.finish())
    }

    #[test]
    fn decodes_streams_entries_and_metadata() {
        let d = run(vec![
            s(
                r#"{app="api", env="prod"}"#,
                vec![e(Some(NOW), "one", &[("trace_id", "abc")]), e(Some(NOW + 1), "two", &[])],
            ),
            s(r#"{app="db"}"#, vec![e(Some(NOW - 5), "three", &[])]),
        ])
        .expect("decodes");
        assert!(d.rejected.is_empty(), "{:?}", d.rejected);
        assert_eq!(d.batch.streams.len(), 2);
        let first = &d.batch.streams[0];
        assert_eq!(first.labels.get("env"), Some("prod"));
        assert_eq!(first.entries[0].timestamp_ns, NOW);
        assert_eq!(first.entries[0].line, "one");
        assert_eq!(first.entries[0].metadata, vec![("trace_id".to_string(), "abc".to_string())]);
        assert_eq!(first.entries[1].line, "two");
        assert_eq!(d.batch.streams[1].entries[0].line, "three");
    }

    #[test]
    fn bad_label_string_rejects_only_that_stream() {
        let d = run(vec![
            s(r#"{app="api""#, vec![e(Some(NOW), "lost", &[]), e(Some(NOW), "lost too", &[])]),
            s(r#"{app="ok"}"#, vec![e(Some(NOW), "kept", &[])]),
        ])
        .expect("decodes");
        assert_eq!(d.batch.entry_count(), 1);
        assert_eq!(d.batch.streams[0].entries[0].line, "kept");
        assert_eq!(d.rejected.len(), 1);
        let r = &d.rejected[0];
        assert_eq!((r.reason, r.entries, r.bytes), (Reason::InvalidLabels, 2, 12));
        assert!(r.message.contains(r#"{app="api""#) && r.message.contains("does not parse"), "{}", r.message);
    }

    #[test]
    fn missing_timestamp_is_too_old() {
        let d = run(vec![s(r#"{a="1"}"#, vec![e(None, "no time", &[])])]).expect("decodes");
        assert!(d.batch.streams.is_empty());
        assert_eq!(d.rejected[0].reason, Reason::GreaterThanMaxSampleAge);
    }

    #[test]
    fn out_of_range_timestamps_do_not_overflow() {
        let huge = EntryAdapter {
            timestamp: Some(Timestamp { seconds: i64::MAX, nanos: 999_999_999 }),
            ..e(None, "x", &[])
        };
        let tiny =
            EntryAdapter { timestamp: Some(Timestamp { seconds: i64::MIN, nanos: -5 }), ..e(None, "y", &[]) };
        let d = run(vec![s(r#"{a="1"}"#, vec![huge, tiny])]).expect("decodes");
        let reasons: Vec<_> = d.rejected.iter().map(|r| r.reason).collect();
        assert_eq!(reasons, [Reason::TooFarInFuture, Reason::GreaterThanMaxSampleAge]);
    }

    #[test]
    fn garbage_is_malformed() {
        let limits = Limits::default();
        let mut v = Validator::new(&limits, Arc::from("t"), NOW);
        let mut meter = crate::decode::Unmetered::default();
        let mut cost = Cost::new(crate::decode::PushLimits::NONE, &mut meter);
        match decode(&[0x0a, 0xff, 0xff, 0xff], &mut v, &mut cost) {
            Err(DecodeError::Malformed(m)) => assert!(m.contains("protobuf"), "{m}"),
            other => panic!("{other:?}"),
        }
        // Invalid UTF-8 in a line.
        let mut bytes =
            PushRequest { streams: vec![s(r#"{a="1"}"#, vec![e(Some(NOW), "ab", &[])])] }.encode_to_vec();
        let at = bytes.windows(2).position(|w| w == b"ab").expect("line bytes present");
        bytes[at] = 0xff;
        assert!(matches!(decode(&bytes, &mut v, &mut cost), Err(DecodeError::Malformed(_))));
    }
}
