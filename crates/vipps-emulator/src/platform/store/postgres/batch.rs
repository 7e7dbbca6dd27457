//! Group commit for PostgreSQL: product writes that arrive together run in one transaction.
//!
//! Why: with one transaction per write, 64 concurrent creates are 64 server processes each parsing, locking and
//! waiting for its own commit, and on a small machine the processes' scheduling costs more than the work. Here a
//! few workers each take whatever writes are waiting (up to [`MAX_BATCH`]) and run them in one transaction, every
//! step of every write pipelined on one connection, so the server does one commit and a handful of round trips
//! per batch. Each write keeps its own semantics: its idempotency key's advisory lock is taken in the batch's
//! transaction (a duplicate elsewhere is answered 423 until the batch commits, and a dead instance's locks go with
//! its connection), its answer is stored with its change, and nothing is acknowledged before the commit.
//!
//! Within a batch, writes to the same aggregate run in successive rounds (each round sees the previous one's
//! changes), and rows are locked in key order so two batches cannot lock each other's rows crosswise. If the
//! transaction fails as a whole (a deadlock with another instance, a lost connection), it is rolled back and every
//! write of the batch runs again on its own, as it would have without batching.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::{Mutex as AsyncMutex, mpsc, oneshot};
use tokio_postgres::types::ToSql;

use super::{
    PostgresStore, SQL_CREATE, SQL_DELIVERY, SQL_IDEM_INSERT, SQL_IDEM_SELECT, SQL_LOAD_FOR_UPDATE,
    SQL_LOCK, SQL_TENANT_HOOKS, SQL_UPSERT, StoreError, Tx, lock_key, pg_err, pool_err,
};
use crate::platform::aggregate::{Ctx, Effect};
use crate::platform::store::{
    CREATE_ATTEMPTS, Op, WriteRequest, WriteResult, fan_out, stored_answer,
};

/// The webhooks of each tenant in a round: id and subscribed event types.
type Hooks<'a> = HashMap<&'a str, Vec<(String, Vec<String>)>>;

/// The most writes one transaction carries.
const MAX_BATCH: usize = 64;

/// How many batches may run at once (each on its own connection). More only adds server processes competing for
/// the same cores; fewer leaves the server idle while a batch's answers travel back.
const WORKERS: usize = 4;

type Reply = oneshot::Sender<Result<WriteResult, StoreError>>;

struct Job {
    req: WriteRequest,
    reply: Reply,
}

/// The queue in front of the batch workers.
pub(super) struct Batcher {
    tx: mpsc::UnboundedSender<Job>,
}

impl Batcher {
    /// Starts the workers on the current runtime.
    pub(super) fn start(store: Arc<PostgresStore>) -> Batcher {
        let (tx, rx) = mpsc::unbounded_channel();
        let rx = Arc::new(AsyncMutex::new(rx));
        for _ in 0..WORKERS {
            let (store, rx) = (store.clone(), rx.clone());
            tokio::spawn(async move {
                loop {
                    let mut jobs = Vec::new();
                    {
                        let mut rx = rx.lock().await;
                        match rx.recv().await {
                            Some(j) => jobs.push(j),
                            None => return,
                        }
                        while jobs.len() < MAX_BATCH {
                            match rx.try_recv() {
                                Ok(j) => jobs.push(j),
                                Err(_) => break,
                            }
                        }
                    }
                    run(&store, jobs).await;
                }
            });
        }
        Batcher { tx }
    }

    /// Queues a write; `Err` gives the request back when the workers are gone (the runtime is shutting down).
    pub(super) async fn submit(
        &self,
        req: WriteRequest,
    ) -> Result<Result<WriteResult, StoreError>, WriteRequest> {
        let (reply, answer) = oneshot::channel();
        if let Err(mpsc::error::SendError(job)) = self.tx.send(Job { req, reply }) {
            return Err(job.req);
        }
        Ok(answer
            .await
            .unwrap_or_else(|_| Err(StoreError("the write was dropped".into()))))
    }
}

