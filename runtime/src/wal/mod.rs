//! The write-ahead log: what makes a 204 mean "on disk".
//!
//! **What it holds.** A pipeline worker appends each batch *after* its stages, as it goes to
//! the sinks: one record per tenant and route, naming the sinks it is for ([`record`]). Holding
//! the pipeline's output, not its input, is what makes delivery from the log safe to repeat: a
//! record is re-sent after a restart exactly as it was first processed, so no plugin ever runs
//! twice on the same entry (a second run could sample differently, redact a redacted line, or
//! count a line twice in a plugin's state), and a plugin changed by a reload never rewrites what
//! was accepted under the old one.
//!
//! **The log is the sinks' queue.** Each sink has a reader thread ([`reader`]) that follows the
//! log from its own cursor, decodes the records meant for it and hands them to the sink, holding
//! at most `read_ahead` bytes that the sink has not yet confirmed. A slow or failing sink falls
//! behind on disk, not in memory, and never holds back another sink. A sink confirms a record
//! once it is delivered (or dropped for good: refused by Loki, out of retries), through the
//! [`Mark`] that travels with its entries; each sink's cursor is the oldest record it has not
//! confirmed, saved five times a second, and a segment is removed once every sink's cursor is past it.
//! At-least-once: after a crash, what a sink delivered after its last saved cursor is delivered
//! again.
//!
//! **Bounds.** The log takes at most `max_size` bytes; an append beyond it fails and ingest
//! answers 429 with `Retry-After` until the slowest sink catches up. A failed write (a full
//! disk) is cut back to the last whole record and answered with 503; the next append starts a
//! new segment, so that the sinks' deliveries free space even on a disk smaller than a segment.
//!
//! **Durability.** `fsync: batch` syncs before a push is acknowledged (group commit: one sync
//! covers every push that arrived meanwhile), so an acknowledged line survives a power loss.
//! `fsync: interval` (the default) acknowledges once the record is written to the file, which
//! survives a crash or `kill -9` of sluice, and syncs every `fsync_interval`, so a power loss
//! or kernel crash can lose the last interval.
//!
//! **Recovery.** Every record carries a checksum ([`frame`]). At start the last segment is read
//! whole: a torn record at its tail (a write cut off by a crash) is cut away. Damage before
//! the tail is skipped by the readers, logged and counted, never a crash loop. Writing always
//! continues in a fresh segment.

pub mod frame;
pub mod reader;
pub mod record;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use reader::{Mark, Tracker};

use crate::config::{FsyncPolicy, WalConfig};
use crate::model::{Ack, AckFailureKind};
use frame::Format;

/// Where a record starts (or where reading resumes): a segment and a byte offset in it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.segment, self.offset)
    }
}

/// Why an append failed.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error(
        "the write-ahead log is full ({size} bytes of wal.max_size {max}): a sink is behind; retry later"
    )]
    Full { size: u64, max: u64 },
    #[error("cannot write the write-ahead log: {0}")]
    Io(#[from] io::Error),
    #[error("the write-ahead log could not be synced to disk; it answers again once a new segment syncs")]
    SyncFailed,
    #[error("sluice is shutting down")]
    Closed,
}

impl AppendError {
    /// How the push that needed this append is answered: 429 when full, else 503.
    pub fn ack_kind(&self) -> AckFailureKind {
        match self {
            Self::Full { .. } => AckFailureKind::Overloaded,
            Self::Io(_) | Self::SyncFailed | Self::Closed => AckFailureKind::Unavailable,
        }
    }
}

/// What a reader may read next from a position.
#[derive(Debug, PartialEq, Eq)]
pub enum Readable {
    /// Records up to this offset of the position's segment.
    Until(u64),
    /// The position's segment is read; go on at the start of this one.
    Next(u64),
    /// Nothing new yet.
    Wait,
    /// The log is closed and everything is read.
    Closed,
}

