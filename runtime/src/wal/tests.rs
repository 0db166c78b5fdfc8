use std::sync::atomic::{AtomicBool, Ordering};

use bytesize::ByteSize;
use tokio::sync::mpsc;

use super::*;
use crate::model::{Batch, Entry, LabelSet, Stream};
use crate::sink::SinkInput;

fn config(dir: &Path, segment: u64, max: u64, fsync: FsyncPolicy) -> WalConfig {
    WalConfig {
        dir: Some(dir.to_path_buf()),
        segment_size: ByteSize::b(segment),
        max_size: ByteSize::b(max),
        fsync,
        fsync_interval: Duration::from_millis(20),
        ..WalConfig::default()
    }
}

fn batch(lines: &[&str]) -> Batch {
    let labels = LabelSet::new(vec![("app".into(), "api".into())]);
    let entries = lines
        .iter()
        .enumerate()
        .map(|(i, l)| Entry { timestamp_ns: i as i64, line: l.to_string(), metadata: vec![] })
        .collect();
    Batch { tenant: "t".into(), streams: vec![Stream { labels, entries }] }
}

/// A record framed as `wal` frames it (or, without one, with a key of its own: for sizes).
fn framed(wal: Option<&Wal>, sinks: &[&str], b: &Batch) -> Vec<u8> {
    let format = wal.map_or(Format::Keyed(0), Wal::frame_format);
    let mut out = Vec::new();
    let start = frame::begin(format, &mut out);
    record::encode(&b.tenant, sinks, &b.streams, &mut out).expect("encodes");
    frame::finish(format, &mut out, start);
    out
}

fn append(wal: &Wal, sinks: &[&str], lines: &[&str]) -> Result<Position, AppendError> {
    let (ack, _waiter) = Ack::new();
    wal.append(&framed(Some(wal), sinks, &batch(lines)), ack)
}

/// Starts the reader of `sink`; returns its input channel.
fn follow(wal: &Arc<Wal>, sink: &str, stop: &Arc<AtomicBool>) -> mpsc::UnboundedReceiver<SinkInput> {
    let (tx, rx) = mpsc::unbounded_channel();
    let tracker = wal.tracker(sink).expect("configured sink");
    reader::spawn(Arc::clone(wal), tracker, tx, 1 << 20, Arc::clone(stop)).expect("reader starts");
    rx
}

fn lines(input: &SinkInput) -> Vec<String> {
    input.batch.streams.iter().flat_map(|s| &s.entries).map(|e| e.line.clone()).collect()
}

async fn next(rx: &mut mpsc::UnboundedReceiver<SinkInput>) -> SinkInput {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("a record within 5 s")
        .expect("reader running")
}

