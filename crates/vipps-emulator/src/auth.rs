//! Access tokens (signed JWTs with `exp` and `nbf`) and the authentication of every API call.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation as JwtValidation};
use serde::{Deserialize, Serialize};
use vipps_types::headers::{self as h, MerchantSerialNumber, SystemHeader, SystemValue};
use vipps_types::problem::GatewayError;

use crate::config::{MerchantEnvironment, Validation};
use crate::http::{ApiError, RequestMeta, gateway_401, header_str};
use crate::state::{AppState, Principal};

/// Claims of an emulator access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// The client id the token was issued to.
    pub sub: String,
    /// Issued at (Unix seconds, emulator time).
    pub iat: i64,
    /// Not before.
    pub nbf: i64,
    /// Expiry.
    pub exp: i64,
    /// Token id.
    pub jti: String,
    /// `test` or `production`.
    pub env: String,
}

/// Issuer of emulator tokens.
pub const ISSUER: &str = "vipps-emulator";

/// Signs a token for `principal` valid from `now` for `lifetime_secs`.
pub fn mint(
    state: &AppState,
    principal: &Principal,
    now: i64,
    lifetime_secs: i64,
) -> Result<String, String> {
    let claims = Claims {
        iss: ISSUER.into(),
        sub: principal.client_id().into(),
        iat: now,
        nbf: now,
        exp: now + lifetime_secs,
        jti: crate::ids::uuid_from(state.ids.bytes16()),
        env: match principal.environment() {
            MerchantEnvironment::Test => "test".into(),
            MerchantEnvironment::Production => "production".into(),
        },
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(&state.jwt_key),
    )
    .map_err(|e| e.to_string())
}

fn verify(state: &AppState, token: &str) -> Result<std::sync::Arc<Claims>, String> {
    if let Some(c) = state.verified_tokens.read().get(token) {
        return Ok(c.clone());
    }
    let mut v = JwtValidation::new(Algorithm::HS256);
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    v.required_spec_claims.clear();
    v.set_issuer(&[ISSUER]);
    let claims =
        jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(&state.jwt_key), &v)
            .map(|d| std::sync::Arc::new(d.claims))
            .map_err(|e| e.to_string())?;
    let mut cache = state.verified_tokens.write();
    if cache.len() >= 4096 {
        cache.clear();
    }
    cache.insert(token.into(), claims.clone());
    Ok(claims)
}

/// The principal a subscription key belongs to; 401 with the gateway body otherwise.
pub fn subscription(state: &AppState, headers: &http::HeaderMap) -> Result<Principal, ApiError> {
    let key = header_str(headers, h::SUBSCRIPTION_KEY)
        .ok_or_else(|| gateway_401(GatewayError::MISSING_KEY))?;
    state
        .by_subscription_key
        .get(key)
        .cloned()
        .ok_or_else(|| gateway_401(GatewayError::INVALID_KEY))
}

/// An authenticated call.
#[derive(Debug, Clone)]
pub struct AuthCtx {
    /// Who.
    pub principal: Principal,
    /// The sales unit acted for (`None` only for a partner without the header, where allowed).
    pub msn: Option<MerchantSerialNumber>,
}

impl AuthCtx {
    /// Test or production.
    pub fn environment(&self) -> MerchantEnvironment {
        self.principal.environment()
    }
    /// The MSN, which ePayment calls always have.
    pub fn msn_str(&self) -> &str {
        self.msn.as_ref().map(|m| m.as_str()).unwrap_or("")
    }
    /// The owner of webhook registrations made by this call.
    pub fn owner(&self) -> String {
        match (&self.principal, &self.msn) {
            (_, Some(m)) => format!("msn:{m}"),
            (p, None) => format!("partner:{}", p.client_id()),
        }
    }
}

