//! The PostgreSQL backend, for one or several emulator instances on one database.
//!
//! Every write is one transaction on a pooled connection. An idempotent write first takes a transaction-scoped
//! advisory lock on its key (`pg_try_advisory_xact_lock`, 64 bits of the key's SHA-256) and, in the same round
//! trip, reads a stored answer: a stored answer is replayed (or refused as a mismatch); a lock held by another
//! transaction means the same key is executing right now (here or on another instance), answered 423 at once.
//! The change, its outbox rows and the answer then commit together with the lock released by the commit. When
//! an instance dies, its connections close and the database releases its locks immediately: there is no lease
//! to wait out, and an uncommitted change is simply gone.
//!
//! A product command locks its aggregate row (`FOR UPDATE`), runs the pure command and saves; a create that meets
//! a row committed concurrently under another key rolls back and runs once more (then it sees the row).
//!
//! Deliveries are claimed with leases (`FOR UPDATE SKIP LOCKED`): only the head of each (webhook, subject) queue
//! is eligible, and not while another instance holds its lease; a crashed instance's lease expires and another
//! instance takes the delivery over. Schema migrations run at start under an advisory lock.

mod batch;
mod dump;

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod};
use parking_lot::Mutex;
use tokio_postgres::NoTls;

use super::{
    AggregateQuery, AggregateRow, AttemptFilter, BoxFut, CREATE_ATTEMPTS, Counts, DeliveryOutcome,
    DueAggregate, DueDelivery, Op, SharedFaults, StateCounts, Store, StoreError, WebhookRow,
    WriteRequest, WriteResult, fan_out, stored_answer, too_many_webhooks, webhook_not_found,
};
use crate::platform::aggregate::{AggregateKey, Command, Ctx, Decoded, Decoder};
use crate::platform::faults::{FaultAction, FaultRule, path_matches};
use crate::platform::http::StoredResponse;
use crate::platform::ids::IdGen;

/// Versioned migrations; each runs once, in order, recorded in `schema_migrations`.
const MIGRATIONS: &[(i32, &str)] = &[
    (
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
    ),
    (
        2,
        r#"
CREATE TABLE aggregates (
    kind TEXT NOT NULL,
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    state TEXT NOT NULL,
    due_ms BIGINT,
    data BYTEA NOT NULL,
    PRIMARY KEY (kind, tenant, id)
);
CREATE INDEX aggregates_due ON aggregates (due_ms) WHERE due_ms IS NOT NULL;
INSERT INTO aggregates (kind, tenant, id, state, due_ms, data)
    SELECT 'epayment.payment', msn, reference, state, due_ms, data FROM payments;
DROP TABLE payments;
ALTER TABLE deliveries RENAME COLUMN msn TO tenant;
ALTER TABLE deliveries RENAME COLUMN reference TO subject;
ALTER TABLE deliveries ADD COLUMN event_name TEXT NOT NULL DEFAULT '';
ALTER TABLE attempts RENAME COLUMN reference TO subject;
DELETE FROM idempotency WHERE state <> 'done';
ALTER TABLE idempotency DROP COLUMN state, DROP COLUMN token, DROP COLUMN lease_until;
"#,
    ),
    (
        3,
        r#"
ALTER TABLE aggregates ADD COLUMN created_ms BIGINT NOT NULL DEFAULT 0;
UPDATE aggregates SET created_ms = coalesce((convert_from(data, 'UTF8')::jsonb ->> 'created_ms')::bigint, 0);
CREATE INDEX aggregates_created ON aggregates (kind, created_ms, tenant, id);
CREATE INDEX aggregates_state_created ON aggregates (kind, state, created_ms, tenant, id);
"#,
    ),
    (
        4,
        r#"
ALTER TABLE aggregates ADD COLUMN parent TEXT;
CREATE INDEX aggregates_parent ON aggregates (kind, tenant, parent, created_ms, id) WHERE parent IS NOT NULL;
"#,
    ),
];

/// The database's wall clock in Unix milliseconds (leases are measured on it, so instances agree).
/// Takes an idempotency key's lock for the transaction, without waiting.
const SQL_LOCK: &str = "SELECT pg_try_advisory_xact_lock($1)";
/// The stored answer of an idempotency key.
const SQL_IDEM_SELECT: &str =
    "SELECT fingerprint, status, headers, body FROM idempotency WHERE scope = $1";
