//! Snapshot rows for the PostgreSQL backend: every table read in one repeatable-read transaction, and loaded in
//! one (pipelined), with the id sequences moved past the loaded ids.

use deadpool_postgres::Pool;
use tokio_postgres::types::ToSql;

use super::{pg_err, pool_err};
use crate::platform::store::StoreError;
use crate::platform::store::dump::{Cell, ColType, SERIAL_TABLES, StateDump, TABLES};

/// How many inserts are sent at once (pipelined on one connection).
const CHUNK: usize = 256;

/// The SQL type a snapshot column is read as and bound as (integer columns may be `INTEGER` or `BIGINT`).
fn sql_type(ty: ColType) -> &'static str {
    match ty {
        ColType::Text => "text",
        ColType::Int => "bigint",
        ColType::Bytes => "bytea",
    }
}

/// Reads every table in one repeatable-read transaction (one consistent view while writes go on).
pub(super) async fn export(pool: &Pool) -> Result<StateDump, StoreError> {
    let mut c = pool.get().await.map_err(pool_err)?;
    let tx = c
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(pg_err)?;
    let mut dump = StateDump::default();
    for (table, cols) in TABLES {
        let select: Vec<String> = cols
            .iter()
            .map(|(n, ty, _)| format!("{n}::{}", sql_type(*ty)))
            .collect();
        let sql = format!(
            "SELECT {} FROM {table} ORDER BY {}",
            select.join(", "),
            cols[0].0
        );
        let rows = tx.query(&sql, &[]).await.map_err(pg_err)?;
        let rows = rows
            .iter()
            .map(|r| {
                cols.iter()
                    .enumerate()
                    .map(|(i, (_, ty, _))| match ty {
                        ColType::Text => r.get::<_, Option<String>>(i).map(Cell::Text),
                        ColType::Int => r.get::<_, Option<i64>>(i).map(Cell::Int),
                        ColType::Bytes => r.get::<_, Option<Vec<u8>>>(i).map(Cell::Bytes),
                    })
                    .map(|c| c.unwrap_or(Cell::Null))
                    .collect()
            })
            .collect();
        dump.tables.insert((*table).to_owned(), rows);
    }
    tx.commit().await.map_err(pg_err)?;
    Ok(dump)
}

/// One value as a query parameter (a null of the column's type: the statement's parameters are typed).
fn param(c: &Cell, ty: ColType) -> Box<dyn ToSql + Sync + Send> {
    match c {
        Cell::Null => match ty {
            ColType::Text => Box::new(Option::<String>::None),
            ColType::Int => Box::new(Option::<i64>::None),
            ColType::Bytes => Box::new(Option::<Vec<u8>>::None),
        },
        Cell::Int(i) => Box::new(*i),
        Cell::Text(t) => Box::new(t.clone()),
        Cell::Bytes(b) => Box::new(b.clone()),
    }
}

/// Loads a dump in one transaction, refusing a store that already holds state.
pub(super) async fn import(pool: &Pool, dump: &StateDump) -> Result<(), StoreError> {
    let mut c = pool.get().await.map_err(pool_err)?;
    let tx = c.transaction().await.map_err(pg_err)?;
    // Other instances starting on the same database wait until the load is committed.
    for (table, _) in TABLES {
        tx.batch_execute(&format!("LOCK TABLE {table} IN EXCLUSIVE MODE"))
            .await
            .map_err(pg_err)?;
    }
    let held: i64 = tx
        .query_one(
            "SELECT (SELECT count(*) FROM aggregates) + (SELECT count(*) FROM idempotency)
                  + (SELECT count(*) FROM webhooks) + (SELECT count(*) FROM deliveries)",
            &[],
        )
        .await
        .map_err(pg_err)?
        .get(0);
    if held > 0 {
        return Err(StoreError(
            "the store already holds state (aggregates, idempotency answers, webhooks or deliveries); a snapshot \
             is loaded only into an empty store: start with a fresh database"
                .into(),
        ));
    }
    for (table, cols) in TABLES {
        let names: Vec<&str> = cols.iter().map(|(n, _, _)| *n).collect();
        let marks: Vec<String> = cols
            .iter()
            .enumerate()
            .map(|(i, (_, ty, _))| format!("${}::{}", i + 1, sql_type(*ty)))
            .collect();
        let sql = format!(
            "INSERT INTO {table} ({}) VALUES ({}) ON CONFLICT ({}) DO UPDATE SET {}",
            names.join(", "),
            marks.join(", "),
            // Only `meta` can meet a row (written at start); every other table was checked empty.
            if *table == "aggregates" {
                "kind, tenant, id"
            } else {
                names[0]
            },
            names[1..]
                .iter()
                .map(|n| format!("{n} = excluded.{n}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let st = tx.prepare(&sql).await.map_err(pg_err)?;
        for chunk in dump.rows(table).chunks(CHUNK) {
            let params: Vec<Vec<Box<dyn ToSql + Sync + Send>>> = chunk
                .iter()
                .map(|row| {
                    row.iter()
                        .zip(*cols)
                        .map(|(c, (_, ty, _))| param(c, *ty))
                        .collect()
                })
                .collect();
            let inserts = params.iter().map(|p| {
                let refs: Vec<&(dyn ToSql + Sync)> = p
                    .iter()
                    .map(|b| b.as_ref() as &(dyn ToSql + Sync))
                    .collect();
                let st = &st;
                let tx = &tx;
                async move { tx.execute(st, &refs).await }
            });
            futures::future::try_join_all(inserts)
                .await
                .map_err(pg_err)?;
        }
    }
    for table in SERIAL_TABLES {
        tx.batch_execute(&format!(
            "SELECT setval(pg_get_serial_sequence('{table}', 'id'), coalesce((SELECT max(id) FROM {table}), 0) + 1, false)"
        ))
        .await
        .map_err(pg_err)?;
    }
    tx.commit().await.map_err(pg_err)
}
