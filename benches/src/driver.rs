//! The end-to-end load driver: for each configuration and body format, start the real `sluice`
//! with a fresh data dir and a [`Receiver`] as its Loki, then
//!
//! 1. warm up, then push pre-encoded bodies back to back from N keep-alive connections for the
//!    phase duration (max rate), wait until sluice's queue is empty and the receiver has
//!    everything, and take lines/s and MB/s delivered, and sluice's CPU seconds per million
//!    lines;
//! 2. push at half that rate, open loop (push `k` is due at `start + k × interval`, whatever
//!    happened to earlier pushes), and take each push's latency from when it was due to its
//!    answer, so a stall shows up in the percentiles instead of slowing the sender;
//! 3. compare the entries sluice accepted (204) with the entries the receiver got: all of them
//!    for `passthrough` (and their line bytes), for the chains exactly those the reference chain
//!    keeps ([`chain::keeps`]), with not one line holding a secret of the workload;
//! 4. read peak RSS, stop sluice with SIGTERM;
//! 5. for `chain-fanout`, whose archive sink writes to a SeaweedFS started before sluice
//!    ([`S3Server`]) and stopped after the variant: count the records of every object in the
//!    archive once sluice has exited (it seals and uploads its open objects at shutdown), which
//!    must be exactly the entries the chain delivered, the same as Loki's.
//!
//! Nothing is generated or encoded on the measured path: bodies are encoded once, up front, with
//! the counts of what each holds and what the chain keeps of it, and sent as shared [`Bytes`].
//! The driver (one thread) and the receiver (one thread) are kept cheap because they share the
//! machine's cores with sluice; their CPU time is reported alongside.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message as _;
use serde::Serialize;
use sluice::archive::store::Store;

use crate::chain::{self, ArchiveTarget};
use crate::procfs;
use crate::receiver::{Counts, Receiver};
use crate::s3::S3Server;
use crate::server::SluiceProcess;
use crate::stats::Latencies;
use crate::workload::{GenConfig, Generator, Push, Summary, Workload};

/// Configuration names of `shared/BENCHMARK.md`.
pub const KNOWN_CONFIGS: [&str; 4] = ["passthrough", "chain-wasm", "chain-native", "chain-fanout"];

/// Wait after a 429 before the connection pushes again.
const BACKOFF_429: Duration = Duration::from_millis(50);
/// Longest wait for deliveries to settle after a phase.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for sluice to exit after SIGTERM: longer than its own `server.shutdown_timeout`
/// (30 s by default, which the configurations keep), within which it flushes the sinks and
/// uploads the archive's last objects; so sluice's own deadline, not a kill, ends a slow exit.
const STOP_TIMEOUT: Duration = Duration::from_secs(45);

/// How the pushes are encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum BodyFormat {
    /// protobuf with raw snappy, as Promtail and Alloy send.
    Protobuf,
    /// JSON with gzip.
    JsonGzip,
}

impl BodyFormat {
    /// Its name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            BodyFormat::Protobuf => "protobuf",
            BodyFormat::JsonGzip => "json-gzip",
        }
    }
}

/// Pre-encoded push bodies of one format, with what each holds.
#[derive(Debug, Clone)]
pub struct Bodies {
    pub format: BodyFormat,
    pub bodies: Vec<Bytes>,
    pub entries: Vec<u64>,
    pub line_bytes: Vec<u64>,
    /// Entries of each push the reference chain keeps ([`chain::keeps`]), what the `chain-*`
    /// configurations must deliver.
    pub kept: Vec<u64>,
}

impl Bodies {
    /// Encodes `pushes` in `format`.
    pub fn encode(pushes: &[Push], workload: &Workload, format: BodyFormat) -> Self {
        let bodies = pushes
            .iter()
            .map(|p| {
                Bytes::from(match format {
                    BodyFormat::Protobuf => p.protobuf_snappy(workload),
                    BodyFormat::JsonGzip => p.json_gzip(workload),
                })
            })
            .collect();
        Self {
            format,
            bodies,
            entries: pushes.iter().map(|p| p.entry_count() as u64).collect(),
            line_bytes: pushes.iter().map(|p| p.line_bytes() as u64).collect(),
            kept: pushes.iter().map(|p| p.truth.iter().filter(|t| chain::keeps(t)).count() as u64).collect(),
        }
    }

