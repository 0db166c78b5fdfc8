//! Encodes streams as Loki's `logproto.PushRequest`: protobuf, then raw (block) snappy, which is
//! what Loki expects for `Content-Type: application/x-protobuf`.
//!
//! The protobuf is written by hand from the borrowed batch, byte for byte what prost's derive of
//! [`proto::PushRequest`](crate::proto::PushRequest) produces (a test compares both), so no line
//! is copied into an intermediate message. The protobuf buffer, the label-string buffer and
//! snappy's hash table are reused from request to request; the compressed body is a fresh
//! allocation because the request owns it while in flight and while it is retried.

use std::fmt::Write as _;

use bytes::Bytes;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};

use crate::model::{Entry, Pair, Stream};

/// A request body could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("a request of {0} bytes is too large for snappy")]
    TooLarge(usize),
    #[error("snappy compression failed: {0}")]
    Snappy(#[from] snap::Error),
}

/// Reusable buffers for encoding push requests; one per concurrent request.
pub struct Encoder {
    proto: Vec<u8>,
    labels: String,
    snappy: snap::raw::Encoder,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder").field("capacity", &self.proto.capacity()).finish()
    }
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Encoder {
    pub fn new() -> Self {
        Self { proto: Vec::new(), labels: String::new(), snappy: snap::raw::Encoder::new() }
    }

    /// The snappy-compressed `PushRequest` of `streams`, ready to send.
    pub fn encode(&mut self, streams: &[Stream]) -> Result<Bytes, EncodeError> {
        self.proto.clear();
        for stream in streams {
            self.labels.clear();
            // Writing into a String cannot fail.
            let _ = write!(self.labels, "{}", stream.labels);
            let len = stream_len(&self.labels, &stream.entries);
            encode_key(1, WireType::LengthDelimited, &mut self.proto);
            encode_varint(len as u64, &mut self.proto);
            write_stream(&self.labels, &stream.entries, &mut self.proto);
        }
        let max = snap::raw::max_compress_len(self.proto.len());
        if max == 0 {
            return Err(EncodeError::TooLarge(self.proto.len()));
        }
        let mut out = vec![0; max];
        let n = self.snappy.compress(&self.proto, &mut out)?;
        out.truncate(n);
        Ok(Bytes::from(out))
    }
}

// Field tags are all below 16, so every key is one byte.
const KEY: usize = 1;

fn string_len(s: &str) -> usize {
    if s.is_empty() { 0 } else { KEY + encoded_len_varint(s.len() as u64) + s.len() }
}

fn write_string(tag: u32, s: &str, buf: &mut Vec<u8>) {
    if !s.is_empty() {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(s.len() as u64, buf);
        buf.extend_from_slice(s.as_bytes());
    }
}

fn varint_field_len(value: u64) -> usize {
    if value == 0 { 0 } else { KEY + encoded_len_varint(value) }
}

fn write_varint_field(tag: u32, value: u64, buf: &mut Vec<u8>) {
    if value != 0 {
        encode_key(tag, WireType::Varint, buf);
        encode_varint(value, buf);
    }
}

fn message_len(len: usize) -> usize {
    KEY + encoded_len_varint(len as u64) + len
}

fn write_message_header(tag: u32, len: usize, buf: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

/// `google.protobuf.Timestamp` fields as protobuf varints (int64 and int32 sign-extend).
fn timestamp_fields(ns: i64) -> (u64, u64) {
    let seconds = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000);
    (seconds as u64, nanos as u64)
}

fn timestamp_len(ns: i64) -> usize {
    let (s, n) = timestamp_fields(ns);
    varint_field_len(s) + varint_field_len(n)
}

fn pair_len((name, value): &Pair) -> usize {
    string_len(name) + string_len(value)
}

fn entry_len(entry: &Entry) -> usize {
    message_len(timestamp_len(entry.timestamp_ns))
        + string_len(&entry.line)
        + entry.metadata.iter().map(|p| message_len(pair_len(p))).sum::<usize>()
}

fn stream_len(labels: &str, entries: &[Entry]) -> usize {
    string_len(labels) + entries.iter().map(|e| message_len(entry_len(e))).sum::<usize>()
}

