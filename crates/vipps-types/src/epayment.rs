//! ePayment API v1 (`/epayment/v1`) bodies, states and events, per the official spec v1.4.1.
//!
//! Request bodies reject unknown fields (the real API does); response bodies ignore fields they do not know,
//! so a client keeps working when the vendor adds some. Enums have an `Unknown` catch-all.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::headers::MerchantSerialNumber;
use crate::ids::{PspReference, Reference};
use crate::money::Amount;
use crate::open_enum;
use crate::receipt::Receipt;

/// Path of create (`POST`).
pub const PAYMENTS_PATH: &str = "/epayment/v1/payments";

open_enum! {
    /// How the user is brought to the payment confirmation screen.
    pub enum UserFlow {
        /// A push message to a known customer; requires `customer`.
        PushMessage = "PUSH_MESSAGE",
        /// App-switch from the merchant's native app.
        NativeRedirect = "NATIVE_REDIRECT",
        /// The normal browser flow; requires `returnUrl`.
        WebRedirect = "WEB_REDIRECT",
        /// A QR code to scan.
        Qr = "QR",
    }
}

open_enum! {
    /// Whether the customer is physically present.
    pub enum CustomerInteraction {
        /// In a store.
        CustomerPresent = "CUSTOMER_PRESENT",
        /// Online (the default).
        CustomerNotPresent = "CUSTOMER_NOT_PRESENT",
    }
}

open_enum! {
    /// The payment method.
    pub enum PaymentMethodType {
        /// A card in the Vipps or MobilePay app.
        Wallet = "WALLET",
        /// A free-standing card payment; only with `WEB_REDIRECT`.
        Card = "CARD",
    }
}

open_enum! {
    /// The state of a payment. Every state but `CREATED` is final.
    pub enum State {
        /// The user has not acted yet.
        Created = "CREATED",
        /// The user aborted before authorization.
        Aborted = "ABORTED",
        /// The user did not act in time.
        Expired = "EXPIRED",
        /// The user approved; capture, refund and cancel move only the aggregate from here.
        Authorized = "AUTHORIZED",
        /// The merchant cancelled before authorization.
        Terminated = "TERMINATED",
    }
}

impl State {
    /// Whether no further state change can happen.
    pub fn is_final(&self) -> bool {
        !matches!(self, State::Created)
    }
}

open_enum! {
    /// The name of a payment event.
    pub enum PaymentEventName {
        /// The payment was created.
        Created = "CREATED",
        /// The user aborted.
        Aborted = "ABORTED",
        /// The payment expired.
        Expired = "EXPIRED",
        /// The merchant cancelled (after authorization).
        Cancelled = "CANCELLED",
        /// An amount was captured.
        Captured = "CAPTURED",
        /// An amount was refunded.
        Refunded = "REFUNDED",
        /// The user approved.
        Authorized = "AUTHORIZED",
        /// The merchant cancelled before authorization.
        Terminated = "TERMINATED",
    }
}

impl PaymentEventName {
    /// The Webhooks API event type for this event, such as `epayments.payment.captured.v1`.
    pub fn webhook_event_type(&self) -> String {
        format!(
            "epayments.payment.{}.v1",
            self.as_str().to_ascii_lowercase()
        )
    }
}

open_enum! {
    /// The format of a QR code returned for `userFlow: QR`.
    pub enum QrFormatKind {
        /// The target URL as text.
        TextTargetUrl = "TEXT/TARGETURL",
        /// An SVG image (the default).
        ImageSvg = "IMAGE/SVG+XML",
        /// A PNG image.
        ImagePng = "IMAGE/PNG",
    }
}

/// The customer, when known: exactly one of the three fields must be set.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Customer {
    /// MSISDN digits, `^\d{10,15}$`, such as `4791234567`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
    /// The full content of the user's personal QR code, 5 to 255 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub personal_qr: Option<String>,
    /// A customer token from a `user.checked-in.v1` event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_token: Option<String>,
}

impl Customer {
    /// A customer by phone number.
    pub fn phone(number: impl Into<String>) -> Self {
        Customer {
            phone_number: Some(number.into()),
            ..Customer::default()
        }
    }

    /// How many of the three identifiers are set (valid when exactly one).
    pub fn identifiers_set(&self) -> usize {
        [
            self.phone_number.is_some(),
            self.personal_qr.is_some(),
            self.customer_token.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count()
    }
}

/// The payment method of a create request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentMethod {
    /// `WALLET` or `CARD`.
    #[serde(rename = "type")]
    pub type_: PaymentMethodType,
}

