use sluice_fields::{LABEL_OVERFLOW, UNPARSED};
use sluice_sdk::testing::{self, Outcome, Status, TestBatch};

use super::*;

type Pairs = Vec<(String, String)>;

/// The parse step of the reference chain (`shared/BENCHMARK.md`).
const REFERENCE: &str =
    r#"{"labels": {"level": {"transform": "level"}}, "metadata": ["trace_id", "request_id"]}"#;

// Lines as `benches/src/workload.rs` writes them.
const JSON_INFO: &str = r#"{"time":"2026-01-01T00:00:00.048158Z","level":"INFO","target":"registry::api","message":"checkpoint saved","trace_id":"ed4a88aba2c419a0c55d29036bcde89c","span_id":"e23195dbaf0f0212","request_id":"1f7ccd904f630c00"}"#;
const JSON_WARN: &str = r#"{"time":"2026-01-01T00:00:00.061580Z","level":"WARN","target":"registry::api","message":"retrying shard download","trace_id":"0c14f43dfed35876c762a53fde261442","span_id":"fcdfdc85646a2ca6","request_id":"4b478aca97bafe08","duration_ms":2586.8,"client_ip":"10.143.114.212"}"#;
const JSON_DEBUG: &str = r#"{"time":"2026-01-01T00:00:00.138531Z","level":"DEBUG","target":"inference::server::batch","message":"sampling params resolved","trace_id":"0c14f43dfed35876c762a53fde261442","span_id":"42b68d5d3abb38eb","request_id":"6801fb6c7fdac399","client_ip":"10.43.222.200"}"#;
const JSON_ERROR_JWT: &str = r#"{"time":"2026-01-01T00:00:00.188026Z","level":"ERROR","target":"inference::server::batch","message":"request failed","trace_id":"5bf89e1d1a634bada1a18dd9122f54a7","span_id":"b0beb5db0e6d0cdf","request_id":"32ce530fbf43e352","model_id":"mixtral-8x7b","duration_ms":2654.0,"authorization":"Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJqb24ucGFyayIsImlhdCI6MTc5OTgyNjMyMywic2NvcGUiOiJpbmZlcmVuY2U6d3JpdGUifQ.g58assO4LfzcrsikivpWp-K4Cgx7KTjz5MwcQDCRqsQ"}"#;
const LOGFMT: &str = r#"time=2026-01-01T00:00:00.010817Z level=error target=gateway::auth msg="cuda error: out of memory" trace_id=1429a52c3fe853fe4e3fb20c3bedb69f span_id=3ab295aa5c6a4590 request_id=3a3dc9fe6b4dae9f client_ip=10.2.11.83"#;
const PLAIN: &str = "2026-01-01T00:00:00.021874Z INFO  [router::upstream] request admitted to batch";
const TRACEBACK: &str = "2026-01-01T00:00:00.097667Z WARN  [billing::usage] deprecated api version used\nTraceback (most recent call last):\n  File \"/app/inference/server.py\", line 29, in handle\n    output = self.handle(batch, **kwargs)\nRuntimeError: deprecated api version used";

fn run(config: &str, lines: &[&str]) -> Outcome {
    let batch = lines.iter().fold(TestBatch::new().stream(&[("app", "api")]), |b, l| b.line(l));
    testing::run(&mut testing::plugin::<ParseJson>(config), &batch)
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
}

/// The label `name` and metadata of each entry.
fn label_and_metadata(out: &Outcome, name: &str) -> Vec<(Option<String>, Pairs)> {
    out.entries.iter().map(|e| (e.label(name).map(str::to_string), e.metadata.clone())).collect()
}

