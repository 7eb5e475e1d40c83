#!/usr/bin/env python3
"""Service-mode figures for `dualwrite run` (driven by benches/service.sh).

  latency   edit + commit of a map's spec.state -> status file shows the new phase,
            TRIALS trials alternating Running/Paused; p50/p99 (SQLite endpoints)
  live      commit of a row on the source -> the row in the target, TRIALS rows: a
            PostgreSQL source (LISTEN/NOTIFY) and a SQLite source (polled)
  idle      MAPS maps Running on SQLite endpoints, nothing changing: CPU over IDLE_SECONDS
            (utime+stime from /proc) as % of one core, and RSS (VmRSS, VmHWM)
  failover  two processes sharing a PostgreSQL state store (PostgreSQL endpoints, 4 maps,
            --lease-ttl TTL); kill -9 the one owning maps; time until the survivor owns
            every map, and until a row inserted right after the kill reaches its target

Prints a markdown summary on stdout; progress on stderr.
"""

import json
import random
import os
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

BIN = os.environ["DUALWRITE_BIN"]
PG_URL = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/test")
TRIALS = int(os.environ.get("TRIALS", "100"))
MAPS = int(os.environ.get("MAPS", "100"))
IDLE_SECONDS = int(os.environ.get("IDLE_SECONDS", "60"))
TTL = int(os.environ.get("TTL", "5"))
FAILOVERS = int(os.environ.get("FAILOVERS", "5"))
WHAT = os.environ.get("WHAT", "latency live idle failover").split()

PROJECT = """apiVersion: dualwrite/v1
kind: Project
metadata: { name: bench }
spec:
  endpoints:
    erp: { sqlite: { path: .dualwrite/erp.db } }
    crm: { sqlite: { path: .dualwrite/crm.db } }
"""

