//! End-to-end tests of the built-in `filter` plugin: the README's health-check example, with the
//! exact lines at the Loki receiver and the rule's counter in the metrics.

use std::time::Duration;

use sluice::proto::PushRequest;

use crate::support::plugins::metric;
use crate::support::push::{entry, entry_md, stream};
use crate::support::receiver::{Receiver, now_ns};
use crate::support::sluice::{Sluice, loki_config};
use crate::support::{DELIVERY, ok_or_logs};

#[tokio::test]
async fn drops_health_checks() {
    let r = Receiver::start();
    let extra = r#"pipelines:
  main:
    stages:
      - plugin: filter
        config:
          rules:
            - name: health_checks
              action: drop
              when:
                line_contains: ["GET /health", "GET /ready", "kube-probe/"]
            - name: probe_agents
              action: drop
              when:
                metadata_regex: { user_agent: "kube-probe/.*|ELB-HealthChecker/.*" }
default_route: { sinks: [loki], pipeline: main }
"#;
    let sluice = Sluice::start(&loki_config(&r.url(), extra)).await;
    let ts = now_ns();
    let push = PushRequest {
        streams: vec![
            stream(
                r#"{app="api"}"#,
                vec![
                    entry(ts, r#"10.0.0.1 - - "GET /health HTTP/1.1" 200 2"#),
                    entry(ts + 1, r#"10.0.0.2 - - "POST /v1/orders HTTP/1.1" 201 88"#),
                    entry(ts + 2, r#"10.0.0.3 - - "GET /ready HTTP/1.1" 200 2"#),
                    entry(ts + 3, r#"10.0.0.4 - - "GET / HTTP/1.1" 200 9 "-" "kube-probe/1.29""#),
                    entry_md(ts + 4, "GET /status 200", &[("user_agent", "ELB-HealthChecker/2.0")]),
                    entry_md(ts + 5, "GET /status 200", &[("user_agent", "curl/8.5.0")]),
                ],
            ),
            stream(r#"{app="worker"}"#, vec![entry(ts + 6, "upstream /health check failed: timeout")]),
        ],
    };
    let resp = sluice.push_proto(Some("t"), &push).await;
    assert_eq!(resp.status, 204, "{}\n{}", resp.body, sluice.logs());
    ok_or_logs(r.wait_for(3, DELIVERY).await, &sluice);
    r.settle(Duration::from_millis(300), DELIVERY).await;

    assert_eq!(
        r.lines("t"),
        [
            r#"10.0.0.2 - - "POST /v1/orders HTTP/1.1" 201 88"#,
            "GET /status 200",
            "upstream /health check failed: timeout",
        ],
        "{}",
        sluice.logs()
    );
    let kept = r.entries_where("t", &[("app", "api")]);
    let agents: Vec<_> = kept.iter().map(|(_, e)| e.metadata.clone()).collect();
    assert_eq!(agents, [vec![], vec![("user_agent".to_string(), "curl/8.5.0".to_string())]]);

    let (status, text) = sluice.get("/metrics").await;
    assert_eq!(status, 200);
    let events = |event: &str| {
        metric(&text, "sluice_plugin_events_total", &[("stage", "main/filter"), ("event", event)])
    };
    assert_eq!(events("dropped"), Some(4.0), "{text}");
    assert_eq!(events("dropped:health_checks"), Some(3.0), "{text}");
    assert_eq!(events("dropped:probe_agents"), Some(1.0), "{text}");
}
