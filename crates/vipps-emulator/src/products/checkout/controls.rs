//! Checkout test controls under `/_emulator/checkout/`: a session with its callback attempts and the link to its
//! page, and acting as the user (approve with the prefilled or test user's details, abort). A payment session
//! also completes through ePayment's own user controls (`/_emulator/payments/{reference}/approve|reject`).

use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::domain::CallbackState;
use super::flow::{self, UserAction};
use super::render;
use crate::platform::Shared as S;
use crate::platform::http::{ApiError, ApiResult, RequestMeta};
use crate::platform::openapi::{JsonObject, ProblemDoc};

/// The Checkout controls, registered with their OpenAPI operations.
pub(super) fn routes() -> OpenApiRouter<S> {
    OpenApiRouter::new()
        .routes(routes!(session))
        .routes(routes!(approve))
        .routes(routes!(abort))
}

/// Which sales unit, when a reference exists for several.
#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct MsnQuery {
    /// The MSN (required only when the reference is ambiguous).
    msn: Option<String>,
}

/// The session of a reference: for the MSN given, or the only configured sales unit that has it.
async fn find(
    s: &S,
    meta: &RequestMeta,
    reference: &str,
    msn: Option<String>,
) -> Result<flow::Loaded, ApiError> {
    let msns: Vec<String> = match msn {
        Some(m) => vec![m],
        None => s.auth.msns.keys().cloned().collect(),
    };
    let mut found = Vec::new();
    for m in msns {
        if let Some(l) = flow::load(s, meta, &m, reference).await? {
            found.push(l);
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(meta
            .problem(
                404,
                "Session not found",
                format!("No checkout session with reference `{reference}` exists"),
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

fn callback_state(c: CallbackState) -> &'static str {
    match c {
        CallbackState::NotDue => "NOT_DUE",
        CallbackState::Pending => "PENDING",
        CallbackState::Delivered => "DELIVERED",
        CallbackState::GivenUp => "GIVEN_UP",
    }
}

fn describe(s: &S, l: &flow::Loaded) -> serde_json::Value {
    let session = &l.session;
    let mut page = s
        .base_url
        .join(render::FRONTEND_PATH)
        .expect("static path joins");
    page.query_pairs_mut()
        .append_pair("token", &render::token(session));
    serde_json::json!({
        "msn": session.msn,
        "session": l.render(),
        "checkoutUrl": page.to_string(),
        "expiresAt": crate::platform::clock::rfc3339(
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(session.expires_ms) * 1_000_000)
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)),
        "callback": {
            "url": session.merchant_info.callback_url,
            "state": callback_state(session.callback),
            "attempts": session.attempts.iter().map(|a| serde_json::json!({
                "time": crate::platform::clock::rfc3339(
                    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(a.at_ms) * 1_000_000)
                        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)),
                "status": a.status,
                "error": a.error,
                "delivered": a.delivered,
            })).collect::<Vec<_>>(),
        },
    })
}

/// A session as the merchant would read it, with its page link, expiry and the merchant-callback attempts.
#[utoipa::path(
    get,
    path = "/_emulator/checkout/sessions/{reference}",
    tag = "checkout",
    params(("reference" = String, Path, description = "The session's reference"), MsnQuery),
    responses(
        (status = 200, description = "The session, `checkoutUrl`, `expiresAt` and `callback` (URL, state, attempts)",
            body = JsonObject),
        (status = "4XX", description = "No such session, or an ambiguous reference (add `msn`)",
            content_type = "application/problem+json", body = ProblemDoc),
    ),
)]
async fn session(
    State(s): State<S>,
    meta: RequestMeta,
    Path(reference): Path<String>,
    Query(q): Query<MsnQuery>,
) -> ApiResult {
    let l = find(&s, &meta, &reference, q.msn).await?;
    Ok(axum::Json(describe(&s, &l)).into_response())
}

async fn act(s: S, meta: RequestMeta, reference: String, q: MsnQuery, a: UserAction) -> ApiResult {
    let l = find(&s, &meta, &reference, q.msn).await?;
    if let Err(msg) = flow::act(&s, &meta, &l.session, a).await? {
        return Err(meta.problem(409, "Conflict", msg).err());
    }
    let now = find(&s, &meta, &reference, Some(l.session.msn.clone())).await?;
    Ok(axum::Json(describe(&s, &now)).into_response())
}

/// Completes the session as the user would on the hosted page (prefilled or test user's details).
#[utoipa::path(
    post,
    path = "/_emulator/checkout/sessions/{reference}/approve",
    tag = "checkout",
    params(("reference" = String, Path, description = "The session's reference"), MsnQuery),
    responses(
        (status = 200, description = "The session after the user's action", body = JsonObject),
        (status = "4XX", description = "No such session, an ambiguous reference, or a state that does not allow it (409)",
            content_type = "application/problem+json", body = ProblemDoc),
    ),
)]
async fn approve(
    State(s): State<S>,
    meta: RequestMeta,
    Path(reference): Path<String>,
    Query(q): Query<MsnQuery>,
) -> ApiResult {
    act(s, meta, reference, q, UserAction::Approve(None)).await
}

/// Aborts the session as the user would on the hosted page.
#[utoipa::path(
    post,
    path = "/_emulator/checkout/sessions/{reference}/abort",
    tag = "checkout",
    params(("reference" = String, Path, description = "The session's reference"), MsnQuery),
    responses(
        (status = 200, description = "The session after the user's action", body = JsonObject),
        (status = "4XX", description = "No such session, an ambiguous reference, or a state that does not allow it (409)",
            content_type = "application/problem+json", body = ProblemDoc),
    ),
)]
async fn abort(
    State(s): State<S>,
    meta: RequestMeta,
    Path(reference): Path<String>,
    Query(q): Query<MsnQuery>,
) -> ApiResult {
    act(s, meta, reference, q, UserAction::Abort).await
}
