//! Benchmark: live changes SQLite → PostgreSQL (the default) or PostgreSQL → MariaDB, in
//! process.
//!
//! The bench calls the library the way a long-running process would:
//! `dualwrite::reconcile::run_with` in a loop inside one tokio runtime, while a writer thread
//! commits inserts into the source at a steady target rate. Every row carries the time it was
//! written (`src_us`, microseconds since the epoch; the writer commits every 10 ms, so this
//! includes up to one tick of the writer's own transaction). SQLite source: taken just
//! before each row's INSERT. PostgreSQL source: one `INSERT … SELECT … generate_series` per
//! tick, all the tick's rows stamped with the time just before that statement. The
//! destination table has an extra, unmapped column filled by the database when the row
//! arrives, so lag = arrival − src_us per row (same machine, same clock):
//! PostgreSQL `arrived_at timestamptz DEFAULT clock_timestamp()` (the time the row is
//! inserted); MariaDB `arrived_at TIMESTAMP(6) DEFAULT CURRENT_TIMESTAMP(6)` (the start of
//! the statement that inserted it, so a bulk write's rows are stamped when it began: the lag
//! there is low by up to one statement's duration; TIMESTAMP, not DATETIME, so the value does
//! not depend on the session's time zone).
//!
//! For each target rate (LIVE_RATES, default 5000,10000,25000,40000 rows/s) the writer runs
//! LIVE_SECS seconds (default 15); reconcile passes run until every row has landed. Reported:
//! rows written, rows landed / wall time (first write → last arrival), lag p50/p99/max (p50
//! and p99 interpolated like PostgreSQL's percentile_cont), and whether it kept up (backlog
//! gone within 1 s of the writer stopping and p99 < 1 s).
//! Then the backlog drain: with no pass running, one UPDATE of BACKLOG rows (default
//! 200,000) queues that many changes; one `reconcile::run` drains them, timed.
//!
//! Last, the fence's cost: the same backlog drained FENCE_ROUNDS times (default 5) without
//! leases and fences (`Leasing::Off`) and with them (`Leasing::Claim`, what every command
//! does: the map's lease taken, each write transaction raising its fence row first),
//! alternating, medians compared.
//!
//!   cargo bench --bench live_sync
//!   LIVE_RATES=25000 LIVE_SECS=30 BATCH=5000 cargo bench --bench live_sync
//!   LIVE_PAIR=pg-mariadb LIVE_RATES=10000,25000 LIVE_SECS=10 cargo bench --bench live_sync
//!
//! Knobs (environment):
//! - LIVE_PAIR: `sqlite-pg` (default; source `live` in a SQLite file in a temp dir,
//!   destination `live_dst` in PostgreSQL) or `pg-mariadb` (source `live` in PostgreSQL,
//!   destination `live_dst` in MariaDB). Both tables are dropped first and at the end.
//! - LIVE_RATES, LIVE_SECS, BACKLOG, FENCE_ROUNDS: as above.
//! - BATCH: the map's `batchSize`. sqlite-pg: default 5000 (as in the earlier runs recorded
//!   in BENCHMARKS.md). pg-mariadb: no `batchSize` in the map unless BATCH is set (the
//!   map's default, 1000, what a user gets).
//! - BENCH_PG_URL (default postgres://postgres@127.0.0.1:5432/test), BENCH_MY_URL (default
//!   mysql://root@127.0.0.1:3306/test; pg-mariadb only).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dualwrite::reconcile::Leasing;
use mysql_async::prelude::Queryable;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as i64
}

/// Which databases the bench syncs between.
#[derive(Clone, Copy, PartialEq, Eq)]
enum LivePair {
    SqlitePg,
    PgMariadb,
}

