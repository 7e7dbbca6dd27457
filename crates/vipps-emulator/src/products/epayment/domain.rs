//! The ePayment state machine, as pure functions over a [`Payment`] row: no I/O, time and ids are passed in.
//!
//! ```text
//! CREATED --user approves--> AUTHORIZED (capture, refund and cancel move only the aggregate)
//! CREATED --user rejects---> ABORTED
//! CREATED --expiry---------> EXPIRED
//! CREATED --merchant cancel> TERMINATED
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use vipps_types::money::Currency;
use vipps_types::problem::ErrorCode;

/// The stored state of a payment (a storage row, not a wire type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum PState {
    /// Waiting for the user.
    Created,
    /// The user rejected.
    Aborted,
    /// Not approved in time.
    Expired,
    /// Approved.
    Authorized,
    /// Cancelled by the merchant before approval.
    Terminated,
}

impl PState {
    /// The wire name.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            PState::Created => "CREATED",
            PState::Aborted => "ABORTED",
            PState::Expired => "EXPIRED",
            PState::Authorized => "AUTHORIZED",
            PState::Terminated => "TERMINATED",
        }
    }
}

/// The name of a stored event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum EventName {
    /// Created.
    Created,
    /// Aborted by the user.
    Aborted,
    /// Expired.
    Expired,
    /// Cancelled after approval.
    Cancelled,
    /// Captured.
    Captured,
    /// Refunded.
    Refunded,
    /// Authorized.
    Authorized,
    /// Terminated before approval.
    Terminated,
}

impl EventName {
    /// The wire name.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            EventName::Created => "CREATED",
            EventName::Aborted => "ABORTED",
            EventName::Expired => "EXPIRED",
            EventName::Cancelled => "CANCELLED",
            EventName::Captured => "CAPTURED",
            EventName::Refunded => "REFUNDED",
            EventName::Authorized => "AUTHORIZED",
            EventName::Terminated => "TERMINATED",
        }
    }
}

/// One entry of a payment's event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Event {
    /// This event's own pspReference.
    pub psp: String,
    /// What happened.
    pub name: EventName,
    /// Amount in minor units.
    pub amount: i64,
    /// Emulator time, Unix milliseconds.
    pub at_ms: i64,
    /// The idempotency key of the request that caused it.
    pub key: Option<String>,
    /// Outcome.
    pub success: bool,
}

/// A payment as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Payment {
    /// Sales unit.
    pub msn: String,
    /// Merchant reference.
    pub reference: String,
    /// Currency.
    pub currency: Currency,
    /// Amount in minor units.
    pub amount: i64,
    /// State.
    pub state: PState,
    /// Authorized total.
    pub authorized: i64,
    /// Cancelled total.
    pub cancelled: i64,
    /// Captured total.
    pub captured: i64,
    /// Refunded total.
    pub refunded: i64,
    /// The payment's pspReference (its CREATED event's).
    pub psp: String,
    /// Landing page or QR URL.
    pub redirect_url: Option<String>,
    /// The user flow, as sent.
    pub user_flow: String,
    /// `WALLET` or `CARD`.
    pub method: String,
    /// Requested profile scope.
    pub scope: Option<String>,
    /// The user's `sub`, once authorized with a scope.
    pub sub: Option<String>,
    /// Merchant metadata.
    pub metadata: Option<BTreeMap<String, String>>,
    /// Created at (ms).
    pub created_ms: i64,
    /// Expires at (ms) while CREATED.
    pub expires_ms: i64,
    /// Magic amount 201: approval result unknown until this time (ms).
    pub pending_until_ms: Option<i64>,
    /// Whether the merchant is a test merchant (magic amounts and force approve apply).
    pub test: bool,
    /// Made by another product (Checkout) through the façade: the products that follow payments hear of its
    /// time-driven changes; of others they do not (see `Aggregate::followed`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub followed: bool,
    /// The token in the redirect URL (force approve may name it).
    pub token: String,
    /// The event log, oldest first.
    pub events: Vec<Event>,
    /// `paymentDescription`, as sent (shown to the payer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The payer's phone number: `customer.phoneNumber` as sent, then the number the payer paid with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
    /// `returnUrl`, where the payer goes after acting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_url: Option<String>,
    /// `qrFormat.format` of a QR payment (`IMAGE/SVG+XML` when not sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qr_format: Option<String>,
    /// `qrFormat.size`, in pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qr_size: Option<u32>,
}

