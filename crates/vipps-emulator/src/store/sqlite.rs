//! The embedded SQLite backend: one writer thread with group commit, a pool of reader connections, WAL mode.
//!
//! Writes queue to the writer thread, which takes every queued write (up to a batch limit) into one
//! transaction, each in its own savepoint, commits once, and only then answers them. With
//! [`Durability::Fsync`] a commit is on disk before any write in it is acknowledged.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;

use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use super::answers::{
    apply_to_payment, missing_payment, reference_exists, too_many_webhooks, webhook_not_found,
};
use super::{
    AttemptFilter, BoxFut, DeliveryOutcome, DueDelivery, Op, Store, StoreError, WebhookRow,
    WriteRequest, WriteResult,
};
use crate::config::Durability;
use crate::domain::{Ctx, Payment};
use crate::ids::IdGen;
use crate::render::{self, StoredResponse};

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS payments (
    msn TEXT NOT NULL,
    reference TEXT NOT NULL,
    state TEXT NOT NULL,
    due_ms INTEGER,
    data BLOB NOT NULL,
    PRIMARY KEY (msn, reference)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS payments_due ON payments (due_ms) WHERE due_ms IS NOT NULL;
CREATE TABLE IF NOT EXISTS idempotency (
    scope TEXT PRIMARY KEY,
    fingerprint BLOB NOT NULL,
    status INTEGER NOT NULL,
    headers TEXT NOT NULL,
    body BLOB NOT NULL,
    created_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idempotency_created ON idempotency (created_ms);
CREATE TABLE IF NOT EXISTS webhooks (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    secret TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    failing_since_ms INTEGER,
    last_success_ms INTEGER
);
CREATE TABLE IF NOT EXISTS partner_owners (msn TEXT NOT NULL, owner TEXT NOT NULL, PRIMARY KEY (msn, owner)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_id TEXT NOT NULL,
    msn TEXT NOT NULL,
    reference TEXT NOT NULL,
    event_type TEXT NOT NULL,
    event_id TEXT NOT NULL,
    payload BLOB NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    first_attempt_ms INTEGER,
    next_ms INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    done_ms INTEGER
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (next_ms) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_order ON deliveries (webhook_id, msn, reference, id) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_done ON deliveries (done_ms) WHERE state <> 'pending';
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id INTEGER NOT NULL,
    webhook_id TEXT NOT NULL,
    reference TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS attempts_reference ON attempts (reference);
CREATE INDEX IF NOT EXISTS attempts_at ON attempts (at_ms);
CREATE INDEX IF NOT EXISTS webhooks_owner ON webhooks (owner);
"#;

/// Payments kept in the read cache.
const PAYMENT_CACHE_CAPACITY: usize = 20_000;

/// The largest number of writes committed together.
const MAX_BATCH: usize = 512;

struct Job {
    req: WriteRequest,
    reply: oneshot::Sender<Result<WriteResult, StoreError>>,
}

/// The SQLite store.
pub struct SqliteStore {
    cache: Arc<PaymentCache>,
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    readers: Mutex<Vec<Connection>>,
    path: PathBuf,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    _tempdir: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

fn open(path: &Path, durability: Durability) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(err)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(err)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(err)?;
    let sync = match durability {
        Durability::Fsync => "FULL",
        Durability::Process => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", sync).map_err(err)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(err)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) `vipps-emulator.sqlite3` in `dir`.
    pub fn open_dir(
        dir: &Path,
        durability: Durability,
        ids: Arc<dyn IdGen>,
        outbox: Arc<tokio::sync::Notify>,
    ) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError(format!("cannot create {}: {e}", dir.display())))?;
        Self::open_file(
            dir.join("vipps-emulator.sqlite3"),
            durability,
            ids,
            None,
            outbox,
        )
    }

    /// A throwaway store in a temporary directory (RAM-backed `/dev/shm` where it exists), deleted on drop.
    pub fn ephemeral(
        ids: Arc<dyn IdGen>,
        outbox: Arc<tokio::sync::Notify>,
    ) -> Result<Self, StoreError> {
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::Builder::new()
                .prefix("vipps-emulator-")
                .tempdir_in(shm)
        } else {
            tempfile::Builder::new().prefix("vipps-emulator-").tempdir()
        }
        .map_err(err)?;
        let path = dir.path().join("vipps-emulator.sqlite3");
        Self::open_file(path, Durability::Process, ids, Some(dir), outbox)
    }

    fn open_file(
        path: PathBuf,
        durability: Durability,
        ids: Arc<dyn IdGen>,
        tempdir: Option<tempfile::TempDir>,
        outbox: Arc<tokio::sync::Notify>,
    ) -> Result<Self, StoreError> {
        let conn = open(&path, durability)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        let cache = Arc::new(PaymentCache::new(PAYMENT_CACHE_CAPACITY));
        let (tx, rx) = mpsc::channel::<Job>();
        let writer = std::thread::Builder::new()
            .name("vipps-emulator-writer".into())
            .spawn({
                let cache = cache.clone();
                move || writer_loop(conn, rx, ids, outbox, cache)
            })
            .map_err(err)?;
        Ok(SqliteStore {
            cache,
            tx: Mutex::new(Some(tx)),
            readers: Mutex::new(Vec::new()),
            path,
            writer: Mutex::new(Some(writer)),
            _tempdir: tempdir,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops the writer after the queued writes are done.
    pub fn close(&self) {
        self.tx.lock().take();
        if let Some(h) = self.writer.lock().take() {
            let _ = h.join();
        }
    }

    fn with_reader<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let conn = match self.readers.lock().pop() {
            Some(c) => c,
            None => {
                let c = Connection::open(&self.path).map_err(err)?;
                c.busy_timeout(std::time::Duration::from_secs(10))
                    .map_err(err)?;
                c.set_prepared_statement_cache_capacity(32);
                c
            }
        };
        let out = f(&conn).map_err(err);
        let mut readers = self.readers.lock();
        if readers.len() < 16 {
            readers.push(conn);
        }
        out
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.close();
    }
}

impl Store for SqliteStore {
    fn write(&self, req: WriteRequest) -> BoxFut<'static, Result<WriteResult, StoreError>> {
        let (reply, rx) = oneshot::channel();
        let sent = match self.tx.lock().as_ref() {
            Some(tx) => tx
                .send(Job { req, reply })
                .map_err(|_| StoreError("the store is closed".into())),
            None => Err(StoreError("the store is closed".into())),
        };
        Box::pin(async move {
            sent?;
            rx.await
                .map_err(|_| StoreError("the writer stopped".into()))?
        })
    }

    fn payment(
        &self,
        msn: &str,
        reference: &str,
    ) -> BoxFut<'static, Result<Option<Arc<Payment>>, StoreError>> {
        if let Some(p) = self.cache.get(msn, reference) {
            return Box::pin(async move { Ok(Some(p)) });
        }
        let epoch = self.cache.epoch.load(std::sync::atomic::Ordering::Acquire);
        let r = self.with_reader(|c| {
            c.prepare_cached("SELECT data FROM payments WHERE msn = ?1 AND reference = ?2")?
                .query_row(params![msn, reference], |row| row.get::<_, Vec<u8>>(0))
                .optional()
        });
        let r = r.and_then(|o| {
            o.map(|d| {
                serde_json::from_slice::<Payment>(&d)
                    .map(Arc::new)
                    .map_err(err)
            })
            .transpose()
        });
        if let Ok(Some(p)) = &r {
            // Only when no batch committed meanwhile, so an older read never replaces a newer write.
            if self.cache.epoch.load(std::sync::atomic::Ordering::Acquire) == epoch {
                self.cache.insert(p.clone(), true);
            }
        }
        Box::pin(async move { r })
    }

    fn due_payments(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> BoxFut<'static, Result<Vec<(String, String)>, StoreError>> {
        let r = self.with_reader(|c| {
            let mut st = c.prepare_cached(
                "SELECT msn, reference FROM payments WHERE due_ms IS NOT NULL AND due_ms <= ?1 ORDER BY due_ms LIMIT ?2",
            )?;
            let rows = st.query_map(params![now_ms, limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        });
        Box::pin(async move { r })
    }

    fn webhooks(&self, owner: &str) -> BoxFut<'static, Result<Vec<WebhookRow>, StoreError>> {
        let r = self.with_reader(|c| {
            let mut st = c.prepare_cached(
                "SELECT id, owner, url, events, secret, created_ms FROM webhooks WHERE owner = ?1 ORDER BY created_ms, id",
            )?;
            let rows = st.query_map(params![owner], webhook_row)?;
            rows.collect()
        });
        Box::pin(async move { r })
    }

    fn meta(&self, key: &str) -> BoxFut<'static, Result<Option<String>, StoreError>> {
        let r = self.with_reader(|c| {
            c.prepare_cached("SELECT value FROM meta WHERE key = ?1")?
                .query_row(params![key], |r| r.get(0))
                .optional()
        });
        Box::pin(async move { r })
    }

    fn due_deliveries(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> BoxFut<'static, Result<Vec<DueDelivery>, StoreError>> {
        let r = self.with_reader(|c| {
            let mut st = c.prepare_cached(
                "SELECT d.id, d.webhook_id, d.msn, d.reference, d.event_type, d.event_id, w.url, w.secret, d.payload,
                        d.attempts, d.first_attempt_ms
                 FROM deliveries d JOIN webhooks w ON w.id = d.webhook_id
                 WHERE d.state = 'pending' AND d.next_ms <= ?1
                   AND NOT EXISTS (SELECT 1 FROM deliveries e WHERE e.state = 'pending' AND e.webhook_id = d.webhook_id
                                   AND e.msn = d.msn AND e.reference = d.reference AND e.id < d.id)
                 ORDER BY d.id LIMIT ?2",
            )?;
            let rows = st.query_map(params![now_ms, limit as i64], |r| {
                Ok(DueDelivery {
                    id: r.get(0)?,
                    webhook_id: r.get(1)?,
                    msn: r.get(2)?,
                    reference: r.get(3)?,
                    event_type: r.get(4)?,
                    event_id: r.get(5)?,
                    url: r.get(6)?,
                    secret: r.get(7)?,
                    payload: r.get::<_, Vec<u8>>(8)?.into(),
                    attempts: r.get(9)?,
                    first_attempt_ms: r.get(10)?,
                })
            })?;
            rows.collect()
        });
        Box::pin(async move { r })
    }

    fn next_delivery_ms(&self) -> BoxFut<'static, Result<Option<i64>, StoreError>> {
        let r = self.with_reader(|c| {
            c.prepare_cached("SELECT min(next_ms) FROM deliveries WHERE state = 'pending'")?
                .query_row([], |r| r.get(0))
        });
        Box::pin(async move { r })
    }

    fn attempts(
        &self,
        f: &AttemptFilter,
    ) -> BoxFut<'static, Result<Vec<serde_json::Value>, StoreError>> {
        let f = f.clone();
        let r = self.with_reader(|c| {
            let mut st = c.prepare_cached(
                "SELECT data FROM attempts WHERE (?1 IS NULL OR reference = ?1) AND (?2 IS NULL OR webhook_id = ?2)
                 ORDER BY id DESC",
            )?;
            let rows = st.query_map(params![f.reference, f.webhook_id], |r| r.get::<_, String>(0))?;
            let limit = f.limit.unwrap_or(100);
            let mut out = Vec::new();
            for row in rows {
                let v: serde_json::Value = serde_json::from_str(&row?).unwrap_or_default();
                if let Some(ev) = &f.event {
                    let matches = v["event"].as_str() == Some(ev.as_str())
                        || v["event_name"].as_str().is_some_and(|n| n.eq_ignore_ascii_case(ev));
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
        });
        Box::pin(async move { r })
    }

    fn counts(&self) -> BoxFut<'static, Result<(u64, u64, u64), StoreError>> {
        let r = self.with_reader(|c| {
            let n = |sql: &str| {
                c.query_row(sql, [], |r| r.get::<_, i64>(0))
                    .map(|v| v as u64)
            };
            Ok((
                n("SELECT count(*) FROM payments")?,
                n("SELECT count(*) FROM idempotency")?,
                n("SELECT count(*) FROM webhooks")?,
            ))
        });
        Box::pin(async move { r })
    }
}

