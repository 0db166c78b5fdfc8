//! `logproto.PushRequest` (already un-snappied) into validated model streams. Lines and strings
//! are moved out of the prost structs, never copied.

use prost::Message as _;

use super::DecodeError;
use super::labels::parse_labels;
use super::validate::{RawLabels, Validator};
use crate::model::Entry;
use crate::proto::{EntryAdapter, PushRequest};

/// Decodes `bytes` and hands each stream to `validator`.
pub(crate) fn decode(bytes: &[u8], validator: &mut Validator<'_>) -> Result<(), DecodeError> {
    let request = PushRequest::decode(bytes)
        .map_err(|e| DecodeError::Malformed(format!("cannot decode the protobuf PushRequest: {e}")))?;
    for stream in request.streams {
        let entries = stream.entries.into_iter().map(entry).collect();
        let labels = match parse_labels(&stream.labels) {
            Ok(pairs) => RawLabels::Pairs(pairs),
            Err(error) => RawLabels::Unparsed { text: &stream.labels, error },
        };
        validator.push_stream(labels, entries);
    }
    Ok(())
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
    use crate::proto::{LabelPairAdapter, StreamAdapter, Timestamp};

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
        decode(&bytes, &mut v)?;
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
        match decode(&[0x0a, 0xff, 0xff, 0xff], &mut v) {
            Err(DecodeError::Malformed(m)) => assert!(m.contains("protobuf"), "{m}"),
            other => panic!("{other:?}"),
        }
        // Invalid UTF-8 in a line.
        let mut bytes =
            PushRequest { streams: vec![s(r#"{a="1"}"#, vec![e(Some(NOW), "ab", &[])])] }.encode_to_vec();
        let at = bytes.windows(2).position(|w| w == b"ab").expect("line bytes present");
        bytes[at] = 0xff;
        assert!(matches!(decode(&bytes, &mut v), Err(DecodeError::Malformed(_))));
    }
}
