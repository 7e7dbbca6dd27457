//! The Recurring state machines, as pure functions over stored [`Agreement`] and [`Charge`] documents: no I/O,
//! time is passed in.
//!
//! ```text
//! Agreement:  PENDING --user accepts / force accept--> ACTIVE --merchant or user stops--> STOPPED
//!             PENDING --user rejects----------------> STOPPED
//!             PENDING --10 minutes, or the initial charge fails--> EXPIRED
//!
//! Charge:     PENDING --30 days before due--> DUE --due date--> PROCESSING --attempt--> CHARGED | RESERVED
//!             PROCESSING --attempt fails, retry days left--> PROCESSING (next attempt a day later)
//!             PROCESSING --attempt fails, no retry day left--> FAILED
//!             RESERVED --capture--> CHARGED | PARTIALLY_CAPTURED;  CHARGED --refund--> PARTIALLY_REFUNDED | REFUNDED
//!             PENDING | DUE | PROCESSING | RESERVED --cancel--> CANCELLED
//! ```
//!
//! **Time.** A charge is `DUE` from 30 days before its due date (00:00 UTC) and `PROCESSING` from the due date;
//! the first attempt is made [`ATTEMPT_DELAY_MS`] later and failed attempts are retried daily while `retryDays`
//! lasts (`retryDays + 1` attempts in all). An `UNSCHEDULED` charge is `PROCESSING` at once and attempted
//! [`UNSCHEDULED_DELAY_MS`] after creation. A `PENDING` agreement expires after [`AGREEMENT_EXPIRY_MS`].
//!
//! **Failing on purpose.** On a test merchant, a charge whose amount is one of [`FAILING_AMOUNTS`] fails every
//! attempt with that reason (as ePayment's magic amounts), and the control
//! `POST /_emulator/recurring/charges/{chargeId}/fail` makes the next attempts of any charge fail. A `VARIABLE`
//! agreement's charge above the user's maximum fails with `charge_amount_too_high`.

use serde::{Deserialize, Serialize};

/// One day, in milliseconds.
pub(super) const DAY_MS: i64 = 86_400_000;
/// How long a drafted agreement waits for the user.
pub(super) const AGREEMENT_EXPIRY_MS: i64 = 10 * 60_000;
/// How long before the due date a charge becomes `DUE`.
pub(super) const DUE_WINDOW_MS: i64 = 30 * DAY_MS;
/// The first attempt of a charge, after its due date (00:00 UTC).
pub(super) const ATTEMPT_DELAY_MS: i64 = 3_600_000;
/// The attempt of an `UNSCHEDULED` charge, after its creation.
pub(super) const UNSCHEDULED_DELAY_MS: i64 = 60_000;

/// Magic amounts (øre) that make every attempt of a charge on a test merchant fail: (amount, reason, text).
pub(super) const FAILING_AMOUNTS: &[(i64, &str, &str)] = &[
    (
        151,
        "user_action_required",
        "Insufficient funds (test amount 151)",
    ),
    (
        182,
        "user_action_required",
        "Refused by issuer (test amount 182)",
    ),
    (
        186,
        "user_action_required",
        "Expired card (test amount 186)",
    ),
    (
        187,
        "non_technical_error",
        "The user has no valid payment source (test amount 187)",
    ),
    (
        190,
        "technical_error",
        "A failure in Recurring (test amount 190)",
    ),
];

/// The failure a magic amount asks for.
pub(super) fn magic_failure(amount: i64) -> Option<(&'static str, &'static str)> {
    FAILING_AMOUNTS
        .iter()
        .find(|(a, _, _)| *a == amount)
        .map(|(_, r, t)| (*r, *t))
}

/// The status of an agreement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum AStatus {
    /// Waiting for the user.
    Pending,
    /// Accepted.
    Active,
    /// Rejected or stopped.
    Stopped,
    /// Not accepted in time.
    Expired,
}

impl AStatus {
    /// The wire name.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            AStatus::Pending => "PENDING",
            AStatus::Active => "ACTIVE",
            AStatus::Stopped => "STOPPED",
            AStatus::Expired => "EXPIRED",
        }
    }
}

