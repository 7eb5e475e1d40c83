//! The state store: SQLite and PostgreSQL held to one behaviour suite, and one reconcile
//! pass through the real binary with its state in PostgreSQL.
//!
//! PostgreSQL tests read `DUALWRITE_TEST_POSTGRES_URL` (default: the local server). An
//! unreachable server is skipped with a loud `SKIPPED:` line, except under `CI=true`, where
//! it fails the test. Each test works in its own schema or database and drops it after.

mod support;

use support::with_timeout;

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dualwrite::config::{AlertAction, RequestAction};
use dualwrite::state::postgres::PostgresStore;
use dualwrite::state::sqlite::SqliteStore;
use dualwrite::state::{
    AppliedRecord, DirectionCounts, ErrorPhase, ErrorQuery, ErrorRecord, ErrorScope, ErrorState,
    ErrorType, InitialSyncRun, InitialSyncStatus, MapProblem, MapRecord, MapRuntime, Order, Phase,
    ProblemReason, QueueState, RequestState, RequestStatus, StateError, StateStore,
};

const POSTGRES_DEFAULT: &str = "postgres://postgres@127.0.0.1:5432/test";
/// A password that would show up in any message that leaked the URL (trust auth ignores it).
const LEAK_CANARY: &str = "notsecret";

// ---------------------------------------------------------------------------------------
// Helpers

fn unique(prefix: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// The test server's URL, with a password added when the default (trust) server is used, so
/// that a leaked URL is visible in any message.
fn postgres_url() -> String {
    match std::env::var("DUALWRITE_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => POSTGRES_DEFAULT.replace("postgres@", &format!("postgres:{LEAK_CANARY}@")),
    }
}

/// The same server, another database.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let (server, _) = base.rsplit_once('/').expect("URL has a database");
    format!("{server}/{db}{query}")
}

/// Runs SQL as an administrator (outside dualwrite), from a thread of its own so it works
/// whether or not the caller is inside a runtime.
fn admin(url: &str, sql: &str) -> Result<(), String> {
    let (url, sql) = (url.to_string(), sql.to_string());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let connecting = tokio_postgres::connect(&url, tokio_postgres::NoTls);
            let (client, connection) = tokio::time::timeout(Duration::from_secs(5), connecting)
                .await
                .map_err(|_| "timed out".to_string())?
                .map_err(|e| e.to_string())?;
            tokio::spawn(connection);
            client.batch_execute(&sql).await.map_err(|e| e.to_string())
        })
    })
    .join()
    .unwrap()
}

/// The test server's URL, or `None` (after a loud skip) when it cannot be reached.
fn reachable_postgres() -> Option<String> {
    let url = postgres_url();
    match admin(&url, "SELECT 1") {
        Ok(()) => Some(url),
        Err(why) => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("PostgreSQL unreachable under CI=true: {why}");
            }
            // Straight to the stderr handle: the test harness captures `eprintln!`.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: PostgreSQL unreachable ({why}); set DUALWRITE_TEST_POSTGRES_URL"
            );
            None
        }
    }
}

/// A schema of its own, dropped when the test ends (pass or fail).
struct TestSchema {
    url: String,
    name: String,
}

impl TestSchema {
    fn new(url: &str) -> TestSchema {
        TestSchema {
            url: url.to_string(),
            name: unique("dw_state_test"),
        }
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        let _ = admin(
            &self.url,
            &format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name),
        );
    }
}

/// A database of its own, dropped when the test ends (pass or fail).
struct TestDatabase {
    admin_url: String,
    name: String,
}

impl TestDatabase {
    fn create(admin_url: &str) -> TestDatabase {
        let db = TestDatabase {
            admin_url: admin_url.to_string(),
            name: unique("dw_state_e2e"),
        };
        admin(admin_url, &format!("CREATE DATABASE {}", db.name)).unwrap();
        db
    }

