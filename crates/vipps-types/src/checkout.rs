//! Checkout API v3 (`/checkout/v3`) bodies, states and its problem format, per the official spec (December 2023)
//! and the newer fields of the official SDK's generated types (November 2024): `SUBSCRIPTION` sessions
//! (`type`, `subscription`, `subscriptionDetails`), `taxRate` on logistics options and order lines, and the
//! external payment methods. Where the two differ, the SDK types win.
//!
//! Request bodies reject unknown fields; response bodies ignore fields they do not know. Enums have an `Unknown`
//! catch-all. Amounts are integers in minor units. Strings that the API validates (the reference, URLs) are kept
//! as strings here, so that a body with a bad value still parses and the server can name the field and the rule.
//!
//! ```
//! use vipps_types::checkout::{InitiateSessionRequest, SessionType};
//!
//! let r: InitiateSessionRequest = serde_json::from_str(r#"{
//!   "merchantInfo": {
//!     "callbackUrl": "https://example.com/vipps/callback",
//!     "returnUrl": "https://example.com/vipps/return",
//!     "callbackAuthorizationToken": "c172ad8d-9499-41d4-b8ff-c689be6455e9"
//!   },
//!   "transaction": {
//!     "amount": {"value": 2000, "currency": "NOK"},
//!     "reference": "store-order-123",
//!     "paymentDescription": "One pair of socks"
//!   }
//! }"#).unwrap();
//! assert_eq!(r.session_type(), SessionType::Payment);
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::open_enum;

/// The base path of the API.
pub const BASE_PATH: &str = "/checkout/v3";

/// How long a session can be completed after it is created (minutes): the vendor's landing-page and app
/// timeouts together (5 + 5 minutes, see the emulator's `docs/checkout.md`).
pub const SESSION_LIFETIME_MINUTES: i64 = 10;

open_enum! {
    /// The state of a session (`ExternalSessionState`).
    pub enum SessionState {
        /// Created; the user has not started paying.
        SessionCreated = "SessionCreated",
        /// The user started paying; the payment exists.
        PaymentInitiated = "PaymentInitiated",
        /// Not completed in time.
        SessionExpired = "SessionExpired",
        /// Paid (the payment is authorized, or the subscription accepted).
        PaymentSuccessful = "PaymentSuccessful",
        /// Aborted or failed.
        PaymentTerminated = "PaymentTerminated",
    }
}

open_enum! {
    /// The kind of session (SDK types: `InitiatePaymentSessionRequest` and `InitiateSubscriptionSessionRequest`).
    pub enum SessionType {
        /// A one-time payment (the default when `type` is left out, as in the 2023 spec).
        Payment = "PAYMENT",
        /// A subscription: a Recurring agreement, with an optional initial payment.
        Subscription = "SUBSCRIPTION",
    }
}

open_enum! {
    /// The state of the session's payment.
    pub enum PaymentState {
        /// Waiting for the user.
        Created = "CREATED",
        /// Approved and reserved.
        Authorized = "AUTHORIZED",
        /// Aborted, expired or cancelled.
        Terminated = "TERMINATED",
    }
}

open_enum! {
    /// The state of the agreement of a subscription session.
    pub enum SubscriptionState {
        /// Waiting for the user.
        Pending = "PENDING",
        /// Accepted.
        Active = "ACTIVE",
        /// Rejected or stopped.
        Stopped = "STOPPED",
        /// Not accepted in time.
        Expired = "EXPIRED",
    }
}

open_enum! {
    /// How the user paid.
    pub enum PaymentMethod {
        /// The Vipps MobilePay app.
        Wallet = "Wallet",
        /// A card.
        Card = "Card",
        /// A bank transfer (SDK types).
        BankTransfer = "BankTransfer",
        /// Klarna (SDK types).
        Klarna = "Klarna",
    }
}

open_enum! {
    /// Whether the customer is present.
    pub enum CustomerInteraction {
        /// At a point of sale.
        CustomerPresent = "CUSTOMER_PRESENT",
        /// Online.
        CustomerNotPresent = "CUSTOMER_NOT_PRESENT",
    }
}

