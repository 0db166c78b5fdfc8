//! `sluice plugin test` and `sluice plugin new`, the commands for plugin authors, run as the
//! real binary: exact output over a push body and over NDJSON, clear errors and a non-zero exit
//! when the plugin rejects its config or traps, and a new crate from the template.

use std::path::Path;

use crate::support::plugins::plugin;
use crate::support::sluice::{BIN, Output, run_to_end};

const FILTER_CONFIG: &str =
    r#"{"drop_if_contains": "GET /health", "label": "team", "value": "payments", "redact": "hunter2"}"#;

/// `sluice plugin test <plugin> args…` in `dir`.
fn plugin_test(dir: &Path, name: &str, args: &[&str]) -> Output {
    let path = plugin(name).to_string_lossy().to_string();
    let mut all = vec!["plugin", "test", path.as_str()];
    all.extend(args);
    run_to_end(&all, dir)
}

/// The keyed hash example-filter records for `line` under the secret `secret`.
fn hash(secret: &str, line: &str) -> String {
    sluice_sdk::to_hex(&sluice_sdk::hash::keyed_hash(
        &sluice_sdk::hash::derive_key(secret.as_bytes()),
        line.as_bytes(),
    ))
}

/// The last line of stdout is the summary; the time per entry varies, the rest is exact.
fn split_summary(out: &Output) -> (Vec<&str>, &str) {
    let mut lines: Vec<&str> = out.stdout.lines().collect();
    let summary = lines.pop().unwrap_or_default();
    (lines, summary)
}

#[track_caller]
fn assert_summary(summary: &str, counts: &str, batches: &str, plugin: &str) {
    let prefix = format!("summary: {counts}; {batches}, ");
    let suffix = format!(" µs per entry ({plugin} 0.1.0)");
    assert!(summary.starts_with(&prefix) && summary.ends_with(&suffix), "summary: {summary}");
    let rate = &summary[prefix.len()..summary.len() - suffix.len()];
    assert!(rate.parse::<f64>().is_ok_and(|r| r > 0.0), "time per entry: {summary}");
}

#[test]
fn plugin_test_shows_each_entry_of_a_push_body_kept_changed_or_dropped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let body = r#"{"streams": [
      {"stream": {"app": "api"}, "values": [
        ["1700000000000000000", "GET /health 200"],
        ["1700000000000000001", "POST /login password=hunter2", {"trace_id": "t1"}],
        ["1700000000000000002", "POST /orders 201"]
      ]},
      {"stream": {"app": "db", "team": "payments"}, "values": [["1700000000000000003", "query ok", {"rows": "3"}]]}
    ]}"#;
    std::fs::write(dir.path().join("push.json"), body).expect("write");
    let out = plugin_test(
        dir.path(),
        "example-filter",
        &[
            "--config",
            FILTER_CONFIG,
            "--input",
            "push.json",
            "--hash-key",
            "e2e secret",
            "--tenant",
            "team-a",
        ],
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    let (lines, summary) = split_summary(&out);
    let h = hash("e2e secret", "POST /login password=hunter2");
    assert_eq!(
        lines,
        [
            r#"dropped  {app="api"} "GET /health 200""#.to_string(),
            format!(
                r#"changed  {{app="api"}} "POST /login password=hunter2" {{trace_id="t1"}} => labels {{app="api", team="payments"}}, line "POST /login password=[REDACTED]", metadata {{trace_id="t1", redacted_hash="{h}"}}"#
            ),
            r#"changed  {app="api"} "POST /orders 201" => labels {app="api", team="payments"}"#.to_string(),
            r#"kept     {app="db", team="payments"} "query ok" {rows="3"}"#.to_string(),
        ],
        "{out:?}"
    );
    assert_summary(summary, "in 4, out 3, changed 2, dropped 1, added 0", "1 batch", "example-filter");
    // The plugin's own log line is shown, with its name, and the tenant given.
    assert!(
        out.stderr.contains("[plugin example-filter] DEBUG redacted 1 entries of tenant team-a"),
        "{}",
        out.stderr
    );
}

/// Plain-text lines (which get `{source="plugin-test"}` and the current time) and archive
/// records, mixed.
const NDJSON: &str = concat!(
    "GET /health from the load balancer\n",
    "user logged in with hunter2\n",
    r#"{"ts":"1709251199123456789","time":"2024-02-29T23:59:59.123456789Z","labels":{"app":"api","team":"core"},"structured_metadata":{"trace_id":"t9"},"line":"archived hunter2"}"#,
    "\n",
    r#"{"level":"info","msg":"a JSON log line is plain text"}"#,
    "\n",
);

