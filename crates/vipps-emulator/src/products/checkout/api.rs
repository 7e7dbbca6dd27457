//! Checkout API v3 handlers: authenticate with the API keys (no access token), validate, then hand commands to
//! the platform.
//!
//! Errors are answered in the Checkout problem format (`errorCode`, `errors` of field → messages): the handlers
//! build the platform's problems and [`checkout_problems`] rewrites every problem+json answer of these routes,
//! including the platform's own (authentication, idempotency 409/423, body shape).
//!
//! **Create.** The session is written first (idempotently when an `Idempotency-Key` is sent; a duplicate
//! reference is 409), then, for a payment session, its ePayment payment, a follow-up that every replay repeats
//! (a payment that is already there is the replay's own). A reference that an ePayment payment already has is
//! refused before anything is written.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use vipps_types::checkout::{
    Brand, CheckoutConfig, CheckoutProblem, CustomerInteraction, Elements, InitiateSessionRequest,
    LogisticsOption, SessionType, UserFlow,
};
use vipps_types::headers as h;
use vipps_types::money::Currency;
use vipps_types::problem::{ErrorCode, Problem};

use super::commands::{self, Draft};
use super::domain::{CallbackState, Kind, SState, Secret, Session};
use super::flow;
use crate::config::MerchantEnvironment;
use crate::platform::Shared as S;
use crate::platform::auth::AuthCtx;
use crate::platform::extract::{ClientKeys, JsonBody, OptionalIdemKey};
use crate::platform::http::{ApiError, ApiResult, RequestMeta, char_count, merchant_url};
use crate::platform::idempotency::{Idempotent, fingerprint_of, run_idempotent, run_write};
use crate::platform::store::Op;
use crate::products::epayment::facade as epayment;

/// How long a session lives (ms).
pub(super) const LIFETIME_MS: i64 = vipps_types::checkout::SESSION_LIFETIME_MINUTES * 60_000;

/// The Checkout routes.
pub(super) fn routes() -> Router<S> {
    Router::new()
        .route("/checkout/v3/session", post(create))
        .route("/checkout/v3/session/{reference}", get(get_session))
        .layer(axum::middleware::map_response(checkout_problems))
}

/// The Checkout `errorCode` of a status: the spec's own words for its responses ("BadRequest: Validation
/// errors", "Unauthorized: Invalid credentials"...).
fn error_code(status: u16) -> &'static str {
    match status {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        409 => "Conflict",
        413 => "PayloadTooLarge",
        423 => "Locked",
        429 => "TooManyRequests",
        502 => "BadGateway",
        _ => "InternalServerError",
    }
}

/// Rewrites a problem+json answer in the Checkout format.
async fn checkout_problems(resp: Response) -> Response {
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
    let mut errors = std::collections::BTreeMap::<String, Vec<String>>::new();
    for d in p.field_details() {
        errors
            .entry(d.name.clone())
            .or_default()
            .push(d.reason.clone());
    }
    let mut extra = std::collections::BTreeMap::new();
    if let Some(t) = &p.trace_id {
        extra.insert("traceId".to_owned(), serde_json::Value::from(t.clone()));
    }
    let c = CheckoutProblem {
        type_: Some(format!(
            "https://developer.vippsmobilepay.com/docs/APIs/checkout-api/#{}",
            error_code(status).to_ascii_lowercase()
        )),
        title: p.title,
        status: Some(status),
        detail: p.detail,
        instance: p.instance,
        error_code: error_code(status).to_owned(),
        errors,
        extra,
    };
    parts.headers.remove(http::header::CONTENT_LENGTH);
    Response::from_parts(
        parts,
        Body::from(serde_json::to_vec(&c).unwrap_or_default()),
    )
}

fn bad(meta: &RequestMeta, field: &str, reason: impl Into<String>) -> ApiError {
    let reason = reason.into();
    meta.problem(400, "Bad Request", format!("Invalid `{field}`: {reason}"))
        .field(field, reason)
        .err()
}

/// The platform's rule for merchant URLs ([`merchant_url`]); `app_scheme` for a `returnUrl`, which may return to an
/// app (`NATIVE_REDIRECT`).
fn check_url(meta: &RequestMeta, field: &str, u: &str, app_scheme: bool) -> Result<(), ApiError> {
    merchant_url(u, app_scheme)
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

/// The spec's reference rule: 8 to 50 of `-a-zA-Z0-9`.
fn check_reference(meta: &RequestMeta, field: &str, r: &str) -> Result<(), ApiError> {
    if !(8..=50).contains(&r.len()) || !r.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(bad(
            meta,
            field,
            "must be 8 to 50 letters, digits or dashes",
        ));
    }
    Ok(())
}

