//! The SQL every engine shares, and the one [`Endpoint`] implementation built on it.
//!
//! Owns: the statement shapes (keyset pages, key lookups, multi-row upserts and deletes,
//! changelog reads), chunking by the engine's parameter limit, the table metadata cache and
//! value conversion before binding.
//!
//! Does not own: anything that differs between engines. Those are asked of the engine
//! through [`Dialect`] (text of SQL) and [`Engine`] (running it).

use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use super::fence::{FENCE_TABLE, fence_ddl, fence_statements, fenced};
use super::{
    BoxFuture, Change, ColumnInfo, CopiedPage, CopyOrigin, Decimal, Endpoint, EndpointError,
    ExportedPage, Fence, QueueDepth, Row, TableCopy, TableInfo, TableName, Value, ValueKind,
    WriteError, WriteErrorClass, WriteOp, key_string,
};
use crate::capture::{CHANGELOG_TABLE, change_from_row};

/// How far back [`Endpoint::max_change_seq`] looks for open transactions on engines that
/// cannot bound reads up front (MySQL).
const RECENT_CHANGES: usize = 1000;

/// A statement and its parameters, values already of the target columns' kinds. Rows to
/// load may be borrowed from the caller's batch (`'a`); see [`Stmt`] for the owned form.
#[derive(Debug, Clone)]
pub(crate) struct Statement<'a> {
    pub sql: String,
    pub params: Vec<Value>,
    /// A run of upserts the engine loads in bulk, in the same transaction, its own way:
    /// into a staging table that `sql` then upserts from, or by running
    /// [`Load::row_sql`] once per row (and not `sql`), for engines whose
    /// [`Dialect::bulk_load_min_rows`] says so; or, for engines that
    /// [`Dialect::loads_new_rows`], straight into the target (`sql` is then empty: the
    /// multi-row upserts of [`Load::fallback`] run only when the load cannot).
    pub load: Option<Load<'a>>,
}

/// A statement that owns everything it holds.
pub(crate) type Stmt = Statement<'static>;

impl Statement<'_> {
    pub(crate) fn new(sql: impl Into<String>, params: Vec<Value>) -> Self {
        Statement {
            sql: sql.into(),
            params,
            load: None,
        }
    }

    /// This statement with its rows copied, for engines that run it on another thread.
    pub(crate) fn into_owned(self) -> Stmt {
        Statement {
            sql: self.sql,
            params: self.params,
            load: self.load.map(|load| Load {
                rows: load
                    .rows
                    .into_iter()
                    .map(|row| Cow::Owned(row.into_owned()))
                    .collect(),
                row_sql: load.row_sql,
                target: load.target,
                staging: load.staging,
                columns: load.columns,
                fallback: load.fallback,
            }),
        }
    }
}

/// From how many rows on a run of upserts is offered for a direct load
/// ([`Dialect::loads_new_rows`]).
pub(crate) const DIRECT_LOAD_MIN_ROWS: usize = 32;

/// After a direct load (PostgreSQL: `COPY` into the table; MySQL: `LOAD DATA`) found a key
/// already there, this many loads take the engine's other way before it is tried again.
pub(crate) const DIRECT_RETRY_AFTER: u32 = 16;

/// A staging table's name: one per target table and set of columns, the same in every run.
pub(crate) fn staging_name(target: &str, columns: &[ColumnInfo]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325; // FNV-1a
    for part in std::iter::once(target).chain(columns.iter().map(|c| c.name.as_str())) {
        for b in part.bytes().chain([0]) {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("_dualwrite_stage_{hash:016x}")
}

/// A run of upserts to load in bulk: the engine's fast path for large batches.
#[derive(Debug, Clone)]
pub(crate) struct Load<'a> {
    /// The upsert of one row, parameters in column order (engines that prepare it once
    /// and run it per row).
    pub row_sql: String,
    /// The quoted target table the staging table takes its column types from.
    pub target: String,
    /// The staging table, quoted ([`Dialect::staging_table`]).
    pub staging: String,
    /// The columns loaded, in order; each row has one value per column, of its kind.
    pub columns: Vec<ColumnInfo>,
    /// Distinct keys: the upsert from staging would refuse a key twice. Borrowed from the
    /// batch when already of the columns' kinds.
    pub rows: Vec<Cow<'a, [Value]>>,
    /// Engines that load runs of new rows straight into the target
    /// ([`Dialect::loads_new_rows`]): how to write the same rows as multi-row upserts when
    /// the load cannot (a key already there, a value the target adjusts), built only then
    /// ([`multi_row_upserts`]), so a page's values are not copied into parameters it never
    /// needs. `None` for the staging and per-row loads.
    pub fallback: Option<Fallback>,
}

/// The multi-row upserts a direct [`Load`] stands for: their `ON CONFLICT`/`ON DUPLICATE
/// KEY` clause and rows per statement.
#[derive(Debug, Clone)]
pub(crate) struct Fallback {
    pub clause: String,
    pub per_stmt: usize,
}

/// `INSERT INTO target (…) VALUES (…), (…) clause` for `rows`, at most `per_stmt` rows a
/// statement, parameters in row order (copied from the rows).
pub(crate) fn multi_row_upserts<'o>(
    d: &(impl Dialect + ?Sized),
    target: &str,
    columns: &[ColumnInfo],
    clause: &str,
    rows: Vec<Cow<'o, [Value]>>,
    per_stmt: usize,
) -> Vec<Statement<'o>> {
    let cols: Vec<String> = columns.iter().map(|c| d.quote_ident(&c.name)).collect();
    let mut out = Vec::new();
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<Cow<'o, [Value]>> = rows.by_ref().take(per_stmt.max(1)).collect();
        let mut sql = format!("INSERT INTO {target} ({}) VALUES ", cols.join(", "));
        for i in 0..chunk.len() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            push_params(d, &mut sql, columns, i * cols.len() + 1);
            sql.push(')');
        }
        sql.push(' ');
        sql.push_str(clause);
        let params = chunk.into_iter().flat_map(Cow::into_owned).collect();
        out.push(Statement::new(sql, params));
    }
    out
}

