//! Errors during sync, as a user reads them in status/: a record the destination rejects
//! (ApplicationError with the database's code) while every good record lands; a value that
//! cannot be mapped (TransformError, that record only); a missing column (SchemaError, the map
//! stalls); an unreachable endpoint (NetworkError: nothing lost, caught up once it is back).

mod common;
mod support;

use common::{TestDb, unique_table, with_timeout};
use dualwrite::endpoint::EndpointSpec;
use support::{Repo, run_in};

fn repo_with(dst_yaml: &str, dst_table: &str, extra_columns: &str) -> Repo {
    let repo = Repo::new(&[]);
    repo.write(
        "dualwrite.yaml",
        &format!("apiVersion: dualwrite/v1\nkind: Project\nmetadata: {{ name: e }}\nspec:\n  endpoints:\n    src: {{ sqlite: {{ path: src.db }} }}\n    dst: {dst_yaml}\n"),
    );
    repo.write(
        "maps/m.yaml",
        &format!(
            "apiVersion: dualwrite/v1\nkind: TableMap\nmetadata: {{ name: m }}\nspec:\n  source: {{ endpoint: src, table: items }}\n  destination: {{ endpoint: dst, table: {dst_table} }}\n  batchSize: 50\n  initialSync: {{ batchSize: 50 }}\n  columns:\n    - {{ source: id, destination: id, key: true }}\n    - {{ source: qty, destination: qty }}\n{extra_columns}"
        ),
    );
    let conn = rusqlite::Connection::open(repo.path().join("src.db")).unwrap();
    conn.execute_batch(
        "CREATE TABLE items (id INTEGER PRIMARY KEY, qty INTEGER NOT NULL, unit TEXT);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 120)
         INSERT INTO items SELECT i, CASE WHEN i IN (17, 64, 99) THEN -5 ELSE i END, 'kg' FROM n;",
    )
    .unwrap();
    repo
}

fn status(repo: &Repo) -> String {
    std::fs::read_to_string(repo.path().join("status/maps/m.yaml")).unwrap()
}

