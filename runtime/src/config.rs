//! The sluice configuration file: serde structs with `deny_unknown_fields`, `${VAR}` and
//! `${VAR:-default}` substitution, and [`Config::validate`] that reports every problem with its
//! location. Defaults live here and nowhere else; the README's config reference mirrors the doc
//! comments below.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

/// One problem in a configuration, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// A path such as `routes[1].selector`, or `line 12` for problems found before parsing.
    pub location: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// Every problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(f, "{n} problem{} in the configuration:", if n == 1 { "" } else { "s" })?;
        for e in &self.0 {
            writeln!(f, "  - {e}")?;
        }
        Ok(())
    }
}

fn err(location: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError { location: location.into(), message: message.into() }
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// HTTP server settings.
    #[serde(default)]
    pub server: ServerConfig,
    /// Directory for sluice's own state: the local archive of the embedded default, and later
    /// the write-ahead log and the compiled-plugin cache.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Tenants: the default tenant, authentication, per-tenant limits.
    #[serde(default)]
    pub tenants: TenantsConfig,
    /// Validation limits applied to every tenant unless overridden (Loki's defaults).
    #[serde(default)]
    pub limits: Limits,
    /// Bound on what sluice holds in memory between ingest and the sinks.
    #[serde(default)]
    pub queue: QueueConfig,
    /// The write-ahead log and how pushes are acknowledged.
    #[serde(default)]
    pub wal: WalConfig,
    /// Named sinks that routes send to.
    #[serde(default)]
    pub sinks: BTreeMap<String, SinkConfig>,
    /// Ordered routes; the first that matches a stream wins unless it says `continue: true`.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Where streams go that match no route. Absent: to every configured sink.
    #[serde(default)]
    pub default_route: Option<DefaultRouteConfig>,
    /// Named pipelines: stages (Wasm plugins) that routes run their streams through.
    #[serde(default)]
    pub pipelines: BTreeMap<String, PipelineConfig>,
    /// Hot reload: when the configuration file or a plugin file changes.
    #[serde(default)]
    pub reload: ReloadConfig,
    /// The file this configuration was read from, if any (watched for changes).
    #[serde(skip)]
    pub source: Option<PathBuf>,
    /// Directory that relative plugin paths resolve against: the configuration file's own
    /// directory, or the working directory when there is no file.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// Hot reload. A reload (also on SIGHUP or `POST /-/reload`) re-reads the configuration file
/// and applies its routes and pipelines: new pushes use the new plugins, batches in flight
/// finish on the old ones. A configuration or plugin that fails to load is refused with its
/// errors and the running one stays.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReloadConfig {
    /// Reload when the configuration file or a plugin file changes.
    pub watch: bool,
    /// How often the files are checked for changes.
    #[serde(with = "humantime_serde")]
    pub watch_interval: Duration,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        Self { watch: true, watch_interval: Duration::from_secs(2) }
    }
}

/// HTTP server settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Largest request body accepted as sent (compressed); larger ones get 413.
    pub max_body_size: ByteSize,
    /// Largest body after decompression (Loki's `max_recv_msg_size`, 100 MiB); larger ones get
    /// 413, detected without inflating the whole body.
    pub max_decompressed_size: ByteSize,
    /// How long shutdown may take to flush in-flight batches to the sinks.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Threads that run pipeline stages; 0 means one per CPU core.
    pub workers: usize,
    /// Most entries in one push (never more than `queue.max_entries`); more → 413, found before
    /// the push is decoded.
    pub max_entries_per_push: usize,
    /// Most streams in one push; more → 413.
    pub max_streams_per_push: usize,
    /// Pushes larger than 1 MiB decompressed decoded at once, on threads of their own (never
    /// the HTTP threads; smaller ones are decoded there); 0 means one per CPU core. Further
    /// pushes wait for a free one.
    pub decode_threads: usize,
    /// How long a client may take to send a request's headers, and to start its next request on
    /// a kept-alive connection; then the connection is closed (an idle client reconnects).
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// How long a client may take to send a request's whole body; then 408.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Most connections open at once; a connection past it is answered 503 and closed.
    pub max_connections: usize,
    /// Most requests being handled at once; past it → 503 with `Retry-After`.
    pub max_inflight_requests: usize,
    /// Bearer token that `POST /-/reload` requires; unset, that endpoint answers 403.
    pub admin_token: Option<String>,
    /// Serve HTTPS instead of plain HTTP.
    pub tls: Option<TlsConfig>,
    /// A second address, for `/metrics` and `POST /-/reload` (and `/ready`), in plain HTTP;
    /// set, the main port serves only pushes and `/ready`, so whoever can push cannot read
    /// every tenant's metrics or reach the admin endpoint.
    pub admin_listen: Option<SocketAddr>,
}

/// TLS on the listener. The files are read again when they change, so a renewed certificate
/// (cert-manager, a mounted Secret) is used for new connections without a restart.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the server's certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM file with the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM file with the CA certificates that client certificates must chain to; set, clients
    /// are asked for a certificate (mTLS), and `tenants.overrides.<t>.client_cert_common_names`
    /// map a verified certificate to its tenant.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// With `client_ca_file`: `required` (the default) refuses a handshake without a valid
    /// client certificate; `optional` lets such clients in, to authenticate with a token instead.
    #[serde(default)]
    pub client_auth: Option<ClientAuth>,
    /// How often the files are checked for changes.
    #[serde(default = "default_tls_reload_interval", with = "humantime_serde")]
    pub reload_interval: Duration,
}

/// Whether a client certificate is needed (see [`TlsConfig::client_auth`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    Required,
    Optional,
}

fn default_tls_reload_interval() -> Duration {
    Duration::from_secs(10)
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 3100)),
            max_body_size: ByteSize::mib(32),
            max_decompressed_size: ByteSize::mib(100),
            shutdown_timeout: Duration::from_secs(30),
            workers: 0,
            max_entries_per_push: 100_000,
            max_streams_per_push: 10_000,
            decode_threads: 0,
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(60),
            max_connections: 1024,
            max_inflight_requests: 256,
            admin_token: None,
            tls: None,
            admin_listen: None,
        }
    }
}

/// Tenants, from the `X-Scope-OrgID` header.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantsConfig {
    /// Tenant of requests without `X-Scope-OrgID` (Loki's single-tenant name is `fake`).
    pub default: String,
    /// Reject (401) tenants that have no `auth` entry below.
    pub require_auth: bool,
    /// Per-tenant credentials and limit overrides, by tenant name.
    pub overrides: BTreeMap<String, TenantConfig>,
    /// Most tenants without an `overrides` entry that may be active at once (pushed within
    /// `idle_after`); a push of one more gets 429. Bounds what unknown `X-Scope-OrgID`s cost:
    /// rate buckets, metric series, archive objects.
    pub max_active: usize,
    /// A tenant that has not pushed for this long is forgotten (its rate bucket too).
    #[serde(with = "humantime_serde")]
    pub idle_after: Duration,
}

impl Default for TenantsConfig {
    fn default() -> Self {
        Self {
            default: "fake".into(),
            require_auth: false,
            overrides: BTreeMap::new(),
            max_active: 1000,
            idle_after: Duration::from_secs(15 * 60),
        }
    }
}

/// One tenant's settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Credentials this tenant's pushes must carry.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// Subject common names (CN) of client certificates that are this tenant's credentials
    /// (with `server.tls.client_ca_file`): a request over a connection with such a verified
    /// certificate is this tenant's without `X-Scope-OrgID` or a token.
    #[serde(default)]
    pub client_cert_common_names: Vec<String>,
    /// Limits that differ from the global `limits` (any subset of its keys).
    #[serde(default)]
    pub limits: Option<serde_yaml_ng::Mapping>,
    /// Acknowledgement mode of this tenant's pushes (default: `wal.ack`). Where a route sets
    /// one too, the stronger of the two applies.
    #[serde(default)]
    pub ack: Option<AckMode>,
}

