//! What other products may use of ePayment. Products never import each other's internals; a product whose
//! aggregates become ePayment payments (Checkout's payment sessions) creates, drives and reads them only through
//! this module, so the payment stays an ordinary ePayment payment (`GET /epayment/v1/payments/{reference}`,
//! capture, refund, cancel and the webhooks all work on it) and ePayment's internals stay free to change.
//!
//! The other direction goes through the platform: when a person approves or rejects a payment (the user-level
//! controls, the payer's pages, force approve), ePayment calls [`notify_followers`], and the registry tells every
//! product that follows `epayment.payment` (`Product::follows`).

use url::Url;
use vipps_types::money::Currency;

use super::api::load_settled;
use super::commands::{self, Draft, Expiry, Modification};
use super::domain::Payment;
use crate::platform::Shared;
use crate::platform::aggregate::{Aggregate, Command};
use crate::platform::http::{ApiError, RequestMeta};

/// The aggregate kind of a payment, for `Product::follows`.
pub(crate) const PAYMENT_KIND: &str = Payment::KIND;

/// A payment another product creates on the user's behalf (the user approves it on that product's page).
#[derive(Debug, Clone)]
pub(crate) struct NewPayment {
    /// Sales unit.
    pub msn: String,
    /// The merchant's reference (validated by the caller with the ePayment rules).
    pub reference: String,
    /// Currency.
    pub currency: Currency,
    /// Amount in minor units.
    pub amount: i64,
    /// Shown to the user.
    pub description: String,
    /// The user's phone number, if known.
    pub phone_number: Option<String>,
    /// Where the user returns to.
    pub return_url: String,
    /// When it expires unless approved (emulator time, ms).
    pub expires_ms: i64,
    /// Test merchant (magic amounts apply).
    pub test: bool,
    /// The emulator's base URL.
    pub base_url: Url,
    /// The idempotency key recorded on its `CREATED` event.
    pub key: String,
}

/// Creates the payment (`WEB_REDIRECT`, `WALLET`, no landing page of its own); answers 201, or 409 when the
/// reference is taken for the sales unit.
pub(crate) fn create(n: NewPayment) -> Box<dyn Command> {
    commands::create(Draft {
        msn: n.msn,
        reference: n.reference,
        currency: n.currency,
        amount: n.amount,
        user_flow: "WEB_REDIRECT".into(),
        method: "WALLET".into(),
        scope: None,
        metadata: None,
        expiry: Expiry::At(n.expires_ms),
        landing: None,
        base_url: n.base_url,
        test: n.test,
        key: n.key,
        description: Some(n.description),
        phone_number: n.phone_number,
        return_url: Some(n.return_url),
        qr_format: None,
        qr_size: None,
        followed: true,
    })
}

/// What the user decides.
#[derive(Debug, Clone)]
pub(crate) enum Decision {
    /// Approve, paying with this phone number (if given).
    Approve {
        /// The payer's phone number.
        phone: Option<String>,
    },
    /// Reject.
    Reject,
}

/// The user's decision on a payment: answers the payment (200), or the ePayment problem (a magic amount's
/// failure, a payment no longer waiting).
pub(crate) fn decide(msn: &str, reference: &str, d: Decision) -> Box<dyn Command> {
    let m = match d {
        Decision::Approve { phone } => Modification::PayerApprove { phone },
        Decision::Reject => Modification::UserReject,
    };
    commands::modify(msn, reference, m)
}

/// A payment as another product sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PaymentView {
    /// `CREATED`, `AUTHORIZED`, `ABORTED`, `EXPIRED` or `TERMINATED`.
    pub state: &'static str,
    /// ISO 4217.
    pub currency: &'static str,
    /// Amount in minor units.
    pub amount: i64,
    /// Authorized total.
    pub authorized: i64,
    /// Captured total.
    pub captured: i64,
    /// Refunded total.
    pub refunded: i64,
    /// Cancelled total.
    pub cancelled: i64,
    /// The phone number the user paid with.
    pub phone_number: Option<String>,
}

impl PaymentView {
    fn of(p: &Payment) -> Self {
        PaymentView {
            state: p.state.as_str(),
            currency: p.currency.code(),
            amount: p.amount,
            authorized: p.authorized,
            captured: p.captured,
            refunded: p.refunded,
            cancelled: p.cancelled,
            phone_number: p.phone_number.clone(),
        }
    }
}

/// Reads a payment, first persisting what time has done to it; `None` when it does not exist.
pub(crate) async fn read(
    s: &Shared,
    meta: &RequestMeta,
    msn: &str,
    reference: &str,
) -> Result<Option<PaymentView>, ApiError> {
    match load_settled(s, meta, msn, reference).await {
        Ok(p) => Ok(Some(PaymentView::of(&p))),
        Err(e) if e.0.status() == http::StatusCode::NOT_FOUND => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether a payment with this reference exists for the sales unit.
pub(crate) async fn exists(
    s: &Shared,
    meta: &RequestMeta,
    msn: &str,
    reference: &str,
) -> Result<bool, ApiError> {
    let doc = s
        .store
        .aggregate(
            &commands::key(msn, reference),
            crate::platform::aggregate::decode::<Payment>,
        )
        .await
        .map_err(|e| crate::platform::idempotency::internal(meta, &e))?;
    Ok(doc.is_some())
}

/// Tells the products that follow payments that a person changed this one.
pub(super) async fn notify_followers(s: &Shared, msn: &str, reference: &str) {
    s.products
        .notify_followers(s, &commands::key(msn, reference))
        .await;
}
