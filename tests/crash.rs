//! Crash safety: `kill -9` of a real `dualwrite reconcile` in the middle of an initial sync
//! and in the middle of a live drain, then another `reconcile`: both tables must match row
//! for row, with nothing lost and nothing written twice.

mod common;
mod support;

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{TestDb, unique_table};
use dualwrite::endpoint::EndpointSpec;
use support::Repo;

const ROWS: i64 = 60_000;

/// The initial-sync test's table: progress is saved about once a second, so the copy must
/// take several seconds even in a debug build on a fast machine.
const INITIAL_ROWS: i64 = 400_000;

fn spawn_reconcile(repo: &Repo, env: &[(&str, &str)]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_dualwrite"))
        .arg("-C")
        .arg(repo.path())
        .arg("reconcile")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits until `ready` holds for the runtime, then kills the process with SIGKILL.
fn kill_when(
    child: &mut Child,
    repo: &Repo,
    what: &str,
    ready: impl Fn(&serde_json::Value) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "reconcile finished ({status}) before it could be killed {what}: make the table bigger"
            );
        }
        if repo.runtime("m").is_some_and(|r| ready(&r)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting to kill {what}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

fn count(path: &std::path::Path, table: &str) -> i64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

fn dump_sqlite(path: &std::path::Path, table: &str) -> Vec<(i64, String, i64)> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare(&format!("SELECT id, name, qty FROM {table} ORDER BY id"))
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn project(dst: &str) -> String {
    format!(
        "apiVersion: dualwrite/v1\nkind: Project\nmetadata: {{ name: crash }}\nspec:\n  endpoints:\n    src: {{ sqlite: {{ path: src.db }} }}\n    dst: {dst}\n"
    )
}

fn map(src_table: &str, dst_table: &str) -> String {
    map_with(src_table, dst_table, "")
}

/// The map, `qty_extra` appended to its `qty` column's line (`, valueMap: …`).
fn map_with(src_table: &str, dst_table: &str, qty_extra: &str) -> String {
    format!(
        "apiVersion: dualwrite/v1\nkind: TableMap\nmetadata: {{ name: m }}\nspec:\n  source: {{ endpoint: src, table: {src_table} }}\n  destination: {{ endpoint: dst, table: {dst_table} }}\n  batchSize: 200\n  initialSync: {{ batchSize: 200 }}\n  columns:\n    - {{ source: id, destination: id, key: true }}\n    - {{ source: name, destination: name }}\n    - {{ source: qty, destination: qty{qty_extra} }}\n"
    )
}

/// A `valueMap` for `qty` (-1 to 999, as the crash tests write it) to `qty + OFFSET`.
const OFFSET: i64 = 5_000;

fn offset_map() -> String {
    let entries: Vec<String> = (-1..1000)
        .map(|q| format!("\"{q}\": {}", q + OFFSET))
        .collect();
    format!(", valueMap: {{ {} }}", entries.join(", "))
}

fn seed_source(repo: &Repo, rows: i64) {
    let conn = rusqlite::Connection::open(repo.path().join("src.db")).unwrap();
    conn.execute_batch(
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER NOT NULL)",
    )
    .unwrap();
    conn.execute_batch(&format!(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})
         INSERT INTO items SELECT i, 'item ' || i, i % 1000 FROM n"
    ))
    .unwrap();
}

