//! Runs the real `sluice` binary: each instance in its own temp dir, on a free port of
//! 127.0.0.1, its stdout and stderr in files there (printed when the test fails), killed on drop.

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use sluice::proto::PushRequest;

use super::push::{self, Resp};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_sluice");

/// How long sluice may take to answer `/ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// How to start sluice.
#[derive(Debug, Default, Clone)]
pub struct Options {
    /// The YAML configuration; `None` runs without `--config` (the embedded default).
    pub config: Option<String>,
    /// Extra arguments after `run`.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Talk HTTPS to a sluice with `server.tls`, with this client (see [`tls_client`]).
    pub tls: Option<reqwest::Client>,
}

/// A client that trusts the CA in `ca_pem` and, given `identity_pem` (a certificate and its
/// key), presents that client certificate.
pub fn tls_client(ca_pem: &str, identity_pem: Option<&str>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .pool_idle_timeout(Duration::from_secs(5))
        .no_proxy()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("CA certificate"));
    if let Some(identity) = identity_pem {
        builder =
            builder.identity(reqwest::Identity::from_pem(identity.as_bytes()).expect("client identity"));
    }
    builder.build().expect("client")
}

/// A running sluice.
pub struct Sluice {
    child: Option<Child>,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
    pub client: reqwest::Client,
    /// `--data-dir`, when not `data/` in `dir`.
    data_dir: Option<PathBuf>,
    /// `https` with `server.tls`, else `http`.
    scheme: &'static str,
}

impl std::fmt::Debug for Sluice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sluice({})", self.addr)
    }
}

fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    l.local_addr().expect("local addr")
}

impl Sluice {
    /// Starts sluice with `config` and waits until it is ready.
    pub async fn start(config: &str) -> Self {
        Self::start_with(Options { config: Some(config.to_string()), ..Default::default() }).await
    }

    /// Starts sluice and waits until it is ready; retries on another port if the one picked
    /// was taken in between.
    pub async fn start_with(options: Options) -> Self {
        Self::start_on(options, None).await
    }

    /// Like [`Sluice::start_with`], with `--data-dir data_dir` (instead of `data/` in the
    /// instance's temp dir) when given: for a test that starts sluice again on the same data.
    pub async fn start_on(options: Options, data_dir: Option<PathBuf>) -> Self {
        let mut dir = tempfile::Builder::new().prefix("sluice-e2e-").tempdir().expect("temp dir");
        let mut last = String::new();
        for _attempt in 0..3 {
            let addr = free_port();
            let mut cmd = Command::new(BIN);
            cmd.arg("run");
            if let Some(config) = &options.config {
                let path = dir.path().join("sluice.yaml");
                fs::write(&path, config).expect("write config");
                cmd.arg("--config").arg(&path);
            }
            cmd.arg("--listen")
                .arg(addr.to_string())
                .arg("--data-dir")
                .arg(data_dir.clone().unwrap_or_else(|| dir.path().join("data")))
                .arg("--log-format")
                .arg("json")
                .args(&options.args)
                .env("RUST_LOG", std::env::var("SLUICE_E2E_LOG").unwrap_or_else(|_| "info".into()))
                .envs(options.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .stdin(Stdio::null())
                .stdout(fs::File::create(dir.path().join("stdout.log")).expect("stdout file"))
                .stderr(fs::File::create(dir.path().join("stderr.log")).expect("stderr file"));
            let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
            // Idle connections are let go before sluice's header_read_timeout closes them, so a
            // test that waits does not reuse a connection that is being closed.
            let client = match &options.tls {
                Some(client) => client.clone(),
                None => reqwest::Client::builder()
                    .timeout(Duration::from_secs(20))
                    .pool_idle_timeout(Duration::from_secs(5))
                    .no_proxy()
                    .build()
                    .expect("client"),
            };
            let scheme = if options.tls.is_some() { "https" } else { "http" };
            let mut s = Self { child: Some(child), addr, dir, client, data_dir: data_dir.clone(), scheme };
            match s.wait_ready().await {
                Ok(()) => return s,
                Err(e) => {
                    last = format!("{e}\n{}", s.logs());
                    let port_taken = last.contains("in use");
                    s.kill();
                    if !port_taken {
                        panic!("sluice did not become ready: {last}");
                    }
                    dir = s.take_dir();
                }
            }
        }
        panic!("sluice did not start: {last}");
    }

    fn take_dir(mut self) -> tempfile::TempDir {
        self.kill();
        let placeholder = tempfile::tempdir().expect("temp dir");
        let dir = std::mem::replace(&mut self.dir, placeholder);
        drop(self);
        dir
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let url = self.url("/ready");
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!("sluice exited before it was ready: {status}"));
            }
            if let Ok(resp) = self.client.get(&url).timeout(Duration::from_secs(2)).send().await
                && resp.status().as_u16() == 200
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("GET {url} did not answer 200 within {READY_TIMEOUT:?}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `http://127.0.0.1:PORT` (`https` with TLS) + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.addr)
    }

