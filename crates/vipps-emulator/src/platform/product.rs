//! The one interface between the platform core and a product API.

use std::sync::Arc;

use axum::Router;

use super::Shared;
use super::aggregate::Command;

/// A product API served by the platform (ePayment, and later Recurring, Checkout...).
///
/// The core calls only these methods: it mounts the routes, accepts webhook registrations for the event types,
/// and asks for the command that applies time-driven changes to an aggregate that has become due.
pub(crate) trait Product: Send + Sync + 'static {
    /// A short name, for logs.
    fn name(&self) -> &'static str;
    /// The API routes (behind authentication, the header contract, the request record and fault injection).
    fn routes(&self) -> Router<Shared>;
    /// Test controls under `/_emulator/` (acting as the user and similar).
    fn controls(&self) -> Router<Shared> {
        Router::new()
    }
    /// Webhook event types this product emits.
    fn event_types(&self) -> Vec<String>;
    /// The aggregate kinds this product stores, with the label under which the health endpoint counts them.
    fn kinds(&self) -> &'static [(&'static str, &'static str)];
    /// The command that persists time-driven changes of a due aggregate of one of this product's kinds.
    fn settle(&self, kind: &str, tenant: &str, id: &str) -> Option<Box<dyn Command>>;
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

    /// The health label of an aggregate kind.
    pub(crate) fn label(&self, kind: &str) -> Option<&'static str> {
        self.0
            .iter()
            .flat_map(|p| p.kinds().iter())
            .find(|(k, _)| *k == kind)
            .map(|(_, l)| *l)
    }
}
