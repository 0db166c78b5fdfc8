//! The input of `sluice plugin test`: a Loki JSON push body (`{"streams":[…]}`, recognised by
//! its content and decoded exactly as a push would be, without the age limits) or NDJSON lines,
//! each an object in the archive's record shape (`ts`, `time`, `labels`,
//! `structured_metadata`, `line`) or a line of plain text, which becomes an entry of
//! `{source="plugin-test"}` at the current time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::archive;
use crate::config::Limits;
use crate::decode::{self, BodyFormat};
use crate::model::{Batch, Entry, LabelSet, Stream};

/// The labels of plain-text lines.
pub const PLAIN_TEXT_LABELS: (&str, &str) = ("source", "plugin-test");

/// What was read, as one batch of the tenant, and what was left out.
#[derive(Debug)]
pub struct Input {
    pub batch: Batch,
    /// `push` or `ndjson`, for messages.
    pub kind: &'static str,
    /// Entries a push body's validation rejected, with Loki's message.
    pub rejected: Vec<String>,
}

/// Reads `bytes` as a push body or NDJSON; `now_ns` stamps plain-text lines (one nanosecond
/// apart, so they keep their order).
pub fn parse(bytes: &[u8], tenant: &str, now_ns: i64) -> Result<Input, String> {
    let tenant: Arc<str> = Arc::from(tenant);
    if is_push_body(bytes) {
        let limits = Limits {
            // Test input is often old (an archive) or made up: no age limits.
            reject_old_samples: false,
            creation_grace_period: Duration::from_secs(100 * 365 * 24 * 3600),
            ..Limits::default()
        };
        let format = BodyFormat { content_type: Some("application/json"), content_encoding: None };
        let decoded = decode::decode_push(bytes, format, tenant, &limits, usize::MAX, now_ns)
            .map_err(|e| format!("not a valid Loki JSON push body: {e}"))?;
        let rejected = decoded.rejected.into_iter().map(|r| r.message).collect();
        return Ok(Input { batch: decoded.batch, kind: "push", rejected });
    }
    let text = std::str::from_utf8(bytes).map_err(|e| format!("the input is not UTF-8: {e}"))?;
    let mut streams: Vec<Stream> = Vec::new();
    let mut index: HashMap<LabelSet, usize> = HashMap::new();
    let mut plain = 0i64;
    for (n, raw) in text.lines().enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        let (labels, entry) = match record(raw).map_err(|e| format!("input line {}: {e}", n + 1))? {
            Some(parsed) => parsed,
            None => {
                let entry = Entry {
                    timestamp_ns: now_ns.saturating_add(plain),
                    line: raw.to_string(),
                    metadata: Vec::new(),
                };
                plain += 1;
                let (name, value) = PLAIN_TEXT_LABELS;
                (LabelSet::new(vec![(name.into(), value.into())]), entry)
            }
        };
        let i = *index.entry(labels.clone()).or_insert_with(|| {
            streams.push(Stream { labels, entries: Vec::new() });
            streams.len() - 1
        });
        streams[i].entries.push(entry);
    }
    Ok(Input { batch: Batch { tenant, streams }, kind: "ndjson", rejected: Vec::new() })
}

/// A JSON object with a `streams` key: a push body, even spread over several lines.
fn is_push_body(bytes: &[u8]) -> bool {
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace());
    if start.is_none_or(|i| bytes[i] != b'{') {
        return false;
    }
    matches!(serde_json::from_slice::<Value>(bytes), Ok(Value::Object(m)) if m.contains_key("streams"))
}

/// An archive-shaped record (a JSON object with a string `line`), or `None` for plain text —
/// including JSON log lines, which have no `line` key.
fn record(raw: &str) -> Result<Option<(LabelSet, Entry)>, String> {
    let Some(record) = archive::record::parse(raw)? else { return Ok(None) };
    let mut labels = record.labels;
    if labels.is_empty() {
        let (name, value) = PLAIN_TEXT_LABELS;
        labels.push((name.into(), value.into()));
    }
    if let Some((name, _)) = labels.iter().find(|(n, _)| !decode::is_valid_label_name(n)) {
        return Err(format!("label name `{name}` is not valid ([a-zA-Z_][a-zA-Z0-9_]*)"));
    }
    Ok(Some((LabelSet::new(labels), record.entry)))
}

