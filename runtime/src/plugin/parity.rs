//! A plugin written with the SDK gives identical output natively and as Wasm: the test plugins
//! `example-filter` and `identity` run natively (`NativePlugin`, linked as dev-dependencies)
//! and as the built component (`LoadedPlugin`, exactly as a stage loads it) over the same
//! batches, with the same configuration and hash key. The response bytes must be identical and
//! the batches they produce equal.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_sdk::Level;
use sluice_sdk::format::response::Response;
use sluice_sdk::native::NativePlugin;

use super::apply::apply;
use super::stage::encode_request;
use super::tests::plugin;
use super::*;
use crate::model::{Batch, Entry, LabelSet, Stream};

const CONFIG: &str =
    r#"{"drop_if_contains": "GET /health", "label": "team", "value": "payments", "redact": "hunter2"}"#;

fn key() -> [u8; 32] {
    sluice_sdk::hash::derive_key(b"parity test key")
}

fn wasm(name: &str, config: &str, hash_key: [u8; 32]) -> instance::Instance {
    let engine = PluginEngine::new(PoolSize { instances: 4, max_memory: 64 << 20 }).expect("engine");
    let spec = PluginSpec {
        stage: "parity".into(),
        config_json: config.into(),
        timeout: Duration::from_secs(5),
        max_memory: 64 << 20,
        hash_key,
    };
    let loaded = LoadedPlugin::load(&engine, &plugin(name), spec, None).expect("loads");
    loaded.instantiate().expect("instantiates")
}

fn labels(pairs: &[(&str, &str)]) -> LabelSet {
    LabelSet::new(pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect())
}

fn entry(ts: i64, line: &str, metadata: &[(&str, &str)]) -> Entry {
    Entry {
        timestamp_ns: ts,
        line: line.into(),
        metadata: metadata.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
    }
}

/// Several streams and metadata; lines that are dropped, redacted, relabelled, moved into an
/// existing stream or a new one, and left alone; odd lines (empty, multi-byte, long).
fn varied() -> Batch {
    let long = format!("{} hunter2 {}", "x".repeat(5000), "y".repeat(3000));
    Batch {
        tenant: "team-a".into(),
        streams: vec![
            Stream {
                labels: labels(&[("app", "api")]),
                entries: vec![
                    entry(1, "GET /health 200", &[("trace_id", "t1")]),
                    entry(2, "POST /login password=hunter2", &[("trace_id", "t2"), ("span_id", "s2")]),
                    entry(3, "POST /orders 201", &[]),
                    entry(4, "", &[]),
                    entry(5, "hunter2 hunter2 twice, GET /status", &[("redacted_hash", "stale")]),
                ],
            },
            Stream {
                labels: labels(&[("app", "db"), ("team", "payments")]),
                entries: vec![
                    entry(6, "query ok: 3 rows", &[("trace_id", "t3")]),
                    entry(7, "ünïcödé ✓ password hunter2 ✓", &[]),
                    entry(8, "GET /health from the db?", &[]),
                ],
            },
            Stream {
                labels: labels(&[("app", "web"), ("env", "prod"), ("team", "core")]),
                entries: vec![entry(9, &long, &[("size", "big")]), entry(i64::MAX, "far future", &[])],
            },
            Stream {
                labels: labels(&[("app", "api")]),
                entries: vec![entry(10, "same labels, second stream", &[])],
            },
        ],
    }
}

/// 1,000 pseudo-random entries over a handful of streams (a fixed seed).
fn generated(seed: u64) -> Batch {
    let mut rng = fastrand::Rng::with_seed(seed);
    let words = ["GET /health", "hunter2", "GET /api/items", "ok", "error", "timeout", "ü", "\"quoted\""];
    let mut streams: Vec<Stream> = (0..5)
        .map(|i| {
            let team = if i % 2 == 0 { "payments" } else { "core" };
            Stream {
                labels: labels(&[("app", ["a", "b", "c", "d", "e"][i]), ("team", team)]),
                entries: Vec::new(),
            }
        })
        .collect();
    for i in 0..1000 {
        let n = rng.usize(1..6);
        let line: Vec<&str> = (0..n).map(|_| words[rng.usize(..words.len())]).collect();
        let metadata: Vec<(String, String)> =
            (0..rng.usize(0..3)).map(|m| (format!("k{m}"), format!("v{}", rng.u32(..)))).collect();
        let s = rng.usize(..streams.len());
        streams[s].entries.push(Entry {
            timestamp_ns: 1_700_000_000_000_000_000 + i,
            line: line.join(" "),
            metadata,
        });
    }
    Batch { tenant: "gen".into(), streams }
}

