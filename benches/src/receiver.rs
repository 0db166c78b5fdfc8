//! A loopback Loki for benchmarks: `POST /loki/api/v1/push` (protobuf, raw snappy, as sluice's
//! Loki sink sends it) is counted per tenant and answered 204.
//!
//! It is built to cost little CPU, since it shares the machine with the sluice under test: it
//! runs on one thread with a single-threaded tokio runtime, and decodes into message types that
//! mirror Loki's but keep only labels and lines, as [`bytes::Bytes`] slices of the decompressed
//! body (no per-line allocation, no UTF-8 check; timestamps and metadata are skipped by prost).
//! It does no validation: the faithful test Loki is `tests/e2e/support/receiver.rs`.
//!
//! Optionally it looks for given secret strings in every line (one regex of escaped literals,
//! which the regex crate runs as a multi-literal search) for the correctness check.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use prost::Message as _;
use tokio::sync::oneshot;

/// `logproto.PushRequest`, keeping only what the receiver counts.
#[derive(Clone, PartialEq, prost::Message)]
struct LitePush {
    #[prost(message, repeated, tag = "1")]
    streams: Vec<LiteStream>,
}

/// `logproto.StreamAdapter` without the entries' timestamps and metadata.
#[derive(Clone, PartialEq, prost::Message)]
struct LiteStream {
    #[prost(bytes = "bytes", tag = "1")]
    labels: Bytes,
    #[prost(message, repeated, tag = "2")]
    entries: Vec<LiteEntry>,
}

/// `logproto.EntryAdapter`: the line only.
#[derive(Clone, PartialEq, prost::Message)]
struct LiteEntry {
    #[prost(bytes = "bytes", tag = "2")]
    line: Bytes,
}

/// What arrived, per tenant or in total.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    /// Push requests answered 204.
    pub requests: u64,
    pub streams: u64,
    pub entries: u64,
    /// Bytes of lines.
    pub line_bytes: u64,
    /// Lines that contained one of the secrets looked for.
    pub lines_with_secret: u64,
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.requests += other.requests;
        self.streams += other.streams;
        self.entries += other.entries;
        self.line_bytes += other.line_bytes;
        self.lines_with_secret += other.lines_with_secret;
    }
}

/// Looks for any of a set of exact strings.
#[derive(Debug, Clone)]
pub struct SecretScanner {
    regex: regex::bytes::Regex,
}

impl SecretScanner {
    /// A scanner for `secrets`; `None` when there are none.
    pub fn new<S: AsRef<str>>(secrets: &[S]) -> Option<Self> {
        if secrets.is_empty() {
            return None;
        }
        let pattern = secrets.iter().map(|s| regex::escape(s.as_ref())).collect::<Vec<_>>().join("|");
        let regex = regex::bytes::RegexBuilder::new(&pattern).size_limit(1 << 30).build().ok()?;
        Some(Self { regex })
    }

    /// The first secret found in `haystack`.
    pub fn find<'a>(&self, haystack: &'a [u8]) -> Option<&'a [u8]> {
        self.regex.find(haystack).map(|m| m.as_bytes())
    }
}

/// Why a body could not be counted.
#[derive(Debug)]
pub enum CountError {
    Snappy(snap::Error),
    Protobuf(prost::DecodeError),
}

impl std::error::Error for CountError {}

impl std::fmt::Display for CountError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CountError::Snappy(e) => write!(f, "not raw snappy: {e}"),
            CountError::Protobuf(e) => write!(f, "not a protobuf PushRequest: {e}"),
        }
    }
}

/// Counts one push body (raw snappy, protobuf); with a scanner, also the lines holding a secret,
/// whose first match is passed to `found`.
pub fn count_push(
    body: &[u8],
    scanner: Option<&SecretScanner>,
    mut found: impl FnMut(&[u8]),
) -> Result<Counts, CountError> {
    let raw = snap::raw::Decoder::new().decompress_vec(body).map_err(CountError::Snappy)?;
    let push = LitePush::decode(Bytes::from(raw)).map_err(CountError::Protobuf)?;
    let mut counts = Counts { requests: 1, streams: push.streams.len() as u64, ..Default::default() };
    for stream in &push.streams {
        counts.entries += stream.entries.len() as u64;
        for entry in &stream.entries {
            counts.line_bytes += entry.line.len() as u64;
            if let Some(secret) = scanner.and_then(|s| s.find(&entry.line)) {
                counts.lines_with_secret += 1;
                found(secret);
            }
        }
    }
    Ok(counts)
}

/// Secrets found are kept up to this many (distinct), for the report.
const MAX_FOUND: usize = 20;

#[derive(Debug, Default)]
struct Shared {
    by_tenant: BTreeMap<String, Counts>,
    bad_requests: u64,
    found: Vec<String>,
}

struct AppState {
    shared: Mutex<Shared>,
    scanner: Option<SecretScanner>,
}

/// A running receiver; stops when dropped.
pub struct Receiver {
    addr: SocketAddr,
    state: Arc<AppState>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Receiver({})", self.addr)
    }
}

