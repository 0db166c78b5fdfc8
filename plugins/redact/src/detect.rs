//! Finding what to redact: the built-in detectors.
//!
//! One pass over the text, eight bytes at a time (SWAR: plain `u64` arithmetic, which Wasm has
//! without SIMD), marks the trigger bytes of the enabled detectors: `=` and `:` (a key's value
//! may follow), `@` (e-mail, URL userinfo), `A` (`AKIA`), `B` (`Bearer`), `J` (`eyJ`), `_`
//! (`ghp_`, `sk_live_`), `-` (`glpat-`, `xoxb-`, `-----BEGIN`), `.` (IPv4). Each trigger is
//! verified by hand where it is, looking only at the bytes around it; most are rejected after a
//! comparison or two (a key's last three letters, the two bytes before a `J`). Then every
//! twelfth byte is probed for a run of 13 or more digits, spaces and dashes (card numbers). A
//! text without candidates costs those two passes.
//!
//! Every verifier works on bytes, never spans a structural quote of a JSON or logfmt line, and
//! ends spans next to ASCII bytes, so a span is always a valid `str` range.

use crate::numeric;

/// The built-in detectors, in priority order: when two findings overlap, the earlier kind names
/// the result. Secrets come first, then personal data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Kind {
    PrivateKey,
    Jwt,
    Bearer,
    AwsAccessKey,
    AwsSecretKey,
    GithubToken,
    GitlabToken,
    SlackToken,
    StripeKey,
    UrlPassword,
    Password,
    Secret,
    CreditCard,
    Email,
    Ipv4,
    Ipv6,
}

/// Number of built-in detectors; custom rules are numbered from here.
pub const KINDS: usize = 16;

impl Kind {
    /// Every detector, in priority order.
    pub const ALL: [Kind; KINDS] = [
        Kind::PrivateKey,
        Kind::Jwt,
        Kind::Bearer,
        Kind::AwsAccessKey,
        Kind::AwsSecretKey,
        Kind::GithubToken,
        Kind::GitlabToken,
        Kind::SlackToken,
        Kind::StripeKey,
        Kind::UrlPassword,
        Kind::Password,
        Kind::Secret,
        Kind::CreditCard,
        Kind::Email,
        Kind::Ipv4,
        Kind::Ipv6,
    ];

    /// The name in the config, in `[REDACTED:<name>]` and in the counters.
    pub fn name(self) -> &'static str {
        match self {
            Kind::PrivateKey => "private_key",
            Kind::Jwt => "jwt",
            Kind::Bearer => "bearer",
            Kind::AwsAccessKey => "aws_access_key",
            Kind::AwsSecretKey => "aws_secret_key",
            Kind::GithubToken => "github_token",
            Kind::GitlabToken => "gitlab_token",
            Kind::SlackToken => "slack_token",
            Kind::StripeKey => "stripe_key",
            Kind::UrlPassword => "url_password",
            Kind::Password => "password",
            Kind::Secret => "secret",
            Kind::CreditCard => "credit_card",
            Kind::Email => "email",
            Kind::Ipv4 => "ipv4",
            Kind::Ipv6 => "ipv6",
        }
    }

    /// The detector called `name`.
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Secrets (on by default) as opposed to personal data (off by default).
    pub fn is_secret(self) -> bool {
        self <= Kind::CreditCard
    }

    /// The detector id of this kind in a finding.
    pub fn id(self) -> u16 {
        self as u16
    }
}

/// Something to replace: bytes `start..end` of the text, found by detector `det` (a [`Kind`] id
/// below [`KINDS`], a custom rule from there), with, for custom `replace` rules that refer to
/// groups, its expanded replacement at `repl` in the engine's side buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
    pub det: u16,
    pub repl: (u32, u32),
}

impl Span {
    pub fn new(start: usize, end: usize, kind: Kind) -> Self {
        Self { start, end, det: kind.id(), repl: (0, 0) }
    }
}

/// Key suffixes (lower case, `-` and `.` read as `_`) whose values are AWS secret keys.
const AWS_SECRET_KEYS: &[&[u8]] =
    &[b"secret_access_key", b"secretaccesskey", b"aws_secret_key", b"aws_secret"];
