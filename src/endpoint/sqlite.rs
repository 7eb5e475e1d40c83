//! The SQLite engine: rusqlite behind `spawn_blocking`, one connection in a mutex.
//!
//! Owns: opening the file (busy timeout; the journal mode stays the one the database's
//! owner chose: dualwrite never switches a user's database to or from WAL), SQLite type
//! names ↔ [`ValueKind`], binding and reading values, echo suppression in write
//! transactions, in-database copies between SQLite files, and mapping SQLite result codes to
//! [`WriteErrorClass`].
//!
//! Does not own: SQL shapes (`sql.rs`) or trigger DDL (`crate::capture::sqlite`).
//!
//! Storage: SQLite has no date or decimal types, so dates, timestamps and JSON are stored as
//! text (`2026-11-22`, `2026-11-22 10:15:00.123456`, `2026-11-22T10:15:00.123456Z` for
//! timestamptz), booleans as 0/1 and decimals as INTEGER when integral, as REAL when a
//! double holds them exactly, otherwise as text that SQLite's NUMERIC affinity keeps exact
//! up to 15 significant digits; a value it would not keep exactly (more digits, NaN, -0) is
//! refused before writing (`inexact`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, Value as SqlValue, ValueRef};
use rusqlite::{Connection, Transaction, TransactionBehavior, params_from_iter};

use super::sql::{Dialect, Engine, Statement, Stmt, on_conflict_clause, quote_with, tuple};
use super::{
    ColumnInfo, CopiedPage, CopyOrigin, CopyValue, EndpointError, Row, TableCopy, TableInfo,
    TableName, Value, ValueKind, WriteError, WriteErrorClass, value,
};
use crate::capture::{self, SUPPRESS_TABLE};

const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) struct Sqlite {
    conn: Arc<Mutex<Connection>>,
    /// The database file, canonical when it could be resolved: the origin of copies.
    path: PathBuf,
}

