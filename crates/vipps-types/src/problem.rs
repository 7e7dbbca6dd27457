//! Errors on the wire: RFC 7807 `application/problem+json` bodies, the ePayment error codes, and the API
//! gateway's own `{statusCode, message}` body.

use serde::{Deserialize, Deserializer, Serialize};

/// The `extraDetails` entry name that carries the ePayment error code.
pub const ERROR_CODE_DETAIL: &str = "ErrorCode";

/// One `extraDetails` entry: which field or aspect, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtraDetail {
    /// The field name, or `ErrorCode` for the numeric error code.
    pub name: String,
    /// The reason, or the numeric error code as text.
    pub reason: String,
}

/// A problem+json error body as the Vipps APIs send it.
///
/// Tolerant when reading: every field may be missing, and `status` may be a number or a numeric string (the
/// knowledge base shows `"status":"400"`). Written back, `status` is a number.
///
/// ```
/// use vipps_types::problem::{ErrorCode, Problem};
///
/// let body = r#"{"type":"https://httpstatuses.io/400","title":"Cannot capture before reservation",
///   "status":"400","extraDetails":[{"name":"ErrorCode","reason":"6080"}],"traceId":"00-1-2-01"}"#;
/// let p: Problem = serde_json::from_str(body).unwrap();
/// assert_eq!(p.status, Some(400));
/// assert_eq!(p.error_code(), Some(ErrorCode::CaptureBeforeReservation));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    /// A URI reference that identifies the problem type.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// A short summary of the problem type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The HTTP status code.
    #[serde(
        default,
        deserialize_with = "status_lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub status: Option<u16>,
    /// An explanation specific to this occurrence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// A URI reference for this occurrence (often the request path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The trace id (W3C traceparent-shaped) to quote to support.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// Field-level details, and the `ErrorCode` entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_details: Option<Vec<ExtraDetail>>,
}

fn status_lenient<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum S {
        N(u16),
        T(String),
    }
    match Option::<S>::deserialize(d)? {
        None => Ok(None),
        Some(S::N(n)) => Ok(Some(n)),
        Some(S::T(t)) => t.trim().parse().map(Some).map_err(serde::de::Error::custom),
    }
}

impl Problem {
    /// A problem with a status, title and detail; `type` is `https://httpstatuses.io/{status}`.
    pub fn new(status: u16, title: impl Into<String>, detail: impl Into<String>) -> Self {
        Problem {
            type_: Some(format!("https://httpstatuses.io/{status}")),
            title: Some(title.into()),
            status: Some(status),
            detail: Some(detail.into()),
            instance: None,
            trace_id: None,
            extra_details: None,
        }
    }

    /// Adds an `ErrorCode` entry.
    pub fn with_code(mut self, code: ErrorCode) -> Self {
        self.extra_details
            .get_or_insert_with(Vec::new)
            .push(ExtraDetail {
                name: ERROR_CODE_DETAIL.into(),
                reason: code.code().to_string(),
            });
        self
    }

    /// Adds a field-level detail.
    pub fn with_detail(mut self, name: impl Into<String>, reason: impl Into<String>) -> Self {
        self.extra_details
            .get_or_insert_with(Vec::new)
            .push(ExtraDetail {
                name: name.into(),
                reason: reason.into(),
            });
        self
    }

    /// Sets `instance`.
    pub fn with_instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = Some(instance.into());
        self
    }

    /// Sets `traceId`.
    pub fn with_trace_id(mut self, trace_id: impl Into<String>) -> Self {
        self.trace_id = Some(trace_id.into());
        self
    }

    /// The ePayment error code from `extraDetails`, if there is one.
    pub fn error_code(&self) -> Option<ErrorCode> {
        self.extra_details
            .as_deref()?
            .iter()
            .find(|d| d.name == ERROR_CODE_DETAIL)
            .and_then(|d| d.reason.trim().parse::<u32>().ok())
            .map(ErrorCode::from_code)
    }

    /// The field-level details, without the `ErrorCode` entry.
    pub fn field_details(&self) -> impl Iterator<Item = &ExtraDetail> {
        self.extra_details
            .as_deref()
            .unwrap_or_default()
            .iter()
            .filter(|d| d.name != ERROR_CODE_DETAIL)
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(s) = self.status {
            write!(f, "{s} ")?;
        }
        f.write_str(self.title.as_deref().unwrap_or("error"))?;
        if let Some(d) = &self.detail {
            write!(f, ": {d}")?;
        }
        if let Some(c) = self.error_code() {
            write!(f, " (code {})", c.code())?;
        }
        Ok(())
    }
}

