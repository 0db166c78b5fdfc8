//! The archive sink: every entry as an NDJSON record (see [`crate::archive::record`]) in
//! compressed objects under keys such as
//!
//! ```text
//! <prefix>/tenant=<tenant>/dt=<YYYY-MM-DD>/hour=<HH>/<unix-ms>-<instance>-<seq>.ndjson.zst
//! ```
//!
//! Entries are compressed into [`spool`] files on local disk, one open object per key; an object
//! is sealed when it reaches `max_object_size`, `max_object_age` after its first entry, when
//! too many are open, and at shutdown; then [`upload`] stores it. A batch's budget charge is
//! released once its entries are in the spool; while the store fails, sealed objects wait in the
//! spool, and past `max_spool` the sink stops taking batches, so the queue fills and ingest
//! answers 429: backpressure, not loss.

pub mod spool;
pub mod upload;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use crate::archive::key::KeyTemplate;
use crate::archive::store::{self, CheckFailure};
use crate::config::ArchiveSinkConfig;
use crate::model::AckFailureKind;
use crate::sink::{ShutdownDeadline, SinkInput};

/// How long before the shutdown deadline the sink stops waiting for uploads.
const SHUTDOWN_MARGIN: Duration = Duration::from_millis(300);
/// How often open NDJSON objects are flushed, so the write-ahead log can let go of their
/// records without waiting for `max_object_age`.
const CHECKPOINT: Duration = Duration::from_secs(1);
use spool::{Sealed, Spool, SpoolConfig};
use upload::Uploads;

/// Writes batches into archive objects.
pub struct ArchiveSink {
    name: Arc<str>,
    spool: Option<Spool>,
    max_spool: u64,
    uploads: Arc<Uploads>,
    to_upload: mpsc::UnboundedSender<Sealed>,
    uploader: tokio::task::JoinHandle<()>,
    shutdown: ShutdownDeadline,
}

impl std::fmt::Debug for ArchiveSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveSink").field("name", &self.name).field("url", &self.uploads.store.url).finish()
    }
}

