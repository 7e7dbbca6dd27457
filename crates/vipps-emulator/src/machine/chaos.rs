//! `/_emulator/webhook-chaos`: add (`POST`), list (`GET`) and remove (`DELETE`) delivery-side chaos rules
//! ([`crate::platform::webhooks::chaos`]).

use axum::extract::State;
use axum::response::IntoResponse;

use crate::platform::Shared as S;
use crate::platform::extract::JsonBody;
use crate::platform::http::{ApiResult, RequestMeta, parse_json};
use crate::platform::openapi::{JsonObject, ProblemDoc};
use crate::platform::webhooks::chaos::ChaosSpec;

/// `POST /_emulator/webhook-chaos`: `201` with the rule (its id and remaining count).
#[utoipa::path(
    post,
    path = "/_emulator/webhook-chaos",
    tag = "machine",
    request_body(content = JsonObject, description = "`action` (`drop`, `duplicate`, `delay` with `ms`, `reorder`, \
        `wrong_signature`, `stale_signature` or `skew_date` with `seconds`), optional `event` (a type or name), `url` \
        (a prefix) and `times` (default 1)"),
    responses(
        (status = 201, description = "The rule, with its id and remaining count", body = JsonObject),
        (status = 400, description = "An invalid rule, naming the field", content_type = "application/problem+json",
            body = ProblemDoc),
    ),
)]
pub(super) async fn add(
    State(s): State<S>,
    meta: RequestMeta,
    JsonBody(raw): JsonBody<serde_json::Value>,
) -> ApiResult {
    // The action first: serde names neither a missing nor an unknown tag of a flattened enum.
    const ACTIONS: [&str; 7] = [
        "drop",
        "duplicate",
        "delay",
        "reorder",
        "wrong_signature",
        "stale_signature",
        "skew_date",
    ];
    let action = raw.get("action").and_then(|a| a.as_str());
    if !action.is_some_and(|a| ACTIONS.contains(&a)) {
        return Err(meta
            .problem(400, "Bad Request", "Invalid `action`")
            .field("action", format!("one of {}", ACTIONS.join(", ")))
            .err());
    }
    // A field of another action would be ignored silently (serde does not refuse unknown fields of a flattened
    // enum): refuse it instead.
    let own: &[&str] = match action {
        Some("delay") => &["ms"],
        Some("stale_signature" | "skew_date") => &["seconds"],
        _ => &[],
    };
    if let Some(obj) = raw.as_object() {
        let known = ["action", "event", "url", "times"];
        if let Some(k) = obj
            .keys()
            .find(|k| !known.contains(&k.as_str()) && !own.contains(&k.as_str()))
        {
            return Err(meta
                .problem(
                    400,
                    "Bad Request",
                    format!("Unknown field `{k}` for this action"),
                )
                .field(k.clone(), "not a field of this action")
                .err());
        }
    }
    let spec: ChaosSpec = parse_json(&meta, raw.to_string().as_bytes())?;
    let known = s.products.event_types();
    match s.chaos.add(spec, &known) {
        Ok(rule) => Ok((http::StatusCode::CREATED, axum::Json(rule)).into_response()),
        Err(e) => Err(meta
            .problem(
                400,
                "Bad Request",
                format!("Invalid `{}`: {}", e.field, e.reason),
            )
            .field(e.field, e.reason)
            .err()),
    }
}

/// `GET /_emulator/webhook-chaos`: the active rules, oldest first.
#[utoipa::path(
    get,
    path = "/_emulator/webhook-chaos",
    tag = "machine",
    responses((status = 200, description = "The active rules, oldest first", body = Vec<JsonObject>)),
)]
pub(super) async fn list(State(s): State<S>) -> impl IntoResponse {
    axum::Json(s.chaos.list())
}

/// `DELETE /_emulator/webhook-chaos`: removes every rule.
#[utoipa::path(
    delete,
    path = "/_emulator/webhook-chaos",
    tag = "machine",
    responses((status = 204, description = "Every rule removed")),
)]
pub(super) async fn clear(State(s): State<S>) -> impl IntoResponse {
    s.chaos.clear();
    http::StatusCode::NO_CONTENT
}
