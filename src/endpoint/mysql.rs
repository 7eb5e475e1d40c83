//! The MySQL/MariaDB engine: a mysql_async pool, sessions in UTC.
//!
//! Owns: MySQL types ↔ [`ValueKind`] (`tinyint(1)` is a boolean, MariaDB's JSON is a
//! `longtext` with a `json_valid` check, DATETIME is a naive timestamp and TIMESTAMP a UTC
//! one), binding and reading values (a zero date is [`Value::Unreadable`]: only its record
//! fails), refusing what a column would not store exactly (`inexact`), echo suppression
//! (`@dualwrite_origin`, set around dualwrite's write transactions and reset after), loading
//! runs of new rows with `LOAD DATA LOCAL INFILE` (the multi-row upserts run where that cannot
//! stand for them) and mapping error numbers to [`WriteErrorClass`].
//!
//! Does not own: SQL shapes (`sql.rs`) or trigger DDL (`crate::capture::mysql`).

use chrono::{Datelike, NaiveDate, NaiveDateTime, Timelike};
use mysql_async::prelude::Queryable;
use std::sync::atomic::{AtomicU32, Ordering};

use mysql_async::{Conn, InfileData, Opts, OptsBuilder, Params, Pool, Value as MyValue};

use super::sql::{
    DIRECT_RETRY_AFTER, Dialect, Engine, Load, Statement, Stmt, decimal_misfit, first_texts,
    fraction_misfit, multi_row_upserts, quote_with, text_at, type_modifiers,
};
use super::{
    ColumnInfo, EndpointError, Row, TableInfo, TableName, Value, ValueKind, WriteError,
    WriteErrorClass, redact, url_secrets,
};
use crate::capture;

pub(crate) struct Mysql {
    pool: Pool,
    secrets: Vec<String>,
    /// The database named in the URL: home of the changelog, default schema of tables.
    database: Option<String>,
    /// Loads to go before a direct `LOAD DATA` is tried again, after one that could not
    /// stand for its upserts; `u32::MAX` once the server refused `LOCAL INFILE`.
    skip_direct: AtomicU32,
}

impl Mysql {
    pub(crate) async fn connect(url: &str) -> Result<Mysql, EndpointError> {
        let secrets = url_secrets(url);
        let connect_error = |message: String| EndpointError::Connect {
            engine: "mysql",
            message: redact(&message, &secrets),
        };
        let opts = Opts::from_url(url)
            .map_err(|e| connect_error(format!("invalid connection URL: {e}")))?;
        let database = opts.db_name().map(str::to_string);
        // No reset when a connection goes back to the pool: a reset drops the server's
        // prepared statements and the client's cache of them, so every batch would prepare
        // its multi-row upsert (thousands of parameters) again. dualwrite leaves no session
        // state behind: the echo mark is cleared after each write transaction (or the
        // connection is dropped), and the time zone is ours.
        let pool_opts = opts.pool_opts().clone().with_reset_connection(false);
        let opts = OptsBuilder::from_opts(opts)
            .setup(vec!["SET time_zone = '+00:00'"])
            .pool_opts(pool_opts);
        let pool = Pool::new(opts);
        let mysql = Mysql {
            pool,
            secrets: secrets.clone(),
            database,
            skip_direct: AtomicU32::new(0),
        };
        let connecting = async {
            let mut conn = mysql.conn().await?;
            conn.ping().await.map_err(|e| mysql.classify(e))
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), connecting)
            .await
            .map_err(|_| connect_error("timed out connecting to MySQL".into()))?
            .map_err(|e| connect_error(e.message))?;
        Ok(mysql)
    }

    async fn conn(&self) -> Result<Conn, WriteError> {
        self.pool.get_conn().await.map_err(|e| self.classify(e))
    }

    fn classify(&self, e: mysql_async::Error) -> WriteError {
        let message = redact(&e.to_string(), &self.secrets);
        match &e {
            mysql_async::Error::Server(s) => WriteError::new(
                class_of_errno(s.code),
                Some(s.code.to_string()),
                redact(&s.message, &self.secrets),
            ),
            mysql_async::Error::Driver(mysql_async::DriverError::FromValue { .. }) => {
                WriteError::new(WriteErrorClass::Transform, None, message)
            }
            _ => WriteError::new(WriteErrorClass::Network, None, message),
        }
    }

    fn home(&self) -> Result<&str, EndpointError> {
        self.database
            .as_deref()
            .ok_or_else(|| EndpointError::Unsupported {
                engine: "mysql",
                what: "change capture without a database in the connection URL".into(),
            })
    }

    /// Runs `stmts` in one transaction on `conn`; param-less statements (DDL) go through
    /// the text protocol.
    async fn run_in_transaction(
        &self,
        conn: &mut Conn,
        stmts: Vec<Statement<'_>>,
    ) -> Result<u64, mysql_async::Error> {
        conn.query_drop("START TRANSACTION").await?;
        let mut affected = 0;
        for stmt in stmts {
            if let Some(load) = stmt.load {
                if let Some(rows) = self.load_directly(conn, &load).await? {
                    affected += rows;
                    continue;
                }
                // Every direct load carries its upserts (`SqlEndpoint::upsert_stmts`).
                let Some(fallback) = load.fallback else {
                    return Err(mysql_async::Error::Other(
                        "a direct load without the upserts it stands for".into(),
                    ));
                };
                let upserts = multi_row_upserts(
                    self,
                    &load.target,
                    &load.columns,
                    &fallback.clause,
                    load.rows,
                    fallback.per_stmt,
                );
                for upsert in upserts {
                    conn.exec_drop(&upsert.sql, params(upsert.params)).await?;
                    affected += conn.affected_rows();
                }
                continue;
            }
            if stmt.params.is_empty() {
                conn.query_drop(&stmt.sql).await?;
            } else {
                conn.exec_drop(&stmt.sql, params(stmt.params)).await?;
            }
            affected += conn.affected_rows();
        }
        conn.query_drop("COMMIT").await?;
        Ok(affected)
    }
}

