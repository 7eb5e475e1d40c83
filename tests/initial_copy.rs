//! The SQLite → SQLite initial sync that copies inside the target database (`ATTACH` +
//! `INSERT … SELECT`): the same rows and values as the typed path, the same counts, refused
//! records isolated with SQLite's code, dualwrite's own writes never captured, renamed
//! columns and constants, and a map that needs conversions falling back to typed values.
//! Drives the binary on real files, as a user would. PostgreSQL → PostgreSQL copies pages
//! as binary `COPY` data with the mapping written in SQL, and falls back the same way.

mod common;
mod support;

use rusqlite::Connection;
use support::Repo;

fn project(repo: &Repo) {
    repo.write(
        "dualwrite.yaml",
        "apiVersion: dualwrite/v1\nkind: Project\nmetadata: { name: c }\nspec:\n  endpoints:\n    src: { sqlite: { path: src.db } }\n    dst: { sqlite: { path: dst.db } }\n",
    );
}

fn map(repo: &Repo, name: &str, src_table: &str, dst_table: &str, extra: &str, columns: &str) {
    repo.write(
        &format!("maps/{name}.yaml"),
        &format!(
            "apiVersion: dualwrite/v1\nkind: TableMap\nmetadata: {{ name: {name} }}\nspec:\n  source: {{ endpoint: src, table: {src_table} }}\n  destination: {{ endpoint: dst, table: {dst_table} }}\n  batchSize: 100\n  initialSync: {{ batchSize: 100 }}\n{extra}  columns:\n    - {{ source: id, destination: id, key: true }}\n{columns}"
        ),
    );
}

fn db(repo: &Repo, file: &str) -> Connection {
    let conn = Connection::open(repo.path().join(file)).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .unwrap();
    conn
}