impl LivePair {
    fn from_env() -> LivePair {
        match env_or("LIVE_PAIR", "sqlite-pg").as_str() {
            "sqlite-pg" => LivePair::SqlitePg,
            "pg-mariadb" => LivePair::PgMariadb,
            other => panic!("LIVE_PAIR: sqlite-pg or pg-mariadb, not {other}"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            LivePair::SqlitePg => "SQLite → PostgreSQL",
            LivePair::PgMariadb => "PostgreSQL → MariaDB",
        }
    }

    /// The project's endpoints `src` and `dst`.
    fn endpoints(self) -> &'static str {
        match self {
            LivePair::SqlitePg => {
                "    src: { sqlite: { path: src.db } }\n    dst: { postgres: { urlFromEnv: BENCH_PG_URL } }\n"
            }
            LivePair::PgMariadb => {
                "    src: { postgres: { urlFromEnv: BENCH_PG_URL } }\n    dst: { mysql: { urlFromEnv: BENCH_MY_URL } }\n"
            }
        }
    }
}

/// The project and the map `live` (source `live` → destination `live_dst`); `batch`: the
/// map's batchSize, or none for the default.
fn write_config(dir: &Path, pair: LivePair, batch: Option<usize>) {
    std::fs::create_dir_all(dir.join("maps")).unwrap();
    std::fs::write(
        dir.join("dualwrite.yaml"),
        format!(
            "apiVersion: dualwrite/v1\nkind: Project\nmetadata: {{ name: live }}\nspec:\n  endpoints:\n{}",
            pair.endpoints()
        ),
    )
    .unwrap();
    let batch_line = batch.map_or(String::new(), |b| format!("  batchSize: {b}\n"));
    std::fs::write(
        dir.join("maps/live.yaml"),
        format!(
            "apiVersion: dualwrite/v1\nkind: TableMap\nmetadata: {{ name: live }}\nspec:\n  state: Running\n  source: {{ endpoint: src, table: live }}\n  destination: {{ endpoint: dst, table: live_dst }}\n  columns:\n    - {{ source: id, destination: id, key: true }}\n    - {{ source: v, destination: v }}\n    - {{ source: payload, destination: payload }}\n    - {{ source: src_us, destination: src_us }}\n{batch_line}"
        ),
    )
    .unwrap();
}

struct Pass {
    dir: std::path::PathBuf,
    cfg: dualwrite::config::Config,
}

impl Pass {
    async fn run(&self) {
        self.run_leasing(Leasing::Claim).await
    }

    /// One pass taking the map's lease and fencing its writes (`Claim`, what every command
    /// does), or with neither (`Off`).
    async fn run_leasing(&self, leasing: Leasing) {
        let options = dualwrite::reconcile::PassOptions {
            leasing,
            ..Default::default()
        };
        let report = dualwrite::reconcile::run_with(&self.dir, &self.cfg, "bench", &options)
            .await
            .expect("reconcile pass");
        assert!(
            !report.has_problems(),
            "reconcile problem: {:?}",
            report.maps
        );
    }
}

/// Paces the writer: every 10 ms, `insert(from, to)` the rows due since the last tick (row
/// indexes `from..to`, at `rate` rows/s) for `secs`; returns the rows written.
fn pace(rate: u64, secs: u64, done: &AtomicBool, mut insert: impl FnMut(u64, u64)) -> u64 {
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let mut written = 0u64;
    while Instant::now() < end {
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        if due > written {
            insert(written, due);
            written = due;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    done.store(true, Ordering::SeqCst);
    written
}

/// Inserts rows with ids from `first_id` into the SQLite source at `rate` rows/s for
/// `secs`, one transaction a tick, each row stamped just before its INSERT.
fn sqlite_writer(path: &Path, first_id: i64, rate: u64, secs: u64, done: &AtomicBool) -> u64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    let payload = "p".repeat(40);
    pace(rate, secs, done, |from, to| {
        let tx = conn.unchecked_transaction().unwrap();
        {
            let mut stmt = tx
                .prepare_cached("INSERT INTO live (id, v, payload, src_us) VALUES (?1, 0, ?2, ?3)")
                .unwrap();
            for i in from..to {
                stmt.execute(rusqlite::params![first_id + i as i64, payload, now_us()])
                    .unwrap();
            }
        }
        tx.commit().unwrap();
    })
}

/// Inserts rows with ids from `first_id` into the PostgreSQL source at `rate` rows/s for
/// `secs`: one statement (its own transaction) a tick, its rows stamped just before it.
fn pg_writer(url: &str, first_id: i64, rate: u64, secs: u64, done: &AtomicBool) -> u64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (client, conn) = rt
        .block_on(tokio_postgres::connect(url, tokio_postgres::NoTls))
        .expect("PostgreSQL at BENCH_PG_URL");
    rt.spawn(conn);
    let stmt = rt
        .block_on(client.prepare(
            "INSERT INTO live (id, v, payload, src_us) \
             SELECT g, 0, $1::text, $2::bigint FROM generate_series($3::bigint, $4::bigint) g",
        ))
        .unwrap();
    let payload = "p".repeat(40);
    pace(rate, secs, done, |from, to| {
        let (first, last) = (first_id + from as i64, first_id + to as i64 - 1);
        rt.block_on(client.execute(&stmt, &[&payload, &now_us(), &first, &last]))
            .unwrap();
    })
}

