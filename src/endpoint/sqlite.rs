//! The SQLite engine: rusqlite behind `spawn_blocking`, one connection in a mutex.
//!
//! Owns: opening the file (WAL journal, busy timeout), SQLite type names ↔ [`ValueKind`],
//! binding and reading values, echo suppression in write transactions and mapping SQLite
//! result codes to [`WriteErrorClass`].
//!
//! Does not own: SQL shapes (`sql.rs`) or trigger DDL (`crate::capture::sqlite`).
//!
//! Storage: SQLite has no date or decimal types, so dates, timestamps and JSON are stored as
//! text (`2026-11-22`, `2026-11-22 10:15:00.123456`, `2026-11-22T10:15:00.123456Z` for
//! timestamptz), booleans as 0/1 and decimals as text that SQLite's NUMERIC affinity keeps
//! exact up to 15 significant digits.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, Value as SqlValue, ValueRef};
use rusqlite::{Connection, TransactionBehavior, params_from_iter};

use super::sql::{Dialect, Engine, Statement, Stmt, on_conflict_clause};
use super::{
    ColumnInfo, EndpointError, Row, TableInfo, TableName, Value, ValueKind, WriteError,
    WriteErrorClass, value,
};
use crate::capture::{self, SUPPRESS_TABLE};

const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) struct Sqlite {
    conn: Arc<Mutex<Connection>>,
}