/// What [`Wal::open`] found on disk.
#[derive(Debug, Default)]
pub struct Recovered {
    pub segments: usize,
    pub bytes: u64,
    /// Bytes of a torn record cut from the tail of the last segment.
    pub torn_bytes: u64,
    /// Damaged regions found in the last segment before its tail.
    pub damaged: u64,
    /// Bytes each configured sink has still to read, by sink.
    pub backlog: Vec<(String, u64)>,
    pub took: Duration,
}

/// The log. Appends come from the pipeline workers; each configured sink has a [`Tracker`].
pub struct Wal {
    dir: PathBuf,
    /// Seeds every record's check (see [`frame`]).
    key: FrameKey,
    max_size: u64,
    segment_size: u64,
    fsync: FsyncPolicy,
    fsync_interval: Duration,
    state: Mutex<State>,
    /// Woken on every append and at close: readers waiting for data.
    appended: Condvar,
    /// Woken when acknowledgements wait for a sync, and to stop the syncer.
    sync_wanted: Condvar,
    trackers: Vec<Arc<Tracker>>,
    syncer: Mutex<Option<JoinHandle<()>>>,
    /// The last cursor save failed (warned once until one succeeds).
    cursors_failing: AtomicBool,
    /// Syncs still to fail (tests).
    #[cfg(test)]
    fail_syncs: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal").field("dir", &self.dir).finish()
    }
}

struct State {
    active_id: u64,
    active: Arc<File>,
    /// Every segment on disk by id, with its length; the active one's is `head.offset`.
    segments: BTreeMap<u64, u64>,
    total: u64,
    /// The end of the last whole record.
    head: Position,
    /// Acknowledgements waiting for the next sync (`fsync: batch`).
    waiting: Vec<Ack>,
    /// Bytes written since the last sync.
    dirty: u64,
    /// No more appends (shutdown).
    closed: bool,
    /// The syncer's last round is due.
    stopping: bool,
    /// The last append failed to write (a full or failing disk). The next one starts a new
    /// segment, so the active one can be removed once delivered: on a disk smaller than a
    /// segment, that is what gives space back.
    failing: bool,
    /// The last sync failed: what the page cache holds of the active segment may never reach
    /// the disk, and a later sync of the same file can succeed without writing it (Linux
    /// forgets the error once reported). So no append goes there again: appends are refused
    /// (503) until the syncer has started a new segment and synced it.
    sync_failed: bool,
}

impl State {
    /// Makes `file`, the new segment `id`, the one appends go to.
    fn start_segment(&mut self, id: u64, file: File) {
        self.active = Arc::new(file);
        self.active_id = id;
        self.segments.insert(id, 0);
        self.head = Position { segment: id, offset: 0 };
    }
}

/// With `fsync: interval`, a sync starts early once this much is unsynced.
const SYNC_EARLY_BYTES: u64 = 8 << 20;

/// How often cursors are saved and delivered segments removed: often, because what a sink
/// delivered after its last saved cursor is delivered again after a crash.
const HOUSEKEEPING: Duration = Duration::from_millis(200);

