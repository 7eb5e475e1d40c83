//! The PostgreSQL engine: tokio-postgres without TLS, up to [`CONNECTIONS`] connections
//! (the second opened only when two calls overlap: an initial sync writing one page while
//! the next is loaded), each reconnected when it breaks, with a cache of prepared
//! statements.
//!
//! Owns: PostgreSQL types ↔ [`ValueKind`], binding parameters to the types the server
//! infers, reading rows (snapshot pages as binary `COPY … TO STDOUT`, the after-key written
//! as typed literals), echo suppression (`dualwrite.origin`, transaction-local) and mapping
//! SQLSTATEs to [`WriteErrorClass`].
//!
//! Does not own: SQL shapes (`sql.rs`) or trigger DDL (`crate::capture::postgres`).
//!
//! `numeric` is read and written in its exact binary form ([`Decimal::from_pg_numeric`]);
//! a value no kind holds (`infinity` dates and timestamps, `NaN` numerics) is read as
//! [`Value::Unreadable`], so only its record fails.
//!
//! Types without a native mapping (uuid, enums, arrays, …) are read as text
//! (`col::text`) and written from text (`$n::text::type`), so they round-trip through
//! [`Value::Text`].
//!
//! Copies between two PostgreSQL databases as binary pages are in [`copy`].

mod copy;

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Timelike, Utc};
use std::borrow::Cow;

use bytes::{BufMut, BytesMut};
use chrono::Datelike;
use futures_util::{SinkExt, StreamExt};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{Client, GenericClient, NoTls, Statement, Transaction};

use super::sql::{
    self, DIRECT_RETRY_AFTER, Dialect, Engine, Load, SnapshotPage, Stmt, decimal_misfit,
    first_texts, fraction_misfit, on_conflict_clause, quote_with, staging_name, text_at,
    type_modifiers,
};
use super::{
    ColumnInfo, CopyOrigin, Decimal, EndpointError, ExportedPage, Row, TableCopy, TableInfo,
    TableName, Value, ValueKind, WriteError, WriteErrorClass, redact, url_secrets,
};
use crate::capture;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const STATEMENT_CACHE: usize = 256;

/// Runs of at least this many upserts are loaded with binary `COPY` into a temporary
/// staging table and upserted from there in one `INSERT … SELECT … ON CONFLICT`; shorter
/// ones are multi-row `INSERT`s.
const BULK_LOAD_MIN_ROWS: usize = 32;

/// Bytes of `COPY` data handed to the connection at a time.
const COPY_CHUNK: usize = 256 * 1024;

/// The signature that starts binary `COPY` data.
const COPY_SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

pub(crate) struct Postgres {
    url: String,
    secrets: Vec<String>,
    home_schema: String,
    conns: [tokio::sync::Mutex<Option<Conn>>; CONNECTIONS],
}

/// Connections one endpoint keeps at most: two transactions of a copy in flight at once.
const CONNECTIONS: usize = 2;

struct Conn {
    client: Client,
    statements: HashMap<String, Statement>,
    /// Staging tables this session has created (`pg_temp`, `ON COMMIT DELETE ROWS`), by
    /// quoted name.
    staged: HashMap<String, Staged>,
    /// Whether this session has created the function a value map's `CASE` ends in
    /// (see [`copy`]).
    unmapped_ready: bool,
}

/// A staging table of this session, and how rows for its target are loaded.
struct Staged {
    /// The types of its columns: those of the target's columns, or text.
    types: Vec<Type>,
    /// `COPY` into the staging table.
    copy_staged: String,
    /// `COPY` straight into the target, when every column has a native binary form.
    copy_direct: Option<String>,
    /// Loads to go before trying `copy_direct` again, after one found a key present.
    skip_direct: u32,
}

/// How long a write session may sit idle inside a transaction before the server ends it.
const IDLE_IN_TRANSACTION_MS: u64 = 10_000;

