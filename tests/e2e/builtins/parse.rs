//! End-to-end tests of the built-in parse plugins: the reference chain's parse step (one
//! `parse-json` and one `parse-logfmt` stage: `level` a normalised label, `trace_id` and
//! `request_id` structured metadata, other lines untouched and counted), and `parse-pattern`
//! rewriting access-log lines, checked exactly at the Loki receiver.

use std::time::Duration;

use sluice::proto::PushRequest;

use crate::support::plugins::metric;
use crate::support::push::{entry, entry_md, stream};
use crate::support::receiver::{Labels, Receiver, Stored, now_ns};
use crate::support::sluice::{Sluice, loki_config};
use crate::support::{DELIVERY, ok_or_logs};

/// A sluice whose default route runs `stages` (YAML list items, indented for `stages:`).
async fn start(r: &Receiver, stages: &str) -> Sluice {
    let extra = format!(
        r#"server: {{ workers: 1 }}
pipelines:
  main:
    stages:
{stages}
default_route: {{ sinks: [loki], pipeline: main }}
"#
    );
    Sluice::start(&loki_config(&r.url(), &extra)).await
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
}

fn stored(ts: i64, line: &str, metadata: &[(&str, &str)]) -> Stored {
    Stored {
        ts,
        line: line.to_string(),
        metadata: metadata.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
    }
}

/// The reference chain's metadata.
fn ids<'a>(trace: &'a str, request: &'a str) -> [(&'static str, &'a str); 2] {
    [("trace_id", trace), ("request_id", request)]
}

/// What `tenant` received, sorted by timestamp.
fn received(r: &Receiver, tenant: &str) -> Vec<(Labels, Stored)> {
    let mut got = r.entries(tenant);
    got.sort_by_key(|(_, e)| e.ts);
    got
}

const REFERENCE_PARSE: &str = "      - plugin: parse-json
        config:
          labels: { level: { transform: level } }
          metadata: [trace_id, request_id]
      - plugin: parse-logfmt
        config:
          labels: { level: { transform: level } }
          metadata: [trace_id, request_id]";

// Lines as the reference workload (`benches/src/workload.rs`) writes them.
const JSON_INFO: &str = r#"{"time":"2026-01-01T00:00:00.048158Z","level":"INFO","target":"registry::api","message":"checkpoint saved","trace_id":"ed4a88aba2c419a0c55d29036bcde89c","span_id":"e23195dbaf0f0212","request_id":"1f7ccd904f630c00"}"#;
const JSON_WARN: &str = r#"{"time":"2026-01-01T00:00:00.061580Z","level":"WARN","target":"registry::api","message":"retrying shard download","trace_id":"0c14f43dfed35876c762a53fde261442","span_id":"fcdfdc85646a2ca6","request_id":"4b478aca97bafe08","duration_ms":2586.8,"client_ip":"10.143.114.212"}"#;
const LOGFMT_ERROR: &str = r#"time=2026-01-01T00:00:00.010817Z level=error target=gateway::auth msg="cuda error: out of memory" trace_id=1429a52c3fe853fe4e3fb20c3bedb69f span_id=3ab295aa5c6a4590 request_id=3a3dc9fe6b4dae9f client_ip=10.2.11.83"#;
const LOGFMT_DEBUG: &str = r#"time=2026-01-01T00:00:00.150957Z level=debug target=vllm::engine::llm_engine msg="kv cache block allocated" trace_id=c8af3c281e5c6c117f9128867a36e545 span_id=9dcfbde0489a297a request_id=1080df9fe8760eff duration_ms=2042.5"#;
const PLAIN: &str = "2026-01-01T00:00:00.021874Z INFO  [router::upstream] request admitted to batch";
const TRACEBACK: &str = "2026-01-01T00:00:00.097667Z WARN  [billing::usage] deprecated api version used\nTraceback (most recent call last):\n  File \"/app/inference/server.py\", line 29, in handle\n    output = self.handle(batch, **kwargs)\nRuntimeError: deprecated api version used";

