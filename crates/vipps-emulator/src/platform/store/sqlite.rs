//! The embedded SQLite backend: one writer thread with group commit, a pool of reader connections, WAL mode.
//!
//! Writes queue to the writer thread, which takes every queued write (up to a batch limit) into one
//! transaction, each in its own savepoint, commits once, and only then answers them. With
//! [`Durability::Fsync`] a commit is on disk before any write in it is acknowledged. Reads that miss the
//! aggregate cache run on tokio's blocking pool, never on the async workers.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;

use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use super::{
    AggregateQuery, AggregateRow, AttemptFilter, BoxFut, CREATE_ATTEMPTS, Counts, DeliveryOutcome,
    DueAggregate, DueDelivery, Op, StateCounts, Store, StoreError, WebhookRow, WriteRequest,
    WriteResult, fan_out, stored_answer, too_many_webhooks, webhook_not_found,
};
use crate::config::Durability;
use crate::platform::aggregate::{AggregateKey, Ctx, Decoded, Decoder};
use crate::platform::http::StoredResponse;
use crate::platform::ids::IdGen;

mod dump;

/// The schema of a new database (version [`SCHEMA_VERSION`], kept in `PRAGMA user_version`).
const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS aggregates (
    kind TEXT NOT NULL,
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    state TEXT NOT NULL,
    due_ms INTEGER,
    data BLOB NOT NULL,
    created_ms INTEGER NOT NULL DEFAULT 0,
    parent TEXT,
    PRIMARY KEY (kind, tenant, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS aggregates_parent ON aggregates (kind, tenant, parent, created_ms, id) WHERE parent IS NOT NULL;
CREATE INDEX IF NOT EXISTS aggregates_due ON aggregates (due_ms) WHERE due_ms IS NOT NULL;
CREATE INDEX IF NOT EXISTS aggregates_created ON aggregates (kind, created_ms, tenant, id);
CREATE INDEX IF NOT EXISTS aggregates_state_created ON aggregates (kind, state, created_ms, tenant, id);
CREATE INDEX IF NOT EXISTS aggregates_id ON aggregates (kind, id);
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
    tenant TEXT NOT NULL,
    subject TEXT NOT NULL,
    event_type TEXT NOT NULL,
    event_id TEXT NOT NULL,
    payload BLOB NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    first_attempt_ms INTEGER,
    next_ms INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    done_ms INTEGER,
    event_name TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (next_ms) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_order ON deliveries (webhook_id, tenant, subject, id) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_done ON deliveries (done_ms) WHERE state <> 'pending';
CREATE INDEX IF NOT EXISTS deliveries_pending ON deliveries (id) WHERE state = 'pending';
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id INTEGER NOT NULL,
    webhook_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS attempts_subject ON attempts (subject);
CREATE INDEX IF NOT EXISTS attempts_at ON attempts (at_ms);
CREATE INDEX IF NOT EXISTS webhooks_owner ON webhooks (owner);
"#;

/// The schema version this code writes.
const SCHEMA_VERSION: i64 = 4;

/// From version 3: aggregates may name the aggregate they belong to (listed by it).
const MIGRATE_V3: &str = "ALTER TABLE aggregates ADD COLUMN parent TEXT;";

/// From version 2: aggregates get their creation time (for the dashboard's lists, newest first, and their time
/// filter), taken from the documents that carry one.
const MIGRATE_V2: &str = r#"
ALTER TABLE aggregates ADD COLUMN created_ms INTEGER NOT NULL DEFAULT 0;
UPDATE aggregates SET created_ms = coalesce(json_extract(CAST(data AS TEXT), '$.created_ms'), 0)
    WHERE json_valid(CAST(data AS TEXT));
"#;

/// From version 1, whose only aggregates were ePayment payments in a table of their own (the one place the store
/// names a product: the data of that version has to go somewhere).
const MIGRATE_V1: &str = r#"
CREATE TABLE aggregates (
    kind TEXT NOT NULL,
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    state TEXT NOT NULL,
    due_ms INTEGER,
    data BLOB NOT NULL,
    PRIMARY KEY (kind, tenant, id)
) WITHOUT ROWID;
INSERT INTO aggregates (kind, tenant, id, state, due_ms, data)
    SELECT 'epayment.payment', msn, reference, state, due_ms, data FROM payments;
DROP TABLE payments;
ALTER TABLE deliveries RENAME COLUMN msn TO tenant;
ALTER TABLE deliveries RENAME COLUMN reference TO subject;
ALTER TABLE deliveries ADD COLUMN event_name TEXT NOT NULL DEFAULT '';
ALTER TABLE attempts RENAME COLUMN reference TO subject;
DROP INDEX IF EXISTS attempts_reference;
"#;

/// Aggregates kept in the read cache.
const CACHE_CAPACITY: usize = 20_000;

/// The largest number of writes committed together.
const MAX_BATCH: usize = 512;

struct Job {
    req: WriteRequest,
    reply: oneshot::Sender<Result<WriteResult, StoreError>>,
}

/// The SQLite store.
pub(crate) struct SqliteStore {
    inner: Arc<Inner>,
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The checkpointer: dropping the sender stops it.
    checkpointer: Mutex<Option<(mpsc::Sender<()>, std::thread::JoinHandle<()>)>>,
    _tempdir: Option<tempfile::TempDir>,
}

/// What readers share: the cache and the pool of reader connections.
struct Inner {
    cache: AggregateCache,
    readers: Mutex<Vec<Connection>>,
    path: PathBuf,
    /// Told about every commit of the writer (see [`Store::on_commit`]).
    commit_hook: std::sync::OnceLock<super::CommitHook>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
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
    // Each write of a group commit runs in a savepoint, and SQLite keeps a savepoint's undo pages in a
    // statement journal: a temporary file by default, written with pwrite for every page a write touches
    // (10 % of the CPU in a profile of the webhook burst). In memory it costs a memcpy, and it is discarded
    // at commit either way, so durability is unchanged.
    conn.pragma_update(None, "temp_store", "MEMORY")
        .map_err(err)?;
    // 64 MiB of page cache per connection instead of 2 MiB: the outbox and idempotency indexes of a busy
    // store stay in memory instead of being read back from the OS for every lookup.
    conn.pragma_update(None, "cache_size", -65536)
        .map_err(err)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Creates the schema, or brings an older database to the current version.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(err)?;
    if version > SCHEMA_VERSION {
        return Err(StoreError(format!(
            "the database was written by a newer emulator (schema {version}, this one knows {SCHEMA_VERSION})"
        )));
    }
    let tx = conn.transaction().map_err(err)?;
    let v1: bool = tx
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'payments'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map_err(err)?
        > 0;
    if v1 {
        tracing::info!("migrating the SQLite database from schema 1");
        tx.execute_batch(MIGRATE_V1).map_err(err)?;
    }
    let has_aggregates: bool = tx
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'aggregates'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map_err(err)?
        > 0;
    let has_created: bool = tx
        .query_row(
            "SELECT count(*) FROM pragma_table_info('aggregates') WHERE name = 'created_ms'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map_err(err)?
        > 0;
    if has_aggregates && !has_created {
        tracing::info!("migrating the SQLite database from schema 2");
        tx.execute_batch(MIGRATE_V2).map_err(err)?;
    }
    let has_parent: bool = tx
        .query_row(
            "SELECT count(*) FROM pragma_table_info('aggregates') WHERE name = 'parent'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map_err(err)?
        > 0;
    if has_aggregates && !has_parent {
        tracing::info!("migrating the SQLite database from schema 3");
        tx.execute_batch(MIGRATE_V3).map_err(err)?;
    }
    tx.execute_batch(SCHEMA).map_err(err)?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(err)?;
    tx.commit().map_err(err)
}

impl SqliteStore {
    /// Opens (creating if needed) `vipps-emulator.sqlite3` in `dir`.
    pub(crate) fn open_dir(
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
    pub(crate) fn ephemeral(
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
        let mut conn = open(&path, durability)?;
        migrate(&mut conn)?;
        // Checkpoints run on a thread of their own (see `checkpoint_loop`); the writer checkpoints only if that
        // thread falls far behind, so the WAL stays bounded.
        conn.pragma_update(None, "wal_autocheckpoint", WRITER_CHECKPOINT_PAGES)
            .map_err(err)?;
        let checkpoint_conn = open(&path, durability)?;
        let inner = Arc::new(Inner {
            cache: AggregateCache::new(CACHE_CAPACITY),
            readers: Mutex::new(Vec::new()),
            path,
            commit_hook: std::sync::OnceLock::new(),
        });
        let (tx, rx) = mpsc::channel::<Job>();
        let writer = std::thread::Builder::new()
            .name("vipps-emulator-writer".into())
            .spawn({
                let inner = inner.clone();
                move || writer_loop(conn, rx, ids, outbox, inner)
            })
            .map_err(err)?;
        let (stop, stopped) = mpsc::channel::<()>();
        let checkpointer = std::thread::Builder::new()
            .name("vipps-emulator-checkpoint".into())
            .spawn(move || checkpoint_loop(&checkpoint_conn, &stopped))
            .map_err(err)?;
        Ok(SqliteStore {
            inner,
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            checkpointer: Mutex::new(Some((stop, checkpointer))),
            _tempdir: tempdir,
        })
    }

    /// Stops the writer after the queued writes are done.
    pub(crate) fn close(&self) {
        self.tx.lock().take();
        if let Some(h) = self.writer.lock().take() {
            let _ = h.join();
        }
        if let Some((stop, h)) = self.checkpointer.lock().take() {
            drop(stop);
            let _ = h.join();
        }
    }

    /// Runs a read on a pooled reader connection on the blocking pool.
    fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> BoxFut<'static, Result<T, StoreError>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || inner.with_reader(f))
                .await
                .map_err(err)?
        })
    }
}

impl Inner {
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
    fn export_state(&self) -> BoxFut<'static, Result<super::dump::StateDump, StoreError>> {
        self.read(dump::export)
    }

    fn import_state(
        &self,
        state: super::dump::StateDump,
    ) -> BoxFut<'static, Result<(), StoreError>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let c = Connection::open(&inner.path).map_err(err)?;
                c.busy_timeout(std::time::Duration::from_secs(30))
                    .map_err(err)?;
                dump::import(&c, &state)
            })
            .await
            .map_err(err)?
        })
    }

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

    fn aggregate(
        &self,
        key: &AggregateKey,
        decoder: Decoder,
    ) -> BoxFut<'static, Result<Option<Decoded>, StoreError>> {
        let ck = cache_key(key.kind, &key.tenant, &key.id);
        if let Some(d) = self.inner.cache.get(&ck) {
            return Box::pin(async move { Ok(Some(d)) });
        }
        let inner = self.inner.clone();
        let key = key.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let epoch = inner.cache.epoch.load(std::sync::atomic::Ordering::Acquire);
                let data = inner.with_reader(|c| load(c, &key))?;
                let Some(data) = data else { return Ok(None) };
                let d = decoder(&data).map_err(StoreError)?;
                // Only when no batch committed meanwhile, so an older read never replaces a newer write.
                if inner.cache.epoch.load(std::sync::atomic::Ordering::Acquire) == epoch {
                    inner.cache.insert(ck, d.clone(), true);
                }
                Ok(Some(d))
            })
            .await
            .map_err(err)?
        })
    }

    fn due(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> BoxFut<'static, Result<Vec<DueAggregate>, StoreError>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT kind, tenant, id FROM aggregates WHERE due_ms IS NOT NULL AND due_ms <= ?1 ORDER BY due_ms LIMIT ?2",
            )?;
            let rows = st.query_map(params![now_ms, limit as i64], |r| {
                Ok(DueAggregate {
                    kind: r.get(0)?,
                    tenant: r.get(1)?,
                    id: r.get(2)?,
                })
            })?;
            rows.collect()
        })
    }

    fn webhooks(&self, owner: &str) -> BoxFut<'static, Result<Vec<WebhookRow>, StoreError>> {
        let owner = owner.to_owned();
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT id, owner, url, events, secret, created_ms FROM webhooks WHERE owner = ?1 ORDER BY created_ms, id",
            )?;
            let rows = st.query_map(params![owner], webhook_row)?;
            rows.collect()
        })
    }

    fn meta(&self, key: &str) -> BoxFut<'static, Result<Option<String>, StoreError>> {
        let key = key.to_owned();
        self.read(move |c| {
            c.prepare_cached("SELECT value FROM meta WHERE key = ?1")?
                .query_row(params![key], |r| r.get(0))
                .optional()
        })
    }

    fn due_deliveries(
        &self,
        now_ms: i64,
        after_id: i64,
        limit: usize,
    ) -> BoxFut<'static, Result<Vec<DueDelivery>, StoreError>> {
        self.read(move |c| {
            // In id order over the pending deliveries only: walking the table's ids instead, a pass from the
            // start read every delivered row of the store's history to find the few pending ones.
            let mut st = c.prepare_cached(
                "SELECT d.id, d.webhook_id, d.tenant, d.subject, d.event_type, d.event_id, w.url, w.secret, d.payload,
                        d.attempts, d.first_attempt_ms, d.event_name
                 FROM deliveries d INDEXED BY deliveries_pending JOIN webhooks w ON w.id = d.webhook_id
                 WHERE d.state = 'pending' AND d.next_ms <= ?1 AND d.id > ?3
                   AND NOT EXISTS (SELECT 1 FROM deliveries e WHERE e.state = 'pending' AND e.webhook_id = d.webhook_id
                                   AND e.tenant = d.tenant AND e.subject = d.subject AND e.id < d.id)
                 ORDER BY d.id LIMIT ?2",
            )?;
            let rows = st.query_map(params![now_ms, limit as i64, after_id], |r| {
                Ok(DueDelivery {
                    id: r.get(0)?,
                    webhook_id: r.get(1)?,
                    tenant: r.get(2)?,
                    subject: r.get(3)?,
                    event_type: r.get(4)?,
                    event_id: r.get(5)?,
                    url: r.get(6)?,
                    secret: r.get(7)?,
                    payload: r.get::<_, Vec<u8>>(8)?.into(),
                    attempts: r.get(9)?,
                    first_attempt_ms: r.get(10)?,
                    event_name: r.get(11)?,
                })
            })?;
            rows.collect()
        })
    }

    fn next_delivery_ms(&self) -> BoxFut<'static, Result<Option<i64>, StoreError>> {
        self.read(|c| {
            c.prepare_cached("SELECT min(next_ms) FROM deliveries WHERE state = 'pending'")?
                .query_row([], |r| r.get(0))
        })
    }

    fn attempts(
        &self,
        f: &AttemptFilter,
    ) -> BoxFut<'static, Result<Vec<serde_json::Value>, StoreError>> {
        let f = f.clone();
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT data FROM attempts WHERE (?1 IS NULL OR subject = ?1) AND (?2 IS NULL OR webhook_id = ?2)
                 ORDER BY id DESC",
            )?;
            let rows = st.query_map(params![f.reference, f.webhook_id], |r| r.get::<_, String>(0))?;
            Ok(super::filter_attempts(rows.filter_map(Result::ok), &f))
        })
    }

    fn list_aggregates(
        &self,
        q: &AggregateQuery,
    ) -> BoxFut<'static, Result<Vec<AggregateRow>, StoreError>> {
        let q = q.clone();
        self.read(move |c| {
            // Only the conditions in use, so the planner can take the matching index (a state's, the id's or the
            // creation time's) instead of scanning.
            let mut sql = String::from(
                "SELECT tenant, id, state, created_ms, data FROM aggregates WHERE kind = ?1",
            );
            let mut args: Vec<rusqlite::types::Value> = vec![q.kind.clone().into()];
            let mut arg = |sql: &mut String, cond: &str, v: rusqlite::types::Value| {
                args.push(v);
                sql.push_str(&cond.replace('?', &format!("?{}", args.len())));
            };
            if let Some(st) = &q.state {
                arg(&mut sql, " AND state = ?", st.clone().into());
            }
            if let Some(t) = &q.tenant {
                arg(&mut sql, " AND tenant = ?", t.clone().into());
            }
            if let Some(p) = &q.parent {
                arg(&mut sql, " AND parent = ?", p.clone().into());
            }
            if let Some(p) = &q.id_prefix {
                arg(&mut sql, " AND id >= ?", p.clone().into());
                arg(&mut sql, " AND id < ?", super::prefix_end(p).into());
            }
            if let Some(ms) = q.created_from_ms {
                arg(&mut sql, " AND created_ms >= ?", ms.into());
            }
            if let Some(ms) = q.created_to_ms {
                arg(&mut sql, " AND created_ms < ?", ms.into());
            }
            if let Some((ms, t, i)) = &q.after {
                arg(&mut sql, " AND (created_ms, tenant, id) < (?", (*ms).into());
                arg(&mut sql, ", ?", t.clone().into());
                arg(&mut sql, ", ?)", i.clone().into());
            }
            arg(
                &mut sql,
                " ORDER BY created_ms DESC, tenant DESC, id DESC LIMIT ?",
                (q.limit as i64).into(),
            );
            let mut st = c.prepare_cached(&sql)?;
            let rows = st.query_map(rusqlite::params_from_iter(args.iter()), |r| {
                Ok(AggregateRow {
                    tenant: r.get(0)?,
                    id: r.get(1)?,
                    state: r.get(2)?,
                    created_ms: r.get(3)?,
                    data: r.get(4)?,
                })
            })?;
            rows.collect()
        })
    }

    fn counts(&self) -> BoxFut<'static, Result<Counts, StoreError>> {
        self.read(|c| {
            let n = |sql: &str| {
                c.query_row(sql, [], |r| r.get::<_, i64>(0))
                    .map(|v| v as u64)
            };
            let aggregates = c
                .prepare("SELECT kind, count(*) FROM aggregates GROUP BY kind ORDER BY kind")?
                .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?
                .collect::<rusqlite::Result<_>>()?;
            Ok(Counts {
                aggregates,
                idempotency: n("SELECT count(*) FROM idempotency")?,
                webhooks: n("SELECT count(*) FROM webhooks")?,
            })
        })
    }

    fn state_counts(&self) -> BoxFut<'static, Result<StateCounts, StoreError>> {
        self.read(|c| {
            c.prepare("SELECT kind, state, count(*) FROM aggregates GROUP BY kind, state")?
                .query_map([], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64))
                })?
                .collect()
        })
    }

    fn on_commit(&self, hook: super::CommitHook) {
        let _ = self.inner.commit_hook.set(hook);
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

/// What one batch did besides answering: documents to publish to the read cache, and whether the outbox changed.
#[derive(Default)]
struct BatchEffects {
    saved: Vec<(String, Decoded)>,
    outbox_touched: bool,
}

/// WAL pages after which the writer checkpoints by itself: only when the checkpointer has fallen far behind
/// (SQLite's default, 1,000, is what the checkpointer keeps to).
const WRITER_CHECKPOINT_PAGES: i64 = 16_000;

/// How often the checkpointer copies the WAL into the database.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// Copies committed pages from the WAL into the database file, off the writer thread. With SQLite's automatic
/// checkpoint the commit that crosses 1,000 WAL pages does the copy and its fsync of the database file itself,
/// and every write queued behind it waits: in a profile of charge creates (random ids, so each commit dirties
/// pages all over the indexes) that was most of the writer's time. A `PASSIVE` checkpoint takes no lock that
/// blocks the writer or readers; once it has caught up, the writer's next transaction starts the WAL from the
/// beginning again. Durability is unchanged: a commit is durable when its WAL frames are synced, which the
/// writer still does.
fn checkpoint_loop(conn: &Connection, stop: &mpsc::Receiver<()>) {
    loop {
        match stop.recv_timeout(CHECKPOINT_EVERY) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // Stopped (the sender is dropped) or, never sent, a message: stop either way.
            _ => return,
        }
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "WAL checkpoint failed; the writer will checkpoint instead");
        }
    }
}