    fn url(&self) -> String {
        with_database(&self.admin_url, &self.name)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let _ = admin(
            &self.admin_url,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

// ---------------------------------------------------------------------------------------
// The behaviour suite

/// A store under test, and a way to make its runtime writes fail for some map names (a
/// trigger installed behind the store's back), to prove `save` is atomic.
struct Subject<'a> {
    store: &'a mut dyn StateStore,
    /// Makes every later insert or update of a runtime row whose name starts with the prefix
    /// fail.
    poison_runtime: &'a dyn Fn(&str),
    /// Text that must never appear in a description or an error.
    secrets: Vec<String>,
}

fn map(name: &str, phase: Phase) -> MapRecord {
    MapRecord {
        name: name.into(),
        phase,
        applied: Some(serde_json::json!({
            "state": phase.name(),
            "source": { "endpoint": "erp", "table": "customers" },
            "columns": [{ "source": "id", "destination": "id", "key": true }],
        })),
        applied_revision: Some("abc123".into()),
        held_by: None,
    }
}

fn runtime(cursor: i64) -> MapRuntime {
    MapRuntime {
        cursor_source: cursor,
        cursor_destination: cursor * 2,
        initial_sync: Some(InitialSyncRun {
            run: 1,
            status: InitialSyncStatus::Completed,
            directions: [(
                "erp->crm".to_string(),
                DirectionCounts {
                    read: 10,
                    written: 9,
                    errors: 1,
                },
            )]
            .into(),
            resume_after: [("erp->crm".to_string(), "[9]".to_string())].into(),
            estimated_rows: [("erp->crm".to_string(), 12)].into(),
            retry_errors: true,
            started_at: Some("2024-05-01T08:00:00Z".into()),
            finished_at: None,
            problem: None,
        }),
        earlier_runs: vec![InitialSyncRun {
            run: 0,
            status: InitialSyncStatus::Failed,
            problem: Some("endpoint crm: connection refused".into()),
            ..Default::default()
        }],
        synced: 42,
        last_sync_at: Some("2024-05-01T10:00:00Z".into()),
        lag_seconds: Some(1.5),
        queue: Some(QueueState {
            pending: 3,
            oldest_at: Some("2024-05-01T09:59:00.000Z".into()),
            counted_at: Some("2024-05-01T10:00:00Z".into()),
        }),
        resumed_at: Some("2024-05-01T09:00:00.000Z".into()),
        held_action: Some(AlertAction::Pause),
        failure: Some(MapProblem {
            reason: ProblemReason::EndpointUnreachable,
            message: "endpoint crm (destination side): connection refused".into(),
            endpoint: Some("crm".into()),
            attempts: 2,
            since: "2024-05-01T09:58:00Z".into(),
        }),
        next_attempt_at: Some("2024-05-01T10:00:02.000Z".into()),
        capture_left: Vec::new(),
        map_events_open: true,
        since: Some("2024-05-01T09:00:00Z".into()),
    }
}

fn error(map: &str, direction: &str, id: i64, at: &str) -> ErrorRecord {
    ErrorRecord {
        id: 0,
        scope: ErrorScope::Record,
        map: map.into(),
        phase: ErrorPhase::InitialSync,
        direction: direction.into(),
        error_type: ErrorType::ApplicationError,
        key: format!("{{\"id\":{id}}}"),
        row: Some(format!("{{\"id\":{id},\"name\":\"n{id}\"}}")),
        message: format!("check constraint violated at {at}"),
        code: Some("23514".into()),
        first_at: at.into(),
        last_at: at.into(),
        attempts: 1,
        state: ErrorState::Open,
    }
}

fn assert_no_secret(secrets: &[String], text: &str) {
    for secret in secrets {
        assert!(!text.contains(secret.as_str()), "{secret:?} leaked: {text}");
    }
}

fn behaves_as_a_state_store(s: Subject<'_>) {
    let Subject {
        store,
        poison_runtime,
        secrets,
    } = s;
    assert_no_secret(&secrets, &store.describe());
    assert!(store.describe().starts_with("state store "));

    // A new store knows nothing.
    assert!(store.maps().unwrap().is_empty());
    assert!(store.alerts().unwrap().is_empty());
    assert!(store.requests().unwrap().is_empty());
    assert_eq!(store.runtime("customers").unwrap(), MapRuntime::default());

    // save + runtime round trip; maps() after save.
    let customers = map("customers", Phase::InitialSync);
    store.save(&customers, &runtime(7)).unwrap();
    assert_eq!(store.runtime("customers").unwrap(), runtime(7));
    assert_eq!(store.maps().unwrap(), vec![customers.clone()]);
    let mut running = map("customers", Phase::Running);
    running.held_by = Some("pause-on-errors".into());
    store.save(&running, &runtime(8)).unwrap();
    store.put_map(&map("orders", Phase::Paused)).unwrap();
    assert_eq!(
        store.maps().unwrap(),
        vec![running.clone(), map("orders", Phase::Paused)]
    );
    assert_eq!(store.runtime("customers").unwrap(), runtime(8));
    assert_eq!(store.runtime("orders").unwrap(), MapRuntime::default());

    // save is atomic: when the runtime write fails, the map row is not written either.
    poison_runtime("poisoned");
    store.put_map(&map("poisoned-old", Phase::Running)).unwrap();
    let err = store
        .save(&map("poisoned-old", Phase::Stopped), &runtime(99))
        .unwrap_err();
    assert_no_secret(&secrets, &err.to_string());
    assert_no_secret(&secrets, &format!("{err:?}"));
    assert!(
        store
            .save(&map("poisoned-new", Phase::Running), &runtime(1))
            .is_err()
    );
    let maps = store.maps().unwrap();
    let names: Vec<_> = maps.iter().map(|m| (m.name.as_str(), m.phase)).collect();
    assert_eq!(
        names,
        [
            ("customers", Phase::Running),
            ("orders", Phase::Paused),
            ("poisoned-old", Phase::Running)
        ]
    );
    assert_eq!(
        store.runtime("poisoned-new").unwrap(),
        MapRuntime::default()
    );
    // The store still works after a failed save.
    store.save(&running, &runtime(9)).unwrap();
    assert_eq!(store.runtime("customers").unwrap(), runtime(9));

    // Alerts as last applied.
    let alert = AppliedRecord {
        name: "pause-on-errors".into(),
        applied: serde_json::json!({ "maps": ["customers"], "threshold": 10 }),
        revision: Some("abc123".into()),
        state: None,
    };
    store.put_alert(&alert).unwrap();
    let changed = AppliedRecord {
        revision: Some("def456".into()),
        ..alert.clone()
    };
    store.put_alert(&changed).unwrap();
    assert_eq!(store.alerts().unwrap(), vec![changed]);

    // record_error: the same open (map, direction, key) is updated, not duplicated.
    assert!(!store.has_open_errors("customers").unwrap());
    let first = store
        .record_error(&error("customers", "erp->crm", 1, "2024-05-01T10:00:00Z"))
        .unwrap();
    let mut again = error("customers", "erp->crm", 1, "2024-05-01T10:05:00Z");
    again.first_at = "2024-05-01T10:05:00Z".into();
    again.phase = ErrorPhase::Live;
    again.error_type = ErrorType::NetworkError;
    again.code = None;
    assert_eq!(store.record_error(&again).unwrap(), first);
    let open = store.open_errors("customers", 10).unwrap();
    assert_eq!(open.len(), 1);
    let e = &open[0];
    assert_eq!(
        (e.id, e.attempts, e.first_at.as_str(), e.last_at.as_str()),
        (first, 2, "2024-05-01T10:00:00Z", "2024-05-01T10:05:00Z")
    );
    assert_eq!(
        (e.phase, e.error_type, e.code.as_deref()),
        (ErrorPhase::Live, ErrorType::NetworkError, None)
    );
    assert_eq!(e.message, again.message);
    assert_eq!((e.state, e.map.as_str()), (ErrorState::Open, "customers"));
    assert_eq!(e.row, again.row);
    assert!(store.has_open_errors("customers").unwrap());

    // A different key, or the same key in the other direction, is a new error.
    let second = store
        .record_error(&error("customers", "erp->crm", 2, "2024-05-01T10:06:00Z"))
        .unwrap();
    let reverse = store
        .record_error(&error("customers", "crm->erp", 1, "2024-05-01T10:07:00Z"))
        .unwrap();
    let mut schema_error = error("customers", "erp->crm", 3, "2024-05-01T10:08:00Z");
    schema_error.error_type = ErrorType::SchemaError;
    schema_error.phase = ErrorPhase::Live;
    let third = store.record_error(&schema_error).unwrap();
    let other_map = store
        .record_error(&error("orders", "erp->crm", 1, "2024-05-01T10:09:00Z"))
        .unwrap();
    let ids = [first, second, reverse, third, other_map];
    let mut distinct = ids.to_vec();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), ids.len(), "{ids:?}");

