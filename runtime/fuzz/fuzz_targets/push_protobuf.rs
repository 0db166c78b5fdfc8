//! `sluice::decode::decode_push` with protobuf bodies, at sluice's default limits (and tighter
//! ones). The first byte picks the mode:
//!
//! - bits 0-1: `0` the rest is the HTTP body as sent (snappy framing fuzzed too), with the
//!   `Content-Encoding` of bits 2-3 (none, `snappy`, `gzip`, `deflate`); `1` the rest is an
//!   uncompressed `PushRequest` that the harness snappy-compresses; `2` the same, also wrapped
//!   in gzip, raw deflate or zlib (bits 2-3) and compared with the unwrapped body; `3` a
//!   `PushRequest` the harness builds from the rest (label strings, entries, timestamps).
//! - bit 4: `Content-Type: application/x-protobuf`, or no header.
//! - bits 5-7: the limits (`limits_for`).
//!
//! Properties: a decoded push keeps only entries its limits allow, with valid sorted labels;
//! kept plus rejected entries are all the entries sent; the batch survives the Loki sink's
//! encoder and the JSON format unchanged; a snappied body decodes exactly when its protobuf
//! does, and Content-Encoding changes nothing but the bytes on the wire.

#![no_main]

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use sluice::config::Limits;
use sluice::decode::{DecodeError, Decoded, is_valid_label_name};
use sluice::proto::{EntryAdapter, LabelPairAdapter, PushRequest, StreamAdapter, Timestamp};
use sluice_fuzz::{
    check_counts, check_decoded, check_round_trips, compress, content_decode, decode, entry, label_name,
    label_value, limits_for, text,
};

const ENCODINGS: [Option<&str>; 4] = [None, Some("snappy"), Some("gzip"), Some("deflate")];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let limits = limits_for(mode);
    let content_type = (mode & 0x10 != 0).then_some("application/x-protobuf");
    let bits23 = (mode >> 2) & 3;
    sluice_fuzz::trace!("mode {mode:#04x}, {} bytes", rest.len());
    match mode & 3 {
        0 => raw_body(rest, content_type, ENCODINGS[usize::from(bits23)], &limits),
        1 => protobuf(rest, content_type, None, &limits, false),
        2 => protobuf(rest, content_type, Some(bits23), &limits, false),
        _ => {
            if let Ok(raw) = build_request(rest) {
                protobuf(&raw, content_type, (bits23 != 3).then_some(bits23), &limits, true);
            }
        }
    }
});

fn total_entries(request: &PushRequest) -> usize {
    request.streams.iter().map(|s| s.entries.len()).sum()
}

/// A body as a client sent it.
fn raw_body(body: &[u8], content_type: Option<&str>, encoding: Option<&str>, limits: &Limits) {
    let d = match decode(body, content_type, encoding, limits) {
        Ok(d) => d,
        Err(e) => {
            sluice_fuzz::trace!("refused: {e}");
            return;
        }
    };
    check_decoded(&d, limits);
    // What sluice must have read: the body without its encoding, un-snappied, decoded.
    let snappy = content_decode(body, encoding);
    let raw = snap::raw::Decoder::new().decompress_vec(&snappy).expect("sluice un-snappied this body");
    let request = PushRequest::decode(raw.as_slice()).expect("sluice decoded this protobuf");
    check_counts(&d, total_entries(&request));
    check_round_trips(&d, limits);
}

/// A protobuf the harness snappy-compresses (and optionally wraps in gzip or deflate).
fn protobuf(raw: &[u8], content_type: Option<&str>, wrap: Option<u8>, limits: &Limits, valid: bool) {
    let body = snap::raw::Encoder::new().compress_vec(raw).expect("snappy compresses");
    let result = decode(&body, content_type, None, limits);
    match (&result, PushRequest::decode(raw)) {
        (Ok(d), Ok(request)) => {
            check_decoded(d, limits);
            check_counts(d, total_entries(&request));
            check_round_trips(d, limits);
        }
        (Err(DecodeError::Malformed(e)), Err(_)) if !valid => sluice_fuzz::trace!("malformed: {e}"),
        (result, request) => {
            panic!("decode_push: {:?}, but the protobuf alone: {:?}", result.as_ref().err(), request.err())
        }
    }
    if let Some(how) = wrap {
        let encoding = if how % 3 == 0 { "gzip" } else { "deflate" };
        let wrapped = decode(&compress(&body, how % 3), content_type, Some(encoding), limits);
        assert_same_outcome(&result, &wrapped, encoding);
    }
}

