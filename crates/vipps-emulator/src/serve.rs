//! The accept loop: one hyper connection per task (HTTP/1.1 and HTTP/2), each with a "kill" token that fault
//! injection uses to drop the connection after a commit.

use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::platform::middleware::ConnKiller;

/// Serves `router` on `listener` until `shutdown`.
pub(crate) async fn serve(
    listener: TcpListener,
    router: axum::Router,
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
        let killer = CancellationToken::new();
        let router = router.clone();
        let k = killer.clone();
        let svc = tower::service_fn(
            move |mut req: axum::extract::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnKiller(k.clone()));
                router.clone().oneshot(req.map(axum::body::Body::new))
            },
        );
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn =
                builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc));
            tokio::select! {
                _ = conn => {}
                _ = killer.cancelled() => {}
                _ = shutdown.cancelled() => {}
            }
        });
    }
}
