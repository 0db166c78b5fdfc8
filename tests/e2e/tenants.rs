//! Tenants: `X-Scope-OrgID` passes through, the default tenant, per-tenant authentication.

use base64::Engine as _;

use crate::support::push::{entry, one};
use crate::support::receiver::{Receiver, now_ns};
use crate::support::sluice::{Sluice, loki_config};
use crate::support::{DELIVERY, ok_or_logs};

#[tokio::test]
async fn tenant_header_passes_through_to_loki() {
    let loki = Receiver::start();
    let sluice = Sluice::start(&loki_config(&loki.url(), "")).await;
    for tenant in ["team-a", "team-b", "team-a"] {
        let resp = sluice.push_proto(Some(tenant), &one(r#"{app="x"}"#, vec![entry(now_ns(), tenant)])).await;
        assert_eq!(resp.status, 204, "{}", resp.body);
    }
    ok_or_logs(loki.wait_for(3, DELIVERY).await, &sluice);
    assert_eq!(loki.tenants(), vec!["team-a", "team-b"]);
    assert_eq!(loki.lines("team-a"), vec!["team-a", "team-a"]);
    assert_eq!(loki.lines("team-b"), vec!["team-b"]);
    for r in loki.requests() {
        assert!(r.tenant.is_some(), "every request to Loki carries X-Scope-OrgID: {r:?}");
    }
}

#[tokio::test]
async fn requests_without_a_tenant_go_to_fake() {
    let loki = Receiver::start();
    let sluice = Sluice::start(&loki_config(&loki.url(), "")).await;
    let resp = sluice.push_proto(None, &one(r#"{app="x"}"#, vec![entry(now_ns(), "no header")])).await;
    assert_eq!(resp.status, 204, "{}", resp.body);
    ok_or_logs(loki.wait_for(1, DELIVERY).await, &sluice);
    assert_eq!(loki.lines("fake"), vec!["no header"]);
}

#[tokio::test]
async fn the_default_tenant_is_configurable() {
    let loki = Receiver::start();
    let sluice = Sluice::start(&loki_config(&loki.url(), "tenants:\n  default: anonymous\n")).await;
    let resp = sluice.push_proto(None, &one(r#"{app="x"}"#, vec![entry(now_ns(), "no header")])).await;
    assert_eq!(resp.status, 204, "{}", resp.body);
    ok_or_logs(loki.wait_for(1, DELIVERY).await, &sluice);
    assert_eq!(loki.tenants(), vec!["anonymous"]);
}

#[tokio::test]
async fn sink_tenant_overrides_the_incoming_tenant() {
    let loki = Receiver::start();
    let config = format!(
        "sinks:\n  loki: {{ type: loki, url: \"{}\", batch_wait: 100ms, tenant: central }}\n",
        loki.url()
    );
    let sluice = Sluice::start(&config).await;
    let resp = sluice.push_proto(Some("edge"), &one(r#"{app="x"}"#, vec![entry(now_ns(), "moved")])).await;
    assert_eq!(resp.status, 204, "{}", resp.body);
    ok_or_logs(loki.wait_for(1, DELIVERY).await, &sluice);
    assert_eq!(loki.tenants(), vec!["central"]);
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

#[tokio::test]
async fn per_tenant_auth_rejects_missing_and_wrong_credentials() {
    let loki = Receiver::start();
    let extra = r#"tenants:
  require_auth: false
  overrides:
    secure:
      auth: { bearer_token: "${E2E_TOKEN}" }
    basic:
      auth: { username: alice, password: wonderland }
"#;
    let sluice = Sluice::start_with(crate::support::sluice::Options {
        config: Some(loki_config(&loki.url(), extra)),
        env: vec![("E2E_TOKEN".into(), "s3cret-token".into())],
        ..Default::default()
    })
    .await;
    let body =
        |line: &str| crate::support::push::proto_body(&one(r#"{app="auth"}"#, vec![entry(now_ns(), line)]));
    let proto = ("Content-Type", "application/x-protobuf");
    let cases: Vec<(&str, &str, Option<String>, u16)> = vec![
        ("secure", "no credentials", None, 401),
        ("secure", "wrong token", Some("Bearer nope".into()), 401),
        ("secure", "basic instead of bearer", Some(basic("alice", "wonderland")), 401),
        ("secure", "right token", Some("Bearer s3cret-token".into()), 204),
        ("basic", "no credentials", None, 401),
        ("basic", "wrong password", Some(basic("alice", "rabbit")), 401),
        ("basic", "right password", Some(basic("alice", "wonderland")), 204),
        ("open", "tenant without auth", None, 204),
    ];
    let mut failures = Vec::new();
    for (tenant, what, auth, status) in &cases {
        let line = format!("{tenant}: {what}");
        let mut headers = vec![proto];
        if let Some(a) = auth {
            headers.push(("Authorization", a.as_str()));
        }
        let resp = sluice.push_raw(Some(tenant), &headers, body(&line)).await;
        if resp.status != *status {
            failures.push(format!("{line}: expected {status}, got {}: {}", resp.status, resp.body));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    ok_or_logs(loki.wait_for(3, DELIVERY).await, &sluice);
    loki.settle(std::time::Duration::from_millis(300), DELIVERY).await;
    assert_eq!(loki.lines("secure"), vec!["secure: right token"]);
    assert_eq!(loki.lines("basic"), vec!["basic: right password"]);
    assert_eq!(loki.lines("open"), vec!["open: tenant without auth"]);
    // Credentials of clients are not forwarded to Loki.
    assert!(loki.requests().iter().all(|r| r.authorization.is_none()), "{:?}", loki.requests());
}

#[tokio::test]
async fn require_auth_rejects_tenants_without_credentials() {
    let loki = Receiver::start();
    let extra =
        "tenants:\n  require_auth: true\n  overrides:\n    known:\n      auth: { bearer_token: tok }\n";
    let sluice = Sluice::start(&loki_config(&loki.url(), extra)).await;
    let req = one(r#"{app="x"}"#, vec![entry(now_ns(), "x")]);
    assert_eq!(sluice.push_proto(Some("stranger"), &req).await.status, 401);
    assert_eq!(sluice.push_proto(None, &req).await.status, 401);
    let resp = sluice
        .push_raw(
            Some("known"),
            &[("Content-Type", "application/x-protobuf"), ("Authorization", "Bearer tok")],
            crate::support::push::proto_body(&req),
        )
        .await;
    assert_eq!(resp.status, 204, "{}", resp.body);
    ok_or_logs(loki.wait_for(1, DELIVERY).await, &sluice);
    assert_eq!(loki.tenants(), vec!["known"]);
}
