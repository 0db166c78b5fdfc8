//! The reference workload (`benches/src/workload.rs`) through the reference chain's redact
//! config: not one injected secret gets through, every e-mail is replaced by its keyed hash,
//! every IPv4 address loses its last octet, JSON lines stay JSON, and lines with nothing to
//! redact are left alone. The ignored test measures the cost per entry:
//!
//! ```sh
//! cargo test --release -p redact --test workload -- --ignored --nocapture
//! ```

use std::time::Instant;

use redact::Redact;
use regex::Regex;
use sluice_benches::workload::{Format, GenConfig, Generator, Push, SecretKind, Workload};
use sluice_sdk::native::NativePlugin;
use sluice_sdk::testing::{self, Status, TestBatch};

/// The reference chain's step 2 (shared/BENCHMARK.md): e-mails → keyed hash, IPv4 → last octet
/// dropped, every secret → `[REDACTED:<kind>]` (the default for secrets).
const REFERENCE: &str = r#"{"detectors": {"email": "hash", "ipv4": "truncate"}}"#;

/// 2026-01-01T00:00:00Z.
const START: i64 = 1_767_225_600_000_000_000;

fn pushes(seed: u64, n: usize) -> (Workload, Vec<Push>) {
    let mut generator = Generator::new(seed, START, GenConfig::default());
    let pushes = (0..n).map(|_| generator.next_push()).collect();
    (generator.workload().clone(), pushes)
}

/// A push as a test batch: its streams with their labels, entries in truth order.
fn batch(workload: &Workload, push: &Push) -> TestBatch {
    let mut batch = TestBatch::new();
    for s in &push.streams {
        let labels: Vec<(&str, &str)> =
            workload.streams[s.stream].labels.iter().map(|(n, v)| (*n, v.as_str())).collect();
        batch = batch.stream(&labels);
        for e in &s.entries {
            batch = batch.entry(e.ts_ns, &e.line, &[]);
        }
    }
    batch
}

fn lines(push: &Push) -> Vec<&str> {
    push.streams.iter().flat_map(|s| &s.entries).map(|e| e.line.as_str()).collect()
}

fn email_hash(email: &str) -> String {
    let hash = sluice_sdk::hash::keyed_hash(&testing::test_key(), email.to_ascii_lowercase().as_bytes());
    format!("email:{}", sluice_sdk::to_hex(&hash[..8]))
}

#[test]
fn not_one_secret_reaches_the_output_of_20000_reference_lines() {
    let (workload, pushes) = pushes(2026, 20);
    let email =
        Regex::new(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}").expect("regex");
    let ipv4 = Regex::new(r"\b(\d{1,3}\.\d{1,3}\.\d{1,3}\.)(\d{1,3})\b").expect("regex");
    let mut plugin = testing::plugin::<Redact>(REFERENCE);
    let (mut entries, mut secrets, mut emails, mut ips, mut untouched) = (0, [0usize; 4], 0, 0, 0);
    let mut false_positives = Vec::new();
    for push in &pushes {
        let out = testing::run(&mut plugin, &batch(&workload, push));
        let before = lines(push);
        assert_eq!(out.entries.len(), before.len());
        entries += before.len();
        for secret in &push.secrets {
            secrets[secret.kind as usize] += 1;
            if let Some(leak) = out.entries.iter().find(|e| e.line.contains(&secret.value)) {
                panic!("{:?} {:?} got through:\n{}", secret.kind, secret.value, leak.line);
            }
        }
        for ((truth, line), after) in push.truth.iter().zip(&before).zip(&out.entries) {
            let after = after_line(after);
            // `user:password@host` in a URL is no e-mail address (the password is a secret).
            for m in email.find_iter(line).filter(|m| !line[..m.start()].ends_with(':')) {
                emails += 1;
                assert!(!after.contains(m.as_str()), "{} got through:\n{after}", m.as_str());
                assert!(after.contains(&email_hash(m.as_str())), "no hash of {}:\n{after}", m.as_str());
            }
            for c in ipv4.captures_iter(line) {
                ips += 1;
                assert!(after.contains(&format!("{}0", &c[1])), "{} not truncated:\n{after}", &c[0]);
            }
            for c in ipv4.captures_iter(&after) {
                assert_eq!(&c[2], "0", "an address keeps its last octet:\n{after}");
            }
            if truth.secrets == 0 && after.contains("[REDACTED:") {
                false_positives.push(format!("{line}\n  → {after}"));
            }
            if truth.format == Format::Json {
                serde_json::from_str::<serde_json::Value>(&after).unwrap_or_else(|e| panic!("{e}:\n{after}"));
            }
            let nothing_to_redact =
                truth.secrets == 0 && !email.is_match(line) && !ipv4.is_match(line) && !line.contains("://");
            if nothing_to_redact {
                untouched += 1;
                if *line != after {
                    false_positives.push(format!("{line}\n  → {after}"));
                }
            }
        }
        // One replacement per occurrence (a plain line's traceback repeats its message).
        for kind in SecretKind::ALL {
            let event = match kind {
                SecretKind::Jwt => "jwt",
                SecretKind::AwsKey => "aws_access_key",
                SecretKind::UrlPassword => "url_password",
                SecretKind::CreditCard => "credit_card",
            };
            let occurrences: usize = push
                .secrets
                .iter()
                .filter(|s| s.kind == kind && (kind != SecretKind::AwsKey || s.value.starts_with("AKIA")))
                .map(|s| before[s.entry].matches(s.value.as_str()).count())
                .sum();
            assert_eq!(out.count(event), occurrences as u64, "{event} counted");
        }
    }
    assert!(
        false_positives.is_empty(),
        "{} lines changed without cause:\n{}",
        false_positives.len(),
        false_positives.join("\n")
    );
    assert_eq!(entries, 20_000);
    // The workload really carries every kind, many times.
    assert!(secrets.iter().all(|&n| n > 100), "secrets per kind: {secrets:?}");
    assert!(
        emails > 1_000 && ips > 2_000 && untouched > 10_000,
        "{emails} e-mails, {ips} addresses, {untouched} clean"
    );
    eprintln!(
        "{entries} entries: secrets per kind {secrets:?}, {emails} e-mails, {ips} IPv4 addresses, {untouched} lines left alone"
    );
}

