//! The archive's record: one JSON object per entry and line (NDJSON), the contract that jq,
//! DuckDB, Athena and `sluice replay` read:
//!
//! ```json
//! {"tenant":"team-a","ts":"1709251199123456789","time":"2024-02-29T23:59:59.123456789Z",
//!  "labels":{"app":"api"},"structured_metadata":{"trace_id":"t1"},"line":"GET /health 200"}
//! ```
//!
//! `ts` is nanoseconds since the epoch as a string, because JSON readers lose integers past
//! 2^53; `time` is the same instant in RFC 3339 (UTC), for people and for tools that filter on
//! it. `labels` and `structured_metadata` are objects of strings (keys sorted), empty when there
//! are none. The reader ([`parse`]) is lenient in what it accepts: it also reads logcli's
//! `--output=jsonl` lines (`timestamp` with any offset, no `ts`) and records without `tenant`.

use std::io::Write;

use serde_json::{Map, Value};

use crate::model::{Entry, LabelSet, Pair};

/// Serializes the `labels` object of a stream once, to be reused for each of its entries.
pub fn labels_json(labels: &LabelSet) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 * labels.len() + 2);
    write_object(&mut out, labels.pairs());
    out
}

/// Appends one record (and its newline) to `out`; `labels` is [`labels_json`] of the stream.
pub fn write(out: &mut Vec<u8>, tenant: &str, labels: &[u8], entry: &Entry) {
    out.extend_from_slice(b"{\"tenant\":");
    write_str(out, tenant);
    let _ = write!(
        out,
        ",\"ts\":\"{}\",\"time\":\"{}\",\"labels\":",
        entry.timestamp_ns,
        rfc3339(entry.timestamp_ns)
    );
    out.extend_from_slice(labels);
    out.extend_from_slice(b",\"structured_metadata\":");
    if entry.metadata.is_empty() {
        out.extend_from_slice(b"{}");
    } else {
        write_object(out, sorted_metadata(&entry.metadata));
    }
    out.extend_from_slice(b",\"line\":");
    write_str(out, &entry.line);
    out.extend_from_slice(b"}\n");
}

/// Structured metadata as archived: sorted by name like labels; a name given twice keeps its
/// last value, as a JSON reader would.
pub fn sorted_metadata(metadata: &[Pair]) -> Vec<&Pair> {
    let mut sorted: Vec<&Pair> = metadata.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    sorted.dedup_by(|later, earlier| {
        let same = later.0 == earlier.0;
        if same {
            std::mem::swap(later, earlier);
        }
        same
    });
    sorted
}

fn write_object<'a>(out: &mut Vec<u8>, pairs: impl IntoIterator<Item = &'a Pair>) {
    out.push(b'{');
    for (i, (name, value)) in pairs.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, name);
        out.push(b':');
        write_str(out, value);
    }
    out.push(b'}');
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    // Writing a str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// RFC 3339 with nanoseconds, UTC (`1970-01-01T00:00:00.000000000Z` for times before 1970).
pub fn rfc3339(ns: i64) -> String {
    let t = if ns >= 0 {
        std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns as u64)
    } else {
        std::time::UNIX_EPOCH
    };
    humantime::format_rfc3339_nanos(t).to_string()
}

/// One record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The tenant it was archived under; `None` for logcli exports and hand-written records.
    pub tenant: Option<String>,
    /// Stream labels, as they were (not sorted or checked: the caller decides).
    pub labels: Vec<Pair>,
    pub entry: Entry,
}

/// Parses one line: `Ok(None)` when it is not a record (not a JSON object with a string
/// `line`); an error names the field that is wrong.
pub fn parse(raw: &str) -> Result<Option<Record>, String> {
    if !raw.trim_start().starts_with('{') {
        return Ok(None);
    }
    let Ok(Value::Object(object)) = serde_json::from_str::<Value>(raw) else { return Ok(None) };
    let Some(line) = object.get("line") else { return Ok(None) };
    let line = line.as_str().ok_or("`line` must be a string")?.to_string();
    let timestamp_ns = timestamp(&object)?;
    let tenant = match object.get("tenant") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) => Some(t.clone()),
        Some(other) => return Err(format!("`tenant` must be a string, got {other}")),
    };
    let labels = pairs(&object, "labels")?;
    let metadata = pairs(&object, "structured_metadata")?;
    Ok(Some(Record { tenant, labels, entry: Entry { timestamp_ns, line, metadata } }))
}

