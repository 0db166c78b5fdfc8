//! End-to-end tests of the built-in `redact` plugin: the README's reference configuration (secrets
//! redacted, e-mails hashed under the stage's `hash_key`, IPv4 truncated), with every secret kind
//! in JSON, logfmt and plain lines, exact lines at the Loki receiver, hashes stable across pushes,
//! labels and metadata redacted, and the per-detector counters.

use std::time::Duration;

use sluice::proto::PushRequest;

use crate::support::plugins::metric;
use crate::support::push::{entry, entry_md, stream};
use crate::support::receiver::{Receiver, now_ns};
use crate::support::sluice::{Options, Sluice, loki_config};
use crate::support::{DELIVERY, ok_or_logs};

const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZS5tYXJ0aW4iLCJpYXQiOjE3MDAwMDAwMDAsInNjb3BlIjoiaW5mZXJlbmNlOndyaXRlIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
const AWS_ID: &str = "AKIAIOSFODNN7EXAMPLE";
const AWS_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCY+EXAMPLEKEY";
const DB_PASSWORD: &str = "Zx81LmQ0pW5rT2yU";
const CARD: &str = "4539 1488 0343 6467";
const GITHUB: &str = "ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8";
const PEM: &str = "-----BEGIN RSA PRIVATE KEY-----\\nMIIEpAIBAAKCAQEA1c7+9z5Pad7OejecsQ0bu3aumoy5NZ4v\\n-----END RSA PRIVATE KEY-----";

/// The stage's secret; the test derives the same key to know the hashes.
const HASH_SECRET: &str = "e2e redact key";

/// `email:<first 16 hex digits of the keyed hash of the lower-cased address>`.
fn email_hash(email: &str) -> String {
    let key = sluice_sdk::hash::derive_key(HASH_SECRET.as_bytes());
    let hash = sluice_sdk::hash::keyed_hash(&key, email.to_ascii_lowercase().as_bytes());
    format!("email:{}", sluice_sdk::to_hex(&hash[..8]))
}

async fn start(r: &Receiver) -> Sluice {
    let extra = r#"pipelines:
  main:
    stages:
      - plugin: redact
        on_error: drop
        hash_key: "${REDACT_E2E_KEY:-not the key the test expects}"
        config:
          detectors: { email: hash, ipv4: truncate }
default_route: { sinks: [loki], pipeline: main }
"#;
    let env = vec![("REDACT_E2E_KEY".to_string(), HASH_SECRET.to_string())];
    let config = Some(loki_config(&r.url(), extra));
    Sluice::start_with(Options { config, env, ..Default::default() }).await
}