    // open_errors: newest first, limited, this map only.
    let open: Vec<i64> = store
        .open_errors("customers", 10)
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(open, [third, reverse, second, first]);
    let newest: Vec<i64> = store
        .open_errors("customers", 2)
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(newest, [third, reverse]);

    // open_error_counts: by (type, phase).
    assert_eq!(
        store.open_error_counts("customers").unwrap(),
        vec![
            (ErrorType::ApplicationError, ErrorPhase::InitialSync, 2),
            (ErrorType::NetworkError, ErrorPhase::Live, 1),
            (ErrorType::SchemaError, ErrorPhase::Live, 1),
        ]
    );

    // supersede resolves only the given direction (and map).
    let key1 = "{\"id\":1}".to_string();
    assert_eq!(store.supersede("customers", "erp->crm", &[]).unwrap(), 0);
    assert_eq!(
        store
            .supersede(
                "customers",
                "erp->crm",
                &[key1.clone(), "{\"id\":404}".into()]
            )
            .unwrap(),
        1
    );
    let open: Vec<i64> = store
        .open_errors("customers", 10)
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(open, [third, reverse, second]);
    assert_eq!(
        store.open_errors("orders", 10).unwrap()[0].id,
        other_map,
        "another map's error with the same key stays open"
    );
    // Superseded again is a no-op; a later failure of that key is a new error.
    assert_eq!(
        store
            .supersede("customers", "erp->crm", std::slice::from_ref(&key1))
            .unwrap(),
        0
    );
    let reopened = store
        .record_error(&error("customers", "erp->crm", 1, "2024-05-01T11:00:00Z"))
        .unwrap();
    assert!(!ids.contains(&reopened));
    assert_eq!(store.open_errors("customers", 1).unwrap()[0].attempts, 1);

    // Activity: newest first, limited, per map.
    store
        .log(
            "customers",
            "2024-05-01T10:00:00Z",
            "Created",
            "map created",
        )
        .unwrap();
    store
        .log("orders", "2024-05-01T10:00:01Z", "Created", "map created")
        .unwrap();
    store
        .log(
            "customers",
            "2024-05-01T10:00:02Z",
            "StateChanged",
            "NotRunning -> InitialSync",
        )
        .unwrap();
    store
        .log(
            "customers",
            "2024-05-01T10:00:03Z",
            "InitialSyncFinished",
            "9 written, 1 error",
        )
        .unwrap();
    let events: Vec<String> = store
        .activity("customers", 10)
        .unwrap()
        .into_iter()
        .map(|a| format!("{} {} {}", a.at, a.event, a.message))
        .collect();
    assert_eq!(
        events,
        [
            "2024-05-01T10:00:03Z InitialSyncFinished 9 written, 1 error",
            "2024-05-01T10:00:02Z StateChanged NotRunning -> InitialSync",
            "2024-05-01T10:00:00Z Created map created",
        ]
    );
    assert_eq!(store.activity("customers", 1).unwrap().len(), 1);
    assert_eq!(store.activity("orders", 10).unwrap().len(), 1);

    // forget_map: the map and its runtime go; its errors and log stay.
    store.forget_map("customers").unwrap();
    let names: Vec<String> = store.maps().unwrap().into_iter().map(|m| m.name).collect();
    assert_eq!(names, ["orders", "poisoned-old"]);
    assert_eq!(store.runtime("customers").unwrap(), MapRuntime::default());
    assert!(store.has_open_errors("customers").unwrap());
    assert_eq!(store.activity("customers", 10).unwrap().len(), 3);
    store.forget_map("never-existed").unwrap();

    // The activity log since a time, oldest first (`dualwrite logs`).
    let since: Vec<String> = store
        .activity_since("customers", Some("2024-05-01T10:00:02Z"))
        .unwrap()
        .into_iter()
        .map(|a| a.event)
        .collect();
    assert_eq!(since, ["StateChanged", "InitialSyncFinished"]);
    assert_eq!(store.activity_since("customers", None).unwrap().len(), 3);

    filtered_queries_select_exactly_what_they_name(store);
    requests_keep_their_status(store);
    map_level_events_are_one_per_attempt(store);
    error_counts_follow_every_change(store);
}

/// The open-error counts of `map` by (type, phase), counted from its records one by one.
fn counted_by_hand(store: &dyn StateStore, map: &str) -> Vec<(ErrorType, ErrorPhase, u64)> {
    let mut counts = std::collections::BTreeMap::new();
    for e in store
        .query_errors(&ErrorQuery::open(map), Order::OldestFirst, 10_000)
        .unwrap()
    {
        *counts
            .entry((e.error_type.name(), e.phase.name()))
            .or_insert(0u64) += 1;
    }
    counts
        .into_iter()
        .map(|((t, p), n)| {
            (
                ErrorType::stored(t).unwrap(),
                ErrorPhase::stored(p).unwrap(),
                n,
            )
        })
        .collect()
}

