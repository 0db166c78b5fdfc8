//! `sluice::decode::decode_push` with JSON bodies (`Content-Type: application/json`), at sluice's
//! default limits (and tighter ones). The first byte picks the mode:
//!
//! - bits 0-1: `0` the rest is the HTTP body as sent, with the `Content-Encoding` of bits 2-3
//!   (none, `snappy`, `gzip`, `deflate`); `1` the harness gzips the rest; `2` the harness
//!   deflates it (raw, or zlib-wrapped when bit 2 is set); `3` a push the harness writes as JSON
//!   from the rest (varied key order, unknown keys, repeated names), compressed as bits 2-3 say
//!   (none, gzip, raw deflate, zlib).
//! - bit 4: the Content-Type's spelling.
//! - bits 5-7: the limits (`limits_for`).
//!
//! Properties: a decoded push keeps only entries its limits allow, with valid sorted labels; it
//! survives the Loki sink's encoder and the JSON format unchanged; a body that is not JSON is
//! refused; compression changes nothing but the bytes on the wire; a push written from known
//! content decodes, and kept plus rejected entries are all the entries written.

#![no_main]

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use sluice::config::Limits;
use sluice::decode::{DecodeError, Decoded};
use sluice_fuzz::{
    check_counts, check_decoded, check_round_trips, compress, content_decode, decode, entry, json_str,
    limits_for, pairs,
};

const ENCODINGS: [Option<&str>; 4] = [None, Some("snappy"), Some("gzip"), Some("deflate")];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let limits = limits_for(mode);
    let content_type =
        Some(if mode & 0x10 == 0 { "application/json" } else { "Application/JSON; charset=utf-8" });
    let bits23 = (mode >> 2) & 3;
    sluice_fuzz::trace!("mode {mode:#04x}, {} bytes", rest.len());
    match mode & 3 {
        0 => raw_body(rest, content_type, ENCODINGS[usize::from(bits23)], &limits),
        1 => compressed(rest, content_type, 0, &limits),
        2 => compressed(rest, content_type, 1 + (bits23 & 1), &limits),
        _ => {
            let Ok((json, total)) = write_push(rest) else { return };
            let result = match bits23 {
                0 => decode(json.as_bytes(), content_type, None, &limits),
                how => {
                    let encoding = if how == 1 { "gzip" } else { "deflate" };
                    decode(&compress(json.as_bytes(), how - 1), content_type, Some(encoding), &limits)
                }
            };
            let d = result.unwrap_or_else(|e| panic!("a well-formed push is refused: {e}\n{json}"));
            check_decoded(&d, &limits);
            check_counts(&d, total);
            check_round_trips(&d, &limits);
        }
    }
});

/// A body as a client sent it.
fn raw_body(body: &[u8], content_type: Option<&str>, encoding: Option<&str>, limits: &Limits) {
    let result = decode(body, content_type, encoding, limits);
    if let Err(e) = &result {
        sluice_fuzz::trace!("refused: {e}");
    }
    if let Ok(d) = &result {
        check_decoded(d, limits);
        let json = content_decode(body, encoding);
        assert!(
            serde_json::from_slice::<serde::de::IgnoredAny>(&json).is_ok(),
            "sluice accepted a body that is not JSON"
        );
        check_round_trips(d, limits);
    }
}

/// The rest gzipped or deflated by the harness: the same outcome as sent plain.
fn compressed(body: &[u8], content_type: Option<&str>, how: u8, limits: &Limits) {
    let plain = decode(body, content_type, None, limits);
    let encoding = if how == 0 { "gzip" } else { "deflate" };
    let wrapped = decode(&compress(body, how), content_type, Some(encoding), limits);
    match (&plain, &wrapped) {
        (Ok(a), Ok(b)) => {
            assert_same(a, b, encoding);
            check_decoded(a, limits);
            check_round_trips(a, limits);
        }
        (Err(a), Err(b)) => {
            sluice_fuzz::trace!("refused: {a}");
            assert!(matches!(a, DecodeError::Malformed(_)), "a small plain body failed with {a:?}");
            assert_eq!(a.to_string(), b.to_string(), "{encoding} changed the error");
        }
        (a, b) => panic!("plain: {:?}, {encoding}: {:?}", a.as_ref().err(), b.as_ref().err()),
    }
    if plain.is_err() {
        return;
    }
    assert!(
        serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok(),
        "accepted a body that is not JSON"
    );
}

fn assert_same(a: &Decoded, b: &Decoded, encoding: &str) {
    assert_eq!(a.batch, b.batch, "{encoding} changed the batch");
    assert_eq!(a.rejected, b.rejected, "{encoding} changed the rejections");
    assert_eq!(a.truncated_lines, b.truncated_lines);
}

/// A push written as JSON from fuzz bytes, and how many entries it holds.
fn write_push(data: &[u8]) -> arbitrary::Result<(String, usize)> {
    let mut u = Unstructured::new(data);
    let mut total = 0;
    let mut out = String::from("{");
    if u.ratio(1u8, 8)? {
        out.push_str(r#""extra":[1,{"streams":null}],"#);
    }
    out.push_str(r#""streams":["#);
    for i in 0..u.int_in_range(0..=4)? {
        if i > 0 {
            out.push(',');
        }
        let labels = pairs(&mut u, 4)?;
        let mut labels_json = String::from("{");
        for (k, (name, value)) in labels.iter().enumerate() {
            if k > 0 {
                labels_json.push(',');
            }
            labels_json.push_str(&format!("{}:{}", json_str(name), json_str(value)));
        }
        labels_json.push('}');
        let mut values = String::from("[");
        for j in 0..u.int_in_range(0..=4)? {
            if j > 0 {
                values.push_str(u.choose(&[",", ", ", ",\n  "])?);
            }
            let e = entry(&mut u)?;
            total += 1;
            values.push_str(&format!("[\"{}\",{}", e.timestamp_ns, json_str(&e.line)));
            if !e.metadata.is_empty() || u.ratio(1u8, 4)? {
                values.push_str(",{");
                for (k, (name, value)) in e.metadata.iter().enumerate() {
                    if k > 0 {
                        values.push(',');
                    }
                    values.push_str(&format!("{}:{}", json_str(name), json_str(value)));
                }
                values.push('}');
            }
            values.push(']');
        }
        values.push(']');
        let omit_labels = labels.is_empty() && u.ratio(1u8, 2)?;
        let extra = if u.ratio(1u8, 8)? { r#""hash":7,"#.to_string() } else { String::new() };
        if omit_labels {
            out.push_str(&format!(r#"{{{extra}"values":{values}}}"#));
        } else if u.ratio(1u8, 4)? {
            out.push_str(&format!(r#"{{"values":{values},{extra}"stream":{labels_json}}}"#));
        } else {
            out.push_str(&format!(r#"{{"stream":{labels_json},{extra}"values":{values}}}"#));
        }
    }
    out.push_str("]}");
    Ok((out, total))
}