/// The payment method as reported on a payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentMethodResponse {
    /// `WALLET` or `CARD`.
    #[serde(rename = "type")]
    pub type_: PaymentMethodType,
    /// The card's six-digit BIN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_bin: Option<String>,
}

/// The user information requested with the payment.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileRequest {
    /// Space-separated scopes: `name`, `address`, `email`, `phoneNumber`, `birthDate`, `nin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// The profile of a payment.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ProfileResponse {
    /// Set once the payment is authorized when a scope was requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
}

/// Airline compliance data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AirlineData {
    /// Agency invoice number, 1 to 6 characters.
    pub agency_invoice_number: String,
    /// IATA 3-digit accounting code.
    pub airline_code: String,
    /// IATA 2-letter airline code.
    pub airline_designator_code: String,
    /// Passenger name, 1 to 49 characters.
    pub passenger_name: String,
    /// Ticket number, 1 to 150 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket_number: Option<String>,
}

/// Additional compliance data.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IndustryData {
    /// Airline data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub airline_data: Option<AirlineData>,
}

/// The QR code format for `userFlow: QR`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QrFormat {
    /// The format.
    pub format: QrFormatKind,
    /// Pixel size, 100 to 2000, PNG only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u32>,
}

/// Metadata: at most 5 pairs, keys up to 100 and values up to 500 characters.
pub type Metadata = BTreeMap<String, String>;

/// `POST /epayment/v1/payments` body.
///
/// ```
/// use vipps_types::epayment::*;
/// use vipps_types::money::{Amount, Currency};
///
/// let req = CreatePaymentRequest::new(
///     Amount::new(Currency::Nok, 1000).unwrap(),
///     "acme-shop-123-order123abc".parse().unwrap(),
///     UserFlow::WebRedirect,
/// )
/// .with_return_url("https://example.com/return");
/// let json = serde_json::to_value(&req).unwrap();
/// assert_eq!(json["paymentMethod"]["type"], "WALLET");
/// assert!(serde_json::from_str::<CreatePaymentRequest>(r#"{"amount":{"currency":"NOK","value":1000},
///   "paymentMethod":{"type":"WALLET"},"reference":"abcdefgh","userFlow":"QR","surprise":1}"#).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreatePaymentRequest {
    /// The amount.
    pub amount: Amount,
    /// The customer, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<Customer>,
    /// Whether the customer is present (default `CUSTOMER_NOT_PRESENT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_interaction: Option<CustomerInteraction>,
    /// Compliance data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub industry_data: Option<IndustryData>,
    /// The payment method.
    pub payment_method: PaymentMethod,
    /// User information to request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<ProfileRequest>,
    /// The merchant's reference, unique per MSN.
    pub reference: Reference,
    /// Where the user returns: `https://` or a custom scheme.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_url: Option<String>,
    /// The user flow.
    pub user_flow: UserFlow,
    /// When the payment expires (RFC 3339); only with `PUSH_MESSAGE` or `QR`, and requires `receipt`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub expires_at: Option<OffsetDateTime>,
    /// QR format, for `userFlow: QR`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qr_format: Option<QrFormat>,
    /// A description shown to the user, 3 to 100 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_description: Option<String>,
    /// A receipt (Order Management).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<Receipt>,
    /// Merchant metadata passed through to the payment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
    /// Where a receipt can be viewed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt_url: Option<String>,
}

impl CreatePaymentRequest {
    /// A `WALLET` payment with the required fields.
    pub fn new(amount: Amount, reference: Reference, user_flow: UserFlow) -> Self {
        CreatePaymentRequest {
            amount,
            customer: None,
            customer_interaction: None,
            industry_data: None,
            payment_method: PaymentMethod {
                type_: PaymentMethodType::Wallet,
            },
            profile: None,
            reference,
            return_url: None,
            user_flow,
            expires_at: None,
            qr_format: None,
            payment_description: None,
            receipt: None,
            metadata: None,
            receipt_url: None,
        }
    }

    /// Sets `returnUrl`.
    pub fn with_return_url(mut self, url: impl Into<String>) -> Self {
        self.return_url = Some(url.into());
        self
    }

    /// Sets `customer` to a phone number.
    pub fn with_phone_number(mut self, msisdn: impl Into<String>) -> Self {
        self.customer = Some(Customer::phone(msisdn));
        self
    }

    /// Sets `paymentDescription`.
    pub fn with_description(mut self, text: impl Into<String>) -> Self {
        self.payment_description = Some(text.into());
        self
    }
}

/// `201` body of create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatePaymentResponse {
    /// Where to send the user; absent for `PUSH_MESSAGE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_url: Option<String>,
    /// The reference.
    pub reference: Reference,
}

