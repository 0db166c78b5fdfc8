//! The price of the sandbox, on reference-workload pushes of about 1,000 entries: the same SDK
//! plugins run through the host's whole stage path (encode the batch, call, check the response,
//! apply it) once as Wasm in wasmtime and once compiled natively into the process.
//!
//! - `identity`: the boundary itself (a plugin that keeps everything);
//! - `example-filter`: a real plugin (drop by substring, set a label, redact, keyed hash).
//!
//! `cargo bench -p sluice-benches --bench plugin_boundary`; throughput is per entry. The Wasm
//! plugins are built from `tests/plugins` first (release, `wasm32-wasip2`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

use sluice::config::Limits;
use sluice::decode::{BodyFormat, decode_push};
use sluice::model::Batch;
use sluice::pipeline::Stage;
use sluice::plugin::apply::apply;
use sluice::plugin::stage::encode_request;
use sluice::plugin::{LoadedPlugin, PluginEngine, PluginSpec, PoolSize, WasmStage};
use sluice_benches::workload::{GenConfig, Generator};
use sluice_sdk::Plugin;
use sluice_sdk::format::request::RequestWriter;
use sluice_sdk::format::response::Response;
use sluice_sdk::native::NativePlugin;

const FILTER_CONFIG: &str =
    r#"{"drop_if_contains":"\"level\":\"DEBUG\"","label":"team","value":"ml","redact":"Bearer"}"#;

/// Builds the test plugins and returns the directory of their `.wasm` files.
fn build_plugins() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target_dir = root.join("target/test-plugins");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
        .arg(root.join("tests/plugins/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .status()
        .expect("cargo runs");
    assert!(status.success(), "cannot build tests/plugins (rustup target add wasm32-wasip2?)");
    target_dir.join("wasm32-wasip2/release")
}

/// The host's stage path around a natively compiled plugin: the same encode, check and apply
/// as [`WasmStage`], with the call in the process instead of the sandbox.
struct NativeStage<P: Plugin> {
    plugin: NativePlugin<P>,
    writer: RequestWriter,
    request: Vec<u8>,
}

impl<P: Plugin> NativeStage<P> {
    fn new(config: &str, key: [u8; 32]) -> Self {
        let plugin = NativePlugin::new(config, key).expect("init");
        Self { plugin, writer: RequestWriter::default(), request: Vec::new() }
    }

    fn process(&mut self, batch: &mut Batch) {
        encode_request(&mut self.writer, batch, &mut self.request).expect("encodes");
        let response = self.plugin.process(&self.request).expect("processes");
        let response = Response::parse(&response, batch.entry_count()).expect("valid response");
        apply(batch, &response);
    }
}

fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_nanos() as i64
}

fn benches(c: &mut Criterion) {
    let dir = build_plugins();
    let now = now_ns();
    let mut generator = Generator::new(1, now - 60_000_000_000, GenConfig::default());
    let push = generator.next_push();
    let body = push.protobuf_snappy(generator.workload());
    let batch =
        decode_push(&body, BodyFormat::default(), Arc::from("bench"), &Limits::default(), 100 << 20, now)
            .expect("decodes")
            .batch;
    let key = sluice_sdk::hash::derive_key(b"bench");
    let engine = PluginEngine::new(PoolSize { instances: 4, max_memory: 64 << 20 }).expect("engine");
    let wasm = |file: &str, config: &str| {
        let spec = PluginSpec {
            stage: file.into(),
            config_json: config.into(),
            timeout: Duration::from_secs(5),
            max_memory: 64 << 20,
            hash_key: key,
        };
        let plugin = LoadedPlugin::load(&engine, &dir.join(file), spec, None).expect("loads");
        WasmStage::new(plugin).expect("instance")
    };

    let mut group = c.benchmark_group("plugin_boundary_1000_entries");
    group.throughput(Throughput::Elements(batch.entry_count() as u64));
    let fresh = || batch.clone();

    let mut stage = wasm("identity.wasm", "{}");
    group.bench_function("identity_wasm", |b| {
        b.iter_batched_ref(fresh, |b| stage.process(b).expect("runs"), BatchSize::LargeInput)
    });
    let mut native = NativeStage::<identity::Identity>::new("{}", key);
    group.bench_function("identity_native", |b| {
        b.iter_batched_ref(fresh, |b| native.process(b), BatchSize::LargeInput)
    });
    let mut stage = wasm("example_filter.wasm", FILTER_CONFIG);
    group.bench_function("example_filter_wasm", |b| {
        b.iter_batched_ref(fresh, |b| stage.process(b).expect("runs"), BatchSize::LargeInput)
    });
    let mut native = NativeStage::<example_filter::ExampleFilter>::new(FILTER_CONFIG, key);
    group.bench_function("example_filter_native", |b| {
        b.iter_batched_ref(fresh, |b| native.process(b), BatchSize::LargeInput)
    });
    group.finish();
}

criterion_group!(plugin_boundary, benches);
criterion_main!(plugin_boundary);
