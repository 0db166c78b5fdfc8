//! Tenants: who a push belongs to (`X-Scope-OrgID`), whether its credentials are right, its
//! validation limits, and its ingestion-rate bucket.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use base64::Engine;
use http::HeaderMap;

use crate::config::{AckMode, AuthConfig, Config, Limits};
use crate::ingest::IngestError;
use crate::ingest::tls::ClientCert;

/// Resolved tenant settings, replaced whole by a reload (a revoked token stops working then),
/// and what a reload keeps: the tenants' rate buckets, which tenants are active, and which have
/// a metric series of their own.
#[derive(Debug)]
pub struct Tenants {
    settings: RwLock<Arc<Settings>>,
    buckets: Mutex<HashMap<Arc<str>, Bucket>>,
    active: Mutex<Active>,
    /// Tenants with metric series of their own; later ones are labelled [`OTHER_TENANTS`].
    labelled: Mutex<std::collections::HashSet<Arc<str>>>,
}

/// The `tenant` label of tenants past the metric-series cap.
pub const OTHER_TENANTS: &str = "__other__";

#[derive(Debug)]
struct Settings {
    default: Arc<str>,
    require_auth: bool,
    default_limits: Arc<Limits>,
    known: HashMap<String, Known>,
    max_active: usize,
    idle_after: std::time::Duration,
    /// The tenants each credential is configured for, by digest: a request without
    /// `X-Scope-OrgID` whose credentials are one tenant's is that tenant's.
    by_credential: HashMap<[u8; 32], Vec<Arc<str>>>,
}

/// Tenants without an overrides entry that pushed lately, with when they last did.
#[derive(Debug)]
struct Active {
    seen: HashMap<Arc<str>, Instant>,
    pruned: Instant,
}

#[derive(Debug)]
struct Known {
    name: Arc<str>,
    /// Digests of the credentials that are this tenant's (its `auth`, its client certificates'
    /// names); empty when it needs none.
    accepted: Vec<[u8; 32]>,
    /// Whether a client certificate is among them, for the message when none is sent.
    takes_cert: bool,
    limits: Arc<Limits>,
    ack: Option<AckMode>,
}

/// A tenant that passed authentication.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub name: Arc<str>,
    pub limits: Arc<Limits>,
    /// The tenant's own acknowledgement mode, if it has one.
    pub ack: Option<AckMode>,
}

impl Tenants {
    pub fn new(config: &Config) -> Self {
        Self {
            settings: RwLock::new(Arc::new(Settings::of(config))),
            buckets: Mutex::new(HashMap::new()),
            active: Mutex::new(Active { seen: HashMap::new(), pruned: Instant::now() }),
            labelled: Mutex::new(std::collections::HashSet::new()),
        }
    }

    /// Lets `tenant` push unless it is a tenant without an overrides entry and `max_active`
    /// such tenants are active already; forgets tenants idle for `idle_after` (rate buckets
    /// too).
    pub fn admit(&self, tenant: &Tenant) -> Result<(), IngestError> {
        self.admit_at(tenant, Instant::now())
    }

    fn admit_at(&self, tenant: &Tenant, now: Instant) -> Result<(), IngestError> {
        let s = self.settings();
        let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        if now.saturating_duration_since(active.pruned) >= PRUNE_EVERY {
            active.seen.retain(|_, at| now.saturating_duration_since(*at) < s.idle_after);
            active.pruned = now;
            let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
            buckets.retain(|t, _| active.seen.contains_key(t) || s.known.contains_key(&**t));
        }
        if s.known.contains_key(&*tenant.name) || tenant.name == s.default {
            return Ok(());
        }
        if let Some(at) = active.seen.get_mut(&tenant.name) {
            *at = now;
            return Ok(());
        }
        if active.seen.len() >= s.max_active {
            metrics::counter!("sluice_tenants_refused_total").increment(1);
            return Err(IngestError::TooManyTenants { limit: s.max_active, idle_after: s.idle_after });
        }
        active.seen.insert(Arc::clone(&tenant.name), now);
        Ok(())
    }