fn check_country(meta: &RequestMeta, field: &str, c: &str) -> Result<(), ApiError> {
    if c.len() != 2 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(bad(
            meta,
            field,
            "must be an ISO 3166-1 alpha-2 code such as NO",
        ));
    }
    Ok(())
}

fn check_options(
    meta: &RequestMeta,
    options: &[LogisticsOption],
    currency: &str,
) -> Result<(), ApiError> {
    for (i, o) in options.iter().enumerate() {
        let f = |name: &str| format!("logistics.fixedOptions[{i}].{name}");
        check_len(meta, &f("id"), &o.id, 1, 200)?;
        if o.priority < 0 {
            return Err(bad(meta, &f("priority"), "must be 0 or more"));
        }
        if !o.brand.is_known() {
            return Err(bad(
                meta,
                &f("brand"),
                "must be POSTEN, POSTNORD, PORTERBUDDY, HELTHJEM, POSTI, GLS, DAO or OTHER",
            ));
        }
        match &o.amount {
            None if o.brand != Brand::Porterbuddy => {
                return Err(bad(meta, &f("amount"), "required for this brand"));
            }
            Some(a) if a.value < 0 => {
                return Err(bad(meta, &f("amount.value"), "must be 0 or more"));
            }
            Some(a) if a.currency != currency => {
                return Err(bad(
                    meta,
                    &f("amount.currency"),
                    format!("must be {currency}, the transaction's currency"),
                ));
            }
            _ => {}
        }
        if o.brand == Brand::Other {
            match &o.title {
                Some(t) => check_len(meta, &f("title"), t, 1, 200)?,
                None => return Err(bad(meta, &f("title"), "required for brand OTHER")),
            }
        }
    }
    Ok(())
}

fn check_config(meta: &RequestMeta, c: &CheckoutConfig) -> Result<(), ApiError> {
    if let Some(ci) = &c.customer_interaction {
        if !matches!(
            ci,
            CustomerInteraction::CustomerPresent | CustomerInteraction::CustomerNotPresent
        ) {
            return Err(bad(
                meta,
                "configuration.customerInteraction",
                "must be CUSTOMER_PRESENT or CUSTOMER_NOT_PRESENT",
            ));
        }
    }
    if let Some(e) = &c.elements {
        if !matches!(
            e,
            Elements::Full | Elements::PaymentAndContactInfo | Elements::PaymentOnly
        ) {
            return Err(bad(
                meta,
                "configuration.elements",
                "must be Full, PaymentAndContactInfo or PaymentOnly",
            ));
        }
    }
    if let Some(u) = &c.user_flow {
        if !matches!(u, UserFlow::WebRedirect | UserFlow::NativeRedirect) {
            return Err(bad(
                meta,
                "configuration.userFlow",
                "must be WEB_REDIRECT or NATIVE_REDIRECT",
            ));
        }
    }
    if let Some(cs) = &c.countries {
        if cs.supported.is_empty() {
            return Err(bad(
                meta,
                "configuration.countries.supported",
                "must name at least one country",
            ));
        }
        for (i, code) in cs.supported.iter().enumerate() {
            check_country(
                meta,
                &format!("configuration.countries.supported[{i}]"),
                code,
            )?;
        }
    }
    if let Some(cc) = &c.custom_consent {
        check_len(meta, "configuration.customConsent.text", &cc.text, 1, 1000)?;
    }
    Ok(())
}

