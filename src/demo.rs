//! The embedded demo: two SQLite apps (an ERP and a CRM) under `.dualwrite/`, created and
//! seeded on first run so the repository's own maps have something real to sync. The CRM
//! has CHECK constraints that reject a few seeded rows, so a new user sees errors too.

use std::path::Path;

const ERP: &str = "
CREATE TABLE customers (
    account_no TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    currency TEXT,
    credit_limit NUMERIC
);
CREATE TABLE orders (
    order_id INTEGER PRIMARY KEY,
    account_no TEXT NOT NULL,
    amount NUMERIC NOT NULL,
    status TEXT NOT NULL,
    ordered_at TEXT NOT NULL
);
";

const CRM: &str = "
CREATE TABLE account (
    accountnumber TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    currency_code INTEGER,
    credit_limit NUMERIC CHECK (credit_limit >= 0),
    origin TEXT
);
CREATE TABLE sales_order (
    order_id INTEGER PRIMARY KEY,
    accountnumber TEXT NOT NULL,
    amount NUMERIC NOT NULL CHECK (amount < 100000),
    status TEXT NOT NULL,
    ordered_at TEXT NOT NULL
);
INSERT INTO account (accountnumber, name, currency_code, credit_limit, origin)
VALUES ('C-900', 'Created in the CRM', 2, 500, 'crm');
";

#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    #[error(
        "the state store is not the embedded SQLite one: dualwrite demo --reset only starts a local demo over"
    )]
    NotEmbedded,
    #[error("{path}: {source}")]
    Remove {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Starts the demo over: removes the two demo apps, the embedded state store (with their
/// SQLite side files) and `status/`. Refused when the project keeps its state elsewhere
/// (PostgreSQL): that is not a demo. Returns what was removed.
pub fn reset(dir: &Path, project: &crate::config::Project) -> Result<Vec<String>, ResetError> {
    let store = &project.spec.state_store;
    let Some(sqlite) = store.sqlite.as_ref().filter(|_| store.postgres.is_none()) else {
        return Err(ResetError::NotEmbedded);
    };
    let state = sqlite.path.clone();
    let mut removed = Vec::new();
    for db in [".dualwrite/erp.db", ".dualwrite/crm.db", state.as_str()] {
        for file in [db.to_string(), format!("{db}-wal"), format!("{db}-shm")] {
            match std::fs::remove_file(dir.join(&file)) {
                Ok(()) => removed.push(file),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(ResetError::Remove { path: file, source }),
            }
        }
    }
    let status = dir.join(crate::status::STATUS_DIR);
    if status.exists() {
        std::fs::remove_dir_all(&status).map_err(|source| ResetError::Remove {
            path: format!("{}/", crate::status::STATUS_DIR),
            source,
        })?;
        removed.push(format!("{}/", crate::status::STATUS_DIR));
    }
    Ok(removed)
}

/// Creates and seeds the demo databases if `dualwrite.yaml` points at them and they are
/// missing. Returns the files created.
pub fn seed(dir: &Path) -> Result<Vec<String>, rusqlite::Error> {
    let mut created = Vec::new();
    for (file, schema, rows) in [
        (".dualwrite/erp.db", ERP, true),
        (".dualwrite/crm.db", CRM, false),
    ] {
        let path = dir.join(file);
        if path.exists() {
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        }
        let mut conn = rusqlite::Connection::open(&path)?;
        // The demo apps are ours to set up: WAL lets the apps write while dualwrite reads.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        let tx = conn.transaction()?;
        tx.execute_batch(schema)?;
        if rows {
            let currencies = ["USD", "EUR", "GBP"];
            for i in 1..=200 {
                // Two customers have a negative credit limit: the CRM rejects them.
                let limit = if i % 97 == 0 { -100 } else { 1000 + i * 10 };
                tx.execute(
                    "INSERT INTO customers VALUES (?1, ?2, ?3, ?4)",
                    rusqlite::params![
                        format!("C-{i}"),
                        format!("Customer {i}"),
                        currencies[i as usize % 3],
                        limit
                    ],
                )?;
            }
            for i in 1..=500 {
                // One order is too large for the CRM.
                let amount = if i == 250 { 250_000 } else { 10 * i };
                tx.execute(
                    "INSERT INTO orders VALUES (?1, ?2, ?3, ?4, ?5)",
                    rusqlite::params![
                        i,
                        format!("C-{}", 1 + i % 200),
                        amount,
                        "open",
                        "2026-11-01T10:00:00Z"
                    ],
                )?;
            }
        }
        tx.commit()?;
        created.push(file.to_string());
    }
    Ok(created)
}
