//! End-to-end tests of the built-in `level` plugin: mixed JSON, logfmt and text lines get their
//! normalised `level` label, exactly, at the Loki receiver, and the detections are counted.

use std::time::Duration;

use sluice::proto::PushRequest;

use crate::support::plugins::metric;
use crate::support::push::{entry, stream};
use crate::support::receiver::{Receiver, now_ns};
use crate::support::sluice::{Sluice, loki_config};
use crate::support::{DELIVERY, ok_or_logs};

/// An entry as the receiver got it: line, labels (debug-printed), metadata.
type Seen = (String, String, Vec<(String, String)>);

#[tokio::test]
async fn labels_mixed_lines_with_their_normalised_level() {
    let r = Receiver::start();
    let extra = r#"pipelines:
  main:
    stages:
      - plugin: level
        config: { default: unknown }
default_route: { sinks: [loki], pipeline: main }
"#;
    let sluice = Sluice::start(&loki_config(&r.url(), extra)).await;
    // Each line with the level it must arrive with.
    let lines = [
        (r#"{"time":"2026-01-01T00:00:00Z","level":"WARN","message":"slow upstream"}"#, "warn"),
        (r#"{"level":"INFO","message":"no error here"}"#, "info"),
        (r#"{"ctx":{"level":"debug"},"severity":"Error"}"#, "error"),
        ("time=2026-01-01T00:00:00Z level=debug msg=\"cache level=error lookup\"", "debug"),
        ("2026-01-01T00:00:00.000000Z ERROR [router::upstream] request failed", "error"),
        ("W1121 12:00:00.000000       1 reflector.go:424] watch closed", "warn"),
        ("[I] worker started", "info"),
        ("CRITICAL:root:disk failed", "fatal"),
        ("processed 3 errors, errors=0", "unknown"),
    ];
    let ts = now_ns();
    let push = PushRequest {
        streams: vec![
            stream(
                r#"{app="api"}"#,
                lines.iter().enumerate().map(|(i, (line, _))| entry(ts + i as i64, line)).collect(),
            ),
            // A level the client already set is kept, in its normalised spelling.
            stream(
                r#"{app="api", level="WARNING"}"#,
                vec![entry(ts + 100, "ERROR in the text, WARNING in the label")],
            ),
        ],
    };
    let resp = sluice.push_proto(Some("t"), &push).await;
    assert_eq!(resp.status, 204, "{}\n{}", resp.body, sluice.logs());
    ok_or_logs(r.wait_for(lines.len() + 1, DELIVERY).await, &sluice);
    r.settle(Duration::from_millis(300), DELIVERY).await;

    let mut got: Vec<Seen> =
        r.entries("t").into_iter().map(|(labels, e)| (e.line, format!("{labels:?}"), e.metadata)).collect();
    got.sort();
    let mut want: Vec<Seen> = lines
        .iter()
        .map(|(line, level)| (line.to_string(), format!(r#"{{"app": "api", "level": "{level}"}}"#), vec![]))
        .chain([(
            "ERROR in the text, WARNING in the label".to_string(),
            r#"{"app": "api", "level": "warn"}"#.to_string(),
            vec![],
        )])
        .collect();
    want.sort();
    assert_eq!(got, want, "{}", sluice.logs());

    let (status, text) = sluice.get("/metrics").await;
    assert_eq!(status, 200);
    let events = |event: &str| {
        metric(&text, "sluice_plugin_events_total", &[("stage", "main/level"), ("event", event)])
    };
    assert_eq!(events("detected:warn"), Some(2.0), "{text}");
    assert_eq!(events("detected:error"), Some(2.0), "{text}");
    assert_eq!(events("detected:info"), Some(2.0), "{text}");
    assert_eq!(events("detected:debug"), Some(1.0), "{text}");
    assert_eq!(events("detected:fatal"), Some(1.0), "{text}");
    assert_eq!(events("undetected"), Some(1.0), "{text}");
    assert_eq!(events("existing"), Some(1.0), "{text}");
}