    /// Mean entries per push.
    pub fn mean_entries(&self) -> f64 {
        self.entries.iter().sum::<u64>() as f64 / self.entries.len().max(1) as f64
    }

    /// Mean body size in bytes.
    pub fn mean_body(&self) -> f64 {
        self.bodies.iter().map(|b| b.len() as u64).sum::<u64>() as f64 / self.bodies.len().max(1) as f64
    }
}

/// The workload, generated and encoded once per run.
#[derive(Debug)]
pub struct Prepared {
    pub summary: Summary,
    pub bodies: BTreeMap<BodyFormat, Arc<Bodies>>,
    /// Every secret string of the workload (for receivers that check redaction).
    pub secrets: Vec<String>,
}

/// Generates `pushes` pushes from `seed`, timestamps starting an hour ago, and encodes them in
/// every format in `formats` (protobuf always, for the floor).
pub fn prepare(seed: u64, pushes: usize, formats: &[BodyFormat]) -> Prepared {
    let now_ns =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64);
    let mut generator = Generator::new(seed, now_ns - 3_600_000_000_000, GenConfig::default());
    let generated: Vec<Push> = (0..pushes).map(|_| generator.next_push()).collect();
    let workload = generator.workload();
    let mut bodies = BTreeMap::new();
    for &format in formats.iter().chain([BodyFormat::Protobuf].iter()) {
        bodies.entry(format).or_insert_with(|| Arc::new(Bodies::encode(&generated, workload, format)));
    }
    let secrets = generated.iter().flat_map(|p| p.secrets.iter().map(|s| s.value.clone())).collect();
    Prepared { summary: Summary::of(&generated), bodies, secrets }
}

/// The floor: CPU time of only what any gateway must do with a protobuf push.
#[derive(Debug, Clone, Serialize)]
pub struct Floor {
    /// Thread CPU seconds per million lines of snappy-decompress + prost-decode + prost-encode +
    /// snappy-compress.
    pub cpu_s_per_m_lines: f64,
    pub lines: u64,
    pub cpu_s: f64,
}

/// Runs the floor on this thread over `bodies` (protobuf) until it has used at least `min_cpu`.
pub fn floor(bodies: &Bodies, ticks: u64, min_cpu: Duration) -> anyhow::Result<Floor> {
    let start = procfs::thread_cpu_ns(ticks)?;
    let mut lines = 0u64;
    let mut decoder = snap::raw::Decoder::new();
    let mut encoder = snap::raw::Encoder::new();
    loop {
        for (body, entries) in bodies.bodies.iter().zip(&bodies.entries) {
            let raw = decoder.decompress_vec(body)?;
            let request = sluice::proto::PushRequest::decode(raw.as_slice())?;
            let encoded = request.encode_to_vec();
            let compressed = encoder.compress_vec(&encoded)?;
            std::hint::black_box(compressed);
            lines += entries;
        }
        let used = procfs::thread_cpu_ns(ticks)? - start;
        if used >= min_cpu.as_nanos() as u64 {
            let cpu_s = used as f64 / 1e9;
            return Ok(Floor { cpu_s_per_m_lines: cpu_s / lines as f64 * 1e6, lines, cpu_s });
        }
    }
}

/// Outcome of the pushes of one phase.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PushStats {
    /// Pushes answered 204.
    pub pushes_ok: u64,
    /// Entries and line bytes of those.
    pub entries_ok: u64,
    pub line_bytes_ok: u64,
    /// Entries of those the reference chain keeps.
    pub kept_ok: u64,
    pub status_429: u64,
    /// Other statuses, by code.
    pub other_status: BTreeMap<u16, u64>,
    /// Network errors and timeouts.
    pub transport_errors: u64,
    #[serde(skip)]
    pub latencies_us: Vec<u64>,
}

impl PushStats {
    fn merge(&mut self, other: PushStats) {
        self.pushes_ok += other.pushes_ok;
        self.entries_ok += other.entries_ok;
        self.line_bytes_ok += other.line_bytes_ok;
        self.kept_ok += other.kept_ok;
        self.status_429 += other.status_429;
        for (k, v) in other.other_status {
            *self.other_status.entry(k).or_default() += v;
        }
        self.transport_errors += other.transport_errors;
        self.latencies_us.extend(other.latencies_us);
    }