/// Runs `batch` both ways; asserts identical bytes and equal applied batches, and returns the
/// applied batch.
fn both_ways<F>(native: &mut F, wasm: &mut instance::Instance, batch: &Batch, what: &str) -> (Vec<u8>, Batch)
where
    F: FnMut(&[u8]) -> Result<Vec<u8>, String>,
{
    let mut request = Vec::new();
    let mut writer = sluice_sdk::format::request::RequestWriter::default();
    encode_request(&mut writer, batch, &mut request).expect("encodes");
    let from_native = native(&request).unwrap_or_else(|e| panic!("{what}: native: {e}"));
    let from_wasm = wasm.process(&request).unwrap_or_else(|e| panic!("{what}: wasm: {e}"));
    assert!(from_native == from_wasm, "{what}: the response bytes differ");
    let parse = |bytes| Response::parse(bytes, batch.entry_count()).expect("a valid response");
    let (mut a, mut b) = (batch.clone(), batch.clone());
    let applied_native = apply(&mut a, &parse(&from_native));
    let applied_wasm = apply(&mut b, &parse(&from_wasm));
    assert_eq!(a, b, "{what}: the applied batches differ");
    assert_eq!(applied_native, applied_wasm, "{what}");
    (from_native, a)
}

#[test]
fn example_filter_gives_identical_output_natively_and_as_wasm() {
    let logs = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&logs);
    let mut native =
        NativePlugin::<example_filter::ExampleFilter>::with_logger(CONFIG, key(), move |l, m| {
            sink.lock().expect("lock").push((l, m.to_string()));
        })
        .expect("native init");
    let mut wasm = wasm("example_filter", CONFIG, key());
    let mut run = |r: &[u8]| native.process(r);

    let (bytes, out) = both_ways(&mut run, &mut wasm, &varied(), "varied");
    // The batch really was changed in every way the plugin can: the comparison is not vacuous.
    let lines: Vec<(String, Vec<&str>)> = out
        .streams
        .iter()
        .map(|s| (s.labels.to_string(), s.entries.iter().map(|e| e.line.as_str()).collect()))
        .collect();
    let long_redacted = format!("{} [REDACTED] {}", "x".repeat(5000), "y".repeat(3000));
    assert_eq!(
        lines,
        [
            ("{app=\"api\"}".to_string(), vec![]),
            (
                "{app=\"db\", team=\"payments\"}".to_string(),
                vec!["query ok: 3 rows", "ünïcödé ✓ password [REDACTED] ✓"]
            ),
            ("{app=\"web\", env=\"prod\", team=\"core\"}".to_string(), vec![]),
            ("{app=\"api\"}".to_string(), vec![]),
            (
                "{app=\"api\", team=\"payments\"}".to_string(),
                vec![
                    "POST /login password=[REDACTED]",
                    "POST /orders 201",
                    "",
                    "[REDACTED] [REDACTED] twice, GET /status",
                    "same labels, second stream"
                ]
            ),
            (
                "{app=\"web\", env=\"prod\", team=\"payments\"}".to_string(),
                vec![long_redacted.as_str(), "far future"]
            ),
        ]
    );
    let login = &out.streams[4].entries[0];
    let expected_hash =
        sluice_sdk::to_hex(&sluice_sdk::hash::keyed_hash(&key(), b"POST /login password=hunter2"));
    assert_eq!(
        login.metadata,
        [
            ("trace_id".to_string(), "t2".to_string()),
            ("span_id".to_string(), "s2".to_string()),
            ("redacted_hash".to_string(), expected_hash)
        ]
    );

    // State carries over between batches the same way; a larger batch covers more shapes.
    for seed in [1, 2, 3] {
        both_ways(&mut run, &mut wasm, &generated(seed), &format!("generated({seed})"));
    }
    let (again, _) = both_ways(&mut run, &mut wasm, &varied(), "varied again");
    assert_eq!(again, bytes, "the same batch gives the same answer later");
    assert!(
        logs.lock()
            .expect("lock")
            .iter()
            .any(|(l, m)| *l == Level::Debug && m == "redacted 4 entries of tenant team-a"),
        "{:?}",
        logs.lock().expect("lock")
    );

    // A different key gives different hashes: the key really reaches both sides.
    let mut other_key =
        NativePlugin::<example_filter::ExampleFilter>::new(CONFIG, sluice_sdk::hash::derive_key(b"other"))
            .expect("native init");
    let mut request = Vec::new();
    encode_request(&mut Default::default(), &varied(), &mut request).expect("encodes");
    assert_ne!(other_key.process(&request).expect("runs"), bytes);
}

#[test]
fn a_relabelling_only_configuration_moves_entries_the_same_way() {
    let config = r#"{"label": "team", "value": "core"}"#;
    let mut native = NativePlugin::<example_filter::ExampleFilter>::new(config, key()).expect("native init");
    let mut wasm = wasm("example_filter", config, key());
    let mut run = |r: &[u8]| native.process(r);
    let (_, out) = both_ways(&mut run, &mut wasm, &varied(), "relabel");
    assert_eq!(out.entry_count(), varied().entry_count(), "nothing dropped");
    assert!(out.streams.iter().all(|s| s.entries.is_empty() || s.labels.get("team") == Some("core")));
    both_ways(&mut run, &mut wasm, &generated(7), "relabel generated");
}

#[test]
fn identity_gives_identical_output_natively_and_as_wasm() {
    let mut native = NativePlugin::<identity::Identity>::new("{}", key()).expect("native init");
    let mut wasm = wasm("identity", "{}", key());
    let mut run = |r: &[u8]| native.process(r);
    for batch in [varied(), generated(11)] {
        let (_, out) = both_ways(&mut run, &mut wasm, &batch, "identity");
        assert_eq!(out, batch, "identity changes nothing");
    }
}