/// Stores an answer with its key.
const SQL_IDEM_INSERT: &str =
    "INSERT INTO idempotency (scope, fingerprint, status, headers, body, created_ms)
     VALUES ($1, $2, $3, $4, $5, $6)";
/// Loads and locks an aggregate.
const SQL_LOAD_FOR_UPDATE: &str =
    "SELECT data FROM aggregates WHERE kind = $1 AND tenant = $2 AND id = $3 FOR UPDATE";
/// The webhooks that receive a tenant's events (its own and its partners').
const SQL_TENANT_HOOKS: &str = "SELECT id, events FROM webhooks WHERE owner = 'msn:' || $1
     OR owner IN (SELECT owner FROM partner_owners WHERE msn = $1) ORDER BY created_ms, id";
/// Inserts a new aggregate (no row changed: it exists).
const SQL_CREATE: &str =
    "INSERT INTO aggregates (kind, tenant, id, state, due_ms, data, created_ms, parent) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
     ON CONFLICT (kind, tenant, id) DO NOTHING";
/// Saves an aggregate.
const SQL_UPSERT: &str = "INSERT INTO aggregates (kind, tenant, id, state, due_ms, data, created_ms, parent) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
     ON CONFLICT (kind, tenant, id) DO UPDATE SET state = excluded.state, due_ms = excluded.due_ms, data = excluded.data";
/// Puts one event for one webhook in the outbox.
const SQL_DELIVERY: &str = "INSERT INTO deliveries (webhook_id, tenant, subject, event_type, event_id, event_name, payload, state, attempts, next_ms, created_ms)
     VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', 0, $8, $8)";

const DB_NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// How long fault rules are cached before they are read again.
const FAULT_CACHE_TTL: Duration = Duration::from_millis(100);

/// Fault rules as read at a time.
type CachedRules = (Instant, Vec<FaultRule>);

/// The PostgreSQL store.
pub(crate) struct PostgresStore {
    pool: Pool,
    ids: Arc<dyn IdGen>,
    outbox: Arc<tokio::sync::Notify>,
    instance_id: String,
    delivery_lease_ms: i64,
    fault_cache: Arc<Mutex<Option<CachedRules>>>,
    /// Group commit for product writes (`None` in the batch workers' own handle, which write directly).
    batcher: Option<Arc<batch::Batcher>>,
    /// Told about every group commit (see [`Store::on_commit`]); shared with the batch workers' handle.
    commit_hook: Arc<std::sync::OnceLock<super::CommitHook>>,
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
    pub(crate) async fn connect(
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
            instance_id: crate::platform::ids::hex(&ids.bytes16()),
            ids,
            outbox,
            delivery_lease_ms: delivery_lease.as_millis() as i64,
            fault_cache: Arc::default(),
            batcher: None,
            commit_hook: Arc::default(),
        };
        store.migrate().await.map_err(|e| {
            StoreError(format!(
                "cannot prepare the PostgreSQL database {}: {}",
                redact_url(url),
                e.0
            ))
        })?;
        let workers = store.clone_handle();
        Ok(PostgresStore {
            batcher: Some(Arc::new(batch::Batcher::start(workers))),
            ..store
        })
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
}

/// The advisory-lock key of an idempotency scope: 64 bits of its SHA-256 (a collision can only make a request
/// wait for an unrelated one: it is answered 423 and retried).
fn lock_key(scope: &str) -> i64 {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(scope.as_bytes());
    i64::from_le_bytes(d[..8].try_into().expect("8 bytes"))
}

/// A create that met a row committed concurrently: the transaction is rolled back and the write runs again.
struct CreateConflict;

impl PostgresStore {
    async fn do_write(&self, req: &WriteRequest) -> Result<WriteResult, StoreError> {
        let mut c = self.pool.get().await.map_err(pool_err)?;
        for _ in 0..CREATE_ATTEMPTS {
            match self.try_write(&mut c, req).await? {
                Ok((result, touched)) => {
                    if touched {
                        self.outbox.notify_one();
                    }
                    return Ok(result);
                }
                Err(CreateConflict) => continue,
            }
        }
        Err(StoreError(
            "a create kept meeting an existing document".into(),
        ))
    }

