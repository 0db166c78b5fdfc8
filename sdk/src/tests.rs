//! Tests of the author-facing API, run natively through the same path as the Wasm export.

use std::sync::{Arc, Mutex};

use serde::Deserialize;

use crate::format::response::{Response, Verdict as Wire};
use crate::native::NativePlugin;
use crate::prelude::*;
use crate::testing::{self, Status, TestBatch};

type OnEntry = Box<dyn FnMut(&mut Entry<'_>) -> Result<Verdict, Error>>;
type OnBatch = Box<dyn FnMut(&mut Batch<'_>) -> Result<(), Error>>;
type Seen = Arc<Mutex<Vec<String>>>;

/// A plugin whose behaviour each test supplies as closures.
struct Probe {
    on_entry: OnEntry,
    on_batch: Option<OnBatch>,
}

impl Plugin for Probe {
    type Config = ();

    fn init((): ()) -> Result<Self, Error> {
        Ok(Self { on_entry: Box::new(|_| Ok(Verdict::Keep)), on_batch: None })
    }

    fn process(&mut self, entry: &mut Entry<'_>) -> Result<Verdict, Error> {
        (self.on_entry)(entry)
    }

    fn process_batch(&mut self, batch: &mut Batch<'_>) -> Result<(), Error> {
        match &mut self.on_batch {
            Some(f) => f(batch),
            None => batch.for_each_entry(|e| (self.on_entry)(e)),
        }
    }
}

fn probe(f: impl FnMut(&mut Entry<'_>) -> Result<Verdict, Error> + 'static) -> NativePlugin<Probe> {
    let mut p = testing::plugin::<Probe>("");
    p.plugin_mut().on_entry = Box::new(f);
    p
}

fn batch_probe(f: impl FnMut(&mut Batch<'_>) -> Result<(), Error> + 'static) -> NativePlugin<Probe> {
    let mut p = testing::plugin::<Probe>("");
    p.plugin_mut().on_batch = Some(Box::new(f));
    p
}

fn sample() -> TestBatch {
    TestBatch::new()
        .tenant("team-a")
        .stream(&[("env", "prod"), ("app", "api")])
        .entry(100, "first", &[("trace_id", "t1"), ("user", "u1")])
        .entry(200, "second", &[])
        .stream(&[("app", "db")])
        .entry(300, "third", &[("k", "v")])
}

/// Records what a closure saw, for assertions after the run.
fn seen() -> (Seen, Seen) {
    let s = Arc::new(Mutex::new(Vec::new()));
    (Arc::clone(&s), s)
}

fn lock(s: &Seen) -> Vec<String> {
    s.lock().expect("not poisoned").clone()
}

#[test]
fn views_show_the_request() {
    let (out, record) = seen();
    let mut p = probe(move |e| {
        let labels: Vec<_> = e.labels().map(|(n, v)| format!("{n}={v}")).collect();
        let metadata: Vec<_> = e.metadata().map(|(n, v)| format!("{n}={v}")).collect();
        record.lock().expect("not poisoned").push(format!(
            "{} {} {} s{} [{}] [{}] app={:?} user={:?} missing={:?}",
            e.index(),
            e.timestamp_ns(),
            e.line(),
            e.stream_index(),
            labels.join(","),
            metadata.join(","),
            e.label("app"),
            e.metadata_value("user"),
            e.label("nope"),
        ));
        Ok(Verdict::Keep)
    });
    let outcome = testing::run(&mut p, &sample());
    assert_eq!(
        lock(&out),
        [
            r#"0 100 first s0 [app=api,env=prod] [trace_id=t1,user=u1] app=Some("api") user=Some("u1") missing=None"#,
            r#"1 200 second s0 [app=api,env=prod] [] app=Some("api") user=None missing=None"#,
            r#"2 300 third s1 [app=db] [k=v] app=Some("db") user=None missing=None"#,
        ]
    );
    assert!(outcome.entries.iter().all(|e| e.status == Status::Kept));
}

#[test]
fn reads_reflect_pending_changes() {
    let (out, record) = seen();
    let mut p = probe(move |e| {
        e.set_line(format!("{}!", e.line()));
        e.set_timestamp_ns(e.timestamp_ns() + 1);
        e.set_label("zone", "eu")?;
        e.set_label("app", "web")?;
        e.remove_label("env");
        e.set_metadata("user", "anon")?;
        e.set_metadata("new", "n")?;
        e.remove_metadata("trace_id");
        let labels: Vec<_> = e.labels().map(|(n, v)| format!("{n}={v}")).collect();
        let metadata: Vec<_> = e.metadata().map(|(n, v)| format!("{n}={v}")).collect();
        record.lock().expect("not poisoned").push(format!(
            "{} {} {} [{}] [{}] env={:?} orig={}",
            e.timestamp_ns(),
            e.line(),
            e.label("zone").unwrap_or("-"),
            labels.join(","),
            metadata.join(","),
            e.label("env"),
            e.original_line(),
        ));
        Ok(Verdict::Keep)
    });
    testing::run(
        &mut p,
        &TestBatch::new().stream(&[("app", "api"), ("env", "prod")]).entry(
            5,
            "x",
            &[("trace_id", "t"), ("user", "u")],
        ),
    );
    assert_eq!(lock(&out), ["6 x! eu [app=web,zone=eu] [user=anon,new=n] env=None orig=x"]);
}

#[test]
fn patches_carry_only_changed_fields_of_changed_entries() {
    let mut p = probe(|e| {
        match e.index() {
            0 => e.set_line("first"), // the same line: no change
            1 => e.set_line("SECOND"),
            _ => {
                e.set_label("app", "db")?; // the same value: no change
                e.set_metadata("k", "v2")?;
            }
        }
        Ok(Verdict::Keep)
    });
    let request = sample().encode();
    let response = p.process(&request).expect("processes");
    let r = Response::parse(&response, 3).expect("the host accepts it");
    assert_eq!((r.verdict(0), r.verdict(1), r.verdict(2)), (Wire::Keep, Wire::Patched, Wire::Patched));
    let patches: Vec<_> = r.patches().collect();
    assert_eq!(patches.len(), 2);
    assert_eq!(patches[0].entry, Some(1));
    assert_eq!(patches[0].line, Some("SECOND"));
    assert!(
        patches[0].labels.is_none() && patches[0].metadata.is_none() && patches[0].timestamp_ns.is_none()
    );
    assert_eq!(patches[1].entry, Some(2));
    assert!(patches[1].line.is_none() && patches[1].labels.is_none());
    assert_eq!(patches[1].metadata.clone().expect("set").collect::<Vec<_>>(), [("k", "v2")]);
}

#[test]
fn a_label_change_sends_the_complete_sorted_set() {
    let mut p = probe(|e| {
        e.set_label("level", "warn")?;
        Ok(Verdict::Keep)
    });
    let request = TestBatch::new().stream(&[("app", "api"), ("zone", "eu")]).line("x").encode();
    let response = p.process(&request).expect("processes");
    let r = Response::parse(&response, 1).expect("the host accepts it");
    let patch = r.patches().next().expect("one patch");
    assert_eq!(
        patch.labels.expect("labels").collect::<Vec<_>>(),
        [("app", "api"), ("level", "warn"), ("zone", "eu")]
    );
}

#[test]
fn invalid_names_are_refused_by_the_setters_with_the_name() {
    let mut p = probe(|e| {
        for bad in ["", "1abc", "a-b", "é"] {
            let err = e.set_label(bad, "v").expect_err("invalid label");
            assert!(err.message().contains(&format!("`{}`", bad.escape_default())), "{err}");
            assert!(e.set_metadata(bad, "v").is_err());
        }
        e.set_label("_ok9", "v")?;
        e.set_label("bad name", "v")?;
        Ok(Verdict::Keep)
    });
    let err = testing::try_run(&mut p, &TestBatch::new().line("x")).expect_err("the bad name fails");
    assert!(err.contains("entry 0") && err.contains("`bad name`"), "{err}");
}

#[test]
fn removing_every_label_fails_the_batch() {
    let mut p = probe(|e| {
        e.remove_label("job");
        Ok(Verdict::Keep)
    });
    let err = testing::try_run(&mut p, &TestBatch::new().line("x")).expect_err("no labels left");
    assert!(err.contains("entry 0") && err.contains("at least one label"), "{err}");
}

#[test]
fn dropped_entries_are_not_patched() {
    let mut p = probe(|e| {
        e.set_line("changed");
        Ok(if e.index() == 1 { Verdict::Drop } else { Verdict::Keep })
    });
    let out = testing::run(&mut p, &sample());
    let status: Vec<_> = out.entries.iter().map(|e| e.status).collect();
    assert_eq!(status, [Status::Changed, Status::Dropped, Status::Changed]);
    assert_eq!(out.dropped_lines(), ["second"]);
    assert_eq!(out.lines(), ["changed", "changed"]);
}

#[test]
fn batch_hook_sees_streams_and_adds_entries() {
    let mut p = batch_probe(|batch| {
        assert_eq!((batch.tenant(), batch.len(), batch.stream_count()), ("team-a", 3, 2));
        let s1 = batch.stream(1);
        assert_eq!((s1.index(), s1.entries(), s1.label("app")), (1, 2..3, Some("db")));
        let mut dropped = 0;
        for i in 0..batch.len() {
            let mut e = batch.entry(i);
            assert_eq!(e.index(), i);
            if e.line().starts_with('s') {
                e.set_line("patched in the batch hook");
                dropped += 1;
                batch.drop_entry(i);
            }
        }
        batch.set_verdict(1, Verdict::Keep);
        assert_eq!(batch.verdict(1), Verdict::Keep);
        assert_eq!(batch.entry(2).label("app"), Some("db"));
        let labels = batch.stream(0).labels();
        batch.add_entry(
            NewEntry::new(999, format!("summary: {dropped}")).labels(labels).metadata("kind", "sum"),
        )?;
        assert!(batch.add_entry(NewEntry::new(1, "no labels")).is_err());
        let err = batch.add_entry(NewEntry::new(1, "bad").label("a.b", "x")).expect_err("invalid name");
        assert!(err.message().contains("`a.b`"));
        Ok(())
    });
    let out = testing::run(&mut p, &sample());
    assert_eq!(out.lines(), ["first", "patched in the batch hook", "third", "summary: 1"]);
    let added = &out.added[0];
    assert_eq!((added.status, added.timestamp_ns), (Status::Added, 999));
    assert_eq!(added.labels, [("app".into(), "api".into()), ("env".into(), "prod".into())]);
    assert_eq!(added.metadata_value("kind"), Some("sum"));
}

#[test]
fn the_default_batch_hook_calls_process_per_entry_and_names_a_failing_entry() {
    let (out, record) = seen();
    let mut p = probe(move |e| {
        record.lock().expect("not poisoned").push(e.line().to_string());
        if e.line() == "third" {
            return Err(Error::msg("cannot handle this"));
        }
        Ok(Verdict::Keep)
    });
    let err = p.process(&sample().encode()).expect_err("fails");
    assert_eq!(err, "entry 2: cannot handle this");
    assert_eq!(lock(&out), ["first", "second", "third"]);
}

#[test]
fn state_is_reused_across_batches_without_leaking_edits() {
    let mut p = probe(|e| {
        if e.line() == "first" {
            e.set_line("one");
            e.set_label("x", "1")?;
        }
        Ok(Verdict::Keep)
    });
    let first = testing::run(&mut p, &sample());
    assert_eq!(first.changed().len(), 1);
    let second = testing::run(&mut p, &TestBatch::new().line("other").line("first").line("more"));
    let status: Vec<_> = second.entries.iter().map(|e| e.status).collect();
    assert_eq!(status, [Status::Kept, Status::Changed, Status::Kept]);
    assert_eq!(second.entries[1].labels, [("job".into(), "test".into()), ("x".into(), "1".into())]);
    let empty = testing::run(&mut p, &TestBatch::new());
    assert!(empty.entries.is_empty() && empty.added.is_empty());
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NeedleConfig {
    needle: String,
    #[serde(default)]
    limits: Limits,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Limits {
    #[serde(default)]
    max: u32,
}

struct Needle(NeedleConfig);

impl Plugin for Needle {
    type Config = NeedleConfig;

    fn init(config: NeedleConfig) -> Result<Self, Error> {
        if config.needle.is_empty() {
            bail!("`needle` must not be empty");
        }
        info!("needle is {:?}", config.needle);
        Ok(Self(config))
    }

    fn process(&mut self, entry: &mut Entry<'_>) -> Result<Verdict, Error> {
        if entry.line().contains(&self.0.needle) {
            warn!("dropping {}", entry.index());
            let hash = crate::keyed_hash_hex(entry.line().as_bytes());
            entry.set_metadata("hash", hash)?;
            return Ok(Verdict::Drop);
        }
        Ok(Verdict::Keep)
    }
}

#[test]
fn config_errors_name_the_field() {
    let e = testing::init_error::<Needle>(r#"{"needle": 3}"#);
    assert!(e.starts_with("invalid config at `needle`: invalid type: integer `3`"), "{e}");
    let e = testing::init_error::<Needle>(r#"{"needle": "x", "limits": {"max": -1}}"#);
    assert!(e.starts_with("invalid config at `limits.max`"), "{e}");
    let e = testing::init_error::<Needle>(r#"{"needle": "x", "extra": 1}"#);
    assert!(e.contains("unknown field `extra`"), "{e}");
    let e = testing::init_error::<Needle>("{}");
    assert!(e.contains("missing field `needle`"), "{e}");
    let e = testing::init_error::<Needle>(r#"{"needle": "x"} trailing"#);
    assert!(e.starts_with("invalid config"), "{e}");
    assert_eq!(testing::init_error::<Needle>(r#"{"needle": ""}"#), "`needle` must not be empty");
    assert_eq!(
        testing::plugin::<Needle>(r#"{"needle": "x", "limits": {"max": 2}}"#).plugin().0.limits.max,
        2
    );
    // No config at all is both `null` and `{}`.
    for none in ["", "null", "{}", " { } "] {
        assert!(NativePlugin::<Probe>::new(none, [0; 32]).is_ok(), "{none:?}");
    }
    assert!(NativePlugin::<Probe>::new("[1]", [0; 32]).is_err());
}

#[test]
fn logs_and_keyed_hash_go_to_the_native_stub() {
    let logs = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&logs);
    let key = crate::hash::derive_key(b"k1");
    let mut p = NativePlugin::<Needle>::with_logger(r#"{"needle": "x"}"#, key, move |level, msg| {
        sink.lock().expect("not poisoned").push(format!("{level} {msg}"));
    })
    .expect("valid");
    assert_eq!(*logs.lock().expect("not poisoned"), ["info needle is \"x\""]);
    let out = testing::run(&mut p, &TestBatch::new().line("a").line("xx"));
    assert_eq!(out.logs, [(Level::Warn, "dropping 1".to_string())]);
    assert_eq!(logs.lock().expect("not poisoned").len(), 1, "run captures, then restores the logger");
    // A dropped entry is not patched, so run it again keeping the entry to see the hash.
    let mut keep = probe(|e| {
        e.set_metadata("hash", crate::keyed_hash_hex(e.line().as_bytes()))?;
        Ok(Verdict::Keep)
    });
    let out = testing::run(&mut keep, &TestBatch::new().line("xx"));
    let expected = crate::to_hex(&crate::hash::keyed_hash(&testing::test_key(), b"xx"));
    assert_eq!(out.entries[0].metadata_value("hash"), Some(expected.as_str()));
    assert_eq!(expected.len(), 64);
}

#[test]
fn a_panic_becomes_an_error_and_poisons_the_instance() {
    let mut p = probe(|e| {
        if e.line() == "boom" {
            panic!("exploded on purpose");
        }
        Ok(Verdict::Keep)
    });
    let err = p.process(&TestBatch::new().line("boom").encode()).expect_err("panicked");
    assert_eq!(err, "plugin panicked: exploded on purpose");
    let err = p.process(&TestBatch::new().line("fine").encode()).expect_err("poisoned");
    assert!(err.contains("panicked earlier"), "{err}");
}

#[test]
fn a_malformed_request_is_an_error() {
    let mut p = probe(|_| Ok(Verdict::Keep));
    let err = p.process(b"not a batch").expect_err("malformed");
    assert!(err.contains("malformed plugin batch"), "{err}");
}

#[test]
fn untouched_entries_give_an_all_keep_response() {
    let mut p = probe(|_| Ok(Verdict::Keep));
    let request = sample().encode();
    let response = p.process(&request).expect("processes");
    let expected = crate::format::response::ResponseWriter::new(3).finish().expect("fits");
    assert_eq!(response, expected);
}
