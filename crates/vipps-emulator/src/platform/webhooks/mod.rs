//! The Webhooks API v1 (register, list, delete) and the services behind it that every product shares: the
//! delivery of outbox events (`delivery`), the request servers they leave from (`request_servers`) and the DNS
//! that publishes those servers (`dns`).

pub(crate) mod chaos;
pub(crate) mod delivery;
pub(crate) mod dns;
pub(crate) mod request_servers;

use axum::Router;
use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::routing::{delete, post};
use base64::Engine as _;
use vipps_types::webhooks::{QueryResponse, RegisterRequest, Webhook};

use super::Shared as S;
use super::extract::{Caller, JsonBody};
use super::http::{ApiError, ApiResult, RequestMeta};
use super::idempotency::{internal, run_write};
use super::store::{Op, WebhookRow};

/// The Webhooks API routes.
pub(crate) fn routes() -> Router<S> {
    Router::new()
        .route("/webhooks/v1/webhooks", post(register).get(list))
        .route("/webhooks/v1/webhooks/{id}", delete(delete_webhook))
}

/// Event types the emulator accepts registrations for: every product's, plus the documented types of APIs it
/// does not emulate yet (so registrations that real merchants make succeed).
pub(crate) fn known_event_types(s: &S) -> Vec<String> {
    let mut v = s.products.event_types();
    for e in [
        "recurring.agreement-activated.v1",
        "recurring.agreement-rejected.v1",
        "recurring.agreement-stopped.v1",
        "recurring.agreement-expired.v1",
        "recurring.charge-reserved.v1",
        "recurring.charge-captured.v1",
        "recurring.charge-canceled.v1",
        "recurring.charge-refunded.v1",
        "recurring.charge-failed.v1",
        "recurring.charge-creation-failed.v1",
        "user.checked-in.v1",
    ] {
        if !v.iter().any(|k| k == e) {
            v.push(e.to_owned());
        }
    }
    v
}

fn bad(meta: &RequestMeta, field: &str, reason: impl Into<String>) -> ApiError {
    let reason = reason.into();
    meta.problem(400, "Bad Request", format!("Invalid `{field}`: {reason}"))
        .field(field, reason)
        .err()
}

fn check_url(strict: bool, raw: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(raw).map_err(|e| format!("not a valid absolute URL ({e})"))?;
    match url.scheme() {
        "https" => {}
        "http" if !strict => {}
        "http" => return Err("must use https (strict webhook URLs)".into()),
        other => return Err(format!("the `{other}` scheme is not allowed; use https")),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("must have a host".into());
    }
    if url.fragment().is_some() {
        return Err("must not have a fragment".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials".into());
    }
    if strict {
        let public = match url.host() {
            Some(url::Host::Ipv4(ip)) => {
                !(ip.is_private()
                    || ip.is_loopback()
                    || ip.is_link_local()
                    || ip.is_unspecified()
                    || ip.is_broadcast())
            }
            Some(url::Host::Ipv6(ip)) => {
                !(ip.is_loopback() || ip.is_unspecified() || (ip.segments()[0] & 0xfe00) == 0xfc00)
            }
            Some(url::Host::Domain(d)) => {
                d != "localhost" && !d.ends_with(".localhost") && d.contains('.')
            }
            None => false,
        };
        if !public {
            return Err("must be a public, world-reachable address (strict webhook URLs)".into());
        }
    }
    Ok(url)
}

/// `POST /webhooks/v1/webhooks`.
async fn register(
    State(s): State<S>,
    meta: RequestMeta,
    Caller(auth): Caller,
    JsonBody(r): JsonBody<RegisterRequest>,
) -> ApiResult {
    let url = check_url(s.config.strict_webhook_urls, &r.url).map_err(|e| bad(&meta, "url", e))?;
    if r.events.is_empty() {
        return Err(bad(&meta, "events", "at least one event type is required"));
    }
    let known = known_event_types(&s);
    let mut events: Vec<String> = Vec::new();
    for (i, e) in r.events.iter().enumerate() {
        if !known.contains(e) {
            return Err(bad(
                &meta,
                &format!("events[{i}]"),
                format!("unknown event type `{e}`"),
            ));
        }
        if !events.contains(e) {
            events.push(e.clone());
        }
    }
    let secret = base64::engine::general_purpose::STANDARD
        .encode([s.ids.bytes16(), s.ids.bytes16()].concat());
    let row = WebhookRow {
        id: super::ids::uuid_from(s.ids.bytes16()),
        owner: auth.owner(),
        url: url.to_string(),
        events,
        secret,
        created_ms: s.clock.unix_ms(),
    };
    run_write(
        &s,
        &meta,
        Op::RegisterWebhook {
            row,
            max_per_event: s.config.limits.webhooks_per_event,
        },
    )
    .await
}

/// `GET /webhooks/v1/webhooks` (secrets are never listed).
async fn list(State(s): State<S>, meta: RequestMeta, Caller(auth): Caller) -> ApiResult {
    let rows = s
        .store
        .webhooks(&auth.owner())
        .await
        .map_err(|e| internal(&meta, &e))?;
    let body = QueryResponse {
        webhooks: rows
            .into_iter()
            .map(|w| Webhook {
                id: w.id,
                url: w.url,
                events: w.events,
            })
            .collect(),
    };
    Ok(axum::Json(body).into_response())
}

/// `DELETE /webhooks/v1/webhooks/{id}`.
async fn delete_webhook(
    State(s): State<S>,
    meta: RequestMeta,
    Caller(auth): Caller,
    Path(id): Path<String>,
) -> ApiResult {
    if uuid::Uuid::parse_str(&id).is_err() {
        return Err(bad(&meta, "id", "must be a UUID"));
    }
    run_write(
        &s,
        &meta,
        Op::DeleteWebhook {
            owner: auth.owner(),
            id,
        },
    )
    .await
}
