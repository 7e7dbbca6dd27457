//! The dashboard: `/_emulator/` for a browser (the JSON controls stay as they are for programs) and its pages under
//! `/_emulator/ui/`. Overview (merchants and partners, counts, the clock, request servers and their DNS answers,
//! fault rules), a list and a detail page per aggregate kind of every product (filters and keyset pagination that
//! stay fast at any depth; the event timeline, idempotency keys and replays, webhook deliveries), the delivery
//! attempts with **Resend**, the request record, and webhook registrations (never their secrets). Open pages update
//! themselves through server-sent events (`/_emulator/ui/events`).
//!
//! Like the rest of the core it names no product: products describe their aggregates through
//! [`crate::platform::product::Product::view`]. Every value is escaped by the templates; every form that changes
//! state goes through the same-origin guard ([`crate::platform::html::same_origin`]).

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{Markup, PreEscaped, html};
use serde::Deserialize;

use crate::platform::Shared as S;
use crate::platform::html::{error_page, page, respond, time, wants_html};
use crate::platform::http::{ApiError, RequestMeta};
use crate::platform::reqlog::{RequestFilter, RequestRecord};
use crate::platform::store::{AggregateQuery, AttemptFilter, Op};

/// Rows per list page.
const PAGE_SIZE: usize = 50;

/// The dashboard's routes (mounted with the controls, so `--no-controls` turns it off too).
pub(crate) fn routes() -> Router<S> {
    let actions = Router::new()
        .route("/_emulator/ui/clock/advance", post(advance))
        .route("/_emulator/ui/request-servers/rotate", post(rotate))
        .route("/_emulator/ui/request-servers/failover", post(failover))
        .route("/_emulator/ui/faults", post(add_fault))
        .route("/_emulator/ui/faults/clear", post(clear_faults))
        .route("/_emulator/ui/deliveries/{id}/resend", post(resend))
        .layer(axum::middleware::from_fn(
            crate::platform::html::same_origin,
        ));
    Router::new()
        .route("/_emulator", get(index))
        .route("/_emulator/", get(index))
        .route("/_emulator/ui", get(overview))
        .route("/_emulator/ui/", get(overview))
        .route("/_emulator/ui/aggregates/{kind}", get(list))
        .route("/_emulator/ui/aggregates/{kind}/{tenant}/{id}", get(detail))
        .route("/_emulator/ui/deliveries", get(deliveries))
        .route("/_emulator/ui/requests", get(requests))
        .route("/_emulator/ui/webhooks", get(webhooks))
        .route("/_emulator/ui/events", get(events))
        .merge(actions)
}

/// The navigation bar; `current` is the path of the page shown.
fn nav(s: &S, current: &str) -> Markup {
    let mut items: Vec<(String, String)> = vec![("/_emulator/ui".into(), "Overview".into())];
    // Only kinds with a list page: an internal kind (one without a decoder) would lead to a 404.
    for (kind, label) in s.products.listed_kinds() {
        items.push((
            format!("/_emulator/ui/aggregates/{kind}"),
            capitalize(label),
        ));
    }
    items.push(("/_emulator/ui/deliveries".into(), "Deliveries".into()));
    items.push(("/_emulator/ui/requests".into(), "Requests".into()));
    items.push(("/_emulator/ui/webhooks".into(), "Webhooks".into()));
    items.push(("/_emulator/inbox".into(), "App inbox".into()));
    html! {
        header class="top" {
            a class="brand" href="/_emulator/ui" { "Vipps MobilePay emulator" }
            nav aria-label="Dashboard" {
                @for (href, label) in &items {
                    a href=(href) aria-current=[(href == current).then_some("page")] style="margin-right:1rem" { (label) }
                }
            }
            span id="live" role="status" { "live" }
        }
        script { (PreEscaped(LIVE_JS)) }
    }
}

/// Replaces the page's `<main>` with a fresh copy when the emulator reports a change, unless the user is typing in
/// a form of it.
const LIVE_JS: &str = r#"(function(){
if(!window.EventSource)return;var busy=false,pending=false,live=document.getElementById('live');
function typing(){var a=document.activeElement;return a&&(a.tagName==='INPUT'||a.tagName==='SELECT'||a.tagName==='TEXTAREA');}
function refresh(){if(busy){pending=true;return;}if(typing()){pending=true;return;}busy=true;
fetch(location.href,{headers:{'Accept':'text/html'}}).then(function(r){return r.text();}).then(function(t){
var d=new DOMParser().parseFromString(t,'text/html');var m=d.getElementById('main');if(m){document.getElementById('main').replaceWith(m);}
live.textContent='live · updated '+new Date().toLocaleTimeString();document.dispatchEvent(new Event('emulator:updated'));
}).finally(function(){busy=false;if(pending){pending=false;setTimeout(refresh,200);}});}
document.addEventListener('focusout',function(){if(pending){pending=false;setTimeout(refresh,300);}});
var es=new EventSource('/_emulator/ui/events');es.onmessage=refresh;es.onerror=function(){live.textContent='offline';};
})();"#;