/// Kills a reconcile of a SQLite → SQLite initial sync once `ready` holds, changes the
/// source while nothing runs, and checks that the next pass converges: both tables equal
/// row for row, nothing errored. With `paged`, the target holds the first row already, so
/// the copy goes in pages; without, an empty target takes it in one statement.
fn kill_mid_copy_then_converge(
    target_columns: &str,
    mapped: bool,
    paged: bool,
    what: &str,
    ready: impl Fn(&serde_json::Value, &std::path::Path) -> bool,
) -> i64 {
    let repo = Repo::new(&[]);
    repo.write("dualwrite.yaml", &project("{ sqlite: { path: dst.db } }"));
    let qty_extra = if mapped { offset_map() } else { String::new() };
    repo.write("maps/m.yaml", &map_with("items", "items", &qty_extra));
    seed_source(&repo, INITIAL_ROWS);
    let offset = if mapped { OFFSET } else { 0 };
    let target = rusqlite::Connection::open(repo.path().join("dst.db")).unwrap();
    target
        .execute_batch(&format!("CREATE TABLE items ({target_columns})"))
        .unwrap();
    if paged {
        // A target that already holds a row (the first, as the copy writes it) is copied in
        // pages, not as one whole-table statement.
        target
            .execute(
                "INSERT INTO items (id, name, qty) VALUES (1, 'item 1', ?1)",
                [1 + offset],
            )
            .unwrap();
    }

    let mut child = spawn_reconcile(&repo, &[]);
    let dst = repo.path().join("dst.db");
    kill_when(&mut child, &repo, what, |r| ready(r, &dst));
    let partial = count(&dst, "items");

    // Changes made while nobody runs are captured and applied after the copy resumes.
    let src = rusqlite::Connection::open(repo.path().join("src.db")).unwrap();
    src.execute_batch(&format!("UPDATE items SET qty = -1 WHERE id % 7 = 0; DELETE FROM items WHERE id % 11 = 0; INSERT INTO items VALUES ({}, 'late', 5);", INITIAL_ROWS + 1)).unwrap();

    let run = repo.run(&["reconcile"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let expected: Vec<(i64, String, i64)> = dump_sqlite(&repo.path().join("src.db"), "items")
        .into_iter()
        .map(|(id, name, qty)| (id, name, qty + offset))
        .collect();
    assert_eq!(expected, dump_sqlite(&dst, "items"));
    let status = std::fs::read_to_string(repo.path().join("status/maps/m.yaml")).unwrap();
    assert!(
        status.contains("phase: Running") && status.contains("status: Completed\n"),
        "{status}"
    );
    assert!(
        status.contains("open: 0"),
        "no record may have failed: {status}"
    );
    partial
}

/// [`kill_mid_copy_then_converge`] once the copy has committed rows (whether or not its
/// progress, saved about once a second, was stored yet: either way the next pass must
/// converge), which must be between its pages: some rows copied, not all.
fn kill_between_pages_then_converge(target_columns: &str, mapped: bool, what: &str) {
    let partial = kill_mid_copy_then_converge(target_columns, mapped, true, what, |r, dst| {
        r["initialSync"]["status"] == "Running" && count(dst, "items") > 2_000
    });
    assert!(
        partial > 0 && partial < INITIAL_ROWS,
        "killed mid-copy: {partial} of {INITIAL_ROWS} rows copied"
    );
}

#[test]
fn kill_9_mid_initial_sync_then_reconcile_converges() {
    // The target's columns are in another order than the source's; it holds the first row
    // already, so the copy runs in pages (not as one whole-table statement) and is killed
    // between them.
    kill_between_pages_then_converge(
        "id INTEGER PRIMARY KEY, qty INTEGER NOT NULL, name TEXT NOT NULL",
        false,
        "mid initial sync",
    );
}

/// The same through typed values (the target's `qty` is a decimal, so values are converted
/// in Rust: read, converted and written by overlapping tasks).
#[test]
fn kill_9_mid_a_typed_initial_sync_then_reconcile_converges() {
    kill_between_pages_then_converge(
        "id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty NUMERIC NOT NULL",
        false,
        "mid a typed initial sync",
    );
}

/// The same through a `valueMap` (copied in the database as a `CASE`).
#[test]
fn kill_9_mid_a_mapped_initial_sync_then_reconcile_converges() {
    kill_between_pages_then_converge(
        "id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER NOT NULL",
        true,
        "mid a mapped initial sync",
    );
}

#[test]
fn kill_9_during_a_whole_table_copy_then_reconcile_converges() {
    // An empty target: the copy is one statement, killed while it runs (or just after),
    // which keeps all of it or none.
    let partial = kill_mid_copy_then_converge(
        "id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER NOT NULL",
        false,
        false,
        "during the whole-table copy",
        |r, _| r["initialSync"]["status"] == "Running",
    );
    assert!(
        partial == 0 || partial == INITIAL_ROWS,
        "one statement keeps all or nothing: {partial} of {INITIAL_ROWS} rows"
    );
}

/// A PostgreSQL test database for a plain (not async) test, which waits in `kill_when`:
/// its URL, and statements run on a runtime of the test's own.
struct Pg {
    runtime: tokio::runtime::Runtime,
    db: TestDb,
    url: String,
}

impl Pg {
    fn connect() -> Option<Pg> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let db = runtime.block_on(TestDb::postgres())?;
        let EndpointSpec::Postgres { url } = db.spec.clone() else {
            unreachable!()
        };
        Some(Pg { runtime, db, url })
    }

    /// `table`, dropped when the test ends.
    fn table(&mut self, prefix: &str) -> String {
        let table = unique_table(prefix);
        self.db.on_drop(format!("DROP TABLE IF EXISTS {table}"));
        table
    }

    fn exec(&mut self, sql: &str) {
        self.runtime.block_on(self.db.plain.exec(sql));
    }

    fn client(&self) -> &tokio_postgres::Client {
        let common::Plain::Postgres(client) = &self.db.plain else {
            unreachable!()
        };
        client
    }

    fn scalar(&self, sql: &str) -> i64 {
        let row = self.runtime.block_on(self.client().query_one(sql, &[]));
        row.unwrap().get(0)
    }

    /// `(id, name, qty)` of `select`, in its order.
    fn items(&self, select: &str) -> Vec<(i64, String, i64)> {
        let rows = self.runtime.block_on(self.client().query(select, &[]));
        rows.unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    }
}

/// The map's status after the pass that converged: Completed, no open error.
fn assert_converged(repo: &Repo) {
    let status = std::fs::read_to_string(repo.path().join("status/maps/m.yaml")).unwrap();
    assert!(
        status.contains("status: Completed\n") && status.contains("open: 0"),
        "{status}"
    );
}

/// SQLite → PostgreSQL through typed values (the target's `qty` is numeric, so integers
/// are converted in Rust), two page writes in flight on two connections (seen in
/// `pg_stat_activity`), killed between pages; then the next pass converges.
#[test]
fn kill_9_mid_a_typed_copy_into_postgres_with_two_writes_in_flight_then_reconcile_converges() {
    let Some(mut pg) = Pg::connect() else {
        return;
    };
    let dst = pg.table("crash_typed");
    pg.exec(&format!(
        "CREATE TABLE {dst} (id bigint PRIMARY KEY, name text NOT NULL, qty numeric NOT NULL)"
    ));
    let repo = Repo::new(&[]);
    repo.write(
        "dualwrite.yaml",
        &project("{ postgres: { urlFromEnv: DW_CRASH_PG } }"),
    );
    // Pages of 2,000 rows: many pages, each written while the next is loaded.
    repo.write(
        "maps/m.yaml",
        &map("items", &dst).replace("batchSize: 200 }", "batchSize: 2000 }"),
    );
    seed_source(&repo, INITIAL_ROWS);
    let env = [("DW_CRASH_PG", pg.url.as_str())];
    let mut child = spawn_reconcile(&repo, &env);
    let writers = std::cell::Cell::new(0);
    let sessions = format!(
        "SELECT count(DISTINCT pid) FROM pg_stat_activity \
         WHERE query LIKE '%{dst}%' AND pid <> pg_backend_pid()"
    );
    kill_when(&mut child, &repo, "mid a typed copy into PostgreSQL", |r| {
        writers.set(writers.get().max(pg.scalar(&sessions)));
        r["initialSync"]["status"] == "Running"
            && pg.scalar(&format!("SELECT count(*) FROM {dst}")) > 20_000
            && writers.get() >= 2
    });
    let partial = pg.scalar(&format!("SELECT count(*) FROM {dst}"));
    assert!(
        partial > 0 && partial < INITIAL_ROWS,
        "killed mid-copy: {partial} of {INITIAL_ROWS} rows copied"
    );

    let src = rusqlite::Connection::open(repo.path().join("src.db")).unwrap();
    src.execute_batch(&format!("UPDATE items SET qty = -1 WHERE id % 7 = 0; DELETE FROM items WHERE id % 11 = 0; INSERT INTO items VALUES ({}, 'late', 5);", INITIAL_ROWS + 1)).unwrap();
    let run = support::run_in(repo.path(), &["reconcile"], &env);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let expected = dump_sqlite(&repo.path().join("src.db"), "items");
    let actual = pg.items(&format!(
        "SELECT id, name, qty::bigint FROM {dst} ORDER BY id"
    ));
    assert_eq!(actual.len(), expected.len());
    assert!(actual == expected, "PostgreSQL differs from the source");
    assert_converged(&repo);
}

/// PostgreSQL → PostgreSQL through a `valueMap`: pages leave the source as binary `COPY`
/// data with the map written as a `CASE` (the session's `pg_temp.dualwrite_unmapped` is
/// there while the copy runs: that path) and enter the target as they are; killed between
/// pages, then the next pass converges.
#[test]
fn kill_9_mid_a_binary_postgres_copy_then_reconcile_converges() {
    let Some(mut pg) = Pg::connect() else {
        return;
    };
    let (src, dst) = (pg.table("crash_bin_src"), pg.table("crash_bin_dst"));
    pg.exec(&format!(
        "CREATE TABLE {src} (id bigint PRIMARY KEY, name text NOT NULL, qty bigint NOT NULL);
         INSERT INTO {src} SELECT g, 'item ' || g, g % 1000 FROM generate_series(1, {INITIAL_ROWS}) g;
         CREATE TABLE {dst} (id bigint PRIMARY KEY, name text NOT NULL, qty bigint NOT NULL);"
    ));
    let repo = Repo::new(&[]);
    repo.write(
        "dualwrite.yaml",
        &project("{ postgres: { urlFromEnv: DW_CRASH_PG } }").replace(
            "src: { sqlite: { path: src.db } }",
            "src: { postgres: { urlFromEnv: DW_CRASH_PG } }",
        ),
    );
    repo.write("maps/m.yaml", &map_with(&src, &dst, &offset_map()));
    let url = pg.url.clone();
    let env = [("DW_CRASH_PG", url.as_str())];
    let mut child = spawn_reconcile(&repo, &env);
    let binary = std::cell::Cell::new(false);
    kill_when(&mut child, &repo, "mid a binary copy", |r| {
        let copied = r["initialSync"]["status"] == "Running"
            && pg.scalar(&format!("SELECT count(*) FROM {dst}")) > 2_000;
        if copied {
            let unmapped = "SELECT count(*) FROM pg_proc WHERE proname = 'dualwrite_unmapped'";
            binary.set(pg.scalar(unmapped) > 0);
        }
        copied
    });
    assert!(
        binary.get(),
        "the copy runs as binary pages, the map in SQL"
    );
    let partial = pg.scalar(&format!("SELECT count(*) FROM {dst}"));
    assert!(
        partial > 0 && partial < INITIAL_ROWS,
        "killed mid-copy: {partial} of {INITIAL_ROWS} rows copied"
    );

    pg.exec(&format!(
        "UPDATE {src} SET qty = -1 WHERE id % 7 = 0; DELETE FROM {src} WHERE id % 11 = 0;
         INSERT INTO {src} VALUES ({}, 'late', 5);",
        INITIAL_ROWS + 1
    ));
    let run = support::run_in(repo.path(), &["reconcile"], &env);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let mapped = pg.items(&format!(
        "SELECT id, name, qty + {OFFSET} FROM {src} ORDER BY id"
    ));
    let actual = pg.items(&format!("SELECT id, name, qty FROM {dst} ORDER BY id"));
    assert_eq!(actual.len(), mapped.len());
    assert!(actual == mapped, "the target equals the mapped source");
    assert_converged(&repo);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_live_sync_then_reconcile_converges() {
    let Some(mut pg) = TestDb::postgres().await else {
        return;
    };
    let EndpointSpec::Postgres { url } = pg.spec.clone() else {
        unreachable!()
    };
    let table = unique_table("crash");
    pg.plain
        .exec(&format!(
            "CREATE TABLE {table} (id bigint PRIMARY KEY, name text NOT NULL, qty bigint NOT NULL)"
        ))
        .await;
    let repo = Repo::new(&[]);
    repo.write(
        "dualwrite.yaml",
        &project("{ postgres: { urlFromEnv: DW_CRASH_PG } }"),
    );
    repo.write("maps/m.yaml", &map("items", &table));
    seed_source(&repo, ROWS);
    let env = [("DW_CRASH_PG", url.as_str())];
    let run = support::run_in(repo.path(), &["reconcile"], &env);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);

    // A burst of live changes, then a reconcile killed while it drains them.
    let src = rusqlite::Connection::open(repo.path().join("src.db")).unwrap();
    src.execute_batch("UPDATE items SET qty = qty + 1, name = name || ' v2'; DELETE FROM items WHERE id % 13 = 0;").unwrap();
    let start_cursor = repo.runtime("m").unwrap()["cursorSource"].as_i64().unwrap();
    let mut child = spawn_reconcile(&repo, &env);
    kill_when(&mut child, &repo, "mid live sync", |r| {
        r["cursorSource"].as_i64().unwrap_or(0) > start_cursor + 2_000
    });

    let run = support::run_in(repo.path(), &["reconcile"], &env);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let expected = dump_sqlite(&repo.path().join("src.db"), "items");
    let client = match &pg.plain {
        common::Plain::Postgres(c) => c,
        _ => unreachable!(),
    };
    let rows = client
        .query(
            &format!("SELECT id, name, qty FROM {table} ORDER BY id"),
            &[],
        )
        .await
        .unwrap();
    let actual: Vec<(i64, String, i64)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(actual.len(), expected.len());
    assert!(
        actual == expected,
        "PostgreSQL differs from the source after the crash"
    );
    pg.drop_table(&table).await;
}
