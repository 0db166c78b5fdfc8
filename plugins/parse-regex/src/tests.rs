use sluice_fields::{LABEL_OVERFLOW, UNPARSED};
use sluice_sdk::testing::{self, Outcome, Status, TestBatch};

use super::*;

// Lines as `benches/src/workload.rs` writes them.
const PLAIN_INFO: &str = "2026-01-01T00:00:00.021874Z INFO  [router::upstream] request admitted to batch";
const PLAIN_DEBUG: &str = "2026-01-01T00:00:00.134672Z DEBUG [billing::usage] sampling params resolved";
const TRACEBACK: &str = "2026-01-01T00:00:00.097667Z WARN  [billing::usage] deprecated api version used\nTraceback (most recent call last):\n  File \"/app/inference/server.py\", line 29, in handle\n    output = self.handle(batch, **kwargs)\nRuntimeError: deprecated api version used";
const LOGFMT: &str = r#"time=2026-01-01T00:00:00.010817Z level=error target=gateway::auth msg="cuda error: out of memory" trace_id=1429a52c3fe853fe4e3fb20c3bedb69f span_id=3ab295aa5c6a4590 request_id=3a3dc9fe6b4dae9f client_ip=10.2.11.83"#;

/// The plain-text lines of the workload: time, padded level, target, message.
const PLAIN_CONFIG: &str = r#"{
    "regex": "^(?P<ts>\\S+) (?P<level>[A-Z]+) +\\[(?P<target>[^\\]]+)\\] (?P<msg>.*)",
    "labels": {"level": {"transform": "level"}},
    "metadata": ["target"]
}"#;

fn run(config: &str, lines: &[&str]) -> Outcome {
    let batch = lines.iter().fold(TestBatch::new().stream(&[("app", "api")]), |b, l| b.line(l));
    testing::run(&mut testing::plugin::<ParseRegex>(config), &batch)
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
}

#[test]
fn named_groups_become_labels_and_metadata() {
    let out = run(PLAIN_CONFIG, &[PLAIN_INFO, PLAIN_DEBUG, TRACEBACK, LOGFMT, ""]);
    let got: Vec<(Option<&str>, Option<&str>)> =
        out.entries.iter().map(|e| (e.label("level"), e.metadata_value("target"))).collect();
    assert_eq!(
        got,
        [
            (Some("info"), Some("router::upstream")),
            (Some("debug"), Some("billing::usage")),
            (Some("warn"), Some("billing::usage")),
            (None, None),
            (None, None),
        ]
    );
    assert_eq!(out.entries[0].labels, pairs(&[("app", "api"), ("level", "info")]));
    assert_eq!(out.lines(), [PLAIN_INFO, PLAIN_DEBUG, TRACEBACK, LOGFMT, ""]);
    assert_eq!(out.count(UNPARSED), 2);
}

#[test]
fn line_takes_a_group_and_dot_stops_at_newlines_unless_told() {
    let config = r#"{"regex": "\\] (?P<msg>.*)", "line": "msg"}"#;
    let out = run(config, &[PLAIN_INFO, TRACEBACK]);
    assert_eq!(out.lines(), ["request admitted to batch", "deprecated api version used"]);
    let config = r#"{"regex": "(?s)\\] (?P<msg>.*)", "line": "msg"}"#;
    let out = run(config, &[TRACEBACK]);
    assert_eq!(out.lines(), [&TRACEBACK[51..]]);
    assert!(TRACEBACK[..51].ends_with("] "));
}

