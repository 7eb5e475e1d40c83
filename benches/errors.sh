#!/usr/bin/env bash
# Error management figures (BENCHMARKS.md, "Error management"):
#  1. `dualwrite errors list` with filters over 1,000,000 errored records in the embedded
#     SQLite state store: wall time per query (goal < 1 s).
#  2. A Retry request of 10,000 errored records (SQLite source -> PostgreSQL target, after
#     the target's CHECK constraint is dropped) against the initial sync of the same 10,000
#     rows into a fresh table: rows/s of each, from dualwrite's own activity log, in one run
#     (goal: retry >= 0.5 of the initial sync).
# Usage: benches/errors.sh   (needs PostgreSQL at DUALWRITE_TEST_POSTGRES_URL; PARTS="list list-pg retry",
# list-pg needs list)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=benches/gen_errors.sh
. "$ROOT/benches/gen_errors.sh"
PG_URL=${DUALWRITE_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
ERRORS=${ERRORS:-1000000}
ROWS=${ROWS:-10000}
RUNS=${RUNS:-5}
PARTS=${PARTS:-list list-pg retry}   # which figures to measure

cargo build --release --quiet
BIN=$ROOT/target/release/dualwrite
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"; psql -q "$PG_URL" -c "DROP TABLE IF EXISTS bench_retry, bench_copy" >/dev/null 2>&1 || true' EXIT
echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"

time_cmd() {  # prints the median wall seconds of RUNS runs of "$@"
  local times=()
  for _ in $(seq "$RUNS"); do
    local t0 t1
    t0=$(date +%s.%N); "$@" >/dev/null; t1=$(date +%s.%N)
    times+=("$(echo "$t1 - $t0" | bc)")
  done
  printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {printf "median %.3f s, max %.3f s", a[int((NR+1)/2)], a[NR]}'
}

list_queries() {  # the six `errors list` filters, in the current directory's project
for args in \
    "--map customers" \
    "--map customers --type TransformError --phase CatchUp" \
    "--map orders --direction DestinationToSource --from 2026-11-21T00:00:00Z --to 2026-11-21T12:00:00Z" \
    "--type SchemaError --phase Live --limit 1000" \
    "--map invoices --id 17,42,999999" \
    "--state all --limit 50"; do
    # shellcheck disable=SC2086
    matched=$("$BIN" errors list $args --output json | python3 -c 'import json,sys; print(json.load(sys.stdin)["matched"])')
    # shellcheck disable=SC2086
    printf '  %-100s matched %7s  %s\n' "errors list $args" "$matched" "$(time_cmd "$BIN" errors list $args)"
  done
}


# ---------------------------------------------------------------------------------------
# 1. errors list over 1M records
if [[ " $PARTS " == *" list "* ]]; then
cd "$WORK"
mkdir -p list && cd list
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
EOF
  sqlite3 erp.db "CREATE TABLE $m (id INTEGER PRIMARY KEY)"
  sqlite3 crm.db "CREATE TABLE $m (id INTEGER PRIMARY KEY)"
done
"$BIN" reconcile >/dev/null   # creates the state store
seed_errors_sqlite "$ERRORS"

echo
echo "errors list over $ERRORS records (${RUNS} runs each):"
list_queries
fi

# ---------------------------------------------------------------------------------------
# 1b. the same with the PostgreSQL state store (in a database of its own, dropped after)
if [[ " $PARTS " == *" list-pg "* ]]; then
BENCH_DB=dw_errors_bench
STATE_URL="${PG_URL%/*}/$BENCH_DB"
psql -q "$PG_URL" -c "DROP DATABASE IF EXISTS $BENCH_DB" -c "CREATE DATABASE $BENCH_DB" >/dev/null 2>&1
trap 'rm -rf "$WORK"; psql -q "$PG_URL" -c "DROP TABLE IF EXISTS bench_retry, bench_copy" -c "DROP DATABASE IF EXISTS $BENCH_DB" >/dev/null 2>&1 || true' EXIT
cd "$WORK" && mkdir -p list-pg && cp -r list/maps list/erp.db list/crm.db list-pg/ && cd list-pg
sed 's/^    crm: { sqlite: { path: crm.db } }$/&\n  stateStore: { postgres: { urlFromEnv: BENCH_STATE } }/' ../list/dualwrite.yaml > dualwrite.yaml
export BENCH_STATE=$STATE_URL
"$BIN" reconcile >/dev/null
seed_errors_pg "$STATE_URL" "$ERRORS"
echo
echo "errors list over $(psql -tA "$STATE_URL" -c 'SELECT COUNT(*) FROM dualwrite_state.errors') records in the PostgreSQL state store (${RUNS} runs each):"
list_queries
fi
[[ " $PARTS " == *" retry "* ]] || exit 0

# ---------------------------------------------------------------------------------------
# 2. Retry of 10,000 records vs initial sync of the same rows
cd "$WORK"
mkdir retry && cd retry
psql -q "$PG_URL" -c "DROP TABLE IF EXISTS bench_retry, bench_copy" >/dev/null
for t in bench_retry bench_copy; do
  psql -q "$PG_URL" -c "CREATE TABLE $t (id bigint PRIMARY KEY, name text NOT NULL, email text, credit bigint NOT NULL, city text, created_at timestamptz)" >/dev/null
done
psql -q "$PG_URL" -c "ALTER TABLE bench_retry ADD CONSTRAINT bench_retry_credit CHECK (credit >= 0)" >/dev/null
sqlite3 erp.db "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT, credit INTEGER NOT NULL, city TEXT, created_at TEXT);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $ROWS)
INSERT INTO customers SELECT i, 'customer ' || i, 'c' || i || '@example.com', -i, 'city ' || (i % 100), '2026-11-01T10:00:00Z' FROM n;"
cat > dualwrite.yaml <<'EOF'
apiVersion: dualwrite/v1
kind: Project
metadata: { name: bench }
spec:
  endpoints:
    erp: { sqlite: { path: erp.db } }
    crm: { postgres: { urlFromEnv: BENCH_PG } }
EOF
mkdir -p maps
for t in bench_retry bench_copy; do
  cat > "maps/$t.yaml" <<EOF
apiVersion: dualwrite/v1
kind: TableMap
metadata: { name: ${t//_/-} }
spec:
  source: { endpoint: erp, table: customers }
  destination: { endpoint: crm, table: $t }
  columns:
    - { source: id, destination: id, key: true }
    - { source: name, destination: name }
    - { source: email, destination: email }
    - { source: credit, destination: credit }
    - { source: city, destination: city }
    - { source: created_at, destination: created_at }
  batchSize: 1000
EOF
done
git init -q && git add . && git -c user.name=bench -c user.email=bench@example.com commit -qm maps
export BENCH_PG=$PG_URL
"$BIN" reconcile >/dev/null || true    # bench-retry: every row rejected; bench-copy: copied
psql -q "$PG_URL" -c "ALTER TABLE bench_retry DROP CONSTRAINT bench_retry_credit" >/dev/null
mkdir -p requests
cat > requests/retry-all.yaml <<'EOF'
apiVersion: dualwrite/v1
kind: ErrorRequest
metadata: { name: retry-all }
spec: { map: bench-retry, action: Retry }
EOF
git add requests && git -c user.name=bench -c user.email=bench@example.com commit -qm retry
"$BIN" reconcile >/dev/null
copy=$("$BIN" logs bench-copy | grep InitialSyncFinished | tail -1)
retry=$("$BIN" logs bench-retry | grep RequestCompleted | tail -1)
echo
echo "initial sync: $copy"
echo "retry:        $retry"
python3 - "$copy" "$retry" "$ROWS" <<'EOF'
import json, re, sys
copy, retry, rows = json.loads(sys.argv[1])["message"], json.loads(sys.argv[2])["message"], int(sys.argv[3])
copy_s = float(re.search(r"in ([0-9.]+) s", copy).group(1))
retry_s = float(re.search(r"in ([0-9.]+) s", retry).group(1))
ok = re.search(r"succeeded (\d+), failed (\d+)", retry)
print(f"initial sync of {rows} rows: {copy_s:.2f} s = {rows / copy_s:,.0f} rows/s")
print(f"retry of {ok.group(1)} records (failed {ok.group(2)}): {retry_s:.2f} s = {int(ok.group(1)) / retry_s:,.0f} records/s")
print(f"ratio retry / initial sync: {(int(ok.group(1)) / retry_s) / (rows / copy_s):.2f} (goal >= 0.5)")
EOF
[ "$(psql -tA "$PG_URL" -c 'SELECT COUNT(*) FROM bench_retry')" = "$ROWS" ] || { echo "bench_retry is missing rows"; exit 1; }