async fn rejected_records_are_isolated(mut db: TestDb, code: &str) {
    let table = unique_table("check");
    let int = db.type_name(dualwrite::endpoint::ValueKind::Int);
    db.plain
        .exec(&format!(
            "CREATE TABLE {table} (id {int} PRIMARY KEY, qty {int} NOT NULL CHECK (qty >= 0))"
        ))
        .await;
    let (yaml, url) = match &db.spec {
        EndpointSpec::Postgres { url } => ("{ postgres: { urlFromEnv: DW_ERR_URL } }", url.clone()),
        EndpointSpec::Mysql { url } => ("{ mysql: { urlFromEnv: DW_ERR_URL } }", url.clone()),
        EndpointSpec::Sqlite { .. } => unreachable!(),
    };
    let repo = repo_with(yaml, &table, "");
    let env = [("DW_ERR_URL", url.as_str())];
    let run = run_in(repo.path(), &["reconcile"], &env);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let st = status(&repo);
    assert!(st.contains("status: CompletedWithErrors"), "{st}");
    assert!(
        st.contains("read: 120\n        written: 117\n        errors: 3"),
        "{st}"
    );
    assert!(
        st.contains(
            "open: 3\n    byType:\n      ApplicationError: 3\n    byPhase:\n      InitialSync: 3"
        ),
        "{st}"
    );
    assert!(
        st.contains(&format!("code: \"{code}\"")) || st.contains(&format!("code: {code}")),
        "{st}"
    );
    for id in [17, 64, 99] {
        assert!(
            st.contains(&format!("id: {id}\n")),
            "record {id} must be listed: {st}"
        );
    }
    assert!(!st.contains(&url), "the URL must never reach status");
    // The errored record keeps the row as read, even though the copy never copied it.
    let rows: Vec<String> = rusqlite::Connection::open(repo.path().join(".dualwrite/state.db"))
        .unwrap()
        .prepare("SELECT row FROM errors ORDER BY key")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        rows,
        [
            r#"{"id":17,"qty":-5}"#,
            r#"{"id":64,"qty":-5}"#,
            r#"{"id":99,"qty":-5}"#
        ]
    );

    // Fixing the source row: the next write of that key succeeds and supersedes the error.
    rusqlite::Connection::open(repo.path().join("src.db"))
        .unwrap()
        .execute_batch("UPDATE items SET qty = 5 WHERE id IN (17, 64)")
        .unwrap();
    run_in(repo.path(), &["reconcile"], &env);
    let st = status(&repo);
    assert!(st.contains("open: 1\n"), "{st}");
    db.drop_table(&table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_check_violation_is_an_application_error_with_sqlstate() {
    if let Some(db) = TestDb::postgres().await {
        with_timeout(rejected_records_are_isolated(db, "23514")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_check_violation_is_an_application_error_with_its_code() {
    if let Some(db) = TestDb::mysql().await {
        with_timeout(rejected_records_are_isolated(db, "4025")).await;
    }
}

#[test]
fn unmapped_value_is_a_transform_error_for_that_record_only() {
    let repo = repo_with(
        "{ sqlite: { path: dst.db } }",
        "items",
        "    - { source: unit, destination: unit, valueMap: { kg: KGM } }\n",
    );
    rusqlite::Connection::open(repo.path().join("dst.db"))
        .unwrap()
        .execute_batch(
            "CREATE TABLE items (id INTEGER PRIMARY KEY, qty INTEGER NOT NULL, unit TEXT)",
        )
        .unwrap();
    rusqlite::Connection::open(repo.path().join("src.db"))
        .unwrap()
        .execute_batch("UPDATE items SET unit = 'lb' WHERE id = 3")
        .unwrap();
    let run = repo.run(&["reconcile"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let st = status(&repo);
    assert!(st.contains("TransformError: 1"), "{st}");
    assert!(st.contains("message: "), "{st}");
    assert!(
        st.contains("column unit: value \\\"lb\\\" has no entry in the valueMap")
            || st.contains("column unit: value \"lb\" has no entry in the valueMap"),
        "{st}"
    );
    let dst = rusqlite::Connection::open(repo.path().join("dst.db")).unwrap();
    let n: i64 = dst
        .query_row("SELECT count(*) FROM items WHERE unit = 'KGM'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(n, 119, "every other record lands, its unit mapped");
}

#[test]
fn missing_destination_column_stalls_the_map_with_a_schema_error() {
    let repo = repo_with(
        "{ sqlite: { path: dst.db } }",
        "items",
        "    - { source: unit, destination: unit_code }\n",
    );
    rusqlite::Connection::open(repo.path().join("dst.db"))
        .unwrap()
        .execute_batch("CREATE TABLE items (id INTEGER PRIMARY KEY, qty INTEGER NOT NULL)")
        .unwrap();
    let run = repo.run(&["reconcile"]);
    assert_eq!(run.code, 1, "a map that cannot run fails the pass");
    assert!(
        run.stdout.contains(
            "map m: NotRunning (error: endpoint dst (destination side): column unit_code does not exist in the destination table)"
        ),
        "{}",
        run.stdout
    );
    let st = status(&repo);
    assert!(st.contains("type: Stalled\n    status: \"True\""), "{st}");
    assert!(st.contains("reason: SchemaMismatch"), "{st}");
    assert!(
        st.contains("SchemaError: 1"),
        "a map-level SchemaError event: {st}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_destination_loses_nothing() {
    let Some(mut db) = TestDb::postgres().await else {
        return;
    };
    let EndpointSpec::Postgres { url } = db.spec.clone() else {
        unreachable!()
    };
    let table = unique_table("down");
    db.plain
        .exec(&format!(
            "CREATE TABLE {table} (id bigint PRIMARY KEY, qty bigint NOT NULL)"
        ))
        .await;
    let repo = repo_with("{ postgres: { urlFromEnv: DW_DOWN_URL } }", &table, "");
    rusqlite::Connection::open(repo.path().join("src.db"))
        .unwrap()
        .execute_batch("UPDATE items SET qty = 1")
        .unwrap();
    let good = [("DW_DOWN_URL", url.as_str())];
    assert_eq!(run_in(repo.path(), &["reconcile"], &good).code, 0);

    // The destination goes away (nothing listens on port 9); changes keep coming.
    let down = "postgres://postgres:pw@127.0.0.1:9/test";
    rusqlite::Connection::open(repo.path().join("src.db"))
        .unwrap()
        .execute_batch("UPDATE items SET qty = 2 WHERE id <= 60; DELETE FROM items WHERE id > 100;")
        .unwrap();
    let run = run_in(repo.path(), &["reconcile"], &[("DW_DOWN_URL", down)]);
    assert_eq!(run.code, 1);
    assert!(
        run.stdout
            .contains("map m: Running (error: endpoint dst (destination side): cannot connect"),
        "{}",
        run.stdout
    );
    assert!(
        !run.stdout.contains(":pw@") && !run.stderr.contains(":pw@"),
        "the URL leaked"
    );
    let st = status(&repo);
    assert!(
        st.contains("reason: EndpointUnreachable") && !st.contains(":pw@"),
        "{st}"
    );
    assert!(
        st.contains("NetworkError: 1"),
        "a map-level NetworkError event: {st}"
    );

    // Back up: everything queued arrives.
    assert_eq!(run_in(repo.path(), &["reconcile"], &good).code, 0);
    let client = match &db.plain {
        common::Plain::Postgres(c) => c,
        _ => unreachable!(),
    };
    let rows = client
        .query(&format!("SELECT count(*), sum(qty) FROM {table}"), &[])
        .await
        .unwrap();
    let (n, sum): (i64, rust_decimal::Decimal) = (rows[0].get(0), rows[0].get(1));
    assert_eq!((n, sum), (100, rust_decimal::Decimal::from(60 * 2 + 40)));
    db.drop_table(&table).await;
}

fn bidirectional(policy: &str) -> Repo {
    let repo = repo_with("{ sqlite: { path: dst.db } }", "items", "");
    let map = std::fs::read_to_string(repo.path().join("maps/m.yaml")).unwrap();
    repo.write(
        "maps/m.yaml",
        &map.replace(
            "  batchSize: 50\n",
            &format!("  batchSize: 50\n  direction: Bidirectional\n  conflict: {policy}\n"),
        ),
    );
    rusqlite::Connection::open(repo.path().join("dst.db"))
        .unwrap()
        .execute_batch("CREATE TABLE items (id INTEGER PRIMARY KEY, qty INTEGER NOT NULL)")
        .unwrap();
    assert_eq!(repo.run(&["reconcile"]).code, 0);
    repo
}

fn qty(repo: &Repo, db: &str, id: i64) -> i64 {
    let conn = rusqlite::Connection::open(repo.path().join(db)).unwrap();
    conn.query_row("SELECT qty FROM items WHERE id = ?1", [id], |r| r.get(0))
        .unwrap()
}

#[test]
fn conflicting_changes_follow_the_policy_and_the_loser_is_a_conflict_error() {
    for (policy, winner) in [
        ("SourceWins", 1000),
        ("DestinationWins", 2000),
        ("LastWriteWins", 2000),
    ] {
        let repo = bidirectional(policy);
        rusqlite::Connection::open(repo.path().join("src.db"))
            .unwrap()
            .execute_batch("UPDATE items SET qty = 1000 WHERE id = 5")
            .unwrap();
        // The destination writes later, so LastWriteWins keeps it.
        std::thread::sleep(std::time::Duration::from_millis(20));
        rusqlite::Connection::open(repo.path().join("dst.db"))
            .unwrap()
            .execute_batch("UPDATE items SET qty = 2000 WHERE id = 5")
            .unwrap();
        assert_eq!(repo.run(&["reconcile"]).code, 0);
        assert_eq!(
            (qty(&repo, "src.db", 5), qty(&repo, "dst.db", 5)),
            (winner, winner),
            "{policy}"
        );
        let st = status(&repo);
        assert!(st.contains("ConflictError: 1"), "{policy}: {st}");
        assert!(st.contains("kept the other side's change"), "{st}");
    }
}

/// The initial sync sizes its own transactions (SPEC §1): whatever the size, a refused page
/// is split until each bad record stands alone, so the counts and the errored records are
/// the same at `initialSync.batchSize: 1000` as at the automatic size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_records_are_refused_at_1000_rows_a_transaction_and_at_the_automatic_size() {
    with_timeout(async {
        let Some(mut db) = TestDb::postgres().await else {
            return;
        };
        const ROWS: i64 = 30_000;
        let mut outcomes = Vec::new();
        for size in ["  initialSync: { batchSize: 1000 }\n", ""] {
            let table = unique_table("sized");
            db.plain
                .exec(&format!(
                    "CREATE TABLE {table} (id BIGINT PRIMARY KEY, qty BIGINT NOT NULL CHECK (qty >= 0))"
                ))
                .await;
            let EndpointSpec::Postgres { url } = db.spec.clone() else {
                unreachable!()
            };
            let repo = repo_with("{ postgres: { urlFromEnv: DW_ERR_URL } }", &table, "");
            let map = std::fs::read_to_string(repo.path().join("maps/m.yaml")).unwrap();
            repo.write(
                "maps/m.yaml",
                &map.replace("  initialSync: { batchSize: 50 }\n", size),
            );
            // Every 997th row refused by the CHECK, scattered over many pages.
            rusqlite::Connection::open(repo.path().join("src.db"))
                .unwrap()
                .execute_batch(&format!(
                    "DELETE FROM items;
                     WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS})
                     INSERT INTO items SELECT i, CASE WHEN i % 997 = 0 THEN -1 ELSE i END, 'kg' FROM n;"
                ))
                .unwrap();
            let run = run_in(repo.path(), &["reconcile"], &[("DW_ERR_URL", url.as_str())]);
            assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
            let st = status(&repo);
            let bad = ROWS / 997;
            assert!(
                st.contains(&format!(
                    "read: {ROWS}\n        written: {}\n        errors: {bad}",
                    ROWS - bad
                )),
                "{size:?}: {st}"
            );
            let keys: Vec<String> = rusqlite::Connection::open(repo.path().join(".dualwrite/state.db"))
                .unwrap()
                .prepare("SELECT key FROM errors ORDER BY key")
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let mut count = dualwrite_count(&url, &table).await;
            count -= ROWS - bad;
            assert_eq!(count, 0, "{size:?}: every good row landed");
            outcomes.push(keys);
            db.drop_table(&table).await;
        }
        assert_eq!(outcomes[0].len() as i64, ROWS / 997);
        assert_eq!(outcomes[0], outcomes[1], "the same records refused at both sizes");
    })
    .await;
}

async fn dualwrite_count(url: &str, table: &str) -> i64 {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0)
}
