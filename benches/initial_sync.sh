#!/usr/bin/env bash
# Benchmark: initial sync of ROWS rows x 10 columns (bigint key, 2 ints, numeric(12,2),
# double, varchar, boolean, date, timestamp, text with 10% NULLs) with
# `dualwrite -C DIR reconcile`, against each engine's own bulk path, in one run so the
# ratios hold on a noisy machine:
#   sqlite   -> sqlite    vs  sqlite3: ATTACH + INSERT INTO dst SELECT * FROM src.t
#                             (timed twice: destination in the CLI's default rollback journal,
#                             and in WAL mode, for reference; dualwrite keeps the journal mode it finds)
#   postgres -> postgres  vs  psql -c "COPY src TO STDOUT" | psql -c "COPY dst FROM STDIN"
#   postgres -> mariadb   vs  LOAD DATA LOCAL INFILE of the rows exported by psql COPY
#                             (timed twice: load only, and export + load)
# Every dualwrite run gets a fresh config dir (fresh state store) and a fresh, empty target
# table; its wall time and peak RSS come from GNU time. Results go to stdout as a
# markdown table (ratio = dualwrite rows/s / baseline rows/s).
#
#   benches/initial_sync.sh                        # from the repository root
#   ROWS=100000 BATCHES="default 1000" PAIRS="pg-pg" benches/initial_sync.sh
# BATCHES: the initial sync's transaction sizes to run: "default" (automatic, no
# initialSync.batchSize in the map, what a user gets) and/or numbers (initialSync.batchSize).
#
# Needs: cargo, GNU time, sqlite3, psql, mariadb (client), and the servers of
# BENCH_PG_URL (default postgres://postgres@127.0.0.1:5432/test, psql-compatible) and
# MariaDB at MY_HOST/MY_USER/MY_DB (default 127.0.0.1/root/test, no password).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROWS=${ROWS:-1000000}
BATCHES=${BATCHES:-"default 1000"}
PAIRS=${PAIRS:-"sqlite-sqlite pg-pg pg-mariadb"}
# shellcheck source=benches/servers.sh
. "$ROOT/benches/servers.sh"

if [ ! -x /usr/bin/time ]; then
    echo "GNU time (/usr/bin/time) is missing: apt-get install -y time" >&2
    exit 1
fi

if [ -z "${NO_BUILD:-}" ]; then
    echo "== building (release)" >&2
    (cd "$ROOT" && cargo build --release --quiet --bin dualwrite)
fi
DUALWRITE=${DUALWRITE:-${CARGO_TARGET_DIR:-$ROOT/target}/release/dualwrite}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/dualwrite-initial.XXXXXX")
[ -n "${KEEP:-}" ] || trap 'rm -rf "$WORK"' EXIT   # KEEP=1 leaves the work dir for profiling

now() { date +%s.%N; }
# Every timed step starts with the page cache flushed (`settle`), so that the writeback of
# one run (1M-row databases) does not land in the fsyncs of the next one.
settle() { sync; sleep 1; }
rate() { awk -v r="$ROWS" -v s="$1" 'BEGIN { printf "%.0f", r / s }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }  # baseline s, dualwrite s

# --- schemas and data -------------------------------------------------------------------
# shellcheck source=benches/bench_table.sh
. "$ROOT/benches/bench_table.sh"

need_sqlite=0; need_pg=0; need_my=0
for p in $PAIRS; do
    case $p in
        sqlite-sqlite) need_sqlite=1 ;;
        pg-pg) need_pg=1 ;;
        pg-mariadb) need_pg=1; need_my=1 ;;
        *) echo "unknown pair $p" >&2; exit 1 ;;
    esac
done

if [ $need_sqlite = 1 ]; then
    echo "== generating $ROWS rows in SQLite" >&2
    gen_sqlite "$WORK/src.db" bench
fi
if [ $need_pg = 1 ]; then
    echo "== generating $ROWS rows in PostgreSQL (bench_src)" >&2
    "${PSQL[@]}" -c "DROP TABLE IF EXISTS bench_dst"
    gen_pg bench_src
fi
if [ $need_my = 1 ]; then
    "${MARIADB[@]}" -e "SET GLOBAL local_infile = 1"
fi

# --- dualwrite --------------------------------------------------------------------------

