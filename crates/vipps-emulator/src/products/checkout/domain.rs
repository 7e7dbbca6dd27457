//! The Checkout session state machine, as pure functions over a [`Session`]: no I/O, time is passed in.
//!
//! ```text
//! SessionCreated --page opened--------------> PaymentInitiated
//! SessionCreated | PaymentInitiated --approved--> PaymentSuccessful
//! SessionCreated | PaymentInitiated --aborted, payment failed--> PaymentTerminated
//! SessionCreated | PaymentInitiated --lifetime over--> SessionExpired
//! ```
//!
//! A payment session's payment is an ePayment payment with the same reference; the session follows it (see
//! `flow.rs`). The merchant's callback is tracked here, durably: completing makes it due in the same write, each
//! attempt is claimed with a lease (so two instances never send the same attempt) and recorded, and a failed one is
//! due again after the next delay of [`RETRY_DELAYS_MS`]; the session is due (for the sweeper) whenever an attempt
//! is.

use serde::{Deserialize, Serialize};
use vipps_types::checkout::{
    Amount, CheckoutConfig, Logistics, MerchantInfo, PrefillCustomer, SessionState, Subscription,
};

/// A secret string: kept in the document, never in `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub(super) struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Payment or subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum Kind {
    /// A one-time payment: an ePayment payment with the session's reference.
    Payment,
    /// A Recurring agreement (with an optional initial charge), created when the user completes.
    Subscription,
}

/// Where a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum SState {
    /// Created; the user has not opened the checkout.
    Created,
    /// The user opened the checkout.
    Initiated,
    /// Paid or subscribed.
    Successful,
    /// Aborted, or the payment failed or was cancelled.
    Terminated,
    /// Not completed in time.
    Expired,
}

impl SState {
    /// The wire name (`sessionState`), also the state label in the store.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            SState::Created => "SessionCreated",
            SState::Initiated => "PaymentInitiated",
            SState::Successful => "PaymentSuccessful",
            SState::Terminated => "PaymentTerminated",
            SState::Expired => "SessionExpired",
        }
    }

    /// The wire enum.
    pub(super) fn wire(self) -> SessionState {
        SessionState::from_wire(self.as_str())
    }

    /// Whether the session can still change by the user's hand.
    pub(super) fn open(self) -> bool {
        matches!(self, SState::Created | SState::Initiated)
    }
}

/// What the user entered or confirmed on the checkout page (or what the controls supplied).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub(super) struct UserDetails {
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    pub phone_number: String,
    pub street_address: Option<String>,
    pub postal_code: Option<String>,
    pub city: Option<String>,
    pub country: Option<String>,
    /// The chosen shipping option: id and price.
    pub shipping: Option<(String, Option<Amount>)>,
    /// Whether the custom consent box was checked (when the merchant asked).
    pub consent: Option<bool>,
}

/// Delays before the retries of a failed callback (the vendor retries at most three times, with backoff), emulator
/// time.
pub(super) const RETRY_DELAYS_MS: [i64; 3] = [1_000, 2_000, 4_000];

/// One attempt to deliver the "payment completed" callback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Attempt {
    /// Emulator time of the attempt (ms).
    pub at_ms: i64,
    /// The answer's status, if any.
    pub status: Option<u16>,
    /// Why it failed without an answer (timeout, refused connection).
    pub error: Option<String>,
    /// Whether it counted as delivered (2xx).
    pub delivered: bool,
}

/// The merchant's callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum CallbackState {
    /// Not due (the session has not completed).
    NotDue,
    /// Due or being retried.
    Pending,
    /// Delivered.
    Delivered,
    /// Every attempt failed.
    GivenUp,
}

/// A session as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Session {
    pub msn: String,
    pub reference: String,
    pub session_id: String,
    /// The secret half of the checkout token.
    pub token: Secret,
    pub kind: Kind,
    pub state: SState,
    /// The transaction (a payment session's payment, or a subscription's initial charge).
    pub amount: Option<Amount>,
    pub description: Option<String>,
    pub merchant_info: MerchantInfo,
    pub logistics: Option<Logistics>,
    pub prefill: Option<PrefillCustomer>,
    pub config: CheckoutConfig,
    pub subscription: Option<Subscription>,
    pub created_ms: i64,
    pub expires_ms: i64,
    pub initiated_ms: Option<i64>,
    pub completed_ms: Option<i64>,
    /// What the user confirmed, once completed successfully.
    pub details: Option<UserDetails>,
    /// The user's OpenID `sub` (stable per phone number).
    pub sub: Option<String>,
    /// The Recurring agreement of a subscription session, and its status when the session completed.
    pub agreement: Option<(String, String)>,
    pub callback: CallbackState,
    pub attempts: Vec<Attempt>,
    /// When the next callback attempt is due (emulator time, ms), while the callback is pending.
    #[serde(default)]
    pub next_attempt_ms: Option<i64>,
    /// The user approved and the payment's result is still being processed (magic amount 201): the session
    /// waits for it instead of expiring.
    #[serde(default)]
    pub awaiting_payment: bool,
    /// Test merchant.
    pub test: bool,
}

