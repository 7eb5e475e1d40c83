//! Error management end to end, as a user drives it: records a real database rejects become
//! errored records; the user fixes the cause and commits an ErrorRequest (Retry or Dismiss)
//! to git; `dualwrite reconcile` runs it once, in order, within the limits, and the user
//! reads the outcome in `status/` and with `dualwrite errors list` / `dualwrite logs`.
//! Re-running the initial sync with and without errors, catch-up errors and retention too.
//!
//! Source: a SQLite app (`erp.db`). Target: SQLite (a trigger rejects negative credit) or a
//! real PostgreSQL (a CHECK constraint does); "fixing the cause" drops the rule.

mod common;
mod support;

use common::{Plain, TestDb, unique_table};
use dualwrite::endpoint::EndpointSpec;
use serde_json::Value;
use support::{Repo, Run, run_in};

/// Where rejected records go.
struct Target {
    db: TestDb,
    table: String,
    url: Option<String>,
}

impl Target {
    async fn sqlite() -> Target {
        Target {
            db: TestDb::sqlite().await,
            table: "account".into(),
            url: None,
        }
    }

    async fn postgres() -> Option<Target> {
        let mut db = TestDb::postgres().await?;
        let table = unique_table("errq");
        db.on_drop(format!("DROP TABLE IF EXISTS {table}"));
        let EndpointSpec::Postgres { url } = db.spec.clone() else {
            unreachable!()
        };
        Some(Target {
            db,
            table,
            url: Some(url),
        })
    }

    fn endpoint_yaml(&self) -> String {
        match &self.db.spec {
            EndpointSpec::Sqlite { path } => {
                format!("{{ sqlite: {{ path: {} }} }}", path.display())
            }
            _ => "{ postgres: { urlFromEnv: DW_ERRQ_PG } }".into(),
        }
    }

    /// The target table; negative credit is refused until `fix`.
    async fn create(&mut self) {
        let t = &self.table;
        let sql = match self.db.engine {
            "sqlite" => format!(
                "CREATE TABLE {t} (id INTEGER PRIMARY KEY, name TEXT NOT NULL, credit INTEGER NOT NULL);
                 CREATE TRIGGER no_negative_insert BEFORE INSERT ON {t} WHEN NEW.credit < 0
                   BEGIN SELECT RAISE(ABORT, 'credit must not be negative'); END;
                 CREATE TRIGGER no_negative_update BEFORE UPDATE ON {t} WHEN NEW.credit < 0
                   BEGIN SELECT RAISE(ABORT, 'credit must not be negative'); END;"
            ),
            _ => format!(
                "CREATE TABLE {t} (id bigint PRIMARY KEY, name text NOT NULL,
                   credit bigint NOT NULL CONSTRAINT {t}_credit CHECK (credit >= 0))"
            ),
        };
        self.db.plain.exec(&sql).await;
    }

    /// Fixes the cause: the target accepts negative credit from now on.
    async fn fix(&mut self) {
        let t = &self.table;
        let sql = match self.db.engine {
            "sqlite" => {
                "DROP TRIGGER no_negative_insert; DROP TRIGGER no_negative_update;".to_string()
            }
            _ => format!("ALTER TABLE {t} DROP CONSTRAINT {t}_credit"),
        };
        self.db.plain.exec(&sql).await;
    }

    /// (id, name, credit) of every row, by id.
    async fn rows(&mut self) -> Vec<(i64, String, i64)> {
        let sql = format!("SELECT id, name, credit FROM {} ORDER BY id", self.table);
        match &mut self.db.plain {
            Plain::Sqlite(path) => {
                let conn = rusqlite::Connection::open(&*path).unwrap();
                let mut stmt = conn.prepare(&sql).unwrap();
                stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap()
            }
            Plain::Postgres(client) => client
                .query(&sql, &[])
                .await
                .unwrap()
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect(),
            Plain::Mysql(_) => unreachable!(),
        }
    }

    fn ids(rows: &[(i64, String, i64)]) -> Vec<i64> {
        rows.iter().map(|r| r.0).collect()
    }
}

/// A config repository in git with a SQLite source app and a map to the target.
struct Case {
    repo: Repo,
    target: Target,
}

