//! Endpoints against real databases: SQLite always, PostgreSQL and MariaDB when reachable.
//! Each test runs its scenario on every available engine and asserts what a user would see.

mod common;

use chrono::{NaiveDate, NaiveDateTime};
use common::{TestDb, unique_table, with_timeout};
use dualwrite::endpoint::{
    ChangeOp, Endpoint, EndpointError, EndpointSpec, TableName, Value, ValueKind, WriteErrorClass,
    WriteOp, connect,
};

fn names(cols: &[&str]) -> Vec<String> {
    cols.iter().map(|c| c.to_string()).collect()
}

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

/// Creates `orders(region text, id int, qty int CHECK (qty >= 0), note text, PK(region, id))`.
async fn create_orders(db: &mut TestDb, table: &str) {
    db.on_drop(format!("DROP TABLE IF EXISTS {table}"));
    let (t, i) = (db.type_name(ValueKind::Text), db.type_name(ValueKind::Int));
    db.plain
        .exec(&format!(
            "CREATE TABLE {table} (region {t} NOT NULL, id {i} NOT NULL, qty {i} CHECK (qty >= 0), note {t}, \
             PRIMARY KEY (region, id))"
        ))
        .await;
}

async fn open(db: &TestDb) -> Box<dyn Endpoint> {
    connect(&db.spec)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", db.engine))
}

fn order(region: &str, id: i64, qty: i64, note: &str) -> Vec<Value> {
    vec![text(region), Value::Int(id), Value::Int(qty), text(note)]
}

const ORDER_COLS: [&str; 4] = ["region", "id", "qty", "note"];
const ORDER_KEY: [&str; 2] = ["region", "id"];

#[tokio::test]
async fn introspect_reports_columns_kinds_and_composite_key() {
    with_timeout(async {
        for mut db in TestDb::all().await {
            let table = unique_table("introspect");
            create_orders(&mut db, &table).await;
            let ep = open(&db).await;
            let info = ep
                .introspect(&TableName::parse(&table).unwrap())
                .await
                .unwrap();
            let cols: Vec<(&str, ValueKind)> = info
                .columns
                .iter()
                .map(|c| (c.name.as_str(), c.kind))
                .collect();
            assert_eq!(
                cols,
                vec![
                    ("region", ValueKind::Text),
                    ("id", ValueKind::Int),
                    ("qty", ValueKind::Int),
                    ("note", ValueKind::Text)
                ],
                "{}",
                db.engine
            );
            assert_eq!(info.primary_key, names(&ORDER_KEY), "{}", db.engine);
            assert!(
                !info.columns[0].nullable && info.columns[3].nullable,
                "{}",
                db.engine
            );

            let missing = ep
                .introspect(&TableName::parse(&unique_table("missing")).unwrap())
                .await;
            let err = missing.unwrap_err();
            assert!(
                matches!(err, EndpointError::TableNotFound { .. }),
                "{}: {err}",
                db.engine
            );
            assert_eq!(err.class(), WriteErrorClass::Schema);
            db.drop_table(&table).await;
        }
    })
    .await;
}

#[tokio::test]
async fn snapshot_pages_follow_key_order_over_composite_key() {
    with_timeout(async {
        for mut db in TestDb::all().await {
            let table = unique_table("snapshot");
            create_orders(&mut db, &table).await;
            db.plain
                .exec(&format!(
                    "INSERT INTO {table} (region, id, qty, note) VALUES ('b', 2, 1, 'x'), ('a', 10, 1, 'x'), \
                     ('b', 1, 1, 'x'), ('a', 2, 1, 'x'), ('c', 1, 1, 'x')"
                ))
                .await;
            let ep = open(&db).await;
            let t = TableName::parse(&table).unwrap();
            let (cols, key) = (names(&["region", "id"]), names(&ORDER_KEY));
            let mut seen = Vec::new();
            let mut after: Option<Vec<Value>> = None;
            loop {
                let page = ep.read_snapshot(&t, &cols, &key, after.as_deref(), 2).await.unwrap();
                assert!(page.len() <= 2);
                if page.is_empty() {
                    break;
                }
                after = Some(page.last().unwrap().clone());
                seen.extend(page);
            }
            let expected: Vec<Vec<Value>> = [("a", 2), ("a", 10), ("b", 1), ("b", 2), ("c", 1)]
                .iter()
                .map(|(r, i)| vec![text(r), Value::Int(*i)])
                .collect();
            assert_eq!(seen, expected, "{}", db.engine);
            db.drop_table(&table).await;
        }
    })
    .await;
}

/// Reads `table` page by page (`limit` rows each), feeding each page's last key back.
async fn read_in_pages(
    ep: &dyn Endpoint,
    t: &TableName,
    cols: &[String],
    key: &[String],
    limit: usize,
) -> Vec<Vec<Value>> {
    let mut seen = Vec::new();
    let mut after: Option<Vec<Value>> = None;
    loop {
        let page = ep
            .read_snapshot(t, cols, key, after.as_deref(), limit)
            .await
            .unwrap();
        assert!(page.len() <= limit);
        let Some(last) = page.last() else { break };
        after = Some(last[..key.len()].to_vec());
        seen.extend(page);
    }
    seen
}

