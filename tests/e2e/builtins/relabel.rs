//! End-to-end tests of the built-in `relabel` plugin: the reference chain's relabel step (`pod`
//! into structured metadata, an allow-list of labels) and tenant rewriting, checked at the Loki
//! receiver.

use std::time::Duration;

use sluice::proto::PushRequest;

use crate::support::push::{entry, entry_md, stream};
use crate::support::receiver::{Labels, Receiver, Stored, now_ns};
use crate::support::sluice::{Sluice, loki_config};
use crate::support::{DELIVERY, ok_or_logs};

/// A sluice whose default route runs `relabel` with `config` (YAML, indented for `config:`) and
/// may move entries to tenant `payments` only.
async fn start(r: &Receiver, config: &str) -> Sluice {
    let extra = format!(
        r#"pipelines:
  main:
    stages:
      - plugin: relabel
        config:
{config}
default_route: {{ sinks: [loki], pipeline: main, tenants_out: [payments] }}
"#
    );
    Sluice::start(&loki_config(&r.url(), &extra)).await
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
}

fn stored(ts: i64, line: &str, metadata: &[(&str, &str)]) -> Stored {
    Stored {
        ts,
        line: line.to_string(),
        metadata: metadata.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
    }
}

#[tokio::test]
async fn reference_chain_moves_pod_to_metadata_and_keeps_the_allow_list() {
    let r = Receiver::start();
    let sluice = start(
        &r,
        "          rules:
            - action: to_metadata
              labels: [pod]
          labels_to_keep: [namespace, app, container, job, level, service_name]",
    )
    .await;
    let ts = now_ns();
    let push = PushRequest {
        streams: vec![
            stream(
                r#"{app="vllm-server", container="main", job="inference/vllm-server", level="info", namespace="inference", node="gpu-7", pod="vllm-server-7d9f-abcde", service_name="vllm-server"}"#,
                vec![
                    entry_md(ts, "request served", &[("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736")]),
                    entry(ts + 1, "kv cache block allocated"),
                ],
            ),
            stream(
                r#"{app="trainer", namespace="training", pod="trainer-0"}"#,
                vec![entry(ts + 2, "epoch 3 done")],
            ),
        ],
    };
    let resp = sluice.push_proto(Some("t"), &push).await;
    assert_eq!(resp.status, 204, "{}\n{}", resp.body, sluice.logs());
    ok_or_logs(r.wait_for(3, DELIVERY).await, &sluice);
    r.settle(Duration::from_millis(300), DELIVERY).await;

    let vllm = labels(&[
        ("app", "vllm-server"),
        ("container", "main"),
        ("job", "inference/vllm-server"),
        ("level", "info"),
        ("namespace", "inference"),
        ("service_name", "vllm-server"),
    ]);
    let trainer = labels(&[("app", "trainer"), ("namespace", "training")]);
    let mut got = r.entries("t");
    got.sort_by_key(|(_, e)| e.ts);
    assert_eq!(
        got,
        vec![
            (
                vllm.clone(),
                stored(
                    ts,
                    "request served",
                    &[("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736"), ("pod", "vllm-server-7d9f-abcde")]
                )
            ),
            (vllm, stored(ts + 1, "kv cache block allocated", &[("pod", "vllm-server-7d9f-abcde")])),
            (trainer, stored(ts + 2, "epoch 3 done", &[("pod", "trainer-0")])),
        ],
        "{}",
        sluice.logs()
    );
}

#[tokio::test]
async fn a_tenant_rule_sends_entries_to_another_tenant() {
    let r = Receiver::start();
    let sluice = start(
        &r,
        r#"          rules:
            - action: tenant
              source_labels: [namespace]
              regex: "team-(.+)""#,
    )
    .await;
    let ts = now_ns();
    let push = PushRequest {
        streams: vec![
            stream(
                r#"{app="api", namespace="team-payments"}"#,
                vec![entry(ts, "charge ok"), entry(ts + 1, "refund ok")],
            ),
            stream(r#"{app="web", namespace="platform"}"#, vec![entry(ts + 2, "page served")]),
            // `team-billing` is not in the route's tenants_out: the move is refused.
            stream(r#"{app="pay", namespace="team-billing"}"#, vec![entry(ts + 3, "not moved")]),
        ],
    };
    let resp = sluice.push_proto(Some("shared"), &push).await;
    assert_eq!(resp.status, 204, "{}\n{}", resp.body, sluice.logs());
    ok_or_logs(r.wait_for(4, DELIVERY).await, &sluice);
    r.settle(Duration::from_millis(300), DELIVERY).await;

    assert_eq!(r.tenants(), ["payments", "shared"], "{}", sluice.logs());
    let payments = labels(&[("app", "api"), ("namespace", "team-payments")]);
    let mut got = r.entries("payments");
    got.sort_by_key(|(_, e)| e.ts);
    assert_eq!(
        got,
        vec![(payments.clone(), stored(ts, "charge ok", &[])), (payments, stored(ts + 1, "refund ok", &[]))],
        "moved, without the reserved label"
    );
    let mut shared = r.entries("shared");
    shared.sort_by_key(|(_, e)| e.ts);
    assert_eq!(
        shared,
        vec![
            (labels(&[("app", "web"), ("namespace", "platform")]), stored(ts + 2, "page served", &[])),
            (labels(&[("app", "pay"), ("namespace", "team-billing")]), stored(ts + 3, "not moved", &[])),
        ],
        "a move to a tenant the route does not list stays, without the reserved label"
    );
    let (_, metrics) = sluice.get("/metrics").await;
    assert!(
        metrics.contains(r#"sluice_tenant_rewrites_refused_total{route="default",reason="not_allowed"} 1"#),
        "{metrics}"
    );
}
