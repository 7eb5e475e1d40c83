//! `dualwrite status` as an operator reads it: the queue comes from the capture tables now,
//! not from the last pass; when they cannot be asked it says "as of" when it was counted.

mod support;

use support::{CUSTOMERS, Repo};

fn sqlite(repo: &Repo, db: &str, sql: &str) {
    rusqlite::Connection::open(repo.path().join(".dualwrite").join(db))
        .unwrap()
        .execute_batch(sql)
        .unwrap();
}

fn queued(out: &str) -> String {
    let line = out
        .lines()
        .find(|l| l.starts_with("customers "))
        .unwrap_or_else(|| panic!("no customers line:\n{out}"));
    line.split_whitespace().nth(4).unwrap().to_string()
}

#[test]
fn status_shows_the_queue_of_a_paused_map_as_it_is_now() {
    let repo = Repo::new(&[(
        "maps/customers.yaml",
        &CUSTOMERS.replace("state: Running", "state: Paused"),
    )]);
    repo.sqlite_apps(&[]);
    // Running first (capture installed), then Paused: changes queue up.
    repo.write("maps/customers.yaml", CUSTOMERS);
    assert_eq!(repo.run(&["reconcile"]).code, 0);
    repo.write(
        "maps/customers.yaml",
        &CUSTOMERS.replace("state: Running", "state: Paused"),
    );
    let run = repo.run(&["reconcile"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let run = repo.run(&["status"]);
    assert_eq!(queued(&run.stdout), "0", "{}", run.stdout);

    sqlite(
        &repo,
        "erp.db",
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 35)
         INSERT INTO customers SELECT i, 'name ' || i FROM n;",
    );
    // No reconcile in between: status counts the capture table itself.
    let run = repo.run(&["status"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(queued(&run.stdout), "35", "{}", run.stdout);
    assert!(!run.stdout.contains(" as of "), "{}", run.stdout);
    let json = repo.run(&["status", "--output", "json"]);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["maps"]["customers"]["queue"]["pending"], 35, "{v}");
    assert!(
        v["maps"]["customers"]["queue"]["oldestAt"].is_string(),
        "{v}"
    );
    assert!(v["maps"]["customers"]["queue"].get("asOf").is_none(), "{v}");

    // The source's capture table cannot be read: the last pass's count, as of then.
    std::fs::rename(
        repo.path().join(".dualwrite/erp.db"),
        repo.path().join(".dualwrite/erp.db.away"),
    )
    .unwrap();
    std::fs::create_dir(repo.path().join(".dualwrite/erp.db")).unwrap();
    let run = repo.run(&["status"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(queued(&run.stdout), "0", "{}", run.stdout);
    assert!(
        run.stdout.contains("QUEUED 0 as of ")
            && run
                .stdout
                .contains("its capture tables cannot be asked now"),
        "{}",
        run.stdout
    );
    let json = repo.run(&["status", "--output", "json"]);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert!(v["maps"]["customers"]["queue"]["asOf"].is_string(), "{v}");
}
