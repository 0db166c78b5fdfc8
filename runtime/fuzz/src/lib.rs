//! What the fuzz targets share: sluice's limits, the checks a decoded push must pass, the round
//! trips through sluice's own encoders, and content derived from fuzz bytes.
//!
//! Every check is an `assert!`: a failing property is a crash that libFuzzer saves.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use arbitrary::{Result, Unstructured};
use bytesize::ByteSize;
use sluice::config::{Limits, ServerConfig};
use sluice::decode::{self, BodyFormat, DecodeError, Decoded, is_valid_label_name};
use sluice::model::{Batch, Entry, LabelSet, Pair, Stream};
use sluice::sink::loki::encode::Encoder;

/// Prints what an input did when `SLUICE_FUZZ_TRACE` is set, to check that seeds reach the
/// code they are for: `SLUICE_FUZZ_TRACE=1 target/fuzz/<triple>/release/<target> -runs=0 <dir>`.
#[macro_export]
macro_rules! trace {
    ($($arg:tt)*) => {
        if $crate::tracing() {
            eprintln!($($arg)*);
        }
    };
}

#[doc(hidden)]
pub fn tracing() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("SLUICE_FUZZ_TRACE").is_some())
}

/// The fixed "now" every push is validated at.
pub const NOW_NS: i64 = 1_700_000_000_000_000_000;
pub const SEC: i64 = 1_000_000_000;
pub const TENANT: &str = "fuzz-tenant";

/// `server.max_decompressed_size` as sluice configures it by default (100 MiB).
pub fn max_decompressed() -> usize {
    usize::try_from(ServerConfig::default().max_decompressed_size.as_u64()).unwrap_or(usize::MAX)
}

/// The limits a push is validated against, chosen by the top three bits of a mode byte: half the
/// time sluice's defaults (`Limits::default()`, Loki's), otherwise small limits that short inputs
/// can cross (with and without truncation, with and without `reject_old_samples`), or every
/// optional limit off.
pub fn limits_for(mode: u8) -> Limits {
    let tight = |truncate: bool, reject_old: bool| Limits {
        max_label_names_per_series: 3,
        max_label_name_length: 10,
        max_label_value_length: 12,
        max_line_size: ByteSize::b(16),
        max_line_size_truncate: truncate,
        reject_old_samples: reject_old,
        reject_old_samples_max_age: Duration::from_secs(3600),
        creation_grace_period: Duration::from_secs(1),
        max_structured_metadata_size: ByteSize::b(24),
        max_structured_metadata_entries_count: 2,
        ..Limits::default()
    };
    match mode >> 5 {
        0..=3 => Limits::default(),
        4 => tight(true, true),
        5 => tight(false, false),
        6 => tight(true, false),
        _ => Limits {
            max_line_size: ByteSize::b(0),
            max_line_size_truncate: true,
            reject_old_samples: false,
            creation_grace_period: Duration::from_secs(u64::MAX),
            max_structured_metadata_size: ByteSize::b(0),
            max_structured_metadata_entries_count: 0,
            ..Limits::default()
        },
    }
}

/// Most bytes of memory a decoder may charge per byte of the decompressed push (an empty
/// protobuf entry, 2 bytes on the wire, is charged the most), beyond [`CHARGE_SLACK`].
pub const CHARGE_PER_BYTE: u64 = 160;
pub const CHARGE_SLACK: u64 = 4096;

/// `decode_push_metered` with the fuzz tenant, the default decompressed-size limit and
/// [`NOW_NS`], checking the memory bound: what decoding charged covers what the decoded batch
/// holds, and is at most [`CHARGE_PER_BYTE`] per byte of the inflated body.
pub fn decode(
    body: &[u8],
    content_type: Option<&str>,
    content_encoding: Option<&str>,
    limits: &Limits,
) -> std::result::Result<Decoded, DecodeError> {
    let format = BodyFormat { content_type, content_encoding };
    let bounds = decode::Bounds { max_decompressed: max_decompressed(), push: decode::PushLimits::NONE };
    let mut meter = decode::Unmetered::default();
    let result =
        decode::decode_push_metered(body, format, Arc::from(TENANT), limits, bounds, &mut meter, NOW_NS);
    if let Ok(d) = &result {
        let held = d.batch.size() as u64;
        assert!(meter.bytes >= held, "decoding charged {} bytes, but the batch holds {held}", meter.bytes);
        let inflated = inflated_len(body, decode::is_json(content_type), content_encoding);
        assert!(
            meter.bytes <= CHARGE_PER_BYTE * inflated + CHARGE_SLACK,
            "decoding charged {} bytes for {inflated} inflated bytes",
            meter.bytes
        );
    }
    result
}

