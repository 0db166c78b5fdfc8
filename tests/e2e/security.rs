//! Security (issue 15): what a client can reach through its push and its connection. Each test
//! plays the attacker: a tenant forging another's data, a push built to cost memory, clients that
//! hold connections open, and anyone who can reach the port calling the admin endpoints.

use std::time::Duration;

use sluice::proto::PushRequest;

use crate::support::push::{entry, one, proto_body, stream};
use crate::support::receiver::{Receiver, now_ns};
use crate::support::sluice::{Options, Sluice, loki_config};
use crate::support::{DELIVERY, ok_or_logs};

/// A client of tenant `attacker` that labels a stream `__tenant_id__="victim"` gets 400 naming
/// the label; nothing reaches `victim` in Loki, the write-ahead log or the archive, and the
/// attacker's ordinary stream in the same push is accepted as its own.
#[tokio::test]
async fn a_client_label_cannot_choose_the_tenant() {
    let loki = Receiver::start();
    let extra = r#"  archive: { type: archive, max_object_age: 1s }
wal: { ack: on_disk }
tenants:
  require_auth: true
  overrides:
    attacker: { auth: { bearer_token: attacker-token } }
    victim: { auth: { bearer_token: victim-token } }
default_route: { sinks: [loki, archive] }
"#;
    let sluice = Sluice::start(&loki_config(&loki.url(), extra)).await;
    let ts = now_ns();
    let push = PushRequest {
        streams: vec![
            stream(r#"{app="x", __tenant_id__="victim"}"#, vec![entry(ts, "forged into victim")]),
            stream(r#"{app="x"}"#, vec![entry(ts + 1, "attacker's own")]),
        ],
    };
    let headers = [("Content-Type", "application/x-protobuf"), ("Authorization", "Bearer attacker-token")];
    let resp = sluice.push_raw(Some("attacker"), &headers, proto_body(&push)).await;
    assert_eq!(resp.status, 400, "{}\n{}", resp.body, sluice.logs());
    assert!(resp.body.contains("__tenant_id__") && resp.body.contains("reserved"), "{}", resp.body);

    ok_or_logs(loki.wait_for(1, DELIVERY).await, &sluice);
    loki.settle(Duration::from_millis(500), DELIVERY).await;
    assert_eq!(loki.tenants(), ["attacker"], "{}", sluice.logs());
    assert_eq!(loki.lines("attacker"), ["attacker's own"]);

    // The archive holds the attacker's line under its own tenant and nothing of `victim`.
    let archive = sluice.data_dir().join("archive");
    let deadline = std::time::Instant::now() + DELIVERY;
    while !archive.join("tenant=attacker").exists() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(archive.join("tenant=attacker").exists(), "{}", sluice.logs());
    assert!(!archive.join("tenant=victim").exists(), "nothing archived for the victim");
    let (_, metrics) = sluice.get("/metrics").await;
    assert!(
        metrics.contains(
            r#"sluice_ingest_rejected_entries_total{tenant="attacker",reason="reserved_label_name"} 1"#
        ),
        "{metrics}"
    );
}

/// 2 M empty protobuf entries: a 4 MB body (a few hundred KB compressed) that would take
/// gigabytes decoded is refused with 413 before it is built, and sluice stays ready.
#[tokio::test]
async fn a_push_built_to_multiply_in_memory_gets_413_and_costs_nothing() {
    let loki = Receiver::start();
    let sluice = Sluice::start(&loki_config(&loki.url(), "")).await;
    let mut stream = vec![0x0a, 7];
    stream.extend_from_slice(br#"{a="1"}"#);
    for _ in 0..2_000_000 {
        stream.extend_from_slice(&[0x12, 0x00]);
    }
    let mut raw = vec![0x0a];
    prost::encoding::encode_varint(stream.len() as u64, &mut raw);
    raw.extend_from_slice(&stream);
    let body = snap::raw::Encoder::new().compress_vec(&raw).expect("snappy");
    let resp = sluice.push_raw(Some("t"), &[("Content-Type", "application/x-protobuf")], body).await;
    assert_eq!(resp.status, 413, "{}\n{}", resp.body, sluice.logs());
    assert!(resp.body.contains("max_entries_per_push"), "{}", resp.body);
    assert_eq!(sluice.get("/ready").await.0, 200);
    // An ordinary push right after is served.
    let ok = PushRequest { streams: vec![stream_of("after")] };
    assert_eq!(sluice.push_proto(Some("t"), &ok).await.status, 204);
    ok_or_logs(loki.wait_for(1, DELIVERY).await, &sluice);
}

fn stream_of(line: &str) -> sluice::proto::StreamAdapter {
    stream(r#"{app="x"}"#, vec![entry(now_ns(), line)])
}

/// Connections that send their headers a byte at a time are closed after
/// `server.header_read_timeout`; past `server.max_connections` a connection gets 503 at once; a
/// body trickled past `server.body_read_timeout` gets 408; through all of it `/ready` answers.
#[tokio::test]
async fn slow_clients_are_cut_off_and_cannot_crowd_out_the_rest() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let loki = Receiver::start();
    let extra = "server:\n  header_read_timeout: 2s\n  body_read_timeout: 1s\n  max_connections: 30\n";
    let sluice = Sluice::start(&loki_config(&loki.url(), extra)).await;
    let addr = sluice.addr;

    // 25 clients start a request and never finish its headers.
    let mut slow = Vec::new();
    for _ in 0..25 {
        let mut c = tokio::net::TcpStream::connect(addr).await.expect("connect");
        c.write_all(b"POST /loki/api/v1/push HTTP/1.1\r\nHost: x\r\n").await.expect("write");
        slow.push(c);
    }
    // Past the cap (25 slow + these 10 > 30), some connections are answered 503 right away.
    let mut extra_conns = Vec::new();
    for _ in 0..10 {
        extra_conns.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
    }
    let answers = futures_util::future::join_all(extra_conns.iter_mut().map(|c| async move {
        let mut buf = vec![0u8; 512];
        match tokio::time::timeout(Duration::from_millis(500), c.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => Some(String::from_utf8_lossy(&buf[..n]).to_string()),
            _ => None,
        }
    }))
    .await;
    let refused: Vec<String> = answers.into_iter().flatten().collect();
    assert!(refused.len() >= 5, "only {} of the connections past the cap were refused", refused.len());
    for text in &refused {
        assert!(text.starts_with("HTTP/1.1 503") && text.contains("max_connections"), "{text}");
    }
    drop(extra_conns);

    // The slow ones are closed by sluice once the header timeout passes.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    for (i, c) in slow.iter_mut().enumerate() {
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(2), c.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("slow connection {i} still open after the header timeout"))
            .unwrap_or(0);
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(n == 0 || text.starts_with("HTTP/1.1 408"), "connection {i}: {text}");
    }
    drop(slow);
    let started = std::time::Instant::now();
    assert_eq!(sluice.get("/ready").await.0, 200);
    assert!(started.elapsed() < Duration::from_secs(1), "/ready took {:?}", started.elapsed());

    // A body that trickles in is cut off with 408.
    let mut c = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = "POST /loki/api/v1/push HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n";
    c.write_all(head.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    for _ in 0..30 {
        let _ = c.write_all(b" ").await;
        let mut buf = [0u8; 512];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(100), c.read(&mut buf)).await {
            answer.extend_from_slice(&buf[..n]);
            break;
        }
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408") && text.contains("body_read_timeout"), "{text:?}");
}

/// Past `server.max_inflight_requests` a push is answered 503 with `Retry-After`, while
/// `/ready` is never counted against it.
#[tokio::test]
async fn requests_past_the_in_flight_cap_get_503() {
    use tokio::io::AsyncWriteExt;
    let loki = Receiver::start();
    let extra = "server:\n  max_inflight_requests: 2\n  body_read_timeout: 5s\n";
    let sluice = Sluice::start(&loki_config(&loki.url(), extra)).await;
    // Two pushes whose bodies are still coming hold both slots.
    let mut holding = Vec::new();
    for _ in 0..2 {
        let mut c = tokio::net::TcpStream::connect(sluice.addr).await.expect("connect");
        let head = "POST /loki/api/v1/push HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{";
        c.write_all(head.as_bytes()).await.expect("write");
        holding.push(c);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let resp = sluice.push_proto(Some("t"), &PushRequest { streams: vec![stream_of("third")] }).await;
    assert_eq!(resp.status, 503, "{}", resp.body);
    assert!(
        resp.body.contains("max_inflight_requests") && resp.retry_after.as_deref() == Some("1"),
        "{resp:?}"
    );
    assert_eq!(sluice.get("/ready").await.0, 200, "/ready is not counted");
    drop(holding);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let resp = sluice.push_proto(Some("t"), &PushRequest { streams: vec![stream_of("later")] }).await;
    assert_eq!(resp.status, 204, "{}", resp.body);
}

/// `POST /-/reload` is off without `server.admin_token`, and with one it needs that token.
#[tokio::test]
async fn the_reload_endpoint_needs_the_admin_token() {
    let loki = Receiver::start();
    let open = Sluice::start(&loki_config(&loki.url(), "")).await;
    let resp = open.client.post(open.url("/-/reload")).send().await.expect("answers");
    assert_eq!(resp.status().as_u16(), 403);
    assert!(resp.text().await.unwrap_or_default().contains("server.admin_token"));

    let guarded = Sluice::start_with(Options {
        config: Some(loki_config(&loki.url(), "server:\n  admin_token: \"${ADMIN_TOKEN}\"\n")),
        env: vec![("ADMIN_TOKEN".into(), "let-me-reload".into())],
        ..Default::default()
    })
    .await;
    let post = |token: Option<&str>| {
        let mut rb = guarded.client.post(guarded.url("/-/reload"));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        rb.send()
    };
    assert_eq!(post(None).await.expect("answers").status().as_u16(), 401);
    assert_eq!(post(Some("let-me")).await.expect("answers").status().as_u16(), 401);
    let resp = post(Some("let-me-reload")).await.expect("answers");
    assert_eq!(resp.status().as_u16(), 200, "{}", resp.text().await.unwrap_or_default());
}

/// With `server.admin_listen`, `/metrics` (every tenant's names and volumes) and the reload
/// endpoint are on that port only: the port clients push to answers 404 for them.
#[tokio::test]
async fn the_admin_port_keeps_metrics_and_reload_off_the_push_port() {
    let loki = Receiver::start();
    let admin = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port");
    let extra = format!("server: {{ admin_listen: \"{admin}\", admin_token: adm }}\n");
    let sluice = Sluice::start(&loki_config(&loki.url(), &extra)).await;
    let resp = sluice.push_proto(Some("team-a"), &one(r#"{app="x"}"#, vec![entry(now_ns(), "a line")])).await;
    assert_eq!(resp.status, 204, "{}", resp.body);
    let (status, body) = sluice.get("/metrics").await;
    assert_eq!(status, 404);
    assert!(body.contains("server.admin_listen"), "{body}");
    let resp = sluice.client.post(sluice.url("/-/reload")).bearer_auth("adm").send().await.expect("answers");
    assert_eq!(resp.status().as_u16(), 404);

    let on_admin = |path: &str| format!("http://{admin}{path}");
    let metrics = sluice.client.get(on_admin("/metrics")).send().await.expect("admin port answers");
    assert_eq!(metrics.status().as_u16(), 200);
    let text = metrics.text().await.expect("text");
    assert!(text.contains(r#"sluice_ingest_entries_total{tenant="team-a"}"#), "{text}");
    let reload = sluice.client.post(on_admin("/-/reload")).bearer_auth("adm").send().await.expect("answers");
    assert_eq!(reload.status().as_u16(), 200);
    assert_eq!(sluice.client.get(on_admin("/ready")).send().await.expect("ready").status().as_u16(), 200);
    let push = sluice.client.post(on_admin("/loki/api/v1/push")).body("{}").send().await.expect("answers");
    assert_eq!(push.status().as_u16(), 404, "no pushes on the admin port");
}

/// A reload replaces the tenants' credentials (a revoked token stops working at once), and a
/// reload that changes something only a restart applies answers 409 saying so.
#[tokio::test]
async fn a_reload_revokes_a_token_and_says_what_it_could_not_apply() {
    let loki = Receiver::start();
    let config = |token: &str, workers: u32| {
        loki_config(
            &loki.url(),
            &format!(
                "server: {{ admin_token: adm, workers: {workers} }}\nreload: {{ watch: false }}\ntenants:\n  require_auth: true\n  overrides:\n    a: {{ auth: {{ bearer_token: {token} }} }}\n"
            ),
        )
    };
    let sluice = Sluice::start(&config("old-token", 2)).await;
    let push = |token: &'static str| {
        let body = proto_body(&PushRequest { streams: vec![stream_of(token)] });
        let auth = format!("Bearer {token}");
        let sluice = &sluice;
        async move {
            let headers = [("Content-Type", "application/x-protobuf"), ("Authorization", auth.as_str())];
            sluice.push_raw(Some("a"), &headers, body).await.status
        }
    };
    let reload = || sluice.client.post(sluice.url("/-/reload")).bearer_auth("adm").send();
    assert_eq!(push("old-token").await, 204);

    std::fs::write(sluice.dir().join("sluice.yaml"), config("new-token", 2)).expect("rewrite");
    let resp = reload().await.expect("answers");
    assert_eq!(resp.status().as_u16(), 200, "{}", resp.text().await.unwrap_or_default());
    assert_eq!(push("old-token").await, 401, "the revoked token is refused after the reload");
    assert_eq!(push("new-token").await, 204);

    std::fs::write(sluice.dir().join("sluice.yaml"), config("new-token", 3)).expect("rewrite");
    let resp = reload().await.expect("answers");
    assert_eq!(resp.status().as_u16(), 409);
    let text = resp.text().await.unwrap_or_default();
    assert!(text.contains("`server`") && text.contains("NOT in effect"), "{text}");
}

/// What sluice writes under its data dir (the log, its cursors, the spool, the plugin cache) is
/// for its own user only: directories 0700, files 0600.
#[cfg(unix)]
#[tokio::test]
async fn the_data_dir_is_private_to_sluice() {
    use std::os::unix::fs::PermissionsExt;
    let loki = Receiver::start();
    let extra = "  archive: { type: archive, max_object_age: 1s }\nwal: { ack: on_disk }\n\
                 pipelines:\n  p:\n    stages:\n      - plugin: level\n\
                 default_route: { sinks: [loki, archive], pipeline: p }\n";
    let sluice = Sluice::start(&loki_config(&loki.url(), extra)).await;
    let resp = sluice.push_proto(Some("t"), &PushRequest { streams: vec![stream_of("private")] }).await;
    assert_eq!(resp.status, 204, "{}", resp.body);
    ok_or_logs(loki.wait_for(1, DELIVERY).await, &sluice);
    let mut seen = 0;
    let mut stack = vec![sluice.data_dir()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("list").flatten() {
            let path = entry.path();
            let mode = entry.metadata().expect("stat").permissions().mode() & 0o777;
            if path.is_dir() {
                assert_eq!(mode, 0o700, "{}", path.display());
                stack.push(path);
            } else {
                assert_eq!(mode & 0o077, 0, "{} is {mode:o}", path.display());
            }
            seen += 1;
        }
    }
    assert!(seen >= 4, "the log, its cursors, the spool and the cache: {seen} entries");
    assert_eq!(std::fs::metadata(sluice.data_dir()).expect("stat").permissions().mode() & 0o777, 0o700);
}

/// Guessing a tenant's password: after 20 failures within a minute from one address, that
/// address gets 429 for that tenant (the right password too) while other tenants are served.
/// And made-up tenant ids are bounded: past `tenants.max_active`, a new one gets 429.
#[tokio::test]
async fn guessing_credentials_is_throttled_and_made_up_tenants_are_bounded() {
    use base64::Engine as _;
    let loki = Receiver::start();
    let extra =
        "tenants:\n  max_active: 2\n  overrides:\n    guarded: { auth: { username: u, password: right } }\n";
    let sluice = Sluice::start(&loki_config(&loki.url(), extra)).await;
    let basic =
        |p: &str| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("u:{p}")));
    let push = |tenant: &'static str, auth: Option<String>| {
        let sluice = &sluice;
        async move {
            let body = proto_body(&PushRequest { streams: vec![stream_of(tenant)] });
            let mut headers = vec![("Content-Type", "application/x-protobuf")];
            let auth = auth.unwrap_or_default();
            if !auth.is_empty() {
                headers.push(("Authorization", auth.as_str()));
            }
            sluice.push_raw(Some(tenant), &headers, body).await
        }
    };
    for i in 0..20 {
        assert_eq!(push("guarded", Some(basic(&format!("guess-{i}")))).await.status, 401);
    }
    let throttled = push("guarded", Some(basic("right"))).await;
    assert_eq!(throttled.status, 429, "{}", throttled.body);
    assert!(throttled.body.contains("failed authentications"), "{}", throttled.body);
    assert!(
        throttled.retry_after.as_deref().is_some_and(|s| s.parse::<u64>().is_ok_and(|n| n > 1)),
        "{throttled:?}"
    );

    assert_eq!(push("one", None).await.status, 204, "other tenants are served");
    assert_eq!(push("two", None).await.status, 204);
    let third = push("three", None).await;
    assert_eq!(third.status, 429, "{}", third.body);
    assert!(third.body.contains("tenants.max_active"), "{}", third.body);
    assert_eq!(push("one", None).await.status, 204, "active ones go on");
}

/// Credentials name their tenant: a push without `X-Scope-OrgID` lands in the tenant whose token
/// it carries, and naming another tenant with that token is 401.
#[tokio::test]
async fn a_token_names_its_tenant_and_reaches_no_other() {
    let loki = Receiver::start();
    let extra = "tenants:\n  overrides:\n    team-a: { auth: { bearer_token: token-a } }\n";
    let sluice = Sluice::start(&loki_config(&loki.url(), extra)).await;
    let body = || proto_body(&PushRequest { streams: vec![stream_of("by token")] });
    let headers = [("Content-Type", "application/x-protobuf"), ("Authorization", "Bearer token-a")];
    let resp = sluice.push_raw(None, &headers, body()).await;
    assert_eq!(resp.status, 204, "{}", resp.body);
    let resp = sluice.push_raw(Some("someone-else"), &headers, body()).await;
    assert_eq!(resp.status, 401, "{}", resp.body);
    ok_or_logs(loki.wait_for(1, DELIVERY).await, &sluice);
    loki.settle(Duration::from_millis(300), DELIVERY).await;
    assert_eq!(loki.tenants(), ["team-a"]);
}
