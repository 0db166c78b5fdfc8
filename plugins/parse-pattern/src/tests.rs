use sluice_fields::{LABEL_OVERFLOW, UNPARSED};
use sluice_sdk::testing::{self, Outcome, Status, TestBatch};

use super::*;

type Pair = (String, String);

// Lines as `benches/src/workload.rs` writes them.
const PLAIN_INFO: &str = "2026-01-01T00:00:00.021874Z INFO  [router::upstream] request admitted to batch";
const PLAIN_DEBUG: &str = "2026-01-01T00:00:00.134672Z DEBUG [billing::usage] sampling params resolved";
const TRACEBACK: &str = "2026-01-01T00:00:00.097667Z WARN  [billing::usage] deprecated api version used\nTraceback (most recent call last):\n  File \"/app/inference/server.py\", line 29, in handle\n    output = self.handle(batch, **kwargs)\nRuntimeError: deprecated api version used";
const JSON: &str = r#"{"time":"2026-01-01T00:00:00.048158Z","level":"INFO","target":"registry::api","message":"checkpoint saved","trace_id":"ed4a88aba2c419a0c55d29036bcde89c","span_id":"e23195dbaf0f0212","request_id":"1f7ccd904f630c00"}"#;

const ACCESS: &str =
    r#"10.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326"#;
const ACCESS_CONFIG: &str = r#"{
    "pattern": "<ip> - <_> [<ts>] \"<method> <path> <_>\" <status> <size>",
    "labels": ["method", "status"],
    "metadata": {"client": "ip", "path": "path", "size": "size"}
}"#;

fn run(config: &str, lines: &[&str]) -> Outcome {
    let batch = lines.iter().fold(TestBatch::new().stream(&[("app", "api")]), |b, l| b.line(l));
    testing::run(&mut testing::plugin::<ParsePattern>(config), &batch)
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
}

