//! The pipeline: stages run on dedicated worker threads (never on tokio's), then the result goes
//! to the route's sinks.
//!
//! Work is sharded by stream fingerprint: every stream always lands on the same worker, and a
//! worker handles its jobs in arrival order, so each stream's entries keep their order without a
//! reordering step, and per-stream state in a stage stays on one thread. Each worker owns its own
//! instance of every stage (a plugin instance per worker thread).
//!
//! Reloading swaps in a new [`Generation`] (routes, stages, sinks): every job carries the
//! generation it was routed with, and a worker builds its stage instances for the generation of
//! the job at hand, so batches in flight finish on the old plugins while new ones use the new,
//! and none is processed twice.
//!
//! A stage that fails on a batch leaves it as it was (the contract of [`Stage::process`]; a
//! Wasm stage touches the batch only once the plugin's response has been checked), so failure
//! needs no copy of the batch: the stage's [`OnError`] policy passes it on, drops it, or sends
//! it to a dead-letter sink. A panicking stage is caught like a failure; the batch is then as
//! the stage left it.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use crate::buffer::Charge;
use crate::config::AckMode;
use crate::model::{Ack, Batch, LabelSet};
use crate::route::Router;
use crate::sink::{SinkInput, SinkSender};
use crate::wal::{self, Wal};

/// A step that transforms batches: drop, modify or add entries, or move them between streams.
pub trait Stage: Send {
    /// Name in metrics and logs.
    fn name(&self) -> &str;
    /// Processes `batch` in place. On `Err` the batch must be as it was before the call.
    fn process(&mut self, batch: &mut Batch) -> Result<(), StageError>;
}

/// A stage's failure on one batch.
#[derive(Debug, Clone, thiserror::Error)]
#[error("stage `{stage}`: {message}")]
pub struct StageError {
    pub stage: String,
    /// The `reason` label of `sluice_stage_errors_total`, e.g. `trap` or `timeout`.
    pub reason: &'static str,
    pub message: String,
}

/// What happens to a batch a stage fails on.
#[derive(Clone, Debug)]
pub enum OnError {
    /// Pass it on to the next stage as it was.
    Pass,
    /// Drop it (counted).
    Drop,
    /// Send it, as it was, to this sink instead of the route's.
    DeadLetter(SinkTarget),
}

/// A running sink as routes and stages address it.
#[derive(Clone, Debug)]
pub struct SinkTarget {
    /// The sink's name: what log records are addressed to.
    pub name: Arc<str>,
    pub sender: SinkSender,
}

impl OnError {
    fn label(&self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Drop => "drop",
            Self::DeadLetter(_) => "dead_letter",
        }
    }
}

/// A stage of a route: how to build it per worker, and its failure policy.
#[derive(Clone)]
pub struct StagePlan {
    pub factory: StageFactory,
    pub on_error: OnError,
}

/// Builds one instance of a stage; called once per worker thread.
pub type StageFactory = Arc<dyn Fn() -> Result<Box<dyn Stage>, StageError> + Send + Sync>;

/// What a route does with its streams: stages in order, then sinks.
#[derive(Clone)]
pub struct RoutePlan {
    pub name: String,
    pub stages: Vec<StagePlan>,
    pub sinks: Vec<SinkTarget>,
    /// The route's own acknowledgement mode, if it has one.
    pub ack: Option<AckMode>,
    /// The only tenants its stages may move entries to (`routes[].tenants_out`).
    pub tenants_out: Vec<Arc<str>>,
}

/// What one configuration decides about streams: the routes, and each route's stages and sinks.
pub struct Generation {
    /// Increases with every reload; workers rebuild their stage instances when it changes.
    pub id: u64,
    pub router: Router,
    /// One plan per route of `router`, in its numbering (the default route last).
    pub routes: Vec<RoutePlan>,
    /// Every running sink by name, for building the next generation over the same sinks.
    pub sinks: Vec<(String, SinkSender)>,
    /// Acknowledgement mode of routes and tenants that set none.
    pub default_ack: AckMode,
}