impl Case {
    /// `rows` (id, name, credit) in the source; the map is committed Running.
    async fn new(mut target: Target, rows: &[(i64, &str, i64)], project_extra: &str) -> Case {
        target.create().await;
        let repo = Repo::new(&[]);
        repo.write(
            "dualwrite.yaml",
            &format!(
                "apiVersion: dualwrite/v1\nkind: Project\nmetadata: {{ name: errq }}\nspec:\n  endpoints:\n    erp: {{ sqlite: {{ path: erp.db }} }}\n    crm: {}\n{project_extra}",
                target.endpoint_yaml()
            ),
        );
        let case = Case { repo, target };
        case.write_map("Running", 1, true);
        let erp = case.erp();
        erp.execute_batch(
            "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, credit INTEGER NOT NULL)",
        )
        .unwrap();
        for (id, name, credit) in rows {
            erp.execute(
                "INSERT INTO customers VALUES (?1, ?2, ?3)",
                rusqlite::params![id, name, credit],
            )
            .unwrap();
        }
        case.repo.write(".gitignore", "erp.db\n.dualwrite/\n");
        case.repo.commit_all("customers map");
        case
    }

    fn write_map(&self, state: &str, run: u32, retry_errors: bool) {
        self.repo.write(
            "maps/customers.yaml",
            &format!(
                "apiVersion: dualwrite/v1\nkind: TableMap\nmetadata: {{ name: customers }}\nspec:\n  state: {state}\n  source: {{ endpoint: erp, table: customers }}\n  destination: {{ endpoint: crm, table: {} }}\n  columns:\n    - {{ source: id, destination: id, key: true }}\n    - {{ source: name, destination: name }}\n    - {{ source: credit, destination: credit }}\n  initialSync: {{ run: {run}, retryErrors: {retry_errors}, batchSize: 100 }}\n  batchSize: 100\n",
                self.target.table
            ),
        );
    }

    fn erp(&self) -> rusqlite::Connection {
        let conn = rusqlite::Connection::open(self.repo.path().join("erp.db")).unwrap();
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .unwrap();
        conn
    }

    /// Changes the source without a captured change (as dualwrite's own writes are marked):
    /// only a write that reads the current row can carry it.
    fn change_source_uncaptured(&self, sql: &str) {
        self.erp()
            .execute_batch(&format!(
                "BEGIN; INSERT INTO _dualwrite_suppress VALUES (1); {sql}; DELETE FROM _dualwrite_suppress; COMMIT;"
            ))
            .unwrap();
    }

    fn run(&self, args: &[&str]) -> Run {
        let env: Vec<(&str, &str)> = self
            .target
            .url
            .as_deref()
            .map(|url| ("DW_ERRQ_PG", url))
            .into_iter()
            .collect();
        let run = run_in(self.repo.path(), args, &env);
        if let Some(url) = &self.target.url {
            assert!(
                !run.stdout.contains(url) && !run.stderr.contains(url),
                "the URL leaked"
            );
        }
        run
    }

    fn reconcile(&self) -> Run {
        let run = self.run(&["reconcile"]);
        assert_eq!(run.code, 0, "reconcile: {}{}", run.stdout, run.stderr);
        run
    }

