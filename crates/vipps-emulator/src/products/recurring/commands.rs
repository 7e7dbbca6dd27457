//! The Recurring commands: what drafting, accepting, rejecting, stopping and updating do to an agreement, what
//! creating, capturing, refunding, cancelling and the passing of time do to a charge, and
//! the webhook events they emit. Pure functions the platform runs inside its transaction.
//!
//! **One document per charge.** A charge is its own aggregate (`recurring.charge`, id = charge id), so creating
//! one writes a small new document instead of rewriting a growing agreement; it names its agreement as its
//! parent, which is how the store lists an agreement's charges (`list.rs`), so a create is one write.

use vipps_types::recurring::{Actor, RecurringEventType};

use super::domain::{
    AGREEMENT_EXPIRY_MS, AStatus, Agreement, AgreementChange, Charge, ChargeChange, Initial,
    Refusal,
};
use super::render;
use crate::platform::aggregate::{
    Aggregate, AggregateKey, Command, Ctx, OutboxEvent, Outcome, change,
};
use crate::platform::http::{StoredResponse, problem};
use crate::platform::ids::{hex, uuid_from};

impl Aggregate for Agreement {
    const KIND: &'static str = "recurring.agreement";

    fn state_label(&self) -> &'static str {
        self.status.as_str()
    }

    fn due_ms(&self) -> Option<i64> {
        Agreement::due_ms(self)
    }
}

impl Aggregate for Charge {
    const KIND: &'static str = "recurring.charge";

    fn state_label(&self) -> &'static str {
        self.status.as_str()
    }

    fn due_ms(&self) -> Option<i64> {
        Charge::due_ms(self)
    }

    fn parent(&self) -> Option<&str> {
        Some(&self.agreement_id)
    }
}

/// The store key of an agreement.
pub(super) fn agreement_key(msn: &str, id: &str) -> AggregateKey {
    AggregateKey {
        kind: Agreement::KIND,
        tenant: msn.to_owned(),
        id: id.to_owned(),
    }
}

/// The store key of a charge.
pub(super) fn charge_key(msn: &str, id: &str) -> AggregateKey {
    AggregateKey {
        kind: Charge::KIND,
        tenant: msn.to_owned(),
        id: id.to_owned(),
    }
}

/// Ids like the vendor's (`agr_5kSeqz`, `chr-WxrjKPW`; the spec allows a charge id 15 characters): the prefix,
/// then 11 letters and digits in an ASCII-ordered alphabet: 5 of the seconds since 2020 on the emulator clock
/// (62^5 s, until 2049) and 6 of the id generator's sequence (62^6 values, a random start, one step per id). Time
/// and then sequence first, so ids sort by creation: every insert goes to the end of the store's indexes instead of
/// a random page of each (random ids made each commit of charge creates write pages all over the indexes, most of
/// the writer's time), and two ids of one process never collide within a second.
fn short_id(prefix: &str, now_ms: i64, sequence: u64) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    const BASE: u64 = ALPHABET.len() as u64;
    const EPOCH_2020_MS: i64 = 1_577_836_800_000;
    let digits = |mut n: u64, out: &mut [u8]| {
        for c in out.iter_mut().rev() {
            *c = ALPHABET[(n % BASE) as usize];
            n /= BASE;
        }
    };
    let mut id = [0u8; 11];
    digits(
        u64::try_from((now_ms - EPOCH_2020_MS) / 1000).unwrap_or(0),
        &mut id[..5],
    );
    digits(sequence, &mut id[5..]);
    let mut s = String::with_capacity(prefix.len() + id.len());
    s.push_str(prefix);
    s.extend(id.iter().map(|&c| c as char));
    s
}

/// A transaction id: ten or more digits.
fn transaction_id(bytes: [u8; 16]) -> String {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap_or_default());
    format!("50{:010}", n % 10_000_000_000)
}

/// A refusal as a stored problem answer.
pub(super) fn refused(r: &Refusal, ctx: &Ctx<'_>) -> StoredResponse {
    let mut p = problem(r.status, r.title, &r.detail, None, ctx.request);
    if let Some(f) = r.field {
        p = p.with_detail(f, &r.detail);
    }
    StoredResponse::problem(&p)
}

