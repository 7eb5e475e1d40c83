//! The PostgreSQL state store, for a reconciler without a durable local disk. Same tables
//! and meanings as the SQLite store, in a dedicated schema (`dualwrite_state` unless told
//! otherwise) created on the first open for writing. Opening for reading never creates
//! anything and runs its session read-only.
//!
//! The `StateStore` trait is synchronous, and it is called both from plain code (the dry
//! run) and from inside the reconciler's tokio runtime. So the store owns one thread with
//! its own current-thread runtime and connection; a call sends a job over a std channel and
//! blocks on a std channel for the reply. The caller's thread never starts, enters or blocks
//! on a runtime, so neither kind of caller can panic with "Cannot start a runtime from
//! within a runtime". Jobs run one at a time, in order, on the one connection.
//!
//! Counts of errored records per (map, state, type, phase, direction, scope) are kept by
//! statement triggers on `errors`, whoever writes: each statement appends its changes to
//! `error_counts` (rows are only ever added there, so writers never wait on each other for
//! a counter), reads sum them per group, and `tidy` folds them once a pass. A store
//! created before them gets them, filled from its records, on its next open for writing.
//!
//! The connection URL is a secret: it lives only on the store's thread, and every driver
//! message is redacted before it leaves (the URL and its password become `***`).

use std::collections::HashMap;
use std::fmt;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::Runtime;
use tokio_postgres::{Client, NoTls, Row, Statement};

use super::{
    ActivityEntry, AppliedRecord, Condition, ErrorEvent, ErrorKey, ErrorPhase, ErrorQuery,
    ErrorRecord, ErrorScope, ErrorState, ErrorType, MapRecord, MapRuntime, Order, Phase,
    RequestState, RequestStatus, StateError, StateStore,
};

/// Stored names are written as text columns; they are read back as text and parsed with
/// `stored` (an unknown one is [`StateError::Unknown`]).
macro_rules! sql_as_name {
    ($($ty:ident),+) => {$(
        impl tokio_postgres::types::ToSql for $ty {
            fn to_sql(
                &self,
                ty: &tokio_postgres::types::Type,
                out: &mut bytes::BytesMut,
            ) -> Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>>
            {
                self.name().to_sql(ty, out)
            }

            fn accepts(ty: &tokio_postgres::types::Type) -> bool {
                <&str as tokio_postgres::types::ToSql>::accepts(ty)
            }

            tokio_postgres::types::to_sql_checked!();
        }
    )+};
}

sql_as_name!(ErrorPhase, ErrorType, ErrorState, RequestState);
use crate::endpoint::{redact, url_secrets};

/// The schema the store lives in when opened from the project config.
pub const DEFAULT_SCHEMA: &str = "dualwrite_state";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// `{s}` stands for the quoted schema. Created in one transaction, under an advisory lock,
/// so two reconcilers starting together cannot race on `CREATE SCHEMA`.
const DDL: &str = "
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.maps (
    name TEXT PRIMARY KEY,
    phase TEXT NOT NULL,
    applied JSONB,
    applied_revision TEXT,
    held_by TEXT
);
CREATE TABLE IF NOT EXISTS {s}.runtime (
    name TEXT PRIMARY KEY,
    data JSONB NOT NULL
);
CREATE TABLE IF NOT EXISTS {s}.errors (
    id BIGSERIAL PRIMARY KEY,
    map TEXT NOT NULL,
    phase TEXT NOT NULL,
    direction TEXT NOT NULL,
    type TEXT NOT NULL,
    key TEXT NOT NULL,
    row TEXT,
    message TEXT NOT NULL,
    code TEXT,
    first_at TEXT NOT NULL,
    last_at TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    state TEXT NOT NULL
);
DROP INDEX IF EXISTS {s}.errors_by_map;
CREATE INDEX IF NOT EXISTS errors_by_key ON {s}.errors (map, direction, key, state);
ALTER TABLE {s}.errors ADD COLUMN IF NOT EXISTS scope TEXT NOT NULL DEFAULT 'Record';
DROP INDEX IF EXISTS {s}.errors_open_key;
CREATE UNIQUE INDEX IF NOT EXISTS errors_open_record_key ON {s}.errors (map, direction, key)
    WHERE state = 'Open' AND scope = 'Record';
CREATE INDEX IF NOT EXISTS errors_by_time ON {s}.errors (last_at);
CREATE INDEX IF NOT EXISTS errors_by_filter
    ON {s}.errors (map, state, type, phase, direction, last_at);
CREATE INDEX IF NOT EXISTS errors_by_window
    ON {s}.errors (map, state, last_at, direction, type, phase) INCLUDE (id);