fn webhook_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<WebhookRow> {
    let events: String = r.get(3)?;
    Ok(WebhookRow {
        id: r.get(0)?,
        owner: r.get(1)?,
        url: r.get(2)?,
        events: serde_json::from_str(&events).unwrap_or_default(),
        secret: r.get(4)?,
        created_ms: r.get(5)?,
    })
}

fn writer_loop(
    mut conn: Connection,
    rx: mpsc::Receiver<Job>,
    ids: Arc<dyn IdGen>,
    outbox: Arc<tokio::sync::Notify>,
    cache: Arc<PaymentCache>,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = Vec::with_capacity(64);
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let mut results: Vec<Result<WriteResult, StoreError>> = Vec::with_capacity(batch.len());
        let committed = (|| -> rusqlite::Result<()> {
            let mut tx =
                conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            for job in &batch {
                let mut sp = tx.savepoint()?;
                let mark = PENDING_CACHE.with(|pc| pc.borrow().len());
                match apply(&sp, &job.req, ids.as_ref()) {
                    Ok(r) => {
                        sp.commit()?;
                        results.push(Ok(r));
                    }
                    Err(e) => {
                        sp.rollback()?;
                        drop(sp);
                        PENDING_CACHE.with(|pc| pc.borrow_mut().truncate(mark));
                        results.push(Err(err(e)));
                    }
                }
            }
            tx.commit()
        })();
        let touched = OUTBOX_TOUCHED.with(|t| t.replace(false));
        let saved = PENDING_CACHE.with(|pc| std::mem::take(&mut *pc.borrow_mut()));
        match committed {
            Ok(()) => {
                cache.publish(saved);
                for (job, r) in batch.into_iter().zip(results) {
                    let _ = job.reply.send(r);
                }
                if touched {
                    outbox.notify_one();
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "commit failed; {} writes are not acknowledged", batch.len());
                for job in batch {
                    let _ = job.reply.send(Err(err(&e)));
                }
            }
        }
    }
}

