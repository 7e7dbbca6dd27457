//! The platform's test controls under `/_emulator/` (turned off with `--no-controls`): health, the clock, fault
//! injection, the request record, the delivery record, the request servers and how to reach the emulator
//! (`/_emulator/env`, what `vipps env` prints). Products add their own (acting as the user, landing pages)
//! through [`crate::platform::product::Product::controls`]. The local certificate authority's certificate
//! (`/_emulator/tls/ca.pem`) is served even without the controls: it is public, and clients need it.

use axum::extract::{RawQuery, State};
use axum::response::IntoResponse;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::platform::Shared as S;
use crate::platform::extract::{JsonBody, OptionalJson};
use crate::platform::faults::FaultSpec;
use crate::platform::http::{ApiError, ApiResult, RequestMeta};
use crate::platform::idempotency::{internal, run_write};
use crate::platform::openapi::{self, JsonObject, ProblemDoc};
use crate::platform::reqlog::RequestFilter;
use crate::platform::store::Op;

/// The control routes, each registered with its OpenAPI operation (`#[utoipa::path]` on the handler).
pub(crate) fn routes() -> OpenApiRouter<S> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(clock))
        .routes(routes!(advance))
        .routes(routes!(add_fault, list_faults, clear_faults))
        .routes(routes!(requests))
        .routes(routes!(deliveries))
        .routes(routes!(request_servers))
        .routes(routes!(rotate))
        .routes(routes!(failover))
        .routes(routes!(env))
        .routes(routes!(openapi::openapi_json))
        .routes(routes!(openapi::spec_index))
        .routes(routes!(openapi::spec))
}

/// The emulator clock as `GET /_emulator/clock` shows it.
#[derive(Debug, serde::Serialize, ToSchema)]
pub(crate) struct ClockView {
    /// Emulator time, RFC 3339.
    pub now: String,
    /// How far it is ahead of the base clock, in seconds.
    pub offset_seconds: f64,
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
#[utoipa::path(
    get,
    path = "/_emulator/env",
    tag = "platform",
    responses((status = 200, description = "`base_url`, `tls`, `proxy` and `dns` (each null when off: listen \
        address, API hostnames, the CA certificate's URL and file) and `demo_merchant` (the demo merchant's public \
        test credentials, null when a configured merchant took its place)", body = JsonObject)),
)]
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

#[utoipa::path(
    get,
    path = "/_emulator/health",
    tag = "platform",
    responses((status = 200, description = "Counts, and a count per aggregate kind", body = HealthView)),
)]
async fn health(State(s): State<S>, meta: RequestMeta) -> ApiResult {
    let counts = s.store.counts().await.map_err(|e| internal(&meta, &e))?;
    // Every product's kinds are listed, with 0 until the first one exists.
    let mut aggregates: std::collections::BTreeMap<String, u64> = s
        .products
        .iter()
        .flat_map(|p| p.kinds().iter().map(|(_, label)| ((*label).to_owned(), 0)))
        .collect();
    for (kind, n) in counts.aggregates {
        let label = s.products.label(&kind).unwrap_or(&kind).to_owned();
        aggregates.insert(label, n);
    }
    Ok(axum::Json(HealthView {
        status: "ok",
        now: crate::platform::clock::rfc3339(s.clock.now()),
        idempotency_records: counts.idempotency,
        webhooks: counts.webhooks,
        requests_recorded: s.requests.len(),
        aggregates,
    })
    .into_response())
}

/// What `GET /_emulator/health` answers.
#[derive(Debug, serde::Serialize, ToSchema)]
struct HealthView {
    /// Always `ok`.
    status: &'static str,
    /// Emulator time, RFC 3339.
    now: String,
    /// Stored idempotency answers.
    idempotency_records: u64,
    /// Webhook registrations.
    webhooks: u64,
    /// Requests in the request record.
    requests_recorded: usize,
    /// Stored aggregates per kind, under the kind's name (`payments`, `agreements`, `charges`...).
    #[serde(flatten)]
    aggregates: std::collections::BTreeMap<String, u64>,
}

/// The clock as `GET /_emulator/clock` shows it.
pub(crate) fn clock_body(s: &S) -> serde_json::Value {
    serde_json::to_value(ClockView {
        now: crate::platform::clock::rfc3339(s.clock.now()),
        offset_seconds: s.clock.offset_ms() as f64 / 1000.0,
    })
    .unwrap_or_default()
}

#[utoipa::path(
    get,
    path = "/_emulator/clock",
    tag = "platform",
    responses((status = 200, description = "The emulator clock", body = ClockView)),
)]
async fn clock(State(s): State<S>) -> impl IntoResponse {
    axum::Json(clock_body(&s))
}

/// How far to move the clock.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Advance {
    /// Seconds, 0 to 10 years (time never moves backwards).
    seconds: f64,
}

