//! The sluice configurations the load driver measures (`shared/BENCHMARK.md`), and what the
//! reference chain keeps of the workload.
//!
//! The chain configurations are derived from the ready config
//! `deploy/examples/reference-chain.yaml` ([`REFERENCE_CHAIN`]) by text substitution, so the
//! benchmark measures exactly the chain users are pointed at:
//!
//! - every stage's `run: ${SLUICE_PLUGIN_RUN:-wasm}` becomes `wasm` (`chain-wasm`,
//!   `chain-fanout`) or `native` (`chain-native`);
//! - the Loki sink's `url: ${LOKI_URL:-…}` becomes the receiver's URL;
//! - `server.max_body_size: 64MiB` goes into the existing `server:` block and the generous
//!   queue of `passthrough` (2,000,000 entries / 2 GiB) is added as a top-level `queue:`;
//! - `chain-fanout` adds a second sink, `archive`, to `sinks:` and to the `default_route`'s
//!   sinks, after the stages like `loki`: the archive sink on `s3://bench-archive/fanout` of a
//!   real S3-compatible store ([`ArchiveTarget`]: the driver starts SeaweedFS, [`crate::s3`]),
//!   its endpoint and static credentials in the sink's `s3:` block, everything else at its
//!   defaults (zstd NDJSON, 64 MiB / 5 min objects, the spool under the data dir).
//!
//! `server.listen` and `data_dir` stay as the file has them: the driver overrides both with
//! `--listen` and `--data-dir` (see [`crate::server::SluiceProcess::start`]).
//!
//! [`check`] verifies a parsed configuration is what its name promises; the driver runs it
//! before starting sluice, so a change of the reference file that the substitutions no longer
//! match fails the row instead of silently measuring something else.

use sluice::config::{ArchiveFormat, Compression, Config, RunMode, S3Config, SinkConfig};

use crate::workload::{EntryTruth, Format, Level};

/// The reference chain, as shipped in `deploy/examples/`.
pub const REFERENCE_CHAIN: &str = include_str!("../../deploy/examples/reference-chain.yaml");

/// The sampler's rate for DEBUG lines in [`REFERENCE_CHAIN`] (`rates: { debug: 0.1 }`).
pub const DEBUG_RATE: f64 = 0.1;

/// The stages of the reference chain, in order (pipeline `reference`).
pub const STAGES: [&str; 5] = ["parse-json", "parse-logfmt", "redact", "relabel", "sample"];

/// Name of the fan-out's second sink.
pub const ARCHIVE_SINK: &str = "archive";

/// The bucket the driver creates for the fan-out's archive.
pub const ARCHIVE_BUCKET: &str = "bench-archive";

/// The fan-out's archive prefix in [`ARCHIVE_BUCKET`].
pub const ARCHIVE_PREFIX: &str = "fanout";

/// Where `chain-fanout`'s archive sink writes: `url` (`s3://bucket/prefix`) on the S3-compatible
/// store of `s3`, whose set fields (endpoint, region, path style, static credentials) go into
/// the sink's `s3:` block, so sluice needs no `AWS_*` variables.
#[derive(Debug, Clone)]
pub struct ArchiveTarget {
    pub url: String,
    pub s3: S3Config,
}

impl ArchiveTarget {
    /// The sink's settings below `type: archive`, as YAML lines at 4 spaces.
    fn sink_yaml(&self) -> String {
        let S3Config { endpoint, region, path_style, access_key_id, secret_access_key, session_token } =
            &self.s3;
        let fields: Vec<String> = [
            ("endpoint", endpoint),
            ("region", region),
            ("access_key_id", access_key_id),
            ("secret_access_key", secret_access_key),
            ("session_token", session_token),
        ]
        .into_iter()
        .filter_map(|(key, value)| value.as_deref().map(|v| format!("{key}: {}", scalar(v))))
        .chain(path_style.map(|p| format!("path_style: {p}")))
        .collect();
        format!("    url: {}\n    s3: {{ {} }}\n", scalar(&self.url), fields.join(", "))
    }
}

/// `value` as a double-quoted YAML scalar (a JSON string is one), with `$` written `$$`
/// because sluice substitutes `${…}` in its configuration.
fn scalar(value: &str) -> String {
    serde_json::to_string(&value.replace('$', "$$")).unwrap_or_default()
}