    /// Pushes that were neither 204 nor 429.
    pub fn errors(&self) -> u64 {
        self.transport_errors + self.other_status.values().sum::<u64>()
    }
}

/// Where and how to push.
#[derive(Debug, Clone)]
struct Target {
    url: String,
    tenant: String,
    bodies: Arc<Bodies>,
}

impl Target {
    /// Sends body `i`, records the outcome; returns the status (0 for a transport error).
    async fn send(&self, client: &reqwest::Client, i: usize, stats: &mut PushStats) -> u16 {
        let i = i % self.bodies.bodies.len();
        let mut request = client.post(&self.url).header("X-Scope-OrgID", &self.tenant);
        request = match self.bodies.format {
            BodyFormat::Protobuf => request.header("Content-Type", "application/x-protobuf"),
            BodyFormat::JsonGzip => {
                request.header("Content-Type", "application/json").header("Content-Encoding", "gzip")
            }
        };
        let status = match request.body(self.bodies.bodies[i].clone()).send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                // Read the (short) answer so the connection is reused.
                let _ = response.bytes().await;
                status
            }
            Err(_) => 0,
        };
        match status {
            204 => {
                stats.pushes_ok += 1;
                stats.entries_ok += self.bodies.entries[i];
                stats.line_bytes_ok += self.bodies.line_bytes[i];
                stats.kept_ok += self.bodies.kept[i];
            }
            429 => stats.status_429 += 1,
            0 => stats.transport_errors += 1,
            s => *stats.other_status.entry(s).or_default() += 1,
        }
        status
    }
}

/// One HTTP client per connection to push from, each with one pooled keep-alive connection.
pub fn clients(n: usize) -> anyhow::Result<Vec<reqwest::Client>> {
    (0..n)
        .map(|_| {
            Ok(reqwest::Client::builder()
                .no_proxy()
                .pool_max_idle_per_host(1)
                .tcp_nodelay(true)
                .timeout(Duration::from_secs(60))
                .build()?)
        })
        .collect()
}

/// Pushes back to back from every client until `duration` has passed; bodies rotate over all
/// connections. Returns the stats and the time from the first send to the last answer.
async fn max_rate(
    target: &Arc<Target>,
    clients: &[reqwest::Client],
    duration: Duration,
) -> (PushStats, Duration) {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for client in clients {
        let (client, target, next) = (client.clone(), Arc::clone(target), Arc::clone(&next));
        tasks.spawn(async move {
            let mut stats = PushStats::default();
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if target.send(&client, i, &mut stats).await == 429 {
                    tokio::time::sleep(BACKOFF_429).await;
                }
            }
            stats
        });
    }
    let mut total = PushStats::default();
    while let Some(stats) = tasks.join_next().await {
        total.merge(stats.unwrap_or_default());
    }
    (total, start.elapsed())
}

/// Open-loop pushes: push `k` is due at `start + k × interval` and goes out on connection
/// `k mod n` as soon as that connection is free; latency runs from when it was due.
async fn paced(
    target: &Arc<Target>,
    clients: &[reqwest::Client],
    duration: Duration,
    pushes_per_second: f64,
) -> (PushStats, Duration) {
    let interval = Duration::from_secs_f64(1.0 / pushes_per_second.max(0.01));
    let total_pushes = (duration.as_secs_f64() * pushes_per_second).floor().max(1.0) as usize;
    let start = tokio::time::Instant::now();
    let n = clients.len();
    let mut tasks = tokio::task::JoinSet::new();
    for (w, client) in clients.iter().enumerate() {
        let (client, target) = (client.clone(), Arc::clone(target));
        tasks.spawn(async move {
            let mut stats = PushStats::default();
            for k in (w..total_pushes).step_by(n) {
                let due = start + interval.mul_f64(k as f64);
                tokio::time::sleep_until(due).await;
                if target.send(&client, k, &mut stats).await == 204 {
                    stats.latencies_us.push(due.elapsed().as_micros() as u64);
                }
            }
            stats
        });
    }
    let mut total = PushStats::default();
    while let Some(stats) = tasks.join_next().await {
        total.merge(stats.unwrap_or_default());
    }
    (total, start.elapsed())
}