impl Sqlite {
    pub(crate) async fn open(path: &Path) -> Result<Sqlite, EndpointError> {
        let path = path.to_path_buf();
        let conn = tokio::task::spawn_blocking(move || -> rusqlite::Result<Connection> {
            let conn = Connection::open(&path)?;
            conn.busy_timeout(BUSY_TIMEOUT)?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.set_prepared_statement_cache_capacity(64);
            Ok(conn)
        })
        .await
        .map_err(|e| connect_error(e.to_string()))?
        .map_err(|e| connect_error(e.to_string()))?;
        Ok(Sqlite {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` on the connection in the blocking pool.
    async fn run<T, F>(&self, f: F) -> Result<T, WriteError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, WriteError> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut conn)
        })
        .await
        .map_err(|e| {
            WriteError::new(
                WriteErrorClass::Network,
                None,
                format!("SQLite task failed: {e}"),
            )
        })?
    }
}

fn connect_error(message: String) -> EndpointError {
    EndpointError::Connect {
        engine: "sqlite",
        message,
    }
}

/// The kind of a declared column type, following SQLite's own affinity rules where they
/// apply and the common type names where they don't.
fn kind_of(declared: &str) -> ValueKind {
    let t = declared.to_ascii_uppercase();
    let base = t.split('(').next().unwrap_or("").trim();
    let has = |s: &str| t.contains(s);
    if has("BOOL") {
        ValueKind::Bool
    } else if base == "DATE" {
        ValueKind::Date
    } else if base == "TIMESTAMPTZ" || (has("WITH TIME ZONE") && !has("WITHOUT")) {
        ValueKind::TimestampTz
    } else if base.starts_with("DATETIME") || base.starts_with("TIMESTAMP") {
        ValueKind::Timestamp
    } else if base == "JSON" || base == "JSONB" {
        ValueKind::Json
    } else if has("INT") {
        ValueKind::Int
    } else if matches!(base, "DECIMAL" | "NUMERIC" | "NUMBER" | "MONEY") {
        ValueKind::Decimal
    } else if has("REAL") || has("FLOA") || has("DOUB") {
        ValueKind::Float
    } else if has("BLOB") || has("BINARY") || has("BYTEA") {
        ValueKind::Bytes
    } else {
        ValueKind::Text
    }
}

fn to_sql(value: &Value) -> SqlValue {
    match value {
        Value::Null => SqlValue::Null,
        Value::Bool(b) => SqlValue::Integer(i64::from(*b)),
        Value::Int(i) => SqlValue::Integer(*i),
        Value::Float(f) => SqlValue::Real(*f),
        Value::Text(s) => SqlValue::Text(s.clone()),
        Value::Bytes(b) => SqlValue::Blob(b.clone()),
        Value::Decimal(d) => SqlValue::Text(d.to_string()),
        Value::Date(d) => SqlValue::Text(value::format_date(*d)),
        Value::Timestamp(t) => SqlValue::Text(value::format_timestamp(*t, ' ', "")),
        Value::TimestampTz(t) => SqlValue::Text(value::format_timestamp(t.naive_utc(), 'T', "Z")),
        Value::Json(j) => SqlValue::Text(j.to_string()),
    }
}

/// A parameter bound straight from a [`Value`]: text and blobs by reference, no copy.
struct Bind<'a>(&'a Value);

impl rusqlite::ToSql for Bind<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self.0 {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Value::Bytes(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
            Value::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            Value::Float(f) => ToSqlOutput::Borrowed(ValueRef::Real(*f)),
            Value::Bool(b) => ToSqlOutput::Borrowed(ValueRef::Integer(i64::from(*b))),
            other => ToSqlOutput::Owned(to_sql(other)),
        })
    }
}

fn binds(values: &[Value]) -> impl rusqlite::Params + '_ {
    params_from_iter(values.iter().map(Bind))
}

/// A stored value as its column's kind. SQLite keeps any value in any column: one that does
/// not fit its column's declared kind is read as it is stored (text, bytes), so the record
/// fails alone as a TransformError when it is written, instead of failing the whole read.
fn from_sql(value: ValueRef<'_>, kind: ValueKind) -> Result<Value, WriteError> {
    let raw = match value {
        ValueRef::Null => return Ok(Value::Null),
        ValueRef::Integer(i) => Value::Int(i),
        ValueRef::Real(f) => Value::Float(f),
        ValueRef::Text(t) => match std::str::from_utf8(t) {
            Ok(text) => {
                return Ok(
                    Value::from_text(text, kind).unwrap_or_else(|_| Value::Text(text.to_string()))
                );
            }
            Err(_) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        },
        ValueRef::Blob(b) => Value::Bytes(b.to_vec()),
    };
    Ok(raw.clone().into_kind(kind).unwrap_or(raw))
}

/// Extended result code names for the codes dualwrite tells apart.
fn code_name(extended: i32) -> String {
    let name = match extended {
        275 => "SQLITE_CONSTRAINT_CHECK",
        531 => "SQLITE_CONSTRAINT_COMMITHOOK",
        787 => "SQLITE_CONSTRAINT_FOREIGNKEY",
        1043 => "SQLITE_CONSTRAINT_FUNCTION",
        1299 => "SQLITE_CONSTRAINT_NOTNULL",
        1555 => "SQLITE_CONSTRAINT_PRIMARYKEY",
        1811 => "SQLITE_CONSTRAINT_TRIGGER",
        2067 => "SQLITE_CONSTRAINT_UNIQUE",
        2579 => "SQLITE_CONSTRAINT_ROWID",
        3091 => "SQLITE_CONSTRAINT_DATATYPE",
        19 => "SQLITE_CONSTRAINT",
        1 => "SQLITE_ERROR",
        5 => "SQLITE_BUSY",
        6 => "SQLITE_LOCKED",
        8 => "SQLITE_READONLY",
        10 => "SQLITE_IOERR",
        13 => "SQLITE_FULL",
        14 => "SQLITE_CANTOPEN",
        18 => "SQLITE_TOOBIG",
        20 => "SQLITE_MISMATCH",
        _ => return format!("SQLITE_{extended}"),
    };
    name.to_string()
}

fn classify(e: rusqlite::Error) -> WriteError {
    use rusqlite::ErrorCode as C;
    let message = e.to_string();
    match &e {
        rusqlite::Error::SqliteFailure(f, _) => {
            let class = match f.code {
                C::ConstraintViolation | C::TypeMismatch | C::TooBig => {
                    WriteErrorClass::Application
                }
                C::DatabaseBusy
                | C::DatabaseLocked
                | C::SystemIoFailure
                | C::CannotOpen
                | C::DiskFull => WriteErrorClass::Network,
                _ if message.contains("no such table")
                    || message.contains("no such column")
                    || message.contains("has no column named") =>
                {
                    WriteErrorClass::Schema
                }
                _ => WriteErrorClass::Application,
            };
            WriteError::new(class, Some(code_name(f.extended_code)), message)
        }
        rusqlite::Error::ToSqlConversionFailure(_)
        | rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..) => {
            WriteError::new(WriteErrorClass::Transform, None, message)
        }
        _ => WriteError::new(WriteErrorClass::Application, None, message),
    }
}

impl Dialect for Sqlite {
    fn placeholder(&self, n: usize) -> String {
        format!("?{n}")
    }

    fn max_params(&self) -> usize {
        32766
    }

    fn upsert_clause(&self, keys: &[String], others: &[String]) -> String {
        on_conflict_clause(keys, others)
    }

    fn now_sql(&self) -> &'static str {
        "SELECT strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
    }

    /// Every run of upserts: SQLite is in process, so one prepared single-row upsert run
    /// per row costs no round trips and parses nothing per batch.
    fn bulk_load_min_rows(&self) -> Option<usize> {
        Some(1)
    }
}

impl Engine for Sqlite {
    const NAME: &'static str = "sqlite";

    async fn introspect(&self, table: &TableName) -> Result<Option<TableInfo>, WriteError> {
        let schema = table.schema.clone().unwrap_or_else(|| "main".to_string());
        let name = table.name.clone();
        self.run(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT name, type, \"notnull\", pk FROM pragma_table_info(?1, ?2) ORDER BY cid")
                .map_err(classify)?;
            let rows = stmt
                .query_map([&name, &schema], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, bool>(2)?, r.get::<_, i64>(3)?))
                })
                .map_err(classify)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(classify)?;
            if rows.is_empty() {
                return Ok(None);
            }
            let mut pk: Vec<(i64, String)> = rows.iter().filter(|r| r.3 > 0).map(|r| (r.3, r.0.clone())).collect();
            pk.sort();
            let columns = rows
                .into_iter()
                .map(|(name, db_type, notnull, pk_pos)| ColumnInfo {
                    kind: kind_of(&db_type),
                    nullable: !notnull && pk_pos == 0,
                    name,
                    db_type,
                })
                .collect();
            Ok(Some(TableInfo {
                columns,
                primary_key: pk.into_iter().map(|(_, n)| n).collect(),
            }))
        })
        .await
    }

    async fn query(&self, stmt: Stmt, kinds: Vec<ValueKind>) -> Result<Vec<Row>, WriteError> {
        self.run(move |conn| {
            let mut prepared = conn.prepare_cached(&stmt.sql).map_err(classify)?;
            let mut rows = prepared.query(binds(&stmt.params)).map_err(classify)?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(classify)? {
                let values = kinds
                    .iter()
                    .enumerate()
                    .map(|(i, kind)| from_sql(row.get_ref(i).map_err(classify)?, *kind))
                    .collect::<Result<Row, _>>()?;
                out.push(values);
            }
            Ok(out)
        })
        .await
    }

    async fn transaction(
        &self,
        stmts: Vec<Statement<'_>>,
        suppress_echo: bool,
    ) -> Result<u64, WriteError> {
        // The blocking pool needs statements that own their rows.
        let stmts: Vec<Stmt> = stmts.into_iter().map(Statement::into_owned).collect();
        self.run(move |conn| write_transaction(conn, &stmts, suppress_echo))
            .await
    }

    fn capture_install(
        &self,
        table: &TableName,
        info: &TableInfo,
    ) -> Result<Vec<Stmt>, EndpointError> {
        main_only(table)?;
        Ok(capture::sqlite::install(table, &capture::key_columns(info)))
    }

    fn capture_remove(&self, table: &TableName) -> Result<Vec<Stmt>, EndpointError> {
        main_only(table)?;
        Ok(capture::sqlite::remove(table))
    }

    fn capture_check(&self, table: &TableName) -> Result<(Stmt, i64), EndpointError> {
        main_only(table)?;
        Ok(capture::sqlite::check(table))
    }
}

/// Runs `stmts` in one immediate transaction; with `suppress_echo`, the marker row that
/// tells the capture triggers to stay quiet is there until just before the commit.
fn write_transaction(
    conn: &mut Connection,
    stmts: &[Statement<'_>],
    suppress_echo: bool,
) -> Result<u64, WriteError> {
    let suppress = crate::endpoint::sql::quote_with(SUPPRESS_TABLE, '"');
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(classify)?;
    if suppress_echo {
        tx.execute(
            &format!("CREATE TABLE IF NOT EXISTS {suppress} (marker INTEGER)"),
            [],
        )
        .map_err(classify)?;
        tx.execute(&format!("INSERT INTO {suppress} (marker) VALUES (1)"), [])
            .map_err(classify)?;
    }
    let mut affected = 0u64;
    for stmt in stmts {
        if let Some(load) = &stmt.load {
            // One prepared single-row upsert, run per row: nothing to parse again.
            let mut prepared = tx.prepare_cached(&load.row_sql).map_err(classify)?;
            for row in &load.rows {
                affected += prepared.execute(binds(row)).map_err(classify)? as u64;
            }
            continue;
        }
        let mut prepared = tx.prepare_cached(&stmt.sql).map_err(classify)?;
        affected += prepared.execute(binds(&stmt.params)).map_err(classify)? as u64;
    }
    if suppress_echo {
        tx.execute(&format!("DELETE FROM {suppress}"), [])
            .map_err(classify)?;
    }
    tx.commit().map_err(classify)?;
    Ok(affected)
}

/// SQLite triggers can only write to tables of their own database, and the changelog
/// lives in `main`.
fn main_only(table: &TableName) -> Result<(), EndpointError> {
    match table.schema.as_deref() {
        None | Some("main") => Ok(()),
        Some(other) => Err(EndpointError::Unsupported {
            engine: "sqlite",
            what: format!("change capture on attached database {other:?}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_types_map_to_kinds() {
        for (decl, kind) in [
            ("INTEGER", ValueKind::Int),
            ("BIGINT", ValueKind::Int),
            ("BOOLEAN", ValueKind::Bool),
            ("DECIMAL(10,2)", ValueKind::Decimal),
            ("DOUBLE PRECISION", ValueKind::Float),
            ("VARCHAR(20)", ValueKind::Text),
            ("BLOB", ValueKind::Bytes),
            ("DATE", ValueKind::Date),
            ("DATETIME", ValueKind::Timestamp),
            ("TIMESTAMP WITH TIME ZONE", ValueKind::TimestampTz),
            ("TIMESTAMPTZ", ValueKind::TimestampTz),
            ("JSON", ValueKind::Json),
            ("", ValueKind::Text),
        ] {
            assert_eq!(kind_of(decl), kind, "{decl}");
        }
    }
}
