//! Service mode: real `dualwrite run` processes, real file edits and commits in a git
//! repository, real SQLite and PostgreSQL endpoints, a real PostgreSQL state store shared
//! by several processes, SIGTERM and `kill -9`.
//!
//! PostgreSQL tests work in a database of their own (created and dropped per test), so
//! their state store and leases are theirs alone. An unreachable server is a loud skip,
//! or a failure under `CI=true`.

mod common;
mod support;

use support::with_timeout;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use support::service::{Service, wait_for};
use support::{CUSTOMERS, Repo};

/// A status file as JSON, if it exists and parses.
fn status(repo: &Repo, folder: &str, name: &str) -> Option<serde_json::Value> {
    let text =
        std::fs::read_to_string(repo.path().join(format!("status/{folder}/{name}.yaml"))).ok()?;
    serde_saphyr::from_str(&text).ok()
}

fn phase(repo: &Repo, map: &str) -> Option<String> {
    status(repo, "maps", map)?["status"]["phase"]
        .as_str()
        .map(str::to_string)
}

/// Replaces a file the way many editors save: write a temporary file, rename it over.
fn save_via_rename(repo: &Repo, path: &str, text: &str) {
    let full = repo.path().join(path);
    let tmp = full.with_extension("yaml.swp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &full).unwrap();
}

fn sqlite(repo: &Repo, db: &str, sql: &str) {
    let conn = rusqlite::Connection::open(repo.path().join(".dualwrite").join(db)).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn.execute_batch(sql).unwrap();
}

fn sqlite_count(repo: &Repo, db: &str, table: &str) -> i64 {
    let conn = rusqlite::Connection::open(repo.path().join(".dualwrite").join(db)).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

/// Fills the ERP's customers up to id `last` (the repository starts with ids 1 and 2).
fn add_customers(repo: &Repo, last: i64) {
    sqlite(
        repo,
        "erp.db",
        &format!(
            "WITH RECURSIVE n(i) AS (SELECT 3 UNION ALL SELECT i + 1 FROM n WHERE i < {last})
             INSERT INTO customers SELECT i, 'name ' || i FROM n"
        ),
    );
}

/// The test repository: two SQLite apps, the customers map, committed to git.
fn sqlite_repo() -> Repo {
    let repo = Repo::new(&[
        ("maps/customers.yaml", CUSTOMERS),
        (".gitignore", ".dualwrite/\nstatus/\n"),
    ]);
    std::fs::create_dir_all(repo.path().join(".dualwrite")).unwrap();
    sqlite(
        &repo,
        "erp.db",
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
         INSERT INTO customers VALUES (1, 'Ada'), (2, 'Grace');",
    );
    sqlite(
        &repo,
        "crm.db",
        "CREATE TABLE account (id INTEGER PRIMARY KEY, name TEXT NOT NULL);",
    );
    repo.commit_all("customers map");
    repo
}

#[test]
fn a_committed_state_change_is_applied_within_a_second_and_logged_as_json() {
    with_timeout(120, || {
        let repo = sqlite_repo();
        let service = Service::start(
            repo.path(),
            &["--interval", "1h", "--log-format", "json"],
            &[],
        );
        wait_for(Duration::from_secs(10), "the initial sync", || {
            phase(&repo, "customers").as_deref() == Some("Running")
        });
        assert_eq!(sqlite_count(&repo, "crm.db", "account"), 2);

        save_via_rename(
            &repo,
            "maps/customers.yaml",
            &CUSTOMERS.replace("state: Running", "state: Paused"),
        );
        let head = repo.commit_all("pause customers");
        let took = wait_for(Duration::from_secs(5), "the map to be Paused", || {
            phase(&repo, "customers").as_deref() == Some("Paused")
        });
        assert!(took < Duration::from_secs(2), "took {took:?}");
        // The commit itself wakes a pass too: status names the commit that was applied.
        wait_for(Duration::from_secs(5), "observedRevision", || {
            status(&repo, "maps", "customers").is_some_and(|s| {
                head.starts_with(s["status"]["observedRevision"].as_str().unwrap_or("-"))
            })
        });

        let logs = service.logs();
        let events: Vec<serde_json::Value> = logs
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .collect();
        assert!(
            events
                .iter()
                .any(|e| e["map"] == "customers" && e["phase"] == "Paused"),
            "no JSON event with map and phase fields:\n{logs}"
        );
    });
}

#[test]
fn invalid_config_keeps_the_last_valid_one_in_force_and_shows_config_invalid() {
    with_timeout(120, || {
        let repo = sqlite_repo();
        let service = Service::start(repo.path(), &["--interval", "1h"], &[]);
        wait_for(Duration::from_secs(10), "Running", || {
            phase(&repo, "customers").as_deref() == Some("Running")
        });

        repo.write(
            "maps/customers.yaml",
            &CUSTOMERS.replace("state: Running", "state: Runing"),
        );
        wait_for(Duration::from_secs(5), "Stalled/ConfigInvalid", || {
            status(&repo, "maps", "customers").is_some_and(|s| {
                s["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter().any(|c| {
                        c["type"] == "Stalled"
                            && c["status"] == "True"
                            && c["reason"] == "ConfigInvalid"
                            && c["message"]
                                .as_str()
                                .unwrap()
                                .contains("maps/customers.yaml")
                    })
                })
            })
        });
        let info = service.json("/api/v1/service");
        assert_eq!(info["configValid"], false, "{info}");
        assert!(
            service
                .get("/metrics")
                .1
                .contains("dualwrite_map_stalled{map=\"customers\",reason=\"ConfigInvalid\"} 1")
        );
        assert!(service.logs().contains("config invalid"));

        // Nothing was torn down: the map still syncs under the last valid config.
        assert_eq!(phase(&repo, "customers").as_deref(), Some("Running"));
        sqlite(
            &repo,
            "erp.db",
            "INSERT INTO customers VALUES (3, 'Edsger')",
        );
        wait_for(Duration::from_secs(5), "the new row to sync", || {
            sqlite_count(&repo, "crm.db", "account") == 3
        });

        repo.write("maps/customers.yaml", CUSTOMERS);
        wait_for(Duration::from_secs(5), "the condition to clear", || {
            status(&repo, "maps", "customers").is_some_and(|s| {
                !s["status"]["conditions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|c| c["type"] == "Stalled")
            })
        });
        assert_eq!(service.json("/api/v1/service")["configValid"], true);
    });
}

