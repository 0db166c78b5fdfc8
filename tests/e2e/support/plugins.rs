//! The test plugins (`tests/plugins`): built to `wasm32-wasip2` once per test run, into
//! `target/test-plugins`, and located by name. Cargo's own lock serialises concurrent builds
//! from different test binaries; a fresh checkout gets the target installed first.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const TARGET: &str = "wasm32-wasip2";

/// The repository root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The built plugin `name` (e.g. `trap` → `…/release/trap.wasm`); builds them all on first use.
pub fn plugin(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir =
        BUILT.get_or_init(build).as_ref().unwrap_or_else(|e| panic!("cannot build the test plugins: {e}"));
    let path = dir.join(format!("{}.wasm", name.replace('-', "_")));
    assert!(path.is_file(), "no test plugin at {}", path.display());
    path
}

fn build() -> Result<PathBuf, String> {
    let installed = Command::new("rustup").args(["target", "list", "--installed"]).output();
    if !installed.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).lines().any(|l| l.trim() == TARGET)) {
        let status = Command::new("rustup").args(["target", "add", TARGET]).status();
        if !status.is_ok_and(|s| s.success()) {
            return Err(format!("`rustup target add {TARGET}` failed"));
        }
    }
    let root = root();
    let target_dir = root.join("target").join("test-plugins");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["build", "--release", "--target", TARGET, "--manifest-path"])
        .arg(root.join("tests/plugins/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    Ok(target_dir.join(TARGET).join("release"))
}

/// Every `line` in the NDJSON files under `dir` (what an archive sink with `compression: none` wrote), sorted.
pub fn ndjson_lines(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "ndjson") {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                for line in text.lines() {
                    let v: serde_json::Value = serde_json::from_str(line).expect("NDJSON");
                    out.push(v["line"].as_str().unwrap_or_default().to_string());
                }
            }
        }
    }
    out.sort();
    out
}

/// The value of the metric sample whose line starts with `name{` (or is `name value`, without
/// labels) and contains every label in `labels` (`key="value"`); `None` if there is none.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