/// Entries the sluice queue may hold in every configuration (429s must not dominate: a max-rate
/// phase keeps 8 pushes of ~1,000 entries in flight, plus what the sinks still hold).
const QUEUE: &str = "queue:\n  max_entries: 2000000\n  max_bytes: 2GiB\n";
const QUEUE_MAX_ENTRIES: usize = 2_000_000;
const QUEUE_MAX_BYTES: u64 = 2 << 30;
/// Pushes of ~1,000 entries with 1% of 4–16 KiB lines exceed the default body limit as JSON.
const MAX_BODY_SIZE: u64 = 64 << 20;

const RUN_PLACEHOLDER: &str = "${SLUICE_PLUGIN_RUN:-wasm}";
const LOKI_URL_PLACEHOLDER: &str = "${LOKI_URL:-http://127.0.0.1:3101}";

/// Whether the reference chain keeps the entry `truth` describes: every entry except the DEBUG
/// JSON and logfmt lines whose trace id the sampler's hash drops (it keeps 10% of DEBUG, keyed by
/// the `trace_id` that parse put into structured metadata, 32 hex digits). Plain lines have no
/// parsed level, so no rate applies to them.
pub fn keeps(truth: &EntryTruth) -> bool {
    if truth.level != Level::Debug || truth.format == Format::Plain {
        return true;
    }
    sample::keeps(format!("{:032x}", truth.trace_id).as_bytes(), DEBUG_RATE)
}

/// The sluice configuration `name` (one of [`crate::driver::KNOWN_CONFIGS`]) with its Loki sink
/// at `loki_url` and, for `chain-fanout` (which needs one; the others ignore it), its archive
/// sink at `archive`. An error for an unknown name or a fan-out without archive.
pub fn config_yaml(name: &str, loki_url: &str, archive: Option<&ArchiveTarget>) -> Result<String, String> {
    let url = scalar(loki_url);
    match name {
        "passthrough" => Ok(format!(
            "server:\n  max_body_size: 64MiB\n{QUEUE}sinks:\n  loki:\n    type: loki\n    url: {url}\n"
        )),
        "chain-wasm" => Ok(chain(RunMode::Wasm, &url, None)),
        "chain-native" => Ok(chain(RunMode::Native, &url, None)),
        "chain-fanout" => match archive {
            Some(archive) => Ok(chain(RunMode::Wasm, &url, Some(archive))),
            None => Err("chain-fanout needs an archive target".into()),
        },
        _ => Err(format!("unknown configuration {name:?}")),
    }
}

/// [`REFERENCE_CHAIN`] with its stages run as `run`, Loki at `url` (a YAML scalar), the
/// driver's server and queue settings, and the archive sink at `archive` if there is one.
fn chain(run: RunMode, url: &str, archive: Option<&ArchiveTarget>) -> String {
    let run = match run {
        RunMode::Wasm => "wasm",
        RunMode::Native => "native",
    };
    let mut yaml = format!(
        "# Generated by sluice-benches (chain.rs) from deploy/examples/reference-chain.yaml: stages run \
         `{run}`{}.\n{}",
        if archive.is_some() { ", S3 archive sink beside Loki" } else { "" },
        REFERENCE_CHAIN.replace(RUN_PLACEHOLDER, run).replace(LOKI_URL_PLACEHOLDER, url)
    );
    yaml = insert_after_line(&yaml, "server:", "  max_body_size: 64MiB\n");
    if let Some(archive) = archive {
        let sink = format!("  {ARCHIVE_SINK}:\n    type: archive\n{}", archive.sink_yaml());
        yaml = insert_after_line(&yaml, "sinks:", &sink);
        yaml = yaml.replacen("  sinks: [loki]\n", &format!("  sinks: [loki, {ARCHIVE_SINK}]\n"), 1);
    }
    if !yaml.ends_with('\n') {
        yaml.push('\n');
    }
    yaml.push_str(QUEUE);
    yaml
}

/// `text` with `insert` after the first line that is exactly `line` (a top-level key); unchanged
/// if there is none ([`check`] then fails).
fn insert_after_line(text: &str, line: &str, insert: &str) -> String {
    let mut out = String::with_capacity(text.len() + insert.len());
    let mut done = false;
    for l in text.split_inclusive('\n') {
        out.push_str(l);
        if !done && l.trim_end_matches(['\n', '\r']) == line {
            if !l.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(insert);
            done = true;
        }
    }
    out
}

