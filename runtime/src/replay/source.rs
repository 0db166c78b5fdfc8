//! Where replayed entries come from: listing a store or a directory, grouping its objects into
//! partitions (pruned by time from their keys, without reading them), and reading one object
//! into records: NDJSON (archive records or logcli lines; plain, `.gz` or `.zst`) or the
//! archive's Parquet.
//!
//! A **partition** is the directory of keys with hive time segments (`dt=YYYY-MM-DD`, and
//! `hour=HH` when present): the default layout `tenant=<t>/dt=<date>/hour=<HH>/` puts every
//! entry of one tenant and hour there, in however many objects. Partitions are replayed in time
//! order, each read whole, so that every stream goes to Loki in time order. An object without
//! such segments (a logcli export, a custom key template) is a partition of its own, after the
//! timed ones, by name.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use chrono::NaiveDate;
use futures_util::StreamExt;
use object_store::ObjectStoreExt;

use crate::archive::record::{self, Record};
use crate::archive::store::{self, Location, Store};
use crate::config::S3Config;
use crate::model::{Entry, Pair};

const HOUR_NS: i64 = 3_600_000_000_000;

/// Names that replay reads; anything else in a store (the check object, other tools' files) is
/// left alone.
const EXTENSIONS: &[&str] =
    &[".ndjson", ".ndjson.zst", ".ndjson.gz", ".jsonl", ".jsonl.gz", ".jsonl.zst", ".json", ".parquet"];

/// An opened `--from`.
#[derive(Debug)]
pub enum Source {
    /// A store or a local directory, listed recursively.
    Store(Store),
    /// One file (a logcli export or a single archive object), read whatever its name.
    File(PathBuf),
}

/// One object to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// Its key in the store (or the file's path), as listed.
    pub location: object_store::path::Path,
    pub size: u64,
}

impl Object {
    pub fn key(&self) -> &str {
        self.location.as_ref()
    }
}

/// Objects replayed together (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// The directory of a timed partition, the key of an object of its own.
    pub id: String,
    /// `[start, end)` in nanoseconds, from the key's `dt=` and `hour=`.
    pub span: Option<(i64, i64)>,
    /// Sorted by key, so the same listing always reads in the same order.
    pub objects: Vec<Object>,
}

impl Partition {
    /// Whether the partition may hold entries in `[since, until)`.
    pub fn overlaps(&self, since: Option<i64>, until: Option<i64>) -> bool {
        let Some((start, end)) = self.span else { return true };
        since.is_none_or(|s| end > s) && until.is_none_or(|u| start < u)
    }

    /// A hash of the object list (keys and sizes): a changed partition has another fingerprint.
    pub fn fingerprint(&self) -> String {
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        for o in &self.objects {
            hasher.update(o.key().as_bytes());
            hasher.update(&[0]);
            hasher.update(&o.size.to_le_bytes());
        }
        format!("{:016x}", hasher.digest())
    }

    /// Compressed bytes to read.
    pub fn size(&self) -> u64 {
        self.objects.iter().map(|o| o.size).sum()
    }
}

/// Opens `from`: a local path is checked to exist (and never created); a sluice data directory
/// (one with `archive/` in it) means its archive. The second value is a note for the operator.
pub fn open(
    from: &str,
    s3: &S3Config,
    options: &BTreeMap<String, String>,
) -> Result<(Source, Option<String>), String> {
    let Location::Local(path) = Location::parse(from).map_err(|e| format!("--from: {e}"))? else {
        return Ok((Source::Store(store::open(from, s3, options)?), None));
    };
    let meta = std::fs::metadata(&path).map_err(|e| format!("--from {}: {e}", path.display()))?;
    if meta.is_file() {
        return Ok((Source::File(path), None));
    }
    let archive = path.join("archive");
    let (dir, note) = if archive.is_dir() {
        let note = format!("{} is a sluice data directory: reading {}", path.display(), archive.display());
        (archive, Some(note))
    } else {
        (path, None)
    };
    let url = dir.to_string_lossy().into_owned();
    Ok((Source::Store(store::open(&url, s3, options)?), note))
}

impl Source {
    /// Where the source is, for messages.
    pub fn describe(&self) -> String {
        match self {
            Self::Store(s) => s.url.clone(),
            Self::File(p) => p.display().to_string(),
        }
    }