/// Resuming after a key must neither skip nor repeat a row, whatever the key's values hold:
/// quotes, backslashes, non-ASCII text, decimals, dates and timestamps.
#[tokio::test]
async fn snapshot_pages_resume_after_keys_with_quotes_backslashes_and_every_key_type() {
    with_timeout(async {
        for mut db in TestDb::all().await {
            let table = unique_table("resume");
            let kinds = [
                ValueKind::Text,
                ValueKind::Decimal,
                ValueKind::Date,
                ValueKind::Timestamp,
            ];
            let defs: Vec<String> = kinds
                .iter()
                .enumerate()
                .map(|(i, k)| format!("k{i} {} NOT NULL", db.type_name(*k)))
                .collect();
            db.on_drop(format!("DROP TABLE IF EXISTS {table}"));
            db.plain
                .exec(&format!(
                    "CREATE TABLE {table} ({}, v {}, PRIMARY KEY (k0, k1, k2, k3))",
                    defs.join(", "),
                    db.type_name(ValueKind::Int)
                ))
                .await;
            let ep = open(&db).await;
            let t = TableName::parse(&table).unwrap();
            let cols = names(&["k0", "k1", "k2", "k3", "v"]);
            let key = names(&["k0", "k1", "k2", "k3"]);
            let date = |d: u32| Value::Date(NaiveDate::from_ymd_opt(2026, 11, d).unwrap());
            let ts = |s: &str| {
                Value::Timestamp(NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").unwrap())
            };
            let dec = |s: &str| Value::Decimal(s.parse().unwrap());
            let texts = ["O'Brien", "back\\slash", "a\\'b''c", "Grüße 日本", "x"];
            let mut ops = Vec::new();
            for (i, s) in texts.iter().enumerate() {
                for (j, d) in ["-1.50", "0.05", "12.50"].iter().enumerate() {
                    let v = (i * 10 + j) as i64;
                    ops.push(WriteOp::Upsert(vec![
                        text(s),
                        dec(d),
                        date(1 + j as u32),
                        ts("2026-11-22 10:15:00.250"),
                        Value::Int(v),
                    ]));
                    ops.push(WriteOp::Upsert(vec![
                        text(s),
                        dec(d),
                        date(1 + j as u32),
                        ts("2026-11-22 10:15:01"),
                        Value::Int(v + 100),
                    ]));
                }
            }
            ep.write_batch(&t, &cols, &key, &ops, None).await.unwrap();
            let all = ep.read_snapshot(&t, &cols, &key, None, 1000).await.unwrap();
            assert_eq!(all.len(), ops.len(), "{}", db.engine);
            for limit in [1, 2, 7] {
                let paged = read_in_pages(ep.as_ref(), &t, &cols, &key, limit).await;
                assert_eq!(paged, all, "{} in pages of {limit}", db.engine);
            }
            db.drop_table(&table).await;
        }
    })
    .await;
}

/// PostgreSQL writes the after-key into its paged `COPY` as literals: every key type,
/// including dates before the common era, bytea, uuid (read as text) and doubles, must
/// resume exactly, also in a session with `standard_conforming_strings` off.
#[tokio::test]
async fn postgres_snapshot_pages_resume_after_keys_of_every_type() {
    with_timeout(async {
        let Some(mut db) = TestDb::postgres().await else {
            return;
        };
        let table = unique_table("pgresume");
        db.on_drop(format!("DROP TABLE IF EXISTS {table}"));
        db.plain
            .exec(&format!(
                "CREATE TABLE {table} (t text, b bytea, tz timestamptz, d date, f double precision,                  u uuid, ok boolean, j jsonb, v int, PRIMARY KEY (t, b, tz, d, f, u, ok, j));                  INSERT INTO {table} SELECT t, b, tz, d, f, u, ok, j, 1 FROM                  unnest(ARRAY['it''s', E'a\\\\b', '']) t,                  unnest(ARRAY['\\x00'::bytea, '\\x27ff']) b,                  unnest(ARRAY['0044-03-15 12:00:00.5+00 BC'::timestamptz, '2026-11-22 10:15:00.123456+02']) tz,                  unnest(ARRAY['0001-01-01 BC'::date, '10000-01-01']) d,                  unnest(ARRAY[0.1, -0.0, 1e300, 'NaN', '-Infinity']::float8[]) f,                  unnest(ARRAY['6f1c2a5e-8d4b-4c1a-9a7e-0b7f3d2e1c00'::uuid]) u,                  unnest(ARRAY[false, true]) ok,                  unnest(ARRAY['{{\"a\": \"it''s\"}}'::jsonb]) j"
            ))
            .await;
        let url = match &db.spec {
            EndpointSpec::Postgres { url } => url.clone(),
            _ => unreachable!(),
        };
        let separator = if url.contains('?') { '&' } else { '?' };
        let off = EndpointSpec::Postgres {
            url: format!("{url}{separator}options=-c%20standard_conforming_strings%3Doff"),
        };
        let t = TableName::parse(&table).unwrap();
        let cols = names(&["t", "b", "tz", "d", "f", "u", "ok", "j", "v"]);
        let key = names(&["t", "b", "tz", "d", "f", "u", "ok", "j"]);
        for spec in [&db.spec, &off] {
            let ep = connect(spec).await.unwrap();
            let all = ep.read_snapshot(&t, &cols, &key, None, 10_000).await.unwrap();
            assert_eq!(all.len(), 3 * 2 * 2 * 2 * 5 * 2);
            // NaN is not equal to itself: compare the rows as printed.
            let all = format!("{all:?}");
            for limit in [1, 3] {
                let paged = read_in_pages(ep.as_ref(), &t, &cols, &key, limit).await;
                assert!(format!("{paged:?}") == all, "pages of {limit}: {paged:?}");
            }
        }
        db.drop_table(&table).await;
    })
    .await;
}

#[tokio::test]
async fn capture_records_inserts_updates_deletes_and_key_changes() {
    with_timeout(async {
        for mut db in TestDb::all().await {
            let table = unique_table("capture");
            create_orders(&mut db, &table).await;
            let ep = open(&db).await;
            let t = TableName::parse(&table).unwrap();
            assert!(!ep.capture_installed(&t).await.unwrap(), "{}", db.engine);
            ep.install_capture(&t).await.unwrap();
            ep.install_capture(&t).await.unwrap(); // idempotent
            assert!(ep.capture_installed(&t).await.unwrap(), "{}", db.engine);
            let start = ep.max_change_seq(&t).await.unwrap();

            db.plain
                .exec(&format!(
                    "INSERT INTO {table} (region, id, qty, note) VALUES ('eu', 1, 5, 'new')"
                ))
                .await;
            db.plain
                .exec(&format!("UPDATE {table} SET qty = 6 WHERE id = 1"))
                .await;
            db.plain
                .exec(&format!("UPDATE {table} SET id = 2 WHERE id = 1"))
                .await;
            db.plain
                .exec(&format!("DELETE FROM {table} WHERE id = 2"))
                .await;

            let changes = ep.read_changes(&t, start, 100).await.unwrap();
            let seen: Vec<(ChangeOp, Vec<Value>)> =
                changes.iter().map(|c| (c.op, c.key.clone())).collect();
            let key = |id| vec![text("eu"), Value::Int(id)];
            assert_eq!(
                seen,
                vec![
                    (ChangeOp::Upsert, key(1)),
                    (ChangeOp::Upsert, key(1)),
                    (ChangeOp::Delete, key(1)),
                    (ChangeOp::Upsert, key(2)),
                    (ChangeOp::Delete, key(2)),
                ],
                "{}",
                db.engine
            );
            assert!(changes.windows(2).all(|w| w[0].seq < w[1].seq));
            let age = chrono::Utc::now() - changes[0].changed_at;
            assert!(
                age.num_seconds().abs() < 60,
                "{}: changed_at {}",
                db.engine,
                changes[0].changed_at
            );

            // Paging through the changelog with a cursor.
            let first_two = ep.read_changes(&t, start, 2).await.unwrap();
            let rest = ep.read_changes(&t, first_two[1].seq, 100).await.unwrap();
            assert_eq!(first_two.len() + rest.len(), 5);

            assert_eq!(ep.max_change_seq(&t).await.unwrap(), changes[4].seq);
            assert_eq!(ep.changelog_trim(&t, changes[4].seq).await.unwrap(), 5);
            assert!(ep.read_changes(&t, start, 100).await.unwrap().is_empty());

            ep.remove_capture(&t).await.unwrap();
            db.drop_table(&table).await;
        }
    })
    .await;
}

#[tokio::test]
async fn own_writes_are_not_captured_but_others_still_are() {
    with_timeout(async {
        for mut db in TestDb::all().await {
            let table = unique_table("echo");
            create_orders(&mut db, &table).await;
            let ep = open(&db).await;
            let t = TableName::parse(&table).unwrap();
            ep.install_capture(&t).await.unwrap();
            let start = ep.max_change_seq(&t).await.unwrap();
            let (cols, key) = (names(&ORDER_COLS), names(&ORDER_KEY));
            let ops = vec![
                WriteOp::Upsert(order("eu", 1, 1, "a")),
                WriteOp::Upsert(order("eu", 2, 1, "b")),
                WriteOp::Upsert(order("eu", 1, 7, "a2")),
                WriteOp::Delete(vec![text("eu"), Value::Int(2)]),
            ];
            ep.write_batch(&t, &cols, &key, &ops, None).await.unwrap();
            ep.write_batch(&t, &cols, &key, &ops, None).await.unwrap(); // idempotent
            assert!(
                ep.read_changes(&t, start, 100).await.unwrap().is_empty(),
                "{}: echo captured",
                db.engine
            );
            let rows = ep.read_snapshot(&t, &cols, &key, None, 100).await.unwrap();
            assert_eq!(rows, vec![order("eu", 1, 7, "a2")], "{}", db.engine);

            // The suppression is scoped to dualwrite's own transaction.
            db.plain
                .exec(&format!("UPDATE {table} SET qty = 8 WHERE id = 1"))
                .await;
            let changes = ep.read_changes(&t, start, 100).await.unwrap();
            assert_eq!(changes.len(), 1, "{}", db.engine);
            ep.changelog_trim(&t, changes[0].seq).await.unwrap();
            ep.remove_capture(&t).await.unwrap();
            db.drop_table(&table).await;
        }
    })
    .await;
}

#[tokio::test]
async fn check_violation_is_an_application_error_and_rolls_back_the_batch() {
    with_timeout(async {
        for mut db in TestDb::all().await {
            let table = unique_table("check");
            create_orders(&mut db, &table).await;
            let ep = open(&db).await;
            let t = TableName::parse(&table).unwrap();
            let (cols, key) = (names(&ORDER_COLS), names(&ORDER_KEY));
            let ops = vec![
                WriteOp::Upsert(order("eu", 1, 1, "fine")),
                WriteOp::Upsert(order("eu", 2, -5, "negative")),
            ];
            let err = ep
                .write_batch(&t, &cols, &key, &ops, None)
                .await
                .unwrap_err();
            assert_eq!(
                err.class,
                WriteErrorClass::Application,
                "{}: {err}",
                db.engine
            );
            let expected_code = match db.engine {
                "sqlite" => "SQLITE_CONSTRAINT_CHECK",
                "postgres" => "23514",
                _ => "4025",
            };
            let code = err.code.as_deref().unwrap_or_default();
            assert!(
                code == expected_code || code == "3819",
                "{}: code {code:?}",
                db.engine
            );
            assert!(!err.to_string().contains("://"), "{}: {err}", db.engine);
            let rows = ep.read_snapshot(&t, &cols, &key, None, 100).await.unwrap();
            assert!(
                rows.is_empty(),
                "{}: batch not rolled back: {rows:?}",
                db.engine
            );

            // A value the column cannot hold is a Transform error, before any write.
            let bad = vec![WriteOp::Upsert(vec![
                text("eu"),
                text("three"),
                Value::Int(1),
                Value::Null,
            ])];
            let err = ep
                .write_batch(&t, &cols, &key, &bad, None)
                .await
                .unwrap_err();
            assert_eq!(
                err.class,
                WriteErrorClass::Transform,
                "{}: {err}",
                db.engine
            );
            assert!(err.message.contains("column id"), "{}: {err}", db.engine);

            // A column that does not exist is a Schema error.
            let err = ep
                .write_batch(&t, &names(&["region", "id", "nope"]), &key, &[], None)
                .await
                .unwrap_err();
            assert_eq!(err.class, WriteErrorClass::Schema, "{}: {err}", db.engine);
            db.drop_table(&table).await;
        }
    })
    .await;
}

#[tokio::test]
async fn fetch_rows_returns_current_rows_and_skips_missing_keys() {
    with_timeout(async {
        for mut db in TestDb::all().await {
            let table = unique_table("fetch");
            create_orders(&mut db, &table).await;
            db.plain
                .exec(&format!(
                    "INSERT INTO {table} (region, id, qty, note) VALUES ('eu', 1, 1, 'a'), ('eu', 2, 2, NULL)"
                ))
                .await;
            let ep = open(&db).await;
            let t = TableName::parse(&table).unwrap();
            let keys = vec![
                vec![text("eu"), Value::Int(2)],
                vec![text("us"), Value::Int(1)],
                vec![text("eu"), Value::Int(1)],
            ];
            let mut rows = ep
                .fetch_rows(&t, &names(&ORDER_COLS), &names(&ORDER_KEY), &keys)
                .await
                .unwrap();
            rows.sort_by_key(|r| format!("{:?}", r[1]));
            assert_eq!(
                rows,
                vec![
                    order("eu", 1, 1, "a"),
                    vec![text("eu"), Value::Int(2), Value::Int(2), Value::Null]
                ],
                "{}",
                db.engine
            );
            db.drop_table(&table).await;
        }
    })
    .await;
}

#[tokio::test]
async fn two_readers_share_one_capture() {
    with_timeout(async {
        for mut db in TestDb::all().await {
            let table = unique_table("shared");
            create_orders(&mut db, &table).await;
            let t = TableName::parse(&table).unwrap();
            // Two maps reading the same table, each with its own endpoint and cursor.
            let (a, b) = (open(&db).await, open(&db).await);
            a.install_capture(&t).await.unwrap();
            b.install_capture(&t).await.unwrap();
            let start = a.max_change_seq(&t).await.unwrap();
            db.plain
                .exec(&format!(
                    "INSERT INTO {table} (region, id, qty, note) VALUES ('eu', 1, 1, 'a')"
                ))
                .await;
            let seen_a = a.read_changes(&t, start, 100).await.unwrap();
            db.plain
                .exec(&format!("UPDATE {table} SET qty = 2 WHERE id = 1"))
                .await;
            let seen_b = b.read_changes(&t, start, 100).await.unwrap();
            assert_eq!(seen_a.len(), 1, "{}", db.engine);
            assert_eq!(
                seen_b.len(),
                2,
                "{}: each change is captured once",
                db.engine
            );
            let more_a = a.read_changes(&t, seen_a[0].seq, 100).await.unwrap();
            assert_eq!(more_a, seen_b[1..].to_vec(), "{}", db.engine);

            // Trimming up to the slowest reader keeps what the other has not read.
            a.changelog_trim(&t, seen_a[0].seq).await.unwrap();
            assert_eq!(
                b.read_changes(&t, seen_a[0].seq, 100).await.unwrap().len(),
                1
            );
            a.changelog_trim(&t, seen_b[1].seq).await.unwrap();
            a.remove_capture(&t).await.unwrap();
            db.drop_table(&table).await;
        }
    })
    .await;
}

#[tokio::test]
async fn remove_capture_stops_capture() {
    with_timeout(async {
        for mut db in TestDb::all().await {
            let table = unique_table("remove");
            create_orders(&mut db, &table).await;
            let ep = open(&db).await;
            let t = TableName::parse(&table).unwrap();
            ep.install_capture(&t).await.unwrap();
            let start = ep.max_change_seq(&t).await.unwrap();
            ep.remove_capture(&t).await.unwrap();
            ep.remove_capture(&t).await.unwrap(); // idempotent
            assert!(!ep.capture_installed(&t).await.unwrap(), "{}", db.engine);
            db.plain
                .exec(&format!(
                    "INSERT INTO {table} (region, id, qty, note) VALUES ('eu', 1, 1, 'a')"
                ))
                .await;
            assert!(
                ep.read_changes(&t, start, 100).await.unwrap().is_empty(),
                "{}",
                db.engine
            );
            db.drop_table(&table).await;
            // Removing capture of a table that is gone is not an error.
            ep.remove_capture(&t).await.unwrap();
        }
    })
    .await;
}

const ALL_KINDS: [(&str, ValueKind); 10] = [
    ("b", ValueKind::Bool),
    ("i", ValueKind::Int),
    ("d", ValueKind::Decimal),
    ("f", ValueKind::Float),
    ("t", ValueKind::Text),
    ("bin", ValueKind::Bytes),
    ("dt", ValueKind::Date),
    ("ts", ValueKind::Timestamp),
    ("tz", ValueKind::TimestampTz),
    ("j", ValueKind::Json),
];

async fn create_all_types(db: &mut TestDb, table: &str) -> Vec<String> {
    let mut defs = vec![format!(
        "id {} NOT NULL PRIMARY KEY",
        db.type_name(ValueKind::Int)
    )];
    defs.extend(
        ALL_KINDS
            .iter()
            .map(|(c, k)| format!("{c} {}", db.type_name(*k))),
    );
    db.on_drop(format!("DROP TABLE IF EXISTS {table}"));
    db.plain
        .exec(&format!("CREATE TABLE {table} ({})", defs.join(", ")))
        .await;
    let mut cols = vec!["id".to_string()];
    cols.extend(ALL_KINDS.iter().map(|(c, _)| c.to_string()));
    cols
}

fn sample_rows() -> Vec<Vec<Value>> {
    let ts = NaiveDateTime::parse_from_str("2026-11-22 10:15:00.123456", "%Y-%m-%d %H:%M:%S%.f")
        .unwrap();
    let full = vec![
        Value::Int(1),
        Value::Bool(true),
        Value::Int(-9_007_199_254_740_993),
        Value::Decimal("1234567890.12".parse().unwrap()),
        Value::Float(0.1),
        text("Grüße, 'quoted' \"text\" \\ 日本"),
        Value::Bytes(vec![0, 1, 2, 254, 255]),
        Value::Date(NaiveDate::from_ymd_opt(2026, 2, 28).unwrap()),
        Value::Timestamp(ts),
        Value::TimestampTz(ts.and_utc()),
        Value::Json(serde_json::json!({"a": [1, 2.5, "x"], "b": {"c": null}})),
    ];
    let mut empty = vec![Value::Int(2)];
    empty.extend(std::iter::repeat_n(Value::Null, ALL_KINDS.len()));
    let mut falsy = full.clone();
    falsy[0] = Value::Int(3);
    falsy[1] = Value::Bool(false);
    falsy[3] = Value::Decimal("-0.05".parse().unwrap());
    vec![full, empty, falsy]
}

#[tokio::test]
async fn every_value_type_round_trips_between_every_pair_of_engines() {
    with_timeout(async {
        let mut dbs = TestDb::all().await;
        let mut tables = Vec::new();
        for db in &mut dbs {
            let table = unique_table("types");
            let cols = create_all_types(db, &table).await;
            tables.push((table, cols));
        }
        let key = names(&["id"]);
        for a in 0..dbs.len() {
            let (ta, cols) = &tables[a];
            let ep_a = open(&dbs[a]).await;
            let ta = TableName::parse(ta).unwrap();
            let ops: Vec<WriteOp> = sample_rows().into_iter().map(WriteOp::Upsert).collect();
            ep_a.write_batch(&ta, cols, &key, &ops, None).await.unwrap();
            let read_a = ep_a
                .read_snapshot(&ta, cols, &key, None, 100)
                .await
                .unwrap();
            assert_eq!(
                read_a,
                sample_rows(),
                "{} reads back what it wrote",
                dbs[a].engine
            );
            for b in 0..dbs.len() {
                let ep_b = open(&dbs[b]).await;
                let tb = TableName::parse(&tables[b].0).unwrap();
                let info_b = ep_b.introspect(&tb).await.unwrap();
                let converted: Vec<WriteOp> = read_a
                    .iter()
                    .map(|row| WriteOp::Upsert(info_b.convert_row(&tb, cols, row).unwrap()))
                    .collect();
                ep_b.write_batch(&tb, cols, &key, &converted, None)
                    .await
                    .unwrap();
                let read_b = ep_b
                    .read_snapshot(&tb, cols, &key, None, 100)
                    .await
                    .unwrap();
                assert_eq!(
                    read_b,
                    sample_rows(),
                    "{} -> {}",
                    dbs[a].engine,
                    dbs[b].engine
                );
            }
        }
        for (db, (table, _)) in dbs.iter_mut().zip(&tables) {
            db.drop_table(table).await;
        }
    })
    .await;
}

#[tokio::test]
async fn captured_keys_of_every_key_type_read_back_typed() {
    with_timeout(async {
        for mut db in TestDb::all().await {
            let table = unique_table("keytypes");
            let kinds = [ValueKind::Text, ValueKind::Decimal, ValueKind::Date, ValueKind::Timestamp];
            let defs: Vec<String> = kinds
                .iter()
                .enumerate()
                .map(|(i, k)| format!("k{i} {} NOT NULL", db.type_name(*k)))
                .collect();
            db.on_drop(format!("DROP TABLE IF EXISTS {table}"));
            db.plain
                .exec(&format!(
                    "CREATE TABLE {table} ({}, v {}, PRIMARY KEY (k0, k1, k2, k3))",
                    defs.join(", "),
                    db.type_name(ValueKind::Int)
                ))
                .await;
            let ep = open(&db).await;
            let t = TableName::parse(&table).unwrap();
            ep.install_capture(&t).await.unwrap();
            let start = ep.max_change_seq(&t).await.unwrap();
            // SQLite has no timestamp type: keys match by text, so the application's text
            // must be the canonical `YYYY-MM-DD HH:MM:SS.fff` (as SQLite's strftime writes it).
            db.plain
                .exec(&format!(
                    "INSERT INTO {table} (k0, k1, k2, k3, v) VALUES ('O''Brien', 12.50, '2026-11-22', '2026-11-22 10:15:00.250', 1)"
                ))
                .await;
            let changes = ep.read_changes(&t, start, 10).await.unwrap();
            let ts = NaiveDateTime::parse_from_str("2026-11-22 10:15:00.25", "%Y-%m-%d %H:%M:%S%.f").unwrap();
            assert_eq!(
                changes[0].key,
                vec![
                    text("O'Brien"),
                    Value::Decimal("12.5".parse().unwrap()),
                    Value::Date(NaiveDate::from_ymd_opt(2026, 11, 22).unwrap()),
                    Value::Timestamp(ts),
                ],
                "{}",
                db.engine
            );
            // The captured key finds the row.
            let cols = names(&["k0", "k1", "k2", "k3", "v"]);
            let rows = ep
                .fetch_rows(&t, &cols, &names(&["k0", "k1", "k2", "k3"]), &[changes[0].key.clone()])
                .await
                .unwrap();
            assert_eq!(rows.len(), 1, "{}", db.engine);
            ep.changelog_trim(&t, changes[0].seq).await.unwrap();
            ep.remove_capture(&t).await.unwrap();
            db.drop_table(&table).await;
        }
    })
    .await;
}

/// Large runs of upserts take an engine's bulk path (PostgreSQL: COPY, straight into the
/// table or through a staging table when keys exist): the result must be the same upsert,
/// in order with deletes, never captured, and a refused row still fails the whole batch.
#[tokio::test]
async fn large_upsert_runs_update_existing_rows_in_order_and_are_not_captured() {
    with_timeout(async {
        for mut db in TestDb::all().await {
            let table = unique_table("bulkmix");
            create_orders(&mut db, &table).await;
            let ep = open(&db).await;
            let t = TableName::parse(&table).unwrap();
            ep.install_capture(&t).await.unwrap();
            let start = ep.max_change_seq(&t).await.unwrap();
            let (cols, key) = (names(&ORDER_COLS), names(&ORDER_KEY));
            let upserts = |ids: std::ops::Range<i64>, qty: i64| -> Vec<WriteOp> {
                ids.map(|i| WriteOp::Upsert(order("eu", i, qty + i, "n")))
                    .collect()
            };
            ep.write_batch(&t, &cols, &key, &upserts(0..100, 0), None)
                .await
                .unwrap();
            let mut ops = upserts(50..150, 1000);
            ops.push(WriteOp::Delete(vec![text("eu"), Value::Int(0)]));
            ops.extend(upserts(0..40, 2000));
            ep.write_batch(&t, &cols, &key, &ops, None).await.unwrap();
            for round in 0..20 {
                let ids = 1000 + round * 100..1100 + round * 100;
                ep.write_batch(&t, &cols, &key, &upserts(ids, 0), None)
                    .await
                    .unwrap();
            }
            let mut bad = upserts(0..60, 3000);
            bad.push(WriteOp::Upsert(order("eu", 5000, -1, "negative")));
            let err = ep
                .write_batch(&t, &cols, &key, &bad, None)
                .await
                .unwrap_err();
            assert_eq!(
                err.class,
                WriteErrorClass::Application,
                "{}: {err}",
                db.engine
            );

            let rows = ep
                .read_snapshot(&t, &cols, &key, None, 10_000)
                .await
                .unwrap();
            assert_eq!(rows.len(), 150 + 2000, "{}", db.engine);
            let qty_of = |id: i64| {
                rows.iter()
                    .find(|r| r[1] == Value::Int(id))
                    .map(|r| r[2].clone())
            };
            assert_eq!(qty_of(0), Some(Value::Int(2000)), "{}", db.engine);
            assert_eq!(qty_of(45), Some(Value::Int(45)), "{}", db.engine);
            assert_eq!(qty_of(60), Some(Value::Int(1060)), "{}", db.engine);
            assert_eq!(qty_of(149), Some(Value::Int(1149)), "{}", db.engine);
            assert_eq!(qty_of(5000), None, "{}", db.engine);
            assert!(
                ep.read_changes(&t, start, 100).await.unwrap().is_empty(),
                "{}: echo captured",
                db.engine
            );
            ep.remove_capture(&t).await.unwrap();
            db.drop_table(&table).await;
        }
    })
    .await;
}

#[tokio::test]
async fn bulk_upserts_write_thousands_of_rows_per_second() {
    with_timeout(async {
        for mut db in TestDb::all().await {
            let table = unique_table("bulk");
            create_orders(&mut db, &table).await;
            let ep = open(&db).await;
            let t = TableName::parse(&table).unwrap();
            ep.install_capture(&t).await.unwrap();
            let (cols, key) = (names(&ORDER_COLS), names(&ORDER_KEY));
            let total = 20_000;
            let started = std::time::Instant::now();
            for batch in 0..total / 1000 {
                let ops: Vec<WriteOp> = (0..1000)
                    .map(|i| WriteOp::Upsert(order("eu", batch * 1000 + i, i, "bulk row")))
                    .collect();
                ep.write_batch(&t, &cols, &key, &ops, None).await.unwrap();
            }
            let elapsed = started.elapsed();
            let rate = total as f64 / elapsed.as_secs_f64();
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!(
                    "{}: {total} upserts in {elapsed:?} ({rate:.0} rows/s)\n",
                    db.engine
                )
                .as_bytes(),
            );
            // Debug build on a small machine: a floor that only catches row-at-a-time writes.
            assert!(rate > 2_000.0, "{}: {rate:.0} rows/s", db.engine);
            let count = ep
                .read_snapshot(&t, &key, &key, None, 100_000)
                .await
                .unwrap()
                .len();
            assert_eq!(count, total as usize);
            ep.remove_capture(&t).await.unwrap();
            db.drop_table(&table).await;
        }
    })
    .await;
}

