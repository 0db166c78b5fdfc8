//! The price of the sandbox, on reference-workload pushes of about 1,000 entries: the same SDK
//! plugins run through the host's whole stage path (encode the batch, call, check the response,
//! apply it: `PluginStage`, as a pipeline worker runs it) once as Wasm in wasmtime and once
//! compiled natively into the process.
//!
//! - `identity`: the boundary itself (a test plugin that keeps everything);
//! - `example_filter`: a test plugin (drop by substring, set a label, redact, keyed hash);
//! - every stage of the reference chain (`deploy/examples/reference-chain.yaml`: parse-json,
//!   parse-logfmt, redact, relabel, sample), each on what the stages before it made of the push,
//!   and the whole chain.
//!
//! `cargo bench -p sluice-benches --bench plugin_boundary`; throughput is per entry of the push
//! (each stage's own input may be smaller after sampling). The test plugins are built from
//! `tests/plugins` first (release, `wasm32-wasip2`); the built-ins come embedded in sluice.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

use sluice::config::{Config, Limits, PluginSource, RunMode, StageConfig};
use sluice::decode::{BodyFormat, decode_push};
use sluice::model::Batch;
use sluice::pipeline::Stage;
use sluice::plugin::build::{LoadedStage, StagePlugin};
use sluice::plugin::builtin::NativeCall;
use sluice::plugin::stage::NativeMaker;
use sluice::plugin::{LoadedPlugin, PluginEngine, PluginSpec, PluginStage, PoolSize, check_stage};
use sluice_benches::workload::{GenConfig, Generator};
use sluice_sdk::Plugin;
use sluice_sdk::native::NativePlugin;

const FILTER_CONFIG: &str =
    r#"{"drop_if_contains":"\"level\":\"DEBUG\"","label":"team","value":"ml","redact":"Bearer"}"#;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds the test plugins and returns the directory of their `.wasm` files.
fn build_test_plugins() -> PathBuf {
    let root = root();
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

fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_nanos() as i64
}

/// A test plugin natively, behind the same stage path as Wasm.
fn native_test_plugin<P: Plugin + Send>(config: &'static str, key: [u8; 32]) -> PluginStage {
    let make: NativeMaker =
        Arc::new(move || NativePlugin::<P>::new(config, key).map(|p| Box::new(p) as Box<dyn NativeCall>));
    PluginStage::native("bench", "native", make).expect("init")
}

/// A stage of the reference chain, loaded as `sluice run` loads it, running as `run`.
fn chain_stage(engine: &PluginEngine, config: &Config, stage: &StageConfig, run: RunMode) -> Box<dyn Stage> {
    let mut stage = stage.clone();
    stage.run = run;
    let source = config.plugin_source(&stage);
    let PluginSource::Builtin(name) = &source else { panic!("the reference chain uses built-ins") };
    let plugin = check_stage(engine, name, &stage, &source, None).expect("loads");
    assert!(matches!(
        (&plugin, run),
        (StagePlugin::Wasm(_), RunMode::Wasm) | (StagePlugin::Native { .. }, RunMode::Native)
    ));
    let loaded = LoadedStage { plugin, on_error: stage.on_error(), dead_letter: None };
    (loaded.factory())().expect("instance")
}

fn benches(c: &mut Criterion) {
    let dir = build_test_plugins();
    let now = now_ns();
    let mut generator = Generator::new(1, now - 60_000_000_000, GenConfig::default());
    let push = generator.next_push();
    let body = push.protobuf_snappy(generator.workload());
    let batch =
        decode_push(&body, BodyFormat::default(), Arc::from("bench"), &Limits::default(), 100 << 20, now)
            .expect("decodes")
            .batch;
    let key = sluice_sdk::hash::derive_key(b"bench");
    let engine = PluginEngine::new(PoolSize { instances: 32, max_memory: 64 << 20 }).expect("engine");
    let wasm = |file: &str, config: &str| {
        let spec = PluginSpec {
            stage: file.into(),
            config_json: config.into(),
            timeout: Duration::from_secs(5),
            max_memory: 64 << 20,
            hash_key: key,
        };
        let plugin = LoadedPlugin::load(&engine, &dir.join(file), spec, None).expect("loads");
        PluginStage::wasm(plugin).expect("instance")
    };

    let mut group = c.benchmark_group("plugin_boundary_1000_entries");
    group.throughput(Throughput::Elements(batch.entry_count() as u64));
    let run = |group: &mut criterion::BenchmarkGroup<'_, _>,
               name: &str,
               input: &Batch,
               stage: &mut dyn Stage| {
        group.bench_function(name, |b| {
            b.iter_batched_ref(|| input.clone(), |b| stage.process(b).expect("runs"), BatchSize::LargeInput)
        });
    };
    run(&mut group, "identity_wasm", &batch, &mut wasm("identity.wasm", "{}"));
    run(&mut group, "identity_native", &batch, &mut native_test_plugin::<identity::Identity>("{}", key));
    run(&mut group, "example_filter_wasm", &batch, &mut wasm("example_filter.wasm", FILTER_CONFIG));
    let mut native = native_test_plugin::<example_filter::ExampleFilter>(FILTER_CONFIG, key);
    run(&mut group, "example_filter_native", &batch, &mut native);

    // The reference chain, stage by stage, each on its own input.
    // SAFETY of the figures: the hash key is the example's public default; it changes nothing
    // about cost.
    let config = Config::load(&root().join("deploy/examples/reference-chain.yaml")).expect("example config");
    let stages = &config.pipelines["reference"].stages;
    let mut input = batch.clone();
    let (mut chain_wasm, mut chain_native) = (Vec::new(), Vec::new());
    for stage in stages {
        let name = stage.plugin.display().to_string().replace('-', "_");
        let mut wasm = chain_stage(&engine, &config, stage, RunMode::Wasm);
        let mut native = chain_stage(&engine, &config, stage, RunMode::Native);
        run(&mut group, &format!("{name}_wasm"), &input, wasm.as_mut());
        run(&mut group, &format!("{name}_native"), &input, native.as_mut());
        native.process(&mut input).expect("runs");
        chain_wasm.push(wasm);
        chain_native.push(native);
    }
    for (name, chain) in [("chain_wasm", &mut chain_wasm), ("chain_native", &mut chain_native)] {
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || batch.clone(),
                |b| chain.iter_mut().for_each(|s| s.process(b).expect("runs")),
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(plugin_boundary, benches);
criterion_main!(plugin_boundary);
