//! Pure conversions from stored rows to wire bodies and HTTP responses.

use bytes::Bytes;
use vipps_types::epayment::{
    Aggregate, CreatePaymentResponse, GetPaymentResponse, ModificationResponse, PaymentEvent,
    PaymentEventName, PaymentMethodResponse, PaymentMethodType, ProfileResponse, State,
    WebhookEvent,
};
use vipps_types::headers::MerchantSerialNumber;
use vipps_types::ids::{PspReference, Reference};
use vipps_types::money::Amount;
use vipps_types::problem::{ErrorCode, Problem};

use crate::domain::{Event, Payment};

/// A complete HTTP answer as stored for idempotent replay: status, headers and body bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// HTTP status.
    pub status: u16,
    /// Headers that are part of the answer (`Content-Type`, `Retry-After`, ...).
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Bytes,
}

impl StoredResponse {
    /// A JSON answer.
    pub fn json<T: serde::Serialize>(status: u16, value: &T) -> Self {
        StoredResponse {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: Bytes::from(serde_json::to_vec(value).unwrap_or_default()),
        }
    }

    /// An answer without a body.
    pub fn empty(status: u16) -> Self {
        StoredResponse {
            status,
            headers: vec![],
            body: Bytes::new(),
        }
    }

    /// A problem+json answer.
    pub fn problem(p: &Problem) -> Self {
        StoredResponse {
            status: p.status.unwrap_or(500),
            headers: vec![(
                "content-type".into(),
                vipps_types::headers::PROBLEM_JSON.into(),
            )],
            body: Bytes::from(serde_json::to_vec(p).unwrap_or_default()),
        }
    }
}

/// A problem body with the emulator's conventions: `type` per status, `traceId`, `instance`, an optional code.
pub fn problem(
    status: u16,
    title: &str,
    detail: impl Into<String>,
    code: Option<ErrorCode>,
    instance: &str,
    trace_id: &str,
) -> Problem {
    let mut p = Problem::new(status, title, detail)
        .with_instance(instance)
        .with_trace_id(trace_id);
    if let Some(c) = code {
        p = p.with_code(c);
    }
    p
}

fn reference(p: &Payment) -> Reference {
    // Stored references were validated on the way in.
    Reference::new(&p.reference)
        .unwrap_or_else(|_| Reference::new("invalid-ref").expect("constant"))
}

fn amount(p: &Payment, value: i64) -> Amount {
    Amount {
        currency: p.currency,
        value,
    }
}

/// The aggregate of a payment.
pub fn aggregate(p: &Payment) -> Aggregate {
    Aggregate {
        authorized_amount: amount(p, p.authorized),
        cancelled_amount: amount(p, p.cancelled),
        captured_amount: amount(p, p.captured),
        refunded_amount: amount(p, p.refunded),
    }
}

/// The wire state.
pub fn state(p: &Payment) -> State {
    State::from_wire(p.state.as_str())
}

/// `GET /epayment/v1/payments/{reference}`.
pub fn payment(p: &Payment) -> GetPaymentResponse {
    GetPaymentResponse {
        aggregate: aggregate(p),
        amount: amount(p, p.amount),
        state: state(p),
        payment_method: PaymentMethodResponse {
            type_: PaymentMethodType::from_wire(&p.method),
            card_bin: None,
        },
        profile: ProfileResponse { sub: p.sub.clone() },
        psp_reference: PspReference(p.psp.clone()),
        redirect_url: p.redirect_url.clone(),
        reference: reference(p),
        metadata: p.metadata.clone(),
    }
}

/// `201` of create.
pub fn created(p: &Payment) -> CreatePaymentResponse {
    CreatePaymentResponse {
        redirect_url: p.redirect_url.clone(),
        reference: reference(p),
    }
}

/// `200` of capture, refund and cancel.
pub fn modification(p: &Payment) -> ModificationResponse {
    ModificationResponse {
        amount: amount(p, p.amount),
        state: state(p),
        aggregate: aggregate(p),
        psp_reference: PspReference(p.psp.clone()),
        reference: reference(p),
    }
}

fn ts(ms: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// One event-log entry.
pub fn event(p: &Payment, e: &Event) -> PaymentEvent {
    PaymentEvent {
        reference: reference(p),
        psp_reference: PspReference(e.psp.clone()),
        name: PaymentEventName::from_wire(e.name.as_str()),
        amount: amount(p, e.amount),
        timestamp: ts(e.at_ms),
        idempotency_key: e.key.clone(),
        success: e.success,
    }
}

/// The event log, oldest first.
pub fn events(p: &Payment) -> Vec<PaymentEvent> {
    p.events.iter().map(|e| event(p, e)).collect()
}

/// The webhook payload for an event.
pub fn webhook_event(p: &Payment, e: &Event) -> WebhookEvent {
    WebhookEvent {
        msn: MerchantSerialNumber::new(&p.msn)
            .unwrap_or_else(|_| MerchantSerialNumber::new("0000").expect("constant")),
        reference: reference(p),
        psp_reference: PspReference(e.psp.clone()),
        name: PaymentEventName::from_wire(e.name.as_str()),
        amount: amount(p, e.amount),
        timestamp: ts(e.at_ms),
        idempotency_key: e.key.clone(),
        success: e.success,
    }
}
