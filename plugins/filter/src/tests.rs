use sluice_sdk::native::NativePlugin;
use sluice_sdk::testing::{self, Outcome, Status, TestBatch};

use super::*;

fn filter(config: &str) -> NativePlugin<Filter> {
    testing::plugin::<Filter>(config)
}

fn run(config: &str, batch: &TestBatch) -> Outcome {
    testing::run(&mut filter(config), batch)
}

fn init_error(config: &str) -> String {
    testing::init_error::<Filter>(config)
}

/// A batch whose lines name what they are.
fn lines(lines: &[&str]) -> TestBatch {
    lines.iter().fold(TestBatch::new().stream(&[("app", "api")]), |b, l| b.line(l))
}

const HEALTH: &str = r#"{"rules": [{
    "name": "health_checks",
    "action": "drop",
    "when": {"line_contains": ["GET /health", "GET /ready", "kube-probe/"]}
}]}"#;

#[test]
fn drops_health_checks() {
    let batch = lines(&[
        r#"10.0.0.1 - - "GET /health HTTP/1.1" 200 2"#,
        r#"10.0.0.1 - - "GET /healthz HTTP/1.1" 200 2"#,
        r#"10.0.0.2 - - "GET /ready HTTP/1.1" 200 2"#,
        r#"10.0.0.3 - - "GET /metrics HTTP/1.1" 200 512 "-" "kube-probe/1.29""#,
        r#"10.0.0.4 - - "POST /v1/completions HTTP/1.1" 200 1024"#,
        r#"{"level":"INFO","message":"checking /health of upstream"}"#,
        "",
    ]);
    let out = run(HEALTH, &batch);
    assert_eq!(
        out.lines(),
        [
            r#"10.0.0.4 - - "POST /v1/completions HTTP/1.1" 200 1024"#,
            r#"{"level":"INFO","message":"checking /health of upstream"}"#,
            ""
        ]
    );
    assert_eq!(out.dropped_lines().len(), 4);
    assert!(out.entries.iter().all(|e| e.status != Status::Changed), "nothing is patched");
    assert_eq!(out.counts, [("dropped".to_string(), 4), ("dropped:health_checks".to_string(), 4)]);
}

#[test]
fn line_contains_takes_one_string() {
    let out = run(
        r#"{"rules": [{"action": "drop", "when": {"line_contains": "noise"}}]}"#,
        &lines(&["a noise", "b", "Noise"]),
    );
    assert_eq!(out.lines(), ["b", "Noise"], "case-sensitive");
    assert_eq!(out.counts, [("dropped".to_string(), 1)], "an unnamed rule counts only in `dropped`");
}

