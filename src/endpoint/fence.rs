//! Fencing in SQL (see `crate::lease` and [`Fence`]): the `_dualwrite_fence` table each
//! target database keeps (one row per map and target table: the newest lease epoch that
//! wrote there), the statements every fenced write transaction runs before it commits, and telling a
//! refusal by the fence from any other write error. Engine-neutral through [`Dialect`].

use super::sql::{Dialect, Stmt};
use super::{Fence, TableName, Value, WriteError, WriteErrorClass};

/// The table where dualwrite keeps one fence row per map it writes into this database: the
/// newest lease epoch that wrote here.
pub(crate) const FENCE_TABLE: &str = "_dualwrite_fence";
/// The CHECK constraint that refuses a writer whose epoch is older than the row's; a failure
/// naming it is how a refusal is told from any other.
const FENCE_CHECK: &str = "dualwrite_fence_current";

/// Creates the fence table if it is missing.
pub(crate) fn fence_ddl(d: &impl Dialect) -> Stmt {
    Stmt::new(
        format!(
            "CREATE TABLE IF NOT EXISTS {} ({} VARCHAR(255) NOT NULL, \
             {} VARCHAR(255) NOT NULL, {} BIGINT NOT NULL, \
             {} BOOLEAN NOT NULL DEFAULT FALSE, PRIMARY KEY ({}, {}), \
             CONSTRAINT {FENCE_CHECK} CHECK (NOT {}))",
            d.fence_table(),
            d.quote_ident("map"),
            d.quote_ident("target"),
            d.quote_ident("epoch"),
            d.quote_ident("stale"),
            d.quote_ident("map"),
            d.quote_ident("target"),
            d.quote_ident("stale"),
        ),
        vec![],
    )
}

/// The statements a fenced write transaction into `table` runs before it commits (first or
/// last: the rows written in between are kept only if it commits): make sure the fence row
/// of the map and that table exists, then raise it to `fence.epoch`, or fail its CHECK when
/// it already holds a newer epoch. The row is keyed by the table too, so two projects that
/// each have a map of one name, writing to different tables of one database, never meet.
/// The row lock this takes is held to the commit, so a stale writer that raced a newer one
/// waits for it and is then refused: no row of it is ever committed after the newer writes.
/// Run last, they let two transactions of one writer load their rows at the same time (the
/// second waits only for the first's commit).
pub(crate) fn fence_statements(d: &impl Dialect, fence: &Fence, target: &TableName) -> Vec<Stmt> {
    let (table, map) = (d.fence_table(), d.quote_ident("map"));
    let target_column = d.quote_ident("target");
    let (map_value, target_value) = (
        Value::Text(fence.map.clone()),
        Value::Text(target.to_string()),
    );
    let (epoch, stale) = (d.quote_ident("epoch"), d.quote_ident("stale"));
    let p = |n| d.placeholder(n);
    let ensure = Stmt::new(
        format!(
            "INSERT INTO {table} ({map}, {target_column}, {epoch}) VALUES ({}, {}, {}) {}",
            p(1),
            p(2),
            p(3),
            d.upsert_clause(&[map.clone(), target_column.clone()], &[])
        ),
        vec![map_value.clone(), target_value.clone(), Value::Int(0)],
    );
    let raise = Stmt::new(
        format!(
            "UPDATE {table} SET {stale} = ({epoch} > {}), \
             {epoch} = CASE WHEN {epoch} > {} THEN {epoch} ELSE {} END \
             WHERE {map} = {} AND {target_column} = {}",
            p(1),
            p(2),
            p(3),
            p(4),
            p(5)
        ),
        vec![
            Value::Int(fence.epoch),
            Value::Int(fence.epoch),
            Value::Int(fence.epoch),
            map_value,
            target_value,
        ],
    );
    vec![ensure, raise]
}

/// `error` as a refusal by the fence, when it is one.
pub(crate) fn fenced(error: WriteError, fence: &Fence, engine: &str) -> WriteError {
    if error.class == WriteErrorClass::Fenced || !error.message.contains(FENCE_CHECK) {
        return error;
    }
    WriteError::new(
        WriteErrorClass::Fenced,
        error.code,
        format!(
            "map {}: the {engine} target refused a write of lease epoch {}: another process \
             has driven the map since (a newer lease)",
            fence.map, fence.epoch
        ),
    )
}
