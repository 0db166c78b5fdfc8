//! `sluice replay`: reads archived logs back into Loki.
//!
//! ```text
//! list --from → partitions (pruned by --since/--until from their keys) → for each, in time order:
//!   read its objects → select records (time, --selector, labels) → streams sorted by time
//!   → batches per tenant → push one at a time (the Loki sink's delivery) → checkpoint
//! ```
//!
//! One job per module: [`source`] lists, prunes and reads; [`plan`] selects and cuts batches;
//! [`checkpoint`] remembers what Loki confirmed; [`explain`] turns Loki's refusals into advice;
//! [`report`] counts and prints the summary; `progress` shows the bar; [`time`] parses
//! `--since`/`--until`. This file runs the command.
//!
//! **Memory.** One partition at a time is held in memory, decoded: an hour of one tenant in
//! the default layout. A source without hive partitions (`dt=`/`hour=` in its keys), such as a
//! logcli export or objects under a custom key template, is a partition per object, so the
//! largest object bounds memory then.
//!
//! **One request at a time.** Batches are pushed sequentially: each stream then reaches Loki in
//! time order across requests, and the checkpoint is exact (a batch is recorded only once Loki
//! confirmed it). Pushes reuse the Loki sink's delivery: retries of 429/5xx with backoff and
//! `Retry-After`, and 400s split to isolate the refused entries, which are counted and
//! explained, not retried. When a batch cannot be delivered (attempts exhausted, 401/403/404),
//! the replay stops there, and running the same command again resumes with that batch.
//!
//! **Exit codes.** 0: everything selected was pushed. 1: something was not (dropped, skipped,
//! unreadable, or the run stopped; the summary says what). 2: a usage or connection error before
//! anything was pushed. 130: interrupted (Ctrl-C) — the checkpoint holds what was confirmed.

pub mod checkpoint;
pub mod explain;
pub mod plan;
mod progress;
pub mod report;
pub mod source;
pub mod time;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::watch;

use crate::cli::ReplayArgs;
use crate::config::{AuthConfig, LokiSinkConfig, RetryConfig, S3Config};
use crate::model::Batch;
use crate::route::Selector;
use crate::sink::Pending;
use crate::sink::loki::deliver::{self, Context};
use crate::sink::loki::encode::Encoder;
use checkpoint::{Checkpoint, Job, Resume};
use plan::{Selection, Streams, Verdict};
use progress::Progress;
use report::Report;
use source::{Partition, Source};

const EXIT_INCOMPLETE: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_INTERRUPTED: u8 = 130;

/// Objects fetched at once within a partition (their order is kept).
const FETCH_CONCURRENCY: usize = 4;

/// Drop reasons that concern only the entries dropped: Loki refused those for good, the rest
/// of the replay can go on. Any other reason (attempts exhausted, 401, 403, 404, …) would hit
/// the next batch as well, so the replay stops and can be resumed.
const PERMANENT: &[&str] = &["rejected", "payload_too_large", "encode_error", "invalid_tenant"];

/// Runs `sluice replay`.
pub fn main(args: ReplayArgs) -> ExitCode {
    let progress = Progress::new();
    init_logging(&progress);
    let runtime =
        match tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("sluice-replay").build() {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("error: cannot start the async runtime: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
        };
    ExitCode::from(runtime.block_on(run(args, progress)))
}

/// Warnings and errors (e.g. the delivery's retries), `RUST_LOG` to see more.
fn init_logging(progress: &Progress) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(progress.log_writer())
        .with_ansi(ansi)
        .without_time()
        .try_init();
}

/// Everything settled before the first push.
struct Plan {
    job: Job,
    selection: Selection,
    batch_size: usize,
    checkpoint_path: PathBuf,
    checkpoint: Checkpoint,
    ctx: Context,
    source: Source,
}