/// Why a change is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Refusal {
    pub status: u16,
    pub detail: String,
}

/// How a session ends by the user's hand.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Completion {
    /// Paid or subscribed, with the user's details and, for a subscription, the agreement and its status.
    Success {
        details: Box<UserDetails>,
        sub: String,
        agreement: Option<(String, String)>,
    },
    /// Aborted, or the payment failed.
    Terminated,
}

impl Session {
    /// When it changes by itself next: its expiry while open.
    pub(super) fn due_ms(&self) -> Option<i64> {
        let expiry = (self.state.open() && !self.awaiting_payment).then_some(self.expires_ms);
        let callback = self
            .next_attempt_ms
            .filter(|_| self.callback == CallbackState::Pending);
        match (expiry, callback) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Applies the passing of time; whether anything changed.
    pub(super) fn settle(&mut self, now_ms: i64) -> bool {
        if self.state.open() && !self.awaiting_payment && now_ms >= self.expires_ms {
            self.state = SState::Expired;
            self.completed_ms = Some(self.expires_ms);
            return true;
        }
        false
    }

    /// The user opened the checkout.
    pub(super) fn initiate(&mut self, now_ms: i64) -> bool {
        self.settle(now_ms);
        if self.state == SState::Created {
            self.state = SState::Initiated;
            self.initiated_ms = Some(now_ms);
            return true;
        }
        false
    }

    /// The user completed (or the payment ended): answers whether the session changed now. Completing a session
    /// that already ended the same way changes nothing (completions are repeated by reads and notifications).
    pub(super) fn complete(&mut self, now_ms: i64, c: Completion) -> Result<bool, Refusal> {
        self.settle(now_ms);
        let target = match c {
            Completion::Success { .. } => SState::Successful,
            Completion::Terminated => SState::Terminated,
        };
        if !self.state.open() {
            if self.state == target {
                return Ok(false);
            }
            return Err(Refusal {
                status: 409,
                detail: format!(
                    "The session is {}; it can no longer be completed",
                    self.state.as_str()
                ),
            });
        }
        if let Completion::Success {
            details,
            sub,
            agreement,
        } = c
        {
            self.details = Some(*details);
            self.sub = Some(sub);
            self.agreement = agreement;
        }
        if self.initiated_ms.is_none() {
            self.initiated_ms = Some(now_ms);
        }
        self.state = target;
        self.completed_ms = Some(now_ms);
        self.callback = CallbackState::Pending;
        self.next_attempt_ms = Some(now_ms);
        Ok(true)
    }

    /// Keeps what the user typed while the session is open (a payment whose approval is still being processed
    /// completes later, with these details).
    pub(super) fn set_details(&mut self, d: UserDetails) -> bool {
        if !self.state.open() || self.details.as_ref() == Some(&d) {
            return false;
        }
        self.details = Some(d);
        true
    }

    /// Claims the due callback attempt for `lease_ms` (an attempt takes at most that long): whether this caller
    /// may make it. A claimed attempt is not due again until its lease ends, so a crash mid-attempt only delays it.
    pub(super) fn claim_attempt(&mut self, now_ms: i64, lease_ms: i64) -> bool {
        match self.next_attempt_ms {
            Some(due) if self.callback == CallbackState::Pending && due <= now_ms => {
                self.next_attempt_ms = Some(now_ms + lease_ms);
                true
            }
            _ => false,
        }
    }

    /// Records a callback attempt, answered at `now_ms`: delivered, due again after the next delay, or given up
    /// after the last retry.
    pub(super) fn record_attempt(&mut self, a: Attempt, now_ms: i64) {
        if self.callback != CallbackState::Pending {
            return;
        }
        let failures =
            self.attempts.iter().filter(|x| !x.delivered).count() + usize::from(!a.delivered);
        (self.callback, self.next_attempt_ms) = if a.delivered {
            (CallbackState::Delivered, None)
        } else {
            match RETRY_DELAYS_MS.get(failures - 1) {
                Some(d) => (CallbackState::Pending, Some(now_ms + d)),
                None => (CallbackState::GivenUp, None),
            }
        };
        self.attempts.push(a);
    }
}

#[cfg(test)]
mod tests {
    use vipps_test_support::table::{Case, check, expect_eq};

    use super::*;

