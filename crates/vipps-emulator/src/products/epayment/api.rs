//! ePayment API v1 handlers: authenticate, validate, then hand a command to the platform (idempotently where the
//! vendor requires a key).

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use http::request::Parts;
use vipps_types::epayment::{
    CancelModificationRequest, CreatePaymentRequest, CustomerInteraction, ForceApprove,
    ModificationRequest, PaymentMethodType, UserFlow,
};
use vipps_types::problem::ErrorCode;

use super::commands::{self, Draft, Expiry, Modification};
use super::domain::Payment;
use super::render;
use crate::config::MerchantEnvironment;
use crate::platform::Shared as S;
use crate::platform::auth::AuthCtx;
use crate::platform::extract::{IdemKey, JsonBody, Merchant, OptionalIdemKey, OptionalJson};
use crate::platform::http::{ApiError, ApiResult, RequestMeta, merchant_url};
use crate::platform::idempotency::{
    Idempotent, fingerprint_of, read_settled, run_idempotent, run_write,
};
use crate::platform::ratelimit::{KeyPart, RateLimit};
use crate::platform::store::Op;
use http::Method;

/// The ePayment routes.
pub(super) fn routes() -> axum::Router<S> {
    Router::new()
        .route("/epayment/v1/payments", post(create))
        .route("/epayment/v1/payments/{reference}", get(get_payment))
        .route("/epayment/v1/payments/{reference}/events", get(events))
        .route("/epayment/v1/payments/{reference}/capture", post(capture))
        .route("/epayment/v1/payments/{reference}/refund", post(refund))
        .route("/epayment/v1/payments/{reference}/cancel", post(cancel))
        .route(
            "/epayment/v1/test/payments/{reference}/approve",
            post(force_approve),
        )
}

/// The documented rate limits (the ePayment API guide, "Rate limiting"): create, capture, cancel and refund 5
/// per minute per reference and MSN; get payment and the event log 120 per minute per reference and
/// subscription key. The test approve is not limited.
pub(super) fn rate_limits() -> Vec<RateLimit> {
    use KeyPart::{Body, Merchant, Path, SubscriptionKey};
    let limit = |method: Method, route, per_minute, key| RateLimit {
        method,
        route,
        per_minute,
        key,
    };
    vec![
        limit(
            Method::POST,
            "/epayment/v1/payments",
            5,
            &[Body("reference"), Merchant],
        ),
        limit(
            Method::POST,
            "/epayment/v1/payments/{reference}/capture",
            5,
            &[Path("reference"), Merchant],
        ),
        limit(
            Method::POST,
            "/epayment/v1/payments/{reference}/refund",
            5,
            &[Path("reference"), Merchant],
        ),
        limit(
            Method::POST,
            "/epayment/v1/payments/{reference}/cancel",
            5,
            &[Path("reference"), Merchant],
        ),
        limit(
            Method::GET,
            "/epayment/v1/payments/{reference}",
            120,
            &[Path("reference"), SubscriptionKey],
        ),
        limit(
            Method::GET,
            "/epayment/v1/payments/{reference}/events",
            120,
            &[Path("reference"), SubscriptionKey],
        ),
    ]
}

/// The payment reference in the path, valid by the vendor's rules and within the configured maximum length.
pub(super) struct PaymentRef(pub(super) String);

impl FromRequestParts<S> for PaymentRef {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &S) -> Result<Self, Self::Rejection> {
        let meta = RequestMeta::of(parts);
        let Path(raw) = Path::<String>::from_request_parts(parts, s)
            .await
            .map_err(|e| meta.problem(400, "Bad Request", e.body_text()).err())?;
        path_reference(s, &meta, &raw).map(PaymentRef)
    }
}

