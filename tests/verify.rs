//! `dualwrite verify` end to end through the real binary against real SQLite, PostgreSQL
//! and MariaDB: equal tables, missing/extra/different rows (through a valueMap), repair,
//! changes in flight while the map runs, bad input, and the JSON shape.

mod common;
mod support;

use std::time::Duration;

use common::{TestDb, unique_table, with_timeout};
use dualwrite::endpoint::{EndpointSpec, ValueKind};
use support::service::{Service, wait_for};
use support::{Repo, Run, run_in};

/// The project's YAML for one endpoint, and the environment variable its URL is read from.
fn endpoint_yaml(db: &TestDb, name: &str) -> (String, Option<(String, String)>) {
    match &db.spec {
        EndpointSpec::Sqlite { path } => (
            format!("{{ sqlite: {{ path: {} }} }}", path.display()),
            None,
        ),
        EndpointSpec::Postgres { url } => {
            let var = format!("VERIFY_{}_URL", name.to_uppercase());
            (
                format!("{{ postgres: {{ urlFromEnv: {var} }} }}"),
                Some((var, url.clone())),
            )
        }
        EndpointSpec::Mysql { url } => {
            let var = format!("VERIFY_{}_URL", name.to_uppercase());
            (
                format!("{{ mysql: {{ urlFromEnv: {var} }} }}"),
                Some((var, url.clone())),
            )
        }
    }
}

/// Creates `table` (dropped first, and again when `db` goes) with an `id` key and
/// `columns`, where `{int}` and `{text}` stand for the engine's type names.
async fn create(db: &mut TestDb, table: &str, columns: &str) {
    let columns = columns
        .replace("{int}", db.type_name(ValueKind::Int))
        .replace("{text}", db.type_name(ValueKind::Text));
    let int = db.type_name(ValueKind::Int);
    db.drop_table(table).await;
    db.plain
        .exec(&format!(
            "CREATE TABLE {table} (id {int} PRIMARY KEY, {columns})"
        ))
        .await;
    db.on_drop(format!("DROP TABLE IF EXISTS {table}"));
}

/// A repository whose map `people` copies `src.people_table` to `dst.account_table`: the name
/// renamed, the status through a valueMap.
struct Setup {
    repo: Repo,
    env: Vec<(String, String)>,
    src: TestDb,
    dst: TestDb,
    source: String,
    destination: String,
}

impl Setup {
    async fn new(src: TestDb, dst: TestDb) -> Setup {
        Setup::with_spec(src, dst, "").await
    }

    /// [`Setup::new`] with `spec` (indented YAML lines) added to the map's spec.
    async fn with_spec(mut src: TestDb, mut dst: TestDb, spec: &str) -> Setup {
        let source = unique_table("vsrc");
        let destination = unique_table("vdst");
        create(&mut src, &source, "name {text}, status {text}").await;
        create(&mut dst, &destination, "full_name {text}, state {int}").await;
        let (src_yaml, src_env) = endpoint_yaml(&src, "app");
        let (dst_yaml, dst_env) = endpoint_yaml(&dst, "crm");
        let project = format!(
            "apiVersion: dualwrite/v1\nkind: Project\nmetadata: {{ name: v }}\nspec:\n  endpoints:\n    app: {src_yaml}\n    crm: {dst_yaml}\n"
        );
        let map = format!(
            "apiVersion: dualwrite/v1
kind: TableMap
metadata: {{ name: people }}
spec:
  state: Running
  source: {{ endpoint: app, table: {source} }}
  destination: {{ endpoint: crm, table: {destination} }}
{spec}  columns:
    - {{ source: id, destination: id, key: true }}
    - {{ source: name, destination: full_name }}
    - {{ source: status, destination: state, valueMap: {{ open: 1, closed: 2 }} }}
"
        );
        let repo = Repo::new(&[("maps/people.yaml", &map)]);
        repo.write("dualwrite.yaml", &project);
        Setup {
            repo,
            env: src_env.into_iter().chain(dst_env).collect(),
            src,
            dst,
            source,
            destination,
        }
    }

