//! SQLite capture DDL: the changelog, the suppression table and three triggers per table.
//!
//! Owns the SQL text only; `crate::endpoint` runs it. Triggers are skipped while the
//! writing transaction holds a row in [`SUPPRESS_TABLE`]: dualwrite inserts one at the start
//! of its own write transactions and deletes it before commit, and since SQLite serializes
//! writers, no other connection ever sees it. Exact, no time window.

use super::{
    CHANGELOG_TABLE, Event, KeyColumn, SUPPRESS_TABLE, drop_triggers, string_literal, trigger_name,
};
use crate::endpoint::sql::{Stmt, quote_with};
use crate::endpoint::{TableName, Value, ValueKind};

fn q(ident: &str) -> String {
    quote_with(ident, '"')
}

/// The text of the key as a JSON array of strings, for the `OLD` or `NEW` row.
fn key_json(row: &str, keys: &[KeyColumn]) -> String {
    let items: Vec<String> = keys
        .iter()
        .map(|k| match k.kind {
            ValueKind::Bytes => format!("'\\x' || lower(hex({row}.{}))", q(k.name)),
            _ => format!("CAST({row}.{} AS TEXT)", q(k.name)),
        })
        .collect();
    format!("json_array({})", items.join(", "))
}

const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

/// Creates the changelog and suppression tables if missing and (re)creates the triggers
/// of `table`; run in one transaction, so capture never has a gap.
pub(crate) fn install(table: &TableName, keys: &[KeyColumn]) -> Vec<Stmt> {
    let changelog = q(CHANGELOG_TABLE);
    let mut ddl = vec![
        format!(
            "CREATE TABLE IF NOT EXISTS {changelog} (seq INTEGER PRIMARY KEY AUTOINCREMENT, \
             table_name TEXT NOT NULL, op TEXT NOT NULL, key_json TEXT NOT NULL, changed_at TEXT NOT NULL)"
        ),
        format!(
            "CREATE INDEX IF NOT EXISTS {} ON {changelog} (table_name, seq)",
            q(&format!("{CHANGELOG_TABLE}_by_table"))
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {} (marker INTEGER)",
            q(SUPPRESS_TABLE)
        ),
    ];
    let name = string_literal(&table.to_string(), false);
    let insert = |op: &str, row: &str| {
        format!(
            "INSERT INTO {changelog} (table_name, op, key_json, changed_at) VALUES ({name}, '{op}', {}, {NOW});",
            key_json(row, keys)
        )
    };
    for event in Event::ALL {
        let body = match event {
            Event::Insert => insert("U", "NEW"),
            Event::Delete => insert("D", "OLD"),
            Event::Update => format!(
                "INSERT INTO {changelog} (table_name, op, key_json, changed_at) \
                 SELECT {name}, 'D', {old}, {NOW} WHERE {old} IS NOT {new}; {}",
                insert("U", "NEW"),
                old = key_json("OLD", keys),
                new = key_json("NEW", keys),
            ),
        };
        let trigger = q(&trigger_name(table, event));
        ddl.push(format!("DROP TRIGGER IF EXISTS {trigger}"));
        ddl.push(format!(
            "CREATE TRIGGER {trigger} AFTER {} ON {} FOR EACH ROW \
             WHEN NOT EXISTS (SELECT 1 FROM {}) BEGIN {body} END",
            event.sql(),
            q(&table.name),
            q(SUPPRESS_TABLE)
        ));
    }
    super::ddl(ddl)
}

/// Drops the triggers of `table`.
pub(crate) fn remove(table: &TableName) -> Vec<Stmt> {
    drop_triggers(|e| q(&trigger_name(table, e)))
}

/// Counts the triggers of `table` that exist (3 when installed).
pub(crate) fn check(table: &TableName) -> (Stmt, i64) {
    let mut params = vec![Value::Text(table.name.clone())];
    params.extend(
        Event::ALL
            .iter()
            .map(|e| Value::Text(trigger_name(table, *e))),
    );
    let sql = "SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?1 AND name IN (?2, ?3, ?4)";
    (Stmt::new(sql, params), Event::ALL.len() as i64)
}