impl Mysql {
    /// Writes a run of upserts with one `LOAD DATA LOCAL INFILE … IGNORE` straight into the
    /// target, inside a savepoint: kept when every row was inserted without a warning (all
    /// keys new, every value as given), `Some(rows)`; otherwise rolled back to the savepoint
    /// and `None`, and the multi-row upserts it stands for run instead (they report what
    /// the target refuses, record by record). `IGNORE` is what makes the check possible:
    /// a duplicate key or a value the target would adjust is a warning, not an error.
    async fn load_directly(
        &self,
        conn: &mut Conn,
        load: &Load<'_>,
    ) -> Result<Option<u64>, mysql_async::Error> {
        let skip = self.skip_direct.load(Ordering::Relaxed);
        if skip > 0 {
            if skip != u32::MAX {
                self.skip_direct.store(skip - 1, Ordering::Relaxed);
            }
            return Ok(None);
        }
        let Some(data) = load_data(&load.rows) else {
            return Ok(None);
        };
        let columns: Vec<String> = load
            .columns
            .iter()
            .map(|c| self.quote_ident(&c.name))
            .collect();
        conn.query_drop("SAVEPOINT dualwrite_direct").await?;
        conn.set_infile_handler(async move {
            // In pieces: the driver copies each into a buffer it keeps for reuse, so one
            // page-sized piece would keep a page-sized buffer per load in its pool.
            let data = bytes::Bytes::from(data);
            let pieces: Vec<std::io::Result<bytes::Bytes>> = (0..data.len())
                .step_by(INFILE_PIECE)
                .map(|at| Ok(data.slice(at..(at + INFILE_PIECE).min(data.len()))))
                .collect();
            Ok(Box::pin(futures_util::stream::iter(pieces)) as InfileData)
        });
        let loaded = conn
            .query_drop(format!(
                "LOAD DATA LOCAL INFILE 'dualwrite' IGNORE INTO TABLE {} CHARACTER SET utf8mb4 \
                 FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' ({})",
                load.target,
                columns.join(", ")
            ))
            .await;
        let rows = load.rows.len() as u64;
        match loaded {
            Ok(()) if conn.affected_rows() == rows && conn.get_warnings() == 0 => {
                conn.query_drop("RELEASE SAVEPOINT dualwrite_direct")
                    .await?;
                return Ok(Some(rows));
            }
            Ok(()) => self
                .skip_direct
                .store(DIRECT_RETRY_AFTER, Ordering::Relaxed),
            // `LOCAL INFILE` refused by the server's settings (MariaDB 1148, MySQL 3948):
            // upserts from now on. Any other error is the transaction's (a deadlock, a lost
            // connection): `IGNORE` turns what a row could cause into warnings.
            Err(mysql_async::Error::Server(e)) if matches!(e.code, 1148 | 3948) => {
                tracing::debug!(
                    code = e.code,
                    "LOAD DATA LOCAL INFILE refused; multi-row upserts from now on"
                );
                self.skip_direct.store(u32::MAX, Ordering::Relaxed);
            }
            Err(e) => return Err(e),
        }
        conn.query_drop("ROLLBACK TO SAVEPOINT dualwrite_direct")
            .await?;
        Ok(None)
    }
}

