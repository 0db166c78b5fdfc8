//! The archive sink (`type: archive`) end to end: the real binary writing to a real S3 server
//! (SeaweedFS, [`crate::support::s3`]) and to a local directory, read back object by object and
//! by an independent reader (DuckDB). Every test compares the exact multiset of records with
//! what was pushed: nothing lost, nothing twice, every record under the right key.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sluice::archive::store::{CHECK_OBJECT, Store};
use sluice::proto::PushRequest;

use crate::support::plugins::metric;
use crate::support::push::{entry_md, stream};
use crate::support::receiver::now_ns;
use crate::support::s3::{self, S3Server};
use crate::support::sluice::{BIN, Options, Sluice};

const HOUR: i64 = 3_600_000_000_000;

/// One archived entry, as pushed or as read back: labels and metadata sorted by name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Rec {
    tenant: String,
    labels: Vec<(String, String)>,
    ts: i64,
    metadata: Vec<(String, String)>,
    line: String,
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    v.sort();
    v
}

fn rec(tenant: &str, labels: &[(&str, &str)], ts: i64, metadata: &[(&str, &str)], line: &str) -> Rec {
    Rec { tenant: tenant.into(), labels: pairs(labels), ts, metadata: pairs(metadata), line: line.into() }
}

/// A push request of `recs` (one tenant's), one stream per label set. Metadata is sent in
/// reverse order, so the archive has to sort it.
fn request(recs: &[Rec]) -> PushRequest {
    let mut streams: BTreeMap<&[(String, String)], Vec<&Rec>> = BTreeMap::new();
    for r in recs {
        streams.entry(&r.labels).or_default().push(r);
    }
    let streams = streams
        .into_iter()
        .map(|(labels, recs)| {
            let selector: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            let entries = recs
                .iter()
                .map(|r| {
                    let md: Vec<(&str, &str)> =
                        r.metadata.iter().rev().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                    entry_md(r.ts, &r.line, &md)
                })
                .collect();
            stream(&format!("{{{}}}", selector.join(", ")), entries)
        })
        .collect();
    PushRequest { streams }
}

/// Pushes `recs` (grouped by tenant, one request each); every push must be accepted.
async fn push_all(sluice: &Sluice, recs: &[Rec]) {
    let mut by_tenant: BTreeMap<&str, Vec<Rec>> = BTreeMap::new();
    for r in recs {
        by_tenant.entry(&r.tenant).or_default().push(r.clone());
    }
    for (tenant, recs) in by_tenant {
        let resp = sluice.push_proto(Some(tenant), &request(&recs)).await;
        assert_eq!(resp.status, 204, "push for {tenant}: {}\n{}", resp.body, sluice.logs());
    }
}

/// The records pushed by the S3 tests: two tenants, three streams, entries in three hours (now,
/// an hour ago, and a day ago, so also two dates), with and without structured metadata, and
/// lines that need JSON escaping.
fn sample(tag: &str, now: i64) -> Vec<Rec> {
    let mut out = Vec::new();
    let streams: [&[(&str, &str)]; 3] =
        [&[("app", "api"), ("env", "prod")], &[("app", "worker")], &[("app", "api"), ("env", "dev")]];
    for tenant in ["team-a", "team-b"] {
        for (s, labels) in streams.iter().enumerate() {
            for (h, base) in [now - 25 * HOUR, now - HOUR, now].into_iter().enumerate() {
                for i in 0..3 {
                    let ts = base + (s * 100 + i) as i64;
                    let line = match i {
                        0 => format!("{tag} {tenant} s{s} h{h}: quote \" backslash \\ tab \t ünïcode ✓"),
                        1 => format!("{tag} {tenant} s{s} h{h}: multi\nline"),
                        _ => format!("{tag} {tenant} s{s} h{h}: plain"),
                    };
                    let trace = format!("{tenant}-{s}-{h}");
                    let md: Vec<(&str, &str)> = match i {
                        0 => vec![],
                        1 => vec![("trace_id", trace.as_str())],
                        _ => vec![("trace_id", trace.as_str()), ("a_first", "1"), ("zone", "eu")],
                    };
                    out.push(rec(tenant, labels, ts, &md, &line));
                }
            }
        }
    }
    out
}

fn sorted(mut recs: Vec<Rec>) -> Vec<Rec> {
    recs.sort();
    recs
}

/// `(YYYY-MM-DD, HH)` of a timestamp, UTC.
fn date_hour(ts: i64) -> (String, String) {
    let t = chrono::DateTime::from_timestamp_nanos(ts);
    (t.format("%Y-%m-%d").to_string(), t.format("%H").to_string())
}

