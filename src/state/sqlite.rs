//! The SQLite state store, the embedded default under `.dualwrite/`.
//!
//! It uses the rollback journal, not WAL: a read-only reader of a WAL database creates
//! `-wal`/`-shm` files, and readers such as `reconcile --dry-run` must not write anything.
//!
//! Counts of errored records per group are kept by triggers (`ERROR_COUNTS`); a store
//! created before them gets them, filled from its records, on its next open for writing.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

use super::{
    ActivityEntry, AppliedRecord, Condition, ErrorEvent, ErrorKey, ErrorPhase, ErrorQuery,
    ErrorRecord, ErrorScope, ErrorState, ErrorType, MapRecord, MapRuntime, Order, Phase,
    RequestState, RequestStatus, StateError, StateStore,
};

/// Stored names are columns of text. One this version does not know reads as
/// [`StateError::Unknown`] (carried through rusqlite, unwrapped by `From<rusqlite::Error>`).
macro_rules! sql_as_name {
    ($($ty:ident),+) => {$(
        impl ToSql for $ty {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.name()))
            }
        }

        impl FromSql for $ty {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                $ty::stored(value.as_str()?).map_err(|e| FromSqlError::Other(Box::new(e)))
            }
        }
    )+};
}

sql_as_name!(ErrorPhase, ErrorType, ErrorState, RequestState);

