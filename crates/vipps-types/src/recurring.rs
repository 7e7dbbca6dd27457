//! Recurring API v3 (`/recurring/v3`) bodies, states, webhook events and its problem format, per the official
//! spec (December 2023) and the newer fields of the official SDK's generated types (November 2024): `FLEXIBLE`
//! pricing, `UNSCHEDULED` charges and the bulk charge request. Where the two differ, the SDK types win.
//!
//! Request bodies reject unknown fields; response bodies ignore fields they do not know. Enums have an `Unknown`
//! catch-all. Amounts are integers in minor units (øre) and the currency is `NOK`, as the spec has them.
//!
//! ```
//! use vipps_types::recurring::{DraftAgreementRequest, PricingType};
//!
//! let r: DraftAgreementRequest = serde_json::from_str(r#"{
//!   "pricing": {"type": "LEGACY", "amount": 2500, "currency": "NOK"},
//!   "interval": {"unit": "MONTH", "count": 1},
//!   "merchantRedirectUrl": "https://example.com/redirect",
//!   "merchantAgreementUrl": "https://example.com/agreement",
//!   "phoneNumber": "4791234567",
//!   "productName": "MyNews Digital"
//! }"#).unwrap();
//! assert_eq!(r.pricing.type_, Some(PricingType::Legacy));
//! ```

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::open_enum;

/// The base path of the API.
pub const BASE_PATH: &str = "/recurring/v3";

/// The largest number of charges in one bulk request (`POST /recurring/v3/agreements/charges`).
pub const BULK_MAX: usize = 2000;

open_enum! {
    /// The state of an agreement. `STOPPED` and `EXPIRED` are final.
    pub enum AgreementStatus {
        /// Waiting for the user (at most 10 minutes).
        Pending = "PENDING",
        /// Accepted; charges may be created.
        Active = "ACTIVE",
        /// Rejected by the user or stopped by either side.
        Stopped = "STOPPED",
        /// Not accepted in time, or the initial `DIRECT_CAPTURE` charge failed.
        Expired = "EXPIRED",
    }
}

open_enum! {
    /// The state of a charge.
    pub enum ChargeStatus {
        /// Created, due later than about 30 days from now.
        Pending = "PENDING",
        /// Due within about 30 days (shown to the user).
        Due = "DUE",
        /// Being charged (from the due date while retries last).
        Processing = "PROCESSING",
        /// Reserved (`RESERVE_CAPTURE`), waiting for capture.
        Reserved = "RESERVED",
        /// Charged in full.
        Charged = "CHARGED",
        /// Part of a reservation captured.
        PartiallyCaptured = "PARTIALLY_CAPTURED",
        /// Could not be charged (see `failureReason`).
        Failed = "FAILED",
        /// Cancelled by the merchant.
        Cancelled = "CANCELLED",
        /// Part of the charged amount refunded.
        PartiallyRefunded = "PARTIALLY_REFUNDED",
        /// All of the charged amount refunded.
        Refunded = "REFUNDED",
    }
}

open_enum! {
    /// The kind of a charge.
    pub enum ChargeType {
        /// The charge made when the agreement is accepted.
        Initial = "INITIAL",
        /// A charge with a due date.
        Recurring = "RECURRING",
        /// A charge made at once, outside the agreement's interval (SDK types).
        Unscheduled = "UNSCHEDULED",
    }
}

open_enum! {
    /// Whether a charge is captured at once or reserved first.
    pub enum TransactionType {
        /// Charged at once.
        DirectCapture = "DIRECT_CAPTURE",
        /// Reserved, then captured by the merchant.
        ReserveCapture = "RESERVE_CAPTURE",
    }
}

open_enum! {
    /// How an agreement is priced.
    pub enum PricingType {
        /// A fixed amount per interval.
        Legacy = "LEGACY",
        /// Up to a maximum the user chooses, from a suggested one.
        Variable = "VARIABLE",
        /// Any amount, charged when the merchant decides (SDK types).
        Flexible = "FLEXIBLE",
    }
}

