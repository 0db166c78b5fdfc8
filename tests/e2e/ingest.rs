//! Pushes in every supported encoding reach Loki intact: labels, timestamps, lines, structured
//! metadata.

use sluice::proto::PushRequest;

use crate::support::push::{entry, entry_md, json_body, stream};
use crate::support::receiver::{Labels, Receiver, now_ns};
use crate::support::sluice::{Sluice, loki_config};
use crate::support::{DELIVERY, ok_or_logs};

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[tokio::test]
async fn protobuf_snappy_push_is_delivered_intact() {
    let loki = Receiver::start();
    let sluice = Sluice::start(&loki_config(&loki.url(), "")).await;
    let t0 = now_ns() - 5_000_000_000;
    let req = PushRequest {
        streams: vec![
            stream(
                r#"{app="api", env="prod"}"#,
                vec![
                    entry(t0 + 1, "first line"),
                    entry_md(t0 + 2, "with metadata", &[("trace_id", "abc123"), ("user", "ünïcode")]),
                ],
            ),
            // Label values that need escaping must survive sluice's re-encoding.
            stream(r#"{app="quote\"back\\slash", z="2", a="1"}"#, vec![entry(t0 + 3, "escaped labels")]),
        ],
    };
    let resp = sluice.push_proto(Some("team-a"), &req).await;
    assert_eq!(resp.status, 204, "no Content-Encoding: {}\n{}", resp.body, sluice.logs());

    let req2 = PushRequest {
        streams: vec![stream(r#"{app="api", env="prod"}"#, vec![entry(t0 + 4, "snappy header")])],
    };
    let resp = sluice.push_proto_snappy_header(Some("team-a"), &req2).await;
    assert_eq!(resp.status, 204, "Content-Encoding: snappy: {}", resp.body);

    // Loki treats a push without Content-Type as protobuf.
    let req3 = PushRequest {
        streams: vec![stream(r#"{app="api", env="prod"}"#, vec![entry(t0 + 5, "no content type")])],
    };
    let resp = sluice.push_raw(Some("team-a"), &[], crate::support::push::proto_body(&req3)).await;
    assert_eq!(resp.status, 204, "no Content-Type: {}", resp.body);

    ok_or_logs(loki.wait_for(5, DELIVERY).await, &sluice);
    let mut got = loki.entries("team-a");
    got.sort_by_key(|(_, e)| e.ts);
    let api = labels(&[("app", "api"), ("env", "prod")]);
    let escaped = labels(&[("a", "1"), ("app", "quote\"back\\slash"), ("z", "2")]);
    let want = vec![
        (api.clone(), t0 + 1, "first line", vec![]),
        (api.clone(), t0 + 2, "with metadata", vec![("trace_id", "abc123"), ("user", "ünïcode")]),
        (escaped, t0 + 3, "escaped labels", vec![]),
        (api.clone(), t0 + 4, "snappy header", vec![]),
        (api, t0 + 5, "no content type", vec![]),
    ];
    assert_eq!(got.len(), want.len(), "{got:?}");
    for ((l, e), (wl, wts, wline, wmd)) in got.iter().zip(&want) {
        assert_eq!(l, wl);
        assert_eq!(e.ts, *wts, "timestamps keep nanosecond precision");
        assert_eq!(e.line, *wline);
        let mut md = e.metadata.clone();
        md.sort();
        let wmd: Vec<(String, String)> = wmd.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert_eq!(md, wmd, "structured metadata of {wline}");
    }
    // Sluice speaks Loki's protocol to Loki: protobuf with the tenant header.
    for r in loki.requests() {
        assert_eq!(r.tenant.as_deref(), Some("team-a"));
        assert_eq!(r.status, 204);
        assert_eq!(r.content_type.as_deref(), Some("application/x-protobuf"), "{r:?}");
        assert!(matches!(r.content_encoding.as_deref(), None | Some("snappy")), "{r:?}");
    }
    assert_eq!(loki.tenants(), vec!["team-a"]);
}

#[tokio::test]
async fn json_push_plain_gzip_and_deflate_is_delivered_intact() {
    let loki = Receiver::start();
    let sluice = Sluice::start(&loki_config(&loki.url(), "")).await;
    let t0 = now_ns() - 1_000_000_000;
    for (i, encoding) in [None, Some("gzip"), Some("deflate")].into_iter().enumerate() {
        let ts = t0 + i as i64;
        let line = format!("json {}", encoding.unwrap_or("plain"));
        let body = json_body(&[(
            &[("app", "web"), ("enc", encoding.unwrap_or("plain"))],
            vec![(ts, line.as_str(), &[("request_id", "r-1")])],
        )]);
        let resp = sluice.push_json(Some("j"), &body, encoding).await;
        assert_eq!(resp.status, 204, "{encoding:?}: {}", resp.body);
    }
    // A media type with parameters is still JSON.
    let body = json_body(&[(&[("app", "charset")], vec![(t0 + 10, "charset line", &[])])]);
    let resp = sluice
        .push_raw(Some("j2"), &[("Content-Type", "application/json; charset=utf-8")], body.into_bytes())
        .await;
    assert_eq!(resp.status, 204, "application/json; charset=utf-8: {}", resp.body);
    ok_or_logs(loki.wait_for(4, DELIVERY).await, &sluice);
    assert_eq!(loki.lines("j2"), vec!["charset line"]);
    let mut got = loki.entries("j");
    got.sort_by_key(|(_, e)| e.ts);
    for (i, enc) in ["plain", "gzip", "deflate"].iter().enumerate() {
        let (l, e) = &got[i];
        assert_eq!(l, &labels(&[("app", "web"), ("enc", enc)]));
        assert_eq!(e.ts, t0 + i as i64);
        assert_eq!(e.line, format!("json {enc}"));
        assert_eq!(e.metadata, vec![("request_id".to_string(), "r-1".to_string())]);
    }
}

#[tokio::test]
async fn many_streams_and_entries_arrive_exactly_once() {
    let loki = Receiver::start();
    let sluice = Sluice::start(&loki_config(&loki.url(), "")).await;
    let t0 = now_ns() - 60_000_000_000;
    let mut expected = Vec::new();
    for push in 0..10 {
        let streams = (0..5)
            .map(|s| {
                let entries = (0..20)
                    .map(|n| {
                        let line = format!("p{push} s{s} n{n}");
                        expected.push(line.clone());
                        entry(t0 + (push * 100 + n) as i64, &line)
                    })
                    .collect();
                stream(&format!(r#"{{app="bulk", shard="{s}"}}"#), entries)
            })
            .collect();
        let resp = sluice.push_proto(Some("bulk"), &PushRequest { streams }).await;
        assert_eq!(resp.status, 204, "{}", resp.body);
    }
    ok_or_logs(loki.wait_for(expected.len(), DELIVERY).await, &sluice);
    loki.settle(std::time::Duration::from_millis(300), DELIVERY).await;
    expected.sort();
    assert_eq!(loki.lines("bulk"), expected);
    assert_eq!(loki.duplicates(), 0, "no entry is sent twice when Loki accepts every request");
    // Order within a stream is kept.
    for s in 0..5 {
        let shard = s.to_string();
        let ts: Vec<i64> =
            loki.entries_where("bulk", &[("shard", shard.as_str())]).into_iter().map(|(_, e)| e.ts).collect();
        assert!(ts.windows(2).all(|w| w[0] < w[1]), "stream shard={s} out of order: {ts:?}");
    }
}
