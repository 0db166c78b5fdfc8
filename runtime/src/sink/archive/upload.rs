//! Uploads sealed spool files, a few at once, each retried with backoff until it is stored
//! (or `max_attempts` is spent, when it moves to `<spool>/failed/`). An object becomes visible
//! only whole: a single PUT, a multipart upload completed at the end, or a rename into a local
//! archive directory.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload, WriteMultipart};
use tokio::io::AsyncReadExt;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;

use super::spool::Sealed;
use crate::archive::store::{self, Store};
use crate::config::RetryConfig;
use crate::sink::loki::retry::backoff;

/// What uploads share.
#[derive(Debug)]
pub struct Uploads {
    pub name: Arc<str>,
    pub spool_dir: std::path::PathBuf,
    pub store: Store,
    pub part_size: usize,
    pub concurrency: usize,
    pub retry: RetryConfig,
    /// Bytes of sealed files not yet uploaded.
    pub spooled: AtomicU64,
    /// Woken whenever an upload frees spool space.
    pub freed: Notify,
}

impl Uploads {
    /// Counts a sealed file into the spool.
    pub fn add(&self, sealed: &Sealed) {
        let total = self.spooled.fetch_add(sealed.bytes, Ordering::AcqRel) + sealed.bytes;
        metrics::gauge!("sluice_archive_spool_bytes", "sink" => Arc::clone(&self.name)).set(total as f64);
    }

    fn remove(&self, sealed: &Sealed) {
        let total = self.spooled.fetch_sub(sealed.bytes, Ordering::AcqRel) - sealed.bytes;
        metrics::gauge!("sluice_archive_spool_bytes", "sink" => Arc::clone(&self.name)).set(total as f64);
        self.freed.notify_waiters();
    }
}