#[test]
fn the_reference_chain_step_on_workload_lines() {
    let lines = [JSON_INFO, JSON_WARN, JSON_DEBUG, JSON_ERROR_JWT, LOGFMT, PLAIN, TRACEBACK];
    let out = run(REFERENCE, &lines);
    let expect = |level: &str, trace: &str, request: &str| {
        (Some(level.to_string()), pairs(&[("trace_id", trace), ("request_id", request)]))
    };
    assert_eq!(
        label_and_metadata(&out, "level"),
        [
            expect("info", "ed4a88aba2c419a0c55d29036bcde89c", "1f7ccd904f630c00"),
            expect("warn", "0c14f43dfed35876c762a53fde261442", "4b478aca97bafe08"),
            expect("debug", "0c14f43dfed35876c762a53fde261442", "6801fb6c7fdac399"),
            expect("error", "5bf89e1d1a634bada1a18dd9122f54a7", "32ce530fbf43e352"),
            (None, vec![]),
            (None, vec![]),
            (None, vec![]),
        ]
    );
    assert_eq!(out.lines(), lines, "lines are not rewritten");
    let statuses: Vec<Status> = out.entries.iter().map(|e| e.status).collect();
    assert_eq!(statuses[4..], [Status::Kept; 3], "other formats pass untouched");
    assert_eq!(out.entries[0].labels, pairs(&[("app", "api"), ("level", "info")]));
    assert_eq!(out.count(UNPARSED), 3);
    assert_eq!(out.count(LABEL_OVERFLOW), 0);
}