/// The initial charge of an agreement, as drafted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Initial {
    /// Its charge id.
    pub id: String,
    /// Amount in øre.
    pub amount: i64,
    /// Shown to the user.
    pub description: String,
    /// `DIRECT_CAPTURE` or `RESERVE_CAPTURE`.
    pub transaction_type: String,
    /// The merchant's id.
    pub external_id: Option<String>,
}

/// An agreement as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Agreement {
    /// Sales unit.
    pub msn: String,
    /// `agr_...`.
    pub id: String,
    /// Its UUID.
    pub uuid: String,
    /// Status.
    pub status: AStatus,
    /// `LEGACY`, `VARIABLE` or `FLEXIBLE`.
    pub pricing_type: String,
    /// `NOK`.
    pub currency: String,
    /// Amount per interval (`LEGACY`).
    pub amount: Option<i64>,
    /// Suggested maximum (`VARIABLE`).
    pub suggested_max: Option<i64>,
    /// The user's maximum (`VARIABLE`, once accepted: the suggested one).
    pub max_amount: Option<i64>,
    /// Interval unit and count (`None`: flexible).
    pub interval: Option<(String, i32)>,
    /// The campaign as answered (stored as its JSON).
    pub campaign: Option<serde_json::Value>,
    /// Product name.
    pub product_name: String,
    /// Product description.
    pub product_description: Option<String>,
    /// Where the user manages the subscription.
    pub merchant_agreement_url: String,
    /// Where the user goes after acting.
    pub merchant_redirect_url: String,
    /// Phone number from the draft or the acceptance.
    pub phone_number: Option<String>,
    /// Requested profile scope.
    pub scope: Option<String>,
    /// The user's `sub`, once accepted with a scope.
    pub sub: Option<String>,
    /// The merchant's id.
    pub external_id: Option<String>,
    /// The confirmation page (or deeplink).
    pub confirmation_url: String,
    /// The token in the confirmation page's URL.
    pub token: String,
    /// Created at (ms).
    pub created_ms: i64,
    /// Accepted at (ms).
    pub start_ms: Option<i64>,
    /// Stopped at (ms).
    pub stop_ms: Option<i64>,
    /// Expires at (ms) while pending.
    pub expires_ms: i64,
    /// The initial charge.
    pub initial: Option<Initial>,
    /// A test merchant's agreement (magic amounts and force accept apply).
    pub test: bool,
}

/// What happened to an agreement (for its webhook event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AgreementChange {
    /// Accepted.
    Activated,
    /// Rejected by the user.
    Rejected,
    /// Stopped (by the merchant when `true`).
    Stopped { by_merchant: bool },
    /// Expired (in time or because the initial charge failed).
    Expired,
}

/// A refused operation: status, a short title, the detail and the field it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Refusal {
    /// HTTP status.
    pub status: u16,
    /// Title.
    pub title: &'static str,
    /// Detail.
    pub detail: String,
    /// The field it is about.
    pub field: Option<&'static str>,
}

impl Refusal {
    pub(super) fn conflict(detail: impl Into<String>, field: &'static str) -> Self {
        Refusal {
            status: 409,
            title: "Conflict",
            detail: detail.into(),
            field: Some(field),
        }
    }

    pub(super) fn bad(detail: impl Into<String>, field: &'static str) -> Self {
        Refusal {
            status: 400,
            title: "Bad Request",
            detail: detail.into(),
            field: Some(field),
        }
    }
}

impl Agreement {
    /// When it changes by itself next.
    pub(super) fn due_ms(&self) -> Option<i64> {
        (self.status == AStatus::Pending).then_some(self.expires_ms)
    }

    /// Whether the initial charge fails when the user accepts (a magic amount on a test merchant).
    pub(super) fn initial_fails(&self) -> bool {
        self.test
            && self
                .initial
                .as_ref()
                .is_some_and(|i| magic_failure(i.amount).is_some())
    }

    /// Applies time: a pending agreement past its expiry expires.
    pub(super) fn settle(&mut self, now_ms: i64) -> Option<AgreementChange> {
        if self.status == AStatus::Pending && now_ms >= self.expires_ms {
            self.status = AStatus::Expired;
            return Some(AgreementChange::Expired);
        }
        None
    }