CREATE TABLE IF NOT EXISTS {s}.alert_state (
    name TEXT PRIMARY KEY,
    data JSONB NOT NULL
);
CREATE TABLE IF NOT EXISTS {s}.activity (
    id BIGSERIAL PRIMARY KEY,
    map TEXT NOT NULL,
    at TEXT NOT NULL,
    event TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS activity_by_map ON {s}.activity (map, id);
CREATE TABLE IF NOT EXISTS {s}.alerts (
    name TEXT PRIMARY KEY,
    applied JSONB NOT NULL,
    revision TEXT
);
CREATE TABLE IF NOT EXISTS {s}.requests (
    name TEXT PRIMARY KEY,
    applied JSONB NOT NULL,
    revision TEXT,
    state TEXT
);
ALTER TABLE {s}.requests ADD COLUMN IF NOT EXISTS status JSONB;
CREATE TABLE IF NOT EXISTS {s}.members (holder TEXT PRIMARY KEY, expires_at TIMESTAMPTZ NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.leases (
    map TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
ALTER TABLE {s}.leases ADD COLUMN IF NOT EXISTS epoch BIGINT NOT NULL DEFAULT 0;
ALTER TABLE {s}.leases ADD COLUMN IF NOT EXISTS since TIMESTAMPTZ NOT NULL DEFAULT now();
CREATE OR REPLACE FUNCTION {s}.count_error_changes() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO {s}.error_counts (map, state, type, phase, direction, scope, n)
            SELECT map, state, type, phase, direction, scope, COUNT(*) FROM new_rows
            GROUP BY map, state, type, phase, direction, scope;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO {s}.error_counts (map, state, type, phase, direction, scope, n)
            SELECT map, state, type, phase, direction, scope, -COUNT(*) FROM old_rows
            GROUP BY map, state, type, phase, direction, scope;
    ELSE
        INSERT INTO {s}.error_counts (map, state, type, phase, direction, scope, n)
            SELECT map, state, type, phase, direction, scope, SUM(n) FROM (
                SELECT map, state, type, phase, direction, scope, 1 AS n FROM new_rows
                UNION ALL
                SELECT map, state, type, phase, direction, scope, -1 AS n FROM old_rows
            ) AS change
            GROUP BY map, state, type, phase, direction, scope HAVING SUM(n) <> 0;
    END IF;
    RETURN NULL;
END
$f$;
DO $$
BEGIN
    IF to_regclass('{s}.error_counts') IS NULL THEN
        -- No record may change between the count below and the triggers taking over.
        LOCK TABLE {s}.errors IN SHARE ROW EXCLUSIVE MODE;
        CREATE TABLE {s}.error_counts (
            map TEXT NOT NULL,
            state TEXT NOT NULL,
            type TEXT NOT NULL,
            phase TEXT NOT NULL,
            direction TEXT NOT NULL,
            scope TEXT NOT NULL,
            n BIGINT NOT NULL
        );
        CREATE INDEX error_counts_by_map ON {s}.error_counts (map, state);
        INSERT INTO {s}.error_counts (map, state, type, phase, direction, scope, n)
            SELECT map, state, type, phase, direction, scope, COUNT(*) FROM {s}.errors
            GROUP BY map, state, type, phase, direction, scope;
        CREATE TRIGGER errors_counted_insert AFTER INSERT ON {s}.errors
            REFERENCING NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION {s}.count_error_changes();
        CREATE TRIGGER errors_counted_update AFTER UPDATE ON {s}.errors
            REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION {s}.count_error_changes();
        CREATE TRIGGER errors_counted_delete AFTER DELETE ON {s}.errors
            REFERENCING OLD TABLE AS old_rows
            FOR EACH STATEMENT EXECUTE FUNCTION {s}.count_error_changes();
    END IF;
END
$$;
";

/// Folds the changes recorded in `error_counts` into one row per group. Deleting only the
/// rows this statement sees, it never loses a change committed meanwhile.
const FOLD_ERROR_COUNTS: &str = "WITH gone AS (
        DELETE FROM {s}.error_counts RETURNING map, state, type, phase, direction, scope, n)
    INSERT INTO {s}.error_counts (map, state, type, phase, direction, scope, n)
    SELECT map, state, type, phase, direction, scope, SUM(n) FROM gone
    GROUP BY map, state, type, phase, direction, scope HAVING SUM(n) <> 0";

const PUT_MAP: &str = "INSERT INTO {s}.maps (name, phase, applied, applied_revision, held_by)
    VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (name) DO UPDATE SET phase = $2, applied = $3, applied_revision = $4, held_by = $5";
const PUT_RUNTIME: &str = "INSERT INTO {s}.runtime (name, data) VALUES ($1, $2)
    ON CONFLICT (name) DO UPDATE SET data = $2";
const PUT_ALERT: &str = "INSERT INTO {s}.alerts (name, applied, revision) VALUES ($1, $2, $3)
    ON CONFLICT (name) DO UPDATE SET applied = $2, revision = $3";
const ERROR_EVENTS_SINCE: &str = "SELECT map, type, first_at, last_at FROM {s}.errors
    WHERE last_at >= $1 AND ($2::text IS NULL OR map = $2) ORDER BY last_at";
const GET_ALERT_STATE: &str = "SELECT data FROM {s}.alert_state WHERE name = $1";
const PUT_ALERT_STATE: &str = "INSERT INTO {s}.alert_state (name, data) VALUES ($1, $2)
    ON CONFLICT (name) DO UPDATE SET data = $2";
const DELETE_ALERT: &str = "DELETE FROM {s}.alerts WHERE name = $1";
const DELETE_ALERT_STATE: &str = "DELETE FROM {s}.alert_state WHERE name = $1";
const GET_RUNTIME: &str = "SELECT data FROM {s}.runtime WHERE name = $1";
const DELETE_MAP: &str = "DELETE FROM {s}.maps WHERE name = $1";
const DELETE_RUNTIME: &str = "DELETE FROM {s}.runtime WHERE name = $1";
/// One statement, so a concurrent writer cannot slip a duplicate in between (the partial
/// unique index `errors_open_record_key` backs it). A new error starts with last = first
/// attempt.
const RECORD_ERROR: &str = "INSERT INTO {s}.errors AS e
    (map, phase, direction, type, key, row, message, code, first_at, last_at, attempts, state)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, 1, 'Open')
    ON CONFLICT (map, direction, key) WHERE state = 'Open' AND scope = 'Record' DO UPDATE SET
        phase = $2, type = $4, row = $6, message = $7, code = $8, last_at = $10,
        attempts = e.attempts + 1
    RETURNING id";
/// A map-level event: never merged, each failed attempt is one.
const RECORD_MAP_EVENT: &str = "INSERT INTO {s}.errors
    (map, phase, direction, type, key, row, message, code, first_at, last_at, attempts, state, scope)
    VALUES ($1, $2, $3, $4, '', NULL, $5, $6, $7, $7, 1, 'Open', 'Map')
    RETURNING id";
const SUPERSEDE: &str = "UPDATE {s}.errors SET state = 'Superseded'
    WHERE map = $1 AND direction = $2 AND key = ANY($3) AND state = 'Open'";
const HAS_OPEN_ERRORS: &str = "SELECT 1 FROM {s}.errors WHERE map = $1 AND state = 'Open' LIMIT 1";
const OPEN_ERRORS: &str = "SELECT id, map, phase, direction, type, key, row, message, code,
    first_at, last_at, attempts, state, scope
    FROM {s}.errors WHERE map = $1 AND state = 'Open' ORDER BY id DESC LIMIT $2";
const OPEN_ERROR_COUNTS: &str = "SELECT type, phase, SUM(n)::bigint FROM {s}.error_counts
    WHERE map = $1 AND state = 'Open' GROUP BY type, phase HAVING SUM(n) > 0
    ORDER BY type, phase";
/// The same, from the records, in a store not yet given `error_counts`.
const OPEN_ERROR_COUNTS_UNCOUNTED: &str = "SELECT type, phase, COUNT(*) FROM {s}.errors
    WHERE map = $1 AND state = 'Open' GROUP BY type, phase ORDER BY type, phase";
const LOG: &str = "INSERT INTO {s}.activity (map, at, event, message) VALUES ($1, $2, $3, $4)";
const ACTIVITY: &str =
    "SELECT at, event, message FROM {s}.activity WHERE map = $1 ORDER BY id DESC LIMIT $2";
const MAPS: &str =
    "SELECT name, phase, applied, applied_revision, held_by FROM {s}.maps ORDER BY name";
const ALERTS: &str = "SELECT name, applied, revision, NULL::text FROM {s}.alerts ORDER BY name";
const REQUESTS: &str = "SELECT name, applied, revision, state FROM {s}.requests ORDER BY name";
const ERROR_COLUMNS: &str = "id, map, phase, direction, type, key, row, message, code, first_at, last_at, attempts, state, scope";
const RESOLVE_ERRORS: &str =
    "UPDATE {s}.errors SET state = $2 WHERE id = ANY($1) AND state = 'Open'";
const DELETE_ERRORS: &str = "DELETE FROM {s}.errors WHERE id = ANY($1)";
const ACTIVITY_SINCE: &str =
    "SELECT at, event, message FROM {s}.activity WHERE map = $1 AND at >= $2 ORDER BY id";
const GET_REQUEST_STATUS: &str = "SELECT status FROM {s}.requests WHERE name = $1";
const PUT_REQUEST: &str = "INSERT INTO {s}.requests (name, applied, revision, state, status)
    VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (name) DO UPDATE SET applied = $2, revision = $3, state = $4, status = $5";
const DELETE_REQUEST: &str = "DELETE FROM {s}.requests WHERE name = $1";

/// A query parameter of a WHERE clause built at run time.
#[derive(Debug)]
enum Param {
    Text(String),
    Ids(Vec<i64>),
    Int(i64),
}

impl Param {
    fn as_sql(&self) -> &(dyn tokio_postgres::types::ToSql + Sync) {
        match self {
            Param::Text(t) => t,
            Param::Ids(ids) => ids,
            Param::Int(n) => n,
        }
    }
}

/// The WHERE clause of a query (`{s}` for the schema) and its parameters.
fn where_clause(query: &ErrorQuery) -> (String, Vec<Param>) {
    let mut sql = Vec::new();
    let mut params = Vec::new();
    for c in query.conditions() {
        let (text, param) = match c {
            Condition::Equals(col, v) => (format!("{col} = "), Param::Text(v.to_string())),
            Condition::AtLeast(col, v) => (format!("{col} >= "), Param::Text(v.to_string())),
            Condition::Before(col, v) => (format!("{col} < "), Param::Text(v.to_string())),
            Condition::IdIn(ids) => ("id = ANY".to_string(), Param::Ids(ids.to_vec())),
            Condition::IdBelow(id) => ("id < ".to_string(), Param::Int(id)),
        };
        params.push(param);
        sql.push(format!("{text}(${})", params.len()));
    }
    if sql.is_empty() {
        return (String::new(), params);
    }
    (format!(" WHERE {}", sql.join(" AND ")), params)
}

/// The PostgreSQL state store. Holds no secret itself: the URL stays on its thread.
pub struct PostgresStore {
    jobs: Option<mpsc::Sender<Job>>,
    worker: Option<JoinHandle<()>>,
    schema: String,
    label: String,
}

type Job = Box<dyn FnOnce(&mut Conn) + Send>;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Create the schema and tables if missing.
    Create,
    /// Read-only session; no store (`None`) if the schema or its tables are missing.
    Existing,
    /// One more session to a store already opened (as that one is, read-only or not).
    Another,
}