#[tokio::test]
async fn unreachable_endpoints_are_network_errors_without_secrets() {
    with_timeout(async {
        let specs = [
            EndpointSpec::Postgres {
                url: "postgres://app:s3cret-pw@127.0.0.1:1/db".into(),
            },
            EndpointSpec::Mysql {
                url: "mysql://app:s3cret-pw@127.0.0.1:1/db".into(),
            },
        ];
        for spec in specs {
            let err = match connect(&spec).await {
                Ok(_) => panic!("{spec:?} connected to port 1"),
                Err(e) => e,
            };
            assert_eq!(err.class(), WriteErrorClass::Network, "{err}");
            for shown in [err.to_string(), format!("{err:?}"), format!("{spec:?}")] {
                assert!(
                    !shown.contains("s3cret-pw") && !shown.contains("://"),
                    "{shown}"
                );
            }
        }
    })
    .await;
}

#[tokio::test]
async fn now_is_the_database_clock_in_utc() {
    with_timeout(async {
        for db in TestDb::all().await {
            let now = open(&db).await.now().await.unwrap();
            let skew = (chrono::Utc::now() - now).num_seconds().abs();
            assert!(skew < 60, "{}: {now}", db.engine);
        }
    })
    .await;
}

#[tokio::test]
async fn postgres_schema_tables_and_types_without_native_mapping_work_as_text() {
    with_timeout(async {
        let Some(mut db) = TestDb::postgres().await else {
            return;
        };
        let schema = unique_table("schema");
        let table = format!("{schema}.items");
        db.on_drop(format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
        db.plain
            .exec(&format!(
                "CREATE SCHEMA {schema}; CREATE TYPE {schema}.color AS ENUM ('red', 'green'); \
                 CREATE TABLE {table} (id uuid PRIMARY KEY, color {schema}.color, tags text[])"
            ))
            .await;
        let ep = open(&db).await;
        let t = TableName::parse(&table).unwrap();
        let info = ep.introspect(&t).await.unwrap();
        let kinds: Vec<ValueKind> = info.columns.iter().map(|c| c.kind).collect();
        assert_eq!(kinds, vec![ValueKind::Text; 3]);
        ep.install_capture(&t).await.unwrap();
        let start = ep.max_change_seq(&t).await.unwrap();

        let id = "6f1c2a5e-8d4b-4c1a-9a7e-0b7f3d2e1c00";
        let cols = names(&["id", "color", "tags"]);
        let row = vec![text(id), text("green"), text("{a,b}")];
        ep.write_batch(
            &t,
            &cols,
            &names(&["id"]),
            &[WriteOp::Upsert(row.clone())],
            None,
        )
        .await
        .unwrap();
        assert_eq!(
            ep.read_snapshot(&t, &cols, &names(&["id"]), None, 10)
                .await
                .unwrap(),
            vec![row]
        );
        assert!(ep.read_changes(&t, start, 10).await.unwrap().is_empty());

        db.plain
            .exec(&format!("UPDATE {table} SET color = 'red'"))
            .await;
        let changes = ep.read_changes(&t, start, 10).await.unwrap();
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].key, vec![text(id)]);
        let rows = ep
            .fetch_rows(&t, &cols, &names(&["id"]), &[changes[0].key.clone()])
            .await
            .unwrap();
        assert_eq!(rows[0][1], text("red"));

        let bad = vec![WriteOp::Upsert(vec![text(id), text("blue"), Value::Null])];
        let err = ep
            .write_batch(&t, &cols, &names(&["id"]), &bad, None)
            .await
            .unwrap_err();
        assert_eq!(
            (err.class, err.code.as_deref()),
            (WriteErrorClass::Application, Some("22P02")),
            "{err}"
        );

        ep.changelog_trim(&t, changes[0].seq).await.unwrap();
        ep.remove_capture(&t).await.unwrap();
        db.plain
            .exec(&format!("DROP SCHEMA {schema} CASCADE"))
            .await;
    })
    .await;
}