fn sinks(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn each_sink_reads_its_records_and_delivered_segments_are_removed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = config(dir.path(), 100, 1 << 20, FsyncPolicy::Interval);
    let (wal, recovered) = Wal::open(&cfg, dir.path(), &sinks(&["loki", "archive"])).expect("opens");
    assert_eq!(recovered.bytes, 0);
    let stop = Arc::new(AtomicBool::new(false));
    let (mut loki, mut archive) = (follow(&wal, "loki", &stop), follow(&wal, "archive", &stop));
    append(&wal, &["loki", "archive"], &["both 1"]).expect("appends");
    append(&wal, &["archive"], &["archive only"]).expect("appends");
    append(&wal, &["loki", "archive"], &["both 2"]).expect("appends");
    let first = next(&mut loki).await;
    assert_eq!(lines(&first), ["both 1"]);
    let second = next(&mut loki).await;
    assert_eq!(lines(&second), ["both 2"], "the archive-only record is skipped");
    let archived = [next(&mut archive).await, next(&mut archive).await, next(&mut archive).await];
    let a: Vec<Vec<String>> = archived.iter().map(lines).collect();
    assert_eq!(a, [vec!["both 1"], vec!["archive only"], vec!["both 2"]]);
    assert_eq!(wal.lock().segments.len(), 3, "one record per 100-byte segment");

    // Nothing is confirmed yet: every segment stays.
    wal.housekeep();
    let before = wal.size();
    // Loki confirms everything, out of order; the archive nothing: still every segment stays.
    second.mark.expect("from the log").settle();
    first.mark.expect("from the log").settle();
    wal.housekeep();
    assert_eq!(wal.size(), before, "the archive has confirmed nothing yet");
    assert_eq!(wal.tracker("loki").expect("tracker").cursor(), wal.lock().head);
    for input in archived {
        input.mark.expect("from the log").settle();
    }
    wal.housekeep();
    assert_eq!(wal.lock().segments.len(), 1, "every segment but the active one is removed");
    assert!(wal.size() < before);
    stop.store(true, Ordering::Release);
    wal.close();
    let left = wal.shutdown();
    assert!(left.is_empty(), "nothing left: {left:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn settled_records_are_not_read_again_after_a_restart_and_unsettled_ones_are() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = config(dir.path(), 1 << 20, 1 << 24, FsyncPolicy::Interval);
    {
        let (wal, _) = Wal::open(&cfg, dir.path(), &sinks(&["loki"])).expect("opens");
        let stop = Arc::new(AtomicBool::new(false));
        let mut rx = follow(&wal, "loki", &stop);
        for i in 0..4 {
            append(&wal, &["loki"], &[&format!("line {i}")]).expect("appends");
        }
        let inputs = [next(&mut rx).await, next(&mut rx).await, next(&mut rx).await, next(&mut rx).await];
        // Records 0 and 1 are delivered; 2 is abandoned (its sink stopped); 3 is delivered.
        let [a, b, c, d] = inputs;
        a.mark.expect("mark").settle();
        d.mark.expect("mark").settle();
        drop(c);
        b.mark.expect("mark").settle();
        stop.store(true, Ordering::Release);
        assert!(!wal.shutdown().is_empty(), "record 2 is left");
    }
    let (wal, recovered) = Wal::open(&cfg, dir.path(), &sinks(&["loki"])).expect("reopens");
    assert!(recovered.backlog[0].1 > 0);
    let stop = Arc::new(AtomicBool::new(false));
    let mut rx = follow(&wal, "loki", &stop);
    assert_eq!(lines(&next(&mut rx).await), ["line 2"]);
    assert_eq!(
        lines(&next(&mut rx).await),
        ["line 3"],
        "delivered after the unconfirmed one: again (at least once)"
    );
    append(&wal, &["loki"], &["new"]).expect("appends after a restart");
    assert_eq!(lines(&next(&mut rx).await), ["new"]);
    stop.store(true, Ordering::Release);
    wal.shutdown();
}

#[test]
fn a_torn_tail_is_cut_at_start_and_writing_goes_on_in_a_new_segment() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = config(dir.path(), 1 << 20, 1 << 24, FsyncPolicy::Interval);
    let segment = {
        let (wal, _) = Wal::open(&cfg, dir.path(), &sinks(&["loki"])).expect("opens");
        append(&wal, &["loki"], &["whole"]).expect("appends");
        let segment = wal.lock().active_id;
        wal.shutdown();
        segment
    };
    // A crash in the middle of a write: half a record at the tail.
    let path = segment_path(dir.path(), segment);
    let whole = fs::metadata(&path).expect("segment").len();
    let torn = framed(None, &["loki"], &batch(&["cut off"]));
    let mut bytes = fs::read(&path).expect("read");
    bytes.extend_from_slice(&torn[..torn.len() / 2]);
    fs::write(&path, &bytes).expect("write");

    let (wal, recovered) = Wal::open(&cfg, dir.path(), &sinks(&["loki"])).expect("reopens");
    assert_eq!(recovered.torn_bytes, (torn.len() / 2) as u64);
    assert_eq!(fs::metadata(&path).expect("segment").len(), whole);
    assert_eq!(wal.lock().active_id, segment + 1);
    wal.shutdown();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_record_in_the_middle_is_skipped_and_the_rest_delivered() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = config(dir.path(), 1 << 20, 1 << 24, FsyncPolicy::Interval);
    let segment = {
        let (wal, _) = Wal::open(&cfg, dir.path(), &sinks(&["loki"])).expect("opens");
        for line in ["one", "two", "three"] {
            append(&wal, &["loki"], &[line]).expect("appends");
        }
        let segment = wal.lock().active_id;
        wal.shutdown();
        segment
    };
    let path = segment_path(dir.path(), segment);
    let mut bytes = fs::read(&path).expect("read");
    let at = bytes.windows(3).position(|w| w == b"two").expect("the line is in the segment");
    bytes[at] = b'X';
    fs::write(&path, &bytes).expect("write");

    let (wal, recovered) = Wal::open(&cfg, dir.path(), &sinks(&["loki"])).expect("reopens");
    assert_eq!((recovered.damaged, recovered.torn_bytes), (1, 0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut rx = follow(&wal, "loki", &stop);
    assert_eq!(lines(&next(&mut rx).await), ["one"]);
    assert_eq!(lines(&next(&mut rx).await), ["three"]);
    stop.store(true, Ordering::Release);
    wal.shutdown();
}

#[test]
fn appends_beyond_max_size_are_refused_until_sinks_catch_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let one = framed(None, &["loki"], &batch(&["x"])).len() as u64;
    let cfg = config(dir.path(), one * 2, one * 3, FsyncPolicy::Interval);
    let (wal, _) = Wal::open(&cfg, dir.path(), &sinks(&["loki"])).expect("opens");
    for _ in 0..3 {
        append(&wal, &["loki"], &["x"]).expect("fits");
    }
    assert!(matches!(wal.check_room(), Err(AppendError::Full { .. })));
    let err = append(&wal, &["loki"], &["x"]).expect_err("full");
    assert!(matches!(err, AppendError::Full { .. }), "{err}");
    assert_eq!(err.ack_kind(), AckFailureKind::Overloaded);
    assert!(err.to_string().contains("wal.max_size"), "{err}");
    // The sink confirms everything it read: whole segments go, and appends fit again.
    let tracker = wal.tracker("loki").expect("tracker");
    tracker.skip(wal.lock().head);
    wal.housekeep();
    assert!(wal.check_room().is_ok());
    append(&wal, &["loki"], &["x"]).expect("fits again");
    wal.close();
    assert!(matches!(append(&wal, &["loki"], &["x"]), Err(AppendError::Closed)));
    wal.shutdown();
}

#[tokio::test(flavor = "multi_thread")]
async fn with_fsync_batch_a_push_is_acknowledged_after_the_sync() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = config(dir.path(), 1 << 20, 1 << 24, FsyncPolicy::Batch);
    let (wal, _) = Wal::open(&cfg, dir.path(), &sinks(&["loki"])).expect("opens");
    let (ack, waiter) = Ack::new();
    wal.append(&framed(Some(&wal), &["loki"], &batch(&["synced"])), ack).expect("appends");
    {
        let s = wal.lock();
        assert!(
            !s.waiting.is_empty() || s.dirty == 0,
            "the acknowledgement waits for the syncer, or it has synced"
        );
    }
    let outcome = tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("synced within 5 s");
    assert_eq!(outcome.expect("sent"), Ok(()));
    assert_eq!(wal.lock().dirty, 0);
    wal.shutdown();
}

