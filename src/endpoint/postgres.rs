//! The PostgreSQL engine: tokio-postgres without TLS, one connection, reconnected when it
//! breaks, with a cache of prepared statements.
//!
//! Owns: PostgreSQL types ↔ [`ValueKind`], binding parameters to the types the server
//! infers, reading rows, echo suppression (`dualwrite.origin`, transaction-local) and mapping
//! SQLSTATEs to [`WriteErrorClass`].
//!
//! Does not own: SQL shapes (`sql.rs`) or trigger DDL (`crate::capture::postgres`).
//!
//! Types without a native mapping (uuid, enums, arrays, …) are read as text
//! (`col::text`) and written from text (`$n::text::type`), so they round-trip through
//! [`Value::Text`].

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use rust_decimal::Decimal;
use std::borrow::Cow;

use tokio_postgres::types::private::BytesMut;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{Client, GenericClient, NoTls, Statement};

use super::sql::{Dialect, Engine, Stmt, first_texts, on_conflict_clause, text_at};
use super::{
    ColumnInfo, EndpointError, Row, TableInfo, TableName, Value, ValueKind, WriteError,
    WriteErrorClass, redact, url_secrets,
};
use crate::capture;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const STATEMENT_CACHE: usize = 256;

pub(crate) struct Postgres {
    url: String,
    secrets: Vec<String>,
    home_schema: String,
    conn: tokio::sync::Mutex<Option<Conn>>,
}

struct Conn {
    client: Client,
    statements: HashMap<String, Statement>,
}

impl Conn {
    async fn open(url: &str, secrets: &[String]) -> Result<Conn, WriteError> {
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| classify(e, secrets))?;
        if config.get_application_name().is_none() {
            // Shows up in pg_stat_activity, so operators can tell dualwrite's sessions apart.
            config.application_name("dualwrite");
        }
        let connecting = config.connect(NoTls);
        let (client, connection) = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| {
                WriteError::new(
                    WriteErrorClass::Network,
                    None,
                    "timed out connecting to PostgreSQL",
                )
            })?
            .map_err(|e| classify(e, secrets))?;
        let secrets = secrets.to_vec();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %redact(&e.to_string(), &secrets), "PostgreSQL connection closed");
            }
        });
        Ok(Conn {
            client,
            statements: HashMap::new(),
        })
    }
}

/// A failure inside [`Conn`]: from the server or driver, or a value that cannot be bound.
enum ConnError {
    Pg(tokio_postgres::Error),
    Bind(WriteError),
}

impl From<tokio_postgres::Error> for ConnError {
    fn from(e: tokio_postgres::Error) -> Self {
        ConnError::Pg(e)
    }
}

impl Conn {
    async fn query(&mut self, stmt: &Stmt) -> Result<Vec<tokio_postgres::Row>, ConnError> {
        let prepared = prepare(&mut self.statements, &self.client, &stmt.sql).await?;
        let bound = bind_all(&prepared, &stmt.params).map_err(ConnError::Bind)?;
        let params = params(&bound);
        Ok(self.client.query(&prepared, &refs(&params)).await?)
    }

    /// Runs `stmts` in one transaction; dropping it on an error rolls it back.
    async fn transaction(&mut self, stmts: &[Stmt], suppress_echo: bool) -> Result<u64, ConnError> {
        let tx = self.client.transaction().await?;
        if suppress_echo {
            tx.batch_execute(capture::postgres::SET_ORIGIN).await?;
        }
        let mut affected = 0;
        for stmt in stmts {
            if stmt.params.is_empty() {
                tx.batch_execute(&stmt.sql).await?;
                continue;
            }
            let prepared = prepare(&mut self.statements, &tx, &stmt.sql).await?;
            let bound = bind_all(&prepared, &stmt.params).map_err(ConnError::Bind)?;
            let params = params(&bound);
            affected += tx.execute(&prepared, &refs(&params)).await?;
        }
        tx.commit().await?;
        Ok(affected)
    }
}