async fn run(store: &PostgresStore, jobs: Vec<Job>) {
    let started = std::time::Instant::now();
    let outcome = match store.pool.get().await.map_err(pool_err) {
        Ok(mut c) => {
            let reqs: Vec<&WriteRequest> = jobs.iter().map(|j| &j.req).collect();
            match c.transaction().await.map_err(pg_err) {
                Ok(tx) => match batch(store, &tx, &reqs).await {
                    Ok((results, touched)) => match tx.commit().await.map_err(pg_err) {
                        Ok(()) => Ok((results, touched)),
                        Err(e) => Err(e),
                    },
                    Err(e) => {
                        let _ = tx.rollback().await;
                        Err(e)
                    }
                },
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    };
    match outcome {
        Ok((results, touched)) => {
            if let Some(hook) = store.commit_hook.get() {
                hook(jobs.len(), started.elapsed());
            }
            if touched {
                store.outbox.notify_one();
            }
            for (job, r) in jobs.into_iter().zip(results) {
                let _ = job.reply.send(Ok(r));
            }
        }
        Err(e) => {
            tracing::debug!(error = %e.0, writes = jobs.len(), "batch failed; running its writes one by one");
            let each = jobs.into_iter().map(|job| async move {
                let r = store.do_write(&job.req).await;
                let _ = job.reply.send(r);
            });
            futures::future::join_all(each).await;
        }
    }
}

/// Runs the writes in `tx`; answers in the order of `reqs`, and whether the outbox got deliveries.
async fn batch(
    store: &PostgresStore,
    tx: &Tx<'_>,
    reqs: &[&WriteRequest],
) -> Result<(Vec<WriteResult>, bool), StoreError> {
    let mut results: Vec<Option<WriteResult>> = vec![None; reqs.len()];
    let mut pending = claim(tx, reqs, &mut results).await?;
    let mut touched = false;
    let mut attempts: HashMap<usize, usize> = HashMap::new();
    while !pending.is_empty() {
        // One write per aggregate in a round, in key order (the order the server locks the rows in).
        let mut seen = HashSet::new();
        let (mut round, later): (Vec<usize>, Vec<usize>) = pending
            .into_iter()
            .partition(|&i| seen.insert(command(reqs[i]).key()));
        round.sort_by(|&a, &b| {
            let (ka, kb) = (command(reqs[a]).key(), command(reqs[b]).key());
            (ka.kind, &ka.tenant, &ka.id).cmp(&(kb.kind, &kb.tenant, &kb.id))
        });
        let (effects, hooks) = load_and_apply(store, tx, reqs, &round).await?;
        let retry = save(tx, reqs, &round, &effects).await?;
        let mut done = Vec::with_capacity(round.len());
        let mut again = later;
        for (pos, (&i, effect)) in round.iter().zip(effects).enumerate() {
            if retry.contains(&pos) {
                let n = attempts.entry(i).or_insert(1);
                *n += 1;
                if *n > CREATE_ATTEMPTS {
                    return Err(StoreError(
                        "a create kept meeting an existing document".into(),
                    ));
                }
                again.push(i);
            } else {
                done.push((i, effect));
            }
        }
        touched |= finish(tx, reqs, &done, &hooks).await?;
        for (i, effect) in done {
            results[i] = Some(WriteResult::Fresh(effect.answer));
        }
        pending = again;
    }
    Ok((
        results
            .into_iter()
            .map(|r| r.unwrap_or(WriteResult::InProgress))
            .collect(),
        touched,
    ))
}

fn command(req: &WriteRequest) -> &dyn crate::platform::aggregate::Command {
    match &req.op {
        Op::Execute(cmd) => cmd.as_ref(),
        _ => unreachable!("only product commands are batched"),
    }
}

/// Takes every idempotency key's lock and looks up its stored answer, all in one round trip. Answers the writes
/// that end here (423, replay, 409) in `results`; returns the rest.
async fn claim(
    tx: &Tx<'_>,
    reqs: &[&WriteRequest],
    results: &mut [Option<WriteResult>],
) -> Result<Vec<usize>, StoreError> {
    let lock = tx.prepare_cached(SQL_LOCK).await.map_err(pg_err)?;
    let sel = tx.prepare_cached(SQL_IDEM_SELECT).await.map_err(pg_err)?;
    let mut scopes = HashSet::new();
    let mut pending = Vec::with_capacity(reqs.len());
    let mut asks = Vec::new();
    for (i, req) in reqs.iter().enumerate() {
        match &req.idem {
            None => pending.push(i),
            // The in-process claim keeps one instance from sending a key twice at once; should it happen, the
            // second waits its turn like a duplicate from elsewhere.
            Some(idem) if !scopes.insert(idem.scope.as_str()) => {
                results[i] = Some(WriteResult::InProgress)
            }
            Some(idem) => {
                let (lock, sel) = (&lock, &sel);
                asks.push(async move {
                    let key = lock_key(&idem.scope);
                    let (l, s): ([&(dyn ToSql + Sync); 1], [&(dyn ToSql + Sync); 1]) =
                        ([&key], [&idem.scope]);
                    let (locked, row) =
                        futures::try_join!(tx.query_one(lock, &l), tx.query_opt(sel, &s))?;
                    Ok::<_, tokio_postgres::Error>((i, locked.get::<_, bool>(0), row))
                });
            }
        }
    }
    for (i, locked, row) in futures::future::try_join_all(asks).await.map_err(pg_err)? {
        let idem = reqs[i]
            .idem
            .as_ref()
            .expect("asked for idempotent writes only");
        results[i] = if !locked {
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
        if results[i].is_none() {
            pending.push(i);
        }
    }
    pending.sort_unstable();
    Ok(pending)
}

/// Locks and loads the round's aggregates and reads their tenants' webhooks (one round trip), then runs each
/// pure command.
async fn load_and_apply<'r>(
    store: &PostgresStore,
    tx: &Tx<'_>,
    reqs: &[&'r WriteRequest],
    round: &[usize],
) -> Result<(Vec<Effect>, Hooks<'r>), StoreError> {
    let load = tx
        .prepare_cached(SQL_LOAD_FOR_UPDATE)
        .await
        .map_err(pg_err)?;
    let hooks_st = tx.prepare_cached(SQL_TENANT_HOOKS).await.map_err(pg_err)?;
    let mut tenants: Vec<&'r str> = round
        .iter()
        .map(|&i| command(reqs[i]).key().tenant.as_str())
        .collect();
    tenants.sort_unstable();
    tenants.dedup();
    let loads = futures::future::try_join_all(round.iter().map(|&i| {
        let key = command(reqs[i]).key();
        let load = &load;
        async move {
            let p: [&(dyn ToSql + Sync); 3] = [&key.kind, &key.tenant, &key.id];
            tx.query_opt(load, &p).await
        }
    }));
    let hook_rows = futures::future::try_join_all(tenants.iter().map(|t| {
        let hooks_st = &hooks_st;
        async move {
            let p: [&(dyn ToSql + Sync); 1] = [t];
            tx.query(hooks_st, &p).await
        }
    }));
    let (rows, hook_rows) = futures::try_join!(loads, hook_rows).map_err(pg_err)?;
    let hooks: Hooks<'r> = tenants
        .iter()
        .copied()
        .zip(hook_rows.iter().map(|rows| {
            rows.iter()
                .map(|r| {
                    let events: &str = r.get(1);
                    (r.get(0), serde_json::from_str(events).unwrap_or_default())
                })
                .collect()
        }))
        .collect();
    let mut effects = Vec::with_capacity(round.len());
    for (&i, row) in round.iter().zip(rows) {
        let cmd = command(reqs[i]);
        let current = match row {
            Some(r) => Some(cmd.decoder()(r.get::<_, &[u8]>(0)).map_err(StoreError)?),
            None => None,
        };
        effects.push(cmd.apply(
            current.as_ref(),
            &Ctx {
                now_ms: reqs[i].now_ms,
                ids: store.ids.as_ref(),
                request: &reqs[i].request,
            },
        ));
    }
    Ok((effects, hooks))
}

/// Saves the round's documents (one round trip); returns the positions of creates that met an existing
/// document (committed meanwhile by another instance), to run again.
async fn save(
    tx: &Tx<'_>,
    reqs: &[&WriteRequest],
    round: &[usize],
    effects: &[Effect],
) -> Result<HashSet<usize>, StoreError> {
    let create = tx.prepare_cached(SQL_CREATE).await.map_err(pg_err)?;
    let upsert = tx.prepare_cached(SQL_UPSERT).await.map_err(pg_err)?;
    let saves = round
        .iter()
        .zip(effects)
        .enumerate()
        .filter_map(|(pos, (&i, e))| {
            let put = e.put.as_ref()?;
            let key = command(reqs[i]).key();
            let st = if put.create { &create } else { &upsert };
            Some(async move {
                let p: [&(dyn ToSql + Sync); 8] = [
                    &key.kind,
                    &key.tenant,
                    &key.id,
                    &put.state,
                    &put.due_ms,
                    &put.data,
                    &reqs[i].now_ms,
                    &put.parent,
                ];
                tx.execute(st, &p).await.map(|n| (pos, n))
            })
        });
    Ok(futures::future::try_join_all(saves)
        .await
        .map_err(pg_err)?
        .into_iter()
        .filter(|&(_, n)| n == 0)
        .map(|(pos, _)| pos)
        .collect())
}

/// Puts the events of the saved writes in the outbox and stores their answers (one round trip). Returns whether
/// any delivery was added.
async fn finish(
    tx: &Tx<'_>,
    reqs: &[&WriteRequest],
    done: &[(usize, Effect)],
    hooks: &Hooks<'_>,
) -> Result<bool, StoreError> {
    let ins = tx.prepare_cached(SQL_DELIVERY).await.map_err(pg_err)?;
    let idem_ins = tx.prepare_cached(SQL_IDEM_INSERT).await.map_err(pg_err)?;
    let mut writes = Vec::new();
    let mut touched = false;
    for (i, effect) in done {
        let req = reqs[*i];
        let key = command(req).key();
        if let Some(tenant_hooks) = hooks.get(key.tenant.as_str()) {
            for (webhook_id, e) in fan_out(tenant_hooks, &effect.events) {
                touched = true;
                let ins = &ins;
                writes.push(futures::future::Either::Left(async move {
                    let p: [&(dyn ToSql + Sync); 8] = [
                        &webhook_id,
                        &key.tenant,
                        &key.id,
                        &e.event_type,
                        &e.event_id,
                        &e.name,
                        &e.payload.as_ref(),
                        &req.now_ms,
                    ];
                    tx.execute(ins, &p).await
                }));
            }
        }
        if let Some(idem) = &req.idem {
            // 2xx and 4xx outcomes are the answer for the key; 5xx are not stored so a retry executes again.
            if effect.answer.status < 500 {
                let idem_ins = &idem_ins;
                writes.push(futures::future::Either::Right(async move {
                    let headers = serde_json::to_string(&effect.answer.headers)
                        .unwrap_or_else(|_| "[]".into());
                    let status = i32::from(effect.answer.status);
                    let fp = idem.fingerprint.as_slice();
                    let body = effect.answer.body.as_ref();
                    let p: [&(dyn ToSql + Sync); 6] =
                        [&idem.scope, &fp, &status, &headers, &body, &req.now_ms];
                    tx.execute(idem_ins, &p).await
                }));
            }
        }
    }
    futures::future::try_join_all(writes)
        .await
        .map_err(pg_err)?;
    Ok(touched)
}
