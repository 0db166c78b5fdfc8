//! Unit tests: every detector and action with exact outputs, JSON and logfmt validity, false
//! positives that must not happen, targets, counters, and every configuration rejection.

use sluice_sdk::testing::{self, Status, TestBatch};

use super::*;

/// The reference chain's redact config (shared/BENCHMARK.md): e-mails hashed, IPv4 truncated,
/// every secret redacted (the default).
const REFERENCE: &str = r#"{"detectors": {"email": "hash", "ipv4": "truncate"}}"#;

const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZS5tYXJ0aW4iLCJpYXQiOjE3MDAwMDAwMDAsInNjb3BlIjoiaW5mZXJlbmNlOndyaXRlIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
const AWS_ID: &str = "AKIAIOSFODNN7EXAMPLE";
const AWS_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCY+EXAMPLEKEY";
const GITHUB: &str = "ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8";
const CARD: &str = "4539148803436467";

/// The lines that come out of `config` for `lines`, in order.
fn run(config: &str, lines: &[&str]) -> Vec<String> {
    let mut plugin = testing::plugin::<Redact>(config);
    let batch = lines.iter().fold(TestBatch::new().stream(&[("app", "api")]), |b, l| b.line(l));
    testing::run(&mut plugin, &batch).lines().into_iter().map(str::to_string).collect()
}

/// The line that comes out of `config` for `line`.
fn one(config: &str, line: &str) -> String {
    run(config, &[line]).remove(0)
}

/// `<kind>:<first 8 bytes of the keyed hash, hex>` under the test key.
fn hash_of(kind: &str, value: &str) -> String {
    let hash = sluice_sdk::hash::keyed_hash(&testing::test_key(), value.as_bytes());
    format!("{kind}:{}", sluice_sdk::to_hex(&hash[..8]))
}

/// Asserts that `line` comes out of `config` unchanged (and unpatched).
#[track_caller]
fn unchanged(config: &str, line: &str) {
    let mut plugin = testing::plugin::<Redact>(config);
    let out = testing::run(&mut plugin, &TestBatch::new().line(line));
    assert_eq!(out.entries[0].status, Status::Kept, "changed: {line:?} → {:?}", out.entries[0].line);
}

/// A logfmt line's keys and values (values unquoted), or an error: a test of validity.
fn logfmt(line: &str) -> Result<Vec<(String, String)>, String> {
    let b = line.as_bytes();
    let mut pairs = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b' ' {
            i += 1;
            continue;
        }
        let ks = i;
        while i < b.len() && !matches!(b[i], b'=' | b' ' | b'"') {
            i += 1;
        }
        if b.get(i) != Some(&b'=') || i == ks {
            return Err(format!("no key=value at {ks}: {line}"));
        }
        let key = line[ks..i].to_string();
        i += 1;
        let mut value = String::new();
        if b.get(i) == Some(&b'"') {
            i += 1;
            loop {
                match b.get(i) {
                    None => return Err(format!("unterminated quote in {line}")),
                    Some(b'"') => break,
                    Some(b'\\') => {
                        value.push(char::from(*b.get(i + 1).ok_or("dangling backslash")?));
                        i += 2;
                    }
                    Some(_) => {
                        let c = line[i..].chars().next().ok_or("char")?;
                        value.push(c);
                        i += c.len_utf8();
                    }
                }
            }
            i += 1;
            if b.get(i).is_some_and(|&c| c != b' ') {
                return Err(format!("junk after a quoted value at {i}: {line}"));
            }
        } else {
            let vs = i;
            while i < b.len() && b[i] != b' ' {
                if b[i] == b'"' {
                    return Err(format!("quote in a bare value at {i}: {line}"));
                }
                i += 1;
            }
            value = line[vs..i].to_string();
        }
        pairs.push((key, value));
    }
    Ok(pairs)
}

// ---------------------------------------------------------------------------------------------
// Secrets, each in plain text, JSON and logfmt.

