//! Recurring API v3 handlers: authenticate, validate, then hand commands to the platform (idempotently: every
//! POST, PATCH and DELETE requires a Recurring `Idempotency-Key`).
//!
//! Errors are answered in the Recurring problem format (`extraDetails` of `{field, text}`, `contextId`): the
//! handlers build the platform's problems and [`recurring_problems`] rewrites every problem+json answer of these
//! routes, including the platform's own (authentication, idempotency 409/423, body shape).
//!
//! **Charge creation and its agreement.** A charge is its own document, so the command that creates it cannot
//! see the agreement. The handler reads the agreement just before (it must be `ACTIVE`, and the amount must fit
//! its pricing); a stop that commits between that read and the create lets one charge through, which the stop's
//! follow-up then cancels if it lists it, exactly as a charge created a moment before the stop would be.

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use http::request::Parts;
use serde::Deserialize;
use vipps_types::headers::{self as h, RecurringIdempotencyKey};
use vipps_types::problem::{ErrorCode, Problem};
use vipps_types::recurring::{
    BULK_MAX, BulkChargesRequest, BulkChargesResponse, CampaignResponse, CampaignType,
    CaptureChargeRequest, ChargeType, CreateChargeRequest, DraftAgreementRequest,
    ForceAcceptRequest, InvalidCharge, PatchAgreementRequest, PricingType, RecurringExtraDetail,
    RecurringProblem, RefundChargeRequest, TimePeriod, TimePeriodResponse,
};

use super::commands::{
    self, AgreementDraft, AgreementOp, ChargeDraft, ChargeOp, Drafted, InitialDraft, PatchData,
};
use super::domain::{AStatus, Agreement, Charge, DAY_MS, day_start, magic_failure};
use super::{list, render};
use crate::config::MerchantEnvironment;
use crate::platform::Shared as S;
use crate::platform::auth::AuthCtx;
use crate::platform::extract::{JsonBody, Merchant};
use crate::platform::http::{
    ApiError, ApiResult, RequestMeta, char_count, merchant_url, parse_json, read_body,
};
use crate::platform::idempotency::{
    Idempotent, fingerprint_of, internal, read_settled, run_idempotent, run_write,
};
use crate::platform::ratelimit::{KeyPart, RateLimit};
use crate::platform::store::Op;

/// The largest amount of a charge, in øre (2,000,000 NOK).
const MAX_AMOUNT: i64 = 200_000_000;

/// The Recurring routes.
pub(super) fn routes() -> Router<S> {
    Router::new()
        .route("/recurring/v3/agreements", get(list_agreements).post(draft))
        .route("/recurring/v3/agreements/charges", post(bulk_charges))
        .route(
            "/recurring/v3/agreements/{agreement_id}",
            get(get_agreement).patch(update_agreement),
        )
        .route(
            "/recurring/v3/agreements/{agreement_id}/accept",
            patch(force_accept),
        )
        .route(
            "/recurring/v3/agreements/{agreement_id}/charges",
            get(list_charges).post(create_charge),
        )
        .route(
            "/recurring/v3/agreements/{agreement_id}/charges/{charge_id}",
            get(get_charge).delete(cancel_charge),
        )
        .route(
            "/recurring/v3/agreements/{agreement_id}/charges/{charge_id}/capture",
            post(capture_charge),
        )
        .route(
            "/recurring/v3/agreements/{agreement_id}/charges/{charge_id}/refund",
            post(refund_charge),
        )
        .route("/recurring/v3/charges/{charge_id}", get(get_charge_by_id))
        .layer(axum::middleware::map_response(recurring_problems))
}

/// The documented rate limits (the Recurring API guide's table, "Rate limiting"). A charge's create counts per
/// agreement and charge, and the charge id derives from the idempotency key. The 2025 per-MSN limits of charge
/// creation by charge type (500 and 300 per minute) are not applied: they are far above the per-charge ones.
pub(super) fn rate_limits() -> Vec<RateLimit> {
    use KeyPart::{IdempotencyKey, Merchant, Path};
    use http::Method;
    const AGREEMENT: KeyPart = Path("agreement_id");
    const CHARGE: KeyPart = Path("charge_id");
    let limit = |method: Method, route, per_minute, key| RateLimit {
        method,
        route,
        per_minute,
        key,
    };
    let charge = "/recurring/v3/agreements/{agreement_id}/charges/{charge_id}";
    vec![
        limit(Method::POST, "/recurring/v3/agreements", 300, &[Merchant]),
        limit(Method::GET, "/recurring/v3/agreements", 5, &[Merchant]),
        limit(
            Method::GET,
            "/recurring/v3/agreements/{agreement_id}",
            120,
            &[AGREEMENT],
        ),
        limit(
            Method::PATCH,
            "/recurring/v3/agreements/{agreement_id}",
            5,
            &[AGREEMENT],
        ),
        limit(
            Method::POST,
            "/recurring/v3/agreements/{agreement_id}/charges",
            2,
            &[AGREEMENT, IdempotencyKey],
        ),
        limit(
            Method::GET,
            "/recurring/v3/agreements/{agreement_id}/charges",
            10,
            &[AGREEMENT],
        ),
        limit(Method::GET, charge, 10, &[AGREEMENT, CHARGE]),
        limit(Method::DELETE, charge, 5, &[AGREEMENT, CHARGE]),
        limit(
            Method::POST,
            "/recurring/v3/agreements/{agreement_id}/charges/{charge_id}/capture",
            5,
            &[AGREEMENT, CHARGE],
        ),
        limit(
            Method::POST,
            "/recurring/v3/agreements/{agreement_id}/charges/{charge_id}/refund",
            5,
            &[AGREEMENT, CHARGE],
        ),
        limit(
            Method::GET,
            "/recurring/v3/charges/{charge_id}",
            100,
            &[CHARGE],
        ),
    ]
}