#[test]
fn a_large_workload_line_is_parsed_whatever_comes_after_the_fields() {
    let prompt = "the model token prompt ".repeat(700);
    let line = format!(
        r#"{{"time":"2026-01-01T00:00:00.1Z","level":"INFO","message":"m","trace_id":"t","request_id":"r","prompt":"{prompt}"}}"#
    );
    let before = format!(r#"{{"prompt":"{prompt}","level":"Info","trace_id":"t","request_id":"r"}}"#);
    let out = run(REFERENCE, &[&line, &before]);
    for e in &out.entries {
        assert_eq!(e.label("level"), Some("info"));
        assert_eq!(e.metadata, pairs(&[("trace_id", "t"), ("request_id", "r")]));
    }
}

#[test]
fn nested_paths_match_nested_objects_dotted_keys_and_mixes() {
    let config = r#"{"labels": {"k8s_app": "kubernetes.labels.app", "status": "http.status"}}"#;
    let out = run(
        config,
        &[
            r#"{"kubernetes":{"namespace":"x","labels":{"team":"a","app":"web"}},"http":{"status":200}}"#,
            r#"{"kubernetes.labels.app":"web","http.status":404}"#,
            r#"{"kubernetes":{"labels.app":"api"},"http":{"method":"GET"}}"#,
            r#"{"kubernetes":{"labels":"none"},"http":[{"status":1}]}"#,
        ],
    );
    let got: Vec<(Option<&str>, Option<&str>)> =
        out.entries.iter().map(|e| (e.label("k8s_app"), e.label("status"))).collect();
    assert_eq!(
        got,
        [(Some("web"), Some("200")), (Some("web"), Some("404")), (Some("api"), None), (None, None)],
        "arrays and scalars on the way are not entered"
    );
    assert_eq!(out.count(UNPARSED), 0);
}

#[test]
fn a_path_and_a_path_below_it_both_work() {
    let out = run(
        r#"{"metadata": ["http", "http.status"]}"#,
        &[r#"{"http": {"status": 200, "path": "/x"}, "z": 1}"#, r#"{"http": "plain"}"#],
    );
    assert_eq!(
        out.entries[0].metadata,
        pairs(&[("http", r#"{"status": 200, "path": "/x"}"#), ("http_status", "200")])
    );
    assert_eq!(out.entries[1].metadata, pairs(&[("http", "plain")]));
}

#[test]
fn values_are_stringified_by_type() {
    let config = r#"{"metadata": ["s", "esc", "n", "f", "t", "no", "null", "obj", "arr", "uni", "empty"]}"#;
    let line = r#"{"s":"text","esc":"a \"quoted\" \\ line\nnext \u00e9\ud83d\ude00","n":-12.5e+3,"f":false,"t":true,"no":0,"null":null,"obj":{"a": [1, {"b": null}]},"arr":[ 1 , "x" ],"uni":"żółw 🐢","empty":""}"#;
    let out = run(config, &[line]);
    assert_eq!(
        out.entries[0].metadata,
        pairs(&[
            ("s", "text"),
            ("esc", "a \"quoted\" \\ line\nnext é😀"),
            ("n", "-12.5e+3"),
            ("f", "false"),
            ("t", "true"),
            ("no", "0"),
            ("obj", r#"{"a": [1, {"b": null}]}"#),
            ("arr", r#"[ 1 , "x" ]"#),
            ("uni", "żółw 🐢"),
        ])
    );
}

#[test]
fn line_keeps_only_the_message() {
    let config = r#"{"labels": {"level": {"transform": "level"}}, "line": "message"}"#;
    let out = run(
        config,
        &[
            JSON_WARN,
            r#"{"level":"info","message":"tab\there \"quoted\""}"#,
            r#"{"level":"info","message":{"nested":true}}"#,
            r#"{"level":"info"}"#,
            PLAIN,
        ],
    );
    assert_eq!(
        out.lines(),
        [
            "retrying shard download",
            "tab\there \"quoted\"",
            r#"{"nested":true}"#,
            r#"{"level":"info"}"#,
            PLAIN
        ]
    );
    assert_eq!(out.entries[3].label("level"), Some("info"));
}

#[test]
fn keys_with_escapes_match() {
    let out = run(r#"{"labels": ["level"]}"#, &[r#"{"le\u0076el":"warn"}"#, r#"{"a\"b":1,"level":"x"}"#]);
    assert_eq!(out.entries[0].label("level"), Some("warn"));
    assert_eq!(out.entries[1].label("level"), Some("x"));
}

#[test]
fn the_first_of_duplicate_keys_wins() {
    let out = run(
        r#"{"labels": ["level"]}"#,
        &[r#"{"level":"info","level":"error"}"#, r#"{"level":null,"level":"error"}"#],
    );
    assert_eq!(out.entries[0].label("level"), Some("info"));
    assert_eq!(out.entries[1].status, Status::Kept);
}

#[test]
fn whitespace_around_tokens_is_allowed() {
    let out = run(r#"{"labels": ["a.b"]}"#, &[" \t{ \"a\" :\n{ \"b\" : \"x\" } , \"c\" : [ ] } \r\n"]);
    assert_eq!(out.entries[0].label("a_b"), Some("x"));
    assert_eq!(out.count(UNPARSED), 0);
}

#[test]
fn malformed_or_non_object_lines_pass_untouched_and_are_counted() {
    let config = r#"{"labels": ["level"], "metadata": ["missing"]}"#;
    let bad = [
        "",
        "   ",
        "plain text",
        "[1,2]",
        "\"string\"",
        "42",
        "{",
        "{}}",
        r#"{"level":"info""#,
        r#"{"level":"info",}"#,
        r#"{"level" "info"}"#,
        r#"{level:"info"}"#,
        r#"{'level':'info'}"#,
        r#"{"level":"info"} trailing"#,
        r#"{"a":01,"level":"info"}"#,
        r#"{"a":1.,"level":"info"}"#,
        r#"{"a":1e,"level":"info"}"#,
        r#"{"a":-,"level":"info"}"#,
        r#"{"a":+1,"level":"info"}"#,
        r#"{"a":tru,"level":"info"}"#,
        r#"{"a":nul,"level":"info"}"#,
        r#"{"a":"\x","level":"info"}"#,
        r#"{"a":"\u12","level":"info"}"#,
        "{\"a\":\"tab\tinside\",\"level\":\"info\"}",
        r#"{"a":[1 2],"level":"info"}"#,
        r#"{"a":[1,],"level":"info"}"#,
        r#"{"a":{"b"},"level":"info"}"#,
        r#"{"a":{"b":1,},"level":"info"}"#,
        r#"{"a":{1:2},"level":"info"}"#,
        r#"{"level":"info","missing""#,
    ];
    let out = run(config, &bad);
    assert!(out.entries.iter().all(|e| e.status == Status::Kept), "{:?}", out.changed());
    assert_eq!(out.count(UNPARSED), bad.len() as u64);
}

#[test]
fn well_formed_objects_without_the_fields_are_parsed() {
    let out = run(
        r#"{"labels": ["level"]}"#,
        &["{}", "{ }", r#"{"a":{},"b":[],"c":[[]],"d":"","e":0,"f":-0.5E-2,"g":1e9}"#],
    );
    assert!(out.entries.iter().all(|e| e.status == Status::Kept));
    assert_eq!(out.count(UNPARSED), 0);
}

#[test]
fn reading_stops_once_every_field_is_found() {
    // The tail is never read, so its damage doesn't matter; before the fields it does.
    let out = run(
        r#"{"labels": ["level"]}"#,
        &[r#"{"level":"warn", this is not json"#, r#"{"x": nope, "level":"warn"}"#],
    );
    assert_eq!(out.entries[0].label("level"), Some("warn"));
    assert_eq!(out.entries[1].status, Status::Kept);
    assert_eq!(out.count(UNPARSED), 1);
}

#[test]
fn nesting_is_bounded() {
    let deep = |n: usize| format!(r#"{{"level":"info","a":{}1{}}}"#, "[".repeat(n), "]".repeat(n));
    let out = run(r#"{"labels": ["level"], "metadata": ["b"]}"#, &[&deep(127), &deep(128)]);
    assert_eq!(out.entries[0].label("level"), Some("info"));
    assert_eq!(out.entries[1].status, Status::Kept);
    assert_eq!(out.count(UNPARSED), 1);
    let nested = format!(r#"{}"level":"info"{}"#, r#"{"a":"#.repeat(200), "}".repeat(200));
    let out = run(r#"{"labels": ["level"]}"#, &[&nested]);
    assert_eq!(out.count(UNPARSED), 1);
}

#[test]
fn entries_already_right_are_not_patched() {
    let batch = TestBatch::new().stream(&[("level", "warn")]).entry(
        1,
        r#"{"level":"WARN","trace_id":"t"}"#,
        &[("trace_id", "t")],
    );
    let out = testing::run(
        &mut testing::plugin::<ParseJson>(
            r#"{"labels": {"level": {"transform": "level"}}, "metadata": ["trace_id"]}"#,
        ),
        &batch,
    );
    assert_eq!(out.entries[0].status, Status::Kept);
}

#[test]
fn the_guard_applies_to_json_labels() {
    let config = r#"{"labels": ["user"], "max_label_values": 1}"#;
    let out = run(config, &[r#"{"user":"a"}"#, r#"{"user":"b"}"#]);
    assert_eq!(out.entries[0].label("user"), Some("a"));
    assert_eq!((out.entries[1].label("user"), out.entries[1].metadata_value("user")), (None, Some("b")));
    assert_eq!(out.count(LABEL_OVERFLOW), 1);
}

#[test]
fn overwrite_false_keeps_stream_labels() {
    let batch = TestBatch::new().stream(&[("level", "info")]).line(r#"{"level":"error"}"#);
    let mut plugin = testing::plugin::<ParseJson>(r#"{"labels": ["level"], "overwrite": false}"#);
    assert_eq!(testing::run(&mut plugin, &batch).entries[0].status, Status::Kept);
    let mut plugin = testing::plugin::<ParseJson>(r#"{"labels": ["level"]}"#);
    assert_eq!(testing::run(&mut plugin, &batch).entries[0].label("level"), Some("error"));
}

#[test]
fn rejects_bad_configs() {
    let cases = [
        (
            r#"{"labels": ["a..b"]}"#,
            "`labels`: `a..b` is not a field path: object keys joined by `.`, none of them empty",
        ),
        (
            r#"{"metadata": {"x": ".a"}}"#,
            "`metadata.x`: `.a` is not a field path: object keys joined by `.`, none of them empty",
        ),
        (
            r#"{"line": "a."}"#,
            "`line`: `a.` is not a field path: object keys joined by `.`, none of them empty",
        ),
        (r#"{}"#, "nothing to do: set at least one of `labels`, `metadata` and `line`"),
        (
            r#"{"labels": ["level"], "regex": "x"}"#,
            "invalid config at `regex`: unknown field `regex`, expected one of `labels`, `metadata`, `line`, \
             `max_label_values`, `overwrite` at line 1 column 29",
        ),
        (
            r#"{"labels": {"http.status": "http.status"}}"#,
            "`labels`: `http.status` is not a valid label name: names must match [a-zA-Z_][a-zA-Z0-9_]*",
        ),
    ];
    let wrong: Vec<String> = cases
        .iter()
        .filter(|(config, expected)| testing::init_error::<ParseJson>(config) != *expected)
        .map(|(config, _)| format!("{config}\n  got: {}", testing::init_error::<ParseJson>(config)))
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!(
        testing::init_error::<ParseJson>(""),
        "nothing to do: set at least one of `labels`, `metadata` and `line`",
        "no config at all"
    );
}
