//! ePayment test controls under `/_emulator/`: a payment with its events, acting as the user (approve, reject),
//! the landing page a redirect URL opens, and the QR target.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse, Redirect};
use axum::routing::{get, post};
use serde::Deserialize;

use super::api::{PaymentRef, load_settled, path_reference};
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
        .route("/_emulator/landing", get(landing).post(landing_action))
        .route("/_emulator/qr", get(qr))
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
    run_write(&s, &meta, Op::Execute(cmd)).await
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

#[derive(Deserialize)]
struct LandingQuery {
    msn: String,
    reference: String,
    token: String,
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn landing_payment(
    s: &S,
    meta: &RequestMeta,
    q: &LandingQuery,
) -> Result<std::sync::Arc<Payment>, ApiError> {
    let reference = path_reference(s, meta, &q.reference)?;
    let p = load_settled(s, meta, &q.msn, &reference).await?;
    if p.token != q.token {
        return Err(meta
            .problem(
                403,
                "Forbidden",
                "The token does not belong to this payment",
            )
            .field("token", "mismatch")
            .err());
    }
    Ok(p)
}

async fn landing(
    State(s): State<S>,
    meta: RequestMeta,
    Query(q): Query<LandingQuery>,
) -> ApiResult {
    let p = landing_payment(&s, &meta, &q).await?;
    let amount = format!("{}.{:02} {}", p.amount / 100, p.amount % 100, p.currency);
    let page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Vipps emulator: approve payment</title></head><body>\
         <h1>Payment {reference}</h1><p>Merchant {msn} asks for <strong>{amount}</strong>.</p><p>State: {state}</p>\
         <form method=\"post\"><input type=\"hidden\" name=\"msn\" value=\"{msn}\"><input type=\"hidden\" name=\"reference\" value=\"{reference}\">\
         <input type=\"hidden\" name=\"token\" value=\"{token}\"><button name=\"action\" value=\"approve\">Approve</button> \
         <button name=\"action\" value=\"reject\">Reject</button></form></body></html>",
        reference = escape(&p.reference),
        msn = escape(&p.msn),
        amount = escape(&amount),
        state = p.state.as_str(),
        token = escape(&p.token),
    );
    Ok(Html(page).into_response())
}

async fn landing_action(State(s): State<S>, meta: RequestMeta, bytes: Bytes) -> ApiResult {
    let mut fields = std::collections::HashMap::new();
    for (k, v) in url::form_urlencoded::parse(&bytes) {
        fields.insert(k.into_owned(), v.into_owned());
    }
    let get = |k: &str| fields.get(k).cloned().unwrap_or_default();
    let q = LandingQuery {
        msn: get("msn"),
        reference: get("reference"),
        token: get("token"),
    };
    let p = landing_payment(&s, &meta, &q).await?;
    let m = match get("action").as_str() {
        "approve" => Modification::UserApprove,
        "reject" => Modification::UserReject,
        _ => {
            return Err(meta
                .problem(400, "Bad Request", "action must be approve or reject")
                .field("action", "approve | reject")
                .err());
        }
    };
    let cmd = commands::modify(&p.msn, &p.reference, m);
    let resp = run_write(&s, &meta, Op::Execute(cmd)).await?;
    if !resp.status().is_success() {
        return Ok(resp);
    }
    let mut back = s
        .base_url
        .join("_emulator/landing")
        .map_err(|e| internal(&meta, &e))?;
    back.query_pairs_mut()
        .append_pair("msn", &q.msn)
        .append_pair("reference", &q.reference)
        .append_pair("token", &q.token);
    Ok(Redirect::to(back.as_str()).into_response())
}

async fn qr(State(s): State<S>, meta: RequestMeta, Query(q): Query<LandingQuery>) -> ApiResult {
    let p = landing_payment(&s, &meta, &q).await?;
    let mut target = s
        .base_url
        .join("_emulator/landing")
        .map_err(|e| internal(&meta, &e))?;
    target
        .query_pairs_mut()
        .append_pair("msn", &p.msn)
        .append_pair("reference", &p.reference)
        .append_pair("token", &p.token);
    Ok((
        [(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        target.to_string(),
    )
        .into_response())
}