impl PostgresStore {
    /// Connects for writing, creating `schema` and its tables if missing.
    pub fn connect(url: &str, schema: &str) -> Result<Self, StateError> {
        Self::start(url, schema, Mode::Create)?
            .ok_or_else(|| StateError::Other("postgres: the store was not created".into()))
    }

    /// Connects to an existing store without changing anything: `Ok(None)` when the schema
    /// (or its tables) does not exist. The session is read-only.
    pub fn open_existing(url: &str, schema: &str) -> Result<Option<Self>, StateError> {
        Self::start(url, schema, Mode::Existing)
    }

    /// Names the store in `describe()`, e.g. `postgres ($DUALWRITE_STATE_URL)`. Never the URL.
    pub fn labelled(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    /// The schema the store lives in.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    fn start(url: &str, schema: &str, mode: Mode) -> Result<Option<Self>, StateError> {
        check_schema_name(schema)?;
        let target = Target {
            url: url.to_string(),
            secrets: url_secrets(url),
            schema: format!("\"{schema}\""),
            read_only: mode == Mode::Existing,
        };
        Self::spawn(target, schema, mode)
    }

    /// Starts the store's thread, connected to `target`.
    fn spawn(target: Target, schema: &str, mode: Mode) -> Result<Option<Self>, StateError> {
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
        let worker = std::thread::Builder::new()
            .name("dualwrite-state-pg".into())
            .spawn(move || {
                let mut conn = match Conn::open(target, mode) {
                    Ok(Some(conn)) => conn,
                    Ok(None) => {
                        let _ = ready_tx.send(Ok(false));
                        return;
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(true));
                while let Ok(job) = jobs_rx.recv() {
                    job(&mut conn);
                }
            })
            .map_err(|e| StateError::Other(format!("postgres: starting the store thread: {e}")))?;
        let ready = ready_rx.recv().unwrap_or_else(|_| Err(stopped()));
        let mut store = PostgresStore {
            jobs: Some(jobs_tx),
            worker: Some(worker),
            schema: schema.to_string(),
            label: format!("postgres (schema {schema})"),
        };
        match ready {
            Ok(true) => Ok(Some(store)),
            Ok(false) => {
                store.stop();
                Ok(None)
            }
            Err(e) => {
                store.stop();
                Err(e)
            }
        }
    }

    /// Runs `job` on the store's thread and waits for its answer. Plain blocking std
    /// channels: safe from any thread, inside a runtime or not.
    fn call<T, F>(&self, job: F) -> Result<T, StateError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Conn) -> Result<T, StateError> + Send + 'static,
    {
        let (reply_tx, reply_rx) = mpsc::sync_channel(1);
        let jobs = self.jobs.as_ref().ok_or_else(stopped)?;
        jobs.send(Box::new(move |conn: &mut Conn| {
            let _ = reply_tx.send(job(conn));
        }))
        .map_err(|_| stopped())?;
        reply_rx.recv().map_err(|_| stopped())?
    }