/// The source side's statements outside the writer.
enum Source {
    Sqlite(std::path::PathBuf),
    /// Through the bench's PostgreSQL client.
    Pg,
}

impl Source {
    fn create(&self, pg: &tokio_postgres::Client, rt: &tokio::runtime::Runtime) {
        const COLUMNS: &str = "(id bigint PRIMARY KEY, v integer NOT NULL, payload text NOT NULL, src_us bigint NOT NULL)";
        match self {
            Source::Sqlite(path) => {
                let conn = rusqlite::Connection::open(path).unwrap();
                conn.pragma_update(None, "journal_mode", "WAL").unwrap();
                conn.execute_batch(&format!("CREATE TABLE live {COLUMNS}"))
                    .unwrap();
            }
            Source::Pg => {
                rt.block_on(pg.batch_execute(&format!(
                    "DROP TABLE IF EXISTS live; CREATE TABLE live {COLUMNS}"
                )))
                .unwrap();
                // Changelog rows left over from an interrupted run, if any (none, and no
                // changelog table, on a server dualwrite never captured on).
                rt.block_on(
                    pg.batch_execute("DELETE FROM _dualwrite_changelog WHERE table_name = 'live'"),
                )
                .ok();
            }
        }
    }

    /// Runs `sql` (no parameters) on the source.
    fn execute(&self, pg: &tokio_postgres::Client, rt: &tokio::runtime::Runtime, sql: &str) {
        match self {
            Source::Sqlite(path) => rusqlite::Connection::open(path)
                .unwrap()
                .execute_batch(sql)
                .unwrap(),
            Source::Pg => rt.block_on(pg.batch_execute(sql)).unwrap(),
        }
    }

    /// Rows `from..=to` as filler (no lag measured on them).
    fn fill(&self, pg: &tokio_postgres::Client, rt: &tokio::runtime::Runtime, from: i64, to: i64) {
        let sql = match self {
            Source::Sqlite(_) => format!(
                "WITH RECURSIVE c(g) AS (SELECT {from} UNION ALL SELECT g + 1 FROM c WHERE g < {to}) \
                 INSERT INTO live SELECT g, 0, 'filler', 0 FROM c"
            ),
            Source::Pg => format!(
                "INSERT INTO live SELECT g, 0, 'filler', 0 FROM generate_series({from}::bigint, {to}) g"
            ),
        };
        self.execute(pg, rt, &sql);
    }

    /// Queues one change for each of the rows with ids up to `upto`.
    fn bump(&self, pg: &tokio_postgres::Client, rt: &tokio::runtime::Runtime, upto: i64) {
        self.execute(
            pg,
            rt,
            &format!("UPDATE live SET v = v + 1 WHERE id <= {upto}"),
        );
    }

