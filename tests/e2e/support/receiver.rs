//! A test Loki: `POST /loki/api/v1/push` answered the way Loki's distributor and ingester answer.
//!
//! Real Loki cannot run here, so this receiver re-implements the part of Loki that sluice talks
//! to, independently of sluice's own decoder (only the protobuf message types are shared):
//!
//! - body: protobuf `PushRequest` compressed with raw-block snappy (Loki's default), or JSON when
//!   `Content-Type: application/json`; `Content-Encoding` may be absent, `snappy`, `gzip` or
//!   `deflate`; anything undecodable is 400;
//! - `X-Scope-OrgID` is required (401 without it), unless started single-tenant (tenant `fake`);
//! - Loki's validation with its default limits (labels, line size, structured metadata, the
//!   accepted timestamp window) and its partial acceptance: valid entries are stored even when
//!   others in the same request are rejected, and the answer is then 400 naming the rejected
//!   streams;
//! - exact duplicates (tenant, stream, timestamp, line) are ignored silently, as the ingester
//!   does, and counted so tests can see re-deliveries;
//! - 204 on success.
//!
//! It runs on its own thread with a single-threaded runtime, so it keeps answering while a test
//! blocks, costs little CPU, and stops when dropped. Tests can program faults: a status for the
//! next N requests, a status for requests containing a line with a substring, or "down" (503).

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use prost::Message;
use sluice::proto::PushRequest;
use tokio::sync::{oneshot, watch};

/// Loki's default validation limits.
pub const MAX_LABEL_NAMES: usize = 15;
pub const MAX_LABEL_NAME_LEN: usize = 1024;
pub const MAX_LABEL_VALUE_LEN: usize = 2048;
pub const MAX_LINE_SIZE: usize = 256_000;
pub const MAX_METADATA_SIZE: usize = 64_000;
pub const MAX_METADATA_PAIRS: usize = 128;
pub const MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
pub const GRACE: Duration = Duration::from_secs(600);
/// Loki's `max_recv_msg_size`.
pub const MAX_RECV: usize = 100 << 20;

/// A stream's labels, sorted by name.
pub type Labels = BTreeMap<String, String>;

/// One stored log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub ts: i64,
    pub line: String,
    pub metadata: Vec<(String, String)>,
}

/// A programmed fault.
#[derive(Debug, Clone)]
struct Fault {
    status: u16,
    retry_after: Option<u64>,
    remaining: usize,
    /// Only requests with a line containing this substring.
    matching: Option<String>,
}

/// One push request as seen by the receiver.
#[derive(Debug, Clone)]
pub struct RequestLog {
    pub tenant: Option<String>,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub authorization: Option<String>,
    pub status: u16,
    /// Entries in the request, whatever happened to them.
    pub entries: usize,
}

#[derive(Default)]
struct StreamData {
    entries: Vec<Stored>,
    seen: HashSet<(i64, String)>,
}

#[derive(Default)]
struct Inner {
    tenants: BTreeMap<String, BTreeMap<Labels, StreamData>>,
    stored: usize,
    duplicates: usize,
    requests: Vec<RequestLog>,
    faults: Vec<Fault>,
    /// (requests left, delay): store, then answer only after the delay (a slow Loki).
    delays: Vec<(usize, Duration)>,
    down: bool,
}

struct Shared {
    inner: Mutex<Inner>,
    /// Bumped on every request, so waiters wake without polling.
    changed: watch::Sender<u64>,
    single_tenant: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How to start a receiver.
#[derive(Debug, Clone, Default)]
pub struct ReceiverOptions {
    /// Accept requests without `X-Scope-OrgID` as tenant `fake` (Loki with `auth_enabled: false`).
    pub single_tenant: bool,
    /// Listen on this address instead of a free port (e.g. one sluice already points at).
    pub addr: Option<SocketAddr>,
}

/// A running test Loki; stops when dropped.
pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Receiver({})", self.addr)
    }
}

impl Receiver {
    /// A multi-tenant receiver (`X-Scope-OrgID` required).
    pub fn start() -> Self {
        Self::start_with(ReceiverOptions::default())
    }