/// A health label (`checkout_sessions`) as a heading (`Checkout sessions`).
fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f
            .to_uppercase()
            .chain(c.map(|c| if c == '_' { ' ' } else { c }))
            .collect(),
        None => String::new(),
    }
}

fn html_page(s: &S, current: &str, title: &str, content: Markup) -> Response {
    respond(200, page(title, "", Some(nav(s, current)), content))
}

fn api_error_page(e: ApiError) -> Response {
    let r = e.into_response();
    let status = r.status().as_u16();
    error_page(
        status,
        "Request refused",
        "The emulator refused this request; see the JSON controls for details.",
    )
}

/// `GET /_emulator/`: the overview for a browser, an index of the controls for programs.
async fn index(s: State<S>, meta: RequestMeta, headers: http::HeaderMap) -> Response {
    if wants_html(&headers) {
        return overview(s, meta).await;
    }
    axum::Json(serde_json::json!({
        "dashboard": "/_emulator/ui",
        "controls": [
            "/_emulator/health", "/_emulator/clock", "/_emulator/clock/advance", "/_emulator/faults",
            "/_emulator/requests", "/_emulator/deliveries", "/_emulator/request-servers",
            "/_emulator/request-servers/rotate", "/_emulator/request-servers/failover", "/_emulator/env",
        ],
    }))
    .into_response()
}

