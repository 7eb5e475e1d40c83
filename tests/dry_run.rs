//! `dualwrite reconcile --dry-run`: the plan per map, alert and request, the diff, where the
//! actual state came from, exit codes, output formats, `--revision`, and that it writes nothing.

mod support;

use dualwrite::state::StateStore;

use support::{CUSTOMERS, Repo};

const ALERT: &str = "\
apiVersion: dualwrite/v1
kind: AlertRule
metadata: { name: pause-on-app-errors }
spec:
  selector: { matchLabels: { team: finance } }
  errorType: ApplicationError
  threshold: 10
  window: 15m
  notify: { email: \"id1@example.com, id2@example.com\" }
  action: Pause
";

fn status_file(name: &str, revision: &str, phase: &str) -> String {
    format!(
        "apiVersion: dualwrite/v1\nkind: TableMapStatus\nmetadata: {{ name: {name} }}\nstatus:\n  observedRevision: {revision}\n  desiredState: Running\n  phase: {phase}\n"
    )
}

#[test]
fn first_deployment_plans_initial_syncs_and_exits_2_with_detailed_exitcode() {
    let repo = Repo::new(&[("maps/customers.yaml", CUSTOMERS), ("alerts/a.yaml", ALERT)]);
    let run = repo.run(&["reconcile", "--dry-run", "--detailed-exitcode"]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    let out = &run.stdout;
    assert!(
        out.starts_with(
            "Actual state: none (no state store, no status files): nothing has been applied yet\n"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "  map customers (NotRunning -> Running)\n    * start with initial sync (run 1)\n"
        ),
        "{out}"
    );
    assert!(out.contains("  + alert pause-on-app-errors: Added\n      maps: customers\n      errorType: ApplicationError\n      threshold: 10\n      window: 15m\n      recipients: id1@example.com, id2@example.com\n      action: Pause\n"), "{out}");
    assert!(
        out.contains("--- /dev/null\n+++ desired/maps/customers.yaml\n"),
        "{out}"
    );
    // Without --detailed-exitcode a valid plan exits 0.
    assert_eq!(repo.run(&["reconcile", "--dry-run"]).code, 0);
}

#[test]
fn dry_run_writes_nothing() {
    let repo = Repo::new(&[("maps/customers.yaml", CUSTOMERS), ("alerts/a.yaml", ALERT)]);
    let before = repo.snapshot();
    for output in ["text", "json", "github"] {
        repo.run(&["reconcile", "--dry-run", "--output", output]);
    }
    assert_eq!(repo.snapshot(), before, "the dry-run changed files");
    assert!(
        !repo.path().join(".dualwrite").exists(),
        "no state store may be created"
    );
}

#[test]
fn actual_state_from_status_files_and_the_config_at_their_revision() {
    let repo = Repo::new(&[("maps/customers.yaml", CUSTOMERS), ("alerts/a.yaml", ALERT)]);
    let rev = repo.commit_all("customers running");
    repo.write(
        "status/maps/customers.yaml",
        &status_file("customers", &rev, "Running"),
    );
    repo.write(
        "status/alerts/pause-on-app-errors.yaml",
        &format!("apiVersion: dualwrite/v1\nkind: AlertRuleStatus\nmetadata: {{ name: pause-on-app-errors }}\nstatus:\n  observedRevision: {rev}\n"),
    );
    repo.commit_all("status");
    // Nothing changed since: no changes, exit 0 even with --detailed-exitcode.
    let run = repo.run(&["reconcile", "--dry-run", "--detailed-exitcode"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(
        run.stdout,
        format!(
            "Actual state: committed status/ files and the config at revision {rev}\n\nNo changes. The actual state matches the config.\n"
        )
    );

    // The PR pauses the map and raises the alert threshold.
    repo.write(
        "maps/customers.yaml",
        &CUSTOMERS.replace("state: Running", "state: Paused"),
    );
    repo.write(
        "alerts/a.yaml",
        &ALERT.replace("threshold: 10", "threshold: 25"),
    );
    let run = repo.run(&["reconcile", "--dry-run", "--detailed-exitcode"]);
    assert_eq!(run.code, 2);
    let out = &run.stdout;
    assert!(
        out.contains(
            "  map customers (Running -> Paused)\n    * pause: capture goes on, changes queue up\n"
        ),
        "{out}"
    );
    assert!(out.contains("  ~ alert pause-on-app-errors: Changed\n      maps: customers\n      errorType: ApplicationError\n      threshold: 10 -> 25\n"), "{out}");
    assert!(
        out.contains("--- actual/maps/customers.yaml\n+++ desired/maps/customers.yaml\n@@ -5,7 +5,7 @@\n   labels:\n     team: finance\n spec:\n-  state: Running\n+  state: Paused\n"),
        "{out}"
    );
    assert!(
        out.contains("-  threshold: 10\n+  threshold: 25\n"),
        "{out}"
    );
}

#[test]
fn mapping_change_rerun_and_removed_map() {
    let repo = Repo::new(&[
        ("maps/customers.yaml", CUSTOMERS),
        (
            "maps/orders.yaml",
            &CUSTOMERS
                .replace("name: customers", "name: orders")
                .replace("table: customers", "table: orders")
                .replace("table: account", "table: sales_order"),
        ),
    ]);
    let rev = repo.commit_all("two maps");
    repo.write(
        "status/maps/customers.yaml",
        &status_file("customers", &rev, "Running"),
    );
    repo.write(
        "status/maps/orders.yaml",
        &status_file("orders", &rev, "Running"),
    );
    repo.remove("maps/orders.yaml");
    repo.write(
        "maps/customers.yaml",
        &format!("{CUSTOMERS}    - {{ source: email, destination: emailaddress }}\n  initialSync: {{ run: 2, retryErrors: false }}\n"),
    );
    let out = repo.run(&["reconcile", "--dry-run"]).stdout;
    assert!(
        out.contains("  map customers (Running -> Running)\n    * mapping changed\n    * re-run initial sync (run 2) without errors: only new data, errored records left as they are\n"),
        "{out}"
    );
    assert!(
        out.contains(
            "  map orders (Running -> removed)\n    * removed from the config: stop and forget\n"
        ),
        "{out}"
    );
    assert!(
        out.contains("+  - source: email\n+    destination: emailaddress\n"),
        "{out}"
    );
    assert!(
        out.contains("--- actual/maps/orders.yaml\n+++ /dev/null\n"),
        "{out}"
    );
}

#[test]
fn actual_state_from_the_state_store_when_it_exists() {
    let repo = Repo::new(&[("maps/customers.yaml", CUSTOMERS)]);
    let store_path = repo.path().join(".dualwrite/state.db");
    let store =
        dualwrite::state::sqlite::SqliteStore::open(&store_path, ".dualwrite/state.db").unwrap();
    let applied: serde_json::Value = {
        let cfg = dualwrite::config::load(&dualwrite::config::WorkTree {
            dir: repo.path().to_path_buf(),
        })
        .unwrap();
        serde_json::to_value(&cfg.maps[0].resource).unwrap()
    };
    store
        .put_map(&dualwrite::state::MapRecord {
            name: "customers".into(),
            phase: dualwrite::state::Phase::Paused,
            applied: Some(applied),
            applied_revision: None,
            held_by: Some("pause-on-app-errors".into()),
        })
        .unwrap();
    drop(store);
    let before = repo.snapshot();
    let out = repo.run(&["reconcile", "--dry-run"]).stdout;
    assert!(
        out.starts_with("Actual state: state store .dualwrite/state.db\n"),
        "{out}"
    );
    // Held by an alert, spec unchanged: the hold stays, nothing to do for the map.
    assert!(out.contains("No changes."), "{out}");
    assert_eq!(
        repo.snapshot(),
        before,
        "reading the state store changed it"
    );

    // A commit that changes spec.state ends the hold.
    repo.write(
        "maps/customers.yaml",
        &CUSTOMERS.replace("state: Running", "state: Stopped"),
    );
    let out = repo.run(&["reconcile", "--dry-run"]).stdout;
    assert!(
        out.contains(
            "  map customers (Paused -> Stopped)\n      held by alert pause-on-app-errors"
        ),
        "{out}"
    );
    assert!(
        out.contains("    * stop: remove capture and drop the queue\n"),
        "{out}"
    );
}

#[test]
fn revision_reads_the_config_from_git_without_touching_the_work_tree() {
    let repo = Repo::new(&[("maps/customers.yaml", CUSTOMERS)]);
    let first = repo.commit_all("first");
    // The work tree now has an invalid map, and a second commit pauses it.
    repo.write(
        "maps/customers.yaml",
        &CUSTOMERS.replace("state: Running", "state: Paused"),
    );
    repo.commit_all("pause");
    repo.write(
        "maps/customers.yaml",
        &CUSTOMERS.replace("state: Running", "state: Runing"),
    );
    let before = repo.snapshot();

    assert_eq!(repo.run(&["validate"]).code, 1);
    let at_head = repo.run(&["reconcile", "--dry-run", "--revision", "HEAD"]);
    assert_eq!(at_head.code, 0, "{}{}", at_head.stdout, at_head.stderr);
    assert!(
        at_head.stdout.contains("(NotRunning -> Paused)"),
        "{}",
        at_head.stdout
    );
    let at_first = repo.run(&["validate", "--revision", &first]);
    assert_eq!(at_first.code, 0, "{}", at_first.stdout);
    let at_first = repo.run(&["reconcile", "--dry-run", "--revision", &first[..7]]);
    assert!(
        at_first.stdout.contains("(NotRunning -> Running)"),
        "{}",
        at_first.stdout
    );
    assert_eq!(repo.snapshot(), before);

    let missing = repo.run(&["validate", "--revision", "no-such-rev"]);
    assert_eq!(missing.code, 1);
    assert!(
        missing
            .stdout
            .starts_with("dualwrite.yaml:1:1: cannot read revision \"no-such-rev\""),
        "{}",
        missing.stdout
    );
}

#[test]
fn json_plan_has_a_format_version() {
    let repo = Repo::new(&[("maps/customers.yaml", CUSTOMERS)]);
    let run = repo.run(&["reconcile", "--dry-run", "--output", "json"]);
    assert_eq!(run.code, 0);
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(doc["formatVersion"], 1);
    assert_eq!(doc["hasChanges"], true);
    assert_eq!(doc["actualState"]["source"]["kind"], "none");
    assert_eq!(doc["plan"]["maps"][0]["name"], "customers");
    assert_eq!(
        doc["plan"]["maps"][0]["actions"][0],
        serde_json::json!({ "action": "startWithInitialSync", "run": 1 })
    );
}

#[test]
fn github_output_prints_the_plan_and_a_notice() {
    let repo = Repo::new(&[("maps/customers.yaml", CUSTOMERS)]);
    let run = repo.run(&["reconcile", "--dry-run", "--output", "github"]);
    assert_eq!(run.code, 0);
    assert!(
        run.stdout
            .contains("    * start with initial sync (run 1)\n")
    );
    assert!(
        run.stdout.ends_with(
            "::notice title=dualwrite plan::1 map(s), 0 alert rule(s) and 0 request(s) to change\n"
        ),
        "{}",
        run.stdout
    );
}

#[test]
fn secrets_are_referenced_by_env_name_and_never_printed() {
    let repo = Repo::new(&[("maps/customers.yaml", CUSTOMERS)]);
    repo.write(
        "dualwrite.yaml",
        &support::PROJECT.replace(
            "crm: { sqlite: { path: .dualwrite/crm.db } }",
            "crm: { postgres: { urlFromEnv: CRM_DATABASE_URL } }",
        ),
    );
    let secret = "postgres://admin:hunter2-secret@db.example.com/crm";
    for args in [
        &["validate"][..],
        &["reconcile", "--dry-run"],
        &["reconcile", "--dry-run", "--output", "json"],
    ] {
        let run = support::run_in(repo.path(), args, &[("CRM_DATABASE_URL", secret)]);
        assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
        assert!(
            !run.stdout.contains("hunter2") && !run.stderr.contains("hunter2"),
            "secret leaked: {}{}",
            run.stdout,
            run.stderr
        );
    }
}

#[test]
fn restarting_a_bidirectional_map_after_stopped_warns_what_the_initial_sync_will_overwrite() {
    let bidirectional = CUSTOMERS.replace(
        "  destination: { endpoint: crm, table: account }\n",
        "  destination: { endpoint: crm, table: account }\n  direction: Bidirectional\n",
    );
    let stopped = bidirectional.replace("state: Running", "state: Stopped");
    let repo = Repo::new(&[("maps/customers.yaml", &stopped)]);
    let rev = repo.commit_all("stopped");
    let short = &rev[..7];
    repo.write(
        "status/maps/customers.yaml",
        &status_file("customers", short, "Stopped")
            .replace("desiredState: Running", "desiredState: Stopped"),
    );
    repo.write("maps/customers.yaml", &bidirectional);
    let run = repo.run(&["reconcile", "--dry-run"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains(
            "  map customers (Stopped -> Running)\n    * start with initial sync (run 1)\n"
        ),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("warning: map customers: restarting a Bidirectional map after Stopped: its changes were not captured while it was stopped, so the initial sync settles every key from the source (initialSync.primary): rows deleted on either side come back from the other, and rows changed on the destination are overwritten with the source's values."),
        "{}",
        run.stdout
    );
    let github = repo.run(&["reconcile", "--dry-run", "--output", "github"]);
    assert!(
        github.stdout.contains(
            "::warning title=dualwrite::map customers: restarting a Bidirectional map after Stopped"
        ),
        "{}",
        github.stdout
    );
    // A one-way map, or a Paused one resuming, has nothing to warn about.
    repo.write("maps/customers.yaml", CUSTOMERS);
    let run = repo.run(&["reconcile", "--dry-run"]);
    assert!(
        !run.stdout.contains("restarting a Bidirectional"),
        "{}",
        run.stdout
    );
}