    /// A receiver with options.
    pub fn start_with(options: ReceiverOptions) -> Self {
        let (changed, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner::default()),
            changed,
            single_tenant: options.single_tenant,
        });
        let bind = options.addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let listener = std::net::TcpListener::bind(bind)
            .unwrap_or_else(|e| panic!("bind the test receiver on {bind}: {e}"));
        listener.set_nonblocking(true).expect("nonblocking listener");
        let addr = listener.local_addr().expect("receiver address");
        let (stop, stopped) = oneshot::channel::<()>();
        let state = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("loki-receiver-{}", addr.port()))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("receiver runtime");
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    let app = Router::new()
                        .route("/loki/api/v1/push", post(push))
                        .layer(DefaultBodyLimit::max(MAX_RECV + (1 << 20)))
                        .with_state(state);
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(async move {
                            let _ = stopped.await;
                        })
                        .await;
                });
            })
            .expect("receiver thread");
        Self { addr, shared, stop: Some(stop), thread: Some(thread) }
    }

    /// `http://127.0.0.1:PORT`, Loki's base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The full push URL.
    pub fn push_url(&self) -> String {
        format!("http://{}/loki/api/v1/push", self.addr)
    }

    /// Answer `status` (with `Retry-After: retry_after` seconds if given) to the next `n` requests.
    pub fn fail_next(&self, n: usize, status: u16, retry_after: Option<u64>) {
        self.shared.lock().faults.push(Fault { status, retry_after, remaining: n, matching: None });
    }

    /// Answer `status` to (at most `n`) requests that contain a line with `substring`.
    pub fn fail_matching(&self, substring: &str, status: u16, n: usize) {
        self.shared.lock().faults.push(Fault {
            status,
            retry_after: None,
            remaining: n,
            matching: Some(substring.to_string()),
        });
    }

    /// The next `n` requests are processed (and stored) normally, but answered only after
    /// `delay`: what a client with a shorter timeout sees as a failure and retries.
    pub fn delay_next(&self, n: usize, delay: Duration) {
        self.shared.lock().delays.push((n, delay));
    }

    /// While down, every request gets 503 and nothing is stored.
    pub fn set_down(&self, down: bool) {
        self.shared.lock().down = down;
    }

    /// Entries stored, all tenants.
    pub fn total(&self) -> usize {
        self.shared.lock().stored
    }

    /// Exact duplicates that were ignored.
    pub fn duplicates(&self) -> usize {
        self.shared.lock().duplicates
    }

    /// Every request seen so far.
    pub fn requests(&self) -> Vec<RequestLog> {
        self.shared.lock().requests.clone()
    }

    /// How many requests got `status`.
    pub fn status_count(&self, status: u16) -> usize {
        self.shared.lock().requests.iter().filter(|r| r.status == status).count()
    }

    /// Tenants that have stored entries.
    pub fn tenants(&self) -> Vec<String> {
        self.shared.lock().tenants.keys().cloned().collect()
    }

    /// Every stored entry of `tenant`, with its stream's labels, in arrival order per stream.
    pub fn entries(&self, tenant: &str) -> Vec<(Labels, Stored)> {
        let inner = self.shared.lock();
        let Some(streams) = inner.tenants.get(tenant) else { return Vec::new() };
        streams.iter().flat_map(|(l, s)| s.entries.iter().map(move |e| (l.clone(), e.clone()))).collect()
    }

    /// Entries of `tenant` whose stream has every label in `selector` (equality only).
    pub fn entries_where(&self, tenant: &str, selector: &[(&str, &str)]) -> Vec<(Labels, Stored)> {
        self.entries(tenant)
            .into_iter()
            .filter(|(l, _)| selector.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
            .collect()
    }

    /// The lines of `tenant`, sorted.
    pub fn lines(&self, tenant: &str) -> Vec<String> {
        let mut lines: Vec<String> = self.entries(tenant).into_iter().map(|(_, e)| e.line).collect();
        lines.sort();
        lines
    }

    /// Every stored line of every tenant, sorted.
    pub fn all_lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self.tenants().iter().flat_map(|t| self.lines(t)).collect();
        lines.sort();
        lines
    }

    /// Waits until at least `count` entries are stored (all tenants), without spinning.
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> Result<(), String> {
        let mut rx = self.shared.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let have = self.total();
            if have >= count {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err("receiver stopped".into()),
                Err(_) => {
                    return Err(format!(
                        "timed out after {timeout:?} waiting for {count} entries at {}; have {have}; requests: {:?}",
                        self.url(),
                        self.requests().iter().map(|r| r.status).collect::<Vec<_>>()
                    ));
                }
            }
        }
    }

    /// Waits until at least `n` requests were seen.
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> Result<(), String> {
        let mut rx = self.shared.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let have = self.shared.lock().requests.len();
            if have >= n {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, rx.changed()).await.is_err() {
                return Err(format!("timed out waiting for {n} requests; have {have}"));
            }
        }
    }

    /// Waits until no request has arrived for `quiet` (at most `timeout` in all): the way to
    /// check that nothing more (e.g. a re-delivery) is coming.
    pub async fn settle(&self, quiet: Duration, timeout: Duration) {
        let mut rx = self.shared.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            rx.mark_unchanged();
            let until = (tokio::time::Instant::now() + quiet).min(deadline);
            match tokio::time::timeout_at(until, rx.changed()).await {
                Ok(Ok(())) if tokio::time::Instant::now() < deadline => continue,
                _ => return,
            }
        }
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

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

