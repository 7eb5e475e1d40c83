//! Change capture by triggers: the changelog model and each engine's trigger DDL.
//!
//! Owns: what a captured change is ([`Change`], [`ChangeOp`]), the one changelog table per
//! endpoint ([`CHANGELOG_TABLE`]: `seq` autoincrement key, `table_name`, `op` `'U'|'D'`,
//! `key_json`, `changed_at` UTC), trigger naming, and the DDL text per engine in
//! `sqlite.rs`, `postgres.rs`, `mysql.rs`.
//!
//! Does not own: running that DDL or reading the changelog (the endpoint does, through its
//! connection), nor cursors (the state store keeps each map's `seq`).
//!
//! Invariants:
//! - A trigger records the primary key (a JSON array of the key values as text, in key
//!   order) and the operation only; the row itself is read when the change is applied,
//!   so a retry always writes the current row.
//! - An UPDATE that changes the key records a delete of the old key, then an upsert of the
//!   new key.
//! - **dualwrite's own writes are never captured**: every trigger first checks the engine's
//!   echo-suppression mark (PostgreSQL transaction setting `dualwrite.origin`, MariaDB session
//!   variable `@dualwrite_origin`, SQLite row in [`SUPPRESS_TABLE`]).
//! - Installing is idempotent and shared: one set of triggers per table serves every map.
//! - Commit order: PostgreSQL and MySQL assign `seq` at insert time, not commit time, so
//!   an open transaction can hold a lower `seq` than one already committed. Readers never
//!   pass such a `seq` (PostgreSQL: advisory-lock horizon, see `postgres.rs`; MySQL: a READ
//!   UNCOMMITTED look after each page). SQLite serializes writers and needs neither.

pub(crate) mod mysql;
pub(crate) mod postgres;
pub(crate) mod sqlite;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::endpoint::sql::Stmt;
use crate::endpoint::{TableInfo, TableName, Value, ValueKind};

/// The changelog table every endpoint keeps (one per endpoint, shared by all tables).
pub const CHANGELOG_TABLE: &str = "_dualwrite_changelog";

/// SQLite only: a row here (inserted and deleted inside dualwrite's own write transaction)
/// tells the triggers to stay quiet.
pub const SUPPRESS_TABLE: &str = "_dualwrite_suppress";

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ChangeOp {
    /// Inserted or updated: write the current row (if it still exists).
    Upsert,
    /// Deleted.
    Delete,
}

impl ChangeOp {
    /// The one-letter code stored in the changelog.
    pub fn code(self) -> &'static str {
        match self {
            ChangeOp::Upsert => "U",
            ChangeOp::Delete => "D",
        }
    }

    pub fn from_code(code: &str) -> Option<ChangeOp> {
        match code.trim() {
            "U" => Some(ChangeOp::Upsert),
            "D" => Some(ChangeOp::Delete),
            _ => None,
        }
    }
}

/// One captured change.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Change {
    /// Position in the endpoint's changelog; increasing.
    pub seq: i64,
    pub op: ChangeOp,
    /// Primary key values, in key order, of the key columns' kinds.
    pub key: Vec<Value>,
    pub changed_at: DateTime<Utc>,
}

/// A changelog entry that cannot be read back.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CaptureError {
    #[error("changelog entry {seq}: unknown operation {op:?}")]
    BadOp { seq: i64, op: String },
    #[error("changelog entry {seq}: {source}")]
    BadKey {
        seq: i64,
        #[source]
        source: crate::endpoint::ConvertError,
    },
    #[error("changelog entry has an unexpected shape: {0}")]
    BadRow(String),
}

/// The row events a capture trigger fires on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    Insert,
    Update,
    Delete,
}

impl Event {
    pub(crate) const ALL: [Event; 3] = [Event::Insert, Event::Update, Event::Delete];

