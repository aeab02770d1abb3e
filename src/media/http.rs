//! The media server's HTTP/1.1 listener: an accept loop with a connection cap
//! (`media.max_connections`; further connections wait in the backlog), a header timeout, and a
//! graceful shutdown that lets requests in flight finish within the node's grace period; TLS
//! (HTTPS) when `[tls]` gives the port a certificate.

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::routes::{MediaState, router};
use crate::node::Node;
use crate::tls::{HANDSHAKES, record_failure};
use tokio_util::sync::CancellationToken;

/// Serves the media routes on `listener` until the node shuts down, then drains connections
/// for at most `limits.shutdown_grace_secs` and closes the rest.
pub async fn serve(listener: TcpListener, node: Arc<Node>) {
    let config = &node.config.media;
    let max = config.max_connections as usize;
    let header_timeout = Duration::from_secs(config.header_timeout_secs.into());
    let router = router(MediaState {
        media: node.media.clone(),
        token_key: node.token_key.clone(),
    });
    let permits = Arc::new(Semaphore::new(max));
    let shutdown = node.shutdown.clone();
    let mut connections = JoinSet::new();
    loop {
        // Reap finished connection tasks so the set stays as small as the open connections.
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit,
            () = shutdown.cancelled() => break,
        };
        let Ok(permit) = permit else { break };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors or a transient error: back off instead of spinning.
                    tracing::warn!(%error, "media accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let shutdown = shutdown.clone();
        let tls = node.tls.media();
        connections.spawn(async move {
            let _permit = permit;
            let Some(tls) = tls else {
                return serve_connection(stream, service, header_timeout, shutdown).await;
            };
            // The handshake shares the header timeout: a client that stalls in it is cut.
            let peer = stream.peer_addr().map(|peer| peer.to_string());
            let accept = tokio_rustls::TlsAcceptor::from(tls).accept(stream);
            match tokio::time::timeout(header_timeout, accept).await {
                Ok(Ok(stream)) => {
                    metrics::counter!(HANDSHAKES, "listener" => "media").increment(1);
                    serve_connection(stream, service, header_timeout, shutdown).await;
                }
                Ok(Err(error)) => {
                    record_failure("media", peer.as_deref().unwrap_or("?"), &error);
                }
                Err(_) => {
                    let error = std::io::Error::from(std::io::ErrorKind::TimedOut);
                    record_failure("media", peer.as_deref().unwrap_or("?"), &error);
                }
            }
        });
    }
    drop(listener);
    let grace = node.config.limits.shutdown_grace();
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = connections.len(),
            "media grace period over; closing the rest"
        );
        connections.shutdown().await;
    }
}

/// Serves HTTP/1.1 on one connection (plain or TLS) until it ends; at shutdown, lets the
/// request in flight finish.
async fn serve_connection<S>(
    stream: S,
    service: TowerToHyperService<axum::Router>,
    header_timeout: Duration,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "media connection ended with an error");
    }
}