    fn drop_table(&self, pg: &tokio_postgres::Client, rt: &tokio::runtime::Runtime) {
        if let Source::Pg = self {
            rt.block_on(pg.batch_execute(
                "DROP TABLE IF EXISTS live; DELETE FROM _dualwrite_changelog WHERE table_name = 'live'",
            ))
            .ok();
        }
    }
}

/// The destination table `live_dst` and the queries on it.
enum Dest {
    Pg,
    Mariadb(mysql_async::Pool),
}

/// Lag of the rows of one phase: sorted, in seconds; and the last arrival (µs since the
/// epoch).
struct Lags {
    sorted: Vec<f64>,
    last_us: i64,
}

impl Lags {
    fn new(rows: Vec<(i64, i64)>) -> Lags {
        // (src_us, arrival µs)
        let last_us = rows.iter().map(|r| r.1).max().unwrap_or(0);
        let mut sorted: Vec<f64> = rows.iter().map(|(s, a)| (a - s) as f64 / 1e6).collect();
        sorted.sort_by(f64::total_cmp);
        Lags { sorted, last_us }
    }

    /// The p-quantile interpolated between the two nearest values, as percentile_cont.
    fn percentile(&self, p: f64) -> f64 {
        let v = &self.sorted;
        let pos = p * (v.len() - 1) as f64;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
    }

    fn max(&self) -> f64 {
        *self.sorted.last().unwrap()
    }
}

impl Dest {
    async fn create(&self, pg: &tokio_postgres::Client) {
        match self {
            Dest::Pg => pg
                .batch_execute(
                    "DROP TABLE IF EXISTS live_dst;
                     CREATE TABLE live_dst (id bigint PRIMARY KEY, v integer NOT NULL, payload text NOT NULL,
                       src_us bigint NOT NULL, arrived_at timestamptz NOT NULL DEFAULT clock_timestamp())",
                )
                .await
                .unwrap(),
            Dest::Mariadb(pool) => {
                let mut conn = pool.get_conn().await.expect("MariaDB at BENCH_MY_URL");
                conn.query_drop("DROP TABLE IF EXISTS live_dst").await.unwrap();
                conn.query_drop(
                    "CREATE TABLE live_dst (id BIGINT PRIMARY KEY, v INT NOT NULL, payload TEXT NOT NULL,
                       src_us BIGINT NOT NULL, arrived_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6))
                     ENGINE=InnoDB",
                )
                .await
                .unwrap();
            }
        }
    }

    /// Rows with ids in `from..=to`.
    async fn count(&self, pg: &tokio_postgres::Client, from: i64, to: i64) -> i64 {
        self.count_where(pg, "id BETWEEN ? AND ?", &[from, to])
            .await
    }

    /// Rows with ids up to `upto` whose `v` is 1 (updated once).
    async fn count_updated(&self, pg: &tokio_postgres::Client, upto: i64) -> i64 {
        self.count_where(pg, "id <= ? AND v = 1", &[upto]).await
    }

    /// Rows of `live_dst` where `condition` holds, its `?` bound to `args` in order.
    async fn count_where(&self, pg: &tokio_postgres::Client, condition: &str, args: &[i64]) -> i64 {
        let sql = format!("SELECT count(*) FROM live_dst WHERE {condition}");
        match self {
            Dest::Pg => {
                let mut numbered = String::new();
                for (n, part) in sql.split('?').enumerate() {
                    if n > 0 {
                        numbered.push_str(&format!("${n}"));
                    }
                    numbered.push_str(part);
                }
                let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                    args.iter().map(|a| a as _).collect();
                pg.query_one(&numbered, &params).await.unwrap().get(0)
            }
            Dest::Mariadb(pool) => {
                let mut conn = pool.get_conn().await.unwrap();
                let params: Vec<mysql_async::Value> = args.iter().map(|a| (*a).into()).collect();
                conn.exec_first(sql, params).await.unwrap().unwrap()
            }
        }
    }

    /// The lag of the rows with ids in `from..=to`.
    async fn lags(&self, pg: &tokio_postgres::Client, from: i64, to: i64) -> Lags {
        let rows: Vec<(i64, i64)> = match self {
            Dest::Pg => pg
                .query(
                    "SELECT src_us, (extract(epoch FROM arrived_at) * 1e6)::int8 \
                     FROM live_dst WHERE id BETWEEN $1 AND $2",
                    &[&from, &to],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect(),
            Dest::Mariadb(pool) => {
                let mut conn = pool.get_conn().await.unwrap();
                conn.exec(
                    "SELECT src_us, CAST(UNIX_TIMESTAMP(arrived_at) * 1000000 AS SIGNED) \
                     FROM live_dst WHERE id BETWEEN ? AND ?",
                    (from, to),
                )
                .await
                .unwrap()
            }
        };
        Lags::new(rows)
    }

    async fn drop_table(&self, pg: &tokio_postgres::Client) {
        match self {
            Dest::Pg => pg.batch_execute("DROP TABLE IF EXISTS live_dst").await.ok(),
            Dest::Mariadb(pool) => {
                if let Ok(mut conn) = pool.get_conn().await {
                    conn.query_drop("DROP TABLE IF EXISTS live_dst").await.ok();
                }
                pool.clone().disconnect().await.ok()
            }
        };
    }
}

