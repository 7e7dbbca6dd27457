//! Test controls under `/_emulator/` (turned off with `--no-controls`): the clock, acting as the user, fault
//! injection, the request record, and a landing page.

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::response::{Html, IntoResponse, Redirect};
use axum::routing::{get, post};
use serde::Deserialize;

use super::{S, internal, meta_of, path_reference, run_write};
use crate::api::epayment::load_settled;
use crate::faults::FaultSpec;
use crate::http::{ApiError, ApiResult, RequestMeta, parse_json, parse_optional_json, read_body};
use crate::reqlog::RequestFilter;
use crate::store::Op;

/// The control routes.
pub fn routes() -> Router<S> {
    Router::new()
        .route("/_emulator/health", get(health))
        .route("/_emulator/clock", get(clock))
        .route("/_emulator/clock/advance", post(advance))
        .route(
            "/_emulator/faults",
            post(add_fault).get(list_faults).delete(clear_faults),
        )
        .route("/_emulator/requests", get(requests))
        .route("/_emulator/payments/{reference}", get(payment))
        .route(
            "/_emulator/payments/{reference}/approve",
            post(user_approve),
        )
        .route("/_emulator/payments/{reference}/reject", post(user_reject))
        .route("/_emulator/landing", get(landing).post(landing_action))
        .route("/_emulator/qr", get(qr))
        .route("/_emulator/deliveries", get(deliveries))
        .route("/_emulator/request-servers", get(request_servers))
        .route("/_emulator/request-servers/rotate", post(rotate))
        .route("/_emulator/request-servers/failover", post(failover))
}

async fn health(State(s): State<S>, req: Request) -> ApiResult {
    let meta = meta_of(&req);
    let (payments, idempotency, webhooks) =
        s.store.counts().await.map_err(|e| internal(&meta, &e))?;
    Ok(axum::Json(serde_json::json!({
        "status": "ok",
        "now": crate::clock::rfc3339(s.clock.now()),
        "payments": payments,
        "idempotency_records": idempotency,
        "webhooks": webhooks,
        "requests_recorded": s.requests.len(),
    }))
    .into_response())
}

fn clock_body(s: &S) -> serde_json::Value {
    serde_json::json!({
        "now": crate::clock::rfc3339(s.clock.now()),
        "offset_seconds": s.clock.offset_ms() as f64 / 1000.0,
    })
}

async fn clock(State(s): State<S>) -> impl IntoResponse {
    axum::Json(clock_body(&s))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Advance {
    seconds: f64,
}

async fn advance(State(s): State<S>, req: Request) -> ApiResult {
    let meta = meta_of(&req);
    let bytes = read_body(&meta, req.into_body(), 4096).await?;
    let a: Advance = parse_json(&meta, &bytes)?;
    if !a.seconds.is_finite() || a.seconds < 0.0 || a.seconds > 10.0 * 365.0 * 86_400.0 {
        return Err(meta
            .problem(
                400,
                "Bad Request",
                "seconds must be between 0 and 10 years; time never moves backwards",
            )
            .field("seconds", "0 to 315360000")
            .err());
    }
    let ms = (a.seconds * 1000.0).round() as i64;
    if s.store.shared() {
        // The clock is shared: move it in the database, atomically, and take the result.
        let r = crate::api::run_write(&s, &meta, Op::AdvanceClock { ms }).await?;
        let body = axum::body::to_bytes(r.into_body(), 4096)
            .await
            .map_err(|e| crate::api::internal(&meta, &e))?;
        let offset = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["offset_ms"].as_i64())
            .ok_or_else(|| crate::api::internal(&meta, &"no clock offset in the answer"))?;
        s.clock.set_offset_ms(offset);
    } else {
        let offset = s.clock.advance_ms(ms);
        run_write(
            &s,
            &meta,
            Op::SetMeta {
                key: "clock_offset_ms".into(),
                value: offset.to_string(),
            },
        )
        .await?;
    }
    s.sweep.notify_one();
    // Persist what the jump made due right away, so reads and webhooks see it at once.
    crate::server::sweep_once(&s).await;
    crate::server::rotate_if_due(&s).await;
    s.outbox.notify_one();
    Ok(axum::Json(clock_body(&s)).into_response())
}