open_enum! {
    /// Which parts the checkout shows.
    pub enum Elements {
        /// Payment, contact details and address (with shipping).
        Full = "Full",
        /// Payment and contact details, no address.
        PaymentAndContactInfo = "PaymentAndContactInfo",
        /// Only the payment.
        PaymentOnly = "PaymentOnly",
    }
}

open_enum! {
    /// How the user returns to the merchant.
    pub enum UserFlow {
        /// A browser redirect to `returnUrl`.
        WebRedirect = "WEB_REDIRECT",
        /// A switch back to the merchant's app.
        NativeRedirect = "NATIVE_REDIRECT",
    }
}

open_enum! {
    /// A logistics option's carrier.
    pub enum Brand {
        /// Posten.
        Posten = "POSTEN",
        /// PostNord.
        Postnord = "POSTNORD",
        /// Porterbuddy.
        Porterbuddy = "PORTERBUDDY",
        /// Helthjem.
        Helthjem = "HELTHJEM",
        /// Posti.
        Posti = "POSTI",
        /// GLS (SDK types).
        Gls = "GLS",
        /// DAO (SDK types).
        Dao = "DAO",
        /// Any other carrier (needs `title`).
        Other = "OTHER",
    }
}

/// An amount in minor units. The currency is a string as the spec has it (`NOK`, and `EUR`, `DKK`, `SEK` later).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Amount {
    /// Minor units (øre).
    pub value: i64,
    /// ISO 4217.
    pub currency: String,
}

/// `POST /checkout/v3/session`: a payment session (the spec's `InitiateSessionRequest`, the SDK's
/// `InitiatePaymentSessionRequest`) or a subscription session (`InitiateSubscriptionSessionRequest`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InitiateSessionRequest {
    /// `PAYMENT` (the default) or `SUBSCRIPTION`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<SessionType>,
    /// Callback and return URLs.
    pub merchant_info: MerchantInfo,
    /// The payment (required for payment sessions; an optional initial payment of a subscription).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction: Option<PaymentTransaction>,
    /// The session's reference when there is no `transaction` (subscription sessions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The subscription (subscription sessions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<Subscription>,
    /// Shipping options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logistics: Option<Logistics>,
    /// What is known about the customer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefill_customer: Option<PrefillCustomer>,
    /// What the checkout shows and how.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration: Option<CheckoutConfig>,
}

impl InitiateSessionRequest {
    /// The kind of session (`PAYMENT` when `type` is left out).
    pub fn session_type(&self) -> SessionType {
        self.type_.clone().unwrap_or(SessionType::Payment)
    }

    /// The session's reference: the transaction's, or the top-level one.
    pub fn session_reference(&self) -> Option<&str> {
        self.transaction
            .as_ref()
            .map(|t| t.reference.as_str())
            .or(self.reference.as_deref())
    }
}

/// `merchantInfo`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MerchantInfo {
    /// Where the "payment completed" callback goes.
    pub callback_url: String,
    /// Where the user returns to.
    pub return_url: String,
    /// Sent back as the callback's `Authorization` header (a secret: redacted in `Debug`).
    pub callback_authorization_token: String,
    /// The merchant's terms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terms_and_conditions_url: Option<String>,
}

impl std::fmt::Debug for MerchantInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MerchantInfo")
            .field("callback_url", &self.callback_url)
            .field("return_url", &self.return_url)
            .field("callback_authorization_token", &"[redacted]")
            .field("terms_and_conditions_url", &self.terms_and_conditions_url)
            .finish()
    }
}

/// `transaction`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PaymentTransaction {
    /// The amount.
    pub amount: Amount,
    /// The merchant's reference (8 to 50 of `-a-zA-Z0-9`).
    pub reference: String,
    /// Shown to the user (3 to 100 characters).
    pub payment_description: String,
    /// Order lines and bottom line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_summary: Option<serde_json::Value>,
}

/// `subscription` (SDK types).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Subscription {
    /// Shown to the user.
    pub product_name: String,
    /// Charged every interval.
    pub amount: Amount,
    /// How often.
    pub interval: Interval,
    /// The merchant's page about the subscription.
    pub merchant_agreement_url: String,
    /// Shown to the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_description: Option<String>,
    /// A discount (kept as sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<serde_json::Value>,
}

