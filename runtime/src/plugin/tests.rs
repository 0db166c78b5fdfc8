//! Tests of the host against real Wasm: the misbehaving plugins of `tests/plugins`, built once
//! per test run (as the end-to-end tests do).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::cache::CacheOutcome;
use super::*;
use crate::model::{Batch, Entry, LabelSet, Stream};
use crate::pipeline::Stage;

pub(super) fn plugin(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = BUILT
        .get_or_init(|| {
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            let target_dir = root.join("target/test-plugins");
            let _ = Command::new("rustup").args(["target", "add", "wasm32-wasip2"]).output();
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let out = Command::new(cargo)
                .args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
                .arg(root.join("tests/plugins/Cargo.toml"))
                .arg("--target-dir")
                .arg(&target_dir)
                .env_remove("CARGO_TARGET_DIR")
                .env_remove("RUSTFLAGS")
                .env_remove("CARGO_ENCODED_RUSTFLAGS")
                .output()
                .map_err(|e| e.to_string())?;
            if !out.status.success() {
                return Err(String::from_utf8_lossy(&out.stderr).into_owned());
            }
            Ok(target_dir.join("wasm32-wasip2/release"))
        })
        .as_ref()
        .unwrap_or_else(|e| panic!("cannot build the test plugins: {e}"));
    dir.join(format!("{name}.wasm"))
}

fn engine() -> PluginEngine {
    PluginEngine::new(PoolSize { instances: 8, max_memory: 64 << 20 }).expect("engine")
}

fn spec(timeout: Duration, max_memory: usize) -> PluginSpec {
    PluginSpec {
        stage: "test".into(),
        config_json: "{}".into(),
        timeout,
        max_memory,
        hash_key: sluice_sdk::hash::derive_key(b"test"),
    }
}

fn load(engine: &PluginEngine, name: &str, timeout: Duration, max_memory: usize) -> Arc<LoadedPlugin> {
    LoadedPlugin::load(engine, &plugin(name), spec(timeout, max_memory), None).expect("loads")
}

fn batch(lines: &[&str]) -> Batch {
    let labels = LabelSet::new(vec![("app".into(), "x".into())]);
    let entries = lines
        .iter()
        .enumerate()
        .map(|(i, l)| Entry {
            timestamp_ns: i as i64,
            line: l.to_string(),
            metadata: vec![("k".into(), "v".into())],
        })
        .collect();
    Batch { tenant: "t".into(), streams: vec![Stream { labels, entries }] }
}

#[test]
fn the_compiled_plugin_is_cached_and_loaded_from_the_cache() {
    let engine = engine();
    let dir = tempfile::tempdir().expect("temp dir");
    let first = LoadedPlugin::load(
        &engine,
        &plugin("trap"),
        spec(Duration::from_secs(1), 16 << 20),
        Some(dir.path()),
    )
    .expect("loads");
    assert_eq!(first.cache, CacheOutcome::Compiled);
    assert_eq!(first.info.name, "trap");
    let files: Vec<_> = std::fs::read_dir(dir.path()).expect("dir").flatten().map(|e| e.path()).collect();
    assert_eq!(files.len(), 1, "one artifact, no temporary files left: {files:?}");
    assert!(files[0].extension().is_some_and(|e| e == "cwasm"));
    let second = LoadedPlugin::load(
        &engine,
        &plugin("trap"),
        spec(Duration::from_secs(1), 16 << 20),
        Some(dir.path()),
    )
    .expect("loads");
    assert_eq!(second.cache, CacheOutcome::Hit);
    // Another plugin gets its own entry; a damaged artifact is recompiled, not trusted.
    std::fs::write(&files[0], b"damaged").expect("write");
    let third = LoadedPlugin::load(
        &engine,
        &plugin("trap"),
        spec(Duration::from_secs(1), 16 << 20),
        Some(dir.path()),
    )
    .expect("loads");
    assert_eq!(third.cache, CacheOutcome::Compiled);
    let mut stage = PluginStage::wasm(third).expect("instance");
    let mut b = batch(&["fine"]);
    stage.process(&mut b).expect("runs");

    // Native code is only trusted from a private cache: an artifact or a directory that others
    // may write is compiled again (and the artifact rewritten 0600).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let load = || {
            LoadedPlugin::load(
                &engine,
                &plugin("trap"),
                spec(Duration::from_secs(1), 16 << 20),
                Some(dir.path()),
            )
            .expect("loads")
            .cache
        };
        let mode = |p: &std::path::Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&files[0]), 0o600);
        assert_eq!(load(), CacheOutcome::Hit);
        std::fs::set_permissions(&files[0], std::fs::Permissions::from_mode(0o666)).expect("chmod");
        assert_eq!(load(), CacheOutcome::Compiled, "an artifact others may write is not loaded");
        assert_eq!(mode(&files[0]), 0o600);
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
        assert_eq!(load(), CacheOutcome::Compiled, "nor one in a directory others may write");
    }
}