/// Appends `p1, p2, …` for `cols` starting at parameter `first`.
fn push_params(d: &(impl Dialect + ?Sized), sql: &mut String, cols: &[ColumnInfo], first: usize) {
    for (i, c) in cols.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&d.param_expr(c, first + i));
    }
}

/// One page of a table's snapshot: its rows in key order after a key, at most `limit`.
#[derive(Debug, Clone)]
pub(crate) struct SnapshotPage {
    /// The table, quoted.
    pub table: String,
    /// The columns to read, in order.
    pub columns: Vec<ColumnInfo>,
    /// The key columns, in key order.
    pub keys: Vec<ColumnInfo>,
    /// The last key of the previous page (values of the key columns' kinds), if any.
    pub after: Option<Vec<Value>>,
    pub limit: usize,
}

impl SnapshotPage {
    /// The kinds of the columns read.
    pub(crate) fn kinds(&self) -> Vec<ValueKind> {
        self.columns.iter().map(|c| c.kind).collect()
    }

    /// `SELECT … FROM table [WHERE (keys) > (after)] ORDER BY keys LIMIT n`: each column
    /// selected as `select(column)`, the `i`-th value of the after-key (0-based) written as
    /// `bound(key column, i, value)`.
    pub(crate) fn sql(
        &self,
        d: &(impl Dialect + ?Sized),
        select: impl Fn(&ColumnInfo) -> String,
        bound: impl Fn(&ColumnInfo, usize, &Value) -> String,
    ) -> String {
        let selected: Vec<String> = self.columns.iter().map(select).collect();
        let keys: Vec<String> = self.keys.iter().map(|k| d.quote_ident(&k.name)).collect();
        let mut sql = format!("SELECT {} FROM {}", selected.join(", "), self.table);
        if let Some(after) = &self.after {
            let bounds: Vec<String> = self
                .keys
                .iter()
                .zip(after)
                .enumerate()
                .map(|(i, (k, v))| bound(k, i, v))
                .collect();
            sql += &format!(" WHERE {} > {}", tuple(&keys), tuple(&bounds));
        }
        sql += &format!(" ORDER BY {} LIMIT {}", keys.join(", "), self.limit);
        sql
    }
}

/// Quotes an identifier with `quote`, doubling any quote inside it.
/// The numbers in a type's modifiers: `numeric(38,10)` → `[38, 10]`, `datetime(6)` → `[6]`,
/// `timestamp(3) with time zone` → `[3]`, `double` → `[]`.
pub(crate) fn type_modifiers(db_type: &str) -> Modifiers {
    let mut modifiers = Modifiers::default();
    if let Some((_, rest)) = db_type.split_once('(')
        && let Some((inside, _)) = rest.split_once(')')
    {
        for n in inside.split(',').filter_map(|n| n.trim().parse().ok()) {
            if modifiers.len < modifiers.values.len() {
                modifiers.values[modifiers.len] = n;
                modifiers.len += 1;
            }
        }
    }
    modifiers
}

/// A type's modifiers ([`type_modifiers`]; the first three, which is all any type has), as
/// a slice; asked per value written, so kept off the heap.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Modifiers {
    values: [u32; 3],
    len: usize,
}

impl std::ops::Deref for Modifiers {
    type Target = [u32];

    fn deref(&self) -> &[u32] {
        &self.values[..self.len]
    }
}

/// Why a decimal column with `modifiers` ([`type_modifiers`]: precision, then scale, 0 when
/// not given; none: unconstrained) cannot hold `d` exactly (the engines round extra fraction
/// digits without an error).
pub(crate) fn decimal_misfit(d: &Decimal, modifiers: &[u32]) -> Option<String> {
    let (precision, scale) = match *modifiers {
        [precision, scale, ..] => (precision, scale),
        [precision] => (precision, 0),
        [] => return None,
    };
    if d.scale() > scale as usize {
        return Some(format!(
            "it has {} digits after the point, the column keeps {scale}",
            d.scale()
        ));
    }
    let room = precision.saturating_sub(scale) as usize;
    (d.integer_digits() > room).then(|| {
        format!(
            "it has {} digits before the point, the column holds {room}",
            d.integer_digits()
        )
    })
}

/// Why a time of day with `nanos` cannot be kept with `digits` fractional digits of a
/// second (the engines round them without an error).
pub(crate) fn fraction_misfit(nanos: u32, digits: u32) -> Option<String> {
    let unit = 10u32.pow(9 - digits.min(9));
    (!nanos.is_multiple_of(unit))
        .then(|| format!("its fraction of a second has more digits than the column's {digits}"))
}

pub(crate) fn quote_with(ident: &str, quote: char) -> String {
    let doubled = ident.replace(quote, &format!("{quote}{quote}"));
    format!("{quote}{doubled}{quote}")
}

/// `ON CONFLICT (keys) DO UPDATE SET c = excluded.c …` (or `DO NOTHING` when every column
/// is a key column): the upsert of SQLite and PostgreSQL.
pub(crate) fn on_conflict_clause(keys: &[String], others: &[String]) -> String {
    if others.is_empty() {
        return format!("ON CONFLICT ({}) DO NOTHING", keys.join(", "));
    }
    let sets: Vec<String> = others
        .iter()
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    format!(
        "ON CONFLICT ({}) DO UPDATE SET {}",
        keys.join(", "),
        sets.join(", ")
    )
}

/// The text of SQL where engines differ.
pub(crate) trait Dialect {
    /// Quotes one identifier (double quotes unless the engine says otherwise).
    fn quote_ident(&self, ident: &str) -> String {
        quote_with(ident, '"')
    }

    /// Quotes `schema.table` or `table`.
    fn quote_table(&self, table: &TableName) -> String {
        match &table.schema {
            Some(schema) => format!(
                "{}.{}",
                self.quote_ident(schema),
                self.quote_ident(&table.name)
            ),
            None => self.quote_ident(&table.name),
        }
    }