/// The four running totals of a payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Aggregate {
    /// Authorized (reserved) amount.
    pub authorized_amount: Amount,
    /// Cancelled amount.
    pub cancelled_amount: Amount,
    /// Captured amount.
    pub captured_amount: Amount,
    /// Refunded amount.
    pub refunded_amount: Amount,
}

/// `GET /epayment/v1/payments/{reference}` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetPaymentResponse {
    /// Running totals.
    pub aggregate: Aggregate,
    /// The payment amount.
    pub amount: Amount,
    /// The state.
    pub state: State,
    /// The payment method.
    pub payment_method: PaymentMethodResponse,
    /// The profile.
    pub profile: ProfileResponse,
    /// The pspReference of the payment (its CREATED event).
    pub psp_reference: PspReference,
    /// The landing page URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_url: Option<String>,
    /// The reference.
    pub reference: Reference,
    /// The metadata given at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
}

/// Capture or refund body: `{"modificationAmount": {...}}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModificationRequest {
    /// The amount to capture or refund.
    pub modification_amount: Amount,
}

/// `POST .../capture` body.
pub type CaptureModificationRequest = ModificationRequest;
/// `POST .../refund` body.
pub type RefundModificationRequest = ModificationRequest;

/// `POST .../cancel` body (optional).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CancelModificationRequest {
    /// Cancel only if not yet authorized; otherwise error 6060.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_transaction_only: Option<bool>,
}

/// A modification with its own reference (spec schema `PaymentAdjustment`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PaymentAdjustment {
    /// The amount.
    pub modification_amount: Amount,
    /// The modification's reference.
    pub modification_reference: Reference,
}

/// `200` body of capture, refund and cancel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModificationResponse {
    /// The payment amount.
    pub amount: Amount,
    /// The state.
    pub state: State,
    /// Running totals after the modification.
    pub aggregate: Aggregate,
    /// The payment's pspReference.
    pub psp_reference: PspReference,
    /// The reference.
    pub reference: Reference,
}

/// One entry of `GET /epayment/v1/payments/{reference}/events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentEvent {
    /// The reference.
    pub reference: Reference,
    /// This event's own pspReference.
    pub psp_reference: PspReference,
    /// What happened.
    pub name: PaymentEventName,
    /// The amount of this event.
    pub amount: Amount,
    /// When, in UTC.
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
    /// The idempotency key of the request that caused it; `null` for events without a request.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Whether the operation succeeded.
    pub success: bool,
}

/// The payload of an ePayment webhook (`epayments.payment.*.v1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookEvent {
    /// The sales unit.
    pub msn: MerchantSerialNumber,
    /// The reference.
    pub reference: Reference,
    /// The firing event's pspReference.
    pub psp_reference: PspReference,
    /// What happened.
    pub name: PaymentEventName,
    /// The amount of the event.
    pub amount: Amount,
    /// When, in UTC.
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
    /// The idempotency key of the request that caused it.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Whether the operation succeeded. A delivered event is not automatically a successful operation.
    pub success: bool,
}

/// `POST /epayment/v1/test/payments/{reference}/approve` body (test environment only).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ForceApprove {
    /// The test customer who approves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<Customer>,
    /// The token from the `redirectUrl` of the create response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// The path of one payment.
pub fn payment_path(reference: &Reference) -> String {
    format!("{PAYMENTS_PATH}/{reference}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_keep_unknown_values() {
        let s: State = serde_json::from_str("\"PENDING_SOMETHING\"").unwrap();
        assert_eq!(s, State::Unknown("PENDING_SOMETHING".into()));
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"PENDING_SOMETHING\"");
        assert!(State::Authorized.is_final());
        assert!(!State::Created.is_final());
        assert_eq!(
            PaymentEventName::Captured.webhook_event_type(),
            "epayments.payment.captured.v1"
        );
        assert_eq!(State::KNOWN.len(), 5);
        assert_eq!(PaymentEventName::KNOWN.len(), 8);
    }

    #[test]
    fn event_timestamps_are_rfc3339_utc() {
        let e: PaymentEvent = serde_json::from_str(
            r#"{"reference":"abcdefgh","pspReference":"p1","name":"CREATED","amount":{"currency":"NOK","value":100},
            "timestamp":"2022-12-31T00:00:00Z","idempotencyKey":null,"success":true}"#,
        )
        .unwrap();
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["timestamp"], "2022-12-31T00:00:00Z");
        assert_eq!(v["idempotencyKey"], serde_json::Value::Null);
    }
}
