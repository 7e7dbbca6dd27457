//! How the dashboard shows an agreement and a charge: their list columns, detail fields, timeline and links.
//! Plain text only; the dashboard escapes it.

use super::domain::{Agreement, Charge};
use crate::platform::html::{money, time};
use crate::platform::product::{AggregateView, TimelineEntry};

fn opt(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "—".into())
}

fn opt_time(v: Option<i64>) -> String {
    v.map_or_else(|| "—".into(), time)
}

/// `LEGACY · NOK 299.00`, `VARIABLE · up to NOK 500.00`, `FLEXIBLE`.
fn pricing(a: &Agreement) -> String {
    let cur = a.currency.as_str();
    match (a.amount, a.max_amount.or(a.suggested_max)) {
        (Some(amount), _) => format!("{} · {}", a.pricing_type, money(amount, cur)),
        (None, Some(max)) => format!("{} · up to {}", a.pricing_type, money(max, cur)),
        (None, None) => a.pricing_type.clone(),
    }
}

/// `every 1 MONTH`, or `flexible`.
fn interval(a: &Agreement) -> String {
    match &a.interval {
        Some((unit, count)) => format!("every {count} {unit}"),
        None => "flexible".into(),
    }
}

/// The dashboard's view of an agreement. Agreements keep no history, so its timeline is built from its times.
pub(super) fn agreement(a: &Agreement, base: &url::Url) -> AggregateView {
    let cur = a.currency.as_str();
    let mut fields = vec![
        ("UUID", a.uuid.clone()),
        ("Product name", a.product_name.clone()),
        ("Product description", opt(&a.product_description)),
        ("Pricing", pricing(a)),
        ("Interval", interval(a)),
        ("Phone number", opt(&a.phone_number)),
        ("External id", opt(&a.external_id)),
        ("Profile scope", opt(&a.scope)),
        ("Merchant agreement URL", a.merchant_agreement_url.clone()),
        ("Merchant redirect URL", a.merchant_redirect_url.clone()),
        ("Created", time(a.created_ms)),
        ("Accepted", opt_time(a.start_ms)),
        ("Stopped", opt_time(a.stop_ms)),
        ("Expires while pending", time(a.expires_ms)),
        (
            "Test merchant",
            if a.test { "yes" } else { "no" }.to_owned(),
        ),
    ];
    if let Some(max) = a.max_amount {
        fields.push(("User's maximum", money(max, cur)));
    }
    if let Some(c) = &a.campaign {
        fields.push(("Campaign", c.to_string()));
    }
    if let Some(sub) = &a.sub {
        fields.push(("Profile sub", sub.clone()));
    }
    if let Some(i) = &a.initial {
        fields.push((
            "Initial charge",
            format!(
                "{} · {} · {} · {}",
                i.id,
                money(i.amount, cur),
                i.transaction_type,
                i.description
            ),
        ));
    }
    let entry = |at_ms: i64, name: &str, detail: String| TimelineEntry {
        at_ms,
        name: name.to_owned(),
        detail,
        idempotency_key: None,
    };
    let mut timeline = vec![entry(a.created_ms, "DRAFTED", pricing(a))];
    if let Some(at) = a.start_ms {
        timeline.push(entry(at, "ACCEPTED", opt(&a.phone_number)));
    }
    if let Some(at) = a.stop_ms {
        timeline.push(entry(at, a.status.as_str(), String::new()));
    } else if a.start_ms.is_none() && a.status.as_str() != "PENDING" {
        timeline.push(entry(a.expires_ms, a.status.as_str(), String::new()));
    }
    let mut links = Vec::new();
    if a.status.as_str() == "PENDING" {
        links.push(("Confirmation page", a.confirmation_url.clone()));
    }
    let charges = format!(
        "_emulator/ui/aggregates/recurring.charge?msn={}",
        enc(&a.msn)
    );
    if let Ok(u) = base.join(&charges) {
        links.push(("Charges of this sales unit", u.to_string()));
    }
    AggregateView {
        state: a.status.as_str(),
        columns: vec![
            ("Product", a.product_name.clone()),
            ("Pricing", pricing(a)),
            ("Interval", interval(a)),
            ("Phone number", opt(&a.phone_number)),
        ],
        fields,
        timeline,
        links,
    }
}

/// The dashboard's view of a charge.
pub(super) fn charge(c: &Charge, base: &url::Url) -> AggregateView {
    let cur = c.currency.as_str();
    let mut fields = vec![
        ("Agreement", c.agreement_id.clone()),
        ("Agreement external id", opt(&c.agreement_external_id)),
        ("Amount", money(c.amount, cur)),
        ("Description", c.description.clone()),
        ("Type", c.charge_type.clone()),
        ("Transaction type", c.transaction_type.clone()),
        ("Transaction id", c.transaction_id.clone()),
        ("External id", opt(&c.external_id)),
        ("Due", time(c.due_date_ms)),
        ("Retry days", c.retry_days.to_string()),
        ("Reserved", money(c.reserved, cur)),
        ("Captured", money(c.captured, cur)),
        ("Refunded", money(c.refunded, cur)),
        ("Cancelled", money(c.cancelled, cur)),
        ("Attempts", c.attempts.to_string()),
    ];
    if let Some(at) = c.next_attempt_ms {
        fields.push(("Next attempt", time(at)));
    }
    if let Some(r) = &c.failure_reason {
        fields.push(("Failure reason", r.clone()));
    }
    if let Some(d) = &c.failure_description {
        fields.push(("Failure description", d.clone()));
    }
    if c.awaiting_agreement {
        fields.push((
            "Waiting for the agreement until",
            opt_time(c.awaiting_until_ms),
        ));
    }
    let timeline = c
        .history
        .iter()
        .map(|h| TimelineEntry {
            at_ms: h.at_ms,
            name: h.event.clone(),
            detail: format!(
                "{}{}",
                money(h.amount, cur),
                if h.success { "" } else { " · failed" }
            ),
            idempotency_key: h.key.clone(),
        })
        .collect();
    let mut links = Vec::new();
    let agr = format!(
        "_emulator/ui/aggregates/recurring.agreement/{}/{}",
        enc(&c.msn),
        enc(&c.agreement_id)
    );
    if let Ok(u) = base.join(&agr) {
        links.push(("Agreement", u.to_string()));
    }
    AggregateView {
        state: c.status.as_str(),
        columns: vec![
            ("Amount", money(c.amount, cur)),
            ("Due", time(c.due_date_ms)),
            ("Agreement", c.agreement_id.clone()),
            ("Type", c.charge_type.clone()),
        ],
        fields,
        timeline,
        links,
    }
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
