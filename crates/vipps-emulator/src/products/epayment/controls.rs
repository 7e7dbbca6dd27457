//! ePayment test controls under `/_emulator/`: a payment with its events, and acting as the user (approve,
//! reject). The payer's own pages are in `pages.rs`.

use axum::extract::{Query, State};
use axum::response::IntoResponse;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::api::{PaymentRef, load_settled};
use super::commands::{self, Modification};
use super::domain::Payment;
use super::render;
use crate::platform::Shared as S;
use crate::platform::aggregate::decode;
use crate::platform::http::{ApiError, ApiResult, RequestMeta};
use crate::platform::idempotency::{internal, run_write};
use crate::platform::openapi::{JsonObject, ProblemDoc};
use crate::platform::store::Op;

/// The ePayment controls, each registered with its OpenAPI operation.
pub(super) fn routes() -> OpenApiRouter<S> {
    OpenApiRouter::new()
        .routes(routes!(payment))
        .routes(routes!(user_approve))
        .routes(routes!(user_reject))
}

/// Which sales unit, when a reference exists for several.
#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct MsnQuery {
    /// The MSN (required only when the reference is ambiguous).
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

#[utoipa::path(
    get,
    path = "/_emulator/payments/{reference}",
    tag = "epayment",
    params(("reference" = String, Path, description = "The payment reference"), MsnQuery),
    responses(
        (status = 200, description = "`msn`, `payment` (as the ePayment API's GET shows it), `events` (its event \
            log) and `expiresAt`", body = JsonObject),
        (status = 400, description = "An invalid reference, or one that several sales units have (add `msn`)",
            content_type = "application/problem+json", body = ProblemDoc),
        (status = 404, description = "No such payment", content_type = "application/problem+json", body = ProblemDoc),
    ),
)]
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

/// Approve the payment as the user would in the app.
#[utoipa::path(
    post,
    path = "/_emulator/payments/{reference}/approve",
    tag = "epayment",
    params(("reference" = String, Path, description = "The payment reference"), MsnQuery),
    responses(
        (status = 200, description = "The payment after the user's answer", body = JsonObject),
        (status = "4XX", description = "An invalid or ambiguous reference (add `msn`), no such payment, or one \
            no longer waiting for the user", content_type = "application/problem+json", body = ProblemDoc),
    ),
)]
async fn user_approve(
    State(s): State<S>,
    meta: RequestMeta,
    PaymentRef(reference): PaymentRef,
    Query(q): Query<MsnQuery>,
) -> ApiResult {
    act_as_user(s, meta, reference, q, Modification::UserApprove).await
}

/// Reject the payment as the user would in the app.
#[utoipa::path(
    post,
    path = "/_emulator/payments/{reference}/reject",
    tag = "epayment",
    params(("reference" = String, Path, description = "The payment reference"), MsnQuery),
    responses(
        (status = 200, description = "The payment after the user's answer", body = JsonObject),
        (status = "4XX", description = "An invalid or ambiguous reference (add `msn`), no such payment, or one \
            no longer waiting for the user", content_type = "application/problem+json", body = ProblemDoc),
    ),
)]
async fn user_reject(
    State(s): State<S>,
    meta: RequestMeta,
    PaymentRef(reference): PaymentRef,
    Query(q): Query<MsnQuery>,
) -> ApiResult {
    act_as_user(s, meta, reference, q, Modification::UserReject).await
}
