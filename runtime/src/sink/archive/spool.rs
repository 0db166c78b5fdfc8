//! The spool: archive objects are written to local files first, one open object per key, and
//! handed to the uploader once sealed. A file's life:
//!
//! ```text
//! <id>.key    the object key, written when the object opens
//! <id>.open   the compressed records, being written
//! <id>.ready  sealed: compression finished, synced to disk, waiting for upload
//! ```
//!
//! Sealed files survive a restart and are uploaded then. An NDJSON `.open` file left by a crash
//! is salvaged at start: the records that decompress whole are sealed as an object of their
//! own. (A Parquet one cannot be: its footer is missing; it is left in place and reported.)
//! Everything here blocks (compression and file IO); the sink runs it on blocking threads.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::time::Instant;

use crate::archive::key::{Hour, KeyTemplate};
use crate::archive::parquet::ParquetWriter;
use crate::archive::record;
use crate::config::{ArchiveFormat, Compression};
use crate::model::{Batch, Entry, LabelSet};
use crate::sink::Pending;
use crate::wal::Mark;

/// An object ready for upload.
#[derive(Debug)]
pub struct Sealed {
    /// The compressed file.
    pub data: PathBuf,
    /// The file holding the key, removed with the data after upload.
    pub key_file: PathBuf,
    /// The object key, relative to the archive's prefix.
    pub key: String,
    pub bytes: u64,
    /// Entries in the object (0 when unknown: recovered after a restart).
    pub entries: u64,
}

/// Counts the bytes that reach the file.
struct Counting {
    file: BufWriter<File>,
    written: u64,
}

impl Write for Counting {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

enum Encoder {
    Zstd(zstd::stream::write::Encoder<'static, Counting>),
    Gzip(flate2::write::GzEncoder<Counting>),
    Plain(Counting),
    Parquet(Box<ParquetWriter<Counting>>),
}

impl Encoder {
    fn new(
        out: Counting,
        format: ArchiveFormat,
        compression: Compression,
        level: Option<i32>,
    ) -> io::Result<Self> {
        if format == ArchiveFormat::Parquet {
            return Ok(Self::Parquet(Box::new(ParquetWriter::new(out, compression, level)?)));
        }
        Ok(match compression {
            Compression::Zstd => Self::Zstd(zstd::stream::write::Encoder::new(out, level.unwrap_or(3))?),
            Compression::Gzip => {
                let level =
                    level.map_or(flate2::Compression::default(), |l| flate2::Compression::new(l as u32));
                Self::Gzip(flate2::write::GzEncoder::new(out, level))
            }
            Compression::None => Self::Plain(out),
        })
    }

    /// Appends entries of one stream; `scratch` is reused for NDJSON records.
    fn append<'a>(
        &mut self,
        tenant: &str,
        labels: &LabelSet,
        labels_json: &[u8],
        entries: impl Iterator<Item = &'a Entry>,
        scratch: &mut Vec<u8>,
    ) -> io::Result<()> {
        if let Self::Parquet(w) = self {
            for entry in entries {
                w.push(tenant, labels, entry)?;
            }
            return Ok(());
        }
        scratch.clear();
        for entry in entries {
            record::write(scratch, tenant, labels_json, entry);
        }
        self.write_ndjson(scratch)
    }

    /// Appends NDJSON records as they are.
    fn write_ndjson(&mut self, records: &[u8]) -> io::Result<()> {
        match self {
            Self::Zstd(e) => e.write_all(records),
            Self::Gzip(e) => e.write_all(records),
            Self::Plain(e) => e.write_all(records),
            Self::Parquet(_) => Err(io::Error::other("NDJSON records written to a Parquet object")),
        }
    }

    fn written(&self) -> u64 {
        match self {
            Self::Zstd(e) => e.get_ref().written,
            Self::Gzip(e) => e.get_ref().written,
            Self::Plain(e) => e.written,
            Self::Parquet(w) => w.inner().written,
        }
    }

    /// Pushes what the compressor holds into the file and syncs it, so the records written so
    /// far survive a crash (salvaged at the next start). False for Parquet, whose records
    /// are only readable once the object is sealed.
    fn flush_durable(&mut self) -> io::Result<bool> {
        let out = match self {
            Self::Zstd(e) => {
                e.flush()?;
                e.get_ref()
            }
            Self::Gzip(e) => {
                e.flush()?;
                e.get_ref()
            }
            Self::Plain(e) => {
                e.flush()?;
                &*e
            }
            Self::Parquet(_) => return Ok(false),
        };
        out.file.get_ref().sync_data()?;
        Ok(true)
    }