/// Uploads what arrives on `rx` until it closes and every upload has ended.
pub async fn run(uploads: Arc<Uploads>, mut rx: mpsc::UnboundedReceiver<Sealed>) {
    let mut tasks = JoinSet::new();
    let mut open = true;
    while open || !tasks.is_empty() {
        tokio::select! {
            sealed = rx.recv(), if open && tasks.len() < uploads.concurrency => match sealed {
                Some(sealed) => {
                    let uploads = Arc::clone(&uploads);
                    tasks.spawn(async move { upload_until_done(&uploads, sealed).await });
                }
                None => open = false,
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
}

async fn upload_until_done(uploads: &Uploads, sealed: Sealed) {
    let name = &uploads.name;
    // A key no store accepts fails the same way on every attempt: retrying it forever would fill
    // the spool and then the log, and every tenant would get 429. It goes to `failed/` at once.
    if let Err(e) = ObjectPath::parse(&sealed.key) {
        give_up(uploads, &sealed, &format!("invalid key `{}`: {e}; not retried", sealed.key));
        return;
    }
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match upload(&uploads.store, &sealed, uploads.part_size).await {
            Ok(()) => {
                let _ = std::fs::remove_file(&sealed.key_file);
                metrics::counter!("sluice_archive_objects_total", "sink" => Arc::clone(name)).increment(1);
                metrics::counter!("sluice_sink_sent_entries_total", "sink" => Arc::clone(name))
                    .increment(sealed.entries);
                metrics::counter!("sluice_sink_sent_bytes_total", "sink" => Arc::clone(name))
                    .increment(sealed.bytes);
                if attempt > 1 {
                    tracing::info!(sink = %name, key = %sealed.key, attempts = attempt, "archive object uploaded after retries");
                }
                uploads.remove(&sealed);
                return;
            }
            Err(e) => {
                metrics::counter!("sluice_sink_retries_total", "sink" => Arc::clone(name), "reason" => "store_error")
                    .increment(1);
                let max = uploads.retry.max_attempts;
                if max > 0 && attempt >= max {
                    give_up(uploads, &sealed, &e);
                    return;
                }
                let wait = backoff(attempt, uploads.retry.min_backoff, uploads.retry.max_backoff);
                // The first failure and then every tenth, so a long outage does not flood the log.
                if attempt == 1 || attempt.is_multiple_of(10) {
                    tracing::warn!(sink = %name, key = %sealed.key, attempt, retry_in = ?wait, error = %e, "cannot upload an archive object; it stays in the spool");
                }
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// After `max_attempts`, or at once for a key no store takes: the object is kept in
/// `<spool>/failed/` for an operator.
fn give_up(uploads: &Uploads, sealed: &Sealed, error: &str) {
    let failed = sealed.data.parent().map(|d| d.join("failed"));
    let moved = failed.as_ref().and_then(|dir| {
        crate::private_fs::create_dir_all(dir).ok()?;
        let file_name = sealed.key.replace('/', "%2F");
        std::fs::rename(&sealed.data, dir.join(&file_name)).ok()?;
        let _ = std::fs::remove_file(&sealed.key_file);
        Some(dir.join(file_name))
    });
    metrics::counter!("sluice_sink_dropped_entries_total", "sink" => Arc::clone(&uploads.name), "reason" => "retries_exhausted")
        .increment(sealed.entries);
    tracing::error!(
        sink = %uploads.name,
        key = %sealed.key,
        entries = sealed.entries,
        kept_in = %moved.as_ref().map_or_else(|| sealed.data.display().to_string(), |p| p.display().to_string()),
        error = %error,
        "gave up uploading an archive object (retry.max_attempts)",
    );
    uploads.remove(sealed);
}

/// One attempt.
async fn upload(store: &Store, sealed: &Sealed, part_size: usize) -> Result<(), String> {
    let key = ObjectPath::parse(&sealed.key).map_err(|e| format!("invalid key `{}`: {e}", sealed.key))?;
    if let Some(root) = &store.local_root {
        let target = store::local_path(root, &key);
        let data = sealed.data.clone();
        let moved = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            if let Some(parent) = target.parent() {
                crate::private_fs::create_dir_all(parent)?;
            }
            std::fs::rename(&data, &target)
        })
        .await
        .map_err(|e| e.to_string())?;
        match moved {
            Ok(()) => return Ok(()),
            // Another filesystem: copy through the store below.
            Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => {}
            Err(e) => {
                return Err(format!("cannot move {} into {}: {e}", sealed.data.display(), root.display()));
            }
        }
    }
    let mut file = tokio::fs::File::open(&sealed.data)
        .await
        .map_err(|e| format!("cannot read {}: {e}", sealed.data.display()))?;
    if sealed.bytes <= part_size as u64 {
        let mut bytes = Vec::with_capacity(sealed.bytes as usize);
        file.read_to_end(&mut bytes)
            .await
            .map_err(|e| format!("cannot read {}: {e}", sealed.data.display()))?;
        store.objects.put(&key, PutPayload::from(bytes)).await.map_err(store::describe)?;
    } else {
        let upload = store.objects.put_multipart(&key).await.map_err(store::describe)?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, part_size);
        let mut buf = vec![0u8; part_size];
        loop {
            let n = match read_full(&mut file, &mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(format!("cannot read {}: {e}", sealed.data.display()));
                }
            };
            if n == 0 {
                break;
            }
            if let Err(e) = writer.wait_for_capacity(2).await {
                let _ = writer.abort().await;
                return Err(store::describe(e));
            }
            writer.write(&buf[..n]);
        }
        // On failure the upload is aborted, so no parts are left behind.
        writer.finish().await.map_err(store::describe)?;
    }
    tokio::fs::remove_file(&sealed.data)
        .await
        .map_err(|e| format!("uploaded, but cannot remove {}: {e}", sealed.data.display()))
}

/// Reads until `buf` is full or the file ends.
async fn read_full(file: &mut tokio::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]).await? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Waits (up to `timeout`) for an upload to free spool space.
pub async fn wait_for_space(uploads: &Uploads, timeout: Duration) {
    let _ = tokio::time::timeout(timeout, uploads.freed.notified()).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use object_store::{ObjectStore, ObjectStoreExt};

    fn uploads(store: Store, part_size: usize) -> Arc<Uploads> {
        Arc::new(Uploads {
            name: Arc::from("test"),
            spool_dir: std::path::PathBuf::new(),
            store,
            part_size,
            concurrency: 2,
            retry: RetryConfig::default(),
            spooled: AtomicU64::new(0),
            freed: Notify::new(),
        })
    }

    fn sealed(dir: &std::path::Path, id: &str, key: &str, data: &[u8]) -> Sealed {
        let (path, key_file) = (dir.join(format!("{id}.ready")), dir.join(format!("{id}.key")));
        std::fs::write(&path, data).expect("write");
        std::fs::write(&key_file, key).expect("write");
        Sealed { data: path, key_file, key: key.into(), bytes: data.len() as u64, entries: 1 }
    }

    #[tokio::test]
    async fn small_and_multipart_uploads_arrive_whole_and_leave_the_spool() {
        let dir = tempfile::tempdir().expect("tempdir");
        let memory = Arc::new(InMemory::new());
        let store = Store { objects: memory.clone(), local_root: None, url: "memory://".into() };
        let part = 5 << 20;
        let big: Vec<u8> = (0..(2 * part + 123)).map(|i| (i % 251) as u8).collect();
        let uploads = uploads(store, part);
        let (tx, rx) = mpsc::unbounded_channel();
        for s in [
            sealed(dir.path(), "1", "t/a.ndjson.zst", b"small"),
            sealed(dir.path(), "2", "t/b.ndjson.zst", &big),
        ] {
            uploads.add(&s);
            tx.send(s).expect("running");
        }
        drop(tx);
        run(Arc::clone(&uploads), rx).await;
        let get = |k: &str| {
            let memory = memory.clone();
            let k = ObjectPath::from(k);
            async move { memory.get(&k).await.expect("stored").bytes().await.expect("bytes") }
        };
        assert_eq!(&get("t/a.ndjson.zst").await[..], b"small");
        assert_eq!(get("t/b.ndjson.zst").await.to_vec(), big);
        assert_eq!(uploads.spooled.load(Ordering::Acquire), 0);
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 0, "spool files removed");
    }

    #[tokio::test]
    async fn a_key_no_store_takes_goes_to_failed_at_once_instead_of_being_retried() {
        let dir = tempfile::tempdir().expect("tempdir");
        let memory = Arc::new(InMemory::new());
        let store = Store { objects: memory.clone(), local_root: None, url: "memory://".into() };
        let mut u = uploads(store, 5 << 20);
        Arc::get_mut(&mut u).expect("one owner").retry.max_attempts = 0; // retry forever otherwise
        let (tx, rx) = mpsc::unbounded_channel();
        let s = sealed(dir.path(), "1", "tenant=a/../x.ndjson.zst", b"data");
        u.add(&s);
        tx.send(s).expect("running");
        drop(tx);
        tokio::time::timeout(Duration::from_secs(5), run(Arc::clone(&u), rx))
            .await
            .expect("not retried forever");
        let failed: Vec<_> =
            std::fs::read_dir(dir.path().join("failed")).expect("failed/").flatten().collect();
        assert_eq!(failed.len(), 1, "kept for an operator");
        assert_eq!(u.spooled.load(Ordering::Acquire), 0, "no longer counted in the spool");
    }

    #[tokio::test]
    async fn a_local_archive_gets_the_file_moved_into_place() {
        let spool = tempfile::tempdir().expect("tempdir");
        let root = tempfile::tempdir().expect("tempdir");
        let store = crate::archive::store::open(
            root.path().to_str().expect("utf-8"),
            &Default::default(),
            &Default::default(),
        )
        .expect("opens");
        let s = sealed(spool.path(), "1", "tenant=a/dt=2024-01-01/hour=00/x.ndjson", b"{}\n");
        upload(&store, &s, 5 << 20).await.expect("moved");
        assert_eq!(
            std::fs::read(root.path().join("tenant=a/dt=2024-01-01/hour=00/x.ndjson")).expect("there"),
            b"{}\n"
        );
        assert!(!s.data.exists());
        let listed: Vec<_> = {
            use futures_util::StreamExt;
            store.objects.list(None).map(|m| m.expect("meta").location.to_string()).collect().await
        };
        assert_eq!(listed, ["tenant=a/dt=2024-01-01/hour=00/x.ndjson"]);
    }
}
