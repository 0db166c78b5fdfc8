//! Numbers that are personal data or secrets: card numbers (Luhn-checked), IPv4 and IPv6
//! addresses, verified where the scan of [`crate::detect`] found a candidate: a run of 13+
//! digits, spaces and dashes, a dot between digits, a colon.

use std::net::Ipv6Addr;

use crate::detect::{Kind, Span};

/// Most digit groups of one separated run looked at; a card has at most 6.
const MAX_GROUPS: usize = 24;

/// A byte of a card number: a digit, a space or a dash.
pub fn is_card_byte(c: u8) -> bool {
    c.is_ascii_digit() || c == b' ' || c == b'-'
}

/// Appends the card numbers in the run of digits, spaces and dashes around `inside` to `spans`
/// if it is long enough for one; returns the end of the run.
pub fn cards_in_run(b: &[u8], inside: usize, spans: &mut Vec<Span>) -> usize {
    let mut s = inside.min(b.len());
    while s > 0 && is_card_byte(b[s - 1]) {
        s -= 1;
    }
    let mut e = inside.min(b.len());
    while e < b.len() && is_card_byte(b[e]) {
        e += 1;
    }
    if e - s < 13 {
        return e;
    }
    let mut i = s;
    while i < e {
        if !b[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let mut g = i + 1;
        while g < e && b[g].is_ascii_digit() {
            g += 1;
        }
        i = if g - i >= 4 { cards_from(b, i, g, spans).max(g) } else { g };
    }
    e
}

fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric()
}

/// Where a number may start: not after a letter, digit or `.` (a decimal, a version).
fn left_ok(b: &[u8], s: usize) -> bool {
    s == 0 || !(is_word(b[s - 1]) || b[s - 1] == b'.')
}

/// Where a number may end: not before a letter or digit, nor before `.` and a digit.
fn right_ok(b: &[u8], e: usize) -> bool {
    match b.get(e) {
        None => true,
        Some(&c) if is_word(c) => false,
        Some(b'.') => !b.get(e + 1).is_some_and(u8::is_ascii_digit),
        Some(_) => true,
    }
}

/// A dotted quad starting at `s` (octets of 1–3 digits up to 255), standing alone; its end.
pub fn ipv4_at(b: &[u8], s: usize) -> Option<usize> {
    if !left_ok(b, s) {
        return None;
    }
    let mut p = s;
    for octet in 0..4 {
        if octet > 0 {
            if b.get(p) != Some(&b'.') {
                return None;
            }
            p += 1;
        }
        let start = p;
        let mut value = 0u32;
        while p < b.len() && b[p].is_ascii_digit() && p - start < 4 {
            value = value * 10 + u32::from(b[p] - b'0');
            p += 1;
        }
        if p == start || p - start > 3 || value > 255 {
            return None;
        }
    }
    right_ok(b, p).then_some(p)
}

/// Card numbers in the run of digit groups starting with the group `s..e` (at least 4 digits):
/// 13–19 digits, either contiguous or in groups (the first of 4, the others of 3–6) joined by
/// one space or one dash, the same throughout; issuer digit 2–6; Luhn-valid. Returns where the
/// scan goes on.
fn cards_from(b: &[u8], s: usize, e: usize, spans: &mut Vec<Span>) -> usize {
    let mut groups = [(0usize, 0usize); MAX_GROUPS];
    groups[0] = (s, e);
    let mut k = 1;
    let sep = match b.get(e) {
        Some(&c @ (b' ' | b'-')) if b.get(e + 1).is_some_and(u8::is_ascii_digit) => Some(c),
        _ => None,
    };
    if let Some(sep) = sep {
        let mut p = e;
        while k < MAX_GROUPS && b.get(p) == Some(&sep) && b.get(p + 1).is_some_and(u8::is_ascii_digit) {
            let gs = p + 1;
            let mut ge = gs;
            while ge < b.len() && b[ge].is_ascii_digit() {
                ge += 1;
            }
            groups[k] = (gs, ge);
            k += 1;
            p = ge;
        }
    }
    let groups = &groups[..k];
    let first_ok = left_ok(b, s);
    let last_ok = right_ok(b, groups[k - 1].1);
    let mut a = 0;
    while a < k {
        let (gs, ge) = groups[a];
        let at_left = a > 0 || first_ok;
        let len = ge - gs;
        if at_left
            && (13..=19).contains(&len)
            && (a + 1 < k || last_ok)
            && valid_card(b, gs, ge)
            && !id_value(b, gs)
        {
            spans.push(Span::new(gs, ge, Kind::CreditCard));
            a += 1;
            continue;
        }
        if at_left && sep.is_some() && len == 4 {
            let mut total = 4;
            let mut best = None;
            for (c, &(cs, ce)) in groups.iter().enumerate().skip(a + 1) {
                let glen = ce - cs;
                total += glen;
                if !(3..=6).contains(&glen) || total > 19 {
                    break;
                }
                if total >= 13 && (c + 1 < k || last_ok) && valid_card(b, gs, ce) {
                    best = Some(c);
                }
            }
            if let Some(c) = best {
                spans.push(Span::new(gs, groups[c].1, Kind::CreditCard));
                a = c + 1;
                continue;
            }
        }
        a += 1;
    }
    if k == MAX_GROUPS {
        // A longer run goes on from its last groups, so a card across the cut is still seen.
        groups[k - 4].0
    } else {
        groups[k - 1].1
    }
}