impl Conn {
    async fn open(url: &str, secrets: &[String]) -> Result<Conn, WriteError> {
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| classify(e, secrets))?;
        if config.get_application_name().is_none() {
            // Shows up in pg_stat_activity, so operators can tell dualwrite's sessions apart.
            config.application_name("dualwrite");
        }
        // A writer frozen inside a transaction (SIGSTOP, a VM pause) holds its row locks,
        // the map's fence row among them, until the server ends its session: after this
        // long, so the process that took the lease over is not blocked for good. dualwrite
        // never waits on anything else inside a transaction.
        let idle = format!("-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS}");
        let options = match config.get_options() {
            Some(given) if given.contains("idle_in_transaction_session_timeout") => None,
            Some(given) => Some(format!("{given} {idle}")),
            None => Some(idle),
        };
        if let Some(options) = options {
            config.options(&options);
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
        tokio::spawn(drive(
            connection,
            secrets.to_vec(),
            "PostgreSQL connection closed",
        ));
        Ok(Conn {
            client,
            statements: HashMap::new(),
            staged: HashMap::new(),
            unmapped_ready: false,
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
    ///
    /// A statement's rows to load are first copied (binary `COPY`), in the same
    /// transaction: straight into the target when its keys are new there (inserting is then
    /// the whole upsert; a unique violation rolls back to a savepoint and the rows take the
    /// other way), otherwise into the staging table that the statement upserts from.
    async fn transaction(
        &mut self,
        stmts: &[sql::Statement<'_>],
        suppress_echo: bool,
    ) -> Result<u64, ConnError> {
        for load in stmts.iter().filter_map(|s| s.load.as_ref()) {
            self.stage(load).await?;
        }
        let tx = self.client.transaction().await?;
        if suppress_echo {
            tx.batch_execute(capture::postgres::SET_ORIGIN).await?;
        }
        let mut affected = 0;
        for stmt in stmts {
            if let Some(load) = &stmt.load {
                let staged = self.staged.get_mut(&load.staging).expect("staged above");
                if let Some(direct) = staged
                    .copy_direct
                    .as_ref()
                    .filter(|_| staged.skip_direct == 0)
                {
                    tx.batch_execute("SAVEPOINT dualwrite_direct").await?;
                    let copy = prepare(&mut self.statements, &tx, direct).await?;
                    match copy_rows(&tx, &copy, &staged.types, &load.rows).await {
                        Ok(n) => {
                            tx.batch_execute("RELEASE SAVEPOINT dualwrite_direct")
                                .await?;
                            affected += n;
                            continue;
                        }
                        Err(ConnError::Pg(e)) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                            tx.batch_execute("ROLLBACK TO SAVEPOINT dualwrite_direct")
                                .await?;
                            staged.skip_direct = DIRECT_RETRY_AFTER;
                        }
                        Err(e) => return Err(e),
                    }
                } else {
                    staged.skip_direct = staged.skip_direct.saturating_sub(1);
                }
                let copy = prepare(&mut self.statements, &tx, &staged.copy_staged).await?;
                copy_rows(&tx, &copy, &staged.types, &load.rows).await?;
            } else if stmt.params.is_empty() {
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

/// Drives a connection until it closes: the server's notices (`NOTICE: relation … already
/// exists, skipping`) are the driver's chatter, logged at debug level, not the service's
/// info; a connection that fails is a warning (`closed`), redacted.
pub(crate) async fn drive<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
    secrets: Vec<String>,
    closed: &'static str,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            Some(Ok(tokio_postgres::AsyncMessage::Notice(notice))) => {
                tracing::debug!(
                    severity = notice.severity(),
                    "PostgreSQL: {}",
                    notice.message()
                );
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                tracing::warn!(error = %redact(&e.to_string(), &secrets), "{closed}");
                return;
            }
            None => return,
        }
    }
}

impl Conn {
    /// Runs `copy` (a binary `COPY (…) TO STDOUT`) and reads its rows: each column with
    /// its decoder, as a value of its kind.
    async fn copy_out(
        &self,
        copy: &str,
        decoders: &[Decoder],
        kinds: &[ValueKind],
    ) -> Result<Vec<Row>, ConnError> {
        let stream = self.client.copy_out(copy).await?;
        let mut stream = std::pin::pin!(stream);
        let mut rows = Vec::new();
        let mut header = true;
        while let Some(message) = stream.next().await {
            let message = message?;
            each_copy_row(&message, &mut header, |data| {
                Ok(read_copy_row(data, decoders, kinds)?
                    .map(|row| rows.push(row))
                    .is_some())
            })
            .map_err(ConnError::Bind)?;
        }
        Ok(rows)
    }
}

/// Walks one message of binary `COPY … TO STDOUT` data (the first also carries the header,
/// skipped while `first` says so): `row` takes each row off the data and says `false` at
/// the trailer. The server sends one row per message, the trailer in the last.
fn each_copy_row(
    message: &[u8],
    first: &mut bool,
    mut row: impl FnMut(&mut &[u8]) -> Result<bool, WriteError>,
) -> Result<(), WriteError> {
    let mut data = message;
    if std::mem::take(first) {
        skip_copy_header(&mut data)?;
    }
    while !data.is_empty() && row(&mut data)? {}
    Ok(())
}

/// The first `n` bytes of `data`, taken off it.
fn take<'a>(data: &mut &'a [u8], n: usize) -> Result<&'a [u8], WriteError> {
    if data.len() < n {
        return Err(transform(
            "COPY data ends in the middle of a row".to_string(),
        ));
    }
    let (head, rest) = data.split_at(n);
    *data = rest;
    Ok(head)
}

fn take_i32(data: &mut &[u8]) -> Result<i32, WriteError> {
    let bytes = take(data, 4)?;
    Ok(i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

/// Skips binary `COPY`'s signature, flags and header extension.
fn skip_copy_header(data: &mut &[u8]) -> Result<(), WriteError> {
    if take(data, COPY_SIGNATURE.len())? != COPY_SIGNATURE {
        return Err(transform("COPY data has no binary signature".to_string()));
    }
    take_i32(data)?; // flags: none defined that matter to reading
    let extension = take_i32(data)?;
    take(data, usize::try_from(extension).unwrap_or(0))?;
    Ok(())
}

/// One row of binary `COPY` data (`None` at the trailer).
fn read_copy_row(
    data: &mut &[u8],
    decoders: &[Decoder],
    kinds: &[ValueKind],
) -> Result<Option<Row>, WriteError> {
    let count = take(data, 2)?;
    let count = i16::from_be_bytes([count[0], count[1]]);
    if count == -1 {
        return Ok(None);
    }
    if usize::try_from(count).ok() != Some(decoders.len()) {
        return Err(transform(format!(
            "COPY row has {count} fields for {} columns",
            decoders.len()
        )));
    }
    read_fields(data, decoders.iter().zip(kinds)).map(Some)
}

/// The next fields of a binary `COPY` row (after its field count), one per decoder, each a
/// value of its kind.
fn read_fields<'d>(
    data: &mut &[u8],
    fields: impl ExactSizeIterator<Item = (&'d Decoder, &'d ValueKind)>,
) -> Result<Row, WriteError> {
    let mut row = Vec::with_capacity(fields.len());
    for (decoder, kind) in fields {
        let raw = match usize::try_from(take_i32(data)?) {
            Ok(len) => Some(take(data, len)?),
            Err(_) => None,
        };
        row.push(decoder.read(raw, *kind)?);
    }
    Ok(row)
}

impl Conn {
    /// Creates the staging table of `load` unless this session has it: a temporary table
    /// (invisible to other sessions, never captured) emptied at every commit, with the
    /// loaded columns' types and no constraints, so the target alone judges each row.
    /// Columns without a native mapping are staged as text. Runs outside any transaction,
    /// so a batch that fails does not undo it.
    async fn stage(&mut self, load: &Load<'_>) -> Result<(), tokio_postgres::Error> {
        if self.staged.contains_key(&load.staging) {
            return Ok(());
        }
        let columns: Vec<String> = load
            .columns
            .iter()
            .map(|c| {
                let name = quote_with(&c.name, '"');
                if is_native(&c.db_type) {
                    name
                } else {
                    format!("{name}::text AS {name}")
                }
            })
            .collect();
        let staging = &load.staging;
        self.client
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS {staging}; \
                 CREATE TEMPORARY TABLE {staging} ON COMMIT DELETE ROWS AS SELECT {} FROM {} WITH NO DATA",
                columns.join(", "),
                load.target
            ))
            .await?;
        let select = self
            .client
            .prepare(&format!("SELECT * FROM {staging}"))
            .await?;
        let types = select.columns().iter().map(|c| c.type_().clone()).collect();
        let names: Vec<String> = load
            .columns
            .iter()
            .map(|c| quote_with(&c.name, '"'))
            .collect();
        let copy_direct = load.columns.iter().all(|c| is_native(&c.db_type)).then(|| {
            format!(
                "COPY {} ({}) FROM STDIN (FORMAT binary)",
                load.target,
                names.join(", ")
            )
        });
        self.staged.insert(
            staging.clone(),
            Staged {
                types,
                copy_staged: format!("COPY {staging} FROM STDIN (FORMAT binary)"),
                copy_direct,
                skip_direct: 0,
            },
        );
        Ok(())
    }
}

