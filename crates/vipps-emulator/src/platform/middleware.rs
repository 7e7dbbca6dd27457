//! The HTTP surface of the platform: the router that mounts the products' routes and the platform's own (access
//! token, Webhooks API, controls), and the middleware around the API routes (request record, fault injection).

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tokio_util::sync::CancellationToken;
use vipps_types::headers as h;

use super::Shared;
use super::faults::FaultAction;
use super::http::{DeferredDelay, RequestMeta};
use super::reqlog::RawRecord;
use crate::config::MerchantEnvironment;
use vipps_types::env::Environment;

/// Cancels the connection a request arrived on (inserted per connection by the server).
#[derive(Debug, Clone)]
pub(crate) struct ConnKiller(pub CancellationToken);

/// What the TLS handshake of the connection a request arrived on learned (inserted per connection by the
/// server; absent on plain HTTP).
#[derive(Debug, Clone, Default)]
pub(crate) struct ConnInfo {
    /// The server name the client asked for (SNI): one of the vendor's API hostnames.
    pub tls_server_name: Option<Arc<str>>,
}

/// The vendor environment a request is addressed to: by the host it names (the URI's authority, as HTTP/2 sends
/// it, or the `Host` header), else by the name its TLS connection was opened for. Other hosts (an address, a
/// custom name) name no environment.
fn request_environment(req: &Request) -> Option<MerchantEnvironment> {
    let host = req.uri().authority().map(|a| a.as_str()).or_else(|| {
        req.headers()
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
    });
    let by_host = host.and_then(Environment::from_api_host);
    let by_sni = || {
        req.extensions()
            .get::<ConnInfo>()
            .and_then(|c| c.tls_server_name.as_deref())
            .and_then(Environment::from_api_host)
    };
    match by_host.or_else(by_sni)? {
        Environment::Production => Some(MerchantEnvironment::Production),
        Environment::Test => Some(MerchantEnvironment::Test),
        Environment::Custom(_) => None,
    }
}

/// The router: the API routes (the access token, the Webhooks API and every product's routes) behind the request
/// record and fault injection, and the controls under `/_emulator/` (platform and products) beside them.
pub(crate) fn router(
    state: Shared,
    platform_controls: utoipa_axum::router::OpenApiRouter<Shared>,
    ca_pem: axum::routing::MethodRouter<Shared>,
) -> Router {
    let mut api = Router::new()
        .route("/accesstoken/get", post(super::token::get_token))
        .route("/accessToken/get", post(super::token::get_token))
        .route("/AccessToken/get", post(super::token::get_token))
        .merge(super::webhooks::routes());
    for p in state.products.iter() {
        api = api.merge(p.routes());
    }
    if state.config.rate_limits {
        // Inside the record (a 429 is recorded) and after routing (limits are keyed by route template).
        let limiter = Arc::new(super::ratelimit::Limiter::new(
            state.products.iter().flat_map(|p| p.rate_limits()),
        ));
        api = api.route_layer(middleware::from_fn_with_state(
            (state.clone(), limiter),
            super::ratelimit::layer,
        ));
    }
    let api = api
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), faults_mw))
        .layer(middleware::from_fn_with_state(state.clone(), record_mw));
    // The authority's certificate is public and every TLS client needs it, so it is served even without controls.
    let mut app = api.merge(
        Router::new()
            .route("/_emulator/tls/ca.pem", ca_pem)
            .layer(middleware::from_fn_with_state(state.clone(), meta_mw)),
    );
    if state.config.controls {
        let mut controls = platform_controls;
        for p in state.products.iter() {
            controls = controls.merge(p.controls());
        }
        // The document is built from the routes just registered, once, and served as it is.
        let (controls, doc) = controls.split_for_parts();
        let doc = super::openapi::document(doc);
        let json = serde_json::to_string(&doc).unwrap_or_default();
        app = app.merge(
            controls
                .layer(axum::Extension(super::openapi::Document(json.into())))
                .layer(middleware::from_fn_with_state(state.clone(), meta_mw)),
        );
    }
    // Without metrics the layer is not there at all, so turning them off measures their whole cost.
    if state.metrics.is_some() {
        app = app
            .route("/metrics", axum::routing::get(super::metrics::serve))
            .layer(middleware::from_fn_with_state(
                state.clone(),
                super::metrics::layer,
            ));
    }
    app.with_state(state)
}

async fn not_found(req: Request) -> Response {
    let meta = RequestMeta::of_request(&req);
    meta.problem(
        404,
        "Not Found",
        format!("No API operation at {} {}", req.method(), req.uri().path()),
    )
    .into_response()
}

