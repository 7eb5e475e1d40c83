//! The SQLite state store, the embedded default under `.dualwrite/`.
//!
//! It uses the rollback journal, not WAL: a read-only reader of a WAL database creates
//! `-wal`/`-shm` files, and readers such as `reconcile --dry-run` must not write anything.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::{AppliedRecord, MapRecord, Phase, StateError, StateStore};

pub struct SqliteStore {
    conn: Connection,
    label: String,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS maps (
    name TEXT PRIMARY KEY,
    phase TEXT NOT NULL,
    applied TEXT,
    applied_revision TEXT,
    held_by TEXT
);
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
";

impl SqliteStore {
    /// Opens (creating if needed) a store for writing.
    pub fn open(path: &Path, label: &str) -> Result<Self, StateError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| StateError::Other(e.to_string()))?;
        }
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "DELETE")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self {
            conn,
            label: label.to_string(),
        })
    }

    /// Opens an existing store without changing it.
    pub fn open_read_only(path: &Path, label: &str) -> Result<Self, StateError> {
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        Ok(Self {
            conn,
            label: label.to_string(),
        })
    }

    pub fn put_map(&self, m: &MapRecord) -> Result<(), StateError> {
        self.conn.execute(
            "INSERT INTO maps (name, phase, applied, applied_revision, held_by) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(name) DO UPDATE SET phase = ?2, applied = ?3, applied_revision = ?4, held_by = ?5",
            params![m.name, m.phase.name(), m.applied.as_ref().map(|v| v.to_string()), m.applied_revision, m.held_by],
        )?;
        Ok(())
    }

    pub fn put_alert(&self, a: &AppliedRecord) -> Result<(), StateError> {
        self.conn.execute(
            "INSERT INTO alerts (name, applied, revision) VALUES (?1, ?2, ?3)
             ON CONFLICT(name) DO UPDATE SET applied = ?2, revision = ?3",
            params![a.name, a.applied.to_string(), a.revision],
        )?;
        Ok(())
    }

    fn has_table(&self, table: &str) -> Result<bool, StateError> {
        Ok(self
            .conn
            .query_row(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
                [table],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
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

fn parse_json(what: &str, text: &str) -> Result<serde_json::Value, StateError> {
    serde_json::from_str(text).map_err(|source| StateError::Corrupt {
        what: what.to_string(),
        source,
    })
}

impl StateStore for SqliteStore {
    fn describe(&self) -> String {
        format!("state store {}", self.label)
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
