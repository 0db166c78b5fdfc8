//! The sluice under test: the real binary, started on a free port of 127.0.0.1 with its own temp
//! dir (config file, data dir, stdout and stderr logs), stopped with SIGTERM.

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// How long sluice may take to answer `GET /ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The sluice binary to measure: `given`, else `sluice` beside the running program
/// (`target/release/sluice` for the bench binaries); an error says how to build it.
pub fn sluice_binary(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let path = match given {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe()?.with_file_name("sluice"),
    };
    if !path.is_file() {
        bail!(
            "no sluice binary at {}: build it with `cargo build --release -p sluice`, or pass --sluice",
            path.display()
        );
    }
    Ok(path)
}

/// A running sluice; killed when dropped if not stopped.
pub struct SluiceProcess {
    child: Option<Child>,
    pid: u32,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for SluiceProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SluiceProcess(pid {}, {})", self.pid, self.addr)
    }
}

fn free_port() -> std::io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

impl SluiceProcess {
    /// Starts `bin run --config <config>` and waits for `/ready`; tries another port if the
    /// one picked was taken in between.
    pub async fn start(bin: &Path, config: &str, client: &reqwest::Client) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("sluice-bench-").tempdir().context("temp dir")?;
        let config_path = dir.path().join("sluice.yaml");
        fs::write(&config_path, config).context("writing the config")?;
        let mut last = String::new();
        for _ in 0..3 {
            let addr = free_port()?;
            let mut child = Command::new(bin)
                .arg("run")
                .arg("--config")
                .arg(&config_path)
                .arg("--listen")
                .arg(addr.to_string())
                .arg("--data-dir")
                .arg(dir.path().join("data"))
                .arg("--log-format")
                .arg("json")
                .arg("--log-level")
                .arg("info")
                .env_remove("RUST_LOG")
                .stdin(Stdio::null())
                .stdout(fs::File::create(dir.path().join("stdout.log"))?)
                .stderr(fs::File::create(dir.path().join("stderr.log"))?)
                .spawn()
                .with_context(|| {
                    format!("cannot start {} (build it: cargo build --release -p sluice)", bin.display())
                })?;
            match wait_ready(&mut child, &format!("http://{addr}/ready"), client).await {
                Ok(()) => return Ok(Self { pid: child.id(), child: Some(child), addr, dir }),
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last = format!("{e:#}\n{}", tail(&dir.path().join("stderr.log"), 20));
                    if !last.contains("in use") {
                        bail!("sluice did not become ready: {last}");
                    }
                }
            }
        }
        bail!("sluice did not start: {last}")
    }

    /// Process id, for `/proc`.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The temp dir holding config, data and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// stderr log path.
    pub fn stderr_path(&self) -> PathBuf {
        self.dir.path().join("stderr.log")
    }

    /// The last `n` lines of stderr.
    pub fn logs_tail(&self, n: usize) -> String {
        tail(&self.stderr_path(), n)
    }

    /// Log lines of level WARN or ERROR (sluice logs JSON here), at most `n`, and their count.
    pub fn warnings(&self, n: usize) -> (usize, Vec<String>) {
        let text = fs::read_to_string(self.stderr_path()).unwrap_or_default();
        let bad: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("\"level\":\"WARN\"") || l.contains("\"level\":\"ERROR\""))
            .collect();
        (bad.len(), bad.iter().take(n).map(|l| l.chars().take(400).collect()).collect())
    }

    /// SIGTERM, then waits up to `timeout` for the exit; kills it after that. Returns how it
    /// ended.
    pub async fn stop(&mut self, timeout: Duration) -> String {
        let Some(child) = self.child.as_mut() else { return "not running".into() };
        let _ = Command::new("kill").args(["-TERM", &self.pid.to_string()]).status();
        let deadline = Instant::now() + timeout;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.child = None;
                    return status.to_string();
                }
                Ok(None) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
                _ => {
                    self.kill();
                    return format!("did not exit within {timeout:?} of SIGTERM; killed");
                }
            }
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn wait_ready(child: &mut Child, url: &str, client: &reqwest::Client) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            bail!("sluice exited before it was ready: {status}");
        }
        if let Ok(resp) = client.get(url).timeout(Duration::from_secs(2)).send().await
            && resp.status().as_u16() == 200
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("GET {url} did not answer 200 within {READY_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Drop for SluiceProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