/// Key suffixes whose values are passwords: always redacted.
const PASSWORD_KEYS: &[&[u8]] = &[b"password", b"passwd", b"passphrase"];
/// Key suffixes whose values are redacted when they look random.
const SECRET_KEYS: &[&[u8]] = &[
    b"secret",
    b"token",
    b"api_key",
    b"apikey",
    b"access_key",
    b"secret_key",
    b"private_key",
    b"signing_key",
    b"encryption_key",
    b"auth_key",
    b"credential",
    b"credentials",
];

/// The longest value a key's name alone does not make a secret (`token=…`, `Bearer …`) that
/// is looked at: longer values are text, not a token.
const MAX_SECRET: usize = 512;

/// Three bytes as one number, to compare keys' last three letters at once.
const fn tail(t: [u8; 3]) -> u32 {
    (t[0] as u32) << 16 | (t[1] as u32) << 8 | t[2] as u32
}

// The last three letters of the keys of `AWS_SECRET_KEYS`, `PASSWORD_KEYS`, `SECRET_KEYS`,
// `authorization` and `auth`.
const ORD: u32 = tail(*b"ord");
const SWD: u32 = tail(*b"swd");
const ASE: u32 = tail(*b"ase");
const RET: u32 = tail(*b"ret");
const KEN: u32 = tail(*b"ken");
const KEY: u32 = tail(*b"key");
const IAL: u32 = tail(*b"ial");
const ALS: u32 = tail(*b"als");
const ION: u32 = tail(*b"ion");
const UTH: u32 = tail(*b"uth");

/// What a key says about its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyClass {
    /// A value of this kind.
    Value(Kind),
    /// An `Authorization` header (or an `auth` key): a `Bearer` token may follow.
    Authorization,
}

/// Which detectors run, and the thresholds of the entropy-gated ones.
#[derive(Debug, Clone)]
pub struct Scanner {
    enabled: [bool; KINDS],
    /// Any of the detectors that start at a key (`password`, `secret`, `aws_secret_key`,
    /// `bearer` after `Authorization`).
    keys: bool,
    /// Which bytes trigger a look: `: ; < = > ? @ A B` (keys, e-mail, URL passwords, AWS key
    /// ids, `Bearer`, IPv6), or just `@`; `-`; `.`; `J`; `_`.
    colon_to_b: bool,
    at_sign: bool,
    dash: bool,
    dot: bool,
    j: bool,
    underscore: bool,
    cards: bool,
    min_len: usize,
    min_entropy: f64,
    /// [`log_steps`], for the entropy of values.
    log_steps: Vec<f64>,
}

impl Scanner {
    /// A scanner for the enabled kinds.
    pub fn new(enabled: [bool; KINDS], min_len: usize, min_entropy: f64) -> Self {
        let on = |k: Kind| enabled[k as usize];
        let keys = on(Kind::Password) || on(Kind::Secret) || on(Kind::AwsSecretKey) || on(Kind::Bearer);
        Self {
            enabled,
            keys,
            colon_to_b: keys || on(Kind::AwsAccessKey) || on(Kind::Ipv6),
            at_sign: on(Kind::Email) || on(Kind::UrlPassword),
            dash: on(Kind::PrivateKey) || on(Kind::GitlabToken) || on(Kind::SlackToken),
            dot: on(Kind::Ipv4),
            j: on(Kind::Jwt),
            underscore: on(Kind::GithubToken) || on(Kind::StripeKey),
            cards: on(Kind::CreditCard),
            min_len,
            min_entropy,
            log_steps: log_steps(),
        }
    }

    fn on(&self, kind: Kind) -> bool {
        self.enabled[kind as usize]
    }

