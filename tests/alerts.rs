//! Alert rules end to end, the example from the field: pause the map when 10 errors of type
//! ApplicationError happen within 15 minutes, and email a group. A real PostgreSQL
//! destination rejects records (a CHECK constraint), a real SMTP server receives the mail, the
//! map is held Paused while its changes queue, and `dualwrite resume` ends the hold.

mod common;
mod support;

use common::{TestDb, unique_table};
use dualwrite::endpoint::EndpointSpec;
use support::mail::SmtpServer;
use support::service::{Service, wait_for};
use support::{Repo, run_in};

fn write_project(repo: &Repo, smtp_port: u16) {
    repo.write(
        "dualwrite.yaml",
        &format!(
            "apiVersion: dualwrite/v1\nkind: Project\nmetadata: {{ name: a }}\nspec:\n  endpoints:\n    erp: {{ sqlite: {{ path: erp.db }} }}\n    crm: {{ postgres: {{ urlFromEnv: DW_ALERT_PG }} }}\n  notifications:\n    smtp: {{ host: 127.0.0.1, port: {smtp_port}, from: dualwrite@example.com, tls: none }}\n"
        ),
    );
}

const RULE: &str = "\
apiVersion: dualwrite/v1
kind: AlertRule
metadata: { name: pause-on-app-errors }
spec:
  selector: { matchLabels: { team: finance } }
  errorType: ApplicationError
  threshold: 10
  window: 15m
  notify:
    email: \"ops@example.com, dba@example.com\"
  action: Pause
";

