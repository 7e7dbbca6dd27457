//! Durable state behind one trait, with two backends: SQLite (one process) and PostgreSQL (several instances).
//!
//! The store knows no product API. It keeps aggregates (typed documents of the products, as bytes under a
//! kind, tenant and id), idempotency answers, webhook registrations, the delivery outbox and attempt record, and
//! a few metadata values. Every change is one [`WriteRequest`]: an optional idempotency claim plus an [`Op`]. A
//! backend executes it atomically: it looks up the idempotency record, runs the change (for a product command:
//! load the aggregate, apply the pure command, save it, put its events in the outbox) and stores the answer
//! with the change in the same transaction, so an acknowledged write and its idempotency record survive a crash
//! together, and a retry after "response lost" replays instead of executing twice.

pub(crate) mod dump;
pub(crate) mod postgres;
pub(crate) mod sqlite;

use std::future::Future;
use std::pin::Pin;

use vipps_types::problem::ErrorCode;

use super::aggregate::{AggregateKey, Command, Decoded, Decoder, RequestInfo};
use super::http::StoredResponse;

/// A boxed future, so the trait stays object-safe.
pub(crate) type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A storage failure (not a business-rule error).
#[derive(Debug, Clone, thiserror::Error)]
#[error("storage error: {0}")]
pub struct StoreError(pub String);

/// The idempotency part of a write.
#[derive(Debug, Clone)]
pub(crate) struct IdemClaim {
    /// Merchant or partner, MSN, method, path and key.
    pub scope: String,
    /// SHA-256 of the canonical request body.
    pub fingerprint: [u8; 32],
    /// The error code for "same key, different body".
    pub mismatch_code: ErrorCode,
}

/// A webhook registration as stored.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct WebhookRow {
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
#[derive(Debug)]
pub(crate) enum Op {
    /// Run a product's command on one aggregate (load, apply, save, fan out its events).
    Execute(Box<dyn Command>),
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
        /// The aggregate id the event is about (a payment reference, say).
        subject: String,
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
    /// Queue a delivery's event again to the same webhook, as a new delivery (the dashboard's "Resend"): it is
    /// signed and sent from the active request server like any other, and its attempts are recorded. Answers
    /// `{"delivery_id": <new id>}`, or 404 when the delivery is unknown (purged, say).
    Redeliver {
        /// The delivery to send again.
        delivery_id: i64,
    },
    /// Set a metadata value unless the key already has one: the first of several instances starting at once on
    /// a shared store wins, and every one reads back the same value.
    InitMeta {
        /// Key.
        key: String,
        /// Value.
        value: String,
    },
}

impl Op {
    /// A write of this operation without idempotency key or request (background jobs).
    pub(crate) fn background(self, now_ms: i64) -> WriteRequest {
        WriteRequest {
            idem: None,
            op: self,
            now_ms,
            request: RequestInfo::default(),
        }
    }
}

/// What happens to a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeliveryOutcome {
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

/// A delivery that is due: the head of its (webhook, subject) queue.
#[derive(Clone)]
pub(crate) struct DueDelivery {
    /// Delivery id.
    pub id: i64,
    /// Webhook id.
    pub webhook_id: String,
    /// The tenant (sales unit) of the aggregate.
    pub tenant: String,
    /// The aggregate id (a payment reference, say); deliveries of one subject keep their order.
    pub subject: String,
    /// Event type, such as `epayments.payment.captured.v1`.
    pub event_type: String,
    /// Stable event identity (the event's pspReference).
    pub event_id: String,
    /// Short event name for the record (`CAPTURED`).
    pub event_name: String,
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
            .field("subject", &self.subject)
            .field("event_type", &self.event_type)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// Filters for delivery attempts.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct AttemptFilter {
    /// Only this subject (payment reference, say).
    pub reference: Option<String>,
    /// Only this webhook.
    pub webhook_id: Option<String>,
    /// Only this event type or name (`epayments.payment.captured.v1` or `CAPTURED`).
    pub event: Option<String>,
    /// At most this many, the newest (default 100), listed oldest first.
    pub limit: Option<usize>,
}

