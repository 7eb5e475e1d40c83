//! Benchmark: live changes SQLite → PostgreSQL, in process.
//!
//! There is no long-running `run` command yet, so this calls the library the way it would:
//! `dualwrite::reconcile::run` in a loop inside one tokio runtime, while a writer thread
//! commits inserts into the SQLite source at a steady target rate. Every row carries the
//! time it was written (`src_us`, microseconds since the epoch, taken just before the row's
//! INSERT; the writer commits every 10 ms, so this includes up to one tick of the writer's own
//! transaction). The PostgreSQL table has an extra, unmapped column
//! `arrived_at timestamptz DEFAULT clock_timestamp()`, so lag = arrived_at − src_us per row
//! (same machine, same clock).
//!
//! For each target rate (LIVE_RATES, default 5000,10000,25000,40000 rows/s) the writer runs
//! LIVE_SECS seconds (default 15); reconcile passes run until every row has landed. Reported:
//! rows written, rows landed / wall time (first write → last arrival), lag p50/p99/max, and
//! whether it kept up (backlog gone within 1 s of the writer stopping and p99 < 1 s).
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
//!
//! Needs PostgreSQL at BENCH_PG_URL (default postgres://postgres@127.0.0.1:5432/test).
//! batchSize: BATCH (default 5000).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dualwrite::reconcile::Leasing;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as i64
}