/// What the store's kept counts answer equals counting the records: the overview's counts
/// and `count_errors` by map, state, type, phase, direction and scope (the same query with
/// a time window is counted from the records).
fn assert_counts_agree(store: &dyn StateStore, map: &str) {
    assert_eq!(
        store.open_error_counts(map).unwrap(),
        counted_by_hand(store, map),
        "open error counts of {map}"
    );
    let mut queries = vec![ErrorQuery::default(), ErrorQuery::open(map)];
    for state in ErrorState::ALL {
        queries.push(ErrorQuery {
            state: Some(*state),
            ..ErrorQuery::open(map)
        });
    }
    queries.push(ErrorQuery {
        direction: Some("DestinationToSource".into()),
        error_type: Some(ErrorType::ApplicationError),
        ..ErrorQuery::open(map)
    });
    queries.push(ErrorQuery {
        phase: Some(ErrorPhase::Live),
        scope: Some(ErrorScope::Record),
        state: None,
        ..ErrorQuery::open(map)
    });
    for query in queries {
        assert!(query.by_counted_columns());
        let scanned = ErrorQuery {
            from: Some("0000".into()),
            ..query.clone()
        };
        assert_eq!(
            store.count_errors(&query).unwrap(),
            store.count_errors(&scanned).unwrap(),
            "{query:?}"
        );
    }
}

/// The counts a store keeps follow every way a record changes: recorded, failing again with
/// another type, superseded, retried, deleted, a map-level event; folded by `tidy` or not.
fn error_counts_follow_every_change(store: &mut dyn StateStore) {
    let map = "counted";
    let at = |i: i64| format!("2024-08-01T10:00:{i:02}.000Z");
    let mut ids = Vec::new();
    for i in 0..12i64 {
        let mut e = error(
            map,
            ["SourceToDestination", "DestinationToSource"][i as usize % 2],
            i,
            &at(i),
        );
        e.phase = [
            ErrorPhase::InitialSync,
            ErrorPhase::Live,
            ErrorPhase::CatchUp,
        ][i as usize % 3];
        if i % 4 == 3 {
            e.error_type = ErrorType::TransformError;
        }
        ids.push(store.record_error(&e).unwrap());
    }
    assert_counts_agree(store, map);
    assert_eq!(store.count_errors(&ErrorQuery::open(map)).unwrap(), 12);
    // Fails again, now as another type and in another phase: moves between groups.
    let mut again = error(map, "SourceToDestination", 0, &at(20));
    again.error_type = ErrorType::SchemaError;
    again.phase = ErrorPhase::Live;
    assert_eq!(store.record_error(&again).unwrap(), ids[0]);
    assert_counts_agree(store, map);
    store.tidy().unwrap();
    assert_counts_agree(store, map);
    assert_eq!(
        store
            .supersede(
                map,
                "DestinationToSource",
                &["{\"id\":1}".into(), "{\"id\":3}".into()]
            )
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .resolve_errors(&ids[4..7], ErrorState::Retried)
            .unwrap(),
        3
    );
    assert_counts_agree(store, map);
    assert_eq!(store.delete_errors(&[ids[1], ids[8], ids[9]]).unwrap(), 3);
    store
        .record_errors(&[
            error(map, "SourceToDestination", 100, &at(30)),
            error(map, "SourceToDestination", 101, &at(31)),
        ])
        .unwrap();
    let mut event = error(map, "SourceToDestination", 0, &at(32));
    event.scope = ErrorScope::Map;
    event.key = String::new();
    event.error_type = ErrorType::NetworkError;
    store.record_error(&event).unwrap();
    assert_counts_agree(store, map);
    store.tidy().unwrap();
    store.tidy().unwrap();
    assert_counts_agree(store, map);
    // A window, newest first, one at a time: the newest in the window, then the next.
    let window = ErrorQuery {
        from: Some(at(5)),
        to: Some(at(12)),
        ..ErrorQuery::open(map)
    };
    assert!(window.windowed());
    let newest = store.query_errors(&window, Order::NewestFirst, 1).unwrap();
    assert_eq!(newest.iter().map(|e| e.id).collect::<Vec<_>>(), [ids[11]]);
    let listed: Vec<i64> = store
        .query_errors(&window, Order::NewestFirst, 10)
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(
        listed,
        [ids[11], ids[10], ids[7]],
        "5, 6 retried, 8, 9 deleted"
    );
    let older = ErrorQuery {
        below_id: Some(ids[10]),
        ..window
    };
    assert_eq!(
        store.query_errors(&older, Order::NewestFirst, 1).unwrap()[0].id,
        ids[7]
    );
}

