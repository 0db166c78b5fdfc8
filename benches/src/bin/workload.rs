//! Writes pushes of the reference workload to a directory, one file per push:
//! `push-000000.pb.sz` (protobuf + raw snappy), `push-000000.json.gz` (Loki JSON + gzip) or
//! `push-000000.ndjson` (one JSON object per entry), plus `summary.json` (the mix).
//!
//! `cargo run --release -p sluice-benches --bin workload -- --seed 1 --pushes 10 --format protobuf --out /tmp/w`

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};

use sluice_benches::workload::{GenConfig, Generator, Summary};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Protobuf,
    JsonGzip,
    Ndjson,
}

/// Writes N pushes of the seeded reference workload (shared/BENCHMARK.md).
#[derive(Debug, Parser)]
#[command(name = "workload")]
struct Args {
    /// Seed: the same seed and --start-ns give the same bytes.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Number of pushes (about 1,000 entries each).
    #[arg(long, default_value_t = 10)]
    pushes: usize,
    /// Encoding of the files.
    #[arg(long, value_enum, default_value = "protobuf")]
    format: Format,
    /// Output directory (created).
    #[arg(long)]
    out: PathBuf,
    /// Timestamp of the first entry, nanoseconds since the epoch. Default: an hour ago (Loki
    /// refuses entries older than 7 days, so fixed times go stale).
    #[arg(long)]
    start_ns: Option<i64>,
    /// Entries per push.
    #[arg(long, default_value_t = 1000)]
    entries_per_push: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let start = args.start_ns.unwrap_or_else(|| {
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        now as i64 - 3_600_000_000_000
    });
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let config = GenConfig { entries_per_push: args.entries_per_push, ..GenConfig::default() };
    let mut generator = Generator::new(args.seed, start, config);
    let mut pushes = Vec::with_capacity(args.pushes);
    for i in 0..args.pushes {
        let push = generator.next_push();
        let workload = generator.workload();
        let (name, bytes) = match args.format {
            Format::Protobuf => (format!("push-{i:06}.pb.sz"), push.protobuf_snappy(workload)),
            Format::JsonGzip => (format!("push-{i:06}.json.gz"), push.json_gzip(workload)),
            Format::Ndjson => {
                let mut out = Vec::new();
                push.ndjson(workload, &mut out);
                (format!("push-{i:06}.ndjson"), out)
            }
        };
        let path = args.out.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        pushes.push(push);
    }
    let summary = Summary::of(&pushes);
    std::fs::write(args.out.join("summary.json"), serde_json::to_string_pretty(&summary)? + "\n")?;
    println!(
        "{} pushes, {} entries, {} line bytes (median line {} bytes) in {}",
        summary.pushes,
        summary.entries,
        summary.line_bytes,
        summary.median_line,
        args.out.display()
    );
    Ok(())
}
