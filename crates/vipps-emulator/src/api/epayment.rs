//! ePayment API v1 handlers.

use axum::extract::{Path, Request, State};
use axum::response::IntoResponse;
use vipps_types::epayment::{
    CancelModificationRequest, CreatePaymentRequest, CustomerInteraction, ForceApprove,
    ModificationRequest, PaymentMethodType, UserFlow,
};
use vipps_types::problem::ErrorCode;

use super::{S, idempotency_key, internal, meta_of, path_reference, run_idempotent, run_write};
use crate::auth::{self, AuthCtx};
use crate::config::MerchantEnvironment;
use crate::domain::{Event, EventName, PState, Payment};
use crate::http::{ApiError, ApiResult, RequestMeta, parse_json, parse_optional_json, read_body};
use crate::render;
use crate::store::Op;

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

/// Whether a return or receipt URL is allowed: `https`, a custom app scheme, or `http` to a loopback host (for
/// local development).
fn url_allowed(u: &str) -> Result<(), String> {
    let url = url::Url::parse(u).map_err(|e| format!("not a valid absolute URL ({e})"))?;
    match url.scheme() {
        "https" => Ok(()),
        "http" => match url.host_str() {
            Some("localhost") | Some("127.0.0.1") | Some("[::1]") => Ok(()),
            Some(h) if h.starts_with("127.") => Ok(()),
            _ => Err("must use https:// or a custom URL scheme (http:// is accepted for loopback hosts only)".into()),
        },
        "javascript" | "data" | "file" => Err(format!("the `{}` scheme is not allowed", url.scheme())),
        _ => Ok(()),
    }
}

/// Validates a create request beyond its JSON shape and builds the payment row.
fn build_payment(
    s: &S,
    meta: &RequestMeta,
    auth: &AuthCtx,
    r: &CreatePaymentRequest,
    key: &str,
) -> Result<Payment, ApiError> {
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
        (_, Some(u)) => {
            url_allowed(u).map_err(|e| bad(meta, "returnUrl", e, Some(ErrorCode::InvalidUrl)))?
        }
        _ => {}
    }
    if let Some(u) = &r.receipt_url {
        url_allowed(u).map_err(|e| bad(meta, "receiptUrl", e, Some(ErrorCode::InvalidUrl)))?;
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
    let expires_ms = match &r.expires_at {
        None => now_ms + s.config.payment_expiry.as_millis() as i64,
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
            at_ms
        }
    };
    let token = crate::ids::hex(&s.ids.bytes16());
    let msn = auth.msn_str().to_owned();
    let landing = |page: &str| {
        let mut u = s.base_url.join(page).expect("static path joins");
        u.query_pairs_mut()
            .append_pair("msn", &msn)
            .append_pair("reference", reference)
            .append_pair("token", &token);
        u.to_string()
    };
    let redirect_url = match &r.user_flow {
        UserFlow::PushMessage => None,
        UserFlow::Qr => Some(landing("_emulator/qr")),
        _ => Some(landing("_emulator/landing")),
    };
    let psp = s.ids.psp_reference();
    Ok(Payment {
        msn: msn.clone(),
        reference: reference.to_owned(),
        currency: r.amount.currency,
        amount: r.amount.value,
        state: PState::Created,
        authorized: 0,
        cancelled: 0,
        captured: 0,
        refunded: 0,
        psp: psp.clone(),
        redirect_url,
        user_flow: r.user_flow.as_str().to_owned(),
        method: r.payment_method.type_.as_str().to_owned(),
        scope,
        sub: None,
        metadata: r.metadata.clone(),
        created_ms: now_ms,
        expires_ms,
        pending_until_ms: None,
        test: auth.environment() == MerchantEnvironment::Test,
        token: token.clone(),
        events: vec![Event {
            psp,
            name: EventName::Created,
            amount: r.amount.value,
            at_ms: now_ms,
            key: Some(key.to_owned()),
            success: true,
        }],
    })
}

/// `POST /epayment/v1/payments`.
pub async fn create(State(s): State<S>, req: Request) -> ApiResult {
    let meta = meta_of(&req);
    let (parts, body) = req.into_parts();
    let auth = auth::authenticate(&s, &meta, &parts.headers, true)?;
    let key = idempotency_key(&meta, &parts.headers, false)?.unwrap_or_default();
    let bytes = read_body(&meta, body, s.config.limits.max_body_bytes).await?;
    let r: CreatePaymentRequest = parse_json(&meta, &bytes)?;
    let payment = build_payment(&s, &meta, &auth, &r, &key)?;
    let scope = format!("{}|{}", auth.principal.scope_id(), auth.msn_str());
    run_idempotent(
        &s,
        &meta,
        &parts,
        scope,
        &key,
        super::fingerprint_of(&r),
        ErrorCode::IdempotencyError,
        Op::CreatePayment(Box::new(payment)),
    )
    .await
}

