#!/usr/bin/env bash
# Dashboard figures (BENCHMARKS.md, "Web dashboard"): `dualwrite dashboard` over 1,000,000
# recorded errors, p95 time to first byte of each page and filter (goal < 300 ms), and page
# weight, with the embedded SQLite state store and (PARTS=pg) the PostgreSQL one.
# Usage: benches/dashboard.sh   (ERRORS=1000000 RUNS=20 PARTS="sqlite pg")
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=benches/gen_errors.sh
. "$ROOT/benches/gen_errors.sh"
PG_URL=${DUALWRITE_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
ERRORS=${ERRORS:-1000000}
RUNS=${RUNS:-20}
PARTS=${PARTS:-sqlite pg}
BENCH_DB=dw_dashboard_bench

cargo build --release --quiet --bin dualwrite
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/dualwrite
WORK=$(mktemp -d)
DASH_PID=
cleanup() {
  [ -n "$DASH_PID" ] && kill "$DASH_PID" 2>/dev/null || true
  rm -rf "$WORK"
  psql -q "$PG_URL" -c "DROP DATABASE IF EXISTS $BENCH_DB" >/dev/null 2>&1 || true
}
trap cleanup EXIT
echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"

project() {  # three maps over two SQLite apps, in the current directory
  cat > dualwrite.yaml <<'EOF'
apiVersion: dualwrite/v1
kind: Project
metadata: { name: bench }
spec:
  endpoints:
    erp: { sqlite: { path: erp.db } }
    crm: { sqlite: { path: crm.db } }
EOF
  mkdir -p maps
  for m in customers orders invoices; do
    cat > "maps/$m.yaml" <<EOF
apiVersion: dualwrite/v1
kind: TableMap
metadata: { name: $m }
spec:
  source: { endpoint: erp, table: $m }
  destination: { endpoint: crm, table: $m }
  columns:
    - { source: id, destination: id, key: true }
    - { source: name, destination: name }
EOF
    sqlite3 erp.db "CREATE TABLE $m (id INTEGER PRIMARY KEY, name TEXT)"
    sqlite3 crm.db "CREATE TABLE $m (id INTEGER PRIMARY KEY, name TEXT)"
  done
  sqlite3 erp.db "INSERT INTO customers VALUES (7, 'customer 7')"
}

pages() {  # the pages and filters measured, one a line
  cat <<'EOF'
/
/maps/customers
/errors
/errors?map=customers
/errors?map=customers&type=TransformError&phase=CatchUp
/errors?map=orders&direction=DestinationToSource&from=2026-11-21T00:00:00Z&to=2026-11-21T12:00:00Z
/errors?type=SchemaError&phase=Live
/errors?state=all
/errors?map=customers&before=500000
/errors?map=invoices&limit=500
/errors/7
/api/v1/errors?map=customers
/api/v1/errors?type=SchemaError&phase=Live
EOF
}

measure() {  # p95 and median TTFB (ms) and bytes of each page over RUNS requests
  local port=$1
  printf '  %-100s %8s %8s %9s\n' "page" "p50 ms" "p95 ms" "bytes"
  while read -r page; do
    local times=() size=0 code
    for _ in $(seq "$RUNS"); do
      read -r code t size < <(curl -s -o /dev/null -w '%{http_code} %{time_starttransfer} %{size_download}\n' "http://127.0.0.1:$port$page")
      [ "$code" = 200 ] || { echo "  $page answered $code" >&2; exit 1; }
      times+=("$t")
    done
    printf '%s\n' "${times[@]}" | sort -n | awk -v page="$page" -v size="$size" '
      {a[NR]=$1*1000} END {i=int(NR*0.95+0.999); if (i>NR) i=NR; printf "  %-100s %8.1f %8.1f %9d\n", page, a[int((NR+1)/2)], a[i], size}'
  done < <(pages)
}

serve() {  # starts `dualwrite dashboard` in the current directory; sets PORT
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$BIN" dashboard --listen "127.0.0.1:$PORT" 2>/dev/null &
  DASH_PID=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && return; sleep 0.1; done
  echo "the dashboard did not start" >&2; exit 1
}

stop() { kill "$DASH_PID"; wait "$DASH_PID" 2>/dev/null || true; DASH_PID=; }

if [[ " $PARTS " == *" sqlite "* ]]; then
  mkdir -p "$WORK/sqlite" && cd "$WORK/sqlite"
  project
  "$BIN" reconcile >/dev/null || true   # creates the state store, copies customer 7
  seed_errors_sqlite "$ERRORS"
  serve
  echo
  echo "dualwrite dashboard over $ERRORS errored records, SQLite state store ($RUNS requests each):"
  measure "$PORT"
  stop
fi

if [[ " $PARTS " == *" pg "* ]]; then
  STATE_URL="${PG_URL%/*}/$BENCH_DB"
  psql -q "$PG_URL" -c "DROP DATABASE IF EXISTS $BENCH_DB" -c "CREATE DATABASE $BENCH_DB" >/dev/null
  mkdir -p "$WORK/pg" && cd "$WORK/pg"
  project
  sed -i 's/^    crm: { sqlite: { path: crm.db } }$/&\n  stateStore: { postgres: { urlFromEnv: BENCH_STATE } }/' dualwrite.yaml
  export BENCH_STATE=$STATE_URL
  "$BIN" reconcile >/dev/null || true
  seed_errors_pg "$STATE_URL" "$ERRORS"
  serve
  echo
  echo "dualwrite dashboard over $(psql -tA "$STATE_URL" -c 'SELECT COUNT(*) FROM dualwrite_state.errors') errored records, PostgreSQL state store ($RUNS requests each):"
  measure "$PORT"
  stop
fi