#[test]
fn plugin_test_over_ndjson_lines_as_text() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("lines.ndjson"), NDJSON).expect("write");
    let out = plugin_test(
        dir.path(),
        "example-filter",
        &["--config", FILTER_CONFIG, "--input", "lines.ndjson", "--hash-key", "k", "--batch-size", "2"],
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    let (lines, summary) = split_summary(&out);
    let (h1, h2) = (hash("k", "user logged in with hunter2"), hash("k", "archived hunter2"));
    assert_eq!(
        lines,
        [
            r#"dropped  {source="plugin-test"} "GET /health from the load balancer""#.to_string(),
            format!(
                r#"changed  {{source="plugin-test"}} "user logged in with hunter2" => labels {{source="plugin-test", team="payments"}}, line "user logged in with [REDACTED]", metadata {{redacted_hash="{h1}"}}"#
            ),
            r#"changed  {source="plugin-test"} "{\"level\":\"info\",\"msg\":\"a JSON log line is plain text\"}" => labels {source="plugin-test", team="payments"}"#.to_string(),
            format!(
                r#"changed  {{app="api", team="core"}} "archived hunter2" {{trace_id="t9"}} => labels {{app="api", team="payments"}}, line "archived [REDACTED]", metadata {{trace_id="t9", redacted_hash="{h2}"}}"#
            ),
        ],
        "{out:?}"
    );
    assert_summary(summary, "in 4, out 3, changed 3, dropped 1, added 0", "2 batches", "example-filter");
}

#[test]
fn plugin_test_writes_the_output_as_archive_ndjson_with_the_summary_on_stderr() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("lines.ndjson"), NDJSON).expect("write");
    let config = r#"{"drop_if_contains": "GET /health", "redact": "hunter2"}"#;
    let out = plugin_test(
        dir.path(),
        "example-filter",
        &["--config", config, "--input", "lines.ndjson", "--format", "ndjson"],
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    let records: Vec<serde_json::Value> =
        out.stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    assert_eq!(records.len(), 3, "{}", out.stdout);
    // Without --hash-key, the hash uses sluice's public default key, as a stage without one.
    let default_key = "sluice default hash key: set hash_key";
    let plain = |r: &serde_json::Value| {
        let ts: i64 = r["ts"].as_str().and_then(|t| t.parse().ok()).expect("ts");
        assert!(ts > 1_700_000_000_000_000_000, "now: {r}");
        assert!(r["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{r}");
        (r["labels"].clone(), r["structured_metadata"].clone(), r["line"].clone())
    };
    assert_eq!(
        plain(&records[0]),
        (
            serde_json::json!({"source": "plugin-test"}),
            serde_json::json!({"redacted_hash": hash(default_key, "user logged in with hunter2")}),
            serde_json::json!("user logged in with [REDACTED]")
        )
    );
    assert_eq!(records[1]["line"], r#"{"level":"info","msg":"a JSON log line is plain text"}"#);
    assert_eq!(
        records[2],
        serde_json::json!({"tenant": "fake", "ts": "1709251199123456789", "time": "2024-02-29T23:59:59.123456789Z",
            "labels": {"app": "api", "team": "core"},
            "structured_metadata": {"trace_id": "t9", "redacted_hash": hash(default_key, "archived hunter2")},
            "line": "archived [REDACTED]"})
    );
    let summary = out.stderr.lines().find(|l| l.starts_with("summary: ")).unwrap_or_default();
    assert_summary(summary, "in 4, out 3, changed 2, dropped 1, added 0", "1 batch", "example-filter");
}

#[test]
fn plugin_test_shows_the_plugin_s_message_when_it_rejects_its_config() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("in.txt"), "a line\n").expect("write");
    let out = plugin_test(dir.path(), "reject-config", &["--config", "{ok: false}", "--input", "in.txt"]);
    assert!(out.code.is_some_and(|c| c != 0), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    let expected = format!(
        "error: plugin {}: the plugin rejected its configuration: reject-config refuses this configuration: set \"ok\": true to accept it",
        plugin("reject-config").display()
    );
    assert!(out.stderr.lines().any(|l| l == expected), "{}", out.stderr);

    let accepted =
        plugin_test(dir.path(), "reject-config", &["--config", r#"{"ok": true}"#, "--input", "in.txt"]);
    assert_eq!(accepted.code, Some(0), "{accepted:?}");
    assert!(accepted.stdout.starts_with("kept     {source=\"plugin-test\"} \"a line\"\n"), "{accepted:?}");
}

#[test]
fn plugin_test_reports_a_trap_with_the_plugin_s_name_and_fails() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("in.txt"), "fine\nplease trap now\n").expect("write");
    let out = plugin_test(dir.path(), "trap", &["--input", "in.txt", "--batch-size", "1"]);
    assert!(out.code.is_some_and(|c| c != 0), "{out:?}");
    // The first batch went through and is shown; the second trapped.
    assert_eq!(out.stdout, "kept     {source=\"plugin-test\"} \"fine\"\n", "{out:?}");
    assert!(
        out.stderr.contains("error: plugin `trap` failed on batch 2 of 2 (1 entry): trapped: "),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("[plugin trap] WARN plugin stderr:"), "{}", out.stderr);
    assert!(out.stderr.contains("asked to trap"), "the plugin's panic message is shown:\n{}", out.stderr);
}

#[test]
fn plugin_test_reports_a_timeout_and_malformed_output() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("in.txt"), "spin\ngarbage\n").expect("write");
    let out = plugin_test(dir.path(), "spin", &["--input", "in.txt", "--timeout", "200ms"]);
    assert!(out.code.is_some_and(|c| c != 0), "{out:?}");
    assert!(
        out.stderr.contains("error: plugin `spin` failed on batch 1 of 1 (2 entries): timed out after 200ms"),
        "{}",
        out.stderr
    );
    let out = plugin_test(dir.path(), "garbage", &["--input", "in.txt"]);
    assert!(out.code.is_some_and(|c| c != 0), "{out:?}");
    assert!(
        out.stderr.contains(
            "error: plugin `garbage` failed on batch 1 of 1 (2 entries): returned a malformed response: "
        ),
        "{}",
        out.stderr
    );
}