    /// The user (or force accept) accepts. A failing initial charge makes it `EXPIRED` instead.
    pub(super) fn accept(
        &mut self,
        now_ms: i64,
        phone: Option<&str>,
        sub: String,
    ) -> Result<AgreementChange, Refusal> {
        self.settle(now_ms);
        if self.status != AStatus::Pending {
            return Err(Refusal::conflict(
                format!(
                    "The agreement is {}; only a PENDING agreement can be accepted",
                    self.status.as_str()
                ),
                "status",
            ));
        }
        if self.initial_fails() {
            self.status = AStatus::Expired;
            return Ok(AgreementChange::Expired);
        }
        self.status = AStatus::Active;
        self.start_ms = Some(now_ms);
        if let Some(p) = phone {
            self.phone_number = Some(p.to_owned());
        }
        if self.scope.is_some() {
            self.sub = Some(sub);
        }
        if self.pricing_type == "VARIABLE" {
            self.max_amount = self.suggested_max;
        }
        Ok(AgreementChange::Activated)
    }

    /// The user rejects.
    pub(super) fn reject(&mut self, now_ms: i64) -> Result<AgreementChange, Refusal> {
        self.settle(now_ms);
        if self.status != AStatus::Pending {
            return Err(Refusal::conflict(
                format!(
                    "The agreement is {}; only a PENDING agreement can be rejected",
                    self.status.as_str()
                ),
                "status",
            ));
        }
        self.status = AStatus::Stopped;
        self.stop_ms = Some(now_ms);
        Ok(AgreementChange::Rejected)
    }

    /// Stopped by the merchant (`PATCH status: STOPPED`) or by the user (control). Stopping a pending agreement
    /// is allowed (the vendor allows it); stopping a stopped one changes nothing.
    pub(super) fn stop(
        &mut self,
        now_ms: i64,
        by_merchant: bool,
    ) -> Result<Option<AgreementChange>, Refusal> {
        self.settle(now_ms);
        match self.status {
            AStatus::Stopped => Ok(None),
            AStatus::Expired => Err(Refusal::conflict(
                "The agreement has expired and cannot be stopped",
                "status",
            )),
            AStatus::Pending | AStatus::Active => {
                self.status = AStatus::Stopped;
                self.stop_ms = Some(now_ms);
                Ok(Some(AgreementChange::Stopped { by_merchant }))
            }
        }
    }
}

/// The status of a charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum CStatus {
    /// Created; due later.
    Pending,
    /// Due within 30 days.
    Due,
    /// Being charged.
    Processing,
    /// Reserved.
    Reserved,
    /// Charged.
    Charged,
    /// Part of a reservation captured.
    PartiallyCaptured,
    /// Failed.
    Failed,
    /// Cancelled.
    Cancelled,
    /// Part refunded.
    PartiallyRefunded,
    /// All refunded.
    Refunded,
}

impl CStatus {
    /// The wire name.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            CStatus::Pending => "PENDING",
            CStatus::Due => "DUE",
            CStatus::Processing => "PROCESSING",
            CStatus::Reserved => "RESERVED",
            CStatus::Charged => "CHARGED",
            CStatus::PartiallyCaptured => "PARTIALLY_CAPTURED",
            CStatus::Failed => "FAILED",
            CStatus::Cancelled => "CANCELLED",
            CStatus::PartiallyRefunded => "PARTIALLY_REFUNDED",
            CStatus::Refunded => "REFUNDED",
        }
    }

    /// Whether a charge in this state can still be cancelled by the merchant.
    pub(super) fn cancellable(self) -> bool {
        matches!(
            self,
            CStatus::Pending | CStatus::Due | CStatus::Processing | CStatus::Reserved
        )
    }
}

/// One history entry of a charge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Hist {
    /// When (ms).
    pub at_ms: i64,
    /// `CREATE`, `RESERVE`, `CAPTURE`, `REFUND`, `CANCEL`, `FAIL`.
    pub event: String,
    /// Amount of this event.
    pub amount: i64,
    /// The key of the request that caused it.
    pub key: Option<String>,
    /// Whether it succeeded.
    pub success: bool,
}