async fn add_fault(State(s): State<S>, req: Request) -> ApiResult {
    let meta = meta_of(&req);
    let bytes = read_body(&meta, req.into_body(), 16 * 1024).await?;
    let spec: FaultSpec = parse_json(&meta, &bytes)?;
    let added = match s.store.faults() {
        Some(shared) => match crate::faults::Faults::validate(spec) {
            Ok(rule) => Ok(shared
                .add(rule)
                .await
                .map_err(|e| crate::api::internal(&meta, &e))?),
            Err(e) => Err(e),
        },
        None => s.faults.add(spec),
    };
    match added {
        Ok(rule) => Ok((http::StatusCode::CREATED, axum::Json(rule)).into_response()),
        Err(crate::faults::FaultError::Invalid { field, reason }) => Err(meta
            .problem(400, "Bad Request", format!("Invalid `{field}`: {reason}"))
            .field(field, reason)
            .err()),
    }
}

async fn list_faults(State(s): State<S>, req: Request) -> ApiResult {
    match s.store.faults() {
        Some(shared) => match shared.list().await {
            Ok(rules) => Ok(axum::Json(rules).into_response()),
            Err(e) => Err(crate::api::internal(&meta_of(&req), &e)),
        },
        None => Ok(axum::Json(s.faults.list()).into_response()),
    }
}

async fn clear_faults(State(s): State<S>, req: Request) -> ApiResult {
    match s.store.faults() {
        Some(shared) => shared
            .clear()
            .await
            .map_err(|e| crate::api::internal(&meta_of(&req), &e))?,
        None => s.faults.clear(),
    }
    Ok(http::StatusCode::NO_CONTENT.into_response())
}

async fn requests(State(s): State<S>, req: Request) -> ApiResult {
    let meta = meta_of(&req);
    let q = req.uri().query().unwrap_or("");
    let f: RequestFilter = serde_urlencoded_lite(q).map_err(|e| {
        meta.problem(400, "Bad Request", format!("Invalid query: {e}"))
            .field("query", e)
            .err()
    })?;
    Ok(axum::Json(s.requests.query(&f)).into_response())
}

/// Parses a query string into the filter with the same JSON-style errors as bodies.
fn serde_urlencoded_lite(q: &str) -> Result<RequestFilter, String> {
    let mut map = serde_json::Map::new();
    for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
        let val = match k.as_ref() {
            "status" | "limit" => serde_json::Value::from(
                v.parse::<u64>()
                    .map_err(|_| format!("`{k}` must be a non-negative integer"))?,
            ),
            _ => serde_json::Value::from(v.into_owned()),
        };
        map.insert(k.into_owned(), val);
    }
    serde_json::from_value(serde_json::Value::Object(map)).map_err(|e| e.to_string())
}

#[derive(Deserialize, Default)]
struct MsnQuery {
    msn: Option<String>,
}

/// Finds the MSN of a reference: the one given, or the only configured sales unit that has it.
async fn resolve_msn(
    s: &S,
    meta: &RequestMeta,
    reference: &str,
    msn: Option<String>,
) -> Result<String, ApiError> {
    if let Some(m) = msn {
        return Ok(m);
    }
    let mut found = Vec::new();
    for m in s.msns.keys() {
        if s.store
            .payment(m, reference)
            .await
            .map_err(|e| internal(meta, &e))?
            .is_some()
        {
            found.push(m.clone());
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(meta
            .problem(
                404,
                "Payment not found",
                format!("No payment with reference `{reference}` exists"),
            )
            .err()),
        _ => Err(meta
            .problem(
                400,
                "Bad Request",
                format!("Reference `{reference}` exists for several sales units; add ?msn="),
            )
            .field("msn", "required when the reference is ambiguous")
            .err()),
    }
}

async fn payment(
    State(s): State<S>,
    Path(reference): Path<String>,
    Query(q): Query<MsnQuery>,
    req: Request,
) -> ApiResult {
    let meta = meta_of(&req);
    let reference = path_reference(&s, &meta, &reference)?;
    let msn = resolve_msn(&s, &meta, &reference, q.msn).await?;
    let p = load_settled(&s, &meta, &msn, &reference).await?;
    Ok(axum::Json(serde_json::json!({
        "msn": msn,
        "payment": crate::render::payment(&p),
        "events": crate::render::events(&p),
        "expiresAt": crate::clock::rfc3339(time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(p.expires_ms) * 1_000_000).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)),
    }))
    .into_response())
}