/// Classifies a failure. Prepared statements are forgotten (they go stale when a table
/// changes, and PostgreSQL then refuses them); after a Network-class failure the
/// connection itself is dropped, so the next call opens a new one.
fn failed(conn: &mut Option<Conn>, e: ConnError, secrets: &[String]) -> WriteError {
    let error = match e {
        ConnError::Pg(e) => classify(e, secrets),
        ConnError::Bind(e) => e,
    };
    if error.class == WriteErrorClass::Network {
        *conn = None;
    } else if let Some(conn) = conn {
        conn.statements.clear();
    }
    error
}

/// A prepared statement for `sql`, from the cache when possible.
async fn prepare(
    cache: &mut HashMap<String, Statement>,
    client: &impl GenericClient,
    sql: &str,
) -> Result<Statement, tokio_postgres::Error> {
    if let Some(stmt) = cache.get(sql) {
        return Ok(stmt.clone());
    }
    let stmt = client.prepare(sql).await?;
    if cache.len() >= STATEMENT_CACHE {
        cache.clear();
    }
    cache.insert(sql.to_string(), stmt.clone());
    Ok(stmt)
}

impl Postgres {
    pub(crate) async fn connect(url: &str) -> Result<Postgres, EndpointError> {
        let secrets = url_secrets(url);
        let connect_error = |e: WriteError| EndpointError::Connect {
            engine: "postgres",
            message: e.message,
        };
        let conn = Conn::open(url, &secrets).await.map_err(connect_error)?;
        let row = conn
            .client
            .query_one("SELECT current_schema()::text", &[])
            .await
            .map_err(|e| connect_error(classify(e, &secrets)))?;
        let home_schema: Option<String> = row.get(0);
        Ok(Postgres {
            url: url.to_string(),
            secrets,
            home_schema: home_schema.unwrap_or_else(|| "public".to_string()),
            conn: tokio::sync::Mutex::new(Some(conn)),
        })
    }

    /// The connection, reopened first if it broke.
    async fn lock(&self) -> Result<tokio::sync::MutexGuard<'_, Option<Conn>>, WriteError> {
        let mut guard = self.conn.lock().await;
        if guard.as_ref().is_none_or(|c| c.client.is_closed()) {
            *guard = None;
            *guard = Some(Conn::open(&self.url, &self.secrets).await?);
        }
        Ok(guard)
    }
}

fn kind_of_type(ty: &Type) -> Option<ValueKind> {
    Some(match *ty {
        Type::BOOL => ValueKind::Bool,
        Type::INT2 | Type::INT4 | Type::INT8 => ValueKind::Int,
        Type::NUMERIC => ValueKind::Decimal,
        Type::FLOAT4 | Type::FLOAT8 => ValueKind::Float,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => ValueKind::Text,
        Type::BYTEA => ValueKind::Bytes,
        Type::DATE => ValueKind::Date,
        Type::TIMESTAMP => ValueKind::Timestamp,
        Type::TIMESTAMPTZ => ValueKind::TimestampTz,
        Type::JSON | Type::JSONB => ValueKind::Json,
        _ => return None,
    })
}

/// Whether `db_type` (as `format_type` spells it) has a native mapping.
fn is_native(db_type: &str) -> bool {
    let mut base = String::new();
    let mut depth = 0;
    for c in db_type.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ if depth == 0 => base.push(c),
            _ => {}
        }
    }
    matches!(
        base.as_str(),
        "boolean"
            | "smallint"
            | "integer"
            | "bigint"
            | "numeric"
            | "real"
            | "double precision"
            | "text"
            | "character varying"
            | "character"
            | "name"
            | "bytea"
            | "date"
            | "timestamp without time zone"
            | "timestamp with time zone"
            | "json"
            | "jsonb"
    )
}

