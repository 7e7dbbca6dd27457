//! Durable state behind one trait, so that another backend (PostgreSQL, for several instances) can follow.
//!
//! Every change is one [`WriteRequest`]: an optional idempotency claim plus an [`Op`]. A backend executes it
//! atomically: it looks up the idempotency record, runs the domain change, renders the answer and stores the
//! answer with the change in the same transaction, so an acknowledged write and its idempotency record survive
//! a crash together, and a retry after "response lost" replays instead of executing twice.

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
    /// Set a metadata value.
    SetMeta {
        /// Key.
        key: String,
        /// Value.
        value: String,
    },
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
    ) -> BoxFut<'static, Result<Option<Payment>, StoreError>>;
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
    /// Counts (payments, idempotency records, webhooks), for diagnostics.
    fn counts(&self) -> BoxFut<'static, Result<(u64, u64, u64), StoreError>>;
}
