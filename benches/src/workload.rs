//! The reference workload of `shared/BENCHMARK.md`, seeded: the same seed and start time give the
//! same pushes, byte for byte.
//!
//! - 200 streams with the labels Alloy's `podLogs` attaches (`namespace`, `app`, `pod`,
//!   `container`, `job`, `service_name`); streams differ in volume (a mild Zipf skew), as real
//!   pods do.
//! - Lines of an inference/ML platform: 75% JSON, 20% logfmt, 5% plain text (WARN and ERROR plain
//!   lines are multi-line stack traces); levels INFO 70%, DEBUG 15%, WARN 10%, ERROR 5%; 3% carry
//!   a secret (bearer JWT, AWS key id + secret, password in a URL, card number); median line
//!   about 250 bytes, 1% of lines 4–16 KiB.
//! - Time runs at [`GenConfig::lines_per_second`] across the cluster from the caller's start
//!   time; per stream timestamps increase, except 1% of entries that are up to 30 s older than
//!   their stream's latest.
//! - Pushes of [`GenConfig::entries_per_push`] entries, grouped by stream as shippers batch them.
//!
//! Every push carries its ground truth ([`EntryTruth`] per entry, in encoding order, and the
//! exact secret strings), so a correctness check can tell what a chain should keep and that no
//! secret got through. Spelling varies as in real fleets: JSON writes `"level":"INFO"`, logfmt
//! writes `level=info`; plain lines have no `trace_id`.

use std::fmt::Write as _;
use std::io::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use prost::Message as _;
use sluice::proto;

/// Number of streams.
pub const STREAMS: usize = 200;
/// `namespace` values.
pub const NAMESPACES: [&str; 5] = ["inference", "training", "gateway", "feature-store", "ml-platform"];
/// `app` values; app `i` lives in namespace `i % 5`.
pub const APPS: [&str; 20] = [
    "vllm-server",
    "trainer",
    "api-gateway",
    "feast-online",
    "model-registry",
    "tgi-server",
    "data-loader",
    "rate-limiter",
    "feast-materialize",
    "mlflow",
    "triton",
    "checkpointer",
    "auth-proxy",
    "embedding-cache",
    "kubeflow-ui",
    "router",
    "eval-runner",
    "billing",
    "vector-index",
    "scheduler",
];
/// `container` values.
pub const CONTAINERS: [&str; 3] = ["main", "sidecar", "istio-proxy"];

/// A line's level (the ground truth, whatever the spelling in the line).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[repr(u8)]
pub enum Level {
    Debug = 0,
    Info = 1,
    Warn = 2,
    Error = 3,
}

impl Level {
    /// All levels, in index order.
    pub const ALL: [Level; 4] = [Level::Debug, Level::Info, Level::Warn, Level::Error];

    fn upper(self) -> &'static str {
        ["DEBUG", "INFO", "WARN", "ERROR"][self as usize]
    }

    fn lower(self) -> &'static str {
        ["debug", "info", "warn", "error"][self as usize]
    }
}

/// A line's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[repr(u8)]
pub enum Format {
    Json = 0,
    Logfmt = 1,
    Plain = 2,
}

/// The kinds of secret a line may carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[repr(u8)]
pub enum SecretKind {
    /// `Bearer <JWT>`; the secret is the token.
    Jwt = 0,
    /// An AWS access key id and secret access key; two secrets.
    AwsKey = 1,
    /// `postgres://user:pass@host`; the secret is the password.
    UrlPassword = 2,
    /// A credit-card number, as written in the line.
    CreditCard = 3,
}

impl SecretKind {
    /// All kinds, in index order.
    pub const ALL: [SecretKind; 4] =
        [SecretKind::Jwt, SecretKind::AwsKey, SecretKind::UrlPassword, SecretKind::CreditCard];
}

/// What a correctness check needs to know about one generated entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryTruth {
    /// 128-bit trace id (the 32 hex digits in the line); 0 for plain lines, which have none.
    pub trace_id: u128,
    /// Index of the stream in [`Workload::streams`].
    pub stream: u16,
    pub level: Level,
    pub format: Format,
    /// Bit `k` set: the line carries a secret of kind `SecretKind::ALL[k]`.
    pub secrets: u8,
    /// One of the 1% of lines of 4–16 KiB.
    pub large: bool,
    /// Older than an earlier entry of its stream.
    pub out_of_order: bool,
}

/// One exact secret string and the entry (index into [`Push::truth`]) that carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretTruth {
    pub entry: usize,
    pub kind: SecretKind,
    pub value: String,
}

