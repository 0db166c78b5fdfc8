//! Bad input gets Loki's status and a message naming the problem; the service keeps serving;
//! Loki's partial acceptance holds (good streams of a rejected push are delivered).

use std::fmt::Write as _;

use sluice::proto::{EntryAdapter, LabelPairAdapter, PushRequest, Timestamp};

use crate::support::push::{self, Resp, entry, gzip, json_body, one, proto_body, stream};
use crate::support::receiver::{Receiver, now_ns};
use crate::support::sluice::{Sluice, loki_config};
use crate::support::{DELIVERY, ok_or_logs};

const DAY: i64 = 86_400 * 1_000_000_000;

enum Body {
    Proto(PushRequest),
    Json(String),
    Raw(Vec<(&'static str, &'static str)>, Vec<u8>),
}

struct Case {
    name: &'static str,
    body: Body,
    status: u16,
    /// Each must appear in the response body (case-insensitive); `a|b` means either.
    mentions: Vec<String>,
}

fn case(name: &'static str, body: Body, status: u16, mentions: &[&str]) -> Case {
    Case { name, body, status, mentions: mentions.iter().map(|s| s.to_string()).collect() }
}

fn md_entry(n: usize, value_len: usize) -> EntryAdapter {
    EntryAdapter {
        timestamp: Some(Timestamp::from_nanos(now_ns())),
        line: "metadata".into(),
        structured_metadata: (0..n)
            .map(|i| LabelPairAdapter { name: format!("k{i}"), value: "v".repeat(value_len) })
            .collect(),
        parsed: vec![],
    }
}

async fn send(sluice: &Sluice, body: &Body) -> Resp {
    match body {
        Body::Proto(req) => sluice.push_proto(Some("v"), req).await,
        Body::Json(j) => sluice.push_json(Some("v"), j, None).await,
        Body::Raw(headers, bytes) => sluice.push_raw(Some("v"), headers, bytes.clone()).await,
    }
}