fn not_found(what: &str, id: &str, ctx: &Ctx<'_>) -> StoredResponse {
    StoredResponse::problem(
        &problem(
            404,
            "Not Found",
            format!("No {what} with id `{id}` exists for this merchant serial number"),
            None,
            ctx.request,
        )
        .with_detail(
            if what == "agreement" {
                "agreementId"
            } else {
                "chargeId"
            },
            "not found",
        ),
    )
}

fn json_event<T: serde::Serialize>(
    event_type: RecurringEventType,
    event_id: String,
    name: &str,
    body: &T,
) -> OutboxEvent {
    OutboxEvent {
        event_type: event_type.as_str().to_owned(),
        event_id,
        name: name.to_owned(),
        payload: serde_json::to_vec(body).unwrap_or_default().into(),
    }
}

/// The webhook event of an agreement's change of status.
fn agreement_outbox(a: &Agreement, change: AgreementChange, at_ms: i64) -> OutboxEvent {
    let (t, name, actor) = match change {
        AgreementChange::Activated => (RecurringEventType::AgreementActivated, "ACTIVATED", None),
        AgreementChange::Rejected => (RecurringEventType::AgreementRejected, "REJECTED", None),
        AgreementChange::Stopped { by_merchant } => (
            RecurringEventType::AgreementStopped,
            "STOPPED",
            Some(if by_merchant {
                Actor::Merchant
            } else {
                Actor::User
            }),
        ),
        AgreementChange::Expired => (RecurringEventType::AgreementExpired, "EXPIRED", None),
    };
    json_event(
        t.clone(),
        format!("{}:{name}", a.id),
        name,
        &render::agreement_event(a, t, at_ms, actor),
    )
}

/// The webhook events of a charge's changes (`from` is the history length before them).
fn charge_outbox(
    c: &Charge,
    changes: &[ChargeChange],
    at_ms: i64,
    from: usize,
) -> Vec<OutboxEvent> {
    changes
        .iter()
        .enumerate()
        .map(|(i, ch)| {
            let (t, name, amount) = match *ch {
                ChargeChange::Reserved(a) => (RecurringEventType::ChargeReserved, "RESERVED", a),
                ChargeChange::Captured(a) => (RecurringEventType::ChargeCaptured, "CAPTURED", a),
                ChargeChange::Canceled(a) => (RecurringEventType::ChargeCanceled, "CANCELED", a),
                ChargeChange::Refunded(a) => (RecurringEventType::ChargeRefunded, "REFUNDED", a),
                ChargeChange::Failed(a) => (RecurringEventType::ChargeFailed, "FAILED", a),
            };
            let at = c.history.get(from + i).map_or(at_ms, |h| h.at_ms);
            json_event(
                t.clone(),
                format!("{}:{}", c.id, from + i),
                name,
                &render::charge_event(c, t, amount, at),
            )
        })
        .collect()
}

/// A validated draft: everything of the agreement except what the write supplies (time, ids, token).
#[derive(Debug, Clone)]
pub(super) struct AgreementDraft {
    pub(super) msn: String,
    pub(super) pricing_type: String,
    pub(super) amount: Option<i64>,
    pub(super) suggested_max: Option<i64>,
    pub(super) interval: Option<(String, i32)>,
    pub(super) campaign: Option<serde_json::Value>,
    pub(super) product_name: String,
    pub(super) product_description: Option<String>,
    pub(super) merchant_agreement_url: String,
    pub(super) merchant_redirect_url: String,
    pub(super) phone_number: Option<String>,
    pub(super) scope: Option<String>,
    pub(super) external_id: Option<String>,
    pub(super) is_app: bool,
    /// The initial charge.
    pub(super) initial: Option<InitialDraft>,
    pub(super) base_url: url::Url,
    pub(super) test: bool,
}

/// A validated initial charge of a draft.
#[derive(Debug, Clone)]
pub(super) struct InitialDraft {
    pub(super) amount: i64,
    pub(super) description: String,
    pub(super) transaction_type: String,
    pub(super) order_id: Option<String>,
    pub(super) external_id: Option<String>,
}

/// The answer of a draft, with what the follow-up writes need.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Drafted {
    pub(super) agreement_id: String,
    pub(super) uuid: String,
    pub(super) vipps_confirmation_url: String,
    pub(super) charge_id: Option<String>,
}