/// Credentials, usually given as `${ENV}` references: either `bearer_token`, or `username`
/// and `password` for basic auth.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// `Authorization: Bearer <token>`.
    #[serde(default)]
    pub bearer_token: Option<String>,
    /// Basic-auth user name.
    #[serde(default)]
    pub username: Option<String>,
    /// Basic-auth password.
    #[serde(default)]
    pub password: Option<String>,
}

impl AuthConfig {
    /// The problem with this combination of fields, if any.
    fn check(&self) -> Result<(), &'static str> {
        match (&self.bearer_token, &self.username, &self.password) {
            (Some(t), None, None) if !t.is_empty() => Ok(()),
            (None, Some(u), Some(p)) if !u.is_empty() && !p.is_empty() => Ok(()),
            (Some(_), _, _) if self.username.is_some() || self.password.is_some() => {
                Err("give either bearer_token or username and password, not both")
            }
            (Some(_), _, _) => Err("bearer_token is empty"),
            (None, None, None) => Err("give bearer_token, or username and password"),
            _ => Err("basic auth needs a non-empty username and a non-empty password"),
        }
    }
}

/// Loki's per-tenant validation limits, with Loki's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Most labels a stream may have.
    pub max_label_names_per_series: usize,
    /// Longest label name, in bytes.
    pub max_label_name_length: usize,
    /// Longest label value, in bytes.
    pub max_label_value_length: usize,
    /// Longest line (Loki's `256KB`, i.e. 256,000 bytes).
    pub max_line_size: ByteSize,
    /// Truncate longer lines to `max_line_size` instead of rejecting them.
    pub max_line_size_truncate: bool,
    /// Reject entries older than `reject_old_samples_max_age`.
    pub reject_old_samples: bool,
    /// Oldest acceptable entry age.
    #[serde(with = "humantime_serde")]
    pub reject_old_samples_max_age: Duration,
    /// How far in the future an entry may be.
    #[serde(with = "humantime_serde")]
    pub creation_grace_period: Duration,
    /// Most bytes of structured metadata per entry (names plus values).
    pub max_structured_metadata_size: ByteSize,
    /// Most structured-metadata pairs per entry.
    pub max_structured_metadata_entries_count: usize,
    /// Sustained ingest rate per tenant in line bytes per second; 0 turns the limit off.
    pub ingestion_rate: ByteSize,
    /// Burst allowed above `ingestion_rate`; 0 means the same as the rate.
    pub ingestion_burst_size: ByteSize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_label_names_per_series: 15,
            max_label_name_length: 1024,
            max_label_value_length: 2048,
            max_line_size: ByteSize::kb(256),
            max_line_size_truncate: false,
            reject_old_samples: true,
            reject_old_samples_max_age: Duration::from_secs(7 * 24 * 3600),
            creation_grace_period: Duration::from_secs(600),
            max_structured_metadata_size: ByteSize::kb(64),
            max_structured_metadata_entries_count: 128,
            ingestion_rate: ByteSize::b(0),
            ingestion_burst_size: ByteSize::b(0),
        }
    }
}

/// The bound on entries held between ingest and delivery; pushes beyond it get 429.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Most entries in flight.
    pub max_entries: usize,
    /// Most bytes in flight (lines, metadata and per-entry overhead).
    pub max_bytes: ByteSize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self { max_entries: 500_000, max_bytes: ByteSize::mib(64) }
    }
}

/// When a push is answered 204, from weakest to strongest promise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckMode {
    /// Once processed and handed to the sinks in memory: a crash loses what is not yet
    /// delivered; the queue (`queue.*`) bounds it.
    InMemory,
    /// Once the processed batch is in the write-ahead log (synced as `wal.fsync` says).
    OnDisk,
    /// Once every sink has delivered the processed batch (the archive: once it is in the
    /// spool), or refused it; the log is not used. A push that waits longer than
    /// `wal.delivery_timeout` is answered 503, and may still be delivered.
    OnDelivery,
}

/// When the write-ahead log is synced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    /// Before each push is answered (pushes that arrive together share one sync).
    Batch,
    /// Every `fsync_interval`; a push is answered once written to the file.
    Interval,
}

/// The write-ahead log: accepted batches, after their pipeline, on disk until every sink has
/// delivered them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WalConfig {
    /// Default acknowledgement mode; routes and tenants may set their own.
    pub ack: AckMode,
    /// Directory of the log. Default: `<data_dir>/wal`.
    pub dir: Option<PathBuf>,
    /// Most bytes on disk; beyond it ingest answers 429 until the slowest sink catches up.
    pub max_size: ByteSize,
    /// Size of one segment file; delivered segments are removed whole.
    pub segment_size: ByteSize,
    /// When the log is synced.
    pub fsync: FsyncPolicy,
    /// How often the log is synced with `fsync: interval`.
    #[serde(with = "humantime_serde")]
    pub fsync_interval: Duration,
    /// Per sink, most bytes read from the log and not yet delivered.
    pub read_ahead: ByteSize,
    /// With `ack: on_delivery`, how long a push waits for its sinks before it is answered 503.
    #[serde(with = "humantime_serde")]
    pub delivery_timeout: Duration,
}

impl Default for WalConfig {
    fn default() -> Self {
        Self {
            ack: AckMode::OnDisk,
            dir: None,
            max_size: ByteSize::gib(1),
            segment_size: ByteSize::mib(64),
            fsync: FsyncPolicy::Interval,
            fsync_interval: Duration::from_secs(1),
            read_ahead: ByteSize::mib(16),
            delivery_timeout: Duration::from_secs(10),
        }
    }
}

impl WalConfig {
    /// The log's directory: `dir`, else `<data_dir>/wal`.
    pub fn dir_in(&self, data_dir: &Path) -> PathBuf {
        self.dir.clone().unwrap_or_else(|| data_dir.join("wal"))
    }

    /// True when some route or tenant of `config` acknowledges on disk, i.e. the log is used.
    pub fn in_use(config: &Config) -> bool {
        config.wal.ack == AckMode::OnDisk || Self::asked_for(config)
    }

    /// True when a route or tenant sets `ack: on_disk` itself (whatever `wal.ack` says).
    pub fn asked_for(config: &Config) -> bool {
        let on_disk = |a: Option<AckMode>| a == Some(AckMode::OnDisk);
        config.routes.iter().any(|r| on_disk(r.ack))
            || config.default_route.as_ref().is_some_and(|d| on_disk(d.ack))
            || config.tenants.overrides.values().any(|t| on_disk(t.ack))
    }
}

/// A destination.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SinkConfig {
    /// Forward to Loki's push API.
    Loki(LokiSinkConfig),
    /// Write compressed NDJSON objects to S3, GCS, Azure or a local directory.
    Archive(ArchiveSinkConfig),
}

/// The Loki sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LokiSinkConfig {
    /// Loki's base URL (`http://loki:3100`) or full push URL (`…/loki/api/v1/push`).
    pub url: String,
    /// Send every batch under this tenant instead of the tenant it arrived with.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Flush a tenant's batch when it reaches this many bytes of lines and metadata.
    #[serde(default = "default_loki_batch_size")]
    pub batch_size: ByteSize,
    /// Flush a tenant's batch at the latest this long after its first entry.
    #[serde(default = "default_batch_wait", with = "humantime_serde")]
    pub batch_wait: Duration,
    /// Push requests in flight at once.
    #[serde(default = "default_loki_concurrency")]
    pub max_concurrency: usize,
    /// Timeout of one push request.
    #[serde(default = "default_loki_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Retry policy for 429, 5xx and network errors.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Extra request headers (e.g. for a proxy in front of Loki).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Credentials sent to Loki.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
}