/// A page of aggregates for the dashboard: newest first, with filters, continued after a keyset cursor so that a
/// page costs the same at any depth.
#[derive(Debug, Clone, Default)]
pub(crate) struct AggregateQuery {
    /// The kind (required: lists are per kind).
    pub kind: String,
    /// Only this state label.
    pub state: Option<String>,
    /// Only this tenant (sales unit).
    pub tenant: Option<String>,
    /// Only ids starting with this.
    pub id_prefix: Option<String>,
    /// Only the children of this aggregate (their [`Aggregate::parent`](crate::platform::aggregate::Aggregate::parent)).
    pub parent: Option<String>,
    /// Only created at or after this time (ms).
    pub created_from_ms: Option<i64>,
    /// Only created before this time (ms).
    pub created_to_ms: Option<i64>,
    /// Continue after this row: `(created_ms, tenant, id)` of the last row of the previous page.
    pub after: Option<(i64, String, String)>,
    /// At most this many rows.
    pub limit: usize,
}

/// One aggregate as listed.
#[derive(Debug, Clone)]
pub(crate) struct AggregateRow {
    /// Tenant.
    pub tenant: String,
    /// Id.
    pub id: String,
    /// State label.
    pub state: String,
    /// Created at (emulator time, ms).
    pub created_ms: i64,
    /// The stored document.
    pub data: Vec<u8>,
}

/// The end of an id-prefix range: the smallest string greater than every string starting with `prefix`.
fn prefix_end(prefix: &str) -> String {
    format!("{prefix}\u{10FFFF}")
}

/// The response of a redelivery of an unknown delivery.
fn delivery_not_found(req: &WriteRequest, id: i64) -> StoredResponse {
    StoredResponse::problem(&super::http::problem(
        404,
        "Delivery not found",
        format!(
            "No delivery with id {id} is stored (finished deliveries are purged after a while)"
        ),
        None,
        &req.request,
    ))
}

/// A change with its context.
#[derive(Debug)]
pub(crate) struct WriteRequest {
    /// Idempotency claim, for idempotent operations.
    pub idem: Option<IdemClaim>,
    /// The change.
    pub op: Op,
    /// Emulator time (ms).
    pub now_ms: i64,
    /// The request it runs for (problem bodies name it).
    pub request: RequestInfo,
}

/// What a write answered.
#[derive(Debug, Clone)]
pub(crate) enum WriteResult {
    /// Executed now.
    Fresh(StoredResponse),
    /// The stored answer of an earlier request with the same key and body.
    Replayed(StoredResponse),
    /// The key was used with a different body.
    Mismatch(ErrorCode),
    /// Another request with the same key is still executing (possibly on another instance): answer 423.
    InProgress,
}

/// An aggregate that is due for a time-driven change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DueAggregate {
    /// Its kind.
    pub kind: String,
    /// Its tenant.
    pub tenant: String,
    /// Its id.
    pub id: String,
}

/// Counts for the health endpoint.
#[derive(Debug, Clone, Default)]
pub(crate) struct Counts {
    /// Aggregates by kind.
    pub aggregates: Vec<(String, u64)>,
    /// Stored idempotency answers.
    pub idempotency: u64,
    /// Webhook registrations.
    pub webhooks: u64,
}

