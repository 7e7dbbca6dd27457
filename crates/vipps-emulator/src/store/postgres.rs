//! The PostgreSQL backend, for one or several emulator instances on one database.
//!
//! Every write is one transaction on a pooled connection. An idempotent write first claims its key in a short
//! transaction of its own (`INSERT ... ON CONFLICT DO NOTHING` of an `in_progress` row with a lease and a claim
//! token), so that claims are atomic across instances: a completed row is replayed (or refused as a mismatch), an
//! unexpired claim answers 423, an expired claim is taken over with a new token. The operation's transaction then
//! locks the payment row, applies the domain change (`domain.rs`, `render.rs`, shared with SQLite), writes the
//! delivery outbox and completes the claim row with the stored answer, but only while it still holds the token
//! (a stale executor whose claim was taken over rolls back).
//!
//! Deliveries are claimed with leases (`FOR UPDATE SKIP LOCKED`): only the head of each (webhook, payment) queue
//! is eligible, and not while another instance holds its lease; a crashed instance's lease expires and another
//! instance takes the delivery over. Schema migrations run at start under an advisory lock.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod};
use parking_lot::Mutex;
use tokio_postgres::NoTls;

use super::answers::{
    apply_to_payment, missing_payment, reference_exists, too_many_webhooks, webhook_not_found,
};
use super::{
    AttemptFilter, BoxFut, DeliveryOutcome, DueDelivery, Op, SharedFaults, Store, StoreError,
    WebhookRow, WriteRequest, WriteResult,
};
use crate::domain::{Ctx, Payment};
use crate::faults::{FaultAction, FaultRule, path_matches};
use crate::ids::IdGen;
use crate::render::{self, StoredResponse};

/// Versioned migrations; each runs once, in order, recorded in `schema_migrations`.
const MIGRATIONS: &[(i32, &str)] = &[(
    1,
    r#"
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE payments (
    msn TEXT NOT NULL,
    reference TEXT NOT NULL,
    state TEXT NOT NULL,
    due_ms BIGINT,
    data BYTEA NOT NULL,
    PRIMARY KEY (msn, reference)
);
CREATE INDEX payments_due ON payments (due_ms) WHERE due_ms IS NOT NULL;
CREATE TABLE idempotency (
    scope TEXT PRIMARY KEY,
    fingerprint BYTEA NOT NULL,
    state TEXT NOT NULL,
    token BIGINT NOT NULL,
    lease_until BIGINT NOT NULL,
    status INTEGER,
    headers TEXT,
    body BYTEA,
    created_ms BIGINT NOT NULL
);
CREATE INDEX idempotency_created ON idempotency (created_ms);
CREATE TABLE webhooks (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    secret TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    failing_since_ms BIGINT,
    last_success_ms BIGINT
);
CREATE INDEX webhooks_owner ON webhooks (owner);
CREATE TABLE partner_owners (msn TEXT NOT NULL, owner TEXT NOT NULL, PRIMARY KEY (msn, owner));
CREATE TABLE deliveries (
    id BIGSERIAL PRIMARY KEY,
    webhook_id TEXT NOT NULL,
    msn TEXT NOT NULL,
    reference TEXT NOT NULL,
    event_type TEXT NOT NULL,
    event_id TEXT NOT NULL,
    payload BYTEA NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    first_attempt_ms BIGINT,
    next_ms BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    done_ms BIGINT,
    lease_owner TEXT,
    lease_until BIGINT
);
CREATE INDEX deliveries_due ON deliveries (next_ms) WHERE state = 'pending';
CREATE INDEX deliveries_order ON deliveries (webhook_id, msn, reference, id) WHERE state = 'pending';
CREATE INDEX deliveries_done ON deliveries (done_ms) WHERE state <> 'pending';
CREATE TABLE attempts (
    id BIGSERIAL PRIMARY KEY,
    delivery_id BIGINT NOT NULL,
    webhook_id TEXT NOT NULL,
    reference TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX attempts_reference ON attempts (reference);
CREATE INDEX attempts_at ON attempts (at_ms);
CREATE TABLE fault_rules (
    id BIGSERIAL PRIMARY KEY,
    method TEXT,
    path TEXT NOT NULL,
    remaining INTEGER NOT NULL,
    action TEXT NOT NULL
);
"#,
)];

/// The database's wall clock in Unix milliseconds (leases are measured on it, so instances agree).
const DB_NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// How long an idempotency claim is held before another instance may take it over.
const CLAIM_LEASE_MS: i64 = 30_000;

/// How long fault rules are cached before they are read again.
const FAULT_CACHE_TTL: Duration = Duration::from_millis(100);

/// Fault rules as read at a time.
type CachedRules = (Instant, Vec<FaultRule>);

/// The PostgreSQL store.
pub struct PostgresStore {
    pool: Pool,
    ids: Arc<dyn IdGen>,
    outbox: Arc<tokio::sync::Notify>,
    instance_id: String,
    delivery_lease_ms: i64,
    fault_cache: Arc<Mutex<Option<CachedRules>>>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("instance_id", &self.instance_id)
            .finish_non_exhaustive()
    }
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

fn pg_err(e: tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) => StoreError(format!("postgres: {}: {}", db.code().code(), db.message())),
        None => StoreError(format!("postgres: {e}")),
    }
}

