//! The proxy edge (`--proxy-listen`): clients that honour `HTTPS_PROXY` reach the emulator without a hosts file.
//!
//! It accepts `CONNECT api.vipps.no:443` and `CONNECT apitest.vipps.no:443`, answers 200, runs the TLS handshake on
//! the tunnel with the local authority's certificates and serves the requests itself, exactly as the HTTPS
//! listener does. Every other destination (another host, another port) and every request that is not a `CONNECT`
//! gets 403 with a problem body that says why: nothing is ever forwarded, so pointing a whole shell's
//! `HTTPS_PROXY` here cannot leak a request to the real platform or anywhere else.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use vipps_types::env::API_HOSTS;
use vipps_types::problem::Problem;

/// The only port a tunnel may be opened to: the vendor's API servers speak HTTPS on 443 only.
const API_PORT: u16 = 443;

/// Serves the proxy on `listener` until `shutdown`.
pub(crate) async fn serve(
    listener: TcpListener,
    router: axum::Router,
    tls: Arc<rustls::ServerConfig>,
    shutdown: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "proxy accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let (router, tls, shutdown) = (router.clone(), tls.clone(), shutdown.clone());
        tokio::spawn(async move {
            let stop = shutdown.clone();
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let answer = handle(req, peer, &router, &tls, &shutdown);
                async move { Ok::<_, Infallible>(answer) }
            });
            // HTTP/1.1 only: CONNECT is an HTTP/1.1 method here, and the tunnel is the upgraded connection.
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades();
            tokio::select! {
                r = conn => if let Err(e) = r {
                    tracing::debug!(error = %e, "proxy connection ended with an error");
                },
                _ = stop.cancelled() => {}
            }
        });
    }
}

/// Whether `authority` (`host:port` of a `CONNECT`) is one of the vendor's API servers.
fn is_api_server(req: &Request<Incoming>) -> bool {
    req.uri().authority().is_some_and(|a| {
        a.port_u16() == Some(API_PORT) && API_HOSTS.iter().any(|h| a.host().eq_ignore_ascii_case(h))
    })
}

/// Answers one proxy request: opens the tunnel for the API servers, refuses everything else.
fn handle(
    req: Request<Incoming>,
    peer: std::net::SocketAddr,
    router: &axum::Router,
    tls: &Arc<rustls::ServerConfig>,
    shutdown: &CancellationToken,
) -> Response<Full<Bytes>> {
    if req.method() != Method::CONNECT {
        let target = req.uri().to_string();
        tracing::info!(%peer, method = %req.method(), %target, "proxy refused a request that is not a CONNECT");
        return refuse(format!(
            "This is the Vipps emulator's proxy. It only opens HTTPS tunnels (CONNECT) to {} and {} on port {API_PORT}, \
             and answers them itself; `{} {target}` is not one, and nothing is ever forwarded.",
            API_HOSTS[0],
            API_HOSTS[1],
            req.method()
        ));
    }
    if !is_api_server(&req) {
        let target = req
            .uri()
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_else(|| req.uri().to_string());
        tracing::info!(%peer, %target, "proxy refused a CONNECT to a destination that is not a Vipps API server");
        return refuse(format!(
            "This is the Vipps emulator's proxy. It only serves CONNECT to {}:{API_PORT} and {}:{API_PORT} (answered by \
             the emulator itself) and never forwards anywhere else; {target} was refused.",
            API_HOSTS[0], API_HOSTS[1]
        ));
    }
    let (router, tls, shutdown) = (router.clone(), tls.clone(), shutdown.clone());
    tokio::spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                if let Some((stream, info)) =
                    crate::tls::handshake(&tls, TokioIo::new(upgraded)).await
                {
                    crate::serve::serve_connection(stream, router, Some(info), shutdown).await;
                }
            }
            Err(e) => tracing::debug!(error = %e, "the proxy tunnel was not opened"),
        }
    });
    Response::new(Full::new(Bytes::new()))
}

/// 403 with a problem body that says why.
fn refuse(detail: String) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(&Problem::new(403, "Forbidden", detail)).unwrap_or_default();
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = StatusCode::FORBIDDEN;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(vipps_types::headers::PROBLEM_JSON),
    );
    resp
}
