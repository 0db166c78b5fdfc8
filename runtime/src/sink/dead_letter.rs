//! Where a Loki sink sets aside what it could not deliver within `retry.max_attempts`: archive
//! objects, in the archive's own layout and NDJSON record format, under
//! `<data_dir>/dead-letter/<sink>/`, so that
//!
//! ```text
//! sluice replay --from <data_dir>/dead-letter/<sink> --to-loki http://loki:3100
//! ```
//!
//! sends them again once the cause is fixed. The log records of a batch are confirmed only
//! after its object is on disk (synced, as is the directory that names it); if it cannot be
//! written they stay in the log, to be delivered after a restart.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::archive::key::KeyTemplate;
use crate::config::{ArchiveFormat, Compression};
use crate::model::{Batch, Stream};
use crate::sink::archive::spool::{Sealed, Spool, SpoolConfig};

/// The archive's default key layout, which `sluice replay` reads by time.
const KEY: &str = "tenant={tenant}/dt={date}/hour={hour}";

/// A sink's dead-letter directory.
pub struct DeadLetter {
    dir: PathBuf,
    /// Objects are built here (beside, never inside, `dir`), then moved in whole.
    spool: Mutex<Spool>,
}

impl std::fmt::Debug for DeadLetter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetter").field("dir", &self.dir).finish()
    }
}

impl DeadLetter {
    /// Opens (creating) `<data_dir>/dead-letter/<sink>`, and moves in what an earlier run built
    /// but did not move.
    pub fn open(data_dir: &Path, sink: &str) -> io::Result<Self> {
        let root = data_dir.join("dead-letter");
        let dir = root.join(sink);
        crate::private_fs::create_dir_all(&dir)?;
        let config = SpoolConfig {
            dir: root.join(".building").join(sink),
            template: KeyTemplate::parse(KEY).map_err(io::Error::other)?,
            format: ArchiveFormat::Ndjson,
            compression: Compression::Zstd,
            level: None,
            max_object_size: 64 << 20,
            max_object_age: std::time::Duration::from_secs(3600),
            max_open: 32,
            max_open_per_tenant: 32,
        };
        let (spool, leftovers) = Spool::open(config)?;
        let dead_letter = Self { dir, spool: Mutex::new(spool) };
        dead_letter.move_in(leftovers)?;
        Ok(dead_letter)
    }

    /// The directory `sluice replay --from` reads.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `streams` of `tenant` into objects of their own; returns where they are.
    pub fn put(&self, tenant: &Arc<str>, streams: Vec<Stream>) -> io::Result<Vec<PathBuf>> {
        let batch = Batch { tenant: Arc::clone(tenant), streams };
        let sealed = {
            let mut spool = self.spool.lock().unwrap_or_else(|p| p.into_inner());
            let mut sealed = spool.write(&batch, None, tokio::time::Instant::now())?;
            sealed.extend(spool.seal_all()?);
            sealed
        };
        self.move_in(sealed)
    }

    /// Moves sealed (synced) objects to their keys under `dir`, syncing each directory that
    /// gains one, so an object confirmed here survives a crash.
    fn move_in(&self, sealed: Vec<Sealed>) -> io::Result<Vec<PathBuf>> {
        let mut moved = Vec::with_capacity(sealed.len());
        for object in sealed {
            let to = self.dir.join(&object.key);
            let parent = to.parent().unwrap_or(&self.dir);
            crate::private_fs::create_dir_all(parent)?;
            fs::rename(&object.data, &to)?;
            crate::private_fs::sync_dir(parent)?;
            fs::remove_file(&object.key_file)?;
            moved.push(to);
        }
        Ok(moved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Entry, LabelSet};

    #[test]
    fn set_aside_streams_become_archive_objects_replay_reads() {
        let data = tempfile::tempdir().expect("tempdir");
        let dl = DeadLetter::open(data.path(), "loki").expect("opens");
        let stream = Stream {
            labels: LabelSet::new(vec![("app".into(), "api".into())]),
            entries: vec![Entry {
                timestamp_ns: 1_709_251_199_000_000_000,
                line: "kept".into(),
                metadata: vec![],
            }],
        };
        let paths = dl.put(&Arc::from("team-a"), vec![stream]).expect("written");
        assert_eq!(paths.len(), 1);
        let key = paths[0].strip_prefix(dl.dir()).expect("under dir").to_string_lossy().into_owned();
        assert!(
            key.starts_with("tenant=team-a/dt=2024-02-29/hour=23/") && key.ends_with(".ndjson.zst"),
            "{key}"
        );
        let text =
            String::from_utf8(zstd::decode_all(&fs::read(&paths[0]).expect("read")[..]).expect("zstd"))
                .expect("utf-8");
        let record: serde_json::Value = serde_json::from_str(text.trim_end()).expect("a record");
        assert_eq!((record["tenant"].as_str(), record["line"].as_str()), (Some("team-a"), Some("kept")));
        // Nothing half-built is left where replay looks.
        let stray: Vec<_> =
            walk(dl.dir()).into_iter().filter(|p| !p.to_string_lossy().ends_with(".ndjson.zst")).collect();
        assert!(stray.is_empty(), "{stray:?}");
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for entry in fs::read_dir(dir).expect("list").flatten() {
            let path = entry.path();
            if path.is_dir() { files.extend(walk(&path)) } else { files.push(path) }
        }
        files
    }
}
