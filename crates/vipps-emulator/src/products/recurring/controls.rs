//! Recurring test controls under `/_emulator/recurring/`: the confirmation page a `vippsConfirmationUrl` opens
//! (accept or reject as the user), acting as the user through JSON (accept, reject, stop in the app), making a
//! charge's next attempts fail, and the number of due agreements and charges (for benchmarks and tests that wait
//! for the sweeper).

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;
use maud::html;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::api::{agreement_follow_up, load_agreement, load_charge, recurring_problems};
use super::commands::{self, AgreementOp, ChargeOp};
use super::domain::{Agreement, Charge};
use crate::platform::Shared as S;
use crate::platform::aggregate::{Aggregate, decode};
use crate::platform::html::{money, page, respond};
use crate::platform::http::{ApiError, ApiResult, RequestMeta};
use crate::platform::idempotency::{internal, run_write};
use crate::platform::openapi::{JsonObject, ProblemDoc};
use crate::platform::store::Op;

/// The Recurring controls: JSON ones registered with their OpenAPI operation, and the confirmation page.
pub(super) fn routes() -> OpenApiRouter<S> {
    OpenApiRouter::new()
        .routes(routes!(user_accept))
        .routes(routes!(user_reject))
        .routes(routes!(user_stop))
        .routes(routes!(fail_charge))
        .routes(routes!(due))
        .merge(
            Router::new()
                .route(
                    "/_emulator/recurring/confirm",
                    get(confirm_page).post(confirm_action),
                )
                .into(),
        )
        .layer(axum::middleware::map_response(recurring_problems))
}

/// Which sales unit, when an id exists for several.
#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct MsnQuery {
    /// The MSN (required only when the id is ambiguous).
    msn: Option<String>,
}

/// Finds the MSN that owns a document: the one given, or the only configured sales unit that has it.
async fn resolve_msn<A: Aggregate>(
    s: &S,
    meta: &RequestMeta,
    key: impl Fn(&str) -> crate::platform::aggregate::AggregateKey,
    id: &str,
    msn: Option<String>,
) -> Result<String, ApiError> {
    if let Some(m) = msn {
        return Ok(m);
    }
    let mut found = Vec::new();
    for m in s.auth.msns.keys() {
        if s.store
            .aggregate(&key(m), decode::<A>)
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
                "Not Found",
                format!("No document with id `{id}` exists"),
            )
            .field("id", "not found")
            .err()),
        _ => Err(meta
            .problem(
                400,
                "Bad Request",
                format!("`{id}` exists for several sales units; add ?msn="),
            )
            .field("msn", "required when the id is ambiguous")
            .err()),
    }
}

async fn agreement_msn(
    s: &S,
    meta: &RequestMeta,
    id: &str,
    msn: Option<String>,
) -> Result<String, ApiError> {
    resolve_msn::<Agreement>(s, meta, |m| commands::agreement_key(m, id), id, msn).await
}

/// Acts as the user on an agreement, then makes (or cancels) its charges as the new status requires.
async fn act(s: &S, meta: &RequestMeta, msn: &str, id: &str, op: AgreementOp) -> ApiResult {
    let resp = run_write(
        s,
        meta,
        Op::Execute(commands::modify_agreement(msn, id, op)),
    )
    .await?;
    if resp.status().is_success() {
        agreement_follow_up(s, meta, msn, id).await?;
    }
    Ok(resp)
}

/// Accept the agreement as the user would in the app; its charges follow (made or cancelled as the new status requires).
#[utoipa::path(
    post,
    path = "/_emulator/recurring/agreements/{agreement_id}/accept",
    tag = "recurring",
    params(("agreement_id" = String, Path, description = "The agreement id"), MsnQuery),
    responses(
        (status = 200, description = "The agreement after the user's action", body = JsonObject),
        (status = "4XX", description = "No such agreement, an ambiguous id (add `msn`), or a status that does not \
            allow it (Recurring problem format)", content_type = "application/problem+json", body = ProblemDoc),
    ),
)]
async fn user_accept(
    State(s): State<S>,
    meta: RequestMeta,
    Path(id): Path<String>,
    Query(q): Query<MsnQuery>,
) -> ApiResult {
    let msn = agreement_msn(&s, &meta, &id, q.msn).await?;
    act(&s, &meta, &msn, &id, AgreementOp::UserAccept).await
}

