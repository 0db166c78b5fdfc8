//! The checkpoint: what a replay has had confirmed by Loki, so that running the same command
//! again after an interruption continues where it stopped.
//!
//! It records the completed partitions (with the fingerprint of their object lists), and for
//! the partition in progress the number of its batches Loki confirmed. Batches are cut
//! deterministically (see [`super::plan`]), so a resumed run re-reads that partition and skips
//! exactly those batches. The file is rewritten after every confirmed batch, atomically (a
//! temporary file renamed over it), so a crash leaves the previous or the next state, never a
//! torn one. What was confirmed is never pushed again; the one batch in flight when the
//! process died may be (Loki ignores exact duplicates of what it stored).
//!
//! The default file is `.sluice-replay-<hash>.json` in the current directory, the hash of the
//! command's arguments ([`Job`]), so each distinct replay has its own. The resolved time range
//! and batch size are stored too: a resumed `--since 24h` keeps the first run's instants, or
//! the batches would not line up.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Bumped when the format changes incompatibly.
const VERSION: u32 = 1;

/// The arguments that define a replay, as typed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub from: String,
    pub to_loki: String,
    pub since: Option<String>,
    pub until: Option<String>,
    pub selector: Option<String>,
    pub tenant: Option<String>,
}

impl Job {
    /// 16 hex digits identifying the job.
    pub fn id(&self) -> String {
        // Serializing a struct of strings cannot fail.
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&bytes))
    }

    /// `.sluice-replay-<id>.json` in the current directory.
    pub fn default_path(&self) -> PathBuf {
        PathBuf::from(format!(".sluice-replay-{}.json", self.id()))
    }
}

/// The partition in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Current {
    pub partition: String,
    pub fingerprint: String,
    /// Its first `batches` batches are confirmed.
    pub batches: u64,
}

/// A replay's progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub version: u32,
    pub job: Job,
    /// The time range as resolved by the first run, nanoseconds.
    pub since_ns: Option<i64>,
    pub until_ns: Option<i64>,
    pub batch_size: u64,
    /// Every partition was replayed.
    pub complete: bool,
    /// Completed partitions and their fingerprints.
    pub done: std::collections::BTreeMap<String, String>,
    pub current: Option<Current>,
    /// Entries Loki confirmed, over all runs.
    pub pushed: u64,
}

/// Where a partition stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// Not started: read and push it all.
    Start,
    /// Completed earlier: skip it without reading.
    Done,
    /// Completed earlier, but its objects changed since (e.g. objects that arrived late): it is
    /// skipped all the same, to push nothing twice; `--restart` replays everything.
    DoneButChanged,
    /// Interrupted after this many confirmed batches: skip them.
    After(u64),
    /// Interrupted, but its objects changed: the batches no longer line up, so it is pushed
    /// again from its start (Loki ignores the exact duplicates).
    Changed,
}

impl Checkpoint {
    pub fn new(job: Job, since_ns: Option<i64>, until_ns: Option<i64>, batch_size: u64) -> Self {
        Self {
            version: VERSION,
            job,
            since_ns,
            until_ns,
            batch_size,
            complete: false,
            done: Default::default(),
            current: None,
            pushed: 0,
        }
    }