/// Bytes of `body` once its content encoding (and, for protobuf, snappy) is undone; only called
/// for bodies sluice decoded, so every step succeeds.
fn inflated_len(body: &[u8], json: bool, content_encoding: Option<&str>) -> u64 {
    use std::io::Read as _;
    let mut inflated = Vec::new();
    let content = match content_encoding.map(|e| e.trim().to_ascii_lowercase()).as_deref() {
        Some("gzip") => {
            let _ = flate2::read::GzDecoder::new(body).read_to_end(&mut inflated);
            &inflated[..]
        }
        Some("deflate") => {
            if flate2::read::ZlibDecoder::new(body).read_to_end(&mut inflated).is_err() {
                inflated.clear();
                let _ = flate2::read::DeflateDecoder::new(body).read_to_end(&mut inflated);
            }
            &inflated[..]
        }
        _ => body,
    };
    if json {
        content.len() as u64
    } else {
        snap::raw::decompress_len(content).map_or(content.len(), |n| n) as u64
    }
}

fn bytes_limit(b: ByteSize) -> usize {
    usize::try_from(b.as_u64()).unwrap_or(usize::MAX)
}

fn duration_ns(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// Everything a successfully decoded push promises about the entries it kept.
pub fn check_decoded(d: &Decoded, limits: &Limits) {
    trace!(
        "decoded: {} streams, {} entries kept, {} rejections {:?}, {} truncated",
        d.batch.streams.len(),
        d.batch.entry_count(),
        d.rejected.len(),
        d.rejected.iter().map(|r| r.reason.as_str()).collect::<Vec<_>>(),
        d.truncated_lines
    );
    assert_eq!(&*d.batch.tenant, TENANT);
    if !limits.max_line_size_truncate {
        assert_eq!(d.truncated_lines, 0, "lines truncated with max_line_size_truncate off");
    }
    assert!(d.truncated_lines <= d.batch.entry_count(), "more truncated lines than entries");
    for r in &d.rejected {
        assert!(r.entries > 0, "a rejection of no entries: {r:?}");
        assert!(r.message.contains(r.reason.as_str()), "message lacks the reason: {r:?}");
    }
    for stream in &d.batch.streams {
        assert!(!stream.entries.is_empty(), "a stream without entries was kept: {:?}", stream.labels);
        check_stream_labels(&stream.labels, limits);
        for entry in &stream.entries {
            check_entry(entry, limits);
        }
    }
}

/// A kept stream's labels: valid, unique, sorted, non-empty values, within the limits.
fn check_stream_labels(labels: &LabelSet, limits: &Limits) {
    let pairs = labels.pairs();
    assert!(!pairs.is_empty(), "a stream without labels was kept");
    for (name, value) in pairs {
        assert!(is_valid_label_name(name), "invalid label name kept: {name:?}");
        assert!(!value.is_empty(), "empty label value kept for {name:?}");
        assert!(name.len() <= limits.max_label_name_length, "label name too long: {name:?}");
        assert!(value.len() <= limits.max_label_value_length, "label value too long: {value:?}");
    }
    assert!(pairs.windows(2).all(|w| w[0].0 < w[1].0), "labels unsorted or repeated: {labels:?}");
    let counted = pairs.len() - usize::from(labels.get("service_name").is_some());
    assert!(counted <= limits.max_label_names_per_series, "too many labels: {labels:?}");
    let rebuilt = LabelSet::new(pairs.to_vec());
    assert_eq!(rebuilt.fingerprint(), labels.fingerprint(), "stale fingerprint");
}

fn check_entry(entry: &Entry, limits: &Limits) {
    let ts = entry.timestamp_ns;
    if limits.reject_old_samples {
        let oldest = NOW_NS.checked_sub(duration_ns(limits.reject_old_samples_max_age)).unwrap_or(i64::MIN);
        assert!(ts >= oldest, "entry older than reject_old_samples_max_age kept: {ts}");
    }
    let newest = NOW_NS.checked_add(duration_ns(limits.creation_grace_period)).unwrap_or(i64::MAX);
    assert!(ts <= newest, "entry too far in the future kept: {ts}");
    let max_line = bytes_limit(limits.max_line_size);
    if max_line != 0 {
        assert!(entry.line.len() <= max_line, "line of {} bytes kept over {max_line}", entry.line.len());
    }
    if !entry.metadata.is_empty() {
        let max_size = bytes_limit(limits.max_structured_metadata_size);
        if max_size != 0 {
            assert!(entry.metadata_size() <= max_size, "structured metadata too large kept");
        }
        let max_count = limits.max_structured_metadata_entries_count;
        if max_count != 0 {
            assert!(entry.metadata.len() <= max_count, "too many structured metadata pairs kept");
        }
    }
}

/// Every entry of the push is either kept or counted in a rejection.
pub fn check_counts(d: &Decoded, total_entries: usize) {
    let rejected: usize = d.rejected.iter().map(|r| r.entries).sum();
    assert_eq!(
        d.batch.entry_count() + rejected,
        total_entries,
        "kept {} + rejected {rejected} entries of {total_entries}",
        d.batch.entry_count()
    );
}

/// The decoded batch, sent on as the Loki sink encodes it (protobuf + snappy) and as Loki's JSON,
/// decodes again to the same batch with nothing rejected or truncated.
pub fn check_round_trips(d: &Decoded, limits: &Limits) {
    let body = Encoder::new().encode(&d.batch.streams).expect("the Loki encoder takes a decoded batch");
    let again = decode(&body, Some("application/x-protobuf"), None, limits)
        .unwrap_or_else(|e| panic!("the Loki encoder's body does not decode: {e}"));
    assert_same(&again, &d.batch, "Loki protobuf");

    let json = to_json(&d.batch.streams);
    let again = decode(json.as_bytes(), Some("application/json"), None, limits)
        .unwrap_or_else(|e| panic!("the batch as JSON does not decode: {e}\n{json}"));
    assert_same(&again, &d.batch, "JSON");
}

fn assert_same(again: &Decoded, batch: &Batch, how: &str) {
    assert!(again.rejected.is_empty(), "{how} round trip rejected entries: {:?}", again.rejected);
    assert_eq!(again.truncated_lines, 0, "{how} round trip truncated lines");
    assert_eq!(again.batch, *batch, "{how} round trip changed the batch");
}

/// A JSON string literal.
pub fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("a str serializes")
}