#[test]
fn cursors_of_removed_sinks_are_forgotten() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = config(dir.path(), 1 << 20, 1 << 24, FsyncPolicy::Interval);
    {
        let (wal, _) = Wal::open(&cfg, dir.path(), &sinks(&["old", "kept"])).expect("opens");
        wal.shutdown();
    }
    assert!(cursor_path(dir.path(), "old").exists());
    let (wal, _) = Wal::open(&cfg, dir.path(), &sinks(&["kept"])).expect("reopens");
    assert!(!cursor_path(dir.path(), "old").exists());
    assert!(cursor_path(dir.path(), "kept").exists());
    assert_eq!(cursor_path(dir.path(), "a/b.c").file_name().and_then(|n| n.to_str()), Some("a%2Fb%2Ec"));
    wal.shutdown();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_write_is_refused_and_writing_goes_on_in_a_new_segment_so_the_old_one_can_go() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Segments far larger than what is written: only a failed write starts a new one.
    let cfg = config(dir.path(), 1 << 20, 4 << 20, FsyncPolicy::Interval);
    let (wal, _) = Wal::open(&cfg, dir.path(), &sinks(&["loki"])).expect("opens");
    let stop = Arc::new(AtomicBool::new(false));
    let mut loki = follow(&wal, "loki", &stop);
    append(&wal, &["loki"], &["before"]).expect("appends");
    // The disk fails: writes to the active segment error from now on (a read-only handle).
    {
        let mut s = wal.lock();
        let path = wal.segment_path(s.active_id);
        s.active = Arc::new(File::open(path).expect("opens read-only"));
    }
    let err = append(&wal, &["loki"], &["refused"]).expect_err("the write fails");
    assert!(matches!(err, AppendError::Io(_)), "{err}");
    assert_eq!(err.ack_kind(), AckFailureKind::Unavailable, "answered 503");
    let head = wal.lock().head;
    append(&wal, &["loki"], &["after"]).expect("the next append starts a new segment and succeeds");
    assert_eq!(wal.lock().active_id, head.segment + 1);

    let (first, second) = (next(&mut loki).await, next(&mut loki).await);
    assert_eq!((lines(&first), lines(&second)), (vec!["before".to_string()], vec!["after".to_string()]));
    first.mark.expect("from the log").settle();
    second.mark.expect("from the log").settle();
    wal.housekeep();
    assert!(!wal.segment_path(head.segment).exists(), "the segment written before the failure is removed");
    stop.store(true, Ordering::Release);
    wal.close();
    assert!(wal.shutdown().is_empty());
    // Nothing torn or damaged was left behind: a restart finds the log whole.
    let (_, recovered) = Wal::open(&cfg, dir.path(), &sinks(&["loki"])).expect("reopens");
    assert_eq!((recovered.torn_bytes, recovered.damaged), (0, 0));
}

