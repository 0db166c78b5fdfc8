use sluice_sdk::native::NativePlugin;
use sluice_sdk::testing::{self, Outcome, Status, TestBatch};
use xxhash_rust::xxh3::xxh3_64;

use super::*;

const SEC: i64 = 1_000_000_000;
const MS: i64 = 1_000_000;
const REFERENCE: &str = r#"{"key": {"metadata": "trace_id"}, "rates": {"debug": 0.1}}"#;

fn plugin(config: &str) -> NativePlugin<Sample> {
    testing::plugin::<Sample>(config)
}

fn run(config: &str, batch: &TestBatch) -> Outcome {
    testing::run(&mut plugin(config), batch)
}

fn kept(out: &Outcome) -> Vec<bool> {
    out.entries.iter().map(|e| e.status != Status::Dropped).collect()
}

/// A trace id from a seeded generator, as 32 hex digits.
fn trace_ids(n: usize, seed: u64) -> Vec<String> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n).map(|_| format!("{:032x}", rng.u128(..))).collect()
}

// --- the decision function -------------------------------------------------------------------

#[test]
fn the_hash_is_xxh3_64_with_seed_0() {
    // The published XXH3_64bits test vector for the empty input.
    assert_eq!(xxh3_64(b""), 0x2D06_8005_38D3_94C2);
    // 0x2D06…/2⁶⁴ ≈ 0.17589: the empty key is kept at 0.1759, not at 0.1758.
    assert!(!keeps(b"", 0.1758));
    assert!(keeps(b"", 0.1759));
}

#[test]
fn rates_are_exact_hash_bounds() {
    assert_eq!(Threshold::of(0.5), Threshold::Below(1 << 63));
    assert_eq!(Threshold::of(0.25), Threshold::Below(1 << 62));
    assert_eq!(Threshold::of(0.1), Threshold::Below(1_844_674_407_370_955_264));
    assert_eq!(Threshold::of(1.0 - f64::EPSILON / 2.0), Threshold::Below(u64::MAX - 2047));
    assert_eq!(Threshold::of(1.0), Threshold::All);
    assert_eq!(Threshold::of(7.0), Threshold::All);
    assert_eq!(Threshold::of(0.0), Threshold::Below(0));
    assert_eq!(Threshold::of(-1.0), Threshold::Below(0));
    assert_eq!(Threshold::of(f64::NAN), Threshold::Below(0));
    assert_eq!(Threshold::of(f64::MIN_POSITIVE), Threshold::Below(0));
    assert!(Threshold::Below(10).keeps(9));
    assert!(!Threshold::Below(10).keeps(10));
    assert!(!Threshold::Below(0).keeps(0));
    assert!(Threshold::All.keeps(u64::MAX));
}

#[test]
fn a_fixed_key_gets_a_fixed_decision() {
    let key = b"0af7651916cd43dd8448eb211c80319c";
    let h = xxh3_64(key);
    let fraction = h as f64 / TWO_POW_64;
    for rate in [0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0] {
        assert_eq!(keeps(key, rate), fraction < rate, "rate {rate}, hash fraction {fraction}");
        for _ in 0..3 {
            assert_eq!(keeps(key, rate), keeps(key, rate), "stable");
        }
    }
    // The same key in two plugin instances (two workers, two replicas) gets the same verdict.
    let batch = TestBatch::new().stream(&[("level", "debug")]).entry(1, "x", &[("trace_id", "t-42")]);
    let a = run(REFERENCE, &batch);
    let b = run(REFERENCE, &batch);
    assert_eq!(kept(&a), kept(&b));
    assert_eq!(kept(&a), [keeps(b"t-42", 0.1)]);
}

#[test]
fn decisions_are_monotone_in_the_rate() {
    let mut rng = fastrand::Rng::with_seed(7);
    for key in trace_ids(20_000, 1) {
        let (a, b) = (rng.f64(), rng.f64());
        let (low, high) = if a < b { (a, b) } else { (b, a) };
        if keeps(key.as_bytes(), low) {
            assert!(keeps(key.as_bytes(), high), "{key} kept at {low} but not at {high}");
        }
    }
}