/// The Recurring problem type for a status.
fn problem_type(status: u16) -> &'static str {
    match status {
        400 => {
            "https://developer.vippsmobilepay.com/docs/APIs/recurring-api/recurring-api-problems#validation-error"
        }
        401 | 403 => {
            "https://developer.vippsmobilepay.com/docs/APIs/recurring-api/recurring-api-problems#forbidden"
        }
        404 => {
            "https://developer.vippsmobilepay.com/docs/APIs/recurring-api/recurring-api-problems#not-found"
        }
        409 => {
            "https://developer.vippsmobilepay.com/docs/APIs/recurring-api/recurring-api-problems#conflict"
        }
        423 => {
            "https://developer.vippsmobilepay.com/docs/APIs/recurring-api/recurring-api-problems#locked"
        }
        _ => {
            "https://developer.vippsmobilepay.com/docs/APIs/recurring-api/recurring-api-problems#internal-error"
        }
    }
}

/// Rewrites a problem+json answer in the Recurring format.
pub(super) async fn recurring_problems(resp: Response) -> Response {
    let is_problem = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == h::PROBLEM_JSON.as_bytes());
    if !is_problem {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 1 << 20).await else {
        return Response::from_parts(parts, Body::empty());
    };
    let Ok(p) = serde_json::from_slice::<Problem>(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    let status = p.status.unwrap_or(parts.status.as_u16());
    let details: Vec<RecurringExtraDetail> = p
        .field_details()
        .map(|d| RecurringExtraDetail {
            field: Some(d.name.clone()),
            text: Some(d.reason.clone()),
        })
        .collect();
    let r = RecurringProblem {
        type_: Some(problem_type(status).to_owned()),
        title: p.title,
        status: Some(status),
        detail: p.detail,
        instance: p.instance,
        context_id: p.trace_id,
        extra_details: (!details.is_empty()).then_some(details),
    };
    let body = serde_json::to_vec(&r).unwrap_or_default();
    parts.headers.remove(http::header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

/// The Recurring `Idempotency-Key`: required, 1 to 40 characters, none of `#`, `?`, `/`, `\`.
#[derive(Debug, Clone)]
pub(super) struct RecurringKey(pub(super) String);

impl<St: Send + Sync> FromRequestParts<St> for RecurringKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &St) -> Result<Self, Self::Rejection> {
        let meta = RequestMeta::of(parts);
        let rule = "required: 1 to 40 characters, none of #, ?, / or \\";
        let Some(v) = parts.headers.get(h::IDEMPOTENCY_KEY) else {
            return Err(meta
                .problem(
                    400,
                    "Bad Request",
                    "The Idempotency-Key header is required on this operation",
                )
                .field(h::IDEMPOTENCY_KEY, rule)
                .err());
        };
        let s = v.to_str().unwrap_or("\u{fffd}");
        RecurringIdempotencyKey::new(s)
            .map(|k| RecurringKey(k.as_str().to_owned()))
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

/// A bulk body: up to 2,000 charges are larger than the general body limit, so this one allows 512 bytes per
/// charge (or the configured limit, if larger).
pub(super) struct BulkBody(pub(super) BulkChargesRequest);

impl axum::extract::FromRequest<S> for BulkBody {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, s: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let meta = RequestMeta::of(&parts);
        let limit = s.config.limits.max_body_bytes.max(BULK_MAX * 512);
        let bytes = read_body(&meta, body, limit).await?;
        parse_json(&meta, &bytes).map(BulkBody)
    }
}

/// The ids in the path.
#[derive(Debug, Deserialize)]
pub(super) struct Ids {
    agreement_id: String,
    charge_id: Option<String>,
}

/// A 400 naming the field.
fn bad(meta: &RequestMeta, field: &str, reason: impl Into<String>) -> ApiError {
    let reason = reason.into();
    meta.problem(400, "Bad Request", format!("Invalid `{field}`: {reason}"))
        .field(field, reason)
        .err()
}

/// Who sent an idempotent write, for the scope of its key.
fn sender(auth: &AuthCtx) -> String {
    format!("{}|{}", auth.principal.scope_id(), auth.msn_str())
}

fn idem<'a, T: serde::Serialize>(auth: &AuthCtx, key: &'a str, body: &T) -> Idempotent<'a> {
    Idempotent {
        sender: sender(auth),
        key,
        fingerprint: fingerprint_of(body),
        mismatch_code: ErrorCode::IdempotencyError,
    }
}

const SCOPES: &[&str] = &[
    "name",
    "address",
    "email",
    "phoneNumber",
    "birthDate",
    "nin",
];

/// The platform's rule for merchant URLs ([`merchant_url`]), at most 1024 characters; `deeplink` also allows app
/// schemes.
fn check_url(meta: &RequestMeta, field: &str, u: &str, deeplink: bool) -> Result<(), ApiError> {
    if u.len() > 1024 {
        return Err(bad(meta, field, "at most 1024 characters"));
    }
    merchant_url(u, deeplink)
        .map(drop)
        .map_err(|e| bad(meta, field, e))
}

fn check_len(
    meta: &RequestMeta,
    field: &str,
    v: &str,
    min: usize,
    max: usize,
) -> Result<(), ApiError> {
    char_count(v, min, max).map_err(|e| bad(meta, field, e))
}

fn check_phone(meta: &RequestMeta, field: &str, p: &str) -> Result<(), ApiError> {
    if !(8..=15).contains(&p.len()) || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(
            meta,
            field,
            "must be 8 to 15 digits (MSISDN, such as 4791234567)",
        ));
    }
    Ok(())
}