impl Generation {
    /// How a push of a tenant with acknowledgement mode `tenant` is acknowledged on `route`:
    /// the stronger of the route's and the tenant's modes where both are set, else the one
    /// set, else the default.
    pub fn ack_mode(&self, route: usize, tenant: Option<AckMode>) -> AckMode {
        match (self.routes.get(route).and_then(|r| r.ack), tenant) {
            (Some(a), Some(b)) => a.max(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => self.default_ack,
        }
    }
}

/// One unit of work: a route's share of a push, for one worker.
pub struct Job {
    pub generation: Arc<Generation>,
    pub route: usize,
    pub batch: Batch,
    pub ack: Ack,
    pub charge: Arc<Charge>,
    /// When the push may be acknowledged: after the sinks got it in memory, once it is in the
    /// write-ahead log, or once the sinks have delivered it.
    pub ack_mode: AckMode,
}

/// The worker pool and the generation new pushes are routed with.
pub struct Pipeline {
    open: RwLock<Option<Open>>,
    workers: usize,
}

struct Open {
    senders: Vec<Sender<Job>>,
    generation: Arc<Generation>,
}

/// The pool has been closed for shutdown.
#[derive(Debug, thiserror::Error)]
#[error("sluice is shutting down")]
pub struct Closed;

impl Pipeline {
    /// Starts `workers` threads (at least one) with `generation` current. Workers instantiate
    /// their stages when the first job of a generation reaches them.
    pub fn start(
        workers: usize,
        generation: Generation,
        wal: Option<Arc<Wal>>,
    ) -> Result<(Self, Vec<JoinHandle<()>>), StageError> {
        let workers = workers.max(1);
        let mut senders = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for id in 0..workers {
            let (tx, rx) = crossbeam_channel::unbounded();
            let worker =
                Worker { generation: None, stages: Vec::new(), wal: wal.clone(), record: Vec::new() };
            let handle = std::thread::Builder::new()
                .name(format!("sluice-worker-{id}"))
                .spawn(move || worker.run(rx))
                .map_err(|e| StageError {
                    stage: "pipeline".into(),
                    reason: "start",
                    message: format!("cannot start a worker: {e}"),
                })?;
            senders.push(tx);
            handles.push(handle);
        }
        let open = Open { senders, generation: Arc::new(generation) };
        Ok((Self { open: RwLock::new(Some(open)), workers }, handles))
    }

    /// Number of worker threads.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// The worker a stream with this fingerprint belongs to.
    pub fn shard(&self, fingerprint: u64) -> usize {
        (fingerprint % self.workers as u64) as usize
    }

    /// The generation to route new pushes with.
    pub fn current(&self) -> Result<Arc<Generation>, Closed> {
        let guard = self.open.read().unwrap_or_else(|p| p.into_inner());
        guard.as_ref().map(|o| Arc::clone(&o.generation)).ok_or(Closed)
    }

    /// Makes `generation` current for the pushes that follow; jobs already routed keep theirs.
    pub fn swap(&self, generation: Generation) -> Result<(), Closed> {
        let mut guard = self.open.write().unwrap_or_else(|p| p.into_inner());
        guard.as_mut().ok_or(Closed)?.generation = Arc::new(generation);
        Ok(())
    }

    /// Queues jobs, each to the worker `shard` names.
    pub fn submit(&self, jobs: impl IntoIterator<Item = (usize, Job)>) -> Result<(), Closed> {
        let guard = self.open.read().unwrap_or_else(|p| p.into_inner());
        let senders = &guard.as_ref().ok_or(Closed)?.senders;
        for (shard, job) in jobs {
            if let Err(e) = senders[shard % senders.len()].send(job) {
                e.into_inner().ack.fail("pipeline worker stopped");
            }
        }
        Ok(())
    }