    /// Appends what the built-in detectors find in `text` to `spans` (unsorted, may overlap).
    ///
    /// One pass over the text, eight bytes at a time: a mask of the trigger bytes (`: ; < = > ?
    /// @ A B`, and `-`, `.`, `J`, `_` when their detectors are on), each trigger verified where
    /// it is; then a probe of every twelfth byte for runs of 13 or more digits, spaces and
    /// dashes (card numbers).
    pub fn scan(&self, text: &str, spans: &mut Vec<Span>) {
        let b = text.as_bytes();
        let looks = self.colon_to_b || self.at_sign || self.dash || self.dot || self.j || self.underscore;
        if !(looks || self.cards) {
            return;
        }
        let mut state = ScanState::default();
        // Which tests count, as all-ones or zero masks: the loop computes every test and keeps
        // the wanted ones, without a branch per test.
        let want = |on: bool| if on { u64::MAX } else { 0 };
        let (colon_to_b, at_sign) = (want(self.colon_to_b), want(self.at_sign && !self.colon_to_b));
        let (dash, dot, j, underscore) =
            (want(self.dash), want(self.dot), want(self.j), want(self.underscore));
        let mut i = 0;
        while looks && i < b.len() {
            let w = word(b, i);
            let mut triggers = (range(w, b':', b'B') & colon_to_b)
                | (eq(w, b'@') & at_sign)
                | (eq(w, b'-') & dash)
                | (eq(w, b'.') & dot)
                | (eq(w, b'J') & j)
                | (eq(w, b'_') & underscore);
            while triggers != 0 {
                let at = i + (triggers.trailing_zeros() / 8) as usize;
                triggers &= triggers - 1;
                if let Some(&c) = b.get(at) {
                    self.trigger(text, b, at, c, &mut state, spans);
                }
            }
            i += 8;
        }
        if self.cards {
            // A card number is a run of 13 or more digits, spaces and dashes, so it holds one of
            // every 12 positions: probing those finds every run worth a closer look.
            // Such a run around `p` also holds `p - 6` and `p - 3`, or `p + 3` and `p + 6`.
            let card = |i: usize| b.get(i).is_some_and(|&c| numeric::is_card_byte(c));
            let mut done = 0;
            let mut p = 11;
            while p < b.len() {
                if card(p) && p >= done && ((card(p - 3) && card(p - 6)) || (card(p + 3) && card(p + 6))) {
                    done = numeric::cards_in_run(b, p, spans);
                }
                p += 12;
            }
        }
    }

    /// Verifies the trigger byte `c` at `at`.
    fn trigger(&self, text: &str, b: &[u8], at: usize, c: u8, state: &mut ScanState, spans: &mut Vec<Span>) {
        let mut push = |found: Option<(usize, usize)>, kind: Kind| {
            if let Some((s, e)) = found
                && self.on(kind)
            {
                spans.push(Span::new(s, e, kind));
            }
        };
        // By far the most frequent triggers, so tested first.
        if c == b':' || c == b'=' {
            if self.keys {
                self.separator(b, at, state, spans);
            }
            if c == b':' && self.on(Kind::Ipv6) && at >= state.ipv6_done {
                // Every colon of a candidate gives the same candidate: one look each.
                let (candidate, address) = numeric::ipv6_at(text, at);
                state.ipv6_done = candidate;
                if let Some((s, e)) = address {
                    spans.push(Span::new(s, e, Kind::Ipv6));
                }
            }
            return;
        }
        match c {
            b'@' => match url_password(b, at) {
                Some(found) => push(Some(found), Kind::UrlPassword),
                None => push(email(b, at), Kind::Email),
            },
            b'A' => push(aws_key_id(b, at), Kind::AwsAccessKey),
            b'B' if !before(b, at).is_some_and(is_word) && b.get(at..at + 7) == Some(b"Bearer ") => {
                push(self.bearer(b, at), Kind::Bearer);
            }
            b'J' if at >= 2 && b.get(at - 2..at) == Some(b"ey") => push(jwt(b, at - 2), Kind::Jwt),
            b'_' => {
                let prefix = |p: &[u8]| at >= p.len() && b.get(at - p.len()..at) == Some(p);
                let follows = |p: &[u8]| b.get(at..at + p.len()) == Some(p);
                match before(b, at) {
                    Some(b'p' | b'o' | b'u' | b's' | b'r')
                        if at >= 3 && b.get(at - 3..at - 1) == Some(b"gh") =>
                    {
                        let body = |c: u8| c.is_ascii_alphanumeric();
                        push(prefixed_token(b, at - 3, at + 1, 30, body), Kind::GithubToken);
                    }
                    Some(b'b') if prefix(b"github") && follows(b"_pat_") => {
                        let body = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
                        push(prefixed_token(b, at - 6, at + 5, 22, body), Kind::GithubToken);
                    }
                    Some(b'k')
                        if (prefix(b"sk") || prefix(b"rk")) && (follows(b"_live_") || follows(b"_test_")) =>
                    {
                        push(
                            prefixed_token(b, at - 2, at + 6, 10, |c| c.is_ascii_alphanumeric()),
                            Kind::StripeKey,
                        );
                    }
                    _ => {}
                }
            }
            b'-' => {
                let prefix = |p: &[u8]| at >= p.len() && b.get(at - p.len()..at) == Some(p);
                match before(b, at) {
                    prev if b.get(at + 1) == Some(&b'-') => {
                        let begins = b.get(at..at + 11) == Some(b"-----BEGIN ") && prev != Some(b'-');
                        if begins && at >= state.pem_done {
                            let found = private_key(b, at);
                            if let Some((_, e)) = found {
                                state.pem_done = e;
                            }
                            push(found, Kind::PrivateKey);
                        }
                    }
                    Some(b't') if prefix(b"glpat") => {
                        push(prefixed_token(b, at - 5, at + 1, 20, is_b64url), Kind::GitlabToken);
                    }
                    Some(b't') if prefix(b"gldt") || prefix(b"glrt") => {
                        push(prefixed_token(b, at - 4, at + 1, 20, is_b64url), Kind::GitlabToken);
                    }
                    Some(b'b' | b'a' | b'p' | b'r' | b's')
                        if at >= 4 && b.get(at - 4..at - 1) == Some(b"xox") =>
                    {
                        let body = |c: u8| c.is_ascii_alphanumeric() || c == b'-';
                        push(prefixed_token(b, at - 4, at + 1, 10, body), Kind::SlackToken);
                    }
                    _ => {}
                }
            }
            b'.' if self.on(Kind::Ipv4)
                && at >= state.ipv4_done
                && before(b, at).is_some_and(|c| c.is_ascii_digit())
                && b.get(at + 1).is_some_and(u8::is_ascii_digit) =>
            {
                let mut s = at - 1;
                while s > 0 && at - s < 3 && b[s - 1].is_ascii_digit() {
                    s -= 1;
                }
                if let Some(e) = numeric::ipv4_at(b, s) {
                    spans.push(Span::new(s, e, Kind::Ipv4));
                    state.ipv4_done = e;
                }
            }
            _ => {}
        }
    }