fn transform(message: String) -> WriteError {
    WriteError::new(WriteErrorClass::Transform, None, message)
}

/// `value` as a value of the kind the server expects for a parameter of type `ty`: borrowed
/// when it already is one (the common case), converted otherwise. Integers are checked
/// against the range of `smallint`/`integer` here, so the error names the value.
fn bind<'v>(ty: &Type, value: &'v Value) -> Result<Cow<'v, Value>, WriteError> {
    let kind = kind_of_type(ty).unwrap_or(ValueKind::Text);
    let value = if value.is_of(kind) {
        Cow::Borrowed(value)
    } else {
        Cow::Owned(
            value
                .convert_to(kind)
                .map_err(|e| transform(e.to_string()))?,
        )
    };
    if let Value::Int(i) = *value {
        let fits = match *ty {
            Type::INT2 => i16::try_from(i).is_ok(),
            Type::INT4 => i32::try_from(i).is_ok(),
            _ => true,
        };
        if !fits {
            return Err(transform(format!(
                "value {i} is out of range for type {ty}"
            )));
        }
    }
    Ok(value)
}

/// A [`Value`] bound as a parameter, encoded for the parameter's type without a copy.
#[derive(Debug)]
struct Param<'a>(&'a Value);

impl ToSql for Param<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self.0 {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(i) if *ty == Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
            Value::Int(i) if *ty == Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
            Value::Int(i) => i.to_sql(ty, out),
            Value::Float(f) if *ty == Type::FLOAT4 => (*f as f32).to_sql(ty, out),
            Value::Float(f) => f.to_sql(ty, out),
            Value::Bool(b) => b.to_sql(ty, out),
            Value::Decimal(d) => d.to_sql(ty, out),
            Value::Text(s) => s.as_str().to_sql(ty, out),
            Value::Bytes(b) => b.as_slice().to_sql(ty, out),
            Value::Date(d) => d.to_sql(ty, out),
            Value::Timestamp(t) => t.to_sql(ty, out),
            Value::TimestampTz(t) => t.to_sql(ty, out),
            Value::Json(j) => j.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        // `bind` has made the value of the kind the parameter's type expects.
        true
    }

    to_sql_checked!();
}

fn bind_all<'v>(stmt: &Statement, values: &'v [Value]) -> Result<Vec<Cow<'v, Value>>, WriteError> {
    stmt.params()
        .iter()
        .zip(values)
        .map(|(ty, v)| bind(ty, v))
        .collect()
}

