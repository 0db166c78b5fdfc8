//! The Loki sink under Loki's failures: 429 with Retry-After, 5xx, Loki down, and a 400 for one
//! bad line. Nothing accepted with 204 is lost; re-deliveries stay within at-least-once.

use std::time::{Duration, Instant};

use sluice::proto::PushRequest;

use crate::support::push::{entry, stream};
use crate::support::receiver::{Receiver, ReceiverOptions, now_ns};
use crate::support::sluice::{Sluice, loki_config};
use crate::support::{DELIVERY, ok_or_logs};

/// Pushes `pushes` requests of 2 streams × `per` entries; returns every line, sorted.
async fn push_many(
    sluice: &Sluice,
    tenant: &str,
    pushes: usize,
    per: usize,
    poison: Option<(usize, usize)>,
) -> Vec<String> {
    let t0 = now_ns() - 10_000_000_000;
    let mut lines = Vec::new();
    for p in 0..pushes {
        let streams = (0..2)
            .map(|s| {
                let entries = (0..per)
                    .map(|n| {
                        let line = if poison == Some((p, n)) && s == 0 {
                            format!("POISON p{p} s{s} n{n}")
                        } else {
                            format!("line p{p} s{s} n{n}")
                        };
                        lines.push(line.clone());
                        entry(t0 + (p * per + n) as i64, &line)
                    })
                    .collect();
                stream(&format!(r#"{{app="res", s="{s}"}}"#), entries)
            })
            .collect();
        let resp = sluice.push_proto(Some(tenant), &PushRequest { streams }).await;
        assert_eq!(resp.status, 204, "push {p}: {}\n{}", resp.body, sluice.logs());
    }
    lines.sort();
    lines
}

#[tokio::test]
async fn throttling_and_server_errors_are_retried_until_everything_is_delivered() {
    let loki = Receiver::start();
    loki.fail_next(2, 429, Some(1));
    loki.fail_next(3, 500, None);
    let sluice = Sluice::start(&loki_config(&loki.url(), "")).await;
    let started = Instant::now();
    let lines = push_many(&sluice, "r", 5, 20, None).await;
    ok_or_logs(loki.wait_for(lines.len(), Duration::from_secs(20)).await, &sluice);
    loki.settle(Duration::from_millis(300), DELIVERY).await;
    assert_eq!(loki.lines("r"), lines, "every entry delivered");
    assert_eq!(loki.status_count(429), 2);
    assert_eq!(loki.status_count(500), 3);
    // Failed requests stored nothing, so a correct retry never duplicates.
    assert_eq!(loki.duplicates(), 0, "entries re-sent after Loki had accepted them");
    // Retry-After: 1 was honoured for the two 429s in a row (at least one full second of waiting).
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After ignored: all done in {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn loki_down_then_up_loses_nothing() {
    let loki = Receiver::start();
    loki.set_down(true);
    let sluice = Sluice::start(&loki_config(&loki.url(), "")).await;
    let lines = push_many(&sluice, "down", 4, 10, None).await;
    // Sluice has tried (and failed) at least twice before Loki comes back.
    ok_or_logs(loki.wait_for_requests(2, DELIVERY).await, &sluice);
    assert_eq!(loki.total(), 0);
    loki.set_down(false);
    ok_or_logs(loki.wait_for(lines.len(), Duration::from_secs(15)).await, &sluice);
    loki.settle(Duration::from_millis(300), DELIVERY).await;
    assert_eq!(loki.lines("down"), lines);
    assert_eq!(loki.duplicates(), 0);
}

#[tokio::test]
async fn a_400_for_one_bad_line_loses_only_that_line() {
    let loki = Receiver::start();
    loki.fail_matching("POISON", 400, usize::MAX);
    let sluice = Sluice::start(&loki_config(&loki.url(), "")).await;
    let mut lines = push_many(&sluice, "p", 4, 25, Some((2, 7))).await;
    lines.retain(|l| !l.starts_with("POISON"));
    ok_or_logs(loki.wait_for(lines.len(), Duration::from_secs(20)).await, &sluice);
    loki.settle(Duration::from_millis(500), DELIVERY).await;
    assert_eq!(loki.lines("p"), lines, "every entry but the poisoned one is delivered");
    let rejected = loki.status_count(400);
    assert!(rejected >= 1, "the poisoned line was sent");
    // A 400 is not retried as is: each try must have narrowed down the batch, so the number of
    // 400s is bounded by a bisection of the batch (log2 of 200 entries, plus slack).
    assert!(rejected <= 16, "{rejected} requests rejected with 400: the same batch is being retried");
    let duplicates = loki.duplicates();
    eprintln!("400 isolation: {rejected} rejected requests, {duplicates} duplicate entries re-sent");
    assert!(duplicates <= lines.len(), "duplicates beyond one re-send each: {duplicates}");
}

#[tokio::test]
async fn a_slow_loki_makes_sluice_answer_429_instead_of_losing_lines() {
    let loki = Receiver::start();
    loki.set_down(true);
    // The in-memory path: with the write-ahead log (see durability.rs) the log fills instead.
    let extra = "queue:\n  max_entries: 50\nwal: { ack: in_memory }\n";
    let sluice = Sluice::start(&loki_config(&loki.url(), extra)).await;
    let t0 = now_ns() - 1_000_000_000;
    let mut accepted = Vec::new();
    let mut throttled = 0;
    for p in 0..20 {
        let lines: Vec<String> = (0..10).map(|n| format!("q p{p} n{n}")).collect();
        let req = PushRequest {
            streams: vec![stream(
                r#"{app="queue"}"#,
                lines.iter().enumerate().map(|(n, l)| entry(t0 + (p * 10 + n) as i64, l)).collect(),
            )],
        };
        let resp = sluice.push_proto(Some("q"), &req).await;
        match resp.status {
            204 => accepted.extend(lines),
            429 => throttled += 1,
            other => panic!("push {p}: unexpected {other}: {}", resp.body),
        }
    }
    assert!(
        throttled > 0,
        "a full queue answers 429 (accepted {} entries into a queue of 50)",
        accepted.len()
    );
    loki.set_down(false);
    ok_or_logs(loki.wait_for(accepted.len(), Duration::from_secs(20)).await, &sluice);
    loki.settle(Duration::from_millis(300), DELIVERY).await;
    accepted.sort();
    assert_eq!(loki.lines("q"), accepted, "everything answered with 204 is delivered");
}

#[tokio::test]
async fn loki_unreachable_at_start_gets_everything_once_it_listens() {
    // A port with nothing listening: connections are refused until the receiver starts there.
    let addr = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port");
    let sluice = Sluice::start(&loki_config(&format!("http://{addr}"), "")).await;
    let lines = push_many(&sluice, "refused", 3, 10, None).await;
    // Let sluice fail against the closed port for a few of its (50–500 ms) backoffs.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let loki = Receiver::start_with(ReceiverOptions { addr: Some(addr), ..Default::default() });
    ok_or_logs(loki.wait_for(lines.len(), Duration::from_secs(15)).await, &sluice);
    loki.settle(Duration::from_millis(300), DELIVERY).await;
    assert_eq!(loki.lines("refused"), lines);
}

#[tokio::test]
async fn a_loki_slower_than_the_timeout_gets_at_least_once_delivery() {
    let loki = Receiver::start();
    // The first request is stored but answered after the sink's timeout: sluice must retry, and
    // Loki's de-duplication absorbs the re-sent entries.
    loki.delay_next(1, Duration::from_millis(1500));
    let config = format!(
        "sinks:\n  loki: {{ type: loki, url: \"{}\", batch_wait: 100ms, timeout: 300ms, retry: {{ min_backoff: 50ms, max_backoff: 200ms }} }}\n",
        loki.url()
    );
    let sluice = Sluice::start(&config).await;
    let lines = push_many(&sluice, "slow", 2, 10, None).await;
    ok_or_logs(loki.wait_for(lines.len(), Duration::from_secs(15)).await, &sluice);
    // The delayed answer arrives after 1.5 s; wait for the retries to settle.
    loki.settle(Duration::from_millis(700), Duration::from_secs(10)).await;
    assert_eq!(loki.lines("slow"), lines);
    let requests = loki.requests().len();
    let duplicates = loki.duplicates();
    eprintln!("slow Loki: {requests} requests, {duplicates} duplicate entries re-sent");
    assert!(requests >= 2, "the timed-out request was retried");
    assert!(duplicates <= lines.len(), "more re-sends than one per entry: {duplicates}");
}
