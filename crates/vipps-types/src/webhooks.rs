//! Webhooks API v1 (`/webhooks/v1/webhooks`) bodies, per the official spec.

use serde::{Deserialize, Serialize};

use crate::epayment::PaymentEventName;

/// Path of register (`POST`) and list (`GET`).
pub const WEBHOOKS_PATH: &str = "/webhooks/v1/webhooks";

/// Every ePayment event type a merchant can subscribe to.
pub fn epayment_event_types() -> Vec<String> {
    PaymentEventName::KNOWN
        .iter()
        .map(|n| n.webhook_event_type())
        .collect()
}

/// `POST /webhooks/v1/webhooks` body.
///
/// ```
/// use vipps_types::webhooks::RegisterRequest;
/// let r: RegisterRequest = serde_json::from_str(
///     r#"{"url":"https://example.com/webhook-callback","events":["epayments.payment.captured.v1"]}"#).unwrap();
/// assert_eq!(r.events.len(), 1);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// Where events are sent.
    pub url: String,
    /// Event types, such as `epayments.payment.captured.v1`.
    pub events: Vec<String>,
}

/// `201` body of register. The secret is shown only here.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterResponse {
    /// The registration id (a UUID).
    pub id: String,
    /// The HMAC secret for verifying deliveries.
    pub secret: String,
}

impl std::fmt::Debug for RegisterResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisterResponse")
            .field("id", &self.id)
            .field("secret", &"[redacted]")
            .finish()
    }
}

/// A registered webhook, as listed (no secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// The registration id.
    pub id: String,
    /// Where events are sent.
    pub url: String,
    /// Subscribed event types.
    pub events: Vec<String>,
}

/// `GET /webhooks/v1/webhooks` body.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryResponse {
    /// The registrations.
    pub webhooks: Vec<Webhook>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_in_debug() {
        let r = RegisterResponse {
            id: "1".into(),
            secret: "s3cr3t".into(),
        };
        assert!(!format!("{r:?}").contains("s3cr3t"));
        assert_eq!(epayment_event_types().len(), 8);
        assert!(epayment_event_types().contains(&"epayments.payment.terminated.v1".to_string()));
    }
}
