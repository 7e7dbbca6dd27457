//! ePayment test controls under `/_emulator/`: a payment with its events, and acting as the user (approve,
//! reject). The payer's own pages are in `pages.rs`.

use axum::Router;
use axum::extract::{Query, State};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde::Deserialize;

use super::api::{PaymentRef, load_settled};
use super::commands::{self, Modification};
use super::domain::Payment;
use super::render;
use crate::platform::Shared as S;
use crate::platform::aggregate::decode;
use crate::platform::http::{ApiError, ApiResult, RequestMeta};
use crate::platform::idempotency::{internal, run_write};
use crate::platform::store::Op;

/// The ePayment controls.
pub(super) fn routes() -> Router<S> {
    Router::new()
        .route("/_emulator/payments/{reference}", get(payment))
        .route(
            "/_emulator/payments/{reference}/approve",
            post(user_approve),
        )
        .route("/_emulator/payments/{reference}/reject", post(user_reject))
}

#[derive(Deserialize, Default)]
struct MsnQuery {
    msn: Option<String>,
}

/// Finds the MSN of a reference: the one given, or the only configured sales unit that has it.
async fn resolve_msn(
    s: &S,
    meta: &RequestMeta,
    reference: &str,
    msn: Option<String>,
) -> Result<String, ApiError> {
    if let Some(m) = msn {
        return Ok(m);
    }
    let mut found = Vec::new();
    for m in s.auth.msns.keys() {
        if s.store
            .aggregate(&commands::key(m, reference), decode::<Payment>)
            .await
            .map_err(|e| internal(meta, &e))?
            .is_some()
        {
            found.push(m.clone());
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(meta
            .problem(
                404,
                "Payment not found",
                format!("No payment with reference `{reference}` exists"),
            )
            .err()),
        _ => Err(meta
            .problem(
                400,
                "Bad Request",
                format!("Reference `{reference}` exists for several sales units; add ?msn="),
            )
            .field("msn", "required when the reference is ambiguous")
            .err()),
    }
}

async fn payment(
    State(s): State<S>,
    meta: RequestMeta,
    PaymentRef(reference): PaymentRef,
    Query(q): Query<MsnQuery>,
) -> ApiResult {
    let msn = resolve_msn(&s, &meta, &reference, q.msn).await?;
    let p = load_settled(&s, &meta, &msn, &reference).await?;
    Ok(axum::Json(serde_json::json!({
        "msn": msn,
        "payment": render::payment(&p),
        "events": render::events(&p),
        "expiresAt": crate::platform::clock::rfc3339(time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(p.expires_ms) * 1_000_000).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)),
    }))
    .into_response())
}

/// Acts as the user on a payment found by reference (and MSN when ambiguous).
async fn act_as_user(
    s: S,
    meta: RequestMeta,
    reference: String,
    q: MsnQuery,
    m: Modification,
) -> ApiResult {
    let msn = resolve_msn(&s, &meta, &reference, q.msn).await?;
    let cmd = commands::modify(&msn, &reference, m);
    let resp = run_write(&s, &meta, Op::Execute(cmd)).await?;
    super::facade::notify_followers(&s, &msn, &reference).await;
    Ok(resp)
}

async fn user_approve(
    State(s): State<S>,
    meta: RequestMeta,
    PaymentRef(reference): PaymentRef,
    Query(q): Query<MsnQuery>,
) -> ApiResult {
    act_as_user(s, meta, reference, q, Modification::UserApprove).await
}

async fn user_reject(
    State(s): State<S>,
    meta: RequestMeta,
    PaymentRef(reference): PaymentRef,
    Query(q): Query<MsnQuery>,
) -> ApiResult {
    act_as_user(s, meta, reference, q, Modification::UserReject).await
}