    /// Ends the compressed stream (or writes the Parquet footer) and syncs the file.
    fn finish(self) -> io::Result<u64> {
        let mut out = match self {
            Self::Zstd(e) => e.finish()?,
            Self::Gzip(e) => e.finish()?,
            Self::Plain(e) => e,
            Self::Parquet(w) => w.finish()?,
        };
        out.flush()?;
        let file = out.file.into_inner().map_err(|e| e.into_error())?;
        file.sync_data()?;
        Ok(out.written)
    }
}

/// The file name ending of objects in this format and compression.
pub fn extension(format: ArchiveFormat, compression: Compression) -> &'static str {
    match (format, compression) {
        (ArchiveFormat::Parquet, _) => "parquet",
        (ArchiveFormat::Ndjson, Compression::Zstd) => "ndjson.zst",
        (ArchiveFormat::Ndjson, Compression::Gzip) => "ndjson.gz",
        (ArchiveFormat::Ndjson, Compression::None) => "ndjson",
    }
}

/// The compression of an NDJSON object from its key; `None` for Parquet (or anything else).
fn ndjson_compression(key: &str) -> Option<Compression> {
    [Compression::Zstd, Compression::Gzip, Compression::None]
        .into_iter()
        .find(|&c| key.ends_with(&format!(".{}", extension(ArchiveFormat::Ndjson, c))))
}

struct OpenObject {
    id: String,
    key: String,
    /// Whose entries it holds (a key template need not name the tenant).
    tenant: Arc<str>,
    encoder: Encoder,
    opened: Instant,
    /// Order of opening, between objects opened at the same instant (by one push).
    sequence: u64,
    entries: u64,
    /// Log records with entries in this object: settled once it is sealed or flushed.
    marks: Vec<Mark>,
}

/// Settings of a [`Spool`].
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    pub template: KeyTemplate,
    pub format: ArchiveFormat,
    pub compression: Compression,
    pub level: Option<i32>,
    pub max_object_size: u64,
    pub max_object_age: std::time::Duration,
    pub max_open: usize,
    pub max_open_per_tenant: usize,
}

/// The objects being written.
pub struct Spool {
    config: SpoolConfig,
    /// Open objects by key prefix (the rendered template).
    open: HashMap<String, OpenObject>,
    /// Random per process, so that names from several replicas never collide.
    instance: u32,
    sequence: u64,
    scratch: Vec<u8>,
    /// Sealed but not yet handed out: a call that fails halfway returns them with the next.
    ready: Vec<Sealed>,
}

impl Spool {
    /// Creates the directory; returns the spool and what an earlier run left sealed (or
    /// salvaged from a crash), to upload first.
    pub fn open(config: SpoolConfig) -> io::Result<(Self, Vec<Sealed>)> {
        crate::private_fs::create_dir_all(&config.dir)?;
        let leftovers = recover(&config.dir)?;
        let spool = Self {
            config,
            open: HashMap::new(),
            instance: fastrand::u32(..),
            sequence: 0,
            scratch: Vec::new(),
            ready: Vec::new(),
        };
        Ok((spool, leftovers))
    }

    /// Bytes in open objects.
    pub fn open_bytes(&self) -> u64 {
        self.open.values().map(|o| o.encoder.written()).sum()
    }

