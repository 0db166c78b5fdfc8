use sluice_fields::{LABEL_OVERFLOW, UNPARSED};
use sluice_sdk::testing::{self, Outcome, Status, TestBatch};

use super::*;

type Pair = (String, String);

/// The parse step of the reference chain (`shared/BENCHMARK.md`).
const REFERENCE: &str =
    r#"{"labels": {"level": {"transform": "level"}}, "metadata": ["trace_id", "request_id"]}"#;

// Lines as `benches/src/workload.rs` writes them.
const LOGFMT_ERROR: &str = r#"time=2026-01-01T00:00:00.010817Z level=error target=gateway::auth msg="cuda error: out of memory" trace_id=1429a52c3fe853fe4e3fb20c3bedb69f span_id=3ab295aa5c6a4590 request_id=3a3dc9fe6b4dae9f client_ip=10.2.11.83"#;
const LOGFMT_AWS: &str = r#"time=2026-01-01T00:00:00.198877Z level=info target=inference::scheduler msg="feature vector served" trace_id=16f77b4eda614507e9ee4815d9ceb6cc span_id=bacf51d2bcd47813 request_id=7ba8a3ae6674f0d2 aws_credentials="aws_access_key_id=AKIAE7BE6KTMN6Z67PQZ aws_secret_access_key=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""#;
const LOGFMT_DB: &str = r#"time=2026-01-01T00:00:00.012337Z level=warn target=inference::scheduler msg="deprecated api version used" trace_id=d19396a7ae0ce6f84d6dd82d638ca7af span_id=1be0c70770dfe589 request_id=920dc10520b4324f duration_ms=2566.0 client_ip=10.87.177.216 db_url=postgres://mlflow:AFtjtMb7KVFg8ag0@mlflow-db:5432/mlflow"#;
const LOGFMT_DEBUG: &str = r#"time=2026-01-01T00:00:00.150957Z level=debug target=vllm::engine::llm_engine msg="kv cache block allocated" trace_id=c8af3c281e5c6c117f9128867a36e545 span_id=9dcfbde0489a297a request_id=1080df9fe8760eff duration_ms=2042.5"#;
const JSON: &str = r#"{"time":"2026-01-01T00:00:00.048158Z","level":"INFO","target":"registry::api","message":"checkpoint saved","trace_id":"ed4a88aba2c419a0c55d29036bcde89c","span_id":"e23195dbaf0f0212","request_id":"1f7ccd904f630c00"}"#;
const PLAIN: &str = "2026-01-01T00:00:00.021874Z INFO  [router::upstream] request admitted to batch";
const PLAIN_SECRET: &str = "2026-01-01T00:00:00.038963Z DEBUG [registry::api] batch slot released (aws_access_key_id=AKIATF2G43KRHBXH4OEB aws_secret_access_key=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)";
const TRACEBACK: &str = "2026-01-01T00:00:00.097667Z WARN  [billing::usage] deprecated api version used\nTraceback (most recent call last):\n  File \"/app/inference/server.py\", line 29, in handle\n    output = self.handle(batch, **kwargs)\nRuntimeError: deprecated api version used";

fn run(config: &str, lines: &[&str]) -> Outcome {
    let batch = lines.iter().fold(TestBatch::new().stream(&[("app", "api")]), |b, l| b.line(l));
    testing::run(&mut testing::plugin::<ParseLogfmt>(config), &batch)
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
}

#[test]
fn the_reference_chain_step_on_workload_lines() {
    let lines = [LOGFMT_ERROR, LOGFMT_AWS, LOGFMT_DB, LOGFMT_DEBUG, JSON, PLAIN, PLAIN_SECRET, TRACEBACK];
    let out = run(REFERENCE, &lines);
    let got: Vec<(Option<&str>, &[Pair])> =
        out.entries.iter().map(|e| (e.label("level"), e.metadata.as_slice())).collect();
    let md = |t: &str, r: &str| pairs(&[("trace_id", t), ("request_id", r)]);
    assert_eq!(
        got,
        [
            (Some("error"), md("1429a52c3fe853fe4e3fb20c3bedb69f", "3a3dc9fe6b4dae9f").as_slice()),
            (Some("info"), md("16f77b4eda614507e9ee4815d9ceb6cc", "7ba8a3ae6674f0d2").as_slice()),
            (Some("warn"), md("d19396a7ae0ce6f84d6dd82d638ca7af", "920dc10520b4324f").as_slice()),
            (Some("debug"), md("c8af3c281e5c6c117f9128867a36e545", "1080df9fe8760eff").as_slice()),
            (None, &[][..]),
            (None, &[][..]),
            (None, &[][..]),
            (None, &[][..]),
        ]
    );
    assert_eq!(out.lines(), lines);
    assert!(out.entries[4..].iter().all(|e| e.status == Status::Kept));
    assert_eq!(out.count(UNPARSED), 4, "JSON and plain text, including the one with `key=value` inside");
    assert_eq!(out.count(LABEL_OVERFLOW), 0);
}