/// Bytes of `LOAD DATA LOCAL INFILE` data handed to the driver at a time.
const INFILE_PIECE: usize = 64 * 1024;

/// Rows as `LOAD DATA` reads them with the options of [`Mysql::load_directly`]: fields
/// separated by tabs, rows ended by newlines, `\N` for NULL and `\\`, `\t`, `\n`, `\r`,
/// `\0` escaped in text; values in the forms MySQL parses for their columns (the session is
/// in UTC, so a UTC timestamp is written as it is). `None` when a row holds bytes, which have
/// no such text form here: those runs take the upserts.
fn load_data(rows: &[std::borrow::Cow<'_, [Value]>]) -> Option<Vec<u8>> {
    use std::io::Write;
    let mut out = Vec::with_capacity(rows.len() * 64);
    for row in rows {
        for (i, value) in row.iter().enumerate() {
            if i > 0 {
                out.push(b'\t');
            }
            let _ = match value {
                Value::Null => write!(out, "\\N"),
                Value::Bool(b) => write!(out, "{}", u8::from(*b)),
                Value::Int(n) => write!(out, "{n}"),
                Value::Float(f) => write!(out, "{f:?}"),
                Value::Decimal(d) => write!(out, "{d}"),
                Value::Text(t) => {
                    escape_into(&mut out, t);
                    Ok(())
                }
                Value::Json(j) => {
                    escape_into(&mut out, &j.to_string());
                    Ok(())
                }
                Value::Bytes(_) | Value::Unreadable(_) => return None,
                Value::Date(d) => write!(out, "{}", d.format("%Y-%m-%d")),
                Value::Timestamp(t) => write!(out, "{}", t.format("%Y-%m-%d %H:%M:%S%.6f")),
                Value::TimestampTz(t) => {
                    write!(out, "{}", t.naive_utc().format("%Y-%m-%d %H:%M:%S%.6f"))
                }
            };
        }
        out.push(b'\n');
    }
    Some(out)
}

fn escape_into(out: &mut Vec<u8>, text: &str) {
    for b in text.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            0 => out.extend_from_slice(b"\\0"),
            _ => out.push(b),
        }
    }
}

/// Error numbers: a string the column's character set cannot hold (1366) → Transform (the
/// value cannot be stored exactly); rejected records (duplicate key, foreign key, CHECK —
/// 3819 MySQL, 4025 MariaDB —, NOT NULL, too long, out of range, bad value) → Application;
/// missing table/column/database → Schema; client connection errors, lock timeouts and
/// deadlocks → Network (transient). Anything else → Application.
fn class_of_errno(code: u16) -> WriteErrorClass {
    match code {
        1366 => WriteErrorClass::Transform,
        1146 | 1054 | 1049 | 1109 => WriteErrorClass::Schema,
        2002 | 2003 | 2006 | 2013 | 1040 | 1205 | 1213 | 1927 => WriteErrorClass::Network,
        _ => WriteErrorClass::Application,
    }
}