open_enum! {
    /// The unit of a time period.
    pub enum PeriodUnit {
        /// Years.
        Year = "YEAR",
        /// Months.
        Month = "MONTH",
        /// Weeks.
        Week = "WEEK",
        /// Days.
        Day = "DAY",
    }
}

open_enum! {
    /// The kind of a campaign.
    pub enum CampaignType {
        /// A reduced price until a date.
        PriceCampaign = "PRICE_CAMPAIGN",
        /// A fixed price for a period.
        PeriodCampaign = "PERIOD_CAMPAIGN",
        /// A price until an event.
        EventCampaign = "EVENT_CAMPAIGN",
        /// A price and its own interval until a date.
        FullFlexCampaign = "FULL_FLEX_CAMPAIGN",
        /// A v2 campaign, in responses only.
        LegacyCampaign = "LEGACY_CAMPAIGN",
    }
}

open_enum! {
    /// What happened to a charge, in its history.
    pub enum ChargeEventKind {
        /// Created.
        Create = "CREATE",
        /// Reserved.
        Reserve = "RESERVE",
        /// Captured (or charged directly).
        Capture = "CAPTURE",
        /// Refunded.
        Refund = "REFUND",
        /// Cancelled.
        Cancel = "CANCEL",
        /// Failed.
        Fail = "FAIL",
    }
}

open_enum! {
    /// Why a charge failed.
    pub enum FailureReason {
        /// The user must act in the app (blocked card, insufficient funds, expired card).
        UserActionRequired = "user_action_required",
        /// Above the maximum the user chose.
        ChargeAmountTooHigh = "charge_amount_too_high",
        /// Something else went wrong with charging the user.
        NonTechnicalError = "non_technical_error",
        /// A failure in Recurring itself.
        TechnicalError = "technical_error",
    }
}

open_enum! {
    /// Who stopped an agreement (`actor` of `recurring.agreement-stopped.v1`).
    pub enum Actor {
        /// The merchant, through the API.
        Merchant = "MERCHANT",
        /// The user, in the app.
        User = "USER",
    }
}

open_enum! {
    /// The Recurring webhook event types.
    pub enum RecurringEventType {
        /// The user accepted (or the agreement was force-accepted).
        AgreementActivated = "recurring.agreement-activated.v1",
        /// The user rejected.
        AgreementRejected = "recurring.agreement-rejected.v1",
        /// The merchant or the user stopped an active agreement.
        AgreementStopped = "recurring.agreement-stopped.v1",
        /// Not accepted in time (or the initial charge failed).
        AgreementExpired = "recurring.agreement-expired.v1",
        /// A `RESERVE_CAPTURE` charge was reserved.
        ChargeReserved = "recurring.charge-reserved.v1",
        /// A charge was captured (or charged directly).
        ChargeCaptured = "recurring.charge-captured.v1",
        /// A charge was cancelled.
        ChargeCanceled = "recurring.charge-canceled.v1",
        /// A charge was refunded (in part or in full).
        ChargeRefunded = "recurring.charge-refunded.v1",
        /// A charge failed after its retry days.
        ChargeFailed = "recurring.charge-failed.v1",
        /// A charge of a bulk request could not be created.
        ChargeCreationFailed = "recurring.charge-creation-failed.v1",
    }
}

/// Every Recurring webhook event type.
pub fn recurring_event_types() -> Vec<String> {
    RecurringEventType::KNOWN
        .iter()
        .map(|e| e.as_str().to_owned())
        .collect()
}

/// A time period (`{"unit": "MONTH", "count": 1}`); `count` is 1 to 31.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimePeriod {
    /// The unit.
    pub unit: PeriodUnit,
    /// How many units.
    pub count: i32,
}

/// The interval of an agreement as the SDK types write it: `{"type": "RECURRING", "period": {...}}` or
/// `{"type": "FLEXIBLE"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypedInterval {
    /// `RECURRING` or `FLEXIBLE`.
    #[serde(rename = "type")]
    pub type_: String,
    /// The period, for `RECURRING`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<TimePeriod>,
}