fn json_pairs(out: &mut String, pairs: &[Pair]) {
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{}:{}", json_str(name), json_str(value));
    }
}

/// Streams as a Loki JSON push body; repeated metadata names are written as repeated keys.
pub fn to_json(streams: &[Stream]) -> String {
    let mut out = String::from(r#"{"streams":["#);
    for (i, stream) in streams.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(r#"{"stream":{"#);
        json_pairs(&mut out, stream.labels.pairs());
        out.push_str(r#"},"values":["#);
        for (j, entry) in stream.entries.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            let _ = write!(out, "[\"{}\",{}", entry.timestamp_ns, json_str(&entry.line));
            if !entry.metadata.is_empty() {
                out.push_str(",{");
                json_pairs(&mut out, &entry.metadata);
                out.push('}');
            }
            out.push(']');
        }
        out.push_str("]}");
    }
    out.push_str("]}");
    out
}

/// Un-does `Content-Encoding` the way sluice documents it (gzip; deflate raw or zlib-wrapped;
/// identity for none or `snappy`), for bodies sluice already accepted.
pub fn content_decode(body: &[u8], encoding: Option<&str>) -> Vec<u8> {
    use std::io::Read as _;
    let mut out = Vec::new();
    match encoding.map(str::trim).map(str::to_ascii_lowercase).as_deref() {
        None | Some("" | "snappy") => out.extend_from_slice(body),
        Some("gzip") => {
            flate2::read::GzDecoder::new(body).read_to_end(&mut out).expect("sluice inflated this gzip body");
        }
        Some("deflate") => {
            let zlib = matches!(body, [cmf, flg, ..]
                if cmf & 0x0f == 8 && cmf >> 4 <= 7 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0);
            if !zlib || flate2::read::ZlibDecoder::new(body).read_to_end(&mut out).is_err() {
                out.clear();
                flate2::read::DeflateDecoder::new(body)
                    .read_to_end(&mut out)
                    .expect("sluice inflated this deflate body");
            }
        }
        Some(other) => panic!("sluice accepted Content-Encoding {other:?}"),
    }
    out
}

/// `data` compressed with gzip, raw deflate or zlib (`how` 0, 1, 2).
pub fn compress(data: &[u8], how: u8) -> Vec<u8> {
    use std::io::Write as _;
    let level = flate2::Compression::fast();
    let out = match how {
        0 => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), level);
            e.write_all(data).and_then(|()| e.finish())
        }
        1 => {
            let mut e = flate2::write::DeflateEncoder::new(Vec::new(), level);
            e.write_all(data).and_then(|()| e.finish())
        }
        _ => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), level);
            e.write_all(data).and_then(|()| e.finish())
        }
    };
    out.expect("compressing in memory")
}

