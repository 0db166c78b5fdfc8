//! Recovery after `kill -9` with a large write-ahead log: with Loki down, push the reference
//! workload into the real `sluice` until its log holds `--log-size` bytes, kill it with SIGKILL,
//! bring Loki back (the counting receiver) and start sluice again on the same log; measure how
//! long until it is ready, how long until every acknowledged entry has arrived, and its CPU time
//! and peak memory meanwhile. Writes `benches/results/<date>-wal-recovery.{md,json}`.
//!
//! `cargo build --release -p sluice -p sluice-benches && target/release/wal_recovery`
//!
//! Both runs share the log through `wal.dir` (a temp dir of this program), since each
//! [`SluiceProcess`] has its own data dir; the log, segments and cursors, is all the state a
//! restart recovers from. Loki is "down" as a URL nothing listens on and "back" as the
//! receiver's URL for the same sink name, `loki`: the log's records and cursors name the sink,
//! not its URL.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytesize::ByteSize;
use clap::Parser;
use serde::Serialize;

use sluice_benches::driver::{self, Bodies, BodyFormat};
use sluice_benches::procfs;
use sluice_benches::receiver::Receiver;
use sluice_benches::server::SluiceProcess;
use sluice_benches::workload::rfc3339_micros;

/// Distinct pushes generated and cycled through, as the load driver's default.
const DISTINCT_PUSHES: usize = 300;
const TENANT: &str = "bench";
/// `wal.max_size` is `--log-size` plus this, so the fill never meets a full log (429).
const HEADROOM: u64 = 256 << 20;
/// The fill fails when the log has not grown for this long.
const FILL_STALL: Duration = Duration::from_secs(30);
/// The drain fails when the receiver has got nothing new for this long.
const DRAIN_STALL: Duration = Duration::from_secs(60);
/// Once everything has arrived, the count must stay still this long before duplicates are
/// counted (redeliveries still in flight), waiting at most `QUIET_TIMEOUT`.
const QUIET: Duration = Duration::from_secs(1);
const QUIET_TIMEOUT: Duration = Duration::from_secs(15);
/// As the load driver: longer than sluice's own shutdown timeout (30 s).
const STOP_TIMEOUT: Duration = Duration::from_secs(45);

/// Measures sluice's recovery after `kill -9` with a large write-ahead log: time to ready, time
/// until every acknowledged entry is delivered, CPU and peak RSS of the restarted sluice.
#[derive(Debug, Parser)]
#[command(name = "wal_recovery")]
struct Args {
    /// Size of the log (sum of its segment files) when sluice is killed.
    #[arg(long, default_value = "1GiB")]
    log_size: ByteSize,
    /// Concurrent keep-alive connections pushing during the fill.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// The sluice binary. Default: `sluice` beside this program (target/release/sluice).
    #[arg(long)]
    sluice: Option<PathBuf>,
    /// Workload seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the table only; write nothing under benches/results.
    #[arg(long)]
    no_write: bool,
}

/// The fill: pushes answered 204 before the kill.
#[derive(Debug, Clone, Default, Serialize)]
struct Fill {
    seconds: f64,
    pushes: u64,
    entries: u64,
    line_bytes: u64,
    /// Segment bytes on disk after the kill, and the segment files.
    wal_bytes_at_kill: u64,
    wal_segments_at_kill: usize,
    /// How the first sluice ended (must be by SIGKILL).
    killed: String,
}

/// The restart, timed from the spawn of the second sluice.
#[derive(Debug, Clone, Serialize)]
struct Recovery {
    /// Until `GET /ready` answered 200 (polled every 50 ms): log opened and recovered.
    ready_s: f64,
    /// sluice's own account of opening the log (its "write-ahead log opened" line).
    wal_open: Option<serde_json::Value>,
    /// Until the receiver had counted every acknowledged entry.
    delivered_s: f64,
    /// Acknowledged entries and their line bytes (MB, 10^6) per second of `delivered_s`.
    entries_per_s: f64,
    mb_per_s: f64,
    /// What the receiver counted once its count stayed still after `delivered_s`.
    entries_received: u64,
    line_bytes_received: u64,
    /// `entries_received - entries acknowledged`: redeliveries (the receiver does not dedupe).
    duplicates: u64,
    bad_requests: u64,
    /// sluice's user+system CPU seconds from spawn to ready, and from spawn to delivered.
    cpu_s_to_ready: f64,
    cpu_s_to_delivered: f64,
    /// sluice's VmHWM when everything was delivered.
    peak_rss_bytes: u64,
    /// This program (pushes nothing now; the receiver runs in it) over the same span.
    driver_cpu_s: f64,
    /// Segment bytes left on disk once the count stayed still.
    wal_bytes_after: u64,
    sluice_warnings: usize,
    sluice_warning_samples: Vec<String>,
    /// How the second sluice exited after SIGTERM.
    exit: String,
}