/// The interval of a draft: the spec's plain period or the SDK types' typed interval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IntervalRequest {
    /// `{"unit": "MONTH", "count": 1}` (the spec).
    Period(TimePeriod),
    /// `{"type": "RECURRING", "period": {...}}` or `{"type": "FLEXIBLE"}` (SDK types).
    Typed(TypedInterval),
}

impl IntervalRequest {
    /// The period, if the interval has one.
    pub fn period(&self) -> Option<&TimePeriod> {
        match self {
            IntervalRequest::Period(p) => Some(p),
            IntervalRequest::Typed(t) => t.period.as_ref(),
        }
    }
}

/// The pricing of a draft.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PricingRequest {
    /// `LEGACY` (the default), `VARIABLE` or `FLEXIBLE`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<PricingType>,
    /// `NOK`.
    pub currency: String,
    /// The amount per interval (`LEGACY`), at least 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<i64>,
    /// The suggested maximum (`VARIABLE`), 100 to 2,000,000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suggested_max_amount: Option<i64>,
}

/// A campaign of a draft (all four kinds; which fields apply depends on `type`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CampaignRequest {
    /// The kind.
    #[serde(rename = "type")]
    pub type_: CampaignType,
    /// The campaign price, in minor units.
    pub price: i64,
    /// End (price and full flex campaigns), as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    /// The period (period campaigns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<TimePeriod>,
    /// The interval (full flex campaigns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<TimePeriod>,
    /// The event date (event campaigns), as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_date: Option<String>,
    /// The event text (event campaigns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_text: Option<String>,
}

/// The initial charge of a draft, made when the user accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InitialChargeRequest {
    /// Amount in minor units.
    pub amount: i64,
    /// `NOK` (not in the schema, but every example of the spec sends it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// Shown to the user.
    pub description: String,
    /// `DIRECT_CAPTURE` or `RESERVE_CAPTURE`.
    pub transaction_type: TransactionType,
    /// Used as the charge id when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    /// The merchant's id for the charge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
}

/// `POST /recurring/v3/agreements` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DraftAgreementRequest {
    /// A campaign.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<CampaignRequest>,
    /// The pricing.
    pub pricing: PricingRequest,
    /// The user's phone number (MSISDN), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
    /// A charge made when the user accepts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_charge: Option<InitialChargeRequest>,
    /// The interval.
    pub interval: IntervalRequest,
    /// Whether the answer's confirmation URL is an app deeplink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_app: Option<bool>,
    /// Where the user manages the subscription (HTTPS).
    pub merchant_agreement_url: String,
    /// Where the user is sent after accepting or rejecting.
    pub merchant_redirect_url: String,
    /// The product name, at most 45 characters.
    pub product_name: String,
    /// The product description, at most 100 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_description: Option<String>,
    /// Profile data the user is asked to share (space-separated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Push to the phone number without the landing page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_landing_page: Option<bool>,
    /// The merchant's id for the agreement, 1 to 64 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// `NO`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country_code: Option<String>,
}

/// `201` body of the draft.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DraftAgreementResponse {
    /// The new agreement's id.
    pub agreement_id: String,
    /// Its UUID.
    pub uuid: String,
    /// The page (or deeplink) where the user accepts.
    #[serde(default)]
    pub vipps_confirmation_url: Option<String>,
    /// The initial charge's id, or `null`.
    #[serde(default)]
    pub charge_id: Option<String>,
}

/// The pricing of an agreement, as answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PricingResponse {
    /// `LEGACY`, `VARIABLE` or `FLEXIBLE`.
    #[serde(rename = "type")]
    pub type_: PricingType,
    /// `NOK`.
    pub currency: String,
    /// The amount per interval (`LEGACY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<i64>,
    /// The suggested maximum (`VARIABLE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suggested_max_amount: Option<i64>,
    /// The maximum the user chose (`VARIABLE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_amount: Option<i64>,
}