fn reply(status: u16, retry_after: Option<u64>, body: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = if status == StatusCode::NO_CONTENT {
        status.into_response()
    } else {
        (status, format!("{body}\n")).into_response()
    };
    if let Some(secs) = retry_after
        && let Ok(v) = HeaderValue::from_str(&secs.to_string())
    {
        response.headers_mut().insert("retry-after", v);
    }
    response
}

async fn push(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let (status, retry_after, message) = handle(&shared, &headers, &body);
    shared.changed.send_modify(|n| *n += 1);
    let delay = {
        let mut inner = shared.lock();
        inner.delays.iter_mut().find(|(n, _)| *n > 0).map(|(n, d)| {
            *n -= 1;
            *d
        })
    };
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    reply(status, retry_after, message)
}

/// A decoded entry before validation.
struct Incoming {
    ts: Result<i64, String>,
    line: String,
    metadata: Vec<(String, String)>,
}

struct IncomingStream {
    labels: String,
    entries: Vec<Incoming>,
}

fn handle(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> (u16, Option<u64>, String) {
    let tenant = header(headers, "x-scope-orgid");
    let mut log = RequestLog {
        tenant: tenant.clone(),
        content_type: header(headers, "content-type"),
        content_encoding: header(headers, "content-encoding"),
        authorization: header(headers, "authorization"),
        status: 0,
        entries: 0,
    };
    let result = process(shared, headers, body, tenant, &mut log);
    log.status = result.0;
    shared.lock().requests.push(log);
    result
}

fn process(
    shared: &Shared,
    headers: &HeaderMap,
    body: &[u8],
    tenant: Option<String>,
    log: &mut RequestLog,
) -> (u16, Option<u64>, String) {
    if shared.lock().down {
        return (503, None, "receiver is down".into());
    }
    let tenant = match tenant {
        Some(t) if !t.is_empty() => t,
        _ if shared.single_tenant => "fake".to_string(),
        _ => return (401, None, "no org id".into()),
    };
    if let Err(e) = validate_tenant(&tenant) {
        return (400, None, e);
    }
    let streams = match decode(headers, body) {
        Ok(s) => s,
        Err(e) => return (400, None, e),
    };
    log.entries = streams.iter().map(|s| s.entries.len()).sum();

    // Programmed faults reject the whole request before anything is stored.
    {
        let mut inner = shared.lock();
        let hit = inner.faults.iter_mut().find(|f| {
            f.remaining > 0
                && match &f.matching {
                    None => true,
                    Some(m) => streams.iter().any(|s| s.entries.iter().any(|e| e.line.contains(m.as_str()))),
                }
        });
        if let Some(f) = hit {
            f.remaining -= 1;
            return (f.status, f.retry_after, format!("programmed failure {}", f.status));
        }
    }

    let now = now_ns();
    let mut errors = Vec::new();
    let mut accepted: Vec<(Labels, Stored)> = Vec::new();
    for stream in streams {
        let labels = match parse_labels(&stream.labels).and_then(|l| validate_labels(&stream.labels, l)) {
            Ok(l) => l,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        for entry in stream.entries {
            match validate_entry(&stream.labels, &entry, now) {
                Ok(ts) => {
                    accepted.push((labels.clone(), Stored { ts, line: entry.line, metadata: entry.metadata }))
                }
                Err(e) => errors.push(e),
            }
        }
    }
    {
        let mut inner = shared.lock();
        let inner = &mut *inner;
        let streams = inner.tenants.entry(tenant).or_default();
        for (labels, entry) in accepted {
            let data = streams.entry(labels).or_default();
            if data.seen.insert((entry.ts, entry.line.clone())) {
                data.entries.push(entry);
                inner.stored += 1;
            } else {
                inner.duplicates += 1;
            }
        }
    }
    if errors.is_empty() { (204, None, String::new()) } else { (400, None, errors.join("\n")) }
}

fn validate_tenant(t: &str) -> Result<(), String> {
    // Loki's tenant ID rules: at most 150 bytes of a restricted character set.
    let ok = t.len() <= 150
        && t != "."
        && t != ".."
        && t.bytes().all(|b| b.is_ascii_alphanumeric() || b"!-_.*'()".contains(&b));
    if ok { Ok(()) } else { Err(format!("tenant ID '{t}' contains unsupported characters")) }
}

pub fn now_ns() -> i64 {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

fn inflate(encoding: &str, body: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let limit = MAX_RECV as u64 + 1;
    let res = match encoding {
        "gzip" => flate2::read::GzDecoder::new(body).take(limit).read_to_end(&mut out),
        "deflate" => flate2::read::ZlibDecoder::new(body).take(limit).read_to_end(&mut out),
        other => return Err(format!("Content-Encoding \"{other}\" not supported")),
    };
    res.map_err(|e| format!("cannot decompress {encoding} body: {e}"))?;
    if out.len() > MAX_RECV {
        return Err("message larger than max".into());
    }
    Ok(out)
}

fn decode(headers: &HeaderMap, body: &[u8]) -> Result<Vec<IncomingStream>, String> {
    let encoding = header(headers, "content-encoding").unwrap_or_default().to_ascii_lowercase();
    let body: Vec<u8> = match encoding.as_str() {
        "" | "snappy" => body.to_vec(),
        enc => inflate(enc, body)?,
    };
    let content_type = header(headers, "content-type").unwrap_or_default();
    let media = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if media == "application/json" {
        return decode_json(&body);
    }
    // Anything else is protobuf with raw-block snappy, as in Loki.
    let len = snap::raw::decompress_len(&body).map_err(|e| format!("snappy: {e}"))?;
    if len > MAX_RECV {
        return Err(format!("received message larger than max ({len} vs {MAX_RECV})"));
    }
    let raw = snap::raw::Decoder::new().decompress_vec(&body).map_err(|e| format!("snappy: {e}"))?;
    let req = PushRequest::decode(raw.as_slice()).map_err(|e| format!("protobuf: {e}"))?;
    Ok(req
        .streams
        .into_iter()
        .map(|s| IncomingStream {
            labels: s.labels,
            entries: s
                .entries
                .into_iter()
                .map(|e| Incoming {
                    ts: e
                        .timestamp
                        .ok_or_else(|| "entry without timestamp".to_string())
                        .and_then(|t| t.to_nanos().ok_or_else(|| "timestamp out of range".to_string())),
                    line: e.line,
                    metadata: e.structured_metadata.into_iter().map(|p| (p.name, p.value)).collect(),
                })
                .collect(),
        })
        .collect())
}

fn decode_json(body: &[u8]) -> Result<Vec<IncomingStream>, String> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| format!("JSON: {e}"))?;
    let streams = v.get("streams").and_then(|s| s.as_array()).ok_or("JSON: no `streams` array")?;
    let mut out = Vec::new();
    for s in streams {
        let labels_obj =
            s.get("stream").and_then(|l| l.as_object()).ok_or("JSON: stream without `stream` object")?;
        let mut labels = String::from("{");
        for (i, (k, v)) in labels_obj.iter().enumerate() {
            let v = v.as_str().ok_or("JSON: label values must be strings")?;
            if i > 0 {
                labels.push_str(", ");
            }
            labels.push_str(&format!("{k}={}", quote(v)));
        }
        labels.push('}');
        let mut entries = Vec::new();
        for value in s.get("values").and_then(|v| v.as_array()).ok_or("JSON: stream without `values`")? {
            let arr = value.as_array().ok_or("JSON: a value must be an array")?;
            let ts = arr.first().and_then(|t| t.as_str()).ok_or("JSON: timestamps must be strings")?;
            let ts = ts.parse::<i64>().map_err(|e| format!("JSON: timestamp `{ts}`: {e}"))?;
            let line = arr.get(1).and_then(|l| l.as_str()).ok_or("JSON: the line must be a string")?;
            let mut metadata = Vec::new();
            if let Some(md) = arr.get(2) {
                for (k, v) in md.as_object().ok_or("JSON: structured metadata must be an object")? {
                    metadata.push((
                        k.clone(),
                        v.as_str().ok_or("JSON: metadata values must be strings")?.to_string(),
                    ));
                }
            }
            entries.push(Incoming { ts: Ok(ts), line: line.to_string(), metadata });
        }
        out.push(IncomingStream { labels, entries });
    }
    Ok(out)
}

/// A Go-style double-quoted string, as Loki prints label values.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Parses a push stream's label string, `{name="value", …}`, as Loki's LogQL parser does for
/// pushes: only `=` matchers, values in double quotes (Go escapes) or backticks.
pub fn parse_labels(s: &str) -> Result<Vec<(String, String)>, String> {
    let fail = |why: &str| Err(format!("error parsing labels '{s}' with error: {why}"));
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < chars.len() && chars[*i].is_whitespace() {
            *i += 1;
        }
    };
    skip_ws(&mut i);
    if chars.get(i) != Some(&'{') {
        return fail("expected `{`");
    }
    i += 1;
    let mut pairs = Vec::new();
    loop {
        skip_ws(&mut i);
        match chars.get(i) {
            Some('}') if pairs.is_empty() => {
                i += 1;
                break;
            }
            None => return fail("unexpected end of input"),
            _ => {}
        }
        let start = i;
        while i < chars.len()
            && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == ':' || chars[i] == '.')
        {
            i += 1;
        }
        if i == start {
            return fail(&format!("expected a label name at position {start}"));
        }
        let name: String = chars[start..i].iter().collect();
        skip_ws(&mut i);
        if chars.get(i) != Some(&'=') || chars.get(i + 1) == Some(&'~') {
            return fail(&format!("expected `=` after label name `{name}`"));
        }
        i += 1;
        skip_ws(&mut i);
        let value = match chars.get(i) {
            Some('"') => {
                i += 1;
                let mut v = String::new();
                loop {
                    match chars.get(i) {
                        None | Some('\n') => return fail("unterminated string"),
                        Some('"') => {
                            i += 1;
                            break;
                        }
                        Some('\\') => {
                            i += 1;
                            let Some(&c) = chars.get(i) else { return fail("unterminated escape") };
                            i += 1;
                            match c {
                                'n' => v.push('\n'),
                                't' => v.push('\t'),
                                'r' => v.push('\r'),
                                'a' => v.push('\u{7}'),
                                'b' => v.push('\u{8}'),
                                'f' => v.push('\u{c}'),
                                'v' => v.push('\u{b}'),
                                '\\' => v.push('\\'),
                                '"' => v.push('"'),
                                '\'' => v.push('\''),
                                'x' | 'u' | 'U' => {
                                    let n = match c {
                                        'x' => 2,
                                        'u' => 4,
                                        _ => 8,
                                    };
                                    let hex: String = chars.get(i..i + n).unwrap_or(&[]).iter().collect();
                                    let code = u32::from_str_radix(&hex, 16).ok().filter(|_| hex.len() == n);
                                    let Some(ch) = code.and_then(char::from_u32) else {
                                        return fail("invalid escape");
                                    };
                                    i += n;
                                    v.push(ch);
                                }
                                _ => return fail(&format!("unknown escape `\\{c}`")),
                            }
                        }
                        Some(c) => {
                            v.push(*c);
                            i += 1;
                        }
                    }
                }
                v
            }
            Some('`') => {
                i += 1;
                let start = i;
                while i < chars.len() && chars[i] != '`' {
                    i += 1;
                }
                if i >= chars.len() {
                    return fail("unterminated raw string");
                }
                let v: String = chars[start..i].iter().collect();
                i += 1;
                v
            }
            _ => return fail(&format!("expected a quoted value for label `{name}`")),
        };
        pairs.push((name, value));
        skip_ws(&mut i);
        match chars.get(i) {
            Some(',') => i += 1,
            Some('}') => {
                i += 1;
                break;
            }
            _ => return fail("expected `,` or `}`"),
        }
    }
    skip_ws(&mut i);
    if i != chars.len() {
        return fail("trailing characters after `}`");
    }
    Ok(pairs)
}