#[utoipa::path(
    post,
    path = "/_emulator/clock/advance",
    tag = "platform",
    request_body = Advance,
    responses(
        (status = 200, description = "The clock after the move; what became due is persisted", body = ClockView),
        (status = 400, description = "`seconds` out of range", content_type = "application/problem+json", body = ProblemDoc),
    ),
)]
async fn advance(
    State(s): State<S>,
    meta: RequestMeta,
    JsonBody(a): JsonBody<Advance>,
) -> ApiResult {
    advance_clock(&s, &meta, a.seconds).await?;
    Ok(axum::Json(clock_body(&s)).into_response())
}

/// Moves the emulator clock forward by `seconds` (shared through the store when instances share it), then
/// persists what the jump made due and wakes the delivery dispatcher.
pub(crate) async fn advance_clock(s: &S, meta: &RequestMeta, seconds: f64) -> Result<(), ApiError> {
    if !seconds.is_finite() || !(0.0..=10.0 * 365.0 * 86_400.0).contains(&seconds) {
        return Err(meta
            .problem(
                400,
                "Bad Request",
                "seconds must be between 0 and 10 years; time never moves backwards",
            )
            .field("seconds", "0 to 315360000")
            .err());
    }
    let ms = (seconds * 1000.0).round() as i64;
    if s.store.shared() {
        // The clock is shared: move it in the database, atomically, and take the result.
        let r = run_write(s, meta, Op::AdvanceClock { ms }).await?;
        let body = axum::body::to_bytes(r.into_body(), 4096)
            .await
            .map_err(|e| internal(meta, &e))?;
        let offset = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["offset_ms"].as_i64())
            .ok_or_else(|| internal(meta, &"no clock offset in the answer"))?;
        s.clock.set_offset_ms(offset);
    } else {
        let offset = s.clock.advance_ms(ms);
        run_write(
            s,
            meta,
            Op::SetMeta {
                key: "clock_offset_ms".into(),
                value: offset.to_string(),
            },
        )
        .await?;
    }
    s.sweep.notify_one();
    // Persist what the jump made due right away, so reads and webhooks see it at once.
    crate::platform::jobs::sweep_once(s).await;
    crate::platform::jobs::rotate_if_due(s).await;
    s.outbox.notify_one();
    s.changed();
    Ok(())
}

#[utoipa::path(
    post,
    path = "/_emulator/faults",
    tag = "platform",
    request_body = FaultSpec,
    responses(
        (status = 201, description = "The rule, with its id", body = crate::platform::faults::FaultRule),
        (status = 400, description = "An invalid rule", content_type = "application/problem+json", body = ProblemDoc),
    ),
)]
async fn add_fault(
    State(s): State<S>,
    meta: RequestMeta,
    JsonBody(spec): JsonBody<FaultSpec>,
) -> ApiResult {
    let rule = add_fault_rule(&s, &meta, spec).await?;
    Ok((http::StatusCode::CREATED, axum::Json(rule)).into_response())
}

/// Adds a fault rule (to the store when instances share it).
pub(crate) async fn add_fault_rule(
    s: &S,
    meta: &RequestMeta,
    spec: FaultSpec,
) -> Result<crate::platform::faults::FaultRule, ApiError> {
    let added = match s.store.faults() {
        Some(shared) => match crate::platform::faults::Faults::validate(spec) {
            Ok(rule) => Ok(shared.add(rule).await.map_err(|e| internal(meta, &e))?),
            Err(e) => Err(e),
        },
        None => s.faults.add(spec),
    };
    s.changed();
    match added {
        Ok(rule) => Ok(rule),
        Err(crate::platform::faults::FaultError::Invalid { field, reason }) => Err(meta
            .problem(400, "Bad Request", format!("Invalid `{field}`: {reason}"))
            .field(field, reason)
            .err()),
    }
}

#[utoipa::path(
    get,
    path = "/_emulator/faults",
    tag = "platform",
    responses((status = 200, description = "The active rules", body = Vec<crate::platform::faults::FaultRule>)),
)]
async fn list_faults(State(s): State<S>, meta: RequestMeta) -> ApiResult {
    Ok(axum::Json(fault_rules(&s, &meta).await?).into_response())
}

/// The active fault rules.
pub(crate) async fn fault_rules(
    s: &S,
    meta: &RequestMeta,
) -> Result<Vec<crate::platform::faults::FaultRule>, ApiError> {
    match s.store.faults() {
        Some(shared) => shared.list().await.map_err(|e| internal(meta, &e)),
        None => Ok(s.faults.list()),
    }
}

#[utoipa::path(
    delete,
    path = "/_emulator/faults",
    tag = "platform",
    responses((status = 204, description = "Every rule removed")),
)]
async fn clear_faults(State(s): State<S>, meta: RequestMeta) -> ApiResult {
    clear_fault_rules(&s, &meta).await?;
    Ok(http::StatusCode::NO_CONTENT.into_response())
}

