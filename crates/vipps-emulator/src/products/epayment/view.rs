//! How the dashboard shows a payment: its list columns, detail fields, event timeline and the links to its payer
//! pages. Plain text only; the dashboard escapes it.

use super::domain::Payment;
use crate::platform::html::{money, time};
use crate::platform::product::{AggregateView, TimelineEntry};

fn link(base: &url::Url, path: &str, p: &Payment) -> String {
    let mut u = base.join(path).expect("static path joins");
    u.query_pairs_mut()
        .append_pair("msn", &p.msn)
        .append_pair("reference", &p.reference)
        .append_pair("token", &p.token);
    u.to_string()
}

/// The dashboard's view of a payment.
pub(super) fn payment(p: &Payment, base: &url::Url) -> AggregateView {
    let cur = p.currency.code();
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "—".into());
    let mut fields = vec![
        ("pspReference", p.psp.clone()),
        ("Amount", money(p.amount, cur)),
        ("Authorized", money(p.authorized, cur)),
        ("Captured", money(p.captured, cur)),
        ("Refunded", money(p.refunded, cur)),
        ("Cancelled", money(p.cancelled, cur)),
        ("User flow", p.user_flow.clone()),
        ("Payment method", p.method.clone()),
        ("Description", opt(&p.description)),
        ("Phone number", opt(&p.phone_number)),
        ("Profile scope", opt(&p.scope)),
        ("Return URL", opt(&p.return_url)),
        ("Redirect URL", opt(&p.redirect_url)),
        ("Expires", time(p.expires_ms)),
        (
            "Test merchant",
            if p.test { "yes" } else { "no" }.to_owned(),
        ),
    ];
    if let Some(until) = p.pending_until_ms {
        fields.push(("Approval pending until", time(until)));
    }
    if let Some(sub) = &p.sub {
        fields.push(("Profile sub", sub.clone()));
    }
    if let Some(md) = &p.metadata {
        for (k, v) in md {
            fields.push(("Metadata", format!("{k} = {v}")));
        }
    }
    let timeline = p
        .events
        .iter()
        .map(|e| TimelineEntry {
            at_ms: e.at_ms,
            name: e.name.as_str().to_owned(),
            detail: format!(
                "{} · pspReference {}{}",
                money(e.amount, cur),
                e.psp,
                if e.success { "" } else { " · failed" }
            ),
            idempotency_key: e.key.clone(),
        })
        .collect();
    let mut links = vec![("App screen", link(base, "_emulator/app", p))];
    if let Some(r) = &p.redirect_url {
        links.insert(0, ("Payer's page (redirectUrl)", r.clone()));
    }
    if p.user_flow == "PUSH_MESSAGE" {
        if let Some(ph) = &p.phone_number {
            let enc: String = url::form_urlencoded::byte_serialize(ph.as_bytes()).collect();
            if let Ok(u) = base.join(&format!("_emulator/inbox/{enc}")) {
                links.push(("App inbox", u.to_string()));
            }
        }
    }
    let mut json = base
        .join(&format!("_emulator/payments/{}", p.reference))
        .expect("a reference joins");
    json.query_pairs_mut().append_pair("msn", &p.msn);
    links.push(("JSON", json.to_string()));
    AggregateView {
        state: p.state.as_str(),
        columns: vec![
            ("Amount", money(p.amount, cur)),
            ("Flow", p.user_flow.clone()),
            ("Description", opt(&p.description)),
        ],
        fields,
        timeline,
        links,
    }
}
