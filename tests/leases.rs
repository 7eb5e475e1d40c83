//! One writer per map: real `dualwrite reconcile` processes started at the same moment on
//! one repository (SQLite source, PostgreSQL destination), with the SQLite state store (a
//! local lease) and with a PostgreSQL state store (a database of the test's own). Fencing of
//! a holder paused past its TTL is in tests/service.rs (two `run` processes, SIGSTOP) and
//! tests/endpoints.rs (every engine).

mod common;
mod support;

use std::process::{Command, Stdio};

use support::Repo;

const ROWS: i64 = 60_000;

fn postgres_url() -> Option<String> {
    let url = std::env::var("DUALWRITE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| common::POSTGRES_DEFAULT.into());
    match pg(&url, "SELECT 1") {
        Ok(()) => Some(url),
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("postgres test database unreachable under CI=true: {e}")
        }
        Err(e) => {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: postgres test database unreachable ({e}); set DUALWRITE_TEST_POSTGRES_URL"
            );
            None
        }
    }
}

fn pg(url: &str, sql: &str) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        client.batch_execute(sql).await.map_err(|e| e.to_string())
    })
}

/// A PostgreSQL database of the test's own, dropped at the end.
struct Database {
    admin: String,
    name: String,
}

impl Database {
    fn create(admin: &str) -> Database {
        let name = common::unique_table("lease");
        pg(admin, &format!("CREATE DATABASE {name}")).unwrap();
        Database {
            admin: admin.into(),
            name,
        }
    }

    fn url(&self) -> String {
        let (base, _) = self.admin.rsplit_once('/').unwrap();
        format!("{base}/{}", self.name)
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = pg(
            &self.admin,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// A repository syncing a SQLite table of ROWS rows into PostgreSQL, its state in `store`.
fn repo(db: &Database, store: &str) -> Repo {
    let project = format!(
        "apiVersion: dualwrite/v1
kind: Project
metadata: {{ name: leases }}
spec:
  endpoints:
    erp: {{ sqlite: {{ path: .dualwrite/erp.db }} }}
    crm: {{ postgres: {{ urlFromEnv: CRM_URL }} }}
  stateStore: {store}
"
    );
    let repo = Repo::new(&[(".gitignore", ".dualwrite/\nstatus/\n")]);
    repo.write("dualwrite.yaml", &project);
    repo.write(
        "maps/big.yaml",
        "apiVersion: dualwrite/v1
kind: TableMap
metadata: { name: big }
spec:
  source: { endpoint: erp, table: big }
  destination: { endpoint: crm, table: big }
  columns:
    - { source: id, destination: id, key: true }
    - { source: v, destination: v }
",
    );
    std::fs::create_dir_all(repo.path().join(".dualwrite")).unwrap();
    let conn = rusqlite::Connection::open(repo.path().join(".dualwrite/erp.db")).unwrap();
    conn.execute_batch(&format!(
        "CREATE TABLE big (id INTEGER PRIMARY KEY, v TEXT NOT NULL);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS})
         INSERT INTO big SELECT i, 'v' || i FROM n;"
    ))
    .unwrap();
    pg(
        &db.url(),
        "CREATE TABLE big (id bigint PRIMARY KEY, v text NOT NULL)",
    )
    .unwrap();
    repo.commit_all("big");
    repo
}

/// Starts `dualwrite reconcile` twice at the same moment; their (exit code, output) pairs.
fn two_at_once(repo: &Repo, env: &[(&str, String)], args: &[&str]) -> Vec<(i32, String)> {
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_dualwrite"))
            .arg("-C")
            .arg(repo.path())
            .arg("reconcile")
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    [a, b]
        .into_iter()
        .map(|child| {
            let out = child.wait_with_output().unwrap();
            (
                out.status.code().unwrap_or(-1),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            )
        })
        .collect()
}

/// How many times `event` is in the map's activity log.
fn logged(repo: &Repo, env: &[(&str, String)], event: &str) -> usize {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let run = support::run_in(repo.path(), &["logs", "big"], &env);
    assert_eq!(run.code, 0, "{}", run.stderr);
    run.stdout
        .lines()
        .filter(|l| l.contains(&format!("\"event\":\"{event}\"")))
        .count()
}

fn rows(db: &Database) -> i64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(&db.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
            .query_one("SELECT count(*) FROM big", &[])
            .await
            .unwrap()
            .get(0)
    })
}

/// Two reconciles at once: one drives the map (one initial sync in the log), the other skips
/// it naming the holder (`host:pid since …`) and exits 1; with `--wait` the second waits,
/// says for whom, and then finds nothing left to do.
fn one_writer_per_map(store: &str, db: &Database, env: &[(&str, String)]) {
    let repo = repo(db, store);
    let runs = two_at_once(&repo, env, &[]);
    let codes: Vec<i32> = runs.iter().map(|(c, _)| *c).collect();
    assert!(
        codes.contains(&0) && codes.contains(&1),
        "{store}: one drives, one is refused: {runs:#?}"
    );
    let (_, refused) = runs.iter().find(|(c, _)| *c == 1).unwrap();
    assert!(
        refused.contains("map big is driven by ") && refused.contains(" since "),
        "{store}: {refused}"
    );
    let named = refused
        .split("map big is driven by ")
        .nth(1)
        .and_then(|rest| rest.split(" since ").next())
        .unwrap();
    let (host, pid) = named.rsplit_once(':').expect("host:pid");
    assert!(!host.is_empty() && pid.parse::<u32>().is_ok(), "{named}");
    assert_eq!(logged(&repo, env, "Created"), 1, "{store}");
    assert_eq!(logged(&repo, env, "InitialSyncStarted"), 1, "{store}");
    assert_eq!(logged(&repo, env, "InitialSyncFinished"), 1, "{store}");
    assert_eq!(rows(db), ROWS);

    // Re-run the initial sync with two waiting reconciles: it runs once, the other waits.
    let map = std::fs::read_to_string(repo.path().join("maps/big.yaml")).unwrap();
    repo.write(
        "maps/big.yaml",
        &map.replace("  columns:", "  initialSync: { run: 2 }\n  columns:"),
    );
    repo.commit_all("re-run");
    let runs = two_at_once(&repo, env, &["--wait"]);
    assert!(runs.iter().all(|(c, _)| *c == 0), "{store}: {runs:#?}");
    assert!(
        runs.iter()
            .any(|(_, out)| out.contains("waiting: map big is driven by ")),
        "{store}: {runs:#?}"
    );
    assert_eq!(logged(&repo, env, "InitialSyncStarted"), 2, "{store}");
    assert_eq!(rows(db), ROWS);
}

#[test]
fn two_reconciles_at_once_with_the_sqlite_state_store_drive_each_map_once() {
    let Some(admin) = postgres_url() else { return };
    let db = Database::create(&admin);
    let env = vec![("CRM_URL", db.url())];
    one_writer_per_map("{ sqlite: { path: .dualwrite/state.db } }", &db, &env);
}

#[test]
fn two_reconciles_at_once_with_a_postgres_state_store_drive_each_map_once() {
    let Some(admin) = postgres_url() else { return };
    let db = Database::create(&admin);
    let env = vec![("CRM_URL", db.url()), ("STATE_URL", db.url())];
    one_writer_per_map("{ postgres: { urlFromEnv: STATE_URL } }", &db, &env);
}