fn writer_loop(
    mut conn: Connection,
    rx: mpsc::Receiver<Job>,
    ids: Arc<dyn IdGen>,
    outbox: Arc<tokio::sync::Notify>,
    inner: Arc<Inner>,
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
        let mut fx = BatchEffects::default();
        let started = std::time::Instant::now();
        let committed = (|| -> rusqlite::Result<()> {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            // Savepoints through cached statements: rusqlite's `Savepoint` parses its SQL anew every time, twice
            // per write.
            for job in &batch {
                tx.prepare_cached("SAVEPOINT w")?.execute([])?;
                let mut job_fx = BatchEffects::default();
                match apply(&tx, &job.req, ids.as_ref(), &mut job_fx) {
                    Ok(r) => {
                        tx.prepare_cached("RELEASE w")?.execute([])?;
                        fx.saved.append(&mut job_fx.saved);
                        fx.outbox_touched |= job_fx.outbox_touched;
                        results.push(Ok(r));
                    }
                    Err(e) => {
                        tx.prepare_cached("ROLLBACK TO w")?.execute([])?;
                        tx.prepare_cached("RELEASE w")?.execute([])?;
                        results.push(Err(err(e)));
                    }
                }
            }
            tx.commit()
        })();
        match committed {
            Ok(()) => {
                if let Some(hook) = inner.commit_hook.get() {
                    hook(batch.len(), started.elapsed());
                }
                inner.cache.publish(fx.saved);
                for (job, r) in batch.into_iter().zip(results) {
                    let _ = job.reply.send(r);
                }
                if fx.outbox_touched {
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

fn load(c: &Connection, key: &AggregateKey) -> rusqlite::Result<Option<Vec<u8>>> {
    c.prepare_cached("SELECT data FROM aggregates WHERE kind = ?1 AND tenant = ?2 AND id = ?3")?
        .query_row(params![key.kind, key.tenant, key.id], |r| r.get(0))
        .optional()
}

/// A bounded cache of decoded aggregates for reads, filled by the writer after each commit and by readers on a
/// miss.
#[derive(Default)]
struct AggregateCache {
    map: parking_lot::RwLock<std::collections::HashMap<String, Decoded>>,
    order: Mutex<std::collections::VecDeque<String>>,
    capacity: usize,
    epoch: std::sync::atomic::AtomicU64,
}

fn cache_key(kind: &str, tenant: &str, id: &str) -> String {
    let mut k = String::with_capacity(kind.len() + tenant.len() + id.len() + 2);
    k.push_str(kind);
    k.push('\0');
    k.push_str(tenant);
    k.push('\0');
    k.push_str(id);
    k
}

impl AggregateCache {
    fn new(capacity: usize) -> Self {
        AggregateCache {
            capacity,
            ..Default::default()
        }
    }

    fn get(&self, key: &str) -> Option<Decoded> {
        self.map.read().get(key).cloned()
    }

    fn insert(&self, key: String, value: Decoded, only_if_absent: bool) {
        if self.capacity == 0 {
            return;
        }
        let mut map = self.map.write();
        if only_if_absent && map.contains_key(&key) {
            return;
        }
        if map.insert(key.clone(), value).is_none() {
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
    fn publish(&self, saved: Vec<(String, Decoded)>) {
        for (k, v) in saved {
            self.insert(k, v, false);
        }
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Runs a product command: load, apply, save, fan out to the outbox. A create that meets a document that exists
/// runs again on it (in SQLite only a document of an earlier write in the same batch can do that).
fn execute(
    c: &Connection,
    req: &WriteRequest,
    cmd: &dyn crate::platform::aggregate::Command,
    ids: &dyn IdGen,
    fx: &mut BatchEffects,
) -> rusqlite::Result<StoredResponse> {
    let key = cmd.key();
    let ctx = Ctx {
        now_ms: req.now_ms,
        ids,
        request: &req.request,
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let current = match load(c, key)? {
            Some(data) => Some(cmd.decoder()(&data).map_err(|e| to_sql_err(StoreError(e)))?),
            None => None,
        };
        let effect = cmd.apply(current.as_ref(), &ctx);
        if let Some(put) = effect.put {
            let sql = if put.create {
                "INSERT INTO aggregates (kind, tenant, id, state, due_ms, data, created_ms, parent) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (kind, tenant, id) DO NOTHING"
            } else {
                "INSERT INTO aggregates (kind, tenant, id, state, due_ms, data, created_ms, parent) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (kind, tenant, id) DO UPDATE SET state = excluded.state, due_ms = excluded.due_ms, data = excluded.data"
            };
            let n = c.prepare_cached(sql)?.execute(params![
                key.kind, key.tenant, key.id, put.state, put.due_ms, put.data, req.now_ms,
                put.parent
            ])?;
            if n == 0 {
                if attempt < CREATE_ATTEMPTS {
                    continue;
                }
                return Err(to_sql_err(StoreError(
                    "a create kept meeting an existing document".into(),
                )));
            }
            fx.saved
                .push((cache_key(key.kind, &key.tenant, &key.id), put.value));
        }
        if !effect.events.is_empty() {
            let hooks: Vec<(String, Vec<String>)> = c
                .prepare_cached(
                    "SELECT id, events FROM webhooks WHERE owner = 'msn:' || ?1
                     OR owner IN (SELECT owner FROM partner_owners WHERE msn = ?1) ORDER BY created_ms, id",
                )?
                .query_map(params![key.tenant], |r| {
                    let events: String = r.get(1)?;
                    Ok((r.get(0)?, serde_json::from_str(&events).unwrap_or_default()))
                })?
                .collect::<rusqlite::Result<_>>()?;
            for (webhook_id, e) in fan_out(&hooks, &effect.events) {
                c.prepare_cached(
                    "INSERT INTO deliveries (webhook_id, tenant, subject, event_type, event_id, event_name, payload, state, attempts, next_ms, created_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', 0, ?8, ?8)",
                )?
                .execute(params![
                    webhook_id,
                    key.tenant,
                    key.id,
                    e.event_type,
                    e.event_id,
                    e.name,
                    e.payload.as_ref(),
                    req.now_ms
                ])?;
                fx.outbox_touched = true;
            }
        }
        return Ok(effect.answer);
    }
}

fn to_sql_err(e: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(e))
}

/// Ends the pending deliveries of a webhook that no longer exists.
fn fail_pending(c: &Connection, webhook_id: &str, now_ms: i64) -> rusqlite::Result<()> {
    c.prepare_cached("UPDATE deliveries SET state = 'failed', done_ms = ?2 WHERE webhook_id = ?1 AND state = 'pending'")?
        .execute(params![webhook_id, now_ms])?;
    Ok(())
}

/// Applies one write inside the current transaction (savepoint).
fn apply(
    c: &Connection,
    req: &WriteRequest,
    ids: &dyn IdGen,
    fx: &mut BatchEffects,
) -> rusqlite::Result<WriteResult> {
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
            return Ok(WriteResult::Replayed(stored_answer(status, &headers, body)));
        }
    }
    let resp = match &req.op {
        Op::Execute(cmd) => execute(c, req, cmd.as_ref(), ids, fx)?,
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
            subject,
            attempt,
            at_ms,
            outcome,
        } => {
            c.prepare_cached(
                "INSERT INTO attempts (delivery_id, webhook_id, subject, at_ms, data) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![delivery_id, webhook_id, subject, at_ms, attempt])?;
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
                // Only when it changes: a burst delivers many events to one webhook within a millisecond.
                c.prepare_cached(
                    "UPDATE webhooks SET last_success_ms = ?2, failing_since_ms = NULL
                     WHERE id = ?1 AND (failing_since_ms IS NOT NULL OR last_success_ms IS NOT ?2)",
                )?
                .execute(params![webhook_id, at_ms])?;
            } else {
                c.prepare_cached(
                    "UPDATE webhooks SET failing_since_ms = coalesce(failing_since_ms, ?2) WHERE id = ?1",
                )?
                .execute(params![webhook_id, at_ms])?;
            }
            fx.outbox_touched = true;
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
        Op::Redeliver { delivery_id } => {
            let new_id: Option<i64> = c
                .prepare_cached(
                    "INSERT INTO deliveries (webhook_id, tenant, subject, event_type, event_id, event_name, payload, state, attempts, next_ms, created_ms)
                     SELECT webhook_id, tenant, subject, event_type, event_id, event_name, payload, 'pending', 0, ?2, ?2
                     FROM deliveries WHERE id = ?1 AND webhook_id IN (SELECT id FROM webhooks)
                     RETURNING id",
                )?
                .query_row(params![delivery_id, req.now_ms], |r| r.get(0))
                .optional()?;
            match new_id {
                Some(id) => {
                    fx.outbox_touched = true;
                    StoredResponse::json(202, &serde_json::json!({ "delivery_id": id }))
                }
                None => super::delivery_not_found(req, *delivery_id),
            }
        }
        Op::InitMeta { key, value } => {
            c.prepare_cached(
                "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
            )?
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_2_gains_creation_times_from_the_documents() {
        let mut c = Connection::open_in_memory().unwrap();
        c.execute_batch(
            "CREATE TABLE aggregates (kind TEXT NOT NULL, tenant TEXT NOT NULL, id TEXT NOT NULL, state TEXT NOT NULL,
                 due_ms INTEGER, data BLOB NOT NULL, PRIMARY KEY (kind, tenant, id)) WITHOUT ROWID;
             PRAGMA user_version = 2;",
        )
        .unwrap();
        c.execute(
            "INSERT INTO aggregates VALUES ('k', 't', 'a', 'S', NULL, ?1), ('k', 't', 'b', 'S', NULL, ?2)",
            params![br#"{"created_ms": 1234}"#.to_vec(), b"not json".to_vec()],
        )
        .unwrap();
        migrate(&mut c).unwrap();
        let got: Vec<(String, i64)> = c
            .prepare("SELECT id, created_ms FROM aggregates ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(got, [("a".to_owned(), 1234), ("b".to_owned(), 0)]);
        let version: i64 = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        // A second start changes nothing.
        migrate(&mut c).unwrap();
    }
}
