//! What `sluice plugin test` prints. As text, one line per entry in the order the plugin saw
//! them:
//!
//! ```text
//! kept     {app="api"} "POST /orders 201" {trace_id="t1"}
//! dropped  {app="api"} "GET /health 200"
//! changed  {app="api"} "login password=hunter2" => labels {app="api", team="payments"}, line "login password=[REDACTED]", metadata {redacted_hash="…"}
//! added    {app="api"} "dropped 1 noisy lines"
//! summary: in 3, out 3, changed 1, dropped 1, added 1; 1 batch, 2.1 µs per entry (example-filter 0.1.0)
//! ```
//!
//! Lines are JSON strings; metadata is shown when there is some. A changed entry shows what
//! it was, then each field the plugin set. As NDJSON, the entries that come out of the plugin,
//! one archive record each (`tenant`, `ts`, `time`, `labels`, `structured_metadata`,
//! `line`), in the order
//! the service would hand them to its sinks.

use std::fmt::{self, Write as _};
use std::io::Write;
use std::time::Duration;

use sluice_sdk::format::Pairs;
use sluice_sdk::format::response::{Response, Verdict};

use crate::archive::record;
use crate::model::{Batch, LabelSet, Pair};

/// How the result is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// One human-readable line per entry, then a summary.
    Text,
    /// The output entries as archive-shaped NDJSON on stdout; the summary on stderr.
    Ndjson,
}

/// Counts over the whole input.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub entries_in: usize,
    pub entries_out: usize,
    pub changed: usize,
    pub dropped: usize,
    pub added: usize,
    pub batches: usize,
    /// Time inside `process` calls.
    pub elapsed: Duration,
    /// The plugin's name and version.
    pub plugin: String,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "summary: in {}, out {}, changed {}, dropped {}, added {}; {} batch{}, ",
            self.entries_in,
            self.entries_out,
            self.changed,
            self.dropped,
            self.added,
            self.batches,
            if self.batches == 1 { "" } else { "es" },
        )?;
        match u32::try_from(self.entries_in) {
            Ok(n) if n > 0 => write!(f, "{:.1} µs per entry", (self.elapsed / n).as_secs_f64() * 1e6)?,
            _ => f.write_str("no entries")?,
        }
        write!(f, " ({})", self.plugin)
    }
}

/// Writes the report batch by batch.
pub struct Report<'w> {
    format: OutputFormat,
    out: &'w mut dyn Write,
    summary: Summary,
}

impl<'w> Report<'w> {
    pub fn new(format: OutputFormat, out: &'w mut dyn Write) -> Self {
        Self { format, out, summary: Summary::default() }
    }

    /// One batch: `before` as the plugin got it, its checked `response`, and `after` (the
    /// response applied).
    pub fn batch(
        &mut self,
        before: &Batch,
        response: &Response<'_>,
        after: &Batch,
        elapsed: Duration,
    ) -> std::io::Result<()> {
        let s = &mut self.summary;
        s.batches += 1;
        s.elapsed += elapsed;
        s.entries_in += before.entry_count();
        s.entries_out += after.entry_count();
        let mut patches = response.patches();
        let mut text = String::new();
        let mut i = 0;
        for stream in &before.streams {
            for entry in &stream.entries {
                text.clear();
                match response.verdict(i) {
                    Verdict::Keep => {
                        text.push_str("kept     ");
                        describe(&mut text, &stream.labels, &entry.line, &entry.metadata);
                    }
                    Verdict::Drop => {
                        s.dropped += 1;
                        text.push_str("dropped  ");
                        describe(&mut text, &stream.labels, &entry.line, &entry.metadata);
                    }
                    Verdict::Patched => {
                        s.changed += 1;
                        text.push_str("changed  ");
                        describe(&mut text, &stream.labels, &entry.line, &entry.metadata);
                        // The response was checked: a patched entry has its patch, in order.
                        if let Some(patch) = patches.next() {
                            let mut changes = Vec::new();
                            if let Some(ts) = patch.timestamp_ns {
                                changes.push(format!("timestamp {ts}"));
                            }
                            if let Some(labels) = patch.labels {
                                changes.push(format!("labels {}", sorted(labels)));
                            }
                            if let Some(line) = patch.line {
                                changes.push(format!("line {}", quote(line)));
                            }
                            if let Some(metadata) = patch.metadata {
                                changes.push(format!("metadata {}", braces(metadata)));
                            }
                            let _ = write!(text, " => {}", changes.join(", "));
                        }
                    }
                }
                i += 1;
                if self.format == OutputFormat::Text {
                    writeln!(self.out, "{text}")?;
                }
            }
        }
        for added in response.added() {
            s.added += 1;
            if self.format == OutputFormat::Text {
                let labels = added.labels.map(sorted).unwrap_or_else(|| LabelSet::new(Vec::new()));
                let metadata: Vec<Pair> = added
                    .metadata
                    .map(|m| m.map(|(n, v)| (n.to_string(), v.to_string())).collect())
                    .unwrap_or_default();
                text.clear();
                text.push_str("added    ");
                describe(&mut text, &labels, added.line.unwrap_or_default(), &metadata);
                writeln!(self.out, "{text}")?;
            }
        }
        if self.format == OutputFormat::Ndjson {
            let mut out = Vec::new();
            for stream in &after.streams {
                let labels = record::labels_json(&stream.labels);
                for entry in &stream.entries {
                    record::write(&mut out, &after.tenant, &labels, entry);
                }
            }
            self.out.write_all(&out)?;
        }
        Ok(())
    }

