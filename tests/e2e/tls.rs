//! TLS on the listener (`server.tls`): HTTPS with certificates the test makes, client
//! certificates that name their tenant (mTLS), and certificates renewed without a restart.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::certs::{Ca, Issued};
use crate::support::push::{self, entry, one, proto_body};
use crate::support::receiver::{Receiver, now_ns};
use crate::support::sluice::{Options, Sluice, loki_config, run_to_end, tls_client, validate};
use crate::support::{DELIVERY, ok_or_logs};

/// Writes the server's certificate and key (and the client CA) into `dir`; returns the YAML of
/// `server.tls` for them.
fn write_tls(dir: &Path, server: &Issued, client_ca: Option<&Ca>, client_auth: &str) -> String {
    std::fs::write(dir.join("tls.crt"), &server.cert_pem).expect("write cert");
    std::fs::write(dir.join("tls.key"), &server.key_pem).expect("write key");
    let mut yaml = format!(
        "server:\n  tls:\n    cert_file: {}\n    key_file: {}\n    reload_interval: 100ms\n",
        dir.join("tls.crt").display(),
        dir.join("tls.key").display()
    );
    if let Some(ca) = client_ca {
        std::fs::write(dir.join("client-ca.crt"), ca.cert_pem()).expect("write CA");
        yaml.push_str(&format!(
            "    client_ca_file: {}\n    client_auth: {client_auth}\n",
            dir.join("client-ca.crt").display()
        ));
    }
    yaml
}

