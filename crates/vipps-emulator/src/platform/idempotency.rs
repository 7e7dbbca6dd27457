//! `Idempotency-Key` semantics, in one place: the scope of a key, the canonical fingerprint of a request, the
//! in-process claim (a concurrent duplicate is answered 423 at once), the deferred delay of an injected fault,
//! and turning the store's verdict (fresh, replayed, mismatch, in progress) into the answer. The store keeps the
//! answer with the change in one transaction (see [`super::store`]).

use std::collections::HashSet;

use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use vipps_types::headers as h;
use vipps_types::problem::ErrorCode;

use super::Shared;
use super::aggregate::{Aggregate, AggregateKey, Command, decode};
use super::http::{ApiError, ApiResult, RequestMeta, stored_to_response};
use super::metrics::IdempotencyOutcome;
use super::store::{IdemClaim, Op, WriteRequest, WriteResult};

/// Claims of an in-flight idempotent request, so a concurrent duplicate is answered 423 instead of waiting.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    scopes: Mutex<HashSet<String>>,
}

/// Releases an in-flight claim when dropped.
#[derive(Debug)]
pub(crate) struct InFlightGuard<'a> {
    owner: &'a InFlight,
    scope: String,
}

impl InFlight {
    /// Claims `scope`; `None` when another request holds it.
    pub(crate) fn claim(&self, scope: &str) -> Option<InFlightGuard<'_>> {
        if self.scopes.lock().insert(scope.to_owned()) {
            Some(InFlightGuard {
                owner: self,
                scope: scope.to_owned(),
            })
        } else {
            None
        }
    }
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.owner.scopes.lock().remove(&self.scope);
    }
}

/// Canonical SHA-256 fingerprint of a typed request body.
pub(crate) fn fingerprint_of<T: serde::Serialize>(parsed: &T) -> [u8; 32] {
    // The typed request serializes with a fixed field order, so key order and whitespace in the original body
    // do not change the fingerprint.
    Sha256::digest(serde_json::to_vec(parsed).unwrap_or_default()).into()
}

/// An idempotent write as a handler describes it.
#[derive(Debug)]
pub(crate) struct Idempotent<'a> {
    /// Who sent it: the principal's scope and the MSN (`merchant:<id>|<msn>`).
    pub sender: String,
    /// The validated key.
    pub key: &'a str,
    /// The fingerprint of the request body.
    pub fingerprint: [u8; 32],
    /// The error code for "same key, different body" (the vendor's code differs per operation).
    pub mismatch_code: ErrorCode,
}

/// Runs an idempotent write: claims the key (423 while another request with it executes), applies a deferred
/// delay fault, executes atomically with the stored answer, and replays or refuses as the key demands.
pub(crate) async fn run_idempotent(
    s: &Shared,
    meta: &RequestMeta,
    idem: Idempotent<'_>,
    op: Op,
) -> ApiResult {
    let scope = format!("{}|{}|{}|{}", idem.sender, meta.method, meta.path, idem.key);
    let delay = meta.deferred_delay();
    let req = WriteRequest {
        idem: Some(IdemClaim {
            scope: scope.clone(),
            fingerprint: idem.fingerprint,
            mismatch_code: idem.mismatch_code,
        }),
        op,
        now_ms: 0,
        request: meta.info(),
    };
    // An accepted request runs to completion in its own task, like on a real server: a client that gives up
    // (timeout, dropped connection) does not cancel it, and its key stays claimed until it is done.
    let s2 = s.clone();
    let task = tokio::spawn(async move {
        let _claim = s2.inflight.claim(&scope)?;
        if let Some(ms) = delay {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
        let mut req = req;
        req.now_ms = s2.clock.unix_ms();
        let r = s2.write(req).await;
        s2.changed();
        Some(r)
    });
    let result = match task.await {
        Ok(Some(r)) => r,
        Ok(None) => {
            count(s, IdempotencyOutcome::InFlight);
            return Err(locked(meta));
        }
        Err(e) => return Err(internal(meta, &e)),
    };
    let result = result.map_err(|e| internal(meta, &e))?;
    match &result {
        WriteResult::Fresh(_) => {}
        WriteResult::Replayed(_) => count(s, IdempotencyOutcome::Replayed),
        WriteResult::InProgress => count(s, IdempotencyOutcome::InFlight),
        WriteResult::Mismatch(_) => count(s, IdempotencyOutcome::Conflict),
    }
    match result {
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

/// Counts what an idempotency key did, when metrics are on.
fn count(s: &Shared, o: IdempotencyOutcome) {
    if let Some(m) = &s.metrics {
        m.idempotency(o);
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

/// Runs a write without an idempotency key.
pub(crate) async fn run_write(s: &Shared, meta: &RequestMeta, op: Op) -> ApiResult {
    if let Some(ms) = meta.deferred_delay() {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    let req = WriteRequest {
        idem: None,
        op,
        now_ms: s.clock.unix_ms(),
        request: meta.info(),
    };
    let written = s.write(req).await.map_err(|e| internal(meta, &e));
    s.changed();
    match written? {
        WriteResult::Fresh(r) | WriteResult::Replayed(r) => Ok(stored_to_response(r, false)),
        WriteResult::Mismatch(_) | WriteResult::InProgress => {
            Err(internal(meta, &"unexpected idempotency answer"))
        }
    }
}

/// Reads an aggregate, first persisting the change time has made to it if it is due (expiry and the like), so a
/// read never shows a state the store does not have. `settle` is the product's settle command for it.
pub(crate) async fn read_settled<A: Aggregate>(
    s: &Shared,
    meta: &RequestMeta,
    key: &AggregateKey,
    settle: impl FnOnce() -> Box<dyn Command>,
) -> Result<Option<std::sync::Arc<A>>, ApiError> {
    let read = || async {
        s.store
            .aggregate(key, decode::<A>)
            .await
            .map_err(|e| internal(meta, &e))?
            .map(|d| {
                d.downcast::<A>()
                    .map_err(|_| internal(meta, &format!("stored document is not {}", A::KIND)))
            })
            .transpose()
    };
    let current = read().await?;
    let due = current
        .as_ref()
        .and_then(|a| a.due_ms())
        .is_some_and(|due| due <= s.clock.unix_ms());
    if !due {
        return Ok(current);
    }
    run_write(s, meta, Op::Execute(settle())).await?;
    read().await
}

/// A 500 problem for an internal failure (the cause is logged, not sent).
pub(crate) fn internal(meta: &RequestMeta, e: &dyn std::fmt::Display) -> ApiError {
    tracing::error!(trace_id = %meta.trace_id, error = %e, "internal error");
    meta.problem(
        500,
        "Internal Server Error",
        "The emulator could not complete the request; see its log for the trace id",
    )
    .code(ErrorCode::InternalError)
    .err()
}

/// The `Idempotency-Key` header (the ePayment and Webhooks rules): validated, and required unless `optional`.
pub(crate) fn idempotency_key(
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
