#!/usr/bin/env bash
# Benchmark: `dualwrite verify` of ROWS equal rows x 10 columns (the table of
# benches/initial_sync.sh) against the initial sync (`dualwrite reconcile`) that copied
# them, in one run so the ratio holds on a noisy machine; then verify of the same table with
# 1,000 scattered differences in the target (500 rows changed, 500 deleted) and
# `--limit 1000`, which must list all of them.
#   sqlite   -> postgres
#   postgres -> mariadb
# Wall time and peak RSS come from GNU time; results go to stdout as a markdown table.
#
#   benches/verify.sh                        # from the repository root
#   ROWS=100000 PAIRS="pg-mariadb" benches/verify.sh
#
# Needs: cargo, GNU time, sqlite3, psql, mariadb (client), jq, and the servers of
# BENCH_PG_URL (default postgres://postgres@127.0.0.1:5432/test) and MariaDB at
# MY_HOST/MY_USER/MY_DB (default 127.0.0.1/root/test, no password). Its tables are
# verify_bench_src / verify_bench_dst, dropped at the end.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROWS=${ROWS:-1000000}
PAIRS=${PAIRS:-"sqlite-pg pg-mariadb"}
export BENCH_PG_URL=${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432/test}
MY_HOST=${MY_HOST:-127.0.0.1}
MY_USER=${MY_USER:-root}
MY_DB=${MY_DB:-test}
export BENCH_MY_URL=${BENCH_MY_URL:-mysql://$MY_USER@$MY_HOST:3306/$MY_DB}
PSQL=(psql "$BENCH_PG_URL" -X -q -v ON_ERROR_STOP=1)
MARIADB=(mariadb -h "$MY_HOST" -u "$MY_USER" "$MY_DB")
SRC=verify_bench_src
DST=verify_bench_dst

if [ -z "${NO_BUILD:-}" ]; then
    echo "== building (release)" >&2
    (cd "$ROOT" && cargo build --release --quiet --bin dualwrite)
fi
DUALWRITE=${DUALWRITE:-${CARGO_TARGET_DIR:-$ROOT/target}/release/dualwrite}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/dualwrite-verify.XXXXXX")
cleanup() {
    "${PSQL[@]}" -c "DROP TABLE IF EXISTS $SRC, $DST; DELETE FROM _dualwrite_changelog WHERE table_name = '$SRC'" 2>/dev/null || true
    "${MARIADB[@]}" -e "DROP TABLE IF EXISTS $DST" 2>/dev/null || true
    [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

settle() { sync; sleep 1; }

SQLITE_COLS="id INTEGER PRIMARY KEY, qty INTEGER NOT NULL, category INTEGER NOT NULL,
  amount NUMERIC(12,2) NOT NULL, score DOUBLE NOT NULL, name VARCHAR(40) NOT NULL,
  active BOOLEAN NOT NULL, born DATE NOT NULL, updated_at TIMESTAMP NOT NULL, note TEXT"
PG_COLS="id bigint PRIMARY KEY, qty integer NOT NULL, category integer NOT NULL,
  amount numeric(12,2) NOT NULL, score double precision NOT NULL, name varchar(40) NOT NULL,
  active boolean NOT NULL, born date NOT NULL, updated_at timestamp NOT NULL, note text"
MY_COLS="id BIGINT PRIMARY KEY, qty INT NOT NULL, category INT NOT NULL,
  amount DECIMAL(12,2) NOT NULL, score DOUBLE NOT NULL, name VARCHAR(40) NOT NULL,
  active BOOLEAN NOT NULL, born DATE NOT NULL, updated_at DATETIME(6) NOT NULL, note TEXT"

# config DIR SRC_YAML DST_YAML SRC_TABLE DST_TABLE: a project with the map `bench`.
config() {
    mkdir -p "$1/maps"
    cat >"$1/dualwrite.yaml" <<YAML
apiVersion: dualwrite/v1
kind: Project
metadata: { name: bench }
spec:
  endpoints:
    src: $2
    dst: $3
YAML
    cat >"$1/maps/bench.yaml" <<YAML
apiVersion: dualwrite/v1
kind: TableMap
metadata: { name: bench }
spec:
  state: Running
  source: { endpoint: src, table: $4 }
  destination: { endpoint: dst, table: $5 }
  direction: SourceToDestination
  columns:
    - { source: id, destination: id, key: true }
    - { source: qty, destination: qty }
    - { source: category, destination: category }
    - { source: amount, destination: amount }
    - { source: score, destination: score }
    - { source: name, destination: name }
    - { source: active, destination: active }
    - { source: born, destination: born }
    - { source: updated_at, destination: updated_at }
    - { source: note, destination: note }
  batchSize: 5000
YAML
}

# timed NAME WANT_CODE COMMAND...: prints "seconds rss_mb"; output kept in $WORK/NAME.out
timed() {
    local name=$1 want=$2 code=0
    shift 2
    settle
    /usr/bin/time -f '%e %M' -o "$WORK/$name.time" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" || code=$?
    if [ "$code" != "$want" ]; then
        echo "$name: exit $code, expected $want" >&2
        cat "$WORK/$name.out" "$WORK/$name.err" >&2
        exit 1
    fi
    # GNU time puts "Command exited with non-zero status N" first: the figures are last.
    tail -n 1 "$WORK/$name.time" | awk '{ printf "%.2f %d\n", $1, $2 / 1024 }'
}

RESULTS=()
row() { RESULTS+=("$1"); echo "$1" >&2; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%+.0f%%", (a / b - 1) * 100 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

# bench PAIR DIR DIFF_SQL...: reconcile (the copy), verify equal, apply the differences
# (statements for the target), verify them.
bench() {
    local pair=$1 dir=$2 target=$3
    read -r copy copy_rss < <(timed "$pair-copy" 0 "$DUALWRITE" -C "$dir" reconcile)
    row "| $pair | reconcile (initial sync, the copy) | $copy | 1.00 | $copy_rss MB |"
    read -r eq eq_rss < <(timed "$pair-equal" 0 "$DUALWRITE" -C "$dir" verify bench)
    row "| $pair | verify, equal | $eq | $(ratio "$eq" "$copy") | $eq_rss MB |"
    case $target in
        pg) "${PSQL[@]}" -c "UPDATE $DST SET name = 'changed' WHERE id % 2000 = 7; DELETE FROM $DST WHERE id % 2000 = 1007" ;;
        my) "${MARIADB[@]}" -e "UPDATE $DST SET name = 'changed' WHERE id % 2000 = 7; DELETE FROM $DST WHERE id % 2000 = 1007" ;;
    esac
    read -r diff diff_rss < <(timed "$pair-diff" 2 "$DUALWRITE" -C "$dir" verify bench --limit 1000 --output json)
    local listed counted
    listed=$(jq '.maps[0].differences | length' "$WORK/$pair-diff.out")
    counted=$(jq '.maps[0].counts | .missing + .extra + .different' "$WORK/$pair-diff.out")
    row "| $pair | verify, $counted scattered differences (--limit 1000: $listed listed) | $diff | $(ratio "$diff" "$copy") ($(pct "$diff" "$eq") vs equal) | $diff_rss MB |"
}

for pair in $PAIRS; do
    dir="$WORK/cfg-$pair"
    case $pair in
    sqlite-pg)
        echo "== sqlite -> postgres: generating $ROWS rows" >&2
        mkdir -p "$dir"
        sqlite3 "$dir/src.db" >/dev/null <<SQL
PRAGMA journal_mode = WAL;
CREATE TABLE $SRC ($SQLITE_COLS);
WITH RECURSIVE c(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM c WHERE g < $ROWS)
INSERT INTO $SRC SELECT g, (g * 7) % 1000, g % 50, printf('%.2f', ((g * 37) % 100000) / 100.0),
  g * 0.001, 'customer-' || g, g % 3 = 0, date('1950-01-01', '+' || (g % 20000) || ' days'),
  strftime('%Y-%m-%d %H:%M:%S', '2020-01-01', '+' || g || ' seconds'),
  CASE WHEN g % 10 = 0 THEN NULL ELSE 'xxxxxxxxxxxxxxxxxxxx' || g END
FROM c;
SQL
        "${PSQL[@]}" -c "DROP TABLE IF EXISTS $DST; CREATE TABLE $DST ($PG_COLS)"
        config "$dir" "{ sqlite: { path: src.db } }" "{ postgres: { urlFromEnv: BENCH_PG_URL } }" $SRC $DST
        bench "SQLite → PostgreSQL" "$dir" pg
        "${PSQL[@]}" -c "DROP TABLE IF EXISTS $DST"
        ;;
    pg-mariadb)
        echo "== postgres -> mariadb: generating $ROWS rows" >&2
        "${PSQL[@]}" <<SQL