/// What sluice still holds undelivered: entries in its queue plus bytes of its write-ahead log
/// that some sink has not confirmed (the lag gauge is refreshed five times a second).
async fn held(client: &reqwest::Client, sluice: &SluiceProcess) -> Option<f64> {
    let text = client.get(sluice.url("/metrics")).send().await.ok()?.text().await.ok()?;
    let queue: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("sluice_queue_entries "))
        .and_then(|v| v.trim().parse().ok())?;
    let lag: f64 = text
        .lines()
        .filter(|l| l.starts_with("sluice_wal_sink_lag_bytes{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.trim().parse::<f64>().ok())
        .sum();
    Some(queue + lag)
}

/// Selected counters from sluice's `/metrics` (statuses, retries, drops).
async fn interesting_metrics(client: &reqwest::Client, sluice: &SluiceProcess) -> Vec<String> {
    const PREFIXES: [&str; 6] = [
        "sluice_ingest_requests_total",
        "sluice_ingest_rejected_entries_total",
        "sluice_sink_requests_total",
        "sluice_sink_retries_total",
        "sluice_sink_dropped_entries_total",
        "sluice_route_dropped_entries_total",
    ];
    let Ok(resp) = client.get(sluice.url("/metrics")).send().await else { return vec![] };
    let text = resp.text().await.unwrap_or_default();
    text.lines().filter(|l| PREFIXES.iter().any(|p| l.starts_with(p))).map(str::to_string).collect()
}

/// Waits until sluice holds nothing and the receiver's count has stopped moving. Returns
/// whether it settled within [`SETTLE_TIMEOUT`].
async fn settle(client: &reqwest::Client, sluice: &SluiceProcess, receiver: &Receiver) -> bool {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let mut last = receiver.totals().entries;
    let mut stable_since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = receiver.totals().entries;
        if now != last {
            last = now;
            stable_since = Instant::now();
        }
        let empty = match held(client, sluice).await {
            Some(q) => q == 0.0,
            // No gauge: fall back to a quiet receiver for longer than a batch wait.
            None => stable_since.elapsed() > Duration::from_secs(2),
        };
        // Longer than the lag gauge's refresh, so a zero is not a stale one.
        if empty && stable_since.elapsed() >= Duration::from_millis(400) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
    }
}

/// Figures of the max-rate phase.
#[derive(Debug, Clone, Serialize)]
pub struct MaxRate {
    pub seconds: f64,
    /// Entries delivered at the receiver per second of the phase (for the chains: what is left
    /// after sampling).
    pub lines_per_s: f64,
    /// Uncompressed line bytes delivered per second, in MB (10^6).
    pub mb_per_s: f64,
    /// Entries sent (pushes answered 204) per second of the phase.
    pub sent_lines_per_s: f64,
    /// sluice's user+system CPU seconds from phase start until delivery settled.
    pub cpu_s: f64,
    /// `cpu_s` per million entries *sent* (accepted) in the phase: the work sluice was given,
    /// whatever the chain then dropped.
    pub cpu_s_per_m_lines: f64,
    /// `cpu_s` per million entries delivered (equal to the above for `passthrough`).
    pub cpu_s_per_m_delivered: f64,
    /// `cpu_s` over the phase's length: how many cores sluice kept busy.
    pub cores_busy: f64,
    pub sent_entries: u64,
    pub delivered_entries: u64,
    pub pushes: PushStats,
    pub settled: bool,
}

/// Figures of the half-rate phase.
#[derive(Debug, Clone, Serialize)]
pub struct HalfRate {
    /// Half the max-rate phase's sent entries per second: the rate pushes are due at.
    pub target_lines_per_s: f64,
    /// Entries sent (answered 204) per second.
    pub achieved_lines_per_s: f64,
    /// Entries delivered at the receiver per second.
    pub delivered_lines_per_s: f64,
    /// From when a push was due to its answer.
    pub latency: Latencies,
    pub pushes: PushStats,
    pub settled: bool,
}