fn assert_same_outcome(
    plain: &Result<Decoded, DecodeError>,
    wrapped: &Result<Decoded, DecodeError>,
    encoding: &str,
) {
    match (plain, wrapped) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a.batch, b.batch, "{encoding} changed the batch");
            assert_eq!(a.rejected, b.rejected, "{encoding} changed the rejections");
            assert_eq!(a.truncated_lines, b.truncated_lines);
        }
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{encoding} changed the error"),
        (a, b) => panic!("plain: {:?}, {encoding}: {:?}", a.as_ref().err(), b.as_ref().err()),
    }
}

/// A `PushRequest` from fuzz bytes: label strings in the syntaxes Loki accepts (and some it
/// does not), entries around the limits' edges, timestamps missing or denormal.
fn build_request(data: &[u8]) -> arbitrary::Result<Vec<u8>> {
    let mut u = Unstructured::new(data);
    let mut streams = Vec::new();
    for _ in 0..u.int_in_range(0..=4)? {
        let labels = label_string(&mut u)?;
        let mut entries = Vec::new();
        for _ in 0..u.int_in_range(0..=4)? {
            let e = entry(&mut u)?;
            let timestamp = match u.int_in_range(0u8..=7)? {
                0 => None,
                1 => Some(Timestamp { seconds: u.arbitrary()?, nanos: u.arbitrary()? }),
                _ => Some(Timestamp::from_nanos(e.timestamp_ns)),
            };
            let structured_metadata =
                e.metadata.into_iter().map(|(name, value)| LabelPairAdapter { name, value }).collect();
            entries.push(EntryAdapter { timestamp, line: e.line, structured_metadata, parsed: Vec::new() });
        }
        streams.push(StreamAdapter { labels, entries, hash: u.arbitrary()? });
    }
    Ok(PushRequest { streams }.encode_to_vec())
}

/// A label string: a selector built from pairs with varied quoting, or text as is.
fn label_string(u: &mut Unstructured<'_>) -> arbitrary::Result<String> {
    if u.ratio(1u8, 8)? {
        let odd = [r#"{app="api"}"#, "{}", "", "up", r#"up{a="b"}"#, r#"{a="x""#, r#"{a=~"x"}"#, "{a=`x`}"];
        return text(u, &odd, 200);
    }
    let mut s = String::new();
    if u.ratio(1u8, 8)? {
        s.push_str(u.choose(&["up", "metric:name", "_x "])?);
    }
    s.push('{');
    let n = u.int_in_range(0..=4)?;
    for i in 0..n {
        if i > 0 {
            s.push_str(u.choose(&[",", ", ", " ,\n\t"])?);
        }
        let name = label_name(u)?;
        if is_valid_label_name(&name) && u.ratio(3u8, 4)? {
            s.push_str(&name);
        } else {
            quote(&mut s, &name, '"');
        }
        s.push_str(u.choose(&["=", " = "])?);
        let value = label_value(u)?;
        quote(&mut s, &value, *u.choose(&['"', '"', '\'', '`'])?);
    }
    if n > 0 && u.ratio(1u8, 8)? {
        s.push(',');
    }
    s.push('}');
    Ok(s)
}

/// `v` quoted with `q`, escaped as Go does (backticks: raw, when `v` has none).
fn quote(s: &mut String, v: &str, q: char) {
    if q == '`' && !v.contains('`') {
        s.push('`');
        s.push_str(v);
        s.push('`');
        return;
    }
    let q = if q == '`' { '"' } else { q };
    s.push(q);
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            c if c == q => {
                s.push('\\');
                s.push(c);
            }
            c => s.push(c),
        }
    }
    s.push(q);
}
