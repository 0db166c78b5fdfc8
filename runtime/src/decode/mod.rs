//! Decoding Loki push bodies (protobuf+snappy, JSON with optional gzip/deflate) straight into
//! [`crate::model`], applying Loki's validation rules per entry.
//!
//! (Interface fixed; the implementation is being written.)

use std::sync::Arc;

use crate::config::Limits;
use crate::model::Batch;

/// How the body was sent, from the request headers. As in Loki, a body whose media type is not
/// `application/json` is protobuf (snappy-compressed), and `Content-Encoding` gzip or deflate may
/// wrap either.
#[derive(Debug, Clone, Copy, Default)]
pub struct BodyFormat<'a> {
    pub content_type: Option<&'a str>,
    pub content_encoding: Option<&'a str>,
}

/// The valid part of a push, and what was rejected.
#[derive(Debug)]
pub struct Decoded {
    /// Valid entries only; streams left with no valid entry are omitted.
    pub batch: Batch,
    /// One record per stream and rule that rejected entries.
    pub rejected: Vec<Rejected>,
    /// Lines shortened to `max_line_size` (when `max_line_size_truncate` is on).
    pub truncated_lines: usize,
}

/// Entries of one stream rejected by one rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub reason: Reason,
    pub entries: usize,
    /// Bytes of the rejected lines.
    pub bytes: usize,
    /// Names the stream and the rule, as Loki's messages do.
    pub message: String,
}

/// Why entries were rejected; names match Loki's `discarded` reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    MissingLabels,
    InvalidLabels,
    MaxLabelNamesPerSeries,
    LabelNameTooLong,
    LabelValueTooLong,
    DuplicateLabelNames,
    LineTooLong,
    GreaterThanMaxSampleAge,
    TooFarInFuture,
    StructuredMetadataTooLarge,
    StructuredMetadataTooMany,
}

impl Reason {
    /// Loki's name for the reason, used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingLabels => "missing_labels",
            Self::InvalidLabels => "invalid_labels",
            Self::MaxLabelNamesPerSeries => "max_label_names_per_series",
            Self::LabelNameTooLong => "label_name_too_long",
            Self::LabelValueTooLong => "label_value_too_long",
            Self::DuplicateLabelNames => "duplicate_label_names",
            Self::LineTooLong => "line_too_long",
            Self::GreaterThanMaxSampleAge => "greater_than_max_sample_age",
            Self::TooFarInFuture => "too_far_in_future",
            Self::StructuredMetadataTooLarge => "structured_metadata_too_large",
            Self::StructuredMetadataTooMany => "structured_metadata_too_many",
        }
    }
}

/// A body that could not be decoded at all.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("request body exceeds the limit of {limit} bytes after decompression")]
    TooLarge { limit: usize },
    #[error("unsupported Content-Encoding `{0}` (use snappy for protobuf; gzip or deflate for JSON)")]
    UnsupportedEncoding(String),
    #[error("cannot decompress the body ({encoding}): {detail}")]
    Decompress { encoding: &'static str, detail: String },
    #[error("malformed push request: {0}")]
    Malformed(String),
}

impl DecodeError {
    /// The HTTP status Loki answers with.
    pub fn status(&self) -> http::StatusCode {
        match self {
            Self::TooLarge { .. } => http::StatusCode::PAYLOAD_TOO_LARGE,
            _ => http::StatusCode::BAD_REQUEST,
        }
    }
}

/// Decodes a push body and validates it with `limits` at `now_ns`.
pub fn decode_push(
    _body: &[u8],
    _format: BodyFormat<'_>,
    _tenant: Arc<str>,
    _limits: &Limits,
    _max_decompressed: usize,
    _now_ns: i64,
) -> Result<Decoded, DecodeError> {
    Err(DecodeError::Malformed("decoder not written yet".into()))
}