fn check_order_id(meta: &RequestMeta, field: &str, v: &str) -> Result<(), ApiError> {
    if v.is_empty() || v.len() > 50 || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(bad(
            meta,
            field,
            "must be 1 to 50 letters, digits or dashes",
        ));
    }
    Ok(())
}

fn period(meta: &RequestMeta, field: &str, p: &TimePeriod) -> Result<(String, i32), ApiError> {
    if !p.unit.is_known() {
        return Err(bad(
            meta,
            &format!("{field}.unit"),
            "must be YEAR, MONTH, WEEK or DAY",
        ));
    }
    if !(1..=31).contains(&p.count) {
        return Err(bad(meta, &format!("{field}.count"), "must be 1 to 31"));
    }
    Ok((p.unit.as_str().to_owned(), p.count))
}

fn period_response(p: &TimePeriod) -> TimePeriodResponse {
    TimePeriodResponse {
        unit: Some(p.unit.clone()),
        count: Some(p.count),
        text: None,
    }
}

/// Validates a draft beyond its JSON shape.
fn validate_draft(
    s: &S,
    meta: &RequestMeta,
    auth: &AuthCtx,
    r: &DraftAgreementRequest,
) -> Result<AgreementDraft, ApiError> {
    if r.pricing.currency != "NOK" {
        return Err(bad(meta, "pricing.currency", "must be NOK"));
    }
    let pricing = r.pricing.type_.clone().unwrap_or(PricingType::Legacy);
    let (amount, suggested_max) = match pricing {
        PricingType::Legacy => {
            let a = r
                .pricing
                .amount
                .ok_or_else(|| bad(meta, "pricing.amount", "required with LEGACY pricing"))?;
            if !(100..=MAX_AMOUNT).contains(&a) {
                return Err(bad(meta, "pricing.amount", "must be at least 100 øre"));
            }
            (Some(a), None)
        }
        PricingType::Variable => {
            let m = r.pricing.suggested_max_amount.ok_or_else(|| {
                bad(
                    meta,
                    "pricing.suggestedMaxAmount",
                    "required with VARIABLE pricing",
                )
            })?;
            if !(100..=2_000_000).contains(&m) {
                return Err(bad(
                    meta,
                    "pricing.suggestedMaxAmount",
                    "must be 100 to 2000000",
                ));
            }
            (None, Some(m))
        }
        PricingType::Flexible => (None, None),
        _ => {
            return Err(bad(
                meta,
                "pricing.type",
                "must be LEGACY, VARIABLE or FLEXIBLE",
            ));
        }
    };
    let interval = match (r.interval.period(), &pricing) {
        (Some(p), _) => Some(period(meta, "interval", p)?),
        (None, PricingType::Flexible) => None,
        (None, _) => {
            return Err(bad(
                meta,
                "interval",
                "a period ({\"unit\", \"count\"}) is required unless the pricing is FLEXIBLE",
            ));
        }
    };
    check_len(meta, "productName", &r.product_name, 1, 45)?;
    if let Some(d) = &r.product_description {
        check_len(meta, "productDescription", d, 1, 100)?;
    }
    check_url(
        meta,
        "merchantAgreementUrl",
        &r.merchant_agreement_url,
        r.is_app == Some(true),
    )?;
    check_url(meta, "merchantRedirectUrl", &r.merchant_redirect_url, true)?;
    if let Some(p) = &r.phone_number {
        check_phone(meta, "phoneNumber", p)?;
    }
    if r.skip_landing_page == Some(true) && r.phone_number.is_none() {
        return Err(bad(meta, "phoneNumber", "required with skipLandingPage"));
    }
    let scope = match &r.scope {
        Some(sc) => {
            for w in sc.split_whitespace() {
                if !SCOPES.contains(&w) {
                    return Err(bad(
                        meta,
                        "scope",
                        format!("unknown scope `{w}` (allowed: {})", SCOPES.join(", ")),
                    ));
                }
            }
            sc.split_whitespace().next().map(|_| sc.clone())
        }
        None => None,
    };
    if let Some(e) = &r.external_id {
        check_len(meta, "externalId", e, 1, 64)?;
    }
    if let Some(c) = &r.country_code {
        if c != "NO" {
            return Err(bad(meta, "countryCode", "must be NO"));
        }
    }
    let campaign = match &r.campaign {
        None => None,
        Some(c) => {
            if c.price < 0 {
                return Err(bad(meta, "campaign.price", "must not be negative"));
            }
            let need = |v: bool, f: &str| {
                if v {
                    Ok(())
                } else {
                    Err(bad(
                        meta,
                        f,
                        format!("required with a {} campaign", c.type_),
                    ))
                }
            };
            match c.type_ {
                CampaignType::PriceCampaign => need(c.end.is_some(), "campaign.end")?,
                CampaignType::PeriodCampaign => need(c.period.is_some(), "campaign.period")?,
                CampaignType::EventCampaign => {
                    need(c.event_date.is_some(), "campaign.eventDate")?;
                    need(c.event_text.is_some(), "campaign.eventText")?;
                }
                CampaignType::FullFlexCampaign => {
                    need(c.end.is_some(), "campaign.end")?;
                    need(c.interval.is_some(), "campaign.interval")?;
                }
                _ => {
                    return Err(bad(
                        meta,
                        "campaign.type",
                        "must be PRICE_CAMPAIGN, PERIOD_CAMPAIGN, EVENT_CAMPAIGN or FULL_FLEX_CAMPAIGN",
                    ));
                }
            }
            if let Some(p) = &c.period {
                period(meta, "campaign.period", p)?;
            }
            if let Some(p) = &c.interval {
                period(meta, "campaign.interval", p)?;
            }
            let resp = CampaignResponse {
                type_: c.type_.clone(),
                price: c.price,
                end: c.end.clone(),
                period: c.period.as_ref().map(period_response),
                interval: c.interval.as_ref().map(period_response),
                event_date: c.event_date.clone(),
                event_text: c.event_text.clone(),
                explanation: None,
            };
            serde_json::to_value(resp).ok()
        }
    };
    let initial = match &r.initial_charge {
        None => None,
        Some(i) => {
            if !(100..=MAX_AMOUNT).contains(&i.amount) {
                return Err(bad(
                    meta,
                    "initialCharge.amount",
                    "must be at least 100 øre",
                ));
            }
            if i.currency.as_deref().is_some_and(|c| c != "NOK") {
                return Err(bad(meta, "initialCharge.currency", "must be NOK"));
            }
            check_len(meta, "initialCharge.description", &i.description, 1, 45)?;
            if !i.transaction_type.is_known() {
                return Err(bad(
                    meta,
                    "initialCharge.transactionType",
                    "must be DIRECT_CAPTURE or RESERVE_CAPTURE",
                ));
            }
            if let Some(o) = &i.order_id {
                check_order_id(meta, "initialCharge.orderId", o)?;
            }
            if let Some(e) = &i.external_id {
                check_len(meta, "initialCharge.externalId", e, 1, 64)?;
            }
            Some(InitialDraft {
                amount: i.amount,
                description: i.description.clone(),
                transaction_type: i.transaction_type.as_str().to_owned(),
                order_id: i.order_id.clone(),
                external_id: i.external_id.clone(),
            })
        }
    };
    Ok(AgreementDraft {
        msn: auth.msn_str().to_owned(),
        pricing_type: pricing.as_str().to_owned(),
        amount,
        suggested_max,
        interval,
        campaign,
        product_name: r.product_name.clone(),
        product_description: r.product_description.clone(),
        merchant_agreement_url: r.merchant_agreement_url.clone(),
        merchant_redirect_url: r.merchant_redirect_url.clone(),
        phone_number: r.phone_number.clone(),
        scope,
        external_id: r.external_id.clone(),
        is_app: r.is_app == Some(true),
        initial,
        base_url: s.base_url.clone(),
        test: auth.environment() == MerchantEnvironment::Test,
    })
}