/// `errors list` and ErrorRequest filters: each field narrows, ids and paging are exact,
/// resolving and deleting touch only the ids given.
fn filtered_queries_select_exactly_what_they_name(store: &mut dyn StateStore) {
    let map = "filtered";
    let mut ids = Vec::new();
    for i in 0..6i64 {
        let mut e = error(
            map,
            if i % 2 == 0 {
                "SourceToDestination"
            } else {
                "DestinationToSource"
            },
            100 + i,
            &format!("2024-06-01T10:00:0{i}.000Z"),
        );
        e.phase = [
            ErrorPhase::InitialSync,
            ErrorPhase::Live,
            ErrorPhase::CatchUp,
        ][i as usize % 3];
        e.error_type = if i < 4 {
            ErrorType::ApplicationError
        } else {
            ErrorType::TransformError
        };
        ids.push(store.record_error(&e).unwrap());
    }
    let base = ErrorQuery::open(map);
    let count = |q: &ErrorQuery| store.count_errors(q).unwrap();
    assert_eq!(count(&base), 6);
    assert_eq!(
        count(&ErrorQuery {
            direction: Some("DestinationToSource".into()),
            ..base.clone()
        }),
        3
    );
    assert_eq!(
        count(&ErrorQuery {
            error_type: Some(ErrorType::TransformError),
            ..base.clone()
        }),
        2
    );
    assert_eq!(
        count(&ErrorQuery {
            phase: Some(ErrorPhase::CatchUp),
            ..base.clone()
        }),
        2
    );
    // from is inclusive, to exclusive.
    let window = ErrorQuery {
        from: Some("2024-06-01T10:00:01.000Z".into()),
        to: Some("2024-06-01T10:00:03.000Z".into()),
        ..base.clone()
    };
    let listed: Vec<i64> = store
        .query_errors(&window, Order::OldestFirst, 10)
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(listed, ids[1..3]);
    let picked = ErrorQuery {
        ids: vec![ids[0], ids[5], 999_999],
        ..base.clone()
    };
    assert_eq!(count(&picked), 2);
    let newest: Vec<i64> = store
        .query_errors(&base, Order::NewestFirst, 2)
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(newest, [ids[5], ids[4]]);
    let page = ErrorQuery {
        below_id: Some(ids[4]),
        ..base.clone()
    };
    assert_eq!(
        store.query_errors(&page, Order::NewestFirst, 2).unwrap()[0].id,
        ids[3]
    );
    // Other maps are never selected.
    assert_eq!(
        count(&ErrorQuery {
            map: Some("nope".into()),
            ..base.clone()
        }),
        0
    );

    assert_eq!(
        store
            .resolve_errors(&[ids[0], ids[1]], ErrorState::Retried)
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .resolve_errors(&[ids[0]], ErrorState::Retried)
            .unwrap(),
        0,
        "only open errors move"
    );
    assert_eq!(count(&base), 4);
    assert_eq!(
        count(&ErrorQuery {
            state: Some(ErrorState::Retried),
            ..base.clone()
        }),
        2
    );
    assert_eq!(store.delete_errors(&[ids[2], ids[3]]).unwrap(), 2);
    assert_eq!(
        count(&ErrorQuery {
            state: None,
            ..base.clone()
        }),
        4
    );

    // A request's narrow read: the same records as the full one, oldest first.
    let full: Vec<i64> = store
        .query_errors(&base, Order::OldestFirst, 100)
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    let keys = store.query_error_keys(&base, 100).unwrap();
    assert_eq!(keys.iter().map(|k| k.id).collect::<Vec<_>>(), full);
    assert_eq!(full, vec![ids[4], ids[5]]);
    assert_eq!(keys[0].key, r#"{"id":104}"#);
    assert_eq!(keys[0].direction, "SourceToDestination");
    assert_eq!(keys[0].phase, ErrorPhase::Live);
    assert_eq!(store.query_error_keys(&base, 1).unwrap().len(), 1);

    // Another session of the same store: what it does in one transaction is there for
    // this session once it returns, and a failed transaction keeps none of it where the
    // store has transactions.
    let other = store.another_session().unwrap();
    other
        .in_transaction(&mut || {
            assert_eq!(other.resolve_errors(&[ids[4]], ErrorState::Retried)?, 1);
            let mut again = error(map, "DestinationToSource", 105, "2024-06-01T11:00:00.000Z");
            again.message = "failed again".into();
            other.record_errors(&[again])
        })
        .unwrap();
    assert_eq!(count(&base), 1);
    let open = store.query_errors(&base, Order::OldestFirst, 10).unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].id, ids[5], "the same key's open record is updated");
    assert_eq!(open[0].message, "failed again");
    assert_eq!(open[0].attempts, 2);
    drop(other);
}

/// Map-level events (scope Map, no key) are never merged: each failed attempt is one, so
/// alert windows count them; a scope filter selects them or the records alone.
fn map_level_events_are_one_per_attempt(store: &mut dyn StateStore) {
    let map = "maplevel";
    let event = |at: &str| ErrorRecord {
        scope: ErrorScope::Map,
        key: String::new(),
        row: None,
        error_type: ErrorType::NetworkError,
        message: "endpoint crm (destination side): connection refused".into(),
        code: None,
        ..error(map, "SourceToDestination", 0, at)
    };
    let a = store
        .record_error(&event("2024-07-01T10:00:00.000Z"))
        .unwrap();
    let b = store
        .record_error(&event("2024-07-01T10:00:01.000Z"))
        .unwrap();
    assert_ne!(a, b, "two attempts are two events");
    store
        .record_error(&error(
            map,
            "SourceToDestination",
            1,
            "2024-07-01T10:00:02.000Z",
        ))
        .unwrap();
    let since = store
        .error_events_since("2024-07-01T00:00:00.000Z", Some(map))
        .unwrap();
    let network = since
        .iter()
        .filter(|e| e.map == map && e.error_type == ErrorType::NetworkError)
        .count();
    assert_eq!(network, 2);
    let mut only_map = ErrorQuery::open(map);
    only_map.scope = Some(ErrorScope::Map);
    let listed = store
        .query_errors(&only_map, Order::OldestFirst, 10)
        .unwrap();
    assert_eq!(listed.iter().map(|e| e.id).collect::<Vec<_>>(), [a, b]);
    assert!(
        listed
            .iter()
            .all(|e| e.scope == ErrorScope::Map && e.key.is_empty())
    );
    let mut records = ErrorQuery::open(map);
    records.scope = Some(ErrorScope::Record);
    assert_eq!(store.count_errors(&records).unwrap(), 1);
    assert_eq!(
        store
            .resolve_errors(&[a, b], ErrorState::Superseded)
            .unwrap(),
        2
    );
    assert_eq!(store.count_errors(&only_map).unwrap(), 0);
}

fn requests_keep_their_status(store: &mut dyn StateStore) {
    assert_eq!(store.request_status("retry-a").unwrap(), None);
    let status = RequestStatus {
        state: RequestState::Completed,
        matched: 3,
        succeeded: 2,
        failed: 1,
        requested_by: Some("Ada <ada@example.com>".into()),
        revision: Some("abc1234".into()),
        ..RequestStatus::new("customers", RequestAction::Retry)
    };
    let applied = serde_json::json!({"spec": {"map": "customers", "action": "Retry"}});
    store.put_request("retry-a", &applied, &status).unwrap();
    assert_eq!(
        store.request_status("retry-a").unwrap(),
        Some(status.clone())
    );
    let listed = store.requests().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].applied, applied);
    assert_eq!(listed[0].state, Some(RequestState::Completed));
    store.forget_request("retry-a").unwrap();
    assert!(store.requests().unwrap().is_empty());
    assert_eq!(store.request_status("retry-a").unwrap(), None);
}