# run_dualwrite NAME (config dir $WORK/cfg-NAME, created fresh by the caller or here) SRC_ENDPOINT_YAML DST_ENDPOINT_YAML SRC_TABLE DST_TABLE BATCH
# prints "seconds rss_kb"
run_dualwrite() {
    local dir="$WORK/cfg-$1"
    bench_config "$dir" "$2" "$3" "$4" "$5" "$6"
    [ -f "$WORK/src.db" ] && ln -sf "$WORK/src.db" "$dir/src.db"
    local start end
    settle
    start=$(now)
    /usr/bin/time -v -o "$dir/time.txt" "$DUALWRITE" -C "$dir" reconcile >"$dir/out.txt" 2>&1 || {
        cat "$dir/out.txt" >&2
        exit 1
    }
    end=$(now)
    grep -q "error" "$dir/out.txt" && { cat "$dir/out.txt" >&2; exit 1; }
    local rss
    rss=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$dir/time.txt")
    awk -v s="$start" -v e="$end" -v r="$rss" 'BEGIN { printf "%.2f %d\n", e - s, r }'
}

check_count() { # what got want
    if [ "$2" != "$3" ]; then
        echo "$1: expected $3 rows, found $2" >&2
        exit 1
    fi
}

RESULTS=()
row() { RESULTS+=("$1"); echo "$1" >&2; }

