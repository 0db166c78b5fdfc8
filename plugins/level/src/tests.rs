use sluice_sdk::testing::{self, Outcome, Status, TestBatch};

use super::*;

fn detector() -> Detector {
    Detector::new(&default_fields(), true, DEFAULT_MAX_SCAN_BYTES)
}

fn detect(line: &str) -> Option<&'static str> {
    detector().detect(line).map(Severity::as_str)
}

#[track_caller]
fn check(cases: &[(&str, Option<&str>)]) {
    for (line, want) in cases {
        assert_eq!(detect(line), *want, "line {line:?}");
    }
}

fn run(config: &str, batch: &TestBatch) -> Outcome {
    testing::run(&mut testing::plugin::<Level>(config), batch)
}

fn labels_of(out: &Outcome) -> Vec<Option<&str>> {
    out.entries.iter().map(|e| e.label("level")).collect()
}

#[test]
fn normalises_every_spelling_case_insensitively() {
    let table = [
        (
            "debug",
            ["trace", "TRACE", "Trc", "debug", "DEBUG", "dbg", "verbose", "FINE", "finer", "finest"]
                .as_slice(),
        ),
        ("info", &["info", "INFO", "Info", "inf", "information", "Informational", "notice", "NOTICE"]),
        ("warn", &["warn", "WARN", "warning", "Warning", "WRN"]),
        ("error", &["error", "ERROR", "err", "ERR", "severe"]),
        (
            "fatal",
            &["fatal", "FTL", "critical", "CRIT", "panic", "PNC", "emerg", "emergency", "alert", "ALERT"],
        ),
    ];
    for (want, spellings) in table {
        for s in spellings {
            assert_eq!(normalize(s).map(Severity::as_str), Some(want), "{s}");
        }
    }
    let letters =
        [("D", "debug"), ("t", "debug"), ("I", "info"), ("w", "warn"), ("E", "error"), ("F", "fatal")];
    for (s, want) in letters {
        assert_eq!(normalize(s).map(Severity::as_str), Some(want), "{s}");
    }
    let numbers =
        [("10", "debug"), ("20", "debug"), ("30", "info"), ("40", "warn"), ("50", "error"), ("60", "fatal")];
    for (s, want) in numbers {
        assert_eq!(normalize(s).map(Severity::as_str), Some(want), "{s}");
    }
    for s in
        ["", "x", "3", "35", "70", "errors", "warnings", "inform", "deb", "er", "information_", "unknown"]
    {
        assert_eq!(normalize(s), None, "{s:?}");
    }
}