#[test]
fn the_kept_fraction_is_the_rate() {
    let keys = trace_ids(100_000, 2);
    for (rate, tolerance) in [(0.01, 0.0015), (0.1, 0.004), (0.5, 0.006), (0.9, 0.004)] {
        let n = keys.iter().filter(|k| keeps(k.as_bytes(), rate)).count();
        let fraction = n as f64 / keys.len() as f64;
        assert!((fraction - rate).abs() <= tolerance, "rate {rate}: kept {fraction}");
    }
    assert!(keys.iter().all(|k| keeps(k.as_bytes(), 1.0)));
    assert!(!keys.iter().any(|k| keeps(k.as_bytes(), 0.0)));
}

#[test]
fn level_spellings_are_the_level_plugin_s() {
    let mut spellings: Vec<String> = [
        "trace",
        "TRC",
        "debug",
        "Dbg",
        "verbose",
        "fine",
        "finer",
        "finest",
        "info",
        "INF",
        "information",
        "informational",
        "notice",
        "warn",
        "warning",
        "WRN",
        "error",
        "err",
        "severe",
        "fatal",
        "ftl",
        "critical",
        "crit",
        "panic",
        "pnc",
        "emerg",
        "emergency",
        "alert",
        "10",
        "20",
        "30",
        "40",
        "50",
        "60",
        "70",
        "0",
        "d",
        "T",
        "i",
        "W",
        "e",
        "F",
        "x",
        "",
        "unknown",
        "errors",
        "warnings",
        "infos",
        "deb",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut rng = fastrand::Rng::with_seed(9);
    spellings.extend((0..2000).map(|_| {
        let len = rng.usize(1..8);
        (0..len)
            .map(|_| {
                rng.choice(['e', 'r', 'o', 'R', 'w', 'a', 'n', 'i', 'f', 'd', 'g', 'b', 'u']).unwrap_or('x')
            })
            .collect()
    }));
    for s in &spellings {
        let plugin = level::normalize(s).map_or(scan::UNKNOWN, |l| l as usize);
        assert_eq!(level_index(s.as_bytes()), plugin, "{s:?}");
    }
    for (i, l) in level::Severity::ALL.iter().enumerate() {
        assert_eq!(LEVELS[i], l.as_str());
    }
}

// --- probabilistic sampling ------------------------------------------------------------------

#[test]
fn the_reference_chain_keeps_warn_error_info_and_a_tenth_of_debug_by_trace() {
    let traces = trace_ids(400, 3);
    let mut batch = TestBatch::new();
    let mut expected = Vec::new();
    for (stream, level) in [("debug", "debug"), ("info", "info"), ("warn", "warn"), ("error", "error")] {
        batch = batch.stream(&[("app", "api"), ("level", stream)]);
        for (i, t) in traces.iter().enumerate() {
            batch =
                batch.entry(i as i64, &format!("{level} line {i}"), &[("trace_id", t), ("request_id", "r")]);
            expected.push(level != "debug" || keeps(t.as_bytes(), 0.1));
        }
    }
    let out = run(REFERENCE, &batch);
    assert_eq!(kept(&out), expected);
    let dropped = expected.iter().filter(|k| !**k).count();
    assert!((340..=380).contains(&dropped), "about 90% of 400 debug lines: {dropped}");
    assert_eq!(out.count("dropped:debug"), dropped as u64);
    assert_eq!(out.counts, [("dropped:debug".to_string(), dropped as u64)]);
    assert!(out.changed().is_empty(), "sampling changes nothing it keeps");
    assert!(out.added.is_empty());
}

#[test]
fn all_lines_of_a_trace_share_their_fate_across_streams_and_batches() {
    let traces = trace_ids(50, 4);
    let mut p = plugin(REFERENCE);
    for round in 0..2 {
        let mut batch = TestBatch::new();
        for app in ["a", "b", "c"] {
            batch = batch.stream(&[("app", app), ("level", "DEBUG")]);
            for t in &traces {
                batch = batch.entry(round, &format!("{app} {t}"), &[("trace_id", t)]);
            }
        }
        let out = testing::run(&mut p, &batch);
        let expected: Vec<bool> =
            (0..3).flat_map(|_| traces.iter().map(|t| keeps(t.as_bytes(), 0.1))).collect();
        assert_eq!(kept(&out), expected, "round {round}");
    }
}

#[test]
fn level_spellings_are_normalised() {
    let mut batch = TestBatch::new();
    for level in ["debug", "DEBUG", "Debug", "dbg", "TRACE", "20", "D"] {
        batch = batch.stream(&[("level", level)]).entry(1, "x", &[("trace_id", "dropped-at-0")]);
    }
    for level in ["info", "WARNING", "err", "verbose2", ""] {
        batch = batch.stream(&[("level", level)]).entry(1, "x", &[("trace_id", "dropped-at-0")]);
    }
    batch = batch.stream(&[("app", "no-level")]).entry(1, "x", &[("trace_id", "dropped-at-0")]);
    let out = run(r#"{"key": {"metadata": "trace_id"}, "rates": {"debug": 0.0}}"#, &batch);
    assert_eq!(
        kept(&out),
        [false, false, false, false, false, false, false, true, true, true, true, true, true]
    );
    let out =
        run(r#"{"key": {"metadata": "trace_id"}, "rates": {"debug": 1.0}, "default_rate": 0.0}"#, &batch);
    assert_eq!(
        kept(&out),
        [true, true, true, true, true, true, true, false, false, false, false, false, false]
    );
    assert_eq!(out.count("dropped:unknown"), 3);
}

#[test]
fn every_level_has_its_rate() {
    let levels = ["debug", "info", "warn", "error", "fatal"];
    for (i, level) in levels.iter().enumerate() {
        let config = format!(r#"{{"rates": {{"{level}": 0}}}}"#);
        let mut batch = TestBatch::new();
        for l in levels {
            batch = batch.stream(&[("level", l)]).line("x");
        }
        let out = run(&config, &batch);
        let expected: Vec<bool> = (0..5).map(|j| j != i).collect();
        assert_eq!(kept(&out), expected, "{level}");
        assert_eq!(out.count(&format!("dropped:{level}")), 1);
    }
}

#[test]
fn level_from_metadata_or_field() {
    let batch = TestBatch::new()
        .entry(1, "a", &[("lvl", "debug"), ("trace_id", "t")])
        .entry(2, "b", &[("lvl", "warn"), ("trace_id", "t")])
        .entry(3, "c", &[("trace_id", "t")]);
    let out = run(
        r#"{"level": {"metadata": "lvl"}, "key": {"metadata": "trace_id"}, "rates": {"debug": 0}}"#,
        &batch,
    );
    assert_eq!(kept(&out), [false, true, true]);
    let batch = TestBatch::new()
        .line(r#"{"level":"DEBUG","trace_id":"t1"}"#)
        .line(r#"{"level":"INFO","trace_id":"t1"}"#)
        .line("level=debug trace_id=t1")
        .line("level=error trace_id=t1");
    let out =
        run(r#"{"level": {"field": "level"}, "key": {"field": "trace_id"}, "rates": {"debug": 0}}"#, &batch);
    assert_eq!(kept(&out), [false, true, false, true]);
}

#[test]
fn key_from_label_metadata_or_field() {
    let rate = 0.5;
    let ids = trace_ids(40, 5);
    let expected: Vec<bool> = ids.iter().map(|t| keeps(t.as_bytes(), rate)).collect();
    assert!(expected.contains(&true) && expected.contains(&false));

    let mut by_label = TestBatch::new();
    let mut by_field = TestBatch::new().stream(&[("app", "x")]);
    for (i, t) in ids.iter().enumerate() {
        by_label = by_label.stream(&[("tenant_key", t)]).line("x");
        let line = if i % 2 == 0 {
            format!(r#"{{"msg":"m","trace_id": "{t}","n":1}}"#)
        } else {
            format!(r#"msg="a b" trace_id={t} n=1"#)
        };
        by_field = by_field.line(&line);
    }
    let out = run(r#"{"key": {"label": "tenant_key"}, "default_rate": 0.5}"#, &by_label);
    assert_eq!(kept(&out), expected);
    let out = run(r#"{"key": {"field": "trace_id"}, "default_rate": 0.5}"#, &by_field);
    assert_eq!(kept(&out), expected);
    assert_eq!(out.count("missing_key"), 0);
}

#[test]
fn entries_without_the_key() {
    // "orphan" is dropped at 0.1 by its line's hash: check that premise first.
    let orphan = "a line without a trace";
    let with_key = ("trace_id", "kept-trace");
    assert!(!keeps(orphan.as_bytes(), 0.1));
    let batch = TestBatch::new()
        .stream(&[("level", "debug")])
        .entry(1, orphan, &[])
        .entry(2, orphan, &[("trace_id", "")])
        .entry(3, "x", &[with_key]);
    let with_key_kept = keeps(b"kept-trace", 0.1);
    let base = r#""key": {"metadata": "trace_id"}, "rates": {"debug": 0.1}"#;

    let out = run(&format!("{{{base}}}"), &batch);
    assert_eq!(kept(&out), [false, false, with_key_kept], "line: the line is hashed");
    assert_eq!(out.count("missing_key"), 2);
    let out = run(&format!(r#"{{{base}, "missing_key": "line"}}"#), &batch);
    assert_eq!(kept(&out), [false, false, with_key_kept]);
    let out = run(&format!(r#"{{{base}, "missing_key": "keep"}}"#), &batch);
    assert_eq!(kept(&out), [true, true, with_key_kept]);
    let out = run(&format!(r#"{{{base}, "missing_key": "drop"}}"#), &batch);
    assert_eq!(kept(&out), [false, false, with_key_kept]);
    assert_eq!(out.count("missing_key"), 2);

    // Without a `key`, every line is hashed; not counted as missing.
    let lines: Vec<String> = (0..200).map(|i| format!("line {i}")).collect();
    let mut batch = TestBatch::new().stream(&[("level", "debug")]);
    for l in &lines {
        batch = batch.line(l);
    }
    let out = run(r#"{"rates": {"debug": 0.3}}"#, &batch);
    let expected: Vec<bool> = lines.iter().map(|l| keeps(l.as_bytes(), 0.3)).collect();
    assert_eq!(kept(&out), expected);
    assert_eq!(out.count("missing_key"), 0);
}

// --- rate limiting ---------------------------------------------------------------------------

fn limit_batch(entries: &[(i64, &str)]) -> TestBatch {
    entries.iter().fold(TestBatch::new().stream(&[("app", "api")]), |b, (ts, line)| b.entry(*ts, line, &[]))
}

#[test]
fn the_line_bucket_refills_with_entry_time() {
    let mut p = plugin(r#"{"rate_limit": {"lines_per_second": 2}}"#);
    // Burst 2: two at once pass, the third waits; 500 ms buys one line; 100 ms doesn't.
    let out = testing::run(
        &mut p,
        &limit_batch(&[
            (0, "a"),
            (0, "b"),
            (0, "c"),
            (500 * MS, "d"),
            (600 * MS, "e"),
            (1000 * MS, "f"),
            (1000 * MS, "g"),
        ]),
    );
    assert_eq!(kept(&out), [true, true, false, true, false, true, false]);
    assert_eq!(out.count("rate_limited"), 3);
    // The bucket carries over to the next batch; a long pause refills only up to the burst.
    let out = testing::run(&mut p, &limit_batch(&[(60 * SEC, "h"), (60 * SEC, "i"), (60 * SEC, "j")]));
    assert_eq!(kept(&out), [true, true, false]);
}

#[test]
fn refills_have_no_drift() {
    // 1 line/s with an entry every 100 ms: exactly one per second passes, for an hour of them.
    let entries: Vec<(i64, String)> = (0..36_000).map(|i| (i * 100 * MS, format!("l{i}"))).collect();
    let borrowed: Vec<(i64, &str)> = entries.iter().map(|(t, l)| (*t, l.as_str())).collect();
    let out = run(r#"{"rate_limit": {"lines_per_second": 1, "burst_lines": 1}}"#, &limit_batch(&borrowed));
    let kept_at: Vec<i64> =
        out.entries.iter().filter(|e| e.status != Status::Dropped).map(|e| e.timestamp_ns).collect();
    assert_eq!(kept_at, (0..3600).map(|s| s * SEC).collect::<Vec<_>>());
}

#[test]
fn out_of_order_entries_do_not_refill() {
    let out = run(
        r#"{"rate_limit": {"lines_per_second": 1}}"#,
        &limit_batch(&[(10 * SEC, "a"), (5 * SEC, "b"), (10 * SEC + 999 * MS, "c"), (11 * SEC, "d")]),
    );
    assert_eq!(kept(&out), [true, false, false, true]);
}

#[test]
fn the_byte_bucket_and_lines_larger_than_the_burst() {
    let sixty = "x".repeat(60);
    let big = "y".repeat(150);
    let out = run(
        r#"{"rate_limit": {"bytes_per_second": 100}}"#,
        &limit_batch(&[
            (0, &sixty),         // 100 → 40
            (0, &sixty),         // needs 60: dropped
            (200 * MS, &sixty),  // 40 + 20 = 60 → 0
            (1200 * MS, &big),   // full (100): a line over the burst needs a full bucket → −50
            (2200 * MS, &sixty), // −50 + 100 = 50: dropped
            (2300 * MS, &sixty), // 60 → 0
            (2300 * MS, ""),     // empty lines cost nothing
        ]),
    );
    assert_eq!(kept(&out), [true, false, true, true, false, true, true]);
}

#[test]
fn lines_and_bytes_together_and_sizes_with_units() {
    let line = "z".repeat(1024);
    let config =
        r#"{"rate_limit": {"lines_per_second": 10, "bytes_per_second": "2KiB", "burst_bytes": "3 KiB"}}"#;
    let out = run(config, &limit_batch(&[(0, &line), (0, &line), (0, &line), (0, &line), (0, "a")]));
    // Bytes allow three 1 KiB lines (3 KiB burst); then not even a one-byte line fits.
    assert_eq!(kept(&out), [true, true, true, false, false]);
    let out = run(config, &limit_batch(&[(0, "a"); 12]));
    assert_eq!(kept(&out).iter().filter(|k| **k).count(), 10, "lines allow 10");
}

#[test]
fn buckets_per_stream_per_tenant_and_per_key() {
    let config = r#"{"rate_limit": {"lines_per_second": 1}}"#;
    let batch = TestBatch::new()
        .stream(&[("app", "a")])
        .entry(0, "1", &[("user", "u1")])
        .entry(0, "2", &[("user", "u2")])
        .stream(&[("app", "b")])
        .entry(0, "3", &[("user", "u1")])
        .entry(0, "4", &[("user", "u1")]);
    assert_eq!(kept(&run(config, &batch)), [true, false, true, false]);

    let mut p = plugin(config);
    assert_eq!(kept(&testing::run(&mut p, &batch.clone().tenant("t1"))), [true, false, true, false]);
    assert_eq!(
        kept(&testing::run(&mut p, &batch.clone().tenant("t2"))),
        [true, false, true, false],
        "other tenant"
    );
    assert_eq!(kept(&testing::run(&mut p, &batch.clone().tenant("t1"))), [false, false, false, false]);

    let per_key = r#"{"key": {"metadata": "user"}, "rate_limit": {"per": "key", "lines_per_second": 1}}"#;
    assert_eq!(kept(&run(per_key, &batch)), [true, true, false, false], "u1 spans both streams");
    // Without the key, an entry uses its stream's bucket.
    let batch = TestBatch::new().stream(&[("app", "a")]).entry(0, "1", &[]).entry(0, "2", &[]).entry(
        0,
        "3",
        &[("user", "u")],
    );
    assert_eq!(kept(&run(per_key, &batch)), [true, false, true]);
}

#[test]
fn a_summary_per_stream_and_batch_with_the_stream_s_labels() {
    let config = r#"{"rate_limit": {"lines_per_second": 1, "summary": true}}"#;
    let batch = TestBatch::new()
        .stream(&[("app", "a"), ("level", "info")])
        .entry(5 * SEC, "keep", &[])
        .entry(5 * SEC + 1, "drop 1", &[])
        .entry(5 * SEC + 3, "drop 2!", &[])
        .entry(5 * SEC + 2, "drop 3", &[])
        .stream(&[("app", "b")])
        .entry(7 * SEC, "only one", &[]);
    let out = run(config, &batch);
    assert_eq!(kept(&out), [true, false, false, false, true]);
    assert_eq!(out.added.len(), 1, "none for a stream without drops");
    let summary = &out.added[0];
    assert_eq!(summary.line, "msg=\"sample: rate limit exceeded\" dropped_lines=3 dropped_bytes=19");
    assert_eq!(summary.timestamp_ns, 5 * SEC + 3, "the newest dropped entry's time");
    assert_eq!(summary.labels, [("app".into(), "a".into()), ("level".into(), "info".into())]);
    assert!(summary.metadata.is_empty());
    assert_eq!(out.count("rate_limited"), 3);
    assert_eq!(out.count("summaries"), 1);
    assert_eq!(out.lines(), ["keep", "only one", summary.line.as_str()]);

    let out = run(r#"{"rate_limit": {"lines_per_second": 1}}"#, &batch);
    assert!(out.added.is_empty(), "summary is off by default");
}

// --- dedupe ----------------------------------------------------------------------------------

#[test]
fn dedupe_window_edges() {
    let config = r#"{"dedupe": {"window": "10s"}}"#;
    let out = run(
        config,
        &limit_batch(&[
            (100 * SEC, "same"),
            (110 * SEC - 1, "same"), // within the window: dropped
            (110 * SEC, "same"),     // exactly a window later: kept, opens a new window
            (115 * SEC, "same"),     // dropped
            (100 * SEC + 1, "same"), // out of order, within 10 s of the kept 110 s one: dropped
            (99 * SEC, "same"),      // out of order, 11 s before it: kept
            (115 * SEC, "other"),
            (115 * SEC, "Same"),
        ]),
    );
    assert_eq!(kept(&out), [true, false, true, false, false, true, true, true]);
    assert_eq!(out.count("deduplicated"), 3);
}

#[test]
fn duplicates_do_not_extend_the_window() {
    let out = run(
        r#"{"dedupe": {"window": "10s"}}"#,
        &limit_batch(&[
            (0, "tick"),
            (6 * SEC, "tick"),
            (12 * SEC, "tick"),
            (18 * SEC, "tick"),
            (24 * SEC, "tick"),
        ]),
    );
    assert_eq!(kept(&out), [true, false, true, false, true]);
}

#[test]
fn dedupe_is_per_stream_and_tenant_and_across_batches() {
    let mut p = plugin(r#"{"dedupe": {"window": "1m"}}"#);
    let batch = TestBatch::new().stream(&[("app", "a")]).line("x").stream(&[("app", "b")]).line("x");
    assert_eq!(kept(&testing::run(&mut p, &batch)), [true, true]);
    assert_eq!(kept(&testing::run(&mut p, &batch)), [false, false]);
    assert_eq!(kept(&testing::run(&mut p, &batch.clone().tenant("other"))), [true, true]);
}

#[test]
fn dedupe_runs_first() {
    let batch = TestBatch::new().stream(&[("level", "debug")]).line("same").line("same");
    let out = run(r#"{"dedupe": {"window": "10s"}, "rates": {"debug": 0}}"#, &batch);
    assert_eq!(kept(&out), [false, false]);
    assert_eq!(out.count("dropped:debug"), 1);
    assert_eq!(out.count("deduplicated"), 1);
}

// --- dynamic ---------------------------------------------------------------------------------

#[test]
fn dynamic_keeps_rare_keys_and_thins_frequent_ones() {
    let mut p = plugin(r#"{"dynamic": {"key": {"label": "app"}, "window": "10s", "target_per_key": 2}}"#);
    let frequent =
        |t0: i64| (0..10).fold(TestBatch::new().stream(&[("app", "busy")]), |b, i| b.entry(t0 + i, "x", &[]));
    // First window: no history, the rate follows the count so far (credit: 2 per line, keep at
    // the count): lines 1, 2, 4, 8.
    let out = testing::run(&mut p, &frequent(0));
    assert_eq!(kept(&out), [true, true, false, true, false, false, false, true, false, false]);
    assert_eq!(out.count("thinned"), 6);
    // Next window: 10 seen before, so 2 in 10: lines 5 and 10.
    let out = testing::run(&mut p, &frequent(10 * SEC));
    assert_eq!(kept(&out), [false, false, false, false, true, false, false, false, false, true]);
    // A rare key is kept whole.
    let rare =
        TestBatch::new().stream(&[("app", "quiet")]).entry(10 * SEC, "a", &[]).entry(10 * SEC, "b", &[]);
    assert_eq!(kept(&testing::run(&mut p, &rare)), [true, true]);
    // After a quiet window, the busy key starts over.
    let out = testing::run(&mut p, &frequent(30 * SEC));
    assert_eq!(kept(&out), [true, true, false, true, false, false, false, true, false, false]);
    // Entries without the key are not thinned.
    let out = testing::run(&mut p, &TestBatch::new().stream(&[("other", "x")]).line("a").line("a").line("a"));
    assert_eq!(kept(&out), [true, true, true]);
}

#[test]
fn dynamic_thins_to_about_the_target() {
    let mut p =
        plugin(r#"{"dynamic": {"key": {"metadata": "pattern"}, "window": "1s", "target_per_key": 50}}"#);
    let mut kept_per_window = Vec::new();
    for w in 0..4 {
        let mut batch = TestBatch::new();
        for i in 0..5000 {
            batch = batch.entry(w * SEC + i, "x", &[("pattern", "hot")]);
        }
        kept_per_window.push(kept(&testing::run(&mut p, &batch)).iter().filter(|k| **k).count());
    }
    // ≈ 50 × (1 + ln 100) in the first window, then 50.
    assert!((250..=300).contains(&kept_per_window[0]), "{kept_per_window:?}");
    assert_eq!(&kept_per_window[1..], [50, 50, 50]);
}

// --- bounded memory --------------------------------------------------------------------------

#[test]
fn tables_stay_bounded() {
    let mut p = plugin(r#"{"dedupe": {"window": "1h", "max_entries": 8}}"#);
    let mut batch = TestBatch::new();
    for i in 0..100 {
        batch = batch.entry(i * SEC, &format!("line {i}"), &[]);
    }
    let out = testing::run(&mut p, &batch);
    assert!(out.entries.iter().all(|e| e.status == Status::Kept));
    // Full at 8: the 4 least recently seen go, at the 9th, 13th, … 97th line.
    assert_eq!(out.count("evicted"), 23 * 4);
    assert_eq!(p.plugin().dedupe.as_ref().map_or(0, Dedupe::len), 8);
    // The most recent lines are still remembered; the oldest are forgotten.
    let out = testing::run(
        &mut p,
        &TestBatch::new().entry(100 * SEC, "line 99", &[]).entry(100 * SEC, "line 0", &[]),
    );
    assert_eq!(kept(&out), [false, true]);

    // Expired entries go first, and that is no eviction.
    let mut p = plugin(r#"{"dedupe": {"window": "1s", "max_entries": 4}}"#);
    let mut batch = TestBatch::new();
    for i in 0..100 {
        batch = batch.entry(i * SEC, &format!("line {i}"), &[]);
    }
    assert_eq!(testing::run(&mut p, &batch).count("evicted"), 0);

    let mut p = plugin(
        r#"{"key": {"metadata": "k"}, "rate_limit": {"per": "key", "lines_per_second": 1, "max_keys": 16}}"#,
    );
    let mut batch = TestBatch::new();
    for i in 0..1000 {
        batch = batch.entry(0, "x", &[("k", &i.to_string())]);
    }
    assert!(kept(&testing::run(&mut p, &batch)).iter().all(|k| *k));
    let buckets = p.plugin().limit.as_ref().map_or(0, |l| l.limiter.buckets());
    assert!((1..=16).contains(&buckets), "{buckets}");

    let mut p = plugin(r#"{"dynamic": {"key": {"metadata": "k"}, "target_per_key": 1, "max_keys": 16}}"#);
    let out = testing::run(&mut p, &batch);
    assert!(kept(&out).iter().all(|k| *k));
    let keys = p.plugin().dynamic.as_ref().map_or(0, |(_, d)| d.len());
    assert!((1..=16).contains(&keys), "{keys}");
}

#[test]
fn full_buckets_are_forgotten_without_an_eviction() {
    let mut p = plugin(
        r#"{"key": {"metadata": "k"}, "rate_limit": {"per": "key", "lines_per_second": 10, "max_keys": 4}}"#,
    );
    let mut batch = TestBatch::new();
    for i in 0..40 {
        // Each key takes a line; a second later its bucket is full again.
        batch = batch.entry(i * SEC, "x", &[("k", &i.to_string())]);
    }
    let out = testing::run(&mut p, &batch);
    assert_eq!(out.count("evicted"), 0);
}

// --- configuration ---------------------------------------------------------------------------

#[test]
fn an_empty_config_keeps_everything_untouched() {
    let batch =
        TestBatch::new().stream(&[("level", "debug")]).line("a").line("a").stream(&[("app", "x")]).line("b");
    for config in ["null", "{}"] {
        let out = run(config, &batch);
        assert!(out.entries.iter().all(|e| e.status == Status::Kept));
        assert!(out.counts.is_empty());
    }
}

#[test]
fn rejects_bad_configs_with_exact_messages() {
    let cases = [
        (
            r#"{"rates": {"debg": 0.1}}"#,
            "`rates.debg`: unknown level, expected one of debug, info, warn, error, fatal",
        ),
        (r#"{"rates": {"debug": 1.5}}"#, "`rates.debug`: 1.5 is not a rate, expected a number from 0 to 1"),
        (r#"{"rates": {"warn": -0.1}}"#, "`rates.warn`: -0.1 is not a rate, expected a number from 0 to 1"),
        (r#"{"default_rate": 2}"#, "`default_rate`: 2 is not a rate, expected a number from 0 to 1"),
        (
            r#"{"key": {"metadata": "trace-id"}}"#,
            "`key.metadata`: `trace-id` is not a valid name ([a-zA-Z_][a-zA-Z0-9_]*)",
        ),
        (r#"{"level": {"label": ""}}"#, "`level.label`: `` is not a valid name ([a-zA-Z_][a-zA-Z0-9_]*)"),
        (
            r#"{"key": {"field": "trace id"}}"#,
            "`key.field`: `trace id` is not a key: keys are non-empty, without quotes, `=`, backslashes, spaces or control characters",
        ),
        (
            r#"{"missing_key": "keep"}"#,
            "`missing_key` needs a `key`: without one, every entry's line is hashed",
        ),
        (r#"{"max_scan_bytes": 0}"#, "`max_scan_bytes` must be at least 1"),
        (r#"{"rate_limit": {}}"#, "`rate_limit` needs `lines_per_second`, `bytes_per_second` or both"),
        (
            r#"{"rate_limit": {"per": "key", "lines_per_second": 1}}"#,
            "`rate_limit.per: key` needs a top-level `key`",
        ),
        (r#"{"rate_limit": {"lines_per_second": 0}}"#, "`rate_limit.lines_per_second` must be at least 1"),
        (r#"{"rate_limit": {"bytes_per_second": "0B"}}"#, "`rate_limit.bytes_per_second` must be at least 1"),
        (
            r#"{"rate_limit": {"lines_per_second": 5, "burst_lines": 0}}"#,
            "`rate_limit.burst_lines` must be at least 1",
        ),
        (
            r#"{"rate_limit": {"burst_bytes": 10, "lines_per_second": 5}}"#,
            "`rate_limit.burst_bytes` needs `rate_limit.bytes_per_second`",
        ),
        (
            r#"{"rate_limit": {"lines_per_second": 5, "max_keys": 0}}"#,
            "`rate_limit.max_keys` must be at least 1",
        ),
        (
            r#"{"dynamic": {"key": {"label": "app"}, "target_per_key": 0}}"#,
            "`dynamic.target_per_key` must be at least 1",
        ),
        (
            r#"{"dynamic": {"key": {"label": "app"}, "target_per_key": 5, "window": "0s"}}"#,
            "`dynamic.window` must be longer than 0s",
        ),
        (
            r#"{"dynamic": {"key": {"label": "a-b"}, "target_per_key": 5}}"#,
            "`dynamic.key.label`: `a-b` is not a valid name ([a-zA-Z_][a-zA-Z0-9_]*)",
        ),
        (r#"{"dedupe": {"window": "0s"}}"#, "`dedupe.window` must be longer than 0s"),
        (r#"{"dedupe": {"window": "1s", "max_entries": 0}}"#, "`dedupe.max_entries` must be at least 1"),
    ];
    for (config, want) in cases {
        assert_eq!(testing::init_error::<Sample>(config), want, "{config}");
    }
    for (config, want) in [
        (r#"{"rate": {"debug": 0.1}}"#, "unknown field `rate`"),
        (
            r#"{"key": {"metdata": "trace_id"}}"#,
            "unknown variant `metdata`, expected one of `label`, `metadata`, `field`",
        ),
        (r#"{"missing_key": "hash"}"#, "unknown variant `hash`, expected one of `line`, `keep`, `drop`"),
        (
            r#"{"rate_limit": {"per": "pod", "lines_per_second": 1}}"#,
            "unknown variant `pod`, expected `stream` or `key`",
        ),
        (r#"{"rate_limit": {"lines_per_second": 1, "burst": 5}}"#, "unknown field `burst`"),
        (r#"{"dedupe": {"window": "ten seconds"}}"#, "dedupe.window"),
        (r#"{"dedupe": {}}"#, "missing field `window`"),
        (r#"{"dynamic": {"key": {"label": "app"}}}"#, "missing field `target_per_key`"),
        (r#"{"rates": {"debug": "10%"}}"#, "rates.debug"),
    ] {
        let e = testing::init_error::<Sample>(config);
        assert!(e.contains(want), "{config}: {e}");
    }
}