/// Entries accepted against entries delivered, over the whole run of a variant.
#[derive(Debug, Clone, Serialize)]
pub struct Correctness {
    /// Entries of all pushes answered 204 (warm-up and both phases).
    pub entries_sent: u64,
    /// What the receiver must count: `entries_sent` for `passthrough`, for the chains the
    /// entries of those pushes that the reference chain keeps.
    pub entries_expected: u64,
    pub entries_received: u64,
    pub line_bytes_sent: u64,
    pub line_bytes_received: u64,
    /// Whether line bytes must match (only without stages: redaction changes lines).
    pub line_bytes_compared: bool,
    /// Requests the receiver could not decode.
    pub bad_requests: u64,
    /// Whether the receiver looked for the workload's secrets (the chains).
    pub secrets_checked: bool,
    /// Lines received that hold one of the workload's secret strings; must be 0 for the chains.
    pub lines_with_secret: u64,
    /// The distinct secrets found (at most 20).
    pub secrets_found: Vec<String>,
    /// `chain-fanout`: what its S3 archive holds after sluice exited; its records must be
    /// `entries_expected` too.
    pub archive: Option<ArchiveCounts>,
    /// `chain-fanout`: why the archive could not be read.
    pub archive_error: Option<String>,
    pub ok: bool,
}

impl Correctness {
    /// Why it is not ok, in a few words (empty when ok).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.entries_received != self.entries_expected {
            problems.push(format!(
                "{} entries received, {} expected",
                self.entries_received, self.entries_expected
            ));
        }
        if self.line_bytes_compared && self.line_bytes_received != self.line_bytes_sent {
            problems.push(format!(
                "{} line bytes received, {} sent",
                self.line_bytes_received, self.line_bytes_sent
            ));
        }
        if self.bad_requests > 0 {
            problems.push(format!("{} undecodable requests", self.bad_requests));
        }
        if self.lines_with_secret > 0 {
            problems.push(format!("{} lines with a secret", self.lines_with_secret));
        }
        if let Some(e) = &self.archive_error {
            problems.push(format!("archive: {e}"));
        }
        if let Some(archive) = self.archive.as_ref().filter(|a| a.records != self.entries_expected) {
            problems.push(format!(
                "{} archive records, {} expected (Loki received {})",
                archive.records, self.entries_expected, self.entries_received
            ));
        }
        problems
    }
}

/// What an archive holds: zstd NDJSON objects, one record (line) per entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ArchiveCounts {
    /// Where: `s3://bucket/prefix`.
    pub url: String,
    /// Objects below the prefix (sluice's start check object, if left behind, aside).
    pub objects: u64,
    /// Their size as stored (compressed).
    pub compressed_bytes: u64,
    /// Records (lines) in them, decompressed.
    pub records: u64,
    /// `compressed_bytes` per record: what an archived entry costs in the store.
    pub bytes_per_entry: f64,
}

/// Lists every object of `store` and counts the records in each (zstd-decompressed, one per
/// `\n`, as sluice's spool counts them).
pub async fn archive_counts(store: &Store) -> Result<ArchiveCounts, String> {
    let mut counts = ArchiveCounts { url: store.url.clone(), ..ArchiveCounts::default() };
    for (key, bytes) in crate::s3::objects(store).await? {
        if key == sluice::archive::store::CHECK_OBJECT {
            continue;
        }
        counts.objects += 1;
        counts.compressed_bytes += bytes.len() as u64;
        counts.records += zstd_lines(&bytes).map_err(|e| format!("{key}: not zstd NDJSON: {e}"))?;
    }
    if counts.records > 0 {
        counts.bytes_per_entry = counts.compressed_bytes as f64 / counts.records as f64;
    }
    Ok(counts)
}

/// The `\n`s in the zstd stream `compressed` (one or more frames).
fn zstd_lines(compressed: &[u8]) -> std::io::Result<u64> {
    use std::io::Read as _;
    let mut decoder = zstd::stream::read::Decoder::new(compressed)?;
    let mut buf = vec![0u8; 1 << 16];
    let mut lines = 0u64;
    loop {
        let n = decoder.read(&mut buf)?;
        if n == 0 {
            return Ok(lines);
        }
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
    }
}

