//! TLS on the listener: the server's certificate and key (and, for mTLS, the client CAs) read
//! from PEM files, read again when they change, and what a verified client certificate says
//! about its holder.
//!
//! A renewal that cannot be loaded (a half-written file, a key that does not match) is logged
//! and counted, and the certificate in use stays: new connections never fail because of a
//! botched rotation while a good certificate is at hand.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio_rustls::TlsAcceptor;

use crate::config::{ClientAuth, TlsConfig};

/// Why the TLS files cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{what} {} holds no {expected}", path.display())]
    Empty { what: &'static str, path: PathBuf, expected: &'static str },
    #[error("the client CA certificates in {}: {source}", path.display())]
    ClientCa {
        path: PathBuf,
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    #[error("the certificate in {} and the key in {} do not make a TLS configuration: {source}", cert.display(), key.display())]
    Config {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
}

/// What a verified client certificate says about the client, in the request's extensions.
#[derive(Debug, Clone, Default)]
pub struct ClientCert {
    /// The subject's common name (CN), if the certificate has one in UTF-8.
    pub common_name: Option<String>,
}

/// Builds the rustls configuration from the files `config` names, and sets
/// `sluice_tls_certificate_expiry_timestamp_seconds` from the leaf certificate it holds, so an
/// alert can fire before it runs out.
pub fn load(config: &TlsConfig) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain = certificates(&config.cert_file, "certificate file")?;
    let expires = x509_parser::parse_x509_certificate(&chain[0])
        .map(|(_, leaf)| leaf.validity().not_after.timestamp())
        .ok();
    let key = PrivateKeyDer::from_pem_file(&config.key_file).map_err(|source| match source {
        rustls::pki_types::pem::Error::NoItemsFound => {
            TlsError::Empty { what: "key file", path: config.key_file.clone(), expected: "private key" }
        }
        source => TlsError::Read { what: "key file", path: config.key_file.clone(), source },
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Config {
            cert: config.cert_file.clone(),
            key: config.key_file.clone(),
            source,
        })?;
    let builder = match &config.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates(path, "client CA file")? {
                roots.add(cert).map_err(|source| TlsError::Config {
                    cert: path.clone(),
                    key: config.key_file.clone(),
                    source,
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match config.client_auth.unwrap_or(ClientAuth::Required) {
                ClientAuth::Required => verifier,
                ClientAuth::Optional => verifier.allow_unauthenticated(),
            };
            let verifier =
                verifier.build().map_err(|source| TlsError::ClientCa { path: path.clone(), source })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut server = builder.with_single_cert(chain, key).map_err(|source| TlsError::Config {
        cert: config.cert_file.clone(),
        key: config.key_file.clone(),
        source,
    })?;
    // sluice serves HTTP/1.1 only.
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    if let Some(at) = expires {
        metrics::gauge!("sluice_tls_certificate_expiry_timestamp_seconds").set(at as f64);
    }
    Ok(Arc::new(server))
}

fn certificates(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read = |source| TlsError::Read { what, path: path.to_path_buf(), source };
    let chain =
        CertificateDer::pem_file_iter(path).map_err(read)?.collect::<Result<Vec<_>, _>>().map_err(read)?;
    if chain.is_empty() {
        return Err(TlsError::Empty { what, path: path.to_path_buf(), expected: "certificate" });
    }
    Ok(chain)
}

/// The TLS configuration in use, swapped when its files change.
pub struct Tls {
    config: TlsConfig,
    current: RwLock<Arc<rustls::ServerConfig>>,
}

impl Tls {
    /// Loads the files; an error here stops the start.
    pub fn new(config: &TlsConfig) -> Result<Arc<Self>, TlsError> {
        let loaded = load(config)?;
        Ok(Arc::new(Self { config: config.clone(), current: RwLock::new(loaded) }))
    }

    /// An acceptor with the configuration in use now.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner())))
    }

    /// Checks the files every `reload_interval` and loads them again when one changed, until
    /// the task is dropped.
    pub async fn watch(self: Arc<Self>) {
        let mut seen = self.stamps();
        let mut tick = tokio::time::interval(self.config.reload_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let now = self.stamps();
            if now == seen {
                continue;
            }
            seen = now;
            match load(&self.config) {
                Ok(loaded) => {
                    *self.current.write().unwrap_or_else(|p| p.into_inner()) = loaded;
                    metrics::counter!("sluice_tls_reloads_total", "result" => "applied").increment(1);
                    tracing::info!(cert = %self.config.cert_file.display(), "TLS files changed: new connections use them");
                }
                Err(e) => {
                    metrics::counter!("sluice_tls_reloads_total", "result" => "failed").increment(1);
                    tracing::error!("TLS files changed but cannot be used, keeping the ones in use: {e}");
                }
            }
        }
    }

    /// When and how large each file was last written: a renewal changes one of them.
    fn stamps(&self) -> Vec<Option<(SystemTime, u64)>> {
        let files =
            [Some(&self.config.cert_file), Some(&self.config.key_file), self.config.client_ca_file.as_ref()];
        crate::reload::stamp(files.into_iter().flatten())
    }
}

/// What the verified client certificate of `connection` says, if it presented one.
pub fn client_cert(connection: &rustls::ServerConnection) -> Option<ClientCert> {
    let leaf = connection.peer_certificates()?.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
    let common_name =
        cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(str::to_string);
    Some(ClientCert { common_name })
}
