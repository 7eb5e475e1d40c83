//! Alert rules end to end, the example from the field: pause the map when 10 errors of type
//! ApplicationError happen within 15 minutes, and email a group. A real PostgreSQL
//! destination rejects records (a CHECK constraint), a real SMTP server receives the mail, the
//! map is held Paused while its changes queue, and `dualwrite resume` ends the hold.

mod common;
mod support;

use common::{TestDb, unique_table};
use dualwrite::endpoint::EndpointSpec;
use support::mail::SmtpServer;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_rejected_records_pause_the_map_email_the_group_and_resume_ends_the_hold() {
    let Some(mut pg) = TestDb::postgres().await else {
        return;
    };
    let Some(smtp) = SmtpServer::start() else {
        return;
    };
    let EndpointSpec::Postgres { url } = pg.spec.clone() else {
        unreachable!()
    };
    let table = unique_table("alert");
    pg.plain
        .exec(&format!(
            "CREATE TABLE {table} (id bigint PRIMARY KEY, qty bigint NOT NULL CHECK (qty >= 0))"
        ))
        .await;

    let repo = Repo::new(&[]);
    write_project(&repo, smtp.port);
    repo.write(
        "maps/customers.yaml",
        &format!(
            "apiVersion: dualwrite/v1\nkind: TableMap\nmetadata: {{ name: customers, labels: {{ team: finance }} }}\nspec:\n  source: {{ endpoint: erp, table: items }}\n  destination: {{ endpoint: crm, table: {table} }}\n  columns:\n    - {{ source: id, destination: id, key: true }}\n    - {{ source: qty, destination: qty }}\n"
        ),
    );
    repo.write("alerts/pause-on-app-errors.yaml", RULE);
    let erp = rusqlite::Connection::open(repo.path().join("erp.db")).unwrap();
    erp.execute_batch(
        "CREATE TABLE items (id INTEGER PRIMARY KEY, qty INTEGER NOT NULL);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100) INSERT INTO items SELECT i, i FROM n;",
    )
    .unwrap();
    let env = [("DW_ALERT_PG", url.as_str())];
    let reconcile = |args: &[&str]| {
        let run = run_in(repo.path(), args, &env);
        assert!(
            !run.stdout.contains(&url) && !run.stderr.contains(&url),
            "the URL leaked"
        );
        run
    };
    let run = reconcile(&["reconcile"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);

    // Nine rejected records: below the threshold, nothing happens.
    erp.execute_batch("UPDATE items SET qty = -1 WHERE id <= 9")
        .unwrap();
    let run = reconcile(&["reconcile"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let st = status(&repo, "status/alerts/pause-on-app-errors.yaml");
    assert!(
        st.contains("customers:\n      state: Inactive\n      count: 9"),
        "{st}"
    );
    assert!(status(&repo, "status/maps/customers.yaml").contains("phase: Running"));

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
    let map = status(&repo, "status/maps/customers.yaml");
    assert!(map.contains("phase: Paused"), "{map}");
    assert!(
        map.contains("heldBy:\n    alert: pause-on-app-errors"),
        "{map}"
    );
    assert!(map.contains("reason: HeldByAlert"), "{map}");
    assert!(map.contains("event: HeldByAlert"), "{map}");
    let st = status(&repo, "status/alerts/pause-on-app-errors.yaml");
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
    let map = status(&repo, "status/maps/customers.yaml");
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
    let map = status(&repo, "status/maps/customers.yaml");
    assert!(
        map.contains("phase: Running") && !map.contains("heldBy"),
        "{map}"
    );
    assert!(map.contains("event: Resumed"), "{map}");
    let st = status(&repo, "status/alerts/pause-on-app-errors.yaml");
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
    let client = match &pg.plain {
        common::Plain::Postgres(c) => c,
        _ => unreachable!(),
    };
    let rows = client
        .query(&format!("SELECT count(*), sum(qty) FROM {table}"), &[])
        .await
        .unwrap();
    let (n, sum): (i64, rust_decimal::Decimal) = (rows[0].get(0), rows[0].get(1));
    let expected: i64 = (11..=100).sum::<i64>() - (50..=54).sum::<i64>() + 5 * 500 + 10;
    assert_eq!((n, sum), (100, rust_decimal::Decimal::from(expected)));
    pg.drop_table(&table).await;
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