/// Whether a number at `s` is the value of a key ending in `id` (`"span_id":"…"`,
/// `request_id=…`): an identifier that happens to pass Luhn, not a card.
fn id_value(b: &[u8], s: usize) -> bool {
    let mut p = s;
    let skip_quote = |p: &mut usize| {
        if *p > 0 && b[*p - 1] == b'"' {
            *p -= 1;
            if *p > 0 && b[*p - 1] == b'\\' {
                *p -= 1;
            }
        }
    };
    skip_quote(&mut p);
    if p == 0 || !matches!(b[p - 1], b'=' | b':') {
        return false;
    }
    p -= 1;
    skip_quote(&mut p);
    p >= 2 && b[p - 2..p].eq_ignore_ascii_case(b"id")
}

/// The digits of `b[s..e]` (separators skipped): 13–19 of them, starting with an issuer digit
/// 2–6, passing the Luhn check.
fn valid_card(b: &[u8], s: usize, e: usize) -> bool {
    let digits = || b[s..e].iter().filter(|c| c.is_ascii_digit()).map(|c| c - b'0');
    let count = digits().count();
    (13..=19).contains(&count) && matches!(digits().next(), Some(2..=6)) && luhn(digits())
}

/// Whether the digits (0–9, most significant first) pass the Luhn check.
pub fn luhn(digits: impl DoubleEndedIterator<Item = u8>) -> bool {
    let sum: u32 = digits
        .rev()
        .enumerate()
        .map(|(i, d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// The longest IPv6 address text (`ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255`).
const MAX_IPV6: usize = 45;

/// The run of hex digits, `:` and `.` around the `:` at `colon` (at most 45 bytes each way):
/// where it ends, and the address it is, if it stands alone, has at least two colons and a
/// digit, and parses.
pub fn ipv6_at(text: &str, colon: usize) -> (usize, Option<(usize, usize)>) {
    let b = text.as_bytes();
    let part = |c: u8| c.is_ascii_hexdigit() || c == b':' || c == b'.';
    let mut s = colon;
    while s > 0 && colon - s < MAX_IPV6 && (b[s - 1].is_ascii_hexdigit() || b[s - 1] == b':') {
        s -= 1;
    }
    let mut e = colon;
    while e < b.len() && e - colon < MAX_IPV6 && part(b[e]) {
        e += 1;
    }
    let run_end = e.max(colon + 1);
    while e > colon + 1 && b[e - 1] == b'.' {
        e -= 1;
    }
    let alone = |c: u8| !(is_word(c) || c == b'_' || c == b':' || c == b'.');
    if e - s > MAX_IPV6 || !(s == 0 || alone(b[s - 1])) || !b.get(e).is_none_or(|&c| alone(c) || c == b'.') {
        return (run_end, None);
    }
    let Some(candidate) = text.get(s..e) else { return (run_end, None) };
    let colons = candidate.bytes().filter(|&c| c == b':').count();
    let ok =
        colons >= 2 && candidate.bytes().any(|c| c.is_ascii_digit()) && candidate.parse::<Ipv6Addr>().is_ok();
    (run_end, ok.then_some((s, e)))
}
