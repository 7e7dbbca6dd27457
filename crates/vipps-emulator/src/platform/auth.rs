//! Access tokens (signed JWTs with `exp` and `nbf`) and the authentication of every API call.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation as JwtValidation};
use serde::{Deserialize, Serialize};
use vipps_types::headers::{self as h, MerchantSerialNumber, SystemHeader, SystemValue};
use vipps_types::problem::GatewayError;

use std::collections::HashMap;
use std::sync::Arc;

use super::http::{ApiError, RequestMeta, gateway_401, header_str};
use super::ids::IdGen;
use crate::config::{Config, MerchantConfig, MerchantEnvironment, PartnerConfig, Validation};

/// Who a set of API keys belongs to.
#[derive(Debug, Clone)]
pub(crate) enum Principal {
    /// A sales unit's own keys.
    Merchant(Arc<MerchantConfig>),
    /// A partner acting for several sales units.
    Partner(Arc<PartnerConfig>),
}

impl Principal {
    /// The client id.
    pub(crate) fn client_id(&self) -> &str {
        match self {
            Principal::Merchant(m) => &m.client_id,
            Principal::Partner(p) => &p.client_id,
        }
    }
    /// The client secret.
    pub(crate) fn client_secret(&self) -> &str {
        match self {
            Principal::Merchant(m) => &m.client_secret,
            Principal::Partner(p) => &p.client_secret,
        }
    }
    /// Test or production.
    pub(crate) fn environment(&self) -> MerchantEnvironment {
        match self {
            Principal::Merchant(m) => m.environment,
            Principal::Partner(p) => p.environment,
        }
    }
    /// A stable identity for scoping (`merchant:<client_id>` or `partner:<client_id>`).
    pub(crate) fn scope_id(&self) -> String {
        match self {
            Principal::Merchant(m) => format!("merchant:{}", m.client_id),
            Principal::Partner(p) => format!("partner:{}", p.client_id),
        }
    }
}

/// API keys, principals and access tokens: everything authentication needs, and nothing else.
pub(crate) struct Authenticator {
    /// The key that signs access tokens (kept in the store so tokens survive a restart).
    jwt_key: Vec<u8>,
    /// Principals by subscription key.
    by_subscription_key: HashMap<String, Principal>,
    /// MSNs that exist, with their environment.
    pub msns: HashMap<String, MerchantEnvironment>,
    /// Strict or lenient `Vipps-System-*` checks.
    validation: Validation,
    /// Tokens whose signature was already verified, with their claims (expiry is still checked on every call).
    verified_tokens: parking_lot::RwLock<HashMap<Box<str>, Arc<Claims>>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("msns", &self.msns)
            .finish_non_exhaustive()
    }
}

/// Claims of an emulator access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Claims {
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
pub(crate) const ISSUER: &str = "vipps-emulator";

/// Signs a token for `principal` valid from `now` for `lifetime_secs`.
impl Authenticator {
    /// From the configured merchants and partners and the stored signing key.
    pub(crate) fn new(config: &Config, jwt_key: Vec<u8>) -> Self {
        let mut by_subscription_key = HashMap::new();
        let mut msns = HashMap::new();
        for m in &config.merchants {
            by_subscription_key.insert(
                m.subscription_key.clone(),
                Principal::Merchant(Arc::new(m.clone())),
            );
            msns.insert(m.msn.as_str().to_owned(), m.environment);
        }
        for p in &config.partners {
            by_subscription_key.insert(
                p.subscription_key.clone(),
                Principal::Partner(Arc::new(p.clone())),
            );
            for m in &p.msns {
                msns.entry(m.as_str().to_owned()).or_insert(p.environment);
            }
        }
        Authenticator {
            jwt_key,
            by_subscription_key,
            msns,
            validation: config.validation,
            verified_tokens: Default::default(),
        }
    }

    /// Mints an access token for a principal.
    pub(crate) fn mint(
        &self,
        ids: &dyn IdGen,
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
            jti: super::ids::uuid_from(ids.bytes16()),
            env: match principal.environment() {
                MerchantEnvironment::Test => "test".into(),
                MerchantEnvironment::Production => "production".into(),
            },
        };
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&self.jwt_key),
        )
        .map_err(|e| e.to_string())
    }

    fn verify(&self, token: &str) -> Result<std::sync::Arc<Claims>, String> {
        if let Some(c) = self.verified_tokens.read().get(token) {
            return Ok(c.clone());
        }
        let mut v = JwtValidation::new(Algorithm::HS256);
        v.validate_exp = false;
        v.validate_nbf = false;
        v.validate_aud = false;
        v.required_spec_claims.clear();
        v.set_issuer(&[ISSUER]);
        let claims =
            jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(&self.jwt_key), &v)
                .map(|d| std::sync::Arc::new(d.claims))
                .map_err(|e| e.to_string())?;
        let mut cache = self.verified_tokens.write();
        if cache.len() >= 4096 {
            cache.clear();
        }
        cache.insert(token.into(), claims.clone());
        Ok(claims)
    }

    /// The principal a subscription key belongs to; 401 with the gateway body otherwise.
    ///
    /// A request addressed to one of the vendor's hostnames (`meta.environment`) is served by that environment's
    /// gateway, which knows only its own subscriptions: a key of the other environment gets the same answer as
    /// an unknown key, as on the real platform.
    pub(crate) fn subscription(
        &self,
        meta: &RequestMeta,
        headers: &http::HeaderMap,
    ) -> Result<Principal, ApiError> {
        let key = header_str(headers, h::SUBSCRIPTION_KEY)
            .ok_or_else(|| gateway_401(GatewayError::MISSING_KEY))?;
        self.by_subscription_key
            .get(key)
            .filter(|p| meta.environment.is_none_or(|e| e == p.environment()))
            .cloned()
            .ok_or_else(|| gateway_401(GatewayError::INVALID_KEY))
    }
}

