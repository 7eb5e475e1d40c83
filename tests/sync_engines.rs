//! Real sync between real databases: for every pair of engines (SQLite, PostgreSQL,
//! MariaDB), one way and both ways, through every phase (initial sync, live, pause with a
//! queue, resume with catch-up, stop, start again), comparing both tables row for row after
//! each step. Drives the `dualwrite` binary as a user would.

mod common;
mod support;

use common::{TestDb, unique_table, with_timeout};
use dualwrite::endpoint::{self, EndpointSpec, TableName, Value};
use support::{Repo, run_in};

fn url(db: &TestDb) -> Option<String> {
    match &db.spec {
        EndpointSpec::Sqlite { .. } => None,
        EndpointSpec::Postgres { url } | EndpointSpec::Mysql { url } => Some(url.clone()),
    }
}

struct Pair {
    repo: Repo,
    src: TestDb,
    dst: TestDb,
    src_table: String,
    dst_table: String,
}

impl Pair {
    async fn new(src: TestDb, dst: TestDb, direction: &str) -> Pair {
        let src_table = unique_table("src");
        let dst_table = unique_table("dst");
        let repo = Repo::new(&[]);
        repo.write(
            "dualwrite.yaml",
            &format!(
                "apiVersion: dualwrite/v1\nkind: Project\nmetadata: {{ name: t }}\nspec:\n  endpoints:\n{}{}",
                src.endpoint_yaml("src"),
                dst.endpoint_yaml("dst")
            ),
        );
        let mut pair = Pair {
            repo,
            src,
            dst,
            src_table,
            dst_table,
        };
        pair.write_map(direction, "Running");
        for (db, table, name_col) in [
            (&mut pair.src, pair.src_table.clone(), "name"),
            (&mut pair.dst, pair.dst_table.clone(), "full_name"),
        ] {
            use dualwrite::endpoint::ValueKind::*;
            let ddl = format!(
                "CREATE TABLE {table} (id {} PRIMARY KEY, {name_col} {}, amount {}, active {}, updated_at {})",
                db.type_name(Int),
                db.type_name(Text),
                db.type_name(Decimal),
                db.type_name(Bool),
                db.type_name(Timestamp)
            );
            db.plain.exec(&ddl).await;
        }
        pair
    }

    fn write_map(&self, direction: &str, state: &str) {
        self.repo.write(
            "maps/m.yaml",
            &format!(
                "apiVersion: dualwrite/v1\nkind: TableMap\nmetadata: {{ name: m }}\nspec:\n  state: {state}\n  source: {{ endpoint: src, table: {} }}\n  destination: {{ endpoint: dst, table: {} }}\n  direction: {direction}\n  batchSize: 7\n  initialSync: {{ batchSize: 7 }}\n  columns:\n    - {{ source: id, destination: id, key: true }}\n    - {{ source: name, destination: full_name }}\n    - {{ source: amount, destination: amount }}\n    - {{ source: active, destination: active }}\n    - {{ source: updated_at, destination: updated_at }}\n",
                self.src_table, self.dst_table
            ),
        );
    }

    fn reconcile(&self) -> String {
        let mut env = Vec::new();
        if let Some(u) = url(&self.src) {
            env.push((common::env_name("src"), u));
        }
        if let Some(u) = url(&self.dst) {
            env.push((common::env_name("dst"), u));
        }
        let env_refs: Vec<(&str, &str)> =
            env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let run = run_in(self.repo.path(), &["reconcile"], &env_refs);
        assert_eq!(
            run.code, 0,
            "reconcile failed:\n{}{}",
            run.stdout, run.stderr
        );
        std::fs::read_to_string(self.repo.path().join("status/maps/m.yaml")).unwrap()
    }

    async fn insert(
        db: &mut TestDb,
        table: &str,
        name_col: &str,
        ids: std::ops::Range<i64>,
        tag: &str,
    ) {
        for id in ids {
            let active = if id % 2 == 0 { "TRUE" } else { "FALSE" };
            db.plain
                .exec(&format!(
                    "INSERT INTO {table} (id, {name_col}, amount, active, updated_at) VALUES ({id}, '{tag} {id}', {id}.25, {active}, '2026-11-0{} 10:00:00')",
                    1 + id % 9
                ))
                .await;
        }
    }

    async fn rows(db: &TestDb, table: &str, name_col: &str) -> Vec<Vec<String>> {
        let ep = endpoint::connect(&db.spec).await.unwrap();
        let t = TableName::parse(table).unwrap();
        let cols: Vec<String> = ["id", name_col, "amount", "active", "updated_at"]
            .map(String::from)
            .to_vec();
        let mut out = Vec::new();
        let mut after: Option<Vec<Value>> = None;
        loop {
            let page = ep
                .read_snapshot(&t, &cols, &cols[..1], after.as_deref(), 500)
                .await
                .unwrap();
            let Some(last) = page.last() else { break };
            after = Some(vec![last[0].clone()]);
            out.extend(page.into_iter().map(|r| r.iter().map(norm).collect()));
        }
        out
    }

