//! Database endpoints: the one door through which dualwrite reads and writes a SQL database.
//!
//! Owns: the [`Endpoint`] trait (introspection, snapshot paging, change capture, key
//! lookups, batched idempotent writes), where an endpoint lives ([`EndpointSpec`], from the
//! project's config with [`EndpointSpec::from_config`]), [`connect`], the vocabulary those speak
//! ([`TableName`], [`TableInfo`], [`Row`], [`WriteOp`], [`WriteError`]) and the
//! classification of database failures into the spec's error types
//! ([`WriteErrorClass`]). Engine differences (quoting, placeholders, upsert syntax, type
//! names, error codes) live in `sqlite.rs`, `postgres.rs` and `mysql.rs`; the SQL shape they
//! share lives in `sql.rs`.
//!
//! Does not own: which rows go where (sync), cursors and error records (state), nor the
//! trigger DDL and changelog model (`crate::capture`).
//!
//! Invariants every engine keeps:
//! - **Writes are idempotent upserts/deletes** in one transaction per batch; a failed
//!   batch leaves the table as it was.
//! - **dualwrite's own writes are never captured**: `write_batch` runs with the engine's
//!   echo suppression on, so bidirectional sync cannot loop.
//! - **Identifiers are always quoted** by the engine; no SQL text is taken from callers.
//! - **Secrets never leak**: connection URLs appear in no error, `Debug` output or log.

pub mod decimal;
mod fence;
pub mod listen;
mod mysql;
pub(crate) mod postgres;
pub(crate) mod sql;
mod sqlite;
pub mod value;

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use chrono::{DateTime, Utc};

pub use crate::capture::{CaptureError, Change, ChangeOp};
pub use value::{
    ConvertError, Decimal, Unreadable, Value, ValueKind, key_from_json, key_string, key_to_json,
};

/// A boxed, `Send` future, so that `Box<dyn Endpoint>` can be shared across tasks.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One row: values in the order of the columns that were asked for.
pub type Row = Vec<Value>;

/// Whose write a transaction is: a map and the epoch of the lease its writer holds. Every
/// write transaction that carries one first raises the map's fence row in the target to this
/// epoch, in the same transaction as the rows; a writer whose epoch is older than the row's
/// (its lease was taken over) is refused with [`WriteErrorClass::Fenced`] and writes nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    pub map: String,
    pub epoch: i64,
}

/// Where an endpoint lives. URLs are secrets: `Debug` prints only the engine.
#[derive(Clone, PartialEq, Eq)]
pub enum EndpointSpec {
    Sqlite { path: PathBuf },
    Postgres { url: String },
    Mysql { url: String },
}

impl fmt::Debug for EndpointSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndpointSpec::Sqlite { path } => f.debug_struct("Sqlite").field("path", path).finish(),
            EndpointSpec::Postgres { .. } => f.write_str("Postgres { url: <redacted> }"),
            EndpointSpec::Mysql { .. } => f.write_str("Mysql { url: <redacted> }"),
        }
    }
}

impl EndpointSpec {
    /// Where the endpoint `cfg` of the project in `dir` lives: a SQLite file relative to
    /// `dir`, or a server whose URL is read from the environment variable the config names.
    /// A variable that is not set is [`EndpointError::MissingEnv`], which names the variable
    /// (never a URL).
    pub fn from_config(
        dir: &Path,
        cfg: &crate::config::EndpointConfig,
    ) -> Result<EndpointSpec, EndpointError> {
        let env = |variable: &str| {
            std::env::var(variable).map_err(|_| EndpointError::MissingEnv {
                variable: variable.to_string(),
            })
        };
        if let Some(s) = &cfg.sqlite {
            return Ok(EndpointSpec::Sqlite {
                path: dir.join(&s.path),
            });
        }
        if let Some(p) = &cfg.postgres {
            return Ok(EndpointSpec::Postgres {
                url: env(&p.url_from_env)?,
            });
        }
        if let Some(m) = &cfg.mysql {
            return Ok(EndpointSpec::Mysql {
                url: env(&m.url_from_env)?,
            });
        }
        Err(EndpointError::NoEngine)
    }
}

