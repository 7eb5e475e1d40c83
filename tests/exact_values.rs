//! Values are copied exactly or not at all (SPEC §2): between every pair of engines, a value
//! arrives equal, or its record alone is refused with a TransformError naming the column;
//! never changed silently. One named test per silent change that was found, then a property
//! test over rows of every type family with their edge values, initial sync and live.
//! Drives the `dualwrite` binary as a user would; reads both sides back through dualwrite's
//! endpoints (exact by construction: decimals as text, JSON numbers with their digits).

mod common;
mod support;

use std::collections::{BTreeMap, BTreeSet};

use common::{TestDb, unique_table, with_timeout};
use dualwrite::endpoint::{self, EndpointSpec, TableName, Value};
use support::{Repo, run_in};

/// An errored record as the state store keeps it.
#[derive(Debug, Clone)]
struct Recorded {
    error_type: String,
    message: String,
}

/// One map between a source and a destination table of the same columns (`id` the key),
/// each column with its own type on each side.
struct Case {
    repo: Repo,
    src: TestDb,
    dst: TestDb,
    src_table: String,
    dst_table: String,
    columns: Vec<String>,
}

impl Case {
    /// `columns`: name, source type, destination type.
    async fn new(mut src: TestDb, mut dst: TestDb, columns: &[(&str, &str, &str)]) -> Case {
        let src_table = unique_table("xsrc");
        let dst_table = unique_table("xdst");
        for (db, table, side) in [(&mut src, &src_table, 0), (&mut dst, &dst_table, 1)] {
            let cols: Vec<String> = columns
                .iter()
                .map(|(name, s, d)| format!("{name} {}", if side == 0 { s } else { d }))
                .collect();
            let charset = if db.engine == "mysql" {
                " DEFAULT CHARSET utf8mb4 COLLATE utf8mb4_bin"
            } else {
                ""
            };
            db.plain
                .exec(&format!(
                    "CREATE TABLE {table} (id BIGINT PRIMARY KEY, {}){charset}",
                    cols.join(", ")
                ))
                .await;
            if db.engine != "sqlite" {
                db.on_drop(format!("DROP TABLE IF EXISTS {table}"));
            }
            if db.engine == "mysql" {
                // Lets the test write zero dates as an application with a lax mode could.
                db.plain
                    .exec("SET SESSION sql_mode = ''; SET SESSION time_zone = '+00:00'")
                    .await;
            }
        }
        let repo = Repo::new(&[]);
        repo.write(
            "dualwrite.yaml",
            &format!(
                "apiVersion: dualwrite/v1\nkind: Project\nmetadata: {{ name: x }}\nspec:\n  endpoints:\n{}{}",
                src.endpoint_yaml("src"),
                dst.endpoint_yaml("dst")
            ),
        );
        let mapped: String = columns
            .iter()
            .map(|(name, _, _)| format!("    - {{ source: {name}, destination: {name} }}\n"))
            .collect();
        repo.write(
            "maps/m.yaml",
            &format!(
                "apiVersion: dualwrite/v1\nkind: TableMap\nmetadata: {{ name: m }}\nspec:\n  state: Running\n  source: {{ endpoint: src, table: {src_table} }}\n  destination: {{ endpoint: dst, table: {dst_table} }}\n  direction: SourceToDestination\n  batchSize: 40\n  columns:\n    - {{ source: id, destination: id, key: true }}\n{mapped}"
            ),
        );
        Case {
            repo,
            src,
            dst,
            src_table,
            dst_table,
            columns: columns.iter().map(|c| c.0.to_string()).collect(),
        }
    }

    /// Inserts rows on the source side as an application would: `(id, literals)`.
    async fn insert(&mut self, rows: &[(i64, Vec<String>)]) {
        for (id, literals) in rows {
            let sql = format!(
                "INSERT INTO {} (id, {}) VALUES ({id}, {})",
                self.src_table,
                self.columns.join(", "),
                literals.join(", ")
            );
            self.src.plain.exec(&sql).await;
        }
    }