/// Reads a payment, first persisting any change time has made (expiry, a pending approval).
pub async fn load_settled(
    s: &S,
    meta: &RequestMeta,
    msn: &str,
    reference: &str,
) -> Result<std::sync::Arc<Payment>, ApiError> {
    let mut p = s
        .store
        .payment(msn, reference)
        .await
        .map_err(|e| internal(meta, &e))?;
    if let Some(due) = p.as_ref().and_then(|p| p.due_ms()) {
        if due <= s.clock.unix_ms() {
            run_write(
                s,
                meta,
                Op::Settle {
                    msn: msn.to_owned(),
                    reference: reference.to_owned(),
                },
            )
            .await?;
            p = s
                .store
                .payment(msn, reference)
                .await
                .map_err(|e| internal(meta, &e))?;
        }
    }
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
pub async fn get_payment(
    State(s): State<S>,
    Path(reference): Path<String>,
    req: Request,
) -> ApiResult {
    let meta = meta_of(&req);
    let auth = auth::authenticate(&s, &meta, req.headers(), true)?;
    let reference = path_reference(&s, &meta, &reference)?;
    let p = load_settled(&s, &meta, auth.msn_str(), &reference).await?;
    Ok(axum::Json(render::payment(&p)).into_response())
}

/// `GET /epayment/v1/payments/{reference}/events`.
pub async fn events(State(s): State<S>, Path(reference): Path<String>, req: Request) -> ApiResult {
    let meta = meta_of(&req);
    let auth = auth::authenticate(&s, &meta, req.headers(), true)?;
    let reference = path_reference(&s, &meta, &reference)?;
    let p = load_settled(&s, &meta, auth.msn_str(), &reference).await?;
    Ok(axum::Json(render::events(&p)).into_response())
}

async fn modify(s: S, reference: String, req: Request, kind: &'static str) -> ApiResult {
    let meta = meta_of(&req);
    let (parts, body) = req.into_parts();
    let auth = auth::authenticate(&s, &meta, &parts.headers, true)?;
    let reference = path_reference(&s, &meta, &reference)?;
    let key = idempotency_key(&meta, &parts.headers, false)?.unwrap_or_default();
    let bytes = read_body(&meta, body, s.config.limits.max_body_bytes).await?;
    let r: ModificationRequest = parse_json(&meta, &bytes)?;
    r.modification_amount.validate().map_err(|e| {
        bad(
            &meta,
            "modificationAmount.value",
            e.to_string(),
            Some(ErrorCode::InvalidAmount),
        )
    })?;
    let scope = format!("{}|{}", auth.principal.scope_id(), auth.msn_str());
    let msn = auth.msn_str().to_owned();
    let (op, code) = if kind == "capture" {
        (
            Op::Capture {
                msn,
                reference,
                amount: r.modification_amount,
                key: key.clone(),
            },
            ErrorCode::CaptureIdempotencyConflict,
        )
    } else {
        (
            Op::Refund {
                msn,
                reference,
                amount: r.modification_amount,
                key: key.clone(),
            },
            ErrorCode::ReferenceAlreadyExists,
        )
    };
    run_idempotent(
        &s,
        &meta,
        &parts,
        scope,
        &key,
        super::fingerprint_of(&r),
        code,
        op,
    )
    .await
}

/// `POST /epayment/v1/payments/{reference}/capture`.
pub async fn capture(State(s): State<S>, Path(reference): Path<String>, req: Request) -> ApiResult {
    modify(s, reference, req, "capture").await
}

/// `POST /epayment/v1/payments/{reference}/refund`.
pub async fn refund(State(s): State<S>, Path(reference): Path<String>, req: Request) -> ApiResult {
    modify(s, reference, req, "refund").await
}

/// `POST /epayment/v1/payments/{reference}/cancel`. The body and the Idempotency-Key are optional.
pub async fn cancel(State(s): State<S>, Path(reference): Path<String>, req: Request) -> ApiResult {
    let meta = meta_of(&req);
    let (parts, body) = req.into_parts();
    let auth = auth::authenticate(&s, &meta, &parts.headers, true)?;
    let reference = path_reference(&s, &meta, &reference)?;
    let key = idempotency_key(&meta, &parts.headers, true)?;
    let bytes = read_body(&meta, body, s.config.limits.max_body_bytes).await?;
    let r: CancelModificationRequest = parse_optional_json(&meta, &bytes)?;
    let msn = auth.msn_str().to_owned();
    let op = Op::Cancel {
        msn,
        reference,
        transaction_only: r.cancel_transaction_only.unwrap_or(false),
        key: key.clone(),
    };
    match key {
        Some(k) => {
            let scope = format!("{}|{}", auth.principal.scope_id(), auth.msn_str());
            run_idempotent(
                &s,
                &meta,
                &parts,
                scope,
                &k,
                super::fingerprint_of(&r),
                ErrorCode::IdempotencyError,
                op,
            )
            .await
        }
        None => run_write(&s, &meta, op).await,
    }
}

/// `POST /epayment/v1/test/payments/{reference}/approve` (test merchants only).
pub async fn force_approve(
    State(s): State<S>,
    Path(reference): Path<String>,
    req: Request,
) -> ApiResult {
    let meta = meta_of(&req);
    let (parts, body) = req.into_parts();
    let auth = auth::authenticate(&s, &meta, &parts.headers, true)?;
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
    let reference = path_reference(&s, &meta, &reference)?;
    let bytes = read_body(&meta, body, s.config.limits.max_body_bytes).await?;
    if !bytes.iter().all(u8::is_ascii_whitespace) {
        let fa: ForceApprove = parse_json(&meta, &bytes)?;
        if let Some(p) = fa.customer.as_ref().and_then(|c| c.phone_number.as_ref()) {
            if !(10..=15).contains(&p.len()) || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(
                    &meta,
                    "customer.phoneNumber",
                    "must be 10 to 15 digits",
                    Some(ErrorCode::InvalidPhoneNumber),
                ));
            }
        }
    }
    run_write(
        &s,
        &meta,
        Op::ForceApprove {
            msn: auth.msn_str().to_owned(),
            reference,
        },
    )
    .await
}
