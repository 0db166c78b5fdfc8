//! The archive sink's writing cost on the reference workload: records encoded and compressed
//! into spool files (what the sink does per entry; the upload is a file moved or sent as is),
//! for each format and compression. Before measuring, it prints the compressed bytes per entry of each.
//!
//! `cargo bench -p sluice-benches --bench archive`; throughput is reported per entry.

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use sluice::archive::key::KeyTemplate;
use sluice::config::{ArchiveFormat, Compression, Limits};
use sluice::decode::{BodyFormat, decode_push};
use sluice::model::Batch;
use sluice::sink::archive::spool::{Spool, SpoolConfig};
use sluice_benches::workload::{GenConfig, Generator};

/// Pushes of about 1,000 entries each: objects of realistic size (a few MiB of records).
const PUSHES: usize = 20;

fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_nanos() as i64
}

fn batches() -> Vec<Batch> {
    let now = now_ns();
    let mut generator = Generator::new(1, now - 60_000_000_000, GenConfig::default());
    let tenant: Arc<str> = "bench".into();
    (0..PUSHES)
        .map(|_| {
            let push = generator.next_push();
            let body = push.protobuf_snappy(generator.workload());
            decode_push(&body, BodyFormat::default(), Arc::clone(&tenant), &Limits::default(), 100 << 20, now)
                .expect("decodes")
                .batch
        })
        .collect()
}

fn spool(dir: &std::path::Path, format: ArchiveFormat, compression: Compression) -> Spool {
    let config = SpoolConfig {
        dir: dir.to_path_buf(),
        template: KeyTemplate::parse("tenant={tenant}/dt={date}/hour={hour}").expect("parses"),
        format,
        compression,
        level: None,
        max_object_size: u64::MAX,
        max_object_age: Duration::from_secs(3600),
        max_open: 32,
        max_open_per_tenant: 32,
    };
    Spool::open(config).expect("spool").0
}

/// Writes every batch, seals, removes the files; returns the compressed bytes.
fn archive(spool: &mut Spool, batches: &[Batch]) -> u64 {
    let now = tokio::time::Instant::now();
    for batch in batches {
        spool.write(batch, None, now).expect("writes");
    }
    let sealed = spool.seal_all().expect("seals");
    let mut bytes = 0;
    for s in sealed {
        bytes += s.bytes;
        std::fs::remove_file(&s.data).expect("remove data");
        std::fs::remove_file(&s.key_file).expect("remove key");
    }
    bytes
}

fn benches(c: &mut Criterion) {
    let batches = batches();
    let entries: u64 = batches.iter().map(|b| b.entry_count() as u64).sum();
    let line_bytes: usize = batches.iter().map(Batch::line_bytes).sum();
    let dir = tempfile::tempdir().expect("tempdir");
    let kinds = [
        ("ndjson_zstd", ArchiveFormat::Ndjson, Compression::Zstd),
        ("ndjson_gzip", ArchiveFormat::Ndjson, Compression::Gzip),
        ("ndjson_none", ArchiveFormat::Ndjson, Compression::None),
        ("parquet_zstd", ArchiveFormat::Parquet, Compression::Zstd),
    ];
    eprintln!(
        "reference workload: {entries} entries, {:.1} line bytes per entry",
        line_bytes as f64 / entries as f64
    );
    for (name, format, compression) in kinds {
        let bytes = archive(&mut spool(dir.path(), format, compression), &batches);
        eprintln!("archive {name}: {:.1} bytes per entry", bytes as f64 / entries as f64);
    }
    let mut group = c.benchmark_group(format!("archive_{}_entries", entries));
    group.throughput(Throughput::Elements(entries));
    group.sample_size(20);
    for (name, format, compression) in kinds {
        let mut spool = spool(dir.path(), format, compression);
        group.bench_function(name, |b| b.iter(|| archive(&mut spool, &batches)));
    }
    group.finish();
}

criterion_group!(archive_sink, benches);
criterion_main!(archive_sink);