/// Drafts an agreement (always a new id, so never a conflict).
pub(super) fn draft_agreement(d: AgreementDraft, agreement_id: String) -> Box<dyn Command> {
    change::<Agreement, _>(agreement_key(&d.msn, &agreement_id), move |current, ctx| {
        if current.is_some() {
            return Outcome::answer(refused(
                &Refusal::conflict("The agreement id is taken; retry", "agreementId"),
                ctx,
            ));
        }
        let token = hex(&ctx.ids.bytes16());
        let uuid = uuid_from(ctx.ids.bytes16());
        let mut page = d
            .base_url
            .join("_emulator/recurring/confirm")
            .expect("static path joins");
        page.query_pairs_mut()
            .append_pair("msn", &d.msn)
            .append_pair("agreementId", &agreement_id)
            .append_pair("token", &token);
        if d.is_app {
            page.query_pairs_mut().append_pair("isApp", "true");
        }
        let initial = d.initial.as_ref().map(|i| Initial {
            id: i
                .order_id
                .clone()
                .unwrap_or_else(|| new_charge_id(ctx.now_ms, ctx.ids.sequence())),
            amount: i.amount,
            description: i.description.clone(),
            transaction_type: i.transaction_type.clone(),
            external_id: i.external_id.clone(),
        });
        let a = Agreement {
            msn: d.msn.clone(),
            id: agreement_id.clone(),
            uuid: uuid.clone(),
            status: AStatus::Pending,
            pricing_type: d.pricing_type.clone(),
            currency: "NOK".into(),
            amount: d.amount,
            suggested_max: d.suggested_max,
            max_amount: None,
            interval: d.interval.clone(),
            campaign: d.campaign.clone(),
            product_name: d.product_name.clone(),
            product_description: d.product_description.clone(),
            merchant_agreement_url: d.merchant_agreement_url.clone(),
            merchant_redirect_url: d.merchant_redirect_url.clone(),
            phone_number: d.phone_number.clone(),
            scope: d.scope.clone(),
            sub: None,
            external_id: d.external_id.clone(),
            confirmation_url: page.to_string(),
            token,
            created_ms: ctx.now_ms,
            start_ms: None,
            stop_ms: None,
            expires_ms: ctx.now_ms + AGREEMENT_EXPIRY_MS,
            initial,
            test: d.test,
        };
        let answer = Drafted {
            agreement_id: a.id.clone(),
            uuid,
            vipps_confirmation_url: a.confirmation_url.clone(),
            charge_id: a.initial.as_ref().map(|i| i.id.clone()),
        };
        Outcome {
            save: Some(a),
            create: true,
            events: Vec::new(),
            answer: StoredResponse::json(201, &answer),
        }
    })
}

/// A new agreement id (the handler's, so a conflicting id can be retried before the key is spent).
pub(super) fn new_agreement_id(now_ms: i64, sequence: u64) -> String {
    short_id("agr_", now_ms, sequence)
}

/// A change of an existing agreement.
#[derive(Debug, Clone)]
pub(super) enum AgreementOp {
    /// The user accepts on the confirmation page (answers the agreement).
    UserAccept,
    /// Force accept (test merchants; answers 204).
    ForceAccept { phone: String },
    /// The user rejects (answers the agreement).
    UserReject,
    /// The user stops an active agreement in the app (answers the agreement).
    UserStop,
    /// `PATCH`: product fields, pricing, `status: STOPPED` (answers 204).
    Patch(Box<PatchData>),
    /// Persist what time has done.
    Settle,
}

/// A validated `PATCH`.
#[derive(Debug, Clone, Default)]
pub(super) struct PatchData {
    pub(super) product_name: Option<String>,
    pub(super) product_description: Option<String>,
    pub(super) merchant_agreement_url: Option<String>,
    pub(super) external_id: Option<String>,
    pub(super) amount: Option<i64>,
    pub(super) suggested_max: Option<i64>,
    pub(super) interval: Option<(String, i32)>,
    pub(super) stop: bool,
}