async fn user_approve(
    State(s): State<S>,
    Path(reference): Path<String>,
    Query(q): Query<MsnQuery>,
    req: Request,
) -> ApiResult {
    let meta = meta_of(&req);
    let reference = path_reference(&s, &meta, &reference)?;
    let msn = resolve_msn(&s, &meta, &reference, q.msn).await?;
    run_write(&s, &meta, Op::UserApprove { msn, reference }).await
}

async fn user_reject(
    State(s): State<S>,
    Path(reference): Path<String>,
    Query(q): Query<MsnQuery>,
    req: Request,
) -> ApiResult {
    let meta = meta_of(&req);
    let reference = path_reference(&s, &meta, &reference)?;
    let msn = resolve_msn(&s, &meta, &reference, q.msn).await?;
    run_write(&s, &meta, Op::UserReject { msn, reference }).await
}

#[derive(Deserialize)]
struct LandingQuery {
    msn: String,
    reference: String,
    token: String,
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn landing_payment(
    s: &S,
    meta: &RequestMeta,
    q: &LandingQuery,
) -> Result<std::sync::Arc<crate::domain::Payment>, ApiError> {
    let reference = path_reference(s, meta, &q.reference)?;
    let p = load_settled(s, meta, &q.msn, &reference).await?;
    if p.token != q.token {
        return Err(meta
            .problem(
                403,
                "Forbidden",
                "The token does not belong to this payment",
            )
            .field("token", "mismatch")
            .err());
    }
    Ok(p)
}

async fn landing(State(s): State<S>, Query(q): Query<LandingQuery>, req: Request) -> ApiResult {
    let meta = meta_of(&req);
    let p = landing_payment(&s, &meta, &q).await?;
    let amount = format!("{}.{:02} {}", p.amount / 100, p.amount % 100, p.currency);
    let page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Vipps emulator: approve payment</title></head><body>\
         <h1>Payment {reference}</h1><p>Merchant {msn} asks for <strong>{amount}</strong>.</p><p>State: {state}</p>\
         <form method=\"post\"><input type=\"hidden\" name=\"msn\" value=\"{msn}\"><input type=\"hidden\" name=\"reference\" value=\"{reference}\">\
         <input type=\"hidden\" name=\"token\" value=\"{token}\"><button name=\"action\" value=\"approve\">Approve</button> \
         <button name=\"action\" value=\"reject\">Reject</button></form></body></html>",
        reference = escape(&p.reference),
        msn = escape(&p.msn),
        amount = escape(&amount),
        state = p.state.as_str(),
        token = escape(&p.token),
    );
    Ok(Html(page).into_response())
}

async fn landing_action(State(s): State<S>, req: Request) -> ApiResult {
    let meta = meta_of(&req);
    let bytes = read_body(&meta, req.into_body(), 4096).await?;
    let mut fields = std::collections::HashMap::new();
    for (k, v) in url::form_urlencoded::parse(&bytes) {
        fields.insert(k.into_owned(), v.into_owned());
    }
    let get = |k: &str| fields.get(k).cloned().unwrap_or_default();
    let q = LandingQuery {
        msn: get("msn"),
        reference: get("reference"),
        token: get("token"),
    };
    let p = landing_payment(&s, &meta, &q).await?;
    let op = match get("action").as_str() {
        "approve" => Op::UserApprove {
            msn: p.msn.clone(),
            reference: p.reference.clone(),
        },
        "reject" => Op::UserReject {
            msn: p.msn.clone(),
            reference: p.reference.clone(),
        },
        _ => {
            return Err(meta
                .problem(400, "Bad Request", "action must be approve or reject")
                .field("action", "approve | reject")
                .err());
        }
    };
    let resp = run_write(&s, &meta, op).await?;
    if !resp.status().is_success() {
        return Ok(resp);
    }
    let mut back = s
        .base_url
        .join("_emulator/landing")
        .map_err(|e| internal(&meta, &e))?;
    back.query_pairs_mut()
        .append_pair("msn", &q.msn)
        .append_pair("reference", &q.reference)
        .append_pair("token", &q.token);
    Ok(Redirect::to(back.as_str()).into_response())
}

