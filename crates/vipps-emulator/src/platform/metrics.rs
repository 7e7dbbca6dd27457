//! Prometheus metrics, served at `GET /metrics` in the text exposition format (version 0.0.4).
//!
//! Every label value comes from a bounded set: route templates as the router matched them, parameters written
//! `:name` (never raw paths, references or keys), the standard methods, status codes, aggregate kinds and states as products declare them,
//! fixed outcome names. The aggregate gauges follow writes (each product command notes the state it left and
//! the state it saved, [`observe`]), so a scrape never counts a table; they are read from the store once at start
//! and, on a shared store where other instances write too, recounted now and then in the background.
//!
//! Nothing here knows a product: kinds are labelled by the registry's names (`payments`, `agreements`...).

use std::collections::HashSet;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use parking_lot::RwLock;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::Shared;
use super::product::Registry as Products;

/// The route label of a request no route matched (404 and the like).
const UNMATCHED: &str = "unmatched";

/// A request's labels: route template, method and status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

/// A latency histogram's labels: route template and method.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
    method: &'static str,
}

/// An aggregate gauge's labels: the kind's name in the registry (`payments`) and the state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AggregateLabels {
    kind: &'static str,
    state: &'static str,
}

/// One label, `outcome`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// A rotation's labels: the pool and what moved it (`control` or `schedule`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RotationLabels {
    pool: &'static str,
    trigger: &'static str,
}

/// What an idempotent write's key did besides executing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IdempotencyOutcome {
    /// The stored answer of an earlier request was replayed.
    Replayed,
    /// The key was reused with another body: 409.
    Conflict,
    /// Another request with the key was still executing: 423.
    InFlight,
}

/// What a webhook delivery attempt led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeliveryLabel {
    /// 2xx in time.
    Delivered,
    /// Failed; it will be retried.
    Retry,
    /// Failed for the last time.
    GivenUp,
}

/// Latency buckets in seconds: 0.1 ms to about 6.5 s.
fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.0001, 2.0, 17)
}

