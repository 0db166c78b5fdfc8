//! Replay throughput: writes the reference workload as an archive (the archive sink's own spool
//! writer, zstd NDJSON, the default key layout), then runs the real `sluice replay` from it into
//! the cheap loopback receiver, and reports entries per second, MB/s of lines and CPU seconds
//! of the replay process per million entries; the receiver must get every archived entry.
//!
//! `cargo build --release -p sluice -p sluice-benches && target/release/replay`

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;

use sluice::archive::key::KeyTemplate;
use sluice::config::{ArchiveFormat, Compression, Limits};
use sluice::decode::{BodyFormat, decode_push};
use sluice::sink::archive::spool::{Spool, SpoolConfig};
use sluice_benches::procfs;
use sluice_benches::receiver::Receiver;
use sluice_benches::workload::{GenConfig, Generator};

/// Measures `sluice replay` on an archive of the reference workload.
#[derive(Debug, Parser)]
#[command(name = "replay")]
struct Args {
    /// The sluice binary. Default: `sluice` beside this program (target/release/sluice).
    #[arg(long)]
    sluice: Option<PathBuf>,
    /// Reference pushes (about 1,000 entries each) in the archive.
    #[arg(long, default_value_t = 500)]
    pushes: usize,
    /// Workload seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// `--batch-size` of the replay.
    #[arg(long, default_value = "1MiB")]
    batch_size: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let sluice = sluice_benches::server::sluice_binary(args.sluice.as_deref())?;
    let dir = tempfile::Builder::new().prefix("sluice-replay-bench-").tempdir()?;
    let archive = dir.path().join("archive");
    let (entries, line_bytes, object_bytes) = write_archive(&archive, &dir.path().join("spool"), &args)?;
    println!(
        "archive: {entries} entries, {:.1} MB of lines, {:.1} MB in objects ({:.1} bytes per entry)",
        line_bytes as f64 / 1e6,
        object_bytes as f64 / 1e6,
        object_bytes as f64 / entries as f64
    );

    let receiver = Receiver::start(&[])?;
    let cpu_before = children_cpu_seconds()?;
    let started = Instant::now();
    let output = Command::new(&sluice)
        .arg("replay")
        .arg("--from")
        .arg(&archive)
        .arg("--to-loki")
        .arg(receiver.url())
        .arg("--batch-size")
        .arg(&args.batch_size)
        .arg("--checkpoint")
        .arg(dir.path().join("checkpoint.json"))
        .output()
        .context("run sluice replay")?;
    let elapsed = started.elapsed();
    let cpu = children_cpu_seconds()? - cpu_before;
    if !output.status.success() {
        bail!("sluice replay failed ({}):\n{}", output.status, String::from_utf8_lossy(&output.stderr));
    }
    let received = receiver.totals();
    if received.entries != entries {
        bail!("the receiver got {} entries of {entries}", received.entries);
    }
    let secs = elapsed.as_secs_f64().max(Duration::from_millis(1).as_secs_f64());
    println!(
        "replay: {entries} entries in {secs:.2} s: {:.0} entries/s, {:.1} MB/s of lines, {:.2} CPU s per million entries (user+sys of the replay process)",
        entries as f64 / secs,
        line_bytes as f64 / 1e6 / secs,
        cpu / (entries as f64 / 1e6)
    );
    Ok(())
}

/// Writes the archive; returns (entries, line bytes, object bytes).
fn write_archive(archive: &Path, spool_dir: &Path, args: &Args) -> anyhow::Result<(u64, u64, u64)> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos() as i64;
    // Entries within the last hours, inside Loki's default age window.
    let mut generator = Generator::new(args.seed, now - 3 * 3_600_000_000_000, GenConfig::default());
    let config = SpoolConfig {
        dir: spool_dir.to_path_buf(),
        template: KeyTemplate::parse("tenant={tenant}/dt={date}/hour={hour}").map_err(anyhow::Error::msg)?,
        format: ArchiveFormat::Ndjson,
        compression: Compression::Zstd,
        level: None,
        max_object_size: 64 << 20,
        max_object_age: Duration::from_secs(3600),
        max_open: 32,
        max_open_per_tenant: 32,
    };
    let (mut spool, _) = Spool::open(config)?;
    let tenant: Arc<str> = "bench".into();
    let (mut entries, mut line_bytes) = (0u64, 0u64);
    let mut sealed = Vec::new();
    let at = tokio::time::Instant::now();
    for _ in 0..args.pushes {
        let push = generator.next_push();
        let body = push.protobuf_snappy(generator.workload());
        let batch = decode_push(
            &body,
            BodyFormat::default(),
            Arc::clone(&tenant),
            &Limits::default(),
            100 << 20,
            now,
        )
        .map_err(|e| anyhow::anyhow!("{e:?}"))?
        .batch;
        entries += batch.entry_count() as u64;
        line_bytes += batch.line_bytes() as u64;
        sealed.extend(spool.write(&batch, None, at)?);
    }
    sealed.extend(spool.seal_all()?);
    let mut object_bytes = 0;
    for s in sealed {
        let target = archive.join(&s.key);
        std::fs::create_dir_all(target.parent().context("a key has a directory")?)?;
        std::fs::rename(&s.data, &target)?;
        object_bytes += s.bytes;
    }
    Ok((entries, line_bytes, object_bytes))
}

/// CPU seconds (user+sys) of this process's waited-for children, from /proc/self/stat.
fn children_cpu_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name (which may hold spaces) start at `state`, field 3;
    // cutime and cstime are fields 16 and 17.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("stat format")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(13).and_then(|f| f.parse().ok()).context("cutime")?;
    let ticks2: u64 = fields.get(14).and_then(|f| f.parse().ok()).context("cstime")?;
    Ok((ticks + ticks2) as f64 / procfs::clock_ticks() as f64)
}