fn kind_of(data_type: &str, column_type: &str) -> ValueKind {
    match data_type.to_ascii_lowercase().as_str() {
        "tinyint" if column_type.to_ascii_lowercase().starts_with("tinyint(1)") => ValueKind::Bool,
        "bool" | "boolean" => ValueKind::Bool,
        "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" | "year" => {
            ValueKind::Int
        }
        "decimal" | "numeric" => ValueKind::Decimal,
        "float" | "double" | "real" => ValueKind::Float,
        "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" | "bit" => {
            ValueKind::Bytes
        }
        "date" => ValueKind::Date,
        "datetime" => ValueKind::Timestamp,
        "timestamp" => ValueKind::TimestampTz,
        "json" => ValueKind::Json,
        _ => ValueKind::Text,
    }
}

fn date_value(t: NaiveDateTime) -> MyValue {
    MyValue::Date(
        t.year() as u16,
        t.month() as u8,
        t.day() as u8,
        t.hour() as u8,
        t.minute() as u8,
        t.second() as u8,
        t.and_utc().timestamp_subsec_micros(),
    )
}

/// A value as MySQL's; text and bytes are moved, not copied.
fn to_my(value: Value) -> MyValue {
    match value {
        Value::Null => MyValue::NULL,
        Value::Bool(b) => MyValue::Int(i64::from(b)),
        Value::Int(i) => MyValue::Int(i),
        Value::Float(f) => MyValue::Double(f),
        Value::Decimal(d) => MyValue::Bytes(d.to_string().into_bytes()),
        Value::Text(s) => MyValue::Bytes(s.into_bytes()),
        Value::Bytes(b) => MyValue::Bytes(b),
        Value::Json(j) => MyValue::Bytes(j.to_string().into_bytes()),
        // Refused before binding (it converts to no kind); never written.
        Value::Unreadable(u) => MyValue::Bytes(u.text.into_bytes()),
        Value::Date(d) => date_value(d.and_time(chrono::NaiveTime::MIN)),
        Value::Timestamp(t) => date_value(t),
        Value::TimestampTz(t) => date_value(t.naive_utc()),
    }
}

fn params(values: Vec<Value>) -> Params {
    Params::Positional(values.into_iter().map(to_my).collect())
}

/// A value read from MySQL as a value of `kind`. One that cannot be (a zero date, text
/// that does not parse) is [`Value::Unreadable`]: that record fails alone, the rest of the
/// page goes on.
fn from_my(value: MyValue, kind: ValueKind) -> Result<Value, WriteError> {
    let unreadable = |e: super::ConvertError| Value::unreadable(kind, e.value, e.reason);
    let raw = match value {
        MyValue::NULL => Value::Null,
        MyValue::Bytes(b) if kind == ValueKind::Bytes => Value::Bytes(b),
        MyValue::Bytes(b) => match String::from_utf8(b) {
            // Text of another kind (dates, decimals) is parsed where it lies.
            Ok(s) if kind != ValueKind::Text && kind != ValueKind::Json => {
                return Ok(Value::from_text(&s, kind).unwrap_or_else(unreadable));
            }
            Ok(s) => Value::Text(s),
            Err(e) => Value::Bytes(e.into_bytes()),
        },
        MyValue::Int(i) => Value::Int(i),
        MyValue::UInt(u) => i64::try_from(u)
            .map(Value::Int)
            .unwrap_or_else(|_| Value::Decimal(u.into())),
        MyValue::Float(f) => Value::Float(f.into()),
        MyValue::Double(f) => Value::Float(f),
        MyValue::Date(y, mo, d, h, mi, s, us) => {
            match NaiveDate::from_ymd_opt(y.into(), mo.into(), d.into())
                .and_then(|date| date.and_hms_micro_opt(h.into(), mi.into(), s.into(), us))
            {
                Some(t) => Value::Timestamp(t),
                None => {
                    let text = format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}");
                    let reason = format!("MySQL's date {text} is no calendar date (a zero date?)");
                    return Ok(Value::unreadable(kind, text, reason));
                }
            }
        }
        MyValue::Time(neg, days, h, mi, s, us) => {
            let sign = if neg { "-" } else { "" };
            let hours = days * 24 + u32::from(h);
            Value::Text(format!("{sign}{hours:02}:{mi:02}:{s:02}.{us:06}"))
        }
    };
    Ok(raw.into_kind(kind).unwrap_or_else(unreadable))
}