impl Wal {
    /// Opens (or creates) the log in `config.dir` (default `<data_dir>/wal`) for these sinks,
    /// recovers it, and starts the syncer thread.
    pub fn open(
        config: &WalConfig,
        data_dir: &Path,
        sinks: &[String],
    ) -> Result<(Arc<Self>, Recovered), String> {
        let started = Instant::now();
        let dir = config.dir_in(data_dir);
        let context = |what: &str, e: io::Error| format!("write-ahead log {}: {what}: {e}", dir.display());
        crate::private_fs::create_dir_all(&dir.join("cursors"))
            .map_err(|e| context("cannot create the directory", e))?;
        let mut segments = BTreeMap::new();
        for entry in fs::read_dir(&dir).map_err(|e| context("cannot list", e))? {
            let entry = entry.map_err(|e| context("cannot list", e))?;
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(segment_id) else { continue };
            let len = entry.metadata().map_err(|e| context("cannot stat a segment", e))?.len();
            segments.insert(id, len);
        }
        let mut recovered = Recovered { segments: segments.len(), ..Recovered::default() };
        let active_id = segments.keys().next_back().map_or(1, |id| id + 1);
        let key = FrameKey::open(&dir, &segments, active_id).map_err(|e| context("frame-key", e))?;
        if let Some((&last, &len)) = segments.iter().next_back() {
            let path = segment_path(&dir, last);
            let file = File::open(&path).map_err(|e| context("cannot open the last segment", e))?;
            let scanned = frame::scan(file, len, key.format_of(last))
                .map_err(|e| context("cannot read the last segment", e))?;
            recovered.damaged = scanned.damaged;
            if scanned.valid_end < len {
                recovered.torn_bytes = len - scanned.valid_end;
                let file =
                    OpenOptions::new().write(true).open(&path).map_err(|e| context("cannot open", e))?;
                file.set_len(scanned.valid_end).map_err(|e| context("cannot cut the torn tail", e))?;
                file.sync_all().map_err(|e| context("cannot sync", e))?;
                segments.insert(last, scanned.valid_end);
                metrics::counter!("sluice_wal_torn_tails_total").increment(1);
            }
        }
        let active = create_segment(&dir, active_id).map_err(|e| context("cannot create a segment", e))?;
        segments.insert(active_id, 0);
        let total = segments.values().sum();
        recovered.bytes = total;
        let first = Position { segment: *segments.keys().next().unwrap_or(&active_id), offset: 0 };
        let trackers: Vec<Arc<Tracker>> = sinks
            .iter()
            .map(|sink| {
                let saved = read_cursor(&cursor_path(&dir, sink));
                let start = saved.filter(|c| c.segment >= first.segment).unwrap_or(first);
                Arc::new(Tracker::new(sink, start))
            })
            .collect();
        forget_removed_sinks(&dir, sinks, &segments);
        let head = Position { segment: active_id, offset: 0 };
        for t in &trackers {
            recovered.backlog.push((t.sink.to_string(), bytes_between(&segments, t.cursor(), head)));
        }
        let state = State {
            active_id,
            active: Arc::new(active),
            segments,
            total,
            head,
            waiting: Vec::new(),
            dirty: 0,
            closed: false,
            stopping: false,
            failing: false,
            sync_failed: false,
        };
        let wal = Arc::new(Self {
            key,
            dir,
            max_size: config.max_size.as_u64(),
            segment_size: config.segment_size.as_u64().max(frame::HEADER_LEN as u64),
            fsync: config.fsync,
            fsync_interval: config.fsync_interval,
            state: Mutex::new(state),
            appended: Condvar::new(),
            sync_wanted: Condvar::new(),
            trackers,
            syncer: Mutex::new(None),
            cursors_failing: AtomicBool::new(false),
            #[cfg(test)]
            fail_syncs: std::sync::atomic::AtomicUsize::new(0),
        });
        let syncer = {
            let wal = Arc::clone(&wal);
            std::thread::Builder::new()
                .name("sluice-wal-sync".into())
                .spawn(move || wal.run_syncer())
                .map_err(|e| format!("cannot start the write-ahead log's sync thread: {e}"))?
        };
        *wal.syncer.lock().unwrap_or_else(|p| p.into_inner()) = Some(syncer);
        wal.housekeep();
        recovered.took = started.elapsed();
        Ok((wal, recovered))
    }

