//! The `payments` section of a scenario file: a payment in a given state, made by the requests a client would
//! send (create, then the user's approval or rejection through the controls, capture, refund, cancel). The user's
//! actions go through the controls, so a scenario with payments past `CREATED` needs them on.

use serde::Deserialize;
use serde_json::json;

use crate::platform::product::SeedRequest;

/// One item of `payments`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedPayment {
    /// The sales unit (default: the first configured merchant).
    msn: Option<String>,
    reference: String,
    /// In minor units.
    amount: i64,
    #[serde(default = "nok")]
    currency: String,
    /// `CREATED`, `AUTHORIZED`, `ABORTED` or `TERMINATED` (default `CREATED`).
    #[serde(default = "created")]
    state: String,
    /// Captured amount (minor units), for `AUTHORIZED`.
    #[serde(default)]
    captured: i64,
    /// Refunded amount (minor units), at most the captured amount.
    #[serde(default)]
    refunded: i64,
    /// For `AUTHORIZED`: cancel what is not captured (the payment stays `AUTHORIZED`, as at the vendor).
    #[serde(default)]
    cancelled: bool,
}

fn nok() -> String {
    "NOK".into()
}
fn created() -> String {
    "CREATED".into()
}

/// The requests for one item.
pub(super) fn payment(item: &serde_json::Value) -> Result<Vec<SeedRequest>, String> {
    let p: SeedPayment = serde_json::from_value(item.clone()).map_err(|e| e.to_string())?;
    let authorized = match p.state.as_str() {
        "CREATED" | "ABORTED" | "TERMINATED" => false,
        "AUTHORIZED" => true,
        other => {
            return Err(format!(
                "state: `{other}` cannot be seeded (CREATED, AUTHORIZED, ABORTED or TERMINATED)"
            ));
        }
    };
    if (p.captured != 0 || p.refunded != 0 || p.cancelled) && !authorized {
        return Err(
            "captured, refunded, cancelled: only an AUTHORIZED payment has them (TERMINATED is a payment \
             cancelled before approval)"
                .into(),
        );
    }
    if p.captured < 0 || p.refunded < 0 || p.refunded > p.captured || p.captured > p.amount {
        return Err("captured, refunded: 0 <= refunded <= captured <= amount".into());
    }
    let r = &p.reference;
    let msn_q = p
        .msn
        .as_ref()
        .map(|m| format!("?msn={m}"))
        .unwrap_or_default();
    let req = |path: String, body: Option<serde_json::Value>, key: Option<String>| SeedRequest {
        msn: p.msn.clone(),
        method: http::Method::POST,
        path,
        body,
        idempotency_key: key,
    };
    let money = |v: i64| json!({"modificationAmount": {"currency": p.currency, "value": v}});
    let mut out = vec![req(
        "/epayment/v1/payments".into(),
        Some(json!({
            "amount": {"currency": p.currency, "value": p.amount},
            "paymentMethod": {"type": "WALLET"},
            "reference": r,
            "userFlow": "WEB_REDIRECT",
            "returnUrl": "https://example.com/return",
        })),
        Some(format!("scenario-{r}-create")),
    )];
    if p.state == "ABORTED" {
        out.push(req(
            format!("/_emulator/payments/{r}/reject{msn_q}"),
            None,
            None,
        ));
    }
    if authorized {
        out.push(req(
            format!("/_emulator/payments/{r}/approve{msn_q}"),
            None,
            None,
        ));
    }
    if p.captured > 0 {
        out.push(req(
            format!("/epayment/v1/payments/{r}/capture"),
            Some(money(p.captured)),
            Some(format!("scenario-{r}-capture")),
        ));
    }
    if p.refunded > 0 {
        out.push(req(
            format!("/epayment/v1/payments/{r}/refund"),
            Some(money(p.refunded)),
            Some(format!("scenario-{r}-refund")),
        ));
    }
    if p.state == "TERMINATED" || p.cancelled {
        out.push(req(
            format!("/epayment/v1/payments/{r}/cancel"),
            Some(json!({})),
            Some(format!("scenario-{r}-cancel")),
        ));
    }
    Ok(out)
}