#[test]
fn new_sqlite_changes_sync_between_timer_ticks_by_polling() {
    with_timeout(120, || {
        let repo = sqlite_repo();
        let _service = Service::start(
            repo.path(),
            &["--interval", "1h", "--poll-interval", "200ms"],
            &[],
        );
        wait_for(Duration::from_secs(10), "Running", || {
            phase(&repo, "customers").as_deref() == Some("Running")
        });
        for i in 10..20 {
            sqlite(
                &repo,
                "erp.db",
                &format!("INSERT INTO customers VALUES ({i}, 'n{i}')"),
            );
        }
        wait_for(Duration::from_secs(5), "the rows to sync", || {
            sqlite_count(&repo, "crm.db", "account") == 12
        });
    });
}

#[test]
fn sigterm_finishes_writes_status_and_exits_zero_within_ten_seconds() {
    with_timeout(120, || {
        let repo = sqlite_repo();
        let mut service = Service::start(repo.path(), &["--interval", "1h"], &[]);
        wait_for(Duration::from_secs(10), "Running", || {
            phase(&repo, "customers").as_deref() == Some("Running")
        });
        // A change in flight when the signal arrives still lands.
        sqlite(
            &repo,
            "erp.db",
            "INSERT INTO customers VALUES (7, 'Barbara')",
        );
        service.signal("-TERM");
        let (code, _) = service.wait_exit(Duration::from_secs(10));
        assert_eq!(code, Some(0), "{}", service.logs());
        assert!(status(&repo, "maps", "customers").is_some());
        assert!(service.logs().contains("stopped"), "{}", service.logs());
        // Whatever was not drained before the signal is drained by the next start.
        let _again = Service::start(repo.path(), &["--interval", "1h"], &[]);
        wait_for(Duration::from_secs(10), "the row", || {
            sqlite_count(&repo, "crm.db", "account") == 3
        });
    });
}

#[test]
fn ctrl_c_stops_like_sigterm() {
    with_timeout(60, || {
        let repo = sqlite_repo();
        let mut service = Service::start(repo.path(), &["--interval", "1h"], &[]);
        service.signal("-INT");
        let (code, took) = service.wait_exit(Duration::from_secs(10));
        assert_eq!(code, Some(0), "{}", service.logs());
        assert!(took < Duration::from_secs(10));
        assert!(service.logs().contains("stopped"), "{}", service.logs());
    });
}

#[test]
fn sigterm_in_the_middle_of_an_initial_sync_exits_zero_in_time_and_the_next_start_resumes() {
    with_timeout(180, || {
        const ROWS: i64 = 300_000;
        let repo = sqlite_repo();
        add_customers(&repo, ROWS);
        // A target that holds a row already (the source's first key, which the copy
        // overwrites): the copy runs in pages, not as one whole-table statement.
        sqlite(
            &repo,
            "crm.db",
            "DROP TABLE account; CREATE TABLE account (id INTEGER PRIMARY KEY, name TEXT NOT NULL, note TEXT);
             INSERT INTO account (id, name) VALUES (1, 'seed')",
        );
        repo.write(
            "maps/customers.yaml",
            &format!("{CUSTOMERS}  batchSize: 50\n  initialSync: {{ batchSize: 50 }}\n"),
        );
        repo.commit_all("small batches, a long copy");
        let mut service = Service::spawn(repo.path(), &["--interval", "1h"], &[]);
        wait_for(Duration::from_secs(60), "the copy to be under way", || {
            sqlite_count(&repo, "crm.db", "account") > 1
        });
        service.signal("-TERM");
        let (code, took) = service.wait_exit(Duration::from_secs(10));
        assert_eq!(code, Some(0), "{}", service.logs());
        let copied = sqlite_count(&repo, "crm.db", "account");
        assert!(
            copied < ROWS,
            "the copy finished ({took:?}) before SIGTERM: make the table bigger"
        );
        // Stopped between two pages: the run is not Failed, it goes on at the next start.
        let at_shutdown = status(&repo, "maps", "customers").expect("status written at shutdown");
        assert_eq!(
            at_shutdown["status"]["phase"], "InitialSync",
            "{at_shutdown}"
        );
        assert_eq!(
            at_shutdown["status"]["initialSync"]["status"], "Running",
            "{at_shutdown}"
        );
        assert!(
            took < Duration::from_secs(3),
            "a page boundary is near: {took:?}"
        );
        let _again = Service::start(repo.path(), &["--interval", "1h"], &[]);
        wait_for(Duration::from_secs(120), "the copy to finish", || {
            phase(&repo, "customers").as_deref() == Some("Running")
        });
        assert_eq!(sqlite_count(&repo, "crm.db", "account"), ROWS);
        let done = status(&repo, "maps", "customers").unwrap();
        assert_eq!(done["status"]["initialSync"]["run"], 1, "{done}");
        assert_eq!(
            done["status"]["initialSync"]["status"], "Completed",
            "{done}"
        );
    });
}