#[test]
fn quoted_values_are_decoded() {
    let config = r#"{"metadata": ["msg", "aws_credentials", "db_url", "e", "u"]}"#;
    let out = run(
        config,
        &[
            LOGFMT_AWS,
            LOGFMT_DB,
            r#"a=1 msg="say \"hi\" \\ \n\tthere" e="" u="\u00e9 \q""#,
            r#"a=1 msg="unicode: żółw 🐢""#,
        ],
    );
    assert_eq!(
        out.entries[0].metadata,
        pairs(&[
            ("msg", "feature vector served"),
            (
                "aws_credentials",
                "aws_access_key_id=AKIAE7BE6KTMN6Z67PQZ aws_secret_access_key=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"
            )
        ])
    );
    assert_eq!(
        out.entries[1].metadata_value("db_url"),
        Some("postgres://mlflow:AFtjtMb7KVFg8ag0@mlflow-db:5432/mlflow")
    );
    assert_eq!(out.entries[2].metadata, pairs(&[("msg", "say \"hi\" \\ \n\tthere"), ("u", "é \\q")]));
    assert_eq!(out.entries[3].metadata, pairs(&[("msg", "unicode: żółw 🐢")]));
}

#[test]
fn unquoted_values_run_to_the_next_whitespace() {
    let config = r#"{"metadata": ["url", "b", "c", "d"]}"#;
    let out = run(config, &["url=/q?a=b&c=\"d\" b=x\tc=y\nd=z"]);
    assert_eq!(
        out.entries[0].metadata,
        pairs(&[("url", "/q?a=b&c=\"d\""), ("b", "x"), ("c", "y"), ("d", "z")])
    );
}

#[test]
fn keys_are_matched_exactly_and_named_safely() {
    let out = run(
        r#"{"labels": ["http.status", "Level"]}"#,
        &["http.status=200 level=info Level=x", "http.status=404 http_status=1"],
    );
    assert_eq!(out.entries[0].label("http_status"), Some("200"));
    assert_eq!(out.entries[0].label("Level"), Some("x"));
    assert_eq!(out.entries[1].label("http_status"), Some("404"));
}

#[test]
fn bare_keys_and_empty_values_give_no_output() {
    let out = run(
        r#"{"labels": ["flag", "empty"], "metadata": ["x"]}"#,
        &["x=1 flag empty= ", "a=1 flag=yes empty=no"],
    );
    assert_eq!(out.entries[0].labels, pairs(&[("app", "api")]));
    assert_eq!(out.entries[0].metadata, pairs(&[("x", "1")]));
    assert_eq!(out.entries[1].label("flag"), Some("yes"));
    assert_eq!(out.count(UNPARSED), 0);
}

