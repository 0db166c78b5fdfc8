//! Real Loki client libraries push through sluice exactly as they push to Loki.

use std::process::{Command, Stdio};
use std::time::Duration;

use tracing_subscriber::layer::SubscriberExt as _;

use crate::support::receiver::Receiver;
use crate::support::sluice::{Sluice, loki_config};
use crate::support::{DELIVERY, ok_or_logs};

const PYTHON_CLIENT: &str = r#"
import logging, sys
import logging_loki

failures = []

class Strict(logging_loki.LokiHandler):
    # LokiHandler swallows errors (it expects exactly 204); make them fail the script.
    def handleError(self, record):
        failures.append(sys.exc_info()[1])

handler = Strict(url=sys.argv[1], tags={"application": "py-e2e"}, version="1")
logger = logging.getLogger("e2e")
logger.setLevel(logging.INFO)
logger.addHandler(handler)
for i in range(5):
    logger.info("python line %d", i)
logger.warning("python warning", extra={"tags": {"component": "db"}})
if failures:
    print("push failed:", failures, file=sys.stderr)
    sys.exit(1)
"#;

/// Runs a command to its end, killing it after `timeout`.
async fn run_bounded(cmd: &mut Command, timeout: Duration) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("command starts");
    let deadline = std::time::Instant::now() + timeout;
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("{cmd:?} did not finish within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Small outputs: the pipes did not fill up while we polled.
    child.wait_with_output().expect("output")
}

/// A directory holding `python-logging-loki`, installed from PyPI on first use into the test
/// target directory, so the README's `cargo test --workspace` needs nothing installed beforehand.
fn python_logging_loki() -> &'static std::path::Path {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("python-logging-loki");
        let importable = || {
            Command::new("python3")
                .args(["-c", "import logging_loki"])
                .env("PYTHONPATH", &dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !importable() {
            let out = Command::new("python3")
                .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target"])
                .arg(&dir)
                .arg(PYTHON_CLIENT_PACKAGE)
                .output()
                .expect("python3 runs");
            assert!(
                out.status.success() && importable(),
                "cannot install {PYTHON_CLIENT_PACKAGE} with pip into {}: {}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        dir
    })
}

/// The client under test, pinned.
const PYTHON_CLIENT_PACKAGE: &str = "python-logging-loki==0.3.1";

#[tokio::test]
async fn python_logging_loki_pushes_through_sluice() {
    let site = tokio::task::spawn_blocking(python_logging_loki).await.expect("installs");
    let loki = Receiver::start();
    let sluice = Sluice::start(&loki_config(&loki.url(), "")).await;
    let script = sluice.dir().join("client.py");
    std::fs::write(&script, PYTHON_CLIENT).expect("write script");
    let url = sluice.push_url();
    let out = run_bounded(
        Command::new("python3").arg(&script).arg(&url).env("PYTHONPATH", site),
        Duration::from_secs(30),
    )
    .await;
    assert!(
        out.status.success(),
        "python client failed: {}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        sluice.logs()
    );
    ok_or_logs(loki.wait_for(6, DELIVERY).await, &sluice);
    let info =
        loki.entries_where("fake", &[("application", "py-e2e"), ("severity", "info"), ("logger", "e2e")]);
    let mut lines: Vec<String> = info.into_iter().map(|(_, e)| e.line).collect();
    lines.sort();
    assert_eq!(lines, (0..5).map(|i| format!("python line {i}")).collect::<Vec<_>>());
    let warn = loki.entries_where("fake", &[("severity", "warning"), ("component", "db")]);
    assert_eq!(warn.len(), 1, "{:?}", loki.entries("fake"));
}

#[tokio::test]
async fn tracing_loki_pushes_through_sluice() {
    let loki = Receiver::start();
    let sluice = Sluice::start(&loki_config(&loki.url(), "")).await;
    let url = tracing_loki::url::Url::parse(&sluice.url("/")).expect("url");
    let (layer, controller, task) = tracing_loki::builder()
        .label("service", "tracing-e2e")
        .expect("label")
        .extra_field("pid", "42")
        .expect("field")
        .http_header("X-Scope-OrgID", "rust-team")
        .expect("header")
        .build_controller_url(url)
        .expect("builds");
    let task = tokio::spawn(task);
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        for i in 0..5 {
            tracing::info!(request = i, "tracing line {i}");
        }
        tracing::warn!("tracing warning");
    });
    // The controller flushes what the layer queued, then the task ends.
    controller.shutdown().await;
    tokio::time::timeout(Duration::from_secs(10), task).await.expect("tracing-loki task ends").expect("task");
    ok_or_logs(loki.wait_for(6, DELIVERY).await, &sluice);
    let got = loki.entries_where("rust-team", &[("service", "tracing-e2e")]);
    assert_eq!(got.len(), 6, "{got:?}");
    let info: Vec<_> =
        got.iter().filter(|(l, _)| l.get("level").map(String::as_str) == Some("info")).collect();
    assert_eq!(info.len(), 5, "{got:?}");
    for (_, e) in &info {
        // tracing-loki sends each event as a JSON object with the message and fields.
        let v: serde_json::Value =
            serde_json::from_str(&e.line).unwrap_or_else(|err| panic!("{err}: {}", e.line));
        assert!(v["message"].as_str().is_some_and(|m| m.starts_with("tracing line ")), "{v}");
        assert_eq!(v["pid"], "42", "{v}");
    }
}
