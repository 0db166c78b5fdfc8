//! Hot reload: while pushes are in flight, a reload swaps the plugin's configuration; every
//! entry is delivered exactly once, and the new version's effect shows after the reload. A
//! reload that fails keeps the running configuration; a changed file reloads by itself.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::plugins::{metric, plugin};
use crate::support::push::{entry, one};
use crate::support::receiver::{Receiver, now_ns};
use crate::support::sluice::{Options, Sluice, loki_config};
use crate::support::{DELIVERY, ok_or_logs};

/// A configuration whose default route runs example-filter, labelling every entry
/// `version=<version>`; `filter` is its extra config.
fn config(r: &Receiver, plugin_file: &Path, version: &str, filter: &str, watch: &str) -> String {
    let extra = format!(
        r#"server: {{ workers: 2, admin_token: reload-secret }}
reload: {{ {watch} }}
pipelines:
  main:
    stages:
      - plugin: "{plugin}"
        config: {{ label: version, value: "{version}"{filter} }}
        on_error: drop
default_route: {{ sinks: [loki], pipeline: main }}
"#,
        plugin = plugin_file.display()
    );
    loki_config(&r.url(), &extra)
}

async fn start(path: &Path) -> Sluice {
    Sluice::start_with(Options {
        config: None,
        args: vec!["--config".into(), path.display().to_string()],
        ..Default::default()
    })
    .await
}

/// `POST /-/reload` with the admin token of [`config`].
async fn post_reload(sluice: &Sluice) -> (u16, String) {
    let resp = reqwest::Client::new()
        .post(sluice.url("/-/reload"))
        .bearer_auth("reload-secret")
        .send()
        .await
        .expect("sluice answers");
    (resp.status().as_u16(), resp.text().await.unwrap_or_default())
}

#[tokio::test]
async fn reload_under_load_delivers_every_entry_once_and_applies_the_new_version() {
    let r = Receiver::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("sluice.yaml");
    let filter = plugin("example-filter");
    std::fs::write(&path, config(&r, &filter, "v1", "", "watch: false")).expect("write config");
    let sluice = Arc::new(start(&path).await);

    // Four clients push numbered lines until told to stop; every push must be accepted.
    let sent = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..4 {
        let (sluice, sent, stop) = (Arc::clone(&sluice), Arc::clone(&sent), Arc::clone(&stop));
        clients.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Acquire) && n < 2_000 {
                let ts = now_ns();
                let entries =
                    (0..10).map(|i| entry(ts + i, &format!("client {c} push {n} line {i}"))).collect();
                let resp = sluice.push_proto(Some("t"), &one(&format!(r#"{{app="c{c}"}}"#), entries)).await;
                assert_eq!(resp.status, 204, "push refused during reload: {}", resp.body);
                sent.fetch_add(10, Ordering::AcqRel);
                n += 1;
            }
        }));
    }
    // Let some v1 traffic through, then reload to v2 while the clients keep pushing.
    ok_or_logs(r.wait_for(200, DELIVERY).await, &sluice);
    std::fs::write(&path, config(&r, &filter, "v2", "", "watch: false")).expect("rewrite config");
    let (status, body) = post_reload(&sluice).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("generation 2"), "{body}");
    let after_reload = sent.load(Ordering::Acquire);
    // Pushes that start after the reload answered use v2.
    let ts = now_ns();
    let marker = one(r#"{app="marker"}"#, vec![entry(ts, "after the reload")]);
    assert_eq!(sluice.push_proto(Some("t"), &marker).await.status, 204);
    ok_or_logs(r.wait_for(after_reload + 200, DELIVERY).await, &sluice);
    stop.store(true, Ordering::Release);
    for c in clients {
        c.await.expect("client finished without a refused push");
    }
    let total = sent.load(Ordering::Acquire) + 1;
    ok_or_logs(r.wait_for(total, DELIVERY).await, &sluice);
    r.settle(Duration::from_millis(300), DELIVERY).await;

    let entries = r.entries("t");
    assert_eq!(entries.len(), total, "every accepted entry delivered once");
    assert_eq!(r.duplicates(), 0, "nothing processed twice");
    let version = |want: &str| {
        entries.iter().filter(|(l, _)| l.get("version").map(String::as_str) == Some(want)).count()
    };
    assert!(version("v1") >= 200, "v1 before the reload: {}", version("v1"));
    assert!(version("v2") >= 200, "v2 after the reload: {}", version("v2"));
    assert_eq!(version("v1") + version("v2"), total, "every entry went through one version of the plugin");
    let marker = r.entries_where("t", &[("app", "marker")]);
    assert_eq!(marker[0].0.get("version").map(String::as_str), Some("v2"), "{}", sluice.logs());
    let (_, text) = sluice.get("/metrics").await;
    assert_eq!(metric(&text, "sluice_reloads_total", &[("result", "success")]), Some(1.0), "{text}");
}

