//! The outputs through a toy parse plugin (`a=1;b=2` lines), the config forms and every
//! rejection, the level table, unescaping and the guard.

use serde::Deserialize;
use sluice_sdk::prelude::*;
use sluice_sdk::testing::{self, Status, TestBatch};

use super::*;

/// Lines `key=value;key=value`; a line without `=` is not of the format. `key` alone is a key
/// without a value.
#[derive(Debug)]
struct Toy {
    keys: Vec<String>,
}

impl Extract for Toy {
    fn extract(&mut self, line: &str, values: &mut Values) -> bool {
        if !line.contains('=') {
            return false;
        }
        let mut at = 0;
        for pair in line.split(';') {
            let (key, range) = match pair.split_once('=') {
                Some((k, v)) => (k, Some(at + k.len() + 1..at + k.len() + 1 + v.len())),
                None => (pair, None),
            };
            if let Some(i) = self.keys.iter().position(|k| k == key) {
                match range {
                    Some(r) => values.set(i, r),
                    None => values.set_null(i),
                }
            }
            at += pair.len() + 1;
        }
        true
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ToyConfig {
    #[serde(default)]
    labels: Option<OutputList>,
    #[serde(default)]
    metadata: Option<OutputList>,
    #[serde(default)]
    line: Option<String>,
    #[serde(default)]
    max_label_values: Option<usize>,
    #[serde(default)]
    overwrite: Option<bool>,
}

struct ToyParse(Parser<Toy>);

impl Plugin for ToyParse {
    type Config = ToyConfig;

    fn init(c: ToyConfig) -> Result<Self, Error> {
        let outputs = Outputs::new(OutputsConfig {
            labels: c.labels,
            metadata: c.metadata,
            line: c.line,
            max_label_values: c.max_label_values,
            overwrite: c.overwrite,
        })?;
        outputs.check_fields(
            |path| {
                if path.contains(';') { Err(format!("`{path}` has a `;`")) } else { Ok(()) }
            },
        )?;
        let keys = outputs.fields().iter().map(|f| f.path.clone()).collect();
        Ok(Self(Parser::new(outputs, Toy { keys })))
    }

    fn process(&mut self, entry: &mut Entry<'_>) -> Result<Verdict, Error> {
        self.0.process(entry)
    }

    fn process_batch(&mut self, batch: &mut Batch<'_>) -> Result<(), Error> {
        self.0.process_batch(batch)
    }
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
}

fn run(config: &str, batch: TestBatch) -> testing::Outcome {
    testing::run(&mut testing::plugin::<ToyParse>(config), &batch)
}

#[test]
fn the_list_form_names_outputs_after_their_fields() {
    let out = run(
        r#"{"labels": ["level", "http.status", "9lives"], "metadata": ["trace-id"]}"#,
        TestBatch::new().stream(&[("app", "api")]).line("level=info;http.status=200;9lives=yes;trace-id=t1"),
    );
    let e = &out.entries[0];
    assert_eq!(e.status, Status::Changed);
    assert_eq!(
        e.labels,
        pairs(&[("_9lives", "yes"), ("app", "api"), ("http_status", "200"), ("level", "info")])
    );
    assert_eq!(e.metadata, pairs(&[("trace_id", "t1")]));
    assert_eq!(e.line, "level=info;http.status=200;9lives=yes;trace-id=t1");
}

#[test]
fn the_map_form_names_outputs_and_transforms_values() {
    let config = r#"{
        "labels": {"severity": {"field": "lvl", "transform": "level"}, "env": {"transform": "lowercase"}},
        "metadata": {"status": "http.status", "who": {"field": "user"}}
    }"#;
    let out = run(config, TestBatch::new().line("lvl=WARNING;env=Prod;http.status=503;user=Ann"));
    let e = &out.entries[0];
    assert_eq!(e.labels, pairs(&[("env", "prod"), ("job", "test"), ("severity", "warn")]));
    assert_eq!(e.metadata, pairs(&[("status", "503"), ("who", "Ann")]));
}

#[test]
fn transforms_apply_to_metadata_too_and_unknown_levels_stay_as_they_are() {
    let config = r#"{"metadata": {"level": {"transform": "level"}, "name": {"transform": "lowercase"}}}"#;
    let out = run(config, TestBatch::new().line("level=Chatty;name=ÉCOLE").line("level=crit;name=x"));
    assert_eq!(out.entries[0].metadata, pairs(&[("level", "Chatty"), ("name", "école")]));
    assert_eq!(out.entries[1].metadata, pairs(&[("level", "fatal"), ("name", "x")]));
}

#[test]
fn line_rewrites_the_line_and_outputs_read_the_original() {
    let config = r#"{"labels": ["level"], "line": "msg"}"#;
    let out =
        run(config, TestBatch::new().line("level=info;msg=hello").line("level=info;msg=").line("level=info"));
    assert_eq!(out.lines(), ["hello", "level=info;msg=", "level=info"]);
    assert!(out.entries.iter().all(|e| e.label("level") == Some("info")));
}

#[test]
fn a_line_already_equal_to_the_field_is_not_rewritten() {
    let out = run(r#"{"line": "msg"}"#, TestBatch::new().line("msg=x;y=1"));
    assert_eq!(out.lines(), ["x"]);
    // The line `a=` has the field `a` empty: nothing to do.
    let out = run(r#"{"line": "a"}"#, TestBatch::new().line("a="));
    assert_eq!(out.entries[0].status, Status::Kept);
}

#[test]
fn missing_empty_and_valueless_fields_give_no_output() {
    let config = r#"{"labels": ["a", "b", "c"], "metadata": ["d"]}"#;
    let out = run(config, TestBatch::new().line("a=;b;x=1"));
    assert_eq!(out.entries[0].status, Status::Kept);
    assert_eq!(out.count(UNPARSED), 0, "parsed, just nothing wanted in it");
}

#[test]
fn the_first_occurrence_of_a_field_wins() {
    let out = run(r#"{"labels": ["a"]}"#, TestBatch::new().line("a=1;a=2").line("a;a=2"));
    assert_eq!(out.entries[0].label("a"), Some("1"));
    assert_eq!(out.entries[1].status, Status::Kept, "a valueless first occurrence wins too");
}

#[test]
fn lines_of_another_format_pass_untouched_and_are_counted() {
    let out = run(r#"{"labels": ["a"]}"#, TestBatch::new().line("plain text").line("").line("a=1").line("x"));
    assert_eq!(out.lines(), ["plain text", "", "a=1", "x"]);
    let statuses: Vec<Status> = out.entries.iter().map(|e| e.status).collect();
    assert_eq!(statuses, [Status::Kept, Status::Kept, Status::Changed, Status::Kept]);
    assert_eq!(out.count(UNPARSED), 3);
    assert_eq!(out.count(LABEL_OVERFLOW), 0);
}

#[test]
fn entries_already_right_get_no_patch() {
    let batch = TestBatch::new().stream(&[("level", "info")]).entry(1, "level=info;t=x", &[("t", "x")]);
    let out = run(r#"{"labels": ["level"], "metadata": ["t"]}"#, batch);
    assert_eq!(out.entries[0].status, Status::Kept);
}

#[test]
fn overwrite_replaces_existing_labels_and_metadata_by_default() {
    let batch = TestBatch::new().stream(&[("level", "info")]).entry(1, "level=error;t=new", &[("t", "old")]);
    let out = run(r#"{"labels": ["level"], "metadata": ["t"]}"#, batch.clone());
    assert_eq!(out.entries[0].labels, pairs(&[("level", "error")]));
    assert_eq!(out.entries[0].metadata, pairs(&[("t", "new")]));

    let out = run(r#"{"labels": ["level"], "metadata": ["t"], "overwrite": false}"#, batch);
    assert_eq!(out.entries[0].status, Status::Kept);
    let batch = TestBatch::new().stream(&[("app", "x")]).line("level=error;t=new");
    let out = run(r#"{"labels": ["level"], "metadata": ["t"], "overwrite": false}"#, batch);
    let e = &out.entries[0];
    assert_eq!((e.label("level"), e.metadata_value("t")), (Some("error"), Some("new")), "absent: set");
}

#[test]
fn the_guard_sends_new_values_beyond_the_cap_to_metadata_and_counts_them() {
    let mut plugin = testing::plugin::<ToyParse>(r#"{"labels": ["user"], "max_label_values": 2}"#);
    let batch = TestBatch::new()
        .stream(&[("app", "x")])
        .line("user=a")
        .line("user=b")
        .line("user=c")
        .line("user=a")
        .line("user=d");
    let out = testing::run(&mut plugin, &batch);
    let got: Vec<(Option<&str>, Option<&str>)> =
        out.entries.iter().map(|e| (e.label("user"), e.metadata_value("user"))).collect();
    assert_eq!(
        got,
        [(Some("a"), None), (Some("b"), None), (None, Some("c")), (Some("a"), None), (None, Some("d"))]
    );
    assert_eq!(out.count(LABEL_OVERFLOW), 2);
    // Per instance, across batches: `b` is still admitted, `e` is not.
    let out =
        testing::run(&mut plugin, &TestBatch::new().stream(&[("app", "x")]).line("user=b").line("user=e"));
    assert_eq!(out.entries[0].label("user"), Some("b"));
    assert_eq!(out.entries[1].metadata_value("user"), Some("e"));
    assert_eq!(out.count(LABEL_OVERFLOW), 1);
}

#[test]
fn an_overflowing_value_keeps_the_existing_label_and_respects_overwrite_for_metadata() {
    let config = r#"{"labels": ["user"], "max_label_values": 1}"#;
    let batch =
        TestBatch::new().stream(&[("user", "z")]).line("user=a").entry(2, "user=b", &[("user", "old")]);
    let out = run(config, batch.clone());
    assert_eq!(out.entries[0].labels, pairs(&[("user", "a")]));
    assert_eq!((out.entries[1].label("user"), out.entries[1].metadata_value("user")), (Some("z"), Some("b")));
    let out = run(r#"{"labels": ["user"], "max_label_values": 1, "overwrite": false}"#, batch);
    assert_eq!(out.entries[0].status, Status::Kept);
    assert_eq!(out.entries[1].status, Status::Kept);
}

#[test]
fn the_guard_counts_distinct_values_past_its_small_list() {
    let mut plugin = testing::plugin::<ToyParse>(r#"{"labels": ["n"], "max_label_values": 40}"#);
    let mut batch = TestBatch::new().stream(&[("app", "x")]);
    for round in 0..2 {
        for n in 0..50 {
            batch = batch.line(&format!("n={n};round={round}"));
        }
    }
    let out = testing::run(&mut plugin, &batch);
    let labelled = out.entries.iter().filter(|e| e.label("n").is_some()).count();
    assert_eq!(labelled, 80, "values 0..40, twice");
    assert_eq!(out.count(LABEL_OVERFLOW), 20);
    assert_eq!(out.entries[45].metadata_value("n"), Some("45"));
    assert_eq!(out.entries[50 + 39].label("n"), Some("39"));
}

#[test]
fn the_guard_admits_up_to_its_cap() {
    for max in [1, 15, 16, 17, 100] {
        let mut guard_plugin =
            testing::plugin::<ToyParse>(&format!(r#"{{"labels": ["n"], "max_label_values": {max}}}"#));
        let batch = (0..max + 5).fold(TestBatch::new(), |b, n| b.line(&format!("n={n}")));
        let out = testing::run(&mut guard_plugin, &batch);
        assert_eq!(out.count(LABEL_OVERFLOW), 5, "max {max}");
    }
}

fn init_error(config: &str) -> String {
    testing::init_error::<ToyParse>(config)
}

#[test]
fn rejects_bad_output_configs_with_exact_messages() {
    let cases = [
        (r#"{}"#, "nothing to do: set at least one of `labels`, `metadata` and `line`"),
        (r#"{"labels": []}"#, "nothing to do: set at least one of `labels`, `metadata` and `line`"),
        (r#"{"labels": [""]}"#, "`labels`: a field path must not be empty"),
        (r#"{"metadata": {"x": ""}}"#, "`metadata.x`: the field path must not be empty"),
        (r#"{"metadata": {"x": {"field": ""}}}"#, "`metadata.x`: the field path must not be empty"),
        (r#"{"line": ""}"#, "`line`: the field path must not be empty"),
        (
            r#"{"labels": {"http.status": "http.status"}}"#,
            "`labels`: `http.status` is not a valid label name: names must match [a-zA-Z_][a-zA-Z0-9_]*",
        ),
        (
            r#"{"metadata": {"1x": "a"}}"#,
            "`metadata`: `1x` is not a valid metadata name: names must match [a-zA-Z_][a-zA-Z0-9_]*",
        ),
        (
            r#"{"labels": ["__tenant_id__"]}"#,
            "`labels`: `__tenant_id__` starts with `__`, which is reserved for sluice's own labels",
        ),
        (
            r#"{"metadata": {"__x": "a"}}"#,
            "`metadata.__x`: `__x` starts with `__`, which is reserved for sluice's own labels",
        ),
        (
            r#"{"labels": ["_.x"]}"#,
            "`labels`: `__x` starts with `__`, which is reserved for sluice's own labels",
        ),
        (
            r#"{"labels": ["http.status", "http_status"]}"#,
            "`labels`: two outputs named `http_status` (from the fields `http.status` and `http_status`)",
        ),
        (
            r#"{"metadata": ["a.b", {"a_b": "c"}]}"#,
            "invalid config at `metadata[1]`: invalid type: map, expected a string at line 1 column 21",
        ),
        (
            r#"{"labels": ["level"], "metadata": {"level": "lvl"}}"#,
            "`level` is both a label and metadata: a label whose value overflows `max_label_values` goes to \
             metadata under its own name, so a name can be only one of them",
        ),
        (
            r#"{"labels": ["a"], "max_label_values": 0}"#,
            "`max_label_values`: must be between 1 and 100000, got 0",
        ),
        (
            r#"{"labels": ["a"], "max_label_values": 100001}"#,
            "`max_label_values`: must be between 1 and 100000, got 100001",
        ),
        (
            r#"{"labels": ["a"], "max_label_values": -1}"#,
            "invalid config at `max_label_values`: invalid value: integer `-1`, expected usize at line 1 column 40",
        ),
        (r#"{"labels": ["a;b"]}"#, "`labels`: `a;b` has a `;`"),
        (r#"{"labels": {"x": "a;b"}}"#, "`labels.x`: `a;b` has a `;`"),
        (r#"{"line": "a;b"}"#, "`line`: `a;b` has a `;`"),
        (
            r#"{"labels": "level"}"#,
            "invalid config at `labels`: invalid type: string \"level\", expected a list of field names or a map \
             of output name to field path at line 1 column 18",
        ),
        (
            r#"{"labels": {"a": 1}}"#,
            "invalid config at `labels.a`: invalid type: integer `1`, expected a field path or a map with \
             `field` and `transform` at line 1 column 18",
        ),
        (
            r#"{"labels": {"a": {"transfrom": "level"}}}"#,
            "invalid config at `labels.a.transfrom`: unknown field `transfrom`, expected `field` or `transform` \
             at line 1 column 29",
        ),
        (
            r#"{"labels": {"a": {"transform": "upper"}}}"#,
            "invalid config at `labels.a.transform`: unknown variant `upper`, expected `level` or `lowercase` \
             at line 1 column 38",
        ),
        (
            r#"{"labels": {"a": "x", "a": "y"}}"#,
            "invalid config at `labels`: `a` is given twice at line 1 column 31",
        ),
        (
            r#"{"labels": ["a"], "overwrite": "yes"}"#,
            "invalid config at `overwrite`: invalid type: string \"yes\", expected a boolean at line 1 column 36",
        ),
    ];
    let wrong: Vec<String> = cases
        .iter()
        .filter(|(config, expected)| init_error(config) != *expected)
        .map(|(config, _)| format!("{config}\n  got: {}", init_error(config)))
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn levels_normalise_case_insensitively() {
    let table = [
        (
            "debug",
            &["TRACE", "trace", "Trc", "DEBUG", "debug", "DBG", "d", "10", "20", " DEBUG ", "verbose", "T"][..],
        ),
        (
            "info",
            &["INFO", "info", "Info", "INF", "INFORMATION", "informational", "NOTICE", "I", "30", "INFO "],
        ),
        ("warn", &["WARN", "warn", "WRN", "WARNING", "Warning", "w", "40"]),
        ("error", &["ERROR", "error", "ERR", "eror", "E", "50"]),
        (
            "fatal",
            &["FATAL", "fatal", "FTL", "CRITICAL", "CRIT", "PANIC", "EMERG", "emergency", "ALERT", "f", "60"],
        ),
    ];
    for (level, spellings) in table {
        for s in spellings {
            assert_eq!(normalize_level(s), Some(level), "{s}");
        }
    }
    for unknown in ["", " ", "x", "0", "70", "information!", "infos", "warnings", "é", "verbosely"] {
        assert_eq!(normalize_level(unknown), None, "{unknown}");
    }
}

#[test]
fn lowercase_borrows_when_it_can() {
    let mut scratch = String::new();
    assert_eq!(level::lowercase("abc", &mut scratch), "abc");
    assert!(scratch.is_empty());
    assert_eq!(level::lowercase("ABC-d", &mut scratch), "abc-d");
    assert_eq!(level::lowercase("ÀB", &mut scratch), "àb");
    assert_eq!(level::lowercase("àb", &mut String::new()), "àb");
}

#[test]
fn unescape_decodes_json_escapes_and_keeps_unknown_ones() {
    let cases = [
        (r#"plain"#, "plain"),
        (r#"a\"b\\c\/d"#, "a\"b\\c/d"),
        (r#"\b\f\n\r\t"#, "\u{8}\u{c}\n\r\t"),
        (r#"\u00e9t\u00C9"#, "étÉ"),
        (r#"\ud83d\ude00!"#, "😀!"),
        (r#"\ud83dx"#, "\u{fffd}x"),
        (r#"\ude00"#, "\u{fffd}"),
        (r#"\ud83d\u0041"#, "\u{fffd}A"),
        (r#"\x\u12"#, "\\x\\u12"),
        (r#"end\"#, "end\\"),
        (r#"é\q"#, "é\\q"),
    ];
    for (escaped, expected) in cases {
        let mut out = String::from(">");
        unescape_into(escaped, &mut out);
        assert_eq!(out, format!(">{expected}"), "{escaped}");
    }
}

#[test]
fn values_keep_the_first_occurrence_and_reset() {
    let source = "abcdef";
    let mut v = Values::new(3);
    assert_eq!(v.len(), 3);
    v.set(0, 0..2);
    v.set(0, 2..4);
    v.set_unescaped(1, r#"x\ny"#);
    v.set_unescaped(1, "z");
    v.set(5, 0..1);
    assert!(!v.all_found());
    v.set_null(2);
    v.set(2, 0..1);
    assert!(v.all_found());
    assert_eq!((v.get(0, source), v.get(1, source), v.get(2, source)), (Some("ab"), Some("x\ny"), None));
    v.reset();
    assert!(!v.is_found(0) && !v.is_found(1) && !v.is_found(2));
    assert_eq!(v.get(1, source), None);
}

#[test]
fn sanitize_names_fields_like_logql() {
    assert_eq!(sanitize("kubernetes.labels.app"), "kubernetes_labels_app");
    assert_eq!(sanitize("a-b/c d"), "a_b_c_d");
    assert_eq!(sanitize("2xx"), "_2xx");
    assert_eq!(sanitize("é"), "_");
}