/// One configuration with one body format.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub config: String,
    pub format: BodyFormat,
    /// `ok`, `ok (…)` with a caveat, or `failed: …`.
    pub status: String,
    pub max_rate: Option<MaxRate>,
    pub half_rate: Option<HalfRate>,
    pub correctness: Option<Correctness>,
    pub peak_rss_bytes: Option<u64>,
    /// `max_rate.cpu_s_per_m_lines` / the floor's.
    pub floor_multiple: Option<f64>,
    /// CPU seconds of the driver process (driver and receiver) over the variant.
    pub driver_cpu_s: Option<f64>,
    /// WARN/ERROR lines in sluice's log: their number and the first few.
    pub sluice_warnings: usize,
    pub sluice_warning_samples: Vec<String>,
    /// Selected counters from `/metrics` at the end.
    pub sluice_metrics: Vec<String>,
    /// How sluice exited after SIGTERM.
    pub exit: String,
}

impl Row {
    /// A row with only a status.
    pub fn status_only(config: &str, format: BodyFormat, status: impl Into<String>) -> Self {
        Row {
            config: config.into(),
            format,
            status: status.into(),
            max_rate: None,
            half_rate: None,
            correctness: None,
            peak_rss_bytes: None,
            floor_multiple: None,
            driver_cpu_s: None,
            sluice_warnings: 0,
            sluice_warning_samples: vec![],
            sluice_metrics: vec![],
            exit: String::new(),
        }
    }
}

/// Settings of one run.
#[derive(Debug, Clone)]
pub struct RunSettings {
    pub sluice: PathBuf,
    pub duration: Duration,
    pub warmup: Duration,
    pub connections: usize,
    pub tenant: String,
    pub ticks: u64,
    /// YAML appended to every configuration (the `wal` section of `--acks`).
    pub extra_yaml: String,
}