    /// The `tenant` label for `name` in metrics: its own for configured tenants, the default
    /// one and the first `max_active` others ever seen, [`OTHER_TENANTS`] after that, so the
    /// number of series stays bounded however many tenant ids clients make up.
    pub fn metric_label(&self, name: &Arc<str>) -> Arc<str> {
        let s = self.settings();
        if s.known.contains_key(&**name) || *name == s.default {
            return Arc::clone(name);
        }
        let mut labelled = self.labelled.lock().unwrap_or_else(|p| p.into_inner());
        if labelled.contains(name) {
            return Arc::clone(name);
        }
        if labelled.len() < s.max_active {
            labelled.insert(Arc::clone(name));
            return Arc::clone(name);
        }
        Arc::from(OTHER_TENANTS)
    }

    /// Applies `config`'s `tenants` and `limits` to the pushes that follow.
    pub fn reconfigure(&self, config: &Config) {
        *self.settings.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Settings::of(config));
    }

    fn settings(&self) -> Arc<Settings> {
        Arc::clone(&self.settings.read().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Settings {
    fn of(config: &Config) -> Self {
        let mut known = HashMap::new();
        let mut by_credential: HashMap<[u8; 32], Vec<Arc<str>>> = HashMap::new();
        for (name, t) in &config.tenants.overrides {
            let name: Arc<str> = name.as_str().into();
            let certs = t.client_cert_common_names.iter().map(|cn| digest(CERT, cn.as_bytes()));
            let accepted: Vec<[u8; 32]> =
                t.auth.as_ref().and_then(configured_digest).into_iter().chain(certs).collect();
            for d in &accepted {
                by_credential.entry(*d).or_default().push(Arc::clone(&name));
            }
            let entry = Known {
                name: Arc::clone(&name),
                accepted,
                takes_cert: !t.client_cert_common_names.is_empty(),
                limits: Arc::new(config.limits_for(&name)),
                ack: t.ack,
            };
            known.insert(name.to_string(), entry);
        }
        Self {
            by_credential,
            default: config.tenants.default.as_str().into(),
            require_auth: config.tenants.require_auth,
            default_limits: Arc::new(config.limits.clone()),
            known,
            max_active: config.tenants.max_active,
            idle_after: config.tenants.idle_after,
        }
    }
}

/// How often idle tenants are looked for.
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

impl Tenants {
    /// The tenant of a request, after checking its id and credentials: its `Authorization`
    /// header and the verified client certificate of its connection, if any.
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        cert: Option<&ClientCert>,
    ) -> Result<Tenant, IngestError> {
        let s = self.settings();
        let mut name = match headers.get("x-scope-orgid") {
            None => None,
            Some(v) => {
                let v = v.to_str().map_err(|_| unauthorized("X-Scope-OrgID is not valid text"))?.trim();
                check_tenant_id(v)?;
                Some(v)
            }
        };
        // Whose credentials these are: without `X-Scope-OrgID`, one tenant's credentials make
        // the request that tenant's; naming a tenant they are not for is refused. A client
        // certificate and a token of two different tenants are refused too.
        let from_cert = cert.and_then(|c| c.common_name.as_deref()).map(|cn| digest(CERT, cn.as_bytes()));
        let given: Vec<[u8; 32]> = from_cert.into_iter().chain(given_digest(headers)).collect();
        for (i, d) in given.iter().enumerate() {
            let Some(owners) = s.by_credential.get(d) else { continue };
            match name {
                None if owners.len() == 1 => name = Some(&*owners[0]),
                Some(n) if !owners.iter().any(|o| **o == *n) => {
                    return Err(unauthorized(if i == 0 && from_cert.is_some() {
                        format!(
                            "the client certificate is not valid for tenant `{n}`: it is another tenant's"
                        )
                    } else {
                        format!(
                            "the credentials in the Authorization header are not valid for tenant `{n}`: they are another tenant's"
                        )
                    }));
                }
                _ => {}
            }
        }
        let known = s.known.get(name.unwrap_or(&s.default));
        match known.filter(|k| !k.accepted.is_empty()) {
            Some(k) if given.iter().any(|g| k.accepted.iter().any(|a| digests_equal(g, a))) => {}
            Some(k) => {
                let sent = headers
                    .get(http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| !v.is_empty());
                return Err(unauthorized(match (sent, k.takes_cert) {
                    (true, _) => "the credentials in the Authorization header are not valid for this tenant",
                    (false, false) => "this tenant requires credentials: send an Authorization header",
                    (false, true) => {
                        "this tenant requires credentials: connect with its client certificate or send an Authorization header"
                    }
                }));
            }
            None if s.require_auth => {
                return Err(unauthorized(format!(
                    "tenant `{}` is not allowed: tenants.require_auth is on and it has no auth entry",
                    name.unwrap_or(&s.default)
                )));
            }
            None => {}
        }
        Ok(match (known, name) {
            (Some(k), _) => Tenant { name: Arc::clone(&k.name), limits: Arc::clone(&k.limits), ack: k.ack },
            (None, Some(n)) => Tenant { name: n.into(), limits: Arc::clone(&s.default_limits), ack: None },
            (None, None) => {
                Tenant { name: Arc::clone(&s.default), limits: Arc::clone(&s.default_limits), ack: None }
            }
        })
    }

    /// Takes `bytes` from the tenant's token bucket, if its rate limit is on.
    pub fn admit_rate(&self, tenant: &Tenant, bytes: usize) -> Result<(), IngestError> {
        let rate = tenant.limits.ingestion_rate.as_u64();
        if rate == 0 {
            return Ok(());
        }
        let burst = match tenant.limits.ingestion_burst_size.as_u64() {
            0 => rate,
            b => b,
        };
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = buckets.entry(Arc::clone(&tenant.name)).or_insert_with(|| Bucket::full(burst));
        if bucket.take(bytes as f64, rate as f64, burst as f64, Instant::now()) {
            Ok(())
        } else {
            Err(IngestError::RateLimited { tenant: tenant.name.to_string(), rate, bytes })
        }
    }
}

fn unauthorized(message: impl Into<String>) -> IngestError {
    IngestError::Unauthorized(message.into())
}

/// Loki's tenant id rules: at most 150 bytes of `[a-zA-Z0-9!\-_.*'()]`, and not `.` or `..`.
pub fn is_valid_tenant_id(id: &str) -> bool {
    let ok_char = |b: u8| b.is_ascii_alphanumeric() || b"!-_.*'()".contains(&b);
    !(id.is_empty() || id.len() > 150 || id == "." || id == ".." || !id.bytes().all(ok_char))
}

fn check_tenant_id(id: &str) -> Result<(), IngestError> {
    if !is_valid_tenant_id(id) {
        return Err(unauthorized(format!(
            "invalid tenant id `{}` in X-Scope-OrgID: use 1 to 150 characters of a-z, A-Z, 0-9 and !-_.*'(), not `.` or `..`",
            id.escape_default()
        )));
    }
    Ok(())
}

/// Digests of equal length, compared without leaking where they differ.
fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What a client certificate's common name is hashed under, apart from tokens and passwords.
const CERT: &[u8] = b"client-cert-cn";

/// The digest of configured credentials, as [`given_digest`] computes it for a request's.
fn configured_digest(auth: &AuthConfig) -> Option<[u8; 32]> {
    match (&auth.bearer_token, &auth.username, &auth.password) {
        (Some(token), None, None) => Some(digest(b"bearer", token.as_bytes())),
        (None, Some(user), Some(pass)) => Some(digest(b"basic", format!("{user}:{pass}").as_bytes())),
        _ => None,
    }
}

/// The digest of a request's `Authorization` header (bearer token, or basic `user:password`).
fn given_digest(headers: &HeaderMap) -> Option<[u8; 32]> {
    let given = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    if let Some(token) = given.strip_prefix("Bearer ") {
        return Some(digest(b"bearer", token.as_bytes()));
    }
    let pair = base64::engine::general_purpose::STANDARD.decode(given.strip_prefix("Basic ")?.trim()).ok()?;
    Some(digest(b"basic", &pair))
}

fn digest(kind: &[u8], secret: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(kind);
    h.update(b"\0");
    h.update(secret);
    *h.finalize().as_bytes()
}

/// Compares two secrets without leaking where they differ or how long the expected one is:
/// both are hashed first, and the fixed-size digests compared in constant time.
pub(crate) fn secrets_equal(given: &[u8], expected: &[u8]) -> bool {
    let (a, b) = (blake3::hash(given), blake3::hash(expected));
    digests_equal(a.as_bytes(), b.as_bytes())
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(burst: u64) -> Self {
        Self { tokens: burst as f64, at: Instant::now() }
    }

    /// Refills for the time passed, then takes `amount` if there is that much.
    fn take(&mut self, amount: f64, rate: f64, burst: f64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.at = now;
        if amount <= self.tokens {
            self.tokens -= amount;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn tenants(yaml: &str) -> Tenants {
        let config = Config::parse(yaml, |_| None).expect("parses");
        Tenants::new(&config)
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).expect("header"));
        }
        h
    }

    #[test]
    fn tenant_from_header_or_default_with_valid_ids_only() {
        let t = tenants("tenants: { default: anon }");
        assert_eq!(&*t.authenticate(&headers(&[]), None).expect("default").name, "anon");
        assert_eq!(
            &*t.authenticate(&headers(&[("x-scope-orgid", "team-a")]), None).expect("ok").name,
            "team-a"
        );
        for bad in ["..", "a/b", "a b", &"x".repeat(151)] {
            let e = t.authenticate(&headers(&[("x-scope-orgid", bad)]), None).expect_err(bad);
            assert_eq!(e.status(), http::StatusCode::UNAUTHORIZED);
            assert!(e.to_string().contains("invalid tenant id"), "{e}");
        }
    }

    #[test]
    fn per_tenant_credentials() {
        let t = tenants(
            "tenants: { overrides: { a: { auth: { bearer_token: tok } }, b: { auth: { username: u, password: p } } } }",
        );
        let a = |auth: Option<&str>| {
            let mut h = headers(&[("x-scope-orgid", "a")]);
            if let Some(v) = auth {
                h.insert("authorization", HeaderValue::from_str(v).expect("header"));
            }
            t.authenticate(&h, None)
        };
        assert!(a(Some("Bearer tok")).is_ok());
        assert!(a(Some("Bearer nope")).expect_err("wrong").to_string().contains("not valid"));
        assert!(a(None).expect_err("missing").to_string().contains("requires credentials"));
        let basic = base64::engine::general_purpose::STANDARD.encode("u:p");
        let h = headers(&[("x-scope-orgid", "b"), ("authorization", &format!("Basic {basic}"))]);
        assert!(t.authenticate(&h, None).is_ok());
        assert!(
            t.authenticate(&headers(&[("x-scope-orgid", "open")]), None).is_ok(),
            "unlisted tenants are open"
        );

        let strict =
            tenants("tenants: { require_auth: true, overrides: { a: { auth: { bearer_token: tok } } } }");
        let e = strict.authenticate(&headers(&[("x-scope-orgid", "open")]), None).expect_err("not listed");
        assert!(e.to_string().contains("require_auth"), "{e}");
    }

    #[test]
    fn tenants_without_an_entry_are_bounded_and_forgotten_when_idle() {
        let t = tenants("tenants: { max_active: 2, idle_after: 1m, overrides: { known: {} } }");
        let tenant = |name: &str| t.authenticate(&headers(&[("x-scope-orgid", name)]), None).expect("valid");
        let start = Instant::now();
        let at = |s: u64| start + std::time::Duration::from_secs(s);
        assert!(t.admit_at(&tenant("a"), at(0)).is_ok());
        assert!(t.admit_at(&tenant("b"), at(1)).is_ok());
        let e = t.admit_at(&tenant("c"), at(2)).expect_err("a third");
        assert_eq!(e.status(), http::StatusCode::TOO_MANY_REQUESTS);
        assert!(e.to_string().contains("tenants.max_active"), "{e}");
        assert!(t.admit_at(&tenant("a"), at(3)).is_ok(), "active ones go on");
        assert!(t.admit_at(&tenant("known"), at(3)).is_ok(), "configured tenants are not counted");
        assert!(t.admit_at(&tenant("fake"), at(3)).is_ok(), "nor is the default one");
        // `b` idles past a minute (a is refreshed): `c` gets its place.
        assert!(t.admit_at(&tenant("a"), at(50)).is_ok());
        assert!(t.admit_at(&tenant("c"), at(62)).is_ok());

        let labels: Vec<String> = ["a", "b", "c", "known", "fake", "a"]
            .iter()
            .map(|n| t.metric_label(&Arc::from(*n)).to_string())
            .collect();
        assert_eq!(labels, ["a", "b", OTHER_TENANTS, "known", "fake", "a"]);
    }

    #[test]
    fn credentials_name_their_tenant_and_cannot_reach_another() {
        let t = tenants(
            "tenants: { overrides: { a: { auth: { bearer_token: tok-a } }, b: { auth: { username: u, password: p } }, \
             s1: { auth: { bearer_token: shared } }, s2: { auth: { bearer_token: shared } } } }",
        );
        let name = |pairs: &[(&'static str, &str)]| {
            t.authenticate(&headers(pairs), None).map(|t| t.name.to_string())
        };
        let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("u:p"));
        assert_eq!(name(&[("authorization", "Bearer tok-a")]).expect("a's token"), "a", "no header needed");
        assert_eq!(name(&[("authorization", &basic)]).expect("b's user"), "b");
        let e = name(&[("authorization", "Bearer tok-a"), ("x-scope-orgid", "open")])
            .expect_err("a's token for open");
        assert!(e.to_string().contains("another tenant's"), "{e}");
        assert!(name(&[("authorization", "Bearer tok-a"), ("x-scope-orgid", "b")]).is_err());
        // Credentials shared by two tenants name neither: the header must.
        assert_eq!(name(&[("authorization", "Bearer shared")]).expect("default tenant"), "fake");
        assert_eq!(
            name(&[("authorization", "Bearer shared"), ("x-scope-orgid", "s2")]).expect("named"),
            "s2"
        );
        // Unknown credentials change nothing.
        assert_eq!(
            name(&[("authorization", "Bearer nobody"), ("x-scope-orgid", "open")]).expect("open"),
            "open"
        );
    }

    #[test]
    fn a_client_certificate_names_its_tenant_and_cannot_reach_another() {
        let t = tenants(
            "tenants: { require_auth: true, overrides: { billing: { client_cert_common_names: [billing-alloy] }, \
             both: { auth: { bearer_token: tok }, client_cert_common_names: [both-cn] } } }",
        );
        let cert = |cn: Option<&str>| ClientCert { common_name: cn.map(str::to_string) };
        let name = |pairs: &[(&'static str, &str)], c: Option<ClientCert>| {
            t.authenticate(&headers(pairs), c.as_ref()).map(|t| t.name.to_string())
        };
        assert_eq!(name(&[], Some(cert(Some("billing-alloy")))).expect("the cert's tenant"), "billing");
        assert_eq!(
            name(&[("x-scope-orgid", "billing")], Some(cert(Some("billing-alloy")))).expect("named"),
            "billing"
        );
        let e = name(&[("x-scope-orgid", "both")], Some(cert(Some("billing-alloy")))).expect_err("another's");
        assert!(e.to_string().contains("client certificate is not valid for tenant `both`"), "{e}");
        let e = name(&[("x-scope-orgid", "billing")], None).expect_err("no certificate");
        assert!(e.to_string().contains("connect with its client certificate"), "{e}");
        for other in [cert(Some("someone-else")), cert(None)] {
            assert!(name(&[("x-scope-orgid", "billing")], Some(other)).is_err());
        }
        // Either credential of a tenant with both will do; a certificate and a token of two
        // tenants are refused.
        assert_eq!(name(&[("authorization", "Bearer tok")], None).expect("token"), "both");
        assert_eq!(name(&[], Some(cert(Some("both-cn")))).expect("certificate"), "both");
        let e =
            name(&[("authorization", "Bearer tok")], Some(cert(Some("billing-alloy")))).expect_err("mixed");
        assert!(e.to_string().contains("Authorization header are not valid for tenant `billing`"), "{e}");
    }

    #[test]
    fn token_bucket_refills_at_the_rate() {
        let start = Instant::now();
        let mut b = Bucket { tokens: 100.0, at: start };
        assert!(b.take(80.0, 10.0, 100.0, start));
        assert!(!b.take(30.0, 10.0, 100.0, start));
        assert!(b.take(30.0, 10.0, 100.0, start + std::time::Duration::from_secs(1)));
        assert!(!b.take(1.0, 10.0, 100.0, start + std::time::Duration::from_secs(1)));
    }

    #[test]
    fn rate_limit_uses_tenant_limits() {
        let t = tenants("tenants: { overrides: { slow: { limits: { ingestion_rate: 1KB } } } }");
        let slow = t.authenticate(&headers(&[("x-scope-orgid", "slow")]), None).expect("ok");
        assert!(t.admit_rate(&slow, 900).is_ok());
        let e = t.admit_rate(&slow, 900).expect_err("over the burst");
        assert_eq!(e.status(), http::StatusCode::TOO_MANY_REQUESTS);
        let fast = t.authenticate(&headers(&[("x-scope-orgid", "fast")]), None).expect("ok");
        assert!(t.admit_rate(&fast, 1 << 30).is_ok(), "limit off by default");
    }
}
