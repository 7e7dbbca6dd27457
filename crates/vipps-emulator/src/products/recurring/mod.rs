//! The Recurring API v3: agreements from draft to acceptance, stop and expiry, charges from creation through
//! due, processing and retries on emulator time to charged, reserved, captured, refunded, cancelled or failed, and
//! the `recurring.*.v1` webhook events.
//!
//! - `api.rs`: routes, authentication and validation, handing commands to the platform; Recurring problems.
//! - `commands.rs`: what each operation does to a stored agreement or charge, and which events it emits (pure).
//! - `domain.rs`: the two state machines and the magic amounts (pure).
//! - `list.rs`: listing (agreements of a sales unit, charges of an agreement), by the store's index.
//! - `render.rs`: stored documents to wire bodies (pure).
//! - `controls.rs`: the confirmation page, acting as the user, failing a charge, the due count.
//! - `view.rs`: how the dashboard shows an agreement and a charge.
//! - `facade.rs`: the only part other products may use (create an accepted agreement, read its status).

mod api;
mod commands;
mod controls;
mod domain;
pub(crate) mod facade;
mod list;
mod render;
mod view;

use axum::Router;
use utoipa_axum::router::OpenApiRouter;

use self::commands::{AgreementOp, ChargeOp};
use self::domain::{Agreement, Charge};
use crate::platform::Shared;
use crate::platform::aggregate::{Aggregate, Command, Decoded, Decoder, decode};
use crate::platform::product::{AggregateView, Product};
use crate::platform::ratelimit::RateLimit;

/// The Recurring product.
#[derive(Debug, Default)]
pub(crate) struct Recurring;

impl Product for Recurring {
    fn name(&self) -> &'static str {
        "recurring"
    }

    fn routes(&self) -> Router<Shared> {
        api::routes()
    }

    fn controls(&self) -> OpenApiRouter<Shared> {
        controls::routes()
    }

    fn specs(&self) -> Vec<(&'static str, &'static str)> {
        vec![(
            "recurring.v3.yml",
            include_str!("../../../specs/recurring.v3.yml"),
        )]
    }

    fn event_types(&self) -> Vec<String> {
        vipps_types::recurring::recurring_event_types()
    }

    fn kinds(&self) -> &'static [(&'static str, &'static str)] {
        &[(Agreement::KIND, "agreements"), (Charge::KIND, "charges")]
    }

    fn settle(&self, kind: &str, tenant: &str, id: &str) -> Option<Box<dyn Command>> {
        match kind {
            k if k == Agreement::KIND => {
                Some(commands::modify_agreement(tenant, id, AgreementOp::Settle))
            }
            k if k == Charge::KIND => {
                Some(commands::modify_charge(tenant, None, id, ChargeOp::Settle))
            }
            _ => None,
        }
    }

    fn decoder(&self, kind: &str) -> Option<Decoder> {
        match kind {
            k if k == Agreement::KIND => Some(decode::<Agreement> as Decoder),
            k if k == Charge::KIND => Some(decode::<Charge> as Decoder),
            _ => None,
        }
    }

    fn states(&self, kind: &str) -> &'static [&'static str] {
        match kind {
            k if k == Agreement::KIND => &["PENDING", "ACTIVE", "STOPPED", "EXPIRED"],
            k if k == Charge::KIND => &[
                "PENDING",
                "DUE",
                "PROCESSING",
                "RESERVED",
                "CHARGED",
                "PARTIALLY_CAPTURED",
                "FAILED",
                "CANCELLED",
                "PARTIALLY_REFUNDED",
                "REFUNDED",
            ],
            _ => &[],
        }
    }

    fn rate_limits(&self) -> Vec<RateLimit> {
        api::rate_limits()
    }

    fn view(&self, kind: &str, doc: &Decoded, base: &url::Url) -> Option<AggregateView> {
        match kind {
            k if k == Agreement::KIND => doc
                .downcast_ref::<Agreement>()
                .map(|a| view::agreement(a, base)),
            k if k == Charge::KIND => doc.downcast_ref::<Charge>().map(|c| view::charge(c, base)),
            _ => None,
        }
    }
}