/// A charge as stored (its own document, so a new charge never rewrites its agreement or its siblings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Charge {
    /// Sales unit.
    pub msn: String,
    /// `chr-...` or the merchant's `orderId`.
    pub id: String,
    /// The agreement.
    pub agreement_id: String,
    /// The agreement's external id, at creation.
    pub agreement_external_id: Option<String>,
    /// Amount in øre.
    pub amount: i64,
    /// `NOK`.
    pub currency: String,
    /// Shown to the user.
    pub description: String,
    /// The due date, 00:00 UTC (ms).
    pub due_date_ms: i64,
    /// Days to retry.
    pub retry_days: i32,
    /// Status.
    pub status: CStatus,
    /// `INITIAL`, `RECURRING` or `UNSCHEDULED`.
    pub charge_type: String,
    /// `DIRECT_CAPTURE` or `RESERVE_CAPTURE`.
    pub transaction_type: String,
    /// The merchant's id.
    pub external_id: Option<String>,
    /// Transaction id (10+ digits).
    pub transaction_id: String,
    /// Why it failed.
    pub failure_reason: Option<String>,
    /// Why it failed, in words.
    pub failure_description: Option<String>,
    /// Reserved total.
    pub reserved: i64,
    /// Captured total.
    pub captured: i64,
    /// Refunded total.
    pub refunded: i64,
    /// Cancelled total.
    pub cancelled: i64,
    /// The next attempt while processing (ms).
    pub next_attempt_ms: Option<i64>,
    /// Attempts made.
    pub attempts: i32,
    /// Attempts still forced to fail by the control (`-1`: all).
    pub forced_failures: i32,
    /// The failure every attempt meets (a magic amount, or above the user's maximum): (reason, text).
    pub fails_with: Option<(String, String)>,
    /// An initial charge waiting for its agreement to be accepted (it is settled by the acceptance).
    pub awaiting_agreement: bool,
    /// When an initial charge stops waiting (the agreement's expiry, ms).
    pub awaiting_until_ms: Option<i64>,
    /// Created at (ms).
    pub created_ms: i64,
    /// History, oldest first.
    pub history: Vec<Hist>,
}

/// What happened to a charge (for its webhook event), with the amount of the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ChargeChange {
    /// Reserved.
    Reserved(i64),
    /// Captured (or charged directly).
    Captured(i64),
    /// Cancelled.
    Canceled(i64),
    /// Refunded.
    Refunded(i64),
    /// Failed.
    Failed(i64),
}

/// The 00:00 UTC of the day of `ms`.
pub(super) fn day_start(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS) * DAY_MS
}

impl Charge {
    /// When it changes by itself next.
    pub(super) fn due_ms(&self) -> Option<i64> {
        if self.awaiting_agreement {
            return self.awaiting_until_ms;
        }
        match self.status {
            CStatus::Pending => Some(self.due_date_ms - DUE_WINDOW_MS),
            CStatus::Due => Some(self.due_date_ms),
            CStatus::Processing => self.next_attempt_ms,
            _ => None,
        }
    }

    fn push(&mut self, at_ms: i64, event: &str, amount: i64, key: Option<&str>, success: bool) {
        self.history.push(Hist {
            at_ms,
            event: event.to_owned(),
            amount,
            key: key.map(str::to_owned),
            success,
        });
    }

    /// The status a new charge starts in at `now_ms`.
    pub(super) fn start(&mut self, now_ms: i64) {
        if self.charge_type == "UNSCHEDULED" {
            self.status = CStatus::Processing;
            self.next_attempt_ms = Some(now_ms + UNSCHEDULED_DELAY_MS);
        } else if now_ms >= self.due_date_ms - DUE_WINDOW_MS {
            self.status = CStatus::Due;
        } else {
            self.status = CStatus::Pending;
        }
    }

    /// One attempt at `at_ms`: charged or reserved, or failed (then retried while retry days last).
    fn attempt(&mut self, at_ms: i64, out: &mut Vec<ChargeChange>) {
        self.attempts += 1;
        let forced = self.forced_failures != 0;
        let failure = if forced {
            if self.forced_failures > 0 {
                self.forced_failures -= 1;
            }
            Some((
                "user_action_required".to_owned(),
                "Made to fail by the emulator control".to_owned(),
            ))
        } else {
            self.fails_with.clone()
        };
        match failure {
            None => {
                self.next_attempt_ms = None;
                if self.transaction_type == "RESERVE_CAPTURE" {
                    self.status = CStatus::Reserved;
                    self.reserved = self.amount;
                    self.push(at_ms, "RESERVE", self.amount, None, true);
                    out.push(ChargeChange::Reserved(self.amount));
                } else {
                    self.status = CStatus::Charged;
                    self.captured = self.amount;
                    self.push(at_ms, "CAPTURE", self.amount, None, true);
                    out.push(ChargeChange::Captured(self.amount));
                }
            }
            Some((reason, text)) => {
                // Attempts are made on the due day and on each retry day after it.
                if self.attempts <= self.retry_days {
                    self.next_attempt_ms = Some(at_ms + DAY_MS);
                } else {
                    self.next_attempt_ms = None;
                    self.status = CStatus::Failed;
                    self.failure_reason = Some(reason);
                    self.failure_description = Some(text);
                    self.push(at_ms, "FAIL", self.amount, None, false);
                    out.push(ChargeChange::Failed(self.amount));
                }
            }
        }
    }