fn reconcile(repo: &Repo) {
    let run = repo.run(&["reconcile"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
}

fn status(repo: &Repo, map: &str) -> String {
    std::fs::read_to_string(repo.path().join(format!("status/maps/{map}.yaml"))).unwrap()
}

/// Every row of `columns` as SQLite stores it: storage class and SQL literal per cell.
fn dump(conn: &Connection, table: &str, columns: &[&str]) -> Vec<Vec<String>> {
    let cells: Vec<String> = columns
        .iter()
        .map(|c| format!("typeof({c}) || ':' || quote({c})"))
        .collect();
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {} FROM {table} ORDER BY id",
            cells.join(", ")
        ))
        .unwrap();
    stmt.query_map([], |r| {
        (0..columns.len())
            .map(|i| r.get::<_, String>(i))
            .collect::<Result<Vec<_>, _>>()
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

fn count(conn: &Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

const TYPES: &str = "id INTEGER PRIMARY KEY, r DOUBLE, t VARCHAR(40), b BLOB, d DATE, \
                     ts DATETIME, n DECIMAL(12,2), flag BOOLEAN, note TEXT, qty INTEGER";
const COLUMNS: [&str; 10] = ["id", "r", "t", "b", "d", "ts", "n", "flag", "note", "qty"];

/// Reals, text, blobs, dates and timestamps as text, decimals, booleans and NULLs, copied
/// in the database (map `fast`) and through typed values (map `typed`, whose `qty` is a
/// decimal column, so integers are converted and the map falls back): both equal the source.
#[test]
fn in_database_copy_writes_what_the_typed_path_writes() {
    let repo = Repo::new(&[]);
    project(&repo);
    let same: String = COLUMNS[1..]
        .iter()
        .map(|c| format!("    - {{ source: {c}, destination: {c} }}\n"))
        .collect();
    map(&repo, "fast", "items", "fast", "", &same);
    map(&repo, "typed", "items", "typed", "", &same);
    db(&repo, "src.db")
        .execute_batch(&format!(
            "CREATE TABLE items ({TYPES});
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2500)
             INSERT INTO items SELECT i,
               CASE i % 5 WHEN 0 THEN NULL WHEN 1 THEN i * 0.1 WHEN 2 THEN -1.5e300 WHEN 3 THEN 1.0 / 3 ELSE i END,
               CASE WHEN i % 7 = 0 THEN NULL ELSE 'näme ' || i || ' ''q''' END,
               CASE WHEN i % 3 = 0 THEN NULL ELSE randomblob(1 + i % 9) END,
               date('2000-01-01', '+' || i || ' days'),
               CASE WHEN i % 2 = 0 THEN strftime('%Y-%m-%d %H:%M:%S', '2026-11-22', '+' || i || ' seconds') || printf('.%03d', 1 + i % 999)
                    ELSE strftime('%Y-%m-%d %H:%M:%S', '2026-11-22', '+' || i || ' minutes') END,
               printf('%.2f', i / 7.0), i % 2, CASE WHEN i % 10 = 0 THEN NULL ELSE 'note' END, i * 3 - 1000
             FROM n;"
        ))
        .unwrap();
    db(&repo, "dst.db")
        .execute_batch(&format!(
            "CREATE TABLE fast ({TYPES}); CREATE TABLE typed ({});",
            TYPES.replace("qty INTEGER", "qty NUMERIC")
        ))
        .unwrap();
    reconcile(&repo);
    for name in ["fast", "typed"] {
        let st = status(&repo, name);
        assert!(st.contains("status: Completed\n"), "{st}");
        assert!(
            st.contains("read: 2500\n        written: 2500\n        errors: 0"),
            "{st}"
        );
    }
    let source = dump(&db(&repo, "src.db"), "items", &COLUMNS);
    let dst = db(&repo, "dst.db");
    assert_eq!(dump(&dst, "typed", &COLUMNS), source, "typed path");
    assert_eq!(dump(&dst, "fast", &COLUMNS), source, "in-database copy");
}

/// A page with rows a CHECK constraint refuses: every good row lands, each bad one is an
/// ApplicationError with SQLite's code, the counts say so, and the error clears once the
/// source row is fixed.
#[test]
fn refused_rows_of_an_in_database_page_are_isolated_with_sqlite_codes() {
    let repo = Repo::new(&[]);
    project(&repo);
    map(
        &repo,
        "m",
        "items",
        "items",
        "",
        "    - { source: qty, destination: qty }\n",
    );
    db(&repo, "src.db")
        .execute_batch(
            "CREATE TABLE items (id INTEGER PRIMARY KEY, qty INTEGER NOT NULL);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1200)
             INSERT INTO items SELECT i, CASE WHEN i IN (17, 640, 1199) THEN -5 ELSE i END FROM n;",
        )
        .unwrap();
    db(&repo, "dst.db")
        .execute_batch(
            "CREATE TABLE items (id INTEGER PRIMARY KEY, qty INTEGER NOT NULL CHECK (qty >= 0))",
        )
        .unwrap();
    reconcile(&repo);
    let st = status(&repo, "m");
    assert!(st.contains("status: CompletedWithErrors"), "{st}");
    assert!(
        st.contains("read: 1200\n        written: 1197\n        errors: 3"),
        "{st}"
    );
    assert!(st.contains("ApplicationError: 3"), "{st}");
    assert!(st.contains("SQLITE_CONSTRAINT_CHECK"), "{st}");
    let dst = db(&repo, "dst.db");
    assert_eq!(count(&dst, "SELECT count(*) FROM items"), 1197);
    assert_eq!(
        count(
            &dst,
            "SELECT count(*) FROM items WHERE id IN (17, 640, 1199)"
        ),
        0
    );
    db(&repo, "src.db")
        .execute_batch("UPDATE items SET qty = 5 WHERE id = 17")
        .unwrap();
    reconcile(&repo);
    assert!(status(&repo, "m").contains("open: 2\n"));
}

/// Both ways: the copies into either side are not captured there, so the changelogs stay
/// empty and a second pass writes nothing.
#[test]
fn in_database_copies_are_not_captured() {
    let repo = Repo::new(&[]);
    project(&repo);
    map(
        &repo,
        "m",
        "items",
        "items",
        "  direction: Bidirectional\n",
        "    - { source: qty, destination: qty }\n",
    );
    for (file, from, to) in [("src.db", 1, 100), ("dst.db", 90, 130)] {
        db(&repo, file)
            .execute_batch(&format!(
                "CREATE TABLE items (id INTEGER PRIMARY KEY, qty INTEGER NOT NULL);
                 WITH RECURSIVE n(i) AS (SELECT {from} UNION ALL SELECT i + 1 FROM n WHERE i < {to})
                 INSERT INTO items SELECT i, i * 10 FROM n;"
            ))
            .unwrap();
    }
    reconcile(&repo);
    let st = status(&repo, "m");
    assert!(
        st.contains("SourceToDestination:\n        read: 100\n        written: 100\n"),
        "{st}"
    );
    assert!(
        st.contains("DestinationToSource:\n        read: 130\n        written: 30\n"),
        "{st}"
    );
    for file in ["src.db", "dst.db"] {
        let conn = db(&repo, file);
        assert_eq!(count(&conn, "SELECT count(*) FROM items"), 130, "{file}");
        assert_eq!(
            count(&conn, "SELECT count(*) FROM _dualwrite_changelog"),
            0,
            "{file}: dualwrite's own writes were captured"
        );
        assert_eq!(count(&conn, "SELECT count(*) FROM _dualwrite_suppress"), 0);
    }
    let synced = |s: String| {
        s.lines()
            .find(|l| l.trim_start().starts_with("synced:"))
            .unwrap()
            .to_string()
    };
    let before = synced(status(&repo, "m"));
    reconcile(&repo);
    assert_eq!(before, synced(status(&repo, "m")), "something echoed");
    // An application's change is still captured and synced.
    db(&repo, "dst.db")
        .execute_batch("UPDATE items SET qty = -1 WHERE id = 3")
        .unwrap();
    reconcile(&repo);
    assert_eq!(
        count(&db(&repo, "src.db"), "SELECT qty FROM items WHERE id = 3"),
        -1
    );
}

/// A renamed column and a constant `default`, into a table in the same file as the source.
#[test]
fn renamed_columns_and_constants_are_copied_in_the_database() {
    let repo = Repo::new(&[]);
    repo.write(
        "dualwrite.yaml",
        "apiVersion: dualwrite/v1\nkind: Project\nmetadata: { name: c }\nspec:\n  endpoints:\n    src: { sqlite: { path: one.db } }\n    dst: { sqlite: { path: one.db } }\n",
    );
    map(
        &repo,
        "m",
        "customers",
        "account",
        "",
        "    - { source: name, destination: full_name }\n    - { destination: origin, default: erp }\n    - { destination: tier, default: 2 }\n",
    );
    db(&repo, "one.db")
        .execute_batch(
            "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT);
             CREATE TABLE account (id INTEGER PRIMARY KEY, full_name TEXT, origin TEXT, tier DECIMAL(4,1));
             INSERT INTO account VALUES (2, 'stale', 'old', 9);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300)
             INSERT INTO customers SELECT i, CASE WHEN i = 5 THEN NULL ELSE 'c' || i END FROM n;",
        )
        .unwrap();
    reconcile(&repo);
    let st = status(&repo, "m");
    assert!(
        st.contains("read: 300\n        written: 300\n        errors: 0"),
        "{st}"
    );
    let conn = db(&repo, "one.db");
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM account a JOIN customers c USING (id)
             WHERE a.full_name IS c.name AND a.origin = 'erp' AND a.tier = 2"
        ),
        300
    );
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM account WHERE full_name IS NULL"
        ),
        1
    );
}