#[test]
fn after_a_failed_sync_appends_are_refused_until_a_new_segment_syncs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = config(dir.path(), 1 << 20, 1 << 24, FsyncPolicy::Interval);
    let (wal, _) = Wal::open(&cfg, dir.path(), &sinks(&["loki"])).expect("opens");
    let first = append(&wal, &["loki"], &["before"]).expect("appends");
    // Two failures: the sync of `before`, then the first try at a new segment.
    wal.fail_syncs.store(2, Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !wal.lock().sync_failed {
        assert!(Instant::now() < deadline, "the syncer did not sync");
        std::thread::sleep(Duration::from_millis(5));
    }
    let err = append(&wal, &["loki"], &["during"]).expect_err("refused while unsynced");
    assert!(matches!(err, AppendError::SyncFailed), "{err}");
    assert_eq!(err.ack_kind(), AckFailureKind::Unavailable, "503");
    // Once a new segment syncs, appends go on there, never in the segment that failed.
    let at = loop {
        match append(&wal, &["loki"], &["after"]) {
            Ok(at) => break at,
            Err(AppendError::SyncFailed) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("still refused: {e}"),
        }
    };
    assert!(at.segment > first.segment, "{at:?} after {first:?}");
    assert_eq!(
        wal.fail_syncs.load(Ordering::Relaxed),
        0,
        "the new segment's first sync failed too and was retried"
    );
    wal.shutdown();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_log_from_before_the_frame_key_is_read_and_new_segments_are_keyed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = config(dir.path(), 1 << 20, 1 << 24, FsyncPolicy::Interval);
    // What an earlier version left: a segment in the first framing, no frame-key.
    let mut legacy = Vec::new();
    let b = batch(&["from before the upgrade"]);
    let start = frame::begin(Format::Legacy, &mut legacy);
    record::encode(&b.tenant, &["loki"], &b.streams, &mut legacy).expect("encodes");
    frame::finish(Format::Legacy, &mut legacy, start);
    fs::create_dir_all(dir.path().join("cursors")).expect("dir");
    fs::write(segment_path(dir.path(), 1), &legacy).expect("write");

    let (wal, recovered) = Wal::open(&cfg, dir.path(), &sinks(&["loki"])).expect("opens");
    assert_eq!((recovered.torn_bytes, recovered.damaged), (0, 0), "the legacy segment is whole");
    assert_eq!(wal.format_of(1), Format::Legacy);
    assert!(matches!(wal.format_of(2), Format::Keyed(_)) && wal.format_of(2) == wal.frame_format());
    append(&wal, &["loki"], &["after the upgrade"]).expect("appends");
    let stop = Arc::new(AtomicBool::new(false));
    let mut rx = follow(&wal, "loki", &stop);
    assert_eq!(lines(&next(&mut rx).await), ["from before the upgrade"]);
    assert_eq!(lines(&next(&mut rx).await), ["after the upgrade"]);
    stop.store(true, Ordering::Release);
    wal.shutdown();
    drop(wal);

    // The key survives a restart; without it, keyed segments cannot be read: refuse to start.
    let key = fs::read(dir.path().join("frame-key")).expect("a frame key");
    let (wal, _) = Wal::open(&cfg, dir.path(), &sinks(&["loki"])).expect("reopens");
    assert_eq!(fs::read(dir.path().join("frame-key")).expect("key"), key);
    wal.shutdown();
    drop(wal);
    fs::remove_file(dir.path().join("frame-key")).expect("remove");
    let e = Wal::open(&cfg, dir.path(), &sinks(&["loki"])).expect_err("a lost key");
    assert!(e.contains("frame-key") && e.contains("restore"), "{e}");
}