/// The reference in a path, validated (the vendor's rules, and the configured maximum length).
pub(super) fn path_reference(
    s: &S,
    meta: &RequestMeta,
    reference: &str,
) -> Result<String, ApiError> {
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

const SCOPES: &[&str] = &[
    "name",
    "address",
    "email",
    "phoneNumber",
    "birthDate",
    "nin",
];

fn bad(
    meta: &RequestMeta,
    field: &str,
    reason: impl Into<String>,
    code: Option<ErrorCode>,
) -> ApiError {
    let reason = reason.into();
    let mut p = meta
        .problem(400, "Bad Request", format!("Invalid `{field}`: {reason}"))
        .field(field, reason);
    if let Some(c) = code {
        p = p.code(c);
    }
    p.err()
}

/// Validates a create request beyond its JSON shape. The row itself is built by the command, once the key is
/// claimed, from the write's own time and ids.
fn validate_create(
    s: &S,
    meta: &RequestMeta,
    auth: &AuthCtx,
    r: &CreatePaymentRequest,
    key: &str,
) -> Result<Draft, ApiError> {
    let reference = r.reference.as_str();
    if reference.len() > s.config.limits.reference_max_len {
        return Err(bad(
            meta,
            "reference",
            format!(
                "must be at most {} characters long",
                s.config.limits.reference_max_len
            ),
            None,
        ));
    }
    r.amount.validate().map_err(|e| {
        bad(
            meta,
            "amount.value",
            e.to_string(),
            Some(ErrorCode::InvalidAmount),
        )
    })?;
    r.amount.check_payment_minimum().map_err(|e| {
        meta.problem(400, "Amount too small", e.to_string())
            .code(ErrorCode::AmountTooSmall)
            .field("amount.value", e.to_string())
            .err()
    })?;
    if !r.user_flow.is_known() {
        return Err(bad(
            meta,
            "userFlow",
            "must be PUSH_MESSAGE, NATIVE_REDIRECT, WEB_REDIRECT or QR",
            None,
        ));
    }
    match &r.payment_method.type_ {
        PaymentMethodType::Wallet => {}
        PaymentMethodType::Card if r.user_flow == UserFlow::WebRedirect => {}
        PaymentMethodType::Card => {
            return Err(bad(
                meta,
                "paymentMethod.type",
                "CARD requires userFlow WEB_REDIRECT",
                Some(ErrorCode::InvalidPaymentMethodType),
            ));
        }
        _ => {
            return Err(bad(
                meta,
                "paymentMethod.type",
                "must be WALLET or CARD",
                Some(ErrorCode::InvalidPaymentMethodType),
            ));
        }
    }
    if let Some(ci) = &r.customer_interaction {
        if !matches!(
            ci,
            CustomerInteraction::CustomerPresent | CustomerInteraction::CustomerNotPresent
        ) {
            return Err(bad(
                meta,
                "customerInteraction",
                "must be CUSTOMER_PRESENT or CUSTOMER_NOT_PRESENT",
                None,
            ));
        }
    }
    match (&r.user_flow, &r.return_url) {
        (UserFlow::WebRedirect, None) => {
            return Err(bad(
                meta,
                "returnUrl",
                "required when userFlow is WEB_REDIRECT",
                Some(ErrorCode::MissingRequiredParameter),
            ));
        }
        (_, Some(u)) => merchant_url(u, true)
            .map(drop)
            .map_err(|e| bad(meta, "returnUrl", e, Some(ErrorCode::InvalidUrl)))?,
        _ => {}
    }
    if let Some(u) = &r.receipt_url {
        merchant_url(u, true)
            .map(drop)
            .map_err(|e| bad(meta, "receiptUrl", e, Some(ErrorCode::InvalidUrl)))?;
    }
    match &r.customer {
        None if r.user_flow == UserFlow::PushMessage => {
            return Err(bad(
                meta,
                "customer",
                "required when userFlow is PUSH_MESSAGE",
                Some(ErrorCode::MissingRequiredParameter),
            ));
        }
        None => {}
        Some(c) => {
            if c.identifiers_set() != 1 {
                return Err(bad(
                    meta,
                    "customer",
                    "exactly one of phoneNumber, personalQr or customerToken must be set",
                    None,
                ));
            }
            if let Some(p) = &c.phone_number {
                if !(10..=15).contains(&p.len()) || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad(
                        meta,
                        "customer.phoneNumber",
                        "must be 10 to 15 digits (MSISDN, such as 4791234567)",
                        Some(ErrorCode::InvalidPhoneNumber),
                    ));
                }
            }
            if let Some(q) = &c.personal_qr {
                if !(5..=255).contains(&q.chars().count()) {
                    return Err(bad(
                        meta,
                        "customer.personalQr",
                        "must be 5 to 255 characters",
                        Some(ErrorCode::InvalidPersonalQr),
                    ));
                }
            }
            if let Some(t) = &c.customer_token {
                if t.trim().is_empty() {
                    return Err(bad(
                        meta,
                        "customer.customerToken",
                        "must not be empty",
                        Some(ErrorCode::InvalidCustomerToken),
                    ));
                }
            }
        }
    }
    if let Some(d) = &r.payment_description {
        let n = d.chars().count();
        if !(3..=100).contains(&n) {
            return Err(bad(
                meta,
                "paymentDescription",
                format!("must be 3 to 100 characters, got {n}"),
                None,
            ));
        }
    }
    if let Some(m) = &r.metadata {
        if m.len() > 5 {
            return Err(bad(
                meta,
                "metadata",
                format!("at most 5 key-value pairs, got {}", m.len()),
                Some(ErrorCode::MetadataTooManyPairs),
            ));
        }
        for (k, v) in m {
            if k.is_empty() {
                return Err(bad(
                    meta,
                    "metadata",
                    "keys must not be empty",
                    Some(ErrorCode::MetadataInvalid),
                ));
            }
            if k.chars().count() > 100 {
                return Err(bad(
                    meta,
                    &format!("metadata.{k}"),
                    "keys are at most 100 characters",
                    Some(ErrorCode::MetadataKeyTooLong),
                ));
            }
            if v.chars().count() > 500 {
                return Err(bad(
                    meta,
                    &format!("metadata.{k}"),
                    "values are at most 500 characters",
                    Some(ErrorCode::MetadataValueTooLong),
                ));
            }
        }
    }
    let scope = match r.profile.as_ref().and_then(|p| p.scope.clone()) {
        Some(sc) => {
            for word in sc.split_whitespace() {
                if !SCOPES.contains(&word) {
                    return Err(bad(
                        meta,
                        "profile.scope",
                        format!("unknown scope `{word}` (allowed: {})", SCOPES.join(", ")),
                        Some(ErrorCode::InvalidScope),
                    ));
                }
            }
            if sc.split_whitespace().next().is_none() {
                None
            } else {
                Some(sc)
            }
        }
        None => None,
    };
    if let Some(q) = &r.qr_format {
        if !q.format.is_known() {
            return Err(bad(
                meta,
                "qrFormat.format",
                "must be TEXT/TARGETURL, IMAGE/SVG+XML or IMAGE/PNG",
                None,
            ));
        }
        if let Some(sz) = q.size {
            if !(100..=2000).contains(&sz) {
                return Err(bad(
                    meta,
                    "qrFormat.size",
                    "must be between 100 and 2000",
                    None,
                ));
            }
        }
        if r.user_flow != UserFlow::Qr {
            return Err(bad(meta, "qrFormat", "only allowed with userFlow QR", None));
        }
    }
    if let Some(receipt) = &r.receipt {
        receipt
            .validate()
            .map_err(|e| bad(meta, "receipt", e.to_string(), None))?;
    }
    if let Some(air) = r
        .industry_data
        .as_ref()
        .and_then(|i| i.airline_data.as_ref())
    {
        let checks: [(&str, &str, usize, usize); 4] = [
            (
                "industryData.airlineData.agencyInvoiceNumber",
                &air.agency_invoice_number,
                1,
                6,
            ),
            (
                "industryData.airlineData.airlineCode",
                &air.airline_code,
                3,
                3,
            ),
            (
                "industryData.airlineData.airlineDesignatorCode",
                &air.airline_designator_code,
                2,
                2,
            ),
            (
                "industryData.airlineData.passengerName",
                &air.passenger_name,
                1,
                49,
            ),
        ];
        for (field, v, min, max) in checks {
            let n = v.chars().count();
            if n < min || n > max {
                return Err(bad(
                    meta,
                    field,
                    format!("must be {min} to {max} characters"),
                    None,
                ));
            }
        }
    }
    let now_ms = s.clock.unix_ms();
    let expiry = match &r.expires_at {
        None => Expiry::After(s.config.payment_expiry.as_millis() as i64),
        Some(at) => {
            if !matches!(r.user_flow, UserFlow::PushMessage | UserFlow::Qr) {
                return Err(bad(
                    meta,
                    "expiresAt",
                    "only allowed with userFlow PUSH_MESSAGE or QR",
                    None,
                ));
            }
            if r.receipt.is_none() {
                return Err(meta
                    .problem(
                        400,
                        "Bad Request",
                        "A payment with expiresAt must carry a receipt",
                    )
                    .code(ErrorCode::LongLivingRequiresReceipt)
                    .field("receipt", "required with expiresAt")
                    .err());
            }
            let at_ms = (at.unix_timestamp_nanos() / 1_000_000) as i64;
            if at_ms <= now_ms + 10 * 60_000 {
                return Err(bad(
                    meta,
                    "expiresAt",
                    "must be more than 10 minutes in the future",
                    Some(ErrorCode::ExpiresAtTooSoon),
                ));
            }
            if at_ms >= now_ms + 28 * 86_400_000 {
                return Err(bad(
                    meta,
                    "expiresAt",
                    "must be less than 28 days in the future",
                    Some(ErrorCode::ExpiresAtTooLate),
                ));
            }
            Expiry::At(at_ms)
        }
    };
    let landing = match &r.user_flow {
        UserFlow::PushMessage => None,
        UserFlow::Qr => Some("_emulator/qr"),
        _ => Some("_emulator/landing"),
    };
    Ok(Draft {
        msn: auth.msn_str().to_owned(),
        reference: reference.to_owned(),
        currency: r.amount.currency,
        amount: r.amount.value,
        user_flow: r.user_flow.as_str().to_owned(),
        method: r.payment_method.type_.as_str().to_owned(),
        scope,
        metadata: r.metadata.clone(),
        expiry,
        landing,
        base_url: s.base_url.clone(),
        test: auth.environment() == MerchantEnvironment::Test,
        key: key.to_owned(),
        description: r.payment_description.clone(),
        phone_number: r.customer.as_ref().and_then(|c| c.phone_number.clone()),
        return_url: r.return_url.clone(),
        qr_format: (r.user_flow == UserFlow::Qr).then(|| {
            r.qr_format
                .as_ref()
                .map_or("IMAGE/SVG+XML", |q| q.format.as_str())
                .to_owned()
        }),
        qr_size: r.qr_format.as_ref().and_then(|q| q.size),
        followed: false,
    })
}