/// Exponential backoff with full jitter; `Retry-After` from Loki is honoured.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// First delay.
    #[serde(with = "humantime_serde")]
    pub min_backoff: Duration,
    /// Largest delay.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Attempts before a batch is dropped (counted as `retries_exhausted`); 0 retries until
    /// shutdown, holding the queue so that ingest answers 429 instead of losing lines.
    pub max_attempts: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(300),
            max_attempts: 0,
        }
    }
}

/// The archive sink (see the README for the layout and the record format).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveSinkConfig {
    /// Where: `s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix`,
    /// `file:///dir`, or a directory. Default: `<data_dir>/archive`.
    #[serde(default)]
    pub url: Option<String>,
    /// S3 and S3-compatible stores; unset fields come from the `AWS_*` environment variables.
    #[serde(default)]
    pub s3: S3Config,
    /// More settings for the store, by the `object_store` crate's config key
    /// (`google_service_account`, `azure_storage_account_key`, `aws_sse_kms_key_id`, …).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// The object key below the prefix, without the file name; placeholders `{tenant}`,
    /// `{date}`, `{year}`, `{month}`, `{day}`, `{hour}` (UTC, of the entries' timestamps) and
    /// `{label:NAME}`.
    #[serde(default = "default_archive_key")]
    pub key: String,
    /// The objects' format: NDJSON records, or Parquet with the same fields.
    #[serde(default)]
    pub format: ArchiveFormat,
    /// How objects are compressed (for Parquet: its pages).
    #[serde(default)]
    pub compression: Compression,
    /// The compressor's level (zstd 1–22, default 3; gzip 0–9, default 6).
    #[serde(default)]
    pub compression_level: Option<i32>,
    /// Close an object when it reaches this many (compressed) bytes.
    #[serde(default = "default_max_object_size")]
    pub max_object_size: ByteSize,
    /// Close an object at the latest this long after its first entry.
    #[serde(default = "default_max_object_age", with = "humantime_serde")]
    pub max_object_age: Duration,
    /// Objects being written at once (one per key); past it the oldest is closed.
    #[serde(default = "default_max_open_objects")]
    pub max_open_objects: usize,
    /// Objects one tenant's entries hold open at once; past it that tenant's oldest is closed,
    /// so a push spread over many hours (or label values) closes its own objects, never
    /// another tenant's.
    #[serde(default = "default_max_open_objects_per_tenant")]
    pub max_open_objects_per_tenant: usize,
    /// Where objects are written before upload. Default: `<data_dir>/spool/<sink name>`.
    #[serde(default)]
    pub spool_dir: Option<PathBuf>,
    /// Most bytes in the spool (objects being written and waiting for upload); past it the
    /// sink stops taking batches, and ingest answers 429 once the queue is full.
    #[serde(default = "default_max_spool")]
    pub max_spool: ByteSize,
    /// Uploads in flight at once.
    #[serde(default = "default_upload_concurrency")]
    pub upload_concurrency: usize,
    /// Objects larger than this are uploaded in parts of this size (at least 5 MiB for S3).
    #[serde(default = "default_part_size")]
    pub part_size: ByteSize,
    /// Backoff between upload attempts; `max_attempts: 0` (the default) retries until it works.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Write a small object at start to check the store, the bucket and the credentials, so a
    /// mistake fails the start instead of every upload later.
    #[serde(default = "default_true")]
    pub check_on_start: bool,
}

/// S3 settings; an unset one is read from `AWS_*` variables (`AWS_ENDPOINT_URL`,
/// `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, …), then
/// from the instance's or pod's role.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// An S3-compatible endpoint (`http://seaweedfs:8333`, `https://minio.example`).
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    /// Address buckets as `endpoint/bucket` (path style, what most S3-compatible stores want)
    /// rather than `bucket.endpoint`. Default: path style with an `endpoint`, virtual-hosted
    /// style on AWS.
    #[serde(default)]
    pub path_style: Option<bool>,
    #[serde(default)]
    pub access_key_id: Option<String>,
    #[serde(default)]
    pub secret_access_key: Option<String>,
    #[serde(default)]
    pub session_token: Option<String>,
}

/// Format of archive objects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArchiveFormat {
    /// One JSON record per line.
    #[default]
    Ndjson,
    /// `.parquet`, one row per entry.
    Parquet,
}

/// Compression of archive objects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// `.ndjson.zst`
    #[default]
    Zstd,
    /// `.ndjson.gz`
    Gzip,
    /// `.ndjson`
    None,
}

/// A route: which streams go to which sinks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Name used in metrics and logs; default `route-<index>`.
    #[serde(default)]
    pub name: Option<String>,
    /// Tenants this route applies to; empty means all.
    #[serde(default)]
    pub tenants: Vec<String>,
    /// Loki stream selector, e.g. `{namespace="airflow", app=~"ml-.*"}`; absent matches all.
    #[serde(default)]
    pub selector: Option<String>,
    /// Sinks that receive the matching streams.
    pub sinks: Vec<String>,
    /// Keep evaluating later routes after this one matched.
    #[serde(default, rename = "continue")]
    pub continue_matching: bool,
    /// Pipeline (a key of `pipelines`) the matching streams run through before the sinks.
    #[serde(default)]
    pub pipeline: Option<String>,
    /// Acknowledgement mode of the matching streams (default: `wal.ack`).
    #[serde(default)]
    pub ack: Option<AckMode>,
    /// Tenants a stage of this route may move entries to (the `__tenant_id__` label); a move to
    /// any other tenant is refused and counted. Empty: entries keep the pushing tenant.
    #[serde(default)]
    pub tenants_out: Vec<String>,
}

/// Where streams that match no route go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultRouteConfig {
    /// Sinks; an empty list drops unmatched streams (counted as `no_route`).
    pub sinks: Vec<String>,
    /// Pipeline (a key of `pipelines`) unmatched streams run through before the sinks.
    #[serde(default)]
    pub pipeline: Option<String>,
    /// Acknowledgement mode of unmatched streams (default: `wal.ack`).
    #[serde(default)]
    pub ack: Option<AckMode>,
    /// Tenants a stage of the default route may move entries to, as `routes[].tenants_out`.
    #[serde(default)]
    pub tenants_out: Vec<String>,
}

/// A pipeline: stages applied in order to every batch of the routes that name it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// The stages, in order.
    pub stages: Vec<StageConfig>,
}

/// One stage: a WebAssembly plugin, its configuration, its limits and its failure policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageConfig {
    /// Name in metrics and logs; default `<pipeline>/<plugin name or file stem>`.
    #[serde(default)]
    pub name: Option<String>,
    /// A built-in plugin's name (`redact`), or the path of a plugin's `.wasm` (a component built
    /// for `wasm32-wasip2`; relative paths resolve against the configuration file's directory).
    /// A value with a `/` or ending in `.wasm` is a path.
    pub plugin: PathBuf,
    /// How a built-in runs: `wasm` (default), sandboxed like any plugin, or `native`, compiled
    /// into sluice: faster, but without the sandbox's time and memory limits. Plugin files are
    /// always Wasm.
    #[serde(default)]
    pub run: RunMode,
    /// The plugin's own configuration, any YAML; the plugin's `init` receives it as JSON
    /// (absent: `{}`).
    #[serde(default = "default_plugin_config")]
    pub config: serde_json::Value,
    /// What happens to a batch the plugin fails on (trap, timeout, memory, error, malformed
    /// output): `pass` it on unchanged, `drop` it, or send it unchanged to the `dead_letter`
    /// sink. Default: `drop` for the built-ins that protect data (`redact`, `filter`), whose
    /// failure must not let lines through unprotected; `pass` for every other plugin.
    #[serde(default)]
    pub on_error: Option<OnErrorConfig>,
    /// Sink that receives failed batches when `on_error: dead_letter`.
    #[serde(default)]
    pub dead_letter: Option<String>,
    /// Longest a `process` call may run (enforced by epoch interruption, 10 ms granularity);
    /// `init` may take ten times as long, at least 5 s.
    #[serde(default = "default_plugin_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Largest linear memory of one plugin instance; growing beyond it fails (and usually traps).
    #[serde(default = "default_plugin_memory")]
    pub max_memory: ByteSize,
    /// Secret behind the `keyed-hash` import, typically `${REDACT_KEY}`. Unset: a fixed,
    /// publicly known key (a warning at the first hash): hashes are then not secret.
    #[serde(default)]
    pub hash_key: Option<String>,
}