    /// The placeholder for the `n`-th parameter (1-based).
    fn placeholder(&self, n: usize) -> String;

    /// At most this many parameters in one statement.
    fn max_params(&self) -> usize;

    /// The clause after `INSERT … VALUES …` that makes it an upsert on `keys`, updating
    /// `others` (both already quoted; `others` may be empty).
    fn upsert_clause(&self, keys: &[String], others: &[String]) -> String;

    /// The expression that selects `column` (engines may cast types they cannot read).
    fn select_expr(&self, column: &ColumnInfo) -> String {
        self.quote_ident(&column.name)
    }

    /// The expression that binds parameter `n` for `column`.
    fn param_expr(&self, _column: &ColumnInfo, n: usize) -> String {
        self.placeholder(n)
    }

    /// A query returning the database's current UTC time as one column.
    fn now_sql(&self) -> &'static str;

    /// Why `column` cannot hold `value` (already of the column's kind) exactly, if it cannot:
    /// the database would round, truncate, clamp or replace it without an error. Such a
    /// record is refused as a TransformError before anything is written, on every write
    /// path (statements, `COPY`, `LOAD DATA`).
    fn inexact(&self, _column: &ColumnInfo, _value: &Value) -> Option<String> {
        None
    }

    /// Queries that estimate `table`'s row count as one integer column, tried in order until
    /// one answers (the engine's statistics first; see [`Endpoint::estimate_rows`]).
    fn row_estimates(&self, table: &TableName) -> Vec<Stmt>;

    /// From how many rows on a run of upserts is loaded in bulk ([`Load`]); `None`: never,
    /// always multi-row `INSERT`s.
    fn bulk_load_min_rows(&self) -> Option<usize> {
        None
    }

    /// Whether runs of at least [`DIRECT_LOAD_MIN_ROWS`] upserts are also offered as a
    /// [`Load`] that the engine may write straight into the target while their keys are
    /// new there, running the multi-row upserts of its [`Load::fallback`] otherwise.
    fn loads_new_rows(&self) -> bool {
        false
    }

    /// The staging table, quoted, for loading `columns` into `target` (quoted).
    fn staging_table(&self, target: &str, columns: &[ColumnInfo]) -> String {
        self.quote_ident(&staging_name(target, columns))
    }

    /// The expression that reads `column` from the staging table (engines may cast types
    /// they load as text).
    fn staged_expr(&self, column: &ColumnInfo) -> String {
        self.quote_ident(&column.name)
    }

    /// The changelog table, qualified and quoted.
    fn changelog_table(&self) -> String {
        self.quote_ident(CHANGELOG_TABLE)
    }

    /// The fence table ([`FENCE_TABLE`]), qualified and quoted: beside the changelog.
    fn fence_table(&self) -> String {
        self.quote_ident(FENCE_TABLE)
    }
}

/// Running SQL on one engine.
pub(crate) trait Engine: Dialect + Send + Sync + 'static {
    const NAME: &'static str;

    /// Columns and primary key, or `None` when the table does not exist.
    fn introspect(
        &self,
        table: &TableName,
    ) -> impl Future<Output = Result<Option<TableInfo>, WriteError>> + Send;

    /// Runs a query; the result's values are converted to `kinds` (one per column).
    fn query(
        &self,
        stmt: Stmt,
        kinds: Vec<ValueKind>,
    ) -> impl Future<Output = Result<Vec<Row>, WriteError>> + Send;

    /// Reads one page of a snapshot ([`SnapshotPage`]); values of the columns' kinds. By
    /// default a keyset query with the after-key bound as parameters.
    fn read_page(
        &self,
        page: &SnapshotPage,
    ) -> impl Future<Output = Result<Vec<Row>, WriteError>> + Send {
        let sql = page.sql(
            self,
            |c| self.select_expr(c),
            |c, i, _| self.param_expr(c, i + 1),
        );
        let params = page.after.clone().unwrap_or_default();
        self.query(Stmt::new(sql, params), page.kinds())
    }

    /// Runs the statements in one transaction and returns the rows affected. With
    /// `suppress_echo` the engine's capture triggers ignore these writes.
    fn transaction(
        &self,
        stmts: Vec<Statement<'_>>,
        suppress_echo: bool,
    ) -> impl Future<Output = Result<u64, WriteError>> + Send;

    /// The highest `seq` at or below which every change is final: no transaction still
    /// open can add a change there. Engines whose writers are serialized need no bound.
    fn change_horizon(&self) -> impl Future<Output = Result<i64, WriteError>> + Send {
        async { Ok(i64::MAX) }
    }

    /// After reading a page of `table`'s changes (`seen`, ascending, all `> after_seq`): the
    /// first `seq` in that range held by a transaction that was still open, which the page
    /// must stop before. Engines that bound reads with [`Engine::change_horizon`] need not
    /// check again.
    fn first_unsettled(
        &self,
        _table: &TableName,
        _after_seq: i64,
        _seen: &[i64],
    ) -> impl Future<Output = Result<Option<i64>, WriteError>> + Send {
        async { Ok(None) }
    }

    /// DDL that creates the changelog (if missing) and the table's capture triggers.
    fn capture_install(
        &self,
        table: &TableName,
        info: &TableInfo,
    ) -> Result<Vec<Stmt>, EndpointError>;

    /// DDL that drops the table's capture triggers.
    fn capture_remove(&self, table: &TableName) -> Result<Vec<Stmt>, EndpointError>;

    /// A query returning how many of the table's capture triggers exist, and how many a
    /// complete installation has.
    fn capture_check(&self, table: &TableName) -> Result<(Stmt, i64), EndpointError>;

    /// See [`Endpoint::copy_origin`]; `None` unless the engine copies inside the database.
    fn copy_origin(&self) -> Option<CopyOrigin> {
        None
    }

    /// See [`Endpoint::can_copy`].
    fn can_copy(&self, _copy: &TableCopy) -> bool {
        false
    }

    /// See [`Endpoint::copy_page`]; only called when [`Engine::can_copy`] said yes.
    /// `fence` runs first in each transaction (see [`fence_statements`]).
    fn copy_page(
        &self,
        _copy: TableCopy,
        _after_key: Option<Vec<Value>>,
        _limit: usize,
        _fence: Vec<Stmt>,
    ) -> impl Future<Output = Result<CopiedPage, WriteError>> + Send {
        async {
            Err(EndpointError::Unsupported {
                engine: Self::NAME,
                what: "in-database table copies".into(),
            }
            .into())
        }
    }

    /// See [`Endpoint::export_page`]; only called on the origin of a copy the target's
    /// [`Engine::can_copy`] said yes to.
    fn export_page(
        &self,
        _copy: TableCopy,
        _after_key: Option<Vec<Value>>,
        _limit: usize,
    ) -> impl Future<Output = Result<ExportedPage, WriteError>> + Send {
        async {
            Err(EndpointError::Unsupported {
                engine: Self::NAME,
                what: "exporting pages".into(),
            }
            .into())
        }
    }

    /// See [`Endpoint::import_page`]; only called when [`Engine::can_copy`] said yes.
    /// `fence` runs first in the transaction (see [`fence_statements`]).
    fn import_page(
        &self,
        _copy: TableCopy,
        _page: ExportedPage,
        _fence: Vec<Stmt>,
    ) -> impl Future<Output = Result<u64, WriteError>> + Send {
        async {
            Err(EndpointError::Unsupported {
                engine: Self::NAME,
                what: "importing pages".into(),
            }
            .into())
        }
    }
}