    /// The directory of the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The tracker of `sink`, if it was configured when the log was opened.
    pub fn tracker(&self, sink: &str) -> Option<Arc<Tracker>> {
        self.trackers.iter().find(|t| &*t.sink == sink).cloned()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a record could still be appended; ingest checks it to refuse early with 429
    /// rather than after the pipeline has run.
    pub fn check_room(&self) -> Result<(), AppendError> {
        self.room(&self.lock(), 1)
    }

    /// `Full` (counted) when `len` more bytes do not fit; a record is always taken by an empty
    /// log, so that one larger than `max_size` cannot be refused forever.
    fn room(&self, s: &State, len: u64) -> Result<(), AppendError> {
        if s.total > 0 && s.total + len > self.max_size {
            metrics::counter!("sluice_wal_append_errors_total", "reason" => "full").increment(1);
            return Err(AppendError::Full { size: s.total, max: self.max_size });
        }
        Ok(())
    }

    /// How appended records must be framed.
    pub fn frame_format(&self) -> Format {
        Format::Keyed(self.key.key)
    }

    /// How the records of segment `id` were framed.
    pub fn format_of(&self, id: u64) -> Format {
        self.key.format_of(id)
    }

    /// Bytes on disk.
    pub fn size(&self) -> u64 {
        self.lock().total
    }

    /// Appends one framed record. `ack` (a share of the push's acknowledgement) is released
    /// once the record is as durable as `fsync` promises; it is failed if the sync fails.
    pub fn append(&self, framed: &[u8], ack: Ack) -> Result<Position, AppendError> {
        let len = framed.len() as u64;
        let mut s = self.lock();
        if s.closed {
            return Err(AppendError::Closed);
        }
        if s.sync_failed {
            metrics::counter!("sluice_wal_append_errors_total", "reason" => "fsync").increment(1);
            return Err(AppendError::SyncFailed);
        }
        self.room(&s, len)?;
        let at = match self.write(&mut s, framed) {
            Ok(at) => at,
            Err(e) => {
                metrics::counter!("sluice_wal_append_errors_total", "reason" => "io").increment(1);
                if !s.failing {
                    tracing::error!(dir = %self.dir.display(), error = %e,
                        "cannot write the write-ahead log; pushes are answered 503 until a write succeeds");
                }
                s.failing = true;
                return Err(AppendError::Io(e));
            }
        };
        if s.failing {
            tracing::info!(dir = %self.dir.display(), "the write-ahead log is writable again");
            s.failing = false;
        }
        s.head.offset += len;
        let (id, end) = (s.active_id, s.head.offset);
        s.segments.insert(id, end);
        s.total += len;
        s.dirty += len;
        // Many small syncs stall writers less than one large one (a sync of the file holds
        // back writes to it on common filesystems), so do not let a whole interval pile up.
        let sync_early = s.dirty >= SYNC_EARLY_BYTES;
        metrics::counter!("sluice_wal_appended_bytes_total").increment(len);
        metrics::counter!("sluice_wal_appended_records_total").increment(1);
        match self.fsync {
            FsyncPolicy::Batch => {
                s.waiting.push(ack);
                drop(s);
                self.sync_wanted.notify_one();
            }
            FsyncPolicy::Interval => {
                drop(s);
                drop(ack);
                if sync_early {
                    self.sync_wanted.notify_one();
                }
            }
        }
        self.appended.notify_all();
        Ok(at)
    }

    /// Writes `framed` at the head, in a new segment when the active one is full or failed;
    /// returns where it starts.
    fn write(&self, s: &mut State, framed: &[u8]) -> io::Result<Position> {
        let len = framed.len() as u64;
        if s.head.offset > 0 && (s.failing || s.head.offset + len > self.segment_size) {
            self.rotate(s)?;
        }
        let at = s.head;
        if let Err(e) = s.active.write_all_at(framed, at.offset) {
            // Never leave a partial record behind a later one: cut back to the last whole one.
            let _ = s.active.set_len(at.offset);
            return Err(e);
        }
        Ok(at)
    }

    /// Syncs and closes the active segment and starts the next one.
    fn rotate(&self, s: &mut State) -> io::Result<()> {
        s.active.sync_data()?;
        let id = s.active_id + 1;
        s.start_segment(id, create_segment(&self.dir, id)?);
        // Acknowledgements waiting for a sync are covered by the one above.
        s.waiting.clear();
        Ok(())
    }

    /// Starts a new segment after a failed sync, without syncing the old one again (that could
    /// report a success that wrote nothing); appends go on once the new one and the directory
    /// are synced. Tried again at the syncer's next round if that fails too.
    fn start_after_failed_sync(&self, s: &mut State) {
        let id = s.active_id + 1;
        let started = create_segment(&self.dir, id).and_then(|file| {
            self.sync(&file)?;
            Ok(file)
        });
        match started {
            Ok(file) => {
                s.start_segment(id, file);
                s.sync_failed = false;
                s.failing = false;
                tracing::info!(dir = %self.dir.display(), segment = id, "the write-ahead log syncs again; appends go on in a new segment");
            }
            Err(e) => tracing::debug!(error = %e, "the write-ahead log still cannot sync"),
        }
    }

    /// `fsync` of a segment (the place tests make it fail).
    fn sync(&self, file: &File) -> io::Result<()> {
        #[cfg(test)]
        if self.fail_syncs.load(Ordering::Relaxed) > 0 {
            self.fail_syncs.fetch_sub(1, Ordering::Relaxed);
            return Err(io::Error::other("injected sync failure"));
        }
        file.sync_data()
    }

    /// What a reader at `at` may read, waiting up to `timeout` for something new.
    pub fn readable(&self, at: Position, timeout: Duration) -> Readable {
        let mut s = self.lock();
        loop {
            if at.segment < s.active_id {
                let len = s.segments.get(&at.segment).copied().unwrap_or(0);
                if at.offset < len {
                    return Readable::Until(len);
                }
                let next = s.segments.range(at.segment + 1..).next().map_or(s.active_id, |(&id, _)| id);
                return Readable::Next(next);
            }
            if at.offset < s.head.offset {
                return Readable::Until(s.head.offset);
            }
            if s.closed {
                return Readable::Closed;
            }
            let (guard, waited) = self.appended.wait_timeout(s, timeout).unwrap_or_else(|p| p.into_inner());
            s = guard;
            if waited.timed_out() {
                return Readable::Wait;
            }
        }
    }

    /// The path of segment `id`.
    pub fn segment_path(&self, id: u64) -> PathBuf {
        segment_path(&self.dir, id)
    }

    /// Stops appends (shutdown begins); readers read to the end and stop.
    pub fn close(&self) {
        self.lock().closed = true;
        self.appended.notify_all();
    }

    /// Stops the syncer after a last sync, cursor save and clean-up; returns what is left
    /// undelivered, by sink.
    pub fn shutdown(&self) -> Vec<(String, u64)> {
        {
            let mut s = self.lock();
            s.closed = true;
            s.stopping = true;
        }
        self.appended.notify_all();
        self.sync_wanted.notify_all();
        if let Some(handle) = self.syncer.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = handle.join();
        }
        let s = self.lock();
        self.trackers
            .iter()
            .map(|t| (t.sink.to_string(), bytes_between(&s.segments, t.cursor(), s.head)))
            .filter(|(_, bytes)| *bytes > 0)
            .collect()
    }

