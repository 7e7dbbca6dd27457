//! The accept loop: one hyper connection per task (HTTP/1.1 and HTTP/2), each with a "kill" token that fault
//! injection uses to drop the connection after a commit. A listener serves plain HTTP, or HTTPS after a TLS
//! handshake (`tls.rs`) that runs in the connection's own task, so a slow or failing handshake delays no one else.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::platform::middleware::{ConnInfo, ConnKiller};

/// Serves `router` on `listener` until `shutdown`: plain HTTP, or HTTPS with `tls`.
pub(crate) async fn serve(
    listener: TcpListener,
    router: axum::Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: CancellationToken,
) {
    loop {
        let (stream, _peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let shutdown = shutdown.clone();
        match &tls {
            None => {
                tokio::spawn(serve_connection(stream, router, None, shutdown));
            }
            Some(config) => {
                let config = config.clone();
                tokio::spawn(async move {
                    if let Some((stream, info)) = crate::tls::handshake(&config, stream).await {
                        serve_connection(stream, router, Some(info), shutdown).await;
                    }
                });
            }
        }
    }
}

/// Serves one connection (HTTP/1.1 or HTTP/2) until it closes, its kill token fires or `shutdown`. `info` is
/// what the TLS handshake learned; plain connections have none.
pub(crate) async fn serve_connection<I>(
    io: I,
    router: axum::Router,
    info: Option<ConnInfo>,
    shutdown: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let killer = CancellationToken::new();
    let k = killer.clone();
    let svc = tower::service_fn(
        move |mut req: axum::extract::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnKiller(k.clone()));
            if let Some(info) = &info {
                req.extensions_mut().insert(info.clone());
            }
            router.clone().oneshot(req.map(axum::body::Body::new))
        },
    );
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(svc));
    tokio::select! {
        _ = conn => {}
        _ = killer.cancelled() => {}
        _ = shutdown.cancelled() => {}
    }
}