    /// Both tables, row for row.
    async fn assert_same(&self) -> usize {
        let a = Pair::rows(&self.src, &self.src_table, "name").await;
        let b = Pair::rows(&self.dst, &self.dst_table, "full_name").await;
        assert_eq!(
            a, b,
            "source and destination differ ({} -> {})",
            self.src.engine, self.dst.engine
        );
        a.len()
    }

    async fn cleanup(mut self) {
        let (s, d) = (self.src_table.clone(), self.dst_table.clone());
        self.src.drop_table(&s).await;
        self.dst.drop_table(&d).await;
    }
}

/// One text form per value across engines: numbers without trailing zeros, booleans as
/// 0/1, timestamps as `YYYY-MM-DD HH:MM:SS`.
fn norm(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::Bool(b) => u8::from(*b).to_string(),
        Value::Int(i) => i.to_string(),
        Value::Decimal(d) => d.normalize().to_string(),
        Value::Float(f) => f.to_string(),
        Value::Text(t) => t.clone(),
        Value::Timestamp(t) => t.format("%Y-%m-%d %H:%M:%S").to_string(),
        Value::TimestampTz(t) => t.naive_utc().format("%Y-%m-%d %H:%M:%S").to_string(),
        other => format!("{other:?}"),
    }
}

async fn one_way(src: Option<TestDb>, dst: Option<TestDb>) {
    let (Some(src), Some(dst)) = (src, dst) else {
        return;
    };
    let mut p = Pair::new(src, dst, "SourceToDestination").await;
    let st = p.src_table.clone();
    Pair::insert(&mut p.src, &st, "name", 1..41, "initial").await;

    // Initial sync copies everything, in batches of 7.
    let status = p.reconcile();
    assert!(status.contains("phase: Running"), "{status}");
    assert!(status.contains("status: Completed\n"), "{status}");
    assert!(
        status.contains(
            "SourceToDestination:\n        read: 40\n        written: 40\n        errors: 0"
        ),
        "{status}"
    );
    assert_eq!(p.assert_same().await, 40);

    // Live: inserts, updates, deletes, a key change.
    Pair::insert(&mut p.src, &st, "name", 41..46, "live").await;
    p.src
        .plain
        .exec(&format!(
            "UPDATE {st} SET name = 'renamed', amount = 99.5 WHERE id <= 5"
        ))
        .await;
    p.src
        .plain
        .exec(&format!("DELETE FROM {st} WHERE id IN (10, 11)"))
        .await;
    p.src
        .plain
        .exec(&format!("UPDATE {st} SET id = 1000 WHERE id = 20"))
        .await;
    p.reconcile();
    assert_eq!(p.assert_same().await, 43);

    // Paused: changes queue up, nothing is written.
    p.write_map("SourceToDestination", "Paused");
    let status = p.reconcile();
    assert!(status.contains("phase: Paused"), "{status}");
    p.src
        .plain
        .exec(&format!(
            "UPDATE {st} SET name = 'while paused' WHERE id = 30"
        ))
        .await;
    Pair::insert(&mut p.src, &st, "name", 50..53, "paused").await;
    let status = p.reconcile();
    assert!(status.contains("pending: 4"), "{status}");
    let dst_rows = Pair::rows(&p.dst, &p.dst_table, "full_name").await;
    assert_eq!(dst_rows.len(), 43, "nothing may be written while paused");

    // Resumed: the queue drains (catch-up).
    p.write_map("SourceToDestination", "Running");
    let status = p.reconcile();
    assert!(
        status.contains("phase: Running") && status.contains("pending: 0"),
        "{status}"
    );
    assert_eq!(p.assert_same().await, 46);

    // Stopped: capture removed; changes after that are not synced.
    p.write_map("SourceToDestination", "Stopped");
    let status = p.reconcile();
    assert!(status.contains("phase: Stopped"), "{status}");
    Pair::insert(&mut p.src, &st, "name", 60..62, "stopped").await;
    p.reconcile();
    assert_eq!(
        Pair::rows(&p.dst, &p.dst_table, "full_name").await.len(),
        46
    );

    // Running again: a fresh initial sync brings the rows made while stopped.
    p.write_map("SourceToDestination", "Running");
    let status = p.reconcile();
    assert!(status.contains("phase: Running"), "{status}");
    assert_eq!(p.assert_same().await, 48);
    p.cleanup().await;
}