    fn run_syncer(&self) {
        let tick = self.fsync_interval.min(HOUSEKEEPING).max(Duration::from_millis(1));
        let mut last_sync = Instant::now();
        let mut last_housekeeping = Instant::now();
        loop {
            let (acks, file, dirty, stopping) = {
                let mut s = self.lock();
                if s.sync_failed {
                    self.start_after_failed_sync(&mut s);
                }
                if s.waiting.is_empty() && !s.stopping && s.dirty < SYNC_EARLY_BYTES {
                    s = self.sync_wanted.wait_timeout(s, tick).unwrap_or_else(|p| p.into_inner()).0;
                }
                let due = last_sync.elapsed() >= self.fsync_interval || s.dirty >= SYNC_EARLY_BYTES;
                let sync_now = !s.waiting.is_empty() || s.stopping || due;
                let dirty = sync_now && std::mem::take(&mut s.dirty) > 0;
                (std::mem::take(&mut s.waiting), Arc::clone(&s.active), dirty, s.stopping)
            };
            if dirty {
                let started = Instant::now();
                let result = self.sync(&file);
                metrics::histogram!("sluice_wal_fsync_duration_seconds")
                    .record(started.elapsed().as_secs_f64());
                last_sync = Instant::now();
                if let Err(e) = result {
                    metrics::counter!("sluice_wal_append_errors_total", "reason" => "fsync").increment(1);
                    tracing::error!(
                        error = %e,
                        "cannot sync the write-ahead log; pushes are answered 503 until a new segment syncs"
                    );
                    self.lock().sync_failed = true;
                    for ack in &acks {
                        ack.fail_with(
                            AckFailureKind::Unavailable,
                            format!("cannot sync the write-ahead log: {e}"),
                        );
                    }
                }
            }
            drop(acks);
            if stopping || last_housekeeping.elapsed() >= HOUSEKEEPING {
                self.housekeep();
                last_housekeeping = Instant::now();
            }
            if stopping {
                return;
            }
        }
    }

