//! SIGTERM: what sluice holds is flushed to Loki, then it exits 0.

use std::time::Duration;

use crate::support::push::{entry, one};
use crate::support::receiver::{Receiver, now_ns};
use crate::support::sluice::Sluice;

#[tokio::test]
async fn sigterm_flushes_buffered_entries_and_exits_zero() {
    let loki = Receiver::start();
    // A batch_wait far beyond the test: only shutdown can send these entries.
    let config = format!(
        "sinks:\n  loki: {{ type: loki, url: \"{}\", batch_wait: 60s, batch_size: 10MiB }}\nserver:\n  shutdown_timeout: 10s\n",
        loki.url()
    );
    let mut sluice = Sluice::start(&config).await;
    let t0 = now_ns() - 1_000_000_000;
    let mut lines = Vec::new();
    for p in 0..5 {
        let batch: Vec<String> = (0..10).map(|n| format!("flush p{p} n{n}")).collect();
        let entries = batch.iter().enumerate().map(|(n, l)| entry(t0 + (p * 10 + n) as i64, l)).collect();
        let resp = sluice.push_proto(Some("s"), &one(r#"{app="shutdown"}"#, entries)).await;
        assert_eq!(resp.status, 204, "{}", resp.body);
        lines.extend(batch);
    }
    assert_eq!(loki.total(), 0, "nothing is sent before batch_wait or shutdown");
    let status =
        sluice.terminate(Duration::from_secs(15)).await.unwrap_or_else(|e| panic!("{e}\n{}", sluice.logs()));
    assert!(status.success(), "exit status {status}\n{}", sluice.logs());
    lines.sort();
    assert_eq!(loki.lines("s"), lines, "every accepted entry is flushed before exit\n{}", sluice.logs());
}

#[tokio::test]
async fn sigterm_with_loki_down_exits_within_the_shutdown_timeout() {
    let loki = Receiver::start();
    loki.set_down(true);
    let config = format!(
        "sinks:\n  loki: {{ type: loki, url: \"{}\", batch_wait: 50ms, retry: {{ min_backoff: 50ms, max_backoff: 200ms }} }}\nserver:\n  shutdown_timeout: 1s\n",
        loki.url()
    );
    let mut sluice = Sluice::start(&config).await;
    let resp = sluice.push_proto(Some("s"), &one(r#"{app="x"}"#, vec![entry(now_ns(), "stuck")])).await;
    assert_eq!(resp.status, 204, "{}", resp.body);
    crate::support::ok_or_logs(loki.wait_for_requests(1, Duration::from_secs(5)).await, &sluice);
    let started = std::time::Instant::now();
    let status = sluice.terminate(Duration::from_secs(8)).await;
    assert!(status.is_ok(), "{status:?}\n{}", sluice.logs());
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}
