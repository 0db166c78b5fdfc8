//! `GET /metrics`: Prometheus text with request counters by tenant and status.

use crate::support::push::{entry, one};
use crate::support::receiver::{Receiver, now_ns};
use crate::support::sluice::{Sluice, loki_config};

/// The sum of `*request*_total` samples whose labels include `tenant="<tenant>"` and a status/code of `status`.
fn requests(metrics: &str, tenant: &str, status: u16) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.contains(&format!("tenant=\"{tenant}\"")))
        .filter(|l| l.contains(&format!("status=\"{status}\"")) || l.contains(&format!("code=\"{status}\"")))
        .filter(|l| {
            l.split('{').next().is_some_and(|name| name.contains("request") && name.ends_with("_total"))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn metrics_count_requests_by_tenant_and_status() {
    let loki = Receiver::start();
    let sluice = Sluice::start(&loki_config(&loki.url(), "")).await;
    let good = one(r#"{app="m"}"#, vec![entry(now_ns(), "x")]);
    let bad = one(r#"{1bad="m"}"#, vec![entry(now_ns(), "x")]);
    for _ in 0..3 {
        assert_eq!(sluice.push_proto(Some("metrics-a"), &good).await.status, 204);
    }
    assert_eq!(sluice.push_proto(Some("metrics-a"), &bad).await.status, 400);
    assert_eq!(sluice.push_proto(Some("metrics-b"), &good).await.status, 204);
    let (status, text) = sluice.get("/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(requests(&text, "metrics-a", 204), 3.0, "{text}");
    assert_eq!(requests(&text, "metrics-a", 400), 1.0, "{text}");
    assert_eq!(requests(&text, "metrics-b", 204), 1.0, "{text}");
}

#[tokio::test]
async fn health_endpoints_answer() {
    let sluice = Sluice::start_with(Default::default()).await;
    assert_eq!(sluice.get("/ready").await.0, 200);
    let (status, _) = sluice.get("/metrics").await;
    assert_eq!(status, 200);
    // Loki's own push path is the only push path; other paths are 404.
    assert_eq!(sluice.get("/no/such/path").await.0, 404);
}

#[tokio::test]
async fn log_format_json_writes_one_json_object_per_line() {
    let mut sluice = Sluice::start_with(Default::default()).await;
    // Shut down too, so start and stop are both logged.
    let status = sluice.terminate(std::time::Duration::from_secs(10)).await.expect("exits");
    assert!(status.success(), "{status}");
    let logs = [sluice.dir().join("stdout.log"), sluice.dir().join("stderr.log")]
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .collect::<String>();
    let lines: Vec<&str> = logs.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "sluice logged nothing");
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(v.get("level").is_some() || v.get("severity").is_some(), "no level: {line}");
    }
}
