//! The one error type of the HTTP boundary: every variant knows its status code and says what
//! went wrong in words a client's operator can act on.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use crate::decode::DecodeError;

/// Why a push was not (fully) accepted.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(
        "request body exceeds the limit of {limit} bytes (server.max_body_size, at most queue.max_bytes)"
    )]
    BodyTooLarge { limit: u64 },
    #[error("cannot read the request body: {0}")]
    Body(String),
    #[error("the request body was not received within {} (server.body_read_timeout)", humantime::format_duration(*timeout))]
    BodyTimeout { timeout: std::time::Duration },
    #[error("{0}")]
    Unauthorized(String),
    #[error(
        "too many failed authentications from this address for this tenant: retry in {} s",
        wait.as_secs().max(1)
    )]
    AuthThrottled { wait: std::time::Duration },
    #[error(
        "ingestion rate limit exceeded for tenant `{tenant}`: limit {rate} bytes/s, this push has {bytes} bytes of lines"
    )]
    RateLimited { tenant: String, rate: u64, bytes: usize },
    #[error(
        "sluice is at capacity ({entries} entries, {bytes} bytes in flight; queue.max_entries / queue.max_bytes): retry later"
    )]
    QueueFull { entries: u64, bytes: u64 },
    #[error("sluice is shutting down: send to another replica or retry later")]
    ShuttingDown,
    #[error(
        "{limit} tenants without a configuration entry are active already (tenants.max_active; a tenant is forgotten after {} without a push): retry later",
        humantime::format_duration(*idle_after)
    )]
    TooManyTenants { limit: usize, idle_after: std::time::Duration },
    /// Sluice is at capacity in a way the message explains (e.g. a full write-ahead log).
    #[error("{0}")]
    Overloaded(String),
    /// Sluice cannot store the push now (e.g. its disk is full or failing).
    #[error("{0}: retry later")]
    Unavailable(String),
    /// Part of the push was invalid; the valid part was accepted, as Loki does.
    #[error("{0}")]
    Rejected(String),
    #[error("the push was accepted but could not be processed: {0}")]
    NotProcessed(String),
}

impl IngestError {
    /// The status Loki would answer with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Decode(e) => e.status(),
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Body(_) | Self::Rejected(_) => StatusCode::BAD_REQUEST,
            Self::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::RateLimited { .. }
            | Self::QueueFull { .. }
            | Self::Overloaded(_)
            | Self::TooManyTenants { .. }
            | Self::AuthThrottled { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::ShuttingDown | Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::NotProcessed(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for IngestError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, format!("{self}\n")).into_response();
        let headers = response.headers_mut();
        match self {
            Self::QueueFull { .. }
            | Self::TooManyTenants { .. }
            | Self::RateLimited { .. }
            | Self::ShuttingDown
            | Self::Overloaded(_)
            | Self::Unavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Self::AuthThrottled { wait } => {
                let secs = wait.as_secs().max(1).to_string();
                if let Ok(v) = HeaderValue::from_str(&secs) {
                    headers.insert(header::RETRY_AFTER, v);
                }
            }
            Self::Unauthorized(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer, Basic realm=\"sluice\""),
                );
            }
            _ => {}
        }
        response
    }
}