async fn both_ways(src: Option<TestDb>, dst: Option<TestDb>) {
    let (Some(src), Some(dst)) = (src, dst) else {
        return;
    };
    let mut p = Pair::new(src, dst, "Bidirectional").await;
    let (st, dt) = (p.src_table.clone(), p.dst_table.clone());
    Pair::insert(&mut p.src, &st, "name", 1..21, "src").await;
    Pair::insert(&mut p.dst, &dt, "full_name", 15..31, "dst").await;

    // Initial sync: the source is primary for keys on both sides; the rest meet in the middle.
    let status = p.reconcile();
    assert!(status.contains("phase: Running"), "{status}");
    assert_eq!(p.assert_same().await, 30);
    let rows = Pair::rows(&p.src, &st, "name").await;
    assert_eq!(
        rows[14][1], "src 15",
        "the primary side wins for a key on both sides"
    );

    // Changes on either side reach the other, and nothing echoes back.
    p.src
        .plain
        .exec(&format!(
            "UPDATE {st} SET name = 'from source' WHERE id = 2"
        ))
        .await;
    p.dst
        .plain
        .exec(&format!(
            "UPDATE {dt} SET full_name = 'from destination' WHERE id = 25"
        ))
        .await;
    p.dst
        .plain
        .exec(&format!("DELETE FROM {dt} WHERE id = 26"))
        .await;
    Pair::insert(&mut p.dst, &dt, "full_name", 40..42, "dst new").await;
    p.reconcile();
    assert_eq!(p.assert_same().await, 31);
    let synced = |s: &str| {
        s.lines()
            .find(|l| l.trim_start().starts_with("synced:"))
            .unwrap()
            .to_string()
    };
    let before = synced(&p.reconcile());
    let after = synced(&p.reconcile());
    assert_eq!(
        before, after,
        "a pass with no user changes must write nothing (no echo)"
    );

    // Paused both ways, then resumed: both queues drain.
    p.write_map("Bidirectional", "Paused");
    p.reconcile();
    p.src
        .plain
        .exec(&format!(
            "UPDATE {st} SET name = 'queued at source' WHERE id = 3"
        ))
        .await;
    p.dst
        .plain
        .exec(&format!(
            "UPDATE {dt} SET full_name = 'queued at destination' WHERE id = 28"
        ))
        .await;
    let status = p.reconcile();
    assert!(status.contains("pending: 2"), "{status}");
    p.write_map("Bidirectional", "Running");
    p.reconcile();
    assert_eq!(p.assert_same().await, 31);
    p.cleanup().await;
}

macro_rules! pair_tests {
    ($($name:ident: $src:ident -> $dst:ident;)*) => {
        mod one_way_sync {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    with_timeout(one_way(db!($src), db!($dst))).await;
                }
            )*
        }
        mod bidirectional_sync {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    with_timeout(both_ways(db!($src), db!($dst))).await;
                }
            )*
        }
    };
}

macro_rules! db {
    (sqlite) => {
        Some(TestDb::sqlite().await)
    };
    (postgres) => {
        TestDb::postgres().await
    };
    (mysql) => {
        TestDb::mysql().await
    };
}

pair_tests! {
    sqlite_to_sqlite: sqlite -> sqlite;
    sqlite_to_postgres: sqlite -> postgres;
    sqlite_to_mysql: sqlite -> mysql;
    postgres_to_sqlite: postgres -> sqlite;
    postgres_to_postgres: postgres -> postgres;
    postgres_to_mysql: postgres -> mysql;
    mysql_to_sqlite: mysql -> sqlite;
    mysql_to_postgres: mysql -> postgres;
    mysql_to_mysql: mysql -> mysql;
}

/// Raising `initialSync.run` copies the table again; a change queued before the re-run (a
/// delete, which a copy cannot carry) is still applied, and a Paused map stays Paused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerun_initial_sync_keeps_queued_changes_and_the_desired_phase() {
    let mut p = Pair::new(
        TestDb::sqlite().await,
        TestDb::sqlite().await,
        "SourceToDestination",
    )
    .await;
    let st = p.src_table.clone();
    Pair::insert(&mut p.src, &st, "name", 1..11, "row").await;
    p.reconcile();
    p.src
        .plain
        .exec(&format!("DELETE FROM {st} WHERE id = 3"))
        .await;
    let map = std::fs::read_to_string(p.repo.path().join("maps/m.yaml")).unwrap();
    p.repo.write(
        "maps/m.yaml",
        &map.replace(
            "initialSync: { batchSize: 7 }",
            "initialSync: { batchSize: 7, run: 2 }",
        ),
    );
    let status = p.reconcile();
    assert!(status.contains("run: 2\n    status: Completed"), "{status}");
    assert_eq!(
        p.assert_same().await,
        9,
        "the delete queued before the re-run is applied"
    );

    // Re-run while Paused: the copy runs, the map stays Paused.
    p.repo.write(
        "maps/m.yaml",
        &map.replace("state: Running", "state: Paused").replace(
            "initialSync: { batchSize: 7 }",
            "initialSync: { batchSize: 7, run: 3 }",
        ),
    );
    let status = p.reconcile();
    assert!(
        status.contains("run: 3\n    status: Completed") && status.contains("phase: Paused"),
        "{status}"
    );
}