    /// Saves the cursors that moved, removes segments every sink is past, updates gauges.
    fn housekeep(&self) {
        for t in &self.trackers {
            let Some(cursor) = t.take_unsaved() else { continue };
            match write_cursor(&cursor_path(&self.dir, &t.sink), cursor) {
                Ok(()) => {
                    if self.cursors_failing.swap(false, Ordering::Relaxed) {
                        tracing::info!("write-ahead log cursors are saved again");
                    }
                }
                Err(e) => {
                    // Said once, not five times a second: a cursor saved late only means more
                    // records are delivered again after a crash.
                    if !self.cursors_failing.swap(true, Ordering::Relaxed) {
                        tracing::warn!(sink = %t.sink, error = %e, "cannot save the write-ahead log cursor");
                    }
                    t.unsave();
                }
            }
        }
        let (removable, lags) = {
            let mut s = self.lock();
            let oldest = self.trackers.iter().map(|t| t.cursor()).min().unwrap_or(s.head);
            let removable: Vec<u64> =
                s.segments.range(..oldest.segment.min(s.active_id)).map(|(&id, _)| id).collect();
            for id in &removable {
                if let Some(len) = s.segments.remove(id) {
                    s.total -= len;
                }
            }
            metrics::gauge!("sluice_wal_bytes").set(s.total as f64);
            metrics::gauge!("sluice_wal_segments").set(s.segments.len() as f64);
            let lags: Vec<(Arc<str>, u64)> = self
                .trackers
                .iter()
                .map(|t| (Arc::clone(&t.sink), bytes_between(&s.segments, t.cursor(), s.head)))
                .collect();
            (removable, lags)
        };
        for (sink, lag) in lags {
            metrics::gauge!("sluice_wal_sink_lag_bytes", "sink" => sink).set(lag as f64);
        }
        for id in removable {
            if let Err(e) = fs::remove_file(segment_path(&self.dir, id)) {
                tracing::warn!(segment = id, error = %e, "cannot remove a delivered write-ahead log segment");
            }
        }
    }
}

/// True when `dir` holds segments (an earlier run's log, possibly with undelivered records).
pub fn has_segments(dir: &Path) -> bool {
    fs::read_dir(dir)
        .is_ok_and(|entries| entries.flatten().any(|e| e.file_name().to_str().and_then(segment_id).is_some()))
}

/// Log bytes from `from` to `to`.
fn bytes_between(segments: &BTreeMap<u64, u64>, from: Position, to: Position) -> u64 {
    segments
        .range(from.segment..=to.segment)
        .map(|(&id, &len)| {
            let start = if id == from.segment { from.offset.min(len) } else { 0 };
            let end = if id == to.segment { to.offset.min(len) } else { len };
            end.saturating_sub(start)
        })
        .sum()
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg"))
}

fn segment_id(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    (digits.len() == 20).then(|| digits.parse().ok()).flatten()
}

/// Creates segment `id` and syncs the directory, so the segment outlives a power loss. `id` is
/// past every segment the log knows, so a file by that name can only be left by an earlier
/// attempt that failed after creating it (a full disk): it is empty, and taken over.
fn create_segment(dir: &Path, id: u64) -> io::Result<File> {
    let file = crate::private_fs::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(segment_path(dir, id))?;
    crate::private_fs::sync_dir(dir)?;
    Ok(file)
}