fn pool_err(e: deadpool_postgres::PoolError) -> StoreError {
    StoreError(format!("postgres pool: {e}"))
}

/// Removes the password from a connection URL, for messages.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "postgres://…".into(),
    }
}

impl PostgresStore {
    /// Connects, runs the migrations (under an advisory lock) and returns the store. `delivery_lease` is how long
    /// an instance owns a delivery it has started before another may take it over.
    pub async fn connect(
        url: &str,
        ids: Arc<dyn IdGen>,
        outbox: Arc<tokio::sync::Notify>,
        delivery_lease: Duration,
    ) -> Result<Self, StoreError> {
        let cfg = tokio_postgres::Config::from_str(url)
            .map_err(|e| StoreError(format!("invalid PostgreSQL URL {}: {e}", redact_url(url))))?;
        let mgr = Manager::from_config(
            cfg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(48)
            .wait_timeout(Some(Duration::from_secs(30)))
            .create_timeout(Some(Duration::from_secs(10)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(err)?;
        let store = PostgresStore {
            pool,
            instance_id: crate::ids::hex(&ids.bytes16()),
            ids,
            outbox,
            delivery_lease_ms: delivery_lease.as_millis() as i64,
            fault_cache: Arc::default(),
        };
        store.migrate().await.map_err(|e| {
            StoreError(format!(
                "cannot prepare the PostgreSQL database {}: {}",
                redact_url(url),
                e.0
            ))
        })?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut c = self.pool.get().await.map_err(pool_err)?;
        let tx = c.transaction().await.map_err(pg_err)?;
        // Serialises concurrent starts: the second instance waits, then sees the recorded versions.
        tx.execute("SELECT pg_advisory_xact_lock(7261686579)", &[])
            .await
            .map_err(pg_err)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )
        .await
        .map_err(pg_err)?;
        let done: Vec<i32> = tx
            .query("SELECT version FROM schema_migrations", &[])
            .await
            .map_err(pg_err)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for (v, sql) in MIGRATIONS {
            if done.contains(v) {
                continue;
            }
            tracing::info!(version = v, "applying PostgreSQL schema migration");
            tx.batch_execute(sql).await.map_err(pg_err)?;
            tx.execute("INSERT INTO schema_migrations (version) VALUES ($1)", &[v])
                .await
                .map_err(pg_err)?;
        }
        tx.commit().await.map_err(pg_err)
    }

    /// This instance's id (the owner of the delivery leases it takes).
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }
}

enum Claim {
    Owned(i64),
    Answered(WriteResult),
}

async fn claim(
    c: &deadpool_postgres::Client,
    idem: &super::IdemClaim,
    now_ms: i64,
    ids: &dyn IdGen,
) -> Result<Claim, StoreError> {
    for _ in 0..8 {
        let token = i64::from_le_bytes(ids.bytes16()[..8].try_into().expect("8 bytes"));
        let ins = c
            .prepare_cached(&format!(
                "INSERT INTO idempotency (scope, fingerprint, state, token, lease_until, created_ms)
                 VALUES ($1, $2, 'in_progress', $3, {DB_NOW_MS} + $4, $5) ON CONFLICT (scope) DO NOTHING"
            ))
            .await
            .map_err(pg_err)?;
        let n = c
            .execute(
                &ins,
                &[
                    &idem.scope,
                    &idem.fingerprint.as_slice(),
                    &token,
                    &CLAIM_LEASE_MS,
                    &now_ms,
                ],
            )
            .await
            .map_err(pg_err)?;
        if n == 1 {
            return Ok(Claim::Owned(token));
        }
        let sel = c
            .prepare_cached(&format!(
                "SELECT fingerprint, state, token, lease_until < {DB_NOW_MS}, status, headers, body
                 FROM idempotency WHERE scope = $1"
            ))
            .await
            .map_err(pg_err)?;
        let Some(row) = c.query_opt(&sel, &[&idem.scope]).await.map_err(pg_err)? else {
            continue;
        };
        let fp: Vec<u8> = row.get(0);
        let state: String = row.get(1);
        if state == "done" {
            if fp.as_slice() != idem.fingerprint.as_slice() {
                return Ok(Claim::Answered(WriteResult::Mismatch(idem.mismatch_code)));
            }
            let status: i32 = row.get(4);
            let headers: Option<String> = row.get(5);
            let body: Option<Vec<u8>> = row.get(6);
            let headers: Vec<(String, String)> =
                serde_json::from_str(headers.as_deref().unwrap_or("[]")).unwrap_or_default();
            return Ok(Claim::Answered(WriteResult::Replayed(StoredResponse {
                status: status as u16,
                headers,
                body: body.unwrap_or_default().into(),
            })));
        }
        let expired: bool = row.get(3);
        if !expired {
            return Ok(Claim::Answered(WriteResult::InProgress));
        }
        // The claim's executor died (or is stuck): take it over with a new token.
        let old: i64 = row.get(2);
        let upd = c
            .prepare_cached(&format!(
                "UPDATE idempotency SET token = $3, fingerprint = $4, lease_until = {DB_NOW_MS} + $5, created_ms = $6
                 WHERE scope = $1 AND token = $2 AND state = 'in_progress'"
            ))
            .await
            .map_err(pg_err)?;
        let n = c
            .execute(
                &upd,
                &[
                    &idem.scope,
                    &old,
                    &token,
                    &idem.fingerprint.as_slice(),
                    &CLAIM_LEASE_MS,
                    &now_ms,
                ],
            )
            .await
            .map_err(pg_err)?;
        if n == 1 {
            return Ok(Claim::Owned(token));
        }
    }
    Ok(Claim::Answered(WriteResult::InProgress))
}

async fn release(c: &deadpool_postgres::Client, scope: &str, token: i64) {
    if let Err(e) = c
        .execute(
            "DELETE FROM idempotency WHERE scope = $1 AND token = $2 AND state = 'in_progress'",
            &[&scope, &token],
        )
        .await
    {
        tracing::warn!(error = %e, "could not release an idempotency claim; it expires with its lease");
    }
}

impl PostgresStore {
    async fn do_write(&self, req: WriteRequest) -> Result<WriteResult, StoreError> {
        let mut c = self.pool.get().await.map_err(pool_err)?;
        let token = match &req.idem {
            Some(idem) => match claim(&c, idem, req.now_ms, self.ids.as_ref()).await? {
                Claim::Owned(t) => Some(t),
                Claim::Answered(r) => return Ok(r),
            },
            None => None,
        };
        let r = self.run_op(&mut c, &req, token).await;
        if let (Some(idem), Some(t)) = (&req.idem, token) {
            let completed = matches!(&r, Ok((WriteResult::Fresh(resp), _)) if resp.status < 500);
            if !completed {
                release(&c, &idem.scope, t).await;
            }
        }
        let (result, touched) = r?;
        if touched {
            self.outbox.notify_one();
        }
        Ok(result)
    }

