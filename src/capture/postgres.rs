//! PostgreSQL capture DDL: the changelog, one shared trigger function, one trigger per table.
//!
//! Owns the SQL text only; `crate::endpoint` runs it, in one transaction (PostgreSQL DDL is
//! transactional, so replacing a trigger leaves no gap). The trigger is told the table's
//! name and key columns as arguments, so one function serves every table. It does nothing
//! when the writing transaction has set `dualwrite.origin` to `1` (dualwrite's own writes,
//! see `SET_ORIGIN`).
//!
//! Commit order: `seq` comes from a sequence at insert time, so a transaction still open
//! can hold a lower `seq` than one already committed. Before its first change each
//! capturing transaction takes a shared advisory lock keyed by the lowest `seq` it may get
//! (`CHANGE_LOCK_BASE` + last value of the `seq` sequence + 1); [`horizon_queries`] turn the sequence and
//! those locks into the highest `seq` below which every change is final, so a reader never
//! moves its cursor past a change that has yet to commit. Nothing blocks: shared locks do
//! not conflict with each other and readers only look at `pg_locks`.
//!
//! The function is `SECURITY DEFINER` (with a fixed `search_path`): application roles that
//! write captured tables need no rights on the changelog.

use super::{CHANGELOG_TABLE, string_literal};
use crate::endpoint::sql::{Stmt, quote_with};
use crate::endpoint::{TableName, Value};

/// Name of the trigger (trigger names are per table in PostgreSQL) and of the function.
const TRIGGER: &str = "_dualwrite_capture";

/// Advisory lock key held while installing ("dualwrit" in ASCII).
const INSTALL_LOCK: i64 = 0x6475_616c_7772_6974;

/// Advisory lock keys `CHANGE_LOCK_BASE + seq` (seq < 2^48) mark open capturing
/// transactions; the base keeps them apart from other applications' advisory locks.
const CHANGE_LOCK_BASE: i64 = 0x6477 << 48;

/// The channel the trigger notifies (payload: the table name) when a change is captured,
/// so `dualwrite run` wakes at commit instead of polling. PostgreSQL folds identical
/// notifications of one transaction into one.
pub(crate) const CHANGES_CHANNEL: &str = "dualwrite_changes";

/// Marks the current transaction as dualwrite's own: its writes are not captured.
pub(crate) const SET_ORIGIN: &str = "SELECT set_config('dualwrite.origin', '1', true)";

fn q(ident: &str) -> String {
    quote_with(ident, '"')
}

/// The changelog table in the endpoint's home schema (its `current_schema()` at connect).
pub(crate) fn changelog(home: &str) -> String {
    format!("{}.{}", q(home), q(CHANGELOG_TABLE))
}

/// The highest `seq` handed out so far (0 before the first), from the changelog's own
/// `bigserial` sequence.
fn last_seq(changelog: &str) -> String {
    format!(
        "COALESCE(pg_catalog.pg_sequence_last_value(pg_catalog.pg_get_serial_sequence({}, 'seq')::regclass), 0)",
        string_literal(changelog, false)
    )
}

/// Two queries, to run in this order, each in its own statement: the highest `seq`
/// allocated so far, then the lowest `seq` an open capturing transaction may hold (NULL
/// when none). The horizon is the smaller of the first and the second minus one.
pub(crate) fn horizon_queries(home: &str) -> [Stmt; 2] {
    let lock_key = "((l.classid::bigint << 32) | l.objid::bigint)";
    [
        Stmt::new(format!("SELECT {}", last_seq(&changelog(home))), vec![]),
        Stmt::new(
            format!(
                "SELECT MIN({lock_key}) - $1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.objsubid = 1 \
                 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                 AND {lock_key} >= $1 AND {lock_key} < $1 + (1::bigint << 48)"
            ),
            vec![Value::Int(CHANGE_LOCK_BASE)],
        ),
    ]
}