#[tokio::test]
async fn qualified_table_names_are_captured_in_their_schema() {
    with_timeout(async {
        let mut dbs = vec![TestDb::sqlite().await];
        dbs.extend(TestDb::mysql().await);
        for mut db in dbs {
            // SQLite: the main database; MySQL: another database than the URL's.
            let schema = match db.engine {
                "sqlite" => "main".to_string(),
                _ => unique_table("db"),
            };
            if db.engine != "sqlite" {
                db.on_drop(format!("DROP DATABASE IF EXISTS {schema}"));
                db.plain.exec(&format!("CREATE DATABASE {schema}")).await;
            }
            let table = format!("{schema}.{}", unique_table("qualified"));
            create_orders(&mut db, &table).await;
            let ep = open(&db).await;
            let t = TableName::parse(&table).unwrap();
            ep.install_capture(&t).await.unwrap();
            assert!(ep.capture_installed(&t).await.unwrap(), "{}", db.engine);
            let start = ep.max_change_seq(&t).await.unwrap();
            db.plain
                .exec(&format!(
                    "INSERT INTO {table} (region, id, qty, note) VALUES ('eu', 1, 1, 'a')"
                ))
                .await;
            let changes = ep.read_changes(&t, start, 10).await.unwrap();
            assert_eq!(changes.len(), 1, "{}", db.engine);
            ep.changelog_trim(&t, changes[0].seq).await.unwrap();
            ep.remove_capture(&t).await.unwrap();
            assert!(!ep.capture_installed(&t).await.unwrap(), "{}", db.engine);
            match db.engine {
                "sqlite" => db.drop_table(&table).await,
                _ => db.plain.exec(&format!("DROP DATABASE {schema}")).await,
            }
        }
    })
    .await;
}