    async fn try_write(
        &self,
        c: &mut deadpool_postgres::Client,
        req: &WriteRequest,
    ) -> Result<Result<(WriteResult, bool), CreateConflict>, StoreError> {
        let tx = c.transaction().await.map_err(pg_err)?;
        if let Some(idem) = &req.idem {
            let lock = tx.prepare_cached(SQL_LOCK).await.map_err(pg_err)?;
            let sel = tx.prepare_cached(SQL_IDEM_SELECT).await.map_err(pg_err)?;
            let key = lock_key(&idem.scope);
            // Sent together; the server runs the read after the lock, so it sees an answer committed by a holder.
            let (lock_params, sel_params): (
                [&(dyn tokio_postgres::types::ToSql + Sync); 1],
                [&(dyn tokio_postgres::types::ToSql + Sync); 1],
            ) = ([&key], [&idem.scope]);
            let (locked, row) = futures::try_join!(
                tx.query_one(&lock, &lock_params),
                tx.query_opt(&sel, &sel_params)
            )
            .map_err(pg_err)?;
            let early = if !locked.get::<_, bool>(0) {
                Some(WriteResult::InProgress)
            } else {
                row.map(|row| {
                    let fp: &[u8] = row.get(0);
                    if fp != idem.fingerprint.as_slice() {
                        return WriteResult::Mismatch(idem.mismatch_code);
                    }
                    let status: i32 = row.get(1);
                    WriteResult::Replayed(stored_answer(
                        status as u16,
                        row.get::<_, &str>(2),
                        row.get::<_, Vec<u8>>(3),
                    ))
                })
            };
            if let Some(result) = early {
                // Ended before answering: a dropped transaction's ROLLBACK is sent without being waited for, and
                // until the server has run it this replay still holds the key's lock, so the very next request with
                // the key, on another connection, would be answered 423 as if it were still executing.
                tx.rollback().await.map_err(pg_err)?;
                return Ok(Ok((result, false)));
            }
        }
        let mut touched = false;
        let resp = match &req.op {
            Op::Execute(cmd) => {
                match execute(&tx, req, cmd.as_ref(), self.ids.as_ref(), &mut touched).await? {
                    Ok(r) => r,
                    Err(CreateConflict) => return Ok(Err(CreateConflict)),
                }
            }
            _ => apply(&tx, req, &mut touched).await?,
        };
        if let Some(idem) = &req.idem {
            // 2xx and 4xx outcomes are the answer for the key; 5xx are not stored so a retry executes again.
            if resp.status < 500 {
                let headers = serde_json::to_string(&resp.headers).unwrap_or_else(|_| "[]".into());
                let st = tx.prepare_cached(SQL_IDEM_INSERT).await.map_err(pg_err)?;
                tx.execute(
                    &st,
                    &[
                        &idem.scope,
                        &idem.fingerprint.as_slice(),
                        &i32::from(resp.status),
                        &headers,
                        &resp.body.as_ref(),
                        &req.now_ms,
                    ],
                )
                .await
                .map_err(pg_err)?;
            }
        }
        tx.commit().await.map_err(pg_err)?;
        Ok(Ok((WriteResult::Fresh(resp), touched)))
    }
}

type Tx<'a> = deadpool_postgres::Transaction<'a>;

