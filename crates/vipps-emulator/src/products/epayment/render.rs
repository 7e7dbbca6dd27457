//! Pure conversions from stored rows to wire bodies and HTTP responses.

use vipps_types::epayment::{
    Aggregate, CreatePaymentResponse, GetPaymentResponse, ModificationResponse, PaymentEvent,
    PaymentEventName, PaymentMethodResponse, PaymentMethodType, ProfileResponse, State,
    WebhookEvent,
};
use vipps_types::headers::MerchantSerialNumber;
use vipps_types::ids::{PspReference, Reference};
use vipps_types::money::Amount;

use super::domain::{Event, Payment};

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
pub(super) fn aggregate(p: &Payment) -> Aggregate {
    Aggregate {
        authorized_amount: amount(p, p.authorized),
        cancelled_amount: amount(p, p.cancelled),
        captured_amount: amount(p, p.captured),
        refunded_amount: amount(p, p.refunded),
    }
}

/// The wire state.
pub(super) fn state(p: &Payment) -> State {
    State::from_wire(p.state.as_str())
}

/// `GET /epayment/v1/payments/{reference}`.
pub(super) fn payment(p: &Payment) -> GetPaymentResponse {
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
pub(super) fn created(p: &Payment) -> CreatePaymentResponse {
    CreatePaymentResponse {
        redirect_url: p.redirect_url.clone(),
        reference: reference(p),
    }
}

/// `200` of capture, refund and cancel.
pub(super) fn modification(p: &Payment) -> ModificationResponse {
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
pub(super) fn event(p: &Payment, e: &Event) -> PaymentEvent {
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
pub(super) fn events(p: &Payment) -> Vec<PaymentEvent> {
    p.events.iter().map(|e| event(p, e)).collect()
}

/// The webhook payload for an event.
pub(super) fn webhook_event(p: &Payment, e: &Event) -> WebhookEvent {
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