/// How a stage runs its plugin.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunMode {
    /// In the WebAssembly sandbox.
    #[default]
    Wasm,
    /// Compiled into sluice (built-ins only).
    Native,
}

/// Where a stage's plugin comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginSource {
    /// A built-in, by name.
    Builtin(String),
    /// A `.wasm` file, resolved.
    File(PathBuf),
}

/// Built-in plugins whose failure must not pass a batch on as it was: it would go out
/// unredacted or unfiltered.
pub const FAIL_CLOSED_BUILTINS: &[&str] = &["redact", "filter"];

impl StageConfig {
    /// Whether the stage's plugin is a built-in that protects data ([`FAIL_CLOSED_BUILTINS`]).
    fn protects_data(&self) -> bool {
        let name = self.plugin.to_string_lossy();
        matches!(plugin_source(Path::new(""), &self.plugin), PluginSource::Builtin(_))
            && FAIL_CLOSED_BUILTINS.contains(&name.as_ref())
    }

    /// The stage's failure policy: as configured, else `drop` for a built-in that protects data
    /// and `pass` for any other plugin.
    pub fn on_error(&self) -> OnErrorConfig {
        self.on_error.unwrap_or(if self.protects_data() { OnErrorConfig::Drop } else { OnErrorConfig::Pass })
    }
}

/// A stage's failure policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnErrorConfig {
    /// Pass the batch on as it was before the stage.
    #[default]
    Pass,
    /// Drop the batch (counted).
    Drop,
    /// Send the batch, as it was before the stage, to the `dead_letter` sink.
    DeadLetter,
}

/// Largest `max_memory` a stage may ask for (wasm32's whole address space).
pub const MAX_PLUGIN_MEMORY: u64 = 4 << 30;

/// A stage as [`Config::check_stages`] hands it to its check.
#[derive(Debug, Clone)]
pub struct StageRef<'a> {
    pub pipeline: &'a str,
    /// Index in the pipeline's `stages`.
    pub index: usize,
    /// The stage's name in metrics and logs.
    pub name: String,
    pub stage: &'a StageConfig,
    /// The plugin, resolved.
    pub source: PluginSource,
}

/// A problem a plugin check found, and which key of the stage it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageProblem {
    /// `plugin` (cannot be read or compiled) or `config` (rejected by the plugin's `init`).
    pub key: &'static str,
    pub message: String,
}

fn default_plugin_config() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}
fn default_plugin_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_plugin_memory() -> ByteSize {
    ByteSize::mib(64)
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("sluice-data")
}
fn default_loki_batch_size() -> ByteSize {
    ByteSize::mib(1)
}
fn default_true() -> bool {
    true
}
fn default_archive_key() -> String {
    "tenant={tenant}/dt={date}/hour={hour}".into()
}
fn default_max_object_size() -> ByteSize {
    ByteSize::mib(64)
}
fn default_max_object_age() -> Duration {
    Duration::from_secs(300)
}
fn default_max_open_objects() -> usize {
    32
}
fn default_max_open_objects_per_tenant() -> usize {
    8
}
fn default_max_spool() -> ByteSize {
    ByteSize::gib(1)
}
fn default_upload_concurrency() -> usize {
    4
}
fn default_part_size() -> ByteSize {
    ByteSize::mib(8)
}
fn default_batch_wait() -> Duration {
    Duration::from_secs(1)
}
fn default_loki_concurrency() -> usize {
    4
}
fn default_loki_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Name of the archive sink in the embedded default.
pub const DEFAULT_ARCHIVE_SINK: &str = "local";
/// Name of the Loki sink that `--loki-url` adds to the embedded default.
pub const DEFAULT_LOKI_SINK: &str = "loki";

impl Config {
    /// The embedded default: a local archive under the data dir, every stream routed to it.
    pub fn embedded_default() -> Self {
        // Objects close after 10 s rather than 5 min, so that someone trying sluice out sees
        // their lines in the archive while they look.
        let archive =
            ArchiveSinkConfig { max_object_age: Duration::from_secs(10), ..ArchiveSinkConfig::local() };
        Self {
            server: ServerConfig::default(),
            data_dir: default_data_dir(),
            tenants: TenantsConfig::default(),
            limits: Limits::default(),
            queue: QueueConfig::default(),
            wal: WalConfig::default(),
            sinks: BTreeMap::from([(DEFAULT_ARCHIVE_SINK.to_string(), SinkConfig::Archive(archive))]),
            routes: Vec::new(),
            default_route: None,
            pipelines: BTreeMap::new(),
            reload: ReloadConfig::default(),
            source: None,
            base_dir: PathBuf::new(),
        }
    }