fn params<'a>(bound: &'a [Cow<'_, Value>]) -> Vec<Param<'a>> {
    bound.iter().map(|v| Param(v.as_ref())).collect()
}

fn refs<'a>(params: &'a [Param<'_>]) -> Vec<&'a (dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

fn read_raw(row: &tokio_postgres::Row, i: usize) -> Result<Value, tokio_postgres::Error> {
    let raw = match *row.columns()[i].type_() {
        Type::BOOL => row.try_get::<_, Option<bool>>(i)?.map(Value::Bool),
        Type::INT2 => row
            .try_get::<_, Option<i16>>(i)?
            .map(|v| Value::Int(v.into())),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(i)?
            .map(|v| Value::Int(v.into())),
        Type::INT8 => row.try_get::<_, Option<i64>>(i)?.map(Value::Int),
        Type::NUMERIC => row.try_get::<_, Option<Decimal>>(i)?.map(Value::Decimal),
        Type::FLOAT4 => row
            .try_get::<_, Option<f32>>(i)?
            .map(|v| Value::Float(v.into())),
        Type::FLOAT8 => row.try_get::<_, Option<f64>>(i)?.map(Value::Float),
        Type::BYTEA => row.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Bytes),
        Type::DATE => row.try_get::<_, Option<NaiveDate>>(i)?.map(Value::Date),
        Type::TIMESTAMP => row
            .try_get::<_, Option<NaiveDateTime>>(i)?
            .map(Value::Timestamp),
        Type::TIMESTAMPTZ => row
            .try_get::<_, Option<DateTime<Utc>>>(i)?
            .map(Value::TimestampTz),
        Type::JSON | Type::JSONB => row
            .try_get::<_, Option<serde_json::Value>>(i)?
            .map(Value::Json),
        _ => row.try_get::<_, Option<String>>(i)?.map(Value::Text),
    };
    Ok(raw.unwrap_or(Value::Null))
}

fn read_row(row: &tokio_postgres::Row, kinds: &[ValueKind]) -> Result<Row, WriteError> {
    kinds
        .iter()
        .enumerate()
        .map(|(i, kind)| {
            read_raw(row, i)
                .map_err(|e| transform(e.to_string()))?
                .into_kind(*kind)
                .map_err(|e| transform(e.to_string()))
        })
        .collect()
}

/// SQLSTATE classes: 22 data exception, 23 integrity, P0 raised by a trigger, 27/44 → the
/// target rejected the record; 42 (syntax, undefined table/column) → Schema, except 42501
/// (permission); 08 connection, 57 operator intervention, 53 resources, 40 rollback →
/// Network (transient).
fn class_of_sqlstate(code: &str) -> WriteErrorClass {
    match (code, code.get(..2).unwrap_or("")) {
        ("42501", _) => WriteErrorClass::Application,
        (_, "42") => WriteErrorClass::Schema,
        (_, "08" | "57" | "53" | "40") => WriteErrorClass::Network,
        _ => WriteErrorClass::Application,
    }
}

fn classify(e: tokio_postgres::Error, secrets: &[String]) -> WriteError {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code().to_string();
        let mut message = db.message().to_string();
        if let Some(detail) = db.detail() {
            message = format!("{message}: {detail}");
        }
        return WriteError::new(
            class_of_sqlstate(&code),
            Some(code),
            redact(&message, secrets),
        );
    }
    let message = redact(&e.to_string(), secrets);
    let class = if message.contains("serializing") {
        WriteErrorClass::Transform
    } else {
        WriteErrorClass::Network
    };
    WriteError::new(class, None, message)
}

impl Dialect for Postgres {
    fn placeholder(&self, n: usize) -> String {
        format!("${n}")
    }

    fn max_params(&self) -> usize {
        u16::MAX as usize
    }

    fn upsert_clause(&self, keys: &[String], others: &[String]) -> String {
        on_conflict_clause(keys, others)
    }

    fn select_expr(&self, column: &ColumnInfo) -> String {
        let name = self.quote_ident(&column.name);
        if is_native(&column.db_type) {
            name
        } else {
            format!("{name}::text")
        }
    }

    fn param_expr(&self, column: &ColumnInfo, n: usize) -> String {
        if is_native(&column.db_type) {
            self.placeholder(n)
        } else {
            // db_type comes from format_type(), which quotes it where needed.
            format!("${n}::text::{}", column.db_type)
        }
    }

    fn now_sql(&self) -> &'static str {
        "SELECT clock_timestamp()"
    }

    fn changelog_table(&self) -> String {
        capture::postgres::changelog(&self.home_schema)
    }
}

impl Engine for Postgres {
    const NAME: &'static str = "postgres";