    pub(crate) fn sql(self) -> &'static str {
        match self {
            Event::Insert => "INSERT",
            Event::Update => "UPDATE",
            Event::Delete => "DELETE",
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Event::Insert => "ins",
            Event::Update => "upd",
            Event::Delete => "del",
        }
    }
}

/// A key column as the trigger DDL needs it.
pub(crate) struct KeyColumn<'a> {
    pub name: &'a str,
    pub kind: ValueKind,
}

/// The primary key columns of `info`, in key order.
pub(crate) fn key_columns(info: &TableInfo) -> Vec<KeyColumn<'_>> {
    info.primary_key
        .iter()
        .filter_map(|k| info.column(k))
        .map(|c| KeyColumn {
            name: &c.name,
            kind: c.kind,
        })
        .collect()
}

/// Statements without parameters, as DDL is run.
pub(crate) fn ddl(statements: Vec<String>) -> Vec<Stmt> {
    statements
        .into_iter()
        .map(|sql| Stmt::new(sql, vec![]))
        .collect()
}

/// `DROP TRIGGER IF EXISTS` for each event's trigger, named (and quoted) by `name`.
pub(crate) fn drop_triggers(name: impl Fn(Event) -> String) -> Vec<Stmt> {
    ddl(Event::ALL
        .iter()
        .map(|e| format!("DROP TRIGGER IF EXISTS {}", name(*e)))
        .collect())
}

/// Name of the trigger for `event` on `table` where trigger names are per schema (SQLite,
/// MySQL): `_dw_<table>_<hash>_<event>`, at most 64 characters, stable for a table name.
pub(crate) fn trigger_name(table: &TableName, event: Event) -> String {
    let readable: String = table
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    let hash = hex::encode(&Sha256::digest(table.to_string().as_bytes())[..4]);
    format!("_dw_{readable}_{hash}_{}", event.suffix())
}

/// A SQL string literal (`'it''s'`), for names the DDL must embed as text. Both engines
/// that use it here accept doubled quotes; MySQL backslashes are doubled too when asked.
pub(crate) fn string_literal(text: &str, escape_backslash: bool) -> String {
    let mut escaped = text.replace('\'', "''");
    if escape_backslash {
        escaped = escaped.replace('\\', "\\\\");
    }
    format!("'{escaped}'")
}

/// Decodes one changelog row (`seq`, `op`, `key_json`, `changed_at`) as read from any engine.
pub(crate) fn change_from_row(
    row: Vec<Value>,
    key_kinds: &[ValueKind],
) -> Result<Change, CaptureError> {
    let [seq, op, key, changed_at]: [Value; 4] = row
        .try_into()
        .map_err(|r: Vec<Value>| CaptureError::BadRow(format!("{} columns", r.len())))?;
    let (Value::Int(seq), Value::Text(op), Value::Text(key), Value::TimestampTz(changed_at)) =
        (seq, op, key, changed_at)
    else {
        return Err(CaptureError::BadRow("unexpected column types".into()));
    };
    let op = ChangeOp::from_code(&op).ok_or(CaptureError::BadOp { seq, op })?;
    let key = crate::endpoint::key_from_json(&key, key_kinds)
        .map_err(|source| CaptureError::BadKey { seq, source })?;
    Ok(Change {
        seq,
        op,
        key,
        changed_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_names_are_short_stable_and_distinct_per_table() {
        let a = TableName::parse("orders").unwrap();
        let b = TableName::parse("Orders").unwrap();
        let long = TableName::parse(&"x".repeat(200)).unwrap();
        assert_eq!(
            trigger_name(&a, Event::Insert),
            trigger_name(&a, Event::Insert)
        );
        assert_ne!(
            trigger_name(&a, Event::Insert),
            trigger_name(&b, Event::Insert)
        );
        assert!(trigger_name(&long, Event::Update).len() <= 64);
    }

    #[test]
    fn string_literals_escape_quotes() {
        assert_eq!(string_literal("it's", false), "'it''s'");
        assert_eq!(string_literal("a\\b", true), "'a\\\\b'");
    }
}