/// Opens an endpoint. Fails with [`EndpointError::Connect`] (class Network) when the
/// database cannot be reached; the message never contains the URL.
pub async fn connect(spec: &EndpointSpec) -> Result<Box<dyn Endpoint>, EndpointError> {
    Ok(match spec {
        EndpointSpec::Sqlite { path } => {
            Box::new(sql::SqlEndpoint::new(sqlite::Sqlite::open(path).await?))
        }
        EndpointSpec::Postgres { url } => Box::new(sql::SqlEndpoint::new(
            postgres::Postgres::connect(url).await?,
        )),
        EndpointSpec::Mysql { url } => {
            Box::new(sql::SqlEndpoint::new(mysql::Mysql::connect(url).await?))
        }
    })
}

/// A table name: `table` or `schema.table` (for MySQL the schema is the database, for
/// SQLite the attached database name, usually `main`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName {
    pub schema: Option<String>,
    pub name: String,
}

impl TableName {
    /// Parses `table` or `schema.table`. Parts must be non-empty and free of NUL; any
    /// other character is allowed because identifiers are always quoted.
    pub fn parse(text: &str) -> Result<TableName, EndpointError> {
        let invalid = |reason: &str| EndpointError::InvalidTableName {
            name: text.to_string(),
            reason: reason.to_string(),
        };
        let parts: Vec<&str> = text.split('.').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(invalid(
                "expected `table` or `schema.table` with non-empty parts",
            ));
        }
        if text.contains('\0') {
            return Err(invalid("contains a NUL character"));
        }
        match parts.as_slice() {
            [name] => Ok(TableName {
                schema: None,
                name: name.to_string(),
            }),
            [schema, name] => Ok(TableName {
                schema: Some(schema.to_string()),
                name: name.to_string(),
            }),
            _ => Err(invalid("expected `table` or `schema.table`")),
        }
    }
}

impl std::str::FromStr for TableName {
    type Err = EndpointError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TableName::parse(s)
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{schema}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// One column as the database describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnInfo {
    pub name: String,
    /// The engine-neutral kind values of this column are read as and converted to.
    pub kind: ValueKind,
    pub nullable: bool,
    /// The engine's own type name (`character varying(20)`, `tinyint(1)`, `DECIMAL(10,2)`).
    pub db_type: String,
}

/// The columns (in table order) and primary key (in key order) of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    pub columns: Vec<ColumnInfo>,
    pub primary_key: Vec<String>,
}

impl TableInfo {
    pub fn column(&self, name: &str) -> Option<&ColumnInfo> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The kinds of `columns`, in order: what [`TableInfo::convert_with`] converts to.
    pub fn kinds_of(
        &self,
        table: &TableName,
        columns: &[String],
    ) -> Result<Vec<ValueKind>, EndpointError> {
        columns
            .iter()
            .map(|name| {
                self.column(name)
                    .map(|c| c.kind)
                    .ok_or_else(|| EndpointError::ColumnNotFound {
                        table: table.to_string(),
                        column: name.clone(),
                    })
            })
            .collect()
    }

    /// Converts `row` (values for `columns`, of `kinds` from [`TableInfo::kinds_of`]),
    /// consuming it: values already of their column's kind are moved, not copied.
    pub fn convert_with(
        columns: &[String],
        kinds: &[ValueKind],
        row: Row,
    ) -> Result<Row, EndpointError> {
        if row.len() != kinds.len() {
            return Err(EndpointError::RowShape {
                expected: kinds.len(),
                got: row.len(),
            });
        }
        row.into_iter()
            .zip(kinds.iter().zip(columns))
            .map(|(value, (kind, name))| {
                value
                    .into_kind(*kind)
                    .map_err(|source| EndpointError::Convert {
                        column: name.clone(),
                        source,
                    })
            })
            .collect()
    }

    /// [`TableInfo::convert_row`], consuming the row: values already of their column's kind
    /// are moved, not copied.
    pub fn convert_row_owned(
        &self,
        table: &TableName,
        columns: &[String],
        row: Row,
    ) -> Result<Row, EndpointError> {
        TableInfo::convert_with(columns, &self.kinds_of(table, columns)?, row)
    }