    fn verify(&self, args: &[&str]) -> Run {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut all = vec!["verify"];
        all.extend_from_slice(args);
        run_in(self.repo.path(), &all, &env)
    }

    fn verify_json(&self, args: &[&str]) -> (i32, serde_json::Value) {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        let run = self.verify(&all);
        let json = serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}\n{}", run.stdout, run.stderr));
        (run.code, json)
    }

    /// Ten equal rows on both sides.
    async fn equal_rows(&mut self) {
        let (source, destination) = (&self.source, &self.destination);
        for id in 1..=10 {
            let (status, state) = if id % 2 == 0 {
                ("closed", 2)
            } else {
                ("open", 1)
            };
            self.src
                .plain
                .exec(&format!(
                    "INSERT INTO {source} (id, name, status) VALUES ({id}, 'name {id}', '{status}')"
                ))
                .await;
            self.dst
                .plain
                .exec(&format!(
                    "INSERT INTO {destination} (id, full_name, state) VALUES ({id}, 'name {id}', {state})"
                ))
                .await;
        }
    }
}

fn keys_of(map: &serde_json::Value, kind: &str) -> Vec<i64> {
    let mut keys: Vec<i64> = map["differences"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["kind"] == kind)
        .map(|d| d["key"]["id"].as_i64().unwrap())
        .collect();
    keys.sort();
    keys
}

async fn differences_are_found_then_repaired(src: TestDb, dst: TestDb) {
    let pair = format!("{} -> {}", src.engine, dst.engine);
    let mut s = Setup::new(src, dst).await;
    s.equal_rows().await;
    let run = s.verify(&[]);
    assert_eq!(run.code, 0, "{pair}: {}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains(
            "map people (SourceToDestination): equal: 10 source row(s), 10 destination row(s)"
        ),
        "{pair}: {}",
        run.stdout
    );

    let destination = s.destination.clone();
    for sql in [
        format!("DELETE FROM {destination} WHERE id = 3"),
        format!("INSERT INTO {destination} (id, full_name, state) VALUES (99, 'stray', 1)"),
        format!("UPDATE {destination} SET full_name = 'changed' WHERE id = 5"),
        // The valueMap-mapped column: source 'open' is 1, not 2.
        format!("UPDATE {destination} SET state = 2 WHERE id = 7"),
    ] {
        s.dst.plain.exec(&sql).await;
    }
    let (code, json) = s.verify_json(&[]);
    assert_eq!(code, 2, "{pair}: {json}");
    let map = &json["maps"][0];
    assert_eq!(map["equal"], false);
    assert_eq!(
        map["counts"],
        serde_json::json!({ "missing": 1, "extra": 1, "different": 2 }),
        "{pair}: {json}"
    );
    assert_eq!(keys_of(map, "missing"), [3], "{pair}");
    assert_eq!(keys_of(map, "extra"), [99], "{pair}");
    assert_eq!(keys_of(map, "different"), [5, 7], "{pair}");
    let seven = map["differences"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["key"]["id"] == 7)
        .unwrap();
    assert_eq!(seven["expected"]["state"], 1, "{pair}: {seven}");
    assert_eq!(seven["found"]["state"], 2, "{pair}: {seven}");
    // --limit keeps the first N with values and still counts all.
    let (code, json) = s.verify_json(&["--limit", "1"]);
    assert_eq!(code, 2);
    assert_eq!(json["maps"][0]["differences"].as_array().unwrap().len(), 1);
    assert_eq!(json["maps"][0]["counts"]["different"], 2);

    let run = s.verify(&["--repair"]);
    assert_eq!(run.code, 2, "{pair}: {}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("repaired: 3 upserted, 1 deleted"),
        "{pair}: {}",
        run.stdout
    );
    let run = s.verify(&[]);
    assert_eq!(
        run.code, 0,
        "{pair}: after the repair: {}{}",
        run.stdout, run.stderr
    );
    let logs = s.repo.run(&["logs", "people"]);
    assert!(
        logs.stdout.contains("VerifyRepaired") && logs.stdout.contains("3 upserted, 1 deleted"),
        "{pair}: {}{}",
        logs.stdout,
        logs.stderr
    );
    let status = std::fs::read_to_string(s.repo.path().join("status/verify/people.yaml")).unwrap();
    assert!(
        status.contains("kind: VerifyStatus") && status.contains("equal: true"),
        "{status}"
    );
}