/// Reject the agreement as the user would; its charges follow (made or cancelled as the new status requires).
#[utoipa::path(
    post,
    path = "/_emulator/recurring/agreements/{agreement_id}/reject",
    tag = "recurring",
    params(("agreement_id" = String, Path, description = "The agreement id"), MsnQuery),
    responses(
        (status = 200, description = "The agreement after the user's action", body = JsonObject),
        (status = "4XX", description = "No such agreement, an ambiguous id (add `msn`), or a status that does not \
            allow it (Recurring problem format)", content_type = "application/problem+json", body = ProblemDoc),
    ),
)]
async fn user_reject(
    State(s): State<S>,
    meta: RequestMeta,
    Path(id): Path<String>,
    Query(q): Query<MsnQuery>,
) -> ApiResult {
    let msn = agreement_msn(&s, &meta, &id, q.msn).await?;
    act(&s, &meta, &msn, &id, AgreementOp::UserReject).await
}

/// Stop the agreement from the app, as the user can; its charges follow (made or cancelled as the new status requires).
#[utoipa::path(
    post,
    path = "/_emulator/recurring/agreements/{agreement_id}/stop",
    tag = "recurring",
    params(("agreement_id" = String, Path, description = "The agreement id"), MsnQuery),
    responses(
        (status = 200, description = "The agreement after the user's action", body = JsonObject),
        (status = "4XX", description = "No such agreement, an ambiguous id (add `msn`), or a status that does not \
            allow it (Recurring problem format)", content_type = "application/problem+json", body = ProblemDoc),
    ),
)]
async fn user_stop(
    State(s): State<S>,
    meta: RequestMeta,
    Path(id): Path<String>,
    Query(q): Query<MsnQuery>,
) -> ApiResult {
    let msn = agreement_msn(&s, &meta, &id, q.msn).await?;
    act(&s, &meta, &msn, &id, AgreementOp::UserStop).await
}

/// Which charge attempts fail.
#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct FailQuery {
    /// The MSN (required only when the id is ambiguous).
    msn: Option<String>,
    /// How many of the next attempts fail (default: all).
    times: Option<i32>,
}

/// `POST /_emulator/recurring/charges/{chargeId}/fail?times=n`: the next `n` attempts (default all) fail with
/// `user_action_required`; answers the charge.
#[utoipa::path(
    post,
    path = "/_emulator/recurring/charges/{charge_id}/fail",
    tag = "recurring",
    params(("charge_id" = String, Path, description = "The charge id"), FailQuery),
    responses(
        (status = 200, description = "The charge", body = JsonObject),
        (status = "4XX", description = "No such charge or an ambiguous id (Recurring problem format)",
            content_type = "application/problem+json", body = ProblemDoc),
    ),
)]
async fn fail_charge(
    State(s): State<S>,
    meta: RequestMeta,
    Path(id): Path<String>,
    Query(q): Query<FailQuery>,
) -> ApiResult {
    let msn =
        resolve_msn::<Charge>(&s, &meta, |m| commands::charge_key(m, &id), &id, q.msn).await?;
    load_charge(&s, &meta, &msn, None, &id).await?;
    let times = q.times.unwrap_or(-1).max(-1);
    run_write(
        &s,
        &meta,
        Op::Execute(commands::modify_charge(
            &msn,
            None,
            &id,
            ChargeOp::ForceFail { times },
        )),
    )
    .await
}