/// One stream's labels.
#[derive(Clone, Debug)]
pub struct StreamDef {
    /// Sorted by name.
    pub labels: Vec<(&'static str, String)>,
    /// As a Loki selector, `{app="…", …}`, the form the protobuf push carries.
    pub selector: String,
}

/// The 200 streams of a seed and their relative volumes.
#[derive(Clone, Debug)]
pub struct Workload {
    pub streams: Vec<StreamDef>,
    /// Cumulative weights, for picking the stream of each entry.
    cumulative: Vec<f64>,
}

impl Workload {
    /// The streams for `seed`.
    pub fn new(seed: u64) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed ^ 0x5eed_0f57_4ea5);
        let streams: Vec<StreamDef> = (0..STREAMS)
            .map(|s| {
                let app = APPS[s % APPS.len()];
                let namespace = NAMESPACES[s % APPS.len() % NAMESPACES.len()];
                let replicaset: String = (0..10).map(|_| lower_alnum(&mut rng)).collect();
                let suffix: String = (0..5).map(|_| lower_alnum(&mut rng)).collect();
                let labels = vec![
                    ("app", app.to_string()),
                    ("container", CONTAINERS[s / APPS.len() % CONTAINERS.len()].to_string()),
                    ("job", format!("{namespace}/{app}")),
                    ("namespace", namespace.to_string()),
                    ("pod", format!("{app}-{replicaset}-{suffix}")),
                    ("service_name", app.to_string()),
                ];
                let selector = format!(
                    "{{{}}}",
                    labels.iter().map(|(n, v)| format!("{n}=\"{v}\"")).collect::<Vec<_>>().join(", ")
                );
                StreamDef { labels, selector }
            })
            .collect();
        // Zipf with exponent 0.6 over a shuffled order: the busiest pod logs ~25x the quietest.
        let mut order: Vec<usize> = (0..STREAMS).collect();
        rng.shuffle(&mut order);
        let mut weights = vec![0.0; STREAMS];
        for (rank, &s) in order.iter().enumerate() {
            weights[s] = 1.0 / ((rank + 1) as f64).powf(0.6);
        }
        let mut total = 0.0;
        let cumulative = weights
            .iter()
            .map(|w| {
                total += w;
                total
            })
            .collect();
        Self { streams, cumulative }
    }

    fn pick_stream(&self, rng: &mut fastrand::Rng) -> usize {
        let total = self.cumulative[STREAMS - 1];
        let x = rng.f64() * total;
        self.cumulative.partition_point(|&c| c <= x).min(STREAMS - 1)
    }
}

/// Knobs of the generator; the defaults are the reference workload.
#[derive(Clone, Debug)]
pub struct GenConfig {
    /// Entries per push (Promtail's and Alloy's batches of 1 MiB / 1 s hold about 1,000).
    pub entries_per_push: usize,
    /// Simulated log rate of the whole cluster, which spaces the timestamps.
    pub lines_per_second: u64,
}

impl Default for GenConfig {
    fn default() -> Self {
        Self { entries_per_push: 1000, lines_per_second: 5000 }
    }
}

/// One generated entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenEntry {
    pub ts_ns: i64,
    pub line: String,
}

/// One stream's part of a push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushStream {
    /// Index into [`Workload::streams`].
    pub stream: usize,
    pub entries: Vec<GenEntry>,
}

/// One push request of the workload with its ground truth.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Push {
    /// By stream index.
    pub streams: Vec<PushStream>,
    /// One per entry, in encoding order (stream by stream).
    pub truth: Vec<EntryTruth>,
    /// Every secret string in the push.
    pub secrets: Vec<SecretTruth>,
}

impl Push {
    /// Number of entries.
    pub fn entry_count(&self) -> usize {
        self.truth.len()
    }

    /// Bytes of lines (the benchmark's "input bytes").
    pub fn line_bytes(&self) -> usize {
        self.streams.iter().flat_map(|s| &s.entries).map(|e| e.line.len()).sum()
    }

    /// As Loki's protobuf message.
    pub fn to_proto(&self, workload: &Workload) -> proto::PushRequest {
        proto::PushRequest {
            streams: self
                .streams
                .iter()
                .map(|s| proto::StreamAdapter {
                    labels: workload.streams[s.stream].selector.clone(),
                    entries: s
                        .entries
                        .iter()
                        .map(|e| proto::EntryAdapter {
                            timestamp: Some(proto::Timestamp::from_nanos(e.ts_ns)),
                            line: e.line.clone(),
                            structured_metadata: vec![],
                            parsed: vec![],
                        })
                        .collect(),
                    hash: 0,
                })
                .collect(),
        }
    }

