//! Decoding Loki push bodies (protobuf+snappy, JSON with optional gzip/deflate) straight into
//! [`crate::model`], applying Loki's validation rules per entry.
//!
//! One job per file: `decompress` removes `Content-Encoding` and the snappy block (both
//! bounded by the decompressed-size limit), `protobuf` and `json` build streams, [`labels`]
//! parses label strings, `validate` applies [`Limits`] and aggregates rejections.
//!
//! Parsed label sets are not cached across pushes: a cached set would still have to be cloned
//! into every stream (the same allocations parsing makes), so a cache would save only the scan
//! and sort of a short string, at the cost of a shared lock on the hot path. Streams with the same
//! labels in one push stay separate `Stream`s, each in the order sent.

use std::sync::Arc;

use crate::config::Limits;
use crate::model::Batch;

mod cost;
mod decompress;
mod json;
pub mod labels;
mod protobuf;
mod validate;

pub use cost::{Meter, PushLimits, Unmetered};
pub use labels::{LabelParseError, is_valid_label_name, parse_label_set, parse_labels};

/// How the body was sent, from the request headers. As in Loki, a body whose media type is not
/// `application/json` is protobuf (snappy-compressed), and `Content-Encoding` gzip or deflate may
/// wrap either.
#[derive(Debug, Clone, Copy, Default)]
pub struct BodyFormat<'a> {
    pub content_type: Option<&'a str>,
    pub content_encoding: Option<&'a str>,
}

/// The valid part of a push, and what was rejected.
#[derive(Debug)]
pub struct Decoded {
    /// Valid entries only; streams left with no valid entry are omitted.
    pub batch: Batch,
    /// One record per stream and rule that rejected entries.
    pub rejected: Vec<Rejected>,
    /// Lines shortened to `max_line_size` (when `max_line_size_truncate` is on).
    pub truncated_lines: usize,
}

/// Entries of one stream rejected by one rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub reason: Reason,
    pub entries: usize,
    /// Bytes of the rejected lines.
    pub bytes: usize,
    /// Names the stream and the rule, as Loki's messages do.
    pub message: String,
}

/// Why entries were rejected; names match Loki's `discarded` reasons where Loki has the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    MissingLabels,
    InvalidLabels,
    /// A label whose name starts with `__` (sluice's own; not one of Loki's reasons).
    ReservedLabelName,
    MaxLabelNamesPerSeries,
    LabelNameTooLong,
    LabelValueTooLong,
    DuplicateLabelNames,
    LineTooLong,
    GreaterThanMaxSampleAge,
    TooFarInFuture,
    StructuredMetadataTooLarge,
    StructuredMetadataTooMany,
}

impl Reason {
    /// Loki's name for the reason, used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingLabels => "missing_labels",
            Self::InvalidLabels => "invalid_labels",
            Self::ReservedLabelName => "reserved_label_name",
            Self::MaxLabelNamesPerSeries => "max_label_names_per_series",
            Self::LabelNameTooLong => "label_name_too_long",
            Self::LabelValueTooLong => "label_value_too_long",
            Self::DuplicateLabelNames => "duplicate_label_names",
            Self::LineTooLong => "line_too_long",
            Self::GreaterThanMaxSampleAge => "greater_than_max_sample_age",
            Self::TooFarInFuture => "too_far_in_future",
            Self::StructuredMetadataTooLarge => "structured_metadata_too_large",
            Self::StructuredMetadataTooMany => "structured_metadata_too_many",
        }
    }
}

