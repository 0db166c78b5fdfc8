//! The embedded default: `sluice run` with no configuration file archives to NDJSON under
//! `<data-dir>/archive/`; `--loki-url` adds forwarding.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::push::{entry_md, one};
use crate::support::receiver::{Receiver, now_ns};
use crate::support::sluice::{Options, Sluice};
use crate::support::{DELIVERY, ok_or_logs};

fn ndjson_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "ndjson") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Every JSON object in the NDJSON files under `dir`.
fn records(dir: &Path) -> Vec<(PathBuf, serde_json::Value)> {
    let mut out = Vec::new();
    for f in ndjson_files(dir) {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        // A file being written may end in a partial line; only complete lines count.
        for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
            match serde_json::from_str(line) {
                Ok(v) => out.push((f.clone(), v)),
                Err(e) => panic!("{} has a line that is not JSON ({e}): {line}", f.display()),
            }
        }
    }
    out
}

/// Polls the archive (the file sink has no notification) until `n` records are there.
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

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[tokio::test]
async fn without_a_config_pushes_are_archived_as_ndjson() {
    let sluice = Sluice::start_with(Options::default()).await;
    let ts = now_ns();
    let req = one(
        r#"{app="archive", env="test"}"#,
        vec![entry_md(ts, "archived line", &[("trace_id", "t-1")]), entry_md(ts + 1, "second", &[])],
    );
    let resp = sluice.push_proto(None, &req).await;
    assert_eq!(resp.status, 204, "{}\n{}", resp.body, sluice.logs());
    let archive = sluice.data_dir().join("archive");
    let recs =
        wait_for_records(&archive, 2, DELIVERY).await.unwrap_or_else(|e| panic!("{e}\n{}", sluice.logs()));
    assert_eq!(recs.len(), 2, "{recs:?}");

    let secs = ts.div_euclid(1_000_000_000);
    let (y, m, d) = civil(secs.div_euclid(86_400));
    let hour = secs.rem_euclid(86_400) / 3600;
    let (path, first) = recs.iter().find(|(_, v)| v["line"] == "archived line").expect("first line archived");
    let rel = path.strip_prefix(&archive).expect("under archive").to_string_lossy().to_string();
    let want_dir = format!("tenant=fake/dt={y:04}-{m:02}-{d:02}/hour={hour:02}/");
    assert!(rel.starts_with(&want_dir), "layout: {rel} should start with {want_dir}");
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
    let recs = wait_for_records(&sluice.data_dir().join("archive"), 1, DELIVERY)
        .await
        .unwrap_or_else(|e| panic!("the archive still gets it: {e}\n{}", sluice.logs()));
    assert_eq!(recs[0].1["line"], "to both");
    assert!(recs[0].0.to_string_lossy().contains("tenant=fwd"), "{:?}", recs[0].0);
}

#[test]
fn civil_date_conversion_is_right() {
    assert_eq!(civil(0), (1970, 1, 1));
    assert_eq!(civil(19_723), (2024, 1, 1));
    assert_eq!(civil(19_782), (2024, 2, 29));
}