/// `ts` (nanoseconds, a string or an integer), else `time` or logcli's `timestamp` (RFC 3339
/// with any offset); one of them is required.
fn timestamp(object: &Map<String, Value>) -> Result<i64, String> {
    match object.get("ts") {
        Some(Value::String(s)) => return s.parse().map_err(|_| format!("`ts` is not nanoseconds: {s:?}")),
        Some(Value::Number(n)) => return n.as_i64().ok_or_else(|| format!("`ts` is not nanoseconds: {n}")),
        Some(other) => return Err(format!("`ts` must be a string of nanoseconds, got {other}")),
        None => {}
    }
    let (key, time) = match (object.get("time"), object.get("timestamp")) {
        (Some(t), _) => ("time", t),
        (None, Some(t)) => ("timestamp", t),
        (None, None) => return Err("a record needs `ts`, `time` or `timestamp`".into()),
    };
    let time = time.as_str().ok_or_else(|| format!("`{key}` must be an RFC 3339 string"))?;
    parse_rfc3339(time).map_err(|e| format!("`{key}` {time:?}: {e}"))
}

/// Nanoseconds since the epoch of an RFC 3339 time with any offset (`Z`, `+01:00`).
pub fn parse_rfc3339(time: &str) -> Result<i64, String> {
    let t = chrono::DateTime::parse_from_rfc3339(time).map_err(|e| e.to_string())?;
    t.timestamp_nanos_opt().ok_or_else(|| "out of range".to_string())
}

/// An optional object of strings.
fn pairs(object: &Map<String, Value>, key: &str) -> Result<Vec<Pair>, String> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                other => Err(format!("`{key}.{k}` must be a string, got {other}")),
            })
            .collect(),
        Some(other) => Err(format!("`{key}` must be an object of strings, got {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(line: &str, metadata: &[(&str, &str)]) -> Entry {
        Entry {
            timestamp_ns: 1_709_251_199_123_456_789,
            line: line.into(),
            metadata: metadata.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
        }
    }

    #[test]
    fn writes_the_documented_shape_and_reads_it_back() {
        let labels = LabelSet::new(vec![("job".into(), "x".into()), ("app".into(), "a\"pi".into())]);
        let e = entry("GET / \"q\"\n\u{1}é", &[("trace_id", "t1"), ("pod", "p")]);
        let mut out = Vec::new();
        write(&mut out, "team-a", &labels_json(&labels), &e);
        let text = String::from_utf8(out).expect("utf-8");
        assert_eq!(
            text,
            "{\"tenant\":\"team-a\",\"ts\":\"1709251199123456789\",\"time\":\"2024-02-29T23:59:59.123456789Z\",\
             \"labels\":{\"app\":\"a\\\"pi\",\"job\":\"x\"},\"structured_metadata\":{\"pod\":\"p\",\"trace_id\":\"t1\"},\
             \"line\":\"GET / \\\"q\\\"\\n\\u0001é\"}\n"
        );
        let back = parse(text.trim_end()).expect("parses").expect("a record");
        assert_eq!(back.tenant.as_deref(), Some("team-a"));
        assert_eq!(LabelSet::new(back.labels), labels);
        let mut metadata = e.metadata.clone();
        metadata.sort();
        assert_eq!(back.entry, Entry { metadata, ..e });
    }

    #[test]
    fn a_repeated_metadata_name_keeps_its_last_value_like_a_json_reader() {
        let mut out = Vec::new();
        write(&mut out, "t", b"{}", &entry("l", &[("a", "1"), ("b", "2"), ("a", "3")]));
        let text = String::from_utf8(out).expect("utf-8");
        assert!(text.contains("\"structured_metadata\":{\"a\":\"3\",\"b\":\"2\"}"), "{text}");
    }

    #[test]
    fn reads_logcli_jsonl_with_an_offset() {
        let line = r#"{"labels":{"app":"api"},"line":"hello","timestamp":"2024-03-01T00:59:59.5+01:00"}"#;
        let r = parse(line).expect("parses").expect("a record");
        assert_eq!(r.tenant, None);
        assert_eq!(r.entry.timestamp_ns, 1_709_251_199_500_000_000);
        assert_eq!(r.labels, vec![("app".to_string(), "api".to_string())]);
    }

    #[test]
    fn plain_text_is_not_a_record_and_broken_fields_are_named() {
        assert_eq!(parse("just text"), Ok(None));
        assert_eq!(parse(r#"{"msg":"a JSON log line"}"#), Ok(None));
        for (raw, message) in [
            (r#"{"ts":"x","line":"l"}"#, "`ts` is not nanoseconds"),
            (r#"{"line":"l"}"#, "a record needs `ts`, `time` or `timestamp`"),
            (r#"{"ts":"1","labels":{"a":1},"line":"l"}"#, "`labels.a` must be a string"),
            (r#"{"ts":"1","tenant":3,"line":"l"}"#, "`tenant` must be a string"),
            (r#"{"timestamp":"yesterday","line":"l"}"#, "`timestamp` \"yesterday\""),
            (r#"{"ts":"1","line":3}"#, "`line` must be a string"),
        ] {
            let e = parse(raw).expect_err(raw);
            assert!(e.contains(message), "{raw}: {e}");
        }
    }
}