    /// Converts `row` (values for `columns`, in order) to the kinds of those columns — what
    /// `write_batch` does before writing. Call it first to turn a bad value into a
    /// TransformError for that one record instead of failing a whole batch.
    pub fn convert_row(
        &self,
        table: &TableName,
        columns: &[String],
        row: &[Value],
    ) -> Result<Row, EndpointError> {
        self.convert_row_owned(table, columns, row.to_vec())
    }
}

/// One change to apply with [`Endpoint::write_batch`].
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOp {
    /// Insert or update a row: values for the batch's `columns`, in order.
    Upsert(Row),
    /// Delete by key: values for the batch's `key_columns`, in order. Deleting a missing
    /// key is not an error.
    Delete(Vec<Value>),
}

/// How another endpoint of the same engine can take this endpoint's tables without rows
/// becoming typed values ([`Endpoint::copy_origin`]): the origin of a [`TableCopy`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyOrigin {
    /// A SQLite database file (canonical path), read by the target inside its own database
    /// ([`Endpoint::copy_page`]).
    SqliteFile(PathBuf),
    /// A PostgreSQL database: pages leave it as binary `COPY` data
    /// ([`Endpoint::export_page`]) and enter the target as they are
    /// ([`Endpoint::import_page`]).
    PostgresBinary,
}

impl CopyOrigin {
    /// Whether the target copies the pages inside its own database ([`Endpoint::copy_page`]),
    /// rather than taking pages the source exports ([`Endpoint::import_page`]).
    pub fn in_database(&self) -> bool {
        matches!(self, CopyOrigin::SqliteFile(_))
    }
}

/// What one target column of a [`TableCopy`] gets.
#[derive(Debug, Clone, PartialEq)]
pub enum CopyValue {
    /// This source column's value, as stored: both columns are of the same kind.
    Column(String),
    /// A constant, already of the target column's kind; bound as a parameter.
    Constant(Value),
    /// This source column's value through a `valueMap`: each arm's source value is of the
    /// source column's kind (compared exactly, no collation), its target value of the
    /// target column's kind. NULL stays NULL; any other value without an arm fails the
    /// page (it is then written through typed values, where that record becomes a
    /// TransformError), never a silent NULL.
    Mapped {
        column: String,
        arms: Vec<(Value, Value)>,
    },
}

/// A copy of one table into another of the same engine, rows never passing through typed
/// values: the same-engine fast path of the initial sync (inside the target database, or as
/// pages in the engine's own binary form, see [`CopyOrigin`]). Every target column is a
/// source column of the same kind, a source column through a value map, or a constant, so
/// the target takes the values verbatim.
#[derive(Debug, Clone, PartialEq)]
pub struct TableCopy {
    pub origin: CopyOrigin,
    pub from_table: TableName,
    /// Both tables as introspected: the engine decides from their types whether it can
    /// take every value as it is ([`Endpoint::can_copy`]).
    pub from_info: TableInfo,
    pub to_info: TableInfo,
    /// The source's key columns, in its primary-key order, and their kinds.
    pub from_key: Vec<String>,
    pub from_key_kinds: Vec<ValueKind>,
    pub to_table: TableName,
    /// Target columns (key columns first, matching `from_key`) and what each gets.
    pub to_columns: Vec<String>,
    pub to_key: Vec<String>,
    pub values: Vec<CopyValue>,
    /// Leave rows whose key the target already has alone instead of upserting them.
    pub only_missing: bool,
}

/// What one page of a [`TableCopy`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct CopiedPage {
    /// Source rows in the page (0: nothing after the key given, the copy is done).
    pub read: u64,
    /// Rows upserted (all of them), or inserted with `only_missing`.
    pub written: u64,
    /// The source key of the page's last row, of `from_key_kinds`: where the next page
    /// starts.
    pub last_key: Option<Vec<Value>>,
}