// Content derived from fuzz bytes: dictionaries of the interesting cases, or arbitrary text.

const NAMES: &[&str] = &["app", "env", "level", "service_name", "__name__", "_", "A9_z", "job"];
const ODD_NAMES: &[&str] = &["a_label_name_longer_than_ten", "a.b", "9lives", "", "é", "with space"];
const VALUES: &[&str] = &[
    "api",
    "prod",
    "",
    "say \"hi\"",
    "back\\slash",
    "new\nline",
    "tab\tand\rcr",
    "ünïcödé",
    "}{,=",
    "'`#",
    "a value longer than twelve bytes",
];
const LINES: &[&str] = &[
    "hello",
    "",
    "sixteen bytes ok",
    "seventeen bytes!!",
    "level=warn msg=\"disk almost full\" used=93%",
    "ünïcödé at the cut: ééééééé",
    "{\"json\":\"line\",\"n\":1}",
];

/// Short text: from `dict`, or arbitrary UTF-8 of at most `max` bytes.
pub fn text(u: &mut Unstructured<'_>, dict: &[&str], max: usize) -> Result<String> {
    if u.ratio(3u8, 4)? {
        return Ok((*u.choose(dict)?).to_owned());
    }
    let s: &str = u.arbitrary()?;
    Ok(s.get(..s.floor_char_boundary(max)).unwrap_or_default().to_owned())
}

/// A label name: mostly valid, sometimes too long or invalid.
pub fn label_name(u: &mut Unstructured<'_>) -> Result<String> {
    if u.ratio(1u8, 6)? { text(u, ODD_NAMES, 40) } else { Ok((*u.choose(NAMES)?).to_owned()) }
}

pub fn label_value(u: &mut Unstructured<'_>) -> Result<String> {
    text(u, VALUES, 40)
}

pub fn line(u: &mut Unstructured<'_>) -> Result<String> {
    text(u, LINES, 300)
}

/// A timestamp near the edges of the default and the tight limits, of i64, or arbitrary.
pub fn timestamp(u: &mut Unstructured<'_>) -> Result<i64> {
    const WEEK: i64 = 7 * 24 * 3600 * SEC;
    let edges = [
        NOW_NS,
        NOW_NS - SEC,
        NOW_NS - WEEK,
        NOW_NS - WEEK - 1,
        NOW_NS - 3600 * SEC - 1,
        NOW_NS + SEC,
        NOW_NS + SEC + 1,
        NOW_NS + 600 * SEC,
        NOW_NS + 600 * SEC + 1,
        0,
        -1,
        i64::MIN,
        i64::MIN + 1,
        i64::MIN + 999_999_999,
        i64::MAX,
        i64::MAX - 1,
    ];
    Ok(match u.int_in_range(0u8..=3)? {
        0 | 1 => *u.choose(&edges)?,
        2 => NOW_NS.saturating_add(i64::from(u.arbitrary::<i32>()?) * 1000),
        _ => u.arbitrary()?,
    })
}

/// Up to `max` pairs of names and values from the dictionaries or arbitrary.
pub fn pairs(u: &mut Unstructured<'_>, max: usize) -> Result<Vec<Pair>> {
    let n = u.int_in_range(0..=max)?;
    (0..n).map(|_| Ok((label_name(u)?, label_value(u)?))).collect()
}

/// An entry with arbitrary fields.
pub fn entry(u: &mut Unstructured<'_>) -> Result<Entry> {
    Ok(Entry { timestamp_ns: timestamp(u)?, line: line(u)?, metadata: pairs(u, 3)? })
}

/// Valid, unique label names, sorted: what a batch carries after decoding.
pub fn valid_labels(u: &mut Unstructured<'_>) -> Result<LabelSet> {
    let mut pairs: Vec<Pair> = Vec::new();
    for _ in 0..u.int_in_range(1..=3)? {
        let name = *u.choose(&["app", "env", "level", "job", "service_name"])?;
        let value = *u.choose(&["a", "b", "api", "ünï", "x y"])?;
        if !pairs.iter().any(|(n, _)| n == name) {
            pairs.push((name.to_owned(), value.to_owned()));
        }
    }
    Ok(LabelSet::new(pairs))
}