/// `GET /_emulator/ui`: the overview.
async fn overview(State(s): State<S>, meta: RequestMeta) -> Response {
    let counts = match s.store.counts().await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(trace_id = %meta.trace_id, error = %e, "dashboard counts");
            return error_page(
                500,
                "Store unavailable",
                "The store could not be read; see the log.",
            );
        }
    };
    let faults = match crate::controls::fault_rules(&s, &meta).await {
        Ok(f) => f,
        Err(e) => return api_error_page(e),
    };
    let servers = crate::controls::servers_view(&s);
    let records = s.request_servers.read().records();
    let clock = crate::controls::clock_body(&s);
    let count_of = |kind: &str| {
        counts
            .aggregates
            .iter()
            .find(|(k, _)| k == kind)
            .map_or(0, |(_, n)| *n)
    };
    let back = "/_emulator/ui";
    let content = html! {
        h1 { "Overview" }
        div class="grid" {
            section class="card" aria-labelledby="h-clock" {
                h2 id="h-clock" { "Emulator clock" }
                p { "Now: " strong data-testid="clock-now" { (clock["now"].as_str().unwrap_or("")) } }
                p class="muted" { "Offset: " (clock["offset_seconds"]) " s ahead of the wall clock" }
                form method="post" action="/_emulator/ui/clock/advance" {
                    input type="hidden" name="return_to" value=(back);
                    label for="seconds" { "Advance by (seconds)" input id="seconds" name="seconds" type="number" min="0" step="1" value="600"; }
                    button type="submit" class="primary" { "Advance" }
                }
                div style="margin-top:.5rem" {
                    @for (label, secs) in [("+1 min", 60), ("+10 min", 600), ("+1 h", 3600), ("+1 day", 86400)] {
                        form class="inline" method="post" action="/_emulator/ui/clock/advance" {
                            input type="hidden" name="return_to" value=(back);
                            input type="hidden" name="seconds" value=(secs);
                            button type="submit" { (label) }
                            " "
                        }
                    }
                }
            }
            section class="card" aria-labelledby="h-counts" {
                h2 id="h-counts" { "Counts" }
                dl class="fields" {
                    @for (kind, label) in s.products.kinds() {
                        @if s.products.listed_kinds().any(|(k, _)| k == kind) {
                            dt { a href={"/_emulator/ui/aggregates/" (kind)} { (capitalize(label)) } }
                        } @else {
                            dt { (capitalize(label)) }
                        }
                        dd data-testid={"count-" (label)} { (count_of(kind)) }
                    }
                    dt { "Idempotency records" } dd { (counts.idempotency) }
                    dt { a href="/_emulator/ui/webhooks" { "Webhooks" } } dd { (counts.webhooks) }
                    dt { a href="/_emulator/ui/requests" { "Requests recorded" } } dd { (s.requests.len()) }
                }
            }
            section class="card" aria-labelledby="h-merchants" {
                h2 id="h-merchants" { "Merchants and partners" }
                table {
                    thead { tr { th { "MSN" } th { "client_id" } th { "Environment" } } }
                    tbody {
                        @for m in &s.config.merchants {
                            tr { td class="mono" { (m.msn.as_str()) } td class="mono" { (m.client_id) } td { (format!("{:?}", m.environment)) } }
                        }
                    }
                }
                @if !s.config.partners.is_empty() {
                    h2 { "Partners" }
                    table {
                        thead { tr { th { "client_id" } th { "Sales units" } } }
                        tbody {
                            @for p in &s.config.partners {
                                tr { td class="mono" { (p.client_id) } td class="mono" { (p.msns.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", ")) } }
                            }
                        }
                    }
                }
                p class="muted" { "Credentials are not shown here." }
            }
        }
        section class="card" aria-labelledby="h-servers" {
            h2 id="h-servers" { "Request servers (webhook senders)" }
            p {
                "Test callbacks from " strong data-testid="active-test" { (servers["test"]["active"].as_str().unwrap_or("")) }
                " (" span class="mono" { (servers["test"]["source_address"].as_str().unwrap_or("")) } "); production from "
                strong data-testid="active-production" { (servers["production"]["active"].as_str().unwrap_or("")) }
                " (" span class="mono" { (servers["production"]["source_address"].as_str().unwrap_or("")) } ")"
                @if servers["production"]["failover"].as_bool() == Some(true) { " — " strong { "failed over to disaster recovery" } }
            }
            div {
                @for pool in ["test", "production", "disaster-recovery"] {
                    form class="inline" method="post" action="/_emulator/ui/request-servers/rotate" {
                        input type="hidden" name="return_to" value=(back);
                        input type="hidden" name="pool" value=(pool);
                        button type="submit" { "Rotate " (pool) }
                        " "
                    }
                }
                form class="inline" method="post" action="/_emulator/ui/request-servers/failover" {
                    input type="hidden" name="return_to" value=(back);
                    button type="submit" { "Toggle failover" }
                }
            }
            h2 { "DNS answers" }
            p class="muted" {
                "Served by the embedded DNS server"
                @if let Some(a) = s.dns_addr { " on " span class="mono" { (a) } } @else { " (not running)" }
                "."
            }
            table data-testid="dns" {
                thead { tr { th { "Name" } th { "Addresses" } } }
                tbody {
                    @for (name, addrs) in &records {
                        tr { td class="mono" { (name) } td class="mono" { (addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ")) } }
                    }
                }
            }
        }
        section class="card" aria-labelledby="h-faults" {
            h2 id="h-faults" { "Fault rules" }
            @if faults.is_empty() { p class="muted" data-testid="no-faults" { "No fault rules." } }
            @else {
                table data-testid="faults" {
                    thead { tr { th { "Id" } th { "Method" } th { "Path" } th { "Action" } th { "Remaining" } } }
                    tbody {
                        @for f in &faults {
                            tr {
                                td { (f.id) }
                                td { (f.method.as_deref().unwrap_or("any")) }
                                td class="mono" { (f.path) }
                                td class="mono" { (serde_json::to_string(&f.action).unwrap_or_default()) }
                                td { (f.remaining) }
                            }
                        }
                    }
                }
                form method="post" action="/_emulator/ui/faults/clear" {
                    input type="hidden" name="return_to" value=(back);
                    button type="submit" class="danger" { "Clear all fault rules" }
                }
            }
            h2 { "Add a fault rule" }
            form class="filters" method="post" action="/_emulator/ui/faults" {
                input type="hidden" name="return_to" value=(back);
                label for="f-method" { "Method"
                    select id="f-method" name="method" { option value="" { "any" } @for m in ["GET", "POST", "PUT", "DELETE"] { option value=(m) { (m) } } }
                }
                label for="f-path" { "Path pattern" input id="f-path" name="path" required placeholder="/epayment/v1/payments/**"; }
                label for="f-action" { "Action"
                    select id="f-action" name="action" {
                        option value="status" { "answer a status" }
                        option value="delay" { "delay" }
                        option value="drop_after_commit" { "drop after commit" }
                    }
                }
                label for="f-status" { "Status" input id="f-status" name="status" type="number" min="400" max="599" value="503"; }
                label for="f-ms" { "Delay (ms)" input id="f-ms" name="ms" type="number" min="0" value="1000"; }
                label for="f-times" { "Times" input id="f-times" name="times" type="number" min="1" value="1"; }
                button type="submit" class="primary" { "Add rule" }
            }
        }
    };
    html_page(&s, "/_emulator/ui", "Overview", content)
}

/// The list filters.
#[derive(Debug, Default, Deserialize)]
struct ListQuery {
    state: Option<String>,
    msn: Option<String>,
    reference: Option<String>,
    from: Option<String>,
    to: Option<String>,
    after_ms: Option<i64>,
    after_tenant: Option<String>,
    after_id: Option<String>,
}

fn nonempty(v: &Option<String>) -> Option<String> {
    v.as_ref()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// A `datetime-local` value (`2026-12-03T02:30`, UTC) as Unix milliseconds.
fn parse_local(v: &str) -> Option<i64> {
    let with_seconds = if v.len() == 16 {
        format!("{v}:00")
    } else {
        v.to_owned()
    };
    let f = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    time::PrimitiveDateTime::parse(&with_seconds, &f)
        .ok()
        .map(|t| (t.assume_utc().unix_timestamp_nanos() / 1_000_000) as i64)
}

fn query_string(pairs: &[(&str, Option<String>)]) -> String {
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        if let Some(v) = v {
            ser.append_pair(k, v);
        }
    }
    ser.finish()
}

/// `GET /_emulator/ui/aggregates/{kind}`: a page of one kind's aggregates, newest first.
async fn list(
    State(s): State<S>,
    meta: RequestMeta,
    Path(kind): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let q: ListQuery = serde_urlencoded_lite(raw.as_deref().unwrap_or(""));
    let Some(product) = s.products.owner(&kind) else {
        return error_page(
            404,
            "Unknown kind",
            "No product stores aggregates of this kind.",
        );
    };
    let label = s.products.label(&kind).unwrap_or("aggregates");
    let Some(decoder) = product.decoder(&kind) else {
        return error_page(
            404,
            "Unknown kind",
            "No product stores aggregates of this kind.",
        );
    };
    let (state, msn, reference) = (nonempty(&q.state), nonempty(&q.msn), nonempty(&q.reference));
    let (from, to) = (nonempty(&q.from), nonempty(&q.to));
    let after = match (q.after_ms, nonempty(&q.after_tenant), q.after_id.clone()) {
        (Some(ms), Some(t), Some(i)) => Some((ms, t, i)),
        _ => None,
    };
    let query = AggregateQuery {
        kind: kind.clone(),
        state: state.clone(),
        tenant: msn.clone(),
        id_prefix: reference.clone(),
        created_from_ms: from.as_deref().and_then(parse_local),
        created_to_ms: to.as_deref().and_then(parse_local),
        after: after.clone(),
        limit: PAGE_SIZE,
        parent: None,
    };
    let rows = match s.store.list_aggregates(&query).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(trace_id = %meta.trace_id, error = %e, "dashboard list");
            return error_page(
                500,
                "Store unavailable",
                "The store could not be read; see the log.",
            );
        }
    };
    let views: Vec<_> = rows
        .iter()
        .map(|r| {
            let v = decoder(&r.data)
                .ok()
                .and_then(|d| product.view(&kind, &d, &s.base_url))
                .unwrap_or_default();
            (r, v)
        })
        .collect();
    let filters = [
        ("state", state.clone()),
        ("msn", msn.clone()),
        ("reference", reference.clone()),
        ("from", from.clone()),
        ("to", to.clone()),
    ];
    let next = (rows.len() == PAGE_SIZE).then(|| {
        let last = rows.last().expect("a full page has a last row");
        let mut pairs = filters.to_vec();
        pairs.push(("after_ms", Some(last.created_ms.to_string())));
        pairs.push(("after_tenant", Some(last.tenant.clone())));
        pairs.push(("after_id", Some(last.id.clone())));
        format!("/_emulator/ui/aggregates/{kind}?{}", query_string(&pairs))
    });
    let first = format!("/_emulator/ui/aggregates/{kind}?{}", query_string(&filters));
    let columns: Vec<&'static str> = views
        .first()
        .map(|(_, v)| v.columns.iter().map(|(k, _)| *k).collect())
        .unwrap_or_default();
    let title = capitalize(label);
    let content = html! {
        h1 { (title) }
        form class="filters" method="get" role="search" aria-label={"Filter " (label)} {
            label for="state" { "State"
                select id="state" name="state" {
                    option value="" { "any" }
                    @for st in product.states(&kind) {
                        option value=(st) selected[state.as_deref() == Some(*st)] { (st) }
                    }
                }
            }
            label for="msn" { "MSN" input id="msn" name="msn" value=(msn.clone().unwrap_or_default()) size="10"; }
            label for="reference" { "Reference starts with" input id="reference" name="reference" value=(reference.clone().unwrap_or_default()); }
            label for="from" { "Created from (UTC)" input id="from" name="from" type="datetime-local" value=(from.clone().unwrap_or_default()); }
            label for="to" { "Created before (UTC)" input id="to" name="to" type="datetime-local" value=(to.clone().unwrap_or_default()); }
            button type="submit" class="primary" { "Filter" }
            a class="button" href={"/_emulator/ui/aggregates/" (kind)} { "Clear" }
        }
        @if rows.is_empty() { p class="muted" data-testid="empty" { "Nothing matches." } }
        @else {
            table data-testid="list" {
                thead { tr { th { "Reference" } th { "MSN" } th { "State" } th { "Created" } @for c in &columns { th { (c) } } } }
                tbody {
                    @for (r, v) in &views {
                        tr {
                            td class="mono" { a href={"/_emulator/ui/aggregates/" (kind) "/" (enc(&r.tenant)) "/" (enc(&r.id))} { (r.id) } }
                            td class="mono" { (r.tenant) }
                            td { span class={"state state-" (r.state)} { (r.state) } }
                            td { (time(r.created_ms)) }
                            @for (_, val) in &v.columns { td { (val) } }
                        }
                    }
                }
            }
        }
        nav class="pager" aria-label="Pages" {
            @if after.is_some() { a class="button" href=(first) { "First page" } }
            @if let Some(n) = &next { a class="button" rel="next" href=(n) { "Next page" } }
        }
    };
    html_page(
        &s,
        &format!("/_emulator/ui/aggregates/{kind}"),
        &title,
        content,
    )
}