/// An [`Endpoint`] for any [`Engine`].
pub(crate) struct SqlEndpoint<E> {
    engine: E,
    tables: Mutex<HashMap<TableName, Arc<TableInfo>>>,
    /// Whether the fence table is known to exist (created on the first fenced write).
    fence_ready: std::sync::atomic::AtomicBool,
}

/// Columns resolved against the table, in the caller's order.
struct Resolved {
    columns: Vec<ColumnInfo>,
    keys: Vec<ColumnInfo>,
}

impl Resolved {
    fn kinds(cols: &[ColumnInfo]) -> Vec<ValueKind> {
        cols.iter().map(|c| c.kind).collect()
    }
}

impl<E: Engine> SqlEndpoint<E> {
    pub(crate) fn new(engine: E) -> Self {
        SqlEndpoint {
            engine,
            tables: Mutex::new(HashMap::new()),
            fence_ready: std::sync::atomic::AtomicBool::new(false),
        }
    }

    async fn fresh_info(&self, table: &TableName) -> Result<Arc<TableInfo>, EndpointError> {
        let info =
            self.engine
                .introspect(table)
                .await?
                .ok_or_else(|| EndpointError::TableNotFound {
                    table: table.to_string(),
                })?;
        let info = Arc::new(info);
        self.lock_tables().insert(table.clone(), info.clone());
        Ok(info)
    }

    fn lock_tables(&self) -> std::sync::MutexGuard<'_, HashMap<TableName, Arc<TableInfo>>> {
        self.tables
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn info(&self, table: &TableName) -> Result<Arc<TableInfo>, EndpointError> {
        let cached = self.lock_tables().get(table).cloned();
        match cached {
            Some(info) => Ok(info),
            None => self.fresh_info(table).await,
        }
    }

    /// Forgets cached metadata after a Schema-class failure, so the next call looks again.
    fn checked<T>(
        &self,
        table: &TableName,
        result: Result<T, WriteError>,
    ) -> Result<T, EndpointError> {
        result.map_err(|e| {
            if e.class == WriteErrorClass::Schema {
                self.lock_tables().remove(table);
            }
            e.into()
        })
    }