#[tokio::test]
async fn an_open_transaction_holds_back_later_changes_until_it_commits() {
    with_timeout(async {
        // SQLite serializes writers, so only the server engines can interleave.
        let mut pairs = Vec::new();
        if let (Some(a), Some(b)) = (TestDb::postgres().await, TestDb::postgres().await) {
            pairs.push((a, b));
        }
        if let (Some(a), Some(b)) = (TestDb::mysql().await, TestDb::mysql().await) {
            pairs.push((a, b));
        }
        for (mut slow, mut fast) in pairs {
            let table = unique_table("order");
            create_orders(&mut slow, &table).await;
            let ep = open(&slow).await;
            let t = TableName::parse(&table).unwrap();
            ep.install_capture(&t).await.unwrap();
            let start = ep.max_change_seq(&t).await.unwrap();
            let insert = |id: i64| {
                format!("INSERT INTO {table} (region, id, qty, note) VALUES ('eu', {id}, 1, 'x')")
            };

            // `slow` takes the lower seq and stays open; `fast` commits a higher one.
            let begin = if slow.engine == "postgres" {
                "BEGIN"
            } else {
                "START TRANSACTION"
            };
            slow.plain.exec(begin).await;
            slow.plain.exec(&insert(1)).await;
            fast.plain.exec(&insert(2)).await;
            assert!(
                ep.read_changes(&t, start, 100).await.unwrap().is_empty(),
                "{}: a change after an open transaction's was handed out",
                slow.engine
            );
            // A cursor taken now must not pass the open transaction's change either.
            let cursor = ep.max_change_seq(&t).await.unwrap();

            slow.plain.exec("COMMIT").await;
            let changes = ep.read_changes(&t, cursor, 100).await.unwrap();
            let ids: Vec<Value> = changes.iter().map(|c| c.key[1].clone()).collect();
            assert_eq!(ids, vec![Value::Int(1), Value::Int(2)], "{}", slow.engine);
            ep.changelog_trim(&t, changes[1].seq).await.unwrap();
            ep.remove_capture(&t).await.unwrap();
            slow.drop_table(&table).await;
        }
    })
    .await;
}