/// A business-rule failure, with the HTTP status and the Vipps error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DomainError {
    /// HTTP status.
    pub status: u16,
    /// The Vipps error code.
    pub code: ErrorCode,
    /// Explanation.
    pub detail: String,
}

impl DomainError {
    fn new(status: u16, code: ErrorCode, detail: impl Into<String>) -> Self {
        DomainError {
            status,
            code,
            detail: detail.into(),
        }
    }
}

/// What a change needs from the outside: the time and fresh pspReferences.
pub(super) struct Ctx<'a> {
    /// Emulator time, Unix milliseconds.
    pub now_ms: i64,
    /// Makes a new pspReference.
    pub new_psp: &'a dyn Fn() -> String,
}

/// Magic amounts of the test environment that make an approval fail: (value, status, code, detail).
const FAILING_APPROVALS: &[(i64, u16, ErrorCode, &str)] = &[
    (
        151,
        400,
        ErrorCode::FundsUnavailable,
        "Insufficient funds (test amount 151)",
    ),
    (
        182,
        400,
        ErrorCode::ApproveFailed,
        "Refused by issuer (test amount 182)",
    ),
    (
        183,
        400,
        ErrorCode::ApproveFailed,
        "Suspected fraud (test amount 183)",
    ),
    (
        184,
        400,
        ErrorCode::ApproveFailed,
        "Withdrawal amount limit exceeded (test amount 184)",
    ),
    (
        185,
        400,
        ErrorCode::ApproveFailed,
        "Withdrawal frequency limit exceeded (test amount 185)",
    ),
    (
        186,
        500,
        ErrorCode::InternalError,
        "Expired card (test amount 186)",
    ),
    (
        187,
        400,
        ErrorCode::ApproveFailed,
        "Invalid card (test amount 187)",
    ),
    (
        197,
        400,
        ErrorCode::ApproveFailed,
        "3-D Secure denied (test amount 197)",
    ),
    (
        202,
        400,
        ErrorCode::IdentificationRequired,
        "Strong customer authentication required (test amount 202)",
    ),
];

/// Magic amount whose approval result stays unknown for an hour before it is authorized.
pub(super) const PENDING_AMOUNT: i64 = 201;
/// How long the 201 result stays unknown.
pub(super) const PENDING_MS: i64 = 3_600_000;

impl Payment {
    /// The next time this payment changes by itself (expiry or a pending approval), if any.
    pub(super) fn due_ms(&self) -> Option<i64> {
        if self.state != PState::Created {
            return None;
        }
        Some(self.pending_until_ms.unwrap_or(self.expires_ms))
    }

    fn push(&mut self, ctx: &Ctx<'_>, name: EventName, amount: i64, at_ms: i64, key: Option<&str>) {
        self.events.push(Event {
            psp: (ctx.new_psp)(),
            name,
            amount,
            at_ms,
            key: key.map(str::to_owned),
            success: true,
        });
    }

    /// Applies what time has done: a pending approval resolves, an unapproved payment expires. Events carry the
    /// time the change became due, not the time it was noticed. Returns whether anything changed.
    pub(super) fn settle(&mut self, ctx: &Ctx<'_>) -> bool {
        if self.state != PState::Created {
            return false;
        }
        if let Some(until) = self.pending_until_ms {
            if ctx.now_ms >= until {
                self.pending_until_ms = None;
                self.authorize(ctx, until, None);
                return true;
            }
            return false;
        }
        if ctx.now_ms >= self.expires_ms {
            self.state = PState::Expired;
            let (amount, at) = (self.amount, self.expires_ms);
            self.push(ctx, EventName::Expired, amount, at, None);
            return true;
        }
        false
    }

    fn authorize(&mut self, ctx: &Ctx<'_>, at_ms: i64, key: Option<&str>) {
        self.state = PState::Authorized;
        self.authorized = self.amount;
        if self.scope.is_some() && self.sub.is_none() {
            self.sub = Some(format!("emulator-sub-{}", self.psp));
        }
        let amount = self.amount;
        self.push(ctx, EventName::Authorized, amount, at_ms, key);
    }