    /// Stops accepting jobs and lets go of the current generation (and so of its sinks);
    /// workers finish what is queued and exit.
    pub fn close(&self) {
        self.open.write().unwrap_or_else(|p| p.into_inner()).take();
    }
}

struct Worker {
    /// The generation `stages` were built for.
    generation: Option<Arc<Generation>>,
    /// `stages[route][i]`: this worker's instances.
    stages: Vec<Vec<WorkerStage>>,
    /// Where `on_disk` batches go.
    wal: Option<Arc<Wal>>,
    /// A framed log record being built, reused.
    record: Vec<u8>,
}

/// A worker's instance of a stage, with its metric handles made once.
struct WorkerStage {
    stage: Box<dyn Stage>,
    on_error: OnError,
    duration: metrics::Histogram,
}

impl WorkerStage {
    fn new(plan: &StagePlan) -> Result<Self, StageError> {
        let stage = (plan.factory)()?;
        let duration =
            metrics::histogram!("sluice_stage_duration_seconds", "stage" => stage.name().to_string());
        Ok(Self { stage, on_error: plan.on_error.clone(), duration })
    }
}

impl Worker {
    fn run(mut self, rx: Receiver<Job>) {
        for job in rx {
            self.handle(job);
        }
    }

    /// Builds this worker's stage instances for `generation` unless they exist already.
    fn prepare(&mut self, generation: &Arc<Generation>) -> Result<(), StageError> {
        if self.generation.as_ref().is_some_and(|g| g.id == generation.id) {
            return Ok(());
        }
        // Drop the old instances first, so a worker never holds two generations' memories.
        self.stages.clear();
        self.generation = None;
        self.stages = generation
            .routes
            .iter()
            .map(|r| r.stages.iter().map(WorkerStage::new).collect::<Result<Vec<_>, _>>())
            .collect::<Result<Vec<_>, _>>()?;
        self.generation = Some(Arc::clone(generation));
        Ok(())
    }

    fn handle(&mut self, job: Job) {
        let Job { generation, route, mut batch, ack, charge, ack_mode } = job;
        if let Err(e) = self.prepare(&generation) {
            // Nothing was acknowledged yet: the client is told and retries.
            metrics::counter!("sluice_stage_errors_total", "stage" => e.stage.clone(), "reason" => "instantiate")
                .increment(1);
            tracing::error!(stage = %e.stage, "cannot instantiate the stage: {}", e.message);
            ack.fail(format!("cannot instantiate stage `{}`", e.stage));
            return;
        }
        let Some(plan) = generation.routes.get(route) else {
            ack.fail(format!("no route with index {route}"));
            return;
        };
        let mut dead_letter = None;
        for ws in self.stages.get_mut(route).into_iter().flatten() {
            let started = std::time::Instant::now();
            // A panicking stage must not kill the worker: it counts as a failure.
            let outcome = catch_unwind(AssertUnwindSafe(|| ws.stage.process(&mut batch)));
            ws.duration.record(started.elapsed().as_secs_f64());
            let error = match outcome {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => e,
                Err(_) => StageError {
                    stage: ws.stage.name().to_string(),
                    reason: "panic",
                    message: "panicked; the batch is as the stage left it".into(),
                },
            };
            let (stage, policy, entries) = (ws.stage.name(), ws.on_error.label(), batch.entry_count());
            metrics::counter!("sluice_stage_errors_total", "stage" => stage.to_string(), "reason" => error.reason)
                .increment(1);
            metrics::counter!("sluice_stage_failed_entries_total", "stage" => stage.to_string(), "policy" => policy)
                .increment(entries as u64);
            tracing::warn!(
                stage, route = %plan.name, reason = error.reason, on_error = policy, entries,
                "{}; applying on_error: {policy}", error.message
            );
            match &ws.on_error {
                OnError::Pass => {}
                OnError::Drop => return,
                OnError::DeadLetter(target) => {
                    dead_letter = Some(target.clone());
                    break;
                }
            }
        }
        let to = Delivery { mode: ack_mode, charge: &charge, ack: &ack };
        if let Some(target) = dead_letter {
            self.deliver(&plan.name, std::slice::from_ref(&target), batch, &to);
            return;
        }
        batch.streams.retain(|s| !s.entries.is_empty());
        if batch.streams.is_empty() {
            return;
        }
        for batch in split_by_tenant(batch, plan) {
            self.deliver(&plan.name, &plan.sinks, batch, &to);
        }
    }