#[test]
fn the_search_is_unanchored() {
    let out =
        run(r#"{"regex": "status=(?<status>\\d+)", "labels": ["status"]}"#, &["GET /x status=200 took 3ms"]);
    assert_eq!(out.entries[0].label("status"), Some("200"));
}

#[test]
fn groups_that_did_not_take_part_give_no_output() {
    let config = r#"{"regex": "^(?P<method>GET|POST)(?: (?P<path>/\\S*))?(?: (?P<code>\\d{3}))?$", "labels": ["method", "code"], "metadata": {"p": "path"}}"#;
    let out = run(config, &["GET /a 200", "POST", "POST  500", "PUT /a 200"]);
    let got: Vec<(Option<&str>, Option<&str>, Option<&str>)> =
        out.entries.iter().map(|e| (e.label("method"), e.label("code"), e.metadata_value("p"))).collect();
    assert_eq!(
        got,
        [
            (Some("GET"), Some("200"), Some("/a")),
            (Some("POST"), None, None),
            (None, None, None),
            (None, None, None)
        ]
    );
    assert_eq!(out.count(UNPARSED), 2);
}

#[test]
fn empty_groups_give_no_output_and_unicode_works() {
    let config = r#"{"regex": "^(?P<a>\\w*):(?P<b>.*)$", "metadata": ["a", "b"]}"#;
    let out = run(config, &[":x", "żółw:🐢"]);
    assert_eq!(out.entries[0].metadata, pairs(&[("b", "x")]));
    assert_eq!(out.entries[1].metadata, pairs(&[("a", "żółw"), ("b", "🐢")]));
}

#[test]
fn the_guard_and_overwrite_apply() {
    let batch = TestBatch::new().stream(&[("user", "z")]).line("user a").line("user b");
    let config = r#"{"regex": "user (?P<user>\\w+)", "labels": ["user"], "max_label_values": 1}"#;
    let out = testing::run(&mut testing::plugin::<ParseRegex>(config), &batch);
    assert_eq!(out.entries[0].label("user"), Some("a"));
    assert_eq!((out.entries[1].label("user"), out.entries[1].metadata_value("user")), (Some("z"), Some("b")));
    assert_eq!(out.count(LABEL_OVERFLOW), 1);
    let config = r#"{"regex": "user (?P<user>\\w+)", "labels": ["user"], "overwrite": false}"#;
    let out = testing::run(&mut testing::plugin::<ParseRegex>(config), &batch);
    assert!(out.entries.iter().all(|e| e.status == Status::Kept));
}

#[test]
fn entries_already_right_are_not_patched() {
    let batch = TestBatch::new().stream(&[("level", "info")]).line(PLAIN_INFO);
    let config = r#"{"regex": " (?P<level>[A-Z]+) ", "labels": {"level": {"transform": "level"}}}"#;
    let out = testing::run(&mut testing::plugin::<ParseRegex>(config), &batch);
    assert_eq!(out.entries[0].status, Status::Kept);
}

#[test]
fn rejects_bad_configs() {
    let cases = [
        (r#"{"labels": ["a"]}"#, "`regex` is required".to_string()),
        (
            r#"{"regex": "(a", "labels": ["a"]}"#,
            "`regex`: regex parse error:\n    (a\n    ^\nerror: unclosed group".to_string(),
        ),
        (
            r#"{"regex": "(a)(b)", "labels": ["a"]}"#,
            "`regex`: `(a)(b)` has no named group, so nothing to take from a line: name them (?P<name>…)"
                .to_string(),
        ),
        (
            r#"{"regex": "(?P<a>x)(?P<b>y)", "labels": {"lvl": "level"}}"#,
            "`labels.lvl`: `level` is not a named group of `regex` (its groups: a, b)".to_string(),
        ),
        (
            r#"{"regex": "(?P<a>x)", "metadata": ["b"]}"#,
            "`metadata`: `b` is not a named group of `regex` (its groups: a)".to_string(),
        ),
        (r#"{"regex": "(?P<a>x)", "line": "c"}"#, "`line`: `c` is not a named group of `regex` (its groups: a)".to_string()),
        (r#"{"regex": "(?P<a>x)"}"#, "nothing to do: set at least one of `labels`, `metadata` and `line`".to_string()),
        (
            r#"{"regex": "(?P<a>x)", "labels": ["a"], "source": "x"}"#,
            "invalid config at `source`: unknown field `source`, expected one of `regex`, `labels`, `metadata`, \
             `line`, `max_label_values`, `overwrite` at line 1 column 47"
                .to_string(),
        ),
        (
            r#"{"regex": 5, "labels": ["a"]}"#,
            "invalid config at `regex`: invalid type: integer `5`, expected a string at line 1 column 11".to_string(),
        ),
    ];
    let wrong: Vec<String> = cases
        .iter()
        .filter(|(config, expected)| testing::init_error::<ParseRegex>(config) != *expected)
        .map(|(config, _)| format!("{config}\n  got: {:?}", testing::init_error::<ParseRegex>(config)))
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