#[tokio::test]
async fn reference_chain_parses_json_and_logfmt_and_passes_the_rest() {
    let r = Receiver::start();
    let sluice = start(&r, REFERENCE_PARSE).await;
    let ts = now_ns();
    let app = r#"{app="vllm-server", namespace="inference"}"#;
    let push = PushRequest {
        streams: vec![
            stream(
                app,
                vec![
                    entry(ts, JSON_INFO),
                    entry(ts + 1, LOGFMT_ERROR),
                    entry(ts + 2, PLAIN),
                    entry(ts + 3, TRACEBACK),
                    // A client's own metadata stays; a parsed field of the same name replaces it.
                    entry_md(ts + 4, LOGFMT_DEBUG, &[("pod_ip", "10.0.0.7"), ("trace_id", "stale")]),
                ],
            ),
            // A stream that already has a `level` label: the parsed level replaces it.
            stream(r#"{app="trainer", level="info"}"#, vec![entry(ts + 5, JSON_WARN)]),
        ],
    };
    let resp = sluice.push_proto(Some("t"), &push).await;
    assert_eq!(resp.status, 204, "{}\n{}", resp.body, sluice.logs());
    ok_or_logs(r.wait_for(6, DELIVERY).await, &sluice);
    r.settle(Duration::from_millis(300), DELIVERY).await;

    let vllm = |level: Option<&str>| {
        let mut l = labels(&[("app", "vllm-server"), ("namespace", "inference")]);
        if let Some(level) = level {
            l.insert("level".into(), level.into());
        }
        l
    };
    assert_eq!(
        received(&r, "t"),
        [
            (
                vllm(Some("info")),
                stored(ts, JSON_INFO, &ids("ed4a88aba2c419a0c55d29036bcde89c", "1f7ccd904f630c00"))
            ),
            (
                vllm(Some("error")),
                stored(ts + 1, LOGFMT_ERROR, &ids("1429a52c3fe853fe4e3fb20c3bedb69f", "3a3dc9fe6b4dae9f")),
            ),
            (vllm(None), stored(ts + 2, PLAIN, &[])),
            (vllm(None), stored(ts + 3, TRACEBACK, &[])),
            (
                vllm(Some("debug")),
                stored(
                    ts + 4,
                    LOGFMT_DEBUG,
                    &[
                        ("pod_ip", "10.0.0.7"),
                        ("trace_id", "c8af3c281e5c6c117f9128867a36e545"),
                        ("request_id", "1080df9fe8760eff"),
                    ],
                ),
            ),
            (
                labels(&[("app", "trainer"), ("level", "warn")]),
                stored(ts + 5, JSON_WARN, &ids("0c14f43dfed35876c762a53fde261442", "4b478aca97bafe08")),
            ),
        ],
        "{}",
        sluice.logs()
    );

    // Each stage counts the lines that weren't its format: parse-json the logfmt and plain
    // ones, parse-logfmt the JSON and plain ones.
    let (status, text) = sluice.get("/metrics").await;
    assert_eq!(status, 200);
    let unparsed =
        |plugin| metric(&text, "sluice_plugin_events_total", &[("plugin", plugin), ("event", "unparsed")]);
    assert_eq!((unparsed("parse-json"), unparsed("parse-logfmt")), (Some(4.0), Some(4.0)), "{text}");
}

#[tokio::test]
async fn parse_pattern_rewrites_access_lines_and_promotes_captures() {
    let r = Receiver::start();
    let sluice = start(
        &r,
        r#"      - plugin: parse-pattern
        config:
          pattern: '<ip> - <_> [<_>] "<method> <path> <_>" <status> <_>'
          labels: [method, status]
          metadata: { client: ip }
          line: path
          max_label_values: 2"#,
    )
    .await;
    let ts = now_ns();
    let line = |ip: &str, method: &str, path: &str, status: &str| {
        format!(r#"{ip} - - [10/Oct/2025:13:55:36 +0000] "{method} {path} HTTP/1.1" {status} 512"#)
    };
    let push = PushRequest {
        streams: vec![stream(
            r#"{app="web"}"#,
            vec![
                entry(ts, &line("10.1.2.3", "GET", "/index.html", "200")),
                entry(ts + 1, &line("10.1.2.4", "POST", "/login", "302")),
                // A third distinct status is over `max_label_values: 2`: metadata instead.
                entry(ts + 2, &line("10.1.2.5", "GET", "/missing", "404")),
                entry(ts + 3, "not an access log line"),
            ],
        )],
    };
    let resp = sluice.push_proto(Some("t"), &push).await;
    assert_eq!(resp.status, 204, "{}\n{}", resp.body, sluice.logs());
    ok_or_logs(r.wait_for(4, DELIVERY).await, &sluice);
    r.settle(Duration::from_millis(300), DELIVERY).await;

    assert_eq!(
        received(&r, "t"),
        [
            (
                labels(&[("app", "web"), ("method", "GET"), ("status", "200")]),
                stored(ts, "/index.html", &[("client", "10.1.2.3")]),
            ),
            (
                labels(&[("app", "web"), ("method", "POST"), ("status", "302")]),
                stored(ts + 1, "/login", &[("client", "10.1.2.4")]),
            ),
            (
                labels(&[("app", "web"), ("method", "GET")]),
                stored(ts + 2, "/missing", &[("status", "404"), ("client", "10.1.2.5")]),
            ),
            (labels(&[("app", "web")]), stored(ts + 3, "not an access log line", &[])),
        ],
        "{}",
        sluice.logs()
    );
    let (_, text) = sluice.get("/metrics").await;
    let event =
        |name| metric(&text, "sluice_plugin_events_total", &[("plugin", "parse-pattern"), ("event", name)]);
    assert_eq!((event("unparsed"), event("label_overflow")), (Some(1.0), Some(1.0)), "{text}");
}