/// A path segment, percent-encoded.
fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Parses a query string leniently (unknown keys ignored, wrong numbers dropped): filters in a browser form.
fn serde_urlencoded_lite<T: serde::de::DeserializeOwned + Default>(q: &str) -> T {
    let mut map = serde_json::Map::new();
    for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
        let val = match v.parse::<i64>() {
            Ok(n) if k.ends_with("_ms") || k == "status" => serde_json::Value::from(n),
            _ => serde_json::Value::from(v.into_owned()),
        };
        map.insert(k.into_owned(), val);
    }
    serde_json::from_value(serde_json::Value::Object(map)).unwrap_or_default()
}

/// `GET /_emulator/ui/aggregates/{kind}/{tenant}/{id}`: one aggregate with its timeline, requests and deliveries.
async fn detail(
    State(s): State<S>,
    meta: RequestMeta,
    Path((kind, tenant, id)): Path<(String, String, String)>,
) -> Response {
    let Some(product) = s.products.owner(&kind) else {
        return error_page(
            404,
            "Unknown kind",
            "No product stores aggregates of this kind.",
        );
    };
    let Some(decoder) = product.decoder(&kind) else {
        return error_page(
            404,
            "Unknown kind",
            "No product stores aggregates of this kind.",
        );
    };
    let Some(static_kind) = s.products.kinds().map(|(k, _)| k).find(|k| *k == kind) else {
        return error_page(
            404,
            "Unknown kind",
            "No product stores aggregates of this kind.",
        );
    };
    let key = crate::platform::aggregate::AggregateKey {
        kind: static_kind,
        tenant: tenant.clone(),
        id: id.clone(),
    };
    let doc = match s.store.aggregate(&key, decoder).await {
        Ok(Some(d)) => d,
        Ok(None) => {
            return error_page(
                404,
                "Not found",
                "Nothing with this id is stored for this sales unit.",
            );
        }
        Err(e) => {
            tracing::error!(trace_id = %meta.trace_id, error = %e, "dashboard detail");
            return error_page(
                500,
                "Store unavailable",
                "The store could not be read; see the log.",
            );
        }
    };
    let view = product.view(&kind, &doc, &s.base_url).unwrap_or_default();
    let requests = s.requests.query(&RequestFilter {
        path_contains: Some(format!("/{id}")),
        limit: Some(200),
        ..RequestFilter::default()
    });
    // Requests naming it in the path, and those whose idempotency key caused one of its events (a create names
    // the id only in its body), with their replays.
    let mut requests = requests;
    let mut keys: Vec<&str> = view
        .timeline
        .iter()
        .filter_map(|e| e.idempotency_key.as_deref())
        .collect();
    keys.sort_unstable();
    keys.dedup();
    for k in keys {
        requests.extend(s.requests.query(&RequestFilter {
            idempotency_key: Some(k.to_owned()),
            limit: Some(50),
            ..RequestFilter::default()
        }));
    }
    requests.sort_by(|a, b| {
        b.time
            .cmp(&a.time)
            .then_with(|| a.trace_id.cmp(&b.trace_id))
    });
    requests.dedup_by(|a, b| a.trace_id == b.trace_id);
    let requests: Vec<RequestRecord> = requests
        .into_iter()
        .filter(|r| r.msn.as_deref().is_none_or(|m| m == tenant))
        .collect();
    let attempts = s
        .store
        .attempts(&AttemptFilter {
            reference: Some(id.clone()),
            limit: Some(200),
            ..AttemptFilter::default()
        })
        .await
        .unwrap_or_default();
    let attempts: Vec<_> = attempts
        .into_iter()
        .filter(|a| a["msn"].as_str().is_none_or(|m| m == tenant))
        .collect();
    let here = format!(
        "/_emulator/ui/aggregates/{kind}/{}/{}",
        enc(&tenant),
        enc(&id)
    );
    let content = html! {
        p { a href={"/_emulator/ui/aggregates/" (kind)} { "← all " (s.products.label(&kind).unwrap_or("")) } }
        h1 { span class="mono" { (id) } }
        p class="muted" { "Sales unit " span class="mono" { (tenant) } " · state " span class={"state state-" (view.state)} data-testid="state" { (view.state) } }
        p { @for (label, href) in &view.links { a class="button" href=(href) { (label) } " " } }
        div class="grid" {
            section class="card" aria-labelledby="h-fields" {
                h2 id="h-fields" { "State and amounts" }
                dl class="fields" data-testid="fields" { @for (k, v) in &view.fields { dt { (k) } dd { (v) } } }
            }
            section class="card" aria-labelledby="h-timeline" {
                h2 id="h-timeline" { "Event timeline" }
                table data-testid="timeline" {
                    thead { tr { th { "Time" } th { "Event" } th { "Details" } th { "Idempotency key" } } }
                    tbody {
                        @for e in &view.timeline {
                            tr { td { (time(e.at_ms)) } td { span class={"state state-" (e.name)} { (e.name) } } td { (e.detail) } td class="mono" { (e.idempotency_key.as_deref().unwrap_or("—")) } }
                        }
                    }
                }
            }
        }
        section class="card" aria-labelledby="h-requests" {
            h2 id="h-requests" { "API requests about it (idempotency keys and replays)" }
            (request_table(&requests))
        }
        section class="card" aria-labelledby="h-deliveries" {
            h2 id="h-deliveries" { "Webhook deliveries" }
            (attempt_table(&attempts, &here))
        }
    };
    html_page(
        &s,
        &format!("/_emulator/ui/aggregates/{kind}"),
        &id,
        content,
    )
}