    /// Number of open objects.
    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    /// When the oldest open object must be sealed.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.open.values().map(|o| o.opened + self.config.max_object_age).min()
    }

    /// Appends the batch's entries to their objects, each holding a share of `mark`; returns
    /// the objects it sealed (full, or closed to stay within `max_open`).
    pub fn write(&mut self, batch: &Batch, mark: Option<&Mark>, now: Instant) -> io::Result<Vec<Sealed>> {
        // Entries of one stream and hour go to the same object: group them, render the key
        // once per group, write them in one call to the compressor.
        let mut groups: Vec<(Hour, Vec<usize>)> = Vec::new();
        for stream in &batch.streams {
            groups.clear();
            for (i, entry) in stream.entries.iter().enumerate() {
                let hour = Hour::of(entry.timestamp_ns);
                match groups.iter_mut().find(|(h, _)| *h == hour) {
                    Some((_, list)) => list.push(i),
                    None => groups.push((hour, vec![i])),
                }
            }
            let labels = record::labels_json(&stream.labels);
            for (hour, indices) in &groups {
                let prefix = self.config.template.render(&batch.tenant, &stream.labels, *hour);
                if !self.open.contains_key(&prefix) {
                    self.make_room_for(&batch.tenant)?;
                    let object = self.create(&prefix, &batch.tenant, now)?;
                    self.open.insert(prefix.clone(), object);
                }
                let object = self.open.get_mut(&prefix).expect("inserted above");
                let entries = indices.iter().map(|&i| &stream.entries[i]);
                object.encoder.append(&batch.tenant, &stream.labels, &labels, entries, &mut self.scratch)?;
                object.entries += indices.len() as u64;
                if let Some(mark) = mark {
                    mark.share_into(&mut object.marks);
                }
                if object.encoder.written() >= self.config.max_object_size {
                    self.seal(&prefix)?;
                }
            }
        }
        Ok(std::mem::take(&mut self.ready))
    }

    /// Seals the objects older than `max_object_age` at `now`.
    pub fn seal_due(&mut self, now: Instant) -> io::Result<Vec<Sealed>> {
        let due: Vec<String> = self
            .open
            .iter()
            .filter(|(_, o)| now.duration_since(o.opened) >= self.config.max_object_age)
            .map(|(k, _)| k.clone())
            .collect();
        for prefix in due {
            self.seal(&prefix)?;
        }
        Ok(std::mem::take(&mut self.ready))
    }

    /// Makes the records of open NDJSON objects durable (see [`Encoder::flush_durable`]) and
    /// settles their log records, so the write-ahead log need not keep them until the objects
    /// are sealed. Parquet objects keep theirs until then.
    pub fn checkpoint(&mut self) -> io::Result<()> {
        for object in self.open.values_mut().filter(|o| !o.marks.is_empty()) {
            if object.encoder.flush_durable()? {
                Pending::settle_marks(std::mem::take(&mut object.marks));
            }
        }
        Ok(())
    }

    /// True when an open object holds unsettled log records.
    pub fn holds_marks(&self) -> bool {
        self.open.values().any(|o| !o.marks.is_empty())
    }

    /// Seals every open object (at shutdown).
    pub fn seal_all(&mut self) -> io::Result<Vec<Sealed>> {
        let all: Vec<String> = self.open.keys().cloned().collect();
        for prefix in all {
            self.seal(&prefix)?;
        }
        Ok(std::mem::take(&mut self.ready))
    }

    /// Seals an object before `tenant` opens another: its own oldest when it holds
    /// `max_open_per_tenant` already (a push spread over many hours costs only its own
    /// objects), else the oldest of all when `max_open` are open.
    fn make_room_for(&mut self, tenant: &str) -> io::Result<()> {
        let own = self.open.iter().filter(|(_, o)| &*o.tenant == tenant);
        let oldest = if own.clone().count() >= self.config.max_open_per_tenant {
            own.min_by_key(|(_, o)| (o.opened, o.sequence))
        } else if self.open.len() >= self.config.max_open {
            self.open.iter().min_by_key(|(_, o)| (o.opened, o.sequence))
        } else {
            None
        };
        match oldest.map(|(k, _)| k.clone()) {
            Some(prefix) => self.seal(&prefix),
            None => Ok(()),
        }
    }

    fn create(&mut self, prefix: &str, tenant: &Arc<str>, now: Instant) -> io::Result<OpenObject> {
        self.sequence += 1;
        let millis =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        let id = format!("{millis}-{:08x}-{:06}", self.instance, self.sequence);
        let key = format!("{prefix}/{id}.{}", extension(self.config.format, self.config.compression));
        let dir = &self.config.dir;
        // The log's records are confirmed once this object's data is synced (`checkpoint`),
        // so its key and both names must be on disk by then: recovery needs them to upload it.
        crate::private_fs::write_synced(&dir.join(format!("{id}.key")), &key)?;
        let file = crate::private_fs::create(&dir.join(format!("{id}.open")))?;
        crate::private_fs::sync_dir(dir)?;
        let out = Counting { file: BufWriter::with_capacity(64 * 1024, file), written: 0 };
        let encoder = Encoder::new(out, self.config.format, self.config.compression, self.config.level)?;
        let tenant = Arc::clone(tenant);
        Ok(OpenObject {
            id,
            key,
            tenant,
            encoder,
            opened: now,
            sequence: self.sequence,
            entries: 0,
            marks: Vec::new(),
        })
    }

    /// Seals the object of `prefix` into `ready`.
    fn seal(&mut self, prefix: &str) -> io::Result<()> {
        let Some(object) = self.open.remove(prefix) else { return Ok(()) };
        let bytes = object.encoder.finish()?;
        let dir = &self.config.dir;
        let data = dir.join(format!("{}.ready", object.id));
        fs::rename(dir.join(format!("{}.open", object.id)), &data)?;
        // A Parquet object left `.open` by a crash is not salvaged: the rename must last.
        crate::private_fs::sync_dir(dir)?;
        Pending::settle_marks(object.marks);
        self.ready.push(Sealed {
            data,
            key_file: dir.join(format!("{}.key", object.id)),
            key: object.key,
            bytes,
            entries: object.entries,
        });
        Ok(())
    }
}