/// Decompresses an object by its name's ending.
fn decompress(key: &str, bytes: &[u8]) -> Result<String, String> {
    let raw = if key.ends_with(".ndjson.zst") {
        zstd::decode_all(bytes).map_err(|e| format!("{key}: not zstd: {e}"))?
    } else if key.ends_with(".ndjson.gz") {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(bytes)
            .read_to_end(&mut out)
            .map_err(|e| format!("{key}: not gzip: {e}"))?;
        out
    } else if key.ends_with(".ndjson") {
        bytes.to_vec()
    } else {
        return Err(format!("{key}: not an archive object"));
    };
    String::from_utf8(raw).map_err(|e| format!("{key}: not UTF-8: {e}"))
}

fn string_map(v: &serde_json::Value, field: &str, line: &str) -> Result<Vec<(String, String)>, String> {
    let obj = v[field].as_object().ok_or_else(|| format!("`{field}` is not an object: {line}"))?;
    let keys: Vec<&String> = obj.keys().collect();
    if !keys.is_sorted() {
        return Err(format!("`{field}` is not sorted by name: {line}"));
    }
    obj.iter()
        .map(|(k, v)| {
            v.as_str()
                .map(|s| (k.clone(), s.to_string()))
                .ok_or_else(|| format!("`{field}.{k}` is not a string: {line}"))
        })
        .collect()
}

/// One record, checked field by field against the format (independently of sluice's parser).
fn parse_record(line: &str) -> Result<Rec, String> {
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("not JSON ({e}): {line}"))?;
    let obj = v.as_object().ok_or_else(|| format!("not an object: {line}"))?;
    let fields: Vec<&str> = obj.keys().map(String::as_str).collect();
    let mut want = vec!["labels", "line", "structured_metadata", "tenant", "time", "ts"];
    let mut got = fields.clone();
    got.sort();
    want.sort();
    if got != want {
        return Err(format!("fields {fields:?}, want {want:?}: {line}"));
    }
    let ts: i64 = v["ts"]
        .as_str()
        .ok_or_else(|| format!("`ts` is not a string: {line}"))?
        .parse()
        .map_err(|e| format!("`ts` is not nanoseconds ({e}): {line}"))?;
    let time = chrono::DateTime::from_timestamp_nanos(ts).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    if v["time"].as_str() != Some(time.as_str()) {
        return Err(format!("`time` should be {time}: {line}"));
    }
    Ok(Rec {
        tenant: v["tenant"].as_str().ok_or_else(|| format!("`tenant` is not a string: {line}"))?.to_string(),
        labels: string_map(&v, "labels", line)?,
        ts,
        metadata: string_map(&v, "structured_metadata", line)?,
        line: v["line"].as_str().ok_or_else(|| format!("`line` is not a string: {line}"))?.to_string(),
    })
}

/// Every record of an object; the object must end with a newline (no partial record).
fn parse_object(key: &str, bytes: &[u8]) -> Result<Vec<Rec>, String> {
    let text = decompress(key, bytes)?;
    if !text.is_empty() && !text.ends_with('\n') {
        return Err(format!("{key} does not end with a newline"));
    }
    text.lines()
        .map(|l| {
            let rec = parse_record(l).map_err(|e| format!("{key}: {e}"))?;
            same_as_sluice_reads(l, &rec).map_err(|e| format!("{key}: {e}"))?;
            Ok(rec)
        })
        .collect()
}

/// Sluice's own reader (what `sluice replay` uses) reads the record the same way.
fn same_as_sluice_reads(line: &str, rec: &Rec) -> Result<(), String> {
    let read = sluice::archive::record::parse(line)
        .map_err(|e| format!("sluice's reader refuses it ({e}): {line}"))?
        .ok_or_else(|| format!("sluice's reader finds no record: {line}"))?;
    let mut labels = read.labels.clone();
    labels.sort();
    let mut metadata = read.entry.metadata.clone();
    metadata.sort();
    let theirs = Rec {
        tenant: read.tenant.clone().unwrap_or_default(),
        labels,
        ts: read.entry.timestamp_ns,
        metadata,
        line: read.entry.line.clone(),
    };
    if read.tenant.is_none() || &theirs != rec {
        return Err(format!("sluice's reader reads {read:?}, not {rec:?}"));
    }
    Ok(())
}