fn request_table(rows: &[RequestRecord]) -> Markup {
    html! {
        @if rows.is_empty() { p class="muted" { "No recorded requests." } }
        @else {
            table data-testid="requests" {
                thead { tr { th { "Time" } th { "Request" } th { "Status" } th { "MSN" } th { "System" } th { "Plugin" } th { "Idempotency key" } th { "Latency" } th { "Trace id" } } }
                tbody {
                    @for r in rows {
                        tr {
                            td { (r.time) }
                            td class="mono" { (r.method) " " (r.path) }
                            td {
                                span class=@if r.status >= 400 || r.dropped { "error" } @else { "ok" } { (r.status) }
                                @if r.replayed { " " span class="state" title="Answered from the stored response of an earlier request with the same key" { "replay" } }
                                @if r.dropped { " " span class="state state-failed" { "dropped" } }
                                @if let Some(f) = &r.fault { " " span class="state" { "fault: " (f) } }
                            }
                            td class="mono" { (r.msn.as_deref().unwrap_or("")) }
                            td { (r.system_name.as_deref().unwrap_or("")) " " (r.system_version.as_deref().unwrap_or("")) }
                            td { (r.plugin_name.as_deref().unwrap_or("")) " " (r.plugin_version.as_deref().unwrap_or("")) }
                            td class="mono" { (r.idempotency_key.as_deref().unwrap_or("")) }
                            td { (format!("{:.1} ms", r.latency_ms)) }
                            td class="mono" { (r.trace_id) }
                        }
                        @if let Some(p) = &r.problem {
                            tr { td colspan="9" { details { summary { "Problem body" } pre { (serde_json::to_string_pretty(p).unwrap_or_default()) } } } }
                        }
                    }
                }
            }
        }
    }
}