async fn run(args: ReplayArgs, mut progress: Progress) -> u8 {
    let plan = match prepare(&args) {
        Ok(Prepared::Run(plan)) => plan,
        Ok(Prepared::AlreadyComplete(message)) => {
            eprintln!("{message}");
            return 0;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    let Plan { job, selection, batch_size, checkpoint_path, checkpoint, ctx, source } = *plan;
    let mut report = Report::default();

    let objects = match source.list().await {
        Ok(objects) => objects,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    if objects.is_empty() {
        eprintln!(
            "error: nothing to replay in {}: no objects named *.ndjson, *.jsonl or *.json (optionally \
             .gz or .zst) or *.parquet",
            source.describe()
        );
        return EXIT_USAGE;
    }
    report.objects_listed = objects.len();
    let mut work: Vec<(Partition, Resume)> = Vec::new();
    for partition in source::partitions(objects) {
        if !partition.overlaps(selection.since, selection.until) {
            report.objects_pruned += partition.objects.len();
            continue;
        }
        let resume = checkpoint.resume(&partition.id, &partition.fingerprint());
        if matches!(resume, Resume::Done | Resume::DoneButChanged) {
            report.objects_done_before += partition.objects.len();
            if resume == Resume::DoneButChanged {
                progress.note(&format!(
                    "warning: {} changed after an earlier run replayed it; it is not replayed again \
                     (--restart replays everything)",
                    partition.id
                ));
            }
            continue;
        }
        work.push((partition, resume));
    }
    if work.is_empty() && report.objects_done_before == 0 {
        eprintln!(
            "error: none of the {} objects in {} can hold entries in {}",
            report.objects_listed,
            source.describe(),
            range(&selection)
        );
        return EXIT_USAGE;
    }
    let total: u64 = work.iter().map(|(p, _)| p.size()).sum();
    progress.note(&format!(
        "replaying {} ({}) in {} from {} to {}, {}; checkpoint {}",
        plural(work.iter().map(|(p, _)| p.objects.len()).sum::<usize>(), "object"),
        bytesize::ByteSize(total),
        plural(work.len(), "partition"),
        source.describe(),
        ctx.url,
        range(&selection),
        checkpoint_path.display()
    ));
    progress.start(total);

    let interrupted = watch_interrupt();
    let mut replay = Replay {
        source,
        selection,
        batch_size,
        ctx,
        encoder: Encoder::new(),
        interrupted,
        checkpoint,
        checkpoint_path,
        report,
        progress,
    };
    let mut outcome = Ok(());
    for (partition, resume) in &work {
        outcome = replay.partition(partition, resume).await;
        if outcome.is_err() {
            break;
        }
    }
    if outcome.is_ok() {
        replay.checkpoint.complete = true;
        if let Err(e) = replay.checkpoint.save(&replay.checkpoint_path) {
            outcome = Err(Stop::Failed(e));
        }
    }
    let Replay { report, progress, checkpoint_path, .. } = replay;
    progress.finish();
    eprint!("{}", report.render());
    finish(&job, &checkpoint_path, &report, outcome)
}

/// Why a run ended early.
enum Stop {
    /// Something failed; the message says what.
    Failed(String),
    /// Ctrl-C.
    Interrupted,
}

/// The last words and the exit code.
fn finish(job: &Job, checkpoint_path: &std::path::Path, report: &Report, outcome: Result<(), Stop>) -> u8 {
    let resume = format!(
        "run the same command again to resume (checkpoint {}; `--restart` starts over)",
        checkpoint_path.display()
    );
    match outcome {
        Err(Stop::Interrupted) => {
            eprintln!("interrupted: what Loki confirmed is in the checkpoint; {resume}");
            EXIT_INTERRUPTED
        }
        Err(Stop::Failed(why)) => {
            eprintln!("stopped: {why}");
            eprintln!("{resume}");
            if report.pushed == 0 { EXIT_USAGE } else { EXIT_INCOMPLETE }
        }
        Ok(()) if report.complete_success() => {
            eprintln!("done: every selected entry of {} is in Loki", job.from);
            0
        }
        Ok(()) => {
            eprintln!("finished, but not everything selected was pushed (see above)");
            EXIT_INCOMPLETE
        }
    }
}

enum Prepared {
    Run(Box<Plan>),
    AlreadyComplete(String),
}

/// Checks the arguments, loads the checkpoint and opens the source; sends nothing.
fn prepare(args: &ReplayArgs) -> Result<Prepared, String> {
    let job = Job {
        from: args.from.clone(),
        to_loki: args.to_loki.clone(),
        since: args.since.as_ref().map(|t| t.text.clone()),
        until: args.until.as_ref().map(|t| t.text.clone()),
        selector: args.selector.clone(),
        tenant: args.tenant.clone(),
    };
    if let Some(t) = &args.tenant
        && (t.is_empty() || http::HeaderValue::from_str(t).is_err())
    {
        return Err(format!("--tenant `{t}`: not a valid tenant ID"));
    }
    let selector = match &args.selector {
        Some(s) => Some(Selector::parse(s).map_err(|e| format!("--selector: {e}"))?),
        None => None,
    };
    let mut config = LokiSinkConfig::new(&args.to_loki);
    config.retry = RetryConfig {
        min_backoff: Duration::from_millis(500),
        // Shorter than the sink's: someone is waiting for this command.
        max_backoff: Duration::from_secs(30),
        max_attempts: args.max_attempts,
    };
    if args.loki_username.is_some() || args.loki_bearer_token.is_some() {
        config.auth = Some(AuthConfig {
            bearer_token: args.loki_bearer_token.clone(),
            username: args.loki_username.clone(),
            password: args.loki_password.clone(),
        });
    }
    let mut ctx = crate::sink::loki::context("replay", &config).map_err(|e| format!("--to-loki: {e}"))?;
    ctx.log_drops = false;
    ctx.retry_refusals = false;

    let checkpoint_path = args.checkpoint.clone().unwrap_or_else(|| job.default_path());
    let batch_size = args.batch_size.as_u64().max(1);
    let mut since = args.since.as_ref().map(|t| t.ns);
    let mut until = args.until.as_ref().map(|t| t.ns);
    // `--restart` does not read the old checkpoint at all: it may be what is broken.
    let previous = if args.restart { None } else { Checkpoint::load(&checkpoint_path)? };
    let checkpoint = match previous {
        Some(cp) if cp.job != job => {
            return Err(format!(
                "the checkpoint {} belongs to another replay (--from {} --to-loki {}); give another \
                 --checkpoint, or --restart to overwrite it",
                checkpoint_path.display(),
                cp.job.from,
                cp.job.to_loki
            ));
        }
        Some(cp) if cp.complete => {
            return Ok(Prepared::AlreadyComplete(format!(
                "this replay is already complete ({} entries pushed; checkpoint {}): nothing to do. \
                 `--restart` replays everything again.",
                cp.pushed,
                checkpoint_path.display()
            )));
        }
        Some(cp) => {
            // The batches must line up with the first run's: same range, same size.
            since = cp.since_ns;
            until = cp.until_ns;
            if cp.batch_size != batch_size {
                eprintln!(
                    "note: resuming with the first run's --batch-size {} (the checkpoint counts its batches)",
                    bytesize::ByteSize(cp.batch_size)
                );
            }
            eprintln!(
                "resuming from {}: {} partitions done, {} entries pushed so far",
                checkpoint_path.display(),
                cp.done.len(),
                cp.pushed
            );
            cp
        }
        None => Checkpoint::new(job.clone(), since, until, batch_size),
    };
    if let (Some(s), Some(u)) = (since, until)
        && s >= u
    {
        return Err(format!("--since ({}) must be before --until ({})", time::show(s), time::show(u)));
    }
    let s3 = S3Config {
        endpoint: args.s3_endpoint.clone(),
        region: args.s3_region.clone(),
        ..S3Config::default()
    };
    let options: BTreeMap<String, String> = args.store_options.iter().cloned().collect();
    let (source, note) = source::open(&args.from, &s3, &options)?;
    if let Some(note) = note {
        eprintln!("note: {note}");
    }
    let batch_size = usize::try_from(checkpoint.batch_size).unwrap_or(usize::MAX);
    let selection = Selection { since, until, selector, tenant: args.tenant.clone() };
    Ok(Prepared::Run(Box::new(Plan { job, selection, batch_size, checkpoint_path, checkpoint, ctx, source })))
}

/// `1 object`, `2 objects`.
fn plural(n: usize, noun: &str) -> String {
    if n == 1 { format!("1 {noun}") } else { format!("{n} {noun}s") }
}

/// `[since, until)` for messages.
fn range(selection: &Selection) -> String {
    match (selection.since, selection.until) {
        (None, None) => "all times".into(),
        (s, u) => format!(
            "[{}, {})",
            s.map_or_else(|| "the beginning".into(), time::show),
            u.map_or_else(|| "the end".into(), time::show)
        ),
    }
}

/// Turns true on Ctrl-C. Listening from the start, so a Ctrl-C while reading is not lost.
fn watch_interrupt() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            let _ = tx.send(true);
        }
        // Keep the sender (and the handler) until the process ends.
        std::future::pending::<()>().await;
    });
    rx
}