/// The metrics of one emulator.
pub(crate) struct Metrics {
    /// Tells this emulator's handles apart in the per-thread caches (several emulators may share a process).
    id: u64,
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    aggregates: Family<AggregateLabels, Gauge>,
    idempotency: Family<OutcomeLabels, Counter>,
    deliveries: Family<OutcomeLabels, Counter>,
    delivery_latency: Histogram,
    commit_latency: Histogram,
    commit_batch: Histogram,
    rotations: Family<RotationLabels, Counter>,
    /// Each stored kind with its name in the registry.
    kinds: Vec<(&'static str, &'static str)>,
    /// Every (kind name, state) pair products declare.
    declared: Vec<(&'static str, &'static str)>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// The metrics of an emulator with these products; every declared (kind, state) pair starts at 0, so the
    /// series exist before the first write.
    pub(crate) fn new(products: &Products) -> Metrics {
        let mut registry = Registry::with_prefix("vipps_emulator");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route template, method and status",
            requests.clone(),
        );
        let latency: Family<RouteLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(latency_buckets()));
        registry.register(
            "http_request_duration_seconds",
            "Time to answer a request (until the response head), by route template and method",
            latency.clone(),
        );
        let aggregates = Family::<AggregateLabels, Gauge>::default();
        registry.register(
            "aggregates",
            "Stored aggregates (payments, agreements, charges...) by kind and state",
            aggregates.clone(),
        );
        let idempotency = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "idempotency",
            "Idempotent writes that did not simply execute: replayed, conflict (409), in_flight (423)",
            idempotency.clone(),
        );
        let deliveries = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "Webhook delivery attempts by outcome: delivered, retry, given_up",
            deliveries.clone(),
        );
        let delivery_latency = Histogram::new(latency_buckets());
        registry.register(
            "webhook_delivery_duration_seconds",
            "Time from sending a webhook to its answer (or failure)",
            delivery_latency.clone(),
        );
        let commit_latency = Histogram::new(latency_buckets());
        registry.register(
            "store_commit_duration_seconds",
            "Time of one group-commit transaction of the store, from its start to its commit",
            commit_latency.clone(),
        );
        let commit_batch = Histogram::new(exponential_buckets(1.0, 2.0, 10));
        registry.register(
            "store_commit_batch_size",
            "Writes carried by one group commit of the store",
            commit_batch.clone(),
        );
        let rotations = Family::<RotationLabels, Counter>::default();
        registry.register(
            "request_server_rotations",
            "Rotations of the active request server, by pool and trigger (control, schedule)",
            rotations.clone(),
        );
        for pool in vipps_types::servers::Pool::ALL {
            for trigger in ["control", "schedule"] {
                let _ = rotations.get_or_create(&RotationLabels {
                    pool: pool.as_str(),
                    trigger,
                });
            }
        }
        for outcome in ["replayed", "conflict", "in_flight"] {
            let _ = idempotency.get_or_create(&OutcomeLabels { outcome });
        }
        for outcome in ["delivered", "retry", "given_up"] {
            let _ = deliveries.get_or_create(&OutcomeLabels { outcome });
        }
        let kinds: Vec<_> = products.kinds().collect();
        let declared: Vec<_> = products
            .iter()
            .flat_map(|p| {
                p.kinds()
                    .iter()
                    .flat_map(|(kind, label)| p.states(kind).iter().map(|state| (*label, *state)))
            })
            .collect();
        for &(kind, state) in &declared {
            let _ = aggregates.get_or_create(&AggregateLabels { kind, state });
        }
        static IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Metrics {
            id: IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            registry,
            requests,
            latency,
            aggregates,
            idempotency,
            deliveries,
            delivery_latency,
            commit_latency,
            commit_batch,
            rotations,
            kinds,
            declared,
        }
    }

    /// The text exposition of every metric.
    pub(crate) fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing to a `String` cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }

    /// The registry's name of a stored kind (unknown kinds are not counted: their labels would be unbounded).
    fn kind_label(&self, kind: &str) -> Option<&'static str> {
        self.kinds.iter().find(|(k, _)| *k == kind).map(|(_, l)| *l)
    }

    /// Counts an idempotent write that did not simply execute.
    pub(crate) fn idempotency(&self, o: IdempotencyOutcome) {
        let outcome = match o {
            IdempotencyOutcome::Replayed => "replayed",
            IdempotencyOutcome::Conflict => "conflict",
            IdempotencyOutcome::InFlight => "in_flight",
        };
        self.idempotency
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// Counts a delivery attempt and its time.
    pub(crate) fn delivery(&self, o: DeliveryLabel, took: Duration) {
        let outcome = match o {
            DeliveryLabel::Delivered => "delivered",
            DeliveryLabel::Retry => "retry",
            DeliveryLabel::GivenUp => "given_up",
        };
        self.deliveries
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
        self.delivery_latency.observe(took.as_secs_f64());
    }

    /// Counts a rotation of a pool's active request server.
    pub(crate) fn rotation(&self, pool: vipps_types::servers::Pool, scheduled: bool) {
        let trigger = if scheduled { "schedule" } else { "control" };
        self.rotations
            .get_or_create(&RotationLabels {
                pool: pool.as_str(),
                trigger,
            })
            .inc();
    }

    /// Records one commit of the store.
    pub(crate) fn commit(&self, writes: usize, took: Duration) {
        self.commit_latency.observe(took.as_secs_f64());
        self.commit_batch.observe(writes as f64);
    }

    /// Moves one aggregate between states (`from: None`: it was created).
    pub(crate) fn moved(&self, kind: &str, from: Option<&'static str>, to: &'static str) {
        let Some(kind) = self.kind_label(kind) else {
            return;
        };
        if from == Some(to) {
            return;
        }
        if let Some(from) = from {
            self.aggregates
                .get_or_create(&AggregateLabels { kind, state: from })
                .dec();
        }
        self.aggregates
            .get_or_create(&AggregateLabels { kind, state: to })
            .inc();
    }

    /// Sets the aggregate gauges to counts read from the store. Pairs the store no longer has go to 0.
    pub(crate) fn set_counts(&self, counts: &[(String, String, u64)]) {
        let mut seen = HashSet::new();
        for (kind, state, n) in counts {
            let Some(kind) = self.kind_label(kind) else {
                continue;
            };
            let labels = AggregateLabels {
                kind,
                state: intern(state),
            };
            self.aggregates.get_or_create(&labels).set(*n as i64);
            seen.insert(labels);
        }
        // The family cannot be listed, so every pair products declare is reset unless counted.
        for &(kind, state) in &self.declared {
            let labels = AggregateLabels { kind, state };
            if !seen.contains(&labels) {
                self.aggregates.get_or_create(&labels).set(0);
            }
        }
    }

    /// Records a request. The counter and histogram of each (route, method, status) are looked up in the
    /// families once per thread and kept in a thread-local map, so a request takes none of the families' locks.
    fn request(&self, route: &'static str, method: &'static str, status: u16, took: Duration) {
        HANDLES.with(|h| {
            let mut h = h.borrow_mut();
            let (counter, latency) =
                h.entry((self.id, route, method, status))
                    .or_insert_with(|| {
                        (
                            self.requests.get_or_create_owned(&RequestLabels {
                                route,
                                method,
                                status,
                            }),
                            self.latency
                                .get_or_create_owned(&RouteLabels { route, method }),
                        )
                    });
            counter.inc();
            latency.observe(took.as_secs_f64());
        });
    }
}