    /// A `=` or `:` at `at`: if the key before it is a secret's, the value after it.
    #[inline(always)]
    fn separator(&self, b: &[u8], at: usize, state: &mut ScanState, spans: &mut Vec<Span>) {
        if at < state.value_done {
            return;
        }
        let mut k = at;
        while k > 0 && at - k < 4 && b[k - 1] == b' ' {
            k -= 1;
        }
        if k > 0 && matches!(b[k - 1], b'"' | b'\'') {
            k -= 1;
            if k > 0 && b[k - 1] == b'\\' {
                k -= 1;
            }
        }
        // Most keys are rejected by their last three letters alone.
        let Some(&[x, y, z]) = k.checked_sub(3).and_then(|t| b.get(t..k)) else { return };
        if !matches!(
            tail([x | 0x20, y | 0x20, z | 0x20]),
            ORD | SWD | ASE | RET | KEN | KEY | IAL | ALS | ION | UTH
        ) {
            return;
        }
        self.key_value(b, k, state, spans);
    }

    /// The value of the key that ends at `k`, if the key is a secret's.
    #[inline(never)]
    fn key_value(&self, b: &[u8], k: usize, state: &mut ScanState, spans: &mut Vec<Span>) {
        let mut ks = k;
        while ks > 0 && k - ks <= 64 && is_key_char(b[ks - 1]) {
            ks -= 1;
        }
        let Some(class) = self.key_class(&b[ks..k]) else { return };
        // Passwords are redacted whatever their length; a value that only may be a secret is
        // one of at most `MAX_SECRET` bytes.
        let limit = match class {
            KeyClass::Value(Kind::Password | Kind::AwsSecretKey) => None,
            _ => Some(MAX_SECRET),
        };
        let Some((vs, ve, quoted)) = value_after_key(b, k, limit) else { return };
        let kind = match class {
            KeyClass::Authorization => {
                if let Some((s, e)) = self.bearer(b, vs) {
                    spans.push(Span::new(s, e, Kind::Bearer));
                }
                return;
            }
            KeyClass::Value(kind) => kind,
        };
        let Some(value) = b.get(vs..ve) else { return };
        // Placeholders (`${DB_PASSWORD}`, `{{ .token }}`) are not secrets.
        if value.is_empty() || already_redacted(value) || value.starts_with(b"${") || value.starts_with(b"{{")
        {
            return;
        }
        if !quoted && matches!(value, b"null" | b"true" | b"false") {
            return;
        }
        // A secret is one random-looking token; a value with spaces is text, whose own
        // assignments (`aws_credentials="aws_access_key_id=… aws_secret_access_key=…"`) are
        // found on their own.
        if kind == Kind::Secret && (value.iter().any(u8::is_ascii_whitespace) || !self.looks_random(value)) {
            return;
        }
        // Triggers inside a value that is redacted whole need no look.
        state.value_done = ve;
        spans.push(Span::new(vs, ve, kind));
    }