/// Durable state.
pub(crate) trait Store: Send + Sync + 'static {
    /// Executes a change atomically (see the module docs).
    fn write(&self, req: WriteRequest) -> BoxFut<'static, Result<WriteResult, StoreError>>;
    /// Reads an aggregate (decoded with `decoder`; the backend may answer from its read cache).
    fn aggregate(
        &self,
        key: &AggregateKey,
        decoder: Decoder,
    ) -> BoxFut<'static, Result<Option<Decoded>, StoreError>>;
    /// Aggregates that change by themselves at or before `now_ms`, most overdue first.
    fn due(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> BoxFut<'static, Result<Vec<DueAggregate>, StoreError>>;
    /// Webhook registrations of an owner.
    fn webhooks(&self, owner: &str) -> BoxFut<'static, Result<Vec<WebhookRow>, StoreError>>;
    /// A metadata value.
    fn meta(&self, key: &str) -> BoxFut<'static, Result<Option<String>, StoreError>>;
    /// Deliveries that are due now, at most one per (webhook, subject), oldest first, with ids above `after_id`
    /// (the dispatcher walks the queue in pages instead of reading the deliveries it has in flight again).
    fn due_deliveries(
        &self,
        now_ms: i64,
        after_id: i64,
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
    /// A page of aggregates of one kind, newest first (see [`AggregateQuery`]).
    fn list_aggregates(
        &self,
        q: &AggregateQuery,
    ) -> BoxFut<'static, Result<Vec<AggregateRow>, StoreError>>;
    /// Counts for diagnostics.
    fn counts(&self) -> BoxFut<'static, Result<Counts, StoreError>>;
    /// How many aggregates there are of each kind in each state: `(kind, state, count)`, on the state index.
    /// The metrics read it once at start (and, on a shared store, now and then), never per scrape.
    fn state_counts(&self) -> BoxFut<'static, Result<StateCounts, StoreError>>;
    /// Sets what is called after every commit of writes (the metrics' commit latency and batch size). At most
    /// one hook; a backend without group commit may ignore it.
    fn on_commit(&self, _hook: CommitHook) {}
    /// Every row of the durable state ([`dump::TABLES`]), read in one consistent transaction (snapshots).
    fn export_state(&self) -> BoxFut<'static, Result<dump::StateDump, StoreError>>;
    /// Loads a dump in one transaction into a store that holds no state yet (no aggregates, idempotency answers,
    /// webhooks or deliveries); otherwise refuses, loading nothing.
    fn import_state(&self, dump: dump::StateDump) -> BoxFut<'static, Result<(), StoreError>>;
}

/// Aggregates per kind and state: `(kind, state, count)`.
pub(crate) type StateCounts = Vec<(String, String, u64)>;

/// Called after a commit with the number of writes it carried and how long their transaction took.
pub(crate) type CommitHook = std::sync::Arc<dyn Fn(usize, std::time::Duration) + Send + Sync>;

/// Fault rules kept in a shared store, so that every instance applies them.
pub(crate) trait SharedFaults: Send + Sync {
    /// Adds a rule (already validated); returns it with its id.
    fn add(
        &self,
        rule: crate::platform::faults::FaultRule,
    ) -> BoxFut<'static, Result<crate::platform::faults::FaultRule, StoreError>>;
    /// Takes one use of the first rule matching the request, atomically across instances.
    fn take(
        &self,
        method: &str,
        path: &str,
    ) -> BoxFut<'static, Result<Option<crate::platform::faults::FaultAction>, StoreError>>;
    /// The active rules.
    fn list(&self) -> BoxFut<'static, Result<Vec<crate::platform::faults::FaultRule>, StoreError>>;
    /// Removes every rule.
    fn clear(&self) -> BoxFut<'static, Result<(), StoreError>>;
}

/// What every backend answers when a webhook registration would exceed the limit per event type.
fn too_many_webhooks(req: &WriteRequest, max_per_event: usize, ev: &str) -> StoredResponse {
    StoredResponse::problem(
        &super::http::problem(
            400,
            "Too many webhooks",
            format!("At most {max_per_event} webhooks can be registered per event type; `{ev}` has reached the limit"),
            None,
            &req.request,
        )
        .with_detail("events", format!("at most {max_per_event} registrations per event type")),
    )
}

/// What every backend answers when a webhook to delete does not exist for the owner.
fn webhook_not_found(req: &WriteRequest, id: &str) -> StoredResponse {
    StoredResponse::problem(&super::http::problem(
        404,
        "Webhook not found",
        format!("No webhook with id `{id}` is registered for this merchant"),
        None,
        &req.request,
    ))
}

/// The deliveries that events make: each event for each registration (id, subscribed types) that subscribes to
/// its type, in registration order.
fn fan_out<'a>(
    hooks: &'a [(String, Vec<String>)],
    events: &'a [super::aggregate::OutboxEvent],
) -> impl Iterator<Item = (&'a str, &'a super::aggregate::OutboxEvent)> + 'a {
    events.iter().flat_map(move |e| {
        hooks
            .iter()
            .filter(move |(_, types)| types.contains(&e.event_type))
            .map(move |(id, _)| (id.as_str(), e))
    })
}

/// A stored answer from its columns.
fn stored_answer(status: u16, headers: &str, body: Vec<u8>) -> StoredResponse {
    StoredResponse {
        status,
        headers: serde_json::from_str(headers).unwrap_or_default(),
        body: body.into(),
    }
}

/// How many times a command runs at most when its insert meets a document created concurrently.
const CREATE_ATTEMPTS: usize = 2;

/// Applies the event filter and limit to attempt records read newest first; answers them oldest first.
fn filter_attempts(
    rows: impl Iterator<Item = String>,
    f: &AttemptFilter,
) -> Vec<serde_json::Value> {
    let limit = f.limit.unwrap_or(100);
    let mut out = Vec::new();
    for row in rows {
        let v: serde_json::Value = serde_json::from_str(&row).unwrap_or_default();
        if let Some(ev) = &f.event {
            let matches = v["event"].as_str() == Some(ev.as_str())
                || v["event_name"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(ev));
            if !matches {
                continue;
            }
        }
        out.push(v);
        if out.len() >= limit {
            break;
        }
    }
    out.reverse();
    out
}