    /// Every object replay reads, sorted by key.
    pub async fn list(&self) -> Result<Vec<Object>, String> {
        let store = match self {
            Self::File(path) => {
                let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
                // Its name, for messages and for the compression; --from has the path.
                let name = path.file_name().map_or_else(|| path.to_string_lossy(), |n| n.to_string_lossy());
                let location = object_store::path::Path::from(name.as_ref());
                return Ok(vec![Object { location, size }]);
            }
            Self::Store(store) => store,
        };
        let mut listing = store.objects.list(None);
        let mut objects = Vec::new();
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|e| format!("cannot list {}: {}", store.url, store::describe(e)))?;
            if is_replayable(meta.location.as_ref()) {
                objects.push(Object { location: meta.location, size: meta.size });
            }
        }
        objects.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(objects)
    }

    /// The object's bytes, as stored (compressed).
    pub async fn fetch(&self, object: &Object) -> Result<Bytes, String> {
        match self {
            Self::File(path) => {
                tokio::fs::read(path).await.map(Bytes::from).map_err(|e| format!("{}: {e}", path.display()))
            }
            Self::Store(store) => {
                let get = store.objects.get(&object.location).await;
                let get = get.map_err(|e| format!("{}: {}", object.key(), store::describe(e)))?;
                get.bytes().await.map_err(|e| format!("{}: {}", object.key(), store::describe(e)))
            }
        }
    }
}

/// Whether a listed key is something replay reads.
pub fn is_replayable(key: &str) -> bool {
    let name = key.rsplit('/').next().unwrap_or(key);
    name != store::CHECK_OBJECT && EXTENSIONS.iter().any(|ext| name.ends_with(ext))
}

/// `[start, end)` of a key's hive time segments: `dt=YYYY-MM-DD` (a day) and `hour=HH` (an
/// hour of it), in the directory part of the key.
pub fn hive_span(key: &str) -> Option<(i64, i64)> {
    let dir = key.rsplit_once('/')?.0;
    let mut date = None;
    let mut hour = None;
    for segment in dir.split('/') {
        if let Some(d) = segment.strip_prefix("dt=") {
            date = NaiveDate::parse_from_str(d, "%Y-%m-%d").ok();
        } else if let Some(h) = segment.strip_prefix("hour=") {
            hour = h.parse::<i64>().ok().filter(|h| (0..24).contains(h));
        }
    }
    let day_start = date?.and_hms_opt(0, 0, 0)?.and_utc().timestamp_nanos_opt()?;
    Some(match hour {
        Some(h) => (day_start + h * HOUR_NS, day_start + (h + 1) * HOUR_NS),
        None => (day_start, day_start + 24 * HOUR_NS),
    })
}

/// Groups objects into partitions in replay order: timed ones by (start, end, directory), then
/// the others by key.
pub fn partitions(objects: Vec<Object>) -> Vec<Partition> {
    let mut timed: BTreeMap<(i64, i64, String), Vec<Object>> = BTreeMap::new();
    let mut untimed: Vec<Partition> = Vec::new();
    for object in objects {
        match hive_span(object.key()) {
            Some((start, end)) => {
                let dir = object.key().rsplit_once('/').map_or("", |(d, _)| d).to_string();
                timed.entry((start, end, dir)).or_default().push(object);
            }
            None => {
                untimed.push(Partition { id: object.key().to_string(), span: None, objects: vec![object] })
            }
        }
    }
    untimed.sort_by(|a, b| a.id.cmp(&b.id));
    let mut out: Vec<Partition> = timed
        .into_iter()
        .map(|((start, end, id), mut objects)| {
            objects.sort_by(|a, b| a.location.cmp(&b.location));
            Partition { id, span: Some((start, end)), objects }
        })
        .collect();
    out.extend(untimed);
    out
}

/// What one object held.
#[derive(Debug, Default)]
pub struct Records {
    pub records: Vec<Record>,
    /// Lines that are not records (blank lines are not counted).
    pub unparseable: usize,
    /// The first of them: `key:line: why`.
    pub first_unparseable: Option<String>,
}