/// Changes an existing agreement; 404 if there is none (a settle of a missing one answers 204).
pub(super) fn modify_agreement(msn: &str, id: &str, op: AgreementOp) -> Box<dyn Command> {
    let id_owned = id.to_owned();
    change::<Agreement, _>(agreement_key(msn, id), move |current, ctx| {
        let Some(current) = current else {
            return Outcome::answer(match op {
                AgreementOp::Settle => StoredResponse::empty(204),
                _ => not_found("agreement", &id_owned, ctx),
            });
        };
        let mut a = current.clone();
        let before = a.status;
        let sub = || uuid_from(ctx.ids.bytes16());
        let mut by_merchant = false;
        let result: Result<StoredResponse, Refusal> = match &op {
            AgreementOp::Settle => {
                a.settle(ctx.now_ms);
                Ok(StoredResponse::empty(204))
            }
            AgreementOp::UserAccept => a
                .accept(ctx.now_ms, None, sub())
                .map(|_| StoredResponse::json(200, &render::agreement(&a))),
            AgreementOp::ForceAccept { phone } => {
                if !a.test {
                    Err(Refusal {
                        status: 403,
                        title: "Forbidden",
                        detail: "Force accept is only available in the test environment".into(),
                        field: None,
                    })
                } else {
                    a.accept(ctx.now_ms, Some(phone), sub())
                        .map(|_| StoredResponse::empty(204))
                }
            }
            AgreementOp::UserReject => a
                .reject(ctx.now_ms)
                .map(|_| StoredResponse::json(200, &render::agreement(&a))),
            AgreementOp::UserStop => {
                if a.status == AStatus::Active {
                    a.stop(ctx.now_ms, false)
                        .map(|_| StoredResponse::json(200, &render::agreement(&a)))
                } else {
                    Err(Refusal::conflict(
                        "Only an ACTIVE agreement can be stopped by the user",
                        "status",
                    ))
                }
            }
            AgreementOp::Patch(p) => {
                by_merchant = true;
                patch(&mut a, p, ctx.now_ms).map(|()| StoredResponse::empty(204))
            }
        };
        let answer = match result {
            Ok(r) => r,
            Err(e) => refused(&e, ctx),
        };
        let change = match (before, a.status) {
            (x, y) if x == y => None,
            (_, AStatus::Active) => Some(AgreementChange::Activated),
            (_, AStatus::Expired) => Some(AgreementChange::Expired),
            (AStatus::Pending, AStatus::Stopped) if !by_merchant => Some(AgreementChange::Rejected),
            (_, AStatus::Stopped) => Some(AgreementChange::Stopped { by_merchant }),
            _ => None,
        };
        if change.is_none() && a == *current {
            return Outcome::answer(answer);
        }
        Outcome {
            events: change
                .map(|c| agreement_outbox(&a, c, ctx.now_ms))
                .into_iter()
                .collect(),
            answer,
            save: Some(a),
            create: false,
        }
    })
}

fn patch(a: &mut Agreement, p: &PatchData, now_ms: i64) -> Result<(), Refusal> {
    a.settle(now_ms);
    if matches!(a.status, AStatus::Stopped | AStatus::Expired) {
        if p.stop && a.status == AStatus::Stopped {
            return Ok(());
        }
        return Err(Refusal::conflict(
            format!("A {} agreement cannot be changed", a.status.as_str()),
            "status",
        ));
    }
    if p.amount.is_some() && a.pricing_type != "LEGACY" {
        return Err(Refusal::bad(
            "pricing.amount applies to LEGACY pricing only",
            "pricing.amount",
        ));
    }
    if p.suggested_max.is_some() && a.pricing_type != "VARIABLE" {
        return Err(Refusal::bad(
            "pricing.suggestedMaxAmount applies to VARIABLE pricing only",
            "pricing.suggestedMaxAmount",
        ));
    }
    if let Some(v) = &p.product_name {
        a.product_name = v.clone();
    }
    if let Some(v) = &p.product_description {
        a.product_description = Some(v.clone());
    }
    if let Some(v) = &p.merchant_agreement_url {
        a.merchant_agreement_url = v.clone();
    }
    if let Some(v) = &p.external_id {
        a.external_id = Some(v.clone());
    }
    if let Some(v) = p.amount {
        a.amount = Some(v);
    }
    if let Some(v) = p.suggested_max {
        a.suggested_max = Some(v);
    }
    if let Some(v) = &p.interval {
        a.interval = Some(v.clone());
    }
    if p.stop {
        a.stop(now_ms, true)?;
    }
    Ok(())
}