/// A body that could not be decoded at all.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("request body exceeds the limit of {limit} bytes after decompression")]
    TooLarge { limit: usize },
    #[error("unsupported Content-Encoding `{0}` (use snappy for protobuf; gzip or deflate for JSON)")]
    UnsupportedEncoding(String),
    #[error("cannot decompress the body ({encoding}): {detail}")]
    Decompress { encoding: &'static str, detail: String },
    #[error("malformed push request: {0}")]
    Malformed(String),
    #[error(
        "the push has more than {limit} entries (server.max_entries_per_push, at most queue.max_entries): send smaller pushes"
    )]
    TooManyEntries { limit: usize },
    #[error("the push has more than {limit} streams (server.max_streams_per_push): send smaller pushes")]
    TooManyStreams { limit: usize },
    /// Decoded, the push would not fit in the memory budget even on its own.
    #[error(
        "the push needs more than {limit} bytes of memory once decoded, the whole of queue.max_bytes: send smaller pushes"
    )]
    TooCostly { limit: u64 },
    /// The memory budget is spent for now.
    #[error(
        "sluice is at capacity ({entries} entries, {bytes} bytes in flight; queue.max_entries / queue.max_bytes): retry later"
    )]
    AtCapacity { entries: u64, bytes: u64 },
}

impl DecodeError {
    /// The HTTP status Loki answers with.
    pub fn status(&self) -> http::StatusCode {
        match self {
            Self::TooLarge { .. }
            | Self::TooManyEntries { .. }
            | Self::TooManyStreams { .. }
            | Self::TooCostly { .. } => http::StatusCode::PAYLOAD_TOO_LARGE,
            Self::AtCapacity { .. } => http::StatusCode::TOO_MANY_REQUESTS,
            _ => http::StatusCode::BAD_REQUEST,
        }
    }
}

/// True when the `Content-Type` header's media type is `application/json` (parameters such as
/// `charset` ignored, case-insensitive); every other body is protobuf, as in Loki.
pub fn is_json(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| {
        let media = ct.split(';').next().unwrap_or_default().trim();
        media.eq_ignore_ascii_case("application/json")
    })
}

/// Decodes a push body and validates it with `limits` at `now_ns`, without bounds on what it
/// decodes to beyond `max_decompressed` (see [`decode_push_metered`]).
pub fn decode_push(
    body: &[u8],
    format: BodyFormat<'_>,
    tenant: Arc<str>,
    limits: &Limits,
    max_decompressed: usize,
    now_ns: i64,
) -> Result<Decoded, DecodeError> {
    let bounds = Bounds { max_decompressed, push: PushLimits::NONE };
    decode_push_metered(body, format, tenant, limits, bounds, &mut Unmetered::default(), now_ns)
}

/// What one push may cost: its decompressed size, its counts, and (through a [`Meter`]) the
/// memory its decoded form takes.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub max_decompressed: usize,
    pub push: PushLimits,
}

/// Decodes and validates a push as [`decode_push`] does, charging every stream and entry to
/// `meter` before it is built and stopping at the first refusal or bound passed.
pub fn decode_push_metered(
    body: &[u8],
    format: BodyFormat<'_>,
    tenant: Arc<str>,
    limits: &Limits,
    bounds: Bounds,
    meter: &mut dyn Meter,
    now_ns: i64,
) -> Result<Decoded, DecodeError> {
    let max_decompressed = bounds.max_decompressed;
    let encoding = decompress::Encoding::parse(format.content_encoding)?;
    let json = is_json(format.content_type);
    // Protobuf is still snappy-compressed after the content encoding, and snappy can make data
    // slightly larger; the snappy length check then applies the limit itself.
    let bound = if json { max_decompressed } else { snappy_bound(max_decompressed) };
    let too_large = |e| match e {
        DecodeError::TooLarge { .. } => DecodeError::TooLarge { limit: max_decompressed },
        e => e,
    };
    let body = decompress::content_decode(body, encoding, bound).map_err(too_large)?;
    if body.len() > bound {
        return Err(DecodeError::TooLarge { limit: max_decompressed });
    }
    let mut validator = validate::Validator::new(limits, tenant, now_ns);
    let mut cost = cost::Cost::new(bounds.push, meter);
    if json {
        json::decode(&body, &mut validator, &mut cost)?;
    } else {
        let raw = decompress::unsnappy(&body, max_decompressed)?;
        drop(body);
        protobuf::decode(&raw, &mut validator, &mut cost)?;
    }
    cost.finish()?;
    Ok(validator.finish())
}