/// Creates the changelog and the function if missing and (re)creates the trigger of
/// `table` (`quoted` is its quoted name).
pub(crate) fn install(
    home: &str,
    table: &TableName,
    quoted: &str,
    key_columns: &[String],
) -> Vec<Stmt> {
    let changelog = changelog(home);
    let last_seq = last_seq(&changelog);
    let function = format!("{}.{}", q(home), q(TRIGGER));
    let mut args = vec![string_literal(&table.to_string(), false)];
    args.extend(key_columns.iter().map(|k| string_literal(k, false)));
    let ddl = [
        // Serializes concurrent installs: CREATE … IF NOT EXISTS and CREATE OR REPLACE
        // FUNCTION are not safe against each other in parallel sessions.
        format!("SELECT pg_advisory_xact_lock({INSTALL_LOCK})"),
        format!(
            "CREATE TABLE IF NOT EXISTS {changelog} (seq bigserial PRIMARY KEY, table_name text NOT NULL, \
             op char(1) NOT NULL, key_json text NOT NULL, changed_at timestamptz NOT NULL DEFAULT clock_timestamp())"
        ),
        format!(
            "CREATE INDEX IF NOT EXISTS {} ON {changelog} (table_name, seq)",
            q(&format!("{CHANGELOG_TABLE}_by_table"))
        ),
        format!(
            r#"CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $dualwrite$
DECLARE
  new_key jsonb;
  old_key jsonb;
BEGIN
  IF current_setting('dualwrite.origin', true) = '1' THEN
    RETURN NULL;
  END IF;
  IF current_setting('dualwrite.capturing', true) IS DISTINCT FROM '1' THEN
    -- Held until this transaction ends: readers will not pass the seq it may get.
    PERFORM pg_advisory_xact_lock_shared({CHANGE_LOCK_BASE}
      + {last_seq} + 1);
    PERFORM set_config('dualwrite.capturing', '1', true);
  END IF;
  -- TG_ARGV[0] is the table name, TG_ARGV[1..] the key columns in key order.
  IF TG_OP <> 'DELETE' THEN
    SELECT jsonb_agg(to_jsonb(NEW) ->> c.name ORDER BY c.n) INTO new_key
      FROM unnest(TG_ARGV[1:TG_NARGS - 1]) WITH ORDINALITY AS c(name, n);
  END IF;
  IF TG_OP <> 'INSERT' THEN
    SELECT jsonb_agg(to_jsonb(OLD) ->> c.name ORDER BY c.n) INTO old_key
      FROM unnest(TG_ARGV[1:TG_NARGS - 1]) WITH ORDINALITY AS c(name, n);
  END IF;
  IF old_key IS NOT NULL AND old_key IS DISTINCT FROM new_key THEN
    INSERT INTO {changelog} (table_name, op, key_json) VALUES (TG_ARGV[0], 'D', old_key::text);
  END IF;
  IF new_key IS NOT NULL THEN
    INSERT INTO {changelog} (table_name, op, key_json) VALUES (TG_ARGV[0], 'U', new_key::text);
  END IF;
  PERFORM pg_notify('{CHANGES_CHANNEL}', TG_ARGV[0]);
  RETURN NULL;
END
$dualwrite$"#
        ),
        format!("DROP TRIGGER IF EXISTS {} ON {quoted}", q(TRIGGER)),
        format!(
            "CREATE TRIGGER {} AFTER INSERT OR UPDATE OR DELETE ON {quoted} FOR EACH ROW EXECUTE PROCEDURE {function}({})",
            q(TRIGGER),
            args.join(", ")
        ),
    ];
    super::ddl(ddl.to_vec())
}

/// Drops the trigger of `table`.
pub(crate) fn remove(quoted: &str) -> Vec<Stmt> {
    vec![Stmt::new(
        format!("DROP TRIGGER IF EXISTS {} ON {quoted}", q(TRIGGER)),
        vec![],
    )]
}

/// Counts the capture triggers of `table` (1 when installed).
pub(crate) fn check(quoted: &str) -> (Stmt, i64) {
    let sql = "SELECT COUNT(*) FROM pg_trigger WHERE tgrelid = to_regclass($1) AND tgname = $2 AND NOT tgisinternal";
    let params = vec![
        Value::Text(quoted.to_string()),
        Value::Text(TRIGGER.to_string()),
    ];
    (Stmt::new(sql, params), 1)
}
