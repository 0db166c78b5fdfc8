//! Wasm plugin stages: misbehaving plugins (trap, endless loop, unbounded allocation, malformed
//! output) under each `on_error` policy. The service stays up, exactly the failing batch gets
//! the policy, later batches flow through a rebuilt instance, and `sluice validate` reports a
//! plugin that rejects its configuration.

use std::path::Path;
use std::time::Duration;

use crate::support::plugins::{metric, ndjson_lines, plugin};
use crate::support::push::{entry, one};
use crate::support::receiver::{Receiver, now_ns};
use crate::support::sluice::{Sluice, loki_config, validate};
use crate::support::{DELIVERY, ok_or_logs};

/// A sluice with one worker whose default route runs `plugin` with `on_error: policy`; failed
/// batches of `dead_letter` go to the archive sink `dead` (uncompressed) under `dead_dir`.
async fn start(r: &Receiver, plugin_path: &Path, policy: &str, dead_dir: &Path) -> Sluice {
    let dead_letter = if policy == "dead_letter" { "\n        dead_letter: dead" } else { "" };
    let extra = format!(
        r#"  dead: {{ type: archive, url: "{dead}", compression: none, max_object_age: 100ms }}
server: {{ workers: 1 }}
pipelines:
  main:
    stages:
      - plugin: "{plugin}"
        on_error: {policy}{dead_letter}
        timeout: 300ms
        max_memory: 32MiB
default_route: {{ sinks: [loki], pipeline: main }}
"#,
        dead = dead_dir.display(),
        plugin = plugin_path.display(),
    );
    Sluice::start(&loki_config(&r.url(), &extra)).await
}

/// Pushes a good batch, a batch that makes the plugin fail (`trigger` in one of its lines), and
/// another good batch; checks what reached Loki and the dead-letter sink, exactly.
async fn misbehaves(name: &str, trigger: &str, reason: &str) {
    let path = plugin(name);
    for policy in ["pass", "drop", "dead_letter"] {
        let r = Receiver::start();
        let dead = tempfile::tempdir().expect("temp dir");
        let sluice = start(&r, &path, policy, dead.path()).await;
        let ts = now_ns();
        let labels = r#"{app="plugins"}"#;
        let bad = format!("please {trigger} now");
        let pushes = [
            vec![entry(ts, "before 1"), entry(ts + 1, "before 2")],
            vec![entry(ts + 2, &bad), entry(ts + 3, "innocent bystander")],
            vec![entry(ts + 4, "after 1"), entry(ts + 5, "after 2")],
        ];
        for (i, entries) in pushes.into_iter().enumerate() {
            let resp = sluice.push_proto(Some("t"), &one(labels, entries)).await;
            assert_eq!(
                resp.status,
                204,
                "{name}/{policy}: push {i} is accepted: {}\n{}",
                resp.body,
                sluice.logs()
            );
        }
        let mut good = vec!["after 1", "after 2", "before 1", "before 2"];
        let failed = vec![bad.as_str(), "innocent bystander"];
        if policy == "pass" {
            good.extend(&failed);
            good.sort();
        }
        ok_or_logs(r.wait_for(good.len(), DELIVERY).await, &sluice);
        r.settle(Duration::from_millis(300), DELIVERY).await;
        assert_eq!(r.lines("t"), good, "{name}/{policy}: what reached Loki\n{}", sluice.logs());
        if policy == "dead_letter" {
            let deadline = std::time::Instant::now() + DELIVERY;
            while ndjson_lines(dead.path()).len() < 2 && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let mut expected = failed.clone();
            expected.sort();
            assert_eq!(
                ndjson_lines(dead.path()),
                expected,
                "{name}: the failed batch, unchanged\n{}",
                sluice.logs()
            );
        } else {
            assert!(ndjson_lines(dead.path()).is_empty(), "{name}/{policy}: nothing dead-lettered");
        }
        let (status, text) = sluice.get("/metrics").await;
        assert_eq!(status, 200);
        let labels = [
            ("stage", "main/".to_string() + name),
            ("plugin", name.to_string()),
            ("reason", reason.to_string()),
        ];
        let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(
            metric(&text, "sluice_plugin_errors_total", &labels),
            Some(1.0),
            "{name}/{policy}:\n{text}"
        );
        let batches = metric(&text, "sluice_plugin_batches_total", &labels[..2]);
        assert_eq!(batches, Some(2.0), "{name}/{policy}: the good batches went through the plugin:\n{text}");
        let logs = sluice.logs();
        assert!(
            logs.contains(&format!("plugin `{name}`")) && logs.contains(&format!("on_error: {policy}")),
            "{name}/{policy}: the failure is logged with the plugin's name:\n{logs}"
        );
    }
}