/// A run from the first push to the summary: pushes one batch at a time and records each one
/// Loki confirmed.
struct Replay {
    source: Source,
    selection: Selection,
    batch_size: usize,
    ctx: Context,
    encoder: Encoder,
    interrupted: watch::Receiver<bool>,
    checkpoint: Checkpoint,
    checkpoint_path: PathBuf,
    report: Report,
    progress: Progress,
}

impl Replay {
    fn check_interrupt(&self) -> Result<(), Stop> {
        if *self.interrupted.borrow() { Err(Stop::Interrupted) } else { Ok(()) }
    }

    /// Reads one partition, and pushes what it selects from where the checkpoint left it.
    async fn partition(&mut self, partition: &Partition, resume: &Resume) -> Result<(), Stop> {
        let fingerprint = partition.fingerprint();
        let skip = match resume {
            Resume::After(n) => usize::try_from(*n).unwrap_or(usize::MAX),
            Resume::Changed => {
                self.progress.note(&format!(
                    "warning: {} changed since the interrupted run; replaying it from its start (Loki \
                     ignores the entries it already has)",
                    partition.id
                ));
                0
            }
            _ => 0,
        };
        let batches = self.read(partition).await?.into_batches(self.batch_size);
        // The partition's bytes count as replayed in proportion to its entries done.
        let size = partition.size();
        let entries_total = batches.iter().map(Batch::entry_count).sum::<usize>().max(1);
        let (mut entries_done, mut bytes_shown) = (0, 0);
        for (i, batch) in batches.into_iter().enumerate() {
            let entries = batch.entry_count();
            if i < skip {
                self.report.pushed_before += entries;
            } else {
                self.push(partition, &fingerprint, batch).await?;
            }
            entries_done += entries;
            let bytes = u64::try_from(u128::from(size) * entries_done as u128 / entries_total as u128)
                .unwrap_or(size);
            self.progress.replayed(bytes.saturating_sub(bytes_shown));
            bytes_shown = bytes_shown.max(bytes);
        }
        self.progress.replayed(size.saturating_sub(bytes_shown));
        self.checkpoint.partition_done(&partition.id, &fingerprint);
        self.checkpoint.save(&self.checkpoint_path).map_err(Stop::Failed)
    }