for pair in $PAIRS; do
    case $pair in
    sqlite-sqlite)
        echo "== sqlite -> sqlite" >&2
        sqlite3 "$WORK/base.db" "CREATE TABLE bench ($SQLITE_COLS);"
        settle
        start=$(now)
        sqlite3 "$WORK/base.db" "ATTACH '$WORK/src.db' AS s; INSERT INTO main.bench SELECT * FROM s.bench;"
        base=$(awk -v s="$start" -v e="$(now)" 'BEGIN { printf "%.2f", e - s }')
        check_count baseline "$(sqlite3 "$WORK/base.db" "SELECT count(*) FROM bench")" "$ROWS"
        row "| SQLite → SQLite | sqlite3 ATTACH + INSERT … SELECT | – | $base | $(rate "$base") | – | – |"
        # The same into a WAL database, the journal mode dualwrite keeps its SQLite endpoints in.
        sqlite3 "$WORK/base_wal.db" "PRAGMA journal_mode = WAL; CREATE TABLE bench ($SQLITE_COLS);" >/dev/null
        settle
        start=$(now)
        sqlite3 "$WORK/base_wal.db" "ATTACH '$WORK/src.db' AS s; INSERT INTO main.bench SELECT * FROM s.bench;"
        base_wal=$(awk -v s="$start" -v e="$(now)" 'BEGIN { printf "%.2f", e - s }')
        check_count baseline "$(sqlite3 "$WORK/base_wal.db" "SELECT count(*) FROM bench")" "$ROWS"
        row "| SQLite → SQLite | sqlite3 ATTACH + INSERT … SELECT, destination in WAL mode | – | $base_wal | $(rate "$base_wal") | – | – |"
        for b in $BATCHES; do
            dir="$WORK/cfg-ss$b"
            rm -rf "$dir"
            mkdir -p "$dir"
            sqlite3 "$dir/dst.db" "CREATE TABLE bench ($SQLITE_COLS);"
            read -r secs rss < <(run_dualwrite "ss$b" "{ sqlite: { path: src.db } }" "{ sqlite: { path: dst.db } }" bench bench "$b")
            check_count dualwrite "$(sqlite3 "$dir/dst.db" "SELECT count(*) FROM bench")" "$ROWS"
            row "| SQLite → SQLite | dualwrite reconcile | $b | $secs | $(rate "$secs") | $(ratio "$base" "$secs") (vs rollback journal) / $(ratio "$base_wal" "$secs") (vs WAL) | $((rss / 1024)) MB |"
        done
        ;;
    pg-pg)
        echo "== postgres -> postgres" >&2
        "${PSQL[@]}" -c "DROP TABLE IF EXISTS bench_dst; CREATE TABLE bench_dst ($PG_COLS);"
        settle
        start=$(now)
        "${PSQL[@]}" -c "COPY bench_src TO STDOUT" | "${PSQL[@]}" -c "COPY bench_dst FROM STDIN"
        base=$(awk -v s="$start" -v e="$(now)" 'BEGIN { printf "%.2f", e - s }')
        check_count baseline "$("${PSQL[@]}" -Atc "SELECT count(*) FROM bench_dst")" "$ROWS"
        row "| PostgreSQL → PostgreSQL | psql COPY TO STDOUT \\| psql COPY FROM STDIN | – | $base | $(rate "$base") | – | – |"
        for b in $BATCHES; do
            "${PSQL[@]}" -c "DROP TABLE IF EXISTS bench_dst; CREATE TABLE bench_dst ($PG_COLS);"
            read -r secs rss < <(run_dualwrite "pp$b" "{ postgres: { urlFromEnv: BENCH_PG_URL } }" "{ postgres: { urlFromEnv: BENCH_PG_URL } }" bench_src bench_dst "$b")
            check_count dualwrite "$("${PSQL[@]}" -Atc "SELECT count(*) FROM bench_dst")" "$ROWS"
            row "| PostgreSQL → PostgreSQL | dualwrite reconcile | $b | $secs | $(rate "$secs") | $(ratio "$base" "$secs") | $((rss / 1024)) MB |"
        done
        "${PSQL[@]}" -c "DROP TABLE IF EXISTS bench_dst"
        ;;
    pg-mariadb)
        echo "== postgres -> mariadb" >&2
        "${MARIADB[@]}" -e "DROP TABLE IF EXISTS bench_dst; CREATE TABLE bench_dst ($MY_COLS) ENGINE=InnoDB;"
        settle
        start=$(now)
        "${PSQL[@]}" -c "COPY (SELECT id, qty, category, amount, score, name, active::int, born, updated_at, note FROM bench_src ORDER BY id) TO STDOUT" >"$WORK/rows.tsv"
        mid=$(now)
        "${MARIADB[@]}" --local-infile=1 -e "LOAD DATA LOCAL INFILE '$WORK/rows.tsv' INTO TABLE bench_dst"
        end=$(now)
        export_s=$(awk -v s="$start" -v e="$mid" 'BEGIN { printf "%.2f", e - s }')
        load_s=$(awk -v s="$mid" -v e="$end" 'BEGIN { printf "%.2f", e - s }')
        both_s=$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.2f", e - s }')
        check_count baseline "$("${MARIADB[@]}" -N -e "SELECT count(*) FROM bench_dst")" "$ROWS"
        row "| PostgreSQL → MariaDB | LOAD DATA LOCAL INFILE (load only; export took ${export_s} s) | – | $load_s | $(rate "$load_s") | – | – |"
        row "| PostgreSQL → MariaDB | psql COPY export + LOAD DATA LOCAL INFILE | – | $both_s | $(rate "$both_s") | – | – |"
        rm -f "$WORK/rows.tsv"
        for b in $BATCHES; do
            "${MARIADB[@]}" -e "DROP TABLE IF EXISTS bench_dst; CREATE TABLE bench_dst ($MY_COLS) ENGINE=InnoDB;"
            read -r secs rss < <(run_dualwrite "pm$b" "{ postgres: { urlFromEnv: BENCH_PG_URL } }" "{ mysql: { urlFromEnv: BENCH_MY_URL } }" bench_src bench_dst "$b")
            check_count dualwrite "$("${MARIADB[@]}" -N -e "SELECT count(*) FROM bench_dst")" "$ROWS"
            row "| PostgreSQL → MariaDB | dualwrite reconcile | $b | $secs | $(rate "$secs") | $(ratio "$load_s" "$secs") (vs load) / $(ratio "$both_s" "$secs") (vs export+load) | $((rss / 1024)) MB |"
        done
        "${MARIADB[@]}" -e "DROP TABLE IF EXISTS bench_dst"
        ;;
    esac
done

if [ $need_pg = 1 ]; then
    # Capture was installed on bench_src by the runs; dropping the table drops it.
    "${PSQL[@]}" -c "DROP TABLE IF EXISTS bench_src; DELETE FROM _dualwrite_changelog WHERE table_name = 'bench_src'" 2>/dev/null || true
fi

echo
echo "rows: $ROWS; machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo
echo "| pair | how | initialSync.batchSize | seconds | rows/s | ratio to baseline | peak RSS |"
echo "|---|---|---|---|---|---|---|"
printf '%s\n' "${RESULTS[@]}"