/// Who sent an idempotent write, for the scope of its key.
fn sender(auth: &AuthCtx) -> String {
    format!("{}|{}", auth.principal.scope_id(), auth.msn_str())
}

/// `POST /epayment/v1/payments`.
async fn create(
    State(s): State<S>,
    meta: RequestMeta,
    Merchant(auth): Merchant,
    IdemKey(key): IdemKey,
    JsonBody(r): JsonBody<CreatePaymentRequest>,
) -> ApiResult {
    let draft = validate_create(&s, &meta, &auth, &r, &key)?;
    let idem = Idempotent {
        sender: sender(&auth),
        key: &key,
        fingerprint: fingerprint_of(&r),
        mismatch_code: ErrorCode::IdempotencyError,
    };
    run_idempotent(&s, &meta, idem, Op::Execute(commands::create(draft))).await
}

/// Reads a payment, first persisting any change time has made (expiry, a pending approval).
pub(super) async fn load_settled(
    s: &S,
    meta: &RequestMeta,
    msn: &str,
    reference: &str,
) -> Result<Arc<Payment>, ApiError> {
    let key = commands::key(msn, reference);
    let p = read_settled::<Payment>(s, meta, &key, || {
        commands::modify(msn, reference, Modification::Settle)
    })
    .await?;
    p.ok_or_else(|| {
        meta.problem(
            404,
            "Payment not found",
            format!(
                "No payment with reference `{reference}` exists for this merchant serial number"
            ),
        )
        .code(ErrorCode::ReferenceNotFound)
        .err()
    })
}