/// Checks the `Merchant-Serial-Number` header format: 400 when malformed.
pub fn msn_header(
    meta: &RequestMeta,
    headers: &http::HeaderMap,
) -> Result<Option<MerchantSerialNumber>, ApiError> {
    let Some(raw) = headers.get(h::MERCHANT_SERIAL_NUMBER) else {
        return Ok(None);
    };
    let s = raw.to_str().unwrap_or("\u{fffd}").trim();
    if s.is_empty() {
        return Ok(None);
    }
    MerchantSerialNumber::new(s).map(Some).map_err(|e| {
        meta.problem(
            400,
            "Bad Request",
            format!("Invalid Merchant-Serial-Number header: {e}"),
        )
        .field(
            h::MERCHANT_SERIAL_NUMBER,
            "4 to 7 digits (the spec says 4 to 6)",
        )
        .err()
    })
}

/// Checks the four `Vipps-System-*` headers. Strict: 400 naming the header; lenient: logged.
pub fn system_headers(
    state: &AppState,
    meta: &RequestMeta,
    headers: &http::HeaderMap,
) -> Result<(), ApiError> {
    for sh in SystemHeader::ALL {
        let Some(raw) = headers.get(sh.header_name()) else {
            continue;
        };
        let value = raw.to_str().unwrap_or("\u{fffd}");
        if let Err(e) = SystemValue::validate(sh, value) {
            match state.config.validation {
                Validation::Strict => {
                    return Err(meta
                        .problem(
                            400,
                            "Bad Request",
                            format!("Invalid {} header: {e}", sh.header_name()),
                        )
                        .field(sh.header_name(), e.to_string())
                        .err());
                }
                Validation::Lenient => {
                    tracing::warn!(header = sh.header_name(), error = %e, trace_id = %meta.trace_id, "accepted an invalid header (lenient mode)");
                }
            }
        }
    }
    Ok(())
}

/// Authenticates an API call: subscription key, bearer token of the same principal, valid and unexpired on
/// emulator time, and the MSN. `msn_required` is true for ePayment calls; partners must always send it there.
pub fn authenticate(
    state: &AppState,
    meta: &RequestMeta,
    headers: &http::HeaderMap,
    msn_required: bool,
) -> Result<AuthCtx, ApiError> {
    let principal = subscription(state, headers)?;
    let unauthorized = |detail: &str| meta.problem(401, "Unauthorized", detail.to_owned()).err();
    let auth = header_str(headers, h::AUTHORIZATION).ok_or_else(|| {
        unauthorized(
            "The Authorization header is missing; send `Authorization: Bearer <access token>`",
        )
    })?;
    let token = auth
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| unauthorized("The Authorization header must be `Bearer <access token>` (the word Bearer is case-sensitive)"))?;
    let claims = verify(state, token)
        .map_err(|e| unauthorized(&format!("The access token is not valid: {e}")))?;
    if claims.sub != principal.client_id() {
        return Err(unauthorized(
            "The access token was not issued to the owner of this subscription key",
        ));
    }
    let now = state.clock.unix();
    if now >= claims.exp {
        return Err(unauthorized(
            "The access token has expired; fetch a new one from /accesstoken/get",
        ));
    }
    if now < claims.nbf {
        return Err(unauthorized("The access token is not valid yet"));
    }
    system_headers(state, meta, headers)?;
    let msn = msn_header(meta, headers)?;
    let forbidden = |detail: String| {
        meta.problem(403, "Forbidden", detail)
            .field(
                h::MERCHANT_SERIAL_NUMBER,
                "must be a sales unit of these API keys",
            )
            .err()
    };
    let msn = match (&principal, msn) {
        (Principal::Merchant(m), None) => Some(m.msn.clone()),
        (Principal::Merchant(m), Some(sent)) => {
            if sent != m.msn {
                return Err(forbidden(format!(
                    "Merchant-Serial-Number {sent} does not belong to these API keys"
                )));
            }
            Some(sent)
        }
        (Principal::Partner(p), Some(sent)) => {
            if !p.msns.contains(&sent) {
                return Err(forbidden(format!(
                    "Invalid MSN: {sent} is not a sales unit of this partner"
                )));
            }
            Some(sent)
        }
        (Principal::Partner(_), None) if msn_required => {
            return Err(meta
                .problem(
                    403,
                    "Forbidden",
                    "Partner keys must send the Merchant-Serial-Number header",
                )
                .field(h::MERCHANT_SERIAL_NUMBER, "required with partner keys")
                .err());
        }
        (Principal::Partner(_), None) => None,
    };
    Ok(AuthCtx { principal, msn })
}