/// Checks that `key` (relative to the bucket or directory) is
/// `<prefix>/tenant=<t>/dt=<date>/hour=<HH>/<ms>-<8 hex>-<6 digits>.<ext>` and that every record
/// in it belongs there.
fn check_key(key: &str, prefix: &str, ext: &str, recs: &[Rec]) -> Result<(), String> {
    let pattern = format!(
        r"^{}tenant=([^/]+)/dt=(\d{{4}}-\d{{2}}-\d{{2}})/hour=(\d{{2}})/\d{{13}}-[0-9a-f]{{8}}-\d{{6}}\.{}$",
        if prefix.is_empty() { String::new() } else { format!("{}/", regex::escape(prefix)) },
        regex::escape(ext)
    );
    let re = regex::Regex::new(&pattern).expect("pattern");
    let caps = re.captures(key).ok_or_else(|| format!("key {key} does not match {pattern}"))?;
    if recs.is_empty() {
        return Err(format!("{key} holds no records"));
    }
    for r in recs {
        let (date, hour) = date_hour(r.ts);
        if r.tenant != caps[1] || date != caps[2] || hour != caps[3] {
            return Err(format!("{key} holds a record of tenant {} at {date} hour {hour}: {r:?}", r.tenant));
        }
    }
    Ok(())
}

/// An object read back: key, records, size.
#[derive(Debug)]
struct Object {
    key: String,
    recs: Vec<Rec>,
    size: usize,
}

/// Every archive object in `store`; other keys are returned apart.
async fn read_store(store: &Store) -> Result<(Vec<Object>, Vec<String>), String> {
    let mut objects = Vec::new();
    let mut others = Vec::new();
    for (key, bytes) in s3::objects(store).await? {
        if key.contains(".ndjson") {
            objects.push(Object { recs: parse_object(&key, &bytes)?, size: bytes.len(), key });
        } else {
            others.push(key);
        }
    }
    Ok((objects, others))
}

/// The line of every record in `store`, each object checked against the format.
pub(crate) async fn archived_lines(store: &Store) -> Result<Vec<String>, String> {
    let (objects, _) = read_store(store).await?;
    Ok(objects.into_iter().flat_map(|o| o.recs).map(|r| r.line).collect())
}

