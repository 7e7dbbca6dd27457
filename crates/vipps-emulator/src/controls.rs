//! The platform's test controls under `/_emulator/` (turned off with `--no-controls`): health, the clock, fault
//! injection, the request record, the delivery record, the request servers and how to reach the emulator
//! (`/_emulator/env`, what `vipps env` prints). Products add their own (acting as the user, landing pages)
//! through [`crate::platform::product::Product::controls`]. The local certificate authority's certificate
//! (`/_emulator/tls/ca.pem`) is served even without the controls: it is public, and clients need it.

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde::Deserialize;

use crate::platform::Shared as S;
use crate::platform::extract::{JsonBody, OptionalJson};
use crate::platform::faults::FaultSpec;
use crate::platform::http::{ApiResult, RequestMeta};
use crate::platform::idempotency::{internal, run_write};
use crate::platform::reqlog::RequestFilter;
use crate::platform::store::Op;

/// The control routes.
pub(crate) fn routes() -> Router<S> {
    Router::new()
        .route("/_emulator/health", get(health))
        .route("/_emulator/clock", get(clock))
        .route("/_emulator/clock/advance", post(advance))
        .route(
            "/_emulator/faults",
            post(add_fault).get(list_faults).delete(clear_faults),
        )
        .route("/_emulator/requests", get(requests))
        .route("/_emulator/deliveries", get(deliveries))
        .route("/_emulator/request-servers", get(request_servers))
        .route("/_emulator/request-servers/rotate", post(rotate))
        .route("/_emulator/request-servers/failover", post(failover))
        .route("/_emulator/env", get(env))
}

/// `GET /_emulator/tls/ca.pem`: the local certificate authority's certificate, for clients to trust.
pub(crate) async fn ca_pem(State(s): State<S>, meta: RequestMeta) -> ApiResult {
    match &s.edge.ca_pem {
        Some(pem) => Ok((
            [(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/x-pem-file"),
            )],
            pem.to_string(),
        )
            .into_response()),
        None => Err(meta
            .problem(
                404,
                "Not Found",
                "TLS is off, so there is no certificate authority: start the emulator with --tls-listen or \
                 --proxy-listen",
            )
            .err()),
    }
}

/// `GET /_emulator/env`: what a client needs to reach this emulator (listeners, the certificate authority, the
/// demo merchant's well-known test credentials); `vipps env` turns it into shell exports.
async fn env(State(s): State<S>) -> impl IntoResponse {
    let ca_url = s.base_url.join("_emulator/tls/ca.pem").ok();
    let tls = s.edge.tls_addr.map(|a| {
        serde_json::json!({
            "listen": a,
            "hosts": vipps_types::env::API_HOSTS,
            "ca_pem_url": ca_url,
            "ca_file": s.edge.ca_file,
        })
    });
    let proxy = s.edge.proxy_addr.map(|a| {
        serde_json::json!({
            "listen": a,
            "hosts": vipps_types::env::API_HOSTS,
            "ca_pem_url": ca_url,
            "ca_file": s.edge.ca_file,
        })
    });
    let dns = s.dns_addr.map(|a| {
        serde_json::json!({
            "listen": a,
            "api_hosts_address": s.edge.dns_api_address,
        })
    });
    // Only the demo merchant's credentials, which are public test values; a configured merchant's never.
    let demo = s.demo_merchant().map(|m| {
        serde_json::json!({
            "msn": m.msn.as_str(),
            "client_id": m.client_id,
            "client_secret": m.client_secret,
            "subscription_key": m.subscription_key,
            "environment": m.environment,
        })
    });
    axum::Json(serde_json::json!({
        "base_url": s.base_url.as_str(),
        "tls": tls,
        "proxy": proxy,
        "dns": dns,
        "demo_merchant": demo,
    }))
}

