//! The Checkout API v3: sessions (payment and subscription), the hosted checkout page, the merchant's
//! "payment completed" callback and dynamic logistics. A payment session's payment is an ordinary ePayment
//! payment and a subscription session's agreement an ordinary Recurring agreement: this product reaches them only
//! through `epayment::facade` and `recurring::facade`, and hears about a person's approval of a payment through
//! the registry (`Product::follows`).
//!
//! - `api.rs`: routes, authentication with the API keys, validation, the Checkout problem format.
//! - `domain.rs`: the session state machine (pure). `commands.rs`: what each change does to a stored session.
//! - `flow.rs`: following the payment, completing, the callback and its retries, dynamic logistics.
//! - `render.rs`: stored sessions to wire bodies, the checkout token.
//! - `pages.rs`: the checkout page. `controls.rs`: acting as the user (JSON).
//! - `view.rs`: how the dashboard shows a session.
//!
//! See `docs/checkout.md` for the choices made where the vendor's sources are silent.

mod api;
mod commands;
mod controls;
mod domain;
mod flow;
mod pages;
mod render;
mod view;

use axum::Router;
use utoipa_axum::router::OpenApiRouter;

use self::commands::Change;
use self::domain::Session;
use crate::platform::Shared;
use crate::platform::aggregate::{Aggregate, AggregateKey, Command, Decoded, Decoder, decode};
use crate::platform::product::{AggregateView, Product};
use crate::platform::store::BoxFut;

/// The Checkout product.
#[derive(Debug, Default)]
pub(crate) struct Checkout;

impl Product for Checkout {
    fn name(&self) -> &'static str {
        "checkout"
    }

    fn routes(&self) -> Router<Shared> {
        api::routes()
    }

    fn controls(&self) -> OpenApiRouter<Shared> {
        controls::routes().merge(
            pages::routes()
                .layer(axum::middleware::from_fn(
                    crate::platform::html::same_origin,
                ))
                .into(),
        )
    }

    fn specs(&self) -> Vec<(&'static str, &'static str)> {
        vec![(
            "checkout.v3.yml",
            include_str!("../../../specs/checkout.v3.yml"),
        )]
    }

    fn event_types(&self) -> Vec<String> {
        Vec::new()
    }

    fn kinds(&self) -> &'static [(&'static str, &'static str)] {
        &[(Session::KIND, "checkout_sessions")]
    }

    fn settle(&self, kind: &str, tenant: &str, id: &str) -> Option<Box<dyn Command>> {
        (kind == Session::KIND).then(|| commands::modify(tenant, id, Change::Settle))
    }

    fn decoder(&self, kind: &str) -> Option<Decoder> {
        (kind == Session::KIND).then_some(decode::<Session> as Decoder)
    }

    fn states(&self, kind: &str) -> &'static [&'static str] {
        if kind == Session::KIND {
            commands::STATES
        } else {
            &[]
        }
    }

    fn view(&self, kind: &str, doc: &Decoded, base: &url::Url) -> Option<AggregateView> {
        if kind != Session::KIND {
            return None;
        }
        doc.downcast_ref::<Session>()
            .map(|s| view::session(s, base))
    }

    /// ePayment payments (a session follows its payment), and its own sessions: the sweeper settles a session
    /// when a callback attempt is due, and the attempt (I/O, which a pure command cannot do) is made here.
    fn follows(&self) -> &'static [&'static str] {
        &[
            crate::products::epayment::facade::PAYMENT_KIND,
            Session::KIND,
        ]
    }

    fn followed_changed(&self, s: Shared, key: AggregateKey) -> BoxFut<'static, ()> {
        Box::pin(async move {
            if key.kind == Session::KIND {
                // In a task of its own: the sweeper does not wait for a merchant's answer.
                tokio::spawn(flow::deliver_due(s, key.tenant, key.id));
                return;
            }
            let meta = flow::background_meta("/checkout/v3/follow");
            if let Err(e) = flow::load(&s, &meta, &key.tenant, &key.id).await {
                tracing::warn!(reference = %key.id, status = %e.0.status(), "checkout could not follow its payment");
            }
        })
    }
}