/// Validates a create request beyond its JSON shape.
fn validate(
    meta: &RequestMeta,
    auth: &AuthCtx,
    r: &InitiateSessionRequest,
) -> Result<Session, ApiError> {
    let kind = match r.session_type() {
        SessionType::Payment => Kind::Payment,
        SessionType::Subscription => Kind::Subscription,
        _ => return Err(bad(meta, "type", "must be PAYMENT or SUBSCRIPTION")),
    };
    let mi = &r.merchant_info;
    check_url(meta, "merchantInfo.callbackUrl", &mi.callback_url, false)?;
    check_url(meta, "merchantInfo.returnUrl", &mi.return_url, true)?;
    check_len(
        meta,
        "merchantInfo.callbackAuthorizationToken",
        &mi.callback_authorization_token,
        1,
        4096,
    )?;
    if let Some(t) = &mi.terms_and_conditions_url {
        check_url(meta, "merchantInfo.termsAndConditionsUrl", t, false)?;
    }
    let reference = match (kind, &r.transaction, &r.reference) {
        (Kind::Payment, None, _) => {
            return Err(bad(meta, "transaction", "required for a PAYMENT session"));
        }
        (Kind::Payment, Some(_), Some(_)) => {
            return Err(bad(
                meta,
                "reference",
                "only SUBSCRIPTION sessions without a transaction take a top-level reference",
            ));
        }
        (_, Some(t), _) => {
            check_reference(meta, "transaction.reference", &t.reference)?;
            t.reference.clone()
        }
        (Kind::Subscription, None, Some(rf)) => {
            check_reference(meta, "reference", rf)?;
            rf.clone()
        }
        (Kind::Subscription, None, None) => {
            return Err(bad(
                meta,
                "reference",
                "required for a SUBSCRIPTION session without a transaction",
            ));
        }
    };
    let mut currency = "NOK".to_owned();
    if let Some(t) = &r.transaction {
        let c: Currency = t.amount.currency.parse().map_err(|_| {
            bad(
                meta,
                "transaction.amount.currency",
                "must be NOK, DKK or EUR",
            )
        })?;
        let amount = vipps_types::money::Amount {
            currency: c,
            value: t.amount.value,
        };
        amount
            .validate()
            .map_err(|e| bad(meta, "transaction.amount.value", e.to_string()))?;
        amount
            .check_payment_minimum()
            .map_err(|e| bad(meta, "transaction.amount.value", e.to_string()))?;
        check_len(
            meta,
            "transaction.paymentDescription",
            &t.payment_description,
            3,
            100,
        )?;
        currency = c.code().to_owned();
        if kind == Kind::Subscription && c != Currency::Nok {
            return Err(bad(
                meta,
                "transaction.amount.currency",
                "must be NOK for a SUBSCRIPTION session (Recurring charges are in NOK)",
            ));
        }
    }
    match (kind, &r.subscription) {
        (Kind::Payment, Some(_)) => {
            return Err(bad(
                meta,
                "subscription",
                "only SUBSCRIPTION sessions take a subscription",
            ));
        }
        (Kind::Subscription, None) => {
            return Err(bad(
                meta,
                "subscription",
                "required for a SUBSCRIPTION session",
            ));
        }
        (Kind::Subscription, Some(sub)) => {
            check_len(meta, "subscription.productName", &sub.product_name, 1, 45)?;
            if sub.amount.currency != "NOK" {
                return Err(bad(meta, "subscription.amount.currency", "must be NOK"));
            }
            if !(1..=200_000_000).contains(&sub.amount.value) {
                return Err(bad(
                    meta,
                    "subscription.amount.value",
                    "must be 1 to 200000000 øre",
                ));
            }
            if !matches!(
                sub.interval.unit.as_str(),
                "YEAR" | "MONTH" | "WEEK" | "DAY"
            ) {
                return Err(bad(
                    meta,
                    "subscription.interval.unit",
                    "must be YEAR, MONTH, WEEK or DAY",
                ));
            }
            if !(1..=31).contains(&sub.interval.count) {
                return Err(bad(meta, "subscription.interval.count", "must be 1 to 31"));
            }
            check_url(
                meta,
                "subscription.merchantAgreementUrl",
                &sub.merchant_agreement_url,
                false,
            )?;
            if let Some(d) = &sub.product_description {
                check_len(meta, "subscription.productDescription", d, 1, 100)?;
            }
        }
        (Kind::Payment, None) => {}
    }
    if let Some(l) = &r.logistics {
        if let Some(u) = &l.dynamic_options_callback {
            check_url(meta, "logistics.dynamicOptionsCallback", u, false)?;
        }
        if let Some(o) = &l.fixed_options {
            check_options(meta, o, &currency)?;
        }
    }
    if let Some(p) = &r.prefill_customer {
        if let Some(ph) = &p.phone_number {
            if !(8..=15).contains(&ph.len()) || !ph.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(
                    meta,
                    "prefillCustomer.phoneNumber",
                    "must be 8 to 15 digits, with the country code (MSISDN)",
                ));
            }
        }
        if let Some(c) = &p.country {
            check_country(meta, "prefillCustomer.country", c)?;
        }
        if let Some(e) = &p.email {
            if !e.contains('@') {
                return Err(bad(
                    meta,
                    "prefillCustomer.email",
                    "must be an e-mail address",
                ));
            }
        }
    }
    let config = r.configuration.clone().unwrap_or_default();
    check_config(meta, &config)?;
    Ok(Session {
        msn: auth.msn_str().to_owned(),
        reference,
        session_id: String::new(),
        token: Secret(String::new()),
        kind,
        state: SState::Created,
        amount: r.transaction.as_ref().map(|t| t.amount.clone()),
        description: r
            .transaction
            .as_ref()
            .map(|t| t.payment_description.clone()),
        merchant_info: mi.clone(),
        logistics: r.logistics.clone(),
        prefill: r.prefill_customer.clone(),
        config,
        subscription: r.subscription.clone(),
        created_ms: 0,
        expires_ms: 0,
        initiated_ms: None,
        completed_ms: None,
        details: None,
        sub: None,
        agreement: None,
        callback: CallbackState::NotDue,
        attempts: Vec::new(),
        next_attempt_ms: None,
        awaiting_payment: false,
        test: auth.environment() == MerchantEnvironment::Test,
    })
}