async fn health(State(s): State<S>, meta: RequestMeta) -> ApiResult {
    let counts = s.store.counts().await.map_err(|e| internal(&meta, &e))?;
    let mut body = serde_json::json!({
        "status": "ok",
        "now": crate::platform::clock::rfc3339(s.clock.now()),
        "idempotency_records": counts.idempotency,
        "webhooks": counts.webhooks,
        "requests_recorded": s.requests.len(),
    });
    // Every product's kinds are listed, with 0 until the first one exists.
    for p in s.products.iter() {
        for (_, label) in p.kinds() {
            body[*label] = 0.into();
        }
    }
    for (kind, n) in counts.aggregates {
        let label = s.products.label(&kind).unwrap_or(&kind).to_owned();
        body[label] = n.into();
    }
    Ok(axum::Json(body).into_response())
}

fn clock_body(s: &S) -> serde_json::Value {
    serde_json::json!({
        "now": crate::platform::clock::rfc3339(s.clock.now()),
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

async fn advance(
    State(s): State<S>,
    meta: RequestMeta,
    JsonBody(a): JsonBody<Advance>,
) -> ApiResult {
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
        let r = run_write(&s, &meta, Op::AdvanceClock { ms }).await?;
        let body = axum::body::to_bytes(r.into_body(), 4096)
            .await
            .map_err(|e| internal(&meta, &e))?;
        let offset = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["offset_ms"].as_i64())
            .ok_or_else(|| internal(&meta, &"no clock offset in the answer"))?;
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
    crate::platform::jobs::sweep_once(&s).await;
    crate::platform::jobs::rotate_if_due(&s).await;
    s.outbox.notify_one();
    Ok(axum::Json(clock_body(&s)).into_response())
}

async fn add_fault(
    State(s): State<S>,
    meta: RequestMeta,
    JsonBody(spec): JsonBody<FaultSpec>,
) -> ApiResult {
    let added = match s.store.faults() {
        Some(shared) => match crate::platform::faults::Faults::validate(spec) {
            Ok(rule) => Ok(shared.add(rule).await.map_err(|e| internal(&meta, &e))?),
            Err(e) => Err(e),
        },
        None => s.faults.add(spec),
    };
    match added {
        Ok(rule) => Ok((http::StatusCode::CREATED, axum::Json(rule)).into_response()),
        Err(crate::platform::faults::FaultError::Invalid { field, reason }) => Err(meta
            .problem(400, "Bad Request", format!("Invalid `{field}`: {reason}"))
            .field(field, reason)
            .err()),
    }
}

async fn list_faults(State(s): State<S>, meta: RequestMeta) -> ApiResult {
    match s.store.faults() {
        Some(shared) => match shared.list().await {
            Ok(rules) => Ok(axum::Json(rules).into_response()),
            Err(e) => Err(internal(&meta, &e)),
        },
        None => Ok(axum::Json(s.faults.list()).into_response()),
    }
}

async fn clear_faults(State(s): State<S>, meta: RequestMeta) -> ApiResult {
    match s.store.faults() {
        Some(shared) => shared.clear().await.map_err(|e| internal(&meta, &e))?,
        None => s.faults.clear(),
    }
    Ok(http::StatusCode::NO_CONTENT.into_response())
}

async fn requests(State(s): State<S>, meta: RequestMeta, RawQuery(q): RawQuery) -> ApiResult {
    let q = q.as_deref().unwrap_or("");
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

async fn deliveries(State(s): State<S>, meta: RequestMeta, RawQuery(q): RawQuery) -> ApiResult {
    let q = q.as_deref().unwrap_or("");
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
    let f: crate::platform::store::AttemptFilter =
        serde_json::from_value(serde_json::Value::Object(map)).map_err(|e| {
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

async fn rotate(
    State(s): State<S>,
    meta: RequestMeta,
    OptionalJson(body): OptionalJson<RotateBody>,
) -> ApiResult {
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
    crate::platform::jobs::request_servers_changed(&s).await;
    Ok(axum::Json(servers_view(&s)).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FailoverBody {
    /// `disaster-recovery` or `production`; without it, the serving pool toggles.
    to: Option<String>,
}

async fn failover(
    State(s): State<S>,
    meta: RequestMeta,
    OptionalJson(body): OptionalJson<FailoverBody>,
) -> ApiResult {
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
    crate::platform::jobs::request_servers_changed(&s).await;
    Ok(axum::Json(servers_view(&s)).into_response())
}