    /// The user (or force approve) approves the payment.
    pub(super) fn approve(&mut self, ctx: &Ctx<'_>) -> Result<(), DomainError> {
        self.settle(ctx);
        match self.state {
            PState::Created if self.pending_until_ms.is_some() => Err(DomainError::new(
                400,
                ErrorCode::OrderProcessing,
                "The approval of this payment is being processed",
            )),
            PState::Created => {
                if self.test {
                    if let Some((_, status, code, detail)) =
                        FAILING_APPROVALS.iter().find(|(v, ..)| *v == self.amount)
                    {
                        return Err(DomainError::new(*status, *code, *detail));
                    }
                    if self.amount == PENDING_AMOUNT {
                        self.pending_until_ms = Some(ctx.now_ms + PENDING_MS);
                        return Ok(());
                    }
                }
                self.authorize(ctx, ctx.now_ms, None);
                Ok(())
            }
            PState::Authorized => Err(DomainError::new(
                400,
                ErrorCode::AlreadyReserved,
                "The payment is already authorized",
            )),
            s => Err(DomainError::new(
                400,
                ErrorCode::ApproveFailed,
                format!(
                    "The payment is {} and can no longer be approved",
                    s.as_str()
                ),
            )),
        }
    }

    /// The user rejects the payment.
    pub(super) fn reject(&mut self, ctx: &Ctx<'_>) -> Result<(), DomainError> {
        self.settle(ctx);
        match self.state {
            PState::Created => {
                self.state = PState::Aborted;
                self.pending_until_ms = None;
                let amount = self.amount;
                self.push(ctx, EventName::Aborted, amount, ctx.now_ms, None);
                Ok(())
            }
            s => Err(DomainError::new(
                400,
                ErrorCode::OperationNotSupported,
                format!(
                    "The payment is {} and can no longer be rejected",
                    s.as_str()
                ),
            )),
        }
    }

    /// The merchant captures `value` (partial and repeated captures allowed up to the authorized amount).
    pub(super) fn capture(
        &mut self,
        ctx: &Ctx<'_>,
        currency: Currency,
        value: i64,
        key: &str,
    ) -> Result<(), DomainError> {
        self.check_modification(
            ctx,
            currency,
            value,
            (
                ErrorCode::CaptureBeforeReservation,
                "The payment is not authorized yet, so nothing is reserved to capture",
            ),
            (ErrorCode::CannotCaptureInState, "captured"),
        )?;
        if self.cancelled > 0 {
            return Err(DomainError::new(
                400,
                ErrorCode::CannotCaptureCancelled,
                "The payment is cancelled",
            ));
        }
        let left = self.authorized - self.captured;
        if left == 0 {
            return Err(DomainError::new(
                400,
                ErrorCode::AlreadyCaptured,
                "The authorized amount is fully captured",
            ));
        }
        if value > left {
            return Err(DomainError::new(
                400,
                ErrorCode::CaptureAmountTooHigh,
                format!(
                    "Cannot capture {value}: only {left} of the authorized amount is left to capture"
                ),
            ));
        }
        self.captured += value;
        self.push(ctx, EventName::Captured, value, ctx.now_ms, Some(key));
        Ok(())
    }

    /// The merchant refunds `value` (up to the captured amount not yet refunded).
    pub(super) fn refund(
        &mut self,
        ctx: &Ctx<'_>,
        currency: Currency,
        value: i64,
        key: &str,
    ) -> Result<(), DomainError> {
        self.check_modification(
            ctx,
            currency,
            value,
            (
                ErrorCode::RefundBeforeReservation,
                "The payment is not authorized yet, so there is nothing to refund",
            ),
            (ErrorCode::CannotRefundInState, "refunded"),
        )?;
        if self.test && value == 123 {
            return Err(DomainError::new(
                400,
                ErrorCode::RefundNotPossible,
                "The refund cannot be made: the user has no account to refund to (test amount 123)",
            ));
        }
        if self.test && value == 124 {
            return Err(DomainError::new(
                400,
                ErrorCode::RefundPeriodExpired,
                "The refund period has expired (test amount 124)",
            ));
        }
        let left = self.captured - self.refunded;
        if self.captured > 0 && left == 0 {
            return Err(DomainError::new(
                400,
                ErrorCode::AlreadyRefunded,
                "The captured amount is fully refunded",
            ));
        }
        if value > left {
            return Err(DomainError::new(
                400,
                ErrorCode::NotEnoughRefundable,
                format!(
                    "Cannot refund {value}: only {left} of the captured amount can be refunded"
                ),
            ));
        }
        self.refunded += value;
        self.push(ctx, EventName::Refunded, value, ctx.now_ms, Some(key));
        Ok(())
    }