#[test]
fn jwt_in_plain_json_and_logfmt() {
    let plain = format!("request failed (Authorization: Bearer {JWT})");
    assert_eq!(one("{}", &plain), "request failed (Authorization: Bearer [REDACTED:jwt])");
    let json = format!(r#"{{"level":"INFO","authorization":"Bearer {JWT}","n":1}}"#);
    assert_eq!(one("{}", &json), r#"{"level":"INFO","authorization":"Bearer [REDACTED:jwt]","n":1}"#);
    let logfmt = format!(r#"level=info authorization="Bearer {JWT}" n=1"#);
    assert_eq!(one("{}", &logfmt), r#"level=info authorization="Bearer [REDACTED:jwt]" n=1"#);
    // Alone, and as a `token=` value: the JWT names it.
    assert_eq!(one("{}", &format!("token={JWT}")), "token=[REDACTED:jwt]");
    assert_eq!(one("{}", &format!("jwt {JWT}.")), "jwt [REDACTED:jwt].");
}

#[test]
fn bearer_tokens_that_look_random() {
    assert_eq!(
        one("{}", "Authorization: Bearer 8fJk2LmQ9xZ0pRt7Vw3y"),
        "Authorization: Bearer [REDACTED:bearer]"
    );
    assert_eq!(one("{}", "auth=bearer abc.DEF-123_xyz~+/="), "auth=bearer [REDACTED:bearer]");
    assert_eq!(one("{}", "sent Bearer 8fJk2LmQ9xZ0pRt7Vw3y."), "sent Bearer [REDACTED:bearer].");
    assert_eq!(
        one("{}", r#"{"Authorization":"bearer 8fJk2LmQ9xZ0pRt7Vw3y"}"#),
        r#"{"Authorization":"bearer [REDACTED:bearer]"}"#
    );
    // Lower case without an authorization key is prose, not a header.
    unchanged("{}", "sent bearer 8fJk2LmQ9xZ0pRt7Vw3y");
    unchanged("{}", "bearer token expired for user");
    unchanged("{}", "Bearer authentication failed");
    unchanged("{}", "Bearer [REDACTED:jwt]");
}

#[test]
fn aws_key_id_and_secret() {
    let text = format!("aws_access_key_id={AWS_ID} aws_secret_access_key={AWS_SECRET}");
    let want = "aws_access_key_id=[REDACTED:aws_access_key] aws_secret_access_key=[REDACTED:aws_secret_key]";
    assert_eq!(one("{}", &text), want);
    assert_eq!(one("{}", &format!("completed request ({text})")), format!("completed request ({want})"));
    let json = format!(r#"{{"aws_credentials":"{text}","message":"x"}}"#);
    assert_eq!(one("{}", &json), format!(r#"{{"aws_credentials":"{want}","message":"x"}}"#));
    let logfmt = format!(r#"msg=ok aws_credentials="{text}""#);
    assert_eq!(one("{}", &logfmt), format!(r#"msg=ok aws_credentials="{want}""#));
    // STS JSON, and a JSON encoder that escapes slashes.
    let sts = format!(r#"{{"AccessKeyId":"ASIAY34FZKBOKMUTVV7A","SecretAccessKey":"{AWS_SECRET}"}}"#);
    assert_eq!(
        one("{}", &sts),
        r#"{"AccessKeyId":"[REDACTED:aws_access_key]","SecretAccessKey":"[REDACTED:aws_secret_key]"}"#
    );
    let escaped = format!("aws_secret_access_key={}", AWS_SECRET.replace('/', "\\/"));
    assert_eq!(one("{}", &escaped), "aws_secret_access_key=[REDACTED:aws_secret_key]");
    // Not a key id: too short, lower case, inside a word.
    unchanged("{}", "AKIA1234 akiaiosfodnn7example XAKIAIOSFODNN7EXAMPLE");
}

#[test]
fn vendor_tokens() {
    let cases = [
        (GITHUB, "github_token"),
        ("github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMN", "github_token"),
        ("glpat-xY3kP9qR2mN7vB4cL8dF", "gitlab_token"),
        ("xoxb-1234567890123-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "slack_token"),
        ("xoxp-2222222222-333333333333-abcdef123456", "slack_token"),
        ("sk_live_4eC39HqLyjWDarjtT1zdp7dc", "stripe_key"),
        ("rk_live_51Hx9ZqAbCdEfGhIjKlMnOp", "stripe_key"),
    ];
    for (token, kind) in cases {
        assert_eq!(
            one("{}", &format!("using {token} now")),
            format!("using [REDACTED:{kind}] now"),
            "{token}"
        );
        let json = format!(r#"{{"t":"{token}"}}"#);
        assert_eq!(one("{}", &json), format!(r#"{{"t":"[REDACTED:{kind}]"}}"#), "{token}");
    }
    // Too short, or the prefix inside a word or in upper case.
    unchanged(
        "{}",
        "ghp_short glpat-abc xoxb-1 sk_live_x myghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8 SK_LIVE_4eC39HqLyjWDarjtT1zdp7dc",
    );
}

#[test]
fn private_key_blocks() {
    let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA1c7+9z5Pad7OejecsQ0bu3aumoy5NZ4v\nAKIAIOSFODNN7EXAMPLE\n-----END RSA PRIVATE KEY-----";
    assert_eq!(one("{}", &format!("loaded key:\n{pem}\ndone")), "loaded key:\n[REDACTED:private_key]\ndone");
    // JSON-escaped newlines, inside a JSON string.
    let escaped = pem.replace('\n', "\\n");
    let json = format!(r#"{{"key":"{escaped}","ok":true}}"#);
    let out = one("{}", &json);
    assert_eq!(out, r#"{"key":"[REDACTED:private_key]","ok":true}"#);
    // OpenSSH and PKCS#8 labels.
    let ssh =
        "-----BEGIN OPENSSH PRIVATE KEY-----\\nb3BlbnNzaC1rZXktdjEAAAAA\\n-----END OPENSSH PRIVATE KEY-----";
    assert_eq!(one("{}", &format!("k={ssh} x=1")), "k=[REDACTED:private_key] x=1");
    // Cut off before its end: to the end of the JSON string.
    let cut = r#"{"key":"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQ\"EFAASC","n":2}"#;
    assert_eq!(one("{}", cut), r#"{"key":"[REDACTED:private_key]","n":2}"#);
    assert_eq!(one("{}", "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBk"), "[REDACTED:private_key]");
    // A public key or a certificate is no secret.
    unchanged("{}", "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkq\n-----END PUBLIC KEY-----");
    unchanged("{}", "-----BEGIN CERTIFICATE-----");
}

#[test]
fn passwords_in_urls() {
    let url = "postgres://ml_app:Zx81LmQ0pW5rT2yU@pg-main.db.svc:5432/ml_app";
    let want = "postgres://ml_app:[REDACTED:url_password]@pg-main.db.svc:5432/ml_app";
    assert_eq!(one("{}", &format!("connecting to {url}")), format!("connecting to {want}"));
    assert_eq!(one("{}", &format!(r#"{{"db_url":"{url}"}}"#)), format!(r#"{{"db_url":"{want}"}}"#));
    assert_eq!(one("{}", &format!("db_url={url} ok=1")), format!("db_url={want} ok=1"));
    // JSON-escaped slashes, an empty user, `@` and `:` in the password, no path.
    assert_eq!(
        one("{}", r#"{"u":"mysql:\/\/root:p@ss:w0rd@db:3306\/app"}"#),
        r#"{"u":"mysql:\/\/root:[REDACTED:url_password]@db:3306\/app"}"#
    );
    assert_eq!(one("{}", "redis://:hunter2@cache"), "redis://:[REDACTED:url_password]@cache");
    // With the host's IPv4 truncated too.
    assert_eq!(
        one(REFERENCE, "postgres://feast:Zx81LmQ0pW5rT2yU@10.20.4.17:5432/feast"),
        "postgres://feast:[REDACTED:url_password]@10.20.4.0:5432/feast"
    );
    unchanged("{}", "https://user@example.com/path https://example.com:8443/a?b=c@d http://x.io/?q=a:b@c");
}

#[test]
fn password_assignments_always() {
    let cases = [
        ("login password=hunter2 user=bob", "login password=[REDACTED:password] user=bob"),
        (r#"{"password":"hunter2","user":"bob"}"#, r#"{"password":"[REDACTED:password]","user":"bob"}"#),
        (r#"{"db_password": "a b \"c\""}"#, r#"{"db_password": "[REDACTED:password]"}"#),
        (r#"password="two words" x=1"#, r#"password="[REDACTED:password]" x=1"#),
        ("PGPASSWORD=s3cret psql", "PGPASSWORD=[REDACTED:password] psql"),
        ("Password: hunter2", "Password: [REDACTED:password]"),
        ("spring.datasource.password = abc;next", "spring.datasource.password = [REDACTED:password];next"),
        ("passphrase='correct horse'", "passphrase='[REDACTED:password]'"),
        ("?user=bob&password=pw123&x=1", "?user=bob&password=[REDACTED:password]&x=1"),
        // Inside a JSON string, with escaped quotes.
        (
            r#"{"msg":"body {\"password\":\"hunter2\"} sent"}"#,
            r#"{"msg":"body {\"password\":\"[REDACTED:password]\"} sent"}"#,
        ),
        (r#"{"msg":"login password=hunter2"}"#, r#"{"msg":"login password=[REDACTED:password]"}"#),
        ("(password=hunter2)", "(password=[REDACTED:password])"),
    ];
    for (line, want) in cases {
        assert_eq!(one("{}", line), want, "{line}");
    }
    for line in [
        r#"{"password":null,"password_set":true}"#,
        "password_reset=true has_password=false password= next",
        "the password field is required",
        "password=[REDACTED:password]",
        r#"{"password":{"min_length":8}}"#,
    ] {
        unchanged("{}", line);
    }
}

#[test]
fn secret_assignments_only_when_random() {
    let cases = [
        ("api_key=Zm9vYmFyMTIzNDU2Nzg5MA x=1", "api_key=[REDACTED:secret] x=1"),
        ("X-Api-Key: 3f9a8b7c6d5e4f3a2b1c", "X-Api-Key: [REDACTED:secret]"),
        ("GET /v1?token=AbC123xYz789QwE&user=bob", "GET /v1?token=[REDACTED:secret]&user=bob"),
        ("(token=AbC123xYz789QwE)", "(token=[REDACTED:secret])"),
        (r#"{"client_secret":"9dK2-pL0q_X7vR4m"}"#, r#"{"client_secret":"[REDACTED:secret]"}"#),
        ("refresh_token => 'Qm9iOnNlY3JldDEyMw=='", "refresh_token => '[REDACTED:secret]'"),
        ("key=abcdef12", "key=[REDACTED:secret]"),
    ];
    for (line, want) in cases {
        assert_eq!(one("{}", line), want, "{line}");
    }
    for line in [
        "token=expired max_tokens=512 prompt_tokens=1234",
        "tokenized request token budget nearly exhausted",
        "api_key=abcdefgh secret_name=db-credentials token_type=bearer",
        "token=production api_key=${API_KEY} secret=aaaaaaaa11",
        r#"{"secret":{"name":"x"},"tokens":12345678}"#,
        "cache_key=user:42 key_id=k1",
    ] {
        unchanged("{}", line);
    }
}

#[test]
fn the_entropy_threshold_is_configurable() {
    let line = "token=abcdefgh1";
    assert_eq!(one("{}", line), "token=[REDACTED:secret]");
    unchanged(r#"{"min_secret_entropy": 3.5}"#, line);
    unchanged(r#"{"min_secret_length": 10}"#, line);
    assert_eq!(
        one(r#"{"min_secret_length": 4, "min_secret_entropy": 2}"#, "token=ab12"),
        "token=[REDACTED:secret]"
    );
}

#[test]
fn credit_cards_with_luhn() {
    let cases = [
        (format!("card {CARD}"), "card [REDACTED:credit_card]"),
        ("card 4539 1488 0343 6467".to_string(), "card [REDACTED:credit_card]"),
        ("card 4539-1488-0343-6467.".to_string(), "card [REDACTED:credit_card]."),
        ("amex 3782 822463 10005".to_string(), "amex [REDACTED:credit_card]"),
        ("amex 378282246310005".to_string(), "amex [REDACTED:credit_card]"),
        ("19 digits 6304 0000 0000 0000 018".to_string(), "19 digits [REDACTED:credit_card]"),
        ("qty 12 4539 1488 0343 6467 ok".to_string(), "qty 12 [REDACTED:credit_card] ok"),
        (format!(r#"{{"card_number":"{CARD}"}}"#), r#"{"card_number":"[REDACTED:credit_card]"}"#),
        (format!("card_number={CARD}"), "card_number=[REDACTED:credit_card]"),
        ("card_number=\"5555 5555 5555 4444\"".to_string(), "card_number=\"[REDACTED:credit_card]\""),
    ];
    for (line, want) in cases {
        assert_eq!(one("{}", &line), want, "{line}");
    }
    for line in [
        "card 4539148803436468",                   // Luhn fails
        "card 4539 1488-0343 6467",                // mixed separators
        "ts=1767225600000000000 ms=1767225600123", // issuer digit 1
        "duration_ms=1234 duration_ms=3999.9 bytes=12345678",
        "loss=0.4539148803436467 lr=4539148803436467.5",
        "order 45391488034364671234 x4539148803436467 4539148803436467a",
        "time=2026-01-01T00:00:00.000001Z id=550e8400-e29b-41d4-a716-446655440000",
        "uuid 12345678-1234-1234-1234-123456789012 phone +1-555-123-4567",
        // Identifiers that happen to pass Luhn.
        r#"{"span_id":"4539148803436467","requestId":"4539148803436467"} request_id=4539148803436467"#,
    ] {
        unchanged("{}", line);
    }
}

#[test]
fn emails_hash_mask_redact() {
    let line = r#"{"user_email":"alice.martin@example.com","n":1}"#;
    let hash = hash_of("email", "alice.martin@example.com");
    assert_eq!(one(REFERENCE, line), format!(r#"{{"user_email":"{hash}","n":1}}"#));
    // Case does not change the hash; the same value in two entries gives the same hash.
    let out = run(REFERENCE, &["to Alice.Martin@EXAMPLE.com", "cc alice.martin@example.com"]);
    assert_eq!(out, [format!("to {hash}"), format!("cc {hash}")]);
    assert_eq!(
        one(r#"{"detectors":{"email":"mask"}}"#, "user_email=bob.nguyen@acme-ml.io"),
        "user_email=b***@acme-ml.io"
    );
    assert_eq!(one(r#"{"detectors":{"email":"redact"}}"#, "mail bob@x.io."), "mail [REDACTED:email].");
    // A JSON escape right before the address stays whole: the line stays JSON.
    let escaped = r#"{"m":"to \u003cbob@mail.test\u003e and\nalice@example.com"}"#;
    let out = one(r#"{"detectors":{"email":"redact"}}"#, escaped);
    assert_eq!(out, r#"{"m":"to \u003c[REDACTED:email]\u003e and\n[REDACTED:email]"}"#);
    assert!(serde_json::from_str::<serde_json::Value>(&out).is_ok());
    // Off by default; not addresses.
    unchanged("{}", "alice@example.com");
    unchanged(REFERENCE, "user@localhost @handle a@b.c git@host x@1.2");
}

#[test]
fn ipv4_truncate_and_others() {
    let cases = [
        (r#"{"client_ip":"10.23.45.67"}"#, r#"{"client_ip":"10.23.45.0"}"#),
        ("client_ip=10.23.45.67 port=80", "client_ip=10.23.45.0 port=80"),
        ("from 192.168.1.254:8080.", "from 192.168.1.0:8080."),
        ("10.0.0.1,10.0.0.2", "10.0.0.0,10.0.0.0"),
    ];
    for (line, want) in cases {
        assert_eq!(one(REFERENCE, line), want, "{line}");
    }
    assert_eq!(one(r#"{"detectors":{"ipv4":"redact"}}"#, "ip 10.1.2.3"), "ip [REDACTED:ipv4]");
    assert_eq!(one(r#"{"detectors":{"ipv4":"mask"}}"#, "ip 10.1.2.3"), "ip ****");
    assert_eq!(
        one(r#"{"detectors":{"ipv4":"hash"}}"#, "ip 10.1.2.3"),
        format!("ip {}", hash_of("ipv4", "10.1.2.3"))
    );
    for line in [
        "version 1.2.3.4.5 v1.2.3.4 300.1.1.1 1.2.3",
        "time=2026-01-01T00:00:00.000001Z duration_ms=123.4",
        "ip 10.1.2.0 already truncated",
    ] {
        unchanged(REFERENCE, line);
    }
}

#[test]
fn ipv6() {
    let config = r#"{"detectors":{"ipv6":"truncate"}}"#;
    assert_eq!(one(config, "from 2001:db8:85a3::8a2e:370:7334 ok"), "from 2001:db8:85a3:: ok");
    assert_eq!(one(config, r#"{"ip":"fe80::1ff:fe23:4567:890a"}"#), r#"{"ip":"fe80::"}"#);
    assert_eq!(one(r#"{"detectors":{"ipv6":"redact"}}"#, "[::1]:8080"), "[[REDACTED:ipv6]]:8080");
    for line in [
        "target=inference::server::batch time=12:30:45 mac=aa:bb:cc:dd:ee:ff",
        "dead::beef 2026-01-01T00:00:00Z a::b",
    ] {
        unchanged(config, line);
    }
}

// ---------------------------------------------------------------------------------------------
// Actions on secrets.

#[test]
fn mask_and_hash_secrets() {
    let mask = r#"{"secrets":"mask"}"#;
    assert_eq!(one(mask, &format!("t={GITHUB}")), "t=****Q7r8");
    assert_eq!(one(mask, "password=hunter2"), "password=****");
    assert_eq!(one(mask, "card 4539 1488 0343 6467"), "card **** **** **** 6467");
    assert_eq!(one(mask, &format!("card {CARD}")), "card ************6467");
    // Tails with symbols are not kept.
    assert_eq!(one(mask, &format!("aws_secret_access_key={AWS_SECRET}")), "aws_secret_access_key=****EKEY");
    assert_eq!(
        one(mask, "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCY+EXAMPLE/+="),
        "aws_secret_access_key=****"
    );
    let hash = r#"{"secrets":"hash"}"#;
    assert_eq!(one(hash, &format!("Bearer {JWT}")), format!("Bearer {}", hash_of("jwt", JWT)));
    // Cards hash their digits, so every spelling of a number joins.
    let h = hash_of("credit_card", CARD);
    assert_eq!(
        run(hash, &["card 4539 1488 0343 6467", "card 4539-1488-0343-6467", &format!("card {CARD}")]),
        [format!("card {h}"), format!("card {h}"), format!("card {h}")]
    );
    // One detector's action over `secrets`.
    let mixed = r#"{"secrets":"hash","detectors":{"password":"redact","jwt":"off"}}"#;
    assert_eq!(one(mixed, "password=x"), "password=[REDACTED:password]");
    assert_eq!(one(mixed, &format!("jwt {JWT}")), format!("jwt {JWT}"));
}

#[test]
fn a_bearer_jwt_is_still_caught_with_the_jwt_detector_off() {
    let config = r#"{"detectors":{"jwt":"off"}}"#;
    assert_eq!(
        one(config, &format!("Authorization: Bearer {JWT}")),
        "Authorization: Bearer [REDACTED:bearer]"
    );
}

#[test]
fn secrets_off_leaves_only_what_is_configured() {
    let config = r#"{"secrets":"off","detectors":{"email":"redact"}}"#;
    assert_eq!(one(config, "password=x a@b.io"), "password=x [REDACTED:email]");
}

// ---------------------------------------------------------------------------------------------
// Custom rules.

#[test]
fn custom_rules() {
    let config = r#"{"secrets":"off","rules":[
        {"name":"employee_id","regex":"EMP-\\d{6}","action":"hash"},
        {"name":"session","regex":"session=(?P<value>[a-f0-9]{8,})"},
        {"name":"ticket","regex":"TICKET-(\\d+)","replacement":"TICKET-$1-X"},
        {"name":"phone","regex":"\\+\\d{2} \\d{3} \\d{7}","action":"mask"},
        {"name":"host","regex":"db-[a-z]+","action":"replace","replacement":"db-host"}
    ]}"#;
    let line = "EMP-123456 session=deadbeef01 TICKET-42 +49 151 1234567 db-primary";
    let want = format!(
        "{} session=[REDACTED:session] TICKET-42-X **** db-host",
        hash_of("employee_id", "EMP-123456")
    );
    assert_eq!(one(config, line), want);
    let mut plugin = testing::plugin::<Redact>(config);
    let out = testing::run(&mut plugin, &TestBatch::new().line(line).line("EMP-000001 and EMP-000002"));
    assert_eq!(out.count("employee_id"), 3);
    assert_eq!(out.count("session"), 1);
    assert_eq!(out.count("ticket"), 1);
}

#[test]
fn custom_rules_merge_with_secrets_and_win_over_personal_data() {
    let config = r#"{"detectors":{"email":"hash"},"rules":[{"name":"contact","regex":"contact: \\S+"}]}"#;
    assert_eq!(one(config, "contact: bob@x.io"), "[REDACTED:contact]");
    // Overlapping secrets merge into one replacement named by the longest.
    let config = r#"{"rules":[{"name":"pw_prefix","regex":"hunt"}]}"#;
    assert_eq!(one(config, "password=hunter2"), "password=[REDACTED:password]");
}

// ---------------------------------------------------------------------------------------------
// Targets: labels and metadata.

#[test]
fn labels_and_metadata_are_redacted_too() {
    let mut plugin = testing::plugin::<Redact>(REFERENCE);
    let batch = TestBatch::new()
        .stream(&[("app", "api"), ("owner", "alice@example.com"), ("__tenant_id__", "bob@x.io")])
        .entry(1, "a", &[("client", "10.1.2.3"), ("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736")])
        .entry(2, "b", &[("auth", "password=hunter2")]);
    let out = testing::run(&mut plugin, &batch);
    let owner = hash_of("email", "alice@example.com");
    for e in &out.entries {
        assert_eq!(e.label("owner"), Some(owner.as_str()));
        assert_eq!(e.label("__tenant_id__"), Some("bob@x.io"), "reserved labels are sluice's");
    }
    assert_eq!(out.entries[0].metadata_value("client"), Some("10.1.2.0"));
    assert_eq!(out.entries[0].metadata_value("trace_id"), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
    assert_eq!(out.entries[1].metadata_value("auth"), Some("password=[REDACTED:password]"));
    assert_eq!(out.lines(), ["a", "b"]);
    // Label values count once per stream and batch; metadata per entry.
    assert_eq!(out.count("email"), 1);
    assert_eq!(out.count("ipv4"), 1);
    assert_eq!(out.count("password"), 1);
}

#[test]
fn targets_can_be_narrowed() {
    let config = r#"{"detectors":{"email":"redact"},"line":false,"labels":["owner"],"metadata":"none"}"#;
    let mut plugin = testing::plugin::<Redact>(config);
    let batch = TestBatch::new().stream(&[("owner", "a@b.io"), ("other", "c@d.io")]).entry(
        1,
        "e@f.io",
        &[("m", "g@h.io")],
    );
    let out = testing::run(&mut plugin, &batch);
    let e = &out.entries[0];
    assert_eq!((e.label("owner"), e.label("other")), (Some("[REDACTED:email]"), Some("c@d.io")));
    assert_eq!((e.line.as_str(), e.metadata_value("m")), ("e@f.io", Some("g@h.io")));

    let config = r#"{"detectors":{"email":"redact"},"labels":"none","metadata":["m"]}"#;
    let mut plugin = testing::plugin::<Redact>(config);
    let out = testing::run(&mut plugin, &batch);
    let e = &out.entries[0];
    assert_eq!((e.label("owner"), e.line.as_str()), (Some("a@b.io"), "[REDACTED:email]"));
    assert_eq!(e.metadata_value("m"), Some("[REDACTED:email]"));
}

#[test]
fn streams_in_one_batch_get_their_own_label_changes() {
    let mut plugin = testing::plugin::<Redact>(r#"{"detectors":{"email":"redact"}}"#);
    let batch = TestBatch::new()
        .stream(&[("user", "a@b.io")])
        .line("1")
        .line("2")
        .stream(&[("user", "nobody")])
        .line("3");
    let out = testing::run(&mut plugin, &batch);
    let users: Vec<_> = out.entries.iter().map(|e| e.label("user")).collect();
    assert_eq!(users, [Some("[REDACTED:email]"), Some("[REDACTED:email]"), Some("nobody")]);
    assert_eq!(out.entries[2].status, Status::Kept);
}

// ---------------------------------------------------------------------------------------------
// Validity, false positives, edge cases.

/// Lines of every format with every secret kind.
fn mixed_lines() -> Vec<String> {
    vec![
        format!(
            r#"{{"time":"2026-01-01T00:00:00.000001Z","level":"INFO","message":"completed request (Authorization: Bearer {JWT})","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","user_email":"alice@example.com","client_ip":"10.1.2.3"}}"#
        ),
        format!(r#"{{"level":"WARN","aws_credentials":"aws_access_key_id={AWS_ID} aws_secret_access_key={AWS_SECRET}"}}"#),
        r#"{"level":"ERROR","message":"connecting to postgres://feast:Zx81LmQ0pW5rT2yU@10.20.4.17:5432/feast","card_number":"4539-1488-0343-6467"}"#.to_string(),
        format!(r#"{{"message":"login {{\"password\":\"x\\\"y\",\"token\":\"{GITHUB}\"}}"}}"#),
        format!(
            r#"time=2026-01-01T00:00:00.000001Z level=info msg="completed request (aws_access_key_id={AWS_ID} aws_secret_access_key={AWS_SECRET})" client_ip=10.9.8.7 user_email=eve.jones@mail.test"#
        ),
        format!(r#"level=warn msg="card 4539 1488 0343 6467" authorization="Bearer {JWT}" password=hunter2 db_url=postgres://u:p@h/x"#),
        r#"level=info msg="key \"password=abc\" rotated" api_key=Zm9vYmFyMTIzNDU2Nzg5MA"#.to_string(),
    ]
}

#[test]
fn json_stays_json_and_logfmt_stays_logfmt() {
    let lines = mixed_lines();
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let out = run(REFERENCE, &refs);
    for (before, after) in lines.iter().zip(&out) {
        assert_ne!(before, after, "every line has something to redact");
        if before.starts_with('{') {
            let b: serde_json::Value = serde_json::from_str(before).expect("input is JSON");
            let a: serde_json::Value = serde_json::from_str(after).unwrap_or_else(|e| panic!("{e}: {after}"));
            let keys = |v: &serde_json::Value| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>());
            assert_eq!(keys(&b), keys(&a), "{after}");
        } else {
            let b = logfmt(before).expect("input is logfmt");
            let a = logfmt(after).unwrap_or_else(|e| panic!("{e}"));
            let keys = |v: &[(String, String)]| v.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
            assert_eq!(keys(&b), keys(&a), "{after}");
        }
        for secret in [
            JWT,
            AWS_ID,
            AWS_SECRET,
            GITHUB,
            "4539-1488-0343-6467",
            "4539 1488 0343 6467",
            "Zx81LmQ0pW5rT2yU",
            "hunter2",
            "alice@example.com",
            "10.1.2.3",
            "10.9.8.7",
        ] {
            assert!(!after.contains(secret), "{secret} in {after}");
        }
    }
    // Redacting again changes nothing.
    let again: Vec<&str> = out.iter().map(String::as_str).collect();
    assert_eq!(run(REFERENCE, &again), out);
}

#[test]
fn ordinary_lines_are_left_alone() {
    let lines = [
        r#"{"time":"2026-01-01T00:00:00.000001Z","level":"INFO","target":"inference::server::batch","message":"tokenized request","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"00f067aa0ba902b7","request_id":"9c1a6f0e2b3d4c5e","duration_ms":1234.5,"model_id":"llama-3.1-8b-instruct"}"#,
        "time=2026-01-01T00:00:00.000001Z level=debug target=vllm::engine::llm_engine msg=\"kv cache block allocated\" trace_id=0af7651916cd43dd8448eb211c80319c duration_ms=1234",
        "2026-01-01T00:00:00.000001Z WARN  [router::upstream] slow upstream response\nTraceback (most recent call last):\n  File \"/app/inference/server.py\", line 212, in handle\n    output = self.handle(batch, **kwargs)",
        "request_id=550e8400-e29b-41d4-a716-446655440000 status=200 bytes=48213 took=12.5ms",
        "token budget nearly exhausted (prompt_tokens=3071 max_tokens=4096)",
        "GET https://api.example.com/v1/models?limit=20 HTTP/1.1 200",
        "",
        "ünïcödé ✓ 日本語 password-free text",
    ];
    for line in lines {
        unchanged(REFERENCE, line);
    }
}

#[test]
fn unicode_empty_and_huge_lines() {
    assert_eq!(
        one(REFERENCE, "日本 alice@example.com ✓"),
        format!("日本 {} ✓", hash_of("email", "alice@example.com"))
    );
    assert_eq!(one(REFERENCE, "é password=ünï😀 x"), "é password=[REDACTED:password] x");
    assert_eq!(one(REFERENCE, ""), "");
    let filler = "the model token prompt layer tensor batch weights ".repeat(400);
    let huge = format!("{filler} card {CARD} {filler}");
    assert_eq!(one(REFERENCE, &huge), format!("{filler} card [REDACTED:credit_card] {filler}"));
}

#[test]
fn counts_per_detector() {
    let lines = mixed_lines();
    let mut plugin = testing::plugin::<Redact>(REFERENCE);
    let batch = lines.iter().fold(TestBatch::new(), |b, l| b.line(l));
    let out = testing::run(&mut plugin, &batch);
    let counts: Vec<(&str, u64)> = out.counts.iter().map(|(e, n)| (e.as_str(), *n)).collect();
    let want = [
        ("jwt", 2),
        ("aws_access_key", 2),
        ("aws_secret_key", 2),
        ("github_token", 1),
        ("url_password", 2),
        ("password", 3),
        ("secret", 1),
        ("credit_card", 2),
        ("email", 2),
        ("ipv4", 3),
    ];
    for (event, n) in want {
        assert_eq!(out.count(event), n, "{event} in {counts:?}");
    }
    // Counts belong to one batch.
    let out = testing::run(&mut plugin, &TestBatch::new().line("nothing"));
    assert!(out.counts.is_empty(), "{:?}", out.counts);
}

// ---------------------------------------------------------------------------------------------
// Configuration.

#[test]
fn defaults_and_reference_config() {
    let settings = Config::default().validate().expect("defaults are valid");
    for kind in Kind::ALL {
        assert_eq!(settings.actions[kind as usize].is_some(), kind.is_secret(), "{kind:?}");
    }
    let mut plugin = testing::plugin::<Redact>("{}");
    let out = testing::run(&mut plugin, &TestBatch::new().line("nothing to see"));
    assert_eq!(out.entries[0].status, Status::Kept);
    let _ = testing::plugin::<Redact>("null");
    let _ = testing::plugin::<Redact>(REFERENCE);
}

#[test]
fn rejects_bad_configs_with_exact_messages() {
    let cases = [
        (
            r#"{"detectors":{"emial":"hash"}}"#,
            "`detectors.emial`: unknown detector, expected one of private_key, jwt, bearer, aws_access_key, aws_secret_key, github_token, gitlab_token, slack_token, stripe_key, url_password, password, secret, credit_card, email, ipv4, ipv6",
        ),
        (
            r#"{"detectors":{"email":"hsah"}}"#,
            "`detectors.email`: unknown action `hsah`, expected one of off, redact, mask, hash",
        ),
        (
            r#"{"detectors":{"ipv4":"drop"}}"#,
            "`detectors.ipv4`: unknown action `drop`, expected one of off, redact, mask, hash, truncate",
        ),
        (
            r#"{"detectors":{"email":"truncate"}}"#,
            "`detectors.email`: `truncate` applies only to ipv4 and ipv6",
        ),
        (r#"{"secrets":"truncate"}"#, "`secrets`: `truncate` applies only to ipv4 and ipv6"),
        (
            r#"{"secrets":"nope"}"#,
            "`secrets`: unknown action `nope`, expected one of off, redact, mask, hash",
        ),
        (r#"{"secrets":"off"}"#, "every detector is off and there are no `rules`: nothing to redact"),
        (
            r#"{"line":false,"labels":"none","metadata":[]}"#,
            "`line` is false and `labels` and `metadata` are none: nothing to look at",
        ),
        (
            r#"{"labels":["ok","bad-name"]}"#,
            "`labels[1]`: `bad-name` is not a valid name ([a-zA-Z_][a-zA-Z0-9_]*)",
        ),
        (
            r#"{"metadata":"some"}"#,
            "invalid config at `metadata`: invalid value: string \"some\", expected `all`, `none` or a list of names at line 1 column 18",
        ),
        (
            r#"{"labels":3}"#,
            "invalid config at `labels`: invalid type: integer `3`, expected `all`, `none` or a list of names at line 1 column 11",
        ),
        (r#"{"min_secret_length":0}"#, "`min_secret_length`: 0 is out of range 1..=512"),
        (
            r#"{"min_secret_entropy":9.5}"#,
            "`min_secret_entropy`: 9.5 is out of range 0..=8 (bits per character)",
        ),
        (
            r#"{"rules":[{"name":"Bad","regex":"x"}]}"#,
            "`rules[0].name`: `Bad` must match [a-z][a-z0-9_-]* (at most 32 characters)",
        ),
        (
            r#"{"rules":[{"name":"email","regex":"x"}]}"#,
            "`rules[0].name`: `email` is the name of a built-in detector",
        ),
        (
            r#"{"rules":[{"name":"a","regex":"x"},{"name":"a","regex":"y"}]}"#,
            "`rules[1].name`: `a` is used by an earlier rule",
        ),
        (r#"{"rules":[{"name":"a","regex":"(x"}]}"#, "`rules[0].regex`: invalid regex: unclosed group"),
        (r#"{"rules":[{"name":"a","regex":"x*"}]}"#, "`rules[0].regex`: `x*` matches the empty string"),
        (
            r#"{"rules":[{"name":"a","regex":"x","action":"truncate"}]}"#,
            "`rules[0].action`: unknown action `truncate`, expected one of redact, mask, hash, replace",
        ),
        (
            r#"{"rules":[{"name":"a","regex":"x","action":"replace"}]}"#,
            "`rules[0].action`: `replace` needs a `replacement`",
        ),
        (
            r#"{"rules":[{"name":"a","regex":"x","action":"hash","replacement":"y"}]}"#,
            "`rules[0].replacement`: only with action `replace`, not `hash`",
        ),
        (
            r#"{"rules":[{"name":"a","regex":"x","replacement":"a \"b\""}]}"#,
            "`rules[0].replacement`: ' ' is not allowed (no quotes, backslashes or white space, so JSON and logfmt lines stay valid)",
        ),
        (
            r#"{"rules":[{"name":"a","regex":"x","replacement":"a\\b"}]}"#,
            "`rules[0].replacement`: '\\\\' is not allowed (no quotes, backslashes or white space, so JSON and logfmt lines stay valid)",
        ),
        (
            r#"{"rules":[{"name":"a"}]}"#,
            "invalid config at `rules[0]`: missing field `regex` at line 1 column 22",
        ),
        (
            r#"{"detector":{}}"#,
            "invalid config at `detector`: unknown field `detector`, expected one of `detectors`, `secrets`, `rules`, `line`, `labels`, `metadata`, `min_secret_length`, `min_secret_entropy` at line 1 column 11",
        ),
    ];
    for (config, want) in cases {
        assert_eq!(testing::init_error::<Redact>(config), want, "{config}");
    }
}

#[test]
fn pathological_lines_stay_linear() {
    // Each would take seconds if some detector rescanned the rest of the line per trigger.
    let cases = [
        "@".repeat(200_000),
        "a@".repeat(100_000),
        ":".repeat(200_000),
        "password=".repeat(20_000),
        "-----BEGIN PRIVATE KEY-----".repeat(8_000),
        "1234 ".repeat(40_000),
        "1.2.3.".repeat(30_000),
        "eyJ".repeat(60_000),
        "ghp_".repeat(50_000),
        "http://a:b@".repeat(20_000),
    ];
    let config = r#"{"detectors":{"email":"redact","ipv4":"truncate","ipv6":"redact"}}"#;
    let mut plugin = testing::plugin::<Redact>(config);
    for line in &cases {
        let started = std::time::Instant::now();
        let out = testing::run(&mut plugin, &TestBatch::new().line(line));
        assert_eq!(out.entries.len(), 1);
        eprintln!("{:>8} bytes of {:?}…: {:?}", line.len(), &line[..12.min(line.len())], started.elapsed());
    }
}
