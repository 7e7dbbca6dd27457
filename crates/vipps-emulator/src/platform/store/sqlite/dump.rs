//! Snapshot rows for the SQLite backend: every table read in one transaction, and loaded in one.

use rusqlite::Connection;
use rusqlite::types::{Value, ValueRef};

use crate::platform::store::StoreError;
use crate::platform::store::dump::{Cell, ColType, StateDump, TABLES};

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

/// Reads every table in one read transaction (WAL: a consistent view while writes go on).
pub(super) fn export(c: &Connection) -> rusqlite::Result<StateDump> {
    let tx = c.unchecked_transaction()?;
    let mut dump = StateDump::default();
    for (table, cols) in TABLES {
        let names: Vec<&str> = cols.iter().map(|(n, _, _)| *n).collect();
        let sql = format!(
            "SELECT {} FROM {table} ORDER BY {}",
            names.join(", "),
            names[0]
        );
        let mut st = tx.prepare(&sql)?;
        let rows = st
            .query_map([], |r| {
                cols.iter()
                    .enumerate()
                    .map(|(i, (_, ty, _))| {
                        Ok(match (r.get_ref(i)?, ty) {
                            (ValueRef::Null, _) => Cell::Null,
                            (ValueRef::Integer(n), _) => Cell::Int(n),
                            (ValueRef::Real(f), _) => Cell::Int(f as i64),
                            (ValueRef::Text(b) | ValueRef::Blob(b), ColType::Bytes) => {
                                Cell::Bytes(b.to_vec())
                            }
                            (ValueRef::Text(b) | ValueRef::Blob(b), _) => {
                                Cell::Text(String::from_utf8_lossy(b).into_owned())
                            }
                        })
                    })
                    .collect::<rusqlite::Result<Vec<Cell>>>()
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        dump.tables.insert((*table).to_owned(), rows);
    }
    tx.commit()?;
    Ok(dump)
}

/// Loads a dump in one immediate transaction, refusing a store that already holds state.
pub(super) fn import(c: &Connection, dump: &StateDump) -> Result<(), StoreError> {
    c.execute_batch("BEGIN IMMEDIATE").map_err(err)?;
    let done = load(c, dump);
    let end = if done.is_ok() { "COMMIT" } else { "ROLLBACK" };
    c.execute_batch(end).map_err(err)?;
    done
}

fn load(c: &Connection, dump: &StateDump) -> Result<(), StoreError> {
    let held: i64 = c
        .query_row(
            "SELECT (SELECT count(*) FROM aggregates) + (SELECT count(*) FROM idempotency)
                  + (SELECT count(*) FROM webhooks) + (SELECT count(*) FROM deliveries)",
            [],
            |r| r.get(0),
        )
        .map_err(err)?;
    if held > 0 {
        return Err(StoreError(
            "the store already holds state (aggregates, idempotency answers, webhooks or deliveries); a snapshot \
             is loaded only into an empty store: start with a fresh data directory or database"
                .into(),
        ));
    }
    for (table, cols) in TABLES {
        let names: Vec<&str> = cols.iter().map(|(n, _, _)| *n).collect();
        let marks: Vec<String> = (1..=cols.len()).map(|i| format!("?{i}")).collect();
        let sql = format!(
            "INSERT OR REPLACE INTO {table} ({}) VALUES ({})",
            names.join(", "),
            marks.join(", ")
        );
        let mut st = c.prepare(&sql).map_err(err)?;
        for row in dump.rows(table) {
            let values = row.iter().map(|cell| match cell {
                Cell::Null => Value::Null,
                Cell::Int(i) => Value::Integer(*i),
                Cell::Text(t) => Value::Text(t.clone()),
                Cell::Bytes(b) => Value::Blob(b.clone()),
            });
            st.execute(rusqlite::params_from_iter(values))
                .map_err(err)?;
        }
    }
    Ok(())
}