/// `GET /epayment/v1/payments/{reference}`.
async fn get_payment(
    State(s): State<S>,
    meta: RequestMeta,
    Merchant(auth): Merchant,
    PaymentRef(reference): PaymentRef,
) -> ApiResult {
    let p = load_settled(&s, &meta, auth.msn_str(), &reference).await?;
    Ok(axum::Json(render::payment(&p)).into_response())
}

/// `GET /epayment/v1/payments/{reference}/events`.
async fn events(
    State(s): State<S>,
    meta: RequestMeta,
    Merchant(auth): Merchant,
    PaymentRef(reference): PaymentRef,
) -> ApiResult {
    let p = load_settled(&s, &meta, auth.msn_str(), &reference).await?;
    Ok(axum::Json(render::events(&p)).into_response())
}

/// Capture or refund.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Movement {
    Capture,
    Refund,
}

/// What capture and refund share: the authenticated, validated request of one movement.
struct MovementRequest {
    meta: RequestMeta,
    auth: AuthCtx,
    reference: String,
    key: String,
    body: ModificationRequest,
}

impl FromRequest<S> for MovementRequest {
    type Rejection = ApiError;

    async fn from_request(req: Request, s: &S) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let meta = RequestMeta::of(&parts);
        let Merchant(auth) = Merchant::from_request_parts(&mut parts, s).await?;
        let PaymentRef(reference) = PaymentRef::from_request_parts(&mut parts, s).await?;
        let IdemKey(key) = IdemKey::from_request_parts(&mut parts, s).await?;
        let JsonBody(body) = JsonBody::from_request(Request::from_parts(parts, body), s).await?;
        Ok(MovementRequest {
            meta,
            auth,
            reference,
            key,
            body,
        })
    }
}

