//! The Checkout commands: what creating, opening, completing, the passing of time and each callback attempt do
//! to a stored session. Pure functions the platform runs inside its transaction.

use super::domain::{Attempt, Completion, Secret, Session};
use super::render;
use crate::platform::aggregate::{Aggregate, AggregateKey, Command, Outcome, change};
use crate::platform::http::{StoredResponse, problem};

impl Aggregate for Session {
    const KIND: &'static str = "checkout.session";

    fn state_label(&self) -> &'static str {
        self.state.as_str()
    }

    fn due_ms(&self) -> Option<i64> {
        Session::due_ms(self)
    }
}

/// The store key of a session.
pub(super) fn key(msn: &str, reference: &str) -> AggregateKey {
    AggregateKey {
        kind: Session::KIND,
        tenant: msn.to_owned(),
        id: reference.to_owned(),
    }
}

/// A validated create request: the session except what the write supplies (time, ids, token).
#[derive(Debug, Clone)]
pub(super) struct Draft {
    /// The session with placeholder id, token and times.
    pub(super) session: Session,
    /// How long it lives (ms).
    pub(super) lifetime_ms: i64,
    /// The emulator's base URL.
    pub(super) base_url: url::Url,
}

/// Creates a session; 409 when the reference is taken for the sales unit.
pub(super) fn create(d: Draft) -> Box<dyn Command> {
    let k = key(&d.session.msn, &d.session.reference);
    change::<Session, _>(k, move |current, ctx| {
        if current.is_some() {
            return Outcome::answer(StoredResponse::problem(
                &problem(
                    409,
                    "Conflict",
                    format!(
                        "A session with reference `{}` already exists for this merchant serial number",
                        d.session.reference
                    ),
                    None,
                    ctx.request,
                )
                .with_detail("transaction.reference", "must be unique per sales unit"),
            ));
        }
        let mut s = d.session.clone();
        s.session_id = render::session_id(ctx.ids.bytes16());
        s.token = Secret(crate::platform::ids::hex(&ctx.ids.bytes16()));
        s.created_ms = ctx.now_ms;
        s.expires_ms = ctx.now_ms + d.lifetime_ms;
        let answer = StoredResponse::json(200, &render::initiated(&s, &d.base_url));
        Outcome {
            save: Some(s),
            create: true,
            events: Vec::new(),
            answer,
        }
    })
}

/// A change of an existing session.
#[derive(Debug, Clone)]
pub(super) enum Change {
    /// The user opened the checkout page.
    Initiate,
    /// The details the user typed on the page, kept until the session completes.
    Details(Box<super::domain::UserDetails>),
    /// The user approved and the payment's result is being processed: no expiry until it is known.
    AwaitPayment,
    /// The user completed, or the payment ended (answers `{"changed": bool}`).
    Complete(Box<Completion>),
    /// Claims the due callback attempt for this long (ms); answers `{"claimed": bool}`.
    ClaimAttempt(i64),
    /// A callback attempt, recorded.
    Attempt(Attempt),
    /// Persist what time has done.
    Settle,
}

/// Changes an existing session; 404 when there is none (a settle of a missing one answers 204).
pub(super) fn modify(msn: &str, reference: &str, c: Change) -> Box<dyn Command> {
    let reference_owned = reference.to_owned();
    change::<Session, _>(key(msn, reference), move |current, ctx| {
        let Some(current) = current else {
            return Outcome::answer(match c {
                Change::Settle => StoredResponse::empty(204),
                _ => StoredResponse::problem(&problem(
                    404,
                    "Not Found",
                    format!("No session with reference `{reference_owned}` exists"),
                    None,
                    ctx.request,
                )),
            });
        };
        let mut s = current.clone();
        let answer = match &c {
            Change::Settle => {
                s.settle(ctx.now_ms);
                StoredResponse::empty(204)
            }
            Change::Initiate => {
                s.initiate(ctx.now_ms);
                StoredResponse::empty(204)
            }
            Change::AwaitPayment => {
                if s.state.open() {
                    s.awaiting_payment = true;
                }
                StoredResponse::empty(204)
            }
            Change::Details(d) => {
                s.set_details((**d).clone());
                StoredResponse::empty(204)
            }
            Change::Complete(completion) => match s.complete(ctx.now_ms, (**completion).clone()) {
                Ok(changed) => {
                    StoredResponse::json(200, &serde_json::json!({ "changed": changed }))
                }
                Err(r) => StoredResponse::problem(&problem(
                    r.status,
                    "Conflict",
                    r.detail,
                    None,
                    ctx.request,
                )),
            },
            Change::ClaimAttempt(lease_ms) => {
                let claimed = s.claim_attempt(ctx.now_ms, *lease_ms);
                StoredResponse::json(200, &serde_json::json!({ "claimed": claimed }))
            }
            Change::Attempt(a) => {
                s.record_attempt(a.clone(), ctx.now_ms);
                StoredResponse::empty(204)
            }
        };
        if s == *current {
            return Outcome::answer(answer);
        }
        Outcome {
            save: Some(s),
            create: false,
            events: Vec::new(),
            answer,
        }
    })
}

/// The state labels, in the order the dashboard's filter offers them.
pub(super) const STATES: &[&str] = &[
    "SessionCreated",
    "PaymentInitiated",
    "PaymentSuccessful",
    "PaymentTerminated",
    "SessionExpired",
];

#[cfg(test)]
mod tests {
    use super::super::domain::SState;
    use super::*;

    #[test]
    fn state_labels_are_the_wire_names() {
        for s in [
            SState::Created,
            SState::Initiated,
            SState::Successful,
            SState::Terminated,
            SState::Expired,
        ] {
            assert!(STATES.contains(&s.as_str()));
            assert!(s.wire().is_known());
        }
    }
}