#[tokio::test]
async fn differences_are_found_then_repaired_sqlite_to_postgres() {
    with_timeout(async {
        let Some(dst) = TestDb::postgres().await else {
            return;
        };
        differences_are_found_then_repaired(TestDb::sqlite().await, dst).await;
    })
    .await;
}

#[tokio::test]
async fn differences_are_found_then_repaired_postgres_to_mariadb() {
    with_timeout(async {
        let (Some(src), Some(dst)) = (TestDb::postgres().await, TestDb::mysql().await) else {
            return;
        };
        differences_are_found_then_repaired(src, dst).await;
    })
    .await;
}

#[tokio::test]
async fn differences_are_found_then_repaired_mariadb_to_sqlite() {
    with_timeout(async {
        let Some(src) = TestDb::mysql().await else {
            return;
        };
        differences_are_found_then_repaired(src, TestDb::sqlite().await).await;
    })
    .await;
}

#[tokio::test]
async fn an_unknown_map_and_an_endpoint_that_is_down_are_errors_without_secrets() {
    with_timeout(async {
        let s = Setup::new(TestDb::sqlite().await, TestDb::sqlite().await).await;
        let run = s.verify(&["nosuchmap"]);
        assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
        assert!(run.stderr.contains("no map named \"nosuchmap\""), "{}", run.stderr);

        let down = Repo::new(&[("maps/customers.yaml", support::CUSTOMERS)]);
        down.write(
            "dualwrite.yaml",
            "apiVersion: dualwrite/v1\nkind: Project\nmetadata: { name: d }\nspec:\n  endpoints:\n    erp: { sqlite: { path: erp.db } }\n    crm: { postgres: { urlFromEnv: DOWN_URL } }\n",
        );
        let secret = "postgres://postgres:hunter2secret@127.0.0.1:1/test";
        let run = run_in(down.path(), &["verify", "customers"], &[("DOWN_URL", secret)]);
        assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
        assert!(run.stderr.contains("crm"), "names the endpoint: {}", run.stderr);
        assert!(!run.stderr.contains("hunter2secret") && !run.stdout.contains("hunter2secret"));
        let run = run_in(down.path(), &["verify", "--output", "json"], &[("DOWN_URL", secret)]);
        assert_eq!(run.code, 1);
        let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        assert!(json["maps"][0]["error"].as_str().unwrap().contains("crm"), "{json}");
    })
    .await;
}

#[tokio::test]
async fn the_json_output_has_a_format_version_and_one_entry_per_map() {
    with_timeout(async {
        let mut s = Setup::new(TestDb::sqlite().await, TestDb::sqlite().await).await;
        s.equal_rows().await;
        let (code, json) = s.verify_json(&["people"]);
        assert_eq!(code, 0, "{json}");
        assert_eq!(json["formatVersion"], 1);
        let map = &json["maps"][0];
        for field in [
            "map",
            "direction",
            "verifiedAt",
            "durationSeconds",
            "sourceRows",
            "destinationRows",
            "equal",
            "counts",
            "differences",
        ] {
            assert!(map.get(field).is_some(), "{field} in {json}");
        }
        assert_eq!(map["map"], "people");
        assert_eq!(map["direction"], "SourceToDestination");
        assert_eq!(map["sourceRows"], 10);
        assert_eq!(map["equal"], true);
    })
    .await;
}

