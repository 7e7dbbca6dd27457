//! Axum extractors for what every API handler needs: the request's facts, the authenticated caller, the
//! `Idempotency-Key` and a JSON body. Each one rejects with the platform's problem+json answer, so a handler's
//! signature says what it requires and its body holds only what the operation does.
//!
//! Extractors run in the order of the handler's arguments, and the body extractor always last: authentication is
//! checked (401) before the body is read, so an unauthenticated caller never gets a body-validation answer.

use std::convert::Infallible;

use axum::extract::{FromRequest, FromRequestParts, Request};
use http::request::Parts;
use serde::de::DeserializeOwned;

use super::Shared;
use super::auth::AuthCtx;
use super::http::{ApiError, RequestMeta, parse_json, parse_optional_json, read_body};
use super::idempotency::idempotency_key;

impl<S: Send + Sync> FromRequestParts<S> for RequestMeta {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(RequestMeta::of(parts))
    }
}

/// A caller authenticated for one sales unit: access token, subscription key and `Merchant-Serial-Number`
/// (ePayment, Recurring and the other merchant APIs).
#[derive(Debug)]
pub(crate) struct Merchant(pub AuthCtx);

impl FromRequestParts<Shared> for Merchant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &Shared) -> Result<Self, Self::Rejection> {
        let meta = RequestMeta::of(parts);
        s.auth
            .authenticate(s.clock.unix(), &meta, &parts.headers, true)
            .map(Merchant)
    }
}

/// A caller authenticated for one sales unit by its API keys in the `client_id` and `client_secret` headers, with
/// the subscription key and `Merchant-Serial-Number`, and no access token (product APIs that take
/// the keys on every call).
#[derive(Debug)]
pub(crate) struct ClientKeys(pub AuthCtx);

impl FromRequestParts<Shared> for ClientKeys {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &Shared) -> Result<Self, Self::Rejection> {
        let meta = RequestMeta::of(parts);
        s.auth
            .authenticate_client_keys(&meta, &parts.headers)
            .map(ClientKeys)
    }
}

/// A caller authenticated by access token and subscription key, for whom `Merchant-Serial-Number` is optional (a
/// partner acting for itself, as the Webhooks API allows).
#[derive(Debug)]
pub(crate) struct Caller(pub AuthCtx);

impl FromRequestParts<Shared> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &Shared) -> Result<Self, Self::Rejection> {
        let meta = RequestMeta::of(parts);
        s.auth
            .authenticate(s.clock.unix(), &meta, &parts.headers, false)
            .map(Caller)
    }
}

/// The `Idempotency-Key` header, required and valid by the ePayment and Webhooks rules.
#[derive(Debug, Clone)]
pub(crate) struct IdemKey(pub String);

impl<S: Send + Sync> FromRequestParts<S> for IdemKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let meta = RequestMeta::of(parts);
        Ok(IdemKey(
            idempotency_key(&meta, &parts.headers, false)?.unwrap_or_default(),
        ))
    }
}

/// The `Idempotency-Key` header where the operation makes it optional; valid when present.
#[derive(Debug, Clone)]
pub(crate) struct OptionalIdemKey(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for OptionalIdemKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let meta = RequestMeta::of(parts);
        idempotency_key(&meta, &parts.headers, true).map(OptionalIdemKey)
    }
}

/// A JSON request body within the configured size limit (413 above it), parsed into `T`; a syntax or shape error
/// is a 400 naming the field.
#[derive(Debug)]
pub(crate) struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Shared> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, s: &Shared) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let meta = RequestMeta::of(&parts);
        let bytes = read_body(&meta, body, s.config.limits.max_body_bytes).await?;
        parse_json(&meta, &bytes).map(JsonBody)
    }
}

/// A JSON request body that may be left out: an empty body gives `T::default()`.
#[derive(Debug)]
pub(crate) struct OptionalJson<T>(pub T);

impl<T: DeserializeOwned + Default> FromRequest<Shared> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, s: &Shared) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let meta = RequestMeta::of(&parts);
        let bytes = read_body(&meta, body, s.config.limits.max_body_bytes).await?;
        parse_optional_json(&meta, &bytes).map(OptionalJson)
    }
}