/// The request metrics' handles per (emulator, route label, method, status); see [`Metrics::request`]. A stopped
/// emulator's entries stay until the thread ends: one per route, method and status it answered, a few kilobytes.
type Handles =
    std::collections::HashMap<(u64, &'static str, &'static str, u16), (Counter, Histogram)>;

thread_local! {
    static HANDLES: std::cell::RefCell<Handles> = std::cell::RefCell::default();
    /// Route templates as the router names them → their labels, per thread (no shared lock per request).
    static ROUTES: std::cell::RefCell<std::collections::HashMap<Box<str>, &'static str>> =
        std::cell::RefCell::default();
}

/// Route templates and states as `&'static str`, each leaked once: the set is bounded by the routes and states
/// in the code, so label values are compared and hashed without allocating per request.
fn intern(s: &str) -> &'static str {
    static SET: OnceLock<RwLock<HashSet<&'static str>>> = OnceLock::new();
    let set = SET.get_or_init(RwLock::default);
    if let Some(v) = set.read().get(s) {
        return v;
    }
    let mut w = set.write();
    if let Some(v) = w.get(s) {
        return v;
    }
    let v: &'static str = Box::leak(s.to_owned().into_boxed_str());
    w.insert(v);
    v
}

/// A route template as a label, parameters written `:name` (`/epayment/v1/payments/:reference`): braces in
/// label values trip simple exposition parsers. Converted once per route, then interned.
fn route_label(template: &str) -> &'static str {
    ROUTES.with(|r| {
        if let Some(l) = r.borrow().get(template) {
            return *l;
        }
        let label = intern(&template.replace('{', ":").replace('}', ""));
        r.borrow_mut().insert(template.into(), label);
        label
    })
}

/// The method as a bounded label (`OTHER` for extension methods).
fn method_label(m: &http::Method) -> &'static str {
    match *m {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::CONNECT => "CONNECT",
        http::Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}

/// The middleware that counts every request by route template, method and status, and times it.
pub(crate) async fn layer(State(s): State<Shared>, req: Request, next: Next) -> Response {
    let Some(m) = s.metrics.as_ref() else {
        return next.run(req).await;
    };
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED, |p| route_label(p.as_str()));
    let method = method_label(req.method());
    let started = Instant::now();
    let resp = next.run(req).await;
    m.request(route, method, resp.status().as_u16(), started.elapsed());
    resp
}

/// `GET /metrics`.
pub(crate) async fn serve(State(s): State<Shared>) -> Response {
    match s.metrics.as_ref() {
        Some(m) => (
            [(
                http::header::CONTENT_TYPE,
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            )],
            m.encode(),
        )
            .into_response(),
        None => http::StatusCode::NOT_FOUND.into_response(),
    }
}

/// How often an instance on a shared store recounts the aggregates (other instances' writes reach its gauges
/// within this time).
const SHARED_RECOUNT: Duration = Duration::from_secs(5);

/// Reads the aggregate counts from the store into the gauges once.
pub(crate) async fn recount(s: &Shared) {
    if let Some(m) = s.metrics.as_ref() {
        match s.store.state_counts().await {
            Ok(c) => m.set_counts(&c),
            Err(e) => tracing::warn!(error = %e, "counting aggregates for the metrics failed"),
        }
    }
}

/// On a shared store: recounts the aggregates now and then, off the scrape path.
pub(crate) async fn recount_shared(s: Shared, shutdown: tokio_util::sync::CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(SHARED_RECOUNT) => {}
            _ = shutdown.cancelled() => return,
        }
        recount(&s).await;
    }
}