/// Runs one configuration with one format against a fresh sluice and receiver (and for
/// `chain-fanout` a fresh SeaweedFS for the archive). For the chains, the receiver looks for
/// `secrets` (every secret string of the workload) in every line.
pub async fn run_variant(
    settings: &RunSettings,
    config: &str,
    bodies: Arc<Bodies>,
    secrets: &[String],
) -> anyhow::Result<Row> {
    let format = bodies.format;
    let is_chain = config != "passthrough";
    let receiver = Receiver::start(if is_chain { secrets } else { &[] })?;
    let loki_url = receiver.url();
    let mut s3 = if config == "chain-fanout" {
        Some(S3Server::try_start(chain::ARCHIVE_BUCKET).await.map_err(|e| anyhow::anyhow!("{e}"))?)
    } else {
        None
    };
    let archive =
        s3.as_ref().map(|s3| ArchiveTarget { url: s3.url(chain::ARCHIVE_PREFIX), s3: s3.s3_config() });
    let mut yaml =
        chain::config_yaml(config, &loki_url, archive.as_ref()).map_err(|e| anyhow::anyhow!("{e}"))?;
    yaml.push_str(&settings.extra_yaml);
    let parsed = sluice::config::Config::parse(&yaml, |_| None).map_err(|e| anyhow::anyhow!("{e}"))?;
    chain::check(config, &parsed, &loki_url, archive.as_ref())
        .map_err(|e| anyhow::anyhow!("configuration {config}: {e}"))?;
    let control = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build()?;
    let mut sluice = SluiceProcess::start(&settings.sluice, &yaml, &control).await?;
    let pid = sluice.pid().to_string();
    let driver_cpu0 = procfs::cpu_seconds("self", settings.ticks)?;
    let target = Arc::new(Target {
        url: sluice.url("/loki/api/v1/push"),
        tenant: settings.tenant.clone(),
        bodies: Arc::clone(&bodies),
    });
    let clients = clients(settings.connections)?;
    let mut sent = PushStats::default();

    // Warm-up: connections, allocator, sink batches, plugin instances; counted for correctness
    // only.
    let (warm, _) = max_rate(&target, &clients, settings.warmup).await;
    sent.merge(warm);
    settle(&control, &sluice, &receiver).await;

    // a. Max rate.
    let cpu0 = procfs::cpu_seconds(&pid, settings.ticks)?;
    let before = receiver.totals();
    let (max_stats, elapsed) = max_rate(&target, &clients, settings.duration).await;
    let settled = settle(&control, &sluice, &receiver).await;
    let cpu1 = procfs::cpu_seconds(&pid, settings.ticks)?;
    let after = receiver.totals();
    let delivered = after.entries - before.entries;
    let seconds = elapsed.as_secs_f64();
    let cpu_s = cpu1 - cpu0;
    let per_m = |lines: u64| if lines > 0 { cpu_s / lines as f64 * 1e6 } else { f64::NAN };
    let max = MaxRate {
        seconds,
        lines_per_s: delivered as f64 / seconds,
        mb_per_s: (after.line_bytes - before.line_bytes) as f64 / seconds / 1e6,
        sent_lines_per_s: max_stats.entries_ok as f64 / seconds,
        cpu_s,
        cpu_s_per_m_lines: per_m(max_stats.entries_ok),
        cpu_s_per_m_delivered: per_m(delivered),
        cores_busy: cpu_s / seconds,
        sent_entries: max_stats.entries_ok,
        delivered_entries: delivered,
        pushes: max_stats.clone(),
        settled,
    };
    sent.merge(max_stats);

    // b. Half rate (of what was sent), open loop.
    let target_lines = max.sent_lines_per_s / 2.0;
    let half = if target_lines > 0.0 {
        let before = receiver.totals();
        let (stats, elapsed) =
            paced(&target, &clients, settings.duration, target_lines / bodies.mean_entries()).await;
        let settled = settle(&control, &sluice, &receiver).await;
        let delivered = receiver.totals().entries - before.entries;
        let half = HalfRate {
            target_lines_per_s: target_lines,
            achieved_lines_per_s: stats.entries_ok as f64 / elapsed.as_secs_f64(),
            delivered_lines_per_s: delivered as f64 / elapsed.as_secs_f64(),
            latency: Latencies::of(stats.latencies_us.clone()),
            pushes: stats.clone(),
            settled,
        };
        sent.merge(stats);
        Some(half)
    } else {
        None
    };

    // c. Correctness over the whole variant.
    let received: Counts = receiver.totals();
    let mut correctness = Correctness {
        entries_sent: sent.entries_ok,
        entries_expected: if is_chain { sent.kept_ok } else { sent.entries_ok },
        entries_received: received.entries,
        line_bytes_sent: sent.line_bytes_ok,
        line_bytes_received: received.line_bytes,
        line_bytes_compared: !is_chain,
        bad_requests: receiver.bad_requests(),
        secrets_checked: is_chain && !secrets.is_empty(),
        lines_with_secret: received.lines_with_secret,
        secrets_found: receiver.found_secrets(),
        archive: None,
        archive_error: None,
        ok: false,
    };

    let peak_rss = procfs::peak_rss_bytes(&pid).ok();
    let metrics = interesting_metrics(&control, &sluice).await;
    let driver_cpu = procfs::cpu_seconds("self", settings.ticks)? - driver_cpu0;
    let exit = sluice.stop(STOP_TIMEOUT).await;
    let (warnings, samples) = sluice.warnings(5);
    // d. The archive, complete once sluice has exited: the objects it sealed at shutdown are
    // uploaded by then.
    if let Some(s3) = s3.as_mut() {
        let counted = match s3.try_store(chain::ARCHIVE_PREFIX) {
            Ok(store) => archive_counts(&store).await,
            Err(e) => Err(e),
        };
        match counted {
            Ok(counts) => correctness.archive = Some(counts),
            Err(e) => correctness.archive_error = Some(e),
        }
        s3.stop().await;
    }
    let problems = correctness.problems();
    correctness.ok = problems.is_empty();
    let status =
        if problems.is_empty() { "ok".to_string() } else { format!("failed: {}", problems.join(", ")) };
    Ok(Row {
        config: config.into(),
        format,
        status,
        max_rate: Some(max),
        half_rate: half,
        correctness: Some(correctness),
        peak_rss_bytes: peak_rss,
        floor_multiple: None,
        driver_cpu_s: Some(driver_cpu),
        sluice_warnings: warnings,
        sluice_warning_samples: samples,
        sluice_metrics: metrics,
        exit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_know_what_the_chain_keeps_of_each_push() {
        let prepared = prepare(2, 4, &[BodyFormat::Protobuf]);
        let pb = &prepared.bodies[&BodyFormat::Protobuf];
        assert_eq!(pb.kept.len(), 4);
        for (kept, entries) in pb.kept.iter().zip(&pb.entries) {
            // The chain drops ~90% of the structured DEBUG lines (~14% of all): some, not many.
            assert!(kept < entries && *kept > entries * 8 / 10, "{kept} of {entries}");
        }
        assert!(!prepared.secrets.is_empty());
    }

    #[test]
    fn correctness_names_every_problem() {
        let good = Correctness {
            entries_sent: 100,
            entries_expected: 87,
            entries_received: 87,
            line_bytes_sent: 1000,
            line_bytes_received: 700,
            line_bytes_compared: false,
            bad_requests: 0,
            secrets_checked: true,
            lines_with_secret: 0,
            secrets_found: vec![],
            archive: Some(ArchiveCounts { records: 87, ..ArchiveCounts::default() }),
            archive_error: None,
            ok: true,
        };
        assert!(good.problems().is_empty());
        let bad = Correctness {
            entries_received: 88,
            line_bytes_compared: true,
            bad_requests: 1,
            lines_with_secret: 2,
            archive: Some(ArchiveCounts { records: 86, ..ArchiveCounts::default() }),
            archive_error: Some("list s3://b/p: refused".into()),
            ..good
        };
        assert_eq!(
            bad.problems(),
            [
                "88 entries received, 87 expected",
                "700 line bytes received, 1000 sent",
                "1 undecodable requests",
                "2 lines with a secret",
                "archive: list s3://b/p: refused",
                "86 archive records, 87 expected (Loki received 88)"
            ]
        );
    }

    #[tokio::test]
    async fn archive_counts_are_the_records_of_every_object() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("archive");
        let store = sluice::archive::store::open(
            root.to_str().expect("utf-8"),
            &sluice::config::S3Config::default(),
            &BTreeMap::new(),
        )
        .expect("local store");
        let put = |key: &str, bytes: Vec<u8>| {
            let objects = Arc::clone(&store.objects);
            let path = object_store::path::Path::from(key);
            async move { objects.put(&path, bytes.into()).await.expect("put") }
        };
        use object_store::ObjectStoreExt as _;
        let a = zstd::encode_all(&b"{\"line\":\"a\"}\n{\"line\":\"b\"}\n"[..], 3).expect("zstd");
        // Two frames in one object, as a spool appending to an object may write.
        let mut b = zstd::encode_all(&b"{\"line\":\"c\"}\n"[..], 3).expect("zstd");
        b.extend(zstd::encode_all(&b"{\"line\":\"d\"}\n{\"line\":\"e\"}\n"[..], 3).expect("zstd"));
        let size = (a.len() + b.len()) as u64;
        put("tenant=t/dt=2026-01-01/hour=00/1-x-0.ndjson.zst", a).await;
        put("tenant=t/dt=2026-01-01/hour=01/2-x-1.ndjson.zst", b).await;
        put(sluice::archive::store::CHECK_OBJECT, b"sluice checks\n".to_vec()).await;
        let counts = archive_counts(&store).await.expect("counts");
        assert_eq!((counts.objects, counts.records, counts.compressed_bytes), (2, 5, size));
        assert!((counts.bytes_per_entry - size as f64 / 5.0).abs() < 1e-9);

        put("tenant=t/dt=2026-01-01/hour=02/3-x-2.ndjson.zst", b"not zstd\n".to_vec()).await;
        let error = archive_counts(&store).await.expect_err("not zstd");
        assert!(error.contains("3-x-2.ndjson.zst: not zstd NDJSON"), "{error}");
    }

    #[test]
    fn bodies_and_floor_cover_the_same_entries() {
        let prepared = prepare(1, 3, &[BodyFormat::Protobuf, BodyFormat::JsonGzip]);
        let pb = &prepared.bodies[&BodyFormat::Protobuf];
        let js = &prepared.bodies[&BodyFormat::JsonGzip];
        assert_eq!(pb.entries, js.entries);
        assert_eq!(prepared.summary.entries as u64, pb.entries.iter().sum::<u64>());
        let floor = floor(pb, procfs::clock_ticks(), Duration::ZERO).expect("floor");
        assert_eq!(floor.lines, 3000);
    }
}