/// `GET /_emulator/recurring/due`: how many agreements and charges are due for a time-driven change now (up to
/// 10,000), so a caller can wait until the sweeper has caught up.
#[utoipa::path(
    get,
    path = "/_emulator/recurring/due",
    tag = "recurring",
    responses((status = 200, description = "`due` (agreements and charges due now, up to 10,000) and `now_ms`",
        body = JsonObject)),
)]
async fn due(State(s): State<S>, meta: RequestMeta) -> ApiResult {
    let now = s.clock.unix_ms();
    let due = s
        .store
        .due(now, 10_000)
        .await
        .map_err(|e| internal(&meta, &e))?;
    let n = due
        .iter()
        .filter(|d| d.kind == Agreement::KIND || d.kind == Charge::KIND)
        .count();
    Ok(axum::Json(serde_json::json!({ "due": n, "now_ms": now })).into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConfirmQuery {
    msn: String,
    agreement_id: String,
    token: String,
}

async fn confirm_agreement(
    s: &S,
    meta: &RequestMeta,
    q: &ConfirmQuery,
) -> Result<std::sync::Arc<Agreement>, ApiError> {
    let a = load_agreement(s, meta, &q.msn, &q.agreement_id).await?;
    if a.token != q.token {
        return Err(meta
            .problem(
                403,
                "Forbidden",
                "The token does not belong to this agreement",
            )
            .field("token", "mismatch")
            .err());
    }
    Ok(a)
}

fn kr(ore: i64, currency: &str) -> String {
    money(ore, currency)
}

/// The confirmation page, in the payer pages' look: the agreement's terms (product, price, interval, the initial
/// charge) and Accept / Reject while it is pending.
async fn confirm_page(
    State(s): State<S>,
    meta: RequestMeta,
    Query(q): Query<ConfirmQuery>,
) -> ApiResult {
    let a = confirm_agreement(&s, &meta, &q).await?;
    let cur = a.currency.as_str();
    let price = match (a.pricing_type.as_str(), a.amount, a.suggested_max) {
        ("LEGACY", Some(v), _) => kr(v, cur),
        ("VARIABLE", _, Some(m)) => format!("up to {} (suggested maximum)", kr(m, cur)),
        _ => "a flexible amount".to_owned(),
    };
    let interval = match &a.interval {
        Some((u, 1)) => format!("every {}", u.to_ascii_lowercase()),
        Some((u, c)) => format!("every {c} {}s", u.to_ascii_lowercase()),
        None => "when the merchant charges".to_owned(),
    };
    let status = a.status.as_str();
    let pending = status == "PENDING";
    let content = html! {
        div class="phone" {
            div class="appbar" { "Vipps MobilePay · recurring agreement" }
            p class="merchant" { "Merchant " (a.msn) }
            h1 data-testid="product" { (a.product_name) }
            @if let Some(d) = &a.product_description { p class="description" { (d) } }
            p class="amount" data-testid="price" { (price) }
            dl class="fields" data-testid="terms" {
                dt { "Pricing" } dd { (a.pricing_type) }
                dt { "Interval" } dd { (interval) }
                @if let Some(i) = &a.initial {
                    dt { "Paid now" } dd data-testid="initial" { strong { (kr(i.amount, cur)) } " (" (i.description) ")" }
                }
                @if let Some(scope) = &a.scope {
                    dt { "The merchant asks for" } dd { (scope) }
                }
                dt { "Manage it at" } dd { a href=(a.merchant_agreement_url) { (a.merchant_agreement_url) } }
            }
            p class="muted" { "Agreement " span class="mono" { (a.id) } " · " span class={"state state-" (status)} { "Status: " (status) } }
            @if pending {
                form method="post" action="/_emulator/recurring/confirm" {
                    input type="hidden" name="msn" value=(a.msn);
                    input type="hidden" name="agreementId" value=(a.id);
                    input type="hidden" name="token" value=(a.token);
                    div class="actions" {
                        button type="submit" name="action" value="reject" { "Reject" }
                        button class="primary" type="submit" name="action" value="accept" { "Accept" }
                    }
                }
            } @else {
                div class=@if status == "ACTIVE" { "notice ok" } @else { "notice" } role="status" { "This agreement is " (status.to_ascii_lowercase()) "." }
                p { a class="button primary" href=(a.merchant_redirect_url) { "Back to the merchant" } }
            }
        }
    };
    Ok(respond(
        200,
        page("Confirm agreement", "payer", None, content),
    ))
}

async fn confirm_action(State(s): State<S>, meta: RequestMeta, bytes: Bytes) -> ApiResult {
    let mut fields = std::collections::HashMap::new();
    for (k, v) in url::form_urlencoded::parse(&bytes) {
        fields.insert(k.into_owned(), v.into_owned());
    }
    let get = |k: &str| fields.get(k).cloned().unwrap_or_default();
    let q = ConfirmQuery {
        msn: get("msn"),
        agreement_id: get("agreementId"),
        token: get("token"),
    };
    let a = confirm_agreement(&s, &meta, &q).await?;
    let op = match get("action").as_str() {
        "accept" => AgreementOp::UserAccept,
        "reject" => AgreementOp::UserReject,
        _ => {
            return Err(meta
                .problem(400, "Bad Request", "action must be accept or reject")
                .field("action", "accept | reject")
                .err());
        }
    };
    let resp = act(&s, &meta, &a.msn, &a.id, op).await?;
    if !resp.status().is_success() {
        return Ok(resp);
    }
    Ok(Redirect::to(&a.merchant_redirect_url).into_response())
}