#[tokio::test]
async fn mysql_timestamp_keys_are_captured_in_utc_whatever_the_writers_time_zone() {
    with_timeout(async {
        let Some(mut db) = TestDb::mysql().await else {
            return;
        };
        let table = unique_table("tz");
        db.on_drop(format!("DROP TABLE IF EXISTS {table}"));
        db.plain
            .exec(&format!(
                "CREATE TABLE {table} (at TIMESTAMP(6) NOT NULL PRIMARY KEY, v INT)"
            ))
            .await;
        let ep = open(&db).await;
        let t = TableName::parse(&table).unwrap();
        ep.install_capture(&t).await.unwrap();
        let start = ep.max_change_seq(&t).await.unwrap();
        db.plain.exec("SET time_zone = '+02:00'").await;
        db.plain
            .exec(&format!(
                "INSERT INTO {table} (at, v) VALUES ('2026-11-22 12:00:00.5', 1)"
            ))
            .await;
        let changes = ep.read_changes(&t, start, 10).await.unwrap();
        let utc = NaiveDateTime::parse_from_str("2026-11-22 10:00:00.5", "%Y-%m-%d %H:%M:%S%.f")
            .unwrap()
            .and_utc();
        assert_eq!(changes[0].key, vec![Value::TimestampTz(utc)]);
        let rows = ep
            .fetch_rows(
                &t,
                &names(&["at", "v"]),
                &names(&["at"]),
                &[changes[0].key.clone()],
            )
            .await
            .unwrap();
        assert_eq!(rows, vec![vec![Value::TimestampTz(utc), Value::Int(1)]]);
        ep.changelog_trim(&t, changes[0].seq).await.unwrap();
        ep.remove_capture(&t).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn postgres_endpoint_reconnects_after_its_connection_is_killed() {
    with_timeout(async {
        let Some(mut db) = TestDb::postgres().await else {
            return;
        };
        let EndpointSpec::Postgres { url } = &db.spec else {
            unreachable!()
        };
        let app = unique_table("app");
        let separator = if url.contains('?') { '&' } else { '?' };
        let spec = EndpointSpec::Postgres {
            url: format!("{url}{separator}application_name={app}"),
        };
        let table = unique_table("reconnect");
        create_orders(&mut db, &table).await;
        let t = TableName::parse(&table).unwrap();
        let ep = connect(&spec).await.unwrap();
        ep.introspect(&t).await.unwrap();

        db.plain
            .exec(&format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{app}'"
            ))
            .await;
        // The first call may notice the broken connection; the endpoint reconnects by itself.
        if let Err(e) = ep.introspect(&t).await {
            assert_eq!(e.class(), WriteErrorClass::Network, "{e}");
        }
        let info = ep.introspect(&t).await.unwrap();
        assert_eq!(info.primary_key, names(&ORDER_KEY));
    })
    .await;
}

/// Runs of new rows take an engine's bulk path (MySQL/MariaDB: `LOAD DATA LOCAL INFILE`
/// straight into the table): every value type, NULLs and text that needs escaping come back
/// exactly as written, and a run holding bytes (which that path does not carry) still lands.
#[tokio::test]
async fn every_value_type_survives_the_bulk_path_of_every_engine() {
    with_timeout(async {
        for mut db in TestDb::all().await {
            let table = unique_table("bulktypes");
            let cols = create_all_types(&mut db, &table).await;
            let ep = open(&db).await;
            let t = TableName::parse(&table).unwrap();
            let key = names(&["id"]);
            let samples = sample_rows();
            let rows_from = |first: i64, bytes: bool| -> Vec<Vec<Value>> {
                (0..40)
                    .map(|i| {
                        let mut row = samples[i as usize % samples.len()].clone();
                        row[0] = Value::Int(first + i);
                        if !bytes {
                            row[6] = Value::Null;
                        }
                        if let Value::Text(s) = &mut row[5] {
                            s.push_str(&format!("\ttab\nline\rcr\\N {i}"));
                        }
                        row
                    })
                    .collect()
            };
            let mut written = rows_from(100, false);
            written.extend(rows_from(200, true));
            for run in [&written[..40], &written[40..]] {
                let ops: Vec<WriteOp> = run.iter().cloned().map(WriteOp::Upsert).collect();
                ep.write_batch(&t, &cols, &key, &ops, None).await.unwrap();
            }
            let read = ep.read_snapshot(&t, &cols, &key, None, 1000).await.unwrap();
            assert_eq!(read, written, "{}", db.engine);
            db.drop_table(&table).await;
        }
    })
    .await;
}

#[tokio::test]
/// A writer whose lease epoch is older than the newest one that wrote to the target is
/// refused (class Fenced) and writes nothing, on every engine; the holder of the newest
/// epoch, and any newer one, goes on; a concurrent stale transaction waits for the newer
/// one's commit and is then refused, never committed after it.
async fn a_stale_lease_epoch_is_fenced_out_and_writes_nothing() {
    use dualwrite::endpoint::Fence;
    with_timeout(async {
        for mut db in TestDb::all().await {
            let table = unique_table("fence");
            create_orders(&mut db, &table).await;
            let ep = open(&db).await;
            let t = TableName::parse(&table).unwrap();
            let (cols, key) = (names(&ORDER_COLS), names(&ORDER_KEY));
            let map = format!("{table}_map");
            let fence = |epoch| Fence {
                map: map.clone(),
                epoch,
            };
            let write = |qty: i64| vec![WriteOp::Upsert(order("eu", 1, qty, "x"))];
            let qty = |rows: Vec<Vec<Value>>| rows[0][2].clone();
            ep.write_batch(&t, &cols, &key, &write(5), Some(&fence(5)))
                .await
                .unwrap();
            ep.write_batch(&t, &cols, &key, &write(5), Some(&fence(5)))
                .await
                .unwrap_or_else(|e| panic!("{}: the same epoch again: {e}", db.engine));
            let err = ep
                .write_batch(&t, &cols, &key, &write(3), Some(&fence(3)))
                .await
                .unwrap_err();
            assert_eq!(err.class, WriteErrorClass::Fenced, "{}: {err}", db.engine);
            assert!(err.message.contains("epoch 3"), "{}: {err}", db.engine);
            let rows = ep.read_snapshot(&t, &cols, &key, None, 10).await.unwrap();
            assert_eq!(
                qty(rows),
                Value::Int(5),
                "{}: the stale write landed",
                db.engine
            );
            ep.write_batch(&t, &cols, &key, &write(7), Some(&fence(7)))
                .await
                .unwrap();
            let err = ep
                .write_batch(&t, &cols, &key, &write(6), Some(&fence(5)))
                .await
                .unwrap_err();
            assert_eq!(err.class, WriteErrorClass::Fenced, "{}: {err}", db.engine);
            // Another map's fence is its own.
            let other = Fence {
                map: format!("{map}_other"),
                epoch: 1,
            };
            ep.write_batch(&t, &cols, &key, &write(8), Some(&other))
                .await
                .unwrap();
            let rows = ep.read_snapshot(&t, &cols, &key, None, 10).await.unwrap();
            assert_eq!(qty(rows), Value::Int(8), "{}", db.engine);
            // So is the fence of a map of the same name writing to another table (another
            // project on the same database, or another test).
            let elsewhere = unique_table("fence_elsewhere");
            create_orders(&mut db, &elsewhere).await;
            let t2 = TableName::parse(&elsewhere).unwrap();
            ep.write_batch(&t2, &cols, &key, &write(1), Some(&fence(1)))
                .await
                .unwrap_or_else(|e| panic!("{}: same map name, other table: {e}", db.engine));
            db.drop_table(&elsewhere).await;

            // Two writers at once, the newer epoch first: the stale one is refused whatever
            // the interleaving, and the newer value stays.
            let ep2 = open(&db).await;
            let (newer, stale) = (fence(20), fence(19));
            let (w20, w19) = (write(20), write(19));
            let (a, b) = tokio::join!(ep.write_batch(&t, &cols, &key, &w20, Some(&newer)), async {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                ep2.write_batch(&t, &cols, &key, &w19, Some(&stale)).await
            });
            a.unwrap();
            assert_eq!(
                b.unwrap_err().class,
                WriteErrorClass::Fenced,
                "{}",
                db.engine
            );
            let rows = ep.read_snapshot(&t, &cols, &key, None, 10).await.unwrap();
            assert_eq!(qty(rows), Value::Int(20), "{}", db.engine);
            db.plain
                .exec(&format!(
                    "DELETE FROM _dualwrite_fence WHERE map LIKE '{map}%'"
                ))
                .await;
            db.drop_table(&table).await;
        }
    })
    .await;
}
