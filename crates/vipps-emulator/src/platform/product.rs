//! The one interface between the platform core and a product API.

use std::sync::Arc;

use axum::Router;
use utoipa_axum::router::OpenApiRouter;

use super::Shared;
use super::aggregate::{AggregateKey, Command, Decoded, Decoder};
use super::store::BoxFut;

/// A product API served by the platform (ePayment, and later Recurring, Checkout...).
///
/// The core calls only these methods: it mounts the routes, accepts webhook registrations for the event types,
/// and asks for the command that applies time-driven changes to an aggregate that has become due.
pub(crate) trait Product: Send + Sync + 'static {
    /// A short name, for logs.
    fn name(&self) -> &'static str;
    /// The API routes (behind authentication, the header contract, the request record and fault injection).
    fn routes(&self) -> Router<Shared>;
    /// Test controls under `/_emulator/` (acting as the user and similar). JSON controls are registered with
    /// their OpenAPI operation (`utoipa_axum::routes!`), so `/_emulator/openapi.json` lists them; HTML pages
    /// are merged in as plain routes.
    fn controls(&self) -> OpenApiRouter<Shared> {
        OpenApiRouter::new()
    }
    /// The vendor's official OpenAPI specs of this product's API: (file name, YAML), served under
    /// `/_emulator/specs/`.
    fn specs(&self) -> Vec<(&'static str, &'static str)> {
        Vec::new()
    }
    /// Webhook event types this product emits.
    fn event_types(&self) -> Vec<String>;
    /// The aggregate kinds this product stores, with the label under which the health endpoint counts them.
    fn kinds(&self) -> &'static [(&'static str, &'static str)];
    /// The command that persists time-driven changes of a due aggregate of one of this product's kinds.
    fn settle(&self, kind: &str, tenant: &str, id: &str) -> Option<Box<dyn Command>>;
    /// How to decode a stored aggregate of one of this product's kinds (for the dashboard; `None`: the dashboard
    /// counts the kind but does not list it).
    fn decoder(&self, _kind: &str) -> Option<Decoder> {
        None
    }
    /// The state labels an aggregate of this kind can have, in the order the dashboard's filter offers them.
    fn states(&self, _kind: &str) -> &'static [&'static str] {
        &[]
    }
    /// How the dashboard shows one aggregate of one of this product's kinds (list columns, detail fields, the
    /// event timeline, links to its payer pages). `base` is the emulator's base URL.
    fn view(&self, _kind: &str, _doc: &Decoded, _base: &url::Url) -> Option<AggregateView> {
        None
    }
    /// The vendor's documented rate limits of this product's routes, applied with `--rate-limits`.
    fn rate_limits(&self) -> Vec<super::ratelimit::RateLimit> {
        Vec::new()
    }
    /// Aggregate kinds that this product wants to hear about when a person (the user-level controls, the payer's
    /// pages) or time (the sweeper) changes one of them: other products' kinds it builds on, or its own kinds whose
    /// due time means I/O that a pure command cannot do (a callback attempt). Products name each other's kinds only here,
    /// as strings; they never import each other's code.
    fn follows(&self) -> &'static [&'static str] {
        &[]
    }
    /// Called (and awaited) after a person or time changed an aggregate of a kind this product follows, so it can bring
    /// its own aggregates up to date. It must be idempotent: a product's reads reconcile the same way, so a
    /// notification lost with a crash is made good by the next read.
    fn followed_changed(&self, _s: Shared, _key: AggregateKey) -> BoxFut<'static, ()> {
        Box::pin(async {})
    }
    /// The requests that bring one item of a scenario file's section about (such as a payment in a given state),
    /// sent at start to the emulator's own routes as the item's merchant. `None`: `section` is not this
    /// product's; `Err`: the item is invalid (the reason names the field).
    fn seed(
        &self,
        _section: &str,
        _item: &serde_json::Value,
    ) -> Option<Result<Vec<SeedRequest>, String>> {
        None
    }
}