    /// What a key (`ks..k`) says about its value, if its detector is on.
    fn key_class(&self, key: &[u8]) -> Option<KeyClass> {
        let mut buf = [0u8; 65];
        let norm = buf.get_mut(..key.len())?;
        for (n, &c) in norm.iter_mut().zip(key) {
            *n = match c.to_ascii_lowercase() {
                b'-' | b'.' => b'_',
                c => c,
            };
        }
        let norm: &[u8] = norm;
        let ends = |list: &[&[u8]]| list.iter().any(|s| norm.ends_with(s));
        if self.on(Kind::AwsSecretKey) && ends(AWS_SECRET_KEYS) {
            return Some(KeyClass::Value(Kind::AwsSecretKey));
        }
        if self.on(Kind::Password) && ends(PASSWORD_KEYS) {
            return Some(KeyClass::Value(Kind::Password));
        }
        if self.on(Kind::Secret) && (ends(SECRET_KEYS) || ends(AWS_SECRET_KEYS) || norm == b"key") {
            return Some(KeyClass::Value(Kind::Secret));
        }
        if self.on(Kind::Bearer) && (norm.ends_with(b"authorization") || norm.ends_with(b"auth")) {
            return Some(KeyClass::Authorization);
        }
        None
    }

    /// `Bearer <token>` at `p` (any case): the token, when it looks random.
    fn bearer(&self, b: &[u8], p: usize) -> Option<(usize, usize)> {
        if !b.get(p..p + 6)?.eq_ignore_ascii_case(b"bearer") {
            return None;
        }
        let mut t = p + 6;
        while b.get(t) == Some(&b' ') && t < p + 10 {
            t += 1;
        }
        if t == p + 6 {
            return None;
        }
        let mut e = t;
        while e < b.len() && e - t <= MAX_SECRET {
            match b[e] {
                c if c.is_ascii_alphanumeric()
                    || matches!(c, b'.' | b'_' | b'~' | b'+' | b'/' | b'=' | b'-') =>
                {
                    e += 1
                }
                b'\\' if b.get(e + 1) == Some(&b'/') => e += 2,
                _ => break,
            }
        }
        while e > t && b[e - 1] == b'.' {
            e -= 1;
        }
        let token = b.get(t..e)?;
        // A JWT is the `jwt` detector's, which finds it by its `eyJ` and names it.
        if self.on(Kind::Jwt) && jwt(b, t).is_some_and(|(_, end)| end >= e) {
            return None;
        }
        (token.len() <= MAX_SECRET && self.looks_random(token)).then_some((t, e))
    }

    /// At least `min_len` bytes, at least two of (lower case, upper case, digits, other), and a
    /// Shannon entropy of at least `min_entropy` bits per byte.
    pub fn looks_random(&self, value: &[u8]) -> bool {
        if value.len() < self.min_len || value.len() > MAX_SECRET {
            return false;
        }
        // One pass: the character classes, and the entropy as log2(n) - Σ c·log2(c) / n, the sum
        // grown by table lookups as each byte's count goes up.
        let mut counts = [0u16; 256];
        let mut classes = 0u8;
        let mut sum = 0.0;
        for &c in value {
            classes |= match c {
                b'a'..=b'z' => 1,
                b'A'..=b'Z' => 2,
                b'0'..=b'9' => 4,
                _ => 8,
            };
            let count = &mut counts[usize::from(c)];
            sum += self.log_steps.get(usize::from(*count)).copied().unwrap_or(0.0);
            *count += 1;
        }
        let n = value.len() as f64;
        classes.count_ones() >= 2 && n.log2() - sum / n >= self.min_entropy
    }
}

/// `(k + 1)·log2(k + 1) - k·log2(k)` for `k` in `0..=MAX_SECRET`: how `Σ c·log2(c)` grows when a
/// count goes from `k` to `k + 1`.
fn log_steps() -> Vec<f64> {
    let x_log_x = |k: usize| if k == 0 { 0.0 } else { k as f64 * (k as f64).log2() };
    (0..=MAX_SECRET).map(|k| x_log_x(k + 1) - x_log_x(k)).collect()
}