/// Runs a product command: lock and load the aggregate (with the tenant's webhooks, in the same round trip),
/// apply the pure command, then save and put its events in the outbox (again in one round trip).
async fn execute(
    tx: &Tx<'_>,
    req: &WriteRequest,
    cmd: &dyn Command,
    ids: &dyn IdGen,
    touched: &mut bool,
) -> Result<Result<StoredResponse, CreateConflict>, StoreError> {
    let key: &AggregateKey = cmd.key();
    let load = tx
        .prepare_cached(SQL_LOAD_FOR_UPDATE)
        .await
        .map_err(pg_err)?;
    let hooks = tx.prepare_cached(SQL_TENANT_HOOKS).await.map_err(pg_err)?;
    let load_params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
        [&key.kind, &key.tenant, &key.id];
    let hook_params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&key.tenant];
    let (row, hook_rows) = futures::try_join!(
        tx.query_opt(&load, &load_params),
        tx.query(&hooks, &hook_params)
    )
    .map_err(pg_err)?;
    let current = match row {
        Some(r) => Some(cmd.decoder()(r.get::<_, &[u8]>(0)).map_err(StoreError)?),
        None => None,
    };
    let effect = cmd.apply(
        current.as_ref(),
        &Ctx {
            now_ms: req.now_ms,
            ids,
            request: &req.request,
        },
    );
    let hooks: Vec<(String, Vec<String>)> = hook_rows
        .iter()
        .map(|r| {
            let events: &str = r.get(1);
            (r.get(0), serde_json::from_str(events).unwrap_or_default())
        })
        .collect();
    let put_sql = match &effect.put {
        Some(p) if p.create => Some(SQL_CREATE),
        Some(_) => Some(SQL_UPSERT),
        None => None,
    };
    let ins = tx.prepare_cached(SQL_DELIVERY).await.map_err(pg_err)?;
    let put = match put_sql {
        Some(sql) => Some(tx.prepare_cached(sql).await.map_err(pg_err)?),
        None => None,
    };
    let deliveries: Vec<_> = fan_out(&hooks, &effect.events)
        .map(|(webhook_id, e)| {
            let webhook_id = webhook_id.to_owned();
            let ins = &ins;
            async move {
                tx.execute(
                    ins,
                    &[
                        &webhook_id,
                        &key.tenant,
                        &key.id,
                        &e.event_type,
                        &e.event_id,
                        &e.name,
                        &e.payload.as_ref(),
                        &req.now_ms,
                    ],
                )
                .await
            }
        })
        .collect();
    *touched |= !deliveries.is_empty();
    let saved = async {
        match (&put, &effect.put) {
            (Some(st), Some(p)) => tx
                .execute(
                    st,
                    &[
                        &key.kind,
                        &key.tenant,
                        &key.id,
                        &p.state,
                        &p.due_ms,
                        &p.data,
                        &req.now_ms,
                        &p.parent,
                    ],
                )
                .await
                .map(Some),
            _ => Ok(None),
        }
    };
    let (saved, _) =
        futures::try_join!(saved, futures::future::try_join_all(deliveries)).map_err(pg_err)?;
    if saved == Some(0) {
        return Ok(Err(CreateConflict));
    }
    Ok(Ok(effect.answer))
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