async fn push_with(
    client: &reqwest::Client,
    sluice: &Sluice,
    headers: &[(&str, &str)],
    line: &str,
) -> push::Resp {
    let body = proto_body(&one(r#"{app="tls"}"#, vec![entry(now_ns(), line)]));
    let mut all = vec![("Content-Type", "application/x-protobuf")];
    all.extend_from_slice(headers);
    push::raw(client, &sluice.push_url(), None, &all, body).await
}

/// With `client_auth: optional`, a verified client certificate is its tenant's credential (no
/// `X-Scope-OrgID`, no token); clients without one authenticate with a token; a certificate
/// from another CA, plain HTTP, and a certificate used for another tenant are refused.
#[tokio::test]
async fn client_certificates_name_their_tenant_over_https() {
    let loki = Receiver::start();
    let (ca, clients, rogue) = (Ca::new("sluice test CA"), Ca::new("client CA"), Ca::new("rogue CA"));
    let certs = tempfile::tempdir().expect("temp dir");
    let tls = write_tls(certs.path(), &ca.server("sluice"), Some(&clients), "optional");
    let extra = format!(
        "{tls}tenants:\n  require_auth: true\n  overrides:\n    billing: {{ client_cert_common_names: [billing-alloy] }}\n    ops: {{ auth: {{ bearer_token: ops-token }} }}\n"
    );
    let billing = tls_client(&ca.cert_pem(), Some(&clients.client("billing-alloy").identity_pem()));
    let sluice = Sluice::start_with(Options {
        config: Some(loki_config(&loki.url(), &extra)),
        tls: Some(billing.clone()),
        ..Default::default()
    })
    .await;
    assert!(sluice.push_url().starts_with("https://"));

    let resp = push_with(&billing, &sluice, &[], "billing's by certificate").await;
    assert_eq!(resp.status, 204, "{}\n{}", resp.body, sluice.logs());
    let resp = push_with(&billing, &sluice, &[("X-Scope-OrgID", "ops")], "into ops").await;
    assert_eq!(resp.status, 401, "{}", resp.body);
    assert!(resp.body.contains("client certificate is not valid for tenant `ops`"), "{}", resp.body);

    let anonymous = tls_client(&ca.cert_pem(), None);
    let resp = push_with(&anonymous, &sluice, &[("Authorization", "Bearer ops-token")], "ops by token").await;
    assert_eq!(resp.status, 204, "{}", resp.body);
    let resp = push_with(&anonymous, &sluice, &[("X-Scope-OrgID", "billing")], "no credentials").await;
    assert_eq!(resp.status, 401, "{}", resp.body);
    assert!(resp.body.contains("client certificate"), "{}", resp.body);

    // A certificate with the right name from a CA sluice does not trust fails the handshake.
    let forged = tls_client(&ca.cert_pem(), Some(&rogue.client("billing-alloy").identity_pem()));
    let resp = push_with(&forged, &sluice, &[], "forged certificate").await;
    assert_eq!(resp.status, 0, "the handshake must fail: {}", resp.body);
    // Plain HTTP on the TLS port gets no answer a client could take for one.
    let plain = reqwest::Client::builder().no_proxy().build().expect("client");
    let http_url = sluice.push_url().replacen("https://", "http://", 1);
    let resp =
        push::raw(&plain, &http_url, Some("ops"), &[("Authorization", "Bearer ops-token")], vec![]).await;
    assert_eq!(resp.status, 0, "{}", resp.body);

    ok_or_logs(loki.wait_for(2, DELIVERY).await, &sluice);
    loki.settle(Duration::from_millis(300), DELIVERY).await;
    assert_eq!(loki.lines("billing"), ["billing's by certificate"]);
    assert_eq!(loki.lines("ops"), ["ops by token"]);
    let (_, metrics) = sluice.get("/metrics").await;
    let failures = crate::support::plugins::metric(&metrics, "sluice_tls_handshake_failures_total", &[]);
    assert!(
        failures.is_some_and(|n| n >= 2.0),
        "the forged and plain-HTTP handshakes are counted: {metrics}"
    );
}

/// A renewed certificate is served to new connections without a restart; a broken renewal (a
/// key that is not PEM) is refused, counted, and the certificate in use stays.
#[tokio::test]
async fn a_renewed_certificate_is_used_without_a_restart_and_a_broken_one_is_not() {
    let loki = Receiver::start();
    let (old_ca, new_ca) = (Ca::new("old CA"), Ca::new("new CA"));
    let certs = tempfile::tempdir().expect("temp dir");
    let tls = write_tls(certs.path(), &old_ca.server("sluice"), None, "");
    let trusts_old = tls_client(&old_ca.cert_pem(), None);
    let trusts_new = tls_client(&new_ca.cert_pem(), None);
    let sluice = Sluice::start_with(Options {
        config: Some(loki_config(&loki.url(), &tls)),
        tls: Some(trusts_old.clone()),
        ..Default::default()
    })
    .await;
    let ready = |client: reqwest::Client| {
        let url = sluice.url("/ready");
        async move { client.get(url).send().await.map(|r| r.status().as_u16()).unwrap_or(0) }
    };
    assert_eq!(ready(trusts_old.clone()).await, 200);
    assert_eq!(ready(trusts_new.clone()).await, 0, "not renewed yet");

    let renewed = new_ca.server("sluice");
    std::fs::write(certs.path().join("tls.key"), &renewed.key_pem).expect("write key");
    std::fs::write(certs.path().join("tls.crt"), &renewed.cert_pem).expect("write cert");
    let deadline = Instant::now() + DELIVERY;
    // A fresh client per try: a pooled connection would keep the old certificate.
    while ready(tls_client(&new_ca.cert_pem(), None)).await != 200 {
        assert!(Instant::now() < deadline, "the renewed certificate was not picked up\n{}", sluice.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ready(tls_client(&old_ca.cert_pem(), None)).await, 0, "the old certificate is gone");

    std::fs::write(certs.path().join("tls.key"), "not a key\n").expect("break the key");
    let metrics_client = tls_client(&new_ca.cert_pem(), None);
    let deadline = Instant::now() + DELIVERY;
    loop {
        let metrics = metrics_client.get(sluice.url("/metrics")).send().await.expect("metrics");
        let text = metrics.text().await.expect("text");
        let failed =
            crate::support::plugins::metric(&text, "sluice_tls_reloads_total", &[("result", "failed")]);
        if failed.is_some_and(|n| n >= 1.0) {
            break;
        }
        assert!(Instant::now() < deadline, "the broken key was not noticed: {text}\n{}", sluice.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        ready(tls_client(&new_ca.cert_pem(), None)).await,
        200,
        "the renewed certificate stays in use"
    );
    assert!(sluice.logs().contains("TLS files changed but cannot be used"), "{}", sluice.logs());
    let text =
        metrics_client.get(sluice.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    let expires =
        crate::support::plugins::metric(&text, "sluice_tls_certificate_expiry_timestamp_seconds", &[]);
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs_f64();
    assert!(expires.is_some_and(|t| t > now), "the expiry of the certificate in use: {text}");
}

/// With `client_auth: required`, a client without a certificate cannot connect; files that
/// cannot be used stop the start with a message naming them.
#[tokio::test]
async fn required_client_certificates_and_unusable_files() {
    let loki = Receiver::start();
    let (ca, clients) = (Ca::new("server CA"), Ca::new("client CA"));
    let certs = tempfile::tempdir().expect("temp dir");
    let tls = write_tls(certs.path(), &ca.server("sluice"), Some(&clients), "required");
    let with_cert = tls_client(&ca.cert_pem(), Some(&clients.client("anyone").identity_pem()));
    let sluice = Sluice::start_with(Options {
        config: Some(loki_config(&loki.url(), &tls)),
        tls: Some(with_cert.clone()),
        ..Default::default()
    })
    .await;
    let resp = push_with(&with_cert, &sluice, &[("X-Scope-OrgID", "t")], "with a certificate").await;
    assert_eq!(resp.status, 204, "{}", resp.body);
    let resp =
        push_with(&tls_client(&ca.cert_pem(), None), &sluice, &[("X-Scope-OrgID", "t")], "without").await;
    assert_eq!(resp.status, 0, "no certificate, no connection: {}", resp.body);
    ok_or_logs(loki.wait_for(1, DELIVERY).await, &sluice);
    assert_eq!(loki.lines("t"), ["with a certificate"]);

    // The key of another certificate, and a missing file.
    let other = ca.server("other");
    std::fs::write(certs.path().join("tls.key"), &other.key_pem).expect("write key");
    let config_file = certs.path().join("sluice.yaml");
    std::fs::write(&config_file, loki_config(&loki.url(), &tls)).expect("write config");
    let config = config_file.display().to_string();
    let out = run_to_end(&["run", "--config", &config, "--listen", "127.0.0.1:0"], certs.path());
    assert_ne!(out.code, Some(0));
    assert!(
        out.stderr.contains("server.tls") && out.stderr.contains("do not make a TLS configuration"),
        "{out:?}"
    );
    std::fs::remove_file(certs.path().join("client-ca.crt")).expect("remove");
    let out = run_to_end(&["run", "--config", &config, "--listen", "127.0.0.1:0"], certs.path());
    assert_ne!(out.code, Some(0));
    assert!(out.stderr.contains("client-ca.crt"), "the missing file is named: {out:?}");
    let (out, _dir) = validate(&loki_config(&loki.url(), &tls));
    assert_ne!(out.code, Some(0), "validate reads the TLS files too");
    assert!(out.stderr.contains("server.tls") && out.stderr.contains("client-ca.crt"), "{out:?}");
}
