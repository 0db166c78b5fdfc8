//! The local file sink: NDJSON files under a directory, partitioned by tenant, date and hour of
//! the entries' timestamps (UTC):
//!
//! ```text
//! <dir>/tenant=<tenant>/dt=<YYYY-MM-DD>/hour=<HH>/<unix-ms>-<seq>.ndjson
//! ```
//!
//! One JSON object per line and entry: `{"ts":"<ns>","time":"<RFC 3339>","labels":{…},
//! "structured_metadata":{…},"line":"…"}`. `ts` is a string because nanoseconds exceed the
//! integers JSON readers keep exactly. A file is written under a `.tmp` name and renamed when
//! complete, so a reader never sees half a file. This sink serves the embedded default; the
//! object-store archive sink replaces it for production archives.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::mpsc;

use crate::config::FileSinkConfig;
use crate::model::{Batch, Entry, LabelSet};
use crate::sink::{Batcher, Pending, SinkInput};

/// Writes batches as NDJSON files under a directory.
#[derive(Debug)]
pub struct FileSink {
    name: String,
    dir: PathBuf,
    batcher: Batcher,
}

/// One entry of the archive, as written (and as `sluice plugin test --format ndjson` prints it).
#[derive(Serialize)]
pub(crate) struct Record<'a> {
    ts: String,
    time: String,
    labels: BTreeMap<&'a str, &'a str>,
    structured_metadata: BTreeMap<&'a str, &'a str>,
    line: &'a str,
}

/// Makes file names unique within the process; the millisecond clock separates processes.
static SEQUENCE: AtomicU64 = AtomicU64::new(0);

impl FileSink {
    /// Creates the directory if needed and checks that it is writable.
    pub fn new(name: &str, dir: PathBuf, config: &FileSinkConfig) -> Result<Self, String> {
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create directory {}: {e}", dir.display()))?;
        let probe = dir.join(".sluice-write-test");
        std::fs::write(&probe, b"").map_err(|e| format!("cannot write to {}: {e}", dir.display()))?;
        let _ = std::fs::remove_file(probe);
        let batch_size = usize::try_from(config.batch_size.as_u64()).unwrap_or(usize::MAX);
        Ok(Self { name: name.to_string(), dir, batcher: Batcher::new(batch_size, config.batch_wait) })
    }

    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<SinkInput>) {
        loop {
            let deadline = self.batcher.next_deadline();
            let wait = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                input = rx.recv() => match input {
                    Some(input) => {
                        for full in self.batcher.push(input) {
                            self.write(full).await;
                        }
                    }
                    None => break,
                },
                () = wait => {
                    for due in self.batcher.due(tokio::time::Instant::now()) {
                        self.write(due).await;
                    }
                }
            }
        }
        for rest in self.batcher.drain() {
            self.write(rest).await;
        }
    }

    /// Writes one batch, retrying with backoff while the disk refuses (the charge stays held,
    /// so ingest answers 429 meanwhile instead of losing data).
    async fn write(&self, pending: Pending) {
        let Pending { batch, entries, charges, .. } = pending;
        let batch = std::sync::Arc::new(batch);
        let mut delay = Duration::from_millis(100);
        loop {
            let (dir, b) = (self.dir.clone(), std::sync::Arc::clone(&batch));
            let result = tokio::task::spawn_blocking(move || write_partitions(&dir, &b))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
            match result {
                Ok(bytes) => {
                    metrics::counter!("sluice_sink_sent_entries_total", "sink" => self.name.clone())
                        .increment(entries as u64);
                    metrics::counter!("sluice_sink_sent_bytes_total", "sink" => self.name.clone())
                        .increment(bytes);
                    break;
                }
                Err(e) => {
                    metrics::counter!("sluice_sink_retries_total", "sink" => self.name.clone(), "reason" => "io_error")
                        .increment(1);
                    tracing::warn!(sink = %self.name, error = %e, retry_in = ?delay, "cannot write archive file");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        }
        drop(charges);
    }
}

/// Writes a batch as one file per hour partition; returns the bytes written.
fn write_partitions(dir: &Path, batch: &Batch) -> std::io::Result<u64> {
    let mut partitions: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for stream in &batch.streams {
        for entry in &stream.entries {
            let (date, hour, time) = utc_parts(entry.timestamp_ns);
            let key = format!("tenant={}/dt={date}/hour={hour:02}", batch.tenant);
            let out = partitions.entry(key).or_default();
            serde_json::to_writer(&mut *out, &record(&stream.labels, entry, time))?;
            out.push(b'\n');
        }
    }
    let mut written = 0;
    let millis = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    for (key, data) in partitions {
        let folder = dir.join(key);
        std::fs::create_dir_all(&folder)?;
        let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let name = format!("{millis}-{}-{seq:06}.ndjson", std::process::id());
        let tmp = folder.join(format!(".{name}.tmp"));
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&data)?;
        file.sync_data()?;
        std::fs::rename(&tmp, folder.join(name))?;
        written += data.len() as u64;
    }
    Ok(written)
}