/// `batch` cut into batches of at most `max` entries, in order; streams are split where a cut
/// falls inside them.
pub fn split(batch: Batch, max: usize) -> Vec<Batch> {
    let max = max.max(1);
    let mut out = Vec::new();
    let mut current = Batch::new(Arc::clone(&batch.tenant));
    let mut count = 0;
    for stream in batch.streams {
        let mut entries = stream.entries.into_iter().peekable();
        while entries.peek().is_some() {
            let part: Vec<Entry> = entries.by_ref().take(max - count).collect();
            count += part.len();
            current.streams.push(Stream { labels: stream.labels.clone(), entries: part });
            if count == max {
                out.push(std::mem::replace(&mut current, Batch::new(Arc::clone(&batch.tenant))));
                count = 0;
            }
        }
    }
    if count > 0 {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000_000_000;

    fn lines(b: &Batch) -> Vec<(String, Vec<&str>)> {
        b.streams
            .iter()
            .map(|s| (s.labels.to_string(), s.entries.iter().map(|e| e.line.as_str()).collect()))
            .collect()
    }

    #[test]
    fn a_push_body_is_decoded_as_a_push_even_when_old_or_pretty_printed() {
        let body = r#"
        {"streams": [
          {"stream": {"app": "api"}, "values": [["1000", "old line", {"trace_id": "t1"}], ["2000", "second"]]},
          {"stream": {"app": "db"}, "values": [["3000", "db line"]]},
          {"stream": {"bad-name": "x"}, "values": [["4000", "rejected"]]}
        ]}"#;
        let input = parse(body.as_bytes(), "team-a", NOW).expect("parses");
        assert_eq!(input.kind, "push");
        assert_eq!(&*input.batch.tenant, "team-a");
        assert_eq!(
            lines(&input.batch),
            [
                ("{app=\"api\"}".to_string(), vec!["old line", "second"]),
                ("{app=\"db\"}".to_string(), vec!["db line"])
            ]
        );
        let first = &input.batch.streams[0].entries[0];
        assert_eq!(
            (first.timestamp_ns, first.metadata.clone()),
            (1000, vec![("trace_id".into(), "t1".into())])
        );
        assert_eq!(input.rejected.len(), 1, "{:?}", input.rejected);
        assert!(input.rejected[0].contains("bad-name"), "{:?}", input.rejected);
    }

    #[test]
    fn a_broken_push_body_names_the_problem() {
        let e = parse(br#"{"streams": [{"stream": {"app": "a"}, "values": [[1, "x"]]}]}"#, "t", NOW)
            .expect_err("malformed");
        assert!(e.contains("streams[0].values[0][0]"), "{e}");
    }

    #[test]
    fn ndjson_mixes_archive_records_and_plain_text_grouped_by_stream() {
        let text = concat!(
            r#"{"ts":"1709251199123456789","time":"2024-02-29T23:59:59.123456789Z","labels":{"app":"api"},"structured_metadata":{"trace_id":"t1"},"line":"from the archive"}"#,
            "\n",
            "plain text line\n",
            "\n",
            r#"{"level":"info","msg":"a JSON log line is plain text"}"#,
            "\n",
            r#"{"time":"2024-02-29T23:59:59Z","labels":{"app":"api"},"line":"time only"}"#,
            "\n",
            r#"{"ts":5,"line":"no labels"}"#,
            "\n",
        );
        let input = parse(text.as_bytes(), "fake", NOW).expect("parses");
        assert_eq!(input.kind, "ndjson");
        assert_eq!(
            lines(&input.batch),
            [
                ("{app=\"api\"}".to_string(), vec!["from the archive", "time only"]),
                (
                    "{source=\"plugin-test\"}".to_string(),
                    vec![
                        "plain text line",
                        r#"{"level":"info","msg":"a JSON log line is plain text"}"#,
                        "no labels"
                    ]
                ),
            ]
        );
        let api = &input.batch.streams[0].entries;
        assert_eq!(api[0].timestamp_ns, 1_709_251_199_123_456_789);
        assert_eq!(api[0].metadata, vec![("trace_id".to_string(), "t1".to_string())]);
        assert_eq!(api[1].timestamp_ns, 1_709_251_199_000_000_000);
        let plain = &input.batch.streams[1].entries;
        assert_eq!((plain[0].timestamp_ns, plain[1].timestamp_ns, plain[2].timestamp_ns), (NOW, NOW + 1, 5));
    }

    #[test]
    fn a_broken_record_names_its_line() {
        for (text, expected) in [
            ("ok\n{\"ts\":\"x\",\"line\":\"l\"}\n", "input line 2: `ts` is not nanoseconds"),
            ("{\"line\":\"l\"}", "input line 1: a record needs `ts`, `time` or `timestamp`"),
            ("{\"ts\":\"1\",\"labels\":{\"a\":1},\"line\":\"l\"}", "`labels.a` must be a string"),
            ("{\"ts\":\"1\",\"labels\":{\"a-b\":\"x\"},\"line\":\"l\"}", "label name `a-b` is not valid"),
            ("{\"ts\":\"1\",\"line\":3}", "`line` must be a string"),
        ] {
            let e = parse(text.as_bytes(), "t", NOW).expect_err(text);
            assert!(e.contains(expected), "{text}: {e}");
        }
    }

    #[test]
    fn split_cuts_batches_at_the_size_keeping_order_and_streams() {
        let text = "a\nb\nc\n{\"ts\":\"1\",\"labels\":{\"app\":\"x\"},\"line\":\"d\"}\ne\n";
        let batch = parse(text.as_bytes(), "t", NOW).expect("parses").batch;
        let parts = split(batch.clone(), 2);
        let shapes: Vec<_> = parts.iter().map(lines).collect();
        let plain = "{source=\"plugin-test\"}".to_string();
        assert_eq!(
            shapes,
            [
                vec![(plain.clone(), vec!["a", "b"])],
                vec![(plain.clone(), vec!["c", "e"])],
                vec![("{app=\"x\"}".to_string(), vec!["d"])],
            ]
        );
        assert_eq!(split(batch.clone(), 1000), std::slice::from_ref(&batch));
        assert_eq!(split(batch.clone(), 4).iter().map(Batch::entry_count).collect::<Vec<_>>(), [4, 1]);
        assert!(split(Batch::new("t".into()), 10).is_empty());
    }
}