    async fn run_op(
        &self,
        c: &mut deadpool_postgres::Client,
        req: &WriteRequest,
        token: Option<i64>,
    ) -> Result<(WriteResult, bool), StoreError> {
        let tx = c.transaction().await.map_err(pg_err)?;
        let mut touched = false;
        let resp = apply(&tx, req, self.ids.as_ref(), &mut touched).await?;
        if let (Some(idem), Some(token)) = (&req.idem, token) {
            if resp.status < 500 {
                let headers = serde_json::to_string(&resp.headers).unwrap_or_else(|_| "[]".into());
                let st = tx
                    .prepare_cached(
                        "UPDATE idempotency SET state = 'done', status = $3, headers = $4, body = $5, created_ms = $6
                         WHERE scope = $1 AND token = $2 AND state = 'in_progress'",
                    )
                    .await
                    .map_err(pg_err)?;
                let n = tx
                    .execute(
                        &st,
                        &[
                            &idem.scope,
                            &token,
                            &i32::from(resp.status),
                            &headers,
                            &resp.body.as_ref(),
                            &req.now_ms,
                        ],
                    )
                    .await
                    .map_err(pg_err)?;
                if n == 0 {
                    // Fenced: another instance took the claim over; this execution must not count.
                    tx.rollback().await.map_err(pg_err)?;
                    return Ok((WriteResult::InProgress, false));
                }
            }
        }
        tx.commit().await.map_err(pg_err)?;
        Ok((WriteResult::Fresh(resp), touched))
    }
}

type Tx<'a> = deadpool_postgres::Transaction<'a>;

async fn load(tx: &Tx<'_>, msn: &str, reference: &str) -> Result<Option<Payment>, StoreError> {
    let st = tx
        .prepare_cached("SELECT data FROM payments WHERE msn = $1 AND reference = $2 FOR UPDATE")
        .await
        .map_err(pg_err)?;
    let row = tx
        .query_opt(&st, &[&msn, &reference])
        .await
        .map_err(pg_err)?;
    row.map(|r| serde_json::from_slice::<Payment>(r.get::<_, &[u8]>(0)).map_err(err))
        .transpose()
}

/// Saves a payment and puts its new events (`events[before..]`) in the outbox, like the SQLite `save`.
async fn save(
    tx: &Tx<'_>,
    p: &Payment,
    before: usize,
    now_ms: i64,
    create: bool,
    touched: &mut bool,
) -> Result<bool, StoreError> {
    let data = serde_json::to_vec(p).map_err(err)?;
    let sql = if create {
        "INSERT INTO payments (msn, reference, state, due_ms, data) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (msn, reference) DO NOTHING"
    } else {
        "INSERT INTO payments (msn, reference, state, due_ms, data) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (msn, reference) DO UPDATE SET state = excluded.state, due_ms = excluded.due_ms, data = excluded.data"
    };
    let st = tx.prepare_cached(sql).await.map_err(pg_err)?;
    let n = tx
        .execute(
            &st,
            &[&p.msn, &p.reference, &p.state.as_str(), &p.due_ms(), &data],
        )
        .await
        .map_err(pg_err)?;
    if n == 0 {
        return Ok(false);
    }
    let new_events = p.events.get(before..).unwrap_or_default();
    if new_events.is_empty() {
        return Ok(true);
    }
    let st = tx
        .prepare_cached(
            "SELECT id, events FROM webhooks WHERE owner = 'msn:' || $1
             OR owner IN (SELECT owner FROM partner_owners WHERE msn = $1) ORDER BY created_ms, id",
        )
        .await
        .map_err(pg_err)?;
    let hooks: Vec<(String, String)> = tx
        .query(&st, &[&p.msn])
        .await
        .map_err(pg_err)?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    if hooks.is_empty() {
        return Ok(true);
    }
    let ins = tx
        .prepare_cached(
            "INSERT INTO deliveries (webhook_id, msn, reference, event_type, event_id, payload, state, attempts, next_ms, created_ms)
             VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $7, $7)",
        )
        .await
        .map_err(pg_err)?;
    for e in new_events {
        let event_type = vipps_types::epayment::PaymentEventName::from_wire(e.name.as_str())
            .webhook_event_type();
        let payload = serde_json::to_vec(&render::webhook_event(p, e)).map_err(err)?;
        for (id, events) in &hooks {
            let subscribed: Vec<String> = serde_json::from_str(events).unwrap_or_default();
            if !subscribed.contains(&event_type) {
                continue;
            }
            tx.execute(
                &ins,
                &[
                    id,
                    &p.msn,
                    &p.reference,
                    &event_type,
                    &e.psp,
                    &payload,
                    &now_ms,
                ],
            )
            .await
            .map_err(pg_err)?;
            *touched = true;
        }
    }
    Ok(true)
}

