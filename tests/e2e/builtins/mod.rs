//! The built-in plugins (`plugins/`) through the real binary, each configured by name
//! (`plugin: redact`), and the reference chain of `../shared/BENCHMARK.md`.

mod chain;
mod filter;
mod level;
mod parse;
mod redact;
mod relabel;
mod sample;

use crate::support::sluice::validate;

/// Every built-in, as a stage names it.
pub const BUILTINS: [&str; 9] = [
    "filter",
    "level",
    "parse-json",
    "parse-logfmt",
    "parse-pattern",
    "parse-regex",
    "redact",
    "relabel",
    "sample",
];

#[test]
fn validate_shows_each_builtin_s_rejection_of_a_mistyped_key_at_its_stage() {
    let stages: String = BUILTINS
        .iter()
        .map(|name| format!("      - plugin: {name}\n        config: {{ definitely_not_an_option: 1 }}\n"))
        .collect();
    let (out, _dir) = validate(&format!(
        "sinks: {{ local: {{ type: archive }} }}\npipelines:\n  main:\n    stages:\n{stages}default_route: {{ sinks: [local], pipeline: main }}\n"
    ));
    assert_ne!(out.code, Some(0), "{out:?}");
    let text = format!("{}{}", out.stderr, out.stdout);
    for (i, name) in BUILTINS.iter().enumerate() {
        let at = format!("pipelines.main.stages[{i}].config:");
        let line =
            text.lines().find(|l| l.contains(&at)).unwrap_or_else(|| panic!("no {at} ({name}) in:\n{text}"));
        assert!(line.contains("definitely_not_an_option"), "{name} does not name the key:\n{line}");
    }
}

#[test]
fn validate_refuses_an_unknown_builtin_and_native_runs_of_files() {
    let (out, _dir) = validate(
        r#"sinks: { local: { type: archive } }
pipelines:
  main:
    stages:
      - plugin: redcat
      - plugin: ./mine.wasm
        run: native
default_route: { sinks: [local], pipeline: main }
"#,
    );
    assert_ne!(out.code, Some(0), "{out:?}");
    let text = format!("{}{}", out.stderr, out.stdout);
    let unknown = text.lines().find(|l| l.contains("pipelines.main.stages[0].plugin:")).unwrap_or_default();
    assert!(unknown.contains("no built-in plugin `redcat`") && unknown.contains("redact"), "{text}");
    assert!(
        text.contains("pipelines.main.stages[1].run: `run: native` is only for built-in plugins"),
        "{text}"
    );
}

#[test]
fn plugin_test_runs_a_builtin_by_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("lines.txt");
    std::fs::write(
        &input,
        "user bob@example.com logged in\nconnecting to postgres://app:s3cr3tpassw0rd@db:5432/app\n",
    )
    .expect("write");
    let config = r#"{"detectors": {"email": "redact"}}"#;
    let out = crate::support::sluice::run_to_end(
        &[
            "plugin",
            "test",
            "redact",
            "--config",
            config,
            "--input",
            &input.display().to_string(),
            "--format",
            "ndjson",
        ],
        dir.path(),
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("user [REDACTED:email] logged in"), "{out:?}");
    assert!(!out.stdout.contains("s3cr3tpassw0rd") && out.stdout.contains("[REDACTED:"), "{out:?}");
}