/// Loads `rows` with `copy` (a binary `COPY … FROM STDIN` of columns of `types`); returns
/// how many. Values are bound as for a statement's parameters ([`bind`]), so a value that
/// does not fit fails the same way.
async fn copy_rows(
    tx: &Transaction<'_>,
    copy: &Statement,
    types: &[Type],
    rows: &[Cow<'_, [Value]>],
) -> Result<u64, ConnError> {
    let sink = tx.copy_in(copy).await?;
    let mut sink = std::pin::pin!(sink);
    let mut buf = BytesMut::with_capacity(COPY_CHUNK + 4096);
    buf.put_slice(COPY_SIGNATURE);
    buf.put_i32(0); // flags
    buf.put_i32(0); // header extension length
    for row in rows {
        encode_copy_row(&mut buf, types, row).map_err(ConnError::Bind)?;
        if buf.len() >= COPY_CHUNK {
            sink.send(buf.split().freeze()).await?;
        }
    }
    buf.put_i16(-1);
    sink.send(buf.split().freeze()).await?;
    Ok(sink.finish().await?)
}

/// One row of binary `COPY` data: the field count, then each field's length and bytes.
fn encode_copy_row(buf: &mut BytesMut, types: &[Type], row: &[Value]) -> Result<(), WriteError> {
    buf.put_i16(types.len() as i16);
    for (ty, value) in types.iter().zip(row) {
        let value = bind(ty, value)?;
        let at = buf.len();
        buf.put_i32(0);
        let written = Param(&value)
            .to_sql(ty, buf)
            .map_err(|e| transform(e.to_string()))?;
        let len = match written {
            IsNull::Yes => -1,
            IsNull::No => i32::try_from(buf.len() - at - 4)
                .map_err(|_| transform(format!("a value of type {ty} is too large")))?,
        };
        buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
    }
    Ok(())
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
        conn.staged.clear();
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
            conns: [
                tokio::sync::Mutex::new(Some(conn)),
                tokio::sync::Mutex::new(None),
            ],
        })
    }

    /// A connection no other call is using (the first when all are busy), opened first if
    /// it is not open yet or broke.
    async fn lock(&self) -> Result<tokio::sync::MutexGuard<'_, Option<Conn>>, WriteError> {
        let idle = self.conns.iter().find_map(|c| c.try_lock().ok());
        let mut guard = match idle {
            Some(guard) => guard,
            None => self.conns[0].lock().await,
        };
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