/// Splits a response into its parts and body bytes (answers are small and already in memory).
async fn buffered(resp: Response) -> (http::response::Parts, bytes::Bytes) {
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    (parts, bytes)
}

/// `POST /recurring/v3/agreements`.
async fn draft(
    State(s): State<S>,
    meta: RequestMeta,
    Merchant(auth): Merchant,
    RecurringKey(key): RecurringKey,
    JsonBody(r): JsonBody<DraftAgreementRequest>,
) -> ApiResult {
    let d = validate_draft(&s, &meta, &auth, &r)?;
    let msn = d.msn.clone();
    let initial = d.initial.clone();
    let test = d.test;
    let id = commands::new_agreement_id(s.clock.unix_ms(), s.ids.sequence());
    let resp = run_idempotent(
        &s,
        &meta,
        idem(&auth, &key, &r),
        Op::Execute(commands::draft_agreement(d, id)),
    )
    .await?;
    if resp.status() != http::StatusCode::CREATED {
        return Ok(resp);
    }
    let (parts, bytes) = buffered(resp).await;
    let drafted: Drafted = serde_json::from_slice(&bytes).map_err(|e| internal(&meta, &e))?;
    draft_follow_ups(&s, &meta, &msn, &drafted, initial, test, &key).await?;
    Ok(Response::from_parts(parts, Body::from(bytes)))
}

/// What follows a draft, repeated by every replay (it is idempotent): the initial charge.
pub(super) async fn draft_follow_ups(
    s: &S,
    meta: &RequestMeta,
    msn: &str,
    drafted: &Drafted,
    initial: Option<InitialDraft>,
    test: bool,
    key: &str,
) -> Result<(), ApiError> {
    if let (
        Some(charge_id),
        Some(InitialDraft {
            amount,
            description: desc,
            transaction_type: tt,
            external_id: ext,
            ..
        }),
    ) = (&drafted.charge_id, initial)
    {
        let a = load_agreement(s, meta, msn, &drafted.agreement_id).await?;
        let cd = ChargeDraft {
            msn: msn.to_owned(),
            agreement_id: a.id.clone(),
            agreement_external_id: a.external_id.clone(),
            amount,
            description: desc,
            due_date_ms: day_start(a.created_ms),
            retry_days: 0,
            charge_type: "INITIAL".into(),
            transaction_type: tt,
            external_id: ext,
            fails_with: fails_with(test, amount, None),
            awaiting_until_ms: Some(a.expires_ms),
            key: Some(key.to_owned()),
        };
        run_write(
            s,
            meta,
            Op::Execute(commands::create_charge(cd, charge_id.clone())),
        )
        .await?;
    }
    Ok(())
}

/// The failure every attempt of a charge meets: a magic amount on a test merchant, or above the user's maximum.
pub(super) fn fails_with(test: bool, amount: i64, max: Option<i64>) -> Option<(String, String)> {
    if let Some(m) = max.filter(|m| amount > *m) {
        return Some((
            "charge_amount_too_high".into(),
            format!("The amount {amount} is above the user's maximum of {m}"),
        ));
    }
    test.then(|| magic_failure(amount))
        .flatten()
        .map(|(r, t)| (r.to_owned(), t.to_owned()))
}