async fn fail_pending(tx: &Tx<'_>, webhook_id: &str, now_ms: i64) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE deliveries SET state = 'failed', done_ms = $2, lease_owner = NULL, lease_until = NULL
         WHERE webhook_id = $1 AND state = 'pending'",
        &[&webhook_id, &now_ms],
    )
    .await
    .map_err(pg_err)?;
    Ok(())
}

fn webhook_row(r: &tokio_postgres::Row) -> WebhookRow {
    let events: String = r.get(3);
    WebhookRow {
        id: r.get(0),
        owner: r.get(1),
        url: r.get(2),
        events: serde_json::from_str(&events).unwrap_or_default(),
        secret: r.get(4),
        created_ms: r.get(5),
    }
}

/// Applies one write inside `tx`; the same semantics as the SQLite `apply` (without the idempotency part, which
/// the caller does around it).
async fn apply(
    tx: &Tx<'_>,
    req: &WriteRequest,
    ids: &dyn IdGen,
    touched: &mut bool,
) -> Result<StoredResponse, StoreError> {
    let new_psp = || ids.psp_reference();
    // Built per call: a `Ctx` must not live across an await (its closure reference is not `Sync`).
    macro_rules! ctx {
        () => {
            &Ctx {
                now_ms: req.now_ms,
                new_psp: &new_psp,
            }
        };
    }
    let resp = match &req.op {
        Op::CreatePayment(p) => {
            if save(tx, p, 0, req.now_ms, true, touched).await? {
                StoredResponse::json(201, &render::created(p))
            } else {
                reference_exists(req, &p.reference)
            }
        }
        Op::Capture { msn, reference, .. }
        | Op::Refund { msn, reference, .. }
        | Op::Cancel { msn, reference, .. }
        | Op::ForceApprove { msn, reference }
        | Op::UserApprove { msn, reference }
        | Op::UserReject { msn, reference }
        | Op::Settle { msn, reference } => match load(tx, msn, reference).await? {
            None => missing_payment(req, reference),
            Some(mut p) => {
                let before = p.events.len();
                let (changed, resp) = apply_to_payment(req, &mut p, ctx!());
                if changed {
                    save(tx, &p, before, req.now_ms, false, touched).await?;
                }
                resp
            }
        },
        Op::RegisterWebhook { row, max_per_event } => {
            // Serialises registrations of one owner, so the limit holds across instances.
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtext('webhooks:' || $1))",
                &[&row.owner],
            )
            .await
            .map_err(pg_err)?;
            let existing: Vec<WebhookRow> = tx
                .query(
                    "SELECT id, owner, url, events, secret, created_ms FROM webhooks WHERE owner = $1",
                    &[&row.owner],
                )
                .await
                .map_err(pg_err)?
                .iter()
                .map(webhook_row)
                .collect();
            let full = row.events.iter().find(|ev| {
                existing.iter().filter(|w| w.events.contains(ev)).count() >= *max_per_event
            });
            match full {
                Some(ev) => too_many_webhooks(req, *max_per_event, ev),
                None => {
                    let events = serde_json::to_string(&row.events).unwrap_or_default();
                    tx.execute(
                        "INSERT INTO webhooks (id, owner, url, events, secret, created_ms) VALUES ($1, $2, $3, $4, $5, $6)",
                        &[&row.id, &row.owner, &row.url, &events, &row.secret, &row.created_ms],
                    )
                    .await
                    .map_err(pg_err)?;
                    StoredResponse::json(
                        201,
                        &vipps_types::webhooks::RegisterResponse {
                            id: row.id.clone(),
                            secret: row.secret.clone(),
                        },
                    )
                }
            }
        }
        Op::DeleteWebhook { owner, id } => {
            let owned = tx
                .query_opt(
                    "SELECT 1 FROM webhooks WHERE owner = $1 AND id = $2 FOR UPDATE",
                    &[owner, id],
                )
                .await
                .map_err(pg_err)?
                .is_some();
            if owned {
                fail_pending(tx, id, req.now_ms).await?;
            }
            let n = tx
                .execute(
                    "DELETE FROM webhooks WHERE owner = $1 AND id = $2",
                    &[owner, id],
                )
                .await
                .map_err(pg_err)?;
            if n == 0 {
                webhook_not_found(req, id)
            } else {
                StoredResponse::empty(204)
            }
        }
        Op::PurgeIdempotency { before_ms } => {
            tx.execute(
                "DELETE FROM idempotency WHERE created_ms < $1 AND state = 'done'",
                &[before_ms],
            )
            .await
            .map_err(pg_err)?;
            StoredResponse::empty(204)
        }
        Op::SetPartnerOwners { pairs } => {
            tx.execute("SELECT pg_advisory_xact_lock(7261686580)", &[])
                .await
                .map_err(pg_err)?;
            tx.execute("DELETE FROM partner_owners", &[])
                .await
                .map_err(pg_err)?;
            for (msn, owner) in pairs {
                tx.execute(
                    "INSERT INTO partner_owners (msn, owner) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    &[msn, owner],
                )
                .await
                .map_err(pg_err)?;
            }
            StoredResponse::empty(204)
        }
        Op::DeliveryResult {
            delivery_id,
            webhook_id,
            reference,
            attempt,
            at_ms,
            outcome,
        } => {
            let (state, next, done): (&str, Option<i64>, Option<i64>) = match outcome {
                DeliveryOutcome::Delivered => ("delivered", None, Some(*at_ms)),
                DeliveryOutcome::Retry { next_ms } => ("pending", Some(*next_ms), None),
                DeliveryOutcome::GiveUp => ("failed", None, Some(*at_ms)),
            };
            // Lock order: the webhook row first, then the delivery (as RemoveUnresponsive does), so the two never
            // deadlock.
            let exists = tx
                .query_opt(
                    "SELECT 1 FROM webhooks WHERE id = $1 FOR UPDATE",
                    &[webhook_id],
                )
                .await
                .map_err(pg_err)?
                .is_some();
            let n = tx
                .execute(
                    "UPDATE deliveries SET attempts = attempts + 1, first_attempt_ms = coalesce(first_attempt_ms, $2),
                     state = $3, next_ms = coalesce($4, next_ms), done_ms = $5, lease_owner = NULL, lease_until = NULL
                     WHERE id = $1 AND state = 'pending'",
                    &[delivery_id, at_ms, &state, &next, &done],
                )
                .await
                .map_err(pg_err)?;
            if n == 1 {
                tx.execute(
                    "INSERT INTO attempts (delivery_id, webhook_id, reference, at_ms, data) VALUES ($1, $2, $3, $4, $5)",
                    &[delivery_id, webhook_id, reference, at_ms, attempt],
                )
                .await
                .map_err(pg_err)?;
                if exists && *outcome == DeliveryOutcome::Delivered {
                    tx.execute(
                        "UPDATE webhooks SET last_success_ms = $2, failing_since_ms = NULL WHERE id = $1",
                        &[webhook_id, at_ms],
                    )
                    .await
                    .map_err(pg_err)?;
                } else if exists {
                    tx.execute(
                        "UPDATE webhooks SET failing_since_ms = coalesce(failing_since_ms, $2) WHERE id = $1",
                        &[webhook_id, at_ms],
                    )
                    .await
                    .map_err(pg_err)?;
                }
            }
            *touched = true;
            StoredResponse::empty(204)
        }
        Op::RemoveUnresponsive { before_ms } => {
            let ids: Vec<String> = tx
                .query(
                    "SELECT id FROM webhooks WHERE failing_since_ms IS NOT NULL AND failing_since_ms <= $1 ORDER BY id FOR UPDATE",
                    &[before_ms],
                )
                .await
                .map_err(pg_err)?
                .iter()
                .map(|r| r.get(0))
                .collect();
            for id in &ids {
                tracing::info!(webhook_id = %id, "removing a webhook that has been unresponsive for too long");
                fail_pending(tx, id, req.now_ms).await?;
                tx.execute("DELETE FROM webhooks WHERE id = $1", &[id])
                    .await
                    .map_err(pg_err)?;
            }
            StoredResponse::empty(204)
        }
        Op::PurgeDeliveries { before_ms } => {
            tx.execute(
                "DELETE FROM deliveries WHERE state <> 'pending' AND done_ms < $1",
                &[before_ms],
            )
            .await
            .map_err(pg_err)?;
            tx.execute("DELETE FROM attempts WHERE at_ms < $1", &[before_ms])
                .await
                .map_err(pg_err)?;
            StoredResponse::empty(204)
        }
        Op::AdvanceClock { ms } => {
            let row = tx
                .query_one(
                    "INSERT INTO meta (key, value) VALUES ('clock_offset_ms', $1::bigint::text)
                     ON CONFLICT (key) DO UPDATE SET value = (meta.value::bigint + $1::bigint)::text RETURNING value::bigint",
                    &[ms],
                )
                .await
                .map_err(pg_err)?;
            let offset: i64 = row.get(0);
            StoredResponse::json(200, &serde_json::json!({ "offset_ms": offset }))
        }
        Op::SetMeta { key, value } => {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[key, value],
            )
            .await
            .map_err(pg_err)?;
            StoredResponse::empty(204)
        }
    };
    Ok(resp)
}