fn load(c: &Connection, msn: &str, reference: &str) -> rusqlite::Result<Option<Payment>> {
    let data: Option<Vec<u8>> = c
        .prepare_cached("SELECT data FROM payments WHERE msn = ?1 AND reference = ?2")?
        .query_row(params![msn, reference], |r| r.get(0))
        .optional()?;
    data.map(|d| {
        serde_json::from_slice(&d).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
    })
    .transpose()
}

thread_local! {
    /// Set when a write in the current batch touched the delivery outbox (the writer then wakes the dispatcher).
    static OUTBOX_TOUCHED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Payments saved in the current batch, published to the read cache once the batch commits.
    static PENDING_CACHE: std::cell::RefCell<Vec<Arc<Payment>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A bounded cache of payments for reads, filled by the writer after each commit and by readers on a miss.
#[derive(Debug, Default)]
pub struct PaymentCache {
    map: parking_lot::RwLock<std::collections::HashMap<String, Arc<Payment>>>,
    order: Mutex<std::collections::VecDeque<String>>,
    capacity: usize,
    epoch: std::sync::atomic::AtomicU64,
}

fn cache_key(msn: &str, reference: &str) -> String {
    let mut k = String::with_capacity(msn.len() + reference.len() + 1);
    k.push_str(msn);
    k.push('/');
    k.push_str(reference);
    k
}

impl PaymentCache {
    fn new(capacity: usize) -> Self {
        PaymentCache {
            capacity,
            ..Default::default()
        }
    }

    fn get(&self, msn: &str, reference: &str) -> Option<Arc<Payment>> {
        self.map.read().get(&cache_key(msn, reference)).cloned()
    }

    fn insert(&self, p: Arc<Payment>, only_if_absent: bool) {
        if self.capacity == 0 {
            return;
        }
        let key = cache_key(&p.msn, &p.reference);
        let mut map = self.map.write();
        if only_if_absent && map.contains_key(&key) {
            return;
        }
        if map.insert(key.clone(), p).is_none() {
            let mut order = self.order.lock();
            order.push_back(key);
            while order.len() > self.capacity {
                if let Some(old) = order.pop_front() {
                    map.remove(&old);
                }
            }
        }
    }

    /// Publishes what a committed batch saved.
    fn publish(&self, saved: Vec<Arc<Payment>>) {
        for p in saved {
            self.insert(p, false);
        }
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }
}

fn to_sql_err(e: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(e))
}

