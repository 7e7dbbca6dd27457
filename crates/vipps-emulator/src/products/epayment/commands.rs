//! The ePayment commands: what create, capture, refund, cancel, approve, reject and the passing of time do to
//! a stored payment, and the webhook events they emit. Pure functions the platform runs inside its transaction.

use std::collections::BTreeMap;

use url::Url;
use vipps_types::epayment::PaymentEventName;
use vipps_types::money::{Amount, Currency};
use vipps_types::problem::ErrorCode;

use super::domain::{self, DomainError, Event, EventName, PState, Payment};
use super::render;
use crate::platform::aggregate::{
    Aggregate, AggregateKey, Command, Ctx, OutboxEvent, Outcome, change,
};
use crate::platform::http::{StoredResponse, problem};

impl Aggregate for Payment {
    const KIND: &'static str = "epayment.payment";

    fn state_label(&self) -> &'static str {
        self.state.as_str()
    }

    fn due_ms(&self) -> Option<i64> {
        Payment::due_ms(self)
    }

    fn followed(&self) -> bool {
        self.followed
    }
}

/// The store key of a payment.
pub(super) fn key(msn: &str, reference: &str) -> AggregateKey {
    AggregateKey {
        kind: Payment::KIND,
        tenant: msn.to_owned(),
        id: reference.to_owned(),
    }
}

/// When a new payment expires.
#[derive(Debug, Clone, Copy)]
pub(super) enum Expiry {
    /// This long after it is created (ms).
    After(i64),
    /// At this time (ms), from `expiresAt`.
    At(i64),
}

/// A validated create request: everything of the payment except what the write itself supplies (its time, the
/// pspReference and the landing-page token).
#[derive(Debug, Clone)]
pub(super) struct Draft {
    pub(super) msn: String,
    pub(super) reference: String,
    pub(super) currency: Currency,
    pub(super) amount: i64,
    pub(super) user_flow: String,
    pub(super) method: String,
    pub(super) scope: Option<String>,
    pub(super) metadata: Option<BTreeMap<String, String>>,
    pub(super) expiry: Expiry,
    /// The landing page the redirect URL opens (none for push messages).
    pub(super) landing: Option<&'static str>,
    pub(super) base_url: Url,
    pub(super) test: bool,
    pub(super) key: String,
    pub(super) description: Option<String>,
    pub(super) phone_number: Option<String>,
    pub(super) return_url: Option<String>,
    pub(super) qr_format: Option<String>,
    pub(super) qr_size: Option<u32>,
    /// Made by another product through the façade, which follows it.
    pub(super) followed: bool,
}

impl Draft {
    fn build(&self, ctx: &Ctx<'_>) -> Payment {
        let token = crate::platform::ids::hex(&ctx.ids.bytes16());
        // A QR payment asked for the target URL as text gets the app screen's link itself, not an image.
        let landing = match (self.landing, self.qr_format.as_deref()) {
            (Some(_), Some("TEXT/TARGETURL")) => Some("_emulator/app"),
            (l, _) => l,
        };
        let redirect_url = landing.map(|page| {
            let mut u = self.base_url.join(page).expect("static path joins");
            u.query_pairs_mut()
                .append_pair("msn", &self.msn)
                .append_pair("reference", &self.reference)
                .append_pair("token", &token);
            u.to_string()
        });
        let psp = ctx.ids.psp_reference();
        Payment {
            msn: self.msn.clone(),
            reference: self.reference.clone(),
            currency: self.currency,
            amount: self.amount,
            state: PState::Created,
            authorized: 0,
            cancelled: 0,
            captured: 0,
            refunded: 0,
            psp: psp.clone(),
            redirect_url,
            user_flow: self.user_flow.clone(),
            method: self.method.clone(),
            scope: self.scope.clone(),
            sub: None,
            metadata: self.metadata.clone(),
            created_ms: ctx.now_ms,
            expires_ms: match self.expiry {
                Expiry::After(ms) => ctx.now_ms + ms,
                Expiry::At(ms) => ms,
            },
            pending_until_ms: None,
            test: self.test,
            followed: self.followed,
            token,
            events: vec![Event {
                psp,
                name: EventName::Created,
                amount: self.amount,
                at_ms: ctx.now_ms,
                key: Some(self.key.clone()),
                success: true,
            }],
            description: self.description.clone(),
            phone_number: self.phone_number.clone(),
            return_url: self.return_url.clone(),
            qr_format: self.qr_format.clone(),
            qr_size: self.qr_size,
        }
    }
}

/// The webhook events of `p.events[from..]`.
fn outbox(p: &Payment, from: usize) -> Vec<OutboxEvent> {
    p.events
        .get(from..)
        .unwrap_or_default()
        .iter()
        .map(|e| OutboxEvent {
            event_type: PaymentEventName::from_wire(e.name.as_str()).webhook_event_type(),
            event_id: e.psp.clone(),
            name: e.name.as_str().to_owned(),
            payload: serde_json::to_vec(&render::webhook_event(p, e))
                .unwrap_or_default()
                .into(),
        })
        .collect()
}