/// Parses an object: Parquet (the archive's Parquet format), else NDJSON decompressed by the
/// name's extension. An error means the object as a whole is unreadable (corrupt or truncated);
/// a bad line is counted in [`Records`].
pub fn read_records(key: &str, data: Bytes) -> Result<Records, String> {
    if key.ends_with(".parquet") {
        return read_parquet(key, data);
    }
    let text = decompress(key, &data).map_err(|e| format!("{key}: cannot decompress: {e}"))?;
    let mut out = Records::default();
    for (i, raw) in text.split(|&b| b == b'\n').enumerate() {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let parsed = match std::str::from_utf8(raw) {
            Ok(line) => record::parse(line)
                .and_then(|r| r.ok_or_else(|| "not an archive record or logcli JSON line".into())),
            Err(_) => Err("not UTF-8".to_string()),
        };
        match parsed {
            Ok(r) => out.records.push(r),
            Err(why) => out.unparseable(format!("{key}:{}: {why}", i + 1)),
        }
    }
    Ok(out)
}

impl Records {
    fn unparseable(&mut self, what: String) {
        self.unparseable += 1;
        self.first_unparseable.get_or_insert(what);
    }
}

/// Rows of the archive's Parquet schema (see [`crate::archive::parquet`]), read by column name.
fn read_parquet(key: &str, data: Bytes) -> Result<Records, String> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let reader =
        SerializedFileReader::new(data).map_err(|e| format!("{key}: not a readable Parquet file: {e}"))?;
    let rows = reader.get_row_iter(None).map_err(|e| format!("{key}: cannot read its rows: {e}"))?;
    let mut out = Records::default();
    for (i, row) in rows.enumerate() {
        let row = row.map_err(|e| format!("{key}: row {}: {e}", i + 1))?;
        match parquet_record(&row) {
            Ok(r) => out.records.push(r),
            Err(why) => out.unparseable(format!("{key}: row {}: {why}", i + 1)),
        }
    }
    Ok(out)
}

fn parquet_record(row: &parquet::record::Row) -> Result<Record, String> {
    use parquet::record::Field;
    let (mut tenant, mut ts, mut line) = (None, None, None);
    let (mut labels, mut metadata) = (Vec::new(), Vec::new());
    let map = |name: &str, field: &Field| -> Result<Vec<Pair>, String> {
        let Field::MapInternal(map) = field else { return Err(format!("`{name}` is not a map")) };
        map.entries()
            .iter()
            .map(|(k, v)| match (k, v) {
                (Field::Str(k), Field::Str(v)) => Ok((k.clone(), v.clone())),
                _ => Err(format!("`{name}` must map strings to strings")),
            })
            .collect()
    };
    for (name, field) in row.get_column_iter() {
        match (name.as_str(), field) {
            ("tenant", Field::Str(t)) => tenant = Some(t.clone()),
            ("tenant", Field::Null) => {}
            // TIMESTAMP(NANOS) reads as a plain int64; coarser units are scaled.
            ("ts", Field::Long(n)) => ts = Some(*n),
            ("ts", Field::TimestampMicros(n)) => ts = n.checked_mul(1_000),
            ("ts", Field::TimestampMillis(n)) => ts = n.checked_mul(1_000_000),
            ("labels", f) => labels = map("labels", f)?,
            ("structured_metadata", f) => metadata = map("structured_metadata", f)?,
            ("line", Field::Str(l)) => line = Some(l.clone()),
            ("tenant" | "ts" | "line", other) => return Err(format!("`{name}` has the wrong type: {other}")),
            _ => {}
        }
    }
    let timestamp_ns = ts.ok_or("no `ts`")?;
    let line = line.ok_or("no `line`")?;
    Ok(Record { tenant, labels, entry: Entry { timestamp_ns, line, metadata } })
}