#[test]
fn json_fields_with_whitespace_escapes_and_nesting() {
    check(&[
        (r#"{"time":"2026-01-01T00:00:00Z","level":"INFO","message":"ok"}"#, Some("info")),
        (r#"{"level":"warn"}"#, Some("warn")),
        (r#"  { "level" :   "Error" , "msg":"x"}"#, Some("error")),
        ("{\"level\":\t\n\"debug\"}", Some("debug")),
        (r#"{"lvl":"W"}"#, Some("warn")),
        (r#"{"severity":"CRITICAL"}"#, Some("fatal")),
        (r#"{"log.level":"notice","message":"x"}"#, Some("info")),
        (r#"{"LEVEL":"Fatal"}"#, Some("fatal")),
        // pino and bunyan write numbers.
        (r#"{"level":30,"time":1,"msg":"hi"}"#, Some("info")),
        (r#"{"name":"app","level":50}"#, Some("error")),
        // Escaped quotes in earlier strings don't derail the scan.
        (r#"{"msg":"say \"level\":\"error\" twice \\","level":"info"}"#, Some("info")),
        (r#"{"msg":"a \\\"level\\\": \"fatal\"","level":"debug"}"#, Some("debug")),
        // Keys of nested objects don't count; the top-level key does.
        (r#"{"ctx":{"level":"debug","x":[1,{"level":"fatal"}]},"level":"error"}"#, Some("error")),
        // A string value that equals a field name is not a key.
        (r#"{"kind":"level","level":"warn"}"#, Some("warn")),
        // The first configured key in the line wins.
        (r#"{"severity":"error","level":"info"}"#, Some("error")),
    ]);
}

#[test]
fn fields_win_over_text() {
    check(&[
        (r#"{"level":"INFO","message":"no error here"}"#, Some("info")),
        (r#"{"level":"INFO","message":"ERROR: upstream failed"}"#, Some("info")),
        ("level=debug msg=\"ERROR in the message\"", Some("debug")),
        // A key that is there decides, even with a value that is no level: no guessing from text.
        (r#"{"level":"verbose2","message":"ERROR"}"#, None),
        (r#"{"level":null,"message":"ERROR"}"#, None),
        ("level=loud ERROR boom", None),
        // Without a level key, text forms apply to JSON lines too.
        (r#"{"message":"ERROR: disk full"}"#, Some("error")),
        (r#"{"message":"no error here","errors":0}"#, None),
    ]);
}

#[test]
fn logfmt_keys_quoted_and_bare() {
    check(&[
        ("time=2026-01-01T00:00:00Z level=info target=x msg=hello", Some("info")),
        ("level=WARNING msg=x", Some("warn")),
        ("ts=1 lvl=\"error\" msg=\"x y\"", Some("error")),
        ("severity=crit", Some("fatal")),
        ("Level=Debug", Some("debug")),
        // A quoted value holding a `key=value` look-alike is skipped whole.
        ("msg=\"set level=error now\" level=info", Some("info")),
        ("msg=\"escaped \\\" level=error\" level=warn", Some("warn")),
        // Keys that only end or start like a field don't count.
        ("loglevel_x=error mylevel=error level=debug", Some("debug")),
        // Words that are no key=value pairs are skipped.
        ("GET /x \"quoted words\" level=info", Some("info")),
        ("= level=info", Some("info")),
    ]);
}

#[test]
fn text_forms() {
    check(&[
        ("ERROR something broke", Some("error")),
        ("2026-01-01T00:00:00.000000Z INFO  [inference::server] completed request", Some("info")),
        ("2026-01-01 12:00:00,123 WARN [main] c.e.Foo - slow", Some("warn")),
        ("[2026-01-01T00:00:00Z DEBUG my_crate] tick", Some("debug")),
        ("WARNING:root:disk almost full", Some("warn")),
        ("CRITICAL:app:down", Some("fatal")),
        ("2026/01/01 12:00:00 [error] 12#0: *1 connect() failed", Some("error")),
        ("2026/01/01 12:00:00 [emerg] 12#0: bind() failed", Some("fatal")),
        ("[W] queue is long", Some("warn")),
        ("12:00:00 [E] failed", Some("error")),
        ("<warning> low memory", Some("warn")),
        ("Error: file not found", Some("error")),
        ("warning: unused variable", Some("warn")),
        ("panic: runtime error: index out of range", Some("fatal")),
        ("12:00:00 INF started", Some("info")),
        ("12:00:00 WRN slow", Some("warn")),
        ("12:00:00 DBG tick", Some("debug")),
        ("12:00:00 FTL dead", Some("fatal")),
        ("Jan 01 12:00:00 host app[1]: NOTICE starting", Some("info")),
        // glog / klog headers.
        ("I0102 15:04:05.123456    1234 main.go:12] started", Some("info")),
        ("W1121 12:00:00.000000 1 reflector.go:1] watch closed", Some("warn")),
        ("E1121 12:00:00.000000 1 x.go:1] failed", Some("error")),
        ("F1121 12:00:00.000000 1 x.go:1] dying", Some("fatal")),
        // The first level word wins.
        ("INFO request failed with ERROR code", Some("info")),
        // A multi-line entry: the first line decides.
        ("2026-01-01 ERROR boom\nTraceback (most recent call last):\n  INFO x", Some("error")),
    ]);
}

#[test]
fn no_false_positives_in_text() {
    check(&[
        ("errors=0 warnings=3", None),
        ("processed 3 errors and 2 warnings", None),
        ("no error here", None),
        ("an error occurred in the info panel", None),
        ("ERRORS: 3", None),
        ("ERROR_COUNT=0 WARN_LIMIT=5", None),
        ("INFORMATIONAL_ONLY", None),
        ("E0102 not a glog header", None),
        ("X0102 15:04:05.123456 not a level letter", None),
        ("[X] unknown letter", None),
        ("[e] lower-case letter", None),
        ("everything is fine: done", None),
        ("sending alert: disk usage", None),
        ("stack trace: at main", None),
        ("GET /api/info 200", None),
        ("Traceback (most recent call last):", None),
        ("", None),
        ("    ", None),
        ("{", None),
        ("{}", None),
        ("{\"level\"", None),
        ("{\"level\":\"", None),
        ("{\"msg\":\"unterminated", None),
        ("[1,2,\"level\"]", None),
        ("level=", None),
        ("level=\"info", None),
        ("ünïcödé ✓ ERRÖR", None),
    ]);
}

#[test]
fn unicode_around_levels() {
    check(&[
        ("✓ ERROR ✓ ünïcödé", Some("error")),
        (r#"{"msg":"héllo ✓","level":"warn"}"#, Some("warn")),
        ("msg=\"ü ✓\" level=info", Some("info")),
    ]);
}

#[test]
fn only_the_first_max_scan_bytes_are_looked_at() {
    let pad = "x".repeat(600);
    let d = detector();
    // A level well inside the window is found whatever follows.
    let huge = format!("{{\"level\":\"ERROR\",\"prompt\":\"{}\"}}", "y".repeat(1 << 20));
    assert_eq!(d.detect(&huge), Some(Severity::Error));
    // Past the window it isn't, neither as a field nor as text.
    assert_eq!(d.detect(&format!("{{\"prompt\":\"{pad}\",\"level\":\"error\"}}")), None);
    assert_eq!(d.detect(&format!("msg={pad} level=error")), None);
    assert_eq!(d.detect(&format!("{pad} ERROR")), None);
    // A key that starts inside the window has its value read past it.
    let small = Detector::new(&default_fields(), true, 20);
    assert_eq!(small.detect(r#"{"a":"bbbb","level":"warning"}"#), Some(Severity::Warn));
    assert_eq!(small.detect("msg=abcdefg level=warning"), Some(Severity::Warn));
    // A word cut by the window is not a level: `ERRORS` is not `ERROR`.
    let cut = Detector::new(&default_fields(), true, 14);
    assert_eq!(cut.detect("12345678 ERRORS found"), None);
    assert_eq!(cut.detect("1234567 ERROR found"), Some(Severity::Error));
    assert_eq!(cut.detect("12345678 ERROR"), Some(Severity::Error));
}

#[test]
fn fields_and_text_can_be_configured() {
    let only_text = Detector::new(&[], true, 512);
    assert_eq!(only_text.detect(r#"{"level":"info","msg":"WARN"}"#), Some(Severity::Warn));
    let only_fields = Detector::new(&["sev".to_string()], false, 512);
    assert_eq!(only_fields.detect("sev=error"), Some(Severity::Error));
    assert_eq!(only_fields.detect("level=error"), None, "not a configured key");
    assert_eq!(only_fields.detect("ERROR boom"), None, "text forms are off");
}

#[test]
fn sets_the_label_on_mixed_lines() {
    let batch = TestBatch::new()
        .stream(&[("app", "api")])
        .line(r#"{"level":"WARN","msg":"slow"}"#)
        .line("time=1 level=debug msg=tick")
        .line("2026-01-01T00:00:00Z ERROR boom")
        .line("no level at all")
        .line("[W] x");
    let out = run("{}", &batch);
    assert_eq!(labels_of(&out), [Some("warn"), Some("debug"), Some("error"), None, Some("warn")]);
    assert_eq!(out.entries[3].status, Status::Kept, "an undetected line is not touched");
    assert_eq!(out.entries[0].labels, [("app".into(), "api".into()), ("level".into(), "warn".into())]);
    assert!(out.entries.iter().all(|e| e.metadata.is_empty()));
    assert_eq!(out.count("detected:warn"), 2);
    assert_eq!(out.count("detected:debug"), 1);
    assert_eq!(out.count("detected:error"), 1);
    assert_eq!(out.count("undetected"), 1);
    assert_eq!(out.count("existing"), 0);
    assert_eq!(out.dropped_lines(), Vec::<&str>::new(), "level never drops");
}

#[test]
fn counts_are_per_batch() {
    let mut plugin = testing::plugin::<Level>("{}");
    let batch = TestBatch::new().line("ERROR a").line("b");
    for _ in 0..2 {
        let out = testing::run(&mut plugin, &batch);
        assert_eq!(out.counts, [("detected:error".to_string(), 1), ("undetected".to_string(), 1)]);
    }
}

#[test]
fn metadata_target_and_name() {
    let batch =
        TestBatch::new().stream(&[("app", "api")]).entry(5, "ERROR x", &[("trace_id", "t1")]).line("y");
    let out = run(r#"{"target": "metadata", "name": "severity"}"#, &batch);
    assert_eq!(
        out.entries[0].metadata,
        [("trace_id".into(), "t1".into()), ("severity".into(), "error".into())]
    );
    assert_eq!(out.entries[0].labels, [("app".into(), "api".into())]);
    assert_eq!(out.entries[1].status, Status::Kept);
    let out = run(r#"{"name": "lvl"}"#, &batch);
    assert_eq!(out.entries[0].label("lvl"), Some("error"));
}

#[test]
fn an_entry_that_already_has_its_level_is_not_patched() {
    let batch = TestBatch::new().stream(&[("level", "info")]).line(r#"{"level":"info"}"#);
    assert_eq!(run(r#"{"existing": "overwrite"}"#, &batch).entries[0].status, Status::Kept);
    let batch = TestBatch::new().entry(1, "WARN x", &[("level", "warn")]);
    assert_eq!(run(r#"{"target": "metadata"}"#, &batch).entries[0].status, Status::Kept);
}

#[test]
fn existing_values_normalize_keep_or_overwrite() {
    let batch = TestBatch::new()
        .stream(&[("level", "WARNING")])
        .line("ERROR in the line")
        .stream(&[("level", "loud")])
        .line("ERROR in the line")
        .stream(&[("level", "Info")])
        .line("nothing in the line")
        .stream(&[("app", "x")])
        .line("nothing in the line");

    let out = run("{}", &batch);
    assert_eq!(labels_of(&out), [Some("warn"), Some("loud"), Some("info"), None]);
    assert_eq!(out.entries[1].status, Status::Kept, "an unknown existing value is left alone");
    assert_eq!(out.count("existing"), 3);
    assert_eq!(out.count("undetected"), 1);

    let out = run(r#"{"existing": "keep"}"#, &batch);
    assert_eq!(labels_of(&out), [Some("WARNING"), Some("loud"), Some("Info"), None]);
    assert!(out.entries.iter().all(|e| e.status == Status::Kept));

    let out = run(r#"{"existing": "overwrite", "default": "unknown"}"#, &batch);
    // Detected levels replace; undetected lines keep their (normalised) value; the default is
    // only for entries with none.
    assert_eq!(labels_of(&out), [Some("error"), Some("error"), Some("info"), Some("unknown")]);
    assert_eq!(out.count("detected:error"), 2);
    assert_eq!(out.count("undetected"), 2);
    assert_eq!(out.count("existing"), 0);
}

#[test]
fn default_for_undetected_lines() {
    let batch = TestBatch::new().line("plain").line("INFO x").line("");
    let out = run(r#"{"default": "info"}"#, &batch);
    assert_eq!(labels_of(&out), [Some("info"), Some("info"), Some("info")]);
    let out = run(r#"{"default": "unknown"}"#, &batch);
    assert_eq!(labels_of(&out), [Some("unknown"), Some("info"), Some("unknown")]);
    let out = run(r#"{"default": "none"}"#, &batch);
    assert_eq!(labels_of(&out), [None, Some("info"), None]);
}

#[test]
fn a_stage_without_config_uses_the_defaults() {
    let out = testing::run(&mut testing::plugin::<Level>("null"), &TestBatch::new().line("level=warn"));
    assert_eq!(out.entries[0].label("level"), Some("warn"));
}

#[test]
fn rejects_bad_configs_with_exact_messages() {
    let cases = [
        (r#"{"name": "bad-name"}"#, "`name`: `bad-name` is not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*)"),
        (
            r#"{"name": "__level"}"#,
            "`name`: `__level`: names starting with `__` are reserved for temporary labels",
        ),
        (
            r#"{"default": "verbose"}"#,
            "`default`: unknown level `verbose`, expected one of debug, info, warn, error, fatal, unknown, none",
        ),
        (
            r#"{"fields": ["level", ""]}"#,
            "`fields[1]`: `` is not a key: keys are non-empty, without quotes, `=`, backslashes, spaces or control characters",
        ),
        (
            r#"{"fields": ["log level"]}"#,
            "`fields[0]`: `log level` is not a key: keys are non-empty, without quotes, `=`, backslashes, spaces or control characters",
        ),
        (
            r#"{"fields": ["level", "Level"]}"#,
            "`fields[1]`: `Level` is listed twice (keys match case-insensitively)",
        ),
        (r#"{"fields": [], "text": false}"#, "nothing to detect with: `fields` is empty and `text` is false"),
        (r#"{"max_scan_bytes": 0}"#, "`max_scan_bytes` must be at least 1"),
    ];
    for (config, want) in cases {
        assert_eq!(testing::init_error::<Level>(config), want, "{config}");
    }
    let e = testing::init_error::<Level>(r#"{"target": "labels"}"#);
    assert!(e.contains("unknown variant `labels`, expected `label` or `metadata`"), "{e}");
    let e = testing::init_error::<Level>(r#"{"existing": "replace"}"#);
    assert!(e.contains("unknown variant `replace`, expected one of `normalize`, `keep`, `overwrite`"), "{e}");
    let e = testing::init_error::<Level>(r#"{"feilds": []}"#);
    assert!(e.contains("unknown field `feilds`"), "{e}");
}

#[test]
fn workload_shapes() {
    // The reference workload's three formats (benches/src/workload.rs), each level.
    for (upper, lower) in [("DEBUG", "debug"), ("INFO", "info"), ("WARN", "warn"), ("ERROR", "error")] {
        let json = format!(
            r#"{{"time":"2026-01-01T00:00:00.000000Z","level":"{upper}","target":"router::upstream","message":"request failed","trace_id":"0af7651916cd43dd8448eb211c80319c"}}"#
        );
        let logfmt = format!(
            "time=2026-01-01T00:00:00.000000Z level={lower} target=gateway::auth msg=\"queue depth above soft limit\" trace_id=0af7"
        );
        let plain = format!(
            "2026-01-01T00:00:00.000000Z {upper:<5} [trainer::loop] checkpoint saved\nTraceback (most recent call last):"
        );
        for line in [json, logfmt, plain] {
            assert_eq!(detect(&line), Some(lower), "{line}");
        }
    }
}