/// Polls `store` until it holds at least `n` records (objects appear whole, so this never sees
/// half an object).
async fn wait_for_records(store: &Store, n: usize, timeout: Duration) -> Result<Vec<Object>, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match read_store(store).await {
            Ok((objects, _)) => {
                let got: usize = objects.iter().map(|o| o.recs.len()).sum();
                if got >= n {
                    return Ok(objects);
                }
                format!("{got} records in {} objects", objects.len())
            }
            Err(e) => e,
        };
        if Instant::now() > deadline {
            return Err(format!("{} after {timeout:?}: {last}, want {n} records", store.url));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn all_records(objects: &[Object]) -> Vec<Rec> {
    sorted(objects.iter().flat_map(|o| o.recs.iter().cloned()).collect())
}

/// Polls `/metrics` until `name{labels}` satisfies `ok`; returns its value.
async fn wait_for_metric(
    sluice: &Sluice,
    name: &str,
    labels: &[(&str, &str)],
    ok: impl Fn(f64) -> bool,
    timeout: Duration,
) -> f64 {
    let deadline = Instant::now() + timeout;
    loop {
        let (_, text) = sluice.get("/metrics").await;
        let value = metric(&text, name, labels);
        if let Some(v) = value
            && ok(v)
        {
            return v;
        }
        if Instant::now() > deadline {
            panic!("{name}{labels:?} is {value:?} after {timeout:?}\n{text}\n{}", sluice.logs());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends SIGTERM and waits for sluice to exit; returns whether it exited 0.
async fn terminate(sluice: &mut Sluice, timeout: Duration) -> bool {
    let status = sluice.terminate(timeout).await.unwrap_or_else(|e| panic!("{e}\n{}", sluice.logs()));
    status.success()
}

/// An archive sink `archive` on `s3` below `prefix`, with `settings` (YAML lines at 4 spaces)
/// and `extra` top-level YAML.
fn s3_config(s3: &S3Server, prefix: &str, settings: &str, extra: &str) -> String {
    format!("sinks:\n  archive:\n    type: archive\n{}{settings}{extra}", s3.sink_yaml(prefix))
}

async fn start_on(s3: &S3Server, config: String, data_dir: Option<PathBuf>) -> Sluice {
    Sluice::start_on(Options { config: Some(config), env: s3.env(), ..Default::default() }, data_dir).await
}

const FAST_RETRY: &str = "    retry: { min_backoff: 50ms, max_backoff: 300ms }\n";

#[tokio::test]
async fn s3_round_trip_of_two_tenants_several_streams_and_hours() {
    let s3 = S3Server::start("archive").await;
    let settings = format!("    max_object_age: 300ms\n{FAST_RETRY}");
    let mut sluice =
        start_on(&s3, s3_config(&s3, "sluice/prod", &settings, "server: { shutdown_timeout: 10s }\n"), None)
            .await;
    let bucket = s3.store("");
    assert_eq!(
        s3::keys(&bucket).await.expect("list"),
        Vec::<String>::new(),
        "the start check leaves nothing behind"
    );

    // The first round is sealed by max_object_age while sluice runs; the second at SIGTERM
    // at the latest.
    let now = now_ns();
    let first: Vec<Rec> = sample("first", now).into_iter().filter(|r| r.tenant == "team-a").collect();
    push_all(&sluice, &first).await;
    let objects = wait_for_records(&bucket, first.len(), Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", sluice.logs()));
    assert_eq!(all_records(&objects), sorted(first.clone()), "the first round, by age\n{}", sluice.logs());
    let sent = first.len() as f64;
    wait_for_metric(
        &sluice,
        "sluice_sink_sent_entries_total",
        &[("sink", "archive")],
        |v| v == sent,
        Duration::from_secs(5),
    )
    .await;
    let objects_total = wait_for_metric(
        &sluice,
        "sluice_archive_objects_total",
        &[("sink", "archive")],
        |v| v == objects.len() as f64,
        Duration::from_secs(5),
    )
    .await;
    // The key has no label in it: one object per hour, whatever the stream.
    assert_eq!(objects_total, 3.0, "{:?}", objects.iter().map(|o| &o.key).collect::<Vec<_>>());

    let second = sample("second", now);
    push_all(&sluice, &second).await;
    assert!(terminate(&mut sluice, Duration::from_secs(15)).await, "exit status\n{}", sluice.logs());

    let (objects, others) = read_store(&bucket).await.unwrap_or_else(|e| panic!("{e}\n{}", sluice.logs()));
    assert_eq!(others, Vec::<String>::new(), "only archive objects, no {CHECK_OBJECT}");
    let mut pushed = first;
    pushed.extend(second);
    assert_eq!(all_records(&objects), sorted(pushed), "every entry exactly once\n{}", sluice.logs());
    for o in &objects {
        check_key(&o.key, "sluice/prod", "ndjson.zst", &o.recs).unwrap_or_else(|e| panic!("{e}"));
    }
    let tenants: std::collections::BTreeSet<&str> =
        objects.iter().filter_map(|o| o.key.split('/').nth(2)).collect();
    assert_eq!(tenants.into_iter().collect::<Vec<_>>(), ["tenant=team-a", "tenant=team-b"]);
    let dates: std::collections::BTreeSet<String> =
        objects.iter().filter_map(|o| o.key.split('/').nth(3).map(str::to_string)).collect();
    // Entries of now, an hour ago and a day ago: two dates, three in the first hour of a day.
    let pushed_dates: std::collections::BTreeSet<String> =
        all_records(&objects).iter().map(|r| format!("dt={}", date_hour(r.ts).0)).collect();
    assert_eq!(dates, pushed_dates, "one date partition per date of the entries");
    assert!((2..=3).contains(&dates.len()), "{dates:?}");
}

/// Runs `sluice run` with `config` until it exits (at most `timeout`): (exit code, stderr,
/// how long it ran).
fn run_until_exit(
    config: &str,
    env: &[(String, String)],
    timeout: Duration,
) -> (Option<i32>, String, Duration) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("sluice.yaml");
    std::fs::write(&path, config).expect("write config");
    let started = Instant::now();
    let mut child = Command::new(BIN)
        .arg("run")
        .arg("--config")
        .arg(&path)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.path().join("stdout")).expect("stdout"))
        .stderr(std::fs::File::create(dir.path().join("stderr")).expect("stderr"))
        .spawn()
        .expect("start sluice");
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status.code();
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = started.elapsed();
    (code, std::fs::read_to_string(dir.path().join("stderr")).unwrap_or_default(), elapsed)
}

#[tokio::test]
async fn a_wrong_secret_or_a_missing_bucket_fails_the_start_with_a_hint_and_an_unreachable_store_does_not() {
    let s3 = S3Server::start("present").await;
    let config = |url: &str, endpoint: &str| {
        format!(
            "sinks:\n  archive:\n    type: archive\n    url: \"{url}\"\n    s3: {{ endpoint: \"{endpoint}\", region: us-east-1 }}\n"
        )
    };
    let mut wrong_secret = s3.env();
    for (k, v) in &mut wrong_secret {
        if k == "AWS_SECRET_ACCESS_KEY" {
            *v = "not-the-secret".into();
        }
    }
    let cases = [
        (
            "wrong secret",
            config(&s3.url("x"), &s3.endpoint()),
            wrong_secret,
            "the store refused the credentials",
        ),
        ("missing bucket", config("s3://absent/x", &s3.endpoint()), s3.env(), "the bucket does not exist"),
    ];
    for (what, config, env, hint) in cases {
        let (code, stderr, elapsed) = run_until_exit(&config, &env, Duration::from_secs(20));
        assert!(
            code.is_some_and(|c| c != 0),
            "{what}: exits non-zero, got {code:?} after {elapsed:?}\n{stderr}"
        );
        assert!(elapsed < Duration::from_secs(10), "{what}: took {elapsed:?}\n{stderr}");
        // The error, which may go on over several lines (a store's XML answer).
        let lines: Vec<&str> = stderr.lines().collect();
        let at = lines
            .iter()
            .position(|l| l.starts_with("error:"))
            .unwrap_or_else(|| panic!("{what}: no error\n{stderr}"));
        let error = lines[at..].join("\n");
        assert!(
            error.contains("archive") && error.contains("cannot write to s3://"),
            "{what}: names the sink and the store: {error}"
        );
        assert!(error.contains(hint), "{what}: should say `{hint}`: {error}");
    }
    // Nothing was written to the bucket that exists.
    assert_eq!(s3::keys(&s3.store("")).await.expect("list"), Vec::<String>::new());

    // A store that does not answer may only be down for now: sluice starts (a restart during an
    // outage must not stop the gateway), says why the store cannot be used, and spools.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port");
    let unreachable = config("s3://present/x", &format!("http://{closed}"));
    let sluice = start_on(&s3, unreachable, None).await;
    let logs = sluice.logs();
    assert!(
        logs.contains("cannot write to s3://") && logs.contains("the store cannot be reached"),
        "names the store and the cause: {logs}"
    );
    assert!(logs.contains("starting anyway"), "{logs}");
}

/// The spool's sealed objects waiting for upload.
fn spooled(data_dir: &Path) -> Vec<PathBuf> {
    let dir = data_dir.join("spool").join("archive");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "ready")).collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[tokio::test]
async fn entries_pushed_while_the_store_is_down_arrive_once_when_it_is_back() {
    let mut s3 = S3Server::start("archive").await;
    let settings = format!("    max_object_age: 200ms\n{FAST_RETRY}");
    let sluice = start_on(&s3, s3_config(&s3, "down", &settings, ""), None).await;
    s3.stop().await;

    let now = now_ns();
    let first = sample("while down", now);
    push_all(&sluice, &first).await;
    // Sealed, tried, failed: the objects wait in the spool.
    wait_for_metric(
        &sluice,
        "sluice_sink_retries_total",
        &[("sink", "archive"), ("reason", "store_error")],
        |v| v >= 1.0,
        Duration::from_secs(10),
    )
    .await;
    wait_for_metric(
        &sluice,
        "sluice_archive_spool_bytes",
        &[("sink", "archive")],
        |v| v > 0.0,
        Duration::from_secs(5),
    )
    .await;
    assert!(!spooled(&sluice.data_dir()).is_empty(), "sealed objects are in the spool");
    // More while uploads are being retried.
    let second: Vec<Rec> = sample("still down", now + 1000);
    push_all(&sluice, &second).await;
    let (_, metrics) = sluice.get("/metrics").await;
    assert_eq!(
        metric(&metrics, "sluice_sink_sent_entries_total", &[("sink", "archive")]).unwrap_or(0.0),
        0.0
    );

    s3.restart().await;
    let mut pushed = first;
    pushed.extend(second);
    let store = s3.store("down");
    wait_for_records(&store, pushed.len(), Duration::from_secs(15))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", sluice.logs()));
    wait_for_metric(
        &sluice,
        "sluice_archive_spool_bytes",
        &[("sink", "archive")],
        |v| v == 0.0,
        Duration::from_secs(5),
    )
    .await;
    let (objects, others) = read_store(&store).await.expect("read");
    assert_eq!(others, Vec::<String>::new());
    assert_eq!(all_records(&objects), sorted(pushed.clone()), "every entry exactly once\n{}", sluice.logs());
    for o in &objects {
        check_key(&o.key, "", "ndjson.zst", &o.recs).unwrap_or_else(|e| panic!("{e}"));
    }
    let (_, metrics) = sluice.get("/metrics").await;
    assert_eq!(
        metric(&metrics, "sluice_archive_objects_total", &[("sink", "archive")]),
        Some(objects.len() as f64)
    );
    assert_eq!(
        metric(&metrics, "sluice_sink_sent_entries_total", &[("sink", "archive")]),
        Some(pushed.len() as f64)
    );
    assert!(spooled(&sluice.data_dir()).is_empty(), "the spool is empty");
}

#[tokio::test]
async fn objects_left_in_the_spool_at_shutdown_are_uploaded_at_the_next_start() {
    let mut s3 = S3Server::start("archive").await;
    let data = tempfile::tempdir().expect("temp dir");
    // Only shutdown seals these objects; the store is down then, and stays down past the
    // shutdown timeout.
    let settings = format!("    max_object_age: 1h\n{FAST_RETRY}");
    let config = s3_config(&s3, "restart", &settings, "server: { shutdown_timeout: 1s }\n");
    let mut sluice = start_on(&s3, config.clone(), Some(data.path().to_path_buf())).await;
    let pushed = sample("left behind", now_ns());
    push_all(&sluice, &pushed).await;
    s3.stop().await;
    let started = Instant::now();
    let exited_zero = terminate(&mut sluice, Duration::from_secs(10)).await;
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}\n{}", started.elapsed(), sluice.logs());
    let logs = sluice.logs();
    drop(sluice);
    // Not a failed shutdown: the spool keeps what the store did not take.
    assert!(exited_zero, "sluice exits 0 when its archive spool holds the rest\n{logs}");
    assert!(logs.contains("they are uploaded at the next start"), "{logs}");

    // Everything is in the spool, sealed and whole.
    let files = spooled(data.path());
    assert!(!files.is_empty(), "{logs}");
    let mut in_spool = Vec::new();
    for f in &files {
        let key =
            std::fs::read_to_string(f.with_extension("key")).expect("a .key file next to each .ready one");
        let bytes = std::fs::read(f).expect("read");
        in_spool.extend(parse_object(&key, &bytes).unwrap_or_else(|e| panic!("{e}")));
    }
    assert_eq!(sorted(in_spool), sorted(pushed.clone()), "the spool holds every entry\n{logs}");

    s3.restart().await;
    let sluice = start_on(&s3, config, Some(data.path().to_path_buf())).await;
    let store = s3.store("restart");
    let objects = wait_for_records(&store, pushed.len(), Duration::from_secs(15))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", sluice.logs()));
    assert_eq!(all_records(&objects), sorted(pushed), "every entry exactly once\n{}", sluice.logs());
    for o in &objects {
        check_key(&o.key, "", "ndjson.zst", &o.recs).unwrap_or_else(|e| panic!("{e}"));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !spooled(data.path()).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(spooled(data.path()), Vec::<PathBuf>::new(), "uploaded objects leave the spool");
}

#[tokio::test]
async fn an_object_larger_than_part_size_is_uploaded_in_parts() {
    let s3 = S3Server::start("archive").await;
    let settings = format!(
        "    compression: none\n    part_size: 5MiB\n    max_object_size: 12MiB\n    max_object_age: 1h\n{FAST_RETRY}"
    );
    let mut sluice =
        start_on(&s3, s3_config(&s3, "big", &settings, "server: { shutdown_timeout: 15s }\n"), None).await;
    // 260 lines of 50 kB: ~13 MB, so one object is sealed at 12 MiB while sluice runs and the
    // rest at SIGTERM.
    let now = now_ns();
    let filler = "0123456789abcdef".repeat(50_000 / 16);
    let pushed: Vec<Rec> =
        (0..260).map(|i| rec("big", &[("app", "bulk")], now + i, &[], &format!("{i:04} {filler}"))).collect();
    for chunk in pushed.chunks(26) {
        push_all(&sluice, chunk).await;
    }
    let store = s3.store("big");
    // The full object arrives before shutdown.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (objects, _) = read_store(&store).await.expect("read");
        if !objects.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "no object sealed by size\n{}", sluice.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(terminate(&mut sluice, Duration::from_secs(20)).await, "exit status\n{}", sluice.logs());

    let (objects, _) = read_store(&store).await.expect("read");
    assert_eq!(all_records(&objects), sorted(pushed), "every entry exactly once\n{}", sluice.logs());
    let part = 5 * 1024 * 1024;
    let big: Vec<&Object> = objects.iter().filter(|o| o.size > part).collect();
    assert_eq!(
        big.len(),
        1,
        "one object over part_size: {:?}",
        objects.iter().map(|o| (&o.key, o.size)).collect::<Vec<_>>()
    );
    let big = big[0];
    assert!(big.size >= 12 * 1024 * 1024, "sealed at max_object_size: {} bytes", big.size);
    for o in &objects {
        check_key(&o.key, "", "ndjson", &o.recs).unwrap_or_else(|e| panic!("{e}"));
    }
    // S3 gives a multipart object the ETag `<md5 of the parts' md5s>-<parts>`.
    let meta = {
        use object_store::ObjectStoreExt;
        store.objects.head(&object_store::path::Path::from(big.key.as_str())).await.expect("head")
    };
    assert_eq!(meta.size as usize, big.size);
    let etag = meta.e_tag.clone().unwrap_or_default();
    let parts = big.size.div_ceil(part);
    assert!(
        etag.trim_matches('"').ends_with(&format!("-{parts}")),
        "ETag {etag:?} of {} bytes: not a multipart upload of {parts} parts",
        big.size
    );
}

/// `import duckdb` works, installing it with pip (once) when it does not.
fn duckdb_available() -> Result<(), String> {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    READY
        .get_or_init(|| {
            let imports = || {
                Command::new("python3")
                    .args(["-c", "import duckdb"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            };
            if imports() {
                return Ok(());
            }
            let lock_path = std::env::temp_dir().join("sluice-e2e-duckdb-install.lock");
            let lock =
                std::fs::File::create(&lock_path).map_err(|e| format!("{}: {e}", lock_path.display()))?;
            lock.lock().map_err(|e| format!("lock {}: {e}", lock_path.display()))?;
            if !imports() {
                let out = Command::new("python3")
                    .args(["-m", "pip", "install", "-q", DUCKDB_PIP])
                    .stdin(Stdio::null())
                    .output()
                    .map_err(|e| format!("cannot run python3 -m pip: {e}"))?;
                if !out.status.success() {
                    return Err(format!(
                        "pip install {DUCKDB_PIP} failed:\n{}{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
            }
            if imports() {
                Ok(())
            } else {
                Err(format!("`import duckdb` fails after pip install {DUCKDB_PIP}"))
            }
        })
        .clone()
}

/// What `.ci/run` installs too.
const DUCKDB_PIP: &str = "duckdb==2.0.0";

/// Archives to a local directory with `compression` (or as Parquet), then reads the archive
/// with DuckDB.
async fn duckdb_reads_the_archive(compression: &str, ext: &str) {
    duckdb_available().unwrap_or_else(|e| panic!("DuckDB is not available: {e}"));
    let archive = tempfile::tempdir().expect("temp dir");
    let root = archive.path().join("archive");
    let parquet = compression == "parquet";
    let format = if parquet {
        "format: parquet\n    compression: zstd".to_string()
    } else {
        format!("compression: {compression}")
    };
    let config = format!(
        "sinks:\n  archive:\n    type: archive\n    url: \"{}\"\n    {format}\n    max_object_age: 1h\nserver: {{ shutdown_timeout: 10s }}\n",
        root.display()
    );
    let mut sluice = Sluice::start(&config).await;
    let pushed = sample(compression, now_ns());
    push_all(&sluice, &pushed).await;
    assert!(terminate(&mut sluice, Duration::from_secs(15)).await, "exit status\n{}", sluice.logs());

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/e2e/support/read_archive.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(&root)
        .arg(compression)
        .stdin(Stdio::null())
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{} failed: {stderr}\n{stdout}", script.display());
    let read: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"));

    assert_eq!(read["count"], serde_json::json!(pushed.len()), "DuckDB counts every record");
    assert_eq!(read["tenants"], serde_json::json!(["team-a", "team-b"]));
    // Three hours for each of two tenants (the key has no label in it: streams share objects).
    assert_eq!(read["files"], serde_json::json!(6));
    let records = read["records"].as_array().expect("records");
    let mut got = Vec::new();
    for r in records {
        let line = r.to_string();
        let ts: i64 =
            r["ts"].as_str().unwrap_or_else(|| panic!("ts is read as a string: {line}")).parse().expect("ts");
        let (date, hour) = date_hour(ts);
        assert_eq!(r["dt"], serde_json::Value::from(date.clone()), "the dt partition: {line}");
        assert_eq!(
            r["hour"],
            serde_json::Value::from(hour.parse::<i64>().expect("hour")),
            "the hour partition: {line}"
        );
        let tenant = r["tenant"].as_str().expect("tenant");
        let file = r["file"].as_str().expect("file");
        assert!(file.starts_with(&format!("tenant={tenant}/dt={date}/hour={hour}/")), "{file}: {line}");
        assert!(file.ends_with(&format!(".{ext}")), "{file}");
        let time =
            chrono::DateTime::from_timestamp_nanos(ts).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        if parquet {
            assert!(r["time"].is_null(), "Parquet has no `time` column: {line}");
        } else {
            assert_eq!(r["time"], serde_json::Value::from(time), "{line}");
        }
        let map = |field: &str| -> Vec<(String, String)> {
            let obj = r[field].as_object().unwrap_or_else(|| panic!("{field}: {line}"));
            let mut v: Vec<(String, String)> =
                obj.iter().map(|(k, v)| (k.clone(), v.as_str().expect("a string").to_string())).collect();
            v.sort();
            v
        };
        got.push(Rec {
            tenant: tenant.to_string(),
            labels: map("labels"),
            ts,
            metadata: map("structured_metadata"),
            line: r["line"].as_str().expect("line").to_string(),
        });
    }
    assert_eq!(sorted(got), sorted(pushed), "DuckDB reads back exactly what was pushed");
}

#[tokio::test]
async fn duckdb_reads_a_zstd_archive() {
    duckdb_reads_the_archive("zstd", "ndjson.zst").await;
}

#[tokio::test]
async fn duckdb_reads_a_gzip_archive() {
    duckdb_reads_the_archive("gzip", "ndjson.gz").await;
}

#[tokio::test]
async fn duckdb_reads_an_uncompressed_archive() {
    duckdb_reads_the_archive("none", "ndjson").await;
}

#[tokio::test]
async fn duckdb_reads_a_parquet_archive() {
    duckdb_reads_the_archive("parquet", "parquet").await;
}

#[tokio::test]
async fn a_full_spool_makes_ingest_answer_429_and_loses_nothing() {
    let mut s3 = S3Server::start("archive").await;
    let settings =
        format!("    max_object_size: 64KiB\n    max_spool: 128KiB\n    max_object_age: 200ms\n{FAST_RETRY}");
    // The in-memory path: with the write-ahead log the log would fill first (durability.rs).
    let extra = "queue: { max_entries: 100000, max_bytes: 256KiB }\nserver: { shutdown_timeout: 10s }\nwal: { ack: in_memory }\n";
    let sluice = start_on(&s3, s3_config(&s3, "full", &settings, extra), None).await;
    s3.stop().await;

    // Random hex lines: they do not compress much, so the spool fills.
    let now = now_ns();
    let mut accepted = Vec::new();
    let mut throttled = None;
    // A push needs room for its body and its decoded form while it is read, so the first 429s
    // come while the spool can still take a little: push until three in a row are refused.
    let mut refused_in_a_row = 0;
    for p in 0..200 {
        let recs: Vec<Rec> = (0..50)
            .map(|i| {
                let line: String = (0..1000).map(|_| fastrand::digit(16)).collect();
                rec("bp", &[("app", "full")], now + p * 1000 + i, &[("push", &p.to_string())], &line)
            })
            .collect();
        let resp = sluice.push_proto(Some("bp"), &request(&recs)).await;
        match resp.status {
            204 => {
                accepted.extend(recs);
                refused_in_a_row = 0;
            }
            429 => {
                throttled = Some(resp);
                refused_in_a_row += 1;
                if refused_in_a_row == 3 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("push {p}: unexpected {other}: {}\n{}", resp.body, sluice.logs()),
        }
    }
    assert_eq!(refused_in_a_row, 3, "the spool never stayed full\n{}", sluice.logs());
    let throttled = throttled.unwrap_or_else(|| {
        panic!("no 429 after {} accepted entries with the store down\n{}", accepted.len(), sluice.logs())
    });
    assert!(!accepted.is_empty(), "the spool and the queue take some first");
    // Still full: the next push of the same size is refused too.
    let again: Vec<Rec> = (0..50)
        .map(|i| {
            let line: String = (0..1000).map(|_| fastrand::digit(16)).collect();
            rec("bp", &[("app", "full")], now - 1000 + i, &[], &line)
        })
        .collect();
    let resp = sluice.push_proto(Some("bp"), &request(&again)).await;
    assert_eq!(resp.status, 429, "{}", resp.body);
    let (_, metrics) = sluice.get("/metrics").await;
    let spool = metric(&metrics, "sluice_archive_spool_bytes", &[("sink", "archive")]).unwrap_or(0.0);
    assert!(
        spool > 0.0 && spool <= 128.0 * 1024.0 + 64.0 * 1024.0,
        "spool bytes {spool} within max_spool and one object"
    );
    eprintln!("backpressure: {} entries accepted, then 429 ({})", accepted.len(), throttled.body.trim());

    s3.restart().await;
    let store = s3.store("full");
    let objects = wait_for_records(&store, accepted.len(), Duration::from_secs(20))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", sluice.logs()));
    assert_eq!(
        all_records(&objects),
        sorted(accepted.clone()),
        "every accepted entry exactly once, no refused one\n{}",
        sluice.logs()
    );
    // Ingest takes pushes again.
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = rec("bp", &[("app", "full")], now + 999_999, &[], "after the outage");
    loop {
        let resp = sluice.push_proto(Some("bp"), &request(std::slice::from_ref(&after))).await;
        if resp.status == 204 {
            break;
        }
        assert!(Instant::now() < deadline, "still {} after the store is back: {}", resp.status, resp.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    accepted.push(after);
    let objects = wait_for_records(&store, accepted.len(), Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", sluice.logs()));
    assert_eq!(all_records(&objects), sorted(accepted));
}