    fn stop(&mut self) {
        self.jobs = None;
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }

    fn applied(&self, sql: &'static str) -> Result<Vec<AppliedRecord>, StateError> {
        let rows = self.call(move |c| c.run(async |s| s.query(sql, &[]).await))?;
        rows.iter()
            .map(|r| {
                let name: String = r.get(0);
                let applied = r.get(1);
                Ok(AppliedRecord {
                    applied,
                    revision: r.get(2),
                    state: r
                        .get::<_, Option<&str>>(3)
                        .map(RequestState::stored)
                        .transpose()?,
                    name,
                })
            })
            .collect()
    }
}

impl Drop for PostgresStore {
    /// Closes the connection and waits for the store's thread to end.
    fn drop(&mut self) {
        self.stop();
    }
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("label", &self.label)
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

fn stopped() -> StateError {
    StateError::Other("postgres: the state store's connection thread has stopped".into())
}

/// A plain lowercase identifier: no quoting games, no injection through the schema name.
fn check_schema_name(schema: &str) -> Result<(), StateError> {
    let valid = !schema.is_empty()
        && schema.len() <= 63
        && schema.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(StateError::Other(format!(
            "postgres: invalid schema name {schema:?} (lowercase letters, digits, _)"
        )))
    }
}

/// Where to connect. Lives on the store's thread only.
#[derive(Clone)]
struct Target {
    url: String,
    secrets: Vec<String>,
    /// Quoted, ready to splice into SQL.
    schema: String,
    read_only: bool,
}

/// The store's thread: its runtime and (re)connectable session.
struct Conn {
    rt: Runtime,
    target: Target,
    session: Option<Session>,
    /// Whether the store keeps `error_counts` (one written by an older version and not
    /// yet opened for writing by this one does not: its records are counted instead).
    counted: bool,
}

/// One live connection with its prepared statements.
struct Session {
    client: Client,
    schema: String,
    statements: HashMap<&'static str, Statement>,
}

impl Session {
    async fn prepare(&mut self, sql: &'static str) -> Result<Statement, tokio_postgres::Error> {
        if let Some(stmt) = self.statements.get(sql) {
            return Ok(stmt.clone());
        }
        let stmt = self
            .client
            .prepare(&sql.replace("{s}", &self.schema))
            .await?;
        self.statements.insert(sql, stmt.clone());
        Ok(stmt)
    }

    async fn query(
        &mut self,
        sql: &'static str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        let stmt = self.prepare(sql).await?;
        self.client.query(&stmt, params).await
    }

    /// A statement built at run time (a filtered listing): prepared each time, not cached.
    async fn query_built(
        &mut self,
        sql: &str,
        params: &[Param],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        let sql = sql.replace("{s}", &self.schema);
        let params: Vec<_> = params.iter().map(Param::as_sql).collect();
        self.client.query(&sql, &params).await
    }

    async fn execute(
        &mut self,
        sql: &'static str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64, tokio_postgres::Error> {
        let stmt = self.prepare(sql).await?;
        self.client.execute(&stmt, params).await
    }
}