    /// Reads, substitutes `${VAR}`s, and parses a file. Semantic checks are [`Config::validate`].
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigErrors(vec![err(path.display().to_string(), format!("cannot read: {e}"))]))?;
        let mut config = Self::parse(&text, |name| std::env::var(name).ok())?;
        config.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// Parses YAML text, looking up `${VAR}` with `env`.
    pub fn parse(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigErrors> {
        let text = substitute_env(text, env).map_err(ConfigErrors)?;
        // An empty file is the embedded default's structure with no sinks: treat as `{}`.
        let text = if text.trim().is_empty() { "{}".to_string() } else { text };
        let de = serde_yaml_ng::Deserializer::from_str(&text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let location = match inner.location() {
                Some(l) if path == "." => format!("line {}", l.line()),
                Some(l) => format!("{path} (line {})", l.line()),
                None => path.clone(),
            };
            // serde_yaml_ng appends " at line X column Y"; the location already says where.
            let message = inner.to_string();
            let message = message.split(" at line ").next().unwrap_or(&message);
            let message = message.strip_prefix(&format!("{path}: ")).unwrap_or(message).to_string();
            ConfigErrors(vec![err(location, message)])
        })
    }

    /// Applies the command line's overrides.
    pub fn apply_overrides(&mut self, o: &Overrides) -> Result<(), ConfigErrors> {
        if let Some(listen) = o.listen {
            self.server.listen = listen;
        }
        if let Some(dir) = &o.data_dir {
            self.data_dir = dir.clone();
        }
        if let Some(url) = &o.loki_url {
            let mut found = false;
            for sink in self.sinks.values_mut() {
                if let SinkConfig::Loki(loki) = sink {
                    loki.url = url.clone();
                    found = true;
                }
            }
            if !found {
                if o.from_file {
                    return Err(ConfigErrors(vec![err(
                        "--loki-url",
                        "the configuration file has no sink of type `loki` whose url it could set; add one under `sinks`",
                    )]));
                }
                self.sinks.insert(DEFAULT_LOKI_SINK.into(), SinkConfig::Loki(LokiSinkConfig::new(url)));
            }
        }
        Ok(())
    }

    /// Every semantic problem, each with its location. Selectors are compiled by the caller's
    /// `check_selector`, so this module does not depend on the router.
    pub fn validate(&self, check_selector: impl Fn(&str) -> Result<(), String>) -> Result<(), ConfigErrors> {
        let mut errors = Vec::new();
        if self.tenants.default.is_empty() {
            errors.push(err("tenants.default", "must not be empty"));
        }
        for (tenant, t) in &self.tenants.overrides {
            if let Some(Err(e)) = t.auth.as_ref().map(AuthConfig::check) {
                errors.push(err(format!("tenants.overrides.{tenant}.auth"), e));
            }
            if let Err(e) = self.limits_for_override(t) {
                errors.push(err(format!("tenants.overrides.{tenant}.limits"), e));
            }
            if !t.client_cert_common_names.is_empty()
                && self.server.tls.as_ref().is_none_or(|t| t.client_ca_file.is_none())
            {
                errors.push(err(
                    format!("tenants.overrides.{tenant}.client_cert_common_names"),
                    "needs server.tls.client_ca_file: without it no client certificate is asked for",
                ));
            }
            if t.client_cert_common_names.iter().any(String::is_empty) {
                errors.push(err(
                    format!("tenants.overrides.{tenant}.client_cert_common_names"),
                    "a name is empty",
                ));
            }
        }
        if let Some(tls) = &self.server.tls {
            if tls.reload_interval < Duration::from_millis(10) {
                errors.push(err("server.tls.reload_interval", "must be at least 10ms"));
            }
            // Written without a CA, `required` would read as a promise that nothing keeps.
            if tls.client_auth.is_some() && tls.client_ca_file.is_none() {
                errors.push(err(
                    "server.tls.client_auth",
                    "has no effect without client_ca_file: no client certificate is asked for",
                ));
            }
        }
        if self.reload.watch && self.reload.watch_interval < Duration::from_millis(10) {
            errors.push(err("reload.watch_interval", "must be at least 10ms (or set reload.watch: false)"));
        }
        if self.queue.max_entries == 0 {
            errors.push(err("queue.max_entries", "must be at least 1"));
        }
        if self.queue.max_bytes.as_u64() == 0 {
            errors.push(err("queue.max_bytes", "must be larger than 0"));
        }
        if self.wal.segment_size.as_u64() < 1 << 20 {
            errors.push(err("wal.segment_size", "must be at least 1MiB"));
        }
        if self.wal.max_size.as_u64() < self.wal.segment_size.as_u64() {
            errors.push(err("wal.max_size", "must be at least wal.segment_size"));
        }
        if self.wal.fsync_interval.is_zero() {
            errors.push(err(
                "wal.fsync_interval",
                "must be longer than 0 (use `fsync: batch` to sync every push)",
            ));
        }
        if self.wal.delivery_timeout.is_zero() {
            errors.push(err("wal.delivery_timeout", "must be longer than 0"));
        }
        if self.wal.read_ahead.as_u64() == 0 {
            errors.push(err("wal.read_ahead", "must be larger than 0"));
        }
        for name in self.sinks.keys().filter(|n| n.len() > 255) {
            errors.push(err(format!("sinks.{name}"), "a sink name may have at most 255 bytes"));
        }
        if self.server.max_body_size.as_u64() == 0 || self.server.max_decompressed_size.as_u64() == 0 {
            errors.push(err("server", "max_body_size and max_decompressed_size must be larger than 0"));
        }
        if self.tenants.max_active == 0 || self.tenants.idle_after.is_zero() {
            errors.push(err("tenants", "max_active and idle_after must be larger than 0"));
        }
        let s = &self.server;
        for (key, zero) in [
            ("max_entries_per_push", s.max_entries_per_push == 0),
            ("max_streams_per_push", s.max_streams_per_push == 0),
            ("max_connections", s.max_connections == 0),
            ("max_inflight_requests", s.max_inflight_requests == 0),
            ("header_read_timeout", s.header_read_timeout.is_zero()),
            ("body_read_timeout", s.body_read_timeout.is_zero()),
        ] {
            if zero {
                errors.push(err(format!("server.{key}"), "must be larger than 0"));
            }
        }
        if self.sinks.is_empty() {
            errors.push(err("sinks", "no sinks configured: add at least one (type `loki` or `archive`)"));
        }
        for (name, sink) in &self.sinks {
            if let SinkConfig::Archive(archive) = sink {
                for (field, message) in archive.problems() {
                    errors.push(err(format!("sinks.{name}.{field}"), message));
                }
            }
            if let SinkConfig::Loki(loki) = sink {
                let at = format!("sinks.{name}");
                if let Err(e) = loki.push_url() {
                    errors.push(err(format!("{at}.url"), e));
                }
                if loki.max_concurrency == 0 {
                    errors.push(err(format!("{at}.max_concurrency"), "must be at least 1"));
                }
                if loki.retry.min_backoff > loki.retry.max_backoff {
                    errors.push(err(format!("{at}.retry"), "min_backoff is larger than max_backoff"));
                }
                if let Some(Err(e)) = loki.auth.as_ref().map(AuthConfig::check) {
                    errors.push(err(format!("{at}.auth"), e));
                }
                for header in loki.headers.keys() {
                    if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
                        errors.push(err(format!("{at}.headers.{header}"), "not a valid HTTP header name"));
                    } else if header.eq_ignore_ascii_case("x-scope-orgid") {
                        errors.push(err(
                            format!("{at}.headers.{header}"),
                            "set the tenant with `tenant`, not a header",
                        ));
                    }
                }
            }
        }
        let check_sinks = |at: String, sinks: &[String], errors: &mut Vec<ConfigError>| {
            for s in sinks {
                if !self.sinks.contains_key(s) {
                    let known: Vec<_> = self.sinks.keys().map(String::as_str).collect();
                    errors.push(err(
                        at.clone(),
                        format!("unknown sink `{s}` (configured: {})", known.join(", ")),
                    ));
                }
            }
        };
        let mut names = BTreeMap::new();
        for (i, route) in self.routes.iter().enumerate() {
            let at = format!("routes[{i}]");
            if route.sinks.is_empty() {
                errors.push(err(format!("{at}.sinks"), "a route needs at least one sink"));
            }
            check_sinks(format!("{at}.sinks"), &route.sinks, &mut errors);
            if let Some(sel) = &route.selector
                && let Err(e) = check_selector(sel)
            {
                errors.push(err(format!("{at}.selector"), e));
            }
            if let Some(previous) = names.insert(route_name(i, route), i) {
                errors.push(err(format!("{at}.name"), format!("same name as routes[{previous}]")));
            }
            check_tenants_out(&format!("{at}.tenants_out"), &route.tenants_out, &mut errors);
        }
        if let Some(default) = &self.default_route {
            check_sinks("default_route.sinks".into(), &default.sinks, &mut errors);
            check_tenants_out("default_route.tenants_out", &default.tenants_out, &mut errors);
        }
        let check_pipeline = |at: &str, name: &Option<String>, errors: &mut Vec<ConfigError>| {
            if let Some(p) = name
                && !self.pipelines.contains_key(p)
            {
                let known: Vec<_> = self.pipelines.keys().map(String::as_str).collect();
                errors.push(err(at, format!("unknown pipeline `{p}` (configured: {})", known.join(", "))));
            }
        };
        for (i, route) in self.routes.iter().enumerate() {
            check_pipeline(&format!("routes[{i}].pipeline"), &route.pipeline, &mut errors);
        }
        if let Some(default) = &self.default_route {
            check_pipeline("default_route.pipeline", &default.pipeline, &mut errors);
        }
        for (name, pipeline) in &self.pipelines {
            let mut stage_names = BTreeMap::new();
            for (i, stage) in pipeline.stages.iter().enumerate() {
                let at = format!("pipelines.{name}.stages[{i}]");
                if let PluginSource::File(path) = self.plugin_source(stage) {
                    if !path.is_file() {
                        errors.push(err(
                            format!("{at}.plugin"),
                            format!("no plugin file at {} (relative paths start at the configuration file's directory)", path.display()),
                        ));
                    }
                    if stage.run == RunMode::Native {
                        errors.push(err(
                            format!("{at}.run"),
                            "`run: native` is only for built-in plugins; a plugin file always runs as Wasm",
                        ));
                    }
                }
                match (stage.on_error(), &stage.dead_letter) {
                    (OnErrorConfig::DeadLetter, None) => errors.push(err(
                        format!("{at}.dead_letter"),
                        "on_error: dead_letter needs `dead_letter: <sink name>`",
                    )),
                    (OnErrorConfig::DeadLetter, Some(sink)) => {
                        check_sinks(format!("{at}.dead_letter"), std::slice::from_ref(sink), &mut errors);
                    }
                    (_, Some(_)) => errors
                        .push(err(format!("{at}.dead_letter"), "only used with `on_error: dead_letter`")),
                    (_, None) => {}
                }
                if stage.timeout.is_zero() {
                    errors.push(err(format!("{at}.timeout"), "must be larger than 0"));
                }
                let memory = stage.max_memory.as_u64();
                if memory < ByteSize::mib(1).as_u64() || memory > MAX_PLUGIN_MEMORY {
                    errors.push(err(format!("{at}.max_memory"), "must be between 1MiB and 4GiB"));
                }
                if let Some(previous) = stage_names.insert(stage_name(name, stage), i) {
                    errors.push(err(
                        format!("{at}.name"),
                        format!("same name as stages[{previous}]; give one of them a `name`"),
                    ));
                }
            }
        }
        if errors.is_empty() { Ok(()) } else { Err(ConfigErrors(errors)) }
    }

    /// Runs `check` (compile, instantiate, `init`) on every stage whose plugin exists and
    /// reports what it finds at `pipelines.<name>.stages[<i>].<key>`. Kept apart from
    /// [`Config::validate`] so this module does not depend on the plugin host.
    pub fn check_stages(
        &self,
        mut check: impl FnMut(StageRef<'_>) -> Result<(), StageProblem>,
    ) -> Result<(), ConfigErrors> {
        let mut errors = Vec::new();
        for (name, pipeline) in &self.pipelines {
            for (i, stage) in pipeline.stages.iter().enumerate() {
                let source = self.plugin_source(stage);
                if matches!(&source, PluginSource::File(path) if !path.is_file()) {
                    continue;
                }
                let at = StageRef { pipeline: name, index: i, name: stage_name(name, stage), stage, source };
                if let Err(p) = check(at) {
                    errors.push(err(format!("pipelines.{name}.stages[{i}].{}", p.key), p.message));
                }
            }
        }
        if errors.is_empty() { Ok(()) } else { Err(ConfigErrors(errors)) }
    }

    /// The files whose change triggers a reload: the configuration file and every plugin file.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        let plugins =
            self.pipelines.values().flat_map(|p| &p.stages).filter_map(|s| match self.plugin_source(s) {
                PluginSource::File(path) => Some(path),
                PluginSource::Builtin(_) => None,
            });
        self.source.iter().cloned().chain(plugins).collect()
    }

    /// Where a stage's plugin comes from (see [`plugin_source`]).
    pub fn plugin_source(&self, stage: &StageConfig) -> PluginSource {
        plugin_source(&self.base_dir, &stage.plugin)
    }

    /// What is valid but probably not meant: `sluice validate` prints it, `sluice run` logs it.
    pub fn warnings(&self) -> Vec<ConfigError> {
        let mut warnings = Vec::new();
        for (name, pipeline) in &self.pipelines {
            for (i, stage) in pipeline.stages.iter().enumerate() {
                if stage.protects_data() && stage.on_error == Some(OnErrorConfig::Pass) {
                    warnings.push(err(
                        format!("pipelines.{name}.stages[{i}].on_error"),
                        format!(
                            "`pass` on `{}`: a batch it fails on (a timeout, a trap) goes on unprotected; use `drop` or `dead_letter`",
                            stage.plugin.display()
                        ),
                    ));
                }
            }
        }
        warnings
    }

    /// The limits of one tenant: the global ones with its overrides applied.
    pub fn limits_for(&self, tenant: &str) -> Limits {
        match self.tenants.overrides.get(tenant) {
            Some(t) => self.limits_for_override(t).unwrap_or_else(|_| self.limits.clone()),
            None => self.limits.clone(),
        }
    }

    fn limits_for_override(&self, t: &TenantConfig) -> Result<Limits, String> {
        let Some(overrides) = &t.limits else { return Ok(self.limits.clone()) };
        let mut merged = serde_yaml_ng::to_value(&self.limits).map_err(|e| e.to_string())?;
        if let serde_yaml_ng::Value::Mapping(m) = &mut merged {
            for (k, v) in overrides {
                m.insert(k.clone(), v.clone());
            }
        }
        serde_yaml_ng::from_value(merged).map_err(|e| e.to_string())
    }
}