/// The range of an integer column type (`tinyint(4)`, `int(10) unsigned`); `None` for
/// other types.
fn int_range(column_type: &str) -> Option<(i128, i128)> {
    let bits = match column_type.split(['(', ' ']).next()? {
        "tinyint" => 8,
        "smallint" => 16,
        "mediumint" => 24,
        "int" | "integer" => 32,
        "bigint" => 64,
        _ => return None,
    };
    Some(if column_type.contains("unsigned") {
        (0, (1i128 << bits) - 1)
    } else {
        (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
    })
}

/// The range of MySQL's `TIMESTAMP`, in UTC.
const TIMESTAMP_RANGE: (&str, &str) = ("1970-01-01 00:00:01", "2038-01-19 03:14:07.999999");

impl Dialect for Mysql {
    fn quote_ident(&self, ident: &str) -> String {
        quote_with(ident, '`')
    }

    fn placeholder(&self, _n: usize) -> String {
        "?".to_string()
    }

    fn max_params(&self) -> usize {
        u16::MAX as usize
    }

    fn upsert_clause(&self, keys: &[String], others: &[String]) -> String {
        let sets: Vec<String> = if others.is_empty() {
            keys.iter().map(|k| format!("{k} = {k}")).collect()
        } else {
            others
                .iter()
                .map(|c| format!("{c} = VALUES({c})"))
                .collect()
        };
        format!("ON DUPLICATE KEY UPDATE {}", sets.join(", "))
    }

    fn now_sql(&self) -> &'static str {
        "SELECT UTC_TIMESTAMP(6)"
    }

    /// Integer types have their ranges; FLOAT and DOUBLE hold no NaN, infinity or -0 (FLOAT
    /// keeps 24 bits of mantissa); DECIMAL rounds extra fraction digits; dates hold years 1
    /// to 9999 (a BC date would become a zero date), TIMESTAMP 1970 to 2038; fractions of a
    /// second beyond the column's precision are rounded.
    fn inexact(&self, column: &ColumnInfo, value: &Value) -> Option<String> {
        let ty = column.db_type.to_ascii_lowercase();
        let modifiers = || type_modifiers(&ty);
        let year_range = |year: i32| {
            (!(1..=9999).contains(&year))
                .then(|| format!("year {year}: MySQL dates hold years 1 to 9999"))
        };
        let fraction = |nanos: u32| fraction_misfit(nanos, *modifiers().first().unwrap_or(&0));
        match value {
            Value::Float(f) if !f.is_finite() => {
                Some("MySQL's FLOAT and DOUBLE hold no NaN or infinity".into())
            }
            Value::Float(f) if *f == 0.0 && f.is_sign_negative() => {
                Some("MySQL stores -0 as 0".into())
            }
            Value::Float(f) if ty.starts_with("float") && f64::from(*f as f32) != *f => {
                Some("a FLOAT (32-bit) column cannot hold it exactly".into())
            }
            Value::Int(i) => int_range(&ty).and_then(|(low, high)| {
                (!(low..=high).contains(&i128::from(*i)))
                    .then(|| format!("out of range for {ty} ({low} to {high})"))
            }),
            Value::Decimal(d) => decimal_misfit(d, &modifiers()),
            Value::Date(d) => year_range(d.year()),
            Value::Timestamp(t) => year_range(t.year()).or_else(|| fraction(t.nanosecond())),
            Value::TimestampTz(t) => {
                let text = t.naive_utc().format("%Y-%m-%d %H:%M:%S%.6f").to_string();
                let (low, high) = TIMESTAMP_RANGE;
                if text.len() != 26 || text.as_str() < low || text.as_str() > high {
                    Some(format!("MySQL's TIMESTAMP holds {low} to {high} UTC"))
                } else {
                    fraction(t.nanosecond())
                }
            }
            _ => None,
        }
    }

    fn row_estimates(&self, table: &TableName) -> Vec<Stmt> {
        vec![Stmt::new(
            "SELECT CAST(TABLE_ROWS AS SIGNED) FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ?",
            vec![
                table.schema.clone().map_or(Value::Null, Value::Text),
                Value::Text(table.name.clone()),
            ],
        )]
    }

    /// `LOAD DATA LOCAL INFILE` while keys are new ([`Mysql::load_directly`]).
    fn loads_new_rows(&self) -> bool {
        true
    }

    fn changelog_table(&self) -> String {
        match &self.database {
            Some(db) => capture::mysql::changelog(db),
            None => self.quote_ident(capture::CHANGELOG_TABLE),
        }
    }

    fn fence_table(&self) -> String {
        match &self.database {
            Some(db) => format!(
                "{}.{}",
                self.quote_ident(db),
                self.quote_ident(super::fence::FENCE_TABLE)
            ),
            None => self.quote_ident(super::fence::FENCE_TABLE),
        }
    }
}