async fn qr(State(s): State<S>, Query(q): Query<LandingQuery>, req: Request) -> ApiResult {
    let meta = meta_of(&req);
    let p = landing_payment(&s, &meta, &q).await?;
    let mut target = s
        .base_url
        .join("_emulator/landing")
        .map_err(|e| internal(&meta, &e))?;
    target
        .query_pairs_mut()
        .append_pair("msn", &p.msn)
        .append_pair("reference", &p.reference)
        .append_pair("token", &p.token);
    Ok((
        [(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        target.to_string(),
    )
        .into_response())
}

async fn deliveries(State(s): State<S>, req: Request) -> ApiResult {
    let meta = meta_of(&req);
    let q = req.uri().query().unwrap_or("");
    let mut map = serde_json::Map::new();
    for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
        let val = if k == "limit" {
            serde_json::Value::from(v.parse::<u64>().map_err(|_| {
                meta.problem(400, "Bad Request", "`limit` must be a non-negative integer")
                    .field("limit", "integer")
                    .err()
            })?)
        } else {
            serde_json::Value::from(v.into_owned())
        };
        map.insert(k.into_owned(), val);
    }
    let f: crate::store::AttemptFilter = serde_json::from_value(serde_json::Value::Object(map))
        .map_err(|e| {
            meta.problem(400, "Bad Request", format!("Invalid query: {e}"))
                .field("query", e.to_string())
                .err()
        })?;
    let attempts = s
        .store
        .attempts(&f)
        .await
        .map_err(|e| internal(&meta, &e))?;
    Ok(axum::Json(attempts).into_response())
}

fn servers_view(s: &S) -> serde_json::Value {
    let mut v = s
        .request_servers
        .read()
        .view(s.config.rotation_period.as_millis() as i64);
    v["dns"] =
        serde_json::json!({ "listen": s.dns_addr.map(|a| a.to_string()), "ttl": s.config.dns_ttl });
    v
}

async fn request_servers(State(s): State<S>) -> impl IntoResponse {
    axum::Json(servers_view(&s))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    /// `test`, `production`, `disaster-recovery` or `all` (default `all`).
    pool: Option<String>,
}

async fn rotate(State(s): State<S>, req: Request) -> ApiResult {
    let meta = meta_of(&req);
    let bytes = read_body(&meta, req.into_body(), 4096).await?;
    let body: RotateBody = parse_optional_json(&meta, &bytes)?;
    use vipps_types::servers::Pool;
    let pools: Vec<Pool> = match body.pool.as_deref().unwrap_or("all") {
        "all" => Pool::ALL.to_vec(),
        "test" => vec![Pool::Test],
        "production" => vec![Pool::Production],
        "disaster-recovery" => vec![Pool::DisasterRecovery],
        other => {
            return Err(meta
                .problem(400, "Bad Request", format!("Unknown pool `{other}`"))
                .field("pool", "test, production, disaster-recovery or all")
                .err());
        }
    };
    {
        let mut rs = s.request_servers.write();
        for p in pools {
            rs.rotate(p);
        }
    }
    crate::server::request_servers_changed(&s).await;
    Ok(axum::Json(servers_view(&s)).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FailoverBody {
    /// `disaster-recovery` or `production`; without it, the serving pool toggles.
    to: Option<String>,
}

async fn failover(State(s): State<S>, req: Request) -> ApiResult {
    let meta = meta_of(&req);
    let bytes = read_body(&meta, req.into_body(), 4096).await?;
    let body: FailoverBody = parse_optional_json(&meta, &bytes)?;
    {
        let mut rs = s.request_servers.write();
        let on = match body.to.as_deref() {
            None => !rs.failover,
            Some("disaster-recovery") => true,
            Some("production") => false,
            Some(other) => {
                return Err(meta
                    .problem(400, "Bad Request", format!("Unknown target `{other}`"))
                    .field("to", "disaster-recovery or production")
                    .err());
            }
        };
        rs.set_failover(on);
    }
    crate::server::request_servers_changed(&s).await;
    Ok(axum::Json(servers_view(&s)).into_response())
}
