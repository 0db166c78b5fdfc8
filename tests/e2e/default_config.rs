//! The embedded default: `sluice run` with no configuration file archives to zstd-compressed
//! NDJSON objects under `<data-dir>/archive/`, each sealed within 10 s (`max_object_age`) or at
//! shutdown; `--loki-url` adds forwarding.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::push::{entry_md, one};
use crate::support::receiver::{Receiver, now_ns};
use crate::support::sluice::{Options, Sluice};
use crate::support::{DELIVERY, ok_or_logs};

/// The embedded default's `max_object_age`.
const MAX_OBJECT_AGE: Duration = Duration::from_secs(10);

fn archive_objects(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(".ndjson.zst") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Every JSON object in the archive objects under `dir`. Objects appear whole (moved into
/// place once sealed), so each must decompress completely into complete lines.
fn records(dir: &Path) -> Vec<(PathBuf, serde_json::Value)> {
    let mut out = Vec::new();
    for f in archive_objects(dir) {
        let raw = std::fs::read(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let text =
            zstd::decode_all(&raw[..]).unwrap_or_else(|e| panic!("{} is not whole zstd: {e}", f.display()));
        let text = String::from_utf8(text).unwrap_or_else(|e| panic!("{} is not UTF-8: {e}", f.display()));
        assert!(text.ends_with('\n'), "{} ends in a partial line", f.display());
        for line in text.lines() {
            match serde_json::from_str(line) {
                Ok(v) => out.push((f.clone(), v)),
                Err(e) => panic!("{} has a line that is not JSON ({e}): {line}", f.display()),
            }
        }
    }
    out
}

/// Polls the archive until `n` records are there.
async fn wait_for_records(
    dir: &Path,
    n: usize,
    timeout: Duration,
) -> Result<Vec<(PathBuf, serde_json::Value)>, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let got = records(dir);
        if got.len() >= n {
            return Ok(got);
        }
        if Instant::now() > deadline {
            return Err(format!("{} records under {} after {timeout:?}, want {n}", got.len(), dir.display()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

use sluice::archive::key::civil_from_days as civil;

#[tokio::test]
async fn without_a_config_pushes_are_archived_as_ndjson() {
    let mut sluice = Sluice::start_with(Options::default()).await;
    let ts = now_ns();
    let req = one(
        r#"{app="archive", env="test"}"#,
        vec![entry_md(ts, "archived line", &[("trace_id", "t-1")]), entry_md(ts + 1, "second", &[])],
    );
    let resp = sluice.push_proto(None, &req).await;
    assert_eq!(resp.status, 204, "{}\n{}", resp.body, sluice.logs());
    let archive = sluice.data_dir().join("archive");
    // The object is still open (sealed 10 s after its first entry): nothing is visible yet.
    assert!(records(&archive).is_empty(), "an open object is not in the archive yet");
    // SIGTERM seals every open object and moves it into the archive before sluice exits.
    let status =
        sluice.terminate(Duration::from_secs(15)).await.unwrap_or_else(|e| panic!("{e}\n{}", sluice.logs()));
    assert!(status.success(), "exit status {status}\n{}", sluice.logs());
    let recs = records(&archive);
    assert_eq!(recs.len(), 2, "{recs:?}\n{}", sluice.logs());
    assert_eq!(archive_objects(&archive).len(), 1, "one stream in one hour: one object");
    assert!(!archive.join(sluice::archive::store::CHECK_OBJECT).exists(), "the start check leaves nothing");

    let secs = ts.div_euclid(1_000_000_000);
    let (y, m, d) = civil(secs.div_euclid(86_400));
    let hour = secs.rem_euclid(86_400) / 3600;
    let (path, first) = recs.iter().find(|(_, v)| v["line"] == "archived line").expect("first line archived");
    let rel = path.strip_prefix(&archive).expect("under archive").to_string_lossy().to_string();
    let want_dir = format!("tenant=fake/dt={y:04}-{m:02}-{d:02}/hour={hour:02}/");
    assert!(rel.starts_with(&want_dir), "layout: {rel} should start with {want_dir}");
    let name = rel.strip_prefix(&want_dir).unwrap_or_default();
    let name_ok = regex::Regex::new(r"^\d{13}-[0-9a-f]{8}-\d{6}\.ndjson\.zst$").expect("regex");
    assert!(name_ok.is_match(name), "object name: {name}");
    assert_eq!(first["tenant"], "fake", "the tenant is in the record: {first}");
    assert_eq!(
        first["ts"],
        serde_json::Value::from(ts.to_string()),
        "ts is nanoseconds as a string: {first}"
    );
    let time = first["time"].as_str().unwrap_or_else(|| panic!("time is a string: {first}"));
    assert!(
        time.starts_with(&format!("{y:04}-{m:02}-{d:02}T{hour:02}:")),
        "time is RFC 3339 of the entry's timestamp: {time}"
    );
    assert_eq!(first["labels"], serde_json::json!({"app": "archive", "env": "test"}));
    assert_eq!(first["structured_metadata"], serde_json::json!({"trace_id": "t-1"}));
    let (_, second) = recs.iter().find(|(_, v)| v["line"] == "second").expect("second line archived");
    assert_eq!(second["structured_metadata"], serde_json::json!({}));
    let spool = sluice.data_dir().join("spool").join("local");
    let left: Vec<PathBuf> =
        std::fs::read_dir(&spool).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "the spool is empty after a clean shutdown: {left:?}");
}

#[tokio::test]
async fn loki_url_adds_forwarding_to_the_embedded_default() {
    let loki = Receiver::start();
    let sluice =
        Sluice::start_with(Options { args: vec!["--loki-url".into(), loki.url()], ..Default::default() })
            .await;
    let resp = sluice
        .push_proto(Some("fwd"), &one(r#"{app="both"}"#, vec![entry_md(now_ns(), "to both", &[])]))
        .await;
    assert_eq!(resp.status, 204, "{}", resp.body);
    ok_or_logs(loki.wait_for(1, DELIVERY).await, &sluice);
    assert_eq!(loki.lines("fwd"), vec!["to both"]);
    // Without a shutdown, the object is sealed by the default's max_object_age.
    let started = Instant::now();
    let recs = wait_for_records(&sluice.data_dir().join("archive"), 1, MAX_OBJECT_AGE + DELIVERY)
        .await
        .unwrap_or_else(|e| panic!("the archive still gets it: {e}\n{}", sluice.logs()));
    assert!(started.elapsed() < MAX_OBJECT_AGE + Duration::from_secs(5), "took {:?}", started.elapsed());
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0].1["line"], "to both");
    assert_eq!(recs[0].1["tenant"], "fwd");
    assert!(recs[0].0.to_string_lossy().contains("tenant=fwd"), "{:?}", recs[0].0);
}

#[test]
fn civil_date_conversion_is_right() {
    assert_eq!(civil(0), (1970, 1, 1));
    assert_eq!(civil(19_723), (2024, 1, 1));
    assert_eq!(civil(19_782), (2024, 2, 29));
}