fn main() {
    let pair = LivePair::from_env();
    let pg_url = env_or("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/test");
    let my_url = env_or("BENCH_MY_URL", "mysql://root@127.0.0.1:3306/test");
    // SAFETY: single-threaded here; the runtime and writer threads start later.
    unsafe {
        std::env::set_var("BENCH_PG_URL", &pg_url);
        std::env::set_var("BENCH_MY_URL", &my_url);
    }
    let rates: Vec<u64> = env_or("LIVE_RATES", "5000,10000,25000,40000")
        .split(',')
        .map(|r| r.trim().parse().expect("LIVE_RATES: numbers"))
        .collect();
    let secs: u64 = env_or("LIVE_SECS", "15").parse().unwrap();
    let backlog: i64 = env_or("BACKLOG", "200000").parse().unwrap();
    // SQLite → PostgreSQL keeps the batchSize of its earlier runs; PostgreSQL → MariaDB runs
    // the map's default unless BATCH says otherwise.
    let batch: Option<usize> = match (std::env::var("BATCH").ok(), pair) {
        (Some(b), _) => Some(b.parse().expect("BATCH: a number")),
        (None, LivePair::SqlitePg) => Some(5000),
        (None, LivePair::PgMariadb) => None,
    };
    let batch_text = batch.map_or("default (1000)".to_string(), |b| b.to_string());

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    write_config(&dir, pair, batch);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (pg, conn) = rt
        .block_on(tokio_postgres::connect(&pg_url, tokio_postgres::NoTls))
        .expect("PostgreSQL at BENCH_PG_URL");
    rt.spawn(conn);
    let (source, dest) = match pair {
        LivePair::SqlitePg => (Source::Sqlite(dir.join("src.db")), Dest::Pg),
        LivePair::PgMariadb => {
            let opts = mysql_async::Opts::from_url(&my_url).expect("BENCH_MY_URL");
            (Source::Pg, Dest::Mariadb(mysql_async::Pool::new(opts)))
        }
    };
    source.create(&pg, &rt);
    rt.block_on(dest.create(&pg));
    let cfg = dualwrite::config::load(&dualwrite::config::WorkTree { dir: dir.clone() })
        .unwrap_or_else(|d| panic!("config: {d:?}"));
    let pass = Pass { dir, cfg };
    // The first pass installs capture and runs the (empty) initial sync.
    rt.block_on(pass.run());

    println!(
        "machine: {} cores; {}; batchSize {batch_text}; writer {secs} s per rate",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        pair.name()
    );
    println!();
    println!(
        "| target rate (rows/s) | rows written | writer rate | landed rows/s (first write → last arrival) | passes | lag p50 | lag p99 | lag max | backlog drained after writer stop | kept up |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut next_id = 1i64;
    for &rate in &rates {
        let done = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicU64::new(0));
        let first_id = next_id;
        let t0 = now_us();
        let writer_thread = {
            let (done, written) = (done.clone(), written.clone());
            let (src_path, pg_url) = (
                match &source {
                    Source::Sqlite(path) => Some(path.clone()),
                    Source::Pg => None,
                },
                pg_url.clone(),
            );
            std::thread::spawn(move || {
                let n = match src_path {
                    Some(path) => sqlite_writer(&path, first_id, rate, secs, &done),
                    None => pg_writer(&pg_url, first_id, rate, secs, &done),
                };
                written.store(n, Ordering::SeqCst);
            })
        };
        let mut passes = 0u64;
        while !done.load(Ordering::SeqCst) {
            rt.block_on(pass.run());
            passes += 1;
        }
        writer_thread.join().unwrap();
        let n = written.load(Ordering::SeqCst) as i64;
        let writer_stopped = Instant::now();
        let last_id = first_id + n - 1;
        loop {
            rt.block_on(pass.run());
            passes += 1;
            if rt.block_on(dest.count(&pg, first_id, last_id)) == n {
                break;
            }
        }
        let drained_after = writer_stopped.elapsed();
        next_id = last_id + 1;
        let lags = rt.block_on(dest.lags(&pg, first_id, last_id));
        let (p50, p99, max) = (lags.percentile(0.5), lags.percentile(0.99), lags.max());
        let wall = (lags.last_us - t0) as f64 / 1e6;
        let kept_up = drained_after < Duration::from_secs(1) && p99 < 1.0;
        println!(
            "| {rate} | {n} | {:.0} | {:.0} | {passes} | {:.3} s | {:.3} s | {:.3} s | {:.2} s | {} |",
            n as f64 / secs as f64,
            n as f64 / wall,
            p50,
            p99,
            max,
            drained_after.as_secs_f64(),
            if kept_up { "yes" } else { "no" }
        );
    }

    // Backlog: make sure there are enough rows, then queue BACKLOG updates and drain once.
    if next_id - 1 < backlog {
        source.fill(&pg, &rt, next_id, backlog);
        rt.block_on(pass.run());
    }
    source.bump(&pg, &rt, backlog);
    let start = Instant::now();
    rt.block_on(pass.run());
    let took = start.elapsed().as_secs_f64();
    let updated = rt.block_on(dest.count_updated(&pg, backlog));
    assert_eq!(updated, backlog, "every queued update landed");
    println!();
    println!(
        "backlog: {backlog} queued updates drained by one reconcile pass in {took:.2} s = {:.0} changes/s",
        backlog as f64 / took
    );

    // The fence's cost: the same backlog drained with and without leases and fences,
    // alternating, FENCE_ROUNDS times each; medians compared.
    let rounds: usize = env_or("FENCE_ROUNDS", "5").parse().unwrap();
    let mut times: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for round in 0..rounds * 2 {
        let fenced = round % 2 == 1;
        source.bump(&pg, &rt, backlog);
        let start = Instant::now();
        rt.block_on(pass.run_leasing(if fenced { Leasing::Claim } else { Leasing::Off }));
        times[usize::from(fenced)].push(start.elapsed().as_secs_f64());
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (off, on) = (median(&mut times[0]), median(&mut times[1]));
    println!();
    println!(
        "fence: {backlog} queued updates, batchSize {batch_text}, median of {rounds} drains each, alternating: \
         without leases and fences {off:.2} s = {:.0} changes/s; with them {on:.2} s = {:.0} changes/s; \
         {:+.1} % time",
        backlog as f64 / off,
        backlog as f64 / on,
        (on / off - 1.0) * 100.0
    );
    rt.block_on(dest.drop_table(&pg));
    source.drop_table(&pg, &rt);
    rt.block_on(pg.batch_execute("DELETE FROM _dualwrite_changelog WHERE table_name = 'live_dst'"))
        .ok();
}