    fn reconcile(&self) {
        let mut env = Vec::new();
        for (role, db) in [("src", &self.src), ("dst", &self.dst)] {
            if let EndpointSpec::Postgres { url } | EndpointSpec::Mysql { url } = &db.spec {
                env.push((common::env_name(role), url.clone()));
            }
        }
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let run = run_in(self.repo.path(), &["reconcile"], &env);
        assert_eq!(
            run.code, 0,
            "reconcile failed:\n{}{}",
            run.stdout, run.stderr
        );
    }

    /// The errored records, by key.
    fn errors(&self) -> BTreeMap<i64, Recorded> {
        let conn =
            rusqlite::Connection::open(self.repo.path().join(".dualwrite/state.db")).unwrap();
        let mut stmt = conn
            .prepare("SELECT key, type, message FROM errors WHERE state = 'Open'")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .map(|(key, error_type, message)| {
                let key: serde_json::Value = serde_json::from_str(&key).unwrap();
                let id = key
                    .get("id")
                    .or_else(|| key.get(0))
                    .and_then(serde_json::Value::as_i64)
                    .unwrap_or_else(|| panic!("key {key}"));
                (
                    id,
                    Recorded {
                        error_type,
                        message,
                    },
                )
            })
            .collect()
    }

    async fn rows(&self, db: &TestDb, table: &str) -> BTreeMap<i64, Vec<Value>> {
        let ep = endpoint::connect(&db.spec).await.unwrap();
        let t = TableName::parse(table).unwrap();
        let mut cols = vec!["id".to_string()];
        cols.extend(self.columns.iter().cloned());
        let rows = ep
            .read_snapshot(&t, &cols, &cols[..1], None, 100_000)
            .await
            .unwrap();
        rows.into_iter()
            .map(|mut r| {
                let Value::Int(id) = r.remove(0) else {
                    panic!("id {r:?}")
                };
                (id, r)
            })
            .collect()
    }

    /// Every source row arrived equal, or its record (and only it) is refused with a
    /// TransformError naming a column. Returns the refused keys.
    async fn assert_exact_or_refused(&self) -> BTreeMap<i64, Recorded> {
        let src = self.rows(&self.src, &self.src_table).await;
        let dst = self.rows(&self.dst, &self.dst_table).await;
        let errors = self.errors();
        let pair = format!("{} -> {}", self.src.engine, self.dst.engine);
        for (id, row) in &src {
            match (dst.get(id), errors.get(id)) {
                (Some(got), None) => {
                    for ((name, a), b) in self.columns.iter().zip(row).zip(got) {
                        assert!(
                            same(a, b),
                            "{pair}: id {id}, column {name}: {a:?} arrived as {b:?}, silently"
                        );
                    }
                }
                (None, Some(e)) => {
                    assert_eq!(e.error_type, "TransformError", "{pair}: id {id}: {e:?}");
                    assert!(
                        self.columns.iter().any(|c| {
                            // dualwrite's words, or the database's (MariaDB: `db`.`t`.`c`).
                            e.message.contains(&format!("column {c}:"))
                                || e.message.contains(&format!(".`{c}` "))
                        }),
                        "{pair}: id {id}: the message names no column: {e:?}"
                    );
                }
                (got, e) => panic!("{pair}: id {id} ({row:?}): arrived {got:?}, error {e:?}"),
            }
        }
        let unknown: BTreeSet<&i64> = errors.keys().filter(|k| !src.contains_key(k)).collect();
        assert!(
            unknown.is_empty(),
            "{pair}: errors for keys never read: {unknown:?}"
        );
        errors
    }
}

/// Equal as values: numbers by value (`12.50` is `12.5`), NaN equal to NaN, a value of
/// another kind compared once converted to the source's kind.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Null, _) | (_, Value::Null) => a == b,
        (Value::Float(x), Value::Float(y)) => {
            x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan())
        }
        (Value::Json(x), Value::Json(y)) => same_json(x, y),
        _ if a.kind() == b.kind() => a == b,
        (_, _) => a
            .kind()
            .and_then(|k| b.convert_to(k).ok())
            .is_some_and(|b| same(a, &b)),
    }
}