    /// The push endpoint.
    pub fn push_url(&self) -> String {
        self.url("/loki/api/v1/push")
    }

    /// The instance's temp dir.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `--data-dir`.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(|| self.dir.path().join("data"))
    }

    /// Its stdout and stderr so far.
    pub fn logs(&self) -> String {
        let read = |name: &str| fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("--- sluice stdout ---\n{}--- sluice stderr ---\n{}", read("stdout.log"), read("stderr.log"))
    }

    /// Pushes protobuf+snappy (`Content-Encoding: snappy` when `snappy_header`).
    pub async fn push_proto(&self, tenant: Option<&str>, req: &PushRequest) -> Resp {
        push::proto(&self.client, &self.push_url(), tenant, req, false).await
    }

    /// Pushes protobuf+snappy with `Content-Encoding: snappy`.
    pub async fn push_proto_snappy_header(&self, tenant: Option<&str>, req: &PushRequest) -> Resp {
        push::proto(&self.client, &self.push_url(), tenant, req, true).await
    }

    /// Pushes JSON, compressed with `encoding` when given.
    pub async fn push_json(&self, tenant: Option<&str>, json: &str, encoding: Option<&str>) -> Resp {
        push::json(&self.client, &self.push_url(), tenant, json, encoding).await
    }

    /// Pushes any body with any headers.
    pub async fn push_raw(&self, tenant: Option<&str>, headers: &[(&str, &str)], body: Vec<u8>) -> Resp {
        push::raw(&self.client, &self.push_url(), tenant, headers, body).await
    }

    /// `GET path` → (status, body).
    pub async fn get(&self, path: &str) -> (u16, String) {
        let resp = self.client.get(self.url(path)).send().await.unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    }

    /// Sends SIGTERM and waits (at most `timeout`) for the exit status; kills it after that.
    pub async fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        let Some(child) = self.child.as_mut() else { return Err("not running".into()) };
        let pid = child.id().to_string();
        let kill = Command::new("kill").args(["-TERM", &pid]).status().map_err(|e| format!("kill: {e}"))?;
        if !kill.success() {
            return Err(format!("kill -TERM {pid} failed"));
        }
        let deadline = Instant::now() + timeout;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.child = None;
                    return Ok(status);
                }
                Ok(None) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
                Ok(None) => {
                    self.kill();
                    return Err(format!("sluice did not exit within {timeout:?} of SIGTERM"));
                }
                Err(e) => return Err(format!("wait: {e}")),
            }
        }
    }

    /// Kills the process with SIGKILL (`kill -9`: no shutdown at all) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("sluice at {} (dir {}):\n{}", self.addr, self.dir.path().display(), self.logs());
        }
    }
}

/// Output of a command that runs to its end, e.g. `sluice validate`.
#[derive(Debug)]
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `sluice args…` to completion (bounded: killed after 90 s).
pub fn run_to_end(args: &[&str], cwd: &Path) -> Output {
    run_to_end_with(args, cwd, &[])
}

/// [`run_to_end`] with extra environment variables.
pub fn run_to_end_with(args: &[&str], cwd: &Path, env: &[(String, String)]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(fs::File::create(cwd.join("cmd.stdout")).expect("stdout file"))
        .stderr(fs::File::create(cwd.join("cmd.stderr")).expect("stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
    // Generous: `validate` of every built-in compiles nine plugins, slow in a debug build on a
    // loaded 2-core machine.
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        match child.try_wait().expect("wait") {
            Some(s) => break Some(s),
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    Output {
        code: status.and_then(|s| s.code()),
        stdout: fs::read_to_string(cwd.join("cmd.stdout")).unwrap_or_default(),
        stderr: fs::read_to_string(cwd.join("cmd.stderr")).unwrap_or_default(),
    }
}

/// `sluice validate --config <file with text>`.
pub fn validate(config: &str) -> (Output, tempfile::TempDir) {
    let dir = tempfile::Builder::new().prefix("sluice-validate-").tempdir().expect("temp dir");
    let path = dir.path().join("sluice.yaml");
    fs::write(&path, config).expect("write config");
    let path = path.to_string_lossy().to_string();
    (run_to_end(&["validate", "--config", &path], dir.path()), dir)
}

/// A config with one Loki sink (`loki`) pointing at `url`, short batching and fast retries,
/// plus `extra` YAML appended at the top level.
pub fn loki_config(url: &str, extra: &str) -> String {
    format!(
        r#"sinks:
  loki:
    type: loki
    url: "{url}"
    batch_wait: 100ms
    retry: {{ min_backoff: 50ms, max_backoff: 500ms }}
{extra}"#
    )
}