/// The name a stage goes by in metrics and logs: `name`, or `<pipeline>/<plugin file stem>`.
pub fn stage_name(pipeline: &str, stage: &StageConfig) -> String {
    stage.name.clone().unwrap_or_else(|| {
        let stem = stage.plugin.file_stem().map(|s| s.to_string_lossy()).unwrap_or_default();
        format!("{pipeline}/{stem}")
    })
}

/// Where a stage's `plugin` comes from: a bare name (no `/`, not ending in `.wasm`) is a
/// built-in; anything else a file, `plugin` itself when absolute, else under `base_dir`.
pub fn plugin_source(base_dir: &Path, plugin: &Path) -> PluginSource {
    let text = plugin.to_string_lossy();
    let is_path = text.contains('/') || text.contains('\\') || text.ends_with(".wasm") || text.is_empty();
    if is_path { PluginSource::File(base_dir.join(plugin)) } else { PluginSource::Builtin(text.into_owned()) }
}

/// Every tenant a route may move entries to must be a valid tenant id, listed once.
fn check_tenants_out(at: &str, tenants: &[String], errors: &mut Vec<ConfigError>) {
    for (i, t) in tenants.iter().enumerate() {
        if !crate::ingest::is_valid_tenant_id(t) {
            errors.push(err(
                format!("{at}[{i}]"),
                format!(
                    "`{}` is not a valid tenant id (1 to 150 of a-z, A-Z, 0-9 and !-_.*'())",
                    t.escape_default()
                ),
            ));
        } else if tenants[..i].contains(t) {
            errors.push(err(format!("{at}[{i}]"), format!("tenant `{t}` is listed twice")));
        }
    }
}

/// The name a route goes by in metrics and logs.
pub fn route_name(index: usize, route: &RouteConfig) -> String {
    route.name.clone().unwrap_or_else(|| format!("route-{index}"))
}

impl ArchiveSinkConfig {
    /// All defaults: an archive under `<data_dir>/archive`.
    pub fn local() -> Self {
        Self {
            url: None,
            s3: S3Config::default(),
            options: BTreeMap::new(),
            key: default_archive_key(),
            format: ArchiveFormat::default(),
            compression: Compression::default(),
            compression_level: None,
            max_object_size: default_max_object_size(),
            max_object_age: default_max_object_age(),
            max_open_objects: default_max_open_objects(),
            max_open_objects_per_tenant: default_max_open_objects_per_tenant(),
            spool_dir: None,
            max_spool: default_max_spool(),
            upload_concurrency: default_upload_concurrency(),
            part_size: default_part_size(),
            retry: RetryConfig::default(),
            check_on_start: true,
        }
    }