/// Creates a payment; 409 if the reference exists for the sales unit.
pub(super) fn create(draft: Draft) -> Box<dyn Command> {
    change::<Payment, _>(key(&draft.msn, &draft.reference), move |current, ctx| {
        if current.is_some() {
            return Outcome::answer(StoredResponse::problem(&problem(
                409,
                "Reference already exists",
                format!(
                    "A payment with reference `{}` already exists for this merchant serial number",
                    draft.reference
                ),
                Some(ErrorCode::ReferenceAlreadyExists),
                ctx.request,
            )));
        }
        let p = draft.build(ctx);
        Outcome {
            events: outbox(&p, 0),
            answer: StoredResponse::json(201, &render::created(&p)),
            save: Some(p),
            create: true,
        }
    })
}

/// A change of an existing payment.
#[derive(Debug, Clone)]
pub(super) enum Modification {
    /// The merchant captures.
    Capture { amount: Amount, key: String },
    /// The merchant refunds.
    Refund { amount: Amount, key: String },
    /// The merchant cancels (`cancelTransactionOnly`).
    Cancel {
        transaction_only: bool,
        key: Option<String>,
    },
    /// Force approve (test merchants; answers 200 without a body).
    ForceApprove,
    /// The user approves (answers the payment).
    UserApprove,
    /// The user rejects (answers the payment).
    UserReject,
    /// The payer approves on the emulated app screen with this phone number (answers the payment).
    PayerApprove { phone: Option<String> },
    /// Persist what time has done (expiry, a pending approval).
    Settle,
}

/// Applies a modification to an existing payment. Returns whether it must be saved (always, except a settle that
/// changed nothing: time-based changes noticed on the way are kept even when the operation itself is refused) and
/// the answer.
fn modify_payment(
    m: &Modification,
    p: &mut Payment,
    ctx: &domain::Ctx<'_>,
    request: &Ctx<'_>,
) -> (bool, StoredResponse) {
    let refused = |e: &DomainError| {
        StoredResponse::problem(&problem(
            e.status,
            e.code.title(),
            &e.detail,
            Some(e.code),
            request.request,
        ))
    };
    let modified = |p: &Payment, r: Result<(), DomainError>| match r {
        Ok(()) => StoredResponse::json(200, &render::modification(p)),
        Err(e) => refused(&e),
    };
    match m {
        Modification::Capture { amount, key } => {
            let r = p.capture(ctx, amount.currency, amount.value, key);
            (true, modified(p, r))
        }
        Modification::Refund { amount, key } => {
            let r = p.refund(ctx, amount.currency, amount.value, key);
            (true, modified(p, r))
        }
        Modification::Cancel {
            transaction_only,
            key,
        } => {
            let r = p.cancel(ctx, *transaction_only, key.as_deref());
            (true, modified(p, r))
        }
        Modification::ForceApprove => match p.approve(ctx) {
            Ok(()) => (true, StoredResponse::empty(200)),
            Err(e) => (true, refused(&e)),
        },
        Modification::UserApprove | Modification::UserReject => {
            let r = if matches!(m, Modification::UserReject) {
                p.reject(ctx)
            } else {
                p.approve(ctx)
            };
            match r {
                Ok(()) => (true, StoredResponse::json(200, &render::payment(p))),
                Err(e) => (true, refused(&e)),
            }
        }
        Modification::PayerApprove { phone } => match p.approve(ctx) {
            Ok(()) => {
                if phone.is_some() {
                    p.phone_number = phone.clone();
                }
                (true, StoredResponse::json(200, &render::payment(p)))
            }
            Err(e) => (true, refused(&e)),
        },
        Modification::Settle => (p.settle(ctx), StoredResponse::empty(204)),
    }
}

/// Changes an existing payment; 404 if it does not exist (a settle of a missing payment answers 204).
pub(super) fn modify(msn: &str, reference: &str, m: Modification) -> Box<dyn Command> {
    let reference_owned = reference.to_owned();
    change::<Payment, _>(key(msn, reference), move |current, ctx| {
        let Some(current) = current else {
            return Outcome::answer(match m {
                Modification::Settle => StoredResponse::empty(204),
                _ => StoredResponse::problem(&problem(
                    404,
                    "Payment not found",
                    format!(
                        "No payment with reference `{reference_owned}` exists for this merchant serial number"
                    ),
                    Some(ErrorCode::ReferenceNotFound),
                    ctx.request,
                )),
            });
        };
        let mut p = current.clone();
        let before = p.events.len();
        let new_psp = || ctx.ids.psp_reference();
        let dctx = domain::Ctx {
            now_ms: ctx.now_ms,
            new_psp: &new_psp,
        };
        let (changed, answer) = modify_payment(&m, &mut p, &dctx, ctx);
        if !changed {
            return Outcome::answer(answer);
        }
        Outcome {
            events: outbox(&p, before),
            answer,
            save: Some(p),
            create: false,
        }
    })
}