impl Store for PostgresStore {
    fn write(&self, req: WriteRequest) -> BoxFut<'static, Result<WriteResult, StoreError>> {
        let me = self.clone_handle();
        Box::pin(async move { me.do_write(req).await })
    }

    fn payment(
        &self,
        msn: &str,
        reference: &str,
    ) -> BoxFut<'static, Result<Option<Arc<Payment>>, StoreError>> {
        let pool = self.pool.clone();
        let (msn, reference) = (msn.to_owned(), reference.to_owned());
        Box::pin(async move {
            let c = pool.get().await.map_err(pool_err)?;
            let st = c
                .prepare_cached("SELECT data FROM payments WHERE msn = $1 AND reference = $2")
                .await
                .map_err(pg_err)?;
            let row = c
                .query_opt(&st, &[&msn, &reference])
                .await
                .map_err(pg_err)?;
            row.map(|r| {
                serde_json::from_slice::<Payment>(r.get::<_, &[u8]>(0))
                    .map(Arc::new)
                    .map_err(err)
            })
            .transpose()
        })
    }

    fn due_payments(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> BoxFut<'static, Result<Vec<(String, String)>, StoreError>> {
        let pool = self.pool.clone();
        Box::pin(async move {
            let c = pool.get().await.map_err(pool_err)?;
            let rows = c
                .query(
                    "SELECT msn, reference FROM payments WHERE due_ms IS NOT NULL AND due_ms <= $1 ORDER BY due_ms LIMIT $2",
                    &[&now_ms, &(limit as i64)],
                )
                .await
                .map_err(pg_err)?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }

    fn webhooks(&self, owner: &str) -> BoxFut<'static, Result<Vec<WebhookRow>, StoreError>> {
        let pool = self.pool.clone();
        let owner = owner.to_owned();
        Box::pin(async move {
            let c = pool.get().await.map_err(pool_err)?;
            let rows = c
                .query(
                    "SELECT id, owner, url, events, secret, created_ms FROM webhooks WHERE owner = $1 ORDER BY created_ms, id",
                    &[&owner],
                )
                .await
                .map_err(pg_err)?;
            Ok(rows.iter().map(webhook_row).collect())
        })
    }

    fn meta(&self, key: &str) -> BoxFut<'static, Result<Option<String>, StoreError>> {
        let pool = self.pool.clone();
        let key = key.to_owned();
        Box::pin(async move {
            let c = pool.get().await.map_err(pool_err)?;
            let st = c
                .prepare_cached("SELECT value FROM meta WHERE key = $1")
                .await
                .map_err(pg_err)?;
            Ok(c.query_opt(&st, &[&key])
                .await
                .map_err(pg_err)?
                .map(|r| r.get(0)))
        })
    }

    fn due_deliveries(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> BoxFut<'static, Result<Vec<DueDelivery>, StoreError>> {
        let pool = self.pool.clone();
        let owner = self.instance_id.clone();
        let lease = self.delivery_lease_ms;
        Box::pin(async move {
            let c = pool.get().await.map_err(pool_err)?;
            // Heads of the pending queues that are due and not leased by anyone (or whose lease ran out), locked
            // with SKIP LOCKED so concurrent dispatchers on other instances take different rows, then leased.
            let sql = format!(
                "WITH heads AS (
                    SELECT DISTINCT ON (webhook_id, msn, reference) id
                    FROM deliveries WHERE state = 'pending'
                    ORDER BY webhook_id, msn, reference, id
                 ), picked AS (
                    SELECT d.id FROM deliveries d JOIN heads h ON h.id = d.id
                    WHERE d.state = 'pending' AND d.next_ms <= $1
                      AND (d.lease_until IS NULL OR d.lease_until < {DB_NOW_MS})
                    ORDER BY d.id LIMIT $2
                    FOR UPDATE OF d SKIP LOCKED
                 )
                 UPDATE deliveries d SET lease_owner = $3, lease_until = {DB_NOW_MS} + $4
                 FROM picked, webhooks w
                 WHERE d.id = picked.id AND w.id = d.webhook_id
                 RETURNING d.id, d.webhook_id, d.msn, d.reference, d.event_type, d.event_id, w.url, w.secret,
                           d.payload, d.attempts, d.first_attempt_ms"
            );
            let st = c.prepare_cached(&sql).await.map_err(pg_err)?;
            let rows = c
                .query(&st, &[&now_ms, &(limit as i64), &owner, &lease])
                .await
                .map_err(pg_err)?;
            let mut out: Vec<DueDelivery> = rows
                .iter()
                .map(|r| DueDelivery {
                    id: r.get(0),
                    webhook_id: r.get(1),
                    msn: r.get(2),
                    reference: r.get(3),
                    event_type: r.get(4),
                    event_id: r.get(5),
                    url: r.get(6),
                    secret: r.get(7),
                    payload: r.get::<_, Vec<u8>>(8).into(),
                    attempts: r.get::<_, i32>(9) as u32,
                    first_attempt_ms: r.get(10),
                })
                .collect();
            out.sort_by_key(|d| d.id);
            Ok(out)
        })
    }

    fn next_delivery_ms(&self) -> BoxFut<'static, Result<Option<i64>, StoreError>> {
        let pool = self.pool.clone();
        Box::pin(async move {
            let c = pool.get().await.map_err(pool_err)?;
            let row = c
                .query_one(
                    "SELECT min(next_ms) FROM deliveries WHERE state = 'pending'",
                    &[],
                )
                .await
                .map_err(pg_err)?;
            Ok(row.get(0))
        })
    }

    fn attempts(
        &self,
        f: &AttemptFilter,
    ) -> BoxFut<'static, Result<Vec<serde_json::Value>, StoreError>> {
        let pool = self.pool.clone();
        let f = f.clone();
        Box::pin(async move {
            let c = pool.get().await.map_err(pool_err)?;
            let rows = c
                .query(
                    "SELECT data FROM attempts WHERE ($1::text IS NULL OR reference = $1) AND ($2::text IS NULL OR webhook_id = $2)
                     ORDER BY id DESC",
                    &[&f.reference, &f.webhook_id],
                )
                .await
                .map_err(pg_err)?;
            let limit = f.limit.unwrap_or(100);
            let mut out = Vec::new();
            for row in rows {
                let v: serde_json::Value =
                    serde_json::from_str(row.get::<_, &str>(0)).unwrap_or_default();
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
            Ok(out)
        })
    }

    fn counts(&self) -> BoxFut<'static, Result<(u64, u64, u64), StoreError>> {
        let pool = self.pool.clone();
        Box::pin(async move {
            let c = pool.get().await.map_err(pool_err)?;
            let row = c
                .query_one(
                    "SELECT (SELECT count(*) FROM payments), (SELECT count(*) FROM idempotency WHERE state = 'done'),
                            (SELECT count(*) FROM webhooks)",
                    &[],
                )
                .await
                .map_err(pg_err)?;
            Ok((
                row.get::<_, i64>(0) as u64,
                row.get::<_, i64>(1) as u64,
                row.get::<_, i64>(2) as u64,
            ))
        })
    }

    fn shared(&self) -> bool {
        true
    }

    fn faults(&self) -> Option<&dyn SharedFaults> {
        Some(self)
    }
}