#[tokio::test]
async fn bad_inputs_get_loki_statuses_and_messages_and_the_service_keeps_serving() {
    let loki = Receiver::start();
    let config = loki_config(&loki.url(), "server:\n  max_body_size: 1MiB\n  max_decompressed_size: 2MiB\n");
    let sluice = Sluice::start(&config).await;
    let now = now_ns();
    let sixteen = (0..16).map(|i| format!("l{i}=\"v\"")).collect::<Vec<_>>().join(", ");
    // 3 MiB of JSON that gzips to a few KiB: within max_body_size, beyond max_decompressed_size.
    let bomb = gzip(json_body(&[(&[("app", "x")], vec![(now, &"a".repeat(3 << 20), &[])])]).as_bytes());
    assert!(bomb.len() < 1 << 20);
    // Snappy states the decompressed length up front: 3 MiB of protobuf in a small body.
    let snappy_bomb = proto_body(&one(r#"{app="x"}"#, vec![entry(now, &"a".repeat(3 << 20))]));
    assert!(snappy_bomb.len() < 1 << 20);
    let cases = vec![
        case("malformed JSON", Body::Json(r#"{"streams": [ {"stream": "#.into()), 400, &[]),
        case(
            "numeric JSON timestamp",
            Body::Json(format!(r#"{{"streams":[{{"stream":{{"app":"x"}},"values":[[{now},"line"]]}}]}}"#)),
            400,
            &["timestamp"],
        ),
        case(
            "unparsable label string",
            Body::Proto(one(r#"{app="x""#, vec![entry(now, "l")])),
            400,
            &[r#"{app="x""#],
        ),
        case("invalid label name", Body::Proto(one(r#"{1app="x"}"#, vec![entry(now, "l")])), 400, &["1app"]),
        case("16 labels", Body::Proto(one(&format!("{{{sixteen}}}"), vec![entry(now, "l")])), 400, &["15"]),
        case("no labels", Body::Proto(one("{}", vec![entry(now, "l")])), 400, &[]),
        case(
            "duplicate label",
            Body::Proto(one(r#"{app="a", app="b"}"#, vec![entry(now, "l")])),
            400,
            &["app"],
        ),
        case(
            "line too long",
            Body::Proto(one(r#"{app="long"}"#, vec![entry(now, &"x".repeat(256_001))])),
            400,
            &["256000", r#"{app="long"}"#],
        ),
        case("too old", Body::Proto(one(r#"{app="old"}"#, vec![entry(now - 8 * DAY, "l")])), 400, &["old"]),
        case(
            "too new",
            Body::Proto(one(r#"{app="new"}"#, vec![entry(now + 3_600_000_000_000, "l")])),
            400,
            &["new|future|later"],
        ),
        case(
            "metadata too large",
            Body::Proto(one(r#"{app="md"}"#, vec![md_entry(1, 64_000)])),
            400,
            &["metadata"],
        ),
        case(
            "too many metadata pairs",
            Body::Proto(one(r#"{app="md"}"#, vec![md_entry(129, 1)])),
            400,
            &["metadata"],
        ),
        case(
            "body larger than max_body_size",
            Body::Raw(vec![("Content-Type", "application/json")], vec![b' '; (1 << 20) + 1]),
            413,
            &[],
        ),
        case(
            "gzip body inflating beyond max_decompressed_size",
            Body::Raw(vec![("Content-Type", "application/json"), ("Content-Encoding", "gzip")], bomb),
            413,
            &[],
        ),
        case(
            "snappy body inflating beyond max_decompressed_size",
            Body::Raw(vec![("Content-Type", "application/x-protobuf")], snappy_bomb),
            413,
            &[],
        ),
        case(
            "unsupported Content-Encoding",
            Body::Raw(vec![("Content-Type", "application/json"), ("Content-Encoding", "br")], b"{}".to_vec()),
            400,
            &["br"],
        ),
        case(
            "corrupt gzip",
            Body::Raw(
                vec![("Content-Type", "application/json"), ("Content-Encoding", "gzip")],
                b"not gzip".to_vec(),
            ),
            400,
            &[],
        ),
        case(
            "protobuf that is not snappy",
            Body::Raw(vec![("Content-Type", "application/x-protobuf")], b"\xff\xffjunk".to_vec()),
            400,
            &[],
        ),
    ];
    let mut failures = String::new();
    for c in &cases {
        let resp = send(&sluice, &c.body).await;
        if resp.status != c.status {
            let _ = writeln!(
                failures,
                "{}: expected {}, got {}: {}",
                c.name,
                c.status,
                resp.status,
                resp.body.trim()
            );
            continue;
        }
        if resp.body.trim().is_empty() {
            let _ = writeln!(failures, "{}: {} without a message", c.name, c.status);
        }
        for m in &c.mentions {
            let body = resp.body.to_lowercase();
            if !m.split('|').any(|alt| body.contains(&alt.to_lowercase())) {
                let _ =
                    writeln!(failures, "{}: message does not mention `{m}`: {}", c.name, resp.body.trim());
            }
        }
        // After every rejection the service still answers a good push (on a new connection:
        // keep-alive after an early 413 has its own test below).
        let good = one(r#"{app="alive"}"#, vec![entry(now_ns(), c.name)]);
        let resp = push::proto(&reqwest::Client::new(), &sluice.push_url(), Some("v"), &good, false).await;
        if resp.status != 204 {
            let _ = writeln!(failures, "after {}: good push got {}: {}", c.name, resp.status, resp.body);
        }
    }
    assert!(failures.is_empty(), "{failures}{}", sluice.logs());
    // Nothing of the bad pushes reached Loki; every good one did.
    ok_or_logs(loki.wait_for(cases.len(), DELIVERY).await, &sluice);
    loki.settle(std::time::Duration::from_millis(300), DELIVERY).await;
    let mut want: Vec<String> = cases.iter().map(|c| c.name.to_string()).collect();
    want.sort();
    assert_eq!(loki.all_lines(), want);
}

#[tokio::test]
async fn partial_acceptance_delivers_the_good_streams_of_a_rejected_push() {
    let loki = Receiver::start();
    let sluice = Sluice::start(&loki_config(&loki.url(), "")).await;
    let now = now_ns();
    let req = PushRequest {
        streams: vec![
            stream(r#"{app="good"}"#, vec![entry(now, "good 1"), entry(now + 1, "good 2")]),
            stream(r#"{bad-name="x"}"#, vec![entry(now, "lost: bad labels")]),
            stream(r#"{app="mixed"}"#, vec![entry(now - 8 * DAY, "lost: too old"), entry(now, "good 3")]),
        ],
    };
    let resp = sluice.push_proto(Some("p"), &req).await;
    assert_eq!(resp.status, 400, "{}", resp.body);
    assert!(resp.body.contains("bad-name"), "the message names the rejected stream: {}", resp.body);
    assert!(resp.body.contains("old"), "and the rejected entry's problem: {}", resp.body);
    ok_or_logs(loki.wait_for(3, DELIVERY).await, &sluice);
    loki.settle(std::time::Duration::from_millis(300), DELIVERY).await;
    assert_eq!(loki.lines("p"), vec!["good 1", "good 2", "good 3"]);
}

#[tokio::test]
async fn long_lines_are_truncated_when_configured() {
    let loki = Receiver::start();
    let config = loki_config(&loki.url(), "limits:\n  max_line_size: 1KB\n  max_line_size_truncate: true\n");
    let sluice = Sluice::start(&config).await;
    let line: String = (0..3000).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    let resp = sluice.push_proto(Some("t"), &one(r#"{app="trunc"}"#, vec![entry(now_ns(), &line)])).await;
    assert_eq!(resp.status, 204, "{}", resp.body);
    ok_or_logs(loki.wait_for(1, DELIVERY).await, &sluice);
    assert_eq!(loki.lines("t"), vec![line[..1000].to_string()]);
}

#[tokio::test]
async fn per_tenant_limits_override_the_global_ones() {
    let loki = Receiver::start();
    let config = loki_config(
        &loki.url(),
        "tenants:\n  overrides:\n    small:\n      limits: { max_line_size: 100B }\n",
    );
    let sluice = Sluice::start(&config).await;
    let line = "x".repeat(200);
    let req = one(r#"{app="lim"}"#, vec![entry(now_ns(), &line)]);
    assert_eq!(sluice.push_proto(Some("small"), &req).await.status, 400);
    assert_eq!(sluice.push_proto(Some("big"), &req).await.status, 204);
    ok_or_logs(loki.wait_for(1, DELIVERY).await, &sluice);
    assert_eq!(loki.tenants(), vec!["big"]);
}

/// Reads one HTTP/1.1 response (with `Content-Length`) from `sock`: (status, lowercased head).
async fn read_response(sock: &mut tokio::net::TcpStream) -> Result<(u16, String), String> {
    use tokio::io::AsyncReadExt as _;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let read = async {
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
                    return Ok((status, head));
                }
            }
            match sock.read(&mut chunk).await {
                Ok(0) => return Err(format!("connection closed after {} bytes", buf.len())),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), read)
        .await
        .map_err(|_| "no response within 5 s".to_string())?
}

/// HTTP/1.1 keep-alive after an early 413: the server must either say `Connection: close` or
/// answer the next request on the same connection. Without either, a log shipper's pooled
/// connection dies under its next push. Raw sockets make the outcome deterministic.
#[tokio::test]
async fn a_413_does_not_break_the_clients_next_request_on_the_same_connection() {
    use tokio::io::AsyncWriteExt as _;
    let loki = Receiver::start();
    let sluice = Sluice::start(&loki_config(&loki.url(), "server:\n  max_body_size: 64KiB\n")).await;
    let mut failures = Vec::new();
    for size in [(64 << 10) + 1, 256 << 10] {
        let mut sock = tokio::net::TcpStream::connect(sluice.addr).await.expect("connect");
        let head = format!(
            "POST /loki/api/v1/push HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             X-Scope-OrgID: k\r\nContent-Length: {size}\r\n\r\n",
            sluice.addr
        );
        let mut request = head.into_bytes();
        request.extend(std::iter::repeat_n(b' ', size));
        // The body fits in loopback socket buffers, so the write completes even if unread.
        if let Err(e) = sock.write_all(&request).await {
            failures.push(format!("{size}: writing the body: {e}"));
            continue;
        }
        let (status, head) = match read_response(&mut sock).await {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{size}: no 413: {e}"));
                continue;
            }
        };
        if status != 413 {
            failures.push(format!("{size}: expected 413, got {status}"));
        }
        if head.lines().any(|l| l.starts_with("connection:") && l.contains("close")) {
            continue;
        }
        let body = push::proto_body(&one(r#"{app="after-413"}"#, vec![entry(now_ns(), "next")]));
        let mut next = format!(
            "POST /loki/api/v1/push HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-protobuf\r\n\
             X-Scope-OrgID: k\r\nContent-Length: {}\r\n\r\n",
            sluice.addr,
            body.len()
        )
        .into_bytes();
        next.extend(body);
        let outcome = match sock.write_all(&next).await {
            Ok(()) => read_response(&mut sock).await,
            Err(e) => Err(format!("write: {e}")),
        };
        if !matches!(outcome, Ok((204, _))) {
            failures.push(format!(
                "{size}: the 413 kept the connection open (no `Connection: close`) but the next request on it \
                 failed: {outcome:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
