#!/usr/bin/env bash
# Benchmark: `dualwrite run` service mode. Builds the release binary (unless NO_BUILD=1)
# and runs benches/service.py, which prints a markdown summary:
#   - edit + commit of a map's spec.state -> the map in the new phase (TRIALS, default 100)
#   - commit of a row -> the row in the target (PostgreSQL via NOTIFY, SQLite polled)
#   - idle CPU and RSS with MAPS (default 100) Running maps on SQLite endpoints
#   - kill -9 failover between two processes sharing a PostgreSQL state store (TTL, default 5s)
#
#   benches/service.sh                          # from the repository root
#   WHAT="latency" TRIALS=20 benches/service.sh
#
# Needs: cargo, python3, git, psql, and the PostgreSQL server of BENCH_PG_URL (default
# postgres://postgres@127.0.0.1:5432/test; the failover part creates and drops a database).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
if [ -z "${NO_BUILD:-}" ]; then
    (cd "$ROOT" && cargo build --release --quiet)
fi
export DUALWRITE_BIN="$TARGET/release/dualwrite"
exec python3 "$ROOT/benches/service.py"