#[derive(Debug, Clone, Serialize)]
struct Report {
    finished_at: String,
    commit: Option<String>,
    command: String,
    cores: usize,
    loadavg_before: String,
    seed: u64,
    connections: usize,
    distinct_pushes: usize,
    mean_entries_per_push: f64,
    mean_body_bytes: f64,
    log_size_target: u64,
    wal_max_size: u64,
    fill: Fill,
    recovery: Recovery,
    /// `ok`, or `failed: …`.
    status: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.connections == 0 || args.log_size.as_u64() == 0 {
        bail!("--connections and --log-size must be positive");
    }
    let sluice = sluice_benches::server::sluice_binary(args.sluice.as_deref())?;
    let ticks = procfs::clock_ticks();
    let loadavg_before = procfs::loadavg();

    eprintln!("generating {DISTINCT_PUSHES} pushes (seed {})…", args.seed);
    let prepared = driver::prepare(args.seed, DISTINCT_PUSHES, &[BodyFormat::Protobuf]);
    let bodies = Arc::clone(prepared.bodies.get(&BodyFormat::Protobuf).context("protobuf bodies")?);

    // One thread, as the load driver: the cores are sluice's.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (fill, recovery) = runtime.block_on(run(&args, &sluice, &bodies, ticks))?;

    let mut problems = Vec::new();
    if recovery.entries_received < fill.entries {
        problems
            .push(format!("{} entries received, {} acknowledged", recovery.entries_received, fill.entries));
    }
    if recovery.line_bytes_received < fill.line_bytes {
        problems.push(format!(
            "{} line bytes received, {} acknowledged",
            recovery.line_bytes_received, fill.line_bytes
        ));
    }
    if recovery.bad_requests > 0 {
        problems.push(format!("{} undecodable requests", recovery.bad_requests));
    }
    let now_ns =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let finished_at = rfc3339_micros(now_ns as i64)[..19].to_string() + "Z";
    let report = Report {
        commit: sluice_benches::report::commit(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg_before,
        seed: args.seed,
        connections: args.connections,
        distinct_pushes: DISTINCT_PUSHES,
        mean_entries_per_push: bodies.mean_entries(),
        mean_body_bytes: bodies.mean_body(),
        log_size_target: args.log_size.as_u64(),
        wal_max_size: args.log_size.as_u64() + HEADROOM,
        fill,
        recovery,
        status: if problems.is_empty() { "ok".into() } else { format!("failed: {}", problems.join(", ")) },
        finished_at,
    };
    println!("{}", table(&report));
    if !args.no_write {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("results");
        let name = format!("{}-wal-recovery", &report.finished_at[..10]);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let (md, json) = (dir.join(format!("{name}.md")), dir.join(format!("{name}.json")));
        std::fs::write(&md, markdown(&report)).with_context(|| format!("writing {}", md.display()))?;
        std::fs::write(&json, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", json.display()))?;
        println!("written: {} and {}", md.display(), json.display());
    }
    if problems.is_empty() { Ok(()) } else { bail!("{}", report.status) }
}

/// Fill, kill, recover. Every child (both sluices, the receiver) and the log's temp dir are
/// dropped on the way out, whatever fails.
async fn run(args: &Args, bin: &Path, bodies: &Arc<Bodies>, ticks: u64) -> anyhow::Result<(Fill, Recovery)> {
    let log_dir = tempfile::Builder::new().prefix("sluice-wal-bench-").tempdir().context("temp dir")?;
    let wal_dir = log_dir.path().join("wal");
    let target = args.log_size.as_u64();
    let max_size = target + HEADROOM;
    let control = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build()?;

    // 1. Loki down: a port that was free a moment ago, with nothing listening on it.
    let down = format!("http://{}", TcpListener::bind("127.0.0.1:0")?.local_addr()?);
    let yaml = config_yaml(&down, &wal_dir, max_size)?;
    let mut first =
        SluiceProcess::start(bin, &yaml, &control).await.context("starting sluice with Loki down")?;
    eprintln!("filling the log to {} with Loki down ({down})…", args.log_size);
    let mut fill = match fill(&first, bodies, args.connections, &wal_dir, target).await {
        Ok(fill) => fill,
        Err(e) => bail!("{e:#}\nsluice's log (last lines):\n{}", first.logs_tail(20)),
    };

    // 2. kill -9; `stop` then only reaps it (its SIGTERM finds a dead process).
    let pid = first.pid().to_string();
    let killed = Command::new("kill").args(["-KILL", &pid]).status().context("running kill -KILL")?;
    if !killed.success() {
        bail!("kill -KILL {pid} failed: {killed}");
    }
    fill.killed = first.stop(STOP_TIMEOUT).await;
    if !fill.killed.contains("signal: 9") {
        bail!("sluice was to die of SIGKILL but ended so: {}", fill.killed);
    }
    drop(first);
    (fill.wal_bytes_at_kill, fill.wal_segments_at_kill) = wal_size(&wal_dir)?;
    eprintln!(
        "killed with {} in {} segments; {} entries acknowledged",
        ByteSize::b(fill.wal_bytes_at_kill),
        fill.wal_segments_at_kill,
        fill.entries
    );

    // 3. Loki back, sluice again on the same log.
    let receiver = Receiver::start(&[])?;
    let yaml = config_yaml(&receiver.url(), &wal_dir, max_size)?;
    let driver_cpu0 = procfs::cpu_seconds("self", ticks)?;
    let spawned = Instant::now();
    let mut second =
        SluiceProcess::start(bin, &yaml, &control).await.context("restarting sluice on the log")?;
    let ready = spawned.elapsed();
    let pid = second.pid().to_string();
    let cpu_ready = procfs::cpu_seconds(&pid, ticks)?;
    eprintln!("ready after {ready:.2?}; draining…");

    let (mut last, mut moved_at) = (0, Instant::now());
    loop {
        let got = receiver.totals().entries;
        if got >= fill.entries {
            break;
        }
        if got > last {
            (last, moved_at) = (got, Instant::now());
        } else if moved_at.elapsed() > DRAIN_STALL {
            bail!(
                "the receiver has {got} of the {} acknowledged entries and got none for {DRAIN_STALL:?}\nsluice's log (last lines):\n{}",
                fill.entries,
                second.logs_tail(20)
            );
        }
        if !alive(&pid) {
            bail!(
                "sluice exited while draining ({got} of {} entries delivered)\nsluice's log (last lines):\n{}",
                fill.entries,
                second.logs_tail(20)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let delivered = spawned.elapsed();
    let cpu_delivered = procfs::cpu_seconds(&pid, ticks)?;
    let peak_rss_bytes = procfs::peak_rss_bytes(&pid)?;
    let driver_cpu_s = procfs::cpu_seconds("self", ticks)? - driver_cpu0;

    // Redeliveries may still be on their way: count once the receiver is quiet.
    let quiet_deadline = Instant::now() + QUIET_TIMEOUT;
    let (mut last, mut moved_at) = (receiver.totals().entries, Instant::now());
    while moved_at.elapsed() < QUIET && Instant::now() < quiet_deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let got = receiver.totals().entries;
        if got != last {
            (last, moved_at) = (got, Instant::now());
        }
    }
    let received = receiver.totals();
    let (wal_bytes_after, _) = wal_size(&wal_dir)?;
    let (sluice_warnings, sluice_warning_samples) = second.warnings(5);
    let wal_open = wal_open_line(&second.stderr_path());
    let exit = second.stop(STOP_TIMEOUT).await;
    let seconds = delivered.as_secs_f64();
    let recovery = Recovery {
        ready_s: ready.as_secs_f64(),
        wal_open,
        delivered_s: seconds,
        entries_per_s: fill.entries as f64 / seconds,
        mb_per_s: fill.line_bytes as f64 / 1e6 / seconds,
        entries_received: received.entries,
        line_bytes_received: received.line_bytes,
        duplicates: received.entries.saturating_sub(fill.entries),
        bad_requests: receiver.bad_requests(),
        cpu_s_to_ready: cpu_ready,
        cpu_s_to_delivered: cpu_delivered,
        peak_rss_bytes,
        driver_cpu_s,
        wal_bytes_after,
        sluice_warnings,
        sluice_warning_samples,
        exit,
    };
    Ok((fill, recovery))
}

/// The Loki sink only (`loki`, as the log's records name it), the log in `wal_dir`, bodies up
/// to 64 MiB as the load driver's configurations; checked by sluice's own parser.
fn config_yaml(loki_url: &str, wal_dir: &Path, max_size: u64) -> anyhow::Result<String> {
    let dir = serde_json::to_string(wal_dir.to_str().context("the temp dir is not UTF-8")?)?;
    let yaml = format!(
        "server:\n  max_body_size: 64MiB\nwal:\n  dir: {dir}\n  max_size: {max_size}\nsinks:\n  loki:\n    type: loki\n    url: {loki_url}\n"
    );
    let parsed = sluice::config::Config::parse(&yaml, |_| None).map_err(|e| anyhow::anyhow!("{e}"))?;
    if !sluice::config::WalConfig::in_use(&parsed) || parsed.wal.max_size.as_u64() != max_size {
        bail!("the configuration does not use a write-ahead log of {max_size} bytes:\n{yaml}");
    }
    Ok(yaml)
}

/// Pushes the bodies back to back from `connections` connections until the log holds `target`
/// bytes; every push sent has been answered when it returns, so the entries answered 204 are
/// exactly those acknowledged before the kill. Any other answer ends the fill with an error.
async fn fill(
    sluice: &SluiceProcess,
    bodies: &Arc<Bodies>,
    connections: usize,
    wal_dir: &Path,
    target: u64,
) -> anyhow::Result<Fill> {
    let url = sluice.url("/loki/api/v1/push");
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicUsize::new(0));
    let mut pushers = tokio::task::JoinSet::new();
    for client in driver::clients(connections)? {
        let (url, bodies, stop, next) =
            (url.clone(), Arc::clone(bodies), Arc::clone(&stop), Arc::clone(&next));
        pushers.spawn(async move {
            let mut acked = Fill::default();
            while !stop.load(Ordering::Relaxed) {
                let i = next.fetch_add(1, Ordering::Relaxed) % bodies.bodies.len();
                let sent = client
                    .post(&url)
                    .header("X-Scope-OrgID", TENANT)
                    .header("Content-Type", "application/x-protobuf")
                    .body(bodies.bodies[i].clone())
                    .send()
                    .await;
                let answer = match sent {
                    Ok(response) => {
                        let status = response.status();
                        (status, response.text().await.unwrap_or_default())
                    }
                    Err(e) => {
                        stop.store(true, Ordering::Relaxed);
                        return Err(format!("a push failed: {e}"));
                    }
                };
                if answer.0.as_u16() != 204 {
                    stop.store(true, Ordering::Relaxed);
                    return Err(format!("sluice answered a push {}: {}", answer.0, answer.1.trim()));
                }
                acked.pushes += 1;
                acked.entries += bodies.entries[i];
                acked.line_bytes += bodies.line_bytes[i];
            }
            Ok(acked)
        });
    }

    let started = Instant::now();
    let (mut size, mut grew_at, mut shown) = (0, Instant::now(), Instant::now());
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = wal_size(wal_dir)?.0;
        if now >= target {
            break;
        }
        if now > size {
            (size, grew_at) = (now, Instant::now());
        } else if grew_at.elapsed() > FILL_STALL {
            bail!(
                "the log has stayed at {} (of {}) for {FILL_STALL:?}",
                ByteSize::b(size),
                ByteSize::b(target)
            );
        }
        if shown.elapsed() > Duration::from_secs(5) {
            eprintln!("  log at {} of {}", ByteSize::b(now), ByteSize::b(target));
            shown = Instant::now();
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut fill = Fill::default();
    let mut failure = None;
    while let Some(joined) = pushers.join_next().await {
        match joined {
            Ok(Ok(acked)) => {
                fill.pushes += acked.pushes;
                fill.entries += acked.entries;
                fill.line_bytes += acked.line_bytes;
            }
            Ok(Err(e)) => failure = failure.or(Some(e)),
            Err(e) => failure = failure.or(Some(format!("a pusher panicked: {e}"))),
        }
    }
    fill.seconds = started.elapsed().as_secs_f64();
    if let Some(e) = failure {
        bail!(
            "{e}\n(the log held {} of wal.max_size {} after {} pushes answered 204)",
            ByteSize::b(wal_size(wal_dir)?.0),
            ByteSize::b(target + HEADROOM),
            fill.pushes
        );
    }
    Ok(fill)
}

/// Bytes of the log's segment files (`*.seg`), and how many there are.
fn wal_size(dir: &Path) -> anyhow::Result<(u64, usize)> {
    let mut total = (0, 0);
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().ends_with(".seg") {
            // A segment removed between listing and stat is simply no longer there.
            if let Ok(meta) = entry.metadata() {
                total.0 += meta.len();
                total.1 += 1;
            }
        }
    }
    Ok(total)
}

/// False once `pid` has exited: gone, or a zombie not yet reaped by its [`SluiceProcess`].
fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| !s[i + 1..].trim_start().starts_with('Z')))
        .unwrap_or(false)
}