/// A time period as answered, with its text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TimePeriodResponse {
    /// The unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<PeriodUnit>,
    /// How many units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<i32>,
    /// Such as `every 2 weeks`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// A campaign as answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CampaignResponse {
    /// The kind.
    #[serde(rename = "type")]
    pub type_: CampaignType,
    /// The campaign price.
    pub price: i64,
    /// End, where the kind has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    /// The period (period campaigns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<TimePeriodResponse>,
    /// The interval (full flex campaigns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<TimePeriodResponse>,
    /// The event date (event campaigns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_date: Option<String>,
    /// The event text (event campaigns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_text: Option<String>,
    /// A text shown to the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explanation: Option<String>,
}

/// `GET /recurring/v3/agreements/{agreementId}` body (also the list's items).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgreementResponse {
    /// The campaign.
    #[serde(default)]
    pub campaign: Option<CampaignResponse>,
    /// The pricing.
    pub pricing: PricingResponse,
    /// The agreement id.
    pub id: String,
    /// The interval.
    pub interval: TimePeriodResponse,
    /// The product name.
    pub product_name: String,
    /// The product description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_description: Option<String>,
    /// When it was drafted.
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    /// When it was accepted.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub start: Option<OffsetDateTime>,
    /// When it was stopped.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub stop: Option<OffsetDateTime>,
    /// The status.
    pub status: AgreementStatus,
    /// Where the user manages the subscription.
    pub merchant_agreement_url: String,
    /// Where the user is sent after acting.
    pub merchant_redirect_url: String,
    /// The user's `sub`, once accepted with a scope.
    #[serde(default)]
    pub sub: Option<String>,
    /// Where the profile data can be read, once accepted with a scope.
    #[serde(default)]
    pub userinfo_url: Option<String>,
    /// The merchant's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// `NO`.
    pub country_code: String,
    /// The agreement's UUID.
    pub uuid: String,
    /// The page (or deeplink) where the user accepts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vipps_confirmation_url: Option<String>,
}

/// The pricing part of an update.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PricingUpdateRequest {
    /// The new amount (`LEGACY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<i64>,
    /// The new suggested maximum (`VARIABLE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suggested_max_amount: Option<i64>,
}

/// `PATCH /recurring/v3/agreements/{agreementId}` body; every field optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PatchAgreementRequest {
    /// The product name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_name: Option<String>,
    /// The product description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_description: Option<String>,
    /// Where the user manages the subscription.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant_agreement_url: Option<String>,
    /// The merchant's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// `STOPPED` stops the agreement (irreversibly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<AgreementStatus>,
    /// New pricing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<PricingUpdateRequest>,
    /// A new interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<TypedInterval>,
}

/// `PATCH /recurring/v3/agreements/{agreementId}/accept` body (test environment only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ForceAcceptRequest {
    /// The user's phone number.
    pub phone_number: String,
}

/// `POST /recurring/v3/agreements/{agreementId}/charges` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateChargeRequest {
    /// Amount in minor units, at least 100.
    pub amount: i64,
    /// `DIRECT_CAPTURE` or `RESERVE_CAPTURE`.
    pub transaction_type: TransactionType,
    /// Shown to the user, 1 to 45 characters.
    pub description: String,
    /// The due date, `YYYY-MM-DD` (required for `RECURRING`; not for `UNSCHEDULED`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due: Option<String>,
    /// Days to retry after the due date, 0 to 14.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_days: Option<i32>,
    /// `RECURRING` (the default) or `UNSCHEDULED` (SDK types).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<ChargeType>,
    /// Used as the charge id when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    /// The merchant's id for the charge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
}