/// The API gateway's error body, sent for missing or invalid subscription keys:
/// `{"statusCode": 401, "message": "Access denied due to missing subscription key. ..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayError {
    /// The HTTP status.
    #[serde(deserialize_with = "status_required")]
    pub status_code: u16,
    /// The message.
    pub message: String,
}

fn status_required<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    status_lenient(d)?.ok_or_else(|| serde::de::Error::custom("statusCode is null"))
}

impl GatewayError {
    /// The message for a request without a subscription key.
    pub const MISSING_KEY: &'static str = "Access denied due to missing subscription key. Make sure to include subscription key when making requests to an API.";
    /// The message for an unknown subscription key.
    pub const INVALID_KEY: &'static str = "Access denied due to invalid subscription key. Make sure to provide a valid key for an active subscription.";
}

macro_rules! error_codes {
    ($( $(#[$m:meta])* $name:ident = $code:literal, $title:literal; )+) => {
        /// An ePayment error code, carried in `extraDetails` as `{"name":"ErrorCode","reason":"6090"}`.
        ///
        /// Titles and details are reworded over time; branch on the code and the HTTP status, never on text.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $( $(#[$m])* #[doc = $title] $name, )+
            /// A code this version does not know.
            Unknown(u32),
        }

        impl ErrorCode {
            /// Every known code.
            pub const KNOWN: &'static [ErrorCode] = &[ $( ErrorCode::$name ),+ ];

            /// The numeric code.
            pub fn code(self) -> u32 {
                match self { $( ErrorCode::$name => $code, )+ ErrorCode::Unknown(c) => c }
            }

            /// The code for a number; unknown numbers become `Unknown`.
            pub fn from_code(code: u32) -> Self {
                match code { $( $code => ErrorCode::$name, )+ other => ErrorCode::Unknown(other) }
            }

            /// A short title.
            pub fn title(self) -> &'static str {
                match self { $( ErrorCode::$name => $title, )+ ErrorCode::Unknown(_) => "Unknown error" }
            }
        }
    };
}