/// Saves a payment and, in the same transaction, puts its new events (`events[before..]`) in the delivery outbox
/// for every matching webhook registration of its sales unit (and of partners acting for it).
/// With `create`, nothing is written when the reference exists, and `false` is returned.
fn save(
    c: &Connection,
    p: &Payment,
    before: usize,
    now_ms: i64,
    create: bool,
) -> rusqlite::Result<bool> {
    let data = serde_json::to_vec(p).map_err(to_sql_err)?;
    let sql = if create {
        "INSERT INTO payments (msn, reference, state, due_ms, data) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (msn, reference) DO NOTHING"
    } else {
        "INSERT INTO payments (msn, reference, state, due_ms, data) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (msn, reference) DO UPDATE SET state = excluded.state, due_ms = excluded.due_ms, data = excluded.data"
    };
    let n = c.prepare_cached(sql)?.execute(params![
        p.msn,
        p.reference,
        p.state.as_str(),
        p.due_ms(),
        data
    ])?;
    if n == 0 {
        return Ok(false);
    }
    PENDING_CACHE.with(|pc| pc.borrow_mut().push(Arc::new(p.clone())));
    let new_events = p.events.get(before..).unwrap_or_default();
    if new_events.is_empty() {
        return Ok(true);
    }
    let hooks: Vec<(String, String)> = c
        .prepare_cached(
            "SELECT id, events FROM webhooks WHERE owner = 'msn:' || ?1
             OR owner IN (SELECT owner FROM partner_owners WHERE msn = ?1) ORDER BY created_ms, id",
        )?
        .query_map(params![p.msn], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    if hooks.is_empty() {
        return Ok(true);
    }
    for e in new_events {
        let event_type = vipps_types::epayment::PaymentEventName::from_wire(e.name.as_str())
            .webhook_event_type();
        let payload = serde_json::to_vec(&render::webhook_event(p, e)).map_err(to_sql_err)?;
        for (id, events) in &hooks {
            let subscribed: Vec<String> = serde_json::from_str(events).unwrap_or_default();
            if !subscribed.contains(&event_type) {
                continue;
            }
            c.prepare_cached(
                "INSERT INTO deliveries (webhook_id, msn, reference, event_type, event_id, payload, state, attempts, next_ms, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', 0, ?7, ?7)",
            )?
            .execute(params![id, p.msn, p.reference, event_type, e.psp, payload, now_ms])?;
            OUTBOX_TOUCHED.with(|t| t.set(true));
        }
    }
    Ok(true)
}

/// Ends the pending deliveries of a webhook that no longer exists.
fn fail_pending(c: &Connection, webhook_id: &str, now_ms: i64) -> rusqlite::Result<()> {
    c.prepare_cached("UPDATE deliveries SET state = 'failed', done_ms = ?2 WHERE webhook_id = ?1 AND state = 'pending'")?
        .execute(params![webhook_id, now_ms])?;
    Ok(())
}

/// Applies one write inside the current transaction (savepoint).
fn apply(c: &Connection, req: &WriteRequest, ids: &dyn IdGen) -> rusqlite::Result<WriteResult> {
    if let Some(idem) = &req.idem {
        let row: Option<(Vec<u8>, u16, String, Vec<u8>)> = c
            .prepare_cached(
                "SELECT fingerprint, status, headers, body FROM idempotency WHERE scope = ?1",
            )?
            .query_row(params![idem.scope], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()?;
        if let Some((fp, status, headers, body)) = row {
            if fp.as_slice() != idem.fingerprint.as_slice() {
                return Ok(WriteResult::Mismatch(idem.mismatch_code));
            }
            let headers: Vec<(String, String)> = serde_json::from_str(&headers).unwrap_or_default();
            return Ok(WriteResult::Replayed(StoredResponse {
                status,
                headers,
                body: body.into(),
            }));
        }
    }
    let new_psp = || ids.psp_reference();
    let ctx = Ctx {
        now_ms: req.now_ms,
        new_psp: &new_psp,
    };
    let resp = match &req.op {
        Op::CreatePayment(p) => {
            if save(c, p, 0, req.now_ms, true)? {
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
        | Op::Settle { msn, reference } => match load(c, msn, reference)? {
            None => missing_payment(req, reference),
            Some(mut p) => {
                let before = p.events.len();
                let (changed, resp) = apply_to_payment(req, &mut p, &ctx);
                if changed {
                    save(c, &p, before, req.now_ms, false)?;
                }
                resp
            }
        },
        Op::RegisterWebhook { row, max_per_event } => {
            let existing: Vec<WebhookRow> = c
                .prepare_cached("SELECT id, owner, url, events, secret, created_ms FROM webhooks WHERE owner = ?1")?
                .query_map(params![row.owner], webhook_row)?
                .collect::<rusqlite::Result<_>>()?;
            let full = row.events.iter().find(|ev| {
                existing.iter().filter(|w| w.events.contains(ev)).count() >= *max_per_event
            });
            match full {
                Some(ev) => too_many_webhooks(req, *max_per_event, ev),
                None => {
                    let events = serde_json::to_string(&row.events).unwrap_or_default();
                    c.prepare_cached(
                        "INSERT INTO webhooks (id, owner, url, events, secret, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )?
                    .execute(params![row.id, row.owner, row.url, events, row.secret, row.created_ms])?;
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
            let owned: bool = c
                .prepare_cached("SELECT 1 FROM webhooks WHERE owner = ?1 AND id = ?2")?
                .query_row(params![owner, id], |_| Ok(()))
                .optional()?
                .is_some();
            if owned {
                fail_pending(c, id, req.now_ms)?;
            }
            let n = c
                .prepare_cached("DELETE FROM webhooks WHERE owner = ?1 AND id = ?2")?
                .execute(params![owner, id])?;
            if n == 0 {
                webhook_not_found(req, id)
            } else {
                StoredResponse::empty(204)
            }
        }
        Op::PurgeIdempotency { before_ms } => {
            c.prepare_cached("DELETE FROM idempotency WHERE created_ms < ?1")?
                .execute(params![before_ms])?;
            StoredResponse::empty(204)
        }
        Op::SetPartnerOwners { pairs } => {
            c.execute("DELETE FROM partner_owners", [])?;
            for (msn, owner) in pairs {
                c.prepare_cached(
                    "INSERT OR IGNORE INTO partner_owners (msn, owner) VALUES (?1, ?2)",
                )?
                .execute(params![msn, owner])?;
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
            c.prepare_cached(
                "INSERT INTO attempts (delivery_id, webhook_id, reference, at_ms, data) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![delivery_id, webhook_id, reference, at_ms, attempt])?;
            let (state, next, done): (&str, Option<i64>, Option<i64>) = match outcome {
                DeliveryOutcome::Delivered => ("delivered", None, Some(*at_ms)),
                DeliveryOutcome::Retry { next_ms } => ("pending", Some(*next_ms), None),
                DeliveryOutcome::GiveUp => ("failed", None, Some(*at_ms)),
            };
            c.prepare_cached(
                "UPDATE deliveries SET attempts = attempts + 1, first_attempt_ms = coalesce(first_attempt_ms, ?2),
                 state = ?3, next_ms = coalesce(?4, next_ms), done_ms = ?5 WHERE id = ?1 AND state = 'pending'",
            )?
            .execute(params![delivery_id, at_ms, state, next, done])?;
            if *outcome == DeliveryOutcome::Delivered {
                c.prepare_cached("UPDATE webhooks SET last_success_ms = ?2, failing_since_ms = NULL WHERE id = ?1")?
                    .execute(params![webhook_id, at_ms])?;
            } else {
                c.prepare_cached(
                    "UPDATE webhooks SET failing_since_ms = coalesce(failing_since_ms, ?2) WHERE id = ?1",
                )?
                .execute(params![webhook_id, at_ms])?;
            }
            OUTBOX_TOUCHED.with(|t| t.set(true));
            StoredResponse::empty(204)
        }
        Op::RemoveUnresponsive { before_ms } => {
            let ids: Vec<String> = c
                .prepare_cached("SELECT id FROM webhooks WHERE failing_since_ms IS NOT NULL AND failing_since_ms <= ?1")?
                .query_map(params![before_ms], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            for id in &ids {
                tracing::info!(webhook_id = %id, "removing a webhook that has been unresponsive for too long");
                fail_pending(c, id, req.now_ms)?;
                c.prepare_cached("DELETE FROM webhooks WHERE id = ?1")?
                    .execute(params![id])?;
            }
            StoredResponse::empty(204)
        }
        Op::PurgeDeliveries { before_ms } => {
            c.prepare_cached("DELETE FROM deliveries WHERE state <> 'pending' AND done_ms < ?1")?
                .execute(params![before_ms])?;
            c.prepare_cached("DELETE FROM attempts WHERE at_ms < ?1")?
                .execute(params![before_ms])?;
            StoredResponse::empty(204)
        }
        Op::AdvanceClock { ms } => {
            let offset: i64 = c
                .prepare_cached(
                    "INSERT INTO meta (key, value) VALUES ('clock_offset_ms', CAST(?1 AS TEXT))
                     ON CONFLICT (key) DO UPDATE SET value = CAST(CAST(value AS INTEGER) + ?1 AS TEXT) RETURNING CAST(value AS INTEGER)",
                )?
                .query_row(params![ms], |r| r.get(0))?;
            StoredResponse::json(200, &serde_json::json!({ "offset_ms": offset }))
        }
        Op::SetMeta { key, value } => {
            c.prepare_cached("INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value")?
                .execute(params![key, value])?;
            StoredResponse::empty(204)
        }
    };
    if let Some(idem) = &req.idem {
        // 2xx and 4xx outcomes are the answer for the key; 5xx are not stored so a retry executes again.
        if resp.status < 500 {
            let headers = serde_json::to_string(&resp.headers).unwrap_or_else(|_| "[]".into());
            c.prepare_cached(
                "INSERT INTO idempotency (scope, fingerprint, status, headers, body, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![idem.scope, idem.fingerprint.as_slice(), resp.status, headers, resp.body.as_ref(), req.now_ms])?;
        }
    }
    Ok(WriteResult::Fresh(resp))
}