#[test]
fn a_trap_fails_the_batch_untouched_and_the_next_batch_gets_a_new_instance() {
    let engine = engine();
    let mut stage =
        PluginStage::wasm(load(&engine, "trap", Duration::from_secs(1), 16 << 20)).expect("instance");
    let mut ok = batch(&["a", "b"]);
    stage.process(&mut ok).expect("identity");
    assert_eq!(ok, batch(&["a", "b"]));
    let mut bad = batch(&["x", "please trap"]);
    let e = stage.process(&mut bad).expect_err("traps");
    assert_eq!(e.reason, "trap", "{e}");
    assert!(e.message.contains("plugin `trap`"), "{e}");
    assert_eq!(bad, batch(&["x", "please trap"]), "a failed batch is left as it was");
    for _ in 0..3 {
        let mut again = batch(&["c"]);
        stage.process(&mut again).expect("a rebuilt instance works");
    }
}

#[test]
fn a_push_larger_than_one_call_is_processed_in_chunks_and_a_failed_chunk_leaves_it_whole() {
    let engine = engine();
    let mut stage =
        PluginStage::wasm(load(&engine, "trap", Duration::from_secs(5), 64 << 20)).expect("instance");
    let lines: Vec<String> = (0..25_000).map(|i| format!("line {i}")).collect();
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let mut big = batch(&refs);
    stage.process(&mut big).expect("every chunk within the limits");
    assert_eq!(big, batch(&refs), "identity, chunk by chunk, gives the batch back whole");

    // A line that traps, in the last chunk: the chunks before it succeeded, yet the batch is
    // left exactly as it was.
    let mut lines = lines;
    lines[24_000] = "please trap".into();
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let mut bad = batch(&refs);
    let e = stage.process(&mut bad).expect_err("the last chunk traps");
    assert_eq!(e.reason, "trap", "{e}");
    assert_eq!(bad, batch(&refs));
}

#[test]
fn an_endless_loop_times_out_at_the_deadline() {
    let engine = engine();
    let mut stage =
        PluginStage::wasm(load(&engine, "spin", Duration::from_millis(50), 16 << 20)).expect("instance");
    let started = Instant::now();
    let e = stage.process(&mut batch(&["spin"])).expect_err("times out");
    let took = started.elapsed();
    assert_eq!(e.reason, "timeout", "{e}");
    assert!(took >= Duration::from_millis(50) && took < Duration::from_secs(2), "took {took:?}");
    stage.process(&mut batch(&["fine"])).expect("rebuilt");
}

#[test]
fn a_plugin_that_sleeps_fails_at_once_instead_of_hanging_the_worker() {
    let engine = engine();
    let mut stage =
        PluginStage::wasm(load(&engine, "sleeper", Duration::from_secs(1), 16 << 20)).expect("instance");
    let started = Instant::now();
    let e = stage.process(&mut batch(&["sleep"])).expect_err("may not sleep");
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
    assert_eq!(e.reason, "trap", "{e}");
    assert!(e.message.contains("plugins may not block"), "{e}");
    stage.process(&mut batch(&["fine"])).expect("rebuilt");

    // In `init`, the start (and a reload) fail with the reason instead of hanging.
    let sleepy = PluginSpec {
        config_json: r#"{"sleep_in_init":true}"#.into(),
        ..spec(Duration::from_secs(1), 16 << 20)
    };
    let started = Instant::now();
    let e = LoadedPlugin::load(&engine, &plugin("sleeper"), sleepy, None).expect_err("init sleeps");
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    assert!(e.to_string().contains("plugins may not block"), "{e}");
}

#[test]
fn unbounded_allocation_stops_at_the_memory_limit() {
    let engine = engine();
    let mut stage =
        PluginStage::wasm(load(&engine, "hog", Duration::from_secs(5), 8 << 20)).expect("instance");
    let e = stage.process(&mut batch(&["hog"])).expect_err("runs out of memory");
    assert_eq!(e.reason, "memory", "{e}");
    stage.process(&mut batch(&["fine"])).expect("rebuilt");
}

#[test]
fn malformed_output_is_refused_and_the_instance_kept() {
    let engine = engine();
    let mut stage =
        PluginStage::wasm(load(&engine, "garbage", Duration::from_secs(1), 16 << 20)).expect("instance");
    let mut bad = batch(&["garbage"]);
    let e = stage.process(&mut bad).expect_err("malformed");
    assert_eq!(e.reason, "malformed_output", "{e}");
    assert_eq!(bad, batch(&["garbage"]));
    stage.process(&mut batch(&["fine"])).expect("still works");
}

#[test]
fn a_file_that_is_not_a_component_is_a_compile_error() {
    let engine = engine();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bad.wasm");
    std::fs::write(&path, b"\0asm\x01\0\0\0").expect("write");
    let e = LoadedPlugin::load(&engine, &path, spec(Duration::from_secs(1), 16 << 20), None)
        .expect_err("not a component");
    assert!(matches!(e, PluginError::Compile(_)), "{e}");
}
