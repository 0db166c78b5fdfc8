//! Opening an archive location: `s3://bucket/prefix`, `gs://…`, `az://…`, `file:///dir` or a
//! directory, as an `object_store` whose keys are relative to the prefix.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::local::LocalFileSystem;
use object_store::prefix::PrefixStore;
use object_store::{BackoffConfig, ClientConfigKey, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};

use crate::config::S3Config;

/// Where an archive lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    S3 { bucket: String, prefix: String },
    Gcs { bucket: String, prefix: String },
    Azure { container: String, prefix: String },
    Local(PathBuf),
}

impl Location {
    /// Parses a URL or a directory path; the error says what is wrong.
    pub fn parse(url: &str) -> Result<Self, String> {
        let Some((scheme, rest)) = url.split_once("://") else {
            if url.is_empty() {
                return Err("is empty".into());
            }
            return Ok(Self::Local(PathBuf::from(url)));
        };
        if scheme == "file" {
            if rest.is_empty() || !rest.starts_with('/') {
                return Err(format!("`{url}`: a file URL needs an absolute path (file:///var/lib/sluice)"));
            }
            return Ok(Self::Local(PathBuf::from(rest)));
        }
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("`{url}`: no bucket"));
        }
        let (bucket, prefix) = (bucket.to_string(), prefix.trim_matches('/').to_string());
        match scheme {
            "s3" | "s3a" => Ok(Self::S3 { bucket, prefix }),
            "gs" => Ok(Self::Gcs { bucket, prefix }),
            "az" | "azure" | "abfs" => Ok(Self::Azure { container: bucket, prefix }),
            _ => Err(format!("`{url}`: unknown scheme `{scheme}` (s3, gs, az or file)")),
        }
    }

    fn prefix(&self) -> &str {
        match self {
            Self::S3 { prefix, .. } | Self::Gcs { prefix, .. } | Self::Azure { prefix, .. } => prefix,
            Self::Local(_) => "",
        }
    }
}

/// An opened archive location.
#[derive(Debug, Clone)]
pub struct Store {
    /// Keys are relative to the URL's prefix.
    pub objects: Arc<dyn ObjectStore>,
    /// The directory, for a local archive: objects are moved into it rather than copied.
    pub local_root: Option<PathBuf>,
    /// The URL, for messages.
    pub url: String,
}

/// How the store's client retries one request before sluice's own retry takes over.
fn client_retry() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: 3,
        retry_timeout: Duration::from_secs(30),
    }
}