    /// Hands `batch` to `sinks`: appended to the write-ahead log for them (`on_disk`), or sent
    /// to each in memory.
    fn deliver(&mut self, route: &str, sinks: &[SinkTarget], batch: Batch, to: &Delivery<'_>) {
        if sinks.is_empty() {
            // A route with no sinks (e.g. `default_route: { sinks: [] }`) drops on purpose.
            metrics::counter!("sluice_route_dropped_entries_total", "route" => route.to_string())
                .increment(batch.entry_count() as u64);
            return;
        }
        if let (AckMode::OnDisk, Some(wal)) = (to.mode, &self.wal) {
            self.record.clear();
            let format = wal.frame_format();
            let start = wal::frame::begin(format, &mut self.record);
            let names: Vec<&str> = sinks.iter().map(|s| &*s.name).collect();
            if let Err(e) = wal::record::encode(&batch.tenant, &names, &batch.streams, &mut self.record) {
                to.ack.fail(format!("cannot write the batch to the write-ahead log: {e}"));
                return;
            }
            wal::frame::finish(format, &mut self.record, start);
            if let Err(e) = wal.append(&self.record, to.ack.clone()) {
                to.ack.fail_with(e.ack_kind(), e.to_string());
            }
            // One huge push must not leave every worker holding a buffer of its size.
            if self.record.capacity() > RECORD_BUFFER_KEPT {
                self.record = Vec::new();
            }
            return;
        }
        // `on_delivery`: a share of the acknowledgement rides with the batch into every sink.
        let ack = (to.mode == AckMode::OnDelivery).then_some(to.ack);
        let Some((last, rest)) = sinks.split_last() else { return };
        for sink in rest {
            let input = SinkInput {
                batch: batch.clone(),
                charge: Arc::clone(to.charge),
                mark: None,
                ack: ack.cloned(),
            };
            if sink.sender.send(input).is_err() {
                to.ack.fail(format!("sink `{}` has stopped", sink.name));
            }
        }
        let input = SinkInput { batch, charge: Arc::clone(to.charge), mark: None, ack: ack.cloned() };
        if last.sender.send(input).is_err() {
            to.ack.fail(format!("sink `{}` has stopped", last.name));
        }
    }
}

/// Largest log-record buffer a worker keeps between jobs.
const RECORD_BUFFER_KEPT: usize = 4 << 20;

/// How a job's output is handed on, and what it answers to.
struct Delivery<'a> {
    mode: AckMode,
    charge: &'a Arc<Charge>,
    ack: &'a Ack,
}

/// The reserved label a stage sets to move a stream to another tenant (the name Promtail uses
/// for the same purpose). Sluice removes it after the last stage.
pub const TENANT_LABEL: &str = "__tenant_id__";