#[tokio::test]
async fn a_trapping_plugin_fails_only_its_batch_and_is_rebuilt() {
    misbehaves("trap", "trap", "trap").await;
}

#[tokio::test]
async fn an_endless_loop_is_stopped_by_the_deadline() {
    misbehaves("spin", "spin", "timeout").await;
}

#[tokio::test]
async fn unbounded_allocation_is_stopped_by_the_memory_limit() {
    misbehaves("hog", "hog", "memory").await;
}

#[tokio::test]
async fn malformed_output_is_refused() {
    misbehaves("garbage", "garbage", "malformed_output").await;
}

#[tokio::test]
async fn a_response_that_would_make_the_host_copy_gigabytes_is_refused() {
    // 2,000 added entries pointing at one 1 MiB line: 2 GiB if copied.
    misbehaves("amplify", "amplify", "oversized_output").await;
}

#[tokio::test]
async fn a_plugin_that_sleeps_fails_at_once_instead_of_hanging_its_worker() {
    misbehaves("sleeper", "sleep", "trap").await;
}

#[test]
fn validate_reports_plugin_problems_with_their_location() {
    let dir = tempfile::tempdir().expect("temp dir");
    let not_wasm = dir.path().join("not-wasm.wasm");
    std::fs::write(&not_wasm, b"this is not WebAssembly").expect("write");
    let config = format!(
        r#"sinks:
  local: {{ type: archive }}
pipelines:
  main:
    stages:
      - plugin: "{trap}"
      - plugin: "{not_wasm}"
      - plugin: missing.wasm
      - plugin: "{trap}"
        name: dl
        on_error: dead_letter
routes:
  - sinks: [local]
    pipeline: mian
"#,
        trap = plugin("trap").display(),
        not_wasm = not_wasm.display(),
    );
    let (out, _dir) = validate(&config);
    assert_ne!(out.code, Some(0), "{out:?}");
    let text = format!("{}{}", out.stderr, out.stdout);
    for expected in [
        "pipelines.main.stages[1].plugin: not a valid plugin component",
        "pipelines.main.stages[2].plugin: no plugin file",
        "pipelines.main.stages[3].dead_letter",
        "routes[0].pipeline: unknown pipeline `mian`",
    ] {
        assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
    }
    assert!(!text.contains("stages[0]"), "the good stage is fine:\n{text}");
}

#[test]
fn validate_shows_the_plugin_s_own_message_when_init_rejects_its_config() {
    // `reject-config` (an SDK plugin) refuses any configuration without `ok: true`.
    let reject = plugin("reject-config");
    let config = format!(
        "sinks:\n  local: {{ type: archive }}\npipelines:\n  main:\n    stages:\n      - plugin: \"{}\"\n        config: {{ ok: false }}\n",
        reject.display()
    );
    let (out, _dir) = validate(&config);
    assert_ne!(out.code, Some(0), "{out:?}");
    let text = format!("{}{}", out.stderr, out.stdout);
    assert!(
        text.contains("pipelines.main.stages[0].config: the plugin rejected its configuration:"),
        "{text}"
    );
    assert!(text.contains("set \"ok\": true"), "the plugin's own message is shown:\n{text}");
}

