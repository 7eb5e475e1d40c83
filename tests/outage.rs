//! The case the field is built around, end to end against real servers: an app goes down
//! (a TCP forwarder in front of a real PostgreSQL or MariaDB is killed), each failed attempt
//! is a NetworkError of scope Map that alert rules count, the rule pauses the map, changes
//! keep being captured and the queue shows them, the app comes back, `dualwrite resume`
//! drains the queue in order and both sides are equal. Also: a dropped destination column
//! or table is a SchemaError that stalls the map until it is back, and a desired-state
//! change takes effect while an endpoint is down.

mod common;
mod support;

use std::time::{Duration, Instant};

use common::{TestDb, unique_table};
use dualwrite::endpoint::EndpointSpec;
use support::forward::Forwarder;
use support::{Repo, run_in};

const PAUSE_RULE: &str = "\
apiVersion: dualwrite/v1
kind: AlertRule
metadata: { name: pause-on-network-errors }
spec:
  maps: [customers]
  errorType: NetworkError
  threshold: 2
  window: 15m
  action: Pause
";

/// A repository syncing `erp.db` table `customers` to `table` on the server behind
/// `url_env`, with `rule` (if any).
fn repo_for(engine: &str, url_env: &str, table: &str, state: &str, rule: Option<&str>) -> Repo {
    let repo = Repo::new(&[]);
    repo.write(
        "dualwrite.yaml",
        &format!(
            "apiVersion: dualwrite/v1\nkind: Project\nmetadata: {{ name: o }}\nspec:\n  endpoints:\n    erp: {{ sqlite: {{ path: erp.db }} }}\n    crm: {{ {engine}: {{ urlFromEnv: {url_env} }} }}\n"
        ),
    );
    repo.write("maps/customers.yaml", &map_yaml(table, state));
    if let Some(rule) = rule {
        repo.write("alerts/rule.yaml", rule);
    }
    let erp = rusqlite::Connection::open(repo.path().join("erp.db")).unwrap();
    erp.execute_batch("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL);")
        .unwrap();
    repo
}

fn map_yaml(table: &str, state: &str) -> String {
    format!(
        "apiVersion: dualwrite/v1\nkind: TableMap\nmetadata: {{ name: customers }}\nspec:\n  state: {state}\n  source: {{ endpoint: erp, table: customers }}\n  destination: {{ endpoint: crm, table: {table} }}\n  columns:\n    - {{ source: id, destination: id, key: true }}\n    - {{ source: name, destination: name }}\n"
    )
}

fn erp(repo: &Repo) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(repo.path().join("erp.db")).unwrap();
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    c
}

/// Inserts customers `from..=to` into the ERP, as an application would.
fn add(repo: &Repo, from: i64, to: i64) {
    erp(repo)
        .execute_batch(&format!(
            "WITH RECURSIVE n(i) AS (SELECT {from} UNION ALL SELECT i + 1 FROM n WHERE i < {to}) \
             INSERT INTO customers SELECT i, 'c' || i FROM n;"
        ))
        .unwrap();
}

/// `status/maps/customers.yaml` as JSON.
fn map_status(repo: &Repo) -> serde_json::Value {
    let text = std::fs::read_to_string(repo.path().join("status/maps/customers.yaml")).unwrap();
    let file: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    file["status"].clone()
}

fn condition<'a>(st: &'a serde_json::Value, kind: &str) -> Option<&'a serde_json::Value> {
    st["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == kind)
}

