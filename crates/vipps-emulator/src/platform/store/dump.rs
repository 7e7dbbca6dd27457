//! The whole durable state as portable rows, for snapshots: the same tables and columns in every backend
//! (aggregates as bytes under their kind, idempotency answers, webhook registrations, the delivery outbox and its
//! attempts, metadata such as the clock offset, the token signing key and the certificate authority). Nothing here
//! knows what an aggregate is; the snapshot file format lives in [`crate::platform::snapshot`].
//!
//! Left out on purpose: fault rules and which partner acts for which MSN (configuration, set again at start), and
//! delivery leases and in-flight idempotency claims (they belong to running processes).

use std::collections::BTreeMap;

use base64::Engine as _;

/// The type of a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ColType {
    /// Text.
    Text,
    /// A 64-bit integer.
    Int,
    /// Bytes (base64 in a snapshot).
    Bytes,
}

/// A column: name, type, and whether it may be null.
pub(crate) type Column = (&'static str, ColType, bool);

use ColType::{Bytes, Int, Text};

/// Every table a snapshot holds, in the order they are loaded, with their columns (the primary key first).
pub(crate) const TABLES: &[(&str, &[Column])] = &[
    ("meta", &[("key", Text, false), ("value", Text, false)]),
    (
        "aggregates",
        &[
            ("kind", Text, false),
            ("tenant", Text, false),
            ("id", Text, false),
            ("state", Text, false),
            ("due_ms", Int, true),
            ("data", Bytes, false),
            ("created_ms", Int, false),
            ("parent", Text, true),
        ],
    ),
    (
        "idempotency",
        &[
            ("scope", Text, false),
            ("fingerprint", Bytes, false),
            ("status", Int, false),
            ("headers", Text, false),
            ("body", Bytes, false),
            ("created_ms", Int, false),
        ],
    ),
    (
        "webhooks",
        &[
            ("id", Text, false),
            ("owner", Text, false),
            ("url", Text, false),
            ("events", Text, false),
            ("secret", Text, false),
            ("created_ms", Int, false),
            ("failing_since_ms", Int, true),
            ("last_success_ms", Int, true),
        ],
    ),
    (
        "deliveries",
        &[
            ("id", Int, false),
            ("webhook_id", Text, false),
            ("tenant", Text, false),
            ("subject", Text, false),
            ("event_type", Text, false),
            ("event_id", Text, false),
            ("event_name", Text, false),
            ("payload", Bytes, false),
            ("state", Text, false),
            ("attempts", Int, false),
            ("first_attempt_ms", Int, true),
            ("next_ms", Int, false),
            ("created_ms", Int, false),
            ("done_ms", Int, true),
        ],
    ),
    (
        "attempts",
        &[
            ("id", Int, false),
            ("delivery_id", Int, false),
            ("webhook_id", Text, false),
            ("subject", Text, false),
            ("at_ms", Int, false),
            ("data", Text, false),
        ],
    ),
];

/// The tables whose `id` a backend numbers itself (it must continue after the highest loaded id).
pub(crate) const SERIAL_TABLES: &[&str] = &["deliveries", "attempts"];

/// One value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cell {
    /// SQL null.
    Null,
    /// An integer.
    Int(i64),
    /// Text.
    Text(String),
    /// Bytes.
    Bytes(Vec<u8>),
}

/// Every row of every table in [`TABLES`], by table name, each row in column order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct StateDump {
    /// Rows by table.
    pub tables: BTreeMap<String, Vec<Vec<Cell>>>,
}

/// Why rows do not fit the tables.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{table}, row {row}, `{column}`: {reason}")]
pub(crate) struct RowError {
    /// The table.
    pub table: String,
    /// The row (0-based).
    pub row: usize,
    /// The column.
    pub column: String,
    /// What is wrong.
    pub reason: String,
}

/// The columns of a table.
pub(crate) fn columns(table: &str) -> Option<&'static [Column]> {
    TABLES.iter().find(|(t, _)| *t == table).map(|(_, c)| *c)
}