    /// Pushes one batch; records it in the checkpoint once Loki confirmed it. Entries Loki
    /// refused for good are counted and the replay goes on; any other failure stops it.
    async fn push(&mut self, partition: &Partition, fingerprint: &str, batch: Batch) -> Result<(), Stop> {
        self.check_interrupt()?;
        let mut interrupted = self.interrupted.clone();
        let outcome = tokio::select! {
            outcome = deliver::deliver(&self.ctx, &mut self.encoder, Pending::from_batch(batch)) => outcome,
            _ = interrupted.wait_for(|v| *v) => return Err(Stop::Interrupted),
        };
        self.report.pushed += outcome.sent;
        self.progress.pushed(outcome.sent);
        if !outcome.dropped.is_empty() {
            self.report.dropped(&outcome.dropped, outcome.message.as_deref());
        }
        if let Some((reason, _)) = outcome.dropped.iter().find(|(r, _)| !PERMANENT.contains(&r.as_str())) {
            let message = outcome.message.as_deref().unwrap_or("");
            return Err(Stop::Failed(format!(
                "Loki did not take a batch of {} ({reason}): {message}",
                partition.id
            )));
        }
        self.checkpoint.batch_done(&partition.id, fingerprint, outcome.sent);
        self.checkpoint.save(&self.checkpoint_path).map_err(Stop::Failed)
    }

    /// Reads a partition's objects (a few at a time, in order) into its selected streams.
    async fn read(&mut self, partition: &Partition) -> Result<Streams, Stop> {
        let mut streams = Streams::default();
        let source = &self.source;
        let mut fetches = futures_util::stream::iter(&partition.objects)
            .map(|object| async move { (object, source.fetch(object).await) })
            .buffered(FETCH_CONCURRENCY);
        while let Some((object, fetched)) = fetches.next().await {
            if *self.interrupted.borrow() {
                return Err(Stop::Interrupted);
            }
            // A store that cannot be read now may be readable later: stop, resumable.
            let data = fetched.map_err(|e| Stop::Failed(format!("cannot read {e}")))?;
            self.report.objects_read += 1;
            self.report.bytes_read += object.size;
            let key = object.key().to_string();
            let parsed = tokio::task::spawn_blocking(move || source::read_records(&key, data))
                .await
                .map_err(|e| Stop::Failed(format!("reading {} failed: {e}", object.key())))?;
            let records = match parsed {
                Ok(records) => records,
                Err(e) => {
                    // Corrupt for good: report it and go on with the rest.
                    self.progress.note(&format!("warning: skipping {e}"));
                    self.report.objects_unreadable += 1;
                    self.report.first_unreadable.get_or_insert(e);
                    continue;
                }
            };
            let report = &mut self.report;
            report.lines_unparseable += records.unparseable;
            if report.first_unparseable.is_none() {
                report.first_unparseable = records.first_unparseable;
            }
            for record in records.records {
                report.entries_read += 1;
                match self.selection.judge(&record) {
                    Verdict::NotSelected => {}
                    Verdict::Skip { reason, detail } => {
                        report.selected += 1;
                        report.skip(reason, detail);
                    }
                    Verdict::Push { tenant, labels } => {
                        report.selected += 1;
                        streams.add(tenant, labels, record.entry);
                    }
                }
            }
        }
        Ok(streams)
    }
}