/// reqwest 0.13 (the store's HTTP client) is built without a default TLS provider; sluice
/// uses ring everywhere.
fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Opens `url`; `s3` and `options` add settings to the environment's (see
/// [`crate::config::ArchiveSinkConfig`]). Sends nothing: see [`check_writable`].
pub fn open(url: &str, s3: &S3Config, options: &BTreeMap<String, String>) -> Result<Store, String> {
    let location = Location::parse(url)?;
    install_crypto_provider();
    // Sluice's timeouts, as config keys set before the environment's and `options`' other
    // settings: replacing the builder's `ClientOptions` (`with_client_options`) would drop
    // `allow_http` and every client setting from the environment or `options`.
    let client = [(ClientConfigKey::Timeout, "60s"), (ClientConfigKey::ConnectTimeout, "5s")];
    let bad_option = |key: &str| format!("options.{key}: not a setting of this store");
    let inner: Arc<dyn ObjectStore> = match &location {
        Location::Local(dir) => {
            crate::private_fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create directory {}: {e}", dir.display()))?;
            let store = LocalFileSystem::new_with_prefix(dir)
                .map_err(|e| format!("cannot open directory {}: {e}", dir.display()))?;
            return Ok(Store {
                objects: Arc::new(store),
                local_root: Some(std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone())),
                url: url.to_string(),
            });
        }
        Location::S3 { bucket, .. } => {
            let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
            for (key, value) in client {
                b = b.with_config(AmazonS3ConfigKey::Client(key), value);
            }
            if let Some(endpoint) = &s3.endpoint {
                b = b.with_endpoint(endpoint);
            }
            let endpoint = s3.endpoint.clone().or_else(|| {
                std::env::var("AWS_ENDPOINT_URL").or_else(|_| std::env::var("AWS_ENDPOINT")).ok()
            });
            if endpoint.as_deref().is_some_and(|e| e.starts_with("http://")) {
                b = b.with_allow_http(true);
            }
            // Path style unless told otherwise when an endpoint is given: what S3-compatible
            // stores serve; AWS itself prefers virtual-hosted style.
            let path_style = s3.path_style.unwrap_or(endpoint.is_some());
            b = b.with_virtual_hosted_style_request(!path_style);
            if let Some(region) = &s3.region {
                b = b.with_region(region);
            }
            if let Some(key) = &s3.access_key_id {
                b = b.with_access_key_id(key);
            }
            if let Some(secret) = &s3.secret_access_key {
                b = b.with_secret_access_key(secret);
            }
            if let Some(token) = &s3.session_token {
                b = b.with_token(token);
            }
            for (key, value) in options {
                b = b.with_config(key.parse().map_err(|_| bad_option(key))?, value);
            }
            Arc::new(b.with_retry(client_retry()).build().map_err(describe)?)
        }
        Location::Gcs { bucket, .. } => {
            let mut b = GoogleCloudStorageBuilder::from_env().with_bucket_name(bucket);
            for (key, value) in client {
                b = b.with_config(GoogleConfigKey::Client(key), value);
            }
            for (key, value) in options {
                b = b.with_config(key.parse().map_err(|_| bad_option(key))?, value);
            }
            Arc::new(b.with_retry(client_retry()).build().map_err(describe)?)
        }
        Location::Azure { container, .. } => {
            let mut b = MicrosoftAzureBuilder::from_env().with_container_name(container);
            for (key, value) in client {
                b = b.with_config(AzureConfigKey::Client(key), value);
            }
            for (key, value) in options {
                b = b.with_config(key.parse().map_err(|_| bad_option(key))?, value);
            }
            Arc::new(b.with_retry(client_retry()).build().map_err(describe)?)
        }
    };
    let prefix = location.prefix();
    let objects: Arc<dyn ObjectStore> =
        if prefix.is_empty() { inner } else { Arc::new(PrefixStore::new(inner, prefix)) };
    Ok(Store { objects, local_root: None, url: url.to_string() })
}

/// Name of the object [`check_writable`] writes and removes.
pub const CHECK_OBJECT: &str = "_sluice_check";

/// Why [`check_writable`] failed.
#[derive(Debug)]
pub enum CheckFailure {
    /// The store answered no (credentials, a missing bucket, …): a mistake to fix before starting.
    Refused(String),
    /// The store did not answer (nothing listens, a timeout, a 5xx): it may be down for now.
    Unreachable(String),
}

/// Writes (then removes) a small object, so that a missing bucket or wrong credentials fail the
/// start with a clear message. A store that refuses the removal (write-only credentials) is
/// fine: the object is overwritten at the next start.
pub async fn check_writable(store: &Store) -> Result<(), CheckFailure> {
    let path = object_store::path::Path::from(CHECK_OBJECT);
    let payload = PutPayload::from_static(b"sluice checks that it can write here\n");
    if let Err(e) = store.objects.put(&path, payload).await {
        let (cause, text) = explain(&e);
        let message = format!("cannot write to {}: {text}", store.url);
        return Err(match cause {
            Cause::Unreachable => CheckFailure::Unreachable(message),
            _ => CheckFailure::Refused(message),
        });
    }
    if let Err(e) = store.objects.delete(&path).await {
        tracing::debug!(url = %store.url, error = %e, "could not remove the check object");
    }
    Ok(())
}

/// An `object_store` error with a hint for the usual causes.
pub fn describe(e: object_store::Error) -> String {
    explain(&e).1
}

/// The cause of `e`, and its text with the cause's hint.
fn explain(e: &object_store::Error) -> (Cause, String) {
    let text = error_chain(e);
    let cause = Cause::of(&text);
    let described = format!("{text}{}", cause.hint());
    (cause, described)
}