    /// Writes the summary line (text format) and returns the counts.
    pub fn finish(mut self, plugin: &str, version: &str) -> std::io::Result<Summary> {
        self.summary.plugin = format!("{plugin} {version}");
        if self.format == OutputFormat::Text {
            writeln!(self.out, "{}", self.summary)?;
        }
        self.out.flush()?;
        Ok(self.summary)
    }
}

/// `{labels} "line"` and ` {metadata}` when there is some.
fn describe(text: &mut String, labels: &LabelSet, line: &str, metadata: &[Pair]) {
    let _ = write!(text, "{labels} {}", quote(line));
    if !metadata.is_empty() {
        let _ = write!(text, " {}", braces(metadata.iter().map(|(n, v)| (n.as_str(), v.as_str()))));
    }
}

fn sorted(pairs: Pairs<'_>) -> LabelSet {
    LabelSet::new(pairs.map(|(n, v)| (n.to_string(), v.to_string())).collect())
}

/// Pairs in their order, formatted like a label set: `{name="value", …}`, values escaped.
fn braces<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::from("{");
    for (i, (name, value)) in pairs.enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{name}=\"");
        for c in value.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
    out
}

/// A line as a JSON string: quotes, backslashes and control characters escaped.
fn quote(line: &str) -> String {
    serde_json::to_string(line).unwrap_or_else(|_| format!("{line:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Entry, Stream};
    use sluice_sdk::format::response::{Patch, ResponseWriter};

    fn batch() -> Batch {
        let labels = LabelSet::new(vec![("app".into(), "api".into())]);
        let entry = |ts, line: &str, md: &[(&str, &str)]| Entry {
            timestamp_ns: ts,
            line: line.into(),
            metadata: md.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
        };
        Batch {
            tenant: "t".into(),
            streams: vec![Stream {
                labels,
                entries: vec![
                    entry(1, "keep \"me\"", &[("trace_id", "t1")]),
                    entry(2, "drop me", &[]),
                    entry(3, "change me", &[("b", "2"), ("a", "1")]),
                ],
            }],
        }
    }

    fn run(format: OutputFormat) -> (String, Summary) {
        let before = batch();
        let mut w = ResponseWriter::new(3);
        w.drop_entry(1);
        let patch = Patch {
            labels: Some(&[("team", "x"), ("app", "api")]),
            line: Some("changed\nme"),
            metadata: Some(&[("z", "9")]),
            timestamp_ns: Some(30),
        };
        w.patch(2, &patch).expect("in order");
        w.add(40, "summary", &[("app", "api")], &[("n", "1")]);
        let buf = w.finish().expect("fits");
        let response = Response::parse(&buf, 3).expect("valid");
        let mut after = before.clone();
        crate::plugin::apply::apply(&mut after, &response);
        let mut out = Vec::new();
        let mut report = Report::new(format, &mut out);
        report.batch(&before, &response, &after, Duration::from_micros(30)).expect("writes");
        let summary = report.finish("p", "1.0").expect("writes");
        (String::from_utf8(out).expect("utf-8"), summary)
    }

    #[test]
    fn text_shows_each_entry_and_a_summary() {
        let (text, summary) = run(OutputFormat::Text);
        let expected = [
            r#"kept     {app="api"} "keep \"me\"" {trace_id="t1"}"#,
            r#"dropped  {app="api"} "drop me""#,
            r#"changed  {app="api"} "change me" {b="2", a="1"} => timestamp 30, labels {app="api", team="x"}, line "changed\nme", metadata {z="9"}"#,
            r#"added    {app="api"} "summary" {n="1"}"#,
            "summary: in 3, out 3, changed 1, dropped 1, added 1; 1 batch, 10.0 µs per entry (p 1.0)",
        ];
        assert_eq!(text.lines().collect::<Vec<_>>(), expected, "{text}");
        assert_eq!(
            (summary.entries_in, summary.entries_out, summary.changed, summary.dropped, summary.added),
            (3, 3, 1, 1, 1)
        );
    }

    #[test]
    fn ndjson_writes_the_output_entries_as_archive_records() {
        let (text, _) = run(OutputFormat::Ndjson);
        let records: Vec<serde_json::Value> =
            text.lines().map(|l| serde_json::from_str(l).expect("json")).collect();
        let lines: Vec<&str> = records.iter().map(|r| r["line"].as_str().expect("line")).collect();
        assert_eq!(lines, ["keep \"me\"", "summary", "changed\nme"]);
        assert_eq!(
            records[0],
            serde_json::json!({"tenant": "t", "ts": "1", "time": "1970-01-01T00:00:00.000000001Z", "labels": {"app": "api"},
                "structured_metadata": {"trace_id": "t1"}, "line": "keep \"me\""})
        );
        assert_eq!(records[2]["labels"], serde_json::json!({"app": "api", "team": "x"}));
        assert_eq!(records[2]["ts"], "30");
        assert!(!text.contains("summary: "), "the summary is not on stdout");
    }

    #[test]
    fn no_entries_no_rate() {
        let s = Summary { plugin: "p 1".into(), ..Summary::default() };
        assert_eq!(
            s.to_string(),
            "summary: in 0, out 0, changed 0, dropped 0, added 0; 0 batches, no entries (p 1)"
        );
    }
}
