//! The HTTP surface: the Vipps APIs, the test controls, and the middleware around them.

pub mod control;
pub mod epayment;
pub mod token;
pub mod webhooks;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use vipps_types::headers as h;
use vipps_types::problem::ErrorCode;

use crate::faults::FaultAction;
use crate::http::{ApiError, ApiResult, RequestMeta, header_str, stored_to_response};
use crate::reqlog::RawRecord;
use crate::state::AppState;
use crate::store::{IdemClaim, Op, WriteRequest, WriteResult};

/// Shared state handle.
pub type S = Arc<AppState>;

/// Cancels the connection a request arrived on (inserted per connection by the server).
#[derive(Debug, Clone)]
pub struct ConnKiller(pub CancellationToken);

/// A delay that an idempotent write applies after claiming its key.
#[derive(Debug, Clone, Copy)]
pub struct DeferredDelay(pub u64);

/// The router with all routes and middleware.
pub fn router(state: S) -> Router {
    let api = Router::new()
        .route("/accesstoken/get", post(token::get_token))
        .route("/accessToken/get", post(token::get_token))
        .route("/AccessToken/get", post(token::get_token))
        .route("/epayment/v1/payments", post(epayment::create))
        .route(
            "/epayment/v1/payments/{reference}",
            get(epayment::get_payment),
        )
        .route(
            "/epayment/v1/payments/{reference}/events",
            get(epayment::events),
        )
        .route(
            "/epayment/v1/payments/{reference}/capture",
            post(epayment::capture),
        )
        .route(
            "/epayment/v1/payments/{reference}/refund",
            post(epayment::refund),
        )
        .route(
            "/epayment/v1/payments/{reference}/cancel",
            post(epayment::cancel),
        )
        .route(
            "/epayment/v1/test/payments/{reference}/approve",
            post(epayment::force_approve),
        )
        .route(
            "/webhooks/v1/webhooks",
            post(webhooks::register).get(webhooks::list),
        )
        .route("/webhooks/v1/webhooks/{id}", delete(webhooks::delete));
    let mut app = api;
    if state.config.controls {
        app = app.merge(control::routes());
    }
    app.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), faults_mw))
        .layer(middleware::from_fn_with_state(state.clone(), record_mw))
        .with_state(state)
}

async fn not_found(req: Request) -> Response {
    let meta = meta_of(&req);
    meta.problem(
        404,
        "Not Found",
        format!("No API operation at {} {}", req.method(), req.uri().path()),
    )
    .into_response()
}

async fn method_not_allowed(req: Request) -> Response {
    let meta = meta_of(&req);
    meta.problem(
        405,
        "Method Not Allowed",
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
    .into_response()
}

/// The request's meta (always set by the outer middleware).
pub fn meta_of(req: &Request) -> RequestMeta {
    req.extensions()
        .get::<RequestMeta>()
        .cloned()
        .unwrap_or_else(|| RequestMeta {
            trace_id: std::sync::Arc::from(""),
            path: std::sync::Arc::from(req.uri().path()),
        })
}

/// Records the request when it completes, or when its connection is dropped.
struct RecordGuard {
    state: S,
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
pub struct RecordNotes(pub Arc<parking_lot::Mutex<(Option<&'static str>, Option<u16>)>>);

async fn record_mw(State(s): State<S>, mut req: Request, next: Next) -> Response {
    let path: Arc<str> = Arc::from(req.uri().path());
    let trace_id: Arc<str> = Arc::from(crate::ids::trace_id(s.ids.as_ref()));
    req.extensions_mut().insert(RequestMeta {
        trace_id: trace_id.clone(),
        path: path.clone(),
    });
    if path.starts_with("/_emulator") {
        return next.run(req).await;
    }
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
        }),
    };
    req.extensions_mut().insert(notes.clone());
    let resp = next.run(req).await;
    let mut r = guard.record.take().expect("record taken once");
    r.status = resp.status().as_u16();
    r.latency_ms = guard.started.elapsed().as_secs_f64() * 1000.0;
    r.replayed = resp.headers().contains_key(h::IDEMPOTENT_REPLAYED);
    r.fault = notes.0.lock().0;
    s.requests.push(r);
    resp
}

fn is_idempotent_write(method: &http::Method, path: &str) -> bool {
    method == http::Method::POST
        && (path == "/epayment/v1/payments"
            || ["/capture", "/refund", "/cancel"]
                .iter()
                .any(|s| path.starts_with("/epayment/v1/payments/") && path.ends_with(s)))
}

async fn faults_mw(State(s): State<S>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    if path.starts_with("/_emulator") {
        return next.run(req).await;
    }
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
    let meta = meta_of(&req);
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
            if is_idempotent_write(req.method(), &path)
                && req.headers().contains_key(h::IDEMPOTENCY_KEY)
            {
                req.extensions_mut().insert(DeferredDelay(ms));
            } else {
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            }
            next.run(req).await
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

/// Canonical SHA-256 fingerprint of a JSON body (key order and whitespace do not matter).
pub fn fingerprint_of<T: serde::Serialize>(parsed: &T) -> [u8; 32] {
    // The typed request serializes with a fixed field order, so key order and whitespace in the original body
    // do not change the fingerprint.
    Sha256::digest(serde_json::to_vec(parsed).unwrap_or_default()).into()
}

/// Canonical SHA-256 fingerprint of raw JSON bytes (used where no typed body exists).
pub fn fingerprint(body: &[u8]) -> [u8; 32] {
    let canonical = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) => serde_json::to_vec(&v).unwrap_or_else(|_| body.to_vec()),
        Err(_) => body.to_vec(),
    };
    Sha256::digest(&canonical).into()
}

