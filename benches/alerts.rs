//! Alert evaluation figures (issue: evaluating 100 rules over 1,000,000 recorded errors well
//! under a second; recording an error with 100 rules loaded adds under 10 µs).
//!
//! `cargo bench --bench alerts`
//!
//! Measures, in one run: loading 1,000,000 errored records from a SQLite state store into the
//! windows (what a reconcile pass does at start), evaluating 100 rules for 100 maps over them,
//! and recording one more error followed by the evaluation of every rule for that map (what
//! happens after each live batch that recorded errors).

use std::time::Instant;

use dualwrite::alert::{Engine, Windows};
use dualwrite::clock::format_millis;
use dualwrite::config::TableMap;
use dualwrite::state::{
    ErrorPhase, ErrorRecord, ErrorState, ErrorType, StateStore, sqlite::SqliteStore,
};

const ERRORS: i64 = 1_000_000;
const MAPS: usize = 100;
const RULES: usize = 100;
const TYPES: [ErrorType; 3] = [
    ErrorType::ApplicationError,
    ErrorType::NetworkError,
    ErrorType::TransformError,
];

fn map(i: usize) -> TableMap {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "dualwrite/v1", "kind": "TableMap",
        "metadata": { "name": format!("map-{i}"), "labels": { "team": format!("t{}", i % 10) } },
        "spec": { "source": { "endpoint": "a", "table": "t" }, "destination": { "endpoint": "b", "table": "t" },
                  "columns": [{ "source": "id", "destination": "id", "key": true }] }
    }))
    .unwrap()
}

fn rule(i: usize) -> dualwrite::config::AlertRule {
    // Half select one map by name, half a team by label; types and windows vary.
    let selector = if i.is_multiple_of(2) {
        serde_json::json!({ "maps": [format!("map-{i}")] })
    } else {
        serde_json::json!({ "selector": { "matchLabels": { "team": format!("t{}", i % 10) } } })
    };
    let error_type = ["Any", "ApplicationError", "NetworkError"][i % 3];
    let window = ["15m", "1h", "1d"][i % 3];
    let mut spec = serde_json::json!({
        "errorType": error_type, "threshold": 50 + i, "window": window, "action": "None",
    });
    spec.as_object_mut()
        .unwrap()
        .extend(selector.as_object().unwrap().clone());
    serde_json::from_value(serde_json::json!({
        "apiVersion": "dualwrite/v1", "kind": "AlertRule", "metadata": { "name": format!("rule-{i}") }, "spec": spec
    }))
    .unwrap()
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SqliteStore::open(&dir.path().join("state.db"), "bench").unwrap();
    let now = dualwrite::clock::millis(chrono::Utc::now());
    // 1,000,000 errored records over the last 24 hours, spread over 100 maps.
    let t = Instant::now();
    store
        .bulk_insert_errors((0..ERRORS).map(|i| ErrorRecord {
            scope: dualwrite::state::ErrorScope::Record,
            id: 0,
            map: format!("map-{}", i as usize % MAPS),
            phase: ErrorPhase::Live,
            direction: "SourceToDestination".into(),
            error_type: TYPES[i as usize % 3],
            key: format!("{{\"id\":{i}}}"),
            row: None,
            message: "CHECK constraint failed".into(),
            code: Some("23514".into()),
            first_at: format_millis(now - 86_400_000 + i * 86_400_000 / ERRORS),
            last_at: format_millis(now - 86_400_000 + i * 86_400_000 / ERRORS),
            attempts: 1,
            state: ErrorState::Open,
        }))
        .unwrap();
    println!(
        "setup: {ERRORS} errored records written in {:.2?}",
        t.elapsed()
    );

    let maps: Vec<TableMap> = (0..MAPS).map(map).collect();
    let mut engine = Engine {
        rules: (0..RULES).map(rule).collect(),
        ..Default::default()
    };

    let t = Instant::now();
    let since = format_millis(now - engine.longest_window());
    let events = store.error_events_since(&since, None).unwrap();
    let loaded = events.len();
    let mut windows = Windows::default();
    for e in &events {
        let at = |t: &str| dualwrite::clock::parse(t).unwrap();
        windows.record_failure(&e.map, e.error_type, at(&e.first_at), at(&e.last_at));
    }
    engine.windows = windows;
    let load = t.elapsed();

    let t = Instant::now();
    let mut fired = 0;
    for m in &maps {
        fired += engine.evaluate_map(m, None, now).len();
    }
    let evaluate = t.elapsed();

    // Recording one more error, then evaluating every rule for that map, 100,000 times.
    const RECORDS: usize = 100_000;
    let t = Instant::now();
    for i in 0..RECORDS {
        let m = &maps[i % MAPS];
        engine
            .windows
            .record(&m.metadata.name, TYPES[i % 3], now + i as i64);
        std::hint::black_box(engine.evaluate_map(m, None, now + i as i64));
    }
    let per_record = t.elapsed() / RECORDS as u32;

    println!("load {loaded} recorded errors from the SQLite store into windows: {load:.2?}");
    println!(
        "evaluate {RULES} rules for {MAPS} maps over them: {evaluate:.2?} ({fired} started firing)"
    );
    println!(
        "evaluate, load included: {:.2?} (goal: well under 1 s)",
        load + evaluate
    );
    println!(
        "record one error + evaluate the rules of its map, with {RULES} rules loaded: {per_record:.2?} per error (goal: < 10 µs)"
    );
}