/// The archive record of `entry`; `time` is its timestamp as [`rfc3339`] writes it.
pub(crate) fn record<'a>(labels: &'a LabelSet, entry: &'a Entry, time: String) -> Record<'a> {
    Record {
        ts: entry.timestamp_ns.to_string(),
        time,
        labels: labels.pairs().iter().map(|(n, v)| (n.as_str(), v.as_str())).collect(),
        structured_metadata: entry.metadata.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect(),
        line: &entry.line,
    }
}

/// RFC 3339 with nanoseconds, UTC (`1970-01-01T00:00:00.000000000Z` for times before 1970).
pub(crate) fn rfc3339(ns: i64) -> String {
    let t = if ns >= 0 { UNIX_EPOCH + Duration::from_nanos(ns as u64) } else { UNIX_EPOCH };
    humantime::format_rfc3339_nanos(t).to_string()
}

/// `(YYYY-MM-DD, hour, RFC 3339 with nanoseconds)` of a timestamp, in UTC.
fn utc_parts(ns: i64) -> (String, u32, String) {
    let time = rfc3339(ns);
    // `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`
    let date = time.get(..10).unwrap_or("1970-01-01").to_string();
    let hour = time.get(11..13).and_then(|h| h.parse().ok()).unwrap_or(0);
    (date, hour, time)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::Budget;
    use crate::model::Stream;
    use std::sync::Arc;

    #[test]
    fn utc_parts_of_a_known_instant() {
        // 2024-02-29T23:59:59.123456789Z
        let ns = 1_709_251_199_123_456_789;
        let (date, hour, time) = utc_parts(ns);
        assert_eq!(
            (date.as_str(), hour, time.as_str()),
            ("2024-02-29", 23, "2024-02-29T23:59:59.123456789Z")
        );
    }

    #[tokio::test]
    async fn writes_partitioned_ndjson_and_flushes_on_close() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = FileSinkConfig {
            path: None,
            batch_size: bytesize::ByteSize::mib(1),
            batch_wait: Duration::from_secs(60),
        };
        let sink = FileSink::new("local", dir.path().to_path_buf(), &config).expect("starts");
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(sink.run(rx));
        let labels = LabelSet::new(vec![("app".into(), "api".into())]);
        let hour = 3_600_000_000_000;
        let entries = vec![
            Entry {
                timestamp_ns: 1_709_251_199_000_000_000,
                line: "a \"quoted\"".into(),
                metadata: vec![("trace_id".into(), "t1".into())],
            },
            Entry { timestamp_ns: 1_709_251_199_000_000_000 + hour, line: "b".into(), metadata: vec![] },
        ];
        let budget = Budget::new(10, 10_000);
        let charge = Arc::new(budget.try_charge(2, 100).expect("fits"));
        let batch = Batch { tenant: "team-a".into(), streams: vec![Stream { labels, entries }] };
        tx.send(SinkInput { batch, charge }).expect("sink running");
        drop(tx);
        task.await.expect("sink exits after flushing");
        assert_eq!(budget.entries(), 0, "charge released after writing");

        let read = |part: &str| {
            let folder = dir.path().join(part);
            let files: Vec<_> =
                std::fs::read_dir(&folder).expect(part).map(|e| e.expect("entry").path()).collect();
            assert_eq!(files.len(), 1, "{files:?}");
            assert_eq!(files[0].extension().and_then(|e| e.to_str()), Some("ndjson"));
            std::fs::read_to_string(&files[0]).expect("readable")
        };
        let first: serde_json::Value =
            serde_json::from_str(read("tenant=team-a/dt=2024-02-29/hour=23").trim()).expect("json");
        assert_eq!(first["ts"], "1709251199000000000");
        assert_eq!(first["time"], "2024-02-29T23:59:59.000000000Z");
        assert_eq!(first["labels"]["app"], "api");
        assert_eq!(first["structured_metadata"]["trace_id"], "t1");
        assert_eq!(first["line"], "a \"quoted\"");
        let second: serde_json::Value =
            serde_json::from_str(read("tenant=team-a/dt=2024-03-01/hour=00").trim()).expect("json");
        assert_eq!(second["line"], "b");
    }
}