fn after_line(e: &sluice_sdk::testing::OutEntry) -> String {
    assert_ne!(e.status, Status::Dropped);
    e.line.clone()
}

/// Nanoseconds per entry of `plugin` over the request buffers `requests`, best of a few rounds.
fn ns_per_entry(plugin: &mut NativePlugin<Redact>, requests: &[(Vec<u8>, usize)]) -> f64 {
    let entries: usize = requests.iter().map(|(_, n)| n).sum();
    let mut best = f64::INFINITY;
    for _ in 0..7 {
        let started = Instant::now();
        for (request, _) in requests {
            let response = plugin.process(request).expect("process");
            std::hint::black_box(response);
        }
        best = best.min(started.elapsed().as_nanos() as f64 / entries as f64);
    }
    best
}

/// Lines as batches of 1,000 entries in one stream.
fn requests(lines: &[&str]) -> Vec<(Vec<u8>, usize)> {
    lines
        .chunks(1000)
        .map(|chunk| {
            let batch = chunk.iter().fold(TestBatch::new().stream(&[("app", "bench")]), |b, l| b.line(l));
            (batch.encode(), chunk.len())
        })
        .collect()
}

#[test]
#[ignore = "a measurement: run in release with --ignored --nocapture"]
fn cost_per_entry_on_the_reference_workload() {
    let (workload, pushes) = pushes(7, 30);
    let mut all = Vec::new();
    let mut with_secret = Vec::new();
    let mut without_secret = Vec::new();
    let mut clean = Vec::new();
    let email = Regex::new(r"@").expect("regex");
    let ipv4 = Regex::new(r"\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b").expect("regex");
    for push in &pushes {
        for (truth, line) in push.truth.iter().zip(lines(push)) {
            all.push(line);
            if truth.secrets != 0 {
                with_secret.push(line);
            } else {
                without_secret.push(line);
                if !email.is_match(line) && !ipv4.is_match(line) {
                    clean.push(line);
                }
            }
        }
    }
    let pushes_as_requests: Vec<(Vec<u8>, usize)> =
        pushes.iter().map(|p| (batch(&workload, p).encode(), p.entry_count())).collect();
    let key = testing::test_key();
    let mut reference = NativePlugin::<Redact>::new(REFERENCE, key).expect("init");
    let mut defaults = NativePlugin::<Redact>::new("{}", key).expect("init");
    let mean = |lines: &[&str]| lines.iter().map(|l| l.len()).sum::<usize>() / lines.len().max(1);
    let rows = [
        (
            "reference config, reference pushes",
            ns_per_entry(&mut reference, &pushes_as_requests),
            all.len(),
            mean(&all),
        ),
        (
            "reference config, lines with a secret",
            ns_per_entry(&mut reference, &requests(&with_secret)),
            with_secret.len(),
            mean(&with_secret),
        ),
        (
            "reference config, lines without a secret",
            ns_per_entry(&mut reference, &requests(&without_secret)),
            without_secret.len(),
            mean(&without_secret),
        ),
        (
            "reference config, lines with nothing to redact",
            ns_per_entry(&mut reference, &requests(&clean)),
            clean.len(),
            mean(&clean),
        ),
        (
            "default config (secrets only), reference pushes",
            ns_per_entry(&mut defaults, &pushes_as_requests),
            all.len(),
            mean(&all),
        ),
    ];
    for (what, ns, n, len) in rows {
        eprintln!("{what:50} {ns:7.0} ns/entry  ({n} entries, mean {len} bytes)");
    }
}