fn valid_label_name(n: &str) -> bool {
    let mut bytes = n.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn validate_labels(raw: &str, pairs: Vec<(String, String)>) -> Result<Labels, String> {
    if pairs.is_empty() {
        return Err(format!("error at least one label pair is required per stream: '{raw}'"));
    }
    if pairs.len() > MAX_LABEL_NAMES {
        return Err(format!(
            "entry for stream '{raw}' has {} label names; limit {MAX_LABEL_NAMES}",
            pairs.len()
        ));
    }
    let mut labels = Labels::new();
    for (name, value) in pairs {
        if !valid_label_name(&name) {
            return Err(format!("invalid label name '{name}' in stream '{raw}'"));
        }
        if name.len() > MAX_LABEL_NAME_LEN {
            return Err(format!("label name too long: '{name}' in stream '{raw}'"));
        }
        if value.len() > MAX_LABEL_VALUE_LEN {
            return Err(format!("label value too long for label '{name}' in stream '{raw}'"));
        }
        if value.is_empty() {
            // Loki (like Prometheus) drops empty-valued labels.
            continue;
        }
        if labels.insert(name.clone(), value).is_some() {
            return Err(format!("duplicate label name '{name}' in stream '{raw}'"));
        }
    }
    if labels.is_empty() {
        return Err(format!("error at least one label pair is required per stream: '{raw}'"));
    }
    Ok(labels)
}

fn validate_entry(stream: &str, e: &Incoming, now: i64) -> Result<i64, String> {
    let ts = e.ts.clone().map_err(|why| format!("entry for stream '{stream}': {why}"))?;
    let oldest = now - MAX_AGE.as_nanos() as i64;
    if ts < oldest {
        return Err(format!(
            "entry for stream '{stream}' has timestamp too old: {ts}, oldest acceptable timestamp is: {oldest}"
        ));
    }
    if ts > now + GRACE.as_nanos() as i64 {
        return Err(format!("entry for stream '{stream}' has timestamp too new: {ts}"));
    }
    if e.line.len() > MAX_LINE_SIZE {
        return Err(format!(
            "Max entry size '{MAX_LINE_SIZE}' bytes exceeded for stream '{stream}' while adding an entry with length '{}' bytes",
            e.line.len()
        ));
    }
    let md_size: usize = e.metadata.iter().map(|(k, v)| k.len() + v.len()).sum();
    if md_size > MAX_METADATA_SIZE {
        return Err(format!(
            "stream '{stream}' has structured metadata too large: '{md_size}' bytes, limit: '{MAX_METADATA_SIZE}' bytes"
        ));
    }
    if e.metadata.len() > MAX_METADATA_PAIRS {
        return Err(format!(
            "stream '{stream}' has too many structured metadata labels: '{}', limit: '{MAX_METADATA_PAIRS}'",
            e.metadata.len()
        ));
    }
    Ok(ts)
}

#[cfg(test)]
mod tests {
    //! The receiver must reject what Loki rejects, or the end-to-end tests prove nothing.

    use super::*;
    use crate::support::push::{self, entry, entry_md, stream};
    use sluice::proto::PushRequest;

    const T: Duration = Duration::from_secs(5);

    async fn send(r: &Receiver, tenant: Option<&str>, req: &PushRequest) -> (u16, String) {
        let resp = push::proto(&reqwest::Client::new(), &r.push_url(), tenant, req, false).await;
        (resp.status, resp.body)
    }

    #[tokio::test]
    async fn receiver_stores_a_valid_push_and_answers_204() {
        let r = Receiver::start();
        let now = now_ns();
        let req = PushRequest {
            streams: vec![
                stream(
                    r#"{app="a", env="prod"}"#,
                    vec![entry(now, "one"), entry_md(now + 1, "two", &[("trace_id", "x")])],
                ),
                stream(r#"{env="prod",app="a"}"#, vec![entry(now + 2, "three")]),
            ],
        };
        assert_eq!(send(&r, Some("t1"), &req).await, (204, String::new()));
        r.wait_for(3, T).await.expect("stored");
        let got = r.entries_where("t1", &[("app", "a")]);
        assert_eq!(got.len(), 3, "same labels in another order are one stream: {got:?}");
        assert_eq!(got[1].1.metadata, vec![("trace_id".to_string(), "x".to_string())]);
        // JSON too, gzip-compressed.
        let json = format!(
            r#"{{"streams":[{{"stream":{{"app":"j"}},"values":[["{now}","json line",{{"k":"v"}}]]}}]}}"#
        );
        let resp = push::json(&reqwest::Client::new(), &r.push_url(), Some("t1"), &json, Some("gzip")).await;
        assert_eq!(resp.status, 204, "{}", resp.body);
        assert_eq!(r.lines("t1"), vec!["json line", "one", "three", "two"]);
    }

    #[tokio::test]
    async fn receiver_rejects_what_loki_rejects() {
        let r = Receiver::start();
        let now = now_ns();
        let day = 86_400 * 1_000_000_000i64;
        let many: String = (0..16).map(|i| format!("l{i}=\"v\"")).collect::<Vec<_>>().join(",");
        let big_md: Vec<(String, String)> = vec![("k".into(), "v".repeat(MAX_METADATA_SIZE))];
        let many_md: Vec<(String, String)> =
            (0..=MAX_METADATA_PAIRS).map(|i| (format!("k{i}"), "v".into())).collect();
        let cases: Vec<(&str, StreamCase)> = vec![
            ("unclosed labels", StreamCase::labels(r#"{app="a""#)),
            ("bad label name", StreamCase::labels(r#"{1app="a"}"#)),
            ("dash in name", StreamCase::labels(r#"{my-app="a"}"#)),
            ("no labels", StreamCase::labels("{}")),
            ("regex matcher", StreamCase::labels(r#"{app=~"a"}"#)),
            ("duplicate name", StreamCase::labels(r#"{app="a", app="b"}"#)),
            ("16 labels", StreamCase::labels(&format!("{{{many}}}"))),
            (
                "long value",
                StreamCase::labels(&format!("{{app=\"{}\"}}", "v".repeat(MAX_LABEL_VALUE_LEN + 1))),
            ),
            ("too old", StreamCase::entry(now - 8 * day, "x".into(), vec![])),
            ("too new", StreamCase::entry(now + 3_600_000_000_000, "x".into(), vec![])),
            ("long line", StreamCase::entry(now, "x".repeat(MAX_LINE_SIZE + 1), vec![])),
            ("big metadata", StreamCase::entry(now, "x".into(), big_md)),
            ("many metadata", StreamCase::entry(now, "x".into(), many_md)),
        ];
        let client = reqwest::Client::new();
        for (name, case) in cases {
            let entry = sluice::proto::EntryAdapter {
                timestamp: Some(sluice::proto::Timestamp::from_nanos(case.ts)),
                line: case.line,
                structured_metadata: case
                    .metadata
                    .into_iter()
                    .map(|(name, value)| sluice::proto::LabelPairAdapter { name, value })
                    .collect(),
                parsed: vec![],
            };
            let req = PushRequest { streams: vec![stream(&case.labels, vec![entry])] };
            let resp = push::proto(&client, &r.push_url(), Some("t"), &req, false).await;
            assert_eq!(resp.status, 400, "{name}: {}", resp.body);
            let why = match name {
                "unclosed labels" | "dash in name" | "regex matcher" => "error parsing labels",
                "bad label name" => "invalid label name",
                "no labels" => "at least one label pair",
                "duplicate name" => "duplicate label name",
                "16 labels" => "has 16 label names; limit 15",
                "long value" => "label value too long",
                "too old" => "timestamp too old",
                "too new" => "timestamp too new",
                "long line" => "Max entry size '256000' bytes exceeded",
                "big metadata" => "structured metadata too large",
                _ => "too many structured metadata labels",
            };
            assert!(resp.body.contains(why), "{name}: rejected for another reason: {}", resp.body);
        }
        assert_eq!(r.total(), 0);
        // Edge values that Loki accepts.
        let ok = PushRequest {
            streams: vec![stream(
                &format!("{{{}}}", (0..15).map(|i| format!("l{i}=\"v\"")).collect::<Vec<_>>().join(",")),
                vec![entry(now - 6 * day, &"x".repeat(MAX_LINE_SIZE)), entry(now + 60_000_000_000, "soon")],
            )],
        };
        assert_eq!(send(&r, Some("t"), &ok).await.0, 204);
        // No tenant → 401; garbage → 400.
        assert_eq!(send(&r, None, &ok).await.0, 401);
        let garbage = client.post(r.push_url()).header("X-Scope-OrgID", "t").body("not snappy").send().await;
        assert_eq!(garbage.expect("sent").status().as_u16(), 400);
        let json = push::json(
            &client,
            &r.push_url(),
            Some("t"),
            r#"{"streams":[{"stream":{"a":"b"},"values":[[1,"x"]]}]}"#,
            None,
        )
        .await;
        assert_eq!(json.status, 400, "numeric JSON timestamp");
        assert_eq!(r.total(), 2);
    }

    struct StreamCase {
        labels: String,
        ts: i64,
        line: String,
        metadata: Vec<(String, String)>,
    }

    impl StreamCase {
        fn labels(l: &str) -> Self {
            Self { labels: l.into(), ts: now_ns(), line: "x".into(), metadata: vec![] }
        }
        fn entry(ts: i64, line: String, metadata: Vec<(String, String)>) -> Self {
            Self { labels: r#"{app="a"}"#.into(), ts, line, metadata }
        }
    }

    #[tokio::test]
    async fn receiver_partially_accepts_and_ignores_duplicates() {
        let r = Receiver::start();
        let now = now_ns();
        let req = PushRequest {
            streams: vec![
                stream(
                    r#"{app="good"}"#,
                    vec![entry(now, "kept"), entry(now - 9 * 86_400_000_000_000, "old")],
                ),
                stream(r#"{bad-name="x"}"#, vec![entry(now, "lost")]),
                stream(r#"{app="good2"}"#, vec![entry(now, "kept2")]),
            ],
        };
        let (status, body) = send(&r, Some("t"), &req).await;
        assert_eq!(status, 400);
        assert!(body.contains("bad-name") && body.contains("too old"), "{body}");
        assert_eq!(r.lines("t"), vec!["kept", "kept2"]);
        // The same push again: the good entries are duplicates now.
        send(&r, Some("t"), &req).await;
        assert_eq!(r.total(), 2);
        assert_eq!(r.duplicates(), 2);
        // Same line, other timestamp: a new entry.
        send(
            &r,
            Some("t"),
            &PushRequest { streams: vec![stream(r#"{app="good"}"#, vec![entry(now + 1, "kept")])] },
        )
        .await;
        assert_eq!(r.total(), 3);
    }

    #[tokio::test]
    async fn receiver_can_be_programmed_to_fail() {
        let r = Receiver::start();
        let client = reqwest::Client::new();
        let req =
            |line: &str| PushRequest { streams: vec![stream(r#"{app="a"}"#, vec![entry(now_ns(), line)])] };
        r.fail_next(1, 429, Some(2));
        r.fail_next(1, 500, None);
        let first = push::proto(&client, &r.push_url(), Some("t"), &req("a"), false).await;
        assert_eq!((first.status, first.retry_after.as_deref()), (429, Some("2")));
        assert_eq!(send(&r, Some("t"), &req("b")).await.0, 500);
        assert_eq!(send(&r, Some("t"), &req("c")).await.0, 204);
        r.fail_matching("poison", 400, usize::MAX);
        assert_eq!(send(&r, Some("t"), &req("some poison here")).await.0, 400);
        assert_eq!(send(&r, Some("t"), &req("d")).await.0, 204);
        r.set_down(true);
        assert_eq!(send(&r, Some("t"), &req("e")).await.0, 503);
        r.set_down(false);
        assert_eq!(r.lines("t"), vec!["c", "d"]);
        assert_eq!(r.status_count(204), 2);
        // wait_for times out (quickly) when the count is not reached.
        assert!(r.wait_for(3, Duration::from_millis(100)).await.is_err());
    }

    #[test]
    fn label_parser_handles_escapes_and_raw_strings() {
        let got = parse_labels(r#" { a = "x\"y\\z\n" , b=`raw\n` } "#).expect("parses");
        assert_eq!(got, vec![("a".into(), "x\"y\\z\n".into()), ("b".into(), "raw\\n".into())]);
        assert!(parse_labels(r#"{a="x"} extra"#).is_err());
        assert!(parse_labels(r#"{a="x",}"#).is_err());
        assert_eq!(quote("a\"b\\c\n"), r#""a\"b\\c\n""#);
    }
}