error_codes! {
    InternalError = 3010, "Internal error";
    CaptureIdempotencyConflict = 4010, "Capture idempotency conflict";
    IdempotencyError = 4020, "Idempotency error";
    InvalidAmount = 4040, "Invalid amount";
    InvalidCustomerToken = 4050, "Invalid CustomerToken";
    InvalidPersonalQr = 4060, "Invalid PersonalQr";
    InvalidPhoneNumber = 4070, "Invalid phone number";
    InvalidScope = 4080, "Invalid scope";
    InvalidUrl = 4090, "Invalid URL";
    MetadataTooManyPairs = 4100, "Metadata limit: too many key-value pairs";
    MetadataKeyTooLong = 4110, "Metadata limit: key too long";
    MetadataValueTooLong = 4120, "Metadata limit: value too long";
    MetadataInvalid = 4130, "Metadata limit: invalid metadata";
    MissingRequiredParameter = 4140, "Missing required parameter";
    ReferenceAlreadyExists = 4150, "Reference already exists, or refund idempotency conflict";
    InvalidPaymentMethodType = 4160, "Invalid payment method type";
    BlockingSourcesNotAllowed = 5010, "Blocking sources not available";
    ExpressNotAllowed = 5020, "Express checkout not allowed";
    IllegalScope = 5030, "Illegal scope";
    InvalidCurrency = 5040, "Invalid currency";
    LongLivingNotAllowed = 5050, "Long-living payments not allowed";
    BankAccountNotVerified = 5060, "Bank account not verified";
    PaymentCannotBeCreated = 5070, "Payment cannot be created";
    PushMessageNotAllowed = 5080, "PUSH_MESSAGE not allowed";
    ReferenceNotFound = 5090, "Reference not found";
    RefundNotPossible = 5100, "Refund not possible";
    AmountTooSmall = 6010, "Amount too small";
    RefundBeforeReservation = 6020, "Cannot refund before reservation";
    CancelPeriodExpired = 6030, "Cancel period expired";
    CannotCancelCaptured = 6040, "Cannot cancel a captured payment";
    CannotCancelNonReserved = 6050, "Cannot cancel a payment that is not reserved";
    CannotCancelAuthorized = 6060, "Cannot cancel an authorized payment (cancelTransactionOnly)";
    CannotCaptureCancelled = 6070, "Cannot capture a cancelled payment";
    CaptureBeforeReservation = 6080, "Cannot capture before reservation";
    CaptureAmountTooHigh = 6090, "Capture amount too high";
    CapturePeriodExpired = 6100, "Capture period expired";
    ExpiresAtTooLate = 6110, "expiresAt too late";
    ExpiresAtTooSoon = 6120, "expiresAt too soon";
    LongLivingRequiresReceipt = 6130, "Long-living payment requires a receipt";
    MustCaptureFullAmount = 6140, "Must capture the full amount";
    NotEnoughRefundable = 6150, "Not enough refundable amount";
    OrderProcessing = 6160, "Order processing";
    AlreadyCaptured = 6170, "Already captured";
    AlreadyRefunded = 6180, "Already refunded";
    CannotCancelInState = 6190, "Cannot cancel in this state";
    CannotCaptureInState = 6200, "Cannot capture in this state";
    CannotRefundInState = 6210, "Cannot refund in this state";
    RefundPeriodExpired = 6220, "Refund period expired";
    AlreadyReserved = 6230, "Already reserved";
    CannotCancelProcessing = 6250, "Cannot cancel while processing";
    FundsUnavailable = 6260, "Funds unavailable";
    CaptureFailedRetry = 6280, "Capture failed, retry";
    CustomerNotFound = 7010, "Customer not found";
    ApproveFailed = 10010, "Approve failed";
    ApproveNotAllowed = 10020, "Approve not allowed";
    IdentificationRequired = 10030, "Identification required";
    InvalidPaymentSource = 10040, "Invalid payment source";
    NoCards = 10050, "No cards";
    OperationNotSupported = 10060, "Operation not supported";
    PaymentLimitExceeded = 10070, "Payment limit exceeded";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerant_reading() {
        let p: Problem = serde_json::from_str("{}").unwrap();
        assert_eq!(p, Problem::default());
        let p: Problem =
            serde_json::from_str(r#"{"status":null,"title":null,"extraDetails":null}"#).unwrap();
        assert_eq!(p.status, None);
        let p: Problem =
            serde_json::from_str(r#"{"status":" 409 ","instance":"urn:uuid:1"}"#).unwrap();
        assert_eq!(p.status, Some(409));
        assert!(serde_json::from_str::<Problem>(r#"{"status":"four"}"#).is_err());
        let p: Problem =
            serde_json::from_str(r#"{"extraDetails":[{"name":"ErrorCode","reason":"99999"}]}"#)
                .unwrap();
        assert_eq!(p.error_code(), Some(ErrorCode::Unknown(99999)));
    }

    #[test]
    fn writing_uses_numbers_and_codes() {
        let p = Problem::new(400, "Bad", "bad")
            .with_code(ErrorCode::CaptureAmountTooHigh)
            .with_trace_id("t");
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["status"], 400);
        assert_eq!(v["extraDetails"][0]["reason"], "6090");
        assert_eq!(v["traceId"], "t");
        assert_eq!(p.to_string(), "400 Bad: bad (code 6090)");
    }

    #[test]
    fn codes_round_trip() {
        for c in ErrorCode::KNOWN {
            assert_eq!(ErrorCode::from_code(c.code()), *c);
            assert!(c.code() >= 3010 && c.code() <= 10070);
        }
        assert_eq!(ErrorCode::KNOWN.len(), 60);
    }

    #[test]
    fn gateway_body() {
        let g: GatewayError =
            serde_json::from_str(r#"{"statusCode":"401","message":"m"}"#).unwrap();
        assert_eq!(g.status_code, 401);
        let g: GatewayError = serde_json::from_str(r#"{"statusCode":401,"message":"m"}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&g).unwrap(),
            r#"{"statusCode":401,"message":"m"}"#
        );
    }
}