/// Sealed files left by an earlier run, and `.open` files salvaged into sealed ones. The
/// format comes from each key, not the configuration, which may have changed since.
fn recover(dir: &Path) -> io::Result<Vec<Sealed>> {
    let mut found = Vec::new();
    let mut names: Vec<PathBuf> = fs::read_dir(dir)?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    names.sort();
    for path in names {
        let Some(ext) = path.extension().and_then(|e| e.to_str()) else { continue };
        let key_file = path.with_extension("key");
        let key = match fs::read_to_string(&key_file) {
            Ok(k) => k,
            Err(_) if ext == "ready" || ext == "open" => {
                tracing::warn!(file = %path.display(), "spool file without its .key file: left in place");
                continue;
            }
            Err(_) => continue,
        };
        match ext {
            "ready" => {
                let bytes = fs::metadata(&path)?.len();
                found.push(Sealed { data: path, key_file, key, bytes, entries: 0 });
            }
            "open" => match ndjson_compression(&key)
                .ok_or("a Parquet object has no footer until it is sealed".to_string())
                .and_then(|c| salvage(&path, c).map_err(|e| e.to_string()))
            {
                Ok((bytes, entries)) => {
                    let data = path.with_extension("ready");
                    fs::rename(&path, &data)?;
                    tracing::warn!(key = %key, entries, "salvaged an archive object interrupted by a crash");
                    found.push(Sealed { data, key_file, key, bytes, entries });
                }
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "cannot salvage an interrupted archive object: left in place");
                }
            },
            _ => {}
        }
    }
    Ok(found)
}