impl Engine for Mysql {
    const NAME: &'static str = "mysql";

    async fn introspect(&self, table: &TableName) -> Result<Option<TableInfo>, WriteError> {
        let schema = table.schema.clone().map(Value::Text).unwrap_or(Value::Null);
        let name = Value::Text(table.name.clone());
        let columns = self
            .query(
                Stmt::new(
                    "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE FROM information_schema.COLUMNS \
                     WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
                    vec![schema.clone(), name.clone()],
                ),
                vec![ValueKind::Text; 4],
            )
            .await?;
        if columns.is_empty() {
            return Ok(None);
        }
        let key = self
            .query(
                Stmt::new(
                    "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE WHERE CONSTRAINT_NAME = 'PRIMARY' \
                     AND TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
                    vec![schema.clone(), name.clone()],
                ),
                vec![ValueKind::Text],
            )
            .await?;
        // MariaDB's JSON is LONGTEXT plus CHECK (json_valid(`col`)); MySQL has no such
        // view column and a real JSON type, so a failure here just means "none".
        let checks: Vec<String> = self
            .query(
                Stmt::new(
                    "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS \
                     WHERE CONSTRAINT_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ?",
                    vec![schema, name],
                ),
                vec![ValueKind::Text],
            )
            .await
            .unwrap_or_default()
            .iter()
            .map(|r| text_at(r, 0).replace(' ', "").to_ascii_lowercase())
            .collect();
        let columns = columns
            .iter()
            .map(|r| {
                let name = text_at(r, 0);
                let json_check =
                    format!("json_valid({})", quote_with(&name, '`')).to_ascii_lowercase();
                let mut kind = kind_of(&text_at(r, 1), &text_at(r, 2));
                if kind == ValueKind::Text && checks.contains(&json_check) {
                    kind = ValueKind::Json;
                }
                ColumnInfo {
                    kind,
                    nullable: text_at(r, 3) == "YES",
                    db_type: text_at(r, 2),
                    name,
                }
            })
            .collect();
        Ok(Some(TableInfo {
            columns,
            primary_key: first_texts(&key),
        }))
    }

    async fn query(&self, stmt: Stmt, kinds: Vec<ValueKind>) -> Result<Vec<Row>, WriteError> {
        let mut conn = self.conn().await?;
        let mut result = conn
            .exec_iter(&stmt.sql, params(stmt.params))
            .await
            .map_err(|e| self.classify(e))?;
        // Converted as they arrive: a snapshot page is never held twice (driver rows and
        // values) in memory.
        let mut rows = Vec::new();
        while let Some(row) = result.next().await.map_err(|e| self.classify(e))? {
            // Sized up front: collecting results would grow each row twice.
            let mut values = Vec::with_capacity(kinds.len());
            let row = row
                .unwrap()
                .into_iter()
                .zip(&kinds)
                .try_for_each(|(v, kind)| from_my(v, *kind).map(|v| values.push(v)))
                .map(|()| values);
            match row {
                Ok(row) => rows.push(row),
                Err(e) => {
                    // The rest of the result is read off, so the session stays usable.
                    let _ = result.drop_result().await;
                    return Err(e);
                }
            }
        }
        Ok(rows)
    }