fn config(pattern: &str, rest: &str) -> String {
    format!(r#"{{"pattern": {}, {rest}}}"#, serde_json::Value::from(pattern))
}

#[test]
fn an_access_log_line() {
    let out = run(ACCESS_CONFIG, &[ACCESS, "not an access line", JSON]);
    let e = &out.entries[0];
    assert_eq!(e.labels, pairs(&[("app", "api"), ("method", "GET"), ("status", "200")]));
    assert_eq!(e.metadata, pairs(&[("client", "10.0.0.1"), ("path", "/apache_pb.gif"), ("size", "2326")]));
    assert_eq!(e.line, ACCESS);
    assert_eq!(out.entries[1].status, Status::Kept);
    assert_eq!(out.entries[2].status, Status::Kept);
    assert_eq!(out.count(UNPARSED), 2);
}

#[test]
fn workload_plain_lines_with_padded_levels() {
    let c = config(
        "<ts> <level> [<target>] <msg>",
        r#""labels": {"level": {"transform": "level"}}, "metadata": ["level_raw", "target"]"#,
    );
    // `level_raw` isn't a capture: rejected. The padded level is what `<level>` takes.
    assert_eq!(
        testing::init_error::<ParsePattern>(&c),
        "`metadata`: `level_raw` is not a capture of `pattern` (its captures: ts, level, target, msg)"
    );
    let c = config(
        "<ts> <level> [<target>] <msg>",
        r#""labels": {"level": {"transform": "level"}}, "metadata": {"raw": "level", "target": "target"}, "line": "msg""#,
    );
    let out = run(&c, &[PLAIN_INFO, PLAIN_DEBUG, TRACEBACK, JSON]);
    let got: Vec<(Option<&str>, &[Pair], &str)> =
        out.entries.iter().map(|e| (e.label("level"), e.metadata.as_slice(), e.line.as_str())).collect();
    let md = |raw: &str, target: &str| pairs(&[("raw", raw), ("target", target)]);
    assert_eq!(
        got,
        [
            (Some("info"), md("INFO ", "router::upstream").as_slice(), "request admitted to batch"),
            (Some("debug"), md("DEBUG", "billing::usage").as_slice(), "sampling params resolved"),
            (Some("warn"), md("WARN ", "billing::usage").as_slice(), &TRACEBACK[51..]),
            (None, &[][..], JSON),
        ]
    );
    assert!(out.entries[2].line.contains("\nRuntimeError:"), "the last capture takes the rest, newlines too");
}

#[test]
fn a_leading_literal_anchors_and_a_trailing_one_ends_the_match() {
    let c = config("level=<level> ", r#""labels": ["level"]"#);
    let out = run(&c, &["level=info rest is ignored", "x level=info ", "level=info"]);
    assert_eq!(out.entries[0].label("level"), Some("info"));
    assert_eq!(out.entries[1].status, Status::Kept, "the line must start with the leading literal");
    assert_eq!(out.entries[2].status, Status::Kept, "the literal after the capture must be there");
    assert_eq!(out.count(UNPARSED), 2);
}

#[test]
fn a_capture_ends_at_the_first_occurrence_of_its_literal() {
    let c = config("<a>, <b>", r#""metadata": ["a", "b"]"#);
    let out = run(&c, &["x, y, z", ", y", "no separator"]);
    assert_eq!(out.entries[0].metadata, pairs(&[("a", "x"), ("b", "y, z")]));
    assert_eq!(out.entries[1].metadata, pairs(&[("b", "y")]), "an empty capture gives no output");
    assert_eq!(out.entries[2].status, Status::Kept);
    assert_eq!(out.count(UNPARSED), 1);
}

#[test]
fn angle_brackets_that_are_not_captures_are_literals() {
    let c = config("a < b <x> <=> <y><br/>", r#""metadata": ["x", "y"]"#);
    let out = run(&c, &["a < b 1 <=> 2<br/>"]);
    assert_eq!(out.entries[0].metadata, pairs(&[("x", "1"), ("y", "2")]));
}

#[test]
fn unicode_literals_and_values() {
    let c = config("«<who>» → <what>", r#""metadata": ["who", "what"]"#);
    let out = run(&c, &["«żółw» → 🐢 ok"]);
    assert_eq!(out.entries[0].metadata, pairs(&[("who", "żółw"), ("what", "🐢 ok")]));
}

#[test]
fn named_captures_no_output_reads_are_skipped() {
    let c = config("<a> <b> <c>", r#""labels": ["b"]"#);
    let out = run(&c, &["1 2 3", "1 2"]);
    assert_eq!(out.entries[0].label("b"), Some("2"));
    assert_eq!(out.entries[1].status, Status::Kept);
}

#[test]
fn the_guard_and_overwrite_apply() {
    let batch = TestBatch::new().stream(&[("user", "z")]).line("user a").line("user b");
    let mut plugin = testing::plugin::<ParsePattern>(&config(
        "user <user>",
        r#""labels": ["user"], "max_label_values": 1"#,
    ));
    let out = testing::run(&mut plugin, &batch);
    assert_eq!(out.entries[0].label("user"), Some("a"));
    assert_eq!((out.entries[1].label("user"), out.entries[1].metadata_value("user")), (Some("z"), Some("b")));
    assert_eq!(out.count(LABEL_OVERFLOW), 1);
    let mut plugin =
        testing::plugin::<ParsePattern>(&config("user <user>", r#""labels": ["user"], "overwrite": false"#));
    assert!(testing::run(&mut plugin, &batch).entries.iter().all(|e| e.status == Status::Kept));
}

#[test]
fn tokenize_splits_literals_and_captures() {
    use Token::{Capture, Literal};
    let cap = |n: &str| Capture(Some(n.to_string()));
    let lit = |s: &str| Literal(s.to_string());
    assert_eq!(tokenize("<a>").ok(), Some(vec![cap("a")]));
    assert_eq!(tokenize("x<a>y<_>z").ok(), Some(vec![lit("x"), cap("a"), lit("y"), Capture(None), lit("z")]));
    assert_eq!(tokenize("<<a>>").ok(), Some(vec![lit("<"), cap("a"), lit(">")]));
    assert_eq!(tokenize("<a> <>").ok(), Some(vec![cap("a"), lit(" <>")]));
}

#[test]
fn rejects_bad_patterns_and_configs() {
    let with = |pattern: &str| config(pattern, r#""labels": ["a"]"#);
    let cases = [
        (r#"{"labels": ["a"]}"#.to_string(), "`pattern` is required"),
        (with(""), "`pattern`: `` has no named capture such as `<name>`, so nothing to take from a line"),
        (
            with("just text"),
            "`pattern`: `just text` has no named capture such as `<name>`, so nothing to take from a line",
        ),
        (
            with("<_> - <_>"),
            "`pattern`: `<_> - <_>` has no named capture such as `<name>`, so nothing to take from a line",
        ),
        (
            with("<a><b>"),
            "`pattern`: `<a><b>` has two captures with nothing between them (before `<b>`): where the first ends \
             would be undefined, so put a literal between them",
        ),
        (
            with("x <_><a>"),
            "`pattern`: `x <_><a>` has two captures with nothing between them (before `<a>`): where the first \
             ends would be undefined, so put a literal between them",
        ),
        (
            with("<a> <http.status>"),
            "`pattern`: `<http.status>` is not a valid capture: names must match [a-zA-Z_][a-zA-Z0-9_]*",
        ),
        (
            with("<a> <1st>"),
            "`pattern`: `<1st>` is not a valid capture: names must match [a-zA-Z_][a-zA-Z0-9_]*",
        ),
        (
            with("<a> <my-name>"),
            "`pattern`: `<my-name>` is not a valid capture: names must match [a-zA-Z_][a-zA-Z0-9_]*",
        ),
        (with("<a> <a>"), "`pattern`: `<a>` appears twice"),
        (
            config("<a> <b>", r#""labels": {"x": "c"}"#),
            "`labels.x`: `c` is not a capture of `pattern` (its captures: a, b)",
        ),
        (
            config("<a> <b>", r#""line": "_""#),
            "`line`: `_` is not a capture of `pattern` (its captures: a, b)",
        ),
        (
            config("<a>", r#""labels": ["a"], "regex": "x""#),
            "invalid config at `regex`: unknown field `regex`, expected one of `pattern`, `labels`, `metadata`, `line`, `max_label_values`, `overwrite` at line 1 column 43",
        ),
        (
            config("<a>", r#""labels": []"#),
            "nothing to do: set at least one of `labels`, `metadata` and `line`",
        ),
    ];
    let wrong: Vec<String> = cases
        .iter()
        .filter(|(config, expected)| testing::init_error::<ParsePattern>(config) != *expected)
        .map(|(config, _)| format!("{config}\n  got: {:?}", testing::init_error::<ParsePattern>(config)))
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
