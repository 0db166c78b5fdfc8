//! The reference chain of `../shared/BENCHMARK.md` — parse, redact, relabel, sample — as the
//! ready config `deploy/examples/reference-chain.yaml`, through the real binary, on generated
//! reference-workload pushes. The receiver must get exactly the entries the chain keeps (all but
//! the DEBUG lines whose `trace_id` the sampler's hash drops), with the allowed labels only, and
//! not one injected secret anywhere: not in a line, a label or structured metadata.

use std::path::Path;
use std::time::Duration;

use sluice_benches::chain::keeps;
use sluice_benches::workload::{Format, GenConfig, Generator, Push};

use crate::support::plugins::metric;
use crate::support::receiver::{Receiver, now_ns};
use crate::support::sluice::{Options, Sluice};
use crate::support::{DELIVERY, ok_or_logs};

/// The labels the chain keeps (its `labels_to_keep`).
const KEPT_LABELS: [&str; 6] = ["namespace", "app", "container", "job", "level", "service_name"];

fn config_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/reference-chain.yaml")
}

/// Runs the chain with its stages run as `run` (`wasm` or `native`).
async fn run_chain(run: &str) {
    let r = Receiver::start();
    let args = vec!["--config".into(), config_path().display().to_string(), "--loki-url".into(), r.url()];
    let env = vec![
        ("SLUICE_HASH_KEY".to_string(), "e2e chain key".to_string()),
        ("SLUICE_PLUGIN_RUN".to_string(), run.to_string()),
    ];
    let sluice = Sluice::start_with(Options { config: None, args, env, ..Default::default() }).await;
    let mut generator = Generator::new(7, now_ns() - 600_000_000_000, GenConfig::default());
    let pushes: Vec<Push> = (0..12).map(|_| generator.next_push()).collect();
    let workload = generator.workload();
    let mut expected = 0;
    let mut secrets = Vec::new();
    for push in &pushes {
        // Which entries the chain keeps: the sampler keeps 10% of DEBUG by its hash of the
        // `trace_id` that parse put into structured metadata (the benchmark's ground truth too).
        expected += push.truth.iter().filter(|t| keeps(t)).count();
        secrets.extend(push.secrets.iter().map(|s| s.value.clone()));
        let resp = sluice.push_proto(Some("fake"), &push.to_proto(workload)).await;
        assert_eq!(resp.status, 204, "{}\n{}", resp.body, sluice.logs());
    }
    let sent: usize = pushes.iter().map(Push::entry_count).sum();
    assert!(expected < sent && expected > sent * 8 / 10, "the sample drops some DEBUG: {expected} of {sent}");
    assert!(!secrets.is_empty(), "the workload injected secrets");
    ok_or_logs(r.wait_for(expected, DELIVERY * 2).await, &sluice);
    r.settle(Duration::from_millis(500), DELIVERY).await;
    let got = r.entries("fake");
    assert_eq!(got.len(), expected, "exactly the entries the chain keeps\n{}", sluice.logs());

    let mut leaks = Vec::new();
    for (labels, entry) in &got {
        let texts = std::iter::once(entry.line.as_str())
            .chain(labels.values().map(String::as_str))
            .chain(entry.metadata.iter().map(|(_, v)| v.as_str()));
        for text in texts {
            leaks.extend(secrets.iter().filter(|s| text.contains(s.as_str())).cloned());
        }
        for name in labels.keys() {
            assert!(
                KEPT_LABELS.contains(&name.as_str()),
                "label `{name}` is not on the allow-list: {labels:?}"
            );
        }
        assert!(labels.contains_key("app"), "{labels:?}");
    }
    assert!(
        leaks.is_empty(),
        "{} secrets reached Loki, e.g. {:?}",
        leaks.len(),
        &leaks[..leaks.len().min(3)]
    );

    // Parsed lines carry their level as a label, trace and request ids and the pod as metadata.
    let structured = got.iter().filter(|(_, e)| e.metadata.iter().any(|(n, _)| n == "trace_id")).count();
    let plain = pushes.iter().flat_map(|p| &p.truth).filter(|t| t.format == Format::Plain).count();
    assert_eq!(structured, expected - plain, "every JSON and logfmt line has its trace_id");
    for (labels, entry) in got.iter().filter(|(_, e)| e.metadata.iter().any(|(n, _)| n == "trace_id")) {
        let level = labels.get("level").map(String::as_str);
        assert!(matches!(level, Some("debug" | "info" | "warn" | "error")), "{labels:?} {}", entry.line);
        for name in ["request_id", "pod"] {
            assert!(entry.metadata.iter().any(|(n, _)| n == name), "no {name}: {:?}", entry.metadata);
        }
    }
    // The redaction really happened (not a lucky absence): each kind shows as its placeholder;
    // no email is left (they became hashes) and no IPv4 address keeps its last octet.
    let lines: Vec<&str> = got.iter().map(|(_, e)| e.line.as_str()).collect();
    for kind in ["aws_access_key", "aws_secret_key", "url_password", "credit_card"] {
        let placeholder = format!("[REDACTED:{kind}]");
        assert!(lines.iter().any(|l| l.contains(&placeholder)), "no {placeholder} in any line");
    }
    assert!(lines.iter().any(|l| l.contains("[REDACTED:jwt]") || l.contains("[REDACTED:bearer]")));
    let email = regex::Regex::new(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+\.[A-Za-z.]+").expect("regex");
    let full_ip = regex::Regex::new(r"\b\d{1,3}\.\d{1,3}\.\d{1,3}\.[1-9]\d{0,2}\b").expect("regex");
    for line in &lines {
        assert!(!email.is_match(line), "an email got through: {line}");
        assert!(!full_ip.is_match(line), "an IPv4 address kept its last octet: {line}");
    }

    // Every stage ran, as configured.
    let (_, text) = sluice.get("/metrics").await;
    for stage in ["parse-json", "parse-logfmt", "redact", "relabel", "sample"] {
        let batches =
            metric(&text, "sluice_plugin_batches_total", &[("stage", &format!("reference/{stage}"))]);
        assert!(batches.is_some_and(|b| b >= 12.0), "stage {stage}: {batches:?}");
    }
    let loaded = if run == "native" { "running natively" } else { "plugin loaded" };
    assert!(sluice.logs().contains(loaded), "{}", sluice.logs());
}

#[tokio::test]
async fn the_reference_chain_keeps_exactly_what_it_should_and_no_secret_gets_through() {
    run_chain("wasm").await;
}

#[tokio::test]
async fn the_reference_chain_compiled_in_gives_the_same_result() {
    run_chain("native").await;
}