    async fn transaction(
        &self,
        stmts: Vec<Statement<'_>>,
        suppress_echo: bool,
    ) -> Result<u64, WriteError> {
        let mut conn = self.conn().await?;
        if suppress_echo {
            conn.query_drop(capture::mysql::SET_ORIGIN)
                .await
                .map_err(|e| self.classify(e))?;
        }
        let result = self.run_in_transaction(&mut conn, stmts).await;
        if result.is_err() {
            // Best effort: a broken connection is dropped by the pool anyway.
            let _ = conn.query_drop("ROLLBACK").await;
        }
        if suppress_echo && conn.query_drop(capture::mysql::CLEAR_ORIGIN).await.is_err() {
            // Never hand a session with the mark back to the pool.
            let _ = conn.disconnect().await;
        }
        result.map_err(|e| self.classify(e))
    }

    /// InnoDB assigns `seq` at insert time; a reader cannot see uncommitted rows, except
    /// with READ UNCOMMITTED: a `seq` visible that way but missing from the page belongs to
    /// a transaction that was open (or committed since), and the page stops before it.
    async fn first_unsettled(
        &self,
        table: &TableName,
        after_seq: i64,
        seen: &[i64],
    ) -> Result<Option<i64>, WriteError> {
        let Some(&last) = seen.last() else {
            return Ok(None);
        };
        let sql = format!(
            "SELECT seq FROM {} WHERE table_name = ? AND seq > ? AND seq <= ? ORDER BY seq",
            self.changelog_table()
        );
        let mut conn = self.conn().await?;
        let dirty: Result<Vec<i64>, mysql_async::Error> = async {
            conn.query_drop("SET TRANSACTION ISOLATION LEVEL READ UNCOMMITTED")
                .await?;
            conn.query_drop("START TRANSACTION READ ONLY").await?;
            let seqs = conn
                .exec(&sql, (table.to_string(), after_seq, last))
                .await?;
            conn.query_drop("COMMIT").await?;
            Ok(seqs)
        }
        .await;
        let dirty = dirty.map_err(|e| self.classify(e))?;
        Ok(dirty.into_iter().find(|s| seen.binary_search(s).is_err()))
    }

    fn capture_install(
        &self,
        table: &TableName,
        info: &TableInfo,
    ) -> Result<Vec<Stmt>, EndpointError> {
        Ok(capture::mysql::install(
            self.home()?,
            table,
            &self.quote_table(table),
            &capture::key_columns(info),
        ))
    }

    fn capture_remove(&self, table: &TableName) -> Result<Vec<Stmt>, EndpointError> {
        Ok(capture::mysql::remove(table))
    }

    fn capture_check(&self, table: &TableName) -> Result<(Stmt, i64), EndpointError> {
        Ok(capture::mysql::check(table))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_numbers_map_to_error_types() {
        for (code, class) in [
            (1062, WriteErrorClass::Application),
            (1452, WriteErrorClass::Application),
            (3819, WriteErrorClass::Application),
            (4025, WriteErrorClass::Application),
            (1048, WriteErrorClass::Application),
            (1406, WriteErrorClass::Application),
            (1146, WriteErrorClass::Schema),
            (1054, WriteErrorClass::Schema),
            (2013, WriteErrorClass::Network),
        ] {
            assert_eq!(class_of_errno(code), class, "{code}");
        }
    }

    #[test]
    fn column_types_map_to_kinds() {
        assert_eq!(kind_of("tinyint", "tinyint(1)"), ValueKind::Bool);
        assert_eq!(kind_of("tinyint", "tinyint(4)"), ValueKind::Int);
        assert_eq!(kind_of("datetime", "datetime(6)"), ValueKind::Timestamp);
        assert_eq!(kind_of("timestamp", "timestamp(6)"), ValueKind::TimestampTz);
        assert_eq!(kind_of("longblob", "longblob"), ValueKind::Bytes);
        assert_eq!(kind_of("longtext", "longtext"), ValueKind::Text);
        assert_eq!(int_range("tinyint(4)"), Some((-128, 127)));
        assert_eq!(int_range("int(10) unsigned"), Some((0, 4_294_967_295)));
        assert_eq!(int_range("decimal(10,0)"), None);
    }
}
