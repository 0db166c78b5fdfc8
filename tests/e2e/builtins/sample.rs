//! End-to-end tests of the built-in `sample` plugin: the reference chain's sampling (all WARN,
//! ERROR and INFO, 10% of DEBUG by `trace_id`) keeps exactly the entries `sample::keeps` says,
//! and a rate limit drops what exceeds it and says so in one summary entry.

use std::time::Duration;

use sluice::proto::PushRequest;

use crate::support::plugins::metric;
use crate::support::push::{entry, entry_md, stream};
use crate::support::receiver::{Receiver, now_ns};
use crate::support::sluice::{Sluice, loki_config};
use crate::support::{DELIVERY, ok_or_logs};

#[tokio::test]
async fn the_reference_sampling_keeps_warn_error_info_and_a_tenth_of_debug_by_trace() {
    let r = Receiver::start();
    let extra = r#"server: { workers: 2 }
pipelines:
  main:
    stages:
      - plugin: sample
        config:
          key: { metadata: trace_id }
          rates: { debug: 0.1 }
default_route: { sinks: [loki], pipeline: main }
"#;
    let sluice = Sluice::start(&loki_config(&r.url(), extra)).await;
    let mut rng = fastrand::Rng::with_seed(11);
    let traces: Vec<String> = (0..300).map(|_| format!("{:032x}", rng.u128(..))).collect();
    let ts = now_ns();
    // Every trace has DEBUG lines in two apps (one spelling the level in upper case, as a
    // client might) and an INFO, a WARN or an ERROR line; some DEBUG lines have no trace, and
    // are decided by a hash of their line.
    let mut streams = Vec::new();
    let mut expected = Vec::new();
    for (labels, level) in [
        (r#"{app="api", level="debug"}"#, "debug"),
        (r#"{app="worker", level="DEBUG"}"#, "debug"),
        (r#"{app="api", level="info"}"#, "info"),
        (r#"{app="api", level="warn"}"#, "warn"),
        (r#"{app="api", level="error"}"#, "error"),
    ] {
        let mut entries = Vec::new();
        for (i, trace) in traces.iter().enumerate() {
            let line = format!("{labels} line {i}");
            if level == "debug" || level == ["info", "warn", "error"][i % 3] {
                entries.push(entry_md(ts + i as i64, &line, &[("trace_id", trace), ("span_id", "s")]));
                if level != "debug" || ::sample::keeps(trace.as_bytes(), 0.1) {
                    expected.push(line);
                }
            }
        }
        if level == "debug" {
            for i in 0..20 {
                let line = format!("{labels} untraced {i}");
                entries.push(entry(ts + 1000 + i, &line));
                if ::sample::keeps(line.as_bytes(), 0.1) {
                    expected.push(line);
                }
            }
        }
        streams.push(stream(labels, entries));
    }
    let sent: usize = streams.iter().map(|s| s.entries.len()).sum();
    let resp = sluice.push_proto(Some("t"), &PushRequest { streams }).await;
    assert_eq!(resp.status, 204, "{}\n{}", resp.body, sluice.logs());
    ok_or_logs(r.wait_for(expected.len(), DELIVERY).await, &sluice);
    r.settle(Duration::from_millis(300), DELIVERY).await;

    expected.sort();
    assert_eq!(r.lines("t"), expected, "{}", sluice.logs());
    let dropped = sent - expected.len();
    assert!((500..600).contains(&dropped), "about 90% of 640 DEBUG lines: {dropped}");
    // A trace's DEBUG lines share their fate across apps: both or neither arrived.
    let got = r.lines("t");
    for (i, trace) in traces.iter().enumerate() {
        let api = got.contains(&format!(r#"{{app="api", level="debug"}} line {i}"#));
        let worker = got.contains(&format!(r#"{{app="worker", level="DEBUG"}} line {i}"#));
        assert_eq!(api, worker, "trace {trace}");
    }

    let (status, text) = sluice.get("/metrics").await;
    assert_eq!(status, 200);
    let events = |event: &str| {
        metric(&text, "sluice_plugin_events_total", &[("stage", "main/sample"), ("event", event)])
    };
    assert_eq!(events("dropped:debug"), Some(dropped as f64), "{text}");
    assert_eq!(events("missing_key"), Some(40.0), "{text}");
}

#[tokio::test]
async fn a_rate_limit_drops_the_excess_and_adds_one_summary() {
    let r = Receiver::start();
    let extra = r#"pipelines:
  main:
    stages:
      - plugin: sample
        config:
          rate_limit: { lines_per_second: 2, summary: true }
default_route: { sinks: [loki], pipeline: main }
"#;
    let sluice = Sluice::start(&loki_config(&r.url(), extra)).await;
    let ts = now_ns();
    let ms = 1_000_000;
    // Burst 2: the first two pass; 500 ms of entry time buys one more line.
    let noisy: Vec<(i64, String)> = (0..10).map(|i| (ts + i * ms, format!("noisy line {i}"))).collect();
    let mut entries: Vec<_> = noisy.iter().map(|(t, l)| entry(*t, l)).collect();
    entries.push(entry(ts + 500 * ms, "half a second later"));
    let push = PushRequest {
        streams: vec![
            stream(r#"{app="chatty", env="prod"}"#, entries),
            stream(r#"{app="quiet"}"#, vec![entry(ts, "quiet line")]),
        ],
    };
    let resp = sluice.push_proto(Some("t"), &push).await;
    assert_eq!(resp.status, 204, "{}\n{}", resp.body, sluice.logs());
    ok_or_logs(r.wait_for(5, DELIVERY).await, &sluice);
    r.settle(Duration::from_millis(300), DELIVERY).await;

    let dropped_bytes: usize = noisy[2..].iter().map(|(_, l)| l.len()).sum();
    let summary =
        format!("msg=\"sample: rate limit exceeded\" dropped_lines=8 dropped_bytes={dropped_bytes}");
    assert_eq!(summary, ::sample::summary_line(8, dropped_bytes as u64));
    let chatty: Vec<(i64, String)> = r
        .entries_where("t", &[("app", "chatty"), ("env", "prod")])
        .into_iter()
        .map(|(_, e)| (e.ts, e.line))
        .collect();
    let mut want = vec![
        (ts, "noisy line 0".to_string()),
        (ts + ms, "noisy line 1".to_string()),
        (ts + 9 * ms, summary),
        (ts + 500 * ms, "half a second later".to_string()),
    ];
    let mut got = chatty;
    got.sort();
    want.sort();
    assert_eq!(got, want, "{}", sluice.logs());
    assert_eq!(r.lines("t").len(), 5, "and the quiet stream's line: {:?}", r.lines("t"));

    let (status, text) = sluice.get("/metrics").await;
    assert_eq!(status, 200);
    let events = |event: &str| {
        metric(&text, "sluice_plugin_events_total", &[("stage", "main/sample"), ("event", event)])
    };
    assert_eq!(events("rate_limited"), Some(8.0), "{text}");
    assert_eq!(events("summaries"), Some(1.0), "{text}");
}