/// One page of a [`TableCopy`] as the source exported it ([`Endpoint::export_page`]): the
/// rows in the engine's own binary form, ready for [`Endpoint::import_page`] of an
/// endpoint of the same engine. Holds the page's bytes (bounded by the page size).
#[derive(Debug, Clone)]
pub struct ExportedPage {
    /// Rows in the page (0: nothing after the key given, the copy is done).
    pub rows: u64,
    /// The source key of the page's last row, of `from_key_kinds`: where the next page
    /// starts.
    pub last_key: Option<Vec<Value>>,
    /// The data, in chunks as they are sent on.
    pub(crate) data: Vec<bytes::Bytes>,
}

impl ExportedPage {
    /// The page's size in bytes.
    pub fn bytes(&self) -> usize {
        self.data.iter().map(bytes::Bytes::len).sum()
    }
}

/// Captured changes still waiting to be written (see [`Endpoint::queue_depth`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueDepth {
    pub pending: u64,
    pub oldest_at: Option<DateTime<Utc>>,
}

/// The spec's error types, as far as a database failure can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum WriteErrorClass {
    /// The target rejected the record: constraint, validation, trigger.
    Application,
    /// The endpoint is unreachable or the connection broke; worth retrying.
    Network,
    /// A table or column is missing or incompatible.
    Schema,
    /// A value cannot be represented in the target column.
    Transform,
    /// The write carried a lease epoch older than the one the target's fence row holds:
    /// another process drives the map now, and this one must give it up.
    Fenced,
}

/// A classified database failure. `code` is the SQLSTATE (PostgreSQL), the error number
/// (MySQL/MariaDB) or the extended result code name (SQLite, `SQLITE_CONSTRAINT_CHECK`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}{}", code_suffix(.code))]
pub struct WriteError {
    pub class: WriteErrorClass,
    pub code: Option<String>,
    pub message: String,
}

fn code_suffix(code: &Option<String>) -> String {
    code.as_ref()
        .map(|c| format!(" (code {c})"))
        .unwrap_or_default()
}

impl WriteError {
    pub fn new(class: WriteErrorClass, code: Option<String>, message: impl Into<String>) -> Self {
        WriteError {
            class,
            code,
            message: message.into(),
        }
    }
}

/// Everything that can go wrong talking to an endpoint.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EndpointError {
    #[error("invalid table name {name:?}: {reason}")]
    InvalidTableName { name: String, reason: String },
    #[error("table {table} does not exist")]
    TableNotFound { table: String },
    #[error("column {column} does not exist in table {table}")]
    ColumnNotFound { table: String, column: String },
    #[error("table {table} has no primary key")]
    NoPrimaryKey { table: String },
    #[error("{what} is not supported by the {engine} endpoint")]
    Unsupported { engine: &'static str, what: String },
    #[error("key column {column} is not among the written columns")]
    KeyNotWritten { column: String },
    #[error("a row has {got} values for {expected} columns")]
    RowShape { expected: usize, got: usize },
    #[error("column {column}: {source}")]
    Convert {
        column: String,
        #[source]
        source: ConvertError,
    },
    #[error("cannot connect to the {engine} endpoint: {message}")]
    Connect {
        engine: &'static str,
        message: String,
    },
    /// LISTEN for captured changes failed (see `listen`); `message` is redacted.
    #[error("cannot listen for changes on the {engine} endpoint: {message}")]
    Listen {
        engine: &'static str,
        message: String,
    },
    /// The environment variable that holds the endpoint's URL is not set.
    #[error("environment variable {variable} is not set")]
    MissingEnv { variable: String },
    /// The endpoint's config names no engine (a validated config always names one).
    #[error("no engine configured")]
    NoEngine,
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error(transparent)]
    Database(#[from] WriteError),
}

impl EndpointError {
    /// Which of the spec's error types this is.
    pub fn class(&self) -> WriteErrorClass {
        match self {
            EndpointError::TableNotFound { .. }
            | EndpointError::ColumnNotFound { .. }
            | EndpointError::NoPrimaryKey { .. }
            | EndpointError::InvalidTableName { .. }
            | EndpointError::Unsupported { .. }
            | EndpointError::KeyNotWritten { .. }
            | EndpointError::RowShape { .. } => WriteErrorClass::Schema,
            EndpointError::Convert { .. } | EndpointError::Capture(_) => WriteErrorClass::Transform,
            EndpointError::Connect { .. }
            | EndpointError::Listen { .. }
            | EndpointError::MissingEnv { .. }
            | EndpointError::NoEngine => WriteErrorClass::Network,
            EndpointError::Database(e) => e.class,
        }
    }

