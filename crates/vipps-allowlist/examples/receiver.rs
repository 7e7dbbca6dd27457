//! A merchant's webhook receiver behind the request-server allowlist.
//!
//! ```text
//! VIPPS_WEBHOOK_SECRET=... cargo run -p vipps-allowlist --example receiver
//! ```
//!
//! Environment: `VIPPS_WEBHOOK_SECRET` (required), `LISTEN` (default `127.0.0.1:8080`), `VIPPS_PROFILE`
//! (`production` or `test`, default `test`), `VIPPS_NAMESERVER` (`IP:PORT`, default the system resolver),
//! `VIPPS_ALLOW_NET` (a CIDR to admit special-purpose answers, e.g. `127.0.0.0/8` against a local test DNS),
//! `VIPPS_STATE` (the snapshot file, default `allowlist-state.json`).
//!
//! The allowlist is refreshed in the background by TTL; requests only read the published set. A delivery must
//! come from an allowed address, carry a valid HMAC signature over the raw body and a fresh `x-ms-date`;
//! duplicates are acknowledged without being processed again.
#![allow(clippy::print_stderr)]

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use vipps_allowlist::resolve::ResolverOptions;
use vipps_allowlist::{DnsResolver, Policy, Refresher, WebhookReceiver};
use vipps_types::servers::Profile;

async fn webhook(
    State(receiver): State<Arc<WebhookReceiver>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    // Verify the raw bytes: never re-serialise the JSON before checking the signature.
    let Ok(bytes) = axum::body::to_bytes(body, 1 << 20).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    match receiver.check(peer, &parts, &bytes) {
        Ok(accepted) if accepted.duplicate => StatusCode::OK.into_response(),
        Ok(accepted) => {
            eprintln!(
                "event {} from {}: {}",
                accepted.event_id,
                accepted.client,
                String::from_utf8_lossy(&bytes)
            );
            StatusCode::OK.into_response()
        }
        Err(rejection) => rejection.into_response(),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let secret = std::env::var("VIPPS_WEBHOOK_SECRET").map_err(|_| "set VIPPS_WEBHOOK_SECRET")?;
    let listen: SocketAddr = std::env::var("LISTEN")
        .unwrap_or_else(|_| "127.0.0.1:8080".into())
        .parse()?;
    let profile: Profile = std::env::var("VIPPS_PROFILE")
        .unwrap_or_else(|_| "test".into())
        .parse()?;
    let resolver = match std::env::var("VIPPS_NAMESERVER") {
        Ok(ns) => DnsResolver::with_nameservers(&[ns.parse()?], ResolverOptions::default())?,
        Err(_) => DnsResolver::system(ResolverOptions::default())?,
    };
    let mut policy = Policy::default();
    if let Ok(net) = std::env::var("VIPPS_ALLOW_NET") {
        policy.allow_nets.push(net.parse()?);
    }
    let state = std::env::var("VIPPS_STATE").unwrap_or_else(|_| "allowlist-state.json".into());
    let mut refresher =
        Refresher::new(resolver, profile.hostnames(), policy).with_state_file(state)?;
    // Fail fast (closed) when nothing is known; afterwards the loop keeps the last-known-good set on errors.
    let report = refresher.refresh().await?;
    eprintln!("allowlist: {}", report.status_line());
    let (allowlist, _refresh_task) = refresher.spawn();

    let receiver = Arc::new(WebhookReceiver::new(secret).with_allowlist(allowlist));
    let app = Router::new()
        .route("/vipps/webhook", post(webhook))
        .with_state(receiver);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    eprintln!(
        "listening on http://{}/vipps/webhook",
        listener.local_addr()?
    );
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