/// Rewrites an interrupted object with the records that decompress whole; returns its size and
/// record count. An object with no whole record is still sealed (empty), so it is cleaned up.
fn salvage(path: &Path, compression: Compression) -> io::Result<(u64, u64)> {
    let raw = fs::read(path)?;
    let mut text = Vec::new();
    let result = match compression {
        Compression::Zstd => zstd::stream::read::Decoder::new(&raw[..])?.read_to_end(&mut text),
        Compression::Gzip => flate2::read::GzDecoder::new(&raw[..]).read_to_end(&mut text),
        Compression::None => {
            text.extend_from_slice(&raw);
            Ok(raw.len())
        }
    };
    // The stream ends mid-frame: keep what came out before the error.
    drop(result);
    let whole = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    text.truncate(whole);
    let entries = text.iter().filter(|&&b| b == b'\n').count() as u64;
    let tmp = path.with_extension("salvage");
    let file = crate::private_fs::create(&tmp)?;
    let mut encoder = Encoder::new(
        Counting { file: BufWriter::new(file), written: 0 },
        ArchiveFormat::Ndjson,
        compression,
        None,
    )?;
    encoder.write_ndjson(&text)?;
    let bytes = encoder.finish()?;
    fs::rename(&tmp, path)?;
    Ok((bytes, entries))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Entry, LabelSet, Stream};
    use std::time::Duration;

    fn config(dir: &Path, compression: Compression) -> SpoolConfig {
        SpoolConfig {
            dir: dir.to_path_buf(),
            template: KeyTemplate::parse("tenant={tenant}/dt={date}/hour={hour}").expect("parses"),
            format: ArchiveFormat::Ndjson,
            compression,
            level: None,
            max_object_size: 1 << 20,
            max_object_age: Duration::from_secs(60),
            max_open: 8,
            max_open_per_tenant: 4,
        }
    }

    fn batch(tenant: &str, lines: &[(i64, &str)]) -> Batch {
        let labels = LabelSet::new(vec![("app".into(), "api".into())]);
        let entries = lines
            .iter()
            .map(|(ts, l)| Entry { timestamp_ns: *ts, line: l.to_string(), metadata: vec![] })
            .collect();
        Batch { tenant: tenant.into(), streams: vec![Stream { labels, entries }] }
    }

    fn decompress(path: &Path) -> String {
        String::from_utf8(zstd::decode_all(&fs::read(path).expect("read")[..]).expect("zstd")).expect("utf-8")
    }

    const HOUR: i64 = 3_600_000_000_000;

    #[tokio::test]
    async fn objects_by_hour_and_tenant_sealed_when_due() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut spool, leftovers) = Spool::open(config(dir.path(), Compression::Zstd)).expect("opens");
        assert!(leftovers.is_empty());
        let start = Instant::now();
        let b = batch("a", &[(1_709_251_199_000_000_000, "one"), (1_709_251_199_000_000_000 + HOUR, "two")]);
        assert!(spool.write(&b, None, start).expect("writes").is_empty());
        assert!(spool.write(&batch("b", &[(0, "three")]), None, start).expect("writes").is_empty());
        assert_eq!(spool.open_count(), 3);
        assert!(spool.seal_due(start + Duration::from_secs(59)).expect("seals").is_empty());
        let mut sealed = spool.seal_due(start + Duration::from_secs(60)).expect("seals");
        sealed.sort_by(|a, b| a.key.cmp(&b.key));
        let keys: Vec<&str> = sealed.iter().map(|s| s.key.rsplit_once('/').expect("a file name").0).collect();
        assert_eq!(
            keys,
            [
                "tenant=a/dt=2024-02-29/hour=23",
                "tenant=a/dt=2024-03-01/hour=00",
                "tenant=b/dt=1970-01-01/hour=00"
            ]
        );
        assert!(sealed.iter().all(|s| s.key.ends_with(".ndjson.zst") && s.entries == 1));
        let text = decompress(&sealed[2].data);
        let value: serde_json::Value = serde_json::from_str(text.trim_end()).expect("json");
        assert_eq!(value["line"], "three");
        assert_eq!(value["tenant"], "b");
        assert_eq!(sealed[0].bytes, fs::metadata(&sealed[0].data).expect("exists").len());
        assert_eq!(spool.open_count(), 0);
    }

    #[tokio::test]
    async fn full_objects_and_too_many_open_ones_are_sealed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = config(dir.path(), Compression::None);
        cfg.max_object_size = 500;
        cfg.max_open = 2;
        let (mut spool, _) = Spool::open(cfg).expect("opens");
        let now = Instant::now();
        let long = "x".repeat(200);
        assert!(spool.write(&batch("a", &[(0, &long)]), None, now).expect("writes").is_empty());
        let sealed = spool.write(&batch("a", &[(1, &long)]), None, now).expect("writes");
        assert_eq!(sealed.len(), 1, "the object passed max_object_size");
        assert_eq!(sealed[0].entries, 2);
        spool.write(&batch("b", &[(0, "b")]), None, now).expect("writes");
        spool.write(&batch("c", &[(0, "c")]), None, now + Duration::from_secs(1)).expect("writes");
        let sealed =
            spool.write(&batch("d", &[(0, "d")]), None, now + Duration::from_secs(2)).expect("writes");
        assert_eq!(sealed.len(), 1);
        assert!(
            sealed[0].key.starts_with("tenant=b/"),
            "the oldest open object is sealed: {}",
            sealed[0].key
        );
    }

    #[tokio::test]
    async fn a_push_spread_over_a_week_closes_its_own_objects_not_another_tenants() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut spool, _) = Spool::open(config(dir.path(), Compression::None)).expect("opens");
        let now = Instant::now();
        for tenant in ["b", "c"] {
            assert!(spool.write(&batch(tenant, &[(0, "kept open")]), None, now).expect("writes").is_empty());
        }
        // One entry in each hour of a week: 168 objects, of which tenant `a` holds four at once.
        let spread: Vec<(i64, &str)> = (0..168).map(|h| (h * HOUR, "spread")).collect();
        let later = now + Duration::from_secs(1);
        let sealed = spool.write(&batch("a", &spread), None, later).expect("writes");
        assert_eq!(sealed.len(), 168 - 4);
        assert!(sealed.iter().all(|s| s.key.starts_with("tenant=a/") && s.entries == 1), "only a's objects");
        let open: Vec<&str> = spool.open.values().map(|o| &*o.tenant).collect();
        assert_eq!(open.iter().filter(|t| **t == "a").count(), 4, "{open:?}");
        assert!(open.contains(&"b") && open.contains(&"c"), "the other tenants' objects stay open: {open:?}");
        // The oldest of its own go first: the last four hours are the ones still open.
        let mut hours: Vec<&str> = sealed.iter().map(|s| s.key.split('/').nth(2).expect("hour")).collect();
        hours.dedup();
        assert_eq!(sealed[0].key.split('/').nth(1), Some("dt=1970-01-01"));
        assert_eq!(hours[0], "hour=00");
        let all = spool.seal_all().expect("seals");
        let entries: u64 =
            sealed.iter().chain(&all).filter(|s| s.key.starts_with("tenant=a/")).map(|s| s.entries).sum();
        assert_eq!(entries, 168, "every entry is in an object");
    }

    #[tokio::test]
    async fn a_restart_finds_sealed_objects_and_salvages_interrupted_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut spool, _) = Spool::open(config(dir.path(), Compression::Zstd)).expect("opens");
        let now = Instant::now();
        spool.write(&batch("a", &[(0, "sealed")]), None, now).expect("writes");
        let sealed = spool.seal_all().expect("seals");
        let lines: Vec<String> = (0..2000).map(|i| format!("line {i} {}", "y".repeat(100))).collect();
        let entries: Vec<(i64, &str)> = lines.iter().map(|l| (1, l.as_str())).collect();
        spool.write(&batch("a", &entries), None, now).expect("writes");
        // A crash: the open object's compressor never finishes; what it flushed is on disk.
        if let Some(o) = spool.open.values_mut().next()
            && let Encoder::Zstd(e) = &mut o.encoder
        {
            e.flush().expect("flush");
            e.get_mut().flush().expect("flush");
        }
        std::mem::forget(spool);
        let (_, mut found) = Spool::open(config(dir.path(), Compression::Zstd)).expect("opens again");
        found.sort_by_key(|s| s.entries);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].key, sealed[0].key);
        assert_eq!(found[1].entries, 2000, "every flushed record is salvaged");
        let text = decompress(&found[1].data);
        assert_eq!(text.lines().count(), 2000);
        assert!(text.lines().all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()));
    }

    #[tokio::test]
    async fn parquet_objects_are_whole_files_and_an_interrupted_one_is_left_alone() {
        use parquet::file::reader::{FileReader, SerializedFileReader};
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = config(dir.path(), Compression::Zstd);
        cfg.format = ArchiveFormat::Parquet;
        let (mut spool, _) = Spool::open(cfg.clone()).expect("opens");
        let now = Instant::now();
        spool.write(&batch("a", &[(0, "one"), (1, "two")]), None, now).expect("writes");
        let sealed = spool.seal_all().expect("seals");
        assert!(sealed[0].key.ends_with(".parquet"), "{}", sealed[0].key);
        let file = fs::File::open(&sealed[0].data).expect("open");
        let reader = SerializedFileReader::new(file).expect("a whole Parquet file");
        assert_eq!(reader.metadata().file_metadata().num_rows(), 2);

        spool.write(&batch("a", &[(0, "three")]), None, now).expect("writes");
        std::mem::forget(spool);
        let (_, found) = Spool::open(cfg).expect("opens again");
        assert_eq!(found.len(), 1, "only the sealed object: {found:?}");
        let open: Vec<_> = fs::read_dir(dir.path())
            .expect("list")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "open"))
            .collect();
        assert_eq!(open.len(), 1, "the interrupted Parquet object stays for an operator");
    }

    #[test]
    fn the_compression_of_an_ndjson_key() {
        assert_eq!(ndjson_compression("t/x.ndjson.zst"), Some(Compression::Zstd));
        assert_eq!(ndjson_compression("t/x.ndjson.gz"), Some(Compression::Gzip));
        assert_eq!(ndjson_compression("t/x.ndjson"), Some(Compression::None));
        assert_eq!(ndjson_compression("t/x.parquet"), None);
    }
}