    /// The database's code, when the database said no.
    pub fn code(&self) -> Option<&str> {
        match self {
            EndpointError::Database(e) => e.code.as_deref(),
            _ => None,
        }
    }
}

impl From<EndpointError> for WriteError {
    fn from(e: EndpointError) -> Self {
        match e {
            EndpointError::Database(w) => w,
            other => WriteError::new(other.class(), None, other.to_string()),
        }
    }
}

/// A SQL database dualwrite reads from and writes to. Object-safe: hold it as
/// `Box<dyn Endpoint>`. Table metadata is cached per endpoint and refreshed after a
/// Schema-class failure.
pub trait Endpoint: Send + Sync {
    /// `sqlite`, `postgres` or `mysql`.
    fn engine_name(&self) -> &'static str;

    /// Columns and primary key; [`EndpointError::TableNotFound`] (class Schema) if missing.
    /// Always asks the database (and refreshes the cache).
    fn introspect<'a>(
        &'a self,
        table: &'a TableName,
    ) -> BoxFuture<'a, Result<TableInfo, EndpointError>>;

    /// Installs change capture for `table`: creates the endpoint's changelog table if
    /// missing and the table's INSERT/UPDATE/DELETE triggers. Idempotent; one set of
    /// triggers serves every map that reads the table.
    fn install_capture<'a>(
        &'a self,
        table: &'a TableName,
    ) -> BoxFuture<'a, Result<(), EndpointError>>;

    /// Drops the table's capture triggers (not its changelog rows: see
    /// [`Endpoint::changelog_trim`]). Idempotent; a missing table is not an error.
    fn remove_capture<'a>(
        &'a self,
        table: &'a TableName,
    ) -> BoxFuture<'a, Result<(), EndpointError>>;

    /// Whether all three capture triggers of `table` exist.
    fn capture_installed<'a>(
        &'a self,
        table: &'a TableName,
    ) -> BoxFuture<'a, Result<bool, EndpointError>>;

    /// One page of the table in key order: rows whose key is greater than `after_key`
    /// (or the first page), at most `limit`. Values are in `columns` order, of the columns'
    /// kinds. Feed the last row's key back as `after_key` for the next page.
    fn read_snapshot<'a>(
        &'a self,
        table: &'a TableName,
        columns: &'a [String],
        key_columns: &'a [String],
        after_key: Option<&'a [Value]>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Row>, EndpointError>>;

    /// Captured changes of `table` with `seq > after_seq`, in `seq` order, at most `limit`.
    /// A change carries the key only; read the current row with [`Endpoint::fetch_rows`].
    ///
    /// **Safe to advance a cursor over**: a page stops before any `seq` that a transaction
    /// still open holds, so a change committed late is never skipped (it holds back the
    /// changes after it until it commits or rolls back).
    fn read_changes<'a>(
        &'a self,
        table: &'a TableName,
        after_seq: i64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Change>, EndpointError>>;

    /// The newest captured `seq` of `table` that is final (0 when none): a cursor that
    /// starts here misses nothing still to commit. On MySQL, open transactions are looked
    /// for among the table's newest 1,000 changes.
    fn max_change_seq<'a>(
        &'a self,
        table: &'a TableName,
    ) -> BoxFuture<'a, Result<i64, EndpointError>>;

    /// How many captured changes of `table` wait after `after_seq`, and when the oldest of
    /// them was captured: a map's queue. One aggregate query, however long the queue.
    fn queue_depth<'a>(
        &'a self,
        table: &'a TableName,
        after_seq: i64,
    ) -> BoxFuture<'a, Result<QueueDepth, EndpointError>>;

    /// Deletes captured changes of `table` with `seq <= up_to_seq`; returns how many.
    fn changelog_trim<'a>(
        &'a self,
        table: &'a TableName,
        up_to_seq: i64,
    ) -> BoxFuture<'a, Result<u64, EndpointError>>;

    /// The current rows for `keys` (values for `key_columns`); missing keys are absent.
    fn fetch_rows<'a>(
        &'a self,
        table: &'a TableName,
        columns: &'a [String],
        key_columns: &'a [String],
        keys: &'a [Vec<Value>],
    ) -> BoxFuture<'a, Result<Vec<Row>, EndpointError>>;

    /// Applies `ops` in order in one transaction, echo-suppressed (never captured).
    /// Upserts carry values for `columns` (which include `key_columns`), deletes values for
    /// `key_columns`. Values are converted to the columns' kinds first (class Transform on
    /// failure). Idempotent. On any failure nothing is written. With a `fence`, the
    /// transaction is refused (class Fenced) when the target has seen a newer epoch of the map.
    fn write_batch<'a>(
        &'a self,
        table: &'a TableName,
        columns: &'a [String],
        key_columns: &'a [String],
        ops: &'a [WriteOp],
        fence: Option<&'a Fence>,
    ) -> BoxFuture<'a, Result<(), WriteError>>;

    /// The database's clock, in UTC.
    fn now(&self) -> BoxFuture<'_, Result<DateTime<Utc>, EndpointError>>;

    /// `table`'s row count as the engine's statistics estimate it, without a full scan where
    /// the engine keeps statistics (PostgreSQL `pg_class.reltuples`, MySQL
    /// `information_schema.TABLES`, SQLite `max(rowid)`, else `count(*)`); `None` when it
    /// cannot say. Only for showing progress.
    fn estimate_rows<'a>(&'a self, _table: &'a TableName) -> BoxFuture<'a, Option<u64>> {
        Box::pin(async { None })
    }

    /// Where an endpoint of the same engine can read this endpoint's tables from, if it
    /// can ([`Endpoint::copy_page`]). `None` by default.
    fn copy_origin(&self) -> Option<CopyOrigin> {
        None
    }

    /// Whether [`Endpoint::copy_page`] can run `copy` into this endpoint. `false` by default.
    fn can_copy(&self, _copy: &TableCopy) -> bool {
        false
    }

    /// Copies the source rows after `after_key` (or from the first), at most `limit`, into
    /// the target table inside this database, in one transaction, echo-suppressed like
    /// [`Endpoint::write_batch`] and as idempotent (fenced the same way). On any failure nothing is written: the
    /// caller writes that page through typed values instead, which isolates bad records.
    /// Unsupported unless [`Endpoint::can_copy`] says so.
    fn copy_page<'a>(
        &'a self,
        _copy: &'a TableCopy,
        _after_key: Option<&'a [Value]>,
        _limit: usize,
        _fence: Option<&'a Fence>,
    ) -> BoxFuture<'a, Result<CopiedPage, WriteError>> {
        let unsupported = EndpointError::Unsupported {
            engine: self.engine_name(),
            what: "in-database table copies".into(),
        };
        Box::pin(async move { Err(unsupported.into()) })
    }

    /// The source rows of `copy` after `after_key` (or from the first), at most `limit`, in
    /// key order, in the engine's binary form: what [`Endpoint::import_page`] of the target
    /// takes. Each value is already what its target column gets (value maps and constants
    /// applied); a value without a value-map entry fails the page (the caller then reads it
    /// through typed values, where that record becomes a TransformError). Only for a `copy`
    /// the target said yes to ([`Endpoint::can_copy`]) whose origin is this endpoint's.
    fn export_page<'a>(
        &'a self,
        _copy: &'a TableCopy,
        _after_key: Option<&'a [Value]>,
        _limit: usize,
    ) -> BoxFuture<'a, Result<ExportedPage, EndpointError>> {
        let unsupported = EndpointError::Unsupported {
            engine: self.engine_name(),
            what: "exporting pages".into(),
        };
        Box::pin(async move { Err(unsupported) })
    }

    /// Writes a page [`Endpoint::export_page`] of the copy's source gave into the target
    /// table, in one transaction, echo-suppressed and fenced like [`Endpoint::write_batch`]
    /// and as idempotent (upserts; with `only_missing`, rows whose key is there are left
    /// alone). Returns the rows written. On any failure nothing is written: the caller
    /// writes those rows through typed values instead, which isolates bad records.
    fn import_page<'a>(
        &'a self,
        _copy: &'a TableCopy,
        _page: &'a ExportedPage,
        _fence: Option<&'a Fence>,
    ) -> BoxFuture<'a, Result<u64, WriteError>> {
        let unsupported = EndpointError::Unsupported {
            engine: self.engine_name(),
            what: "importing pages".into(),
        };
        Box::pin(async move { Err(unsupported.into()) })
    }
}