async fn method_not_allowed(req: Request) -> Response {
    let meta = RequestMeta::of_request(&req);
    meta.problem(
        405,
        "Method Not Allowed",
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
    .into_response()
}

fn new_meta(s: &Shared, req: &Request) -> RequestMeta {
    RequestMeta {
        trace_id: Arc::from(super::ids::trace_id(s.ids.as_ref())),
        method: req.method().clone(),
        path: Arc::from(req.uri().path()),
        delay: None,
        environment: request_environment(req),
    }
}

/// The controls get a trace id for their problems, and are neither recorded nor subject to faults.
async fn meta_mw(State(s): State<Shared>, mut req: Request, next: Next) -> Response {
    let meta = new_meta(&s, &req);
    req.extensions_mut().insert(meta);
    next.run(req).await
}

/// Records the request when it completes, or when its connection is dropped.
struct RecordGuard {
    state: Shared,
    record: Option<RawRecord>,
    started: Instant,
    notes: RecordNotes,
}

impl Drop for RecordGuard {
    fn drop(&mut self) {
        if let Some(mut r) = self.record.take() {
            r.latency_ms = self.started.elapsed().as_secs_f64() * 1000.0;
            r.dropped = true;
            let notes = self.notes.0.lock();
            r.fault = notes.0;
            r.status = notes.1.unwrap_or(0);
            self.state.requests.push(r);
        }
    }
}

/// The shared slot through which inner layers report details to the record.
#[derive(Debug, Clone, Default)]
pub(crate) struct RecordNotes(pub Arc<parking_lot::Mutex<(Option<&'static str>, Option<u16>)>>);

async fn record_mw(State(s): State<Shared>, mut req: Request, next: Next) -> Response {
    let meta = new_meta(&s, &req);
    let (path, trace_id) = (meta.path.clone(), meta.trace_id.clone());
    req.extensions_mut().insert(meta);
    let hs = req.headers();
    // Copied, not shared: a `HeaderValue` may point into the connection's whole read buffer, which the record
    // would otherwise keep alive for as long as it is held.
    let get = |n: &str| {
        hs.get(n)
            .map(|v| Box::<str>::from(String::from_utf8_lossy(v.as_bytes())))
    };
    let notes = RecordNotes::default();
    let mut guard = RecordGuard {
        state: s.clone(),
        started: Instant::now(),
        notes: notes.clone(),
        record: Some(RawRecord {
            time_ms: s.clock.unix_ms(),
            method: req.method().clone(),
            path,
            status: 0,
            latency_ms: 0.0,
            headers: [
                get(h::MERCHANT_SERIAL_NUMBER),
                get(h::SYSTEM_NAME),
                get(h::SYSTEM_VERSION),
                get(h::SYSTEM_PLUGIN_NAME),
                get(h::SYSTEM_PLUGIN_VERSION),
                get(h::IDEMPOTENCY_KEY),
            ],
            trace_id,
            replayed: false,
            fault: None,
            dropped: false,
            problem: None,
        }),
    };
    req.extensions_mut().insert(notes.clone());
    let mut resp = next.run(req).await;
    let mut problem = None;
    if resp.status().as_u16() >= 400 {
        // A refused request's problem body is small; it is kept so the dashboard shows what the merchant got.
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, PROBLEM_RECORD_LIMIT)
            .await
            .unwrap_or_default();
        problem = (!bytes.is_empty()).then(|| bytes.clone());
        resp = Response::from_parts(parts, axum::body::Body::from(bytes));
    }
    let mut r = guard.record.take().expect("record taken once");
    r.problem = problem;
    r.status = resp.status().as_u16();
    r.latency_ms = guard.started.elapsed().as_secs_f64() * 1000.0;
    r.replayed = resp.headers().contains_key(h::IDEMPOTENT_REPLAYED);
    r.fault = notes.0.lock().0;
    s.requests.push(r);
    s.changed();
    resp
}

/// The largest problem body kept in the request record.
const PROBLEM_RECORD_LIMIT: usize = 64 * 1024;

async fn faults_mw(State(s): State<Shared>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let action = match s.store.faults() {
        Some(shared) => match shared.take(req.method().as_str(), &path).await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "reading the shared fault rules failed");
                None
            }
        },
        None => s.faults.take(req.method().as_str(), &path),
    };
    let Some(action) = action else {
        return next.run(req).await;
    };
    let notes = req
        .extensions()
        .get::<RecordNotes>()
        .cloned()
        .unwrap_or_default();
    let meta = RequestMeta::of_request(&req);
    match action {
        FaultAction::Status {
            status,
            retry_after,
        } => {
            notes.0.lock().0 = Some("status");
            let reason = http::StatusCode::from_u16(status)
                .ok()
                .and_then(|c| c.canonical_reason())
                .unwrap_or("Error");
            let mut p = meta.problem(status, reason, format!("Injected fault: {status} {reason}"));
            if let Some(secs) = retry_after {
                p = p.retry_after(secs);
            }
            p.into_response()
        }
        FaultAction::Delay { ms } => {
            notes.0.lock().0 = Some("delay");
            // A write with an idempotency key waits after claiming its key (so a duplicate sent meanwhile gets
            // 423); everything else, and a write that did not take the delay, waits here.
            let deferred = (req.method() != http::Method::GET
                && req.headers().contains_key(h::IDEMPOTENCY_KEY))
            .then(|| DeferredDelay::new(ms));
            match (&deferred, req.extensions_mut().get_mut::<RequestMeta>()) {
                (Some(d), Some(m)) => m.delay = Some(d.clone()),
                _ => tokio::time::sleep(std::time::Duration::from_millis(ms)).await,
            }
            let resp = next.run(req).await;
            if let Some(ms) = deferred.and_then(|d| d.take()) {
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            }
            resp
        }
        FaultAction::DropAfterCommit => {
            notes.0.lock().0 = Some("drop_after_commit");
            let killer = req.extensions().get::<ConnKiller>().cloned();
            let resp = next.run(req).await;
            notes.0.lock().1 = Some(resp.status().as_u16());
            match killer {
                Some(k) => {
                    tracing::info!(trace_id = %meta.trace_id, status = resp.status().as_u16(), "dropping the connection after commit (injected fault)");
                    k.0.cancel();
                    std::future::pending::<Response>().await
                }
                None => resp,
            }
        }
    }
}