/// Removes every fault rule.
pub(crate) async fn clear_fault_rules(s: &S, meta: &RequestMeta) -> Result<(), ApiError> {
    match s.store.faults() {
        Some(shared) => shared.clear().await.map_err(|e| internal(meta, &e))?,
        None => s.faults.clear(),
    }
    s.changed();
    Ok(())
}

#[utoipa::path(
    get,
    path = "/_emulator/requests",
    tag = "platform",
    params(RequestFilter),
    responses(
        (status = 200, description = "Recorded API requests, newest first", body = Vec<crate::platform::reqlog::RequestRecord>),
        (status = 400, description = "An invalid filter", content_type = "application/problem+json", body = ProblemDoc),
    ),
)]
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

#[utoipa::path(
    get,
    path = "/_emulator/deliveries",
    tag = "platform",
    params(crate::platform::store::AttemptFilter),
    responses(
        (status = 200, description = "Webhook delivery attempts, oldest first: event, attempt number, request \
            headers, response status or error, latency, source address and hostname, outcome", body = Vec<JsonObject>),
        (status = 400, description = "An invalid filter", content_type = "application/problem+json", body = ProblemDoc),
    ),
)]
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

/// The request servers as `GET /_emulator/request-servers` shows them.
pub(crate) fn servers_view(s: &S) -> serde_json::Value {
    let mut v = s
        .request_servers
        .read()
        .view(s.config.rotation_period.as_millis() as i64);
    v["dns"] =
        serde_json::json!({ "listen": s.dns_addr.map(|a| a.to_string()), "ttl": s.config.dns_ttl });
    v
}

#[utoipa::path(
    get,
    path = "/_emulator/request-servers",
    tag = "platform",
    responses((status = 200, description = "The active request server per side (`test`, `production`), every \
        pool's servers and addresses, the rotation schedule and the embedded DNS server", body = JsonObject)),
)]
async fn request_servers(State(s): State<S>) -> impl IntoResponse {
    axum::Json(servers_view(&s))
}

/// Which pool to rotate.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    /// `test`, `production`, `disaster-recovery` or `all` (default `all`).
    pool: Option<String>,
}

#[utoipa::path(
    post,
    path = "/_emulator/request-servers/rotate",
    tag = "platform",
    request_body(content = Option<RotateBody>, description = "Optional; without it every pool rotates"),
    responses(
        (status = 200, description = "The request servers after the rotation", body = JsonObject),
        (status = 400, description = "An unknown pool", content_type = "application/problem+json", body = ProblemDoc),
    ),
)]
async fn rotate(
    State(s): State<S>,
    meta: RequestMeta,
    OptionalJson(body): OptionalJson<RotateBody>,
) -> ApiResult {
    rotate_pools(&s, &meta, body.pool.as_deref()).await?;
    Ok(axum::Json(servers_view(&s)).into_response())
}

/// Rotates the active request server of a pool (`test`, `production`, `disaster-recovery`; `None` or `all`:
/// every pool) and publishes the new DNS answers.
pub(crate) async fn rotate_pools(
    s: &S,
    meta: &RequestMeta,
    pool: Option<&str>,
) -> Result<(), ApiError> {
    use vipps_types::servers::Pool;
    let pools: Vec<Pool> = match pool.unwrap_or("all") {
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
            if let Some(m) = &s.metrics {
                m.rotation(p, false);
            }
        }
    }
    crate::platform::jobs::request_servers_changed(s).await;
    Ok(())
}

/// Where production callbacks come from.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
struct FailoverBody {
    /// `disaster-recovery` or `production`; without it, the serving pool toggles.
    to: Option<String>,
}

#[utoipa::path(
    post,
    path = "/_emulator/request-servers/failover",
    tag = "platform",
    request_body(content = Option<FailoverBody>, description = "Optional; without it the serving pool toggles"),
    responses(
        (status = 200, description = "The request servers after the switch", body = JsonObject),
        (status = 400, description = "An unknown target", content_type = "application/problem+json", body = ProblemDoc),
    ),
)]
async fn failover(
    State(s): State<S>,
    meta: RequestMeta,
    OptionalJson(body): OptionalJson<FailoverBody>,
) -> ApiResult {
    set_failover(&s, &meta, body.to.as_deref()).await?;
    Ok(axum::Json(servers_view(&s)).into_response())
}

/// Serves production callbacks from `disaster-recovery` or `production` (`None`: toggles).
pub(crate) async fn set_failover(
    s: &S,
    meta: &RequestMeta,
    to: Option<&str>,
) -> Result<(), ApiError> {
    {
        let mut rs = s.request_servers.write();
        let on = match to {
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
    crate::platform::jobs::request_servers_changed(s).await;
    Ok(())
}