    /// The merchant cancels. Before approval the payment is `TERMINATED`; after approval the uncaptured
    /// remainder is released (`cancelledAmount`) and the state stays `AUTHORIZED`. With `transaction_only`, an
    /// authorized payment is refused (6060).
    pub(super) fn cancel(
        &mut self,
        ctx: &Ctx<'_>,
        transaction_only: bool,
        key: Option<&str>,
    ) -> Result<(), DomainError> {
        self.settle(ctx);
        match self.state {
            PState::Created => {
                if self.pending_until_ms.is_some() {
                    return Err(DomainError::new(
                        409,
                        ErrorCode::CannotCancelProcessing,
                        "The approval of this payment is being processed",
                    ));
                }
                self.state = PState::Terminated;
                let amount = self.amount;
                self.push(ctx, EventName::Terminated, amount, ctx.now_ms, key);
                Ok(())
            }
            PState::Authorized => {
                if transaction_only {
                    return Err(DomainError::new(
                        400,
                        ErrorCode::CannotCancelAuthorized,
                        "cancelTransactionOnly is set and the payment is already authorized",
                    ));
                }
                if self.cancelled > 0 {
                    // Already cancelled: cancelling again changes nothing.
                    return Ok(());
                }
                let left = self.authorized - self.captured;
                if left == 0 {
                    return Err(DomainError::new(
                        400,
                        ErrorCode::CannotCancelCaptured,
                        "The payment is fully captured; refund it instead",
                    ));
                }
                self.cancelled += left;
                self.push(ctx, EventName::Cancelled, left, ctx.now_ms, key);
                Ok(())
            }
            PState::Terminated => Ok(()),
            s => Err(DomainError::new(
                400,
                ErrorCode::CannotCancelInState,
                format!("A {} payment cannot be cancelled", s.as_str()),
            )),
        }
    }

    /// The checks capture and refund share: time applied, same currency, a positive value, an authorized payment
    /// (`before` when it is still created, `in_state` with the verb for other states).
    fn check_modification(
        &mut self,
        ctx: &Ctx<'_>,
        currency: Currency,
        value: i64,
        before: (ErrorCode, &str),
        in_state: (ErrorCode, &str),
    ) -> Result<(), DomainError> {
        self.settle(ctx);
        self.check_currency(currency)?;
        if value <= 0 {
            return Err(DomainError::new(
                400,
                ErrorCode::InvalidAmount,
                "modificationAmount.value must be above 0",
            ));
        }
        match self.state {
            PState::Authorized => Ok(()),
            PState::Created => Err(DomainError::new(400, before.0, before.1)),
            s => Err(DomainError::new(
                400,
                in_state.0,
                format!("A {} payment cannot be {}", s.as_str(), in_state.1),
            )),
        }
    }