fn attempt_table(rows: &[serde_json::Value], back: &str) -> Markup {
    let s = |v: &serde_json::Value| {
        v.as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| v.to_string())
    };
    html! {
        @if rows.is_empty() { p class="muted" { "No delivery attempts." } }
        @else {
            table data-testid="attempts" {
                thead { tr { th { "Time" } th { "Event" } th { "URL" } th { "From" } th { "Answer" } th { "Latency" } th { "Outcome" } th { "" } } }
                tbody {
                    @for a in rows.iter().rev() {
                        tr {
                            td { (s(&a["time"])) br; span class="muted" { "delivery " (a["delivery_id"]) ", attempt " (a["attempt"]) } }
                            td { (s(&a["event_name"])) br; span class="muted mono" { (s(&a["reference"])) } }
                            td class="mono" { (s(&a["url"])) }
                            td class="mono" { (s(&a["source_hostname"])) br; (s(&a["source_address"])) }
                            td {
                                @if a["response_status"].is_null() { span class="error" { (s(&a["error"])) } }
                                @else { (a["response_status"]) }
                            }
                            td { (format!("{:.1} ms", a["latency_ms"].as_f64().unwrap_or(0.0))) }
                            td {
                                span class={"state state-" (s(&a["outcome"]))} { (s(&a["outcome"])) }
                                @if let Some(n) = a["next_attempt_ms"].as_i64() { br; span class="muted" { "next " (time(n)) } }
                            }
                            td {
                                form method="post" action={"/_emulator/ui/deliveries/" (a["delivery_id"]) "/resend"} {
                                    input type="hidden" name="return_to" value=(back);
                                    button type="submit" { "Resend" }
                                }
                            }
                        }
                        tr { td colspan="8" { details { summary { "Request headers (signed)" } pre { (serde_json::to_string_pretty(&a["request_headers"]).unwrap_or_default()) } } } }
                    }
                }
            }
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct DeliveryQuery {
    reference: Option<String>,
    event: Option<String>,
}

/// `GET /_emulator/ui/deliveries`: every recorded attempt, newest first.
async fn deliveries(State(s): State<S>, RawQuery(raw): RawQuery) -> Response {
    let q: DeliveryQuery = serde_urlencoded_lite(raw.as_deref().unwrap_or(""));
    let (reference, event) = (nonempty(&q.reference), nonempty(&q.event));
    let attempts = s
        .store
        .attempts(&AttemptFilter {
            reference: reference.clone(),
            event: event.clone(),
            limit: Some(200),
            ..AttemptFilter::default()
        })
        .await
        .unwrap_or_default();
    let back = format!(
        "/_emulator/ui/deliveries?{}",
        query_string(&[("reference", reference.clone()), ("event", event.clone())])
    );
    let content = html! {
        h1 { "Webhook deliveries" }
        form class="filters" method="get" role="search" aria-label="Filter deliveries" {
            label for="reference" { "Reference" input id="reference" name="reference" value=(reference.clone().unwrap_or_default()); }
            label for="event" { "Event" input id="event" name="event" placeholder="CAPTURED" value=(event.clone().unwrap_or_default()); }
            button type="submit" class="primary" { "Filter" }
        }
        (attempt_table(&attempts, &back))
    };
    html_page(&s, "/_emulator/ui/deliveries", "Deliveries", content)
}

/// `GET /_emulator/ui/requests`: the request record with filters.
async fn requests(State(s): State<S>, RawQuery(raw): RawQuery) -> Response {
    #[derive(Debug, Default, Deserialize)]
    struct Q {
        system_name: Option<String>,
        plugin_name: Option<String>,
        msn: Option<String>,
        status: Option<serde_json::Value>,
    }
    let q: Q = serde_urlencoded_lite(raw.as_deref().unwrap_or(""));
    let status = q.status.as_ref().and_then(|v| v.as_u64()).map(|v| v as u16);
    let (system, plugin, msn) = (
        nonempty(&q.system_name),
        nonempty(&q.plugin_name),
        nonempty(&q.msn),
    );
    let rows = s.requests.query(&RequestFilter {
        system_name: system.clone(),
        plugin_name: plugin.clone(),
        msn: msn.clone(),
        status,
        limit: Some(200),
        ..RequestFilter::default()
    });
    let content = html! {
        h1 { "Request record" }
        p class="muted" { "What integrations send: the " code { "Vipps-System-*" } " headers, MSN, idempotency key, the answer and, for refused requests, the problem body. Newest first." }
        form class="filters" method="get" role="search" aria-label="Filter requests" {
            label for="system_name" { "System name" input id="system_name" name="system_name" value=(system.clone().unwrap_or_default()); }
            label for="plugin_name" { "Plugin name" input id="plugin_name" name="plugin_name" value=(plugin.clone().unwrap_or_default()); }
            label for="msn" { "MSN" input id="msn" name="msn" value=(msn.clone().unwrap_or_default()); }
            label for="status" { "Status" input id="status" name="status" type="number" value=(status.map(|s| s.to_string()).unwrap_or_default()); }
            button type="submit" class="primary" { "Filter" }
        }
        (request_table(&rows))
    };
    html_page(&s, "/_emulator/ui/requests", "Requests", content)
}

/// `GET /_emulator/ui/webhooks`: registrations per merchant and partner (never their secrets).
async fn webhooks(State(s): State<S>) -> Response {
    let mut owners: Vec<String> = s
        .config
        .merchants
        .iter()
        .map(|m| format!("msn:{}", m.msn.as_str()))
        .collect();
    owners.extend(
        s.config
            .partners
            .iter()
            .map(|p| format!("partner:{}", p.client_id)),
    );
    let mut groups = Vec::new();
    for o in owners {
        let rows = s.store.webhooks(&o).await.unwrap_or_default();
        groups.push((o, rows));
    }
    let content = html! {
        h1 { "Webhook registrations" }
        @for (owner, rows) in &groups {
            section class="card" {
                h2 { (owner) }
                @if rows.is_empty() { p class="muted" { "None." } }
                @else {
                    table {
                        thead { tr { th { "Id" } th { "URL" } th { "Events" } th { "Registered" } } }
                        tbody {
                            @for w in rows {
                                tr { td class="mono" { (w.id) } td class="mono" { (w.url) } td { (w.events.join(", ")) } td { (time(w.created_ms)) } }
                            }
                        }
                    }
                }
            }
        }
        p class="muted" { "Secrets are not shown." }
    };
    html_page(&s, "/_emulator/ui/webhooks", "Webhooks", content)
}

/// `GET /_emulator/ui/events`: a server-sent event whenever something changed (at most about four a second).
async fn events(State(s): State<S>) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
    let rx = s.changes.subscribe();
    drop(s);
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.changed().await.ok()?;
        // Coalesce bursts: one event per quarter second at most.
        tokio::time::sleep(Duration::from_millis(250)).await;
        let n = *rx.borrow_and_update();
        Some((
            Ok(Event::default().event("message").data(n.to_string())),
            rx,
        ))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// Form fields.
fn form(bytes: &Bytes) -> std::collections::HashMap<String, String> {
    url::form_urlencoded::parse(bytes)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Back to the page the form was on (only a dashboard page).
fn back(f: &std::collections::HashMap<String, String>) -> Response {
    let to = f
        .get("return_to")
        .filter(|t| t.starts_with("/_emulator/") && !t.starts_with("//"))
        .map_or("/_emulator/ui", String::as_str);
    Redirect::to(to).into_response()
}

async fn advance(State(s): State<S>, meta: RequestMeta, bytes: Bytes) -> Response {
    let f = form(&bytes);
    let Some(secs) = f.get("seconds").and_then(|v| v.parse::<f64>().ok()) else {
        return error_page(400, "Invalid seconds", "Seconds must be a number.");
    };
    match crate::controls::advance_clock(&s, &meta, secs).await {
        Ok(()) => back(&f),
        Err(e) => api_error_page(e),
    }
}

async fn rotate(State(s): State<S>, meta: RequestMeta, bytes: Bytes) -> Response {
    let f = form(&bytes);
    match crate::controls::rotate_pools(&s, &meta, f.get("pool").map(String::as_str)).await {
        Ok(()) => back(&f),
        Err(e) => api_error_page(e),
    }
}

async fn failover(State(s): State<S>, meta: RequestMeta, bytes: Bytes) -> Response {
    let f = form(&bytes);
    match crate::controls::set_failover(&s, &meta, f.get("to").map(String::as_str)).await {
        Ok(()) => back(&f),
        Err(e) => api_error_page(e),
    }
}

async fn add_fault(State(s): State<S>, meta: RequestMeta, bytes: Bytes) -> Response {
    let f = form(&bytes);
    let num = |k: &str| f.get(k).and_then(|v| v.parse::<u64>().ok());
    let mut spec = serde_json::json!({
        "path": f.get("path").cloned().unwrap_or_default(),
        "times": num("times").unwrap_or(1),
        "action": f.get("action").cloned().unwrap_or_else(|| "status".into()),
    });
    if let Some(m) = f.get("method").filter(|m| !m.is_empty()) {
        spec["method"] = m.clone().into();
    }
    match spec["action"].as_str() {
        Some("status") => spec["status"] = num("status").unwrap_or(503).into(),
        Some("delay") => spec["ms"] = num("ms").unwrap_or(1000).into(),
        _ => {}
    }
    let spec = match serde_json::from_value(spec) {
        Ok(s) => s,
        Err(e) => return error_page(400, "Invalid fault rule", &e.to_string()),
    };
    match crate::controls::add_fault_rule(&s, &meta, spec).await {
        Ok(_) => back(&f),
        Err(e) => api_error_page(e),
    }
}

async fn clear_faults(State(s): State<S>, meta: RequestMeta, bytes: Bytes) -> Response {
    let f = form(&bytes);
    match crate::controls::clear_fault_rules(&s, &meta).await {
        Ok(()) => back(&f),
        Err(e) => api_error_page(e),
    }
}

/// `POST /_emulator/ui/deliveries/{id}/resend`: queues the delivery's event again (a new, signed delivery from
/// the active request server, recorded like any other).
async fn resend(
    State(s): State<S>,
    meta: RequestMeta,
    Path(id): Path<i64>,
    bytes: Bytes,
) -> Response {
    let f = form(&bytes);
    match crate::platform::idempotency::run_write(&s, &meta, Op::Redeliver { delivery_id: id })
        .await
    {
        Ok(r) if r.status().is_success() => {
            s.outbox.notify_one();
            back(&f)
        }
        Ok(r) => error_page(
            r.status().as_u16(),
            "Cannot resend",
            "This delivery is no longer stored.",
        ),
        Err(e) => api_error_page(e),
    }
}