MAP = """apiVersion: dualwrite/v1
kind: TableMap
metadata: {{ name: {name} }}
spec:
  state: {state}
  source: {{ endpoint: {src}, table: {name}_src }}
  destination: {{ endpoint: {dst}, table: {name}_dst }}
  columns:
    - {{ source: id, destination: id, key: true }}
    - {{ source: v, destination: v }}
"""


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def git(repo, *args):
    subprocess.run(
        ["git", "-C", repo, "-c", "user.name=bench", "-c", "user.email=bench@example.com", *args],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return 0, ""


def start(repo, args, env=None):
    port = free_port()
    logf = open(os.path.join(repo, f"run-{port}.log"), "w")
    proc = subprocess.Popen(
        [BIN, "-C", repo, "run", "--listen", f"127.0.0.1:{port}", *args],
        stdout=subprocess.DEVNULL,
        stderr=logf,
        env={**os.environ, **(env or {})},
    )
    return proc, port


def wait(what, check, limit=300, every=0.005):
    start_t = time.monotonic()
    while not check():
        if time.monotonic() - start_t > limit:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(every)
    return time.monotonic() - start_t


def phase(repo, name):
    try:
        with open(os.path.join(repo, "status", "maps", f"{name}.yaml")) as f:
            m = re.search(r"^  phase: (\w+)", f.read(), re.M)
            return m.group(1) if m else None
    except OSError:
        return None


def sqlite_repo(maps, rows=10):
    repo = tempfile.mkdtemp(prefix="dw-bench-service-")
    os.makedirs(os.path.join(repo, "maps"))
    os.makedirs(os.path.join(repo, ".dualwrite"))
    with open(os.path.join(repo, "dualwrite.yaml"), "w") as f:
        f.write(PROJECT)
    with open(os.path.join(repo, ".gitignore"), "w") as f:
        f.write(".dualwrite/\nstatus/\n*.log\n")
    erp = sqlite3.connect(os.path.join(repo, ".dualwrite", "erp.db"))
    crm = sqlite3.connect(os.path.join(repo, ".dualwrite", "crm.db"))
    for name in maps:
        with open(os.path.join(repo, "maps", f"{name}.yaml"), "w") as f:
            f.write(MAP.format(name=name, state="Running", src="erp", dst="crm"))
        erp.execute(f"CREATE TABLE {name}_src (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
        erp.executemany(f"INSERT INTO {name}_src VALUES (?, ?)", [(i, f"v{i}") for i in range(rows)])
        crm.execute(f"CREATE TABLE {name}_dst (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    erp.commit()
    crm.commit()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "maps")
    return repo


def pct(values, p):
    values = sorted(values)
    k = (len(values) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def bench_latency():
    repo = sqlite_repo(["customers"], rows=100)
    proc, port = start(repo, ["--interval", "1h"])
    try:
        wait("ready", lambda: get(port, "/readyz")[0] == 200)
        wait("Running", lambda: phase(repo, "customers") == "Running")
        from_edit, from_commit = [], []
        state = "Running"
        path = os.path.join(repo, "maps", "customers.yaml")
        for i in range(TRIALS):
            state = "Paused" if state == "Running" else "Running"
            t0 = time.monotonic()
            with open(path, "w") as f:
                f.write(MAP.format(name="customers", state=state, src="erp", dst="crm"))
            git(repo, "commit", "-q", "-am", f"{state} {i}")
            t1 = time.monotonic()
            wait(f"trial {i}", lambda: phase(repo, "customers") == state, limit=30, every=0.002)
            t2 = time.monotonic()
            from_edit.append(t2 - t0)
            from_commit.append(max(t2 - t1, 0.0))
            time.sleep(0.2)
        return from_edit, from_commit
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
        shutil.rmtree(repo, ignore_errors=True)


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def mem_kb(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def bench_idle():
    names = [f"m{i:03d}" for i in range(MAPS)]
    repo = sqlite_repo(names)
    proc, port = start(repo, [])
    try:
        took = wait("ready", lambda: get(port, "/readyz")[0] == 200)
        wait("all Running", lambda: all(phase(repo, n) == "Running" for n in names), every=0.2)
        log(f"idle: {MAPS} maps Running after {took:.1f}s; settling")
        time.sleep(5)
        c0, t0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(IDLE_SECONDS)
        c1, t1 = cpu_seconds(proc.pid), time.monotonic()
        rss = mem_kb(proc.pid, "VmRSS")
        hwm = mem_kb(proc.pid, "VmHWM")
        threads = mem_kb(proc.pid, "Threads")
        # The same maps streaming: one row per map per second for 10 s, then RSS again.
        erp = sqlite3.connect(os.path.join(repo, ".dualwrite", "erp.db"))
        for s in range(10):
            for n in names:
                erp.execute(f"INSERT INTO {n}_src VALUES (?, 'live')", (1000 + s,))
            erp.commit()
            time.sleep(1)
        crm = sqlite3.connect(os.path.join(repo, ".dualwrite", "crm.db"))
        wait("live rows", lambda: all(
            crm.execute(f"SELECT count(*) FROM {n}_dst").fetchone()[0] == 20 for n in names
        ), limit=60, every=0.2)
        rss_live = mem_kb(proc.pid, "VmRSS")
        hwm_live = mem_kb(proc.pid, "VmHWM")
        return {
            "cpu_pct": 100 * (c1 - c0) / (t1 - t0),
            "seconds": t1 - t0,
            "rss_mb": rss / 1024,
            "hwm_mb": hwm / 1024,
            "rss_live_mb": rss_live / 1024,
            "hwm_live_mb": hwm_live / 1024,
            "threads": threads,
            "startup_s": took,
        }
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
        shutil.rmtree(repo, ignore_errors=True)


def psql(url, sql):
    out = subprocess.run(
        ["psql", url, "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-c", sql],
        check=True, capture_output=True, text=True,
    )
    return out.stdout.strip()


def bench_failover():
    db = f"dw_bench_failover_{os.getpid()}"
    base = PG_URL.rsplit("/", 1)[0]
    url = f"{base}/{db}"
    psql(PG_URL, f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    psql(PG_URL, f"CREATE DATABASE {db}")
    names = ["a", "b", "c", "d"]
    repo = tempfile.mkdtemp(prefix="dw-bench-failover-")
    os.makedirs(os.path.join(repo, "maps"))
    with open(os.path.join(repo, "dualwrite.yaml"), "w") as f:
        f.write("""apiVersion: dualwrite/v1
kind: Project
metadata: { name: bench }
spec:
  endpoints:
    app: { postgres: { urlFromEnv: APP_URL } }
  stateStore: { postgres: { urlFromEnv: STATE_URL } }
""")
    for n in names:
        with open(os.path.join(repo, "maps", f"{n}.yaml"), "w") as f:
            f.write(MAP.format(name=n, state="Running", src="app", dst="app"))
        psql(url, f"CREATE TABLE {n}_src (id bigint PRIMARY KEY, v text NOT NULL);"
                  f"CREATE TABLE {n}_dst (id bigint PRIMARY KEY, v text NOT NULL)")
    env = {"APP_URL": url, "STATE_URL": url}
    args = ["--interval", "1h", "--lease-ttl", f"{TTL}s"]
    procs = {}

    def owned(port):
        code, body = get(port, "/api/v1/service")
        return json.loads(body).get("ownedMaps", []) if code == 200 else []

    def spawn(holder):
        proc, port = start(repo, args + ["--holder-id", holder], env)
        procs[holder] = (proc, port)
        wait(f"{holder} ready", lambda: get(port, "/readyz")[0] == 200)

    results = []
    next_id = [0]
    try:
        spawn("h0")
        spawn("h1")
        for trial in range(FAILOVERS):
            live = list(procs)
            wait("split", lambda: all(len(owned(procs[h][1])) == 2 for h in live), limit=60, every=0.05)
            victim = live[trial % 2]
            survivor = [h for h in live if h != victim][0]
            victim_maps = owned(procs[victim][1])
            proc, _ = procs.pop(victim)
            proc.send_signal(signal.SIGKILL)
            t0 = time.monotonic()
            proc.wait()
            next_id[0] += 1
            rid = next_id[0]
            psql(url, f"INSERT INTO {victim_maps[0]}_src VALUES ({rid}, 'after kill')")
            t_rows = None
            sport = procs[survivor][1]
            t_owned = wait("takeover", lambda: len(owned(sport)) == 4, limit=60, every=0.02)
            t_rows = wait("row", lambda: psql(url, f"SELECT count(*) FROM {victim_maps[0]}_dst WHERE id = {rid}") == "1",
                          limit=60, every=0.02) + t_owned
            results.append((t_owned, t_rows))
            log(f"failover {trial + 1}: maps moved after {t_owned:.2f}s, row after {t_rows:.2f}s")
            spawn(victim)
        # Nothing lost or doubled: every target equals its source.
        for n in names:
            a = psql(url, f"SELECT count(*), coalesce(sum(id), 0) FROM {n}_src")
            b = psql(url, f"SELECT count(*), coalesce(sum(id), 0) FROM {n}_dst")
            assert a == b, f"{n}: source {a} target {b}"
        return results
    finally:
        for proc, _ in procs.values():
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)
        shutil.rmtree(repo, ignore_errors=True)
        psql(PG_URL, f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


def bench_live(source, poll):
    """Commit of a row on the source -> the row readable in the (SQLite) target."""
    repo = tempfile.mkdtemp(prefix="dw-bench-live-")
    os.makedirs(os.path.join(repo, "maps"))
    os.makedirs(os.path.join(repo, ".dualwrite"))
    db = f"dw_bench_live_{os.getpid()}"
    url = f"{PG_URL.rsplit('/', 1)[0]}/{db}"
    env = {}
    if source == "postgres":
        psql(PG_URL, f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        psql(PG_URL, f"CREATE DATABASE {db}")
        psql(url, "CREATE TABLE live_src (id bigint PRIMARY KEY, v text NOT NULL)")
        src = "{ postgres: { urlFromEnv: SRC_URL } }"
        env = {"SRC_URL": url}
    else:
        erp = sqlite3.connect(os.path.join(repo, ".dualwrite", "erp.db"))
        erp.execute("CREATE TABLE live_src (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
        erp.commit()
        src = "{ sqlite: { path: .dualwrite/erp.db } }"
    crm = sqlite3.connect(os.path.join(repo, ".dualwrite", "crm.db"))
    crm.execute("CREATE TABLE live_dst (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    crm.commit()
    with open(os.path.join(repo, "dualwrite.yaml"), "w") as f:
        f.write(f"""apiVersion: dualwrite/v1
kind: Project
metadata: {{ name: bench }}
spec:
  endpoints:
    src: {src}
    crm: {{ sqlite: {{ path: .dualwrite/crm.db }} }}
""")
    with open(os.path.join(repo, "maps", "live.yaml"), "w") as f:
        f.write(MAP.format(name="live", state="Running", src="src", dst="crm"))
    proc, port = start(repo, ["--interval", "1h", "--poll-interval", poll], env)
    try:
        wait("ready", lambda: get(port, "/readyz")[0] == 200)
        wait("Running", lambda: phase(repo, "live") == "Running")
        took = []
        for i in range(1, TRIALS + 1):
            if source == "postgres":
                psql(url, f"INSERT INTO live_src VALUES ({i}, 'v')")
            else:
                erp.execute("INSERT INTO live_src VALUES (?, 'v')", (i,))
                erp.commit()
            t0 = time.monotonic()
            wait(f"row {i}", lambda: crm.execute("SELECT 1 FROM live_dst WHERE id = ?", (i,)).fetchone(),
                 limit=30, every=0.001)
            took.append(time.monotonic() - t0)
            # A random pause, so the commits do not lock in step with the poll ticks.
            time.sleep(0.1 + random.random())
        return took
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
        shutil.rmtree(repo, ignore_errors=True)
        if source == "postgres":
            psql(PG_URL, f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


def main():
    print(f"machine: {os.cpu_count()} cores; load average before: {os.getloadavg()[0]:.2f}")
    if "latency" in WHAT:
        log(f"latency: {TRIALS} trials")
        from_edit, from_commit = bench_latency()
        print(f"\n| commit of spec.state -> new phase in status ({TRIALS} trials) | p50 | p99 | max |")
        print("|---|---|---|---|")
        for label, values in [("from the edit (edit + git commit + pass)", from_edit),
                              ("from `git commit` returning", from_commit)]:
            print(f"| {label} | {statistics.median(values) * 1000:.0f} ms | {pct(values, 99) * 1000:.0f} ms "
                  f"| {max(values) * 1000:.0f} ms |")
    if "idle" in WHAT:
        log(f"idle: {MAPS} maps")
        r = bench_idle()
        print(f"\n| {MAPS} maps Running (SQLite endpoints, defaults: --interval 30s, --poll-interval 1s) | value |")
        print("|---|---|")
        print(f"| idle CPU over {r['seconds']:.0f} s | {r['cpu_pct']:.2f} % of one core |")
        print(f"| RSS idle (peak since start) | {r['rss_mb']:.1f} MB ({r['hwm_mb']:.1f} MB) |")
        print(f"| RSS after 10 s of 100 rows/s across the maps (peak) | {r['rss_live_mb']:.1f} MB ({r['hwm_live_mb']:.1f} MB) |")
        print(f"| threads | {r['threads']} |")
        print(f"| start to ready (100 initial syncs) | {r['startup_s']:.1f} s |")
    if "live" in WHAT:
        print(f"\n| live: source commit -> row in the SQLite target ({TRIALS} rows, one at a time) | p50 | p99 | max |")
        print("|---|---|---|---|")
        for source, poll, label in [("postgres", "1h", "PostgreSQL source, LISTEN/NOTIFY (polling off)"),
                                    ("sqlite", "1s", "SQLite source, polled every 1s (default)"),
                                    ("sqlite", "200ms", "SQLite source, polled every 200ms")]:
            log(f"live: {label}")
            took = bench_live(source, poll)
            print(f"| {label} | {statistics.median(took) * 1000:.0f} ms | {pct(took, 99) * 1000:.0f} ms "
                  f"| {max(took) * 1000:.0f} ms |")
    if "failover" in WHAT:
        log(f"failover: {FAILOVERS} kills, TTL {TTL}s")
        res = bench_failover()
        owned = [r[0] for r in res]
        rows = [r[1] for r in res]
        print(f"\n| kill -9 failover, 2 processes, 4 maps, --lease-ttl {TTL}s ({len(res)} kills) | median | max |")
        print("|---|---|---|")
        print(f"| until the survivor owns every map | {statistics.median(owned):.2f} s | {max(owned):.2f} s |")
        print(f"| until a row inserted after the kill is in its target | {statistics.median(rows):.2f} s | {max(rows):.2f} s |")


if __name__ == "__main__":
    main()