    fn session() -> Session {
        Session {
            msn: "123456".into(),
            reference: "order-0001".into(),
            session_id: "s1".into(),
            token: Secret("t".into()),
            kind: Kind::Payment,
            state: SState::Created,
            amount: Some(Amount {
                value: 1000,
                currency: "NOK".into(),
            }),
            description: Some("Socks".into()),
            merchant_info: MerchantInfo {
                callback_url: "https://a.example/cb".into(),
                return_url: "https://a.example/r".into(),
                callback_authorization_token: "tok".into(),
                terms_and_conditions_url: None,
            },
            logistics: None,
            prefill: None,
            config: CheckoutConfig::default(),
            subscription: None,
            created_ms: 0,
            expires_ms: 600_000,
            initiated_ms: None,
            completed_ms: None,
            details: None,
            sub: None,
            agreement: None,
            callback: CallbackState::NotDue,
            attempts: vec![],
            next_attempt_ms: None,
            awaiting_payment: false,
            test: true,
        }
    }

    fn success() -> Completion {
        Completion::Success {
            details: Box::default(),
            sub: "sub".into(),
            agreement: None,
        }
    }

    #[derive(Debug, Clone, Copy)]
    enum Step {
        Open(i64),
        Approve(i64),
        Abort(i64),
        Time(i64),
    }

    #[derive(Debug)]
    struct Row {
        name: &'static str,
        steps: &'static [Step],
        /// The state it ends in, or the index of the step that is refused.
        want: Result<SState, usize>,
    }

    impl Case for Row {
        fn name(&self) -> String {
            self.name.into()
        }
    }

    fn run(steps: &[Step]) -> Result<SState, usize> {
        let mut s = session();
        for (i, st) in steps.iter().enumerate() {
            let r = match *st {
                Step::Open(t) => {
                    s.initiate(t);
                    Ok(())
                }
                Step::Approve(t) => s.complete(t, success()).map(|_| ()),
                Step::Abort(t) => s.complete(t, Completion::Terminated).map(|_| ()),
                Step::Time(t) => {
                    s.settle(t);
                    Ok(())
                }
            };
            r.map_err(|_| i)?;
        }
        Ok(s.state)
    }

    /// Every path through the state machine.
    #[test]
    fn lifecycle() {
        use Step::*;
        let row = |name, steps, want| Row { name, steps, want };
        check(
            &[
                row("created", &[], Ok(SState::Created)),
                row("opened", &[Open(1)], Ok(SState::Initiated)),
                row("opened twice", &[Open(1), Open(2)], Ok(SState::Initiated)),
                row("approved", &[Open(1), Approve(2)], Ok(SState::Successful)),
                row(
                    "approved without opening",
                    &[Approve(2)],
                    Ok(SState::Successful),
                ),
                row("aborted", &[Open(1), Abort(2)], Ok(SState::Terminated)),
                row(
                    "approved twice is one completion",
                    &[Approve(1), Approve(2)],
                    Ok(SState::Successful),
                ),
                row("abort after approve", &[Approve(1), Abort(2)], Err(1)),
                row("expired", &[Time(600_000)], Ok(SState::Expired)),
                row("approve when expired", &[Approve(600_000)], Err(0)),
                row("open when expired", &[Open(700_000)], Ok(SState::Expired)),
                row(
                    "approved sessions do not expire",
                    &[Approve(1), Time(10_000_000)],
                    Ok(SState::Successful),
                ),
            ],
            |r| expect_eq("outcome", run(r.steps), r.want),
        );
    }

    #[test]
    fn callback_attempts_are_claimed_retried_and_end_in_delivered_or_given_up() {
        let mut s = session();
        assert_eq!(s.due_ms(), Some(600_000), "expiry");
        assert!(s.complete(1, success()).unwrap());
        assert_eq!(s.callback, CallbackState::Pending);
        assert_eq!(s.due_ms(), Some(1), "the first attempt is due at once");
        assert!(s.claim_attempt(1, 11_000));
        assert!(!s.claim_attempt(2, 11_000), "claimed once");
        let fail = |at_ms| Attempt {
            at_ms,
            status: Some(500),
            error: None,
            delivered: false,
        };
        let mut now = 5;
        for (i, delay) in RETRY_DELAYS_MS.iter().enumerate() {
            s.record_attempt(fail(now), now);
            assert_eq!(
                s.callback,
                CallbackState::Pending,
                "after failure {}",
                i + 1
            );
            assert_eq!(s.due_ms(), Some(now + delay));
            now += delay;
            assert!(s.claim_attempt(now, 11_000));
        }
        s.record_attempt(fail(now), now);
        assert_eq!(s.callback, CallbackState::GivenUp);
        assert_eq!(s.attempts.len(), 4, "the first attempt and three retries");
        assert_eq!(s.due_ms(), None);
        let mut t = session();
        t.complete(1, success()).unwrap();
        t.claim_attempt(1, 11_000);
        t.record_attempt(
            Attempt {
                at_ms: 2,
                status: Some(200),
                error: None,
                delivered: true,
            },
            2,
        );
        assert_eq!(t.callback, CallbackState::Delivered);
        assert_eq!(t.due_ms(), None);
        assert!(
            !format!("{s:?}").contains("tok\""),
            "no callback token in Debug"
        );
    }
}
