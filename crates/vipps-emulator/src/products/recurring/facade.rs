//! What other products may use of Recurring. Products never import each other's internals; a product whose
//! aggregates become Recurring agreements (Checkout's subscription sessions) creates and reads them only through
//! this module, so the agreement stays an ordinary Recurring agreement (charges, updates, stop and the
//! `recurring.*` webhooks all work on it).

use url::Url;

use super::api::{agreement_follow_up, draft_follow_ups, load_agreement};
use super::commands::{self, AgreementDraft, AgreementOp, Drafted, InitialDraft};
use crate::platform::Shared;
use crate::platform::http::{ApiError, RequestMeta};
use crate::platform::idempotency::{internal, run_write};
use crate::platform::store::Op;

/// An agreement another product has the user accept on its own page.
#[derive(Debug, Clone)]
pub(crate) struct NewAgreement {
    /// Sales unit.
    pub msn: String,
    /// Shown to the user.
    pub product_name: String,
    /// Shown to the user.
    pub product_description: Option<String>,
    /// Amount per interval in øre (`LEGACY` pricing, NOK).
    pub amount: i64,
    /// Interval unit (`YEAR`, `MONTH`, `WEEK`, `DAY`) and count.
    pub interval: (String, i32),
    /// The campaign, as sent.
    pub campaign: Option<serde_json::Value>,
    /// The merchant's page about the agreement.
    pub merchant_agreement_url: String,
    /// Where the user returns to.
    pub merchant_redirect_url: String,
    /// The user's phone number.
    pub phone_number: Option<String>,
    /// An initial charge: amount, description, charge id.
    pub initial: Option<(i64, String, String)>,
    /// The emulator's base URL.
    pub base_url: Url,
    /// Test merchant (magic amounts apply).
    pub test: bool,
    /// Recorded as the idempotency key of the initial charge.
    pub key: String,
}

/// Drafts the agreement (with its initial `RESERVE_CAPTURE` charge, if any) and accepts it as the
/// user; answers the agreement id and its status (`ACTIVE`, or `EXPIRED` when the initial charge fails).
pub(crate) async fn create_accepted(
    s: &Shared,
    meta: &RequestMeta,
    n: NewAgreement,
) -> Result<(String, &'static str), ApiError> {
    let initial = n.initial.map(|(amount, description, id)| InitialDraft {
        amount,
        description,
        transaction_type: "RESERVE_CAPTURE".into(),
        order_id: Some(id),
        external_id: None,
    });
    let d = AgreementDraft {
        msn: n.msn.clone(),
        pricing_type: "LEGACY".into(),
        amount: Some(n.amount),
        suggested_max: None,
        interval: Some(n.interval),
        campaign: n.campaign,
        product_name: n.product_name,
        product_description: n.product_description,
        merchant_agreement_url: n.merchant_agreement_url,
        merchant_redirect_url: n.merchant_redirect_url,
        phone_number: n.phone_number,
        scope: None,
        external_id: None,
        is_app: false,
        initial: initial.clone(),
        base_url: n.base_url,
        test: n.test,
    };
    let id = commands::new_agreement_id(s.clock.unix_ms(), s.ids.sequence());
    let resp = run_write(
        s,
        meta,
        Op::Execute(commands::draft_agreement(d, id.clone())),
    )
    .await?;
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .map_err(|e| internal(meta, &e))?;
    let drafted: Drafted = serde_json::from_slice(&bytes).map_err(|e| internal(meta, &e))?;
    draft_follow_ups(s, meta, &n.msn, &drafted, initial, n.test, &n.key).await?;
    run_write(
        s,
        meta,
        Op::Execute(commands::modify_agreement(
            &n.msn,
            &id,
            AgreementOp::UserAccept,
        )),
    )
    .await?;
    agreement_follow_up(s, meta, &n.msn, &id).await?;
    let status = status(s, meta, &n.msn, &id).await?.unwrap_or("PENDING");
    Ok((id, status))
}

/// The status of an agreement (`PENDING`, `ACTIVE`, `STOPPED`, `EXPIRED`), on emulator time; `None` when it
/// does not exist.
pub(crate) async fn status(
    s: &Shared,
    meta: &RequestMeta,
    msn: &str,
    id: &str,
) -> Result<Option<&'static str>, ApiError> {
    match load_agreement(s, meta, msn, id).await {
        Ok(a) => Ok(Some(a.status.as_str())),
        Err(e) if e.0.status() == http::StatusCode::NOT_FOUND => Ok(None),
        Err(e) => Err(e),
    }
}