/// The field's everyday mapping copied in the database: a `valueMap` over integers and one
/// over text (a `CASE` each), renamed columns, a constant. The map `fast` shows it took the
/// in-database path (a text value its INTEGER column holds arrives as stored, which the
/// typed path would refuse). Values without an entry never become a silent NULL: each fails
/// alone as a TransformError, and the rows land exactly as through typed values (the map
/// `gaps_typed`, whose NUMERIC `quantity` makes it convert in Rust).
#[test]
fn value_maps_are_copied_in_the_database_and_values_without_an_entry_fail_alone() {
    let repo = Repo::new(&[]);
    project(&repo);
    let columns = "    - { source: category, destination: code, valueMap: { \"0\": A, \"1\": B, \"2\": C, \"3\": D } }\n    - { source: state, destination: state_no, valueMap: { open: 1, closed: 2 } }\n    - { source: qty, destination: quantity }\n    - { destination: origin, default: crm }\n";
    map(&repo, "fast", "items", "fast", "", columns);
    map(&repo, "gaps", "gaps", "gaps", "", columns);
    map(&repo, "gaps-typed", "gaps", "gaps_typed", "", columns);
    let rows = |table: &str, unmapped: &str| {
        format!(
            "CREATE TABLE {table} (id INTEGER PRIMARY KEY, category INTEGER, state TEXT, qty INTEGER);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2500)
             INSERT INTO {table} SELECT i,
               CASE WHEN i IN ({unmapped}) THEN 9 WHEN i % 11 = 0 THEN NULL ELSE i % 4 END,
               CASE i % 3 WHEN 0 THEN 'open' WHEN 1 THEN 'closed' ELSE NULL END,
               i * 2
             FROM n;"
        )
    };
    db(&repo, "src.db")
        .execute_batch(&format!(
            "{} {} UPDATE items SET qty = 'x' WHERE id = 5;",
            rows("items", "0"),
            rows("gaps", "17, 1640")
        ))
        .unwrap();
    let target =
        "id INTEGER PRIMARY KEY, origin TEXT, quantity INTEGER, state_no INTEGER, code TEXT";
    db(&repo, "dst.db")
        .execute_batch(&format!(
            "CREATE TABLE fast ({target}); CREATE TABLE gaps ({target}); CREATE TABLE gaps_typed ({});",
            target.replace("quantity INTEGER", "quantity NUMERIC")
        ))
        .unwrap();
    reconcile(&repo);

    let st = status(&repo, "fast");
    assert!(
        st.contains("read: 2500\n        written: 2500\n        errors: 0"),
        "{st}"
    );
    let dst = db(&repo, "dst.db");
    assert_eq!(
        dump(&dst, "fast", &["id", "quantity"])[4],
        ["integer:5", "text:'x'"],
        "the text in an INTEGER column arrives as stored: the in-database path"
    );
    let expected = "SELECT count(*) FROM fast f JOIN src.items s USING (id) WHERE
          f.code IS (CASE s.category WHEN 0 THEN 'A' WHEN 1 THEN 'B' WHEN 2 THEN 'C' WHEN 3 THEN 'D' END)
          AND f.state_no IS (CASE s.state WHEN 'open' THEN 1 WHEN 'closed' THEN 2 END)
          AND f.quantity IS s.qty AND f.origin = 'crm'";
    dst.execute(
        "ATTACH DATABASE ?1 AS src",
        [repo.path().join("src.db").to_str().unwrap()],
    )
    .unwrap();
    assert_eq!(count(&dst, expected), 2500);
    assert_eq!(
        count(&dst, "SELECT count(*) FROM fast WHERE code IS NULL"),
        227,
        "NULL stays NULL"
    );

    for name in ["gaps", "gaps-typed"] {
        let st = status(&repo, name);
        assert!(
            st.contains("read: 2500\n        written: 2498\n        errors: 2"),
            "{name}: {st}"
        );
        assert!(st.contains("TransformError: 2"), "{name}: {st}");
    }
    let errors = repo.run(&["errors", "list", "--map", "gaps"]);
    assert!(
        errors.stdout.contains("has no entry in the valueMap"),
        "{}",
        errors.stdout
    );
    let columns = ["id", "code", "state_no", "quantity", "origin"];
    let fast = dump(&dst, "gaps", &columns);
    assert_eq!(fast.len(), 2498);
    assert_eq!(
        fast.iter()
            .map(|r| r
                .iter()
                .map(|c| c.replace("real:", "integer:").replace(".0", ""))
                .collect())
            .collect::<Vec<Vec<String>>>(),
        dump(&dst, "gaps_typed", &columns)
            .iter()
            .map(|r| r
                .iter()
                .map(|c| c.replace("real:", "integer:").replace(".0", ""))
                .collect())
            .collect::<Vec<Vec<String>>>(),
        "in the database and through typed values"
    );
}