fn agreement_not_found(meta: &RequestMeta, id: &str) -> ApiError {
    meta.problem(
        404,
        "Not Found",
        format!("No agreement with id `{id}` exists for this merchant serial number"),
    )
    .field("agreementId", "not found")
    .err()
}

fn charge_not_found(meta: &RequestMeta, id: &str) -> ApiError {
    meta.problem(
        404,
        "Not Found",
        format!("No charge with id `{id}` exists for this merchant serial number"),
    )
    .field("chargeId", "not found")
    .err()
}

/// Reads an agreement, first persisting any change time has made (expiry).
pub(super) async fn load_agreement(
    s: &S,
    meta: &RequestMeta,
    msn: &str,
    id: &str,
) -> Result<std::sync::Arc<Agreement>, ApiError> {
    let key = commands::agreement_key(msn, id);
    let a = read_settled::<Agreement>(s, meta, &key, || {
        commands::modify_agreement(msn, id, AgreementOp::Settle)
    })
    .await?;
    a.ok_or_else(|| agreement_not_found(meta, id))
}

/// Reads a charge (of `agreement` when given), first persisting any change time has made.
pub(super) async fn load_charge(
    s: &S,
    meta: &RequestMeta,
    msn: &str,
    agreement: Option<&str>,
    id: &str,
) -> Result<std::sync::Arc<Charge>, ApiError> {
    let key = commands::charge_key(msn, id);
    let c = read_settled::<Charge>(s, meta, &key, || {
        commands::modify_charge(msn, None, id, ChargeOp::Settle)
    })
    .await?;
    c.filter(|c| agreement.is_none_or(|a| a == c.agreement_id))
        .ok_or_else(|| charge_not_found(meta, id))
}

/// `GET /recurring/v3/agreements/{agreementId}`.
async fn get_agreement(
    State(s): State<S>,
    meta: RequestMeta,
    Merchant(auth): Merchant,
    Path(agreement_id): Path<String>,
) -> ApiResult {
    let a = load_agreement(&s, &meta, auth.msn_str(), &agreement_id).await?;
    Ok(axum::Json(render::agreement(&a)).into_response())
}

/// Query of the agreement list.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AgreementQuery {
    status: Option<String>,
    created_after: Option<i64>,
    page_number: Option<usize>,
    page_size: Option<usize>,
}

/// `GET /recurring/v3/agreements?status&createdAfter&pageNumber&pageSize`: `ACTIVE` ones by default, oldest first,
/// page 1 of 500 by default (as the vendor enforces since February 2025).
async fn list_agreements(
    State(s): State<S>,
    meta: RequestMeta,
    Merchant(auth): Merchant,
    Query(q): Query<AgreementQuery>,
) -> ApiResult {
    let status = q.status.unwrap_or_else(|| "ACTIVE".into());
    if !["PENDING", "ACTIVE", "STOPPED", "EXPIRED"].contains(&status.as_str()) {
        return Err(bad(
            &meta,
            "status",
            "must be PENDING, ACTIVE, STOPPED or EXPIRED",
        ));
    }
    let page_number = q.page_number.unwrap_or(1);
    let page_size = q.page_size.unwrap_or(500);
    if page_number < 1 {
        return Err(bad(&meta, "pageNumber", "must be at least 1"));
    }
    if !(1..=1000).contains(&page_size) {
        return Err(bad(&meta, "pageSize", "must be 1 to 1000"));
    }
    let msn = auth.msn_str();
    let ids = list::agreements(&s, msn)
        .await
        .map_err(|e| internal(&meta, &e))?;
    let mut out = Vec::new();
    for id in ids {
        let a = load_agreement(&s, &meta, msn, &id).await?;
        if a.status.as_str() == status && q.created_after.is_none_or(|t| a.created_ms > t) {
            out.push(render::agreement(&a));
        }
    }
    let page: Vec<_> = out
        .into_iter()
        .skip((page_number - 1) * page_size)
        .take(page_size)
        .collect();
    Ok(axum::Json(page).into_response())
}

/// After a change of an agreement's status: the initial charge is made (accepted, or failed), or what has not
/// been charged is cancelled (rejected, stopped, expired).
pub(super) async fn agreement_follow_up(
    s: &S,
    meta: &RequestMeta,
    msn: &str,
    id: &str,
) -> Result<(), ApiError> {
    let a = load_agreement(s, meta, msn, id).await?;
    match a.status {
        AStatus::Pending => {}
        AStatus::Active => {
            if let Some(i) = &a.initial {
                run_write(
                    s,
                    meta,
                    Op::Execute(commands::modify_charge(
                        msn,
                        Some(id),
                        &i.id,
                        ChargeOp::AgreementAccepted,
                    )),
                )
                .await?;
            }
        }
        AStatus::Expired if a.start_ms.is_none() && a.initial_fails() => {
            if let Some(i) = &a.initial {
                run_write(
                    s,
                    meta,
                    Op::Execute(commands::modify_charge(
                        msn,
                        Some(id),
                        &i.id,
                        ChargeOp::AgreementAccepted,
                    )),
                )
                .await?;
            }
        }
        AStatus::Stopped | AStatus::Expired => {
            let ids = list::charges(s, msn, id)
                .await
                .map_err(|e| internal(meta, &e))?;
            for cid in ids {
                run_write(
                    s,
                    meta,
                    Op::Execute(commands::modify_charge(
                        msn,
                        Some(id),
                        &cid,
                        ChargeOp::AgreementEnded,
                    )),
                )
                .await?;
            }
        }
    }
    Ok(())
}