impl Conn {
    /// Connects and, per mode, creates the store or checks that it exists.
    fn open(target: Target, mode: Mode) -> Result<Option<Conn>, StateError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StateError::Other(format!("postgres: starting a runtime: {e}")))?;
        let mut conn = Conn {
            rt,
            target,
            session: None,
            counted: false,
        };
        match mode {
            Mode::Create => {
                let ddl = DDL.replace("{s}", &conn.target.schema);
                let lock = format!("dualwrite state store {}", conn.target.schema);
                conn.run(async |s| {
                    let tx = s.client.transaction().await?;
                    tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&lock])
                        .await?;
                    tx.batch_execute(&ddl).await?;
                    tx.commit().await
                })?;
            }
            Mode::Another => {}
            Mode::Existing => {
                if !conn.has_table("maps")? {
                    return Ok(None);
                }
            }
        }
        conn.counted = conn.has_table("error_counts")?;
        Ok(Some(conn))
    }

    /// Whether the store's schema has this table.
    fn has_table(&mut self, table: &str) -> Result<bool, StateError> {
        let name = format!("{}.{table}", self.target.schema);
        self.run(async |s| {
            let row = s
                .client
                .query_one("SELECT to_regclass($1) IS NOT NULL", &[&name])
                .await?;
            Ok(row.get::<_, bool>(0))
        })
    }

    /// Runs `f` on a live session, reconnecting first if the connection was lost.
    fn run<T>(
        &mut self,
        f: impl AsyncFnOnce(&mut Session) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, StateError> {
        if self.session.as_ref().is_none_or(|s| s.client.is_closed()) {
            self.session = None;
            self.session = Some(self.connect()?);
        }
        let session = self.session.as_mut().expect("connected above");
        let result = self.rt.block_on(f(session));
        result.map_err(|e| {
            // A statement may have gone stale (schema dropped and recreated): prepare afresh.
            session_statements_clear(&mut self.session);
            self.error(&e)
        })
    }

    fn connect(&self) -> Result<Session, StateError> {
        let target = &self.target;
        let config: tokio_postgres::Config = target
            .url
            .parse()
            .map_err(|e: tokio_postgres::Error| self.error(&e))?;
        let (client, connection) = self
            .rt
            .block_on(async { tokio::time::timeout(CONNECT_TIMEOUT, config.connect(NoTls)).await })
            .map_err(|_| StateError::Other("postgres: timed out connecting".into()))?
            .map_err(|e| self.error(&e))?;
        // A current-thread runtime: the connection makes progress while a call is in
        // `block_on`, which is the only time anything waits on it.
        self.rt.spawn(crate::endpoint::postgres::drive(
            connection,
            target.secrets.clone(),
            "state store connection closed",
        ));
        if target.read_only {
            self.rt
                .block_on(client.batch_execute("SET default_transaction_read_only = on"))
                .map_err(|e| self.error(&e))?;
        }
        Ok(Session {
            client,
            schema: target.schema.clone(),
            statements: HashMap::new(),
        })
    }

    fn error(&self, e: &tokio_postgres::Error) -> StateError {
        let mut message = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(cause) = source {
            message = format!("{message}: {cause}");
            source = cause.source();
        }
        if let Some(db) = e.as_db_error() {
            message = format!("{} ({})", db.message(), db.code().code());
            if let Some(detail) = db.detail() {
                message = format!("{message}: {detail}");
            }
        }
        StateError::Other(format!(
            "postgres: {}",
            redact(&message, &self.target.secrets)
        ))
    }
}

fn session_statements_clear(session: &mut Option<Session>) {
    if let Some(session) = session {
        session.statements.clear();
    }
}

fn corrupt(what: &str, source: serde_json::Error) -> StateError {
    StateError::Corrupt {
        what: what.to_string(),
        source,
    }
}

/// The parameters of `RECORD_ERROR` for a record.
fn record_params(e: &ErrorRecord) -> [&(dyn tokio_postgres::types::ToSql + Sync); 10] {
    [
        &e.map,
        &e.phase,
        &e.direction,
        &e.error_type,
        &e.key,
        &e.row,
        &e.message,
        &e.code,
        &e.first_at,
        &e.last_at,
    ]
}

fn activity_entry(r: &Row) -> ActivityEntry {
    ActivityEntry {
        at: r.get(0),
        event: r.get(1),
        message: r.get(2),
    }
}

fn error_record(r: &Row) -> Result<ErrorRecord, StateError> {
    Ok(ErrorRecord {
        id: r.get(0),
        map: r.get(1),
        phase: ErrorPhase::stored(r.get(2))?,
        direction: r.get(3),
        error_type: ErrorType::stored(r.get(4))?,
        key: r.get(5),
        row: r.get(6),
        message: r.get(7),
        code: r.get(8),
        first_at: r.get(9),
        last_at: r.get(10),
        attempts: r.get(11),
        state: ErrorState::stored(r.get(12))?,
        scope: ErrorScope::parse(r.get(13)),
    })
}

impl StateStore for PostgresStore {
    fn another_session(&self) -> Result<Box<dyn StateStore>, StateError> {
        // The URL stays on the store's threads: the new one gets it from this one's.
        let target = self.call(|conn| Ok(conn.target.clone()))?;
        let store = Self::spawn(target, &self.schema, Mode::Another)?
            .ok_or_else(|| StateError::Other("postgres: no second session".into()))?;
        Ok(Box::new(store.labelled(self.label.clone())))
    }
    fn error_events_since(
        &self,
        since: &str,
        map: Option<&str>,
    ) -> Result<Vec<ErrorEvent>, StateError> {
        let (since, map) = (since.to_string(), map.map(str::to_string));
        let rows = self
            .call(move |c| c.run(async |s| s.query(ERROR_EVENTS_SINCE, &[&since, &map]).await))?;
        rows.iter()
            .map(|r| {
                Ok(ErrorEvent {
                    map: r.get(0),
                    error_type: ErrorType::stored(r.get(1))?,
                    first_at: r.get(2),
                    last_at: r.get(3),
                })
            })
            .collect()
    }

    fn alert_state(&self, rule: &str) -> Result<Option<serde_json::Value>, StateError> {
        let rule = rule.to_string();
        let rows = self.call(move |c| c.run(async |s| s.query(GET_ALERT_STATE, &[&rule]).await))?;
        Ok(rows.first().map(|r| r.get::<_, serde_json::Value>(0)))
    }

    fn save_alert_state(&self, rule: &str, state: &serde_json::Value) -> Result<(), StateError> {
        let (rule, state) = (rule.to_string(), state.clone());
        self.call(move |c| c.run(async |s| s.execute(PUT_ALERT_STATE, &[&rule, &state]).await))?;
        Ok(())
    }

    fn forget_alert(&self, rule: &str) -> Result<(), StateError> {
        let rule = rule.to_string();
        self.call(move |c| {
            c.run(async |s| {
                s.execute(DELETE_ALERT, &[&rule]).await?;
                s.execute(DELETE_ALERT_STATE, &[&rule]).await
            })
        })?;
        Ok(())
    }

    fn describe(&self) -> String {
        format!("state store {}", self.label)
    }

    fn maps(&self) -> Result<Vec<MapRecord>, StateError> {
        let rows = self.call(|c| c.run(async |s| s.query(MAPS, &[]).await))?;
        rows.iter()
            .map(|r| {
                let name: String = r.get(0);
                let phase: String = r.get(1);
                let phase = Phase::parse(&phase).ok_or_else(|| {
                    StateError::Other(format!("map {name}: unknown phase {phase:?}"))
                })?;
                Ok(MapRecord {
                    phase,
                    applied: r.get(2),
                    applied_revision: r.get(3),
                    held_by: r.get(4),
                    name,
                })
            })
            .collect()
    }