pub struct SqliteStore {
    conn: Connection,
    label: String,
    /// Whether the store keeps `error_counts` (a store written by an older version, read
    /// before this version first writes it, does not: its records are counted instead).
    counted: bool,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS maps (
    name TEXT PRIMARY KEY,
    phase TEXT NOT NULL,
    applied TEXT,
    applied_revision TEXT,
    held_by TEXT
);
CREATE TABLE IF NOT EXISTS runtime (
    name TEXT PRIMARY KEY,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS errors (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
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
    attempts INTEGER NOT NULL,
    state TEXT NOT NULL
);
DROP INDEX IF EXISTS errors_by_map;
DROP INDEX IF EXISTS errors_by_key;
-- Without state: a state change (Retried, Superseded) updates one index less.
CREATE INDEX IF NOT EXISTS errors_of_key ON errors (map, direction, key);
CREATE INDEX IF NOT EXISTS errors_by_time ON errors (last_at);
CREATE INDEX IF NOT EXISTS errors_by_filter ON errors (map, state, type, phase, direction, last_at);
-- Newest first within a map and state (every listing, the overview's latest errors): the
-- index holds its rows in id order, so a page reads its rows and stops, nothing is sorted.
CREATE INDEX IF NOT EXISTS errors_newest_of_map ON errors (map, state);
-- A time window of one map: the window is a range of this index, the other filters are read
-- from it too (a count never reads the table).
CREATE INDEX IF NOT EXISTS errors_by_window ON errors (map, state, last_at, direction, type, phase);
CREATE TABLE IF NOT EXISTS alert_state (
    name TEXT PRIMARY KEY,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS activity (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    map TEXT NOT NULL,
    at TEXT NOT NULL,
    event TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS activity_by_map ON activity (map, id);
CREATE TABLE IF NOT EXISTS alerts (
    name TEXT PRIMARY KEY,
    applied TEXT NOT NULL,
    revision TEXT
);
CREATE TABLE IF NOT EXISTS requests (
    name TEXT PRIMARY KEY,
    applied TEXT NOT NULL,
    revision TEXT,
    state TEXT
);
-- Leases (`crate::lease`): times in seconds since the epoch, this machine's clock.
CREATE TABLE IF NOT EXISTS members (holder TEXT PRIMARY KEY, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS leases (
    map TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at REAL NOT NULL,
    epoch INTEGER NOT NULL,
    since REAL NOT NULL
);
";

/// How many errored records there are per (map, state, type, phase, direction, scope),
/// kept by triggers on `errors` in the writing transaction itself, whoever writes (this
/// version, an older one, a hand-made fix): the overview's open-error counts and a
/// listing's `matched` read these few rows instead of counting the records. One writer at a
/// time (SQLite locks the database), so each group is one row updated in place. Created
/// and filled from the records in one transaction when an existing store lacks it.
const ERROR_COUNTS: &str = "
CREATE TABLE error_counts (
    map TEXT NOT NULL,
    state TEXT NOT NULL,
    type TEXT NOT NULL,
    phase TEXT NOT NULL,
    direction TEXT NOT NULL,
    scope TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (map, state, type, phase, direction, scope)
) WITHOUT ROWID;
INSERT INTO error_counts (map, state, type, phase, direction, scope, n)
    SELECT map, state, type, phase, direction, scope, COUNT(*) FROM errors
    GROUP BY map, state, type, phase, direction, scope;
CREATE TRIGGER errors_counted_insert AFTER INSERT ON errors BEGIN
    INSERT INTO error_counts (map, state, type, phase, direction, scope, n)
        VALUES (NEW.map, NEW.state, NEW.type, NEW.phase, NEW.direction, NEW.scope, 1)
        ON CONFLICT DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER errors_counted_delete AFTER DELETE ON errors BEGIN
    UPDATE error_counts SET n = n - 1
        WHERE map = OLD.map AND state = OLD.state AND type = OLD.type AND phase = OLD.phase
          AND direction = OLD.direction AND scope = OLD.scope;
END;
CREATE TRIGGER errors_counted_update AFTER UPDATE OF map, state, type, phase, direction, scope
    ON errors
    WHEN (OLD.map, OLD.state, OLD.type, OLD.phase, OLD.direction, OLD.scope)
      IS NOT (NEW.map, NEW.state, NEW.type, NEW.phase, NEW.direction, NEW.scope)
BEGIN
    UPDATE error_counts SET n = n - 1
        WHERE map = OLD.map AND state = OLD.state AND type = OLD.type AND phase = OLD.phase
          AND direction = OLD.direction AND scope = OLD.scope;
    INSERT INTO error_counts (map, state, type, phase, direction, scope, n)
        VALUES (NEW.map, NEW.state, NEW.type, NEW.phase, NEW.direction, NEW.scope, 1)
        ON CONFLICT DO UPDATE SET n = n + 1;
END;
";

fn has_table(conn: &Connection, table: &str) -> Result<bool, StateError> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [table],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// Columns added after the first release, as (table, column, type): added when missing.
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    ("requests", "status", "TEXT"),
    ("errors", "scope", "TEXT NOT NULL DEFAULT 'Record'"),
];

impl SqliteStore {
    /// Opens (creating if needed) a store for writing.
    pub fn open(path: &Path, label: &str) -> Result<Self, StateError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| StateError::Other(e.to_string()))?;
        }
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "DELETE")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        // One opener at a time makes or updates the schema, under the write lock: two
        // processes opening a new (or older) store together would otherwise both add what
        // is missing, and one of them fail.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute_batch(SCHEMA)?;
        for (table, column, kind) in ADDED_COLUMNS {
            let present: bool = tx.query_row(
                &format!("SELECT COUNT(*) > 0 FROM pragma_table_info('{table}') WHERE name = ?1"),
                [column],
                |r| r.get(0),
            )?;
            if !present {
                tx.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {kind}"))?;
            }
        }
        if !has_table(&tx, "error_counts")? {
            tx.execute_batch(ERROR_COUNTS)?;
        }
        tx.commit()?;
        Ok(Self {
            conn,
            label: label.to_string(),
            counted: true,
        })
    }

    /// Opens an existing store without changing it.
    pub fn open_read_only(path: &Path, label: &str) -> Result<Self, StateError> {
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let mut store = Self {
            conn,
            label: label.to_string(),
            counted: false,
        };
        store.counted = store.has_table("error_counts")?;
        Ok(store)
    }

    /// Inserts many errored records in one transaction (benchmarks and imports).
    pub fn bulk_insert_errors(
        &mut self,
        records: impl Iterator<Item = ErrorRecord>,
    ) -> Result<(), StateError> {
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare(
                "INSERT INTO errors (map, phase, direction, type, key, row, message, code, first_at, last_at, attempts, state)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?;
            for e in records {
                stmt.execute(params![
                    e.map,
                    e.phase,
                    e.direction,
                    e.error_type,
                    e.key,
                    e.row,
                    e.message,
                    e.code,
                    e.first_at,
                    e.last_at,
                    e.attempts,
                    e.state
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn has_table(&self, table: &str) -> Result<bool, StateError> {
        has_table(&self.conn, table)
    }

    fn applied(&self, table: &str, with_state: bool) -> Result<Vec<AppliedRecord>, StateError> {
        if !self.has_table(table)? {
            return Ok(Vec::new());
        }
        let state = if with_state { "state" } else { "NULL" };
        let mut stmt = self.conn.prepare(&format!(
            "SELECT name, applied, revision, {state} FROM {table} ORDER BY name"
        ))?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get(2)?,
                r.get(3)?,
            ))
        })?;
        rows.map(|row| {
            let (name, applied, revision, state) = row?;
            let applied = parse_json(&name, &applied)?;
            Ok(AppliedRecord {
                name,
                applied,
                revision,
                state,
            })
        })
        .collect()
    }
}

/// The WHERE clause of a query and its parameters.
fn where_clause(query: &ErrorQuery) -> (String, Vec<rusqlite::types::Value>) {
    let mut sql = Vec::new();
    let mut params: Vec<rusqlite::types::Value> = Vec::new();
    for c in query.conditions() {
        match c {
            Condition::Equals(col, v) => {
                params.push(v.to_string().into());
                sql.push(format!("{col} = ?{}", params.len()));
            }
            Condition::AtLeast(col, v) => {
                params.push(v.to_string().into());
                sql.push(format!("{col} >= ?{}", params.len()));
            }
            Condition::Before(col, v) => {
                params.push(v.to_string().into());
                sql.push(format!("{col} < ?{}", params.len()));
            }
            Condition::IdIn(ids) => {
                let list: Vec<String> = ids
                    .iter()
                    .map(|id| {
                        params.push((*id).into());
                        format!("?{}", params.len())
                    })
                    .collect();
                sql.push(format!("id IN ({})", list.join(", ")));
            }
            Condition::IdBelow(id) => {
                params.push(id.into());
                sql.push(format!("id < ?{}", params.len()));
            }
        }
    }
    if sql.is_empty() {
        return (String::new(), params);
    }
    (format!(" WHERE {}", sql.join(" AND ")), params)
}

const ERROR_COLUMNS: &str = "id, map, phase, direction, type, key, row, message, code, first_at, last_at, attempts, state, scope";

fn error_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<ErrorRecord> {
    Ok(ErrorRecord {
        id: r.get(0)?,
        map: r.get(1)?,
        phase: r.get(2)?,
        direction: r.get(3)?,
        error_type: r.get(4)?,
        key: r.get(5)?,
        row: r.get(6)?,
        message: r.get(7)?,
        code: r.get(8)?,
        first_at: r.get(9)?,
        last_at: r.get(10)?,
        attempts: r.get(11)?,
        state: r.get(12)?,
        scope: ErrorScope::parse(&r.get::<_, String>(13)?),
    })
}

fn parse_json(what: &str, text: &str) -> Result<serde_json::Value, StateError> {
    serde_json::from_str(text).map_err(|source| StateError::Corrupt {
        what: what.to_string(),
        source,
    })
}

/// Seconds since the Unix epoch, with fractions: the lease clock of a SQLite store.
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

const LEASE_COLUMNS: &str = "map, holder, epoch, since, expires_at";

fn lease_of(row: &rusqlite::Row<'_>) -> rusqlite::Result<super::Lease> {
    let time = |i: usize| -> rusqlite::Result<String> {
        let secs: f64 = row.get(i)?;
        let millis = (secs * 1000.0) as i64;
        Ok(chrono::DateTime::from_timestamp_millis(millis)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    };
    Ok(super::Lease {
        map: row.get(0)?,
        holder: row.get(1)?,
        epoch: row.get(2)?,
        since: time(3)?,
        expires_at: time(4)?,
    })
}

impl StateStore for SqliteStore {
    fn error_events_since(
        &self,
        since: &str,
        map: Option<&str>,
    ) -> Result<Vec<ErrorEvent>, StateError> {
        let mut stmt = self.conn.prepare(
            "SELECT map, type, first_at, last_at FROM errors WHERE last_at >= ?1 AND (?2 IS NULL OR map = ?2) ORDER BY last_at",
        )?;
        let rows = stmt.query_map(params![since, map], |r| {
            Ok(ErrorEvent {
                map: r.get(0)?,
                error_type: r.get(1)?,
                first_at: r.get(2)?,
                last_at: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn alert_state(&self, rule: &str) -> Result<Option<serde_json::Value>, StateError> {
        let text: Option<String> = self
            .conn
            .query_row(
                "SELECT data FROM alert_state WHERE name = ?1",
                [rule],
                |r| r.get(0),
            )
            .optional()?;
        text.map(|t| parse_json(rule, &t)).transpose()
    }

    fn save_alert_state(&self, rule: &str, state: &serde_json::Value) -> Result<(), StateError> {
        self.conn.execute(
            "INSERT INTO alert_state (name, data) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET data = ?2",
            params![rule, state.to_string()],
        )?;
        Ok(())
    }

    fn forget_alert(&self, rule: &str) -> Result<(), StateError> {
        self.conn
            .execute("DELETE FROM alerts WHERE name = ?1", [rule])?;
        self.conn
            .execute("DELETE FROM alert_state WHERE name = ?1", [rule])?;
        Ok(())
    }

    fn put_map(&self, m: &MapRecord) -> Result<(), StateError> {
        self.conn.execute(
            "INSERT INTO maps (name, phase, applied, applied_revision, held_by) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(name) DO UPDATE SET phase = ?2, applied = ?3, applied_revision = ?4, held_by = ?5",
            params![m.name, m.phase.name(), m.applied.as_ref().map(|v| v.to_string()), m.applied_revision, m.held_by],
        )?;
        Ok(())
    }

    fn put_alert(&self, a: &AppliedRecord) -> Result<(), StateError> {
        self.conn.execute(
            "INSERT INTO alerts (name, applied, revision) VALUES (?1, ?2, ?3)
             ON CONFLICT(name) DO UPDATE SET applied = ?2, revision = ?3",
            params![a.name, a.applied.to_string(), a.revision],
        )?;
        Ok(())
    }

    /// The runtime record of a map (cursors, initial sync, counters); default when new.
    fn runtime(&self, name: &str) -> Result<MapRuntime, StateError> {
        let data: Option<String> = self
            .conn
            .query_row("SELECT data FROM runtime WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?;
        match data {
            Some(text) => serde_json::from_str(&text).map_err(|source| StateError::Corrupt {
                what: name.to_string(),
                source,
            }),
            None => Ok(MapRuntime::default()),
        }
    }

    /// Saves a map's phase and runtime together, atomically.
    fn save(&mut self, map: &MapRecord, runtime: &MapRuntime) -> Result<(), StateError> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO maps (name, phase, applied, applied_revision, held_by) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(name) DO UPDATE SET phase = ?2, applied = ?3, applied_revision = ?4, held_by = ?5",
            params![map.name, map.phase.name(), map.applied.as_ref().map(|v| v.to_string()), map.applied_revision, map.held_by],
        )?;
        tx.execute(
            "INSERT INTO runtime (name, data) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET data = ?2",
            params![map.name, serde_json::to_string(runtime).expect("runtime serializes")],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Forgets a map removed from the config (its errors and log stay until retention).
    fn forget_map(&self, name: &str) -> Result<(), StateError> {
        self.conn
            .execute("DELETE FROM maps WHERE name = ?1", [name])?;
        self.conn
            .execute("DELETE FROM runtime WHERE name = ?1", [name])?;
        Ok(())
    }

    /// Records a failed record. An open error for the same key and direction is updated
    /// (attempts + 1) instead of duplicated. Returns its id.
    fn record_error(&self, e: &ErrorRecord) -> Result<i64, StateError> {
        if e.scope == ErrorScope::Map {
            // Each failed attempt of the map is an event of its own.
            self.conn.execute(
                "INSERT INTO errors (map, phase, direction, type, key, row, message, code, first_at, last_at, attempts, state, scope)
                 VALUES (?1, ?2, ?3, ?4, '', NULL, ?5, ?6, ?7, ?7, 1, 'Open', 'Map')",
                params![e.map, e.phase, e.direction, e.error_type, e.message, e.code, e.first_at],
            )?;
            return Ok(self.conn.last_insert_rowid());
        }
        let existing: Option<i64> = self
            .conn
            .query_row(
                "SELECT id FROM errors WHERE map = ?1 AND direction = ?2 AND key = ?3 AND state = 'Open' AND scope = 'Record'",
                params![e.map, e.direction, e.key],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(id) = existing {
            self.conn.execute(
                "UPDATE errors SET phase = ?2, type = ?3, row = ?4, message = ?5, code = ?6, last_at = ?7, attempts = attempts + 1 WHERE id = ?1",
                params![id, e.phase, e.error_type, e.row, e.message, e.code, e.last_at],
            )?;
            return Ok(id);
        }
        self.conn.execute(
            "INSERT INTO errors (map, phase, direction, type, key, row, message, code, first_at, last_at, attempts, state)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, 1, 'Open')",
            params![e.map, e.phase, e.direction, e.error_type, e.key, e.row, e.message, e.code, e.first_at],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    fn record_errors(&self, records: &[ErrorRecord]) -> Result<(), StateError> {
        // Inside `in_transaction`, the records join that transaction.
        let tx = self
            .conn
            .is_autocommit()
            .then(|| self.conn.unchecked_transaction())
            .transpose()?;
        for e in records {
            self.record_error(e)?;
        }
        if let Some(tx) = tx {
            tx.commit()?;
        }
        Ok(())
    }

    fn in_transaction(
        &self,
        work: &mut dyn FnMut() -> Result<(), StateError>,
    ) -> Result<(), StateError> {
        let tx = self.conn.unchecked_transaction()?;
        work()?;
        tx.commit()?;
        Ok(())
    }

    /// A later successful write of the same key in the same direction resolves open errors.
    fn supersede(&self, map: &str, direction: &str, keys: &[String]) -> Result<u64, StateError> {
        let mut stmt = self.conn.prepare_cached(
            "UPDATE errors SET state = 'Superseded' WHERE map = ?1 AND direction = ?2 AND key = ?3 AND state = 'Open'",
        )?;
        let mut n = 0;
        for key in keys {
            n += stmt.execute(params![map, direction, key])? as u64;
        }
        Ok(n)
    }

    /// Whether the map has any open error (cheap check before superseding).
    fn has_open_errors(&self, map: &str) -> Result<bool, StateError> {
        Ok(self
            .conn
            .query_row(
                "SELECT 1 FROM errors WHERE map = ?1 AND state = 'Open' LIMIT 1",
                [map],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Open errors of a map, newest first.
    fn open_errors(&self, map: &str, limit: usize) -> Result<Vec<ErrorRecord>, StateError> {
        self.query_errors(&ErrorQuery::open(map), Order::NewestFirst, limit)
    }

    fn query_errors(
        &self,
        query: &ErrorQuery,
        order: Order,
        limit: usize,
    ) -> Result<Vec<ErrorRecord>, StateError> {
        let (clause, mut values) = where_clause(query);
        values.push(i64::try_from(limit).unwrap_or(i64::MAX).into());
        let direction = match order {
            Order::NewestFirst => "DESC",
            Order::OldestFirst => "ASC",
        };
        let limit = values.len();
        let sql = if query.windowed() {
            // The ids from the window's index (`+id`: SQLite's way of keeping the rowid
            // order from being used instead), then only those rows.
            format!(
                "SELECT {ERROR_COLUMNS} FROM errors WHERE id IN
                   (SELECT id FROM errors{clause} ORDER BY +id {direction} LIMIT ?{limit})
                 ORDER BY id {direction}"
            )
        } else {
            format!(
                "SELECT {ERROR_COLUMNS} FROM errors{clause} ORDER BY id {direction} LIMIT ?{limit}"
            )
        };
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(values), error_record)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn query_error_keys(
        &self,
        query: &ErrorQuery,
        limit: usize,
    ) -> Result<Vec<ErrorKey>, StateError> {
        let (clause, mut values) = where_clause(query);
        values.push(i64::try_from(limit).unwrap_or(i64::MAX).into());
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT id, phase, direction, key FROM errors{clause} LIMIT ?{}",
            values.len()
        ))?;
        let rows = stmt.query_map(rusqlite::params_from_iter(values), |r| {
            Ok(ErrorKey {
                id: r.get(0)?,
                phase: r.get(1)?,
                direction: r.get(2)?,
                key: r.get(3)?,
            })
        })?;
        // Sorted here: the filter's index does not hold them by id, and sorting a few
        // thousand ids costs far less than SQLite's sort of whole result rows.
        let mut keys = rows.collect::<Result<Vec<_>, _>>()?;
        keys.sort_unstable_by_key(|k| k.id);
        Ok(keys)
    }

    fn count_errors(&self, query: &ErrorQuery) -> Result<u64, StateError> {
        let (clause, values) = where_clause(query);
        let sql = if self.counted && query.by_counted_columns() {
            format!("SELECT COALESCE(SUM(n), 0) FROM error_counts{clause}")
        } else {
            format!("SELECT COUNT(*) FROM errors{clause}")
        };
        let n: i64 = self
            .conn
            .query_row(&sql, rusqlite::params_from_iter(values), |r| r.get(0))?;
        Ok(n as u64)
    }

    /// One statement over the ids (a JSON array): one transaction, one pass.
    fn resolve_errors(&self, ids: &[i64], state: ErrorState) -> Result<u64, StateError> {
        let ids = serde_json::to_string(ids).expect("ids serialize");
        let n = self.conn.execute(
            "UPDATE errors SET state = ?2
             WHERE id IN (SELECT value FROM json_each(?1)) AND state = 'Open'",
            params![ids, state],
        )?;
        Ok(n as u64)
    }

    fn delete_errors(&self, ids: &[i64]) -> Result<u64, StateError> {
        let tx = self.conn.unchecked_transaction()?;
        let mut n = 0;
        {
            let mut stmt = tx.prepare_cached("DELETE FROM errors WHERE id = ?1")?;
            for id in ids {
                n += stmt.execute([id])? as u64;
            }
        }
        tx.commit()?;
        Ok(n)
    }

    fn activity_since(
        &self,
        map: &str,
        since: Option<&str>,
    ) -> Result<Vec<ActivityEntry>, StateError> {
        let mut stmt = self.conn.prepare(
            "SELECT at, event, message FROM activity WHERE map = ?1 AND at >= ?2 ORDER BY id",
        )?;
        let rows = stmt.query_map(params![map, since.unwrap_or("")], |r| {
            Ok(ActivityEntry {
                at: r.get(0)?,
                event: r.get(1)?,
                message: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn request_status(&self, name: &str) -> Result<Option<RequestStatus>, StateError> {
        if !self.has_table("requests")? {
            return Ok(None);
        }
        let text: Option<Option<String>> = self
            .conn
            .query_row("SELECT status FROM requests WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?;
        text.flatten()
            .map(|t| {
                serde_json::from_str(&t).map_err(|source| StateError::Corrupt {
                    what: format!("request {name}"),
                    source,
                })
            })
            .transpose()
    }

    fn put_request(
        &self,
        name: &str,
        applied: &serde_json::Value,
        status: &RequestStatus,
    ) -> Result<(), StateError> {
        self.conn.execute(
            "INSERT INTO requests (name, applied, revision, state, status) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(name) DO UPDATE SET applied = ?2, revision = ?3, state = ?4, status = ?5",
            params![
                name,
                applied.to_string(),
                status.observed_revision,
                status.state,
                serde_json::to_string(status).expect("status serializes")
            ],
        )?;
        Ok(())
    }

    fn forget_request(&self, name: &str) -> Result<(), StateError> {
        self.conn
            .execute("DELETE FROM requests WHERE name = ?1", [name])?;
        Ok(())
    }

    fn heartbeat(&self, holder: &str, ttl: std::time::Duration) -> Result<u32, StateError> {
        let now = unix_now();
        self.conn.execute(
            "INSERT INTO members (holder, expires_at) VALUES (?1, ?2)
             ON CONFLICT (holder) DO UPDATE SET expires_at = excluded.expires_at",
            params![holder, now + ttl.as_secs_f64()],
        )?;
        let live: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM members WHERE expires_at > ?1",
            [now],
            |r| r.get(0),
        )?;
        Ok(live.max(1) as u32)
    }

    fn acquire_lease(
        &self,
        map: &str,
        holder: &str,
        ttl: std::time::Duration,
        take_from: Option<&str>,
    ) -> Result<super::LeaseGrant, StateError> {
        let now = unix_now();
        // One statement, as on PostgreSQL; SQLite runs one writer at a time.
        let granted: Option<i64> = self
            .conn
            .query_row(
                "INSERT INTO leases AS l (map, holder, expires_at, epoch, since)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (map) DO UPDATE SET
                     epoch = CASE WHEN l.holder = excluded.holder THEN l.epoch
                                  ELSE max(l.epoch + 1, excluded.epoch) END,
                     since = CASE WHEN l.holder = excluded.holder AND l.expires_at > ?5
                                  THEN l.since ELSE excluded.since END,
                     holder = excluded.holder,
                     expires_at = excluded.expires_at
                 WHERE l.holder = excluded.holder OR l.expires_at <= ?5 OR l.holder = ?6
                 RETURNING epoch",
                params![
                    map,
                    holder,
                    now + ttl.as_secs_f64(),
                    (now * 1e6) as i64,
                    now,
                    take_from
                ],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(epoch) = granted {
            return Ok(super::LeaseGrant::Granted { epoch });
        }
        let lease = self.conn.query_row(
            &format!("SELECT {LEASE_COLUMNS} FROM leases WHERE map = ?1"),
            [map],
            lease_of,
        )?;
        Ok(super::LeaseGrant::Taken(lease))
    }

    fn release_leases(&self, holder: &str, map: Option<&str>) -> Result<(), StateError> {
        let now = unix_now();
        match map {
            Some(map) => self.conn.execute(
                "UPDATE leases SET expires_at = ?1 WHERE map = ?2 AND holder = ?3",
                params![now, map, holder],
            )?,
            None => {
                self.conn.execute(
                    "UPDATE leases SET expires_at = ?1 WHERE holder = ?2",
                    params![now, holder],
                )?;
                self.conn
                    .execute("DELETE FROM members WHERE holder = ?1", [holder])?
            }
        };
        Ok(())
    }

    fn leases(&self) -> Result<Vec<super::Lease>, StateError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {LEASE_COLUMNS} FROM leases WHERE expires_at > ?1 ORDER BY map"
        ))?;
        let leases = stmt
            .query_map([unix_now()], lease_of)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(leases)
    }

    /// Counts of open errors of a map by (type, phase).
    fn open_error_counts(
        &self,
        map: &str,
    ) -> Result<Vec<(ErrorType, ErrorPhase, u64)>, StateError> {
        let mut stmt = self.conn.prepare_cached(if self.counted {
            "SELECT type, phase, SUM(n) FROM error_counts WHERE map = ?1 AND state = 'Open'
             GROUP BY type, phase HAVING SUM(n) > 0 ORDER BY type, phase"
        } else {
            "SELECT type, phase, COUNT(*) FROM errors WHERE map = ?1 AND state = 'Open'
             GROUP BY type, phase ORDER BY type, phase"
        })?;
        let rows = stmt.query_map([map], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn log(&self, map: &str, at: &str, event: &str, message: &str) -> Result<(), StateError> {
        self.conn.execute(
            "INSERT INTO activity (map, at, event, message) VALUES (?1, ?2, ?3, ?4)",
            params![map, at, event, message],
        )?;
        Ok(())
    }

    /// The newest `limit` activity entries of a map, newest first.
    fn activity(&self, map: &str, limit: usize) -> Result<Vec<ActivityEntry>, StateError> {
        let mut stmt = self.conn.prepare(
            "SELECT at, event, message FROM activity WHERE map = ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![map, limit as i64], |r| {
            Ok(ActivityEntry {
                at: r.get(0)?,
                event: r.get(1)?,
                message: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn describe(&self) -> String {
        format!("state store {}", self.label)
    }

    fn another_session(&self) -> Result<Box<dyn StateStore>, StateError> {
        let path = self.conn.path().filter(|p| !p.is_empty()).ok_or_else(|| {
            StateError::Other("sqlite: an in-memory store has one session".into())
        })?;
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        Ok(Box::new(SqliteStore {
            conn,
            label: self.label.clone(),
            counted: self.counted,
        }))
    }

    fn maps(&self) -> Result<Vec<MapRecord>, StateError> {
        if !self.has_table("maps")? {
            return Ok(Vec::new());
        }
        let mut stmt = self.conn.prepare(
            "SELECT name, phase, applied, applied_revision, held_by FROM maps ORDER BY name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get(3)?,
                r.get(4)?,
            ))
        })?;
        rows.map(|row| {
            let (name, phase, applied, applied_revision, held_by) = row?;
            let phase = Phase::parse(&phase)
                .ok_or_else(|| StateError::Other(format!("map {name}: unknown phase {phase:?}")))?;
            let applied = applied.map(|a| parse_json(&name, &a)).transpose()?;
            Ok(MapRecord {
                name,
                phase,
                applied,
                applied_revision,
                held_by,
            })
        })
        .collect()
    }

    fn alerts(&self) -> Result<Vec<AppliedRecord>, StateError> {
        self.applied("alerts", false)
    }

    fn requests(&self) -> Result<Vec<AppliedRecord>, StateError> {
        self.applied("requests", true)
    }
}
