//! Routing: tenant and selector matches, `continue`, the default route.

use std::time::Duration;

use sluice::proto::PushRequest;

use crate::support::push::{entry, stream};
use crate::support::receiver::{Receiver, now_ns};
use crate::support::sluice::Sluice;
use crate::support::{DELIVERY, ok_or_logs};

fn sink(name: &str, r: &Receiver) -> String {
    format!("  {name}: {{ type: loki, url: \"{}\", batch_wait: 100ms }}\n", r.url())
}

#[tokio::test]
async fn routes_match_tenants_and_selectors_with_continue_and_default() {
    let (a, b, c) = (Receiver::start(), Receiver::start(), Receiver::start());
    let config = format!(
        r#"sinks:
{}{}{}routes:
  - name: ops-tenant
    tenants: [ops]
    sinks: [a]
  - name: web-not-dev
    selector: '{{app="web", env!="dev"}}'
    sinks: [b]
  - name: api-copy
    selector: '{{app=~"api-.*"}}'
    sinks: [a]
    continue: true
  - name: api-not-experimental
    selector: '{{app=~"api-.*", team!~"exp.*"}}'
    sinks: [b]
default_route:
  sinks: [c]
"#,
        sink("a", &a),
        sink("b", &b),
        sink("c", &c)
    );
    let sluice = Sluice::start(&config).await;
    let now = now_ns();
    // (tenant, labels, line, receivers that must get it)
    let cases: &[(&str, &str, &str, &[&str])] = &[
        ("ops", r#"{app="web", env="prod"}"#, "ops web: tenant route wins", &["a"]),
        ("t", r#"{app="web", env="prod"}"#, "web prod", &["b"]),
        ("t", r#"{app="web"}"#, "web without env: != matches an absent label", &["b"]),
        ("t", r#"{app="web", env="dev"}"#, "web dev: default", &["c"]),
        ("t", r#"{app="api-users", team="core"}"#, "api core: continue to both", &["a", "b"]),
        ("t", r#"{app="api-users", team="experiments"}"#, "api exp: only the copy", &["a"]),
        ("t", r#"{app="apiary"}"#, "apiary: regex is anchored", &["c"]),
        ("t", r#"{app="x-api-1"}"#, "x-api-1: regex is anchored at the start", &["c"]),
    ];
    let mut expected = [Vec::new(), Vec::new(), Vec::new()];
    for (i, (tenant, labels, line, to)) in cases.iter().enumerate() {
        let req = PushRequest { streams: vec![stream(labels, vec![entry(now + i as i64, line)])] };
        let resp = sluice.push_proto(Some(tenant), &req).await;
        assert_eq!(resp.status, 204, "{line}: {}", resp.body);
        for r in *to {
            expected[(r.as_bytes()[0] - b'a') as usize].push(line.to_string());
        }
    }
    let receivers = [("a", &a), ("b", &b), ("c", &c)];
    for ((name, r), want) in receivers.iter().zip(expected.iter_mut()) {
        ok_or_logs(r.wait_for(want.len(), DELIVERY).await.map_err(|e| format!("sink {name}: {e}")), &sluice);
        want.sort();
    }
    for (_, r) in &receivers {
        r.settle(Duration::from_millis(300), DELIVERY).await;
    }
    for ((name, r), want) in receivers.iter().zip(&expected) {
        assert_eq!(&r.all_lines(), want, "sink {name}\n{}", sluice.logs());
    }
}

#[tokio::test]
async fn an_empty_default_route_drops_unmatched_streams() {
    let (a, b) = (Receiver::start(), Receiver::start());
    let config = format!(
        "sinks:\n{}{}routes:\n  - selector: '{{keep=\"yes\"}}'\n    sinks: [a]\ndefault_route:\n  sinks: []\n",
        sink("a", &a),
        sink("b", &b)
    );
    let sluice = Sluice::start(&config).await;
    let now = now_ns();
    let req = PushRequest {
        streams: vec![
            stream(r#"{keep="yes"}"#, vec![entry(now, "kept")]),
            stream(r#"{keep="no"}"#, vec![entry(now, "dropped")]),
        ],
    };
    let resp = sluice.push_proto(Some("t"), &req).await;
    assert_eq!(resp.status, 204, "dropping by route is not an error: {}", resp.body);
    ok_or_logs(a.wait_for(1, DELIVERY).await, &sluice);
    a.settle(Duration::from_millis(300), DELIVERY).await;
    assert_eq!(a.all_lines(), vec!["kept"]);
    assert_eq!(b.total(), 0);
    assert!(b.requests().is_empty());
}

#[tokio::test]
async fn without_a_default_route_unmatched_streams_go_to_every_sink() {
    let (a, b) = (Receiver::start(), Receiver::start());
    let config = format!(
        "sinks:\n{}{}routes:\n  - selector: '{{only=\"a\"}}'\n    sinks: [a]\n",
        sink("a", &a),
        sink("b", &b)
    );
    let sluice = Sluice::start(&config).await;
    let now = now_ns();
    let req = PushRequest {
        streams: vec![
            stream(r#"{only="a"}"#, vec![entry(now, "routed")]),
            stream(r#"{other="x"}"#, vec![entry(now, "unmatched")]),
        ],
    };
    assert_eq!(sluice.push_proto(Some("t"), &req).await.status, 204);
    ok_or_logs(a.wait_for(2, DELIVERY).await, &sluice);
    ok_or_logs(b.wait_for(1, DELIVERY).await, &sluice);
    a.settle(Duration::from_millis(300), DELIVERY).await;
    assert_eq!(a.all_lines(), vec!["routed", "unmatched"]);
    assert_eq!(b.all_lines(), vec!["unmatched"]);
}