impl Receiver {
    /// Starts on a free port of 127.0.0.1, looking for `secrets` (none: no scanning).
    pub fn start(secrets: &[String]) -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(AppState {
            shared: Mutex::new(Shared::default()),
            scanner: SecretScanner::new(secrets),
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let app = Router::new()
            .route("/loki/api/v1/push", post(push))
            .layer(DefaultBodyLimit::max(256 << 20))
            .with_state(Arc::clone(&state));
        let thread = std::thread::Builder::new().name("bench-receiver".into()).spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stopped.await;
                    })
                    .await;
            });
        })?;
        Ok(Self { addr, state, stop: Some(stop), thread: Some(thread) })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Counts of one tenant.
    pub fn counts(&self, tenant: &str) -> Counts {
        self.lock().by_tenant.get(tenant).copied().unwrap_or_default()
    }

    /// Counts over all tenants.
    pub fn totals(&self) -> Counts {
        let shared = self.lock();
        let mut total = Counts::default();
        for c in shared.by_tenant.values() {
            total.add(c);
        }
        total
    }

    /// Requests that could not be decoded (answered 400).
    pub fn bad_requests(&self) -> u64 {
        self.lock().bad_requests
    }

    /// Distinct secrets found so far (at most 20).
    pub fn found_secrets(&self) -> Vec<String> {
        self.lock().found.clone()
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.state.shared.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn push(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let tenant = headers.get("x-scope-orgid").and_then(|v| v.to_str().ok()).unwrap_or("fake");
    let mut found = Vec::new();
    let result = count_push(&body, state.scanner.as_ref(), |s| {
        if found.len() < MAX_FOUND {
            found.push(String::from_utf8_lossy(s).into_owned());
        }
    });
    let mut shared = state.shared.lock().unwrap_or_else(|p| p.into_inner());
    match result {
        Ok(counts) => {
            match shared.by_tenant.get_mut(tenant) {
                Some(c) => c.add(&counts),
                None => {
                    shared.by_tenant.insert(tenant.to_string(), counts);
                }
            }
            for s in found {
                if shared.found.len() < MAX_FOUND && !shared.found.contains(&s) {
                    shared.found.push(s);
                }
            }
            StatusCode::NO_CONTENT
        }
        Err(_) => {
            shared.bad_requests += 1;
            StatusCode::BAD_REQUEST
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::{GenConfig, Generator};

    fn known_push() -> (Vec<u8>, sluice::proto::PushRequest) {
        use sluice::proto::{EntryAdapter, LabelPairAdapter, PushRequest, StreamAdapter, Timestamp};
        let entry = |line: &str| EntryAdapter {
            timestamp: Some(Timestamp::from_nanos(1_700_000_000_000_000_000)),
            line: line.into(),
            structured_metadata: vec![LabelPairAdapter { name: "trace_id".into(), value: "abc".into() }],
            parsed: vec![],
        };
        let req = PushRequest {
            streams: vec![
                StreamAdapter {
                    labels: r#"{app="a"}"#.into(),
                    entries: vec![entry("hello"), entry("token AKIAXYZ here")],
                    hash: 0,
                },
                StreamAdapter { labels: r#"{app="b"}"#.into(), entries: vec![entry("wörld")], hash: 0 },
            ],
        };
        let body = snap::raw::Encoder::new().compress_vec(&req.encode_to_vec()).expect("snappy");
        (body, req)
    }

    #[test]
    fn counts_a_known_push() {
        let (body, _) = known_push();
        let scanner = SecretScanner::new(&["AKIAXYZ", "nope"]);
        let mut found = Vec::new();
        let counts = count_push(&body, scanner.as_ref(), |s| found.push(s.to_vec())).expect("counted");
        assert_eq!(
            counts,
            Counts { requests: 1, streams: 2, entries: 3, line_bytes: 5 + 18 + 6, lines_with_secret: 1 }
        );
        assert_eq!(found, vec![b"AKIAXYZ".to_vec()]);
        assert!(count_push(b"not snappy at all", None, |_| {}).is_err());
    }

    #[test]
    fn counts_a_generated_push_exactly() {
        let mut g = Generator::new(5, 1_767_225_600_000_000_000, GenConfig::default());
        let push = g.next_push();
        let body = push.protobuf_snappy(g.workload());
        let secrets: Vec<String> = push.secrets.iter().map(|s| s.value.clone()).collect();
        let scanner = SecretScanner::new(&secrets);
        let counts = count_push(&body, scanner.as_ref(), |_| {}).expect("counted");
        assert_eq!(counts.entries, push.entry_count() as u64);
        assert_eq!(counts.line_bytes, push.line_bytes() as u64);
        assert_eq!(counts.streams, push.streams.len() as u64);
        let with_secret = push.truth.iter().filter(|t| t.secrets != 0).count() as u64;
        assert_eq!(counts.lines_with_secret, with_secret);
    }

    #[test]
    fn serves_and_counts_per_tenant() {
        let receiver = Receiver::start(&[]).expect("start");
        let (body, _) = known_push();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let status = rt.block_on(async {
            let client = reqwest::Client::builder().no_proxy().build().expect("client");
            let url = format!("{}/loki/api/v1/push", receiver.url());
            let ok = client.post(&url).header("X-Scope-OrgID", "t1").body(body).send().await.expect("push");
            let bad = client.post(&url).body("garbage").send().await.expect("push");
            (ok.status().as_u16(), bad.status().as_u16())
        });
        assert_eq!(status, (204, 400));
        assert_eq!(receiver.counts("t1").entries, 3);
        assert_eq!(receiver.counts("other"), Counts::default());
        assert_eq!(receiver.totals().requests, 1);
        assert_eq!(receiver.bad_requests(), 1);
    }
}