fn decompress(key: &str, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let name = Path::new(key.rsplit('/').next().unwrap_or(key));
    let mut out = Vec::with_capacity(data.len() * 4);
    match name.extension().and_then(|e| e.to_str()) {
        Some("zst" | "zstd") => {
            zstd::stream::read::Decoder::new(data)?.read_to_end(&mut out)?;
        }
        // Multi-member: concatenated gzip files are one stream to `gunzip` too.
        Some("gz") => {
            flate2::read::MultiGzDecoder::new(data).read_to_end(&mut out)?;
        }
        _ => out.extend_from_slice(data),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    const H: i64 = HOUR_NS;
    /// 2024-03-01T00:00:00Z
    const MARCH_1: i64 = 1_709_251_200_000_000_000;

    fn object(key: &str, size: u64) -> Object {
        Object { location: object_store::path::Path::from(key), size }
    }

    #[test]
    fn reads_hive_time_from_keys() {
        assert_eq!(
            hive_span("tenant=a/dt=2024-03-01/hour=05/1-x-0.ndjson.zst"),
            Some((MARCH_1 + 5 * H, MARCH_1 + 6 * H))
        );
        assert_eq!(hive_span("logs/dt=2024-03-01/x.ndjson"), Some((MARCH_1, MARCH_1 + 24 * H)), "a day");
        assert_eq!(hive_span("dt=2024-03-01/hour=5/x.ndjson"), Some((MARCH_1 + 5 * H, MARCH_1 + 6 * H)));
        for none in [
            "export.jsonl",
            "dt=2024-03-01.ndjson",
            "2024/03/01/05/x.ndjson",
            "dt=2024-02-30/hour=01/x.ndjson",
            "hour=01/x.ndjson",
        ] {
            assert_eq!(hive_span(none), None, "{none}");
        }
        assert_eq!(
            hive_span("dt=2024-03-01/hour=24/x.ndjson"),
            Some((MARCH_1, MARCH_1 + 24 * H)),
            "bad hour: the day"
        );
    }

    #[test]
    fn groups_partitions_in_time_order_and_prunes_by_span() {
        let parts = partitions(vec![
            object("zzz-export.jsonl", 1),
            object("tenant=b/dt=2024-03-01/hour=00/2.ndjson.zst", 2),
            object("tenant=a/dt=2024-03-01/hour=01/1.ndjson.zst", 3),
            object("tenant=a/dt=2024-03-01/hour=00/9.ndjson.zst", 4),
            object("tenant=a/dt=2024-03-01/hour=00/1.ndjson.zst", 5),
            object("aaa-export.jsonl", 6),
        ]);
        let ids: Vec<&str> = parts.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "tenant=a/dt=2024-03-01/hour=00",
                "tenant=b/dt=2024-03-01/hour=00",
                "tenant=a/dt=2024-03-01/hour=01",
                "aaa-export.jsonl",
                "zzz-export.jsonl"
            ]
        );
        let keys: Vec<&str> = parts[0].objects.iter().map(Object::key).collect();
        assert_eq!(
            keys,
            ["tenant=a/dt=2024-03-01/hour=00/1.ndjson.zst", "tenant=a/dt=2024-03-01/hour=00/9.ndjson.zst"]
        );
        assert_eq!(parts[0].size(), 9);
        // [00:00, 01:00) against since/until.
        let p = &parts[0];
        assert!(p.overlaps(None, None));
        assert!(p.overlaps(Some(MARCH_1 + H - 1), None), "since inside");
        assert!(!p.overlaps(Some(MARCH_1 + H), None), "since at the end: pruned");
        assert!(p.overlaps(None, Some(MARCH_1 + 1)));
        assert!(!p.overlaps(None, Some(MARCH_1)), "until is exclusive");
        assert!(parts[3].overlaps(Some(i64::MAX), Some(0)), "untimed partitions are always read");
    }

    #[test]
    fn fingerprints_change_with_the_object_list() {
        let p = |objects| Partition { id: "d".into(), span: None, objects };
        let a = p(vec![object("d/1.ndjson", 10), object("d/2.ndjson", 20)]);
        assert_eq!(a.fingerprint(), a.clone().fingerprint());
        assert_ne!(
            a.fingerprint(),
            p(vec![object("d/1.ndjson", 10), object("d/2.ndjson", 21)]).fingerprint()
        );
        assert_ne!(a.fingerprint(), p(vec![object("d/1.ndjson", 10)]).fingerprint());
    }

    #[test]
    fn picks_replayable_names() {
        for yes in [
            "a/b.ndjson",
            "b.ndjson.zst",
            "b.ndjson.gz",
            "x.jsonl",
            "x.jsonl.gz",
            "x.jsonl.zst",
            "x.json",
            "x.parquet",
        ] {
            assert!(is_replayable(yes), "{yes}");
        }
        for no in ["_sluice_check", "a/readme.txt", "x.ndjson.tmp", "x.csv"] {
            assert!(!is_replayable(no), "{no}");
        }
    }

    const LINE: &str = r#"{"tenant":"t","ts":"5","labels":{"app":"a"},"line":"l"}"#;

    #[test]
    fn reads_every_compression_and_counts_bad_lines() {
        let text = format!("{LINE}\n\nnot json\r\n{LINE}\r\n{{\"ts\":\"x\",\"line\":\"l\"}}\n");
        let zst = zstd::encode_all(text.as_bytes(), 3).expect("zstd");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(text.as_bytes()).expect("gzip");
        let gz = gz.finish().expect("gzip");
        for (key, data) in [("a.ndjson", text.as_bytes().to_vec()), ("a.ndjson.zst", zst), ("a.jsonl.gz", gz)]
        {
            let r = read_records(key, Bytes::from(data)).expect(key);
            assert_eq!(r.records.len(), 2, "{key}");
            assert_eq!(r.unparseable, 2, "{key}");
            assert_eq!(
                r.first_unparseable.as_deref(),
                Some(format!("{key}:3: not an archive record or logcli JSON line").as_str())
            );
        }
    }

    #[test]
    fn a_truncated_or_corrupt_object_is_an_error_not_a_panic() {
        let text = LINE.repeat(1000);
        let zst = zstd::encode_all(text.as_bytes(), 3).expect("zstd");
        let e = read_records("x.ndjson.zst", Bytes::copy_from_slice(&zst[..zst.len() / 2]))
            .expect_err("truncated");
        assert!(e.starts_with("x.ndjson.zst: cannot decompress"), "{e}");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(text.as_bytes()).expect("gzip");
        let gz = gz.finish().expect("gzip");
        assert!(read_records("x.ndjson.gz", Bytes::copy_from_slice(&gz[..gz.len() / 2])).is_err());
        assert!(read_records("x.ndjson.zst", Bytes::from_static(b"garbage, not zstd")).is_err());
        assert!(read_records("x.parquet", Bytes::from_static(b"PAR1 but not really")).is_err());
    }

    #[test]
    fn reads_the_archives_parquet_objects() {
        use crate::archive::parquet::ParquetWriter;
        use crate::model::LabelSet;
        let labels = LabelSet::new(vec![("app".into(), "api".into()), ("env".into(), "prod".into())]);
        let entries = [
            Entry { timestamp_ns: 1_709_251_199_123_456_789, line: "one".into(), metadata: vec![] },
            Entry { timestamp_ns: 2, line: "two".into(), metadata: vec![("trace_id".into(), "t1".into())] },
        ];
        let mut w = ParquetWriter::new(Vec::new(), crate::config::Compression::Zstd, None).expect("writer");
        for e in &entries {
            w.push("team-a", &labels, e).expect("push");
        }
        let data = w.finish().expect("finish");
        let r = read_records("x.parquet", Bytes::from(data.clone())).expect("reads");
        assert_eq!(r.unparseable, 0);
        let want: Vec<Record> = entries
            .iter()
            .map(|e| Record {
                tenant: Some("team-a".into()),
                labels: labels.pairs().to_vec(),
                entry: e.clone(),
            })
            .collect();
        assert_eq!(r.records, want);
        assert!(
            read_records("x.parquet", Bytes::copy_from_slice(&data[..data.len() - 10])).is_err(),
            "no footer"
        );
    }

    #[tokio::test]
    async fn opens_directories_files_and_data_dirs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let archive = dir.path().join("archive");
        std::fs::create_dir_all(archive.join("tenant=a/dt=2024-03-01/hour=00")).expect("mkdir");
        std::fs::write(archive.join("tenant=a/dt=2024-03-01/hour=00/1.ndjson"), LINE).expect("write");
        std::fs::write(archive.join(store::CHECK_OBJECT), "x").expect("write");
        std::fs::write(archive.join("notes.txt"), "x").expect("write");
        let none = BTreeMap::new();
        let (source, note) =
            open(dir.path().to_str().expect("utf-8"), &S3Config::default(), &none).expect("opens");
        assert!(note.expect("a note").contains("sluice data directory"));
        let keys: Vec<String> =
            source.list().await.expect("lists").iter().map(|o| o.key().to_string()).collect();
        assert_eq!(keys, ["tenant=a/dt=2024-03-01/hour=00/1.ndjson"]);
        let file = archive.join("tenant=a/dt=2024-03-01/hour=00/1.ndjson");
        let (source, _) = open(file.to_str().expect("utf-8"), &S3Config::default(), &none).expect("opens");
        let objects = source.list().await.expect("lists");
        assert_eq!(objects.len(), 1);
        assert_eq!(source.fetch(&objects[0]).await.expect("reads"), LINE.as_bytes());
        let missing = dir.path().join("nope");
        let e = open(missing.to_str().expect("utf-8"), &S3Config::default(), &none).expect_err("missing");
        assert!(e.contains("nope") && e.contains("No such file"), "{e}");
        assert!(!missing.exists(), "never created");
    }
}