    async fn resolve(
        &self,
        table: &TableName,
        columns: &[String],
        key_columns: &[String],
    ) -> Result<Resolved, EndpointError> {
        let info = self.info(table).await?;
        let find = |name: &String| {
            info.column(name)
                .cloned()
                .ok_or_else(|| EndpointError::ColumnNotFound {
                    table: table.to_string(),
                    column: name.clone(),
                })
        };
        let columns = columns.iter().map(find).collect::<Result<Vec<_>, _>>()?;
        let keys = key_columns
            .iter()
            .map(find)
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err(EndpointError::NoPrimaryKey {
                table: table.to_string(),
            });
        }
        Ok(Resolved { columns, keys })
    }

    fn quoted(&self, cols: &[ColumnInfo]) -> Vec<String> {
        cols.iter()
            .map(|c| self.engine.quote_ident(&c.name))
            .collect()
    }

    fn select_list(&self, cols: &[ColumnInfo]) -> String {
        cols.iter()
            .map(|c| self.engine.select_expr(c))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `(p1, p2)` for `cols` starting at parameter `first`, or `p1` for one column.
    fn param_tuple(&self, cols: &[ColumnInfo], first: usize) -> String {
        let params: Vec<String> = cols
            .iter()
            .enumerate()
            .map(|(i, c)| self.engine.param_expr(c, first + i))
            .collect();
        tuple(&params)
    }

    /// `values` as values of the kinds of `cols`: borrowed when they already are (the
    /// common case: sync converts rows before writing), converted otherwise.
    fn converted<'v>(
        cols: &[ColumnInfo],
        values: &'v [Value],
    ) -> Result<Cow<'v, [Value]>, EndpointError> {
        if values.len() == cols.len() && values.iter().zip(cols).all(|(v, c)| v.is_of(c.kind)) {
            return Ok(Cow::Borrowed(values));
        }
        Self::convert(cols, values).map(Cow::Owned)
    }

    /// Converts `values` to the kinds of `cols`, naming the column on failure.
    fn convert(cols: &[ColumnInfo], values: &[Value]) -> Result<Vec<Value>, EndpointError> {
        if values.len() != cols.len() {
            return Err(EndpointError::RowShape {
                expected: cols.len(),
                got: values.len(),
            });
        }
        cols.iter()
            .zip(values)
            .map(|(c, v)| {
                if v.is_of(c.kind) {
                    return Ok(v.clone());
                }
                v.convert_to(c.kind)
                    .map_err(|source| EndpointError::Convert {
                        column: c.name.clone(),
                        source,
                    })
            })
            .collect()
    }

    /// Refuses a row that the target would not store exactly ([`Dialect::inexact`]), naming
    /// the column.
    fn check_exact(&self, cols: &[ColumnInfo], row: &[Value]) -> Result<(), EndpointError> {
        for (c, v) in cols.iter().zip(row) {
            if let Some(reason) = self.engine.inexact(c, v) {
                return Err(EndpointError::Convert {
                    column: c.name.clone(),
                    source: v.convert_error(c.kind, &reason),
                });
            }
        }
        Ok(())
    }

    /// Rows per statement so that `width` parameters per row stay under the limit.
    fn rows_per_stmt(&self, width: usize) -> usize {
        (self.engine.max_params() / width.max(1)).clamp(1, 1000)
    }

    async fn read_snapshot(
        &self,
        table: &TableName,
        columns: &[String],
        key_columns: &[String],
        after_key: Option<&[Value]>,
        limit: usize,
    ) -> Result<Vec<Row>, EndpointError> {
        let r = self.resolve(table, columns, key_columns).await?;
        let after = after_key.map(|a| Self::convert(&r.keys, a)).transpose()?;
        let page = SnapshotPage {
            table: self.engine.quote_table(table),
            columns: r.columns,
            keys: r.keys,
            after,
            limit,
        };
        let result = self.engine.read_page(&page).await;
        self.checked(table, result)
    }

    async fn fetch_rows(
        &self,
        table: &TableName,
        columns: &[String],
        key_columns: &[String],
        keys: &[Vec<Value>],
    ) -> Result<Vec<Row>, EndpointError> {
        let r = self.resolve(table, columns, key_columns).await?;
        let mut rows = Vec::new();
        for chunk in keys.chunks(self.rows_per_stmt(r.keys.len())) {
            let mut params = Vec::with_capacity(chunk.len() * r.keys.len());
            let mut tuples = Vec::with_capacity(chunk.len());
            for key in chunk {
                tuples.push(self.param_tuple(&r.keys, params.len() + 1));
                params.extend(Self::convert(&r.keys, key)?);
            }
            let sql = format!(
                "SELECT {} FROM {} WHERE {} IN ({})",
                self.select_list(&r.columns),
                self.engine.quote_table(table),
                tuple(&self.quoted(&r.keys)),
                tuples.join(", ")
            );
            let result = self
                .engine
                .query(Stmt::new(sql, params), Resolved::kinds(&r.columns))
                .await;
            rows.extend(self.checked(table, result)?);
        }
        Ok(rows)
    }

    /// The statements for `ops`: runs of upserts become multi-row upserts (a key repeated
    /// within a run keeps its last row), runs of deletes become `DELETE … IN (…)`; order
    /// between runs is kept. Each value is copied once, into the statement's parameters.
    fn write_statements<'o>(
        &self,
        table: &TableName,
        r: &Resolved,
        ops: &'o [WriteOp],
    ) -> Result<Vec<Statement<'o>>, EndpointError> {
        let key_pos = r
            .keys
            .iter()
            .map(|k| {
                r.columns
                    .iter()
                    .position(|c| c.name == k.name)
                    .ok_or_else(|| EndpointError::KeyNotWritten {
                        column: k.name.clone(),
                    })
            })
            .collect::<Result<Vec<usize>, _>>()?;
        let mut stmts = Vec::new();
        let mut upserts: Vec<Cow<'o, [Value]>> = Vec::new();
        let mut upsert_index: HashMap<DedupKey, usize> = HashMap::new();
        let mut deletes: Vec<Vec<Value>> = Vec::new();
        for op in ops {
            match op {
                WriteOp::Upsert(row) => {
                    if !deletes.is_empty() {
                        self.delete_stmts(table, r, std::mem::take(&mut deletes), &mut stmts);
                    }
                    let row = Self::converted(&r.columns, row)?;
                    self.check_exact(&r.columns, &row)?;
                    let key = DedupKey::of(&row, &key_pos);
                    match upsert_index.get(&key) {
                        Some(&i) => upserts[i] = row,
                        None => {
                            upsert_index.insert(key, upserts.len());
                            upserts.push(row);
                        }
                    }
                }
                WriteOp::Delete(key) => {
                    if !upserts.is_empty() {
                        upsert_index.clear();
                        self.upsert_stmts(table, r, std::mem::take(&mut upserts), &mut stmts);
                    }
                    deletes.push(Self::convert(&r.keys, key)?);
                }
            }
        }
        self.upsert_stmts(table, r, upserts, &mut stmts);
        self.delete_stmts(table, r, deletes, &mut stmts);
        Ok(stmts)
    }

    fn upsert_stmts<'o>(
        &self,
        table: &TableName,
        r: &Resolved,
        rows: Vec<Cow<'o, [Value]>>,
        out: &mut Vec<Statement<'o>>,
    ) {
        if rows.is_empty() {
            return;
        }
        let cols = self.quoted(&r.columns);
        let keys = self.quoted(&r.keys);
        let others: Vec<String> = cols.iter().filter(|c| !keys.contains(c)).cloned().collect();
        let clause = self.engine.upsert_clause(&keys, &others);
        let target = self.engine.quote_table(table);
        if self
            .engine
            .bulk_load_min_rows()
            .is_some_and(|min| rows.len() >= min)
        {
            let staging = self.engine.staging_table(&target, &r.columns);
            let exprs: Vec<String> = r
                .columns
                .iter()
                .map(|c| self.engine.staged_expr(c))
                .collect();
            let sql = format!(
                "INSERT INTO {target} ({}) SELECT {} FROM {staging} {clause}",
                cols.join(", "),
                exprs.join(", "),
            );
            let mut row_sql = format!("INSERT INTO {target} ({}) VALUES (", cols.join(", "));
            push_params(&self.engine, &mut row_sql, &r.columns, 1);
            row_sql.push_str(") ");
            row_sql.push_str(&clause);
            let load = Load {
                row_sql,
                target,
                staging,
                columns: r.columns.clone(),
                rows,
                fallback: None,
            };
            out.push(Statement {
                sql,
                params: Vec::new(),
                load: Some(load),
            });
            return;
        }
        let per_stmt = self.rows_per_stmt(cols.len());
        if self.engine.loads_new_rows() && rows.len() >= DIRECT_LOAD_MIN_ROWS {
            out.push(Statement {
                sql: String::new(),
                params: Vec::new(),
                load: Some(Load {
                    row_sql: String::new(),
                    target,
                    staging: String::new(),
                    columns: r.columns.clone(),
                    rows,
                    fallback: Some(Fallback { clause, per_stmt }),
                }),
            });
            return;
        }
        out.extend(multi_row_upserts(
            &self.engine,
            &target,
            &r.columns,
            &clause,
            rows,
            per_stmt,
        ));
    }

    fn delete_stmts(
        &self,
        table: &TableName,
        r: &Resolved,
        keys: Vec<Vec<Value>>,
        out: &mut Vec<Statement<'_>>,
    ) {
        let per_stmt = self.rows_per_stmt(r.keys.len());
        let mut keys = keys.into_iter().peekable();
        while keys.peek().is_some() {
            let chunk: Vec<Vec<Value>> = keys.by_ref().take(per_stmt).collect();
            let tuples: Vec<String> = (0..chunk.len())
                .map(|i| self.param_tuple(&r.keys, i * r.keys.len() + 1))
                .collect();
            let sql = format!(
                "DELETE FROM {} WHERE {} IN ({})",
                self.engine.quote_table(table),
                tuple(&self.quoted(&r.keys)),
                tuples.join(", ")
            );
            out.push(Stmt::new(sql, chunk.into_iter().flatten().collect()));
        }
    }

    async fn write_batch(
        &self,
        table: &TableName,
        columns: &[String],
        key_columns: &[String],
        ops: &[WriteOp],
        fence: Option<&Fence>,
    ) -> Result<(), EndpointError> {
        let r = self.resolve(table, columns, key_columns).await?;
        let stmts = self.write_statements(table, &r, ops)?;
        if stmts.is_empty() {
            return Ok(());
        }
        // The fence goes last: rows are written, then the fence row is raised (or refuses a
        // stale writer) and its lock held to the commit, so two transactions of one writer
        // (an initial sync's pages in flight) load their rows at the same time.
        let mut stmts = stmts;
        if let Some(fence) = fence {
            stmts.extend(self.fence_statements(fence, table).await?);
        }
        let result = self.engine.transaction(stmts, true).await.map(|_| ());
        let result = result.map_err(|e| match fence {
            Some(fence) => fenced(e, fence, E::NAME),
            None => e,
        });
        self.checked(table, result)
    }

    /// Runs `write` (an engine's copy into `table`) with the statements of `fence` for it
    /// (none without one), a refusal by the fence told from any other failure, and a
    /// schema failure forgetting what was known of the table.
    async fn fenced_write<T, Fut>(
        &self,
        table: &TableName,
        fence: Option<&Fence>,
        write: impl FnOnce(Vec<Stmt>) -> Fut,
    ) -> Result<T, WriteError>
    where
        Fut: Future<Output = Result<T, WriteError>>,
    {
        let fence_stmts = match fence {
            Some(fence) => self.fence_statements(fence, table).await?,
            None => Vec::new(),
        };
        let result = write(fence_stmts).await.map_err(|e| match fence {
            Some(fence) => fenced(e, fence, E::NAME),
            None => e,
        });
        self.checked(table, result).map_err(WriteError::from)
    }

    /// The statements that open a transaction fenced by `fence`, the fence table created
    /// first if this endpoint has not seen it yet.
    async fn fence_statements(
        &self,
        fence: &Fence,
        target: &TableName,
    ) -> Result<Vec<Stmt>, EndpointError> {
        use std::sync::atomic::Ordering;
        if !self.fence_ready.load(Ordering::Acquire) {
            let create = || {
                self.engine
                    .transaction(vec![fence_ddl(&self.engine)], false)
            };
            // Two sessions creating it at once may collide (PostgreSQL's catalog); the second
            // try finds it there.
            if create().await.is_err() {
                create().await?;
            }
            self.fence_ready.store(true, Ordering::Release);
        }
        Ok(fence_statements(&self.engine, fence, target))
    }

    async fn install_capture(&self, table: &TableName) -> Result<(), EndpointError> {
        let info = self.fresh_info(table).await?;
        if info.primary_key.is_empty() {
            return Err(EndpointError::NoPrimaryKey {
                table: table.to_string(),
            });
        }
        let ddl = self.engine.capture_install(table, &info)?;
        self.engine.transaction(ddl, false).await?;
        Ok(())
    }

    async fn remove_capture(&self, table: &TableName) -> Result<(), EndpointError> {
        if self.engine.introspect(table).await?.is_none() {
            return Ok(());
        }
        let ddl = self.engine.capture_remove(table)?;
        self.engine.transaction(ddl, false).await?;
        Ok(())
    }

    async fn capture_installed(&self, table: &TableName) -> Result<bool, EndpointError> {
        let (stmt, expected) = self.engine.capture_check(table)?;
        let rows = self.engine.query(stmt, vec![ValueKind::Int]).await?;
        Ok(matches!(rows.first().and_then(|r| r.first()), Some(Value::Int(n)) if *n == expected))
    }

    async fn read_changes(
        &self,
        table: &TableName,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<Change>, EndpointError> {
        let info = self.info(table).await?;
        let key_kinds = info
            .primary_key
            .iter()
            .map(|k| info.column(k).map(|c| c.kind))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| EndpointError::NoPrimaryKey {
                table: table.to_string(),
            })?;
        let e = &self.engine;
        let horizon = e.change_horizon().await?;
        let sql = format!(
            "SELECT seq, op, key_json, changed_at FROM {} WHERE table_name = {} AND seq > {} AND seq <= {} \
             ORDER BY seq LIMIT {}",
            e.changelog_table(),
            e.placeholder(1),
            e.placeholder(2),
            e.placeholder(3),
            limit
        );
        let params = vec![
            Value::Text(table.to_string()),
            Value::Int(after_seq),
            Value::Int(horizon),
        ];
        let kinds = vec![
            ValueKind::Int,
            ValueKind::Text,
            ValueKind::Text,
            ValueKind::TimestampTz,
        ];
        let mut changes = e
            .query(Stmt::new(sql, params), kinds)
            .await?
            .into_iter()
            .map(|row| change_from_row(row, &key_kinds))
            .collect::<Result<Vec<_>, _>>()?;
        if !changes.is_empty() {
            let seen: Vec<i64> = changes.iter().map(|c| c.seq).collect();
            if let Some(unsettled) = e.first_unsettled(table, after_seq, &seen).await? {
                changes.retain(|c| c.seq < unsettled);
            }
        }
        Ok(changes)
    }

    /// The newest `seq` of `table` that is final. Where the engine checks after reading
    /// ([`Engine::first_unsettled`]), open transactions are looked for among the table's
    /// newest [`RECENT_CHANGES`] changes.
    async fn max_change_seq(&self, table: &TableName) -> Result<i64, EndpointError> {
        let e = &self.engine;
        let horizon = e.change_horizon().await?;
        let sql = format!(
            "SELECT seq FROM {} WHERE table_name = {} AND seq <= {} ORDER BY seq DESC LIMIT {RECENT_CHANGES}",
            e.changelog_table(),
            e.placeholder(1),
            e.placeholder(2)
        );
        let params = vec![Value::Text(table.to_string()), Value::Int(horizon)];
        let mut recent: Vec<i64> = e
            .query(Stmt::new(sql, params), vec![ValueKind::Int])
            .await?
            .iter()
            .filter_map(|r| match r.first() {
                Some(Value::Int(n)) => Some(*n),
                _ => None,
            })
            .collect();
        recent.reverse();
        let (Some(&oldest), Some(&newest)) = (recent.first(), recent.last()) else {
            return Ok(0);
        };
        // With fewer than RECENT_CHANGES the whole history is in view.
        let after = if recent.len() < RECENT_CHANGES {
            0
        } else {
            oldest - 1
        };
        Ok(match e.first_unsettled(table, after, &recent).await? {
            Some(unsettled) => unsettled - 1,
            None => newest,
        })
    }

    async fn queue_depth(
        &self,
        table: &TableName,
        after_seq: i64,
    ) -> Result<QueueDepth, EndpointError> {
        let e = &self.engine;
        let sql = format!(
            "SELECT COUNT(*), MIN(changed_at) FROM {} WHERE table_name = {} AND seq > {}",
            e.changelog_table(),
            e.placeholder(1),
            e.placeholder(2)
        );
        let params = vec![Value::Text(table.to_string()), Value::Int(after_seq)];
        let rows = e
            .query(
                Stmt::new(sql, params),
                vec![ValueKind::Int, ValueKind::TimestampTz],
            )
            .await?;
        let row = rows.first().map(Vec::as_slice).unwrap_or_default();
        Ok(QueueDepth {
            pending: match row.first() {
                Some(Value::Int(n)) => u64::try_from(*n).unwrap_or(0),
                _ => 0,
            },
            oldest_at: match row.get(1) {
                Some(Value::TimestampTz(t)) => Some(*t),
                _ => None,
            },
        })
    }

    async fn changelog_trim(
        &self,
        table: &TableName,
        up_to_seq: i64,
    ) -> Result<u64, EndpointError> {
        let e = &self.engine;
        let sql = format!(
            "DELETE FROM {} WHERE table_name = {} AND seq <= {}",
            e.changelog_table(),
            e.placeholder(1),
            e.placeholder(2)
        );
        let params = vec![Value::Text(table.to_string()), Value::Int(up_to_seq)];
        Ok(e.transaction(vec![Stmt::new(sql, params)], false).await?)
    }

    async fn now(&self) -> Result<DateTime<Utc>, EndpointError> {
        let rows = self
            .engine
            .query(
                Stmt::new(self.engine.now_sql(), vec![]),
                vec![ValueKind::TimestampTz],
            )
            .await?;
        match rows.first().and_then(|r| r.first()) {
            Some(Value::TimestampTz(t)) => Ok(*t),
            _ => Err(WriteError::new(
                WriteErrorClass::Schema,
                None,
                "the database returned no time",
            )
            .into()),
        }
    }
}

