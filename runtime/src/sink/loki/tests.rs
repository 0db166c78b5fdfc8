//! Behaviour of the whole sink against a small in-process Loki stand-in on 127.0.0.1:0.
//!
//! The stand-in acts like Loki where it matters: on a 400 it keeps the valid entries of the
//! request and ignores exact duplicates. Each test runs on a current-thread runtime inside a
//! thread-local metrics recorder, so the sink's metrics can be read back.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use prost::Message;
use tokio::sync::mpsc;

use super::*;
use crate::buffer::Budget;
use crate::config::RetryConfig;
use crate::model::{Batch, Entry, LabelSet, Stream};
use crate::proto::PushRequest;

const SINK: &str = "loki-test";
const BAD: &str = "BAD LINE";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A scripted answer: status and optional `Retry-After`.
struct Reply(u16, Option<&'static str>);

/// A stored entry: labels, timestamp, line.
type Stored = (String, i64, String);

#[derive(Default)]
struct FakeLoki {
    /// Answers given first, in order, before any rule below applies.
    script: Mutex<VecDeque<Reply>>,
    /// Answer every request with this status.
    always: Mutex<Option<u16>>,
    /// Answer 413 to requests with more entries than this.
    max_entries: Mutex<Option<usize>>,
    /// Time taken to answer.
    delay: Mutex<Duration>,
    requests: Mutex<Vec<(HeaderMap, PushRequest, Instant)>>,
    stored: Mutex<Vec<Stored>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl FakeLoki {
    async fn start() -> (Arc<Self>, SocketAddr) {
        let loki = Arc::new(Self::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let app = axum::Router::new()
            .route("/loki/api/v1/push", axum::routing::post(push))
            .with_state(Arc::clone(&loki));
        tokio::spawn(async move { axum::serve(listener, app).await });
        (loki, addr)
    }

    fn answer(&self, headers: HeaderMap, body: &[u8]) -> Response {
        let decoded = snap::raw::Decoder::new()
            .decompress_vec(body)
            .ok()
            .and_then(|raw| PushRequest::decode(raw.as_slice()).ok());
        let Some(push) = decoded else {
            return (StatusCode::BAD_REQUEST, "undecodable body").into_response();
        };
        let entries: usize = push.streams.iter().map(|s| s.entries.len()).sum();
        lock(&self.requests).push((headers, push.clone(), Instant::now()));
        if let Some(Reply(code, retry_after)) = lock(&self.script).pop_front() {
            let mut response = (status(code), "scripted").into_response();
            if let Some(ra) = retry_after {
                response.headers_mut().insert("retry-after", ra.parse().expect("header value"));
            }
            return response;
        }
        if let Some(code) = *lock(&self.always) {
            return (status(code), "always").into_response();
        }
        if lock(&self.max_entries).is_some_and(|max| entries > max) {
            return (StatusCode::PAYLOAD_TOO_LARGE, "too many entries").into_response();
        }
        // Like Loki: keep every valid entry (exact duplicates once), refuse the bad ones.
        let mut stored = lock(&self.stored);
        let mut refused = None;
        for s in &push.streams {
            for e in &s.entries {
                if e.line == BAD {
                    refused.get_or_insert_with(|| format!("entry for stream '{}' has a bad line", s.labels));
                    continue;
                }
                let ts = e.timestamp.and_then(|t| t.to_nanos()).unwrap_or(-1);
                let key = (s.labels.clone(), ts, e.line.clone());
                if !stored.contains(&key) {
                    stored.push(key);
                }
            }
        }
        match refused {
            Some(message) => (StatusCode::BAD_REQUEST, message).into_response(),
            None => StatusCode::NO_CONTENT.into_response(),
        }
    }

    fn requests(&self) -> usize {
        lock(&self.requests).len()
    }

    fn stored_lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = lock(&self.stored).iter().map(|s| s.2.clone()).collect();
        lines.sort();
        lines
    }
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).expect("valid status")
}

async fn push(State(loki): State<Arc<FakeLoki>>, headers: HeaderMap, body: Bytes) -> Response {
    let now = loki.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    loki.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let delay = *lock(&loki.delay);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let response = loki.answer(headers, &body);
    loki.in_flight.fetch_sub(1, Ordering::SeqCst);
    response
}

/// A metrics recorder that keeps counters and gauges in memory.
#[derive(Default)]
struct TestMetrics {
    values: Mutex<HashMap<String, Arc<AtomicU64>>>,
}

impl TestMetrics {
    fn id(name: &str, mut labels: Vec<String>) -> String {
        labels.sort();
        format!("{name}{{{}}}", labels.join(","))
    }

    fn handle(&self, key: &Key) -> Arc<AtomicU64> {
        let labels = key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
        Arc::clone(lock(&self.values).entry(Self::id(key.name(), labels)).or_default())
    }

    fn raw(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let mut all = vec![format!("sink={SINK}")];
        all.extend(labels.iter().map(|(k, v)| format!("{k}={v}")));
        lock(&self.values).get(&Self::id(name, all)).map_or(0, |v| v.load(Ordering::SeqCst))
    }

    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.raw(name, labels)
    }

    fn gauge(&self, name: &str) -> f64 {
        f64::from_bits(self.raw(name, &[]))
    }
}

