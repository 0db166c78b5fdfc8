//! `sluice replay` end to end: the real binary reading archives (written by sluice itself, or by
//! hand in the archive and logcli formats) into the faithful test Loki, which enforces Loki's
//! rules and records exactly what arrived.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use chrono::{FixedOffset, SecondsFormat, TimeZone, Utc};
use object_store::ObjectStoreExt;
use serde_json::json;

use crate::support::push::{entry_md, one};
use crate::support::receiver::{Labels, Receiver, Stored, now_ns};
use crate::support::s3::S3Server;
use crate::support::sluice::{Output, Sluice, run_to_end_with};

const MINUTE: i64 = 60_000_000_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

/// Runs `sluice replay args…` in `cwd` (where the default checkpoint goes).
fn replay(cwd: &Path, args: &[&str]) -> Output {
    replay_env(cwd, args, &[])
}

/// [`replay`] with extra environment variables (S3 credentials).
fn replay_env(cwd: &Path, args: &[&str], env: &[(String, String)]) -> Output {
    let mut all = vec!["replay"];
    all.extend_from_slice(args);
    run_to_end_with(&all, cwd, env)
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn md(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    v.sort();
    v
}

/// What a tenant should hold, per stream in time order, flattened the way
/// [`Receiver::entries`] lists it (streams by labels, entries in arrival order).
fn expected(entries: &[(Labels, Stored)]) -> Vec<(Labels, Stored)> {
    let mut streams: BTreeMap<Labels, Vec<Stored>> = BTreeMap::new();
    for (l, e) in entries {
        streams.entry(l.clone()).or_default().push(e.clone());
    }
    streams
        .into_iter()
        .flat_map(|(l, mut es)| {
            es.sort_by_key(|e| e.ts);
            es.into_iter().map(move |e| (l.clone(), e))
        })
        .collect()
}

/// An archive record, as the archive sink writes it.
fn record(tenant: &str, labels: &[(&str, &str)], ts: i64, metadata: &[(&str, &str)], line: &str) -> String {
    let l: BTreeMap<&str, &str> = labels.iter().copied().collect();
    let m: BTreeMap<&str, &str> = metadata.iter().copied().collect();
    json!({"tenant": tenant, "ts": ts.to_string(), "time": Utc.timestamp_nanos(ts).to_rfc3339_opts(SecondsFormat::Nanos, true),
           "labels": l, "structured_metadata": m, "line": line})
    .to_string()
}

/// `tenant=<t>/dt=<date>/hour=<HH>` of a timestamp: the default key layout.
fn partition(tenant: &str, ts: i64) -> String {
    let t = Utc.timestamp_nanos(ts);
    format!("tenant={tenant}/dt={}/hour={}", t.format("%Y-%m-%d"), t.format("%H"))
}

/// Writes `records` as a zstd NDJSON object at `dir/key`.
fn write_object(dir: &Path, key: &str, records: &[String]) {
    let path = dir.join(key);
    std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
    let text: String = records.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(&path, zstd::encode_all(text.as_bytes(), 3).expect("zstd")).expect("write object");
}

fn start_of_hour(ts: i64) -> i64 {
    ts - ts.rem_euclid(HOUR)
}

#[tokio::test]
async fn an_archive_written_by_sluice_replays_into_loki_exactly() {
    round_trip("").await;
}

#[tokio::test]
async fn a_parquet_archive_written_by_sluice_replays_into_loki_exactly() {
    round_trip(", format: parquet").await;
}

/// sluice writes an archive (with `settings` added to the sink), stops, and the archive is
/// replayed into an empty Loki: every tenant must hold exactly what was pushed.
async fn round_trip(settings: &str) {
    let work = tempfile::tempdir().expect("tempdir");
    let archive = work.path().join("archive");
    let config = format!(
        "sinks:\n  a: {{ type: archive, url: \"{}\", max_object_age: 200ms{settings} }}\n",
        archive.display()
    );
    let mut sluice = Sluice::start(&config).await;
    // Three hours of entries (several partitions), pushed newest first so that the archive holds
    // them out of order: replay must sort each stream.
    let t0 = now_ns() - 3 * HOUR;
    let streams: [(&str, &[(&str, &str)]); 3] =
        [("a", &[("app", "api"), ("env", "prod")]), ("a", &[("app", "web")]), ("b", &[("app", "api")])];
    let mut pushed: BTreeMap<&str, Vec<(Labels, Stored)>> = BTreeMap::new();
    for step in (0..18).rev() {
        for (i, (tenant, l)) in streams.iter().enumerate() {
            let ts = t0 + step * 10 * MINUTE + i as i64;
            let line = format!("{tenant} stream {i} step {step} \"quoted\" é");
            let meta: &[(&str, &str)] =
                if step % 2 == 0 { &[("trace_id", "t-1"), ("pod", "p-0")] } else { &[] };
            let text = format!(
                "{{{}}}",
                l.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect::<Vec<_>>().join(",")
            );
            let resp = sluice.push_proto(Some(tenant), &one(&text, vec![entry_md(ts, &line, meta)])).await;
            assert_eq!(resp.status, 204, "{}", resp.body);
            pushed.entry(tenant).or_default().push((labels(l), Stored { ts, line, metadata: md(meta) }));
        }
    }
    let status =
        sluice.terminate(Duration::from_secs(15)).await.unwrap_or_else(|e| panic!("{e}\n{}", sluice.logs()));
    assert!(status.success(), "{}", sluice.logs());

    let loki = Receiver::start();
    let out = replay(work.path(), &["--from", archive.to_str().expect("utf-8"), "--to-loki", &loki.url()]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stderr.contains("54 read, 54 selected, 54 pushed"), "{}", out.stderr);
    assert_eq!(loki.tenants(), vec!["a".to_string(), "b".to_string()]);
    for (tenant, entries) in &pushed {
        assert_eq!(loki.entries(tenant), expected(entries), "tenant {tenant}");
    }
    assert_eq!(loki.duplicates(), 0);
}

/// Four hours of two tenants and two streams, written by hand in the default layout, and a
/// corrupt object in the first hour: it is never read when that hour is outside the range.
fn four_hours(archive: &Path) -> i64 {
    let h0 = start_of_hour(now_ns()) - 4 * HOUR;
    for hour in 0..4 {
        for tenant in ["a", "b"] {
            let mut records = Vec::new();
            for app in ["api", "web"] {
                for n in 0..3 {
                    let ts = h0 + hour * HOUR + (n + 1) * 10 * MINUTE;
                    records.push(record(
                        tenant,
                        &[("app", app)],
                        ts,
                        &[],
                        &format!("{tenant} {app} h{hour} n{n}"),
                    ));
                }
            }
            let at = h0 + hour * HOUR;
            write_object(
                archive,
                &format!("{}/{}-test-0.ndjson.zst", partition(tenant, at), at / 1_000_000),
                &records,
            );
        }
    }
    let corrupt = archive.join(format!("{}/1-corrupt-0.ndjson.zst", partition("a", h0)));
    std::fs::write(corrupt, b"\x28\xb5\x2f\xfd garbage").expect("write");
    h0
}

#[tokio::test]
async fn selector_time_range_and_tenant_choose_what_is_replayed() {
    let work = tempfile::tempdir().expect("tempdir");
    let archive = work.path().join("archive");
    let h0 = four_hours(&archive);
    let loki = Receiver::start();
    // Since: the start of hour 1 written with a +01:00 offset; until: the start of hour 3.
    let since = FixedOffset::east_opt(3600).expect("offset").timestamp_nanos(h0 + HOUR).to_rfc3339();
    let until = Utc.timestamp_nanos(h0 + 3 * HOUR).to_rfc3339();
    let out = replay(
        work.path(),
        &[
            "--from",
            &format!("file://{}", archive.display()),
            "--to-loki",
            &loki.push_url(),
            "--selector",
            r#"{app="api"}"#,
            "--since",
            &since,
            "--until",
            &until,
            "--tenant",
            "backfill",
        ],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stderr.contains("5 outside --since/--until (not read)"), "{}", out.stderr);
    assert_eq!(loki.tenants(), vec!["backfill".to_string()]);
    let mut want: Vec<String> = Vec::new();
    for tenant in ["a", "b"] {
        for hour in 1..3 {
            want.extend((0..3).map(|n| format!("{tenant} api h{hour} n{n}")));
        }
    }
    want.sort();
    assert_eq!(loki.lines("backfill"), want);
    assert!(loki.entries("backfill").iter().all(|(l, _)| *l == labels(&[("app", "api")])));

    // The same archive, everything: the corrupt object is read now, reported and skipped.
    let loki = Receiver::start();
    let out = replay(work.path(), &["--from", archive.to_str().expect("utf-8"), "--to-loki", &loki.url()]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("unreadable objects: 1") && out.stderr.contains("1-corrupt-0.ndjson.zst"),
        "{}",
        out.stderr
    );
    assert_eq!(loki.total(), 48, "every readable entry arrives");
}

#[tokio::test]
async fn a_logcli_jsonl_export_replays_in_time_order() {
    let work = tempfile::tempdir().expect("tempdir");
    let plus_one = FixedOffset::east_opt(3600).expect("offset");
    let t0 = now_ns() - 2 * HOUR + 123_456_789;
    // logcli prints newest first (--direction backward), with the local offset.
    let mut lines = Vec::new();
    let mut want = Vec::new();
    for n in (0..20).rev() {
        let ts = t0 + n * MINUTE;
        let app = if n % 2 == 0 { "even" } else { "odd" };
        let line = format!("logcli line {n}");
        lines.push(
            json!({"labels": {"app": app, "job": "cli"}, "line": line,
                   "timestamp": plus_one.timestamp_nanos(ts).to_rfc3339_opts(SecondsFormat::Nanos, false)})
            .to_string(),
        );
        want.push((labels(&[("app", app), ("job", "cli")]), Stored { ts, line, metadata: vec![] }));
    }
    let file = work.path().join("export.jsonl");
    std::fs::write(&file, lines.join("\n") + "\n").expect("write");
    assert!(lines[0].contains("+01:00"), "{}", lines[0]);
    let loki = Receiver::start();
    let out = replay(work.path(), &["--from", file.to_str().expect("utf-8"), "--to-loki", &loki.url()]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(loki.tenants(), vec!["fake".to_string()], "no tenant in the export: Loki's default");
    assert_eq!(loki.entries("fake"), expected(&want));
}

#[tokio::test]
async fn an_interrupted_replay_resumes_and_delivers_every_entry_exactly_once() {
    let work = tempfile::tempdir().expect("tempdir");
    let archive = work.path().join("archive");
    let h0 = start_of_hour(now_ns()) - 3 * HOUR;
    let mut total = 0;
    for hour in 0..3 {
        let mut records = Vec::new();
        for app in ["api", "web"] {
            for n in 0..40 {
                let ts = h0 + hour * HOUR + n * MINUTE;
                let line = format!("resume {app} line-{:04} padding padding padding", hour * 100 + n);
                records.push(record("t", &[("app", app)], ts, &[("n", &n.to_string())], &line));
                total += 1;
            }
        }
        let at = h0 + hour * HOUR;
        write_object(
            &archive,
            &format!("{}/{}-test-0.ndjson.zst", partition("t", at), at / 1_000_000),
            &records,
        );
    }
    let loki = Receiver::start();
    // The batch holding this line fails twice: with 2 attempts the replay stops there.
    loki.fail_matching("line-0130", 503, 2);
    let from = archive.to_str().expect("utf-8");
    let args = ["--from", from, "--to-loki", &loki.url(), "--batch-size", "1KiB", "--max-attempts", "2"];
    let first = replay(work.path(), &args);
    assert_eq!(first.code, Some(1), "{}", first.stderr);
    assert!(first.stderr.contains("run the same command again to resume"), "{}", first.stderr);
    assert!(first.stderr.contains("server errors"), "explained: {}", first.stderr);
    let after_first = loki.total();
    assert!(after_first > 0 && after_first < total, "stopped mid-way: {after_first} of {total}");
    let checkpoints: Vec<_> = std::fs::read_dir(work.path())
        .expect("read dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(".sluice-replay-") && n.ends_with(".json"))
        .collect();
    assert_eq!(checkpoints.len(), 1, "{checkpoints:?}");

    let second = replay(work.path(), &args);
    assert_eq!(second.code, Some(0), "{}", second.stderr);
    assert!(second.stderr.contains("resuming from"), "{}", second.stderr);
    assert_eq!(loki.total(), total, "every entry arrived");
    assert_eq!(loki.duplicates(), 0, "nothing confirmed was pushed twice");
    let accepted: usize = loki.requests().iter().filter(|r| r.status == 204).map(|r| r.entries).sum();
    assert_eq!(accepted, total, "each entry was in exactly one accepted request");

    let requests = loki.requests().len();
    let third = replay(work.path(), &args);
    assert_eq!(third.code, Some(0), "{}", third.stderr);
    assert!(third.stderr.contains("already complete"), "{}", third.stderr);
    assert_eq!(loki.requests().len(), requests, "a complete replay pushes nothing");
}

#[tokio::test]
async fn what_cannot_be_replayed_is_counted_and_explained() {
    let work = tempfile::tempdir().expect("tempdir");
    let archive = work.path().join("archive");
    let recent = now_ns() - HOUR;
    let old = now_ns() - 8 * DAY;
    write_object(
        &archive,
        &format!("{}/1-test-0.ndjson.zst", partition("t", old)),
        &(0..3).map(|n| record("t", &[("app", "a")], old + n, &[], &format!("old {n}"))).collect::<Vec<_>>(),
    );
    write_object(
        &archive,
        &format!("{}/1-test-0.ndjson.zst", partition("t", recent)),
        &[
            record("t", &[("app", "a")], recent, &[], "recent 0"),
            "this is not a record".to_string(),
            record("t", &[("bad-name", "x")], recent + 1, &[], "bad labels"),
            record("t", &[("app", "a")], recent + 2, &[], "recent 1"),
        ],
    );
    let loki = Receiver::start();
    let out = replay(work.path(), &["--from", archive.to_str().expect("utf-8"), "--to-loki", &loki.url()]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    for want in [
        "dropped:  3 rejected",
        "timestamp too old",
        "reject_old_samples_max_age",
        "--tenant",
        "skipped:  1 invalid_labels",
        "\"bad-name\"",
        "unparseable lines: 1",
        ":2: not an archive record",
    ] {
        assert!(out.stderr.contains(want), "missing {want:?} in:\n{}", out.stderr);
    }
    assert_eq!(loki.lines("t"), vec!["recent 0".to_string(), "recent 1".to_string()]);
}

#[tokio::test]
async fn usage_and_connection_errors_exit_2_before_pushing() {
    let work = tempfile::tempdir().expect("tempdir");
    let missing = work.path().join("nope");
    let out =
        replay(work.path(), &["--from", missing.to_str().expect("utf-8"), "--to-loki", "http://127.0.0.1:9"]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("nope"), "{}", out.stderr);
    assert!(!missing.exists(), "replay creates nothing");

    let out =
        replay(work.path(), &["--from", work.path().to_str().expect("utf-8"), "--to-loki", "loki:3100"]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("--to-loki"), "{}", out.stderr);

    let out = replay(work.path(), &["--from", "x", "--to-loki", "http://l", "--since", "yesterday"]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("RFC 3339"), "{}", out.stderr);

    let empty = work.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    let out =
        replay(work.path(), &["--from", empty.to_str().expect("utf-8"), "--to-loki", "http://127.0.0.1:9"]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("nothing to replay"), "{}", out.stderr);

    // Loki unreachable: one attempt, then the advice, and nothing recorded as done.
    let archive = work.path().join("archive");
    let ts = now_ns() - HOUR;
    write_object(
        &archive,
        &format!("{}/1.ndjson.zst", partition("t", ts)),
        &[record("t", &[("a", "b")], ts, &[], "x")],
    );
    let out = replay(
        work.path(),
        &[
            "--from",
            archive.to_str().expect("utf-8"),
            "--to-loki",
            "http://127.0.0.1:9",
            "--max-attempts",
            "1",
        ],
    );
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("could not be reached"), "{}", out.stderr);
}

#[tokio::test]
async fn replays_from_s3_reading_only_the_partitions_in_range() {
    let s3 = S3Server::start("replay").await;
    let store = s3.store("logs");
    let h0 = start_of_hour(now_ns()) - 2 * HOUR;
    let mut want = Vec::new();
    for hour in 0..2 {
        let at = h0 + hour * HOUR;
        let records: Vec<String> = (0..5)
            .map(|n| {
                let line = format!("s3 h{hour} n{n}");
                if hour == 1 {
                    want.push(line.clone());
                }
                record("t", &[("app", "s3")], at + n * MINUTE, &[("k", "v")], &line)
            })
            .collect();
        let text: String = records.iter().map(|r| format!("{r}\n")).collect();
        let body = zstd::encode_all(text.as_bytes(), 3).expect("zstd");
        let key = object_store::path::Path::from(format!("{}/1-test-0.ndjson.zst", partition("t", at)));
        store.objects.put(&key, body.into()).await.expect("put");
    }
    // Under the pruned hour: never read, or the replay would report it.
    let corrupt = object_store::path::Path::from(format!("{}/2-corrupt-0.ndjson.zst", partition("t", h0)));
    store.objects.put(&corrupt, b"\x28\xb5\x2f\xfd not zstd".to_vec().into()).await.expect("put");

    let work = tempfile::tempdir().expect("tempdir");
    let loki = Receiver::start();
    let since = Utc.timestamp_nanos(h0 + HOUR).to_rfc3339();
    let endpoint = s3.endpoint();
    let from = s3.url("logs");
    let args = ["--from", &from, "--to-loki", &loki.url(), "--since", &since, "--s3-endpoint", &endpoint];
    let out = replay_env(work.path(), &args, &s3.env());
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stderr.contains("2 outside --since/--until (not read)"), "{}", out.stderr);
    want.sort();
    assert_eq!(loki.lines("t"), want);
    assert!(loki.entries("t").iter().all(|(_, e)| e.metadata == md(&[("k", "v")])));

    // A bucket that does not exist: a clear error before anything is pushed.
    let args = ["--from", "s3://no-such-bucket/x", "--to-loki", &loki.url(), "--s3-endpoint", &endpoint];
    let out = replay_env(work.path(), &args, &s3.env());
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("cannot list s3://no-such-bucket/x"), "{}", out.stderr);
}
