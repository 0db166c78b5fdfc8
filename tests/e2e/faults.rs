//! Delivery under faults (issue 16): what a 204 promises when Loki, or what stands in front of
//! it, answers something other than success.

use std::time::{Duration, Instant};

use crate::support::plugins::metric;
use crate::support::push::{entry, one};
use crate::support::receiver::{Receiver, now_ns};
use crate::support::sluice::{Sluice, loki_config, run_to_end};
use crate::support::{DELIVERY, ok_or_logs};

/// A front that answers 404 for a while, then 401 (a deploy routing to the wrong place, then a
/// rotated token): lines answered 204 are held, logged at error, and delivered exactly once when
/// it passes. Before, the sink dropped them and confirmed their log records.
#[tokio::test]
async fn answers_about_the_configuration_hold_lines_until_loki_takes_them() {
    let loki = Receiver::start();
    loki.fail_next(4, 404, None);
    loki.fail_next(4, 401, None);
    let sluice = Sluice::start(&loki_config(&loki.url(), "wal: { ack: on_disk }\n")).await;
    let ts = now_ns();
    for i in 0..3 {
        let resp = sluice
            .push_proto(Some("t"), &one(r#"{app="x"}"#, vec![entry(ts + i, &format!("line {i}"))]))
            .await;
        assert_eq!(resp.status, 204, "{}", resp.body);
    }
    ok_or_logs(loki.wait_for(3, DELIVERY).await, &sluice);
    loki.settle(Duration::from_millis(300), DELIVERY).await;
    let mut lines = loki.lines("t");
    lines.sort();
    assert_eq!(lines, ["line 0", "line 1", "line 2"], "{}", sluice.logs());
    assert_eq!(loki.status_count(404), 4);
    assert_eq!(loki.status_count(401), 4);
    let (_, text) = sluice.get("/metrics").await;
    assert!(
        metric(&text, "sluice_sink_retries_total", &[("reason", "not_found")]).is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        metric(&text, "sluice_sink_retries_total", &[("reason", "unauthorized")]).is_some_and(|n| n >= 1.0)
    );
    assert!(!text.contains("sluice_sink_dropped_entries_total"), "nothing dropped: {text}");
    let logs = sluice.logs();
    assert!(
        logs.contains("check the sink's url and auth") && logs.contains("programmed failure 401"),
        "{logs}"
    );
}

/// With `retry.max_attempts`, a batch that runs out of attempts goes to the sink's dead-letter
/// directory as archive objects, and `sluice replay` sends it again.
#[tokio::test]
async fn a_batch_out_of_attempts_is_set_aside_and_replayed() {
    let loki = Receiver::start();
    loki.fail_next(10_000, 403, None);
    let config = format!(
        r#"sinks:
  loki:
    type: loki
    url: "{}"
    batch_wait: 50ms
    retry: {{ min_backoff: 10ms, max_backoff: 50ms, max_attempts: 3 }}
wal: {{ ack: on_disk }}
"#,
        loki.url()
    );
    let sluice = Sluice::start(&config).await;
    let ts = now_ns();
    let push = one(r#"{app="x"}"#, vec![entry(ts, "set aside 1"), entry(ts + 1, "set aside 2")]);
    assert_eq!(sluice.push_proto(Some("team-a"), &push).await.status, 204);
    let deadline = Instant::now() + DELIVERY;
    loop {
        let (_, text) = sluice.get("/metrics").await;
        if metric(&text, "sluice_sink_dead_lettered_entries_total", &[("sink", "loki")]) == Some(2.0) {
            break;
        }
        assert!(Instant::now() < deadline, "not set aside: {text}\n{}", sluice.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(loki.total(), 0);
    let dir = sluice.data_dir().join("dead-letter").join("loki");
    assert!(sluice.logs().contains("sluice replay --from"), "the log says how to send them again");

    let fixed = Receiver::start();
    let from = dir.display().to_string();
    let out = run_to_end(&["replay", "--from", &from, "--to-loki", &fixed.url()], sluice.dir());
    assert_eq!(out.code, Some(0), "{out:?}");
    ok_or_logs(fixed.wait_for(2, DELIVERY).await, &sluice);
    assert_eq!(fixed.lines("team-a"), ["set aside 1", "set aside 2"]);
}