/// `PATCH /recurring/v3/agreements/{agreementId}`.
async fn update_agreement(
    State(s): State<S>,
    meta: RequestMeta,
    Merchant(auth): Merchant,
    Path(agreement_id): Path<String>,
    RecurringKey(key): RecurringKey,
    JsonBody(r): JsonBody<PatchAgreementRequest>,
) -> ApiResult {
    if let Some(n) = &r.product_name {
        check_len(&meta, "productName", n, 1, 45)?;
    }
    if let Some(d) = &r.product_description {
        check_len(&meta, "productDescription", d, 1, 100)?;
    }
    if let Some(u) = &r.merchant_agreement_url {
        check_url(&meta, "merchantAgreementUrl", u, false)?;
    }
    if let Some(e) = &r.external_id {
        check_len(&meta, "externalId", e, 1, 64)?;
    }
    let stop = match &r.status {
        None => false,
        Some(st) if st.as_str() == "STOPPED" => true,
        Some(_) => return Err(bad(&meta, "status", "only STOPPED can be set")),
    };
    let pricing = r.pricing.clone().unwrap_or_default();
    if let Some(a) = pricing.amount {
        if a < 100 {
            return Err(bad(&meta, "pricing.amount", "must be at least 100 øre"));
        }
    }
    if let Some(m) = pricing.suggested_max_amount {
        if !(100..=2_000_000).contains(&m) {
            return Err(bad(
                &meta,
                "pricing.suggestedMaxAmount",
                "must be 100 to 2000000",
            ));
        }
    }
    let interval = match &r.interval {
        None => None,
        Some(i) => match &i.period {
            Some(p) => Some(period(&meta, "interval.period", p)?),
            None => return Err(bad(&meta, "interval.period", "required")),
        },
    };
    let data = PatchData {
        product_name: r.product_name.clone(),
        product_description: r.product_description.clone(),
        merchant_agreement_url: r.merchant_agreement_url.clone(),
        external_id: r.external_id.clone(),
        amount: pricing.amount,
        suggested_max: pricing.suggested_max_amount,
        interval,
        stop,
    };
    let msn = auth.msn_str().to_owned();
    let resp = run_idempotent(
        &s,
        &meta,
        idem(&auth, &key, &r),
        Op::Execute(commands::modify_agreement(
            &msn,
            &agreement_id,
            AgreementOp::Patch(Box::new(data)),
        )),
    )
    .await?;
    if stop && resp.status().is_success() {
        agreement_follow_up(&s, &meta, &msn, &agreement_id).await?;
    }
    Ok(resp)
}

/// `PATCH /recurring/v3/agreements/{agreementId}/accept` (test merchants only).
async fn force_accept(
    State(s): State<S>,
    meta: RequestMeta,
    Merchant(auth): Merchant,
    Path(agreement_id): Path<String>,
    RecurringKey(key): RecurringKey,
    JsonBody(r): JsonBody<ForceAcceptRequest>,
) -> ApiResult {
    if auth.environment() == MerchantEnvironment::Production {
        return Err(meta
            .problem(
                403,
                "Forbidden",
                "Force accept is only available in the test environment",
            )
            .err());
    }
    check_phone(&meta, "phoneNumber", &r.phone_number)?;
    let msn = auth.msn_str().to_owned();
    let resp = run_idempotent(
        &s,
        &meta,
        idem(&auth, &key, &r),
        Op::Execute(commands::modify_agreement(
            &msn,
            &agreement_id,
            AgreementOp::ForceAccept {
                phone: r.phone_number.clone(),
            },
        )),
    )
    .await?;
    if resp.status().is_success() {
        agreement_follow_up(&s, &meta, &msn, &agreement_id).await?;
    }
    Ok(resp)
}

/// A charge request validated against its agreement as read just before.
fn validate_charge(
    s: &S,
    meta: &RequestMeta,
    a: &Agreement,
    r: &CreateChargeRequest,
    field_prefix: &str,
    key: &str,
) -> Result<ChargeDraft, ApiError> {
    let f = |n: &str| format!("{field_prefix}{n}");
    if a.status != AStatus::Active {
        return Err(meta
            .problem(
                400,
                "Bad Request",
                format!(
                    "Cannot create a charge for an agreement which is not active (it is {})",
                    a.status.as_str()
                ),
            )
            .field("agreement.status", a.status.as_str())
            .err());
    }
    if !(100..=MAX_AMOUNT).contains(&r.amount) {
        return Err(bad(meta, &f("amount"), "must be at least 100 øre"));
    }
    if a.pricing_type == "LEGACY" && a.amount.is_some_and(|max| r.amount > max) {
        return Err(bad(
            meta,
            &f("amount"),
            format!(
                "must not be more than the agreement's price ({})",
                a.amount.unwrap_or_default()
            ),
        ));
    }
    check_len(meta, &f("description"), &r.description, 1, 45)?;
    if !r.transaction_type.is_known() {
        return Err(bad(
            meta,
            &f("transactionType"),
            "must be DIRECT_CAPTURE or RESERVE_CAPTURE",
        ));
    }
    let charge_type = r.type_.clone().unwrap_or(ChargeType::Recurring);
    let now = s.clock.unix_ms();
    let (due_date_ms, retry_days) = match charge_type {
        ChargeType::Recurring => {
            let due = r
                .due
                .as_deref()
                .ok_or_else(|| bad(meta, &f("due"), "required (YYYY-MM-DD)"))?;
            let fmt = time::macros::format_description!("[year]-[month]-[day]");
            let d = time::Date::parse(due, &fmt)
                .map_err(|_| bad(meta, &f("due"), "must be a date YYYY-MM-DD"))?;
            let ms = d.midnight().assume_utc().unix_timestamp() * 1000;
            if ms < day_start(now) + DAY_MS {
                return Err(bad(
                    meta,
                    &f("due"),
                    "must be at least one day in the future",
                ));
            }
            if ms > day_start(now) + 2 * 366 * DAY_MS {
                return Err(bad(
                    meta,
                    &f("due"),
                    "must be at most two years in the future",
                ));
            }
            let rd = r
                .retry_days
                .ok_or_else(|| bad(meta, &f("retryDays"), "required (0 to 14)"))?;
            (ms, rd)
        }
        ChargeType::Unscheduled => (day_start(now), r.retry_days.unwrap_or(0)),
        _ => {
            return Err(bad(meta, &f("type"), "must be RECURRING or UNSCHEDULED"));
        }
    };
    if !(0..=14).contains(&retry_days) {
        return Err(bad(meta, &f("retryDays"), "must be 0 to 14"));
    }
    if let Some(o) = &r.order_id {
        check_order_id(meta, &f("orderId"), o)?;
    }
    if let Some(e) = &r.external_id {
        check_len(meta, &f("externalId"), e, 1, 64)?;
    }
    Ok(ChargeDraft {
        msn: a.msn.clone(),
        agreement_id: a.id.clone(),
        agreement_external_id: a.external_id.clone(),
        amount: r.amount,
        description: r.description.clone(),
        due_date_ms,
        retry_days,
        charge_type: charge_type.as_str().to_owned(),
        transaction_type: r.transaction_type.as_str().to_owned(),
        external_id: r.external_id.clone(),
        fails_with: fails_with(
            a.test,
            r.amount,
            (a.pricing_type == "VARIABLE")
                .then_some(a.max_amount)
                .flatten(),
        ),
        awaiting_until_ms: None,
        key: Some(key.to_owned()),
    })
}

