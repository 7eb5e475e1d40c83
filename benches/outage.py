#!/usr/bin/env python3
"""The headline case, timed under `dualwrite run` at its defaults with the example rule
(examples/alerts/pause-on-network-errors.yaml: 10 NetworkErrors within 15 m, Pause):

  1. a Running map SQLite -> PostgreSQL; the PostgreSQL side goes down (a TCP forwarder in
     front of the real server is closed) and 100,000 changes are made on the SQLite side;
  2. time from the cut to the map being Paused by the rule (status/maps/customers.yaml);
  3. the forwarder comes back, `dualwrite resume customers` runs; time from there to the
     queue drained (all 100,000 rows in PostgreSQL, phase Running).

Usage: cargo build --release && python3 benches/outage.py [--changes 100000]
Needs psql and a PostgreSQL at 127.0.0.1:5432 (user postgres, database test).
"""

import argparse
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "dualwrite")


class Forwarder:
    """127.0.0.1:<port> -> target; cut() refuses connects and resets open ones."""

    def __init__(self, target):
        self.target = target
        self.conns = []
        self.listener = None
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        self.restore()

    def restore(self):
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", self.port))
        self.listener.listen(64)
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def cut(self):
        listener, self.listener = self.listener, None
        try:
            listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        listener.close()
        for c in self.conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()
        self.conns = []

    def _accept(self, listener):
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            self.conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def psql(sql):
    return subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-tAc", sql],
        check=True, capture_output=True, text=True,
    ).stdout.strip()


def status_field(repo, field):
    try:
        with open(os.path.join(repo, "status/maps/customers.yaml")) as f:
            text = f.read()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(f"  {field}: "):
            return line.split(": ", 1)[1]
    return None


def wait(what, check, timeout):
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            sys.exit(f"timed out waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - start


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--changes", type=int, default=100_000)
    args = ap.parse_args()
    table = f"dw_outage_bench_{os.getpid()}"
    psql(f"DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id bigint PRIMARY KEY, name text NOT NULL)")
    fwd = Forwarder(("127.0.0.1", 5432))
    repo = tempfile.mkdtemp(prefix="dw-outage-")
    os.makedirs(os.path.join(repo, "maps"))
    os.makedirs(os.path.join(repo, "alerts"))
    with open(os.path.join(repo, "dualwrite.yaml"), "w") as f:
        f.write("apiVersion: dualwrite/v1\nkind: Project\nmetadata: { name: bench }\nspec:\n"
                "  endpoints:\n    erp: { sqlite: { path: erp.db } }\n"
                "    crm: { postgres: { urlFromEnv: CRM_URL } }\n")
    with open(os.path.join(repo, "maps/customers.yaml"), "w") as f:
        f.write("apiVersion: dualwrite/v1\nkind: TableMap\nmetadata: { name: customers }\nspec:\n"
                f"  source: {{ endpoint: erp, table: customers }}\n  destination: {{ endpoint: crm, table: {table} }}\n"
                "  columns:\n    - { source: id, destination: id, key: true }\n    - { source: name, destination: name }\n")
    rule = open(os.path.join(ROOT, "examples/alerts/pause-on-network-errors.yaml")).read()
    rule = "\n".join(l for l in rule.splitlines() if "notify:" not in l and "email:" not in l)
    rule = rule.replace("maps: [invoices]", "maps: [customers]")
    with open(os.path.join(repo, "alerts/pause-on-network-errors.yaml"), "w") as f:
        f.write(rule + "\n")
    erp = sqlite3.connect(os.path.join(repo, "erp.db"))
    erp.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
    erp.commit()
    env = dict(os.environ, CRM_URL=f"postgres://postgres@127.0.0.1:{fwd.port}/test")
    service = subprocess.Popen([BIN, "-C", repo, "run", "--listen", "127.0.0.1:0"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait("Running", lambda: status_field(repo, "phase") == "Running", 60)
        fwd.cut()
        cut_at = time.monotonic()
        erp.execute(
            f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {args.changes}) "
            "INSERT INTO customers SELECT i, 'c' || i FROM n")
        erp.commit()
        wait("Paused", lambda: status_field(repo, "phase") == "Paused", 900)
        to_paused = time.monotonic() - cut_at
        fwd.restore()
        resumed_at = time.monotonic()
        subprocess.run([BIN, "-C", repo, "resume", "customers"], env=env, check=True,
                       capture_output=True)
        wait("drained", lambda: psql(f"SELECT COUNT(*) FROM {table}") == str(args.changes), 900)
        to_drained = time.monotonic() - resumed_at
        wait("Running", lambda: status_field(repo, "phase") == "Running", 60)
        print(f"endpoint down -> Paused by the rule under run: {to_paused:.1f} s")
        print(f"back + resume -> {args.changes} queued changes drained: {to_drained:.2f} s "
              f"({args.changes / to_drained:,.0f} changes/s)")
    finally:
        service.terminate()
        service.wait()
        psql(f"DROP TABLE IF EXISTS {table}")
        shutil.rmtree(repo, ignore_errors=True)


if __name__ == "__main__":
    main()