async fn modify(s: S, r: MovementRequest, movement: Movement) -> ApiResult {
    let MovementRequest {
        meta,
        auth,
        reference,
        key,
        body,
    } = r;
    body.modification_amount.validate().map_err(|e| {
        bad(
            &meta,
            "modificationAmount.value",
            e.to_string(),
            Some(ErrorCode::InvalidAmount),
        )
    })?;
    let amount = body.modification_amount;
    let (m, mismatch_code) = match movement {
        Movement::Capture => (
            Modification::Capture {
                amount,
                key: key.clone(),
            },
            ErrorCode::CaptureIdempotencyConflict,
        ),
        Movement::Refund => (
            Modification::Refund {
                amount,
                key: key.clone(),
            },
            ErrorCode::ReferenceAlreadyExists,
        ),
    };
    let idem = Idempotent {
        sender: sender(&auth),
        key: &key,
        fingerprint: fingerprint_of(&body),
        mismatch_code,
    };
    let cmd = commands::modify(auth.msn_str(), &reference, m);
    run_idempotent(&s, &meta, idem, Op::Execute(cmd)).await
}

/// `POST /epayment/v1/payments/{reference}/capture`.
async fn capture(State(s): State<S>, r: MovementRequest) -> ApiResult {
    modify(s, r, Movement::Capture).await
}

/// `POST /epayment/v1/payments/{reference}/refund`.
async fn refund(State(s): State<S>, r: MovementRequest) -> ApiResult {
    modify(s, r, Movement::Refund).await
}

/// `POST /epayment/v1/payments/{reference}/cancel`. The body and the Idempotency-Key are optional.
async fn cancel(
    State(s): State<S>,
    meta: RequestMeta,
    Merchant(auth): Merchant,
    PaymentRef(reference): PaymentRef,
    OptionalIdemKey(key): OptionalIdemKey,
    OptionalJson(r): OptionalJson<CancelModificationRequest>,
) -> ApiResult {
    let cmd = commands::modify(
        auth.msn_str(),
        &reference,
        Modification::Cancel {
            transaction_only: r.cancel_transaction_only.unwrap_or(false),
            key: key.clone(),
        },
    );
    match key {
        Some(k) => {
            let idem = Idempotent {
                sender: sender(&auth),
                key: &k,
                fingerprint: fingerprint_of(&r),
                mismatch_code: ErrorCode::IdempotencyError,
            };
            run_idempotent(&s, &meta, idem, Op::Execute(cmd)).await
        }
        None => run_write(&s, &meta, Op::Execute(cmd)).await,
    }
}

/// `POST /epayment/v1/test/payments/{reference}/approve` (test merchants only).
async fn force_approve(
    State(s): State<S>,
    meta: RequestMeta,
    Merchant(auth): Merchant,
    PaymentRef(reference): PaymentRef,
    OptionalJson(fa): OptionalJson<Option<ForceApprove>>,
) -> ApiResult {
    if auth.environment() == MerchantEnvironment::Production {
        return Err(meta
            .problem(
                403,
                "Forbidden",
                "Force approve is only available in the test environment",
            )
            .code(ErrorCode::ApproveNotAllowed)
            .err());
    }
    if let Some(p) = fa
        .as_ref()
        .and_then(|f| f.customer.as_ref())
        .and_then(|c| c.phone_number.as_ref())
    {
        if !(10..=15).contains(&p.len()) || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad(
                &meta,
                "customer.phoneNumber",
                "must be 10 to 15 digits",
                Some(ErrorCode::InvalidPhoneNumber),
            ));
        }
    }
    let cmd = commands::modify(auth.msn_str(), &reference, Modification::ForceApprove);
    let resp = run_write(&s, &meta, Op::Execute(cmd)).await?;
    super::facade::notify_followers(&s, auth.msn_str(), &reference).await;
    Ok(resp)
}