fn write_config(dir: &Path, batch: usize) {
    std::fs::create_dir_all(dir.join("maps")).unwrap();
    std::fs::write(
        dir.join("dualwrite.yaml"),
        "apiVersion: dualwrite/v1\nkind: Project\nmetadata: { name: live }\nspec:\n  endpoints:\n    src: { sqlite: { path: src.db } }\n    dst: { postgres: { urlFromEnv: BENCH_PG_URL } }\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("maps/live.yaml"),
        format!(
            "apiVersion: dualwrite/v1\nkind: TableMap\nmetadata: {{ name: live }}\nspec:\n  state: Running\n  source: {{ endpoint: src, table: live }}\n  destination: {{ endpoint: dst, table: live_dst }}\n  columns:\n    - {{ source: id, destination: id, key: true }}\n    - {{ source: v, destination: v }}\n    - {{ source: payload, destination: payload }}\n    - {{ source: src_us, destination: src_us }}\n  batchSize: {batch}\n"
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

/// Inserts rows with ids from `first_id` at `rate` rows/s for `secs`, committing every 10 ms.
fn writer(path: &Path, first_id: i64, rate: u64, secs: u64, done: Arc<AtomicBool>) -> u64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let mut written = 0u64;
    let payload = "p".repeat(40);
    while Instant::now() < end {
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        if due > written {
            let tx = conn.unchecked_transaction().unwrap();
            {
                let mut stmt = tx
                    .prepare_cached(
                        "INSERT INTO live (id, v, payload, src_us) VALUES (?1, 0, ?2, ?3)",
                    )
                    .unwrap();
                for i in written..due {
                    stmt.execute(rusqlite::params![first_id + i as i64, payload, now_us()])
                        .unwrap();
                }
            }
            tx.commit().unwrap();
            written = due;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    done.store(true, Ordering::SeqCst);
    written
}

async fn pg_count(pg: &tokio_postgres::Client, from: i64, to: i64) -> i64 {
    pg.query_one(
        "SELECT count(*) FROM live_dst WHERE id BETWEEN $1 AND $2",
        &[&from, &to],
    )
    .await
    .unwrap()
    .get(0)
}

fn main() {
    let pg_url = env_or("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/test");
    // SAFETY: single-threaded here; the runtime and writer threads start later.
    unsafe { std::env::set_var("BENCH_PG_URL", &pg_url) };
    let rates: Vec<u64> = env_or("LIVE_RATES", "5000,10000,25000,40000")
        .split(',')
        .map(|r| r.trim().parse().expect("LIVE_RATES: numbers"))
        .collect();
    let secs: u64 = env_or("LIVE_SECS", "15").parse().unwrap();
    let backlog: i64 = env_or("BACKLOG", "200000").parse().unwrap();
    let batch: usize = env_or("BATCH", "5000").parse().unwrap();

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    write_config(&dir, batch);
    let src = dir.join("src.db");
    {
        let conn = rusqlite::Connection::open(&src).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.execute_batch(
            "CREATE TABLE live (id INTEGER PRIMARY KEY, v INTEGER NOT NULL, payload TEXT NOT NULL, src_us INTEGER NOT NULL)",
        )
        .unwrap();
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (pg, conn) = rt
        .block_on(tokio_postgres::connect(&pg_url, tokio_postgres::NoTls))
        .expect("PostgreSQL at BENCH_PG_URL");
    rt.spawn(conn);
    rt.block_on(pg.batch_execute(
        "DROP TABLE IF EXISTS live_dst;
         CREATE TABLE live_dst (id bigint PRIMARY KEY, v integer NOT NULL, payload text NOT NULL,
           src_us bigint NOT NULL, arrived_at timestamptz NOT NULL DEFAULT clock_timestamp())",
    ))
    .unwrap();
    let cfg = dualwrite::config::load(&dualwrite::config::WorkTree { dir: dir.clone() })
        .unwrap_or_else(|d| panic!("config: {d:?}"));
    let pass = Pass { dir, cfg };
    // The first pass installs capture and runs the (empty) initial sync.
    rt.block_on(pass.run());

    println!(
        "machine: {} cores; batchSize {batch}; writer {secs} s per rate",
        std::thread::available_parallelism().map_or(0, |n| n.get())
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
            let (src, done, written) = (src.clone(), done.clone(), written.clone());
            std::thread::spawn(move || {
                let n = writer(&src, first_id, rate, secs, done);
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
            if rt.block_on(pg_count(&pg, first_id, last_id)) == n {
                break;
            }
        }
        let drained_after = writer_stopped.elapsed();
        next_id = last_id + 1;
        let row = rt
            .block_on(pg.query_one(
                "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY lag), \
                        percentile_cont(0.99) WITHIN GROUP (ORDER BY lag), max(lag), \
                        (extract(epoch FROM max(arrived_at)) * 1e6)::float8 \
                 FROM (SELECT arrived_at, (extract(epoch FROM arrived_at) * 1e6 - src_us)::float8 / 1e6 AS lag \
                       FROM live_dst WHERE id BETWEEN $1 AND $2) t",
                &[&first_id, &last_id],
            ))
            .unwrap();
        let (p50, p99, max, last_us): (f64, f64, f64, f64) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        let wall = (last_us - t0 as f64) / 1e6;
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
        let conn = rusqlite::Connection::open(&src).unwrap();
        conn.execute_batch(&format!(
            "WITH RECURSIVE c(g) AS (SELECT {next_id} UNION ALL SELECT g + 1 FROM c WHERE g < {backlog}) \
             INSERT INTO live SELECT g, 0, 'filler', 0 FROM c"
        ))
        .unwrap();
        rt.block_on(pass.run());
    }
    {
        let conn = rusqlite::Connection::open(&src).unwrap();
        conn.execute(
            "UPDATE live SET v = v + 1 WHERE id <= ?1",
            rusqlite::params![backlog],
        )
        .unwrap();
    }
    let start = Instant::now();
    rt.block_on(pass.run());
    let took = start.elapsed().as_secs_f64();
    let updated: i64 = rt
        .block_on(pg.query_one(
            "SELECT count(*) FROM live_dst WHERE id <= $1 AND v = 1",
            &[&backlog],
        ))
        .unwrap()
        .get(0);
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
        let conn = rusqlite::Connection::open(&src).unwrap();
        conn.execute(
            "UPDATE live SET v = v + 1 WHERE id <= ?1",
            rusqlite::params![backlog],
        )
        .unwrap();
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
        "fence: {backlog} queued updates, batchSize {batch}, median of {rounds} drains each, alternating: \
         without leases and fences {off:.2} s = {:.0} changes/s; with them {on:.2} s = {:.0} changes/s; \
         {:+.1} % time",
        backlog as f64 / off,
        backlog as f64 / on,
        (on / off - 1.0) * 100.0
    );
    rt.block_on(pg.batch_execute(
        "DROP TABLE IF EXISTS live_dst; DELETE FROM _dualwrite_changelog WHERE table_name = 'live_dst'",
    ))
    .ok();
}
