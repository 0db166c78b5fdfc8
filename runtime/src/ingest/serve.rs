//! The listener: accepts connections up to `server.max_connections`, gives each client
//! `server.header_read_timeout` to send a request's headers (and to start its next request on a
//! kept-alive connection), and on shutdown stops accepting and lets the requests in progress
//! finish.
//!
//! A connection past the cap gets a 503 with `Retry-After` and is closed at once, so a flood of
//! idle or trickling clients costs a bounded number of sockets and buffers, and `/ready` and
//! every other client keep being served.
//!
//! With TLS, the handshake runs on the connection's own task within `header_read_timeout`, and
//! a verified client certificate reaches the handlers as a [`tls::ClientCert`] extension.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::tls::{self, Tls};

/// The address a request came from, in its extensions.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::IpAddr);

/// Bounds on connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
}

/// Plain HTTP, or HTTPS with the TLS files in use.
#[derive(Clone)]
pub enum Transport {
    Plain,
    Tls(Arc<Tls>),
}

/// Serves `app` on `listener` until `shutdown` resolves, then waits for the requests in
/// progress (the caller bounds that wait).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    transport: Transport,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).keep_alive(true);
    let open = metrics::gauge!("sluice_http_connections");
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: pause instead of spinning.
                tracing::warn!("cannot accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            metrics::counter!("sluice_http_connections_refused_total").increment(1);
            tokio::spawn(refuse(stream, limits.max_connections));
            continue;
        };
        let _ = stream.set_nodelay(true);
        // Handlers see the client's address (failed-authentication throttling).
        let app = app.clone().layer(axum::Extension(Peer(peer.ip())));
        let (http, watcher, open) = (http.clone(), graceful.watcher(), open.clone());
        let transport = transport.clone();
        open.increment(1.0);
        tokio::spawn(async move {
            let served = match transport {
                Transport::Plain => {
                    let service = TowerToHyperService::new(app);
                    watcher.watch(http.serve_connection(TokioIo::new(stream), service)).await
                }
                Transport::Tls(tls) => {
                    let handshake = tls.acceptor().accept(stream);
                    match tokio::time::timeout(limits.header_read_timeout, handshake).await {
                        Ok(Ok(stream)) => {
                            let cert = tls::client_cert(stream.get_ref().1).unwrap_or_default();
                            let service = TowerToHyperService::new(app.layer(axum::Extension(cert)));
                            watcher.watch(http.serve_connection(TokioIo::new(stream), service)).await
                        }
                        Ok(Err(e)) => {
                            metrics::counter!("sluice_tls_handshake_failures_total").increment(1);
                            tracing::debug!(peer = %peer, "TLS handshake failed: {e}");
                            Ok(())
                        }
                        Err(_) => {
                            metrics::counter!("sluice_tls_handshake_failures_total").increment(1);
                            tracing::debug!(peer = %peer, "TLS handshake timed out");
                            Ok(())
                        }
                    }
                }
            };
            if let Err(e) = served {
                tracing::debug!("connection ended with an error: {e}");
            }
            open.decrement(1.0);
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Answers a connection past the cap with 503 and closes it; a client that does not read the
/// answer within a second is dropped.
async fn refuse(mut stream: TcpStream, max: usize) {
    let body = format!(
        "sluice has {max} connections open already (server.max_connections): retry later or on another replica\n"
    );
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}