    fn alerts(&self) -> Result<Vec<AppliedRecord>, StateError> {
        self.applied(ALERTS)
    }

    fn requests(&self) -> Result<Vec<AppliedRecord>, StateError> {
        self.applied(REQUESTS)
    }

    fn put_map(&self, m: &MapRecord) -> Result<(), StateError> {
        let m = m.clone();
        self.call(move |c| {
            c.run(async |s| {
                s.execute(
                    PUT_MAP,
                    &[
                        &m.name,
                        &m.phase.name(),
                        &m.applied,
                        &m.applied_revision,
                        &m.held_by,
                    ],
                )
                .await
            })
        })?;
        Ok(())
    }

    fn put_alert(&self, a: &AppliedRecord) -> Result<(), StateError> {
        let a = a.clone();
        self.call(move |c| {
            c.run(async |s| {
                s.execute(PUT_ALERT, &[&a.name, &a.applied, &a.revision])
                    .await
            })
        })?;
        Ok(())
    }

    fn runtime(&self, name: &str) -> Result<MapRuntime, StateError> {
        let name = name.to_string();
        let key = name.clone();
        let data = self.call(move |c| {
            c.run(async |s| {
                let rows = s.query(GET_RUNTIME, &[&key]).await?;
                Ok(rows.first().map(|r| r.get::<_, serde_json::Value>(0)))
            })
        })?;
        match data {
            Some(data) => serde_json::from_value(data).map_err(|e| corrupt(&name, e)),
            None => Ok(MapRuntime::default()),
        }
    }

    /// The map row and its runtime row in one transaction: the commit point of sync
    /// progress. Either both are stored or neither is.
    fn save(&mut self, map: &MapRecord, runtime: &MapRuntime) -> Result<(), StateError> {
        let m = map.clone();
        let data = serde_json::to_value(runtime).expect("runtime serializes");
        self.call(move |c| {
            c.run(async |s| {
                let put_map = s.prepare(PUT_MAP).await?;
                let put_runtime = s.prepare(PUT_RUNTIME).await?;
                let tx = s.client.transaction().await?;
                tx.execute(
                    &put_map,
                    &[
                        &m.name,
                        &m.phase.name(),
                        &m.applied,
                        &m.applied_revision,
                        &m.held_by,
                    ],
                )
                .await?;
                tx.execute(&put_runtime, &[&m.name, &data]).await?;
                tx.commit().await
            })
        })
    }

    /// Folds `error_counts`, one session at a time (another one folding now is enough):
    /// reads sum a few rows per group instead of one per change since the last pass.
    fn tidy(&self) -> Result<(), StateError> {
        self.call(move |c| {
            if !c.counted {
                return Ok(());
            }
            let lock = format!("dualwrite error counts {}", c.target.schema);
            c.run(async |s| {
                let fold = s.prepare(FOLD_ERROR_COUNTS).await?;
                let tx = s.client.transaction().await?;
                let row = tx
                    .query_one("SELECT pg_try_advisory_xact_lock(hashtext($1))", &[&lock])
                    .await?;
                if row.get::<_, bool>(0) {
                    tx.execute(&fold, &[]).await?;
                }
                tx.commit().await
            })
        })
    }

    fn forget_map(&self, name: &str) -> Result<(), StateError> {
        let name = name.to_string();
        self.call(move |c| {
            c.run(async |s| {
                let maps = s.prepare(DELETE_MAP).await?;
                let runtime = s.prepare(DELETE_RUNTIME).await?;
                let tx = s.client.transaction().await?;
                tx.execute(&maps, &[&name]).await?;
                tx.execute(&runtime, &[&name]).await?;
                tx.commit().await
            })
        })
    }

