//! The results of a load run as a markdown table and as JSON, written to
//! `<out>/<name>.md` and `<out>/<name>.json` (default `benches/results/latest.*`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::driver::{Floor, Row};
use crate::workload::Summary;

/// Everything a run measured, with what is needed to compare runs.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// UTC time the run finished.
    pub finished_at: String,
    /// `git describe`-like commit of the work tree, `+dirty` when it has changes.
    pub commit: Option<String>,
    pub command: String,
    pub cores: usize,
    /// `/proc/loadavg` before the run: other work on the machine skews throughput and latency
    /// (CPU per line much less).
    pub loadavg_before: String,
    pub seed: u64,
    pub phase_seconds: f64,
    pub connections: usize,
    pub distinct_pushes: usize,
    pub mean_entries_per_push: f64,
    /// Mean body size per format, bytes.
    pub mean_body_bytes: Vec<(String, f64)>,
    pub workload: Summary,
    pub floor: Floor,
    pub rows: Vec<Row>,
}

fn opt(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.decimals$}"),
        _ => "–".into(),
    }
}

/// Thousands separators for a whole number.
fn thousands(v: f64) -> String {
    let n = v.round() as i64;
    let digits = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

impl Report {
    /// The table the driver prints and writes.
    pub fn table(&self) -> String {
        let mut t = String::new();
        t.push_str(
            "| config | format | lines/s | MB/s | CPU s / M lines sent | × floor | p50 ms @½ | p99 ms @½ | peak RSS MiB | 429s | entries sent → expected → received | lines w/ secret | status |\n",
        );
        t.push_str("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|\n");
        for r in &self.rows {
            let max = r.max_rate.as_ref();
            let lat = r.half_rate.as_ref().map(|h| &h.latency);
            let ms = |us: Option<u64>| us.map(|v| v as f64 / 1000.0);
            let n429 = max.map(|m| m.pushes.status_429).unwrap_or(0)
                + r.half_rate.as_ref().map_or(0, |h| h.pushes.status_429);
            let _ = writeln!(
                t,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.config,
                r.format.name(),
                max.map_or("–".into(), |m| thousands(m.lines_per_s)),
                opt(max.map(|m| m.mb_per_s), 1),
                opt(max.map(|m| m.cpu_s_per_m_lines), 2),
                opt(r.floor_multiple, 1),
                opt(lat.and_then(|l| ms(l.p50_us)), 1),
                opt(lat.and_then(|l| ms(l.p99_us)), 1),
                opt(r.peak_rss_bytes.map(|b| b as f64 / (1024.0 * 1024.0)), 0),
                if r.max_rate.is_some() { n429.to_string() } else { "–".into() },
                r.correctness.as_ref().map_or("–".into(), |c| format!(
                    "{} → {} → {}",
                    thousands(c.entries_sent as f64),
                    thousands(c.entries_expected as f64),
                    thousands(c.entries_received as f64)
                )),
                r.correctness
                    .as_ref()
                    .filter(|c| c.secrets_checked)
                    .map_or("–".into(), |c| thousands(c.lines_with_secret as f64)),
                r.status,
            );
        }
        t
    }

    /// The markdown document: context, the table, the floor, notes.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "# sluice load run — {}\n", self.finished_at);
        let _ = writeln!(md, "- command: `{}`", self.command);
        let _ = writeln!(md, "- commit: {}", self.commit.as_deref().unwrap_or("unknown"));
        let _ = writeln!(
            md,
            "- machine: {} cores (load average before the run: {}); driver and receiver share them with sluice; {} connections; phases of {:.0} s",
            self.cores, self.loadavg_before, self.connections, self.phase_seconds
        );
        let _ = writeln!(
            md,
            "- workload: seed {}, {} distinct pushes of {:.0} entries on average (cycled), median line {} bytes; mean body {}",
            self.seed,
            self.distinct_pushes,
            self.mean_entries_per_push,
            self.workload.median_line,
            self.mean_body_bytes
                .iter()
                .map(|(f, b)| format!("{f} {:.0} KiB", b / 1024.0))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let _ = writeln!(
            md,
            "- floor (snappy-decompress + prost-decode + prost-encode + snappy-compress, one thread, in process): {:.3} CPU s per million lines\n",
            self.floor.cpu_s_per_m_lines
        );
        md.push_str(&self.table());
        md.push_str(
            "\nlines/s and MB/s (10^6 bytes of uncompressed lines) are delivered at the receiver (Loki) during the \
             max-rate phase: for the chains, what is left after sampling; CPU is sluice's user+system time per million \
             lines sent (pushed and accepted) in that phase, whatever the chain dropped; × floor compares it with the \
             floor above; p50/p99 are push latencies at half the max (sent) rate, open loop; peak RSS is sluice's \
             VmHWM; 429s over both phases. Entries expected: all sent for passthrough (line bytes must match too), \
             those the reference chain keeps for the chains, whose received lines must hold none of the workload's \
             secrets. chain-fanout also writes every entry it delivers to the S3 archive sink (zstd NDJSON on a \
             local SeaweedFS), whose records, counted after sluice exits, must equal the entries expected too. See \
             benches/README.md.\n",
        );
        let mut notes: Vec<String> = self
            .rows
            .iter()
            .filter(|r| r.sluice_warnings > 0 || r.max_rate.as_ref().is_some_and(|m| m.pushes.errors() > 0))
            .map(|r| {
                format!(
                    "- {} / {}: {} WARN/ERROR log lines, {} failed pushes",
                    r.config,
                    r.format.name(),
                    r.sluice_warnings,
                    r.max_rate.as_ref().map_or(0, |m| m.pushes.errors())
                        + r.half_rate.as_ref().map_or(0, |h| h.pushes.errors())
                )
            })
            .collect();
        for r in &self.rows {
            if let Some(c) = r.correctness.as_ref().filter(|c| !c.secrets_found.is_empty()) {
                notes.push(format!(
                    "- {} / {}: secrets that reached Loki: {}",
                    r.config,
                    r.format.name(),
                    c.secrets_found.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
                ));
            }
        }
        for r in &self.rows {
            let Some(c) = r.correctness.as_ref() else { continue };
            if let Some(a) = &c.archive {
                notes.push(format!(
                    "- {} / {}: archive {} (SeaweedFS): {} records in {} object{}, {:.1} MB compressed, {:.1} bytes per entry",
                    r.config,
                    r.format.name(),
                    a.url,
                    thousands(a.records as f64),
                    a.objects,
                    if a.objects == 1 { "" } else { "s" },
                    a.compressed_bytes as f64 / 1e6,
                    a.bytes_per_entry
                ));
            }
            if let Some(e) = &c.archive_error {
                notes.push(format!(
                    "- {} / {}: the archive could not be read: {e}",
                    r.config,
                    r.format.name()
                ));
            }
        }
        if !notes.is_empty() {
            md.push_str("\nNotes:\n");
            md.push_str(&notes.join("\n"));
            md.push('\n');
        }
        md
    }

    /// Writes `<dir>/<name>.md` and `<dir>/<name>.json`; returns their paths.
    pub fn write(&self, dir: &Path, name: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
        std::fs::create_dir_all(dir)?;
        let md = dir.join(format!("{name}.md"));
        let json = dir.join(format!("{name}.json"));
        std::fs::write(&md, self.markdown())?;
        std::fs::write(&json, serde_json::to_string_pretty(self)? + "\n")?;
        Ok((md, json))
    }
}

/// The work tree's commit, `+dirty` with uncommitted changes; `None` outside git.
pub fn commit() -> Option<String> {
    let dir = env!("CARGO_MANIFEST_DIR");
    let out =
        std::process::Command::new("git").args(["-C", dir, "rev-parse", "--short", "HEAD"]).output().ok()?;
    let mut commit = String::from_utf8(out.stdout).ok()?.trim().to_string();
    if commit.is_empty() {
        return None;
    }
    let status =
        std::process::Command::new("git").args(["-C", dir, "status", "--porcelain"]).output().ok()?;
    if !status.stdout.is_empty() {
        commit.push_str("+dirty");
    }
    Some(commit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(1_234_567.0), "1,234,567");
        assert_eq!(thousands(-12_345.0), "-12,345");
    }
}
