//! Building push requests and sending them: protobuf+snappy, JSON (optionally gzip or deflate),
//! or any raw body with any headers.

use std::io::Write;

use prost::Message;
use sluice::proto::{EntryAdapter, LabelPairAdapter, PushRequest, StreamAdapter, Timestamp};

/// What a push got back.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub body: String,
    pub retry_after: Option<String>,
}

/// A stream with a label string such as `{app="x"}`.
pub fn stream(labels: &str, entries: Vec<EntryAdapter>) -> StreamAdapter {
    StreamAdapter { labels: labels.to_string(), entries, hash: 0 }
}

/// An entry without structured metadata.
pub fn entry(ts_ns: i64, line: &str) -> EntryAdapter {
    entry_md(ts_ns, line, &[])
}

/// An entry with structured metadata.
pub fn entry_md(ts_ns: i64, line: &str, metadata: &[(&str, &str)]) -> EntryAdapter {
    EntryAdapter {
        timestamp: Some(Timestamp::from_nanos(ts_ns)),
        line: line.to_string(),
        structured_metadata: metadata
            .iter()
            .map(|(n, v)| LabelPairAdapter { name: n.to_string(), value: v.to_string() })
            .collect(),
        parsed: vec![],
    }
}

/// A request of one stream.
pub fn one(labels: &str, entries: Vec<EntryAdapter>) -> PushRequest {
    PushRequest { streams: vec![stream(labels, entries)] }
}

/// The protobuf body, raw-block snappy compressed.
pub fn proto_body(req: &PushRequest) -> Vec<u8> {
    snap::raw::Encoder::new().compress_vec(&req.encode_to_vec()).expect("snappy compresses")
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

/// zlib-wrapped deflate, what HTTP's `Content-Encoding: deflate` means.
pub fn deflate(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("deflate");
    e.finish().expect("deflate")
}

/// Sends `body` with `headers` (and `X-Scope-OrgID: tenant` when given).
pub async fn raw(
    client: &reqwest::Client,
    url: &str,
    tenant: Option<&str>,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Resp {
    let mut rb = client.post(url).timeout(std::time::Duration::from_secs(20)).body(body);
    if let Some(t) = tenant {
        rb = rb.header("X-Scope-OrgID", t);
    }
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    // A transport error is status 0 with the error as body, so a test reports it like any other
    // unexpected answer (e.g. a connection closed early on an oversized body).
    let resp = match rb.send().await {
        Ok(resp) => resp,
        Err(e) => return Resp { status: 0, body: format!("POST {url} failed: {e:?}"), retry_after: None },
    };
    let status = resp.status().as_u16();
    let retry_after = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
    let body = resp.text().await.unwrap_or_default();
    Resp { status, body, retry_after }
}

/// Protobuf+snappy, with or without `Content-Encoding: snappy`.
pub async fn proto(
    client: &reqwest::Client,
    url: &str,
    tenant: Option<&str>,
    req: &PushRequest,
    snappy_header: bool,
) -> Resp {
    let mut headers = vec![("Content-Type", "application/x-protobuf")];
    if snappy_header {
        headers.push(("Content-Encoding", "snappy"));
    }
    raw(client, url, tenant, &headers, proto_body(req)).await
}

/// A JSON body, compressed with `encoding` (`gzip` or `deflate`) when given.
pub async fn json(
    client: &reqwest::Client,
    url: &str,
    tenant: Option<&str>,
    json: &str,
    encoding: Option<&str>,
) -> Resp {
    let mut headers = vec![("Content-Type", "application/json")];
    let body = match encoding {
        None => json.as_bytes().to_vec(),
        Some("gzip") => gzip(json.as_bytes()),
        Some("deflate") => deflate(json.as_bytes()),
        Some(other) => panic!("no encoder for {other}"),
    };
    if let Some(enc) = encoding {
        headers.push(("Content-Encoding", enc));
    }
    raw(client, url, tenant, &headers, body).await
}

/// Label or metadata pairs.
pub type Pairs<'a> = &'a [(&'a str, &'a str)];

/// One JSON stream: labels and `(ts, line, metadata)` values.
pub type JsonStream<'a> = (Pairs<'a>, Vec<(i64, &'a str, Pairs<'a>)>);

/// Loki's JSON push body.
pub fn json_body(streams: &[JsonStream<'_>]) -> String {
    let streams: Vec<serde_json::Value> = streams
        .iter()
        .map(|(labels, values)| {
            let labels: serde_json::Map<String, serde_json::Value> =
                labels.iter().map(|(k, v)| (k.to_string(), serde_json::Value::from(*v))).collect();
            let values: Vec<serde_json::Value> = values
                .iter()
                .map(|(ts, line, md)| {
                    let mut v = vec![serde_json::Value::from(ts.to_string()), serde_json::Value::from(*line)];
                    if !md.is_empty() {
                        let md: serde_json::Map<String, serde_json::Value> =
                            md.iter().map(|(k, v)| (k.to_string(), serde_json::Value::from(*v))).collect();
                        v.push(serde_json::Value::Object(md));
                    }
                    serde_json::Value::Array(v)
                })
                .collect();
            serde_json::json!({ "stream": labels, "values": values })
        })
        .collect();
    serde_json::json!({ "streams": streams }).to_string()
}