/// Where the scan of one text is.
#[derive(Debug, Default)]
struct ScanState {
    /// The end of the last IPv4 (IPv6) address found: its other dots (colons) are not looked at.
    ipv4_done: usize,
    ipv6_done: usize,
    /// The end of the last private-key block: `-----BEGIN` inside it is not looked at.
    pem_done: usize,
    /// The end of the last key's value that was redacted.
    value_done: usize,
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;
const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;

/// Bytes `i..i + 8` of `b` as a little-endian word (byte `i` lowest), zero-padded at the end.
fn word(b: &[u8], i: usize) -> u64 {
    match b.get(i..i + 8) {
        Some(w) => {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(w);
            u64::from_le_bytes(bytes)
        }
        None => {
            let mut bytes = [0u8; 8];
            let rest = b.get(i..).unwrap_or_default();
            bytes[..rest.len()].copy_from_slice(rest);
            u64::from_le_bytes(bytes)
        }
    }
}

/// The high bit of each byte of `w` equal to `c`, and possibly of a byte `c ^ 1` right after
/// one (the borrow of the cheap zero-byte test): triggers are verified byte by byte anyway.
fn eq(w: u64, c: u8) -> u64 {
    let v = w ^ (u64::from(c) * ONES);
    v.wrapping_sub(ONES) & !v & HIGH
}

/// The high bit of each byte of `w` in `lo..=hi` (ASCII).
fn range(w: u64, lo: u8, hi: u8) -> u64 {
    let low = w & LOW7;
    let ge = low + u64::from(0x80 - lo) * ONES;
    let gt = low + u64::from(0x7f - hi) * ONES;
    ge & !gt & !w & HIGH
}

/// A value this plugin wrote: `[REDACTED:…]`, a mask, or a `kind:<16 hex>` hash.
fn already_redacted(value: &[u8]) -> bool {
    if value.starts_with(b"[REDACTED:") || value.starts_with(b"****") {
        return true;
    }
    match value.iter().rposition(|&c| c == b':') {
        Some(colon) if value.len() - colon == 17 => {
            value[..colon].iter().all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
                && value[colon + 1..].iter().all(|&c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
        }
        _ => false,
    }
}

/// The value after a key ending at `ke`: skips the key's closing quote, spaces, `=`/`:` (also
/// `=>`, `:=`), spaces, and reads a quoted (`"`, `\"`, `'`) or bare value. Bare values end at
/// white space, quotes, a backslash (except JSON's `\/`), `&`, `,`, `;`, `}` or `]`; a trailing
/// `)` without a `(` in the value is left out. A value longer than `limit` is `None`; with no
/// limit, a quote that never closes runs to the end of the text.
fn value_after_key(b: &[u8], ke: usize, limit: Option<usize>) -> Option<(usize, usize, bool)> {
    let mut p = ke;
    match b.get(p) {
        Some(b'"' | b'\'') => p += 1,
        Some(b'\\') if b.get(p + 1) == Some(&b'"') => p += 2,
        _ => {}
    }
    let skip_spaces = |mut p: usize| {
        let limit = p + 4;
        while p < limit && matches!(b.get(p), Some(b' ' | b'\t')) {
            p += 1;
        }
        p
    };
    let key_end = p;
    p = skip_spaces(p);
    // `key= value` is an empty value in logfmt; `key = value` and `key: value` are not.
    let spaced = p > key_end;
    match b.get(p) {
        Some(b'=') => {
            p += 1;
            if b.get(p) == Some(&b'>') {
                p += 1;
            } else if !spaced {
                return value_at(b, p, limit);
            }
        }
        Some(b':') => {
            p += 1;
            if b.get(p) == Some(&b'=') {
                p += 1;
            }
        }
        _ => return None,
    }
    value_at(b, skip_spaces(p), limit)
}

/// A quoted (`"`, `\"`, `'`) or bare value at `p`; see [`value_after_key`].
fn value_at(b: &[u8], p: usize, limit: Option<usize>) -> Option<(usize, usize, bool)> {
    let (vs, quote): (usize, &[u8]) = match b.get(p)? {
        b'"' => (p + 1, b"\""),
        b'\'' => (p + 1, b"'"),
        b'\\' if b.get(p + 1) == Some(&b'"') => (p + 2, b"\\\""),
        b'{' | b'[' => return None,
        _ => (p, b""),
    };
    let end = limit.map_or(b.len(), |l| b.len().min(vs + l + 1));
    let window = b.get(vs..end)?;
    if !quote.is_empty() {
        let close = match quote {
            b"\"" => unescaped_quote(window, 0),
            _ => window.windows(quote.len()).position(|w| w == quote),
        };
        return match (close, limit) {
            (Some(n), _) => Some((vs, vs + n, true)),
            (None, None) => Some((vs, b.len(), true)),
            (None, Some(_)) => None,
        };
    }
    let mut n = 0;
    while n < window.len() {
        match window[n] {
            b'\\' if window.get(n + 1) == Some(&b'/') => n += 2,
            c if c.is_ascii_whitespace()
                || matches!(c, b'"' | b'\'' | b'\\' | b'&' | b',' | b';' | b'}' | b']') =>
            {
                break;
            }
            _ => n += 1,
        }
    }
    let n = n.min(window.len());
    if limit.is_some_and(|l| n > l) {
        return None;
    }
    let value = &window[..n];
    let ve = if value.ends_with(b")") && !value.contains(&b'(') { vs + n - 1 } else { vs + n };
    Some((vs, ve, false))
}

/// The index of the first `"` at or after `from` that no backslash escapes.
pub fn unescaped_quote(b: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

fn before(b: &[u8], i: usize) -> Option<u8> {
    i.checked_sub(1).and_then(|j| b.get(j)).copied()
}

fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric()
}

fn is_b64url(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'_'
}

fn is_key_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.')
}

/// An e-mail address around the `@` at `at`: `local@domain.tld`, local part of
/// `[A-Za-z0-9._%+-]` (at most 64), domain labels of `[A-Za-z0-9-]`, an alphabetic TLD of 2+.
fn email(b: &[u8], at: usize) -> Option<(usize, usize)> {
    let local_char = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'%' | b'+' | b'-');
    let mut s = at;
    while s > 0 && at - s < 80 && local_char(b[s - 1]) {
        s -= 1;
    }
    // A JSON escape right before (`\n`, `\u003c`) is not part of the address.
    if before(b, s) == Some(b'\\') {
        let hex4 = b.get(s + 1..s + 5).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit));
        s += if b.get(s) == Some(&b'u') && hex4 { 5 } else { 1 };
    }
    while s < at && b[s] == b'.' {
        s += 1;
    }
    if s >= at || at - s > 64 {
        return None;
    }
    let mut e = at + 1;
    while e < b.len() && (b[e].is_ascii_alphanumeric() || b[e] == b'-' || b[e] == b'.') {
        e += 1;
    }
    while e > at + 1 && matches!(b[e - 1], b'.' | b'-') {
        e -= 1;
    }
    let domain = b.get(at + 1..e)?;
    let tld_start = domain.iter().rposition(|&c| c == b'.')?;
    let tld = &domain[tld_start + 1..];
    let labels_ok = domain.split(|&c| c == b'.').all(|l| !l.is_empty() && l[0] != b'-');
    (tld.len() >= 2 && tld.iter().all(u8::is_ascii_alphabetic) && labels_ok).then_some((s, e))
}

