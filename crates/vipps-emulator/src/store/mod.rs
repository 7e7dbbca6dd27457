//! Durable state behind one trait, so that another backend (PostgreSQL, for several instances) can follow.
//!
//! Every change is one [`WriteRequest`]: an optional idempotency claim plus an [`Op`]. A backend executes it
//! atomically: it looks up the idempotency record, runs the domain change, renders the answer and stores the
//! answer with the change in the same transaction, so an acknowledged write and its idempotency record survive
//! a crash together, and a retry after "response lost" replays instead of executing twice.

mod answers;
pub mod postgres;
pub mod sqlite;

use std::future::Future;
use std::pin::Pin;

use vipps_types::money::Amount;
use vipps_types::problem::ErrorCode;

use crate::domain::Payment;
use crate::render::StoredResponse;

/// A boxed future, so the trait stays object-safe.
pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A storage failure (not a business-rule error).
#[derive(Debug, Clone, thiserror::Error)]
#[error("storage error: {0}")]
pub struct StoreError(pub String);

/// The idempotency part of a write.
#[derive(Debug, Clone)]
pub struct IdemClaim {
    /// Merchant or partner, MSN, method, path and key.
    pub scope: String,
    /// SHA-256 of the canonical request body.
    pub fingerprint: [u8; 32],
    /// The error code for "same key, different body".
    pub mismatch_code: ErrorCode,
}

/// A webhook registration as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookRow {
    /// Registration id (UUID).
    pub id: String,
    /// `msn:<MSN>` or `partner:<client_id>`.
    pub owner: String,
    /// Target URL.
    pub url: String,
    /// Subscribed event types.
    pub events: Vec<String>,
    /// The HMAC secret.
    pub secret: String,
    /// Registered at (ms).
    pub created_ms: i64,
}

impl std::fmt::Debug for WebhookRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookRow")
            .field("id", &self.id)
            .field("owner", &self.owner)
            .field("url", &self.url)
            .field("events", &self.events)
            .field("secret", &"[redacted]")
            .finish()
    }
}

/// A change.
#[derive(Debug, Clone)]
pub enum Op {
    /// Create a payment (validated and built by the caller); 409 if the reference exists.
    CreatePayment(Box<Payment>),
    /// Capture.
    Capture {
        /// Sales unit.
        msn: String,
        /// Reference.
        reference: String,
        /// Amount.
        amount: Amount,
        /// Idempotency key.
        key: String,
    },
    /// Refund.
    Refund {
        /// Sales unit.
        msn: String,
        /// Reference.
        reference: String,
        /// Amount.
        amount: Amount,
        /// Idempotency key.
        key: String,
    },
    /// Cancel.
    Cancel {
        /// Sales unit.
        msn: String,
        /// Reference.
        reference: String,
        /// `cancelTransactionOnly`.
        transaction_only: bool,
        /// Idempotency key, if sent.
        key: Option<String>,
    },
    /// Force approve (test merchants only; checked by the caller). Answers 200 without a body.
    ForceApprove {
        /// Sales unit.
        msn: String,
        /// Reference.
        reference: String,
    },
    /// The user approves (test control). Answers the payment.
    UserApprove {
        /// Sales unit.
        msn: String,
        /// Reference.
        reference: String,
    },
    /// The user rejects (test control). Answers the payment.
    UserReject {
        /// Sales unit.
        msn: String,
        /// Reference.
        reference: String,
    },
    /// Persist time-based changes (expiry, pending approvals) of one payment.
    Settle {
        /// Sales unit.
        msn: String,
        /// Reference.
        reference: String,
    },
    /// Register a webhook, refusing more than `max_per_event` registrations per event type and owner.
    RegisterWebhook {
        /// The registration.
        row: WebhookRow,
        /// The limit.
        max_per_event: usize,
    },
    /// Delete a webhook of an owner.
    DeleteWebhook {
        /// Owner.
        owner: String,
        /// Id.
        id: String,
    },
    /// Delete idempotency records created before this time (ms).
    PurgeIdempotency {
        /// Cut-off.
        before_ms: i64,
    },
    /// Replace the map of which partner owners act for which MSN (from the configuration).
    SetPartnerOwners {
        /// `(msn, owner)` pairs.
        pairs: Vec<(String, String)>,
    },
    /// Record one delivery attempt and its outcome.
    DeliveryResult {
        /// The delivery.
        delivery_id: i64,
        /// Its webhook.
        webhook_id: String,
        /// Its payment reference.
        reference: String,
        /// The attempt record (JSON), as listed under `/_emulator/deliveries`.
        attempt: String,
        /// Emulator time of the attempt (ms).
        at_ms: i64,
        /// What happens next.
        outcome: DeliveryOutcome,
    },
    /// Remove webhooks that have failed without a success since before this time (ms).
    RemoveUnresponsive {
        /// Cut-off.
        before_ms: i64,
    },
    /// Delete finished deliveries and attempts older than this time (ms).
    PurgeDeliveries {
        /// Cut-off.
        before_ms: i64,
    },
    /// Move the shared emulator clock forward; answers `{"offset_ms": <new offset>}`.
    AdvanceClock {
        /// Milliseconds.
        ms: i64,
    },
    /// Set a metadata value.
    SetMeta {
        /// Key.
        key: String,
        /// Value.
        value: String,
    },
}