/// A validated charge, with what the agreement said when it was read just before.
#[derive(Debug, Clone)]
pub(super) struct ChargeDraft {
    pub(super) msn: String,
    pub(super) agreement_id: String,
    pub(super) agreement_external_id: Option<String>,
    pub(super) amount: i64,
    pub(super) description: String,
    pub(super) due_date_ms: i64,
    pub(super) retry_days: i32,
    pub(super) charge_type: String,
    pub(super) transaction_type: String,
    pub(super) external_id: Option<String>,
    /// The failure every attempt meets (magic amount, above the user's maximum).
    pub(super) fails_with: Option<(String, String)>,
    /// An initial charge waits for its agreement until this time.
    pub(super) awaiting_until_ms: Option<i64>,
    /// The idempotency key of the create (for the history).
    pub(super) key: Option<String>,
}

/// Creates a charge under `charge_id`; 409 if the id (an `orderId`) is taken.
pub(super) fn create_charge(d: ChargeDraft, charge_id: String) -> Box<dyn Command> {
    change::<Charge, _>(charge_key(&d.msn, &charge_id), move |current, ctx| {
        if let Some(c) = current {
            if d.awaiting_until_ms.is_some() && c.agreement_id == d.agreement_id {
                // The initial charge of a replayed draft: already there.
                return Outcome::answer(StoredResponse::json(
                    201,
                    &serde_json::json!({ "chargeId": c.id }),
                ));
            }
            return Outcome::answer(refused(
                &Refusal::conflict(
                    format!("A charge with id `{charge_id}` already exists"),
                    "orderId",
                ),
                ctx,
            ));
        }
        let mut c = Charge {
            msn: d.msn.clone(),
            id: charge_id.clone(),
            agreement_id: d.agreement_id.clone(),
            agreement_external_id: d.agreement_external_id.clone(),
            amount: d.amount,
            currency: "NOK".into(),
            description: d.description.clone(),
            due_date_ms: d.due_date_ms,
            retry_days: d.retry_days,
            status: super::domain::CStatus::Pending,
            charge_type: d.charge_type.clone(),
            transaction_type: d.transaction_type.clone(),
            external_id: d.external_id.clone(),
            transaction_id: transaction_id(ctx.ids.bytes16()),
            failure_reason: None,
            failure_description: None,
            reserved: 0,
            captured: 0,
            refunded: 0,
            cancelled: 0,
            next_attempt_ms: None,
            attempts: 0,
            forced_failures: 0,
            fails_with: d.fails_with.clone(),
            awaiting_agreement: d.awaiting_until_ms.is_some(),
            awaiting_until_ms: d.awaiting_until_ms,
            created_ms: ctx.now_ms,
            history: Vec::new(),
        };
        c.history.push(super::domain::Hist {
            at_ms: ctx.now_ms,
            event: "CREATE".into(),
            amount: d.amount,
            key: d.key.clone(),
            success: true,
        });
        if !c.awaiting_agreement {
            c.start(ctx.now_ms);
        }
        Outcome {
            answer: StoredResponse::json(201, &serde_json::json!({ "chargeId": c.id })),
            save: Some(c),
            create: true,
            events: Vec::new(),
        }
    })
}

/// A new charge id.
pub(super) fn new_charge_id(now_ms: i64, sequence: u64) -> String {
    short_id("chr-", now_ms, sequence)
}

/// A change of an existing charge.
#[derive(Debug, Clone)]
pub(super) enum ChargeOp {
    /// Capture (answers 204).
    Capture { amount: i64, key: String },
    /// Refund (answers 204).
    Refund { amount: i64, key: String },
    /// Cancel (answers 204).
    Cancel { key: String },
    /// The initial charge's agreement was accepted.
    AgreementAccepted,
    /// The agreement was rejected, stopped or expired.
    AgreementEnded,
    /// Make the next attempts fail (`-1`: all); answers the charge.
    ForceFail { times: i32 },
    /// Persist what time has done.
    Settle,
}