impl PostgresStore {
    fn clone_handle(&self) -> Arc<PostgresStore> {
        Arc::new(PostgresStore {
            pool: self.pool.clone(),
            ids: self.ids.clone(),
            outbox: self.outbox.clone(),
            instance_id: self.instance_id.clone(),
            delivery_lease_ms: self.delivery_lease_ms,
            fault_cache: self.fault_cache.clone(),
        })
    }
}

async fn load_rules(pool: &Pool) -> Result<Vec<FaultRule>, StoreError> {
    let c = pool.get().await.map_err(pool_err)?;
    let rows = c
        .query(
            "SELECT id, method, path, remaining, action FROM fault_rules WHERE remaining > 0 ORDER BY id",
            &[],
        )
        .await
        .map_err(pg_err)?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let action: FaultAction = serde_json::from_str(r.get::<_, &str>(4)).ok()?;
            Some(FaultRule {
                id: r.get::<_, i64>(0) as u64,
                method: r.get(1),
                path: r.get(2),
                remaining: r.get::<_, i32>(3) as u32,
                action,
            })
        })
        .collect())
}

fn rule_matches(r: &FaultRule, method: &str, path: &str) -> bool {
    r.method
        .as_deref()
        .is_none_or(|m| m.eq_ignore_ascii_case(method))
        && path_matches(&r.path, path)
}