    /// The body Promtail and Alloy send: protobuf compressed with raw snappy
    /// (`Content-Type: application/x-protobuf`).
    pub fn protobuf_snappy(&self, workload: &Workload) -> Vec<u8> {
        let raw = self.to_proto(workload).encode_to_vec();
        snap::raw::Encoder::new().compress_vec(&raw).unwrap_or_default()
    }

    /// Loki's JSON push body, uncompressed.
    pub fn json(&self, workload: &Workload) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.line_bytes() + self.entry_count() * 40 + 64 * STREAMS);
        out.extend_from_slice(b"{\"streams\":[");
        for (i, s) in self.streams.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"stream\":");
            labels_json(&mut out, &workload.streams[s.stream]);
            out.extend_from_slice(b",\"values\":[");
            for (j, e) in s.entries.iter().enumerate() {
                if j > 0 {
                    out.push(b',');
                }
                let _ = write!(out, "[\"{}\",", e.ts_ns);
                json_string(&mut out, &e.line);
                out.push(b']');
            }
            out.extend_from_slice(b"]}");
        }
        out.extend_from_slice(b"]}");
        out
    }

    /// Loki's JSON push body compressed with gzip (`Content-Type: application/json`,
    /// `Content-Encoding: gzip`).
    pub fn json_gzip(&self, workload: &Workload) -> Vec<u8> {
        let json = self.json(workload);
        let mut gz =
            flate2::write::GzEncoder::new(Vec::with_capacity(json.len() / 4), flate2::Compression::default());
        // Writing into a Vec cannot fail.
        let _ = gz.write_all(&json);
        gz.finish().unwrap_or_default()
    }

    /// One JSON object per entry and line, the fields of an archive record that the workload
    /// has (`sluice::archive::record` writes the full record):
    /// `{"ts":"…","labels":{…},"line":"…"}`. Kept separate so the seeded bytes never change.
    pub fn ndjson(&self, workload: &Workload, out: &mut Vec<u8>) {
        for s in &self.streams {
            for e in &s.entries {
                let _ = write!(out, "{{\"ts\":\"{}\",\"labels\":", e.ts_ns);
                labels_json(out, &workload.streams[s.stream]);
                out.extend_from_slice(b",\"line\":");
                json_string(out, &e.line);
                out.extend_from_slice(b"}\n");
            }
        }
    }
}

fn labels_json(out: &mut Vec<u8>, stream: &StreamDef) {
    out.push(b'{');
    for (i, (n, v)) in stream.labels.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json_string(out, n);
        out.push(b':');
        json_string(out, v);
    }
    out.push(b'}');
}

/// Appends `s` as a JSON string literal.
fn json_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape: Option<&[u8]> = match b {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\t' => Some(b"\\t"),
            b'\r' => Some(b"\\r"),
            0..0x20 => None,
            _ => continue,
        };
        out.extend_from_slice(&s.as_bytes()[start..i]);
        match escape {
            Some(e) => out.extend_from_slice(e),
            None => {
                let _ = write!(out, "\\u{b:04x}");
            }
        }
        start = i + 1;
    }
    out.extend_from_slice(&s.as_bytes()[start..]);
    out.push(b'"');
}

/// An entry with its truth and its secrets, before it is placed in a push.
type Generated = (GenEntry, EntryTruth, Vec<(SecretKind, String)>);

/// Per-stream state: its clock and the trace it is in.
#[derive(Clone, Debug, Default)]
struct StreamState {
    last_ts: i64,
    trace_id: u128,
    trace_left: u32,
}

/// Generates the pushes of one seed, one after the other.
#[derive(Debug)]
pub struct Generator {
    workload: Workload,
    config: GenConfig,
    rng: fastrand::Rng,
    clock_ns: i64,
    streams: Vec<StreamState>,
}

impl Generator {
    /// A generator whose first entry is at `start_ns` (nanoseconds since the epoch). Callers
    /// pass a recent time (e.g. now minus an hour) so entries pass Loki's age and future rules.
    pub fn new(seed: u64, start_ns: i64, config: GenConfig) -> Self {
        Self {
            workload: Workload::new(seed),
            config,
            rng: fastrand::Rng::with_seed(seed),
            clock_ns: start_ns,
            streams: vec![StreamState { last_ts: start_ns, ..Default::default() }; STREAMS],
        }
    }

    /// The streams.
    pub fn workload(&self) -> &Workload {
        &self.workload
    }