/// The log's frame key, in `<dir>/frame-key`: 8 random bytes that seed every record's check,
/// and the first segment framed with it (the ones before are legacy, from before it existed).
#[derive(Debug, Clone, Copy)]
struct FrameKey {
    key: u64,
    since: u64,
}

impl FrameKey {
    /// Reads the key, or makes one for a log that has none; `next` is the id of the segment
    /// about to be created.
    fn open(dir: &Path, segments: &BTreeMap<u64, u64>, next: u64) -> io::Result<Self> {
        let path = dir.join("frame-key");
        match fs::read(&path) {
            Ok(bytes) => {
                let bytes: [u8; 16] = bytes.try_into().map_err(|b: Vec<u8>| {
                    io::Error::other(format!(
                        "{} has {} bytes, not 16: it is damaged",
                        path.display(),
                        b.len()
                    ))
                })?;
                let (key, since) = bytes.split_at(8);
                let word = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes"));
                Ok(Self { key: word(key), since: word(since) })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Segments framed with a key that is gone could not be told from damage.
                for &id in segments.keys() {
                    let mut magic = [0u8; 4];
                    let file = File::open(segment_path(dir, id))?;
                    if file.read_exact_at(&mut magic, 0).is_ok() && magic == frame::MAGIC {
                        return Err(io::Error::other(format!(
                            "{} is missing, but segment {id} was framed with it: restore the file",
                            path.display()
                        )));
                    }
                }
                let mut key = [0u8; 8];
                File::open("/dev/urandom")?.read_exact(&mut key)?;
                let made = Self { key: u64::from_le_bytes(key), since: next };
                let mut bytes = key.to_vec();
                bytes.extend_from_slice(&next.to_le_bytes());
                crate::private_fs::write_synced(&path, bytes)?;
                crate::private_fs::sync_dir(dir)?;
                Ok(made)
            }
            Err(e) => Err(e),
        }
    }

    fn format_of(&self, segment: u64) -> Format {
        if segment >= self.since { Format::Keyed(self.key) } else { Format::Legacy }
    }
}

/// The cursor file of `sink`; the name is escaped so any sink name makes one plain file name.
fn cursor_path(dir: &Path, sink: &str) -> PathBuf {
    let mut name = String::with_capacity(sink.len());
    for b in sink.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            name.push(b as char);
        } else {
            name.push_str(&format!("%{b:02X}"));
        }
    }
    dir.join("cursors").join(name)
}

fn read_cursor(path: &Path) -> Option<Position> {
    let text = fs::read_to_string(path).ok()?;
    let (segment, offset) = text.trim().split_once(' ')?;
    Some(Position { segment: segment.parse().ok()?, offset: offset.parse().ok()? })
}

/// Replaces the cursor file atomically. Not synced: a cursor lost to a power failure only means
/// records are delivered again.
fn write_cursor(path: &Path, at: Position) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    crate::private_fs::write(&tmp, format!("{} {}\n", at.segment, at.offset))?;
    fs::rename(&tmp, path)
}

/// Removes the cursors of sinks no longer configured (they would hold segments forever),
/// warning when such a sink had records still to read.
fn forget_removed_sinks(dir: &Path, sinks: &[String], segments: &BTreeMap<u64, u64>) {
    let Ok(entries) = fs::read_dir(dir.join("cursors")) else { return };
    let known: Vec<PathBuf> = sinks.iter().map(|s| cursor_path(dir, s)).collect();
    let end = segments
        .iter()
        .next_back()
        .map_or(Position::default(), |(&id, &len)| Position { segment: id, offset: len });
    for entry in entries.flatten() {
        let path = entry.path();
        if known.contains(&path) {
            continue;
        }
        if let Some(cursor) = read_cursor(&path) {
            let behind = bytes_between(segments, cursor, end);
            if behind > 0 {
                tracing::warn!(
                    cursor = %path.display(), bytes = behind,
                    "a sink that is no longer configured had records left in the write-ahead log; they will not be delivered"
                );
            }
        }
        let _ = fs::remove_file(&path);
    }
}

#[cfg(test)]
mod tests;