/// Whether `c` ends a URL's authority (`scheme://authority/path`).
fn ends_authority(c: u8) -> bool {
    c.is_ascii_whitespace() || matches!(c, b'/' | b'\\' | b'?' | b'#' | b'"' | b'<' | b'>' | b'`')
}

/// `scheme://user:password@host` around the `@` at `at`: the password. The authority (after
/// `://`, or JSON's `:\/\/`) ends at white space, `/`, `\`, `?`, `#`, quotes or `<>`; the userinfo
/// ends at its last `@` and the password starts after its first `:`. `None` when `at` is not
/// in a URL's userinfo.
fn url_password(b: &[u8], at: usize) -> Option<(usize, usize)> {
    // Longer authorities are not URLs worth the look (and the bound keeps a line of `@`s linear).
    const MAX: usize = 256;
    let mut q = at;
    while q > 0 && at - q < MAX && !ends_authority(b[q - 1]) {
        q -= 1;
    }
    let scheme_end = if q >= 3 && b.get(q - 3..q) == Some(b"://") {
        q - 3
    } else if q >= 5 && b.get(q - 5..q) == Some(b":\\/\\/") {
        q - 5
    } else {
        return None;
    };
    let mut s = scheme_end;
    while s > 0 && (b[s - 1].is_ascii_alphanumeric() || matches!(b[s - 1], b'+' | b'.' | b'-')) {
        s -= 1;
    }
    if s == scheme_end || !b[s].is_ascii_alphabetic() {
        return None;
    }
    let mut last_at = at;
    let mut e = at + 1;
    while e < b.len() && e - q < MAX && !ends_authority(b[e]) {
        if b[e] == b'@' {
            last_at = e;
        }
        e += 1;
    }
    let colon = q + b.get(q..last_at)?.iter().position(|&c| c == b':')?;
    let password = b.get(colon + 1..last_at)?;
    if password.is_empty() || already_redacted(password) {
        // A URL's userinfo without a password to redact; still no e-mail address.
        return Some((last_at, last_at));
    }
    Some((colon + 1, last_at))
}

