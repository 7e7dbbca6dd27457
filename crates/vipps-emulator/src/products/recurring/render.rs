//! Pure conversions from stored agreements and charges to Recurring v3 wire bodies.

use time::OffsetDateTime;
use vipps_types::recurring::{
    Actor, AgreementResponse, AgreementStatus, AgreementWebhookEvent, CampaignResponse,
    ChargeEvent, ChargeEventKind, ChargeResponse, ChargeStatus, ChargeSummary, ChargeType,
    ChargeWebhookEvent, FailureReason, PeriodUnit, PricingResponse, PricingType,
    RecurringEventType, TimePeriodResponse, TransactionType,
};

use super::domain::{Agreement, Charge};

/// A time from Unix milliseconds.
pub(super) fn ts(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// `every 2 weeks`, `every month`.
fn interval_text(unit: &str, count: i32) -> String {
    let word = unit.to_ascii_lowercase();
    if count == 1 {
        format!("every {word}")
    } else {
        format!("every {count} {word}s")
    }
}

/// `GET /recurring/v3/agreements/{agreementId}`.
pub(super) fn agreement(a: &Agreement) -> AgreementResponse {
    AgreementResponse {
        campaign: a
            .campaign
            .as_ref()
            .and_then(|c| serde_json::from_value::<CampaignResponse>(c.clone()).ok()),
        pricing: PricingResponse {
            type_: PricingType::from_wire(&a.pricing_type),
            currency: a.currency.clone(),
            amount: a.amount,
            suggested_max_amount: a.suggested_max,
            max_amount: a.max_amount,
        },
        id: a.id.clone(),
        interval: match &a.interval {
            Some((unit, count)) => TimePeriodResponse {
                unit: Some(PeriodUnit::from_wire(unit)),
                count: Some(*count),
                text: Some(interval_text(unit, *count)),
            },
            None => TimePeriodResponse {
                unit: None,
                count: None,
                text: Some("flexible".into()),
            },
        },
        product_name: a.product_name.clone(),
        product_description: a.product_description.clone(),
        created: ts(a.created_ms),
        start: a.start_ms.map(ts),
        stop: a.stop_ms.map(ts),
        status: AgreementStatus::from_wire(a.status.as_str()),
        merchant_agreement_url: a.merchant_agreement_url.clone(),
        merchant_redirect_url: a.merchant_redirect_url.clone(),
        sub: a.sub.clone(),
        userinfo_url: a
            .sub
            .as_ref()
            .map(|s| format!("https://api.vipps.no/vipps-userinfo-api/userinfo/{s}")),
        external_id: a.external_id.clone(),
        country_code: "NO".into(),
        uuid: a.uuid.clone(),
        vipps_confirmation_url: Some(a.confirmation_url.clone()),
    }
}

/// `GET .../charges/{chargeId}`.
pub(super) fn charge(c: &Charge) -> ChargeResponse {
    ChargeResponse {
        amount: c.amount,
        currency: c.currency.clone(),
        description: c.description.clone(),
        due: ts(c.due_date_ms),
        id: c.id.clone(),
        agreement_id: c.agreement_id.clone(),
        external_id: c.external_id.clone(),
        external_agreement_id: c.agreement_external_id.clone(),
        retry_days: c.retry_days,
        status: ChargeStatus::from_wire(c.status.as_str()),
        transaction_id: c.transaction_id.clone(),
        type_: ChargeType::from_wire(&c.charge_type),
        transaction_type: TransactionType::from_wire(&c.transaction_type),
        failure_reason: c.failure_reason.as_deref().map(FailureReason::from_wire),
        failure_description: c.failure_description.clone(),
        summary: ChargeSummary {
            captured: c.captured,
            refunded: c.refunded,
            cancelled: c.cancelled,
        },
        history: c
            .history
            .iter()
            .map(|h| ChargeEvent {
                occurred: ts(h.at_ms),
                event: ChargeEventKind::from_wire(&h.event),
                amount: h.amount,
                idempotency_key: h.key.clone(),
                success: h.success,
            })
            .collect(),
    }
}

/// The body of an agreement event.
pub(super) fn agreement_event(
    a: &Agreement,
    event_type: RecurringEventType,
    at_ms: i64,
    actor: Option<Actor>,
) -> AgreementWebhookEvent {
    AgreementWebhookEvent {
        agreement_id: a.id.clone(),
        agreement_external_id: a.external_id.clone(),
        event_type,
        occurred: ts(at_ms),
        msn: a.msn.clone(),
        actor,
    }
}

/// The body of a charge event.
pub(super) fn charge_event(
    c: &Charge,
    event_type: RecurringEventType,
    amount: i64,
    at_ms: i64,
) -> ChargeWebhookEvent {
    let failed = matches!(
        event_type,
        RecurringEventType::ChargeFailed | RecurringEventType::ChargeCreationFailed
    );
    ChargeWebhookEvent {
        agreement_id: c.agreement_id.clone(),
        agreement_external_id: c.agreement_external_id.clone(),
        charge_id: c.id.clone(),
        charge_external_id: c.external_id.clone(),
        amount,
        currency: c.currency.clone(),
        charge_type: ChargeType::from_wire(&c.charge_type),
        event_type,
        occurred: ts(at_ms),
        msn: c.msn.clone(),
        failure_reason: if failed {
            c.failure_reason.as_deref().map(FailureReason::from_wire)
        } else {
            None
        },
        failure_description: if failed {
            c.failure_description.clone()
        } else {
            None
        },
    }
}

/// The body of `recurring.charge-creation-failed.v1`: what the refused charge would have been, on its agreement.
pub(super) fn creation_failed_event(
    a: &Agreement,
    charge_id: &str,
    f: &super::commands::CreationFailure,
    at_ms: i64,
) -> ChargeWebhookEvent {
    ChargeWebhookEvent {
        agreement_id: a.id.clone(),
        agreement_external_id: a.external_id.clone(),
        charge_id: charge_id.to_owned(),
        charge_external_id: f.external_id.clone(),
        amount: f.amount,
        currency: a.currency.clone(),
        charge_type: ChargeType::from_wire(&f.charge_type),
        event_type: RecurringEventType::ChargeCreationFailed,
        occurred: ts(at_ms),
        msn: a.msn.clone(),
        failure_reason: Some(FailureReason::NonTechnicalError),
        failure_description: Some(f.description.clone()),
    }
}