impl Recorder for TestMetrics {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.handle(key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.handle(key))
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

/// Runs `test` on a current-thread runtime with a thread-local metrics recorder.
fn run_test<F, Fut>(test: F)
where
    F: FnOnce(Arc<TestMetrics>) -> Fut,
    Fut: Future<Output = ()>,
{
    let metrics = Arc::new(TestMetrics::default());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    metrics::with_local_recorder(&*metrics, || rt.block_on(test(Arc::clone(&metrics))));
}

fn config(addr: SocketAddr) -> LokiSinkConfig {
    let mut c = LokiSinkConfig::new(&format!("http://{addr}"));
    c.batch_wait = Duration::from_millis(20);
    c.timeout = Duration::from_secs(2);
    c.retry = RetryConfig {
        min_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        max_attempts: 0,
    };
    c
}

/// An input of `streams` (app label, lines) for `tenant`, charged to `budget`.
fn input(budget: &Arc<Budget>, tenant: &str, streams: &[(&str, &[&str])]) -> SinkInput {
    let mut n = 0;
    let streams: Vec<Stream> = streams
        .iter()
        .map(|(app, lines)| Stream {
            labels: LabelSet::new(vec![("app".into(), app.to_string())]),
            entries: lines
                .iter()
                .map(|l| {
                    n += 1;
                    Entry {
                        timestamp_ns: 1_700_000_000_000_000_000 + n,
                        line: l.to_string(),
                        metadata: vec![],
                    }
                })
                .collect(),
        })
        .collect();
    let batch = Batch { tenant: tenant.into(), streams };
    let charge = budget.try_charge(batch.entry_count() as u64, batch.size() as u64).expect("fits the budget");
    SinkInput { batch, charge: Arc::new(charge), mark: None, ack: None }
}

/// Runs the sink over `inputs` until it has flushed and stopped.
async fn run_sink(config: &LokiSinkConfig, inputs: Vec<SinkInput>) {
    run_sink_with(config, inputs, None).await;
}

/// [`run_sink`] with a dead-letter directory.
async fn run_sink_with(config: &LokiSinkConfig, inputs: Vec<SinkInput>, dead_letter: Option<DeadLetter>) {
    let sink = LokiSink::new(SINK, config, dead_letter).expect("sink starts");
    let (tx, rx) = mpsc::unbounded_channel();
    for i in inputs {
        tx.send(i).expect("sink is listening");
    }
    drop(tx);
    tokio::time::timeout(Duration::from_secs(10), sink.run(rx)).await.expect("the sink stops after flushing");
}

fn sorted(lines: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

#[test]
fn retries_429_and_500_then_delivers_honouring_retry_after() {
    run_test(|m| async move {
        let (loki, addr) = FakeLoki::start().await;
        lock(&loki.script).extend([Reply(429, Some("1")), Reply(500, None)]);
        let mut config = config(addr);
        config.retry.max_backoff = Duration::from_secs(2);
        let budget = Budget::new(1000, 1 << 20);
        run_sink(&config, vec![input(&budget, "t", &[("api", &["a", "b", "c"])])]).await;

        let requests = lock(&loki.requests);
        assert_eq!(requests.len(), 3);
        assert!(requests.iter().all(|r| r.1 == requests[0].1), "the same request is retried");
        let first_wait = requests[1].2 - requests[0].2;
        assert!(first_wait >= Duration::from_secs(1), "Retry-After: 1 not honoured: {first_wait:?}");
        assert!(requests[2].2 - requests[1].2 < Duration::from_millis(500), "500 waits only the backoff");
        drop(requests);
        assert_eq!(loki.stored_lines(), sorted(&["a", "b", "c"]));

        assert_eq!(m.counter("sluice_sink_requests_total", &[("status", "429")]), 1);
        assert_eq!(m.counter("sluice_sink_requests_total", &[("status", "500")]), 1);
        assert_eq!(m.counter("sluice_sink_requests_total", &[("status", "204")]), 1);
        assert_eq!(m.counter("sluice_sink_retries_total", &[("reason", "rate_limited")]), 1);
        assert_eq!(m.counter("sluice_sink_retries_total", &[("reason", "server_error")]), 1);
        assert_eq!(m.counter("sluice_sink_sent_entries_total", &[]), 3);
        assert!(m.counter("sluice_sink_sent_bytes_total", &[]) > 0);
        assert_eq!(m.gauge("sluice_sink_inflight_requests"), 0.0);
        assert_eq!((budget.entries(), budget.bytes()), (0, 0), "budget released");
    });
}

#[test]
fn a_bad_line_is_isolated_and_its_neighbours_delivered() {
    run_test(|m| async move {
        let (loki, addr) = FakeLoki::start().await;
        let budget = Budget::new(1000, 1 << 20);
        let streams: &[(&str, &[&str])] = &[
            ("a", &["a0", "a1", "a2", "a3", "a4"]),
            ("b", &["b0", BAD, "b2", "b3", "b4"]),
            ("c", &["c0", "c1", "c2", "c3", "c4"]),
        ];
        run_sink(&config(addr), vec![input(&budget, "t", streams)]).await;

        let good: Vec<&str> =
            streams.iter().flat_map(|(_, lines)| lines.iter().copied()).filter(|l| *l != BAD).collect();
        assert_eq!(loki.stored_lines(), sorted(&good));
        assert_eq!(m.counter("sluice_sink_dropped_entries_total", &[("reason", "rejected")]), 1);
        assert_eq!(m.counter("sluice_sink_sent_entries_total", &[]), 14);
        // Halving: whole, then 2 + 2 + 2 + 2 halves down to the bad line alone.
        assert_eq!(loki.requests(), 9);
        let last_400 = lock(&loki.requests)
            .iter()
            .rev()
            .find(|r| r.1.streams.iter().any(|s| s.entries.iter().any(|e| e.line == BAD)))
            .map(|r| r.1.streams.iter().map(|s| s.entries.len()).sum::<usize>());
        assert_eq!(last_400, Some(1), "the bad line was finally sent alone");
        assert_eq!((budget.entries(), budget.bytes()), (0, 0));
    });
}

#[test]
fn too_large_requests_are_split_until_they_fit() {
    run_test(|m| async move {
        let (loki, addr) = FakeLoki::start().await;
        *lock(&loki.max_entries) = Some(3);
        let budget = Budget::new(1000, 1 << 20);
        let lines = ["0", "1", "2", "3", "4", "5", "6", "7"];
        run_sink(&config(addr), vec![input(&budget, "t", &[("a", &lines)])]).await;
        assert_eq!(loki.stored_lines(), sorted(&lines));
        assert_eq!(m.counter("sluice_sink_sent_entries_total", &[]), 8);
        assert_eq!(m.counter("sluice_sink_dropped_entries_total", &[("reason", "payload_too_large")]), 0);
        assert!(m.counter("sluice_sink_requests_total", &[("status", "413")]) >= 1);
    });
}

#[test]
fn exhausted_retries_set_the_batch_aside_and_release_the_budget() {
    run_test(|m| async move {
        let (loki, addr) = FakeLoki::start().await;
        *lock(&loki.always) = Some(500);
        let mut config = config(addr);
        config.retry.max_attempts = 3;
        let data = tempfile::tempdir().expect("tempdir");
        let dead_letter = DeadLetter::open(data.path(), SINK).expect("dead-letter dir");
        let dir = dead_letter.dir().to_path_buf();
        let budget = Budget::new(1000, 1 << 20);
        let inputs =
            vec![input(&budget, "t", &[("a", &["1", "2"])]), input(&budget, "t", &[("b", &["3", "4"])])];
        run_sink_with(&config, inputs, Some(dead_letter)).await;

        assert_eq!(loki.requests(), 3, "max_attempts counts every attempt");
        assert_eq!(m.counter("sluice_sink_requests_total", &[("status", "500")]), 3);
        assert_eq!(m.counter("sluice_sink_retries_total", &[("reason", "server_error")]), 2);
        assert_eq!(m.counter("sluice_sink_dead_lettered_entries_total", &[]), 4);
        assert_eq!(m.counter("sluice_sink_dropped_entries_total", &[("reason", "retries_exhausted")]), 0);
        assert_eq!((budget.entries(), budget.bytes()), (0, 0));
        let mut lines = archived_lines(&dir);
        lines.sort();
        assert_eq!(lines, ["1", "2", "3", "4"], "every entry is in the dead-letter directory");
    });
}

/// The `line` of every record in the `.ndjson.zst` objects under `dir`.
fn archived_lines(dir: &std::path::Path) -> Vec<String> {
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(dir).expect("list").flatten() {
        let path = entry.path();
        if path.is_dir() {
            lines.extend(archived_lines(&path));
        } else {
            let text = zstd::decode_all(&std::fs::read(&path).expect("read")[..]).expect("zstd");
            for line in String::from_utf8(text).expect("utf-8").lines() {
                let record: serde_json::Value = serde_json::from_str(line).expect("a record");
                lines.push(record["line"].as_str().expect("a line").to_string());
            }
        }
    }
    lines
}

#[test]
fn without_a_dead_letter_directory_exhausted_retries_are_dropped() {
    // `sluice replay`: it stops and resumes instead.
    run_test(|m| async move {
        let (loki, addr) = FakeLoki::start().await;
        *lock(&loki.always) = Some(500);
        let mut config = config(addr);
        config.retry.max_attempts = 2;
        let budget = Budget::new(1000, 1 << 20);
        run_sink(&config, vec![input(&budget, "t", &[("a", &["1", "2"])])]).await;
        assert_eq!(m.counter("sluice_sink_dropped_entries_total", &[("reason", "retries_exhausted")]), 2);
    });
}

#[test]
fn refusals_of_the_configuration_are_retried_until_they_pass() {
    // A rotated token, a deploy that routes to a 404 for a moment, a redirect: not the lines'
    // fault, so never dropped.
    run_test(|m| async move {
        let (loki, addr) = FakeLoki::start().await;
        lock(&loki.script).extend([Reply(401, None), Reply(403, None), Reply(404, None), Reply(302, None)]);
        let budget = Budget::new(1000, 1 << 20);
        run_sink(&config(addr), vec![input(&budget, "t", &[("a", &["1", "2"]), ("b", &["3"])])]).await;
        assert_eq!(loki.requests(), 5);
        for reason in ["unauthorized", "forbidden", "not_found", "redirect"] {
            assert_eq!(m.counter("sluice_sink_retries_total", &[("reason", reason)]), 1, "{reason}");
        }
        assert_eq!(m.counter("sluice_sink_sent_entries_total", &[]), 3);
        assert_eq!(m.counter("sluice_sink_dropped_entries_total", &[("reason", "unauthorized")]), 0);
        assert_eq!((budget.entries(), budget.bytes()), (0, 0));
    });
}

#[test]
fn network_errors_are_retried_and_counted() {
    run_test(|m| async move {
        // Nothing listens on this port once the listener is dropped.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let mut config = config(addr);
        config.retry.max_attempts = 2;
        let budget = Budget::new(1000, 1 << 20);
        run_sink(&config, vec![input(&budget, "t", &[("a", &["1"])])]).await;
        assert_eq!(m.counter("sluice_sink_requests_total", &[("status", "error")]), 2);
        assert_eq!(m.counter("sluice_sink_retries_total", &[("reason", "network")]), 1);
        assert_eq!(m.counter("sluice_sink_dropped_entries_total", &[("reason", "retries_exhausted")]), 1);
    });
}

#[test]
fn shutdown_flushes_what_is_buffered() {
    run_test(|m| async move {
        let (loki, addr) = FakeLoki::start().await;
        let mut config = config(addr);
        config.batch_wait = Duration::from_secs(3600);
        let budget = Budget::new(1000, 1 << 20);
        let started = Instant::now();
        let inputs = vec![
            input(&budget, "t1", &[("a", &["1", "2"])]),
            input(&budget, "t2", &[("a", &["3"])]),
            input(&budget, "t1", &[("b", &["4"])]),
        ];
        run_sink(&config, inputs).await;
        assert!(started.elapsed() < Duration::from_secs(5), "did not wait for batch_wait");
        assert_eq!(loki.stored_lines(), sorted(&["1", "2", "3", "4"]));
        let mut tenants: Vec<(String, usize)> = lock(&loki.requests)
            .iter()
            .map(|(h, p, _)| {
                let tenant = h.get("x-scope-orgid").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                (tenant, p.streams.iter().map(|s| s.entries.len()).sum())
            })
            .collect();
        tenants.sort();
        assert_eq!(tenants, [("t1".to_string(), 3), ("t2".to_string(), 1)], "one request per tenant");
        assert_eq!(m.counter("sluice_sink_sent_entries_total", &[]), 4);
        assert_eq!((budget.entries(), budget.bytes()), (0, 0));
    });
}

#[test]
fn batch_wait_flushes_without_shutdown() {
    run_test(|_m| async move {
        let (loki, addr) = FakeLoki::start().await;
        let mut config = config(addr);
        config.batch_wait = Duration::from_millis(100);
        let budget = Budget::new(1000, 1 << 20);
        let sink = LokiSink::new(SINK, &config, None).expect("sink starts");
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(sink.run(rx));
        let sent = Instant::now();
        tx.send(input(&budget, "t", &[("a", &["1"])])).expect("listening");
        while loki.requests() == 0 {
            assert!(sent.elapsed() < Duration::from_secs(3), "batch_wait never flushed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let arrived = lock(&loki.requests)[0].2 - sent;
        assert!(arrived >= Duration::from_millis(100), "flushed before batch_wait: {arrived:?}");
        assert_eq!(loki.stored_lines(), ["1"]);
        drop(tx);
        task.await.expect("sink task");
    });
}

#[test]
fn at_most_max_concurrency_requests_are_in_flight() {
    run_test(|m| async move {
        let (loki, addr) = FakeLoki::start().await;
        *lock(&loki.delay) = Duration::from_millis(100);
        let mut config = config(addr);
        config.max_concurrency = 2;
        config.batch_size = bytesize::ByteSize::b(1); // every entry a batch of its own
        let budget = Budget::new(1000, 1 << 20);
        let lines = ["1", "2", "3", "4", "5", "6"];
        let started = Instant::now();
        run_sink(&config, vec![input(&budget, "t", &[("a", &lines)])]).await;
        assert_eq!(loki.requests(), 6);
        assert_eq!(loki.max_in_flight.load(Ordering::SeqCst), 2);
        assert!(started.elapsed() >= Duration::from_millis(300), "6 requests, 2 at a time, 100 ms each");
        assert_eq!(m.counter("sluice_sink_sent_entries_total", &[]), 6);
    });
}

#[test]
fn sends_loki_headers_tenant_override_and_auth() {
    run_test(|_m| async move {
        let (loki, addr) = FakeLoki::start().await;
        let mut config = config(addr);
        config.tenant = Some("override".into());
        config.auth =
            Some(AuthConfig { bearer_token: Some("s3cret".into()), username: None, password: None });
        config.headers.insert("X-Extra".into(), "yes".into());
        let budget = Budget::new(1000, 1 << 20);
        run_sink(&config, vec![input(&budget, "original", &[("a", &["1"])])]).await;
        let requests = lock(&loki.requests);
        let headers = &requests[0].0;
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        assert_eq!(get("content-type").as_deref(), Some("application/x-protobuf"));
        assert_eq!(get("content-encoding"), None);
        assert_eq!(get("x-scope-orgid").as_deref(), Some("override"));
        assert_eq!(get("authorization").as_deref(), Some("Bearer s3cret"));
        assert_eq!(get("x-extra").as_deref(), Some("yes"));
        assert_eq!(get("user-agent"), Some(format!("sluice/{}", env!("CARGO_PKG_VERSION"))));
    });
}

#[test]
fn basic_auth_and_bad_settings() {
    let basic =
        AuthConfig { bearer_token: None, username: Some("user".into()), password: Some("pass".into()) };
    let value = authorization(&basic).expect("valid");
    assert_eq!(value.to_str().expect("ascii"), "Basic dXNlcjpwYXNz");
    assert!(value.is_sensitive());

    let ok = LokiSinkConfig::new("http://127.0.0.1:3100");
    assert!(LokiSink::new(SINK, &ok, None).is_ok());
    let mut bad = ok.clone();
    bad.url = "ftp://x".into();
    assert!(LokiSink::new(SINK, &bad, None).is_err());
    let mut bad = ok.clone();
    bad.headers.insert("X-Scope-OrgID".into(), "t".into());
    assert!(LokiSink::new(SINK, &bad, None).expect_err("tenant header").contains("tenant"));
    let mut bad = ok.clone();
    bad.headers.insert("X-Ok".into(), "line\nbreak".into());
    assert!(LokiSink::new(SINK, &bad, None).is_err());
    let mut bad = ok;
    bad.tenant = Some("bad\ntenant".into());
    assert!(LokiSink::new(SINK, &bad, None).is_err());
}
