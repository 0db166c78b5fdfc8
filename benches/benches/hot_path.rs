//! Micro-benchmarks of the gateway's hot path on reference-workload pushes of about 1,000
//! entries (../shared/BENCHMARK.md, from the seeded generator): decoding protobuf+snappy and
//! JSON+gzip, the floor of only snappy+prost, the Loki encoder, and route selection.
//!
//! `cargo bench -p sluice-benches --bench hot_path`; throughput is reported per entry.

use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;

use sluice::config::{Config, Limits};
use sluice::decode::{BodyFormat, decode_push};
use sluice::proto;
use sluice::route::Router;
use sluice::sink::loki::encode::Encoder;
use sluice_benches::workload::{GenConfig, Generator};

fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_nanos() as i64
}

fn benches(c: &mut Criterion) {
    let now = now_ns();
    let mut generator = Generator::new(1, now - 60_000_000_000, GenConfig::default());
    let push = generator.next_push();
    let workload = generator.workload();
    let limits = Limits::default();
    let tenant: Arc<str> = "bench".into();
    let max = 100 << 20;
    let pb = push.protobuf_snappy(workload);
    let gz = push.json_gzip(workload);
    let batch = decode_push(&pb, BodyFormat::default(), Arc::clone(&tenant), &limits, max, now)
        .expect("decodes")
        .batch;
    let entries = batch.entry_count() as u64;
    assert_eq!(entries as usize, push.entry_count(), "every generated entry is valid");

    let mut group = c.benchmark_group("push_1000_entries");
    group.throughput(Throughput::Elements(entries));

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
sinks: { a: { type: archive }, b: { type: archive } }
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
    group.throughput(Throughput::Elements(batch.streams.len() as u64));
    group.bench_function("select_streams_of_a_push", |b| {
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