/// A subscription's interval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interval {
    /// `YEAR`, `MONTH`, `WEEK` or `DAY`.
    pub unit: String,
    /// How many units.
    pub count: i32,
}

/// `logistics`. Its `integrations` hold the carriers' API keys and passwords: `Debug` leaves them out.
#[derive(Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Logistics {
    /// Asked for options once the user's address is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dynamic_options_callback: Option<String>,
    /// Options offered as they are (and the fallback when the callback fails).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_options: Option<Vec<LogisticsOption>>,
    /// Carrier integrations (kept as sent; they hold the carriers' API keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrations: Option<serde_json::Value>,
}

impl std::fmt::Debug for Logistics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logistics")
            .field("dynamic_options_callback", &self.dynamic_options_callback)
            .field("fixed_options", &self.fixed_options)
            .field(
                "integrations",
                &self.integrations.as_ref().map(|_| "[redacted]"),
            )
            .finish()
    }
}

/// One shipping option (the spec's `oneOf` of carriers, as one shape: `brand` tells which).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogisticsOption {
    /// The merchant's id of the option (1 to 200 characters).
    pub id: String,
    /// Sort order (lowest first).
    pub priority: i32,
    /// Chosen unless the user picks another.
    pub is_default: bool,
    /// The carrier.
    pub brand: Brand,
    /// The price (optional only for Porterbuddy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<Amount>,
    /// `HOME_DELIVERY`, `PICKUP_POINT`, `MAILBOX`...
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// A custom type label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_type: Option<String>,
    /// The label of an `OTHER` option.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Shown below the option.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Tax in hundredths of a percent (SDK types).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax_rate: Option<i64>,
}

/// `prefillCustomer`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrefillCustomer {
    /// Given name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    /// Family name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    /// E-mail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// MSISDN with country code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
    /// Street address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub street_address: Option<String>,
    /// City.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    /// Postal code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
    /// ISO 3166-1 alpha-2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
}

/// `configuration`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CheckoutConfig {
    /// Whether the customer is present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_interaction: Option<CustomerInteraction>,
    /// Which parts are shown (default `Full`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elements: Option<Elements>,
    /// The countries the user may choose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub countries: Option<Countries>,
    /// How the user returns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_flow: Option<UserFlow>,
    /// Whether the user must share e-mail and `sub`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_user_info: Option<bool>,
    /// An extra consent checkbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_consent: Option<CustomConsent>,
    /// Whether the order lines are shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_order_summary: Option<bool>,
    /// External payment methods (SDK types; kept as sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_payment_methods: Option<serde_json::Value>,
}

/// `configuration.countries`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Countries {
    /// ISO 3166-1 alpha-2 codes.
    pub supported: Vec<String>,
}

/// `configuration.customConsent`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CustomConsent {
    /// The checkbox's text.
    pub text: String,
    /// Whether it must be checked.
    pub required: bool,
}

/// The answer to `POST /checkout/v3/session`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitiateSessionResponse {
    /// The token the checkout frontend takes (redacted in `Debug`).
    pub token: String,
    /// The checkout page.
    pub checkout_frontend_url: String,
    /// The session's `GET` URL.
    pub polling_url: String,
}

impl std::fmt::Debug for InitiateSessionResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InitiateSessionResponse")
            .field("token", &"[redacted]")
            .field("checkout_frontend_url", &self.checkout_frontend_url)
            .field("polling_url", &self.polling_url)
            .finish()
    }
}

/// `GET /checkout/v3/session/{reference}`, and the body of the "payment completed" callback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionResponse {
    /// The session's id.
    pub session_id: String,
    /// The sales unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant_serial_number: Option<String>,
    /// The merchant's reference.
    pub reference: String,
    /// Where the session is.
    pub session_state: SessionState,
    /// How the user paid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_method: Option<PaymentMethod>,
    /// The agreement of a subscription session (SDK types).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription_details: Option<SubscriptionDetails>,
    /// The payment, once initiated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_details: Option<PaymentDetails>,
    /// The user's `sub` and e-mail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_info: Option<UserInfo>,
    /// Where to ship.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipping_details: Option<ShippingDetails>,
    /// Who pays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_details: Option<BillingDetails>,
    /// Whether the custom consent was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_consent_provided: Option<bool>,
}