/// One charge of a bulk request (`CreateChargeAsyncV3` in the SDK types): a charge with its agreement.
///
/// The SDK types require `orderId`, `due` and `retryDays`; the emulator also accepts an item without `orderId`
/// (it makes a charge id) and `UNSCHEDULED` items without a due date.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BulkChargeItem {
    /// The agreement to charge.
    pub agreement_id: String,
    /// Amount in minor units.
    pub amount: i64,
    /// `DIRECT_CAPTURE` or `RESERVE_CAPTURE`.
    pub transaction_type: TransactionType,
    /// Shown to the user.
    pub description: String,
    /// The due date, `YYYY-MM-DD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due: Option<String>,
    /// Days to retry, 0 to 14.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_days: Option<i32>,
    /// `RECURRING` or `UNSCHEDULED`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<ChargeType>,
    /// Used as the charge id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    /// The merchant's id for the charge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
}

impl BulkChargeItem {
    /// The single-charge request of this item.
    pub fn charge(&self) -> CreateChargeRequest {
        CreateChargeRequest {
            amount: self.amount,
            transaction_type: self.transaction_type.clone(),
            description: self.description.clone(),
            due: self.due.clone(),
            retry_days: self.retry_days,
            type_: self.type_.clone(),
            order_id: self.order_id.clone(),
            external_id: self.external_id.clone(),
        }
    }
}

/// `POST /recurring/v3/agreements/charges` body: a JSON array of up to [`BULK_MAX`] charges (the SDK types'
/// `Array<CreateChargeAsyncV3>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BulkChargesRequest {
    /// The charges.
    pub charges: Vec<BulkChargeItem>,
}

/// `201` body of create charge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChargeReference {
    /// The new charge's id.
    pub charge_id: String,
}

/// A charge of a bulk request that was not created, with why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InvalidCharge {
    /// The item as sent.
    pub charge_batch_item_dto: BulkChargeItem,
    /// Why it was refused.
    pub errors: Vec<String>,
}

/// `202` body of the bulk create (`AsyncChargeResponse` in the SDK types).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BulkChargesResponse {
    /// The items that were not created.
    pub invalid_charges: Vec<InvalidCharge>,
    /// The ids of the charges created, in request order.
    pub valid_charges: Vec<String>,
}

/// `POST .../capture` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CaptureChargeRequest {
    /// Amount in minor units.
    pub amount: i64,
    /// Why.
    pub description: String,
}

/// `POST .../refund` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RefundChargeRequest {
    /// Amount in minor units.
    pub amount: i64,
    /// Why.
    pub description: String,
}

/// The totals of a charge.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChargeSummary {
    /// Captured (charged) total.
    pub captured: i64,
    /// Refunded total.
    pub refunded: i64,
    /// Cancelled total.
    pub cancelled: i64,
}

/// One entry of a charge's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChargeEvent {
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub occurred: OffsetDateTime,
    /// What.
    pub event: ChargeEventKind,
    /// The amount of this event.
    pub amount: i64,
    /// The key of the request that caused it (empty for time-driven events).
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Whether it succeeded.
    pub success: bool,
}

/// `GET .../charges/{chargeId}` body (also the list's items).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChargeResponse {
    /// Amount in minor units.
    pub amount: i64,
    /// `NOK`.
    pub currency: String,
    /// Shown to the user.
    pub description: String,
    /// The due date.
    #[serde(with = "time::serde::rfc3339")]
    pub due: OffsetDateTime,
    /// The charge id.
    pub id: String,
    /// The agreement.
    pub agreement_id: String,
    /// The merchant's id for the charge (absent when none was given: the spec types it as a string, not null).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// The merchant's id for the agreement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_agreement_id: Option<String>,
    /// Days to retry.
    pub retry_days: i32,
    /// The status.
    pub status: ChargeStatus,
    /// The transaction id.
    pub transaction_id: String,
    /// `INITIAL`, `RECURRING` or `UNSCHEDULED`.
    #[serde(rename = "type")]
    pub type_: ChargeType,
    /// `DIRECT_CAPTURE` or `RESERVE_CAPTURE`.
    pub transaction_type: TransactionType,
    /// Why it failed.
    #[serde(default)]
    pub failure_reason: Option<FailureReason>,
    /// Why it failed, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_description: Option<String>,
    /// The totals.
    pub summary: ChargeSummary,
    /// What happened, oldest first.
    pub history: Vec<ChargeEvent>,
}