/// While `dualwrite run` drives the map and an application keeps writing, differences that
/// are only changes on their way are re-checked and not reported; the service serves the
/// result and its metric.
#[tokio::test(flavor = "multi_thread")]
async fn changes_in_flight_while_running_are_not_reported() {
    with_timeout(async {
        let s = Setup::new(TestDb::sqlite().await, TestDb::sqlite().await).await;
        let EndpointSpec::Sqlite { path } = &s.src.spec else {
            unreachable!()
        };
        let (path, source) = (path.clone(), s.source.clone());
        let service = Service::start(
            s.repo.path(),
            &["--poll-interval", "200ms", "--interval", "2s"],
            &[],
        );
        // The service drives the map: it holds the lease and the map is Running.
        wait_for(
            Duration::from_secs(30),
            "the service to drive the map",
            || {
                let (code, body) = service.get("/api/v1/maps/people");
                let phase = serde_json::from_str::<serde_json::Value>(&body)
                    .map(|st| st["status"]["phase"] == "Running")
                    .unwrap_or(false);
                code == 200 && phase && service.get("/api/v1/service").1.contains("\"people\"")
            },
        );
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let writing = std::sync::Arc::new(AtomicBool::new(true));
        let written = std::sync::Arc::new(AtomicU64::new(0));
        let writer = {
            let (writing, written) = (
                std::sync::Arc::clone(&writing),
                std::sync::Arc::clone(&written),
            );
            std::thread::spawn(move || {
                let conn = rusqlite::Connection::open(&path).unwrap();
                conn.busy_timeout(Duration::from_secs(10)).unwrap();
                while writing.load(Ordering::SeqCst) {
                    let id = 1000 + written.fetch_add(1, Ordering::SeqCst);
                    conn.execute(
                        &format!(
                            "INSERT INTO {source} (id, name, status) VALUES (?1, 'new', 'open')"
                        ),
                        [id],
                    )
                    .unwrap();
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        // The application is writing (and the service syncing) before and while verify reads.
        wait_for(Duration::from_secs(30), "the application to write", || {
            written.load(Ordering::SeqCst) >= 20
        });
        let run = s.verify(&["--output", "json"]);
        writing.store(false, Ordering::SeqCst);
        writer.join().unwrap();
        assert_eq!(
            run.code,
            0,
            "{}{}\n{}",
            run.stdout,
            run.stderr,
            service.logs()
        );
        wait_for(Duration::from_secs(30), "the verify result served", || {
            service.get("/api/v1/maps/people/verify").0 == 200
        });
        let served = service.json("/api/v1/maps/people/verify");
        assert_eq!(served["kind"], "VerifyStatus");
        assert_eq!(served["status"]["equal"], true, "{served}");
        let (_, metrics) = service.get("/metrics");
        assert!(
            metrics.contains("dualwrite_verify_differences{map=\"people\"} 0"),
            "{metrics}"
        );
        assert!(metrics.contains("dualwrite_verify_last_timestamp_seconds{map=\"people\"}"));
        // A repair is refused while another process drives the map, naming it.
        let run = s.verify(&["--repair"]);
        assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
        assert!(run.stderr.contains("people is driven by"), "{}", run.stderr);
    })
    .await;
}

/// A bidirectional map is compared and repaired from its `initialSync.primary` side: with
/// `primary: destination`, a row missing in the source is written to the source.
#[tokio::test]
async fn a_bidirectional_map_is_repaired_from_its_primary_side() {
    with_timeout(async {
        let Some(src) = TestDb::postgres().await else {
            return;
        };
        let mut s = Setup::with_spec(
            src,
            TestDb::sqlite().await,
            "  direction: Bidirectional\n  initialSync: { primary: destination }\n",
        )
        .await;
        s.equal_rows().await;
        let source = s.source.clone();
        s.src
            .plain
            .exec(&format!("DELETE FROM {source} WHERE id = 4"))
            .await;
        s.src
            .plain
            .exec(&format!("UPDATE {source} SET status = 'open' WHERE id = 6"))
            .await;
        let (code, json) = s.verify_json(&[]);
        assert_eq!(code, 2, "{json}");
        let map = &json["maps"][0];
        assert_eq!(map["direction"], "DestinationToSource");
        assert_eq!(keys_of(map, "missing"), [4], "{json}");
        assert_eq!(keys_of(map, "different"), [6], "{json}");
        let six = map["differences"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["key"]["id"] == 6)
            .unwrap();
        assert_eq!(
            six["expected"]["status"], "closed",
            "through the reversed valueMap: {six}"
        );
        let run = s.verify(&["--repair"]);
        assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
        let run = s.verify(&[]);
        assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    })
    .await;
}