#[test]
fn the_first_occurrence_wins() {
    let out = run(r#"{"labels": ["a"]}"#, &["a=1 a=2", "x=0 a a=2"]);
    assert_eq!(out.entries[0].label("a"), Some("1"));
    assert_eq!(out.entries[1].status, Status::Kept);
}

#[test]
fn line_keeps_only_the_message() {
    let out =
        run(r#"{"labels": {"level": {"transform": "level"}}, "line": "msg"}"#, &[LOGFMT_ERROR, "level=INFO"]);
    assert_eq!(out.lines(), ["cuda error: out of memory", "level=INFO"]);
    assert_eq!(out.entries[1].label("level"), Some("info"));
}

#[test]
fn lines_that_are_not_logfmt_are_counted() {
    let config = r#"{"labels": ["level"], "metadata": ["missing"]}"#;
    let bad = [
        "",
        "  \t ",
        "plain words here",
        "{\"level\":\"info\"}",
        " {level=info}",
        "=x level=info",
        "\"level\"=info",
        "lev\"el=info",
        "a=1 = level=info",
        "a=1 le\"vel=info",
        "level=\"unterminated",
        "a=1 level=\"bad\\",
        "level=\"a\"b",
        "a=1 \"quoted bare\"",
    ];
    let out = run(config, &bad);
    assert!(out.entries.iter().all(|e| e.status == Status::Kept), "{:?}", out.changed());
    assert_eq!(out.count(UNPARSED), bad.len() as u64);
}

#[test]
fn reading_stops_once_every_key_is_found() {
    let out = run(r#"{"labels": ["level"]}"#, &["level=warn then \"garbage", "x=1 \"garbage level=warn"]);
    assert_eq!(out.entries[0].label("level"), Some("warn"));
    assert_eq!(out.entries[1].status, Status::Kept);
    assert_eq!(out.count(UNPARSED), 1);
}

#[test]
fn leading_whitespace_and_large_lines() {
    let prompt = "the model token prompt ".repeat(700);
    let big = format!("level=INFO trace_id=t request_id=r prompt=\"{prompt}\"");
    let after = format!("prompt=\"{prompt}\" level=INFO trace_id=t request_id=r");
    let out = run(REFERENCE, &[&big, &after, "  \tlevel=info trace_id=t request_id=r"]);
    for e in &out.entries {
        assert_eq!((e.label("level"), e.metadata.len()), (Some("info"), 2));
    }
}

#[test]
fn entries_already_right_are_not_patched() {
    let batch =
        TestBatch::new().stream(&[("level", "info")]).entry(1, "level=INFO trace_id=t", &[("trace_id", "t")]);
    let mut plugin = testing::plugin::<ParseLogfmt>(
        r#"{"labels": {"level": {"transform": "level"}}, "metadata": ["trace_id"]}"#,
    );
    assert_eq!(testing::run(&mut plugin, &batch).entries[0].status, Status::Kept);
}

#[test]
fn the_guard_and_overwrite_apply() {
    let batch = TestBatch::new().stream(&[("user", "z")]).line("user=a").line("user=b");
    let mut plugin = testing::plugin::<ParseLogfmt>(r#"{"labels": ["user"], "max_label_values": 1}"#);
    let out = testing::run(&mut plugin, &batch);
    assert_eq!(out.entries[0].label("user"), Some("a"));
    assert_eq!((out.entries[1].label("user"), out.entries[1].metadata_value("user")), (Some("z"), Some("b")));
    assert_eq!(out.count(LABEL_OVERFLOW), 1);
    let mut plugin = testing::plugin::<ParseLogfmt>(r#"{"labels": ["user"], "overwrite": false}"#);
    assert!(testing::run(&mut plugin, &batch).entries.iter().all(|e| e.status == Status::Kept));
}

#[test]
fn rejects_bad_configs() {
    let cases = [
        (
            r#"{"labels": ["a b"]}"#,
            "`labels`: `a b` is not a logfmt key: keys have no whitespace, `=` or `\"`",
        ),
        (
            r#"{"metadata": {"x": "a=b"}}"#,
            "`metadata.x`: `a=b` is not a logfmt key: keys have no whitespace, `=` or `\"`",
        ),
        (r#"{"line": "a\"b"}"#, "`line`: `a\\\"b` is not a logfmt key: keys have no whitespace, `=` or `\"`"),
        (r#"{"line": "a\tb"}"#, "`line`: `a\\tb` is not a logfmt key: keys have no whitespace, `=` or `\"`"),
        (r#"{}"#, "nothing to do: set at least one of `labels`, `metadata` and `line`"),
        (
            r#"{"labels": ["level"], "pattern": "x"}"#,
            "invalid config at `pattern`: unknown field `pattern`, expected one of `labels`, `metadata`, \
             `line`, `max_label_values`, `overwrite` at line 1 column 31",
        ),
    ];
    let wrong: Vec<String> = cases
        .iter()
        .filter(|(config, expected)| testing::init_error::<ParseLogfmt>(config) != *expected)
        .map(|(config, _)| format!("{config}\n  got: {}", testing::init_error::<ParseLogfmt>(config)))
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