    /// Applies every change time has made up to `now_ms`, in order.
    pub(super) fn settle(&mut self, now_ms: i64) -> Vec<ChargeChange> {
        let mut out = Vec::new();
        if self.awaiting_agreement {
            if self.awaiting_until_ms.is_some_and(|t| now_ms >= t) {
                // The agreement was not accepted in time.
                self.awaiting_agreement = false;
                self.awaiting_until_ms = None;
                self.status = CStatus::Cancelled;
                self.cancelled = self.amount;
                let at = self.created_ms + AGREEMENT_EXPIRY_MS;
                self.push(at, "CANCEL", self.amount, None, true);
            }
            return out;
        }
        for _ in 0..64 {
            let Some(due) = self.due_ms() else { break };
            if due > now_ms {
                break;
            }
            match self.status {
                CStatus::Pending => self.status = CStatus::Due,
                CStatus::Due => {
                    self.status = CStatus::Processing;
                    self.next_attempt_ms = Some(self.due_date_ms + ATTEMPT_DELAY_MS);
                }
                CStatus::Processing => self.attempt(due, &mut out),
                _ => break,
            }
        }
        out
    }

    /// The agreement of an initial charge was accepted: the charge is attempted at once.
    pub(super) fn agreement_accepted(&mut self, now_ms: i64) -> Vec<ChargeChange> {
        let mut out = Vec::new();
        if !self.awaiting_agreement {
            return out;
        }
        self.awaiting_agreement = false;
        self.awaiting_until_ms = None;
        self.status = CStatus::Processing;
        // The initial charge is made while the user waits: one attempt, no retries.
        self.retry_days = 0;
        self.attempt(now_ms, &mut out);
        out
    }

    /// The agreement was rejected or stopped: what has not been charged is cancelled (no event: the agreement's
    /// own event tells).
    pub(super) fn agreement_ended(&mut self, now_ms: i64) -> bool {
        let open = self.awaiting_agreement
            || matches!(
                self.status,
                CStatus::Pending | CStatus::Due | CStatus::Processing
            );
        if !open {
            return false;
        }
        self.awaiting_agreement = false;
        self.awaiting_until_ms = None;
        self.next_attempt_ms = None;
        self.status = CStatus::Cancelled;
        self.cancelled = self.amount;
        self.push(now_ms, "CANCEL", self.amount, None, true);
        true
    }

    /// The merchant cancels (`DELETE`): a charge not yet charged, or the rest of a reservation.
    pub(super) fn cancel(&mut self, now_ms: i64, key: &str) -> Result<ChargeChange, Refusal> {
        if !self.status.cancellable() && self.status != CStatus::PartiallyCaptured {
            return Err(Refusal::conflict(
                format!("A {} charge cannot be cancelled", self.status.as_str()),
                "status",
            ));
        }
        let rest = if matches!(self.status, CStatus::Reserved | CStatus::PartiallyCaptured) {
            self.reserved - self.captured
        } else {
            self.amount
        };
        if self.status == CStatus::PartiallyCaptured {
            // The uncaptured rest is released; what was captured stays charged.
            self.cancelled = rest;
            self.status = CStatus::Charged;
        } else {
            self.cancelled = rest;
            self.status = CStatus::Cancelled;
        }
        self.awaiting_agreement = false;
        self.awaiting_until_ms = None;
        self.next_attempt_ms = None;
        self.push(now_ms, "CANCEL", rest, Some(key), true);
        Ok(ChargeChange::Canceled(rest))
    }