impl ArchiveSink {
    /// Opens the store (and checks it, unless `check_on_start: false`), opens the spool, and
    /// starts uploading what an earlier run left in it.
    pub async fn start(
        name: &str,
        config: &ArchiveSinkConfig,
        data_dir: &Path,
        shutdown: ShutdownDeadline,
    ) -> Result<Self, String> {
        let url = match &config.url {
            Some(url) => url.clone(),
            None => data_dir.join("archive").to_string_lossy().into_owned(),
        };
        let store = store::open(&url, &config.s3, &config.options)?;
        if config.check_on_start {
            match store::check_writable(&store).await {
                Ok(()) => {}
                Err(CheckFailure::Refused(e)) => return Err(e),
                // A store that is down must not keep the gateway down (a restart during an
                // outage would become a crash loop and stop Loki's traffic too): entries wait in
                // the write-ahead log and the spool until it is back, as they do at run time.
                Err(CheckFailure::Unreachable(e)) => tracing::error!(
                    sink = %name,
                    "{e}; starting anyway: archive objects wait in the spool until the store answers"
                ),
            }
        }
        let spool_config = SpoolConfig {
            dir: config.spool_dir.clone().unwrap_or_else(|| data_dir.join("spool").join(name)),
            template: KeyTemplate::parse(&config.key)?,
            format: config.format,
            compression: config.compression,
            level: config.compression_level,
            max_object_size: config.max_object_size.as_u64(),
            max_object_age: config.max_object_age,
            max_open: config.max_open_objects.max(1),
            max_open_per_tenant: config.max_open_objects_per_tenant.max(1),
        };
        let dir = spool_config.dir.clone();
        let (spool, leftovers) = tokio::task::spawn_blocking(move || Spool::open(spool_config))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("spool {}: {e}", dir.display()))?;
        let mut retry = config.retry.clone();
        retry.min_backoff = retry.min_backoff.min(retry.max_backoff);
        let uploads = Arc::new(Uploads {
            name: Arc::from(name),
            spool_dir: dir.clone(),
            store,
            part_size: usize::try_from(config.part_size.as_u64()).unwrap_or(usize::MAX),
            concurrency: config.upload_concurrency.max(1),
            retry,
            spooled: AtomicU64::new(0),
            freed: Notify::new(),
        });
        let (to_upload, rx) = mpsc::unbounded_channel();
        if !leftovers.is_empty() {
            tracing::info!(sink = %name, objects = leftovers.len(), "uploading archive objects left in the spool by an earlier run");
        }
        for sealed in leftovers {
            uploads.add(&sealed);
            let _ = to_upload.send(sealed);
        }
        let uploader = tokio::spawn(upload::run(Arc::clone(&uploads), rx));
        Ok(Self {
            name: Arc::from(name),
            spool: Some(spool),
            max_spool: config.max_spool.as_u64(),
            uploads,
            to_upload,
            uploader,
            shutdown,
        })
    }

    /// Writes until `rx` closes, then seals every object and waits for the uploads.
    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<SinkInput>) {
        let mut open_bytes = 0u64;
        let mut checkpoint = tokio::time::interval(CHECKPOINT);
        checkpoint.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let holds_marks = self.spool.as_ref().is_some_and(Spool::holds_marks);
            let deadline = self.spool.as_ref().and_then(Spool::next_deadline);
            let wait = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                input = rx.recv() => match input {
                    Some(input) => {
                        self.wait_for_spool_space(open_bytes).await;
                        // `on_delivery` acknowledgements are released once the entries are in
                        // the spool, when `ack` is dropped at the end of this arm.
                        let SinkInput { batch, charge, mark, ack } = input;
                        let written = Arc::new((batch, mark));
                        let op = Arc::clone(&written);
                        open_bytes = self.with_spool(move |spool, now| spool.write(&op.0, op.1.as_ref(), now)).await;
                        // The entries are in the spool now, and their objects hold shares of
                        // the mark; every other reference to it has gone with the closure.
                        drop(charge);
                        // A writer that panicked left no spool: then the entries are not
                        // written, and the mark is dropped unsettled (kept in the log).
                        if self.spool.is_some()
                            && let Ok((_, Some(mark))) = Arc::try_unwrap(written)
                        {
                            mark.settle();
                        }
                        if self.spool.is_none() && let Some(ack) = &ack {
                            ack.fail_with(AckFailureKind::Unavailable, format!("archive sink `{}` has stopped", self.name));
                        }
                        drop(ack);
                    }
                    None => break,
                },
                _ = checkpoint.tick(), if holds_marks => {
                    open_bytes = self.with_spool(|spool, _| spool.checkpoint().map(|()| Vec::new())).await;
                },
                () = wait => {
                    open_bytes = self.with_spool(|spool, now| spool.seal_due(now)).await;
                }
            }
        }
        self.with_spool(|spool, _| spool.seal_all()).await;
        let Self { name, uploads, to_upload, mut uploader, shutdown, .. } = self;
        drop(to_upload);
        // Sealed objects survive a restart: stop waiting for the store a little before the
        // shutdown deadline rather than make the exit fail.
        let give_up = async {
            match shutdown.get() {
                Some(&deadline) => {
                    tokio::time::sleep_until(deadline.checked_sub(SHUTDOWN_MARGIN).unwrap_or(deadline)).await
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut uploader => {}
            () = give_up => uploader.abort(),
        }
        let left = uploads.spooled.load(Ordering::Acquire);
        if left > 0 {
            tracing::warn!(
                sink = %name,
                bytes = left,
                spool = %uploads.spool_dir.display(),
                "archive objects are left in the spool; they are uploaded at the next start",
            );
        }
    }

    /// Runs `op` on the spool on a blocking thread, hands what it sealed to the uploader, and
    /// returns the bytes still in open objects. A failing disk is retried with backoff (the
    /// input, and its charge, are held meanwhile); a write that failed halfway is retried
    /// whole, so the entries it had written are archived twice: at least once, never lost.
    async fn with_spool<F>(&mut self, op: F) -> u64
    where
        F: Fn(&mut Spool, Instant) -> std::io::Result<Vec<Sealed>> + Send + Clone + 'static,
    {
        let mut delay = Duration::from_millis(100);
        loop {
            let Some(mut spool) = self.spool.take() else { return 0 };
            let now = Instant::now();
            let op = op.clone();
            let joined = tokio::task::spawn_blocking(move || {
                let result = op(&mut spool, now);
                (spool, result)
            })
            .await;
            let Ok((spool, result)) = joined else {
                // The closure panicked: nothing sane is left to write to.
                tracing::error!(sink = %self.name, "archive writer panicked; the sink stops");
                return 0;
            };
            let open_bytes = spool.open_bytes();
            metrics::gauge!("sluice_archive_open_objects", "sink" => Arc::clone(&self.name))
                .set(spool.open_count() as f64);
            self.spool = Some(spool);
            match result {
                Ok(sealed) => {
                    for s in sealed {
                        self.uploads.add(&s);
                        let _ = self.to_upload.send(s);
                    }
                    return open_bytes;
                }
                Err(e) => {
                    metrics::counter!("sluice_sink_retries_total", "sink" => Arc::clone(&self.name), "reason" => "io_error")
                        .increment(1);
                    tracing::warn!(sink = %self.name, error = %e, retry_in = ?delay, "cannot write to the archive spool");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    /// Holds the next batch while the spool is over `max_spool` (the store is slow or down).
    async fn wait_for_spool_space(&self, open_bytes: u64) {
        let mut logged = false;
        while self.uploads.spooled.load(Ordering::Acquire) + open_bytes > self.max_spool {
            if !logged {
                tracing::warn!(sink = %self.name, max_spool = self.max_spool, "archive spool is full; holding batches until uploads catch up");
                logged = true;
            }
            upload::wait_for_space(&self.uploads, Duration::from_secs(1)).await;
        }
    }
}