/// `batch` split by the tenant its stages chose: streams labelled [`TENANT_LABEL`] go, without
/// that label, to a batch of that tenant if the route lists it in `tenants_out`; the rest stay.
/// A refused move (a tenant not listed, or not a valid id) leaves the stream with its tenant,
/// without the label, and is counted: a client's labels can never choose a tenant (ingest
/// refuses `__` labels), and a stage only among those the operator allowed.
fn split_by_tenant(mut batch: Batch, route: &RoutePlan) -> Vec<Batch> {
    if !batch.streams.iter().any(|s| s.labels.get(TENANT_LABEL).is_some()) {
        return vec![batch];
    }
    let mut moved: Vec<Batch> = Vec::new();
    let mut stay = Vec::with_capacity(batch.streams.len());
    for mut stream in std::mem::take(&mut batch.streams) {
        let Some(tenant) = stream.labels.get(TENANT_LABEL).map(str::to_string) else {
            stay.push(stream);
            continue;
        };
        let pairs = stream.labels.pairs().iter().filter(|(n, _)| n != TENANT_LABEL).cloned().collect();
        stream.labels = LabelSet::new(pairs);
        if *tenant == *batch.tenant {
            stay.push(stream);
            continue;
        }
        let refused = if !crate::ingest::is_valid_tenant_id(&tenant) {
            Some("invalid")
        } else if !route.tenants_out.iter().any(|t| **t == *tenant) {
            Some("not_allowed")
        } else {
            None
        };
        if let Some(reason) = refused {
            metrics::counter!("sluice_tenant_rewrites_refused_total", "route" => route.name.clone(), "reason" => reason)
                .increment(stream.entries.len() as u64);
            tracing::warn!(
                route = %route.name, tenant = %tenant.escape_default(), reason,
                "a stage moved entries to a tenant the route does not allow (routes[].tenants_out) or to an invalid id; they keep their tenant"
            );
            stay.push(stream);
            continue;
        }
        metrics::counter!("sluice_tenant_rewrites_total", "route" => route.name.clone())
            .increment(stream.entries.len() as u64);
        match moved.iter_mut().find(|b| *b.tenant == *tenant) {
            Some(b) => b.streams.push(stream),
            None => moved.push(Batch { tenant: tenant.into(), streams: vec![stream] }),
        }
    }
    batch.streams = stay;
    if !batch.streams.is_empty() {
        moved.push(batch);
    }
    moved
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::Budget;
    use crate::model::{Entry, LabelSet, Stream};
    use tokio::sync::mpsc;

    struct DropLines(&'static str);
    impl Stage for DropLines {
        fn name(&self) -> &str {
            "drop-lines"
        }
        fn process(&mut self, batch: &mut Batch) -> Result<(), StageError> {
            if batch.streams.iter().flat_map(|s| &s.entries).any(|e| e.line == "boom") {
                panic!("boom");
            }
            if batch.streams.iter().flat_map(|s| &s.entries).any(|e| e.line == "fail") {
                return Err(StageError {
                    stage: "drop-lines".into(),
                    reason: "error",
                    message: "refused".into(),
                });
            }
            for s in &mut batch.streams {
                s.entries.retain(|e| !e.line.contains(self.0));
            }
            Ok(())
        }
    }

    /// A generation whose only route (the default one) runs `plan`.
    fn generation(id: u64, plan: RoutePlan) -> Generation {
        let config = crate::config::Config::embedded_default();
        let router = Router::new(&config, &["local".into()]).expect("router");
        Generation { id, router, routes: vec![plan], sinks: Vec::new(), default_ack: AckMode::InMemory }
    }

    fn target(name: &str, sender: SinkSender) -> SinkTarget {
        SinkTarget { name: Arc::from(name), sender }
    }

    fn job(generation: &Arc<Generation>, batch: Batch, ack: Ack, charge: Arc<Charge>) -> Job {
        Job { generation: Arc::clone(generation), route: 0, batch, ack, charge, ack_mode: AckMode::InMemory }
    }

    fn batch(app: &str, lines: &[&str]) -> Batch {
        let labels = LabelSet::new(vec![("app".into(), app.into())]);
        let entries =
            lines.iter().map(|l| Entry { timestamp_ns: 1, line: l.to_string(), metadata: vec![] }).collect();
        Batch { tenant: "t".into(), streams: vec![Stream { labels, entries }] }
    }

    #[test]
    fn a_stage_moves_streams_only_to_the_tenants_the_route_allows() {
        let labelled = |pairs: &[(&str, &str)], line: &str| Stream {
            labels: LabelSet::new(pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()),
            entries: vec![Entry { timestamp_ns: 1, line: line.into(), metadata: vec![] }],
        };
        let mut b = batch("x", &["stays"]);
        b.streams.push(labelled(&[("app", "a"), (TENANT_LABEL, "team-b")], "to b"));
        b.streams.push(labelled(&[("app", "c"), (TENANT_LABEL, "team-b")], "to b too"));
        b.streams.push(labelled(&[("app", "d"), (TENANT_LABEL, "no/slashes")], "invalid: stays"));
        b.streams.push(labelled(&[("app", "e"), (TENANT_LABEL, "t")], "own tenant: stays"));
        b.streams.push(labelled(&[("app", "f"), (TENANT_LABEL, "team-c")], "not allowed: stays"));
        let route = RoutePlan {
            name: "r".into(),
            stages: vec![],
            sinks: vec![],
            ack: None,
            tenants_out: vec!["team-b".into()],
        };
        let out = split_by_tenant(b, &route);
        let shown: Vec<(String, Vec<String>)> = out
            .iter()
            .map(|b| {
                let streams =
                    b.streams.iter().map(|s| format!("{:?}={}", s.labels.pairs(), s.entries[0].line));
                (b.tenant.to_string(), streams.collect())
            })
            .collect();
        assert_eq!(shown.len(), 2, "{shown:?}");
        assert_eq!(shown[0].0, "team-b");
        assert_eq!(shown[0].1, [r#"[("app", "a")]=to b"#, r#"[("app", "c")]=to b too"#]);
        assert_eq!(shown[1].0, "t");
        assert_eq!(
            shown[1].1,
            [
                r#"[("app", "x")]=stays"#,
                r#"[("app", "d")]=invalid: stays"#,
                r#"[("app", "e")]=own tenant: stays"#,
                r#"[("app", "f")]=not allowed: stays"#
            ]
        );
        // The label never leaves: fingerprints match a label set built without it.
        let plain = LabelSet::new(vec![("app".into(), "a".into())]);
        assert_eq!(out[0].streams[0].labels.fingerprint(), plain.fingerprint());
    }

    #[tokio::test]
    async fn stages_run_per_worker_and_results_reach_every_sink_in_order() {
        let (tx1, mut rx1) = mpsc::unbounded_channel();
        let (tx2, mut rx2) = mpsc::unbounded_channel();
        let factory: StageFactory = Arc::new(|| Ok(Box::new(DropLines("debug")) as Box<dyn Stage>));
        let stages = vec![StagePlan { factory, on_error: OnError::Pass }];
        let plan = RoutePlan {
            name: "r".into(),
            stages,
            sinks: vec![target("a", tx1), target("b", tx2)],
            ack: None,
            tenants_out: vec![],
        };
        let (pipeline, handles) = Pipeline::start(2, generation(1, plan), None).expect("starts");
        let generation = pipeline.current().expect("open");
        let budget = Budget::new(100, 10_000);
        let mut waiters = Vec::new();
        for (i, lines) in [["a", "debug x"], ["boom", "b"], ["fail", "c"], ["d", "e"]].iter().enumerate() {
            let (ack, waiter) = Ack::new();
            let b = batch("x", lines);
            let charge = Arc::new(budget.try_charge(2, 10).expect("fits"));
            let shard = pipeline.shard(b.streams[0].labels.fingerprint());
            pipeline.submit([(shard, job(&generation, b, ack, charge))]).expect("open");
            waiters.push((i, waiter));
        }
        for (i, w) in waiters {
            assert_eq!(w.await.expect("acked"), Ok(()), "batch {i}");
        }
        pipeline.close();
        drop(generation);
        for h in handles {
            h.join().expect("worker exits cleanly");
        }
        assert!(pipeline.submit([]).is_err(), "closed");
        for rx in [&mut rx1, &mut rx2] {
            let mut lines = Vec::new();
            while let Some(input) = rx.recv().await {
                lines.extend(input.batch.streams.into_iter().flat_map(|s| s.entries).map(|e| e.line));
            }
            // Panics and errors leave the batch as it was; same stream → same worker → order kept.
            assert_eq!(lines, ["a", "boom", "b", "fail", "c", "d", "e"]);
        }
        assert_eq!(budget.entries(), 0, "charges released once sinks dropped the inputs");
    }

    #[tokio::test]
    async fn failed_batches_are_dropped_or_dead_lettered_by_policy() {
        for dead_letter in [false, true] {
            let (tx, mut rx) = mpsc::unbounded_channel();
            let (dl_tx, mut dl_rx) = mpsc::unbounded_channel();
            let factory: StageFactory = Arc::new(|| Ok(Box::new(DropLines("debug")) as Box<dyn Stage>));
            let on_error =
                if dead_letter { OnError::DeadLetter(target("dl", dl_tx.clone())) } else { OnError::Drop };
            drop(dl_tx);
            let plan = RoutePlan {
                name: "r".into(),
                stages: vec![StagePlan { factory, on_error }],
                sinks: vec![target("s", tx)],
                ack: None,
                tenants_out: vec![],
            };
            let (pipeline, handles) = Pipeline::start(1, generation(1, plan), None).expect("starts");
            let generation = pipeline.current().expect("open");
            let budget = Budget::new(100, 10_000);
            let mut waiters = Vec::new();
            for lines in [["a", "debug x"], ["boom", "b"], ["fail", "c"], ["d", "e"]] {
                let (ack, waiter) = Ack::new();
                let charge = Arc::new(budget.try_charge(2, 10).expect("fits"));
                pipeline.submit([(0, job(&generation, batch("x", &lines), ack, charge))]).expect("open");
                waiters.push(waiter);
            }
            for w in waiters {
                assert_eq!(w.await.expect("acked"), Ok(()), "a policy applied is not a failed push");
            }
            pipeline.close();
            drop(generation);
            for h in handles {
                h.join().expect("worker exits cleanly");
            }
            let mut lines = Vec::new();
            while let Some(input) = rx.recv().await {
                lines.extend(input.batch.streams.into_iter().flat_map(|s| s.entries).map(|e| e.line));
            }
            assert_eq!(lines, ["a", "d", "e"], "the failed batches are not delivered");
            let mut dead = Vec::new();
            while let Some(input) = dl_rx.recv().await {
                dead.extend(input.batch.streams.into_iter().flat_map(|s| s.entries).map(|e| e.line));
            }
            let expected: &[&str] = if dead_letter { &["boom", "b", "fail", "c"] } else { &[] };
            assert_eq!(dead, expected, "dead letters are the failed batches, unchanged");
        }
    }

    /// Appends a version tag to every line.
    struct Tag(&'static str);
    impl Stage for Tag {
        fn name(&self) -> &str {
            "tag"
        }
        fn process(&mut self, batch: &mut Batch) -> Result<(), StageError> {
            for e in batch.streams.iter_mut().flat_map(|s| &mut s.entries) {
                e.line.push_str(self.0);
            }
            Ok(())
        }
    }

    #[tokio::test]
    async fn jobs_finish_on_the_generation_they_were_routed_with() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let built = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let plan = |tag: &'static str| {
            let built = Arc::clone(&built);
            let factory: StageFactory = Arc::new(move || {
                built.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Ok(Box::new(Tag(tag)) as Box<dyn Stage>)
            });
            RoutePlan {
                name: "r".into(),
                stages: vec![StagePlan { factory, on_error: OnError::Pass }],
                sinks: vec![target("s", tx.clone())],
                ack: None,
                tenants_out: vec![],
            }
        };
        let (pipeline, handles) = Pipeline::start(1, generation(1, plan("-v1")), None).expect("starts");
        let old = pipeline.current().expect("open");
        pipeline.swap(generation(2, plan("-v2"))).expect("open");
        let new = pipeline.current().expect("open");
        assert_eq!(new.id, 2);
        drop(tx);
        let budget = Budget::new(100, 10_000);
        let mut waiters = Vec::new();
        // A push routed before the reload may reach the worker after one routed after it.
        for (g, line) in [(&old, "a"), (&new, "b"), (&old, "c"), (&new, "d")] {
            let (ack, waiter) = Ack::new();
            let charge = Arc::new(budget.try_charge(1, 10).expect("fits"));
            pipeline.submit([(0, job(g, batch("x", &[line]), ack, charge))]).expect("open");
            waiters.push(waiter);
        }
        for w in waiters {
            assert_eq!(w.await.expect("acked"), Ok(()));
        }
        pipeline.close();
        drop((old, new));
        for h in handles {
            h.join().expect("worker exits cleanly");
        }
        let mut lines = Vec::new();
        while let Some(input) = rx.recv().await {
            lines.extend(input.batch.streams.into_iter().flat_map(|s| s.entries).map(|e| e.line));
        }
        assert_eq!(
            lines,
            ["a-v1", "b-v2", "c-v1", "d-v2"],
            "each batch once, with its own generation's stage"
        );
        assert_eq!(
            built.load(std::sync::atomic::Ordering::SeqCst),
            4,
            "instances rebuilt when the generation changes"
        );
    }

    #[test]
    fn the_stronger_of_route_and_tenant_ack_modes_applies() {
        let (tx, _rx) = mpsc::unbounded_channel();
        let plan = |ack| RoutePlan {
            name: "r".into(),
            stages: vec![],
            sinks: vec![target("s", tx.clone())],
            ack,
            tenants_out: vec![],
        };
        let mut g = generation(1, plan(None));
        g.default_ack = AckMode::OnDisk;
        assert_eq!(g.ack_mode(0, None), AckMode::OnDisk, "the default");
        assert_eq!(g.ack_mode(0, Some(AckMode::InMemory)), AckMode::InMemory, "the tenant's own");
        let g = generation(1, plan(Some(AckMode::InMemory)));
        assert_eq!(g.ack_mode(0, None), AckMode::InMemory, "the route's own");
        assert_eq!(g.ack_mode(0, Some(AckMode::OnDisk)), AckMode::OnDisk, "the stronger of both");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn on_disk_jobs_are_answered_once_in_the_log_and_refused_with_429_when_it_is_full() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = crate::config::WalConfig {
            dir: Some(dir.path().to_path_buf()),
            max_size: bytesize::ByteSize::kib(1),
            ..crate::config::WalConfig::default()
        };
        let (wal, _) = Wal::open(&config, dir.path(), &["s".to_string()]).expect("opens");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let plan = RoutePlan {
            name: "r".into(),
            stages: vec![],
            sinks: vec![target("s", tx)],
            ack: None,
            tenants_out: vec![],
        };
        let (pipeline, handles) =
            Pipeline::start(1, generation(1, plan), Some(Arc::clone(&wal))).expect("starts");
        let generation = pipeline.current().expect("open");
        let budget = Budget::new(100, 1_000_000);
        let mut outcomes = Vec::new();
        for line in ["first".to_string(), "x".repeat(2000)] {
            let (ack, waiter) = Ack::new();
            let charge = Arc::new(budget.try_charge(1, 10).expect("fits"));
            let mut job = job(&generation, batch("a", &[&line]), ack, charge);
            job.ack_mode = AckMode::OnDisk;
            pipeline.submit([(0, job)]).expect("open");
            outcomes.push(waiter.await.expect("answered"));
        }
        assert_eq!(outcomes[0], Ok(()));
        let refused = outcomes[1].clone().expect_err("does not fit in 1 KiB");
        assert_eq!(refused.kind, crate::model::AckFailureKind::Overloaded, "{}", refused.message);
        assert!(rx.try_recv().is_err(), "on_disk batches reach the sink through the log, not the channel");
        assert!(wal.size() > 0);
        assert_eq!(budget.entries(), 0, "charges are released once the batch is in the log");
        pipeline.close();
        for h in handles {
            h.join().expect("worker exits");
        }
        wal.shutdown();
    }
}
