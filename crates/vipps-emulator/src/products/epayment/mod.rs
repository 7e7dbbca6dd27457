//! The ePayment API v1: payments from creation to capture, refund and cancel, the user's approval, expiry on
//! emulator time, and the `epayments.payment.*.v1` webhook events.
//!
//! - `api.rs`: routes, authentication and validation of requests, handing commands to the platform.
//! - `commands.rs`: what each operation does to a stored payment and which events it emits (pure).
//! - `domain.rs`: the state machine and the magic amounts (pure).
//! - `render.rs`: stored payments to wire bodies (pure).
//! - `controls.rs`: acting as the user (JSON controls).
//! - `pages.rs`: the payer's pages (landing page, app screen, inbox); `qr.rs`: the QR image.
//! - `view.rs`: how the dashboard shows a payment.
//! - `facade.rs`: the only part other products may use (create, decide and read a payment on a user's behalf).
//! - `seed.rs`: the `payments` section of a scenario file.

mod api;
mod commands;
mod controls;
mod domain;
pub(crate) mod facade;
mod pages;
mod qr;
mod render;
mod seed;
mod view;

use axum::Router;
use utoipa_axum::router::OpenApiRouter;

use self::commands::Modification;
use self::domain::Payment;
use crate::platform::Shared;
use crate::platform::aggregate::{Aggregate, Command, Decoded, Decoder, decode};
use crate::platform::product::{AggregateView, Product};
use crate::platform::ratelimit::RateLimit;

/// The ePayment product.
#[derive(Debug, Default)]
pub(crate) struct EPayment;

impl Product for EPayment {
    fn name(&self) -> &'static str {
        "epayment"
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
            "epayment.v1.yml",
            include_str!("../../../specs/epayment.v1.yml"),
        )]
    }

    fn event_types(&self) -> Vec<String> {
        vipps_types::webhooks::epayment_event_types()
    }

    fn seed(
        &self,
        section: &str,
        item: &serde_json::Value,
    ) -> Option<Result<Vec<crate::platform::product::SeedRequest>, String>> {
        (section == "payments").then(|| seed::payment(item))
    }

    fn kinds(&self) -> &'static [(&'static str, &'static str)] {
        &[(Payment::KIND, "payments")]
    }

    fn settle(&self, kind: &str, tenant: &str, id: &str) -> Option<Box<dyn Command>> {
        (kind == Payment::KIND).then(|| commands::modify(tenant, id, Modification::Settle))
    }

    fn decoder(&self, kind: &str) -> Option<Decoder> {
        (kind == Payment::KIND).then_some(decode::<Payment> as Decoder)
    }

    fn states(&self, kind: &str) -> &'static [&'static str] {
        if kind == Payment::KIND {
            &["CREATED", "AUTHORIZED", "ABORTED", "EXPIRED", "TERMINATED"]
        } else {
            &[]
        }
    }

    fn rate_limits(&self) -> Vec<RateLimit> {
        api::rate_limits()
    }

    fn view(&self, kind: &str, doc: &Decoded, base: &url::Url) -> Option<AggregateView> {
        if kind != Payment::KIND {
            return None;
        }
        doc.downcast_ref::<Payment>()
            .map(|p| view::payment(p, base))
    }
}