    /// The merchant captures (part of) a reservation.
    pub(super) fn capture(
        &mut self,
        now_ms: i64,
        amount: i64,
        key: &str,
    ) -> Result<ChargeChange, Refusal> {
        if !matches!(self.status, CStatus::Reserved | CStatus::PartiallyCaptured) {
            return Err(Refusal::conflict(
                format!(
                    "Only a RESERVED charge can be captured; this one is {}",
                    self.status.as_str()
                ),
                "status",
            ));
        }
        let left = self.reserved - self.captured;
        if amount > left {
            return Err(Refusal::bad(
                format!("The amount {amount} is more than the {left} left to capture"),
                "amount",
            ));
        }
        self.captured += amount;
        self.status = if self.captured == self.reserved {
            CStatus::Charged
        } else {
            CStatus::PartiallyCaptured
        };
        self.push(now_ms, "CAPTURE", amount, Some(key), true);
        Ok(ChargeChange::Captured(amount))
    }

    /// The merchant refunds (part of) what was charged.
    pub(super) fn refund(
        &mut self,
        now_ms: i64,
        amount: i64,
        key: &str,
    ) -> Result<ChargeChange, Refusal> {
        if !matches!(
            self.status,
            CStatus::Charged | CStatus::PartiallyCaptured | CStatus::PartiallyRefunded
        ) {
            return Err(Refusal::conflict(
                format!(
                    "Only a charged charge can be refunded; this one is {}",
                    self.status.as_str()
                ),
                "status",
            ));
        }
        let left = self.captured - self.refunded;
        if amount > left {
            return Err(Refusal::bad(
                format!("The amount {amount} is more than the {left} left to refund"),
                "amount",
            ));
        }
        self.refunded += amount;
        self.status = if self.refunded == self.captured {
            CStatus::Refunded
        } else {
            CStatus::PartiallyRefunded
        };
        self.push(now_ms, "REFUND", amount, Some(key), true);
        Ok(ChargeChange::Refunded(amount))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn charge(due_date_ms: i64, retry_days: i32, fails: bool) -> Charge {
        Charge {
            msn: "123456".into(),
            id: "chr-1".into(),
            agreement_id: "agr_1".into(),
            agreement_external_id: None,
            amount: 1000,
            currency: "NOK".into(),
            description: "x".into(),
            due_date_ms,
            retry_days,
            status: CStatus::Pending,
            charge_type: "RECURRING".into(),
            transaction_type: "DIRECT_CAPTURE".into(),
            external_id: None,
            transaction_id: "5001419121".into(),
            failure_reason: None,
            failure_description: None,
            reserved: 0,
            captured: 0,
            refunded: 0,
            cancelled: 0,
            next_attempt_ms: None,
            attempts: 0,
            forced_failures: 0,
            fails_with: fails.then(|| ("user_action_required".into(), "x".into())),
            awaiting_agreement: false,
            awaiting_until_ms: None,
            created_ms: 0,
            history: vec![],
        }
    }

    #[test]
    fn time_moves_a_charge_through_its_states() {
        let due = 100 * DAY_MS;
        let mut c = charge(due, 2, false);
        c.start(0);
        assert_eq!(c.status, CStatus::Pending);
        c.settle(due - DUE_WINDOW_MS);
        assert_eq!(c.status, CStatus::Due);
        c.settle(due);
        assert_eq!(c.status, CStatus::Processing);
        assert_eq!(
            c.settle(due + ATTEMPT_DELAY_MS),
            vec![ChargeChange::Captured(1000)]
        );
        assert_eq!(c.status, CStatus::Charged);
    }

    #[test]
    fn a_failing_charge_is_retried_for_its_retry_days() {
        let due = 100 * DAY_MS;
        let mut c = charge(due, 2, true);
        c.start(0);
        assert!(c.settle(due + ATTEMPT_DELAY_MS + DAY_MS).is_empty());
        assert_eq!(c.status, CStatus::Processing);
        assert_eq!(c.attempts, 2);
        assert_eq!(
            c.settle(due + ATTEMPT_DELAY_MS + 2 * DAY_MS),
            vec![ChargeChange::Failed(1000)]
        );
        assert_eq!(c.attempts, 3);
        assert_eq!(c.status, CStatus::Failed);
    }
}