#[test]
fn a_failed_record_is_one_json_log_line_with_one_message() {
    with_timeout(120, || {
        let repo = sqlite_repo();
        sqlite(
            &repo,
            "crm.db",
            "CREATE TRIGGER no_bad BEFORE INSERT ON account WHEN NEW.name = 'bad'
             BEGIN SELECT RAISE(ABORT, 'bad name'); END;",
        );
        let service = Service::start(repo.path(), &["--log-format", "json"], &[]);
        wait_for(Duration::from_secs(10), "the initial sync", || {
            phase(&repo, "customers").as_deref() == Some("Running")
        });
        // A live change, after the first pass (whose records are not logged one by one).
        std::thread::sleep(Duration::from_millis(500));
        sqlite(&repo, "erp.db", "INSERT INTO customers VALUES (3, 'bad')");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !service.logs().contains("record failed") {
            assert!(
                Instant::now() < deadline,
                "no failed record logged:\n{}",
                service.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let logs = service.logs();
        for line in logs.lines().filter(|l| !l.is_empty()) {
            assert_eq!(
                line.matches("\"message\":").count(),
                1,
                "one message per JSON line: {line}"
            );
            let _: serde_json::Value = serde_json::from_str(line).unwrap();
        }
        let failed: serde_json::Value = logs
            .lines()
            .find(|l| l.contains("record failed"))
            .map(|l| serde_json::from_str(l).unwrap())
            .unwrap();
        assert_eq!(failed["message"], "record failed", "{failed}");
        assert!(
            failed["error"].as_str().unwrap().contains("bad name"),
            "{failed}"
        );
    });
}

#[test]
fn a_running_initial_sync_shows_its_progress_in_the_api_metrics_and_status_file() {
    with_timeout(180, || {
        const ROWS: i64 = 300_000;
        let repo = sqlite_repo();
        add_customers(&repo, ROWS);
        // A column whose kind changes (integer to decimal) and a valueMap: the copy goes
        // through typed values (not inside the database), page by page, long enough to watch.
        sqlite(
            &repo,
            "erp.db",
            "ALTER TABLE customers ADD COLUMN tier TEXT NOT NULL DEFAULT 'a'; ALTER TABLE customers ADD COLUMN score INTEGER NOT NULL DEFAULT 3",
        );
        sqlite(
            &repo,
            "crm.db",
            "DROP TABLE account; CREATE TABLE account (id INTEGER PRIMARY KEY, name TEXT NOT NULL, tier INTEGER, score NUMERIC)",
        );
        repo.write(
            "maps/customers.yaml",
            &format!(
                "{CUSTOMERS}    - {{ source: tier, destination: tier, valueMap: {{ a: 1, b: 2 }} }}\n    - {{ source: score, destination: score }}\n"
            ),
        );
        repo.commit_all("a long copy");
        let service = Service::spawn(repo.path(), &["--interval", "1h"], &[]);
        let mut api = serde_json::Value::Null;
        wait_for(Duration::from_secs(60), "progress in the API", || {
            let (code, body) = service.get("/api/v1/maps/customers");
            api = serde_json::from_str(&body).unwrap_or_default();
            code == 200
                && api["status"]["initialSync"]["progress"]["rowsDone"]
                    .as_u64()
                    .is_some_and(|n| n > 0)
        });
        let st = &api["status"];
        assert_eq!(st["phase"], "InitialSync", "{api}");
        assert_eq!(st["initialSync"]["status"], "Running", "{api}");
        let progress = &st["initialSync"]["progress"];
        assert_eq!(progress["estimatedTotal"], ROWS, "{api}");
        let percent = progress["percent"].as_f64().unwrap();
        assert!(percent > 0.0 && percent < 100.0, "{api}");
        assert!(progress["rowsPerSecond"].as_u64().unwrap() > 0, "{api}");
        assert!(progress["eta"].as_str().is_some(), "{api}");

        let (_, metrics) = service.get("/metrics");
        assert!(
            metrics.contains("dualwrite_initial_sync_running{map=\"customers\"} 1"),
            "{metrics}"
        );
        assert!(
            metrics.contains(&format!(
                "dualwrite_initial_sync_rows_estimated{{map=\"customers\"}} {ROWS}"
            )),
            "{metrics}"
        );
        assert!(
            metrics.contains("dualwrite_initial_sync_eta_seconds{map=\"customers\"}"),
            "{metrics}"
        );
        // The status file is written while the run goes on, not only after the pass.
        let file = status(&repo, "maps", "customers").expect("a status file during the run");
        assert_eq!(file["status"]["phase"], "InitialSync", "{file}");
        assert!(
            file["status"]["initialSync"]["progress"]["rowsDone"]
                .as_u64()
                .is_some_and(|n| n > 0),
            "{file}"
        );
        assert!(
            sqlite_count(&repo, "crm.db", "account") < ROWS,
            "the copy finished before it was watched: make the table bigger"
        );
    });
}

#[test]
fn sigterm_during_a_whole_table_copy_interrupts_the_statement_at_once() {
    with_timeout(180, || {
        const ROWS: i64 = 1_000_000;
        // The target's columns are the mapped ones, in order, and it is empty: the copy
        // starts as one whole-table statement, which may run up to 2 s before it gives way
        // to pages. A SIGTERM must not wait for that.
        let repo = sqlite_repo();
        add_customers(&repo, ROWS);
        let mut service = Service::spawn(repo.path(), &["--interval", "1h"], &[]);
        wait_for(Duration::from_secs(60), "the copy to start", || {
            repo.runtime("customers")
                .is_some_and(|r| r["initialSync"]["status"] == "Running")
        });
        service.signal("-TERM");
        let (code, took) = service.wait_exit(Duration::from_secs(10));
        assert_eq!(code, Some(0), "{}", service.logs());
        assert!(
            took < Duration::from_millis(700),
            "the statement is interrupted, not waited for: {took:?}"
        );
        let _again = Service::start(repo.path(), &["--interval", "1h"], &[]);
        wait_for(Duration::from_secs(120), "the copy to finish", || {
            phase(&repo, "customers").as_deref() == Some("Running")
        });
        assert_eq!(sqlite_count(&repo, "crm.db", "account"), ROWS);
    });
}

#[test]
fn pull_on_the_timer_applies_commits_pushed_elsewhere_and_records_their_revision() {
    with_timeout(120, || {
        let origin = sqlite_repo();
        let clone = tempfile::tempdir().unwrap();
        let out = Command::new("git")
            .args(["clone", "-q"])
            .arg(origin.path())
            .arg(clone.path())
            .output()
            .unwrap();
        assert!(out.status.success());
        // The apps live beside the clone's config, as in production.
        std::fs::create_dir_all(clone.path().join(".dualwrite")).unwrap();
        for db in ["erp.db", "crm.db"] {
            std::fs::copy(
                origin.path().join(".dualwrite").join(db),
                clone.path().join(".dualwrite").join(db),
            )
            .unwrap();
        }
        let clone_repo = Repo { dir: clone };
        let _service = Service::start(clone_repo.path(), &["--interval", "1s", "--pull"], &[]);
        wait_for(Duration::from_secs(10), "Running", || {
            phase(&clone_repo, "customers").as_deref() == Some("Running")
        });
        origin.write(
            "maps/customers.yaml",
            &CUSTOMERS.replace("state: Running", "state: Stopped"),
        );
        let head = origin.commit_all("stop customers");
        wait_for(Duration::from_secs(10), "the pulled commit applied", || {
            status(&clone_repo, "maps", "customers").is_some_and(|s| {
                s["status"]["phase"] == "Stopped"
                    && head.starts_with(s["status"]["observedRevision"].as_str().unwrap_or("-"))
            })
        });
    });
}

#[test]
fn http_serves_metrics_health_readiness_and_the_status_files_as_json() {
    with_timeout(120, || {
        let repo = sqlite_repo();
        let service = Service::start(repo.path(), &["--interval", "1h"], &[]);
        wait_for(Duration::from_secs(10), "Running", || {
            phase(&repo, "customers").as_deref() == Some("Running")
        });
        assert_eq!(service.get("/healthz"), (200, "ok\n".into()));
        assert_eq!(service.get("/readyz").0, 200);
        assert_eq!(service.get("/nope").0, 404);

        let metrics = service.get("/metrics").1;
        for line in [
            "dualwrite_ready 1",
            "dualwrite_config_valid 1",
            "dualwrite_map_phase{map=\"customers\",phase=\"Running\"} 1",
            "dualwrite_records_synced_total{map=\"customers\"}",
            "dualwrite_queue_pending{map=\"customers\"} 0",
            "dualwrite_oldest_pending_change_age_seconds{map=\"customers\"} 0.0\n",
            "dualwrite_initial_sync_records{map=\"customers\",direction=\"SourceToDestination\",stage=\"written\"} 2",
            "# TYPE dualwrite_errors_open gauge",
            "# TYPE dualwrite_alert_notification_failing gauge",
        ] {
            assert!(metrics.contains(line), "missing {line:?} in\n{metrics}");
        }

        // The API has the same content as the status file.
        let api = service.json("/api/v1/maps/customers");
        assert_eq!(Some(api), status(&repo, "maps", "customers"));
        let all = service.json("/api/v1/maps");
        assert_eq!(all.as_array().unwrap().len(), 1);
        assert_eq!(service.get("/api/v1/maps/nope").0, 404);

        // Paused: the queue and the age of its oldest change show.
        repo.write(
            "maps/customers.yaml",
            &CUSTOMERS.replace("state: Running", "state: Paused"),
        );
        wait_for(Duration::from_secs(5), "Paused", || {
            phase(&repo, "customers").as_deref() == Some("Paused")
        });
        sqlite(&repo, "erp.db", "INSERT INTO customers VALUES (5, 'Alan')");
        std::thread::sleep(Duration::from_millis(1100));
        repo.write(
            "maps/customers.yaml",
            &format!("{CUSTOMERS}  batchSize: 500\n").replace("state: Running", "state: Paused"),
        );
        wait_for(Duration::from_secs(5), "queue metrics", || {
            let m = service.get("/metrics").1;
            m.contains("dualwrite_queue_pending{map=\"customers\"} 1")
                && !m.contains(
                    "dualwrite_oldest_pending_change_age_seconds{map=\"customers\"} 0.0\n",
                )
        });
    });
}

/// The metric families docs/running.md lists: (name as scraped, type, label names).
fn documented_metrics() -> Vec<(String, String, Vec<String>)> {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/running.md")).unwrap();
    doc.lines()
        .filter(|l| l.starts_with("| `dualwrite_"))
        .map(|row| {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let backticked = |cell: &str| -> Vec<String> {
                cell.split('`')
                    .skip(1)
                    .step_by(2)
                    .map(str::to_string)
                    .collect()
            };
            let name = backticked(cells[1]).remove(0);
            (name, cells[2].to_string(), backticked(cells[3]))
        })
        .collect()
}

const QUIET_RULE: &str = "\
apiVersion: dualwrite/v1
kind: AlertRule
metadata: { name: pause-on-app-errors }
spec:
  maps: [customers]
  errorType: ApplicationError
  threshold: 1000
  window: 15m
  action: Pause
";

/// Families in an OpenMetrics exposition: name → (type, label names of its series).
fn served_families(text: &str) -> BTreeMap<String, (String, BTreeSet<String>)> {
    let mut families: BTreeMap<String, (String, BTreeSet<String>)> = BTreeMap::new();
    for line in text.lines() {
        if let Some(declared) = line.strip_prefix("# TYPE ") {
            let (name, kind) = declared.split_once(' ').unwrap();
            families.insert(name.into(), (kind.into(), BTreeSet::new()));
        } else if !line.starts_with('#') {
            let name_end = line.find(['{', ' ']).unwrap();
            let name = &line[..name_end];
            // A counter's sample is its family's name and `_total`.
            let family = match name.strip_suffix("_total") {
                Some(stem) if !families.contains_key(name) => stem,
                _ => name,
            };
            let labels = &mut families
                .get_mut(family)
                .unwrap_or_else(|| panic!("{line}: a sample of no declared family"))
                .1;
            if let Some(inner) = line[name_end..].strip_prefix('{') {
                let inner = &inner[..inner.rfind('}').unwrap()];
                for pair in inner.split("\",") {
                    labels.insert(pair.split_once('=').unwrap().0.to_string());
                }
            }
        }
    }
    families
}

/// What a Prometheus scraper and the sample alert rules rely on: `/metrics` is served as
/// OpenMetrics, complete (`# EOF`), and its families are exactly the ones docs/running.md
/// lists, with the documented type and labels. (The encoder's output is read by a strict
/// OpenMetrics parser in `service::metrics`' unit tests.)
#[test]
fn metrics_are_openmetrics_with_the_documented_names_types_and_labels() {
    with_timeout(120, || {
        let repo = sqlite_repo();
        repo.write("alerts/rule.yaml", QUIET_RULE);
        repo.commit_all("an alert rule");
        let service = Service::start(repo.path(), &["--interval", "1h"], &[]);
        wait_for(Duration::from_secs(10), "Running", || {
            phase(&repo, "customers").as_deref() == Some("Running")
        });

        let (code, head, text) = service.get_with_head("/metrics");
        assert_eq!(code, 200, "{head}\n{text}");
        assert!(
            head.to_ascii_lowercase().contains(
                "content-type: application/openmetrics-text; version=1.0.0; charset=utf-8"
            ),
            "{head}"
        );
        assert!(text.ends_with("\n# EOF\n"), "{text}");
        assert_eq!(text.matches("# EOF").count(), 1, "{text}");

        let mut served = served_families(&text);
        let documented = documented_metrics();
        assert!(documented.len() >= 25, "{documented:?}");
        for (name, kind, labels) in &documented {
            // A counter's family is declared without `_total`; its samples carry it.
            let family = match kind.as_str() {
                "counter" => name
                    .strip_suffix("_total")
                    .expect("a counter ends in _total"),
                "gauge" => name,
                other => panic!("{name}: undocumented type {other}"),
            };
            let (served_kind, served_labels) = served
                .remove(family)
                .unwrap_or_else(|| panic!("{name} is documented but not served:\n{text}"));
            assert_eq!(&served_kind, kind, "{name}");
            if !served_labels.is_empty() || labels.is_empty() {
                let labels: BTreeSet<String> = labels.iter().cloned().collect();
                assert_eq!(served_labels, labels, "{name}");
            }
        }
        assert!(served.is_empty(), "served, not documented: {served:?}");
        // Series this run has, in the families whose labels were checked above.
        for line in [
            "\ndualwrite_ready 1\n",
            "\ndualwrite_reconcile_passes_total{trigger=\"start\"} ",
            "\ndualwrite_alert_firing{rule=\"pause-on-app-errors\",map=\"customers\"} 0\n",
            "\ndualwrite_alert_notifications_sent_total{rule=\"pause-on-app-errors\",map=\"customers\"} 0\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    });
}

// ---- PostgreSQL: change notifications and leases between processes ----

/// A PostgreSQL database of its own for one test, dropped at the end.
struct PgDatabase {
    admin: String,
    name: String,
}

fn pg_admin_url() -> Option<String> {
    let url = std::env::var("DUALWRITE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| common::POSTGRES_DEFAULT.into());
    match pg_exec(&url, "SELECT 1") {
        Ok(()) => Some(url),
        Err(e) => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("postgres test database unreachable under CI=true: {e}");
            }
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: postgres test database unreachable ({e}); set DUALWRITE_TEST_POSTGRES_URL"
            );
            None
        }
    }
}

fn pg_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn pg_exec(url: &str, sql: &str) -> Result<(), String> {
    pg_runtime().block_on(async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        client.batch_execute(sql).await.map_err(|e| e.to_string())
    })
}

fn pg_rows(url: &str, sql: &str) -> Vec<(i64, String)> {
    pg_runtime().block_on(async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
            .query(sql, &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    })
}

impl PgDatabase {
    fn create(admin: &str) -> PgDatabase {
        let name = common::unique_table("svc");
        pg_exec(admin, &format!("CREATE DATABASE {name}")).unwrap();
        PgDatabase {
            admin: admin.to_string(),
            name,
        }
    }

    /// The URL of this database, with a password the server ignores (trust) but that must
    /// never show up anywhere.
    fn url(&self) -> String {
        let url = url_with_database(&self.admin, &self.name);
        url.replacen(
            "postgres://postgres@",
            "postgres://postgres:hunter2secret@",
            1,
        )
    }
}

fn url_with_database(url: &str, db: &str) -> String {
    let (base, _) = url.rsplit_once('/').unwrap();
    format!("{base}/{db}")
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let _ = pg_exec(
            &self.admin,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

fn pg_project() -> String {
    "apiVersion: dualwrite/v1
kind: Project
metadata: { name: ha }
spec:
  endpoints:
    app: { postgres: { urlFromEnv: APP_URL } }
  stateStore: { postgres: { urlFromEnv: STATE_URL } }
"
    .into()
}

fn pg_map(name: &str) -> String {
    format!(
        "apiVersion: dualwrite/v1
kind: TableMap
metadata: {{ name: {name} }}
spec:
  source: {{ endpoint: app, table: {name}_src }}
  destination: {{ endpoint: app, table: {name}_dst }}
  columns:
    - {{ source: id, destination: id, key: true }}
    - {{ source: v, destination: v }}
"
    )
}

fn pg_repo(db: &PgDatabase, maps: &[&str]) -> Repo {
    let repo = Repo::new(&[(".gitignore", ".dualwrite/\nstatus/\n")]);
    repo.write("dualwrite.yaml", &pg_project());
    let mut ddl = String::new();
    for m in maps {
        repo.write(&format!("maps/{m}.yaml"), &pg_map(m));
        ddl += &format!(
            "CREATE TABLE {m}_src (id bigint PRIMARY KEY, v text NOT NULL);
             CREATE TABLE {m}_dst (id bigint PRIMARY KEY, v text NOT NULL);"
        );
    }
    pg_exec(&db.url(), &ddl).unwrap();
    repo.commit_all("maps");
    repo
}

fn pg_env(db: &PgDatabase) -> Vec<(&'static str, String)> {
    vec![("APP_URL", db.url()), ("STATE_URL", db.url())]
}

fn env_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

fn table(url: &str, name: &str) -> Vec<(i64, String)> {
    pg_rows(url, &format!("SELECT id, v FROM {name} ORDER BY id"))
}

#[test]
fn postgres_changes_wake_the_service_by_notification_not_polling() {
    with_timeout(120, || {
        let Some(admin) = pg_admin_url() else { return };
        let db = PgDatabase::create(&admin);
        let repo = pg_repo(&db, &["m"]);
        let env = pg_env(&db);
        // Neither the timer nor polling could deliver this within the test's limits.
        let service = Service::start(
            repo.path(),
            &["--interval", "1h", "--poll-interval", "1h"],
            &env_refs(&env),
        );
        wait_for(Duration::from_secs(10), "Running", || {
            phase(&repo, "m").as_deref() == Some("Running")
        });
        let url = db.url();
        pg_exec(&url, "INSERT INTO m_src VALUES (1, 'one'), (2, 'two')").unwrap();
        let took = wait_for(Duration::from_secs(5), "the rows", || {
            table(&url, "m_dst").len() == 2
        });
        assert!(took < Duration::from_secs(2), "took {took:?}");

        // The URL (and its password) never shows in logs, status, metrics or the API.
        let everything = format!(
            "{}{}{}{}",
            service.logs(),
            service.get("/metrics").1,
            service.get("/api/v1/maps").1,
            std::fs::read_to_string(repo.path().join("status/maps/m.yaml")).unwrap()
        );
        assert!(!everything.contains("hunter2secret"), "{everything}");

        // Started again, everything exists: the server's notices ("already exists,
        // skipping") are the driver's chatter, not the service's log at its default level.
        drop(service);
        let again = Service::start(
            repo.path(),
            &["--interval", "1h", "--poll-interval", "1h"],
            &env_refs(&env),
        );
        pg_exec(&url, "INSERT INTO m_src VALUES (3, 'three')").unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while table(&url, "m_dst").len() != 3 {
            assert!(
                Instant::now() < deadline,
                "the third row:\n{}",
                again.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let logs = again.logs();
        assert!(
            !logs.contains("skipping") && !logs.contains("NOTICE"),
            "{logs}"
        );
    });
}

#[test]
/// Also: a process stopped with SIGTERM hands its maps over at once, not after the TTL.
fn kill_9_of_one_process_moves_its_maps_to_the_other_within_the_ttl_losing_nothing() {
    with_timeout(180, || {
        let Some(admin) = pg_admin_url() else { return };
        let db = PgDatabase::create(&admin);
        let maps = ["a", "b", "c", "d"];
        let repo = pg_repo(&db, &maps);
        let env = pg_env(&db);
        let url = db.url();
        let args = ["--interval", "1h", "--lease-ttl", "3s"];
        let first = Service::start(
            repo.path(),
            &[&args[..], &["--holder-id", "first"]].concat(),
            &env_refs(&env),
        );
        let second = Service::start(
            repo.path(),
            &[&args[..], &["--holder-id", "second"]].concat(),
            &env_refs(&env),
        );
        let owned = |s: &Service| -> Vec<String> {
            s.json("/api/v1/service")["ownedMaps"]
                .as_array()
                .map(|a| a.iter().map(|m| m.as_str().unwrap().to_string()).collect())
                .unwrap_or_default()
        };
        wait_for(Duration::from_secs(20), "the maps to be split 2/2", || {
            owned(&first).len() == 2 && owned(&second).len() == 2
        });
        let mut all: Vec<String> = owned(&first).into_iter().chain(owned(&second)).collect();
        all.sort();
        assert_eq!(all, maps, "each map has exactly one owner");
        wait_for(Duration::from_secs(20), "every map Running", || {
            maps.iter()
                .all(|m| phase(&repo, m).as_deref() == Some("Running"))
        });

        // Changes keep coming while the first process dies.
        let mut id = 0;
        let mut insert = |n: i64| {
            let mut sql = String::new();
            for _ in 0..n {
                id += 1;
                for m in maps {
                    sql += &format!("INSERT INTO {m}_src VALUES ({id}, 'v{id}');");
                }
            }
            pg_exec(&url, &sql).unwrap();
        };
        insert(50);
        let victim_maps = owned(&first);
        let mut first = first;
        first.child.kill().unwrap(); // SIGKILL
        first.child.wait().unwrap();
        let killed = Instant::now();
        insert(50);
        let failover = wait_for(Duration::from_secs(15), "the maps to move", || {
            owned(&second).len() == 4
        });
        assert!(
            failover <= Duration::from_secs(3 + 2),
            "failover took {failover:?} with a 3s TTL ({victim_maps:?})"
        );
        insert(50);
        wait_for(Duration::from_secs(20), "every table to converge", || {
            maps.iter()
                .all(|m| table(&url, &format!("{m}_dst")) == table(&url, &format!("{m}_src")))
        });
        for m in maps {
            let rows = table(&url, &format!("{m}_dst"));
            assert_eq!(rows.len(), 150, "{m}: nothing lost, nothing doubled");
        }
        assert!(killed.elapsed() >= failover);

        // SIGTERM gives the leases back at once: the other process does not wait for the TTL.
        let third = Service::start(
            repo.path(),
            &[&args[..], &["--holder-id", "third"]].concat(),
            &env_refs(&env),
        );
        wait_for(
            Duration::from_secs(20),
            "the maps to be split again",
            || owned(&third).len() == 2 && owned(&second).len() == 2,
        );
        let mut second = second;
        second.signal("-TERM");
        let stopped = Instant::now();
        assert_eq!(second.wait_exit(Duration::from_secs(10)).0, Some(0));
        wait_for(Duration::from_secs(10), "the handover", || {
            owned(&third).len() == 4
        });
        let handover = stopped.elapsed();
        assert!(
            handover < Duration::from_secs(2),
            "handover after SIGTERM took {handover:?}: the leases were not given back"
        );
    });
}

// ---- Fencing: a holder paused past its lease's TTL ----

/// Keeps raising `v` of a rotating slice of `m_src` (values only ever grow; about 5,000
/// rows a second) until told to stop; returns how many updates it made.
fn increasing_writer(url: String, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> u64 {
    pg_runtime().block_on(async move {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut made = 0u64;
        let mut slice = 0i64;
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            match client
                .execute(
                    "UPDATE m_src SET v = v + 1 WHERE id % 3000 = $1",
                    &[&(slice % 3000)],
                )
                .await
            {
                Ok(n) => made += n,
                Err(e) => panic!("the writer failed: {e}"),
            }
            slice += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        made
    })
}

#[test]
/// SIGSTOP of the process driving a map in the middle of its initial sync, past the lease's
/// TTL; the other process takes the map over and writes newer values; SIGCONT: the first
/// process's writes of rows it read before the pause are refused by the target's fence, it
/// gives the map up and says so, and no value in the destination ever goes back (a trigger
/// records any update that lowers `v`). Row for row equal at the end.
fn a_holder_paused_past_its_ttl_is_fenced_and_never_writes_an_older_value_over_a_newer_one() {
    with_timeout(300, || {
        let Some(admin) = pg_admin_url() else { return };
        let db = PgDatabase::create(&admin);
        let url = db.url();
        let repo = Repo::new(&[(".gitignore", ".dualwrite/\nstatus/\n")]);
        repo.write("dualwrite.yaml", &pg_project());
        repo.write("maps/m.yaml", &pg_map("m"));
        pg_exec(
            &url,
            "CREATE TABLE m_src (id bigint PRIMARY KEY, v bigint NOT NULL);
             CREATE TABLE m_dst (id bigint PRIMARY KEY, v bigint NOT NULL);
             INSERT INTO m_src SELECT g, 0 FROM generate_series(1, 300000) g;
             CREATE TABLE went_back (id bigint, old_v bigint, new_v bigint);
             CREATE FUNCTION never_back() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
               IF NEW.v < OLD.v THEN INSERT INTO went_back VALUES (OLD.id, OLD.v, NEW.v); END IF;
               RETURN NEW;
             END $$;
             CREATE TRIGGER never_back BEFORE UPDATE ON m_dst
               FOR EACH ROW EXECUTE FUNCTION never_back();",
        )
        .unwrap();
        repo.commit_all("map m");
        let env = pg_env(&db);
        let args = ["--interval", "1h", "--lease-ttl", "3s"];
        let first = Service::start(
            repo.path(),
            &[&args[..], &["--holder-id", "first"]].concat(),
            &env_refs(&env),
        );
        let count = |t: &str| pg_rows(&url, &format!("SELECT count(*), '' FROM {t}"))[0].0;
        wait_for(
            Duration::from_secs(60),
            "the initial sync to be under way",
            || count("m_dst") >= 20_000,
        );
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (url, stop) = (url.clone(), stop.clone());
            std::thread::spawn(move || increasing_writer(url, stop))
        };
        first.signal("-STOP");
        let second = Service::start(
            repo.path(),
            &[&args[..], &["--holder-id", "second"]].concat(),
            &env_refs(&env),
        );
        // The second takes the lease once the TTL has run out; its first write waits, when
        // the first was frozen inside a write transaction, until the server ends that
        // session (idle_in_transaction_session_timeout).
        let took = Instant::now();
        while !second.logs().contains("took the map") {
            assert!(
                took.elapsed() < Duration::from_secs(60),
                "the second process did not take over:\n{}",
                second
                    .logs()
                    .lines()
                    .filter(|l| !l.contains("NOTICE"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // The source keeps changing while the second copies and catches up; then it rests,
        // and the second brings the destination up to it.
        std::thread::sleep(Duration::from_secs(3));
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let updates = writer.join().unwrap();
        assert!(updates > 0);
        let equal = || {
            pg_rows(
                &url,
                "SELECT (SELECT count(*) FROM (SELECT * FROM m_src EXCEPT SELECT * FROM m_dst) a)
                      + (SELECT count(*) FROM (SELECT * FROM m_dst EXCEPT SELECT * FROM m_src) b),
                        ''",
            )[0]
            .0 == 0
        };
        let synced = Instant::now();
        while !(phase(&repo, "m").as_deref() == Some("Running") && equal()) {
            if synced.elapsed() > Duration::from_secs(120) {
                let activity = pg_rows(
                    &url,
                    "SELECT pid::bigint, coalesce(state, '') || ' ' || coalesce(wait_event, '') || ' '
                        || left(query, 80) FROM pg_stat_activity WHERE datname = current_database()",
                );
                panic!(
                    "the second did not finish the sync ({} rows):\n{activity:#?}\n{}",
                    count("m_dst"),
                    second
                        .logs()
                        .lines()
                        .filter(|l| !l.contains("NOTICE"))
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Newer values are in the destination now; the first wakes up with older ones.
        first.signal("-CONT");
        wait_for(
            Duration::from_secs(20),
            "the first to give the map up",
            || {
                first.logs().contains("giving the map up")
                    || first.logs().contains("gives the map up")
            },
        );
        // Whatever the first still had in hand was refused: the tables stay equal.
        std::thread::sleep(Duration::from_secs(2));
        assert!(equal(), "row for row equal after the first woke up");
        let went_back = pg_rows(&url, "SELECT count(*), '' FROM went_back")[0].0;
        assert_eq!(
            went_back,
            0,
            "an older value overwrote a newer one:\n{}",
            first.logs()
        );
        assert_eq!(
            second.json("/api/v1/service")["ownedMaps"],
            serde_json::json!(["m"]),
            "the map stays with the second process"
        );
        let logs = first.logs();
        assert!(
            logs.contains("refused a write of lease epoch"),
            "the first process's stale write was not refused by the fence:\n{logs}"
        );
    });
}