/// Largest snappy block that can hold `limit` bytes.
fn snappy_bound(limit: usize) -> usize {
    match snap::raw::max_compress_len(limit) {
        0 => usize::MAX,
        n => n,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use prost::Message as _;

    use super::decompress::tests::{gzip, raw_deflate as deflate, zlib};
    use super::*;
    use crate::proto::{EntryAdapter, PushRequest, StreamAdapter, Timestamp};

    const NOW: i64 = 1_700_000_000_000_000_000;
    const LIMIT: usize = 1 << 20;

    const JSON: &str = r#"{"streams":[{"stream":{"app":"api"},"values":[["1700000000000000000","hello"]]}]}"#;

    fn proto_body() -> Vec<u8> {
        let entry = EntryAdapter {
            timestamp: Some(Timestamp::from_nanos(NOW)),
            line: "hello".into(),
            structured_metadata: Vec::new(),
            parsed: Vec::new(),
        };
        let stream = StreamAdapter { labels: r#"{app="api"}"#.into(), entries: vec![entry], hash: 0 };
        PushRequest { streams: vec![stream] }.encode_to_vec()
    }

    fn snappy(data: &[u8]) -> Vec<u8> {
        snap::raw::Encoder::new().compress_vec(data).expect("compresses")
    }

    fn decode(body: &[u8], ct: Option<&str>, ce: Option<&str>, limit: usize) -> Result<Decoded, DecodeError> {
        let format = BodyFormat { content_type: ct, content_encoding: ce };
        decode_push(body, format, Arc::from("tenant"), &Limits::default(), limit, NOW)
    }

    fn assert_hello(d: Result<Decoded, DecodeError>, case: &str) {
        let d = d.unwrap_or_else(|e| panic!("{case}: {e}"));
        assert!(d.rejected.is_empty(), "{case}: {:?}", d.rejected);
        assert_eq!(&*d.batch.tenant, "tenant");
        assert_eq!(d.batch.streams.len(), 1, "{case}");
        assert_eq!(d.batch.streams[0].labels.get("app"), Some("api"), "{case}");
        assert_eq!(d.batch.streams[0].entries[0].line, "hello", "{case}");
        assert_eq!(d.batch.streams[0].entries[0].timestamp_ns, NOW, "{case}");
    }

    #[test]
    fn media_type_detection() {
        assert!(is_json(Some("application/json")));
        assert!(is_json(Some("Application/JSON; charset=utf-8")));
        assert!(is_json(Some(" application/json ;charset=UTF-8")));
        assert!(!is_json(None));
        assert!(!is_json(Some("application/x-protobuf")));
        assert!(!is_json(Some("text/plain")));
        assert!(!is_json(Some("application/jsonx")));
    }

    #[test]
    fn protobuf_in_every_encoding() {
        let raw = snappy(&proto_body());
        assert_hello(decode(&raw, None, None, LIMIT), "no headers");
        assert_hello(decode(&raw, Some("application/x-protobuf"), Some("snappy"), LIMIT), "snappy");
        assert_hello(decode(&raw, Some("text/plain"), None, LIMIT), "other content type");
        assert_hello(decode(&gzip(&raw), None, Some("gzip"), LIMIT), "gzip around snappy");
        assert_hello(decode(&deflate(&raw), None, Some("deflate"), LIMIT), "raw deflate around snappy");
        assert_hello(decode(&zlib(&raw), None, Some("deflate"), LIMIT), "zlib around snappy");
    }

    #[test]
    fn json_in_every_encoding() {
        let ct = Some("application/json; charset=utf-8");
        assert_hello(decode(JSON.as_bytes(), ct, None, LIMIT), "plain");
        assert_hello(decode(&gzip(JSON.as_bytes()), ct, Some("gzip"), LIMIT), "gzip");
        assert_hello(decode(&deflate(JSON.as_bytes()), ct, Some("deflate"), LIMIT), "deflate");
        assert_hello(decode(&zlib(JSON.as_bytes()), ct, Some("deflate"), LIMIT), "zlib");
        // As in Loki, snappy as Content-Encoding passes the body through, so snappied JSON fails.
        let err = decode(&snappy(JSON.as_bytes()), ct, Some("snappy"), LIMIT).expect_err("not JSON");
        assert!(matches!(err, DecodeError::Malformed(_)), "{err:?}");
    }

    #[test]
    fn protobuf_without_snappy_is_rejected() {
        let err = decode(&proto_body(), None, None, LIMIT).expect_err("raw protobuf is not accepted");
        assert!(
            matches!(err, DecodeError::Decompress { encoding: "snappy", .. } | DecodeError::Malformed(_)),
            "{err:?}"
        );
        assert_eq!(err.status(), http::StatusCode::BAD_REQUEST);
    }

    #[test]
    fn json_body_sent_as_protobuf_is_an_error() {
        assert!(decode(JSON.as_bytes(), Some("application/x-protobuf"), None, LIMIT).is_err());
    }

    #[test]
    fn unsupported_encoding_is_400() {
        let err = decode(JSON.as_bytes(), Some("application/json"), Some("br"), LIMIT).expect_err("br");
        assert!(matches!(&err, DecodeError::UnsupportedEncoding(e) if e == "br"), "{err:?}");
        assert_eq!(err.status(), http::StatusCode::BAD_REQUEST);
    }

    #[test]
    fn decompressed_size_limit_for_each_encoding() {
        let big_json = format!(
            r#"{{"streams":[{{"stream":{{"a":"1"}},"values":[["1700000000000000000","{}"]]}}]}}"#,
            "x".repeat(5000)
        );
        let json = Some("application/json");
        let n = big_json.len();
        for (name, body, ce) in [
            ("identity", big_json.as_bytes().to_vec(), None),
            ("gzip", gzip(big_json.as_bytes()), Some("gzip")),
            ("deflate", deflate(big_json.as_bytes()), Some("deflate")),
        ] {
            assert!(decode(&body, json, ce, n).is_ok(), "{name} at the limit");
            let err = decode(&body, json, ce, n - 1).expect_err(name);
            assert!(matches!(err, DecodeError::TooLarge { limit } if limit == n - 1), "{name}: {err:?}");
            assert_eq!(err.status(), http::StatusCode::PAYLOAD_TOO_LARGE);
        }
        // Protobuf: the snappy length counts, also inside gzip.
        let raw = proto_body();
        let snapped = snappy(&raw);
        assert!(decode(&snapped, None, None, raw.len()).is_ok());
        assert!(matches!(decode(&snapped, None, None, raw.len() - 1), Err(DecodeError::TooLarge { .. })));
        assert!(matches!(
            decode(&gzip(&snapped), None, Some("gzip"), raw.len() - 1),
            Err(DecodeError::TooLarge { .. })
        ));
        let too_big = vec![0u8; snap::raw::max_compress_len(100) + 1];
        assert!(matches!(decode(&too_big, None, None, 100), Err(DecodeError::TooLarge { limit: 100 })));
        // A snappy header declaring 4 GiB is refused up front.
        let lie = [0xff, 0xff, 0xff, 0xff, 0x0f, 0x00, 0x01, 0x02];
        assert!(matches!(decode(&lie, None, None, 100 << 20), Err(DecodeError::TooLarge { .. })));
    }

    #[test]
    fn partial_acceptance_keeps_valid_entries() {
        let body = r#"{"streams":[
            {"stream":{"app":"api"},"values":[["1700000000000000000","ok"],["1","ancient"],["1700000000000000001","ok2"]]},
            {"stream":{},"values":[["1700000000000000000","nolabels"]]}
        ]}"#;
        let d = decode(body.as_bytes(), Some("application/json"), None, LIMIT).expect("decodes");
        assert_eq!(d.batch.entry_count(), 2);
        let lines: Vec<_> = d.batch.streams[0].entries.iter().map(|e| e.line.as_str()).collect();
        assert_eq!(lines, ["ok", "ok2"]);
        let reasons: Vec<_> = d.rejected.iter().map(|r| r.reason).collect();
        assert_eq!(reasons, [Reason::GreaterThanMaxSampleAge, Reason::MissingLabels]);
        assert!(
            d.rejected[0].message.starts_with(r#"stream {app="api"}: 1 entry rejected"#),
            "{}",
            d.rejected[0].message
        );
    }

    /// A meter that refuses past `cap` bytes and records what it took.
    struct Capped {
        cap: u64,
        taken: u64,
    }

    impl Meter for Capped {
        fn take(&mut self, _entries: u64, bytes: u64) -> Result<(), DecodeError> {
            if self.taken + bytes > self.cap {
                return Err(DecodeError::AtCapacity { entries: 0, bytes: self.taken });
            }
            self.taken += bytes;
            Ok(())
        }
    }

    fn metered(
        body: &[u8],
        json: bool,
        push: PushLimits,
        meter: &mut dyn Meter,
    ) -> Result<Decoded, DecodeError> {
        let format = BodyFormat { content_type: json.then_some("application/json"), content_encoding: None };
        let bounds = Bounds { max_decompressed: 100 << 20, push };
        decode_push_metered(body, format, Arc::from("tenant"), &Limits::default(), bounds, meter, NOW)
    }

    /// One stream `{a="1"}` of `n` empty entries, written by hand: 2 bytes an entry on the wire.
    fn empty_entries(n: usize) -> Vec<u8> {
        let mut stream = vec![0x0a, 7];
        stream.extend_from_slice(br#"{a="1"}"#);
        for _ in 0..n {
            stream.extend_from_slice(&[0x12, 0x00]);
        }
        let mut push = vec![0x0a];
        prost::encoding::encode_varint(stream.len() as u64, &mut push);
        push.extend_from_slice(&stream);
        snappy(&push)
    }

    #[test]
    fn a_push_that_multiplies_in_memory_is_refused_before_it_is_built() {
        // 2 M empty entries: about 4 MB decompressed, gigabytes if decoded.
        let body = empty_entries(2_000_000);
        let limits = PushLimits { max_entries: 100_000, max_streams: 10 };
        let err = metered(&body, false, limits, &mut Unmetered::default()).expect_err("too many entries");
        assert!(matches!(err, DecodeError::TooManyEntries { limit: 100_000 }), "{err:?}");
        assert_eq!(err.status(), http::StatusCode::PAYLOAD_TOO_LARGE);
        assert!(err.to_string().contains("max_entries_per_push"), "{err}");

        // Without a count limit the meter refuses, having been asked for little more than it has.
        let mut meter = Capped { cap: 8 << 20, taken: 0 };
        let err = metered(&body, false, PushLimits::NONE, &mut meter).expect_err("over the budget");
        assert!(matches!(err, DecodeError::AtCapacity { .. }), "{err:?}");
        assert_eq!(err.status(), http::StatusCode::TOO_MANY_REQUESTS);
        assert!(meter.taken <= 8 << 20);
    }

    #[test]
    fn streams_and_entries_are_counted_in_json_too() {
        let entries: Vec<String> = (0..50).map(|i| format!(r#"["{}",""]"#, NOW + i)).collect();
        let body = format!(r#"{{"streams":[{{"stream":{{"a":"1"}},"values":[{}]}}]}}"#, entries.join(","));
        let limits = PushLimits { max_entries: 49, max_streams: 10 };
        let err = metered(body.as_bytes(), true, limits, &mut Unmetered::default()).expect_err("50 > 49");
        assert!(matches!(err, DecodeError::TooManyEntries { limit: 49 }), "{err:?}");
        let streams: Vec<String> =
            (0..11).map(|i| format!(r#"{{"stream":{{"a":"{i}"}},"values":[["{NOW}","x"]]}}"#)).collect();
        let body = format!(r#"{{"streams":[{}]}}"#, streams.join(","));
        let err = metered(body.as_bytes(), true, limits, &mut Unmetered::default()).expect_err("11 > 10");
        assert!(matches!(err, DecodeError::TooManyStreams { limit: 10 }), "{err:?}");
        let mut meter = Capped { cap: 1000, taken: 0 };
        let err = metered(body.as_bytes(), true, PushLimits::NONE, &mut meter).expect_err("over the meter");
        assert!(matches!(err, DecodeError::AtCapacity { .. }), "a refusal is not a syntax error: {err:?}");
    }

    #[test]
    fn what_is_charged_covers_what_is_held() {
        let entry = |i: i64, line: &str| EntryAdapter {
            timestamp: Some(Timestamp::from_nanos(NOW + i)),
            line: line.into(),
            structured_metadata: vec![crate::proto::LabelPairAdapter { name: "k".into(), value: "v".into() }],
            parsed: Vec::new(),
        };
        let streams = (0..20)
            .map(|s| StreamAdapter {
                labels: format!(r#"{{app="a{s}", pod="p"}}"#),
                entries: (0..50).map(|i| entry(i, &"x".repeat(i as usize * 7))).collect(),
                hash: 0,
            })
            .collect();
        let raw = PushRequest { streams }.encode_to_vec();
        let mut meter = Unmetered::default();
        let d = metered(&snappy(&raw), false, PushLimits::NONE, &mut meter).expect("decodes");
        assert_eq!(d.batch.entry_count(), 1000);
        assert!(meter.bytes >= d.batch.size() as u64, "charged {} < held {}", meter.bytes, d.batch.size());
        assert!(
            meter.bytes <= 150 * raw.len() as u64 + 4096,
            "charged {} for {} bytes",
            meter.bytes,
            raw.len()
        );
    }

    #[test]
    fn reason_names_are_lokis() {
        assert_eq!(Reason::GreaterThanMaxSampleAge.as_str(), "greater_than_max_sample_age");
        assert_eq!(Reason::StructuredMetadataTooMany.as_str(), "structured_metadata_too_many");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512),
                                       json in any::<bool>(),
                                       enc in prop_oneof![Just(None), Just(Some("gzip")), Just(Some("deflate")), Just(Some("snappy"))]) {
            let ct = json.then_some("application/json");
            let _ = decode(&body, ct, enc, 4096);
        }

        #[test]
        fn arbitrary_bytes_behind_valid_wrappers_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512),
                                                            json in any::<bool>()) {
            let ct = json.then_some("application/json");
            let _ = decode(&snappy(&body), ct, None, 4096);
            let _ = decode(&gzip(&body), ct, Some("gzip"), 4096);
            let _ = decode(&gzip(&snappy(&body)), ct, Some("gzip"), 4096);
            let _ = decode(&deflate(&body), ct, Some("deflate"), 4096);
        }

        #[test]
        fn json_shaped_input_never_panics(s in r#"[\[\]{}",:0-9a-z\\ \-+.]{0,200}"#) {
            let _ = decode(s.as_bytes(), Some("application/json"), None, 4096);
            let wrapped = format!(r#"{{"streams":[{{"stream":{{"a":"1"}},"values":[{s}]}}]}}"#);
            let _ = decode(wrapped.as_bytes(), Some("application/json"), None, 4096);
        }

        #[test]
        fn label_strings_never_panic(s in r#"[{}"'`=!~,a-z_0-9\\ xuU\n]{0,64}|\PC{0,32}"#) {
            let _ = parse_labels(&s);
            let stream = StreamAdapter { labels: s, entries: vec![EntryAdapter {
                timestamp: Some(Timestamp::from_nanos(NOW)), line: "l".into(),
                structured_metadata: Vec::new(), parsed: Vec::new() }], hash: 0 };
            let body = snappy(&PushRequest { streams: vec![stream] }.encode_to_vec());
            let d = decode(&body, None, None, 4096);
            prop_assert!(d.is_ok());
        }

        #[test]
        fn displayed_label_sets_parse_back(pairs in proptest::collection::vec(("[a-z_][a-z0-9_]{0,8}", "\\PC{1,12}"), 1..5)) {
            let set = crate::model::LabelSet::new(pairs);
            let again = parse_label_set(&set.to_string());
            prop_assert_eq!(again.as_ref().ok(), Some(&set), "{}", set);
        }
    }
}
