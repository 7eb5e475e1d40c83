//! MySQL/MariaDB capture DDL: the changelog and three triggers per table.
//!
//! Owns the SQL text only; `crate::endpoint` runs it. Triggers stay quiet while the writing
//! session has `@dualwrite_origin = 1`, which dualwrite sets around its own write
//! transactions (see `SET_ORIGIN` / `CLEAR_ORIGIN`). MySQL DDL is not transactional, so
//! triggers are created `IF NOT EXISTS` (never dropped and recreated: no capture gap);
//! a changed primary key needs `remove_capture` then `install_capture`.
//! Needs MariaDB ≥ 10.1.4 or MySQL ≥ 8.0.29 (`CREATE TRIGGER IF NOT EXISTS`).

use super::{CHANGELOG_TABLE, Event, KeyColumn, drop_triggers, string_literal, trigger_name};
use crate::endpoint::sql::{Stmt, quote_with};
use crate::endpoint::{TableName, Value, ValueKind};

pub(crate) const SET_ORIGIN: &str = "SET @dualwrite_origin = 1";
pub(crate) const CLEAR_ORIGIN: &str = "SET @dualwrite_origin = NULL";

fn q(ident: &str) -> String {
    quote_with(ident, '`')
}

/// The changelog table in the endpoint's own database.
pub(crate) fn changelog(home: &str) -> String {
    format!("{}.{}", q(home), q(CHANGELOG_TABLE))
}

/// The key of the `OLD` or `NEW` row as a JSON array of strings; timestamps in UTC.
fn key_json(row: &str, keys: &[KeyColumn]) -> String {
    let items: Vec<String> = keys
        .iter()
        .map(|k| {
            let col = format!("{row}.{}", q(k.name));
            match k.kind {
                ValueKind::Bytes => format!("CONCAT('\\\\x', LOWER(HEX({col})))"),
                ValueKind::TimestampTz => {
                    format!("CAST(CONVERT_TZ({col}, @@session.time_zone, '+00:00') AS CHAR)")
                }
                _ => format!("CAST({col} AS CHAR)"),
            }
        })
        .collect();
    format!("JSON_ARRAY({})", items.join(", "))
}

fn trigger(table: &TableName, event: Event) -> String {
    match &table.schema {
        Some(schema) => format!("{}.{}", q(schema), q(&trigger_name(table, event))),
        None => q(&trigger_name(table, event)),
    }
}

/// Creates the changelog and the triggers of `table` (`quoted` is its quoted name), each
/// if missing.
pub(crate) fn install(
    home: &str,
    table: &TableName,
    quoted: &str,
    keys: &[KeyColumn],
) -> Vec<Stmt> {
    let changelog = changelog(home);
    let mut ddl = vec![format!(
        "CREATE TABLE IF NOT EXISTS {changelog} (seq BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, \
         table_name VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL, op CHAR(1) NOT NULL, \
         key_json TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL, changed_at DATETIME(6) NOT NULL, \
         KEY {} (table_name, seq)) ENGINE=InnoDB",
        q(&format!("{CHANGELOG_TABLE}_by_table"))
    )];
    let name = string_literal(&table.to_string(), true);
    let insert = |op: &str, row: &str| {
        format!(
            "INSERT INTO {changelog} (table_name, op, key_json, changed_at) VALUES ({name}, '{op}', {}, UTC_TIMESTAMP(6));",
            key_json(row, keys)
        )
    };
    let key_changed = keys
        .iter()
        .map(|k| {
            format!(
                "CAST(OLD.{c} AS BINARY) <=> CAST(NEW.{c} AS BINARY)",
                c = q(k.name)
            )
        })
        .collect::<Vec<_>>()
        .join(" AND ");
    for event in Event::ALL {
        let body = match event {
            Event::Insert => insert("U", "NEW"),
            Event::Delete => insert("D", "OLD"),
            Event::Update => format!(
                "IF NOT ({key_changed}) THEN {} END IF; {}",
                insert("D", "OLD"),
                insert("U", "NEW")
            ),
        };
        ddl.push(format!(
            "CREATE TRIGGER IF NOT EXISTS {} AFTER {} ON {quoted} FOR EACH ROW \
             BEGIN IF COALESCE(@dualwrite_origin, 0) <> 1 THEN {body} END IF; END",
            trigger(table, event),
            event.sql(),
        ));
    }
    super::ddl(ddl)
}

/// Drops the triggers of `table`.
pub(crate) fn remove(table: &TableName) -> Vec<Stmt> {
    drop_triggers(|e| trigger(table, e))
}

/// Counts the triggers of `table` that exist (3 when installed).
pub(crate) fn check(table: &TableName) -> (Stmt, i64) {
    let schema = table.schema.clone().map(Value::Text).unwrap_or(Value::Null);
    let mut params = vec![schema, Value::Text(table.name.clone())];
    params.extend(
        Event::ALL
            .iter()
            .map(|e| Value::Text(trigger_name(table, *e))),
    );
    let sql = "SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = COALESCE(?, DATABASE()) \
               AND EVENT_OBJECT_TABLE = ? AND TRIGGER_NAME IN (?, ?, ?)";
    (Stmt::new(sql, params), Event::ALL.len() as i64)
}