    /// Every problem with the settings, as `(field, message)`.
    fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if let Some(url) = &self.url
            && let Err(e) = crate::archive::store::Location::parse(url)
        {
            problems.push(("url", e));
        }
        if let Err(e) = crate::archive::key::KeyTemplate::parse(&self.key) {
            problems.push(("key", e));
        }
        let level_range = match self.compression {
            Compression::Zstd => Some(1..=22),
            Compression::Gzip => Some(0..=9),
            Compression::None => None,
        };
        match (self.compression_level, level_range) {
            (Some(level), Some(range)) if !range.contains(&level) => problems.push((
                "compression_level",
                format!(
                    "{level} is out of range for {:?}: {}..={}",
                    self.compression,
                    range.start(),
                    range.end()
                ),
            )),
            (Some(_), None) => {
                problems.push(("compression_level", "has no meaning with `compression: none`".into()))
            }
            _ => {}
        }
        if self.max_object_size.as_u64() == 0 {
            problems.push(("max_object_size", "must be more than 0".into()));
        }
        if self.max_object_age.is_zero() {
            problems.push(("max_object_age", "must be more than 0".into()));
        }
        if self.max_open_objects == 0 {
            problems.push(("max_open_objects", "must be at least 1".into()));
        }
        if self.max_open_objects_per_tenant == 0 {
            problems.push(("max_open_objects_per_tenant", "must be at least 1".into()));
        }
        if self.upload_concurrency == 0 {
            problems.push(("upload_concurrency", "must be at least 1".into()));
        }
        if self.part_size.as_u64() < ByteSize::mib(5).as_u64() {
            problems.push(("part_size", "must be at least 5 MiB (S3's smallest part)".into()));
        }
        if self.max_spool.as_u64() < 2 * self.max_object_size.as_u64() {
            problems.push((
                "max_spool",
                format!("must hold at least two objects of max_object_size ({})", self.max_object_size),
            ));
        }
        if self.retry.min_backoff > self.retry.max_backoff {
            problems.push(("retry", "min_backoff is larger than max_backoff".into()));
        }
        problems
    }
}

impl LokiSinkConfig {
    /// A Loki sink with every default, for `url`.
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_string(),
            tenant: None,
            batch_size: default_loki_batch_size(),
            batch_wait: default_batch_wait(),
            max_concurrency: default_loki_concurrency(),
            timeout: default_loki_timeout(),
            retry: RetryConfig::default(),
            headers: BTreeMap::new(),
            auth: None,
        }
    }

    /// The push endpoint: `url` itself when it has a path, else `url` + `/loki/api/v1/push`.
    pub fn push_url(&self) -> Result<String, String> {
        let shown = redact_url(&self.url);
        let uri: http::Uri = self.url.parse().map_err(|e| format!("`{shown}` is not a URL: {e}"))?;
        match uri.scheme_str() {
            Some("http" | "https") => {}
            _ => return Err(format!("`{shown}` must start with http:// or https://")),
        }
        if uri.host().is_none() {
            return Err(format!("`{shown}` has no host"));
        }
        Ok(match uri.path() {
            "" | "/" => format!("{}/loki/api/v1/push", self.url.trim_end_matches('/')),
            _ => self.url.clone(),
        })
    }
}

/// A thread count setting: `n`, or one per CPU core when it is 0.
pub fn threads_or_cores(n: usize) -> usize {
    match n {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

/// `url` with any `user:password@` in its authority replaced by `***@`, for messages.
pub fn redact_url(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let end = url[start..].find(['/', '?', '#']).map_or(url.len(), |i| start + i);
    match url[start..end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..start], &url[start + at..]),
        None => url.to_string(),
    }
}

/// Settings from the command line that take precedence over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub loki_url: Option<String>,
    pub data_dir: Option<PathBuf>,
    /// Whether a configuration file was given (`--loki-url` adds a sink only to the default).
    pub from_file: bool,
}