/// Runs an idempotent write: claims the key (423 while another request with it executes), applies a deferred
/// delay fault, executes atomically with the stored answer, and replays or refuses as the key demands.
#[allow(clippy::too_many_arguments)]
pub async fn run_idempotent(
    s: &S,
    meta: &RequestMeta,
    parts: &http::request::Parts,
    scope_id: String,
    key: &str,
    fingerprint: [u8; 32],
    mismatch_code: ErrorCode,
    op: Op,
) -> ApiResult {
    let scope = format!("{scope_id}|{}|{}|{key}", parts.method, parts.uri.path());
    let delay = parts.extensions.get::<DeferredDelay>().map(|d| d.0);
    let req = WriteRequest {
        idem: Some(IdemClaim {
            scope,
            fingerprint,
            mismatch_code,
        }),
        op,
        now_ms: 0,
        trace_id: meta.trace_id.to_string(),
        instance: meta.path.to_string(),
    };
    // An accepted request runs to completion in its own task, like on a real server: a client that gives up
    // (timeout, dropped connection) does not cancel it, and its key stays claimed until it is done.
    let s2 = s.clone();
    let claim_scope = req
        .idem
        .as_ref()
        .map(|i| i.scope.clone())
        .unwrap_or_default();
    let task = tokio::spawn(async move {
        let _claim = s2.inflight.claim(&claim_scope)?;
        if let Some(ms) = delay {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
        let mut req = req;
        req.now_ms = s2.clock.unix_ms();
        Some(s2.store.write(req).await)
    });
    let result = match task.await {
        Ok(Some(r)) => r,
        Ok(None) => return Err(locked(meta)),
        Err(e) => return Err(internal(meta, &e)),
    };
    match result.map_err(|e| internal(meta, &e))? {
        WriteResult::Fresh(r) => Ok(stored_to_response(r, false)),
        WriteResult::Replayed(r) => Ok(stored_to_response(r, true)),
        WriteResult::InProgress => Err(locked(meta)),
        WriteResult::Mismatch(code) => Err(meta
            .problem(
                409,
                "Conflict",
                "This Idempotency-Key was already used with a different request body; an idempotent retry must send the same body",
            )
            .code(code)
            .field(h::IDEMPOTENCY_KEY, "reused with a different request")
            .err()),
    }
}

/// 423: another request with the same key is still executing.
fn locked(meta: &RequestMeta) -> ApiError {
    meta.problem(
        423,
        "Locked",
        "A request with this Idempotency-Key is still being processed; retry shortly",
    )
    .code(ErrorCode::OrderProcessing)
    .retry_after(1)
    .err()
}

/// Runs a non-idempotent write.
pub async fn run_write(s: &S, meta: &RequestMeta, op: Op) -> ApiResult {
    let req = WriteRequest {
        idem: None,
        op,
        now_ms: s.clock.unix_ms(),
        trace_id: meta.trace_id.to_string(),
        instance: meta.path.to_string(),
    };
    match s.store.write(req).await.map_err(|e| internal(meta, &e))? {
        WriteResult::Fresh(r) | WriteResult::Replayed(r) => Ok(stored_to_response(r, false)),
        WriteResult::Mismatch(_) | WriteResult::InProgress => {
            Err(internal(meta, &"unexpected idempotency answer"))
        }
    }
}

/// A 500 problem for an internal failure (the cause is logged, not sent).
pub fn internal(meta: &RequestMeta, e: &dyn std::fmt::Display) -> ApiError {
    tracing::error!(trace_id = %meta.trace_id, error = %e, "internal error");
    meta.problem(
        500,
        "Internal Server Error",
        "The emulator could not complete the request; see its log for the trace id",
    )
    .code(ErrorCode::InternalError)
    .err()
}

/// The `Idempotency-Key` header: validated, and required unless `optional`.
pub fn idempotency_key(
    meta: &RequestMeta,
    headers: &http::HeaderMap,
    optional: bool,
) -> Result<Option<String>, ApiError> {
    match headers.get(h::IDEMPOTENCY_KEY) {
        None => {
            if optional {
                Ok(None)
            } else {
                Err(meta
                    .problem(
                        400,
                        "Bad Request",
                        "The Idempotency-Key header is required on this operation",
                    )
                    .field(
                        h::IDEMPOTENCY_KEY,
                        "required: 1 to 50 visible ASCII characters, no commas",
                    )
                    .code(ErrorCode::MissingRequiredParameter)
                    .err())
            }
        }
        Some(v) => {
            let s = v.to_str().unwrap_or("\u{fffd}");
            h::IdempotencyKey::new(s)
                .map(|k| Some(k.as_str().to_owned()))
                .map_err(|e| {
                    meta.problem(
                        400,
                        "Bad Request",
                        format!("Invalid Idempotency-Key header: {e}"),
                    )
                    .field(h::IDEMPOTENCY_KEY, e.to_string())
                    .err()
                })
        }
    }
}

/// Reference from the path, validated.
pub fn path_reference(s: &S, meta: &RequestMeta, reference: &str) -> Result<String, ApiError> {
    let bad = |reason: String| {
        meta.problem(
            400,
            "Bad Request",
            format!("Invalid reference in the path: {reason}"),
        )
        .field("reference", reason)
        .err()
    };
    let r = vipps_types::ids::Reference::new(reference).map_err(|e| bad(e.to_string()))?;
    if reference.len() > s.config.limits.reference_max_len {
        return Err(bad(format!(
            "reference must be at most {} characters long",
            s.config.limits.reference_max_len
        )));
    }
    Ok(r.as_str().to_owned())
}

/// Content of a header or empty.
pub fn hdr<'a>(parts: &'a http::request::Parts, name: &str) -> Option<&'a str> {
    header_str(&parts.headers, name)
}