fn assert_unreachable(st: &serde_json::Value, network_errors: u64) {
    assert_eq!(
        st["errors"]["byType"]["NetworkError"], network_errors,
        "{st:#}"
    );
    let ready = condition(st, "Ready").unwrap();
    assert_eq!(ready["status"], "False", "{st:#}");
    assert_eq!(ready["reason"], "EndpointUnreachable", "{st:#}");
    let message = ready["message"].as_str().unwrap();
    assert!(
        message.contains("endpoint crm (destination side)"),
        "{message}"
    );
    let reconciling = condition(st, "Reconciling").expect("Reconciling while unreachable");
    assert_eq!(reconciling["status"], "True");
    assert!(st["nextAttemptAt"].is_string(), "{st:#}");
    let recent = &st["errors"]["recent"][0];
    assert_eq!(recent["type"], "NetworkError");
    assert!(
        recent["key"].is_null(),
        "a map-level event has no key: {recent}"
    );
}

fn no_leak(run: &support::Run, url: &str) {
    assert!(
        !run.stdout.contains(url) && !run.stderr.contains(url),
        "the URL leaked: {}{}",
        run.stdout,
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_pauses_the_map_by_rule_queues_changes_and_resume_drains_them() {
    common::with_timeout(async {
        let Some(Behind {
            db: _db,
            table,
            mut fwd,
            url,
        }) = postgres_behind_forwarder().await
        else {
            return;
        };
        let repo = repo_for("postgres", "DW_OUT_PG", &table, "Running", Some(PAUSE_RULE));
        let env = [("DW_OUT_PG", url.as_str())];
        let reconcile = || {
            let run = run_in(repo.path(), &["reconcile"], &env);
            no_leak(&run, &url);
            run
        };
        add(&repo, 1, 100);
        let run = reconcile();
        assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);

        // The app goes down: connect is refused. One NetworkError event per failed pass.
        fwd.cut();
        add(&repo, 101, 150);
        let run = reconcile();
        assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
        assert!(
            run.stdout.contains("endpoint crm (destination side)"),
            "{}",
            run.stdout
        );
        let st = map_status(&repo);
        assert_unreachable(&st, 1);
        assert_eq!(st["phase"], "Running");
        assert_eq!(st["queue"]["pending"], 50, "{st:#}");
        assert!(st["queue"]["oldestAt"].is_string(), "{st:#}");

        // The second failed attempt reaches the rule's threshold: held Paused in that pass.
        let run = reconcile();
        assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
        let st = map_status(&repo);
        assert_eq!(st["phase"], "Paused", "{st:#}");
        assert_eq!(st["heldBy"]["alert"], "pause-on-network-errors", "{st:#}");
        assert_eq!(st["errors"]["byType"]["NetworkError"], 2, "{st:#}");
        let alert = std::fs::read_to_string(
            repo.path()
                .join("status/alerts/pause-on-network-errors.yaml"),
        )
        .unwrap();
        assert!(alert.contains("state: Firing"), "{alert}");

        // Held Paused, the destination is not needed: capture goes on and the queue grows.
        add(&repo, 151, 175);
        let run = reconcile();
        assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
        let st = map_status(&repo);
        assert_eq!(st["phase"], "Paused");
        assert_eq!(st["queue"]["pending"], 75, "{st:#}");
        let listed = run_in(
            repo.path(),
            &["errors", "list", "--scope", "map", "--output", "json"],
            &env,
        );
        assert_eq!(listed.code, 0, "{}", listed.stderr);
        assert_eq!(
            listed.stdout.matches("\"NetworkError\"").count(),
            2,
            "{}",
            listed.stdout
        );

        // The app comes back; resume drains the queue.
        fwd.restore();
        let run = run_in(repo.path(), &["resume", "customers"], &env);
        assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
        let run = reconcile();
        assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
        let st = map_status(&repo);
        assert_eq!(st["phase"], "Running", "{st:#}");
        assert_eq!(st["queue"]["pending"], 0, "{st:#}");
        assert_eq!(
            st["errors"]["open"], 0,
            "map-level events are superseded: {st:#}"
        );
        assert_eq!(condition(&st, "Ready").unwrap()["status"], "True", "{st:#}");
        assert!(st.get("nextAttemptAt").is_none(), "{st:#}");
        let count = pg_count(&url, &table).await;
        assert_eq!(count, (175, 175 * 176 / 2));
    })
    .await;
}

/// A table `(id, name)` on a real server reached through a forwarder: `url` goes through it.
struct Behind {
    /// The server's plain connection; dropping it drops the table.
    db: TestDb,
    table: String,
    fwd: Forwarder,
    url: String,
}

async fn postgres_behind_forwarder() -> Option<Behind> {
    let mut pg = TestDb::postgres().await?;
    let table = unique_table("outage");
    pg.plain
        .exec(&format!(
            "CREATE TABLE {table} (id bigint PRIMARY KEY, name text NOT NULL)"
        ))
        .await;
    pg.on_drop(format!("DROP TABLE IF EXISTS {table}"));
    let fwd = Forwarder::start("127.0.0.1:5432");
    let EndpointSpec::Postgres { url } = &pg.spec else {
        unreachable!()
    };
    let url = url.replace("127.0.0.1:5432", &format!("127.0.0.1:{}", fwd.port()));
    Some(Behind {
        db: pg,
        table,
        fwd,
        url,
    })
}

/// The same on MariaDB (`prefer_socket=false`, or the driver moves to the unix socket).
async fn mariadb_behind_forwarder() -> Option<Behind> {
    let mut my = TestDb::mysql().await?;
    let table = unique_table("outage");
    my.plain
        .exec(&format!(
            "CREATE TABLE {table} (id bigint PRIMARY KEY, name varchar(64) NOT NULL)"
        ))
        .await;
    my.on_drop(format!("DROP TABLE IF EXISTS {table}"));
    let fwd = Forwarder::start("127.0.0.1:3306");
    let url = format!(
        "mysql://root@127.0.0.1:{}/test?prefer_socket=false",
        fwd.port()
    );
    Some(Behind {
        db: my,
        table,
        fwd,
        url,
    })
}

/// Rows and the sum of ids in `table`, read through `url`.
async fn pg_count(url: &str, table: &str) -> (i64, i64) {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let row = client
        .query_one(
            &format!("SELECT COUNT(*), COALESCE(SUM(id), 0)::bigint FROM {table}"),
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_cut_mid_catch_up_of_100000_changes_loses_nothing() {
    common::with_timeout(async {
        let Some(Behind {
            db: mut my,
            table,
            mut fwd,
            url,
        }) = mariadb_behind_forwarder().await
        else {
            return;
        };
        let repo = repo_for("mysql", "DW_OUT_MY", &table, "Running", None);
        let env = [("DW_OUT_MY", url.as_str())];
        let run = run_in(repo.path(), &["reconcile"], &env);
        assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
        // Paused by commit: capture goes on, the 100,000 inserts queue up.
        repo.write("maps/customers.yaml", &map_yaml(&table, "Paused"));
        let run = run_in(repo.path(), &["reconcile"], &env);
        assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
        add(&repo, 1, 100_000);
        let run = run_in(repo.path(), &["reconcile"], &env);
        assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
        assert_eq!(map_status(&repo)["queue"]["pending"], 100_000);

        // Resume by commit; cut the server while the catch-up writes.
        repo.write("maps/customers.yaml", &map_yaml(&table, "Running"));
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_dualwrite"))
            .arg("-C")
            .arg(repo.path())
            .arg("reconcile")
            .env("DW_OUT_MY", &url)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        first_writes_arrived(&mut my, &table).await;
        fwd.cut();
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{stdout}");
        let st = map_status(&repo);
        assert_unreachable(&st, 1);
        assert_eq!(st["errors"]["recent"][0]["phase"], "CatchUp", "{st:#}");
        let pending = st["queue"]["pending"].as_u64().unwrap();
        assert!(pending > 0 && pending <= 100_000, "{st:#}");

        fwd.restore();
        let run = run_in(repo.path(), &["reconcile"], &env);
        assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
        let st = map_status(&repo);
        assert_eq!(st["phase"], "Running", "{st:#}");
        assert_eq!(st["errors"]["open"], 0, "{st:#}");
        assert_eq!(
            my_count(&mut my, &table).await,
            (100_000, 100_000 * 100_001 / 2)
        );
    })
    .await;
}

/// Waits until the catch-up has written some rows of `table`, not all 100,000: the moment
/// to cut the server.
async fn first_writes_arrived(db: &mut TestDb, table: &str) {
    let started = Instant::now();
    loop {
        let n = my_count(db, table).await.0;
        if n > 0 {
            assert!(n < 100_000, "the catch-up finished before the cut");
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no write arrived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn my_count(db: &mut TestDb, table: &str) -> (i64, i64) {
    use mysql_async::prelude::Queryable;
    let common::Plain::Mysql(conn) = &mut db.plain else {
        unreachable!()
    };
    let row: (i64, i64) = conn
        .query_first(format!(
            "SELECT COUNT(*), CAST(COALESCE(SUM(id), 0) AS SIGNED) FROM {table}"
        ))
        .await
        .unwrap()
        .unwrap();
    row
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_column_or_table_is_a_schema_error_that_stalls_until_it_is_back() {
    common::with_timeout(async {
        let Some(mut pg) = TestDb::postgres().await else {
            return;
        };
        let table = unique_table("schema");
        pg.plain
            .exec(&format!(
                "CREATE TABLE {table} (id bigint PRIMARY KEY, name text NOT NULL)"
            ))
            .await;
        pg.on_drop(format!("DROP TABLE IF EXISTS {table}"));
        let EndpointSpec::Postgres { url } = pg.spec.clone() else {
            unreachable!()
        };
        let repo = repo_for("postgres", "DW_OUT_PG", &table, "Running", None);
        let env = [("DW_OUT_PG", url.as_str())];
        add(&repo, 1, 10);
        assert_eq!(run_in(repo.path(), &["reconcile"], &env).code, 0);

        for (drop, restore) in [
            (
                format!("ALTER TABLE {table} DROP COLUMN name"),
                format!("ALTER TABLE {table} ADD COLUMN name text"),
            ),
            (
                format!("DROP TABLE {table}"),
                format!("CREATE TABLE {table} (id bigint PRIMARY KEY, name text)"),
            ),
        ] {
            pg.plain.exec(&drop).await;
            add(&repo, 11, 12);
            let run = run_in(repo.path(), &["reconcile"], &env);
            assert_eq!(run.code, 1, "{drop}: {}{}", run.stdout, run.stderr);
            let st = map_status(&repo);
            assert_eq!(st["errors"]["byType"]["SchemaError"], 1, "{drop}: {st:#}");
            let ready = condition(&st, "Ready").unwrap();
            assert_eq!(ready["reason"], "SchemaMismatch", "{drop}: {st:#}");
            assert!(
                ready["message"].as_str().unwrap().contains("endpoint crm"),
                "{st:#}"
            );
            assert_eq!(
                condition(&st, "Stalled").unwrap()["status"],
                "True",
                "{st:#}"
            );
            assert_eq!(st["queue"]["pending"], 2, "{drop}: {st:#}");

            pg.plain.exec(&restore).await;
            let run = run_in(repo.path(), &["reconcile"], &env);
            assert_eq!(run.code, 0, "{restore}: {}{}", run.stdout, run.stderr);
            let st = map_status(&repo);
            assert_eq!(st["errors"]["open"], 0, "{restore}: {st:#}");
            assert!(condition(&st, "Stalled").is_none(), "{st:#}");
            erp(&repo)
                .execute_batch("DELETE FROM customers WHERE id > 10")
                .unwrap();
            assert_eq!(run_in(repo.path(), &["reconcile"], &env).code, 0);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pausing_by_commit_takes_effect_while_the_destination_is_down() {
    common::with_timeout(async {
        let Some(Behind {
            db: _db,
            table,
            mut fwd,
            url,
        }) = postgres_behind_forwarder().await
        else {
            return;
        };
        let repo = repo_for("postgres", "DW_OUT_PG", &table, "Running", None);
        let env = [("DW_OUT_PG", url.as_str())];
        assert_eq!(run_in(repo.path(), &["reconcile"], &env).code, 0);
        fwd.cut();
        add(&repo, 1, 5);
        assert_eq!(run_in(repo.path(), &["reconcile"], &env).code, 1);
        repo.write("maps/customers.yaml", &map_yaml(&table, "Paused"));
        let run = run_in(repo.path(), &["reconcile"], &env);
        assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
        let st = map_status(&repo);
        assert_eq!(st["phase"], "Paused", "{st:#}");
        assert_eq!(st["queue"]["pending"], 5, "{st:#}");
        assert_eq!(condition(&st, "Ready").unwrap()["status"], "True", "{st:#}");
        fwd.restore();
        repo.write("maps/customers.yaml", &map_yaml(&table, "Running"));
        assert_eq!(run_in(repo.path(), &["reconcile"], &env).code, 0);
        assert_eq!(pg_count(&url, &table).await, (5, 15));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_run_the_rule_pauses_the_map_on_the_backoff_schedule() {
    common::with_timeout(async {
        let Some(Behind {
            db: _db,
            table,
            mut fwd,
            url,
        }) = postgres_behind_forwarder().await
        else {
            return;
        };
        let rule = PAUSE_RULE.replace("threshold: 2", "threshold: 3");
        let repo = repo_for("postgres", "DW_OUT_PG", &table, "Running", Some(&rule));
        add(&repo, 1, 10);
        let port = support::free_port();
        let listen = format!("127.0.0.1:{port}");
        let _service = run_service(&repo, &listen, ("DW_OUT_PG", &url));
        let wait_for = |what: &str, check: &dyn Fn(&serde_json::Value) -> bool| {
            wait_for_status(&repo, what, check)
        };
        wait_for("Running", &|st| st["phase"] == "Running");
        fwd.cut();
        add(&repo, 11, 20);
        // Attempts at 0 s, 1 s, 3 s: the third NetworkError fires the rule (no 1 h timer).
        let took = wait_for("Paused by the rule", &|st| st["phase"] == "Paused");
        assert!(took < Duration::from_secs(20), "{took:?}");
        let st = map_status(&repo);
        assert_eq!(st["heldBy"]["alert"], "pause-on-network-errors", "{st:#}");
        let metrics = http_get(port, "/metrics");
        assert!(
            metrics.contains("dualwrite_queue_pending{map=\"customers\"} 10"),
            "{metrics}"
        );
        fwd.restore();
        let run = run_in(
            repo.path(),
            &["resume", "customers"],
            &[("DW_OUT_PG", url.as_str())],
        );
        assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
        // resume wrote the store; the service sees the hold end (no 1 h timer) and drains.
        wait_for("drained", &|st| {
            st["phase"] == "Running" && st["queue"]["pending"] == 0
        });
        assert_eq!(pg_count(&url, &table).await, (20, 210));
    })
    .await;
}

/// `dualwrite run` on `repo` with a 1 h timer (so only its own schedule wakes it), killed
/// however the test ends.
fn run_service(repo: &Repo, listen: &str, env: (&str, &str)) -> KillOnDrop {
    KillOnDrop(
        std::process::Command::new(env!("CARGO_BIN_EXE_dualwrite"))
            .arg("-C")
            .arg(repo.path())
            .args(["run", "--listen", listen, "--interval", "1h"])
            .env(env.0, env.1)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// Waits (at most 90 s) until the map's status file passes `check`; returns how long it took.
fn wait_for_status(
    repo: &Repo,
    what: &str,
    check: &dyn Fn(&serde_json::Value) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(repo.path().join("status/maps/customers.yaml"))
            && let Ok(file) = serde_saphyr::from_str::<serde_json::Value>(&text)
            && check(&file["status"])
        {
            return started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(90), "never {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The service under test, killed however the test ends (a failed assertion included).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_a_bidirectional_map_while_the_destination_is_down_finishes_when_it_is_back() {
    common::with_timeout(async {
        let Some(Behind { db: _db, table, mut fwd, url }) = postgres_behind_forwarder().await else {
            return;
        };
        let repo = repo_for("postgres", "DW_OUT_PG", &table, "Running", None);
        let both = |state: &str| {
            map_yaml(&table, state).replace(
                "  columns:",
                "  direction: Bidirectional\n  columns:",
            )
        };
        repo.write("maps/customers.yaml", &both("Running"));
        let env = [("DW_OUT_PG", url.as_str())];
        let run = run_in(repo.path(), &["reconcile"], &env);
        assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
        let pg_triggers = || async {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            let row = client
                .query_one(
                    &format!("SELECT COUNT(*) FROM pg_trigger WHERE tgrelid = '{table}'::regclass AND NOT tgisinternal"),
                    &[],
                )
                .await
                .unwrap();
            row.get::<_, i64>(0)
        };
        assert!(pg_triggers().await > 0, "capture on the destination");

        fwd.cut();
        repo.write("maps/customers.yaml", &both("Stopped"));
        let run = run_in(repo.path(), &["reconcile"], &env);
        assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
        let st = map_status(&repo);
        assert_eq!(st["phase"], "Stopped", "{st:#}");
        let ready = condition(&st, "Ready").unwrap();
        assert!(
            ready["message"].as_str().unwrap().contains("left to remove when that endpoint is reachable"),
            "{st:#}"
        );
        let sqlite_triggers: i64 = erp(&repo)
            .query_row("SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sqlite_triggers, 0, "capture removed on the side that is up");

        fwd.restore();
        let run = run_in(repo.path(), &["reconcile"], &env);
        assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
        assert_eq!(pg_triggers().await, 0, "capture removed once the destination is back");
        let st = map_status(&repo);
        assert_eq!(condition(&st, "Ready").unwrap()["status"], "True", "{st:#}");
        let log = run_in(repo.path(), &["logs", "customers"], &env).stdout;
        assert!(log.contains("CaptureRemoved"), "{log}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_run_mariadb_cut_mid_catch_up_recovers_on_the_backoff_schedule() {
    common::with_timeout(async {
        let Some(Behind {
            db: mut my,
            table,
            mut fwd,
            url,
        }) = mariadb_behind_forwarder().await
        else {
            return;
        };
        let repo = repo_for("mysql", "DW_OUT_MY", &table, "Running", None);
        let listen = format!("127.0.0.1:{}", support::free_port());
        let _service = run_service(&repo, &listen, ("DW_OUT_MY", &url));
        let wait_for = |what: &str, check: &dyn Fn(&serde_json::Value) -> bool| {
            wait_for_status(&repo, what, check)
        };
        wait_for("Running", &|st| st["phase"] == "Running");
        repo.write("maps/customers.yaml", &map_yaml(&table, "Paused"));
        wait_for("Paused", &|st| st["phase"] == "Paused");
        add(&repo, 1, 100_000);
        repo.write("maps/customers.yaml", &map_yaml(&table, "Running"));
        first_writes_arrived(&mut my, &table).await;
        fwd.cut();
        wait_for("unreachable", &|st| {
            st["errors"]["byType"]["NetworkError"].as_u64() >= Some(1)
                && st["nextAttemptAt"].is_string()
        });
        // Back: the service's next attempt (backoff, no 1 h timer) finishes the catch-up.
        fwd.restore();
        wait_for("drained", &|st| {
            st["phase"] == "Running" && st["errors"]["open"] == 0 && st["queue"]["pending"] == 0
        });
        assert_eq!(
            my_count(&mut my, &table).await,
            (100_000, 100_000 * 100_001 / 2)
        );
    })
    .await;
}