/// Replaces `${VAR}` and `${VAR:-default}`; `$$` is a literal `$`. Every unset variable without
/// a default is reported with its line.
fn substitute_env(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<String, Vec<ConfigError>> {
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let mut rest = line;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            if let Some(tail) = after.strip_prefix('$') {
                out.push('$');
                rest = tail;
            } else if let Some(body) = after.strip_prefix('{') {
                let Some(end) = body.find('}') else {
                    errors.push(err(format!("line {}", n + 1), "`${` without a closing `}`"));
                    out.push_str(&rest[i..]);
                    rest = "";
                    break;
                };
                let expr = &body[..end];
                let (name, default) = match expr.split_once(":-") {
                    Some((name, default)) => (name, Some(default)),
                    None => (expr, None),
                };
                let valid = !name.is_empty()
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    && !name.as_bytes()[0].is_ascii_digit();
                if !valid {
                    errors.push(err(
                        format!("line {}", n + 1),
                        format!("`${{{expr}}}` is not a valid variable reference"),
                    ));
                } else {
                    match (env(name).filter(|v| !v.is_empty() || default.is_none()), default) {
                        (Some(v), _) => out.push_str(&v),
                        (None, Some(d)) => out.push_str(d),
                        (None, None) => errors.push(err(
                            format!("line {}", n + 1),
                            format!("environment variable `{name}` is not set (use `${{{name}:-default}}` for a default)"),
                        )),
                    }
                }
                rest = &body[end + 1..];
            } else {
                out.push('$');
                rest = after;
            }
        }
        out.push_str(rest);
    }
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "TOKEN" => Some("s3cret".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn no_selector_check(_: &str) -> Result<(), String> {
        Ok(())
    }

    #[test]
    fn substitutes_variables_defaults_and_escapes() {
        let text = "a: ${TOKEN}\nb: ${MISSING:-fallback}\nc: $$HOME\nd: ${EMPTY:-x}\ne: $5\n";
        let out = substitute_env(text, env).expect("substitutes");
        assert_eq!(out, "a: s3cret\nb: fallback\nc: $HOME\nd: x\ne: $5\n");
    }

    #[test]
    fn stages_that_protect_data_fail_closed_by_default_and_pass_is_warned_about() {
        let yaml = r#"
sinks: { local: { type: archive } }
pipelines:
  p:
    stages:
      - plugin: redact
      - plugin: filter
        on_error: pass
      - plugin: parse-json
      - plugin: ./filter.wasm
default_route: { sinks: [local], pipeline: p }
"#;
        let cfg = Config::parse(yaml, |_| None).expect("parses");
        let stages = &cfg.pipelines["p"].stages;
        let policies: Vec<OnErrorConfig> = stages.iter().map(StageConfig::on_error).collect();
        assert_eq!(
            policies,
            [OnErrorConfig::Drop, OnErrorConfig::Pass, OnErrorConfig::Pass, OnErrorConfig::Pass],
            "redact drops by default; an explicit pass stays; other plugins (a file named filter too) pass"
        );
        let warnings: Vec<String> = cfg.warnings().iter().map(ToString::to_string).collect();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("pipelines.p.stages[1].on_error: `pass` on `filter`"),
            "{warnings:?}"
        );
    }

    #[test]
    fn urls_in_messages_lose_their_credentials() {
        assert_eq!(redact_url("http://user:pa%40ss@loki:3100/x"), "http://***@loki:3100/x");
        assert_eq!(redact_url("https://token@loki"), "https://***@loki");
        assert_eq!(redact_url("http://loki:3100/a@b"), "http://loki:3100/a@b", "an @ in the path stays");
        assert_eq!(redact_url("no scheme"), "no scheme");
    }

    #[test]
    fn reports_every_unset_variable_with_its_line() {
        let errors = substitute_env("a: ${ONE}\nb: ok\nc: ${TWO}\nd: ${bad-name}\n", env).expect_err("unset");
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(shown.len(), 3, "{shown:?}");
        assert!(shown[0].starts_with("line 1: environment variable `ONE`"), "{}", shown[0]);
        assert!(shown[1].starts_with("line 3: environment variable `TWO`"), "{}", shown[1]);
        assert!(shown[2].starts_with("line 4: `${bad-name}`"), "{}", shown[2]);
    }

    #[test]
    fn parses_a_full_config_with_human_units() {
        let text = r#"
server:
  listen: 0.0.0.0:3100
  max_body_size: 4MiB
  shutdown_timeout: 5s
tenants:
  overrides:
    team-a:
      auth: { bearer_token: "${TOKEN}" }
      limits: { max_line_size: 1KB }
sinks:
  loki: { type: loki, url: "http://loki:3100", batch_wait: 250ms }
  local: { type: archive }
routes:
  - selector: '{app="x"}'
    sinks: [loki]
    continue: true
"#;
        let cfg = Config::parse(text, env).expect("parses");
        assert_eq!(cfg.server.max_body_size, ByteSize::mib(4));
        assert_eq!(cfg.server.shutdown_timeout, Duration::from_secs(5));
        assert!(cfg.routes[0].continue_matching);
        cfg.validate(no_selector_check).expect("valid");
        assert_eq!(cfg.limits_for("team-a").max_line_size, ByteSize::kb(1));
        assert_eq!(cfg.limits_for("team-a").max_label_names_per_series, 15);
        assert_eq!(cfg.limits_for("other").max_line_size, ByteSize::kb(256));
        let Some(SinkConfig::Loki(loki)) = cfg.sinks.get("loki") else { panic!("loki sink") };
        assert_eq!(loki.push_url().expect("url"), "http://loki:3100/loki/api/v1/push");
        assert_eq!(loki.batch_wait, Duration::from_millis(250));
    }

    #[test]
    fn unknown_keys_are_errors_with_their_path() {
        let e = Config::parse("sinks:\n  a: { type: loki, url: 'http://x', bach_size: 1MiB }\n", env)
            .expect_err("unknown key");
        let shown = e.to_string();
        assert!(shown.contains("sinks.a"), "{shown}");
        assert!(shown.contains("bach_size"), "{shown}");
        let e = Config::parse("servr: {}\n", env).expect_err("unknown top-level key");
        assert!(e.to_string().contains("servr"), "{e}");
    }

    #[test]
    fn validate_reports_every_problem() {
        let text = r#"
sinks:
  loki: { type: loki, url: "ftp://nowhere", max_concurrency: 0, headers: { X-Scope-OrgID: t } }
routes:
  - sinks: [lokki]
    selector: "{bad"
  - sinks: []
default_route: { sinks: [nope] }
tenants:
  overrides:
    t: { limits: { max_line_size: "huge" }, auth: { bearer_token: x, username: y }, client_cert_common_names: [t] }
server: { tls: { cert_file: c, key_file: k, client_auth: required, reload_interval: 1ms } }
"#;
        let cfg = Config::parse(text, env).expect("parses");
        let errors = cfg
            .validate(|s| if s.starts_with("{bad") { Err("unclosed selector".into()) } else { Ok(()) })
            .expect_err("invalid");
        let locations: Vec<&str> = errors.0.iter().map(|e| e.location.as_str()).collect();
        for expected in [
            "sinks.loki.url",
            "sinks.loki.max_concurrency",
            "sinks.loki.headers.X-Scope-OrgID",
            "routes[0].sinks",
            "routes[0].selector",
            "routes[1].sinks",
            "default_route.sinks",
            "tenants.overrides.t.limits",
            "tenants.overrides.t.auth",
            "tenants.overrides.t.client_cert_common_names",
            "server.tls.client_auth",
            "server.tls.reload_interval",
        ] {
            assert!(locations.contains(&expected), "missing {expected} in {locations:?}");
        }
    }

    #[test]
    fn wal_settings_parse_and_are_checked() {
        let text = r#"
sinks: { loki: { type: loki, url: "http://loki:3100" } }
wal: { ack: in_memory, fsync: batch, max_size: 128KiB, segment_size: 256KiB, fsync_interval: 0s }
routes:
  - { sinks: [loki], ack: on_disk }
tenants: { overrides: { t: { ack: in_memory } } }
"#;
        let cfg = Config::parse(text, env).expect("parses");
        assert_eq!((cfg.wal.ack, cfg.wal.fsync), (AckMode::InMemory, FsyncPolicy::Batch));
        assert_eq!(cfg.routes[0].ack, Some(AckMode::OnDisk));
        assert!(WalConfig::in_use(&cfg), "a route acknowledges on disk");
        let errors = cfg.validate(no_selector_check).expect_err("invalid");
        let locations: Vec<&str> = errors.0.iter().map(|e| e.location.as_str()).collect();
        assert_eq!(locations, ["wal.segment_size", "wal.max_size", "wal.fsync_interval"], "{errors}");
        let e = Config::parse("wal: { ack: eventually }\n", env).expect_err("unknown mode");
        assert!(e.to_string().contains("eventually"), "{e}");
        let delivery = Config::parse("wal: { ack: on_delivery }\n", env).expect("parses");
        assert!(AckMode::OnDelivery > AckMode::OnDisk, "the strongest promise");
        assert!(!WalConfig::in_use(&delivery), "on_delivery needs no log");
        let plain = Config::parse("wal: { ack: in_memory }\n", env).expect("parses");
        assert!(!WalConfig::in_use(&plain));
        assert_eq!(Config::embedded_default().wal.ack, AckMode::OnDisk, "on disk by default");
    }

    #[test]
    fn pipelines_are_checked_and_plugin_paths_resolve_against_the_config_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("p.wasm"), b"").expect("write");
        let text = r#"
sinks: { local: { type: archive } }
pipelines:
  main:
    stages:
      - plugin: p.wasm
        config: { fields: [email], nested: { n: 1 } }
      - plugin: p.wasm
        on_error: dead_letter
        timeout: 0s
      - plugin: gone.wasm
        name: other
        on_error: drop
        dead_letter: local
        max_memory: 8GiB
routes:
  - sinks: [local]
    pipeline: nope
default_route: { sinks: [local], pipeline: main }
"#;
        let path = dir.path().join("sluice.yaml");
        std::fs::write(&path, text).expect("write");
        let cfg = Config::load(&path).expect("parses");
        let stage = &cfg.pipelines["main"].stages[0];
        assert_eq!(cfg.plugin_source(stage), PluginSource::File(dir.path().join("p.wasm")));
        assert_eq!(stage.config.to_string(), r#"{"fields":["email"],"nested":{"n":1}}"#);
        assert_eq!((stage.on_error(), stage.timeout), (OnErrorConfig::Pass, Duration::from_secs(1)));
        assert_eq!(stage.max_memory, ByteSize::mib(64));
        assert_eq!(stage_name("main", stage), "main/p");
        let errors = cfg.validate(no_selector_check).expect_err("invalid");
        let shown: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
        for expected in [
            "routes[0].pipeline: unknown pipeline `nope`",
            "pipelines.main.stages[1].dead_letter: on_error: dead_letter needs",
            "pipelines.main.stages[1].timeout",
            "pipelines.main.stages[1].name: same name as stages[0]",
            "pipelines.main.stages[2].plugin: no plugin file",
            "pipelines.main.stages[2].dead_letter: only used with",
            "pipelines.main.stages[2].max_memory",
        ] {
            assert!(shown.iter().any(|e| e.starts_with(expected)), "missing {expected} in {shown:#?}");
        }
        assert_eq!(shown.len(), 7, "{shown:#?}");
    }

    #[test]
    fn loki_url_override_adds_a_sink_only_to_the_default() {
        let mut cfg = Config::embedded_default();
        let o = Overrides { loki_url: Some("http://127.0.0.1:9".into()), ..Default::default() };
        cfg.apply_overrides(&o).expect("applies");
        assert!(matches!(cfg.sinks.get(DEFAULT_LOKI_SINK), Some(SinkConfig::Loki(_))));
        assert!(cfg.sinks.contains_key(DEFAULT_ARCHIVE_SINK));

        let mut cfg = Config::parse("sinks: { f: { type: archive } }", env).expect("parses");
        let o = Overrides { from_file: true, ..o };
        let e = cfg.apply_overrides(&o).expect_err("no loki sink");
        assert_eq!(e.0[0].location, "--loki-url");
    }
}