/// The type that `db_type` (as `format_type` spells it, modifiers and all) is read and
/// written as natively; `None` for types without a native mapping (read and written as text).
fn native_type(db_type: &str) -> Option<Type> {
    Some(match &*base_type(db_type) {
        "boolean" => Type::BOOL,
        "smallint" => Type::INT2,
        "integer" => Type::INT4,
        "bigint" => Type::INT8,
        "numeric" => Type::NUMERIC,
        "real" => Type::FLOAT4,
        "double precision" => Type::FLOAT8,
        "text" => Type::TEXT,
        "character varying" => Type::VARCHAR,
        "character" => Type::BPCHAR,
        "name" => Type::NAME,
        "bytea" => Type::BYTEA,
        "date" => Type::DATE,
        "timestamp without time zone" => Type::TIMESTAMP,
        "timestamp with time zone" => Type::TIMESTAMPTZ,
        "json" => Type::JSON,
        "jsonb" => Type::JSONB,
        _ => return None,
    })
}

/// `db_type` without its modifiers: `character varying(20)` → `character varying`,
/// `timestamp(3) with time zone` → `timestamp with time zone`.
fn base_type(db_type: &str) -> Cow<'_, str> {
    // Asked per value written (`inexact`): no allocation for a type without modifiers.
    if !db_type.contains('(') {
        return Cow::Borrowed(db_type);
    }
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
    // `timestamp(3) with time zone` leaves two spaces.
    Cow::Owned(base.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// Whether `db_type` has a native mapping ([`native_type`]).
fn is_native(db_type: &str) -> bool {
    native_type(db_type).is_some()
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
            Value::Decimal(d) => {
                let mut raw = Vec::with_capacity(16);
                d.to_pg_numeric(&mut raw);
                out.put_slice(&raw);
                Ok(IsNull::No)
            }
            Value::Text(s) => s.as_str().to_sql(ty, out),
            Value::Bytes(b) => b.as_slice().to_sql(ty, out),
            Value::Date(d) => d.to_sql(ty, out),
            Value::Timestamp(t) => t.to_sql(ty, out),
            Value::TimestampTz(t) => t.to_sql(ty, out),
            Value::Json(j) => j.to_sql(ty, out),
            Value::Unreadable(u) => Err(u.reason.clone().into()),
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

type DecodeError = Box<dyn std::error::Error + Sync + Send>;

/// Reads one value of a result column from its binary form: chosen once per column of a
/// result ([`Decoder::of`]), then applied to every row.
#[derive(Clone)]
struct Decoder {
    ty: Type,
    decode: fn(&Type, &[u8]) -> Result<Value, DecodeError>,
}

impl Decoder {
    /// The decoder of a column of type `ty`: types without a native mapping are read as
    /// text when they have a text form, and fail otherwise.
    fn of(ty: &Type) -> Decoder {
        let decode: fn(&Type, &[u8]) -> Result<Value, DecodeError> = match *ty {
            Type::BOOL => |t, r| Ok(Value::Bool(bool::from_sql(t, r)?)),
            Type::INT2 => |t, r| Ok(Value::Int(i16::from_sql(t, r)?.into())),
            Type::INT4 => |t, r| Ok(Value::Int(i32::from_sql(t, r)?.into())),
            Type::INT8 => |t, r| Ok(Value::Int(i64::from_sql(t, r)?)),
            Type::NUMERIC => |_, r| Ok(Value::Decimal(Decimal::from_pg_numeric(r)?)),
            Type::FLOAT4 => |t, r| Ok(Value::Float(f32::from_sql(t, r)?.into())),
            Type::FLOAT8 => |t, r| Ok(Value::Float(f64::from_sql(t, r)?)),
            Type::BYTEA => |t, r| Ok(Value::Bytes(<&[u8]>::from_sql(t, r)?.to_vec())),
            Type::DATE => |t, r| Ok(Value::Date(NaiveDate::from_sql(t, r)?)),
            Type::TIMESTAMP => |t, r| Ok(Value::Timestamp(NaiveDateTime::from_sql(t, r)?)),
            Type::TIMESTAMPTZ => |t, r| Ok(Value::TimestampTz(DateTime::<Utc>::from_sql(t, r)?)),
            Type::JSON | Type::JSONB => |t, r| Ok(Value::Json(serde_json::Value::from_sql(t, r)?)),
            _ if <&str as FromSql>::accepts(ty) => {
                |t, r| Ok(Value::Text(<&str>::from_sql(t, r)?.to_string()))
            }
            _ => |t, _| Err(format!("cannot read a value of type {t}").into()),
        };
        Decoder {
            ty: ty.clone(),
            decode,
        }
    }

    /// The value that `raw` (`None`: SQL NULL) holds, as a value of `kind`. A value that
    /// cannot be one (`infinity`, a `NaN` numeric) is [`Value::Unreadable`]: that record
    /// fails alone, the rest of the page goes on.
    fn read(&self, raw: Option<&[u8]>, kind: ValueKind) -> Result<Value, WriteError> {
        let Some(raw) = raw else {
            return Ok(Value::Null);
        };
        Ok(match (self.decode)(&self.ty, raw) {
            Ok(value) => match value.into_kind(kind) {
                Ok(value) => value,
                Err(e) => Value::unreadable(kind, e.value, e.reason),
            },
            Err(e) => {
                let text = special_text(&self.ty, raw)
                    .map_or_else(|| format!("\\x{}", hex::encode(raw)), str::to_string);
                let reason = format!(
                    "PostgreSQL's {} value {text} has no exact {kind} form ({e})",
                    self.ty
                );
                Value::unreadable(kind, text, reason)
            }
        })
    }
}

/// How PostgreSQL spells the special values of `ty` that no dualwrite kind holds, from their
/// binary form: ±infinity dates and timestamps (the extreme integers), NaN and ±Infinity
/// numerics (their sign words).
fn special_text(ty: &Type, raw: &[u8]) -> Option<&'static str> {
    let infinity = |positive: bool| Some(if positive { "infinity" } else { "-infinity" });
    match *ty {
        Type::DATE => match i32::from_be_bytes(raw.try_into().ok()?) {
            i32::MAX => infinity(true),
            i32::MIN => infinity(false),
            _ => None,
        },
        Type::TIMESTAMP | Type::TIMESTAMPTZ => match i64::from_be_bytes(raw.try_into().ok()?) {
            i64::MAX => infinity(true),
            i64::MIN => infinity(false),
            _ => None,
        },
        Type::NUMERIC => match raw.get(4..6)? {
            [0xC0, 0] => Some("NaN"),
            [0xD0, 0] => Some("Infinity"),
            [0xF0, 0] => Some("-Infinity"),
            _ => None,
        },
        _ => None,
    }
}

/// A result value's binary form, as the server sent it.
struct Raw<'a>(Option<&'a [u8]>);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, DecodeError> {
        Ok(Raw(Some(raw)))
    }

    fn from_sql_null(_: &Type) -> Result<Self, DecodeError> {
        Ok(Raw(None))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

fn read_rows(rows: &[tokio_postgres::Row], kinds: &[ValueKind]) -> Result<Vec<Row>, WriteError> {
    let Some(first) = rows.first() else {
        return Ok(Vec::new());
    };
    let decoders: Vec<Decoder> = first
        .columns()
        .iter()
        .map(|c| Decoder::of(c.type_()))
        .collect();
    rows.iter()
        .map(|row| {
            decoders
                .iter()
                .zip(kinds)
                .enumerate()
                .map(|(i, (decoder, kind))| {
                    let raw = row
                        .try_get::<_, Raw>(i)
                        .map_err(|e| transform(e.to_string()))?;
                    decoder.read(raw.0, *kind)
                })
                .collect()
        })
        .collect()
}

/// SQLSTATE classes: 22 data exception, 23 integrity, P0 raised by a trigger, 27/44 → the
/// target rejected the record; 42 (syntax, undefined table/column) → Schema, except 42501
/// (permission); 08 connection, 57 operator intervention, 53 resources, 40 rollback →
/// Network (transient).
fn class_of_sqlstate(code: &str) -> WriteErrorClass {
    match (code, code.get(..2).unwrap_or("")) {
        // A character the database's encoding cannot hold: the value cannot be stored exactly.
        ("22021" | "22P05", _) => WriteErrorClass::Transform,
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

/// `value` as an SQL literal of `column`'s type: its text in the type's input format, as
/// an escape string constant (`E'…'`, whose meaning does not depend on
/// `standard_conforming_strings`), cast to the column's type (`format_type` spelling), so
/// the server parses it exactly as it parses a text parameter (`$n::text::type`).
fn literal(column: &ColumnInfo, value: &Value) -> String {
    let text = match value {
        Value::Null => return format!("NULL::{}", column.db_type),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Decimal(d) => d.to_string(),
        Value::Float(f) if f.is_nan() => "NaN".to_string(),
        Value::Float(f) if f.is_infinite() => {
            if *f > 0.0 { "Infinity" } else { "-Infinity" }.to_string()
        }
        // The shortest text that reads back as the same double.
        Value::Float(f) => f.to_string(),
        Value::Text(s) => s.clone(),
        Value::Bytes(b) => format!("\\x{}", hex::encode(b)),
        Value::Date(d) => pg_datetime(d.year_ce(), &d.format("-%m-%d").to_string()),
        Value::Timestamp(t) => pg_datetime(
            t.date().year_ce(),
            &t.format("-%m-%d %H:%M:%S%.f").to_string(),
        ),
        Value::TimestampTz(t) => pg_datetime(
            t.naive_utc().date().year_ce(),
            &t.naive_utc().format("-%m-%d %H:%M:%S%.f+00").to_string(),
        ),
        Value::Json(j) => j.to_string(),
        Value::Unreadable(u) => u.text.clone(),
    };
    let escaped = text.replace('\\', "\\\\").replace('\'', "''");
    format!("E'{escaped}'::{}", column.db_type)
}

/// A date or timestamp in PostgreSQL's input format: the year (`year_ce` as
/// [`chrono::Datelike::year_ce`] gives it) written out, then `rest`, then ` BC` before the
/// common era (PostgreSQL has no year 0 and no signed years).
fn pg_datetime((ce, year): (bool, u32), rest: &str) -> String {
    let era = if ce { "" } else { " BC" };
    format!("{year:04}{rest}{era}")
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

    /// Text cannot hold NUL; `smallint`/`integer` have their ranges; `real` keeps 24 bits of
    /// mantissa; `numeric(p,s)` rounds extra
    /// fraction digits; timestamps keep microseconds (fewer with a precision).
    fn inexact(&self, column: &ColumnInfo, value: &Value) -> Option<String> {
        // Per value written: the column's type is looked at only for the kinds it matters to.
        let ty = || native_type(&column.db_type);
        let modifiers = || type_modifiers(&column.db_type);
        match value {
            Value::Text(s) if s.contains('\0') => {
                Some("PostgreSQL text cannot hold a NUL character".into())
            }
            Value::Float(f)
                if ty() == Some(Type::FLOAT4)
                    && f64::from(*f as f32).to_bits() != f.to_bits()
                    && !f.is_nan() =>
            {
                Some("a real (32-bit float) column cannot hold it exactly".into())
            }
            Value::Int(i) if ty() == Some(Type::INT2) && i16::try_from(*i).is_err() => {
                Some("out of range for smallint".into())
            }
            Value::Int(i) if ty() == Some(Type::INT4) && i32::try_from(*i).is_err() => {
                Some("out of range for integer".into())
            }
            Value::Decimal(d) => decimal_misfit(d, &modifiers()),
            Value::Timestamp(t) => {
                fraction_misfit(t.nanosecond(), *modifiers().first().unwrap_or(&6))
            }
            Value::TimestampTz(t) => {
                fraction_misfit(t.nanosecond(), *modifiers().first().unwrap_or(&6))
            }
            _ => None,
        }
    }

    fn row_estimates(&self, table: &TableName) -> Vec<Stmt> {
        // reltuples is -1 until the table was first analyzed: unknown, not empty.
        vec![Stmt::new(
            "SELECT CASE WHEN c.reltuples < 0 THEN NULL ELSE c.reltuples::bigint END \
             FROM pg_class c WHERE c.oid = to_regclass($1)",
            vec![Value::Text(self.quote_table(table))],
        )]
    }

    fn bulk_load_min_rows(&self) -> Option<usize> {
        Some(BULK_LOAD_MIN_ROWS)
    }

    fn staging_table(&self, target: &str, columns: &[ColumnInfo]) -> String {
        format!(
            "pg_temp.{}",
            self.quote_ident(&staging_name(target, columns))
        )
    }

    fn staged_expr(&self, column: &ColumnInfo) -> String {
        let name = self.quote_ident(&column.name);
        if is_native(&column.db_type) {
            name
        } else {
            format!("{name}::{}", column.db_type)
        }
    }

    fn changelog_table(&self) -> String {
        capture::postgres::changelog(&self.home_schema)
    }

    fn fence_table(&self) -> String {
        format!(
            "{}.{}",
            self.quote_ident(&self.home_schema),
            self.quote_ident(super::fence::FENCE_TABLE)
        )
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
        read_rows(&rows, &kinds)
    }

    /// A binary `COPY` of the page's query, the after-key written as literals
    /// ([`literal`]): each column cast to the type its decoder reads, so a column whose type
    /// changed since it was introspected is converted by the server (or fails), never
    /// misread; types without a native mapping are read as text.
    async fn read_page(&self, page: &SnapshotPage) -> Result<Vec<Row>, WriteError> {
        let select = page.sql(
            self,
            |c| {
                let name = self.quote_ident(&c.name);
                match native_type(&c.db_type) {
                    Some(_) => format!("{name}::{}", c.db_type),
                    None => format!("{name}::text"),
                }
            },
            |c, _, v| literal(c, v),
        );
        let copy = format!("COPY ({select}) TO STDOUT (FORMAT binary)");
        let decoders: Vec<Decoder> = page
            .columns
            .iter()
            .map(|c| Decoder::of(&native_type(&c.db_type).unwrap_or(Type::TEXT)))
            .collect();
        let mut guard = self.lock().await?;
        let Some(conn) = guard.as_mut() else {
            unreachable!("lock() connects")
        };
        let result = conn.copy_out(&copy, &decoders, &page.kinds()).await;
        result.map_err(|e| failed(&mut guard, e, &self.secrets))
    }

    async fn transaction(
        &self,
        stmts: Vec<sql::Statement<'_>>,
        suppress_echo: bool,
    ) -> Result<u64, WriteError> {
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

    fn copy_origin(&self) -> Option<CopyOrigin> {
        Some(CopyOrigin::PostgresBinary)
    }

    fn can_copy(&self, copy: &TableCopy) -> bool {
        copy::can_copy(self, copy)
    }

    async fn export_page(
        &self,
        copy: TableCopy,
        after_key: Option<Vec<Value>>,
        limit: usize,
    ) -> Result<ExportedPage, WriteError> {
        self.export(&copy, after_key.as_deref(), limit).await
    }

    async fn import_page(
        &self,
        copy: TableCopy,
        page: ExportedPage,
        fence: Vec<Stmt>,
    ) -> Result<u64, WriteError> {
        self.import(&copy, &page, &fence).await
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
        assert_eq!(class_of_sqlstate("22P05"), WriteErrorClass::Transform);
    }

    #[test]
    fn literals_escape_text_and_spell_values_in_postgres_input_format() {
        let col = |db_type: &str| ColumnInfo {
            name: "k".into(),
            kind: ValueKind::Text,
            nullable: false,
            db_type: db_type.into(),
        };
        let date = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
        let cases = [
            (
                col("text"),
                Value::Text("it's a\\b".into()),
                r"E'it''s a\\b'::text",
            ),
            (
                col("bytea"),
                Value::Bytes(vec![0, 0x27]),
                r"E'\\x0027'::bytea",
            ),
            (
                col("date"),
                Value::Date(date(0, 1, 1)),
                "E'0001-01-01 BC'::date",
            ),
            (
                col("date"),
                Value::Date(date(10000, 1, 1)),
                "E'10000-01-01'::date",
            ),
            (
                col("timestamp with time zone"),
                Value::TimestampTz(
                    date(2026, 11, 22)
                        .and_hms_micro_opt(10, 0, 0, 5)
                        .unwrap()
                        .and_utc(),
                ),
                "E'2026-11-22 10:00:00.000005+00'::timestamp with time zone",
            ),
            (
                col("double precision"),
                Value::Float(f64::NAN),
                "E'NaN'::double precision",
            ),
            (
                col("double precision"),
                Value::Float(0.1),
                "E'0.1'::double precision",
            ),
            (
                col("numeric(12,2)"),
                Value::Decimal("-12.50".parse().unwrap()),
                "E'-12.50'::numeric(12,2)",
            ),
            (col("uuid"), Value::Null, "NULL::uuid"),
        ];
        for (column, value, expected) in cases {
            assert_eq!(literal(&column, &value), expected, "{value:?}");
        }
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