    /// The next push.
    pub fn next_push(&mut self) -> Push {
        let step = 1_000_000_000 / self.config.lines_per_second.max(1) as i64;
        let mut by_stream: Vec<Vec<Generated>> = vec![Vec::new(); STREAMS];
        for _ in 0..self.config.entries_per_push {
            let s = self.workload.pick_stream(&mut self.rng);
            self.clock_ns += self.rng.i64(0..=2 * step);
            let state = &mut self.streams[s];
            let out_of_order = self.rng.f64() < 0.01;
            let ts = if out_of_order {
                state.last_ts - self.rng.i64(1..=30_000_000_000)
            } else {
                state.last_ts = self.clock_ns.max(state.last_ts + 1);
                state.last_ts
            };
            if state.trace_left == 0 {
                state.trace_id = self.rng.u128(1..);
                state.trace_left = self.rng.u32(1..=8);
            }
            state.trace_left -= 1;
            let trace_id = state.trace_id;
            let (line, mut truth, secrets) = make_line(&mut self.rng, ts, trace_id);
            truth.stream = s as u16;
            truth.out_of_order = out_of_order;
            by_stream[s].push((GenEntry { ts_ns: ts, line }, truth, secrets));
        }
        let mut push = Push { streams: Vec::new(), truth: Vec::new(), secrets: Vec::new() };
        for (s, entries) in by_stream.into_iter().enumerate() {
            if entries.is_empty() {
                continue;
            }
            let mut out = Vec::with_capacity(entries.len());
            for (entry, truth, secrets) in entries {
                let index = push.truth.len();
                push.truth.push(truth);
                push.secrets.extend(secrets.into_iter().map(|(kind, value)| SecretTruth {
                    entry: index,
                    kind,
                    value,
                }));
                out.push(entry);
            }
            push.streams.push(PushStream { stream: s, entries: out });
        }
        push
    }
}

const TARGETS: [&str; 12] = [
    "inference::server::batch",
    "inference::scheduler",
    "vllm::engine::llm_engine",
    "router::upstream",
    "gateway::auth",
    "trainer::loop",
    "trainer::checkpoint",
    "feature_store::online",
    "registry::api",
    "data::loader::shard",
    "billing::usage",
    "tokenizer::cache",
];
const MODELS: [&str; 8] = [
    "llama-3.1-8b-instruct",
    "llama-3.1-70b",
    "mistral-7b-v0.3",
    "qwen2.5-14b",
    "bge-large-en",
    "gpt-j-6b",
    "mixtral-8x7b",
    "phi-3-mini",
];
const USERS: [&str; 10] = [
    "alice.martin",
    "bob.nguyen",
    "carol.smith",
    "dan.okafor",
    "eve.jones",
    "farid.haddad",
    "grace.li",
    "hugo.weber",
    "ines.costa",
    "jon.park",
];
const DOMAINS: [&str; 4] = ["example.com", "acme-ml.io", "corp.example.org", "mail.test"];
const MESSAGES: [[&str; 6]; 4] = [
    [
        "cache lookup for prompt prefix",
        "tokenized request",
        "kv cache block allocated",
        "sampling params resolved",
        "health probe ok",
        "batch slot released",
    ],
    [
        "completed request",
        "request admitted to batch",
        "model loaded into gpu memory",
        "checkpoint saved",
        "feature vector served",
        "streamed response finished",
    ],
    [
        "slow upstream response",
        "queue depth above soft limit",
        "retrying shard download",
        "token budget nearly exhausted",
        "gpu memory pressure high",
        "deprecated api version used",
    ],
    [
        "request failed",
        "upstream returned 503",
        "cuda error: out of memory",
        "checkpoint upload failed",
        "feature lookup timed out",
        "invalid request payload",
    ],
];
const WORDS: [&str; 16] = [
    "the",
    "model",
    "token",
    "prompt",
    "layer",
    "tensor",
    "batch",
    "weights",
    "summarize",
    "context",
    "answer",
    "question",
    "document",
    "embedding",
    "query",
    "result",
];

fn lower_alnum(rng: &mut fastrand::Rng) -> char {
    const A: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    A[rng.usize(..A.len())] as char
}

fn pick<'a>(rng: &mut fastrand::Rng, items: &[&'a str]) -> &'a str {
    items[rng.usize(..items.len())]
}

fn hex(rng: &mut fastrand::Rng, digits: usize, out: &mut String) {
    for _ in 0..digits {
        out.push(rng.digit(16));
    }
}