    fn record_error(&self, e: &ErrorRecord) -> Result<i64, StateError> {
        let e = e.clone();
        if e.scope == ErrorScope::Map {
            return self.call(move |c| {
                c.run(async |s| {
                    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 7] = [
                        &e.map,
                        &e.phase,
                        &e.direction,
                        &e.error_type,
                        &e.message,
                        &e.code,
                        &e.first_at,
                    ];
                    let rows = s.query(RECORD_MAP_EVENT, &params).await?;
                    Ok(rows[0].get::<_, i64>(0))
                })
            });
        }
        self.call(move |c| {
            c.run(async |s| {
                let rows = s.query(RECORD_ERROR, &record_params(&e)).await?;
                Ok(rows[0].get::<_, i64>(0))
            })
        })
    }

    /// One transaction for the batch: one commit instead of one per record.
    fn record_errors(&self, records: &[ErrorRecord]) -> Result<(), StateError> {
        let records = records.to_vec();
        self.call(move |c| {
            c.run(async |s| {
                let stmt = s.prepare(RECORD_ERROR).await?;
                let tx = s.client.transaction().await?;
                for e in &records {
                    tx.query(&stmt, &record_params(e)).await?;
                }
                tx.commit().await
            })
        })
    }

    fn supersede(&self, map: &str, direction: &str, keys: &[String]) -> Result<u64, StateError> {
        if keys.is_empty() {
            return Ok(0);
        }
        let (map, direction, keys) = (map.to_string(), direction.to_string(), keys.to_vec());
        self.call(move |c| c.run(async |s| s.execute(SUPERSEDE, &[&map, &direction, &keys]).await))
    }

    fn has_open_errors(&self, map: &str) -> Result<bool, StateError> {
        let map = map.to_string();
        self.call(move |c| {
            c.run(async |s| Ok(!s.query(HAS_OPEN_ERRORS, &[&map]).await?.is_empty()))
        })
    }

    fn open_errors(&self, map: &str, limit: usize) -> Result<Vec<ErrorRecord>, StateError> {
        let map = map.to_string();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows =
            self.call(move |c| c.run(async |s| s.query(OPEN_ERRORS, &[&map, &limit]).await))?;
        rows.iter().map(error_record).collect()
    }

    fn query_errors(
        &self,
        query: &ErrorQuery,
        order: Order,
        limit: usize,
    ) -> Result<Vec<ErrorRecord>, StateError> {
        let (clause, mut params) = where_clause(query);
        params.push(Param::Int(i64::try_from(limit).unwrap_or(i64::MAX)));
        let direction = match order {
            Order::NewestFirst => "DESC",
            Order::OldestFirst => "ASC",
        };
        let limit = params.len();
        let sql = if query.windowed() {
            // The ids from the window's index (`id + 0`: not the primary key's order, which
            // the planner would walk back through), then only those rows.
            format!(
                "SELECT {ERROR_COLUMNS} FROM {{s}}.errors WHERE id IN
                   (SELECT id FROM {{s}}.errors{clause} ORDER BY id + 0 {direction} LIMIT ${limit})
                 ORDER BY id {direction}"
            )
        } else {
            format!(
                "SELECT {ERROR_COLUMNS} FROM {{s}}.errors{clause} ORDER BY id {direction} LIMIT ${limit}"
            )
        };
        let rows = self.call(move |c| c.run(async |s| s.query_built(&sql, &params).await))?;
        rows.iter().map(error_record).collect()
    }

    fn query_error_keys(
        &self,
        query: &ErrorQuery,
        limit: usize,
    ) -> Result<Vec<ErrorKey>, StateError> {
        let (clause, mut params) = where_clause(query);
        params.push(Param::Int(i64::try_from(limit).unwrap_or(i64::MAX)));
        let sql = format!(
            "SELECT id, phase, direction, key FROM {{s}}.errors{clause} LIMIT ${}",
            params.len()
        );
        let rows = self.call(move |c| c.run(async |s| s.query_built(&sql, &params).await))?;
        let mut keys: Vec<ErrorKey> = rows
            .iter()
            .map(|r| {
                Ok(ErrorKey {
                    id: r.get(0),
                    phase: ErrorPhase::stored(r.get(1))?,
                    direction: r.get(2),
                    key: r.get(3),
                })
            })
            .collect::<Result<_, StateError>>()?;
        keys.sort_unstable_by_key(|k| k.id);
        Ok(keys)
    }

    fn count_errors(&self, query: &ErrorQuery) -> Result<u64, StateError> {
        let (clause, params) = where_clause(query);
        let by_counts = query.by_counted_columns();
        let rows = self.call(move |c| {
            let sql = if by_counts && c.counted {
                format!("SELECT COALESCE(SUM(n), 0)::bigint FROM {{s}}.error_counts{clause}")
            } else {
                format!("SELECT COUNT(*) FROM {{s}}.errors{clause}")
            };
            c.run(async |s| s.query_built(&sql, &params).await)
        })?;
        Ok(rows.first().map_or(0, |r| r.get::<_, i64>(0) as u64))
    }

    fn resolve_errors(&self, ids: &[i64], state: ErrorState) -> Result<u64, StateError> {
        let ids = ids.to_vec();
        self.call(move |c| c.run(async |s| s.execute(RESOLVE_ERRORS, &[&ids, &state]).await))
    }

    fn delete_errors(&self, ids: &[i64]) -> Result<u64, StateError> {
        let ids = ids.to_vec();
        self.call(move |c| c.run(async |s| s.execute(DELETE_ERRORS, &[&ids]).await))
    }

    fn activity_since(
        &self,
        map: &str,
        since: Option<&str>,
    ) -> Result<Vec<ActivityEntry>, StateError> {
        let (map, since) = (map.to_string(), since.unwrap_or("").to_string());
        let rows =
            self.call(move |c| c.run(async |s| s.query(ACTIVITY_SINCE, &[&map, &since]).await))?;
        Ok(rows.iter().map(activity_entry).collect())
    }

    fn request_status(&self, name: &str) -> Result<Option<RequestStatus>, StateError> {
        let key = name.to_string();
        let data = self.call(move |c| {
            c.run(async |s| {
                let rows = s.query(GET_REQUEST_STATUS, &[&key]).await?;
                Ok(rows
                    .first()
                    .and_then(|r| r.get::<_, Option<serde_json::Value>>(0)))
            })
        })?;
        data.map(|d| serde_json::from_value(d).map_err(|e| corrupt(&format!("request {name}"), e)))
            .transpose()
    }

    fn put_request(
        &self,
        name: &str,
        applied: &serde_json::Value,
        status: &RequestStatus,
    ) -> Result<(), StateError> {
        let (name, applied) = (name.to_string(), applied.clone());
        let (revision, state) = (status.observed_revision.clone(), status.state);
        let data = serde_json::to_value(status).expect("status serializes");
        self.call(move |c| {
            c.run(async |s| {
                s.execute(PUT_REQUEST, &[&name, &applied, &revision, &state, &data])
                    .await
            })
        })?;
        Ok(())
    }

    fn forget_request(&self, name: &str) -> Result<(), StateError> {
        let name = name.to_string();
        self.call(move |c| c.run(async |s| s.execute(DELETE_REQUEST, &[&name]).await))?;
        Ok(())
    }

    fn open_error_counts(
        &self,
        map: &str,
    ) -> Result<Vec<(ErrorType, ErrorPhase, u64)>, StateError> {
        let map = map.to_string();
        let rows = self.call(move |c| {
            let sql = if c.counted {
                OPEN_ERROR_COUNTS
            } else {
                OPEN_ERROR_COUNTS_UNCOUNTED
            };
            c.run(async |s| s.query(sql, &[&map]).await)
        })?;
        rows.iter()
            .map(|r| {
                Ok((
                    ErrorType::stored(r.get(0))?,
                    ErrorPhase::stored(r.get(1))?,
                    r.get::<_, i64>(2) as u64,
                ))
            })
            .collect()
    }

    fn log(&self, map: &str, at: &str, event: &str, message: &str) -> Result<(), StateError> {
        let entry = [map, at, event, message].map(str::to_string);
        self.call(move |c| {
            c.run(async |s| {
                let [map, at, event, message] = &entry;
                s.execute(LOG, &[map, at, event, message]).await
            })
        })?;
        Ok(())
    }

    fn activity(&self, map: &str, limit: usize) -> Result<Vec<ActivityEntry>, StateError> {
        let map = map.to_string();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.call(move |c| c.run(async |s| s.query(ACTIVITY, &[&map, &limit]).await))?;
        Ok(rows.iter().map(activity_entry).collect())
    }

    fn heartbeat(&self, holder: &str, ttl: Duration) -> Result<u32, StateError> {
        let (holder, secs) = (holder.to_string(), ttl.as_secs_f64());
        self.call(move |c| {
            c.run(async |s| {
                s.execute(HEARTBEAT, &[&holder, &secs]).await?;
                let rows = s.query(LIVE_MEMBERS, &[]).await?;
                Ok(rows[0].get::<_, i64>(0).max(1) as u32)
            })
        })
    }

    fn acquire_lease(
        &self,
        map: &str,
        holder: &str,
        ttl: Duration,
        take_from: Option<&str>,
    ) -> Result<super::LeaseGrant, StateError> {
        let (map, holder, secs) = (map.to_string(), holder.to_string(), ttl.as_secs_f64());
        let take_from = take_from.map(str::to_string);
        self.call(move |c| {
            c.run(async |s| {
                let rows = s
                    .query(ACQUIRE_LEASE, &[&map, &holder, &secs, &take_from])
                    .await?;
                if let Some(row) = rows.first() {
                    return Ok(super::LeaseGrant::Granted { epoch: row.get(0) });
                }
                let rows = s.query(LEASE_OF, &[&map]).await?;
                Ok(super::LeaseGrant::Taken(lease_of(&rows[0])))
            })
        })
    }

    fn release_leases(&self, holder: &str, map: Option<&str>) -> Result<(), StateError> {
        let (holder, map) = (holder.to_string(), map.map(str::to_string));
        self.call(move |c| {
            c.run(async |s| {
                match &map {
                    Some(map) => s.execute(RELEASE_LEASE, &[&map, &holder]).await?,
                    None => {
                        s.execute(RELEASE_ALL_LEASES, &[&holder]).await?;
                        s.execute(LEAVE, &[&holder]).await?
                    }
                };
                Ok(())
            })
        })
    }

    fn leases(&self) -> Result<Vec<super::Lease>, StateError> {
        let rows = self.call(|c| c.run(async |s| s.query(LEASES, &[]).await))?;
        Ok(rows.iter().map(lease_of).collect())
    }
}