/// Checks that `config` (parsed from [`config_yaml`]`(name, loki_url, archive)`) is what `name`
/// promises: the queue and body limit, the sinks (Loki at `loki_url`, and for the fan-out the
/// archive sink at `archive`'s `s3://` URL and endpoint, writing zstd NDJSON, which is what the
/// driver counts), and for the chains the five stages of the reference chain in order, each run
/// as the name says, on the default route.
pub fn check(
    name: &str,
    config: &Config,
    loki_url: &str,
    archive: Option<&ArchiveTarget>,
) -> Result<(), String> {
    if config.queue.max_entries != QUEUE_MAX_ENTRIES || config.queue.max_bytes.as_u64() != QUEUE_MAX_BYTES {
        return Err(format!("queue is {:?}, not 2000000 entries / 2GiB", config.queue));
    }
    if config.server.max_body_size.as_u64() != MAX_BODY_SIZE {
        return Err(format!("server.max_body_size is {}, not 64MiB", config.server.max_body_size));
    }
    match config.sinks.get("loki") {
        Some(SinkConfig::Loki(loki)) if loki.url == loki_url => {}
        other => return Err(format!("sink `loki` is not a Loki sink at {loki_url}: {other:?}")),
    }
    let fanout = name == "chain-fanout";
    let want_sinks: &[&str] = if fanout { &["loki", ARCHIVE_SINK] } else { &["loki"] };
    let sinks: Vec<&str> = config.sinks.keys().map(String::as_str).collect();
    let mut sorted = want_sinks.to_vec();
    sorted.sort_unstable();
    if sinks != sorted {
        return Err(format!("sinks are {sinks:?}, not {want_sinks:?}"));
    }
    if fanout {
        let Some(want) = archive else { return Err("chain-fanout needs an archive target".into()) };
        let Some(SinkConfig::Archive(sink)) = config.sinks.get(ARCHIVE_SINK) else {
            return Err(format!("sink `{ARCHIVE_SINK}` is not an archive sink"));
        };
        let url = sink.url.as_deref().unwrap_or_default();
        if !url.starts_with("s3://") || url != want.url || sink.s3.endpoint != want.s3.endpoint {
            return Err(format!(
                "sink `{ARCHIVE_SINK}` writes to {url:?} at {:?}, not to {} at {:?}",
                sink.s3.endpoint, want.url, want.s3.endpoint
            ));
        }
        if sink.format != ArchiveFormat::Ndjson || sink.compression != Compression::Zstd {
            return Err(format!(
                "sink `{ARCHIVE_SINK}` writes {:?} with {:?}, not zstd NDJSON",
                sink.format, sink.compression
            ));
        }
    }
    let run = match name {
        "passthrough" => {
            return if config.pipelines.is_empty() && config.routes.is_empty() {
                Ok(())
            } else {
                Err("passthrough has pipelines or routes".into())
            };
        }
        "chain-wasm" | "chain-fanout" => RunMode::Wasm,
        "chain-native" => RunMode::Native,
        _ => return Err(format!("unknown configuration {name:?}")),
    };
    let Some(route) = &config.default_route else { return Err("no default_route".into()) };
    if route.sinks != want_sinks || route.pipeline.as_deref() != Some("reference") {
        return Err(format!("default_route is {route:?}, not {want_sinks:?} through `reference`"));
    }
    let Some(pipeline) = config.pipelines.get("reference") else {
        return Err("no pipeline `reference`".into());
    };
    let stages: Vec<String> = pipeline.stages.iter().map(|s| s.plugin.display().to_string()).collect();
    if stages != STAGES {
        return Err(format!("stages are {stages:?}, not {STAGES:?}"));
    }
    if let Some(s) = pipeline.stages.iter().find(|s| s.run != run) {
        return Err(format!("stage {} runs {:?}, not {run:?}", s.plugin.display(), s.run));
    }
    let debug_rate =
        pipeline.stages.last().and_then(|s| s.config.pointer("/rates/debug")).and_then(|v| v.as_f64());
    if debug_rate != Some(DEBUG_RATE) {
        return Err(format!(
            "the sampler's DEBUG rate is {debug_rate:?}, not {DEBUG_RATE} as `keeps` assumes"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::KNOWN_CONFIGS;
    use crate::workload::{GenConfig, Generator};

    /// An archive target as the driver makes it (with a `$` in the secret).
    fn archive() -> ArchiveTarget {
        ArchiveTarget {
            url: format!("s3://{ARCHIVE_BUCKET}/{ARCHIVE_PREFIX}"),
            s3: S3Config {
                endpoint: Some("http://127.0.0.1:9".into()),
                region: Some("us-east-1".into()),
                path_style: Some(true),
                access_key_id: Some("key".into()),
                secret_access_key: Some("se$cret".into()),
                session_token: None,
            },
        }
    }

    #[test]
    fn every_config_parses_and_is_what_its_name_says() {
        let url = "http://127.0.0.1:9";
        let archive = archive();
        for name in KNOWN_CONFIGS {
            let yaml = config_yaml(name, url, Some(&archive)).expect("a known config");
            let config = Config::parse(&yaml, |_| None).unwrap_or_else(|e| panic!("{name}: {e}\n{yaml}"));
            check(name, &config, url, Some(&archive)).unwrap_or_else(|e| panic!("{name}: {e}\n{yaml}"));
            assert!(!yaml.contains("${SLUICE_PLUGIN_RUN") && !yaml.contains("${LOKI_URL"), "{name}:\n{yaml}");
        }
        assert!(config_yaml("chain-s3", url, Some(&archive)).is_err());
        assert!(config_yaml("chain-fanout", url, None).is_err());
        assert_eq!(config_yaml("chain-wasm", url, None), config_yaml("chain-wasm", url, Some(&archive)));

        let parse = |name| {
            Config::parse(&config_yaml(name, url, Some(&archive)).expect("known"), |_| None).expect("parses")
        };
        let native = parse("chain-native");
        assert!(native.pipelines["reference"].stages.iter().all(|s| s.run == RunMode::Native));
        let fanout = parse("chain-fanout");
        assert_eq!(fanout.default_route.as_ref().expect("route").sinks, ["loki", "archive"]);
        let SinkConfig::Archive(sink) = &fanout.sinks["archive"] else { panic!("not an archive sink") };
        assert_eq!(sink.url.as_deref(), Some("s3://bench-archive/fanout"));
        assert_eq!(sink.s3.endpoint.as_deref(), Some("http://127.0.0.1:9"));
        assert_eq!(sink.s3.access_key_id.as_deref(), Some("key"));
        assert_eq!(sink.s3.secret_access_key.as_deref(), Some("se$cret"));
        assert_eq!(sink.s3.path_style, Some(true));
        assert_eq!(sink.max_object_age, std::time::Duration::from_secs(300));
        let wasm = parse("chain-wasm");
        assert_eq!(wasm.pipelines["reference"].stages.len(), 5);
        assert!(wasm.pipelines["reference"].stages.iter().all(|s| s.run == RunMode::Wasm));
        // The checks catch a config that is not what it is called.
        assert!(check("chain-native", &wasm, url, None).is_err());
        assert!(check("chain-fanout", &wasm, url, Some(&archive)).is_err());
        assert!(check("chain-wasm", &wasm, "http://elsewhere", None).is_err());
        assert!(check("chain-fanout", &fanout, url, None).is_err());
        let elsewhere = ArchiveTarget { url: "s3://other/fanout".into(), ..archive.clone() };
        assert!(check("chain-fanout", &fanout, url, Some(&elsewhere)).is_err());
        let mut gzip = fanout.clone();
        if let Some(SinkConfig::Archive(sink)) = gzip.sinks.get_mut("archive") {
            sink.compression = Compression::Gzip;
        }
        assert!(check("chain-fanout", &gzip, url, Some(&archive)).is_err());
    }

    #[test]
    fn a_dollar_in_the_loki_url_survives_substitution() {
        let url = "http://127.0.0.1:9/a$b";
        let config =
            Config::parse(&config_yaml("chain-wasm", url, None).expect("known"), |_| None).expect("parses");
        check("chain-wasm", &config, url, None).expect("same url");
    }

    #[test]
    fn the_chain_keeps_all_but_about_nine_tenths_of_structured_debug() {
        let mut g = Generator::new(3, 1_767_225_600_000_000_000, GenConfig::default());
        let truth: Vec<EntryTruth> = (0..20).flat_map(|_| g.next_push().truth).collect();
        let dropped: Vec<&EntryTruth> = truth.iter().filter(|t| !keeps(t)).collect();
        assert!(dropped.iter().all(|t| t.level == Level::Debug && t.format != Format::Plain));
        let structured_debug =
            truth.iter().filter(|t| t.level == Level::Debug && t.format != Format::Plain).count() as f64;
        let share = dropped.len() as f64 / structured_debug;
        assert!((0.85..0.95).contains(&share), "dropped {share} of structured DEBUG");
        // All lines of one trace are kept or dropped together.
        let mut by_trace = std::collections::HashMap::new();
        for t in truth.iter().filter(|t| t.level == Level::Debug && t.format != Format::Plain) {
            assert_eq!(*by_trace.entry(t.trace_id).or_insert(keeps(t)), keeps(t));
        }
    }
}