fn write_stream(labels: &str, entries: &[Entry], buf: &mut Vec<u8>) {
    write_string(1, labels, buf);
    for entry in entries {
        write_message_header(2, entry_len(entry), buf);
        write_message_header(1, timestamp_len(entry.timestamp_ns), buf);
        let (seconds, nanos) = timestamp_fields(entry.timestamp_ns);
        write_varint_field(1, seconds, buf);
        write_varint_field(2, nanos, buf);
        write_string(2, &entry.line, buf);
        for pair in &entry.metadata {
            write_message_header(3, pair_len(pair), buf);
            write_string(1, &pair.0, buf);
            write_string(2, &pair.1, buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::model::LabelSet;
    use crate::proto::{EntryAdapter, LabelPairAdapter, PushRequest, StreamAdapter, Timestamp};

    fn pairs(p: &[(&str, &str)]) -> Vec<Pair> {
        p.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    fn sample() -> Vec<Stream> {
        vec![
            Stream {
                labels: LabelSet::new(pairs(&[("app", "api"), ("env", "say \"hi\"")])),
                entries: vec![
                    Entry { timestamp_ns: 1_700_000_000_123_456_789, line: "first".into(), metadata: vec![] },
                    Entry {
                        timestamp_ns: 1_700_000_001_000_000_000,
                        line: "second ünïcode".into(),
                        metadata: pairs(&[("trace_id", "abc"), ("empty", "")]),
                    },
                    // Edge cases: epoch, empty line, before the epoch.
                    Entry { timestamp_ns: 0, line: String::new(), metadata: vec![] },
                    Entry { timestamp_ns: -1, line: "x".repeat(300), metadata: vec![] },
                ],
            },
            Stream { labels: LabelSet::new(pairs(&[("app", "db")])), entries: vec![] },
            Stream {
                labels: LabelSet::new(vec![]),
                entries: vec![Entry { timestamp_ns: 5, line: "n".into(), metadata: vec![] }],
            },
        ]
    }

    fn to_proto(streams: &[Stream]) -> PushRequest {
        PushRequest {
            streams: streams
                .iter()
                .map(|s| StreamAdapter {
                    labels: s.labels.to_string(),
                    entries: s
                        .entries
                        .iter()
                        .map(|e| EntryAdapter {
                            timestamp: Some(Timestamp::from_nanos(e.timestamp_ns)),
                            line: e.line.clone(),
                            structured_metadata: e
                                .metadata
                                .iter()
                                .map(|(n, v)| LabelPairAdapter { name: n.clone(), value: v.clone() })
                                .collect(),
                            parsed: vec![],
                        })
                        .collect(),
                    hash: 0,
                })
                .collect(),
        }
    }

    #[test]
    fn round_trips_through_snappy_and_prost() {
        let streams = sample();
        let mut encoder = Encoder::new();
        let body = encoder.encode(&streams).expect("encodes");
        let raw = snap::raw::Decoder::new().decompress_vec(&body).expect("valid raw snappy");
        let decoded = PushRequest::decode(raw.as_slice()).expect("valid protobuf");

        assert_eq!(decoded.streams.len(), streams.len());
        for (got, want) in decoded.streams.iter().zip(&streams) {
            assert_eq!(got.labels, want.labels.to_string());
            assert_eq!(got.entries.len(), want.entries.len());
            for (g, w) in got.entries.iter().zip(&want.entries) {
                let ts = g.timestamp.expect("timestamp present");
                assert_eq!(ts.to_nanos(), Some(w.timestamp_ns));
                assert_eq!(g.line, w.line);
                let md: Vec<Pair> =
                    g.structured_metadata.iter().map(|p| (p.name.clone(), p.value.clone())).collect();
                assert_eq!(md, w.metadata);
            }
        }
        assert_eq!(decoded.streams[0].labels, r#"{app="api", env="say \"hi\""}"#);
        // Byte for byte what prost's derive writes.
        assert_eq!(raw, to_proto(&streams).encode_to_vec());
    }

    #[test]
    fn reused_encoder_does_not_leak_previous_requests() {
        let mut encoder = Encoder::new();
        let all = sample();
        encoder.encode(&all).expect("encodes");
        let body = encoder.encode(&all[2..]).expect("encodes");
        let raw = snap::raw::Decoder::new().decompress_vec(&body).expect("valid raw snappy");
        assert_eq!(raw, to_proto(&all[2..]).encode_to_vec());
        let empty = encoder.encode(&[]).expect("encodes");
        assert!(snap::raw::Decoder::new().decompress_vec(&empty).expect("valid").is_empty());
    }
}