/// Creates one charge idempotently (one write: the store lists it by its agreement); the answer as the client gets it.
async fn create_one(
    s: &S,
    meta: &RequestMeta,
    auth: &AuthCtx,
    agreement_id: &str,
    key: &str,
    r: &CreateChargeRequest,
    field_prefix: &str,
) -> ApiResult {
    let msn = auth.msn_str();
    let a = load_agreement(s, meta, msn, agreement_id).await?;
    let d = validate_charge(s, meta, &a, r, field_prefix, key)?;
    let id = match &r.order_id {
        Some(o) => o.clone(),
        None => commands::new_charge_id(s.clock.unix_ms(), s.ids.sequence()),
    };
    let resp = run_idempotent(
        s,
        meta,
        idem(auth, key, r),
        Op::Execute(commands::create_charge(d, id)),
    )
    .await?;
    Ok(resp)
}

/// `POST /recurring/v3/agreements/{agreementId}/charges`.
async fn create_charge(
    State(s): State<S>,
    meta: RequestMeta,
    Merchant(auth): Merchant,
    Path(agreement_id): Path<String>,
    RecurringKey(key): RecurringKey,
    JsonBody(r): JsonBody<CreateChargeRequest>,
) -> ApiResult {
    create_one(&s, &meta, &auth, &agreement_id, &key, &r, "").await
}

/// `POST /recurring/v3/agreements/charges`: up to 2,000 charges (a JSON array), each created as a charge of its
/// own with the key `<key>-<index>` (so a replay of the whole request replays each one); answers 202 with the ids
/// of the charges created and, for each one refused, the item and why (the SDK types' `AsyncChargeResponse`).
async fn bulk_charges(
    State(s): State<S>,
    meta: RequestMeta,
    Merchant(auth): Merchant,
    RecurringKey(key): RecurringKey,
    BulkBody(r): BulkBody,
) -> ApiResult {
    if r.charges.is_empty() || r.charges.len() > BULK_MAX {
        return Err(bad(
            &meta,
            "charges",
            format!("must hold 1 to {BULK_MAX} charges"),
        ));
    }
    let results = futures::future::join_all(r.charges.iter().enumerate().map(|(i, item)| {
        let s = &s;
        let auth = &auth;
        let mut m = meta.clone();
        m.path = format!("{}/{i}", meta.path).into();
        let k = format!("{key}-{i}");
        async move {
            let one = create_one(s, &m, auth, &item.agreement_id, &k, &item.charge(), "")
                .await
                .unwrap_or_else(|e| e.into_response());
            let ok = one.status() == http::StatusCode::CREATED;
            let (_, bytes) = buffered(one).await;
            if ok {
                serde_json::from_slice::<vipps_types::recurring::ChargeReference>(&bytes)
                    .map(|c| c.charge_id)
                    .map_err(|e| e.to_string())
            } else {
                let p: Option<Problem> = serde_json::from_slice(&bytes).ok();
                let mut errors: Vec<String> = p
                    .iter()
                    .flat_map(|p| p.field_details())
                    .map(|d| format!("{}: {}", d.name, d.reason))
                    .collect();
                if errors.is_empty() {
                    errors.push(
                        p.and_then(|p| p.detail)
                            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned()),
                    );
                }
                Err(errors.join("; "))
            }
        }
    }))
    .await;
    let mut out = BulkChargesResponse::default();
    for (i, (item, r)) in r.charges.into_iter().zip(results).enumerate() {
        match r {
            Ok(id) => out.valid_charges.push(id),
            Err(e) => {
                creation_failed(&s, &meta, &auth, &format!("{key}-{i}"), &item, &e).await?;
                out.invalid_charges.push(InvalidCharge {
                    charge_batch_item_dto: item,
                    errors: vec![e],
                });
            }
        }
    }
    Ok((http::StatusCode::ACCEPTED, axum::Json(out)).into_response())
}