    /// A status file as the user reads it.
    fn status(&self, path: &str) -> Value {
        let text = std::fs::read_to_string(self.repo.path().join("status").join(path))
            .unwrap_or_else(|e| panic!("status/{path}: {e}"));
        serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("status/{path}: {e}\n{text}"))
    }

    /// `dualwrite errors list --output json ARGS`: (matched, records).
    fn errors(&self, args: &[&str]) -> (u64, Vec<Value>) {
        let mut all = vec!["errors", "list", "--output", "json"];
        all.extend_from_slice(args);
        let run = self.run(&all);
        assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
        let doc: Value = serde_json::from_str(&run.stdout).unwrap();
        assert_eq!(doc["formatVersion"], 1);
        (
            doc["matched"].as_u64().unwrap(),
            doc["errors"].as_array().unwrap().clone(),
        )
    }

    /// The id of the errored record of a source key.
    fn error_id(&self, key: i64) -> i64 {
        let (_, records) = self.errors(&["--state", "all", "--limit", "100000"]);
        records
            .iter()
            .find(|e| e["key"]["id"] == key)
            .unwrap_or_else(|| panic!("no errored record for id {key} among {}", records.len()))
            ["id"]
            .as_i64()
            .unwrap()
    }

    fn request(&self, name: &str, action: &str, filter: &str) {
        self.repo.write(
            &format!("requests/{name}.yaml"),
            &format!(
                "apiVersion: dualwrite/v1\nkind: ErrorRequest\nmetadata: {{ name: {name} }}\nspec:\n  map: customers\n  action: {action}\n{filter}"
            ),
        );
    }

    /// The activity log events (`dualwrite logs`), oldest first.
    fn events(&self) -> Vec<(String, String)> {
        let run = self.run(&["logs", "customers"]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        run.stdout
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                (
                    v["event"].as_str().unwrap().to_string(),
                    v["message"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }
}

fn rows_with_bad(n: i64, bad: &[i64]) -> Vec<(i64, &'static str, i64)> {
    (1..=n)
        .map(|i| (i, "customer", if bad.contains(&i) { -1 } else { i * 10 }))
        .collect()
}

async fn retry_after_fix_then_dismiss(target: Target) {
    let mut case = Case::new(target, &rows_with_bad(20, &[3, 7, 11]), "").await;
    case.reconcile();
    let map = case.status("maps/customers.yaml");
    assert_eq!(
        map["status"]["initialSync"]["status"],
        "CompletedWithErrors"
    );
    assert_eq!(
        map["status"]["initialSync"]["directions"]["SourceToDestination"]["errors"],
        3
    );
    assert_eq!(map["status"]["errors"]["open"], 3);
    let (matched, records) = case.errors(&["--map", "customers"]);
    assert_eq!(matched, 3);
    assert!(
        records
            .iter()
            .all(|e| e["type"] == "ApplicationError" && e["phase"] == "InitialSync"),
        "{records:?}"
    );
    let dismissed_id = case.error_id(11);

    // The source row changes after it failed, without a captured change: a retry must write
    // it as it is now, not the copy stored with the error.
    case.change_source_uncaptured("UPDATE customers SET name = 'Seven, fixed' WHERE id = 7");
    case.request(
        "dismiss-eleven",
        "Dismiss",
        &format!("  filter: {{ ids: [{dismissed_id}] }}\n"),
    );
    let dismiss_commit = case.repo.commit_all("dismiss 11");
    case.request("retry-all", "Retry", "");
    let retry_commit = case.repo.commit_all("retry the rest");
    let plan = case.run(&["reconcile", "--dry-run"]);
    assert!(
        plan.stdout
            .contains("request dismiss-eleven: Added (Dismiss on map customers): runs once in the next pass: dismisses the 1 open errored record(s) it matches now"),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains("request retry-all: Added (Retry on map customers): runs once in the next pass: retries the 3 open errored record(s) it matches now"),
        "{}",
        plan.stdout
    );
    case.target.fix().await;
    case.reconcile();

    // Dismiss ran first (committed first), so the retry matched the two left.
    let dismiss = &case.status("requests/dismiss-eleven.yaml")["status"];
    assert_eq!(dismiss["state"], "Completed", "{dismiss:?}");
    assert_eq!(dismiss["matched"], 1);
    assert_eq!(dismiss["dismissed"], 1);
    assert_eq!(dismiss["requestedBy"], "Ada Lovelace <ada@example.com>");
    assert_eq!(dismiss["revision"], dismiss_commit[..7]);
    let retry = &case.status("requests/retry-all.yaml")["status"];
    assert_eq!(retry["state"], "Completed", "{retry:?}");
    assert_eq!(
        (&retry["matched"], &retry["succeeded"], &retry["failed"]),
        (&Value::from(2), &Value::from(2), &Value::from(0))
    );
    assert_eq!(retry["revision"], retry_commit[..7]);

    let rows = case.target.rows().await;
    let mut expected: Vec<i64> = (1..=20).filter(|i| *i != 11).collect();
    expected.sort();
    assert_eq!(
        Target::ids(&rows),
        expected,
        "11 was dismissed, not written"
    );
    assert!(
        rows.contains(&(7, "Seven, fixed".into(), -1)),
        "the current row was written: {rows:?}"
    );
    assert_eq!(case.errors(&[]).0, 0, "nothing open");
    let (_, all) = case.errors(&["--state", "all"]);
    assert_eq!(
        all.len(),
        2,
        "the dismissed record is gone for good: {all:?}"
    );
    assert!(all.iter().all(|e| e["state"] == "Retried"), "{all:?}");
    assert_eq!(
        case.status("maps/customers.yaml")["status"]["errors"]["open"],
        0
    );

    // A request runs once: another pass, and an edit after it ran, change nothing.
    let before =
        std::fs::read_to_string(case.repo.path().join("status/requests/retry-all.yaml")).unwrap();
    case.reconcile();
    let after =
        std::fs::read_to_string(case.repo.path().join("status/requests/retry-all.yaml")).unwrap();
    assert_eq!(before, after);
    case.request("retry-all", "Retry", "  filter: { phase: Live }\n");
    case.repo.commit_all("edit a request that ran");
    let plan = case.run(&["reconcile", "--dry-run"]);
    assert!(
        plan.stdout.contains("request retry-all: Changed (Retry on map customers): edited after it ran: it does not run again"),
        "{}",
        plan.stdout
    );
    case.reconcile();
    let retry = &case.status("requests/retry-all.yaml")["status"];
    assert_eq!(retry["succeeded"], 2);
    assert!(
        retry["reason"]
            .as_str()
            .unwrap()
            .contains("edited after it ran"),
        "{retry:?}"
    );
    let runs: Vec<_> = case
        .events()
        .into_iter()
        .filter(|(e, _)| e.starts_with("Request"))
        .collect();
    assert_eq!(runs.len(), 2, "each request ran once: {runs:?}");
    assert!(runs[0].1.starts_with("request dismiss-eleven (Dismiss by Ada Lovelace <ada@example.com>) Completed: matched 1, dismissed 1"), "{runs:?}");
    assert!(runs[1].1.starts_with("request retry-all (Retry by Ada Lovelace <ada@example.com>) Completed: matched 2, succeeded 2, failed 0"), "{runs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_retry_after_fix_writes_the_current_row_and_dismiss_removes_only_what_it_names() {
    common::with_timeout(retry_after_fix_then_dismiss(Target::sqlite().await)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_retry_after_fix_writes_the_current_row_and_dismiss_removes_only_what_it_names() {
    let Some(target) = Target::postgres().await else {
        return;
    };
    common::with_timeout(retry_after_fix_then_dismiss(target)).await;
}

async fn rerun_with_and_without_errors(target: Target) {
    let mut case = Case::new(target, &rows_with_bad(10, &[4, 5]), "").await;
    case.reconcile();
    assert_eq!(case.errors(&[]).0, 2);
    // New rows and a change the live sync never sees: only an initial sync can carry them.
    case.change_source_uncaptured(
        "INSERT INTO customers VALUES (11, 'new', 110), (12, 'new', 120); UPDATE customers SET name = 'renamed' WHERE id = 1",
    );
    case.target.fix().await;

    // Run 2, "Rerun execution without errors": only new data; the errored records stay.
    case.write_map("Running", 2, false);
    case.repo.commit_all("re-run without errors");
    case.reconcile();
    let rows = case.target.rows().await;
    assert_eq!(Target::ids(&rows), [1, 2, 3, 6, 7, 8, 9, 10, 11, 12]);
    assert_eq!(rows[0].1, "customer", "existing rows are left as they are");
    let (open, records) = case.errors(&[]);
    assert_eq!(open, 2);
    assert!(records.iter().all(|e| e["attempts"] == 1), "{records:?}");
    let sync = &case.status("maps/customers.yaml")["status"]["initialSync"];
    assert_eq!(sync["run"], 2);
    assert_eq!(sync["status"], "Completed");
    assert_eq!(sync["retryErrors"], false);
    assert_eq!(sync["directions"]["SourceToDestination"]["written"], 2);
    assert_eq!(sync["earlierRuns"][0]["run"], 1);
    assert_eq!(sync["earlierRuns"][0]["status"], "CompletedWithErrors");

    // Run 3, "Re-run execution": the whole copy, the errored records with it.
    case.write_map("Running", 3, true);
    case.repo.commit_all("re-run");
    case.reconcile();
    let rows = case.target.rows().await;
    assert_eq!(Target::ids(&rows), (1..=12).collect::<Vec<_>>());
    assert_eq!(rows[0].1, "renamed");
    assert_eq!(case.errors(&[]).0, 0);
    let (_, all) = case.errors(&["--state", "all"]);
    assert!(all.iter().all(|e| e["state"] == "Superseded"), "{all:?}");
    let sync = &case.status("maps/customers.yaml")["status"]["initialSync"];
    assert_eq!(
        (&sync["run"], &sync["status"]),
        (&Value::from(3), &Value::from("Completed"))
    );
    assert_eq!(sync["directions"]["SourceToDestination"]["written"], 12);
    let earlier: Vec<(u64, String)> = sync["earlierRuns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["run"].as_u64().unwrap(),
                r["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        earlier,
        [(2, "Completed".into()), (1, "CompletedWithErrors".into())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_rerun_without_errors_adds_only_new_data_and_rerun_retries_the_errors() {
    common::with_timeout(rerun_with_and_without_errors(Target::sqlite().await)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rerun_without_errors_adds_only_new_data_and_rerun_retries_the_errors() {
    let Some(target) = Target::postgres().await else {
        return;
    };
    common::with_timeout(rerun_with_and_without_errors(target)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_errors_stay_queued_until_a_catch_up_retry_writes_them() {
    let Some(target) = Target::postgres().await else {
        return;
    };
    common::with_timeout(async move {
        let mut case = Case::new(target, &rows_with_bad(5, &[]), "").await;
        case.reconcile();
        case.write_map("Paused", 1, true);
        case.repo.commit_all("pause");
        case.reconcile();
        case.erp()
            .execute_batch("INSERT INTO customers VALUES (6, 'late', -6), (7, 'late', 70), (8, 'late', -8)")
            .unwrap();
        case.reconcile();
        assert_eq!(case.status("maps/customers.yaml")["status"]["queue"]["pending"], 3);
        case.write_map("Running", 1, true);
        case.repo.commit_all("resume");
        case.reconcile();
        let (n, records) = case.errors(&["--phase", "CatchUp"]);
        assert_eq!(n, 2, "{records:?}");
        assert_eq!(case.errors(&["--phase", "Live"]).0, 0);
        assert_eq!(
            case.status("maps/customers.yaml")["status"]["errors"]["byPhase"]["CatchUp"],
            2
        );
        assert_eq!(Target::ids(&case.target.rows().await), [1, 2, 3, 4, 5, 7]);

        case.target.fix().await;
        case.request(
            "retry-catch-up",
            "Retry",
            "  filter: { phase: CatchUp, errorType: ApplicationError, direction: SourceToDestination }\n",
        );
        case.repo.commit_all("retry the catch-up errors");
        case.reconcile();
        let st = &case.status("requests/retry-catch-up.yaml")["status"];
        assert_eq!((&st["state"], &st["succeeded"]), (&Value::from("Completed"), &Value::from(2)));
        assert_eq!(Target::ids(&case.target.rows().await), (1..=8).collect::<Vec<_>>());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_wait_for_a_running_map_run_in_commit_order_and_limits_reject() {
    common::with_timeout(async {
        // 10,001 records that cannot be converted (text in an integer column).
        let case = Case::new(Target::sqlite().await, &rows_with_bad(10, &[2, 3]), "").await;
        case.erp()
            .execute_batch(
                "WITH RECURSIVE n(i) AS (SELECT 1001 UNION ALL SELECT i + 1 FROM n WHERE i < 11001)
                 INSERT INTO customers SELECT i, 'bad', 'not a number' FROM n;",
            )
            .unwrap();
        case.reconcile();
        assert_eq!(case.errors(&["--type", "ApplicationError"]).0, 2);
        assert_eq!(case.errors(&["--type", "TransformError"]).0, 10_001);
        let two = case.error_id(2);
        case.write_map("Paused", 1, true);
        case.repo.commit_all("pause");
        case.reconcile();

        // Committed in this order (names sort the other way round).
        let requests = [
            ("z-dismiss-two", "Dismiss", format!("  filter: {{ ids: [{two}] }}\n")),
            ("y-unknown-id", "Retry", "  filter: { ids: [999999] }\n".to_string()),
            ("x-too-many", "Dismiss", "  filter: { errorType: TransformError }\n".to_string()),
            ("w-retry-app", "Retry", "  filter: { errorType: ApplicationError }\n".to_string()),
            ("v-empty", "Dismiss", "  filter: { phase: CatchUp }\n".to_string()),
            ("u-sixth", "Retry", String::new()),
        ];
        for (name, action, filter) in &requests {
            case.request(name, action, filter);
            case.repo.commit_all(name);
            // Commit times order requests; keep them a second apart.
            std::thread::sleep(std::time::Duration::from_millis(1100));
        }
        let plan = case.run(&["reconcile", "--dry-run"]);
        assert!(plan.stdout.contains("request z-dismiss-two: Added (Dismiss on map customers): runs once in the next pass: dismisses the 1 open errored record(s) it matches now"), "{}", plan.stdout);
        assert!(plan.stdout.contains("request y-unknown-id: Added (Retry on map customers): will be Rejected: id(s) 999999 are not errored records of map customers"), "{}", plan.stdout);
        assert!(plan.stdout.contains("request x-too-many: Added (Dismiss on map customers): will be Rejected: matches 10001 records now (at most 10000)"), "{}", plan.stdout);
        assert!(plan.stdout.contains("request u-sixth: Added (Retry on map customers): will be Rejected: 5 requests already wait for map customers"), "{}", plan.stdout);
        case.reconcile();
        let state = |name: &str| case.status(&format!("requests/{name}.yaml"))["status"].clone();
        // A Dismiss touches no endpoint: the first runs while Paused. The Retry after it
        // waits for Running, and every request after that Retry waits with it.
        assert_eq!(state("z-dismiss-two")["state"], "Completed");
        for (name, _, _) in &requests[1..5] {
            assert_eq!(state(name)["state"], "Queued", "{name} waits while the map is Paused");
        }
        let sixth = state("u-sixth");
        assert_eq!(sixth["state"], "Rejected");
        assert!(sixth["reason"].as_str().unwrap().contains("5 requests already wait for map customers"), "{sixth:?}");
        assert_eq!(case.errors(&[]).0, 10_002, "only the Dismiss ran while Paused");

        case.write_map("Running", 1, true);
        case.repo.commit_all("resume");
        case.reconcile();
        let unknown = state("y-unknown-id");
        assert_eq!(unknown["state"], "Rejected");
        assert!(unknown["reason"].as_str().unwrap().contains("999999 are not errored records of map customers"), "{unknown:?}");
        let too_many = state("x-too-many");
        assert_eq!((&too_many["state"], &too_many["matched"]), (&Value::from("Rejected"), &Value::from(10_001)));
        assert!(too_many["reason"].as_str().unwrap().contains("at most 10000"), "{too_many:?}");
        assert_eq!(state("z-dismiss-two")["dismissed"], 1);
        // Run after the dismiss: only record 3 was left to retry (and it still fails).
        let retry = state("w-retry-app");
        assert_eq!((&retry["state"], &retry["matched"], &retry["failed"]), (&Value::from("Completed"), &Value::from(1), &Value::from(1)));
        assert_eq!((&state("v-empty")["state"], &state("v-empty")["matched"]), (&Value::from("Completed"), &Value::from(0)));
        assert_eq!(case.errors(&["--type", "TransformError"]).0, 10_001, "a rejected request touches nothing");
        let three = case.errors(&["--type", "ApplicationError"]).1;
        assert_eq!(three.len(), 1);
        assert_eq!(three[0]["attempts"], 2, "retried once");
        let order: Vec<String> = case
            .events()
            .into_iter()
            .filter(|(e, _)| e.starts_with("Request"))
            .map(|(_, m)| m.split_whitespace().nth(1).unwrap().to_string())
            .collect();
        assert_eq!(order, ["z-dismiss-two", "y-unknown-id", "x-too-many", "w-retry-app", "v-empty"]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_purges_old_errors_into_the_archive_and_logs_the_purge() {
    common::with_timeout(async {
        let case = Case::new(
            Target::sqlite().await,
            &rows_with_bad(6, &[2, 5]),
            "  errorRetention: 2s\n  errorArchive: archive/errors.jsonl\n",
        )
        .await;
        case.reconcile();
        assert_eq!(case.errors(&[]).0, 2);
        case.reconcile();
        assert_eq!(case.errors(&[]).0, 2, "not purged before the retention");
        std::thread::sleep(std::time::Duration::from_millis(2500));
        case.reconcile();
        assert_eq!(case.errors(&["--state", "all"]).0, 0);
        let archive =
            std::fs::read_to_string(case.repo.path().join("archive/errors.jsonl")).unwrap();
        let lines: Vec<Value> = archive
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{archive}");
        let keys: Vec<&Value> = lines.iter().map(|l| &l["key"]["id"]).collect();
        assert_eq!(keys, [&Value::from(2), &Value::from(5)]);
        assert!(
            lines.iter().all(|l| l["map"] == "customers"
                && l["message"]
                    .as_str()
                    .unwrap()
                    .contains("credit must not be negative")
                && l["purgedAt"].is_string()),
            "{archive}"
        );
        let purged: Vec<_> = case
            .events()
            .into_iter()
            .filter(|(e, _)| e == "ErrorsPurged")
            .collect();
        assert_eq!(purged.len(), 1, "{purged:?}");
        assert_eq!(
            purged[0].1,
            "2 errored record(s) older than 2s purged, archived to archive/errors.jsonl"
        );
        let status = case.status("maps/customers.yaml");
        assert_eq!(status["status"]["errors"]["open"], 0);
        assert!(
            status["status"]["activity"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["event"] == "ErrorsPurged")
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_cli_lists_shows_rows_writes_requests_applies_them_and_downloads_logs() {
    common::with_timeout(async {
        let case = Case::new(Target::sqlite().await, &rows_with_bad(6, &[2, 5]), "").await;
        case.reconcile();
        let list = case.run(&["errors", "list", "--map", "customers"]);
        assert_eq!(list.code, 0, "{}", list.stderr);
        let lines: Vec<&str> = list.stdout.lines().collect();
        assert_eq!(lines[0], "2 open errored record(s) match");
        assert!(lines[1].starts_with("ID  MAP        PHASE        DIRECTION            TYPE              KEY       CODE"), "{}", list.stdout);
        assert!(lines[2].contains("{\"id\":5}") && lines[2].contains("SQLITE_CONSTRAINT_TRIGGER") && lines[2].ends_with("credit must not be negative"), "{}", list.stdout);
        assert_eq!(case.errors(&["--type", "TransformError"]).0, 0);
        assert_eq!(case.errors(&["--from", "1h"]).0, 2);
        assert_eq!(case.errors(&["--to", "1h"]).0, 0);

        let rows = case.run(&["errors", "list", "--show-rows", "--limit", "1"]);
        assert!(rows.stdout.contains("2 open errored record(s) match; showing the newest 1"), "{}", rows.stdout);
        assert!(rows.stdout.contains("    source row now: {\"id\":5,\"name\":\"customer\",\"credit\":-1}"), "{}", rows.stdout);
        assert!(rows.stdout.contains("    target row now: (not there)"), "{}", rows.stdout);
        assert!(rows.stdout.contains("    a retry writes: {\"id\":5,\"name\":\"customer\",\"credit\":-1}"), "{}", rows.stdout);

        // Bad input: a clear error and nothing written.
        for (args, message) in [
            (vec!["errors", "retry", "--map", "nope"], "no map named \"nope\" in the config"),
            (vec!["errors", "retry"], "--map is required"),
            (vec!["errors", "dismiss", "--map", "customers", "--from", "2026-11-23T00:00:00Z", "--to", "2026-11-22T00:00:00Z"], "--from (2026-11-23T00:00:00+00:00) must be before --to (2026-11-22T00:00:00+00:00)"),
            (vec!["errors", "list", "--from", "yesterday"], "--from \"yesterday\": not an RFC 3339 time"),
        ] {
            let run = case.run(&args);
            assert_eq!(run.code, 1, "{args:?}");
            assert!(run.stderr.contains(message), "{args:?}: {}", run.stderr);
        }
        assert!(!case.repo.path().join("requests").exists());

        let five = case.error_id(5);
        let five_text = five.to_string();
        let retry = case.run(&["errors", "retry", "--map", "customers", "--id", &five_text, "--name", "retry-five"]);
        assert_eq!(retry.code, 0, "{}", retry.stderr);
        assert_eq!(retry.stdout, "wrote requests/retry-five.yaml\nit matches 1 open errored record(s) of map customers now\nreview and commit it; the next `dualwrite reconcile` runs it once while map customers is Running (or run it now with --apply)\n");
        let written = std::fs::read_to_string(case.repo.path().join("requests/retry-five.yaml")).unwrap();
        assert!(written.contains(&format!("  filter:\n    ids:\n    - {five}\n")), "{written}");
        assert_eq!(case.run(&["validate"]).code, 0);
        let again = case.run(&["errors", "retry", "--map", "customers", "--name", "retry-five"]);
        assert!(again.stderr.contains("requests/retry-five.yaml already exists"), "{}", again.stderr);

        let two = case.error_id(2).to_string();
        let apply = case.run(&["errors", "dismiss", "--map", "customers", "--id", &two, "--name", "dismiss-two", "--apply"]);
        assert_eq!(apply.code, 0, "{}{}", apply.stdout, apply.stderr);
        assert!(apply.stdout.contains("request dismiss-two: Completed"), "{}", apply.stdout);
        let st = &case.status("requests/dismiss-two.yaml")["status"];
        assert_eq!(st["dismissed"], 1);
        assert!(st["requestedBy"].as_str().unwrap().contains("(dualwrite errors dismiss --apply)"), "{st:?}");

        let status = case.run(&["status"]);
        assert!(
            status.stdout.lines().any(|l| l.starts_with("dismiss-two") && l.contains("Dismiss") && l.contains("Completed")),
            "{}",
            status.stdout
        );
        assert!(status.stdout.lines().any(|l| l.starts_with("retry-five") && l.contains("Queued")), "{}", status.stdout);

        let csv_path = case.repo.path().join("activity.csv");
        let logs = case.run(&["logs", "customers", "--since", "1h", "--format", "csv", "-o", csv_path.to_str().unwrap()]);
        assert_eq!(logs.code, 0, "{}", logs.stderr);
        assert!(logs.stdout.starts_with("wrote ") && logs.stdout.contains("activity entries of map customers"), "{}", logs.stdout);
        let csv = std::fs::read_to_string(&csv_path).unwrap();
        let mut lines = csv.lines();
        assert_eq!(lines.next(), Some("at,map,event,message"));
        assert!(csv.contains(",customers,InitialSyncFinished,\"initial sync run 1 CompletedWithErrors: SourceToDestination: read 6, written 4, errors 2 (6 rows read in "), "{csv}");
        assert!(csv.contains(",customers,RequestCompleted,\"request dismiss-two (Dismiss by "), "{csv}");
        // --apply runs that request only: the one left for review still waits.
        assert!(!csv.contains("request retry-five"), "{csv}");
        assert_eq!(case.status("requests/retry-five.yaml")["status"]["state"], "Queued");
        let none = case.run(&["logs", "customers", "--since", "2999-01-01T00:00:00Z"]);
        assert_eq!((none.code, none.stdout.as_str()), (0, ""));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_cannot_reach_its_target_fails_and_loses_nothing() {
    common::with_timeout(async {
        let target = Target::sqlite().await;
        let EndpointSpec::Sqlite { path } = target.db.spec.clone() else {
            unreachable!()
        };
        let case = Case::new(target, &rows_with_bad(4, &[]), "").await;
        case.reconcile();
        // A record that cannot be converted (text in an integer column), then fixed at the
        // source without a captured change: only the retry can carry it.
        case.erp()
            .execute_batch("INSERT INTO customers VALUES (5, 'five', 'not a number')")
            .unwrap();
        case.reconcile();
        assert_eq!(case.errors(&[]).0, 1);
        case.change_source_uncaptured("UPDATE customers SET credit = 50 WHERE id = 5");
        case.request("retry-five", "Retry", "");
        case.repo.commit_all("retry");

        // Another writer holds the target's write lock for the whole pass.
        let locker = rusqlite::Connection::open(&path).unwrap();
        locker.execute_batch("BEGIN IMMEDIATE").unwrap();
        let run = case.run(&["reconcile"]);
        locker.execute_batch("ROLLBACK").unwrap();
        assert!(
            run.stdout.contains("request retry-five: Failed"),
            "{}{}",
            run.stdout,
            run.stderr
        );
        let st = &case.status("requests/retry-five.yaml")["status"];
        assert_eq!(st["state"], "Failed");
        assert!(
            st["reason"]
                .as_str()
                .unwrap()
                .contains("stopped after 0 of 1 record(s)"),
            "{st:?}"
        );
        assert!(st["reason"].as_str().unwrap().contains("locked"), "{st:?}");
        // Nothing lost: the record is still open, and the request does not run again.
        case.reconcile();
        let (open, records) = case.errors(&[]);
        assert_eq!(open, 1);
        assert_eq!(records[0]["key"]["id"], 5);
        assert_eq!(
            case.status("requests/retry-five.yaml")["status"]["state"],
            "Failed"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_would_be_rejected_is_not_written_and_apply_says_when_it_must_wait() {
    common::with_timeout(async {
        let case = Case::new(Target::sqlite().await, &rows_with_bad(6, &[2, 5]), "").await;
        case.reconcile();
        // Rejected before it is written: exit 1, nothing in requests/.
        let run = case.run(&["errors", "retry", "--map", "customers", "--id", "99999"]);
        assert_eq!((run.code, run.stdout.as_str()), (1, ""), "{}", run.stderr);
        assert_eq!(
            run.stderr,
            "dualwrite: the request would be Rejected: id(s) 99999 are not errored records of map customers; nothing written (--force writes it anyway)\n"
        );
        assert!(!case.repo.path().join("requests").exists());

        // --force writes it; applied, it is Rejected and leaves nothing behind.
        let run = case.run(&[
            "errors", "retry", "--map", "customers", "--id", "99999", "--force", "--apply",
            "--name", "forced",
        ]);
        assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
        assert!(
            run.stdout.contains("warning: it will be Rejected: id(s) 99999")
                && run.stdout.contains("requests/forced.yaml removed: the request was Rejected"),
            "{}",
            run.stdout
        );
        assert!(!case.repo.path().join("requests/forced.yaml").exists());
        assert!(!case.repo.path().join("status/requests/forced.yaml").exists());
        assert_eq!(case.run(&["validate"]).code, 0);

        // A Dismiss --apply runs now and says so; the next reconcile does not repeat it.
        let two = case.error_id(2).to_string();
        let run = case.run(&["errors", "dismiss", "--map", "customers", "--id", &two, "--apply", "--name", "d2"]);
        assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
        assert!(run.stdout.contains("request d2: Completed"), "{}", run.stdout);
        let again = case.reconcile();
        assert!(!again.stdout.contains("request d2"), "{}", again.stdout);

        // A Retry --apply on a Paused map cannot run now: exit 3, it waits in requests/.
        case.write_map("Paused", 1, true);
        case.repo.commit_all("pause");
        case.reconcile();
        let run = case.run(&["errors", "retry", "--map", "customers", "--apply", "--name", "later"]);
        assert_eq!(run.code, 3, "{}{}", run.stdout, run.stderr);
        assert!(
            run.stdout.contains(
                "request later cannot run now: map customers is not Running; it waits in requests/later.yaml and runs once the map is Running"
            ),
            "{}",
            run.stdout
        );
        assert!(case.repo.path().join("requests/later.yaml").exists());
    })
    .await;
}
