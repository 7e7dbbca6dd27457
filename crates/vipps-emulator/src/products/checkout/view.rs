//! How the dashboard shows a session: its list columns, detail fields, timeline (opened, completed, each callback
//! attempt) and the link to its checkout page. Plain text only; the dashboard escapes it. The callback token is
//! a secret and is never shown.

use super::domain::{Kind, Session};
use super::render;
use crate::platform::html::{money, time};
use crate::platform::product::{AggregateView, TimelineEntry};

/// The dashboard's view of a session.
pub(super) fn session(s: &Session, base: &url::Url) -> AggregateView {
    let opt = |v: Option<String>| v.unwrap_or_else(|| "—".into());
    let amount = s.amount.as_ref().map(|a| money(a.value, &a.currency));
    let kind = match s.kind {
        Kind::Payment => "PAYMENT",
        Kind::Subscription => "SUBSCRIPTION",
    };
    let mut fields = vec![
        ("Session id", s.session_id.clone()),
        ("Type", kind.to_owned()),
        ("Amount", opt(amount.clone())),
        ("Description", opt(s.description.clone())),
        ("Callback URL", s.merchant_info.callback_url.clone()),
        ("Return URL", s.merchant_info.return_url.clone()),
        ("Expires", time(s.expires_ms)),
        ("Callback", format!("{:?}", s.callback)),
    ];
    if let Some(sub) = &s.subscription {
        fields.push((
            "Subscription",
            format!(
                "{} · {} every {} {}",
                sub.product_name,
                money(sub.amount.value, &sub.amount.currency),
                sub.interval.count,
                sub.interval.unit
            ),
        ));
    }
    if let Some((id, status)) = &s.agreement {
        fields.push(("Agreement", format!("{id} ({status} when completed)")));
    }
    if let Some(d) = &s.details {
        fields.push((
            "Customer",
            format!(
                "{} {} · {} · {}",
                d.first_name, d.last_name, d.email, d.phone_number
            ),
        ));
        if let Some((id, _)) = &d.shipping {
            fields.push(("Shipping option", id.clone()));
        }
    }
    let mut timeline = vec![TimelineEntry {
        at_ms: s.created_ms,
        name: "SessionCreated".into(),
        detail: kind.to_owned(),
        idempotency_key: None,
    }];
    if let Some(at) = s.initiated_ms {
        timeline.push(TimelineEntry {
            at_ms: at,
            name: "PaymentInitiated".into(),
            detail: String::new(),
            idempotency_key: None,
        });
    }
    if let Some(at) = s.completed_ms {
        timeline.push(TimelineEntry {
            at_ms: at,
            name: s.state.as_str().into(),
            detail: String::new(),
            idempotency_key: None,
        });
    }
    for (i, a) in s.attempts.iter().enumerate() {
        timeline.push(TimelineEntry {
            at_ms: a.at_ms,
            name: format!("CALLBACK #{}", i + 1),
            detail: match (&a.status, &a.error) {
                (Some(st), _) => {
                    format!("HTTP {st}{}", if a.delivered { " · delivered" } else { "" })
                }
                (None, Some(e)) => e.clone(),
                (None, None) => "no answer".into(),
            },
            idempotency_key: None,
        });
    }
    let mut page = base.join(render::FRONTEND_PATH).expect("static path joins");
    page.query_pairs_mut()
        .append_pair("token", &render::token(s));
    AggregateView {
        state: s.state.as_str(),
        columns: vec![("Type", kind.to_owned()), ("Amount", opt(amount))],
        fields,
        timeline,
        links: vec![("Checkout page", page.to_string())],
    }
}