/// Reports a refused bulk item by webhook (`recurring.charge-creation-failed.v1`), as the vendor does for
/// charges of an asynchronous creation, once: the write has a key of its own derived from the item's, so a replay
/// of the bulk request (or a retry after a crash between the refusal and the report) reports nothing twice.
async fn creation_failed(
    s: &S,
    meta: &RequestMeta,
    auth: &AuthCtx,
    item_key: &str,
    item: &vipps_types::recurring::BulkChargeItem,
    why: &str,
) -> Result<(), ApiError> {
    let key = format!("{item_key}-creation-failed");
    let f = commands::CreationFailure {
        order_id: item.order_id.clone(),
        external_id: item.external_id.clone(),
        amount: item.amount,
        charge_type: item
            .type_
            .as_ref()
            .map_or("RECURRING", |t| t.as_str())
            .to_owned(),
        description: why.to_owned(),
    };
    // 404 (an agreement this merchant does not have) reports nothing: there is no agreement to report on.
    run_idempotent(
        s,
        meta,
        idem(auth, &key, item),
        Op::Execute(commands::charge_creation_failed(
            auth.msn_str(),
            &item.agreement_id,
            f,
        )),
    )
    .await?;
    Ok(())
}

/// Query of the charge list.
#[derive(Debug, Deserialize)]
struct ChargeQuery {
    status: Option<String>,
}

/// `GET /recurring/v3/agreements/{agreementId}/charges?status`.
async fn list_charges(
    State(s): State<S>,
    meta: RequestMeta,
    Merchant(auth): Merchant,
    Path(agreement_id): Path<String>,
    Query(q): Query<ChargeQuery>,
) -> ApiResult {
    let msn = auth.msn_str();
    load_agreement(&s, &meta, msn, &agreement_id).await?;
    let ids = list::charges(&s, msn, &agreement_id)
        .await
        .map_err(|e| internal(&meta, &e))?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let c = load_charge(&s, &meta, msn, Some(&agreement_id), &id).await?;
        if q.status.as_deref().is_none_or(|st| st == c.status.as_str()) {
            out.push(render::charge(&c));
        }
    }
    Ok(axum::Json(out).into_response())
}

/// `GET /recurring/v3/agreements/{agreementId}/charges/{chargeId}`.
async fn get_charge(
    State(s): State<S>,
    meta: RequestMeta,
    Merchant(auth): Merchant,
    Path(ids): Path<Ids>,
) -> ApiResult {
    let cid = ids.charge_id.unwrap_or_default();
    let c = load_charge(&s, &meta, auth.msn_str(), Some(&ids.agreement_id), &cid).await?;
    Ok(axum::Json(render::charge(&c)).into_response())
}

/// `GET /recurring/v3/charges/{chargeId}`.
async fn get_charge_by_id(
    State(s): State<S>,
    meta: RequestMeta,
    Merchant(auth): Merchant,
    Path(charge_id): Path<String>,
) -> ApiResult {
    let c = load_charge(&s, &meta, auth.msn_str(), None, &charge_id).await?;
    Ok(axum::Json(render::charge(&c)).into_response())
}

/// `DELETE /recurring/v3/agreements/{agreementId}/charges/{chargeId}`.
async fn cancel_charge(
    State(s): State<S>,
    meta: RequestMeta,
    Merchant(auth): Merchant,
    Path(ids): Path<Ids>,
    RecurringKey(key): RecurringKey,
) -> ApiResult {
    let cid = ids.charge_id.unwrap_or_default();
    let cmd = commands::modify_charge(
        auth.msn_str(),
        Some(&ids.agreement_id),
        &cid,
        ChargeOp::Cancel { key: key.clone() },
    );
    run_idempotent(&s, &meta, idem(&auth, &key, &()), Op::Execute(cmd)).await
}

/// `POST .../capture`.
async fn capture_charge(
    State(s): State<S>,
    meta: RequestMeta,
    Merchant(auth): Merchant,
    Path(ids): Path<Ids>,
    RecurringKey(key): RecurringKey,
    JsonBody(r): JsonBody<CaptureChargeRequest>,
) -> ApiResult {
    let op = ChargeOp::Capture {
        amount: r.amount,
        key: key.clone(),
    };
    move_money(
        &s,
        &meta,
        &auth,
        ids,
        &key,
        &r,
        (r.amount, &r.description),
        op,
    )
    .await
}

/// `POST .../refund`.
async fn refund_charge(
    State(s): State<S>,
    meta: RequestMeta,
    Merchant(auth): Merchant,
    Path(ids): Path<Ids>,
    RecurringKey(key): RecurringKey,
    JsonBody(r): JsonBody<RefundChargeRequest>,
) -> ApiResult {
    let op = ChargeOp::Refund {
        amount: r.amount,
        key: key.clone(),
    };
    move_money(
        &s,
        &meta,
        &auth,
        ids,
        &key,
        &r,
        (r.amount, &r.description),
        op,
    )
    .await
}

/// Capture and refund: the same body rules (`amount` positive, `description` 1 to 100 characters), then the
/// operation on the charge, idempotently.
#[allow(clippy::too_many_arguments)]
async fn move_money<T: serde::Serialize>(
    s: &S,
    meta: &RequestMeta,
    auth: &AuthCtx,
    ids: Ids,
    key: &str,
    body: &T,
    (amount, description): (i64, &str),
    op: ChargeOp,
) -> ApiResult {
    if amount < 1 {
        return Err(bad(meta, "amount", "must be positive"));
    }
    check_len(meta, "description", description, 1, 100)?;
    let cid = ids.charge_id.unwrap_or_default();
    let cmd = commands::modify_charge(auth.msn_str(), Some(&ids.agreement_id), &cid, op);
    run_idempotent(s, meta, idem(auth, key, body), Op::Execute(cmd)).await
}