/// Changes an existing charge (of `agreement` when given); 404 if there is none.
pub(super) fn modify_charge(
    msn: &str,
    agreement: Option<&str>,
    id: &str,
    op: ChargeOp,
) -> Box<dyn Command> {
    let id_owned = id.to_owned();
    let agreement = agreement.map(str::to_owned);
    change::<Charge, _>(charge_key(msn, id), move |current, ctx| {
        let Some(current) =
            current.filter(|c| agreement.as_deref().is_none_or(|a| a == c.agreement_id))
        else {
            return Outcome::answer(match op {
                ChargeOp::Settle | ChargeOp::AgreementAccepted | ChargeOp::AgreementEnded => {
                    StoredResponse::empty(204)
                }
                _ => not_found("charge", &id_owned, ctx),
            });
        };
        let mut c = current.clone();
        let from = c.history.len();
        let mut changes = c.settle(ctx.now_ms);
        let result: Result<StoredResponse, Refusal> = match &op {
            ChargeOp::Settle => Ok(StoredResponse::empty(204)),
            ChargeOp::Capture { amount, key } => c.capture(ctx.now_ms, *amount, key).map(|ch| {
                changes.push(ch);
                StoredResponse::empty(204)
            }),
            ChargeOp::Refund { amount, key } => c.refund(ctx.now_ms, *amount, key).map(|ch| {
                changes.push(ch);
                StoredResponse::empty(204)
            }),
            ChargeOp::Cancel { key } => c.cancel(ctx.now_ms, key).map(|ch| {
                changes.push(ch);
                StoredResponse::empty(204)
            }),
            ChargeOp::AgreementAccepted => {
                changes.extend(c.agreement_accepted(ctx.now_ms));
                Ok(StoredResponse::empty(204))
            }
            ChargeOp::AgreementEnded => {
                c.agreement_ended(ctx.now_ms);
                Ok(StoredResponse::empty(204))
            }
            ChargeOp::ForceFail { times } => {
                c.forced_failures = *times;
                Ok(StoredResponse::json(200, &render::charge(&c)))
            }
        };
        let answer = match result {
            Ok(r) => r,
            Err(e) => refused(&e, ctx),
        };
        if c == *current {
            return Outcome::answer(answer);
        }
        Outcome {
            events: charge_outbox(&c, &changes, ctx.now_ms, from_of(&c, from, &changes)),
            answer,
            save: Some(c),
            create: false,
        }
    })
}

/// The history index of the first event-bearing entry: changes map to the last entries of the history.
fn from_of(c: &Charge, _before: usize, changes: &[ChargeChange]) -> usize {
    c.history.len().saturating_sub(changes.len())
}

/// A charge of an asynchronous (bulk) creation that was refused after the request was accepted.
#[derive(Debug, Clone)]
pub(super) struct CreationFailure {
    /// The merchant's `orderId`, if it gave one (otherwise the event names a fresh id, as no charge exists).
    pub(super) order_id: Option<String>,
    pub(super) external_id: Option<String>,
    pub(super) amount: i64,
    pub(super) charge_type: String,
    /// Why, in words (the refusal's field and rule).
    pub(super) description: String,
}

/// Reports a refused bulk item as `recurring.charge-creation-failed.v1` on its agreement, which it leaves
/// unchanged; 404 (and no event) when the agreement does not exist for this merchant.
pub(super) fn charge_creation_failed(
    msn: &str,
    agreement_id: &str,
    f: CreationFailure,
) -> Box<dyn Command> {
    let agreement = agreement_id.to_owned();
    change::<Agreement, _>(agreement_key(msn, agreement_id), move |current, ctx| {
        let Some(a) = current else {
            return Outcome::answer(not_found("agreement", &agreement, ctx));
        };
        let charge_id = f
            .order_id
            .clone()
            .unwrap_or_else(|| new_charge_id(ctx.now_ms, ctx.ids.sequence()));
        let t = RecurringEventType::ChargeCreationFailed;
        let body = render::creation_failed_event(a, &charge_id, &f, ctx.now_ms);
        Outcome {
            save: None,
            create: false,
            events: vec![json_event(
                t,
                format!("{charge_id}:creation-failed"),
                "CREATION_FAILED",
                &body,
            )],
            answer: StoredResponse::empty(204),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_creation_and_fit_the_specs_fifteen_characters() {
        let t = 1_780_000_000_000;
        // (time, sequence): later seconds first by time, ids of one second by sequence.
        let issued = [
            (t, 7),
            (t + 1, 8),
            (t + 999, 9),
            (t + 1_000, 3),
            (t + 86_400_000, 0),
            (t + 20 * 365 * 86_400_000, 1),
        ];
        let ids: Vec<String> = issued.iter().map(|&(ms, n)| new_charge_id(ms, n)).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
        assert!(ids.iter().all(|i| i.len() == 15), "{ids:?}");
        assert!(
            ids.iter()
                .all(|i| i[4..].bytes().all(|b| b.is_ascii_alphanumeric())),
            "{ids:?}"
        );
        assert_ne!(new_charge_id(t, 1), new_charge_id(t, 2));
        assert!(new_agreement_id(t, 0).starts_with("agr_"));
    }
}
