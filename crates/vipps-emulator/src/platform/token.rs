//! `POST /accesstoken/get`.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use subtle_eq::ct_eq;
use vipps_types::headers as h;
use vipps_types::token::AccessTokenResponse;

use super::Shared as S;
use super::auth::{self, Principal};
use super::http::{ApiResult, RequestMeta, header_str};
use super::idempotency::internal;
use crate::config::MerchantEnvironment;

pub(super) mod subtle_eq {
    /// Constant-time comparison of two secrets.
    pub(crate) fn ct_eq(a: &str, b: &str) -> bool {
        use sha2::{Digest, Sha256};
        // Compare digests so the length of the secret does not leak either.
        let (x, y) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
        x.iter()
            .zip(y.iter())
            .fold(0u8, |acc, (p, q)| acc | (p ^ q))
            == 0
    }
}

/// Issues a token. Accepts any content type and an empty `Authorization: Bearer ` (as the official SDK sends).
pub(crate) async fn get_token(
    State(s): State<S>,
    meta: RequestMeta,
    headers: HeaderMap,
) -> ApiResult {
    let headers = &headers;
    let principal = s.auth.subscription(&meta, headers)?;
    s.auth.system_headers(&meta, headers)?;
    let msn = auth::msn_header(&meta, headers)?;
    let id = header_str(headers, h::CLIENT_ID);
    let secret = header_str(headers, h::CLIENT_SECRET);
    let ok = matches!((id, secret), (Some(i), Some(sec)) if i == principal.client_id() && ct_eq(sec, principal.client_secret()));
    if !ok {
        let missing = match (id, secret) {
            (None, _) => Some(h::CLIENT_ID),
            (_, None) => Some(h::CLIENT_SECRET),
            _ => None,
        };
        let description = match missing {
            Some(name) => format!("The {name} header is missing"),
            None => "Invalid client_id or client_secret for this subscription key".to_owned(),
        };
        let body = serde_json::json!({
            "error": "unauthorized_client",
            "error_description": description,
            "error_codes": [70001],
            "timestamp": crate::platform::clock::rfc3339(s.clock.now()),
            "trace_id": &*meta.trace_id,
            "correlation_id": crate::platform::ids::uuid_from(s.ids.bytes16()),
        });
        return Ok((StatusCode::UNAUTHORIZED, axum::Json(body)).into_response());
    }
    if let Some(m) = &msn {
        let allowed = match &principal {
            Principal::Merchant(mc) => &mc.msn == m,
            Principal::Partner(p) => p.msns.contains(m),
        };
        if !allowed {
            return Err(meta
                .problem(
                    403,
                    "Forbidden",
                    format!("Merchant-Serial-Number {m} does not belong to these API keys"),
                )
                .field(
                    h::MERCHANT_SERIAL_NUMBER,
                    "must be a sales unit of these API keys",
                )
                .err());
        }
    }
    let lifetime = match principal.environment() {
        MerchantEnvironment::Test => s.config.tokens.test,
        MerchantEnvironment::Production => s.config.tokens.production,
    }
    .as_secs() as i64;
    let now = s.clock.unix();
    let token = s
        .auth
        .mint(s.ids.as_ref(), &principal, now, lifetime)
        .map_err(|e| internal(&meta, &e))?;
    let body = AccessTokenResponse {
        token_type: "Bearer".into(),
        expires_in: lifetime,
        ext_expires_in: 0,
        expires_on: now + lifetime,
        not_before: now,
        resource: "00000002-0000-0000-c000-000000000000".into(),
        access_token: token,
    };
    let mut resp: Response = axum::Json(body).into_response();
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json;charset=UTF-8"),
    );
    Ok(resp)
}
