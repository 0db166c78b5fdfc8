//! Delivery from the log: one reader thread per sink, each sink's [`Tracker`] (what it has read
//! and what it has confirmed), and the [`Mark`] that carries a record's confirmation through the
//! sink.

use std::collections::VecDeque;
use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::frame::{Read, SegmentReader};
use super::record::Header;
use super::{Position, Readable, Wal};
use crate::buffer::Budget;
use crate::model::Batch;
use crate::sink::{SinkInput, SinkSender};

/// One sink's progress through the log.
#[derive(Debug)]
pub struct Tracker {
    pub sink: Arc<str>,
    state: Mutex<TrackerState>,
}

#[derive(Debug)]
struct TrackerState {
    /// Where the reader goes on.
    read: Position,
    /// Records handed to the sink, oldest first, with whether the sink confirmed them.
    outstanding: VecDeque<(Position, bool)>,
    /// The cursor last saved, if it still is the cursor.
    saved: Option<Position>,
}

impl TrackerState {
    fn cursor(&self) -> Position {
        self.outstanding.front().map_or(self.read, |&(at, _)| at)
    }
}

impl Tracker {
    pub fn new(sink: &str, start: Position) -> Self {
        // Unsaved at first, so that every configured sink has a cursor file after the first save.
        let state = TrackerState { read: start, outstanding: VecDeque::new(), saved: None };
        Self { sink: Arc::from(sink), state: Mutex::new(state) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TrackerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where delivery resumes after a restart: the oldest record not confirmed, else the read
    /// position.
    pub fn cursor(&self) -> Position {
        self.lock().cursor()
    }

    /// Where the reader starts or goes on.
    pub fn read_position(&self) -> Position {
        self.lock().read
    }

    /// The record at `at` is handed to the sink; reading goes on at `next`.
    pub fn begin(self: &Arc<Self>, at: Position, next: Position) -> Mark {
        let mut s = self.lock();
        s.outstanding.push_back((at, false));
        s.read = next;
        Mark {
            shared: Arc::new(MarkShared { tracker: Arc::clone(self), at, abandoned: AtomicBool::new(false) }),
            settled: false,
        }
    }

    /// Reading goes on at `next` without handing anything to the sink (a record for other
    /// sinks, or damage).
    pub fn skip(&self, next: Position) {
        self.lock().read = next;
    }

    fn done(&self, at: Position) {
        let mut s = self.lock();
        if let Ok(i) = s.outstanding.binary_search_by(|(p, _)| p.cmp(&at)) {
            s.outstanding[i].1 = true;
        }
        while s.outstanding.front().is_some_and(|&(_, done)| done) {
            s.outstanding.pop_front();
        }
    }

    /// The cursor, if it moved since it was last saved (and counts it saved).
    pub(super) fn take_unsaved(&self) -> Option<Position> {
        let mut s = self.lock();
        let cursor = s.cursor();
        if s.saved == Some(cursor) {
            return None;
        }
        s.saved = Some(cursor);
        Some(cursor)
    }

    /// Saving failed: try again next time.
    pub(super) fn unsave(&self) {
        self.lock().saved = None;
    }
}

/// A sink's hold on one log record. The record counts as delivered for that sink once every
/// share has been [`settle`](Mark::settle)d; a share dropped unsettled (a sink that stopped
/// before delivering, a task that failed) keeps the record in the log for the next start.
#[derive(Debug)]
pub struct Mark {
    shared: Arc<MarkShared>,
    settled: bool,
}

#[derive(Debug)]
struct MarkShared {
    tracker: Arc<Tracker>,
    at: Position,
    abandoned: AtomicBool,
}

impl Mark {
    /// Another share, for a part of the record's entries that goes its own way.
    pub fn share(&self) -> Self {
        Self { shared: Arc::clone(&self.shared), settled: false }
    }

    /// Adds a share to `marks`, the holds of one batch or object, unless its last one is of
    /// the same record already (entries of a record arrive together).
    pub fn share_into(&self, marks: &mut Vec<Mark>) {
        if !marks.last().is_some_and(|m| Arc::ptr_eq(&m.shared, &self.shared)) {
            marks.push(self.share());
        }
    }

    /// This share's entries are delivered, or dropped for good (refused, out of retries).
    pub fn settle(mut self) {
        self.settled = true;
    }
}

impl Drop for Mark {
    fn drop(&mut self) {
        if !self.settled {
            self.shared.abandoned.store(true, Ordering::Release);
        }
    }
}

impl Drop for MarkShared {
    fn drop(&mut self) {
        if !*self.abandoned.get_mut() {
            self.tracker.done(self.at);
        }
    }
}

/// Starts the reader of `tracker`'s sink: it reads the log from the tracker's position and
/// sends the records meant for the sink to `sink`, holding at most `read_ahead` bytes the sink
/// has not confirmed. It ends when the log is closed and read to its end, when the sink is
/// gone, or when `stop` is set.
pub fn spawn(
    wal: Arc<Wal>,
    tracker: Arc<Tracker>,
    sink: SinkSender,
    read_ahead: u64,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    let name = format!("sluice-wal-{}", tracker.sink);
    std::thread::Builder::new().name(name).spawn(move || {
        let reader = Reader { wal, tracker, sink, budget: Budget::new(u64::MAX, read_ahead.max(1)), stop };
        reader.run();
    })
}

struct Reader {
    wal: Arc<Wal>,
    tracker: Arc<Tracker>,
    sink: SinkSender,
    /// What has been sent to the sink and not yet delivered.
    budget: Arc<Budget>,
    stop: Arc<AtomicBool>,
}

impl Reader {
    fn run(self) {
        let sink_name = Arc::clone(&self.tracker.sink);
        let mut at = self.tracker.read_position();
        let mut file: Option<(u64, SegmentReader)> = None;
        while !self.stop.load(Ordering::Acquire) {
            let end = match self.wal.readable(at, Duration::from_millis(200)) {
                Readable::Until(end) => end,
                Readable::Next(segment) => {
                    at = Position { segment, offset: 0 };
                    self.tracker.skip(at);
                    file = None;
                    continue;
                }
                Readable::Wait => continue,
                Readable::Closed => break,
            };
            if file.as_ref().is_none_or(|(id, _)| *id != at.segment) {
                match File::open(self.wal.segment_path(at.segment)) {
                    Ok(f) => file = Some((at.segment, SegmentReader::new(f, self.wal.format_of(at.segment)))),
                    Err(e) => {
                        tracing::error!(sink = %sink_name, segment = at.segment, error = %e, "cannot open a write-ahead log segment; skipping it");
                        at.offset = end;
                        self.tracker.skip(at);
                        continue;
                    }
                }
            }
            let Some((_, segment)) = file.as_mut() else { continue };
            let read = match segment.read(at.offset, end) {
                Ok(read) => read,
                Err(e) => {
                    tracing::error!(sink = %sink_name, error = %e, "cannot read the write-ahead log; retrying");
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
            };
            match read {
                Read::Record { payload, next } => {
                    let record_at = at;
                    at.offset = next;
                    let batch = match Header::decode(payload) {
                        Ok(header) if !header.is_for(&sink_name) => None,
                        Ok(header) => match header.streams() {
                            Ok(streams) => Some(Batch { tenant: header.tenant(), streams }),
                            Err(e) => {
                                damaged(&sink_name, record_at, &e.to_string());
                                None
                            }
                        },
                        Err(e) => {
                            damaged(&sink_name, record_at, &e.to_string());
                            None
                        }
                    };
                    let Some(batch) = batch else {
                        self.tracker.skip(at);
                        continue;
                    };
                    let Some(charge) = self.charge(&batch) else { break };
                    let mark = self.tracker.begin(record_at, at);
                    let input = SinkInput { batch, charge: Arc::new(charge), mark: Some(mark), ack: None };
                    if let Err(e) = self.sink.send(input) {
                        // The sink has stopped; the record stays in the log.
                        drop(e);
                        break;
                    }
                }
                Read::End => {
                    // Only a closed segment can end in a torn record; the active one is read
                    // up to the end of its last whole record.
                    at.offset = end;
                    self.tracker.skip(at);
                }
                Read::Damaged { resume } => {
                    damaged(&sink_name, at, "bad checksum or framing");
                    at.offset = resume.unwrap_or(end);
                    self.tracker.skip(at);
                }
            }
        }
        tracing::debug!(sink = %sink_name, at = %at, "write-ahead log reader stopped");
    }

    /// Takes room for `batch` from the read-ahead budget, waiting while the sink is behind;
    /// `None` when told to stop meanwhile.
    fn charge(&self, batch: &Batch) -> Option<crate::buffer::Charge> {
        let mut wait = Duration::from_millis(1);
        loop {
            if let Some(charge) = self.budget.try_charge(batch.entry_count() as u64, batch.size() as u64) {
                return Some(charge);
            }
            if self.stop.load(Ordering::Acquire) {
                return None;
            }
            std::thread::sleep(wait);
            wait = (wait * 2).min(Duration::from_millis(50));
        }
    }
}

fn damaged(sink: &Arc<str>, at: Position, what: &str) {
    metrics::counter!("sluice_wal_damaged_records_total", "sink" => Arc::clone(sink)).increment(1);
    tracing::error!(sink = %sink, at = %at, "skipping a damaged write-ahead log record: {what}");
}