/// The text in column `i` of a catalog row (empty when NULL or not text).
pub(crate) fn text_at(row: &[Value], i: usize) -> String {
    row.get(i)
        .and_then(Value::as_text)
        .unwrap_or_default()
        .to_string()
}

/// The first column of each catalog row, as text.
pub(crate) fn first_texts(rows: &[Row]) -> Vec<String> {
    rows.iter().map(|r| text_at(r, 0)).collect()
}

/// A key within one batch, to find a repeated one: a single integer key as is (the common
/// case, no allocation), any other key as its canonical text.
#[derive(PartialEq, Eq, Hash)]
enum DedupKey {
    Int(i64),
    Text(String),
}

impl DedupKey {
    fn of(row: &[Value], key_pos: &[usize]) -> DedupKey {
        if let [i] = key_pos
            && let Value::Int(n) = row[*i]
        {
            return DedupKey::Int(n);
        }
        let key: Vec<Value> = key_pos.iter().map(|&i| row[i].clone()).collect();
        DedupKey::Text(key_string(&key))
    }
}

/// `(a, b)` for several items, `a` for one.
pub(crate) fn tuple(items: &[String]) -> String {
    match items {
        [one] => one.clone(),
        many => format!("({})", many.join(", ")),
    }
}

impl<E: Engine> Endpoint for SqlEndpoint<E> {
    fn engine_name(&self) -> &'static str {
        E::NAME
    }

    fn introspect<'a>(
        &'a self,
        table: &'a TableName,
    ) -> BoxFuture<'a, Result<TableInfo, EndpointError>> {
        Box::pin(async move { Ok((*self.fresh_info(table).await?).clone()) })
    }

    fn install_capture<'a>(
        &'a self,
        table: &'a TableName,
    ) -> BoxFuture<'a, Result<(), EndpointError>> {
        Box::pin(self.install_capture(table))
    }

    fn remove_capture<'a>(
        &'a self,
        table: &'a TableName,
    ) -> BoxFuture<'a, Result<(), EndpointError>> {
        Box::pin(self.remove_capture(table))
    }

    fn capture_installed<'a>(
        &'a self,
        table: &'a TableName,
    ) -> BoxFuture<'a, Result<bool, EndpointError>> {
        Box::pin(self.capture_installed(table))
    }

    fn read_snapshot<'a>(
        &'a self,
        table: &'a TableName,
        columns: &'a [String],
        key_columns: &'a [String],
        after_key: Option<&'a [Value]>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Row>, EndpointError>> {
        Box::pin(self.read_snapshot(table, columns, key_columns, after_key, limit))
    }

    fn read_changes<'a>(
        &'a self,
        table: &'a TableName,
        after_seq: i64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Change>, EndpointError>> {
        Box::pin(self.read_changes(table, after_seq, limit))
    }

    fn max_change_seq<'a>(
        &'a self,
        table: &'a TableName,
    ) -> BoxFuture<'a, Result<i64, EndpointError>> {
        Box::pin(self.max_change_seq(table))
    }

    fn queue_depth<'a>(
        &'a self,
        table: &'a TableName,
        after_seq: i64,
    ) -> BoxFuture<'a, Result<QueueDepth, EndpointError>> {
        Box::pin(self.queue_depth(table, after_seq))
    }

    fn changelog_trim<'a>(
        &'a self,
        table: &'a TableName,
        up_to_seq: i64,
    ) -> BoxFuture<'a, Result<u64, EndpointError>> {
        Box::pin(self.changelog_trim(table, up_to_seq))
    }

    fn fetch_rows<'a>(
        &'a self,
        table: &'a TableName,
        columns: &'a [String],
        key_columns: &'a [String],
        keys: &'a [Vec<Value>],
    ) -> BoxFuture<'a, Result<Vec<Row>, EndpointError>> {
        Box::pin(self.fetch_rows(table, columns, key_columns, keys))
    }

    fn write_batch<'a>(
        &'a self,
        table: &'a TableName,
        columns: &'a [String],
        key_columns: &'a [String],
        ops: &'a [WriteOp],
        fence: Option<&'a Fence>,
    ) -> BoxFuture<'a, Result<(), WriteError>> {
        Box::pin(async move {
            self.write_batch(table, columns, key_columns, ops, fence)
                .await
                .map_err(WriteError::from)
        })
    }

    fn now(&self) -> BoxFuture<'_, Result<DateTime<Utc>, EndpointError>> {
        Box::pin(self.now())
    }

    fn estimate_rows<'a>(&'a self, table: &'a TableName) -> BoxFuture<'a, Option<u64>> {
        Box::pin(async move {
            for stmt in self.engine.row_estimates(table) {
                let rows = self.engine.query(stmt, vec![ValueKind::Int]).await;
                if let Ok(rows) = rows
                    && let Some(Value::Int(n)) = rows.first().and_then(|r| r.first())
                {
                    return u64::try_from(*n).ok();
                }
            }
            None
        })
    }

    fn copy_origin(&self) -> Option<CopyOrigin> {
        self.engine.copy_origin()
    }

    fn can_copy(&self, copy: &TableCopy) -> bool {
        self.engine.can_copy(copy)
    }

    fn copy_page<'a>(
        &'a self,
        copy: &'a TableCopy,
        after_key: Option<&'a [Value]>,
        limit: usize,
        fence: Option<&'a Fence>,
    ) -> BoxFuture<'a, Result<CopiedPage, WriteError>> {
        Box::pin(
            self.fenced_write(&copy.to_table, fence, move |fence_stmts| {
                self.engine.copy_page(
                    copy.clone(),
                    after_key.map(<[Value]>::to_vec),
                    limit,
                    fence_stmts,
                )
            }),
        )
    }

    fn export_page<'a>(
        &'a self,
        copy: &'a TableCopy,
        after_key: Option<&'a [Value]>,
        limit: usize,
    ) -> BoxFuture<'a, Result<ExportedPage, EndpointError>> {
        Box::pin(async move {
            let result = self
                .engine
                .export_page(copy.clone(), after_key.map(<[Value]>::to_vec), limit)
                .await;
            self.checked(&copy.from_table, result)
        })
    }

    fn import_page<'a>(
        &'a self,
        copy: &'a TableCopy,
        page: &'a ExportedPage,
        fence: Option<&'a Fence>,
    ) -> BoxFuture<'a, Result<u64, WriteError>> {
        Box::pin(
            self.fenced_write(&copy.to_table, fence, move |fence_stmts| {
                self.engine
                    .import_page(copy.clone(), page.clone(), fence_stmts)
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_modifiers_and_misfits() {
        assert_eq!(*type_modifiers("numeric(38,10)"), [38, 10]);
        assert_eq!(*type_modifiers("timestamp(3) with time zone"), [3]);
        assert!(type_modifiers("double precision").is_empty());
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        assert_eq!(decimal_misfit(&d("12.50"), &[12, 1]), None);
        assert!(decimal_misfit(&d("1.005"), &[12, 2]).is_some());
        assert!(decimal_misfit(&d("123"), &[4, 2]).is_some());
        assert!(decimal_misfit(&d("1.5"), &[4]).is_some());
        assert_eq!(decimal_misfit(&d("1.5"), &[]), None);
        assert_eq!(fraction_misfit(500_000_000, 1), None);
        assert!(fraction_misfit(500_000_000, 0).is_some());
        assert!(fraction_misfit(1_500, 6).is_some());
    }
}