/// What happens to a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// Delivered (2xx in time).
    Delivered,
    /// Failed; try again at this emulator time (ms).
    Retry {
        /// Next attempt.
        next_ms: i64,
    },
    /// Failed for the last time.
    GiveUp,
}

/// A delivery that is due: the head of its (webhook, payment) queue.
#[derive(Clone)]
pub struct DueDelivery {
    /// Delivery id.
    pub id: i64,
    /// Webhook id.
    pub webhook_id: String,
    /// Sales unit.
    pub msn: String,
    /// Payment reference.
    pub reference: String,
    /// Event type, such as `epayments.payment.captured.v1`.
    pub event_type: String,
    /// Stable event identity (the event's pspReference).
    pub event_id: String,
    /// Target URL.
    pub url: String,
    /// The webhook secret.
    pub secret: String,
    /// The JSON body.
    pub payload: bytes::Bytes,
    /// Attempts made so far.
    pub attempts: u32,
    /// Emulator time of the first attempt (ms).
    pub first_attempt_ms: Option<i64>,
}

impl std::fmt::Debug for DueDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DueDelivery")
            .field("id", &self.id)
            .field("webhook_id", &self.webhook_id)
            .field("reference", &self.reference)
            .field("event_type", &self.event_type)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// Filters for delivery attempts.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttemptFilter {
    /// Only this payment reference.
    pub reference: Option<String>,
    /// Only this webhook.
    pub webhook_id: Option<String>,
    /// Only this event type or name (`epayments.payment.captured.v1` or `CAPTURED`).
    pub event: Option<String>,
    /// At most this many, the newest (default 100), listed oldest first.
    pub limit: Option<usize>,
}

/// A change with its context.
#[derive(Debug, Clone)]
pub struct WriteRequest {
    /// Idempotency claim, for idempotent operations.
    pub idem: Option<IdemClaim>,
    /// The change.
    pub op: Op,
    /// Emulator time (ms).
    pub now_ms: i64,
    /// Trace id for problem bodies.
    pub trace_id: String,
    /// The request path, for `instance` in problem bodies.
    pub instance: String,
}

/// What a write answered.
#[derive(Debug, Clone)]
pub enum WriteResult {
    /// Executed now.
    Fresh(StoredResponse),
    /// The stored answer of an earlier request with the same key and body.
    Replayed(StoredResponse),
    /// The key was used with a different body.
    Mismatch(ErrorCode),
    /// Another request with the same key is still executing (possibly on another instance): answer 423.
    InProgress,
}

/// Durable state.
pub trait Store: Send + Sync + 'static {
    /// Executes a change atomically (see the module docs).
    fn write(&self, req: WriteRequest) -> BoxFut<'static, Result<WriteResult, StoreError>>;
    /// Reads a payment.
    fn payment(
        &self,
        msn: &str,
        reference: &str,
    ) -> BoxFut<'static, Result<Option<std::sync::Arc<Payment>>, StoreError>>;
    /// Payments that change by themselves at or before `now_ms` (msn, reference).
    fn due_payments(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> BoxFut<'static, Result<Vec<(String, String)>, StoreError>>;
    /// Webhook registrations of an owner.
    fn webhooks(&self, owner: &str) -> BoxFut<'static, Result<Vec<WebhookRow>, StoreError>>;
    /// A metadata value.
    fn meta(&self, key: &str) -> BoxFut<'static, Result<Option<String>, StoreError>>;
    /// Deliveries that are due now, at most one per (webhook, payment), oldest first.
    fn due_deliveries(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> BoxFut<'static, Result<Vec<DueDelivery>, StoreError>>;
    /// When the next pending delivery is due (ms), if any.
    fn next_delivery_ms(&self) -> BoxFut<'static, Result<Option<i64>, StoreError>>;
    /// Recorded delivery attempts, oldest first.
    fn attempts(
        &self,
        filter: &AttemptFilter,
    ) -> BoxFut<'static, Result<Vec<serde_json::Value>, StoreError>>;
    /// Whether several emulator instances may share this store (then clock, request servers and fault rules are
    /// read from it, not only kept in memory).
    fn shared(&self) -> bool {
        false
    }
    /// Shared fault rules, for a shared store (`None` when rules are kept in memory).
    fn faults(&self) -> Option<&dyn SharedFaults> {
        None
    }
    /// Counts (payments, idempotency records, webhooks), for diagnostics.
    fn counts(&self) -> BoxFut<'static, Result<(u64, u64, u64), StoreError>>;
}

/// Fault rules kept in a shared store, so that every instance applies them.
pub trait SharedFaults: Send + Sync {
    /// Adds a rule (already validated); returns it with its id.
    fn add(
        &self,
        rule: crate::faults::FaultRule,
    ) -> BoxFut<'static, Result<crate::faults::FaultRule, StoreError>>;
    /// Takes one use of the first rule matching the request, atomically across instances.
    fn take(
        &self,
        method: &str,
        path: &str,
    ) -> BoxFut<'static, Result<Option<crate::faults::FaultAction>, StoreError>>;
    /// The active rules.
    fn list(&self) -> BoxFut<'static, Result<Vec<crate::faults::FaultRule>, StoreError>>;
    /// Removes every rule.
    fn clear(&self) -> BoxFut<'static, Result<(), StoreError>>;
}