impl Sqlite {
    pub(crate) async fn open(path: &Path) -> Result<Sqlite, EndpointError> {
        let file = path.to_path_buf();
        let conn = tokio::task::spawn_blocking(move || -> rusqlite::Result<Connection> {
            let conn = Connection::open(&file)?;
            conn.busy_timeout(BUSY_TIMEOUT)?;
            conn.set_prepared_statement_cache_capacity(64);
            add_unmapped(&conn)?;
            Ok(conn)
        })
        .await
        .map_err(|e| connect_error(e.to_string()))?
        .map_err(|e| connect_error(e.to_string()))?;
        Ok(Sqlite {
            conn: Arc::new(Mutex::new(conn)),
            path: std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()),
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
        Value::Decimal(d) => number(d).unwrap_or_else(|| SqlValue::Text(d.to_string())),
        Value::Date(d) => SqlValue::Text(value::format_date(*d)),
        Value::Timestamp(t) => SqlValue::Text(value::format_timestamp(*t, ' ', "")),
        Value::TimestampTz(t) => SqlValue::Text(value::format_timestamp(t.naive_utc(), 'T', "Z")),
        // A document that is a bare number is stored as SQLite's affinity would store it.
        Value::Json(serde_json::Value::Number(n)) => n
            .to_string()
            .parse::<value::Decimal>()
            .ok()
            .and_then(|d| number(&d))
            .unwrap_or_else(|| SqlValue::Text(n.to_string())),
        Value::Json(j) => SqlValue::Text(j.to_string()),
        // Refused before binding (it converts to no kind); never written.
        Value::Unreadable(u) => SqlValue::Text(u.text.clone()),
    }
}

/// A decimal as the number SQLite holds exactly, bound as such (as text, NUMERIC affinity
/// would convert it, keeping 15 significant digits): an INTEGER when it is one in the 64-bit
/// range, a REAL when a double holds it exactly. `None` otherwise.
fn number(d: &value::Decimal) -> Option<SqlValue> {
    if let Some(i) = d.to_i64() {
        return Some(SqlValue::Integer(i));
    }
    let f = d.to_f64();
    (value::Decimal::from_f64(f).as_ref() == Some(d)).then_some(SqlValue::Real(f))
}

/// Whether a column declared `declared` has INTEGER, REAL or NUMERIC affinity (SQLite's
/// rules, in their order): text that looks like a number is stored as a number there.
fn numeric_affinity(declared: &str) -> bool {
    let t = declared.to_ascii_uppercase();
    let has = |s: &str| t.contains(s);
    has("INT") || !(has("CHAR") || has("CLOB") || has("TEXT") || has("BLOB") || t.is_empty())
}

/// What SQLite stores for `text` bound into a column of numeric affinity: an INTEGER when it
/// spells one in the 64-bit range, a REAL when it spells another number (`None` when that
/// loses digits: SQLite keeps 15 significant digits of such text), the text otherwise.
fn stored_in_numeric(text: &str) -> Option<SqlValue> {
    let Ok(number) = text.parse::<value::Decimal>() else {
        return Some(SqlValue::Text(text.to_string()));
    };
    let integral = !text.contains(['.', 'e', 'E']);
    match number.to_i64() {
        Some(i) if integral => Some(SqlValue::Integer(i)),
        _ if number.significant_digits() > 15 => None,
        _ => Some(SqlValue::Real(number.to_f64())),
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
    // Converted by reference, so the stored value is kept (never copied) when it already is
    // of `kind` or does not fit it.
    if raw.is_of(kind) {
        return Ok(raw);
    }
    Ok(raw.convert_to(kind).unwrap_or(raw))
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

    /// SQLite stores NaN as NULL and -0 as 0; in a column of numeric affinity, text that
    /// looks like a number (a decimal, a JSON number, plain text) is stored as a number,
    /// which must read back as the same value.
    fn inexact(&self, column: &ColumnInfo, value: &Value) -> Option<String> {
        if let Value::Float(f) = value {
            return if f.is_nan() {
                Some("SQLite stores NaN as NULL".into())
            } else if *f == 0.0 && f.is_sign_negative() {
                Some("SQLite stores -0 as 0".into())
            } else {
                None
            };
        }
        if !matches!(value, Value::Decimal(_) | Value::Text(_) | Value::Json(_))
            || !numeric_affinity(&column.db_type)
        {
            return None;
        }
        let SqlValue::Text(text) = to_sql(value) else {
            return None;
        };
        let changed = || {
            format!(
                "SQLite's numeric affinity ({}) would store it as a number that reads back \
                 differently (it keeps 15 significant digits)",
                column.db_type
            )
        };
        match stored_in_numeric(&text) {
            None => Some(changed()),
            Some(SqlValue::Text(_)) => None,
            Some(stored) => {
                let back = from_sql(ValueRef::from(&stored), column.kind).ok();
                (back.as_ref() != Some(value)).then(changed)
            }
        }
    }

    fn row_estimates(&self, table: &TableName) -> Vec<Stmt> {
        // max(rowid) reads one index entry; a WITHOUT ROWID table has none: count(*).
        let table = self.quote_table(table);
        vec![
            Stmt::new(format!("SELECT max(rowid) FROM {table}"), vec![]),
            Stmt::new(format!("SELECT count(*) FROM {table}"), vec![]),
        ]
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
                // Sized up front: collecting results would grow each row twice.
                let mut values = Vec::with_capacity(kinds.len());
                for (i, kind) in kinds.iter().enumerate() {
                    values.push(from_sql(row.get_ref(i).map_err(classify)?, *kind)?);
                }
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

    fn copy_origin(&self) -> Option<CopyOrigin> {
        Some(CopyOrigin::SqliteFile(self.path.clone()))
    }

    /// From any SQLite file (this one included) between tables of `main`.
    fn can_copy(&self, copy: &TableCopy) -> bool {
        matches!(copy.origin, CopyOrigin::SqliteFile(_))
            && main_only(&copy.from_table).is_ok()
            && main_only(&copy.to_table).is_ok()
            && !copy.to_key.is_empty()
            && copy.to_columns.len() == copy.values.len()
    }

    async fn copy_page(
        &self,
        copy: TableCopy,
        after_key: Option<Vec<Value>>,
        limit: usize,
        fence: Vec<Stmt>,
    ) -> Result<CopiedPage, WriteError> {
        let CopyOrigin::SqliteFile(origin) = &copy.origin else {
            return Err(EndpointError::Unsupported {
                engine: Self::NAME,
                what: "copies from other engines".into(),
            }
            .into());
        };
        // Another file is attached (read-only) for the page; this file is read as `main`.
        let attach = (*origin != self.path).then(|| origin.clone());
        let sql = CopySql::new(&copy, attach.is_some());
        self.run(move |conn| {
            let page = Page {
                after: after_key,
                limit: limit.max(1),
                fence: &fence,
            };
            copy_page(conn, &sql, attach.as_deref(), page)
        })
        .await
    }
}

/// The SQL function a copy's value-map `CASE` ends in (`ELSE dualwrite_unmapped(col)`):
/// NULL for NULL, otherwise an error that fails the page, which is then written through
/// typed values, where the record without an entry becomes a TransformError.
const UNMAPPED: &str = "dualwrite_unmapped";

fn add_unmapped(conn: &Connection) -> rusqlite::Result<()> {
    use rusqlite::functions::FunctionFlags;
    conn.create_scalar_function(
        UNMAPPED,
        1,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| match ctx.get_raw(0) {
            rusqlite::types::ValueRef::Null => Ok(None::<i64>),
            _ => Err(rusqlite::Error::UserFunctionError(
                "a value has no entry in the valueMap".into(),
            )),
        },
    )
}

/// The schema name another database file is attached under for a copy.
const COPY_SOURCE: &str = "_dualwrite_copy_source";

fn q(ident: &str) -> String {
    quote_with(ident, '"')
}

/// The SQL of one [`TableCopy`]; parameters are numbered: the constants first (`?1`…),
/// then the keys that bound the page.
struct CopySql {
    /// The source table, qualified.
    source: String,
    /// `"k1", "k2"` (source key columns, in key order).
    keys: String,
    /// `"k1"` or `("k1", "k2")`.
    key_tuple: String,
    /// `"k1" DESC, "k2" DESC`.
    keys_desc: String,
    key_kinds: Vec<ValueKind>,
    /// `INSERT INTO "main"."t" (…) SELECT … FROM source`, without a WHERE clause.
    insert: String,
    /// The target table, qualified.
    target: String,
    /// The target's key, `"k1"` or `("k1", "k2")`.
    target_key_tuple: String,
    /// `ON CONFLICT (…) DO UPDATE SET …` or `DO NOTHING` (`only_missing`).
    conflict: String,
    constants: Vec<Value>,
    only_missing: bool,
    /// (schema, table) of the source and the target, unquoted, for their column lists.
    source_name: (String, String),
    target_name: String,
    /// The source columns copied and the target columns they go to, in order, when every
    /// target value is a source column (no constants).
    columns: Option<(Vec<String>, Vec<String>)>,
}

impl CopySql {
    fn new(copy: &TableCopy, attached: bool) -> CopySql {
        let schema = if attached { COPY_SOURCE } else { "main" };
        let source = format!("{}.{}", q(schema), q(&copy.from_table.name));
        let keys: Vec<String> = copy.from_key.iter().map(|k| q(k)).collect();
        let mut constants = Vec::new();
        let exprs: Vec<String> = copy
            .values
            .iter()
            .map(|v| match v {
                CopyValue::Column(c) => q(c),
                CopyValue::Constant(value) => {
                    constants.push(value.clone());
                    format!("?{}", constants.len())
                }
                CopyValue::Mapped { column, arms } => {
                    let mut case = format!("CASE {} COLLATE BINARY", q(column));
                    for (when, then) in arms {
                        constants.push(when.clone());
                        constants.push(then.clone());
                        let n = constants.len();
                        case.push_str(&format!(" WHEN ?{} THEN ?{n}", n - 1));
                    }
                    format!("{case} ELSE {UNMAPPED}({}) END", q(column))
                }
            })
            .collect();
        let to_columns: Vec<String> = copy.to_columns.iter().map(|c| q(c)).collect();
        let to_key: Vec<String> = copy.to_key.iter().map(|c| q(c)).collect();
        let others: Vec<String> = to_columns
            .iter()
            .filter(|c| !to_key.contains(c))
            .cloned()
            .collect();
        let conflict = if copy.only_missing {
            on_conflict_clause(&to_key, &[])
        } else {
            on_conflict_clause(&to_key, &others)
        };
        let target = format!("{}.{}", q("main"), q(&copy.to_table.name));
        CopySql {
            insert: format!(
                "INSERT INTO {target} ({}) SELECT {} FROM {source}",
                to_columns.join(", "),
                exprs.join(", ")
            ),
            target,
            target_key_tuple: tuple(&to_key),
            source,
            key_tuple: tuple(&keys),
            keys_desc: keys
                .iter()
                .map(|k| format!("{k} DESC"))
                .collect::<Vec<_>>()
                .join(", "),
            keys: keys.join(", "),
            key_kinds: copy.from_key_kinds.clone(),
            conflict,
            constants,
            only_missing: copy.only_missing,
            source_name: (schema.to_string(), copy.from_table.name.clone()),
            target_name: copy.to_table.name.clone(),
            columns: copy
                .values
                .iter()
                .map(|v| match v {
                    CopyValue::Column(c) => Some(c.clone()),
                    CopyValue::Constant(_) | CopyValue::Mapped { .. } => None,
                })
                .collect::<Option<Vec<_>>>()
                .map(|from| (from, copy.to_columns.clone())),
        }
    }

    fn params(&self, first: usize) -> String {
        let params: Vec<String> = (first..first + self.key_kinds.len())
            .map(|n| format!("?{n}"))
            .collect();
        tuple(&params)
    }

    /// The source key of the last row (after `where_after`, see [`CopySql::where_after`]).
    fn last_key_query(&self, where_after: &str) -> String {
        format!(
            "SELECT {} FROM {}{where_after} ORDER BY {} LIMIT 1",
            self.keys, self.source, self.keys_desc
        )
    }

    /// ` WHERE key > (after)` for the key queries (parameters from `?1`), or nothing.
    fn where_after(&self, after: bool) -> String {
        if after {
            format!(" WHERE {} > {}", self.key_tuple, self.params(1))
        } else {
            String::new()
        }
    }
}

/// `file:PATH?mode=ro`, the path percent-encoded: a URI filename SQLite opens read-only, so
/// the copy's `BEGIN IMMEDIATE` takes no write lock on the source.
fn read_only_uri(path: &Path) -> String {
    let mut uri = String::from("file:");
    for b in path.to_string_lossy().bytes() {
        if b.is_ascii_alphanumeric() || b"/._-~".contains(&b) {
            uri.push(char::from(b));
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri.push_str("?mode=ro");
    uri
}

/// One page of a copy, with the source attached for its duration (when it is another file).
/// One page of a copy: after which key, how many rows at most, and the fence statements
/// each of its transactions runs first.
struct Page<'a> {
    after: Option<Vec<Value>>,
    limit: usize,
    fence: &'a [Stmt],
}

fn copy_page(
    conn: &mut Connection,
    sql: &CopySql,
    attach: Option<&Path>,
    page: Page<'_>,
) -> Result<CopiedPage, WriteError> {
    let Page {
        after,
        limit,
        fence,
    } = page;
    if let Some(path) = attach {
        conn.execute(
            &format!("ATTACH DATABASE ?1 AS {}", q(COPY_SOURCE)),
            [read_only_uri(path)],
        )
        .map_err(classify)?;
    }
    let copied = match after {
        None => match whole_table(conn, sql, fence) {
            Ok(Some(page)) => Ok(page),
            Ok(None) => copy_transaction(conn, sql, None, limit, fence),
            Err(e) => Err(e),
        },
        after => copy_transaction(conn, sql, after, limit, fence),
    };
    if attach.is_none() {
        return copied;
    }
    let detached = conn
        .execute(&format!("DETACH DATABASE {}", q(COPY_SOURCE)), [])
        .map_err(classify);
    copied.and_then(|page| detached.map(|_| page))
}

/// How long the one-statement copy of a whole table may hold the target's write lock before
/// it is given up (rolled back) for pages: its gain is SQLite's raw-record transfer, which
/// only a statement without `WHERE` gets.
const WHOLE_TABLE_FOR_AT_MOST: Duration = Duration::from_secs(2);

/// Copies the whole table in one statement when the target is empty and has no triggers
/// (a plain insert is then the whole upsert, and one transaction saves a commit and the
/// bounds' queries per page): `INSERT INTO target SELECT * FROM source` when both tables'
/// columns, in table order, are the columns the map copies (SQLite then moves the records
/// as they are stored: its transfer optimization), otherwise the map's own
/// `INSERT INTO target (…) SELECT … FROM source` (renames, reordered columns, constants,
/// value maps as a `CASE`). The statement is interrupted (and nothing of it kept) after
/// [`WHOLE_TABLE_FOR_AT_MOST`] or on shutdown, and refused by anything the target or a
/// value map refuses; `None` then, and when it does not apply: the copy goes on in pages.
fn whole_table(
    conn: &mut Connection,
    sql: &CopySql,
    fence: &[Stmt],
) -> Result<Option<CopiedPage>, WriteError> {
    let (source_schema, source_table) = &sql.source_name;
    let columns_of = |schema: &str, table: &str| -> Result<Option<Vec<String>>, WriteError> {
        let mut stmt = conn
            .prepare("SELECT name, hidden FROM pragma_table_xinfo(?1, ?2) ORDER BY cid")
            .map_err(classify)?;
        let columns = stmt
            .query_map([table, schema], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })
            .map_err(classify)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(classify)?;
        // Hidden and generated columns are not what `*` and a plain INSERT mean.
        Ok(columns
            .iter()
            .all(|(_, hidden)| *hidden == 0)
            .then(|| columns.into_iter().map(|(name, _)| name).collect()))
    };
    let transfer = match &sql.columns {
        Some((from_columns, to_columns)) => {
            columns_of(source_schema, source_table)?.as_ref() == Some(from_columns)
                && columns_of("main", &sql.target_name)?.as_ref() == Some(to_columns)
        }
        None => false,
    };
    let (statement, params) = if transfer {
        let select_all = format!("INSERT INTO {} SELECT * FROM {}", sql.target, sql.source);
        (select_all, Vec::new())
    } else {
        (sql.insert.clone(), sql.constants.clone())
    };
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(classify)?;
    let busy = tx
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'trigger' AND tbl_name = ?1)",
            [&sql.target_name],
            |r| r.get::<_, bool>(0),
        )
        .map_err(classify)?
        || tx
            .prepare(&format!("SELECT 1 FROM {} LIMIT 1", sql.target))
            .and_then(|mut stmt| stmt.exists([]))
            .map_err(classify)?;
    if busy {
        return Ok(None);
    }
    run_fence(&tx, fence)?;
    set_echo_suppression(&tx, true)?;
    let deadline = std::time::Instant::now() + WHOLE_TABLE_FOR_AT_MOST;
    tx.progress_handler(
        10_000,
        Some(move || std::time::Instant::now() > deadline || crate::shutdown::requested()),
    );
    let copied = tx.execute(&statement, binds(&params));
    tx.progress_handler(0, None::<fn() -> bool>);
    // Interrupted or refused (a constraint of the target): dropping the transaction rolls
    // the statement back, and the pages do it, isolating what the target refuses.
    let Ok(rows) = copied.map(|rows| rows as u64) else {
        return Ok(None);
    };
    set_echo_suppression(&tx, false)?;
    // The source is read in this transaction's snapshot: its last key is the last copied.
    let last_key = first_key(&tx, sql, &sql.last_key_query(""), &[])?;
    tx.commit().map_err(classify)?;
    Ok(Some(CopiedPage {
        read: rows,
        written: rows,
        last_key,
    }))
}

/// The source key of the first row `query` (a `SELECT` of [`CopySql::keys`], parameters
/// `params`) returns, as values of the key's kinds.
fn first_key(
    tx: &Transaction<'_>,
    sql: &CopySql,
    query: &str,
    params: &[Value],
) -> Result<Option<Vec<Value>>, WriteError> {
    let mut stmt = tx.prepare(query).map_err(classify)?;
    let mut rows = stmt.query(binds(params)).map_err(classify)?;
    let Some(row) = rows.next().map_err(classify)? else {
        return Ok(None);
    };
    sql.key_kinds
        .iter()
        .enumerate()
        .map(|(i, kind)| from_sql(row.get_ref(i).map_err(classify)?, *kind))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// The page's bounds, then `INSERT … SELECT … ON CONFLICT …` over exactly that key range,
/// all in one immediate transaction that reads one snapshot of the source.
fn copy_transaction(
    conn: &mut Connection,
    sql: &CopySql,
    after: Option<Vec<Value>>,
    limit: usize,
    fence: &[Stmt],
) -> Result<CopiedPage, WriteError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(classify)?;
    run_fence(&tx, fence)?;
    let after = after.unwrap_or_default();
    let where_after = sql.where_after(!after.is_empty());
    let last_of = |query: String| first_key(&tx, sql, &query, &after);
    // A full page ends at its `limit`-th row; a shorter one at the last row there is.
    let full = last_of(format!(
        "SELECT {} FROM {}{where_after} ORDER BY {} LIMIT 1 OFFSET {}",
        sql.keys,
        sql.source,
        sql.keys,
        limit - 1
    ))?;
    let (read, last) = match full {
        Some(last) => (limit as u64, last),
        None => {
            let read: i64 = tx
                .query_row(
                    &format!("SELECT count(*) FROM {}{where_after}", sql.source),
                    binds(&after),
                    |r| r.get(0),
                )
                .map_err(classify)?;
            if read == 0 {
                return Ok(CopiedPage {
                    read: 0,
                    written: 0,
                    last_key: None,
                });
            }
            let last = last_of(sql.last_key_query(&where_after))?.expect("counted rows");
            (read as u64, last)
        }
    };
    let mut params = sql.constants.clone();
    let range = |key_tuple: &str, params: &mut Vec<Value>| {
        let mut range = Vec::new();
        if !after.is_empty() {
            range.push(format!("{key_tuple} > {}", sql.params(params.len() + 1)));
            params.extend(after.iter().cloned());
        }
        range.push(format!("{key_tuple} <= {}", sql.params(params.len() + 1)));
        params.extend(last.iter().cloned());
        range.join(" AND ")
    };
    // The keys are copied verbatim: when the target has none in the page's range (the
    // usual first copy), a plain INSERT does, and costs less than the upsert.
    let mut probe = Vec::new();
    let probe_sql = format!(
        "SELECT 1 FROM {} WHERE {} LIMIT 1",
        sql.target,
        range(&sql.target_key_tuple, &mut probe)
    );
    let target_has_keys = tx
        .prepare(&probe_sql)
        .and_then(|mut stmt| stmt.exists(binds(&probe)))
        .map_err(classify)?;
    let conflict = if target_has_keys {
        sql.conflict.as_str()
    } else {
        ""
    };
    // The WHERE clause also keeps SQLite from reading `ON CONFLICT` as a join constraint.
    let insert = format!(
        "{} WHERE {} ORDER BY {} {conflict}",
        sql.insert,
        range(&sql.key_tuple, &mut params),
        sql.keys,
    );
    set_echo_suppression(&tx, true)?;
    let changed = tx.execute(&insert, binds(&params)).map_err(classify)? as u64;
    set_echo_suppression(&tx, false)?;
    tx.commit().map_err(classify)?;
    Ok(CopiedPage {
        read,
        written: if sql.only_missing { changed } else { read },
        last_key: Some(last),
    })
}

/// Runs the fence statements of a copy's transaction (see `fence::fence_statements`).
fn run_fence(tx: &Transaction<'_>, fence: &[Stmt]) -> Result<(), WriteError> {
    for stmt in fence {
        let mut prepared = tx.prepare_cached(&stmt.sql).map_err(classify)?;
        prepared.execute(binds(&stmt.params)).map_err(classify)?;
    }
    Ok(())
}

/// Runs `stmts` in one immediate transaction; with `suppress_echo`, the marker row that
/// tells the capture triggers to stay quiet is there until just before the commit.
fn write_transaction(
    conn: &mut Connection,
    stmts: &[Statement<'_>],
    suppress_echo: bool,
) -> Result<u64, WriteError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(classify)?;
    if suppress_echo {
        set_echo_suppression(&tx, true)?;
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
        set_echo_suppression(&tx, false)?;
    }
    tx.commit().map_err(classify)?;
    Ok(affected)
}

/// Puts the marker row that tells the capture triggers to stay quiet (`on`), or takes it
/// away again before the commit (`!on`), so no other connection ever sees it.
fn set_echo_suppression(tx: &Transaction<'_>, on: bool) -> Result<(), WriteError> {
    let suppress = q(SUPPRESS_TABLE);
    if on {
        tx.execute(
            &format!(
                "CREATE TABLE IF NOT EXISTS {}.{suppress} (marker INTEGER)",
                q("main")
            ),
            [],
        )
        .map_err(classify)?;
        tx.execute(
            &format!("INSERT INTO {}.{suppress} (marker) VALUES (1)", q("main")),
            [],
        )
        .map_err(classify)?;
    } else {
        tx.execute(&format!("DELETE FROM {}.{suppress}", q("main")), [])
            .map_err(classify)?;
    }
    Ok(())
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
    fn numeric_affinity_stores_what_reads_back_or_nothing() {
        assert!(numeric_affinity("DECIMAL(38,10)") && numeric_affinity("JSON"));
        assert!(numeric_affinity("BIGINT") && numeric_affinity("DOUBLE"));
        assert!(!numeric_affinity("VARCHAR(20)") && !numeric_affinity("BLOB"));
        assert!(!numeric_affinity(""));
        assert_eq!(stored_in_numeric("12"), Some(SqlValue::Integer(12)));
        assert_eq!(stored_in_numeric("12.5"), Some(SqlValue::Real(12.5)));
        assert_eq!(stored_in_numeric("1234567890.123456789"), None);
        assert_eq!(stored_in_numeric("12345678901234567890123"), None);
        assert_eq!(stored_in_numeric("abc"), Some(SqlValue::Text("abc".into())));
        assert_eq!(
            stored_in_numeric("0x10"),
            Some(SqlValue::Text("0x10".into()))
        );
    }

    #[test]
    fn a_whole_table_is_one_statement_into_an_empty_table_without_triggers() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.db");
        let schema = "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, qty INTEGER);";
        Connection::open(&src)
            .unwrap()
            .execute_batch(&format!(
                "{schema} WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000)
                 INSERT INTO t SELECT i, 'n' || i, i FROM n;"
            ))
            .unwrap();
        let copy = |to: [&str; 3], values: Vec<CopyValue>| TableCopy {
            origin: CopyOrigin::SqliteFile(src.clone()),
            from_table: TableName::parse("t").unwrap(),
            from_info: TableInfo {
                columns: Vec::new(),
                primary_key: vec!["id".into()],
            },
            to_info: TableInfo {
                columns: Vec::new(),
                primary_key: vec!["id".into()],
            },
            from_key: vec!["id".into()],
            from_key_kinds: vec![ValueKind::Int],
            to_table: TableName::parse("t").unwrap(),
            to_columns: to.iter().map(|c| c.to_string()).collect(),
            to_key: vec!["id".into()],
            values,
            only_missing: false,
        };
        let columns = |names: [&str; 3]| {
            names
                .iter()
                .map(|c| CopyValue::Column(c.to_string()))
                .collect::<Vec<_>>()
        };
        let target = |name: &str, ddl: &str| {
            let conn = Connection::open(dir.path().join(name)).unwrap();
            conn.execute_batch(ddl).unwrap();
            conn.execute(
                &format!("ATTACH DATABASE ?1 AS {}", q(COPY_SOURCE)),
                [read_only_uri(&src)],
            )
            .unwrap();
            conn
        };
        let rows = |conn: &Connection| -> i64 {
            conn.query_row("SELECT count(*) FROM main.t", [], |r| r.get(0))
                .unwrap()
        };

        let same = CopySql::new(
            &copy(["id", "name", "qty"], columns(["id", "name", "qty"])),
            true,
        );
        let mut conn = target("same.db", schema);
        let page = whole_table(&mut conn, &same, &[])
            .unwrap()
            .expect("one statement");
        assert_eq!(
            (page.read, page.written, page.last_key),
            (1000, 1000, Some(vec![Value::Int(1000)]))
        );
        assert_eq!(rows(&conn), 1000);
        // Never into a table that has rows.
        assert!(whole_table(&mut conn, &same, &[]).unwrap().is_none());

        // The target's columns in another order, or a constant: the map's own INSERT …
        // SELECT, every value in its column.
        let count = |conn: &Connection, filter: &str| -> i64 {
            conn.query_row(
                &format!("SELECT count(*) FROM main.t WHERE {filter}"),
                [],
                |r| r.get(0),
            )
            .unwrap()
        };
        let ddl_qty_first = "CREATE TABLE t (id INTEGER PRIMARY KEY, qty INTEGER, name TEXT);";
        let mut conn = target("order.db", ddl_qty_first);
        assert!(whole_table(&mut conn, &same, &[]).unwrap().is_some());
        assert_eq!(count(&conn, "qty = id AND name = 'n' || id"), 1000);
        let constant = CopySql::new(
            &copy(
                ["id", "name", "qty"],
                vec![
                    CopyValue::Column("id".into()),
                    CopyValue::Column("name".into()),
                    CopyValue::Constant(Value::Int(1)),
                ],
            ),
            true,
        );
        let mut conn = target("constant.db", schema);
        assert!(whole_table(&mut conn, &constant, &[]).unwrap().is_some());
        assert_eq!(count(&conn, "qty = 1 AND name = 'n' || id"), 1000);

        // A trigger on the target or a row it refuses: pages, and nothing was written.
        let mut conn = target(
            "trigger.db",
            &format!("{schema} CREATE TRIGGER t_ins AFTER INSERT ON t BEGIN SELECT 1; END;"),
        );
        assert!(whole_table(&mut conn, &same, &[]).unwrap().is_none());
        let mut conn = target(
            "check.db",
            "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, qty INTEGER CHECK (qty <> 500));",
        );
        assert!(whole_table(&mut conn, &same, &[]).unwrap().is_none());
        assert_eq!(rows(&conn), 0, "the refused statement is rolled back");
    }

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