/// `POST /checkout/v3/session`.
async fn create(
    State(s): State<S>,
    meta: RequestMeta,
    ClientKeys(auth): ClientKeys,
    OptionalIdemKey(key): OptionalIdemKey,
    JsonBody(r): JsonBody<InitiateSessionRequest>,
) -> ApiResult {
    let session = validate(&meta, &auth, &r)?;
    let (msn, reference) = (session.msn.clone(), session.reference.clone());
    let payment = (session.kind == Kind::Payment).then(|| session.clone());
    let cmd = commands::create(Draft {
        session,
        lifetime_ms: LIFETIME_MS,
        base_url: s.base_url.clone(),
    });
    let resp = match &key {
        Some(k) => {
            let idem = Idempotent {
                sender: format!("{}|{}", auth.principal.scope_id(), auth.msn_str()),
                key: k,
                fingerprint: fingerprint_of(&r),
                mismatch_code: ErrorCode::IdempotencyError,
            };
            // A replay answers before the reference check below could refuse its own payment.
            if epayment::exists(&s, &meta, &msn, &reference).await?
                && flow::read(&s, &meta, &msn, &reference).await?.is_none()
            {
                return Err(duplicate(&meta, &reference));
            }
            run_idempotent(&s, &meta, idem, Op::Execute(cmd)).await?
        }
        None => {
            if epayment::exists(&s, &meta, &msn, &reference).await? {
                return Err(duplicate(&meta, &reference));
            }
            run_write(&s, &meta, Op::Execute(cmd)).await?
        }
    };
    if !resp.status().is_success() {
        return Ok(resp);
    }
    if let Some(p) = payment {
        let Some(stored) = flow::read(&s, &meta, &msn, &reference).await? else {
            return Ok(resp);
        };
        let amount = p.amount.clone().unwrap_or(vipps_types::checkout::Amount {
            value: 0,
            currency: "NOK".into(),
        });
        let created = run_write(
            &s,
            &meta,
            Op::Execute(epayment::create(epayment::NewPayment {
                msn: msn.clone(),
                reference: reference.clone(),
                currency: amount.currency.parse().unwrap_or(Currency::Nok),
                amount: amount.value,
                description: p.description.clone().unwrap_or_default(),
                phone_number: p.prefill.as_ref().and_then(|c| c.phone_number.clone()),
                return_url: p.merchant_info.return_url.clone(),
                expires_ms: stored.expires_ms,
                test: stored.test,
                base_url: s.base_url.clone(),
                key: key
                    .clone()
                    .unwrap_or_else(|| format!("checkout-{}", stored.session_id)),
            })),
        )
        .await?;
        // 409 here is a replay's own payment (the reference check above refused any other).
        if !created.status().is_success() && created.status() != http::StatusCode::CONFLICT {
            return Ok(created);
        }
    }
    Ok(resp)
}

fn duplicate(meta: &RequestMeta, reference: &str) -> ApiError {
    meta.problem(
        409,
        "Conflict",
        format!(
            "A payment with reference `{reference}` already exists for this merchant serial number"
        ),
    )
    .field("transaction.reference", "must be unique per sales unit")
    .err()
}

/// `GET /checkout/v3/session/{reference}`. An expired session is answered 404, as the vendor documents.
async fn get_session(
    State(s): State<S>,
    meta: RequestMeta,
    ClientKeys(auth): ClientKeys,
    Path(reference): Path<String>,
) -> ApiResult {
    let not_found = |detail: String| meta.problem(404, "Not Found", detail).err();
    let Some(l) = flow::load(&s, &meta, auth.msn_str(), &reference).await? else {
        return Err(not_found(format!(
            "No session with reference `{reference}` exists for this merchant serial number"
        )));
    };
    if l.session.state == SState::Expired {
        return Err(not_found(format!(
            "The session with reference `{reference}` expired without being completed"
        )));
    }
    Ok(axum::Json(l.render()).into_response())
}
