//! Stored sessions to wire bodies (pure).

use url::Url;
use vipps_types::checkout::{
    Amount, BillingDetails, InitiateSessionResponse, PaymentDetails, PaymentMethod, PaymentState,
    SessionResponse, ShippingDetails, SubscriptionDetails, SubscriptionState, TransactionAggregate,
    UserInfo,
};

use super::domain::{Kind, SState, Session};

/// A session id: 22 characters of URL-safe base64, like the vendor's (`v52EtjZriRmGiKiAKHByK2`).
pub(super) fn session_id(bytes: [u8; 16]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The checkout token: the session's sales unit and reference, and its secret. Neither half has a `.`, so the
/// page can find the session from the token alone and then compare the secret.
pub(super) fn token(s: &Session) -> String {
    format!("{}.{}.{}", s.msn, s.reference, s.token.0)
}

/// Splits a checkout token into sales unit, reference and secret.
pub(super) fn parse_token(t: &str) -> Option<(&str, &str, &str)> {
    let mut it = t.splitn(3, '.');
    let (msn, reference, secret) = (it.next()?, it.next()?, it.next()?);
    (!msn.is_empty() && !reference.is_empty() && !secret.is_empty())
        .then_some((msn, reference, secret))
}

/// The path of the checkout page (`checkoutFrontendUrl`); the merchant opens it with `?token=`.
pub(super) const FRONTEND_PATH: &str = "_emulator/checkout/v3/";

/// The answer to a create.
pub(super) fn initiated(s: &Session, base: &Url) -> InitiateSessionResponse {
    let frontend = base.join(FRONTEND_PATH).expect("static path joins");
    let polling = base
        .join(&format!("checkout/v3/session/{}", s.reference))
        .map(|u| u.to_string())
        .unwrap_or_default();
    InitiateSessionResponse {
        token: token(s),
        checkout_frontend_url: frontend.to_string(),
        polling_url: polling,
    }
}

/// The state of a session's payment, as another product reports it.
#[derive(Debug, Clone, Default)]
pub(super) struct PaymentFacts {
    /// The ePayment state (`CREATED`, `AUTHORIZED`, `ABORTED`, `EXPIRED`, `TERMINATED`).
    pub state: &'static str,
    pub authorized: i64,
    pub captured: i64,
    pub refunded: i64,
    pub cancelled: i64,
}

fn amount(value: i64, currency: &str) -> Amount {
    Amount {
        value,
        currency: currency.to_owned(),
    }
}

/// The Checkout payment state of an ePayment state: an aborted or expired payment is `TERMINATED` here.
pub(super) fn payment_state(epayment: &str) -> PaymentState {
    match epayment {
        "CREATED" => PaymentState::Created,
        "AUTHORIZED" => PaymentState::Authorized,
        _ => PaymentState::Terminated,
    }
}

/// `GET /checkout/v3/session/{reference}` (and the callback's body). `payment` is the session's payment, when it
/// has one; `agreement_state` the agreement's current status.
pub(super) fn session(
    s: &Session,
    payment: Option<&PaymentFacts>,
    agreement_state: Option<&str>,
) -> SessionResponse {
    let started = s.state != SState::Created;
    let payment_details = match (started, &s.amount, payment) {
        (true, Some(a), Some(p)) => Some(PaymentDetails {
            amount: a.clone(),
            state: payment_state(p.state),
            aggregate: Some(TransactionAggregate {
                cancelled_amount: Some(amount(p.cancelled, &a.currency)),
                captured_amount: Some(amount(p.captured, &a.currency)),
                refunded_amount: Some(amount(p.refunded, &a.currency)),
                authorized_amount: Some(amount(p.authorized, &a.currency)),
            }),
            type_: Some("WALLET".into()),
        }),
        // A subscription's initial charge is a Recurring charge: the session reports its amount and whether the
        // user approved it.
        (true, Some(a), None) if s.kind == Kind::Subscription => Some(PaymentDetails {
            amount: a.clone(),
            state: match s.state {
                SState::Successful => PaymentState::Authorized,
                SState::Initiated => PaymentState::Created,
                _ => PaymentState::Terminated,
            },
            aggregate: None,
            type_: Some("WALLET".into()),
        }),
        _ => None,
    };
    let success = s.state == SState::Successful;
    let d = s.details.as_ref().filter(|_| success);
    SessionResponse {
        session_id: s.session_id.clone(),
        merchant_serial_number: Some(s.msn.clone()),
        reference: s.reference.clone(),
        session_state: s.state.wire(),
        payment_method: (started && (payment_details.is_some() || success))
            .then_some(PaymentMethod::Wallet),
        subscription_details: (s.kind == Kind::Subscription).then(|| SubscriptionDetails {
            state: Some(SubscriptionState::from_wire(
                agreement_state
                    .or(s.agreement.as_ref().map(|(_, st)| st.as_str()))
                    .unwrap_or("PENDING"),
            )),
            agreement_id: s.agreement.as_ref().map(|(id, _)| id.clone()),
        }),
        payment_details,
        user_info: s.sub.as_ref().filter(|_| success).map(|sub| UserInfo {
            sub: sub.clone(),
            email: d.map(|d| d.email.clone()),
        }),
        shipping_details: d
            .filter(|d| d.street_address.is_some() || d.shipping.is_some())
            .map(|d| ShippingDetails {
                first_name: Some(d.first_name.clone()),
                last_name: Some(d.last_name.clone()),
                email: Some(d.email.clone()),
                phone_number: Some(d.phone_number.clone()),
                street_address: d.street_address.clone(),
                postal_code: d.postal_code.clone(),
                city: d.city.clone(),
                country: d.country.clone(),
                shipping_method_id: d.shipping.as_ref().map(|(id, _)| id.clone()),
                amount: d.shipping.as_ref().and_then(|(_, a)| a.clone()),
                pickup_point: None,
            }),
        billing_details: d.map(|d| BillingDetails {
            first_name: d.first_name.clone(),
            last_name: d.last_name.clone(),
            email: d.email.clone(),
            phone_number: d.phone_number.clone(),
            street_address: d.street_address.clone(),
            postal_code: d.postal_code.clone(),
            city: d.city.clone(),
            country: d.country.clone(),
        }),
        custom_consent_provided: d.and_then(|d| d.consent),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        assert_eq!(
            parse_token("123456.order-0001.abcdef"),
            Some(("123456", "order-0001", "abcdef"))
        );
        assert_eq!(parse_token("123456.order-0001"), None);
        assert_eq!(parse_token("..x"), None);
        assert_eq!(session_id([7; 16]).len(), 22);
    }
}