#[tokio::test]
async fn a_failed_reload_keeps_the_running_configuration() {
    let r = Receiver::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("sluice.yaml");
    let filter = plugin("example-filter");
    std::fs::write(&path, config(&r, &filter, "v1", "", "watch: false")).expect("write config");
    let sluice = start(&path).await;

    // A plugin config the plugin rejects (an unknown key), then a broken file, then a new sink.
    let cases = [
        (config(&r, &filter, "v2", ", no_such_option: 1", "watch: false"), "no_such_option"),
        ("routes: [ {".to_string(), "configuration not reloaded"),
        (
            config(&r, &filter, "v2", "", "watch: false").replacen(
                "sinks:\n",
                "sinks:\n  extra: { type: archive }\n",
                1,
            ),
            "`sinks` changed",
        ),
    ];
    for (text, expected) in cases {
        std::fs::write(&path, &text).expect("rewrite config");
        let (status, body) = post_reload(&sluice).await;
        assert_eq!(status, 400, "{body}");
        assert!(body.contains(expected), "expected `{expected}` in: {body}");
    }
    let ts = now_ns();
    assert_eq!(
        sluice.push_proto(Some("t"), &one(r#"{app="a"}"#, vec![entry(ts, "still v1")])).await.status,
        204
    );
    ok_or_logs(r.wait_for(1, DELIVERY).await, &sluice);
    let got = r.entries("t");
    assert_eq!(got[0].0.get("version").map(String::as_str), Some("v1"), "{}", sluice.logs());
    let (_, text) = sluice.get("/metrics").await;
    assert_eq!(metric(&text, "sluice_reloads_total", &[("result", "failure")]), Some(3.0), "{text}");
}

#[tokio::test]
async fn a_changed_plugin_file_or_config_reloads_by_itself() {
    let r = Receiver::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("sluice.yaml");
    let plugin_file = dir.path().join("filter.wasm");
    std::fs::copy(plugin("example-filter"), &plugin_file).expect("copy plugin");
    let watch = "watch: true, watch_interval: 100ms";
    std::fs::write(&path, config(&r, &plugin_file, "v1", "", watch)).expect("write config");
    let sluice = start(&path).await;

    let push = |line: &'static str| {
        let ts = now_ns();
        one(r#"{app="a"}"#, vec![entry(ts, line)])
    };
    assert_eq!(sluice.push_proto(Some("t"), &push("before")).await.status, 204);
    ok_or_logs(r.wait_for(1, DELIVERY).await, &sluice);

    // Editing the configuration file is picked up without a signal.
    std::fs::write(&path, config(&r, &plugin_file, "v2", "", watch)).expect("rewrite config");
    let deadline = std::time::Instant::now() + DELIVERY;
    loop {
        let (_, text) = sluice.get("/metrics").await;
        if metric(&text, "sluice_reloads_total", &[("result", "success")]) == Some(1.0) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no reload after the file changed: {}", sluice.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sluice.push_proto(Some("t"), &push("after")).await.status, 204);
    ok_or_logs(r.wait_for(2, DELIVERY).await, &sluice);
    let got = r.entries_where("t", &[("app", "a"), ("version", "v2")]);
    assert_eq!(got.len(), 1, "{:?}", r.entries("t"));
    assert_eq!(got[0].1.line, "after");

    // Replacing the plugin file with something that is not a plugin is refused; v2 keeps running.
    std::fs::write(&plugin_file, b"not a wasm component").expect("overwrite plugin");
    let deadline = std::time::Instant::now() + DELIVERY;
    loop {
        let (_, text) = sluice.get("/metrics").await;
        if metric(&text, "sluice_reloads_total", &[("result", "failure")]) == Some(1.0) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the broken plugin was not noticed: {}", sluice.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sluice.push_proto(Some("t"), &push("still v2")).await.status, 204);
    ok_or_logs(r.wait_for(3, DELIVERY).await, &sluice);
    assert_eq!(r.entries_where("t", &[("version", "v2")]).len(), 2, "{}", sluice.logs());
}

/// A reload that would make a route acknowledge `on_disk` when sluice started without a log is
/// refused (400, saying a restart applies it): before, the route quietly acknowledged from
/// memory what it promised was on disk.
#[tokio::test]
async fn a_reload_cannot_promise_on_disk_without_a_log() {
    let r = Receiver::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("sluice.yaml");
    let base = "server: { admin_token: reload-secret }\nreload: { watch: false }\nwal: { ack: in_memory }\n";
    std::fs::write(&path, loki_config(&r.url(), base)).expect("write config");
    let sluice = start(&path).await;
    let on_disk = format!("{base}default_route: {{ sinks: [loki], ack: on_disk }}\n");
    std::fs::write(&path, loki_config(&r.url(), &on_disk)).expect("write config");
    let (status, body) = post_reload(&sluice).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("on_disk") && body.contains("restart"), "{body}");
    let resp =
        sluice.push_proto(Some("t"), &one(r#"{app="x"}"#, vec![entry(now_ns(), "still in memory")])).await;
    assert_eq!(resp.status, 204);
    ok_or_logs(r.wait_for(1, DELIVERY).await, &sluice);
}