/// `subscriptionDetails` (SDK types).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionDetails {
    /// The agreement's state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<SubscriptionState>,
    /// The agreement, for charges and updates through the Recurring API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agreement_id: Option<String>,
}

/// `paymentDetails`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentDetails {
    /// The amount.
    pub amount: Amount,
    /// The payment's state.
    pub state: PaymentState,
    /// Authorized, captured, refunded and cancelled totals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<TransactionAggregate>,
    /// `WALLET` or `CARD` (SDK types).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
}

/// `paymentDetails.aggregate`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransactionAggregate {
    /// Cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_amount: Option<Amount>,
    /// Captured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub captured_amount: Option<Amount>,
    /// Refunded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refunded_amount: Option<Amount>,
    /// Authorized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorized_amount: Option<Amount>,
}

/// `userInfo`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserInfo {
    /// The user's OpenID `sub`.
    pub sub: String,
    /// E-mail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// `shippingDetails`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShippingDetails {
    /// Given name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    /// Family name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    /// E-mail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Phone number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
    /// Street address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub street_address: Option<String>,
    /// Postal code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
    /// City.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    /// ISO 3166-1 alpha-2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// The chosen option's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipping_method_id: Option<String>,
    /// The chosen option's price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<Amount>,
    /// The chosen pickup point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pickup_point: Option<serde_json::Value>,
}

/// `billingDetails`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BillingDetails {
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// E-mail.
    pub email: String,
    /// Phone number.
    pub phone_number: String,
    /// Street address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub street_address: Option<String>,
    /// Postal code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
    /// City.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    /// ISO 3166-1 alpha-2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
}

/// The body of the dynamic-logistics callback: the user's address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogisticsCallbackRequest {
    /// Street address.
    pub street_address: String,
    /// Postal code.
    pub postal_code: String,
    /// Region (the city).
    pub region: String,
    /// ISO 3166-1 alpha-2.
    pub country: String,
}

/// The Checkout problem format (`CheckoutProblemDetails`): RFC 7807 with `errorCode` and `errors` (field name →
/// messages).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckoutProblem {
    /// Problem type URI.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Short summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// HTTP status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Explanation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The request path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// A machine-readable code.
    pub error_code: String,
    /// Field name → what is wrong with it.
    #[serde(default)]
    pub errors: BTreeMap<String, Vec<String>>,
    /// Anything else the server adds (a trace id, say).
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_session_has_its_own_reference() {
        let r: InitiateSessionRequest = serde_json::from_value(serde_json::json!({
            "type": "SUBSCRIPTION",
            "reference": "sub-order-0001",
            "merchantInfo": {"callbackUrl": "https://a.example/cb", "returnUrl": "https://a.example/r",
                             "callbackAuthorizationToken": "tok"},
            "subscription": {"productName": "Socks", "amount": {"value": 1000, "currency": "NOK"},
                             "interval": {"unit": "MONTH", "count": 1},
                             "merchantAgreementUrl": "https://a.example/agreement"}
        }))
        .unwrap();
        assert_eq!(r.session_type(), SessionType::Subscription);
        assert_eq!(r.session_reference(), Some("sub-order-0001"));
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let m = MerchantInfo {
            callback_url: "https://a.example/cb".into(),
            return_url: "https://a.example/r".into(),
            callback_authorization_token: "very-secret".into(),
            terms_and_conditions_url: None,
        };
        assert!(!format!("{m:?}").contains("very-secret"));
        let r = InitiateSessionResponse {
            token: "tok-secret".into(),
            checkout_frontend_url: "u".into(),
            polling_url: "p".into(),
        };
        assert!(!format!("{r:?}").contains("tok-secret"));
    }

    #[test]
    fn carrier_keys_stay_out_of_debug() {
        let l: Logistics = serde_json::from_value(serde_json::json!({
            "integrations": {"helthjem": {"username": "u", "password": "hunter2-secret", "shopId": 1}}
        }))
        .unwrap();
        assert!(!format!("{l:?}").contains("hunter2-secret"));
    }

    #[test]
    fn unknown_request_fields_are_refused() {
        let e = serde_json::from_value::<PrefillCustomer>(serde_json::json!({"nickname": "x"}));
        assert!(e.is_err());
    }
}