#[tokio::test]
async fn an_sdk_plugin_filters_relabels_redacts_and_hashes_with_the_configured_key() {
    let r = Receiver::start();
    let dir = tempfile::tempdir().expect("temp dir");
    // The plugin path is relative: it resolves against the configuration file's directory.
    std::fs::copy(plugin("example-filter"), dir.path().join("filter.wasm")).expect("copy");
    let extra = format!(
        r#"server: {{ workers: 2 }}
pipelines:
  main:
    stages:
      - plugin: filter.wasm
        config: {{ drop_if_contains: "GET /health", label: team, value: payments, redact: hunter2 }}
        hash_key: "${{E2E_REDACT_KEY}}"
        on_error: drop
      - plugin: "{identity}"
routes:
  - selector: '{{app="api"}}'
    sinks: [loki]
    pipeline: main
default_route: {{ sinks: [loki] }}
"#,
        identity = plugin("identity").display()
    );
    let config_path = dir.path().join("sluice.yaml");
    std::fs::write(&config_path, loki_config(&r.url(), &extra)).expect("write config");
    let sluice = crate::support::sluice::Sluice::start_with(crate::support::sluice::Options {
        config: None,
        args: vec!["--config".into(), config_path.display().to_string()],
        env: vec![("E2E_REDACT_KEY".into(), "e2e secret".into())],
        ..Default::default()
    })
    .await;
    let ts = now_ns();
    let api = one(
        r#"{app="api"}"#,
        vec![entry(ts, "GET /health 200"), entry(ts + 1, "login password=hunter2"), entry(ts + 2, "plain")],
    );
    assert_eq!(sluice.push_proto(Some("t"), &api).await.status, 204);
    let other = one(r#"{app="web"}"#, vec![entry(ts + 3, "GET /health 200 from web")]);
    assert_eq!(sluice.push_proto(Some("t"), &other).await.status, 204);
    ok_or_logs(r.wait_for(3, DELIVERY).await, &sluice);
    r.settle(Duration::from_millis(300), DELIVERY).await;
    let moved = r.entries_where("t", &[("app", "api"), ("team", "payments")]);
    let lines: Vec<&str> = moved.iter().map(|(_, e)| e.line.as_str()).collect();
    assert_eq!(lines, ["login password=[REDACTED]", "plain"], "{}", sluice.logs());
    assert!(r.entries_where("t", &[("app", "api")]).len() == 2, "nothing left in the old stream");
    let key = sluice_sdk::hash::derive_key(b"e2e secret");
    let hash = sluice_sdk::hash::keyed_hash(&key, b"login password=hunter2");
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        moved[0].1.metadata,
        vec![("redacted_hash".to_string(), hex)],
        "hashed with the configured key"
    );
    assert_eq!(r.lines("t").len(), 3, "the web stream skipped the pipeline: {:?}", r.lines("t"));
    let (_, text) = sluice.get("/metrics").await;
    let filter = [("stage", "main/filter")];
    assert_eq!(metric(&text, "sluice_plugin_entries_in_total", &filter), Some(3.0), "{text}");
    assert_eq!(metric(&text, "sluice_plugin_entries_dropped_total", &filter), Some(1.0), "{text}");
    assert_eq!(metric(&text, "sluice_plugin_entries_modified_total", &filter), Some(2.0), "{text}");
    assert_eq!(metric(&text, "sluice_plugin_entries_out_total", &[("stage", "main/identity")]), Some(2.0));
    let event =
        |name| metric(&text, "sluice_plugin_events_total", &[("stage", "main/filter"), ("event", name)]);
    assert_eq!(
        (event("dropped"), event("redacted")),
        (Some(1.0), Some(1.0)),
        "the plugin's own counts: {text}"
    );
}

#[tokio::test]
async fn only_a_stage_that_hashes_with_the_default_key_warns_and_only_once() {
    let r = Receiver::start();
    let extra = format!(
        r#"pipelines:
  main:
    stages:
      - plugin: "{identity}"
      - plugin: "{filter}"
        config: {{ redact: hunter2 }}
default_route: {{ sinks: [loki], pipeline: main }}
"#,
        identity = plugin("identity").display(),
        filter = plugin("example-filter").display(),
    );
    let sluice = Sluice::start(&loki_config(&r.url(), &extra)).await;
    let warning = "hashes values with sluice's public default key";
    assert!(!sluice.logs().contains(warning), "no warning before anything is hashed:\n{}", sluice.logs());
    let ts = now_ns();
    for i in 0..3 {
        let push = one(r#"{app="api"}"#, vec![entry(ts + i, "password=hunter2")]);
        assert_eq!(sluice.push_proto(Some("t"), &push).await.status, 204);
    }
    ok_or_logs(r.wait_for(3, DELIVERY).await, &sluice);
    let logs = sluice.logs();
    let warnings: Vec<&str> = logs.lines().filter(|l| l.contains(warning)).collect();
    assert_eq!(warnings.len(), 1, "once per stage, whatever its instances: {warnings:?}");
    assert!(warnings[0].contains("main/example_filter"), "the stage that hashed: {warnings:?}");
}