/// A stored name this version does not know (a row written by another version, or edited
/// by hand) is a typed error when it is read, never a panic. `tamper` sets the phase of the
/// errored records of map `tampered` to `Bogus`.
fn unknown_stored_names_are_typed_errors(store: &dyn StateStore, tamper: &dyn Fn()) {
    store
        .record_error(&error(
            "tampered",
            "erp->crm",
            1,
            "2024-08-01T10:00:00.000Z",
        ))
        .unwrap();
    tamper();
    let read = store.query_errors(&ErrorQuery::open("tampered"), Order::OldestFirst, 10);
    assert!(
        matches!(
            &read,
            Err(StateError::Unknown { what: "error phase", value }) if value == "Bogus"
        ),
        "{read:?}"
    );
    assert!(matches!(
        store.open_error_counts("tampered"),
        Err(StateError::Unknown { .. })
    ));
}

/// Leases: one holder at a time; a renewal keeps the epoch; every grant to another holder
/// raises it, also after the lease was given back or expired; a dead holder named in
/// `take_from` loses it at once; only unexpired leases are listed.
fn leases_grant_one_holder_with_rising_epochs(store: &dyn StateStore) {
    use dualwrite::state::LeaseGrant;
    let ttl = Duration::from_secs(30);
    let granted = |g: LeaseGrant| match g {
        LeaseGrant::Granted { epoch } => epoch,
        LeaseGrant::Taken(l) => panic!("taken by {l:?}"),
    };
    let first = granted(store.acquire_lease("m", "a:1", ttl, None).unwrap());
    assert!(first > 0);
    assert_eq!(
        granted(store.acquire_lease("m", "a:1", ttl, None).unwrap()),
        first,
        "renewal"
    );
    match store.acquire_lease("m", "b:2", ttl, None).unwrap() {
        LeaseGrant::Taken(lease) => {
            assert_eq!((lease.map.as_str(), lease.holder.as_str()), ("m", "a:1"));
            assert_eq!(lease.epoch, first);
            assert!(lease.since.ends_with('Z'), "{lease:?}");
        }
        other => panic!("two holders at once: {other:?}"),
    }
    let leases = store.leases().unwrap();
    assert_eq!(leases.len(), 1, "{leases:?}");
    // Given back: free at once, and the next holder's epoch is higher.
    store.release_leases("a:1", Some("m")).unwrap();
    assert!(store.leases().unwrap().is_empty());
    let second = granted(store.acquire_lease("m", "b:2", ttl, None).unwrap());
    assert!(second > first, "{second} > {first}");
    // Taken over from a holder known to be dead, before its TTL.
    let third = granted(store.acquire_lease("m", "c:3", ttl, Some("b:2")).unwrap());
    assert!(third > second);
    // Expired: anyone may take it.
    granted(
        store
            .acquire_lease("n", "a:1", Duration::from_millis(1), None)
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(20));
    let n = granted(store.acquire_lease("n", "b:2", ttl, None).unwrap());
    assert!(
        store
            .leases()
            .unwrap()
            .iter()
            .any(|l| l.map == "n" && l.epoch == n)
    );
    assert_eq!(store.heartbeat("a:1", ttl).unwrap(), 1);
    assert_eq!(store.heartbeat("b:2", ttl).unwrap(), 2);
    store.release_leases("b:2", None).unwrap();
    assert_eq!(store.heartbeat("a:1", ttl).unwrap(), 1, "b:2 left");
    assert!(!store.leases().unwrap().iter().any(|l| l.holder == "b:2"));
}

// ---------------------------------------------------------------------------------------
// SQLite

#[test]
fn sqlite_store_keeps_the_state_store_contract() {
    with_timeout(60, || {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".dualwrite/state.db");
        let mut store = SqliteStore::open(&path, ".dualwrite/state.db").unwrap();
        let poison = |prefix: &str| {
            let conn = rusqlite::Connection::open(&path).unwrap();
            for event in ["INSERT", "UPDATE"] {
                conn.execute_batch(&format!(
                    "CREATE TRIGGER poison_{event} BEFORE {event} ON runtime
                     WHEN NEW.name LIKE '{prefix}%'
                     BEGIN SELECT RAISE(ABORT, 'poisoned'); END;"
                ))
                .unwrap();
            }
        };
        behaves_as_a_state_store(Subject {
            store: &mut store,
            poison_runtime: &poison,
            secrets: Vec::new(),
        });
        leases_grant_one_holder_with_rising_epochs(&store);
        unknown_stored_names_are_typed_errors(&store, &|| {
            rusqlite::Connection::open(&path)
                .unwrap()
                .execute(
                    "UPDATE errors SET phase = 'Bogus' WHERE map = 'tampered'",
                    [],
                )
                .unwrap();
        });
    });
}

/// A store as a version before the error counts left it (no counts, no triggers) is read
/// right by a reader (which counts the records), given its counts filled from the records
/// on the next open for writing, and counted from then on.
struct OlderStore<'a> {
    writer: &'a dyn Fn() -> Box<dyn StateStore>,
    reader: &'a dyn Fn() -> Box<dyn StateStore>,
    /// Drops the counts and their triggers, as if they had never been made.
    make_older: &'a dyn Fn(),
}

fn counts_come_to_an_older_store(s: OlderStore<'_>) {
    let map = "older";
    let writer = (s.writer)();
    for i in 0..5i64 {
        let mut e = error(map, "SourceToDestination", i, "2024-09-01T10:00:00.000Z");
        if i % 2 == 0 {
            e.error_type = ErrorType::TransformError;
        }
        writer.record_error(&e).unwrap();
    }
    drop(writer);
    (s.make_older)();
    let reader = (s.reader)();
    assert_eq!(reader.count_errors(&ErrorQuery::open(map)).unwrap(), 5);
    assert_counts_agree(reader.as_ref(), map);
    let writer = (s.writer)();
    assert_counts_agree(writer.as_ref(), map);
    assert_eq!(
        writer
            .open_error_counts(map)
            .unwrap()
            .iter()
            .map(|c| c.2)
            .sum::<u64>(),
        5
    );
    writer
        .record_error(&error(
            map,
            "DestinationToSource",
            9,
            "2024-09-01T10:00:01.000Z",
        ))
        .unwrap();
    writer
        .resolve_errors(
            &[writer
                .query_errors(&ErrorQuery::open(map), Order::OldestFirst, 1)
                .unwrap()[0]
                .id],
            ErrorState::Retried,
        )
        .unwrap();
    assert_counts_agree(writer.as_ref(), map);
    // A reader opened before the counts came still answers right.
    assert_counts_agree(reader.as_ref(), map);
    assert_counts_agree((s.reader)().as_ref(), map);
}