/// An authenticated call.
#[derive(Debug, Clone)]
pub(crate) struct AuthCtx {
    /// Who.
    pub principal: Principal,
    /// The sales unit acted for (`None` only for a partner without the header, where allowed).
    pub msn: Option<MerchantSerialNumber>,
}

impl AuthCtx {
    /// Test or production.
    pub(crate) fn environment(&self) -> MerchantEnvironment {
        self.principal.environment()
    }
    /// The MSN, which ePayment calls always have.
    pub(crate) fn msn_str(&self) -> &str {
        self.msn.as_ref().map(|m| m.as_str()).unwrap_or("")
    }
    /// The owner of webhook registrations made by this call.
    pub(crate) fn owner(&self) -> String {
        match (&self.principal, &self.msn) {
            (_, Some(m)) => format!("msn:{m}"),
            (p, None) => format!("partner:{}", p.client_id()),
        }
    }
}

/// Checks the `Merchant-Serial-Number` header format: 400 when malformed.
pub(crate) fn msn_header(
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
impl Authenticator {
    /// Checks the `Vipps-System-*` headers (strictly, or only logging in lenient mode).
    pub(crate) fn system_headers(
        &self,
        meta: &RequestMeta,
        headers: &http::HeaderMap,
    ) -> Result<(), ApiError> {
        for sh in SystemHeader::ALL {
            let Some(raw) = headers.get(sh.header_name()) else {
                continue;
            };
            let value = raw.to_str().unwrap_or("\u{fffd}");
            if let Err(e) = SystemValue::validate(sh, value) {
                match self.validation {
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
    pub(crate) fn authenticate(
        &self,
        now: i64,
        meta: &RequestMeta,
        headers: &http::HeaderMap,
        msn_required: bool,
    ) -> Result<AuthCtx, ApiError> {
        let principal = self.subscription(meta, headers)?;
        let unauthorized =
            |detail: &str| meta.problem(401, "Unauthorized", detail.to_owned()).err();
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
        let claims = self
            .verify(token)
            .map_err(|e| unauthorized(&format!("The access token is not valid: {e}")))?;
        if claims.sub != principal.client_id() {
            return Err(unauthorized(
                "The access token was not issued to the owner of this subscription key",
            ));
        }
        if now >= claims.exp {
            return Err(unauthorized(
                "The access token has expired; fetch a new one from /accesstoken/get",
            ));
        }
        if now < claims.nbf {
            return Err(unauthorized("The access token is not valid yet"));
        }
        self.system_headers(meta, headers)?;
        sales_unit(meta, principal, headers, msn_required)
    }

    /// Authenticates a call that sends the API keys themselves instead of an access token (as some
    /// product APIs do):
    /// subscription key, `client_id` and `client_secret` of the same principal, and the MSN, which is required.
    /// Wrong client credentials are a 401 naming the header.
    pub(crate) fn authenticate_client_keys(
        &self,
        meta: &RequestMeta,
        headers: &http::HeaderMap,
    ) -> Result<AuthCtx, ApiError> {
        let principal = self.subscription(meta, headers)?;
        let id = header_str(headers, h::CLIENT_ID);
        let secret = header_str(headers, h::CLIENT_SECRET);
        let (field, detail) = match (id, secret) {
            (None, _) => (h::CLIENT_ID, "The client_id header is missing"),
            (_, None) => (h::CLIENT_SECRET, "The client_secret header is missing"),
            (Some(i), Some(sec)) => {
                if i == principal.client_id()
                    && super::token::subtle_eq::ct_eq(sec, principal.client_secret())
                {
                    self.system_headers(meta, headers)?;
                    return sales_unit(meta, principal, headers, true);
                }
                (
                    h::CLIENT_SECRET,
                    "Invalid client_id or client_secret for this subscription key",
                )
            }
        };
        Err(meta
            .problem(401, "Unauthorized", detail)
            .field(
                field,
                "must be the API keys of the subscription key's owner",
            )
            .err())
    }
}

/// The sales unit a call acts for: the `Merchant-Serial-Number` header, checked against the principal.
fn sales_unit(
    meta: &RequestMeta,
    principal: Principal,
    headers: &http::HeaderMap,
    msn_required: bool,
) -> Result<AuthCtx, ApiError> {
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