/// A request a scenario item is seeded with.
#[derive(Debug, Clone)]
pub(crate) struct SeedRequest {
    /// The sales unit it is sent for (default: the first configured merchant).
    pub msn: Option<String>,
    /// Method.
    pub method: http::Method,
    /// Path and query.
    pub path: String,
    /// JSON body.
    pub body: Option<serde_json::Value>,
    /// `Idempotency-Key`, for operations that take one.
    pub idempotency_key: Option<String>,
}

/// One aggregate as the dashboard shows it, built by its product: the dashboard renders it without knowing what
/// it is. Every string is plain text (the dashboard escapes it).
#[derive(Debug, Clone, Default)]
pub(crate) struct AggregateView {
    /// Its state label (as stored and filtered on).
    pub state: &'static str,
    /// Columns of its row in a list (the id, tenant, state and creation time are shown anyway).
    pub columns: Vec<(&'static str, String)>,
    /// Fields of its detail page.
    pub fields: Vec<(&'static str, String)>,
    /// What happened to it, oldest first.
    pub timeline: Vec<TimelineEntry>,
    /// Links (label, URL) to pages about it, such as the payer's page.
    pub links: Vec<(&'static str, String)>,
}

/// One entry of an aggregate's timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TimelineEntry {
    /// Emulator time (ms).
    pub at_ms: i64,
    /// What happened (`AUTHORIZED`).
    pub name: String,
    /// Details (amount, outcome).
    pub detail: String,
    /// The idempotency key of the request that caused it, if any.
    pub idempotency_key: Option<String>,
}

/// The products of a running emulator.
#[derive(Clone, Default)]
pub(crate) struct Registry(Vec<Arc<dyn Product>>);

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|p| p.name()))
            .finish()
    }
}

impl Registry {
    /// From a list of products.
    pub(crate) fn new(products: Vec<Arc<dyn Product>>) -> Self {
        Registry(products)
    }

    /// Every product.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<dyn Product>> {
        self.0.iter()
    }

    /// Every webhook event type of every product.
    pub(crate) fn event_types(&self) -> Vec<String> {
        self.0.iter().flat_map(|p| p.event_types()).collect()
    }

    /// The settle command for a due aggregate, from the product that owns its kind.
    pub(crate) fn settle(&self, kind: &str, tenant: &str, id: &str) -> Option<Box<dyn Command>> {
        self.0.iter().find_map(|p| p.settle(kind, tenant, id))
    }

    /// The product that owns an aggregate kind.
    pub(crate) fn owner(&self, kind: &str) -> Option<&Arc<dyn Product>> {
        self.0
            .iter()
            .find(|p| p.kinds().iter().any(|(k, _)| *k == kind))
    }

    /// Every aggregate kind with its label, in registration order.
    pub(crate) fn kinds(&self) -> impl Iterator<Item = (&'static str, &'static str)> + '_ {
        self.0.iter().flat_map(|p| p.kinds().iter().copied())
    }

    /// The kinds the dashboard lists (those whose product gives a decoder), with their labels.
    pub(crate) fn listed_kinds(&self) -> impl Iterator<Item = (&'static str, &'static str)> + '_ {
        self.0.iter().flat_map(|p| {
            p.kinds()
                .iter()
                .copied()
                .filter(|(k, _)| p.decoder(k).is_some())
        })
    }

    /// Whether some product follows aggregates of this kind.
    pub(crate) fn is_followed(&self, kind: &str) -> bool {
        self.0.iter().any(|p| p.follows().contains(&kind))
    }

    /// Tells the products that follow `key.kind` that a person changed that aggregate (see
    /// [`Product::followed_changed`]).
    pub(crate) async fn notify_followers(&self, s: &Shared, key: &AggregateKey) {
        for p in self.0.iter().filter(|p| p.follows().contains(&key.kind)) {
            p.followed_changed(s.clone(), key.clone()).await;
        }
    }

    /// The health label of an aggregate kind.
    pub(crate) fn label(&self, kind: &str) -> Option<&'static str> {
        self.0
            .iter()
            .flat_map(|p| p.kinds().iter())
            .find(|(k, _)| *k == kind)
            .map(|(_, l)| *l)
    }
}