#[test]
fn sqlite_store_from_before_error_counts_gets_them_on_its_next_open_for_writing() {
    with_timeout(60, || {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        counts_come_to_an_older_store(OlderStore {
            writer: &|| Box::new(SqliteStore::open(&path, "state.db").unwrap()),
            reader: &|| Box::new(SqliteStore::open_read_only(&path, "state.db").unwrap()),
            make_older: &|| {
                rusqlite::Connection::open(&path)
                    .unwrap()
                    .execute_batch(
                        "DROP TRIGGER errors_counted_insert; DROP TRIGGER errors_counted_update;
                         DROP TRIGGER errors_counted_delete; DROP TABLE error_counts;",
                    )
                    .unwrap()
            },
        });
    });
}

// ---------------------------------------------------------------------------------------
// PostgreSQL

#[test]
fn postgres_store_from_before_error_counts_gets_them_on_its_next_open_for_writing() {
    let Some(url) = reachable_postgres() else {
        return;
    };
    with_timeout(120, move || {
        let schema = TestSchema::new(&url);
        let name = schema.name.clone();
        counts_come_to_an_older_store(OlderStore {
            writer: &|| Box::new(PostgresStore::connect(&url, &name).unwrap()),
            reader: &|| {
                Box::new(
                    PostgresStore::open_existing(&url, &name)
                        .unwrap()
                        .expect("the store exists"),
                )
            },
            make_older: &|| {
                admin(
                    &url,
                    &format!(
                        "DROP TRIGGER errors_counted_insert ON {name}.errors;
                         DROP TRIGGER errors_counted_update ON {name}.errors;
                         DROP TRIGGER errors_counted_delete ON {name}.errors;
                         DROP TABLE {name}.error_counts;"
                    ),
                )
                .unwrap()
            },
        });
    });
}

/// Installs a trigger in `schema` that rejects runtime writes of names with this prefix.
fn poison_postgres(url: &str, schema: &str, prefix: &str) {
    admin(
        url,
        &format!(
            "CREATE FUNCTION {schema}.poison() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN RAISE EXCEPTION 'poisoned'; END $$;
             CREATE TRIGGER poison BEFORE INSERT OR UPDATE ON {schema}.runtime FOR EACH ROW
             WHEN (NEW.name LIKE '{prefix}%') EXECUTE FUNCTION {schema}.poison();"
        ),
    )
    .unwrap();
}

fn postgres_suite(url: &str) {
    let schema = TestSchema::new(url);
    let mut store = PostgresStore::connect(url, &schema.name).unwrap();
    assert_eq!(store.schema(), schema.name);
    let poison = |prefix: &str| poison_postgres(url, &schema.name, prefix);
    let mut secrets = vec![url.to_string()];
    if url.contains(&format!(":{LEAK_CANARY}@")) {
        secrets.push(LEAK_CANARY.to_string());
    }
    assert_no_secret(&secrets, &format!("{store:?}"));
    behaves_as_a_state_store(Subject {
        store: &mut store,
        poison_runtime: &poison,
        secrets,
    });
    leases_grant_one_holder_with_rising_epochs(&store);
    unknown_stored_names_are_typed_errors(&store, &|| {
        admin(
            url,
            &format!(
                "UPDATE {}.errors SET phase = 'Bogus' WHERE map = 'tampered'",
                schema.name
            ),
        )
        .unwrap();
    });
    drop(store);
}

#[test]
fn postgres_store_keeps_the_state_store_contract_from_plain_code() {
    let Some(url) = reachable_postgres() else {
        return;
    };
    with_timeout(120, move || postgres_suite(&url));
}

/// The reconciler calls the synchronous trait from inside a multi-thread tokio runtime:
/// that must neither panic ("Cannot start a runtime from within a runtime") nor deadlock.
#[test]
fn postgres_store_works_inside_a_tokio_runtime() {
    let Some(url) = reachable_postgres() else {
        return;
    };
    with_timeout(120, move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            postgres_suite(&url);
            // A store opened and dropped on a runtime thread, including a current-thread one.
            tokio::task::spawn(async move {
                let schema = TestSchema::new(&url);
                let store = PostgresStore::connect(&url, &schema.name).unwrap();
                store
                    .log("m", "2024-05-01T00:00:00Z", "Created", "x")
                    .unwrap();
                assert_eq!(store.activity("m", 5).unwrap().len(), 1);
            })
            .await
            .unwrap();
        });
        let current = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let url = postgres_url();
        current.block_on(async {
            let schema = TestSchema::new(&url);
            let store = PostgresStore::connect(&url, &schema.name).unwrap();
            assert!(store.maps().unwrap().is_empty());
        });
    });
}