fn status(repo: &Repo, path: &str) -> String {
    std::fs::read_to_string(repo.path().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A map `customers` (labels team: finance) copying `items` (id, qty) of a SQLite source
/// into a table of the real PostgreSQL (`DW_ALERT_PG`) whose CHECK rejects negative
/// quantities, with `rule` in `alerts/` and the SMTP server at `smtp_port`.
struct PgCase {
    repo: Repo,
    pg: TestDb,
    table: String,
    url: String,
    erp: rusqlite::Connection,
}

impl PgCase {
    /// `None` (a loud skip) when PostgreSQL is unreachable, unless CI=true. The source
    /// holds ids 1..=`rows` with qty = id; nothing is reconciled yet.
    async fn new(rule: &str, smtp_port: u16, rows: u32) -> Option<PgCase> {
        let mut pg = TestDb::postgres().await?;
        let EndpointSpec::Postgres { url } = pg.spec.clone() else {
            unreachable!()
        };
        let table = unique_table("alert");
        pg.plain
            .exec(&format!(
                "CREATE TABLE {table} (id bigint PRIMARY KEY, qty bigint NOT NULL CHECK (qty >= 0))"
            ))
            .await;
        pg.on_drop(format!("DROP TABLE IF EXISTS {table}"));
        let repo = Repo::new(&[]);
        write_project(&repo, smtp_port);
        repo.write(
            "maps/customers.yaml",
            &format!(
                "apiVersion: dualwrite/v1\nkind: TableMap\nmetadata: {{ name: customers, labels: {{ team: finance }} }}\nspec:\n  source: {{ endpoint: erp, table: items }}\n  destination: {{ endpoint: crm, table: {table} }}\n  columns:\n    - {{ source: id, destination: id, key: true }}\n    - {{ source: qty, destination: qty }}\n"
            ),
        );
        repo.write("alerts/rule.yaml", rule);
        let erp = rusqlite::Connection::open(repo.path().join("erp.db")).unwrap();
        erp.execute_batch(&format!(
            "CREATE TABLE items (id INTEGER PRIMARY KEY, qty INTEGER NOT NULL);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows}) INSERT INTO items SELECT i, i FROM n;"
        ))
        .unwrap();
        Some(PgCase {
            repo,
            pg,
            table,
            url,
            erp,
        })
    }

    /// Runs `dualwrite` with the PostgreSQL URL in the environment; the URL never leaks.
    fn run(&self, args: &[&str]) -> support::Run {
        let run = run_in(self.repo.path(), args, &[("DW_ALERT_PG", &self.url)]);
        assert!(
            !run.stdout.contains(&self.url) && !run.stderr.contains(&self.url),
            "the URL leaked"
        );
        run
    }

    /// `dualwrite reconcile`, which must succeed; its output.
    fn reconcile(&self) -> String {
        let run = self.run(&["reconcile"]);
        assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
        run.stdout
    }

    fn source(&self, sql: &str) {
        self.erp.execute_batch(sql).unwrap();
    }

    fn status(&self, path: &str) -> String {
        status(&self.repo, path)
    }

    /// The map's activity log events, oldest first, as `event: message` lines.
    fn events(&self) -> Vec<String> {
        let run = self.run(&["logs", "customers"]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        run.stdout
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                format!(
                    "{}: {}",
                    v["event"].as_str().unwrap(),
                    v["message"].as_str().unwrap()
                )
            })
            .collect()
    }

    /// Writes an ErrorRequest for the map.
    fn request(&self, name: &str, action: &str) {
        self.repo.write(
            &format!("requests/{name}.yaml"),
            &format!(
                "apiVersion: dualwrite/v1\nkind: ErrorRequest\nmetadata: {{ name: {name} }}\nspec:\n  map: customers\n  action: {action}\n"
            ),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_rejected_records_pause_the_map_email_the_group_and_resume_ends_the_hold() {
    let Some(smtp) = SmtpServer::start() else {
        return;
    };
    let Some(case) = PgCase::new(RULE, smtp.port, 100).await else {
        return;
    };
    let (repo, erp) = (&case.repo, &case.erp);
    let reconcile = |args: &[&str]| case.run(args);
    let run = reconcile(&["reconcile"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);

    // Nine rejected records: below the threshold, nothing happens.
    erp.execute_batch("UPDATE items SET qty = -1 WHERE id <= 9")
        .unwrap();
    let run = reconcile(&["reconcile"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let st = status(repo, "status/alerts/pause-on-app-errors.yaml");
    assert!(
        st.contains("customers:\n      state: Inactive\n      count: 9"),
        "{st}"
    );
    assert!(status(repo, "status/maps/customers.yaml").contains("phase: Running"));

    // The tenth: the rule fires, the map is held Paused, the group gets one email.
    erp.execute_batch("UPDATE items SET qty = -1 WHERE id = 10")
        .unwrap();
    let run = reconcile(&["reconcile"]);
    assert!(
        run.stdout
            .contains("alert pause-on-app-errors: Firing for map customers (10 in window)"),
        "{}",
        run.stdout
    );
    let map = status(repo, "status/maps/customers.yaml");
    assert!(map.contains("phase: Paused"), "{map}");
    assert!(
        map.contains("heldBy:\n    alert: pause-on-app-errors"),
        "{map}"
    );
    assert!(map.contains("reason: HeldByAlert"), "{map}");
    assert!(map.contains("event: HeldByAlert"), "{map}");
    let st = status(repo, "status/alerts/pause-on-app-errors.yaml");
    assert!(st.contains("state: Firing\n      count: 10"), "{st}");
    assert!(st.contains("notificationsSent: 1"), "{st}");
    assert!(st.contains("actionTaken: Paused map customers"), "{st}");
    let mails = smtp.wait_for(1);
    assert_eq!(mails.len(), 1, "one email for the firing");
    let mail = &mails[0];
    assert_eq!(mail.header("To"), "ops@example.com, dba@example.com");
    assert_eq!(
        mail.header("Subject"),
        "[dualwrite] FIRING pause-on-app-errors: customers — 10 ApplicationError in 15m"
    );
    for needle in [
        "customers",
        "threshold 10",
        "Paused map customers",
        "23514",
        "dualwrite resume customers",
    ] {
        assert!(
            mail.body.contains(needle),
            "{needle:?} not in the email:\n{}",
            mail.body
        );
    }

    // Held: good changes queue up and are not written, even though the spec says Running.
    erp.execute_batch("UPDATE items SET qty = 500 WHERE id BETWEEN 50 AND 54")
        .unwrap();
    reconcile(&["reconcile"]);
    let map = status(repo, "status/maps/customers.yaml");
    assert!(
        map.contains("phase: Paused") && map.contains("pending: 5"),
        "{map}"
    );
    assert_eq!(
        smtp.messages().len(),
        1,
        "no repeat notification while still firing"
    );

    // `dualwrite resume`: the hold ends, the queue drains, the old errors no longer count.
    erp.execute_batch("UPDATE items SET qty = 1 WHERE id <= 10")
        .unwrap();
    let run = reconcile(&["resume", "customers"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .starts_with("map customers: hold by alert pause-on-app-errors ended\n"),
        "{}",
        run.stdout
    );
    let map = status(repo, "status/maps/customers.yaml");
    assert!(
        map.contains("phase: Running") && !map.contains("heldBy"),
        "{map}"
    );
    assert!(map.contains("event: Resumed"), "{map}");
    let st = status(repo, "status/alerts/pause-on-app-errors.yaml");
    assert!(st.contains("state: Inactive\n      count: 0"), "{st}");
    let mails = smtp.wait_for(2);
    assert_eq!(mails.len(), 2);
    assert!(
        mails[1]
            .header("Subject")
            .starts_with("[dualwrite] RESOLVED pause-on-app-errors: customers"),
        "{}",
        mails[1].header("Subject")
    );
    let client = match &case.pg.plain {
        common::Plain::Postgres(c) => c,
        _ => unreachable!(),
    };
    let rows = client
        .query(
            &format!("SELECT count(*), sum(qty) FROM {}", case.table),
            &[],
        )
        .await
        .unwrap();
    let (n, sum): (i64, rust_decimal::Decimal) = (rows[0].get(0), rows[0].get(1));
    let expected: i64 = (11..=100).sum::<i64>() - (50..=54).sum::<i64>() + 5 * 500 + 10;
    assert_eq!((n, sum), (100, rust_decimal::Decimal::from(expected)));
}

#[test]
fn shipped_alert_rule_tests_pass() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let run = run_in(
        root,
        &[
            "alerts",
            "test",
            "alerts/tests/pause-on-app-errors.test.yaml",
            "examples/alerts/tests/stop-on-network-errors.test.yaml",
        ],
        &[],
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.ends_with("8 passed, 0 failed\n"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("ok   alerts/tests/pause-on-app-errors.test.yaml: the tenth pauses the map and emails the group, once\n"), "{}", run.stdout);
}

#[test]
fn a_failing_rule_test_shows_expected_against_actual_and_exits_1() {
    let repo = Repo::new(&[("alerts/rule.yaml", RULE)]);
    repo.write(
        "alerts/tests/rule.test.yaml",
        "ruleFiles: [../rule.yaml]\nmaps: [{ name: customers, labels: { team: finance } }]\ntests:\n  - name: expects too early\n    errors: [\"customers ApplicationError 0m+1m x10\"]\n    expect:\n      - at: 5m\n        firing: [pause-on-app-errors/customers]\n",
    );
    let run = repo.run(&["alerts", "test", "alerts/tests/rule.test.yaml"]);
    assert_eq!(run.code, 1);
    assert_eq!(
        run.stdout,
        format!(
            "FAIL alerts/tests/rule.test.yaml: expects too early\nat 5m:\n--- expected\n+++ actual\n@@ -1,4 +1,3 @@\n-firing:\n-  - pause-on-app-errors/customers\n+firing: []\n notifications: []\n actions: []\n\n0 passed, 1 failed\n"
        )
    );
    // A series naming a map the test does not list is an error, not a pass.
    repo.write(
        "alerts/tests/bad.test.yaml",
        "ruleFiles: [../rule.yaml]\nmaps: []\ntests:\n  - name: t\n    errors: [\"orders ApplicationError 0m\"]\n    expect: [{ at: 1m }]\n",
    );
    let run = repo.run(&["alerts", "test", "alerts/tests/bad.test.yaml"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stdout.starts_with(
            "ERROR \"orders ApplicationError 0m\": map \"orders\" is not listed under `maps`"
        ),
        "{}",
        run.stdout
    );
}

/// A SQLite source and destination, the destination rejecting negative quantities.
fn sqlite_repo(rule: &str, smtp_port: u16) -> Repo {
    let repo = Repo::new(&[]);
    repo.write(
        "dualwrite.yaml",
        &format!(
            "apiVersion: dualwrite/v1\nkind: Project\nmetadata: {{ name: a }}\nspec:\n  endpoints:\n    erp: {{ sqlite: {{ path: erp.db }} }}\n    crm: {{ sqlite: {{ path: crm.db }} }}\n  notifications:\n    smtp: {{ host: 127.0.0.1, port: {smtp_port}, from: dualwrite@example.com, tls: none }}\n"
        ),
    );
    repo.write(
        "maps/customers.yaml",
        "apiVersion: dualwrite/v1\nkind: TableMap\nmetadata: { name: customers, labels: { team: finance } }\nspec:\n  source: { endpoint: erp, table: items }\n  destination: { endpoint: crm, table: items }\n  columns:\n    - { source: id, destination: id, key: true }\n    - { source: qty, destination: qty }\n",
    );
    repo.write("alerts/rule.yaml", rule);
    rusqlite::Connection::open(repo.path().join("erp.db"))
        .unwrap()
        .execute_batch("CREATE TABLE items (id INTEGER PRIMARY KEY, qty INTEGER NOT NULL); INSERT INTO items VALUES (1, 1), (2, 2), (3, 3);")
        .unwrap();
    rusqlite::Connection::open(repo.path().join("crm.db"))
        .unwrap()
        .execute_batch(
            "CREATE TABLE items (id INTEGER PRIMARY KEY, qty INTEGER NOT NULL CHECK (qty >= 0));",
        )
        .unwrap();
    assert_eq!(repo.run(&["reconcile"]).code, 0);
    repo
}

#[test]
fn a_failed_delivery_is_shown_in_status_and_never_fails_the_sync() {
    // Nothing listens on this port: the SMTP server is down.
    let port = support::free_port();
    let repo = sqlite_repo(
        &RULE
            .replace("threshold: 10", "threshold: 2")
            .replace("action: Pause", "action: None"),
        port,
    );
    rusqlite::Connection::open(repo.path().join("erp.db"))
        .unwrap()
        .execute_batch("UPDATE items SET qty = -1 WHERE id <= 2; INSERT INTO items VALUES (4, 4);")
        .unwrap();
    let run = repo.run(&["reconcile"]);
    assert_eq!(
        run.code, 0,
        "the sync goes on: {}{}",
        run.stdout, run.stderr
    );
    let st = status(&repo, "status/alerts/pause-on-app-errors.yaml");
    assert!(st.contains("state: Firing"), "{st}");
    assert!(st.contains("lastDeliveryError: \"email: "), "{st}");
    let map = status(&repo, "status/maps/customers.yaml");
    assert!(map.contains("event: NotificationFailed"), "{map}");
    assert!(map.contains("phase: Running"), "{map}");
    let crm = rusqlite::Connection::open(repo.path().join("crm.db")).unwrap();
    let n: i64 = crm
        .query_row("SELECT count(*) FROM items WHERE id = 4", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1, "good records keep flowing");
}

#[test]
fn a_stop_rule_stops_the_map_and_resume_starts_it_again_with_an_initial_sync() {
    let Some(smtp) = SmtpServer::start() else {
        return;
    };
    let rule = RULE
        .replace("threshold: 10", "threshold: 2")
        .replace("action: Pause", "action: Stop");
    let repo = sqlite_repo(&rule, smtp.port);
    let erp = rusqlite::Connection::open(repo.path().join("erp.db")).unwrap();
    erp.execute_batch("UPDATE items SET qty = -5 WHERE id <= 2")
        .unwrap();
    repo.run(&["reconcile"]);
    let map = status(&repo, "status/maps/customers.yaml");
    assert!(
        map.contains("phase: Stopped") && map.contains("alert: pause-on-app-errors"),
        "{map}"
    );
    let triggers: i64 = erp
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'items'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(triggers, 0, "Stop removes capture");
    assert_eq!(smtp.wait_for(1).len(), 1);

    // Fixed at the source, then resumed: a fresh initial sync copies everything.
    erp.execute_batch("UPDATE items SET qty = 7 WHERE id <= 2")
        .unwrap();
    let run = repo.run(&["resume", "customers"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let map = status(&repo, "status/maps/customers.yaml");
    assert!(
        map.contains("phase: Running") && !map.contains("heldBy"),
        "{map}"
    );
    let crm = rusqlite::Connection::open(repo.path().join("crm.db")).unwrap();
    let sum: i64 = crm
        .query_row("SELECT sum(qty) FROM items", [], |r| r.get(0))
        .unwrap();
    assert_eq!(sum, 7 + 7 + 3);
}

#[test]
fn a_commit_changing_spec_state_ends_the_hold() {
    let port = support::free_port();
    let rule = RULE.replace("threshold: 10", "threshold: 2").replace(
        "  notify:\n    email: \"ops@example.com, dba@example.com\"\n",
        "",
    );
    let repo = sqlite_repo(&rule, port);
    let erp = rusqlite::Connection::open(repo.path().join("erp.db")).unwrap();
    erp.execute_batch("UPDATE items SET qty = -5 WHERE id <= 2")
        .unwrap();
    repo.run(&["reconcile"]);
    assert!(status(&repo, "status/maps/customers.yaml").contains("reason: HeldByAlert"));

    // The owner pauses the map in git: the hold is over, the map follows its spec.
    let map = std::fs::read_to_string(repo.path().join("maps/customers.yaml")).unwrap();
    repo.write(
        "maps/customers.yaml",
        &map.replace("spec:\n", "spec:\n  state: Paused\n"),
    );
    repo.run(&["reconcile"]);
    let st = status(&repo, "status/maps/customers.yaml");
    assert!(
        st.contains("phase: Paused") && !st.contains("heldBy"),
        "{st}"
    );
    assert!(
        st.contains("hold by alert pause-on-app-errors ended: spec.state changed"),
        "{st}"
    );
    // And back to Running: the old errors no longer count, so it is not held again.
    repo.write("maps/customers.yaml", &map);
    repo.run(&["reconcile"]);
    let st = status(&repo, "status/maps/customers.yaml");
    assert!(
        st.contains("phase: Running") && !st.contains("heldBy"),
        "{st}"
    );
}

/// The example rule with another threshold and action, with or without its email.
fn rule(threshold: u32, action: &str, email: bool) -> String {
    let rule = RULE
        .replace("threshold: 10", &format!("threshold: {threshold}"))
        .replace("action: Pause", &format!("action: {action}"));
    if email {
        rule
    } else {
        rule.replace(
            "  notify:\n    email: \"ops@example.com, dba@example.com\"\n",
            "",
        )
    }
}

const RULE_STATUS: &str = "status/alerts/pause-on-app-errors.yaml";
const MAP_STATUS: &str = "status/maps/customers.yaml";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_firing_on_the_initial_sync_holds_the_map_in_that_pass() {
    let port = support::free_port();
    let Some(case) = PgCase::new(&rule(2, "Pause", false), port, 5).await else {
        return;
    };
    case.source("UPDATE items SET qty = -1 WHERE id <= 2");
    let out = case.reconcile();
    assert!(out.contains("map customers: Paused\n"), "{out}");
    let map = case.status(MAP_STATUS);
    assert!(
        map.contains("phase: Paused") && map.contains("alert: pause-on-app-errors"),
        "{map}"
    );
    // From the copy straight to the hold: the map was never Running in between.
    let events = case.events();
    let started = events
        .iter()
        .position(|e| e.starts_with("InitialSyncStarted"))
        .unwrap();
    assert!(
        !events[started..].iter().any(|e| e.starts_with("Running:")),
        "{events:#?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e == "Paused: held by alert pause-on-app-errors"),
        "{events:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_counts_only_errors_recorded_after_it_was_created_or_last_changed() {
    let port = support::free_port();
    let Some(case) = PgCase::new(&rule(5, "Pause", false), port, 40).await else {
        return;
    };
    case.repo.remove("alerts/rule.yaml");
    // Twenty records fail, then are fixed at the source: Superseded, in the past.
    case.source("UPDATE items SET qty = -1 WHERE id <= 20");
    case.reconcile();
    case.source("UPDATE items SET qty = 1 WHERE id <= 20");
    case.reconcile();

    // Added now: the twenty do not count.
    case.repo
        .write("alerts/rule.yaml", &rule(5, "Pause", false));
    let out = case.reconcile();
    assert!(!out.contains("Firing"), "{out}");
    let st = case.status(RULE_STATUS);
    assert!(st.contains("state: Inactive\n      count: 0"), "{st}");
    assert!(case.status(MAP_STATUS).contains("phase: Running"));

    // Three new errors count; changing the rule starts its count again.
    case.source("UPDATE items SET qty = -2 WHERE id BETWEEN 21 AND 23");
    case.reconcile();
    assert!(case.status(RULE_STATUS).contains("count: 3"));
    case.repo
        .write("alerts/rule.yaml", &rule(3, "Pause", false));
    let out = case.reconcile();
    assert!(!out.contains("Firing"), "{out}");
    assert!(
        case.status(RULE_STATUS)
            .contains("state: Inactive\n      count: 0")
    );
    case.source("UPDATE items SET qty = -3 WHERE id BETWEEN 24 AND 26");
    let out = case.reconcile();
    assert!(
        out.contains("alert pause-on-app-errors: Firing for map customers (3 in window)"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_rule_never_traps_the_map_after_a_commit_of_spec_state() {
    let Some(smtp) = SmtpServer::start() else {
        return;
    };
    let Some(case) = PgCase::new(&rule(2, "Stop", true), smtp.port, 5).await else {
        return;
    };
    case.reconcile();
    case.source("UPDATE items SET qty = -1 WHERE id <= 2");
    case.reconcile();
    assert!(case.status(MAP_STATUS).contains("phase: Stopped"));

    // The owner stops the map in git (the hold ends), then starts it again without fixing
    // the source: the initial sync meets the same two records again, which do not count.
    let map = std::fs::read_to_string(case.repo.path().join("maps/customers.yaml")).unwrap();
    case.repo.write(
        "maps/customers.yaml",
        &map.replace("spec:\n", "spec:\n  state: Stopped\n"),
    );
    case.reconcile();
    case.repo.write(
        "maps/customers.yaml",
        &map.replace("spec:\n", "spec:\n  state: Running\n"),
    );
    let out = case.reconcile();
    assert!(out.contains("map customers: Running\n"), "{out}");
    let st = case.status(MAP_STATUS);
    assert!(
        st.contains("phase: Running") && !st.contains("heldBy"),
        "{st}"
    );
    assert!(st.contains("open: 2"), "the records still fail: {st}");
    let rule = case.status(RULE_STATUS);
    assert!(rule.contains("state: Inactive\n      count: 0"), "{rule}");
    // And it stays so.
    case.reconcile();
    assert!(case.status(MAP_STATUS).contains("phase: Running"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_resume_the_rule_status_shows_the_state_after_the_resume() {
    let Some(smtp) = SmtpServer::start() else {
        return;
    };
    let Some(case) = PgCase::new(&rule(2, "Stop", true), smtp.port, 5).await else {
        return;
    };
    case.reconcile();
    case.source("UPDATE items SET qty = -1 WHERE id <= 2");
    case.reconcile();
    assert!(
        case.status(RULE_STATUS)
            .contains("actionTaken: Stopped map customers")
    );
    // Resumed without a fix: the map runs (the two records fail again, and do not count).
    let run = case.run(&["resume", "customers"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(!run.stdout.contains("Firing"), "{}", run.stdout);
    assert!(case.status(MAP_STATUS).contains("phase: Running"));
    let rule = case.status(RULE_STATUS);
    assert!(rule.contains("state: Inactive\n      count: 0"), "{rule}");
    assert!(!rule.contains("actionTaken"), "{rule}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dismiss_runs_while_the_map_is_stopped_and_a_retry_waits_until_it_runs() {
    let Some(smtp) = SmtpServer::start() else {
        return;
    };
    let Some(case) = PgCase::new(&rule(2, "Stop", true), smtp.port, 5).await else {
        return;
    };
    case.reconcile();
    case.source("UPDATE items SET qty = -1 WHERE id <= 3");
    case.reconcile();
    assert!(case.status(MAP_STATUS).contains("phase: Stopped"));

    case.request("dismiss-them", "Dismiss");
    let out = case.reconcile();
    assert!(out.contains("request dismiss-them: Completed"), "{out}");
    let st = case.status("status/requests/dismiss-them.yaml");
    assert!(st.contains("dismissed: 3"), "{st}");
    assert!(case.status(MAP_STATUS).contains("phase: Stopped"));

    // A Retry touches the target: it waits while the map is Stopped.
    case.request("retry-later", "Retry");
    case.reconcile();
    let st = case.status("status/requests/retry-later.yaml");
    assert!(st.contains("state: Queued"), "{st}");
    case.source("UPDATE items SET qty = 9 WHERE id <= 3");
    let run = case.run(&["resume", "customers"]);
    assert!(
        run.stdout.contains("request retry-later: Completed"),
        "{}",
        run.stdout
    );
    assert!(case.status(MAP_STATUS).contains("phase: Running"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_swallowed_by_cooldown_is_counted_and_logged() {
    let Some(smtp) = SmtpServer::start() else {
        return;
    };
    let Some(case) = PgCase::new(&rule(1, "None", true), smtp.port, 5).await else {
        return;
    };
    case.reconcile();
    case.source("UPDATE items SET qty = -1 WHERE id = 1");
    case.reconcile();
    assert_eq!(smtp.wait_for(1).len(), 1);
    // Dismissed: the rule resolves (one RESOLVED email), then fires again within the hour.
    case.request("dismiss-1", "Dismiss");
    case.reconcile();
    assert_eq!(smtp.wait_for(2).len(), 2);
    case.source("UPDATE items SET qty = -1 WHERE id = 2");
    let out = case.reconcile();
    assert!(out.contains("Firing for map customers"), "{out}");
    let st = case.status(RULE_STATUS);
    assert!(st.contains("notificationsSent: 2"), "{st}");
    assert!(st.contains("notificationsSuppressed: 1"), "{st}");
    assert!(
        case.events()
            .iter()
            .any(|e| e.starts_with("NotificationSuppressed: alert pause-on-app-errors: notification suppressed, cooldown 1h")),
        "{:#?}",
        case.events()
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(smtp.messages().len(), 2, "nothing was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_accepted_deliveries_count_as_sent_and_a_failure_reaches_the_terminal() {
    // Nothing listens on this port: connections are refused.
    let closed = support::free_port();
    let Some(case) = PgCase::new(&rule(1, "None", true), closed, 5).await else {
        return;
    };
    case.reconcile();
    case.source("UPDATE items SET qty = -1 WHERE id = 1");
    let out = case.reconcile();
    assert!(
        out.contains("alert pause-on-app-errors: notification for map customers not delivered: email: SMTP 127.0.0.1:"),
        "{out}"
    );
    let st = case.status(RULE_STATUS);
    assert!(st.contains("notificationsSent: 0"), "{st}");
    assert!(
        st.contains("lastDeliveryError: \"email: SMTP 127.0.0.1:"),
        "{st}"
    );
    assert!(
        case.events()
            .iter()
            .any(|e| e.starts_with("NotificationFailed: alert pause-on-app-errors: email:"))
    );

    // The server is up: the next firing is sent (the failed one started no cooldown).
    let Some(smtp) = SmtpServer::start() else {
        return;
    };
    write_project(&case.repo, smtp.port);
    case.request("dismiss-1", "Dismiss");
    case.reconcile();
    case.source("UPDATE items SET qty = -1 WHERE id = 2");
    let out = case.reconcile();
    assert!(!out.contains("not delivered"), "{out}");
    assert_eq!(smtp.wait_for(1).len(), 1);
    let st = case.status(RULE_STATUS);
    assert!(st.contains("notificationsSent: 1"), "{st}");
    assert!(!st.contains("lastDeliveryError"), "{st}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolved_message_says_whether_the_hold_remains_and_what_ends_it() {
    let Some(smtp) = SmtpServer::start() else {
        return;
    };
    // A second firing is notified a second after the first.
    let rule = rule(2, "Pause", true) + "  cooldown: 1s\n";
    let Some(case) = PgCase::new(&rule, smtp.port, 5).await else {
        return;
    };
    case.reconcile();
    case.source("UPDATE items SET qty = -1 WHERE id <= 2");
    case.reconcile();
    assert!(case.status(MAP_STATUS).contains("phase: Paused"));
    // The errors go (dismissed): the rule resolves, the hold remains.
    case.request("dismiss-1", "Dismiss");
    case.reconcile();
    let mails = smtp.wait_for(2);
    assert_eq!(mails.len(), 2);
    assert!(
        mails[1]
            .header("Subject")
            .starts_with("[dualwrite] RESOLVED")
    );
    assert!(
        mails[1].body.contains("The hold remains: map customers stays held by alert pause-on-app-errors until `dualwrite resume customers` or a commit that changes its spec.state."),
        "{}",
        mails[1].body
    );
    assert!(case.status(MAP_STATUS).contains("phase: Paused"));

    // Fired again and resumed: the RESOLVED message says nothing holds the map.
    case.source("UPDATE items SET qty = -1 WHERE id BETWEEN 3 AND 4");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    case.run(&["resume", "customers"]);
    assert!(case.status(MAP_STATUS).contains("phase: Paused"));
    assert_eq!(smtp.wait_for(3).len(), 3);
    let run = case.run(&["resume", "customers"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let mails = smtp.wait_for(4);
    assert_eq!(mails.len(), 4);
    let body = &mails[3].body;
    assert!(
        mails[3]
            .header("Subject")
            .starts_with("[dualwrite] RESOLVED")
    );
    assert!(body.contains("Nothing holds map customers"), "{body}");
    assert!(!body.contains("dualwrite resume"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_run_a_hold_takes_effect_in_the_firing_pass_dismiss_runs_while_held_and_cooldown_is_logged()
 {
    let Some(smtp) = SmtpServer::start() else {
        return;
    };
    let Some(case) = PgCase::new(&rule(2, "Pause", true), smtp.port, 6).await else {
        return;
    };
    case.source("UPDATE items SET qty = -1 WHERE id <= 2");
    let service = Service::start(case.repo.path(), &[], &[("DW_ALERT_PG", &case.url)]);
    let limit = std::time::Duration::from_secs(30);
    let file =
        |path: &str| std::fs::read_to_string(case.repo.path().join(path)).unwrap_or_default();
    wait_for(limit, "the map held Paused", || {
        file(MAP_STATUS).contains("phase: Paused") && file(MAP_STATUS).contains("heldBy")
    });
    let events = case.events();
    let started = events
        .iter()
        .position(|e| e.starts_with("InitialSyncStarted"))
        .unwrap();
    assert!(
        !events[started..].iter().any(|e| e.starts_with("Running:")),
        "{events:#?}"
    );
    assert_eq!(smtp.wait_for(1).len(), 1);

    // Dismissed while held: the rule resolves, the hold remains.
    case.request("dismiss-1", "Dismiss");
    wait_for(limit, "the dismiss to run", || {
        file("status/requests/dismiss-1.yaml").contains("state: Completed")
    });
    wait_for(limit, "the rule to resolve", || {
        file(RULE_STATUS).contains("state: Inactive")
    });
    assert!(file(MAP_STATUS).contains("phase: Paused"));

    // Resumed from another shell; two new bad records fire the rule again within its
    // cooldown: the notification is swallowed, counted and logged.
    let run = case.run(&["resume", "customers"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    wait_for(limit, "the map to run again", || {
        file(MAP_STATUS).contains("phase: Running")
    });
    case.source("UPDATE items SET qty = -1 WHERE id BETWEEN 3 AND 4");
    wait_for(limit, "the second firing", || {
        file(RULE_STATUS).contains("notificationsSuppressed: 1")
    });
    wait_for(limit, "the log line", || {
        service
            .logs()
            .contains("notification suppressed, cooldown 1h")
    });
    assert!(file(MAP_STATUS).contains("phase: Paused"));
    let mails = smtp.wait_for(2);
    assert_eq!(
        mails.len(),
        2,
        "the firing and the resolution, nothing more"
    );
}