fn lease_of(row: &tokio_postgres::Row) -> super::Lease {
    super::Lease {
        map: row.get(0),
        holder: row.get(1),
        epoch: row.get(2),
        since: row.get(3),
        expires_at: row.get(4),
    }
}

const HEARTBEAT: &str = "INSERT INTO {s}.members (holder, expires_at)
    VALUES ($1, clock_timestamp() + make_interval(secs => $2))
    ON CONFLICT (holder) DO UPDATE SET expires_at = EXCLUDED.expires_at";
const LIVE_MEMBERS: &str = "SELECT COUNT(*) FROM {s}.members WHERE expires_at > clock_timestamp()";
/// One statement: the row lock of the upsert decides between two holders asking together.
/// A new holder's epoch is the store's clock in microseconds, and always above the last one,
/// so epochs only grow even if the lease table is lost.
const ACQUIRE_LEASE: &str = "INSERT INTO {s}.leases AS l (map, holder, expires_at, epoch, since)
    VALUES ($1, $2, clock_timestamp() + make_interval(secs => $3),
            (extract(epoch FROM clock_timestamp()) * 1000000)::bigint, clock_timestamp())
    ON CONFLICT (map) DO UPDATE SET
        epoch = CASE WHEN l.holder = EXCLUDED.holder THEN l.epoch
                     ELSE GREATEST(l.epoch + 1, EXCLUDED.epoch) END,
        since = CASE WHEN l.holder = EXCLUDED.holder AND l.expires_at > clock_timestamp()
                     THEN l.since ELSE EXCLUDED.since END,
        holder = EXCLUDED.holder,
        expires_at = EXCLUDED.expires_at
    WHERE l.holder = EXCLUDED.holder OR l.expires_at <= clock_timestamp()
        OR l.holder = $4::text
    RETURNING epoch";
/// A lease given back expires now; its row (and epoch) stays.
const RELEASE_LEASE: &str =
    "UPDATE {s}.leases SET expires_at = clock_timestamp() WHERE map = $1 AND holder = $2";
const RELEASE_ALL_LEASES: &str =
    "UPDATE {s}.leases SET expires_at = clock_timestamp() WHERE holder = $1";
const LEAVE: &str = "DELETE FROM {s}.members WHERE holder = $1";
const LEASES: &str = "SELECT map, holder, epoch,
    to_char(since AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),
    to_char(expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')
    FROM {s}.leases WHERE expires_at > clock_timestamp() ORDER BY map";
const LEASE_OF: &str = "SELECT map, holder, epoch,
    to_char(since AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),
    to_char(expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')
    FROM {s}.leases WHERE map = $1";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(check_schema_name(DEFAULT_SCHEMA).is_ok());
        assert!(check_schema_name("dw_test_1").is_ok());
        for bad in ["", "1abc", "Upper", "a\"b", "a;drop", &"x".repeat(64)] {
            assert!(check_schema_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unreachable_server_error_hides_the_url() {
        let url = "postgres://dualwrite:hunter2secret@127.0.0.1:1/state";
        let err = PostgresStore::connect(url, DEFAULT_SCHEMA).unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(!text.contains("hunter2secret"), "{text}");
        assert!(text.contains("postgres:"), "{text}");
    }
}