DROP TABLE IF EXISTS $SRC;
CREATE TABLE $SRC ($PG_COLS);
INSERT INTO $SRC SELECT g, (g * 7) % 1000, g % 50, ((g * 37) % 100000) / 100.0,
  g * 0.001, 'customer-' || g, g % 3 = 0, date '1950-01-01' + (g % 20000),
  timestamp '2020-01-01' + g * interval '1 second',
  CASE WHEN g % 10 = 0 THEN NULL ELSE 'xxxxxxxxxxxxxxxxxxxx' || g END
FROM generate_series(1, $ROWS) g;
VACUUM ANALYZE $SRC;
SQL
        "${MARIADB[@]}" -e "DROP TABLE IF EXISTS $DST; CREATE TABLE $DST ($MY_COLS) ENGINE=InnoDB"
        config "$dir" "{ postgres: { urlFromEnv: BENCH_PG_URL } }" "{ mysql: { urlFromEnv: BENCH_MY_URL } }" $SRC $DST
        bench "PostgreSQL → MariaDB" "$dir" my
        ;;
    *) echo "unknown pair $pair" >&2; exit 1 ;;
    esac
done

echo
echo "rows: $ROWS; machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo
echo "| pair | what | seconds | ratio to the copy | peak RSS |"
echo "|---|---|---|---|---|"
printf '%s\n' "${RESULTS[@]}"
