//! Micro-benchmarks of the gateway's hot path on one push of 1,000 entries over 200 streams
//! (the shape of the reference workload in ../shared/BENCHMARK.md; the seeded full generator
//! arrives with the benchmark suite): decoding protobuf+snappy and JSON+gzip, the floor of only
//! snappy+prost, the Loki encoder, and route selection.
//!
//! `cargo bench -p sluice --bench hot_path`; throughput is reported per entry.

use std::io::Write;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;

use sluice::config::{Config, Limits};
use sluice::decode::{BodyFormat, decode_push};
use sluice::model::{Batch, Entry, LabelSet, Stream};
use sluice::proto;
use sluice::route::Router;
use sluice::sink::loki::encode::Encoder;

const STREAMS: usize = 200;
const PER_STREAM: usize = 5;

/// A deterministic push: 200 streams with Kubernetes-style labels, JSON lines of ~250 bytes.
fn push(now_ns: i64) -> Batch {
    let mut rng = fastrand::Rng::with_seed(7);
    let levels = ["INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"];
    let streams = (0..STREAMS)
        .map(|s| {
            let ns = format!("ns-{}", s % 5);
            let app = format!("app-{}", s % 20);
            let labels = LabelSet::new(vec![
                ("namespace".into(), ns.clone()),
                ("app".into(), app.clone()),
                ("pod".into(), format!("{app}-{s:04}-x7k2p")),
                ("container".into(), ["main", "sidecar", "init"][s % 3].into()),
                ("job".into(), format!("{ns}/{app}")),
                ("service_name".into(), app),
            ]);
            let entries = (0..PER_STREAM)
                .map(|i| {
                    let trace: String = (0..32).map(|_| rng.digit(16)).collect();
                    let line = format!(
                        r#"{{"time":"2026-11-21T10:00:00.{i:06}Z","level":"{}","target":"inference::server::batch","message":"completed request for model llama-3-8b in {} ms with {} tokens","trace_id":"{trace}","span_id":"{:016x}","request_id":"req-{:08}"}}"#,
                        levels[rng.usize(..levels.len())],
                        rng.u32(1..2000),
                        rng.u32(1..4096),
                        rng.u64(..),
                        rng.u32(..),
                    );
                    Entry { timestamp_ns: now_ns - 1_000_000_000 + i as i64, line, metadata: vec![] }
                })
                .collect();
            Stream { labels, entries }
        })
        .collect();
    Batch { tenant: "bench".into(), streams }
}

fn protobuf_body(batch: &Batch) -> Vec<u8> {
    let request = proto::PushRequest {
        streams: batch
            .streams
            .iter()
            .map(|s| proto::StreamAdapter {
                labels: s.labels.to_string(),
                entries: s
                    .entries
                    .iter()
                    .map(|e| proto::EntryAdapter {
                        timestamp: Some(proto::Timestamp::from_nanos(e.timestamp_ns)),
                        line: e.line.clone(),
                        structured_metadata: vec![],
                        parsed: vec![],
                    })
                    .collect(),
                hash: 0,
            })
            .collect(),
    };
    snap::raw::Encoder::new().compress_vec(&request.encode_to_vec()).expect("compresses")
}

fn json_gzip_body(batch: &Batch) -> Vec<u8> {
    let streams: Vec<serde_json::Value> = batch
        .streams
        .iter()
        .map(|s| {
            let labels: serde_json::Map<String, serde_json::Value> =
                s.labels.pairs().iter().map(|(n, v)| (n.clone(), v.clone().into())).collect();
            let values: Vec<serde_json::Value> =
                s.entries.iter().map(|e| serde_json::json!([e.timestamp_ns.to_string(), e.line])).collect();
            serde_json::json!({ "stream": labels, "values": values })
        })
        .collect();
    let json = serde_json::to_vec(&serde_json::json!({ "streams": streams })).expect("serializes");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&json).expect("compresses");
    gz.finish().expect("compresses")
}

fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_nanos() as i64
}

fn benches(c: &mut Criterion) {
    let now = now_ns();
    let batch = push(now);
    let entries = batch.entry_count() as u64;
    let limits = Limits::default();
    let tenant: Arc<str> = "bench".into();
    let max = 100 << 20;

    let mut group = c.benchmark_group("push_1000_entries");
    group.throughput(Throughput::Elements(entries));

    let pb = protobuf_body(&batch);
    group.bench_function("floor_snappy_prost_decode_encode", |b| {
        let mut encoder = snap::raw::Encoder::new();
        b.iter(|| {
            let raw = snap::raw::Decoder::new().decompress_vec(&pb).expect("snappy");
            let request = proto::PushRequest::decode(raw.as_slice()).expect("protobuf");
            encoder.compress_vec(&request.encode_to_vec()).expect("snappy")
        })
    });
    group.bench_function("decode_protobuf_snappy", |b| {
        b.iter(|| {
            decode_push(&pb, BodyFormat::default(), Arc::clone(&tenant), &limits, max, now).expect("decodes")
        })
    });
    let gz = json_gzip_body(&batch);
    let json_format = BodyFormat { content_type: Some("application/json"), content_encoding: Some("gzip") };
    group.bench_function("decode_json_gzip", |b| {
        b.iter(|| decode_push(&gz, json_format, Arc::clone(&tenant), &limits, max, now).expect("decodes"))
    });
    group.bench_function("encode_loki_protobuf_snappy", |b| {
        let mut encoder = Encoder::new();
        b.iter(|| encoder.encode(&batch.streams).expect("encodes"))
    });
    group.bench_function("decode_then_encode", |b| {
        let mut encoder = Encoder::new();
        b.iter_batched(
            || (),
            |()| {
                let decoded = decode_push(&pb, BodyFormat::default(), Arc::clone(&tenant), &limits, max, now)
                    .expect("decodes");
                encoder.encode(&decoded.batch.streams).expect("encodes")
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();

    let config = Config::parse(
        r#"
sinks: { a: { type: file }, b: { type: file } }
routes:
  - { selector: '{namespace="ns-1", app=~"app-1.*"}', sinks: [a], continue: true }
  - { selector: '{container!="init"}', tenants: [other], sinks: [b] }
  - { selector: '{job=~"ns-[23]/.*"}', sinks: [b] }
"#,
        |_| None,
    )
    .expect("config");
    let router = Router::new(&config, &["a".into(), "b".into()]).expect("router");
    let mut group = c.benchmark_group("route");
    group.throughput(Throughput::Elements(STREAMS as u64));
    group.bench_function("select_200_streams", |b| {
        let mut out = Vec::new();
        b.iter(|| {
            let mut n = 0;
            for s in &batch.streams {
                router.select(&batch.tenant, &s.labels, &mut out);
                n += out.len();
            }
            n
        })
    });
    group.finish();
}

criterion_group!(hot_path, benches);
criterion_main!(hot_path);
