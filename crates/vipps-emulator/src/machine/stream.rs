//! `GET /_emulator/events` (server-sent events of state changes and delivery attempts) and `GET /_emulator/wait`
//! (answers when an aggregate reaches a state), over the platform's event stream ([`crate::platform::events`]).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use tokio::sync::broadcast::error::RecvError;

use super::query;
use crate::platform::Shared as S;
use crate::platform::events::{EventFilter, current_state};
use crate::platform::http::{ApiResult, RequestMeta};
use crate::platform::idempotency::internal;
use crate::platform::openapi::{JsonObject, ProblemDoc};

/// `GET /_emulator/events?msn=&reference=&kind=&type=`: one SSE event per published event, named by its type
/// (`state`, `delivery`), with its number as the SSE id and its JSON as data. A subscriber that fell behind gets
/// a `lagged` event with the number it missed.
#[utoipa::path(
    get,
    path = "/_emulator/events",
    tag = "machine",
    params(
        ("msn" = Option<String>, Query, description = "Only this sales unit"),
        ("reference" = Option<String>, Query, description = "Only this aggregate id (a payment reference, agreement or charge id), state changes and deliveries alike"),
        ("kind" = Option<String>, Query, description = "Only this kind (`epayment.payment`, `webhook.delivery`...)"),
        ("type" = Option<String>, Query, description = "`state` or `delivery`"),
    ),
    responses(
        (status = 200, description = "Server-sent events: `state`, `delivery` and `lagged`, each with its JSON as data",
            content_type = "text/event-stream", body = String),
        (status = 400, description = "An unknown filter or event type", content_type = "application/problem+json",
            body = ProblemDoc),
    ),
)]
pub(super) async fn events(
    State(s): State<S>,
    meta: RequestMeta,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let filter: EventFilter = query(&meta, q.as_deref(), &[])?;
    if let Some(t) = &filter.event_type {
        if t != "state" && t != "delivery" {
            return Err(meta
                .problem(400, "Bad Request", format!("Unknown event type `{t}`"))
                .field("type", "state or delivery")
                .err());
        }
    }
    // Subscribed before the answer starts, so nothing published after the client sees the headers is missed.
    let rx = s.events.subscribe();
    drop(s);
    let opening = futures::stream::once(async {
        Ok::<_, Infallible>(Event::default().comment("subscribed"))
    });
    let stream = futures::stream::unfold((rx, filter), |(mut rx, filter)| async move {
        loop {
            match rx.recv().await {
                Ok(ev) if filter.matches(&ev) => {
                    let data = serde_json::to_string(&*ev).unwrap_or_default();
                    let e = Event::default()
                        .event(ev.event_type.as_str())
                        .id(ev.seq.to_string())
                        .data(data);
                    return Some((Ok(e), (rx, filter)));
                }
                Ok(_) => {}
                Err(RecvError::Lagged(n)) => {
                    let e = Event::default()
                        .event("lagged")
                        .data(serde_json::json!({ "missed": n }).to_string());
                    return Some((Ok(e), (rx, filter)));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    });
    use futures::StreamExt as _;
    Ok(Sse::new(opening.chain(stream))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// The query of `GET /_emulator/wait`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct WaitQuery {
    reference: Option<String>,
    state: Option<String>,
    msn: Option<String>,
    kind: Option<String>,
    timeout: Option<f64>,
}

/// The longest wait (seconds).
const MAX_WAIT_S: f64 = 600.0;
/// The wait without `timeout` (seconds).
const DEFAULT_WAIT_S: f64 = 30.0;
/// How often a wait reads the store as well (changes made by another instance on a shared store).
const RECHECK: Duration = Duration::from_millis(250);

/// `GET /_emulator/wait?reference=&state=&timeout=&msn=&kind=`: answers `200` with the aggregate (`kind`, `id`,
/// `msn`, `state`) as soon as it is in one of the states (comma-separated), or `408` problem+json after `timeout`
/// seconds of wall-clock time (default 30, at most 600).
#[utoipa::path(
    get,
    path = "/_emulator/wait",
    tag = "machine",
    params(
        ("reference" = String, Query, description = "The aggregate id"),
        ("state" = String, Query, description = "The state or states (comma-separated) to wait for"),
        ("timeout" = Option<f64>, Query, description = "Seconds of wall-clock time (default 30, at most 600)"),
        ("msn" = Option<String>, Query, description = "Only this sales unit"),
        ("kind" = Option<String>, Query, description = "Only this kind"),
    ),
    responses(
        (status = 200, description = "The aggregate is in one of the states: `kind`, `id`, `msn`, `state`", body = JsonObject),
        (status = 400, description = "A missing or invalid parameter", content_type = "application/problem+json",
            body = ProblemDoc),
        (status = 408, description = "Not reached in time; names the state it is in", content_type = "application/problem+json",
            body = ProblemDoc),
    ),
)]
pub(super) async fn wait(
    State(s): State<S>,
    meta: RequestMeta,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let w: WaitQuery = query(&meta, q.as_deref(), &["timeout"])?;
    let Some(reference) = w.reference.filter(|r| !r.is_empty()) else {
        return Err(meta
            .problem(400, "Bad Request", "`reference` is required")
            .field(
                "reference",
                "required: the aggregate id (a payment reference)",
            )
            .err());
    };
    let Some(wanted) = w.state.filter(|r| !r.is_empty()) else {
        return Err(meta
            .problem(400, "Bad Request", "`state` is required")
            .field(
                "state",
                "required: one or more state labels, comma-separated",
            )
            .err());
    };
    let wanted: Vec<String> = wanted.split(',').map(|x| x.trim().to_owned()).collect();
    let known: Vec<&'static str> = s
        .products
        .iter()
        .flat_map(|p| {
            p.kinds()
                .iter()
                .flat_map(|(k, _)| p.states(k).iter().copied())
        })
        .collect();
    if let Some(bad) = wanted.iter().find(|w| !known.contains(&w.as_str())) {
        return Err(meta
            .problem(400, "Bad Request", format!("Unknown state `{bad}`"))
            .field("state", format!("one of {}", known.join(", ")))
            .err());
    }
    if let Some(k) = &w.kind {
        if s.products.listed_kinds().all(|(lk, _)| lk != k) {
            return Err(meta
                .problem(400, "Bad Request", format!("Unknown kind `{k}`"))
                .field("kind", "an aggregate kind the dashboard lists")
                .err());
        }
    }
    let timeout = w.timeout.unwrap_or(DEFAULT_WAIT_S);
    if !timeout.is_finite() || !(0.0..=MAX_WAIT_S).contains(&timeout) {
        return Err(meta
            .problem(
                400,
                "Bad Request",
                "`timeout` must be between 0 and 600 seconds",
            )
            .field("timeout", "0 to 600 (seconds)")
            .err());
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(timeout);
    // Subscribed before the first read, so a change between the read and the wait is not missed.
    let mut rx = s.events.subscribe();
    let (msn, kind) = (w.msn.as_deref(), w.kind.as_deref());
    let mut last: Option<(String, String, String)> = None;
    loop {
        let now = current_state(&s, &reference, msn, kind)
            .await
            .map_err(|e| internal(&meta, &e))?;
        if let Some((k, tenant, state)) = &now {
            if wanted.contains(state) {
                return Ok(axum::Json(serde_json::json!({
                    "kind": k, "id": reference, "msn": tenant, "state": state,
                }))
                .into_response());
            }
        }
        last = now.or(last);
        // Until an event about it arrives, the recheck interval passes, or the time is up.
        let woke =
            tokio::time::timeout_at(deadline.min(tokio::time::Instant::now() + RECHECK), async {
                loop {
                    match rx.recv().await {
                        Ok(ev) if ev.reference == reference => return,
                        Ok(_) => {}
                        Err(RecvError::Lagged(_)) => return,
                        Err(RecvError::Closed) => std::future::pending::<()>().await,
                    }
                }
            })
            .await;
        if woke.is_err() && tokio::time::Instant::now() >= deadline {
            let detail = match &last {
                Some((k, _, st)) => format!(
                    "`{reference}` ({k}) is {st}, not {}, after {timeout} s",
                    wanted.join(" or ")
                ),
                None => format!("No aggregate `{reference}` exists after {timeout} s"),
            };
            let mut p = meta
                .problem(408, "Request Timeout", detail)
                .field("state", format!("not reached: {}", wanted.join(", ")));
            if let Some((_, _, st)) = &last {
                p = p.field("current_state", st.clone());
            }
            return Err(p.err());
        }
    }
}