#[tokio::test]
async fn redacts_every_secret_kind_and_hashes_emails_stably() {
    let r = Receiver::start();
    let sluice = start(&r).await;
    let ts = now_ns();
    let lines = [
        format!(
            r#"{{"level":"INFO","message":"completed request","authorization":"Bearer {JWT}","user_email":"alice.martin@example.com","client_ip":"10.23.45.67"}}"#
        ),
        format!(
            r#"time=2026-01-01T00:00:00Z level=warn msg="retrying (aws_access_key_id={AWS_ID} aws_secret_access_key={AWS_SECRET})" duration_ms=1234"#
        ),
        format!(
            "2026-01-01T00:00:00Z ERROR [db] connecting to postgres://feast:{DB_PASSWORD}@10.20.4.17:5432/feast"
        ),
        format!(r#"{{"level":"INFO","card_number":"{CARD}","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"}}"#),
        format!(r#"{{"level":"DEBUG","key":"{PEM}","token":"{GITHUB}"}}"#),
        "level=info msg=login user=Alice.Martin@Example.com password=hunter2".to_string(),
    ];
    let first = PushRequest {
        streams: vec![
            stream(
                r#"{app="api"}"#,
                lines.iter().enumerate().map(|(i, l)| entry(ts + i as i64, l)).collect(),
            ),
            stream(
                r#"{app="worker", owner="bob@mail.test"}"#,
                vec![entry_md(ts + 10, "job done", &[("db_auth", "password=s3cret"), ("peer", "10.1.2.3")])],
            ),
        ],
    };
    let resp = sluice.push_proto(Some("t"), &first).await;
    assert_eq!(resp.status, 204, "{}\n{}", resp.body, sluice.logs());
    ok_or_logs(r.wait_for(7, DELIVERY).await, &sluice);

    // A second push with the same address: the same hash.
    let second = PushRequest {
        streams: vec![stream(
            r#"{app="api"}"#,
            vec![entry(ts + 20, "welcome back alice.martin@example.com")],
        )],
    };
    let resp = sluice.push_proto(Some("t"), &second).await;
    assert_eq!(resp.status, 204, "{}\n{}", resp.body, sluice.logs());
    ok_or_logs(r.wait_for(8, DELIVERY).await, &sluice);
    r.settle(Duration::from_millis(300), DELIVERY).await;

    let alice = email_hash("alice.martin@example.com");
    assert_eq!(alice, email_hash("Alice.Martin@Example.com"), "case does not change the hash");
    let api: Vec<String> = r.entries_where("t", &[("app", "api")]).into_iter().map(|(_, e)| e.line).collect();
    assert_eq!(
        api,
        [
            format!(
                r#"{{"level":"INFO","message":"completed request","authorization":"Bearer [REDACTED:jwt]","user_email":"{alice}","client_ip":"10.23.45.0"}}"#
            ),
            r#"time=2026-01-01T00:00:00Z level=warn msg="retrying (aws_access_key_id=[REDACTED:aws_access_key] aws_secret_access_key=[REDACTED:aws_secret_key])" duration_ms=1234"#.to_string(),
            "2026-01-01T00:00:00Z ERROR [db] connecting to postgres://feast:[REDACTED:url_password]@10.20.4.0:5432/feast".to_string(),
            r#"{"level":"INFO","card_number":"[REDACTED:credit_card]","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"}"#.to_string(),
            r#"{"level":"DEBUG","key":"[REDACTED:private_key]","token":"[REDACTED:github_token]"}"#.to_string(),
            format!("level=info msg=login user={alice} password=[REDACTED:password]"),
            format!("welcome back {alice}"),
        ],
        "{}",
        sluice.logs()
    );
    for line in api.iter().filter(|l| l.starts_with('{')) {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }

    // Label values and structured metadata too: the worker's entry moved to the stream with the
    // hashed owner.
    let worker = r.entries_where("t", &[("app", "worker")]);
    assert_eq!(worker.len(), 1);
    let (labels, e) = &worker[0];
    assert_eq!(labels.get("owner"), Some(&email_hash("bob@mail.test")));
    assert_eq!(e.line, "job done");
    assert_eq!(
        e.metadata,
        [
            ("db_auth".to_string(), "password=[REDACTED:password]".to_string()),
            ("peer".to_string(), "10.1.2.0".to_string())
        ]
    );

    // Not one secret anywhere.
    let everything: Vec<String> = r
        .entries("t")
        .into_iter()
        .flat_map(|(l, e)| {
            let meta = e.metadata.into_iter().map(|(_, v)| v);
            l.into_values().chain(std::iter::once(e.line)).chain(meta).collect::<Vec<_>>()
        })
        .collect();
    let pem_body = "MIIEpAIBAAKCAQEA1c7+9z5Pad7OejecsQ0bu3aumoy5NZ4v";
    for secret in
        [JWT, AWS_ID, AWS_SECRET, DB_PASSWORD, CARD, GITHUB, pem_body, "hunter2", "s3cret", "@example.com"]
    {
        assert!(everything.iter().all(|t| !t.contains(secret)), "{secret} reached Loki: {everything:?}");
    }

    // Counted per detector: values replaced (the owner label once, for its stream and batch).
    let (status, text) = sluice.get("/metrics").await;
    assert_eq!(status, 200);
    let events = |event: &str| {
        metric(&text, "sluice_plugin_events_total", &[("stage", "main/redact"), ("event", event)])
    };
    let want = [
        ("jwt", 1.0),
        ("aws_access_key", 1.0),
        ("aws_secret_key", 1.0),
        ("url_password", 1.0),
        ("credit_card", 1.0),
        ("private_key", 1.0),
        ("github_token", 1.0),
        ("password", 2.0),
        ("email", 4.0),
        ("ipv4", 3.0),
    ];
    for (event, n) in want {
        assert_eq!(events(event), Some(n), "{event}:\n{text}");
    }
}