impl StateDump {
    /// The rows of a table (none when absent).
    pub(crate) fn rows(&self, table: &str) -> &[Vec<Cell>] {
        self.tables.get(table).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The dump as JSON: `{table: [[cell, ...], ...]}`, bytes in base64.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut out = serde_json::Map::new();
        for (table, _) in TABLES {
            let rows: Vec<serde_json::Value> = self
                .rows(table)
                .iter()
                .map(|row| {
                    row.iter()
                        .map(|c| match c {
                            Cell::Null => serde_json::Value::Null,
                            Cell::Int(i) => (*i).into(),
                            Cell::Text(t) => t.clone().into(),
                            Cell::Bytes(b) => b64.encode(b).into(),
                        })
                        .collect()
                })
                .collect();
            out.insert((*table).to_owned(), rows.into());
        }
        serde_json::Value::Object(out)
    }

    /// Reads the JSON of [`StateDump::to_json`], checking every table, row and cell against [`TABLES`].
    pub(crate) fn from_json(v: &serde_json::Value) -> Result<StateDump, RowError> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let err = |table: &str, row: usize, column: &str, reason: String| RowError {
            table: table.to_owned(),
            row,
            column: column.to_owned(),
            reason,
        };
        let obj = v
            .as_object()
            .ok_or_else(|| err("state", 0, "", "not an object of tables".into()))?;
        if let Some(t) = obj.keys().find(|t| columns(t).is_none()) {
            return Err(err(t, 0, "", "an unknown table".into()));
        }
        let mut dump = StateDump::default();
        for (table, cols) in TABLES {
            let Some(rows) = obj.get(*table) else {
                return Err(err(table, 0, "", "the table is missing".into()));
            };
            let rows = rows
                .as_array()
                .ok_or_else(|| err(table, 0, "", "not an array of rows".into()))?;
            let mut out = Vec::with_capacity(rows.len());
            for (i, row) in rows.iter().enumerate() {
                let cells = row
                    .as_array()
                    .filter(|a| a.len() == cols.len())
                    .ok_or_else(|| {
                        err(
                            table,
                            i,
                            "",
                            format!("not an array of {} values", cols.len()),
                        )
                    })?;
                let mut parsed = Vec::with_capacity(cols.len());
                for ((name, ty, nullable), c) in cols.iter().zip(cells) {
                    let cell = match (ty, c) {
                        (_, serde_json::Value::Null) if *nullable => Cell::Null,
                        (_, serde_json::Value::Null) => {
                            return Err(err(table, i, name, "must not be null".into()));
                        }
                        (Int, serde_json::Value::Number(n)) => {
                            Cell::Int(n.as_i64().ok_or_else(|| {
                                err(table, i, name, "not a 64-bit integer".into())
                            })?)
                        }
                        (Text, serde_json::Value::String(s)) => Cell::Text(s.clone()),
                        (Bytes, serde_json::Value::String(s)) => Cell::Bytes(
                            b64.decode(s)
                                .map_err(|e| err(table, i, name, format!("not base64: {e}")))?,
                        ),
                        (ty, _) => {
                            return Err(err(table, i, name, format!("not {ty:?}").to_lowercase()));
                        }
                    };
                    parsed.push(cell);
                }
                out.push(parsed);
            }
            dump.tables.insert((*table).to_owned(), out);
        }
        Ok(dump)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_and_refusals() {
        let mut d = StateDump::default();
        for (t, _) in TABLES {
            d.tables.insert((*t).to_owned(), vec![]);
        }
        d.tables.insert(
            "meta".into(),
            vec![vec![Cell::Text("k".into()), Cell::Text("v".into())]],
        );
        d.tables.insert(
            "attempts".into(),
            vec![vec![
                Cell::Int(1),
                Cell::Int(2),
                Cell::Text("w".into()),
                Cell::Text("s".into()),
                Cell::Int(3),
                Cell::Text("{}".into()),
            ]],
        );
        let j = d.to_json();
        assert_eq!(StateDump::from_json(&j).unwrap(), d);
        let mut bad = j.clone();
        bad["meta"][0][1] = serde_json::Value::Null;
        assert_eq!(StateDump::from_json(&bad).unwrap_err().column, "value");
        let mut bad = j.clone();
        bad["attempts"][0][0] = "one".into();
        assert_eq!(StateDump::from_json(&bad).unwrap_err().reason, "not int");
        let mut bad = j.clone();
        bad["rockets"] = serde_json::json!([]);
        assert_eq!(StateDump::from_json(&bad).unwrap_err().table, "rockets");
        let mut bad = j;
        bad.as_object_mut().unwrap().remove("webhooks");
        assert_eq!(StateDump::from_json(&bad).unwrap_err().table, "webhooks");
    }
}