/// The value of `column` for `id` as the database itself spells it, read with a plain
/// connection (not through dualwrite).
async fn plain_text(db: &mut TestDb, table: &str, column: &str, id: i64) -> Option<String> {
    use common::Plain;
    use mysql_async::prelude::Queryable;
    match &mut db.plain {
        Plain::Postgres(client) => client
            .query_one(
                &format!("SELECT {column}::text FROM {table} WHERE id = {id}"),
                &[],
            )
            .await
            .unwrap()
            .get(0),
        Plain::Mysql(conn) => conn
            .query_first::<Option<String>, _>(format!(
                "SELECT CAST({column} AS CHAR) FROM {table} WHERE id = {id}"
            ))
            .await
            .unwrap()
            .flatten(),
        Plain::Sqlite(path) => rusqlite::Connection::open(&*path)
            .unwrap()
            .query_row(
                &format!("SELECT CAST({column} AS TEXT) FROM {table} WHERE id = {id}"),
                [],
                |r| r.get(0),
            )
            .unwrap(),
    }
}

/// The same JSON document: numbers by value (`1.2345678901234568e+22` is
/// `12345678901234568000000`, as PostgreSQL's jsonb writes it), objects by key.
fn same_json(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value as J;
    match (a, b) {
        (J::Number(x), J::Number(y)) => {
            let exact =
                |n: &serde_json::Number| n.to_string().parse::<dualwrite::endpoint::Decimal>().ok();
            exact(x).is_some() && exact(x) == exact(y)
        }
        (J::Array(x), J::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_json(a, b))
        }
        (J::Object(x), J::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

async fn engines(src: &str, dst: &str) -> Option<(TestDb, TestDb)> {
    async fn one(engine: &str) -> Option<TestDb> {
        match engine {
            "sqlite" => Some(TestDb::sqlite().await),
            "postgres" => TestDb::postgres().await,
            _ => TestDb::mysql().await,
        }
    }
    Some((one(src).await?, one(dst).await?))
}

/// Syncs `rows` (each `(id, literals)`) from `src` to `dst`: ids below 1000 by the initial
/// sync, the others live. Returns the refused keys with their messages.
async fn sync_rows(
    src: TestDb,
    dst: TestDb,
    columns: &[(&str, &str, &str)],
    rows: &[(i64, Vec<String>)],
) -> BTreeMap<i64, String> {
    sync_case(src, dst, columns, rows).await.1
}

/// [`sync_rows`], keeping the case to look at its tables.
async fn sync_case(
    src: TestDb,
    dst: TestDb,
    columns: &[(&str, &str, &str)],
    rows: &[(i64, Vec<String>)],
) -> (Case, BTreeMap<i64, String>) {
    let mut case = Case::new(src, dst, columns).await;
    let (initial, live): (Vec<_>, Vec<_>) = rows.iter().cloned().partition(|(id, _)| *id < 1000);
    case.insert(&initial).await;
    case.reconcile();
    case.insert(&live).await;
    case.reconcile();
    let refused = case
        .assert_exact_or_refused()
        .await
        .into_iter()
        .map(|(id, e)| (id, e.message))
        .collect();
    (case, refused)
}

/// Each value twice: by the initial sync (id) and live (id + 1000).
fn both_phases(values: &[&str]) -> Vec<(i64, Vec<String>)> {
    values
        .iter()
        .enumerate()
        .flat_map(|(i, v)| {
            let id = i as i64 + 1;
            [(id, vec![v.to_string()]), (id + 1000, vec![v.to_string()])]
        })
        .collect()
}

fn refused_ids(refused: &BTreeMap<i64, String>) -> Vec<i64> {
    refused.keys().copied().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_numeric_38_10_arrives_whole_in_mariadb() {
    let Some((src, dst)) = engines("postgres", "mysql").await else {
        return;
    };
    with_timeout(async {
        let rows = both_phases(&[
            "1234567890123456789012345678.0123456789",
            "-0.0000000001",
            "12.50",
        ]);
        let (mut case, refused) = sync_case(
            src,
            dst,
            &[("v", "numeric(38,10)", "DECIMAL(38,10)")],
            &rows,
        )
        .await;
        assert!(refused.is_empty(), "{refused:?}");
        let table = case.dst_table.clone();
        for id in [1, 1001] {
            assert_eq!(
                plain_text(&mut case.dst, &table, "v", id).await.as_deref(),
                Some("1234567890123456789012345678.0123456789")
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonb_numbers_keep_their_digits_in_mariadb_and_sqlite() {
    for dst in ["mysql", "sqlite"] {
        let Some((src, dst)) = engines("postgres", dst).await else {
            return;
        };
        let dst_type = if dst.engine == "sqlite" {
            "TEXT"
        } else {
            "JSON"
        };
        with_timeout(async {
            let rows = both_phases(&[
                r#"'{"n": 12345678901234567890123, "f": 0.1000000000000000055511151231257827}'"#,
                "'[12345678901234567890123]'",
            ]);
            let (mut case, refused) = sync_case(src, dst, &[("v", "jsonb", dst_type)], &rows).await;
            assert!(refused.is_empty(), "{refused:?}");
            let table = case.dst_table.clone();
            for id in [1, 1001] {
                let text = plain_text(&mut case.dst, &table, "v", id).await.unwrap();
                assert!(
                    text.contains("12345678901234567890123")
                        && text.contains("0.1000000000000000055511151231257827"),
                    "{text}"
                );
            }
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bc_dates_are_refused_by_mariadb_not_zeroed() {
    let Some((src, dst)) = engines("postgres", "mysql").await else {
        return;
    };
    with_timeout(async {
        let rows = both_phases(&["'0044-03-15 BC'", "'2026-11-22'"]);
        let refused = sync_rows(src, dst, &[("v", "date", "DATE")], &rows).await;
        assert_eq!(refused_ids(&refused), [1, 1001], "{refused:?}");
        assert!(refused[&1].contains("column v:"), "{refused:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nan_is_refused_by_sqlite_not_nulled() {
    let Some((src, dst)) = engines("postgres", "sqlite").await else {
        return;
    };
    with_timeout(async {
        let rows = both_phases(&["'NaN'", "'Infinity'", "'-Infinity'", "0.1"]);
        let refused = sync_rows(src, dst, &[("v", "double precision", "REAL")], &rows).await;
        assert_eq!(refused_ids(&refused), [1, 1001], "{refused:?}");
        assert!(refused[&1].contains("NaN"), "{refused:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numerics_beyond_15_digits_are_refused_by_sqlite_numeric() {
    let Some((src, dst)) = engines("postgres", "sqlite").await else {
        return;
    };
    with_timeout(async {
        let rows = both_phases(&[
            "1234567890.123456789",
            "12.50",
            "99999999999999999999",
            "-9007199254740993",
        ]);
        let refused = sync_rows(
            src,
            dst,
            &[("v", "numeric(38,10)", "NUMERIC(38,10)")],
            &rows,
        )
        .await;
        assert_eq!(refused_ids(&refused), [1, 3, 1001, 1003], "{refused:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_infinity_fails_only_its_record() {
    let Some((src, dst)) = engines("postgres", "mysql").await else {
        return;
    };
    with_timeout(async {
        let cols = [("d", "date", "DATE"), ("t", "timestamp", "DATETIME(6)")];
        let row = |d: &str, t: &str| vec![d.to_string(), t.to_string()];
        let rows = vec![
            (1, row("'infinity'", "NULL")),
            (2, row("'2026-11-22'", "'2026-11-22 10:15:00.5'")),
            (3, row("NULL", "'-infinity'")),
            (1001, row("'-infinity'", "NULL")),
            (1002, row("'2026-11-23'", "'2026-11-23 10:15:00'")),
            (1003, row("NULL", "'infinity'")),
        ];
        let refused = sync_rows(src, dst, &cols, &rows).await;
        assert_eq!(refused_ids(&refused), [1, 3, 1001, 1003], "{refused:?}");
        assert!(refused[&1].contains("column d:"), "{refused:?}");
        assert!(
            refused[&3].contains("column t:") && refused[&3].contains("-infinity"),
            "{refused:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_zero_date_fails_only_its_record() {
    let Some((src, dst)) = engines("mysql", "postgres").await else {
        return;
    };
    with_timeout(async {
        let rows = both_phases(&["'0000-00-00'", "'2026-11-22'"]);
        let refused = sync_rows(src, dst, &[("v", "DATE", "date")], &rows).await;
        assert_eq!(refused_ids(&refused), [1, 1001], "{refused:?}");
        assert!(refused[&1].contains("0000-00-00"), "{refused:?}");
    })
    .await;
}

/// Rows each holding one value in one column (NULL elsewhere), then one row of good values;
/// each twice, by the initial sync and live.
fn one_per_row(width: usize, values: &[(usize, &str)], good: &[&str]) -> Vec<(i64, Vec<String>)> {
    let mut rows: Vec<Vec<String>> = values
        .iter()
        .map(|(col, v)| {
            (0..width)
                .map(|i| {
                    if i == *col {
                        v.to_string()
                    } else {
                        "NULL".into()
                    }
                })
                .collect()
        })
        .collect();
    rows.push(good.iter().map(|v| v.to_string()).collect());
    rows.iter()
        .enumerate()
        .flat_map(|(i, r)| [(i as i64 + 1, r.clone()), (i as i64 + 1001, r.clone())])
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_beyond_a_mariadb_column_are_refused_not_rounded() {
    let Some((src, dst)) = engines("postgres", "mysql").await else {
        return;
    };
    with_timeout(async {
        let cols = [
            ("t", "timestamp", "DATETIME"),
            ("d", "numeric", "DECIMAL(12,2)"),
            ("f", "double precision", "FLOAT"),
            ("i", "bigint", "TINYINT"),
        ];
        let rows = one_per_row(
            4,
            &[
                (0, "'2026-01-01 10:00:00.5'"),
                (1, "1.005"),
                (2, "0.1"),
                (3, "300"),
            ],
            &["'2026-01-01 10:00:00'", "1.5", "0.5", "100"],
        );
        let refused = sync_rows(src, dst, &cols, &rows).await;
        assert_eq!(
            refused_ids(&refused),
            [1, 2, 3, 4, 1001, 1002, 1003, 1004],
            "{refused:?}"
        );
        for (id, column) in [(1, "t"), (2, "d"), (3, "f"), (4, "i")] {
            assert!(
                refused[&id].contains(&format!("column {column}:")),
                "{refused:?}"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_beyond_a_postgres_column_are_refused_not_rounded() {
    let Some((src, dst)) = engines("mysql", "postgres").await else {
        return;
    };
    with_timeout(async {
        let cols = [
            ("s", "TEXT", "text"),
            ("f", "DOUBLE", "real"),
            ("d", "DECIMAL(12,3)", "numeric(12,2)"),
            ("t", "DATETIME(6)", "timestamp(3)"),
            ("i", "BIGINT", "smallint"),
        ];
        let rows = one_per_row(
            5,
            &[
                (0, "'a\\0b'"),
                (1, "0.1"),
                (2, "1.005"),
                (3, "'2026-01-01 10:00:00.123456'"),
                (4, "70000"),
            ],
            &["'ab'", "0.5", "1.5", "'2026-01-01 10:00:00.123'", "7"],
        );
        let refused = sync_rows(src, dst, &cols, &rows).await;
        assert_eq!(
            refused_ids(&refused),
            [1, 2, 3, 4, 5, 1001, 1002, 1003, 1004, 1005],
            "{refused:?}"
        );
        for (id, column) in [(1, "s"), (2, "f"), (3, "d"), (4, "t"), (5, "i")] {
            assert!(
                refused[&id].contains(&format!("column {column}:")),
                "{refused:?}"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_outside_a_mariadb_columns_charset_is_a_transform_error() {
    let Some((src, dst)) = engines("sqlite", "mysql").await else {
        return;
    };
    with_timeout(async {
        let rows = both_phases(&["'snow ☃ and 😀'", "'café'"]);
        let cols = [("v", "TEXT", "VARCHAR(40) CHARACTER SET latin1")];
        let refused = sync_rows(src, dst, &cols, &rows).await;
        assert_eq!(refused_ids(&refused), [1, 1001], "{refused:?}");
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// The property: rows of every type family with their edge values, between every pair.
// ---------------------------------------------------------------------------------------

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

/// One generated cell, engine-neutral; [`Cell::literal`] spells it for a source engine
/// (`None`: that engine cannot hold it, the source gets NULL instead).
#[derive(Clone, Debug)]
enum Cell {
    Null,
    Bool(bool),
    Int(i64),
    Decimal(String),
    Float(f64),
    Text(String),
    Bytes(Vec<u8>),
    /// `YYYY-MM-DD`, `YYYY-MM-DD BC`, `infinity` or `0000-00-00`.
    Date(String),
    /// `YYYY-MM-DD HH:MM:SS.ffffff` or `infinity`.
    Timestamp(String),
    /// `YYYY-MM-DD HH:MM:SS.ffffff`, in UTC.
    TimestampTz(String),
    Json(String),
}

/// The columns of the generated tables: name and type on SQLite, PostgreSQL, MariaDB.
const FAMILIES: [(&str, [&str; 3]); 10] = [
    ("c_bool", ["BOOLEAN", "boolean", "TINYINT(1)"]),
    ("c_int", ["INTEGER", "bigint", "BIGINT"]),
    (
        "c_dec",
        ["DECIMAL(38,10)", "numeric(38,10)", "DECIMAL(38,10)"],
    ),
    ("c_float", ["REAL", "double precision", "DOUBLE"]),
    ("c_text", ["TEXT", "text", "TEXT"]),
    ("c_bytes", ["BLOB", "bytea", "BLOB"]),
    ("c_date", ["DATE", "date", "DATE"]),
    ("c_ts", ["DATETIME", "timestamp", "DATETIME(6)"]),
    (
        "c_tstz",
        ["TIMESTAMPTZ", "timestamptz", "TIMESTAMP(6) NULL"],
    ),
    ("c_json", ["JSON", "jsonb", "JSON"]),
];

fn engine_index(engine: &str) -> usize {
    match engine {
        "sqlite" => 0,
        "postgres" => 1,
        _ => 2,
    }
}

fn quoted(engine: &str, text: &str) -> String {
    match engine {
        "postgres" => format!("E'{}'", text.replace('\\', "\\\\").replace('\'', "\\'")),
        "mysql" => format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'")),
        _ => format!("'{}'", text.replace('\'', "''")),
    }
}

impl Cell {
    fn literal(&self, engine: &str) -> Option<String> {
        let (pg, my, lite) = (engine == "postgres", engine == "mysql", engine == "sqlite");
        Some(match self {
            Cell::Null => "NULL".into(),
            Cell::Bool(b) if pg => b.to_string(),
            Cell::Bool(b) => u8::from(*b).to_string(),
            Cell::Int(i) if *i == i64::MIN => "(-9223372036854775807 - 1)".into(),
            Cell::Int(i) => i.to_string(),
            Cell::Decimal(d) if pg => format!("'{d}'::numeric"),
            Cell::Decimal(d) if my => d.clone(),
            Cell::Decimal(d) => format!("'{d}'"),
            Cell::Float(f) if f.is_nan() => match engine {
                "postgres" => "'NaN'::float8".into(),
                _ => return None,
            },
            Cell::Float(f) if f.is_infinite() => {
                let sign = if *f < 0.0 { "-" } else { "" };
                match engine {
                    "postgres" => format!("'{sign}Infinity'::float8"),
                    "sqlite" => format!("{sign}9e999"),
                    _ => return None,
                }
            }
            Cell::Float(f) if pg => format!("'{f:e}'::float8"),
            Cell::Float(f) => format!("{f:e}"),
            Cell::Text(t) => quoted(engine, t),
            Cell::Bytes(b) if pg => format!("'\\x{}'::bytea", hex::encode(b)),
            Cell::Bytes(b) => format!("X'{}'", hex::encode(b)),
            Cell::Date(d) if d == "infinity" || d.ends_with("BC") => match pg {
                true => format!("'{d}'"),
                false => return None,
            },
            Cell::Date(d) if d == "0000-00-00" => match my {
                true => format!("'{d}'"),
                false => return None,
            },
            Cell::Date(d) => format!("'{d}'"),
            Cell::Timestamp(t) if t == "infinity" && !pg => return None,
            Cell::Timestamp(t) => format!("'{t}'"),
            Cell::TimestampTz(t) if pg => format!("'{t}+00'"),
            Cell::TimestampTz(t) if my => {
                if !("1970-01-01 00:00:01".."2038-01-19 03:14:07").contains(&t.as_str()) {
                    return None;
                }
                format!("'{t}'")
            }
            Cell::TimestampTz(t) => format!("'{}Z'", t.replace(' ', "T")),
            Cell::Json(j) if pg => format!("'{}'::jsonb", j.replace('\'', "''")),
            Cell::Json(j) => quoted(engine, j),
        })
        .filter(|_| !(lite && matches!(self, Cell::Text(t) if t.contains('\0'))))
    }
}

fn decimal() -> impl Strategy<Value = Cell> {
    let digits = |n| {
        proptest::collection::vec(0u8..10, n)
            .prop_map(|v| v.iter().map(|d| char::from(b'0' + d)).collect::<String>())
    };
    let number = move |int, frac| {
        (any::<bool>(), digits(int), digits(frac)).prop_map(|(neg, i, f)| {
            let sign = if neg { "-" } else { "" };
            Cell::Decimal(if f.is_empty() {
                format!("{sign}{i}")
            } else {
                format!("{sign}{i}.{f}")
            })
        })
    };
    prop_oneof![
        6 => number(1..=10, 0..=4),
        3 => number(1..=28, 0..=10),
        1 => Just(Cell::Decimal("1234567890123456789012345678.0123456789".into())),
        1 => Just(Cell::Decimal("0.0000000001".into())),
        1 => Just(Cell::Decimal("12.50".into())),
        1 => Just(Cell::Decimal("-9007199254740993".into())),
    ]
}

fn float() -> impl Strategy<Value = Cell> {
    prop_oneof![
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => Just(-0.0),
        2 => Just(0.1),
        1 => Just(1e300),
        1 => Just(5e-324),
        1 => Just(f64::MAX),
        12 => any::<f64>().prop_filter("finite", |f| f.is_finite()),
    ]
    .prop_map(Cell::Float)
}

fn text() -> impl Strategy<Value = Cell> {
    let chars = prop_oneof![
        Just('a'),
        Just(' '),
        Just('\''),
        Just('\\'),
        Just('\n'),
        Just('é'),
        Just('😀'),
        Just('中'),
        Just('1'),
        Just('.'),
    ];
    proptest::collection::vec(chars, 0..10).prop_map(|c| Cell::Text(c.into_iter().collect()))
}

/// A date: mostly within 1970…2037 (which every engine's types hold), sometimes anywhere in
/// 0001…9999.
fn date_text() -> impl Strategy<Value = String> {
    let year = prop_oneof![4 => 1970i32..2038, 1 => 1i32..=9999];
    (year, 1u32..=12, 1u32..=28).prop_map(|(y, m, d)| format!("{y:04}-{m:02}-{d:02}"))
}

fn time_text() -> impl Strategy<Value = String> {
    (date_text(), 0u32..24, 0u32..60, 0u32..60, 0u32..1_000_000)
        .prop_map(|(d, h, mi, s, us)| format!("{d} {h:02}:{mi:02}:{s:02}.{us:06}"))
}

fn json() -> impl Strategy<Value = Cell> {
    prop_oneof![
        Just(r#"{"n": 12345678901234567890123}"#),
        Just("0.1000000000000000055511151231257827"),
        Just("12345678901234567890123"),
        Just("1.5"),
        Just("7"),
        Just(r#"[1, 2.5, "é😀", null, true]"#),
        Just(r#"{"a": {"b": [], "c": "x\"y"}}"#),
        Just(r#""text""#),
    ]
    .prop_map(|j| Cell::Json(j.to_string()))
}

/// A row: one cell per family, NULL now and then, edge values often.
fn row() -> impl Strategy<Value = Vec<Cell>> {
    let null = |s: BoxedStrategy<Cell>| {
        prop::option::weighted(0.85, s).prop_map(|c| c.unwrap_or(Cell::Null))
    };
    (
        null(any::<bool>().prop_map(Cell::Bool).boxed()),
        null(
            prop_oneof![
                Just(0),
                Just(-1),
                Just(i64::MAX),
                Just(i64::MIN),
                any::<i64>()
            ]
            .prop_map(Cell::Int)
            .boxed(),
        ),
        null(decimal().boxed()),
        null(float().boxed()),
        null(text().boxed()),
        null(
            proptest::collection::vec(any::<u8>(), 0..12)
                .prop_map(Cell::Bytes)
                .boxed(),
        ),
        null(
            prop_oneof![
                12 => date_text(),
                1 => Just("0044-03-15 BC".to_string()),
                1 => Just("infinity".to_string()),
                1 => Just("0000-00-00".to_string()),
            ]
            .prop_map(Cell::Date)
            .boxed(),
        ),
        null(
            prop_oneof![12 => time_text(), 1 => Just("infinity".to_string())]
                .prop_map(Cell::Timestamp)
                .boxed(),
        ),
        null(time_text().prop_map(Cell::TimestampTz).boxed()),
        null(json().boxed()),
    )
        .prop_map(|(a, b, c, d, e, f, g, h, i, j)| vec![a, b, c, d, e, f, g, h, i, j])
}

/// Cases per pair: modest, so the suite stays fast; the seed is fixed, so CI runs the same
/// rows every time.
const CASES: u32 = 16;
const SEED: [u8; 32] = *b"dualwrite exact values, issue 12";

/// For `CASES` generated sets of rows: the first half copied by an initial sync, the rest
/// live; every row arrives equal or is refused alone with a TransformError.
async fn exact_or_refused(src: &'static str, dst: &'static str) {
    if engines(src, dst).await.is_none() {
        return;
    }
    let columns: Vec<(&str, &str, &str)> = FAMILIES
        .iter()
        .map(|(name, types)| (*name, types[engine_index(src)], types[engine_index(dst)]))
        .collect();
    let handle = tokio::runtime::Handle::current();
    // Rows synced, and refused ones by column, reported at the end (what the test found).
    let tally = std::sync::Arc::new(std::sync::Mutex::new((
        0usize,
        BTreeMap::<String, usize>::new(),
    )));
    let counts = tally.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let config = Config {
            cases: CASES,
            failure_persistence: None,
            max_shrink_iters: 16,
            ..Config::default()
        };
        let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &SEED);
        let mut runner = TestRunner::new_with_rng(config, rng);
        runner.run(&proptest::collection::vec(row(), 4..=10), |rows| {
            handle.block_on(async {
                let (src_db, dst_db) = engines(src, dst).await.expect("reachable above");
                let literal_rows: Vec<(i64, Vec<String>)> = rows
                    .iter()
                    .enumerate()
                    .map(|(i, cells)| {
                        // The first half by the initial sync (ids < 1000), the rest live.
                        let id = if i < rows.len().div_ceil(2) {
                            i as i64 + 1
                        } else {
                            i as i64 + 1001
                        };
                        let literals = cells
                            .iter()
                            .map(|c| c.literal(src).unwrap_or_else(|| "NULL".into()))
                            .collect();
                        (id, literals)
                    })
                    .collect();
                with_timeout(async {
                    let refused = sync_rows(src_db, dst_db, &columns, &literal_rows).await;
                    let mut counts = counts.lock().unwrap();
                    counts.0 += literal_rows.len();
                    for message in refused.values() {
                        let column = message.split(':').next().unwrap_or("").to_string();
                        *counts.1.entry(column).or_default() += 1;
                    }
                })
                .await;
            });
            Ok(())
        })
    })
    .await
    .unwrap();
    if let Err(e) = outcome {
        panic!("{src} -> {dst}: {e}");
    }
    let (rows, refused) = &*tally.lock().unwrap();
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "{src} -> {dst}: {rows} rows synced, refused by column: {refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn property_sqlite_to_postgres_is_exact_or_refused() {
    exact_or_refused("sqlite", "postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn property_sqlite_to_mariadb_is_exact_or_refused() {
    exact_or_refused("sqlite", "mysql").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn property_postgres_to_sqlite_is_exact_or_refused() {
    exact_or_refused("postgres", "sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn property_postgres_to_mariadb_is_exact_or_refused() {
    exact_or_refused("postgres", "mysql").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn property_mariadb_to_sqlite_is_exact_or_refused() {
    exact_or_refused("mysql", "sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn property_mariadb_to_postgres_is_exact_or_refused() {
    exact_or_refused("mysql", "postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn property_sqlite_to_sqlite_is_exact_or_refused() {
    // The in-database copy (one statement across attached files) for the initial sync.
    exact_or_refused("sqlite", "sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn property_postgres_to_postgres_is_exact_or_refused() {
    exact_or_refused("postgres", "postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn property_mariadb_to_mariadb_is_exact_or_refused() {
    exact_or_refused("mysql", "mysql").await;
}