/// The usual causes of a store error, told from its text (object_store reports most of them as
/// `Generic`, with the store's answer or the HTTP client's error inside).
#[derive(Debug, PartialEq, Eq)]
enum Cause {
    MissingBucket,
    Credentials,
    Unreachable,
    Other,
}

impl Cause {
    fn of(text: &str) -> Self {
        if text.contains("NoSuchBucket") || text.contains("does not exist") {
            Self::MissingBucket
        } else if text.contains("InvalidAccessKeyId")
            || text.contains("SignatureDoesNotMatch")
            || text.contains("403")
        {
            Self::Credentials
        } else if ["Connect", "connection", "timed out", "ServiceUnavailable", "SlowDown", "InternalError"]
            .iter()
            .any(|t| text.contains(t))
        {
            Self::Unreachable
        } else {
            Self::Other
        }
    }

    fn hint(&self) -> &'static str {
        match self {
            Self::MissingBucket => " (the bucket does not exist: create it, or fix the URL)",
            Self::Credentials => {
                " (the store refused the credentials: check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or s3.access_key_id/secret_access_key, and that they may write here)"
            }
            Self::Unreachable => " (the store cannot be reached: check the endpoint)",
            Self::Other => "",
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// The local path of `key` under `root`.
pub fn local_path(root: &Path, key: &object_store::path::Path) -> PathBuf {
    key.parts().fold(root.to_path_buf(), |p, part| p.join(part.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind_of_location() {
        let s3 = |b: &str, p: &str| Location::S3 { bucket: b.into(), prefix: p.into() };
        assert_eq!(Location::parse("s3://logs/archive/prod/"), Ok(s3("logs", "archive/prod")));
        assert_eq!(Location::parse("s3://logs"), Ok(s3("logs", "")));
        assert_eq!(Location::parse("gs://b/p"), Ok(Location::Gcs { bucket: "b".into(), prefix: "p".into() }));
        assert_eq!(
            Location::parse("az://c"),
            Ok(Location::Azure { container: "c".into(), prefix: String::new() })
        );
        assert_eq!(Location::parse("file:///var/lib/x"), Ok(Location::Local("/var/lib/x".into())));
        assert_eq!(Location::parse("./archive"), Ok(Location::Local("./archive".into())));
        for (url, message) in [
            ("ftp://x/y", "unknown scheme `ftp`"),
            ("s3://", "no bucket"),
            ("file://relative", "absolute path"),
            ("", "is empty"),
        ] {
            let e = Location::parse(url).expect_err(url);
            assert!(e.contains(message), "{url}: {e}");
        }
    }

    #[test]
    fn store_errors_are_told_apart_by_cause() {
        for (text, cause) in [
            ("Generic S3 error: ... <Code>NoSuchBucket</Code>", Cause::MissingBucket),
            ("... <Code>SignatureDoesNotMatch</Code> ...", Cause::Credentials),
            ("client error (Connect): tcp connect error: Connection refused", Cause::Unreachable),
            ("operation timed out", Cause::Unreachable),
            ("<Code>SlowDown</Code>", Cause::Unreachable),
            ("<Code>InvalidArgument</Code>", Cause::Other),
        ] {
            assert_eq!(Cause::of(text), cause, "{text}");
        }
    }

    #[test]
    fn an_unknown_option_is_named() {
        let options = BTreeMap::from([("aws_no_such_thing".to_string(), "1".to_string())]);
        let e = open("s3://b", &S3Config::default(), &options).expect_err("refused");
        assert_eq!(e, "options.aws_no_such_thing: not a setting of this store");
    }

    #[tokio::test]
    async fn a_local_directory_is_created_and_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("a/b");
        let store =
            open(root.to_str().expect("utf-8"), &S3Config::default(), &BTreeMap::new()).expect("opens");
        check_writable(&store).await.expect("writable");
        assert!(root.is_dir());
        assert!(!root.join(CHECK_OBJECT).exists(), "the check object is removed");
        let key = object_store::path::Path::from("tenant=a/x.ndjson");
        assert_eq!(
            local_path(store.local_root.as_ref().expect("local"), &key),
            root.canonicalize().expect("exists").join("tenant=a").join("x.ndjson")
        );
    }
}