/// One `extraDetails` entry of a Recurring problem: the field and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecurringExtraDetail {
    /// The field, such as `productName`.
    #[serde(default)]
    pub field: Option<String>,
    /// Why, such as `must not be empty`.
    #[serde(default)]
    pub text: Option<String>,
}

/// The Recurring API's error body (`ErrorV3`): RFC 7807 fields with `contextId` and `extraDetails` of
/// `{field, text}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecurringProblem {
    /// A URI for the problem type.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// A short summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The HTTP status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// An explanation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The request path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The id to quote to support.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_id: Option<String>,
    /// The fields and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_details: Option<Vec<RecurringExtraDetail>>,
}

impl RecurringProblem {
    /// The first field named in `extraDetails`.
    pub fn field(&self) -> Option<&str> {
        self.extra_details
            .as_ref()
            .and_then(|d| d.iter().find_map(|e| e.field.as_deref()))
    }
}

/// The body of an agreement webhook event (`recurring.agreement-*.v1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgreementWebhookEvent {
    /// The agreement.
    pub agreement_id: String,
    /// The merchant's id for it.
    #[serde(default)]
    pub agreement_external_id: Option<String>,
    /// The event type.
    pub event_type: RecurringEventType,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub occurred: OffsetDateTime,
    /// The merchant serial number.
    pub msn: String,
    /// Who stopped it (`agreement-stopped` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<Actor>,
}

/// The body of a charge webhook event (`recurring.charge-*.v1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChargeWebhookEvent {
    /// The agreement.
    pub agreement_id: String,
    /// The merchant's id for the agreement.
    #[serde(default)]
    pub agreement_external_id: Option<String>,
    /// The charge.
    pub charge_id: String,
    /// The merchant's id for the charge.
    #[serde(default)]
    pub charge_external_id: Option<String>,
    /// The amount of this event, in minor units.
    pub amount: i64,
    /// `NOK`.
    pub currency: String,
    /// `INITIAL`, `RECURRING` or `UNSCHEDULED`.
    pub charge_type: ChargeType,
    /// The event type.
    pub event_type: RecurringEventType,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub occurred: OffsetDateTime,
    /// The merchant serial number.
    pub msn: String,
    /// Why it failed (`charge-failed`, `charge-creation-failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<FailureReason>,
    /// Why it failed, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_description: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_deny_unknown_fields_and_responses_tolerate_them() {
        let bad = r#"{"amount":100,"transactionType":"DIRECT_CAPTURE","description":"x","due":"2030-01-01","retryDays":0,"nope":1}"#;
        assert!(serde_json::from_str::<CreateChargeRequest>(bad).is_err());
        let ok = r#"{"chargeId":"chr-1","extra":true}"#;
        assert_eq!(
            serde_json::from_str::<ChargeReference>(ok)
                .unwrap()
                .charge_id,
            "chr-1"
        );
    }

    #[test]
    fn both_interval_shapes_parse() {
        let a: IntervalRequest = serde_json::from_str(r#"{"unit":"WEEK","count":2}"#).unwrap();
        assert_eq!(a.period().unwrap().count, 2);
        let b: IntervalRequest =
            serde_json::from_str(r#"{"type":"RECURRING","period":{"unit":"MONTH","count":1}}"#)
                .unwrap();
        assert_eq!(b.period().unwrap().unit, PeriodUnit::Month);
        let c: IntervalRequest = serde_json::from_str(r#"{"type":"FLEXIBLE"}"#).unwrap();
        assert!(c.period().is_none());
    }

    #[test]
    fn ten_event_types() {
        assert_eq!(recurring_event_types().len(), 10);
        assert_eq!(
            RecurringEventType::from_wire("recurring.charge-canceled.v1"),
            RecurringEventType::ChargeCanceled
        );
    }
}