impl SharedFaults for PostgresStore {
    fn add(&self, rule: FaultRule) -> BoxFut<'static, Result<FaultRule, StoreError>> {
        let pool = self.pool.clone();
        let cache = self.fault_cache.clone();
        Box::pin(async move {
            let c = pool.get().await.map_err(pool_err)?;
            let action = serde_json::to_string(&rule.action).map_err(err)?;
            let row = c
                .query_one(
                    "INSERT INTO fault_rules (method, path, remaining, action) VALUES ($1, $2, $3, $4) RETURNING id",
                    &[&rule.method, &rule.path, &(rule.remaining as i32), &action],
                )
                .await
                .map_err(pg_err)?;
            *cache.lock() = None;
            Ok(FaultRule {
                id: row.get::<_, i64>(0) as u64,
                ..rule
            })
        })
    }

    fn take(
        &self,
        method: &str,
        path: &str,
    ) -> BoxFut<'static, Result<Option<FaultAction>, StoreError>> {
        let pool = self.pool.clone();
        let cache = self.fault_cache.clone();
        let (method, path) = (method.to_owned(), path.to_owned());
        Box::pin(async move {
            let cached = cache
                .lock()
                .as_ref()
                .filter(|(at, _)| at.elapsed() < FAULT_CACHE_TTL)
                .map(|(_, rules)| rules.iter().any(|r| rule_matches(r, &method, &path)));
            let maybe = match cached {
                Some(m) => m,
                None => {
                    let rules = load_rules(&pool).await?;
                    let m = rules.iter().any(|r| rule_matches(r, &method, &path));
                    *cache.lock() = Some((Instant::now(), rules));
                    m
                }
            };
            if !maybe {
                return Ok(None);
            }
            // A rule may apply: take one use in the database, atomically (another instance may race for it).
            for _ in 0..8 {
                let rules = load_rules(&pool).await?;
                let Some(r) = rules.iter().find(|r| rule_matches(r, &method, &path)) else {
                    *cache.lock() = Some((Instant::now(), rules));
                    return Ok(None);
                };
                let c = pool.get().await.map_err(pool_err)?;
                let row = c
                    .query_opt(
                        "UPDATE fault_rules SET remaining = remaining - 1 WHERE id = $1 AND remaining > 0 RETURNING remaining",
                        &[&(r.id as i64)],
                    )
                    .await
                    .map_err(pg_err)?;
                if let Some(row) = row {
                    if row.get::<_, i32>(0) == 0 {
                        c.execute(
                            "DELETE FROM fault_rules WHERE id = $1 AND remaining = 0",
                            &[&(r.id as i64)],
                        )
                        .await
                        .map_err(pg_err)?;
                    }
                    *cache.lock() = None;
                    return Ok(Some(r.action.clone()));
                }
            }
            Ok(None)
        })
    }

    fn list(&self) -> BoxFut<'static, Result<Vec<FaultRule>, StoreError>> {
        let pool = self.pool.clone();
        Box::pin(async move { load_rules(&pool).await })
    }

    fn clear(&self) -> BoxFut<'static, Result<(), StoreError>> {
        let pool = self.pool.clone();
        let cache = self.fault_cache.clone();
        Box::pin(async move {
            let c = pool.get().await.map_err(pool_err)?;
            c.execute("DELETE FROM fault_rules", &[])
                .await
                .map_err(pg_err)?;
            *cache.lock() = None;
            Ok(())
        })
    }
}