    /// Reads `path`; `Ok(None)` when there is none.
    pub fn load(path: &Path) -> Result<Option<Self>, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("checkpoint {}: {e}", path.display())),
        };
        let checkpoint: Self = serde_json::from_str(&text).map_err(|e| {
            format!(
                "checkpoint {}: not a replay checkpoint ({e}); remove it or use --restart",
                path.display()
            )
        })?;
        if checkpoint.version != VERSION {
            return Err(format!(
                "checkpoint {}: written by another version of sluice (format {}); use --restart",
                path.display(),
                checkpoint.version
            ));
        }
        Ok(Some(checkpoint))
    }

    /// Writes atomically: a temporary file next to `path`, synced, then renamed over it.
    pub fn save(&self, path: &Path) -> Result<(), String> {
        let fail = |e: std::io::Error| format!("cannot write the checkpoint {}: {e}", path.display());
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| fail(std::io::Error::other(e)))?;
        let mut file = std::fs::File::create(&tmp).map_err(fail)?;
        file.write_all(&bytes).and_then(|()| file.sync_all()).map_err(fail)?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(fail)
    }

    /// Where the partition `id` with `fingerprint` stands.
    pub fn resume(&self, id: &str, fingerprint: &str) -> Resume {
        if let Some(done) = self.done.get(id) {
            return if done == fingerprint { Resume::Done } else { Resume::DoneButChanged };
        }
        match &self.current {
            Some(c) if c.partition == id && c.fingerprint == fingerprint => Resume::After(c.batches),
            Some(c) if c.partition == id => Resume::Changed,
            _ => Resume::Start,
        }
    }

    /// Loki confirmed the next batch (of `entries` entries) of partition `id`.
    pub fn batch_done(&mut self, id: &str, fingerprint: &str, entries: usize) {
        match &mut self.current {
            Some(c) if c.partition == id && c.fingerprint == fingerprint => c.batches += 1,
            _ => {
                self.current = Some(Current {
                    partition: id.to_string(),
                    fingerprint: fingerprint.to_string(),
                    batches: 1,
                })
            }
        }
        self.pushed += entries as u64;
    }

    /// Every batch of partition `id` is confirmed.
    pub fn partition_done(&mut self, id: &str, fingerprint: &str) {
        if self.current.as_ref().is_some_and(|c| c.partition == id) {
            self.current = None;
        }
        self.done.insert(id.to_string(), fingerprint.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Job {
        Job {
            from: "s3://b/p".into(),
            to_loki: "http://loki:3100".into(),
            since: Some("24h".into()),
            until: None,
            selector: Some(r#"{app="api"}"#.into()),
            tenant: None,
        }
    }

    #[test]
    fn the_default_path_is_a_stable_hash_of_the_arguments() {
        let a = job();
        assert_eq!(a.id().len(), 16);
        assert_eq!(a.id(), job().id());
        let path = a.default_path();
        assert_eq!(path.to_str(), Some(format!(".sluice-replay-{}.json", a.id()).as_str()));
        for other in [
            Job { tenant: Some("t".into()), ..job() },
            Job { since: None, ..job() },
            Job { until: Some("2024-03-01".into()), ..job() },
            Job { selector: None, ..job() },
            Job { from: "s3://b/q".into(), ..job() },
            Job { to_loki: "http://other:3100".into(), ..job() },
        ] {
            assert_ne!(other.id(), a.id(), "{other:?}");
        }
    }

    #[test]
    fn saves_loads_and_resumes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cp.json");
        assert_eq!(Checkpoint::load(&path), Ok(None));
        let mut cp = Checkpoint::new(job(), Some(5), None, 1 << 20);
        assert_eq!(cp.resume("p1", "f1"), Resume::Start);
        cp.batch_done("p1", "f1", 10);
        cp.batch_done("p1", "f1", 10);
        cp.partition_done("p1", "f1");
        cp.batch_done("p2", "f2", 7);
        cp.save(&path).expect("saves");
        assert!(!dir.path().join("cp.json.tmp").exists(), "the temporary file is renamed");
        let back = Checkpoint::load(&path).expect("loads").expect("exists");
        assert_eq!(back, cp);
        assert_eq!(back.pushed, 27);
        assert_eq!(back.resume("p1", "f1"), Resume::Done);
        assert_eq!(back.resume("p1", "other"), Resume::DoneButChanged);
        assert_eq!(back.resume("p2", "f2"), Resume::After(1));
        assert_eq!(back.resume("p2", "changed"), Resume::Changed);
        assert_eq!(back.resume("p3", "f3"), Resume::Start);
        // A changed partition restarts its count under the new fingerprint.
        let mut cp = back;
        cp.batch_done("p2", "changed", 1);
        assert_eq!(
            cp.current,
            Some(Current { partition: "p2".into(), fingerprint: "changed".into(), batches: 1 })
        );
        cp.partition_done("p2", "changed");
        assert_eq!(cp.current, None);
    }

    #[test]
    fn a_foreign_file_is_refused_with_advice() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cp.json");
        std::fs::write(&path, "{\"something\": 1}").expect("write");
        let e = Checkpoint::load(&path).expect_err("refused");
        assert!(e.contains("not a replay checkpoint") && e.contains("--restart"), "{e}");
        let mut cp = Checkpoint::new(job(), None, None, 1);
        cp.version = 99;
        cp.save(&path).expect("saves");
        assert!(Checkpoint::load(&path).expect_err("refused").contains("another version"));
    }
}