#[test]
fn postgres_open_existing_never_creates_the_store() {
    let Some(url) = reachable_postgres() else {
        return;
    };
    with_timeout(60, move || {
        let schema = TestSchema::new(&url);
        assert!(
            PostgresStore::open_existing(&url, &schema.name)
                .unwrap()
                .is_none()
        );
        // Still missing: opening for reading created nothing.
        assert!(
            PostgresStore::open_existing(&url, &schema.name)
                .unwrap()
                .is_none()
        );
        let mut writer = PostgresStore::connect(&url, &schema.name).unwrap();
        writer
            .save(&map("customers", Phase::Running), &runtime(3))
            .unwrap();
        let reader = PostgresStore::open_existing(&url, &schema.name)
            .unwrap()
            .expect("the store exists now");
        assert_eq!(
            reader.maps().unwrap(),
            vec![map("customers", Phase::Running)]
        );
        assert_eq!(reader.runtime("customers").unwrap(), runtime(3));
        // The reader's session is read-only.
        let err = reader
            .log("customers", "2024-05-01T00:00:00Z", "Created", "x")
            .unwrap_err();
        assert!(err.to_string().contains("read-only"), "{err}");
        // Connecting twice for writing is idempotent.
        drop(PostgresStore::connect(&url, &schema.name).unwrap());
        assert_eq!(writer.maps().unwrap().len(), 1);
    });
}

#[test]
fn postgres_errors_and_descriptions_never_show_the_url() {
    let Some(url) = reachable_postgres() else {
        return;
    };
    with_timeout(60, move || {
        // A database that does not exist, and a server that is not there.
        let missing_db = with_database(&url, "dw_no_such_database");
        let unreachable = "postgres://dualwrite:hunter2hunter2@127.0.0.1:1/state";
        for bad in [missing_db.as_str(), unreachable] {
            let mut secrets = vec![bad.to_string(), "hunter2hunter2".to_string()];
            if bad.contains(LEAK_CANARY) {
                secrets.push(LEAK_CANARY.into());
            }
            let err = PostgresStore::connect(bad, "dualwrite_state").unwrap_err();
            assert_no_secret(&secrets, &format!("{err} {err:?}"));
            let err = PostgresStore::open_existing(bad, "dualwrite_state").unwrap_err();
            assert_no_secret(&secrets, &format!("{err} {err:?}"));
        }
        // Bad schema names are refused before connecting.
        assert!(PostgresStore::connect(&url, "x; DROP TABLE y").is_err());
        let schema = TestSchema::new(&url);
        let store = PostgresStore::connect(&url, &schema.name)
            .unwrap()
            .labelled("postgres ($DUALWRITE_STATE_URL)");
        assert_eq!(
            store.describe(),
            "state store postgres ($DUALWRITE_STATE_URL)"
        );
        assert!(!format!("{store:?}").contains(LEAK_CANARY));
    });
}

// ---------------------------------------------------------------------------------------
// End to end: the real binary with `stateStore: { postgres: ... }`

const PG_PROJECT: &str = "\
apiVersion: dualwrite/v1
kind: Project
metadata: { name: test }
spec:
  endpoints:
    erp: { sqlite: { path: .dualwrite/erp.db } }
    crm: { sqlite: { path: .dualwrite/crm.db } }
  stateStore: { postgres: { urlFromEnv: DUALWRITE_STATE_URL } }
";

#[test]
fn reconcile_keeps_its_state_in_postgres_and_the_dry_run_reads_it() {
    let Some(url) = reachable_postgres() else {
        return;
    };
    with_timeout(180, move || {
        let db = TestDatabase::create(&url);
        let state_url = db.url();
        let repo = support::Repo::new(&[
            ("dualwrite.yaml", PG_PROJECT),
            ("maps/customers.yaml", support::CUSTOMERS),
        ]);
        std::fs::create_dir_all(repo.path().join(".dualwrite")).unwrap();
        let erp = rusqlite::Connection::open(repo.path().join(".dualwrite/erp.db")).unwrap();
        erp.execute_batch(
            "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
             INSERT INTO customers VALUES (1, 'Ada'), (2, 'Grace'), (3, 'Edsger');",
        )
        .unwrap();
        let crm = rusqlite::Connection::open(repo.path().join(".dualwrite/crm.db")).unwrap();
        crm.execute_batch("CREATE TABLE account (id INTEGER PRIMARY KEY, name TEXT);")
            .unwrap();
        let secrets = [state_url.clone(), LEAK_CANARY.to_string()];
        let env = [("DUALWRITE_STATE_URL", state_url.as_str())];

        let run = support::run_in(repo.path(), &["reconcile"], &env);
        assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
        assert_no_secret(&secrets, &format!("{}{}", run.stdout, run.stderr));
        let rows: Vec<(i64, String)> = crm
            .prepare("SELECT id, name FROM account ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            rows,
            [(1, "Ada".into()), (2, "Grace".into()), (3, "Edsger".into())]
        );
        assert!(
            !repo.path().join(".dualwrite/state.db").exists(),
            "no SQLite state store"
        );

        let run = support::run_in(repo.path(), &["reconcile", "--dry-run"], &env);
        assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
        assert!(
            run.stdout
                .starts_with("Actual state: state store postgres ($DUALWRITE_STATE_URL)\n"),
            "{}",
            run.stdout
        );
        assert!(run.stdout.contains("No changes"), "{}", run.stdout);
        assert_no_secret(&secrets, &format!("{}{}", run.stdout, run.stderr));

        // Without the variable, or with the server gone, the dry run falls back to the
        // status files instead of failing.
        let unreachable = "postgres://postgres:notsecret@127.0.0.1:1/state";
        for env in [vec![], vec![("DUALWRITE_STATE_URL", unreachable)]] {
            let run = support::run_in(repo.path(), &["reconcile", "--dry-run"], &env);
            assert_eq!(run.code, 0, "{env:?}: {}{}", run.stdout, run.stderr);
            assert!(
                run.stdout.starts_with("Actual state: ")
                    && !run.stdout.starts_with("Actual state: state store"),
                "{env:?}: {}",
                run.stdout
            );
            assert_no_secret(&secrets, &format!("{}{}", run.stdout, run.stderr));
        }

        // Reconciling for real without the variable is a clear error naming it.
        let run = support::run_in(repo.path(), &["reconcile"], &[]);
        assert_ne!(run.code, 0, "{}{}", run.stdout, run.stderr);
        assert!(
            run.stderr.contains("DUALWRITE_STATE_URL"),
            "{}{}",
            run.stdout,
            run.stderr
        );
        drop(db);
    });
}
