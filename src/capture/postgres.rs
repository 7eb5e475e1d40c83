//! PostgreSQL capture DDL: the changelog, one shared trigger function, one trigger per table.
//!
//! Owns the SQL text only; `crate::endpoint` runs it, in one transaction (PostgreSQL DDL is
//! transactional, so replacing a trigger leaves no gap). The trigger is told the table's
//! name and key columns as arguments, so one function serves every table. It does nothing
//! when the writing transaction has set `dualwrite.origin` to `1` (dualwrite's own writes,
//! see `SET_ORIGIN`).

use super::{CHANGELOG_TABLE, string_literal};
use crate::endpoint::sql::{Stmt, quote_with};
use crate::endpoint::{TableName, Value};

/// Name of the trigger (trigger names are per table in PostgreSQL) and of the function.
const TRIGGER: &str = "_dualwrite_capture";

/// Advisory lock key held while installing ("dualwrit" in ASCII).
const INSTALL_LOCK: i64 = 0x6475_616c_7772_6974;

/// Marks the current transaction as dualwrite's own: its writes are not captured.
pub(crate) const SET_ORIGIN: &str = "SELECT set_config('dualwrite.origin', '1', true)";

fn q(ident: &str) -> String {
    quote_with(ident, '"')
}

/// The changelog table in the endpoint's home schema (its `current_schema()` at connect).
pub(crate) fn changelog(home: &str) -> String {
    format!("{}.{}", q(home), q(CHANGELOG_TABLE))
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
            r#"CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $dualwrite$
DECLARE
  new_key jsonb;
  old_key jsonb;
BEGIN
  IF current_setting('dualwrite.origin', true) = '1' THEN
    RETURN NULL;
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
