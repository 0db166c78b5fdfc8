//! The listener: accepts connections up to `server.max_connections`, gives each client
//! `server.header_read_timeout` to send a request's headers (and to start its next request on a
//! kept-alive connection), and on shutdown stops accepting and lets the requests in progress
//! finish.
//!
//! A connection past the cap gets a 503 with `Retry-After` and is closed at once, so a flood of
//! idle or trickling clients costs a bounded number of sockets and buffers, and `/ready` and
//! every other client keep being served.

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

/// The address a request came from, in its extensions.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::IpAddr);

/// Bounds on connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
}

/// Serves `app` on `listener` until `shutdown` resolves, then waits for the requests in
/// progress (the caller bounds that wait).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
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
        let service = TowerToHyperService::new(app.clone().layer(axum::Extension(Peer(peer.ip()))));
        let connection = http.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        let open = open.clone();
        open.increment(1.0);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
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