/// Replaces every secret (a URL, its password) in a driver message with `***`.
pub(crate) fn redact(message: &str, secrets: &[String]) -> String {
    let mut out = message.to_string();
    for secret in secrets.iter().filter(|s| s.len() >= 3) {
        out = out.replace(secret.as_str(), "***");
    }
    out
}

/// The secrets inside a connection URL: the URL itself and its password, if any.
pub(crate) fn url_secrets(url: &str) -> Vec<String> {
    let mut secrets = vec![url.to_string()];
    if let Some((_, rest)) = url.split_once("://")
        && let Some((userinfo, _)) = rest.rsplit_once('@')
        && let Some((_, password)) = userinfo.split_once(':')
    {
        secrets.push(password.to_string());
    }
    secrets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_spec_debug_hides_urls() {
        let spec = EndpointSpec::Postgres {
            url: "postgres://u:hunter2@db/x".into(),
        };
        assert_eq!(format!("{spec:?}"), "Postgres { url: <redacted> }");
        assert!(
            !format!(
                "{:?}",
                EndpointSpec::Mysql {
                    url: "mysql://u:pw@h/d".into()
                }
            )
            .contains("pw")
        );
    }

    #[test]
    fn a_missing_url_variable_is_named_and_a_sqlite_path_is_relative_to_the_project() {
        let cfg = |json: serde_json::Value| -> crate::config::EndpointConfig {
            serde_json::from_value(json).unwrap()
        };
        let missing = EndpointSpec::from_config(
            Path::new("/p"),
            &cfg(serde_json::json!({ "postgres": { "urlFromEnv": "DUALWRITE_TEST_UNSET_URL" } })),
        );
        assert_eq!(
            missing,
            Err(EndpointError::MissingEnv {
                variable: "DUALWRITE_TEST_UNSET_URL".into()
            })
        );
        assert_eq!(
            missing.unwrap_err().to_string(),
            "environment variable DUALWRITE_TEST_UNSET_URL is not set"
        );
        let sqlite = EndpointSpec::from_config(
            Path::new("/p"),
            &cfg(serde_json::json!({ "sqlite": { "path": "app.db" } })),
        );
        assert_eq!(
            sqlite,
            Ok(EndpointSpec::Sqlite {
                path: PathBuf::from("/p/app.db")
            })
        );
    }

    #[test]
    fn only_postgres_endpoints_can_listen() {
        let spec = |url: &str| EndpointSpec::Postgres { url: url.into() };
        assert!(spec("postgres://h/d").can_listen());
        assert!(
            !EndpointSpec::Mysql {
                url: "mysql://h/d".into()
            }
            .can_listen()
        );
        assert!(
            !EndpointSpec::Sqlite {
                path: "a.db".into()
            }
            .can_listen()
        );
    }

    #[test]
    fn redact_removes_url_and_password() {
        let secrets = url_secrets("postgres://u:hunter2@db/x");
        assert_eq!(
            redact("failed for postgres://u:hunter2@db/x (hunter2)", &secrets),
            "failed for *** (***)"
        );
    }

    #[test]
    fn table_names_parse_with_optional_schema() {
        assert_eq!(TableName::parse("a").unwrap().to_string(), "a");
        let t = TableName::parse("s.a").unwrap();
        assert_eq!((t.schema.as_deref(), t.name.as_str()), (Some("s"), "a"));
        assert!(TableName::parse("a.b.c").is_err());
        assert!(TableName::parse(".a").is_err());
    }
}