/// The fields of sluice's "write-ahead log opened" line (JSON logs): segments, bytes,
/// undelivered bytes, and how long opening took.
fn wal_open_line(stderr: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(stderr).ok()?;
    let line = text.lines().find(|l| l.contains("write-ahead log opened"))?;
    let mut value: serde_json::Value = serde_json::from_str(line).ok()?;
    let fields = value.as_object_mut()?;
    fields.retain(|k, _| ["segments", "bytes", "undelivered_bytes", "took"].contains(&k.as_str()));
    Some(value)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn table(r: &Report) -> String {
    let (f, c) = (&r.fill, &r.recovery);
    format!(
        "| log at kill | segments | entries acked | fill s | ready s | all delivered s | lines/s | MB/s | duplicates | CPU s to ready | CPU s to delivered | peak RSS MiB | status |\n\
         |--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|\n\
         | {:.0} MiB | {} | {} | {:.1} | {:.2} | {:.2} | {:.0} | {:.1} | {} | {:.2} | {:.2} | {:.0} | {} |\n",
        mib(f.wal_bytes_at_kill),
        f.wal_segments_at_kill,
        f.entries,
        f.seconds,
        c.ready_s,
        c.delivered_s,
        c.entries_per_s,
        c.mb_per_s,
        c.duplicates,
        c.cpu_s_to_ready,
        c.cpu_s_to_delivered,
        mib(c.peak_rss_bytes),
        r.status
    )
}

fn markdown(r: &Report) -> String {
    let c = &r.recovery;
    let mut md = format!("# sluice WAL recovery after kill -9 — {}\n\n", r.finished_at);
    md += &format!("- command: `{}`\n", r.command);
    md += &format!("- commit: {}\n", r.commit.as_deref().unwrap_or("unknown"));
    md += &format!(
        "- machine: {} cores (load average before the run: {}); the receiver shares them with sluice\n",
        r.cores, r.loadavg_before
    );
    md += &format!(
        "- workload: seed {}, {} distinct pushes of {:.0} entries on average (cycled), protobuf + snappy, mean body {:.0} KiB; {} connections during the fill\n",
        r.seed,
        r.distinct_pushes,
        r.mean_entries_per_push,
        r.mean_body_bytes / 1024.0,
        r.connections
    );
    md += &format!(
        "- sluice: one Loki sink, server.max_body_size 64MiB, wal.max_size {} (log size {} + 256 MiB), the log's defaults otherwise (ack on_disk, fsync interval 1s, segments 64MiB, read_ahead 16MiB)\n",
        ByteSize::b(r.wal_max_size),
        ByteSize::b(r.log_size_target)
    );
    if let Some(open) = &c.wal_open {
        md += &format!("- sluice's \"write-ahead log opened\" line on restart: `{open}`\n");
    }
    md += "\n";
    md += &table(r);
    md += "\nWith Loki down (a URL nothing listens on), the workload is pushed at max rate until the log's \
           segment files hold the target size; every push sent has been answered before sluice is killed \
           with SIGKILL, so the entries answered 204 are exactly those acknowledged. Then the counting \
           receiver starts (Loki back) and sluice starts again on the same log. ready s: from spawn until \
           GET /ready answered 200 (polled every 50 ms: opening and recovering the log); all delivered s: \
           from spawn until the receiver had counted every acknowledged entry; lines/s and MB/s (10^6 bytes \
           of lines) are acknowledged entries over that time; duplicates: entries counted beyond those \
           acknowledged, once the count stayed still for 1 s (at-least-once; the receiver does not dedupe); \
           CPU: sluice's user+system seconds from spawn; peak RSS: sluice's VmHWM when all was \
           delivered.\n";
    md += &format!(
        "\nNotes:\n- log left on disk after the drain: {}\n- sluice after SIGTERM: {}; {} WARN/ERROR log lines\n- this program's CPU (the receiver) from spawn to delivered: {:.2} s\n",
        ByteSize::b(c.wal_bytes_after),
        c.exit,
        c.sluice_warnings,
        c.driver_cpu_s
    );
    md
}