#[test]
fn line_regex_matches_anywhere_and_lists_are_alternatives() {
    let batch = lines(&["status=500 path=/a", "status=404", "status=200", "Timeout after 3s", "x"]);
    let out = run(r#"{"rules": [{"action": "drop", "when": {"line_regex": "status=[45]\\d\\d"}}]}"#, &batch);
    assert_eq!(out.lines(), ["status=200", "Timeout after 3s", "x"]);
    let out = run(
        r#"{"rules": [{"action": "drop", "when": {"line_regex": ["status=5", "(?i)timeout"]}}]}"#,
        &batch,
    );
    assert_eq!(out.lines(), ["status=404", "status=200", "x"]);
    let out =
        run(r#"{"rules": [{"action": "keep", "when": {"line_regex": "^x$"}}], "default": "drop"}"#, &batch);
    assert_eq!(out.lines(), ["x"]);
}

#[test]
fn label_conditions_exact_and_regex() {
    let batch = TestBatch::new()
        .stream(&[("app", "api"), ("env", "prod")])
        .line("api prod")
        .stream(&[("app", "api-gateway"), ("env", "dev")])
        .line("gateway dev")
        .stream(&[("app", "web")])
        .line("web");
    let out = run(r#"{"rules": [{"action": "drop", "when": {"labels": {"app": "api"}}}]}"#, &batch);
    assert_eq!(out.lines(), ["gateway dev", "web"], "exact, not a prefix");
    let out = run(r#"{"rules": [{"action": "drop", "when": {"labels_regex": {"app": "api.*"}}}]}"#, &batch);
    assert_eq!(out.lines(), ["web"]);
    let out = run(r#"{"rules": [{"action": "drop", "when": {"labels_regex": {"app": "ap"}}}]}"#, &batch);
    assert_eq!(out.lines(), ["api prod", "gateway dev", "web"], "fully anchored");
    let out = run(r#"{"rules": [{"action": "drop", "when": {"labels": {"env": ""}}}]}"#, &batch);
    assert_eq!(out.lines(), ["api prod", "gateway dev"], "a missing label is empty");
    let out = run(
        r#"{"rules": [{"action": "drop", "when": {"labels": {"app": "api"}, "labels_regex": {"env": "p.*"}}}]}"#,
        &batch,
    );
    assert_eq!(out.lines(), ["gateway dev", "web"], "all conditions must hold");
}

#[test]
fn metadata_conditions() {
    let batch = TestBatch::new()
        .stream(&[("app", "api")])
        .entry(1, "a", &[("user_agent", "kube-probe/1.29"), ("route", "/health")])
        .entry(2, "b", &[("user_agent", "curl/8"), ("route", "/health")])
        .entry(3, "c", &[]);
    let out = run(r#"{"rules": [{"action": "drop", "when": {"metadata": {"route": "/health"}}}]}"#, &batch);
    assert_eq!(out.lines(), ["c"]);
    let out = run(
        r#"{"rules": [{"action": "drop", "when": {"metadata": {"route": "/health"}, "metadata_regex": {"user_agent": "kube-probe/.*"}}}]}"#,
        &batch,
    );
    assert_eq!(out.lines(), ["b", "c"]);
    let out = run(r#"{"rules": [{"action": "drop", "when": {"metadata_regex": {"route": ""}}}]}"#, &batch);
    assert_eq!(out.lines(), ["a", "b"], "missing metadata is empty");
}

#[test]
fn level_from_label_metadata_or_detected_level() {
    let batch = TestBatch::new()
        .stream(&[("app", "api"), ("level", "DEBUG")])
        .entry(1, "label debug", &[("level", "error")])
        .stream(&[("app", "api"), ("level", "Warning")])
        .line("label warning")
        .stream(&[("app", "api")])
        .entry(2, "metadata dbg", &[("level", "dbg")])
        .entry(3, "metadata ERR", &[("level", "ERR")])
        .entry(4, "detected trace", &[("detected_level", "trace")])
        .entry(5, "no level", &[])
        .entry(6, "odd level", &[("level", "loud")]);
    let out = run(r#"{"rules": [{"action": "drop", "when": {"level": "debug"}}]}"#, &batch);
    assert_eq!(out.lines(), ["label warning", "metadata ERR", "no level", "odd level"], "the label wins");
    let out = run(
        r#"{"rules": [{"action": "keep", "when": {"level": ["WARN", "err", "FATAL"]}}], "default": "drop"}"#,
        &batch,
    );
    assert_eq!(out.lines(), ["label warning", "metadata ERR"]);
    let out = run(r#"{"rules": [{"action": "drop", "when": {"level": "unknown"}}]}"#, &batch);
    assert_eq!(
        out.lines(),
        ["label debug", "label warning", "metadata dbg", "metadata ERR", "detected trace"]
    );
}

#[test]
fn first_matching_rule_wins_then_default() {
    let config = r#"{
        "rules": [
            {"name": "errors", "action": "keep", "when": {"level": ["error", "fatal"]}},
            {"name": "health", "action": "drop", "when": {"line_contains": "/health"}},
            {"name": "debug", "action": "drop", "when": {"level": "debug"}}
        ]
    }"#;
    let batch = TestBatch::new()
        .stream(&[("app", "api"), ("level", "error")])
        .line("GET /health failed")
        .stream(&[("app", "api"), ("level", "info")])
        .line("GET /health ok")
        .line("served")
        .stream(&[("app", "api"), ("level", "debug")])
        .line("GET /health ok")
        .line("details");
    let out = run(config, &batch);
    assert_eq!(out.lines(), ["GET /health failed", "served"]);
    assert_eq!(
        out.counts,
        [
            ("dropped".to_string(), 3),
            ("kept:errors".to_string(), 1),
            ("dropped:health".to_string(), 2),
            ("dropped:debug".to_string(), 1)
        ]
    );
}

#[test]
fn default_drop_is_counted() {
    let config = r#"{"rules": [{"action": "keep", "when": {"labels": {"app": "api"}}}], "default": "drop"}"#;
    let batch =
        TestBatch::new().stream(&[("app", "api")]).line("a").stream(&[("app", "db")]).line("d1").line("d2");
    let out = run(config, &batch);
    assert_eq!(out.lines(), ["a"]);
    assert_eq!(out.counts, [("dropped".to_string(), 2), ("dropped:default".to_string(), 2)]);
}

#[test]
fn rules_for_other_streams_cost_nothing_and_do_nothing() {
    let config =
        r#"{"rules": [{"action": "drop", "when": {"labels": {"app": "api"}, "line_contains": "x"}}]}"#;
    let batch =
        TestBatch::new().stream(&[("app", "web")]).line("x").stream(&[("app", "api")]).line("x").line("y");
    let out = run(config, &batch);
    assert_eq!(out.lines(), ["x", "y"]);
    assert_eq!(out.entries[0].status, Status::Kept);
    assert_eq!(out.entries[1].status, Status::Dropped);
}

#[test]
fn counts_are_per_batch() {
    let mut plugin = filter(HEALTH);
    let batch = lines(&["GET /health", "ok"]);
    assert_eq!(testing::run(&mut plugin, &batch).count("dropped:health_checks"), 1);
    assert_eq!(testing::run(&mut plugin, &batch).count("dropped:health_checks"), 1);
}

#[test]
fn unicode_and_huge_lines() {
    let huge = format!("{}GET /ready{}", "é".repeat(50_000), "日".repeat(50_000));
    let batch = lines(&[&huge, "ünïcödé GET /health", "日本語"]);
    let out = run(HEALTH, &batch);
    assert_eq!(out.lines(), ["日本語"]);
    let out = run(r#"{"rules": [{"action": "drop", "when": {"line_regex": "^日本.$"}}]}"#, &batch);
    assert_eq!(out.lines().len(), 2);
}

#[test]
fn process_agrees_with_process_batch() {
    /// The filter through `process` only.
    struct PerEntry(Filter);
    impl Plugin for PerEntry {
        type Config = Config;
        fn init(config: Config) -> Result<Self, Error> {
            Filter::init(config).map(Self)
        }
        fn process(&mut self, entry: &mut Entry<'_>) -> Result<Verdict, Error> {
            self.0.process(entry)
        }
    }
    let config = r#"{"rules": [
        {"action": "keep", "when": {"labels": {"app": "api"}, "level": "error"}},
        {"action": "drop", "when": {"line_contains": ["GET /health", "probe"], "metadata_regex": {"zone": "eu-.*"}}},
        {"action": "drop", "when": {"labels_regex": {"app": "api|db"}, "level": ["debug", "unknown"]}}
    ]}"#;
    let mut batch = TestBatch::new();
    for app in ["api", "db", "web"] {
        for level in ["error", "debug", "info"] {
            batch = batch.stream(&[("app", app), ("level", level)]);
            for (line, zone) in [("GET /health", "eu-1"), ("probe", "us-1"), ("work", "eu-2")] {
                batch = batch.entry(1, line, &[("zone", zone)]);
            }
        }
        batch = batch.stream(&[("app", app)]).entry(1, "GET /health", &[("zone", "eu-3")]).line("no level");
    }
    let batched = run(config, &batch);
    let single = testing::run(&mut testing::plugin::<PerEntry>(config), &batch);
    assert_eq!(batched.entries, single.entries);
    assert_eq!(batched.dropped_lines().len(), 17, "{:#?}", batched.entries);
}

// --- configuration errors ---

#[test]
fn rejects_configs_without_rules() {
    assert_eq!(init_error("{}"), "no `rules`: the filter would keep every entry");
    assert_eq!(init_error(""), "no `rules`: the filter would keep every entry");
    assert_eq!(init_error(r#"{"default": "drop"}"#), "no `rules`: the filter would drop every entry");
}

#[test]
fn rejects_unknown_and_missing_keys() {
    assert_eq!(
        init_error(r#"{"rules": [{"action": "drop", "when": {"line_has": "x"}}]}"#),
        "invalid config at `rules[0].when.line_has`: unknown field `line_has`, expected one of `line_contains`, \
         `line_regex`, `labels`, `labels_regex`, `metadata`, `metadata_regex`, `level` at line 1 column 49"
    );
    assert_eq!(
        init_error(r#"{"rules": [{"action": "discard", "when": {"line_contains": "x"}}]}"#),
        "invalid config at `rules[0].action`: unknown variant `discard`, expected `keep` or `drop` at line 1 column 31"
    );
    assert_eq!(
        init_error(r#"{"rules": [{"when": {"line_contains": "x"}}]}"#),
        "invalid config at `rules[0]`: missing field `action` at line 1 column 43"
    );
    assert_eq!(
        init_error(r#"{"rules": [{"action": "drop"}]}"#),
        "invalid config at `rules[0]`: missing field `when` at line 1 column 29"
    );
    assert_eq!(
        init_error(r#"{"rules": [{"action": "drop", "when": {"line_contains": 3}}]}"#),
        "invalid config at `rules[0].when.line_contains`: invalid type: integer `3`, expected a string or a list of \
         strings at line 1 column 57"
    );
    assert_eq!(
        init_error(r#"{"default": "maybe", "rules": []}"#),
        "invalid config at `default`: unknown variant `maybe`, expected `keep` or `drop` at line 1 column 19"
    );
}

#[test]
fn rejects_bad_conditions_with_the_rule_index() {
    let cases = [
        (
            r#"{"action": "drop", "when": {}}"#,
            "`rules[1].when`: no condition: set one or more of line_contains, line_regex, labels, labels_regex, metadata, metadata_regex, level (`default` covers every other entry)",
        ),
        (
            r#"{"action": "drop", "when": {"line_contains": []}}"#,
            "`rules[1].when.line_contains`: the list is empty",
        ),
        (
            r#"{"action": "drop", "when": {"line_contains": ""}}"#,
            "`rules[1].when.line_contains`: an empty string is in every line",
        ),
        (
            r#"{"action": "drop", "when": {"line_contains": ["a", ""]}}"#,
            "`rules[1].when.line_contains[1]`: an empty string is in every line",
        ),
        (
            r#"{"action": "drop", "when": {"line_regex": "("}}"#,
            "`rules[1].when.line_regex`: `(` is not a valid regex: unclosed group",
        ),
        (
            r#"{"action": "drop", "when": {"line_regex": ["a", "b)"]}}"#,
            "`rules[1].when.line_regex[1]`: `b)` is not a valid regex: unopened group",
        ),
        (
            r#"{"action": "drop", "when": {"line_regex": []}}"#,
            "`rules[1].when.line_regex`: the list is empty",
        ),
        (r#"{"action": "drop", "when": {"labels": {}}}"#, "`rules[1].when.labels`: the map is empty"),
        (
            r#"{"action": "drop", "when": {"labels": {"a-b": "c"}}}"#,
            "`rules[1].when.labels`: `a-b` is not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*)",
        ),
        (
            r#"{"action": "drop", "when": {"labels_regex": {"app": "[a"}}}"#,
            "`rules[1].when.labels_regex.app`: `[a` is not a valid regex: unclosed character class",
        ),
        (
            r#"{"action": "drop", "when": {"metadata": {"1x": "c"}}}"#,
            "`rules[1].when.metadata`: `1x` is not a valid metadata name ([a-zA-Z_][a-zA-Z0-9_]*)",
        ),
        (
            r#"{"action": "drop", "when": {"metadata_regex": {"x": "*"}}}"#,
            "`rules[1].when.metadata_regex.x`: `*` is not a valid regex: repetition operator missing expression",
        ),
        (
            r#"{"action": "drop", "when": {"level": "verbos"}}"#,
            "`rules[1].when.level`: `verbos` is not a level: expected debug, info, warn, error, fatal or unknown (or a common spelling of one, such as WARNING, ERR, critical)",
        ),
        (
            r#"{"action": "drop", "when": {"level": ["info", "nope"]}}"#,
            "`rules[1].when.level[1]`: `nope` is not a level: expected debug, info, warn, error, fatal or unknown (or a common spelling of one, such as WARNING, ERR, critical)",
        ),
        (r#"{"action": "drop", "when": {"level": []}}"#, "`rules[1].when.level`: the list is empty"),
        (
            r#"{"name": "health checks", "action": "drop", "when": {"level": "info"}}"#,
            "`rules[1].name`: `health checks` cannot name a counter: use 1 to 56 characters of a-z, A-Z, 0-9 and _:.-",
        ),
        (
            r#"{"name": "", "action": "keep", "when": {"level": "info"}}"#,
            "`rules[1].name`: `` cannot name a counter: use 1 to 56 characters of a-z, A-Z, 0-9 and _:.-",
        ),
    ];
    for (rule, expected) in cases {
        let config = format!(r#"{{"rules": [{{"action": "keep", "when": {{"level": "error"}}}}, {rule}]}}"#);
        assert_eq!(init_error(&config), expected, "{rule}");
    }
    let long = "n".repeat(57);
    let config =
        format!(r#"{{"rules": [{{"name": "{long}", "action": "drop", "when": {{"level": "info"}}}}]}}"#);
    assert!(init_error(&config).starts_with("`rules[0].name`: `nnnn"));
    let ok = "n".repeat(56);
    filter(&format!(r#"{{"rules": [{{"name": "{ok}", "action": "drop", "when": {{"level": "info"}}}}]}}"#));
}