#[test]
fn plugin_test_reads_stdin() {
    use std::io::Write as _;
    let mut child = std::process::Command::new(BIN)
        .args(["plugin", "test"])
        .arg(plugin("identity"))
        .args(["--input", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starts");
    child.stdin.take().expect("stdin").write_all(b"one\n\ntwo\n").expect("write");
    let out = child.wait_with_output().expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[..2],
        [r#"kept     {source="plugin-test"} "one""#, r#"kept     {source="plugin-test"} "two""#],
        "{stdout}"
    );
    assert_summary(lines[2], "in 2, out 2, changed 0, dropped 0, added 0", "1 batch", "identity");
}

#[test]
fn plugin_new_writes_a_crate_from_the_template_and_refuses_an_existing_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = run_to_end(&["plugin", "new", "redact-emails", "--dir", "plugins"], dir.path());
    assert_eq!(out.code, Some(0), "{out:?}");
    let crate_dir = dir.path().join("plugins/redact-emails");
    let cargo = std::fs::read_to_string(crate_dir.join("Cargo.toml")).expect("Cargo.toml");
    let lib = std::fs::read_to_string(crate_dir.join("src/lib.rs")).expect("src/lib.rs");
    assert!(cargo.contains("\nname = \"redact-emails\"\n") && !cargo.contains("drop-noise"), "{cargo}");
    assert!(
        cargo.contains("crate-type = [\"cdylib\", \"rlib\"]") && cargo.contains("\n[workspace]\n"),
        "{cargo}"
    );
    // The SDK dependency points at this repository's SDK, which exists.
    let sdk = cargo
        .lines()
        .find_map(|l| l.strip_prefix("sluice-sdk = { path = \"")?.strip_suffix("\" }"))
        .unwrap_or_else(|| panic!("no sluice-sdk path in:\n{cargo}"));
    assert!(Path::new(sdk).join("src/lib.rs").is_file(), "{sdk}");
    assert!(
        lib.contains("impl Plugin for RedactEmails") && lib.contains("sluice_sdk::export!(RedactEmails);"),
        "{lib}"
    );
    assert!(lib.contains("plugins/redact_emails.wasm") && !lib.contains("DropNoise"), "{lib}");
    for step in [
        "cargo test",
        "cargo build --release --target wasm32-wasip2",
        "target/wasm32-wasip2/release/redact_emails.wasm",
        "- plugin: redact_emails.wasm",
        "sdk/README.md",
    ] {
        assert!(out.stdout.contains(step), "next steps lack `{step}`:\n{}", out.stdout);
    }

    std::fs::write(crate_dir.join("src/lib.rs"), "// mine").expect("write");
    let again = run_to_end(&["plugin", "new", "redact-emails", "--dir", "plugins"], dir.path());
    assert!(again.code.is_some_and(|c| c != 0), "{again:?}");
    assert!(again.stderr.contains("already exists"), "{again:?}");
    assert_eq!(
        std::fs::read_to_string(crate_dir.join("src/lib.rs")).expect("read"),
        "// mine",
        "not overwritten"
    );

    let bad = run_to_end(&["plugin", "new", "../escape"], dir.path());
    assert!(bad.code.is_some_and(|c| c != 0), "{bad:?}");
    assert!(bad.stderr.contains("not a valid plugin crate name"), "{bad:?}");
    assert!(
        !dir.path().join("escape").exists() && !dir.path().parent().expect("parent").join("escape").exists()
    );
}