/// A line's fields before formatting.
struct Fields {
    time: String,
    level: Level,
    target: &'static str,
    message: String,
    trace_id: u128,
    span_id: String,
    request_id: String,
    optional: Vec<(&'static str, String, bool)>,
}

fn make_line(
    rng: &mut fastrand::Rng,
    ts: i64,
    trace_id: u128,
) -> (String, EntryTruth, Vec<(SecretKind, String)>) {
    let r = rng.f64();
    let level = if r < 0.70 {
        Level::Info
    } else if r < 0.85 {
        Level::Debug
    } else if r < 0.95 {
        Level::Warn
    } else {
        Level::Error
    };
    let r = rng.f64();
    let format = if r < 0.75 {
        Format::Json
    } else if r < 0.95 {
        Format::Logfmt
    } else {
        Format::Plain
    };
    let large = rng.f64() < 0.01;
    let secret = (rng.f64() < 0.03).then(|| SecretKind::ALL[rng.usize(..4)]);

    let mut message = pick(rng, &MESSAGES[level as usize]).to_string();
    let mut optional: Vec<(&'static str, String, bool)> = Vec::new();
    if rng.f64() < 0.35 {
        optional.push(("model_id", pick(rng, &MODELS).to_string(), true));
    }
    if rng.f64() < 0.40 {
        optional.push(("duration_ms", format!("{}.{}", rng.u32(1..4000), rng.u32(0..10)), false));
    }
    if rng.f64() < 0.20 {
        optional.push(("client_ip", format!("10.{}.{}.{}", rng.u8(..), rng.u8(..), rng.u8(1..255)), true));
    }
    if rng.f64() < 0.12 {
        optional.push(("user_email", format!("{}@{}", pick(rng, &USERS), pick(rng, &DOMAINS)), true));
    }
    let mut secrets = Vec::new();
    if let Some(kind) = secret {
        let (text, value) = secret_text(rng, kind, &mut secrets);
        // Half of the secrets sit in the message, half in a field of their own.
        if rng.bool() || format == Format::Plain {
            let _ = write!(message, " ({text})");
        } else {
            let name = match kind {
                SecretKind::Jwt => "authorization",
                SecretKind::AwsKey => "aws_credentials",
                SecretKind::UrlPassword => "db_url",
                SecretKind::CreditCard => "card_number",
            };
            optional.push((name, value, true));
        }
    }
    let mut span_id = String::with_capacity(16);
    hex(rng, 16, &mut span_id);
    let mut request_id = String::with_capacity(16);
    hex(rng, 16, &mut request_id);
    let fields = Fields {
        time: rfc3339_micros(ts),
        level,
        target: pick(rng, &TARGETS),
        message,
        trace_id,
        span_id,
        request_id,
        optional,
    };
    let target_len = large.then(|| rng.usize(4096..=16384));
    let line = match format {
        Format::Json => json_line(rng, &fields, target_len),
        Format::Logfmt => logfmt_line(rng, &fields, target_len),
        Format::Plain => plain_line(rng, &fields, target_len),
    };
    let truth = EntryTruth {
        trace_id: if format == Format::Plain { 0 } else { trace_id },
        stream: 0,
        level,
        format,
        secrets: secret.map_or(0, |k| 1 << k as u8),
        large,
        out_of_order: false,
    };
    (line, truth, secrets)
}

/// A secret as written in a message and as a field value; pushes the exact secret strings.
fn secret_text(
    rng: &mut fastrand::Rng,
    kind: SecretKind,
    out: &mut Vec<(SecretKind, String)>,
) -> (String, String) {
    match kind {
        SecretKind::Jwt => {
            let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
            let payload = URL_SAFE_NO_PAD.encode(format!(
                r#"{{"sub":"{}","iat":{},"scope":"inference:write"}}"#,
                pick(rng, &USERS),
                rng.u32(1_700_000_000..1_800_000_000)
            ));
            let mut sig = [0u8; 32];
            rng.fill(&mut sig);
            let token = format!("{header}.{payload}.{}", URL_SAFE_NO_PAD.encode(sig));
            out.push((kind, token.clone()));
            (format!("Authorization: Bearer {token}"), format!("Bearer {token}"))
        }
        SecretKind::AwsKey => {
            const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
            const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            let id: String =
                "AKIA".chars().chain((0..16).map(|_| UPPER[rng.usize(..UPPER.len())] as char)).collect();
            let secret: String = (0..40).map(|_| B64[rng.usize(..B64.len())] as char).collect();
            out.push((kind, id.clone()));
            out.push((kind, secret.clone()));
            let text = format!("aws_access_key_id={id} aws_secret_access_key={secret}");
            (text.clone(), text)
        }
        SecretKind::UrlPassword => {
            let password: String = (0..16).map(|_| rng.alphanumeric()).collect();
            out.push((kind, password.clone()));
            let user = ["ml_app", "feast", "mlflow", "airflow"][rng.usize(..4)];
            let host = ["pg-main.db.svc", "10.20.4.17", "feast-pg.internal", "mlflow-db"][rng.usize(..4)];
            let url = format!("postgres://{user}:{password}@{host}:5432/{user}");
            (format!("connecting to {url}"), url)
        }
        SecretKind::CreditCard => {
            let mut digits = vec![[4u8, 5][rng.usize(..2)]];
            digits.extend((0..14).map(|_| rng.u8(0..10)));
            digits.push(luhn_check_digit(&digits));
            let plain: String = digits.iter().map(|d| (b'0' + d) as char).collect();
            let text = match rng.u8(0..3) {
                0 => plain,
                sep => plain
                    .as_bytes()
                    .chunks(4)
                    .map(|c| String::from_utf8_lossy(c).into_owned())
                    .collect::<Vec<_>>()
                    .join(if sep == 1 { " " } else { "-" }),
            };
            out.push((kind, text.clone()));
            (format!("card {text}"), text)
        }
    }
}

/// The digit that makes `digits` + it pass the Luhn check.
fn luhn_check_digit(digits: &[u8]) -> u8 {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 0 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    ((10 - sum % 10) % 10) as u8
}

/// Filler text of about `len` bytes (for the large lines: prompts, payload dumps).
fn filler(rng: &mut fastrand::Rng, len: usize) -> String {
    let mut s = String::with_capacity(len + 16);
    while s.len() < len {
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str(pick(rng, &WORDS));
    }
    s
}

fn json_line(rng: &mut fastrand::Rng, f: &Fields, target_len: Option<usize>) -> String {
    let mut out = Vec::with_capacity(320);
    let _ = write!(
        out,
        "{{\"time\":\"{}\",\"level\":\"{}\",\"target\":\"{}\",\"message\":",
        f.time,
        f.level.upper(),
        f.target
    );
    json_string(&mut out, &f.message);
    let _ = write!(
        out,
        ",\"trace_id\":\"{:032x}\",\"span_id\":\"{}\",\"request_id\":\"{}\"",
        f.trace_id, f.span_id, f.request_id
    );
    for (name, value, quoted) in &f.optional {
        let _ = write!(out, ",\"{name}\":");
        if *quoted {
            json_string(&mut out, value);
        } else {
            out.extend_from_slice(value.as_bytes());
        }
    }
    if let Some(len) = target_len {
        out.extend_from_slice(b",\"prompt\":\"");
        let fill = len.saturating_sub(out.len() + 2);
        out.extend_from_slice(filler(rng, fill).as_bytes());
        out.push(b'"');
    }
    out.push(b'}');
    String::from_utf8(out).unwrap_or_default()
}

fn logfmt_value(out: &mut String, value: &str) {
    if value.contains([' ', '"', '=']) {
        out.push('"');
        for c in value.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    } else {
        out.push_str(value);
    }
}

fn logfmt_line(rng: &mut fastrand::Rng, f: &Fields, target_len: Option<usize>) -> String {
    let mut out = String::with_capacity(300);
    let _ = write!(out, "time={} level={} target={} msg=", f.time, f.level.lower(), f.target);
    logfmt_value(&mut out, &f.message);
    let _ = write!(out, " trace_id={:032x} span_id={} request_id={}", f.trace_id, f.span_id, f.request_id);
    for (name, value, _) in &f.optional {
        let _ = write!(out, " {name}=");
        logfmt_value(&mut out, value);
    }
    if let Some(len) = target_len {
        out.push_str(" prompt=\"");
        let fill = len.saturating_sub(out.len() + 1);
        out.push_str(&filler(rng, fill));
        out.push('"');
    }
    out
}

fn plain_line(rng: &mut fastrand::Rng, f: &Fields, target_len: Option<usize>) -> String {
    let mut out = String::with_capacity(300);
    let _ = write!(out, "{} {:<5} [{}] {}", f.time, f.level.upper(), f.target, f.message);
    if matches!(f.level, Level::Warn | Level::Error) {
        // A Python traceback, as the model servers print them.
        out.push_str("\nTraceback (most recent call last):");
        let frames = rng.usize(2..6);
        let mut i = 0;
        while i < frames || target_len.is_some_and(|len| out.len() < len) {
            let file = ["server.py", "engine.py", "scheduler.py", "model_runner.py", "worker.py"][i % 5];
            let func = ["handle", "generate", "step", "execute_model", "run"][i % 5];
            let _ = write!(
                out,
                "\n  File \"/app/inference/{file}\", line {}, in {func}\n    output = self.{func}(batch, **kwargs)",
                rng.u32(20..900)
            );
            i += 1;
        }
        let _ = write!(out, "\nRuntimeError: {}", f.message);
    } else if let Some(len) = target_len {
        out.push_str(" payload=");
        let fill = len.saturating_sub(out.len());
        out.push_str(&filler(rng, fill));
    }
    out
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` for nanoseconds since the epoch (UTC).
pub fn rfc3339_micros(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let micros = ns.rem_euclid(1_000_000_000) / 1000;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z", sod / 3600, sod / 60 % 60, sod % 60)
}

pub use sluice::archive::key::civil_from_days;

/// Counts over many pushes: what the mix actually was.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Summary {
    pub pushes: usize,
    pub entries: usize,
    pub line_bytes: usize,
    /// By [`Level`] index.
    pub levels: [usize; 4],
    /// By [`Format`] index.
    pub formats: [usize; 3],
    pub with_secret: usize,
    /// Entries carrying each [`SecretKind`], by index.
    pub secret_kinds: [usize; 4],
    pub large: usize,
    pub out_of_order: usize,
    pub streams_seen: usize,
    /// Median line length in bytes.
    pub median_line: usize,
}

impl Summary {
    /// The summary of `pushes`.
    pub fn of(pushes: &[Push]) -> Self {
        let mut s = Summary { pushes: pushes.len(), ..Default::default() };
        let mut seen = [false; STREAMS];
        let mut lengths = Vec::new();
        for p in pushes {
            s.line_bytes += p.line_bytes();
            lengths.extend(p.streams.iter().flat_map(|s| &s.entries).map(|e| e.line.len()));
            for t in &p.truth {
                s.entries += 1;
                s.levels[t.level as usize] += 1;
                s.formats[t.format as usize] += 1;
                s.with_secret += usize::from(t.secrets != 0);
                for k in 0..4 {
                    s.secret_kinds[k] += usize::from(t.secrets & (1 << k) != 0);
                }
                s.large += usize::from(t.large);
                s.out_of_order += usize::from(t.out_of_order);
                seen[usize::from(t.stream)] = true;
            }
        }
        s.streams_seen = seen.iter().filter(|&&b| b).count();
        lengths.sort_unstable();
        s.median_line = lengths.get(lengths.len() / 2).copied().unwrap_or(0);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: i64 = 1_767_225_600_000_000_000; // 2026-01-01T00:00:00Z

    fn pushes(seed: u64, n: usize) -> (Workload, Vec<Push>) {
        let mut g = Generator::new(seed, START, GenConfig::default());
        let pushes = (0..n).map(|_| g.next_push()).collect();
        (g.workload().clone(), pushes)
    }

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        let (w1, a) = pushes(42, 3);
        let (w2, b) = pushes(42, 3);
        let (w3, c) = pushes(43, 3);
        for i in 0..3 {
            assert_eq!(a[i].protobuf_snappy(&w1), b[i].protobuf_snappy(&w2));
            assert_eq!(a[i].json_gzip(&w1), b[i].json_gzip(&w2));
            assert_eq!(a[i].truth, b[i].truth);
            assert_eq!(a[i].secrets, b[i].secrets);
        }
        assert_ne!(a[0].protobuf_snappy(&w1), c[0].protobuf_snappy(&w3));
        assert_ne!(w1.streams[0].selector, w3.streams[0].selector, "pod names follow the seed");
    }

    #[test]
    fn mix_matches_the_reference_workload() {
        let (w, p) = pushes(7, 100);
        let s = Summary::of(&p);
        assert_eq!(s.entries, 100_000);
        assert_eq!(p[0].entry_count(), 1000);
        let frac = |n: usize| n as f64 / s.entries as f64;
        let near = |got: f64, want: f64, tol: f64, what: &str| {
            assert!((got - want).abs() <= tol, "{what}: {got:.4}, want {want} ± {tol}");
        };
        near(frac(s.formats[Format::Json as usize]), 0.75, 0.01, "json");
        near(frac(s.formats[Format::Logfmt as usize]), 0.20, 0.01, "logfmt");
        near(frac(s.formats[Format::Plain as usize]), 0.05, 0.005, "plain");
        near(frac(s.levels[Level::Info as usize]), 0.70, 0.01, "INFO");
        near(frac(s.levels[Level::Debug as usize]), 0.15, 0.01, "DEBUG");
        near(frac(s.levels[Level::Warn as usize]), 0.10, 0.01, "WARN");
        near(frac(s.levels[Level::Error as usize]), 0.05, 0.005, "ERROR");
        near(frac(s.with_secret), 0.03, 0.003, "secrets");
        for (k, n) in s.secret_kinds.iter().enumerate() {
            near(frac(*n), 0.0075, 0.002, &format!("secret kind {k}"));
        }
        near(frac(s.large), 0.01, 0.002, "large lines");
        near(frac(s.out_of_order), 0.01, 0.002, "out of order");
        assert!((225..=275).contains(&s.median_line), "median line {}", s.median_line);
        assert_eq!(s.streams_seen, STREAMS);

        // Large lines are 4–16 KiB; every secret string is in its line.
        for push in &p {
            let lines: Vec<&GenEntry> = push.streams.iter().flat_map(|s| &s.entries).collect();
            for (t, e) in push.truth.iter().zip(&lines) {
                if t.large {
                    assert!((4096..=16384 + 512).contains(&e.line.len()), "large line of {}", e.line.len());
                } else {
                    assert!(e.line.len() < 4096, "{}", e.line);
                }
                if t.trace_id != 0 {
                    assert!(e.line.contains(&format!("{:032x}", t.trace_id)));
                }
            }
            for secret in &push.secrets {
                assert!(lines[secret.entry].line.contains(&secret.value));
                assert_ne!(push.truth[secret.entry].secrets & (1 << secret.kind as u8), 0);
            }
        }

        // Streams: the label shape, 200 pods, 5 namespaces, 20 apps, 3 containers.
        let distinct = |name: &str| {
            let mut v: Vec<&str> = w
                .streams
                .iter()
                .map(|s| s.labels.iter().find(|(n, _)| *n == name).map_or("", |(_, v)| v.as_str()))
                .collect();
            v.sort_unstable();
            v.dedup();
            v.len()
        };
        assert_eq!(
            (distinct("namespace"), distinct("app"), distinct("pod"), distinct("container")),
            (5, 20, 200, 3)
        );
        for def in &w.streams {
            let names: Vec<&str> = def.labels.iter().map(|(n, _)| *n).collect();
            assert_eq!(names, ["app", "container", "job", "namespace", "pod", "service_name"]);
        }
    }

    #[test]
    fn timestamps_increase_per_stream_except_the_out_of_order_ones() {
        let (_, p) = pushes(11, 20);
        let mut last = vec![START; STREAMS];
        let mut late = 0;
        for push in &p {
            let mut i = 0;
            for s in &push.streams {
                for e in &s.entries {
                    let t = push.truth[i];
                    i += 1;
                    if t.out_of_order {
                        late += 1;
                        assert!(e.ts_ns < last[s.stream] && e.ts_ns >= last[s.stream] - 30_000_000_000);
                    } else {
                        assert!(e.ts_ns > last[s.stream], "stream {} went back", s.stream);
                        last[s.stream] = e.ts_ns;
                    }
                }
            }
        }
        assert!(late > 0);
        // Time advances with the simulated rate: 20,000 lines at 5,000/s is about 4 s.
        let span = last.iter().max().copied().unwrap_or(0) - START;
        assert!((3_000_000_000..5_000_000_000).contains(&span), "span {span}");
    }

    #[test]
    fn encodings_carry_the_same_entries() {
        let (w, p) = pushes(3, 1);
        let push = &p[0];
        let body = push.protobuf_snappy(&w);
        let raw = snap::raw::Decoder::new().decompress_vec(&body).expect("snappy");
        let decoded = proto::PushRequest::decode(raw.as_slice()).expect("protobuf");
        assert_eq!(decoded, push.to_proto(&w));

        let mut json = String::new();
        let gz = push.json_gzip(&w);
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(gz.as_slice()), &mut json)
            .expect("gzip");
        let v: serde_json::Value = serde_json::from_str(&json).expect("json");
        let streams = v["streams"].as_array().expect("streams");
        assert_eq!(streams.len(), push.streams.len());
        let first = &push.streams[0].entries[0];
        assert_eq!(streams[0]["values"][0][0], first.ts_ns.to_string());
        assert_eq!(streams[0]["values"][0][1], first.line.as_str());
        assert_eq!(streams[0]["stream"]["pod"], w.streams[push.streams[0].stream].labels[4].1.as_str());

        let mut nd = Vec::new();
        push.ndjson(&w, &mut nd);
        let lines: Vec<serde_json::Value> = nd
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).expect("ndjson"))
            .collect();
        assert_eq!(lines.len(), push.entry_count());
        assert_eq!(lines[0]["line"], first.line.as_str());
    }

    #[test]
    fn rfc3339_and_luhn() {
        assert_eq!(rfc3339_micros(START + 1_500), "2026-01-01T00:00:00.000001Z");
        assert_eq!(rfc3339_micros(951_782_400_000_000_000), "2000-02-29T00:00:00.000000Z");
        assert_eq!(rfc3339_micros(0), "1970-01-01T00:00:00.000000Z");
        // 4539 1488 0343 6467 is a valid test number.
        assert_eq!(luhn_check_digit(&[4, 5, 3, 9, 1, 4, 8, 8, 0, 3, 4, 3, 6, 4, 6]), 7);
    }
}