    async fn introspect(&self, table: &TableName) -> Result<Option<TableInfo>, WriteError> {
        let quoted = Value::Text(self.quote_table(table));
        let columns = self
            .query(
                Stmt::new(
                    "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.atttypid::int8, NOT a.attnotnull \
                     FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped \
                     ORDER BY a.attnum",
                    vec![quoted.clone()],
                ),
                vec![ValueKind::Text, ValueKind::Text, ValueKind::Int, ValueKind::Bool],
            )
            .await?;
        if columns.is_empty() {
            return Ok(None);
        }
        let key = self
            .query(
                Stmt::new(
                    "SELECT a.attname::text FROM pg_index i \
                     CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) \
                     JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
                     WHERE i.indrelid = to_regclass($1) AND i.indisprimary ORDER BY k.ord",
                    vec![quoted],
                ),
                vec![ValueKind::Text],
            )
            .await?;
        let columns = columns
            .iter()
            .map(|r| {
                let oid = match r[2] {
                    Value::Int(oid) => u32::try_from(oid).unwrap_or(0),
                    _ => 0,
                };
                ColumnInfo {
                    name: text_at(r, 0),
                    kind: Type::from_oid(oid)
                        .as_ref()
                        .and_then(kind_of_type)
                        .unwrap_or(ValueKind::Text),
                    nullable: r[3] == Value::Bool(true),
                    db_type: text_at(r, 1),
                }
            })
            .collect();
        Ok(Some(TableInfo {
            columns,
            primary_key: first_texts(&key),
        }))
    }

    async fn query(&self, stmt: Stmt, kinds: Vec<ValueKind>) -> Result<Vec<Row>, WriteError> {
        let mut guard = self.lock().await?;
        let Some(conn) = guard.as_mut() else {
            unreachable!("lock() connects")
        };
        let result = conn.query(&stmt).await;
        let rows = result.map_err(|e| failed(&mut guard, e, &self.secrets))?;
        rows.iter().map(|r| read_row(r, &kinds)).collect()
    }

    async fn transaction(&self, stmts: Vec<Stmt>, suppress_echo: bool) -> Result<u64, WriteError> {
        let mut guard = self.lock().await?;
        let Some(conn) = guard.as_mut() else {
            unreachable!("lock() connects")
        };
        let result = conn.transaction(&stmts, suppress_echo).await;
        result.map_err(|e| failed(&mut guard, e, &self.secrets))
    }

    async fn change_horizon(&self) -> Result<i64, WriteError> {
        let [allocated, open] = capture::postgres::horizon_queries(&self.home_schema);
        let first_int = |rows: Vec<Row>| match rows.first().and_then(|r| r.first()) {
            Some(Value::Int(n)) => Some(*n),
            _ => None,
        };
        let allocated = first_int(self.query(allocated, vec![ValueKind::Int]).await?).unwrap_or(0);
        let open = first_int(self.query(open, vec![ValueKind::Int]).await?);
        Ok(match open {
            Some(lowest) => allocated.min(lowest - 1),
            None => allocated,
        })
    }

    fn capture_install(
        &self,
        table: &TableName,
        info: &TableInfo,
    ) -> Result<Vec<Stmt>, EndpointError> {
        Ok(capture::postgres::install(
            &self.home_schema,
            table,
            &self.quote_table(table),
            &info.primary_key,
        ))
    }

    fn capture_remove(&self, table: &TableName) -> Result<Vec<Stmt>, EndpointError> {
        Ok(capture::postgres::remove(&self.quote_table(table)))
    }

    fn capture_check(&self, table: &TableName) -> Result<(Stmt, i64), EndpointError> {
        Ok(capture::postgres::check(&self.quote_table(table)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_map_to_error_types() {
        assert_eq!(class_of_sqlstate("23514"), WriteErrorClass::Application);
        assert_eq!(class_of_sqlstate("22001"), WriteErrorClass::Application);
        assert_eq!(class_of_sqlstate("42P01"), WriteErrorClass::Schema);
        assert_eq!(class_of_sqlstate("42703"), WriteErrorClass::Schema);
        assert_eq!(class_of_sqlstate("08006"), WriteErrorClass::Network);
        assert_eq!(class_of_sqlstate("42501"), WriteErrorClass::Application);
    }

    #[test]
    fn native_types_are_recognized_with_modifiers() {
        assert!(is_native("character varying(20)"));
        assert!(is_native("timestamp(3) with time zone"));
        assert!(is_native("numeric(10,2)"));
        assert!(!is_native("uuid"));
        assert!(!is_native("integer[]"));
    }
}