/// PostgreSQL → PostgreSQL: pages leave the source as binary `COPY` data with the mapping
/// written in SQL (value maps over integers and text as a `CASE`, a renamed column, a
/// constant, a narrower integer widened, the target's columns in another order) and enter
/// the target as they are. A value without a value-map entry fails its page on the source
/// and a record the target refuses fails its page there: each page is then written through
/// typed values, so every other row lands and each bad record fails alone. The same rows
/// and errors as the map `typed`, whose NUMERIC `quantity` makes it convert in Rust.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_pages_are_copied_as_binary_data_and_bad_records_fail_alone() {
    let Some(mut pg) = common::TestDb::postgres().await else {
        return;
    };
    let dualwrite::endpoint::EndpointSpec::Postgres { url } = pg.spec.clone() else {
        unreachable!()
    };
    let src = common::unique_table("bin_src");
    let (fast, typed) = (
        common::unique_table("bin_dst"),
        common::unique_table("bin_typed"),
    );
    for t in [&src, &fast, &typed] {
        pg.on_drop(format!("DROP TABLE IF EXISTS {t}"));
    }
    // 40,000 rows: the automatic pages of 10,000 hold an unmapped value (ids 17 and 16400),
    // a refused record (34000: a negative quantity) and nothing wrong (20001..30000, where
    // 25000's timestamp is `infinity`: the binary page carries it, typed values cannot).
    pg.plain
        .exec(&format!(
            "CREATE TABLE {src} (id bigint PRIMARY KEY, category integer, state varchar(10),
               qty integer, amount numeric(12,2), at timestamp(3), note text);
             INSERT INTO {src} SELECT g,
               CASE WHEN g IN (17, 16400) THEN 9 WHEN g % 11 = 0 THEN NULL ELSE g % 4 END,
               CASE g % 3 WHEN 0 THEN 'open' WHEN 1 THEN 'closed' ELSE NULL END,
               CASE WHEN g = 34000 THEN -1 ELSE g * 2 END,
               ((g * 37) % 100000) / 100.0,
               CASE WHEN g = 25000 THEN 'infinity' ELSE timestamp '2020-01-01' + g * interval '1.5 second' END,
               CASE WHEN g % 10 = 0 THEN NULL ELSE E'note ' || g || E' \\\\ '' \\t ü' END
             FROM generate_series(1, 40000) g;
             CREATE TABLE {fast} (id bigint PRIMARY KEY, origin text NOT NULL, note text,
               at timestamp(3), amount numeric(12,2), quantity bigint CHECK (quantity >= 0),
               state_no smallint, code varchar(1));
             CREATE TABLE {typed} (id bigint PRIMARY KEY, origin text NOT NULL, note text,
               at timestamp(3), amount numeric(12,2), quantity numeric CHECK (quantity >= 0),
               state_no smallint, code varchar(1));"
        ))
        .await;
    let repo = Repo::new(&[]);
    repo.write(
        "dualwrite.yaml",
        "apiVersion: dualwrite/v1\nkind: Project\nmetadata: { name: c }\nspec:\n  endpoints:\n    src: { postgres: { urlFromEnv: DW_BIN_PG } }\n    dst: { postgres: { urlFromEnv: DW_BIN_PG } }\n",
    );
    let columns = "    - { source: category, destination: code, valueMap: { \"0\": A, \"1\": B, \"2\": C, \"3\": D } }\n    - { source: state, destination: state_no, valueMap: { open: 1, closed: 2 } }\n    - { source: qty, destination: quantity }\n    - { source: amount, destination: amount }\n    - { source: at, destination: at }\n    - { source: note, destination: note }\n    - { destination: origin, default: crm }\n";
    for (name, dst) in [("fast", &fast), ("typed", &typed)] {
        repo.write(
            &format!("maps/{name}.yaml"),
            &format!(
                "apiVersion: dualwrite/v1\nkind: TableMap\nmetadata: {{ name: {name} }}\nspec:\n  source: {{ endpoint: src, table: {src} }}\n  destination: {{ endpoint: dst, table: {dst} }}\n  columns:\n    - {{ source: id, destination: id, key: true }}\n{columns}"
            ),
        );
    }
    let env = [("DW_BIN_PG", url.as_str())];
    let run = support::run_in(repo.path(), &["reconcile"], &env);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);

    for (name, written, errors, transform) in [("fast", 39997, 3, 2), ("typed", 39996, 4, 3)] {
        let st = status(&repo, name);
        assert!(
            st.contains(&format!(
                "read: 40000\n        written: {written}\n        errors: {errors}"
            )),
            "{name}: {st}"
        );
        assert!(
            st.contains(&format!("TransformError: {transform}")),
            "{name}: {st}"
        );
        assert!(st.contains("ApplicationError: 1"), "{name}: {st}");
    }
    let client = match &pg.plain {
        common::Plain::Postgres(c) => c,
        _ => unreachable!(),
    };
    let count = |sql: String| async move {
        let row = client.query_one(&sql, &[]).await.unwrap();
        row.get::<_, i64>(0)
    };
    let expected = format!(
        "SELECT count(*) FROM {fast} f JOIN {src} s USING (id) WHERE
           f.code IS NOT DISTINCT FROM (CASE s.category WHEN 0 THEN 'A' WHEN 1 THEN 'B' WHEN 2 THEN 'C' WHEN 3 THEN 'D' END)
           AND f.state_no IS NOT DISTINCT FROM (CASE s.state WHEN 'open' THEN 1 WHEN 'closed' THEN 2 END)
           AND f.quantity = s.qty AND f.amount = s.amount AND f.at = s.at
           AND f.note IS NOT DISTINCT FROM s.note AND f.origin = 'crm'"
    );
    assert_eq!(count(expected).await, 39997);
    assert_eq!(
        count(format!(
            "SELECT count(*) FROM {src} WHERE id IN (17, 16400, 34000) AND id NOT IN (SELECT id FROM {fast})"
        ))
        .await,
        3,
        "each bad record fails alone"
    );
    let differ = format!(
        "SELECT count(*) FROM ((SELECT id, origin, note, at, amount, quantity::numeric, state_no, code FROM {fast}
           WHERE id <> 25000 EXCEPT SELECT * FROM {typed}) UNION ALL (SELECT * FROM {typed}
           EXCEPT SELECT id, origin, note, at, amount, quantity::numeric, state_no, code FROM {fast})) d"
    );
    assert_eq!(
        count(differ).await,
        0,
        "the same rows as through typed values"
    );
    let errors = support::run_in(repo.path(), &["errors", "list", "--map", "fast"], &env);
    assert!(
        errors.stdout.contains("has no entry in the valueMap"),
        "{}",
        errors.stdout
    );
}