    fn check_currency(&self, currency: Currency) -> Result<(), DomainError> {
        if currency != self.currency {
            return Err(DomainError::new(
                400,
                ErrorCode::InvalidCurrency,
                format!(
                    "modificationAmount.currency must be {}, the currency of the payment",
                    self.currency
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payment(amount: i64) -> Payment {
        Payment {
            msn: "123456".into(),
            reference: "ref-12345678".into(),
            currency: Currency::Nok,
            amount,
            state: PState::Created,
            authorized: 0,
            cancelled: 0,
            captured: 0,
            refunded: 0,
            psp: "1".into(),
            redirect_url: None,
            user_flow: "WEB_REDIRECT".into(),
            method: "WALLET".into(),
            scope: None,
            sub: None,
            metadata: None,
            created_ms: 0,
            expires_ms: 600_000,
            pending_until_ms: None,
            test: true,
            followed: false,
            token: "t".into(),
            events: vec![],
            description: None,
            phone_number: None,
            return_url: None,
            qr_format: None,
            qr_size: None,
        }
    }

    fn ctx(now_ms: i64) -> Ctx<'static> {
        Ctx {
            now_ms,
            new_psp: &|| "p".to_string(),
        }
    }

    /// One thing that happens to a payment, at a time (ms).
    #[derive(Debug, Clone, Copy)]
    enum Step {
        Approve(i64),
        Reject(i64),
        Capture(i64, i64),
        Refund(i64, i64),
        RefundEur(i64, i64),
        Cancel(i64, bool),
        /// Settle at a time; `true` when time changed the payment.
        Settle(i64, bool),
    }

    /// Applies a step: `Ok(Some(changed))` for a settle, `Ok(None)` for an operation that succeeded, or the
    /// status and code of a refusal.
    fn step(p: &mut Payment, step: Step) -> Result<Option<bool>, (u16, ErrorCode)> {
        let r = match step {
            Step::Approve(t) => p.approve(&ctx(t)),
            Step::Reject(t) => p.reject(&ctx(t)),
            Step::Capture(t, v) => p.capture(&ctx(t), Currency::Nok, v, "k"),
            Step::Refund(t, v) => p.refund(&ctx(t), Currency::Nok, v, "r"),
            Step::RefundEur(t, v) => p.refund(&ctx(t), Currency::Eur, v, "r"),
            Step::Cancel(t, tx) => p.cancel(&ctx(t), tx, None),
            Step::Settle(t, _) => return Ok(Some(p.settle(&ctx(t)))),
        };
        r.map(|()| None).map_err(|e| (e.status, e.code))
    }

    /// Applies a step that must succeed (and, for a settle, change what it says).
    fn apply(p: &mut Payment, s: Step) -> Result<(), String> {
        match (s, step(p, s)) {
            (Step::Settle(_, want), Ok(Some(got))) => {
                expect_eq(&format!("{s:?} changed"), got, want)
            }
            (_, Ok(_)) => Ok(()),
            (_, Err(e)) => Err(format!("{s:?} refused: {e:?}")),
        }
    }

    /// What the last step must give.
    #[derive(Debug)]
    enum Want {
        /// It succeeds, leaving this state and these (authorized, captured, refunded, cancelled) totals.
        Ok(PState, [i64; 4]),
        /// It fails with this status and code, leaving the state unchanged.
        Err(u16, ErrorCode),
    }

    #[derive(Debug)]
    struct Row {
        name: &'static str,
        amount: i64,
        test: bool,
        before: &'static [Step],
        then: Step,
        want: Want,
    }

    impl Case for Row {
        fn name(&self) -> String {
            self.name.to_owned()
        }
    }

    use Step::*;
    use vipps_test_support::table::{Case, check, expect_eq};

    fn row(
        name: &'static str,
        amount: i64,
        before: &'static [Step],
        then: Step,
        want: Want,
    ) -> Row {
        Row {
            name,
            amount,
            test: true,
            before,
            then,
            want,
        }
    }

    fn run(r: &Row) -> Result<(), String> {
        let mut p = payment(r.amount);
        p.test = r.test;
        for s in r.before {
            apply(&mut p, *s)?;
        }
        let state_before = p.state;
        match &r.want {
            Want::Ok(state, totals) => {
                apply(&mut p, r.then)?;
                expect_eq("state", p.state, *state)?;
                expect_eq(
                    "totals",
                    [p.authorized, p.captured, p.refunded, p.cancelled],
                    *totals,
                )
            }
            Want::Err(status, code) => {
                expect_eq("answer", step(&mut p, r.then), Err((*status, *code)))?;
                expect_eq("state after a refused step", p.state, state_before)
            }
        }
    }

    const APPROVED: &[Step] = &[Approve(1)];
    const CAPTURED_800: &[Step] = &[Approve(1), Capture(2, 400), Capture(3, 400)];
    const REFUNDED_800: &[Step] = &[Approve(1), Capture(2, 400), Capture(3, 400), Refund(5, 800)];

    #[test]
    fn transitions() {
        use PState::*;
        let mut rows = vec![
            row(
                "approve",
                1000,
                &[],
                Approve(1),
                Want::Ok(Authorized, [1000, 0, 0, 0]),
            ),
            row(
                "reject",
                1000,
                &[],
                Reject(1),
                Want::Ok(Aborted, [0, 0, 0, 0]),
            ),
            row(
                "reject after approval",
                1000,
                APPROVED,
                Reject(2),
                Want::Err(400, ErrorCode::OperationNotSupported),
            ),
            row(
                "approve twice",
                1000,
                APPROVED,
                Approve(2),
                Want::Err(400, ErrorCode::AlreadyReserved),
            ),
            row(
                "capture before approval",
                1000,
                &[],
                Capture(1, 100),
                Want::Err(400, ErrorCode::CaptureBeforeReservation),
            ),
            row(
                "partial captures",
                1000,
                APPROVED,
                Capture(2, 400),
                Want::Ok(Authorized, [1000, 400, 0, 0]),
            ),
            row(
                "capture above the rest",
                1000,
                CAPTURED_800,
                Capture(4, 201),
                Want::Err(400, ErrorCode::CaptureAmountTooHigh),
            ),
            row(
                "refund above the captured",
                1000,
                CAPTURED_800,
                Refund(4, 801),
                Want::Err(400, ErrorCode::NotEnoughRefundable),
            ),
            row(
                "refund the captured",
                1000,
                CAPTURED_800,
                Refund(5, 800),
                Want::Ok(Authorized, [1000, 800, 800, 0]),
            ),
            row(
                "refund beyond refunded",
                1000,
                REFUNDED_800,
                Refund(5, 1),
                Want::Err(400, ErrorCode::AlreadyRefunded),
            ),
            row(
                "cancel the rest after capture",
                1000,
                REFUNDED_800,
                Cancel(6, false),
                Want::Ok(Authorized, [1000, 800, 800, 200]),
            ),
            row(
                "capture after cancel",
                1000,
                &[Approve(1), Capture(2, 800), Cancel(6, false)],
                Capture(7, 1),
                Want::Err(400, ErrorCode::CannotCaptureCancelled),
            ),
            row(
                "cancel before approval",
                1000,
                &[],
                Cancel(1, true),
                Want::Ok(Terminated, [0, 0, 0, 0]),
            ),
            row(
                "cancel transaction only, authorized",
                1000,
                APPROVED,
                Cancel(2, true),
                Want::Err(400, ErrorCode::CannotCancelAuthorized),
            ),
            row(
                "cancel fully captured",
                1000,
                &[Approve(1), Capture(2, 1000)],
                Cancel(3, false),
                Want::Err(400, ErrorCode::CannotCancelCaptured),
            ),
            row(
                "not expired a moment before",
                1000,
                &[],
                Settle(599_999, false),
                Want::Ok(Created, [0, 0, 0, 0]),
            ),
            row(
                "expires on emulator time",
                1000,
                &[],
                Settle(600_000, true),
                Want::Ok(Expired, [0, 0, 0, 0]),
            ),
            row(
                "approve after expiry",
                1000,
                &[Settle(600_000, true)],
                Approve(700_000),
                Want::Err(400, ErrorCode::ApproveFailed),
            ),
            row(
                "magic 151: insufficient funds",
                151,
                &[],
                Approve(1),
                Want::Err(400, ErrorCode::FundsUnavailable),
            ),
            row(
                "magic 201: pending, no expiry",
                201,
                &[Approve(1000)],
                Settle(700_000, false),
                Want::Ok(Created, [0, 0, 0, 0]),
            ),
            row(
                "magic 201: authorized an hour later",
                201,
                &[Approve(1000)],
                Settle(1000 + PENDING_MS, true),
                Want::Ok(Authorized, [201, 0, 0, 0]),
            ),
            row(
                "magic 201: approve while pending",
                201,
                &[Approve(1000)],
                Approve(2000),
                Want::Err(400, ErrorCode::OrderProcessing),
            ),
            row(
                "magic refund 123",
                1000,
                &[Approve(1), Capture(1, 1000)],
                Refund(1, 123),
                Want::Err(400, ErrorCode::RefundNotPossible),
            ),
            row(
                "magic refund 124",
                1000,
                &[Approve(1), Capture(1, 1000)],
                Refund(1, 124),
                Want::Err(400, ErrorCode::RefundPeriodExpired),
            ),
            row(
                "refund in another currency",
                1000,
                &[Approve(1), Capture(1, 1000)],
                RefundEur(1, 10),
                Want::Err(400, ErrorCode::InvalidCurrency),
            ),
        ];
        let magic_186 = payment(186).approve(&ctx(1)).unwrap_err();
        assert_eq!(magic_186.status, 500, "magic 186 is a server error");
        rows.push(row(
            "magic 186: server error",
            186,
            &[],
            Approve(1),
            Want::Err(500, magic_186.code),
        ));
        rows.push(Row {
            test: false,
            ..row(
                "magic amounts apply to test merchants only",
                151,
                &[],
                Approve(1),
                Want::Ok(Authorized, [151, 0, 0, 0]),
            )
        });
        check(&rows, run);
    }

    #[test]
    fn events_follow_the_operations() {
        let mut p = payment(1000);
        for s in REFUNDED_800.iter().chain(&[Cancel(6, false)]) {
            apply(&mut p, *s).unwrap();
        }
        let names: Vec<_> = p.events.iter().map(|e| e.name).collect();
        assert_eq!(
            names,
            [
                EventName::Authorized,
                EventName::Captured,
                EventName::Captured,
                EventName::Refunded,
                EventName::Cancelled
            ]
        );
        let mut p = payment(1000);
        apply(&mut p, Settle(600_000, true)).unwrap();
        assert_eq!(
            p.events[0].at_ms, 600_000,
            "expiry is stamped with the due time"
        );
    }
}
