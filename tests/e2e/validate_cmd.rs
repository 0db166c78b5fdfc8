//! `sluice validate --config FILE`: every problem with its location, non-zero exit; 0 when good.

use crate::support::sluice::{run_to_end, validate};

#[test]
fn validate_reports_every_problem_with_its_location() {
    let (out, _dir) = validate(
        r#"sinks:
  loki: { type: loki, url: "ftp://nowhere", max_concurrency: 0 }
routes:
  - sinks: [lokki]
    selector: '{app="x"'
  - sinks: []
default_route: { sinks: [nope] }
"#,
    );
    assert_ne!(out.code, Some(0), "a broken config must fail: {out:?}");
    assert!(out.code.is_some(), "validate must exit by itself: {out:?}");
    let text = format!("{}{}", out.stderr, out.stdout);
    for location in [
        "sinks.loki.url",
        "sinks.loki.max_concurrency",
        "routes[0].sinks",
        "routes[0].selector",
        "routes[1].sinks",
        "default_route.sinks",
    ] {
        assert!(text.contains(location), "missing `{location}` in:\n{text}");
    }
    assert!(text.contains("lokki") && text.contains("nope"), "names the unknown sinks:\n{text}");
}

#[test]
fn validate_names_unknown_keys_and_unset_variables() {
    let (out, _dir) = validate("sinks:\n  a: { type: loki, url: 'http://x', bach_size: 1MiB }\n");
    assert_ne!(out.code, Some(0), "{out:?}");
    let text = format!("{}{}", out.stderr, out.stdout);
    assert!(text.contains("sinks.a") && text.contains("bach_size"), "{text}");

    let (out, _dir) = validate("sinks:\n  a: { type: loki, url: '${E2E_SURELY_UNSET_VARIABLE}' }\n");
    assert_ne!(out.code, Some(0), "{out:?}");
    let text = format!("{}{}", out.stderr, out.stdout);
    assert!(text.contains("E2E_SURELY_UNSET_VARIABLE") && text.contains("line 2"), "{text}");
}

#[test]
fn validate_accepts_a_good_config() {
    let (out, _dir) = validate(
        r#"server:
  max_body_size: 4MiB
tenants:
  overrides:
    team-a:
      auth: { bearer_token: "tok" }
      limits: { max_line_size: 1KB }
sinks:
  loki: { type: loki, url: "http://127.0.0.1:3100", batch_wait: 250ms }
  local: { type: archive }
routes:
  - selector: '{app=~"api-.*", env!="dev"}'
    sinks: [loki]
    continue: true
default_route: { sinks: [local] }
"#,
    );
    assert_eq!(out.code, Some(0), "{out:?}");
}

#[test]
fn validate_of_a_missing_file_fails_with_its_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = run_to_end(&["validate", "--config", "/nonexistent/e2e-sluice.yaml"], dir.path());
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(out.stderr.contains("/nonexistent/e2e-sluice.yaml"), "{out:?}");
}

#[tokio::test]
async fn run_refuses_to_start_with_a_broken_config() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, "routes:\n  - sinks: [missing]\n").expect("write");
    let path = path.to_string_lossy().to_string();
    let out =
        run_to_end(&["run", "--config", &path, "--listen", "127.0.0.1:0", "--data-dir", "data"], dir.path());
    assert!(out.code.is_some_and(|c| c != 0), "sluice run must exit non-zero on a broken config: {out:?}");
    assert!(out.stderr.contains("routes[0].sinks"), "{out:?}");
}