/// Applies a platform operation inside `tx`; the same semantics as the SQLite `apply`.
async fn apply(
    tx: &Tx<'_>,
    req: &WriteRequest,
    touched: &mut bool,
) -> Result<StoredResponse, StoreError> {
    let resp = match &req.op {
        Op::Execute(_) => {
            return Err(StoreError(
                "a command reached the platform operations".into(),
            ));
        }
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
                "DELETE FROM idempotency WHERE created_ms < $1",
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
            subject,
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
                    "INSERT INTO attempts (delivery_id, webhook_id, subject, at_ms, data) VALUES ($1, $2, $3, $4, $5)",
                    &[delivery_id, webhook_id, subject, at_ms, attempt],
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
        Op::Redeliver { delivery_id } => {
            let row = tx
                .query_opt(
                    "INSERT INTO deliveries (webhook_id, tenant, subject, event_type, event_id, event_name, payload, state, attempts, next_ms, created_ms)
                     SELECT webhook_id, tenant, subject, event_type, event_id, event_name, payload, 'pending', 0, $2, $2
                     FROM deliveries WHERE id = $1 AND webhook_id IN (SELECT id FROM webhooks)
                     RETURNING id",
                    &[delivery_id, &req.now_ms],
                )
                .await
                .map_err(pg_err)?;
            match row {
                Some(r) => {
                    *touched = true;
                    StoredResponse::json(
                        202,
                        &serde_json::json!({ "delivery_id": r.get::<_, i64>(0) }),
                    )
                }
                None => super::delivery_not_found(req, *delivery_id),
            }
        }
        Op::InitMeta { key, value } => {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
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
        Box::pin(async move {
            let req = match (&me.batcher, &req.op) {
                (Some(b), Op::Execute(_)) => match b.submit(req).await {
                    Ok(r) => return r,
                    Err(req) => req,
                },
                _ => req,
            };
            me.do_write(&req).await
        })
    }

    fn aggregate(
        &self,
        key: &AggregateKey,
        decoder: Decoder,
    ) -> BoxFut<'static, Result<Option<Decoded>, StoreError>> {
        let pool = self.pool.clone();
        let key = key.clone();
        Box::pin(async move {
            let c = pool.get().await.map_err(pool_err)?;
            let st = c
                .prepare_cached(
                    "SELECT data FROM aggregates WHERE kind = $1 AND tenant = $2 AND id = $3",
                )
                .await
                .map_err(pg_err)?;
            let row = c
                .query_opt(&st, &[&key.kind, &key.tenant, &key.id])
                .await
                .map_err(pg_err)?;
            row.map(|r| decoder(r.get::<_, &[u8]>(0)).map_err(StoreError))
                .transpose()
        })
    }

    fn due(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> BoxFut<'static, Result<Vec<DueAggregate>, StoreError>> {
        let pool = self.pool.clone();
        Box::pin(async move {
            let c = pool.get().await.map_err(pool_err)?;
            let rows = c
                .query(
                    "SELECT kind, tenant, id FROM aggregates WHERE due_ms IS NOT NULL AND due_ms <= $1 ORDER BY due_ms LIMIT $2",
                    &[&now_ms, &(limit as i64)],
                )
                .await
                .map_err(pg_err)?;
            Ok(rows
                .iter()
                .map(|r| DueAggregate {
                    kind: r.get(0),
                    tenant: r.get(1),
                    id: r.get(2),
                })
                .collect())
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
        after_id: i64,
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
                    SELECT DISTINCT ON (webhook_id, tenant, subject) id
                    FROM deliveries WHERE state = 'pending'
                    ORDER BY webhook_id, tenant, subject, id
                 ), picked AS (
                    SELECT d.id FROM deliveries d JOIN heads h ON h.id = d.id
                    WHERE d.state = 'pending' AND d.next_ms <= $1 AND d.id > $5
                      AND (d.lease_until IS NULL OR d.lease_until < {DB_NOW_MS})
                    ORDER BY d.id LIMIT $2
                    FOR UPDATE OF d SKIP LOCKED
                 )
                 UPDATE deliveries d SET lease_owner = $3, lease_until = {DB_NOW_MS} + $4
                 FROM picked, webhooks w
                 WHERE d.id = picked.id AND w.id = d.webhook_id
                 RETURNING d.id, d.webhook_id, d.tenant, d.subject, d.event_type, d.event_id, w.url, w.secret,
                           d.payload, d.attempts, d.first_attempt_ms, d.event_name"
            );
            let st = c.prepare_cached(&sql).await.map_err(pg_err)?;
            let rows = c
                .query(&st, &[&now_ms, &(limit as i64), &owner, &lease, &after_id])
                .await
                .map_err(pg_err)?;
            let mut out: Vec<DueDelivery> = rows
                .iter()
                .map(|r| DueDelivery {
                    id: r.get(0),
                    webhook_id: r.get(1),
                    tenant: r.get(2),
                    subject: r.get(3),
                    event_type: r.get(4),
                    event_id: r.get(5),
                    url: r.get(6),
                    secret: r.get(7),
                    payload: r.get::<_, Vec<u8>>(8).into(),
                    attempts: r.get::<_, i32>(9) as u32,
                    first_attempt_ms: r.get(10),
                    event_name: r.get(11),
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
                    "SELECT data FROM attempts WHERE ($1::text IS NULL OR subject = $1) AND ($2::text IS NULL OR webhook_id = $2)
                     ORDER BY id DESC",
                    &[&f.reference, &f.webhook_id],
                )
                .await
                .map_err(pg_err)?;
            Ok(super::filter_attempts(
                rows.iter().map(|r| r.get::<_, String>(0)),
                &f,
            ))
        })
    }

    fn list_aggregates(
        &self,
        q: &AggregateQuery,
    ) -> BoxFut<'static, Result<Vec<AggregateRow>, StoreError>> {
        let pool = self.pool.clone();
        let q = q.clone();
        Box::pin(async move {
            let c = pool.get().await.map_err(pool_err)?;
            // Only the conditions in use, so the planner can take the matching index.
            let mut sql = String::from(
                "SELECT tenant, id, state, created_ms, data FROM aggregates WHERE kind = $1",
            );
            let mut args: Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>> =
                vec![Box::new(q.kind.clone())];
            let mut arg =
                |sql: &mut String,
                 cond: &str,
                 v: Box<dyn tokio_postgres::types::ToSql + Sync + Send>| {
                    args.push(v);
                    sql.push_str(&cond.replace('?', &format!("${}", args.len())));
                };
            if let Some(st) = &q.state {
                arg(&mut sql, " AND state = ?", Box::new(st.clone()));
            }
            if let Some(t) = &q.tenant {
                arg(&mut sql, " AND tenant = ?", Box::new(t.clone()));
            }
            if let Some(p) = &q.parent {
                arg(&mut sql, " AND parent = ?", Box::new(p.clone()));
            }
            if let Some(p) = &q.id_prefix {
                arg(&mut sql, " AND starts_with(id, ?)", Box::new(p.clone()));
            }
            if let Some(ms) = q.created_from_ms {
                arg(&mut sql, " AND created_ms >= ?", Box::new(ms));
            }
            if let Some(ms) = q.created_to_ms {
                arg(&mut sql, " AND created_ms < ?", Box::new(ms));
            }
            if let Some((ms, t, i)) = &q.after {
                arg(
                    &mut sql,
                    " AND (created_ms, tenant, id) < (?",
                    Box::new(*ms),
                );
                arg(&mut sql, ", ?", Box::new(t.clone()));
                arg(&mut sql, ", ?)", Box::new(i.clone()));
            }
            arg(
                &mut sql,
                " ORDER BY created_ms DESC, tenant DESC, id DESC LIMIT ?",
                Box::new(q.limit as i64),
            );
            let st = c.prepare_cached(&sql).await.map_err(pg_err)?;
            let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = args
                .iter()
                .map(|a| a.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync))
                .collect();
            let rows = c.query(&st, &params).await.map_err(pg_err)?;
            Ok(rows
                .iter()
                .map(|r| AggregateRow {
                    tenant: r.get(0),
                    id: r.get(1),
                    state: r.get(2),
                    created_ms: r.get(3),
                    data: r.get(4),
                })
                .collect())
        })
    }

    fn counts(&self) -> BoxFut<'static, Result<Counts, StoreError>> {
        let pool = self.pool.clone();
        Box::pin(async move {
            let c = pool.get().await.map_err(pool_err)?;
            let kinds = c
                .query(
                    "SELECT kind, count(*) FROM aggregates GROUP BY kind ORDER BY kind",
                    &[],
                )
                .await
                .map_err(pg_err)?;
            let row = c
                .query_one(
                    "SELECT (SELECT count(*) FROM idempotency), (SELECT count(*) FROM webhooks)",
                    &[],
                )
                .await
                .map_err(pg_err)?;
            Ok(Counts {
                aggregates: kinds
                    .iter()
                    .map(|r| (r.get(0), r.get::<_, i64>(1) as u64))
                    .collect(),
                idempotency: row.get::<_, i64>(0) as u64,
                webhooks: row.get::<_, i64>(1) as u64,
            })
        })
    }

    fn state_counts(&self) -> BoxFut<'static, Result<StateCounts, StoreError>> {
        let pool = self.pool.clone();
        Box::pin(async move {
            let c = pool.get().await.map_err(pool_err)?;
            let rows = c
                .query(
                    "SELECT kind, state, count(*) FROM aggregates GROUP BY kind, state",
                    &[],
                )
                .await
                .map_err(pg_err)?;
            Ok(rows
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get::<_, i64>(2) as u64))
                .collect())
        })
    }

    fn on_commit(&self, hook: super::CommitHook) {
        let _ = self.commit_hook.set(hook);
    }

    fn shared(&self) -> bool {
        true
    }

    fn export_state(&self) -> BoxFut<'static, Result<super::dump::StateDump, StoreError>> {
        let pool = self.pool.clone();
        Box::pin(async move { dump::export(&pool).await })
    }

    fn import_state(
        &self,
        state: super::dump::StateDump,
    ) -> BoxFut<'static, Result<(), StoreError>> {
        let pool = self.pool.clone();
        Box::pin(async move { dump::import(&pool, &state).await })
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
            batcher: self.batcher.clone(),
            commit_hook: self.commit_hook.clone(),
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