/// A JWT (`header.payload.signature`, base64url, the header starting `eyJ`) at `start`; also
/// five-part JWE.
fn jwt(b: &[u8], start: usize) -> Option<(usize, usize)> {
    if b.get(start..start + 3) != Some(b"eyJ") || before(b, start).is_some_and(|c| is_b64url(c) || c == b'.')
    {
        return None;
    }
    let run = |from: usize| {
        let mut e = from;
        while e < b.len() && is_b64url(b[e]) {
            e += 1;
        }
        e
    };
    let h = run(start);
    if h - start < 10 || b.get(h) != Some(&b'.') {
        return None;
    }
    let p = run(h + 1);
    if p == h + 1 || b.get(p) != Some(&b'.') {
        return None;
    }
    let mut e = run(p + 1);
    // JWE: two more parts.
    for _ in 0..2 {
        if b.get(e) == Some(&b'.') && b.get(e + 1).is_some_and(|&c| is_b64url(c)) {
            e = run(e + 1);
        }
    }
    Some((start, e))
}

/// An AWS access key id: `AKIA`/`ASIA` and 16 of `[A-Z0-9]`, standing alone.
fn aws_key_id(b: &[u8], start: usize) -> Option<(usize, usize)> {
    let prefix = b.get(start..start + 4)?;
    if !(prefix == b"AKIA" || prefix == b"ASIA") || before(b, start).is_some_and(is_word) {
        return None;
    }
    let body = b.get(start + 4..start + 20)?;
    let ok = body.iter().all(|&c| c.is_ascii_uppercase() || c.is_ascii_digit())
        && !b.get(start + 20).is_some_and(|&c| is_word(c));
    ok.then_some((start, start + 20))
}

/// A token of a lower-case prefix (`start..end`, exact case) and at least `min` body bytes.
fn prefixed_token(
    b: &[u8],
    start: usize,
    end: usize,
    min: usize,
    body: impl Fn(u8) -> bool,
) -> Option<(usize, usize)> {
    let prefix = b.get(start..end)?;
    if prefix.iter().any(u8::is_ascii_uppercase) || before(b, start).is_some_and(is_word) {
        return None;
    }
    let mut e = end;
    while e < b.len() && body(b[e]) {
        e += 1;
    }
    (e - end >= min).then_some((start, e))
}

/// A PEM private-key block: `-----BEGIN <…>PRIVATE KEY<…>-----` to its `-----END <…>-----`;
/// without an end, to the next unescaped `"` (the end of a JSON or logfmt string) or the end of
/// the text.
fn private_key(b: &[u8], start: usize) -> Option<(usize, usize)> {
    const BEGIN: &[u8] = b"-----BEGIN ";
    if b.get(start..start + BEGIN.len()) != Some(BEGIN) {
        return None;
    }
    let label_start = start + BEGIN.len();
    let label_len = b
        .get(label_start..)?
        .iter()
        .take(64)
        .position(|&c| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == b' '))?;
    let label = b.get(label_start..label_start + label_len)?;
    let header_end = label_start + label_len;
    if b.get(header_end..header_end + 5) != Some(b"-----") || !label.windows(11).any(|w| w == b"PRIVATE KEY")
    {
        return None;
    }
    let body = header_end + 5;
    let rest = b.get(body..)?;
    if let Some(at) = rest.windows(9).position(|w| w == b"-----END ") {
        let label_end = body + at + 9;
        if let Some(n) = b
            .get(label_end..)?
            .iter()
            .take(64)
            .position(|&c| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == b' '))
            && b.get(label_end + n..label_end + n + 5) == Some(b"-----")
        {
            return Some((start, label_end + n + 5));
        }
    }
    Some((start, unescaped_quote(b, body).unwrap_or(b.len())))
}
